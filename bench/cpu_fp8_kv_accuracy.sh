#!/usr/bin/env bash
# What `--kv-dtype fp8e4m3` costs in accuracy, on the CPU reference backend (fp8e4m3 emulated as
# the GPU stores it) with the prefix cache reusing a shared prefix: SmolLM2-135M (the GGUF of
# scripts/fetch-model.sh) and a random-weight HF fixture (scripts/make_fixture.py, GQA, head_dim
# 64, 4 layers), each scored by build/bench/fp8_kv_accuracy over bench/data/fp8_kv_accuracy_text.txt:
# a 200-token prefix computed once and cached, then 4 prompts of 220 tokens reusing it, 1080
# positions in all. One JSON line per model to stdout and to $OUT (default
# bench/results/<date>-cpu-fp8-kv-accuracy.jsonl). About a minute per model on 2 cores.
# (HF transformers is not compared: it is not installed on the machines this runs on; the
# baseline is kiln's own KV dtype on the same backend.)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
OUT=${OUT:-bench/results/$(date +%F)-cpu-fp8-kv-accuracy.jsonl}
MODEL=${MODEL:-${KILN_CACHE:-$HOME/.cache/kiln}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$MODEL" ] || bash scripts/fetch-model.sh  # MODEL=<.gguf or HF dir> measures another
cmake --build "$BUILD" --target fp8_kv_accuracy >/dev/null
FIXTURE=$BUILD/fp8-kv-accuracy-fixture
if [ ! -f "$FIXTURE/.complete" ]; then
  mkdir -p "$FIXTURE"
  cat > "$FIXTURE/fixture-config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
 "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
 "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 1024,
 "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false}
JSON
  python3 scripts/make_fixture.py --config "$FIXTURE/fixture-config.json" --out "$FIXTURE" \
    --dtype f32 --no-gguf >/dev/null
  touch "$FIXTURE/.complete"
fi
: > "$OUT"
for m in "$MODEL" "$FIXTURE"; do
  "$BUILD/bench/fp8_kv_accuracy" --model "$m" --text bench/data/fp8_kv_accuracy_text.txt \
    --threads "$THREADS" | tee -a "$OUT"
done
echo "wrote $OUT" >&2
