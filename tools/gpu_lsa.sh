#!/usr/bin/env bash
# tools/gpu_lsa.sh — LSA on the CUDA decoder, in one call on the GPU machine, from binaries built elsewhere
# for sm_90a and carried in .carry/ (test_deepseek_v4_gpu, fm-dsv4):
#   1. the GPU LSA tests ([lsa] of test_deepseek_v4_gpu) and compute-sanitizer memcheck / racecheck on them;
#   2. fm-dsv4 generation, full attention vs LSA, on the embedded backbone at 4096 tokens (tokens/s, footprint);
#   3. fm-dsv4 --eval --device cuda on the held-out items (tools/make_tasks.py, seed 999) with the committed
#      Memory Indexer, in EVAL_SHARDS (default 1) processes for at most EVAL_SECONDS (default 300); the table
#      from tools/lsa_table.py. (Four processes sharing the H100 evaluated no faster than one.)
# Results go to $OUT (or ./gpu-lsa-logs). Usage: tools/gpu_lsa.sh [items per task and length (default 100)]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-lsa-logs}
mkdir -p "$out"
items=${1:-100}
bin=.carry
ck=tools/runs/backbone/final
indexer=tools/runs/indexer/indexer.safetensors
py=$(command -v python3 || echo /opt/torch/.venv/bin/python)

echo "== 1. tests"
timeout 300 "$bin/test_deepseek_v4_gpu" "[lsa]" 2>&1 | tail -4 | tee "$out/tests.txt"
for tool in memcheck racecheck; do
  timeout 240 compute-sanitizer --tool $tool "$bin/test_deepseek_v4_gpu" "[lsa]" 2>&1 | grep -E "SUMMARY|passed|failed" | tee -a "$out/tests.txt"
done

echo "== 2. generation at 4096 tokens, full attention vs LSA"
for args in "" "--lsa memory --indexer $indexer --policy densest --budget 0.125 --page 8" \
            "--lsa recency --budget 0.125 --page 8" "--lsa minmax --budget 0.125 --page 8"; do
  echo "-- fm-dsv4 --device cuda --prompt-len 4032 --max-new-tokens 64 $args"
  # shellcheck disable=SC2086
  timeout 120 "$bin/fm-dsv4" $ck --device cuda --prompt-len 4032 --max-new-tokens 64 $args 2>&1 |
    grep -E "^(prefill:|decode:|fm-dsv4)|^    total|^  (resident|Level 1|recall)"
done 2>&1 | tee "$out/generate.txt"

echo "== 3. eval of the held-out items"
"$py" tools/make_tasks.py generate --out /tmp/heldout --seed 999 --lengths 2048,4096 --items "$items" >/dev/null
shards=${EVAL_SHARDS:-1}
for k in $(seq 0 $((shards - 1))); do
  timeout "${EVAL_SECONDS:-300}" "$bin/fm-dsv4" $ck --eval /tmp/heldout --device cuda --indexer "$indexer" --budget 0.125 \
    --page 8 --nucleus-p 0.1 --votes 1 --shard "$k/$shards" --out "$out/eval-cuda.$k.jsonl" > "$out/eval.$k.txt" 2>&1 &
done
wait
for k in $(seq 0 $((shards - 1))); do tr '\r' '\n' < "$out/eval.$k.txt" | tail -1; done | tee "$out/eval.txt"
cat "$out"/eval-cuda.*.jsonl > "$out/eval-cuda.jsonl" && rm -f "$out"/eval-cuda.*.jsonl "$out"/eval.*.txt
"$py" tools/lsa_table.py "$out/eval-cuda.jsonl" --out "$out/table.md" --json "$out/table.json" >/dev/null 2>&1
cat "$out/table.md" 2>/dev/null
gzip -f "$out/eval-cuda.jsonl"
