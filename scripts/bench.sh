#!/usr/bin/env bash
# `make bench`: switchyard side by side with haproxy, nghttpx and nginx-light,
# each with one worker, in front of the same backend, on 127.0.0.1.
#
#   (h1)  HTTP/1.1 keep-alive  wrk -t1 -c50 --latency   -> proxy -> HTTP/1.1 backend
#   (h2c) h2c prior knowledge  h2load -c10 -m32          -> proxy -> h2c backend
#   (tls) TLS, h2 via ALPN     h2load -c10 -m32          -> proxy -> HTTP/1.1 backend
#   (h2c-h1) h2c prior knowledge h2load -c10 -m32        -> proxy -> HTTP/1.1 backend
#   (idle-h1, idle-h2) 2,000 idle client connections (bench/idle_conns.py): RSS
#         per idle connection, HTTP/1.1 and h2c, -> HTTP/1.1 backend
#
# Backends: nginx-light (one worker, fixed 40-byte body) for HTTP/1.1, and
# build/switchyard-testbed (fixed 40-byte body via x-testbed-body-size) for
# h2c: the faster of the two for each protocol (see docs/performance.md).
# Per proxy x scenario: req/s (2xx only), p50/p99 latency, proxy CPU us per
# request (utime+stime over the run / requests), peak RSS (VmHWM), and, from a
# second short run with strace -f -c attached to every process of the proxy,
# system calls per request (total calls / 2xx answers; top 3 kept).
# switchyard-w2 is switchyard with --workers 2 on both CPUs (h1, h2c only): its
# CPU per request against the 1-worker switchyard's.
# A scenario that fails is reported as n/a with the reason. Every process
# started here is stopped by pid on exit.
#
# Environment: SY_BENCH_DURATION (s, default 10), SY_BENCH_WARMUP (s, default 2),
# SY_BENCH_PROXIES, SY_BENCH_SCENARIOS, SY_BENCH_PIN=0 (no CPU pinning),
# SY_BENCH_KEEP=1 (keep the temp dir), SY_BENCH_URLMAP_N (urlmap_bench matches),
# SY_BENCH_ROUNDS (default 1; see below), SY_BENCH_BUILD (build folder, default
# build), SY_BENCH_STRACE=0 (no syscall run), SY_BENCH_STRACE_DURATION (s, 3),
# SY_BENCH_IDLE_N (idle connections, 2000).
set -uo pipefail # no -e: one failing scenario must not end the run
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
PY=/usr/bin/python3
REPORT="$PY $ROOT/bench/report.py"
DUR=${SY_BENCH_DURATION:-10}
WARM=${SY_BENCH_WARMUP:-2}
PROXIES=${SY_BENCH_PROXIES:-switchyard switchyard-w2 haproxy nghttpx nginx}
SCENARIOS=${SY_BENCH_SCENARIOS:-h1 h2c tls h2c-h1 idle-h1 idle-h2}
BUILD=${SY_BENCH_BUILD:-build}
STRACE=${SY_BENCH_STRACE:-1}
SDUR=${SY_BENCH_STRACE_DURATION:-3}
IDLE_N=${SY_BENCH_IDLE_N:-2000}
ROUNDS=${SY_BENCH_ROUNDS:-1} # >1: the whole matrix again; the table keeps, per
ROUNDS_TAG=""                # proxy x scenario, the run least disturbed by other load
[ "$ROUNDS" -gt 1 ] && ROUNDS_TAG=1
HZ=$(getconf CLK_TCK)
# The request every client sends: the h2c backend (switchyard-testbed) answers
# it with the same fixed 40-byte body the HTTP/1.1 backend (nginx) returns.
HDR="x-testbed-body-size: 40"

for tool in wrk h2load haproxy nghttpx nginx curl openssl taskset; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (run: SY_DEPS_BENCH=1 scripts/deps.sh)" >&2; exit 1; }
done
for b in "$BUILD/switchyard" "$BUILD/switchyard-testbed"; do
  [ -x "$b" ] || { echo "bench: $b missing (run: make all)" >&2; exit 1; }
done
if [ "$STRACE" = 1 ] && ! command -v strace >/dev/null; then
  echo "bench: strace not found: no syscalls/req column (apt-get install strace)" >&2; STRACE=0
fi
# idle-h1/idle-h2 hold 2,000 client connections open (the proxies inherit this)
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null

