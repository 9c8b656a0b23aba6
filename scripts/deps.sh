#!/usr/bin/env bash
# Install the Debian packages switchyard needs to build, run and test.
# As root: installs what is missing with apt-get. Otherwise: prints the command.
set -euo pipefail
pkgs=(build-essential pkg-config clang libclang-rt-14-dev valgrind
      libnghttp2-dev libevent-dev libc-ares-dev libssl-dev libyaml-dev libhttp-parser-dev libpcre2-dev
      libsystemd-dev   # sd_notify (src/core/notify.c); optional to build, wanted to test
      curl openssl procps strace nghttp2-client nghttp2-proxy
      python3 python3-pytest python3-h2 python3-httpx python3-grpcio python3-grpc-tools
      python3-websockets python3-dnslib python3-yaml
      systemd          # systemd-analyze verify of deploy/systemd (test_deploy.py)
      prometheus       # promtool check metrics on /metrics (test_metrics.py)
      chromium)        # headless: the admin status page (test_status_page.py)
# make bench: load generators (wrk; h2load is in nghttp2-client), the peers
# (haproxy, nghttpx in nghttp2-proxy, nginx-light), openssl for a throwaway
# certificate, procps for pgrep.
[ "${SY_DEPS_BENCH:-0}" = 1 ] && pkgs+=(valgrind wrk haproxy nginx-light nghttp2-proxy nghttp2-client openssl procps)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: missing packages; run:"
  echo "  sudo apt-get install -y ${missing[*]}"
  exit 1
fi
