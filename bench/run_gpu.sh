#!/usr/bin/env bash
# The one script to run on the GPU machine (Ubuntu 24.04, CUDA 13, no network): unpack the
# dependencies packed by scripts/pack-gpu-deps.sh, build Release with tests, run the GPU kernel
# tests (ctest -L gpu) and then the CPU tests, and print a summary table last. Logs go to $OUT
# when set (else build/gpu-logs).
#   usage (repository root):  bash bench/run_gpu.sh [DEPS_DIR]   (default .devdeps)
#   KILN_GPU_ONLY=1 skips the CPU tests (a rerun then only rebuilds what changed).
set -uo pipefail
cd "$(dirname "$0")/.."
deps=${1:-.devdeps}
logs=${OUT:-build/gpu-logs}
mkdir -p "$logs"
jobs=$(nproc 2>/dev/null || echo 16)
declare -a rows=()
row() { rows+=("$(printf '%-28s %-6s %s' "$1" "$2" "$3")"); }
step() {  # step NAME LOG CMD...: runs CMD with output to $logs/LOG, records PASS/FAIL
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  echo "== $name ($*)"
  "$@" >"$logs/$log" 2>&1
  local rc=$?
  tail -n 25 "$logs/$log"
  row "$name" "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" "$((SECONDS - t0)) s, log $logs/$log"
  return $rc
}

if [ -f "$deps/unpack-deps.sh" ]; then
  # /opt/kiln-deps as the README says, or a prefix under /tmp when /opt is not writable.
  mkdir -p "${KILN_DEPS:-/opt/kiln-deps}" 2>/dev/null || export KILN_DEPS=/tmp/kiln-deps
  # shellcheck disable=SC1091
  source "$deps/unpack-deps.sh" "$deps" >"$logs/unpack.log" 2>&1
  row "unpack deps" PASS "prefix $KILN_DEPS/usr"
else
  row "unpack deps" SKIP "no $deps/unpack-deps.sh (using system packages)"
fi
# make_fixture.py needs gguf (+ yaml), packed as pure Python next to the debs.
[ -d "$deps/python" ] && export PYTHONPATH="$(cd "$deps/python" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PATH="/usr/local/cuda/bin:$PATH"

nvidia-smi -L 2>&1 | tee "$logs/nvidia-smi.txt"
row "nvidia-smi -L" "$([ ${PIPESTATUS[0]} -eq 0 ] && echo PASS || echo FAIL)" "$(head -1 "$logs/nvidia-smi.txt")"

step "configure (Release)" configure.log cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DKILN_TESTS=ON -DCUDAToolkit_ROOT=/usr/local/cuda
build_ok=0
step "build -j$jobs" build.log cmake --build build -j"$jobs" && build_ok=1

if [ $build_ok -eq 1 ]; then
  # GPU kernels vs the CPU reference; needs no model fixtures. Kernels are compiled by NVRTC
  # into build/gpu-kernel-cache on the first test and reused by the rest.
  step "ctest -L gpu" ctest-gpu.log ctest --test-dir build -L gpu --output-on-failure -j4 --timeout 300
  grep -E "kiln gpu|Skipped|SKIPPED|Failure|FAILED|out of bounds" "$logs/ctest-gpu.log" | head -40
  # CPU tests need the model fixtures (scripts/make_fixture.py: numpy, gguf, safetensors,
  # tokenizers). When those imports fail, say so and skip them rather than report noise.
  if [ -n "${KILN_GPU_ONLY:-}" ]; then
    row "ctest -LE gpu (CPU)" SKIP "KILN_GPU_ONLY is set"
  elif python3 -c "import numpy, gguf, safetensors, tokenizers" 2>"$logs/python-imports.log"; then
    step "ctest -LE gpu (CPU)" ctest-cpu.log ctest --test-dir build -LE gpu -j"$jobs" --timeout 600
  else
    row "ctest -LE gpu (CPU)" SKIP "fixture deps missing: $(tail -1 "$logs/python-imports.log")"
  fi
else
  row "ctest -L gpu" SKIP "build failed"
fi

echo
echo "================ kiln on $(hostname) — summary ================"
printf '%-28s %-6s %s\n' STEP RESULT DETAIL
for r in "${rows[@]}"; do echo "$r"; done
for f in ctest-gpu.log ctest-cpu.log; do
  [ -f "$logs/$f" ] && grep -E "tests passed|tests failed" "$logs/$f" | sed "s/^/$f: /"
done
grep -q "FAIL" <<<"${rows[*]}" && exit 1 || exit 0
