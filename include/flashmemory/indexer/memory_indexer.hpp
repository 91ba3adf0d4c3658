// flashmemory/indexer/memory_indexer.hpp — the Memory Indexer, LSA's trained Level-1 scorer (lsa.md §3).
//
// Per target CSA layer, a query tower shaped like a Lightning Indexer with its own weights scores every chunk
// against that layer's frozen index keys (there is no key tower). For the hidden state x [D] entering the
// layer's attention at the window boundary (position t):
//   a      = RMSNorm(W_qa · x) · g                       eps 1e-6, learned gain g = q_norm_weight   [rank]
//   q      = W_qb · a                                    reshaped [H, d]
//   q_h    ← RoPE(q_h, t) on its last rope_dim channels  interleaved pairs, compress rope (YaRN)
//   q_h    ← Hadamard(q_h) / sqrt(d)                     optional: only when the stored keys are rotated too
//   w      = (W_w · x) · d^(-1/2) · H^(-1/2)             [H]
//   logit  = Σ_h w_h · ReLU(⟨q_h, k⟩) + b                (fm::indexer::index_scores), score = sigmoid(logit)
// and the target layers are combined per chunk by max (published) or mean. Scores are probabilities.
//
// Weights, per target layer L (released checkpoints: L ∈ {10, 12, 20}, the CSA-layer indices), float32 rows
// in PyTorch's [out, in] layout:
//   retrievers.l{L}.wq_a.weight           [rank, D]
//   retrievers.l{L}.q_norm_weight         [rank]
//   retrievers.l{L}.wq_b.weight           [H·d, rank]
//   retrievers.l{L}.weights_proj.weight   [H, D]
//   retrievers.l{L}.bias                  [1]     optional (0 when absent; the released towers have none)
// The bias b calibrates the sigmoid without touching the ranking: a tower started from the model's own
// Lightning Indexer ranks well but has no offset to put its threshold at 0.5 (tools/train_indexer.py).
// load() reads them from anything with read_float(name, shape) and contains(name) (io::SafetensorsFile,
// io::Checkpoint).
#pragma once

#include <flashmemory/core/error.hpp>
#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/core/rope.hpp>
#include <flashmemory/indexer/concepts.hpp>
#include <flashmemory/indexer/reference.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace flashmemory::indexer {

// x ← H_n · x / sqrt(n): the normalised Walsh–Hadamard transform (Sylvester, natural order) of a vector whose
// length is a power of two. Orthonormal and symmetric, so rotating both q and k leaves ⟨q, k⟩ unchanged.
inline void hadamard(std::span<float> x) {
  std::size_t n = x.size();
  if (!std::has_single_bit(n)) fail(errc::invalid_argument, "hadamard: length ", n, " is not a power of two");
  for (std::size_t half = 1; half < n; half *= 2)
    for (std::size_t i = 0; i < n; i += 2 * half)
      for (std::size_t j = i; j < i + half; ++j) {
        float a = x[j], b = x[j + half];
        x[j] = a + b, x[j + half] = a - b;
      }
  float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  for (float& v : x) v *= scale;
}

enum class LayerCombine { max, mean };

struct MemoryIndexerConfig {
  index_t hidden_size = 4096;  // D
  index_t rank = 2048;         // W_qa rows (older checkpoints: 1024)
  index_t heads = 128;         // H (older checkpoints: 64)
  index_t head_dim = 128;      // d, the index key width
  index_t rope_dim = 64;
  // The compress rope of DeepSeek-V4 (deepseek-v4.md §2.2): θ 160000, YaRN factor 16 from 65536, β 32 / 1.
  RopeParameters rope{.theta = 160000.0, .yarn = true, .factor = 16.0,
                                           .original_max_position_embeddings = 65536.0, .beta_fast = 32.0,
                                           .beta_slow = 1.0, .attention_factor = 1.0};
  bool hadamard = true;  // rotate q; set when the stored index keys are Hadamard-rotated
  double eps = 1e-6;
  LayerCombine combine = LayerCombine::max;
};

// One target layer's query tower, float32, [out, in] rows.
struct MemoryIndexerLayer {
  HostBuffer<float> wq_a;          // [rank, D]
  HostBuffer<float> q_norm;        // [rank]
  HostBuffer<float> wq_b;          // [H·d, rank]
  HostBuffer<float> weights_proj;  // [H, D]
  float bias = 0.0f;               // logit offset
};

// Anything that hands out float tensors by name, checking their shape.
template <class F>
concept tensor_source = requires(F const& f, std::string const& name, std::vector<std::int64_t> const& shape) {
  { f.read_float(name, shape) } -> std::same_as<HostBuffer<float>>;
  { f.contains(name) } -> std::convertible_to<bool>;
};

class MemoryIndexer {
 public:
  static constexpr bool kProbabilities = true;

