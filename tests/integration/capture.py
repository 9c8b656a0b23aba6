"""
A capture backend for the smuggling tests: a raw TCP HTTP/1.1 server on
127.0.0.1 that records the exact bytes of every connection it accepts and
parses them itself, strictly (RFC 9112), into requests. Standard library
only; threads; every loop is bounded in count and in time.

    cap = CaptureBackend().start()          # listens on a free port
    cap.addr                                # "127.0.0.1:PORT", for a proxy config
    ... traffic through the proxy ...
    reqs = cap.wait_requests(2, timeout=5)  # [CapturedRequest], in arrival order
    reqs[0].method, .target, .version, .headers, .host, .body, .raw
    cap.conns                               # [CapturedConn]: .raw (every byte), .requests,
                                            #   .error (strict parse failure), .partial, .tunnel
    cap.settle()                            # wait (bounded) until every byte sent was read
    cap.describe()                          # text for assertion messages
    cap.stop()

Each complete request is answered at once with a small fixed response:

    HTTP/1.1 200 OK
    content-length: N
    x-capture-seq: <request number, 1-based, over the whole backend>
    x-capture-conn: <connection number>

    captured <seq>            (no body for HEAD, 1xx, 204, 304)

and the connection stays open (keep-alive). cap.respond(match, action)
makes the backend answer a request differently: match(req) -> bool, and
action is a Reply (status, headers, body, close) or CLOSE (close without
answering); a Reply's delay (s, at most 10) holds the answer back. A
request with `Upgrade:` is answered 101 by default (a Reply
with status 101 by a rule too): after it the connection is a tunnel, and
the bytes that follow are kept in conn.tunnel, never parsed as requests.

Strict parsing (anything else is a parse error: conn.error is set, the
backend answers 400 with `x-capture-error: parse` and closes):
  - request line: token SP request-target SP HTTP/1.x CRLF, single spaces,
    the target visible ASCII only (0x21-0x7e);
  - fields: token ":" OWS value OWS CRLF; no whitespace before the colon, no
    obs-fold, no CTL other than HTAB in values, every line ends in CRLF;
  - framing (RFC 9112 6): Transfer-Encoding must be exactly "chunked" (once)
    and may not come with Content-Length; Content-Length is 1*DIGIT, at most
    once; chunk sizes are 1*HEXDIG (at most 16 digits), chunk extensions
    follow the grammar, every chunk ends in CRLF, trailers are fields.
  - at most MAX_HEAD bytes of head and MAX_FIELDS fields per request.
"""

import socket
import threading
import time

HOST = "127.0.0.1"
MAX_HEAD = 1 << 20          # bytes of one request head
MAX_FIELDS = 20000          # field lines of one request (to record what a proxy forwards)
MAX_BODY = 16 << 20         # bytes of one request body
MAX_CONN_BYTES = 64 << 20   # bytes recorded per connection
LIFETIME = 300.0            # s: a backend stops by itself after this long
POLL = 0.05                 # s: socket timeouts, so stop() is noticed quickly

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                  b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
HEXDIG = frozenset(b"0123456789abcdefABCDEF")
DIGIT = frozenset(b"0123456789")


class ParseError(Exception):
    pass


class Reply:
    """A response the backend sends instead of its default one."""

    def __init__(self, status=200, headers=(), body=b"", close=False, raw=None, delay=0.0):
        self.status = status
        self.headers = list(headers)
        self.body = body
        self.close = close
        self.raw = raw      # exact bytes to send instead (then close decides)
        self.delay = min(float(delay), 10.0)  # s to wait before answering (bounded)


CLOSE = "close"             # action: close the connection without an answer


class CapturedRequest:
    def __init__(self, conn_id, seq):
        self.conn_id = conn_id
        self.seq = seq
        self.method = ""
        self.target = b""       # bytes, exactly as received
        self.version = ""
        self.headers = []       # [(name lower-cased str, value str latin-1)] in order
        self.body = b""
        self.chunked = False
        self.trailers = []
        self.raw = b""          # the exact bytes of this request (head and body)

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def header(self, name, default=None):
        v = self.header_all(name)
        return v[0] if v else default

    @property
    def host(self):
        """The Host value when there is exactly one Host field, else None
        (absent) or a list (several)."""
        v = self.header_all("host")
        if not v:
            return None
        return v[0] if len(v) == 1 else v

    @property
    def target_str(self):
        return self.target.decode("latin-1")

    def __repr__(self):
        return (f"<Req #{self.seq} c{self.conn_id} {self.method} {self.target!r} "
                f"{self.version} host={self.host!r} body={len(self.body)}B>")


