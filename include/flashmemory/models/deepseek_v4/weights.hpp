// flashmemory/models/deepseek_v4/weights.hpp — the parameters of a DeepSeek-V4 model as float32 host tensors,
// named and shaped as in the upstream checkpoints (deepseek-v4.md §9.1).
//
// build_weights(config, source) is the one place that knows which tensors a configuration needs and their
// shapes: it asks `source` for each of them by upstream name. A source is anything with
//   Tensor tensor(std::string const& name, std::vector<index_t> const& shape)    float32 values
//   IdTable ids(std::string const& name, std::vector<index_t> const& shape, index_t bound)   ints in [0, bound)
// The checkpoint loader (load.hpp) is one source — it resolves the other spellings, dequantises and checks that
// nothing is left over; tests use a random source.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/core/tensor_view.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

// A dense float32 tensor, row-major.
struct Tensor {
  HostBuffer<float> data;
  std::vector<index_t> shape;

  index_t size() const noexcept { return static_cast<index_t>(data.size()); }
  std::span<float const> span() const noexcept { return data.span(); }
  std::span<float> span() noexcept { return data.span(); }
  // Rank-2 view; a rank-3 tensor [a, b, c] is seen as [a·b, c].
  matrix_view<float const> matrix() const {
    index_t cols = shape.empty() ? 0 : shape.back();
    return matrix_view<float const>(data.data(), cols ? size() / cols : 0, cols);
  }
};

// A table of integer ids (the hash router's token → experts map).
struct IdTable {
  HostBuffer<std::int32_t> data;
  index_t rows = 0, cols = 0;
  std::span<std::int32_t const> row(index_t r) const {
    return {data.data() + r * cols, static_cast<std::size_t>(cols)};
  }
};

// One mHC site (§4): fn [(2 + n_hc)·n_hc, n_hc·D], base [(2 + n_hc)·n_hc], scale [3].
// The head hyper-connection (§4.3) has the same three parts with n_hc rows and one scale.
struct HyperConnectionWeights {
  Tensor fn, base, scale;
};

// A token-level compressor (§6.2): c = 2 (overlapping) for CSA, c = 1 for HCA; n = entry width.
struct CompressorWeights {
  Tensor wkv;    // [c·n, D]
  Tensor wgate;  // [c·n, D]
  Tensor ape;    // [ratio, c·n]
  Tensor norm;   // [n]
  index_t ratio = 0;
  index_t width = 0;  // n
  bool overlap = false;
};

// The Lightning Indexer of a CSA layer (§6.4).
struct IndexerWeights {
  Tensor wq_b;          // [n_I·d_I, q_lora_rank]
  Tensor weights_proj;  // [n_I, D]
  CompressorWeights compressor;
};

struct AttentionWeights {
  Tensor wq_a;     // [q_lora_rank, D]
  Tensor q_norm;   // [q_lora_rank]
  Tensor wq_b;     // [H·d, q_lora_rank]
  Tensor wkv;      // [d, D]
  Tensor kv_norm;  // [d]
  Tensor wo_a;     // [G·R, H·d/G]
  Tensor wo_b;     // [D, G·R]
  Tensor sink;     // [H]
  std::optional<CompressorWeights> compressor;  // CSA and HCA
  std::optional<IndexerWeights> indexer;        // CSA
};

// One SwiGLU expert: w1 (gate) and w3 (up) [I, D], w2 (down) [D, I].
struct ExpertWeights {
  Tensor w1, w3, w2;
};

struct MoeWeights {
  Tensor gate;     // [E, D]
  Tensor bias;     // [E] selection bias (learned routing); empty on hash layers
  IdTable tid2eid;  // [V, k] on hash layers
  std::vector<ExpertWeights> experts;
  ExpertWeights shared;
};

struct LayerWeights {
  Tensor attn_norm, ffn_norm;  // [D]
  HyperConnectionWeights hc_attn, hc_ffn;
  AttentionWeights attn;
  MoeWeights ffn;
};

struct Weights {
  Tensor embed;  // [V, D]
  Tensor head;   // [V, D]
  Tensor norm;   // [D]
  HyperConnectionWeights hc_head;
  std::vector<LayerWeights> layers;
};

