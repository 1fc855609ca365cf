#!/usr/bin/env bash
# The README's second command (and CI's): build kiln with AddressSanitizer + UBSan and run every
# test, then fuzz every reader of untrusted input for a bounded time (scripts/fuzz.sh; ~5 min,
# KILN_SKIP_FUZZ=1 skips it). GPU tests (ctest label `gpu`) skip with a stated reason when no GPU
# is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The default model and the tokenizer.json built from it (cached; tests on them skip without).
bash scripts/fetch-model.sh >/dev/null || echo "test.sh: could not fetch the default model; its tests will skip"
python3 scripts/make_tokenizer_golden.py --tokenizer-json-only >/dev/null ||
  echo "test.sh: could not build the SmolLM2 tokenizer.json; its tests will skip"
python3 scripts/make_llamacpp_golden.py --f32-only >/dev/null ||
  echo "test.sh: could not write the F32 SmolLM2 GGUF; the llama.cpp comparison will skip"
jobs=$(nproc)
cmake -S . -B build-test -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=ON >/dev/null
cmake --build build-test -j "$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
ctest --test-dir build-test --output-on-failure -j "$jobs"
if [ "${KILN_SKIP_FUZZ:-0}" != 1 ]; then
  bash scripts/fuzz.sh
fi
