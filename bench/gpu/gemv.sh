#!/usr/bin/env bash
# GPU part `gemv` (issue 13 item 3): the small-batch GEMV kernel's GPU tests (kernel vs host
# product at M = 1..16, every epilogue; CudaBackend with every matmul on the GEMV path vs the
# reference backend), then gemv_bench (kiln GEMV vs cuBLASLt at the 8B / 1B / SmolLM2 decode
# shapes, batch 1/4/16, copy ceiling in the same run; a block-shape sweep of the 8B shapes), the
# cuBLAS peer and the torch copy ceiling when time allows. JSON lines -> $OUT/gemv.jsonl; a table
# last. Assumes bench/gpu/prelude.sh was sourced (build/, KILN, PEERS, OUT).
#   usage (repository root):  source bench/gpu/prelude.sh && bash bench/gpu/gemv.sh
set -uo pipefail
out=${OUT:-build/gpu-logs}
mkdir -p "$out"
jsonl=$out/gemv.jsonl
: >"$jsonl"
t0=$SECONDS
declare -a status=()

echo "== gemv: GPU tests"
timeout 150 ctest --test-dir build -L gpu -R 'GemvGpu|GemvPath' -j4 --output-on-failure \
  >"$out/gemv-ctest.log" 2>&1
rc=$?
grep -q "No tests were found" "$out/gemv-ctest.log" && rc=1
grep -E "tests passed|Failed|\*\*\*|Skipped|Not Run" "$out/gemv-ctest.log" | head -20
grep -h "GEMV path" "$out/gemv-ctest.log" | head -8 || true
status+=("gpu tests: $([ $rc -eq 0 ] && echo PASS || echo "FAIL (rc $rc, gemv-ctest.log)")")

echo "== gemv: gemv_bench (default block shapes)"
timeout 60 build/bench/gemv_bench >"$out/gemv-bench.jsonl" 2>"$out/gemv-bench.err"
rc=$?
cat "$out/gemv-bench.jsonl" >>"$jsonl"
tail -3 "$out/gemv-bench.err"
status+=("gemv_bench: rc $rc")

if [ $((SECONDS - t0)) -lt 110 ]; then
  echo "== gemv: gemv_bench --sweep --quick (block-shape sweep)"
  timeout 40 build/bench/gemv_bench --sweep --quick 2>>"$out/gemv-bench.err" |
    grep '"default_spec": false' | sed 's/"bench": "gemv"/"bench": "gemv_sweep"/' \
      >>"$jsonl"
fi
if [ -n "${PEERS:-}" ] && [ -f "$PEERS/torch_peers.py" ] && [ $((SECONDS - t0)) -lt 130 ]; then
  echo "== gemv: torch copy ceiling"
  timeout 30 python3 "$PEERS/torch_peers.py" ceilings 2>/dev/null | sed 's/^{/{"part": "gemv", /' \
    >>"$jsonl"
fi
if [ -n "${PEERS:-}" ] && [ -f "$PEERS/decode_gemm_peer.py" ] && [ $((SECONDS - t0)) -lt 135 ]; then
  echo "== gemv: cuBLAS peer (torch.matmul)"
  timeout 45 python3 "$PEERS/decode_gemm_peer.py" 2>/dev/null | sed 's/^{/{"peer": "torch", /' \
    >>"$jsonl"
fi

echo "== gemv: table ($((SECONDS - t0)) s)"
python3 - "$jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
copy = next((r["TBps"] for r in rows if r.get("bench") == "copy" and "peer" not in r
             and "part" not in r), None)
torch_copy = next((r["TBps"] for r in rows if r.get("bench") == "copy" and "part" in r), None)
peer = {(r["shape"], r["M"]): r["weight_TBps"] for r in rows
        if r.get("bench") == "gemm" and r.get("peer") == "torch"}
best = {}
for r in rows:
    if r.get("bench") in ("gemv", "gemv_sweep"):
        k = (r["shape"], r["M"])
        if k not in best or r["kiln_TBps"] > best[k]["kiln_TBps"]:
            best[k] = r
print(f"copy ceiling: gemv_bench {copy} TB/s, torch {torch_copy} TB/s")
print(f"{'shape':<13}{'M':>3} {'kiln TB/s':>9} {'%copy':>6} {'cuBLASLt':>9} {'%copy':>6} "
      f"{'torch':>6} {'winner':>7} {'best sweep':>10}  key")
for r in rows:
    if r.get("bench") != "gemv":
        continue
    k = (r["shape"], r["M"])
    b = best[k]
    p = peer.get(k)
    print(f"{r['shape']:<13}{r['M']:>3} {r['kiln_TBps']:>9.3f} {r['kiln_pct_copy']:>6.1f} "
          f"{r['cublas_TBps']:>9.3f} {r['cublas_pct_copy']:>6.1f} "
          f"{(f'{p:.2f}' if p else '-'):>6} {r['winner']:>7} {b['kiln_TBps']:>10.3f}  "
          f"{b['key'] if b is not r else ''}")
eight = [r for r in rows if r.get("bench") == "gemv" and r["shape"].startswith("8b_")]
if eight:
    ok = all(r["kiln_pct_copy"] >= 85 for r in eight)
    print(f"8B projections >= 85% of copy at every batch: {'yes' if ok else 'NO'} "
          f"(min {min(r['kiln_pct_copy'] for r in eight):.1f}%)")
PY
printf '%s\n' "${status[@]}"
