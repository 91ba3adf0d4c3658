#!/usr/bin/env python3
"""Does a Memory Indexer keep the record a question asks for? Held-out dumps, window after the prompt.

    python3 tools/record_probe.py --dumps DIR --documents TASKS (--indexer FILE | --native CHECKPOINT)
                                  [--page 8 --budget 0.125 --tail 2]

The dumps' golden labels mix the asked record with what the model reads anyway (sinks, recent chunks). This
probe looks at the record itself: `meta.evidence` of the task item gives its first token e, the record is the
tokens e … e + 8 (`|key=val;`) and its value chunk is (e + 4) / 4. For each held-out document (the split of
train_indexer.py) of a task with evidence, at the first sample (the prompt's last token: the window the
answer is decoded in), it prints per task
  - the median rank of the value chunk under each tower's own logits (0 = first of all candidates);
  - how often the record's pages are kept by the densest policy (the best pages by chunks above 0.5, ties by
    the page's best score, within the budget minus the recency tail of --tail pages) and by the threshold
    policy (every page with a chunk above 0.5, plus the tail), and the threshold policy's resident fraction.
--native scores with the checkpoint's own Lightning Indexer query path (train_indexer.py --init-native).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_indexer import Doc, MemoryIndexer, split  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dumps", type=Path, required=True)
    ap.add_argument("--documents", type=Path, required=True, help="the task folder the dumps were made from")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--indexer", type=Path, help="Memory Indexer weights (train_indexer.py --out)")
    which.add_argument("--native", type=Path, metavar="CHECKPOINT", help="the model's own Lightning Indexer")
    ap.add_argument("--page", type=int, default=8)
    ap.add_argument("--budget", type=float, default=0.125)
    ap.add_argument("--tail", type=int, default=2, help="recency tail in pages")
    ap.add_argument("--holdout-fraction", type=float, default=0.2)
    args = ap.parse_args()

    items = {}
    for path in args.documents.glob("*/*.jsonl"):
        for line in path.read_text().splitlines():
            item = json.loads(line)
            items[item["id"]] = item
    paths = sorted(args.dumps.glob("*.safetensors"))
    metas = []
    for p in paths:
        with safe_open(str(p), "pt") as f:
            metas.append(f.metadata())
    _, held = split(paths, metas, args.holdout_fraction)

    model, rows = None, {}
    with torch.no_grad():
        for i in held:
            item = items.get(metas[i]["id"])
            if not item or not item["meta"].get("evidence"):
                continue
            doc = Doc(paths[i], torch.device("cpu"))
            if model is None:
                if args.indexer:
                    weights = load_file(str(args.indexer))
                    heads = weights[f"retrievers.l{doc.layers[0]}.weights_proj.weight"].shape[0]
                    rank = weights[f"retrievers.l{doc.layers[0]}.wq_a.weight"].shape[0]
                    model = MemoryIndexer(doc.meta, rank, heads)
                    for L, tower in zip(model.layers, model.towers):
                        for name, param in tower.named_parameters():
                            param.copy_(weights.get(f"retrievers.l{L}.{name}", torch.zeros_like(param)))
                else:
                    config = json.loads((args.native / "config.json").read_text())
                    model = MemoryIndexer(doc.meta, config["q_lora_rank"], config["index_n_heads"])
                    model.init_native(args.native)
                model.eval()
            n = int(doc.num_chunks[0])
            logits = model(doc, torch.tensor([0]))[:, 0, :n]  # [layers, n]
            probs = logits.sigmoid().amax(0)
            evidence = item["meta"]["evidence"]
            value = [(e + 4) // 4 for e in evidence]
            pages = math.ceil(n / args.page)
            by_page = torch.cat([probs, torch.full((pages * args.page - n,), -1.0)]).view(pages, args.page)
            tail = set(range(pages - args.tail, pages))
            order = ((by_page > 0.5).sum(1).double() + 0.5 * by_page.amax(1).double()).argsort(descending=True)
            ranked = [p for p in order.tolist() if p not in tail]
            densest = set(ranked[: max(1, math.ceil(args.budget * pages)) - args.tail]) | tail
            threshold = set((by_page > 0.5).any(1).nonzero().flatten().tolist()) | tail
            need = {(e + k) // 4 // args.page for e in evidence for k in (0, 8)}
            row = rows.setdefault(doc.meta["task"], {"ranks": [[] for _ in model.layers], "densest": 0,
                                                      "threshold": 0, "resident": 0.0, "n": 0})
            for l in range(len(model.layers)):
                row["ranks"][l].append(max(int((logits[l] > logits[l, v]).sum()) for v in value))
            row["densest"] += need <= densest
            row["threshold"] += need <= threshold
            row["resident"] += len(threshold) / pages
            row["n"] += 1

    layers = " ".join(f"{'rank l' + str(L):>8}" for L in model.layers) if model else ""
    print(f"{'task':<18} {'windows':>7} {layers} {'densest':>8} {'threshold':>9} {'(resident)':>10}")
    for task, r in sorted(rows.items()):
        ranks = " ".join(f"{statistics.median(x):>8.0f}" for x in r["ranks"])
        print(f"{task:<18} {r['n']:>7} {ranks} {r['densest'] / r['n']:>8.2f} {r['threshold'] / r['n']:>9.2f} "
              f"{100 * r['resident'] / r['n']:>9.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
