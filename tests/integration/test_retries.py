"""Retries through the real proxy (issue 5, SPEC.md "retryPolicy"): every
retry condition (a case that retries and one that must not), the default
policy, num_retries, nothing retried after response headers, the request-body
cap, backoff bounds, circuit_breakers.max_retries, refused streams, and the
access log's attempts / tries / response_flags.

Attempts are counted from the backend's side: a request carries
`x-testbed-fail-first: N` (0 = never fail) and a unique `x-testbed-key`, so
the testbed counts it per key; `seen(tb, key)` asks that testbed directly how
many requests with the key it got. fail-first counts per testbed process and a
retry prefers an endpoint not yet tried, so counting tests use ONE endpoint.

The helpers here (config builder, counting, gRPC calls, a tiny HTTP/2
backend) are shared with test_timeouts.py and test_faults.py.
"""

import json
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from h2.errors import ErrorCodes

from conftest import HOST, admin_metrics, free_port, free_ports, wait_for
from h1util import H1Conn, NoResponse, get, request_bytes, uniq
from h2util import H2Conn

GRPC_CT = "application/grpc"
# Conditions of SPEC.md named after the gRPC status they retry.
GRPC_CONDITIONS = {"cancelled": 1, "deadline-exceeded": 4, "internal": 13,
                   "resource-exhausted": 8, "unavailable": 14}


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------

def _flow(v):
    """A YAML flow value (JSON is YAML)."""
    return json.dumps(v)


def config(port, endpoints, *, protocol="HTTP", route_action=None, routes=(),
           timeout="10s", service_extra=None, listener_extra=None, services=None,
           admin_port=None):
    """One listener on 127.0.0.1:port; backend service `svc` (protocol, the
    endpoint addresses, timeout, service_extra keys); every request goes to
    `svc` with `route_action` (a dict, or None for the defaults), except paths
    starting with a prefix of `routes` [(prefix, route_action or None,
    service name or None)]. `services` adds more backend services:
    {name: (protocol, [addresses], extra dict)}. admin_port: the admin API
    listens there."""
    lx = "".join(f"    {k}: {_flow(v)}\n" for k, v in (listener_extra or {}).items())
    rules = []
    for i, r in enumerate(routes):
        prefix, action = r[0], r[1]
        svc = r[2] if len(r) > 2 and r[2] else "svc"
        rules.append(f"          - priority: {i + 1}\n"
                     f"            match_rules: [{{prefix_match: {_flow(prefix)}}}]\n"
                     f"            service: {svc}\n"
                     + (f"            route_action: {_flow(action)}\n" if action else ""))
    rules.append("          - priority: 1000\n"
                 "            service: svc\n"
                 + (f"            route_action: {_flow(route_action)}\n" if route_action else ""))
    svcs = {"svc": (protocol, endpoints, dict(service_extra or {}, timeout=timeout))}
    svcs.update(services or {})
    sx = ""
    for name, (proto, eps, extra) in svcs.items():
        sx += (f"  - name: {name}\n    protocol: {proto}\n    endpoints:\n"
               + "".join(f"      - {{address: \"{a}\"}}\n" for a in eps)
               + "".join(f"    {k}: {_flow(v)}\n" for k, v in (extra or {}).items()))
    ax = f'admin: {{address: "{HOST}:{admin_port}"}}\n' if admin_port else ""
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    protocol: HTTP
    url_map: main
{lx}access_log: {{enabled: true, path: "-", format: json}}
{ax}drain_timeout: 2s
url_maps:
  - name: main
    default_service: svc
    host_rules:
      - hosts: ["*"]
        path_matcher: pm
    path_matchers:
      - name: pm
        default_service: svc
        route_rules:
{"".join(rules)}backend_services:
{sx}"""


def start(proxy, testbed, n_backends=1, endpoints=None, **kw):
    """Testbeds tb1..tbN plus a proxy in front: (proxy, port, [testbeds]).
    endpoints: addresses instead of the testbeds' (e.g. a dead port first)."""
    tbs = [testbed(f"tb{i + 1}") for i in range(n_backends)]
    port = free_port()
    eps = endpoints if endpoints is not None else [tb.addr for tb in tbs]
    px = proxy(config(port, eps, **kw), workers=1, expect_ports=[port])
    return px, port, tbs


def ff(key, n=0, status=None, delay=None, extra=()):
    """Steering headers: fail the first n requests with key (n=0: only count)."""
    h = [("x-testbed-fail-first", str(n)), ("x-testbed-key", key)]
    if status is not None:
        h.append(("x-testbed-fail-status", str(status)))
    if delay is not None:
        h.append(("x-testbed-fail-delay", delay))
    return h + list(extra)


def seen(tb, key):
    """How many requests with x-testbed-key `key` the testbed `tb` received
    (asked directly, not through the proxy)."""
    r = get(tb.port, "/count", headers=ff(key, 0))  # this request counts too: call once
    assert r.status == 200, r
    return int(r.header("x-testbed-attempt")) - 1


def last_log(px, n):
    """The n-th access log entry (waits for n entries), and checks there are no more."""
    log = px.access_log(min_entries=n)
    assert len(log) >= n, (log, px.stderr()[-3000:])
    assert len(log) == n, f"more access log entries than exchanges: {log}"
    return log[-1]


