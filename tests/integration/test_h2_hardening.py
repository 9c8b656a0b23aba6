"""HTTP/2 client-side hardening, with exact frames: tunnels that hold the
client's bytes until the backend accepted them, stream id order (RFC 9113
5.1.1), the H2C listener and bad prefaces, header-block limits, and the
:path / :authority checks of an HTTP/2 to HTTP/1.1 downgrade.

What the backend received is always checked, not only what the client saw.
"""

import socket
import threading
import time

import pytest

from capture import CaptureBackend, Reply
from conftest import free_port, wait_for
from h2raw import (ENHANCE_YOUR_CALM, GOAWAY, HEADERS, NO_ERROR, PREFACE, PROTOCOL_ERROR, RawH2,
                   goaways, headers, lit, request_block, resets, settings)
from h2util import H2Conn, proxy_config

EXT_CONNECT = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
               (":path", "/ws"), (":authority", "h.test"), ("sec-websocket-version", "13")]


@pytest.fixture
def capture():
    caps = []

    def start():
        cap = CaptureBackend().start()
        caps.append(cap)
        return cap

    yield start
    for cap in caps:
        assert cap.stop(), "capture backend threads did not stop"


def start_proxy(proxy, backend_addr, protocol="HTTP", listener_extra=""):
    port = free_port()
    proxy(proxy_config(port, backend_addr, protocol=protocol, listener_extra=listener_extra,
                       timeout="20s"), workers=1, expect_ports=[port])
    return port


