"""Timeouts through the real proxy (issue 5, SPEC.md): the backend service
timeout, a route timeout overriding it (0s = none), per_try_timeout with and
without a retry, grpc-timeout shorter than the route timeout, timeouts on
streaming responses (after headers: a reset, not a 504), and the listener's
timeouts.stream_idle. A timeout answers 504 (gRPC: grpc-status 4) when
nothing was sent yet, and cancels the upstream attempt: the HTTP/1.1
connection is closed, an HTTP/2 stream gets RST_STREAM.

Durations are read from the access log (duration_ms); the bounds are loose,
since everything runs under ASan.
"""

from h2.errors import ErrorCodes

from conftest import caught_up, free_port, tcp_conns, wait_for
from h1util import H1Conn, get, request_bytes, uniq
from h2util import H2Conn
from test_retries import (config, ff, flags, grpc_call, grpc_status_of, h2backend,  # noqa: F401
                          last_log, seen, start, tries)

SLACK = 1500.0   # ms allowed beyond a deadline (ASan, loaded machine)


def established_to(port):
    """Number of ESTABLISHED 127.0.0.1 TCP connections whose remote port is
    `port` (the proxy's connections to a backend)."""
    return len(tcp_conns(remote_port=port))


# ---------------------------------------------------------------------------
# backend service timeout and route timeout
# ---------------------------------------------------------------------------

def test_backend_timeout_is_504_and_cancels_h1_attempt(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, timeout="500ms")
    key = uniq("bt")
    r = get(port, "/", headers=ff(key, 0, extra=[("x-testbed-delay", "3s")]))
    e = last_log(px, 1)
    assert r.status == 504, (r, e)
    assert b"timeout" in r.body
    assert "UT" in flags(e)
    assert 450 <= e["duration_ms"] <= 500 + SLACK, e
    assert e["attempts"] == 1
    assert tries(e) == [(tb.addr, "timeout")]
    # The attempt was cancelled: its backend connection is closed at once
    # (left alone it would stay busy until the backend answers after 3 s).
    assert wait_for(lambda: established_to(tb.port) == 0, 1.0), established_to(tb.port)
    # the whole-exchange timeout is final: not retried by the default policy
    assert seen(tb, key) == 1


def test_backend_timeout_cancels_h2_attempt(proxy, h2backend):
    """H2C backend that never answers: 504, and the stream gets RST_STREAM."""
    b = h2backend(lambda n, h, body: "hold")
    port = free_port()
    px = proxy(config(port, [b.addr], protocol="H2C", timeout="500ms"), expect_ports=[port])
    r = get(port, "/")
    e = last_log(px, 1)
    assert r.status == 504, (r, e)
    assert "UT" in flags(e)
    assert wait_for(lambda: b.resets, 2.0), "no RST_STREAM reached the backend"
    assert b.resets[0][1] == ErrorCodes.CANCEL, b.resets
    assert len(b.requests) == 1


def test_route_timeout_overrides_backend_timeout(proxy, testbed):
    tb = testbed("tb1")
    port = free_port()
    px = proxy(config(port, [tb.addr], timeout="10s", routes=[
        ("/short/", {"timeout": "500ms"}, None),
        ("/long/", {"timeout": "3s"}, "quick"),
        ("/none/", {"timeout": "0s"}, "quick"),
    ], services={"quick": ("HTTP", [tb.addr], {"timeout": "500ms"})}), expect_ports=[port])
    delay = [("x-testbed-delay", "1s")]
    r1 = get(port, "/short/x", headers=delay)    # route 500ms < service 10s
    r2 = get(port, "/long/x", headers=delay)     # route 3s > service 500ms
    r3 = get(port, "/none/x", headers=delay)     # route 0s: no limit
    r4 = get(port, "/other", headers=delay)      # service 10s
    log = {e["path"]: e for e in px.access_log(min_entries=4)}
    assert r1.status == 504, (r1, log)
    assert log["/short/x"]["duration_ms"] <= 500 + SLACK
    assert "UT" in flags(log["/short/x"])
    assert (r2.status, r3.status, r4.status) == (200, 200, 200), log
    assert log["/long/x"]["backend_service"] == "quick"
    assert log["/none/x"]["backend_service"] == "quick"


def test_route_timeout_bounds_retries(proxy, testbed):
    """The route timeout bounds the whole exchange, retries included."""
    px, port, (tb,) = start(proxy, testbed, route_action={
        "timeout": "1s",
        "retry_policy": {"retry_conditions": ["5xx"], "num_retries": 50,
                         "per_try_timeout": "300ms"}})
    key = uniq("rb")
    r = get(port, "/", headers=ff(key, 100, delay="2s"))
    e = last_log(px, 1)
    assert r.status == 504, (r, e)
    assert "UT" in flags(e)
    assert 950 <= e["duration_ms"] <= 1000 + SLACK, e
    # the testbed has read every attempt that reached it (the last one may
    # have come just before the deadline) before it is asked for its count
    assert wait_for(lambda: caught_up(tb.port), 5)
    n = seen(tb, key)
    assert 2 <= n <= 4, (n, e)
    assert e["attempts"] == n