def flags(entry):
    return set(entry["response_flags"].split(",")) - {"-"}


def tries(entry):
    """The access log's tries field as [(endpoint, reason)]."""
    if not entry["tries"]:
        return []
    out = []
    for t in entry["tries"].split(";"):
        ep, _, why = t.rpartition(":")
        out.append((ep, why))
    return out


def grpc_call(port, path="/pkg.Svc/Method", headers=(), timeout=10.0, body=None):
    """A unary-shaped gRPC request over h2c prior knowledge: the Stream."""
    with H2Conn(port, timeout=timeout) as c:
        sid = c.request("POST", path, headers=[("content-type", GRPC_CT), ("te", "trailers"),
                                               *headers], body=body)
        st = c.wait_stream(sid, timeout)
        assert st.done, f"no answer to the gRPC call within {timeout}s"
        return st


def grpc_status_of(st):
    """grpc-status of a response: trailers, else the head (trailers-only)."""
    for k, v in list(st.trailers) + list(st.headers):
        if k == "grpc-status":
            return int(v)
    return None


class H2Backend:
    """A tiny h2c backend on python-h2, for what the testbed cannot do:
    refuse streams (RST_STREAM REFUSED_STREAM), send GOAWAY, and record the
    RST_STREAMs the proxy sends. `decide(n, headers, body)` is called once
    per complete request (n = 1, 2, ... over the backend's life) and returns
    "refuse", "goaway", "hold" (never answer) or a status int (answered with
    a small body). Every thread and socket is bounded and closed by stop()."""

    def __init__(self, decide):
        self.decide = decide
        self.requests = []   # (n, headers dict, body bytes)
        self.resets = []     # (stream id, error code) received from the proxy
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._socks = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"{HOST}:{self.port}"
        self._spawn(self._accept_loop)

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                s, _ = self.lsock.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self.connections += 1
                self._socks.append(s)
            self._spawn(self._serve, s)

    def _serve(self, s):
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config=cfg)
        conn.initiate_connection()
        s.settimeout(0.1)
        pending = {}   # sid -> [headers, body]
        try:
            s.sendall(conn.data_to_send())
            while not self._stop.is_set():
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    return
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    return
                goaway = False
                for ev in events:
                    if isinstance(ev, h2.events.RequestReceived):
                        pending[ev.stream_id] = [dict(ev.headers), b""]
                    elif isinstance(ev, h2.events.DataReceived):
                        if ev.stream_id in pending:
                            pending[ev.stream_id][1] += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        with self._lock:
                            self.resets.append((ev.stream_id, ev.error_code))
                    if isinstance(ev, h2.events.StreamEnded) or (
                            isinstance(ev, h2.events.RequestReceived) and ev.stream_ended):
                        sid = ev.stream_id
                        if sid not in pending:
                            continue
                        hdrs, body = pending.pop(sid)
                        with self._lock:
                            n = len(self.requests) + 1
                            self.requests.append((n, hdrs, body))
                        what = self.decide(n, hdrs, body)
                        if what == "refuse":
                            conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
                        elif what == "goaway":
                            conn.close_connection(error_code=0, last_stream_id=0)
                            goaway = True
                        elif what == "hold":
                            pass
                        else:
                            out = json.dumps({"n": n, "body_bytes": len(body)}).encode()
                            conn.send_headers(sid, [(":status", str(what)),
                                                    ("content-type", "application/json"),
                                                    ("content-length", str(len(out)))])
                            conn.send_data(sid, out, end_stream=True)
                s.sendall(conn.data_to_send())
                if goaway:
                    self._linger(s, 2.0)
                    return
        except OSError:
            return
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _linger(self, s, timeout):
        """Close gracefully after a GOAWAY: FIN after it, then read (bounded)
        until the proxy closes too. Closing at once with unread input would
        send a reset that can overtake the GOAWAY."""
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.1) + 2):
            if time.monotonic() >= deadline or self._stop.is_set():
                return
            try:
                if not s.recv(65536):
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        self._stop.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        for t in self._threads:
            t.join(timeout=2)


@pytest.fixture
def h2backend():
    """Factory: start(decide) -> H2Backend; stopped at teardown."""
    started = []

    def start_backend(decide):
        b = H2Backend(decide)
        started.append(b)
        return b

    yield start_backend
    for b in started:
        b.stop()


# ---------------------------------------------------------------------------
# HTTP status conditions: 5xx, gateway-error, retriable-4xx
# ---------------------------------------------------------------------------

# (conditions, status of the failing first try, retried?)
STATUS_CASES = [
    (["5xx"], 500, True),
    (["5xx"], 503, True),
    (["5xx"], 409, False),
    (["gateway-error"], 502, True),
    (["gateway-error"], 504, True),
    (["gateway-error"], 500, False),
    (["retriable-4xx"], 409, True),
    (["retriable-4xx"], 404, False),
    (["retriable-4xx"], 503, False),
    (["connect-failure"], 503, False),
    (["refused-stream"], 503, False),
    (["unavailable"], 503, False),   # a gRPC condition says nothing about HTTP statuses
    ([], 503, False),                # [] = retry nothing
]


