"""HTTP/2 toward backends (protocol H2C and HTTP2) and TLS toward backends
(HTTP2, and HTTPS = HTTP/1.1 over TLS), with HTTP/1.1 clients in front.

Backends: switchyard-testbed (h2c, and h2/http1.1 over TLS with ALPN), plus
small in-process servers for what the testbed cannot do: a python-h2 server
with a low SETTINGS_MAX_CONCURRENT_STREAMS, GOAWAY, PING counting and stream
reset recording; a silent h2 server (dead connection); and a TLS server whose
ALPN offers only http/1.1. Everything listens on 127.0.0.1; every wait is
bounded."""

import select
import signal
import socket
import ssl
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
import pytest

from conftest import caught_up, free_port, sanitizer_report, wait_for, wait_requests_at
from h1util import (H1Conn, NoResponse, RssSampler, get, request_bytes, rss_kib,
                    small_quarantine_env, tcp_peers_of_port)

MiB = 1024 * 1024


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------

def config(port, backend_addr, protocol="H2C", tls="", extra="", timeout="10s",
           drain_timeout="5s"):
    """One HTTP listener on 127.0.0.1:port, everything to service `svc`."""
    tls_line = f"    tls: {tls}\n" if tls else ""
    extra_lines = "".join(f"    {line}\n" for line in extra.splitlines() if line.strip())
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    protocol: HTTP
    url_map: main
access_log: {{enabled: true, path: "-", format: json}}
drain_timeout: {drain_timeout}
url_maps:
  - name: main
    default_service: svc
