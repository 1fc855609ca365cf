#!/usr/bin/env bash
# GPU part `cascade` (issue 14 item 1): the cascade attention GPU tests (cascade kernels vs kiln's
# plain split-KV decode vs the CPU reference over random prefix/suffix splits), then decode
# attention with a shared prefix of 1k/8k/32k tokens at batch 16/64/256 on the Llama-3-8B
# attention shape (32/8 heads of 128, bf16, 64 tokens of own suffix per sequence): kiln cascade vs
# kiln plain paged decode (CascadeGpu.DecodeSpeed, one process), and cuDNN through torch SDPA on
# dense per-sequence K/V of the same length (no sharing: what a non-cascade engine reads) when
# time allows. A table last. Assumes bench/gpu/prelude.sh was sourced (build/, PEERS, OUT).
#   usage (repository root):  source bench/gpu/prelude.sh && bash bench/gpu/cascade.sh
set -uo pipefail
out=${OUT:-build/gpu-logs}
mkdir -p "$out"
t0=$SECONDS
declare -a status=()

echo "== cascade: GPU tests"
timeout 120 bash bench/gpu/gpu_tests.sh 'CascadeGpu.EqualsPlain*:CascadeGpu.F16' \
  >"$out/cascade-tests.log" 2>&1
rc=$?
grep -q "No tests were found" "$out/cascade-tests.log" && rc=1
grep -E "tests passed|PASS|FAIL|Failure|Skipped|Not Run" "$out/cascade-tests.log" | head -20
status+=("gpu tests: $([ $rc -eq 0 ] && echo PASS || echo "FAIL (rc $rc, cascade-tests.log)")")

echo "== cascade: kiln cascade vs plain decode"
KILN_CASCADE_BENCH=1 timeout 120 build/tests/kernels_cascade_gpu_test \
  --gtest_filter=CascadeGpu.DecodeSpeed >"$out/cascade-speed.log" 2>&1
rc=$?
status+=("speed: rc $rc")
grep -h "^\[ cascade \]\|^\[ kiln gpu \]" "$out/cascade-speed.log" 2>/dev/null | sort -u -k4n >"$out/cascade-speed.txt"

: >"$out/cascade-cudnn.jsonl"
if [ -n "${PEERS:-}" ] && [ -f "$PEERS/torch_peers.py" ]; then
  echo "== cascade: cuDNN (torch SDPA) decode on dense K/V"
  for ctx in 1088 8256 32832; do
    for b in 16 64 256; do
      [ $((SECONDS - t0)) -lt 200 ] || break 2
      timeout 40 python3 "$PEERS/torch_peers.py" attn-decode --batch "$b" --ctx "$ctx" \
        2>/dev/null | grep '"cudnn"' >>"$out/cascade-cudnn.jsonl"
    done
  done
fi

echo "== cascade: the runtime (CudaBackendGpu.Cascade*: cascade vs plain decode, CUDA graphs on)"
timeout 200 bash bench/gpu/gpu_tests.sh 'CudaBackendGpu.CascadeGivesThePlainPathsTokens*' \
  >"$out/cascade-runtime-tests.log" 2>&1
rc=$?
grep -q "No tests were found" "$out/cascade-runtime-tests.log" && rc=1
grep -h "cascade: vs plain" "$out/cascade-runtime-tests.log" "$out"/gpu-tests/*.log 2>/dev/null | sort -u
status+=("runtime test: $([ $rc -eq 0 ] && echo PASS || echo "FAIL (rc $rc, cascade-runtime-tests.log)")")

# End to end: `kiln bench` on a 1-layer Llama-3-8B shape, the batch's prompts sharing all but their
# last 64 tokens (forked pages, as the prefix cache shares a prompt's), --cascade auto vs off.
KILN=${KILN:-build/tools/kiln}
MODELS=${MODELS:-shared/models}
: >"$out/cascade-e2e.jsonl"
if [ -f "$MODELS/llama3-8b.config.json" ] && [ $((SECONDS - t0)) -lt 400 ]; then
  work=$(mktemp -d /tmp/kiln-cascade.XXXX)
  python3 - "$MODELS/llama3-8b.config.json" "$work/l8.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["num_hidden_layers"] = 1
json.dump(c, open(sys.argv[2], "w"))
PY
  if python3 bench/make_bench_model.py --config "$work/l8.json" --out "$work/l8" \
       >"$out/cascade-e2e.log" 2>&1 &&
     "$KILN" compile "$work/l8" -o "$work/l8.kplan" --page-size 16 --max-seqs 64 \
       >>"$out/cascade-e2e.log" 2>&1; then
    for prompt in 1088 4160; do  # within the model's 8k context
      for mode in off auto; do
        timeout 120 "$KILN" bench "$work/l8.kplan" --batch 64 --prompt-len "$prompt" --gen-len 32 \
          --shared-prefix $((prompt - 64)) --cascade "$mode" 2>>"$out/cascade-e2e.log" |
          grep '^{' | tee -a "$out/cascade-e2e.jsonl"
      done
    done
  else
    tail -5 "$out/cascade-e2e.log"
  fi
  rm -rf "$work"
fi

echo "== cascade: table ($((SECONDS - t0)) s)"
python3 - "$out/cascade-speed.log" "$out/cascade-cudnn.jsonl" <<'PY'
import json, re, sys
kiln = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"\[ cascade \] (\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)", line)
    if m:
        kiln[(int(m[1]), int(m[2]))] = (float(m[3]), float(m[4]))
cudnn = {}
for line in open(sys.argv[2]):
    r = json.loads(line)
    if "ms" in r:
        cudnn[(r["ctx"] - 64, r["batch"])] = 1000 * r["ms"]
print("decode attention, one layer, Llama-3-8B heads (32/8 x 128, bf16), shared prefix + 64 own "
      "tokens per sequence; microseconds")
print(f"{'prefix':>7} {'batch':>6} {'kiln plain':>11} {'kiln cascade':>13} {'speedup':>8} {'cuDNN':>9}")
for (p, b), (plain, casc) in sorted(kiln.items()):
    c = cudnn.get((p, b))
    print(f"{p:>7} {b:>6} {plain:>11.1f} {casc:>13.1f} {plain / casc:>7.2f}x "
          f"{(f'{c:.1f}' if c else '-'):>9}")
if not kiln:
    print("no kiln timings (see cascade-speed.log)")
PY
printf '%s\n' "${status[@]}"
