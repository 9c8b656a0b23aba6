#!/usr/bin/env bash
# `make soak` (outside CI; docs/soak.md): the optimized switchyard (--workers 2)
# under mixed, rate-limited load for SY_SOAK_MINUTES (default 30), while its
# backends are killed (-9) and restarted one at a time and its config is
# reloaded SY_SOAK_RELOADS times (default 100, spread evenly).
#
#   clients  h2load --h1 (cleartext, 20 ms backend delay)
#            h2load h2c (50 ms backend delay, 8 KiB responses)
#            h2load TLS (h2 by ALPN)
#            h2load --h1 over TLS with 1 KiB POST bodies (5 ms backend delay)
#            gRPC (Python grpcio): unary (20 ms) + server-streaming (5 messages
#            10 ms apart), over h2c and over TLS
#   proxy    listener `plain` (HTTP/1.1 + h2c), listener `tls` (HTTPS), admin
#   backends svc-h1: 3 switchyard-testbed over HTTP/1.1   (/h1/...)
#            svc-h2c: 3 switchyard-testbed over h2c       (/h2/...)
#            svc-grpc: 3 grpcio servers over h2c          (/switchyard.test.Echo/...)
#            every route retries connect failures, resets and refused streams
#            (num_retries 3), every service has active health checks.
#
# Every SY_SOAK_SAMPLE s (10) it records the proxy's RSS, fds, threads, CPU and
# a few metrics in samples.csv, and rotates the access log (SIGUSR1) into
# counters. At the end it prints a report with a PASS/FAIL verdict and exits 1
# on FAIL. Results: SY_SOAK_RESULTS (default build/soak/<UTC time>/).
#
# Environment: SY_SOAK_MINUTES (default 30; decimals allowed), SY_SOAK_RELOADS
# (100), SY_SOAK_BUILD (directory with switchyard and switchyard-testbed;
# default build/), SY_SOAK_RATE (requests/s per h2load client, 150),
# SY_SOAK_GRPC_RATE (gRPC calls/s in total, 40), SY_SOAK_KILL_EVERY (s between
# backend kills, 20), SY_SOAK_GRPC_HEALTH (GRPC, or TCP: the gRPC service's
# health check type), SY_SOAK_RESULTS, SY_SOAK_KEEP=1 (keep the temp dir).
# Every process started here is stopped by pid on exit.
set -uo pipefail # no -e: a failing step is reported, not fatal
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
PY=/usr/bin/python3
HELPER=("$PY" "$ROOT/scripts/soak_load.py")
COMMAND=$(env | grep '^SY_SOAK_' | grep -v "^SY_SOAK_BUILD=$ROOT/build\$" | sort | tr '\n' ' ')"make soak"

MINUTES=${SY_SOAK_MINUTES:-30}
RELOADS=${SY_SOAK_RELOADS:-100}
BUILD=${SY_SOAK_BUILD:-$ROOT/build}
RATE=${SY_SOAK_RATE:-150}
GRPC_RATE=${SY_SOAK_GRPC_RATE:-40}
KILL_EVERY=${SY_SOAK_KILL_EVERY:-20}
SAMPLE=${SY_SOAK_SAMPLE:-10}
CHUNK=60              # s per h2load run (each run opens new connections)
RSS_WINDOW=600        # s: RSS must be flat over the last 10 minutes...
RSS_THRESHOLD=5       # ...growing less than this many percent
DOWN_TIMES=(1 4 9)    # s a killed backend stays down, in turn (< KILL_EVERY)
DRAIN_TIMEOUT=5       # s, the config's drain_timeout
GRPC_HEALTH=${SY_SOAK_GRPC_HEALTH:-GRPC} # the gRPC service's health check type (GRPC or TCP)

