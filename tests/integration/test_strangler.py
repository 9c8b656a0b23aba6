"""The strangler-fig walkthrough of docs/configuration.md, step by step,
against config/examples/strangler.yaml itself (addresses through its
environment variables): the monolith as default, /api/orders moved to the
orders service, a 10% weighted canary, a header canary for testers, and the
canary switched on and rolled back by editing the file and reloading.

Single requests use the walkthrough's own curl commands (with the test's
port); the split counts use a keep-alive httpx client."""

import json
import math
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import free_ports, HOST, free_port, run_switchyard

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "examples" / "strangler.yaml"
WEIGHT_REF = '"${ORDERS_CANARY_WEIGHT:-10}"'


class Site:
    def __init__(self, port, admin_port, proxy, backends):
        self.port = port
        self.admin_port = admin_port
        self.proxy = proxy
        self.backends = backends
        self.url = f"http://{HOST}:{port}"


@pytest.fixture
def site(testbed, proxy):
    """start(canary_weight=None) -> Site: three testbeds named as the
    walkthrough's backends and the proxy on the example file."""
    def start(canary_weight=None):
        tbs = {n: testbed(name=n) for n in ("legacy", "orders", "orders-canary")}
        port, admin_port = free_ports(2)
        env = {
            "LISTEN_ADDR": f"{HOST}:{port}",
            "ADMIN_ADDR": f"{HOST}:{admin_port}",
            "LEGACY_ADDR": tbs["legacy"].addr,
            "ORDERS_ADDR": tbs["orders"].addr,
            "ORDERS_CANARY_ADDR": tbs["orders-canary"].addr,
            # empty = unset for ${NAME:-default}: the file's default (10)
            "ORDERS_CANARY_WEIGHT": "" if canary_weight is None else str(canary_weight),
        }
        px = proxy(EXAMPLE.read_text(), env=env, expect_ports=[port, admin_port])
        return Site(port, admin_port, px, tbs)
    return start


def curl(site, path, *headers):
    """`curl -si http://127.0.0.1:PORT/path -H ...` -> (status, {header: value}, body)."""
    cmd = ["curl", "-si", "--max-time", "10", site.url + path]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd, capture_output=True, timeout=20).stdout.decode("latin-1")
    head, _, body = out.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def served_by(site, path, *headers):
    status, hdrs, body = curl(site, path, *headers)
    assert status == 200, (status, hdrs, body)
    return hdrs.get("x-testbed-instance"), json.loads(body)


def count_split(site, n, headers=None):
    counts = {}
    with httpx.Client(base_url=site.url, timeout=10.0, headers=headers or {}) as c:
        for _ in range(n):
            r = c.get("/api/orders")
            assert r.status_code == 200, r.text
            name = r.headers.get("x-testbed-instance")
            counts[name] = counts.get(name, 0) + 1
    return counts


# n = 2000 requests, p = 0.1: sigma = sqrt(p(1-p)/n) = 0.67%; the tolerance
# +-3% is 4.5 sigma (a false failure about once in 150 000 runs).
SPLIT_N = 2000
SPLIT_TOL = 0.03


def assert_ten_percent(counts):
    n = sum(counts.values())
    assert set(counts) <= {"orders", "orders-canary"}, counts
    assert SPLIT_TOL >= 4.4 * math.sqrt(0.1 * 0.9 / n)
    frac = counts.get("orders-canary", 0) / n
    assert abs(frac - 0.10) <= SPLIT_TOL, (frac, counts)


def reload(site):
    r = httpx.post(f"http://{HOST}:{site.admin_port}/reload", timeout=10.0)
    assert r.status_code == 200, r.text
    return r.json()["version"]


def test_example_validates():
    """`switchyard -t -c config/examples/strangler.yaml`, with and without the canary."""
    for weight in ("", "0"):
        cp = run_switchyard(["-t", "-c", EXAMPLE], env={"ORDERS_CANARY_WEIGHT": weight})
        assert cp.returncode == 0, cp.stdout + cp.stderr


