"""HTTP/2 connection management on the client side: keepalive PINGs, the
gRPC-style ping policy, max_connection_idle and max_connection_age."""
import socket
import time

import h2.events

from conftest import free_port
from h2util import ErrorCodes, H2Conn, proxy_config


def start(proxy, testbed, http2):
    tb = testbed(name="tb1")
    port = free_port()
    px = proxy(proxy_config(port, tb.addr, listener_extra="http2:\n" + "".join(
        f"  {line}\n" for line in http2.strip().splitlines())), expect_ports=[port])
    return px, port


def pings_received(c):
    return [ev for ev in c.events if isinstance(ev, h2.events.PingReceived)]


def test_keepalive_pings_an_idle_client(proxy, testbed):
    px, port = start(proxy, testbed, "keepalive: {time: 1s, timeout: 5s}")
    with H2Conn(port) as c:
        assert c.get("/").status == 200
        c.pump_until(lambda: bool(pings_received(c)), timeout=4)
        assert pings_received(c), "no PING from the proxy after keepalive.time"
        # python-h2 answers the PING: the connection stays up and usable.
        c.pump(1.0)
        assert not c.closed
        assert c.get("/again").status == 200


def test_keepalive_closes_when_the_ping_is_not_answered(proxy, testbed):
    """A client that never reads: no PING ACK comes back, so the proxy closes
    the connection after keepalive.time + keepalive.timeout."""
    px, port = start(proxy, testbed, "keepalive: {time: 1s, timeout: 1s}")
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    t0 = time.monotonic()
    closed_after = None
    while time.monotonic() - t0 < 8:
        try:
            s.settimeout(0.5)
            data = s.recv(65536)  # reading frames, but never answering the PING
            if not data:
                closed_after = time.monotonic() - t0
                break
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed_after = time.monotonic() - t0
            break
    s.close()
    assert closed_after is not None, "the proxy kept a connection whose PING went unanswered"
    assert 1.5 <= closed_after <= 5.0, closed_after


def test_ping_policy_too_many_pings(proxy, testbed):
    """No stream open and permit_without_calls false: every PING is a strike;
    past max_strikes the proxy sends GOAWAY ENHANCE_YOUR_CALM too_many_pings."""
    px, port = start(proxy, testbed, """
ping_policy: {min_interval_without_data: 5m, permit_without_calls: false, max_strikes: 2}
""")
    with H2Conn(port) as c:
        for i in range(4):
            c.ping(b"strike%02d" % i)
            c.pump(0.1)
        assert c.pump_until(lambda: bool(c.goaway), timeout=5), "no GOAWAY"
        ga = [ev for ev in c.events if type(ev).__name__ == "GoawayReceived"][0]
        assert ga.error_code == ErrorCodes.ENHANCE_YOUR_CALM, ga
        assert ga.debug == b"too_many_pings", ga


def test_ping_policy_permits_pings_during_calls(proxy, testbed):
    """With a call in flight PINGs spaced by more than the minimum interval are fine."""
    px, port = start(proxy, testbed, """
ping_policy: {min_interval_without_data: 100ms, permit_without_calls: false, max_strikes: 0}
""")
    with H2Conn(port) as c:
        sid = c.request("GET", "/slow", headers=[("x-testbed-delay", "1500ms")])
        for i in range(4):
            time.sleep(0.25)   # paced on purpose: PINGs spaced beyond min_interval
            c.ping(b"okping%02d" % i)
            c.pump(0.05)
        st = c.wait_stream(sid, 10)
        assert st.status == 200, st
        assert not c.goaway, c.goaway


def test_max_connection_idle_sends_goaway(proxy, testbed):
    px, port = start(proxy, testbed, "max_connection_idle: 1s")
    with H2Conn(port) as c:
        assert c.get("/").status == 200
        t0 = time.monotonic()
        assert c.pump_until(lambda: bool(c.goaway), timeout=5), "no GOAWAY when idle"
        assert time.monotonic() - t0 <= 3.0
        assert c.goaway[0][0] == ErrorCodes.NO_ERROR


def test_max_connection_age_drains_then_closes(proxy, testbed):
    """After max_connection_age the client gets GOAWAY; an in-flight stream
    still completes within max_connection_age_grace, then the connection closes."""
    px, port = start(proxy, testbed, "max_connection_age: 1s\nmax_connection_age_grace: 3s")
    with H2Conn(port) as c:
        sid = c.request("GET", "/long", headers=[("x-testbed-delay", "1500ms")])
        assert c.pump_until(lambda: bool(c.goaway), timeout=5), "no GOAWAY at max age"
        st = c.wait_stream(sid, 10)
        assert st.status == 200, st
        assert c.pump_until(lambda: c.closed, timeout=6), "connection not closed after the grace"
