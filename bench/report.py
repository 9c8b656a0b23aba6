#!/usr/bin/python3
"""Helpers for scripts/bench.sh (`make bench`).

  report.py procstat PID...
      "TICKS HWM_KB NPROC" for the PIDs and all their descendants: utime+stime summed
      over the process tree (clock ticks, /proc/PID/stat), and the largest
      VmHWM (peak RSS, kB) among those processes (the worker, for proxies with
      a master process).
  report.py sysstat
      busy clock ticks of the whole machine so far (/proc/stat, all CPUs:
      user+nice+system+irq+softirq+steal)
  report.py rusage FILE CMD...
      run CMD, write its CPU time (user+sys of CMD and its waited-for
      descendants, in clock ticks) to FILE, exit with its status
  report.py record RESULTS key=value...
      parse one load-generator run (tool=wrk|h2load, out=FILE, log=FILE) and
      append one JSON line to RESULTS; prints a one-line summary. With
      strace=FILE strace_out=FILE: the `strace -f -c` summary of a second run
      and that run's load-generator output -> syscalls per 2xx answer, top 3.
      With idle=FILE (bench/idle_conns.py's JSON): an idle-memory record.
  report.py table RESULTS [--markdown]
      print the result table with switchyard/peer ratios.
"""
import json
import os
import re
import sys

SCENARIOS = [
    ("h1", "(a) HTTP/1.1 keep-alive -> HTTP/1.1 backend (wrk -t1 -c50)"),
    ("h2c", "(b) h2c -> h2c backend (h2load -c10 -m32)"),
    ("tls", "(c) TLS h2 (ALPN) -> HTTP/1.1 backend (h2load -c10 -m32)"),
    ("h2c-h1", "(d) h2c -> HTTP/1.1 backend (h2load -c10 -m32)"),
]
IDLE_SCENARIOS = [
    ("idle-h1", "HTTP/1.1: each connection completed one keep-alive request"),
    ("idle-h2", "h2c prior knowledge: preface, SETTINGS exchange and one request each"),
]
PROXIES = ["switchyard", "switchyard-w2", "haproxy", "nghttpx", "nginx", "direct"]


# ---- /proc --------------------------------------------------------------------
def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    # comm may contain spaces and parentheses: split after the last ')'
    rest = s[s.rindex(")") + 2:].split()
    return rest  # rest[0] = state (field 3), rest[1] = ppid (field 4)


def _tree(root):
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(_stat_fields(d)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [int(root)]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def procstat(roots):
    ticks, hwm, n = 0, 0, 0
    for p in [p for r in roots for p in _tree(r)]:
        try:
            f = _stat_fields(p)
            ticks += int(f[11]) + int(f[12])  # utime (14), stime (15)
            with open(f"/proc/{p}/status") as st:
                for line in st:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
            n += 1
        except (OSError, ValueError, IndexError):
            continue
    print(ticks, hwm, n)


def sysstat():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    print(v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0))


def rusage(path, cmd):
    import resource
    import subprocess
    try:
        rc = subprocess.call(cmd)
    except OSError as e:
        sys.stderr.write(f"{cmd[0]}: {e.strerror}\n")
        rc = 127
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(path, "w") as f:
        f.write(f"{round((ru.ru_utime + ru.ru_stime) * os.sysconf('SC_CLK_TCK'))}\n")
    return rc if rc >= 0 else 128 - rc


# ---- load generator output ------------------------------------------------------
_UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1e6}


