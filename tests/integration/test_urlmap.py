"""The URL map through the real proxy (docs/configuration.md, "URL map
semantics"): host rules, path rules, route rules and their match conditions,
weighted splits, url_rewrite, header actions at all four levels, url_redirect
and path normalization.

One proxy (two listeners) and one switchyard-testbed per distinct backend
instance are started once for the module: every backend service points at a
testbed of its own name (a few share one), so the `x-testbed-instance` header
and the echoed JSON tell which service a request reached and what it saw.
Requests go over raw HTTP/1.1 sockets (h1util: exact request targets and
Host headers, no client-side normalization), HTTP/2 (h2util) for :authority,
and a keep-alive httpx client for the split counts.
"""

import math
import signal
import subprocess

import httpx
import pytest

from conftest import (HOST, START_TIMEOUT, binary, child_env, free_port, free_ports,
                      sanitizer_report, stop_process, wait_port)
from h1util import H1Conn, NoResponse, exchange, request_bytes
from h2util import H2Conn

# backend_service name -> testbed instance name (several services may share one)
SERVICES = {
    "dflt": "dflt",
    # host rules
    "h_exact": "h_exact", "h_port": "h_port", "h_wild": "h_wild",
    "h_wildlong": "h_wildlong", "h_dev": "h_dev",
    "h_star": "h_star", "h_star_exact": "h_star_exact",
    # path rules
    "p_short": "p_short", "p_long": "p_long", "p_exact": "p_exact", "p_dflt": "p_dflt",
    # route rules
    "r_dflt": "r_dflt", "r_p10": "r_p10", "r_p50": "r_p50", "r_full": "r_full",
    "r_icase": "r_icase", "r_sens": "r_sens", "r_regex": "r_regex", "r_regexi": "r_regexi",
    "r_alt": "r_alt", "r_and": "r_and",
    # header / query matches
    "hit": "hit", "miss": "miss",
    # weighted split; both weight-0 services land on the "w0" testbed
    "w10": "w10", "w90": "w90", "w0a": "w0", "w0b": "w0",
    # rewrites, header actions, normalization
    "rw": "rw", "rw_any": "rw_any", "ha": "ha", "admin": "admin", "normsvc": "normsvc",
}

