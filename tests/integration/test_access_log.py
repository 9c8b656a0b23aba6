"""The access log cannot be forged (docs/operations.md, "Access log"): every
field is escaped for its format (JSON: RFC 8259 escapes, bytes from 0x7f as
\\u00XX; text: \\xHH for quotes, backslash, space, control and non-ASCII
bytes), each field is cut to one fixed length, and a client's X-Request-Id
is kept only when it is 1..200 bytes of [A-Za-z0-9._:+/=-] — otherwise it
is replaced by a generated UUID, and the backend receives exactly the id
the log shows.

Requests are written byte for byte (h1util.request_bytes, latin-1), and the
testbed's JSON echo says what the backend received.
"""

import json
import re
import subprocess
import time

import pytest

from conftest import free_port
from h1util import H1Conn, get, request_bytes
from h2util import H2Conn
from test_retries import config

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
INJECT = 'a","status":200,"x":"'


# Every key of a JSON entry, in order (docs/operations.md, "Access log").
FIELDS = ["time", "client", "listener", "method", "authority", "path", "protocol", "status",
          "bytes_in", "bytes_out", "duration_ms", "upstream_ms", "backend_service", "route",
          "endpoint", "request_id", "attempts", "tries", "response_flags", "trace_id", "span_id",
          "user_agent", "xff", "tls_version", "sni"]


def start(proxy, testbed, fmt="json"):
    tb = testbed("tb1")
    port = free_port()
    text = config(port, [tb.addr]).replace('format: json', f'format: {fmt}')
    px = proxy(text, workers=1, expect_ports=[port])
    return px, port, tb


def raw_lines(px, n):
    """The first n access log lines as bytes (waits for them)."""
    px.access_log(min_entries=n) if n else None
    data = open(px.stdout_path, "rb").read()
    lines = [ln for ln in data.split(b"\n") if ln]
    return lines


def one_json(px):
    """The only access log line, parsed (and checked to be the only one)."""
    px.access_log(min_entries=1)
    lines = raw_lines(px, 0)
    assert len(lines) == 1, lines
    return lines[0], json.loads(lines[0])


def echoed_id(r):
    return r.json()["headers"].get("x-request-id")


# ---------------------------------------------------------------------------
# X-Request-Id
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    INJECT,                                  # a forged field
    'x" bad',                                # quote and space
    "tab\there",                             # a control byte (HTAB is legal in a field value)
    "caf\xe9",                               # a non-ASCII byte
    "semi;colon",
    "a" * 201,                               # one byte over the cap
], ids=["inject", "quote-space", "tab", "latin1", "semicolon", "too-long"])
def test_unsafe_request_id_replaced(proxy, testbed, value):
    px, port, tb = start(proxy, testbed)
    r = get(port, "/rid", headers=[("X-Request-Id", value)])
    assert r.status == 200, r
    line, e = one_json(px)
    assert UUID.match(e["request_id"]), e
    assert echoed_id(r) == e["request_id"]           # the backend got what the log shows
    assert e["status"] == 200 and e["path"] == "/rid" and e["response_flags"] == "-", e
    assert list(e) == FIELDS


@pytest.mark.parametrize("value", [
    "e994445c-6fb4-4001-99c6-e3a164224a10",
    "trace.span:1_2-3",
    "YWJjZGVm+/Zz==",
    "a" * 200,                               # exactly the cap
], ids=["uuid", "punct", "base64", "200-bytes"])
def test_safe_request_id_kept_whole(proxy, testbed, value):
    px, port, tb = start(proxy, testbed)
    r = get(port, "/rid", headers=[("X-Request-Id", value)])
    line, e = one_json(px)
    assert e["request_id"] == value
    assert echoed_id(r) == value
    assert b'"request_id":"' + value.encode() + b'"' in line


def test_duplicate_request_ids_become_one(proxy, testbed):
    """Two X-Request-Id fields: the first (safe) one is kept, and the
    backend receives exactly one field with it."""
    px, port, tb = start(proxy, testbed)
    r = get(port, "/dup", headers=[("X-Request-Id", "first-id"), ("X-Request-Id", "second")])
    line, e = one_json(px)
    assert e["request_id"] == "first-id"
    assert echoed_id(r) == "first-id"                # not "first-id, second"


def test_generated_request_id_when_absent(proxy, testbed):
    px, port, tb = start(proxy, testbed)
    r = get(port, "/none")
    line, e = one_json(px)
    assert UUID.match(e["request_id"]) and echoed_id(r) == e["request_id"]


