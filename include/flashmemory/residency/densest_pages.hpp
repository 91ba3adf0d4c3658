// flashmemory/residency/densest_pages.hpp — keep the pages with the most chunks above a threshold.
//
// LSA as deployed (lsa.md §2): a page's score is the number of its chunks whose probability exceeds
// `threshold`; the `kmax` densest pages are kept (ties: the newer page), pages with no such chunk never.
// The published KMAX is 96 / 192 / 384 pages at 256K / 512K / 1M tokens, i.e. 3/32 ≈ 9.4% of the history's
// pages; kmax = 0 (the default) means that fraction of the current history, `kmax_fraction`.
// Scores must be probabilities.
#pragma once

#include <flashmemory/residency/concepts.hpp>
#include <flashmemory/residency/detail/select.hpp>

#include <cmath>
#include <vector>

namespace flashmemory::residency {

struct DensestPages {
  index_t kmax = 0;
  double threshold = 0.5;
  double kmax_fraction = 3.0 / 32;

  // Pages kept for a history of `pages` pages.
  constexpr index_t budget(index_t pages) const {
    return kmax > 0 ? kmax : static_cast<index_t>(std::ceil(kmax_fraction * static_cast<double>(pages)));
  }

  ResidentSet select(SelectionContext const& ctx) const {
    detail::require_probabilities(ctx, "DensestPages");
    std::vector<double> density(static_cast<std::size_t>(page_count(ctx)), -INFINITY);
    for (index_t c = 0; c < ctx.num_chunks; ++c) {
      if (ctx.scores[static_cast<std::size_t>(c)] <= threshold) continue;
      double& d = density[static_cast<std::size_t>(c / ctx.chunks_per_page)];
      d = d == -INFINITY ? 1 : d + 1;
    }
    return detail::best_pages(density, budget(page_count(ctx)));
  }
};
static_assert(residency_policy<DensestPages>);

}  // namespace flashmemory::residency
