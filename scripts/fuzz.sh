#!/usr/bin/env bash
# scripts/fuzz.sh DIR SECONDS TARGET... — run each libFuzzer target DIR/fuzz_TARGET
# for SECONDS on a scratch copy of tests/fuzz/corpus/TARGET (the seeds in the
# repo stay as they are). Exits 1 if any target found a crash, leak or
# sanitizer report; the reproducer is left in DIR (crash-*, leak-*, ...).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
dir=$1 secs=$2; shift 2
rc=0 passed=0 failed=0
for t in "$@"; do
  work=$(mktemp -d /tmp/switchyard-fuzz-$t.XXXXXX)
  cp -r "tests/fuzz/corpus/$t/." "$work/" 2>/dev/null || true
  log="$dir/fuzz_$t.log"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$dir/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/" "$work" >"$log" 2>&1
  r=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
  if [ $r -eq 0 ]; then
    echo "fuzz: $t: ok, ${runs:-?} inputs in ${secs}s, $cov"
    passed=$((passed + 1))
  else
    echo "fuzz: $t: FAILED (exit $r); log $log:"; grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -5
    rc=1 failed=$((failed + 1))
  fi
  rm -rf "$work"
done
echo "fuzz: $passed passed, $failed failed"
exit $rc
