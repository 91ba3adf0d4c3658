// flashmemory/indexer/minmax_bounds.hpp — Quest-style page bounds of the native index score.
//
// For each page, the elementwise minimum m and maximum M of its chunks' index keys bound every key k of the
// page: m ≤ k ≤ M. For a query head q_h, ⟨q_h, k⟩ is then at most U_h = Σ_i max(q_hi·m_i, q_hi·M_i) and at
// least L_h = Σ_i min(q_hi·m_i, q_hi·M_i). Since ReLU is monotone, the native score
//   Σ_h w_h · ReLU(⟨q_h, k⟩)
// of any chunk of the page is at most Σ_h (w_h ≥ 0 ? w_h·ReLU(U_h) : w_h·ReLU(L_h)). Every chunk gets its
// page's bound (the maximum over target layers); a budget policy (TopFraction) then keeps the pages whose
// best chunk could score highest. Needs ScoringLayer::query and head_weights. Not probabilities.
#pragma once

#include <flashmemory/core/error.hpp>
#include <flashmemory/indexer/concepts.hpp>

#include <algorithm>
#include <limits>
#include <vector>

namespace flashmemory::indexer {

struct MinMaxBounds {
  static constexpr bool kProbabilities = false;
  index_t chunks_per_page = 64;

  void score(ScoringContext const& ctx, std::span<float> scores) const {
    std::fill(scores.begin(), scores.begin() + ctx.num_chunks, -std::numeric_limits<float>::infinity());
    for (std::size_t l = 0; l < ctx.layers.size(); ++l) score_layer(ctx.layers[l], l, ctx.num_chunks, scores);
  }

 private:
  void score_layer(ScoringLayer const& layer, std::size_t l, index_t n, std::span<float> scores) const {
    index_t H = layer.query.extent(0), d = layer.query.extent(1);
    if (H == 0 || layer.head_weights.extent(0) != H || layer.keys.extent(0) != n || (n > 0 && layer.keys.extent(1) != d))
      fail(errc::bad_shape, "MinMaxBounds: layer ", l, " needs query [H, d] and head_weights [H] with keys [", n,
           ", d]; given query [", H, ", ", d, "], head_weights [", layer.head_weights.extent(0), "], keys [",
           layer.keys.extent(0), ", ", layer.keys.extent(1), "]");
    std::vector<double> lo(static_cast<std::size_t>(d)), hi(static_cast<std::size_t>(d));
    for (index_t first = 0; first < n; first += chunks_per_page) {
      index_t last = std::min(first + chunks_per_page, n);
      for (index_t i = 0; i < d; ++i) {
        lo[i] = hi[i] = layer.keys(first, i);
        for (index_t c = first + 1; c < last; ++c) lo[i] = std::min<double>(lo[i], layer.keys(c, i)), hi[i] = std::max<double>(hi[i], layer.keys(c, i));
      }
      double bound = 0;
      for (index_t h = 0; h < H; ++h) {
        double upper = 0, lower = 0;
        for (index_t i = 0; i < d; ++i) {
          double a = layer.query(h, i) * lo[i], b = layer.query(h, i) * hi[i];
          upper += std::max(a, b), lower += std::min(a, b);
        }
        double w = layer.head_weights(h);
        bound += w * std::max(w >= 0 ? upper : lower, 0.0);
      }
      for (index_t c = first; c < last; ++c)
        scores[static_cast<std::size_t>(c)] = std::max(scores[static_cast<std::size_t>(c)], static_cast<float>(bound));
    }
  }
};
static_assert(indexer_scorer<MinMaxBounds>);

}  // namespace flashmemory::indexer
