"""Property: `switchyard explain` agrees with the live proxy (issue 12).

For a few hundred generated requests (hosts, paths, header fields, query
parameters and methods drawn from the url map of test_urlmap.py, and from
config/examples/strangler.yaml), the outcome `switchyard explain --json`
reports is what a running proxy does with the same request:
  - routed: the access log's backend_service is the explained service (for a
    weighted split, one of its services with a weight above 0), and the
    testbed's echo shows the explained upstream path and Host;
  - redirect: the same status and Location, no backend;
  - bad request: 400, no backend.
The generator is seeded (SY_EXPLAIN_SEED overrides) so a failure replays.
"""

import concurrent.futures
import http.client
import json
import os
import random
from pathlib import Path

import pytest

from conftest import HOST, REPO, free_ports, run_switchyard, sanitizer_report
from test_urlmap import SERVICES, make_config

SEED = int(os.environ.get("SY_EXPLAIN_SEED", "12"))
N_URLMAP = 240
N_STRANGLER = 60

# host -> the paths its path matcher has rules for (other hosts: any path)
URLMAP_HOSTS = {
    "exact.test": [], "EXACT.Test": [], "exact.test:8443": [], "exact.test:9": [],
    "a.example.com": [], "x.api.example.com": [], "web-dev.example.com": [],
    "-dev.example.com": [], "unknown.test": [], "127.0.0.1": [],
    "paths.test": ["/", "/x", "/x/", "/x/y", "/x/y/z", "/x/y/a", "/X/a"],
    "routes.test": ["/p/special/x", "/p/other", "/q/long/x", "/q/", "/full", "/full/", "/FULL",
                    "/CaSe/x", "/fullcase", "/Sens/x", "/sens/x", "/v2/orders",
                    "/v10/orders/7", "/x/v2/orders", "/RI/ABC", "/rx/abc", "/rx/ABC", "/alt1",
                    "/alt2/z", "/and/x", "/nothing"],
    "hdr.test": ["/exact", "/exact-inv", "/prefix", "/suffix-inv", "/regex", "/present",
                 "/absent", "/range", "/range-neg", "/multi", "/two", "/method", "/method-re",
                 "/method-inv", "/authority", "/scheme", "/pathhdr", "/q-present",
                 "/q-absent", "/q-exact", "/q-regex", "/q-two"],
    "sub.hdr.test": ["/exact", "/two", "/q-two"],
    "split.test": ["/", "/any"],
    "rw.test": ["/api/x/y", "/api/", "/old/a/b", "/exact-rw", "/re/42", "/hostonly/p",
                "/v1/users", "/v1", "/anything"],
    "rw.test:8080": ["/api/a/../b", "/v1"],
    "rwp.test": ["/pr/a/b", "/exactpr", "/pr"],
    "ha.test": ["/ha"],
    "redir.test": ["/host/a", "/path/a", "/pathq", "/prefix/a/b", "/strip-me/x", "/https/a",
                   "/strip", "/all/a/b", "/code/FOUND", "/code/308", "/elsewhere"],
    "redir.test:80": ["/https/a"],
    "redirdefault.test": ["/any/x"],
    "redirpath.test": ["/docs/a/b", "/other"],
    "norm.test": ["/admin", "/a/../admin", "//admin", "/%2e%2e/admin", "/admin%2F..",
                  "/%7efoo", "/%zz", "/a%", "/ADMIN"],
}
URLMAP_PATHS = sorted({p for v in URLMAP_HOSTS.values() for p in v})
URLMAP_QUERIES = [None, None, "q=1", "q=2", "debug", "debug=1", "v=1", "v=2&v=1", "id=42",
                  "id=4a", "a=1&b", "a=1", "x=1", "k=v&debug="]
URLMAP_HEADERS = [("x-h", ["abc", "abcd", "123", "15", "-5", "xyz", "ab", ""]),
                  ("x-and", ["1", "2"]), ("x-m", ["a", "b"]), ("x-a", ["1"]),
                  ("x-b", ["2", "3"]), ("x-rm-u", ["1"])]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "PATCH", "DELETE"]


def gen_urlmap(rnd):
    host = rnd.choice(sorted(URLMAP_HOSTS))
    own = URLMAP_HOSTS[host]
    path = rnd.choice(own if own and rnd.random() < 0.85 else URLMAP_PATHS)
    if rnd.random() < 0.3 and not path.endswith("/"):
        path += rnd.choice(["/a", "/b/c", "/", "x"])
    q = rnd.choice(URLMAP_QUERIES)
    target = path + (f"?{q}" if q else "")
    headers = []
    for name, values in URLMAP_HEADERS:
        if rnd.random() < 0.3:
            headers.append((name, rnd.choice(values)))
    return rnd.choice(METHODS), host, target, headers


def gen_strangler(rnd):
    path = rnd.choice(["/", "/home", "/api/orders", "/api/orders/", "/api/orders/42",
                       "/api/orders/42/items", "/api/orders-export", "/api/ordersx",
                       "/api//orders/./7", "/API/orders", "/api/carts/1"])
    headers = []
    if rnd.random() < 0.5:
        headers.append(("x-canary", rnd.choice(["true", "false", "TRUE"])))
    q = rnd.choice([None, "page=2"])
    return (rnd.choice(METHODS), rnd.choice(["shop.example", "shop.example:8080", "x"]),
            path + (f"?{q}" if q else ""), headers)