URL_MAPS = r"""
url_maps:
  - name: main
    default_service: dflt
    # U: the url map's header action (applies to every request of this map)
    header_action:
      request_headers_to_remove: [x-rm-u, x-w-added]
      request_headers_to_add:
        - {header_name: x-all, header_value: u, replace: true}
        - {header_name: x-append, header_value: u}
        - {header_name: x-late, header_value: u}
      response_headers_to_remove: [x-resp-r]
      response_headers_to_add:
        - {header_name: x-resp-all, header_value: u, replace: true}
        - {header_name: x-resp-append, header_value: u}
    host_rules:
      - {hosts: ["exact.test"], path_matcher: exact}
      - {hosts: ["exact.test:8443"], path_matcher: exactport}
      - {hosts: ["*.example.com"], path_matcher: wild}
      - {hosts: ["*.api.example.com"], path_matcher: wildlong}
      - {hosts: ["*-dev.example.com"], path_matcher: dev}
      - {hosts: ["paths.test"], path_matcher: paths}
      - {hosts: ["routes.test"], path_matcher: routes}
      - {hosts: ["hdr.test", "*.hdr.test"], path_matcher: hdr}
      - {hosts: ["split.test"], path_matcher: split}
      - {hosts: ["rw.test"], path_matcher: rw}
      - {hosts: ["rwp.test"], path_matcher: rwp}
      - {hosts: ["ha.test"], path_matcher: ha}
      - {hosts: ["redir.test"], path_matcher: redir}
      - {hosts: ["redirdefault.test"], path_matcher: redirdefault}
      - {hosts: ["redirpath.test"], path_matcher: redirpath}
      - {hosts: ["norm.test"], path_matcher: norm}
    path_matchers:
      - {name: exact, default_service: h_exact}
      - {name: exactport, default_service: h_port}
      - {name: wild, default_service: h_wild}
      - {name: wildlong, default_service: h_wildlong}
      - {name: dev, default_service: h_dev}

      - name: paths
        default_service: p_dflt
        path_rules:
          - {paths: ["/x/*"], service: p_short}
          - {paths: ["/x/y/*"], service: p_long}
          - {paths: ["/x/y/z"], service: p_exact}

      - name: routes
        default_service: r_dflt
        route_rules:                       # deliberately not in priority order
          - {priority: 50, match_rules: [{prefix_match: /p/}], service: r_p50}
          - {priority: 10, match_rules: [{prefix_match: /p/special}], service: r_p10}
          - {priority: 9, match_rules: [{prefix_match: /q/long/}], service: r_p50}
          - {priority: 8, match_rules: [{prefix_match: /q/}], service: r_p10}
          - {priority: 20, match_rules: [{full_path_match: /full}], service: r_full}
          - {priority: 30, match_rules: [{prefix_match: /CaSe/, ignore_case: true}], service: r_icase}
          - {priority: 31, match_rules: [{full_path_match: /FullCase, ignore_case: true}], service: r_icase}
          - {priority: 35, match_rules: [{prefix_match: /Sens/}], service: r_sens}
          - {priority: 40, match_rules: [{regex_match: "/v[0-9]+/orders(/.*)?"}], service: r_regex}
          - {priority: 42, match_rules: [{regex_match: "(?i)/ri/[a-z]+"}], service: r_regexi}
          - {priority: 43, match_rules: [{regex_match: "/rx/[a-z]+"}], service: r_regex}
          - priority: 60
            match_rules: [{full_path_match: /alt1}, {prefix_match: /alt2/}]
            service: r_alt
          - priority: 70
            match_rules:
              - prefix_match: /and/
                header_matches: [{header_name: x-and, exact_match: "1"}]
                query_parameter_matches: [{name: q, exact_match: "1"}]
            service: r_and

      - name: hdr
        default_service: miss
        route_rules:
          - {priority: 1, match_rules: [{full_path_match: /exact, header_matches: [{header_name: X-H, exact_match: abc}]}], service: hit}
          - {priority: 2, match_rules: [{full_path_match: /exact-inv, header_matches: [{header_name: x-h, exact_match: abc, invert_match: true}]}], service: hit}
          - {priority: 3, match_rules: [{full_path_match: /prefix, header_matches: [{header_name: x-h, prefix_match: ab}]}], service: hit}
          - {priority: 4, match_rules: [{full_path_match: /prefix-inv, header_matches: [{header_name: x-h, prefix_match: ab, invert_match: true}]}], service: hit}
          - {priority: 5, match_rules: [{full_path_match: /suffix, header_matches: [{header_name: x-h, suffix_match: yz}]}], service: hit}
          - {priority: 6, match_rules: [{full_path_match: /suffix-inv, header_matches: [{header_name: x-h, suffix_match: yz, invert_match: true}]}], service: hit}
          - {priority: 7, match_rules: [{full_path_match: /regex, header_matches: [{header_name: x-h, regex_match: "[0-9]{3}"}]}], service: hit}
          - {priority: 8, match_rules: [{full_path_match: /regex-inv, header_matches: [{header_name: x-h, regex_match: "[0-9]{3}", invert_match: true}]}], service: hit}
          - {priority: 9, match_rules: [{full_path_match: /present, header_matches: [{header_name: x-h, present_match: true}]}], service: hit}
          - {priority: 10, match_rules: [{full_path_match: /absent, header_matches: [{header_name: x-h, present_match: false}]}], service: hit}
          - {priority: 11, match_rules: [{full_path_match: /present-inv, header_matches: [{header_name: x-h, present_match: true, invert_match: true}]}], service: hit}
          - {priority: 12, match_rules: [{full_path_match: /range, header_matches: [{header_name: x-h, range_match: {start: 10, end: 20}}]}], service: hit}
          - {priority: 13, match_rules: [{full_path_match: /range-neg, header_matches: [{header_name: x-h, range_match: {start: -10, end: 0}}]}], service: hit}
          - {priority: 14, match_rules: [{full_path_match: /range-inv, header_matches: [{header_name: x-h, range_match: {start: 10, end: 20}, invert_match: true}]}], service: hit}
          - {priority: 15, match_rules: [{full_path_match: /multi, header_matches: [{header_name: x-m, exact_match: "a,b"}]}], service: hit}
          - {priority: 16, match_rules: [{full_path_match: /two, header_matches: [{header_name: x-a, exact_match: "1"}, {header_name: x-b, exact_match: "2"}]}], service: hit}
          - {priority: 20, match_rules: [{full_path_match: /method, header_matches: [{header_name: ":method", exact_match: POST}]}], service: hit}
          - {priority: 21, match_rules: [{full_path_match: /method-re, header_matches: [{header_name: ":method", regex_match: "PUT|PATCH"}]}], service: hit}
          - {priority: 22, match_rules: [{full_path_match: /method-inv, header_matches: [{header_name: ":method", exact_match: GET, invert_match: true}]}], service: hit}
          - {priority: 23, match_rules: [{full_path_match: /authority, header_matches: [{header_name: ":authority", exact_match: hdr.test}]}], service: hit}
          - {priority: 24, match_rules: [{full_path_match: /scheme, header_matches: [{header_name: ":scheme", exact_match: http}]}], service: hit}
          - {priority: 25, match_rules: [{prefix_match: /pathhdr, header_matches: [{header_name: ":path", regex_match: "/pathhdr\\?a=1"}]}], service: hit}
          - {priority: 30, match_rules: [{full_path_match: /q-present, query_parameter_matches: [{name: debug, present_match: true}]}], service: hit}
          - {priority: 31, match_rules: [{full_path_match: /q-absent, query_parameter_matches: [{name: debug, present_match: false}]}], service: hit}
          - {priority: 32, match_rules: [{full_path_match: /q-exact, query_parameter_matches: [{name: v, exact_match: "1"}]}], service: hit}
          - {priority: 33, match_rules: [{full_path_match: /q-regex, query_parameter_matches: [{name: id, regex_match: "[0-9]+"}]}], service: hit}
          - {priority: 34, match_rules: [{full_path_match: /q-two, query_parameter_matches: [{name: a, exact_match: "1"}, {name: b, present_match: true}]}], service: hit}

      - name: split
        route_rules:
          - priority: 1
            route_action:
              weighted_backend_services:
                - {backend_service: w0a, weight: 0}
                - {backend_service: w10, weight: 10}
                - {backend_service: w0b, weight: 0}
                - {backend_service: w90, weight: 90}

      - name: rw
        route_rules:
          - priority: 1
            match_rules: [{prefix_match: /api/}]
            service: rw
            route_action: {url_rewrite: {path_prefix_rewrite: /, host_rewrite: backend.internal}}
          - priority: 2
            match_rules: [{prefix_match: /old/}]
            service: rw
            route_action: {url_rewrite: {path_prefix_rewrite: /new/}}
          - priority: 3
            match_rules: [{full_path_match: /exact-rw}]
            service: rw
            route_action: {url_rewrite: {path_prefix_rewrite: /replaced}}
          - priority: 4
            match_rules: [{regex_match: "/re/[0-9]+"}]
            service: rw
            route_action: {url_rewrite: {path_prefix_rewrite: /num}}
          - priority: 5
            match_rules: [{prefix_match: /hostonly/}]
            service: rw
            route_action: {url_rewrite: {host_rewrite: only.internal}}
          - priority: 6
            match_rules: [{prefix_match: /v1}]
            service: rw
            route_action: {url_rewrite: {path_prefix_rewrite: /v2}}
          - priority: 999                  # no match_rules: matches every request
            service: rw_any

      - name: rwp
        default_service: dflt
        path_rules:
          - paths: ["/pr/*"]
            service: rw
            route_action: {url_rewrite: {path_prefix_rewrite: /v2/}}
          - paths: ["/exactpr"]
            service: rw
            route_action: {url_rewrite: {path_prefix_rewrite: /e2}}

      - name: ha
        # P: the path matcher's header action
        header_action:
          request_headers_to_remove: [x-rm-p, x-r-added, x-late, x-forwarded-proto]
          request_headers_to_add:
            - {header_name: x-all, header_value: p, replace: true}
            - {header_name: x-append, header_value: p}
          response_headers_to_remove: [x-testbed-instance]
          response_headers_to_add:
            - {header_name: x-resp-all, header_value: p, replace: true}
            - {header_name: x-resp-append, header_value: p}
        route_rules:
          - priority: 1
            # R: the route rule's header action
            header_action:
              request_headers_to_remove: [x-rm-r, x-same]
              request_headers_to_add:
                - {header_name: x-all, header_value: r, replace: true}
                - {header_name: x-append, header_value: r}
                - {header_name: x-r-added, header_value: r}
                - {header_name: x-same, header_value: r}
              response_headers_to_remove: [x-resp-w]
              response_headers_to_add:
                - {header_name: x-resp-all, header_value: r, replace: true}
                - {header_name: x-resp-append, header_value: r}
                - {header_name: x-resp-r, header_value: r}
                - {header_name: content-type, header_value: text/x-route}
            route_action:
              weighted_backend_services:
                - backend_service: ha
                  weight: 1
                  # W: the weighted backend service's header action
                  header_action:
                    request_headers_to_remove: [x-rm-w]
                    request_headers_to_add:
                      - {header_name: x-all, header_value: w, replace: true}
                      - {header_name: x-append, header_value: w}
                      - {header_name: x-w-added, header_value: w}
                      - {header_name: x-client, header_value: w, replace: true}
                    response_headers_to_remove: [content-type]
                    response_headers_to_add:
                      - {header_name: x-resp-all, header_value: w, replace: true}
                      - {header_name: x-resp-append, header_value: w}
                      - {header_name: x-resp-w, header_value: w}
                      - {header_name: x-resp-w-keep, header_value: w}

      - name: redir
        default_service: dflt
        route_rules:
          - {priority: 1, match_rules: [{prefix_match: /host/}], url_redirect: {host_redirect: new.example}}
          - {priority: 2, match_rules: [{prefix_match: /path/}], url_redirect: {path_redirect: /elsewhere}}
          - {priority: 3, match_rules: [{full_path_match: /pathq}], url_redirect: {path_redirect: "/other?y=2"}}
          - {priority: 4, match_rules: [{prefix_match: /prefix/}], url_redirect: {prefix_redirect: /new/}}
          - {priority: 5, match_rules: [{prefix_match: /strip-me/}], url_redirect: {prefix_redirect: /}}
          - {priority: 6, match_rules: [{prefix_match: /https/}], url_redirect: {https_redirect: true}}
          - {priority: 7, match_rules: [{full_path_match: /strip}], url_redirect: {strip_query: true}}
          - priority: 8
            match_rules: [{prefix_match: /all/}]
            url_redirect:
              host_redirect: new.example
              prefix_redirect: /b/
              https_redirect: true
              strip_query: true
              redirect_response_code: PERMANENT_REDIRECT
          - {priority: 20, match_rules: [{full_path_match: /code/MOVED_PERMANENTLY_DEFAULT}], url_redirect: {path_redirect: /done, redirect_response_code: MOVED_PERMANENTLY_DEFAULT}}
          - {priority: 21, match_rules: [{full_path_match: /code/FOUND}], url_redirect: {path_redirect: /done, redirect_response_code: FOUND}}
          - {priority: 22, match_rules: [{full_path_match: /code/SEE_OTHER}], url_redirect: {path_redirect: /done, redirect_response_code: SEE_OTHER}}
          - {priority: 23, match_rules: [{full_path_match: /code/TEMPORARY_REDIRECT}], url_redirect: {path_redirect: /done, redirect_response_code: TEMPORARY_REDIRECT}}
          - {priority: 24, match_rules: [{full_path_match: /code/PERMANENT_REDIRECT}], url_redirect: {path_redirect: /done, redirect_response_code: PERMANENT_REDIRECT}}
          - {priority: 25, match_rules: [{full_path_match: /code/301}], url_redirect: {path_redirect: /done, redirect_response_code: 301}}
          - {priority: 26, match_rules: [{full_path_match: /code/302}], url_redirect: {path_redirect: /done, redirect_response_code: 302}}
          - {priority: 27, match_rules: [{full_path_match: /code/303}], url_redirect: {path_redirect: /done, redirect_response_code: 303}}
          - {priority: 28, match_rules: [{full_path_match: /code/307}], url_redirect: {path_redirect: /done, redirect_response_code: 307}}
          - {priority: 29, match_rules: [{full_path_match: /code/308}], url_redirect: {path_redirect: /done, redirect_response_code: 308}}

      - name: redirdefault
        default_url_redirect: {https_redirect: true, redirect_response_code: TEMPORARY_REDIRECT}

      - name: redirpath
        default_service: dflt
        path_rules:
          - paths: ["/docs/*"]
            url_redirect: {host_redirect: docs.example, prefix_redirect: /manual/, redirect_response_code: FOUND}

      - name: norm
        default_service: normsvc
        path_rules:
          - {paths: ["/admin"], service: admin}

  - name: star
    default_service: dflt
    host_rules:
      - {hosts: ["*"], path_matcher: star}
      - {hosts: ["exact.test"], path_matcher: starexact}
    path_matchers:
      - {name: star, default_service: h_star}
      - {name: starexact, default_service: h_star_exact}
"""


