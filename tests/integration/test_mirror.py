"""route_action.request_mirror_policy: a fire-and-forget copy of each chosen
request goes to a mirror backend service (GCP's request mirroring, Envoy's
shadowing), and with `compare` the mirror's response is compared with the
primary's (docs/backends.md, "Request mirroring and shadow compare").

Backends: switchyard-testbed for primaries (and for mirrors whose answers a
compare looks at), a CaptureBackend (capture.py) where the test must see the
exact request the mirror got, and a Sink for mirrors that hang (a listening
socket that never accepts: the kernel takes the connection and the request
bytes, nobody answers) or reset every connection. Steering headers go to both
sides (the mirror gets the same headers), so a test that needs the two
answers to differ uses what differs between the two processes: their
--name, or a fail-first key (the primary is retried, the mirror is not).

Results are read from /metrics (switchyard_mirror_requests_total,
switchyard_shadow_compare_total) and GET /shadow on the admin listener,
waiting (bounded) for mirrors that end after the client's exchange.
Timings are asserted loosely: the point is that the client never waits for
a mirror that hangs for 30 s, not milliseconds."""

import json
import os
import socket
import statistics
import struct
import subprocess
import threading
import time
import urllib.request

import httpx
import pytest

from capture import CaptureBackend
from conftest import HOST, admin_metrics, free_port, free_ports, wait_for, wait_requests_at

CLIENT_TIMEOUT = 10.0   # s: a client that waited for a hanging mirror would hit this


# ---------------------------------------------------------------------------
# backends that misbehave
# ---------------------------------------------------------------------------

class Sink:
    """A mirror endpoint on 127.0.0.1 that never answers ("hang": listens and
    never accepts, so connections complete in the kernel and the request
    sits unread) or resets every connection it accepts ("reset": SO_LINGER
    0, then close)."""

    def __init__(self, mode):
        self.mode = mode
        self.stopped = threading.Event()
        self.sock = None
        self.thread = None
        self.accepted = 0
        for _ in range(3):
            port = free_port()
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((HOST, port))
                s.listen(256)
            except OSError:
                s.close()
                continue
            self.sock, self.port, self.addr = s, port, f"{HOST}:{port}"
            break
        if self.sock is None:
            raise RuntimeError("sink could not listen")
        if mode == "reset":
            self.sock.settimeout(0.05)
            self.thread = threading.Thread(target=self._reset_loop, daemon=True)
            self.thread.start()

    def _reset_loop(self):
        deadline = time.monotonic() + 300   # never outlives a stuck test by much
        while not self.stopped.is_set() and time.monotonic() < deadline:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()

    def stop(self):
        self.stopped.set()
        if self.thread:
            self.thread.join(5)
        self.sock.close()


@pytest.fixture
def sink():
    made = []

    def make(mode):
        s = Sink(mode)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


@pytest.fixture
def capture():
    made = []

    def make(name="mirror"):
        c = CaptureBackend(name=name).start()
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()


# ---------------------------------------------------------------------------
# config and helpers
# ---------------------------------------------------------------------------

