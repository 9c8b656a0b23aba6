"""The admin status page (issue 13, item 1; docs/operations.md "Status page"):
GET /status.json (schema, live state, rates and latency from the 1 s
sampler, the reload history, an endpoint draining after a reload removed
it) and GET / rendered by headless Chromium (Debian's chromium package),
whose DOM must show a healthy and an unhealthy endpoint once the page's
script has fetched the data; at a phone's width (390 px, driven over the
DevTools protocol) the page must not scroll sideways.

Health checks run every 200 ms with thresholds of 2; the sampler takes one
sample a second, so a rate appears within about two seconds. Every wait is
bounded.

Set SY_STATUS_SCREENSHOT=PATH to also save a screenshot of the page
(docs/status.png is made that way).
"""

import asyncio
import datetime
import html.parser
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import Path

import pytest
import websockets  # Debian's python3-websockets (asyncio client), for the DevTools protocol

from conftest import HOST, free_port, wait_for
from h1util import get

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
CHROMIUM_TIMEOUT = 90  # s, for one chromium run (under a loaded machine)


def config(port, admin_port, endpoints, *, max_requests=1024, gateway_failures=1000):
    eps = "".join(f"      - {{address: \"{e}\"}}\n" for e in endpoints)
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    protocol: HTTP
    url_map: main
admin: {{address: "127.0.0.1:{admin_port}"}}
access_log: {{enabled: false}}
drain_timeout: 2s
url_maps:
  - name: main
    default_service: svc
backend_services:
  - name: svc
    endpoints:
{eps}    health_checks: [hc]
    circuit_breakers: {{max_requests: {max_requests}}}
    outlier_detection: {{consecutive_gateway_failure: {gateway_failures}, consecutive_errors: 1000,
                        base_ejection_time: 30s}}
health_checks:
  - {{name: hc, type: HTTP, request_path: /healthz, check_interval: 200ms, timeout: 500ms,
      healthy_threshold: 2, unhealthy_threshold: 2}}
