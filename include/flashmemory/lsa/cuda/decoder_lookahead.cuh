// flashmemory/lsa/cuda/decoder_lookahead.cuh — LSA for a CUDA decoder whose own kernels emit the chunks
// (models/deepseek_v4/cuda/decoder.cuh): lsa::Lookahead (lookahead.hpp) on the GPU, at the model's channel
// counts and in its storage type (bf16 or float32 rows).
//
//   using Lsa = fm::lsa::cuda::DecoderLookahead<fm::indexer::MemoryIndexer, fm::residency::Published, fm::bfloat16>;
//   v4::Decoder<fm::cuda::Backend, Lsa> gpu(config, weights, {.max_context = 65536},
//                                           Lsa(scorer, policy, {.csa_layers = 21, .target_layers = {10, 12, 20},
//                                                                .reserve_cells = 500}));
//
// Device side, per CSA layer: reserves of attention entries and of index keys ([cells · per, channels] rows:
// the pools the decoder's Level-2 kernels read), the row list of the recall engine (row r readable iff
// rows[r] == r), and a ring of the newest chunks; one page → cell array for all layers (published cells
// only, −1 otherwise). The decoder's compressors write every new chunk into the ring and, when its page has a
// published cell, into that cell, marking its row readable (models/deepseek_v4/cuda/compressor.cuh:
// PagedRows): a new chunk is readable the step it appears, with no host work.
//
// Host side, between steps (never inside a captured step):
//   begin_step(tokens)  pages whose first chunk the step will emit are opened — a free cell, or the least
//                       recently used one outside the current set; with none the page waits for Level 1 — as
//                       lsa::Lookahead does on append. Host work inside a window only where a page starts
//                       (one small upload, no synchronisation); opening the window's pages at its boundary
//                       instead would evict their cells' pages a part of a window early.
//   end_step(tokens)    at a window boundary (the position crosses a multiple of τ, and after the first step):
//                       the ring is copied to the pinned host mirrors, which hold every chunk; Level 1 runs on
//                       the host — publish the previous recall, score every chunk (the scorer reads the offered
//                       inputs and the target layers' keys, decoded from the mirrors), select, plan, and start
//                       the recall on the copy stream (recall/cuda/engine.cuh), published at the next boundary:
//                       the set is stale by one window, as published. The ring is also copied out whenever the
//                       next step's chunks might not fit.
// Level-1 inputs: every step the decoder copies the last token's attention input, native indexer query and
// head weights at each target layer into offer(t) (device); Level 1 reads the latest.
//
// Prefill on full KV (lsa::LookaheadOptions::full_prefill), the paper's prefill/decode split as in lsa::Lookahead:
// every page of the prompt gets a cell of the reserve (size it for the prompt; a page without a free cell is
// an error) and Level 1 waits; hand_over(cells) then shrinks the reserve to `cells` cells holding Level 1's
// set, recalled from the mirrors and published before the first decode step. Never handed over, the
// sequence is the native model.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/cuda/pinned_buffer.cuh>
#include <flashmemory/core/cuda/stream.cuh>
#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/indexer/concepts.hpp>
#include <flashmemory/layout/bf16_records.hpp>
#include <flashmemory/layout/f32_records.hpp>
#include <flashmemory/lsa/concepts.hpp>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/recall/cuda/engine.cuh>
#include <flashmemory/recall/plan.hpp>
#include <flashmemory/residency/concepts.hpp>
#include <flashmemory/store/chunk_store.hpp>
#include <flashmemory/store/cuda/allocators.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace flashmemory::lsa::cuda {

// What the decoder tells its controller about the model (DecoderLookahead::bind).
struct DecoderShape {
  index_t entry_channels = 0;  // head_dim: one attention entry
  index_t key_channels = 0;    // index_head_dim: one index key
  index_t hidden = 0;          // hidden_size: the offered attention input
  index_t index_heads = 0;     // index_n_heads: the offered query [heads, key_channels] and head weights [heads]
  float head_weight_fold = 1;  // the constant factor of the head weights (applied to the offered ones)
  index_t ratio = 4;           // tokens per chunk (compress_rate_csa)
  index_t max_context = 0;     // tokens a sequence may hold
  index_t max_step = 1;        // tokens one step may add
};

