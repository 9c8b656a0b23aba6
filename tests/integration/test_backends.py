"""Health-checked backend pools (issue 6; docs/backends.md): active health
checks of every type and their request shape, traffic moving off a stopped
backend, no client-visible failure under load with a retry policy, flapping,
all backends down (503 / gRPC 14), each LB policy's distribution, session
affinity, outlier ejection and return, circuit breakers, the per-endpoint
concurrency limit, and health state across a reload.

Health checks here run every 200 ms with thresholds of 2, so a verdict
changes within about half a second; each wait is bounded. Health transitions
are read from the proxy's stderr:

    health: backend_service=svc endpoint=127.0.0.1:P healthy->unhealthy (...)
"""

import json
import re
import socket
import subprocess
import threading
import time
from concurrent import futures

import pytest

from conftest import HOST, free_port, wait_for, wait_requests_at
from h1util import H1Conn, NoResponse, get, request_bytes

INTERVAL = 0.2  # s, check_interval of the health checks below
THRESHOLD = 2


def _flow(v):
    return json.dumps(v)


def hc(name="hc", type="HTTP", **kw):
    """A health check definition (dict) checking every 200 ms, thresholds 2."""
    d = {"name": name, "type": type, "check_interval": "200ms", "timeout": "500ms",
         "healthy_threshold": THRESHOLD, "unhealthy_threshold": THRESHOLD}
    if type in ("HTTP", "HTTPS", "HTTP2", "H2C"):
        d["request_path"] = "/healthz"
    d.update(kw)
    return d


def config(port, endpoints, *, checks=(), service=None, route_action=None, protocol="HTTP"):
    """Listener on port; every request to backend service `svc` (protocol,
    endpoints: addresses or (address, weight)), with the health checks
    `checks` (dicts), more service keys `service` (dict), and the
    route_action (dict) of its one route rule."""
    eps = "".join(
        f"      - {{address: \"{e}\"}}\n" if isinstance(e, str)
        else f"      - {{address: \"{e[0]}\", weight: {e[1]}}}\n" for e in endpoints)
    extra = dict(service or {})
    if checks:
        extra["health_checks"] = [c["name"] for c in checks]
    sx = "".join(f"    {k}: {_flow(v)}\n" for k, v in extra.items())
    hx = "".join(f"  - {_flow(c)}\n" for c in checks)
    ra = f"            route_action: {_flow(route_action)}\n" if route_action else ""
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    protocol: HTTP
    url_map: main
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
            match_rules: [{{prefix_match: /}}]
            service: svc
{ra}backend_services:
  - name: svc
    protocol: {protocol}
    timeout: 10s
    endpoints:
{eps}{sx}""" + (f"health_checks:\n{hx}" if checks else "")


def start(proxy, testbed, n=2, tls=False, **kw):
    """Testbeds a, b, ... and a proxy in front of them: (proxy, port, testbeds)."""
    tbs = [testbed(name=chr(ord("a") + i), tls=tls) for i in range(n)]
    port = free_port()
    px = proxy(config(port, [tb.addr for tb in tbs], **kw), expect_ports=[port])
    return px, port, tbs


def transition_re(addr, frm, to):
    return re.compile(rf"health: backend_service=svc endpoint={re.escape(addr)} "
                      rf"{frm}->{to} \((.*)\)$", re.M)


def wait_transition(px, addr, frm, to, timeout=5.0, after=0):
    """The reason of the first matching transition logged (from stderr offset
    `after`), or fail."""
    pat = transition_re(addr, frm, to)
    m = wait_for(lambda: pat.search(px.stderr(), after), timeout)
    assert m, f"no {frm}->{to} for {addr} within {timeout}s:\n{px.stderr()[-3000:]}"
    return m.group(1)


def set_health(tb, status):
    """Turn the testbed's /healthz (and gRPC health) to ok or fail."""
    if tb.tls:
        p = subprocess.run(["curl", "-sk", "--max-time", "10", "-o", "/dev/null", "-w",
                            "%{http_code}", "-X", "POST",
                            f"{tb.url}/testbed/health?status={status}"],
                           capture_output=True, text=True, timeout=20)
        assert p.stdout == "200", p
        return
    r = get(tb.port, f"/testbed/health?status={status}", method="POST")
    assert r.status == 200, r


