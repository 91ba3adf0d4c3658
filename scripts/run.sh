#!/usr/bin/env bash
# The main job: configures, builds fm-dsv4 and runs it on the embedded tiny DeepSeek-V4 checkpoint (prefill
# a prompt, decode, print the generated ids, tokens/s and the KV bytes per layer kind).
# Usage: scripts/run.sh [build-dir] [fm-dsv4 arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift $(( $# > 0 ? 1 : 0 ))
export PATH="/usr/local/cuda/bin:$PATH"

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build "$build" --target fm-dsv4
"$build/examples/fm-dsv4" "$@"