def config(port, admin_port, services, routes):
    """One listener and the admin API; url map `m`, path matcher `pm` with one
    route rule per entry of `routes` ({prefix, service, action}: priorities
    10, 20, ... so the route of entry i is named "m/pm/priority:<10(i+1)>");
    services {name: {"endpoints": [addr], other keys...}}."""
    rules = ""
    for i, r in enumerate(routes):
        rules += (f"          - priority: {10 * (i + 1)}\n"
                  f"            match_rules: [{{prefix_match: {json.dumps(r['prefix'])}}}]\n"
                  f"            service: {r['service']}\n")
        if r.get("action"):
            rules += f"            route_action: {json.dumps(r['action'])}\n"
        if r.get("header_action"):
            rules += f"            header_action: {json.dumps(r['header_action'])}\n"
    svcs = ""
    for name, s in services.items():
        s = dict(s)
        eps = [{"address": a} for a in s.pop("endpoints")]
        svcs += f"  - name: {name}\n    endpoints: {json.dumps(eps)}\n"
        for k, v in s.items():
            svcs += f"    {k}: {json.dumps(v)}\n"
    first = routes[0]["service"]
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    url_map: m
admin: {{address: "127.0.0.1:{admin_port}"}}
drain_timeout: 10s
url_maps:
  - name: m
    default_service: {first}
    host_rules: [{{hosts: ["*"], path_matcher: pm}}]
    path_matchers:
      - name: pm
        default_service: {first}
        route_rules:
{rules}backend_services:
{svcs}"""


class Site:
    def __init__(self, px, port, admin_port):
        self.px = px
        self.port = port
        self.admin_port = admin_port
        self.url = f"http://{HOST}:{port}"
        self.client = httpx.Client(base_url=self.url, trust_env=False, timeout=CLIENT_TIMEOUT)

    def metric(self, name, **labels):
        key = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
        return admin_metrics(self.admin_port).get(key, 0)

    def mirrors(self, service, result):
        return self.metric("switchyard_mirror_requests_total", backend_service=service,
                           result=result)

    def wait_mirrors(self, service, result, n, timeout=10.0):
        """Wait until `result` counts n for `service`; returns the count."""
        wait_for(lambda: self.mirrors(service, result) >= n, timeout)
        return self.mirrors(service, result)

    def shadow(self):
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://{HOST}:{self.admin_port}/shadow", timeout=5) as r:
            assert r.status == 200
            assert r.headers["content-type"] == "application/json"
            return json.loads(r.read())

    def route_counts(self, name):
        for r in self.shadow()["routes"]:
            if r["route"] == name:
                return r
        return None


@pytest.fixture
def site(proxy):
    made = []

    def start(services, routes, workers=1):
        port, admin_port = free_ports(2)
        px = proxy(config(port, admin_port, services, routes), workers=workers,
                   expect_ports=[port, admin_port])
        s = Site(px, port, admin_port)
        made.append(s)
        return s
    yield start
    for s in made:
        s.client.close()


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def mirrored(backend_service, **extra):
    return {"request_mirror_policy": {"backend_service": backend_service, **extra}}


# ---------------------------------------------------------------------------
# the copy
# ---------------------------------------------------------------------------

def test_mirror_gets_the_request_as_the_primary_sends_it(site, testbed, capture):
    """Same method, rewritten path, headers (X-Forwarded-For, X-Request-Id,
    header actions) and body as the primary; Host gets "-shadow" before the
    port, as Envoy does (an IPv6 literal keeps its brackets)."""
    tb = testbed("prim")
    cap = capture()
    s = site({"primary": {"endpoints": [tb.addr]}, "mirror": {"endpoints": [cap.addr]}},
             [{"prefix": "/shop/", "service": "primary",
               "action": {"url_rewrite": {"path_prefix_rewrite": "/v2/"},
                          **mirrored("mirror")},
               "header_action": {"request_headers_to_add": [
                   {"header_name": "x-added", "header_value": "by-route"}]}}])
    body = b"hello mirror \x00\xff" * 10
    r = s.client.post("/shop/cart?x=1", content=body,
                      headers={"host": "shop.example:8080", "x-request-id": "copy-1",
                               "x-custom": "v1"})
    assert r.status_code == 200 and r.headers["x-testbed-instance"] == "prim"
    echo = r.json()
    assert echo["path"] == "/v2/cart?x=1" and echo["body_bytes"] == len(body)
    reqs = cap.wait_requests(1)
    assert len(reqs) == 1, cap.describe()
    m = reqs[0]
    assert m.method == "POST" and m.target == b"/v2/cart?x=1"
    assert m.host == "shop.example-shadow:8080"
    assert m.body == body
    # Every header the primary got, the mirror got with the same value.
    for name, value in echo["headers"].items():
        if name in ("host", "content-length", "transfer-encoding"):
            continue
        assert m.header(name) == value, (name, m.headers, echo["headers"])
    assert m.header("x-request-id") == "copy-1"
    assert m.header("x-added") == "by-route"
    assert m.header("x-forwarded-for") == echo["headers"]["x-forwarded-for"]

    for host, shadow in (("shop.example", "shop.example-shadow"),
                         ("[::1]:8080", "[::1]-shadow:8080"),
                         ("[::1]", "[::1]-shadow")):
        r = s.client.get("/shop/", headers={"host": host})
        assert r.status_code == 200
    reqs = cap.wait_requests(4)
    assert [q.host for q in reqs[1:]] == ["shop.example-shadow", "[::1]-shadow:8080",
                                          "[::1]-shadow"], cap.describe()
    assert [q.method for q in reqs[1:]] == ["GET"] * 3 and all(not q.body for q in reqs[1:])
    assert s.wait_mirrors("mirror", "sent", 4) == 4
    assert s.mirrors("mirror", "failed") == s.mirrors("mirror", "abandoned") == 0


def test_mirror_percent_zero_and_fifty(site, testbed, capture):
    """mirror_percent 0 mirrors nothing; 50 mirrors about half: 400 requests
    give 200 on average with a standard deviation of 10; the bound is 8
    deviations wide (a false failure about once in 10^15 runs)."""
    tb = testbed("prim")
    cap = capture()
    s = site({"primary": {"endpoints": [tb.addr]}, "mirror": {"endpoints": [cap.addr]}},
             [{"prefix": "/p0/", "service": "primary",
               "action": mirrored("mirror", mirror_percent=0)},
              {"prefix": "/p50/", "service": "primary",
               "action": mirrored("mirror", mirror_percent=50)}])
    for i in range(50):
        assert s.client.get(f"/p0/{i}").status_code == 200
    n = 400
    for i in range(n):
        assert s.client.get(f"/p50/{i}").status_code == 200
    # Every mirror started has ended once the counter equals what arrived.
    assert wait_for(lambda: cap.quiet() and s.mirrors("mirror", "sent") == len(cap.requests()),
                    10.0), cap.describe()
    reqs = cap.requests()
    assert all(q.target.startswith(b"/p50/") for q in reqs), cap.describe()
    k = len(reqs)
    assert 120 <= k <= 280, k
    assert s.mirrors("mirror", "sent") == k
    assert s.mirrors("mirror", "failed") == s.mirrors("mirror", "abandoned") == 0


# ---------------------------------------------------------------------------
# the client never waits for the mirror
# ---------------------------------------------------------------------------

def test_hanging_mirror_changes_neither_status_nor_latency(site, testbed, sink):
    """A mirror that takes the connection and never answers: the client's
    status and latency are those of the primary (compared with a route
    without a mirror), bodies included; the mirror ends at its service's
    timeout (counted failed); a drain does not wait for mirrors."""
    tb = testbed("prim")
    hang = sink("hang")
    s = site({"primary": {"endpoints": [tb.addr]},
              "hang": {"endpoints": [hang.addr], "timeout": "30s"},
              "hang_short": {"endpoints": [hang.addr], "timeout": "1s"}},
             [{"prefix": "/m/", "service": "primary", "action": mirrored("hang")},
              {"prefix": "/plain/", "service": "primary"},
              {"prefix": "/t/", "service": "primary", "action": mirrored("hang_short")}])
    delay = {"x-testbed-delay": "200ms"}
    with_mirror, without = [], []
    for i in range(8):
        r, t = timed(lambda: s.client.get(f"/m/{i}", headers=delay))
        assert r.status_code == 200 and r.headers["x-testbed-instance"] == "prim"
        with_mirror.append(t)
        r, t = timed(lambda: s.client.get(f"/plain/{i}", headers=delay))
        assert r.status_code == 200
        without.append(t)
    body = os.urandom(32 * 1024)
    r, t = timed(lambda: s.client.post("/m/body", content=body, headers=delay))
    assert r.status_code == 200 and r.json()["body_bytes"] == len(body)
    with_mirror.append(t)
    # Loose: a client that waited for the mirror would take 30 s (and time out at 10).
    assert statistics.median(with_mirror) < statistics.median(without) + 1.0, (with_mirror,
                                                                               without)
    assert max(with_mirror) < 5.0, with_mirror
    # The mirrors are still hanging: none counted yet.
    assert s.mirrors("hang", "sent") == s.mirrors("hang", "failed") == 0
    # A short mirror timeout ends them as failures, after the client's answer.
    for i in range(3):
        r, t = timed(lambda: s.client.get(f"/t/{i}"))
        assert r.status_code == 200 and t < 1.0, t
    assert s.wait_mirrors("hang_short", "failed", 3) == 3
    # A drain does not wait for the 9 mirrors still hanging.
    s.client.close()
    t0 = time.monotonic()
    assert s.px.stop() == 0
    assert time.monotonic() - t0 < 8.0


@pytest.mark.parametrize("kind", ["down", "reset"])
def test_failing_mirror_never_changes_the_clients_status(site, testbed, sink, kind):
    """A mirror endpoint nobody listens on (connect refused), or one that
    resets every connection: every client gets the primary's answer, at the
    primary's speed; each copy counts as failed."""
    tb = testbed("prim")
    if kind == "down":
        addr = f"{HOST}:{free_port()}"   # reserved, never bound
    else:
        addr = sink("reset").addr
    s = site({"primary": {"endpoints": [tb.addr]}, "mirror": {"endpoints": [addr]}},
             [{"prefix": "/", "service": "primary", "action": mirrored("mirror")}])
    times = []
    for i in range(6):
        r, t = timed(lambda: s.client.get(f"/g/{i}"))
        assert r.status_code == 200 and r.headers["x-testbed-instance"] == "prim"
        times.append(t)
        r, t = timed(lambda: s.client.post(f"/p/{i}", content=b"x" * 3000))
        assert r.status_code == 200 and r.json()["body_bytes"] == 3000
        times.append(t)
    # x-testbed-status reaches both sides: the client still gets the primary's.
    r = s.client.get("/s", headers={"x-testbed-status": "418"})
    assert r.status_code == 418 and r.headers["x-testbed-instance"] == "prim"
    assert statistics.median(times) < 1.0, times
    assert s.wait_mirrors("mirror", "failed", 13) == 13
    assert s.mirrors("mirror", "sent") == 0