# ---------------------------------------------------------------------------
# per_try_timeout
# ---------------------------------------------------------------------------

def test_per_try_timeout_then_retry_succeeds(proxy, testbed):
    """The first try is slow (x-testbed-fail-delay applies to the failing
    first request only), the retry fast: 200 after ~per_try_timeout."""
    px, port, (tb,) = start(proxy, testbed, route_action={
        "timeout": "10s",
        "retry_policy": {"retry_conditions": ["gateway-error"], "num_retries": 1,
                         "per_try_timeout": "300ms"}})
    key = uniq("pt")
    r = get(port, "/", headers=ff(key, 1, delay="3s"))
    e = last_log(px, 1)
    assert r.status == 200, (r, e)
    assert r.header("x-testbed-attempt") == "2"
    assert seen(tb, key) == 2
    assert e["attempts"] == 2
    assert [w for _, w in tries(e)] == ["per-try-timeout", "done"]
    assert 300 <= e["duration_ms"] <= 300 + SLACK, e
    # flags describe the answer the client got: a 200, no timeout
    assert flags(e) == set(), e
    # the slow first try was cancelled: no connection still waits for it
    assert wait_for(lambda: established_to(tb.port) <= 1, 1.0)


def test_per_try_timeout_not_retried_without_condition(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, route_action={
        "retry_policy": {"retry_conditions": ["retriable-4xx"], "num_retries": 2,
                         "per_try_timeout": "300ms"}})
    key = uniq("pt2")
    r = get(port, "/", headers=ff(key, 1, delay="3s"))
    e = last_log(px, 1)
    assert r.status == 504, (r, e)
    assert "UT" in flags(e)
    assert e["attempts"] == 1
    assert seen(tb, key) == 1
    assert e["duration_ms"] <= 300 + SLACK


def test_per_try_timeout_retries_exhausted(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, route_action={
        "timeout": "10s",
        "retry_policy": {"retry_conditions": ["5xx"], "num_retries": 2,
                         "per_try_timeout": "200ms"}})
    key = uniq("pt3")
    r = get(port, "/", headers=ff(key, 10, delay="3s"))
    e = last_log(px, 1)
    assert r.status == 504, (r, e)
    assert {"UT", "URX"} <= flags(e)
    assert e["attempts"] == 3
    assert seen(tb, key) == 3
    assert [w for _, w in tries(e)] == ["per-try-timeout"] * 3
    assert 600 <= e["duration_ms"] <= 600 + 750 + SLACK   # 3 tries + 2 backoffs (<= 25, 50 ms)


def test_per_try_timeout_defaults_to_route_timeout(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, route_action={
        "timeout": "500ms", "retry_policy": {"retry_conditions": ["5xx"], "num_retries": 3}})
    r = get(port, "/", headers=[("x-testbed-delay", "3s")])
    e = last_log(px, 1)
    assert r.status == 504, (r, e)
    assert e["attempts"] == 1
    assert e["duration_ms"] <= 500 + SLACK


# ---------------------------------------------------------------------------
# grpc-timeout
# ---------------------------------------------------------------------------

def test_grpc_timeout_shorter_than_route_timeout_wins(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, protocol="H2C", route_action={"timeout": "10s"})
    st = grpc_call(port, headers=[("grpc-timeout", "500m"), ("x-testbed-delay", "2s"),
                                  ("x-testbed-grpc-status", "0")])
    e = last_log(px, 1)
    assert st.status == 200, (st, e)
    assert grpc_status_of(st) == 4, (st.headers, st.trailers)   # DEADLINE_EXCEEDED
    assert "UT" in flags(e)
    assert 450 <= e["duration_ms"] <= 500 + SLACK, e


def test_route_timeout_shorter_than_grpc_timeout_wins(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, protocol="H2C", route_action={"timeout": "500ms"})
    st = grpc_call(port, headers=[("grpc-timeout", "10S"), ("x-testbed-delay", "2s"),
                                  ("x-testbed-grpc-status", "0")])
    e = last_log(px, 1)
    assert grpc_status_of(st) == 4, (st.headers, st.trailers)
    assert e["duration_ms"] <= 500 + SLACK, e


def test_grpc_timeout_within_deadline_ok(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, protocol="H2C")
    st = grpc_call(port, headers=[("grpc-timeout", "5S"), ("x-testbed-delay", "200ms"),
                                  ("x-testbed-grpc-status", "0")])
    assert grpc_status_of(st) == 0, (st.headers, px.access_log())


def test_grpc_timeout_cancels_h2_stream(proxy, h2backend):
    b = h2backend(lambda n, h, body: "hold")
    port = free_port()
    px = proxy(config(port, [b.addr], protocol="H2C"), expect_ports=[port])
    st = grpc_call(port, headers=[("grpc-timeout", "300m")])
    assert grpc_status_of(st) == 4, (st.headers, st.trailers)
    assert wait_for(lambda: b.resets, 2.0), "the backend stream was not reset"
    assert "UT" in flags(last_log(px, 1))


