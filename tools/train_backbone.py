#!/usr/bin/env python3
"""Train the small DeepSeek-V4 evaluation backbone on synthetic retrieval tasks (docs/training.md).

The model is transformers' DeepseekV4ForCausalLM itself (byte vocabulary, sliding + CSA + HCA layers, hash and
learned MoE routing, mHC), so the exported checkpoint (config.json + model.safetensors, bf16) loads both in
transformers and in the C++ decoder. What this script adds around it:

  * dense supervision: sequences full of records and questions (tools/tasks), language-model loss on every
    token, answer tokens weighted more;
  * a curriculum of stages LENxBATCH:STEPS, from short sequences to long ones, the later ones with sparse CSA
    selection (index_topk) switched on;
  * a lightning-indexer loss: the indexer gets no gradient from the language-model loss, so it is trained
    toward the attention mass its layer puts on each compressed entry (KL, target detached, indexer inputs
    detached: the indexer learns from the model, the model never from the indexer);
  * auxiliary-loss-free expert balancing (the router's selection bias follows the expert load);
  * a cache-free attention function with the same math as transformers' eager one, but the sliding window
    computed block by block (checked against eager at every start);
  * resumable state (fp32 weights, bf16 Adam moments), a wall-clock budget, CSV logs, a held-out evaluation.

    python3 tools/train_backbone.py --out out/backbone --max-minutes 9 [--resume] [--eval-tasks out/tasks]
    python3 tools/train_backbone.py --out out/backbone --eval-only --eval-tasks out/tasks
    python3 tools/train_backbone.py --out out/finetuned --init out/backbone/final --index-topk 16 --stages 2048x16:1300s
"""

from __future__ import annotations

import time

T_START = time.time()  # the wall-clock budget counts the imports too

import argparse
import copy
import csv
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AttentionInterface, DeepseekV4Config, DeepseekV4ForCausalLM, DynamicCache  # noqa: E402
from transformers.masking_utils import AttentionMaskInterface  # noqa: E402
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as dsv4  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import BOS, EOS, FAMILIES, PAD, VOCAB_SIZE, Rng, derive_seed, generate, read_items, read_manifest  # noqa: E402

SLIDING, CSA, HCA = "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"
BLOCKED = "flashmemory_blocked_window"
ALL_ENTRIES = 1 << 30  # index_topk that selects every causal entry (dense CSA)
SHARD_BYTES = 15 * 2**20

PRESETS = {
    # 6.42 M parameters, 12.5 MiB exported (bf16).
    "backbone": dict(hidden_size=384, num_attention_heads=8, head_dim=128, q_lora_rank=128, o_groups=2,
                     o_lora_rank=96, n_routed_experts=4, moe_intermediate_size=64, index_n_heads=16,
                     index_head_dim=64, sliding_window=64, layer_types=[SLIDING, CSA, HCA, CSA, HCA, CSA]),
    # For CPU smoke tests only.
    "tiny": dict(hidden_size=64, num_attention_heads=2, head_dim=32, q_lora_rank=32, o_groups=2, o_lora_rank=16,
                 n_routed_experts=4, moe_intermediate_size=32, index_n_heads=16, index_head_dim=16,
                 sliding_window=16, layer_types=[SLIDING, CSA, HCA, CSA]),
}
DEFAULT_STAGES = "128x256:400,256x128:600,512x64:800,1024x32:1000,2048x16:1400s,4096x8:1000s"
DEFAULT_MIX = "mqar=4,kv_distract=2,niah_multikey=1.5,variable_tracking=1.5,niah_multivalue=1,niah_single=0.5"


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------
def make_config(preset: str, index_topk: int) -> DeepseekV4Config:
    p = dict(PRESETS[preset])
    layer_types = p.pop("layer_types")
    return DeepseekV4Config(
        vocab_size=VOCAB_SIZE, num_hidden_layers=len(layer_types), layer_types=layer_types,
        mlp_layer_types=["hash_moe"] + ["moe"] * (len(layer_types) - 1), num_key_value_heads=1,
        partial_rotary_factor=0.25, n_shared_experts=1, num_experts_per_tok=2, scoring_func="sqrtsoftplus",
        norm_topk_prob=True, routed_scaling_factor=1.5, compress_rates={CSA: 4, HCA: 32}, rope_theta=10000.0,
        compress_rope_theta=160000.0, hc_mult=2, hc_sinkhorn_iters=20, hc_eps=1e-6, rms_norm_eps=1e-6,
        swiglu_limit=10.0, index_topk=index_topk, num_nextn_predict_layers=0, max_position_embeddings=131072,
        bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False,
        attn_implementation="eager", **p)


