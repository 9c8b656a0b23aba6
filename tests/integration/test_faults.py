"""Fault injection through the real proxy (route_action.fault_injection_policy:
delay and abort, with decimal percentages; abort by http_status or
grpc_status), and docs/testbed.md's walkthrough run as written against
config/examples/testbed.yaml.

Percentages are checked over many requests against a binomial tolerance
stated at each test (false-failure probability ~1e-5 or less).
"""

import json
import re
import signal
import subprocess

import pytest

from conftest import (REPO, SY_BUILD, child_env, free_port, free_ports, run_switchyard, sanitizer_report,
                      stop_process, wait_for, wait_port)
from h1util import H1Conn, get, request_bytes, uniq
from test_retries import config, ff, flags, grpc_call, grpc_status_of, last_log, seen, start

SLACK = 1500.0   # ms beyond a stated duration (ASan, loaded machine)


def fault(delay=None, delay_pct=None, abort=None, abort_pct=None, grpc=None):
    f = {}
    if delay is not None:
        f["delay"] = {"fixed_delay": delay}
        if delay_pct is not None:
            f["delay"]["percentage"] = delay_pct
    if abort is not None or grpc is not None:
        f["abort"] = {"http_status": abort} if abort is not None else {"grpc_status": grpc}
        if abort_pct is not None:
            f["abort"]["percentage"] = abort_pct
    return {"fault_injection_policy": f}


def run_many(port, n, key):
    """n GETs on one keep-alive connection; returns the responses."""
    out = []
    with H1Conn(port, timeout=20) as c:
        for i in range(n):
            c.send(request_bytes("GET", f"/m/{i}", headers=ff(key, 0)))
            out.append(c.read_response(timeout=20))
    return out


# ---------------------------------------------------------------------------
# abort
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [503, 429])
def test_abort_all_contacts_no_backend(proxy, testbed, status):
    px, port, (tb,) = start(proxy, testbed, route_action=fault(abort=status, abort_pct=100))
    key = uniq("ab")
    r = get(port, "/", headers=ff(key, 0))
    e = last_log(px, 1)
    assert r.status == status, (r, e)
    assert r.header("x-testbed-instance") is None
    assert b"fault filter abort" in r.body
    assert e["attempts"] == 0 and e["tries"] == "" and flags(e) == {"FI"}, e
    assert seen(tb, key) == 0


def test_abort_default_percentage_is_100(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, route_action=fault(abort=503))
    assert all(get(port, "/").status == 503 for _ in range(5))


def test_abort_30_percent(proxy, testbed):
    """300 requests at 30 %: aborted ~ Binomial(300, 0.3), mean 90, sd 7.9;
    accepted 55..125 (beyond 4.4 sd: P(false failure) ~ 1e-5). The others
    reach the backend, and the access log flags exactly the aborted ones."""
    px, port, (tb,) = start(proxy, testbed, route_action=fault(abort=503, abort_pct=30))
    key = uniq("ab30")
    n = 300
    rs = run_many(port, n, key)
    aborted = [r for r in rs if r.status == 503]
    assert all(r.status in (200, 503) for r in rs)
    assert all(r.header("x-testbed-instance") is None for r in aborted)
    assert 55 <= len(aborted) <= 125, len(aborted)
    assert seen(tb, key) == n - len(aborted)
    log = px.access_log(min_entries=n)
    assert len(log) == n
    assert sum(1 for e in log if "FI" in flags(e)) == len(aborted)
    assert all(e["attempts"] == 0 for e in log if e["status"] == 503)


@pytest.mark.parametrize("pct", [0, 0.0])
def test_abort_zero_percent_never(proxy, testbed, pct):
    px, port, (tb,) = start(proxy, testbed, route_action=fault(abort=503, abort_pct=pct))
    rs = run_many(port, 20, uniq("ab0"))
    assert all(r.status == 200 for r in rs)


