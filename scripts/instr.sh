#!/usr/bin/env bash
# scripts/instr.sh — user-space instructions per request of switchyard,
# counted by valgrind's callgrind: deterministic, so two builds can be
# compared on a busy machine where CPU time is noise.
#
#   scripts/instr.sh [BUILD_DIR ...]     default: build
#
# For each build folder and scenario (h1: HTTP/1.1 keep-alive → HTTP/1.1
# backend; h2c: h2c → h2c backend), the proxy runs under callgrind with one
# worker in front of switchyard-testbed; after a warm-up the counters are
# zeroed (callgrind_control -z), SY_INSTR_N requests are sent with h2load,
# and the counters dumped: Ir / N is printed. Environment: SY_INSTR_N
# (default 2000), SY_INSTR_SCENARIOS (default "h1 h2c").
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
N=${SY_INSTR_N:-2000}
SCEN=${SY_INSTR_SCENARIOS:-h1 h2c}
BUILDS=("$@"); [ ${#BUILDS[@]} -eq 0 ] && BUILDS=(build)
for t in valgrind callgrind_control h2load; do
  command -v $t >/dev/null || { echo "instr: $t not found (apt-get install valgrind nghttp2-client)" >&2; exit 1; }
done
tmp=$(mktemp -d /tmp/switchyard-instr.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

printf '%-28s %-5s %14s\n' build scenario instr/request
for b in "${BUILDS[@]}"; do
  [ -x "$b/switchyard" ] && [ -x "$b/switchyard-testbed" ] || { echo "instr: $b/switchyard missing" >&2; exit 1; }
  for sc in $SCEN; do
    be=$(port); px=$(port)
    "$b/switchyard-testbed" --listen "127.0.0.1:$be" >"$tmp/tb.log" 2>&1 & tb=$!; pids+=($tb)
    proto=HTTP; [ "$sc" = h2c ] && proto=H2C
    cat >"$tmp/sy.yaml" <<YAML
listeners:
  - {name: l, address: "127.0.0.1:$px", protocol: HTTP, url_map: m}
access_log: {enabled: false}
url_maps:
  - {name: m, default_service: b}
backend_services:
  - name: b
    protocol: $proto
    endpoints: [{address: "127.0.0.1:$be"}]
YAML
    wait_port "$be" || { echo "instr: testbed did not start" >&2; exit 1; }
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" \
      "$b/switchyard" -c "$tmp/sy.yaml" --workers 1 >"$tmp/sy.log" 2>&1 & sy=$!; pids+=($sy)
    wait_port "$px" || { echo "instr: proxy did not start" >&2; cat "$tmp/sy.log"; exit 1; }
    args=(-c 10 -H "x-testbed-body-size: 40"); [ "$sc" = h1 ] && args+=(--h1) || args+=(-m 32)
    h2load "${args[@]}" -n 500 "http://127.0.0.1:$px/" >/dev/null 2>&1     # warm-up
    callgrind_control -z "$sy" >/dev/null 2>&1
    out=$(h2load "${args[@]}" -n "$N" "http://127.0.0.1:$px/" 2>&1)
    ok=$(echo "$out" | sed -n 's/.*status codes: \([0-9]*\) 2xx.*/\1/p')
    rm -f "$tmp"/cg.*
    callgrind_control -d "$sy" >/dev/null 2>&1
    for _ in $(seq 1 50); do ls "$tmp"/cg.* >/dev/null 2>&1 && break; sleep 0.1; done
    sleep 0.5
    ir=$(cat "$tmp"/cg.* 2>/dev/null | sed -n 's/^summary: *\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
    kill "$sy" "$tb" 2>/dev/null; wait "$sy" "$tb" 2>/dev/null; pids=()
    if [ "${ok:-0}" != "$N" ]; then echo "instr: $b $sc: only ${ok:-0}/$N 2xx" >&2; fi
    printf '%-28s %-5s %14d\n' "$b" "$sc" $((ir / N))
  done
done