backend_services:
  - name: svc
    protocol: {protocol}
    timeout: {timeout}
    endpoints:
      - {{address: "{backend_addr}"}}
{tls_line}{extra_lines}"""


def start(proxy, backend_addr, env=None, **kw):
    port = free_port()
    px = proxy(config(port, backend_addr, **kw), workers=1, expect_ports=[port], env=env)
    return px, port


def ca_tls(certs, verify=True, sni=None):
    s = f'{{ca_file: "{certs.ca}", verify: {"true" if verify else "false"}'
    if sni:
        s += f", sni: {sni}"
    return s + "}"


# ---------------------------------------------------------------------------
# in-process backends
# ---------------------------------------------------------------------------

class H2Backend:
    """A small h2c server on python-h2, one thread per connection.

    max_streams   SETTINGS_MAX_CONCURRENT_STREAMS it announces
    delay         seconds before answering each request
    goaway_first  on the first connection, answer stream 1 and then send
                  GOAWAY(last_stream_id=1) instead of answering later streams
    silent        send the preface SETTINGS, then never read or write again

    Answers 200 with a small JSON body, then trailers `x-resp-trailer: 2`
    when the request asked for them (`te: trailers`).

    Records: conns, peak concurrent streams on any one connection, requests
    answered, RST_STREAM error codes received, PINGs received, request
    trailers received."""

    def __init__(self, max_streams=100, delay=0.0, goaway_first=False, silent=False):
        self.max_streams = max_streams
        self.delay = delay
        self.goaway_first = goaway_first
        self.silent = silent
        self.lock = threading.Lock()
        self.conns = 0
        self.peak_streams = 0
        self.answered = 0
        self.resets = []
        self.pings = 0
        self.trailers = []
        self.heads = []  # each request's header tuples, as hpack decoded them
        self.stop_ev = threading.Event()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.threads = []
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(5)
        self.lsock.close()

    def _accept_loop(self):
        while not self.stop_ev.is_set():
            r, _, _ = select.select([self.lsock], [], [], 0.05)
            if not r:
                continue
            try:
                s, _ = self.lsock.accept()
            except OSError:
                continue
            with self.lock:
                self.conns += 1
                idx = self.conns
            t = threading.Thread(target=self._serve, args=(s, idx), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, sock, idx):
        try:
            self._serve_conn(sock, idx)
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            sock.close()

    def _serve_conn(self, sock, idx):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        if self.silent:
            self.stop_ev.wait(30)
            return
        active, due, bodies, want_trailers = set(), [], {}, set()
        goaway = self.goaway_first and idx == 1
        sent_goaway = False
        while not self.stop_ev.is_set():
            timeout = 0.02 if due else 0.1
            r, _, _ = select.select([sock], [], [], timeout)
            if r:
                data = sock.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        with self.lock:
                            self.heads.append(list(ev.headers))
                        active.add(ev.stream_id)
                        bodies[ev.stream_id] = 0
                        if (b"te", b"trailers") in ev.headers or ("te", "trailers") in ev.headers:
                            want_trailers.add(ev.stream_id)
                        with self.lock:
                            self.peak_streams = max(self.peak_streams, len(active))
                        if goaway and ev.stream_id > 1 and not sent_goaway:
                            # A graceful GOAWAY written around python-h2 (whose own
                            # close_connection() would forbid answering stream 1).
                            f = hyperframe.frame.GoAwayFrame(0)
                            f.last_stream_id = 1
                            sock.sendall(conn.data_to_send() + f.serialize())
                            sent_goaway = True
                    elif isinstance(ev, h2.events.DataReceived):
                        bodies[ev.stream_id] = bodies.get(ev.stream_id, 0) + len(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        if not (goaway and ev.stream_id > 1):
                            due.append((time.monotonic() + self.delay, ev.stream_id))
                    elif isinstance(ev, h2.events.StreamReset):
                        active.discard(ev.stream_id)
                        due = [d for d in due if d[1] != ev.stream_id]
                        with self.lock:
                            self.resets.append(ev.error_code)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        with self.lock:
                            self.trailers.append([(bytes(k), bytes(v)) for k, v in ev.headers])
                    elif isinstance(ev, h2.events.PingReceived):
                        with self.lock:
                            self.pings += 1
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        sock.sendall(conn.data_to_send())
                        return
            now = time.monotonic()
            for d in [d for d in due if d[0] <= now]:
                due.remove(d)
                sid = d[1]
                body = f'{{"conn": {idx}, "stream": {sid}, "body_bytes": {bodies.get(sid, 0)}}}'
                body = body.encode()
                conn.send_headers(sid, [(":status", "200"), ("content-length", str(len(body))),
                                        ("x-h2-conn", str(idx))])
                if sid in want_trailers:
                    conn.send_data(sid, body)
                    conn.send_headers(sid, [("x-resp-trailer", "2")], end_stream=True)
                else:
                    conn.send_data(sid, body, end_stream=True)
                active.discard(sid)
                with self.lock:
                    self.answered += 1
            out = conn.data_to_send()
            if out:
                sock.sendall(out)


@pytest.fixture
def h2backend():
    made = []

    def make(**kw):
        b = H2Backend(**kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


class Http11OnlyTLS:
    """A TLS server whose ALPN offers only http/1.1 (never h2); it answers
    any request with a fixed HTTP/1.1 response."""

    def __init__(self, certs):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(certs.cert), str(certs.key))
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.handshakes = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while not self.stop_ev.is_set():
            r, _, _ = select.select([self.lsock], [], [], 0.05)
            if not r:
                continue
            try:
                s, _ = self.lsock.accept()
                s.settimeout(2)
                with self.ctx.wrap_socket(s, server_side=True) as t:
                    self.handshakes += 1
                    try:
                        t.recv(65536)
                        t.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    except OSError:
                        pass
            except (OSError, ssl.SSLError):
                continue

    def stop(self):
        self.stop_ev.set()
        self.t.join(5)
        self.lsock.close()


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A second CA that signed nothing the testbed serves."""
    d = tmp_path_factory.mktemp("otherca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key",
                    "-out", "ca.pem", "-days", "2", "-subj", "/CN=unrelated CA"],
                   cwd=d, check=True, timeout=60, capture_output=True)
    return d / "ca.pem"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

RSS_SLACK_KIB = 32 * 1024


def backend_conns(port, before):
    """Connections opened to 127.0.0.1:port since the snapshot `before`
    (the fixtures' own readiness probes are in it)."""
    return tcp_peers_of_port(port) - before


