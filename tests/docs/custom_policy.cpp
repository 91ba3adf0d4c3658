// The user-defined residency policy of docs/concepts.md (nucleus_pages.hpp) does what it says.
#include "nucleus_pages.hpp"

#include <flashmemory/layout/f32_records.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>


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
