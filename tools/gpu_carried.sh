#!/usr/bin/env bash
# tools/gpu_carried.sh — the GPU tests and benchmarks from binaries built elsewhere for sm_90a and carried in
# .carry/ (test_gpu, test_layout_cuda, test_lsa_gpu, test_deepseek_v4_gpu, bench_lsa_kernels, bench_lsa,
# bench_decode): the same stages as tools/gpu_check.sh without building on the GPU machine. Logs and CSVs are
# packed into $OUT/gpu-carried.tar.gz. Usage: tools/gpu_carried.sh [tests|bench|sanitize|decode]...  (default: the
# first three; decode = the CUDA decoder's tests, memcheck of its batch cases, racecheck of its kernels, fm-dsv4's
# CUDA ids against the CPU's and bench_decode; profile =
# ncu's time of every kernel of one decode step at 4K, batch 1 and 8: tools/ncu_rank.py ranks them)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-carried-logs}
logs=$(mktemp -d)
stages=${*:-tests bench sanitize}
summary=()
add() { summary+=("$(printf '%-22s %s' "$1" "$2")"); }
for stage in $stages; do
  case $stage in
    tests)
      for t in test_gpu test_layout_cuda test_lsa_gpu test_deepseek_v4_gpu; do
        timeout 150 ".carry/$t" > "$logs/$t.log" 2>&1
        add "$t" "rc=$? $(grep -E 'All tests passed|test cases:' "$logs/$t.log" | tail -1)"
      done ;;
    bench)
      timeout 150 .carry/bench_lsa_kernels --reps 50 --csv "$logs/bench.csv" > "$logs/bench.log" 2>&1; add bench_lsa_kernels "rc=$?"
      timeout 170 .carry/bench_lsa --csv "$logs/bench_lsa.csv" > "$logs/bench_lsa.log" 2>&1; add bench_lsa "rc=$?"
      timeout 240 .carry/bench_decode --csv "$logs/bench_decode.csv" > "$logs/bench_decode.log" 2>&1; add bench_decode "rc=$?" ;;
    decode)
      timeout 200 .carry/test_deepseek_v4_gpu > "$logs/deepseek_v4.log" 2>&1
      add test_deepseek_v4_gpu "rc=$? $(grep -E 'All tests passed|test cases:' "$logs/deepseek_v4.log" | tail -1)"
      timeout 150 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 3 .carry/test_deepseek_v4_gpu "[batch]" \
        > "$logs/memcheck-batch.log" 2>&1
      add "memcheck [batch]" "rc=$? $(grep -E 'ERROR SUMMARY' "$logs/memcheck-batch.log" | tail -1)"
      timeout 200 compute-sanitizer --tool racecheck --error-exitcode 3 .carry/test_deepseek_v4_gpu "[kernels]" \
        > "$logs/racecheck-kernels.log" 2>&1
      add "racecheck [kernels]" "rc=$? $(grep -E 'RACECHECK SUMMARY' "$logs/racecheck-kernels.log" | tail -1)"
      cmake -DFM_DSV4=.carry/fm-dsv4 "-DARGS=--max-new-tokens 16" "-DCUDA_ARGS=--cuda-storage f32" \
        -P examples/deepseek_v4/same_ids.cmake > "$logs/fm-dsv4-same-ids.log" 2>&1
      add "fm-dsv4 cuda = cpu ids" "rc=$?"
      timeout 300 .carry/bench_decode --csv "$logs/bench_decode.csv" > "$logs/bench_decode.log" 2>&1; add bench_decode "rc=$?" ;;
    profile)
      for b in 1 8; do
        # Warm caches and free clocks (as in a real step), not ncu's default flush and lock.
        timeout 200 ncu --profile-from-start off --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
          .carry/bench_decode --contexts 4096 \
          --batches $b --profile > "$logs/ncu-step-b$b.csv" 2> "$logs/ncu-step-b$b.err"
        add "ncu step batch $b" "rc=$? $(grep -c gpu__time_duration "$logs/ncu-step-b$b.csv") kernels"
      done ;;
    sanitize)
      # API errors are not reported: the error-path tests provoke them on purpose (invalid device, OOM).
      run() {  # tool, seconds, binary, filter
        timeout "$2" compute-sanitizer --tool "$1" --report-api-errors no --error-exitcode 3 ".carry/$3" "$4" > "$logs/$1-$3.log" 2>&1
        add "$1 $3 $4" "rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$logs/$1-$3.log" | tail -1)"
      }
      run memcheck 150 test_gpu "[small]"
      run racecheck 100 test_gpu "[small]"
      run memcheck 120 test_deepseek_v4_gpu "[lsa]"
      run racecheck 150 test_deepseek_v4_gpu "CUDA decoder + DecoderLookahead with random sets*" ;;
  esac
done
printf '%s\n' "${summary[@]}" | tee "$logs/summary.txt"
mkdir -p "$out" && tar -czf "$out/gpu-carried.tar.gz" -C "$logs" .