def _dur_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNIT_US[m.group(2)] if m else None


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m),", out)
    if m:
        r["requests"] = int(m.group(1))
        r["duration_s"] = float(m.group(2)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            r[key] = _dur_us(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["errors"] = non2xx + (sum(int(x) for x in m.groups()) if m else 0)
    if "requests" in r:
        r["ok_requests"] = max(0, r["requests"] - non2xx)
    return r


def _pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return float(sorted_vals[k])


def parse_h2load(out, log):
    r = {}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    if m:
        r["duration_s"] = float(m.group(1))
        r["rps"] = float(m.group(2))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    m2 = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        r["requests"] = int(m.group(3))
        r["errors"] = int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    if m2:
        r["ok_requests"] = int(m2.group(1))
        r["errors"] = r.get("errors", 0) + sum(int(x) for x in m2.groups()[1:])
    m = re.search(r"Application protocol: (\S+)", out)
    r["alpn"] = m.group(1) if m else None
    m = re.search(r"TLS Protocol: (\S+)\s+Cipher: (\S+)", out)
    if m:
        r["tls"] = f"{m.group(1)} {m.group(2)}"
    # h2load prints min/max/mean/sd only: percentiles come from --log-file
    # (one line per completed request: start time, status, duration in us).
    durs = []
    try:
        with open(log) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1].startswith("2"):
                    durs.append(int(parts[2]))
    except OSError:
        pass
    durs.sort()
    r["p50_us"] = _pct(durs, 50)
    r["p99_us"] = _pct(durs, 99)
    r["logged"] = len(durs)
    return r


def parse_strace(path):
    """`strace -c -S calls` summary -> (total calls, [(syscall, calls), ...] by calls)"""
    calls, total = [], None
    try:
        with open(path, errors="replace") as f:
            for line in f:
                p = line.split()
                if len(p) < 5 or not p[0][0].isdigit():
                    continue
                try:
                    n = int(p[3])
                except ValueError:
                    continue
                if p[-1] == "total":
                    total = n
                else:
                    calls.append((p[-1], n))
    except OSError:
        return None, []
    calls.sort(key=lambda x: -x[1])
    return total, calls


def _add_strace(rec, kv):
    total, calls = parse_strace(kv["strace"])
    try:
        with open(kv.get("strace_out", ""), errors="replace") as f:
            out = f.read()
    except OSError:
        out = ""
    r = parse_wrk(out) if kv["tool"] == "wrk" else parse_h2load(out, "")
    ok = r.get("ok_requests") or 0
    if total is None or ok == 0:
        rec["syscalls_note"] = "strace run: " + ("no summary" if total is None else "no 2xx answers")
        return
    rec["strace_ok"] = ok
    rec["strace_calls"] = total
    rec["syscalls_per_req"] = total / ok
    rec["syscalls_top"] = [[name, n / ok] for name, n in calls[:3]]


def record(path, kv):
    rec = {"proxy": kv["proxy"], "scenario": kv["scenario"], "round": int(kv.get("round") or 1),
           "status": kv.get("status", "ok"), "reason": kv.get("reason", "")}
    if rec["status"] == "ok" and kv.get("idle"):
        try:
            with open(kv["idle"]) as f:
                rec.update(json.load(f))
        except (OSError, ValueError) as e:
            rec["status"], rec["reason"] = "na", f"no idle_conns.py result ({e})"
        if rec["status"] == "ok" and rec.get("open_after", 0) < rec.get("n", 0):
            rec["reason"] = f"only {rec['open_after']} of {rec['n']} connections still open"
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print("    " + _summary(rec), flush=True)
        return
    if rec["status"] == "ok":
        try:
            with open(kv["out"], errors="replace") as f:
                out = f.read()
        except OSError as e:
            out = ""
            rec["status"], rec["reason"] = "na", f"no load-generator output ({e.strerror})"
        if rec["status"] == "ok":
            r = parse_wrk(out) if kv["tool"] == "wrk" else parse_h2load(out, kv.get("log", ""))
            rec.update(r)
            ticks = int(kv["cpu1"]) - int(kv["cpu0"])
            hz = int(kv.get("hz", "100"))
            rec["cpu_s"] = ticks / hz
            rec["wall_s"] = float(kv.get("wall", "0") or 0)
            if "sys1" in kv and rec["wall_s"] > 0:
                # CPU used during the run by processes other than the proxy,
                # the backends and the load generator: background noise.
                other = (int(kv["sys1"]) - int(kv["sys0"]) - ticks
                         - (int(kv["bk1"]) - int(kv["bk0"])) - int(kv.get("lg") or 0))
                rec["background_cpu"] = max(0.0, other / hz / rec["wall_s"])
            rec["rss_kb"] = int(kv.get("hwm", "0") or 0)
            if kv.get("be_conns"):
                # new connections the HTTP/1.1 backend accepted during the run
                rec["backend_conns"] = int(kv["be_conns"])
                rec["backend_requests"] = int(kv["be_reqs"])
            ok = rec.get("ok_requests") or 0
            if rec.get("duration_s"):  # count successful (2xx) answers only
                rec["rps"] = ok / rec["duration_s"]
            if not rec.get("rps") or ok == 0:
                rec["status"] = "na"
                tail = " / ".join(l.strip() for l in out.strip().splitlines()[-3:])
                rec["reason"] = f"no successful requests ({tail[:160]})"
            else:
                rec["cpu_us_per_req"] = rec["cpu_s"] * 1e6 / ok
                if rec["wall_s"] > 0:
                    rec["cpu_util"] = rec["cpu_s"] / rec["wall_s"]
                if kv["scenario"] == "tls" and rec.get("alpn") not in (None, "h2"):
                    rec["status"] = "na"
                    rec["reason"] = f"negotiated {rec.get('alpn')} instead of h2"
                elif rec.get("errors"):
                    total = rec.get("requests") or ok
                    rec["reason"] = f"{rec['errors']} errors / non-2xx of {total} requests"
                if rec["status"] == "ok" and kv.get("strace"):
                    _add_strace(rec, kv)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print("    " + _summary(rec), flush=True)


# ---- table ----------------------------------------------------------------------
def _fmt_lat(us):
    if us is None:
        return "-"
    return f"{us:.0f}us" if us < 1000 else f"{us / 1000:.2f}ms"


def _summary(r):
    if r["status"] != "ok":
        return f"{r['proxy']:<10} {r['scenario']:<4} n/a: {r['reason']}"
    if r["scenario"].startswith("idle-"):
        s = (f"{r['proxy']:<10} {r['scenario']:<4} {r['n']} idle connections: RSS "
             f"{r['rss_before_kb']} -> {r['rss_after_kb']} KiB, {r['kib_per_conn']:.2f} KiB/conn")
        return s + (f"  ({r['reason']})" if r.get("reason") else "")
    s = (f"{r['proxy']:<10} {r['scenario']:<4} {r['rps']:>9.0f} req/s  p50 {_fmt_lat(r.get('p50_us'))}"
         f"  p99 {_fmt_lat(r.get('p99_us'))}")
    if r["proxy"] != "direct":
        s += (f"  {r['cpu_us_per_req']:.2f} cpu-us/req  cpu {100 * r.get('cpu_util', 0):.0f}%"
              f"  rss {r['rss_kb'] / 1024:.1f}MiB")
    if "syscalls_per_req" in r:
        s += f"  {r['syscalls_per_req']:.2f} syscalls/req"
    if "backend_conns" in r:
        s += f"  be-conns {r['backend_conns']}"
    if "background_cpu" in r:
        s += f"  bg {100 * r['background_cpu']:.0f}%"
    if r.get("reason"):
        s += f"  ({r['reason']})"
    return s


def _ratio(a, b):
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}"


