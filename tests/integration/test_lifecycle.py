"""Exchange lifecycle: waiting for endpoint capacity as a queue with
wake-ups (max_concurrent_requests_per_endpoint, no polling, across workers,
bounded by the exchange's deadline, every slot given back), connection
draining as one timer at the drain deadline (armed when the reload reaches
the worker, or when an attempt starts on an endpoint already draining;
disarmed when a reload brings the endpoint back), and clean local replies
when a request head fills the exchange's arena."""

import json
import os
import socket
import struct
import threading
import time

import pytest

from conftest import free_port, wait_for, wait_requests_at
from h1util import H1Conn, NoResponse, get, request_bytes
from h2util import ErrorCodes, H2Conn


def config(port, endpoints, *, service=None, route_action=None, listener=None):
    """One HTTP listener on port; every request to backend service `svc`
    (endpoints: addresses) with more service keys `service`, route_action and
    listener keys `listener` (dicts)."""
    eps = "".join(f"      - {{address: \"{e}\"}}\n" for e in endpoints)
    sx = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in (service or {}).items())
    lx = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in (listener or {}).items())
    ra = f"            route_action: {json.dumps(route_action)}\n" if route_action else ""
    return f"""\
listeners:
  - name: main
    address: "127.0.0.1:{port}"
    protocol: HTTP
    url_map: main
{lx}access_log: {{enabled: true, path: "-", format: json}}
drain_timeout: 2s
url_maps:
  - name: main
    default_service: svc
    host_rules: [{{hosts: ["*"], path_matcher: pm}}]
    path_matchers:
      - name: pm
        default_service: svc
        route_rules:
          - priority: 1
            match_rules: [{{prefix_match: /}}]
            service: svc
{ra}backend_services:
  - name: svc
    protocol: HTTP
    timeout: 20s
    endpoints:
{eps}{sx}"""


def in_background(port, path, delay, results, headers=()):
    """GET path (answered by the testbed after `delay`) on a new connection
    in a thread; appends (path, response or exception, monotonic end time)."""
    def run():
        try:
            r = get(port, path, headers=[("x-testbed-delay", delay), *headers], timeout=30)
        except (OSError, NoResponse) as e:
            r = e
        results.append((path, r, time.monotonic()))
    t = threading.Thread(target=run)
    t.start()
    return t


