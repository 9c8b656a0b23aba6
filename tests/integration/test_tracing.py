"""W3C trace context and the identity of local replies (issue 13 item 3;
docs/operations.md "Tracing", docs/configuration.md "tracing"):

- a valid client traceparent keeps its trace id and flags upstream, with a
  new parent id (this hop's span, logged as span_id); tracestate goes
  unchanged;
- without one (or with an invalid one: W3C restarts the trace and drops
  tracestate) the proxy starts a trace, flagged sampled per
  tracing.sampled_percent; tracing.generate: false starts none;
- the access log shows trace_id and span_id;
- replies the proxy makes itself (fault aborts, 503 no healthy upstream,
  redirects, CORS preflights, gRPC statuses) carry X-Request-Id (the logged
  one), Date and Server;
- the tracing block's errors and its GET /config output.

The testbed's JSON echo says what the backend received.
"""

import email.utils
import http.client
import json
import re
import subprocess

import pytest

from conftest import HOST, binary, child_env, free_port, wait_for
from h1util import exchange, get
from test_retries import config

TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"


def start(proxy, testbed, tracing=None, routes=(), admin_port=None):
    tb = testbed("tb1")
    port = free_port()
    text = config(port, [tb.addr], routes=routes, admin_port=admin_port)
    if tracing is not None:
        text += f"tracing: {json.dumps(tracing)}\n"
    px = proxy(text, workers=1, expect_ports=[port])
    return px, port, tb


def upstream(r):
    """The trace headers the backend received: (traceparent match, tracestate)."""
    h = r.json()["headers"]
    tp = h.get("traceparent")
    return (TP.match(tp) if tp else None), h.get("tracestate")


def last_entry(px, n=1):
    log = px.access_log(min_entries=n)
    assert len(log) >= n, px.stderr()[-2000:]
    return log[n - 1]