def instances(port, n, headers=()):
    """Send n GETs on one keep-alive connection: the list of (status, instance)."""
    out = []
    with H1Conn(port) as c:
        for _ in range(n):
            c.send(request_bytes("GET", "/", headers=headers))
            r = c.read_response()
            out.append((r.status, r.header("x-testbed-instance")))
    return out


def grpc_curl(port):
    """A gRPC-shaped request (h2c prior knowledge): (HTTP status, grpc-status)."""
    p = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-D", "-", "--max-time", "10",
         "--http2-prior-knowledge", "-H", "content-type: application/grpc",
         "-H", "te: trailers", "-X", "POST", f"http://{HOST}:{port}/pkg.Svc/Method"],
        capture_output=True, text=True, timeout=20)
    status = re.search(r"^HTTP/2 (\d+)", p.stdout, re.M)
    gs = re.search(r"^grpc-status: *(\d+)", p.stdout, re.M | re.I)
    return (int(status.group(1)) if status else None, int(gs.group(1)) if gs else None)


# ---------------------------------------------------------------------------
# health check types
# ---------------------------------------------------------------------------

KINDS = [
    # (health check type, backend protocol, testbeds with TLS)
    ("TCP", "HTTP", False),
    ("HTTP", "HTTP", False),
    ("H2C", "H2C", False),
    ("GRPC", "H2C", False),
    ("HTTPS", "HTTPS", True),
    ("HTTP2", "HTTP2", True),
    ("GRPC", "HTTP2", True),  # gRPC health over TLS: the service speaks TLS
]


@pytest.mark.parametrize("kind,protocol,tls", KINDS, ids=[k[0] + ("-tls" if k[2] else "") for k in KINDS])
def test_health_check_types(testbed, proxy, certs, kind, protocol, tls):
    """A failing endpoint (health=fail, or killed for TCP) leaves the pool and
    comes back once it passes again; traffic follows."""
    service = {"tls": {"ca_file": str(certs.ca)}} if tls else None
    px, port, (a, b) = start(proxy, testbed, tls=tls, checks=[hc(type=kind)],
                             protocol=protocol, service=service)
    for tb in (a, b):
        assert "first check passed" in wait_transition(px, tb.addr, "unknown", "healthy")
    assert {i for _, i in instances(port, 6)} == {"a", "b"}

    mark = len(px.stderr())
    if kind == "TCP":
        b.kill()
    else:
        set_health(b, "fail")
    why = wait_transition(px, b.addr, "healthy", "unhealthy", after=mark)
    assert "2 consecutive failures" in why
    assert instances(port, 10) == [(200, "a")] * 10

    mark = len(px.stderr())
    if kind == "TCP":
        b = testbed(name="b", tls=tls, port=b.port)
    else:
        set_health(b, "ok")
    assert "2 consecutive successes" in wait_transition(px, b.addr, "unhealthy", "healthy",
                                                        after=mark)
    assert {i for _, i in instances(port, 6)} == {"a", "b"}


class CaptureHTTP:
    """A tiny HTTP/1.1 health endpoint: records each request head and answers
    200 with `self.body` (or `self.statuses` in turn, when set)."""

    def __init__(self):
        self.requests = []
        self.body = b"I am alive\n"
        self.statuses = None
        self._n = 0
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                c.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    self.requests.append(data.decode("latin-1"))
                    status = 200
                    if self.statuses:
                        status = self.statuses[self._n % len(self.statuses)]
                        self._n += 1
                    c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                              % (status, len(self.body)) + self.body)
                except OSError:
                    pass

    def stop(self):
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def capture():
    servers = []

    def make():
        s = CaptureHTTP()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


