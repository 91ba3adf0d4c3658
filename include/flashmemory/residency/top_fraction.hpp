// flashmemory/residency/top_fraction.hpp — a fixed budget of pages, by score (equal-budget baselines).
//
// Keeps ⌈fraction · pages⌉ pages (or exactly `count` when it is positive), those with the highest sum of chunk scores (for probabilities: the
// expected number of needed chunks in the page); ties go to the newer page. With the same fraction, every
// scorer (recency, random, oracle, bounds, the Memory Indexer) gets the same GPU budget, which is how the
// baselines of lsa.md §5 are compared. Any scores work.
#pragma once

#include <flashmemory/residency/concepts.hpp>
#include <flashmemory/residency/detail/select.hpp>

#include <cmath>
#include <vector>

namespace flashmemory::residency {

struct TopFraction {
  double fraction = 0.1;
  index_t count = 0;  // a fixed number of pages instead of a fraction (the rest of a budget beside a tail)

  constexpr index_t budget(index_t pages) const {
    return count > 0 ? count : static_cast<index_t>(std::ceil(fraction * static_cast<double>(pages)));
  }

  ResidentSet select(SelectionContext const& ctx) const {
    detail::check_scores(ctx, "TopFraction");
    std::vector<double> sum(static_cast<std::size_t>(page_count(ctx)), 0.0);
    for (index_t c = 0; c < ctx.num_chunks; ++c) sum[static_cast<std::size_t>(c / ctx.chunks_per_page)] += ctx.scores[static_cast<std::size_t>(c)];
    return detail::best_pages(sum, budget(page_count(ctx)));
  }
};
static_assert(residency_policy<TopFraction>);

}  // namespace flashmemory::residency