# ---- CPU placement --------------------------------------------------------------
# Two cores: the proxy under test gets CPU 1 to itself; the load generator and
# the backend share CPU 0. (With one core, nothing is pinned.)
if [ "${SY_BENCH_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  PROXY_CPU=1; LOAD_CPU=0; BACKEND_CPU=0; PROXY2_CPU=0,1 # switchyard-w2
  on() { local cpu=$1; shift; taskset -c "$cpu" "$@"; }
else
  PROXY_CPU=-; LOAD_CPU=-; BACKEND_CPU=-; PROXY2_CPU=-
  on() { shift; "$@"; }
fi

# ---- process bookkeeping ----------------------------------------------------------
tmp=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
pids=() # processes started here and not yet reaped
. "$ROOT/scripts/proc.sh" # untrack, descendants, stop_pid
exit_desc() { # PID of a child that exited -> EXIT_DESC="exit N" or "killed by SIGNAME"
  local rc
  untrack "$1"
  wait "$1" 2>/dev/null
  rc=$?
  if [ "$rc" -gt 128 ]; then EXIT_DESC="killed by SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
  else EXIT_DESC="exit $rc"; fi
}
cleanup() {
  trap - EXIT INT TERM
  local p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  if [ "${SY_BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM

free_ports() { # N -> N free TCP ports on 127.0.0.1
  $PY - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
last_err() { # FILE -> its last non-empty line, for n/a reasons
  grep -v '^\s*$' "$1" 2>/dev/null | tail -n 1 | cut -c1-160
}

# A private copy of the binaries: a rebuild of build/ during the run (make in
# another shell) must not change what is measured.
mkdir -p "$tmp/bin"
cp "$BUILD/switchyard" "$BUILD/switchyard-testbed" "$tmp/bin/"
SY=$tmp/bin/switchyard
TB=$tmp/bin/switchyard-testbed

# ---- machine ------------------------------------------------------------------------
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }
echo "== switchyard bench  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "   $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); kernel $(uname -r)"
echo "   haproxy $(pkgver haproxy), nghttpx $(pkgver nghttp2-proxy), nginx-light $(pkgver nginx-light)," \
     "wrk $(pkgver wrk), h2load $(pkgver nghttp2-client), openssl $(pkgver openssl)"
echo "   pinning: proxy on CPU $PROXY_CPU; load generator and backend on CPU $LOAD_CPU;" \
     "${DUR}s runs after ${WARM}s warm-up; one worker/thread per proxy"

# ---- certificate, backends ----------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || { echo "bench: openssl failed" >&2; exit 1; }
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/haproxy.pem"

read -r BE_H1 BE_H2C BE_STATUS < <(free_ports 3)
mkdir -p "$tmp/backend-nginx-tmp"
render bench/backend-nginx.conf.in "$tmp/backend-nginx.conf" DIR="$tmp" PORT="$BE_H1" STATUS_PORT="$BE_STATUS"
be_accepts() { # connections the HTTP/1.1 backend has accepted so far, and requests served
  curl -s -m 2 "http://127.0.0.1:$BE_STATUS/" | awk 'NR == 3 { print $1, $3 }'
}
be_nginx=""; be_testbed=""
start_backends() { # (re)start whichever backend is not running
  if [ -z "$be_nginx" ] || ! kill -0 "$be_nginx" 2>/dev/null; then
    if [ -n "$be_nginx" ]; then exit_desc "$be_nginx"; echo "   backend nginx had stopped ($EXIT_DESC); restarting"; fi
    on $BACKEND_CPU nginx -p "$tmp" -c "$tmp/backend-nginx.conf" -e "$tmp/backend-nginx-error.log" \
      >>"$tmp/backend-nginx.out" 2>&1 &
    be_nginx=$!; pids+=("$be_nginx")
    wait_port "$BE_H1" "$be_nginx" ||
      { echo "bench: backend nginx did not start: $(last_err "$tmp/backend-nginx-error.log")" >&2; exit 1; }
  fi
  if [ -z "$be_testbed" ] || ! kill -0 "$be_testbed" 2>/dev/null; then
    if [ -n "$be_testbed" ]; then exit_desc "$be_testbed"; echo "   backend testbed had stopped ($EXIT_DESC); restarting"; fi
    on $BACKEND_CPU "$TB" --listen "127.0.0.1:$BE_H2C" --name bench >>"$tmp/backend-testbed.out" 2>&1 &
    be_testbed=$!; pids+=("$be_testbed")
    wait_port "$BE_H2C" "$be_testbed" ||
      { echo "bench: backend testbed did not start: $(last_err "$tmp/backend-testbed.out")" >&2; exit 1; }
  fi
}
backends_alive() { kill -0 "$be_nginx" 2>/dev/null && kill -0 "$be_testbed" 2>/dev/null; }
start_backends
echo "   backends: nginx-light HTTP/1.1 on :$BE_H1, switchyard-testbed h2c on :$BE_H2C"

# ---- one proxy ----------------------------------------------------------------------------------
RESULTS=$tmp/results.jsonl
: >"$RESULTS"
na() { $REPORT record "$RESULTS" proxy="$1" scenario="$2" round="$round" status=na reason="$3"; }

# start_proxy NAME SCENARIO PORT -> sets PROXY_PID, or returns 1 with NA_REASON set
start_proxy() {
  local px=$1 sc=$2 port=$3 be_port scheme
  local cfg out=$tmp/$px-$sc.out
  # the idle scenarios use the h1 (HTTP/1.1) and h2c-h1 (h2c) configs
  case $sc in idle-h1) sc=h1 ;; idle-h2) sc=h2c-h1 ;; esac
  if [ "$sc" = h2c ]; then be_port=$BE_H2C; else be_port=$BE_H1; fi
  if [ "$sc" = tls ]; then scheme=https; else scheme=http; fi
  case $px in
    switchyard | switchyard-w2)
      cfg=$tmp/switchyard-$sc.yaml
      local lproto=HTTP ltls="" bproto=HTTP
      if [ "$sc" = tls ]; then
        lproto=HTTPS
        ltls="    tls: {certificates: [{cert_file: \"$tmp/cert.pem\", key_file: \"$tmp/key.pem\"}]}"
      fi
      [ "$sc" = h2c ] && bproto=H2C
      render bench/switchyard.yaml.in "$cfg" PORT="$port" BACKEND_PORT="$be_port" \
        LISTEN_PROTO="$lproto" LISTEN_TLS="$ltls" BACKEND_PROTO="$bproto"
      if [ "$px" = switchyard-w2 ]; then # 2 workers, both CPUs
        on $PROXY2_CPU "$SY" -c "$cfg" --workers 2 --log-level warn >"$out" 2>&1 &
      else
        on $PROXY_CPU "$SY" -c "$cfg" --workers 1 --log-level warn >"$out" 2>&1 &
      fi
      ;;
    haproxy)
      cfg=$tmp/haproxy-$sc.cfg
      haproxy_opts "$sc" "$tmp"
      render bench/haproxy.cfg.in "$cfg" PORT="$port" BACKEND_PORT="$be_port" \
        BIND_OPTS="$HAPROXY_BIND" SERVER_OPTS="$HAPROXY_SERVER" SCHEME="$scheme"
      on $PROXY_CPU haproxy -db -f "$cfg" >"$out" 2>&1 &
      ;;
    nghttpx)
      cfg=$tmp/nghttpx-$sc.conf
      local fopts=";no-tls" bopts=""
      [ "$sc" = tls ] && fopts=""
      [ "$sc" = h2c ] && bopts=";;proto=h2"
      render bench/nghttpx.conf.in "$cfg" PORT="$port" BACKEND_PORT="$be_port" DIR="$tmp" \
        FRONTEND_OPTS="$fopts" BACKEND_OPTS="$bopts" KEY="$tmp/key.pem" CERT="$tmp/cert.pem"
      on $PROXY_CPU nghttpx --conf="$cfg" >"$out" 2>&1 &
      ;;
    nginx)
      if [ "$sc" = h2c ]; then
        NA_REASON="nginx cannot proxy to HTTP/2 backends (proxy_http_version is 1.0/1.1; grpc_pass is for gRPC)"
        return 1
      fi
      cfg=$tmp/nginx-$sc.conf
      local lopts=""
      [ "$sc" = tls ] && lopts="ssl http2"
      [ "$sc" = h2c-h1 ] && lopts="http2" # cleartext: h2c prior knowledge only
      mkdir -p "$tmp/nginx-proxy-tmp"
      render bench/nginx.conf.in "$cfg" PORT="$port" BACKEND_PORT="$be_port" DIR="$tmp" \
        LISTEN_OPTS="$lopts" KEY="$tmp/key.pem" CERT="$tmp/cert.pem"
      on $PROXY_CPU nginx -p "$tmp" -c "$cfg" -e "$tmp/nginx-proxy-error.log" >"$out" 2>&1 &
      ;;
    *) NA_REASON="unknown proxy $px"; return 1 ;;
  esac
  PROXY_PID=$!
  pids+=("$PROXY_PID")
  if ! wait_port "$port" "$PROXY_PID"; then
    local why
    why=$(last_err "$out")
    case $px in # nghttpx and nginx write their errors to their own log files
      nghttpx) [ -n "$why" ] || why=$(last_err "$tmp/nghttpx-error.log") ;;
      nginx) [ -n "$why" ] || why=$(last_err "$tmp/nginx-proxy-error.log") ;;
    esac
    NA_REASON="did not start: ${why:-no message}"
    stop_pid "$PROXY_PID"
    return 1
  fi
  return 0
}