def test_request_id_over_h2_replaced(proxy, testbed):
    px, port, tb = start(proxy, testbed)
    with H2Conn(port) as c:
        sid = c.request("GET", "/h2", headers=[("x-request-id", INJECT)])
        st = c.wait_stream(sid, 10)
    assert st.status == 200, st
    line, e = one_json(px)
    assert UUID.match(e["request_id"]), e
    assert st.json()["headers"]["x-request-id"] == e["request_id"]


# ---------------------------------------------------------------------------
# JSON escaping of client-controlled fields, exact bytes
# ---------------------------------------------------------------------------

def h2_get(port, path, headers=(), authority="test.local"):
    """One GET over h2c prior knowledge with exact :path / :authority bytes."""
    with H2Conn(port) as c:
        sid = c.next_id()
        c.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                             (":authority", authority), (":path", path), *headers],
                       end_stream=True)
        return c.wait_stream(sid, 10)


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_path_with_quotes_escaped_json(proxy, testbed, proto):
    """A target that tries to close the path string and add fields: both
    codecs refuse it (400, or RST_STREAM), and its log line is one JSON object
    whose fields are the real ones (the status is not the forged 200), with
    whatever path it shows being the original bytes, escaped."""
    px, port, tb = start(proxy, testbed)
    path = "/q?x=" + INJECT + "\\end"
    if proto == "h1":
        r = get(port, path, headers=[("X-Request-Id", INJECT)])
        status = r.status
        assert status == 400, r
    else:   # a 400, or a reset (PROTOCOL_ERROR) that the log shows as 400
        st = h2_get(port, path, headers=[("x-request-id", INJECT)])
        assert st.status == 400 or (st.status is None and st.reset_code is not None), st
        status = 400
    line, e = one_json(px)
    assert e["status"] == status, e
    assert list(e) == FIELDS
    if e["path"]:
        assert e["path"] == path, e
        assert b'"path":"/q?x=a\\",\\"status\\":200,\\"x\\":\\"\\\\end"' in line, line
    assert e["request_id"] == "" or UUID.match(e["request_id"]), e


def test_rejected_request_logged_escaped(proxy, testbed):
    """HTTP/1.1 refuses a target with `"` or bytes from 0x80 (400), and the
    400 is logged with that target as it came, escaped: bytes from 0x80 are
    \\u00XX, one per byte, so the string read as Latin-1 gives them back."""
    px, port, tb = start(proxy, testbed)
    raw = b'/caf\xe9/\xff?x="a\\'
    with H1Conn(port) as c:
        c.send(b"GET " + raw + b" HTTP/1.1\r\nHost: test.local\r\n\r\n")
        r = c.read_response()
    line, e = one_json(px)
    assert e["status"] == r.status == 400, (r, e)
    assert b'"path":"/caf\\u00e9/\\u00ff?x=\\"a\\\\"' in line, line
    assert e["path"].encode("latin-1") == raw
    assert line.isascii()


def test_authority_escaped_json(proxy, testbed):
    """:authority is the client's too: whatever the proxy answers, the entry
    is one valid JSON line carrying the value escaped."""
    px, port, tb = start(proxy, testbed)
    host = 'h"x\\z'
    st = h2_get(port, "/h", authority=host)
    line, e = one_json(px)
    if e["authority"]:
        assert e["authority"] == host, e
        assert b'"authority":"h\\"x\\\\z"' in line, line
    assert e["status"] == (st.status or 499)


def test_field_caps(proxy, testbed):
    """One cap, 2048 bytes, for every field: path, authority and user agent
    are logged cut (the backend gets all of them)."""
    px, port, tb = start(proxy, testbed)
    path = "/" + "p" * 2999
    host = "h" * 2100
    ua = "u" * 3000
    r = get(port, path, host=host, headers=[("User-Agent", ua)])
    assert r.status == 200, r
    assert r.json()["path"] == path
    assert r.json()["headers"]["user-agent"] == ua
    line, e = one_json(px)
    assert e["path"] == path[:2048]
    assert e["authority"] == host[:2048]
    assert e["user_agent"] == ua[:2048]


# ---------------------------------------------------------------------------
# the text format
# ---------------------------------------------------------------------------

TEXT_LINE = re.compile(
    rb'^(\S+) (\S+) "(\S+) (\S+) (\S+)" (\d+) (\d+) (\d+) (\S+)ms (\S+) (\S+) (\S+) '
    rb'attempts=(\d+) flags=(\S+)((?: [a-z_]+=\S+)*)$')


