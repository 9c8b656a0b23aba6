# scripts/proc.sh — shell helpers shared by scripts/bench.sh,
# scripts/instr.sh and scripts/soak.sh (sourced, not run): config templates
# (render) and process bookkeeping. Every background
# process a script starts goes into its `pids` array; each is stopped by pid:
# SIGTERM to it and its descendants, SIGKILL to what is left after a bounded
# wait, then reaped.

untrack() { # PID: no longer ours to stop
  local p keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

descendants() { # PID -> PID and all its descendants
  local p
  echo "$1"
  for p in $(pgrep -P "$1" 2>/dev/null); do descendants "$p"; done
}

stop_pid() { # PID [TENTHS]: TERM it and its descendants, KILL what is left after TENTHS/10 s (30)
  local pid=$1 tenths=${2:-30} all p _i
  untrack "$pid"
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  all=$(descendants "$pid")
  for p in $all; do kill -TERM "$p" 2>/dev/null; done
  for _i in $(seq 1 "$tenths"); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  for p in $all; do kill -KILL "$p" 2>/dev/null; done
  wait "$pid" 2>/dev/null
  return 0
}

render() { # TEMPLATE OUT KEY=VALUE... : replace @KEY@ with VALUE
  local in=$1 out=$2 kv k v script=()
  shift 2
  for kv in "$@"; do
    k=${kv%%=*}; v=${kv#*=}
    v=${v//\\/\\\\}; v=${v//|/\\|}; v=${v//&/\\&}
    script+=(-e "s|@$k@|$v|g")
  done
  sed "${script[@]}" "$in" >"$out"
}

wait_port() { # PORT PID [TENTHS] -> 0 once it accepts; 1 if PID died or TENTHS/10 s (50) passed
  local _i
  for _i in $(seq 1 "${3:-50}"); do
    kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

haproxy_opts() { # SCENARIO TMP -> HAPROXY_BIND, HAPROXY_SERVER: bench/haproxy.cfg.in's options
  HAPROXY_BIND="" HAPROXY_SERVER=""
  case $1 in
    h2c) HAPROXY_BIND="proto h2"; HAPROXY_SERVER="proto h2" ;;
    h2c-h1) HAPROXY_BIND="proto h2" ;;
    tls) HAPROXY_BIND="ssl crt $2/haproxy.pem alpn h2,http/1.1" ;;
  esac
}