template <indexer::indexer_scorer Scorer, residency::residency_policy Policy, class Storage = bfloat16>
class DecoderLookahead {
  static_assert(std::is_same_v<Storage, float> || std::is_same_v<Storage, bfloat16>, "rows are float32 or bf16");

 public:
  using storage = Storage;
  using Layout = std::conditional_t<std::is_same_v<Storage, float>, layout::F32Records, layout::Bf16Records>;
  using Store = store::ChunkStore<Layout, store::cuda::PinnedAllocator, store::cuda::DeviceAllocator>;
  using Engine = recall::cuda::RecallEngine<Store, Store>;
  using Options = ::flashmemory::lsa::LookaheadOptions;
  using Stats = ::flashmemory::lsa::LookaheadStats;

  // The host reference's options (lsa/lookahead.hpp; not lsa::cuda::LookaheadOptions of the V4-Flash formats);
  // chunks_per_page sets the page size; tau 0 means 64.
  DecoderLookahead(Scorer scorer, Policy policy, Options options, index_t chunks_per_page = 64)
      : scorer_(std::move(scorer)), policy_(std::move(policy)), options_(std::move(options)), per_(chunks_per_page) {
    if (options_.tau == 0) options_.tau = 64;
    if (options_.csa_layers < 0 || options_.reserve_cells < 1 || options_.tau < 0 || per_ <= 0)
      fail(errc::invalid_argument, "DecoderLookahead: ", options_.csa_layers, " CSA layers, ", options_.reserve_cells,
           " cells (at least 1), τ = ", options_.tau, ", pages of ", per_, " chunks");
    for (index_t t : options_.target_layers)
      if (t < 0 || t >= options_.csa_layers)
        fail(errc::invalid_argument, "DecoderLookahead: target layer ", t, " is not one of the ", options_.csa_layers, " CSA layers");
  }

  // Called once by the decoder, before any step: allocates every buffer; `decode` is the decoder's stream.
  void bind(DecoderShape const& shape, cudaStream_t decode) {
    if (bound_) fail(errc::invalid_argument, "DecoderLookahead: already bound to a decoder (one controller per decoder)");
    if (shape.entry_channels <= 0 || shape.key_channels <= 0 || shape.ratio <= 0 || shape.max_context <= 0 || shape.max_step <= 0)
      fail(errc::invalid_argument, "DecoderLookahead: entries of ", shape.entry_channels, " and keys of ", shape.key_channels,
           " channels, ratio ", shape.ratio, ", max context ", shape.max_context, ", steps of ", shape.max_step, " tokens");
    shape_ = shape;
    decode_ = decode;
    bound_ = true;
    auto const L = static_cast<std::size_t>(options_.csa_layers);
    // The ring holds what a window or a step emits: single-token steps are copied out at boundaries only,
    // longer ones (prefill) before the next step when they have filled it.
    ring_rows_ = std::max(options_.tau, shape.max_step) / shape.ratio + 2;
    index_t const pages = (shape.max_context / shape.ratio + per_ - 1) / per_;
    for (std::size_t l = 0; l < L; ++l) {
      entry_rings_.emplace_back(ring_size(entry_layout()), "DecoderLookahead: entry ring");
      key_rings_.emplace_back(ring_size(key_layout()), "DecoderLookahead: key ring");
    }
    entry_staging_ = flashmemory::cuda::PinnedBuffer<Storage>(L * ring_size(entry_layout()), {}, "DecoderLookahead: entry staging");
    key_staging_ = flashmemory::cuda::PinnedBuffer<Storage>(L * ring_size(key_layout()), {}, "DecoderLookahead: key staging");
    cells_ = flashmemory::cuda::DeviceBuffer<std::int32_t>(static_cast<std::size_t>(std::max<index_t>(pages, 1)), "DecoderLookahead: page cells");
    cells_staging_ = flashmemory::cuda::PinnedBuffer<std::int32_t>(cells_.size(), {}, "DecoderLookahead: page cells staging");
    std::size_t const targets = options_.target_layers.size();
    offer_ = flashmemory::cuda::DeviceBuffer<float>(std::max<std::size_t>(targets * offer_floats(), 1), "DecoderLookahead: offered inputs");
    offer_host_ = flashmemory::cuda::PinnedBuffer<float>(offer_.size(), {}, "DecoderLookahead: offered inputs staging");
    reset();
  }