die() { echo "soak: $*" >&2; exit 2; }
isnum() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
isnum "$MINUTES" || die "SY_SOAK_MINUTES must be a number of minutes, not '$MINUTES'"
for v in RELOADS RATE GRPC_RATE KILL_EVERY SAMPLE; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "SY_SOAK_$v must be a whole number, not '${!v}'"
done
DUR=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')
[ "$DUR" -ge 60 ] || die "SY_SOAK_MINUTES must be at least 1"
[ "$KILL_EVERY" -ge 12 ] || die "SY_SOAK_KILL_EVERY must be at least 12 (a backend stays down up to 9 s)"
[ "$RATE" -ge 4 ] || die "SY_SOAK_RATE must be at least 4"
[ "$GRPC_RATE" -ge 4 ] || die "SY_SOAK_GRPC_RATE must be at least 4"
[[ $GRPC_HEALTH =~ ^(GRPC|TCP)$ ]] || die "SY_SOAK_GRPC_HEALTH must be GRPC or TCP"
WARM=$((DUR / 4)); [ "$WARM" -gt 120 ] && WARM=120   # RSS before this is warm-up

for tool in h2load curl openssl timeout; do
  command -v "$tool" >/dev/null || die "$tool not found (h2load: apt-get install nghttp2-client)"
done
"$PY" -c 'import grpc, grpc_tools' 2>/dev/null ||
  die "python3-grpcio and python3-grpc-tools are needed (apt-get install python3-grpcio python3-grpc-tools)"
for b in switchyard switchyard-testbed; do
  [ -x "$BUILD/$b" ] || die "$BUILD/$b missing (run: make all, or set SY_SOAK_BUILD)"
done

