#!/usr/bin/env bash
# GPU part `fp8_kv` (issue 14 items 2, 4, 5): the fp8e4m3 KV cache on the GPU. (1) Its GPU tests:
# the kernels against the reference (KernelsGpu.*Fp8*) and CudaBackend against the reference,
# prefix reuse, the pool size and --check (CudaBackendGpu*Fp8*). (2) `kiln run --check` on an
# fp8e4m3 plan of the SmolLM2-135M shape: every node within its FP8-aware tolerance (exit 0).
# (3) Decode speed, bf16 KV against fp8e4m3 KV, on plans of the Llama-3-8B shape cut to 2 layers
# (the attention's share of a step grows with the context): `kiln bench` at batch 16 and 64 with
# 4k-token prompts. JSON lines to $OUT/fp8_kv.jsonl (kiln bench's records, with kv_dtype), a
# table last. Run at the repository root after `source bench/gpu/prelude.sh`.
#   KILN_FP8_DRY=1: tries the script out on the CPU reference backend (tiny shapes; no figures).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-build/gpu-logs}
KILN=${KILN:-build/tools/kiln}
MODELS=${MODELS:-.devdeps/models}
[ -d "$MODELS" ] || MODELS=shared/models
[ -d "$MODELS" ] || MODELS=../shared/models
mkdir -p "$OUT"
jsonl=$OUT/fp8_kv.jsonl
: >"$jsonl"
work=$(mktemp -d /tmp/kiln-fp8kv.XXXX)
status=()
note() { status+=("$(printf '%-40s %s' "$1" "$2")"); }
dry=${KILN_FP8_DRY:-}

# A random-weight model of config $1 (a shape from $MODELS) with $2 layers, into $3.
make_model() {
  python3 - "$1" "$work/cfg-$(basename "$3").json" "$2" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["num_hidden_layers"] = int(sys.argv[3])
json.dump(c, open(sys.argv[2], "w"))
PY
  if [ -n "$dry" ]; then
    python3 scripts/make_fixture.py --config "$work/cfg-$(basename "$3").json" --out "$3" --no-gguf
  else
    python3 bench/make_bench_model.py --config "$work/cfg-$(basename "$3").json" --out "$3"
  fi
}

# 1. The GPU tests of the fp8e4m3 cache.
if [ -z "$dry" ]; then
  if bash bench/gpu/gpu_tests.sh '*Fp8*:*KernelsGpuHarness*' >"$OUT/fp8_kv-tests.log" 2>&1; then
    note "gpu tests (fp8e4m3 KV)" "PASS ($(grep -cE ' Passed|PASS' "$OUT/fp8_kv-tests.log") lines)"
  else
    note "gpu tests (fp8e4m3 KV)" "FAIL (see $OUT/fp8_kv-tests.log)"
    grep -E "Failure|Expected|FAILED|rror" "$OUT/fp8_kv-tests.log" | head -20
  fi
fi

# 2. kiln run --check on an fp8e4m3 plan (SmolLM2-135M shape, 2 layers).
if [ -n "$dry" ]; then
  smol_cfg=$work/smol-dry.json
  cat >"$smol_cfg" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
 "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 8192,
 "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true}
JSON
else
  smol_cfg=$MODELS/smollm2-135m.config.json
fi
make_model "$smol_cfg" 2 "$work/smol" >"$OUT/fp8_kv-model.log" 2>&1 ||
  { note "model (smollm2 shape)" "FAIL ($OUT/fp8_kv-model.log)"; tail -5 "$OUT/fp8_kv-model.log"; }
"$KILN" compile "$work/smol" -o "$work/smol-fp8.kplan" --kv-dtype fp8e4m3 \
  >"$OUT/fp8_kv-compile.log" 2>&1 || tail -5 "$OUT/fp8_kv-compile.log"
"$KILN" inspect "$work/smol-fp8.kplan" | grep -E "^kv:" | tee -a "$OUT/fp8_kv-compile.log"
if [ -z "$dry" ]; then
  "$KILN" run "$work/smol-fp8.kplan" --check --check-steps 3 -p "The sky is" -n 4 \
    >"$OUT/fp8_kv-check.log" 2>&1
  rc=$?
  note "kiln run --check (fp8e4m3 plan)" \
    "$([ $rc -eq 0 ] && echo PASS || echo "FAIL rc=$rc"): $(grep -E 'every checked op|first divergent' "$OUT/fp8_kv-check.log")"
fi

# 3. Decode speed: bf16 KV against fp8e4m3 KV, the same model and inputs.
if [ -n "$dry" ]; then
  l8_cfg=$smol_cfg; cases="2:64"; device=(--device cpu --threads 2); gb=()
else
  l8_cfg=$MODELS/llama3-8b.config.json; cases="16:4096 64:4096"; device=(); gb=(--kv-cache-gb 40)
fi
make_model "$l8_cfg" 2 "$work/l8" >>"$OUT/fp8_kv-model.log" 2>&1 ||
  { note "model (llama3-8b shape)" "FAIL ($OUT/fp8_kv-model.log)"; tail -5 "$OUT/fp8_kv-model.log"; }
for kv in auto fp8e4m3; do
  "$KILN" compile "$work/l8" -o "$work/l8-$kv.kplan" --kv-dtype "$kv" >>"$OUT/fp8_kv-compile.log" 2>&1 ||
    tail -5 "$OUT/fp8_kv-compile.log"
done
for c in $cases; do
  b=${c%%:*} p=${c##*:}
  for kv in auto fp8e4m3; do
    "$KILN" bench "$work/l8-$kv.kplan" "${device[@]}" --batch "$b" --prompt-len "$p" --gen-len 32 \
      "${gb[@]}" 2>>"$OUT/fp8_kv-bench.err" | grep '^{' | tee -a "$jsonl" >/dev/null ||
      tail -3 "$OUT/fp8_kv-bench.err"
  done
done

# 4. The table.
python3 - "$jsonl" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"\n== fp8e4m3 KV decode on {recs[0]['device'] if recs else '?'} (2-layer Llama-3-8B shape) ==")
print(f"{'batch':>5} {'prompt':>6} {'bf16 tok/s':>11} {'fp8 tok/s':>10} {'speed-up':>9} {'bf16 ms':>8} {'fp8 ms':>8}")
keys = sorted({(r["batch"], r["prompt"]) for r in recs})
for b, p in keys:
    a = next((r for r in recs if (r["batch"], r["prompt"]) == (b, p) and r["kv_dtype"] != "fp8e4m3"), {})
    f = next((r for r in recs if (r["batch"], r["prompt"]) == (b, p) and r["kv_dtype"] == "fp8e4m3"), {})
    ratio = f"{f['tok_s'] / a['tok_s']:.2f}x" if a and f else "-"
    print(f"{b:>5} {p:>6} {a.get('tok_s', '-'):>11} {f.get('tok_s', '-'):>10} {ratio:>9} "
          f"{a.get('ms_per_step', '-'):>8} {f.get('ms_per_step', '-'):>8}")
PY
printf '%s\n' "${status[@]}"
rm -rf "$work"