def test_abort_decimal_percentage(proxy, testbed):
    """percentage: 0.5 is accepted; 400 requests abort ~ Binomial(400, 0.005),
    mean 2: at most 10 (P(X > 10) ~ 1e-5) -- a misread 5 or 50 % would not
    pass, nor would 0.5 read as 0 over several runs."""
    px, port, (tb,) = start(proxy, testbed, route_action=fault(abort=503, abort_pct=0.5))
    n = 400
    rs = run_many(port, n, uniq("ab05"))
    aborted = sum(1 for r in rs if r.status == 503)
    assert aborted <= 10, aborted
    assert all(r.status in (200, 503) for r in rs)


@pytest.mark.parametrize("pct,ok", [("0.5", True), ("12.25", True), ("100", True), ("0", True),
                                    ("100.5", False), ("-1", False), ("abc", False)])
def test_percentage_validation(tmp_path, pct, ok):
    cfg = tmp_path / "f.yaml"
    text = config(free_port(), ["127.0.0.1:9"], route_action=fault(abort=503, delay="1s"))
    text = text.replace('"http_status": 503', f'"http_status": 503, "percentage": {pct}')
    text = text.replace('"fixed_delay": "1s"', f'"fixed_delay": "1s", "percentage": {pct}')
    cfg.write_text(text)
    r = run_switchyard(["-t", "-c", cfg])
    assert (r.returncode == 0) == ok, (r.returncode, r.stdout, r.stderr)
    if not ok:
        assert "percentage" in r.stdout + r.stderr


def test_abort_grpc_status_over_h2c(proxy, testbed):
    """abort.grpc_status for a gRPC request (curl over h2c prior knowledge):
    HTTP 200, trailers-only, with that grpc-status; no backend contacted."""
    px, port, (tb,) = start(proxy, testbed, protocol="H2C",
                            route_action=fault(grpc=14, abort_pct=100))
    key = uniq("abg")
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--http2-prior-knowledge", "-D", "-",
                        "-o", "/dev/null", "-X", "POST", "-H", "content-type: application/grpc",
                        "-H", f"x-testbed-key: {key}", "-H", "x-testbed-fail-first: 0",
                        f"http://127.0.0.1:{port}/pkg.Svc/Method"],
                       capture_output=True, text=True, timeout=20)
    head = r.stdout.replace("\r", "")
    assert head.startswith("HTTP/2 200"), (r.stdout, r.stderr)
    assert "\ngrpc-status: 14\n" in head, head
    assert "content-type: application/grpc" in head
    e = last_log(px, 1)
    assert e["status"] == 200 and e["attempts"] == 0 and flags(e) == {"FI"}, e
    assert seen(tb, key) == 0


def test_abort_grpc_status_h2_client(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, protocol="H2C",
                            route_action=fault(grpc=8, abort_pct=100))
    st = grpc_call(port)
    assert st.status == 200 and grpc_status_of(st) == 8, (st.headers, st.trailers)
    assert st.ended and st.body_len == 0


def test_abort_http_status_for_grpc_request_is_a_grpc_status(proxy, testbed):
    """An error the proxy makes for a gRPC request is a gRPC status (503 -> 14)."""
    px, port, (tb,) = start(proxy, testbed, protocol="H2C",
                            route_action=fault(abort=503, abort_pct=100))
    st = grpc_call(port)
    assert st.status == 200 and grpc_status_of(st) == 14, (st.headers, st.trailers)


# ---------------------------------------------------------------------------
# delay
# ---------------------------------------------------------------------------

def test_delay_all_adds_fixed_delay(proxy, testbed):
    tb = testbed("tb1")
    port = free_port()
    px = proxy(config(port, [tb.addr], routes=[("/slow/", fault(delay="200ms", delay_pct=100))]),
               expect_ports=[port])
    key = uniq("dl")
    for i in range(3):
        r = get(port, f"/slow/{i}", headers=ff(key, 0))
        assert r.status == 200 and r.header("x-testbed-instance") == "tb1", r
    r = get(port, "/plain")
    assert r.status == 200
    log = px.access_log(min_entries=4)
    for e in log[:3]:
        assert e["duration_ms"] >= 200.0, e
        assert e["duration_ms"] <= 200.0 + SLACK, e
        assert flags(e) == {"FI"} and e["attempts"] == 1, e
    assert flags(log[3]) == set()
    assert seen(tb, key) == 3      # delayed, then sent on


