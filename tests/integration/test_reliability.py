"""Reliability hardening (docs/backends.md): a request that meets a stale
keep-alive backend connection is sent again once on a new connection
(idempotent methods only, outside num_retries), a passing active health
check ends an outlier ejection at once, and a retry skipped because
circuit_breakers.max_retries is full is visible (flag URO, metric
switchyard_upstream_retry_overflow_total).

The stale-connection tests use a tiny HTTP/1.1 backend written here
(ClosingBackend) that answers every request as keep-alive (Content-Length,
no `Connection: close`) and then lets the connection go: that is the
backend the proxy's pool gets wrong.
"""

import re
import select
import socket
import threading
import time
from concurrent import futures

from conftest import HOST, admin_metrics, free_port, wait_for
from h1util import H1Conn, get, request_bytes, uniq
from test_backends import config as hc_config
from test_backends import hc, set_health, wait_transition
from test_retries import config, ff, flags, last_log, seen, tries

STALE = 'switchyard_upstream_stale_resends_total{backend_service="svc"}'
RETRIES = 'switchyard_upstream_retries_total{backend_service="svc"}'
OVERFLOW = 'switchyard_upstream_retry_overflow_total{backend_service="svc"}'
REQUESTS = 'switchyard_upstream_requests_total{backend_service="svc"}'


# ---------------------------------------------------------------------------
# a backend that closes its keep-alive connections
# ---------------------------------------------------------------------------

class ClosingBackend:
    """HTTP/1.1 on 127.0.0.1:port. Every request gets `200` with a
    Content-Length body `METHOD PATH BODY_BYTES` and no `Connection: close`;
    then the connection goes:

      mode="close"          closed right after the response (FIN), racing
                            the proxy's next use of the pooled connection;
      mode="close-on-next"  kept until the next request arrives, which is
                            read, never answered, and the connection closed
                            cleanly (FIN): the race always lost, as with a
                            keep-alive timeout that ends just as a request
                            comes.

    answered: [(method, path, body bytes)] of the requests answered;
    unanswered: how many requests were read and dropped."""

    def __init__(self, mode):
        self.mode = mode
        self.answered = []
        self.unanswered = 0
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind((HOST, 0))
        self.ls.listen(128)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.addr = f"{HOST}:{self.port}"
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stop_ev.is_set():
            try:
                s, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)

    @staticmethod
    def _read_request(s, buf):
        """(method, path, body, rest) of one request from s, or None at EOF."""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in buf:
            if time.monotonic() > deadline:
                return None
            d = s.recv(65536)
            if not d:
                return None
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        n = 0
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "content-length":
                n = int(v.strip())
        while len(rest) < n:
            d = s.recv(65536)
            if not d:
                return None
            rest += d
        return method, path, rest[:n], rest[n:]

    def _serve(self, s):
        s.settimeout(10)
        try:
            req = self._read_request(s, b"")
            if req is None:
                return
            method, path, body, rest = req
            with self.lock:
                self.answered.append((method, path, len(body)))
            text = f"{method} {path} {len(body)}".encode()
            s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                      b"content-length: %d\r\n\r\n" % len(text) + text)
            if self.mode == "close-on-next":
                # Wait (bounded) for the next request, take it in and drop it.
                r, _, _ = select.select([s], [], [], 5)
                if r:
                    got = s.recv(65536)
                    if got:
                        with self.lock:
                            self.unanswered += 1
                    # whatever else of it is already here, so the close is a FIN
                    s.settimeout(0.05)
                    try:
                        while s.recv(65536):
                            pass
                    except (socket.timeout, OSError):
                        pass
        except OSError:
            pass
        finally:
            s.close()

    def count(self, method=None, path=None):
        with self.lock:
            return sum(1 for m, p, _ in self.answered
                       if (method is None or m == method) and (path is None or p == path))

    def stop(self):
        self.stop_ev.set()
        self.ls.close()
        self.acceptor.join(timeout=5)
        for t in self.threads:
            t.join(timeout=5)