def test_mirror_killed_mid_request_never_changes_the_clients_answer(site, testbed):
    """Requests in flight on both sides when the mirror's process dies
    (SIGKILL): every client still gets the primary's full answer, in the
    primary's time; each copy counts as failed."""
    tb = testbed("prim")
    mirror_tb = testbed("doomed")
    s = site({"primary": {"endpoints": [tb.addr]}, "mirror": {"endpoints": [mirror_tb.addr]}},
             [{"prefix": "/", "service": "primary", "action": mirrored("mirror")}],
             workers=2)
    n = 4
    results = [None] * n

    def one(i):
        with httpx.Client(base_url=s.url, trust_env=False, timeout=CLIENT_TIMEOUT) as c:
            try:
                results[i] = timed(lambda: c.get(f"/k/{i}", headers={
                    "x-testbed-delay": "1500ms", "x-testbed-body-size": "20000"}))
            except httpx.HTTPError as e:
                results[i] = (e, 0.0)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    # Both sides hold all n requests (their delay runs from there): kill the mirror.
    got = wait_requests_at(mirror_tb.port, n) and wait_requests_at(tb.port, n)
    mirror_tb.kill()
    for t in threads:
        t.join(CLIENT_TIMEOUT + 5)
    assert got, "the requests never reached both backends"
    for r, t in results:
        assert isinstance(r, httpx.Response), r
        assert r.status_code == 200 and r.headers["x-testbed-instance"] == "prim"
        assert len(r.content) == 20000 and t < 1.5 + 3.0, t
    assert s.wait_mirrors("mirror", "failed", n) == n
    assert s.mirrors("mirror", "sent") == 0