def test_http_check_request_shape_and_response(testbed, proxy, capture):
    """port overrides the endpoint's port; request_path and host are sent;
    `response` must be in the body."""
    tb = testbed(name="a")
    cap = capture()
    port = free_port()
    check = hc(port=cap.port, request_path="/custom/health?deep=1", host="health.example",
               response="alive")
    px = proxy(config(port, [tb.addr], checks=[check]), expect_ports=[port])
    wait_transition(px, tb.addr, "unknown", "healthy")
    head = cap.requests[0]
    assert head.startswith("GET /custom/health?deep=1 HTTP/1.1\r\n"), head
    assert "\r\nHost: health.example\r\n" in head, head

    mark = len(px.stderr())
    cap.body = b"I am dead\n"
    why = wait_transition(px, tb.addr, "healthy", "unhealthy", after=mark)
    assert "does not contain" in why
    assert get(port, "/").status == 503


def test_http_check_default_host_is_the_endpoint(proxy, capture):
    """Without `host`, the Host header is the endpoint's address."""
    cap = capture()
    port = free_port()
    addr = f"{HOST}:{cap.port}"
    px = proxy(config(port, [addr], checks=[hc(request_path="/hz")]), expect_ports=[port])
    wait_transition(px, addr, "unknown", "healthy")
    assert f"\r\nHost: {addr}\r\n" in cap.requests[0], cap.requests[0]


@pytest.fixture
def grpc_health():
    """A grpcio server with grpc.health.v1.Health/Check (raw bytes, no
    generated code): records the requests; `state["status"]` is the
    ServingStatus it answers."""
    import grpc
    state = {"status": 1, "requests": []}

    def check(request, context):
        state["requests"].append(request)
        return bytes([0x08, state["status"]])

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(check)})
    server.add_generic_rpc_handlers((handler,))
    state["port"] = server.add_insecure_port(f"{HOST}:0")
    server.start()
    yield state
    server.stop(0)


def test_grpc_check_service_name_and_serving_status(proxy, grpc_health):
    """The request carries grpc_service_name; only SERVING is healthy."""
    port = free_port()
    addr = f"{HOST}:{grpc_health['port']}"
    check = hc(type="GRPC", grpc_service_name="pkg.Inventory")
    px = proxy(config(port, [addr], checks=[check], protocol="H2C"), expect_ports=[port])
    # grpcio may take a moment to serve its first call: healthy either way
    assert wait_for(lambda: transition_re(addr, r"\w+", "healthy").search(px.stderr()), 5), \
        px.stderr()[-2000:]
    assert grpc_health["requests"][-1] == b"\x0a\x0dpkg.Inventory"

    mark = len(px.stderr())
    grpc_health["status"] = 2  # NOT_SERVING
    why = wait_transition(px, addr, "healthy", "unhealthy", after=mark)
    assert "NOT_SERVING" in why


def test_several_checks_must_all_pass(testbed, proxy, capture):
    """With two health checks, failing either one makes the endpoint unhealthy."""
    tb = testbed(name="a")
    cap = capture()
    port = free_port()
    checks = [hc("hc-tb"), hc("hc-side", port=cap.port, request_path="/side")]
    px = proxy(config(port, [tb.addr], checks=checks), expect_ports=[port])
    wait_transition(px, tb.addr, "unknown", "healthy")
    mark = len(px.stderr())
    cap.statuses = [500]
    why = wait_transition(px, tb.addr, "healthy", "unhealthy", after=mark)
    assert why.startswith("hc-side: HTTP 500")


# ---------------------------------------------------------------------------
# failover
# ---------------------------------------------------------------------------

def test_stopped_backend_leaves_within_interval_times_threshold(testbed, proxy):
    px, port, (a, b) = start(proxy, testbed, checks=[hc(type="TCP")])
    wait_transition(px, b.addr, "unknown", "healthy")
    mark = len(px.stderr())
    t0 = time.monotonic()
    b.kill()
    wait_transition(px, b.addr, "healthy", "unhealthy", after=mark, timeout=5)
    elapsed = time.monotonic() - t0
    # interval × threshold, +10% jitter per interval, + scheduling slack
    # (ASan, loaded machine)
    assert elapsed <= INTERVAL * THRESHOLD * 1.1 + 1.0, elapsed
    assert instances(port, 10) == [(200, "a")] * 10


