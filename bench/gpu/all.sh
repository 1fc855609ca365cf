#!/usr/bin/env bash
# The one GPU-machine run: source the prelude (deps, full build), then run every part script named
# (default: every bench/gpu/*.sh but this one and the prelude), each with its own time limit, its
# output kept in $OUT/<part>.log, and a table of the parts' last lines printed at the end.
#   usage (repository root):  bash bench/gpu/all.sh [PART...]     KILN_PART_LIMIT_S (default 240)
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
source bench/gpu/prelude.sh
parts=("$@")
if [ ${#parts[@]} -eq 0 ]; then
  for f in bench/gpu/*.sh; do
    n=$(basename "$f" .sh); [[ $n == all || $n == prelude ]] || parts+=("$n")
  done
fi
declare -a rows=()
for p in "${parts[@]}"; do
  t0=$SECONDS
  echo "================ part $p"
  timeout -k 10 "${KILN_PART_LIMIT_S:-240}" bash "bench/gpu/$p.sh" >"$OUT/$p.log" 2>&1
  rc=$?
  tail -n 40 "$OUT/$p.log"
  rows+=("$(printf '%-10s rc=%-4s %4d s' "$p" "$rc" "$((SECONDS - t0))")")
done
echo "================ summary"
printf '%s\n' "${rows[@]}"