@pytest.mark.parametrize("conds,status,retried", STATUS_CASES,
                         ids=[f"{'+'.join(c) or 'none'}-{s}" for c, s, _ in STATUS_CASES])
def test_status_condition(proxy, testbed, conds, status, retried):
    px, port, (tb,) = start(proxy, testbed, route_action={
        "retry_policy": {"retry_conditions": conds, "num_retries": 1}})
    key = uniq("st")
    r = get(port, "/", headers=ff(key, 1, status=status))
    e = last_log(px, 1)
    if retried:
        assert r.status == 200, (r, e)
        assert r.header("x-testbed-attempt") == "2"
        assert seen(tb, key) == 2
        assert e["attempts"] == 2
        assert [w for _, w in tries(e)][-1] == "done"
    else:
        assert r.status == status, (r, e)
        assert seen(tb, key) == 1
        assert e["attempts"] == 1
        assert "URX" not in flags(e)


def test_post_with_body_retried_under_a_policy(proxy, testbed):
    """With a retry_policy a request with a body is retried (the body is replayed)."""
    px, port, (tb,) = start(proxy, testbed, route_action={
        "retry_policy": {"retry_conditions": ["5xx"], "num_retries": 1}})
    key = uniq("post")
    body = b"x" * 1000
    r = get(port, "/", method="POST", body=body, headers=ff(key, 1))
    assert r.status == 200, r
    assert r.json()["body_bytes"] == len(body)
    assert seen(tb, key) == 2


# ---------------------------------------------------------------------------
# connect-failure
# ---------------------------------------------------------------------------

def test_connect_failure_retried_on_the_other_endpoint(proxy, testbed):
    """A dead endpoint: retried on an endpoint not yet tried (the live one)."""
    tb = testbed("live")
    dead_port, port = free_ports(2)
    dead = f"{HOST}:{dead_port}"
    px = proxy(config(port, [dead, tb.addr], route_action={
        "retry_policy": {"retry_conditions": ["connect-failure"], "num_retries": 1}}),
        expect_ports=[port])
    key = uniq("cf")
    n = 4
    for i in range(n):
        r = get(port, "/", headers=ff(key))
        assert r.status == 200, (i, r, px.access_log())
        assert r.header("x-testbed-instance") == "live"
    assert seen(tb, key) == n
    log = px.access_log(min_entries=n)
    assert len(log) == n
    failed = [e for e in log if e["attempts"] == 2]
    # Round robin over two endpoints: some exchange starts on the dead one.
    assert failed, log
    for e in failed:
        assert tries(e) == [(dead, "connect-failure"), (tb.addr, "done")], e
    for e in log:
        assert e["attempts"] in (1, 2) and e["status"] == 200


def test_connect_failure_retried_until_num_retries(proxy):
    """Only dead endpoints: 1 + num_retries connection attempts, then 503 UF,URX."""
    dead_port, port = free_ports(2)
    dead = f"{HOST}:{dead_port}"
    px = proxy(config(port, [dead], route_action={
        "retry_policy": {"retry_conditions": ["connect-failure"], "num_retries": 2}}),
        expect_ports=[port])
    r = get(port, "/")
    e = last_log(px, 1)
    assert r.status == 503, (r, e)
    assert e["attempts"] == 3
    assert [w for _, w in tries(e)] == ["connect-failure"] * 3
    assert {"UF", "URX"} <= flags(e)


@pytest.mark.parametrize("conds", [["retriable-4xx"], []])
def test_connect_failure_not_retried_without_its_condition(proxy, conds):
    dead_port, port = free_ports(2)
    dead = f"{HOST}:{dead_port}"
    px = proxy(config(port, [dead], route_action={
        "retry_policy": {"retry_conditions": conds, "num_retries": 2}}),
        expect_ports=[port])
    r = get(port, "/")
    e = last_log(px, 1)
    assert r.status == 503, (r, e)
    assert e["attempts"] == 1
    assert "UF" in flags(e) and "URX" not in flags(e)


# ---------------------------------------------------------------------------
# resets before headers (5xx / gateway-error cover "no response at all")
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("steer", [("x-testbed-reset", "before-headers"),
                                   ("x-testbed-close", "1")])
@pytest.mark.parametrize("conds,retried", [(["5xx"], True), (["gateway-error"], True),
                                           (["retriable-4xx"], False)])
def test_reset_before_headers(proxy, testbed, steer, conds, retried):
    """A fresh backend connection reset (or closed) before response headers:
    502 UR; retried under 5xx and gateway-error, not under retriable-4xx."""
    px, port, (tb,) = start(proxy, testbed, route_action={
        "retry_policy": {"retry_conditions": conds, "num_retries": 1}})
    key = uniq("rst")
    r = get(port, "/", headers=ff(key, 0, extra=[steer]))
    e = last_log(px, 1)
    assert r.status == 502, (r, e)
    assert "UR" in flags(e)
    n = 2 if retried else 1
    assert seen(tb, key) == n, e
    assert e["attempts"] == n
    if retried:
        assert "URX" in flags(e)


