#!/usr/bin/env bash
# GPU serving figures (issue 12): `kiln serve` on the GPU with random-weight plans at the
# SmolLM2-135M and Llama-3-8B shapes, driven by bench/serve_bench.py over loopback — a fixed
# concurrency and Poisson arrivals, each with the prefix cache on and off, on a workload whose
# prompts share a prefix (a system prompt) — plus a leak check of /metrics after each server.
# JSON lines (serve_bench reports, leak checks) go to $OUT/serve.jsonl, server and client logs to
# $OUT/serve-logs/, and a table comes last.
# First the GPU test serving relies on (a step on another thread than the opening one), last a
# figure of batch invariance (16 greedy answers sent together vs alone).
#   usage (repository root, after bench/gpu/prelude.sh):  bash bench/gpu/serve.sh [small] [8b]
#   (both when no argument). KILN_SERVE_BUDGET_S (default 230) bounds the whole script: a phase
#   that would not fit is skipped with a line saying so. KILN_SERVE_DRY=1 tries the script out on
#   the CPU reference backend with a tiny workload (plans made beforehand; no figures).
# The plans are bench/e2e_gpu.sh's (build/bench-models/<shape>/model.kplan, reused when present).
# Their tokenizer is scripts/make_fixture.py's 512-token one, so prompts are token ids 3..511; the
# model's outputs mostly lie beyond it and decode to no text, which is why kiln sends one stream
# chunk a token (text or not) and serve_bench times those chunks.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
phases=" $* "
[ -z "$*" ] && phases=" small 8b "
KILN=${KILN:-build/tools/kiln}
MODELS=${MODELS:-.devdeps/models}
[ -d "$MODELS" ] || MODELS=shared/models
[ -d "$MODELS" ] || MODELS=../shared/models
OUT=${OUT:-build/gpu-logs}
mkdir -p "$OUT/serve-logs"
logs=$OUT/serve-logs
jsonl=$OUT/serve.jsonl
: >"$jsonl"
t_start=$SECONDS
budget=${KILN_SERVE_BUDGET_S:-230}
left() { echo $((budget - (SECONDS - t_start))); }
device=cuda
scale=1
if [ -n "${KILN_SERVE_DRY:-}" ]; then
  device=cpu
  scale=16
fi

server_pid=""
server_port=""
stop_server() {  # SIGTERM (drains; nothing is in flight by then), SIGKILL after 20 s
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 1 200); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server_pid" 2>/dev/null; then
      echo "== server $server_pid did not stop on SIGTERM within 20 s: killed"
      kill -KILL "$server_pid" 2>/dev/null
    fi
  fi
  wait "$server_pid" 2>/dev/null
  server_pid=""
}
trap stop_server EXIT
trap 'stop_server; exit 143' TERM INT  # all.sh's time limit: the server goes too

