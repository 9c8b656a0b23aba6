#!/usr/bin/env bash
# scripts/instr.sh — user-space instructions per request, counted by
# valgrind's callgrind: deterministic, so two builds (or switchyard and a
# peer) can be compared on a busy machine where CPU time is noise.
#
#   scripts/instr.sh                  switchyard of $SY_INSTR_BUILD (default build)
#                                     and the peers haproxy, nghttpx, nginx
#   scripts/instr.sh BUILD_DIR        the same, switchyard of BUILD_DIR
#   scripts/instr.sh B1 B2 ...        switchyard of each build only (compare builds)
#
# Scenarios (all in front of the same backend, switchyard-testbed, which
# answers `x-testbed-body-size: 40` with a 40-byte body over HTTP/1.1 and h2c
# on one port):
#   h1      HTTP/1.1 keep-alive client (h2load --h1 -c10)      -> HTTP/1.1 backend
#   h2c     h2c prior-knowledge client (h2load -c10 -m32)      -> h2c backend
#   tls     TLS h2 client via ALPN (h2load -c10 -m32, https)   -> HTTP/1.1 backend
#   h2c-h1  h2c prior-knowledge client (h2load -c10 -m32)      -> HTTP/1.1 backend
# The proxy runs under callgrind (--trace-children=yes: every process of it,
# e.g. nginx's master and worker, is counted) with the configs of `make bench`
# (bench/*.in: one worker/thread, keep-alive both sides, X-Forwarded-For, no
# access log, haproxy `http-reuse always`). After one probe request and a
# warm-up of SY_INSTR_WARMUP requests the counters of all its processes are
# zeroed (callgrind_control -z PID, each), SY_INSTR_N requests are sent,
# every process's counters are dumped (callgrind_control -d PID) and summed:
# Ir / N is printed. A cell whose run did not get N 2xx answers is marked.
# A cell a peer cannot do is n/a (nginx cannot proxy to an h2 backend).
#
# Environment: SY_INSTR_N (2000), SY_INSTR_WARMUP (500), SY_INSTR_SCENARIOS
# ("h1 h2c tls h2c-h1"), SY_INSTR_PROXIES ("switchyard haproxy nghttpx nginx";
# "switchyard" when two or more build folders are given), SY_INSTR_BUILD,
# SY_INSTR_KEEP (a folder: each cell's callgrind dumps are copied there as
# SCENARIO-LABEL-cg.PID[.N], for callgrind_annotate).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
N=${SY_INSTR_N:-2000}
WARM=${SY_INSTR_WARMUP:-500}
SCEN=${SY_INSTR_SCENARIOS:-h1 h2c tls h2c-h1}
BUILDS=("$@")
if [ ${#BUILDS[@]} -eq 0 ]; then BUILDS=("${SY_INSTR_BUILD:-build}"); fi
if [ ${#BUILDS[@]} -ge 2 ]; then PROXIES=${SY_INSTR_PROXIES:-switchyard}
else PROXIES=${SY_INSTR_PROXIES:-switchyard haproxy nghttpx nginx}; fi
HDR="x-testbed-body-size: 40"
for t in valgrind callgrind_control h2load curl openssl; do
  command -v $t >/dev/null || { echo "instr: $t not found (SY_DEPS_BENCH=1 scripts/deps.sh)" >&2; exit 1; }
done
for px in $PROXIES; do
  case $px in
    switchyard) ;;
    haproxy|nghttpx|nginx) command -v "$px" >/dev/null || { echo "instr: $px not found (SY_DEPS_BENCH=1 scripts/deps.sh)" >&2; exit 1; } ;;
    *) echo "instr: unknown proxy $px" >&2; exit 1 ;;
  esac
done
for b in "${BUILDS[@]}"; do
  [ -x "$b/switchyard" ] && [ -x "$b/switchyard-testbed" ] || { echo "instr: $b/switchyard missing (make all B=$b)" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/switchyard-instr.XXXXXX)
chmod 755 "$tmp"
pids=()
. "$ROOT/scripts/proc.sh" # untrack, descendants, stop_pid
cleanup() {
  trap - EXIT INT TERM
  local p
  for p in "${pids[@]}"; do stop_pid "$p" 50; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "instr: interrupted" >&2; exit 130' INT TERM
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
last_err() { grep -v '^\s*$' "$1" 2>/dev/null | grep -v '^==[0-9]*==' | tail -n 1 | cut -c1-140; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || { echo "instr: openssl failed" >&2; exit 1; }
cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/haproxy.pem"
chmod 644 "$tmp"/*.pem
mkdir -m 1777 "$tmp/vgdb"
VGP=--vgdb-prefix=$tmp/vgdb/vgdb-pipe # valgrind's FIFOs in the temp dir, removed with it

# proxy_cmd PROXY SCENARIO PORT BACKEND_PORT BUILD -> CMD (array) and PLOG, or
# returns 1 with NA set. The configs are bench/*.in, rendered as scripts/bench.sh does.
proxy_cmd() {
  local px=$1 sc=$2 port=$3 be=$4 b=$5 scheme=http cfg
  [ "$sc" = tls ] && scheme=https
  PLOG=$tmp/$px-$sc.out
  case $px in
    switchyard)
      local lproto=HTTP ltls="" bproto=HTTP
      if [ "$sc" = tls ]; then
        lproto=HTTPS
        ltls="    tls: {certificates: [{cert_file: \"$tmp/cert.pem\", key_file: \"$tmp/key.pem\"}]}"
      fi
      [ "$sc" = h2c ] && bproto=H2C
      cfg=$tmp/switchyard-$sc.yaml
      render bench/switchyard.yaml.in "$cfg" PORT="$port" BACKEND_PORT="$be" \
        LISTEN_PROTO="$lproto" LISTEN_TLS="$ltls" BACKEND_PROTO="$bproto"
      CMD=("$ROOT/$b/switchyard" -c "$cfg" --workers 1 --log-level warn)
      [ "${b:0:1}" = / ] && CMD[0]=$b/switchyard
      ;;
    haproxy)
      haproxy_opts "$sc" "$tmp"
      cfg=$tmp/haproxy-$sc.cfg
      render bench/haproxy.cfg.in "$cfg" PORT="$port" BACKEND_PORT="$be" \
        BIND_OPTS="$HAPROXY_BIND" SERVER_OPTS="$HAPROXY_SERVER" SCHEME="$scheme"
      CMD=(haproxy -db -f "$cfg")
      ;;
    nghttpx)
      local fopts=";no-tls" bopts=""
      [ "$sc" = tls ] && fopts=""
      [ "$sc" = h2c ] && bopts=";;proto=h2"
      cfg=$tmp/nghttpx-$sc.conf
      render bench/nghttpx.conf.in "$cfg" PORT="$port" BACKEND_PORT="$be" DIR="$tmp" \
        FRONTEND_OPTS="$fopts" BACKEND_OPTS="$bopts" KEY="$tmp/key.pem" CERT="$tmp/cert.pem"
      CMD=(nghttpx --conf="$cfg")
      ;;
    nginx)
      if [ "$sc" = h2c ]; then NA="n/a (nginx cannot proxy to an HTTP/2 backend)"; return 1; fi
      local lopts=""
      case $sc in tls) lopts="ssl http2" ;; h2c-h1) lopts="http2" ;; esac
      mkdir -p "$tmp/nginx-proxy-tmp"
      cfg=$tmp/nginx-$sc.conf
      render bench/nginx.conf.in "$cfg" PORT="$port" BACKEND_PORT="$be" DIR="$tmp" \
        LISTEN_OPTS="$lopts" KEY="$tmp/key.pem" CERT="$tmp/cert.pem"
      # As root, nginx's worker would switch to user nobody after the fork and
      # could no longer open the vgdb FIFOs its valgrind created as root:
      # callgrind_control could not reach it. So the worker stays root here.
      sed -i '1i user root;' "$cfg"
      CMD=(nginx -p "$tmp" -c "$cfg" -e "$tmp/nginx-proxy-error.log")
      ;;
  esac
  return 0
}

client_args() { # SCENARIO PORT -> CARGS (h2load arguments without -n)
  case $1 in
    h1) CARGS=(--h1 -c 10 -H "$HDR" "http://127.0.0.1:$2/") ;;
    h2c | h2c-h1) CARGS=(-c 10 -m 32 -H "$HDR" "http://127.0.0.1:$2/") ;;
    tls) CARGS=(-c 10 -m 32 -H "$HDR" --tls13-ciphers=TLS_AES_128_GCM_SHA256 "https://127.0.0.1:$2/") ;;
  esac
}
probe() { # SCENARIO PORT -> 0 if one request answers 200 with the 40-byte body
  local a=(-s -o /dev/null -w '%{http_code} %{size_download}' -m 30 -H "$HDR") code
  case $1 in
    h1) code=$(curl "${a[@]}" --http1.1 "http://127.0.0.1:$2/") ;;
    h2c | h2c-h1) code=$(curl "${a[@]}" --http2-prior-knowledge "http://127.0.0.1:$2/") ;;
    tls) code=$(curl "${a[@]}" -k --http2 "https://127.0.0.1:$2/") ;;
  esac
  PROBE=$code
  [ "$code" = "200 40" ]
}

RES=$tmp/results.tsv # scenario proxy instr/request mark
: >"$RES"
# cell PROXY LABEL SCENARIO BUILD: one measurement, appended to $RES
cell() {
  local px=$1 label=$2 sc=$3 b=$4 be pport tb vp ok ir p procs out np _i mark=""
  NA=""
  be=$(port); pport=$(port)
  if ! proxy_cmd "$px" "$sc" "$pport" "$be" "$b"; then
    printf '%s\t%s\t%s\t%s\n' "$sc" "$label" "" "$NA" >>"$RES"; echo "  $sc $label: $NA"; return 0
  fi
  "$b/switchyard-testbed" --listen "127.0.0.1:$be" >"$tmp/tb.log" 2>&1 & tb=$!; pids+=("$tb")
  wait_port "$be" "$tb" 600 || { echo "instr: testbed did not start: $(last_err "$tmp/tb.log")" >&2; exit 1; }
  rm -rf "$tmp/cg"; mkdir -m 1777 "$tmp/cg"
  valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$tmp/cg/cg.%p" "$VGP" \
    "${CMD[@]}" >"$PLOG" 2>&1 & vp=$!; pids+=("$vp")
  if ! wait_port "$pport" "$vp" 600; then
    mark="n/a (did not start: $(last_err "$PLOG"))"
  elif ! probe "$sc" "$pport"; then
    mark="n/a (probe answered '$PROBE')"
  fi
  if [ -z "$mark" ]; then
    client_args "$sc" "$pport"
    timeout -k 5 300 h2load "${CARGS[@]}" -n "$WARM" >"$tmp/warm.out" 2>&1 # warm-up
    sleep 0.5
    procs=$(descendants "$vp")
    for p in $procs; do timeout 30 callgrind_control "$VGP" -z "$p" >/dev/null 2>&1; done
    out=$(timeout -k 5 600 h2load "${CARGS[@]}" -n "$N" 2>&1)
    ok=$(echo "$out" | sed -n 's/.*status codes: \([0-9]*\) 2xx.*/\1/p')
    rm -f "$tmp"/cg/*
    np=0
    for p in $procs; do timeout 30 callgrind_control "$VGP" -d "$p" >/dev/null 2>&1; np=$((np + 1)); done
    for _i in $(seq 1 100); do # every process writes one dump file
      [ "$(find "$tmp/cg" -type f | wc -l)" -ge "$np" ] && break
      sleep 0.1
    done
    sleep 0.5
    if [ -n "${SY_INSTR_KEEP:-}" ]; then # the dumps, for callgrind_annotate
      mkdir -p "$SY_INSTR_KEEP" && for p in "$tmp"/cg/*; do cp "$p" "$SY_INSTR_KEEP/$sc-$label-${p##*/}"; done
    fi
    ir=$(cat "$tmp"/cg/* 2>/dev/null | sed -n 's/^summary: *\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
    [ "$(find "$tmp/cg" -type f | wc -l)" -lt "$np" ] && mark="(dumps of only $(find "$tmp/cg" -type f | wc -l)/$np processes)"
    [ "${ok:-0}" != "$N" ] && mark="(only ${ok:-0}/$N 2xx)${mark:+ $mark}"
    [ "$np" -gt 1 ] && mark="${mark:+$mark }[$np processes]"
    printf '%s\t%s\t%s\t%s\n' "$sc" "$label" "$((ir / N))" "$mark" >>"$RES"
    echo "  $sc $label: $((ir / N)) instr/request ${ok:-0}/$N 2xx $mark"
  else
    printf '%s\t%s\t%s\t%s\n' "$sc" "$label" "" "$mark" >>"$RES"; echo "  $sc $label: $mark"
  fi
  stop_pid "$vp" 50; stop_pid "$tb" 50
}

echo "== instructions per request (callgrind; $N requests after $WARM warm-up; valgrind $(valgrind --version | sed 's/valgrind-//'))"
for sc in $SCEN; do
  case $sc in h1 | h2c | tls | h2c-h1) ;; *) echo "instr: unknown scenario $sc" >&2; exit 1 ;; esac
  for px in $PROXIES; do
    if [ "$px" = switchyard ]; then
      for b in "${BUILDS[@]}"; do
        label=switchyard; [ ${#BUILDS[@]} -ge 2 ] && label="switchyard:$b"
        cell switchyard "$label" "$sc" "$b"
      done
    else
      cell "$px" "$px" "$sc" "${BUILDS[0]}"
    fi
  done
done

echo
/usr/bin/python3 - "$RES" "${#BUILDS[@]}" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
multi = int(sys.argv[2]) >= 2
head = ["scenario", "proxy", "instr/request", "switchyard/peer"]
if multi:
    head[3] = "vs first build"
out = []
for sc, px, ir, mark in rows:
    ref = next((r[2] for r in rows if r[0] == sc and r[1].startswith("switchyard") and r[2]), None)
    ratio = ""
    if ir and ref and (multi or not px.startswith("switchyard")):
        ratio = f"{int(ref) / int(ir):.2f}" if not multi else f"{int(ir) / int(ref):.3f}"
    cell = f"{int(ir):,}" if ir else ""
    out.append([sc, px, (cell + " " + mark).strip() if cell else mark, ratio])
w = [max(len(h), *(len(r[i]) for r in out)) if out else len(h) for i, h in enumerate(head)]
fmt = lambda r: "  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r))
print(fmt(head)); print(fmt(["-" * x for x in w]))
prev = None
for r in out:
    if prev is not None and r[0] != prev:
        print()
    prev = r[0]
    print(fmt(r))
print()
print("  instr/request: user-space instructions (callgrind Ir) of every process and thread of the proxy / requests")
print("  switchyard/peer < 1: switchyard executes fewer instructions per request" if not multi else
      "  vs first build: this build / the first build's switchyard")
EOF
