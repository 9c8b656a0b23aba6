"""
Raw-socket HTTP/1.1 for the integration tests: send exact bytes, read
responses with bounded waits, parse status / headers / body (Content-Length,
chunked, or until close). Nothing here retries or waits without a deadline.

    c = H1Conn(port)
    c.send(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    r = c.read_response()          # Response(status, headers, body, ...)
    r.json()["path"]; r.header("x-testbed-instance")
    c.wait_closed(3.0)             # True once the peer closed (EOF or RST)
"""

import json
import os
import socket
import threading
import time

from conftest import CHILD_ENV_DEFAULTS, free_port, tcp_conns

HOST = "127.0.0.1"
RECV_SIZE = 1 << 20


class NoResponse(Exception):
    """The connection ended before a complete response head arrived."""


class Response:
    def __init__(self):
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers = []          # [(lower-case name, value)] in order
        self.head = b""            # raw head bytes, status line included
        self.body = b""            # stored body (empty when counted only)
        self.body_len = 0          # body bytes received (stored or counted)
        self.chunked = False
        self.complete = True       # False: the connection ended mid-body
        self.reset = False         # ... by a TCP reset

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def has_header(self, name):
        return self.header(name) is not None

    def json(self):
        return json.loads(self.body.decode())

    def wants_close(self):
        conn = ",".join(self.header_all("connection")).lower()
        return "close" in [t.strip() for t in conn.split(",")]

    def __repr__(self):
        return (f"<Response {self.status} {self.reason!r} len={self.body_len} "
                f"complete={self.complete} headers={self.headers!r}>")


class H1Conn:
    """One client TCP connection to 127.0.0.1:port."""

    def __init__(self, port, timeout=10.0, host=HOST):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.was_reset = False
        self.timeout = timeout

    # -- plumbing ---------------------------------------------------------

    def fileno(self):
        return self.sock.fileno()

    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        self.sock.sendall(data)

    def send_ignoring_reset(self, data):
        """sendall, but a peer that already closed is not an error (returns False)."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, deadline, size=RECV_SIZE):
        """Read once into buf. False on EOF/RST; raises TimeoutError at deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for data from the proxy")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(size)
        except socket.timeout:
            raise TimeoutError("timed out waiting for data from the proxy") from None
        except ConnectionResetError:
            self.eof = True
            self.was_reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _read_line(self, deadline, limit=1 << 20):
        for _ in range(1 << 20):
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = self._take(i + 2)
                return line[:-2]
            if len(self.buf) > limit:
                raise ValueError("line too long")
            if not self._fill(deadline):
                return None
        raise ValueError("unreachable")

    def read_head(self, timeout=None):
        """Read one response head: (raw head bytes) or raise NoResponse."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        for _ in range(1 << 20):
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                return self._take(i + 4)
            if len(self.buf) > (1 << 20):
                raise ValueError("response head too long")
            if not self._fill(deadline):
                raise NoResponse(f"connection closed (reset={self.was_reset}) before a "
                                 f"response head; got {bytes(self.buf[:200])!r}")
        raise ValueError("unreachable")

    # -- responses --------------------------------------------------------

    def read_response(self, timeout=None, method="GET", store=True, allow_1xx=False):
        """Read one complete response (1xx skipped unless allow_1xx).

        store=False counts the body into body_len without keeping it. A
        connection that ends mid-body gives complete=False (reset=True for RST)."""
        t = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + t
        for _ in range(16):
            r = self._parse_head(self.read_head(max(0.0, deadline - time.monotonic())))
            if 100 <= r.status < 200 and not allow_1xx and r.status != 101:
                continue
            break
        else:
            raise ValueError("too many 1xx responses")
        if (method.upper() == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200):
            return r
        te = ",".join(r.header_all("transfer-encoding")).lower()
        cls = r.header_all("content-length")
        if "chunked" in te:
            r.chunked = True
            self._read_chunked(r, deadline, store)
        elif cls:
            self._read_length(r, int(cls[0]), deadline, store)
        else:
            self._read_to_eof(r, deadline, store)
        return r

    @staticmethod
    def _parse_head(head):
        r = Response()
        r.head = head
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError(f"bad status line {lines[0]!r}")
        r.version = parts[0]
        r.status = int(parts[1])
        r.reason = parts[2] if len(parts) > 2 else ""
        for ln in lines[1:]:
            name, sep, value = ln.decode("latin-1").partition(":")
            if not sep:
                raise ValueError(f"bad header line {ln!r}")
            r.headers.append((name.strip().lower(), value.strip()))
        return r

    def _consume(self, r, n, store):
        data = self._take(n)
        r.body_len += len(data)
        if store:
            r.body += data

    def _read_length(self, r, n, deadline, store):
        parts = []
        left = n
        for _ in range(1 << 30):
            if left <= 0:
                break
            if not self.buf and not self._fill(deadline):
                r.complete = False
                r.reset = self.was_reset
                break
            take = min(left, len(self.buf))
            data = self._take(take)
            r.body_len += take
            if store:
                parts.append(data)
            left -= take
        if store:
            r.body = b"".join(parts)

    def _read_to_eof(self, r, deadline, store):
        parts = []
        for _ in range(1 << 30):
            if self.buf:
                data = self._take(len(self.buf))
                r.body_len += len(data)
                if store:
                    parts.append(data)
            if not self._fill(deadline):
                break
        r.reset = self.was_reset
        r.complete = not self.was_reset
        if store:
            r.body = b"".join(parts)

    def _read_chunked(self, r, deadline, store):
        parts = []
        for _ in range(1 << 30):
            line = self._read_line(deadline)
            if line is None:
                r.complete, r.reset = False, self.was_reset
                break
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                for _ in range(1024):  # trailers, then the empty line
                    t = self._read_line(deadline)
                    if t is None:
                        r.complete, r.reset = False, self.was_reset
                        break
                    if t == b"":
                        break
                    name, _, value = t.decode("latin-1").partition(":")
                    r.headers.append((name.strip().lower(), value.strip()))
                break
            left = size
            for _ in range(1 << 30):
                if left <= 0:
                    break
                if not self.buf and not self._fill(deadline):
                    break
                take = min(left, len(self.buf))
                data = self._take(take)
                r.body_len += take
                if store:
                    parts.append(data)
                left -= take
            if left > 0:
                r.complete, r.reset = False, self.was_reset
                break
            crlf = self._read_line(deadline)
            if crlf != b"":
                r.complete, r.reset = False, self.was_reset
                break
        if store:
            r.body = b"".join(parts)

    def wait_closed(self, timeout=3.0):
        """True if the peer closes (EOF or RST) within timeout; data that
        arrives meanwhile is kept in self.buf (check it if it matters)."""
        deadline = time.monotonic() + timeout
        for _ in range(1 << 20):
            try:
                if not self._fill(deadline):
                    return True
            except TimeoutError:
                return False
            except OSError:
                return True
        return False


def request_bytes(method="GET", path="/", host="test.local", headers=(), body=b"",
                  version="HTTP/1.1"):
    """A request head (plus body, with Content-Length when body or method wants one)."""
    lines = [f"{method} {path} {version}", f"Host: {host}"] if host is not None else \
        [f"{method} {path} {version}"]
    names = {k.lower() for k, _ in headers}
    for k, v in headers:
        lines.append(f"{k}: {v}")
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def exchange(port, raw, timeout=10.0, method="GET"):
    """Send raw bytes on a fresh connection and read one response."""
    with H1Conn(port, timeout=timeout) as c:
        c.send(raw)
        return c.read_response(timeout=timeout, method=method)


def get(port, path="/", host="test.local", headers=(), timeout=10.0, method="GET", body=b""):
    return exchange(port, request_bytes(method, path, host, headers, body), timeout, method)


def chunked(parts, trailers=()):
    """Encode byte strings as a chunked body."""
    out = b""
    for p in parts:
        if p:
            out += b"%x\r\n" % len(p) + p + b"\r\n"
    out += b"0\r\n"
    for k, v in trailers:
        out += f"{k}: {v}\r\n".encode()
    return out + b"\r\n"


def rss_kib(pid):
    """VmRSS of pid in KiB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def small_quarantine_env():
    """ASan keeps freed memory in a quarantine (256 MiB by default), which
    would look like growth; bound it so VmRSS reflects live memory."""
    base = os.environ.get("ASAN_OPTIONS", CHILD_ENV_DEFAULTS["ASAN_OPTIONS"])
    return {"ASAN_OPTIONS": base + ":quarantine_size_mb=4:thread_local_quarantine_size_kb=64"}


