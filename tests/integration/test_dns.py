"""DNS service discovery (issue 14): backend services with `discovery: DNS`
(Envoy's STRICT_DNS) against a controllable authoritative DNS server
(dnsserver.py), with switchyard-testbed backends.

One DNS name has one configured port, so distinct endpoints of one name are
distinct *addresses*: testbeds listen on 127.0.0.2, 127.0.0.3, ... (all of
127/8 is loopback on Linux) with the same port, and on [::1] for the address
family cases. gRPC backends are grpcio servers run in this process with the
stubs of tests/integration/grpc/echo.proto, bound the same way.

Covered: the set follows the answers (2, then 3, then 1 addresses; a single
answer is enough; "discovered_from" in /backends), no failed request from
HTTP/1.1, h2c and gRPC clients while addresses come and go, the TTL with
respect_dns_ttl (the minimum TTL of the records, at least 1 s), a DNS
server that is down, SERVFAIL and empty answers (the last good set stays),
NXDOMAIN with KEEP and CLEAR, dns_lookup_family, /ready before the first
answer, a reload that keeps a name (and one that drops a name, and one that
moves to another resolver), the switchyard_dns_* metrics, RING_HASH
stability when an address is added, static and DNS endpoints in one
service, health state of addresses that stay, exchanges in flight on a
removed address (connection_draining), an answer too big for UDP, a
resolver on [::1], `switchyard -t` (no resolution), and the DNS name (not
the IP) as TLS identity, :authority and health-check Host, with TLS
connections never shared between names of one address.

Refreshes run every 200 ms; every wait is bounded in time and count. The DNS
server counts the queries it sees, so "re-resolved" is read from it, not from
the clock; the few clock readings are lower bounds (the proxy may not ask
again before the TTL), never bounds on speed.
"""

import http.client
import json
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent import futures

import pytest

from conftest import (HOST, admin_metrics, binary, child_env, free_port, free_ports,
                      port_accepts, read_text, run_switchyard, sanitizer_report, stop_process,
                      wait_for)
from dnsserver import DnsServer, dns_server  # noqa: F401  (dns_server is a fixture)
from h1util import H1Conn, request_bytes
from h2util import H2Conn

grpc = pytest.importorskip("grpc")
from test_grpc import stubs  # noqa: E402,F401  (session fixture: generated echo stubs)

REFRESH = "200ms"
CHANNEL_OPTIONS = [
    ("grpc.enable_retries", 0),        # the client must not retry behind our back
    ("grpc.enable_http_proxy", 0),
]
WAIT = 10.0   # s, bound of the waits for a change the proxy makes by itself


# ---------------------------------------------------------------------------
# backends on 127.0.0.x / [::1]
# ---------------------------------------------------------------------------

class Bed:
    """One switchyard-testbed listening on ip:port."""

    def __init__(self, proc, ip, port, name, stderr_path):
        self.proc, self.pid = proc, proc.pid
        self.ip, self.port, self.name = ip, port, name
        self.addr = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        self.stderr_path = stderr_path

    def running(self):
        return self.proc.poll() is None

    def stop(self):
        return stop_process(self.proc, signal.SIGTERM, 10)

    def stderr(self):
        return read_text(self.stderr_path)

    def __repr__(self):
        return f"<Bed {self.name} {self.addr} pid={self.pid}>"


@pytest.fixture
def beds(tmp_path):
    """Factory: start(ip, port, name, tls=None) -> Bed (a testbed on ip:port;
    tls: (cert, key) paths); stopped at teardown, and a sanitizer report in
    its output fails the test."""
    started = []

    def start(ip, port, name, tls=None):
        errp = tmp_path / f"bed-{name}.stderr"
        listen = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        tls_args = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
        with open(errp, "wb") as ef:
            proc = subprocess.Popen([str(binary("switchyard-testbed")), "--listen", listen,
                                     "--name", name, *tls_args],
                                    stdin=subprocess.DEVNULL, stdout=ef,
                                    stderr=subprocess.STDOUT, env=child_env(),
                                    cwd=str(tmp_path))
        bed = Bed(proc, ip, port, name, errp)
        started.append(bed)
        up = wait_for(lambda: "exited" if proc.poll() is not None
                      else port_accepts(port, host=ip), 10)
        if up is not True:
            pytest.fail(f"testbed {name} on {listen} did not start:\n{bed.stderr()}")
        return bed

    yield start

    problems = []
    for bed in started:
        bed.stop()
        rep = sanitizer_report(bed.stderr())
        if rep:
            problems.append(f"{bed!r}: {rep}\n{bed.stderr()[-8000:]}")
    if problems:
        pytest.fail("sanitizer report from testbed:\n" + "\n".join(problems))


@pytest.fixture
def grpc_beds(stubs):
    """Factory: start(ip, port, name) -> grpc.Server serving switchyard.test.Echo
    in this process on ip:port (Unary answers text back, `server` = name, and
    initial metadata x-server: name). Stopped at teardown."""
    _, pb, pb_grpc = stubs
    started = []

    class Echo(pb_grpc.EchoServicer):
        def __init__(self, name):
            self.name = name

        def Unary(self, request, context):
            context.send_initial_metadata([("x-server", self.name)])
            return pb.EchoReply(text=request.text, server=self.name)

    def start(ip, port, name):
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                          options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_EchoServicer_to_server(Echo(name), srv)
        started.append(srv)
        bound = srv.add_insecure_port(f"{ip}:{port}")
        assert bound == port, f"grpc server {name} could not bind {ip}:{port}"
        srv.start()
        return srv

    yield start

    for srv in started:
        srv.stop(grace=None).wait(10)


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------

def dns_service(name, host, port, protocol="HTTP", **kw):
    """A backend service dict: discovery DNS of host:port, refreshed every
    200 ms unless kw says otherwise (kw: more service keys)."""
    d = {"name": name, "protocol": protocol, "timeout": "10s", "discovery": "DNS",
         "dns_refresh_rate": REFRESH,
         "endpoints": [{"address": f"{host}:{port}"}]}
    d.update(kw)
    return d


