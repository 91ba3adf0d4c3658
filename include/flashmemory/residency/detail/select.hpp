// flashmemory/residency/detail/select.hpp — shared pieces of the policies: input checks, covering chunks with
// pages, and ranking pages. Not part of the API.
#pragma once

#include <flashmemory/core/error.hpp>
#include <flashmemory/residency/concepts.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

namespace flashmemory::residency::detail {

inline void check_scores(SelectionContext const& ctx, char const* policy) {
  if (ctx.chunks_per_page <= 0 || ctx.num_chunks < 0 || static_cast<index_t>(ctx.scores.size()) != ctx.num_chunks)
    fail(errc::bad_shape, policy, ": ", ctx.scores.size(), " scores for ", ctx.num_chunks, " chunks in pages of ",
         ctx.chunks_per_page);
}
// A threshold on scores means something only for probabilities (sigmoid outputs).
inline void require_probabilities(SelectionContext const& ctx, char const* policy) {
  check_scores(ctx, policy);
  if (!ctx.probabilities)
    fail(errc::invalid_argument, policy, ": thresholds need probability scores, and this scorer's are not "
         "(kProbabilities = false); use a budget policy such as TopFraction or DensestPages with a probability scorer");
}

// The pages holding a chunk with score > threshold, ascending.
inline ResidentSet pages_above(SelectionContext const& ctx, double threshold) {
  ResidentSet set;
  for (index_t c = 0; c < ctx.num_chunks; ++c) {
    index_t p = c / ctx.chunks_per_page;
    if (ctx.scores[static_cast<std::size_t>(c)] > threshold && (set.pages.empty() || set.pages.back() != p)) set.pages.push_back(p);
  }
  return set;
}

// The `keep` pages of highest `page_score` (> −∞ only), ties to the newer page; returned ascending.
inline ResidentSet best_pages(std::vector<double> const& page_score, index_t keep) {
  std::vector<index_t> order;
  for (std::size_t p = 0; p < page_score.size(); ++p)
    if (page_score[p] > -INFINITY) order.push_back(static_cast<index_t>(p));
  auto better = [&](index_t a, index_t b) {
    double sa = page_score[static_cast<std::size_t>(a)], sb = page_score[static_cast<std::size_t>(b)];
    return sa > sb || (sa == sb && a > b);
  };
  std::size_t n = std::min(order.size(), static_cast<std::size_t>(std::max<index_t>(keep, 0)));
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(), better);
  order.resize(n);
  std::sort(order.begin(), order.end());
  return {order};
}

}  // namespace flashmemory::residency::detail
