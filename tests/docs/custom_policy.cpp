// A user-defined residency policy, plugged into the Lookahead controller (quoted by docs/concepts.md).
#include <flashmemory/indexer/oracle.hpp>
#include <flashmemory/layout/f32_records.hpp>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/residency/recency_tail.hpp>
#include <flashmemory/residency/union.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

namespace fm = flashmemory;

// [custom-policy]
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
// [custom-policy]

TEST_CASE("the custom policy keeps a minimal nucleus of pages and runs inside Lookahead", "[docs]") {
  std::mt19937 rng(1);
  std::vector<float> labels(640);
  for (float& l : labels) l = std::bernoulli_distribution(0.05)(rng);
  fm::residency::SelectionContext ctx{.num_chunks = 640, .chunks_per_page = 64, .scores = labels, .probabilities = true};
  auto set = NucleusPages{0.6}.select(ctx);
  std::vector<double> sum(10);
  for (int c = 0; c < 640; ++c) sum[c / 64] += labels[c];
  double total = std::accumulate(sum.begin(), sum.end(), 0.0), kept = 0, smallest = total;
  for (auto p : set.pages) {
    kept += sum[p];
    smallest = std::min(smallest, sum[p]);
  }
  CHECK(kept >= 0.6 * total);
  CHECK(kept - smallest < 0.6 * total);  // minimal: without its lightest page the set falls short
  CHECK(set.pages.size() < 10);

  fm::layout::F32Records entry(8), key(8);
  Lsa lsa({}, Policy{NucleusPages{0.6}, fm::residency::RecencyTail{64}}, entry, key, {.csa_layers = 1, .reserve_cells = 10});
  std::vector<float> e(8, 1.0f);
  for (int c = 0; c < 640; ++c) lsa.append(0, e, e);
  lsa.offer_future(labels);
  lsa.end_step(2560);
  auto want = set.pages;
  if (!std::binary_search(want.begin(), want.end(), 9)) want.push_back(9);  // the tail's page
  std::sort(want.begin(), want.end());
  CHECK(lsa.resident_set().pages == want);
}