@pytest.mark.parametrize("method,body,policy,expect", [
    # a POST with a body, no policy: never retried (SPEC), connection reused or not
    ("POST", b"p" * 100, None, 1),
    # a GET with retry_conditions: [] (retry nothing)
    ("GET", b"", {"retry_conditions": []}, 1),
    # a GET, 5xx with num_retries 1: at most 2 attempts in all
    ("GET", b"", {"retry_conditions": ["5xx"], "num_retries": 1}, 2),
], ids=["post-default", "get-retry-nothing", "get-5xx-1-retry"])
def test_reset_on_reused_connection_respects_policy(proxy, testbed, method, body, policy,
                                                    expect):
    """A backend that took the request and then reset the connection before
    headers saw the request: on a reused keep-alive connection this is not a
    "stale connection" to resend transparently. The backend must see the
    request as many times as the policy allows, no more."""
    px, port, (tb,) = start(proxy, testbed,
                            route_action={"retry_policy": policy} if policy else None)
    # Warm the pool: one kept-alive connection to the backend.
    assert get(port, "/warm").status == 200
    key = uniq("reused")
    r = get(port, "/", method=method, body=body,
            headers=ff(key, 0, extra=[("x-testbed-reset", "before-headers")]))
    e = last_log(px, 2)
    assert r.status == 502, (r, e)
    assert seen(tb, key) == expect, e
    assert e["attempts"] == expect, e


# ---------------------------------------------------------------------------
# gRPC conditions (grpc-status in a trailers-only answer, over an H2C backend)
# ---------------------------------------------------------------------------

GRPC_CASES = []
for _cond, _code in GRPC_CONDITIONS.items():
    GRPC_CASES.append((_cond, _code, True))
    # the same status under another gRPC condition: not retried
    _other = "internal" if _cond != "internal" else "unavailable"
    GRPC_CASES.append((_other, _code, False))
GRPC_CASES += [("5xx", 14, False),           # grpc-status is not an HTTP 5xx
               ("unavailable", 0, False),    # OK
               ("unavailable", 2, False)]    # UNKNOWN is in no condition


@pytest.mark.parametrize("cond,code,retried", GRPC_CASES,
                         ids=[f"{c}-{s}" for c, s, _ in GRPC_CASES])
def test_grpc_condition(proxy, testbed, cond, code, retried):
    px, port, (tb,) = start(proxy, testbed, protocol="H2C", route_action={
        "retry_policy": {"retry_conditions": [cond], "num_retries": 2}})
    key = uniq("g")
    st = grpc_call(port, headers=ff(key, 0, extra=[("x-testbed-grpc-status", str(code))]))
    e = last_log(px, 1)
    assert st.status == 200, (st, e)
    assert grpc_status_of(st) == code, (st.headers, st.trailers)
    n = 3 if retried else 1
    assert seen(tb, key) == n, e
    assert e["attempts"] == n
    assert e["protocol"] == "HTTP/2"
    if retried:
        assert "URX" in flags(e)
        assert [w for _, w in tries(e)] == [cond, cond, "done"], e


def test_grpc_unavailable_then_ok(proxy, testbed):
    """fail-first over gRPC: the first try answers grpc-status 14, the retry 0."""
    px, port, (tb,) = start(proxy, testbed, protocol="H2C", route_action={
        "retry_policy": {"retry_conditions": ["unavailable"], "num_retries": 2}})
    key = uniq("g14")
    st = grpc_call(port, headers=ff(key, 1, extra=[("x-testbed-grpc-status", "0")]))
    e = last_log(px, 1)
    assert grpc_status_of(st) == 0, (st.headers, e)
    assert st.header("x-testbed-attempt") == "2"
    assert seen(tb, key) == 2
    assert e["attempts"] == 2 and flags(e) == set()


def test_grpc_http_backend_status_over_h2c(proxy, testbed):
    """HTTP statuses from an H2C backend follow the same rules as HTTP/1.1."""
    px, port, (tb,) = start(proxy, testbed, protocol="H2C", route_action={
        "retry_policy": {"retry_conditions": ["gateway-error"], "num_retries": 1}})
    key = uniq("h2s")
    r = get(port, "/", headers=ff(key, 1, status=503))
    assert r.status == 200, (r, px.access_log())
    assert seen(tb, key) == 2


# ---------------------------------------------------------------------------
# a real gRPC server and client (grpcio) through the proxy
# ---------------------------------------------------------------------------

class GrpcServer:
    """A grpcio server with one unary method /demo.Echo/Say (raw bytes);
    `behave(n, request)` gives (grpc.StatusCode, reply bytes or None) for the
    n-th call. A reply with a non-OK code is sent before the status (which
    then arrives in trailers, after a response head)."""

    def __init__(self, grpc, behave):
        import concurrent.futures
        self.calls = []
        self._lock = threading.Lock()

        def say(request, context):
            with self._lock:
                self.calls.append(request)
                n = len(self.calls)
            code, reply = behave(n, request)
            if code != grpc.StatusCode.OK and reply is None:
                context.abort(code, f"call {n}")
            context.set_code(code)
            return reply

        handler = grpc.method_handlers_generic_handler("demo.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(say)})
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"{HOST}:0")
        self.addr = f"{HOST}:{self.port}"
        self.server.start()

    def stop(self):
        self.server.stop(0).wait(5)