# ---------------------------------------------------------------------------
# bounds: body size and concurrency
# ---------------------------------------------------------------------------

def test_body_over_max_buffered_bytes_abandons_the_mirror(site, testbed, capture):
    """max_buffered_bytes 1KiB: a 512-byte body is mirrored whole; a 4 KiB
    body (Content-Length known at once, or chunked and found out on the way)
    abandons the copy, counted abandoned, and the primary gets it all."""
    tb = testbed("prim")
    cap = capture()
    s = site({"primary": {"endpoints": [tb.addr]}, "mirror": {"endpoints": [cap.addr]}},
             [{"prefix": "/", "service": "primary",
               "action": mirrored("mirror", max_buffered_bytes="1KiB")}])
    small, big = b"s" * 512, os.urandom(4096)
    r = s.client.post("/small", content=small)
    assert r.status_code == 200 and r.json()["body_bytes"] == 512
    r = s.client.post("/big-length", content=big)
    assert r.status_code == 200 and r.json()["body_bytes"] == 4096

    def chunks():
        for i in range(0, len(big), 512):
            yield big[i:i + 512]
    r = s.client.post("/big-chunked", content=chunks())
    assert r.status_code == 200 and r.json()["body_bytes"] == 4096
    assert s.wait_mirrors("mirror", "abandoned", 2) == 2
    assert s.wait_mirrors("mirror", "sent", 1) == 1
    cap.settle()
    reqs = cap.requests()
    assert [(q.target, q.body) for q in reqs] == [(b"/small", small)], cap.describe()
    # Exactly at the limit still fits.
    r = s.client.post("/exact", content=b"e" * 1024)
    assert r.status_code == 200
    assert s.wait_mirrors("mirror", "sent", 2) == 2
    assert cap.wait_requests(2)[-1].body == b"e" * 1024