def config(port, admin, dns, services, routes=(), dns_timeout="1s", dns_attempts=2,
           checks=(), listener_extra=""):
    """Listener on 127.0.0.1:port, admin on admin, resolver dns (a DnsServer),
    the service dicts; routes [(prefix, service, route_action or None)] ahead
    of the default (the first service); checks: health check dicts."""
    rules = ""
    for i, (prefix, svc, action) in enumerate(routes):
        rules += (f"          - priority: {i + 1}\n"
                  f"            match_rules: [{{prefix_match: {json.dumps(prefix)}}}]\n"
                  f"            service: {svc}\n")
        if action:
            rules += f"            route_action: {json.dumps(action)}\n"
    rules += ("          - priority: 1000\n"
              "            match_rules: [{prefix_match: /}]\n"
              f"            service: {services[0]['name']}\n")
    svcs = "".join(f"  - {json.dumps(s)}\n" for s in services)
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    protocol: HTTP
    url_map: main
{listener_extra}admin: {{address: "127.0.0.1:{admin}"}}
access_log: {{enabled: true, path: "-", format: json}}
drain_timeout: 2s
dns: {{resolvers: ["{dns.addr}"], timeout: {dns_timeout}, attempts: {dns_attempts}}}
url_maps:
  - name: main
    default_service: {services[0]['name']}
    host_rules: [{{hosts: ["*"], path_matcher: pm}}]
    path_matchers:
      - name: pm
        default_service: {services[0]['name']}
        route_rules:
{rules}backend_services:
{svcs}""" + ("health_checks:\n" + "".join(f"  - {json.dumps(c)}\n" for c in checks)
             if checks else "")


def start_proxy(proxy, dns, services, workers=1, **kw):
    port, admin = free_ports(2)
    px = proxy(config(port, admin, dns, services, **kw), workers=workers,
               expect_ports=[port, admin])
    return px, port, admin


# ---------------------------------------------------------------------------
# admin API
# ---------------------------------------------------------------------------

def admin_get(admin, path):
    """(status, body text) of GET path on the admin API; (None, error) when
    it does not answer."""
    conn = http.client.HTTPConnection(HOST, admin, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return None, repr(e)
    finally:
        conn.close()


def backends_doc(admin):
    status, body = admin_get(admin, "/backends")
    return json.loads(body) if status == 200 else None


def endpoints(admin, service, doc=None):
    """The endpoint objects of `service` in GET /backends (None if absent)."""
    doc = doc or backends_doc(admin)
    for s in (doc or {}).get("backend_services", []):
        if s["name"] == service:
            return s["endpoints"]
    return None


def addrs(admin, service):
    eps = endpoints(admin, service)
    return None if eps is None else sorted(e["address"] for e in eps)


def wait_addrs(px, admin, service, expected, timeout=WAIT):
    """Wait until /backends lists exactly `expected` addresses for service."""
    want = sorted(expected)
    got = wait_for(lambda: addrs(admin, service) == want, timeout)
    assert got, (f"{service}: /backends has {addrs(admin, service)}, want {want} "
                 f"(within {timeout}s)\n{px.stderr()[-3000:]}")


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(m, metric_name, /, **labels):
    """Sum of the series of metric `metric_name` whose labels include `labels`
    (order-independent), in admin_metrics() output; None when none exists."""
    total, found = 0.0, False
    for series, value in m.items():
        base, _, rest = series.partition("{")
        if base != metric_name:
            continue
        have = dict(_LABEL.findall(rest))
        if all(have.get(k) == str(v) for k, v in labels.items()):
            total += value
            found = True
    return total if found else None


def resolutions(admin, service, name, result):
    return metric(admin_metrics(admin), "switchyard_dns_resolutions_total",
                  backend_service=service, name=name, result=result) or 0


# ---------------------------------------------------------------------------
# clients
# ---------------------------------------------------------------------------

def instances(port, n, path="/", headers=()):
    """n GETs on one keep-alive HTTP/1.1 connection: [(status, instance)]."""
    out = []
    with H1Conn(port) as c:
        for _ in range(n):
            c.send(request_bytes("GET", path, headers=headers))
            r = c.read_response()
            out.append((r.status, r.header("x-testbed-instance")))
    return out


def served_by(port, n, path="/"):
    """The set of instances that served n GETs; every one must be a 200."""
    got = instances(port, n, path)
    assert all(s == 200 for s, _ in got), got
    return {i for _, i in got}


# ---------------------------------------------------------------------------
# the DNS server itself
# ---------------------------------------------------------------------------

def test_dns_server_answers_as_told(dns_server):
    """dnsserver.py, with dnslib's client: A/AAAA by family, empty NOERROR,
    NXDOMAIN, SERVFAIL, UDP truncation then TCP, pause (no answer) and
    resume, and the query counts."""
    from dnslib import QTYPE, RCODE, DNSRecord
    srv = dns_server
    host, port = HOST, srv.port

    def ask(name, qtype="A", tcp=False, timeout=2):
        q = DNSRecord.question(name, qtype)
        return DNSRecord.parse(q.send(host, port, tcp=tcp, timeout=timeout))

    srv.set("a.dns.test", ["127.0.0.2", "127.0.0.3", "::1"], ttl=7)
    r = ask("a.dns.test.")
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1
    assert sorted(str(rr.rdata) for rr in r.rr) == ["127.0.0.2", "127.0.0.3"]
    assert {rr.ttl for rr in r.rr} == {7} and {rr.rtype for rr in r.rr} == {QTYPE.A}
    r = ask("A.Dns.TEST", "AAAA", tcp=True)     # case-insensitive, over TCP
    assert [str(rr.rdata) for rr in r.rr] == ["::1"]
    assert str(r.rr[0].rname) == "A.Dns.TEST." and str(r.q.qname) == "A.Dns.TEST."
    srv.set("v4.dns.test.", ["127.0.0.9"])
    r = ask("v4.dns.test", "AAAA")               # known name, no AAAA: empty NOERROR
    assert r.header.rcode == RCODE.NOERROR and not r.rr
    srv.set("e.dns.test", [])
    assert ask("e.dns.test").header.rcode == RCODE.NOERROR and not ask("e.dns.test").rr
    assert ask("unknown.dns.test").header.rcode == RCODE.NXDOMAIN
    srv.nxdomain("a.dns.test")
    assert ask("a.dns.test").header.rcode == RCODE.NXDOMAIN
    srv.servfail("a.dns.test")
    assert ask("a.dns.test").header.rcode == RCODE.SERVFAIL
    srv.set("a.dns.test", ["127.0.0.4"], ttl=1)
    srv.truncate("a.dns.test")
    r = ask("a.dns.test")
    assert r.header.tc == 1 and not r.rr
    r = ask("a.dns.test", tcp=True)
    assert [str(rr.rdata) for rr in r.rr] == ["127.0.0.4"] and r.header.tc == 0
    srv.truncate("a.dns.test", False)
    # 40 A records do not fit 512 bytes: truncated over UDP, whole over TCP
    # (and over UDP for a client that offers EDNS0 4096)
    many = [f"127.0.1.{i}" for i in range(40)]
    srv.set("big.dns.test", many)
    r = ask("big.dns.test")
    assert r.header.tc == 1 and not r.rr
    assert sorted(str(rr.rdata) for rr in ask("big.dns.test", tcp=True).rr) == sorted(many)
    from dnslib import EDNS0
    q = DNSRecord.question("big.dns.test", "A")
    q.add_ar(EDNS0(udp_len=4096))
    r = DNSRecord.parse(q.send(host, port, timeout=2))
    assert r.header.tc == 0 and len(r.rr) == 40

    # Down: received, counted, never answered (UDP and TCP).
    srv.pause()
    n = srv.queries("a.dns.test")
    for tcp in (False, True):
        with pytest.raises(OSError):   # socket.timeout is an OSError
            ask("a.dns.test", tcp=tcp, timeout=0.3)
    assert srv.queries("a.dns.test") == n + 2
    assert srv.answered("a.dns.test") == n
    srv.resume()
    assert [str(rr.rdata) for rr in ask("a.dns.test").rr] == ["127.0.0.4"]
    # pause(after=1): one more answer, then down.
    srv.pause(after=1)
    assert ask("a.dns.test").rr
    with pytest.raises(OSError):
        ask("a.dns.test", timeout=0.3)
    srv.resume()
    # drop(name): that name only.
    srv.drop("e.dns.test")
    with pytest.raises(OSError):
        ask("e.dns.test", timeout=0.3)
    assert ask("v4.dns.test").rr

    assert srv.queries("a.dns.test", "AAAA") == 1
    assert srv.queries("a.dns.test", "A", tcp=True) == 2
    assert srv.queries("big.dns.test", "A", tcp=False) == 2
    assert srv.queries("nothing.dns.test") == 0
    assert srv.bad_packets == 0 and not srv.errors


# ---------------------------------------------------------------------------
# the set follows the answers
# ---------------------------------------------------------------------------

def test_set_follows_dns_2_then_3_then_1(proxy, beds, dns_server):
    """2, then 3, then 1 addresses. After each change the DNS server answers
    exactly once more and then stops answering: one answer is enough for the
    proxy to apply the new set, traffic reaches the new address (the testbed
    names itself), /backends says where each endpoint came from, and
    switchyard_dns_addresses follows."""
    srv = dns_server
    p = free_port()
    b = {i: beds(f"127.0.0.{i}", p, f"b{i}") for i in (2, 3, 4)}
    name = "web.dns.test"
    label = f"{name}:{p}"
    srv.set(name, ["127.0.0.2", "127.0.0.3"], ttl=1)
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("svc", name, p, dns_lookup_family="V4_ONLY")])
    wait_addrs(px, admin, "svc", [b[2].addr, b[3].addr])
    eps = endpoints(admin, "svc")
    assert all(e.get("discovered_from") == label for e in eps), eps
    assert served_by(port, 8) == {"b2", "b3"}
    assert metric(admin_metrics(admin), "switchyard_dns_addresses",
                  backend_service="svc", name=label) == 2

    for ips, want in ((("127.0.0.2", "127.0.0.3", "127.0.0.4"), {"b2", "b3", "b4"}),
                      (("127.0.0.4",), {"b4"})):
        srv.set(name, ips, ttl=1)
        srv.pause(after=1)
        wait_addrs(px, admin, "svc", [b[int(ip[-1])].addr for ip in ips])
        assert all(e.get("discovered_from") == label for e in endpoints(admin, "svc"))
        # Round robin over a fresh set: every address within 4 rounds.
        assert served_by(port, 4 * len(ips)) == want
        m = admin_metrics(admin)
        assert metric(m, "switchyard_dns_addresses", backend_service="svc",
                      name=label) == len(ips), m
        # Each discovered address, and the name it came from.
        assert metric(m, "switchyard_dns_endpoint_info", backend_service="svc",
                      name=label) == len(ips), m
        for ip in ips:
            assert metric(m, "switchyard_dns_endpoint_info", backend_service="svc", name=label,
                          endpoint=b[int(ip[-1])].addr) == 1, m
        # Paused: every success the proxy counted is an answer the server sent
        # (waited for: a second answer may have raced the pause).
        assert wait_for(lambda: resolutions(admin, "svc", label, "success")
                        == srv.answered(name, "A"), WAIT), \
            (resolutions(admin, "svc", label, "success"), srv.answered(name, "A"))
        srv.resume()
    assert srv.queries(name, "AAAA") == 0   # V4_ONLY
    # switchyard_endpoint_healthy lists the resolved addresses, and only them
    m = admin_metrics(admin)
    listed = {k for k in m if k.startswith("switchyard_endpoint_healthy{")
              and 'backend_service="svc"' in k}
    assert metric(m, "switchyard_endpoint_healthy", backend_service="svc",
                  endpoint=b[4].addr) is not None, listed
    assert len(listed) == 1, listed


# ---------------------------------------------------------------------------
# no failed request while the set changes
# ---------------------------------------------------------------------------

class Load:
    """Sequential requests from one client in a thread until stopped
    (bounded in count); results [(ok, instance)] and errors."""

    MAX = 20000

    def __init__(self, name, one):
        self.name = name
        self.one = one              # () -> instance name; raises on failure
        self.results = []
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"load-{name}", daemon=True)

    def _run(self):
        for _ in range(self.MAX):
            if self.stop.is_set():
                return
            try:
                self.results.append(self.one())
            except Exception as e:   # any failure is what this test counts
                self.errors.append(repr(e))
                if len(self.errors) > 50:
                    return

    def n(self):
        return len(self.results) + len(self.errors)


def test_no_failed_request_while_addresses_come_and_go(proxy, beds, grpc_beds, dns_server,
                                                        stubs):
    """HTTP/1.1, h2c and gRPC clients send requests back to back while the
    name's set goes {2,3} -> {2,3,4} -> {3,4} -> {3,4,5} -> {4,5}. Removed
    backends keep running while more requests complete (as a pod does under
    connection draining), then stop. With a retry policy, no request fails;
    new addresses get traffic, removed ones none at the end."""
    srv = dns_server
    _, pb, pb_grpc = stubs
    p, q = free_ports(2)
    ips = {i: f"127.0.0.{i}" for i in (2, 3, 4, 5)}
    web = {i: beds(ips[i], p, f"h{i}") for i in ips}
    rpc = {i: grpc_beds(ips[i], q, f"g{i}") for i in ips}
    common = {"dns_lookup_family": "V4_ONLY", "connection_draining": {"draining_timeout": "2s"}}
    retry_http = {"retry_policy": {"retry_conditions": ["5xx", "connect-failure",
                                                        "refused-stream"],
                                   "num_retries": 3}}
    retry_grpc = {"retry_policy": {"retry_conditions": ["connect-failure", "refused-stream",
                                                        "unavailable", "5xx"],
                                   "num_retries": 3}}

    def set_both(members):
        srv.set("web.dns.test", [ips[i] for i in members], ttl=1)
        srv.set("rpc.dns.test", [ips[i] for i in members], ttl=1)

    set_both((2, 3))
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("web", "web.dns.test", p, **common),
        dns_service("rpc", "rpc.dns.test", q, protocol="H2C", **common)],
        routes=[("/switchyard.test.Echo/", "rpc", retry_grpc), ("/", "web", retry_http)],
        workers=2)

    def wait_members(members):
        wait_addrs(px, admin, "web", [web[i].addr for i in members])
        wait_addrs(px, admin, "rpc", [f"{ips[i]}:{q}" for i in members])

    wait_members((2, 3))

    h1 = [None]

    def one_h1():
        if h1[0] is None:
            h1[0] = H1Conn(port)
        try:
            h1[0].send(request_bytes("GET", "/h1"))
            r = h1[0].read_response()
        except Exception:
            h1[0].close()
            h1[0] = None
            raise
        if r.status != 200:
            raise AssertionError(f"h1 status {r.status} {r.body[:200]!r}")
        if r.wants_close():
            h1[0].close()
            h1[0] = None
        return r.header("x-testbed-instance")

    h2 = [None]

    def one_h2():
        if h2[0] is None:
            h2[0] = H2Conn(port)
        st = h2[0].get("/h2", timeout=10)
        if st.status != 200:
            h2[0].close()
            h2[0] = None
            raise AssertionError(f"h2c {st!r}")
        return st.header("x-testbed-instance")

    channel = grpc.insecure_channel(f"{HOST}:{port}", options=CHANNEL_OPTIONS)
    stub = pb_grpc.EchoStub(channel)

    def one_grpc():
        return stub.Unary(pb.EchoRequest(text="x"), timeout=10).server

    loads = [Load("h1", one_h1), Load("h2c", one_h2), Load("grpc", one_grpc)]
    try:
        for ld in loads:
            ld.thread.start()

        def more(k):
            """Wait until every client completed k more requests."""
            marks = [ld.n() + k for ld in loads]
            ok = wait_for(lambda: all(ld.n() >= m or not ld.thread.is_alive()
                                      for ld, m in zip(loads, marks)), 30)
            assert ok, [(ld.name, ld.n()) for ld in loads]

        more(20)
        for members, removed in (((2, 3, 4), None), ((3, 4), 2),
                                 ((3, 4, 5), None), ((4, 5), 3)):
            set_both(members)
            wait_members(members)
            more(30)   # load crosses the change; a removed backend is still up
            if removed is not None:
                web[removed].stop()
                rpc[removed].stop(grace=None).wait(10)
                more(20)
        more(30)
    finally:
        for ld in loads:
            ld.stop.set()
        for ld in loads:
            ld.thread.join(20)
        channel.close()
        for c in (h1[0], h2[0]):
            if c is not None:
                c.close()
    assert not any(ld.thread.is_alive() for ld in loads)
    for ld in loads:
        assert not ld.errors, f"{ld.name}: {len(ld.errors)} failed: {ld.errors[:5]}"
        prefix = "g" if ld.name == "grpc" else "h"
        seen = set(ld.results)
        # the addresses added under load got traffic from every kind of client
        assert {f"{prefix}4", f"{prefix}5"} <= seen, (ld.name, seen)
        # the last requests only reach what is left
        tail = ld.results[-20:]
        assert set(tail) <= {f"{prefix}4", f"{prefix}5"}, (ld.name, tail)
        assert len(ld.results) >= 200, (ld.name, len(ld.results))


# ---------------------------------------------------------------------------
# TTL
# ---------------------------------------------------------------------------

def test_respect_dns_ttl_reresolves_at_the_ttl(proxy, beds, dns_server):
    """With respect_dns_ttl the next query comes at the answer's TTL (the
    minimum of its records, at least 1 s) even with a 60 s refresh rate;
    without it, a TTL of 1 s changes nothing."""
    srv = dns_server
    p = free_port()
    bed = beds("127.0.0.2", p, "b2")
    srv.set("ttl1.dns.test", ["127.0.0.2"], ttl=1)
    srv.set("ttl0.dns.test", ["127.0.0.2"], ttl=0)
    srv.set("fixed.dns.test", ["127.0.0.2"], ttl=1)
    # min TTL of the records: 30 s and 1 s -> 1 s (two records of one address
    # family: two A records, the second on another address the bed ignores)
    srv.set("mixed.dns.test", ["127.0.0.2", "127.0.0.3"], ttl=[30, 1])
    slow = {"dns_refresh_rate": "60s", "dns_lookup_family": "V4_ONLY"}
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("ttl1", "ttl1.dns.test", p, respect_dns_ttl=True, **slow),
        dns_service("ttl0", "ttl0.dns.test", p, respect_dns_ttl=True, **slow),
        dns_service("mixed", "mixed.dns.test", p, respect_dns_ttl=True, **slow),
        dns_service("fixed", "fixed.dns.test", p, respect_dns_ttl=False, **slow)])
    wait_addrs(px, admin, "ttl1", [bed.addr])
    names = ("ttl1.dns.test", "ttl0.dns.test", "mixed.dns.test")
    ok = wait_for(lambda: all(srv.queries(n, "A") >= 3 for n in names), WAIT)
    assert ok, {n: srv.query_times(n) for n in names + ("fixed.dns.test",)}
    for n in names:
        t = srv.query_times(n, "A")
        gaps = [b - a for a, b in zip(t, t[1:])]
        # not sooner than the TTL (1 s, or the 1 s floor for TTL 0); a little
        # under for timer granularity
        assert min(gaps) >= 0.9, (n, gaps)
    assert srv.queries("fixed.dns.test", "A") == 1, srv.query_times("fixed.dns.test")
    assert served_by(port, 2) == {"b2"}


# ---------------------------------------------------------------------------
# failures keep the last good set
# ---------------------------------------------------------------------------

def test_dns_server_down_keeps_last_set(proxy, beds, dns_server):
    """The DNS server stops answering: the last good set stays, traffic
    continues to both addresses, and the timeouts count as failures. Back
    up, a change is applied again."""
    srv = dns_server
    p = free_port()
    b2, b3 = beds("127.0.0.2", p, "b2"), beds("127.0.0.3", p, "b3")
    name = "down.dns.test"
    label = f"{name}:{p}"
    srv.set(name, ["127.0.0.2", "127.0.0.3"], ttl=1)
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("svc", name, p, dns_lookup_family="V4_ONLY")],
        dns_timeout="300ms", dns_attempts=1)
    wait_addrs(px, admin, "svc", [b2.addr, b3.addr])
    srv.pause()
    assert wait_for(lambda: resolutions(admin, "svc", label, "failure") >= 2, WAIT), \
        (admin_metrics(admin), px.stderr()[-2000:])
    assert srv.queries(name) > srv.answered(name)
    assert addrs(admin, "svc") == sorted([b2.addr, b3.addr])
    assert served_by(port, 8) == {"b2", "b3"}
    m = admin_metrics(admin)
    assert metric(m, "switchyard_dns_addresses", backend_service="svc", name=label) == 2
    assert metric(m, "switchyard_dns_resolutions_total", backend_service="svc", name=label,
                  result="success") == srv.answered(name)
    srv.set(name, ["127.0.0.3"], ttl=1)
    srv.resume()
    wait_addrs(px, admin, "svc", [b3.addr])
    assert served_by(port, 4) == {"b3"}


def test_servfail_and_empty_answer_keep_last_set(proxy, beds, dns_server):
    """SERVFAIL (a failure) and an empty NOERROR answer (result "empty")
    both keep the last good set; traffic goes on to it."""
    srv = dns_server
    p = free_port()
    b2, b3 = beds("127.0.0.2", p, "b2"), beds("127.0.0.3", p, "b3")
    name = "keep.dns.test"
    label = f"{name}:{p}"
    srv.set(name, ["127.0.0.2", "127.0.0.3"], ttl=1)
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("svc", name, p, dns_lookup_family="V4_ONLY")])
    wait_addrs(px, admin, "svc", [b2.addr, b3.addr])
    for how, result in ((lambda: srv.set(name, [], ttl=1), "empty"),
                        (lambda: srv.servfail(name), "failure")):
        n0 = resolutions(admin, "svc", label, result)
        how()
        assert wait_for(lambda: resolutions(admin, "svc", label, result) >= n0 + 2, WAIT), \
            (result, admin_metrics(admin))
        assert addrs(admin, "svc") == sorted([b2.addr, b3.addr]), result
        assert served_by(port, 8) == {"b2", "b3"}, result
        assert metric(admin_metrics(admin), "switchyard_dns_addresses",
                      backend_service="svc", name=label) == 2
    srv.set(name, ["127.0.0.2"], ttl=1)
    wait_addrs(px, admin, "svc", [b2.addr])


def test_nxdomain_keep_and_clear(proxy, beds, dns_server):
    """NXDOMAIN: the default KEEP keeps the set for good; CLEAR keeps it
    while the last good answer's TTL runs, then empties the service (503),
    until the name answers again."""
    srv = dns_server
    p = free_port()
    bed = beds("127.0.0.2", p, "b2")
    ttl = 3
    srv.set("keep.dns.test", ["127.0.0.2"], ttl=ttl)
    srv.set("clear.dns.test", ["127.0.0.2"], ttl=ttl)
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("keep", "keep.dns.test", p, dns_lookup_family="V4_ONLY"),
        dns_service("clear", "clear.dns.test", p, dns_lookup_family="V4_ONLY",
                    dns_nxdomain="CLEAR")],
        routes=[("/clear", "clear", None)])
    wait_addrs(px, admin, "keep", [bed.addr])
    wait_addrs(px, admin, "clear", [bed.addr])
    srv.nxdomain("keep.dns.test")
    srv.nxdomain("clear.dns.test")
    # When the server sent the last good answer: the proxy got it later, so
    # its TTL runs out after t_good + ttl.
    t_good = max(q.t for q in srv.log()
                 if q.name == "clear.dns.test." and q.action == "records")
    clear_label = f"clear.dns.test:{p}"
    assert wait_for(lambda: resolutions(admin, "clear", clear_label, "nxdomain") >= 1, WAIT)
    eps_then = addrs(admin, "clear")
    if time.monotonic() - t_good < ttl - 0.5:   # (the usual case: refresh is 200 ms)
        assert eps_then == [bed.addr], "CLEAR emptied the set before the TTL ran out"
    assert wait_for(lambda: addrs(admin, "clear") == [], ttl + WAIT), \
        (addrs(admin, "clear"), px.stderr()[-2000:])
    assert time.monotonic() - t_good >= ttl - 0.1, "emptied before the TTL ran out"
    assert instances(port, 1, "/clear") == [(503, None)]
    assert metric(admin_metrics(admin), "switchyard_dns_addresses", backend_service="clear",
                  name=clear_label) == 0
    # KEEP: the same NXDOMAIN answers, the same TTL, the set stays.
    assert resolutions(admin, "keep", f"keep.dns.test:{p}", "nxdomain") >= 2
    assert addrs(admin, "keep") == [bed.addr]
    assert served_by(port, 3, "/keep") == {"b2"}
    # The name comes back.
    srv.set("clear.dns.test", ["127.0.0.2"], ttl=ttl)
    wait_addrs(px, admin, "clear", [bed.addr])
    assert served_by(port, 2, "/clear") == {"b2"}


# ---------------------------------------------------------------------------
# address family
# ---------------------------------------------------------------------------

def test_dns_lookup_family(proxy, beds, dns_server):
    """V6_ONLY and AUTO (with AAAA records) use [::1]:port; AUTO without AAAA
    falls back to A; V4_ONLY asks A only. Which types were asked is read
    from the server."""
    srv = dns_server
    p = free_port()
    v4, v6 = beds("127.0.0.2", p, "v4"), beds("::1", p, "v6")
    both = ["127.0.0.2", "::1"]
    srv.set("fam-v6.dns.test", both)
    srv.set("fam-auto.dns.test", both)
    srv.set("fam-v4.dns.test", both)
    srv.set("fam-auto4.dns.test", ["127.0.0.2"])
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("v4", "fam-v4.dns.test", p, dns_lookup_family="V4_ONLY"),
        dns_service("v6", "fam-v6.dns.test", p, dns_lookup_family="V6_ONLY"),
        dns_service("auto", "fam-auto.dns.test", p, dns_lookup_family="AUTO"),
        dns_service("auto4", "fam-auto4.dns.test", p)],       # AUTO is the default
        routes=[("/v6", "v6", None), ("/auto4", "auto4", None), ("/auto", "auto", None)])
    v6_addr = f"[::1]:{p}"
    assert v6.addr == v6_addr
    wait_addrs(px, admin, "v6", [v6_addr])
    wait_addrs(px, admin, "auto", [v6_addr])
    wait_addrs(px, admin, "auto4", [v4.addr])
    wait_addrs(px, admin, "v4", [v4.addr])
    for path, want in (("/v6", "v6"), ("/auto4", "v4"), ("/auto", "v6"), ("/v4", "v4")):
        assert served_by(port, 2, path) == {want}, path
    eps = endpoints(admin, "v6")
    assert eps[0].get("discovered_from") == f"fam-v6.dns.test:{p}", eps
    # a couple of refreshes later, the types each one asked
    n = srv.queries("fam-auto4.dns.test", "A")
    assert wait_for(lambda: srv.queries("fam-auto4.dns.test", "A") >= n + 2, WAIT)
    assert srv.queries("fam-v6.dns.test", "A") == 0
    assert srv.queries("fam-v6.dns.test", "AAAA") >= 2
    assert srv.queries("fam-v4.dns.test", "AAAA") == 0
    assert srv.queries("fam-auto.dns.test", "AAAA") >= 2
    assert srv.queries("fam-auto.dns.test", "A") == 0, "AUTO asked A although AAAA answered"
    assert srv.queries("fam-auto4.dns.test", "AAAA") >= 2
    assert metric(admin_metrics(admin), "switchyard_endpoint_healthy", backend_service="v6",
                  endpoint=v6_addr) is not None


# ---------------------------------------------------------------------------
# readiness, reload, metrics
# ---------------------------------------------------------------------------

def test_ready_is_503_until_every_name_had_its_first_answer(proxy, beds, dns_server):
    """The DNS server is down at start: /ready says 503 "resolving". Back up,
    one name answers SERVFAIL and the other its records: a failure counts as
    a first answer, so /ready turns 200."""
    srv = dns_server
    p = free_port()
    bed = beds("127.0.0.2", p, "b2")
    srv.servfail("bad.dns.test")
    srv.set("good.dns.test", ["127.0.0.2"], ttl=1)
    srv.pause()
    # long enough for the queries sent while down to still be pending at resume
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("good", "good.dns.test", p, dns_lookup_family="V4_ONLY"),
        dns_service("bad", "bad.dns.test", p, dns_lookup_family="V4_ONLY")],
        dns_timeout="1s", dns_attempts=5)
    assert wait_for(lambda: srv.queries("good.dns.test") >= 1
                    and srv.queries("bad.dns.test") >= 1, WAIT), srv.log()
    status, body = admin_get(admin, "/ready")
    assert (status, body.strip()) == (503, "resolving"), (status, body)
    assert instances(port, 1)[0][0] == 503   # nothing to send to yet
    srv.resume()
    assert wait_for(lambda: admin_get(admin, "/ready")[0] == 200, WAIT), \
        (admin_get(admin, "/ready"), srv.log(), px.stderr()[-2000:])
    assert srv.answered("bad.dns.test") >= 1
    assert addrs(admin, "bad") == []
    wait_addrs(px, admin, "good", [bed.addr])
    assert served_by(port, 2) == {"b2"}


def test_reload_keeps_the_set_of_a_name_that_stays(proxy, beds, dns_server):
    """A reload that keeps service/name/family keeps its set (the DNS server
    does not answer that name any more, so nothing could re-learn it); a
    name the reload adds is resolved; the metrics of both are right."""
    srv = dns_server
    p = free_port()
    b = {i: beds(f"127.0.0.{i}", p, f"b{i}") for i in (2, 3, 4)}
    keep, new = "keep.dns.test", "new.dns.test"
    kl, nl = f"{keep}:{p}", f"{new}:{p}"
    srv.set(keep, ["127.0.0.2", "127.0.0.3"], ttl=1)
    srv.set(new, ["127.0.0.4"], ttl=1)
    s_keep = dns_service("svc", keep, p, dns_lookup_family="V4_ONLY")
    s_new = dns_service("svc2", new, p, dns_lookup_family="V4_ONLY")
    port, admin = free_ports(2)
    px = proxy(config(port, admin, srv, [s_keep]), expect_ports=[port, admin])
    wait_addrs(px, admin, "svc", [b[2].addr, b[3].addr])
    srv.drop(keep)
    # a query has gone unanswered since: no success is in flight any more
    n = srv.queries(keep)
    assert wait_for(lambda: srv.queries(keep) > n, WAIT)
    successes = srv.answered(keep)
    assert resolutions(admin, "svc", kl, "success") == successes
    v0 = backends_doc(admin)["version"]

    px.write_config(config(port, admin, srv, [s_keep, s_new],
                           routes=[("/new", "svc2", None)]))
    px.reload()
    doc = wait_for(lambda: (lambda d: d if d and d["version"] != v0 else None)(
        backends_doc(admin)), WAIT)
    assert doc, px.stderr()[-2000:]
    # the first snapshot of the new config already has the kept set
    assert sorted(e["address"] for e in endpoints(admin, "svc", doc)) == \
        sorted([b[2].addr, b[3].addr]), doc
    wait_addrs(px, admin, "svc2", [b[4].addr])
    assert served_by(port, 6) == {"b2", "b3"}
    assert served_by(port, 2, "/new") == {"b4"}
    assert srv.answered(keep) == successes   # nothing re-learnt it
    assert wait_for(lambda: resolutions(admin, "svc", kl, "failure") >= 1, WAIT)
    m = admin_metrics(admin)
    assert metric(m, "switchyard_dns_addresses", backend_service="svc", name=kl) == 2, m
    assert metric(m, "switchyard_dns_addresses", backend_service="svc2", name=nl) == 1, m
    # counters survive the reload
    assert metric(m, "switchyard_dns_resolutions_total", backend_service="svc", name=kl,
                  result="success") == successes
    assert metric(m, "switchyard_dns_resolutions_total", backend_service="svc2", name=nl,
                  result="success") >= 1
    for i in (2, 3):
        assert metric(m, "switchyard_endpoint_healthy", backend_service="svc",
                      endpoint=b[i].addr) is not None, m
    assert metric(m, "switchyard_endpoint_healthy", backend_service="svc2",
                  endpoint=b[4].addr) is not None, m

    # A reload that drops svc2 (back to the first config, version v0 again):
    # its name is forgotten, svc still keeps its set.
    v1 = doc["version"]
    px.write_config(config(port, admin, srv, [s_keep]))
    px.reload()
    doc = wait_for(lambda: (lambda d: d if d and d["version"] != v1 else None)(
        backends_doc(admin)), WAIT)
    assert doc, px.stderr()[-2000:]
    assert endpoints(admin, "svc2", doc) is None, doc
    assert sorted(e["address"] for e in endpoints(admin, "svc", doc)) == \
        sorted([b[2].addr, b[3].addr]), doc
    m = admin_metrics(admin)
    assert metric(m, "switchyard_dns_addresses", backend_service="svc2") is None, m
    assert metric(m, "switchyard_dns_resolutions_total", backend_service="svc2") is None, m
    assert metric(m, "switchyard_dns_addresses", backend_service="svc", name=kl) == 2, m
    assert served_by(port, 6) == {"b2", "b3"}


# ---------------------------------------------------------------------------
# consistent hashing
# ---------------------------------------------------------------------------

def test_ring_hash_keys_mostly_stay_when_an_address_is_added(proxy, beds, dns_server):
    """RING_HASH on a header: 4 addresses, then 5. About a fifth of the keys
    move, all of them to the new address; the rest keep their endpoint."""
    srv = dns_server
    p = free_port()
    b = {i: beds(f"127.0.0.{i}", p, f"b{i}") for i in (2, 3, 4, 5, 6)}
    name = "ring.dns.test"
    srv.set(name, [f"127.0.0.{i}" for i in (2, 3, 4, 5)], ttl=1)
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("svc", name, p, dns_lookup_family="V4_ONLY",
                    locality_lb_policy="RING_HASH", session_affinity="HEADER_FIELD",
                    consistent_hash={"http_header_name": "x-user"})])
    wait_addrs(px, admin, "svc", [b[i].addr for i in (2, 3, 4, 5)])
    keys = [f"user-{k}" for k in range(200)]

    def mapping():
        out = {}
        with H1Conn(port) as c:
            for k in keys:
                c.send(request_bytes("GET", "/", headers=[("x-user", k)]))
                r = c.read_response()
                assert r.status == 200, r
                out[k] = r.header("x-testbed-instance")
        return out

    before = mapping()
    assert set(before.values()) == {"b2", "b3", "b4", "b5"}
    assert mapping() == before   # stable while nothing changes
    srv.set(name, [f"127.0.0.{i}" for i in (2, 3, 4, 5, 6)], ttl=1)
    wait_addrs(px, admin, "svc", [b[i].addr for i in (2, 3, 4, 5, 6)])
    after = mapping()
    moved = {k: (before[k], after[k]) for k in keys if before[k] != after[k]}
    assert all(to == "b6" for _, to in moved.values()), moved
    # expected share 1/5 (40 of 200); ring hash with ~1k points per ring
    assert 10 <= len(moved) <= 80, len(moved)


def test_reload_to_another_resolver_keeps_sets_until_it_answers(proxy, beds, dns_server):
    """A reload that changes the dns block asks every name again through the
    new resolver at once; until it answers, the last set stays; the old
    server is asked no more."""
    old = dns_server
    p = free_port()
    b2, b3 = beds("127.0.0.2", p, "b2"), beds("127.0.0.3", p, "b3")
    name = "moved.dns.test"
    old.set(name, ["127.0.0.2"], ttl=1)
    new = DnsServer().start()
    try:
        new.set(name, ["127.0.0.3"], ttl=1)
        new.pause()
        services = [dns_service("svc", name, p, dns_lookup_family="V4_ONLY")]
        port, admin = free_ports(2)
        px = proxy(config(port, admin, old, services), expect_ports=[port, admin])
        wait_addrs(px, admin, "svc", [b2.addr])
        v0 = backends_doc(admin)["version"]
        px.write_config(config(port, admin, new, services))
        px.reload()
        doc = wait_for(lambda: (lambda d: d if d and d["version"] != v0 else None)(
            backends_doc(admin)), WAIT)
        assert doc, px.stderr()[-2000:]
        assert wait_for(lambda: new.queries(name) >= 1, WAIT), new.log()
        n_old = old.queries(name)
        assert addrs(admin, "svc") == [b2.addr]        # kept while the new one is silent
        assert served_by(port, 2) == {"b2"}
        new.resume()
        wait_addrs(px, admin, "svc", [b3.addr])
        n_new = new.queries(name)
        assert wait_for(lambda: new.queries(name) >= n_new + 3, WAIT)
        assert old.queries(name) == n_old, "the replaced resolver is still asked"
        assert served_by(port, 2) == {"b3"}
    finally:
        new.stop()
    assert not new.errors, new.errors


def test_static_and_dns_endpoints_in_one_service(proxy, beds, testbed, dns_server):
    """A numeric endpoint of a DNS service stays static (no discovered_from);
    each address of the name gets the name's weight."""
    srv = dns_server
    st = testbed(name="static")
    p = free_port()
    b2, b3 = beds("127.0.0.2", p, "b2"), beds("127.0.0.3", p, "b3")
    name = "mix.dns.test"
    srv.set(name, ["127.0.0.2", "127.0.0.3"], ttl=1)
    svc = dns_service("svc", name, p, dns_lookup_family="V4_ONLY")
    svc["endpoints"] = [{"address": st.addr, "weight": 1},
                        {"address": f"{name}:{p}", "weight": 3}]
    px, port, admin = start_proxy(proxy, srv, [svc])
    wait_addrs(px, admin, "svc", [st.addr, b2.addr, b3.addr])
    eps = {e["address"]: e for e in endpoints(admin, "svc")}
    assert "discovered_from" not in eps[st.addr], eps
    assert eps[st.addr]["weight"] == 1, eps
    for b in (b2, b3):
        assert eps[b.addr].get("discovered_from") == f"{name}:{p}", eps
        assert eps[b.addr]["weight"] == 3, eps
    got = instances(port, 70)
    assert all(s == 200 for s, _ in got), got
    count = {i: sum(1 for _, x in got if x == i) for i in ("static", "b2", "b3")}
    # weights 1:3:3 -> 10:30:30 expected
    assert 0 < count["static"] < min(count["b2"], count["b3"]), count
    # the name shrinks; the static endpoint is untouched
    srv.set(name, ["127.0.0.3"], ttl=1)
    wait_addrs(px, admin, "svc", [st.addr, b3.addr])
    assert served_by(port, 8) == {"static", "b3"}