  // ---- what the decoder's kernels read and write (device) -----------------------------------------------
  index_t csa_layers() const noexcept { return options_.csa_layers; }
  index_t chunks_per_page() const noexcept { return per_; }
  // Rows of the reserve now (it shrinks at hand_over); the decoder's buffers are sized for the first.
  index_t pool_rows() const { return engine_->table().cells() * per_; }
  index_t max_pool_rows() const noexcept { return options_.reserve_cells * per_; }
  index_t ring_rows() const noexcept { return ring_rows_; }
  Storage* entry_pool(index_t layer) { return reinterpret_cast<Storage*>(entries_.at(static_cast<std::size_t>(layer)).reserve.data()); }
  Storage* key_pool(index_t layer) { return reinterpret_cast<Storage*>(keys_.at(static_cast<std::size_t>(layer)).reserve.data()); }
  Storage* entry_ring(index_t layer) { return entry_rings_.at(static_cast<std::size_t>(layer)).data(); }
  Storage* key_ring(index_t layer) { return key_rings_.at(static_cast<std::size_t>(layer)).data(); }
  std::int32_t* rows(index_t layer) { return engine_->device_rows(layer); }
  std::int32_t const* page_cells() const noexcept { return cells_.data(); }
  // Which target (scorer order) CSA layer `layer` is, or −1.
  index_t target_index(index_t layer) const {
    auto it = std::find(options_.target_layers.begin(), options_.target_layers.end(), layer);
    return it == options_.target_layers.end() ? -1 : static_cast<index_t>(it - options_.target_layers.begin());
  }
  // Target t's offered inputs: hidden [D] | query [heads · key_channels] | head weights [heads] (device).
  float* offer(index_t t) { return offer_.data() + static_cast<std::size_t>(t) * offer_floats(); }

  // ---- steps (host, between the decoder's steps) ----------------------------------------------------------
  bool boundary_due(index_t tokens) const noexcept {
    return !prefilling_ && (windows_ == 0 || (position_ + tokens) / options_.tau > position_ / options_.tau);
  }

  void begin_step(index_t tokens) {
    expect_bound();
    if (tokens <= 0 || tokens > shape_.max_step)
      fail(errc::invalid_argument, "DecoderLookahead: a step of ", tokens, " tokens (1 to ", shape_.max_step, ")");
    if (emitted(position_ + tokens) - mirrored_ > ring_rows_) write_back();
    open_pages(emitted(position_ + tokens));
  }

  void end_step(index_t tokens) {
    bool const boundary = boundary_due(tokens);
    position_ += tokens;
    if (boundary) refresh();
  }

