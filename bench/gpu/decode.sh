#!/usr/bin/env bash
# GPU part `decode` (issue 11 items 2-5): decode attention (LSE merge, unified max, tuned) beside
# the torch peers, RMSNorm + residual beside Inductor, the decode/rmsnorm GPU tests, and one
# `kiln compile --tune` whose choices `kiln ir` shows. Run at the repository root after
#   source bench/gpu/prelude.sh
# Writes $OUT/decode.jsonl (one JSON record per measurement) and $OUT/decode-*.log; prints a table.
set -uo pipefail
OUT=${OUT:-build/gpu-logs}
KILN=${KILN:-build/tools/kiln}
MODELS=${MODELS:-shared/models}
PEERS=${PEERS:-.devdeps}
mkdir -p "$OUT"
jsonl=$OUT/decode.jsonl
: >"$jsonl"
work=$(mktemp -d /tmp/kiln-decode.XXXX)
status=()
note() { status+=("$(printf '%-34s %s' "$1" "$2")"); }
keep_json() { grep '^{' | tee -a "$jsonl"; }
t0=$SECONDS

# 1. Correctness: every decode / rmsnorm case against the reference backend (outputs NaN-poisoned).
if bash bench/gpu/gpu_tests.sh 'KernelsGpu.FlashAttentionDecode:KernelsGpu.RmsNorm:KernelsGpuHarness*' \
     >"$OUT/decode-tests.log" 2>&1; then
  note "gpu tests (decode, rmsnorm)" "PASS ($(grep -c 'Passed' "$OUT/decode-tests.log") tests)"
else
  note "gpu tests (decode, rmsnorm)" "FAIL (see $OUT/decode-tests.log)"
  grep -E "Failure|Expected|mismatch|FAILED|rror" "$OUT/decode-tests.log" | head -20
fi

# 2. A one-layer Llama-3-8B shape (32/8 heads, head_dim 128, hidden 4096; page size 16): default
#    plan (LSE merge), the same IR with softmax = "unified_max", and a --tune'd plan.
python3 - "$MODELS/llama3-8b.config.json" "$work/l8.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["num_hidden_layers"] = 1
json.dump(c, open(sys.argv[2], "w"))
PY
python3 bench/make_bench_model.py --config "$work/l8.json" --out "$work/l8" >"$OUT/decode-model.log" 2>&1 ||
  { note "bench model" "FAIL ($OUT/decode-model.log)"; tail -5 "$OUT/decode-model.log"; }
"$KILN" compile "$work/l8" -o "$work/lse.kplan" --page-size 16 --dump-ir "$work/dump" \
  >"$OUT/decode-compile.log" 2>&1 || tail -5 "$OUT/decode-compile.log"
python3 - "$work/dump/99-final.kir" "$work/um.kir" <<'PY'
import re, sys
ir = open(sys.argv[1]).read()
ir, n = re.subn(r"(= flash_attention\([^)]*\) \{)", r'\1softmax = "unified_max", ', ir)
assert n > 0, "no flash_attention node in the final IR"
open(sys.argv[2], "w").write(ir)
PY
"$KILN" compile "$work/l8" -o "$work/um.kplan" --from-ir "$work/um.kir" >>"$OUT/decode-compile.log" 2>&1 ||
  tail -5 "$OUT/decode-compile.log"
"$KILN" compile "$work/l8" -o "$work/tuned.kplan" --page-size 16 --tune >"$OUT/decode-tune-l8.log" 2>&1 ||
  tail -5 "$OUT/decode-tune-l8.log"

python3 bench/attention_bench.py "$work/lse.kplan" --only decode --peers "$PEERS/torch_peers.py" \
  2>"$OUT/decode-attn.err" | keep_json >/dev/null || tail -5 "$OUT/decode-attn.err"
python3 bench/attention_bench.py "$work/um.kplan" --only decode --softmax unified_max --no-peers \
  2>>"$OUT/decode-attn.err" | keep_json >/dev/null || tail -5 "$OUT/decode-attn.err"
python3 bench/attention_bench.py "$work/tuned.kplan" --only decode --softmax tuned --no-peers \
  2>>"$OUT/decode-attn.err" | keep_json >/dev/null || tail -5 "$OUT/decode-attn.err"

