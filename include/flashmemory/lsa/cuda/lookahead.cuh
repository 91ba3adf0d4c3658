// flashmemory/lsa/cuda/lookahead.cuh — the Lookahead controller on the GPU (lsa.md §2), in the device formats
// the kernels read: packed CSA entries (584 B) and fp8 index keys (132 B).
//
// The host reference (lsa/lookahead.hpp) runs each step to completion; here the decode stream runs the steps
// and the host acts only on appends and at window boundaries:
//   Level 2, every step, every CSA layer — select(): the native Lightning Indexer over the layer's row list
//     (the readable reserve rows; the others score −∞) → top-k with the rows as ids → pool rows for sparse
//     attention over pool(layer). Fixed shapes, no allocation, no host synchronisation: capturable.
//   Level 1, every τ steps — end_step() at a boundary: publish the previous recall (recall::cuda::RecallEngine),
//     fused Memory-Indexer scoring (sigmoid, max over target layers) of EVERY chunk from the target layers'
//     keys, kept whole on the device; the scores come back to the host, the policy picks pages, plan_recall
//     (LRU, the new set protected) and the engine starts the copies, published at the next boundary.
// Appends go to the pinned mirrors, are written through to resident cells, and the target layers' keys to
// their full device arrays (sized for options.max_chunks).
#pragma once

#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/cuda/pinned_buffer.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/indexer/cuda/scores.cuh>
#include <flashmemory/indexer/cuda/topk.cuh>
#include <flashmemory/layout/csa_entry.hpp>
#include <flashmemory/layout/index_key.hpp>
#include <flashmemory/lsa/concepts.hpp>
#include <flashmemory/recall/cuda/engine.cuh>
#include <flashmemory/recall/plan.hpp>
#include <flashmemory/residency/concepts.hpp>
#include <flashmemory/store/chunk_store.hpp>
#include <flashmemory/store/cuda/allocators.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <span>
#include <utility>
#include <vector>

namespace flashmemory::lsa::cuda {

struct LookaheadOptions {
  index_t csa_layers = 0;
  std::vector<index_t> target_layers;  // CSA layers whose keys feed Level 1 (at most indexer::cuda::kMaxScoringLayers)
  index_t reserve_cells = 0;           // store::cells_for_budget / cells_for_fraction
  index_t max_chunks = 0;              // the longest history served (the target layers' device keys)
  index_t tau = 64;
};

struct LookaheadStats {
  index_t windows = 0;
  index_t fallbacks = 0;
  index_t selected_pages = 0;
  index_t opened_pages = 0;
  index_t deferred_pages = 0;
  recall::cuda::EngineStats recall;
};

template <residency::residency_policy Policy>
class Lookahead {
 public:
  using Entry = layout::CsaEntryPacked;
  using Key = layout::IndexKeyFp8;
  using EntryStore = store::ChunkStore<Entry, store::cuda::PinnedAllocator, store::cuda::DeviceAllocator>;
  using KeyStore = store::ChunkStore<Key, store::cuda::PinnedAllocator, store::cuda::DeviceAllocator>;
  using Engine = recall::cuda::RecallEngine<EntryStore, KeyStore>;

  Lookahead(Policy policy, LookaheadOptions options, cudaStream_t decode, cudaStream_t copy,
            store::cuda::PinnedAllocator mirror_allocator = store::cuda::PinnedAllocator{})
      : policy_(std::move(policy)), options_(std::move(options)), decode_(decode),
        engine_(options_.csa_layers, options_.reserve_cells, Entry{}.chunks_per_page(), decode, copy),
        lru_(options_.reserve_cells),
        level2_scores_(static_cast<std::size_t>(std::max<index_t>(engine_.rows_per_layer(), 1)), "Lookahead: Level-2 scores"),
        level1_scores_(static_cast<std::size_t>(std::max<index_t>(options_.max_chunks, 1)), "Lookahead: Level-1 scores"),
        host_scores_(static_cast<std::size_t>(std::max<index_t>(options_.max_chunks, 1))) {
    index_t const L = options_.csa_layers, T = static_cast<index_t>(options_.target_layers.size());
    if (L < 0 || options_.reserve_cells < 0 || options_.max_chunks < 0 || options_.tau <= 0 || T > indexer::cuda::kMaxScoringLayers)
      fail(errc::invalid_argument, "Lookahead (CUDA): ", L, " CSA layers, ", options_.reserve_cells, " cells, ", options_.max_chunks,
           " chunks at most, τ = ", options_.tau, ", ", T, " target layers (at most ", indexer::cuda::kMaxScoringLayers, ")");
    for (index_t t : options_.target_layers)
      if (t < 0 || t >= L) fail(errc::invalid_argument, "Lookahead (CUDA): target layer ", t, " is not one of the ", L, " CSA layers");
    for (index_t l = 0; l < L; ++l) {
      entries_.emplace_back(Entry{}, options_.reserve_cells, store::kUnlimited, mirror_allocator);
      keys_.emplace_back(Key{}, options_.reserve_cells, store::kUnlimited, mirror_allocator);
    }
    for (index_t t = 0; t < T; ++t)
      target_keys_.emplace_back(static_cast<std::size_t>(options_.max_chunks) * Key{}.record_bytes(), "Lookahead: target-layer keys");
  }