def make_config(port, port2, addrs):
    services = "".join(
        f"  - {{name: {svc}, protocol: HTTP, timeout: 10s, "
        f"endpoints: [{{address: \"{addrs[tb]}\"}}]}}\n"
        for svc, tb in SERVICES.items())
    return f"""\
listeners:
  - {{name: main, address: "127.0.0.1:{port}", protocol: HTTP, url_map: main}}
  - {{name: star, address: "127.0.0.1:{port2}", protocol: HTTP, url_map: star}}
access_log: {{enabled: true, path: "-", format: json}}
drain_timeout: 5s
{URL_MAPS}
backend_services:
{services}"""


# ---------------------------------------------------------------------------
# the module's proxy and testbeds (started once, stopped by pid)
# ---------------------------------------------------------------------------

class World:
    def __init__(self, port, port2, proc, stderr_path):
        self.port = port
        self.port2 = port2
        self.proc = proc
        self.stderr_path = stderr_path


def _spawn(cmd, out, err, cwd):
    with open(out, "wb") as of, open(err, "wb") as ef:
        return subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                                stdout=of, stderr=ef, env=child_env(), cwd=str(cwd))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("urlmap")
    procs = []          # (label, Popen, stderr path)
    try:
        tb_exe = binary("switchyard-testbed")
        addrs = {}
        pending = sorted(set(SERVICES.values()))
        for attempt in range(3):
            started = []
            for name, p in zip(pending, free_ports(len(pending))):
                errp = d / f"tb-{name}-{attempt}.log"
                proc = _spawn([tb_exe, "--listen", f"{HOST}:{p}", "--name", name],
                              errp, errp, d)
                procs.append((f"testbed {name}", proc, errp))
                started.append((name, p, proc))
            failed = []
            for name, p, proc in started:
                # wait_port alone is not enough: another process on the port
                # would answer too. The testbed must still be running.
                if wait_port(p, START_TIMEOUT, proc) and proc.poll() is None:
                    addrs[name] = f"{HOST}:{p}"
                else:
                    stop_process(proc, signal.SIGKILL, 5)
                    failed.append(name)
            pending = failed
            if not pending:
                break
        if pending:
            pytest.fail(f"testbeds did not start: {pending}")

        port, port2 = free_ports(2)
        cfg = d / "switchyard.yaml"
        cfg.write_text(make_config(port, port2, addrs))
        outp, errp = d / "switchyard.stdout", d / "switchyard.stderr"
        px = _spawn([binary("switchyard"), "-c", cfg, "--workers", "1"], outp, errp, d)
        procs.append(("switchyard", px, errp))
        for p in (port, port2):
            if not wait_port(p, START_TIMEOUT, px):
                pytest.fail(f"switchyard did not listen on {p}:\n{errp.read_text()}")
        yield World(port, port2, px, errp)
    finally:
        problems = []
        for label, proc, errp in reversed(procs):
            stop_process(proc, signal.SIGTERM, 15)
            text = errp.read_text(errors="replace") if errp.exists() else ""
            if sanitizer_report(text):
                problems.append(f"{label}: {sanitizer_report(text)}\n{text[-6000:]}")
        if problems:
            pytest.fail("sanitizer report:\n" + "\n".join(problems))