class CapturedConn:
    def __init__(self, cid, peer):
        self.id = cid
        self.peer = peer
        self.raw = bytearray()      # every byte received, in order
        self.requests = []
        self.error = None           # str: the strict parser's complaint
        self.partial = b""          # bytes of an unfinished request when it closed
        self.tunnel = bytearray()   # bytes after a 101
        self.upgraded = False
        self.closed = False
        self.closed_by_us = False
        self.busy = False

    def __repr__(self):
        return (f"<Conn c{self.id} raw={len(self.raw)}B reqs={len(self.requests)} "
                f"err={self.error!r} partial={len(self.partial)}B tunnel={len(self.tunnel)}B "
                f"closed={self.closed}>")


# ---------------------------------------------------------------------------
# strict incremental parsing of one connection's bytes
# ---------------------------------------------------------------------------

def _split_lines_head(head):
    """head: bytes up to and including CRLFCRLF. Lines without CRLF."""
    assert head.endswith(b"\r\n\r\n")
    body = head[:-4]
    lines = body.split(b"\r\n")
    for ln in lines:
        if b"\n" in ln or b"\r" in ln:
            raise ParseError(f"bare CR or LF in head line {ln[:80]!r}")
    return lines


def _parse_field(line):
    if not line:
        raise ParseError("empty field line")
    if line[0] in b" \t":
        raise ParseError(f"obs-fold or leading whitespace: {line[:80]!r}")
    i = line.find(b":")
    if i <= 0:
        raise ParseError(f"field line without a name and colon: {line[:80]!r}")
    name = line[:i]
    if any(b not in TCHAR for b in name):
        raise ParseError(f"field name is not a token: {name[:80]!r}")
    value = line[i + 1:].strip(b" \t")
    for b in value:
        if b < 0x20 and b != 0x09 or b == 0x7F:
            raise ParseError(f"control byte {b:#x} in the value of {name!r}")
    return name.decode("latin-1").lower(), value.decode("latin-1")


def _parse_request_line(line):
    parts = line.split(b" ")
    if len(parts) != 3:
        raise ParseError(f"request line is not METHOD SP TARGET SP VERSION: {line[:120]!r}")
    method, target, version = parts
    if not method or any(b not in TCHAR for b in method):
        raise ParseError(f"method is not a token: {method[:40]!r}")
    if not target or any(b < 0x21 or b > 0x7E for b in target):
        raise ParseError(f"target has a byte outside visible ASCII: {target[:120]!r}")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise ParseError(f"bad version {version[:20]!r}")
    return method.decode(), target, version.decode()


def _framing(req):
    te = req.header_all("transfer-encoding")
    cl = req.header_all("content-length")
    if te:
        if cl:
            raise ParseError("both Transfer-Encoding and Content-Length")
        if len(te) != 1 or te[0].lower() != "chunked":
            raise ParseError(f"Transfer-Encoding other than one 'chunked': {te!r}")
        return "chunked", None
    if cl:
        if len(cl) != 1:
            raise ParseError(f"several Content-Length fields: {cl!r}")
        v = cl[0]
        if not v or any(ord(ch) not in DIGIT for ch in v) or len(v) > 18:
            raise ParseError(f"bad Content-Length {v!r}")
        n = int(v)
        if n > MAX_BODY:
            raise ParseError(f"Content-Length {n} above the capture's limit")
        return "length", n
    return "length", 0


def _parse_chunk_ext(ext):
    """ext: the bytes after the chunk size, before CRLF (RFC 9112 7.1.1)."""
    i = 0
    n = len(ext)
    for _ in range(n + 1):
        if i >= n:
            return
        while i < n and ext[i] in b" \t":          # BWS
            i += 1
        if i >= n or ext[i] != ord(";"):
            raise ParseError(f"bad chunk extension {ext[:80]!r}")
        i += 1
        while i < n and ext[i] in b" \t":
            i += 1
        j = i
        while j < n and ext[j] in TCHAR:
            j += 1
        if j == i:
            raise ParseError(f"chunk extension without a name {ext[:80]!r}")
        i = j
        while i < n and ext[i] in b" \t":
            i += 1
        if i < n and ext[i] == ord("="):
            i += 1
            while i < n and ext[i] in b" \t":
                i += 1
            if i < n and ext[i] == ord('"'):
                i += 1
                for _ in range(n):
                    if i >= n:
                        raise ParseError("unterminated quoted chunk extension")
                    c = ext[i]
                    if c == ord('"'):
                        i += 1
                        break
                    if c == ord("\\"):
                        i += 2
                        continue
                    if c < 0x20 and c != 0x09 or c == 0x7F:
                        raise ParseError("control byte in a chunk extension")
                    i += 1
            else:
                j = i
                while j < n and ext[j] in TCHAR:
                    j += 1
                if j == i:
                    raise ParseError(f"chunk extension without a value {ext[:80]!r}")
                i = j
    raise ParseError("chunk extension parse did not end")


