// flashmemory/residency/recency_tail.hpp — keep the pages that hold the newest `tail_chunks` chunks.
//
// The published default tail is 2048 chunks (8K tokens, lsa.md §2): what the scorer misses in the newest
// history is covered by it.
#pragma once

#include <flashmemory/residency/concepts.hpp>

namespace flashmemory::residency {

struct RecencyTail {
  index_t tail_chunks = 2048;

  ResidentSet select(SelectionContext const& ctx) const {
    ResidentSet set;
    if (ctx.num_chunks == 0 || tail_chunks <= 0) return set;
    index_t first_chunk = ctx.num_chunks > tail_chunks ? ctx.num_chunks - tail_chunks : 0;
    for (index_t p = first_chunk / ctx.chunks_per_page; p < page_count(ctx); ++p) set.pages.push_back(p);
    return set;
  }
};
static_assert(residency_policy<RecencyTail>);

}  // namespace flashmemory::residency
