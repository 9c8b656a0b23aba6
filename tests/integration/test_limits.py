"""limits: accept failures (EMFILE) pause accepting instead of spinning;
max_connections per listener and per process hold new connections in the
kernel's backlog until one closes; the overload state (connections, memory)
refuses new requests with hysteresis; idle and silent connections, TLS
handshakes included, are closed by their timeouts. docs/configuration.md
"limits", docs/operations.md "Metrics"."""

import os
import resource
import socket
import ssl
import time

import pytest

from conftest import admin_metrics, free_port, free_ports, tcp_conns, wait_for
from h1util import H1Conn, NoResponse, request_bytes, simple_config
from h2util import H2Conn, ErrorCodes, proxy_config

HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of pid, in seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def backlog(port):
    """Connections waiting in the accept queue of the socket(s) listening on port."""
    return sum(rx for *_, rx in tcp_conns(local_port=port, state="0A"))


def served(conn, path, timeout=10):
    conn.send(request_bytes("GET", path))
    return conn.read_response(timeout=timeout)


def no_answer_within(conn, seconds):
    """True when nothing arrives on conn for `seconds` (and it stays open)."""
    try:
        conn.read_head(timeout=seconds)
    except TimeoutError:
        return True
    except (NoResponse, OSError):
        return False
    return False


def metric(admin, name, **labels):
    key = name
    if labels:
        key += "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    return admin_metrics(admin).get(key)


def start(proxy, testbed, listener_extra="", top_extra="", workers=1, config=None):
    tb = testbed(name="tb1")
    port, admin = free_ports(2)
    top = f'admin: {{address: "127.0.0.1:{admin}"}}\n' + top_extra
    text = config(port, tb.addr, top) if config else simple_config(
        port, tb.addr, listener_extra=listener_extra, top_extra=top)
    px = proxy(text, workers=workers, expect_ports=[port, admin])
    # wait_port's probe connections have come and gone
    assert wait_for(lambda: metric(admin, "switchyard_listener_connections",
                                   listener="main") == 0, 5)
    return px, port, admin, tb


# ---------------------------------------------------------------------------
# 1. out of file descriptors
# ---------------------------------------------------------------------------

def test_fd_exhaustion_pauses_accepting_without_spinning(proxy, testbed):
    px, port, admin, tb = start(proxy, testbed)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n_open = len(os.listdir(f"/proc/{px.pid}/fd"))
    # Room for a few client connections, then EMFILE on accept.
    resource.prlimit(px.pid, resource.RLIMIT_NOFILE, (n_open + 6, hard))
    clients = []
    try:
        for _ in range(20):   # more than fit: the rest waits in the backlog
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        assert wait_for(lambda: "not accepting for" in px.stderr(), 5), px.stderr()
        assert backlog(port) > 0
        log0 = len(px.stderr())
        cpu0 = cpu_seconds(px.pid)
        time.sleep(3)   # the point: the proxy sits out of descriptors for a while
        cpu = cpu_seconds(px.pid) - cpu0
        grown = len(px.stderr()) - log0
        assert cpu < 1.0, f"{cpu:.2f}s of CPU in 3s while out of descriptors: spinning"
        assert grown < 2000, f"the log grew by {grown} bytes:\n{px.stderr()[-2000:]}"
    finally:
        for s in clients:
            s.close()
    # Closing frees descriptors: the proxy accepts (and serves) again.
    def serves():
        try:
            with H1Conn(port, timeout=3) as c:
                return served(c, "/again", timeout=3).status == 200
        except (OSError, NoResponse):
            return False
    assert wait_for(serves, 15, 0.2), px.stderr()[-3000:]
    resource.prlimit(px.pid, resource.RLIMIT_NOFILE, (soft, hard))
    err = px.stderr()
    assert err.count("not accepting for") >= 1
    assert "accepting again after" in err, err[-3000:]
    assert len(err) < 20000, "one episode should log a couple of lines"
    assert metric(admin, "switchyard_accept_errors_total", listener="main") >= 1
    assert metric(admin, "switchyard_accept_pauses_total", listener="main",
                  reason="accept_error") >= 1
    assert metric(admin, "switchyard_accept_paused", listener="main") == 0


