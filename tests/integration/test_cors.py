"""route_action.cors_policy: the proxy answers allowed preflights itself and
adds the CORS headers to allowed cross-origin responses. Every answer is
judged by the Fetch standard's own algorithms, written out below (the CORS
check of https://fetch.spec.whatwg.org/#cors-check and the preflight's
method and header checks of #cors-preflight-fetch), in the credentials mode
a browser would use, so a header the browser would refuse fails the test."""
import httpx
import pytest

from conftest import free_ports, run_switchyard
from h2util import H2Conn

SAFELISTED_METHODS = {"GET", "HEAD", "POST"}


def cors_check(resp_headers, origin, credentials):
    """Fetch's CORS check: does a response with these headers let a page of
    `origin` read it, in credentials mode `include` (credentials=True) or not?"""
    acao = resp_headers.get("access-control-allow-origin")
    if acao is None:
        return False
    if not credentials and acao == "*":
        return True
    if acao != origin:
        return False
    if not credentials:
        return True
    return resp_headers.get("access-control-allow-credentials") == "true"


def preflight_ok(resp, origin, method, headers, credentials):
    """Fetch's CORS-preflight fetch: an ok status, the CORS check, then the
    method and every non-safelisted header allowed (a "*" counts as a
    wildcard only without credentials)."""
    if not (200 <= resp.status_code <= 299):
        return False
    if not cors_check(resp.headers, origin, credentials):
        return False
    methods = [m.strip() for m in resp.headers.get("access-control-allow-methods", "").split(",")
               if m.strip()]
    if method not in methods and method not in SAFELISTED_METHODS and \
            not ("*" in methods and not credentials):
        return False
    allowed = [h.strip().lower() for h in
               resp.headers.get("access-control-allow-headers", "").split(",") if h.strip()]
    for h in headers:
        if h.lower() not in allowed and not ("*" in allowed and not credentials):
            return False
    return True


def config(port, tb_addr, cors, um_extra=""):
    return f"""\
listeners:
  - {{name: main, address: "127.0.0.1:{port}", url_map: m}}
url_maps:
  - name: m
    default_service: tb
{um_extra}
    path_matchers:
      - name: pm
        default_service: tb
        path_rules:
          - paths: ["/api/*"]
            service: tb
            route_action:
              cors_policy: {cors}
    host_rules:
      - {{hosts: ["*"], path_matcher: pm}}
backend_services:
  - name: tb
    endpoints: [{{address: "{tb_addr}"}}]
"""


CREDENTIALED = ('{allow_origins: ["https://app.example"], '
                'allow_origin_regexes: ["https://[a-z]+\\\\.tenant\\\\.example"], '
                'allow_methods: [GET, PUT, DELETE], allow_headers: [X-Token, Content-Type], '
                'expose_headers: [X-Trace], max_age: 10m, allow_credentials: true}')


@pytest.fixture
def site(proxy, testbed):
    def start(cors=CREDENTIALED, um_extra=""):
        tb = testbed()
        port, = free_ports(1)
        px = proxy(config(port, tb.addr, cors, um_extra), expect_ports=[port])
        return httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False), px, tb
    return start


def preflight(c, path, origin, method, headers=()):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        h["Access-Control-Request-Headers"] = ", ".join(headers)
    return c.options(path, headers=h)


def test_allowed_preflight_is_answered_by_the_proxy(site):
    c, px, tb = site()
    r = preflight(c, "/api/items/7", "https://app.example", "PUT", ["X-Token"])
    assert r.status_code == 200 and r.content == b""
    assert preflight_ok(r, "https://app.example", "PUT", ["X-Token"], credentials=True), r.headers
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["vary"] == "Origin"
    assert "x-trace" not in r.headers.get("access-control-expose-headers", "")
    # The backend never saw it: the access log names no endpoint.
    entry = px.access_log(1)[-1]
    assert entry["method"] == "OPTIONS" and not entry.get("endpoint"), entry
    # A method or header the policy does not list fails the browser's checks.
    r = preflight(c, "/api/items/7", "https://app.example", "PATCH")
    assert not preflight_ok(r, "https://app.example", "PATCH", [], credentials=True)
    r = preflight(c, "/api/items/7", "https://app.example", "PUT", ["X-Other"])
    assert not preflight_ok(r, "https://app.example", "PUT", ["X-Other"], credentials=True)