def post_health(bed, status):
    """Turn the testbed's /healthz to ok or fail (straight to it, not proxied)."""
    with H1Conn(bed.port, host=bed.ip) as c:
        c.send(request_bytes("POST", f"/testbed/health?status={status}"))
        r = c.read_response()
    assert r.status == 200, r


def test_health_state_of_staying_addresses_is_kept(proxy, beds, dns_server):
    """Health checks on a DNS service: when the set grows, an address that
    stays keeps its verdict (unhealthy here: still no traffic, no new
    transition); the new address starts unknown and is checked."""
    srv = dns_server
    p = free_port()
    b = {i: beds(f"127.0.0.{i}", p, f"b{i}") for i in (2, 3, 4)}
    name = "hc.dns.test"
    srv.set(name, ["127.0.0.2", "127.0.0.3"], ttl=1)
    hc = {"name": "hc", "type": "HTTP", "request_path": "/healthz", "check_interval": "200ms",
          "timeout": "500ms", "healthy_threshold": 2, "unhealthy_threshold": 2}
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("svc", name, p, dns_lookup_family="V4_ONLY", health_checks=["hc"])],
        checks=[hc])

    def transition(addr, frm, to, after=0):
        pat = re.compile(rf"health: backend_service=svc endpoint={re.escape(addr)} "
                         rf"{frm}->{to} ")
        return pat.search(px.stderr(), after)

    for i in (2, 3):
        assert wait_for(lambda: transition(b[i].addr, "unknown", "healthy"), WAIT), \
            px.stderr()[-2000:]
    post_health(b[3], "fail")
    assert wait_for(lambda: transition(b[3].addr, "healthy", "unhealthy"), WAIT), \
        px.stderr()[-2000:]
    mark = len(px.stderr())
    srv.set(name, ["127.0.0.2", "127.0.0.3", "127.0.0.4"], ttl=1)
    wait_addrs(px, admin, "svc", [b[i].addr for i in (2, 3, 4)])
    eps = {e["address"]: e for e in endpoints(admin, "svc")}
    assert eps[b[3].addr]["healthy"] is False, eps
    assert served_by(port, 12) == {"b2", "b4"}   # b4: unknown = serving
    assert wait_for(lambda: transition(b[4].addr, "unknown", "healthy", mark), WAIT), \
        px.stderr()[-2000:]
    assert not transition(b[3].addr, r"\w+", r"\w+", mark), px.stderr()[mark:]
    assert not transition(b[2].addr, r"\w+", r"\w+", mark), px.stderr()[mark:]
    post_health(b[3], "ok")
    assert wait_for(lambda: transition(b[3].addr, "unhealthy", "healthy", mark), WAIT)
    assert served_by(port, 12) == {"b2", "b3", "b4"}