def run_parallel(n, fn):
    """Run fn(i) in n threads; returns the results (exceptions re-raised)."""
    results = [None] * n
    errors = []

    def worker(i):
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    return results


# ---------------------------------------------------------------------------
# h2c basics
# ---------------------------------------------------------------------------

def test_h2c_get_and_post(proxy, testbed):
    tb = testbed(name="h2c")
    px, port = start(proxy, tb.addr)
    r = get(port, "/a/b?q=1", host="api.example", headers=[("X-Custom", "v1")])
    assert r.status == 200, r
    j = r.json()
    assert j["protocol"] == "HTTP/2"
    assert j["instance"] == "h2c"
    assert j["path"] == "/a/b?q=1"
    assert j["method"] == "GET"
    assert j["headers"]["host"] == "api.example"      # :authority
    assert j["headers"]["x-custom"] == "v1"
    assert r.header("x-testbed-instance") == "h2c"
    body = b"x" * 100000
    r = get(port, "/post", method="POST", body=body)
    assert r.status == 200, r
    j = r.json()
    assert j["method"] == "POST" and j["body_bytes"] == len(body)
    assert j["headers"]["content-length"] == str(len(body))


def test_h2c_connection_specific_headers_dropped(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr)
    r = get(port, "/hop", headers=[("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"),
                                    ("TE", "trailers"), ("Proxy-Connection", "x")])
    assert r.status == 200, r
    h = r.json()["headers"]
    for name in ("connection", "keep-alive", "proxy-connection", "transfer-encoding",
                 "upgrade"):
        assert name not in h, h


def test_h2c_chunked_upload(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr)
    parts = [b"a" * 70000, b"b" * 1, b"c" * 150000]
    payload = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n\r\n"
    with H1Conn(port) as c:
        c.send(request_bytes("POST", "/chunked", headers=[("Transfer-Encoding", "chunked")])
               + payload)
        r = c.read_response()
    assert r.status == 200, r
    j = r.json()
    assert j["body_bytes"] == sum(map(len, parts))
    assert "content-length" not in j["headers"]


def test_h2c_head_and_no_body_status(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr)
    r = get(port, "/head", method="HEAD")
    assert r.status == 200, r
    assert r.body_len == 0
    r = get(port, "/nc", headers=[("x-testbed-status", "204")])
    assert r.status == 204, r
    r = get(port, "/nf", headers=[("x-testbed-status", "404")])
    assert r.status == 404, r


def test_h2c_grpc_trailers_only_and_trailers(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr)
    # Trailers-only: one HEADERS frame with END_STREAM.
    r = get(port, "/pkg.Svc/Method", method="POST", body=b"\0\0\0\0\0",
            headers=[("Content-Type", "application/grpc"), ("TE", "trailers"),
                     ("x-testbed-grpc-status", "7")])
    assert r.status == 200, r
    assert r.header("grpc-status") == "7"
    # HEADERS, DATA, then trailers (the testbed's gRPC health service).
    r = get(port, "/grpc.health.v1.Health/Check", method="POST", body=b"\0\0\0\0\0",
            headers=[("Content-Type", "application/grpc"), ("TE", "trailers")])
    assert r.status == 200, r
    assert r.body_len >= 5 and r.complete


def test_h2c_reuses_one_connection(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr)
    before = tcp_peers_of_port(tb.port)
    for i in range(10):
        r = get(port, f"/seq/{i}")
        assert r.status == 200, r
    assert len(backend_conns(tb.port, before)) == 1