def test_no_request_fails_while_a_backend_is_killed_under_load(testbed, proxy):
    """Steady load from 3 clients; one of 3 backends is SIGKILLed mid-way.
    With retries on 5xx and connect-failure, every request succeeds."""
    ra = {"retry_policy": {"retry_conditions": ["5xx", "connect-failure"], "num_retries": 2}}
    px, port, tbs = start(proxy, testbed, n=3, checks=[hc(type="TCP")], route_action=ra)
    for tb in tbs:
        wait_transition(px, tb.addr, "unknown", "healthy")
    results, errors = [], []
    stop = threading.Event()

    def client():
        for _ in range(100000):
            if stop.is_set():
                return
            try:
                r = get(port, "/", headers=[("x-testbed-delay", "5ms")], timeout=10)
                results.append((r.status, r.header("x-testbed-instance")))
            except (NoResponse, OSError, TimeoutError) as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    # Load is flowing through all three before the kill, and plenty more
    # requests complete after it (counted, not timed: a slow machine gets
    # there later, not with fewer requests).
    assert wait_for(lambda: len(results) + len(errors) >= 60, 30), (results, errors[:5])
    tbs[1].kill()
    n_kill = len(results) + len(errors)
    wait_for(lambda: len(results) + len(errors) >= max(100, n_kill + 60), 30)
    stop.set()
    for t in threads:
        t.join(15)
    assert not errors, errors[:5]
    assert len(results) >= 100
    bad = [r for r in results if r[0] != 200]
    assert not bad, f"{len(bad)} of {len(results)} failed: {bad[:5]}"
    late = results[-30:]
    assert all(i != "b" for _, i in late), late
    log = px.access_log(min_entries=len(results))
    retried = [e for e in log if e["attempts"] > 1]
    assert retried, "no request met the killed backend: the test proved nothing"
    assert all(tbs[1].addr in e["tries"] for e in retried), retried[:3]


def test_flapping_health_results_are_damped_by_thresholds(testbed, proxy, capture):
    """A health endpoint alternating 200/503 never reaches 2 failures in a
    row: the endpoint stays healthy (no transition after the first)."""
    tb = testbed(name="a")
    cap = capture()
    cap.statuses = [200, 503]
    port = free_port()
    px = proxy(config(port, [tb.addr], checks=[hc(port=cap.port)]), expect_ports=[port])
    wait_transition(px, tb.addr, "unknown", "healthy")
    n0 = len(cap.requests)
    wait_for(lambda: len(cap.requests) >= n0 + 8, timeout=5)
    assert len(cap.requests) >= n0 + 8
    assert "healthy->unhealthy" not in px.stderr()


def test_flapping_backend_goes_out_and_back_repeatedly(testbed, proxy):
    """A backend whose health flips every 0.7 s leaves and rejoins each time;
    no request fails meanwhile (the other endpoint serves)."""
    px, port, (a, b) = start(proxy, testbed, checks=[hc()])
    wait_transition(px, b.addr, "unknown", "healthy")
    statuses = []
    for cycle in range(3):
        set_health(b, "fail")
        t_end = time.monotonic() + 0.7
        while time.monotonic() < t_end:
            statuses += [s for s, _ in instances(port, 5)]
        set_health(b, "ok")
        t_end = time.monotonic() + 0.7
        while time.monotonic() < t_end:
            statuses += [s for s, _ in instances(port, 5)]
    assert set(statuses) == {200}
    err = px.stderr()
    assert len(transition_re(b.addr, "healthy", "unhealthy").findall(err)) >= 3
    assert len(transition_re(b.addr, "unhealthy", "healthy").findall(err)) >= 2
    assert len(transition_re(a.addr, "healthy", "unhealthy").findall(err)) == 0


def test_all_backends_down_is_503_and_grpc_14(testbed, proxy):
    px, port, (a, b) = start(proxy, testbed, checks=[hc()])
    for tb in (a, b):
        wait_transition(px, tb.addr, "unknown", "healthy")
        set_health(tb, "fail")
    for tb in (a, b):
        wait_transition(px, tb.addr, "healthy", "unhealthy")
    r = get(port, "/")
    assert r.status == 503, r
    assert grpc_curl(port) == (200, 14)
    log = px.access_log(min_entries=2)
    assert all("UH" in e["response_flags"].split(",") for e in log[-2:]), log[-2:]
    # One comes back: served again.
    set_health(a, "ok")
    wait_transition(px, a.addr, "unhealthy", "healthy")
    assert get(port, "/").status == 200