def test_in_flight_exchanges_on_a_removed_address(proxy, beds, dns_server):
    """connection_draining with draining_timeout 1s: when the name stops
    answering an address, an exchange on it that ends within the drain
    finishes (200), one that would take longer is ended (503, "drained" in
    its tries); new exchanges go to the new address at once."""
    srv = dns_server
    p = free_port()
    b2, b3 = beds("127.0.0.2", p, "b2"), beds("127.0.0.3", p, "b3")
    name = "drain.dns.test"
    srv.set(name, ["127.0.0.2"], ttl=1)
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("svc", name, p, dns_lookup_family="V4_ONLY",
                    connection_draining={"draining_timeout": "1s"})])
    wait_addrs(px, admin, "svc", [b2.addr])
    results = {}

    def slow(tag, delay):
        try:
            with H1Conn(port, timeout=15) as c:
                c.send(request_bytes("GET", f"/{tag}", headers=[("x-testbed-delay", delay)]))
                results[tag] = c.read_response(timeout=15)
        except Exception as e:   # reported by the asserts below
            results[tag] = e

    threads = [threading.Thread(target=slow, args=("short", "700ms")),
               threading.Thread(target=slow, args=("long", "8s"))]
    for t in threads:
        t.start()
    try:
        active = lambda: sum(e["active_requests"] for e in endpoints(admin, "svc") or [])
        assert wait_for(lambda: active() == 2, WAIT), endpoints(admin, "svc")
        srv.set(name, ["127.0.0.3"], ttl=1)
        wait_addrs(px, admin, "svc", [b3.addr])
        assert served_by(port, 3) == {"b3"}
    finally:
        for t in threads:
            t.join(15)
    short, long_ = results.get("short"), results.get("long")
    assert getattr(short, "status", None) == 200, short
    assert short.header("x-testbed-instance") == "b2"
    assert getattr(long_, "status", None) == 503, long_
    log = [e for e in px.access_log(min_entries=5) if e.get("path") == "/long"]
    assert log and "drained" in log[0]["tries"], log