"""


def admin(port, method, path, timeout=10):
    """(status, headers dict lower-case, body bytes) of one admin request."""
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def status_json(port):
    code, headers, body = admin(port, "GET", "/status.json")
    assert code == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


def ts(iso):
    """Seconds since the epoch of a status.json time."""
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def endpoints(doc):
    return {e["address"]: e for s in doc["backend_services"] for e in s["endpoints"]}


def fail_health(tb):
    c = http.client.HTTPConnection(HOST, tb.port, timeout=5)
    try:
        c.request("POST", "/testbed/health?status=fail")
        assert c.getresponse().status == 200
    finally:
        c.close()


@pytest.fixture
def setup(testbed, proxy):
    """tb1 healthy, tb2 failing its health check, both in service svc;
    returns (proxy, port, admin_port, tb1, tb2) once status.json says so."""
    tb1, tb2 = testbed("tb1"), testbed("tb2")
    fail_health(tb2)
    port, admin_port = free_port(), free_port()
    px = proxy(config(port, admin_port, [tb1.addr, tb2.addr], max_requests=77),
               expect_ports=[port, admin_port])

    def states():
        eps = endpoints(status_json(admin_port))
        return (eps[tb1.addr]["state"], eps[tb2.addr]["state"]) == ("healthy", "unhealthy")
    assert wait_for(states, timeout=10, interval=0.1), status_json(admin_port)
    return px, port, admin_port, tb1, tb2


def test_status_json_state_rates_latency(setup):
    px, port, admin_port, tb1, tb2 = setup
    for _ in range(20):
        assert get(port, "/x").status == 200
    # 10 slow ones: p99 lands in the (25 ms, 50 ms] bucket (at ~49 ms: rank 30.7 of
    # 31, 21 fast ones below), p50 among the fast.
    for _ in range(10):
        assert get(port, "/x", headers=[("x-testbed-delay", "30ms")]).status == 200
    r = get(port, "/x", headers=[("x-testbed-status", "500")])
    assert r.status == 500

    def sampled():
        d = status_json(admin_port)
        ep = endpoints(d)[tb1.addr]
        return d if (ep["requests_per_s"] or 0) > 0 and (ep["error_5xx_per_s"] or 0) > 0 else None
    d = wait_for(sampled, timeout=10, interval=0.2)
    assert d, status_json(admin_port)

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d["time"])
    assert d["draining"] is False and d["sample_interval_s"] == 1.0
    assert 0 < d["window_s"] <= 60.5
    assert re.fullmatch(r"[0-9a-f]{16}", d["config"]["version"])
    assert d["config"]["reloads"] == [] and d["config"]["reloads_total"] == 0

    [lst] = d["listeners"]
    assert (lst["name"], lst["address"], lst["protocol"]) == ("main", f"127.0.0.1:{port}", "HTTP")
    assert lst["requests_total"] >= 31 and lst["requests_per_s"] > 0
    assert 0 < lst["error_5xx_ratio"] < 0.5
    assert lst["p50_ms"] is not None and 0 <= lst["p50_ms"] <= lst["p99_ms"]
    assert isinstance(lst["connections"], int) and lst["removed"] is False

    [svc] = d["backend_services"]
    assert (svc["name"], svc["protocol"]) == ("svc", "HTTP")
    assert (svc["endpoints_total"], svc["endpoints_serving"]) == (2, 1)
    assert svc["circuit_breakers"]["requests"] == {"used": 0, "max": 77}
    assert set(svc["circuit_breakers"]) == {"requests", "pending", "retries", "connections"}
    assert svc["requests_per_s"] > 0 and svc["p99_ms"] >= svc["p50_ms"] >= 0

    good, bad = endpoints(d)[tb1.addr], endpoints(d)[tb2.addr]
    # Every request went to tb1: tb2 fails its health check.
    assert good["requests_total"] == 31 and bad["requests_total"] == 0
    assert good["state"] == good["health"] == "healthy"
    assert bad["state"] == bad["health"] == "unhealthy"
    assert abs(good["error_5xx_ratio"] - 1 / 31) < 0.01
    # (A loaded machine may push a slow one past 50 ms: the next bucket ends at 100.)
    assert good["p50_ms"] < 25 and 25 <= good["p99_ms"] <= 100, good
    assert 25 <= lst["p99_ms"] <= 100 and lst["p50_ms"] < 25, lst
    assert bad["requests_per_s"] == 0 and bad["p50_ms"] is None
    for ep in (good, bad):
        assert re.fullmatch(r".*T.*Z", ep["health_changed"]) and ep["health_changed_ago_s"] >= 0
        assert ep["ejected"] is False and ep["draining"] is False and ep["in_flight"] == 0
    # Both changed from unknown at their first probe, after the start (the
    # monotonic clock behind health_changed is coarse: a few ms of slack).
    for ep in (good, bad):
        assert ts(d["started"]) - 0.05 <= ts(ep["health_changed"]) <= ts(d["time"]) + 0.05


def test_status_json_reload_history(testbed, proxy):
    tb1, tb2 = testbed("tb1"), testbed("tb2")
    port, admin_port = free_port(), free_port()
    px = proxy(config(port, admin_port, [tb1.addr]), expect_ports=[port, admin_port])
    v0 = status_json(admin_port)["config"]["version"]

    px.write_config(config(port, admin_port, [tb1.addr, tb2.addr]))
    code, _, body = admin(admin_port, "POST", "/reload")
    assert code == 200, body
    v1 = json.loads(body)["version"]
    assert v1 != v0
    px.write_config("listeners: [oops\n")
    code, _, body = admin(admin_port, "POST", "/reload")
    assert code == 400, body

    d = status_json(admin_port)
    assert d["config"]["version"] == v1 and d["config"]["reloads_total"] == 2
    refused, loaded = d["config"]["reloads"]  # newest first
    assert (loaded["ok"], loaded["version"], loaded["reason"]) == (True, v1, None)
    assert refused["ok"] is False and refused["version"] == v1
    assert "errors" in refused["reason"]
    assert refused["time"] >= loaded["time"]
    assert {e["address"] for e in endpoints(d).values()} == {tb1.addr, tb2.addr}


def test_status_json_ejected_endpoint(testbed, proxy):
    """An endpoint outlier detection ejected is 'ejected', with the time left,
    while its health checks still say healthy."""
    tb1, tb2 = testbed("tb1"), testbed("tb2")
    port, admin_port = free_port(), free_port()
    proxy(config(port, admin_port, [tb1.addr, tb2.addr], gateway_failures=1),
          expect_ports=[port, admin_port])
    assert wait_for(lambda: {e["state"] for e in endpoints(status_json(admin_port)).values()}
                    == {"healthy"}, timeout=10, interval=0.1)
    # One 503 ejects the endpoint that answered it (max_ejection_percent 50: one of two).
    get(port, "/x", headers=[("x-testbed-status", "503")])
    eps = endpoints(status_json(admin_port))
    ejected = [e for e in eps.values() if e["state"] == "ejected"]
    assert len(ejected) == 1, eps
    [e] = ejected
    assert e["ejected"] is True and 20000 < e["ejected_for_ms"] <= 30000
    assert e["health"] == "healthy"
    svc = status_json(admin_port)["backend_services"][0]
    assert (svc["endpoints_total"], svc["endpoints_serving"]) == (2, 1)


def test_status_json_draining_endpoint(testbed, proxy):
    """An endpoint a reload removed is shown 'draining' while a request is in
    flight on it, and goes away when that request ends."""
    tb1, tb2 = testbed("tb1"), testbed("tb2")
    port, admin_port = free_port(), free_port()
    px = proxy(config(port, admin_port, [tb2.addr]), expect_ports=[port, admin_port])
    assert wait_for(lambda: endpoints(status_json(admin_port))[tb2.addr]["state"] == "healthy",
                    timeout=10, interval=0.1)
    result = {}
    t = threading.Thread(target=lambda: result.update(
        r=get(port, "/slow", headers=[("x-testbed-delay", "3s")], timeout=20)))
    t.start()
    try:
        assert wait_for(lambda: endpoints(status_json(admin_port))[tb2.addr]["in_flight"] == 1,
                        timeout=10, interval=0.05)
        px.write_config(config(port, admin_port, [tb1.addr]))
        code, _, body = admin(admin_port, "POST", "/reload")
        assert code == 200, body

        def draining():
            eps = endpoints(status_json(admin_port))
            return eps.get(tb2.addr) if tb2.addr in eps and tb1.addr in eps else None
        ep = wait_for(draining, timeout=5, interval=0.05)
        assert ep, status_json(admin_port)
        assert (ep["state"], ep["draining"], ep["in_flight"]) == ("draining", True, 1)
    finally:
        t.join(timeout=20)
    assert result["r"].status == 200
    # Gone at the next sample after its last exchange ended.
    assert wait_for(lambda: tb2.addr not in endpoints(status_json(admin_port)),
                    timeout=5, interval=0.1), status_json(admin_port)


def test_status_page_is_self_contained(setup):
    px, port, admin_port, tb1, tb2 = setup
    code, headers, body = admin(admin_port, "GET", "/")
    assert code == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert "<script>" in page and "<style>" in page and "status.json" in page
    # No external assets: no URL with a scheme, no linked file.
    assert not re.search(r"(src|href)\s*=|https?://|<link|@import", page, re.I)
    assert '<meta name="viewport"' in page
    code, headers, _ = admin(admin_port, "POST", "/")
    assert code == 405 and headers["allow"] == "GET, HEAD"
    code, headers, _ = admin(admin_port, "DELETE", "/status.json")
    assert code == 405 and headers["allow"] == "GET, HEAD"


class _Rows(html.parser.HTMLParser):
    """Attributes of every endpoint row (tr.ep), listener row and body."""

    def __init__(self):
        super().__init__()
        self.endpoints, self.listeners, self.body, self.text = [], [], {}, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and a.get("class") == "ep":
            self.endpoints.append(a)
        elif tag == "tr" and a.get("class") == "listener":
            self.listeners.append(a)
        elif tag == "body":
            self.body = a

    def handle_data(self, data):
        self.text.append(data)


def _kill_group(proc):
    """SIGKILL chromium's process group (it and the children it made), by its
    pid, and wait until the group is gone (bounded: exited children that
    nobody reaps yet still count)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)

    def gone():
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False
    wait_for(gone, timeout=5, interval=0.05)


