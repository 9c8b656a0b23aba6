#!/usr/bin/env bash
# scripts/layers.sh — the folders of src/ form a one-way stack (DESIGN.md):
#   listener → exchange → urlmap → backend → upstream, over config, http, core.
# Each folder may include only the folders listed for it here; "top" is
# src/*.h (runtime.h: the snapshot main.c owns). Run by `make lint` and
# `make test`; prints every include that breaks the stack and exits 1.
set -uo pipefail
cd "$(dirname "$0")/.."
declare -A allowed=(
  [core]="core"
  [http]="http core"
  [config]="config core"
  [urlmap]="urlmap config http core"
  [backend]="backend config http core"
  [upstream]="upstream config http core"
  [exchange]="exchange urlmap backend upstream top config http core"
  [listener]="listener exchange top config http core"
  [healthcheck]="healthcheck backend top config http core"
  [admin]="admin healthcheck backend top config http core"
  [testbed]="testbed http core"
  [tools]="tools exchange urlmap top config http core"
)
rc=0
for f in src/*/*.c src/*/*.h; do
  dir=$(basename "$(dirname "$f")")
  ok=${allowed[$dir]:-}
  if [ -z "$ok" ]; then
    echo "layers: $f: folder '$dir' has no entry in scripts/layers.sh"; rc=1; continue
  fi
  while IFS= read -r inc; do
    case "$inc" in
      */*) to=${inc%%/*} ;;
      *-t.h) to=$dir ;;          # a types header next to the file
      *) to=top ;;
    esac
    case " $ok " in
      *" $to "*) ;;
      *) echo "layers: $f includes \"$inc\": $dir may include only: $ok"; rc=1 ;;
    esac
  done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f")
done
[ $rc -eq 0 ] && echo "layers: ok (listener → exchange → urlmap → backend → upstream)"
exit $rc