def test_answer_too_big_for_udp(proxy, beds, dns_server):
    """40 A records (as a headless service of 40 pods has) do not fit a
    512-byte UDP answer: the server sets TC, and a resolver must ask again
    over TCP (or offer EDNS0). Every record becomes an endpoint."""
    srv = dns_server
    p = free_port()
    b10 = beds("127.0.1.10", p, "b10")
    name = "big.dns.test"
    many = [f"127.0.1.{i}" for i in range(10, 50)]
    srv.set(name, many, ttl=5)
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("svc", name, p, dns_lookup_family="V4_ONLY")])
    want = sorted(f"{ip}:{p}" for ip in many)
    ok = wait_for(lambda: addrs(admin, "svc") == want, 5)
    m = admin_metrics(admin)
    assert ok, (f"/backends has {len(addrs(admin, 'svc') or [])} of 40 addresses; "
                f"queries udp={srv.queries(name, tcp=False)} tcp={srv.queries(name, tcp=True)}; "
                f"{[(k, v) for k, v in m.items() if 'dns_resolutions' in k]}\n"
                f"{px.stderr()[-1500:]}")
    assert metric(m, "switchyard_dns_addresses", backend_service="svc",
                  name=f"{name}:{p}") == 40
    assert b10.addr in addrs(admin, "svc")