# probe SCENARIO PORT -> 0 if one request answers 200 with the 40-byte body;
# else NA_REASON is set
probe() {
  local sc=$1 port=$2 code args=(-s -o "$tmp/probe.body" -w '%{http_code} %{http_version} %{size_download}' -m 5 -H "$HDR")
  case $sc in
    h1 | idle-h1) code=$(curl "${args[@]}" --http1.1 "http://127.0.0.1:$port/") ;;
    h2c | h2c-h1 | idle-h2) code=$(curl "${args[@]}" --http2-prior-knowledge "http://127.0.0.1:$port/") ;;
    tls) code=$(curl "${args[@]}" -k --http2 "https://127.0.0.1:$port/") ;;
  esac
  case $code in
    "200 1.1 40" | "200 2 40") return 0 ;;
  esac
  NA_REASON="probe request answered '${code:-nothing}': $(head -c 120 "$tmp/probe.body" 2>/dev/null | tr -d '\r\n')"
  return 1
}

# load SCENARIO PORT SECONDS OUT [LOG]: the load generator, bounded; its CPU
# ticks go to OUT.cpu
load() {
  local sc=$1 port=$2 secs=$3 out=$4 log=${5:-} cmd
  local lim=$((secs + 30))
  case $sc in
    h1) cmd=(wrk -t1 -c50 -d"${secs}s" --latency -H "$HDR" "http://127.0.0.1:$port/") ;;
    h2c | h2c-h1) cmd=(h2load -c10 -m32 -D "$secs" -H "$HDR" ${log:+--log-file="$log"} "http://127.0.0.1:$port/") ;;
    tls) cmd=(h2load -c10 -m32 -D "$secs" -H "$HDR" --tls13-ciphers=TLS_AES_128_GCM_SHA256
              ${log:+--log-file="$log"} "https://127.0.0.1:$port/") ;;
  esac
  [ "$LOAD_CPU" != - ] && cmd=(taskset -c "$LOAD_CPU" "${cmd[@]}")
  # in the background, so that an interrupt stops it too (see cleanup)
  $REPORT rusage "$out.cpu" timeout -k 5 "$lim" "${cmd[@]}" >"$out" 2>&1 &
  local lp=$! rc
  pids+=("$lp")
  wait "$lp"
  rc=$?
  untrack "$lp"
  return $rc
}

