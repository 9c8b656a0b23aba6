"""`switchyard diff OLD NEW --requests FILE` (docs/tools.md): which logged
requests change outcome between two configs.

OLD and NEW below differ in one way per path prefix, so a request file with
a known number of requests per prefix gives known groups and counts: a
service, a split's weights, a path rewrite, a host rewrite, a redirect, a
local reply (a redirect whose Location cannot be built: 500), a header-based
rule; and two prefixes whose outcome stays the same (one of them a split
whose weights change but not their shares). The file mixes access log lines
and text requests, and invalid lines of every kind, which are counted and
never stop the run. A real access log, written by a proxy running OLD,
diffs clean against OLD itself (the log keeps the client's path, not the
rewritten one) and shows NEW's changes. A 100k-line log is diffed in the same
memory as a 1k-line one.
"""

import json
import os
import re
import subprocess
import time

import pytest

from conftest import HOST, binary, child_env, free_ports, run_switchyard, sanitizer_report

CONFIG = """\
listeners:
  - {name: public, address: "%(listen)s", protocol: HTTP, url_map: site}
access_log: {enabled: true, path: "-", format: json}
url_maps:
  - name: site
    default_service: legacy
    host_rules: [{hosts: ["*"], path_matcher: site}]
    path_matchers:
      - name: site
        default_service: legacy
        route_rules:
%(rules)s
backend_services:
  - {name: legacy, endpoints: [{address: "%(legacy)s"}]}
  - {name: a, endpoints: [{address: "%(a)s"}]}
  - {name: b, endpoints: [{address: "%(b)s"}]}
  - {name: c, endpoints: [{address: "%(c)s"}]}
"""

OLD_RULES = """\
          - {priority: 10, match_rules: [{prefix_match: /svc/}], service: a}
          - priority: 20
            match_rules: [{prefix_match: /split/}]
            route_action: {weighted_backend_services: [{backend_service: a, weight: 50},
                                                       {backend_service: b, weight: 50}]}
          - priority: 21
            match_rules: [{prefix_match: /same-share/}]
            route_action: {weighted_backend_services: [{backend_service: a, weight: 50},
                                                       {backend_service: b, weight: 50}]}
          - priority: 30
            match_rules: [{prefix_match: /rw/}]
            service: a
            route_action: {url_rewrite: {path_prefix_rewrite: /v1/}}
          - priority: 40
            match_rules: [{prefix_match: /host/}]
            service: a
            route_action: {url_rewrite: {host_rewrite: old.internal}}
          - {priority: 50, match_rules: [{prefix_match: /redir/}], service: a}
          - {priority: 60, match_rules: [{prefix_match: /long/}], service: a}
          - priority: 70
            match_rules: [{prefix_match: /canary/, header_matches: [{header_name: x-canary, exact_match: "true"}]}]
            service: b
          - {priority: 80, match_rules: [{prefix_match: /same/}], service: a}
"""

NEW_RULES = """\
          - {priority: 10, match_rules: [{prefix_match: /svc/}], service: c}
          - priority: 20
            match_rules: [{prefix_match: /split/}]
            route_action: {weighted_backend_services: [{backend_service: a, weight: 20},
                                                       {backend_service: b, weight: 80}]}
          - priority: 21
            match_rules: [{prefix_match: /same-share/}]
            route_action: {weighted_backend_services: [{backend_service: a, weight: 1},
                                                       {backend_service: c, weight: 0},
                                                       {backend_service: b, weight: 1}]}
          - priority: 30
            match_rules: [{prefix_match: /rw/}]
            service: a
            route_action: {url_rewrite: {path_prefix_rewrite: /v2/}}
          - priority: 40
            match_rules: [{prefix_match: /host/}]
            service: a
            route_action: {url_rewrite: {host_rewrite: new.internal}}
          - {priority: 50, match_rules: [{prefix_match: /redir/}], url_redirect: {host_redirect: new.example}}
          - {priority: 60, match_rules: [{prefix_match: /long/}], url_redirect: {prefix_redirect: /x/}}
          - priority: 70
            match_rules: [{prefix_match: /canary/, header_matches: [{header_name: x-canary, exact_match: "true"}]}]
            service: c
          - {priority: 80, match_rules: [{prefix_match: /same/}], service: a}
"""


