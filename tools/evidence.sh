#!/usr/bin/env bash
# tools/evidence.sh — the LSA accuracy evidence of docs/results.md, end to end, from the committed backbone:
#
#   tasks   held-out items (seed 999) and training documents for the indexer (seed 4242): tools/make_tasks.py
#   dump    fm-dsv4 --dump of the training documents (golden labels, hidden states, index keys), in parallel
#   train   tools/train_indexer.py on the dumps → OUT/indexer.safetensors (towers started from the checkpoint's
#           own Lightning Indexer query weights, --init-native; the backbone is not run)
#   eval    fm-dsv4 --eval of the held-out items with every KV mode, in parallel → OUT/eval.jsonl
#   table   tools/lsa_table.py → OUT/table.md, OUT/accuracy.svg, OUT/table.json
#
#   bash tools/evidence.sh OUT [STAGE...]        (default: every stage, in that order)
#
# Settings (environment): FM_DSV4 (the fm-dsv4 binary; default build/examples/fm-dsv4), CHECKPOINT (default
# tools/runs/backbone/final), JOBS (parallel processes; default: the cores), PYTHON (for train_indexer.py: torch
# and safetensors), EVAL_LENGTHS / EVAL_ITEMS, DUMP_LENGTHS / DUMP_ITEMS, BUDGET, PAGE, DEADLINE (seconds each
# parallel stage may take; unfinished shards keep what they wrote), LABELS (fm-dsv4 flags of the golden-label
# filter, for the dumps and the oracle; default "--nucleus-p 0.1 --votes 1"), TRAIN_ARGS (train_indexer.py
# flags; default "--epochs 12 --query-lr 1e-4").
set -euo pipefail
out=${1:?usage: bash tools/evidence.sh OUT [tasks dump train eval table]}
shift
stages=${*:-tasks dump train eval table}
root=$(cd "$(dirname "$0")/.." && pwd)
fm=${FM_DSV4:-$root/build/examples/fm-dsv4}
checkpoint=${CHECKPOINT:-$root/tools/runs/backbone/final}
jobs=${JOBS:-$(nproc)}
python=${PYTHON:-python3}
eval_lengths=${EVAL_LENGTHS:-1024,2048,4096}
eval_items=${EVAL_ITEMS:-100}
dump_lengths=${DUMP_LENGTHS:-1024,2048}
# More documents of the record-only tasks, whose single record the indexer must learn to match.
dump_items=${DUMP_ITEMS:-40,mqar=100,kv_distract=100}
budget=${BUDGET:-0.125}
page=${PAGE:-8}
deadline=${DEADLINE:-100000}
# The golden-label filter (dumps and oracle) chosen for the committed top-16 backbone: each layer's best chunk,
# one layer voting (docs/results.md, "Choosing the golden-label filter").
labels=${LABELS:---nucleus-p 0.1 --votes 1}
mkdir -p "$out"

# Runs the function "$1 k" for every shard k in parallel, each stopped at the deadline; fails if one fails
# otherwise (a shard stopped at the deadline keeps what it wrote).
sharded() {
  local pids=() k rc status=0
  for ((k = 0; k < jobs; k++)); do
    timeout "$deadline" bash -c '"$0" "$1"' "$1" "$k" > "$out/log.$k" 2>&1 &
    pids+=($!)
  done
  for k in "${!pids[@]}"; do
    rc=0
    wait "${pids[$k]}" || rc=$?
    if [ "$rc" = 124 ]; then echo "shard $k: stopped at the deadline"
    elif [ "$rc" != 0 ]; then echo "shard $k failed ($rc):"; tail -5 "$out/log.$k"; status=1; fi
  done
  return $status
}
dump_shard() { "$fm" "$checkpoint" --dump "$out/dumps" --tasks "$out/documents" --shard "$1/$jobs" $labels; }
eval_shard() {
  "$fm" "$checkpoint" --eval "$out/heldout" --indexer "$out/indexer.safetensors" --budget "$budget" --page "$page" \
    --out "$out/eval.$1.jsonl" --shard "$1/$jobs" $labels
}
export -f dump_shard eval_shard
export fm checkpoint out jobs budget page labels

for stage in $stages; do
  start=$(date +%s)
  case $stage in
    tasks)
      python3 "$root/tools/make_tasks.py" generate --out "$out/heldout" --seed 999 --lengths "$eval_lengths" --items "$eval_items"
      python3 "$root/tools/make_tasks.py" generate --out "$out/documents" --seed 4242 --lengths "$dump_lengths" --items "$dump_items" ;;
    dump)
      sharded dump_shard
      grep -h '^dumped' "$out"/log.* ;;
    train)
      $python "$root/tools/train_indexer.py" --dumps "$out/dumps" --out "$out/indexer.safetensors" --report "$out/indexer.json" \
        --page "$page" --budget "$budget" --init-native "$checkpoint" ${TRAIN_ARGS:---epochs 12 --query-lr 1e-4} ;;
    eval)
      rm -f "$out"/eval.*.jsonl
      sharded eval_shard || true
      cat "$out"/eval.*.jsonl > "$out/eval.jsonl"
      echo "eval: $(wc -l < "$out/eval.jsonl") item-mode lines" ;;
    table)
      python3 "$root/tools/lsa_table.py" "$out/eval.jsonl" --out "$out/table.md" --plot "$out/accuracy.svg" --json "$out/table.json" ;;
    *) echo "unknown stage $stage (tasks dump train eval table)"; exit 2 ;;
  esac
  echo "== $stage: $(( $(date +%s) - start )) s"
done
