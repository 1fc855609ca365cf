#!/usr/bin/env bash
# One GPU-machine run for the CUDA backend (issue 10): build kiln and the GPU tests (Release),
# run `ctest -L gpu` (kernels, cuBLASLt GEMMs, CudaBackend vs the reference backend), compare the
# GPU logits with HF transformers (scripts/compare_hf_logits.py), then `kiln run` on GPU and CPU
# and `kiln bench` on a SmolLM2-135M-shaped random-weight model. Logs go to $OUT (else
# build/gpu-logs) as one logs.tgz (the device tool brings back at most 8 files) plus bench.jsonl;
# a summary table is printed last.
#   usage (repository root):  bash bench/cuda_backend_gpu.sh [DEPS_DIR] [SMOLLM2_CONFIG_JSON]
set -uo pipefail
cd "$(dirname "$0")/.."
deps=${1:-.devdeps}
smol_config=${2:-shared/models/smollm2-135m.config.json}
out=${OUT:-build/gpu-logs}
logs=$(mktemp -d /tmp/kiln-gpu-logs.XXXXXX)
mkdir -p "$out"
jobs=$(nproc 2>/dev/null || echo 16)
declare -a rows=()
row() { rows+=("$(printf '%-34s %-6s %s' "$1" "$2" "$3")"); }
step() {  # step NAME LOG CMD...: runs CMD with output to $logs/LOG, records PASS/FAIL
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  echo "== $name"
  "$@" >"$logs/$log" 2>&1
  local rc=$?
  tail -n 15 "$logs/$log"
  row "$name" "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" "$((SECONDS - t0)) s, $log"
  return $rc
}

if [ -f "$deps/unpack-deps.sh" ]; then
  mkdir -p "${KILN_DEPS:-/opt/kiln-deps}" 2>/dev/null || export KILN_DEPS=/tmp/kiln-deps
  # shellcheck disable=SC1091
  source "$deps/unpack-deps.sh" "$deps" >"$logs/unpack.log" 2>&1
fi
[ -d "$deps/python" ] && export PYTHONPATH="$(cd "$deps/python" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PATH="/usr/local/cuda/bin:$PATH"
nvidia-smi -L >"$logs/nvidia-smi.txt" 2>&1

if [ -z "${KILN_PREBUILT:-}" ]; then
step "configure" configure.log cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DKILN_TESTS=ON -DCUDAToolkit_ROOT=/usr/local/cuda || true
step "build" build.log cmake --build build -j"$jobs" --target kiln runtime_cuda_gemm_gpu_test \
  runtime_cuda_cuda_backend_gpu_test runtime_cuda_gemv_gpu_test kernels_kernels_gpu_test