# ---- process bookkeeping (as scripts/bench.sh) ---------------------------------------------
tmp=$(mktemp -d /tmp/switchyard-soak.XXXXXX)
pids=() # processes started here and not yet reaped
. "$ROOT/scripts/proc.sh" # untrack, descendants, stop_pid
cleanup() {
  trap - EXIT INT TERM
  local p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  if [ "${SY_SOAK_KEEP:-0}" = 1 ]; then echo "soak: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'echo "soak: interrupted" >&2; exit 130' INT TERM

now_ms() { date +%s%3N; }

# ---- results -------------------------------------------------------------------------------
RESULTS=${SY_SOAK_RESULTS:-$ROOT/build/soak/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS/load" || die "cannot create $RESULTS"
EVENTS=$RESULTS/events.csv
echo "epoch,elapsed_s,event,backend,detail" >"$EVENTS"
SAMPLES=$RESULTS/samples.csv
echo "elapsed_s,epoch,rss_kib,hwm_kib,fds,threads,cpu_s,active_connections,active_streams,requests_total,reloads_ok,kills,backend_down" >"$SAMPLES"
T0_MS=$(now_ms)
event() { # EVENT BACKEND DETAIL
  local t; t=$(now_ms)
  echo "$((t / 1000)).$(printf %03d $((t % 1000))),$(((t - T0_MS) / 1000)),$1,$2,$3" >>"$EVENTS"
}

# A private copy of the binaries: a rebuild of build/ during the run must not
# change what runs (nor fail a backend restart).
mkdir -p "$tmp/bin"
cp "$BUILD/switchyard" "$BUILD/switchyard-testbed" "$tmp/bin/" || die "cannot copy the binaries"
SY=$tmp/bin/switchyard
TB=$tmp/bin/switchyard-testbed

echo "== switchyard soak  $(date -u +%Y-%m-%dT%H:%M:%SZ): ${MINUTES} min, $RELOADS reloads, a backend kill every ${KILL_EVERY}s"
echo "   $(nproc) CPUs; binaries from $BUILD; results in $RESULTS"

# ---- ports (held by a helper under tests/integration/conftest.py's lock protocol) ------------
NPORTS=12
"${HELPER[@]}" ports "$NPORTS" --out "$tmp/ports" --parent $$ --max-seconds $((DUR + 900)) \
  >"$tmp/ports.log" 2>&1 &
pids+=($!)
for _i in $(seq 1 100); do [ -s "$tmp/ports" ] && break; sleep 0.1; done
read -r -a PORTS <"$tmp/ports" 2>/dev/null
[ "${#PORTS[@]}" -eq "$NPORTS" ] || die "no free ports: $(cat "$tmp/ports.log")"
P_HTTP=${PORTS[0]}; P_HTTPS=${PORTS[1]}; P_ADMIN=${PORTS[2]}
ADMIN=http://127.0.0.1:$P_ADMIN

# ---- certificate, gRPC stubs ---------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || die "openssl failed"
mkdir -p "$tmp/stubs"
"$PY" -m grpc_tools.protoc -I"$ROOT/tests/integration/grpc" --python_out="$tmp/stubs" \
  --grpc_python_out="$tmp/stubs" echo.proto >"$tmp/protoc.log" 2>&1 ||
  die "grpc_tools.protoc failed: $(cat "$tmp/protoc.log")"

# ---- backends --------------------------------------------------------------------------------
# Kill order interleaves the services; index -> name, kind, port.
BNAME=(h1-1 h2c-1 grpc-1 h1-2 h2c-2 grpc-2 h1-3 h2c-3 grpc-3)
BKIND=(tb tb grpc tb tb grpc tb tb grpc)
BPORT=("${PORTS[@]:3:9}")
BPID=()
addr_of() { echo "127.0.0.1:${BPORT[$1]}"; }
start_backend() { # INDEX -> 0 when it accepts on its port
  local i=$1 name=${BNAME[$1]} port=${BPORT[$1]} log=$tmp/backend-${BNAME[$1]}.log
  if [ "${BKIND[$i]}" = tb ]; then
    "$TB" --listen "127.0.0.1:$port" --name "$name" >>"$log" 2>&1 &
  else
    "${HELPER[@]}" grpc-server --stubs "$tmp/stubs" --port "$port" --name "$name" >>"$log" 2>&1 &
  fi
  BPID[i]=$!
  pids+=("${BPID[$i]}")
  wait_port "$port" "${BPID[$i]}" 100 && return 0
  stop_pid "${BPID[$i]}"
  return 1
}
for i in "${!BNAME[@]}"; do
  start_backend "$i" || die "backend ${BNAME[$i]} did not start: $(tail -n 3 "$tmp/backend-${BNAME[$i]}.log")"
done
echo "   backends: ${BNAME[*]} on ports ${BPORT[*]}"

# ---- proxy configs: two variants, alternated by the reloads --------------------------------------
write_config() { # a|b OUT
  local w1=1 w2=1 w3=1 h2to=10s lb=ROUND_ROBIN
  [ "$1" = b ] && { w1=3; w2=2; w3=1; h2to=12s; lb=LEAST_REQUEST; }
  cat >"$2" <<EOF
# switchyard soak (scripts/soak.sh), variant $1
listeners:
  - name: plain
    address: "127.0.0.1:$P_HTTP"
    protocol: HTTP
    url_map: main
  - name: tls
    address: "127.0.0.1:$P_HTTPS"
    protocol: HTTPS
    tls: {certificates: [{cert_file: "$tmp/cert.pem", key_file: "$tmp/key.pem"}]}
    url_map: main
admin: {address: "127.0.0.1:$P_ADMIN"}
access_log: {enabled: true, path: "$tmp/access.log", format: json}
drain_timeout: ${DRAIN_TIMEOUT}s
url_maps:
  - name: main
    default_service: svc-h1
    host_rules: [{hosts: ["*"], path_matcher: pm}]
    path_matchers:
      - name: pm
        default_service: svc-h1
        route_rules:
          - priority: 1
            match_rules: [{prefix_match: /h1/}]
            service: svc-h1
            route_action:
              timeout: 10s
              retry_policy: {retry_conditions: [5xx, connect-failure, refused-stream], num_retries: 3, per_try_timeout: 4s}
          - priority: 2
            match_rules: [{prefix_match: /h2/}]
            service: svc-h2c
            route_action:
              timeout: $h2to
              retry_policy: {retry_conditions: [5xx, connect-failure, refused-stream], num_retries: 3, per_try_timeout: 4s}
          - priority: 3
            match_rules: [{prefix_match: /switchyard.test.Echo/}]
            service: svc-grpc
            route_action:
              timeout: 10s
              retry_policy: {retry_conditions: [unavailable, 5xx, connect-failure, refused-stream], num_retries: 3}
backend_services:
  - name: svc-h1
    protocol: HTTP
    endpoints:
      - {address: "$(addr_of 0)", weight: $w1}
      - {address: "$(addr_of 3)", weight: $w2}
      - {address: "$(addr_of 6)", weight: $w3}
    connect_timeout: 1s
    health_checks: [hc-h1]
    circuit_breakers: {max_retries: 1000}
    outlier_detection: {base_ejection_time: 10s}
  - name: svc-h2c
    protocol: H2C
    endpoints:
      - {address: "$(addr_of 1)"}
      - {address: "$(addr_of 4)"}
      - {address: "$(addr_of 7)"}
    connect_timeout: 1s
    health_checks: [hc-h2c]
    circuit_breakers: {max_retries: 1000}
    outlier_detection: {base_ejection_time: 10s}
  - name: svc-grpc
    protocol: H2C
    locality_lb_policy: $lb
    endpoints:
      - {address: "$(addr_of 2)"}
      - {address: "$(addr_of 5)"}
      - {address: "$(addr_of 8)"}
    connect_timeout: 1s
    health_checks: [hc-grpc]
    circuit_breakers: {max_retries: 1000}
    outlier_detection: {base_ejection_time: 10s}
health_checks:
  - {name: hc-h1, type: HTTP, request_path: /healthz, check_interval: 1s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2}
  - {name: hc-h2c, type: H2C, request_path: /healthz, check_interval: 1s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2}
  - {name: hc-grpc, type: $GRPC_HEALTH, check_interval: 1s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2}
EOF
}
declare -A VERSION
for v in a b; do
  write_config "$v" "$tmp/config-$v.yaml"
  cp "$tmp/config-$v.yaml" "$RESULTS/config-$v.yaml"
  out=$("$SY" -t -c "$tmp/config-$v.yaml" 2>&1) || die "config $v is invalid: $out"
  VERSION[$v]=$(sed -n 's/.*(version \([0-9a-f]*\)).*/\1/p' <<<"$out")
  [ -n "${VERSION[$v]}" ] || die "no version in '$out'"
done
CFG=$tmp/switchyard.yaml
cp "$tmp/config-a.yaml" "$CFG"
CUR=a

# ---- proxy ------------------------------------------------------------------------------------------
"$SY" -c "$CFG" --workers 2 >"$RESULTS/proxy.stdout" 2>"$RESULTS/proxy.stderr" &
SYPID=$!
pids+=("$SYPID")
for port in "$P_HTTP" "$P_HTTPS" "$P_ADMIN"; do
  wait_port "$port" "$SYPID" 100 || die "switchyard did not start: $(tail -n 3 "$RESULTS/proxy.stderr")"
done
echo "   proxy pid $SYPID: http :$P_HTTP, https :$P_HTTPS, admin :$P_ADMIN (config version ${VERSION[a]})"

metrics() { curl -s -m 3 "$ADMIN/metrics"; }
metric() { # NAME-PREFIX -> sum of the series starting with it (empty if none)
  metrics | awk -v m="$1" 'index($0, m) == 1 && ($0 ~ "^" m "[{ ]") { s += $NF; n++ } END { if (n) printf "%d", s }'
}
config_version() { curl -s -m 3 "$ADMIN/config" | grep -o -m1 '"version": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{16\}'; }

# Every route answers (health checks may need a moment to mark endpoints up).
probe_ok=0
for _i in $(seq 1 50); do
  c1=$(curl -s -o /dev/null -w '%{http_code}' -m 3 "http://127.0.0.1:$P_HTTP/h1/probe")
  c2=$(curl -s -o /dev/null -w '%{http_code}' -m 3 --http2-prior-knowledge "http://127.0.0.1:$P_HTTP/h2/probe")
  c3=$(curl -s -o /dev/null -w '%{http_code}' -m 3 -k --http2 "https://127.0.0.1:$P_HTTPS/h2/probe")
  if [ "$c1 $c2 $c3" = "200 200 200" ]; then probe_ok=1; break; fi
  sleep 0.2
done
[ "$probe_ok" = 1 ] || die "probe requests answered $c1 $c2 $c3: $(tail -n 3 "$RESULTS/proxy.stderr")"

# ---- load --------------------------------------------------------------------------------------------
LOAD_START_MS=$(now_ms)
LOAD_END=$((LOAD_START_MS / 1000 + DUR))
head -c 1024 /dev/urandom | base64 -w 0 | head -c 1024 >"$tmp/body1k"
H="127.0.0.1:$P_HTTP"; S="127.0.0.1:$P_HTTPS"
CLIENTS="h1 h2c tls tlsh1"
client_cmd() { # NAME -> the h2load command line (without -D) in CMD
  case $1 in
    # backend delays keep requests in flight, so that a kill hits some of them
    h1) CMD=(h2load --h1 -c 4 --rps $((RATE / 4)) -H 'x-testbed-delay: 20ms'
             "http://$H/h1/h1" "http://$H/h2/h1") ;;
    h2c) CMD=(h2load -c 2 -m 16 --rps $((RATE / 2)) -H 'x-testbed-delay: 50ms' -H 'x-testbed-body-size: 8KiB'
              "http://$H/h1/h2c" "http://$H/h2/h2c") ;;
    tls) CMD=(h2load -c 2 -m 8 --rps $((RATE / 2)) "https://$S/h1/tls" "https://$S/h2/tls") ;;
    tlsh1) CMD=(h2load --h1 -c 2 --rps $((RATE / 2)) -H 'x-testbed-delay: 5ms' -d "$tmp/body1k"
                -H 'content-type: text/plain' "https://$S/h1/tlsh1" "https://$S/h2/tlsh1") ;;
  esac
}
client_loop() { # NAME: h2load runs of at most CHUNK s until LOAD_END (bounded in count)
  local name=$1 n=0 left chunk t0
  client_cmd "$name"
  while [ "$n" -lt $((DUR / 5 + 2)) ]; do
    left=$((LOAD_END - $(date +%s)))
    [ "$left" -ge 3 ] || break
    chunk=$CHUNK; [ "$left" -lt "$chunk" ] && chunk=$left
    n=$((n + 1))
    t0=$(date +%s)
    timeout -k 5 $((chunk + 30)) "${CMD[@]}" -D "$chunk" >"$RESULTS/load/$name.$(printf %03d $n).txt" 2>&1
    [ $(($(date +%s) - t0)) -lt $((chunk - 2)) ] && sleep 1 # ended early: no busy loop
  done
}
declare -A CPID
for c in $CLIENTS; do
  client_loop "$c" &
  CPID[$c]=$!
  pids+=("${CPID[$c]}")