def _better(new, old):
    if (new["status"] == "ok") != (old["status"] == "ok"):
        return new["status"] == "ok"
    return new.get("background_cpu", 9e9) < old.get("background_cpu", 9e9)


def _render(head, rows, markdown, left_cols):
    """Rows as a Markdown table, or as aligned text (the first `left_cols`
    columns left-aligned, the others right-aligned)."""
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return out + ["| " + " | ".join(c if c else " " for c in row) + " |" for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    return ["  ".join(c.ljust(w) if i < left_cols else c.rjust(w)
                      for i, (c, w) in enumerate(zip(cells, widths)))
            for cells in [head, ["-" * w for w in widths]] + rows]


def table(path, markdown=False):
    # With several rounds, keep per proxy x scenario the successful run with
    # the least background CPU (the least disturbed by other processes).
    recs = {}
    rounds = 1
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            rounds = max(rounds, r.get("round", 1))
            key = (r["proxy"], r["scenario"])
            old = recs.get(key)
            if old is None or _better(r, old):
                recs[key] = r
    head = ["scenario", "proxy", "req/s", "p50", "p99", "cpu us/req", "syscalls/req", "proxy cpu",
            "peak RSS", "new be conns", "bg cpu", "sy/peer rps", "sy/peer cpu/req", "sy/peer p99"]
    rows, notes = [], []
    for sc, _title in SCENARIOS:
        sy = recs.get(("switchyard", sc))
        sy_ok = sy if sy and sy["status"] == "ok" else None
        for px in PROXIES:
            r = recs.get((px, sc))
            if r is None:
                continue
            name = "(backend direct)" if px == "direct" else px
            if r["status"] != "ok":
                notes.append(f"{sc}/{px}: n/a: {r['reason']}")
                rows.append([sc, name, "n/a"] + [""] * (len(head) - 3))
                continue
            flag = ""
            if r.get("reason"):
                flag = " *"
                notes.append(f"{sc}/{px}: {r['reason']}")
            direct = px == "direct"
            row = [sc, name, f"{r['rps']:.0f}{flag}", _fmt_lat(r.get("p50_us")),
                   _fmt_lat(r.get("p99_us")),
                   "" if direct else f"{r['cpu_us_per_req']:.2f}",
                   f"{r['syscalls_per_req']:.2f}" if "syscalls_per_req" in r else "-",
                   "" if direct else f"{100 * r.get('cpu_util', 0):.0f}%",
                   "" if direct else f"{r['rss_kb'] / 1024:.1f} MiB",
                   str(r["backend_conns"]) if "backend_conns" in r else "-",
                   f"{100 * r['background_cpu']:.0f}%" if "background_cpu" in r else "-"]
            if px in ("switchyard", "switchyard-w2", "direct") or not sy_ok:
                row += ["", "", ""]
            else:
                row += [_ratio(sy_ok["rps"], r["rps"]),
                        _ratio(sy_ok["cpu_us_per_req"], r["cpu_us_per_req"]),
                        _ratio(sy_ok.get("p99_us"), r.get("p99_us"))]
            rows.append(row)
    if not rows:  # only the idle scenarios were run
        idle_table(recs, markdown)
        return
    out = _render(head, rows, markdown, 2)
    if not markdown:  # a blank line between scenarios
        lines, prev = out[:2], None
        for row, text in zip(rows, out[2:]):
            if prev is not None and row[0] != prev:
                lines.append("")
            prev = row[0]
            lines.append(text)
        out = lines
    print("\n".join(out))
    print()
    for sc, title in SCENARIOS:
        print(f"  {sc:<4} = {title}")
    if rounds > 1:
        print(f"  {rounds} rounds: each row is the round with the least background CPU")
    print("  ratios are switchyard / peer: rps > 1, cpu/req < 1 and p99 < 1 favour switchyard")
    print("  proxy cpu = proxy CPU time / wall time of the run (100% = one core saturated)")
    print("  new be conns = connections the HTTP/1.1 backend accepted during the run (- for h2c)")
    print("  bg cpu = CPU used by other processes on the machine during the run (% of one core): noise")
    print("  syscalls/req = system calls of every process/thread of the proxy (strace -f -c) in a second,"
          " short run / its 2xx answers (strace slows the proxy; the calls per request are what counts)")
    tops = []
    for sc, _title in SCENARIOS:
        for px in PROXIES:
            r = recs.get((px, sc))
            if r and r.get("syscalls_top"):
                tops.append(f"    {sc:<6} {px:<13} " + ", ".join(f"{n} {c:.2f}" for n, c in r["syscalls_top"]))
            elif r and r.get("syscalls_note"):
                tops.append(f"    {sc:<6} {px:<13} {r['syscalls_note']}")
    if tops:
        print("  top 3 system calls per request:")
        print("\n".join(tops))
    w2 = []
    for sc, _title in SCENARIOS:
        a, b = recs.get(("switchyard-w2", sc)), recs.get(("switchyard", sc))
        if a and b and a["status"] == "ok" and b["status"] == "ok":
            w2.append(f"{sc} cpu/req {_ratio(a['cpu_us_per_req'], b['cpu_us_per_req'])}, "
                      f"req/s {_ratio(a['rps'], b['rps'])}")
    if w2:
        print("  switchyard-w2 = --workers 2 on CPUs 0,1 (shared with client and backends);"
              " w2/w1: " + "; ".join(w2))
    ciphers = {r["proxy"]: r["tls"] for r in recs.values() if r.get("tls")}
    if ciphers:
        if len(set(ciphers.values())) == 1:
            print(f"  tls: {next(iter(ciphers.values()))} for every proxy")
        else:
            print("  tls: " + ", ".join(f"{k} {v}" for k, v in ciphers.items()))
    for n in notes:
        print(f"  {n}")
    idle_table(recs, markdown)


def idle_table(recs, markdown=False):
    """memory per idle client connection (bench/idle_conns.py), one row per proxy"""
    scs = [sc for sc, _ in IDLE_SCENARIOS]
    if not any(sc == k[1] for sc in scs for k in recs):
        return
    head = ["proxy"]
    for sc in scs:
        head += [f"{sc} KiB/conn", f"{sc} RSS before->after", f"{sc} sy/peer"]
    rows, notes = [], []
    for px in PROXIES:
        if not any((px, sc) in recs for sc in scs):
            continue
        row = [px]
        for sc in scs:
            r, sy = recs.get((px, sc)), recs.get(("switchyard", sc))
            if r is None:
                row += ["", "", ""]
                continue
            if r["status"] != "ok":
                notes.append(f"{sc}/{px}: n/a: {r['reason']}")
                row += ["n/a", "", ""]
                continue
            if r.get("reason"):
                notes.append(f"{sc}/{px}: {r['reason']}")
            row += [f"{r['kib_per_conn']:.2f}",
                    f"{r['rss_before_kb'] / 1024:.1f} -> {r['rss_after_kb'] / 1024:.1f} MiB",
                    "" if px == "switchyard" or not sy or sy["status"] != "ok"
                    else _ratio(sy["kib_per_conn"], r["kib_per_conn"])]
        rows.append(row)
    print()
    n = next((r["n"] for r in recs.values() if r.get("n") and r["scenario"] in scs), 0)
    print(f"== memory per idle client connection ({n} connections; RSS = VmRSS summed over the proxy's processes)")
    print("\n".join(_render(head, rows, markdown, 1)))
    print()
    for sc, title in IDLE_SCENARIOS:
        print(f"  {sc} = {title}; the proxy forwards it to the HTTP/1.1 backend")
    print("  KiB/conn = (RSS after - RSS before) / connections; sy/peer < 1: switchyard uses less")
    for n in notes:
        print(f"  {n}")


def main(argv):
    if len(argv) >= 3 and argv[1] == "procstat":
        procstat(argv[2:])
    elif len(argv) >= 2 and argv[1] == "sysstat":
        sysstat()
    elif len(argv) >= 4 and argv[1] == "rusage":
        return rusage(argv[2], argv[3:])
    elif len(argv) >= 3 and argv[1] == "record":
        kv = dict(a.split("=", 1) for a in argv[3:])
        record(argv[2], kv)
    elif len(argv) >= 3 and argv[1] == "table":
        table(argv[2], markdown="--markdown" in argv[3:])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
