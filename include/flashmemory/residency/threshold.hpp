// flashmemory/residency/threshold.hpp — keep every chunk whose score is above a threshold (lsa.md §2).
//
// The chunk-level rule of LSA's Level 1: a chunk stays when its probability exceeds `threshold` (published
// 0.5); the chosen chunks are then covered with pages. Scores must be probabilities (the scorer's
// kProbabilities), otherwise select() fails: a threshold on unnormalised logits means nothing.
#pragma once

#include <flashmemory/residency/concepts.hpp>
#include <flashmemory/residency/detail/select.hpp>

namespace flashmemory::residency {

struct Threshold {
  double threshold = 0.5;

  ResidentSet select(SelectionContext const& ctx) const {
    detail::require_probabilities(ctx, "Threshold");
    return detail::pages_above(ctx, threshold);
  }
};
static_assert(residency_policy<Threshold>);

}  // namespace flashmemory::residency
