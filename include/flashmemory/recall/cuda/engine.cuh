// flashmemory/recall/cuda/engine.cuh — the recall engine on the GPU: a plan (recall/plan.hpp) executed on a
// copy stream beside the decode stream, published only once its bytes are in place (lsa.md §6).
//
//   begin(plan)  at a window boundary: the evicted pages leave the table and the device row lists at once (an
//                upload on the decode stream, so every earlier read of those cells is done before the copy
//                stream, which waits for it, overwrites them); the fetched pages are gathered from the mapped
//                pinned mirrors into their cells by one PageGather launch per store; an event closes the copy.
//   finish()     at the next window boundary: the decode stream waits for that event (a stall when it has not
//                completed yet: counted; the host never blocks), chunks appended to a fetched page meanwhile are
//                caught up, and only then do the fetched cells become readable.
// Host work happens only there and on appends (write-through: an async copy of the new record into its cell
// and one row made readable, both on the decode stream). The Level-2 kernels read the row lists, which do
// not change shape, so a decode step stays capturable in a CUDA graph.
//
// Stores come in CSA layers: entries[l] and keys[l] (store::ChunkStore with a PinnedAllocator mirror and a
// DeviceAllocator reserve). Row list l ([cells · chunks_per_page], int32): row r if chunk slot r of its cell is
// written in both stores of layer l and the cell is published, else −1.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/cuda/pinned_buffer.cuh>
#include <flashmemory/core/cuda/stream.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>
#include <flashmemory/recall/cuda/page_gather.cuh>
#include <flashmemory/recall/host_engine.hpp>
#include <flashmemory/recall/plan.hpp>
#include <flashmemory/store/chunk_cell_table.hpp>
#include <flashmemory/store/cuda/allocators.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace flashmemory::recall::cuda {

struct EngineStats {
  RecallStats recall;      // plans, pages and bytes moved (host_engine.hpp)
  double copy_ms = 0;      // copy-stream time of the completed gathers
  index_t stalls = 0;      // publishes that found the copy unfinished (the decode stream had to wait)
  index_t caught_up = 0;   // records appended to a page while it was being fetched, copied at publish
};

namespace detail {

// Row `row` of list `layer` becomes readable.
static __global__ void mark_row_kernel(std::int32_t* rows, std::int64_t rows_per_layer, int layer, std::int32_t row) {
  rows[layer * rows_per_layer + row] = row;
}
// Every row of `cell`, in every layer's list, becomes unreadable.
static __global__ void clear_cell_kernel(std::int32_t* rows, std::int64_t rows_per_layer, int per, std::int32_t cell) {
  int const layer = static_cast<int>(blockIdx.x);
  for (int s = static_cast<int>(threadIdx.x); s < per; s += static_cast<int>(blockDim.x))
    rows[layer * rows_per_layer + static_cast<std::int64_t>(cell) * per + s] = -1;
}

}  // namespace detail

template <class EntryStore, class KeyStore>
class RecallEngine {
 public:
  RecallEngine(index_t layers, index_t cells, index_t chunks_per_page, cudaStream_t decode, cudaStream_t copy)
      : layers_(layers), per_(chunks_per_page), decode_(decode), copy_(copy), table_(cells, chunks_per_page),
        pending_cell_(static_cast<std::size_t>(cells), 0),
        rows_(static_cast<std::size_t>(std::max<index_t>(layers * cells * chunks_per_page, 1)), "recall engine: row lists"),
        staging_(rows_.size(), flashmemory::cuda::PinnedBuffer<std::int32_t>::kHostOnly, "recall engine: row staging"),
        cell_list_(static_cast<std::size_t>(std::max<index_t>(cells, 1)), flashmemory::cuda::PinnedBuffer<std::int32_t>::kMapped,
                   "recall engine: cell list"),
        start_(flashmemory::cuda::Event::kTiming), copied_(flashmemory::cuda::Event::kTiming) {
    start_.record(copy_);
    copied_.record(copy_);
    rows_.fill_bytes(0xff, decode_);  // −1: nothing readable
  }

  store::ChunkCellTable const& table() const noexcept { return table_; }
  bool pending() const noexcept { return !fetched_.empty(); }
  bool pending(index_t cell) const { return pending_cell_.at(static_cast<std::size_t>(cell)) != 0; }
  index_t rows_per_layer() const noexcept { return table_.cells() * per_; }
  // Row list of one layer (device memory; −1 = not readable).
  vector_view<std::int32_t const> rows(index_t layer) const {
    return vector_view<std::int32_t const>(rows_.data() + layer * rows_per_layer(), rows_per_layer());
  }
  // The same list, writable: a decoder whose kernels write new chunks into published cells marks their rows
  // readable itself (lsa/cuda/decoder_lookahead.cuh); the host's written counts catch up before the next
  // rebuild (begin, finish).
  std::int32_t* device_rows(index_t layer) noexcept { return rows_.data() + layer * rows_per_layer(); }
  EngineStats const& stats() const noexcept { return stats_; }

