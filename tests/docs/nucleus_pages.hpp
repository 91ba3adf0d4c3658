// A user-defined residency policy plugged into the Lookahead controller; docs/concepts.md quotes this file.
#pragma once

#include <flashmemory/indexer/oracle.hpp>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/residency/recency_tail.hpp>
#include <flashmemory/residency/union.hpp>

#include <algorithm>
#include <numeric>
#include <vector>

namespace fm = flashmemory;

// Keep the fewest pages that hold `mass` of the total score (a nucleus over pages, like the golden labels'
// p = 0.6 nucleus): rank pages by summed score, take them until the running sum reaches mass · total.
struct NucleusPages {
  double mass = 0.6;

  fm::residency::ResidentSet select(fm::residency::SelectionContext const& ctx) const {
    std::vector<double> sum(static_cast<std::size_t>(fm::residency::page_count(ctx)));
    for (fm::index_t c = 0; c < ctx.num_chunks; ++c) sum[c / ctx.chunks_per_page] += std::max(ctx.scores[c], 0.0f);
    std::vector<fm::index_t> order(sum.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](fm::index_t a, fm::index_t b) { return sum[a] > sum[b]; });
    double total = std::accumulate(sum.begin(), sum.end(), 0.0), kept = 0;
    fm::residency::ResidentSet set;
    for (fm::index_t p : order) {
      if (kept >= mass * total) break;
      kept += sum[p];
      set.pages.push_back(p);
    }
    std::sort(set.pages.begin(), set.pages.end());  // the contract: ascending, unique
    return set;
  }
};
static_assert(fm::residency::residency_policy<NucleusPages>);  // checked where it is defined

// Composed with the published recency tail and driven by the controller like any built-in policy.
using Policy = fm::residency::Union<NucleusPages, fm::residency::RecencyTail>;
using Lsa = fm::lsa::Lookahead<fm::indexer::Oracle, Policy, /*Tau=*/16>;