def build_model(config: DeepseekV4Config, seed: int) -> DeepseekV4ForCausalLM:
    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(config)
    # Hash routing: every token gets num_experts_per_tok distinct experts (transformers initialises zeros).
    g = torch.Generator().manual_seed(seed)
    for layer in model.model.layers:
        gate = layer.mlp.gate
        if isinstance(gate, dsv4.DeepseekV4HashRouter):
            table = [torch.randperm(gate.num_experts, generator=g)[: gate.top_k] for _ in range(config.vocab_size)]
            gate.tid2eid.copy_(torch.stack(table))
    return model


def set_index_topk(model: DeepseekV4ForCausalLM, k: int) -> None:
    for module in model.modules():
        if isinstance(module, dsv4.DeepseekV4Indexer):
            module.index_topk = k


def use_attention(model: DeepseekV4ForCausalLM, name: str) -> None:
    model.config._attn_implementation = name


# ---------------------------------------------------------------------------------------------------------
# Cache-free attention with a blockwise sliding window (same math as transformers' eager attention)
# ---------------------------------------------------------------------------------------------------------
def _window_mask(batch_size: int, q_length: int, dtype: torch.dtype = torch.float32, device=None, **_) -> torch.Tensor:
    """No window mask: blocked_attention applies the window itself. The attention module appends the
    compressors' per-entry bias (causality, top-k selection) to this empty mask, so that is all it carries."""
    return torch.zeros(batch_size, 1, q_length, 0, dtype=dtype, device=device)


