// flashmemory/indexer/recency.hpp — the recency baseline: newer chunks score higher.
//
// Scores are ranks scaled to (0, 1]: chunk c of n scores (c + 1) / n. With a fixed-budget policy this keeps
// the newest chunks, the "Recency" row of the published ablation.
#pragma once

#include <flashmemory/indexer/concepts.hpp>

namespace flashmemory::indexer {

struct Recency {
  static constexpr bool kProbabilities = false;

  void score(ScoringContext const& ctx, std::span<float> scores) const {
    for (index_t c = 0; c < ctx.num_chunks; ++c)
      scores[static_cast<std::size_t>(c)] = static_cast<float>(c + 1) / static_cast<float>(ctx.num_chunks);
  }
};
static_assert(indexer_scorer<Recency>);

}  // namespace flashmemory::indexer
