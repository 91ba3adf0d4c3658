// flashmemory/indexer/reference.hpp — host references of index scoring and masked top-k.
//
// Both indexers of LSA score a chunk the same way (deepseek-v4.md §6.4, lsa.md §3):
//   logit(q, k) = Σ_h w_h · ReLU(⟨q_h, k⟩)
// with queries q [H, d], per-head weights w [H] (any constant factors folded in by the caller) and one
// index key k [d] per chunk. The native Lightning Indexer ranks chunks by it every step; the Memory Indexer
// applies a sigmoid once per window. These plain loops are the oracles of the CUDA kernels.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/detail/dot.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

namespace flashmemory::indexer {

// scores[c] = Σ_h w[h] · ReLU(⟨q[h], keys[c]⟩), accumulated in double.
inline void index_scores(matrix_view<float const> q, vector_view<float const> w, matrix_view<float const> keys,
                         std::span<float> scores) {
  index_t H = q.extent(0), d = q.extent(1), n = keys.extent(0);
  if (w.extent(0) != H || (n > 0 && keys.extent(1) != d) || static_cast<index_t>(scores.size()) != n)
    fail(errc::bad_shape, "index_scores: q [", H, ", ", d, "], w [", w.extent(0), "], keys [", n, ", ",
         keys.extent(1), "], scores [", scores.size(), "] disagree");
  for (index_t c = 0; c < n; ++c) {
    double total = 0;
    for (index_t h = 0; h < H; ++h) {
      total += double(w(h)) * std::max(::flashmemory::detail::dot(&q(h, 0), &keys(c, 0), d), 0.0);
    }
    scores[static_cast<std::size_t>(c)] = static_cast<float>(total);
  }
}

// Indices of the k largest scores among those with allowed[c] (all when `allowed` is empty), ordered by
// descending score; ties go to the lower index. Returns fewer than k when fewer are allowed. −∞ scores
// are never selected.
inline std::vector<std::int32_t> top_k(std::span<float const> scores, index_t k, std::span<std::uint8_t const> allowed = {}) {
  std::vector<std::int32_t> idx;
  for (std::size_t c = 0; c < scores.size(); ++c)
    if ((allowed.empty() || allowed[c]) && scores[c] > -std::numeric_limits<float>::infinity())
      idx.push_back(static_cast<std::int32_t>(c));
  auto better = [&](std::int32_t a, std::int32_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); };
  std::size_t keep = std::min<std::size_t>(idx.size(), static_cast<std::size_t>(std::max<index_t>(k, 0)));
  std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(keep), idx.end(), better);
  idx.resize(keep);
  return idx;
}

}  // namespace flashmemory::indexer