def text_kv(m):
    """The ` key=value` fields after flags= of a TEXT_LINE match, as {str: bytes}."""
    return dict(kv.split(b"=", 1) for kv in m.group(15).split())


def text_lines(px, n):
    """The access log's first n lines (text format), waiting for them."""
    data = b""
    for _ in range(100):
        data = open(px.stdout_path, "rb").read()
        if data.count(b"\n") >= n:
            break
        time.sleep(0.05)   # polling: the line is written when the exchange ends
    return [ln for ln in data.split(b"\n") if ln]


def test_text_format_escapes(proxy, testbed):
    """Text: quotes, backslash, space, control and non-ASCII bytes as \\xHH,
    so every field stays one whitespace-free token and the quoted request
    cannot be closed early; an empty field is `-`."""
    px, port, tb = start(proxy, testbed, fmt="text")
    st = h2_get(port, '/t?x=a%20b', headers=[("x-request-id", INJECT)])
    assert st.status == 200, st
    with H1Conn(port) as c:   # refused (400), logged all the same
        c.send(b'GET /r?x="a\xff HTTP/1.1\r\nHost: test.local\r\n\r\n')
        r = c.read_response()
    assert r.status == 400
    lines = text_lines(px, 2)
    assert len(lines) == 2, lines
    m = TEXT_LINE.match(lines[0])
    assert m, lines[0]
    assert m.group(3) == b"GET"
    assert m.group(4) == b"/t?x=a%20b", lines[0]
    assert m.group(5) == b"HTTP/2"
    assert m.group(6) == b"200"
    rid = m.group(12).decode()
    assert UUID.match(rid), lines[0]
    assert st.json()["headers"]["x-request-id"] == rid
    m = TEXT_LINE.match(lines[1])
    assert m, lines[1]
    assert m.group(4) == b"/r?x=\\x22a\\xff", lines[1]
    assert m.group(6) == b"400"
    assert m.group(10) == m.group(11) == m.group(12) == b"-", lines[1]
    assert m.group(13) == b"0" and m.group(14) == b"LR", lines[1]
    # refused by the codec before routing: no route, upstream time, trace; plain TCP
    assert text_kv(m) == {k: b"-" for k in (b"route", b"upstream_ms", b"tls", b"sni", b"xff",
                                              b"user_agent", b"trace_id", b"span_id")}, lines[1]


# ---------------------------------------------------------------------------
# operator fields (issue 13 item 4): user agent, X-Forwarded-For as received,
# route, upstream time, TLS version and SNI, trace id; cached timestamps
# ---------------------------------------------------------------------------

def test_operator_fields_json(proxy, testbed):
    tb = testbed("tb1")
    port = free_port()
    text = config(port, [tb.addr], routes=[("/slow/", None)])
    px = proxy(text, workers=1, expect_ports=[port])
    r = get(port, "/slow/x", headers=[("User-Agent", 'curl/8 "x"\xe9'),
                                      ("X-Forwarded-For", "203.0.113.7"),
                                      ("X-Forwarded-For", "198.51.100.1, 10.0.0.1"),
                                      ("x-testbed-delay", "200ms")])
    assert r.status == 200, r
    line, e = one_json(px)
    assert list(e) == FIELDS
    assert e["user_agent"] == 'curl/8 "x"\xe9', e
    assert b'"user_agent":"curl/8 \\"x\\"\\u00e9"' in line, line
    # as received (the fields joined), while the backend gets them plus two addresses
    assert e["xff"] == "203.0.113.7, 198.51.100.1, 10.0.0.1", e
    assert r.json()["headers"]["x-forwarded-for"].startswith(e["xff"] + ", 127.0.0.1, ")
    assert e["route"] == "main/pm/priority:1", e
    assert 150 <= e["upstream_ms"] <= e["duration_ms"], e
    assert e["tls_version"] == "" and e["sni"] == "", e
    assert re.fullmatch(r"[0-9a-f]{32}", e["trace_id"]), e
    r = get(port, "/other")
    e = px.access_log(min_entries=2)[1]
    assert e["route"] == "main/pm/priority:1000" and e["xff"] == "" and e["user_agent"] == "", e