  // After chunk `chunk` of `layer` was appended to both mirrors: writes it through to its cell when the page
  // is published (a page being fetched is caught up at finish()).
  void write_through(index_t layer, index_t chunk, std::span<EntryStore> entries, std::span<KeyStore> keys) {
    index_t const cell = table_.cell_of(chunk / per_), slot = chunk % per_;
    if (cell < 0 || pending(cell)) return;
    auto& e = entries[static_cast<std::size_t>(layer)];
    auto& k = keys[static_cast<std::size_t>(layer)];
    copy_records(e, cell, chunk, slot, slot + 1);
    copy_records(k, cell, chunk, slot, slot + 1);
    detail::mark_row_kernel<<<1, 1, 0, decode_>>>(rows_.data(), rows_per_layer(), static_cast<int>(layer),
                                                  static_cast<std::int32_t>(cell * per_ + slot));
    flashmemory::cuda::launch_status("mark_row_kernel", __FILE__, __LINE__).throw_if_error();
  }

  // A page opened by an append takes `cell` now (nothing to copy yet); the cell's old page, if any, leaves.
  void open(index_t page, index_t cell, std::span<EntryStore> entries, std::span<KeyStore> keys) {
    if (pending(cell)) fail(errc::invalid_argument, "recall engine: cell ", cell, " is being fetched into");
    if (!table_.is_free(cell)) {
      retire_cell(cell, entries, keys);
      ++stats_.recall.pages_evicted;
    }
    table_.map(page, cell);
  }

  // Phase 1 and 2 of a plan made against table(): retire now, copy on the copy stream.
  void begin(RecallPlan const& plan, std::span<EntryStore> entries, std::span<KeyStore> keys) {
    if (pending()) fail(errc::invalid_argument, "recall engine: a recall is still unpublished (call finish first)");
    copied_.synchronize();  // the previous gather (a window ago) read the lists about to be rewritten
    if (timed_) stats_.copy_ms += elapsed_ms(start_, copied_), timed_ = false;
    for (PageMove m : plan.evict) {
      table_.unmap(m.cell);
      for (auto& s : entries) s.reserve.clear(m.cell);
      for (auto& s : keys) s.reserve.clear(m.cell);
    }
    for (PageMove m : plan.fetch) {
      table_.map(m.page, m.cell);
      pending_cell_[static_cast<std::size_t>(m.cell)] = 1;
      for (auto& s : entries) s.reserve.clear(m.cell);
      for (auto& s : keys) s.reserve.clear(m.cell);
    }
    fetched_ = plan.fetch;
    upload_rows(entries, keys);  // evicted and fetched cells are unreadable from here on
    retired_.record(decode_);
    retired_.wait_on(copy_);
    if (plan.fetch.empty()) return;

    auto const n = plan.fetch.size(), stores = entries.size() + keys.size();
    if (src_.size() < n * stores)
      src_ = flashmemory::cuda::PinnedBuffer<std::byte const*>(n * stores, flashmemory::cuda::PinnedBuffer<std::byte const*>::kMapped,
                                                               "recall engine: page list");
    for (std::size_t i = 0; i < n; ++i) cell_list_[i] = static_cast<std::int32_t>(plan.fetch[i].cell);
    snapshot_.clear();
    start_.record(copy_);
    std::size_t base = 0, bytes = 0;
    auto gather = [&](auto& s) {
      for (std::size_t i = 0; i < n; ++i) {
        index_t const page = plan.fetch[i].page;
        src_[base + i] = store::cuda::device_address(s.mirror.page(page).data());
        snapshot_.push_back(s.mirror.chunks_in_page(page));
      }
      PageGatherArguments const a{vector_view<std::byte const* const>(src_.device_pointer() + base, static_cast<index_t>(n)),
                                  vector_view<std::int32_t const>(cell_list_.device_pointer(), static_cast<index_t>(n)),
                                  s.reserve.data(), static_cast<std::int64_t>(s.reserve.page_bytes()), copy_};
      gather_.run(a).throw_if_error();
      base += n, bytes += n * s.reserve.page_bytes();
    };
    for (auto& s : entries) gather(s);
    for (auto& s : keys) gather(s);
    copied_.record(copy_);
    timed_ = true;
    stats_.recall += {.recalls = 1, .pages_fetched = static_cast<index_t>(n), .pages_evicted = static_cast<index_t>(plan.evict.size()),
                      .pages_kept = plan.kept, .bytes_moved = bytes};
  }