def closing_backend(request, mode):
    b = ClosingBackend(mode)
    request.addfinalizer(b.stop)
    return b


def stale_proxy(proxy, backend, route_action=None, service_extra=None):
    port, admin = free_port(), free_port()
    px = proxy(config(port, [backend.addr], route_action=route_action,
                      service_extra=service_extra, admin_port=admin),
               workers=1, expect_ports=[port])
    return px, port, admin


def sequential_gets(port, n, path="/g"):
    """n GETs one after the other on one client keep-alive connection:
    the list of statuses."""
    out = []
    with H1Conn(port, timeout=10) as c:
        for i in range(n):
            c.send(request_bytes("GET", f"{path}/{i}"))
            out.append(c.read_response(timeout=10).status)
    return out


# ---------------------------------------------------------------------------
# 1. stale keep-alive connections
# ---------------------------------------------------------------------------

def test_backend_closing_after_each_response_no_errors(proxy, request):
    """A backend that closes every connection right after its response
    (without `Connection: close`): 200 sequential GETs, not one error."""
    b = closing_backend(request, "close")
    px, port, admin = stale_proxy(proxy, b)
    statuses = sequential_gets(port, 200)
    bad = [(i, s) for i, s in enumerate(statuses) if s != 200]
    m = admin_metrics(admin)
    assert not bad, (bad, m.get(STALE), m.get(RETRIES), px.stderr()[-2000:])
    assert b.count("GET") == 200
    # Which way each race went is up to the scheduler: the proxy saw the
    # backend's FIN (a stale resend), or the backend closed with the request
    # unread (a reset: the default policy's one retry), or the connection
    # was gone before the next request (nothing to do). Resends + retries
    # stay small next to 200 either way.
    assert m.get(STALE, 0) + m.get(RETRIES, 0) < 100, m


def test_stale_connection_resent_once_on_a_new_connection(proxy, request):
    """The backend drops every request that arrives on a kept-alive
    connection: each GET after the first meets a stale connection, is sent
    again on a new one and answered. 200 GETs, no error; the resends are
    counted, logged (`stale-connection`) and are not retries."""
    b = closing_backend(request, "close-on-next")
    px, port, admin = stale_proxy(proxy, b)
    n = 200
    statuses = sequential_gets(port, n)
    assert statuses == [200] * n, [(i, s) for i, s in enumerate(statuses) if s != 200]
    assert b.count("GET") == n                     # each answered exactly once
    m = admin_metrics(admin)
    resent = m.get(STALE, 0)
    assert resent == b.unanswered, (m, b.unanswered)
    assert resent >= n // 2, (m, b.unanswered)     # the path under test really ran
    assert m.get(RETRIES, 0) == 0, m
    log = px.access_log(min_entries=n)
    stale = [e for e in log if "stale-connection" in e["tries"]]
    assert len(stale) == resent, log[:3]
    e = stale[0]
    assert e["status"] == 200 and e["attempts"] == 2 and e["response_flags"] == "-", e
    assert [w for _, w in tries(e)] == ["stale-connection", "done"], e


def test_stale_resend_outside_num_retries(proxy, request):
    """retry_conditions: [] retries nothing, yet each GET that meets a stale
    connection is still sent again: the resend is not one of the policy's
    retries. 200 GETs, no error (before: every one after the first was a
    502)."""
    b = closing_backend(request, "close-on-next")
    px, port, admin = stale_proxy(proxy, b, route_action={
        "retry_policy": {"retry_conditions": [], "num_retries": 0}})
    statuses = sequential_gets(port, 200)
    assert statuses == [200] * 200, [(i, s) for i, s in enumerate(statuses) if s != 200][:5]
    m = admin_metrics(admin)
    assert m.get(STALE, 0) == b.unanswered >= 100, (m, b.unanswered)
    assert m.get(RETRIES, 0) == 0, m


