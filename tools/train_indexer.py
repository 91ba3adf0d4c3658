#!/usr/bin/env python3
"""Train the LSA Memory Indexer from decoder dumps alone, without the backbone (lsa.md §3, §4).

    python3 tools/train_indexer.py --dumps out/dumps --out out/indexer.safetensors --report out/indexer.json
                                   [--epochs 10 | --steps N] [--max-minutes 8] [--rank 128 --heads 16]

Input: DIR/*.safetensors written by `fm-dsv4 --dump DIR`, one per document (schema flashmemory.dump.v2):
`positions` [S], `num_chunks` [S], `labels` [S, N] (uint8, the golden union) and, per target CSA layer L,
`hidden.l{L}` [S, D], `keys.l{L}` [N, d] and `labels.l{L}` [S, N] (that layer's own nucleus). Candidates of
sample s are chunks 0 .. num_chunks[s]-1.

Model: exactly fm::indexer::MemoryIndexer (memory_indexer.hpp) with hadamard = false and plain RoPE (no YaRN):
per target layer, a = RMSNorm(W_qa x)·g, q = W_qb a → [H, d] roped at position t on the trailing rope_dim
channels (adjacent pairs), w = (W_w x)/sqrt(d·H), logit = Σ_h w_h ReLU(⟨q_h, k⟩) + b; layers combined by max.

Training: every dump sample with a golden chunk; per sample and step up to 512 positives (random subset of
the chunks golden in the union or in some layer), 3 uniformly random non-golden negatives per positive, plus
as many hard negatives as positives (the highest-scoring non-golden candidates under the current model, by
the max over layers); the two negative sets are united. Focal loss (γ = 2) of each layer's own sigmoid against
its target, averaged over the selected entries and the layers. The target of tower L is `labels.l{L}` by
default (--targets layer): a layer's nucleus is what that layer's query finds, so the max over towers covers
the union; --targets union trains every tower on `labels`, as published. AdamW, weight decay 0.01, cosine to
0 over the planned steps, gradient clip 1.0; seeded random init, or --init-native CHECKPOINT: each tower
starts as its layer's own Lightning Indexer query path (four tensors read from the checkpoint; the backbone
is never run).
Documents are split into train / held-out by file (a stable hash of the name, spread over tasks and lengths).

Report (held-out, and train for comparison), over ALL candidates of every sample: pooled precision / recall /
F1 at 0.5; recall@K (pooled golden chunks within the top K); recall at the resident budget (keep the best
ceil(B·pages) pages of --page chunks, page score = chunks above 0.5, ties by the page's max score); the mean
fraction of candidates above 0.5. Output: --out safetensors with the tensor names of memory_indexer.hpp.
"""

from __future__ import annotations

import time

T_START = time.time()  # --max-minutes counts the imports too

import argparse
import hashlib
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

SCHEMA = "flashmemory.dump.v2"
SHARED_META = ("schema", "target_layers", "hidden_size", "index_head_dim", "rope_dim", "rope_theta")
MAX_POSITIVES, RANDOM_NEGATIVES, GAMMA, EPS = 512, 3, 2.0, 1e-6
RECALL_AT = (16, 32, 64, 128)
QUERY_PATH = ("wq_a", "q_norm_weight", "wq_b")  # a tower's query path (--query-lr); weights_proj and bias use --lr


class Doc:
    """One dump file, on `device`; labels and candidate counts stay on the CPU for sampling."""

    def __init__(self, path: Path, device: torch.device):
        with safe_open(str(path), "pt") as f:
            self.meta = f.metadata() or {}
            if self.meta.get("schema") != SCHEMA:
                raise ValueError(f"{path}: schema '{self.meta.get('schema')}', expected '{SCHEMA}'")
            self.layers = [int(x) for x in self.meta["target_layers"].split(",") if x]
            self.positions = f.get_tensor("positions").to(device)
            self.num_chunks = f.get_tensor("num_chunks").long()
            self.labels = f.get_tensor("labels").bool()
            self.layer_labels = torch.stack([f.get_tensor(f"labels.l{L}").bool() for L in self.layers])
            self.hidden = torch.stack([f.get_tensor(f"hidden.l{L}").float() for L in self.layers]).to(device)
            self.keys = torch.stack([f.get_tensor(f"keys.l{L}").float() for L in self.layers]).to(device)
        S, N = self.labels.shape
        if (self.hidden.shape[:2] != (len(self.layers), S) or self.keys.shape[1] != N or self.num_chunks.max() > N
                or self.layer_labels.shape[1:] != (S, N)):
            raise ValueError(f"{path}: labels {list(self.labels.shape)}, hidden {list(self.hidden.shape)}, "
                             f"keys {list(self.keys.shape)}, max num_chunks {int(self.num_chunks.max())} disagree")
        self.name = path.name
        self.candidates = torch.arange(N)[None, :] < self.num_chunks[:, None]  # [S, N]
        self.labels &= self.candidates
        self.layer_labels &= self.candidates
        self.positives = self.labels | self.layer_labels.any(0)  # golden for the union or for some layer