  // Ends a full-KV prefill: the reserve shrinks to `cells` cells (at most the prefill's) holding the set Level 1
  // chooses now; the decoder must drop what it captured of the old reserve (Decoder<cuda>::hand_over does).
  void hand_over(index_t cells) {
    expect_bound();
    if (!prefilling_) fail(errc::invalid_argument, "DecoderLookahead: hand_over() ends a full-KV prefill, and none is running");
    if (cells < 1 || cells > options_.reserve_cells)
      fail(errc::invalid_argument, "DecoderLookahead: hand_over() to ", cells, " cells (1 to the prefill reserve's ",
           options_.reserve_cells, ")");
    write_back();
    FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(decode_));  // nothing reads the old reserve any more
    engine_.reset();
    for (auto& s : entries_) s.reserve = decltype(s.reserve)(s.layout(), cells);
    for (auto& s : keys_) s.reserve = decltype(s.reserve)(s.layout(), cells);
    engine_.emplace(options_.csa_layers, cells, per_, decode_, copy_.get());
    lru_ = recall::CellLru(cells);
    current_ = {};
    prefilling_ = false;
    refresh();
    FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(copy_.get()));
    engine_->finish(entries_, keys_);  // published now: the first decode window reads the set
    upload_cells();
  }
  bool prefilling() const noexcept { return prefilling_; }

  // Oracle labels of the next window (evaluation only), for the next Level-1 run.
  void offer_future(std::span<float const> labels) { future_.assign(labels.begin(), labels.end()); }

  // Runs Level 1 now (the decode stream is drained first).
  void refresh() {
    expect_bound();
    write_back();
    engine_->finish(entries_, keys_);
    index_t const n = mirrored_;
    FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(offer_host_.data(), offer_.data(), offer_.size() * sizeof(float), cudaMemcpyDeviceToHost, decode_));
    FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(decode_));
    index_t const D = shape_.hidden, H = shape_.index_heads, d = shape_.key_channels;
    std::vector<indexer::ScoringLayer> layers;
    for (std::size_t t = 0; t < options_.target_layers.size(); ++t) {
      float* in = offer_host_.data() + t * offer_floats();
      for (index_t h = 0; h < H; ++h) in[D + H * d + h] *= shape_.head_weight_fold;
      layers.push_back({.hidden = vector_view<float const>(in, D),
                        .keys = matrix_view<float const>(target_keys_[t].data(), n, d),
                        .query = matrix_view<float const>(in + D, H, d),
                        .head_weights = vector_view<float const>(in + D + H * d, H)});
    }
    std::vector<float> scores(static_cast<std::size_t>(n));
    scorer_.score({.position = position_ - 1, .num_chunks = n, .layers = layers, .future = future_}, scores);
    residency::ResidentSet set =
        policy_.select({.num_chunks = n, .chunks_per_page = per_, .scores = scores, .probabilities = Scorer::kProbabilities});
    recall::RecallPlan const plan = recall::plan_recall(engine_->table(), lru_, set);
    engine_->begin(plan, entries_, keys_);
    lru_.touch(engine_->table(), set);
    current_ = std::move(set);
    ++windows_;
    stats_.windows = windows_;
    stats_.fallbacks += current_.fallback;
    stats_.selected_pages = static_cast<index_t>(current_.pages.size());
    future_.clear();
    upload_cells();
  }

  // Forgets the sequence (every chunk, the table, the statistics); keeps the scorer, the policy and the sizes.
  void reset() {
    expect_bound();
    FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(decode_));
    engine_.reset();  // its events and buffers go before the stores they point into
    entries_.clear();
    keys_.clear();
    // The mirrors grow in lockstep, so the host cap is a whole number of pages for each of them.
    auto const page_bytes = [](Layout const& l) { return static_cast<std::size_t>(layout::page_bytes(l)); };
    std::size_t const cell_bytes = static_cast<std::size_t>(options_.csa_layers) * (page_bytes(entry_layout()) + page_bytes(key_layout()));
    auto cap = [&](Layout const& l) {
      return options_.host_cap_bytes == store::kUnlimited || cell_bytes == 0 ? store::kUnlimited
                                                                              : options_.host_cap_bytes / cell_bytes * page_bytes(l);
    };
    // One pool of pinned slabs for all mirrors, each slab 16 pages of every layer and kind (at least 1 MiB).
    store::cuda::PinnedAllocator const pinned(std::max<std::size_t>(16 * cell_bytes, std::size_t{1} << 20));
    for (index_t l = 0; l < options_.csa_layers; ++l) {
      entries_.emplace_back(entry_layout(), options_.reserve_cells, cap(entry_layout()), pinned);
      keys_.emplace_back(key_layout(), options_.reserve_cells, cap(key_layout()), pinned);
    }
    engine_.emplace(options_.csa_layers, options_.reserve_cells, per_, decode_, copy_.get());
    lru_ = recall::CellLru(options_.reserve_cells);
    current_ = {};
    target_keys_.assign(options_.target_layers.size(), {});
    future_.clear();
    position_ = windows_ = mirrored_ = opened_pages_ = 0;
    prefilling_ = options_.full_prefill;
    stats_ = {};
    upload_cells();
  }

  // ---- state and statistics -----------------------------------------------------------------------------
  index_t position() const noexcept { return position_; }
  index_t num_chunks() const noexcept { return mirrored_; }
  // Pages of every chunk emitted so far.
  index_t history_pages() const noexcept { return bound_ ? (emitted(position_) + per_ - 1) / per_ : 0; }
  Options const& options() const noexcept { return options_; }
  residency::ResidentSet const& resident_set() const noexcept { return current_; }
  store::ChunkCellTable const& table() const { return engine_->table(); }
  Store const& entries(index_t layer) const { return entries_.at(static_cast<std::size_t>(layer)); }
  Store const& keys(index_t layer) const { return keys_.at(static_cast<std::size_t>(layer)); }
  Scorer& scorer() noexcept { return scorer_; }
  Policy& policy() noexcept { return policy_; }
  Stats stats() const {
    Stats s = stats_;
    if (engine_) s.recall = engine_->stats().recall;
    return s;
  }
  recall::cuda::EngineStats engine_stats() const { return engine_ ? engine_->stats() : recall::cuda::EngineStats{}; }
  // Device bytes of the reserves (and the rings, counted as reserve) against the whole history's pages (every
  // chunk emitted so far; the mirrors catch up at the next boundary).
  FootprintReport footprint() const {
    FootprintReport r;
    if (!engine_) return r;
    index_t const resident = engine_->table().resident_pages(), history = history_pages();
    auto add = [&](KindFootprint& f, Store const& s, std::size_t ring_bytes) {
      f += {s.reserve.bytes() + ring_bytes, static_cast<std::size_t>(resident) * s.reserve.page_bytes(),
            static_cast<std::size_t>(history) * s.reserve.page_bytes(), s.mirror.allocated_bytes()};
    };
    for (std::size_t l = 0; l < entries_.size(); ++l) {
      add(r.entries, entries_[l], entry_rings_[l].bytes());
      add(r.keys, keys_[l], key_rings_[l].bytes());
    }
    return r;
  }

 private:
  Layout entry_layout() const { return Layout(shape_.entry_channels, per_); }
  Layout key_layout() const { return Layout(shape_.key_channels, per_); }
  std::size_t ring_size(Layout const& l) const { return static_cast<std::size_t>(ring_rows_ * l.channels()); }
  std::size_t offer_floats() const {
    return static_cast<std::size_t>(shape_.hidden + shape_.index_heads * shape_.key_channels + shape_.index_heads);
  }
  index_t emitted(index_t position) const noexcept { return position / shape_.ratio; }
  void expect_bound() const {
    if (!bound_) fail(errc::invalid_argument, "DecoderLookahead: not bound to a decoder yet (the decoder's constructor binds it)");
  }

  // Pages whose first chunk comes before chunk `to` and that were not opened yet, in order; then the
  // page → cell array, if one opened.
  void open_pages(index_t to) {
    bool opened = false;
    for (; opened_pages_ * per_ < to; ++opened_pages_)
      if (engine_->table().cell_of(opened_pages_) < 0) opened |= open_page(opened_pages_);
    if (opened) upload_cells();
  }

  // A page whose first chunk is about to be emitted gets a cell now if one is free or held by a page outside
  // the current set (least recently used first); otherwise it waits for the next Level 1.
  bool open_page(index_t page) {
    std::vector<index_t> const cells = recall::eviction_order(engine_->table(), lru_, current_);
    auto it = std::find_if(cells.begin(), cells.end(), [&](index_t c) { return !engine_->pending(c); });
    if (prefilling_ && (it == cells.end() || !engine_->table().is_free(*it)))
      fail(errc::out_of_memory, "DecoderLookahead: a full-KV prefill keeps every page, and page ", page,
           " finds no free cell among ", engine_->table().cells(), "; size the reserve for the prompt");
    if (it == cells.end()) {
      ++stats_.deferred_pages;
      return false;
    }
    engine_->open(page, *it, entries_, keys_);
    lru_.touch(*it);
    ++stats_.opened_pages;
    return true;
  }

  // The chunks emitted since the last copy-out go from the rings to the mirrors; those whose page is
  // published in a cell count as written there (the decoder's kernels wrote them).
  void write_back() {
    index_t const n0 = mirrored_, n1 = emitted(position_);
    if (n1 == n0) return;
    if (n1 - n0 > ring_rows_) fail(errc::invalid_argument, "DecoderLookahead: ", n1 - n0, " chunks outran the ring of ", ring_rows_);
    auto const L = static_cast<std::size_t>(options_.csa_layers);
    auto copy_out = [&](std::vector<flashmemory::cuda::DeviceBuffer<Storage>> const& rings, Storage* staging, index_t channels) {
      for (std::size_t l = 0; l < L; ++l)
        for (index_t c = n0; c < n1;) {  // contiguous runs of ring rows
          index_t const row = c % ring_rows_, run = std::min(n1 - c, ring_rows_ - row);
          std::size_t const at = (l * static_cast<std::size_t>(ring_rows_) + static_cast<std::size_t>(row)) * static_cast<std::size_t>(channels);
          FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(staging + at, rings[l].data() + static_cast<std::size_t>(row * channels),
                                                 static_cast<std::size_t>(run * channels) * sizeof(Storage), cudaMemcpyDeviceToHost, decode_));
          c += run;
        }
    };
    copy_out(entry_rings_, entry_staging_.data(), shape_.entry_channels);
    copy_out(key_rings_, key_staging_.data(), shape_.key_channels);
    FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(decode_));
    auto record = [&](Storage const* staging, std::size_t l, index_t c, index_t channels) {
      Storage const* p = staging + (l * static_cast<std::size_t>(ring_rows_) + static_cast<std::size_t>(c % ring_rows_)) * static_cast<std::size_t>(channels);
      return std::span<std::byte const>(reinterpret_cast<std::byte const*>(p), static_cast<std::size_t>(channels) * sizeof(Storage));
    };
    for (index_t c = n0; c < n1; ++c) {
      for (std::size_t l = 0; l < L; ++l) entries_[l].mirror.make_room(), keys_[l].mirror.make_room();  // a host cap fails here
      index_t const cell = engine_->table().cell_of(c / per_);
      bool const written = cell >= 0 && !engine_->pending(cell);
      for (std::size_t l = 0; l < L; ++l) {
        entries_[l].mirror.append_record(record(entry_staging_.data(), l, c, shape_.entry_channels));
        keys_[l].mirror.append_record(record(key_staging_.data(), l, c, shape_.key_channels));
        if (written) entries_[l].reserve.mark_written(cell, c % per_ + 1), keys_[l].reserve.mark_written(cell, c % per_ + 1);
        if (index_t t = target_index(static_cast<index_t>(l)); t >= 0) {
          auto& k = target_keys_[static_cast<std::size_t>(t)];
          k.resize(k.size() + static_cast<std::size_t>(shape_.key_channels));
          keys_[l].mirror.decode(c, std::span<float>(k).last(static_cast<std::size_t>(shape_.key_channels)));
        }
      }
      mirrored_ = c + 1;
    }
  }

  // The page → cell array the decoder's kernels read: published cells only (a cell being fetched into is
  // caught up from the mirror when it is published, so nothing may write it meanwhile).
  void upload_cells() {
    uploaded_.synchronize();  // the previous upload has read the staging buffer
    for (std::size_t p = 0; p < cells_staging_.size(); ++p) {
      index_t const cell = engine_->table().cell_of(static_cast<index_t>(p));
      cells_staging_[p] = static_cast<std::int32_t>(cell >= 0 && !engine_->pending(cell) ? cell : -1);
    }
    FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(cells_.data(), cells_staging_.data(), cells_.size() * sizeof(std::int32_t),
                                           cudaMemcpyHostToDevice, decode_));
    uploaded_.record(decode_);
  }

  Scorer scorer_;
  Policy policy_;
  Options options_;
  index_t per_;
  DecoderShape shape_;
  bool bound_ = false;
  cudaStream_t decode_ = nullptr;
  flashmemory::cuda::Stream copy_;
  index_t ring_rows_ = 0;
  std::vector<Store> entries_, keys_;
  std::optional<Engine> engine_;
  std::vector<flashmemory::cuda::DeviceBuffer<Storage>> entry_rings_, key_rings_;
  flashmemory::cuda::PinnedBuffer<Storage> entry_staging_, key_staging_;
  flashmemory::cuda::DeviceBuffer<std::int32_t> cells_;
  flashmemory::cuda::PinnedBuffer<std::int32_t> cells_staging_;
  flashmemory::cuda::Event uploaded_;
  flashmemory::cuda::DeviceBuffer<float> offer_;
  flashmemory::cuda::PinnedBuffer<float> offer_host_;
  recall::CellLru lru_;
  residency::ResidentSet current_;
  std::vector<std::vector<float>> target_keys_;
  std::vector<float> future_;
  index_t position_ = 0, windows_ = 0, mirrored_ = 0;
  index_t opened_pages_ = 0;  // pages [0, opened_pages_) had their chance of a cell when their first chunk came
  bool prefilling_ = false;
  Stats stats_;
};

}  // namespace flashmemory::lsa::cuda
