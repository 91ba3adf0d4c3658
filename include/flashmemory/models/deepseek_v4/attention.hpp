// flashmemory/models/deepseek_v4/attention.hpp — one attention sub-layer of any kind, over a chunk of tokens
// (deepseek-v4.md §5, §6).
//
// Projections run over the whole chunk; the cache is then advanced token by token in the order of §6.5
// (window latent → compressor → indexer compressor → selection → attention), which is what makes every
// chunking of a prompt give the same result. Core attention is fm::attention::SparseDecodeReference: the
// window ring ∪ selected pool rows ∪ the per-head sink in one softmax; CSA selection scores the index keys
// with fm::indexer::index_scores and keeps fm::indexer::top_k of them.
#pragma once

#include <flashmemory/attention/reference.hpp>
#include <flashmemory/config.hpp>
#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/indexer/reference.hpp>
#include <flashmemory/models/deepseek_v4/cache.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/detail/ops.hpp>
#include <flashmemory/models/deepseek_v4/rope.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <span>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

namespace detail {
// y [S, out] = x [S, in] · wᵀ into a fresh scratch matrix.
inline Scratch project(matrix_view<float const> x, Tensor const& w, std::string_view what) {
  Scratch y(x.extent(0), w.shape[0], what);
  linear(x, w.matrix(), y.view());
  return y;
}
}  // namespace detail

// out [S, D] = Attention(x [S, D]) for the tokens at positions cache.tokens … cache.tokens + S − 1, advancing
// the cache. `rope` is the layer's variant (main for sliding-only layers, compress otherwise).
inline void attention_forward(AttentionWeights const& w, Config const& c, Rope const& rope, LayerCache& cache,
                              matrix_view<float const> x, matrix_view<float> out) {
  using detail::Scratch;
  index_t S = x.extent(0), H = c.num_attention_heads, d = c.head_dim;
  double eps = c.rms_norm_eps;
  index_t pos0 = cache.tokens;

  // Queries (§5.1): low-rank, q_norm, per-head unweighted norm, RoPE. q_residual also feeds the indexer.
  Scratch q_residual = detail::project(x, w.wq_a, "q_residual");
  detail::rms_norm_rows(q_residual.view(), w.q_norm.span(), eps);
  Scratch q = detail::project(q_residual.cview(), w.wq_b, "queries");
  for (index_t s = 0; s < S; ++s)
    for (index_t h = 0; h < H; ++h) {
      auto head = q.row(s).subspan(static_cast<std::size_t>(h * d), static_cast<std::size_t>(d));
      detail::rms_norm(head, {}, eps);
      rope.apply(head, pos0 + s);
    }

  // Window latents (§5.2): K = V.
  Scratch kv = detail::project(x, w.wkv, "window latents");
  detail::rms_norm_rows(kv.view(), w.kv_norm.span(), eps);
  for (index_t s = 0; s < S; ++s) rope.apply(kv.row(s), pos0 + s);

  // Compressor and indexer projections (§6.2, §6.4).
  std::optional<Scratch> ckv, cgate, ikv, igate, iq, iw;
  if (w.compressor) {
    ckv = detail::project(x, w.compressor->wkv, "compressor values");
    cgate = detail::project(x, w.compressor->wgate, "compressor gates");
  }
  if (w.indexer) {
    ikv = detail::project(x, w.indexer->compressor.wkv, "indexer values");
    igate = detail::project(x, w.indexer->compressor.wgate, "indexer gates");
    iq = detail::project(q_residual.cview(), w.indexer->wq_b, "indexer queries");
    iw = detail::project(x, w.indexer->weights_proj, "indexer head weights");
    // Both constant factors of the score fold into the head weights: n_I^(−1/2) and d_I^(−1/2).
    auto fold = static_cast<float>(1.0 / std::sqrt(double(c.index_n_heads) * double(c.index_head_dim)));
    for (float& v : iw->data) v *= fold;
    for (index_t s = 0; s < S; ++s) rope.apply_heads(iq->row(s), c.index_head_dim, pos0 + s);
  }

  // Token by token: advance the cache, select, attend.
  Scratch o(S, H * d, "attention output");
  attention::SparseDecodeReference kernel;
  std::vector<std::int32_t> selected;
  std::vector<float> scores;
  for (index_t s = 0; s < S; ++s) {
    index_t pos = pos0 + s;
    auto row = kv.row(s);
    std::copy(row.begin(), row.end(), cache.window_row(pos).begin());
    cache.tokens = pos + 1;
    if (w.compressor) cache.compressor.push(*w.compressor, rope, eps, ckv->row(s), cgate->row(s));
    if (w.indexer) cache.indexer.push(w.indexer->compressor, rope, eps, ikv->row(s), igate->row(s));

    // Every emitted entry is causal for this token (w < ⌊(pos+1)/m⌋); CSA keeps the top-k by index score.
    index_t entries = w.compressor ? cache.compressor.count() : 0;
    selected.resize(static_cast<std::size_t>(entries));
    std::iota(selected.begin(), selected.end(), 0);
    if (w.indexer && entries > 0) {
      scores.resize(static_cast<std::size_t>(entries));
      indexer::index_scores(matrix_view<float const>(iq->row(s).data(), c.index_n_heads, c.index_head_dim),
                            vector_view<float const>(iw->row(s).data(), c.index_n_heads), cache.indexer.entries(), scores);
      selected = indexer::top_k(scores, c.index_topk);
    }

    std::int32_t window_len = static_cast<std::int32_t>(cache.window_rows());
    matrix_view<float const> pool = w.compressor ? cache.compressor.entries() : matrix_view<float const>(nullptr, 0, d);
    attention::SparseDecodeReference::Arguments args{
        .q = view<float const, 3>(q.row(s).data(), 1, H, d),
        .window = view<float const, 3>(cache.window.data(), 1, cache.window_size, d),
        .window_len = vector_view<std::int32_t const>(&window_len, 1),
        .pool = pool,
        .selected = matrix_view<std::int32_t const>(selected.data(), 1, static_cast<index_t>(selected.size())),
        .sink = vector_view<float const>(w.sink.data.data(), H),
        .out = view<float, 3>(o.row(s).data(), 1, H, d),
        .scale = static_cast<float>(1.0 / std::sqrt(double(d))),
    };
    kernel.run(args).throw_if_error();
  }

  // Undo the rope on the output (§5.4), then the grouped low-rank projection and wo_b.
  for (index_t s = 0; s < S; ++s) rope.apply_heads(o.row(s), d, pos0 + s, /*inverse=*/true);
  index_t G = c.o_groups, R = c.o_lora_rank, gin = H * d / G;
  Scratch grouped(S, G * R, "grouped projection");
  auto wo_a = w.wo_a.matrix();
  for (index_t s = 0; s < S; ++s)
    for (index_t g = 0; g < G; ++g)
      for (index_t r = 0; r < R; ++r)
        grouped.view()(s, g * R + r) = static_cast<float>(detail::dot(&wo_a(g * R + r, 0), o.row(s).data() + g * gin, gin));
  detail::linear(grouped.cview(), w.wo_b.matrix(), out);
}

}  // namespace flashmemory::models::deepseek_v4