def blocked_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **_):
    """Eager DeepSeek-V4 attention for a forward without cache: query t sees keys t-W+1..t of the window
    part, the compressed entries that attention_mask leaves finite, and the per-head sink. The window part is
    computed in blocks of W queries against 2W keys instead of all S keys. Returns the output [B, S, H, d]
    and the probabilities on the compressed entries [B, H, S, T] (None when there are none)."""
    batch, heads, seq, dim = query.shape
    window = module.sliding_window
    n_entries = key.shape[2] - seq
    blocks = -(-seq // window)
    padded = blocks * window

    def local(x):  # [B, 1, S + T, d] -> [B, blocks, 2W, d]: block j holds positions (j-1)W .. (j+1)W-1
        return F.pad(x[:, 0, :seq], (0, 0, window, padded - seq)).unfold(1, 2 * window, window).transpose(-1, -2)

    q = F.pad(query, (0, 0, 0, padded - seq)).view(batch, heads, blocks, window, dim).transpose(1, 2)
    q = q.reshape(batch, blocks, heads * window, dim)
    logits = torch.matmul(q, local(key).transpose(-1, -2)) * scaling  # [B, blocks, H*W, 2W]
    logits = logits.view(batch, blocks, heads, window, 2 * window).float()
    qi = torch.arange(window, device=query.device).view(window, 1)
    ki = torch.arange(2 * window, device=query.device).view(1, 2 * window)
    visible = ((ki > qi) & (ki <= qi + window)).expand(blocks, window, 2 * window).clone()
    visible[0, :, :window] = False  # positions before the sequence start
    parts = [logits.masked_fill(~visible.view(1, blocks, 1, window, 2 * window), float("-inf"))]
    if n_entries:
        entries = key[:, 0, seq:]
        comp = torch.matmul(query.reshape(batch, heads * seq, dim), entries.transpose(-1, -2)) * scaling
        comp = comp.view(batch, heads, seq, n_entries).float() + attention_mask[..., -n_entries:].float()
        comp = F.pad(comp, (0, 0, 0, padded - seq)).view(batch, heads, blocks, window, n_entries)
        parts.append(comp.transpose(1, 2))
    parts.append(module.sinks.float().view(1, 1, heads, 1, 1).expand(batch, blocks, heads, window, 1))
    combined = torch.cat(parts, dim=-1)
    combined = combined - combined.max(dim=-1, keepdim=True).values
    probs = F.softmax(combined, dim=-1, dtype=combined.dtype).to(value.dtype)

    p_local = probs[..., : 2 * window].reshape(batch, blocks, heads * window, 2 * window)
    out = torch.matmul(p_local, local(value)).view(batch, blocks, heads, window, dim).transpose(1, 2)
    out = out.reshape(batch, heads, padded, dim)
    weights = None
    if n_entries:
        p_comp = probs[..., 2 * window : 2 * window + n_entries].transpose(1, 2).reshape(batch, heads, padded, -1)
        out = out + torch.matmul(p_comp.reshape(batch, heads * padded, n_entries), value[:, 0, seq:]).view(
            batch, heads, padded, dim)
        weights = p_comp[:, :, :seq]
    return out[:, :, :seq].transpose(1, 2).contiguous(), weights


AttentionInterface.register(BLOCKED, blocked_attention)
AttentionMaskInterface.register(BLOCKED, _window_mask)


def check_blocked_attention(model: DeepseekV4ForCausalLM, device: torch.device) -> float:
    """Relative difference between the blocked and the eager forward (fp32, dense and sparse CSA)."""
    window = model.config.sliding_window
    ids = torch.randint(0, 256, (2, 2 * window + 37), generator=torch.Generator().manual_seed(0)).to(device)
    worst = 0.0
    probe = copy.deepcopy(model).float().eval()  # called before any hook is registered
    # True fp32 for the comparison: TF32 products (on for training) alone move the logits by ~1e-2.
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    for topk in (ALL_ENTRIES, 3):
        set_index_topk(probe, topk)
        outs = []
        for name in ("eager", BLOCKED):
            use_attention(probe, name)
            with torch.no_grad():
                outs.append(probe(input_ids=ids, use_cache=False).logits)
        worst = max(worst, ((outs[0] - outs[1]).abs().max() / outs[0].abs().max()).item())
    torch.backends.cuda.matmul.allow_tf32 = tf32
    return worst


# ---------------------------------------------------------------------------------------------------------
# Lightning-indexer distillation and expert balancing (hooks on transformers' modules)
# ---------------------------------------------------------------------------------------------------------
class IndexerDistillation:
    """Collects, per CSA layer, the indexer scores [B, S, T], its selection [B, S, k] and the attention mass of
    all heads on each compressed entry [B, S, T], and turns them into KL(target || softmax(scores)) over the
    entries the heads could see (every causal entry with dense CSA, the selected ones with sparse CSA)."""

    def __init__(self, model: DeepseekV4ForCausalLM) -> None:
        self.enabled = False
        self.records: dict[int, dict[str, torch.Tensor]] = {}
        for i, layer in enumerate(model.model.layers):
            compressor = layer.self_attn.compressor
            if isinstance(compressor, dsv4.DeepseekV4CSACompressor):
                indexer = compressor.indexer
                indexer.register_forward_pre_hook(self._detach_inputs)
                indexer.scorer.register_forward_hook(partial(self._keep, i, "scores"))
                indexer.register_forward_hook(partial(self._keep, i, "selected"))
                layer.self_attn.register_forward_hook(partial(self._keep_attention, i))

    @staticmethod
    def _detach_inputs(module, args):
        return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)

    def _keep(self, layer: int, name: str, module, args, output) -> None:
        if self.enabled:
            self.records.setdefault(layer, {})[name] = output

    def _keep_attention(self, layer: int, module, args, output) -> None:
        if self.enabled and output[1] is not None:
            n_entries = self.records[layer]["scores"].shape[-1]
            self.records[layer]["mass"] = output[1][..., -n_entries:].detach().float().sum(dim=1)

    def loss(self, topk: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean KL over layers and query rows, and the share of the target mass that the indexer's top-k
        (over the visible entries) would keep."""
        kls, recalls = [], []
        for rec in self.records.values():
            if "mass" not in rec:  # no compressed entry yet
                continue
            scores, selected, mass = rec["scores"], rec["selected"], rec["mass"]
            n_entries = scores.shape[-1]
            visible = torch.zeros(*scores.shape[:-1], n_entries + 1, dtype=torch.bool, device=scores.device)
            visible.scatter_(-1, torch.where(selected < 0, n_entries, selected), True)
            visible = visible[..., :n_entries]
            target = mass * visible
            total = target.sum(dim=-1, keepdim=True)
            rows = (total.squeeze(-1) > 1e-6).float()  # queries that see at least one entry
            n_rows = rows.sum().clamp_min(1.0)
            p = target / total.clamp_min(1e-12)
            log_q = F.log_softmax(scores.masked_fill(~visible, -1e9), dim=-1)
            kl = (torch.xlogy(p, p) - p * log_q).sum(dim=-1)
            kls.append((kl * rows).sum() / n_rows)
            k = min(topk, n_entries)
            top = scores.detach().masked_fill(~visible, float("-inf")).topk(k, dim=-1).indices
            recalls.append((p.gather(-1, top).sum(dim=-1) * rows).sum() / n_rows)
        self.records = {}
        if not kls:
            zero = torch.zeros((), device=device)
            return zero, zero
        return torch.stack(kls).mean(), torch.stack(recalls).mean()


class RouterBalance:
    """DeepSeek's auxiliary-loss-free balancing: after each step the selection bias of every learned router
    moves by `rate` toward the experts that received fewer tokens than the mean."""

    def __init__(self, model: DeepseekV4ForCausalLM, rate: float) -> None:
        self.rate = rate
        self.routers = [m for m in model.modules() if isinstance(m, dsv4.DeepseekV4TopKRouter)]
        self.counts: dict[int, torch.Tensor] = {}
        for router in self.routers:
            router.register_forward_hook(self._count)

    def _count(self, module, args, output) -> None:
        if module.training and torch.is_grad_enabled():
            load = torch.bincount(output[2].flatten(), minlength=module.num_experts).float()
            self.counts[id(module)] = self.counts.get(id(module), 0) + load

    @torch.no_grad()
    def update(self) -> None:
        for router in self.routers:
            load = self.counts.pop(id(router), None)
            if load is not None:
                router.e_score_correction_bias += self.rate * torch.sign(load.mean() - load)


# ---------------------------------------------------------------------------------------------------------
# Data: a deterministic function of (seed, step)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    seq_len: int
    batch: int
    steps: int
    sparse: bool


def parse_stages(text: str) -> list[Stage]:
    """`LENxBATCH:STEPS[s],...`; a trailing `s` switches sparse CSA selection on for that stage."""
    stages = []
    for part in text.split(","):
        shape, steps = part.strip().split(":")
        seq_len, batch = shape.split("x")
        sparse = steps.endswith("s")
        stages.append(Stage(int(seq_len), int(batch), int(steps.rstrip("s")), sparse))
    return stages


def parse_mix(text: str) -> list[tuple[str, float]]:
    mix = [(name, float(w)) for name, w in (p.split("=") for p in text.split(","))]
    unknown = [n for n, _ in mix if n not in FAMILIES]
    if unknown:
        raise SystemExit(f"--mix: unknown task(s) {unknown}; known: {list(FAMILIES)}")
    return mix


def stage_index(stages: list[Stage], step: int) -> int:
    end = 0
    for i, stage in enumerate(stages):
        end += stage.steps
        if step < end:
            return i
    return len(stages) - 1


class StepBatches(torch.utils.data.Dataset):
    """Batch of step s: the stage's shape (or, with probability `replay`, an earlier stage's), every row a
    training item of a task drawn from the mix. Returns ids [B, S] and the answer-token mask [B, S]."""

    def __init__(self, seed: int, stages: list[Stage], mix: list[tuple[str, float]], replay: float) -> None:
        self.seed, self.stages, self.mix, self.replay = seed, stages, mix, replay
        self.total_weight = sum(w for _, w in mix)

    def shape(self, step: int) -> Stage:
        i = stage_index(self.stages, step)
        rng = Rng(derive_seed(self.seed, "shape", step))
        if i > 0 and rng.uniform() < self.replay:
            return self.stages[rng.below(i)]
        return self.stages[i]

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        stage = self.shape(step)
        ids = torch.empty(stage.batch, stage.seq_len, dtype=torch.long)
        answer = torch.zeros(stage.batch, stage.seq_len, dtype=torch.bool)
        for row in range(stage.batch):
            rng = Rng(derive_seed(self.seed, "train", step, row))
            pick = rng.uniform() * self.total_weight
            task = next((n for n, w in self.mix if (pick := pick - w) < 0), self.mix[-1][0])
            item = generate(task, rng.next_u64(), stage.seq_len, training=True)
            ids[row] = torch.tensor(item.ids())
            for start, end in item.answer_spans():
                answer[row, start:end] = True
        return {"ids": ids, "answer": answer}

    def __len__(self) -> int:
        return 1 << 40


# ---------------------------------------------------------------------------------------------------------
# Exact match by teacher forcing (identical to greedy decoding: every answer token is the argmax given the
# correct prefix exactly when greedy decoding reproduces the answer)
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_answers(model, prompts: list[list[int]], answers: list[list[int]], device, chunk: int) -> list[list[int]]:
    """Argmax at every answer position of prompt + answer; sequences longer than `chunk` are prefilled in
    chunks through transformers' cache with eager attention."""
    lengths = [len(p) + len(a) for p, a in zip(prompts, answers)]
    ids = torch.full((len(prompts), max(lengths)), PAD, dtype=torch.long)
    for row, (p, a) in enumerate(zip(prompts, answers)):
        ids[row, : len(p) + len(a)] = torch.tensor(p + a)
    ids = ids.to(device)
    first = min(len(p) for p in prompts) - 1
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        if ids.shape[1] <= chunk:
            use_attention(model, BLOCKED)
            preds = model(input_ids=ids, use_cache=False).logits[:, first:].argmax(-1)
        else:
            use_attention(model, "eager")
            cache = DynamicCache(config=model.config)
            pieces = []
            for start in range(0, ids.shape[1], chunk):
                logits = model(input_ids=ids[:, start : start + chunk], past_key_values=cache, use_cache=True).logits
                if start + logits.shape[1] > first:
                    pieces.append(logits[:, max(0, first - start) :].argmax(-1))
            preds = torch.cat(pieces, dim=1)
    use_attention(model, BLOCKED)
    preds = preds.cpu()
    return [preds[row, len(p) - 1 - first : len(p) - 1 - first + len(a)].tolist()
            for row, (p, a) in enumerate(zip(prompts, answers))]


