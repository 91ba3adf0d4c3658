// flashmemory/residency/sink.hpp — keep the pages of the first `chunks` chunks (attention sinks).
//
// The oldest chunks of a sequence often draw attention whatever the query. The published LSA keeps none
// ("measured 0 is best", lsa.md §2), so the default is 0.
#pragma once

#include <flashmemory/residency/concepts.hpp>

#include <algorithm>

namespace flashmemory::residency {

struct Sink {
  index_t chunks = 0;

  ResidentSet select(SelectionContext const& ctx) const {
    ResidentSet set;
    index_t last = std::min(chunks, ctx.num_chunks);
    for (index_t p = 0; p * ctx.chunks_per_page < last; ++p) set.pages.push_back(p);
    return set;
  }
};
static_assert(residency_policy<Sink>);

}  // namespace flashmemory::residency