def test_local_reply_has_no_upstream_time(proxy, testbed):
    tb = testbed("tb1")
    port = free_port()
    text = config(port, [tb.addr], routes=[
        ("/abort/", {"fault_injection_policy": {"abort": {"http_status": 503}}})])
    px = proxy(text, workers=1, expect_ports=[port])
    assert get(port, "/abort/x").status == 503
    line, e = one_json(px)
    assert e["upstream_ms"] is None and e["attempts"] == 0, e
    assert b'"upstream_ms":null' in line


def test_xff_received_capped_like_forwarded(proxy, testbed):
    """An X-Forwarded-For over the 2048-byte cap loses its oldest entries,
    whole, in the log and upstream alike."""
    px, port, tb = start(proxy, testbed)
    entries = [f"10.{i // 256}.{i % 256}.1" for i in range(300)]
    xff = ", ".join(entries)
    assert len(xff) > 2048
    r = get(port, "/xff", headers=[("X-Forwarded-For", xff)])
    assert r.status == 200, r
    line, e = one_json(px)
    assert len(e["xff"]) <= 2048 and xff.endswith(e["xff"]), e["xff"][:80]
    assert e["xff"].split(", ")[0] in entries               # cut at an entry boundary
    assert len(e["xff"]) > 2048 - 20                        # and no more than needed
    fwd = r.json()["headers"]["x-forwarded-for"]
    assert fwd.startswith(e["xff"] + ", 127.0.0.1, "), fwd[:80]


def test_tls_version_and_sni(proxy, testbed, certs):
    tb = testbed("tb1")
    port = free_port()
    text = config(port, [tb.addr]).replace(
        "    protocol: HTTP\n    url_map: main",
        "    protocol: HTTPS\n"
        f"    tls: {{certificates: [{{cert_file: \"{certs.cert}\", key_file: \"{certs.key}\"}}]}}\n"
        "    url_map: main", 1)
    px = proxy(text, workers=1, expect_ports=[port])
    for http2 in (False, True):
        p = subprocess.run(["curl", "-sS", "--cacert", str(certs.ca), "--tlsv1.3",
                            "--http2" if http2 else "--http1.1",
                            "--resolve", f"localhost:{port}:127.0.0.1",
                            "-o", "/dev/null", "-w", "%{http_code}",
                            f"https://localhost:{port}/tls"],
                           capture_output=True, timeout=30)
        assert p.stdout == b"200", p
    log = px.access_log(min_entries=2)
    assert [(e["protocol"], e["tls_version"], e["sni"]) for e in log] == [
        ("HTTP/1.1", "TLSv1.3", "localhost"), ("HTTP/2", "TLSv1.3", "localhost")], log


def test_text_format_operator_fields(proxy, testbed):
    px, port, tb = start(proxy, testbed, fmt="text")
    r = get(port, "/t", headers=[("User-Agent", "a b\"c"), ("X-Forwarded-For", "192.0.2.9")])
    assert r.status == 200, r
    lines = text_lines(px, 1)
    m = TEXT_LINE.match(lines[0])
    assert m, lines[0]
    kv = text_kv(m)
    assert list(kv) == [b"route", b"upstream_ms", b"tls", b"sni", b"xff", b"user_agent",
                        b"trace_id", b"span_id"], lines[0]
    assert kv[b"user_agent"] == b"a\\x20b\\x22c" and kv[b"xff"] == b"192.0.2.9", lines[0]
    assert kv[b"route"] == b"main/pm/priority:1000" and kv[b"tls"] == b"-", lines[0]
    assert re.fullmatch(rb"\d+\.\d{3}", kv[b"upstream_ms"]), lines[0]
    assert re.fullmatch(rb"[0-9a-f]{32}", kv[b"trace_id"]), lines[0]
    assert re.fullmatch(rb"[0-9a-f]{16}", kv[b"span_id"]), lines[0]


def test_timestamps_cached_but_current(proxy, testbed):
    """The worker reuses its formatted time; each entry still shows the
    millisecond it was written (never going back, close to the wall clock)."""
    import datetime
    px, port, tb = start(proxy, testbed)
    before = datetime.datetime.now(datetime.timezone.utc)
    for i in range(20):
        assert get(port, f"/ts{i}").status == 200
        if i == 10:
            time.sleep(1.1)   # a second boundary in between
    after = datetime.datetime.now(datetime.timezone.utc)
    log = px.access_log(min_entries=20)
    times = [datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc) for e in log]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]) for e in log)
    assert times == sorted(times)
    slack = datetime.timedelta(seconds=1)
    assert before - slack <= times[0] and times[-1] <= after + slack, (before, times, after)
    assert (times[11] - times[10]).total_seconds() >= 1.0