def test_reload_keeps_health_state(testbed, proxy):
    """An endpoint that stays across a reload keeps its verdict; a new one starts."""
    px, port, (a, b) = start(proxy, testbed, checks=[hc()])
    c = testbed(name="c")
    wait_transition(px, b.addr, "unknown", "healthy")
    set_health(b, "fail")
    wait_transition(px, b.addr, "healthy", "unhealthy")
    mark = len(px.stderr())
    px.write_config(config(port, [a.addr, b.addr, c.addr], checks=[hc()]))
    px.reload()
    wait_transition(px, c.addr, "unknown", "healthy", after=mark)
    assert not transition_re(b.addr, r"\w+", r"\w+").search(px.stderr(), mark)
    assert {i for _, i in instances(port, 12)} == {"a", "c"}


def test_removed_endpoint_finishes_in_flight_exchanges(testbed, proxy):
    """connection_draining: a reload that removes the endpoint serving a slow
    exchange lets it finish; new exchanges go to the new endpoint set."""
    a, b = testbed(name="a"), testbed(name="b")
    port = free_port()
    px = proxy(config(port, [b.addr], service={"connection_draining": {
        "draining_timeout": "0s"}}), expect_ports=[port])
    results = []
    t = slow_in_background(port, "1s", results)
    assert wait_requests_at(b.port), "the slow request never reached b"
    px.write_config(config(port, [a.addr]))
    px.reload()
    assert wait_for(lambda: " loaded from " in px.stderr(), 5), px.stderr()[-2000:]
    assert get(port, "/").header("x-testbed-instance") == "a"
    t.join(10)
    assert results and results[0].status == 200
    assert results[0].header("x-testbed-instance") == "b"


def test_removed_endpoint_cut_off_after_draining_timeout(testbed, proxy):
    """connection_draining with draining_timeout 1s: an exchange still running
    on a removed endpoint 1 s after the reload is ended (503 here, since no
    response header went out), while new exchanges use the new endpoint."""
    a, b = testbed(name="a"), testbed(name="b")
    port = free_port()
    svc = {"connection_draining": {"draining_timeout": "1s"}}
    px = proxy(config(port, [b.addr], service=svc), expect_ports=[port])
    results = []
    t = slow_in_background(port, "6s", results)
    assert wait_requests_at(b.port), "the slow request never reached b"
    px.write_config(config(port, [a.addr], service=svc))
    t0 = time.monotonic()
    px.reload()
    assert wait_for(lambda: " loaded from " in px.stderr(), 5), px.stderr()[-2000:]
    assert get(port, "/").header("x-testbed-instance") == "a"
    t.join(10)
    took = time.monotonic() - t0
    assert results and results[0].status == 503, results
    assert 0.9 <= took <= 4.0, took
    slow = [e for e in px.access_log(min_entries=2) if e["status"] == 503][0]
    assert "drained" in slow["tries"], slow


def test_circuit_breaker_max_connections(testbed, proxy):
    """max_connections 1: a second request that needs a second connection to
    the backend while the first is busy gets 503 with UO; once the first
    finishes, its kept-alive connection serves the next request."""
    px, port, (tb,) = start(proxy, testbed, n=1,
                            service={"circuit_breakers": {"max_connections": 1}})
    results = []
    t = slow_in_background(port, "1s", results)
    assert wait_requests_at(tb.port), "the slow request never reached the backend"
    r = get(port, "/second")
    assert r.status == 503, r
    t.join(10)
    assert results and results[0].status == 200
    second = [e for e in px.access_log(min_entries=2) if e["path"] == "/second"][0]
    assert "UO" in second["response_flags"].split(","), second
    assert get(port, "/third").status == 200


