#!/usr/bin/python3
"""Helpers for scripts/soak.sh (`make soak`, docs/soak.md). Debian packages
only (python3-grpcio, python3-grpc-tools for the stubs). Subcommands:

  ports N --out FILE --parent PID --max-seconds S
        reserve N TCP ports on 127.0.0.1 with the same lock-file protocol as
        tests/integration/conftest.py (so a concurrent pytest run never gets
        them, nor we theirs), write them space-separated to FILE, then hold
        the locks until killed, PID exits or S seconds pass.
  grpc-server --stubs DIR --port P --name NAME
        a grpcio backend for switchyard.test.Echo (tests/integration/grpc/
        echo.proto) on a FIXED port (so it can be killed and restarted at
        the same address), plus grpc.health.v1.Health/Check (SERVING).
        Unary answers after 20 ms; ServerStream sends request.index
        messages 10 ms apart.
  grpc-client --stubs DIR --h2c ADDR --tls ADDR --ca PEM --rate R --seconds S
              --stats FILE --failures FILE
        unary and server-streaming calls through the proxy, over h2c and over
        TLS, paced to R calls/s in total, for S seconds; checks every reply;
        writes counters to --stats (JSON, rewritten every 10 s) and one JSON
        line per failed call to --failures.
  accesslog --state FILE --keep FILE LOG...
        fold rotated access-log files into counters (--state, JSON) and keep
        every entry that is not a plain success in --keep (JSON lines).
  report --dir RESULTS --meta FILE ...
        the final report and verdict (exit 1 on FAIL); see docs/soak.md.
"""

import argparse
import collections
import csv
import datetime
import fcntl
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"
GRPC_PREFIX = "/switchyard.test.Echo/"


def atomic_write(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# ports (the protocol of tests/integration/conftest.py, "Ports")
# ---------------------------------------------------------------------------

PORT_LOCK_FILE = Path("/tmp/switchyard-test-ports.lock")


def _port_candidates():
    try:
        lo, hi = (int(x) for x in
                  Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2])
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    if lo - 10000 >= 4096:
        return range(10000, lo)
    if 65535 - hi >= 4096:
        return range(hi + 1, 65536)
    return range(1024, 65536)


def _open_lock_file():
    paths = [PORT_LOCK_FILE,
             PORT_LOCK_FILE.with_name(f"{PORT_LOCK_FILE.stem}-{os.getuid()}.lock")]
    last = None
    for path in paths:
        try:
            try:
                return os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
                try:
                    os.fchmod(fd, 0o666)
                except OSError:
                    pass
                return fd
        except OSError as e:
            last = e
    raise SystemExit(f"soak: cannot open a port lock file: {last}")


def _bindable(port):
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def cmd_ports(a):
    fd = _open_lock_file()
    cands = _port_candidates()
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    got = []
    start = rng.randrange(len(cands))
    for i in range(min(4000, len(cands))):
        if len(got) == a.n:
            break
        port = cands[(start + i) % len(cands)]
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        except OSError:
            continue
        if not _bindable(port):
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, port)
            continue
        got.append(port)
    if len(got) < a.n:
        print(f"soak: only {len(got)} of {a.n} free ports", file=sys.stderr)
        return 1
    atomic_write(a.out, " ".join(map(str, got)) + "\n")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    deadline = time.monotonic() + a.max_seconds
    while time.monotonic() < deadline:      # hold the locks; bounded
        time.sleep(2.0)
        try:
            os.kill(a.parent, 0)
        except ProcessLookupError:
            break                            # the soak script is gone
    return 0


# ---------------------------------------------------------------------------
# gRPC backend
# ---------------------------------------------------------------------------

def _stubs(d):
    sys.path.insert(0, d)
    import grpc  # noqa: F401  (Debian python3-grpcio)
    import echo_pb2
    import echo_pb2_grpc
    return grpc, echo_pb2, echo_pb2_grpc


MAX_MSG = 4 * 1024 * 1024
UNARY_DELAY = 0.020      # s before a unary reply
STREAM_INTERVAL = 0.010  # s between server-streaming messages