# strace_run PROXY SCENARIO PORT: a second, short run of the same client with
# `strace -f -c` attached to every process (and so every thread) of the proxy
# for exactly that run; sets STRACE_KV (arguments for report.py record)
strace_run() {
  local px=$1 sc=$2 port=$3 st=$tmp/strace-$1-$2-$round p sp n=0 _i
  local args=(-f -c -S calls -o "$st.txt")
  STRACE_KV=()
  for p in $(descendants "$PROXY_PID"); do args+=(-p "$p"); n=$((n + 1)); done
  strace "${args[@]}" 2>"$st.err" &
  sp=$!; pids+=("$sp")
  for _i in $(seq 1 50); do # attached to each process (strace says so on stderr)
    [ "$(grep -c 'attached' "$st.err" 2>/dev/null)" -ge "$n" ] && break
    kill -0 "$sp" 2>/dev/null || break
    sleep 0.1
  done
  load "$sc" "$port" "$SDUR" "$st.load"
  kill -INT "$sp" 2>/dev/null
  for _i in $(seq 1 100); do kill -0 "$sp" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$sp" 2>/dev/null && kill -KILL "$sp" 2>/dev/null
  untrack "$sp"
  wait "$sp" 2>/dev/null
  STRACE_KV=(strace="$st.txt" strace_out="$st.load")
}

