// flashmemory/models/deepseek_v4/cuda/weights.cuh — the model's parameters on the GPU, uploaded once from
// the host Weights (weights.hpp).
//
// Weight matrices are stored in the backend's storage type T (bf16 or float32); norm weights, mHC
// parameters, sinks, compressor position biases (ape) and router biases stay float32, as the reference
// keeps them (deepseek-v4.md §11.1). Matrices that read the same input are concatenated so that one pass
// streams them all:
//   proj_x [P_x, D]       wq_a | wkv | compressor wkv | compressor wgate | indexer wkv | indexer wgate | weights_proj
//   proj_q [P_q, q_lora]  wq_b | indexer wq_b
// (the compressor and indexer parts only on the layer kinds that have them). Routed experts and the shared
// expert are stacked as [E + 1, …] with the shared one last.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/cuda/detail/common.cuh>
#include <flashmemory/models/deepseek_v4/rope.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <span>
#include <string>
#include <vector>

namespace flashmemory::models::deepseek_v4::cuda {

template <class T>
using DeviceBuffer = ::flashmemory::cuda::DeviceBuffer<T>;

// Row offsets of the parts of proj_x (−1 where a layer has no such part) and its total rows.
struct ProjectionLayout {
  std::int64_t q_a = 0, kv = 0, comp_kv = -1, comp_gate = -1, index_kv = -1, index_gate = -1, index_weights = -1;
  std::int64_t rows = 0;     // P_x
  std::int64_t q = 0, index_q = -1;
  std::int64_t q_rows = 0;   // P_q
};

struct DeviceHyperConnection {
  DeviceBuffer<float> fn, base, scale;
};

template <storage_element T>
struct DeviceLayerWeights {
  DeviceBuffer<float> attn_norm, ffn_norm;
  DeviceHyperConnection hc_attn, hc_ffn;
  ProjectionLayout layout;
  DeviceBuffer<T> proj_x, proj_q, wo_a, wo_b;
  DeviceBuffer<float> q_norm, kv_norm, sink;
  DeviceBuffer<float> comp_ape, comp_norm, index_ape, index_norm;  // empty where absent
  DeviceBuffer<T> gate;
  DeviceBuffer<float> gate_bias;          // learned routing
  DeviceBuffer<std::int32_t> tid2eid;     // hash routing
  DeviceBuffer<T> w1, w3, w2;             // [E + 1, I, D], [E + 1, I, D], [E + 1, D, I]
};

template <storage_element T>
struct DeviceWeights {
  DeviceBuffer<T> embed, head;  // [V, D]
  DeviceBuffer<float> norm;     // [D]
  DeviceHyperConnection hc_head;
  std::vector<DeviceLayerWeights<T>> layers;
  DeviceBuffer<float> rope_main, rope_compress;  // inverse frequencies
  float rope_main_scale = 1.0f, rope_compress_scale = 1.0f;
};

namespace detail {

inline std::string layer_name(std::size_t l, char const* part) { return "layer " + std::to_string(l) + " " + part; }

// Converts and uploads the concatenation of `parts` (row-major matrices of equal width, or vectors).
template <class T>
DeviceBuffer<T> upload(std::vector<Tensor const*> const& parts, std::string const& what) {
  std::size_t n = 0;
  for (Tensor const* t : parts) n += t->data.size();
  HostBuffer<T> staging(n, what);
  std::size_t at = 0;
  for (Tensor const* t : parts)
    for (float v : t->data) {
      if constexpr (std::is_same_v<T, float>) staging[at++] = v;
      else staging[at++] = bfloat16::from_float(v);
    }
  DeviceBuffer<T> d(n, what);
  d.copy_from(staging.span());
  return d;
}

template <class T>
DeviceBuffer<T> upload(Tensor const& t, std::string const& what) {
  return upload<T>(std::vector<Tensor const*>{&t}, what);
}

inline DeviceHyperConnection upload_hc(HyperConnectionWeights const& w, std::string const& what) {
  return {upload<float>(w.fn, what + " fn"), upload<float>(w.base, what + " base"), upload<float>(w.scale, what + " scale")};
}

// One of w1, w3, w2 of every expert, the shared one last.
template <class T>
DeviceBuffer<T> upload_experts(MoeWeights const& m, Tensor ExpertWeights::*which, std::string const& what) {
  std::vector<Tensor const*> parts;
  for (auto const& e : m.experts) parts.push_back(&(e.*which));
  parts.push_back(&(m.shared.*which));
  return upload<T>(parts, what);
}

template <class T>
DeviceLayerWeights<T> upload_layer(Config const& c, LayerWeights const& w, std::size_t l) {
  DeviceLayerWeights<T> d;
  d.attn_norm = upload<float>(w.attn_norm, layer_name(l, "attn_norm"));
  d.ffn_norm = upload<float>(w.ffn_norm, layer_name(l, "ffn_norm"));
  d.hc_attn = upload_hc(w.hc_attn, layer_name(l, "hc_attn"));
  d.hc_ffn = upload_hc(w.hc_ffn, layer_name(l, "hc_ffn"));

  AttentionWeights const& a = w.attn;
  ProjectionLayout& p = d.layout;
  std::vector<Tensor const*> x_parts{&a.wq_a, &a.wkv};
  p.q_a = 0;
  p.kv = c.q_lora_rank;
  std::int64_t rows = p.kv + c.head_dim;
  auto add = [&](Tensor const& t, std::int64_t& offset) {
    offset = rows;
    rows += t.shape[0];
    x_parts.push_back(&t);
  };
  if (a.compressor) {
    add(a.compressor->wkv, p.comp_kv);
    add(a.compressor->wgate, p.comp_gate);
    d.comp_ape = upload<float>(a.compressor->ape, layer_name(l, "compressor ape"));
    d.comp_norm = upload<float>(a.compressor->norm, layer_name(l, "compressor norm"));
  }
  std::vector<Tensor const*> q_parts{&a.wq_b};
  p.q = 0;
  p.q_rows = a.wq_b.shape[0];
  if (a.indexer) {
    add(a.indexer->compressor.wkv, p.index_kv);
    add(a.indexer->compressor.wgate, p.index_gate);
    add(a.indexer->weights_proj, p.index_weights);
    d.index_ape = upload<float>(a.indexer->compressor.ape, layer_name(l, "indexer ape"));
    d.index_norm = upload<float>(a.indexer->compressor.norm, layer_name(l, "indexer norm"));
    p.index_q = p.q_rows;
    p.q_rows += a.indexer->wq_b.shape[0];
    q_parts.push_back(&a.indexer->wq_b);
  }
  p.rows = rows;
  d.proj_x = upload<T>(x_parts, layer_name(l, "attention input projections"));
  d.proj_q = upload<T>(q_parts, layer_name(l, "query projections"));
  d.wo_a = upload<T>(a.wo_a, layer_name(l, "wo_a"));
  d.wo_b = upload<T>(a.wo_b, layer_name(l, "wo_b"));
  d.q_norm = upload<float>(a.q_norm, layer_name(l, "q_norm"));
  d.kv_norm = upload<float>(a.kv_norm, layer_name(l, "kv_norm"));
  d.sink = upload<float>(a.sink, layer_name(l, "attn_sink"));

  MoeWeights const& m = w.ffn;
  d.gate = upload<T>(m.gate, layer_name(l, "router"));
  if (m.bias.size() > 0) {
    d.gate_bias = upload<float>(m.bias, layer_name(l, "router bias"));
  } else {
    d.tid2eid = DeviceBuffer<std::int32_t>(m.tid2eid.data.size(), layer_name(l, "tid2eid"));
    d.tid2eid.copy_from(m.tid2eid.data.span());
  }
  d.w1 = upload_experts<T>(m, &ExpertWeights::w1, layer_name(l, "experts w1"));
  d.w3 = upload_experts<T>(m, &ExpertWeights::w3, layer_name(l, "experts w3"));
  d.w2 = upload_experts<T>(m, &ExpertWeights::w2, layer_name(l, "experts w2"));
  return d;
}

inline DeviceBuffer<float> upload_rope(Rope const& r, std::string const& what) {
  DeviceBuffer<float> d(r.inv_freq().size(), what);
  d.copy_from(r.inv_freq());
  return d;
}

}  // namespace detail

// Uploads every parameter `config` needs (build_weights' shapes are assumed: weights come from it).
template <storage_element T>
DeviceWeights<T> upload_weights(Config const& c, Weights const& w) {
  if (static_cast<index_t>(w.layers.size()) != c.num_hidden_layers)
    fail(errc::bad_shape, "deepseek_v4 CUDA weights: ", w.layers.size(), " layers, the config has ", c.num_hidden_layers);
  DeviceWeights<T> d;
  d.embed = detail::upload<T>(w.embed, "embed");
  d.head = detail::upload<T>(w.head, "head");
  d.norm = detail::upload<float>(w.norm, "norm");
  d.hc_head = detail::upload_hc(w.hc_head, "hc_head");
  for (std::size_t l = 0; l < w.layers.size(); ++l) d.layers.push_back(detail::upload_layer<T>(c, w.layers[l], l));
  d.rope_main = detail::upload_rope(Rope(c.rope_main, c.qk_rope_head_dim), "main rope");
  d.rope_compress = detail::upload_rope(Rope(c.rope_compress, c.qk_rope_head_dim), "compress rope");
  d.rope_main_scale = static_cast<float>(c.rope_main.attention_factor);
  d.rope_compress_scale = static_cast<float>(c.rope_compress.attention_factor);
  return d;
}

}  // namespace flashmemory::models::deepseek_v4::cuda