namespace detail {

template <class Source>
CompressorWeights build_compressor(Config const& c, Source& src, std::string const& p, index_t ratio, index_t width,
                                   bool overlap) {
  index_t cn = (overlap ? 2 : 1) * width;
  CompressorWeights w;
  w.wkv = src.tensor(p + "wkv.weight", {cn, c.hidden_size});
  w.wgate = src.tensor(p + "wgate.weight", {cn, c.hidden_size});
  w.ape = src.tensor(p + "ape", {ratio, cn});
  w.norm = src.tensor(p + "norm.weight", {width});
  w.ratio = ratio;
  w.width = width;
  w.overlap = overlap;
  return w;
}

template <class Source>
ExpertWeights build_expert(Config const& c, Source& src, std::string const& p) {
  index_t D = c.hidden_size, I = c.moe_intermediate_size;
  return {src.tensor(p + "w1.weight", {I, D}), src.tensor(p + "w3.weight", {I, D}), src.tensor(p + "w2.weight", {D, I})};
}

template <class Source>
LayerWeights build_layer(Config const& c, Source& src, index_t i) {
  std::string p = "layers." + std::to_string(i) + ".";
  index_t D = c.hidden_size, H = c.num_attention_heads, d = c.head_dim, hc = c.hc_mult, mix = (2 + hc) * hc;
  LayerWeights l;
  l.attn_norm = src.tensor(p + "attn_norm.weight", {D});
  l.ffn_norm = src.tensor(p + "ffn_norm.weight", {D});
  for (auto [site, hcw] : {std::pair{"attn", &l.hc_attn}, std::pair{"ffn", &l.hc_ffn}}) {
    hcw->fn = src.tensor(p + "hc_" + site + "_fn", {mix, hc * D});
    hcw->base = src.tensor(p + "hc_" + site + "_base", {mix});
    hcw->scale = src.tensor(p + "hc_" + site + "_scale", {3});
  }

  std::string a = p + "attn.";
  AttentionWeights& at = l.attn;
  at.wq_a = src.tensor(a + "wq_a.weight", {c.q_lora_rank, D});
  at.q_norm = src.tensor(a + "q_norm.weight", {c.q_lora_rank});
  at.wq_b = src.tensor(a + "wq_b.weight", {H * d, c.q_lora_rank});
  at.wkv = src.tensor(a + "wkv.weight", {d, D});
  at.kv_norm = src.tensor(a + "norm.weight", {d});
  at.wo_a = src.tensor(a + "wo_a.weight", {c.o_groups * c.o_lora_rank, H * d / c.o_groups});
  at.wo_b = src.tensor(a + "wo_b.weight", {D, c.o_groups * c.o_lora_rank});
  at.sink = src.tensor(a + "attn_sink", {H});
  LayerKind kind = c.layer_types[static_cast<std::size_t>(i)];
  if (kind != LayerKind::sliding)
    at.compressor = build_compressor(c, src, a + "compressor.", c.compress_ratio(i), d, kind == LayerKind::csa);
  if (kind == LayerKind::csa) {
    IndexerWeights ix;
    ix.wq_b = src.tensor(a + "indexer.wq_b.weight", {c.index_n_heads * c.index_head_dim, c.q_lora_rank});
    ix.weights_proj = src.tensor(a + "indexer.weights_proj.weight", {c.index_n_heads, D});
    ix.compressor = build_compressor(c, src, a + "indexer.compressor.", c.compress_rate_csa, c.index_head_dim, true);
    at.indexer = std::move(ix);
  }

  std::string f = p + "ffn.";
  index_t E = c.n_routed_experts;
  l.ffn.gate = src.tensor(f + "gate.weight", {E, D});
  if (c.mlp_layer_types[static_cast<std::size_t>(i)] == MlpKind::hash_moe)
    l.ffn.tid2eid = src.ids(f + "gate.tid2eid", {c.vocab_size, c.num_experts_per_tok}, E);
  else
    l.ffn.bias = src.tensor(f + "gate.bias", {E});
  for (index_t e = 0; e < E; ++e) l.ffn.experts.push_back(build_expert(c, src, f + "experts." + std::to_string(e) + "."));
  l.ffn.shared = build_expert(c, src, f + "shared_experts.");
  return l;
}

}  // namespace detail

// Asks `source` for every tensor `config` needs, in upstream names and shapes.
template <class Source>
Weights build_weights(Config const& config, Source& source) {
  index_t V = config.vocab_size, D = config.hidden_size, hc = config.hc_mult;
  Weights w;
  w.embed = source.tensor("embed.weight", {V, D});
  w.head = source.tensor("head.weight", {V, D});
  w.norm = source.tensor("norm.weight", {D});
  w.hc_head.fn = source.tensor("hc_head_fn", {hc, hc * D});
  w.hc_head.base = source.tensor("hc_head_base", {hc});
  w.hc_head.scale = source.tensor("hc_head_scale", {1});
  for (index_t i = 0; i < config.num_hidden_layers; ++i) w.layers.push_back(detail::build_layer(config, source, i));
  return w;
}

}  // namespace flashmemory::models::deepseek_v4
