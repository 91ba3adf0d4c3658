#!/usr/bin/env bash
# Builds the libFuzzer project with clang++ and fuzzes for a fixed time from freshly generated seeds.
# Usage: run.sh <clang++> <cmake> <generator> <project-dir> <build-dir> <seconds> [extra cmake -D args...]
# Exit: 0 clean, 77 skipped (no clang++ or no fuzzer runtime), anything else a failure or a finding.
set -euo pipefail
cxx=$1 cmake=$2 generator=$3 src=$4 build=$5 seconds=$6
shift 6

if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "fuzz.safetensors: SKIPPED: no clang++ found (libFuzzer needs clang; install clang and re-run cmake)"
  exit 77
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$probe/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/probe.cpp" -o "$probe/probe" 2>"$probe/log"; then
  cat "$probe/log"
  echo "fuzz.safetensors: SKIPPED: $cxx cannot link -fsanitize=fuzzer,address,undefined (install libclang-rt-dev)"
  exit 77
fi

"$cmake" -S "$src" -B "$build" -G "$generator" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
"$cmake" --build "$build"

# A fresh corpus each run (new inputs land in corpus/), seeded with valid files.
rm -rf "$build/corpus" "$build/seeds"
mkdir -p "$build/corpus" "$build/seeds" "$build/findings"
"$build/make_seeds" "$build/seeds"

# libFuzzer's own default exit code for a finding is 77, which CTest would read as "skipped".
if ! "$build/fuzz_safetensors" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -error_exitcode=1 \
     -timeout_exitcode=1 -dict="$src/safetensors.dict" -artifact_prefix="$build/findings/" -print_final_stats=1 \
     "$build/corpus" "$build/seeds"; then
  echo "fuzz.safetensors: FAILED: the fuzzer found an input that breaks the parser; it is in $build/findings/"
  exit 1
fi
echo "fuzz.safetensors: clean after $seconds s"