@pytest.fixture
def grpc_server():
    """(grpc module, start(behave) -> GrpcServer); servers stopped at teardown."""
    grpc = pytest.importorskip("grpc")
    started = []

    def start_server(behave):
        srv = GrpcServer(grpc, behave)
        started.append(srv)
        return srv

    yield grpc, start_server
    for srv in started:
        srv.stop()


def _grpc_client_call(grpc, port, payload=b"hi", timeout=10):
    """(code, reply) of /demo.Echo/Say through the proxy with a grpcio client."""
    with grpc.insecure_channel(f"{HOST}:{port}") as ch:
        call = ch.unary_unary("/demo.Echo/Say")
        try:
            return grpc.StatusCode.OK, call(payload, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), None


@pytest.mark.parametrize("conds,retried", [(["unavailable"], True), (["internal"], False)])
def test_grpcio_unavailable(proxy, grpc_server, conds, retried):
    """grpcio client -> proxy (h2c) -> grpcio server (H2C backend service):
    the server fails the first call with UNAVAILABLE."""
    grpc, start_server = grpc_server
    srv = start_server(lambda n, req: (grpc.StatusCode.UNAVAILABLE, None) if n == 1
                       else (grpc.StatusCode.OK, b"ok:" + req))
    port = free_port()
    px = proxy(config(port, [srv.addr], protocol="H2C", route_action={
        "retry_policy": {"retry_conditions": conds, "num_retries": 2}}), expect_ports=[port])
    code, reply = _grpc_client_call(grpc, port)
    e = last_log(px, 1)
    if retried:
        assert (code, reply) == (grpc.StatusCode.OK, b"ok:hi"), e
        assert len(srv.calls) == 2 and e["attempts"] == 2
    else:
        assert code == grpc.StatusCode.UNAVAILABLE, e
        assert len(srv.calls) == 1 and e["attempts"] == 1


def test_grpcio_status_in_trailers_after_message_not_retried(proxy, grpc_server):
    """UNAVAILABLE in trailers after a response message: the head (without
    grpc-status) already went to the client, so no retry."""
    grpc, start_server = grpc_server
    srv = start_server(lambda n, req: (grpc.StatusCode.UNAVAILABLE, b"partial"))
    port = free_port()
    px = proxy(config(port, [srv.addr], protocol="H2C", route_action={
        "retry_policy": {"retry_conditions": ["unavailable"], "num_retries": 2}}),
        expect_ports=[port])
    code, _ = _grpc_client_call(grpc, port)
    e = last_log(px, 1)
    assert code == grpc.StatusCode.UNAVAILABLE, e
    assert len(srv.calls) == 1 and e["attempts"] == 1


# ---------------------------------------------------------------------------
# refused-stream (a python-h2 backend; the testbed never refuses)
# ---------------------------------------------------------------------------

def _h2_proxy(proxy, backend, route_action=None):
    port = free_port()
    px = proxy(config(port, [backend.addr], protocol="H2C", route_action=route_action),
               workers=1, expect_ports=[port])
    return px, port


@pytest.mark.parametrize("method,body,policy", [
    ("GET", b"", None),
    ("POST", b"b" * 300, None),                         # any method, even with a body
    ("POST", b"b" * 300, {"retry_conditions": []}),    # even with "retry nothing"
], ids=["get", "post-body", "post-body-retry-nothing"])
def test_refused_stream_retried_transparently(proxy, h2backend, method, body, policy):
    """REFUSED_STREAM: the backend never processed it, so it is sent again."""
    b = h2backend(lambda n, h, bd: "refuse" if n == 1 else 200)
    px, port = _h2_proxy(proxy, b, {"retry_policy": policy} if policy else None)
    r = get(port, "/", method=method, body=body)
    e = last_log(px, 1)
    assert r.status == 200, (r, e)
    assert r.json() == {"n": 2, "body_bytes": len(body)}
    assert len(b.requests) == 2
    assert e["attempts"] == 2


@pytest.mark.parametrize("num", [1, 2])
def test_refused_stream_condition(proxy, h2backend, num):
    """A backend that refuses every stream: the transparent retries are
    bounded; the refused-stream condition adds num_retries more on top,
    another condition none. 503 in the end, never a loop."""
    counts = {}
    for conds in (["refused-stream"], ["retriable-4xx"]):
        b = h2backend(lambda n, h, bd: "refuse")
        px, port = _h2_proxy(proxy, b, {"retry_policy": {"retry_conditions": conds,
                                                         "num_retries": num}})
        r = get(port, "/")
        e = last_log(px, 1)
        assert r.status == 503, (r, e)
        counts[conds[0]] = len(b.requests)
        assert e["attempts"] == len(b.requests), e
        assert "refused-stream" in e["tries"], e
    assert counts["retriable-4xx"] <= 4, counts            # 1 + a few transparent
    assert counts["refused-stream"] == counts["retriable-4xx"] + num, counts


