"""docs/strangler.md, run as written: every ```sh block that follows a
`<!-- walkthrough: NAME -->` marker, in order, in one bash, from a folder
where `build/` is the build under test and `config/` the repository's. Ports
are free ones, given through the environment variables the page reads. Each
step's output is checked against what the page says it prints."""
import json
import os
import re
import subprocess
from pathlib import Path

from conftest import binary, free_ports, sanitizer_report

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "strangler.md"
STEP = re.compile(r"<!-- walkthrough: ([\w-]+) -->\s*```sh\n(.*?)```", re.S)


def steps():
    found = STEP.findall(DOC.read_text())
    assert [n for n, _ in found] == ["start", "explain-before", "traffic", "diff-mirror",
                                     "diff-canary", "mirror", "shadow", "canary", "done", "stop"]
    return found


def run_walkthrough(tmp_path):
    (tmp_path / "build").symlink_to(binary("switchyard").parent)
    (tmp_path / "config").symlink_to(REPO / "config")
    script = []
    for name, body in steps():
        script.append(f'echo "@@step {name}"')
        script.append(body)
    # Whatever the page left running is stopped by pid, and waited for.
    script.append('echo "@@step end"; for p in $(jobs -p); do kill $p 2>/dev/null; done; wait')
    names = ("LISTEN_ADDR", "ADMIN_ADDR", "LEGACY_ADDR", "ORDERS_ADDR", "ORDERS_CANARY_ADDR",
             "CARTS_ADDR")
    env = dict(os.environ)
    for n, port in zip(names, free_ports(len(names))):
        env[n] = f"127.0.0.1:{port}"
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(k, None)
    r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=180)
    out = {}
    for chunk in r.stdout.split("@@step ")[1:]:
        name, _, text = chunk.partition("\n")
        out[name] = text
    return r, out


def test_walkthrough_runs_as_written(tmp_path):
    r, out = run_walkthrough(tmp_path)
    assert "end" in out, (r.stdout[-3000:], r.stderr[-3000:])
    log = (tmp_path / "proxy.log").read_text()
    assert not sanitizer_report(log), log[-5000:]

    # 1. explain: the default action of path matcher site, after both rules failed on the path.
    e = out["explain-before"]
    assert "action       backend service legacy" in e, e
    assert 'priority 10  no match' in e and 'got "/api/carts/17"' in e, e
    assert "decision     the path matcher's default action" in e, e

    # 2. diff: mirroring moves nothing; the canary step moves the 20 cart requests.
    assert "requests: 41 read from access.log; 0 changed, 41 unchanged; 0 invalid lines" \
        in out["diff-mirror"], out["diff-mirror"]
    d = out["diff-canary"]
    assert re.search(r"\n\s+20  service legacy -> split legacy:90,carts:10  \(changes: service\)", d), d
    assert "total: 20 of 41 requests change outcome (48.78%)" in d, d
    assert d.rstrip().endswith("diff: exit 2"), d

    # 3-4. the mirror's answers compared: 20 matches, the echo a body mismatch.
    assert '"version"' in out["mirror"], out["mirror"]
    shadow = json.loads(out["shadow"].strip().splitlines()[-1])
    assert shadow["routes"] == [{"route": "site/site/priority:30", "match": 20, "mismatch": 1,
                                 "incomplete": 0}], shadow
    m = shadow["recent_mismatches"][0]
    assert (m["path"], m["diff"], m["body_offset"], m["mirror_service"]) == \
        ("/api/carts/echo", "body", 0, "carts"), m

    # 5. the split: 200 answers, about a tenth from carts (binomial, n=200, p=0.1: ±6 sd).
    counts = {m.group(2): int(m.group(1)) for m in
              re.finditer(r"(?mi)^\s*(\d+) x-testbed-instance: (\S+)", out["canary"])}
    assert sum(counts.values()) == 200 and set(counts) <= {"legacy", "carts"}, counts
    assert 5 <= counts.get("carts", 0) <= 45, counts

    # 6. done: explain and the proxy agree that carts answers.
    d = out["done"]
    assert "action       backend service carts" in d and "x-testbed-instance: carts" in d, d