  // ---- chunks (host records, as layout::CsaEntryPacked / IndexKeyFp8 encode them) --------------------
  void append(index_t layer, std::span<std::byte const> entry, std::span<std::byte const> key) {
    check_layer(layer);
    auto& e = entries_[static_cast<std::size_t>(layer)];
    auto& k = keys_[static_cast<std::size_t>(layer)];
    index_t const chunk = e.mirror.num_chunks(), per = e.layout().chunks_per_page();
    if (chunk >= options_.max_chunks)
      fail(errc::out_of_memory, "Lookahead (CUDA): chunk ", chunk, " of layer ", layer, " is past max_chunks = ", options_.max_chunks);
    e.mirror.make_room();
    k.mirror.make_room();
    if (chunk % per == 0 && engine_.table().cell_of(chunk / per) < 0) open_page(chunk / per);
    e.mirror.append_record(entry);
    k.mirror.append_record(key);
    engine_.write_through(layer, chunk, entries_, keys_);
    if (index_t t = target_index(layer); t >= 0)
      FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(target_keys_[static_cast<std::size_t>(t)].data() + chunk * k.layout().record_bytes(),
                                             k.mirror.record(chunk).data(), key.size(), cudaMemcpyHostToDevice, decode_));
  }

  // ---- Level 2 (every step; enqueued on the decode stream, capturable) --------------------------------
  // q [H, 128] and w [H] of the native indexer (device); out [k] pool rows of the chunks chosen (−1 unused).
  Status select(index_t layer, matrix_view<float const> q, vector_view<float const> w, vector_view<std::int32_t> out) const {
    auto const& k = keys_.at(static_cast<std::size_t>(layer));
    auto rows = engine_.rows(layer);
    matrix_view<std::byte const> pool(k.reserve.data(), engine_.rows_per_layer(), k.layout().record_bytes());
    indexer::cuda::IndexScoreArguments<indexer::cuda::Fp8Keys> sa{
        .q = view<float const, 3>(q.data_handle(), 1, q.extent(0), q.extent(1)),
        .weights = matrix_view<float const>(w.data_handle(), 1, w.extent(0)),
        .keys = std::span(&pool, 1),
        .rows = rows,
        .scores = vector_view<float>(level2_scores_.data(), rows.extent(0)),
        .stream = decode_};
    if (Status st = scores_.run(sa); !st) return st;
    return topk_.run({.scores = matrix_view<float const>(level2_scores_.data(), 1, rows.extent(0)),
                      .allowed = {},
                      .ids = rows,
                      .out = matrix_view<std::int32_t>(out.data_handle(), 1, out.extent(0)),
                      .stream = decode_});
  }
  // The layer's attention entries as pool rows [cells · 64, 584] (device), what select()'s rows index.
  matrix_view<std::byte const> pool(index_t layer) const {
    auto const& e = entries_.at(static_cast<std::size_t>(layer));
    return matrix_view<std::byte const>(e.reserve.data(), engine_.rows_per_layer(), e.layout().record_bytes());
  }

