#!/usr/bin/env bash
# `make run`: start three testbed backends and the proxy on config/demo.yaml,
# print what to try, and stop everything on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${SY_DEMO_PORT:-8080}
export SY_DEMO_PORT=$port
pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo stopped"
}
trap cleanup INT TERM EXIT
build/switchyard-testbed --listen "127.0.0.1:${SY_DEMO_LEGACY1:-9001}" --name legacy-1 & pids+=($!)
build/switchyard-testbed --listen "127.0.0.1:${SY_DEMO_LEGACY2:-9002}" --name legacy-2 & pids+=($!)
build/switchyard-testbed --listen "127.0.0.1:${SY_DEMO_ORDERS:-9003}" --name orders-1 & pids+=($!)
build/switchyard -c config/demo.yaml --workers 2 & pids+=($!)
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
cat <<TXT

switchyard is listening on http://127.0.0.1:$port (access log below; Ctrl-C stops everything)

  curl -s http://127.0.0.1:$port/                   # legacy monolith (legacy-1 / legacy-2 in turn)
  curl -s http://127.0.0.1:$port/api/orders/42      # moved to the orders service
  curl -s -H 'X-Forwarded-For: 203.0.113.7' http://127.0.0.1:$port/  # what the backend sees
  curl -s -H 'x-testbed-delay: 6s' http://127.0.0.1:$port/api/orders # 504 after the 5s timeout
  curl -s -H 'x-testbed-status: 503' -i http://127.0.0.1:$port/      # a backend's own error

The status page: http://127.0.0.1:${SY_DEMO_ADMIN_PORT:-9901}/ (metrics: /metrics, endpoints: /backends)
Where a request goes, and why: build/switchyard explain -c config/demo.yaml http://127.0.0.1:$port/api/orders/42

TXT
wait "${pids[@]}"
