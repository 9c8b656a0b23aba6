"""Strict HTTP/1.1 framing on the client side: chunked request bodies,
Expect: 100-continue, and every request-smuggling shape answered with 400
and a closed connection (raw sockets, exact bytes)."""

import time

import pytest

from h1util import H1Conn, NoResponse, chunked, get, request_bytes, start_simple


@pytest.fixture
def sy(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed)
    return px, port


# ---------------------------------------------------------------------------
# chunked request bodies
# ---------------------------------------------------------------------------

def test_chunked_request_body(sy):
    px, port = sy
    parts = [b"hello", b"x" * 1000, b"y" * 70000, b"end!!!!"]
    total = sum(len(p) for p in parts)
    with H1Conn(port) as c:
        c.send(b"POST /chunked HTTP/1.1\r\nHost: test.local\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + chunked(parts))
        r = c.read_response()
        assert r.status == 200, r
        body = r.json()
        assert body["body_bytes"] == total
        assert body["path"] == "/chunked"
        assert "transfer-encoding" not in body["headers"] or \
            body["headers"]["transfer-encoding"] == "chunked"
        # The framing was consumed exactly: the next request on the connection works.
        c.send(request_bytes("GET", "/next"))
        r2 = c.read_response()
        assert r2.status == 200 and r2.json()["path"] == "/next"


def test_chunked_request_with_extensions_and_trailers(sy):
    px, port = sy
    body = (b"5;name=value\r\nhello\r\n"
            b"3\r\nabc\r\n"
            b"0\r\nX-Trailer: t\r\n\r\n")
    with H1Conn(port) as c:
        c.send(b"POST /ext HTTP/1.1\r\nHost: test.local\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n" + body)
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["body_bytes"] == 8
        c.send(request_bytes("GET", "/after-trailers"))
        assert c.read_response().json()["path"] == "/after-trailers"


def test_chunked_request_sent_slowly(sy):
    px, port = sy
    with H1Conn(port) as c:
        c.send(b"POST /slowchunks HTTP/1.1\r\nHost: test.local\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(5):
            c.send(b"4\r\nabcd\r\n")
            time.sleep(0.05)   # a slow client: each chunk arrives on its own
        c.send(b"0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["body_bytes"] == 20


# ---------------------------------------------------------------------------
# Expect: 100-continue
# ---------------------------------------------------------------------------

def test_expect_100_continue(sy):
    px, port = sy
    body = b"z" * 5000
    with H1Conn(port) as c:
        c.send(b"POST /expect HTTP/1.1\r\nHost: test.local\r\n"
               b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        interim = c.read_response(timeout=3, allow_1xx=True)
        assert interim.status == 100, interim
        assert interim.head.startswith(b"HTTP/1.1 100 Continue\r\n"), interim.head
        c.send(body)
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["body_bytes"] == 5000


# ---------------------------------------------------------------------------
# smuggling and malformed heads: 400, then the connection closes
# ---------------------------------------------------------------------------

BAD_REQUESTS = {
    "cl_and_te": (b"POST / HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "te_and_cl": (b"POST / HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 5\r\n\r\n0\r\n\r\n"),
    "two_content_lengths": (b"POST / HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n"
                            b"Content-Length: 6\r\n\r\nhello!"),
    "content_length_list": (b"POST / HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5, 6\r\n"
                            b"\r\nhello!"),
    "bad_chunk_size": (b"POST / HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n"
                       b"\r\nzz\r\nhello\r\n0\r\n\r\n"),
    "obs_fold": b"GET / HTTP/1.1\r\nHost: test.local\r\nX-A: a\r\n b\r\n\r\n",
    "obs_fold_tab": b"GET / HTTP/1.1\r\nHost: test.local\r\nX-A: a\r\n\tb\r\n\r\n",
    "cr_in_value": b"GET / HTTP/1.1\r\nHost: test.local\r\nX-A: a\rb\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\nHost: test.local\r\nX-A: a\x00b\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost : test.local\r\n\r\n",
    "space_before_colon_other": b"GET / HTTP/1.1\r\nHost: test.local\r\nX-A : 1\r\n\r\n",
    "bare_lf_request_line": b"GET / HTTP/1.1\nHost: test.local\r\n\r\n",
    "bare_lf_header_line": b"GET / HTTP/1.1\r\nHost: test.local\nX-A: 1\r\n\r\n",
    "bare_lf_only": b"GET / HTTP/1.1\nHost: test.local\n\n",
    "missing_host": b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_malformed_request_400_and_close(sy, case):
    px, port = sy
    with H1Conn(port, timeout=5) as c:
        c.send_ignoring_reset(BAD_REQUESTS[case])
        try:
            r = c.read_response(timeout=5)
        except NoResponse as e:
            pytest.fail(f"no 400 before the connection closed: {e}")
        assert r.status == 400, r
        assert not r.has_header("x-testbed-instance"), "a malformed request reached the backend"
        assert c.wait_closed(3.0), "connection left open after a framing error"
        # Nothing after the 400 is interpreted as another request.
        assert not c.buf, bytes(c.buf)


def test_smuggled_second_request_not_forwarded(sy):
    """CL+TE with a request hidden in the body: one 400, no second response."""
    px, port = sy
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: test.local\r\n\r\n"
    raw = (b"POST / HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n"
           b"Content-Length: %d\r\n\r\n0\r\n\r\n" % (5 + len(smuggled))) + smuggled
    with H1Conn(port, timeout=5) as c:
        c.send_ignoring_reset(raw)
        r = c.read_response(timeout=5)
        assert r.status == 400, r
        assert c.wait_closed(3.0)
        assert b"HTTP/1.1" not in bytes(c.buf)
    assert all(e.get("path") != "/smuggled" for e in px.access_log(min_entries=1))


# ---------------------------------------------------------------------------
# HTTP/1.0
# ---------------------------------------------------------------------------

def test_http10_refused_426(sy):
    px, port = sy
    with H1Conn(port, timeout=5) as c:
        c.send(b"GET /old HTTP/1.0\r\nHost: test.local\r\n\r\n")
        r = c.read_response(timeout=5)
        assert r.status == 426, r
        assert not r.has_header("x-testbed-instance")
        assert c.wait_closed(3.0)


def test_http10_accepted_when_enabled(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed, listener_extra="accept_http_10: true")
    with H1Conn(port, timeout=5) as c:
        c.send(b"GET /old HTTP/1.0\r\nHost: test.local\r\n\r\n")
        r = c.read_response(timeout=5)
        assert r.status == 200, r
        assert r.json()["path"] == "/old"
        assert r.header("x-testbed-instance") == "tb1"
        # No keep-alive was asked for: the proxy closes after the response.
        assert c.wait_closed(3.0)


# ---------------------------------------------------------------------------
# oversized heads
# ---------------------------------------------------------------------------

def test_huge_headers_431(sy):
    px, port = sy
    pad = "v" * 1000
    headers = [(f"X-Pad-{i}", pad) for i in range(100)]   # ~100 KiB of headers
    raw = request_bytes("GET", "/big-head", headers=headers)
    assert len(raw) > 100 * 1000
    with H1Conn(port, timeout=5) as c:
        c.send_ignoring_reset(raw)
        r = c.read_response(timeout=5)
        assert r.status == 431, r
        assert not r.has_header("x-testbed-instance")
        assert c.wait_closed(3.0)
    # An ordinary request still works afterwards.
    assert get(port, "/fine").status == 200