  // ---- Level 1 ----------------------------------------------------------------------------------------
  bool boundary_due(index_t tokens) const noexcept {
    return windows_ == 0 || (position_ + tokens) / options_.tau > position_ / options_.tau;
  }
  // Closes a step of `tokens` tokens; at a boundary runs Level 1 with the Memory Indexer's queries
  // q [targets, H, 128] and head weights w [targets, H] (device, H = 64 or 128).
  void end_step(index_t tokens, view<float const, 3> q, matrix_view<float const> w) {
    if (tokens <= 0) fail(errc::invalid_argument, "Lookahead (CUDA): a step of ", tokens, " tokens");
    bool const boundary = boundary_due(tokens);
    position_ += tokens;
    if (boundary) refresh(q, w);
  }
  void refresh(view<float const, 3> q, matrix_view<float const> w) {
    engine_.finish(entries_, keys_);
    index_t const n = num_chunks();
    std::vector<matrix_view<std::byte const>> pools;
    for (auto const& k : target_keys_) pools.emplace_back(k.data(), n, Key{}.record_bytes());
    if (n > 0 && !pools.empty()) {
      level1_.run({.q = q, .weights = w, .keys = pools, .rows = {}, .scores = vector_view<float>(level1_scores_.data(), n),
                   .sigmoid = true, .combine = indexer::cuda::LayerCombine::max, .stream = decode_})
          .throw_if_error();
      FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(host_scores_.data(), level1_scores_.data(), static_cast<std::size_t>(n) * 4,
                                             cudaMemcpyDeviceToHost, decode_));
    }
    FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(decode_));
    residency::ResidentSet set = policy_.select(
        {.num_chunks = n, .chunks_per_page = Entry{}.chunks_per_page(), .scores = {host_scores_.data(), static_cast<std::size_t>(n)},
         .probabilities = true});
    recall::RecallPlan plan = recall::plan_recall(engine_.table(), lru_, set);
    engine_.begin(plan, entries_, keys_);
    lru_.touch(engine_.table(), set);
    current_ = std::move(set);
    ++windows_;
    stats_.windows = windows_;
    stats_.fallbacks += current_.fallback;
    stats_.selected_pages = static_cast<index_t>(current_.pages.size());
  }

  // ---- state and statistics -----------------------------------------------------------------------
  index_t num_chunks() const noexcept { return entries_.empty() ? 0 : entries_[0].mirror.num_chunks(); }
  index_t position() const noexcept { return position_; }
  LookaheadOptions const& options() const noexcept { return options_; }
  residency::ResidentSet const& resident_set() const noexcept { return current_; }
  Engine const& engine() const noexcept { return engine_; }
  EntryStore const& entries(index_t layer) const { return entries_.at(static_cast<std::size_t>(layer)); }
  KeyStore const& keys(index_t layer) const { return keys_.at(static_cast<std::size_t>(layer)); }
  LookaheadStats stats() const {
    LookaheadStats s = stats_;
    s.recall = engine_.stats();
    return s;
  }
  // Device bytes: the reserves (entries, keys) and the target layers' full key arrays (counted as keys).
  FootprintReport footprint() const {
    FootprintReport r;
    index_t const resident = engine_.table().resident_pages();
    auto add = [&](KindFootprint& f, auto const& s) {
      f += {s.reserve.bytes(), static_cast<std::size_t>(resident) * s.reserve.page_bytes(),
            static_cast<std::size_t>(s.mirror.num_pages()) * s.reserve.page_bytes(), s.mirror.allocated_bytes()};
    };
    for (auto const& s : entries_) add(r.entries, s);
    for (auto const& s : keys_) add(r.keys, s);
    for (auto const& k : target_keys_) r.keys.reserve_bytes += k.bytes();
    return r;
  }

 private:
  void check_layer(index_t layer) const {
    if (layer < 0 || layer >= options_.csa_layers)
      fail(errc::invalid_argument, "Lookahead (CUDA): CSA layer ", layer, " of ", options_.csa_layers);
  }
  index_t target_index(index_t layer) const {
    auto it = std::find(options_.target_layers.begin(), options_.target_layers.end(), layer);
    return it == options_.target_layers.end() ? -1 : static_cast<index_t>(it - options_.target_layers.begin());
  }
  // A new page gets a cell now if one is free or held by a page outside the current set (LRU).
  void open_page(index_t page) {
    std::vector<index_t> cells = recall::eviction_order(engine_.table(), lru_, current_);
    if (cells.empty()) {
      ++stats_.deferred_pages;
      return;
    }
    engine_.open(page, cells.front(), entries_, keys_);
    lru_.touch(cells.front());
    ++stats_.opened_pages;
  }

  Policy policy_;
  LookaheadOptions options_;
  cudaStream_t decode_;
  std::vector<EntryStore> entries_;
  std::vector<KeyStore> keys_;
  Engine engine_;
  recall::CellLru lru_;
  residency::ResidentSet current_;
  std::vector<flashmemory::cuda::DeviceBuffer<std::byte>> target_keys_;
  mutable flashmemory::cuda::DeviceBuffer<float> level2_scores_;
  flashmemory::cuda::DeviceBuffer<float> level1_scores_;
  flashmemory::cuda::PinnedBuffer<float> host_scores_;
  indexer::cuda::IndexScores<indexer::cuda::Fp8Keys> scores_, level1_;
  indexer::cuda::TopK topk_;
  index_t position_ = 0, windows_ = 0;
  LookaheadStats stats_;
};

}  // namespace flashmemory::lsa::cuda
