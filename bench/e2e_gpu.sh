#!/usr/bin/env bash
# End-to-end GPU benchmarks beside the peers, in one run on the GPU machine (BENCH.md's method):
# kiln bench and ../shared/peers/torch_peers.py `e2e` (gpt-fast-style torch.compile) on the same
# random-weight shapes, the copy ceiling measured in the same run, and a ratio table printed last.
#   usage (repository root): bash bench/e2e_gpu.sh [checks] [small] [8b]
#     checks  bench/cuda_backend_gpu.sh first (GPU tests, HF transformers comparison)
#     small   SmolLM2-135M shape batch 1, Llama-3.2-1B shape batch 1 and 16
#     8b      Llama-3-8B shape: compile time, start-up to the first token, batch 1/16/64 decode,
#             TTFT at prompt 512 and 4096
# Every shape is also compiled with --persistent (model.persistent.kplan); its batch-1 (and 16)
# decode is timed with the persistent decode kernel and without it (--persistent off, the same
# plan's CUDA-graph path) in the same run. KILN_E2E_NO_PERSISTENT=1 skips that.
# Deps: .devdeps (scripts/pack-gpu-deps.sh); model shapes from shared/models (or ../shared/models).
set -uo pipefail
cd "$(dirname "$0")/.."
phases=" $* "
out=${OUT:-build/gpu-logs}
mkdir -p "$out"
logs=$(mktemp -d /tmp/kiln-e2e.XXXXXX)
models=shared/models; [ -d "$models" ] || models=../shared/models; [ -d "$models" ] || models=.devdeps/models
peers=shared/peers; [ -d "$peers" ] || peers=../shared/peers; [ -d "$peers" ] || peers=.devdeps
jsonl="$out/e2e.jsonl"; : >"$jsonl"
t_start=$SECONDS
left() { echo $((${KILN_E2E_BUDGET_S:-540} - (SECONDS - t_start))); }

if [[ $phases == *" checks "* ]]; then
  bash bench/cuda_backend_gpu.sh .devdeps "$models/smollm2-135m.config.json" | tail -n 45
  [ -f "$out/bench.jsonl" ] && cat "$out/bench.jsonl" >>"$jsonl"
fi
if [ -f .devdeps/unpack-deps.sh ]; then
  mkdir -p "${KILN_DEPS:-/opt/kiln-deps}" 2>/dev/null || export KILN_DEPS=/tmp/kiln-deps
  # shellcheck disable=SC1091
  source .devdeps/unpack-deps.sh .devdeps >"$logs/unpack.log" 2>&1
fi
[ -d .devdeps/python ] && export PYTHONPATH="$(cd .devdeps/python && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PATH="/usr/local/cuda/bin:$PATH"
if [ -z "${KILN_PREBUILT:-}" ]; then  # else build/tools/kiln was built elsewhere and carried
  if [ ! -x build/tools/kiln ]; then
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=OFF \
      -DCUDAToolkit_ROOT=/usr/local/cuda >"$logs/configure.log" 2>&1
  fi
  cmake --build build -j"$(nproc)" --target kiln >"$logs/build.log" 2>&1 || { tail -30 "$logs/build.log"; exit 1; }
fi
kiln=build/tools/kiln
python3 "$peers/torch_peers.py" ceilings | tee -a "$jsonl"

bench() {  # bench NAME PLAN ARGS...: kiln bench, JSON lines tagged with the shape and plan
  local name=$1 plan=$2; shift 2
  local variant=default
  [[ $plan == *persistent* ]] && variant=persistent
  [[ " $* " == *" --persistent off "* ]] && variant=persistent-plan-graphs
  echo "== kiln bench $name ($variant) $*"
  $kiln bench "$plan" "$@" 2>"$logs/bench-$name.err" | grep '^{' |
    python3 -c "import sys,json
for l in sys.stdin:
  d=json.loads(l); d['shape']='$name'; d['variant']='$variant'; print(json.dumps(d))" | tee -a "$jsonl"
}
bench_persistent() {  # bench_persistent NAME ARGS...: the --persistent plan with and without it
  [ -z "${KILN_E2E_NO_PERSISTENT:-}" ] || return 0
  local p=build/bench-models/$1/model.persistent.kplan name=$1; shift
  [ -f "$p" ] || { echo "== $name: no persistent plan (see compile-$name-persistent.log)"; return 0; }
  bench "$name" "$p" "$@" --persistent on
  bench "$name" "$p" "$@" --persistent off
}
peer() {  # peer NAME CONFIG BATCH PROMPT GEN (KILN_E2E_NO_PEERS=1 skips them)
  [ -z "${KILN_E2E_NO_PEERS:-}" ] || return 0
  [ "$(left)" -gt 60 ] || { echo "== peer $1 b$3 skipped: time budget"; return; }
  echo "== peer e2e $1 batch $3"
  python3 "$peers/torch_peers.py" e2e --config "$2" --batch "$3" --prompt "$4" --gen "$5" \
    2>"$logs/peer-$1-$3.err" | python3 -c "import sys,json
for l in sys.stdin:
  d=json.loads(l); d['shape']='$1'; print(json.dumps(d))" | tee -a "$jsonl"
}
make_model() {  # make_model NAME CONFIG SHARDS -> build/bench-models/NAME/model.kplan
  local dir=build/bench-models/$1
  if [ ! -f "$dir/model.kplan" ]; then
    local t0=$SECONDS
    python3 bench/make_bench_model.py --config "$2" --out "$dir" --shards "$3" >"$logs/gen-$1.log" 2>&1 ||
      { tail -5 "$logs/gen-$1.log"; return 1; }
    echo "== $1: random weights written in $((SECONDS - t0)) s"
    /usr/bin/time -f "%e s wall, %M KB peak" $kiln compile "$dir" -o "$dir/model.kplan" 2>&1 | tail -3 |
      tee "$logs/compile-$1.log"
  fi
  if [ -z "${KILN_E2E_NO_PERSISTENT:-}" ] && [ ! -f "$dir/model.persistent.kplan" ]; then
    $kiln compile "$dir" -o "$dir/model.persistent.kplan" --persistent 2>&1 | tail -3 |
      tee "$logs/compile-$1-persistent.log"
  fi
}