class HeldUpgradeBackend:
    """An HTTP/1.1 backend that reads an Upgrade request, then waits for
    accept() before answering 101; everything after the request head is
    recorded in `after` (before the 101: `early`)."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.head = b""
        self.early = bytearray()
        self.after = bytearray()
        self.go = threading.Event()
        self.status = 101
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        self.lsock.settimeout(20)
        try:
            s, _ = self.lsock.accept()
        except OSError:
            return
        s.settimeout(0.05)
        buf = bytearray()
        deadline = time.monotonic() + 30
        answered = False
        while time.monotonic() < deadline and not self.stop_ev.is_set():
            if not answered and self.go.is_set():
                if self.status == 101:
                    s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\n\r\n")
                else:
                    s.sendall(b"HTTP/1.1 %d No\r\ncontent-length: 2\r\n\r\nno" % self.status)
                answered = True
            try:
                got = s.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                break
            if not got:
                break
            if not self.head:
                buf += got
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    self.head = bytes(buf[:end + 4])
                    got = bytes(buf[end + 4:])
                else:
                    continue
            (self.after if answered else self.early).extend(got)
        s.close()

    def close(self):
        self.stop_ev.set()
        self.lsock.close()
        self.t.join(5)


# ---------------------------------------------------------------------------
# tunnels
# ---------------------------------------------------------------------------

def test_extended_connect_held_with_backpressure_until_101(proxy):
    """DATA sent before the backend's 101 stays in the proxy, bounded (the
    client is back-pressured after about two windows), and reaches the
    backend in order once the 101 came."""
    be = HeldUpgradeBackend()
    try:
        port = start_proxy(proxy, be.addr)
        payload = bytes(range(256)) * 4096            # 1 MiB
        with H2Conn(port, timeout=10) as c:
            sid = c.next_id()
            c.send_headers(sid, EXT_CONNECT)
            assert wait_for(lambda: be.head, 5), "the upgrade request never reached the backend"
            sent = c.send_data(sid, payload, stall=1.0)
            assert sent < 300 * 1024, f"the proxy took {sent} bytes while holding the tunnel"
            time.sleep(0.2)   # a byte forwarded early would show up by now
            assert not be.early, f"{len(be.early)} bytes reached the backend before its 101"
            be.go.set()
            st = c.stream(sid)
            assert c.pump_until(lambda: st.status is not None, 5) and st.status == 200, st
            sent += c.send_data(sid, payload[sent:], timeout=10)
            assert sent == len(payload)
            assert wait_for(lambda: len(be.after) >= len(payload), 10), len(be.after)
        assert bytes(be.after) == payload, "tunnel bytes reordered or changed"
        assert b"upgrade: websocket" in be.head.lower()
    finally:
        be.close()


def test_extended_connect_refused_late_data_resets(proxy):
    """A refused tunnel: the response is delivered whole; DATA the client
    sends after it is dropped and the stream is reset NO_ERROR."""
    be = HeldUpgradeBackend()
    be.status = 404
    try:
        port = start_proxy(proxy, be.addr)
        with H2Conn(port, timeout=10) as c:
            sid = c.next_id()
            c.send_headers(sid, EXT_CONNECT)
            c.conn.send_data(sid, b"early bytes")
            c.flush()
            assert wait_for(lambda: be.head, 5)
            be.go.set()
            st = c.stream(sid)
            assert c.pump_until(lambda: st.ended, 5), st
            assert st.status == 404 and bytes(st.body) == b"no", st
            c.conn.send_data(sid, b"GET /smuggled HTTP/1.1\r\nHost: admin.test\r\n\r\n")
            c.flush()
            assert c.pump_until(lambda: st.reset_code is not None, 5), st
            assert st.reset_code == NO_ERROR
            assert not c.goaway
        time.sleep(0.1)   # let a stray byte reach the backend if one was sent
        assert not be.early and not be.after, (bytes(be.early), bytes(be.after))
    finally:
        be.close()


# ---------------------------------------------------------------------------
# stream ids
# ---------------------------------------------------------------------------

def test_headers_on_lower_stream_id_is_connection_error(proxy, capture):
    cap = capture()
    port = start_proxy(proxy, cap.addr)
    with RawH2(port) as c:
        c.send(headers(5, request_block(path="/five")))
        c.read_until(lambda f: any(t == HEADERS and s == 5 for t, _, s, _ in f), 5)
        c.send(headers(3, request_block(path="/three")))
        frames = c.read_until_closed(5)
        assert c.closed
    assert goaways(frames) and [g[0] for g in goaways(frames)] == [PROTOCOL_ERROR], \
        goaways(frames)
    assert goaways(frames)[0][1] == 5
    assert [q.target_str for q in cap.requests()] == ["/five"]


def test_headers_on_stream_we_reset_is_ignored(proxy, capture):
    """Trailers still in flight on a stream the proxy reset are no
    connection error (RFC 9113 5.1)."""
    cap = capture()
    port = start_proxy(proxy, cap.addr)
    with RawH2(port) as c:
        c.send(headers(1, request_block("POST", "/a", extra=lit("X-Upper", "1")),
                       end_stream=False))
        c.read_until(lambda f: 1 in resets(f), 5)
        c.send(headers(1, lit("x-trailer", "1")) + headers(3, request_block(path="/ok")))
        frames = c.read_until(lambda f: any(t == HEADERS and s == 3 for t, _, s, _ in f), 5)
    assert resets(frames).get(1) == PROTOCOL_ERROR
    assert not goaways(frames), goaways(frames)
    assert [q.target_str for q in cap.requests()] == ["/ok"]


# ---------------------------------------------------------------------------
# prefaces
# ---------------------------------------------------------------------------

def _raw_exchange(port, data, timeout=3.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    got = bytearray()
    closed = False
    try:
        s.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except (socket.timeout, TimeoutError):
                break
            except OSError:
                closed = True
                break
            if not b:
                closed = True
                break
            got += b
    finally:
        s.close()
    return bytes(got), closed


def test_h2c_listener_refuses_http1(proxy, capture):
    cap = capture()
    port = start_proxy(proxy, cap.addr, protocol="H2C")
    got, closed = _raw_exchange(port, b"GET / HTTP/1.1\r\nHost: h.test\r\n\r\n")
    assert closed and b"HTTP/1.1" not in got, got
    got, closed = _raw_exchange(port, b"GET / HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade, "
                                b"HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__"
                                b"\r\n\r\n")
    assert closed and b"HTTP/1.1" not in got, got
    assert not cap.requests()
    with H2Conn(port, timeout=5) as c:
        st = c.get("/prior-knowledge", authority="h.test", timeout=5)
        assert st.status == 200, st
    assert [q.target_str for q in cap.requests()] == ["/prior-knowledge"]


def test_bad_preface_is_closed_not_answered(proxy, capture):
    cap = capture()
    port = start_proxy(proxy, cap.addr)
    bad = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"
    got, closed = _raw_exchange(port, bad)
    assert closed and b"HTTP/1.1" not in got, got
    got, closed = _raw_exchange(port, PREFACE[:16] + b"GET / HTTP/1.1\r\nHost: h.test\r\n\r\n")
    assert closed and b"HTTP/1.1" not in got, got
    assert not cap.requests()


# ---------------------------------------------------------------------------
# header block limits
# ---------------------------------------------------------------------------

def test_field_count_limit(proxy, capture):
    """limits.max_request_headers (100): 100 fields pass, 101 get 431 and
    the connection stays; 4x the limit ends the connection."""
    cap = capture()
    port = start_proxy(proxy, cap.addr)
    with RawH2(port) as c:
        ok = b"".join(lit(f"x-{i}", "1") for i in range(100))
        over = b"".join(lit(f"x-{i}", "1") for i in range(101))
        c.send(headers(1, request_block(path="/100", extra=ok))
               + headers(3, request_block(path="/101", extra=over)))
        frames = c.read_until(lambda f: sum(1 for x in f if x[0] == HEADERS) >= 2, 5)
        statuses = {s: p for t, _, s, p in frames if t == HEADERS}
        assert set(statuses) == {1, 3}, frames
        assert not goaways(frames)
        gross = b"".join(lit(f"x-{i}", "1") for i in range(401))
        c.send(headers(5, request_block(path="/401", extra=gross)))
        frames = c.read_until_closed(5)
    assert [g[0] for g in goaways(frames)] == [ENHANCE_YOUR_CALM], goaways(frames)
    assert [q.target_str for q in cap.requests()] == ["/100"]
    log = [e for e in cap.requests()]
    assert len(log) == 1


def test_header_list_size_limit_431(proxy, capture):
    cap = capture()
    port = start_proxy(proxy, cap.addr)
    with H2Conn(port, timeout=5) as c:
        st = c.get("/big", headers=[(f"x-{i}", "v" * 4000) for i in range(20)],
                   authority="h.test")
        assert st.status == 431, st
        st2 = c.get("/after", authority="h.test")
        assert st2.status == 200, st2
        assert not c.goaway
    assert [q.target_str for q in cap.requests()] == ["/after"]


# ---------------------------------------------------------------------------
# :path and :authority to HTTP/1.1
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path,authority", [
    (b"/a#frag", b"h.test"),
    (b"/a\x01b", b"h.test"),
    (b"/a\x7fb", b"h.test"),
    (b"/a\x80b", b"h.test"),
    (b"/caf\xc3\xa9", b"h.test"),
    (b"/a", b"user:pw@h.test"),
    (b"/a", b"h.test\x80"),
    (b"/%zz", b"h.test"),
    (b"/a", b"h.test:99999"),
], ids=["fragment", "ctl", "del", "byte-0x80", "utf8", "userinfo", "authority-0x80",
        "broken-escape", "bad-port"])
def test_malformed_target_is_refused(proxy, capture, path, authority):
    """RFC 9113 8.1.1: never forwarded; the proxy answers 400 itself (or, for
    what nghttp2 refuses first, RST_STREAM PROTOCOL_ERROR)."""
    cap = capture()
    port = start_proxy(proxy, cap.addr)
    with RawH2(port) as c:
        c.send(headers(1, request_block(path=path, authority=authority))
               + headers(3, request_block(path="/sentinel")))

        def answered(sid, f):
            return sid in resets(f) or any(t == HEADERS and s == sid for t, _, s, _ in f)
        frames = c.read_until(lambda f: answered(1, f) and answered(3, f), 5)
    status1 = [p for t, _, s, p in frames if t == HEADERS and s == 1]
    # a proxy 400 starts with :status 400 from the static table (index 12: 0x8c)
    assert resets(frames).get(1) == PROTOCOL_ERROR or (status1 and status1[0][:1] == b"\x8c"), \
        frames
    assert not goaways(frames)
    assert [q.target_str for q in cap.requests()] == ["/sentinel"]


def test_valid_targets_pass(proxy, capture):
    cap = capture()
    port = start_proxy(proxy, cap.addr)
    with H2Conn(port, timeout=5) as c:
        for p in ["/a%20b?x=1&y=%2F", "/~user/!$&'()*+,;=:@", "/p?q=a/b?c"]:
            st = c.get(p, authority="h.test:8080")
            assert st.status == 200, (p, st)
    assert [q.target_str for q in cap.requests()] == \
        ["/a%20b?x=1&y=%2F", "/~user/!$&'()*+,;=:@", "/p?q=a/b?c"]


def test_http1_refused_upgrade_closes(proxy, capture):
    """HTTP/1.1: bytes behind an Upgrade request the backend refuses are
    never read as a request; the connection closes after the answer."""
    cap = capture()
    cap.respond(lambda q: q.target == b"/ws", Reply(404, body=b"no"))
    port = start_proxy(proxy, cap.addr)
    req = (b"GET /ws HTTP/1.1\r\nHost: h.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
           b"GET /smuggled HTTP/1.1\r\nHost: admin.test\r\n\r\n")
    got, closed = _raw_exchange(port, req)
    assert got.startswith(b"HTTP/1.1 404"), got
    assert got.count(b"HTTP/1.1 ") == 1 and closed, got
    assert [q.target_str for q in cap.requests()] == ["/ws"]