done
"${HELPER[@]}" grpc-client --stubs "$tmp/stubs" --h2c "$H" --tls "$S" --ca "$tmp/cert.pem" \
  --rate "$GRPC_RATE" --seconds "$DUR" --stats "$RESULTS/grpc-stats.json" \
  --failures "$RESULTS/grpc-failures.jsonl" >"$RESULTS/grpc-client.log" 2>&1 &
CPID[grpc]=$!
pids+=("${CPID[grpc]}")
echo "   load: h2load ${CLIENTS// /, } at ~$RATE req/s each, gRPC ~$GRPC_RATE calls/s; ${DUR}s from $(date -u +%H:%M:%S)"

# ---- the run: samples, access-log rotation, kills, reloads ----------------------------------------------
RELOADS_OK=0; RELOADS_DONE=0; KILLS=0; DOWN=-1; DOWN_UNTIL=0; KILL_IDX=0; KILLS_OFF=0
NEXT_KILL=$((LOAD_START_MS + 10000))
NEXT_SAMPLE=$LOAD_START_MS
ROT=0; PROCESSED=0
PROXY_DEAD=""
reload_at() { echo $((LOAD_START_MS + DUR * 1000 * $1 / (RELOADS + 1))); }
NEXT_RELOAD=$(reload_at 1)
HZ=$(getconf CLK_TCK)