run_one() { # PROXY SCENARIO
  local px=$1 sc=$2 port t0 t1 cpu0=0 cpu1=0 hwm=0 tool=h2load log=""
  if [ "$px" = switchyard-w2 ] && [ "$sc" != h1 ] && [ "$sc" != h2c ]; then return 0; fi
  STRACE_KV=()
  local out=$tmp/load-$px-$sc-$round.txt
  [ "$sc" = h1 ] && tool=wrk
  [ "$tool" = h2load ] && log=$tmp/h2load-$px-$sc-$round.log
  NA_REASON=""
  start_backends
  if [ "$px" = direct ]; then
    [ "$sc" = tls ] && return 0 # the backends are cleartext
    [ "$sc" = h2c-h1 ] && return 0 # the HTTP/1.1 backend does not speak h2c
    if [ "$sc" = h2c ]; then port=$BE_H2C; else port=$BE_H1; fi
    PROXY_PID=""
  else
    read -r port < <(free_ports 1)
    if ! start_proxy "$px" "$sc" "$port"; then na "$px" "$sc" "$NA_REASON"; return 0; fi
  fi
  if ! probe "$sc" "$port"; then
    na "$px" "$sc" "$NA_REASON"
    [ -n "$PROXY_PID" ] && stop_pid "$PROXY_PID"
    return 0
  fi
  load "$sc" "$port" "$WARM" "$tmp/warmup-$px-$sc-$round.txt"
  local bk0 bk1 sys0 sys1 rc acc0 acc1 breq0 breq1 beconn="" bereq=""
  [ -n "$PROXY_PID" ] && read -r cpu0 hwm _ < <($REPORT procstat "$PROXY_PID")
  read -r bk0 _ < <($REPORT procstat "$be_nginx" "$be_testbed")
  read -r acc0 breq0 < <(be_accepts)
  read -r sys0 < <($REPORT sysstat)
  t0=$(date +%s.%N)
  load "$sc" "$port" "$DUR" "$out" "$log"
  rc=$?
  t1=$(date +%s.%N)
  read -r sys1 < <($REPORT sysstat)
  read -r acc1 breq1 < <(be_accepts)
  read -r bk1 _ < <($REPORT procstat "$be_nginx" "$be_testbed")
  if [ -n "$PROXY_PID" ]; then
    read -r cpu1 hwm _ < <($REPORT procstat "$PROXY_PID")
    if ! kill -0 "$PROXY_PID" 2>/dev/null; then
      exit_desc "$PROXY_PID"
      na "$px" "$sc" "proxy exited during the run ($EXIT_DESC): $(last_err "$tmp/$px-$sc.out")"
      return 0
    fi
    [ "$STRACE" = 1 ] && [ "$rc" -eq 0 ] && strace_run "$px" "$sc" "$port"
    stop_pid "$PROXY_PID"
  fi
  if ! backends_alive; then
    na "$px" "$sc" "the backend exited during the run"
    return 0
  fi
  if [ "$rc" -ne 0 ]; then
    na "$px" "$sc" "load generator exit $rc: $(last_err "$out")"
    return 0
  fi
  if [ "$sc" != h2c ] && [ -n "$acc0" ] && [ -n "$acc1" ]; then
    beconn=$((acc1 - acc0 - 1)); bereq=$((breq1 - breq0 - 1)) # minus the status request itself
  fi
  $REPORT record "$RESULTS" proxy="$px" scenario="$sc" round="$round" tool="$tool" out="$out" log="$log" \
    be_conns="$beconn" be_reqs="$bereq" \
    cpu0="$cpu0" cpu1="$cpu1" hwm="$hwm" hz="$HZ" bk0="$bk0" bk1="$bk1" sys0="$sys0" sys1="$sys1" \
    lg="$(cat "$out.cpu" 2>/dev/null)" wall="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
    "${STRACE_KV[@]}"
  [ -n "$log" ] && rm -f "$log" # large; percentiles are in the results
}

