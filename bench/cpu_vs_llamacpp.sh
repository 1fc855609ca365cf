#!/usr/bin/env bash
# kiln's CPU backend against llama.cpp on this machine (issue 17): builds kiln if needed, makes the
# F32 SmolLM2 GGUF if missing, then runs bench/cpu_vs_llamacpp.py (alternating runs, medians; the
# report lands in bench/results/<date>-cpu-<cpu>.md). Run it on a quiet machine: it prints the load
# average with every run. Extra arguments go to the Python helper (--threads, --rounds, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${KILN_CACHE:-$HOME/.cache/kiln}"
Q41="$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf"
F32="$CACHE/models/SmolLM2-135M-Instruct.F32.gguf"
KILN="${KILN:-build/tools/kiln}"
[[ -f "$Q41" ]] || bash scripts/fetch-model.sh
[[ -f "$F32" ]] || python3 scripts/make_llamacpp_golden.py --f32-only
python3 -c "import llama_cpp" 2>/dev/null || {
  echo "llama-cpp-python is missing: pip install llama-cpp-python" >&2
  exit 1
}
if [[ ! -x "$KILN" ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build --target kiln
fi
exec python3 bench/cpu_vs_llamacpp.py --kiln "$KILN" --q41 "$Q41" --f32 "$F32" "$@"
