"""
Raw HTTP/2 client for the integration tests, on python3-h2 over a plain (or
TLS) socket. Every wait is bounded in time; nothing retries.

    c = H2Conn(port)                       # preface + SETTINGS, waits for the server's
    sid = c.request("GET", "/x", headers=[("x-a", "1")])
    r = c.wait_stream(sid)                 # Stream: status, headers, body, reset_code
    r.json()["path"]; c.close()

Header validation and normalization are off on the sending side, so tests can
send malformed requests (uppercase names, connection-specific fields, missing
pseudo-headers). Each stream records what the server did with it: a response
(status, headers, body, trailers, ended) or an RST_STREAM (reset_code). A
GOAWAY is kept in `goaway` as (error_code, last_stream_id), in order, and
`closed` turns True once the server closed the socket.
"""

import collections
import json
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

HOST = "127.0.0.1"

__all__ = ["H2Conn", "Stream", "GoawayReceived", "ErrorCodes", "SettingCodes", "proxy_config", "HOST"]


GoawayReceived = collections.namedtuple("GoawayReceived", "error_code last_stream_id debug")


class Stream:
    def __init__(self, sid, store_body=True):
        self.id = sid
        self.status = None
        self.headers = []       # [(name, value)] as str, response head
        self.trailers = []
        self.body = bytearray()
        self.body_len = 0
        self.data_frames = 0
        self.store_body = store_body
        self.ended = False      # END_STREAM received
        self.reset_code = None  # RST_STREAM from the server (an int)
        self.informational = []

    @property
    def done(self):
        return self.ended or self.reset_code is not None

    def header(self, name, default=None):
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def json(self):
        return json.loads(bytes(self.body).decode())

    def __repr__(self):
        rc = None if self.reset_code is None else _code_name(self.reset_code)
        return (f"<Stream {self.id} status={self.status} body={self.body_len}B "
                f"ended={self.ended} reset={rc}>")


def _code_name(code):
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


def _s(b):
    return b.decode("latin-1") if isinstance(b, (bytes, bytearray)) else b