class _ConnParser:
    """Feeds on a connection's bytes; yields complete requests."""

    def __init__(self, conn, next_seq):
        self.conn = conn
        self.buf = bytearray()
        self.next_seq = next_seq    # callable -> int
        self.req = None
        self.state = "head"         # head | body | chunk-size | chunk-data | trailers
        self.left = 0
        self.body = bytearray()
        self.consumed = bytearray()

    def feed(self, data):
        self.buf += data

    def next_request(self):
        """The next complete request from the bytes fed so far, or None."""
        for _ in range(1 << 20):
            r = self._step()
            if r is None:
                return None
            if r is not True:
                return r
        return None

    def pending(self):
        return bytes(self.consumed) + bytes(self.buf)

    def _take(self, n):
        d = bytes(self.buf[:n])
        del self.buf[:n]
        self.consumed += d
        return d

    def _line(self, limit=1 << 16):
        i = self.buf.find(b"\r\n")
        if i < 0:
            if b"\n" in self.buf:
                raise ParseError(f"bare LF in {bytes(self.buf[:80])!r}")
            if len(self.buf) > limit:
                raise ParseError("line too long")
            return None
        line = self._take(i + 2)[:-2]
        if b"\n" in line or b"\r" in line:
            raise ParseError(f"bare CR or LF in {line[:80]!r}")
        return line

    def _done(self):
        req = self.req
        req.body = bytes(self.body)
        req.raw = bytes(self.consumed)
        self.consumed = bytearray()
        self.req = None
        self.body = bytearray()
        self.state = "head"
        return req

    def _step(self):
        """One parse step: a CapturedRequest, True (progress), None (need bytes)."""
        if self.state == "head":
            if not self.buf:
                return None
            if self.buf[:2] == b"\r\n":
                raise ParseError("empty line before a request line")
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                if len(self.buf) > MAX_HEAD:
                    raise ParseError("request head too long")
                j = self.buf.find(b"\n\n")
                if j >= 0:
                    raise ParseError("head ended by bare LFs")
                return None
            if i + 4 > MAX_HEAD:
                raise ParseError("request head too long")
            head = self._take(i + 4)
            lines = _split_lines_head(head)
            req = CapturedRequest(self.conn.id, 0)
            req.method, req.target, req.version = _parse_request_line(lines[0])
            if len(lines) - 1 > MAX_FIELDS:
                raise ParseError("too many fields")
            req.headers = [_parse_field(ln) for ln in lines[1:]]
            kind, n = _framing(req)
            self.req = req
            if kind == "chunked":
                req.chunked = True
                self.state = "chunk-size"
                return True
            if n:
                self.left = n
                self.state = "body"
                return True
            return self._finish()
        if self.state == "body":
            if not self.buf:
                return None
            take = min(self.left, len(self.buf))
            self.body += self._take(take)
            self.left -= take
            if self.left == 0:
                return self._finish()
            return True
        if self.state == "chunk-size":
            line = self._line()
            if line is None:
                return None
            j = 0
            while j < len(line) and line[j] in HEXDIG:
                j += 1
            if j == 0:
                raise ParseError(f"bad chunk size line {line[:80]!r}")
            if j > 16:
                raise ParseError(f"chunk size too long {line[:80]!r}")
            _parse_chunk_ext(line[j:])
            size = int(line[:j], 16)
            if len(self.body) + size > MAX_BODY:
                raise ParseError("chunked body above the capture's limit")
            if size == 0:
                self.state = "trailers"
                return True
            self.left = size
            self.state = "chunk-data"
            return True
        if self.state == "chunk-data":
            if self.left > 0:
                if not self.buf:
                    return None
                take = min(self.left, len(self.buf))
                self.body += self._take(take)
                self.left -= take
                return True
            if len(self.buf) < 2:
                return None
            if self.buf[:2] != b"\r\n":
                raise ParseError(f"chunk data not followed by CRLF: {bytes(self.buf[:2])!r}")
            self._take(2)
            self.state = "chunk-size"
            return True
        if self.state == "trailers":
            line = self._line()
            if line is None:
                return None
            if line == b"":
                return self._finish()
            if len(self.req.trailers) > 1000:
                raise ParseError("too many trailer fields")
            self.req.trailers.append(_parse_field(line))
            return True
        raise ParseError(f"bad parser state {self.state}")

    def _finish(self):
        self.req.seq = self.next_seq()
        return self._done()