def chromium(url, *args):
    """Run headless chromium on url with args (--dump-dom, --screenshot=...);
    stdout as text. Its process group is killed by pid if it overruns."""
    if not CHROMIUM:
        pytest.fail("chromium not installed (scripts/deps.sh installs Debian's chromium)")
    with tempfile.TemporaryDirectory(prefix="sy-chromium-") as profile:
        cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            pytest.fail(f"chromium did not finish in {CHROMIUM_TIMEOUT} s")
        finally:
            _kill_group(proc)  # children it left (zygote, utility processes)
    assert proc.returncode == 0, err[-4000:]
    return out


def test_status_page_in_chromium(setup, tmp_path):
    px, port, admin_port, tb1, tb2 = setup
    for _ in range(10):
        assert get(port, "/x").status == 200
    url = f"http://{HOST}:{admin_port}/"
    # The virtual time budget lets the page's script fetch status.json and render
    # (network fetches pause virtual time); the DOM is dumped after it.
    dom = chromium(url, "--virtual-time-budget=5000", "--dump-dom")
    rows = _Rows()
    rows.feed(dom)
    assert rows.body.get("data-loaded") == "1", dom[-4000:]
    by_addr = {r["data-address"]: r for r in rows.endpoints}
    assert by_addr[tb1.addr]["data-state"] == "healthy", dom
    assert by_addr[tb2.addr]["data-state"] == "unhealthy", dom
    assert all(r["data-service"] == "svc" for r in rows.endpoints)
    assert [r["data-listener"] for r in rows.listeners] == ["main"]
    text = " ".join(rows.text)
    # The markers carry a shape and a word, not only a colour.
    assert "\u25cf healthy" in text and "\u25b2 unhealthy" in text
    version = status_json(admin_port)["config"]["version"]
    assert f"config {version}" in text

    shot = os.environ.get("SY_STATUS_SCREENSHOT")
    if shot:  # docs/status.png: a minute of traffic, then the picture
        chromium(url, "--virtual-time-budget=5000", f"--screenshot={Path(shot).resolve()}",
                 "--window-size=1100,620")
        assert Path(shot).stat().st_size > 1000