def h2_client_exchange(port, path, body, trailers=(), extra=(), timeout=10.0):
    """One request over a fresh prior-knowledge h2c connection (python-h2):
    returns (response headers, body bytes, trailers); None when the proxy
    does not speak h2c."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                (":authority", "h2.example"), (":path", path),
                                ("te", "trailers"), *extra])
        conn.send_data(sid, body, end_stream=not trailers)
        if trailers:
            conn.send_headers(sid, list(trailers), end_stream=True)
        sock.sendall(conn.data_to_send())
        head, data, trail = None, b"", None
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            if time.monotonic() >= deadline:
                raise TimeoutError("no complete h2 response")
            chunk = sock.recv(65536)
            if not chunk:
                return None if head is None else (head, data, trail)
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived):
                    head = [(bytes(k).decode(), bytes(v).decode()) for k, v in ev.headers]
                elif isinstance(ev, h2.events.DataReceived):
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trail = [(bytes(k).decode(), bytes(v).decode()) for k, v in ev.headers]
                elif isinstance(ev, h2.events.StreamEnded):
                    return head, data, trail
                elif isinstance(ev, h2.events.StreamReset):
                    raise AssertionError(f"stream reset {ev.error_code}")
            sock.sendall(conn.data_to_send())
    except (OSError, h2.exceptions.ProtocolError):
        return None
    finally:
        sock.close()
    return None


def test_h2_end_to_end_trailers_both_ways(proxy, h2backend):
    """An HTTP/2 client: request trailers reach the backend after the body,
    response trailers come back (gRPC's shape)."""
    b = h2backend()
    px, port = start(proxy, b.addr)
    got = h2_client_exchange(port, "/pkg.S/M", b"q" * 16000,
                             trailers=[("x-req-trailer", "1")],
                             extra=[("content-type", "application/grpc")])
    if got is None:
        pytest.skip("the listener does not speak h2c yet")
    head, data, trail = got
    assert dict(head)[":status"] == "200", head
    assert b'"body_bytes": 16000' in data, data
    assert trail == [("x-resp-trailer", "2")], trail
    assert b.trailers == [[(b"x-req-trailer", b"1")]], b.trailers


def test_h2c_many_concurrent_streams_multiplexed(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr)
    before = tcp_peers_of_port(tb.port)
    assert get(port, "/warm").status == 200

    def one(i):
        r = get(port, f"/c/{i}", headers=[("x-testbed-delay", "200ms")], timeout=30)
        assert r.status == 200, r
        assert r.json()["path"] == f"/c/{i}"
        return r.json()["protocol"]

    t0 = time.monotonic()
    protos = run_parallel(50, one)
    elapsed = time.monotonic() - t0
    assert set(protos) == {"HTTP/2"}
    # 50 requests of 200 ms each ran side by side, on one backend connection.
    assert elapsed < 8, elapsed
    assert len(backend_conns(tb.port, before)) == 1


def test_h2c_concurrent_uploads(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr)
    size = 300 * 1024

    def one(i):
        r = get(port, f"/up/{i}", method="POST", body=bytes([65 + i % 26]) * size, timeout=30)
        assert r.status == 200, r
        return r.json()["body_bytes"]

    assert run_parallel(20, one) == [size] * 20


# ---------------------------------------------------------------------------
# big bodies, bounded memory
# ---------------------------------------------------------------------------

BIG = 64 * MiB


@pytest.fixture
def big_h2c(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr, env=small_quarantine_env(), timeout="120s")
    r = get(port, "/warm", headers=[("x-testbed-body-size", str(4 * MiB))])
    assert r.status == 200 and r.body_len == 4 * MiB
    r = get(port, "/warm", method="POST", body=b"w" * (4 * MiB))
    assert r.status == 200 and r.json()["body_bytes"] == 4 * MiB
    # both exchanges are over (logged) before the idle RSS is taken
    assert len(px.access_log(min_entries=2)) >= 2, px.stderr()[-2000:]
    idle = rss_kib(px.pid)
    assert idle
    return px, port, idle


def test_h2c_large_upload_bounded_memory(big_h2c):
    px, port, idle = big_h2c
    block = memoryview(b"\x5a" * MiB)
    with RssSampler(px.pid) as s, H1Conn(port, timeout=60) as c:
        c.send(request_bytes("POST", "/big-up", headers=[("Content-Length", str(BIG))]))
        for _ in range(BIG // len(block)):
            c.send(block)
        r = c.read_response(timeout=60)
    assert r.status == 200, r
    assert r.json()["body_bytes"] == BIG
    assert s.peak - idle < RSS_SLACK_KIB, f"RSS grew {s.peak - idle} KiB over {idle} KiB"


def test_h2c_large_download_bounded_memory(big_h2c):
    px, port, idle = big_h2c
    with RssSampler(px.pid) as s, H1Conn(port, timeout=60) as c:
        c.send(request_bytes("GET", "/big-down", headers=[("x-testbed-body-size", str(BIG))]))
        r = c.read_response(timeout=90, store=False)
    assert r.status == 200, r
    assert r.complete and r.body_len == BIG, r
    assert s.peak - idle < RSS_SLACK_KIB, f"RSS grew {s.peak - idle} KiB over {idle} KiB"


def test_h2c_slow_reader_bounded_memory(big_h2c):
    """A client that does not read closes the backend's flow-control window."""
    px, port, idle = big_h2c
    c = H1Conn(port, timeout=10)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        with RssSampler(px.pid) as s:
            c.send(request_bytes("GET", "/slow", headers=[("x-testbed-body-size", str(BIG))]))
            head = c.read_head(10)
            assert head.startswith(b"HTTP/1.1 200"), head
            got = 0
            deadline = time.monotonic() + 2.0
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
        assert s.peak - idle < RSS_SLACK_KIB, f"RSS grew {s.peak - idle} KiB with a slow reader"
    finally:
        c.close()
    # The abandoned stream was cancelled; the connection still serves.
    r = get(port, "/after")
    assert r.status == 200, r


def test_h2c_abandoned_streams_return_the_window(proxy, testbed):
    """Clients that stop reading and leave: each stream held back part of the
    connection's flow-control window; cancelling must give it back, or the
    shared connection stalls after a few dozen of them."""
    tb = testbed()
    px, port = start(proxy, tb.addr, timeout="60s")
    before = tcp_peers_of_port(tb.port)

    def abandon(i):
        c = H1Conn(port, timeout=10)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        try:
            c.send(request_bytes("GET", f"/ab/{i}",
                                 headers=[("x-testbed-body-size", str(16 * MiB))]))
            head = c.read_head(10)
            assert head.startswith(b"HTTP/1.1 200"), head
            # Hold the stream unread a while (the point): the proxy pauses and
            # the backend's window stays closed until the client leaves.
            time.sleep(0.3)
        finally:
            c.close()
        return True

    for _ in range(8):
        assert all(run_parallel(10, abandon))
    with H1Conn(port, timeout=20) as c:
        c.send(request_bytes("GET", "/after", headers=[("x-testbed-body-size", str(32 * MiB))]))
        r = c.read_response(timeout=20, store=False)
    assert r.status == 200 and r.complete and r.body_len == 32 * MiB, r
    assert len(backend_conns(tb.port, before)) == 1


def test_h2c_parallel_downloads_complete(proxy, testbed):
    """Several streams share the connection window; a paused one does not
    starve the others for long."""
    tb = testbed()
    px, port = start(proxy, tb.addr, timeout="60s")

    def one(i):
        with H1Conn(port, timeout=60) as c:
            c.send(request_bytes("GET", f"/d/{i}",
                                 headers=[("x-testbed-body-size", str(8 * MiB))]))
            r = c.read_response(timeout=60, store=False)
        assert r.status == 200 and r.complete and r.body_len == 8 * MiB, r
        return True

    assert all(run_parallel(8, one))


# ---------------------------------------------------------------------------
# TLS: HTTP2 (h2 over TLS) and HTTPS (HTTP/1.1 over TLS)
# ---------------------------------------------------------------------------

def test_h2_tls_verified(proxy, testbed, certs):
    tb = testbed(name="tls", tls=True)
    px, port = start(proxy, tb.addr, protocol="HTTP2", tls=ca_tls(certs))
    before = tcp_peers_of_port(tb.port)
    for i in range(3):
        r = get(port, f"/tls/{i}", host="svc.example")
        assert r.status == 200, (r, px.stderr()[-2000:])
        j = r.json()
        assert j["protocol"] == "HTTP/2" and j["instance"] == "tls"
        assert j["headers"]["host"] == "svc.example"
    assert len(backend_conns(tb.port, before)) == 1
    r = get(port, "/big", headers=[("x-testbed-body-size", str(8 * MiB))], timeout=30)
    assert r.status == 200 and r.body_len == 8 * MiB
    r = get(port, "/up", method="POST", body=b"u" * (3 * MiB), timeout=30)
    assert r.status == 200 and r.json()["body_bytes"] == 3 * MiB


def test_h2_tls_sni_name_checked(proxy, testbed, certs):
    tb = testbed(tls=True)
    # The certificate names localhost: an sni of localhost verifies ...
    px, port = start(proxy, tb.addr, protocol="HTTP2", tls=ca_tls(certs, sni="localhost"))
    r = get(port, "/sni")
    assert r.status == 200, r
    # ... one of other.test does not.
    px2, port2 = start(proxy, tb.addr, protocol="HTTP2", tls=ca_tls(certs, sni="other.test"))
    r = get(port2, "/sni")
    assert r.status == 503, r


def test_h2_tls_no_verify(proxy, testbed):
    tb = testbed(tls=True)
    px, port = start(proxy, tb.addr, protocol="HTTP2", tls="{verify: false}")
    r = get(port, "/noverify")
    assert r.status == 200, r
    assert r.json()["protocol"] == "HTTP/2"


def test_h2_tls_wrong_ca_is_503(proxy, testbed, other_ca):
    tb = testbed(tls=True)
    px, port = start(proxy, tb.addr, protocol="HTTP2",
                     tls=f'{{ca_file: "{other_ca}", verify: true}}')
    r = get(port, "/wrongca")
    assert r.status == 503, r
    assert "certificate verify failed" in px.stderr()


def test_h2_tls_alpn_not_h2_is_503(proxy, certs):
    srv = Http11OnlyTLS(certs)
    try:
        px, port = start(proxy, srv.addr, protocol="HTTP2", tls=ca_tls(certs))
        r = get(port, "/alpn")
        assert r.status == 503, r
        assert srv.handshakes >= 1
        assert "ALPN" in px.stderr()
    finally:
        srv.stop()


def test_h2c_to_tls_port_fails(proxy, testbed):
    """Prior-knowledge h2c against a TLS listener: the backend is unusable."""
    tb = testbed(tls=True)
    px, port = start(proxy, tb.addr, timeout="3s")
    r = get(port, "/mismatch", timeout=15)
    assert r.status in (502, 503, 504), r


def test_https_h1_backend(proxy, testbed, certs):
    tb = testbed(name="h1tls", tls=True)
    px, port = start(proxy, tb.addr, protocol="HTTPS", tls=ca_tls(certs))
    for i in range(3):
        r = get(port, f"/h1tls/{i}")
        assert r.status == 200, (r, px.stderr()[-2000:])
        j = r.json()
        assert j["protocol"] == "HTTP/1.1" and j["instance"] == "h1tls"
    r = get(port, "/big", headers=[("x-testbed-body-size", str(8 * MiB))], timeout=30)
    assert r.status == 200 and r.body_len == 8 * MiB
    r = get(port, "/up", method="POST", body=b"u" * (3 * MiB), timeout=30)
    assert r.status == 200 and r.json()["body_bytes"] == 3 * MiB


def test_https_h1_backend_no_verify_and_wrong_ca(proxy, testbed, other_ca):
    tb = testbed(tls=True)
    px, port = start(proxy, tb.addr, protocol="HTTPS", tls="{verify: false}")
    r = get(port, "/nv")
    assert r.status == 200 and r.json()["protocol"] == "HTTP/1.1", r
    tb2 = testbed(tls=True)
    px2, port2 = start(proxy, tb2.addr, protocol="HTTPS",
                       tls=f'{{ca_file: "{other_ca}", verify: true}}')
    r = get(port2, "/wrongca")
    assert r.status == 503, r


# ---------------------------------------------------------------------------
# failures
# ---------------------------------------------------------------------------

def test_h2c_connect_refused_is_503(proxy):
    dead = free_port()
    px, port = start(proxy, f"127.0.0.1:{dead}")
    r = get(port, "/refused")
    assert r.status == 503, r


def test_h2c_reset_before_headers_is_502(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr)
    before = tcp_peers_of_port(tb.port)
    r = get(port, "/rst", headers=[("x-testbed-reset", "before-headers")])
    assert r.status == 502, r
    # Only that stream was reset: the connection keeps serving.
    r = get(port, "/after")
    assert r.status == 200, r
    assert len(backend_conns(tb.port, before)) == 1


@pytest.mark.parametrize("point", ["mid-body", "after-headers"])
def test_h2c_reset_after_headers_truncates(proxy, testbed, point):
    """Once the head went downstream, a backend reset aborts the client's
    response: a truncated body, or (when the reset arrives before the head
    was flushed) no response at all; never a complete one, never a 502."""
    tb = testbed()
    px, port = start(proxy, tb.addr)
    with H1Conn(port, timeout=10) as c:
        c.send(request_bytes("GET", "/rst", headers=[("x-testbed-reset", point),
                                                     ("x-testbed-body-size", str(MiB))]))
        try:
            r = c.read_response(timeout=10, store=False)
        except NoResponse:
            r = None
        if r is not None:
            assert r.status == 200, r
            assert not r.complete and r.body_len < MiB, r
        assert c.wait_closed(5)
    r = get(port, "/after")
    assert r.status == 200, r


def test_h2c_backend_closes_connection(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr)
    r = get(port, "/close", headers=[("x-testbed-close", "1")])
    assert r.status == 502, r
    r = get(port, "/after")
    assert r.status == 200, r


def test_h2c_backend_killed_mid_body(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr)
    with H1Conn(port, timeout=10) as c:
        c.send(request_bytes("GET", "/slowbody",
                             headers=[("x-testbed-body-size", str(MiB)),
                                      ("x-testbed-body-delay", "100ms")]))
        head = c.read_head(10)
        assert head.startswith(b"HTTP/1.1 200"), head
        tb.kill()
        assert c.wait_closed(5)


def test_h2c_timeout_is_504_and_stream_cancelled(proxy, h2backend):
    b = h2backend(delay=3.0)
    px, port = start(proxy, b.addr, timeout="500ms")
    t0 = time.monotonic()
    r = get(port, "/slow", timeout=10)
    assert r.status == 504, r
    assert time.monotonic() - t0 < 2.5
    assert wait_for(lambda: 8 in b.resets, 3), b.resets   # RST_STREAM CANCEL
    assert b.conns == 1


def test_h2c_timeout_testbed_connection_reused(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr, timeout="500ms")
    before = tcp_peers_of_port(tb.port)
    r = get(port, "/slow", headers=[("x-testbed-delay", "3s")], timeout=10)
    assert r.status == 504, r
    r = get(port, "/fast")
    assert r.status == 200, r
    assert len(backend_conns(tb.port, before)) == 1


# ---------------------------------------------------------------------------
# SETTINGS_MAX_CONCURRENT_STREAMS, GOAWAY, keepalive
# ---------------------------------------------------------------------------

def test_h2c_unique_ids_are_never_indexed(proxy, h2backend):
    """x-request-id and traceparent change on every request: they go to an
    HTTP/2 backend as never-indexed literals (RFC 7541 6.2.3), so they do not
    churn the connection's HPACK dynamic table; repeating fields stay indexable."""
    from hpack import NeverIndexedHeaderTuple
    b = h2backend()
    px, port = start(proxy, b.addr)
    for i in range(3):
        r = get(port, f"/ids/{i}", headers=[("x-same", "v")])
        assert r.status == 200, r
    assert len(b.heads) == 3, b.heads
    for head in b.heads:
        kinds = {bytes(k) if isinstance(k, bytes) else k.encode(): isinstance(f, NeverIndexedHeaderTuple)
                 for f in head for k in [f[0]]}
        assert kinds[b"x-request-id"] is True, head
        assert kinds[b"traceparent"] is True, head
        assert kinds[b"x-forwarded-proto"] is False, head
        assert kinds[b"x-same"] is False, head
    ids = {dict((bytes(k) if isinstance(k, bytes) else k.encode(), v) for k, v in h)[b"x-request-id"]
           for h in b.heads}
    assert len(ids) == 3, ids


def test_h2c_respects_max_concurrent_streams(proxy, h2backend):
    b = h2backend(max_streams=2, delay=0.4)
    px, port = start(proxy, b.addr)
    r = get(port, "/warm")         # the backend's SETTINGS are known afterwards
    assert r.status == 200, r

    def one(i):
        r = get(port, f"/m/{i}", timeout=20)
        assert r.status == 200, r
        return r.json()["conn"]

    t0 = time.monotonic()
    conns = run_parallel(8, one)
    elapsed = time.monotonic() - t0
    assert b.peak_streams <= 2, b.peak_streams
    # More connections were opened rather than queueing everything on one.
    assert len(set(conns)) >= 3, conns
    assert elapsed < 8 * 0.4, elapsed


def test_h2c_goaway_refused_stream_retried(proxy, h2backend):
    b = h2backend(goaway_first=True, delay=0.3)
    px, port = start(proxy, b.addr)
    # Two requests on the first connection; the backend processes stream 1
    # only, then GOAWAY(last_stream_id=1): stream 3 is retried elsewhere.
    results = run_parallel(2, lambda i: get(port, f"/g/{i}", timeout=15))
    for r in results:
        assert r.status == 200, r
    assert sorted(r.json()["conn"] for r in results) == [1, 2]
    # New exchanges use a new connection.
    r = get(port, "/g/after")
    assert r.status == 200 and r.json()["conn"] >= 2, r


def test_h2c_keepalive_pings_idle_connection(proxy, h2backend):
    b = h2backend()
    px, port = start(proxy, b.addr, extra="http2_keepalive: {time: 200ms, timeout: 1s}")
    assert get(port, "/ka").status == 200
    assert wait_for(lambda: b.pings >= 2, 5), b.pings
    assert get(port, "/ka2").status == 200
    assert b.conns == 1


def test_h2c_keepalive_detects_dead_backend(proxy, h2backend):
    b = h2backend(silent=True)
    px, port = start(proxy, b.addr, timeout="20s",
                     extra="http2_keepalive: {time: 300ms, timeout: 300ms}")
    t0 = time.monotonic()
    r = get(port, "/dead", timeout=25)
    assert r.status == 502, r
    assert time.monotonic() - t0 < 10


# ---------------------------------------------------------------------------
# shutdown with streams in flight
# ---------------------------------------------------------------------------

def test_shutdown_with_streams_in_flight(proxy, testbed):
    tb = testbed()
    px, port = start(proxy, tb.addr, drain_timeout="500ms")
    before = tcp_peers_of_port(tb.port)
    conns = []
    try:
        for i in range(5):
            c = H1Conn(port, timeout=10)
            c.send(request_bytes("GET", f"/inflight/{i}", headers=[("x-testbed-delay", "5s")]))
            conns.append(c)
        assert wait_for(lambda: len(backend_conns(tb.port, before)) >= 1, 3)
        # Every request is in: the proxy read all five (its side of each
        # client connection is caught up) and forwarded them (the backend
        # read everything the proxy's connection carried).
        assert wait_for(lambda: caught_up(port, 5), 10), "the proxy did not read all requests"
        assert wait_requests_at(tb.port), "the streams never reached the backend"
        rc = px.stop(signal.SIGTERM, 20)
        assert rc == 0, px.stderr()[-3000:]
        assert not sanitizer_report(px.stderr()), px.stderr()[-5000:]
    finally:
        for c in conns:
            c.close()