class H2Conn:
    """One client HTTP/2 connection.

    settings: local SETTINGS to announce (dict SettingCodes -> int).
    conn_window: extra connection-level window to grant right away (bytes).
    auto_ack: return received DATA to the server's flow-control windows.
    tls: an ssl.SSLContext (ALPN h2 is set on it) or None for h2c prior knowledge.
    """

    def __init__(self, port, timeout=10.0, settings=None, conn_window=0, auto_ack=True,
                 tls=None, server_hostname=None, store_body=True, handshake=True):
        self.port = port
        self.timeout = timeout
        self.auto_ack = auto_ack
        self.store_body = store_body
        self.streams = {}
        self.goaway = []            # [(error_code, last_stream_id)]
        self.closed = False
        self.server_settings = {}   # the server's SETTINGS, as received
        self.window_updates = []    # (stream_id, increment) received
        self.events = []            # every h2 event (and GoawayReceived), in order
        self._rbuf = bytearray()
        self.corked = False         # True: frames queue up until uncork()
        raw = socket.create_connection((HOST, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            raw = tls.wrap_socket(raw, server_hostname=server_hostname or "localhost")
            if raw.selected_alpn_protocol() != "h2":
                proto = raw.selected_alpn_protocol()
                raw.close()
                raise AssertionError(f"ALPN selected {proto!r}, not h2")
        self.sock = raw
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False,
                                        validate_inbound_headers=True)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
                            SettingCodes.ENABLE_PUSH: 0,
                            **(settings or {})})
        self.conn.initiate_connection()
        if conn_window:
            self.conn.increment_flow_control_window(conn_window)
        self.flush()
        if handshake:
            ok = self.pump_until(lambda: bool(self.server_settings), timeout)
            if not ok:
                raise AssertionError("no SETTINGS from the server within "
                                     f"{timeout}s (closed={self.closed})")

    # -- plumbing ---------------------------------------------------------

    def flush(self):
        if self.corked:
            return
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                self.closed = True

    def cork(self):
        """Queue frames instead of writing them (then uncork() sends them in
        one write, so the server reads them together)."""
        self.corked = True

    def uncork(self):
        self.corked = False
        self.flush()

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

    def stream(self, sid):
        st = self.streams.get(sid)
        if st is None:
            st = self.streams[sid] = Stream(sid, self.store_body)
        return st

    def pump(self, timeout=0.2):
        """Read once (up to timeout) and handle the events. False once closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except (socket.timeout, TimeoutError):
            return True
        except ssl.SSLWantReadError:
            return True
        except (ConnectionResetError, ssl.SSLError, OSError):
            self.closed = True
            return False
        if not data:
            self.closed = True
            return False
        self._rbuf += data
        # GOAWAY frames are taken out here: python3-h2 closes its state machine
        # on the first GOAWAY and then refuses the frames of streams that are
        # still allowed to finish (graceful shutdown).
        pending = bytearray()
        off = 0
        buf = self._rbuf
        for _ in range(len(buf) // 9 + 1):
            if len(buf) - off < 9:
                break
            length = int.from_bytes(buf[off:off + 3], "big")
            if len(buf) - off < 9 + length:
                break
            ftype = buf[off + 3]
            frame = buf[off:off + 9 + length]
            off += 9 + length
            if ftype == 0x7 and length >= 8:
                self._feed(bytes(pending))
                pending = bytearray()
                last = int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF
                code = int.from_bytes(frame[13:17], "big")
                ev = GoawayReceived(code, last, bytes(frame[17:]))
                self.events.append(ev)
                self.goaway.append((code, last))
            else:
                pending += frame
        del self._rbuf[:off]
        self._feed(bytes(pending))
        self.flush()
        return True

    def _feed(self, data):
        if not data:
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            raise AssertionError(f"protocol error from the server's bytes: {e!r}") from e
        for ev in events:
            self._handle(ev)

    def pump_until(self, pred, timeout=None):
        """Pump until pred() is truthy (returns True) or timeout / close (False)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            if pred():
                return True
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return bool(pred())
            self.pump(min(left, 0.2))
        return bool(pred())

    def _handle(self, ev):
        self.events.append(ev)
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            for code, ch in ev.changed_settings.items():
                self.server_settings[code] = ch.new_value
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self.stream(ev.stream_id).informational.append(
                [(_s(k), _s(v)) for k, v in ev.headers])
        elif isinstance(ev, h2.events.ResponseReceived):
            st = self.stream(ev.stream_id)
            st.headers = [(_s(k), _s(v)) for k, v in ev.headers]
            st.status = int(dict(st.headers).get(":status", "0"))
        elif isinstance(ev, h2.events.TrailersReceived):
            self.stream(ev.stream_id).trailers = [(_s(k), _s(v)) for k, v in ev.headers]
        elif isinstance(ev, h2.events.DataReceived):
            st = self.stream(ev.stream_id)
            st.body_len += len(ev.data)
            st.data_frames += 1
            if st.store_body:
                st.body += ev.data
            if self.auto_ack and ev.flow_controlled_length:
                try:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length,
                                                        ev.stream_id)
                except h2.exceptions.StreamClosedError:
                    pass
        elif isinstance(ev, h2.events.StreamEnded):
            self.stream(ev.stream_id).ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if ev.remote_reset:
                self.stream(ev.stream_id).reset_code = int(ev.error_code)
        elif isinstance(ev, h2.events.WindowUpdated):
            self.window_updates.append((ev.stream_id, ev.delta))

    # -- requests ---------------------------------------------------------

    def next_id(self):
        return self.conn.get_next_available_stream_id()

    def send_headers(self, sid, headers, end_stream=False):
        """Send a header block exactly as given: [(name, value)], str or bytes."""
        hs = [(k.encode() if isinstance(k, str) else k,
               v.encode() if isinstance(v, str) else v) for k, v in headers]
        self.stream(sid)
        self.conn.send_headers(sid, hs, end_stream=end_stream)
        self.flush()

    def request(self, method="GET", path="/", headers=(), body=None, end=True,
                authority="test.local", scheme="http", sid=None):
        """Open a stream with a well-formed request head. With body (bytes) it is
        sent too (flow control respected); end=False leaves the stream open."""
        sid = sid or self.next_id()
        hs = [(":method", method), (":scheme", scheme), (":path", path)]
        if authority is not None:
            hs.append((":authority", authority))
        hs += list(headers)
        self.send_headers(sid, hs, end_stream=end and not body)
        if body:
            self.send_data(sid, body, end_stream=end)
        return sid

    def send_data(self, sid, data, end_stream=False, timeout=None, chunk=None, stall=None):
        """Send data in frames the server's windows allow, pumping while blocked.
        Returns the bytes sent. With stall (seconds), a window that stays
        closed that long ends the call early (no error) instead of failing."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        off = 0
        if not len(view) and end_stream:
            self.conn.send_data(sid, b"", end_stream=True)
            self.flush()
            return 0
        blocked_since = None
        while off < len(view):
            if self.closed:
                raise AssertionError(f"connection closed while sending stream {sid}")
            st = self.streams.get(sid)
            if st is not None and st.reset_code is not None:
                raise AssertionError(f"stream {sid} reset ({_code_name(st.reset_code)}) "
                                     "while sending its body")
            window = self.conn.local_flow_control_window(sid)
            n = min(window, self.conn.max_outbound_frame_size, len(view) - off)
            if chunk:
                n = min(n, chunk)
            if n <= 0:
                now = time.monotonic()
                blocked_since = blocked_since or now
                if stall is not None and now - blocked_since >= stall:
                    return off
                if now > deadline:
                    raise AssertionError(f"flow-control window of stream {sid} stayed "
                                         f"closed for {timeout}s ({off} bytes sent)")
                self.pump(0.1)
                continue
            blocked_since = None
            last = off + n >= len(view)
            self.conn.send_data(sid, view[off:off + n].tobytes(),
                                end_stream=end_stream and last)
            off += n
            self.flush()
        return off

    def send_trailers(self, sid, trailers):
        self.send_headers(sid, trailers, end_stream=True)

    def reset(self, sid, code=ErrorCodes.CANCEL):
        self.conn.reset_stream(sid, error_code=code)
        self.flush()

    def ping(self, data=b"pingpong"):
        self.conn.ping(data)
        self.flush()

    def wait_stream(self, sid, timeout=None):
        """Wait until the stream ended or was reset; returns its Stream."""
        st = self.stream(sid)
        self.pump_until(lambda: st.done, timeout)
        return st

    def wait_streams(self, sids, timeout=None):
        sts = [self.stream(s) for s in sids]
        self.pump_until(lambda: all(s.done for s in sts), timeout)
        return sts

    def wait_goaway(self, timeout=None):
        self.pump_until(lambda: self.goaway, timeout)
        return self.goaway[-1] if self.goaway else None

    def wait_closed(self, timeout=None):
        """True once the server closed the connection (bounded by timeout)."""
        return self.pump_until(lambda: self.closed, timeout)

    def get(self, path="/", headers=(), timeout=None, **kw):
        return self.wait_stream(self.request("GET", path, headers=headers, **kw), timeout)


def _indent(text, n):
    pad = " " * n
    return "\n".join(pad + line if line.strip() else line
                     for line in text.strip("\n").splitlines())


def proxy_config(port, backend_addr, protocol="HTTP", listener_extra="", top_extra="",
                 service_extra="", timeout="10s", drain_timeout="5s"):
    """One listener (HTTP or HTTPS) on 127.0.0.1:port sending everything to one
    HTTP/1.1 backend service `svc`. *_extra are YAML lines added to the listener
    item, the top level and the backend service item."""
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    protocol: {protocol}
    url_map: main
{_indent(listener_extra, 4)}
access_log:
  enabled: true
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