fi
if [ -x build/tools/kiln ]; then
  step "gpu tests" ctest-gpu.log bash bench/gpu/gpu_tests.sh
  grep -hE "^\[ kiln gpu \]" build/Testing/Temporary/LastTest.log 2>/dev/null | sort -u | head -40
  grep -hE "kiln gpu \].*(rel error|report|cuda:)" "$logs/ctest-gpu.log" | head -20
  step "HF transformers vs kiln logits" hf-compare.log python3 scripts/compare_hf_logits.py \
    build/gpu-fixtures/*/
  cat "$logs/hf-compare.log" | tail -8

  # kiln run on both backends (a test fixture written by the GPU tests, compiled by the CLI).
  tiny=build/gpu-fixtures/mha-hd64/cli.kplan
  if [ -d build/gpu-fixtures/mha-hd64 ] && step "kiln compile mha-hd64" tiny-compile.log \
       build/tools/kiln compile build/gpu-fixtures/mha-hd64 -o "$tiny"; then
    step "kiln run (cuda)" run-cuda.log build/tools/kiln run "$tiny" --prompt "The quick brown" \
      --max-new-tokens 24
    step "kiln run (cuda, --debug-sync)" run-debug.log build/tools/kiln run "$tiny" \
      --prompt "The quick brown" --max-new-tokens 24 --debug-sync
    step "kiln run (cpu)" run-cpu.log build/tools/kiln run "$tiny" --device cpu \
      --prompt "The quick brown" --max-new-tokens 24
    # kiln run --check: every node of the prefill and two decode steps against the reference.
    step "kiln run --check (cuda)" run-check.log build/tools/kiln run "$tiny" --check \
      --check-steps 3 --prompt "The quick brown" --max-new-tokens 8
    grep -E "first divergent|every checked op" "$logs/run-check.log"
    if cmp -s <(grep -v '^kiln' "$logs/run-cuda.log") <(grep -v '^kiln' "$logs/run-cpu.log"); then
      row "cuda vs cpu greedy text" PASS "identical generated text"
    else
      row "cuda vs cpu greedy text" DIFF "see run-cuda.log / run-cpu.log"
    fi
  fi
  # kiln bench on a SmolLM2-135M-shaped model with random weights.
  smol=build/gpu-fixtures/smollm2-135m
  if [ -f "$smol_config" ] && python3 scripts/make_fixture.py --config "$smol_config" \
       --out "$smol" --dtype bf16 --no-gguf >"$logs/smol-fixture.log" 2>&1; then
    step "kiln compile smollm2-135m" smol-compile.log build/tools/kiln compile "$smol" \
      -o "$smol/model.kplan"
    step "kiln run --check smollm2-135m" smol-check.log build/tools/kiln run "$smol/model.kplan" \
      --check --check-steps 2 --prompt "The quick brown" --max-new-tokens 4
    grep -E "first divergent|every checked op" "$logs/smol-check.log"
    # The same model without fuse-horizontal (separate Q/K/V and gate/up GEMMs): the default
    # pipeline minus that pass, printed by `kiln ir` and compiled with --from-ir, as the baseline
    # the merged plan is measured against in this run.
    unmerged=canonicalize,fuse-rope,fuse-rmsnorm-residual,fuse-attention,fuse-elementwise,gemm-epilogue
    if build/tools/kiln ir "$smol" --passes "$unmerged" >"$smol/unmerged.kir" 2>"$logs/unmerged-ir.log" &&
       step "kiln compile smollm2 unmerged" smol-unmerged.log build/tools/kiln compile "$smol" \
         --from-ir "$smol/unmerged.kir" -o "$smol/unmerged.kplan"; then
      for b in 1 16; do
        step "kiln bench smollm2 unmerged b$b" bench-unmerged-b$b.log build/tools/kiln bench \
          "$smol/unmerged.kplan" --batch $b --prompt-len 128 --gen-len 64 --kv-cache-gb 4
        grep '^{' "$logs/bench-unmerged-b$b.log" | sed 's/^{/{"plan":"unmerged",/' >>"$logs/bench.jsonl"
      done
    fi
    for b in 1 16; do
      step "kiln bench smollm2 batch $b" bench-b$b.log build/tools/kiln bench "$smol/model.kplan" \
        --batch $b --prompt-len 128 --gen-len 64 --kv-cache-gb 4
      grep '^{' "$logs/bench-b$b.log" | sed 's/^{/{"plan":"merged",/' >>"$logs/bench.jsonl"
      step "kiln bench smollm2 batch $b eager" bench-b$b-eager.log build/tools/kiln bench \
        "$smol/model.kplan" --batch $b --prompt-len 128 --gen-len 32 --kv-cache-gb 4 \
        --no-cuda-graphs
      grep '^{' "$logs/bench-b$b-eager.log" >>"$logs/bench.jsonl"
    done
  else
    row "smollm2-135m fixture" SKIP "no $smol_config or make_fixture failed (smol-fixture.log)"
  fi
  # With KILN_BENCH_1B=1: the Llama-3.2-1B shape too (random bf16 weights, ~2.5 GB written).
  one_b_config=$(dirname "$smol_config")/llama3.2-1b.config.json
  if [ -n "${KILN_BENCH_1B:-}" ] && [ -f "$one_b_config" ]; then
    oneb=build/gpu-fixtures/llama3.2-1b
    if python3 scripts/make_fixture.py --config "$one_b_config" --out "$oneb" --dtype bf16 \
         --no-gguf >"$logs/1b-fixture.log" 2>&1 &&
       step "kiln compile llama3.2-1b" 1b-compile.log build/tools/kiln compile "$oneb" \
         -o "$oneb/model.kplan"; then
      for b in 1 16; do
        step "kiln bench llama3.2-1b batch $b" bench-1b-b$b.log build/tools/kiln bench \
          "$oneb/model.kplan" --batch $b --prompt-len 512 --gen-len 48 --kv-cache-gb 8
        grep '^{' "$logs/bench-1b-b$b.log" >>"$logs/bench.jsonl"
      done
    else
      row "llama3.2-1b fixture" FAIL "1b-fixture.log / 1b-compile.log"
    fi
  fi
fi

echo
echo "================ kiln CUDA backend on $(head -1 "$logs/nvidia-smi.txt") ================"
printf '%-34s %-6s %s\n' STEP RESULT DETAIL
for r in "${rows[@]}"; do echo "$r"; done
grep -E "tests passed|tests failed" "$logs/ctest-gpu.log" 2>/dev/null
grep -E "PASS|FAIL|SKIP|ERROR" "$logs/hf-compare.log" 2>/dev/null
cat "$logs/bench.jsonl" 2>/dev/null
cp "$logs/bench.jsonl" "$out/" 2>/dev/null
tar czf "$out/logs.tgz" -C "$logs" . 2>/dev/null
