"""HTTP/1.1 strictness on the client side (docs/protocols.md, "HTTP/1.1
strictness"): exact bytes from a raw socket, and what the capture backend
(capture.py) received checked on the other end.

  - request-target syntax (RFC 9112 3.2 / RFC 3986) and the request line;
  - Host (RFC 9112 3.2) and the absolute-form authority;
  - Transfer-Encoding: only one "chunked" (400 / 501 otherwise);
  - chunked framing checked strictly ahead of libhttp-parser;
  - limits.max_request_headers (431; trailers count);
  - max_request_headers_size and libhttp-parser's 80 KiB ceiling (431);
  - timeouts.request_headers from the accept, keep-alive after a response.

Every rejection is a status of the proxy's own, then a closed connection,
and no request completed at the backend.
"""

import time

import pytest

from capture import CaptureBackend
from conftest import free_port
from h1util import H1Conn, NoResponse, simple_config

H = b"Host: h.test\r\n"
POST = b"POST /p HTTP/1.1\r\n" + H
TE = b"Transfer-Encoding: chunked\r\n"


class Rig:
    def __init__(self, px, port, cap):
        self.px, self.port, self.cap = px, port, cap


@pytest.fixture
def rig(proxy):
    """Factory: start(listener_extra="") -> Rig: a capture backend and a proxy."""
    caps = []

    def start(listener_extra=""):
        cap = CaptureBackend().start()
        caps.append(cap)
        port = free_port()
        px = proxy(simple_config(port, cap.addr, listener_extra=listener_extra, timeout="5s"),
                   workers=1, expect_ports=[port])
        return Rig(px, port, cap)

    yield start
    for cap in caps:
        assert cap.stop(), "capture backend threads did not stop"


@pytest.fixture
def r(rig):
    return rig()


def rejected(rig, raw, status):
    """raw gets `status` from the proxy, the connection closes, and the
    backend completed no request (nor saw bytes it cannot parse)."""
    before = len(rig.cap.requests())
    with H1Conn(rig.port, timeout=5) as c:
        c.send_ignoring_reset(raw)
        try:
            resp = c.read_response(timeout=5)
        except NoResponse as e:
            pytest.fail(f"no {status} before the close: {e}\n{rig.cap.describe()}")
        assert resp.status == status, (resp, rig.cap.describe())
        assert not resp.has_header("x-capture-seq"), "the backend answered"
        assert resp.wants_close(), resp
        assert c.wait_closed(3.0), "connection left open after the rejection"
    rig.cap.settle(2.0)
    assert len(rig.cap.requests()) == before, rig.cap.describe()
    assert not rig.cap.errors(), rig.cap.describe()


def forwarded(rig, raw, target, host="h.test", body=b""):
    """raw is forwarded as one request: the backend sees exactly this target,
    Host and body, and the connection stays usable."""
    before = len(rig.cap.requests())
    with H1Conn(rig.port, timeout=5) as c:
        c.send(raw)
        resp = c.read_response(timeout=5)
        assert resp.status == 200 and resp.has_header("x-capture-seq"), \
            (resp, rig.cap.describe())
        c.send(b"GET /next HTTP/1.1\r\n" + H + b"\r\n")
        assert c.read_response(timeout=5).status == 200
    reqs = rig.cap.wait_requests(before + 2)[before:]
    assert [(q.target, q.host, q.body) for q in reqs[:1]] == [(target, host, body)], \
        rig.cap.describe()
    assert not rig.cap.errors(), rig.cap.describe()
    return reqs[0]


# ---------------------------------------------------------------------------
# 1. request-target
# ---------------------------------------------------------------------------

BAD_TARGETS = {
    "tab": b"/a\tb",
    "form-feed": b"/a\x0cb",
    "vertical-tab": b"/a\x0bb",
    "nul": b"/a\x00b",
    "del": b"/a\x7fb",
    "byte-0x80": b"/a\x80b",
    "byte-0xff": b"/a\xffb",
    "utf8": "/caf\u00e9".encode(),
    "fragment": b"/a#frag",
    "fragment-only": b"/#",
    "dquote": b'/a"b',
    "angle": b"/a<b>",
    "backslash": b"/a\\b",
    "caret": b"/a^b",
    "backtick": b"/a`b",
    "braces": b"/a{b}",
    "pipe": b"/a|b",
    "brackets": b"/a[0]",
    "pct-short": b"/a%4",
    "pct-not-hex": b"/a%zz",
    "pct-end": b"/a%",
    "no-slash": b"a/b",
    "asterisk-get": b"*",
    "authority-form": b"h.test:80",
    "abs-userinfo": b"http://user@h.test/p",
    "abs-userinfo-password": b"http://user:pw@h.test/p",
    "abs-empty-host": b"http:///p",
    "abs-bad-port": b"http://h.test:abc/p",
    "abs-other-scheme": b"ftp://h.test/p",
    "abs-fragment": b"http://h.test/p#x",
}