def config_text(rules, listen="127.0.0.1:18100", addrs=None):
    addrs = addrs or {n: "127.0.0.1:9" for n in ("legacy", "a", "b", "c")}
    return CONFIG % dict(rules=rules, listen=listen, **addrs)


@pytest.fixture
def configs(tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(config_text(OLD_RULES))
    new.write_text(config_text(NEW_RULES))
    return old, new


def log_line(path, method="GET", authority="shop.example", listener="public"):
    return json.dumps({"time": "2026-11-22T01:00:42.927Z", "client": "127.0.0.1",
                       "listener": listener, "method": method, "authority": authority,
                       "path": path, "protocol": "HTTP/1.1", "status": 200, "bytes_in": 0,
                       "bytes_out": 309, "duration_ms": 0.3, "backend_service": "a",
                       "endpoint": "127.0.0.1:9", "request_id": "x", "attempts": 1,
                       "tries": "", "response_flags": "-"})


# The request file: (line text, kind) in order. Kinds: a change group name,
# "same" (a request whose outcome does not change), "invalid", "" (not a request).
def request_lines():
    out = []
    out += [(log_line(f"/svc/{i}?q={i}"), "svc") for i in range(5)]
    out += [(log_line(f"/split/{i}"), "split") for i in range(4)]
    out += [(log_line(f"/same-share/{i}"), "same") for i in range(3)]
    out += [("{not json", "invalid")]
    out += [(log_line(f"/rw/{i}"), "rw") for i in range(3)]
    out += [('{"path": "/x", "listener": "public"}', "invalid")]          # no method
    out += [(log_line(f"/host/{i}", authority=f"h{i}.example"), "host") for i in range(2)]
    out += [(log_line(f"/redir/{i}"), "redir") for i in range(2)]
    out += [("", ""), ("x-stray: 1", "invalid")]                        # a header, no request
    out += [("GET http://shop.example:18100/long/" + "a" * 5000, "long"), ("", "")]
    out += [("# a comment line", "")]
    out += [("POST /canary/1 HTTP/1.1", "canary"), ("Host: shop.example", ""),
            ("X-Canary: true", ""), ("", "")]
    out += [("http://shop.example/canary/2", "canary"), ("x-canary: true", "")]   # a bare URL
    out += [("GET http://shop.example/canary/3", "same"), ("x-canary: false", ""), ("", "")]
    out += [("GET ftp://nope/", "invalid"), ("x-after-bad: 1", "")]        # its headers skipped
    out += [("{" + '"a": "' + "x" * 70000 + '"}', "invalid")]              # over 64 KiB
    out += [('{"method": "GET", "path": "/same/\x00"}', "invalid")]         # a NUL byte
    out += [('{"method":"GET","path":"nope","listener":"public"}', "invalid")]
    out += [(log_line("/svc/9", listener="elsewhere"), "invalid")]         # no such listener
    out += [(log_line(f"/same/{i}"), "same") for i in range(6)]
    return out


EXPECTED_GROUPS = {
    # kind: (changes, old action, new action, count)
    "svc": (["service"], "service a", "service c", 5),
    "split": (["weights"], "split a:50,b:50", "split a:20,b:80", 4),
    "rw": (["path"], "service a", "service a", 3),
    "host": (["host"], "service a", "service a", 2),
    "redir": (["redirect"], "service a", "redirect 301", 2),
    "canary": (["service"], "service b", "service c", 2),
    "long": (["local_reply"], "service a", "local reply 500", 1),
}


def write_requests(path, lines):
    with open(path, "wb") as f:
        for text, _ in lines:
            f.write(text.encode("latin-1") + b"\n")


def run_diff(old, new, requests, *args, input=None):
    r = run_switchyard(["diff", old, new, "--requests", requests, *args], input=input,
                       timeout=120)
    assert not sanitizer_report(r.stderr), r.stderr
    return r


@pytest.fixture
def requests_file(tmp_path):
    p = tmp_path / "requests.txt"
    lines = request_lines()
    write_requests(p, lines)
    return p, lines


def test_groups_and_counts(configs, requests_file):
    old, new = configs
    req, lines = requests_file
    r = run_diff(old, new, req, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    kinds = [k for _, k in lines]
    n_requests = sum(1 for k in kinds if k and k != "invalid")
    n_changed = sum(1 for k in kinds if k in EXPECTED_GROUPS)
    assert out["lines"] == len(lines)
    assert (out["requests"], out["changed"], out["unchanged"]) == (
        n_requests, n_changed, n_requests - n_changed) == (29, 19, 10)
    assert out["other_changes"] == 0
    got = {(tuple(g["changes"]), g["old"]["action"], g["new"]["action"]): g for g in out["groups"]}
    assert len(got) == len(EXPECTED_GROUPS)
    for kind, (changes, old_action, new_action, count) in EXPECTED_GROUPS.items():
        g = got[(tuple(changes), old_action, new_action)]
        assert g["count"] == count, kind
        first = 1 + kinds.index(kind)           # the sample is the group's first request
        assert g["sample"]["line"] == first, kind
    counts = [g["count"] for g in out["groups"]]
    assert counts == sorted(counts, reverse=True)
    # what each side did, for the sample
    rw = got[(("path",), "service a", "service a")]
    assert rw["old"]["detail"] == "path /v1/0 host shop.example"
    assert rw["new"]["detail"] == "path /v2/0 host shop.example"
    assert rw["old"]["rule"] == rw["new"]["rule"] == "url_map site, path_matcher site: route_rule priority 30"
    host = got[(("host",), "service a", "service a")]
    assert (host["old"]["detail"], host["new"]["detail"]) == (
        "path /host/0 host old.internal", "path /host/0 host new.internal")
    redir = got[(("redirect",), "service a", "redirect 301")]
    assert redir["new"]["detail"] == "Location http://new.example/redir/0"
    svc = got[(("service",), "service a", "service c")]
    assert svc["sample"]["request"] == "GET http://shop.example/svc/0?q=0 (listener public)"
    canary = got[(("service",), "service b", "service c")]
    assert canary["sample"]["request"] == "POST http://shop.example/canary/1 [x-canary: true]"


def test_invalid_lines_counted(configs, requests_file):
    old, new = configs
    req, lines = requests_file
    out = json.loads(run_diff(old, new, req, "--json").stdout)
    invalid = [i + 1 for i, (_, k) in enumerate(lines) if k == "invalid"]
    assert out["invalid"] == len(invalid) == 8
    samples = out["invalid_samples"]
    assert [s["line"] for s in samples] == invalid[:5]       # the first five, with reasons
    assert samples[0]["reason"] == "bad JSON: a string was expected"
    assert samples[1]["reason"] == 'an access log line needs "method" and "path"'
    assert samples[2]["reason"] == "a header line without a request line before it"
    assert samples[3]["reason"] == "not an http:// or https:// URL"
    assert samples[4]["reason"] == "a line longer than 64 KiB"
    text = run_diff(old, new, req).stdout
    assert "; 8 invalid lines\n" in text
    assert f"  invalid: line {invalid[0]}: bad JSON: a string was expected\n" in text


def test_text_report(configs, requests_file):
    old, new = configs
    req, _ = requests_file
    r = run_diff(old, new, req)
    assert r.returncode == 0
    t = r.stdout
    assert re.match(rf"switchyard diff: {re.escape(str(old))} \(version [0-9a-f]{{16}}\) -> "
                    rf"{re.escape(str(new))} \(version [0-9a-f]{{16}}\)\n", t)
    assert "requests: 29 read from" in t and "; 19 changed, 10 unchanged; 8 invalid lines" in t
    assert re.search(r"^ +5  service a -> service c  \(changes: service\)$", t, re.M)
    assert re.search(r"^ +4  split a:50,b:50 -> split a:20,b:80  \(changes: weights\)$", t, re.M)
    assert re.search(r"^ +1  service a -> local reply 500  \(changes: local_reply\)$", t, re.M)
    assert "            old rule: url_map site, path_matcher site: route_rule priority 10\n" in t
    assert "            e.g. line 1: GET http://shop.example/svc/0?q=0 (listener public)\n" in t
    assert t.endswith("total: 19 of 29 requests change outcome (65.52%)\n")


def test_fail_on_change(configs, requests_file, tmp_path):
    old, new = configs
    req, _ = requests_file
    assert run_diff(old, new, req).returncode == 0
    assert run_diff(old, new, req, "--fail-on-change").returncode == 2
    same = run_diff(old, old, req, "--fail-on-change")
    assert same.returncode == 0, same.stdout
    assert "; 0 changed, 29 unchanged;" in same.stdout
    assert same.stdout.endswith("total: 0 of 29 requests change outcome (0.00%)\n")
    # unchanged requests only: no change even with the flag
    only_same = tmp_path / "same.txt"
    write_requests(only_same, [l for l in request_lines() if l[1] in ("same", "")])
    assert run_diff(old, new, only_same, "--fail-on-change").returncode == 0


def test_max_groups_counts_the_rest(configs, requests_file):
    old, new = configs
    req, _ = requests_file
    out = json.loads(run_diff(old, new, req, "--json", "--max-groups", "3").stdout)
    assert len(out["groups"]) == 3
    # the first three kinds met are kept: svc (5), split (4), rw (3)
    assert sorted(g["count"] for g in out["groups"]) == [3, 4, 5]
    assert out["other_changes"] == 19 - 12
    t = run_diff(old, new, req, "--max-groups", "3").stdout
    assert re.search(r"^ +7  other changes \(more kinds than --max-groups 3\)$", t, re.M)


def test_requests_from_stdin(configs):
    old, new = configs
    r = run_diff(old, new, "-", "--json", input="GET http://a/svc/1\n" + log_line("/svc/2") + "\n")
    out = json.loads(r.stdout)
    assert (out["requests"], out["changed"]) == (2, 2)


def test_errors(configs, tmp_path):
    old, new = configs
    bad = tmp_path / "bad.yaml"
    bad.write_text(config_text(OLD_RULES).replace("service: a}", "service: nope}", 1))
    req = tmp_path / "r.txt"
    req.write_text("GET http://a/\n")
    r = run_diff(old, bad, req)
    assert r.returncode == 1 and r.stdout == ""
    assert re.search(rf"^{re.escape(str(bad))}:\d+:\d+: .*nope", r.stderr, re.M), r.stderr
    r = run_diff(old, new, tmp_path / "missing.txt")
    assert r.returncode == 1 and "missing.txt" in r.stderr
    r = run_switchyard(["diff", old, new])
    assert r.returncode == 1 and "--requests FILE is required" in r.stderr
    r = run_switchyard(["diff", old, "--requests", req])
    assert r.returncode == 1 and "OLD.yaml and NEW.yaml are required" in r.stderr
    r = run_switchyard(["diff", old, new, "--requests", req, "--max-groups", "0"])
    assert r.returncode == 1 and "--max-groups" in r.stderr
    r = run_switchyard(["diff", "--help"])
    assert r.returncode == 0 and "2 changes with --fail-on-change" in r.stdout


def test_real_access_log(testbed, proxy, tmp_path):
    """A proxy running OLD writes the log; replayed against OLD nothing changes
    (the log keeps what the client sent, not the rewritten path or host);
    against NEW the changes show."""
    tbs = {n: testbed(n) for n in ("legacy", "a", "b", "c")}
    (port,) = free_ports(1)
    addrs = {n: tb.addr for n, tb in tbs.items()}
    px = proxy(config_text(OLD_RULES, f"{HOST}:{port}", addrs), expect_ports=[port])
    sent = ["/svc/1", "/rw/a/b?x=1", "/host/z", "/same/1", "/split/1", "/redir/q", "/nothing"]
    import http.client
    for path in sent:
        c = http.client.HTTPConnection(HOST, port, timeout=10)
        c.request("GET", path, headers={"Host": "shop.example"})
        assert c.getresponse().status == 200, path
        c.close()
    entries = px.access_log(min_entries=len(sent))
    assert len(entries) == len(sent)
    rw = [e for e in entries if e["path"].startswith("/rw/")][0]
    assert rw["path"] == "/rw/a/b?x=1" and rw["backend_service"] == "a"   # the client's path
    host = [e for e in entries if e["path"] == "/host/z"][0]
    assert host["authority"] == "shop.example"                           # not old.internal
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(config_text(OLD_RULES, f"{HOST}:{port}", addrs))
    new.write_text(config_text(NEW_RULES, f"{HOST}:{port}", addrs))
    out = json.loads(run_diff(old, old, px.stdout_path, "--json", "--fail-on-change").stdout)
    assert (out["requests"], out["changed"], out["invalid"]) == (len(sent), 0, 0)
    r = run_diff(old, new, px.stdout_path, "--json", "--fail-on-change")
    assert r.returncode == 2
    out = json.loads(r.stdout)
    assert out["changed"] == 5 and out["invalid"] == 0
    changes = sorted(c for g in out["groups"] for c in g["changes"])
    assert changes == ["host", "path", "redirect", "service", "weights"]


def peak_rss_kib(args, timeout=120):
    """Run switchyard with args; (exit status, its peak resident set in KiB).

    Read from /proc/PID/status (VmHWM, the high-water mark of the process's
    own memory once it runs switchyard), polled until it exits: VmHWM only
    grows and the last phase (the report) allocates next to nothing, so the
    last sample is the peak. Not wait4's ru_maxrss: Linux carries the
    pre-exec high-water mark into it, which for a child of pytest is
    pytest's own size."""
    peak = 0
    p = subprocess.Popen([str(binary("switchyard")), *map(str, args)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=child_env())
    status = f"/proc/{p.pid}/status"
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.001)):
        try:
            with open(status) as f:
                fields = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
            if fields.get("Name", "").strip() == "switchyard" and "VmHWM" in fields:
                peak = max(peak, int(fields["VmHWM"].split()[0]))
        except (OSError, ValueError):
            pass
        if p.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.001)   # the sampling interval
    if p.poll() is None:
        p.kill()
    err = p.stderr.read().decode(errors="replace")
    p.wait(timeout=10)
    assert not sanitizer_report(err), err
    return p.returncode, peak