def test_step1_legacy_is_the_default(site):
    s = site()
    for path in ("/", "/index.html", "/api/customers/7", "/api/orders-export",
                 "/API/orders", "/api"):
        name, echo = served_by(s, path)
        assert name == "legacy", path
        assert echo["path"] == path
    # the tester header changes nothing outside /api/orders
    assert served_by(s, "/api/customers/7", "x-canary: true")[0] == "legacy"


def test_step2_orders_moved(site):
    s = site(canary_weight=0)        # the state before the canary
    name, echo = served_by(s, "/api/orders")
    assert name == "orders"
    name, echo = served_by(s, "/api/orders/42?expand=items")
    assert name == "orders"
    assert echo["path"] == "/api/orders/42?expand=items"   # forwarded unchanged
    assert served_by(s, "/api/customers/7")[0] == "legacy"
    # every /api/orders request, not just most
    assert count_split(s, 200) == {"orders": 200}
    # the access log names the backend service
    log = s.proxy.access_log(min_entries=203)
    svc = {e["path"]: e["backend_service"] for e in log}
    assert svc["/api/orders/42?expand=items"] == "orders"
    assert svc["/api/customers/7"] == "legacy"


def test_step3_ten_percent_canary(site):
    s = site()                       # ORDERS_CANARY_WEIGHT unset: 10
    assert_ten_percent(count_split(s, SPLIT_N))
    # the walkthrough's loop, verbatim but for the port (200 requests)
    loop = (f"for i in $(seq 200); do curl -s -o /dev/null "
            f"-w '%header{{x-testbed-instance}}\\n' {s.url}/api/orders; done | sort | uniq -c")
    out = subprocess.run(["bash", "-c", loop], capture_output=True, text=True,
                         timeout=60).stdout
    counts = {ln.split()[1]: int(ln.split()[0]) for ln in out.splitlines() if ln.strip()}
    assert set(counts) == {"orders", "orders-canary"}, out
    assert sum(counts.values()) == 200
    # binomial(200, 0.1): P(X < 2) ~ 1e-7, P(X > 45) ~ 1e-12
    assert 2 <= counts["orders-canary"] <= 45, out
    # everything else still goes to the monolith
    assert served_by(s, "/")[0] == "legacy"


def test_step4_header_canary_for_testers(site):
    s = site()
    for path in ("/api/orders", "/api/orders/42"):
        name, echo = served_by(s, path, "x-canary: true")
        assert name == "orders-canary", path
        assert echo["headers"]["x-canary"] == "true"      # passed on to the backend
    # every tester request, not a share of them
    assert count_split(s, 300, {"x-canary": "true"}) == {"orders-canary": 300}
    # any other value (exact_match is case-sensitive) takes the normal split
    mixed = count_split(s, 300, {"x-canary": "false"})
    assert set(mixed) == {"orders", "orders-canary"}, mixed  # P(no canary) ~ 2e-14


def test_step4_header_canary_without_split(site):
    s = site(canary_weight=0)        # the header works before any weighted share
    assert served_by(s, "/api/orders", "x-canary: true")[0] == "orders-canary"
    assert served_by(s, "/api/orders", "x-canary: True")[0] == "orders"
    assert served_by(s, "/api/orders", "x-canary: yes")[0] == "orders"
    assert served_by(s, "/", "x-canary: true")[0] == "legacy"


def test_canary_on_and_rollback_by_reload(site):
    """Step 2 -> 3 -> rollback on one running proxy: edit the weight in the
    file, POST /reload, no restart."""
    s = site(canary_weight=0)
    assert count_split(s, 100) == {"orders": 100}
    text = Path(s.proxy.config_path).read_text()
    assert WEIGHT_REF in text
    v1 = reload(s)
    s.proxy.write_config(text.replace(WEIGHT_REF, "10"))
    v2 = reload(s)
    assert v2 != v1
    assert_ten_percent(count_split(s, SPLIT_N))
    s.proxy.write_config(text.replace(WEIGHT_REF, "0"))
    reload(s)
    assert count_split(s, 200) == {"orders": 200}
    assert s.proxy.running()