def h1(world, path, host, headers=(), method="GET", port=None):
    """One request on a fresh HTTP/1.1 connection, exactly as given."""
    return exchange(port or world.port, request_bytes(method, path, host, headers), 10.0, method)


def instance(r):
    """Which testbed answered (None: the proxy answered itself)."""
    return r.header("x-testbed-instance")


# ---------------------------------------------------------------------------
# host rules (H)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("host,expect", [
    ("exact.test", "h_exact"),                 # H1 exact
    ("EXACT.Test", "h_exact"),                 # case-insensitive
    ("exact.test:8080", "h_exact"),            # port stripped
    ("exact.test.", "h_exact"),                # one trailing dot removed
    ("exact.test:8443", "h_port"),             # a pattern with a port: whole authority first
    ("exact.testx", "dflt"),
    ("a.example.com", "h_wild"),               # H2 wildcard
    ("a.b.example.com", "h_wild"),             # "*" is one or more characters, dots included
    ("A.Example.COM:9", "h_wild"),
    ("example.com", "dflt"),                   # "*" needs at least one character
    ("x.api.example.com", "h_wildlong"),       # longest suffix wins
    ("a.b.api.example.com:1234", "h_wildlong"),
    ("api.example.com", "h_wild"),             # "*.api.example.com" needs a label before
    ("web-dev.example.com", "h_dev"),          # "*-dev.example.com" beats "*.example.com"
    ("-dev.example.com", "h_wild"),            # ... but needs one character before "-dev"
    ("unknown.test", "dflt"),                  # H4: the url map's default
    ("127.0.0.1", "dflt"),
])
def test_host_rules(world, host, expect):
    r = h1(world, "/", host)
    assert r.status == 200, r
    assert instance(r) == expect, (host, r.headers)


@pytest.mark.parametrize("host,expect", [
    ("anything.test", "h_star"),               # H3 "*"
    ("127.0.0.1:1", "h_star"),
    ("exact.test", "h_star_exact"),            # an exact host beats "*"
    ("EXACT.TEST:99", "h_star_exact"),
])
def test_host_star(world, host, expect):
    r = h1(world, "/", host, port=world.port2)
    assert r.status == 200, r
    assert instance(r) == expect, (host, r.headers)


def test_host_rules_http2_authority(world):
    """Over HTTP/2 the host is :authority."""
    with H2Conn(world.port) as c:
        for authority, expect in [("x.api.example.com:80", "h_wildlong"),
                                  ("EXACT.TEST", "h_exact"), ("nope.test", "dflt")]:
            s = c.get("/", authority=authority)
            assert s.status == 200, s
            assert s.header("x-testbed-instance") == expect, authority


# ---------------------------------------------------------------------------
# path rules (P)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path,expect", [
    ("/x/y/z", "p_exact"),         # an exact path beats every prefix
    ("/x/y/z?q=1", "p_exact"),     # the query is not part of the path
    ("/x/y/a", "p_long"),          # longest "/x/y/" prefix wins
    ("/x/y/z/deeper", "p_long"),   # the exact path is not a prefix
    ("/x/y/", "p_long"),
    ("/x/y", "p_short"),           # "/x/y/*" does not match "/x/y"
    ("/x/a", "p_short"),
    ("/x/", "p_short"),
    ("/x", "p_dflt"),              # "/x/*" does not match "/x"
    ("/X/a", "p_dflt"),            # case-sensitive
    ("/other", "p_dflt"),
])
def test_path_rules(world, path, expect):
    r = h1(world, path, "paths.test")
    assert r.status == 200, r
    assert instance(r) == expect, path