def test_mirror_concurrency_limit_is_counted(site, testbed, sink):
    """The mirror service's circuit_breakers.max_requests bounds the mirrors
    in flight: with 2 hanging, the next ones are not sent (skipped_limit);
    the clients are answered all the same."""
    tb = testbed("prim")
    hang = sink("hang")
    s = site({"primary": {"endpoints": [tb.addr]},
              "mirror": {"endpoints": [hang.addr], "timeout": "30s",
                         "circuit_breakers": {"max_requests": 2}}},
             [{"prefix": "/", "service": "primary", "action": mirrored("mirror")}])
    for i in range(5):
        r, t = timed(lambda: s.client.get(f"/{i}"))
        assert r.status_code == 200 and t < 5.0, t
    assert s.wait_mirrors("mirror", "skipped_limit", 3) == 3
    assert s.mirrors("mirror", "sent") == s.mirrors("mirror", "failed") == 0
    # The two in flight hold the breaker: the primary's own service is untouched.
    r = s.client.get("/after")
    assert r.status_code == 200
    assert s.wait_mirrors("mirror", "skipped_limit", 4) == 4


# ---------------------------------------------------------------------------
# shadow compare
# ---------------------------------------------------------------------------

def stderr_mismatches(px):
    out = []
    for line in px.stderr().splitlines():
        if line.startswith("{"):
            e = json.loads(line)
            if e.get("msg") == "shadow mismatch":
                out.append(e)
    return out