def test_stale_post_not_resent(proxy, request):
    """A POST (not idempotent) on a stale connection is not sent again:
    with retries off the client gets the 502 and the backend never
    answered it."""
    b = closing_backend(request, "close-on-next")
    px, port, admin = stale_proxy(proxy, b, route_action={
        "retry_policy": {"retry_conditions": [], "num_retries": 0}})
    with H1Conn(port, timeout=10) as c:
        c.send(request_bytes("GET", "/warm"))
        assert c.read_response().status == 200   # the pool now holds the connection
        c.send(request_bytes("POST", "/post", body=b"p" * 100))
        r = c.read_response()
    assert r.status == 502, r
    assert b.count("POST") == 0                   # the one copy sent was dropped, no resend
    e = last_log(px, 2)
    assert e["path"] == "/post" and e["attempts"] == 1, e
    assert "UR" in flags(e) and "stale-connection" not in e["tries"], e
    assert admin_metrics(admin).get(STALE, 0) == 0


def test_stale_post_default_policy_not_resent(proxy, request):
    """No policy: a POST with a body is never sent twice (SPEC), stale or not."""
    b = closing_backend(request, "close-on-next")
    px, port, admin = stale_proxy(proxy, b)
    with H1Conn(port, timeout=10) as c:
        c.send(request_bytes("GET", "/warm"))
        assert c.read_response().status == 200
        c.send(request_bytes("POST", "/post", body=b"p" * 100))
        r = c.read_response()
    assert r.status == 502, r
    assert b.count("POST") == 0


def test_stale_put_with_body_resent_whole(proxy, request):
    """PUT is idempotent: on a stale connection it is sent again with its
    whole body (kept for a replay)."""
    b = closing_backend(request, "close-on-next")
    px, port, admin = stale_proxy(proxy, b)
    with H1Conn(port, timeout=10) as c:
        c.send(request_bytes("GET", "/warm"))
        assert c.read_response().status == 200
        c.send(request_bytes("PUT", "/put", body=b"u" * 5000))
        r = c.read_response()
    assert r.status == 200, r
    assert r.body == b"PUT /put 5000"
    assert b.count("PUT") == 1
    assert admin_metrics(admin).get(STALE, 0) == 1


def test_stale_put_too_large_to_replay_not_resent(proxy, request):
    """A body larger than retry_buffer_size cannot be replayed: no resend."""
    b = closing_backend(request, "close-on-next")
    px, port, admin = stale_proxy(proxy, b, service_extra={"retry_buffer_size": "1KiB"})
    with H1Conn(port, timeout=10) as c:
        c.send(request_bytes("GET", "/warm"))
        assert c.read_response().status == 200
        c.send(request_bytes("PUT", "/put", body=b"u" * 5000))
        r = c.read_response()
    assert r.status == 502, r
    assert b.count("PUT") == 0


def test_reset_on_reused_connection_is_not_stale(proxy, testbed):
    """A backend that read the request and reset the connection (RST, not
    a close) may have acted on it: that follows the retry policy, it is not
    a stale connection (test_retries covers the counts)."""
    admin = free_port()
    port = free_port()
    tb = testbed("tb1")
    px = proxy(config(port, [tb.addr], admin_port=admin,
                      route_action={"retry_policy": {"retry_conditions": []}}),
               expect_ports=[port])
    assert get(port, "/warm").status == 200
    key = uniq("rst")
    r = get(port, "/", headers=ff(key, 0, extra=[("x-testbed-reset", "before-headers")]))
    assert r.status == 502, r
    assert seen(tb, key) == 1
    assert admin_metrics(admin).get(STALE, 0) == 0


# ---------------------------------------------------------------------------
# 2. a passing health check ends an outlier ejection
# ---------------------------------------------------------------------------

HC_INTERVAL = 0.5   # s