def cmd_grpc_server(a):
    import concurrent.futures
    grpc, pb, pb_grpc = _stubs(a.stubs)
    name = a.name

    class Echo(pb_grpc.EchoServicer):
        def Unary(self, req, ctx):
            time.sleep(UNARY_DELAY)      # in flight for a while: a kill can hit it
            ctx.send_initial_metadata((("x-server", name),))
            return pb.EchoReply(payload=req.payload, text=req.text, index=req.index,
                                total_bytes=len(req.payload), server=name)

        def ServerStream(self, req, ctx):
            n = max(1, min(req.index, 1000))     # index = number of messages wanted
            ctx.send_initial_metadata((("x-server", name),))
            for i in range(n):
                if i:
                    time.sleep(STREAM_INTERVAL)
                yield pb.EchoReply(payload=req.payload, text=f"{req.text}-{i}", index=i,
                                   total_bytes=len(req.payload), server=name)

    # grpc.health.v1.Health/Check, without grpc_health: a HealthCheckResponse
    # with status SERVING (1) is the two bytes 08 01.
    health = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            lambda req, ctx: b"\x08\x01", request_deserializer=None, response_serializer=None)})
    opts = [("grpc.max_send_message_length", MAX_MSG),
            ("grpc.max_receive_message_length", MAX_MSG),
            ("grpc.so_reuseport", 0)]          # a port in use must fail, not be shared
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=16), options=opts,
                         handlers=[health])
    pb_grpc.add_EchoServicer_to_server(Echo(), server)
    try:
        port = server.add_insecure_port(f"{HOST}:{a.port}")
    except RuntimeError as e:
        print(f"[{name}] cannot bind {HOST}:{a.port}: {e}", file=sys.stderr)
        return 1
    if port != a.port:
        print(f"[{name}] cannot bind {HOST}:{a.port}", file=sys.stderr)
        return 1
    server.start()
    print(f"[{name}] serving on {HOST}:{port}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()
    return 0


# ---------------------------------------------------------------------------
# gRPC client
# ---------------------------------------------------------------------------

CALL_TIMEOUT = 10.0      # s, deadline of every call
STREAM_N = 5             # messages per server-streaming call
CHANNEL_LIFETIME = 60.0  # s, then a new channel (a new connection to the proxy)


def cmd_grpc_client(a):
    grpc, pb, pb_grpc = _stubs(a.stubs)
    ca = Path(a.ca).read_bytes()
    opts = [("grpc.enable_retries", 0),        # the client must not retry behind our back
            ("grpc.enable_http_proxy", 0),
            ("grpc.max_receive_message_length", MAX_MSG)]
    lock = threading.Lock()
    stats = collections.Counter()
    fail_out = open(a.failures, "a")
    start = time.time()
    end = time.monotonic() + a.seconds
    stop = threading.Event()

    def channel(kind):
        if kind == "tls":
            creds = grpc.ssl_channel_credentials(root_certificates=ca)
            return grpc.secure_channel(a.tls, creds, options=opts + [
                ("grpc.ssl_target_name_override", "localhost")])
        return grpc.insecure_channel(a.h2c, options=opts)

    def record_failure(kind, method, err, got_headers, msgs, t0, detail=None):
        code = err.code().name if err is not None and hasattr(err, "code") and err.code() else "?"
        rec = {"time": t0, "end": time.time(), "client": f"grpc-{kind}", "method": method,
               "code": code, "details": detail or (err.details() if err is not None else ""),
               "headers": got_headers, "messages": msgs}
        with lock:
            stats[f"{kind}.failed"] += 1
            stats[f"{kind}.failed.{code}"] += 1
            fail_out.write(json.dumps(rec) + "\n")
            fail_out.flush()

    def headers_of(call):
        try:
            md = call.initial_metadata() or ()
        except Exception:  # noqa: BLE001 (a call that failed early may not have them)
            return False
        return any(k == "x-server" for k, _ in md)

    def worker(kind, idx, rate):
        interval = 1.0 / rate
        nxt = time.monotonic() + random.random() * interval
        ch = channel(kind)
        stub = pb_grpc.EchoStub(ch)
        born = time.monotonic()
        n = 0
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            if nxt > now:
                time.sleep(min(nxt - now, end - now))
                continue
            nxt += interval
            if nxt < now - 1.0:                 # fell behind (slow machine): do not burst
                nxt = now
            if now - born > CHANNEL_LIFETIME:
                ch.close()
                ch = channel(kind)
                stub = pb_grpc.EchoStub(ch)
                born = now
            n += 1
            text = f"{kind}-{idx}-{n}"
            payload = os.urandom(64)
            t0 = time.time()
            md = (("x-soak-client", f"grpc-{kind}"),)
            if n % 2:
                method = "Unary"
                try:
                    reply, call = stub.Unary.with_call(
                        pb.EchoRequest(payload=payload, text=text, index=n),
                        timeout=CALL_TIMEOUT, metadata=md)
                except grpc.RpcError as e:
                    record_failure(kind, method, e, headers_of(e), 0, t0)
                    continue
                if reply.text != text or reply.payload != payload:
                    record_failure(kind, method, None, True, 1, t0, "reply does not match request")
                    continue
            else:
                method = "ServerStream"
                call = stub.ServerStream(pb.EchoRequest(payload=payload, text=text, index=STREAM_N),
                                         timeout=CALL_TIMEOUT, metadata=md)
                got = 0
                try:
                    for r in call:
                        if r.index != got or r.text != f"{text}-{got}" or r.payload != payload:
                            raise ValueError(f"message {got} does not match")
                        got += 1
                except grpc.RpcError as e:
                    record_failure(kind, method, e, headers_of(call), got, t0)
                    continue
                except ValueError as e:
                    call.cancel()
                    record_failure(kind, method, None, True, got, t0, str(e))
                    continue
                if got != STREAM_N:
                    record_failure(kind, method, None, True, got, t0,
                                   f"{got} of {STREAM_N} messages, status OK")
                    continue
            with lock:
                stats[f"{kind}.ok"] += 1
        ch.close()

    def dump():
        with lock:
            d = dict(stats)
        d["elapsed_s"] = round(time.time() - start, 1)
        atomic_write(a.stats, json.dumps(d, sort_keys=True) + "\n")

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = []
    per = a.rate / 4.0        # two kinds x two threads
    for kind in ("h2c", "tls"):
        for i in range(2):
            t = threading.Thread(target=worker, args=(kind, i, per), daemon=True)
            t.start()
            threads.append(t)
    last = time.monotonic()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=1.0)
        if time.monotonic() - last >= 10:
            dump()
            last = time.monotonic()
        if time.monotonic() > end + CALL_TIMEOUT + 30:  # bounded even if a call hangs
            break
    dump()
    fail_out.close()
    return 0


