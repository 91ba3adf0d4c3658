// flashmemory/store/device_reserve.hpp — the fixed set of cells that hold the resident pages (design.md §2).
//
// A reserve is N cells, one page of records each, in one allocation sized explicitly up front (admission
// control, lsa.md §6): N comes from a byte budget or from a fraction of the longest history served. Row r of
// the reserve is record r mod chunks_per_page of cell r / chunks_per_page; attention reads rows.
//
// Each cell also counts the chunks written into it: a row is readable only below that count, so a page
// recalled while its last slots are still unformed, or a chunk not yet appended, is never read (lsa.md §6:
// "a cell is resident only if its bytes were written").
//
// This is the host reference (host memory by default); the CUDA part plugs device memory in through the
// allocator, and then only the sizes and counts are used on the host (the byte access below needs
// host-accessible memory).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>
#include <flashmemory/layout/concepts.hpp>
#include <flashmemory/store/allocator.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

namespace flashmemory::store {

// Cells a byte budget pays for when one cell costs `bytes_per_cell` (the sum of page bytes over every
// store that shares the table).
constexpr index_t cells_for_budget(std::size_t budget_bytes, std::size_t bytes_per_cell) {
  if (bytes_per_cell == 0) fail(errc::invalid_argument, "reserve sizing: a cell of 0 bytes");
  return static_cast<index_t>(budget_bytes / bytes_per_cell);
}
// Cells for `fraction` of a history of `max_chunks` chunks, rounded up to whole pages.
inline index_t cells_for_fraction(double fraction, index_t max_chunks, index_t chunks_per_page) {
  if (!(fraction >= 0 && fraction <= 1) || max_chunks < 0 || chunks_per_page <= 0)
    fail(errc::invalid_argument, "reserve sizing: fraction ", fraction, " of ", max_chunks, " chunks in pages of ",
         chunks_per_page, " (need 0 ≤ fraction ≤ 1)");
  index_t pages = (max_chunks + chunks_per_page - 1) / chunks_per_page;
  return static_cast<index_t>(std::ceil(fraction * static_cast<double>(pages)));
}

template <layout::chunk_layout Layout, byte_allocator Allocator = HostAllocator>
class DeviceReserve {
 public:
  DeviceReserve(Layout layout, index_t cells, Allocator allocator = {})
      : layout_(std::move(layout)), cells_(cells), allocator_(std::move(allocator)), written_(static_cast<std::size_t>(cells), 0) {
    if (cells < 0) fail(errc::invalid_argument, "device reserve: ", cells, " cells");
    if (bytes() > 0 && !(data_ = allocator_.allocate(bytes())))
      fail(errc::out_of_memory, "device reserve: cannot allocate ", cells, " cells × ", page_bytes(), " B = ", bytes(),
           " B of ", Allocator::kName, " memory; lower the reserve budget");
  }
  // A deep copy, of host-accessible reserves only (the host reference; a sequence forked after a shared prefill).
  DeviceReserve(DeviceReserve const& o)
    requires(Allocator::kHostAccessible)
      : DeviceReserve(o.layout_, o.cells_, o.allocator_) {
    if (data_) std::memcpy(data_, o.data_, bytes());
    written_ = o.written_;
  }
  DeviceReserve& operator=(DeviceReserve const& o)
    requires(Allocator::kHostAccessible)
  {
    if (this != &o) *this = DeviceReserve(o);
    return *this;
  }
  DeviceReserve(DeviceReserve&& o) noexcept
      : layout_(o.layout_), cells_(std::exchange(o.cells_, 0)), allocator_(o.allocator_), data_(std::exchange(o.data_, nullptr)),
        written_(std::move(o.written_)) {}
  DeviceReserve& operator=(DeviceReserve&& o) noexcept {
    if (this != &o) {
      release();
      layout_ = o.layout_, allocator_ = o.allocator_, written_ = std::move(o.written_);
      cells_ = std::exchange(o.cells_, 0), data_ = std::exchange(o.data_, nullptr);
    }
    return *this;
  }
  ~DeviceReserve() { release(); }

  Layout const& layout() const noexcept { return layout_; }
  index_t cells() const noexcept { return cells_; }
  index_t rows() const noexcept { return cells_ * layout_.chunks_per_page(); }
  std::size_t page_bytes() const noexcept { return static_cast<std::size_t>(layout::page_bytes(layout_)); }
  std::size_t bytes() const noexcept { return static_cast<std::size_t>(cells_) * page_bytes(); }
  std::byte* data() noexcept { return data_; }
  std::byte const* data() const noexcept { return data_; }

