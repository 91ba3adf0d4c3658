// flashmemory/residency/concepts.hpp — the `residency_policy` concept: scores → resident set.
//
// The resident set is a set of pages (runs of chunks_per_page consecutive chunks): recall moves pages,
// and the chunk→cell table maps pages. A policy may reason per chunk (threshold, recency tail, sink) and
// then cover the chosen chunks with pages, or per page (densest pages).
//
// Requirements, for a const policy `p`:
//   p.select(ctx) -> ResidentSet   pages sorted ascending, without duplicates, each < page_count(ctx)
// Policies are plain value types with their knobs as public members; compose them with Union<...>
// (residency/union.hpp). Complexity: O(num_chunks) per window; runs on the host at window boundaries.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <algorithm>
#include <concepts>
#include <span>
#include <vector>

namespace flashmemory::residency {

struct SelectionContext {
  index_t num_chunks = 0;
  index_t chunks_per_page = 64;
  std::span<float const> scores;  // one per chunk, from an indexer_scorer
  bool probabilities = false;     // the scorer's kProbabilities
};

constexpr index_t page_count(SelectionContext const& ctx) {
  return (ctx.num_chunks + ctx.chunks_per_page - 1) / ctx.chunks_per_page;
}

struct ResidentSet {
  std::vector<index_t> pages;  // sorted, unique
  bool fallback = false;       // a Fallback policy fired: the scorer's set was replaced or widened

  bool contains_page(index_t page) const { return std::binary_search(pages.begin(), pages.end(), page); }
  friend bool operator==(ResidentSet const&, ResidentSet const&) = default;
};

template <class P>
concept residency_policy = std::copyable<P> && requires(P const& p, SelectionContext const& ctx) {
  { p.select(ctx) } -> std::same_as<ResidentSet>;
};

}  // namespace flashmemory::residency