# ---------------------------------------------------------------------------
# access log
# ---------------------------------------------------------------------------

def classify(e):
    """One access-log entry -> its class (see docs/soak.md):
    ok, retried_ok (ok on a later attempt), client_gone (499 / DC),
    after_headers (the response had started, then the exchange failed: no
    retry is possible), error (the proxy answered an error itself)."""
    st = e.get("status", 0)
    flags = e.get("response_flags", "-")
    if st == 499 or "DC" in flags.split(","):
        return "client_gone"
    if 200 <= st < 300 and flags == "-":
        return "retried_ok" if e.get("attempts", 1) > 1 else "ok"
    if e.get("path", "").startswith(GRPC_PREFIX):
        # Every gRPC answer is HTTP 200, errors the proxy makes included
        # (trailers-only, no body): only response bytes show that the
        # backend's answer had started.
        return "after_headers" if e.get("bytes_out", 0) > 0 else "error"
    if 200 <= st < 300:
        return "after_headers"
    return "error"


def cmd_accesslog(a):
    try:
        state = json.loads(Path(a.state).read_text())
    except (OSError, ValueError):
        state = {}
    counts = collections.Counter(state.get("counts", {}))
    keep = open(a.keep, "a")
    for p in a.logs:
        try:
            f = open(p, errors="replace")
        except OSError:
            continue
        with f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    e = json.loads(line)
                except ValueError:
                    counts["unparsed"] += 1
                    continue
                c = classify(e)
                counts["total"] += 1
                counts[c] += 1
                if c != "ok" and c != "retried_ok":
                    keep.write(line + "\n")
                elif c == "retried_ok":
                    counts["retried_ok." + e.get("backend_service", "?")] += 1
    keep.close()
    state["counts"] = dict(counts)
    atomic_write(a.state, json.dumps(state, sort_keys=True) + "\n")
    return 0


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

