// flashmemory/store/chunk_cell_table.hpp — which reserve cell holds which page (design.md §1).
//
// One table serves every store of a sequence (all CSA layers, entries and index keys): LSA keeps one global
// resident set, so cell c of every layer's reserve holds the same page. Both directions are kept, as int32
// arrays a kernel can read as they are: page → cell (−1: not resident) and cell → page (−1: free).
//
// The table is a value: the recall engine edits a copy and publishes it whole at a safe point, so a reader
// never sees a half-edited mapping (lsa.md §6).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <cstdint>
#include <span>
#include <vector>

namespace flashmemory::store {

class ChunkCellTable {
 public:
  ChunkCellTable() = default;
  ChunkCellTable(index_t cells, index_t chunks_per_page)
      : chunks_per_page_(chunks_per_page), cell_to_page_(static_cast<std::size_t>(cells), -1) {
    if (cells < 0 || chunks_per_page <= 0)
      fail(errc::invalid_argument, "chunk→cell table: ", cells, " cells of ", chunks_per_page, " chunks");
  }

  index_t cells() const noexcept { return static_cast<index_t>(cell_to_page_.size()); }
  index_t chunks_per_page() const noexcept { return chunks_per_page_; }
  // Pages the table has heard of (page → cell entries); pages past it are not resident.
  index_t known_pages() const noexcept { return static_cast<index_t>(page_to_cell_.size()); }

  index_t cell_of(index_t page) const noexcept {
    return page >= 0 && page < known_pages() ? page_to_cell_[static_cast<std::size_t>(page)] : -1;
  }
  index_t page_of(index_t cell) const noexcept {
    return cell >= 0 && cell < cells() ? cell_to_page_[static_cast<std::size_t>(cell)] : -1;
  }
  bool is_free(index_t cell) const noexcept { return page_of(cell) < 0; }
  index_t resident_pages() const noexcept {
    index_t n = 0;
    for (std::int32_t p : cell_to_page_) n += p >= 0;
    return n;
  }

  // Puts `page` in the free `cell`. A page already resident or a cell already taken is a logic error.
  void map(index_t page, index_t cell) {
    if (cell < 0 || cell >= cells() || !is_free(cell) || page < 0 || cell_of(page) >= 0)
      fail(errc::invalid_argument, "chunk→cell table: cannot map page ", page, " (in cell ", cell_of(page), ") to cell ",
           cell, " (holding page ", page_of(cell), ", of ", cells(), " cells)");
    if (page >= known_pages()) page_to_cell_.resize(static_cast<std::size_t>(page + 1), -1);
    page_to_cell_[static_cast<std::size_t>(page)] = static_cast<std::int32_t>(cell);
    cell_to_page_[static_cast<std::size_t>(cell)] = static_cast<std::int32_t>(page);
  }
  // Frees `cell`; its page is no longer resident.
  void unmap(index_t cell) {
    index_t page = page_of(cell);
    if (page < 0) fail(errc::invalid_argument, "chunk→cell table: cell ", cell, " is already free");
    page_to_cell_[static_cast<std::size_t>(page)] = -1;
    cell_to_page_[static_cast<std::size_t>(cell)] = -1;
  }

  std::span<std::int32_t const> page_to_cell() const noexcept { return page_to_cell_; }
  std::span<std::int32_t const> cell_to_page() const noexcept { return cell_to_page_; }
  friend bool operator==(ChunkCellTable const&, ChunkCellTable const&) = default;

 private:
  index_t chunks_per_page_ = 64;
  std::vector<std::int32_t> page_to_cell_;
  std::vector<std::int32_t> cell_to_page_;
};

}  // namespace flashmemory::store