def test_actual_request_gets_the_cors_headers(site):
    c, px, tb = site()
    r = c.get("/api/items", headers={"Origin": "https://app.example"})
    assert r.status_code == 200
    assert cors_check(r.headers, "https://app.example", credentials=True), r.headers
    assert r.headers["access-control-expose-headers"] == "x-trace"
    assert r.headers["vary"] == "Origin"
    assert r.json()["path"] == "/api/items"   # it reached the backend


def test_origin_regex_is_matched_whole(site):
    c, px, tb = site()
    r = c.get("/api/x", headers={"Origin": "https://acme.tenant.example"})
    assert cors_check(r.headers, "https://acme.tenant.example", credentials=True)
    # Anchored at both ends: a suffix or prefix does not pass.
    for o in ("https://acme.tenant.example.evil", "xhttps://acme.tenant.example"):
        r = c.get("/api/x", headers={"Origin": o})
        assert "access-control-allow-origin" not in r.headers, (o, r.headers)


def test_other_origins_pass_through_without_cors_headers(site):
    """As Envoy: the request goes to the backend untouched, the response
    carries no CORS header, and the browser refuses to show it."""
    c, px, tb = site()
    r = preflight(c, "/api/items/7", "https://evil.example", "PUT")
    assert r.status_code == 200 and r.json()["method"] == "OPTIONS"   # the backend's echo
    assert not preflight_ok(r, "https://evil.example", "PUT", [], credentials=False)
    r = c.get("/api/items", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    # Same-origin or non-browser requests (no Origin) are not touched either.
    r = c.get("/api/items")
    assert "access-control-allow-origin" not in r.headers and "vary" not in r.headers
    # A route without a policy: nothing, even for an allowed origin.
    r = c.get("/elsewhere", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers


def test_wildcard_without_credentials(site):
    c, px, tb = site(cors='{allow_origins: ["*"], allow_methods: [GET, POST]}')
    r = c.get("/api/x", headers={"Origin": "https://anyone.example"})
    assert r.headers["access-control-allow-origin"] == "*"
    assert "vary" not in r.headers and "access-control-allow-credentials" not in r.headers
    # A browser accepts it for a request without credentials, refuses it with.
    assert cors_check(r.headers, "https://anyone.example", credentials=False)
    assert not cors_check(r.headers, "https://anyone.example", credentials=True)
    r = preflight(c, "/api/x", "https://anyone.example", "POST")
    assert preflight_ok(r, "https://anyone.example", "POST", [], credentials=False), r.headers


def test_wildcard_with_credentials_is_refused_by_the_loader(tmp_path):
    bad = config(8080, "127.0.0.1:9", '{allow_origins: ["*"], allow_credentials: true}')
    p = tmp_path / "bad.yaml"
    p.write_text(bad)
    r = run_switchyard(["-t", "-c", str(p)])
    assert r.returncode == 1
    assert "allow_origins '*' cannot be used with allow_credentials: true" in r.stderr


def test_disabled_policy_does_nothing(site):
    c, px, tb = site(cors='{allow_origins: ["https://app.example"], disabled: true}')
    r = preflight(c, "/api/x", "https://app.example", "GET")
    assert r.json()["method"] == "OPTIONS"   # forwarded
    r = c.get("/api/x", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers


def test_backend_cors_headers_are_replaced(site):
    """The proxy owns CORS on a route with a policy: a wildcard the backend
    (here a header action standing in for it) sets is replaced."""
    extra = ("    header_action:\n"
             "      response_headers_to_add:\n"
             "        - {header_name: Access-Control-Allow-Origin, header_value: '*'}")
    c, px, tb = site(um_extra=extra)
    r = c.get("/api/x", headers={"Origin": "https://app.example"})
    assert r.headers.get_list("access-control-allow-origin") == ["https://app.example"]
    assert cors_check(r.headers, "https://app.example", credentials=True)


def test_preflight_over_http2(site):
    c, px, tb = site()
    port = int(str(c.base_url).rsplit(":", 1)[1].rstrip("/"))
    with H2Conn(port) as h2:
        st = h2.wait_stream(h2.request("OPTIONS", "/api/items", headers=[
            ("origin", "https://app.example"), ("access-control-request-method", "DELETE")]))
        assert st.status == 200, st
        hdrs = {k: v for k, v in st.headers}
        assert hdrs["access-control-allow-origin"] == "https://app.example"
        assert "DELETE" in hdrs["access-control-allow-methods"]
