"""A controllable authoritative DNS server for the DNS discovery tests
(issue 14), on dnslib, UDP and TCP on one free port of 127.0.0.1 (or of
another loopback address: DnsServer(host="::1")).

    srv = DnsServer(); srv.start()          # or the `dns_server` fixture
    srv.addr                                # "127.0.0.1:PORT" (for dns.resolvers)
    srv.set("web.dns.test.", ["127.0.0.2", "::1"], ttl=5)
                                            # (ttl: one for all, or a list per record)
                                            # A and AAAA records by address family;
                                            # ips=[] is a known name with no records:
                                            # an empty NOERROR answer
    srv.nxdomain(name) / srv.servfail(name) # answer that rcode for the name
    srv.drop(name)                          # receive the name's queries, never answer
    srv.forget(name)                        # unknown again (NXDOMAIN, as any unknown name)
    srv.truncate(name, True)                # UDP answers carry TC and no records (TCP is full);
                                            # an answer over 512 bytes (or the query's EDNS0
                                            # size) is truncated that way anyway
    srv.pause(after=0) / srv.resume()       # server down: queries are received and
                                            # dropped (after `after` more answers)
    srv.queries(name=None, qtype=None, tcp=None)   # queries received (dropped ones too)
    srv.answered(name=None, qtype=None, tcp=None) # queries answered (any rcode)
    srv.log()                               # [Query(t, name, qtype, tcp, action)]
    srv.stop()

Names are absolute and matched case-insensitively (a trailing dot is added
when missing); a resolver that randomizes the case of its query (evdns's
0x20 hack) gets the question and the answer names back exactly as asked. A
name that was never set is NXDOMAIN. qtype is "A", "AAAA", ... ; a query of a
type the name has no records of gets an empty NOERROR answer.

One thread serves both transports with a selector (timeout 50 ms), and stops
within a bounded time; an exception in the serving code is kept in `errors`
(the fixture fails the test with it) instead of killing the thread. Malformed
packets are counted in `bad_packets` and otherwise ignored.
"""

import collections
import ipaddress
import selectors
import socket
import struct
import threading
import time

import pytest
from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord

from conftest import HOST, free_port

Query = collections.namedtuple("Query", "t name qtype tcp action")

TICK = 0.05          # s, selector timeout: how soon stop() is noticed
MAX_TCP_CONNS = 64   # accepted TCP connections kept open at once
MAX_TCP_BUF = 65537  # bytes buffered per TCP connection (one message + length)


def udp_limit(req):
    """The UDP reply size the client takes: 512, or its EDNS0 payload size."""
    for rr in req.ar:
        if rr.rtype == QTYPE.OPT:
            return max(512, rr.rclass)
    return 512


def absolute(name):
    name = str(name).lower()
    return name if name.endswith(".") else name + "."


