#!/usr/bin/env bash
# tools/gpu_check.sh — everything the GPU part needs checked, in one call on a machine with an NVIDIA GPU:
#   1. the device (nvidia-smi) and what .carry/ provides (dependencies the machine lacks, e.g. nlohmann-json);
#   2. configure (CMake + Ninja) and build the GPU tests and benchmarks — or use a prebuilt build dir;
#   3. the GPU tests: `ctest -L gpu` (every gpu-labelled test case of the project)
#   4. the kernels' registers / stack / local memory (cuobjdump) and the benchmarks;
#   5. compute-sanitizer: memcheck on all of test_gpu, racecheck and synccheck on its [small] cases, each
#      bounded by the time left (GPU_CHECK_BUDGET seconds in all, default 540: a 10-minute call);
#   6. a summary table, printed last.
# Logs go to $OUT (or ./gpu-check-logs). Usage: tools/gpu_check.sh [prebuilt-build-dir]
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${OUT:-$root/gpu-check-logs}
mkdir -p "$out"
export PATH="/usr/local/cuda/bin:$PATH"
jobs=$(nproc 2>/dev/null || echo 8)
summary=()
add() { summary+=("$(printf '%-14s %s' "$1" "$2")"); }
started=$(date +%s)
deadline=$(( started + ${GPU_CHECK_BUDGET:-540} ))
elapsed() { echo "$(( $(date +%s) - started ))s"; }
# Seconds a stage may take: what it asks for, within the time left less `reserve` for the later stages.
allow() { local left=$(( deadline - $(date +%s) - ${2:-0} )); echo $(( left < $1 ? (left > 0 ? left : 1) : $1 )); }

# ---- 1. device and carried dependencies --------------------------------------------------------------
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.draw,power.limit \
      --format=csv,noheader 2>&1 | head -1)
echo "gpu: $gpu" | tee "$out/nvidia-smi.txt"
nvidia-smi >> "$out/nvidia-smi.txt" 2>&1
add device "$gpu"
echo "tools: $(nvcc --version | tail -1); $(cmake --version | head -1); ninja $(ninja --version 2>/dev/null || echo missing)"

cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a)
cuda_flags=""
# CMake before 3.31 does not know nvcc 13's C++20 flag (docs/packaging.md): pass it ourselves.
cmake_version=$(cmake --version | head -1 | awk '{print $3}')
if [ "$(printf '%s\n3.31\n' "$cmake_version" | sort -V | head -1)" != "3.31" ]; then cuda_flags="-std=c++20"; fi
if [ -d .carry ]; then
  echo "carry: $(cd .carry && find . -maxdepth 3 -type d | sort | tr '\n' ' ')"
  if [ -d .carry/share/cmake/nlohmann_json ] || [ -d .carry/lib/cmake/nlohmann_json ]; then
    cmake_args+=(-DCMAKE_PREFIX_PATH="$root/.carry")
    echo "carry: nlohmann_json package config found"
  elif [ -f .carry/include/nlohmann/json.hpp ]; then
    # Headers only: a two-file package config that points at them.
    shim="$root/build-gpu/nlohmann_json_shim"
    mkdir -p "$shim"
    printf '%s\n' 'if(NOT TARGET nlohmann_json::nlohmann_json)' \
      '  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)' \
      "  set_target_properties(nlohmann_json::nlohmann_json PROPERTIES INTERFACE_INCLUDE_DIRECTORIES \"$root/.carry/include\")" \
      'endif()' > "$shim/nlohmann_jsonConfig.cmake"
    printf '%s\n' 'set(PACKAGE_VERSION 3.11.0)' 'set(PACKAGE_VERSION_COMPATIBLE TRUE)' > "$shim/nlohmann_jsonConfigVersion.cmake"
    cmake_args+=(-Dnlohmann_json_DIR="$shim")
    echo "carry: nlohmann/json.hpp found (headers only; using a package shim)"
  fi
  [ -d .carry/include ] && cmake_args+=(-DCMAKE_CXX_FLAGS="-isystem $root/.carry/include") &&
    cuda_flags="$cuda_flags -isystem $root/.carry/include"
else
  echo "carry: none"
fi
[ -n "$cuda_flags" ] && cmake_args+=(-DCMAKE_CUDA_FLAGS="$cuda_flags")

# ---- 2. configure and build ---------------------------------------------------------------------------
build=${1:-}
if [ -n "$build" ]; then
  build=$(cd "$build" && pwd)
  add build "prebuilt: $build"