class Tower(torch.nn.Module):
    """One target layer's query tower; parameter names follow memory_indexer.hpp."""

    def __init__(self, hidden: int, rank: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.wq_a = torch.nn.Linear(hidden, rank, bias=False)
        self.q_norm_weight = torch.nn.Parameter(torch.ones(rank))
        self.wq_b = torch.nn.Linear(rank, heads * head_dim, bias=False)
        self.weights_proj = torch.nn.Linear(hidden, heads, bias=False)
        self.bias = torch.nn.Parameter(torch.zeros(1))  # the logit offset that calibrates the sigmoid

    def forward(self, x, cos, sin, keys):
        """Logits [b, N] of hidden states x [b, D] (rope cos/sin [b, rope_dim/2]) against keys [N, d]."""
        a = self.wq_a(x)
        a = a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + EPS) * self.q_norm_weight
        q = rope(self.wq_b(a).view(-1, self.heads, self.head_dim), cos[:, None], sin[:, None])
        w = self.weights_proj(x) / math.sqrt(self.head_dim * self.heads)
        dots = torch.einsum("bhd,nd->bhn", q, keys).relu()
        return torch.einsum("bh,bhn->bn", w, dots) + self.bias


def rope(q, cos, sin):
    """Rotates the trailing 2·cos.shape[-1] channels of q as adjacent pairs (core/rope.hpp)."""
    r = 2 * cos.shape[-1]
    nope, tail = q[..., : q.shape[-1] - r], q[..., q.shape[-1] - r :]
    a, b = tail[..., 0::2], tail[..., 1::2]
    return torch.cat([nope, torch.stack([a * cos - b * sin, b * cos + a * sin], -1).flatten(-2)], -1)