if [[ $phases == *" small "* ]]; then
  make_model smollm2-135m "$models/smollm2-135m.config.json" 1 &&
    bench smollm2-135m build/bench-models/smollm2-135m/model.kplan --batch 1 --prompt-len 128 --gen-len 64 --kv-cache-gb 4
  for b in 1 16; do
    bench_persistent smollm2-135m --batch $b --prompt-len 128 --gen-len 64 --kv-cache-gb 4
  done
  peer smollm2-135m "$models/smollm2-135m.config.json" 1 128 64
  make_model llama3.2-1b "$models/llama3.2-1b.config.json" 1 && for b in 1 16; do
    bench llama3.2-1b build/bench-models/llama3.2-1b/model.kplan --batch $b --prompt-len 512 --gen-len 64 --kv-cache-gb 8
    bench_persistent llama3.2-1b --batch $b --prompt-len 512 --gen-len 64 --kv-cache-gb 8
  done
  for b in 1 16; do peer llama3.2-1b "$models/llama3.2-1b.config.json" $b 512 64; done
fi
if [[ $phases == *" 8b "* ]]; then
  cfg8=$models/llama3-8b.config.json
  if make_model llama3-8b "$cfg8" 4; then
    p8=build/bench-models/llama3-8b/model.kplan
    # Start-up from a warm page cache to the first token, as a user sees it.
    python3 - "$kiln" "$p8" <<'PY' | tee -a "$jsonl"
import json, subprocess, sys, time
t0 = time.time()
subprocess.run([sys.argv[1], "run", sys.argv[2], "--prompt", "Hello", "--max-new-tokens", "1"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(json.dumps({"bench": "startup_to_first_token", "shape": "llama3-8b", "peer": "kiln",
                  "s": round(time.time() - t0, 2)}))
PY
    for b in 1 16 64; do bench llama3-8b "$p8" --batch $b --prompt-len 512 --gen-len 64 --kv-cache-gb 40; done
    for b in 1 16; do bench_persistent llama3-8b --batch $b --prompt-len 512 --gen-len 64 --kv-cache-gb 40; done
    bench llama3-8b "$p8" --batch 1 --prompt-len 4096 --gen-len 8 --kv-cache-gb 40
    for b in 1 64 16; do peer llama3-8b "$cfg8" $b 512 64; done
  fi
fi

cp "$jsonl" "$out/" 2>/dev/null
tar czf "$out/e2e-logs.tgz" -C "$logs" . 2>/dev/null
python3 - "$jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
copy = next((r["TBps"] for r in rows if r.get("bench") == "copy"), None)
print(f"\n==== kiln vs gpt-fast-style torch.compile, one run; copy ceiling {copy} TB/s ====")
print(f"{'shape':14} {'plan':22} {'batch':>5} {'prompt':>6} {'kiln ms/step':>12} {'peer ms/step':>12} {'kiln/peer':>9} "
      f"{'kiln tok/s':>10} {'TTFT ms':>8} {'weights TB/s':>12} {'floor %':>7} {'launch':>6}")
kiln = [r for r in rows if r.get("peer") == "kiln" and r.get("bench") == "e2e_decode" and r.get("cuda_graphs", True)]
peer = {(r["shape"], r["batch"]): r for r in rows if r.get("peer") == "torch_compile_gptfast"}
for r in kiln:
    p = peer.get((r.get("shape", "?"), r["batch"])) if r.get("prompt") == 512 or r.get("shape") == "smollm2-135m" else None
    ratio = f"{p['ms_per_step'] / r['ms_per_step']:.2f}x" if p else "-"
    plan = r.get("variant", "default") + (" [ran persistent]" if r.get("persistent") else "")
    print(f"{r.get('shape','?'):14} {plan:22} {r['batch']:>5} {r['prompt']:>6} {r['ms_per_step']:>12.3f} "
          f"{(p['ms_per_step'] if p else float('nan')):>12.3f} {ratio:>9} {r['tok_s']:>10.1f} {r['ttft_ms']:>8.1f} "
          f"{r['TBps']:>12.3f} {100 * r['floor_fraction']:>7.1f} {r['launches_per_step']:>6}")
for r in rows:
    if r.get("bench") == "startup_to_first_token":
        print(f"start-up to first token ({r['shape']}): {r['s']:.1f} s")
PY
