// flashmemory/lsa/full_resident.hpp — the baseline controller: every chunk stays resident, nothing is
// offloaded, Level 1 never runs. Level 2 is the native top-k over all chunks, so a decoder driven by it is the
// native model (design.md §4, invariant 4). Pool rows are chunk indices.
#pragma once

#include <flashmemory/core/error.hpp>
#include <flashmemory/indexer/reference.hpp>
#include <flashmemory/layout/concepts.hpp>
#include <flashmemory/layout/f32_records.hpp>
#include <flashmemory/lsa/concepts.hpp>
#include <flashmemory/store/allocator.hpp>
#include <flashmemory/store/host_mirror.hpp>

#include <span>
#include <vector>

namespace flashmemory::lsa {

template <layout::chunk_layout Entry = layout::F32Records, layout::chunk_layout Key = layout::F32Records,
          store::byte_allocator Allocator = store::HostAllocator>
class FullResident {
 public:
  FullResident(Entry const& entry, Key const& key, index_t csa_layers, Allocator allocator = {}) : allocator_(allocator) {
    if (csa_layers < 0) fail(errc::invalid_argument, "FullResident: ", csa_layers, " CSA layers");
    for (index_t l = 0; l < csa_layers; ++l) {
      entries_.emplace_back(entry, store::kUnlimited, allocator);
      keys_.emplace_back(key, store::kUnlimited, allocator);
    }
  }

  index_t csa_layers() const noexcept { return static_cast<index_t>(entries_.size()); }
  store::HostMirror<Entry, Allocator> const& entries(index_t layer) const { return entries_.at(static_cast<std::size_t>(layer)); }
  store::HostMirror<Key, Allocator> const& keys(index_t layer) const { return keys_.at(static_cast<std::size_t>(layer)); }

  void append(index_t layer, std::span<float const> entry, std::span<float const> key) {
    entries_.at(static_cast<std::size_t>(layer)).append(entry);
    keys_[static_cast<std::size_t>(layer)].append(key);
  }

  // Every key is readable: the scores of all chunks, from the keys' mirror.
  void score(index_t layer, matrix_view<float const> q, vector_view<float const> w, std::span<float> scores) const {
    auto const& m = keys(layer);
    index_t n = m.num_chunks(), d = m.layout().channels();
    std::vector<float> k(static_cast<std::size_t>(n * d));
    for (index_t c = 0; c < n; ++c) m.decode(c, std::span<float>(k).subspan(static_cast<std::size_t>(c * d), static_cast<std::size_t>(d)));
    indexer::index_scores(q, w, matrix_view<float const>(k.data(), n, d), scores);
  }

  Selection select(index_t layer, std::span<float const> scores, index_t k) const {
    if (static_cast<index_t>(scores.size()) != entries(layer).num_chunks())
      fail(errc::bad_shape, "FullResident: layer ", layer, " has ", entries(layer).num_chunks(), " chunks, given ",
           scores.size(), " scores");
    Selection s;
    s.chunks = indexer::top_k(scores, k);
    s.rows = s.chunks;
    return s;
  }

  void gather(index_t layer, std::span<std::int32_t const> rows, matrix_view<float> out) const {
    auto const& m = entries(layer);
    if (out.extent(0) != static_cast<index_t>(rows.size()) || out.extent(1) != m.layout().channels())
      fail(errc::bad_shape, "FullResident: gathering ", rows.size(), " rows of ", m.layout().channels(), " channels into [",
           out.extent(0), ", ", out.extent(1), "]");
    for (std::size_t i = 0; i < rows.size(); ++i)
      m.decode(rows[i], {&out(static_cast<index_t>(i), 0), static_cast<std::size_t>(m.layout().channels())});
  }

  bool boundary_due(index_t) const noexcept { return false; }
  void offer(index_t, TargetInput const&) {}
  void end_step(index_t) {}
  void reset() {
    for (auto& m : entries_) m = store::HostMirror<Entry, Allocator>(m.layout(), store::kUnlimited, allocator_);
    for (auto& m : keys_) m = store::HostMirror<Key, Allocator>(m.layout(), store::kUnlimited, allocator_);
  }

  // Everything is resident: reserve = resident = full = the pages held; there is no host mirror.
  FootprintReport footprint() const {
    FootprintReport r;
    for (auto const& m : entries_) r.entries += {m.allocated_bytes(), m.allocated_bytes(), m.allocated_bytes(), 0};
    for (auto const& m : keys_) r.keys += {m.allocated_bytes(), m.allocated_bytes(), m.allocated_bytes(), 0};
    return r;
  }

 private:
  Allocator allocator_;
  std::vector<store::HostMirror<Entry, Allocator>> entries_;
  std::vector<store::HostMirror<Key, Allocator>> keys_;
};
static_assert(kv_controller<FullResident<>>);

}  // namespace flashmemory::lsa
