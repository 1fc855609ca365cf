#!/usr/bin/env bash
# Runs the GPU tests (every tests/**/*_gpu_test.cc binary), optionally only those matching a
# gtest filter. Through ctest when build/ was configured on this machine; else (binaries built on
# the development machine and carried, KILN_PREBUILT=1) each binary directly, all four at once,
# each to its own log. Prints a per-binary PASS/FAIL line and the failures; exits non-zero on any.
#   usage (repository root):  bash bench/gpu/gpu_tests.sh [GTEST_FILTER] > log
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
filter=${1:-*}
if [ -f build/CTestTestfile.cmake ] && [ -z "${KILN_PREBUILT:-}" ]; then
  regex=$(echo "$filter" | sed -e 's/\*/.*/g' -e 's/:/|/g')
  exec ctest --test-dir build -L gpu -R "$regex" --output-on-failure -j4 --timeout 300
fi
# The logs go to a temporary folder, then as one gpu-tests.tgz into $OUT (the device tool brings
# back few files).
logs=$(mktemp -d /tmp/kiln-gpu-tests.XXXXXX)
out=${OUT:-build/gpu-logs}
mkdir -p "$out"
declare -a pids=() names=()
for t in build/tests/*_gpu_test; do
  [ -x "$t" ] || continue
  n=$(basename "$t")
  timeout -k 5 300 "$t" --gtest_filter="$filter" --gtest_color=no >"$logs/$n.log" 2>&1 &
  pids+=($!); names+=("$n")
done
rc=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; r=$?
  log="$logs/${names[$i]}.log"
  printf '%-40s %s  %s\n' "${names[$i]}" "$([ $r -eq 0 ] && echo PASS || echo "FAIL rc=$r")" \
    "$(grep -E '^\[  PASSED  \]|tests? ran' "$log" | tail -1)"
  if [ $r -ne 0 ]; then
    rc=1
    grep -E '^\[  FAILED  \]|Failure|Expected|Which is|error|rror:' "$log" | head -30
    tail -5 "$log"
  fi
  grep -E "^\[ kiln gpu \]" "$log" | sort -u | head -12
  s=$(grep -cE "^\[  SKIPPED \] [A-Za-z]" "$log"); [ "$s" -gt 0 ] && echo "  $s skipped, e.g.: $(grep -m1 -B1 "^\[  SKIPPED \]" "$log" | head -1)"
done
tgz=$out/gpu-tests.tgz n=1
while [ -e "$tgz" ]; do n=$((n + 1)); tgz=$out/gpu-tests-$n.tgz; done  # a later call's: -2, -3, ...
tar czf "$tgz" -C "$logs" . 2>/dev/null
exit $rc
