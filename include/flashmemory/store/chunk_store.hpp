// flashmemory/store/chunk_store.hpp — one KV kind of one layer: its host mirror and its device reserve.
//
// Appending writes the mirror first (it holds every chunk, lsa.md §6) and, when the chunk's page is resident
// in the table, writes the same record through to the page's cell, so a resident page never goes stale.
// Sequences have one store per (CSA layer, kind) — attention entries and index keys — all sharing one
// ChunkCellTable.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/layout/concepts.hpp>
#include <flashmemory/store/allocator.hpp>
#include <flashmemory/store/chunk_cell_table.hpp>
#include <flashmemory/store/device_reserve.hpp>
#include <flashmemory/store/host_mirror.hpp>

#include <span>
#include <utility>

namespace flashmemory::store {

template <layout::chunk_layout Layout, byte_allocator MirrorAllocator = HostAllocator, byte_allocator ReserveAllocator = HostAllocator>
struct ChunkStore {
  HostMirror<Layout, MirrorAllocator> mirror;
  DeviceReserve<Layout, ReserveAllocator> reserve;

  ChunkStore(Layout const& layout, index_t cells, std::size_t mirror_cap = kUnlimited, MirrorAllocator mirror_allocator = {},
             ReserveAllocator reserve_allocator = {})
      : mirror(layout, mirror_cap, std::move(mirror_allocator)), reserve(layout, cells, std::move(reserve_allocator)) {}

  Layout const& layout() const noexcept { return mirror.layout(); }

  // Appends one chunk (channels floats) and writes it through to its cell if its page is resident.
  index_t append(std::span<float const> chunk, ChunkCellTable const& table) {
    index_t c = mirror.append(chunk);
    index_t per = layout().chunks_per_page(), cell = table.cell_of(c / per);
    if (cell >= 0) reserve.write(cell, c % per, mirror.record(c));
    return c;
  }
};

}  // namespace flashmemory::store
