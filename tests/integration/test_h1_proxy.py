"""HTTP/1.1 through the proxy: routing, connection reuse, pipelining, big
bodies with bounded memory, forwarding headers, hop-by-hop stripping, backend
errors, timeouts and the access log."""

import re
import socket
import time

import httpx
import pytest

from conftest import free_port, free_ports
from h1util import (H1Conn, NoResponse, RssSampler, get, request_bytes, rss_kib,
                    small_quarantine_env,
                    simple_config, start_simple, tcp_peers_of_port)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# ---------------------------------------------------------------------------
# routing
# ---------------------------------------------------------------------------

def routing_config(port, tbs):
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    protocol: HTTP
    url_map: main
access_log: {{enabled: true, path: "-", format: json}}
drain_timeout: 5s
url_maps:
  - name: main
    default_service: dflt
    host_rules:
      - hosts: ["api.example"]
        path_matcher: api
    path_matchers:
      - name: api
        default_service: apidefault
        path_rules:
          - paths: ["/x/*"]
            service: short
          - paths: ["/x/y/*"]
            service: long
          - paths: ["/x/y/z"]
            service: exact
backend_services:
""" + "".join(f"""\
  - name: {name}
    protocol: HTTP
    timeout: 10s
    endpoints: [{{address: "{tb.addr}"}}]
