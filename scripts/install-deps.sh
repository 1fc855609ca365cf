#!/usr/bin/env bash
# Installs what kiln builds and tests against on a fresh Debian/Ubuntu machine. Idempotent:
# packages already present are left alone, and a second run changes nothing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

debs=(
  build-essential cmake ninja-build pkg-config python3 python3-pip
  libabsl-dev nlohmann-json3-dev libcli11-dev libxxhash-dev libgtest-dev libgmock-dev
  libbenchmark-dev libcpp-httplib-dev libicu-dev
  clang libclang-rt-dev  # libFuzzer + sanitizer runtimes for scripts/fuzz.sh
)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "install-deps: Debian packages present"
fi

# Python is used only by fixture/golden scripts and the loopback server tests beside the project
# (never by kiln itself); `openai` is the real client tests/server/serve_test.py drives.
py_missing=()
# jinja2 renders the chat-template goldens exactly as transformers does when transformers is absent.
for m in numpy gguf safetensors tokenizers openai jinja2; do
  python3 -c "import $m" 2>/dev/null || py_missing+=("$m")
done
if [ ${#py_missing[@]} -gt 0 ]; then
  echo "install-deps: pip installing ${py_missing[*]}"
  python3 -m pip install -q "${py_missing[@]}" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "${py_missing[@]}"
fi

# The CUDA toolkit (NVRTC, cuBLASLt, headers) is used when present; kiln builds without it.
if [ -d /usr/local/cuda ] || command -v nvcc >/dev/null 2>&1; then
  echo "install-deps: CUDA toolkit found"
else
  echo "install-deps: no CUDA toolkit found; building the CPU reference backend only"
fi
