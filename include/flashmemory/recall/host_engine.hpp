// flashmemory/recall/host_engine.hpp — the host reference of executing a recall plan.
//
// The order is the one the CUDA engine keeps with a copy stream and an event (lsa.md §6: never a torn read):
//   1. retire   the evicted pages leave the table, which is published at once: readers lose those pages
//               (they are masked out) before their cells are overwritten;
//   2. copy     each fetched mirror page is copied into its cell, in every store (all layers, both kinds);
//   3. publish  only after every copy completed, the fetched pages enter the table.
// A page is thus readable only while its cell holds its bytes. Stores are ranges of store::ChunkStore.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/recall/plan.hpp>
#include <flashmemory/store/chunk_cell_table.hpp>

#include <cstddef>

namespace flashmemory::recall {

struct RecallStats {
  index_t recalls = 0;          // plans executed
  index_t pages_fetched = 0;    // pages copied from the mirrors (once per page, whatever the number of stores)
  index_t pages_evicted = 0;
  index_t pages_kept = 0;       // pages of the selected sets that were already resident
  std::size_t bytes_moved = 0;  // bytes copied host → reserve, over every store

  RecallStats& operator+=(RecallStats const& o) {
    recalls += o.recalls, pages_fetched += o.pages_fetched, pages_evicted += o.pages_evicted, pages_kept += o.pages_kept;
    bytes_moved += o.bytes_moved;
    return *this;
  }
};

// Phase 1: evicted pages leave the table; their cells are emptied in every store.
template <class... Stores>
void retire(RecallPlan const& plan, store::ChunkCellTable& table, Stores&... stores) {
  store::ChunkCellTable next = table;
  for (PageMove m : plan.evict) {
    next.unmap(m.cell);
    (..., [&] { for (auto& s : stores) s.reserve.clear(m.cell); }());
  }
  table = next;
}

// Phase 2: fetched pages are copied into their cells; returns the bytes moved.
template <class... Stores>
std::size_t copy_pages(RecallPlan const& plan, Stores&... stores) {
  std::size_t bytes = 0;
  for (PageMove m : plan.fetch)
    (..., [&] {
      for (auto& s : stores) {
        s.reserve.fill(m.cell, s.mirror.page(m.page), s.mirror.chunks_in_page(m.page));
        bytes += s.reserve.page_bytes();
      }
    }());
  return bytes;
}

// Phase 3: after the copies, the fetched pages enter the table.
inline void publish(RecallPlan const& plan, store::ChunkCellTable& table) {
  store::ChunkCellTable next = table;
  for (PageMove m : plan.fetch) next.map(m.page, m.cell);
  table = next;
}

// The three phases in order.
template <class... Stores>
RecallStats execute_recall(RecallPlan const& plan, store::ChunkCellTable& table, Stores&... stores) {
  retire(plan, table, stores...);
  std::size_t bytes = copy_pages(plan, stores...);
  publish(plan, table);
  return {.recalls = 1,
          .pages_fetched = static_cast<index_t>(plan.fetch.size()),
          .pages_evicted = static_cast<index_t>(plan.evict.size()),
          .pages_kept = plan.kept,
          .bytes_moved = bytes};
}

}  // namespace flashmemory::recall