def test_resolver_on_ipv6(proxy, beds):
    """A resolver given as "[::1]:PORT" is asked over IPv6."""
    srv = DnsServer(host="::1").start()
    try:
        p = free_port()
        bed = beds("127.0.0.2", p, "b2")
        srv.set("v6resolver.dns.test", ["127.0.0.2"], ttl=1)
        assert srv.addr.startswith("[::1]:")
        px, port, admin = start_proxy(proxy, srv, [
            dns_service("svc", "v6resolver.dns.test", p, dns_lookup_family="V4_ONLY")])
        wait_addrs(px, admin, "svc", [bed.addr])
        assert served_by(port, 2) == {"b2"}
        assert srv.answered("v6resolver.dns.test") >= 1
    finally:
        srv.stop()
    assert not srv.errors, srv.errors


def test_config_check_does_not_resolve(tmp_path, dns_server):
    """`switchyard -t` validates host:port syntax of DNS endpoints and asks
    no DNS server; a bad host name is an error with its position."""
    srv = dns_server
    port, admin, p = free_ports(3)
    good = tmp_path / "good.yaml"
    good.write_text(config(port, admin, srv, [dns_service("svc", "nowhere.dns.test", p)]))
    r = run_switchyard(["-t", "-c", good])
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(config(port, admin, srv, [dns_service("svc", "no where.dns.test", p)]))
    r = run_switchyard(["-t", "-c", bad])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert re.search(rf"{re.escape(str(bad))}:\d+:\d+: ", r.stdout + r.stderr), r
    assert srv.queries() == 0, srv.log()