class MemoryIndexer(torch.nn.Module):
    """One tower per target layer, plain RoPE of the dump's rope_theta / rope_dim."""

    def __init__(self, meta: dict, rank: int, heads: int):
        super().__init__()
        self.layers = [int(x) for x in meta["target_layers"].split(",") if x]
        D, d, r = int(meta["hidden_size"]), int(meta["index_head_dim"]), int(meta["rope_dim"])
        self.towers = torch.nn.ModuleList(Tower(D, rank, heads, d) for _ in self.layers)
        # ω_i = θ^(−2i/r), computed in double and rounded to float as core/rope.hpp does.
        i = torch.arange(r // 2, dtype=torch.float64)
        self.register_buffer("inv_freq", (1.0 / float(meta["rope_theta"]) ** (2 * i / r)).float())

    def forward(self, doc: Doc, rows):
        """Per-layer logits [layers, b, N] of the samples `rows` of `doc`."""
        angle = doc.positions[rows].float()[:, None] * self.inv_freq  # float product, cos/sin in double
        cos, sin = angle.double().cos().float(), angle.double().sin().float()
        return torch.stack([t(doc.hidden[l, rows], cos, sin, doc.keys[l]) for l, t in enumerate(self.towers)])

    @torch.no_grad()
    def init_native(self, checkpoint: Path):
        """Starts each tower as its CSA layer's own Lightning Indexer query path (deepseek-v4.md §5.1, §6.4):
        W_qa, q_norm = the attention's wq_a, q_norm; W_qb, W_w = the indexer's wq_b, weights_proj. Same
        input, RoPE and scaling, so before training the logits are the native index scores of the current
        step. Reads only these four tensors of each target layer; the backbone is never run."""
        config = json.loads((checkpoint / "config.json").read_text())
        csa = [i for i, kind in enumerate(config["layer_types"]) if kind == "compressed_sparse_attention"]
        with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
            for L, tower in zip(self.layers, self.towers):
                if L >= len(csa):
                    raise SystemExit(f"{checkpoint}: target layer {L}, but the model has {len(csa)} CSA layers")
                prefix = f"model.layers.{csa[L]}.attn."
                for param, name in ((tower.wq_a.weight, "wq_a.weight"), (tower.q_norm_weight, "q_norm.weight"),
                                    (tower.wq_b.weight, "indexer.wq_b.weight"),
                                    (tower.weights_proj.weight, "indexer.weights_proj.weight")):
                    native = f.get_tensor(prefix + name)
                    if native.shape != param.shape:
                        raise SystemExit(f"{checkpoint}: {prefix + name} is {list(native.shape)}, the tower needs "
                                         f"{list(param.shape)} (set --rank / --heads to the model's)")
                    param.copy_(native.float())

    def state(self) -> dict:
        return {f"retrievers.l{L}.{name}": p.detach().float().cpu().contiguous()
                for L, t in zip(self.layers, self.towers) for name, p in t.named_parameters()}


def split(paths: list[Path], metas: list[dict], fraction: float) -> tuple[list[int], list[int]]:
    """Held-out files: round(fraction · n) (at least one when fraction > 0), taken in turn from the (task,
    length) groups; within a group by a hash of the file name, so the split does not depend on --seed."""
    unit = lambda i: int(hashlib.sha256(paths[i].name.encode()).hexdigest(), 16) / 16**64  # in [0, 1)
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(metas):
        groups.setdefault((m.get("task", ""), m.get("length", "")), []).append(i)
    turn = {}  # the k-th file of a group of n comes at (k + u) / n: groups give files in proportion to their size
    for members in groups.values():
        for k, i in enumerate(sorted(members, key=unit)):
            turn[i] = (k + unit(i)) / len(members)
    count = max(1, round(fraction * len(paths))) if fraction > 0 and len(paths) > 1 else 0
    held = set(sorted(turn, key=turn.get)[:count])
    return [i for i in range(len(paths)) if i not in held], sorted(held)


def select(doc: Doc, rows, combined: torch.Tensor, gen: torch.Generator):
    """(row, column) of the entries a step trains on, for samples `rows` (combined: [b, N], CPU)."""
    picked = []
    for j, s in enumerate(rows.tolist()):
        pos = doc.positives[s].nonzero().flatten()
        neg = (doc.candidates[s] & ~doc.positives[s]).nonzero().flatten()
        pos = pos[torch.randperm(len(pos), generator=gen)[:MAX_POSITIVES]]
        rand = neg[torch.randperm(len(neg), generator=gen)[: RANDOM_NEGATIVES * len(pos)]]
        hard = neg[combined[j, neg].topk(min(len(pos), len(neg))).indices]
        negs = torch.unique(torch.cat([rand, hard]))
        cols = torch.cat([pos, negs])
        picked.append((torch.full_like(cols, j), cols))
    return [torch.cat(x) for x in zip(*picked)]


def focal(logits, target):
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return ((1 - torch.exp(-ce)) ** GAMMA * ce).mean()


@torch.no_grad()
def evaluate(model, docs: list[Doc], page: int, budget: float, batch: int = 64) -> dict:
    tp = fp = fn = golden = 0
    hits = {k: 0 for k in RECALL_AT}
    chance = {k: 0.0 for k in RECALL_AT}
    kept = kept_chance = 0.0
    above_fraction, samples = 0.0, 0
    for doc in docs:
        for start in range(0, len(doc.num_chunks), batch):
            rows = torch.arange(start, min(start + batch, len(doc.num_chunks)))
            probs = model(doc, rows.to(doc.positions.device)).sigmoid().amax(0).cpu()
            for j, s in enumerate(rows.tolist()):
                n = int(doc.num_chunks[s])
                if n == 0:
                    continue
                p, y = probs[j, :n], doc.labels[s, :n]
                above = p > 0.5
                tp += int((above & y).sum()); fp += int((above & ~y).sum()); fn += int((~above & y).sum())
                above_fraction += float(above.float().mean()); samples += 1
                g = int(y.sum())
                if g == 0:
                    continue
                golden += g
                order = p.argsort(descending=True)
                for k in RECALL_AT:
                    hits[k] += int(y[order[:k]].sum()); chance[k] += g * min(k, n) / n
                pages = math.ceil(n / page)
                keep = math.ceil(budget * pages)
                pad = torch.full((pages * page - n,), -1.0)
                by_page = torch.cat([p, pad]).view(pages, page)
                # Chunks above 0.5 first; the page's max score (in [0, 1]) only breaks ties.
                rank = ((by_page > 0.5).sum(1).double() + 0.5 * by_page.amax(1).double()).argsort(descending=True)
                in_kept = torch.zeros(pages, dtype=torch.bool)
                in_kept[rank[:keep]] = True
                kept += int(y[in_kept.repeat_interleave(page)[:n]].sum()); kept_chance += g * min(keep, pages) / pages
    ratio = lambda a, b: a / b if b else float("nan")
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "documents": len(docs), "samples": samples, "golden": golden,
        "precision": precision, "recall": recall, "f1": ratio(2 * precision * recall, precision + recall),
        **{f"recall@{k}": ratio(hits[k], golden) for k in RECALL_AT},
        **{f"chance_recall@{k}": ratio(chance[k], golden) for k in RECALL_AT},
        "recall_at_budget": ratio(kept, golden), "chance_recall_at_budget": ratio(kept_chance, golden),
        "fraction_above_0.5": ratio(above_fraction, samples),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dumps", type=Path, required=True, help="folder of *.safetensors dumps")
    ap.add_argument("--out", type=Path, required=True, help="trained weights (safetensors)")
    ap.add_argument("--report", type=Path, help="metrics and settings (JSON)")
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--epochs", type=float, default=10, help="passes over the training samples")
    ap.add_argument("--steps", type=int, default=0, help="optimiser steps (overrides --epochs when > 0)")
    ap.add_argument("--batch", type=int, default=16, help="samples per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--query-lr", type=float, help="learning rate of the query path (wq_a, q_norm_weight, wq_b; "
                    "default --lr); 0 keeps it as initialised")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=0, help="stop training after this wall time (0: none)")
    ap.add_argument("--holdout-fraction", type=float, default=0.2)
    ap.add_argument("--page", type=int, default=64, help="chunks per page for the budget recall")
    ap.add_argument("--budget", type=float, default=0.125, help="resident fraction of pages for the budget recall")
    ap.add_argument("--targets", choices=("layer", "union"), default="layer",
                    help="each tower learns its own CSA layer's labels (labels.l{L}), or all learn the union (labels)")
    ap.add_argument("--init-native", type=Path, metavar="CHECKPOINT",
                    help="start from the backbone's own Lightning Indexer query weights (default: random init)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    paths = sorted(args.dumps.glob("*.safetensors"))
    if not paths:
        raise SystemExit(f"{args.dumps}: no *.safetensors dumps")
    docs = [Doc(p, device) for p in paths]
    for doc in docs[1:]:
        for key in SHARED_META:
            if doc.meta.get(key) != docs[0].meta.get(key):
                raise SystemExit(f"{doc.name}: {key} '{doc.meta.get(key)}' differs from '{docs[0].meta.get(key)}' "
                                 f"in {docs[0].name}")
    train_ids, held_ids = split(paths, [d.meta for d in docs], args.holdout_fraction)
    train, held = [docs[i] for i in train_ids], [docs[i] for i in held_ids]
    samples = [(i, s) for i, d in enumerate(train) for s in d.positives.any(1).nonzero().flatten().tolist()]
    if not samples:
        raise SystemExit("no training sample has a golden chunk")
    steps = args.steps or math.ceil(args.epochs * len(samples) / args.batch)
    print(f"{len(train)} training documents ({len(samples)} samples with a golden chunk), {len(held)} held out; "
          f"{steps} steps of {args.batch} on {device}")

    model = MemoryIndexer(docs[0].meta, args.rank, args.heads)
    if args.init_native:
        model.init_native(args.init_native)
    model.to(device)
    in_query = {n: n.split(".")[2] in QUERY_PATH for n, _ in model.named_parameters()}  # towers.{l}.{name}...
    query_lr = args.lr if args.query_lr is None else args.query_lr
    opt = torch.optim.AdamW([{"params": [p for n, p in model.named_parameters() if in_query[n]], "lr": query_lr},
                             {"params": [p for n, p in model.named_parameters() if not in_query[n]], "lr": args.lr}],
                            weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / max(1, steps))))
    gen = torch.Generator().manual_seed(args.seed)
    order, cursor, done, loss_sum, logged = torch.tensor([]), 0, 0, 0.0, 0
    for step in range(steps):
        if args.max_minutes and time.time() - T_START > 60 * args.max_minutes:
            print(f"stopped by --max-minutes after {step} steps")
            break
        if cursor + args.batch > len(order):
            order, cursor = torch.randperm(len(samples), generator=gen), 0
        batch = [samples[k] for k in order[cursor : cursor + args.batch].tolist()]
        cursor += args.batch
        losses, entries = [], 0
        for i in sorted({i for i, _ in batch}):
            rows = torch.tensor([s for j, s in batch if j == i])
            logits = model(train[i], rows.to(device))  # [layers, b, N]
            r, c = select(train[i], rows, logits.detach().amax(0).float().cpu(), gen)
            sel = logits[:, r.to(device), c.to(device)]
            target = (train[i].layer_labels[:, rows[r], c].float() if args.targets == "layer"
                      else train[i].labels[rows[r], c].float().expand(len(train[i].layers), -1))
            losses.append(focal(sel, target.to(device)) * len(c))
            entries += len(c)
        loss = sum(losses) / entries
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        done, loss_sum, logged = step + 1, loss_sum + loss.item(), logged + 1
        if done % max(1, steps // 20) == 0 or done == steps:
            print(f"step {done:>6}/{steps}  focal {loss_sum / logged:.4f}  lr {sched.get_last_lr()[-1]:.2e}"
                  f"  {time.time() - T_START:.0f}s", flush=True)
            loss_sum, logged = 0.0, 0

    model.eval()
    metrics = {"held_out": evaluate(model, held, args.page, args.budget) if held else None,
               "train": evaluate(model, train, args.page, args.budget)}
    tasks = sorted({d.meta.get("task", "") for d in held})
    metrics["held_out_by_task"] = {t: evaluate(model, [d for d in held if d.meta.get("task", "") == t], args.page,
                                               args.budget) for t in tasks}
    print(f"\n{'metric':<26} {'held-out':>9} {'train':>9}")
    for key in metrics["train"]:
        val = lambda part: "-" if metrics[part] is None else f"{metrics[part][key]:.4g}"
        print(f"{key:<26} {val('held_out'):>9} {val('train'):>9}")
    if tasks:
        print(f"\nheld-out by task: {'recall@16':>10} {'recall':>8} {'precision':>9} {'at budget':>9}")
        for t, m in metrics["held_out_by_task"].items():
            print(f"  {t:<16} {m['recall@16']:>10.3f} {m['recall']:>8.3f} {m['precision']:>9.3f} {m['recall_at_budget']:>9.3f}")

    settings = {"rank": args.rank, "heads": args.heads, "head_dim": int(docs[0].meta["index_head_dim"]),
                "rope_dim": int(docs[0].meta["rope_dim"]), "rope_theta": docs[0].meta["rope_theta"],
                "hidden_size": int(docs[0].meta["hidden_size"]), "target_layers": docs[0].meta["target_layers"],
                "hadamard": False, "combine": "max", "targets": args.targets,
                "init": "native" if args.init_native else "random", "steps": done, "planned_steps": steps, "batch": args.batch,
                "lr": args.lr, "query_lr": query_lr, "weight_decay": 0.01, "seed": args.seed, "focal_gamma": GAMMA,
                "max_positives": MAX_POSITIVES, "random_negatives_per_positive": RANDOM_NEGATIVES,
                "hard_negatives_per_positive": 1, "train_documents": [d.name for d in train],
                "held_out_documents": [d.name for d in held], "page": args.page, "budget": args.budget,
                "train_seconds": round(time.time() - T_START, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in settings.items()}
    save_file(model.state(), str(args.out), metadata={"schema": "flashmemory.memory_indexer.v1", **meta})
    if args.report:
        args.report.write_text(json.dumps({"settings": settings, **metrics}, indent=1) + "\n")
    print(f"\nwrote {args.out}" + (f" and {args.report}" if args.report else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
