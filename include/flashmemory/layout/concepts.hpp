// flashmemory/layout/concepts.hpp — the `chunk_layout` concept: how one kind of KV record is stored.
//
// A chunk is one compressed CSA entry (4 source tokens in DeepSeek-V4) or, for other models, one token
// page slot. Each chunk of a given kind is stored as a fixed-size byte record; `chunks_per_page` records
// make a page, the unit that the host mirror grows by and that recall moves. A layout is a small value
// type: copying it is cheap, it owns no memory, and the same object drives the host reference and the
// kernels (which decode records in device code through the same member functions).
//
// Requirements, for a const layout `l`:
//   l.channels()        logical float channels of one chunk (e.g. 512 for a CSA latent)
//   l.record_bytes()    bytes of one encoded chunk record (e.g. 1024 for bf16, 584 packed fp8)
//   l.chunks_per_page() records per page (64 in the published LSA)
//   l.encode(in, out)   channels() floats → record_bytes() bytes; lossy layouts quantise here
//   l.decode(in, out)   record_bytes() bytes → channels() floats
// Complexity: encode/decode are O(channels); they are called once per chunk on the append path (encode)
// and by references and tests (decode).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <concepts>
#include <cstddef>
#include <span>

namespace flashmemory::layout {

template <class L>
concept chunk_layout = std::copyable<L> &&
    requires(L const& l, std::span<float const> floats, std::span<std::byte> record,
             std::span<std::byte const> stored, std::span<float> decoded) {
      { l.channels() } -> std::convertible_to<index_t>;
      { l.record_bytes() } -> std::convertible_to<index_t>;
      { l.chunks_per_page() } -> std::convertible_to<index_t>;
      { l.encode(floats, record) } -> std::same_as<void>;
      { l.decode(stored, decoded) } -> std::same_as<void>;
    };

// Bytes of one page of records.
template <chunk_layout L>
constexpr index_t page_bytes(L const& l) {
  return static_cast<index_t>(l.record_bytes()) * static_cast<index_t>(l.chunks_per_page());
}

}  // namespace flashmemory::layout