def test_passing_health_check_unejects_at_once(proxy, testbed):
    """An endpoint that fails (3 gateway errors in a row: ejected for 30 s)
    and goes down (health checks fail), then comes back (health checks
    pass): it gets traffic again within one health-check interval, not when
    its 30 s ejection is over (Envoy's
    successful_active_health_check_uneject_host)."""
    tbs = [testbed(name=n) for n in "ab"]
    port = free_port()
    check = hc(check_interval=f"{int(HC_INTERVAL * 1000)}ms", healthy_threshold=1,
               unhealthy_threshold=3)
    px = proxy(hc_config(port, [tb.addr for tb in tbs], checks=[check], service={
        "locality_lb_policy": "RING_HASH", "session_affinity": "HEADER_FIELD",
        "consistent_hash": {"http_header_name": "x-user"},
        "outlier_detection": {"consecutive_gateway_failure": 3, "base_ejection_time": "30s"}},
        route_action={"retry_policy": {"retry_conditions": ["retriable-4xx"],
                                       "num_retries": 0}}),
        expect_ports=[port], extra_args=["--log-level", "debug"])
    for tb in tbs:   # the first verdict decides at once: let it be a pass
        wait_transition(px, tb.addr, "unknown", "healthy")
    key = [("x-user", "u1")]
    home = get(port, "/", headers=key).header("x-testbed-instance")
    home_tb = tbs["ab".index(home)]
    other = "b" if home == "a" else "a"
    # The endpoint goes bad: its health checks fail from now on (it stays
    # healthy for 3 of them) ...
    set_health(home_tb, "fail")
    probe_failed = f"health: check=hc address={home_tb.addr} failed"
    assert wait_for(lambda: probe_failed in px.stderr(), 5), px.stderr()[-2000:]
    # ... and its answers are 503s: ejected by outlier detection.
    for _ in range(3):
        r = get(port, "/", headers=key + [("x-testbed-status", "503")])
        assert r.status == 503 and r.header("x-testbed-instance") == home, r
    assert wait_for(lambda: f"outlier: backend_service=svc endpoint={home_tb.addr} ejected"
                    in px.stderr(), 3), px.stderr()[-2000:]
    assert get(port, "/", headers=key).header("x-testbed-instance") == other
    wait_transition(px, home_tb.addr, "healthy", "unhealthy", timeout=5)
    # It comes back ("restarted"): the first passing check returns it.
    mark = len(px.stderr())
    set_health(home_tb, "ok")
    t0 = time.monotonic()
    back = wait_for(lambda: get(port, "/", headers=key).header("x-testbed-instance") == home,
                    timeout=HC_INTERVAL * 1.1 + 1.0, interval=0.05)
    took = time.monotonic() - t0
    assert back, (f"still ejected {took:.1f}s after its health check passed:\n"
                  + px.stderr()[mark:][-3000:])
    assert took <= HC_INTERVAL * 1.1 + 1.0
    assert re.search(rf"outlier: backend_service=svc endpoint={re.escape(home_tb.addr)} "
                     r"unejected \d+ms early \(hc: health check passed\)", px.stderr()[mark:])


def test_failing_health_check_does_not_uneject(proxy, testbed):
    """Only a pass ends an ejection early: an ejected endpoint whose checks
    keep failing stays out."""
    tbs = [testbed(name=n) for n in "ab"]
    port = free_port()
    check = hc(check_interval="200ms", healthy_threshold=1, unhealthy_threshold=100)
    px = proxy(hc_config(port, [tb.addr for tb in tbs], checks=[check], service={
        "locality_lb_policy": "RING_HASH", "session_affinity": "HEADER_FIELD",
        "consistent_hash": {"http_header_name": "x-user"},
        "outlier_detection": {"consecutive_gateway_failure": 3, "base_ejection_time": "30s"}},
        route_action={"retry_policy": {"retry_conditions": ["retriable-4xx"],
                                       "num_retries": 0}}),
        expect_ports=[port], extra_args=["--log-level", "debug"])
    for tb in tbs:
        wait_transition(px, tb.addr, "unknown", "healthy")
    key = [("x-user", "u1")]
    home = get(port, "/", headers=key).header("x-testbed-instance")
    home_tb = tbs["ab".index(home)]
    set_health(home_tb, "fail")
    probe_failed = f"health: check=hc address={home_tb.addr} failed"
    assert wait_for(lambda: probe_failed in px.stderr(), 5), px.stderr()[-2000:]
    for _ in range(3):
        get(port, "/", headers=key + [("x-testbed-status", "503")])
    assert wait_for(lambda: "ejected for" in px.stderr(), 3)
    mark = len(px.stderr())
    # several failing probes later (unhealthy_threshold 100: still "healthy")
    assert wait_for(lambda: px.stderr().count(probe_failed, mark) >= 3, 5)
    assert get(port, "/", headers=key).header("x-testbed-instance") != home
    assert "unejected" not in px.stderr()


