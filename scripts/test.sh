#!/usr/bin/env bash
# Configures, builds everything (tests, examples, benchmarks, package and fuzz checks) and runs every test
# that needs no GPU. Usage: scripts/test.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
export PATH="/usr/local/cuda/bin:$PATH"

launcher=()
if command -v ccache >/dev/null; then
  # Paths relative to the checkout, so that fresh clones share the cache.
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}"
cmake --build "$build" --parallel "$(nproc)"
ctest --test-dir "$build" --label-exclude gpu --output-on-failure --parallel "$(nproc)"