def validation_items(seed: int, lengths: list[int], n: int) -> list[tuple[str, int, list]]:
    return [(task, length, [generate(task, derive_seed(seed, "valid", task, length, i), length) for i in range(n)])
            for task in FAMILIES for length in lengths]


def validate(model, items, device, chunk: int, topk: int) -> list[dict]:
    set_index_topk(model, topk)
    rows = []
    for task, length, group in items:
        prompts = [it.prompt_ids() for it in group]
        answers = [it.answer_ids() for it in group]
        preds = predict_answers(model, prompts, answers, device, chunk)
        exact = sum(p == a for p, a in zip(preds, answers)) / len(group)
        rows.append({"task": task, "length": length, "exact": exact})
    return rows


def evaluate_tasks(model, root: Path, device, *, max_items: int, batch_tokens: int, chunk: int, deadline: float,
                   predictions_path: Path) -> list[dict]:
    """Exact-match accuracy per task file under root (shortest lengths first), until the deadline."""
    rows = []
    entries = sorted(read_manifest(root)["files"], key=lambda e: (e["length"], e["task"]))
    with open(predictions_path, "w") as pred_file:
        for entry in entries:
            items = [it for _, it in zip(range(max_items), read_items(root / entry["path"]))]
            per_batch = max(1, batch_tokens // entry["length"])
            correct = done = 0
            for start in range(0, len(items), per_batch):
                if time.time() > deadline:
                    break
                group = items[start : start + per_batch]
                answers = [it["answer"] for it in group]
                preds = predict_answers(model, [it["prompt"] for it in group], answers, device, chunk)
                for it, p, a in zip(group, preds, answers):
                    correct += p == a
                    pred_file.write(json.dumps({"id": it["id"], "generated": p}) + "\n")
                done += len(group)
            rows.append({"task": entry["task"], "length": entry["length"], "items": done, "correct": correct,
                         "accuracy": correct / done if done else float("nan")})
            print(f"eval {entry['task']:<18} {entry['length']:>6}: {correct}/{done}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------------
# State, export, logs
# ---------------------------------------------------------------------------------------------------------
def _replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def save_optimizer(path: Path, model, optimizer, trainer: dict) -> None:
    """Adam moments in bf16, in files of at most SHARD_BYTES (the device returns files of up to 16 MiB), and
    trainer.json. The weights of the state are those of final/ (the bf16 export): resuming rounds the fp32
    master weights to bf16 once, a change smaller than one optimizer step, and keeps the state at ~38 MB."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, p in model.named_parameters():
        st = optimizer.state.get(p)
        if not st:
            continue
        tensors = {f"{name}.exp_avg": st["exp_avg"].to(torch.bfloat16).cpu().contiguous(),
                   f"{name}.exp_avg_sq": st["exp_avg_sq"].to(torch.bfloat16).cpu().contiguous(),
                   f"{name}.step": torch.as_tensor(st["step"], dtype=torch.float32).reshape(1).cpu()}
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        if size + nbytes > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1].update(tensors)
        size += nbytes
    for i, shard in enumerate(shards):
        save_file(shard, tmp / f"optimizer-{i}.safetensors")
    (tmp / "trainer.json").write_text(json.dumps(trainer, indent=1) + "\n")
    _replace_dir(tmp, path)


def load_optimizer(path: Path, model, optimizer, device) -> dict:
    moments: dict[str, torch.Tensor] = {}
    for shard in sorted(path.glob("optimizer-*.safetensors")):
        moments.update(load_file(shard, device=str(device)))
    for name, p in model.named_parameters():
        if f"{name}.exp_avg" in moments:
            optimizer.state[p] = {
                "step": moments[f"{name}.step"].cpu().reshape(()),
                "exp_avg": moments[f"{name}.exp_avg"].float(),
                "exp_avg_sq": moments[f"{name}.exp_avg_sq"].float(),
            }
    return json.loads((path / "trainer.json").read_text())


def load_export(path: Path, device) -> DeepseekV4ForCausalLM:
    return DeepseekV4ForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").to(device)


def pack(out: Path, dest: Path) -> None:
    """Copies what a later command needs to resume, and the results, into dest (at most 8 files, each under
    16 MiB, two folders deep: what the device machine returns)."""
    files = [p for p in [out / "final" / "config.json", out / "final" / "model.safetensors",
                         *sorted((out / "state").glob("*")), out / "train_log.csv", out / "val_log.csv",
                         out / "eval.csv"] if p.is_file()]
    for p in files:
        target = dest / p.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
    total = sum(p.stat().st_size for p in files)
    print(f"packed {len(files)} files ({total / 2**20:.1f} MiB) into {dest}")


def exported_copy(model, dtype: torch.dtype) -> DeepseekV4ForCausalLM:
    """A hook-free CPU copy with the export's rounding: bf16 except where DeepSeek keeps fp32 (mHC, sinks,
    norms, position biases, router bias); the bf16 weights are then stored as `dtype`."""
    keep_fp32 = set(dsv4.DeepseekV4PreTrainedModel._keep_in_fp32_modules_strict)
    config = copy.deepcopy(model.config)
    config._attn_implementation = "eager"
    m = DeepseekV4ForCausalLM(config)
    m.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    for name, p in m.named_parameters():
        if not keep_fp32.intersection(name.split(".")):
            p.data = p.data.to(torch.bfloat16).to(dtype)
    return m.eval()


def export(model, path: Path, index_topk: int) -> int:
    """save_pretrained of exported_copy in bf16, with the sparse index_topk; returns the size of
    model.safetensors."""
    m = exported_copy(model, torch.bfloat16)
    m.config.index_topk = index_topk
    m.config.use_cache = True
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    m.save_pretrained(tmp)
    _replace_dir(tmp, path)
    return (path / "model.safetensors").stat().st_size


def check_export(model, path: Path, device) -> float:
    """Largest |logit difference| between the exported checkpoint loaded by transformers and the in-memory
    model with the same bf16 rounding (fp32 compute, eager, one 300-token sequence)."""
    loaded = load_export(path, device)
    reference = exported_copy(model, torch.float32).to(device)
    set_index_topk(reference, loaded.config.index_topk)
    use_attention(reference, "eager")
    ids = generate("niah_multikey", 1, 300).prompt_ids()
    x = torch.tensor([ids], device=device)
    with torch.no_grad():
        a = loaded(input_ids=x, use_cache=False).logits
        b = reference(input_ids=x, use_cache=False).logits
    return (a - b).abs().max().item()


class CsvLog:
    """Appends rows; on resume, rows past the resumed step are dropped first."""

    def __init__(self, path: Path, fields: list[str], resume_step: int | None) -> None:
        self.path, self.fields = path, fields
        rows = []
        if resume_step is not None and path.exists():
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(row)


TRAIN_FIELDS = ["step", "seq_len", "batch", "sparse", "lr", "loss", "lm_loss", "answer_loss", "answer_acc",
                "indexer_kl", "indexer_recall", "step_s", "tokens_per_s", "elapsed_s"]
VAL_FIELDS = ["step", "mode", "task", "length", "exact"]


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------
def learning_rate(args, step: int, total: int) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model, args) -> torch.optim.AdamW:
    decay, plain = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "position_bias" not in name else plain).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


def run_eval(model, args, device, deadline: float) -> None:
    set_index_topk(model, args.eval_topk or model.config.index_topk)
    model.eval()
    rows = evaluate_tasks(model, args.eval_tasks, device, max_items=args.eval_items, batch_tokens=args.eval_tokens,
                          chunk=args.eval_chunk, deadline=deadline, predictions_path=args.out / "predictions.jsonl")
    with open(args.out / "eval.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "length", "items", "correct", "accuracy"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out / 'eval.csv'}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="run folder: final/, state/, *.csv")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/state if present")
    ap.add_argument("--init", type=Path, help="fine-tune this exported checkpoint: its weights, a new optimizer, "
                    "step 0 of --stages, and --index-topk in place of its index_topk")
    ap.add_argument("--max-minutes", type=float, default=9.0, help="wall-clock budget of this command")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="backbone")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", default=DEFAULT_STAGES, help="LENxBATCH:STEPS[s],... (s: sparse CSA)")
    ap.add_argument("--mix", default=DEFAULT_MIX, help="task=weight,...")
    ap.add_argument("--replay", type=float, default=0.2, help="share of steps that reuse an earlier stage shape")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--answer-weight", type=float, default=4.0, help="loss weight of answer tokens (others: 1)")
    ap.add_argument("--indexer-weight", type=float, default=1.0)
    ap.add_argument("--index-topk", type=int, default=64, help="CSA top-k of sparse stages and of the export")
    ap.add_argument("--balance-rate", type=float, default=1e-3)
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--val-items", type=int, default=16)
    ap.add_argument("--val-lengths", default="512,2048")
    ap.add_argument("--eval-tasks", type=Path, help="held-out task folder (make_tasks.py) to score at the end")
    ap.add_argument("--eval-only", action="store_true", help="score <out>/final on --eval-tasks and exit")
    ap.add_argument("--eval-items", type=int, default=100)
    ap.add_argument("--eval-minutes", type=float, default=1.5, help="part of --max-minutes kept for --eval-tasks")
    ap.add_argument("--eval-topk", type=int, default=0, help="index_topk for the evaluation (0: the config's)")
    ap.add_argument("--eval-chunk", type=int, default=4352,
                    help="sequences up to this length (prompt + answer) take one cache-free forward; longer ones "
                         "are prefilled through the cache in pieces of this length")
    ap.add_argument("--eval-tokens", type=int, default=32768, help="tokens per evaluation batch")
    ap.add_argument("--pack", type=Path, help="at the end, copy what resuming needs and the results here ($OUT)")
    ap.add_argument("--workers", type=int, default=6, help="data-loader processes (0: in the main process)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    start_time = T_START
    deadline = start_time + 60 * args.max_minutes
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    state_dir, final_dir = args.out / "state", args.out / "final"

    if args.eval_only:
        if args.eval_tasks is None:
            raise SystemExit("--eval-only needs --eval-tasks")
        run_eval(load_export(final_dir, device), args, device, deadline)
        if args.pack:
            pack(args.out, args.pack)
        return 0

    stages = parse_stages(args.stages)
    mix = parse_mix(args.mix)
    planned = sum(s.steps for s in stages)
    resuming = args.resume and (state_dir / "trainer.json").exists() and (final_dir / "config.json").exists()
    if state_dir.exists() and not resuming:
        raise SystemExit(f"{state_dir} exists: pass --resume to continue it, or choose another --out")
    if resuming:
        model = load_export(final_dir, device)
    elif args.init:
        model = load_export(args.init, device)
    else:
        model = build_model(make_config(args.preset, args.index_topk), args.seed).to(device)
    optimizer = make_optimizer(model, args)
    trainer = {"step": 0, "seconds": 0.0, "commands": []}
    if resuming:
        trainer = load_optimizer(state_dir, model, optimizer, device)
        print(f"resumed from {final_dir} and {state_dir} at step {trainer['step']}")
    step, seconds_before = trainer["step"], trainer["seconds"]
    trainer["commands"].append({"start_step": step, "argv": sys.argv[1:]})
    if args.init and not resuming:
        trainer["init"] = str(args.init)

    rel = check_blocked_attention(model, device)
    print(f"blocked vs eager attention: max relative logit difference {rel:.2e}")
    if rel > 1e-4:
        raise SystemExit("the blocked attention does not reproduce transformers' eager attention; stopping")
    use_attention(model, BLOCKED)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters, layers {model.config.layer_types}")

    distill = IndexerDistillation(model)
    balance = RouterBalance(model, args.balance_rate)
    val_items = validation_items(args.seed, [int(x) for x in args.val_lengths.split(",") if x], args.val_items)
    train_log = CsvLog(args.out / "train_log.csv", TRAIN_FIELDS, step if resuming else -1)
    val_log = CsvLog(args.out / "val_log.csv", VAL_FIELDS, step if resuming else -1)

    data = StepBatches(args.seed, stages, mix, args.replay)
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, sampler=range(step, 1 << 40), num_workers=args.workers,
        prefetch_factor=4 if args.workers else None, pin_memory=device.type == "cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    eval_reserve = 60 * args.eval_minutes if args.eval_tasks else 0.0
    train_deadline = deadline - eval_reserve - 45.0  # final validation, save, export
    sums: dict[str, float | torch.Tensor] = {}
    interval_start, interval_tokens, last_step_s = time.time(), 0, 0.0

    def validate_and_log() -> None:
        model.eval()
        for mode, topk in (("dense", ALL_ENTRIES), ("sparse", args.index_topk)):
            for r in validate(model, val_items, device, args.eval_chunk, topk):
                val_log.write({"step": step, "mode": mode, **r})
                print(f"  val {mode:<6} {r['task']:<18} {r['length']:>5}: {r['exact']:.2f}")
        model.train()

    def checkpoint() -> int:
        """Exports final/ (the weights of the state too), then the optimizer state; returns the export size."""
        trainer.update(step=step, seconds=seconds_before + time.time() - start_time)
        size = export(model, final_dir, args.index_topk)
        save_optimizer(state_dir, model, optimizer, trainer)
        return size

    model.train()
    for batch in loader:
        t0 = time.time()
        if t0 + 1.5 * last_step_s > train_deadline:
            break
        stage = stages[stage_index(stages, step)]
        shape = data.shape(step)
        set_index_topk(model, args.index_topk if stage.sparse else ALL_ENTRIES)
        lr = learning_rate(args, step, planned)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids = batch["ids"].to(device, non_blocking=True)
        answer = batch["answer"].to(device, non_blocking=True)[:, 1:]

        distill.enabled = True
        with autocast:
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        distill.enabled = False
        targets = ids[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        ce = ce.view_as(targets)
        weights = 1.0 + (args.answer_weight - 1.0) * answer.float()
        lm_loss = (ce * weights).sum() / weights.sum()
        kl, recall = distill.loss(args.index_topk, device)
        loss = lm_loss + args.indexer_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        balance.update()

        with torch.no_grad():
            n_answer = answer.sum().clamp_min(1)
            metrics = {"loss": loss.detach(), "lm_loss": lm_loss.detach(),
                       "answer_loss": (ce * answer).sum() / n_answer,
                       "answer_acc": ((logits.argmax(-1) == targets) & answer).sum() / n_answer,
                       "indexer_kl": kl.detach(), "indexer_recall": recall.detach()}
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        sums["n"] = sums.get("n", 0) + 1
        interval_tokens += ids.numel()
        step += 1
        if device.type == "cuda" and step % args.log_every == 0:
            torch.cuda.synchronize()
        last_step_s = time.time() - t0

        if step % args.log_every == 0:
            n = sums.pop("n")
            elapsed = time.time() - interval_start
            row = {"step": step, "seq_len": shape.seq_len, "batch": shape.batch, "sparse": int(stage.sparse),
                   "lr": f"{lr:.3e}", **{k: f"{float(v) / n:.4f}" for k, v in sums.items()},
                   "step_s": f"{elapsed / n:.3f}", "tokens_per_s": f"{interval_tokens / elapsed:.0f}",
                   "elapsed_s": f"{time.time() - start_time:.0f}"}
            train_log.write(row)
            print(" ".join(f"{k}={row[k]}" for k in ("step", "seq_len", "sparse", "loss", "answer_loss",
                                                     "answer_acc", "indexer_kl", "indexer_recall", "step_s")),
                  flush=True)
            sums, interval_start, interval_tokens = {}, time.time(), 0
        if step % args.val_every == 0:
            validate_and_log()
        if step % args.save_every == 0:
            checkpoint()

    validate_and_log()
    size = checkpoint()
    diff = check_export(model, final_dir, device)
    print(f"step {step}: exported {final_dir} ({size / 2**20:.1f} MiB), saved {state_dir}; "
          f"reloaded export vs memory: max |dlogit| {diff:.2e}")
    if size >= 16 * 2**20:
        print(f"WARNING: {final_dir / 'model.safetensors'} is {size / 2**20:.1f} MiB, over the 16 MiB limit")
    if args.eval_tasks:
        run_eval(load_export(final_dir, device), args, device, deadline - 15.0)
    if args.pack:
        pack(args.out, args.pack)
    print(f"done in {(time.time() - start_time) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