class DnsServer:
    def __init__(self, host=HOST, port=None):
        self.host = host
        self.port = port
        self.lock = threading.Lock()
        self.names = {}          # absolute name -> {"mode": ..., "records": [(ip, ttl)]}
        self.paused = False
        self.answers_left = None  # None: no limit; n: answer n more, then act paused
        self._log = []
        self.errors = []
        self.bad_packets = 0
        self._stop = threading.Event()
        self._thread = None
        self.udp = self.tcp = None
        self._conns = {}         # TCP socket -> bytearray

    # -- lifecycle ----------------------------------------------------------

    @property
    def addr(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self):
        last = None
        for _ in range(1 if self.port else 5):
            port = self.port or free_port()
            fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            udp = socket.socket(fam, socket.SOCK_DGRAM)
            tcp = socket.socket(fam, socket.SOCK_STREAM)
            try:
                udp.bind((self.host, port))
                tcp.bind((self.host, port))
                tcp.listen(64)
            except OSError as e:
                udp.close()
                tcp.close()
                last = e
                continue
            udp.setblocking(False)
            tcp.setblocking(False)
            self.port, self.udp, self.tcp = port, udp, tcp
            break
        else:
            raise RuntimeError(f"DNS server: no bindable port on {self.host}: {last}")
        self._thread = threading.Thread(target=self._run, name=f"dns-{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("DNS server thread did not stop")
        for s in [self.udp, self.tcp, *self._conns]:
            if s is not None:
                s.close()
        self._conns.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- control ------------------------------------------------------------

    def set(self, name, ips=(), ttl=60):
        """Answer name with these addresses; ttl is one TTL for every record
        or a list of per-record TTLs (same order as ips)."""
        ips = list(ips)
        ttls = list(ttl) if isinstance(ttl, (list, tuple)) else [ttl] * len(ips)
        if len(ttls) != len(ips):
            raise ValueError("one TTL per address")
        recs = []
        for ip, t in zip(ips, ttls):
            ipaddress.ip_address(ip)   # ValueError on a typo
            recs.append((str(ip), int(t)))
        with self.lock:
            entry = self.names.setdefault(absolute(name), {})
            entry.update(mode="records", records=recs, truncate=entry.get("truncate", False))

    def _mode(self, name, mode):
        with self.lock:
            entry = self.names.setdefault(absolute(name), {"records": [], "truncate": False})
            entry["mode"] = mode

    def nxdomain(self, name):
        self._mode(name, "nxdomain")

    def servfail(self, name):
        self._mode(name, "servfail")

    def drop(self, name):
        self._mode(name, "drop")

    def forget(self, name):
        with self.lock:
            self.names.pop(absolute(name), None)

    def truncate(self, name, on=True):
        with self.lock:
            entry = self.names.setdefault(absolute(name),
                                          {"mode": "records", "records": []})
            entry["truncate"] = bool(on)

    def pause(self, after=0):
        """Stop answering (queries are still received and counted), at once
        or after `after` more answers."""
        with self.lock:
            if after <= 0:
                self.paused = True
                self.answers_left = None
            else:
                self.answers_left = after

    def resume(self):
        with self.lock:
            self.paused = False
            self.answers_left = None

    # -- observation --------------------------------------------------------

    def log(self):
        with self.lock:
            return list(self._log)

    def _count(self, name, qtype, tcp, answered):
        name = absolute(name) if name is not None else None
        n = 0
        with self.lock:
            for q in self._log:
                if name is not None and q.name != name:
                    continue
                if qtype is not None and q.qtype != qtype:
                    continue
                if tcp is not None and q.tcp != tcp:
                    continue
                if answered and q.action == "dropped":
                    continue
                n += 1
        return n

    def queries(self, name=None, qtype=None, tcp=None):
        """Queries received for name (any when None) of qtype ("A", "AAAA", ...)."""
        return self._count(name, qtype, tcp, False)

    def answered(self, name=None, qtype=None, tcp=None):
        """Queries answered (any rcode, empty answers included)."""
        return self._count(name, qtype, tcp, True)

    def query_times(self, name, qtype=None):
        """monotonic() times of the queries received for name (of qtype)."""
        name = absolute(name)
        with self.lock:
            return [q.t for q in self._log
                    if q.name == name and (qtype is None or q.qtype == qtype)]

    # -- serving ------------------------------------------------------------

    def _answer(self, data, tcp):
        """The reply bytes for one query message, or None to stay silent."""
        try:
            req = DNSRecord.parse(data)
        except Exception:   # dnslib raises several kinds on garbage
            self.bad_packets += 1
            return None
        if req.header.qr or not req.questions:
            self.bad_packets += 1
            return None
        q = req.questions[0]
        asked = str(q.qname)
        name = asked.lower()
        if not name.endswith("."):
            name += "."
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        with self.lock:
            entry = self.names.get(name)
            entry = dict(entry) if entry else None
            mode = entry["mode"] if entry else "unknown"
            silent = self.paused or mode == "drop"
            if not silent and self.answers_left is not None:
                self.answers_left -= 1
                if self.answers_left <= 0:
                    self.paused = True
                    self.answers_left = None
            action = "dropped" if silent else mode
            self._log.append(Query(time.monotonic(), name, qtype, tcp, action))
        if silent:
            return None
        reply = req.reply()   # aa=1, the question echoed as asked
        if mode in ("unknown", "nxdomain"):
            reply.header.rcode = RCODE.NXDOMAIN
        elif mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        elif entry.get("truncate") and not tcp:
            reply.header.tc = 1
        else:
            for ip, ttl in entry["records"]:
                v = ipaddress.ip_address(ip).version
                if v == 4 and q.qtype == QTYPE.A:
                    reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(ip), ttl=ttl))
                elif v == 6 and q.qtype == QTYPE.AAAA:
                    reply.add_answer(RR(q.qname, QTYPE.AAAA, rdata=AAAA(ip), ttl=ttl))
        out = reply.pack()
        if not tcp and len(out) > udp_limit(req):
            # too big for the client's UDP size: TC and no records, as a real
            # server does; the client should ask again over TCP
            reply = req.reply()
            reply.header.tc = 1
            out = reply.pack()
        return out

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.udp, selectors.EVENT_READ, "udp")
        sel.register(self.tcp, selectors.EVENT_READ, "listen")
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(TICK):
                    try:
                        self._ready(sel, key)
                    except Exception as e:   # keep serving; the fixture reports it
                        self.errors.append(repr(e))
        finally:
            sel.close()

    def _ready(self, sel, key):
        if key.data == "udp":
            for _ in range(64):   # drain what is queued, bounded
                try:
                    data, peer = self.udp.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    return
                out = self._answer(data, tcp=False)
                if out is not None:
                    try:
                        self.udp.sendto(out, peer)
                    except OSError:
                        pass
        elif key.data == "listen":
            try:
                c, _ = self.tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            if len(self._conns) >= MAX_TCP_CONNS:
                c.close()
                return
            c.setblocking(False)
            self._conns[c] = bytearray()
            sel.register(c, selectors.EVENT_READ, "conn")
        else:
            c = key.fileobj
            try:
                chunk = c.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            buf = self._conns.get(c)
            if not chunk or buf is None or len(buf) + len(chunk) > MAX_TCP_BUF:
                sel.unregister(c)
                self._conns.pop(c, None)
                c.close()
                return
            buf += chunk
            while len(buf) >= 2:
                n = struct.unpack_from("!H", buf)[0]
                if len(buf) < 2 + n:
                    break
                msg = bytes(buf[2:2 + n])
                del buf[:2 + n]
                out = self._answer(msg, tcp=True)
                if out is not None:
                    c.setblocking(True)
                    c.settimeout(2)
                    try:
                        c.sendall(struct.pack("!H", len(out)) + out)
                    except OSError:
                        pass
                    c.setblocking(False)


@pytest.fixture
def dns_server():
    """A started DnsServer, stopped at teardown; an exception in its serving
    code fails the test."""
    srv = DnsServer().start()
    try:
        yield srv
    finally:
        srv.stop()
    assert not srv.errors, f"DNS server errors: {srv.errors[:5]}"