def test_goaway_above_last_stream_id_retried(proxy, h2backend):
    """A stream above the last-stream-id of a GOAWAY was never seen: retried
    transparently (on a new connection), even for a POST with a body."""
    b = h2backend(lambda n, h, bd: "goaway" if n == 1 else 200)
    px, port = _h2_proxy(proxy, b, None)
    r = get(port, "/", method="POST", body=b"g" * 50)
    e = last_log(px, 1)
    assert r.status == 200, (r, e, px.stderr()[-2000:])
    assert r.json()["body_bytes"] == 50
    assert b.connections >= 2


# ---------------------------------------------------------------------------
# default policy: no retry_policy on the route
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("status", [502, 503, 504])
def test_default_get_gateway_error_retried_once(proxy, testbed, status):
    px, port, (tb,) = start(proxy, testbed)
    key = uniq("dflt")
    r = get(port, "/", headers=ff(key, 1, status=status))
    assert r.status == 200, (r, px.access_log())
    assert r.header("x-testbed-attempt") == "2"
    assert seen(tb, key) == 2
    e = last_log(px, 1)
    assert e["attempts"] == 2
    assert tries(e) == [(tb.addr, "gateway-error"), (tb.addr, "done")]


def test_default_get_retried_only_once(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed)
    key = uniq("dflt2")
    r = get(port, "/", headers=ff(key, 5))
    e = last_log(px, 1)
    assert r.status == 503, (r, e)
    assert seen(tb, key) == 2
    assert e["attempts"] == 2 and "URX" in flags(e)


@pytest.mark.parametrize("status", [500, 409])
def test_default_other_status_not_retried(proxy, testbed, status):
    px, port, (tb,) = start(proxy, testbed)
    key = uniq("dflt3")
    r = get(port, "/", headers=ff(key, 1, status=status))
    assert r.status == status
    assert seen(tb, key) == 1


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_default_request_with_body_not_retried(proxy, testbed, method):
    px, port, (tb,) = start(proxy, testbed)
    key = uniq("dbody")
    r = get(port, "/", method=method, body=b"hello", headers=ff(key, 1))
    e = last_log(px, 1)
    assert r.status == 503, (r, e)
    assert seen(tb, key) == 1
    assert e["attempts"] == 1


def test_default_post_without_body_retried(proxy, testbed):
    """The default is about the body, not the method: an empty POST is retried."""
    px, port, (tb,) = start(proxy, testbed)
    key = uniq("dpost0")
    r = get(port, "/", method="POST", headers=ff(key, 1) + [("content-length", "0")])
    assert r.status == 200, (r, px.access_log())
    assert seen(tb, key) == 2


def test_default_over_h2_downstream(proxy, testbed):
    """The same default for an HTTP/2 client: GET retried, POST with DATA not."""
    px, port, (tb,) = start(proxy, testbed)
    kg, kp = uniq("h2g"), uniq("h2p")
    with H2Conn(port) as c:
        g = c.wait_stream(c.request("GET", "/", headers=ff(kg, 1)))
        p = c.wait_stream(c.request("POST", "/", headers=ff(kp, 1), body=b"data"))
    assert g.status == 200 and p.status == 503, (g, p)
    assert seen(tb, kg) == 2 and seen(tb, kp) == 1


# ---------------------------------------------------------------------------
# num_retries, no retry after headers, body cap
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("num,fail,expect_status,expect_seen", [
    (2, 5, 503, 3),     # 1 + num_retries attempts, then the last answer, URX
    (2, 2, 200, 3),
    (0, 1, 503, 1),     # num_retries 0 = no retry
    (4, 3, 200, 4),
])
def test_num_retries(proxy, testbed, num, fail, expect_status, expect_seen):
    px, port, (tb,) = start(proxy, testbed, route_action={
        "retry_policy": {"retry_conditions": ["gateway-error"], "num_retries": num}})
    key = uniq("num")
    r = get(port, "/", headers=ff(key, fail))
    e = last_log(px, 1)
    assert r.status == expect_status, (r, e)
    assert seen(tb, key) == expect_seen
    assert e["attempts"] == expect_seen
    if expect_status == 503 and num > 0:
        assert "URX" in flags(e)
    if expect_seen > 1:
        # the last answer goes to the client, whatever it is
        assert [w for _, w in tries(e)] == ["gateway-error"] * (expect_seen - 1) + ["done"]


@pytest.mark.parametrize("where", ["mid-body", "after-headers"])
def test_no_retry_after_response_headers(proxy, testbed, where):
    """Headers went to the client: a reset afterwards truncates, never retries."""
    px, port, (tb,) = start(proxy, testbed, route_action={
        "retry_policy": {"retry_conditions": ["5xx"], "num_retries": 3}})
    key = uniq("mid")
    try:
        r = get(port, "/", headers=ff(key, 0, extra=[("x-testbed-reset", where),
                                                     ("x-testbed-body-size", "64KiB")]))
    except NoResponse as exc:
        pytest.fail(f"the client got no response head, though the proxy sent one: {exc}; "
                    f"log: {px.access_log(min_entries=1)}")
    e = last_log(px, 1)
    assert r.status == 200, (r, e)
    assert not r.complete, r              # content-length 65536, fewer bytes, then close
    assert r.body_len < 65536
    assert seen(tb, key) == 1
    assert e["attempts"] == 1
    assert "UR" in flags(e)