# ---------------------------------------------------------------------------
# 2. max_connections
# ---------------------------------------------------------------------------

def test_listener_max_connections_holds_the_next_in_the_backlog(proxy, testbed):
    px, port, admin, tb = start(proxy, testbed, listener_extra="limits: {max_connections: 5}")
    conns = [H1Conn(port) for _ in range(5)]
    try:
        for i, c in enumerate(conns):
            assert served(c, f"/c{i}").status == 200
        assert metric(admin, "switchyard_listener_connections", listener="main") == 5
        assert metric(admin, "switchyard_accept_paused", listener="main") == 1
        sixth = H1Conn(port)   # the kernel completes the handshake: it is in the backlog
        conns.append(sixth)
        sixth.send(request_bytes("GET", "/sixth"))
        assert wait_for(lambda: backlog(port) == 1, 3), tcp_conns(local_port=port, state=None)
        assert no_answer_within(sixth, 1.0), "served past max_connections"
        conns.pop(0).close()
        r = sixth.read_response(timeout=5)
        assert r.status == 200 and r.json()["path"] == "/sixth"
        assert backlog(port) == 0
        assert metric(admin, "switchyard_accept_pauses_total", listener="main",
                      reason="max_connections") >= 1
        assert metric(admin, "switchyard_listener_connections", listener="main") == 5
    finally:
        for c in conns:
            c.close()
    assert wait_for(lambda: metric(admin, "switchyard_accept_paused", listener="main") == 0, 5)
    assert wait_for(lambda: metric(admin, "switchyard_listener_connections",
                                   listener="main") == 0, 5)


def test_reload_raising_max_connections_resumes_accepting(proxy, testbed):
    px, port, admin, tb = start(proxy, testbed, listener_extra="limits: {max_connections: 1}")
    with H1Conn(port) as first, H1Conn(port) as second:
        assert served(first, "/first").status == 200
        second.send(request_bytes("GET", "/second"))
        assert wait_for(lambda: backlog(port) == 1, 3)
        assert no_answer_within(second, 0.5)
        text = open(px.config_path).read().replace("max_connections: 1", "max_connections: 5")
        px.write_config(text)
        px.reload()   # no connection closes: the reload alone lets the second in
        r = second.read_response(timeout=5)
        assert r.status == 200 and r.json()["path"] == "/second"
        assert metric(admin, "switchyard_accept_paused", listener="main") == 0


def two_listeners(port, backend, top, port2):
    """simple_config plus a second HTTP listener `second` on port2."""
    return simple_config(port, backend, top_extra=top).replace("access_log:", f"""\
  - name: second
    address: "127.0.0.1:{port2}"
    url_map: main
access_log:""", 1)


@pytest.mark.parametrize("workers", [1, 2])
def test_process_max_connections_counts_every_listener(proxy, testbed, workers):
    port2 = free_port()
    px, port, admin, tb = start(
        proxy, testbed, workers=workers, top_extra="limits: {max_connections: 5}",
        config=lambda p, b, top: two_listeners(p, b, top, port2))
    conns = []
    try:
        for i in range(5):
            c = H1Conn(port if i < 3 else port2)
            conns.append(c)
            assert served(c, f"/c{i}").status == 200
        assert metric(admin, "switchyard_listener_connections", listener="main") == 3
        assert metric(admin, "switchyard_listener_connections", listener="second") == 2
        # every worker pauses both listeners, not just the one that hit the cap
        assert wait_for(lambda: metric(admin, "switchyard_accept_paused",
                                       listener="second") == workers, 3)
        sixth = H1Conn(port2)
        conns.append(sixth)
        sixth.send(request_bytes("GET", "/sixth"))
        assert wait_for(lambda: backlog(port2) == 1, 3)
        assert no_answer_within(sixth, 1.0), "served past the process max_connections"
        conns.pop(0).close()   # a connection of the *other* listener
        r = sixth.read_response(timeout=5)
        assert r.status == 200 and r.json()["path"] == "/sixth"
        assert metric(admin, "switchyard_accept_pauses_total", listener="main",
                      reason="process_max_connections") >= 1
    finally:
        for c in conns:
            c.close()
    assert wait_for(lambda: metric(admin, "switchyard_accept_paused", listener="main") == 0, 5)