def voluntary_switches(pid):
    """Voluntary context switches of every thread of pid (how often they slept)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def log_entry(px, path, n):
    """The access-log entry of `path`, once n entries are written."""
    return [e for e in px.access_log(min_entries=n) if e["path"] == path][0]


CAPACITY = {"max_concurrent_requests_per_endpoint": 1,
            "circuit_breakers": {"max_pending_requests": 100}}


# ---------------------------------------------------------------------------
# waiting for endpoint capacity
# ---------------------------------------------------------------------------

def test_capacity_waiters_are_served_oldest_first(testbed, proxy):
    """Limit 1: requests that find the endpoint busy queue and are served one
    at a time, in the order they arrived, each as soon as the one before
    released the endpoint."""
    tb = testbed(name="a")
    port = free_port()
    px = proxy(config(port, [tb.addr], service=CAPACITY), expect_ports=[port])
    results, threads = [], []
    threads.append(in_background(port, "/holder", "600ms", results))
    assert wait_requests_at(tb.port), "the first request never reached the backend"
    for i in range(3):
        threads.append(in_background(port, f"/w{i}", "200ms", results))
        time.sleep(0.1)  # queued in this order
    for t in threads:
        t.join(30)
    assert [p for p, _, _ in results] == ["/holder", "/w0", "/w1", "/w2"], results
    assert all(r.status == 200 for _, r, _ in results), results
    ends = [end for _, _, end in results]
    for before, after in zip(ends, ends[1:]):
        # one 200 ms answer after the other: never two at once, no idle gap
        assert 0.15 <= after - before <= 1.2, (before, after, results)


def test_waiting_for_capacity_does_not_poll(testbed, proxy):
    """While an exchange waits for capacity the proxy sleeps: no timer wakes
    a worker every few milliseconds to look again (it used to every 5 ms)."""
    tb = testbed(name="a")
    port = free_port()
    px = proxy(config(port, [tb.addr], service=CAPACITY), expect_ports=[port])
    results = []
    t1 = in_background(port, "/holder", "3s", results)
    assert wait_requests_at(tb.port), "the first request never reached the backend"
    t2 = in_background(port, "/waiter", "0", results)
    time.sleep(0.4)  # the waiter is queued
    before = voluntary_switches(px.pid)
    time.sleep(1.5)
    woke = voluntary_switches(px.pid) - before
    t1.join(30)
    t2.join(30)
    assert sorted((p, getattr(r, "status", r)) for p, r, _ in results) == \
        [("/holder", 200), ("/waiter", 200)], results
    # The waiter really waited for the holder (the client threads may append
    # their results in either order on a loaded machine; the log does not).
    waiter = log_entry(px, "/waiter", 2)
    assert waiter["duration_ms"] >= 1500, waiter
    assert woke < 40, f"{woke} wake-ups in 1.5 s while waiting (polling?)"


def test_capacity_freed_on_one_worker_wakes_waiters_on_others(testbed, proxy):
    """Four workers, limit 1, a dozen concurrent clients (the kernel spreads
    their connections over the workers): each release wakes the workers that
    have waiters, so all are served back to back instead of sitting until
    their 20 s timeout."""
    tb = testbed(name="a")
    port = free_port()
    px = proxy(config(port, [tb.addr], service=CAPACITY), workers=4, expect_ports=[port])
    results, threads = [], []
    threads.append(in_background(port, "/holder", "500ms", results))
    assert wait_requests_at(tb.port), "the first request never reached the backend"
    t0 = time.monotonic()
    for i in range(12):
        threads.append(in_background(port, f"/w{i}", "100ms", results))
    for t in threads:
        t.join(40)
    took = time.monotonic() - t0
    assert len(results) == 13 and all(r.status == 200 for _, r, _ in results), results
    # 12 answers of 100 ms in a row after the holder: about 1.7 s; a lost
    # wake-up would wait for the 20 s timeout.
    assert 1.2 <= took <= 8.0, took
    log = px.access_log(min_entries=13)
    assert not any("UT" in e["response_flags"] for e in log), log


def test_capacity_wait_ends_at_the_exchange_deadline(testbed, proxy):
    """The wait is bounded by the exchange's own deadline (here a shorter
    grpc-timeout): 504 then, and its max_pending_requests slot is given back
    (the only slot: the next waiter may queue and is served)."""
    tb = testbed(name="a")
    port = free_port()
    svc = {"max_concurrent_requests_per_endpoint": 1,
           "circuit_breakers": {"max_pending_requests": 1}}
    px = proxy(config(port, [tb.addr], service=svc), expect_ports=[port])
    results = []
    t1 = in_background(port, "/holder", "2500ms", results)
    assert wait_requests_at(tb.port), "the first request never reached the backend"
    t0 = time.monotonic()
    r = get(port, "/short", headers=[("grpc-timeout", "700m")], timeout=10)
    took = time.monotonic() - t0
    assert r.status == 504, r
    assert 0.5 <= took <= 2.0, took
    assert "UT" in log_entry(px, "/short", 1)["response_flags"].split(",")
    r = get(port, "/next", timeout=10)  # queues in the freed pending slot
    assert r.status == 200, r
    t1.join(30)
    assert results[0][1].status == 200


def test_client_leaving_the_queue_gives_its_slot_back(testbed, proxy):
    """A waiting client that disconnects leaves the queue and frees its
    max_pending_requests slot at once."""
    tb = testbed(name="a")
    port = free_port()
    svc = {"max_concurrent_requests_per_endpoint": 1,
           "circuit_breakers": {"max_pending_requests": 1}}
    px = proxy(config(port, [tb.addr], service=svc), expect_ports=[port])
    results = []
    t1 = in_background(port, "/holder", "1500ms", results)
    assert wait_requests_at(tb.port), "the first request never reached the backend"
    with H1Conn(port) as c:
        c.send(request_bytes("GET", "/gone"))
        time.sleep(0.3)  # queued, holding the pending slot
        # a reset, not a FIN (a half-closed client still gets its answer)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert wait_for(lambda: any(e["path"] == "/gone" for e in px.access_log()), 5)
    r = get(port, "/next", timeout=10)
    assert r.status == 200, r  # not 503 UO: the slot came back
    t1.join(30)
    gone = log_entry(px, "/gone", 3)
    assert gone["status"] == 499 and "DC" in gone["response_flags"].split(","), gone


# ---------------------------------------------------------------------------
# connection draining
# ---------------------------------------------------------------------------

DRAIN_1S = {"connection_draining": {"draining_timeout": "1s"}}


def reload_and_wait(px):
    mark = len(px.stderr())
    px.reload()
    assert wait_for(lambda: " loaded from " in px.stderr()[mark:], 5), px.stderr()[-2000:]


def test_drain_deadline_when_the_attempt_starts_on_a_draining_endpoint(testbed, proxy):
    """An exchange whose attempt starts after the reload that removed its
    endpoint (it was held by a fault delay meanwhile) still ends at that
    endpoint's drain deadline: the timer is armed when the attempt starts."""
    a, b = testbed(name="a"), testbed(name="b")
    port = free_port()
    delay = {"fault_injection_policy": {"delay": {"fixed_delay": "800ms"}}}
    px = proxy(config(port, [b.addr], service=DRAIN_1S, route_action=delay),
               expect_ports=[port])
    results = []
    t = in_background(port, "/late", "6s", results)
    time.sleep(0.2)  # in its fault delay, no attempt yet
    px.write_config(config(port, [a.addr], service=DRAIN_1S))
    t0 = time.monotonic()
    reload_and_wait(px)
    t.join(15)
    took = results[0][2] - t0
    assert results[0][1].status == 503, results
    assert 0.8 <= took <= 3.0, took
    assert "drained" in log_entry(px, "/late", 1)["tries"]