@pytest.mark.parametrize("name", sorted(BAD_TARGETS))
def test_bad_target_400(r, name):
    rejected(r, b"GET " + BAD_TARGETS[name] + b" HTTP/1.1\r\n" + H + b"\r\n", 400)


@pytest.mark.parametrize("target", [
    b"/a;b=c/d:e@f!$&'()*+,=-._~",
    b"/p?q=/x?y&z=%20%C3%A9",
    b"/a%2Fb%5C",
])
def test_good_target_forwarded_verbatim(r, target):
    forwarded(r, b"GET " + target + b" HTTP/1.1\r\n" + H + b"\r\n", target)


def test_absolute_form_authority_wins(r):
    req = forwarded(r, b"GET http://other.test:81/p?q=1 HTTP/1.1\r\n" + H + b"\r\n",
                    b"/p?q=1", host="other.test:81")
    assert req.header_all("host") == ["other.test:81"]


def test_absolute_form_query_without_path(r):
    """"http://h?q" goes to the backend in origin-form "/?q"."""
    forwarded(r, b"GET http://other.test?q=1 HTTP/1.1\r\n" + H + b"\r\n", b"/?q=1",
              host="other.test")


def test_absolute_form_with_bad_host_field_400(r):
    """The target's authority wins, but the Host field must still be valid."""
    rejected(r, b"GET http://other.test/p HTTP/1.1\r\nHost: a b\r\n\r\n", 400)


# ---------------------------------------------------------------------------
# 2. request line
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    b"GET  /a HTTP/1.1",
    b"GET /a  HTTP/1.1",
    b"GET /a HTTP/1.1 ",
    b" GET /a HTTP/1.1",
    b"GET\t/a HTTP/1.1",
    b"GET /a\tHTTP/1.1",
    b"GET /a HTTP/1.10",
    b"GET /a HTTP/1.1\x00",
], ids=lambda b: repr(b)[2:-1])
def test_request_line_not_autocorrected(r, line):
    rejected(r, line + b"\r\n" + H + b"\r\n", 400)


# ---------------------------------------------------------------------------
# 3. Host
# ---------------------------------------------------------------------------

BAD_HOSTS = {
    "path": b"h.test/evil",
    "userinfo": b"u@h.test",
    "space": b"a b",
    "list": b"a.test,b.test",
    "port-letters": b"h.test:abc",
    "port-empty": b"h.test:",
    "port-too-big": b"h.test:65536",
    "port-sign": b"h.test:+80",
    "two-ports": b"h.test:80:80",
    "query": b"h.test?x",
    "fragment": b"h.test#x",
    "empty": b"",
    "high-byte": b"h\xe9.test",
    "ipv6-unbracketed": b"::1",
    "ipv6-unclosed": b"[::1",
    "ipv6-bad": b"[::g]",
    "ipv6-zone": b"[fe80::1%25eth0]",
    "bad-pct": b"h%zz.test",
}


@pytest.mark.parametrize("name", sorted(BAD_HOSTS))
def test_bad_host_400(r, name):
    rejected(r, b"GET /a HTTP/1.1\r\nHost: " + BAD_HOSTS[name] + b"\r\n\r\n", 400)


@pytest.mark.parametrize("raw", [
    b"GET /a HTTP/1.1\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
], ids=["missing", "duplicate-same", "duplicate-different"])
def test_host_count_400(r, raw):
    rejected(r, raw, 400)


@pytest.mark.parametrize("host", [
    "h.test:8080", "H.Test", "127.0.0.1", "127.0.0.1:80", "[::1]", "[2001:db8::1]:443",
    "xn--caf-dma.test", "a_b-c~d.test",
])
def test_good_host_forwarded(r, host):
    forwarded(r, b"GET /a HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n", b"/a", host=host)


# ---------------------------------------------------------------------------
# 4. Transfer-Encoding
# ---------------------------------------------------------------------------

