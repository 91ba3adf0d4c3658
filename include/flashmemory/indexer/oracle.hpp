// flashmemory/indexer/oracle.hpp — the oracle: scores are the labels of the future (evaluation only).
//
// ctx.future[c] is 1 when the native top-k of the next τ steps picks chunk c (an evaluation harness computes
// it by running ahead with full attention). The oracle bounds what any scorer can reach at a given budget.
// Its scores are probabilities (0 or 1), so Threshold{0.5} keeps exactly the needed chunks.
#pragma once

#include <flashmemory/core/error.hpp>
#include <flashmemory/indexer/concepts.hpp>

#include <algorithm>

namespace flashmemory::indexer {

struct Oracle {
  static constexpr bool kProbabilities = true;

  void score(ScoringContext const& ctx, std::span<float> scores) const {
    if (static_cast<index_t>(ctx.future.size()) != ctx.num_chunks)
      fail(errc::invalid_argument, "Oracle: needs future labels for all ", ctx.num_chunks, " chunks, given ",
           ctx.future.size(), " (evaluation only: the harness must fill ScoringContext::future)");
    std::copy(ctx.future.begin(), ctx.future.end(), scores.begin());
  }
};
static_assert(indexer_scorer<Oracle>);

}  // namespace flashmemory::indexer