def test_compare_counts_matches_and_reports_the_first_difference(site, testbed):
    """Two testbeds that differ by --name (cmp-a, cmp-b: their
    x-testbed-instance header and one byte of their echo) and two with the
    same name (twin: their echo differs only where it shows the Host, which
    has "-shadow" on the mirror). One byte of body, one header, the status,
    and a difference far into the body are each found; ignore_headers and
    max_body_bytes leave out what they should."""
    a, b = testbed("cmp-a"), testbed("cmp-b")
    t1, t2 = testbed("twin"), testbed("twin")
    cmp_ignore = {"ignore_headers": ["X-Testbed-Instance"], "max_body_bytes": 40}
    s = site({"a": {"endpoints": [a.addr]}, "b": {"endpoints": [b.addr]},
              "t1": {"endpoints": [t1.addr]}, "t2": {"endpoints": [t2.addr]}},
             [{"prefix": "/ignore/", "service": "a",
               "action": mirrored("b", compare=cmp_ignore)},
              {"prefix": "/strict/", "service": "a",
               "action": mirrored("b", compare={"max_body_bytes": 40})},
              {"prefix": "/twin/", "service": "t1", "action": mirrored("t2", compare={})}])
    ignore, strict, twin = "m/pm/priority:10", "m/pm/priority:20", "m/pm/priority:30"
    same_body = {"x-testbed-body-size": "5000"}

    # Identical bodies, headers equal once x-testbed-instance is ignored: a match.
    r = s.client.get("/ignore/same", headers={**same_body, "x-request-id": "cmp-match"})
    assert r.status_code == 200
    # The echo starts {"instance": "cmp-a", ...: within the 40 bytes compared,
    # the mirror's differs in exactly one byte (its Host, later, is not compared).
    r = s.client.get("/ignore/echo", headers={"x-request-id": "cmp-one-byte"})
    prefix = r.content[:40]
    mirror_prefix = prefix.replace(b"cmp-a", b"cmp-b")
    assert sum(x != y for x, y in zip(prefix, mirror_prefix)) == 1, prefix
    # Not ignored, x-testbed-instance differs: a header mismatch.
    r = s.client.get("/strict/same", headers={**same_body, "x-request-id": "cmp-header"})
    assert r.status_code == 200
    # fail-first: the primary's 503 is retried (the default policy for a
    # bodiless request) and the client gets 200; the mirror is not retried.
    r = s.client.get("/ignore/status", headers={"x-testbed-fail-first": "1",
                                                "x-testbed-key": f"cmp-{os.getpid()}",
                                                "x-request-id": "cmp-status"})
    assert r.status_code == 200 and r.headers["x-testbed-attempt"] == "2"
    # A long path puts the Host of the echo past offset 3000.
    long_path = "/twin/" + "p" * 3000
    r = s.client.get(long_path, headers={"host": "twin.example", "x-request-id": "cmp-far"})
    assert r.status_code == 200
    marker = b'"host": "twin.example'
    first_diff = r.content.index(marker + b'"') + len(marker)   # '"' vs '-'
    assert first_diff > 3000
    # Same generated body on both, larger than max_body_bytes (64KiB): a match.
    r = s.client.get("/twin/big", headers={"x-testbed-body-size": "100000"})
    assert r.status_code == 200 and len(r.content) == 100000

    def counts():
        return {n: s.route_counts(n) for n in (ignore, strict, twin)}
    want = {ignore: (1, 2), strict: (0, 1), twin: (1, 1)}
    assert wait_for(lambda: all(c and (c["match"], c["mismatch"]) == want[n]
                                for n, c in counts().items()), 10.0), counts()
    assert all(c["incomplete"] == 0 for c in counts().values()), counts()

    doc = s.shadow()
    assert doc["mismatches_total"] == 4 and doc["max_recent"] == 50
    recent = doc["recent_mismatches"]
    by_id = {e["request_id"]: e for e in recent}
    assert set(by_id) == {"cmp-one-byte", "cmp-header", "cmp-status", "cmp-far"}, recent
    assert recent[0]["request_id"] == "cmp-far"   # newest first

    e = by_id["cmp-one-byte"]
    assert (e["route"], e["diff"], e["header"], e["body_offset"]) == (ignore, "body", None, 0)
    assert e["primary_status"] == e["mirror_status"] == 200
    assert e["mirror_body_bytes"] == e["primary_body_bytes"] + len("-shadow")
    assert e["method"] == "GET" and e["path"] == "/ignore/echo" and e["mirror_service"] == "b"
    e = by_id["cmp-header"]
    assert (e["route"], e["diff"], e["header"], e["body_offset"]) == \
        (strict, "header", "x-testbed-instance", None)
    e = by_id["cmp-status"]
    assert (e["diff"], e["primary_status"], e["mirror_status"]) == ("status", 200, 503)
    e = by_id["cmp-far"]
    assert (e["route"], e["diff"], e["header"]) == (twin, "body", None)
    chunk = e["body_chunk_bytes"]
    assert chunk == 512
    assert e["body_offset"] <= first_diff < e["body_offset"] + chunk, (e, first_diff)

    # Each mismatch is one JSON line on stderr too, the same object.
    assert wait_for(lambda: len(stderr_mismatches(s.px)) == 4, 5.0), s.px.stderr()
    logged = {x["request_id"]: x for x in stderr_mismatches(s.px)}
    assert logged == by_id

    # The same counts in /metrics.
    assert s.metric("switchyard_shadow_compare_total", route=ignore, result="match") == 1
    assert s.metric("switchyard_shadow_compare_total", route=ignore, result="mismatch") == 2
    assert s.metric("switchyard_shadow_compare_total", route=strict, result="mismatch") == 1


def test_compare_incomplete_when_the_mirror_fails(site, testbed, sink):
    """A mirror that resets gives nothing to compare: counted incomplete
    (and failed), never a mismatch line."""
    tb = testbed("prim")
    reset = sink("reset")
    s = site({"primary": {"endpoints": [tb.addr]}, "mirror": {"endpoints": [reset.addr]}},
             [{"prefix": "/", "service": "primary",
               "action": mirrored("mirror", compare={})}])
    for i in range(3):
        assert s.client.get(f"/{i}").status_code == 200
    assert wait_for(lambda: (s.route_counts("m/pm/priority:10") or {}).get("incomplete") == 3,
                    10.0), s.shadow()
    c = s.route_counts("m/pm/priority:10")
    assert c["match"] == c["mismatch"] == 0
    assert s.shadow()["recent_mismatches"] == [] and stderr_mismatches(s.px) == []


# ---------------------------------------------------------------------------
# HTTP/2 and gRPC
# ---------------------------------------------------------------------------