else
  build="$root/build-gpu"
  if ! cmake -S . -B "$build" "${cmake_args[@]}" > "$out/configure.log" 2>&1; then
    tail -25 "$out/configure.log"
    echo "configure failed; retrying without the tests (benchmarks only)"
    cmake -S . -B "$build" "${cmake_args[@]}" -DFLASHMEMORY_BUILD_TESTS=OFF >> "$out/configure.log" 2>&1 ||
      { tail -25 "$out/configure.log"; add configure "FAILED (see configure.log)"; }
  fi
  grep -E "Catch2|nlohmann|CUDA compiler identification|libcudacxx" "$out/configure.log" | head -8
  t0=$(date +%s)
  targets=()
  [ -f "$build/build.ninja" ] && grep -q "build tests/gpu/test_gpu:" "$build/build.ninja" && targets+=(test_gpu)
  targets+=(bench_lsa_kernels bench_decode bench_lsa)
  if cmake --build "$build" --target "${targets[@]}" --parallel "$jobs" -- -k 0 > "$out/build.log" 2>&1; then
    add build "ok: ${targets[*]} in $(( $(date +%s) - t0 ))s"
  else
    grep -E "error|FAILED" "$out/build.log" | head -20
    add build "FAILED (see build.log)"
  fi
  # Everything else (the other gpu-labelled tests live in several executables).
  cmake --build "$build" --parallel "$jobs" -- -k 0 >> "$out/build.log" 2>&1 ||
    echo "some targets did not build (see build.log)"
fi
test_bin="$build/tests/gpu/test_gpu"
bench_bin="$build/bench/bench_lsa_kernels"

# ---- 3. tests -----------------------------------------------------------------------------------------
# Every gpu-labelled test of the project, one process per test case, as CI would run them with a GPU.
timeout "$(allow 240 150)" ctest --test-dir "$build" -L gpu --output-on-failure --timeout 120 > "$out/ctest-gpu.log" 2>&1
rc=$?
add "ctest -L gpu" "$([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc"): $(grep -E 'tests passed' "$out/ctest-gpu.log" | tail -1)"
[ $rc = 0 ] || grep -E "\*\*\*Failed|Not Run|Timeout" "$out/ctest-gpu.log" | head -20

# ---- 4. resources and benchmarks ----------------------------------------------------------------------
if [ -x "$bench_bin" ]; then
  if command -v cuobjdump > /dev/null; then
    cuobjdump --dump-resource-usage "$bench_bin" > "$out/resource-usage.txt" 2>&1
    locals=$(grep -cE "STACK:[1-9]|LOCAL:[1-9]" "$out/resource-usage.txt" || true)
    add resources "$(grep -c 'Function' "$out/resource-usage.txt") kernels, ${locals} with stack/local memory (resource-usage.txt)"
    cuobjdump --dump-sass "$bench_bin" 2>/dev/null |
      awk '/Function :/{f=$3} /\/\*[0-9a-f]+\*\//{op=$2; if (op ~ /^@/) op=$3; sub(/\..*/, "", op); n[f" "op]++}
           END{for (k in n) print n[k], k}' | sort -k2,2 -k1,1nr > "$out/sass-histogram.txt"
  fi
  timeout "$(allow 200 60)" "$bench_bin" --reps 50 --csv "$out/bench.csv" > "$out/bench.log" 2>&1
  rc=$?
  add bench "$([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc: $(tail -1 "$out/bench.log")")"
  lsa_bin="$build/bench/bench_lsa"
  if [ -x "$lsa_bin" ]; then
    timeout "$(allow 180 40)" "$lsa_bin" --csv "$out/bench_lsa.csv" > "$out/bench_lsa.log" 2>&1
    rc=$?
    add bench_lsa "$([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc: $(tail -1 "$out/bench_lsa.log")")"
  fi
  decode_bin="$build/bench/bench_decode"
  if [ -x "$decode_bin" ]; then
    timeout "$(allow 150 40)" "$decode_bin" --csv "$out/bench_decode.csv" > "$out/bench_decode.log" 2>&1
    rc=$?
    add bench_decode "$([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc: $(tail -1 "$out/bench_decode.log")")"
  fi
else
  add bench "not built"
fi

# ---- 5. compute-sanitizer -----------------------------------------------------------------------------
if [ -x "$test_bin" ] && command -v compute-sanitizer > /dev/null; then
  sanitize() {  # tool, seconds, reserve for later stages, test filter
    local secs
    secs=$(allow "$2" "$3")
    # API errors are not reported: the error-path tests provoke them on purpose (invalid device, OOM).
    timeout "$secs" compute-sanitizer --tool "$1" --report-api-errors no --error-exitcode 3 "$test_bin" $4 \
      > "$out/$1.log" 2>&1
    local rc=$?
    local line
    line=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$out/$1.log" | tail -1)
    case $rc in
      0) add "$1" "ok: ${line:-clean} ($4)" ;;
      124) add "$1" "TIMEOUT after ${secs}s ($4) ${line}" ;;
      *) add "$1" "FAILED rc=$rc ($4): ${line}"; grep -m 12 -E "=========" "$out/$1.log" ;;
    esac
  }
  sanitize memcheck 240 60 ""
  sanitize racecheck 150 20 "[small]"
  sanitize synccheck 60 0 "[small]"
else
  add sanitizer "skipped (no test_gpu or no compute-sanitizer)"
fi

# ---- 6. summary ---------------------------------------------------------------------------------------
echo
[ -f "$out/bench.log" ] && sed -n '/^ceilings/p;/^summary/,$p' "$out/bench.log"
[ -f "$out/bench_decode.log" ] && tail -20 "$out/bench_decode.log"
[ -f "$out/bench_lsa.log" ] && sed -n '/^ceiling/p;/^notes/,$p' "$out/bench_lsa.log"
echo
echo "==== gpu_check summary ($(elapsed); logs in $out) ===="
printf '%s\n' "${summary[@]}"