def _unread_at(port):
    """True if the 127.0.0.1 listener on port has connections waiting to be
    accepted, or an accepted connection has bytes not read yet (rx_queue of
    its sockets in /proc/net/tcp)."""
    try:
        with open("/proc/net/tcp") as f:
            lines = f.readlines()[1:]
    except OSError:
        return False
    for line in lines[:100000]:
        cols = line.split()
        if len(cols) < 5:
            continue
        laddr, lport = cols[1].split(":")
        if laddr != "0100007F" or int(lport, 16) != port:
            continue
        if cols[3] not in ("01", "0A"):     # ESTABLISHED, LISTEN
            continue
        if int(cols[4].split(":")[1], 16):
            return True
    return False


# ---------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------

class CaptureBackend:
    def __init__(self, port=None, name="capture"):
        self.name = name
        self.port = port
        self.addr = None
        self.conns = []
        self.rules = []             # [(match, action)]
        self.log = []               # [str] notes (errors, closes), for failure messages
        self._lock = threading.Lock()
        self._seq = 0
        self._stop = threading.Event()
        self._threads = []
        self._lsock = None
        self._started = None

    # -- setup --------------------------------------------------------------

    def start(self):
        from conftest import free_port   # reserved-port helper of the harness
        last = None
        for _ in range(3):
            port = self.port or free_port()
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((HOST, port))
                s.listen(128)
            except OSError as e:
                s.close()
                last = e
                if self.port:
                    break
                continue
            s.settimeout(POLL)
            self._lsock = s
            self.port = port
            self.addr = f"{HOST}:{port}"
            self._started = time.monotonic()
            t = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept",
                                 daemon=True)
            t.start()
            self._threads.append(t)
            return self
        raise RuntimeError(f"capture backend could not listen: {last}")

    def respond(self, match, action):
        """Answer requests for which match(req) is true with action (a Reply,
        or CLOSE). The first matching rule wins."""
        with self._lock:
            self.rules.append((match, action))

    def stop(self, timeout=5.0):
        self._stop.set()
        if self._lsock is not None:
            try:
                self._lsock.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- reading the capture ----------------------------------------------------

    def requests(self):
        """Every complete request, in the order they were completed."""
        with self._lock:
            out = [r for c in self.conns for r in c.requests]
        return sorted(out, key=lambda r: r.seq)

    def raw_bytes(self):
        with self._lock:
            return sum(len(c.raw) for c in self.conns)

    def errors(self):
        with self._lock:
            return [(c.id, c.error) for c in self.conns if c.error]

    def wait_requests(self, n, timeout=5.0):
        """Wait (polling, bounded) until at least n requests were captured;
        returns them all (possibly fewer than n at the timeout)."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.01) + 2):
            reqs = self.requests()
            if len(reqs) >= n or time.monotonic() >= deadline:
                return reqs
            time.sleep(0.01)
        return self.requests()

    def quiet(self):
        """True when no connection thread is working on bytes and the kernel
        holds no unread bytes for us: no connection waits in the accept queue
        and no accepted one has unread bytes (from /proc/net/tcp)."""
        with self._lock:
            busy = any(c.busy for c in self.conns)
        return not busy and not _unread_at(self.port)

    def settle(self, timeout=3.0):
        """Wait (bounded) until quiet() holds twice in a row, 20 ms apart."""
        deadline = time.monotonic() + timeout
        streak = 0
        for _ in range(int(timeout / 0.02) + 2):
            streak = streak + 1 if self.quiet() else 0
            if streak >= 2 or time.monotonic() >= deadline:
                return streak >= 2
            time.sleep(0.02)
        return False

    def describe(self):
        with self._lock:
            lines = [f"capture {self.addr}: {len(self.conns)} connection(s)"]
            for c in self.conns:
                lines.append(f"  {c!r}")
                for r in c.requests:
                    lines.append(f"    {r!r}")
                lines.append(f"    raw: {bytes(c.raw[:600])!r}")
            return "\n".join(lines)

    # -- threads ------------------------------------------------------------------

    def _next_seq(self):
        with self._lock:
            self._seq += 1
            return self._seq

    def _alive(self):
        return not self._stop.is_set() and time.monotonic() - self._started < LIFETIME

    def _accept_loop(self):
        for _ in range(int(LIFETIME / POLL) + 10):
            if not self._alive():
                break
            try:
                s, peer = self._lsock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                break
            with self._lock:
                conn = CapturedConn(len(self.conns) + 1, peer)
                self.conns.append(conn)
            t = threading.Thread(target=self._conn_loop, args=(s, conn),
                                 name=f"{self.name}-c{conn.id}", daemon=True)
            with self._lock:
                self._threads.append(t)
            t.start()

    def _action_for(self, req):
        with self._lock:
            rules = list(self.rules)
        for match, action in rules:
            try:
                if match(req):
                    return action
            except Exception as e:          # a broken rule must not kill the thread
                self.log.append(f"rule error {e!r}")
        if req.header("upgrade") is not None:
            return Reply(101, [("Connection", "Upgrade"),
                               ("Upgrade", req.header("upgrade"))])
        return None

    @staticmethod
    def _response_bytes(req, reply):
        if reply is None:
            reply = Reply()
        if reply.raw is not None:
            return reply.raw
        body = reply.body
        if reply.status == 200 and not body and not reply.headers:
            body = f"captured {req.seq}\n".encode()
        lines = [f"HTTP/1.1 {reply.status} {'OK' if reply.status == 200 else 'Capture'}"]
        lines += [f"{k}: {v}" for k, v in reply.headers]
        lines.append(f"x-capture-seq: {req.seq}")
        lines.append(f"x-capture-conn: {req.conn_id}")
        if reply.status != 101 and not (100 <= reply.status < 200) and reply.status not in (204, 304):
            lines.append(f"content-length: {len(body)}")
        if reply.close:
            lines.append("connection: close")
        no_body = reply.status < 200 or reply.status in (204, 304) or req.method == "HEAD"
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if no_body else body)

    def _conn_loop(self, s, conn):
        parser = _ConnParser(conn, self._next_seq)
        s.settimeout(POLL)
        close = False
        try:
            for _ in range(int(LIFETIME / POLL) + 10):
                if not self._alive() or close:
                    break
                try:
                    data = s.recv(1 << 16)
                except (socket.timeout, TimeoutError):
                    continue
                except OSError:
                    break
                conn.busy = True
                try:
                    if not data:
                        break
                    if len(conn.raw) + len(data) > MAX_CONN_BYTES:
                        conn.error = "connection sent more than the capture keeps"
                        break
                    conn.raw += data
                    if conn.upgraded:
                        conn.tunnel += data
                        continue
                    if conn.error:
                        continue
                    parser.feed(data)
                    for _ in range(1 << 16):
                        try:
                            req = parser.next_request()
                        except ParseError as e:
                            conn.error = str(e)
                            break
                        if req is None:
                            break
                        with self._lock:
                            conn.requests.append(req)
                        action = self._action_for(req)
                        if action == CLOSE:
                            close = True
                            break
                        if isinstance(action, Reply) and action.delay > 0:
                            time.sleep(action.delay)
                        try:
                            s.sendall(self._response_bytes(req, action))
                        except OSError:
                            close = True
                            break
                        if isinstance(action, Reply) and action.close:
                            close = True
                            break
                        if isinstance(action, Reply) and action.status == 101:
                            # what follows the upgrade request is the tunnel
                            conn.upgraded = True
                            conn.tunnel += parser.pending()
                            break
                    if conn.error and not close:
                        try:
                            s.sendall(b"HTTP/1.1 400 Capture Parse Error\r\n"
                                      b"x-capture-error: parse\r\n"
                                      b"content-length: 0\r\nconnection: close\r\n\r\n")
                        except OSError:
                            pass
                        close = True
                finally:
                    conn.busy = False
        finally:
            if not conn.upgraded:
                conn.partial = parser.pending()
            conn.closed_by_us = close or not self._alive()
            conn.closed = True
            try:
                s.close()
            except OSError:
                pass
