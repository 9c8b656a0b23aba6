"""Graceful drain on SIGTERM / SIGINT: in-flight exchanges finish with
Connection: close, new connections are refused, exit 0 within drain_timeout."""

import signal
import socket
import subprocess
import time

import pytest

from conftest import port_accepts, wait_for, wait_requests_at
from h1util import H1Conn, NoResponse, request_bytes, start_simple


def refused(port):
    """True if a connect to 127.0.0.1:port is refused right now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            pass
    except ConnectionRefusedError:
        return True
    except OSError:
        pass
    return False


def refused_within(port, timeout):
    """True once a connect to port is refused (bounded by timeout)."""
    return bool(wait_for(lambda: refused(port), timeout, 0.05))


def wait_exit(px, timeout):
    try:
        return px.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_drain_finishes_inflight_request(proxy, testbed, sig):
    px, port, tb = start_simple(proxy, testbed, drain_timeout="10s")
    with H1Conn(port, timeout=10) as c:
        t0 = time.monotonic()
        c.send(request_bytes("GET", "/inflight", headers=[("x-testbed-delay", "2s")]))
        assert wait_requests_at(tb.port), "the request never reached the backend"
        px.send_signal(sig)
        assert refused_within(port, 1.5), "listener still accepting after the signal"
        assert time.monotonic() - t0 < 1.9  # checked while the request was in flight
        r = c.read_response(timeout=10)
        assert r.status == 200, r
        assert r.json()["path"] == "/inflight"
        assert r.wants_close(), r
        assert c.wait_closed(3.0)
    rc = wait_exit(px, 8)
    assert rc == 0, f"exit {rc}; stderr:\n{px.stderr()}"
    assert time.monotonic() - t0 < 10


def test_drain_idle_connection_closed(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed, drain_timeout="10s")
    with H1Conn(port) as idle:
        idle.send(request_bytes("GET", "/one"))
        assert idle.read_response().status == 200
        t0 = time.monotonic()
        px.send_signal(signal.SIGTERM)
        assert idle.wait_closed(3.0), "idle keep-alive connection not closed by the drain"
        rc = wait_exit(px, 5)
    assert rc == 0, px.stderr()
    assert time.monotonic() - t0 < 5


def test_drain_timeout_cuts_long_request(proxy, testbed):
    px, port, tb = start_simple(proxy, testbed, drain_timeout="1s")
    with H1Conn(port, timeout=10) as c:
        c.send(request_bytes("GET", "/long", headers=[("x-testbed-delay", "5s")]))
        assert wait_requests_at(tb.port), "the request never reached the backend"
        t0 = time.monotonic()
        px.send_signal(signal.SIGTERM)
        rc = wait_exit(px, 4)
        elapsed = time.monotonic() - t0
        assert rc is not None, "proxy still running 4 s after SIGTERM with drain_timeout 1s"
        assert elapsed < 1.0 + 2.0, elapsed   # drain_timeout + slack (ASan exit, load)
        assert elapsed >= 0.8, f"exited after {elapsed:.2f}s, before drain_timeout"
        assert rc == 0, px.stderr()
        # The client sees its connection end without a (200) response.
        try:
            r = c.read_response(timeout=3)
        except NoResponse:
            r = None
        assert r is None or r.status != 200, r
        assert c.wait_closed(1.0)
    assert not port_accepts(port)