# ---------------------------------------------------------------------------
# route rules (R1): priority, prefix / full / regex, ignore_case, alternatives
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path,expect", [
    ("/p/special/x", "r_p10"),     # priority 10 beats 50, though listed after it
    ("/p/specialty", "r_p10"),     # a prefix is bytes, not segments
    ("/p/other", "r_p50"),
    ("/q/long/x", "r_p10"),        # priority 8 "/q/" beats priority 9 "/q/long/"
    ("/full", "r_full"),
    ("/full?x=1", "r_full"),
    ("/full/", "r_dflt"),
    ("/FULL", "r_dflt"),
    ("/case/x", "r_icase"),        # ignore_case prefix
    ("/CASE/x", "r_icase"),
    ("/CaSe/x", "r_icase"),
    ("/fullcase", "r_icase"),      # ignore_case full path
    ("/FULLCASE", "r_icase"),
    ("/fullcase/", "r_dflt"),
    ("/Sens/x", "r_sens"),
    ("/sens/x", "r_dflt"),         # case-sensitive without ignore_case
    ("/v2/orders", "r_regex"),     # regex: whole path
    ("/v10/orders/7", "r_regex"),
    ("/v2/orders?x=1", "r_regex"),  # the query is not part of the regex subject
    ("/v2/ordersX", "r_dflt"),     # anchored at the end
    ("/x/v2/orders", "r_dflt"),    # anchored at the start
    ("/vX/orders", "r_dflt"),
    ("/RI/ABC", "r_regexi"),       # (?i) inside the pattern
    ("/rx/abc", "r_regex"),
    ("/rx/ABC", "r_dflt"),
    ("/alt1", "r_alt"),            # match rules are alternatives
    ("/alt2/z", "r_alt"),
    ("/alt1/z", "r_dflt"),
    ("/nothing", "r_dflt"),        # no rule: the path matcher's default
])
def test_route_rules(world, path, expect):
    r = h1(world, path, "routes.test")
    assert r.status == 200, r
    assert instance(r) == expect, path


@pytest.mark.parametrize("path,headers,expect", [
    ("/and/x?q=1", [("x-and", "1")], "r_and"),     # every condition holds
    ("/and/x?q=1", [], "r_dflt"),                  # header missing
    ("/and/x", [("x-and", "1")], "r_dflt"),        # query missing
    ("/and/x?q=2", [("x-and", "1")], "r_dflt"),
    ("/nope?q=1", [("x-and", "1")], "r_dflt"),     # path fails
])
def test_route_rule_conditions_all_hold(world, path, headers, expect):
    r = h1(world, path, "routes.test", headers)
    assert r.status == 200, r
    assert instance(r) == expect


# ---------------------------------------------------------------------------
# header matches (R2) and query parameter matches (R3): "hit" or "miss"
# ---------------------------------------------------------------------------

H = "x-h"
HEADER_CASES = [
    # path, headers, method, hit?
    ("/exact", [("X-H", "abc")], "GET", True),
    ("/exact", [(H, "abcd")], "GET", False),
    ("/exact", [(H, "ABC")], "GET", False),           # case-sensitive value
    ("/exact", [], "GET", False),                     # absent
    ("/exact-inv", [(H, "abc")], "GET", False),
    ("/exact-inv", [(H, "x")], "GET", True),
    ("/exact-inv", [], "GET", True),                  # absent, inverted: holds
    ("/prefix", [(H, "abc")], "GET", True),
    ("/prefix", [(H, "ab")], "GET", True),
    ("/prefix", [(H, "xab")], "GET", False),
    ("/prefix", [(H, "AB")], "GET", False),
    ("/prefix-inv", [(H, "xab")], "GET", True),
    ("/prefix-inv", [(H, "abc")], "GET", False),
    ("/suffix", [(H, "xyz")], "GET", True),
    ("/suffix", [(H, "yzx")], "GET", False),
    ("/suffix", [], "GET", False),
    ("/suffix-inv", [(H, "yzx")], "GET", True),
    ("/suffix-inv", [(H, "xyz")], "GET", False),
    ("/regex", [(H, "123")], "GET", True),
    ("/regex", [(H, "1234")], "GET", False),          # full match
    ("/regex", [(H, "a123")], "GET", False),
    ("/regex", [], "GET", False),
    ("/regex-inv", [(H, "12")], "GET", True),
    ("/regex-inv", [(H, "123")], "GET", False),
    ("/present", [(H, "anything")], "GET", True),
    ("/present", [(H, "")], "GET", True),             # an empty value is present
    ("/present", [], "GET", False),
    ("/absent", [], "GET", True),
    ("/absent", [(H, "1")], "GET", False),
    ("/present-inv", [], "GET", True),
    ("/present-inv", [(H, "1")], "GET", False),
    ("/range", [(H, "10")], "GET", True),             # start inclusive
    ("/range", [(H, "19")], "GET", True),
    ("/range", [(H, "20")], "GET", False),            # end exclusive
    ("/range", [(H, "9")], "GET", False),
    ("/range", [(H, "-15")], "GET", False),
    ("/range", [(H, "15.0")], "GET", False),          # not an integer
    ("/range", [(H, "1x")], "GET", False),
    ("/range", [(H, "+15")], "GET", False),           # only an optional "-"
    ("/range", [], "GET", False),
    ("/range-neg", [(H, "-10")], "GET", True),
    ("/range-neg", [(H, "-1")], "GET", True),
    ("/range-neg", [(H, "0")], "GET", False),
    ("/range-neg", [(H, "-11")], "GET", False),
    ("/range-inv", [(H, "25")], "GET", True),
    ("/range-inv", [(H, "15")], "GET", False),
    ("/range-inv", [(H, "abc")], "GET", True),
    ("/range-inv", [], "GET", True),
    ("/multi", [("x-m", "a"), ("x-m", "b")], "GET", True),    # joined with ","
    ("/multi", [("x-m", "a")], "GET", False),
    ("/two", [("x-a", "1"), ("x-b", "2")], "GET", True),      # all must hold
    ("/two", [("x-a", "1")], "GET", False),
    ("/two", [("x-a", "1"), ("x-b", "3")], "GET", False),
    ("/method", [], "POST", True),                    # :method
    ("/method", [], "GET", False),
    ("/method-re", [], "PUT", True),
    ("/method-re", [], "PATCH", True),
    ("/method-re", [], "POST", False),
    ("/method-inv", [], "DELETE", True),
    ("/method-inv", [], "GET", False),
    ("/scheme", [], "GET", True),                     # :scheme is "http" on a plain listener
    ("/pathhdr?a=1", [], "GET", True),                # :path includes the query
    ("/pathhdr", [], "GET", False),
    ("/pathhdr?a=2", [], "GET", False),
    ("/x/../pathhdr?a=1", [], "GET", True),           # :path is the normalized path
    # query parameters
    ("/q-present?debug", [], "GET", True),
    ("/q-present?debug=1", [], "GET", True),
    ("/q-present?a=1&debug=", [], "GET", True),
    ("/q-present?debugx=1", [], "GET", False),
    ("/q-present?x=debug", [], "GET", False),
    ("/q-present", [], "GET", False),
    ("/q-absent", [], "GET", True),
    ("/q-absent?other=1", [], "GET", True),
    ("/q-absent?debug", [], "GET", False),
    ("/q-exact?v=1", [], "GET", True),
    ("/q-exact?a=b&v=1", [], "GET", True),
    ("/q-exact?v=1&v=2", [], "GET", True),            # the first occurrence counts
    ("/q-exact?v=2&v=1", [], "GET", False),
    ("/q-exact?v=%31", [], "GET", False),             # raw, not percent-decoded
    ("/q-exact?v=10", [], "GET", False),
    ("/q-exact?v", [], "GET", False),
    ("/q-regex?id=42", [], "GET", True),
    ("/q-regex?id=4a", [], "GET", False),             # whole value
    ("/q-regex?id=", [], "GET", False),
    ("/q-two?a=1&b", [], "GET", True),
    ("/q-two?a=1", [], "GET", False),
]