  // Chunks written into `cell` (rows below cell · chunks_per_page + written(cell) are readable).
  index_t written(index_t cell) const { return written_[checked(cell)]; }
  std::span<std::int32_t const> written_counts() const noexcept { return written_; }
  // A cell's content is gone (its page left the table).
  void clear(index_t cell) { written_[checked(cell)] = 0; }
  // The first `chunks` records of `cell` hold their bytes, written by device copies (the CUDA recall engine,
  // which orders this after the copies it enqueued).
  void mark_written(index_t cell, index_t chunks) {
    if (chunks < 0 || chunks > layout_.chunks_per_page())
      fail(errc::invalid_argument, "device reserve: ", chunks, " chunks written to cell ", cell, " of pages of ",
           layout_.chunks_per_page());
    written_[checked(cell)] = static_cast<std::int32_t>(chunks);
  }

  // Host byte access (the reference; host-accessible memory only).
  std::span<std::byte> cell(index_t c) requires(Allocator::kHostAccessible) {
    return {data_ + static_cast<std::size_t>(checked(c)) * page_bytes(), page_bytes()};
  }
  std::span<std::byte const> cell(index_t c) const requires(Allocator::kHostAccessible) {
    return {data_ + static_cast<std::size_t>(checked(c)) * page_bytes(), page_bytes()};
  }
  std::span<std::byte const> record(index_t row) const requires(Allocator::kHostAccessible) {
    if (row < 0 || row >= rows()) fail(errc::invalid_argument, "device reserve: row ", row, " of ", rows());
    return {data_ + row * layout_.record_bytes(), static_cast<std::size_t>(layout_.record_bytes())};
  }
  // Copies a whole mirror page into `cell`, of which the first `chunks` records hold chunks.
  void fill(index_t c, std::span<std::byte const> page, index_t chunks) requires(Allocator::kHostAccessible) {
    if (page.size() != page_bytes() || chunks < 0 || chunks > layout_.chunks_per_page())
      fail(errc::invalid_argument, "device reserve: filling cell ", c, " with ", page.size(), " B holding ", chunks,
           " chunks (a page is ", page_bytes(), " B of ", layout_.chunks_per_page(), ")");
    std::memcpy(cell(c).data(), page.data(), page_bytes());
    written_[checked(c)] = static_cast<std::int32_t>(chunks);
  }
  // Writes the record of the chunk in `slot` of `cell` (the append path of a resident page). Slots fill in
  // order: `slot` must be the next unwritten one.
  void write(index_t c, index_t slot, std::span<std::byte const> rec) requires(Allocator::kHostAccessible) {
    if (slot != written(c) || slot >= layout_.chunks_per_page() || static_cast<index_t>(rec.size()) != layout_.record_bytes())
      fail(errc::invalid_argument, "device reserve: writing slot ", slot, " of cell ", c, " (next slot ", written(c),
           ", record ", rec.size(), " B of ", layout_.record_bytes(), ")");
    std::memcpy(cell(c).data() + slot * layout_.record_bytes(), rec.data(), rec.size());
    ++written_[static_cast<std::size_t>(c)];
  }
  // The host reference of the gather kernel: out[i] = decoded row rows[i]; every row must be written.
  void gather(std::span<std::int32_t const> rows_to_read, matrix_view<float> out) const requires(Allocator::kHostAccessible) {
    if (out.extent(0) != static_cast<index_t>(rows_to_read.size()) || out.extent(1) != layout_.channels())
      fail(errc::bad_shape, "device reserve: gathering ", rows_to_read.size(), " rows of ", layout_.channels(),
           " channels into [", out.extent(0), ", ", out.extent(1), "]");
    index_t per = layout_.chunks_per_page();
    for (std::size_t i = 0; i < rows_to_read.size(); ++i) {
      index_t row = rows_to_read[i];
      if (row < 0 || row >= rows() || row % per >= written(row / per))
        fail(errc::invalid_argument, "device reserve: row ", row, " holds no written chunk (", rows(), " rows)");
      layout_.decode(record(row), {&out(static_cast<index_t>(i), 0), static_cast<std::size_t>(layout_.channels())});
    }
  }

 private:
  std::size_t checked(index_t c) const {
    if (c < 0 || c >= cells_) fail(errc::invalid_argument, "device reserve: cell ", c, " of ", cells_);
    return static_cast<std::size_t>(c);
  }
  void release() noexcept {
    if (data_) allocator_.deallocate(data_, bytes());
    data_ = nullptr;
  }

  Layout layout_;
  index_t cells_;
  Allocator allocator_;
  std::byte* data_ = nullptr;
  std::vector<std::int32_t> written_;
};

}  // namespace flashmemory::store