  MemoryIndexer(MemoryIndexerConfig config, std::vector<MemoryIndexerLayer> layers)
      : config_(std::move(config)), layers_(std::move(layers)), rope_(config_.rope, config_.rope_dim) {
    auto const& c = config_;
    if (layers_.empty()) fail(errc::invalid_argument, "MemoryIndexer: no target layers");
    if (c.rope_dim > c.head_dim || c.rope_dim % 2 || (c.hadamard && !std::has_single_bit(static_cast<std::uint64_t>(c.head_dim))))
      fail(errc::invalid_argument, "MemoryIndexer: head_dim ", c.head_dim, " with rope_dim ", c.rope_dim,
           c.hadamard ? " (Hadamard needs a power-of-two head_dim)" : "");
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      auto const& w = layers_[l];
      auto expect = [&](HostBuffer<float> const& t, index_t n, char const* name) {
        if (static_cast<index_t>(t.size()) != n)
          fail(errc::bad_shape, "MemoryIndexer layer ", l, ": ", name, " has ", t.size(), " values, expected ", n);
      };
      expect(w.wq_a, c.rank * c.hidden_size, "wq_a");
      expect(w.q_norm, c.rank, "q_norm_weight");
      expect(w.wq_b, c.heads * c.head_dim * c.rank, "wq_b");
      expect(w.weights_proj, c.heads * c.hidden_size, "weights_proj");
    }
  }

  // Reads `retrievers.l{L}.*` for each L of `retriever_ids`, in that order (one per target layer).
  template <tensor_source File>
  static MemoryIndexer load(File const& file, MemoryIndexerConfig const& c, std::span<index_t const> retriever_ids) {
    std::vector<MemoryIndexerLayer> layers;
    for (index_t id : retriever_ids) {
      std::string p = "retrievers.l" + std::to_string(id) + ".";
      layers.push_back({file.read_float(p + "wq_a.weight", {c.rank, c.hidden_size}),
                        file.read_float(p + "q_norm_weight", {c.rank}),
                        file.read_float(p + "wq_b.weight", {c.heads * c.head_dim, c.rank}),
                        file.read_float(p + "weights_proj.weight", {c.heads, c.hidden_size}),
                        file.contains(p + "bias") ? file.read_float(p + "bias", {1})[0] : 0.0f});
    }
    return MemoryIndexer(c, std::move(layers));
  }

  MemoryIndexerConfig const& config() const noexcept { return config_; }
  index_t layers() const noexcept { return static_cast<index_t>(layers_.size()); }

  // The query q [H·d] (roped, rotated) and head weights w [H] (scaled) of target layer `l` for hidden state x.
  void project(index_t l, std::span<float const> x, index_t position, std::span<float> q, std::span<float> w) const {
    auto const& c = config_;
    auto const& t = layers_.at(static_cast<std::size_t>(l));
    if (static_cast<index_t>(x.size()) != c.hidden_size || static_cast<index_t>(q.size()) != c.heads * c.head_dim ||
        static_cast<index_t>(w.size()) != c.heads)
      fail(errc::bad_shape, "MemoryIndexer: hidden [", x.size(), "] (expected ", c.hidden_size, "), query [", q.size(),
           "] (", c.heads * c.head_dim, "), weights [", w.size(), "] (", c.heads, ")");
    std::vector<float> a(static_cast<std::size_t>(c.rank));
    matvec(t.wq_a.data(), x, a);
    double ss = 0;
    for (float v : a) ss += double(v) * v;
    float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(c.rank) + c.eps));
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = t.q_norm[i] * (a[i] * r);
    matvec(t.wq_b.data(), a, q);
    rope_.apply_heads(q, c.head_dim, position);
    if (c.hadamard)
      for (index_t h = 0; h < c.heads; ++h) hadamard(q.subspan(static_cast<std::size_t>(h * c.head_dim), static_cast<std::size_t>(c.head_dim)));
    matvec(t.weights_proj.data(), x, w);
    float fold = static_cast<float>(1.0 / std::sqrt(double(c.head_dim) * double(c.heads)));
    for (float& v : w) v *= fold;
  }

  void score(ScoringContext const& ctx, std::span<float> scores) const {
    if (static_cast<index_t>(ctx.layers.size()) != layers())
      fail(errc::invalid_argument, "MemoryIndexer: ", layers(), " target layers, the context has ", ctx.layers.size());
    std::size_t n = static_cast<std::size_t>(ctx.num_chunks);
    std::vector<float> q(static_cast<std::size_t>(config_.heads * config_.head_dim)), w(static_cast<std::size_t>(config_.heads)), logits(n);
    for (index_t l = 0; l < layers(); ++l) {
      auto const& layer = ctx.layers[static_cast<std::size_t>(l)];
      project(l, {layer.hidden.data_handle(), static_cast<std::size_t>(layer.hidden.extent(0))}, ctx.position, q, w);
      index_scores(matrix_view<float const>(q.data(), config_.heads, config_.head_dim),
                   vector_view<float const>(w.data(), config_.heads), layer.keys, logits);
      double const bias = layers_[static_cast<std::size_t>(l)].bias;
      for (std::size_t c = 0; c < n; ++c) {
        float p = static_cast<float>(1.0 / (1.0 + std::exp(-(double(logits[c]) + bias))));
        if (l == 0) scores[c] = p;
        else if (config_.combine == LayerCombine::max) scores[c] = std::max(scores[c], p);
        else scores[c] += p;
      }
    }
    if (config_.combine == LayerCombine::mean && layers() > 1)
      for (std::size_t c = 0; c < n; ++c) scores[c] /= static_cast<float>(layers());
  }

 private:
  // y = W · x for W [y.size(), x.size()], accumulated in double.
  static void matvec(float const* W, std::span<float const> x, std::span<float> y) {
    for (std::size_t o = 0; o < y.size(); ++o)
      y[o] = static_cast<float>(::flashmemory::detail::dot(W + o * x.size(), x.data(), static_cast<index_t>(x.size())));
  }

  MemoryIndexerConfig config_;
  std::vector<MemoryIndexerLayer> layers_;
  Rope rope_;
};
static_assert(indexer_scorer<MemoryIndexer>);

}  // namespace flashmemory::indexer