@pytest.mark.parametrize("path,headers,method,hit", HEADER_CASES,
                         ids=[f"{m} {p} {h}" for p, h, m, _ in HEADER_CASES])
def test_header_and_query_matches(world, path, headers, method, hit):
    r = h1(world, path, "hdr.test", headers, method=method)
    assert r.status == 200, r
    assert instance(r) == ("hit" if hit else "miss")


def test_authority_header_match(world):
    assert instance(h1(world, "/authority", "hdr.test")) == "hit"
    assert instance(h1(world, "/authority", "x.hdr.test")) == "miss"   # same matcher, other host


def test_method_match_http2(world):
    with H2Conn(world.port) as c:
        assert c.get("/method", authority="hdr.test").header("x-testbed-instance") == "miss"
        s = c.wait_stream(c.request("POST", "/method", authority="hdr.test", body=b"x"))
        assert s.header("x-testbed-instance") == "hit"


# ---------------------------------------------------------------------------
# weighted split (S)
# ---------------------------------------------------------------------------

SPLIT_N = 2000
SPLIT_P = 0.10
SPLIT_TOL = 0.03        # 10% +- 3%


def test_weighted_split_counts(world):
    """w10:10 / w90:90 (and two weight-0 entries) over SPLIT_N requests on one
    keep-alive connection: the split is chosen per request. The tolerance is
    a binomial bound: sigma = sqrt(p(1-p)/n) = 0.67% at n=2000, so +-3% is
    4.5 sigma (a false failure about once in 150 000 runs)."""
    sigma = math.sqrt(SPLIT_P * (1 - SPLIT_P) / SPLIT_N)
    assert SPLIT_TOL >= 4.4 * sigma
    counts = {}
    with httpx.Client(base_url=f"http://{HOST}:{world.port}", timeout=10.0,
                      headers={"host": "split.test"}) as c:
        for _ in range(SPLIT_N):
            r = c.get("/split")
            assert r.status_code == 200, r.text
            name = r.headers.get("x-testbed-instance")
            counts[name] = counts.get(name, 0) + 1
    assert counts.get("w0", 0) == 0, counts          # weight 0 is never chosen
    assert set(counts) <= {"w10", "w90"}, counts
    frac = counts.get("w10", 0) / SPLIT_N
    assert abs(frac - SPLIT_P) <= SPLIT_TOL, (frac, counts)
    assert counts.get("w10", 0) + counts.get("w90", 0) == SPLIT_N


# ---------------------------------------------------------------------------
# url_rewrite (M)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("host,path,backend_path,backend_host", [
    ("rw.test", "/api/x/y?q=1", "/x/y?q=1", "backend.internal"),   # "/api/" -> "/", no "//"
    ("rw.test", "/api/", "/", "backend.internal"),
    ("rw.test", "/old/a/b", "/new/a/b", "rw.test"),
    ("rw.test", "/exact-rw?z=1", "/replaced?z=1", "rw.test"),       # full path: all replaced
    ("rw.test", "/re/42", "/num", "rw.test"),                        # regex: all replaced
    ("rw.test", "/hostonly/p?k=v", "/hostonly/p?k=v", "only.internal"),
    ("rw.test", "/v1/users", "/v2/users", "rw.test"),
    ("rw.test", "/v1", "/v2", "rw.test"),
    ("rwp.test", "/pr/a/b", "/v2/a/b", "rwp.test"),                  # path rule "/pr/*"
    ("rwp.test", "/exactpr?x", "/e2?x", "rwp.test"),                 # exact path rule
    ("rw.test:8080", "/api/a/../b", "/b", "backend.internal"),       # normalized, then rewritten
])
def test_url_rewrite(world, host, path, backend_path, backend_host):
    r = h1(world, path, host)
    assert r.status == 200, r
    assert instance(r) == "rw"
    body = r.json()
    assert body["path"] == backend_path
    assert body["headers"]["host"] == backend_host