def test_http2_client_on_a_mirrored_route(site, testbed, capture):
    """An h2c client: the HTTP/1.1 mirror gets the same request, its Host from
    :authority with "-shadow", and the whole body."""
    tb = testbed("prim")
    cap = capture()
    s = site({"primary": {"endpoints": [tb.addr]}, "mirror": {"endpoints": [cap.addr]}},
             [{"prefix": "/", "service": "primary", "action": mirrored("mirror")}])
    body = os.urandom(20000)
    r = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", "10",
                        "-H", "x-request-id: h2-copy", "--data-binary", "@-",
                        f"http://127.0.0.1:{s.port}/h2/upload"],
                       input=body, capture_output=True, timeout=20)
    echo = json.loads(r.stdout)
    assert echo["protocol"] == "HTTP/1.1" and echo["body_bytes"] == len(body)
    reqs = cap.wait_requests(1)
    assert len(reqs) == 1, cap.describe()
    m = reqs[0]
    assert m.method == "POST" and m.target == b"/h2/upload" and m.body == body
    assert m.host == f"127.0.0.1-shadow:{s.port}"
    assert m.header("x-request-id") == "h2-copy"
    assert s.wait_mirrors("mirror", "sent", 1) == 1


def test_grpc_through_a_mirrored_route(site, tmp_path):
    """grpcio client → switchyard → H2C grpcio backend `a`, mirrored to `b`:
    the client's calls (unary and server-streaming) are answered by `a`,
    `b` receives each of them, and the compare sees both complete responses
    (trailers included): once the headers naming the server and the
    deadline left are ignored, they differ only in the reply's `server`
    field, at the end of the message (the second 512-byte chunk of the
    unary reply's 1000-byte payload)."""
    tg = pytest.importorskip("test_grpc")
    grpc = tg.grpc
    d = tmp_path / "grpc"
    d.mkdir()
    out = d / "stubs"
    out.mkdir()
    r = subprocess.run([tg.PYTHON, "-m", "grpc_tools.protoc", f"-I{tg.PROTO_DIR}",
                        f"--python_out={out}", f"--grpc_python_out={out}", "echo.proto"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    import sys
    sys.path.insert(0, str(out))
    try:
        import echo_pb2
        import echo_pb2_grpc
    finally:
        sys.path.remove(str(out))
    a = tg._start_backend(out, d, "a")
    try:
        b = tg._start_backend(out, d, "b")
        try:
            s = site({"a": {"endpoints": [a.addr], "protocol": "H2C"},
                      "b": {"endpoints": [b.addr], "protocol": "H2C"}},
                     [{"prefix": "/", "service": "a",
                       "action": mirrored("b", compare={"ignore_headers": [
                           "x-server", "x-trailer", "x-time-remaining"]})}])
            key = f"mirror-{os.getpid()}"
            with grpc.insecure_channel(f"127.0.0.1:{s.port}", options=tg.CHANNEL_OPTIONS) as ch:
                stub = echo_pb2_grpc.EchoStub(ch)
                rep, call = stub.Unary.with_call(
                    echo_pb2.EchoRequest(payload=b"p" * 1000, text="hi"),
                    metadata=[("x-key", key)], timeout=10)
                assert rep.server == "a" and rep.payload == b"p" * 1000
                replies = list(stub.ServerStream(
                    echo_pb2.EchoRequest(payload=b"q", text="s"),
                    metadata=[("x-key", key + "-s"), ("x-stream-count", "3")], timeout=10))
                assert [x.text for x in replies] == ["s-0", "s-1", "s-2"]
                assert all(x.server == "a" for x in replies)
            with grpc.insecure_channel(b.addr, options=tg.CHANNEL_OPTIONS) as ch:
                stub = echo_pb2_grpc.EchoStub(ch)

                def seen(k):
                    q = stub.Unary(echo_pb2.EchoRequest(), metadata=[("x-query", f"calls:{k}")],
                                   timeout=5)
                    return q.text == "1"
                assert wait_for(lambda: seen(key) and seen(key + "-s"), 10.0, 0.1)
            assert s.wait_mirrors("b", "sent", 2) == 2
            route = "m/pm/priority:10"
            assert wait_for(lambda: (lambda c: c and c["match"] + c["mismatch"] == 2)(
                s.route_counts(route)), 10.0), s.shadow()
            c = s.route_counts(route)
            assert c["incomplete"] == 0 and c["mismatch"] == 2, s.shadow()
            recent = s.shadow()["recent_mismatches"]
            assert len(recent) == 2
            for e in recent:
                assert (e["diff"], e["header"], e["primary_status"], e["mirror_status"]) == \
                    ("body", None, 200, 200), e
            assert sorted(e["body_offset"] for e in recent) == [0, 512], recent
        finally:
            tg._stop(b.proc)
    finally:
        tg._stop(a.proc)