# run_idle PROXY SCENARIO (idle-h1 | idle-h2): a fresh proxy, one probe request,
# then IDLE_N client connections that each complete one request (h2: preface,
# SETTINGS exchange, one stream) and stay open; RSS of the proxy's processes
# before and after (bench/idle_conns.py)
run_idle() {
  local px=$1 sc=$2 port rc out=$tmp/idle-$1-$2-$round.json
  [ "$px" = switchyard-w2 ] && return 0
  NA_REASON=""
  start_backends
  read -r port < <(free_ports 1)
  if ! start_proxy "$px" "$sc" "$port"; then na "$px" "$sc" "$NA_REASON"; return 0; fi
  if ! probe "$sc" "$port"; then na "$px" "$sc" "$NA_REASON"; stop_pid "$PROXY_PID"; return 0; fi
  local proto=h1
  [ "$sc" = idle-h2 ] && proto=h2
  timeout -k 5 180 $PY "$ROOT/bench/idle_conns.py" --port "$port" --proto "$proto" --n "$IDLE_N" \
    --pid "$PROXY_PID" >"$out" 2>"$out.err"
  rc=$?
  if ! kill -0 "$PROXY_PID" 2>/dev/null; then
    exit_desc "$PROXY_PID"
    na "$px" "$sc" "proxy exited during the run ($EXIT_DESC): $(last_err "$tmp/$px-$sc.out")"
    return 0
  fi
  stop_pid "$PROXY_PID"
  if [ "$rc" -ne 0 ]; then na "$px" "$sc" "idle_conns.py exit $rc: $(last_err "$out.err")"; return 0; fi
  $REPORT record "$RESULTS" proxy="$px" scenario="$sc" round="$round" idle="$out"
}

for round in $(seq 1 "$ROUNDS"); do
  for sc in $SCENARIOS; do
    echo "== scenario $sc${ROUNDS_TAG:+ (round $round of $ROUNDS)}"
    case $sc in
      idle-h1 | idle-h2) for px in $PROXIES; do run_idle "$px" "$sc"; done ;;
      *) for px in direct $PROXIES; do run_one "$px" "$sc"; done ;;
    esac
  done
done

# ---- url map microbenchmark -----------------------------------------------------------------
URLMAP_LINE=""
if [ -f bench/urlmap_bench.c ]; then
  echo "== url map matcher (bench/urlmap_bench.c)"
  # shellcheck disable=SC2016 # $($*) is for make, not the shell
  mkvar() { make -s --no-print-directory --eval='sy-print-%: ; @echo $($*)' "sy-print-$1"; }
  cflags=$(mkvar OPT_CFLAGS | sed -e 's/-MMD//' -e 's/-MP//')
  libs=$(mkvar PKG_LIBS)
  # urlmap is pure (no I/O); if it ever needs more of the tree, add config/ and core/.
  # shellcheck disable=SC2086
  # (route_apply.c, with the url map since the split, needs the arena and the header list)
  if ${CC:-cc} $cflags -o build/urlmap_bench bench/urlmap_bench.c src/urlmap/*.c src/core/parse.c \
       src/core/errors.c src/core/arena.c src/http/headers.c $libs \
       >"$tmp/urlmap_bench.build" 2>&1 ||
     ${CC:-cc} $cflags -o build/urlmap_bench bench/urlmap_bench.c src/urlmap/*.c src/config/*.c \
       src/core/*.c src/http/*.c $libs >"$tmp/urlmap_bench.build" 2>&1; then
    on $PROXY_CPU timeout 120 build/urlmap_bench ${SY_BENCH_URLMAP_N:-} >"$tmp/urlmap_bench.out" 2>&1
    sed 's/^/   /' "$tmp/urlmap_bench.out"
    URLMAP_LINE=$(grep -m1 'ns/match' "$tmp/urlmap_bench.out")
    [ -z "$URLMAP_LINE" ] && URLMAP_LINE="n/a: urlmap_bench printed no ns/match line"
  else
    URLMAP_LINE="n/a: urlmap_bench did not build: $(grep -m1 -i error "$tmp/urlmap_bench.build")"
    echo "   $URLMAP_LINE"
  fi
else
  # HOOK: bench/urlmap_bench.c (url map matcher microbenchmark, prints ns/match)
  # is built and run here once it exists.
  URLMAP_LINE="n/a: bench/urlmap_bench.c not present"
fi

# ---- report --------------------------------------------------------------------------------------
echo
echo "== results (one worker per proxy; ${DUR}s per run; proxy on CPU $PROXY_CPU, load+backend on CPU $LOAD_CPU${ROUNDS_TAG:+; $ROUNDS rounds, least-disturbed run kept})"
$REPORT table "$RESULTS"
echo "  url map matcher: $URLMAP_LINE"
rm -rf build/bench && mkdir -p build/bench
cp "$RESULTS" build/bench/results.jsonl
$REPORT table "$RESULTS" --markdown >build/bench/table.md
cp "$tmp"/load-*.txt build/bench/ 2>/dev/null
echo "  (raw results in build/bench/)"
