#!/usr/bin/env bash
# On the development machine (Debian 12): gather everything bench/run_gpu.sh needs on the GPU
# machine (no network there) into one folder: the shared pack-deps.sh set (Abseil, json, CLI11,
# xxHash, GoogleTest, benchmark), plus what kiln needs beyond it — ICU (the tokenizer's Unicode
# categories: libicu-dev + its runtime libicu72, which Ubuntu 24.04 does not ship) and
# cpp-httplib (server; its pkg-config needs brotli's .pc files, absent on the GPU machine) — and the pure-Python `gguf` (+ `yaml`) packages that
# scripts/make_fixture.py imports (the GPU image has numpy, safetensors, tokenizers via
# transformers). Keep the folder out of git.
#   usage: scripts/pack-gpu-deps.sh [DEST]   (default .devdeps; run from the repository root)
set -euo pipefail
dest=${1:-.devdeps}
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${KILN_SHARED:-$here/../shared}
[ -f "$shared/offline-gpu/pack-deps.sh" ] || shared=/work/shared
bash "$shared/offline-gpu/pack-deps.sh" "$dest"
dest=$(cd "$dest" && pwd)
extra="libicu-dev libicu72 libcpp-httplib-dev libcpp-httplib0.11 libbrotli-dev libbrotli1"
(cd "$dest" && for p in $extra; do
  apt-get download "$p" >/dev/null 2>&1 || echo "pack-gpu-deps: could not download $p (run apt-get update first?)" >&2
done)
# Python packages for the fixtures, copied from this machine's interpreter (pure Python).
mkdir -p "$dest/python"
for m in gguf yaml; do
  dir=$(python3 -c "import $m, os; print(os.path.dirname($m.__file__))" 2>/dev/null) || {
    echo "pack-gpu-deps: python3 has no $m; CPU tests that need fixtures will not run there" >&2
    continue
  }
  rm -rf "$dest/python/$m" && cp -r "$dir" "$dest/python/$m"
  find "$dest/python/$m" -name '*.so' -delete  # pure-Python fallbacks only (other CPython there)
done
cp "$here/bench/run_gpu.sh" "$dest/" 2>/dev/null || true
ls -1 "$dest"/*.deb | wc -l | xargs echo "pack-gpu-deps: debs in $dest:"
du -sh "$dest" | cut -f1 | xargs echo "pack-gpu-deps: size:"
