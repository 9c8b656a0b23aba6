"""An HTTP/1.1 backend connection whose client went away (an HTTP/2 stream
reset, an HTTP/1.1 connection closed) while its response was on the way:
the proxy reads that response to its end without forwarding it and keeps
the connection, when the request was all sent and the response is short
(64 KiB) and quick (1 s); otherwise it closes the connection, as it always
does when it gives up on an attempt itself (timeouts).

The backend is the capture backend (capture.py): it records which
connection carried which request, so each test checks what the backend
saw, not only what the client got."""

import socket
import struct
import time

import pytest

from capture import CaptureBackend, Reply
from conftest import free_port, tcp_conns, wait_for
from h1util import get
from h2util import ErrorCodes, H2Conn, proxy_config


@pytest.fixture
def rig(proxy):
    """(proxy, port, capture backend); requests to /slow* answer after a delay."""
    cap = CaptureBackend().start()
    port = free_port()
    px = proxy(proxy_config(port, cap.addr, timeout="20s"), workers=1, expect_ports=[port])
    yield px, port, cap
    assert cap.stop(), "capture backend threads did not stop"


def established_to(port):
    return len(tcp_conns(remote_port=port))


def leave(port, cap, path, client):
    """Send GET `path` and go away once the backend has the request: an
    HTTP/2 client resets its stream (the connection stays), an HTTP/1.1
    client resets its connection (a FIN alone may be a half-close: the
    answer would still be sent)."""
    if client == "h2":
        c = H2Conn(port, timeout=5)
        c.__enter__()
        sid = c.request("GET", path)
        cap.wait_requests(1, timeout=5)
        c.reset(sid, ErrorCodes.CANCEL)
        c.pump(0.05)
        return c
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n".encode())
    cap.wait_requests(1, timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return None


def done(c):
    if c is not None:
        c.__exit__(None, None, None)


def next_request(port):
    """A second request on a fresh HTTP/1.1 client connection: (status, conn, seq, body)."""
    r = get(port, "/next")
    return r.status, r.header("x-capture-conn"), r.header("x-capture-seq"), r.body


def abandon_then_next(port, cap, reply, client="h2"):
    """The backend answers /slow with `reply` (0.3 s late); the client leaves
    at once; 0.7 s later a second request: next_request's tuple."""
    cap.respond(lambda q: q.target == b"/slow", reply)
    c = leave(port, cap, "/slow", client)
    try:
        time.sleep(0.7)  # the answer came and was read
        if client == "h2":
            assert not c.closed  # a stream reset leaves the client connection open
        return next_request(port)
    finally:
        done(c)


@pytest.mark.parametrize("client", ["h2", "h1"])
def test_abandoned_response_is_read_and_the_connection_kept(rig, client):
    px, port, cap = rig
    status, conn, seq, body = abandon_then_next(port, cap, Reply(body=b"s" * 3000, delay=0.3),
                                                client)
    assert (status, conn, seq, body) == (200, "1", "2", b"captured 2\n"), cap.describe()
    assert len(cap.conns) == 1, cap.describe()
    assert [q.target for q in cap.conns[0].requests] == [b"/slow", b"/next"]
    log = px.access_log(min_entries=2)
    assert [e["status"] for e in log[-2:]] == [499, 200], log


SHAPES = {
    "chunked-trailers": (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n1000\r\n" + b"c" * 0x1000 + b"\r\n0\r\nx-t: 1\r\n\r\n"),
    "interim-1xx": (b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    "no-content": b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n",
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_abandoned_answer_read_to_its_end_then_the_next_is_exact(rig, shape):
    """The drained answer is chunked with trailers, comes after an interim
    1xx, or has no body: it is read to its exact end, and the next request
    on the same connection gets its own answer, byte for byte."""
    px, port, cap = rig
    status, conn, seq, body = abandon_then_next(port, cap, Reply(raw=SHAPES[shape], delay=0.3))
    assert (status, conn, seq, body) == (200, "1", "2", b"captured 2\n"), cap.describe()
    # the backend read both requests, whole, on its one connection
    assert [q.target for q in cap.conns[0].requests] == [b"/slow", b"/next"], cap.describe()
    assert not cap.conns[0].error and not cap.conns[0].partial, cap.describe()


@pytest.mark.parametrize("how", ["close-delimited", "connection-close"])
def test_abandoned_response_not_reusable_is_not_reused(rig, how):
    """A body that ends with the connection, or `connection: close`: the
    connection is not kept, and the next request gets a new one."""
    px, port, cap = rig
    if how == "close-delimited":
        reply = Reply(raw=b"HTTP/1.1 200 OK\r\n\r\nto the end", delay=0.3)
    else:
        reply = Reply(body=b"bye", close=True, delay=0.3)
    status, conn, seq, body = abandon_then_next(port, cap, reply)
    assert (status, conn, seq, body) == (200, "2", "2", b"captured 2\n"), cap.describe()
    # the first connection is closed by the drain window at the latest
    assert wait_for(lambda: cap.conns[0].closed, 3.0), cap.describe()


def test_slow_abandoned_response_closes_after_the_drain_window(rig):
    """An answer that takes longer than the drain window (1 s): the
    connection stays while the window runs, then the proxy closes it."""
    px, port, cap = rig
    cap.respond(lambda q: q.target == b"/slow", Reply(delay=4.0))
    c = leave(port, cap, "/slow", "h2")
    try:
        t0 = time.monotonic()
        time.sleep(0.3)
        assert established_to(cap.port) == 1   # read to its end if it comes in time
        assert wait_for(lambda: established_to(cap.port) == 0, 3.0)
        assert time.monotonic() - t0 < 3.0
        status, conn, seq, body = next_request(port)
    finally:
        done(c)
    assert (status, conn, seq) == (200, "2", "2"), cap.describe()


def test_long_abandoned_response_closes_at_once(rig):
    """More than 64 KiB of the answer still to come when the client resets:
    the connection is closed, not read."""
    px, port, cap = rig
    cap.respond(lambda q: q.target == b"/big", Reply(body=b"b" * (4 << 20)))
    with H2Conn(port, timeout=5, store_body=False) as c:
        sid = c.request("GET", "/big")
        st = c.stream(sid)
        assert c.pump_until(lambda: st.body_len > 0 or st.done, 5), st
        assert st.status == 200 and not st.done, st
        c.reset(sid, ErrorCodes.CANCEL)
        assert wait_for(lambda: established_to(cap.port) == 0, 0.8), "not closed at once"
    status, conn, seq, body = next_request(port)
    assert (status, conn, seq) == (200, "2", "2"), cap.describe()


def test_timeout_still_closes_the_connection_at_once(proxy):
    """The proxy's own timeout cancels: the backend connection closes at
    once (the drain is only for clients that left)."""
    cap = CaptureBackend().start()
    try:
        port = free_port()
        px = proxy(proxy_config(port, cap.addr, timeout="300ms"), workers=1,
                   expect_ports=[port])
        cap.respond(lambda q: q.target == b"/slow", Reply(delay=0.6))
        r = get(port, "/slow")
        assert r.status == 504
        assert wait_for(lambda: established_to(cap.port) == 0, 0.25), "not closed at once"
        time.sleep(0.5)
        assert next_request(port)[:3] == (200, "2", "2"), cap.describe()
    finally:
        assert cap.stop()


def test_abandoned_connections_read_at_once_are_bounded(rig):
    """At most 128 connections per endpoint (and worker) read abandoned
    answers at a time: they still count against max_connections. 160
    clients leave at once: 128 connections stay to read, 32 close."""
    px, port, cap = rig
    cap.respond(lambda q: q.target.startswith(b"/slow"), Reply(delay=1.5))
    conns = [H2Conn(port, timeout=10) for _ in range(2)]
    try:
        sids = []
        for c in conns:
            c.__enter__()
            sids.append([c.request("GET", f"/slow/{i}") for i in range(80)])
        assert len(cap.wait_requests(160, timeout=10)) == 160, cap.describe()
        assert wait_for(lambda: established_to(cap.port) == 160, 2.0), established_to(cap.port)
        for c, ids in zip(conns, sids):
            for sid in ids:
                c.conn.reset_stream(sid, error_code=ErrorCodes.CANCEL)
            c.flush()
        assert wait_for(lambda: established_to(cap.port) == 128, 1.0), established_to(cap.port)
        time.sleep(0.2)
        assert established_to(cap.port) == 128
    finally:
        for c in conns:
            done(c)