def test_delay_then_backend_failure_still_retried(proxy, testbed):
    """A delayed request then follows the route's retry policy as usual."""
    px, port, (tb,) = start(proxy, testbed, route_action=dict(
        fault(delay="100ms"), retry_policy={"retry_conditions": ["5xx"], "num_retries": 1}))
    key = uniq("dlr")
    r = get(port, "/", headers=ff(key, 1))
    e = last_log(px, 1)
    assert r.status == 200, (r, e)
    assert seen(tb, key) == 2
    assert e["duration_ms"] >= 100.0 and "FI" in flags(e)


def test_delay_percentage_half(proxy, testbed):
    """50 % of 40 requests delayed by 500 ms: Binomial(40, 0.5), accepted
    5..35 (P(false failure) ~ 1e-5); FI is logged exactly on the delayed.
    (500 ms, not less: an undelayed request must stay under the delay even
    on a loaded machine running ASan builds.)"""
    px, port, (tb,) = start(proxy, testbed, route_action=fault(delay="500ms", delay_pct=50))
    n = 40
    rs = run_many(port, n, uniq("dl50"))
    assert all(r.status == 200 for r in rs)
    log = px.access_log(min_entries=n)
    delayed = [e for e in log if "FI" in flags(e)]
    assert 5 <= len(delayed) <= 35, len(delayed)
    assert all(e["duration_ms"] >= 500.0 for e in delayed)
    assert all(e["duration_ms"] < 500.0 for e in log if "FI" not in flags(e))


# ---------------------------------------------------------------------------
# config/examples/testbed.yaml and docs/testbed.md's walkthrough
# ---------------------------------------------------------------------------

EXAMPLE = REPO / "config" / "examples" / "testbed.yaml"
DOC = REPO / "docs" / "testbed.md"
DEFAULT_PORTS = {"SY_PORT": 8080, "SY_TB1_PORT": 9001, "SY_TB2_PORT": 9002}


def test_example_config_valid():
    r = run_switchyard(["-t", "-c", EXAMPLE])
    assert r.returncode == 0, r.stdout + r.stderr


class Step:
    def __init__(self, cmd):
        self.cmd = cmd
        self.expect = []      # expected output lines
        self.after_s = None   # "# after N s": the exchange takes about N s
        self.log = None       # "# log: {...}": fields of its access-log entry

    def __repr__(self):
        return f"$ {self.cmd}"


def walkthrough():
    """(setup commands, [Step]) from the "## Walkthrough" section of
    docs/testbed.md: the first code block starts the processes; in the
    others, `$ ` lines are commands, the lines after one its exact output
    (an output line may end in `   # after N s`), and `# log: {json}` the
    fields its access-log line must have (default ports)."""
    text = DOC.read_text()
    start_at = text.index("\n## Walkthrough")
    end = text.find("\n## ", start_at + 1)
    section = text[start_at:end if end > 0 else len(text)]
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) >= 2, "no walkthrough code blocks"
    setup = [line.strip() for line in blocks[0].splitlines() if line.strip()]
    steps = []
    for b in blocks[1:]:
        for line in b.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:]))
                continue
            assert steps, f"output before any command: {line!r}"
            st = steps[-1]
            if line.startswith("# log: "):
                st.log = json.loads(line[len("# log: "):])
                continue
            m = re.match(r"^(.*?)\s+# after ~?([0-9.]+) s$", line)
            if m:
                line, st.after_s = m.group(1), float(m.group(2))
            st.expect.append(line)
    return setup, steps


def _endpoint_map(ports):
    return {f"127.0.0.1:{DEFAULT_PORTS[k]}": f"127.0.0.1:{ports[k]}" for k in DEFAULT_PORTS}


