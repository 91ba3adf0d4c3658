// flashmemory/recall/plan.hpp — turn a new resident set into a recall plan (design.md §1).
//
// At a window boundary the policy names the pages the next window keeps resident. The plan compares that set
// with the table:
//   * a page of the set that is already in a cell stays there (no copy, whatever set it came from);
//   * every other page of the set is fetched from the mirror into a cell: a free cell first, else the least
//     recently used cell whose page is NOT in the new set (true LRU; the new set is protected);
//   * pages outside the set stay cached in their cells until their cell is needed.
// A set larger than the reserve cannot be served and fails clearly: size the reserve for the policy's
// largest set (admission control) instead of silently dropping pages.
//
// "Used" means: the page was in a selected set, or a chunk was appended to it. Executing a plan is
// recall/host_engine.hpp (host reference) or the CUDA recall engine.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/residency/concepts.hpp>
#include <flashmemory/store/chunk_cell_table.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace flashmemory::recall {

// When each cell was last used, on a logical clock.
class CellLru {
 public:
  CellLru() = default;
  explicit CellLru(index_t cells) : last_use_(static_cast<std::size_t>(cells), 0) {}

  void touch(index_t cell) { last_use_.at(static_cast<std::size_t>(cell)) = ++clock_; }
  // Every resident page of `set` was used now.
  void touch(store::ChunkCellTable const& table, residency::ResidentSet const& set) {
    for (index_t p : set.pages)
      if (index_t c = table.cell_of(p); c >= 0) touch(c);
  }
  std::uint64_t last_use(index_t cell) const { return last_use_.at(static_cast<std::size_t>(cell)); }

 private:
  std::vector<std::uint64_t> last_use_;
  std::uint64_t clock_ = 0;
};

// One page and one cell: where a page goes (fetch) or which page leaves a cell (evict).
struct PageMove {
  index_t page = -1;
  index_t cell = -1;
  friend bool operator==(PageMove const&, PageMove const&) = default;
};

struct RecallPlan {
  std::vector<PageMove> evict;  // cells whose page leaves the table, with that page
  std::vector<PageMove> fetch;  // mirror page → reserve cell, ascending pages
  index_t kept = 0;             // pages of the set already resident
};

// Cells that may take a new page, best first: free cells, then cells whose page is not protected, least
// recently used first (ties: the lower cell).
inline std::vector<index_t> eviction_order(store::ChunkCellTable const& table, CellLru const& lru,
                                           residency::ResidentSet const& protect) {
  std::vector<index_t> cells;
  for (index_t c = 0; c < table.cells(); ++c)
    if (table.is_free(c) || !protect.contains_page(table.page_of(c))) cells.push_back(c);
  auto key = [&](index_t c) { return std::pair{table.is_free(c) ? 0 : 1, table.is_free(c) ? 0 : lru.last_use(c)}; };
  std::stable_sort(cells.begin(), cells.end(), [&](index_t a, index_t b) { return key(a) < key(b); });
  return cells;
}

inline RecallPlan plan_recall(store::ChunkCellTable const& table, CellLru const& lru, residency::ResidentSet const& next) {
  if (static_cast<index_t>(next.pages.size()) > table.cells())
    fail(errc::out_of_memory, "recall plan: the resident set has ", next.pages.size(), " pages but the reserve only ",
         table.cells(), " cells; size the reserve for the policy's largest set or bound the policy");
  RecallPlan plan;
  std::vector<index_t> missing;
  for (index_t p : next.pages) {
    if (table.cell_of(p) >= 0) ++plan.kept;
    else missing.push_back(p);
  }
  std::vector<index_t> cells = eviction_order(table, lru, next);
  // |cells| ≥ |missing|: the cells not holding a page of the set number at least cells − (|set| − |missing|).
  for (std::size_t i = 0; i < missing.size(); ++i) {
    index_t cell = cells[i];
    if (!table.is_free(cell)) plan.evict.push_back({table.page_of(cell), cell});
    plan.fetch.push_back({missing[i], cell});
  }
  return plan;
}

}  // namespace flashmemory::recall
