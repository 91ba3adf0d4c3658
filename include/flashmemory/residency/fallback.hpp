// flashmemory/residency/fallback.hpp — give up on sparsity when the scorer cannot decide (lsa.md §3, §6).
//
// When more than `limit` of the chunks score above `threshold` (the release uses limits of 0.15–0.30), the
// indexer is not separating the needed chunks from the rest — needle-style prompts do this — and the inner
// policy's set would either explode or miss what matters. Then, instead of the inner set:
//   FallbackMode::full    every page is resident (full attention for this window);
//   FallbackMode::widen   a bounded, wider budget: the ⌈widened_fraction · pages⌉ best pages by summed score
//                         (TopFraction). Compose outside the fallback what must always stay, e.g.
//                         Union<Fallback<Published>, RecencyTail>.
// The returned set says `fallback = true`, so the controller can count the windows where it fired.
// Scores must be probabilities. Note: `full` needs a reserve that holds the whole history.
#pragma once

#include <flashmemory/residency/concepts.hpp>
#include <flashmemory/residency/detail/select.hpp>
#include <flashmemory/residency/top_fraction.hpp>

namespace flashmemory::residency {

enum class FallbackMode { full, widen };

template <residency_policy Inner>
struct Fallback {
  Inner inner{};
  double limit = 0.2;
  FallbackMode mode = FallbackMode::full;
  double threshold = 0.5;
  double widened_fraction = 0.5;

  // Whether the fallback fires for these scores.
  bool fires(SelectionContext const& ctx) const {
    detail::require_probabilities(ctx, "Fallback");
    index_t above = 0;
    for (float s : ctx.scores) above += s > threshold;
    return ctx.num_chunks > 0 && static_cast<double>(above) > limit * static_cast<double>(ctx.num_chunks);
  }

  ResidentSet select(SelectionContext const& ctx) const {
    if (!fires(ctx)) return inner.select(ctx);
    ResidentSet set;
    if (mode == FallbackMode::full) {
      for (index_t p = 0; p < page_count(ctx); ++p) set.pages.push_back(p);
    } else {
      set = TopFraction{widened_fraction}.select(ctx);
    }
    set.fallback = true;
    return set;
  }
};

}  // namespace flashmemory::residency
