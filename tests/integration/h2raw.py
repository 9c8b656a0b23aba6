"""
Raw HTTP/2 frames for the hardening and flood tests: exact bytes, no state
machine on our side (python3-h2 would refuse to send most of what these
tests need). Every wait is bounded in time.

    c = RawH2(port)                      # preface + empty SETTINGS sent
    c.send(settings() + ping(b"12345678") * 1000)
    frames = c.read_until_closed(5)      # [(type, flags, stream_id, payload)]
    goaways(frames)                      # [(error_code, last_stream_id, debug)]

    proc_cpu(pid), proc_rss(pid)         # CPU seconds (utime + stime), RSS bytes
    conns_to(port)                       # established 127.0.0.1 TCP connections to port
"""

import os
import socket
import struct
import threading
import time

HOST = "127.0.0.1"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM = range(12)

SETTINGS_INITIAL_WINDOW_SIZE = 0x4


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid & 0x7FFFFFFF) + payload


def settings(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(data=b"12345678", ack=False):
    return frame(PING, ACK if ack else 0, 0, data)


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def priority(sid, dep=0, weight=16):
    return frame(PRIORITY, 0, sid, struct.pack(">IB", dep, weight))


def rst_stream(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def data(sid, payload=b"", end=False):
    return frame(DATA, END_STREAM if end else 0, sid, payload)


# -- HPACK, by hand: literals without Huffman, static and dynamic indices ------

def _int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _str(s):
    s = s.encode("latin-1") if isinstance(s, str) else s
    return _int(len(s), 7) + s


def lit(name, value, index=False):
    """A literal field with a new name; index=True adds it to the dynamic table."""
    return (b"\x40" if index else b"\x00") + _str(name) + _str(value)


def indexed(i):
    """A field by its index (static 1-61, dynamic from 62, newest first)."""
    return _int(i, 7, 0x80)


def request_block(method="GET", path="/", authority="h.test", extra=b""):
    """A request head as an HPACK block: literals for the pseudo-headers (so
    any bytes can be sent), then `extra` (already encoded)."""
    return (lit(":method", method) + lit(":scheme", "http") + lit(":path", path)
            + lit(":authority", authority) + extra)


def headers(sid, block, end_stream=True, end_headers=True):
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return frame(HEADERS, flags, sid, block)


def continuation(sid, block, end_headers=False):
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, sid, block)


# -- parsing what the server sent ---------------------------------------------

def parse_frames(buf):
    """Whole frames in buf: [(type, flags, stream_id, payload)]."""
    out, off = [], 0
    for _ in range(len(buf) // 9 + 1):
        if len(buf) - off < 9:
            break
        n = int.from_bytes(buf[off:off + 3], "big")
        if len(buf) - off < 9 + n:
            break
        ftype, flags = buf[off + 3], buf[off + 4]
        sid = int.from_bytes(buf[off + 5:off + 9], "big") & 0x7FFFFFFF
        out.append((ftype, flags, sid, bytes(buf[off + 9:off + 9 + n])))
        off += 9 + n
    return out


def goaways(frames):
    """[(error_code, last_stream_id, debug)] of every GOAWAY, in order."""
    return [(int.from_bytes(p[4:8], "big"), int.from_bytes(p[0:4], "big") & 0x7FFFFFFF, p[8:])
            for t, _, _, p in frames if t == GOAWAY]


def resets(frames):
    """{stream_id: error_code} of every RST_STREAM."""
    return {sid: int.from_bytes(p[:4], "big") for t, _, sid, p in frames if t == RST_STREAM}


class RawH2:
    """A client socket speaking raw frames. `preface`: send the client
    preface and an empty SETTINGS first."""

    def __init__(self, port, preface=True, timeout=5.0, client_settings=()):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False
        self.send_failed = False
        if preface:
            self.send(PREFACE + settings(client_settings))

    def send(self, data_bytes):
        """Send, ignoring a server that closed or reset meanwhile. False then."""
        try:
            self.sock.sendall(data_bytes)
            return True
        except OSError:
            self.send_failed = True
            return False

    def send_in_background(self, chunks):
        """Send every chunk from a thread (the server may stop reading: our
        reads must go on meanwhile). Returns the thread."""
        def run():
            for ch in chunks:
                if self.closed or not self.send(ch):
                    return
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def read_some(self, timeout=0.2):
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            got = self.sock.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            return True
        except OSError:
            self.closed = True
            return False
        if not got:
            self.closed = True
            return False
        self.buf += got
        return True

    def read_until(self, pred, timeout=5.0):
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            if pred(self.frames()) or self.closed:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.read_some(min(left, 0.2))
        return self.frames()

    def read_until_closed(self, timeout=5.0):
        return self.read_until(lambda f: False, timeout)

    def frames(self):
        return parse_frames(self.buf)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- the proxy process ---------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """CPU seconds the process used so far (utime + stime, all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def proc_rss(pid):
    """Resident set size in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def conns_to(port):
    """Established IPv4 TCP connections to 127.0.0.1:port, from /proc/net/tcp
    (the proxy's upstream sockets when port is a backend's)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            raddr, rport = cols[2].split(":")
            if raddr == "0100007F" and int(rport, 16) == port and cols[3] == "01":
                n += 1
    return n