def test_tls_handshakes_count_against_max_connections(proxy, testbed, certs):
    tls = f"""\
tls:
  certificates:
    - {{cert_file: "{certs.cert}", key_file: "{certs.key}"}}
limits: {{max_connections: 2}}
timeouts: {{request_headers: 1s}}"""
    px, port, admin, tb = start(
        proxy, testbed,
        config=lambda p, b, top: proxy_config(p, b, protocol="HTTPS", listener_extra=tls,
                                              top_extra=top))
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        assert wait_for(lambda: metric(admin, "switchyard_listener_connections",
                                       listener="main") == 2, 3)
        assert metric(admin, "switchyard_accept_paused", listener="main") == 1
        # the handshake timeout frees them, and the listener accepts again
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert s.recv(12).startswith(b"HTTP/1.1 200")
        assert 0.7 <= time.monotonic() - t0 <= 5
    finally:
        for s in silent:
            s.close()


# ---------------------------------------------------------------------------
# 3. overload
# ---------------------------------------------------------------------------

def test_overload_connections_refuses_requests_with_hysteresis(proxy, testbed):
    px, port, admin, tb = start(proxy, testbed,
                                top_extra="limits: {overload: {connections: 2}}")
    c1, c2 = H1Conn(port), H1Conn(port)
    try:
        assert served(c1, "/1").status == 200
        assert served(c2, "/2").status == 200
        assert metric(admin, "switchyard_overload", cause="connections") == 0
        with H1Conn(port) as c3:   # 3 > 2: overloaded
            r = served(c3, "/3")
            assert r.status == 503 and r.wants_close(), r
            assert c3.wait_closed(3)
        # 2 open: not below 90 % of 2 yet, so still refusing
        assert wait_for(lambda: metric(admin, "switchyard_listener_connections",
                                       listener="main") == 2, 3)
        assert metric(admin, "switchyard_overload", cause="connections") == 1
        r = served(c1, "/1b")
        assert r.status == 503 and r.wants_close(), r
        assert c1.wait_closed(3)
        # 1 open: below 90 %, requests are served again
        assert wait_for(lambda: metric(admin, "switchyard_overload", cause="connections") == 0,
                        3)
        r = served(c2, "/2b")
        assert r.status == 200 and not r.wants_close(), r
    finally:
        c1.close()
        c2.close()
    assert metric(admin, "switchyard_overload_refused_total", listener="main") == 2
    statuses = [e["status"] for e in px.access_log(min_entries=5)]
    assert statuses.count(503) == 2, statuses


def test_overload_connections_http2_refused_stream(proxy, testbed):
    px, port, admin, tb = start(proxy, testbed,
                                top_extra="limits: {overload: {connections: 2}}")
    with H2Conn(port) as h2, H1Conn(port) as c2:
        assert h2.get("/before").status == 200
        with H1Conn(port) as c3:
            c3.send(b"")
            assert wait_for(lambda: metric(admin, "switchyard_overload",
                                           cause="connections") == 1, 3)
            st = h2.get("/during")
            assert st.reset_code == ErrorCodes.REFUSED_STREAM, st
            st = h2.get("/during2")   # the connection stays usable
            assert st.reset_code == ErrorCodes.REFUSED_STREAM, st
        c2.close()
        assert wait_for(lambda: metric(admin, "switchyard_overload",
                                       cause="connections") == 0, 3)
        st = h2.get("/after")
        assert st.status == 200, st
    assert metric(admin, "switchyard_overload_refused_total", listener="main") == 2


def test_tls_connection_counts_once_through_its_handshake(proxy, testbed, certs):
    """The session inherits the handshake's count: a TLS connection never
    counts twice, so overload.connections: 1 lets one TLS client in."""
    tls = f"""\
tls:
  certificates:
    - {{cert_file: "{certs.cert}", key_file: "{certs.key}"}}"""
    px, port, admin, tb = start(
        proxy, testbed,
        config=lambda p, b, top: proxy_config(
            p, b, protocol="HTTPS", listener_extra=tls,
            top_extra=top + "limits: {overload: {connections: 1}}\n"))
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /tls HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(12).startswith(b"HTTP/1.1 200")
    assert wait_for(lambda: metric(admin, "switchyard_listener_connections",
                                   listener="main") == 0, 3)
    with H2Conn(port, tls=ssl.create_default_context(cafile=str(certs.ca))) as h2:
        assert h2.get("/tls-h2").status == 200
    assert metric(admin, "switchyard_overload_refused_total", listener="main") == 0