def test_rule_without_match_rules_matches_everything(world):
    r = h1(world, "/anything/else?x=1", "rw.test")
    assert instance(r) == "rw_any"
    assert r.json()["path"] == "/anything/else?x=1"


# ---------------------------------------------------------------------------
# header actions (A): weighted backend, route rule, path matcher, url map
# ---------------------------------------------------------------------------

def test_header_actions_precedence(world):
    """Each level runs its removes, then its adds, in the order weighted
    backend (W), route rule (R), path matcher (P), url map (U); so a later
    level's replace wins and a later level's remove deletes what an earlier
    level added."""
    sent = [("x-all", "c"), ("x-append", "c"), ("x-rm-w", "1"), ("x-rm-r", "1"),
            ("x-rm-p", "1"), ("x-rm-u", "1"), ("x-keep", "1"), ("x-same", "c"),
            ("x-client", "c")]
    r = h1(world, "/ha", "ha.test", sent)
    assert r.status == 200, r
    got = r.json()
    assert got["instance"] == "ha"
    seen = got["headers"]
    # request side: what the backend sees
    assert seen.get("x-all") == "u"                      # replace at every level: U last
    assert seen.get("x-append") == "c, w, r, p, u"       # appends in level order
    for h in ("x-rm-w", "x-rm-r", "x-rm-p", "x-rm-u"):   # each level's remove
        assert h not in seen, h
    assert seen.get("x-keep") == "1"
    assert "x-w-added" not in seen                       # W added, U removed
    assert "x-r-added" not in seen                       # R added, P removed
    assert seen.get("x-late") == "u"                     # P removed, U added
    assert seen.get("x-same") == "r"                     # R: remove, then add
    assert seen.get("x-client") == "w"                   # replace drops the client's value
    assert "x-forwarded-proto" not in seen               # set by the proxy first, P removed it
    assert seen.get("x-forwarded-for")                   # untouched
    # response side: what the client sees
    assert r.header_all("x-resp-all") == ["u"]
    assert r.header_all("x-resp-append") == ["w", "r", "p", "u"]
    assert r.header_all("x-resp-w") == []                # W added, R removed
    assert r.header_all("x-resp-w-keep") == ["w"]
    assert r.header_all("x-resp-r") == []                # R added, U removed
    assert r.header_all("x-testbed-instance") == []      # backend's header, P removed
    assert r.header_all("content-type") == ["text/x-route"]   # W removed, R added


def test_header_actions_url_map_level_elsewhere(world):
    """The url map's header action applies to every route of the map; the
    others only where they are configured."""
    r = h1(world, "/", "exact.test", [("x-rm-u", "1"), ("x-rm-p", "1"), ("x-append", "c")])
    assert instance(r) == "h_exact"
    seen = r.json()["headers"]
    assert seen.get("x-all") == "u"
    assert seen.get("x-append") == "c, u"
    assert "x-rm-u" not in seen
    assert seen.get("x-rm-p") == "1"
    assert r.header_all("x-resp-all") == ["u"]
    assert r.header_all("x-resp-append") == ["u"]


# ---------------------------------------------------------------------------
# url_redirect (D1..D4): answered by the proxy itself
# ---------------------------------------------------------------------------

REDIRECTS = [
    # host, path, status, Location
    ("redir.test", "/host/a?x=1", 301, "http://new.example/host/a?x=1"),   # default code 301
    ("redir.test", "/path/a?x=1", 301, "http://redir.test/elsewhere?x=1"),
    ("redir.test:8080", "/path/a", 301, "http://redir.test:8080/elsewhere"),  # authority as received
    ("redir.test", "/pathq?x=1", 301, "http://redir.test/other?y=2"),      # its own query wins
    ("redir.test", "/prefix/a/b?q=1", 301, "http://redir.test/new/a/b?q=1"),
    ("redir.test", "/strip-me/x", 301, "http://redir.test/x"),
    ("redir.test", "/https/a?x=1", 301, "https://redir.test/https/a?x=1"),
    ("redir.test:80", "/https/a", 301, "https://redir.test/https/a"),      # ":80" dropped
    ("redir.test:8080", "/https/a", 301, "https://redir.test:8080/https/a"),
    ("redir.test", "/strip?x=1&y=2", 301, "http://redir.test/strip"),
    ("redir.test", "/all/a/b?x=1", 308, "https://new.example/b/a/b"),
    ("redir.test", "/code/MOVED_PERMANENTLY_DEFAULT", 301, "http://redir.test/done"),
    ("redir.test", "/code/FOUND", 302, "http://redir.test/done"),
    ("redir.test", "/code/SEE_OTHER", 303, "http://redir.test/done"),
    ("redir.test", "/code/TEMPORARY_REDIRECT", 307, "http://redir.test/done"),
    ("redir.test", "/code/PERMANENT_REDIRECT", 308, "http://redir.test/done"),
    ("redir.test", "/code/301", 301, "http://redir.test/done"),
    ("redir.test", "/code/302", 302, "http://redir.test/done"),
    ("redir.test", "/code/303", 303, "http://redir.test/done"),
    ("redir.test", "/code/307", 307, "http://redir.test/done"),
    ("redir.test", "/code/308", 308, "http://redir.test/done"),
    ("redir.test", "/code/FOUND?k=v", 302, "http://redir.test/done?k=v"),
    ("redirdefault.test", "/any/x?q", 307, "https://redirdefault.test/any/x?q"),  # default_url_redirect
    ("redirpath.test", "/docs/a/b", 302, "http://docs.example/manual/a/b"),       # path rule
    ("redir.test", "/https/%2e%2e/https/x", 301, "https://redir.test/https/x"),   # normalized first
]


@pytest.mark.parametrize("host,path,status,location", REDIRECTS,
                         ids=[f"{h}{p}" for h, p, _, _ in REDIRECTS])
def test_url_redirect(world, host, path, status, location):
    r = h1(world, path, host)
    assert r.status == status, r
    assert r.header("location") == location
    assert instance(r) is None                 # no backend was asked
    assert r.body == b""