sample() {
  local rss hwm thr fds cpu ac as rq el
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SYPID/status" 2>/dev/null)
  hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SYPID/status" 2>/dev/null)
  thr=$(awk '/^Threads:/ { print $2 }' "/proc/$SYPID/status" 2>/dev/null)
  [ -n "$rss" ] || return 1
  fds=$(find "/proc/$SYPID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  cpu=$(awk -v hz="$HZ" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$SYPID/stat" 2>/dev/null)
  local m; m=$(metrics)
  ac=$(awk '/^switchyard_active_connections[ {]/ { s += $NF } END { printf "%d", s }' <<<"$m")
  as=$(awk '/^switchyard_active_streams[ {]/ { s += $NF } END { printf "%d", s }' <<<"$m")
  rq=$(awk '/^switchyard_requests_total[ {]/ { s += $NF } END { printf "%d", s }' <<<"$m")
  el=$((($(now_ms) - LOAD_START_MS) / 1000))
  echo "$el,$(date +%s),$rss,$hwm,$fds,$thr,$cpu,$ac,$as,$rq,$RELOADS_OK,$KILLS,$([ "$DOWN" -ge 0 ] && echo "${BNAME[$DOWN]}")" >>"$SAMPLES"
}
rotate_access_log() { # move the log aside, reopen (SIGUSR1), fold the previous ones into counters
  ROT=$((ROT + 1))
  mv "$tmp/access.log" "$tmp/access.$ROT.log" 2>/dev/null && kill -USR1 "$SYPID" 2>/dev/null
  # the file moved just now may still get lines until the proxy has reopened: fold it next time
  local files=() k
  for ((k = PROCESSED + 1; k < ROT; k++)); do [ -f "$tmp/access.$k.log" ] && files+=("$tmp/access.$k.log"); done
  PROCESSED=$((ROT - 1))
  [ "${#files[@]}" -gt 0 ] || return 0
  "${HELPER[@]}" accesslog --state "$RESULTS/accesslog-state.json" \
    --keep "$RESULTS/accesslog-not-ok.jsonl" "${files[@]}" && rm -f "${files[@]}"
}
do_reload() {
  local next=a t0 v=""
  [ "$CUR" = a ] && next=b
  cp "$tmp/config-$next.yaml" "$CFG.tmp" && mv -f "$CFG.tmp" "$CFG"
  kill -HUP "$SYPID" 2>/dev/null
  RELOADS_DONE=$((RELOADS_DONE + 1))
  t0=$(now_ms)
  for _i in $(seq 1 100); do # up to 10 s
    v=$(config_version)
    [ "$v" = "${VERSION[$next]}" ] && break
    sleep 0.1
  done
  if [ "$v" = "${VERSION[$next]}" ]; then
    RELOADS_OK=$((RELOADS_OK + 1)); CUR=$next
    event reload - "variant $next version $v in $(($(now_ms) - t0)) ms"
  else
    event reload-failed - "variant $next: GET /config still says '${v}' after 10 s"
    echo "   reload $RELOADS_DONE: variant $next did not take effect (version '${v}')"
  fi
}
kill_backend() {
  local i=$KILL_IDX
  KILL_IDX=$(((KILL_IDX + 1) % ${#BNAME[@]}))
  kill -KILL "${BPID[$i]}" 2>/dev/null
  wait "${BPID[$i]}" 2>/dev/null
  untrack "${BPID[$i]}"
  KILLS=$((KILLS + 1))
  DOWN=$i
  # each service gets each down time in turn (kills go h1, h2c, grpc, h1, ...)
  local d=${DOWN_TIMES[$((((KILLS - 1) / 3) % ${#DOWN_TIMES[@]}))]}
  DOWN_UNTIL=$(($(now_ms) + d * 1000))
  event kill "${BNAME[$i]}" "$(addr_of "$i")"
}
restart_backend() {
  local i=$DOWN _try
  for _try in 1 2 3 4 5; do
    if start_backend "$i"; then
      event restart "${BNAME[$i]}" "$(addr_of "$i")"
      DOWN=-1
      return 0
    fi
    sleep 1
  done
  event restart-failed "${BNAME[$i]}" "$(tail -n 1 "$tmp/backend-${BNAME[$i]}.log" | tr ',' ';')"
  echo "   backend ${BNAME[$i]} could not be restarted; no more kills"
  KILLS_OFF=1; DOWN=-1
}

max_ticks=$(((DUR + 60) * 5))
for ((tick = 0; tick < max_ticks; tick++)); do
  now=$(now_ms)
  [ "$now" -ge $((LOAD_END * 1000)) ] && break
  if ! kill -0 "$SYPID" 2>/dev/null; then
    wait "$SYPID" 2>/dev/null; rc=$?
    untrack "$SYPID"
    if [ "$rc" -gt 128 ]; then PROXY_DEAD="killed by SIG$(kill -l $((rc - 128)) 2>/dev/null)"; else PROXY_DEAD="exit $rc"; fi
    event proxy-died - "$PROXY_DEAD"
    echo "   the proxy DIED ($PROXY_DEAD): $(tail -n 2 "$RESULTS/proxy.stderr" | tr '\n' ' ')"
    break
  fi
  if [ "$now" -ge "$NEXT_SAMPLE" ]; then
    sample
    rotate_access_log
    NEXT_SAMPLE=$((NEXT_SAMPLE + SAMPLE * 1000))
    if [ $(((now - LOAD_START_MS) / 1000 % 60)) -lt "$SAMPLE" ]; then
      echo "   $(((now - LOAD_START_MS) / 1000))s: $(tail -n 1 "$SAMPLES" | awk -F, '{ printf "RSS %.1f MiB, fds %s, %s requests", $3 / 1024, $5, $10 }'), $RELOADS_OK reloads, $KILLS kills"
    fi
  fi
  if [ "$DOWN" -ge 0 ] && [ "$now" -ge "$DOWN_UNTIL" ]; then
    restart_backend
  elif [ "$DOWN" -lt 0 ] && [ "$KILLS_OFF" = 0 ] && [ "$now" -ge "$NEXT_KILL" ] &&
       [ "$now" -lt $(((LOAD_END - 15) * 1000)) ]; then
    kill_backend
    NEXT_KILL=$((NEXT_KILL + KILL_EVERY * 1000))
  fi
  if [ "$RELOADS_DONE" -lt "$RELOADS" ] && [ "$now" -ge "$NEXT_RELOAD" ]; then
    do_reload
    NEXT_RELOAD=$(reload_at $((RELOADS_DONE + 1)))
  fi
  sleep 0.2
done
[ "$DOWN" -ge 0 ] && restart_backend
# reloads the loop did not get to (a slow machine): do them now so the count is what was asked
while [ -z "$PROXY_DEAD" ] && [ "$RELOADS_DONE" -lt "$RELOADS" ]; do do_reload; done

# ---- end of the load --------------------------------------------------------------------------
echo "   load done; waiting for the clients"
for c in "${!CPID[@]}"; do
  for _i in $(seq 1 600); do kill -0 "${CPID[$c]}" 2>/dev/null || break; sleep 0.1; done
  stop_pid "${CPID[$c]}"
done
ALIVE=0; kill -0 "$SYPID" 2>/dev/null && [ -z "$PROXY_DEAD" ] && ALIVE=1
IDLE_STREAMS="?"; IDLE_CONNS="?"; M_RELOADS="?"; M_RELOAD_FAIL="?"
if [ "$ALIVE" = 1 ]; then
  sample
  for _i in $(seq 1 50); do # up to 10 s for the last exchanges to end
    IDLE_STREAMS=$(metric switchyard_active_streams)
    [ "$IDLE_STREAMS" = 0 ] && break
    sleep 0.2
  done
  IDLE_CONNS=$(metric switchyard_active_connections)
  M_RELOADS=$(metric switchyard_config_reloads_total)
  M_RELOAD_FAIL=$(metric switchyard_config_reload_failures_total)
  metrics >"$RESULTS/metrics-end.txt"
  curl -s -m 3 "$ADMIN/backends" >"$RESULTS/backends-end.json"
  rotate_access_log
  sleep 1
  rotate_access_log # folds the one moved just before
  PROXY_EXIT="?"
  kill -TERM "$SYPID"
  for _i in $(seq 1 $(((DRAIN_TIMEOUT + 10) * 10))); do kill -0 "$SYPID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SYPID" 2>/dev/null; then
    PROXY_EXIT="still running $((DRAIN_TIMEOUT + 10)) s after SIGTERM"
    stop_pid "$SYPID"
  else
    wait "$SYPID"; rc=$?
    untrack "$SYPID"
    if [ "$rc" -gt 128 ]; then PROXY_EXIT="killed by SIG$(kill -l $((rc - 128)) 2>/dev/null)"; else PROXY_EXIT="exit $rc"; fi
  fi
else
  PROXY_EXIT="(had died: ${PROXY_DEAD:-?})"
fi
# fold whatever access log is left
left=(); for f in "$tmp"/access.*.log "$tmp/access.log"; do [ -f "$f" ] && left+=("$f"); done
[ "${#left[@]}" -gt 0 ] && "${HELPER[@]}" accesslog --state "$RESULTS/accesslog-state.json" \
  --keep "$RESULTS/accesslog-not-ok.jsonl" "${left[@]}"

# the proxy's own log: lines per level, and the most frequent warn/error messages
LEVELS=$(awk '{ c[$2]++ } END { for (l in c) printf "%s %d, ", l, c[l] }' "$RESULTS/proxy.stderr" | sed 's/, $//')
awk '$2 == "warn" || $2 == "error" { $1 = ""; print }' "$RESULTS/proxy.stderr" |
  sed -E 's/\b[0-9]+(\.[0-9]+){3}:[0-9]+\b/ADDR/g; s/\b[0-9]+(ms)?\b/N\1/g' |
  sort | uniq -c | sort -rn | head -n 8 >"$RESULTS/stderr-top.txt"

cat >"$RESULTS/meta.txt" <<EOF
command=$COMMAND
started=$(date -u -d "@$((T0_MS / 1000))" +%Y-%m-%dT%H:%M:%SZ)
duration_s=$DUR
warmup_s=$WARM
sample_s=$SAMPLE
rss_window_s=$RSS_WINDOW
rss_threshold_pct=$RSS_THRESHOLD
proxy_pid=$SYPID
proxy_alive_at_end=$ALIVE
proxy_death=$PROXY_DEAD
proxy_exit=$PROXY_EXIT
idle_active_streams=$IDLE_STREAMS
idle_active_connections=$IDLE_CONNS
reloads_wanted=$RELOADS
reloads_ok=$RELOADS_OK
metric_reloads=$M_RELOADS
metric_reload_failures=$M_RELOAD_FAIL
stderr_levels=$LEVELS
clients=$CLIENTS
grpc_health=$GRPC_HEALTH
rates=h2load ~$RATE req/s per client, gRPC ~$GRPC_RATE calls/s; a kill every ${KILL_EVERY}s
EOF
echo
"${HELPER[@]}" report --dir "$RESULTS" --meta "$RESULTS/meta.txt"