def test_tls_and_authority_use_the_name(proxy, beds, dns_server, certs):
    """A discovered address is named by its DNS name: TLS to it (HTTPS and
    HTTP2) checks the certificate against the name (it is for *.other.test
    and has no IP address: the same backend as a numeric endpoint fails the
    check), and a request without :authority reaches an H2C backend with the
    name as its authority."""
    srv = dns_server
    p, p2 = free_ports(2)
    bt = beds("127.0.0.2", p, "t2", tls=(certs.other_cert, certs.other_key))
    bp = beds("127.0.0.3", p2, "p3")
    srv.set("api.other.test", ["127.0.0.2"], ttl=1)
    srv.set("h2c.dns.test", ["127.0.0.3"], ttl=1)
    tls = {"ca_file": str(certs.ca), "verify": True}
    v4 = {"dns_lookup_family": "V4_ONLY"}
    static = {"name": "static", "protocol": "HTTPS", "timeout": "10s", "tls": tls,
              "endpoints": [{"address": bt.addr}]}
    px, port, admin = start_proxy(proxy, srv, [
        dns_service("h2c", "h2c.dns.test", p2, protocol="H2C", **v4),
        dns_service("https", "api.other.test", p, protocol="HTTPS", tls=tls, **v4),
        dns_service("http2", "api.other.test", p, protocol="HTTP2", tls=tls, **v4),
        static],
        routes=[("/https", "https", None), ("/http2", "http2", None),
                ("/static", "static", None)],
        listener_extra="    accept_http_10: true\n")
    wait_addrs(px, admin, "https", [bt.addr])
    wait_addrs(px, admin, "http2", [bt.addr])
    wait_addrs(px, admin, "h2c", [bp.addr])
    # control, before any connection to the backend exists: by its IP, the
    # certificate check fails
    assert instances(port, 1, "/static")[0][0] in (502, 503)
    for path, proto in (("/https", "HTTP/1.1"), ("/http2", "HTTP/2")):
        with H1Conn(port) as c:
            c.send(request_bytes("GET", path))
            r = c.read_response()
        assert r.status == 200, (path, r, px.stderr()[-1500:])
        assert r.header("x-testbed-instance") == "t2"
        assert r.json()["protocol"] == proto, r.json()
    # HTTP/1.0 without Host: the H2C request gets the name as :authority
    with H1Conn(port) as c:
        c.send(request_bytes("GET", "/h2c", host=None, version="HTTP/1.0"))
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["headers"].get("host") == f"h2c.dns.test:{p2}", r.json()