# ---------------------------------------------------------------------------
# load balancing and affinity
# ---------------------------------------------------------------------------

POLICIES = ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"]


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_distribution_by_weight(testbed, proxy, policy):
    """Weights 1:2:3 over 600 sequential requests: ROUND_ROBIN exactly, the
    random-based ones within ±35% of each share (over 4 standard deviations)."""
    tbs = [testbed(name=n) for n in "abc"]
    port = free_port()
    proxy(config(port, [(tb.addr, w) for tb, w in zip(tbs, (1, 2, 3))],
                 service={"locality_lb_policy": policy}), expect_ports=[port])
    got = instances(port, 600)
    assert {s for s, _ in got} == {200}
    counts = {n: sum(1 for _, i in got if i == n) for n in "abc"}
    for n, w in zip("abc", (1, 2, 3)):
        want = 600 * w / 6
        tol = 1 if policy == "ROUND_ROBIN" else 0.35 * want
        assert abs(counts[n] - want) <= tol, (policy, counts)


def test_header_affinity_is_sticky(testbed, proxy):
    tbs = [testbed(name=n) for n in "abc"]
    port = free_port()
    proxy(config(port, [tb.addr for tb in tbs], service={
        "locality_lb_policy": "RING_HASH", "session_affinity": "HEADER_FIELD",
        "consistent_hash": {"http_header_name": "x-user"}}), expect_ports=[port])
    seen = set()
    for u in range(20):
        got = instances(port, 4, headers=[("x-user", f"user-{u}")])
        assert len(set(got)) == 1, (u, got)
        seen.add(got[0][1])
    assert len(seen) >= 2


def test_client_ip_affinity_is_sticky(testbed, proxy):
    tbs = [testbed(name=n) for n in "abc"]
    port = free_port()
    proxy(config(port, [tb.addr for tb in tbs], service={
        "locality_lb_policy": "MAGLEV", "session_affinity": "CLIENT_IP"}), expect_ports=[port])
    got = [get(port, "/").header("x-testbed-instance") for _ in range(10)]
    assert len(set(got)) == 1, got


def test_generated_cookie_set_and_honoured(testbed, proxy):
    tbs = [testbed(name=n) for n in "abc"]
    port = free_port()
    proxy(config(port, [tb.addr for tb in tbs], service={
        "session_affinity": "GENERATED_COOKIE",
        "consistent_hash": {"http_cookie": {"name": "sy", "ttl": "1h"}}}), expect_ports=[port])
    pinned = {}
    for _ in range(3):  # three clients, round robin spreads them
        r = get(port, "/")
        cookie = r.header("set-cookie")
        assert cookie and re.fullmatch(r"sy=[0-9a-f]{16}; Path=/; Max-Age=3600; HttpOnly",
                                       cookie), r
        pinned[cookie.split(";")[0]] = r.header("x-testbed-instance")
    assert len(set(pinned.values())) == 3
    for value, inst in pinned.items():
        for _ in range(5):
            r = get(port, "/", headers=[("cookie", f"theme=dark; {value}")])
            assert r.header("x-testbed-instance") == inst
            assert r.header("set-cookie") is None


def test_http_cookie_affinity(testbed, proxy):
    """HTTP_COOKIE: the application's cookie value decides; absent, the proxy
    sets one (ttl given) that keeps the client on the endpoint that answered."""
    tbs = [testbed(name=n) for n in "abc"]
    port = free_port()
    proxy(config(port, [tb.addr for tb in tbs], service={
        "locality_lb_policy": "RING_HASH", "session_affinity": "HTTP_COOKIE",
        "consistent_hash": {"http_cookie": {"name": "sid", "ttl": "10m"}}}),
        expect_ports=[port])
    for s in ("alpha", "beta", "gamma"):
        got = {get(port, "/", headers=[("cookie", f"sid={s}")]).header("x-testbed-instance")
               for _ in range(4)}
        assert len(got) == 1
    r = get(port, "/")
    cookie = r.header("set-cookie")
    assert cookie and cookie.startswith("sid=") and "Max-Age=600" in cookie, r
    again = get(port, "/", headers=[("cookie", cookie.split(";")[0])])
    assert again.header("x-testbed-instance") == r.header("x-testbed-instance")
    assert again.header("set-cookie") is None


