"""Tests of switchyard-testbed itself (and of the conftest harness).

HTTP/1.1 with httpx and raw sockets, h2c with curl and raw python-h2,
h2 over TLS with httpx(http2=True). Every socket has a timeout.
"""
import json
import re
import socket
import ssl
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest

from conftest import HOST, caught_up, free_port, wait_for

TIMEOUT = 10.0
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def pattern(n, off=0):
    reps = (off % 64 + n) // 64 + 2
    return (PATTERN * reps)[off % 64: off % 64 + n]


def curl(*args, timeout=30):
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout - 5), *args],
                       capture_output=True, timeout=timeout)
    return r


class H1Raw:
    """A raw HTTP/1.1 client socket that parses Content-Length responses."""

    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def read_response(self):
        """(status, headers dict lower-case, body) of one response."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        if status in (100, 101):
            return status, headers, b""
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    def read_all(self):
        """Everything until EOF; raises ConnectionResetError on RST."""
        out = self.buf
        self.buf = b""
        for _ in range(100000):
            chunk = self.sock.recv(65536)
            if not chunk:
                return out
            out += chunk
        raise AssertionError("read_all: too much data")

    def close(self):
        self.sock.close()


def h1_request(path, headers=(), method="GET", body=b""):
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Stream:
    def __init__(self):
        self.headers = None
        self.data = b""
        self.trailers = None
        self.ended = False
        self.reset = None  # error code


class H2Raw:
    """A raw HTTP/2 client (python-h2) on plain TCP (h2c prior knowledge) or TLS."""

    def __init__(self, port, tls_ctx=None):
        sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
        if tls_ctx is not None:
            sock = tls_ctx.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2"
        self.sock = sock
        self.port = port
        self.closed = False
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 << 20)
        self.flush()
        self.streams = {}

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, headers=(), method="GET", body=None):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http")]
        if not any(k == "host" for k, _ in headers):
            hdrs.append((":authority", f"{HOST}:{self.port}"))
        hdrs += list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        self.streams[sid] = Stream()
        return sid

    def _pump(self):
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return
        for ev in self.conn.receive_data(data):
            st = self.streams.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived):
                st.headers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                st.data += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.TrailersReceived):
                st.trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                st.ended = True
            elif isinstance(ev, h2.events.StreamReset):
                st.reset = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.closed = True
        self.flush()

    def wait(self, sid, timeout=TIMEOUT):
        st = self.streams[sid]
        deadline = time.monotonic() + timeout
        while not (st.ended or st.reset is not None or self.closed):
            assert time.monotonic() < deadline, f"stream {sid} did not finish"
            self._pump()
        return st

    def close(self):
        self.sock.close()


@pytest.fixture
def tb(testbed):
    return testbed("tb1")


@pytest.fixture
def client_tls_ctx(certs):
    def make(alpn):
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        ctx.set_alpn_protocols(alpn)
        return ctx
    return make


# ---------------------------------------------------------------------------
# harness
# ---------------------------------------------------------------------------

def test_certs_verify(certs):
    for c in (certs.cert, certs.other_cert):
        r = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca), str(c)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr


def test_free_port_and_start_stop(testbed):
    assert 0 < free_port() < 65536
    t = testbed("solo")
    assert t.addr == f"{HOST}:{t.port}" and t.url == f"http://{HOST}:{t.port}"
    assert t.stop() == 0
    assert not t.running()


def test_help_and_bad_args(sy_build):
    exe = str(sy_build / "switchyard-testbed")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "--listen" in r.stdout
    for args in ([], ["--bogus"], ["--listen"], ["--listen", "nonsense"],
                 ["--listen", f"{HOST}:1", "--tls-cert", "x"],
                 ["--listen", f"{HOST}:{free_port()}", "--name", "has space"]):
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 1, args
        assert r.stderr.strip(), args


def test_port_in_use_fails(testbed, sy_build):
    t = testbed("a")
    r = subprocess.run([str(sy_build / "switchyard-testbed"), "--listen", t.addr],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "cannot listen" in r.stderr


# ---------------------------------------------------------------------------
# echo
# ---------------------------------------------------------------------------

def test_echo_http1(tb):
    r = httpx.get(tb.url + "/a/b?x=1&y=2", headers=[("X-Foo", "1"), ("x-foo", "2")],
                  timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-testbed-instance"] == "tb1"
    j = r.json()
    assert j["instance"] == "tb1"
    assert j["protocol"] == "HTTP/1.1"
    assert j["method"] == "GET"
    assert j["path"] == "/a/b?x=1&y=2"
    assert j["headers"]["x-foo"] == "1, 2"
    assert j["headers"]["host"] == tb.addr
    assert j["body_bytes"] == 0


def test_echo_body_counted(tb):
    with httpx.Client(timeout=TIMEOUT) as c:
        r = c.post(tb.url + "/up", content=b"x" * 123457)
        assert r.json()["body_bytes"] == 123457
        assert r.json()["headers"]["content-length"] == "123457"

        def gen():
            for _ in range(10):
                yield b"y" * 1000
        r = c.post(tb.url + "/chunked", content=gen())
        j = r.json()
        assert j["headers"]["transfer-encoding"] == "chunked"
        assert j["body_bytes"] == 10000


def test_json_escaping(tb):
    raw = H1Raw(tb.port)
    value = b'q"b\\s\tt \xe9'
    raw.send(b"GET /p?a=%22 HTTP/1.1\r\nHost: h\r\nX-Odd: " + value + b"\r\n\r\n")
    status, _, body = raw.read_response()
    raw.close()
    assert status == 200
    j = json.loads(body.decode("utf-8"))
    assert j["headers"]["x-odd"] == value.decode("latin-1")
    assert j["path"] == "/p?a=%22"


def test_keepalive_and_pipelining_in_order(tb):
    raw = H1Raw(tb.port)
    raw.send(h1_request("/one", [("x-testbed-delay", "200ms")])
             + h1_request("/two", method="POST", body=b"abc")
             + h1_request("/three"))
    paths = []
    for _ in range(3):
        status, headers, body = raw.read_response()
        assert status == 200
        assert "connection" not in headers
        paths.append(json.loads(body)["path"])
    assert paths == ["/one", "/two", "/three"]
    # the connection is still usable
    raw.send(h1_request("/four"))
    assert json.loads(raw.read_response()[2])["path"] == "/four"
    raw.close()


def test_connection_close_honoured(tb):
    raw = H1Raw(tb.port)
    raw.send(h1_request("/bye", [("Connection", "close")]) + h1_request("/never"))
    status, headers, body = raw.read_response()
    assert status == 200 and headers["connection"] == "close"
    assert raw.read_all() == b""
    raw.close()


def test_http10(tb):
    raw = H1Raw(tb.port)
    raw.send(b"GET /old HTTP/1.0\r\n\r\n")
    status, headers, body = raw.read_response()
    assert status == 200 and headers["connection"] == "close"
    assert json.loads(body)["path"] == "/old"
    assert raw.read_all() == b""
    raw.close()


def test_expect_100_continue(tb):
    raw = H1Raw(tb.port)
    raw.send(b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    status, _, _ = raw.read_response()
    assert status == 100
    raw.send(b"hello")
    status, _, body = raw.read_response()
    assert status == 200 and json.loads(body)["body_bytes"] == 5
    raw.close()


def test_bad_request_and_too_large(tb):
    raw = H1Raw(tb.port)
    raw.send(b"NOT HTTP AT ALL\r\n\r\n")
    status, headers, _ = raw.read_response()
    assert status == 400 and headers["connection"] == "close"
    raw.close()
    raw = H1Raw(tb.port)
    big = "".join(f"X-H{i}: {'v' * 100}\r\n" for i in range(700))
    raw.send(f"GET / HTTP/1.1\r\nHost: h\r\n{big}\r\n".encode())
    status, _, _ = raw.read_response()
    assert status == 431
    raw.close()


def test_head_has_length_no_body(tb):
    raw = H1Raw(tb.port)
    raw.send(h1_request("/h", [("x-testbed-body-size", "1000")], method="HEAD")
             + h1_request("/after"))
    # HEAD: headers with content-length 1000, then directly the next response
    while b"\r\n\r\n" not in raw.buf:
        raw._fill()
    head, raw.buf = raw.buf.split(b"\r\n\r\n", 1)
    assert b"content-length: 1000" in head
    status, _, body = raw.read_response()
    assert status == 200 and json.loads(body)["path"] == "/after"
    raw.close()


# ---------------------------------------------------------------------------
# HTTP/2: h2c prior knowledge, h2c upgrade, TLS ALPN
# ---------------------------------------------------------------------------

def test_h2c_prior_knowledge_curl(tb):
    r = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", "-d", "hello",
             tb.url + "/h2?q=1")
    assert r.returncode == 0, r.stderr
    body, version = r.stdout.rsplit(b"\n", 1)
    assert version == b"2"
    j = json.loads(body)
    assert j["protocol"] == "HTTP/2" and j["method"] == "POST" and j["path"] == "/h2?q=1"
    assert j["headers"]["host"] == tb.addr  # from :authority
    assert j["body_bytes"] == 5


def test_h2c_prior_knowledge_raw(tb):
    c = H2Raw(tb.port)
    sid = c.request("/raw", [("x-a", "1"), ("x-a", "2"), ("host", "explicit.host")])
    st = c.wait(sid)
    assert st.headers[":status"] == "200"
    assert st.headers["x-testbed-instance"] == "tb1"
    j = json.loads(st.data)
    assert j["headers"]["x-a"] == "1, 2"
    assert j["headers"]["host"] == "explicit.host"  # a host header is echoed as is
    c.close()


def test_h2c_concurrent_streams_finish_independently(tb):
    c = H2Raw(tb.port)
    slow = c.request("/slow", [("x-testbed-delay", "500ms")])
    fast = c.request("/fast")
    st = c.wait(fast, timeout=5)
    assert st.ended and not c.streams[slow].ended
    assert json.loads(c.wait(slow).data)["path"] == "/slow"
    c.close()


def test_h2c_upgrade(tb):
    r = curl("--http2", "-v", "-w", "\n%{http_version}", tb.url + "/up")
    assert r.returncode == 0, r.stderr
    assert b"101 Switching Protocols" in r.stderr
    body, version = r.stdout.rsplit(b"\n", 1)
    assert version == b"2"
    j = json.loads(body)
    assert j["path"] == "/up"
    assert j["protocol"] == "HTTP/1.1"  # the request itself came as HTTP/1.1
    assert j["headers"]["upgrade"] == "h2c"


def test_h2c_upgrade_raw_then_more_streams(tb):
    sock = socket.create_connection((HOST, tb.port), timeout=TIMEOUT)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    settings = conn.initiate_upgrade_connection()
    sock.sendall(b"GET /first HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                 b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101")
    sock.sendall(conn.data_to_send())
    got = {}
    conn.send_headers(3, [(":method", "GET"), (":path", "/second"), (":scheme", "http"),
                          (":authority", "h")], end_stream=True)
    sock.sendall(conn.data_to_send())
    data = rest
    deadline = time.monotonic() + TIMEOUT
    while True:
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                got.setdefault(ev.stream_id, {}).setdefault("data", b"")
                got[ev.stream_id]["data"] += ev.data
            elif isinstance(ev, h2.events.StreamEnded):
                got.setdefault(ev.stream_id, {})["end"] = True
        sock.sendall(conn.data_to_send())
        if len([st for st in got.values() if st.get("end")]) == 2:
            break
        assert time.monotonic() < deadline
        data = sock.recv(65536)
    assert json.loads(got[1]["data"])["path"] == "/first"
    assert json.loads(got[3]["data"])["path"] == "/second"
    assert json.loads(got[3]["data"])["protocol"] == "HTTP/2"
    sock.close()


def test_tls_alpn_h2_and_http11(testbed, certs):
    t = testbed("tls1", tls=True)
    assert t.url.startswith("https://")
    with httpx.Client(http2=True, verify=str(certs.ca), timeout=TIMEOUT) as c:
        r = c.get(t.url + "/x")
        assert r.http_version == "HTTP/2"
        assert r.json()["protocol"] == "HTTP/2" and r.json()["instance"] == "tls1"
        r = c.post(t.url + "/y", content=b"z" * 70000)
        assert r.json()["body_bytes"] == 70000
    with httpx.Client(http2=False, verify=str(certs.ca), timeout=TIMEOUT) as c:
        r = c.get(t.url + "/x")
        assert r.http_version == "HTTP/1.1"
        assert r.json()["protocol"] == "HTTP/1.1"
    r = curl("--cacert", str(certs.ca), "--http1.1", "-w", "\n%{http_version}", t.url + "/c")
    assert r.returncode == 0 and r.stdout.endswith(b"\n1.1")
    r = curl("--cacert", str(certs.ca), "--http2", "-w", "\n%{http_version}", t.url + "/c")
    assert r.returncode == 0 and r.stdout.endswith(b"\n2")


def test_tls_without_alpn_sniffs(testbed, certs):
    t = testbed("tls2", tls=True)
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    with socket.create_connection((HOST, t.port), timeout=TIMEOUT) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as ts:
            assert ts.selected_alpn_protocol() is None
            ts.sendall(h1_request("/noalpn", [("Connection", "close")]))
            data = b""
            for _ in range(1000):
                chunk = ts.recv(65536)
                if not chunk:
                    break
                data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b'"/noalpn"' in data


# ---------------------------------------------------------------------------
# steering headers
# ---------------------------------------------------------------------------

def test_status(tb):
    r = httpx.get(tb.url + "/s", headers={"x-testbed-status": "503"}, timeout=TIMEOUT)
    assert r.status_code == 503 and r.json()["path"] == "/s"
    r = httpx.get(tb.url + "/s", headers={"x-testbed-status": "204"}, timeout=TIMEOUT)
    assert r.status_code == 204 and r.content == b""
    c = H2Raw(tb.port)
    st = c.wait(c.request("/s", [("x-testbed-status", "418")]))
    assert st.headers[":status"] == "418"
    st = c.wait(c.request("/s", [("x-testbed-status", "204")]))
    assert st.headers[":status"] == "204" and st.data == b""
    c.close()


def test_bad_steering_value_is_400(tb):
    for k, v in (("x-testbed-status", "abc"), ("x-testbed-status", "99"),
                 ("x-testbed-delay", "soon"), ("x-testbed-reset", "sometimes"),
                 ("x-testbed-body-size", "-1"), ("x-testbed-fail-first", "x")):
        r = httpx.get(tb.url + "/", headers={k: v}, timeout=TIMEOUT)
        assert r.status_code == 400, (k, v)
        assert k in r.text


def test_delay_http1_and_h2(tb):
    t0 = time.monotonic()
    r = httpx.get(tb.url + "/d", headers={"x-testbed-delay": "400ms"}, timeout=TIMEOUT)
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.4
    c = H2Raw(tb.port)
    t0 = time.monotonic()
    st = c.wait(c.request("/d", [("x-testbed-delay", "0.3s")]))
    assert st.headers[":status"] == "200" and time.monotonic() - t0 >= 0.3
    c.close()


def test_delay_is_before_headers(tb):
    with httpx.Client(timeout=httpx.Timeout(TIMEOUT, read=0.2)) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get(tb.url + "/slow", headers={"x-testbed-delay": "2s"})


def test_body_delay_chunks(tb):
    # A 400 ms body delay (not less): the headers must come before the first
    # gap even on a loaded machine running ASan builds.
    with httpx.Client(timeout=TIMEOUT) as c:
        t0 = time.monotonic()
        arrivals = []
        with c.stream("GET", tb.url + "/bd", headers={"x-testbed-body-delay": "400ms",
                                                       "x-testbed-body-size": "4000"}) as r:
            headers_at = time.monotonic() - t0
            for chunk in r.iter_raw():
                arrivals.append((time.monotonic() - t0, len(chunk)))
        assert headers_at < 0.4
        assert sum(n for _, n in arrivals) == 4000
        assert arrivals[-1][0] >= 1.2  # 4 chunks of 1000 bytes, 3 gaps
    c2 = H2Raw(tb.port)
    t0 = time.monotonic()
    st = c2.wait(c2.request("/bd", [("x-testbed-body-delay", "100ms")]))
    assert time.monotonic() - t0 >= 0.3
    assert json.loads(st.data)["path"] == "/bd"
    c2.close()


def test_body_size_64mib_http1(tb):
    n = 64 << 20
    with httpx.Client(timeout=60) as c:
        with c.stream("GET", tb.url + "/big", headers={"x-testbed-body-size": str(n)}) as r:
            assert r.headers["content-length"] == str(n)
            assert r.headers["content-type"] == "application/octet-stream"
            total, first = 0, b""
            for chunk in r.iter_raw():
                if len(first) < 1000:
                    first += chunk[:1000]
                total += len(chunk)
    assert total == n
    assert first[:1000] == pattern(1000)


def test_body_size_64mib_h2c(tb):
    r = curl("--http2-prior-knowledge", "-H", "x-testbed-body-size: 64MiB", "-o", "-",
             tb.url + "/big", timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == 64 << 20
    assert r.stdout[(32 << 20): (32 << 20) + 128] == pattern(128, 32 << 20)


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1))


@pytest.mark.parametrize("proto", ["http1", "h2c"])
def test_slow_reader_is_back_pressured(tb, proto):
    # Warm up, then measure RSS while a 1 GiB body is offered to a reader that
    # barely reads: the testbed must not buffer it.
    httpx.get(tb.url + "/", timeout=TIMEOUT)
    base = vm_rss_kib(tb.pid)
    if proto == "http1":
        s = socket.create_connection((HOST, tb.port), timeout=TIMEOUT)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(h1_request("/huge", [("x-testbed-body-size", "1GiB")]))
        got = 0
        for _ in range(20):
            got += len(s.recv(16384))
            time.sleep(0.05)   # the slow reader: the point of the test
        peak = vm_rss_kib(tb.pid)
        s.close()
    else:
        # A huge flow-control window: only TCP back-pressure holds the body.
        c = H2Raw(tb.port)
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        c.flush()
        sid = c.request("/huge", [("x-testbed-body-size", "1GiB")])
        for _ in range(20):
            c._pump()
            time.sleep(0.05)   # the slow reader: the point of the test
        assert 0 < len(c.streams[sid].data) < (256 << 20)
        peak = vm_rss_kib(tb.pid)
        c.close()
    assert peak - base < 48 * 1024, (base, peak)
    # still serving
    assert httpx.get(tb.url + "/ok", timeout=TIMEOUT).status_code == 200


def test_reset_http1(tb):
    raw = H1Raw(tb.port)
    raw.send(h1_request("/r", [("x-testbed-reset", "before-headers")]))
    with pytest.raises(ConnectionResetError):
        raw.read_all()
    raw.close()

    raw = H1Raw(tb.port)
    raw.send(h1_request("/r", [("x-testbed-reset", "after-headers")]))
    data = b""
    with pytest.raises(ConnectionResetError):
        for _ in range(1000):
            chunk = raw.sock.recv(65536)
            assert chunk, "FIN instead of RST"
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\n")
    raw.close()

    raw = H1Raw(tb.port)
    raw.send(h1_request("/r", [("x-testbed-reset", "mid-body"), ("x-testbed-body-size", "100000")]))
    data = b""
    with pytest.raises(ConnectionResetError):
        for _ in range(1000):
            chunk = raw.sock.recv(65536)
            assert chunk, "FIN instead of RST"
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"content-length: 100000" in head
    assert len(body) == 50000 and body == pattern(50000)
    raw.close()


def test_reset_http1_via_httpx(tb):
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(tb.url + "/r", headers={"x-testbed-reset": "before-headers"}, timeout=TIMEOUT)


def test_reset_h2(tb):
    c = H2Raw(tb.port)
    st = c.wait(c.request("/r", [("x-testbed-reset", "before-headers")]))
    assert st.reset == 2 and st.headers is None  # INTERNAL_ERROR
    st = c.wait(c.request("/r", [("x-testbed-reset", "after-headers")]))
    assert st.reset == 2 and st.headers[":status"] == "200" and st.data == b""
    st = c.wait(c.request("/r", [("x-testbed-reset", "mid-body"),
                                 ("x-testbed-body-size", "100000")]))
    assert st.reset == 2 and st.headers["content-length"] == "100000"
    assert st.data == pattern(50000)
    # the connection survives stream resets
    st = c.wait(c.request("/after"))
    assert st.ended and json.loads(st.data)["path"] == "/after"
    c.close()


def test_close_without_answer(tb):
    raw = H1Raw(tb.port)
    raw.send(h1_request("/c", [("x-testbed-close", "1")]))
    assert raw.read_all() == b""
    raw.close()
    c = H2Raw(tb.port)
    sid = c.request("/c", [("x-testbed-close", "1")])
    st = c.wait(sid)
    assert c.closed and st.headers is None
    c.close()
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(tb.url + "/c", headers={"x-testbed-close": "1"}, timeout=TIMEOUT)


def test_close_after_delay(tb):
    raw = H1Raw(tb.port)
    t0 = time.monotonic()
    raw.send(h1_request("/c", [("x-testbed-close", "1"), ("x-testbed-delay", "300ms")]))
    assert raw.read_all() == b""
    assert time.monotonic() - t0 >= 0.3
    raw.close()


def test_fail_first(tb):
    def get(key, n="2", extra=None):
        h = {"x-testbed-fail-first": n, "x-testbed-key": key}
        h.update(extra or {})
        return httpx.get(tb.url + "/ff", headers=h, timeout=TIMEOUT)
    codes = [get("k1").status_code for _ in range(4)]
    assert codes == [503, 503, 200, 200]
    r = get("k2")
    assert r.status_code == 503 and r.headers["x-testbed-attempt"] == "1"
    assert r.json()["path"] == "/ff"  # still the echo, so a test sees who failed
    assert get("k2").headers["x-testbed-attempt"] == "2"
    assert get("k2").status_code == 200
    # custom failure status, and fail-first 0 never fails
    assert get("k3", "1", {"x-testbed-fail-status": "502"}).status_code == 502
    assert get("k3", "1", {"x-testbed-fail-status": "502"}).status_code == 200
    assert get("k4", "0").status_code == 200


def test_fail_first_over_h2_and_delay(tb):
    # A 1 s fail delay (not less): the undelayed second answer must come
    # sooner even on a loaded machine running ASan builds.
    c = H2Raw(tb.port)
    t0 = time.monotonic()
    h = [("x-testbed-fail-first", "1"), ("x-testbed-key", "h2k"), ("x-testbed-fail-delay", "1s")]
    st = c.wait(c.request("/ff", h))
    assert st.headers[":status"] == "503" and time.monotonic() - t0 >= 1.0
    t0 = time.monotonic()
    st = c.wait(c.request("/ff", h))
    assert st.headers[":status"] == "200" and time.monotonic() - t0 < 1.0
    assert st.headers["x-testbed-attempt"] == "2"
    c.close()


def test_fail_first_key_table_is_bounded(tb):
    # More keys than the table holds: the oldest are forgotten, the process lives.
    with httpx.Client(timeout=TIMEOUT) as c:
        for i in range(4200):
            c.get(tb.url + "/", headers={"x-testbed-fail-first": "0", "x-testbed-key": f"k{i}"})
        r = c.get(tb.url + "/", headers={"x-testbed-fail-first": "0", "x-testbed-key": "k0"})
        assert r.headers["x-testbed-attempt"] == "1"  # evicted, counted afresh
        r = c.get(tb.url + "/", headers={"x-testbed-fail-first": "0", "x-testbed-key": "k4199"})
        assert r.headers["x-testbed-attempt"] == "2"


def test_grpc_status_trailers_only(tb):
    c = H2Raw(tb.port)
    st = c.wait(c.request("/pkg.Svc/Method", [("content-type", "application/grpc"),
                                              ("te", "trailers"),
                                              ("x-testbed-grpc-status", "14"),
                                              ("x-testbed-grpc-message", "go away")],
                          method="POST", body=b"\x00\x00\x00\x00\x00"))
    assert st.ended and st.reset is None
    assert st.headers[":status"] == "200"
    assert st.headers["content-type"] == "application/grpc"
    assert st.headers["grpc-status"] == "14" and st.headers["grpc-message"] == "go away"
    assert st.data == b"" and st.trailers is None
    st = c.wait(c.request("/pkg.Svc/Method", [("x-testbed-grpc-status", "0")], method="POST",
                          body=b""))
    assert st.headers["grpc-status"] == "0"
    # fail-first on a gRPC request fails with UNAVAILABLE, then the asked status
    h = [("x-testbed-grpc-status", "0"), ("x-testbed-fail-first", "1"), ("x-testbed-key", "g")]
    st = c.wait(c.request("/pkg.Svc/M", h, method="POST", body=b""))
    assert st.headers[":status"] == "200" and st.headers["grpc-status"] == "14"
    st = c.wait(c.request("/pkg.Svc/M", h, method="POST", body=b""))
    assert st.headers["grpc-status"] == "0"
    c.close()


def test_grpc_health_check(tb):
    c = H2Raw(tb.port)
    hdrs = [("content-type", "application/grpc"), ("te", "trailers")]
    st = c.wait(c.request("/grpc.health.v1.Health/Check", hdrs, method="POST",
                          body=b"\x00\x00\x00\x00\x00"))
    assert st.headers[":status"] == "200"
    assert st.data == b"\x00\x00\x00\x00\x02\x08\x01"  # SERVING
    assert st.trailers["grpc-status"] == "0"
    httpx.post(tb.url + "/testbed/health?status=fail", timeout=TIMEOUT)
    st = c.wait(c.request("/grpc.health.v1.Health/Check", hdrs, method="POST",
                          body=b"\x00\x00\x00\x00\x00"))
    assert st.data == b"\x00\x00\x00\x00\x02\x08\x02"  # NOT_SERVING
    c.close()


def test_health_toggle(tb):
    with httpx.Client(timeout=TIMEOUT) as c:
        r = c.get(tb.url + "/healthz")
        assert r.status_code == 200 and r.text == "ok"
        r = c.post(tb.url + "/testbed/health?status=fail")
        assert r.status_code == 200 and r.json()["healthy"] is False
        r = c.get(tb.url + "/healthz")
        assert r.status_code == 503
        assert c.get(tb.url + "/other").status_code == 200  # only /healthz changes
        r = c.post(tb.url + "/testbed/health?status=ok")
        assert r.status_code == 200 and r.json()["healthy"] is True
        assert c.get(tb.url + "/healthz").status_code == 200
        assert c.get(tb.url + "/testbed/health").status_code == 405
        assert c.post(tb.url + "/testbed/health?status=maybe").status_code == 400
        # slow health answers
        c.post(tb.url + "/testbed/health?delay=300ms")
        t0 = time.monotonic()
        assert c.get(tb.url + "/healthz").status_code == 200
        assert time.monotonic() - t0 >= 0.3
        c.post(tb.url + "/testbed/health?delay=0s")
    r = curl("--http2-prior-knowledge", "-w", "%{http_code}", "-o", "/dev/null",
             tb.url + "/healthz")
    assert r.stdout == b"200"


def test_backends_are_independent(testbed):
    a, b = testbed("a"), testbed("b")
    httpx.post(a.url + "/testbed/health?status=fail", timeout=TIMEOUT)
    assert httpx.get(a.url + "/healthz", timeout=TIMEOUT).status_code == 503
    assert httpx.get(b.url + "/healthz", timeout=TIMEOUT).status_code == 200
    assert httpx.get(b.url + "/", timeout=TIMEOUT).json()["instance"] == "b"


def test_sigterm_with_work_in_flight_exits_0(testbed):
    t = testbed("busy")
    idle = socket.create_connection((HOST, t.port), timeout=TIMEOUT)
    pending = H1Raw(t.port)
    pending.send(h1_request("/slow", [("x-testbed-delay", "30s")]))
    streaming = H2Raw(t.port)
    streaming.request("/big", [("x-testbed-body-size", "1GiB")])
    streaming.request("/slow", [("x-testbed-delay", "30s")])
    partial = socket.create_connection((HOST, t.port), timeout=TIMEOUT)
    partial.sendall(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
    # the testbed accepted all four connections and read all that was sent
    assert wait_for(lambda: caught_up(t.port, 4), 10), "the testbed did not take the work in"
    t0 = time.monotonic()
    assert t.stop() == 0
    assert time.monotonic() - t0 < 5
    for s in (idle, partial, pending.sock, streaming.sock):
        s.close()
    assert "AddressSanitizer" not in t.stderr()


def test_many_connections(tb):
    socks = [socket.create_connection((HOST, tb.port), timeout=TIMEOUT) for _ in range(200)]
    for i, s in enumerate(socks):
        s.sendall(h1_request(f"/{i}", [("Connection", "close")]))
    for i, s in enumerate(socks):
        data = b""
        for _ in range(1000):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert f'"path": "/{i}"'.encode() in data
        s.close()
    assert wait_for(lambda: tb.running(), 1)


def test_reset_over_tls(testbed, certs, client_tls_ctx):
    t = testbed("tls3", tls=True)
    with httpx.Client(verify=str(certs.ca), timeout=TIMEOUT) as c:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            c.get(t.url + "/r", headers={"x-testbed-reset": "after-headers"})
    h = H2Raw(t.port, tls_ctx=client_tls_ctx(["h2"]))
    st = h.wait(h.request("/r", [("x-testbed-reset", "mid-body"),
                                 ("x-testbed-body-size", "1000")]))
    assert st.reset == 2 and st.data == pattern(500)
    st = h.wait(h.request("/ok"))
    assert st.ended and json.loads(st.data)["protocol"] == "HTTP/2"
    h.close()