  // Phase 3: the fetched pages become readable once their copy completed (the decode stream waits for it).
  void finish(std::span<EntryStore> entries, std::span<KeyStore> keys) {
    if (!pending()) return;
    if (!copied_.ready()) ++stats_.stalls;
    copied_.wait_on(decode_);
    std::size_t at = 0;
    auto catch_up = [&](auto& s) {
      for (PageMove m : fetched_) {
        index_t const had = snapshot_[at++], now = s.mirror.chunks_in_page(m.page);
        copy_records(s, m.cell, m.page * per_, had, now);
        stats_.caught_up += now - had;
      }
    };
    for (auto& s : entries) catch_up(s);
    for (auto& s : keys) catch_up(s);
    for (PageMove m : fetched_) pending_cell_[static_cast<std::size_t>(m.cell)] = 0;
    fetched_.clear();
    upload_rows(entries, keys);
  }

 private:
  // Records [from, to) of the page of `chunk` into `cell`, on the decode stream; marks them written.
  template <class Store>
  void copy_records(Store& s, index_t cell, index_t chunk, index_t from, index_t to) {
    s.reserve.mark_written(cell, to);
    if (to <= from) return;
    auto const rec = static_cast<std::size_t>(s.layout().record_bytes());
    std::byte const* src = s.mirror.page(chunk / per_).data() + static_cast<std::size_t>(from) * rec;
    std::byte* dst = s.reserve.data() + static_cast<std::size_t>(cell) * s.reserve.page_bytes() + static_cast<std::size_t>(from) * rec;
    FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(to - from) * rec, cudaMemcpyHostToDevice, decode_));
  }
  void retire_cell(index_t cell, std::span<EntryStore> entries, std::span<KeyStore> keys) {
    table_.unmap(cell);
    for (auto& s : entries) s.reserve.clear(cell);
    for (auto& s : keys) s.reserve.clear(cell);
    detail::clear_cell_kernel<<<static_cast<unsigned>(std::max<index_t>(layers_, 1)), 64, 0, decode_>>>(
        rows_.data(), rows_per_layer(), static_cast<int>(per_), static_cast<std::int32_t>(cell));
    flashmemory::cuda::launch_status("clear_cell_kernel", __FILE__, __LINE__).throw_if_error();
  }
  // Rebuilds every row list from the table and the written counts; one upload on the decode stream.
  void upload_rows(std::span<EntryStore> entries, std::span<KeyStore> keys) {
    staged_.synchronize();  // the previous upload has read the staging buffer
    index_t const R = rows_per_layer();
    for (index_t l = 0; l < layers_; ++l)
      for (index_t c = 0; c < table_.cells(); ++c) {
        bool const live = !table_.is_free(c) && !pending(c);
        index_t const written = live ? std::min(entries[static_cast<std::size_t>(l)].reserve.written(c),
                                                keys[static_cast<std::size_t>(l)].reserve.written(c)) : 0;
        for (index_t s = 0; s < per_; ++s)
          staging_[static_cast<std::size_t>(l * R + c * per_ + s)] = s < written ? static_cast<std::int32_t>(c * per_ + s) : -1;
      }
    if (layers_ * R > 0)
      FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(rows_.data(), staging_.data(), static_cast<std::size_t>(layers_ * R) * 4,
                                             cudaMemcpyHostToDevice, decode_));
    staged_.record(decode_);
  }

  index_t layers_, per_;
  cudaStream_t decode_, copy_;
  store::ChunkCellTable table_;  // the target table: published pages and pages being fetched
  std::vector<std::uint8_t> pending_cell_;
  std::vector<PageMove> fetched_;
  std::vector<index_t> snapshot_;  // chunks of each fetched page when its copy was enqueued, per store
  flashmemory::cuda::DeviceBuffer<std::int32_t> rows_;
  flashmemory::cuda::PinnedBuffer<std::int32_t> staging_;
  flashmemory::cuda::PinnedBuffer<std::byte const*> src_;
  flashmemory::cuda::PinnedBuffer<std::int32_t> cell_list_;
  PageGather gather_;
  flashmemory::cuda::Event retired_, staged_, start_, copied_;
  bool timed_ = false;
  EngineStats stats_;
};

}  // namespace flashmemory::recall::cuda