start_server() {  # start_server NAME PLAN FLAGS...: kiln serve on a free port, up to 150 s to start
  local name=$1 plan=$2 log=$logs/server-$1.log
  shift 2
  echo "== kiln serve $name: $*"
  local t0
  t0=$(date +%s.%N)
  "$KILN" serve "$plan" --port 0 --device "$device" --served-model-name "$name" "$@" 2>"$log" &
  server_pid=$!
  for _ in $(seq 1 1500); do
    server_port=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log" | head -1)
    [ -n "$server_port" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$server_port" ]; then
    echo "== kiln serve $name did not start; its log:"
    tail -20 "$log"
    stop_server
    return 1
  fi
  local line
  line=$(grep -m1 'kiln serve: ' "$log")
  echo "$line"
  python3 -c "import json, sys, time
print(json.dumps({'bench': 'serve_start', 'shape': sys.argv[1], 'flags': sys.argv[2],
                  'startup_s': round(time.time() - float(sys.argv[3]), 2), 'line': sys.argv[4]}))" \
    "$name" "$*" "$t0" "$line" >>"$jsonl"
}

# bench NAME TAGS -- ARGS...: one serve_bench run against the running server (120 s at most, and
# never past the budget).
bench() {
  local name=$1 tags=$2
  shift 3
  if [ "$(left)" -lt 20 ]; then
    echo "== $name skipped: time budget"
    return 0
  fi
  local limit=$(($(left) - 10))
  [ $limit -gt 120 ] && limit=120
  echo "== serve_bench $name $* (${limit} s at most)"
  # shellcheck disable=SC2086
  timeout -k 5 $limit python3 bench/serve_bench.py --base-url "http://127.0.0.1:$server_port" \
    --timeout $limit --vocab-low 3 --vocab-high 511 --kiln-metrics --label "$name" --jsonl "$jsonl" \
    --tag $tags "$@" >"$logs/bench-$name.log" 2>&1
  local rc=$?
  grep -E 'Successful|Failed|Output token throughput|Mean TTFT|Mean ITL|hit rate|^error' \
    "$logs/bench-$name.log" | sed 's/^/   /'
  if [ $rc -ne 0 ]; then
    echo "== serve_bench $name failed (exit $rc); its log and the server's:"
    tail -15 "$logs/bench-$name.log"
    tail -15 "$logs"/server-*.log 2>/dev/null | tail -15
  fi
}

# After a server's runs: every request done and no page held but the prefix cache's.
leak_check() {  # leak_check NAME on|off
  if ! timeout -k 5 60 python3 - "$server_port" "$1" "$2" "$jsonl" <<'PY'
import json, sys, time, urllib.request
port, name, cache, path = sys.argv[1:]
deadline = time.time() + 30
while True:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    except OSError as e:  # the server died
        row = {"bench": "serve_leak_check", "shape": name, "prefix_cache": cache, "ok": False,
               "error": repr(e)}
        open(path, "a").write(json.dumps(row) + "\n")
        sys.exit(f"   leak check: no /metrics: {e!r}")
    m = {l.split()[0]: float(l.split()[1]) for l in text.splitlines()
         if l and not l.startswith("#") and "{" not in l and len(l.split()) == 2}
    idle = m["kiln_num_requests_running"] == 0 and m["kiln_queue_depth"] == 0
    if idle or time.time() > deadline:
        break
    time.sleep(0.2)
ok = idle and m["kiln_kv_request_sequences"] == 0 and m["kiln_kv_pages_used"] == m["kiln_kv_pages_prefix_cached"]
row = {"bench": "serve_leak_check", "shape": name, "prefix_cache": cache, "ok": ok,
       "requests_finished": m["kiln_requests_finished_total"],
       "requests_failed": m["kiln_requests_failed_total"],
       "preemptions": m["kiln_preemptions_total"], "kv_pages_used": m["kiln_kv_pages_used"],
       "kv_pages_prefix_cached": m["kiln_kv_pages_prefix_cached"],
       "kv_request_sequences": m["kiln_kv_request_sequences"]}
open(path, "a").write(json.dumps(row) + "\n")
print("   leak check:", "ok" if ok else "FAILED", json.dumps(row))
PY
  then
    echo "== the server's log:"
    tail -15 "$logs/server-$1.log"
  fi
}

make_model() {  # make_model NAME CONFIG SHARDS -> build/bench-models/NAME/model.kplan
  local dir=build/bench-models/$1
  [ -f "$dir/model.kplan" ] && return 0
  local t0=$SECONDS
  timeout -k 5 150 python3 bench/make_bench_model.py --config "$2" --out "$dir" --shards "$3" \
    >"$logs/gen-$1.log" 2>&1 || { echo "== $1: weights not written:"; tail -5 "$logs/gen-$1.log"; return 1; }
  echo "== $1: random weights written in $((SECONDS - t0)) s"
  timeout -k 5 120 "$KILN" compile "$dir" -o "$dir/model.kplan" >"$logs/compile-$1.log" 2>&1 ||
    { echo "== $1: compile failed:"; tail -5 "$logs/compile-$1.log"; rm -f "$dir/model.kplan"; return 1; }
}

# consistency NAME PLAN: 16 greedy completions sent one at a time, then all at once (ragged
# batches, prefix cache on): how many texts are identical. On the reference backend they all are
# (tests/server/serve_test.py); on the GPU a different batch shape may round a near-tie the other
# way, so this is a figure, not a pass/fail. The plan's vocabulary is its tokenizer's (512), so
# every output token has text to compare.
consistency() {
  start_server "$1" "$2" --kv-cache-gb 2 --max-running 64 --max-step-tokens 2048 \
    --max-context 1024 || return 0
  if ! timeout -k 5 90 python3 - "$server_port" "$1" "$jsonl" <<'PY'
import concurrent.futures, json, sys, urllib.request
port, name, path = sys.argv[1:]
def complete(prompt):
    body = json.dumps({"prompt": prompt, "max_tokens": 16, "temperature": 0, "ignore_eos": True})
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body.encode(),
                                 {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=60).read())["choices"][0]["text"]
prompts = [f"The story of the number {i} begins with a long {'and winding ' * (i % 4)}road"
           for i in range(16)]
alone = [complete(p) for p in prompts]
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    together = list(pool.map(complete, prompts))
same = sum(a == b for a, b in zip(alone, together))
row = {"bench": "serve_consistency", "shape": name, "requests": len(prompts), "identical": same,
       "nonempty": sum(1 for a in alone if a)}
open(path, "a").write(json.dumps(row) + "\n")
print("   concurrent vs alone:", json.dumps(row))
PY
  then
    echo "== consistency check failed; server log:"
    tail -10 "$logs/server-$1.log"
  fi
  leak_check "$1" on
  stop_server
}