def send_all(port, requests):
    """Each request on one keep-alive connection (a new one after a close);
    returns (status, headers dict lower-case, body bytes) per request."""
    out = []
    conn = None
    for i, (method, host, target, headers) in enumerate(requests):
        for attempt in range(2):
            if conn is None:
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
            try:
                conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", host)
                conn.putheader("x-request-id", f"agree-{i}")
                for n, v in headers:
                    conn.putheader(n, v)
                conn.endheaders()
                r = conn.getresponse()
                body = r.read()
                out.append((r.status, {k.lower(): v for k, v in r.getheaders()}, body))
                if r.will_close:
                    conn.close()
                    conn = None
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                if attempt:
                    raise
    if conn:
        conn.close()
    return out


def explain_all(cfg, listener, requests, env=None):
    def one(req):
        method, host, target, headers = req
        argv = ["explain", "-c", cfg, "--json", "--listener", listener, "-X", method]
        for n, v in headers:
            argv += ["-H", f"{n}: {v}"]
        r = run_switchyard(argv + [f"http://{host}{target}"], env=env)
        assert not sanitizer_report(r.stderr), r.stderr
        assert r.returncode in (0, 3, 4, 5), (req, r.returncode, r.stderr)
        return r.returncode, json.loads(r.stdout)
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        return list(ex.map(one, requests))


def echo_of(status, body):
    """The testbed's JSON echo ({} when the proxy answered itself). Not by its
    x-testbed-instance header: ha.test's header action removes that."""
    try:
        echo = json.loads(body) if status == 200 else {}
    except ValueError:
        return {}
    return echo if isinstance(echo, dict) and "instance" in echo else {}


def check_agreement(requests, explained, answers, log_by_id):
    mismatches = []
    for i, (req, (rc, ex), (status, hdrs, body)) in enumerate(zip(requests, explained, answers)):
        why = None
        if ex["outcome"] == "routed":
            entry = log_by_id.get(f"agree-{i}")
            action = ex["action"]
            allowed = ({w["backend_service"] for w in action["weighted_backend_services"]
                        if w["weight"] > 0} if action["kind"] == "weighted_split"
                       else {action["service"]})
            echo = echo_of(status, body)
            if rc != 0:
                why = f"exit {rc}"
            elif not entry or entry["backend_service"] not in allowed:
                why = f"proxy used {entry and entry['backend_service']}, explain {allowed}"
            elif echo.get("path") != ex["upstream"]["path"]:
                why = f"backend got path {echo.get('path')}, explain {ex['upstream']['path']}"
            elif echo.get("headers", {}).get("host") != ex["upstream"]["authority"]:
                why = (f"backend got host {echo.get('headers', {}).get('host')}, "
                       f"explain {ex['upstream']['authority']}")
        elif ex["outcome"] == "redirect":
            r = ex["action"]["redirect"]
            if rc != 3 or status != r["status"] or hdrs.get("location") != r["location"]:
                why = f"proxy {status} {hdrs.get('location')}, explain {r}"
        elif ex["outcome"] == "bad_request":
            if rc != 4 or status != 400 or echo_of(status, body):
                why = f"proxy {status}, explain 400"
        else:
            why = f"unexpected outcome {ex['outcome']}"
        if why:
            mismatches.append(f"{req}: {why}")
    return mismatches


def log_index(px, n_routed):
    entries = px.access_log(min_entries=n_routed, timeout=10)
    return {e["request_id"]: e for e in entries if e.get("request_id")}


def test_explain_agrees_with_proxy_on_urlmap(testbed, proxy):
    rnd = random.Random(SEED)
    requests = [gen_urlmap(rnd) for _ in range(N_URLMAP)]
    addrs = {name: testbed(name).addr for name in sorted(set(SERVICES.values()))}
    port, port2 = free_ports(2)
    px = proxy(make_config(port, port2, addrs), expect_ports=[port, port2])
    explained = explain_all(px.config_path, "main", requests)
    answers = send_all(port, requests)
    n_routed = sum(1 for _, e in explained if e["outcome"] == "routed")
    outcomes = {e["outcome"] for _, e in explained}
    assert outcomes >= {"routed", "redirect", "bad_request"}, outcomes   # the generator's reach
    assert len({e["action"]["service"] for _, e in explained if e["outcome"] == "routed"}) >= 20
    mismatches = check_agreement(requests, explained, answers, log_index(px, n_routed))
    assert not mismatches, "\n".join(mismatches[:20])


def test_explain_agrees_with_proxy_on_strangler(testbed, proxy):
    rnd = random.Random(SEED + 1)
    requests = [gen_strangler(rnd) for _ in range(N_STRANGLER)]
    tbs = {name: testbed(name) for name in ("legacy", "orders", "orders-canary")}
    port, admin = free_ports(2)
    env = {"LISTEN_ADDR": f"{HOST}:{port}", "ADMIN_ADDR": f"{HOST}:{admin}",
           "LEGACY_ADDR": tbs["legacy"].addr, "ORDERS_ADDR": tbs["orders"].addr,
           "ORDERS_CANARY_ADDR": tbs["orders-canary"].addr}
    text = Path(REPO / "config/examples/strangler.yaml").read_text()
    px = proxy(text, env=env, expect_ports=[port])
    explained = explain_all(px.config_path, "public", requests, env=env)
    answers = send_all(port, requests)
    n_routed = sum(1 for _, e in explained if e["outcome"] == "routed")
    services = {e["action"]["kind"] + ":" + str(e["action"]["service"]) for _, e in explained}
    assert {"service:legacy", "service:orders-canary"} <= services, services
    assert any(s.startswith("weighted_split") for s in services), services
    mismatches = check_agreement(requests, explained, answers, log_index(px, n_routed))
    assert not mismatches, "\n".join(mismatches[:20])