def test_drain_cuts_off_attempts_on_every_worker(testbed, proxy):
    """The reload reaches each worker, which arms the drain timer of its own
    in-flight attempts on the removed endpoint."""
    a, b = testbed(name="a"), testbed(name="b")
    port = free_port()
    px = proxy(config(port, [b.addr], service=DRAIN_1S), workers=3, expect_ports=[port])
    results, threads = [], []
    for i in range(6):
        threads.append(in_background(port, f"/s{i}", "6s", results))
    assert wait_requests_at(b.port, 6), "the slow requests never reached b"
    px.write_config(config(port, [a.addr], service=DRAIN_1S))
    t0 = time.monotonic()
    reload_and_wait(px)
    assert get(port, "/new").header("x-testbed-instance") == "a"
    for t in threads:
        t.join(15)
    assert len(results) == 6 and all(r.status == 503 for _, r, _ in results), results
    assert all(0.8 <= end - t0 <= 3.0 for _, _, end in results), [e - t0 for *_, e in results]


def test_endpoint_back_before_its_deadline_is_not_cut_off(testbed, proxy):
    """A reload that brings the endpoint back before its drain deadline
    disarms the timer: the exchange on it finishes normally."""
    a, b = testbed(name="a"), testbed(name="b")
    port = free_port()
    px = proxy(config(port, [b.addr], service=DRAIN_1S), expect_ports=[port])
    results = []
    t = in_background(port, "/kept", "2s", results)
    assert wait_requests_at(b.port), "the slow request never reached b"
    px.write_config(config(port, [a.addr], service=DRAIN_1S))
    reload_and_wait(px)
    px.write_config(config(port, [a.addr, b.addr], service=DRAIN_1S))
    reload_and_wait(px)
    t.join(15)
    assert results[0][1].status == 200, results
    assert results[0][1].header("x-testbed-instance") == "b"


