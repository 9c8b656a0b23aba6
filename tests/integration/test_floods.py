"""HTTP/2 floods against the client side (RFC 9113 10.5; the frame floods of
CVE-2019-9512..9518, Rapid Reset CVE-2023-44487, the CONTINUATION flood
CVE-2024-27316 family, HPACK bombs, zero-window stalls).

Each flood is sent as raw frames on one connection and must end that
connection with exactly one GOAWAY carrying the expected code, cost the
proxy a bounded amount of CPU (utime + stime from /proc; the bound catches
the unbounded case on an ASan build, it is no benchmark) and memory (RSS
growth), and leave the proxy serving another client.
"""

import pytest

from conftest import free_port, wait_for
from h2raw import (ENHANCE_YOUR_CALM, HEADERS, SETTINGS_INITIAL_WINDOW_SIZE, RawH2, conns_to,
                   continuation, data, goaways, headers, indexed, lit, ping, priority, proc_cpu,
                   proc_rss, request_block, resets, rst_stream, settings, window_update)
from h2util import H2Conn, proxy_config

CPU_BOUND = 2.0          # s of proxy CPU for one flood (ASan build)
RSS_BOUND = 64 << 20     # bytes of RSS growth for one flood


@pytest.fixture
def px(proxy, testbed):
    """A proxy (one worker) in front of a testbed; returns (proxy, port, testbed)."""
    tb = testbed()
    port = free_port()
    p = proxy(proxy_config(port, tb.addr, timeout="30s"), workers=1, expect_ports=[port])
    return p, port, tb


def still_serving(port):
    with H2Conn(port, timeout=5) as c:
        st = c.get("/after", timeout=5)
        assert st.status == 200, f"proxy not serving after the flood: {st!r}"


def run_flood(px, chunks, want_code, want_debug=None, timeout=10.0):
    """Send chunks (in the background) on one raw connection; read until the
    proxy closed it. Asserts one GOAWAY with want_code, the close, the CPU
    and RSS bounds and that the proxy still serves. Returns the frames."""
    p, port, _ = px
    cpu0, rss0 = proc_cpu(p.pid), proc_rss(p.pid)
    with RawH2(port) as c:
        c.send_in_background(chunks)
        frames = c.read_until_closed(timeout)
        closed = c.closed
    cpu = proc_cpu(p.pid) - cpu0
    rss = proc_rss(p.pid) - rss0
    gs = goaways(frames)
    assert len(gs) == 1, f"expected one GOAWAY, got {gs}"
    code, _, debug = gs[0]
    assert code == want_code, f"GOAWAY {code} ({debug!r}), expected {want_code}"
    if want_debug is not None:
        assert debug == want_debug, debug
    assert closed, "the proxy did not close the connection after its GOAWAY"
    assert cpu < CPU_BOUND, f"the flood cost the proxy {cpu:.2f}s of CPU"
    assert rss < RSS_BOUND, f"the proxy's RSS grew by {rss >> 20} MiB"
    still_serving(port)
    return frames


def batches(unit, n, per=500):
    """n copies of unit, in writes of `per` copies."""
    out = []
    for i in range(0, n, per):
        out.append(unit * min(per, n - i))
    return out


def test_rapid_reset(px):
    """HEADERS then RST_STREAM, over and over: nghttp2's reset rate limit
    (1000 burst, 33/s) ends the connection."""
    block = request_block(path="/rr")
    chunks = []
    for base in range(0, 4000, 200):
        chunks.append(b"".join(headers(2 * i + 1, block) + rst_stream(2 * i + 1)
                               for i in range(base, base + 200)))
    frames = run_flood(px, chunks, ENHANCE_YOUR_CALM)
    assert not [f for f in frames if f[0] == HEADERS and f[2] > 2 * 1200], \
        "responses kept coming long past the reset limit"


def test_continuation_flood(px):
    """One HEADERS without END_HEADERS, then CONTINUATION frames that never
    end the block: nghttp2 fails it after 8; the proxy answers with one
    GOAWAY (it used to close without any)."""
    first = headers(1, request_block(path="/c"), end_headers=False)
    cont = continuation(1, lit("x-a", "b"))
    run_flood(px, [first] + batches(cont, 10000), ENHANCE_YOUR_CALM)