BODY = b"3\r\nabc\r\n0\r\n\r\n"


@pytest.mark.parametrize("fields,status", [
    (b"Transfer-Encoding: identity, chunked\r\n", 501),
    (b"Transfer-Encoding: gzip, chunked\r\n", 501),
    (b"Transfer-Encoding: x,chunked\r\n", 501),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
    (b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 400),
    (b"Transfer-Encoding: chunked, chunked\r\n", 400),
    (b"Transfer-Encoding: chunked, gzip\r\n", 400),
    (b"Transfer-Encoding: gzip\r\n", 400),
    (b"Transfer-Encoding: identity\r\n", 400),
    (b'Transfer-Encoding: "chunked"\r\n', 400),
    (b"Transfer-Encoding: chunked;x=1\r\n", 400),
    (b"Transfer-Encoding: ,chunked\r\n", 400),
    (b"Transfer-Encoding: \r\n", 400),
], ids=lambda v: repr(v)[2:-1] if isinstance(v, bytes) else str(v))
def test_transfer_encoding_not_one_chunked(r, fields, status):
    rejected(r, POST + fields + b"\r\n" + BODY, status)


def test_transfer_encoding_in_http10_400(rig):
    r = rig("accept_http_10: true")
    rejected(r, b"POST /p HTTP/1.0\r\n" + H + TE + b"\r\n" + BODY, 400)


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b"CHUNKED", b" chunked "])
def test_transfer_encoding_chunked_any_case(r, value):
    forwarded(r, POST + b"Transfer-Encoding: " + value + b"\r\n\r\n" + BODY, b"/p", body=b"abc")


# ---------------------------------------------------------------------------
# 5. chunked framing
# ---------------------------------------------------------------------------

