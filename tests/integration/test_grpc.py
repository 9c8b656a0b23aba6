"""gRPC end to end through switchyard (issue 3, items 5 and 9): a grpcio
client -> switchyard -> grpcio backends, with stubs generated at test time
from tests/integration/grpc/echo.proto.

Backends are tests/integration/grpc/server.py subprocesses (Debian's
python3-grpcio), started once for this module: `a` and `b` serve h2c, `t`
serves TLS with the `certs` fixture's server certificate. Request metadata
steers them (sleep, fail with a status, stream N messages, fail the first N
calls of a key) and they answer with metadata naming themselves and echoing
what they saw; see server.py. Calls are counted per `x-key` by the backend
and read back with a direct (not proxied) query call.

The main cases (all four RPC kinds, metadata, statuses, 4 MiB messages) run
three ways: h2c client -> H2C backend, TLS client (HTTPS listener, ALPN h2)
-> H2C backend, and h2c client -> HTTP2 (TLS) backend. The proxy-specific
cases (deadlines, proxy-generated statuses, cancellation, balancing, retries,
long-lived streams) run h2c -> H2C.

A gRPC status the proxy generates must be a real gRPC answer (HTTP 200,
trailers-only): grpcio turns a non-200 HTTP status into UNAVAILABLE with
details "Received http2 header with status: N", so those details are
rejected too. Everything listens on 127.0.0.1; every wait is bounded.
"""

import collections
import json
import os
import queue
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import HOST, free_port, wait_for

grpc = pytest.importorskip("grpc")

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE / "grpc"
PYTHON = "/usr/bin/python3"

MiB = 1024 * 1024
MAX_MSG = 8 * MiB
CALL_TIMEOUT = 30.0     # s, deadline of calls that should succeed
SLACK = 1.5             # s allowed beyond an expected duration (ASan, loaded machine)

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MSG),
    ("grpc.max_receive_message_length", MAX_MSG),
    ("grpc.enable_retries", 0),        # the client must not retry behind our back
    ("grpc.enable_http_proxy", 0),
]


# ---------------------------------------------------------------------------
# stubs and backends
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def stubs(tmp_path_factory):
    """echo_pb2 / echo_pb2_grpc generated from grpc/echo.proto into a tmp dir
    with Debian's grpc_tools. Returns (dir, pb2, pb2_grpc)."""
    out = tmp_path_factory.mktemp("grpc-stubs")
    r = subprocess.run([PYTHON, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
                        f"--python_out={out}", f"--grpc_python_out={out}", "echo.proto"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.fail(f"grpc_tools.protoc failed ({r.returncode}):\n{r.stderr}")
    sys.path.insert(0, str(out))
    try:
        import echo_pb2
        import echo_pb2_grpc
    finally:
        sys.path.remove(str(out))
    return out, echo_pb2, echo_pb2_grpc


class Backend:
    """One server.py subprocess."""

    def __init__(self, proc, name, port, tls, log_path):
        self.proc = proc
        self.pid = proc.pid
        self.name = name
        self.port = port
        self.addr = f"{HOST}:{port}"
        self.tls = tls
        self.log_path = log_path

    def log(self):
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self):
        return f"<grpc backend {self.name} {self.addr} pid={self.pid}>"


def _start_backend(stubs_dir, d, name, certs=None):
    port_file = d / f"{name}.port"
    log_path = d / f"{name}.log"
    cmd = [PYTHON, str(PROTO_DIR / "server.py"), "--stubs", str(stubs_dir),
           "--name", name, "--port-file", str(port_file)]
    if certs is not None:
        cmd += ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
    env = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(k, None)
    with open(log_path, "wb") as lf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=lf,
                                stderr=subprocess.STDOUT, env=env, cwd=str(d))
    be = Backend(proc, name, 0, certs is not None, log_path)

    def ready():
        if proc.poll() is not None:
            return "exited"
        try:
            return port_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    got = wait_for(ready, 15.0, 0.05)
    if not got or got == "exited":
        _stop(proc)
        pytest.fail(f"grpc backend {name} did not start:\n{be.log()}")
    be.port = int(got)
    be.addr = f"{HOST}:{be.port}"
    return be


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def backends(stubs, certs, tmp_path_factory):
    """{"a": h2c, "b": h2c, "t": TLS} grpc backends, stopped at teardown."""
    d = tmp_path_factory.mktemp("grpc-backends")
    started = {}
    try:
        started["a"] = _start_backend(stubs[0], d, "a")
        started["b"] = _start_backend(stubs[0], d, "b")
        started["t"] = _start_backend(stubs[0], d, "t", certs=certs)
        yield started
    finally:
        for be in started.values():
            _stop(be.proc)


