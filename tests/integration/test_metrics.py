"""GET /metrics explains failures (issue 13 item 2; docs/operations.md,
"Metrics"): traffic that exercises every family — retried 503s, an outlier
ejection, a retry overflow, a health check failure, a mirrored route with a
shadow compare — then:

- `promtool check metrics` (Debian's prometheus package) accepts the whole
  output: names, types, HELP, histogram and counter conventions;
- each family counts what it says: responses by class per attempt (a
  retried 503 counts twice), per-service and per-endpoint histograms whose
  counts agree with the attempt and exchange counters, ejections, health
  transitions, the 5xx of each endpoint, build_info, process start time;
- docs/operations.md's metrics table names every family /metrics writes,
  and nothing it does not.
"""

import http.client
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import HOST, admin_metrics, free_ports, wait_for
from h1util import get, request_bytes, exchange

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _flow(v):
    return json.dumps(v)


def config(port, admin, a, b, c, d):
    hc = {"name": "hc", "type": "HTTP", "request_path": "/healthz", "check_interval": "200ms",
          "timeout": "500ms", "healthy_threshold": 1, "unhealthy_threshold": 1}
    mirror = {"request_mirror_policy": {"backend_service": "shadow",
                                        "compare": {"enabled": True}}}
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    protocol: HTTP
    url_map: main
admin: {{address: "127.0.0.1:{admin}"}}
access_log: {{enabled: true, path: "-", format: json}}
drain_timeout: 2s
url_maps:
  - name: main
    default_service: svc
    host_rules: [{{hosts: ["*"], path_matcher: pm}}]
    path_matchers:
      - name: pm
        default_service: svc
        route_rules:
          - priority: 1
            match_rules: [{{prefix_match: /tight/}}]
            service: tight
          - priority: 2
            match_rules: [{{prefix_match: /m/}}]
            service: svc
            route_action: {_flow(mirror)}
          - priority: 3
            match_rules: [{{prefix_match: /}}]
            service: svc
backend_services:
  - name: svc
    protocol: HTTP
    timeout: 10s
    endpoints: [{{address: "{a}"}}, {{address: "{b}"}}]
    health_checks: [hc]
    outlier_detection: {{consecutive_gateway_failure: 2, base_ejection_time: 30s, interval: 1s,
                         max_ejection_percent: 50}}
  - name: tight
    protocol: HTTP
    timeout: 10s
    endpoints: [{{address: "{c}"}}]
    circuit_breakers: {{max_retries: 0}}
  - name: shadow
    protocol: HTTP
    timeout: 10s
    endpoints: [{{address: "{d}"}}]
health_checks:
  - {_flow(hc)}
"""


def metrics_text(port):
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        assert r.status == 200
        return r.read().decode()
    finally:
        conn.close()


def families(text):
    """{name: type} from the # TYPE lines."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def series(m, name, **labels):
    """Values of the series of `name` whose labels include `labels`."""
    out = []
    for k, v in m.items():
        base, _, rest = k.partition("{")
        if base != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest))
        if all(have.get(lk) == lv for lk, lv in labels.items()):
            out.append(v)
    return out


def one(m, name, **labels):
    v = series(m, name, **labels)
    assert len(v) == 1, (name, labels, v)
    return v[0]


@pytest.fixture
def site(proxy, testbed):
    tbs = {n: testbed(n) for n in "abcd"}
    port, admin = free_ports(2)
    px = proxy(config(port, admin, *(tbs[n].addr for n in "abcd")), workers=2,
               expect_ports=[port, admin])
    # both endpoints of svc healthy before the traffic (health checks every 200 ms)
    assert wait_for(lambda: sum(series(admin_metrics(admin), "switchyard_endpoint_health_state",
                                       backend_service="svc", state="healthy")) == 2, 5)
    return px, port, admin, tbs