@pytest.mark.parametrize("downstream", ["h1", "h2"])
def test_bytes_before_backend_reset_reach_client(proxy, testbed, downstream):
    """The backend sends the head and 2000 of 4000 body bytes, then resets.
    What the proxy received goes to the client before the client's reset:
    the head and the 2000 bytes (a truncated response, not a bare reset).
    Repeated, since losing them depends on how the reads fall."""
    px, port, (tb,) = start(proxy, testbed)
    steer = [("x-testbed-reset", "mid-body"), ("x-testbed-body-size", "4000")]
    got = []
    for i in range(5):
        if downstream == "h1":
            try:
                r = get(port, f"/{i}", headers=steer)
                got.append((r.status, r.body_len, r.complete))
            except NoResponse:
                got.append((None, 0, False))
        else:
            with H2Conn(port) as c:
                st = c.wait_stream(c.request("GET", f"/{i}", headers=steer))
                got.append((st.status, st.body_len, st.ended))
    assert got == [(200, 2000, False)] * 5, (got, px.access_log())


def test_no_retry_after_headers_h2_downstream(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, route_action={
        "retry_policy": {"retry_conditions": ["5xx"], "num_retries": 3}})
    key = uniq("midh2")
    with H2Conn(port) as c:
        st = c.wait_stream(c.request("GET", "/", headers=ff(key, 0, extra=[
            ("x-testbed-reset", "mid-body"), ("x-testbed-body-size", "64KiB")])))
    assert st.status == 200 and st.reset_code is not None and not st.ended, st
    assert st.body_len < 65536
    assert seen(tb, key) == 1


@pytest.mark.parametrize("size,retried", [(512, True), (1024, True), (1025, False),
                                          (4096, False)])
def test_retry_buffer_size(proxy, testbed, size, retried):
    """retry_buffer_size: 1KiB: a body that fits is replayed whole on the
    retry; a bigger one is streamed and not retried."""
    px, port, (tb,) = start(proxy, testbed, service_extra={"retry_buffer_size": "1KiB"},
                            route_action={"retry_policy": {"retry_conditions": ["5xx"],
                                                           "num_retries": 1}})
    key = uniq("cap")
    r = get(port, "/", method="POST", body=b"z" * size, headers=ff(key, 1))
    e = last_log(px, 1)
    if retried:
        assert r.status == 200, (r, e)
        assert r.json()["body_bytes"] == size      # the retry carried the full body
        assert seen(tb, key) == 2
    else:
        assert r.status == 503, (r, e)
        assert seen(tb, key) == 1
        assert e["attempts"] == 1
    assert e["bytes_in"] == size


def test_retry_buffer_default_64k(proxy, testbed):
    """Default cap 64 KiB: a 60 KiB POST is retried, a 100 KiB one is not."""
    px, port, (tb,) = start(proxy, testbed, route_action={
        "retry_policy": {"retry_conditions": ["5xx"], "num_retries": 1}})
    k1, k2 = uniq("c60"), uniq("c100")
    r1 = get(port, "/", method="POST", body=b"a" * 60 * 1024, headers=ff(k1, 1))
    r2 = get(port, "/", method="POST", body=b"a" * 100 * 1024, headers=ff(k2, 1))
    assert r1.status == 200 and r1.json()["body_bytes"] == 60 * 1024, r1
    assert r2.status == 503, r2
    assert seen(tb, k1) == 2 and seen(tb, k2) == 1


def test_retry_chunked_body_replayed(proxy, testbed):
    """A chunked request body sent in pieces is replayed whole."""
    px, port, (tb,) = start(proxy, testbed, route_action={
        "retry_policy": {"retry_conditions": ["5xx"], "num_retries": 1}})
    key = uniq("chunk")
    head = request_bytes("POST", "/", headers=ff(key, 1) + [("transfer-encoding", "chunked")])
    with H1Conn(port) as c:
        c.send(head)
        for i in range(4):
            c.send(b"100\r\n" + b"c" * 256 + b"\r\n")
            time.sleep(0.02)   # a slow client: the body arrives in pieces
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["body_bytes"] == 1024
    assert seen(tb, key) == 2


# ---------------------------------------------------------------------------
# backoff
# ---------------------------------------------------------------------------

def test_backoff_bounds(proxy, testbed):
    """retry_backoff base 100ms, max 100ms: each retry waits a jittered
    0..100 ms. Loose bounds from the access log's durations: every retried
    exchange takes at most 100 ms + slack more than a plain one, and over 24
    of them the waits add up to more than the default policy's first-retry
    ceiling (25 ms each) could: P(sum of 24 U(0,100ms) < 600 ms) ~ 1e-5."""
    px, port, (tb,) = start(proxy, testbed,
                            service_extra={"retry_backoff": {"base_interval": "100ms",
                                                             "max_interval": "100ms"}},
                            route_action={"retry_policy": {"retry_conditions": ["5xx"],
                                                           "num_retries": 1}})
    n = 24
    with H1Conn(port) as c:
        for i in range(n):
            c.send(request_bytes("GET", "/", headers=ff(uniq(f"bo{i}"), 1)))
            r = c.read_response()
            assert r.status == 200, (i, r)
    log = px.access_log(min_entries=n)
    assert len(log) == n
    durations = [e["duration_ms"] for e in log]
    assert all(e["attempts"] == 2 for e in log), log
    slack = 400.0    # ASan, a loaded machine
    assert max(durations) <= 100.0 + slack, durations
    assert sum(durations) >= 600.0, durations