# ---------------------------------------------------------------------------
# proxy configs
# ---------------------------------------------------------------------------

def _flow(v):
    return json.dumps(v)


def config(port, endpoints, *, protocol="H2C", timeout="10s", routes=(),
           listener_tls=None, service_extra=None, checks=()):
    """One listener on 127.0.0.1:port (HTTP, or HTTPS with listener_tls: a
    certs object), everything to backend service `svc` (protocol, endpoint
    addresses, timeout, service_extra keys). `routes` [(name, route_action)]
    apply to requests with metadata `x-route: NAME`; the rest use the
    defaults. `checks`: health check definitions (dicts) used by svc."""
    if listener_tls is not None:
        cert = {"cert_file": str(listener_tls.cert), "key_file": str(listener_tls.key)}
        lp = f"    protocol: HTTPS\n    tls: {_flow({'certificates': [cert]})}\n"
    else:
        lp = "    protocol: HTTP\n"
    rules = ""
    for i, (name, action) in enumerate(routes):
        rules += (f"          - priority: {i + 1}\n"
                  "            match_rules: [{prefix_match: /, header_matches: "
                  f"[{{header_name: x-route, exact_match: {_flow(name)}}}]}}]\n"
                  "            service: svc\n"
                  f"            route_action: {_flow(action)}\n")
    rules += ("          - priority: 1000\n"
              "            match_rules: [{prefix_match: /}]\n"
              "            service: svc\n")
    extra = dict(service_extra or {})
    if checks:
        extra["health_checks"] = [c["name"] for c in checks]
    sx = "".join(f"    {k}: {_flow(v)}\n" for k, v in extra.items())
    eps = "".join(f"      - {{address: \"{a}\"}}\n" for a in endpoints)
    hx = ("health_checks:\n" + "".join(f"  - {_flow(c)}\n" for c in checks)) if checks else ""
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
{lp}    url_map: main
access_log: {{enabled: true, path: "-", format: json}}
drain_timeout: 2s
url_maps:
  - name: main
    default_service: svc
    host_rules: [{{hosts: ["*"], path_matcher: pm}}]
    path_matchers:
      - name: pm
        default_service: svc
        route_rules:
{rules}backend_services:
  - name: svc
    protocol: {protocol}
    timeout: {timeout}
    endpoints:
{eps}{sx}{hx}"""


class Stack:
    """A proxy in front of backends, and a way to open client channels."""

    def __init__(self, px, port, stubs, tls_ca=None):
        self.px = px
        self.port = port
        self.pb = stubs[1]
        self.pb_grpc = stubs[2]
        self.tls_ca = tls_ca

    def channel(self):
        target = f"{HOST}:{self.port}"
        if self.tls_ca is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=Path(self.tls_ca).read_bytes())
            return grpc.secure_channel(target, creds, options=CHANNEL_OPTIONS)
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)

    def stub(self, ch):
        return self.pb_grpc.EchoStub(ch)

    def req(self, payload=b"", text="", index=0):
        return self.pb.EchoRequest(payload=payload, text=text, index=index)

    def entries(self, method, n=1, timeout=5.0):
        """Access-log entries for /switchyard.test.Echo/METHOD (waits for n)."""
        path = f"/switchyard.test.Echo/{method}"

        def get():
            es = [e for e in self.px.access_log() if e.get("path") == path]
            return es if len(es) >= n else None
        return wait_for(get, timeout) or [e for e in self.px.access_log()
                                          if e.get("path") == path]


def start_stack(proxy, stubs, endpoints, *, listener_tls=None, **kw):
    port = free_port()
    px = proxy(config(port, endpoints, listener_tls=listener_tls, **kw), workers=1,
               expect_ports=[port])
    return Stack(px, port, stubs, tls_ca=listener_tls.ca if listener_tls else None)


def backend_tls(certs):
    return {"ca_file": str(certs.ca), "verify": True, "sni": "localhost"}


MODES = ["h2c", "tls-client", "tls-backend"]


@pytest.fixture(params=MODES)
def stack(request, proxy, stubs, backends, certs):
    """h2c: h2c client -> H2C backend a; tls-client: TLS (h2 by ALPN) client ->
    H2C backend a; tls-backend: h2c client -> HTTP2 (TLS) backend t."""
    mode = request.param
    if mode == "tls-backend":
        st = start_stack(proxy, stubs, [backends["t"].addr], protocol="HTTP2",
                         service_extra={"tls": backend_tls(certs)})
        st.backend = backends["t"]
    else:
        st = start_stack(proxy, stubs, [backends["a"].addr],
                         listener_tls=certs if mode == "tls-client" else None)
        st.backend = backends["a"]
    st.mode = mode
    return st


def query(stubs, be, what):
    """Ask backend `be` directly (not through the proxy): reply text."""
    pb, pb_grpc = stubs[1], stubs[2]
    with grpc.insecure_channel(be.addr, options=CHANNEL_OPTIONS) as ch:
        r = pb_grpc.EchoStub(ch).Unary(pb.EchoRequest(), metadata=[("x-query", what)],
                                       timeout=10)
    return r.text


def calls_seen(stubs, be, key):
    return int(query(stubs, be, f"calls:{key}"))


_uniq = [0]


def uniq(prefix):
    _uniq[0] += 1
    return f"{prefix}-{os.getpid()}-{_uniq[0]}-{time.monotonic_ns() % 10**9}"


def md_dict(md):
    return {m.key: m.value for m in (md or ())}


def flags(entry):
    return set(entry["response_flags"].split(",")) - {"-"}


def assert_grpc_native(err):
    """The status came as a gRPC answer, not mapped from an HTTP error status."""
    assert "Received http2 header with status" not in (err.details() or ""), err


class Feeder:
    """A request iterator fed one message at a time (for interleaved bidi).
    Bounded: gives up (ends the stream) after `timeout` without input."""

    def __init__(self, timeout=CALL_TIMEOUT):
        self.q = queue.Queue()
        self.timeout = timeout

    def put(self, msg):
        self.q.put(msg)

    def close(self):
        self.q.put(None)

    def __iter__(self):
        while True:
            try:
                m = self.q.get(timeout=self.timeout)
            except queue.Empty:
                return
            if m is None:
                return
            yield m


# ---------------------------------------------------------------------------
# the four RPC kinds, over h2c, TLS client side and TLS backend side
# ---------------------------------------------------------------------------

def test_unary(stack):
    payload = bytes(range(256)) * 4
    with stack.channel() as ch:
        stub = stack.stub(ch)
        for i in range(20):
            r, call = stub.Unary.with_call(stack.req(payload + bytes([i]), f"héllo ✓ {i}", i),
                                           timeout=CALL_TIMEOUT)
            assert (r.payload, r.text, r.index) == (payload + bytes([i]), f"héllo ✓ {i}", i)
            assert r.server == stack.backend.name
            assert call.code() == grpc.StatusCode.OK
    e = stack.entries("Unary", 20)[-1]
    assert e["status"] == 200 and e["protocol"] == "HTTP/2", e


def test_server_stream(stack):
    n = 300
    with stack.channel() as ch:
        call = stack.stub(ch).ServerStream(stack.req(b"s" * 1000, "msg"), timeout=CALL_TIMEOUT,
                                           metadata=[("x-stream-count", str(n))])
        got = list(call)
        assert call.code() == grpc.StatusCode.OK
    assert [r.index for r in got] == list(range(n))
    assert all(r.payload == b"s" * 1000 and r.text == f"msg-{r.index}" for r in got)


def test_client_stream(stack):
    n = 300
    msgs = [stack.req(bytes([i % 256]) * (i + 1), f"t{i}", i) for i in range(n)]
    with stack.channel() as ch:
        r, call = stack.stub(ch).ClientStream.with_call(iter(msgs), timeout=CALL_TIMEOUT)
    assert r.index == n
    assert r.total_bytes == sum(i + 1 for i in range(n))
    assert r.text == ",".join(f"t{i}" for i in range(n))
    assert r.server == stack.backend.name


def test_bidi_interleaved(stack):
    """Send one, receive its echo, then the next: 200 round trips on one
    stream (the proxy must forward each message as it comes, both ways)."""
    n = 200
    feeder = Feeder()
    with stack.channel() as ch:
        responses = stack.stub(ch).BidiStream(iter(feeder), timeout=CALL_TIMEOUT)
        try:
            for i in range(n):
                payload = os.urandom(64 + i)
                feeder.put(stack.req(payload, f"b{i}", i))
                r = next(responses)
                assert (r.index, r.text, r.payload) == (i, f"b{i}", payload)
        finally:
            feeder.close()
        assert list(responses) == []
        assert responses.code() == grpc.StatusCode.OK


def test_metadata_both_ways(stack):
    """Request metadata (text and -bin) reaches the backend; response initial
    metadata and trailing metadata (text and -bin) reach the client; for a
    unary and a streaming call."""
    md = [("x-meta", "value-1"), ("x-meta-bin", b"\x00\x01\x02\xff"),
          ("x-other", "a b;c=d")]
    with stack.channel() as ch:
        stub = stack.stub(ch)
        _, call = stub.Unary.with_call(stack.req(b"x"), metadata=md, timeout=CALL_TIMEOUT)
        sc = stub.ServerStream(stack.req(b"y"), timeout=CALL_TIMEOUT,
                               metadata=md + [("x-stream-count", "3")])
        assert len(list(sc)) == 3
        for c, method in ((call, "Unary"), (sc, "ServerStream")):
            ini = md_dict(c.initial_metadata())
            assert ini.get("x-server") == stack.backend.name, ini
            assert ini.get("x-method") == method, ini
            assert ini.get("x-echo-x-meta") == "value-1", ini
            assert ini.get("x-echo-x-meta-bin") == b"\x00\x01\x02\xff", ini
            assert ini.get("x-echo-x-other") == "a b;c=d", ini
            tr = md_dict(c.trailing_metadata())
            assert tr.get("x-trailer") == f"done:{stack.backend.name}:{method}", tr
            assert tr.get("x-trailer-bin") == b"\x00\x01\xfe\xff", tr


def test_error_status_passes_through(stack):
    """A backend's grpc-status / grpc-message (percent-encoded on the wire)
    and its trailing metadata reach the client unchanged: trailers-only on a
    unary call, and in trailers after messages on a server stream."""
    msg = "widget 42 not found: ünïcode ✓ 100% sure"
    with stack.channel() as ch:
        stub = stack.stub(ch)
        with pytest.raises(grpc.RpcError) as ei:
            stub.Unary(stack.req(b"x"), timeout=CALL_TIMEOUT,
                       metadata=[("x-fail-code", "NOT_FOUND"),
                                 ("x-fail-message-bin", msg.encode())])
        err = ei.value
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
        assert err.details() == msg, err
        tr = md_dict(err.trailing_metadata())
        assert tr.get("x-trailer") == f"done:{stack.backend.name}:Unary", tr
        assert tr.get("x-trailer-bin") == b"\x00\x01\xfe\xff", tr

        sc = stub.ServerStream(stack.req(b"y"), timeout=CALL_TIMEOUT,
                               metadata=[("x-stream-count", "10"), ("x-fail-after", "4"),
                                         ("x-fail-code", "PERMISSION_DENIED"),
                                         ("x-fail-message", "no: 4 sent")])
        got = []
        with pytest.raises(grpc.RpcError) as ei:
            for r in sc:
                got.append(r.index)
        assert got == [0, 1, 2, 3]
        assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED, ei.value
        assert ei.value.details() == "no: 4 sent"
        assert md_dict(sc.initial_metadata()).get("x-server") == stack.backend.name
        assert md_dict(sc.trailing_metadata()).get("x-trailer") == \
            f"done:{stack.backend.name}:ServerStream"


def test_large_messages(stack):
    """4 MiB messages each way: unary, and two of them each way on a bidi
    stream (client and server allow 8 MiB)."""
    big = os.urandom(4 * MiB)
    with stack.channel() as ch:
        stub = stack.stub(ch)
        r = stub.Unary(stack.req(big, "big"), timeout=CALL_TIMEOUT)
        assert r.total_bytes == len(big) and r.payload == big
        big2 = big[::-1]
        out = list(stub.BidiStream(iter([stack.req(big, "1", 1), stack.req(big2, "2", 2)]),
                                   timeout=CALL_TIMEOUT))
        assert [o.index for o in out] == [1, 2]
        assert out[0].payload == big and out[1].payload == big2


# ---------------------------------------------------------------------------
# deadlines and proxy-generated statuses (h2c -> H2C)
# ---------------------------------------------------------------------------

@pytest.fixture
def h2c(proxy, stubs, backends):
    """start(endpoints=None (backend a), **config kw) -> Stack."""
    def start(endpoints=None, **kw):
        st = start_stack(proxy, stubs, endpoints or [backends["a"].addr], **kw)
        st.backend = backends["a"]
        return st
    return start


def test_grpc_timeout_forwarded(h2c, stubs):
    """The client's deadline goes to the backend as grpc-timeout (the
    backend's call has a deadline no later than the client's), and a client
    deadline shorter than the route timeout ends the call at about the
    deadline with DEADLINE_EXCEEDED."""
    st = h2c(timeout="20s")
    with st.channel() as ch:
        stub = st.stub(ch)
        _, call = stub.Unary.with_call(st.req(b"x"), timeout=5.0)
        left = md_dict(call.initial_metadata()).get("x-time-remaining")
        assert left not in (None, "none"), "backend saw no grpc-timeout"
        # The proxy forwards the client's grpc-timeout as it came; the
        # backend reads its remaining time off grpc core's cached clock,
        # which can put it a few ms past the client's 5 s (5.009 seen).
        # A forwarded route timeout (20 s) would be far above this bound.
        assert 0.0 < float(left) <= 5.1, left

        key = uniq("dl")
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as ei:
            stub.Unary(st.req(b"x"), timeout=1.0,
                       metadata=[("x-sleep", "5"), ("x-key", key)])
        took = time.monotonic() - t0
        assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ei.value
        assert 0.9 <= took <= 1.0 + SLACK, took
    # the backend's call ended with it (deadline or the proxy's RST_STREAM)
    assert wait_for(lambda: query(stubs, st.backend, f"cancelled:{key}") == "1", 5.0)
    e = st.entries("Unary", 2)[-1]
    assert e["duration_ms"] <= 1000 + SLACK * 1000, e


def test_unavailable_nothing_listening(h2c):
    dead = f"{HOST}:{free_port()}"
    st = h2c(endpoints=[dead])
    with st.channel() as ch:
        stub = st.stub(ch)
        for method in ("Unary", "ServerStream"):
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as ei:
                rpc = getattr(stub, method)
                res = rpc(st.req(b"x"), timeout=10)
                if method == "ServerStream":
                    list(res)
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
            assert_grpc_native(ei.value)
            assert time.monotonic() - t0 < 5.0
    e = st.entries("ServerStream")[-1]
    assert e["status"] == 200 and "UF" in flags(e), e


def test_unavailable_no_healthy_backend(h2c, stubs):
    """The endpoint itself is up, but its health check (TCP to a port where
    nothing listens) marks it unhealthy: UNAVAILABLE without contacting it."""
    st = h2c(checks=[{"name": "hc", "type": "TCP", "port": free_port(),
                      "check_interval": "200ms", "timeout": "500ms",
                      "healthy_threshold": 2, "unhealthy_threshold": 2}])
    pat = re.compile(rf"endpoint={re.escape(st.backend.addr)} \w+->unhealthy")
    assert wait_for(lambda: pat.search(st.px.stderr()), 10.0), st.px.stderr()[-3000:]
    key = uniq("uh")
    with st.channel() as ch:
        with pytest.raises(grpc.RpcError) as ei:
            st.stub(ch).Unary(st.req(b"x"), timeout=10, metadata=[("x-key", key)])
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE, ei.value
    assert_grpc_native(ei.value)
    assert calls_seen(stubs, st.backend, key) == 0
    e = st.entries("Unary")[-1]
    assert e["status"] == 200 and "UH" in flags(e), e


def test_route_timeout_deadline_exceeded(h2c, stubs):
    """A backend slower than the route timeout: DEADLINE_EXCEEDED from the
    proxy at about the route timeout (the client's deadline is far), UT in
    the access log, and the backend's call is cancelled."""
    st = h2c(timeout="20s", routes=[("slow", {"timeout": "1s"})])
    key = uniq("rt")
    with st.channel() as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as ei:
            st.stub(ch).Unary(st.req(b"x"), timeout=15,
                              metadata=[("x-route", "slow"), ("x-sleep", "8"), ("x-key", key)])
        took = time.monotonic() - t0
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ei.value
    assert_grpc_native(ei.value)
    assert 0.9 <= took <= 1.0 + SLACK, took
    e = st.entries("Unary")[-1]
    assert e["status"] == 200 and "UT" in flags(e), e
    assert wait_for(lambda: query(stubs, st.backend, f"cancelled:{key}") == "1", 5.0)


def test_fault_abort_resource_exhausted(h2c, stubs):
    st = h2c(routes=[("abort", {"fault_injection_policy": {"abort": {"grpc_status": 8}}})])
    key = uniq("fi")
    with st.channel() as ch:
        with pytest.raises(grpc.RpcError) as ei:
            st.stub(ch).Unary(st.req(b"x"), timeout=10,
                              metadata=[("x-route", "abort"), ("x-key", key)])
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value
        assert_grpc_native(ei.value)
        # the other route still reaches the backend
        r = st.stub(ch).Unary(st.req(b"ok"), timeout=10, metadata=[("x-key", key)])
        assert r.payload == b"ok"
    assert calls_seen(stubs, st.backend, key) == 1
    e = st.entries("Unary", 2)[0]
    assert e["status"] == 200 and "FI" in flags(e) and e["attempts"] == 0, e


# ---------------------------------------------------------------------------
# cancellation, balancing, retries, long-lived streams (h2c -> H2C)
# ---------------------------------------------------------------------------

def test_client_cancel_reaches_backend(h2c, stubs):
    """The client cancels a server stream after 5 of 10000 messages: the
    backend sees its call cancelled, and the proxy serves the next calls (on
    the same channel and a new one)."""
    st = h2c()
    key = uniq("cx")
    with st.channel() as ch:
        stub = st.stub(ch)
        call = stub.ServerStream(st.req(b"c" * 100), timeout=CALL_TIMEOUT,
                                 metadata=[("x-stream-count", "10000"), ("x-interval", "0.01"),
                                           ("x-key", key)])
        for _ in range(5):
            next(call)
        call.cancel()
        assert call.code() == grpc.StatusCode.CANCELLED
        assert wait_for(lambda: query(stubs, st.backend, f"cancelled:{key}") == "1", 5.0), \
            st.backend.log()[-2000:]
        assert stub.Unary(st.req(b"again"), timeout=10).payload == b"again"
    with st.channel() as ch:
        assert st.stub(ch).Unary(st.req(b"new"), timeout=10).payload == b"new"
    assert st.px.running()


def test_round_robin_per_request(h2c, backends):
    """ROUND_ROBIN over two backends: 20 unary calls on ONE channel (one
    HTTP/2 connection to the proxy) are spread across both."""
    a, b = backends["a"], backends["b"]
    st = h2c(endpoints=[a.addr, b.addr], service_extra={"locality_lb_policy": "ROUND_ROBIN"})
    seen = collections.Counter()
    with st.channel() as ch:
        stub = st.stub(ch)
        for i in range(20):
            r, call = stub.Unary.with_call(st.req(b"x", index=i), timeout=10)
            seen[md_dict(call.initial_metadata())["x-server"]] += 1
            assert r.server == md_dict(call.initial_metadata())["x-server"]
    assert set(seen) == {"a", "b"}, seen
    assert abs(seen["a"] - seen["b"]) <= 2, seen


def test_retry_on_unavailable(h2c, stubs):
    """retry_conditions [unavailable], num_retries 2: the backend fails the
    first call of a key with UNAVAILABLE (trailers-only) and the proxy
    retries it: the client sees success, the backend saw 2 calls. Without the
    policy (a gRPC request has a body: no default retry) the failure stands."""
    st = h2c(routes=[("retry", {"retry_policy": {"retry_conditions": ["unavailable"],
                                                 "num_retries": 2}})])
    key = uniq("rty")
    with st.channel() as ch:
        stub = st.stub(ch)
        r = stub.Unary(st.req(b"payload"), timeout=10,
                       metadata=[("x-route", "retry"), ("x-key", key), ("x-fail-first", "1")])
        assert r.payload == b"payload"
        assert calls_seen(stubs, st.backend, key) == 2
        e = st.entries("Unary")[-1]
        assert e["attempts"] == 2, e

        key2 = uniq("nor")
        with pytest.raises(grpc.RpcError) as ei:
            stub.Unary(st.req(b"payload"), timeout=10,
                       metadata=[("x-key", key2), ("x-fail-first", "1")])
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ei.value.details() == "fail-first 1/1"
        assert calls_seen(stubs, st.backend, key2) == 1


def _slow_bidi(st, stub, n, gap, metadata):
    """A bidi stream of n round trips `gap` seconds apart. Returns (indices
    received, RpcError or None, seconds)."""
    feeder = Feeder()
    got = []
    t0 = time.monotonic()
    responses = stub.BidiStream(iter(feeder), timeout=CALL_TIMEOUT, metadata=metadata)
    err = None
    try:
        for i in range(n):
            feeder.put(st.req(b"z" * 10, f"l{i}", i))
            got.append(next(responses).index)
            if i + 1 < n:
                time.sleep(gap)   # paced on purpose: the stream must stay open this long
        feeder.close()
        assert list(responses) == []
    except grpc.RpcError as exc:
        err = exc
    finally:
        feeder.close()
    return got, err, time.monotonic() - t0


def test_long_lived_stream_route_timeout_0s(h2c):
    """The backend service timeout is 1s; a route with timeout 0s (no limit)
    keeps a 3 s bidi stream open. The same stream on the default route is
    ended by the proxy after about 1 s: response headers went out already,
    so (docs/operations.md) the call ends with trailers carrying grpc-status 4
    rather than a bare stream reset, and the client sees DEADLINE_EXCEEDED."""
    st = h2c(timeout="1s", routes=[("long", {"timeout": "0s"})])
    with st.channel() as ch:
        stub = st.stub(ch)
        got, err, took = _slow_bidi(st, stub, 7, 0.5, [("x-route", "long")])
        assert err is None, err
        assert got == list(range(7)) and took >= 3.0
        e = st.entries("BidiStream")[-1]
        assert e["status"] == 200 and flags(e) == set(), e

        got, err, took = _slow_bidi(st, stub, 7, 0.5, [])
        assert err is not None, got
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
        assert took <= 1.0 + SLACK, took
        assert 1 <= len(got) < 7
        e = st.entries("BidiStream", 2)[-1]
        assert "UT" in flags(e), e
        # the channel is still usable
        assert stub.Unary(st.req(b"after"), timeout=10).payload == b"after"