# ---------------------------------------------------------------------------
# 3. retries skipped by circuit_breakers.max_retries
# ---------------------------------------------------------------------------

def test_retry_overflow_flag_and_metric(proxy, testbed):
    """max_retries 1: exchange A holds the one retry slot (its retry takes
    1.5 s); meanwhile 4 more exchanges fail and may not retry. Each answers
    its own failure (503) with URO (not UO) in the access log, and
    switchyard_upstream_retry_overflow_total counts 4; A has neither."""
    admin, port = free_port(), free_port()
    tb = testbed("tb1")
    px = proxy(config(port, [tb.addr], admin_port=admin,
                      service_extra={"circuit_breakers": {"max_retries": 1}},
                      route_action={"retry_policy": {"retry_conditions": ["5xx"],
                                                     "num_retries": 1}}),
               expect_ports=[port])
    assert wait_for(lambda: OVERFLOW in admin_metrics(admin), 10)
    assert admin_metrics(admin)[OVERFLOW] == 0
    res = {}
    ka = uniq("ova")

    def run_a():
        res["a"] = get(port, "/a", headers=ff(ka, 1, delay="0",
                                               extra=[("x-testbed-delay", "1500ms")]))

    t = threading.Thread(target=run_a, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: admin_metrics(admin).get(RETRIES, 0) >= 1, 10)
        with futures.ThreadPoolExecutor(4) as pool:
            bs = list(pool.map(lambda i: get(port, f"/b{i}", headers=ff(uniq(f"ovb{i}"), 1)),
                               range(4)))
    finally:
        t.join(timeout=15)
    assert res["a"].status == 200, res
    assert [r.status for r in bs] == [503] * 4, bs
    log = {e["path"]: e for e in px.access_log(min_entries=5)}
    for i in range(4):
        e = log[f"/b{i}"]
        assert "URO" in flags(e) and "UO" not in flags(e), e
        assert e["attempts"] == 1, e
    assert not flags(log["/a"]) & {"URO", "UO"}, log["/a"]
    m = admin_metrics(admin)
    assert m.get(OVERFLOW) == 4, m


def test_breaker_overflow_is_not_retry_overflow(proxy, testbed):
    """max_requests 1 with one slow exchange in flight: the next one is
    refused by the breaker (UO, local 503), which is no retry overflow."""
    admin, port = free_port(), free_port()
    tb = testbed("tb1")
    px = proxy(config(port, [tb.addr], admin_port=admin,
                      service_extra={"circuit_breakers": {"max_requests": 1}}),
               expect_ports=[port])
    res = {}
    t = threading.Thread(target=lambda: res.setdefault(
        "slow", get(port, "/slow", headers=[("x-testbed-delay", "1s")])), daemon=True)
    t.start()
    try:
        # the slow exchange holds the one max_requests slot once its attempt started
        assert wait_for(lambda: admin_metrics(admin).get(REQUESTS, 0) >= 1, 10)
        r = get(port, "/refused")
    finally:
        t.join(timeout=15)
    assert r.status == 503, r
    assert res["slow"].status == 200
    log = {e["path"]: e for e in px.access_log(min_entries=2)}
    assert flags(log["/refused"]) == {"UO"}, log
    assert admin_metrics(admin).get(OVERFLOW) == 0