""" for name, tb in tbs.items())


@pytest.fixture
def routed(proxy, testbed):
    tbs = {n: testbed(name=n) for n in ("dflt", "apidefault", "short", "long", "exact")}
    port = free_port()
    proxy(routing_config(port, tbs), expect_ports=[port])
    return port


@pytest.mark.parametrize("host,path,expect", [
    ("other.example", "/x/y/z", "dflt"),          # no host rule: the url map default
    ("api.example", "/nothing/here", "apidefault"),  # host rule, no path rule
    ("api.example", "/x/a", "short"),             # "/x/*"
    ("api.example", "/x/y/a", "long"),            # longest prefix "/x/y/*" wins
    ("api.example", "/x/y/z", "exact"),           # exact beats both prefixes
    ("api.example", "/x/y/z/deeper", "long"),     # the exact path is not a prefix
    ("api.example", "/x/y/z?q=1", "exact"),       # the query is not part of the path
])
def test_routing(routed, host, path, expect):
    r = get(routed, path, host=host)
    assert r.status == 200, r
    assert r.header("x-testbed-instance") == expect
    body = r.json()
    assert body["instance"] == expect
    assert body["path"] == path


# ---------------------------------------------------------------------------
# connections
# ---------------------------------------------------------------------------

def test_keepalive_reuse(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    before = tcp_peers_of_port(tb.port)
    with H1Conn(port) as c:
        local = c.local_port()
        for i in range(5):
            c.send(request_bytes("GET", f"/ka/{i}"))
            r = c.read_response()
            assert r.status == 200, r
            assert r.json()["path"] == f"/ka/{i}"
            assert not r.wants_close(), r
            assert c.local_port() == local and not c.eof
    # Five sequential requests should have shared the upstream connection.
    opened = tcp_peers_of_port(tb.port) - before
    assert 1 <= len(opened) <= 2, f"proxy opened {len(opened)} connections to the backend"


def test_keepalive_httpx_client(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    seen = set()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as cl:
        for i in range(4):
            r = cl.get(f"/h/{i}")
            assert r.status_code == 200
            assert r.json()["path"] == f"/h/{i}"
            assert "close" not in r.headers.get("connection", "").lower()
            seen.add(r.extensions["network_stream"].get_extra_info("client_addr"))
    assert len(seen) == 1, f"httpx used {len(seen)} connections: {seen}"


def test_pipelining_in_order(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    reqs = (request_bytes("GET", "/p1", headers=[("x-testbed-delay", "300ms")]) +
            request_bytes("GET", "/p2") +
            request_bytes("POST", "/p3", body=b"abc"))
    with H1Conn(port) as c:
        c.send(reqs)
        got = []
        for _ in range(3):
            r = c.read_response()
            assert r.status == 200, r
            got.append((r.json()["path"], r.json()["method"], r.json()["body_bytes"]))
    assert got == [("/p1", "GET", 0), ("/p2", "GET", 0), ("/p3", "POST", 3)]


def test_connection_close_request(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    with H1Conn(port) as c:
        c.send(request_bytes("GET", "/bye", headers=[("Connection", "close")]))
        r = c.read_response()
        assert r.status == 200
        assert r.wants_close(), r
        assert "connection" not in r.json()["headers"]
        assert c.wait_closed(3.0)


# ---------------------------------------------------------------------------
# bodies
# ---------------------------------------------------------------------------

def test_response_body_byte_count(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    for size in (0, 1, 65537, 3 * 1024 * 1024 + 7):
        r = get(port, "/dl", headers=[("x-testbed-body-size", str(size))])
        assert r.status == 200
        assert r.complete and r.body_len == size, r
        if not r.chunked:
            assert r.header("content-length") == str(size)


def test_response_body_httpx_stream(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    size = 5 * 1024 * 1024 + 3
    total = 0
    with httpx.Client(timeout=20) as cl:
        with cl.stream("GET", f"http://127.0.0.1:{port}/s",
                       headers={"x-testbed-body-size": str(size)}) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw(65536):
                total += len(chunk)
    assert total == size


def test_httpx_streamed_upload(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    chunk = b"u" * 65536

    def gen():
        for _ in range(64):
            yield chunk

    with httpx.Client(timeout=30) as cl:
        r = cl.post(f"http://127.0.0.1:{port}/up", content=gen())
    assert r.status_code == 200
    assert r.json()["body_bytes"] == 64 * 65536


BIG = 256 * 1024 * 1024
RSS_SLACK_KIB = 32 * 1024


def warm_up(px, port):
    r = get(port, "/warm", headers=[("x-testbed-body-size", str(4 * 1024 * 1024))])
    assert r.status == 200 and r.body_len == 4 * 1024 * 1024
    r = get(port, "/warm", method="POST", body=b"w" * (4 * 1024 * 1024))
    assert r.status == 200 and r.json()["body_bytes"] == 4 * 1024 * 1024
    # both exchanges are over (logged) before the idle RSS is taken
    assert len(px.access_log(min_entries=2)) >= 2, px.stderr()[-2000:]


@pytest.fixture
def big(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed, env=small_quarantine_env(), timeout="120s")
    warm_up(px, port)
    idle = rss_kib(px.pid)
    assert idle
    return px, port, idle


def test_large_upload_bounded_memory(big):
    px, port, idle = big
    block = memoryview(b"\xa5" * (1024 * 1024))
    t0 = time.monotonic()
    with RssSampler(px.pid) as s, H1Conn(port, timeout=60) as c:
        c.send(request_bytes("POST", "/big-up", headers=[("Content-Length", str(BIG))]))
        for _ in range(BIG // len(block)):
            c.send(block)
        r = c.read_response(timeout=60)
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    assert r.json()["body_bytes"] == BIG
    assert s.samples > 0
    assert s.peak - idle < RSS_SLACK_KIB, \
        f"RSS grew {s.peak - idle} KiB over idle {idle} KiB (upload took {elapsed:.1f}s)"


def test_large_download_bounded_memory(big):
    px, port, idle = big
    t0 = time.monotonic()
    with RssSampler(px.pid) as s, H1Conn(port, timeout=60) as c:
        c.send(request_bytes("GET", "/big-down", headers=[("x-testbed-body-size", str(BIG))]))
        r = c.read_response(timeout=90, store=False)
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    assert r.complete and r.body_len == BIG, r
    assert s.peak - idle < RSS_SLACK_KIB, \
        f"RSS grew {s.peak - idle} KiB over idle {idle} KiB (download took {elapsed:.1f}s)"


def test_slow_reader_bounded_memory(big):
    px, port, idle = big
    c = H1Conn(port, timeout=10)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        with RssSampler(px.pid) as s:
            c.send(request_bytes("GET", "/slow", headers=[("x-testbed-body-size", str(BIG))]))
            head = c.read_head(10)
            assert head.startswith(b"HTTP/1.1 200"), head
            got = 0
            deadline = time.monotonic() + 3.0
            for _ in range(2000):
                if time.monotonic() >= deadline:
                    break
                data = c.sock.recv(4096)
                assert data, "proxy closed the connection under a slow reader"
                got += len(data)
                time.sleep(0.005)   # the slow reader: the point of the test
            # Hold still while sampling RSS: an unbounded proxy would keep
            # buffering meanwhile (time passing is what is tested here).
            time.sleep(0.5)
        assert 0 < got < BIG
        assert s.peak - idle < RSS_SLACK_KIB, \
            f"RSS grew {s.peak - idle} KiB over idle {idle} KiB with a slow reader"
    finally:
        c.close()
    # The proxy survives the abandoned download.
    r = get(port, "/after")
    assert r.status == 200


# ---------------------------------------------------------------------------
# forwarding headers
# ---------------------------------------------------------------------------

def echoed(port, headers=(), host="test.local", path="/echo"):
    r = get(port, path, host=host, headers=headers)
    assert r.status == 200, r
    return r.json()["headers"]


def test_xff_appended_to_existing(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    h = echoed(port, [("X-Forwarded-For", "203.0.113.7")])
    assert h["x-forwarded-for"] == "203.0.113.7, 127.0.0.1, 127.0.0.1"


def test_xff_multiple_incoming_fields(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    h = echoed(port, [("X-Forwarded-For", "198.51.100.1"),
                      ("X-Forwarded-For", "198.51.100.2")])
    assert h["x-forwarded-for"] == "198.51.100.1, 198.51.100.2, 127.0.0.1, 127.0.0.1"


def test_xff_set_when_absent(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    h = echoed(port)
    assert h["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"


def test_xff_replaced_from_untrusted_peer(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed,
                                listener_extra='xff_trusted_cidrs: ["10.0.0.0/8"]')
    h = echoed(port, [("X-Forwarded-For", "203.0.113.7")])
    assert h["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"


def test_host_preserved_exactly(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    h = echoed(port, host="Svc.Example.COM:8443")
    assert h["host"] == "Svc.Example.COM:8443"


def test_x_forwarded_proto(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    assert echoed(port)["x-forwarded-proto"] == "http"
    # A client's claim is not passed on.
    assert echoed(port, [("X-Forwarded-Proto", "https")])["x-forwarded-proto"] == "http"


def test_request_id_generated(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    a = echoed(port)["x-request-id"]
    b = echoed(port)["x-request-id"]
    assert UUID_RE.match(a), a
    assert UUID_RE.match(b), b
    assert a != b


def test_request_id_kept(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    h = echoed(port, [("X-Request-Id", "client-id-42")])
    assert h["x-request-id"] == "client-id-42"


# ---------------------------------------------------------------------------
# hop-by-hop headers
# ---------------------------------------------------------------------------

def test_hop_by_hop_request_headers_stripped(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    with H1Conn(port) as c:
        c.send(request_bytes("GET", "/hop", headers=[
            ("Connection", "keep-alive, X-Foo"),
            ("X-Foo", "secret"),
            ("X-Bar", "kept"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "deflate"),
            ("Upgrade", "example/1"),
        ]))
        r = c.read_response()
        assert r.status == 200, r
        h = r.json()["headers"]
        for name in ("x-foo", "keep-alive", "proxy-connection", "te", "upgrade"):
            assert name not in h, f"{name} reached the backend: {h}"
        assert h.get("connection") in (None, "keep-alive"), h
        assert h["x-bar"] == "kept"
        for name in ("keep-alive", "proxy-connection", "upgrade", "te"):
            assert not r.has_header(name), r
        # and the client connection is still usable
        c.send(request_bytes("GET", "/hop2"))
        assert c.read_response().json()["path"] == "/hop2"


def test_connection_named_headers_stripped_case_insensitively(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    h = echoed(port, [("Connection", "X-One,  x-TWO"), ("x-one", "1"), ("X-Two", "2"),
                      ("X-Three", "3")])
    assert "x-one" not in h and "x-two" not in h, h
    assert h["x-three"] == "3"


# ---------------------------------------------------------------------------
# backend errors
# ---------------------------------------------------------------------------

def test_backend_refused_is_503(proxy):
    port, dead = free_ports(2)
    proxy(simple_config(port, f"127.0.0.1:{dead}"), expect_ports=[port])
    t0 = time.monotonic()
    r = get(port, "/nobody")
    assert r.status == 503, r
    assert time.monotonic() - t0 < 5


def test_backend_close_without_answer_is_502(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    r = get(port, "/close", headers=[("x-testbed-close", "1")])
    assert r.status == 502, r
    assert not r.has_header("x-testbed-instance")


def test_backend_reset_before_headers_is_502(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    r = get(port, "/rst", headers=[("x-testbed-reset", "before-headers")])
    assert r.status == 502, r


def test_backend_timeout_is_504(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed, timeout="1s")
    t0 = time.monotonic()
    r = get(port, "/slow", headers=[("x-testbed-delay", "3s")])
    elapsed = time.monotonic() - t0
    assert r.status == 504, (r, elapsed, px.access_log(min_entries=1), px.stderr()[-3000:])
    assert 0.9 <= elapsed < 2.9, elapsed


def test_backend_reset_mid_body_truncates(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    size = 2 * 1024 * 1024
    t0 = time.monotonic()
    with H1Conn(port, timeout=10) as c:
        c.send(request_bytes("GET", "/mid", headers=[("x-testbed-reset", "mid-body"),
                                                     ("x-testbed-body-size", str(size))]))
        try:
            r = c.read_response(timeout=10, store=False)
        except NoResponse:
            r = None
        if r is not None and r.status == 200:
            assert not r.complete and r.body_len < size, r
            assert c.eof
        elif r is not None:
            assert r.status == 502, r
    assert time.monotonic() - t0 < 8
    # The proxy keeps serving.
    assert get(port, "/ok").status == 200


# ---------------------------------------------------------------------------
# client-side timeouts
# ---------------------------------------------------------------------------

def test_request_headers_timeout_408(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed, listener_extra="timeouts: {request_headers: 1s}")
    with H1Conn(port) as c:
        t0 = time.monotonic()
        c.send(b"GET /partial HTTP/1.1\r\nHost: test.local\r\nX-A: 1\r\n")
        r = c.read_response(timeout=5)
        elapsed = time.monotonic() - t0
        assert r.status == 408, r
        assert 0.8 <= elapsed < 4, elapsed
        assert c.wait_closed(3.0)


def test_keepalive_idle_timeout_closes(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed, listener_extra="timeouts: {http_keepalive: 1s}")
    with H1Conn(port) as c:
        c.send(request_bytes("GET", "/idle"))
        r = c.read_response()
        assert r.status == 200, r
        assert not r.wants_close(), r
        t0 = time.monotonic()
        assert c.wait_closed(5.0), "idle connection not closed"
        elapsed = time.monotonic() - t0
        assert 0.7 <= elapsed < 4, (elapsed, px.stderr()[-3000:])
        assert not c.buf, f"unexpected bytes before close: {bytes(c.buf)!r}"


# ---------------------------------------------------------------------------
# access log
# ---------------------------------------------------------------------------

def test_access_log_json_line(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    body = b"0123456789"
    with H1Conn(port) as c:
        c.send(request_bytes("POST", "/log/me?x=1", host="logs.example:8080",
                             headers=[("X-Request-Id", "log-req-1")], body=body))
        r1 = c.read_response()
        c.send(request_bytes("GET", "/log/two", host="logs.example",
                             headers=[("x-testbed-status", "404")]))
        r2 = c.read_response()
    assert r1.status == 200 and r2.status == 404
    entries = px.access_log(min_entries=2)
    assert len(entries) == 2, px.stdout()
    e = entries[0]
    for k in ("time", "client", "method", "authority", "path", "protocol", "status",
              "bytes_in", "bytes_out", "duration_ms", "backend_service", "endpoint",
              "request_id"):
        assert k in e, f"missing {k} in {e}"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)$", e["time"]), e
    assert e["client"].startswith("127.0.0.1")
    assert e["method"] == "POST"
    assert e["authority"] == "logs.example:8080"
    assert e["path"] == "/log/me?x=1"
    assert e["protocol"] == "HTTP/1.1"
    assert e["status"] == 200
    assert e["bytes_in"] == len(body)
    assert e["bytes_out"] == r1.body_len
    assert isinstance(e["duration_ms"], (int, float)) and 0 <= e["duration_ms"] < 10000
    assert e["backend_service"] == "svc"
    assert e["endpoint"] == tb.addr
    assert e["request_id"] == "log-req-1"
    e2 = entries[1]
    assert (e2["method"], e2["path"], e2["status"]) == ("GET", "/log/two", 404)
    assert e2["bytes_in"] == 0
    assert UUID_RE.match(e2["request_id"]), e2
