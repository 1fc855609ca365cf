#!/usr/bin/env bash
# Prefill attention on the GPU (issue 11 item 1): the kernel tests of the prefill kernels (simple,
# pipelined, and on sm_90a the hopper one), a memcheck of the pipelined and hopper ones, then
# attention_bench.py at seq 1k/4k/16k for each kernel variant beside the SDPA peers (FA2, cuDNN).
# KILN_PREFILL_NO_MEMCHECK=1 skips the memcheck, KILN_PREFILL_NO_TESTS=1 the tests;
# KILN_PREFILL_VARIANTS="pipe:pipelined: hop:hopper:" times only those variants (no spaces
# inside one). Run after `source bench/gpu/prelude.sh`; writes $OUT/prefill.jsonl and prints the
# ratio table last.
set -u
OUT=${OUT:-build/gpu-logs}; mkdir -p "$OUT"
log=$OUT/prefill.log; : >"$log"
t0=$SECONDS
echo "== prefill: kernel tests (simple + pipelined + hopper vs the reference backend)"
[ -n "${KILN_PREFILL_NO_TESTS:-}" ] ||
  bash bench/gpu/gpu_tests.sh '*FlashAttentionPrefill*:*KernelsGpuHarness*' 2>&1 | tee -a "$log" | grep -E "tests passed|Failed|\*\*\*|FAILED" | head -20
if [ -z "${KILN_PREFILL_NO_MEMCHECK:-}" ] && command -v compute-sanitizer >/dev/null; then
  echo "== prefill: compute-sanitizer memcheck, pipelined and hopper sweeps"
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
    build/tests/kernels_kernels_gpu_test \
    --gtest_filter='KernelsGpu.FlashAttentionPrefillPipelined:KernelsGpu.FlashAttentionPrefillHopper' \
    >>"$log" 2>&1; echo "memcheck rc $? (0 = clean; details in $log)"
fi
# A 1-layer model of the bench shape (32 q / 8 kv heads, head_dim 128, page 16), random weights.
work=build/prefill-bench; mkdir -p "$work"
python3 - "$MODELS/llama3-8b.config.json" "$work/attn.config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(num_hidden_layers=1, intermediate_size=256, vocab_size=512, bos_token_id=1, eos_token_id=2)
json.dump(c, open(sys.argv[2], "w"))
PY
python3 scripts/make_fixture.py --config "$work/attn.config.json" --out "$work/model" --dtype bf16 \
  --no-gguf >>"$log" 2>&1
$KILN compile "$work/model" -o "$work/simple.kplan" --dump-ir "$work/ir" >>"$log" 2>&1 ||
  echo "kiln compile failed (see $log)"
plans=("$work/simple.kplan")
# Variants: name:kernel:extra flash_attention attributes (edited into the final IR, recompiled).
# The hopper ones (sm_90a only: the kernel traps elsewhere) are FlashAttention-3's 128 x 128 tiles
# with 2 stages, and 128 x 64 with 3 stages.
variants=("pipe:pipelined:" "pipe_w4_st3:pipelined:, warps = 4, stages = 3" "hop:hopper:"
  "hop_kv64_st3:hopper:, tile_kv = 64, stages = 3")
[ -n "${KILN_PREFILL_VARIANTS:-}" ] && read -r -a variants <<<"$KILN_PREFILL_VARIANTS"
for v in "${variants[@]}"; do
  name=${v%%:*}; rest=${v#*:}; kernel=${rest%%:*}; extra=${rest#*:}
  sed "s/{scale = \([0-9.e+-]*\)}/{scale = \1, prefill_kernel = \"$kernel\"$extra}/" \
    "$work/ir/99-final.kir" >"$work/$name.kir"
  if $KILN compile "$work/model" --from-ir "$work/$name.kir" -o "$work/$name.kplan" >>"$log" 2>&1; then
    plans+=("$work/$name.kplan")
  else
    echo "compile of variant $name failed (see $log)"
  fi
done
$KILN ir "$work/pipe.kplan" --kernels 2>/dev/null | grep prefill
$KILN ir "$work/hop.kplan" --kernels 2>/dev/null | grep prefill
echo "== prefill: attention_bench ($(( SECONDS - t0 )) s so far)"
python3 bench/attention_bench.py "${plans[@]}" --peers "$PEERS/torch_peers.py" --prefill-only \
  2>>"$log" | tee "$OUT/prefill.bench.txt" | grep '^{' >"$OUT/prefill.jsonl"
sed -n '/^== kiln attention/,$p' "$OUT/prefill.bench.txt"
echo "== prefill: done in $(( SECONDS - t0 )) s"