def test_h2c_hand_over_does_not_enter_overload(proxy, testbed):
    """HTTP/2 with prior knowledge on an HTTP listener starts as HTTP/1.1 and
    is handed over: the HTTP/2 session inherits the count, so the connection
    never counts twice, not even for the main thread's periodic check."""
    px, port, admin, tb = start(proxy, testbed,
                                top_extra="limits: {overload: {connections: 1}}")
    for i in range(3):
        with H2Conn(port) as h2:
            assert h2.get(f"/h2c{i}").status == 200
        assert wait_for(lambda: metric(admin, "switchyard_listener_connections",
                                       listener="main") == 0, 3)
    assert metric(admin, "switchyard_overload_refused_total", listener="main") == 0


def test_overload_memory_refuses_until_reload_lifts_it(proxy, testbed):
    px, port, admin, tb = start(proxy, testbed, top_extra="limits: {overload: {memory: 1MiB}}")
    assert wait_for(lambda: metric(admin, "switchyard_overload", cause="memory") == 1, 3)
    with H1Conn(port) as c:
        r = served(c, "/x")
        assert r.status == 503 and r.wants_close(), r
    with H2Conn(port) as h2:
        assert h2.get("/y").reset_code == ErrorCodes.REFUSED_STREAM
    # A limit far above the resident set ends the state (within ~100 ms).
    text = open(px.config_path).read().replace("memory: 1MiB", "memory: 64GiB")
    px.write_config(text)
    px.reload()
    assert wait_for(lambda: metric(admin, "switchyard_overload", cause="memory") == 0, 5), \
        px.stderr()
    with H1Conn(port) as c:
        assert served(c, "/z").status == 200


# ---------------------------------------------------------------------------
# 4. idle and silent connections
# ---------------------------------------------------------------------------

def closed_after(sock, timeout):
    """Seconds until the peer closes sock (EOF or RST), or None within timeout."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    for _ in range(int(timeout / 0.2) + 2):
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
            pass
        except OSError:
            return time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            return None
    return None


def test_idle_keepalive_and_silent_connections_closed(proxy, testbed):
    px, port, admin, tb = start(
        proxy, testbed, listener_extra="timeouts: {http_keepalive: 1s, request_headers: 1s}")
    with H1Conn(port) as idle, socket.create_connection(("127.0.0.1", port)) as silent:
        assert served(idle, "/once").status == 200
        t = closed_after(silent, 6)   # never sent a byte
        assert t is not None and t <= 4, t
        assert idle.wait_closed(4), "idle keep-alive connection still open"
    assert wait_for(lambda: metric(admin, "switchyard_listener_connections",
                                   listener="main") == 0, 3)


@pytest.mark.parametrize("handshake,timeouts", [
    # request_headers 0s (off): the handshake is bounded by http_keepalive instead
    (False, "{request_headers: 0s, http_keepalive: 1s}"),
    (False, "{request_headers: 1s, http_keepalive: 600s}"),
    (True, "{request_headers: 1s, http_keepalive: 1s}"),
], ids=["no-handshake-keepalive", "no-handshake-request-headers", "after-handshake"])
def test_silent_tls_clients_closed(proxy, testbed, certs, handshake, timeouts):
    tls = f"""\
tls:
  certificates:
    - {{cert_file: "{certs.cert}", key_file: "{certs.key}"}}
timeouts: {timeouts}"""
    px, port, admin, tb = start(
        proxy, testbed,
        config=lambda p, b, top: proxy_config(p, b, protocol="HTTPS", listener_extra=tls,
                                              top_extra=top))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = raw
    if handshake:
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        s = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        t = closed_after(s, 6)
        assert t is not None and t <= 4, t
    finally:
        s.close()
    assert wait_for(lambda: metric(admin, "switchyard_listener_connections",
                                   listener="main") == 0, 3)