# ---------------------------------------------------------------------------
# timeouts on streaming responses: after headers, a reset instead of a 504
# ---------------------------------------------------------------------------

STREAMING = [("x-testbed-body-size", "4000"), ("x-testbed-body-delay", "800ms")]


def test_route_timeout_while_streaming_h1(proxy, testbed):
    """Headers and the first chunk went out, then the route timeout: the
    client sees a truncated body (connection closed), never a 504."""
    px, port, (tb,) = start(proxy, testbed, route_action={"timeout": "1200ms"})
    r = get(port, "/", headers=STREAMING)
    e = last_log(px, 1)
    assert r.status == 200, (r, e)
    assert not r.complete and r.body_len < 4000, r
    assert r.body_len >= 1000          # at least the first quarter arrived
    assert "UT" in flags(e)
    assert e["duration_ms"] <= 1200 + SLACK
    assert wait_for(lambda: established_to(tb.port) == 0, 1.0)


def test_route_timeout_while_streaming_h2(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, route_action={"timeout": "1200ms"})
    with H2Conn(port) as c:
        st = c.wait_stream(c.request("GET", "/", headers=STREAMING), timeout=10)
        assert c.streams  # the connection itself survives the stream reset
        ok = c.wait_stream(c.request("GET", "/after"), timeout=10)
    assert st.status == 200 and st.reset_code is not None and not st.ended, st
    assert 1000 <= st.body_len < 4000, st
    assert ok.status == 200
    e = [x for x in px.access_log(min_entries=2) if x["path"] == "/"][0]
    assert "UT" in flags(e)


def test_per_try_timeout_while_streaming(proxy, testbed):
    """A per-try timeout after headers went out cannot retry: a reset."""
    px, port, (tb,) = start(proxy, testbed, route_action={
        "timeout": "10s", "retry_policy": {"retry_conditions": ["5xx"], "num_retries": 2,
                                           "per_try_timeout": "1200ms"}})
    key = uniq("pts")
    r = get(port, "/", headers=ff(key, 0, extra=STREAMING))
    e = last_log(px, 1)
    assert r.status == 200 and not r.complete, (r, e)
    assert seen(tb, key) == 1
    assert e["attempts"] == 1


# ---------------------------------------------------------------------------
# listener timeouts.stream_idle
# ---------------------------------------------------------------------------

IDLE = {"timeouts": {"stream_idle": "1s"}}


def test_stream_idle_before_headers_is_504_si(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, listener_extra=IDLE, route_action={"timeout": "0s"})
    r = get(port, "/", headers=[("x-testbed-delay", "3s")])
    e = last_log(px, 1)
    assert r.status == 504, (r, e)
    assert "SI" in flags(e)
    assert 950 <= e["duration_ms"] <= 1000 + SLACK, e
    assert wait_for(lambda: established_to(tb.port) == 0, 1.0)


def test_stream_idle_while_streaming_resets(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, listener_extra=IDLE, route_action={"timeout": "0s"})
    r = get(port, "/", headers=[("x-testbed-body-size", "4000"),
                                ("x-testbed-body-delay", "2500ms")])
    e = last_log(px, 1)
    assert r.status == 200 and not r.complete, (r, e)
    assert "SI" in flags(e)


def test_stream_idle_not_triggered_while_bytes_flow(proxy, testbed):
    """Chunks every 400 ms keep a 1 s stream_idle at bay for 1.2 s+."""
    px, port, (tb,) = start(proxy, testbed, listener_extra=IDLE, route_action={"timeout": "0s"})
    r = get(port, "/", headers=[("x-testbed-body-size", "4000"),
                                ("x-testbed-body-delay", "400ms")])
    e = last_log(px, 1)
    assert r.status == 200 and r.complete and r.body_len == 4000, (r, e)
    assert flags(e) == set()
    assert e["duration_ms"] >= 1100


def test_stream_idle_grpc_is_deadline_exceeded(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, protocol="H2C", listener_extra=IDLE,
                            route_action={"timeout": "0s"})
    st = grpc_call(port, headers=[("x-testbed-delay", "3s"), ("x-testbed-grpc-status", "0")])
    e = last_log(px, 1)
    assert st.status == 200
    assert grpc_status_of(st) == 4, (st.headers, st.trailers)
    assert "SI" in flags(e)


def test_request_body_upload_slower_than_timeout(proxy, testbed):
    """The route timeout runs from the first request byte: a client that
    stalls its upload past it gets 504 (nothing was answered yet)."""
    px, port, (tb,) = start(proxy, testbed, route_action={"timeout": "500ms"})
    with H1Conn(port) as c:
        c.send(request_bytes("POST", "/", headers=[("content-length", "100")]))
        c.send(b"x" * 10)
        r = c.read_response(timeout=10)
    e = last_log(px, 1)
    assert r.status == 504, (r, e)
    assert "UT" in flags(e)
