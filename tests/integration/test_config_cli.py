"""The command line: -t validation with FILE:LINE:COL errors, ${NAME}
expansion, --version/--help, and startup failures."""

import re
import socket

from conftest import free_port, run_switchyard
from h1util import get, simple_config

ERR_RE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$")


def error_lines(text):
    return [m for m in (ERR_RE.match(l) for l in text.splitlines()) if m]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = simple_config(18080, "127.0.0.1:19001")


def test_check_good_config(tmp_path):
    p = write(tmp_path, "good.yaml", GOOD)
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 0, r.stderr
    assert not error_lines(r.stderr), r.stderr


def test_check_unknown_key_position(tmp_path):
    text = GOOD.replace("    protocol: HTTP\n    url_map: main\n",
                        "    protocol: HTTP\n    url_map: main\n    bogus_key: 1\n", 1)
    assert "bogus_key" in text
    lines = text.splitlines()
    line = next(i for i, l in enumerate(lines, 1) if "bogus_key" in l)
    col = lines[line - 1].index("bogus_key") + 1
    p = write(tmp_path, "bad.yaml", text)
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 1, (r.stdout, r.stderr)
    errs = error_lines(r.stderr)
    assert errs, r.stderr
    hit = [m for m in errs if "bogus_key" in m["msg"]]
    assert hit, r.stderr
    m = hit[0]
    assert m["file"] == str(p)
    assert (int(m["line"]), int(m["col"])) == (line, col), r.stderr


def test_check_dangling_reference_position(tmp_path):
    text = GOOD.replace("    default_service: svc\n", "    default_service: missing_svc\n", 1)
    assert "missing_svc" in text
    lines = text.splitlines()
    line = next(i for i, l in enumerate(lines, 1) if "missing_svc" in l)
    col = lines[line - 1].index("missing_svc") + 1
    p = write(tmp_path, "dangling.yaml", text)
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 1, (r.stdout, r.stderr)
    hit = [m for m in error_lines(r.stderr) if "missing_svc" in m["msg"]]
    assert hit, r.stderr
    assert hit[0]["file"] == str(p)
    assert (int(hit[0]["line"]), int(hit[0]["col"])) == (line, col), r.stderr


def test_check_reports_every_error(tmp_path):
    text = GOOD.replace("    default_service: svc\n", "    default_service: missing_svc\n", 1)
    text = text.replace("drain_timeout: 5s", "drain_timeout: 5s\nnot_a_section: 1", 1)
    p = write(tmp_path, "two.yaml", text)
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 1
    msgs = " | ".join(m["msg"] for m in error_lines(r.stderr))
    assert "missing_svc" in msgs and "not_a_section" in msgs, r.stderr


def test_check_bad_duration(tmp_path):
    text = GOOD.replace("timeout: 10s", "timeout: 10 parsecs", 1)
    lines = text.splitlines()
    line = next(i for i, l in enumerate(lines, 1) if "parsecs" in l)
    p = write(tmp_path, "dur.yaml", text)
    r = run_switchyard(["-t", "-c", p])
    assert r.returncode == 1
    errs = error_lines(r.stderr)
    assert any(int(m["line"]) == line for m in errs), r.stderr


def test_check_missing_file(tmp_path):
    r = run_switchyard(["-t", "-c", tmp_path / "nope.yaml"])
    assert r.returncode == 1
    assert "nope.yaml" in r.stderr


def test_env_expansion_end_to_end(proxy, testbed, tmp_path):
    tb = testbed(name="envtb")
    port = free_port()
    text = simple_config("${SY_TEST_PORT}", "127.0.0.1:${SY_TB_PORT:-%d}" % tb.port)
    assert "${SY_TEST_PORT}" in text
    # -t sees the same expansion
    p = write(tmp_path, "env.yaml", text)
    r = run_switchyard(["-t", "-c", p], env={"SY_TEST_PORT": str(port)})
    assert r.returncode == 0, r.stderr
    proxy(text, expect_ports=[port], env={"SY_TEST_PORT": str(port)})
    resp = get(port, "/env")
    assert resp.status == 200
    assert resp.header("x-testbed-instance") == "envtb"


def test_env_expansion_overrides_default(proxy, testbed):
    tb = testbed(name="envtb2")
    port = free_port()
    text = simple_config("${SY_TEST_PORT:-1}", "127.0.0.1:${SY_TB_PORT:-1}")
    proxy(text, expect_ports=[port],
          env={"SY_TEST_PORT": str(port), "SY_TB_PORT": str(tb.port)})
    resp = get(port, "/env2")
    assert resp.status == 200
    assert resp.json()["instance"] == "envtb2"


def test_version():
    r = run_switchyard(["--version"])
    assert r.returncode == 0
    assert re.match(r"^switchyard \S+", r.stdout), r.stdout


def test_help():
    r = run_switchyard(["--help"])
    assert r.returncode == 0
    out = r.stdout + r.stderr
    for flag in ("-c", "--workers", "-t", "--version"):
        assert flag in out, out


def test_unknown_flag_fails():
    r = run_switchyard(["--no-such-flag"])
    assert r.returncode != 0


def test_unusable_listen_address_exits_1(tmp_path):
    # Hold the port with a plain listener (no SO_REUSEPORT) so bind fails.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = write(tmp_path, "busy.yaml", simple_config(port, "127.0.0.1:19001"))
        r = run_switchyard(["-c", p, "--workers", "1"], timeout=20)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert str(port) in lines[0], lines