def test_url_redirect_http2(world):
    with H2Conn(world.port) as c:
        s = c.get("/code/SEE_OTHER?a=1", authority="redir.test")
        assert s.status == 303
        assert s.header("location") == "http://redir.test/done?a=1"
        s = c.get("/https/z", authority="redir.test", scheme="https")
        assert s.status == 301
        assert s.header("location") == "https://redir.test/https/z"


def test_url_redirect_gets_response_header_actions(world):
    r = h1(world, "/code/FOUND", "redir.test")
    assert r.status == 302
    assert r.header_all("x-resp-all") == ["u"]          # the url map's header action


@pytest.mark.parametrize("host,path,status", [
    ("redir.test", "/code/TEMPORARY_REDIRECT", 307),    # redirect answered by the proxy
    ("norm.test", "/%zz", 400),                         # bad path answered by the proxy
])
def test_local_answer_to_request_with_body_keeps_connection_usable(world, host, path, status):
    """A POST whose body the proxy never needed (it answered itself): the
    connection must either go on serving (the body skipped) or the answer
    must say `Connection: close` before the proxy closes it (RFC 9112 9.6);
    a silent close loses a request the client already sent on it."""
    with H1Conn(world.port) as c:
        c.send(request_bytes("POST", path, host, body=b"hello")
               + request_bytes("GET", "/x/y/z", "paths.test"))
        r1 = c.read_response()
        assert r1.status == status, r1
        if r1.wants_close():
            return
        try:
            r2 = c.read_response(timeout=5.0)
        except NoResponse as e:
            pytest.fail(f"connection closed without `Connection: close` after {r1!r}: {e}")
        assert r2.status == 200 and instance(r2) == "p_exact", r2


def test_absolute_form_target(world):
    """An absolute-form target's authority is the host (not Host), and its
    path is normalized like any other."""
    r = exchange(world.port, b"GET http://norm.test/a/../admin HTTP/1.1\r\n"
                             b"Host: other.test\r\n\r\n")
    assert r.status == 200, r
    assert instance(r) == "admin"
    assert r.json()["path"] == "/admin"


def test_not_redirected_path_goes_to_default(world):
    r = h1(world, "/hostx", "redir.test")
    assert r.status == 200
    assert instance(r) == "dflt"


# ---------------------------------------------------------------------------
# path normalization (N1..N5): what is matched is what the backend receives
# ---------------------------------------------------------------------------

NORMALIZE = [
    # request target, service, path the backend receives
    ("/admin", "admin", "/admin"),
    ("/a/../admin", "admin", "/admin"),             # N3 dot segments
    ("/a/b/../../admin", "admin", "/admin"),
    ("/./admin", "admin", "/admin"),
    ("/../admin", "admin", "/admin"),               # ".." at the root stays at the root
    ("//admin", "admin", "/admin"),                 # N4 merge_slashes
    ("///admin", "admin", "/admin"),
    ("/%2e%2e/admin", "admin", "/admin"),           # N2 then N3
    ("/%2E%2E/admin", "admin", "/admin"),
    ("/x/%2e/../admin", "admin", "/admin"),
    ("/%61dmin", "admin", "/admin"),                # unreserved escape decoded
    ("/admin?x=/../y", "admin", "/admin?x=/../y"),  # the query is untouched
    ("/admin%2F..", "normsvc", "/admin%2F.."),      # %2F is not a separator
    ("/admin%2f..", "normsvc", "/admin%2F.."),      # ... and its hex is upper-cased
    ("/admin/..%2Fadmin", "normsvc", "/admin/..%2Fadmin"),
    ("/admin%5C..", "normsvc", "/admin%5C.."),      # %5C neither
    ("/%7Efoo", "normsvc", "/~foo"),                # "~" is unreserved
    ("/%7efoo", "normsvc", "/~foo"),
    ("/a%20b", "normsvc", "/a%20b"),                # reserved / other escapes kept
    ("/ADMIN", "normsvc", "/ADMIN"),                # case is kept
    ("/admin/.", "normsvc", "/admin/"),             # a final "." leaves a "/"
    ("/admin/x/..", "normsvc", "/admin/"),
]


@pytest.mark.parametrize("path,service,backend_path", NORMALIZE,
                         ids=[p for p, _, _ in NORMALIZE])
def test_path_normalization(world, path, service, backend_path):
    r = h1(world, path, "norm.test")
    assert r.status == 200, r
    assert instance(r) == service
    assert r.json()["path"] == backend_path


@pytest.mark.parametrize("path", ["/%zz", "/%2", "/a%", "/%g0/admin", "/admin%2"])
def test_bad_escape_is_400(world, path):
    r = h1(world, path, "norm.test")
    assert r.status == 400, r
    assert instance(r) is None


# N5 used to be "a backslash is no separator": /a\..\admin went to the
# backend verbatim. A backslash is not allowed in a request-target (RFC 3986)
# and some backends take it for "/", so the HTTP/1.1 codec now refuses it
# (docs/protocols.md, "HTTP/1.1 strictness"); it never reaches a backend.
@pytest.mark.parametrize("path", ["/a\\..\\admin", "/admin\\"])
def test_backslash_is_400(world, path):
    r = h1(world, path, "norm.test")
    assert r.status == 400, r
    assert instance(r) is None


def test_path_normalization_http2(world):
    with H2Conn(world.port) as c:
        s = c.get("/a/..//%2e/admin", authority="norm.test")
        assert s.status == 200
        assert s.header("x-testbed-instance") == "admin"
        assert s.json()["path"] == "/admin"
        s = c.get("/%zz", authority="norm.test")
        assert s.status == 400
        # N1: not origin-form. A malformed HTTP/2 request may also be refused
        # with RST_STREAM PROTOCOL_ERROR (RFC 9113 8.1.1); either way no backend.
        s = c.get("admin", authority="norm.test")
        assert s.status == 400 or s.reset_code is not None, s
        assert s.header("x-testbed-instance") is None


@pytest.mark.parametrize("target", ["admin", "a/../admin"])
def test_path_not_origin_form_is_400(world, target):
    r = h1(world, target, "norm.test")
    assert r.status == 400, r
    assert instance(r) is None