def _log_mismatches(step, entry, emap):
    """Differences between the doc's `# log:` fields and the real entry."""
    bad = []
    for k, want in step.log.items():
        got = entry.get(k)
        if k == "response_flags":
            ok = set(got.split(",")) == set(want.split(","))
        elif k == "tries":
            # reasons exactly; endpoints up to which one the load balancer took first
            w = [t.rpartition(":") for t in want.split(";")] if want else []
            g = [t.rpartition(":") for t in got.split(";")] if got else []
            w_eps = [emap.get(x[0], x[0]) for x in w]
            g_eps = [x[0] for x in g]
            shape = lambda eps: [eps.index(x) for x in eps]  # noqa: E731
            ok = ([x[2] for x in g] == [x[2] for x in w] and shape(g_eps) == shape(w_eps)
                  and set(g_eps) == set(w_eps))
        else:
            ok = got == want
        if not ok:
            bad.append(f"{k}: doc {want!r}, got {got!r}")
    return bad


def _read_log(path):
    out = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_testbed_walkthrough(tmp_path):
    """Runs docs/testbed.md's walkthrough as written: the setup commands
    (build/ is SY_BUILD), with the ports moved through the environment as the
    doc says, then every `$` command with bash, comparing its output and its
    access-log fields. The doc's `kill %1 %2 %3` is the teardown here
    (SIGTERM by pid; each process must exit 0 without a sanitizer report)."""
    setup, steps = walkthrough()
    ports = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS))))
    env = child_env({k: str(v) for k, v in ports.items()})
    emap = _endpoint_map(ports)
    procs = []
    access = tmp_path / "access.log"
    try:
        for i, line in enumerate(setup):
            assert line.endswith("&") and line.startswith("build/"), line
            cmd = str(SY_BUILD) + "/" + line[len("build/"):-1].strip()
            out = access if "switchyard -c" in cmd else tmp_path / f"setup{i}.out"
            with open(out, "wb") as of, open(tmp_path / f"setup{i}.err", "wb") as ef:
                procs.append(subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=str(REPO),
                                              env=env, stdout=of, stderr=ef,
                                              stdin=subprocess.DEVNULL))
        for name in ("SY_TB1_PORT", "SY_TB2_PORT", "SY_PORT"):
            assert wait_port(ports[name], 10.0), (name, [p.poll() for p in procs],
                                                 [(tmp_path / f"setup{i}.err").read_text()
                                                  for i in range(len(setup))])
        failures = []
        for st in steps:
            n_before = len(_read_log(access))
            r = subprocess.run(["bash", "-c", st.cmd], cwd=str(REPO), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
            got = [line.rstrip() for line in r.stdout.decode(errors="replace").splitlines()]
            while got and not got[-1]:
                got.pop()
            want = [line.rstrip() for line in st.expect]
            if got != want:
                failures.append(f"{st}\n  expected: {want}\n  got:      {got}")
            if st.log is None and st.after_s is None:
                continue
            def grown():
                lg = _read_log(access)
                return lg if len(lg) > n_before else None
            log = wait_for(grown, 5) or _read_log(access)
            if len(log) <= n_before:
                failures.append(f"{st}\n  no access-log line")
                continue
            entry = log[-1]
            if st.log is not None:
                bad = _log_mismatches(st, entry, emap)
                if bad:
                    failures.append(f"{st}\n  log: " + "; ".join(bad) + f"\n  entry: {entry}")
            if st.after_s is not None:
                ms = entry["duration_ms"]
                if not st.after_s * 1000 - 100 <= ms <= st.after_s * 1000 + SLACK:
                    failures.append(f"{st}\n  took {ms} ms, doc says ~{st.after_s} s")
        assert not failures, "walkthrough differs from docs/testbed.md:\n" + "\n".join(failures)
    finally:
        codes = [stop_process(p, signal.SIGTERM, 15) for p in procs]
        reports = [sanitizer_report((tmp_path / f"setup{i}.err").read_text())
                   for i in range(len(procs))]
    assert not any(reports), reports
    assert codes == [0] * len(procs), codes
