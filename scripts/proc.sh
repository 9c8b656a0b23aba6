# scripts/proc.sh — process bookkeeping shared by scripts/bench.sh,
# scripts/instr.sh and scripts/soak.sh (sourced, not run). Every background
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