# 3. RMSNorm + residual, 16k x 4096 and decode sizes, beside eager / Inductor.
python3 bench/rmsnorm_bench.py "$work/lse.kplan" --peers "$PEERS/torch_peers.py" \
  2>"$OUT/decode-rmsnorm.err" | keep_json >/dev/null || tail -5 "$OUT/decode-rmsnorm.err"

# 4. kiln compile --tune on SmolLM2-135M; the choices in `kiln ir`; a second run hits the cache.
python3 bench/make_bench_model.py --config "$MODELS/smollm2-135m.config.json" --out "$work/smol" \
  >>"$OUT/decode-model.log" 2>&1
{
  echo "== kiln compile --tune (first run)"
  "$KILN" compile "$work/smol" -o "$work/smol.kplan" --tune
  echo "== kiln compile --tune (second run: cache)"
  "$KILN" compile "$work/smol" -o "$work/smol.kplan" --tune
  echo "== kiln ir: the tuned nodes"
  "$KILN" ir "$work/smol.kplan" | grep -E "flash_attention\(|rmsnorm" | head -4 | cut -c1-400
  echo "== kiln ir --kernels (decode, merge, rmsnorm)"
  "$KILN" ir "$work/smol.kplan" --kernels | grep -E "decode|merge|rmsnorm"
} >"$OUT/decode-tune.log" 2>&1
cat "$OUT/decode-tune.log" | cut -c1-300
echo "== tune on the 8B shape"; grep -E "tune |tuned on" "$OUT/decode-tune-l8.log"

# 5. The table.
python3 - "$jsonl" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def get(bench, who, **k):
    for r in recs:
        if r.get("bench") == bench and who in (r.get("impl"), r.get("peer")) and all(r.get(a) == b for a, b in k.items()):
            return r
    return {}
copy = get("copy", "torch").get("TBps")
print(f"\n== decode on {recs[0]['device'] if recs else '?'} (copy {copy} TB/s) ==")
print(f"{'case':22} {'lse':>7} {'unified':>7} {'tuned':>7} {'cudnn':>7} {'fa2':>7} {'lse/cudnn':>9} {'best/cudnn':>10} {'target':>7}")
for b, c, target in ((1, 32768, 1.2), (16, 4096, 0.9), (64, 4096, 0.9)):
    row = [get("attn_decode", i, batch=b, ctx=c).get("TBps") for i in ("kiln", "kiln_unified_max", "kiln_tuned", "cudnn", "fa2")]
    cu = row[3]
    best = max([v for v in row[:3] if v] or [0])
    f = lambda v: f"{v:7.2f}" if v else "      -"
    ratio = lambda v: f"{v / cu:.2f}x" if v and cu else "-"
    print(f"decode b{b} ctx {c:<9} {f(row[0])} {f(row[1])} {f(row[2])} {f(row[3])} {f(row[4])} {ratio(row[0]):>9} {ratio(best):>10} {target:>6}x")
# A Llama plan's norms are plain rmsnorm (the residual adds are GEMM epilogues): rmsnorm_bench.py
# times that kernel then, as bench "rmsnorm" (2 passes over the rows instead of 4).
norm = "rmsnorm_residual" if get("rmsnorm_residual", "kiln", tokens=16384) else "rmsnorm"
print(f"\n{norm:22} {'kiln':>10} {'inductor (+res)':>10} {'eager':>8}  (16k rows: TB/s; decode rows: us)")
k = get(norm, "kiln", tokens=16384).get("TBps")
ind = get("rmsnorm_residual", "inductor", tokens=16384).get("TBps")
eag = get("rmsnorm_residual", "torch_eager", tokens=16384).get("TBps")
print(f"{'16384 x 4096 TB/s':22} {k or '-':>10} {ind or '-':>10} {eag or '-':>8}  "
      f"kiln/copy {k / copy:.2f} (target 0.90)" if k and copy else "")
for rows in (1, 16, 64):
    r = get(norm, "kiln", tokens=rows)
    print(f"{str(rows) + ' x 4096 us':22} {r.get('us', '-'):>10}")
PY
for s in "${status[@]}"; do echo "$s"; done
echo "decode.sh: $((SECONDS - t0)) s"
rm -rf "$work"
