#!/usr/bin/env python3
"""Synthetic long-context retrieval tasks (RULER-style) over a byte vocabulary, and their scorer.

    python3 tools/make_tasks.py generate --out out/tasks --lengths 512,1024,2048,4096 --items 100
    python3 tools/make_tasks.py score --tasks out/tasks --predictions preds.jsonl [--json scores.json]

`generate` writes <out>/<task>/<length>.jsonl (one item per line: id, task, length, prompt, answer, meta) and
<out>/manifest.json. Items depend only on (--seed, task, length, index); training data (train_backbone.py)
is drawn from differently labelled streams, so a held-out set never overlaps it. `score` reads predictions
{"id": ..., "generated": [token ids]} and prints the exact-match accuracy per task and length.
Standard library only. The format is specified in docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import FAMILIES, read_items, score, write_tasks  # noqa: E402

HELDOUT_SEED = 20261124


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def item_counts(text: str) -> dict[str, int]:
    """'N' or 'N,task=M,...': N items per task and length, M for the tasks named ('' is the default)."""
    counts = {}
    for part in (x for x in text.split(",") if x):
        task, _, n = part.rpartition("=")
        if task and task not in FAMILIES:
            raise argparse.ArgumentTypeError(f"unknown task '{task}' (tasks: {', '.join(FAMILIES)})")
        counts[task] = int(n)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write task files")
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--tasks", default=",".join(FAMILIES), help="comma-separated families")
    gen.add_argument("--lengths", type=int_list, default=[512, 1024, 2048, 4096, 8192, 16384],
                     help="prompt lengths in tokens")
    gen.add_argument("--items", type=item_counts, default={"": 100},
                     help="items per task and length: N, or N,task=M,... to give some tasks more (or fewer)")
    gen.add_argument("--seed", type=int, default=HELDOUT_SEED)
    gen.add_argument("--split", default="heldout", help="a name recorded in the manifest")

    sc = sub.add_parser("score", help="exact-match accuracy of predictions")
    sc.add_argument("--tasks", type=Path, required=True, help="folder with manifest.json")
    sc.add_argument("--predictions", type=Path, required=True, help='JSONL of {"id", "generated"}')
    sc.add_argument("--json", type=Path, help="also write the rows here")

    args = parser.parse_args()
    if args.command == "generate":
        tasks = [t for t in args.tasks.split(",") if t]
        items = {t: args.items.get(t, args.items.get("", 100)) for t in tasks}
        manifest = write_tasks(args.out, split=args.split, seed=args.seed, tasks=tasks, lengths=args.lengths,
                               items=items)
        print(f"wrote {len(manifest['files'])} files, {sum(f['items'] for f in manifest['files'])} items under {args.out}")
        return 0

    rows = score(args.tasks, read_items(args.predictions))
    print(f"{'task':<20} {'length':>7} {'items':>6} {'accuracy':>9}")
    for r in rows:
        print(f"{r['task']:<20} {r['length']:>7} {r['items']:>6} {r['accuracy']:>9.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