def test_ping_flood(px):
    """PINGs past ping_policy: one GOAWAY too_many_pings (not one per PING)."""
    run_flood(px, batches(ping(), 20000), ENHANCE_YOUR_CALM, b"too_many_pings")


def test_settings_flood(px):
    run_flood(px, batches(settings(), 20000), ENHANCE_YOUR_CALM)


def test_empty_data_flood(px):
    """Empty DATA frames without END_STREAM on an open request: no progress,
    all cost."""
    first = headers(1, request_block("POST", "/e"), end_stream=False)
    run_flood(px, [first] + batches(data(1), 50000), ENHANCE_YOUR_CALM, b"empty_data_flood")


def test_window_update_flood(px):
    run_flood(px, batches(window_update(0, 1), 50000), ENHANCE_YOUR_CALM,
              b"window_update_flood")


def test_priority_flood(px):
    chunks = [b"".join(priority(2 * i + 1) for i in range(b, b + 500))
              for b in range(0, 50000, 500)]
    run_flood(px, chunks, ENHANCE_YOUR_CALM, b"priority_flood")


def test_hpack_bomb(px):
    """A 4000-byte field put in the dynamic table once, then referenced by
    one byte each: a few KB on the wire, megabytes decoded. Past 4x
    max_header_list_size the connection ends."""
    big = lit("x-big", "a" * 4000, index=True)
    block = request_block(path="/bomb", extra=big + indexed(62) * 12000)
    assert len(block) < 16384
    run_flood(px, [headers(1, block)], ENHANCE_YOUR_CALM, b"header block too large")


def test_hpack_bomb_over_many_streams(px):
    """The same, one stream at a time under the connection limit (each block
    about 2x max_header_list_size): each stream gets 431, the work stays
    bounded, the connection stays usable."""
    p, port, _ = px
    cpu0 = proc_cpu(p.pid)
    big = lit("x-big", "a" * 4000, index=True)
    with RawH2(port) as c:
        first = headers(1, request_block(path="/b", extra=big + indexed(62) * 30))
        rest = b"".join(headers(2 * i + 1, request_block(path="/b", extra=indexed(62) * 30))
                        for i in range(1, 50))
        c.send(first + rest)
        frames = c.read_until(lambda f: sum(1 for x in f if x[0] == HEADERS) >= 50, 10)
        assert not goaways(frames), goaways(frames)
    assert sum(1 for x in frames if x[0] == HEADERS) == 50
    assert proc_cpu(p.pid) - cpu0 < CPU_BOUND
    still_serving(port)


def test_zero_window_stall(px):
    """100 streams, a zero initial window, large responses, a client that
    never reads: at most limits.max_stalled_streams (8) keep their backend
    connection and buffers; the others are reset ENHANCE_YOUR_CALM, their
    backend attempts released. RSS and backend connections stay bounded."""
    p, port, tb = px
    rss0, cpu0 = proc_rss(p.pid), proc_cpu(p.pid)
    with RawH2(port, client_settings=[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]) as c:
        body = lit("x-testbed-body-size", "1000000")
        c.send(b"".join(headers(2 * i + 1, request_block(path=f"/big{i}", extra=body))
                        for i in range(100)))
        frames = c.read_until(lambda f: len(resets(f)) >= 92, 20)
        rst = resets(frames)
        assert len(rst) >= 92, f"only {len(rst)} streams reset: {rst}"
        assert set(rst.values()) == {ENHANCE_YOUR_CALM}, rst
        assert not goaways(frames), goaways(frames)
        # the reset streams' backend connections go; the stalled ones stay
        assert wait_for(lambda: conns_to(tb.port) <= 8 + 2, 10), \
            f"{conns_to(tb.port)} backend connections still open"
        assert proc_rss(p.pid) - rss0 < RSS_BOUND
        assert proc_cpu(p.pid) - cpu0 < CPU_BOUND * 2
        still_serving(port)
