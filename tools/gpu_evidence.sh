#!/usr/bin/env bash
# tools/gpu_evidence.sh — the evidence of docs/results.md on the H100 machine, one `run` call per stage, each
# under 10 minutes; fm-dsv4 is built here (any build: --dump and --eval run the float32 host reference on the
# machine's 16 cores) and carried in .carry/. Results go to $OUT (at most 8 files).
#
#   backbone   fine-tunes INIT (default tools/runs/backbone/final) into out/backbone with a smaller index_topk
#              (INDEX_TOPK, default 16) on the GPU, then scores it on held-out items at 512..8192 tokens
#              (transformers). The committed checkpoint came from the pretrained one of commit 20f3a0f:
#              git archive 20f3a0f tools/runs/backbone/final | tar -x -C /tmp, then INIT=/tmp/tools/runs/backbone/final
#   indexer    held-out and training documents, the dumps of the committed backbone, and the Memory Indexer
#              trained on them (tools/evidence.sh tasks dump train)
#   eval       tools/evidence.sh eval of EVAL_LENGTHS (default 2048) with the committed backbone and indexer;
#              ITEMS (default 100) items per task and length, DEADLINE (default 540) seconds; HELDOUT=DIR
#              evaluates that task folder instead (e.g. the items another machine has not reached, carried)
#
#   tools/gpu_evidence.sh STAGE
# Settings are tools/evidence.sh's (PAGE, BUDGET, LABELS, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu-evidence}
mkdir -p "$out"
py=$(command -v python3)
export PYTHON=$py FM_DSV4=$PWD/.carry/fm-dsv4 JOBS=$(nproc)
work=/tmp/evidence
case ${1:?usage: tools/gpu_evidence.sh backbone|indexer|eval} in
  backbone)
    "$py" tools/make_tasks.py generate --out /tmp/tasks --lengths 512,1024,2048,4096,8192 --items 50 >/dev/null
    PYTHONUNBUFFERED=1 "$py" tools/train_backbone.py --out out/backbone --init "${INIT:-tools/runs/backbone/final}" \
      --index-topk "${INDEX_TOPK:-16}" --stages "${STAGES:-2048x16:1300s}" --lr 5e-4 --warmup 50 \
      --mix "${MIX:-mqar=2,kv_distract=2,niah_multikey=1,variable_tracking=3,niah_multivalue=3,niah_single=0.5}" \
      --max-minutes "${MINUTES:-9.2}" --eval-tasks /tmp/tasks --eval-items 50 --eval-minutes 2 --pack "$out" 2>&1 |
      grep -v "^Loading\|^Writing" | tee "$out/train.txt" | tail -40 ;;
  indexer)
    DEADLINE=${DEADLINE:-300} TRAIN_ARGS="--max-minutes ${TRAIN_MINUTES:-3} --epochs ${EPOCHS:-12} --query-lr 1e-4" \
      bash tools/evidence.sh "$work" tasks dump train 2>&1 | tee "$out/indexer.txt" | tail -30
    cp "$work/indexer.safetensors" "$work/indexer.json" "$out/"
    cat "$work"/dumps/manifest.*.json | grep -E '"(mean_positives_per_sample|positive_fraction)"' | head -4 ;;
  eval)
    mkdir -p "$work" && cp tools/runs/indexer/indexer.safetensors "$work/"
    stages="tasks eval table"
    if [ -n "${HELDOUT:-}" ]; then rm -rf "$work/heldout"; cp -r "$HELDOUT" "$work/heldout"; stages="eval table"; fi
    EVAL_LENGTHS=${EVAL_LENGTHS:-2048} EVAL_ITEMS=${ITEMS:-100} DEADLINE=${DEADLINE:-540} \
      bash tools/evidence.sh "$work" $stages 2>&1 | tee "$out/eval.txt" | tail -30
    gzip -c "$work/eval.jsonl" > "$out/eval.jsonl.gz"  # (no comma in names that come back)
    cp "$work/table.md" "$out/" ;;
  *) echo "unknown stage $1 (backbone indexer eval)"; exit 2 ;;
esac
