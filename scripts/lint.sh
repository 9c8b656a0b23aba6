#!/usr/bin/env bash
# make lint: banned functions, then clang-format (report only).
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
files=$(ls src/*.c src/*.h src/*/*.c src/*/*.h tests/unit/*.c tests/unit/*.h 2>/dev/null)
# Calls only: the name followed by "(" (comments that mention a word are fine).
if grep -nE '(^|[^a-z_])(sprintf|strcpy|strcat|atoi|strtok|gets)\s*\(' $files; then
  echo "lint: banned function (use snprintf, memcpy with lengths, strtol, strtok_r)"
  rc=1
fi
scripts/layers.sh || rc=1
if command -v clang-format >/dev/null; then
  n=$(for f in $files; do clang-format --dry-run "$f" 2>&1 | grep -c 'warning:'; done | awk '{s+=$1} END {print s+0}')
  echo "lint: clang-format would change $n places"
fi
exit $rc