class RssSampler:
    def __init__(self, pid, interval=0.05, max_seconds=120):
        self.pid = pid
        self.interval = interval
        self.max_samples = int(max_seconds / interval)
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        for _ in range(self.max_samples):
            v = rss_kib(self.pid)
            if v:
                self.peak = max(self.peak, v)
                self.samples += 1
            if self._stop.wait(self.interval):
                break

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)


def tcp_peers_of_port(port):
    """Set of the local ports of 127.0.0.1 TCP sockets (any state) whose
    remote port is `port`: how many connections were opened to it."""
    return {c[0] for c in tcp_conns(remote_port=port, state=None)}


def uniq(prefix="r"):
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns()}"


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------

def _indent(text, n):
    import textwrap
    text = textwrap.dedent(text).strip("\n")
    return textwrap.indent(text, " " * n) if text else ""


def simple_config(port, backend_addr, listener_extra="", service_extra="", top_extra="",
                  timeout="10s", drain_timeout="5s", access_log=True):
    """One HTTP listener on 127.0.0.1:port, every request to one backend
    service `svc` with one endpoint. *_extra are YAML lines (dedented) added to
    the listener item, the backend service item, and the top level."""
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    protocol: HTTP
    url_map: main
{_indent(listener_extra, 4)}
access_log:
  enabled: {"true" if access_log else "false"}
  path: "-"
  format: json
drain_timeout: {drain_timeout}
{_indent(top_extra, 0)}
url_maps:
  - name: main
    default_service: svc
backend_services:
  - name: svc
    protocol: HTTP
    timeout: {timeout}
    endpoints:
      - {{address: "{backend_addr}"}}
{_indent(service_extra, 4)}
"""


def start_simple(proxy, testbed, tb_name="tb1", env=None, **kw):
    """A testbed plus a proxy in front of it: (proxy, listen_port, testbed)."""
    tb = testbed(name=tb_name)
    port = free_port()
    px = proxy(simple_config(port, tb.addr, **kw), workers=1, expect_ports=[port], env=env)
    return px, port, tb