# serve_shape NAME KV_GB CONCURRENCY RATE PROMPTS: the four runs (concurrency / Poisson x prefix
# cache on / off) on a 256-token shared prefix + 256 own tokens, 128 output tokens.
serve_shape() {
  local name=$1 kv=$2 conc=$3 rate=$4 n=$5
  local plan=build/bench-models/$name/model.kplan
  local work=(--shared-prefix-len $((256 / scale)) --input-len $((256 / scale))
              --output-len $((128 / scale)) --num-prompts $((n / scale)))
  local flags=(--kv-cache-gb "$kv" --max-running 64 --max-step-tokens 2048 --max-context 2048
               --max-queue 1024)
  for cache in on off; do
    if [ "$(left)" -lt 40 ]; then
      echo "== $name prefix cache $cache skipped: time budget"
      continue
    fi
    local extra=()
    [ $cache = off ] && extra=(--no-prefix-cache)
    start_server "$name" "$plan" "${flags[@]}" "${extra[@]}" || continue
    # Warm-up (CUDA graphs of the batch sizes, cuBLASLt plans), not recorded; other prompts.
    timeout -k 5 60 python3 bench/serve_bench.py --base-url "http://127.0.0.1:$server_port" \
      --vocab-low 3 --vocab-high 511 --num-prompts 32 --input-len $((256 / scale)) \
      --output-len 8 --seed 99 >"$logs/warmup-$name-$cache.log" 2>&1 ||
      { echo "== warm-up failed:"; tail -5 "$logs/warmup-$name-$cache.log"; tail -10 "$logs/server-$name.log"; }
    bench "$name-c$conc-prefix-$cache" "shape=$name prefix_cache=$cache mode=concurrency" -- \
      "${work[@]}" --max-concurrency "$conc" --seed 1
    bench "$name-r$rate-prefix-$cache" "shape=$name prefix_cache=$cache mode=poisson" -- \
      "${work[@]}" --request-rate "$rate" --seed 2
    leak_check "$name" "$cache"
    stop_server
    cp "$logs/server-$name.log" "$logs/server-$name-prefix-$cache.log"
  done
}

# The GPU test serving depends on: a step on a thread other than the one that opened the backend
# (the engine thread) gives the same tokens and logits.
if [ -z "${KILN_SERVE_DRY:-}" ]; then
  echo "== ctest -L gpu -R CudaBackendGpuThreads"
  timeout -k 5 120 ctest --test-dir build -L gpu -R CudaBackendGpuThreads --output-on-failure \
    >"$logs/ctest-threads.log" 2>&1
  rc=$?
  grep -E 'tests passed|Passed|Failed|Skipped|\*\*\*' "$logs/ctest-threads.log" | sed 's/^/   /'
  skipped=false
  grep -q 'Skipped' "$logs/ctest-threads.log" && skipped=true
  echo "{\"bench\": \"serve_gpu_test\", \"test\": \"CudaBackendGpuThreads\", \"ok\": $([ $rc -eq 0 ] && echo true || echo false), \"skipped\": $skipped}" >>"$jsonl"