def test_backoff_max_interval_caps_growth(proxy, testbed):
    """base 100ms, max 100ms, three retries: 3 waits of at most 100 ms each
    (uncapped, they could reach 100+200+400 ms)."""
    px, port, (tb,) = start(proxy, testbed,
                            service_extra={"retry_backoff": {"base_interval": "100ms",
                                                             "max_interval": "100ms"}},
                            route_action={"retry_policy": {"retry_conditions": ["5xx"],
                                                           "num_retries": 3}})
    for i in range(3):
        r = get(port, "/", headers=ff(uniq(f"cap{i}"), 3))
        assert r.status == 200, r
    log = px.access_log(min_entries=3)
    assert all(e["attempts"] == 4 for e in log), log
    assert max(e["duration_ms"] for e in log) <= 300.0 + 400.0, log


# ---------------------------------------------------------------------------
# circuit_breakers.max_retries
# ---------------------------------------------------------------------------

def test_max_retries_zero_disables_retries(proxy, testbed):
    px, port, (tb,) = start(proxy, testbed, service_extra={"circuit_breakers": {"max_retries": 0}},
                            route_action={"retry_policy": {"retry_conditions": ["5xx"],
                                                           "num_retries": 3}})
    key = uniq("cb0")
    r = get(port, "/", headers=ff(key, 1))
    e = last_log(px, 1)
    assert r.status == 503, (r, e)
    assert seen(tb, key) == 1
    assert "URO" in flags(e) and "UO" not in flags(e), e


def test_max_retries_bounds_concurrent_retries(proxy, testbed):
    """max_retries 1: while exchange A's retry is in flight (its second try
    takes 1.5 s), exchange B may not retry: B answers the 503 at once (URO)."""
    admin = free_port()
    px, port, (tb,) = start(proxy, testbed, service_extra={"circuit_breakers": {"max_retries": 1}},
                            route_action={"retry_policy": {"retry_conditions": ["5xx"],
                                                           "num_retries": 1}},
                            admin_port=admin)
    retries = 'switchyard_upstream_retries_total{backend_service="svc"}'
    ka, kb = uniq("cba"), uniq("cbb")
    res = {}

    def run_a():
        res["a"] = get(port, "/a", headers=ff(ka, 1, delay="0", extra=[
            ("x-testbed-delay", "1500ms")]))

    t = threading.Thread(target=run_a, daemon=True)
    t.start()
    try:
        # A's first try fails at once and its retry (after <= 25 ms of
        # backoff) then waits 1.5 s for its answer: B comes once that retry
        # is under way (the admin API counts it), well inside the 1.5 s.
        # (seen() itself counts as a request, so it cannot be polled.)
        assert wait_for(lambda: admin_metrics(admin).get(retries, 0) >= 1, 10), \
            admin_metrics(admin)
        rb = get(port, "/b", headers=ff(kb, 1))
    finally:
        t.join(timeout=15)
    assert res["a"].status == 200, res
    assert rb.status == 503, rb
    assert seen(tb, kb) == 1
    log = {e["path"]: e for e in px.access_log(min_entries=2)}
    assert "URO" in flags(log["/b"]) and "UO" not in flags(log["/b"]), log
    # ... and once A finished, retries are possible again
    kc = uniq("cbc")
    assert get(port, "/c", headers=ff(kc, 1)).status == 200
    assert seen(tb, kc) == 2


# ---------------------------------------------------------------------------
# access log
# ---------------------------------------------------------------------------

def test_access_log_one_entry_per_exchange(proxy, testbed):
    """Retried exchanges are still one entry each; tries names every endpoint
    and why it was left, ending with the one that answered."""
    px, port, tbs = start(proxy, testbed, n_backends=2, route_action={
        "retry_policy": {"retry_conditions": ["gateway-error"], "num_retries": 3}})
    key = uniq("log")
    # fail-first counts per testbed: tb1 and tb2 fail once each, then one of them answers
    r1 = get(port, "/one", headers=ff(key, 1))
    r2 = get(port, "/two")
    r3 = get(port, "/three", headers=[("x-testbed-status", "503")])
    assert (r1.status, r2.status, r3.status) == (200, 200, 503)
    log = px.access_log(min_entries=3)
    assert [e["path"] for e in log] == ["/one", "/two", "/three"]
    one, two, three = log
    assert one["attempts"] == 3
    t = tries(one)
    assert [w for _, w in t] == ["gateway-error", "gateway-error", "done"]
    # a retry prefers an endpoint not yet tried
    assert {t[0][0], t[1][0]} == {tbs[0].addr, tbs[1].addr}, t
    assert one["endpoint"] == t[2][0]
    assert seen(tbs[0], key) + seen(tbs[1], key) == 3
    assert two["attempts"] == 1 and two["tries"] == "" and two["response_flags"] == "-"
    assert three["attempts"] == 4 and "URX" in flags(three)
    for e in log:
        assert e["backend_service"] == "svc"