H2LOAD_REQ = re.compile(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                        r"(\d+) failed, (\d+) errored, (\d+) timeout")
H2LOAD_ST = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def parse_h2load(path):
    """-> dict of counters from one h2load output, or None if it has none."""
    d = None
    for line in Path(path).read_text(errors="replace").splitlines():
        m = H2LOAD_REQ.match(line)
        if m:
            d = d or {}
            for k, v in zip(("total", "started", "done", "succeeded", "failed", "errored",
                             "timeout"), m.groups()):
                d[k] = int(v)
        m = H2LOAD_ST.match(line)
        if m:
            d = d or {}
            for k, v in zip(("s2xx", "s3xx", "s4xx", "s5xx"), m.groups()):
                d[k] = int(v)
    return d


def iso_epoch(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def read_meta(path):
    meta = {}
    for line in Path(path).read_text().splitlines():
        k, _, v = line.partition("=")
        if k:
            meta[k.strip()] = v.strip()
    return meta


def lsq_slope(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def cmd_report(a):
    d = Path(a.dir)
    meta = read_meta(a.meta)
    out = []
    fails = []   # reasons for FAIL
    notes = []

    def p(s=""):
        out.append(s)

    dur = float(meta.get("duration_s", 0))
    warm = float(meta.get("warmup_s", 0))
    window_s = float(meta.get("rss_window_s", 600))
    thr_pct = float(meta.get("rss_threshold_pct", 5))
    excuse_s = 3.0     # a mid-response failure within this many seconds of a kill of its endpoint

    # ---- events: kills ---------------------------------------------------------------
    kills = []   # (epoch, name, addr)
    restarts_failed = []
    for row in csv.DictReader(open(d / "events.csv")):
        if row["event"] == "kill":
            kills.append((float(row["epoch"]), row["backend"], row["detail"]))
        elif row["event"] == "restart-failed":
            restarts_failed.append(row)

    def near_kill(t, addr=None):
        for kt, _, kaddr in kills:
            if -1.0 <= t - kt <= excuse_s and (addr is None or addr == kaddr):
                return True
        return False

    # ---- proxy ---------------------------------------------------------------------
    p(f"== switchyard soak report  ({meta.get('started', '?')}, "
      f"{dur / 60:.1f} min of load, results in {d})")
    p(f"   command: {meta.get('command', '?')}")
    p(f"   load: {meta.get('rates', '?')}; gRPC health check: {meta.get('grpc_health', '?')}")
    alive = meta.get("proxy_alive_at_end") == "1"
    exit_rc = meta.get("proxy_exit", "?")
    p()
    p("proxy")
    p(f"   pid {meta.get('proxy_pid')}: {'alive at the end of the load' if alive else 'DEAD'}"
      f"; stopped with SIGTERM -> {exit_rc}")
    p(f"   crashes/restarts: {0 if alive else 1}")
    if not alive:
        fails.append(f"the proxy died during the run ({meta.get('proxy_death', '?')})")
    elif exit_rc != "exit 0":
        fails.append(f"the proxy did not drain and exit cleanly on SIGTERM ({exit_rc})")
    idle_streams = meta.get("idle_active_streams", "?")
    idle_conns = meta.get("idle_active_connections", "?")
    p(f"   after the load stopped: active_streams {idle_streams}, "
      f"active_connections {idle_conns}")
    if alive and idle_streams not in ("0",):
        fails.append(f"switchyard_active_streams is {idle_streams} once every client stopped "
                     "(exchanges leaked)")
    errlines = meta.get("stderr_levels", "")
    p(f"   stderr log lines by level: {errlines or 'none'}")
    for line in (d / "stderr-top.txt").read_text().splitlines() if (d / "stderr-top.txt").exists() else []:
        p(f"      {line}")

    # ---- reloads ---------------------------------------------------------------------------
    want = int(meta.get("reloads_wanted", 0))
    ok = int(meta.get("reloads_ok", 0))
    p()
    p("reloads (SIGHUP, alternating two configs; each checked by GET /config version)")
    p(f"   requested {want}, confirmed {ok}; switchyard_config_reloads_total "
      f"{meta.get('metric_reloads', '?')}, _failures_total {meta.get('metric_reload_failures', '?')}")
    if ok != want:
        fails.append(f"only {ok} of {want} reloads took effect")
    if meta.get("metric_reload_failures", "0") not in ("0", "?"):
        fails.append(f"{meta['metric_reload_failures']} reloads were refused")

    # ---- backends ------------------------------------------------------------------------
    p()
    p("backends (kill -9, restarted on the same port after a pause; one at a time)")
    p(f"   kills {len(kills)}, restarts failed {len(restarts_failed)}")
    by = collections.Counter(n for _, n, _ in kills)
    p("   " + ", ".join(f"{n} x{c}" for n, c in sorted(by.items())))
    for r in restarts_failed:
        fails.append(f"harness: backend {r['backend']} could not be restarted ({r['detail']})")

    # ---- access log --------------------------------------------------------------------------
    try:
        al = json.loads((d / "accesslog-state.json").read_text()).get("counts", {})
    except (OSError, ValueError):
        al = {}
    kept = []
    if (d / "accesslog-not-ok.jsonl").exists():
        for line in open(d / "accesslog-not-ok.jsonl"):
            try:
                kept.append(json.loads(line))
            except ValueError:
                pass
    p()
    p("proxy access log")
    p(f"   entries {al.get('total', 0)}: ok {al.get('ok', 0)}, ok after a retry "
      f"{al.get('retried_ok', 0)} ("
      + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in sorted(al.items())
                  if k.startswith("retried_ok.")) + ")"
      f", client went away {al.get('client_gone', 0)}, failed after the response headers "
      f"{al.get('after_headers', 0)}, failed before them {al.get('error', 0)}")

    def client_of(e):
        path = e.get("path", "")
        if path.startswith(GRPC_PREFIX):
            return "grpc-tls" if e.get("listener") == "tls" else "grpc-h2c"
        m = re.match(r"^/h[12]/([\w-]+)", path)
        return m.group(1) if m else "?"

    excused = collections.Counter()
    unexcused = collections.Counter()
    errors = collections.Counter()
    examples = []
    for e in kept:
        c = classify(e)
        cl = client_of(e)
        if c == "after_headers":
            try:
                t = iso_epoch(e["time"])
            except (KeyError, ValueError):
                t = 0
            if "UR" in e.get("response_flags", "").split(",") and near_kill(t, e.get("endpoint")):
                excused[cl] += 1
            else:
                unexcused[cl] += 1
                examples.append(e)
        elif c == "error":
            errors[cl] += 1
            examples.append(e)
    if examples:
        p(f"   entries the retry policy should have prevented or that no kill explains: "
          f"{len(examples)} (first 5; all in accesslog-not-ok.jsonl)")
        uh = sum(1 for e in examples if "UH" in e.get("response_flags", "").split(","))
        if uh:
            notes.append(f"{uh} of those are UH (no healthy endpoint): see the health "
                         "transitions in proxy.stderr; docs/soak.md, Known issues")
        fails.append(f"the access log has {sum(errors.values())} exchanges the proxy failed "
                     f"before the response headers and {sum(unexcused.values())} failed after "
                     "them with no kill of their endpoint to explain it")
        for e in examples[:5]:
            p("      " + json.dumps({k: e.get(k) for k in (
                "time", "listener", "method", "path", "protocol", "status", "backend_service",
                "endpoint", "attempts", "tries", "response_flags")}))

    # ---- clients -----------------------------------------------------------------------------
    p()
    p("clients (failed = h2load 'failed' (errored, timeouts and 4xx/5xx) or gRPC non-OK; "
      f"excused = the response had started when its backend was killed, within {excuse_s:.0f} s)")
    p(f"   {'client':<10} {'requests':>9} {'ok':>9} {'failed':>7} {'errored':>7} {'non-2xx':>7} "
      f"{'excused':>7} {'UNEXPL.':>7}")
    tot_req = tot_fail = tot_unexpl = 0
    clients = meta.get("clients", "").split()
    for cl in clients:
        files = sorted((d / "load").glob(f"{cl}.*.txt"))
        agg = collections.Counter()
        bad_runs = 0
        for f in files:
            r = parse_h2load(f)
            if r is None:
                bad_runs += 1
                continue
            agg.update(r)
        req = agg["done"]
        failed = agg["failed"]
        non2xx = agg["s3xx"] + agg["s4xx"] + agg["s5xx"]
        okc = req - failed     # (h2load may count a 2xx whose stream did not finish in -D)
        exc = min(excused[cl], failed)
        unexpl = failed - exc
        tot_req += req
        tot_fail += failed
        tot_unexpl += unexpl
        p(f"   {cl:<10} {req:>9} {okc:>9} {failed:>7} {agg['errored']:>7} {non2xx:>7} "
          f"{exc:>7} {unexpl:>7}")
        if bad_runs:
            notes.append(f"{cl}: {bad_runs} of {len(files)} h2load runs printed no totals "
                         f"(see load/{cl}.*.txt)")
            fails.append(f"{cl}: {bad_runs} h2load runs ended without results")
        if unexpl:
            fails.append(f"{cl}: {unexpl} failed requests not explained by a backend kill "
                         "mid-response")
        if req == 0:
            fails.append(f"{cl}: no requests were made")
    try:
        gs = json.loads((d / "grpc-stats.json").read_text())
    except (OSError, ValueError):
        gs = None
        fails.append("the gRPC client wrote no stats")
    gfail = []
    if (d / "grpc-failures.jsonl").exists():
        for line in open(d / "grpc-failures.jsonl"):
            try:
                gfail.append(json.loads(line))
            except ValueError:
                pass
    if gs is not None:
        for kind in ("h2c", "tls"):
            cl = f"grpc-{kind}"
            okc = gs.get(f"{kind}.ok", 0)
            fl = [f for f in gfail if f["client"] == cl]
            exc = [f for f in fl if f["headers"] and f["code"] == "UNAVAILABLE"
                   and near_kill(f["end"])]
            unexpl = len(fl) - len(exc)
            tot_req += okc + len(fl)
            tot_fail += len(fl)
            tot_unexpl += unexpl
            p(f"   {cl:<10} {okc + len(fl):>9} {okc:>9} {len(fl):>7} {'':>7} {'':>7} "
              f"{len(exc):>7} {unexpl:>7}")
            if unexpl:
                fails.append(f"{cl}: {unexpl} failed calls not explained by a backend kill "
                             "mid-response")
            if okc == 0:
                fails.append(f"{cl}: no successful calls")
        codes = collections.Counter((f["client"], f["code"], f["headers"]) for f in gfail)
        for (cl, code, hdr), n in sorted(codes.items()):
            p(f"      {cl}: {n} x {code} ({'after' if hdr else 'before'} response headers)")
    p(f"   total: {tot_req} requests, {tot_fail} failed, {tot_unexpl} unexplained")

    # ---- RSS ---------------------------------------------------------------------------------
    rows = list(csv.DictReader(open(d / "samples.csv")))
    p()
    p(f"proxy memory and descriptors ({len(rows)} samples, every {meta.get('sample_s', '?')} s; "
      "samples.csv)")
    if rows:
        t = [float(r["elapsed_s"]) for r in rows]
        rss = [int(r["rss_kib"]) for r in rows]
        fds = [int(r["fds"]) for r in rows]
        post = [i for i, x in enumerate(t) if x >= warm and x <= dur]
        p(f"   RSS first {rss[0] / 1024:.1f} MiB, max {max(rss) / 1024:.1f} MiB, "
          f"last {rss[-1] / 1024:.1f} MiB; fds first {fds[0]}, max {max(fds)}, last {fds[-1]}")
        if len(post) >= 4:
            # The window: the last rss_window_s of the load, or the part after
            # warm-up if the run is shorter than warm-up + 2 windows.
            t_end = t[post[-1]]
            if t_end - warm >= 2 * window_s:
                win = [i for i in post if t[i] >= t_end - window_s]
            else:
                half = warm + (t_end - warm) / 2
                win = [i for i in post if t[i] >= half]
            if len(win) < 3:
                win = post[-3:]
            wt = [t[i] for i in win]
            wr = [rss[i] for i in win]
            k = min(3, len(wr) // 2) or 1
            a0 = sum(wr[:k]) / k
            a1 = sum(wr[-k:]) / k
            growth = (a1 - a0) / a0 * 100 if a0 else 0.0
            slope = lsq_slope(wt, wr) * 60   # KiB per minute
            span = wt[-1] - wt[0]
            p(f"   after warm-up ({warm:.0f} s): RSS at warm-up end {rss[post[0]] / 1024:.1f} MiB, "
              f"max {max(rss[i] for i in post) / 1024:.1f} MiB, last {rss[post[-1]] / 1024:.1f} MiB")
            p(f"   flatness window {wt[0]:.0f}..{wt[-1]:.0f} s ({span / 60:.1f} min): "
              f"growth {growth:+.2f}% (mean of first {k} vs last {k} samples), "
              f"least-squares slope {slope:+.1f} KiB/min "
              f"(= {slope * 60 / 1024:+.1f} MiB/h); threshold: growth < {thr_pct:g}%")
            if growth >= thr_pct:
                fails.append(f"RSS grew {growth:.1f}% over the last {span / 60:.1f} min "
                             f"(threshold {thr_pct:g}%)")
            fd_post = [fds[i] for i in post]
            p(f"   fds after warm-up: min {min(fd_post)}, max {max(fd_post)}, last {fd_post[-1]}")
        else:
            notes.append("too few samples after warm-up to judge RSS")
            fails.append("too few samples after warm-up to judge RSS (run longer)")
    else:
        fails.append("no samples")

    p()
    for n in notes:
        p(f"note: {n}")
    if fails:
        p("VERDICT: FAIL")
        for f in fails:
            p(f"   - {f}")
    else:
        p("VERDICT: PASS (0 crashes, every failure explained by a kill mid-response, "
          f"{ok}/{want} reloads, RSS flat)")
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    atomic_write(d / "report.txt", text)
    return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports")
    s.add_argument("n", type=int)
    s.add_argument("--out", required=True)
    s.add_argument("--max-seconds", type=float, default=7200)
    s.add_argument("--parent", type=int, required=True)
    s = sub.add_parser("grpc-server")
    s.add_argument("--stubs", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    s = sub.add_parser("grpc-client")
    s.add_argument("--stubs", required=True)
    s.add_argument("--h2c", required=True)
    s.add_argument("--tls", required=True)
    s.add_argument("--ca", required=True)
    s.add_argument("--rate", type=float, default=40)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--stats", required=True)
    s.add_argument("--failures", required=True)
    s = sub.add_parser("accesslog")
    s.add_argument("--state", required=True)
    s.add_argument("--keep", required=True)
    s.add_argument("logs", nargs="*")
    s = sub.add_parser("report")
    s.add_argument("--dir", required=True)
    s.add_argument("--meta", required=True)
    a = ap.parse_args()
    return {"ports": cmd_ports, "grpc-server": cmd_grpc_server, "grpc-client": cmd_grpc_client,
            "accesslog": cmd_accesslog, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
