"""`switchyard explain` (docs/tools.md): where a request goes and why, from
the config alone (no proxy, no backend).

Most cases run explain on the url map of test_urlmap.py, whose expectations
were checked against the live proxy there: the same host, path, route-rule,
header/query/method, split, redirect, rewrite, header-action and
normalization tables must come out of explain, in text and in --json, with
the documented exit statuses (0 routed, 3 redirect, 4 bad request, 5 other
local reply, 1 usage or config error). A config of its own covers timeouts,
retry policy, fault injection, the listener choice and the forwarding
headers. test_explain_agrees.py checks explain against a live proxy on
generated requests.
"""

import json
import re

import pytest

from conftest import run_switchyard, sanitizer_report
from test_urlmap import HEADER_CASES, NORMALIZE, REDIRECTS, SERVICES, URL_MAPS, make_config

MAIN_PORT, STAR_PORT = 18080, 18081   # written in the config only: explain binds nothing


@pytest.fixture(scope="module")
def urlmap_cfg(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain")
    addrs = {tb: "127.0.0.1:9" for tb in set(SERVICES.values())}
    p = d / "urlmap.yaml"
    p.write_text(make_config(MAIN_PORT, STAR_PORT, addrs))
    return p


def explain(cfg, url, *args, as_json=True, env=None):
    """Run `switchyard explain`; returns (exit status, parsed JSON or text, stderr)."""
    argv = ["explain", "-c", cfg, *args, *(["--json"] if as_json else []), url]
    r = run_switchyard(argv, env=env)
    assert not sanitizer_report(r.stderr), r.stderr
    if as_json and r.returncode != 1:
        assert r.stdout.count("\n") == 1, r.stdout       # one JSON object, one line
        return r.returncode, json.loads(r.stdout), r.stderr
    return r.returncode, r.stdout, r.stderr


def main_url(host, path):
    return f"http://{host}{path}"


def headers_of(out, name):
    """The values of the upstream request's fields named `name`, joined as the
    testbed echoes them."""
    vals = [v for n, v in out["upstream"]["headers"] if n == name]
    return ", ".join(vals) if vals else None


# ---------------------------------------------------------------------------
# host rules, path rules, route rules
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("authority,how,pattern,matcher,service", [
    ("exact.test", "exact", "exact.test", "exact", "h_exact"),
    ("EXACT.Test.", "exact", "exact.test", "exact", "h_exact"),
    ("exact.test:8443", "exact_with_port", "exact.test:8443", "exactport", "h_port"),
    ("a.b.api.example.com", "wildcard", "*.api.example.com", "wildlong", "h_wildlong"),
    ("web-dev.example.com", "wildcard", "*-dev.example.com", "dev", "h_dev"),
])
def test_host_rule(urlmap_cfg, authority, how, pattern, matcher, service):
    rc, out, _ = explain(urlmap_cfg, main_url(authority, "/"), "--listener", "main")
    assert rc == 0
    assert out["outcome"] == "routed" and out["exit_code"] == 0
    assert out["listener"] == {"name": "main", "address": f"127.0.0.1:{MAIN_PORT}",
                               "protocol": "HTTP", "chosen_by": "named"}
    assert out["url_map"]["name"] == "main"
    assert out["host_rule"]["how"] == how
    assert out["host_rule"]["pattern"] == pattern
    assert pattern in out["host_rule"]["hosts"]
    assert re.fullmatch(r".*urlmap\.yaml:\d+:\d+", out["host_rule"]["at"])
    assert out["path_matcher"] == matcher
    assert out["decision"] == {"kind": "path_matcher_default"}
    assert out["action"] == {"kind": "service", "service": service}


def test_host_rule_none_and_star(urlmap_cfg):
    rc, out, _ = explain(urlmap_cfg, main_url("unknown.test", "/a"), "--listener", "main")
    assert rc == 0
    assert out["host_rule"] is None and out["path_matcher"] is None
    assert out["decision"] == {"kind": "url_map_default"}
    assert out["action"]["service"] == "dflt"
    rc, out, _ = explain(urlmap_cfg, f"http://whatever.test:{STAR_PORT}/")
    assert out["listener"]["name"] == "star" and out["listener"]["chosen_by"] == "port_and_scheme"
    assert out["host_rule"]["how"] == "any" and out["host_rule"]["pattern"] == "*"
    assert out["action"]["service"] == "h_star"
    rc, text, _ = explain(urlmap_cfg, main_url("unknown.test", "/a"), "--listener", "main",
                          as_json=False)
    assert rc == 0
    assert "host rule    none: no host rule matched (H4)" in text
    assert "decision     the url map's default action" in text
    assert "action       backend service dflt" in text


@pytest.mark.parametrize("path,states,decision,service", [
    ("/x/y/a", ["outranked", "chosen", "no_match"], "/x/y/*", "p_long"),
    ("/x/y/z", ["outranked", "outranked", "chosen"], "/x/y/z", "p_exact"),
    ("/x/a", ["chosen", "no_match", "no_match"], "/x/*", "p_short"),
    ("/x", ["no_match", "no_match", "no_match"], None, "p_dflt"),
])
def test_path_rules(urlmap_cfg, path, states, decision, service):
    rc, out, _ = explain(urlmap_cfg, main_url("paths.test", path), "--listener", "main")
    assert rc == 0
    assert [p["pattern"] for p in out["path_rules"]] == ["/x/*", "/x/y/*", "/x/y/z"]
    assert [p["state"] for p in out["path_rules"]] == states
    if decision:
        assert out["decision"]["kind"] == "path_rule"
        assert out["decision"]["pattern"] == decision
    else:
        assert out["decision"] == {"kind": "path_matcher_default"}
    assert out["action"]["service"] == service


def test_path_rules_text(urlmap_cfg):
    rc, text, _ = explain(urlmap_cfg, main_url("paths.test", "/x/y/a"), "--listener", "main",
                          as_json=False)
    assert rc == 0
    assert re.search(r"^  /x/\*\s+matches, but an exact path or a longer prefix wins", text, re.M)
    assert re.search(r"^  /x/y/\*\s+CHOSEN", text, re.M)
    assert re.search(r"^  /x/y/z\s+no match", text, re.M)
    assert 'decision     path rule "/x/y/*"' in text


def test_route_rules_in_priority_order(urlmap_cfg):
    """Listed 50, 10, 9, 8, ... in the file; considered 8 first; the first match
    ends the walk; with no match every rule is listed with its reason."""
    rc, out, _ = explain(urlmap_cfg, main_url("routes.test", "/q/long/x"), "--listener", "main")
    assert rc == 0
    assert [(r["priority"], r["matched"]) for r in out["route_rules"]] == [(8, True)]
    assert out["decision"] == {"kind": "route_rule", "index": 0, "priority": 8}
    assert out["action"]["service"] == "r_p10"

    rc, out, _ = explain(urlmap_cfg, main_url("routes.test", "/nothing"), "--listener", "main")
    assert rc == 0
    prios = [r["priority"] for r in out["route_rules"]]
    assert prios == sorted(prios) and prios == [8, 9, 10, 20, 30, 31, 35, 40, 42, 43, 50, 60, 70]
    assert not any(r["matched"] for r in out["route_rules"])
    for r in out["route_rules"]:
        assert r["match_rules"], r
        assert all(m["failed"] == "path" for m in r["match_rules"]), r
    # "/nothing" has none of the first segments the prefixes name: the route
    # index passes over those rules; the regexes starting "/v" and "(?i)" cannot be.
    skipped = {r["priority"]: r["skipped_by_index"] for r in out["route_rules"]}
    assert skipped[8] and skipped[50] and skipped[20]
    assert out["decision"] == {"kind": "path_matcher_default"}
    assert out["action"]["service"] == "r_dflt"


def test_route_rule_first_failing_condition(urlmap_cfg):
    """Path, then headers in order, then query parameters: the first that fails
    is the reason, with what the request had."""
    base = ["--listener", "main"]
    rc, out, _ = explain(urlmap_cfg, main_url("routes.test", "/and/x?q=1"), *base)
    last = out["route_rules"][-1]
    assert last["priority"] == 70 and not last["matched"]
    mr = last["match_rules"][0]
    assert mr["failed"] == "header" and mr["condition_index"] == 0
    assert mr["reason"] == 'header x-and exact_match "1": got none'
    rc, out, _ = explain(urlmap_cfg, main_url("routes.test", "/and/x?q=2"), "-H", "x-and: 1", *base)
    mr = out["route_rules"][-1]["match_rules"][0]
    assert mr["failed"] == "query"
    assert mr["reason"] == 'query parameter q exact_match "1": got "2"'
    rc, out, _ = explain(urlmap_cfg, main_url("routes.test", "/and/x?q=1"), "-H", "x-and: 1", *base)
    assert out["route_rules"][-1]["matched"] and out["action"]["service"] == "r_and"
    # alternatives: each match rule's reason
    rc, out, _ = explain(urlmap_cfg, main_url("routes.test", "/alt1/z"), *base)
    alt = [r for r in out["route_rules"] if r["priority"] == 60][0]
    assert [m["reason"] for m in alt["match_rules"]] == [
        'path full_path_match "/alt1": got "/alt1/z"',
        'path prefix_match "/alt2/": got "/alt1/z"']
    rc, text, _ = explain(urlmap_cfg, main_url("routes.test", "/and/x?q=1"), *base, as_json=False)
    assert re.search(r'^  priority 70  no match  .*urlmap\.yaml:\d+:\d+$', text, re.M)
    assert '      match rule 1: header x-and exact_match "1": got none' in text


@pytest.mark.parametrize("path,headers,method,hit", HEADER_CASES,
                         ids=[f"{m} {p} {h}" for p, h, m, _ in HEADER_CASES])
def test_header_query_method_matches(urlmap_cfg, path, headers, method, hit):
    """test_urlmap.py's table, checked there against the live proxy."""
    args = ["--listener", "main", "-X", method]
    for n, v in headers:
        args += ["-H", f"{n}: {v}"]
    rc, out, _ = explain(urlmap_cfg, main_url("hdr.test", path), *args)
    assert rc == 0
    assert out["action"]["service"] == ("hit" if hit else "miss")
    if not hit:
        assert out["decision"] == {"kind": "path_matcher_default"}


# ---------------------------------------------------------------------------
# actions: split, redirect, rewrite, header actions, normalization
# ---------------------------------------------------------------------------

def test_weighted_split(urlmap_cfg):
    rc, out, _ = explain(urlmap_cfg, main_url("split.test", "/any"), "--listener", "main")
    assert rc == 0
    a = out["action"]
    assert a["kind"] == "weighted_split"
    assert [(w["backend_service"], w["weight"]) for w in a["weighted_backend_services"]] == [
        ("w0a", 0), ("w10", 10), ("w0b", 0), ("w90", 90)]
    assert [w["percent"] for w in a["weighted_backend_services"]] == [0, 10, 0, 90]
    assert a["pick"] in ("w10", "w90") and a["service"] == a["pick"]
    rc, text, _ = explain(urlmap_cfg, main_url("split.test", "/any"), "--listener", "main",
                          as_json=False)
    assert "action       weighted split (each request picks by weight):" in text
    assert re.search(r"^    w10\s+weight 10\s+10\.0%", text, re.M)
    assert re.search(r"^    w90\s+weight 90\s+90\.0%", text, re.M)


@pytest.mark.parametrize("host,path,status,location", REDIRECTS,
                         ids=[f"{h}{p}" for h, p, _, _ in REDIRECTS])
def test_redirect(urlmap_cfg, host, path, status, location):
    """test_urlmap.py's table: the Location the proxy sends."""
    rc, out, _ = explain(urlmap_cfg, main_url(host, path), "--listener", "main")
    assert rc == 3
    assert out["outcome"] == "redirect" and out["exit_code"] == 3
    assert out["action"]["kind"] == "redirect"
    assert out["action"]["redirect"] == {"status": status, "location": location}
    assert "upstream" not in out


def test_redirect_text(urlmap_cfg):
    rc, text, _ = explain(urlmap_cfg, main_url("redir.test", "/all/a/b?x=1"), "--listener", "main",
                          as_json=False)
    assert rc == 3
    assert "action       redirect 308\n  Location   https://new.example/b/a/b\n" in text
    assert "response add    x-resp-all: u (replace)" in text
    assert "(the response side only: nothing goes upstream)" in text
    assert "request  add" not in text


@pytest.mark.parametrize("host,path,backend_path,backend_host", [
    ("rw.test", "/api/x/y?q=1", "/x/y?q=1", "backend.internal"),
    ("rw.test", "/api/", "/", "backend.internal"),
    ("rw.test", "/old/a/b", "/new/a/b", "rw.test"),
    ("rw.test", "/exact-rw?z=1", "/replaced?z=1", "rw.test"),
    ("rw.test", "/re/42", "/num", "rw.test"),
    ("rw.test", "/hostonly/p?k=v", "/hostonly/p?k=v", "only.internal"),
    ("rw.test", "/v1/users", "/v2/users", "rw.test"),
    ("rw.test", "/v1", "/v2", "rw.test"),
    ("rwp.test", "/pr/a/b", "/v2/a/b", "rwp.test"),
    ("rwp.test", "/exactpr?x", "/e2?x", "rwp.test"),
    ("rw.test:8080", "/api/a/../b", "/b", "backend.internal"),
])
def test_url_rewrite(urlmap_cfg, host, path, backend_path, backend_host):
    """test_urlmap.py's rewrite table: the path and host the backend gets."""
    rc, out, _ = explain(urlmap_cfg, main_url(host, path), "--listener", "main")
    assert rc == 0
    assert out["action"]["service"] == "rw"
    assert out["upstream"]["path"] == backend_path
    assert out["upstream"]["authority"] == backend_host


def test_url_rewrite_text(urlmap_cfg):
    rc, text, _ = explain(urlmap_cfg, main_url("rw.test", "/api/x/y?q=1"), "--listener", "main",
                          as_json=False)
    assert "upstream     GET /x/y?q=1\n" in text
    assert "  host       backend.internal  (host_rewrite)\n" in text
    assert '  path       path_prefix_rewrite "/" replaced the first 5 bytes\n' in text


def test_header_actions(urlmap_cfg):
    """test_urlmap.py's precedence case: W, R, P, U in that order, each its
    removes then its adds; the header lists after them."""
    sent = [("x-all", "c"), ("x-append", "c"), ("x-rm-w", "1"), ("x-rm-r", "1"),
            ("x-rm-p", "1"), ("x-rm-u", "1"), ("x-keep", "1"), ("x-same", "c"),
            ("x-client", "c")]
    args = ["--listener", "main"]
    for n, v in sent:
        args += ["-H", f"{n}: {v}"]
    rc, out, _ = explain(urlmap_cfg, main_url("ha.test", "/ha"), *args)
    assert rc == 0
    assert [(h["level"], h["name"]) for h in out["header_actions"]] == [
        ("weighted_backend_service", "ha"), ("route_rule", None), ("path_matcher", "ha"),
        ("url_map", "main")]
    assert headers_of(out, "x-all") == "u"
    assert headers_of(out, "x-append") == "c, w, r, p, u"
    for h in ("x-rm-w", "x-rm-r", "x-rm-p", "x-rm-u", "x-w-added", "x-r-added",
              "x-forwarded-proto"):
        assert headers_of(out, h) is None, h
    assert headers_of(out, "x-keep") == "1"
    assert headers_of(out, "x-late") == "u"
    assert headers_of(out, "x-same") == "r"
    assert headers_of(out, "x-client") == "w"
    assert headers_of(out, "x-forwarded-for")
    added = out["response_headers_added"]
    assert [v for n, v in added if n == "x-resp-all"] == ["u"]
    assert [v for n, v in added if n == "x-resp-append"] == ["w", "r", "p", "u"]
    assert [v for n, v in added if n == "x-resp-w-keep"] == ["w"]
    assert [v for n, v in added if n == "content-type"] == ["text/x-route"]
    assert not [v for n, v in added if n in ("x-resp-w", "x-resp-r")]
    rc, text, _ = explain(urlmap_cfg, main_url("ha.test", "/ha"), *args, as_json=False)
    assert "header actions  applied in this order:\n    weighted_backend_service ha\n" in text
    assert "      request  add    x-client: w (replace)\n" in text
    assert "    x-append: w\n" in text


@pytest.mark.parametrize("path,service,backend_path", NORMALIZE,
                         ids=[p for p, _, _ in NORMALIZE])
def test_normalization(urlmap_cfg, path, service, backend_path):
    rc, out, _ = explain(urlmap_cfg, main_url("norm.test", path), "--listener", "main")
    assert rc == 0
    assert out["action"]["service"] == service
    assert out["upstream"]["path"] == backend_path
    assert out["request"]["target"] == path
    assert out["request"]["path"] == backend_path.split("?")[0]


def test_normalization_text(urlmap_cfg):
    rc, text, _ = explain(urlmap_cfg, main_url("norm.test", "/a/..//%2e/admin"),
                          "--listener", "main", as_json=False)
    assert "path         /admin  (normalized from /a/..//%2e/admin)\n" in text
    rc, text, _ = explain(urlmap_cfg, main_url("norm.test", "/admin"), "--listener", "main",
                          as_json=False)
    assert "path         /admin  (already normalized)\n" in text


@pytest.mark.parametrize("path", ["/%zz", "/%2", "/a%", "/a\\..\\admin", "/a b"])
def test_bad_request_exit_4(urlmap_cfg, path):
    """The proxy answers these with 400 (test_urlmap.py): exit 4."""
    rc, out, _ = explain(urlmap_cfg, main_url("norm.test", path), "--listener", "main")
    assert rc == 4
    assert out["outcome"] == "bad_request" and out["status"] == 400
    assert out["reason"]
    assert "action" not in out
    rc, text, _ = explain(urlmap_cfg, main_url("norm.test", path), "--listener", "main",
                          as_json=False)
    assert rc == 4 and "outcome      400 bad request: " in text


def test_local_reply_exit_5(urlmap_cfg):
    """A redirect whose Location cannot be built (too long) is answered 500
    by the proxy: a local reply, exit 5."""
    rc, out, _ = explain(urlmap_cfg, main_url("redir.test", "/prefix/" + "a" * 5000),
                         "--listener", "main")
    assert rc == 5
    assert out["outcome"] == "local_reply" and out["status"] == 500
    assert out["action"]["kind"] == "redirect" and out["action"]["redirect"]["location"] is None


# ---------------------------------------------------------------------------
# timeouts, retry policy, fault injection; listener choice; forwarding
# ---------------------------------------------------------------------------

POLICY_CONFIG = """\
listeners:
  - {name: plain, address: "127.0.0.1:18090", protocol: HTTP, url_map: m}
  - {name: other, address: "127.0.0.1:18091", protocol: HTTP, url_map: m,
     xff_trusted_cidrs: ["10.0.0.0/8"]}
  - name: secure
    address: "127.0.0.1:18443"
    protocol: HTTPS
    url_map: m
    tls: {certificates: [{cert_file: "%(cert)s", key_file: "%(key)s"}]}
url_maps:
  - name: m
    default_service: slow
    host_rules: [{hosts: ["*"], path_matcher: p}]
    path_matchers:
      - name: p
        default_service: slow
        route_rules:
          - priority: 1
            match_rules: [{prefix_match: /policy/}]
            service: fast
            route_action:
              timeout: 2500ms
              retry_policy: {retry_conditions: [connect-failure, 5xx], num_retries: 3,
                             per_try_timeout: 500ms}
              fault_injection_policy:
                delay: {fixed_delay: 2s, percentage: 50}
                abort: {http_status: 503, percentage: 12.5}
          - priority: 2
            match_rules: [{prefix_match: /grpc-fault/}]
            service: fast
            route_action:
              timeout: 0s
              fault_injection_policy: {abort: {grpc_status: 14, percentage: 100}}
backend_services:
  - {name: slow, timeout: 45s, endpoints: [{address: "127.0.0.1:9"}]}
  - {name: fast, timeout: 5s, endpoints: [{address: "127.0.0.1:9"}]}
"""


@pytest.fixture(scope="module")
def policy_cfg(tmp_path_factory, certs):
    p = tmp_path_factory.mktemp("explain-policy") / "policy.yaml"
    p.write_text(POLICY_CONFIG % {"cert": certs.cert, "key": certs.key})
    return p


def test_timeout_retry_fault(policy_cfg):
    rc, out, _ = explain(policy_cfg, "http://a.test:18090/policy/x")
    assert rc == 0
    assert out["timeout_ms"] == 2500 and out["timeout_from"] == "route"
    assert out["retry_policy"] == {
        "configured": True, "retry_conditions": ["5xx", "connect-failure"], "num_retries": 3,
        "per_try_timeout_ms": 500, "retries_requests_with_body": True}
    assert out["fault_injection"] == {
        "delay": {"fixed_delay_ms": 2000, "percentage": 50},
        "abort": {"http_status": 503, "grpc_status": None, "percentage": 12.5}}
    rc, text, _ = explain(policy_cfg, "http://a.test:18090/policy/x", as_json=False)
    assert "timeout      2500ms (the route's timeout)\n" in text
    assert ("retry        retry_policy: retry_conditions [5xx, connect-failure], num_retries 3, "
            "per_try_timeout 500ms\n") in text
    assert ("faults       delay 2s for 50% of requests; abort with 503 for 12.5% of requests\n"
            in text)


def test_default_timeout_and_retry(policy_cfg):
    rc, out, _ = explain(policy_cfg, "http://a.test:18090/elsewhere")
    assert out["action"]["service"] == "slow"
    assert out["timeout_ms"] == 45000 and out["timeout_from"] == "backend_service"
    assert out["retry_policy"] == {
        "configured": False, "retry_conditions": ["gateway-error"], "num_retries": 1,
        "per_try_timeout_ms": 0, "retries_requests_with_body": False}
    assert out["fault_injection"] is None
    # a shorter grpc-timeout wins, as in the proxy
    rc, out, _ = explain(policy_cfg, "http://a.test:18090/elsewhere", "-H", "grpc-timeout: 300m")
    assert out["timeout_ms"] == 300 and out["timeout_from"] == "grpc-timeout"
    rc, text, _ = explain(policy_cfg, "http://a.test:18090/elsewhere", as_json=False)
    assert "timeout      45s (the backend service's timeout)\n" in text
    assert "faults       none\n" in text
    assert "requests with a body are not retried" in text


def test_grpc_abort_and_no_timeout(policy_cfg):
    rc, out, _ = explain(policy_cfg, "http://a.test:18090/grpc-fault/x")
    assert out["timeout_ms"] == 0
    assert out["fault_injection"]["abort"] == {"http_status": None, "grpc_status": 14,
                                               "percentage": 100}
    assert out["fault_injection"]["delay"] is None
    rc, text, _ = explain(policy_cfg, "http://a.test:18090/grpc-fault/x", as_json=False)
    assert "timeout      none (0s: no limit)" in text
    assert "abort with grpc-status 14 for 100% of requests" in text


@pytest.mark.parametrize("url,args,name,chosen_by", [
    ("http://a.test:18090/", [], "plain", "port_and_scheme"),
    ("http://a.test:18091/", [], "other", "port_and_scheme"),
    ("https://a.test:18443/", [], "secure", "port_and_scheme"),
    ("http://a.test:18443/", [], "secure", "port"),
    ("https://a.test/", [], "secure", "scheme"),
    ("http://a.test/", [], "plain", "scheme"),
    ("http://a.test:18090/", ["--listener", "secure"], "secure", "named"),
])
def test_listener_choice(policy_cfg, url, args, name, chosen_by):
    rc, out, _ = explain(policy_cfg, url, *args)
    assert rc == 0
    assert out["listener"]["name"] == name and out["listener"]["chosen_by"] == chosen_by


def test_forwarding_headers(policy_cfg):
    """X-Forwarded-For: kept in front from a trusted client, then the client and
    the listener IPs; X-Forwarded-Proto from the listener; a valid X-Request-Id
    kept, another replaced (per request)."""
    rc, out, _ = explain(policy_cfg, "https://a.test:18443/x", "--client-ip", "203.0.113.7",
                         "-H", "x-forwarded-for: 198.51.100.1", "-H", "x-request-id: abc-123")
    assert headers_of(out, "x-forwarded-for") == "198.51.100.1, 203.0.113.7, 127.0.0.1"
    assert headers_of(out, "x-forwarded-proto") == "https"
    assert headers_of(out, "x-request-id") == "abc-123"
    rc, out, _ = explain(policy_cfg, "http://a.test:18091/x", "--client-ip", "203.0.113.7",
                         "-H", "x-forwarded-for: 198.51.100.1", "-H", "x-request-id: a b")
    assert headers_of(out, "x-forwarded-for") == "203.0.113.7, 127.0.0.1"   # untrusted peer
    assert headers_of(out, "x-forwarded-proto") == "http"
    assert headers_of(out, "x-request-id") == "(generated per request)"
    rc, out, _ = explain(policy_cfg, "http://a.test:18090/x", "--client-ip", "2001:db8::1")
    assert headers_of(out, "x-forwarded-for") == "2001:db8::1, 127.0.0.1"


# ---------------------------------------------------------------------------
# errors and usage
# ---------------------------------------------------------------------------

def test_bad_config_reports_file_line_col(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners:\n  - {name: l, address: \"127.0.0.1:1\", url_map: nope}\n"
                   "url_maps: []\nbackend_services: []\n")
    rc, out, err = explain(bad, "http://a/", as_json=False)
    assert rc == 1 and out == ""
    assert re.search(rf"^{re.escape(str(bad))}:2:\d+: .*nope", err, re.M), err
    rc, out, err = explain(tmp_path / "missing.yaml", "http://a/", as_json=False)
    assert rc == 1 and "missing.yaml" in err


@pytest.mark.parametrize("argv,message", [
    (["ftp://a/x"], "bad URL 'ftp://a/x': not an http:// or https:// URL"),
    (["http://a b/"], "bad URL 'http://a b/': its host[:port] is not valid"),
    (["http://user@a/"], "its host[:port] is not valid"),
    ([], "exactly one URL is required"),
    (["http://a/", "http://b/"], "exactly one URL is required"),
    (["-H", "nocolon", "http://a/"], "bad header 'nocolon'"),
    (["-X", "GE T", "http://a/"], "bad method"),
    (["--client-ip", "a.b", "http://a/"], "--client-ip wants an IPv4 or IPv6 address"),
    (["--listener", "nope", "http://a/"], "no listener of that name: nope"),
    (["--bogus", "http://a/"], "usage: switchyard explain"),
])
def test_usage_errors(policy_cfg, argv, message):
    r = run_switchyard(["explain", "-c", policy_cfg, *argv])
    assert r.returncode == 1, r
    assert message in r.stderr, r.stderr
    assert r.stdout == ""


def test_config_required_and_help():
    r = run_switchyard(["explain", "http://a/"])
    assert r.returncode == 1 and "-c FILE is required" in r.stderr
    r = run_switchyard(["explain", "--help"])
    assert r.returncode == 0 and "usage: switchyard explain" in r.stdout
    assert "3 redirect, 4 bad request" in r.stdout
    r = run_switchyard(["--help"])
    assert "switchyard explain -c FILE" in r.stdout and "switchyard diff OLD.yaml" in r.stdout


def test_strangler_example(tmp_path):
    """config/examples/strangler.yaml as the walkthrough uses it: environment
    expansion applies as in the proxy."""
    cfg = "config/examples/strangler.yaml"
    rc, out, _ = explain(cfg, "http://shop.example:8080/api/orders/42", "-H", "x-canary: true")
    assert rc == 0 and out["action"] == {"kind": "service", "service": "orders-canary"}
    rc, out, _ = explain(cfg, "http://shop.example:8080/api/orders/42")
    assert [(w["backend_service"], w["weight"]) for w in
            out["action"]["weighted_backend_services"]] == [("orders", 90), ("orders-canary", 10)]
    assert out["route_rules"][0]["match_rules"][0]["reason"] == \
        'header x-canary exact_match "true": got none'
    rc, out, _ = explain(cfg, "http://shop.example:8080/api/orders/42",
                         env={"ORDERS_CANARY_WEIGHT": "0"})
    assert [w["weight"] for w in out["action"]["weighted_backend_services"]] == [90, 0]
    assert out["action"]["pick"] == "orders"
    rc, out, _ = explain(cfg, "http://shop.example:8080/api/orders-export")
    assert out["action"] == {"kind": "service", "service": "legacy"}
    assert out["decision"] == {"kind": "path_matcher_default"}
