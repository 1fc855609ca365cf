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
timeout 150 bash bench/gpu/gpu_tests.sh '*GemvGpu*:*GemvPath*' >"$out/gemv-ctest.log" 2>&1
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
  timeout 50 build/bench/gemv_bench --sweep --quick 2>>"$out/gemv-bench.err" |
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
copy = next((r["TBps"] for r in rows if r.get("bench") == "copy" and "part" not in r), None)
torch_copy = next((r["TBps"] for r in rows if r.get("bench") == "copy" and "part" in r), None)
peer = {(r["shape"], r["M"]): r["weight_TBps"] for r in rows
        if r.get("bench") == "gemm" and r.get("peer") == "torch"}
def tiling(key):  # "rt1_w8_u4" of a gemv key
    return "rt" + key.split("_rt", 1)[1] if "_rt" in key else key
main = {(r["shape"], r["M"]): r for r in rows if r.get("bench") == "gemv"}
best = {}
for r in rows:
    if r.get("bench") in ("gemv", "gemv_sweep"):
        k = (r["shape"], r["M"])
        if k not in best or r["kiln_TBps"] > best[k]["kiln_TBps"]:
            best[k] = r
print(f"copy ceiling: gemv_bench {copy} TB/s, torch {torch_copy} TB/s. Weight TB/s per GEMM "
      "(kiln GEMV / cuBLASLt, % of copy for kiln); torch = decode_gemm_peer at M=1/16")
print(f"{'shape':<13} {'M=1 kiln/cuBLASLt':>19} {'M=4':>13} {'M=16':>13} {'kiln %copy 1/4/16':>18} "
      f"{'torch':>10}  best sweep (M=1, M=16)")
for shape in dict.fromkeys(s for s, _ in main):
    cells, pct = [], []
    for m in (1, 4, 16):
        r = main.get((shape, m))
        cells.append(f"{r['kiln_TBps']:.2f}/{r['cublas_TBps']:.2f}" if r else "-")
        pct.append(f"{r['kiln_pct_copy']:.0f}" if r else "-")
    t = "/".join(f"{peer[(shape, m)]:.2f}" if (shape, m) in peer else "-" for m in (1, 16))
    sw = ", ".join(f"{best[(shape, m)]['kiln_TBps']:.2f} {tiling(best[(shape, m)]['key'])}"
                   for m in (1, 16) if (shape, m) in best and best[(shape, m)] is not main.get((shape, m)))
    print(f"{shape:<13} {cells[0]:>19} {cells[1]:>13} {cells[2]:>13} {'/'.join(pct):>18} {t:>10}  {sw}")
eight = [r for r in main.values() if r["shape"].startswith("8b_")]
if eight:
    low = min(eight, key=lambda r: r["kiln_pct_copy"])
    wins = sum(r["winner"] == "kiln" for r in main.values())
    print(f"8B projections >= 85% of copy at every batch: "
          f"{'yes' if low['kiln_pct_copy'] >= 85 else 'NO'} (min {low['kiln_pct_copy']:.1f}% at "
          f"{low['shape']} M={low['M']}); kiln faster than cuBLASLt in {wins}/{len(main)} cases")
PY
printf '%s\n' "${status[@]}"