def test_every_family_counts_and_promtool_accepts(site):
    px, port, admin, tbs = site
    for _ in range(4):
        assert get(port, "/ok").status == 200
    # 503 from both endpoints: each exchange is two attempts (default retry
    # policy), both answered 503 -> 5xx per attempt; 2 in a row eject one
    # endpoint (max_ejection_percent 50 keeps the other)
    fails = 0
    for _ in range(3):
        r = get(port, "/fail", headers=[("x-testbed-status", "503")])
        assert r.status == 503
        fails += 1
    assert wait_for(lambda: "ejected for" in px.stderr(), 3), px.stderr()[-2000:]
    # retry overflow: max_retries 0 on `tight`
    r = get(port, "/tight/x", headers=[("x-testbed-status", "503")])
    assert r.status == 503
    # mirror with compare
    assert get(port, "/m/x").status == 200
    # a health check failure on b
    tb_b = tbs["b"]
    assert exchange(tb_b.port, request_bytes("POST", "/testbed/health?status=fail",
                                             "x", ())).status == 200
    b_addr = tb_b.addr

    def settled():
        m = admin_metrics(admin)
        return (m if one(m, "switchyard_endpoint_health_state", endpoint=b_addr,
                         state="unhealthy") == 1
                and one(m, "switchyard_mirror_requests_total", backend_service="shadow",
                        result="sent") == 1
                and sum(series(m, "switchyard_shadow_compare_total")) == 1 else None)
    m = wait_for(settled, 5)
    assert m, [ln for ln in metrics_text(admin).splitlines()
               if re.match(r"switchyard_(endpoint_health_state|mirror|shadow)", ln)]
    text = metrics_text(admin)

    # promtool lints the whole output
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()[-3000:]

    svc = {"backend_service": "svc"}
    attempts = one(m, "switchyard_upstream_requests_total", **svc)
    assert attempts == 4 + 2 * fails + 1          # + the /m/ request
    # per attempt: the retried 503s count too
    assert one(m, "switchyard_upstream_responses_total", **svc, **{"class": "5xx"}) == 2 * fails
    assert one(m, "switchyard_upstream_responses_total", **svc, **{"class": "2xx"}) == 5
    assert one(m, "switchyard_upstream_retries_total", **svc) == fails
    assert one(m, "switchyard_upstream_retry_overflow_total", backend_service="tight") == 1
    assert one(m, "switchyard_upstream_attempt_duration_seconds_count", **svc) == attempts
    assert one(m, "switchyard_backend_request_duration_seconds_count", **svc) == 4 + fails + 1
    assert one(m, "switchyard_backend_request_duration_seconds_count",
               backend_service="tight") == 1
    # per endpoint: attempts, 5xx, histogram counts agree; one ejection
    eps = [tbs["a"].addr, b_addr]
    assert sum(one(m, "switchyard_endpoint_upstream_requests_total", endpoint=e)
               for e in eps) == attempts
    assert sum(one(m, "switchyard_endpoint_upstream_5xx_total", endpoint=e)
               for e in eps) == 2 * fails
    assert sum(one(m, "switchyard_endpoint_upstream_duration_seconds_count", endpoint=e)
               for e in eps) == attempts
    assert sum(one(m, "switchyard_outlier_ejections_total", endpoint=e) for e in eps) == 1
    # (a passing health check unejects at once: the gauge is back to 0 by now)
    assert all(one(m, "switchyard_endpoint_ejected", endpoint=e) in (0, 1) for e in eps)
    assert one(m, "switchyard_endpoint_health_transitions_total", endpoint=b_addr) == 1
    assert one(m, "switchyard_endpoint_health_transitions_total", endpoint=tbs["a"].addr) == 0
    assert one(m, "switchyard_endpoint_health_state", endpoint=b_addr, state="healthy") == 0
    assert one(m, "switchyard_endpoint_health_state", endpoint=tbs["c"].addr,
               state="unknown") == 1                # no health checks: unknown, serving
    # process
    assert series(m, "switchyard_build_info") == [1]
    assert re.search(r'^switchyard_build_info\{version="[^"]+"', text, re.M), text
    start = one(m, "process_start_time_seconds")
    assert time.time() - 600 < start <= time.time()


def test_docs_list_every_family(site):
    """docs/operations.md's metrics table names exactly the families of /metrics,
    each with the type /metrics declares."""
    px, port, admin, tbs = site
    assert get(port, "/").status == 200
    have = families(metrics_text(admin))
    documented = {}
    for line in DOCS.read_text().splitlines():
        m = re.match(r"^\| ((?:`[a-z0-9_]+`(?:, )?)+) \| (counter|gauge|histogram) \|", line)
        if m:
            for name in re.findall(r"`([a-z0-9_]+)`", m.group(1)):
                documented[name] = m.group(2)
    missing = sorted(set(have) - set(documented))
    assert not missing, f"families in /metrics but not in docs/operations.md: {missing}"
    stale = sorted(set(documented) - set(have))
    assert not stale, f"documented but not in /metrics: {stale}"
    wrong = {n: (documented[n], t) for n, t in have.items() if documented[n] != t}
    assert not wrong, wrong
