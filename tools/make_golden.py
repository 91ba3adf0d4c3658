#!/usr/bin/env python3
"""Golden fixtures for the DeepSeek-V4 decoder: tiny random transformers checkpoints and their logits.

For every configuration in CONFIGS this script builds a transformers `DeepseekV4ForCausalLM` in float32
with eager attention, overwrites every parameter and persistent buffer with seeded random values, runs the
same random token sequence three ways (one full forward, token-by-token decode, chunked prefill with odd
chunk sizes), checks that transformers agrees with itself and that top-k decisions are not decided by
near-ties, saves the model with `save_pretrained`, reloads it and checks the logits again, and writes

    <out>/<name>/config.json                transformers config (as saved by save_pretrained)
    <out>/<name>/model.safetensors          weights (as saved by save_pretrained)
    <out>/<name>/golden.safetensors         input_ids, logits_full, logits_decode, logits_chunked (+ metadata)
    <out>/<name>/intermediates.safetensors  debug aids from the full forward: rope tables, CSA selections,
                                            and per-layer tensors where the fixture asks for them

Everything runs on the CPU in float32 with one thread, whatever hardware is present. docs/fixtures.md
describes the files; tools/requirements-golden.txt pins the versions.

    python tools/make_golden.py --out tests/data/dsv4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM, DynamicCache  # noqa: E402
from transformers.models.deepseek_v4 import modeling_deepseek_v4 as dsv4  # noqa: E402

SLIDING = "sliding_attention"
CSA = "compressed_sparse_attention"
HCA = "heavily_compressed_attention"

AGREEMENT_TOLERANCE = 1e-5  # max |a - b| / max |full| between the three transformers paths
MIN_INDEXER_MARGIN = 1e-3  # (k-th - (k+1)-th indexer score) / max |score| of the row, where selection is active
MIN_ROUTER_MARGIN = 1e-3  # k-th - (k+1)-th of sqrtsoftplus(logit) + bias, in the learned-routing layers
MAX_SEED_ATTEMPTS = 50


@dataclass(frozen=True)
class Fixture:
    name: str
    seed: int
    seq_len: int
    config: dict
    intermediates: bool = False  # also save per-layer tensors of the full forward


COMMON = dict(
    num_key_value_heads=1,
    n_shared_experts=1,
    scoring_func="sqrtsoftplus",
    norm_topk_prob=True,
    rms_norm_eps=1e-6,
    hc_eps=1e-6,
    num_nextn_predict_layers=0,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=1,
)

CONFIGS = [
    # All three layer kinds, CSA with index_topk >= number of entries (selection = every causal entry),
    # one hash-routed layer first. Per-layer intermediates are saved for this one.
    Fixture(
        name="dense",
        seed=1000,
        seq_len=64,
        intermediates=True,
        config=dict(
            vocab_size=128,
            hidden_size=32,
            num_hidden_layers=4,
            layer_types=[SLIDING, CSA, HCA, CSA],
            mlp_layer_types=["hash_moe", "moe", "moe", "moe"],
            compress_rates={CSA: 4, HCA: 8},
            sliding_window=8,
            num_attention_heads=4,
            head_dim=32,
            partial_rotary_factor=0.25,  # 8 rope dims
            q_lora_rank=32,
            o_groups=2,
            o_lora_rank=16,
            n_routed_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            routed_scaling_factor=1.5,
            swiglu_limit=10.0,
            rope_theta=10000.0,
            compress_rope_theta=160000.0,
            hc_mult=2,
            hc_sinkhorn_iters=20,
            index_n_heads=4,
            index_head_dim=16,
            index_topk=32,  # 64 tokens / 4 = 16 entries at most
        ),
    ),
    # Lightning-indexer selection active: index_topk 4 < up to 18 entries, 16 indexer heads, margins checked.
    Fixture(
        name="select",
        seed=2000,
        seq_len=72,
        config=dict(
            vocab_size=96,
            hidden_size=32,
            num_hidden_layers=3,
            layer_types=[CSA, HCA, CSA],
            mlp_layer_types=["hash_moe", "hash_moe", "moe"],
            compress_rates={CSA: 4, HCA: 8},
            sliding_window=8,
            num_attention_heads=4,
            head_dim=32,
            partial_rotary_factor=0.25,
            q_lora_rank=24,
            o_groups=8,  # a group is half a head: grouping runs over the flattened head axis
            o_lora_rank=8,
            n_routed_experts=8,
            num_experts_per_tok=3,
            moe_intermediate_size=16,
            routed_scaling_factor=2.5,
            swiglu_limit=1.0,  # small, so the clamps of the SwiGLU actually cut
            rope_theta=10000.0,
            compress_rope_theta=160000.0,
            hc_mult=2,
            hc_sinkhorn_iters=3,
            index_n_heads=16,
            index_head_dim=16,
            index_topk=4,
        ),
    ),
    # YaRN on the compress rope (ramp covers kept, blended and interpolated pairs), hc_mult 4, HCA first,
    # other window / ratio / head / group / theta values than the two above, selection active.
    Fixture(
        name="yarn",
        seed=3000,
        seq_len=80,
        config=dict(
            vocab_size=160,
            hidden_size=48,
            num_hidden_layers=4,
            layer_types=[HCA, CSA, SLIDING, CSA],
            mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe"],
            compress_rates={CSA: 4, HCA: 16},
            sliding_window=6,
            num_attention_heads=8,
            head_dim=32,
            partial_rotary_factor=0.5,  # 16 rope dims
            q_lora_rank=24,
            o_groups=4,  # two heads per group
            o_lora_rank=8,
            n_routed_experts=6,
            num_experts_per_tok=2,
            moe_intermediate_size=24,
            routed_scaling_factor=0.75,
            swiglu_limit=10.0,
            rope_theta=5000.0,
            compress_rope_theta=40000.0,
            # yarn ramp over the 8 rope pairs: pairs 0-1 kept, 2-4 blended, 5-7 divided by the factor
            rope_parameters=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=2048,
                                 beta_fast=32.0, beta_slow=1.0),
            max_position_embeddings=8192,  # = factor * original_max_position_embeddings
            hc_mult=4,
            hc_sinkhorn_iters=7,
            index_n_heads=16,
            index_head_dim=32,
            index_topk=8,  # 80 tokens / 4 = 20 entries at most
        ),
    ),
]


# ------------------------------------------------------------------------------------------------------------
# Model construction


def build_model(fixture: Fixture, seed: int) -> DeepseekV4ForCausalLM:
    config = DeepseekV4Config(**{"max_position_embeddings": 256, **COMMON, **fixture.config})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = DeepseekV4ForCausalLM(config).to(torch.float32).eval()
    randomise(model, seed)
    return model


def randomise(model: DeepseekV4ForCausalLM, seed: int) -> None:
    """Overwrite every parameter and persistent buffer, including those transformers sets to constants."""
    gen = torch.Generator().manual_seed(seed)

    def normal(shape, std=1.0, mean=0.0):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo

    config = model.config
    persistent = set(model.state_dict().keys())
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name not in persistent:
                continue  # rotary inv_freq tables are derived, not stored
            leaf = name.rsplit(".", 1)[-1]
            shape = tensor.shape
            if leaf == "tid2eid":
                # each token gets k distinct experts
                experts = config.n_routed_experts
                rows = [torch.randperm(experts, generator=gen)[: shape[1]] for _ in range(shape[0])]
                value = torch.stack(rows).to(tensor.dtype)
            elif name.endswith("embed_tokens.weight"):
                value = normal(shape)
            elif leaf == "weight" and tensor.dim() == 1:  # RMSNorm weights
                value = uniform(shape, 0.5, 1.5)
            elif leaf == "sinks":
                value = normal(shape)
            elif leaf == "position_bias":
                value = normal(shape)
            elif leaf == "e_score_correction_bias":
                value = normal(shape, 0.3)
            elif leaf in ("base", "hc_base"):
                value = normal(shape, 0.5)
            elif leaf in ("scale", "hc_scale"):
                value = uniform(shape, 0.5, 1.5)
            elif leaf in ("gate_up_proj", "down_proj") and tensor.dim() == 3:  # routed experts [E, out, in]
                value = normal(shape, 1.0 / math.sqrt(shape[-1]))
            elif tensor.dim() == 2:  # every linear weight [out, in], mHC fn, router weight
                value = normal(shape, 1.0 / math.sqrt(shape[-1]))
            else:
                raise RuntimeError(f"no randomisation rule for {name} {tuple(shape)}")
            tensor.copy_(value)
    check_randomised(model)


def check_randomised(model: DeepseekV4ForCausalLM) -> None:
    for name, tensor in model.state_dict().items():
        if tensor.dtype.is_floating_point:
            if tensor.numel() > 1 and float(tensor.std()) == 0.0:
                raise RuntimeError(f"{name} is constant after randomisation")
        elif name.endswith("tid2eid"):
            rows = tensor.sort(dim=1).values
            if bool((rows[:, 1:] == rows[:, :-1]).any()):
                raise RuntimeError(f"{name}: a token maps to the same expert twice")


# ------------------------------------------------------------------------------------------------------------
# The three transformers paths


@torch.no_grad()
def logits_full(model, ids: torch.Tensor) -> torch.Tensor:
    cache = DynamicCache(config=model.config)
    return model(input_ids=ids[None], past_key_values=cache, use_cache=True).logits[0]


@torch.no_grad()
def logits_uncached(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids[None], use_cache=False).logits[0]


@torch.no_grad()
def logits_chunked(model, ids: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    cache = DynamicCache(config=model.config)
    out, start = [], 0
    for size in sizes:
        chunk = ids[start : start + size]
        out.append(model(input_ids=chunk[None], past_key_values=cache, use_cache=True).logits[0])
        start += size
    assert start == ids.numel()
    return torch.cat(out)


def odd_chunks(total: int) -> list[int]:
    """1, 3, 5, 7, ... with the last chunk cut to fit."""
    sizes, size = [], 1
    while sum(sizes) < total:
        sizes.append(min(size, total - sum(sizes)))
        size += 2
    return sizes


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref.double()).abs().max() / ref.double().abs().max())


# ------------------------------------------------------------------------------------------------------------
# Tie checks on the discontinuous decisions: lightning-indexer top-k and learned expert top-k


class DecisionProbe:
    """Hooks that record, during one full forward, the indexer scores and the router scores."""

    def __init__(self, model):
        self.indexer_scores: dict[int, torch.Tensor] = {}
        self.router_scores: dict[int, torch.Tensor] = {}
        self.handles = []
        for i, layer in enumerate(model.model.layers):
            comp = layer.self_attn.compressor
            if isinstance(comp, dsv4.DeepseekV4CSACompressor):
                self.handles.append(comp.indexer.scorer.register_forward_hook(self._indexer(i)))
            gate = layer.mlp.gate
            if isinstance(gate, dsv4.DeepseekV4TopKRouter):
                self.handles.append(gate.register_forward_hook(self._router(i)))

    def _indexer(self, i):
        def hook(_module, _inputs, output):
            self.indexer_scores[i] = output[0].detach().clone()  # [S, entries], before the causal mask

        return hook

    def _router(self, i):
        def hook(module, _inputs, output):
            logits = output[0]
            self.router_scores[i] = (module.score_fn(logits) + module.e_score_correction_bias).detach().clone()

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def indexer_margins(probe: DecisionProbe, config) -> dict[int, float]:
    """Smallest relative gap between the k-th and (k+1)-th causal score, over rows where selection is active."""
    ratio = config.compress_rates[CSA]
    k = config.index_topk
    margins = {}
    for layer, scores in probe.indexer_scores.items():
        worst = math.inf
        for t in range(scores.shape[0]):
            causal = (t + 1) // ratio
            if causal <= k:
                continue
            row = scores[t, :causal].double()
            top = row.sort(descending=True).values
            worst = min(worst, float((top[k - 1] - top[k]) / row.abs().max()))
        margins[layer] = worst
    return margins


def margins_json(margins: dict[int, float]) -> str:
    """Layer -> margin; null where the layer never selects (top-k covers every causal entry)."""
    return json.dumps({str(k): None if math.isinf(v) else float(f"{v:.3g}") for k, v in margins.items()})


def router_margins(probe: DecisionProbe, config) -> dict[int, float]:
    k = config.num_experts_per_tok
    margins = {}
    for layer, scores in probe.router_scores.items():
        top = scores.double().sort(dim=-1, descending=True).values
        margins[layer] = float((top[:, k - 1] - top[:, k]).min())
    return margins


# ------------------------------------------------------------------------------------------------------------
# Intermediates of the full forward (debug aids for the C++ port)


@torch.no_grad()
def capture_intermediates(model, ids: torch.Tensor, with_hidden: bool) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name, pick=lambda o: o):
        def hook(_module, _inputs, output):
            out[name] = pick(output)[0].detach().clone().contiguous()

        return hook

    inner = model.model
    if with_hidden:
        handles.append(inner.embed_tokens.register_forward_hook(keep("embed")))
        for i, layer in enumerate(inner.layers):
            handles.append(layer.self_attn.register_forward_hook(keep(f"layers.{i}.attn_out", lambda o: o[0])))
            handles.append(layer.mlp.register_forward_hook(keep(f"layers.{i}.ffn_out")))
            handles.append(layer.register_forward_hook(keep(f"layers.{i}.hidden")))
        handles.append(inner.hc_head.register_forward_hook(keep("hc_head_out")))
        handles.append(inner.norm.register_forward_hook(keep("final_hidden")))
    for i, layer in enumerate(inner.layers):
        comp = layer.self_attn.compressor
        if isinstance(comp, dsv4.DeepseekV4CSACompressor):
            handles.append(comp.indexer.register_forward_hook(keep(f"layers.{i}.index_topk")))

    cache = DynamicCache(config=model.config)
    model(input_ids=ids[None], past_key_values=cache, use_cache=True)
    for h in handles:
        h.remove()

    for kind in ("main", "compress"):
        out[f"rope.{kind}.inv_freq"] = getattr(inner.rotary_emb, f"{kind}_inv_freq").detach().clone()

    for name in [n for n in out if n.endswith("index_topk")]:
        # as a set: valid indices ascending, then the -1 padding
        rows = out[name]
        keyed = torch.where(rows < 0, torch.full_like(rows, 1 << 40), rows).sort(dim=-1).values
        out[name] = torch.where(keyed == 1 << 40, torch.full_like(rows, -1), keyed).contiguous()

    if with_hidden:
        for i, layer in enumerate(cache.layers):
            if not hasattr(layer, "compressed_kv"):
                continue
            out[f"layers.{i}.compressed_kv"] = layer.compressed_kv["compressor"][0].contiguous()
            if layer.compressed_kv.get("indexer") is not None:
                out[f"layers.{i}.indexer_kv"] = layer.compressed_kv["indexer"][0].contiguous()
    return out


# ------------------------------------------------------------------------------------------------------------
# One fixture


def make_fixture(fixture: Fixture, out_dir: Path) -> dict:
    for attempt in range(MAX_SEED_ATTEMPTS):
        seed = fixture.seed + attempt
        model = build_model(fixture, seed)
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, model.config.vocab_size, (fixture.seq_len,), generator=gen, dtype=torch.long)

        probe = DecisionProbe(model)
        full = logits_full(model, ids)
        probe.remove()
        idx_m = indexer_margins(probe, model.config)
        rtr_m = router_margins(probe, model.config)
        if all(m >= MIN_INDEXER_MARGIN for m in idx_m.values()) and all(
            m >= MIN_ROUTER_MARGIN for m in rtr_m.values()
        ):
            break
        print(f"  {fixture.name}: seed {seed} has near-ties (indexer {idx_m}, router {rtr_m}); next seed")
    else:
        raise RuntimeError(f"{fixture.name}: no seed without near-ties in {MAX_SEED_ATTEMPTS} attempts")

    sizes = odd_chunks(fixture.seq_len)
    decode = logits_chunked(model, ids, [1] * fixture.seq_len)
    chunked = logits_chunked(model, ids, sizes)
    uncached = logits_uncached(model, ids)
    errors = {
        "decode_vs_full": rel_err(decode, full),
        "chunked_vs_full": rel_err(chunked, full),
        "uncached_vs_full": rel_err(uncached, full),
    }
    for what, err in errors.items():
        if not err <= AGREEMENT_TOLERANCE:
            raise RuntimeError(f"{fixture.name}: transformers disagrees with itself, {what} = {err:.3g}")

    target = out_dir / fixture.name
    if target.exists():
        shutil.rmtree(target)
    model.save_pretrained(target, safe_serialization=True)
    (target / "generation_config.json").unlink(missing_ok=True)  # nothing reads it

    reloaded = DeepseekV4ForCausalLM.from_pretrained(target, dtype=torch.float32, attn_implementation="eager").eval()
    errors["reloaded_vs_full"] = rel_err(logits_full(reloaded, ids), full)
    if errors["reloaded_vs_full"] != 0.0:
        raise RuntimeError(f"{fixture.name}: reloaded checkpoint differs, {errors['reloaded_vs_full']:.3g}")

    meta = {
        "fixture": fixture.name,
        "seed": str(seed),
        "seq_len": str(fixture.seq_len),
        "chunk_sizes": json.dumps(sizes),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "python_version": sys.version.split()[0],
        "agreement": json.dumps({k: float(f"{v:.3g}") for k, v in errors.items()}),
        "indexer_min_margin": margins_json(idx_m),
        "router_min_margin": margins_json(rtr_m),
        "generator": "tools/make_golden.py",
    }
    save_file(
        {
            "input_ids": ids.contiguous(),
            "logits_full": full.contiguous(),
            "logits_decode": decode.contiguous(),
            "logits_chunked": chunked.contiguous(),
        },
        target / "golden.safetensors",
        metadata=meta,
    )

    inter = capture_intermediates(model, ids, with_hidden=fixture.intermediates)
    save_file(inter, target / "intermediates.safetensors", metadata={"fixture": fixture.name})
    return {"name": fixture.name, "seed": seed, "errors": errors, "indexer": idx_m, "router": rtr_m, "dir": target}


def compare(out_dir: Path, ref_dir: Path, names: list[str]) -> bool:
    """Fresh fixtures vs reference ones: configs and integer tensors equal, weights bitwise equal
    (same seeded CPU generator), floating results within AGREEMENT_TOLERANCE."""
    ok = True
    for name in names:
        new, ref = out_dir / name, ref_dir / name
        if json.loads((new / "config.json").read_text()) != json.loads((ref / "config.json").read_text()):
            print(f"  {name}/config.json differs")
            ok = False
        for file in ("model.safetensors", "golden.safetensors", "intermediates.safetensors"):
            with safe_open(new / file, "pt") as a, safe_open(ref / file, "pt") as b:
                if set(a.keys()) != set(b.keys()):
                    print(f"  {name}/{file}: tensor names differ")
                    ok = False
                    continue
                worst = 0.0
                for key in a.keys():
                    x, y = a.get_tensor(key), b.get_tensor(key)
                    exact = file == "model.safetensors" or not x.dtype.is_floating_point
                    if x.shape != y.shape or (exact and not torch.equal(x, y)):
                        print(f"  {name}/{file}: {key} differs")
                        ok = False
                    elif not exact:
                        worst = max(worst, rel_err(x, y))
                print(f"  {name}/{file}: max rel err {worst:.3g}")
                ok = ok and worst <= AGREEMENT_TOLERANCE
    return ok


def header_names(path: Path) -> list[tuple[str, str, list[int]]]:
    with safe_open(path, "pt") as f:
        return [(k, str(f.get_slice(k).get_dtype()), list(f.get_slice(k).get_shape())) for k in f.keys()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. tests/data/dsv4")
    parser.add_argument("--only", nargs="*", help="fixture names to build (default: all)")
    parser.add_argument("--list-names", action="store_true", help="print the saved tensor names")
    parser.add_argument("--compare", type=Path, help="afterwards compare with the fixtures in this folder")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    args.out.mkdir(parents=True, exist_ok=True)

    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    fixtures = [f for f in CONFIGS if not args.only or f.name in args.only]
    for fixture in fixtures:
        r = make_fixture(fixture, args.out)
        sizes = {p.name: p.stat().st_size for p in sorted(r["dir"].iterdir())}
        print(f"{r['name']}: seed {r['seed']}, errors {r['errors']}")
        print(f"  indexer margins {r['indexer']}, router margins {r['router']}")
        print(f"  files {sizes}")
        if args.list_names:
            for name, dtype, shape in header_names(r["dir"] / "model.safetensors"):
                print(f"    {name} {dtype} {shape}")
    if args.compare is not None:
        print(f"compare with {args.compare}")
        if not compare(args.out, args.compare, [f.name for f in fixtures]):
            sys.exit("fixtures differ from the reference")
        print("fixtures agree with the reference")


if __name__ == "__main__":
    main()
