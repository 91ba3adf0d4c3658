// flashmemory/indexer/random.hpp — the random baseline: every chunk scores uniformly in [0, 1).
//
// With a fixed budget (residency::TopFraction) it keeps a random set of pages of that size, the
// "Random-10%" row of the published comparison (lsa.md §5). Seeded, so runs repeat. The scores are not
// probabilities of anything: threshold policies refuse them.
#pragma once

#include <flashmemory/indexer/concepts.hpp>

#include <cstdint>
#include <random>

namespace flashmemory::indexer {

class Random {
 public:
  static constexpr bool kProbabilities = false;

  explicit Random(std::uint64_t seed = 0) : rng_(seed) {}

  void score(ScoringContext const& ctx, std::span<float> scores) {
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (index_t c = 0; c < ctx.num_chunks; ++c) scores[static_cast<std::size_t>(c)] = u(rng_);
  }

 private:
  std::mt19937_64 rng_;
};
static_assert(indexer_scorer<Random>);

}  // namespace flashmemory::indexer