def test_large_log_bounded_memory(configs, tmp_path):
    """100k access log lines (~80 MiB) are diffed in the memory 1k lines take:
    nothing grows with the file (lines stream through one buffer, groups are
    capped)."""
    old, new = configs
    paths = ["/svc/%d", "/split/%d", "/rw/%d/x", "/same/%d", "/nothing/%d", "/host/%d"]

    def write_log(path, n):
        with open(path, "w") as f:
            for i in range(n):
                f.write(log_line(paths[i % len(paths)] % i + "?pad=" + "p" * (600 + i % 200))
                        + "\n")

    small, large = tmp_path / "small.log", tmp_path / "large.log"
    write_log(small, 1000)
    write_log(large, 100000)
    size_kib = large.stat().st_size // 1024
    assert size_kib > 60 * 1024
    rc1, rss_small = peak_rss_kib(["diff", old, new, "--requests", small])
    rc2, rss_large = peak_rss_kib(["diff", old, new, "--requests", large])
    assert rc1 == rc2 == 0
    assert rss_small > 1024 and rss_large > 1024      # measured
    # a few MiB of slack for the allocator; far below holding the log (size_kib)
    assert rss_large <= rss_small * 1.25 + 4096, (rss_small, rss_large)
    assert rss_large < size_kib / 2, (rss_large, size_kib)
    out = json.loads(run_diff(old, new, large, "--json").stdout)
    assert out["requests"] == 100000 and out["invalid"] == 0
    assert out["changed"] == sum(1 for i in range(100000) if i % 6 in (0, 1, 2, 5))
