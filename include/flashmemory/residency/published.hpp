// flashmemory/residency/published.hpp — the residency policies of the FlashMemory-DeepSeek-V4 release
// (lsa.md §2), as named defaults.
//
//   Published             the deployed, page-granular rule: the densest pages (KMAX ≈ 9.4% of the history,
//                         chunks above 0.5) ∪ the pages of the newest 2048 chunks (8K tokens) ∪ a sink of 0.
//   ThresholdRecencySink  the chunk-level rule it approximates: every chunk above 0.5 (covered by pages)
//                         ∪ the same tail ∪ the same sink.
#pragma once

#include <flashmemory/residency/densest_pages.hpp>
#include <flashmemory/residency/recency_tail.hpp>
#include <flashmemory/residency/sink.hpp>
#include <flashmemory/residency/threshold.hpp>
#include <flashmemory/residency/union.hpp>

namespace flashmemory::residency {

using Published = Union<DensestPages, RecencyTail, Sink>;
using ThresholdRecencySink = Union<Threshold, RecencyTail, Sink>;

static_assert(residency_policy<Published>);
static_assert(residency_policy<ThresholdRecencySink>);

}  // namespace flashmemory::residency