# ---------------------------------------------------------------------------
# outlier detection, breakers, concurrency
# ---------------------------------------------------------------------------

def test_outlier_ejection_and_return(testbed, proxy):
    """3 gateway failures in a row (x-testbed-status: 503) from the endpoint a
    key hashes to eject it for base_ejection_time; then it is back."""
    tbs = [testbed(name=n) for n in "ab"]
    port = free_port()
    px = proxy(config(port, [tb.addr for tb in tbs], service={
        "locality_lb_policy": "RING_HASH", "session_affinity": "HEADER_FIELD",
        "consistent_hash": {"http_header_name": "x-user"},
        "outlier_detection": {"consecutive_gateway_failure": 3, "base_ejection_time": "1500ms",
                              "interval": "1s"}},
        route_action={"retry_policy": {"retry_conditions": ["retriable-4xx"],
                                       "num_retries": 0}}), expect_ports=[port])
    key = [("x-user", "u1")]
    home = get(port, "/", headers=key).header("x-testbed-instance")
    other = "b" if home == "a" else "a"
    for _ in range(3):
        r = get(port, "/", headers=key + [("x-testbed-status", "503")])
        assert r.status == 503 and r.header("x-testbed-instance") == home
    t_eject = time.monotonic()
    home_addr = tbs["ab".index(home)].addr
    assert wait_for(lambda: f"outlier: backend_service=svc endpoint={home_addr} ejected"
                    in px.stderr(), 3), px.stderr()[-2000:]
    assert get(port, "/", headers=key).header("x-testbed-instance") == other
    back = wait_for(lambda: get(port, "/", headers=key).header("x-testbed-instance") == home,
                    timeout=5, interval=0.1)
    assert back
    assert 1.2 <= time.monotonic() - t_eject <= 4.0


def slow_in_background(port, delay="1s", results=None):
    def run():
        results.append(get(port, "/slow", headers=[("x-testbed-delay", delay)], timeout=10))
    t = threading.Thread(target=run)
    t.start()
    return t


def test_circuit_breaker_max_requests(testbed, proxy):
    px, port, (tb,) = start(proxy, testbed, n=1,
                            service={"circuit_breakers": {"max_requests": 1}})
    results = []
    t = slow_in_background(port, "1s", results)
    assert wait_requests_at(tb.port), "the slow request never reached the backend"
    r = get(port, "/second")
    assert r.status == 503, r
    t.join(10)
    assert results and results[0].status == 200
    log = px.access_log(min_entries=2)
    second = [e for e in log if e["path"] == "/second"][0]
    assert "UO" in second["response_flags"].split(","), second
    assert get(port, "/third").status == 200  # the slot is free again


@pytest.mark.parametrize("pending", [1, 0])
def test_max_concurrent_requests_per_endpoint(testbed, proxy, pending):
    """Limit 1 and two concurrent slow requests: the second waits for the
    first and then succeeds; with max_pending_requests 0 it gets 503 (UO).
    The first takes 1.5 s so that an immediate 503 and a queued answer stay
    far apart even on a loaded machine running ASan builds."""
    px, port, (tb,) = start(proxy, testbed, n=1, service={
        "max_concurrent_requests_per_endpoint": 1,
        "circuit_breakers": {"max_pending_requests": pending}})
    results = []
    t = slow_in_background(port, "1500ms", results)
    assert wait_requests_at(tb.port), "the first request never reached the backend"
    t0 = time.monotonic()
    r = get(port, "/second", headers=[("x-testbed-delay", "100ms")], timeout=10)
    waited = time.monotonic() - t0
    t.join(10)
    assert results and results[0].status == 200
    if pending:
        assert r.status == 200, r
        assert waited >= 0.5, waited  # queued behind the first
    else:
        assert r.status == 503, r
        assert waited < 1.0, waited
        log = px.access_log(min_entries=2)
        second = [e for e in log if e["path"] == "/second"][0]
        assert "UO" in second["response_flags"].split(","), second
