#!/usr/bin/env bash
# GPU part: every `ctest -L gpu` test, the HF transformers logits comparison, `kiln run` on cuda
# and cpu and a SmolLM2-shape bench (bench/cuda_backend_gpu.sh); its summary table comes last.
cd "$(dirname "$0")/../.."
bash bench/cuda_backend_gpu.sh .devdeps "$MODELS/smollm2-135m.config.json" 2>&1 | tail -n 60
