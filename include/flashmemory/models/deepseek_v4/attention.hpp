// flashmemory/models/deepseek_v4/attention.hpp — one attention sub-layer of any kind, over a chunk of tokens
// (deepseek-v4.md §5, §6).
//
// Projections run over the whole chunk; the cache is then advanced token by token in the order of §6.5
// (window latent → compressor → indexer compressor → selection → attention), which is what makes every
// chunking of a prompt give the same result. Core attention is fm::attention::SparseDecodeReference: the
// window ring ∪ selected pool rows ∪ the per-head sink in one softmax.
//
// CSA layers go through the sequence's kv_controller (lsa/concepts.hpp): each emitted chunk (attention entry
// and index key) is appended to it; every token, the controller scores the chunks it can read with the native
// Lightning Indexer (its query and head weights), selects their top-k and gathers the selected entries, which
// attention reads. With FullResidentKv that is the native top-k over all entries; with an lsa::Lookahead, the
// top-k among the resident chunks, read from its reserve. At a window boundary the layer also offers Level 1
// its input (the last token's attention input x, indexer query and head weights).
#pragma once

#include <flashmemory/attention/reference.hpp>
#include <flashmemory/config.hpp>
#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/lsa/concepts.hpp>
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

// A CSA layer's view of the sequence's kv_controller: its layer number among the CSA layers, and whether the
// running step ends a window (then the layer offers its Level-1 input).
template <lsa::kv_controller Kv>
struct CsaKv {
  Kv& kv;
  index_t layer = -1;
  bool boundary = false;
};

// out [S, D] = Attention(x [S, D]) for the tokens at positions cache.tokens … cache.tokens + S − 1, advancing
// the cache. `rope` is the layer's variant (main for sliding-only layers, compress otherwise); `csa` serves CSA
// layers only.
template <lsa::kv_controller Kv>
void attention_forward(AttentionWeights const& w, Config const& c, Rope const& rope, LayerCache& cache,
                       matrix_view<float const> x, matrix_view<float> out, CsaKv<Kv> csa) {
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
    if (csa.boundary)
      csa.kv.offer(csa.layer, {.hidden = {&x(S - 1, 0), static_cast<std::size_t>(x.extent(1))},
                               .query = iq->row(S - 1),
                               .head_weights = iw->row(S - 1)});
  }

  // Token by token: advance the cache, select, attend.
  Scratch o(S, H * d, "attention output");
  attention::SparseDecodeReference kernel;
  std::vector<std::int32_t> selected;
  std::vector<float> scores, gathered;
  for (index_t s = 0; s < S; ++s) {
    index_t pos = pos0 + s;
    auto row = kv.row(s);
    std::copy(row.begin(), row.end(), cache.window_row(pos).begin());
    cache.tokens = pos + 1;
    bool emitted = w.compressor && cache.compressor.push(*w.compressor, rope, eps, ckv->row(s), cgate->row(s));
    if (w.indexer) {
      cache.indexer.push(w.indexer->compressor, rope, eps, ikv->row(s), igate->row(s));  // emits with the entry
      if (emitted) csa.kv.append(csa.layer, cache.compressor.last(), cache.indexer.last());
    }

    // Every emitted entry is causal for this token (w < ⌊(pos+1)/m⌋): HCA reads all of them from its pool; CSA
    // the top-k by index score among those the controller can read, gathered into a pool of their own.
    matrix_view<float const> pool = w.compressor ? cache.compressor.entries() : matrix_view<float const>(nullptr, 0, d);
    if (w.indexer) {
      scores.resize(static_cast<std::size_t>(cache.indexer.count()));
      csa.kv.score(csa.layer, matrix_view<float const>(iq->row(s).data(), c.index_n_heads, c.index_head_dim),
                   vector_view<float const>(iw->row(s).data(), c.index_n_heads), scores);
      lsa::Selection chosen = csa.kv.select(csa.layer, scores, c.index_topk);
      auto k = static_cast<index_t>(chosen.rows.size());
      gathered.resize(static_cast<std::size_t>(k * d));
      csa.kv.gather(csa.layer, chosen.rows, matrix_view<float>(gathered.data(), k, d));
      pool = matrix_view<float const>(gathered.data(), k, d);
    }
    selected.resize(static_cast<std::size_t>(pool.extent(0)));
    std::iota(selected.begin(), selected.end(), 0);

    std::int32_t window_len = static_cast<std::int32_t>(cache.window_rows());
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