async def _cdp_phone_layout(ws_url, url, deadline):
    """Over the DevTools protocol: a 390 px wide mobile viewport, the page
    loaded and rendered; returns what the page's layout says."""
    async with websockets.connect(ws_url, max_size=None) as ws:
        ids = iter(range(1, 1000))

        async def call(method, **params):
            i = next(ids)
            await ws.send(json.dumps({"id": i, "method": method, "params": params}))
            for _ in range(1000):  # skip events until our answer
                left = deadline - asyncio.get_running_loop().time()
                msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(left, 0.1)))
                if msg.get("id") == i:
                    assert "error" not in msg, msg
                    return msg["result"]
            raise AssertionError(f"no answer to {method}")

        async def value(expr):
            r = await call("Runtime.evaluate", expression=expr, returnByValue=True)
            return r["result"].get("value")

        await call("Emulation.setDeviceMetricsOverride", width=390, height=844,
                   deviceScaleFactor=2, mobile=True)
        await call("Page.navigate", url=url)
        for _ in range(200):  # until the data is rendered (bounded by count and deadline)
            if await value("document.body && document.body.dataset.loaded") == "1":
                break
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        return await value("""JSON.stringify({
            loaded: document.body.dataset.loaded,
            inner: window.innerWidth,
            scroll: document.documentElement.scrollWidth,
            thead: getComputedStyle(document.querySelector('table.endpoints thead')).display,
            label: getComputedStyle(document.querySelector('tr.ep td'), '::before').content})""")


def test_status_page_phone_layout(setup):
    """At a phone's width the page does not scroll sideways: the tables stack
    into label/value rows (their heads hidden, each cell labelled)."""
    px, port, admin_port, tb1, tb2 = setup
    if not CHROMIUM:
        pytest.fail("chromium not installed (scripts/deps.sh installs Debian's chromium)")
    debug_port = free_port()
    with tempfile.TemporaryDirectory(prefix="sy-chromium-") as profile:
        proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             f"--remote-debugging-port={debug_port}", "--remote-allow-origins=*",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            def page_ws():
                try:
                    with urllib.request.urlopen(f"http://{HOST}:{debug_port}/json/list",
                                                timeout=2) as r:
                        pages = [t for t in json.load(r) if t.get("type") == "page"]
                except OSError:
                    return None
                return pages[0]["webSocketDebuggerUrl"] if pages else None
            ws_url = wait_for(page_ws, timeout=CHROMIUM_TIMEOUT, interval=0.2)
            assert ws_url, "chromium's DevTools endpoint did not come up"
            loop = asyncio.new_event_loop()
            try:
                deadline = loop.time() + 30
                got = json.loads(loop.run_until_complete(asyncio.wait_for(
                    _cdp_phone_layout(ws_url, f"http://{HOST}:{admin_port}/", deadline), 40)))
            finally:
                loop.close()
        finally:
            _kill_group(proc)
    assert got["loaded"] == "1", got
    assert got["inner"] == 390 and got["scroll"] <= got["inner"], got
    assert got["thead"] == "none" and got["label"] == '"state"', got
