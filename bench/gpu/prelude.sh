#!/usr/bin/env bash
# Sourced (not run) at the repository root on the GPU machine before any bench/gpu/<part>.sh:
# unpacks the dependencies packed by scripts/pack-gpu-deps.sh (.devdeps, carried to the machine),
# builds everything including the tests (Release, all cores) into build/ (KILN_PREBUILT=1: uses the
# binaries carried in build/tools and build/tests instead), and exports what the
# parts use: KILN (the CLI), MODELS (model shape configs), PEERS (torch_peers.py and friends),
# OUT (the folder whose files come back; build/gpu-logs when unset).
#   usage:  source bench/gpu/prelude.sh && bash bench/gpu/<part>.sh
deps=${KILN_DEVDEPS:-.devdeps}
export OUT=${OUT:-build/gpu-logs}
mkdir -p "$OUT"
if [ -f "$deps/unpack-deps.sh" ]; then
  mkdir -p "${KILN_DEPS:-/opt/kiln-deps}" 2>/dev/null || export KILN_DEPS=/tmp/kiln-deps
  # shellcheck disable=SC1091
  source "$deps/unpack-deps.sh" "$deps" >/tmp/kiln-unpack.log 2>&1
fi
[ -d "$deps/python" ] && export PYTHONPATH="$(cd "$deps/python" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
export PATH="/usr/local/cuda/bin:$PATH"
export MODELS=$deps/models PEERS=$deps KILN=build/tools/kiln
[ -d shared/models ] && MODELS=shared/models
if [ -n "${KILN_PREBUILT:-}" ]; then
  # Binaries built on the development machine and carried (build/tools/kiln, build/tests/*_gpu_test):
  # the tests have that machine's source and build folders compiled in (KILN_SOURCE_DIR, fixtures
  # under KILN_BUILD_DIR), so that path is made to lead here.
  src=${KILN_PREBUILT_SRC:-/work/main}
  if [ "$(cd "$src" 2>/dev/null && pwd -P)" != "$(pwd -P)" ]; then
    [ -L "$src" ] && rm -f "$src"
    mkdir -p "$(dirname "$src")" && [ ! -e "$src" ] && ln -s "$(pwd -P)" "$src" ||
      echo "== prelude: cannot link $src here; tests that write fixtures will fail"
  fi
  "$KILN" --version >/dev/null 2>&1 && echo "== prelude: prebuilt kiln runs" ||
    { echo "== prelude: prebuilt kiln does not run:"; "$KILN" --version 2>&1 | head -3; }
elif [ -z "${KILN_PRELUDE_NO_BUILD:-}" ]; then
  t0=$SECONDS
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=ON \
    -DCUDAToolkit_ROOT=/usr/local/cuda >/tmp/kiln-configure.log 2>&1 || tail -20 /tmp/kiln-configure.log
  if cmake --build build -j"$(nproc)" >/tmp/kiln-build.log 2>&1; then
    echo "== prelude: built in $((SECONDS - t0)) s"
  else
    grep -E "error|FAILED" /tmp/kiln-build.log | head -30
    echo "== prelude: BUILD FAILED"
  fi
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null