def test_tls_connection_of_one_name_is_not_used_for_another(proxy, beds, dns_server, certs):
    """Two names (and a numeric endpoint) on one address, TLS with verify:
    the certificate (*.other.test) is good for api.other.test only. Requests
    of the other name and of the IP fail the check before and *after*
    api.other.test has a verified connection to that address: a connection
    verified (and SNI-named) for one name must not carry another name's
    requests (a shared ingress address routes by SNI)."""
    srv = dns_server
    p = free_port()
    bt = beds("127.0.0.2", p, "t2", tls=(certs.other_cert, certs.other_key))
    srv.set("api.other.test", ["127.0.0.2"], ttl=1)
    srv.set("web.dns.test", ["127.0.0.2"], ttl=1)
    tls = {"ca_file": str(certs.ca), "verify": True}
    v4 = {"dns_lookup_family": "V4_ONLY"}
    services = [dns_service("good", "api.other.test", p, protocol="HTTPS", tls=tls, **v4),
                dns_service("bad", "web.dns.test", p, protocol="HTTPS", tls=tls, **v4),
                {"name": "ip", "protocol": "HTTPS", "timeout": "10s", "tls": tls,
                 "endpoints": [{"address": bt.addr}]},
                dns_service("good2", "api.other.test", p, protocol="HTTP2", tls=tls, **v4),
                dns_service("bad2", "web.dns.test", p, protocol="HTTP2", tls=tls, **v4)]
    px, port, admin = start_proxy(proxy, srv, services, routes=[
        (f"/{s['name']}/", s["name"], None) for s in services])
    for s in ("good", "bad", "good2", "bad2"):
        wait_addrs(px, admin, s, [bt.addr])

    def status(svc):
        return instances(port, 1, f"/{svc}/")[0][0]

    before = {s: status(s) for s in ("bad", "ip", "bad2")}
    assert all(v in (502, 503) for v in before.values()), before
    assert (status("good"), status("good2")) == (200, 200)
    after = {s: status(s) for s in ("bad", "ip", "bad2")}
    assert all(v in (502, 503) for v in after.values()), \
        f"after a verified connection for api.other.test: {after} (before: {before})"


class HostRecorder:
    """A minimal HTTP/1.1 server on ip:port (a thread) that answers every
    request 200 with Connection: close and records its Host header."""

    def __init__(self, ip, port):
        self.hosts = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((ip, port))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:   # timeout: look at stop_ev again
                continue
            with c:
                c.settimeout(2)
                buf = b""
                try:
                    while b"\r\n\r\n" not in buf and len(buf) < 65536:
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    for line in buf.split(b"\r\n")[1:]:
                        if line.lower().startswith(b"host:"):
                            self.hosts.append(line[5:].strip().decode("latin-1"))
                    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"
                              b"connection: close\r\n\r\n")
                except OSError:
                    pass

    def stop(self):
        self.stop_ev.set()
        self.thread.join(5)
        self.sock.close()


def test_health_check_host_is_the_name(proxy, dns_server):
    """An HTTP health check of a discovered address sends the DNS name (and
    port) as Host, not the IP."""
    srv = dns_server
    p = free_port()
    rec = HostRecorder("127.0.0.2", p)
    try:
        srv.set("probe.dns.test", ["127.0.0.2"], ttl=1)
        hc = {"name": "hc", "type": "HTTP", "request_path": "/healthz",
              "check_interval": "200ms", "timeout": "500ms",
              "healthy_threshold": 1, "unhealthy_threshold": 2}
        px, port, admin = start_proxy(proxy, srv, [
            dns_service("svc", "probe.dns.test", p, dns_lookup_family="V4_ONLY",
                        health_checks=["hc"])], checks=[hc])
        assert wait_for(lambda: len(rec.hosts) >= 2, WAIT), (rec.hosts, px.stderr()[-1500:])
    finally:
        rec.stop()
    assert set(rec.hosts) == {f"probe.dns.test:{p}"}, rec.hosts


def test_reload_that_shortens_the_refresh_rate_applies_it(proxy, beds, dns_server):
    """dns_refresh_rate 30s, then a reload to 200ms: the name is asked again
    at the new rate, not only when the 30 s timer of the old config fires
    (a slip such as `1h` fixed by a reload would otherwise take an hour)."""
    srv = dns_server
    p = free_port()
    b2, b3 = beds("127.0.0.2", p, "b2"), beds("127.0.0.3", p, "b3")
    name = "rate.dns.test"
    srv.set(name, ["127.0.0.2"], ttl=1)
    port, admin = free_ports(2)
    slow = dns_service("svc", name, p, dns_lookup_family="V4_ONLY", dns_refresh_rate="30s")
    px = proxy(config(port, admin, srv, [slow]), expect_ports=[port, admin])
    wait_addrs(px, admin, "svc", [b2.addr])
    v0 = backends_doc(admin)["version"]
    n = srv.queries(name)
    px.write_config(config(port, admin, srv, [dict(slow, dns_refresh_rate=REFRESH)]))
    px.reload()
    assert wait_for(lambda: (backends_doc(admin) or {}).get("version") not in (None, v0), WAIT)
    srv.set(name, ["127.0.0.3"], ttl=1)
    ok = wait_for(lambda: srv.queries(name) >= n + 3, 5)
    assert ok, (f"{srv.queries(name) - n} queries in 5 s after the reload to "
                f"dns_refresh_rate {REFRESH}")
    wait_addrs(px, admin, "svc", [b3.addr])