def test_draining_exchanges_do_not_poll(testbed, proxy):
    """connection_draining on: attempts in flight take no periodic check
    (there used to be one a second per exchange)."""
    tb = testbed(name="a")
    port = free_port()
    px = proxy(config(port, [tb.addr], service={"connection_draining": {
        "draining_timeout": "30s"}}), expect_ports=[port])
    results, threads = [], []
    for i in range(20):  # spread over a second: periodic checks would not coincide
        threads.append(in_background(port, f"/s{i}", "4s", results))
        time.sleep(0.05)
    assert wait_requests_at(tb.port, 20), "the requests never reached the backend"
    before = voluntary_switches(px.pid)
    time.sleep(1.6)
    woke = voluntary_switches(px.pid) - before
    for t in threads:
        t.join(15)
    assert all(r.status == 200 for _, r, _ in results), results
    assert woke < 15, f"{woke} wake-ups in 1.6 s with 20 exchanges in flight"


# ---------------------------------------------------------------------------
# a request head that fills the exchange's arena (1 MiB)
# ---------------------------------------------------------------------------

BIG = ("x-big", "a" * 4000)  # HPACK-indexed: sent once, then 2-byte references


def h2_big_request(port, n_big, pad):
    """An HTTP/2 request whose head decodes to n_big copies of BIG plus one
    `pad`-byte field: (status, body, reset code) of the answer."""
    c = H2Conn(port, timeout=10)
    encode = c.conn.encoder.encode
    c.conn.encoder.encode = lambda hs, huffman=True: encode(hs, huffman=False)  # faster
    try:
        sid = c.request("GET", "/big", headers=[BIG] * n_big + [("x-pad", "p" * pad)])
        c.pump_until(lambda: c.stream(sid).done or c.closed, 10)
        st = c.stream(sid)
        assert st.done, f"no answer to a {n_big} x 4000 + {pad} byte head"
        return st.status, bytes(st.body), st.reset_code
    finally:
        c.close()


def test_head_filling_the_arena_gets_a_clean_reply(testbed, proxy):
    """A head that leaves the router no room in the exchange's arena (1 MiB)
    for the forwarding headers is answered 431 (an upstream answer that no
    longer fits: 502), never a crash. Heads a few hundred bytes shorter are
    forwarded; longer ones are refused by the HTTP/2 codec (RST_STREAM)."""
    tb = testbed(name="a")
    port = free_port()
    # 245 big fields: over the default limits.max_request_headers (100), which
    # the HTTP/2 codec enforces with a 431 of its own before the router runs
    px = proxy(config(port, [tb.addr], listener={"http2": {"max_header_list_size": "4MiB"},
                                                 "limits": {"max_request_headers": 1000}}),
               expect_ports=[port])
    n_big = 245  # 980 KB of decoded fields; the pad (one field < 64 KiB) fills the rest

    def refused(pad):  # by the codec: from there on every longer head is
        return all(h2_big_request(port, n_big, pad + d)[2] is not None for d in (0, 8, 16))

    lo, hi = 0, 60000
    assert refused(hi)
    while hi - lo > 8:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if refused(mid) else (mid, hi)
    seen = {}
    for pad in range(max(0, hi - 400), hi, 4):  # the router's window is just below
        status, body, reset = h2_big_request(port, n_big, pad)
        # a proxied answer whose head no longer fits is reset by the codec
        assert reset in (None, ErrorCodes.INTERNAL_ERROR), (pad, status, reset)
        seen.setdefault((status, body[:40], reset), pad)
    assert (431, b"request headers too large\n", None) in seen, seen
    assert get(port, "/after").status == 200
    assert px.running()
    local = [e for e in px.access_log() if e["status"] == 431 and e["attempts"] == 0]
    assert local and "LR" in local[0]["response_flags"].split(","), local