BAD_CHUNKED = {
    "two-bytes-after-data": b"3\r\nabcXX0\r\n\r\n",
    "lf-after-data": b"3\r\nabc\n0\r\n\r\n",
    "data-longer": b"3\r\nabcd\r\n0\r\n\r\n",
    "ext-bare-lf": b"3;x\nyy\r\nabc\r\n0\r\n\r\n",
    "ext-nul": b"3;a\x00\r\nabc\r\n0\r\n\r\n",
    "ext-empty-name": b"3;\r\nabc\r\n0\r\n\r\n",
    "ext-no-value": b"3;a=\r\nabc\r\n0\r\n\r\n",
    "ext-quoted-crlf": b'3;a="x\r\n"\r\nabc\r\n0\r\n\r\n',
    "ext-quoted-ctl": b'3;a="x\x01"\r\nabc\r\n0\r\n\r\n',
    "ext-trailing-space": b"3;a \r\nabc\r\n0\r\n\r\n",
    "size-garbage": b"3 garbage\r\nabc\r\n0\r\n\r\n",
    "size-trailing-space": b"3 \r\nabc\r\n0\r\n\r\n",
    "size-leading-space": b" 3\r\nabc\r\n0\r\n\r\n",
    "size-0x": b"0x3\r\nabc\r\n0\r\n\r\n",
    "size-overflow": b"10000000000000003\r\nabc\r\n0\r\n\r\n",
    "size-bare-lf": b"3\nabc\r\n0\r\n\r\n",
    "last-bare-lf": b"3\r\nabc\r\n0\n\n",
    "trailer-not-a-field": b"3\r\nabc\r\n0\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    "trailer-space-before-colon": b"3\r\nabc\r\n0\r\nX : 1\r\n\r\n",
    "trailer-obs-fold": b"3\r\nabc\r\n0\r\nX: 1\r\n 2\r\n\r\n",
    "trailer-nul": b"3\r\nabc\r\n0\r\nX: a\x00b\r\n\r\n",
    "trailer-bare-lf": b"3\r\nabc\r\n0\r\nX: 1\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD_CHUNKED))
def test_bad_chunked_400(r, name):
    rejected(r, POST + TE + b"\r\n" + BAD_CHUNKED[name], 400)


def test_bad_chunked_after_good_chunks_sent_slowly(r):
    """The validator keeps its state across reads: a bad CRLF in a later
    chunk, sent on its own, is still seen."""
    with H1Conn(r.port, timeout=5) as c:
        c.send(POST + TE + b"\r\n")
        for part in (b"3\r\n", b"ab", b"c\r", b"\n4;a=\"q", b'"\r\nabcd', b"XY"):
            c.send(part)
            time.sleep(0.05)
        resp = c.read_response(timeout=5)
        assert resp.status == 400, resp
        assert c.wait_closed(3.0)
    r.cap.settle(2.0)
    assert r.cap.requests() == [], r.cap.describe()


@pytest.mark.parametrize("body,data", [
    (b'3;a=b;c="d \\" e"\r\nabc\r\n0;z\r\n\r\n', b"abc"),
    (b"3 ; a = b\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"00000000000000003\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"3\r\na\x00c\r\n0\r\nX-T: 1\r\n\r\n", b"a\x00c"),
], ids=["ext", "ext-bws", "upper-hex", "leading-zeros", "nul-data-trailer"])
def test_good_chunked_forwarded(r, body, data):
    forwarded(r, POST + TE + b"\r\n" + body, b"/p", body=data)


def test_chunked_then_pipelined_request(r):
    """The validator hands over exactly the body: the next request follows."""
    with H1Conn(r.port, timeout=5) as c:
        c.send(POST + TE + b"\r\n" + BODY + b"GET /second HTTP/1.1\r\n" + H + b"\r\n")
        assert c.read_response(timeout=5).status == 200
        assert c.read_response(timeout=5).status == 200
    reqs = r.cap.wait_requests(2)
    assert [(q.target, q.body) for q in reqs] == [(b"/p", b"abc"), (b"/second", b"")]


# ---------------------------------------------------------------------------
# 6. limits.max_request_headers
# ---------------------------------------------------------------------------

def _fields(n):
    return b"".join(b"x-f%d: 1\r\n" % i for i in range(n))


def test_header_count_default_100(r):
    forwarded(r, b"GET /a HTTP/1.1\r\n" + H + _fields(99) + b"\r\n", b"/a")
    rejected(r, b"GET /a HTTP/1.1\r\n" + H + _fields(100) + b"\r\n", 431)


def test_header_count_tiny_fields_431(r):
    rejected(r, b"GET /a HTTP/1.1\r\n" + H + b"a:b\r\n" * 10000 + b"\r\n", 431)


def test_header_count_configured(rig):
    r = rig("limits: {max_request_headers: 5}")
    forwarded(r, b"GET /a HTTP/1.1\r\n" + H + _fields(4) + b"\r\n", b"/a")
    rejected(r, b"GET /a HTTP/1.1\r\n" + H + _fields(5) + b"\r\n", 431)


def test_trailer_fields_count_too(rig):
    r = rig("limits: {max_request_headers: 5}")
    # Host + Transfer-Encoding + 3 trailer fields = 5: accepted
    forwarded(r, POST + TE + b"\r\n3\r\nabc\r\n0\r\n" + _fields(3) + b"\r\n", b"/p", body=b"abc")
    # ... one more: 431, and the backend never sees the request end
    rejected(r, POST + TE + b"\r\n3\r\nabc\r\n0\r\n" + _fields(4) + b"\r\n", 431)


# ---------------------------------------------------------------------------
# 8. head size: max_request_headers_size and libhttp-parser's 80 KiB
# ---------------------------------------------------------------------------

def _head_of(size):
    """A GET head of exactly `size` bytes, in fields of about 8 KiB."""
    start = b"GET /a HTTP/1.1\r\n" + H
    fields, left, i = [], size - len(start) - 2, 0
    while left > 0:
        n = min(left, 8192)
        f = b"x-p%d: " % i
        pad = n - len(f) - 2
        if pad < 1:                     # too short for a field of its own
            fields[-1] = fields[-1][:-2] + b"v" * n + b"\r\n"
        else:
            fields.append(f + b"v" * pad + b"\r\n")
        left -= n
        i += 1
    head = start + b"".join(fields) + b"\r\n"
    assert len(head) == size
    return head


def test_head_size_default_cap_431(r):
    forwarded(r, _head_of(60 * 1024), b"/a")
    rejected(r, _head_of(60 * 1024 + 1), 431)


def test_head_size_above_parser_ceiling_is_431(rig):
    """A cap configured above libhttp-parser's 80 KiB is lowered to it: an
    81 KiB head is a 431 (it used to be the parser's 400), 80 KiB passes."""
    r = rig("max_request_headers_size: 1MiB")
    forwarded(r, _head_of(80 * 1024), b"/a")
    rejected(r, _head_of(80 * 1024 + 1), 431)
    rejected(r, _head_of(200 * 1024), 431)


def test_trailer_section_size_431(r):
    big = b"x-t: " + b"v" * (61 * 1024) + b"\r\n"
    rejected(r, POST + TE + b"\r\n3\r\nabc\r\n0\r\n" + big + b"\r\n", 431)


# ---------------------------------------------------------------------------
# 7. timeouts.request_headers from the accept; keep-alive between requests
# ---------------------------------------------------------------------------

def _closed_at(c, deadline_s):
    """Seconds until the proxy closed c (polling, bounded), or None."""
    t0 = time.monotonic()
    if c.wait_closed(deadline_s):
        return time.monotonic() - t0
    return None


def test_silent_connection_gets_request_headers_timeout(rig):
    r = rig("timeouts: {request_headers: 1s, http_keepalive: 30s}")
    with H1Conn(r.port, timeout=10) as c:
        took = _closed_at(c, 6.0)
        assert took is not None, "a silent connection outlived timeouts.request_headers"
        assert 0.7 < took < 4.0, took
        assert bytes(c.buf) == b"", "a connection that sent nothing got an answer"


def test_request_headers_runs_from_accept(rig):
    """Bytes after a silent start do not restart the clock."""
    r = rig("timeouts: {request_headers: 2s, http_keepalive: 30s}")
    with H1Conn(r.port, timeout=10) as c:
        t0 = time.monotonic()
        time.sleep(1.4)
        c.send(b"GET /a HTTP/1.1\r\n")
        assert c.wait_closed(5.0)
        took = time.monotonic() - t0
        assert took < 3.2, f"closed {took:.2f}s after the accept: the clock restarted"
        assert bytes(c.buf).startswith(b"HTTP/1.1 408 "), bytes(c.buf)


def test_slowloris_head_bounded(rig):
    r = rig("timeouts: {request_headers: 1s, http_keepalive: 30s}")
    with H1Conn(r.port, timeout=10) as c:
        t0 = time.monotonic()
        c.send(b"GET /a HTTP/1.1\r\nHost: h.test\r\n")
        closed = False
        for i in range(40):                 # a byte every 100 ms, for at most 4 s
            if not c.send_ignoring_reset(b"x-%d: 1\r\n" % i):
                closed = True
                break
            time.sleep(0.1)
            if c.wait_closed(0.01):
                closed = True
                break
        assert closed, "a trickling head outlived timeouts.request_headers"
        assert time.monotonic() - t0 < 3.5
    r.cap.settle(2.0)
    assert r.cap.requests() == []


def test_keepalive_then_request_headers(rig):
    """After a response the keep-alive timer runs (longer than
    request_headers here); once the next request's first byte arrives,
    request_headers bounds its head again."""
    r = rig("timeouts: {request_headers: 1s, http_keepalive: 3s}")
    with H1Conn(r.port, timeout=10) as c:
        c.send(b"GET /1 HTTP/1.1\r\n" + H + b"\r\n")
        assert c.read_response(timeout=5).status == 200
        time.sleep(1.6)                     # past request_headers, within keep-alive
        c.send(b"GET /2 HTTP/1.1\r\n" + H + b"\r\n")
        assert c.read_response(timeout=5).status == 200
        t0 = time.monotonic()
        c.send(b"GET /3 HTTP/1.1\r\n")      # a head that never ends
        assert c.wait_closed(5.0)
        took = time.monotonic() - t0
        assert 0.7 < took < 2.5, took
        assert b"408" in bytes(c.buf).split(b"\r\n")[0], bytes(c.buf)
    reqs = r.cap.wait_requests(2)
    assert [q.target for q in reqs] == [b"/1", b"/2"]


def test_keepalive_timer_closes_idle(rig):
    r = rig("timeouts: {request_headers: 5s, http_keepalive: 1s}")
    with H1Conn(r.port, timeout=10) as c:
        c.send(b"GET /1 HTTP/1.1\r\n" + H + b"\r\n")
        assert c.read_response(timeout=5).status == 200
        took = _closed_at(c, 4.0)
        assert took is not None and took < 3.0, took
        assert bytes(c.buf) == b""


def test_request_headers_zero_falls_back_to_keepalive(rig):
    """request_headers: 0s sets no head bound; a silent connection is still
    closed by the idle bound (http_keepalive), as before the change."""
    r = rig("timeouts: {request_headers: 0s, http_keepalive: 1s}")
    with H1Conn(r.port, timeout=10) as c:
        took = _closed_at(c, 6.0)
        assert took is not None and took < 4.0, took