fi

if [[ $phases == *" small "* ]]; then
  make_model smollm2-135m "$MODELS/smollm2-135m.config.json" 1 &&
    serve_shape smollm2-135m 4 32 32 96
fi
if [[ $phases == *" 8b "* ]]; then
  if [ "$(left)" -lt 120 ] && [ ! -f build/bench-models/llama3-8b/model.kplan ]; then
    echo "== llama3-8b skipped: $(left) s left, generating its weights takes ~1 min"
  else
    make_model llama3-8b "$MODELS/llama3-8b.config.json" 4 &&
      serve_shape llama3-8b 40 32 16 64
  fi
fi

if [[ $phases == *" small "* ]]; then
  if [ "$(left)" -lt 30 ]; then
    echo "== concurrent-vs-alone check skipped: time budget"
  else
    cfg=$logs/smollm2-135m-v512.config.json
    python3 -c "import json, sys; c = json.load(open(sys.argv[1])); c['vocab_size'] = 512
json.dump(c, open(sys.argv[2], 'w'))" "$MODELS/smollm2-135m.config.json" "$cfg" &&
      make_model smollm2-135m-v512 "$cfg" 1 &&
      consistency smollm2-135m-v512 build/bench-models/smollm2-135m-v512/model.kplan
  fi
fi

echo "== serve.sh: $((SECONDS - t_start)) s"
python3 - "$jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
f = lambda v, w=7, p=1: f"{v:>{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"
print("\n==== kiln serve on the GPU (random weights; 256-token shared prefix + 256, 128 out) ====")
print(f"{'shape':13} {'mode':8} {'cache':5} {'ok/fail':>7} {'req/s':>6} {'out tok/s':>9} "
      f"{'TTFT mean/med/p99 ms':>22} {'TPOT mean/med/p99 ms':>22} {'ITL mean/med/p99 ms':>22} {'hit':>5}")
for r in rows:
    if "request_throughput" not in r:
        continue
    c = r["config"]
    mode = f"c{c['max_concurrency']}" if r.get("mode") == "concurrency" else f"r{c['request_rate']}"
    trip = lambda k: "/".join(f(r[k][q], 1, 1).strip() for q in ("mean", "median", "p99"))
    print(f"{r.get('shape', '?'):13} {mode:8} {r.get('prefix_cache', '?'):5} "
          f"{str(r['completed']) + '/' + str(r['failed']):>7} {f(r['request_throughput'], 6, 2)} "
          f"{f(r['output_throughput'], 9, 0)} {trip('ttft_ms'):>22} {trip('tpot_ms'):>22} "
          f"{trip('itl_ms'):>22} {f(r.get('server', {}).get('prefix_hit_rate'), 5, 2)}")
for r in rows:
    if r.get("bench") == "serve_gpu_test":
        verdict = "SKIPPED" if r["skipped"] else "passed" if r["ok"] else "FAILED"
        print(f"ctest {r['test']}: {verdict} (serve-logs/ctest-threads.log)")
for r in rows:
    if r.get("bench") == "serve_consistency":
        print(f"concurrent vs alone ({r['shape']}): {r['identical']}/{r['requests']} identical "
              f"greedy texts ({r['nonempty']} non-empty)")
for r in rows:
    if r.get("bench") == "serve_start":
        print(f"server {r['shape']} up in {r['startup_s']} s: {r['line']}")
for r in rows:
    if r.get("bench") == "serve_leak_check" and "error" in r:
        print(f"leak check {r['shape']} prefix cache {r['prefix_cache']}: FAILED ({r['error']})")
    elif r.get("bench") == "serve_leak_check":
        print(f"leak check {r['shape']} prefix cache {r['prefix_cache']}: "
              f"{'ok' if r['ok'] else 'FAILED'} "
              f"(finished {r['requests_finished']:.0f}, failed {r['requests_failed']:.0f}, "
              f"preemptions {r['preemptions']:.0f})")
if not rows:
    print("no results: see the lines above and serve-logs/")
PY