def test_valid_traceparent_kept_with_a_new_span(proxy, testbed):
    px, port, tb = start(proxy, testbed)
    r = get(port, "/t", headers=[("traceparent", f"00-{TID}-{PID}-01"),
                                 ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")])
    assert r.status == 200, r
    m, ts = upstream(r)
    assert m, r.json()["headers"]
    assert m.group(1) == TID and m.group(3) == "01"
    assert m.group(2) != PID and m.group(2) != "0" * 16
    assert ts == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    e = last_entry(px)
    assert e["trace_id"] == TID and e["span_id"] == m.group(2), e


def test_unsampled_flag_kept(proxy, testbed):
    px, port, tb = start(proxy, testbed, tracing={"sampled_percent": 100})
    r = get(port, "/t", headers=[("traceparent", f"00-{TID}-{PID}-00")])
    m, _ = upstream(r)
    assert m and m.group(1) == TID and m.group(3) == "00", r.json()["headers"]


@pytest.mark.parametrize("pct,flags", [(None, "00"), (100, "01")])
def test_generated_when_absent(proxy, testbed, pct, flags):
    px, port, tb = start(proxy, testbed,
                         tracing=None if pct is None else {"sampled_percent": pct})
    ids = set()
    for i in range(3):
        r = get(port, f"/g{i}")
        m, ts = upstream(r)
        assert m and m.group(3) == flags and ts is None, r.json()["headers"]
        assert m.group(1) != "0" * 32
        ids.add(m.group(1))
        e = last_entry(px, i + 1)
        assert e["trace_id"] == m.group(1) and e["span_id"] == m.group(2), e
    assert len(ids) == 3   # a new trace each time


@pytest.mark.parametrize("bad", [
    f"00-{TID.upper()}-{PID}-01",            # upper case
    f"00-{'0' * 32}-{PID}-01",               # all-zero trace id
    f"00-{TID}-{'0' * 16}-01",               # all-zero parent id
    f"ff-{TID}-{PID}-01",                    # version ff
    f"00-{TID}-{PID}-01-extra",              # version 00 with more
    f"00-{TID}-{PID}",                       # short
    "garbage",
], ids=["upper", "zero-trace", "zero-parent", "version-ff", "00-long", "short", "garbage"])
def test_invalid_traceparent_restarts_the_trace(proxy, testbed, bad):
    px, port, tb = start(proxy, testbed)
    r = get(port, "/i", headers=[("traceparent", bad), ("tracestate", "a=1")])
    m, ts = upstream(r)
    assert m and m.group(1) not in (TID, TID.upper(), "0" * 32), r.json()["headers"]
    assert ts is None                                    # dropped with the bad traceparent
    assert last_entry(px)["trace_id"] == m.group(1)


def test_later_version_parsed_and_sent_as_00(proxy, testbed):
    px, port, tb = start(proxy, testbed)
    r = get(port, "/v", headers=[("traceparent", f"cc-{TID}-{PID}-01-what-the-future-holds")])
    m, _ = upstream(r)
    assert m and m.group(1) == TID and m.group(3) == "01", r.json()["headers"]


def test_two_traceparents_are_invalid(proxy, testbed):
    px, port, tb = start(proxy, testbed)
    r = get(port, "/two", headers=[("traceparent", f"00-{TID}-{PID}-01"),
                                   ("traceparent", f"00-{TID}-{PID}-01")])
    m, _ = upstream(r)
    assert m and m.group(1) != TID, r.json()["headers"]


def test_long_tracestate_dropped(proxy, testbed):
    """tracestate over the log's field cap (2048 bytes) is not forwarded."""
    px, port, tb = start(proxy, testbed)
    ok = ",".join(f"k{i}=v" for i in range(300))[:2000]
    ok = ok[:ok.rfind(",")]
    r = get(port, "/s", headers=[("traceparent", f"00-{TID}-{PID}-01"), ("tracestate", ok)])
    assert upstream(r)[1] == ok
    long = ok + "," + "x=" + "y" * 100
    r = get(port, "/s", headers=[("traceparent", f"00-{TID}-{PID}-01"), ("tracestate", long)])
    m, ts = upstream(r)
    assert m and m.group(1) == TID and ts is None, len(long)


def test_generate_off(proxy, testbed):
    px, port, tb = start(proxy, testbed, tracing={"generate": False})
    r = get(port, "/off")
    assert upstream(r) == (None, None), r.json()["headers"]
    e = last_entry(px)
    assert e["trace_id"] == "" and e["span_id"] == "", e
    r = get(port, "/on", headers=[("traceparent", f"00-{TID}-{PID}-01")])
    m, _ = upstream(r)
    assert m and m.group(1) == TID                       # still propagated


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("block,msg", [
    ("{sampled_percent: 101}", "sampled_percent"),
    ("{sampled_percent: -1}", "sampled_percent"),
    ("{generate: maybe}", "generate"),
    ("{sampling: 5}", "sampling"),
    ("[1]", "tracing"),
])
def test_config_errors(tmp_path, block, msg):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config(free_port(), ["127.0.0.1:1"]) + f"tracing: {block}\n")
    p = subprocess.run([str(binary("switchyard")), "-t", "-c", str(cfg)], capture_output=True,
                       timeout=30, env=child_env())
    assert p.returncode == 1, p
    err = p.stderr.decode()
    assert re.search(rf"c\.yaml:\d+:\d+: .*{msg}", err), err


def test_config_shows_tracing(proxy, testbed):
    admin = free_port()
    px, port, tb = start(proxy, testbed, tracing={"sampled_percent": 12.5}, admin_port=admin)
    conn = http.client.HTTPConnection(HOST, admin, timeout=5)
    try:
        conn.request("GET", "/config")
        cfg = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    tracing = cfg.get("config", cfg).get("tracing")
    assert tracing == {"generate": True, "sampled_percent": 12.5}, cfg.keys()


# ---------------------------------------------------------------------------
# local replies
# ---------------------------------------------------------------------------

def check_identity(r, e):
    """A local reply `r` carries the X-Request-Id logged in `e`, Date, Server."""
    assert r.header("x-request-id") == e["request_id"] and e["request_id"], (r, e)
    assert r.header("server") == "switchyard", r
    d = email.utils.parsedate_to_datetime(r.header("date"))
    assert d.tzinfo is not None, r.header("date")


def test_local_replies_carry_request_id_date_server(proxy, testbed):
    routes = [("/gone/", {"fault_injection_policy": {"abort": {"http_status": 418}}}),
              ("/grpc/", {"fault_injection_policy": {"abort": {"grpc_status": 14}}})]
    tb = testbed("tb1")
    port = free_port()
    text = config(port, [tb.addr], routes=routes)
    # a redirect rule, and a service with no endpoint that can serve
    text = text.replace("          - priority: 1000\n",
                        "          - priority: 900\n"
                        "            match_rules: [{prefix_match: /old/}]\n"
                        "            url_redirect: {path_redirect: /new}\n"
                        "          - priority: 950\n"
                        "            match_rules: [{prefix_match: /dead/}]\n"
                        "            service: dead\n"
                        "          - priority: 1000\n")
    text += ("  - name: dead\n    protocol: HTTP\n    endpoints: [{address: \"127.0.0.1:1\"}]\n"
             "    health_checks: [hc]\n"
             "health_checks:\n  - {name: hc, type: TCP, check_interval: 60s, "
             "unhealthy_threshold: 1}\n")
    px = proxy(text, workers=1, expect_ports=[port])
    n = 0
    r = get(port, "/gone/x", headers=[("x-request-id", "client-id-1")])
    n += 1
    assert r.status == 418
    check_identity(r, last_entry(px, n))
    assert r.header("x-request-id") == "client-id-1"       # a valid client id is kept
    r = get(port, "/old/x")
    n += 1
    assert r.status == 301 and r.header("location"), r
    check_identity(r, last_entry(px, n))
    r = get(port, "/grpc/x", headers=[("content-type", "application/grpc")])
    n += 1
    assert r.status == 200 and r.header("grpc-status") == "14", r
    check_identity(r, last_entry(px, n))
    # the TCP check of 127.0.0.1:1 fails at once: no healthy endpoint
    assert wait_for(lambda: b"no healthy upstream" in get(port, "/dead/x").body, 5)
    log = px.access_log(min_entries=n + 1)
    r = get(port, "/dead/y", headers=[("x-request-id", "bad id")])
    assert r.status == 503
    e = px.access_log(min_entries=len(log) + 1)[-1]
    assert "UH" in e["response_flags"], e
    check_identity(r, e)
    assert r.header("x-request-id") != "bad id"            # replaced, as upstream


def test_preflight_carries_identity(proxy, testbed):
    tb = testbed("tb1")
    port = free_port()
    text = config(port, [tb.addr], routes=[
        ("/cors/", {"cors_policy": {"allow_origins": ["https://a.example"],
                                    "allow_methods": ["PUT"]}})])
    px = proxy(text, workers=1, expect_ports=[port])
    r = get(port, "/cors/x", method="OPTIONS",
            headers=[("origin", "https://a.example"), ("access-control-request-method", "PUT")])
    assert r.status == 200 and r.header("access-control-allow-origin") == "https://a.example", r
    check_identity(r, last_entry(px, 1))


def test_local_reply_identity_over_h2(proxy, testbed):
    """The same headers on an HTTP/2 stream (a fault abort and a gRPC status)."""
    from test_access_log import h2_get
    routes = [("/gone/", {"fault_injection_policy": {"abort": {"http_status": 503}}}),
              ("/grpc/", {"fault_injection_policy": {"abort": {"grpc_status": 8}}})]
    px, port, tb = start(proxy, testbed, routes=routes)
    st = h2_get(port, "/gone/x", headers=[("x-request-id", "h2-id")])
    assert st.status == 503, st
    check_identity(st, last_entry(px, 1))
    assert st.header("x-request-id") == "h2-id"
    st = h2_get(port, "/grpc/x", headers=[("content-type", "application/grpc")])
    assert st.status == 200 and st.header("grpc-status") == "8", st
    check_identity(st, last_entry(px, 2))


def test_codec_replies_carry_date_and_server(proxy, testbed):
    """The HTTP/1.1 codec's own answers, made before an exchange is routed (a
    head that does not parse, too many header fields), carry Date and Server
    too."""
    px, port, tb = start(proxy, testbed)
    bad = [b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header: 1\r\n\r\n",
           b"GET /x HTTP/1.1\r\nHost: a\r\n" + b"".join(b"x-%d: v\r\n" % i for i in range(150))
           + b"\r\n"]
    for raw in bad:
        r = exchange(port, raw)
        assert r.status in (400, 431), r
        assert r.header("server") == "switchyard", r
        assert email.utils.parsedate_to_datetime(r.header("date")).tzinfo is not None, r
