// flashmemory/lsa/lookahead.hpp — the Lookahead controller: LSA's two levels over one sequence's CSA KV
// (lsa.md §2, design.md §1). Host reference: every step runs to completion before the next.
//
//   Lookahead<Scorer, Policy, Tau> lsa(scorer, policy, entry_layout, key_layout, {.csa_layers = 21,
//                                      .target_layers = {10, 12, 20}, .reserve_cells = 500});
//
// Chunks. Every chunk of every CSA layer goes to that layer's host mirrors (attention entry and index key);
// one chunk→cell table maps the resident pages of all layers to reserve cells. A page opened by an append is
// given a cell at once when one is free (or its least recently used holder is outside the current set), so
// the newest chunks are readable the step they appear; otherwise it becomes resident at the next window.
//
// Level 2 (every step, every CSA layer): score() rates the readable chunks with the native Lightning Indexer,
// reading their index keys from the reserve (the others are −∞); select() keeps the native top-k of the
// readable chunks; rows are cell · chunks_per_page + slot, and attention reads them from the reserve (gather).
//
// Level 1 (once per window): windows end where the position crosses a multiple of τ (the Tau template argument,
// or LookaheadOptions::tau when set at run time) and after the first step, e.g. the prefill. At the end of that step the scorer rates every chunk from the offered hidden
// states and the target layers' index keys, the policy picks the pages, the recall plan moves them (LRU,
// current set protected; recall/plan.hpp) and the new table is published after the copies
// (recall/host_engine.hpp). The set is thus stale by at most one window, as published.
//
// Prefill on full KV (`full_prefill`): the paper serves the prompt on prefill machines that hold the whole KV
// and hands the sequence to decode machines that run LSA. With the option set, Level 2 reads every chunk from
// the mirrors and Level 1 waits (the inputs of every step are offered, the last ones kept) until hand_over()
// sizes the reserve and runs Level 1 once: from then on the decode steps read only what it selected. A
// sequence that is never handed over is the native model.
//
// Host RAM: `host_cap_bytes` caps all mirrors together; the append that would pass it fails with
// errc::out_of_memory before anything changes, and the controller stays usable.
#pragma once

#include <flashmemory/core/error.hpp>
#include <flashmemory/indexer/concepts.hpp>
#include <flashmemory/indexer/recency.hpp>
#include <flashmemory/indexer/reference.hpp>
#include <flashmemory/layout/concepts.hpp>
#include <flashmemory/layout/f32_records.hpp>
#include <flashmemory/lsa/concepts.hpp>
#include <flashmemory/recall/host_engine.hpp>
#include <flashmemory/recall/plan.hpp>
#include <flashmemory/residency/concepts.hpp>
#include <flashmemory/residency/recency_tail.hpp>
#include <flashmemory/store/allocator.hpp>
#include <flashmemory/store/chunk_cell_table.hpp>
#include <flashmemory/store/chunk_store.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

namespace flashmemory::lsa {

struct LookaheadOptions {
  index_t csa_layers = 0;              // CSA layers of the model
  std::vector<index_t> target_layers;  // the CSA layers whose hidden states and keys feed Level 1, in scorer order
  index_t reserve_cells = 0;           // resident pages at most (store::cells_for_budget / cells_for_fraction)
  std::size_t host_cap_bytes = store::kUnlimited;  // all mirrors together
  index_t tau = 0;                     // the window length τ in tokens; 0: the Tau template argument
  bool full_prefill = false;           // read every chunk from the mirrors until hand_over()
};

struct LookaheadStats {
  index_t windows = 0;         // Level-1 runs
  index_t fallbacks = 0;       // windows where the policy fell back (ResidentSet::fallback)
  index_t selected_pages = 0;  // pages of the latest selected set
  index_t opened_pages = 0;    // pages opened by appends that got a cell at once
  index_t deferred_pages = 0;  // pages opened by appends that had to wait for the next window
  recall::RecallStats recall;
};

template <indexer::indexer_scorer Scorer, residency::residency_policy Policy, index_t Tau = 64,
          layout::chunk_layout Entry = layout::F32Records, layout::chunk_layout Key = layout::F32Records,
          store::byte_allocator Allocator = store::HostAllocator>
class Lookahead {
  static_assert(Tau > 0, "the window length τ must be positive");

 public:
  using EntryStore = store::ChunkStore<Entry, Allocator, Allocator>;
  using KeyStore = store::ChunkStore<Key, Allocator, Allocator>;
  static constexpr index_t kTau = Tau;

  Lookahead(Scorer scorer, Policy policy, Entry const& entry, Key const& key, LookaheadOptions options, Allocator allocator = {})
      : scorer_(std::move(scorer)), policy_(std::move(policy)), options_(std::move(options)),
        tau_(options_.tau > 0 ? options_.tau : Tau), per_(entry.chunks_per_page()), prefilling_(options_.full_prefill),
        allocator_(allocator),
        table_(options_.reserve_cells, per_), lru_(options_.reserve_cells) {
    index_t L = options_.csa_layers;
    if (key.chunks_per_page() != per_ || L < 0 || options_.reserve_cells < 0 || options_.tau < 0)
      fail(errc::invalid_argument, "Lookahead: ", L, " CSA layers, ", options_.reserve_cells, " cells, pages of ", per_,
           " entries and ", key.chunks_per_page(), " keys (must agree), τ = ", options_.tau);
    for (index_t t : options_.target_layers)
      if (t < 0 || t >= L) fail(errc::invalid_argument, "Lookahead: target layer ", t, " is not one of the ", L, " CSA layers");
    // The mirrors grow in lockstep, so the cap is a whole number of pages for each of them.
    std::size_t cell_bytes = static_cast<std::size_t>(L) * static_cast<std::size_t>(layout::page_bytes(entry) + layout::page_bytes(key));
    std::size_t pages = options_.host_cap_bytes == store::kUnlimited || cell_bytes == 0 ? 0 : options_.host_cap_bytes / cell_bytes;
    auto cap = [&](auto const& l) {
      return options_.host_cap_bytes == store::kUnlimited ? store::kUnlimited : pages * static_cast<std::size_t>(layout::page_bytes(l));
    };
    for (index_t l = 0; l < L; ++l) {
      entries_.emplace_back(entry, options_.reserve_cells, cap(entry), allocator, allocator);
      keys_.emplace_back(key, options_.reserve_cells, cap(key), allocator, allocator);
    }
    inputs_.resize(options_.target_layers.size());
    target_keys_.resize(options_.target_layers.size());
  }

  // ---- chunks --------------------------------------------------------------------------------------
  void append(index_t layer, std::span<float const> entry, std::span<float const> key) {
    check_layer(layer);
    auto& e = entries_[static_cast<std::size_t>(layer)];
    auto& k = keys_[static_cast<std::size_t>(layer)];
    if (static_cast<index_t>(entry.size()) != e.layout().channels() || static_cast<index_t>(key.size()) != k.layout().channels())
      fail(errc::bad_shape, "Lookahead: layer ", layer, " appends an entry of ", entry.size(), " and a key of ", key.size(),
           " channels, expected ", e.layout().channels(), " and ", k.layout().channels());
    e.mirror.make_room();  // a full host cap fails here, before the table or any mirror changes
    k.mirror.make_room();
    index_t chunk = e.mirror.num_chunks();
    if (!prefilling_ && chunk % per_ == 0 && table_.cell_of(chunk / per_) < 0) open_page(chunk / per_);
    e.append(entry, table_);
    k.append(key, table_);
    if (auto t = target_index(layer); t >= 0) {
      auto& keys = target_keys_[static_cast<std::size_t>(t)];
      keys.resize(keys.size() + key.size());
      k.mirror.decode(chunk, std::span<float>(keys).last(key.size()));
    }
  }

  // ---- Level 2 --------------------------------------------------------------------------------------
  // Whether chunk `chunk` of `layer` can be read from the reserve now.
  bool readable(index_t layer, index_t chunk) const {
    if (prefilling_) return chunk < entries(layer).mirror.num_chunks();
    index_t cell = table_.cell_of(chunk / per_);
    return cell >= 0 && chunk % per_ < entries(layer).reserve.written(cell) && chunk % per_ < keys(layer).reserve.written(cell);
  }

  // Native scores of the readable chunks, from the index keys in the reserve; −∞ for the others.
  void score(index_t layer, matrix_view<float const> q, vector_view<float const> w, std::span<float> scores) const {
    auto const& ks = keys(layer);
    index_t n = ks.mirror.num_chunks(), d = ks.layout().channels();
    if (static_cast<index_t>(scores.size()) != n)
      fail(errc::bad_shape, "Lookahead: layer ", layer, " has ", n, " chunks, given ", scores.size(), " scores to write");
    std::vector<std::int32_t> chunks, rows;
    for (index_t c = 0; c < n; ++c)
      if (readable(layer, c)) chunks.push_back(static_cast<std::int32_t>(c)), rows.push_back(row_of(c));
    auto m = static_cast<index_t>(rows.size());
    std::vector<float> k(static_cast<std::size_t>(m * d)), s(static_cast<std::size_t>(m));
    read(ks, rows, matrix_view<float>(k.data(), m, d));
    indexer::index_scores(q, w, matrix_view<float const>(k.data(), m, d), s);
    std::fill(scores.begin(), scores.end(), -std::numeric_limits<float>::infinity());
    for (std::size_t i = 0; i < chunks.size(); ++i) scores[static_cast<std::size_t>(chunks[i])] = s[i];
  }

  Selection select(index_t layer, std::span<float const> scores, index_t k) const {
    index_t n = entries(layer).mirror.num_chunks();
    if (static_cast<index_t>(scores.size()) != n)
      fail(errc::bad_shape, "Lookahead: layer ", layer, " has ", n, " chunks, given ", scores.size(), " scores");
    std::vector<std::uint8_t> allowed(static_cast<std::size_t>(n));
    for (index_t c = 0; c < n; ++c) allowed[static_cast<std::size_t>(c)] = readable(layer, c);
    Selection s;
    s.chunks = indexer::top_k(scores, k, allowed);
    for (std::int32_t c : s.chunks) s.rows.push_back(row_of(c));
    return s;
  }

  void gather(index_t layer, std::span<std::int32_t const> rows, matrix_view<float> out) const { read(entries(layer), rows, out); }

  // ---- Level 1 --------------------------------------------------------------------------------------
  bool boundary_due(index_t tokens) const noexcept { return prefilling_ || windows_ == 0 || (position_ + tokens) / tau_ > position_ / tau_; }

  void offer(index_t layer, TargetInput const& in) {
    check_layer(layer);
    if (auto t = target_index(layer); t >= 0) {
      std::size_t d = static_cast<std::size_t>(keys(layer).layout().channels());
      if (in.query.size() != in.head_weights.size() * d)
        fail(errc::bad_shape, "Lookahead: layer ", layer, " query of ", in.query.size(), " values for ",
             in.head_weights.size(), " head weights of ", d, " channels");
      auto& slot = inputs_[static_cast<std::size_t>(t)];
      slot.hidden.assign(in.hidden.begin(), in.hidden.end());
      slot.query.assign(in.query.begin(), in.query.end());
      slot.head_weights.assign(in.head_weights.begin(), in.head_weights.end());
    }
  }
  // Labels of the next window for an Oracle scorer (evaluation only); used by the next Level-1 run.
  void offer_future(std::span<float const> labels) { future_.assign(labels.begin(), labels.end()); }

  void end_step(index_t tokens) {
    if (tokens <= 0) fail(errc::invalid_argument, "Lookahead: a step of ", tokens, " tokens");
    bool boundary = boundary_due(tokens);
    position_ += tokens;
    if (boundary && !prefilling_) refresh();
  }

  // Ends a full-KV prefill (LookaheadOptions::full_prefill): the reserve gets `reserve_cells` cells, and Level 1
  // runs with the inputs of the last step; its set is recalled from the mirrors and serves the next window.
  void hand_over(index_t reserve_cells) {
    if (!prefilling_) fail(errc::invalid_argument, "Lookahead: hand_over() ends a full-KV prefill, and none is running");
    if (reserve_cells < 0) fail(errc::invalid_argument, "Lookahead: hand_over() to a reserve of ", reserve_cells, " cells");
    for (auto& s : entries_) s.reserve = decltype(s.reserve)(s.layout(), reserve_cells, allocator_);
    for (auto& s : keys_) s.reserve = decltype(s.reserve)(s.layout(), reserve_cells, allocator_);
    options_.reserve_cells = reserve_cells;
    table_ = store::ChunkCellTable(reserve_cells, per_);
    lru_ = recall::CellLru(reserve_cells);
    prefilling_ = false;
    refresh();
  }

  // Runs Level 1 now: score every chunk, select, recall, publish.
  void refresh() {
    if (prefilling_) fail(errc::invalid_argument, "Lookahead: Level 1 during a full-KV prefill; hand_over() ends it first");
    index_t n = entries_.empty() ? 0 : entries_[0].mirror.num_chunks();
    for (index_t l = 0; l < csa_layers(); ++l)
      if (entries(l).mirror.num_chunks() != n || keys(l).mirror.num_chunks() != n)
        fail(errc::invalid_argument, "Lookahead: Level 1 at position ", position_, " found CSA layer ", l, " at ",
             entries(l).mirror.num_chunks(), " entries / ", keys(l).mirror.num_chunks(), " keys, layer 0 at ", n);
    std::vector<indexer::ScoringLayer> layers;
    for (std::size_t t = 0; t < inputs_.size(); ++t) {
      auto const& in = inputs_[t];
      index_t d = keys(options_.target_layers[t]).layout().channels(), H = static_cast<index_t>(in.head_weights.size());
      layers.push_back({.hidden = vector_view<float const>(in.hidden.data(), static_cast<index_t>(in.hidden.size())),
                        .keys = matrix_view<float const>(target_keys_[t].data(), n, d),
                        .query = matrix_view<float const>(in.query.data(), H, H > 0 ? d : 0),
                        .head_weights = vector_view<float const>(in.head_weights.data(), H)});
    }
    std::vector<float> scores(static_cast<std::size_t>(n));
    scorer_.score({.position = position_ - 1, .num_chunks = n, .layers = layers, .future = future_}, scores);
    residency::ResidentSet set =
        policy_.select({.num_chunks = n, .chunks_per_page = per_, .scores = scores, .probabilities = Scorer::kProbabilities});
    recall::RecallPlan plan = recall::plan_recall(table_, lru_, set);
    stats_.recall += recall::execute_recall(plan, table_, entries_, keys_);
    lru_.touch(table_, set);
    current_ = std::move(set);
    ++windows_;
    stats_.windows = windows_;
    stats_.fallbacks += current_.fallback;
    stats_.selected_pages = static_cast<index_t>(current_.pages.size());
    future_.clear();  // inputs serve one window: a later boundary without new ones must not reuse them
    for (auto& in : inputs_) in = {};
  }

  // Forgets the sequence: every chunk, the table, the resident set, the statistics; keeps the scorer, the
  // policy and the sizes.
  void reset() {
    for (auto& s : entries_) s = EntryStore(s.layout(), options_.reserve_cells, s.mirror.max_bytes(), allocator_, allocator_);
    for (auto& s : keys_) s = KeyStore(s.layout(), options_.reserve_cells, s.mirror.max_bytes(), allocator_, allocator_);
    table_ = store::ChunkCellTable(options_.reserve_cells, per_);
    lru_ = recall::CellLru(options_.reserve_cells);
    current_ = {};
    for (auto& in : inputs_) in = {};
    for (auto& k : target_keys_) k.clear();
    future_.clear();
    position_ = windows_ = 0;
    prefilling_ = options_.full_prefill;
    stats_ = {};
  }

  // ---- state and statistics -------------------------------------------------------------------------
  index_t csa_layers() const noexcept { return static_cast<index_t>(entries_.size()); }
  index_t tau() const noexcept { return tau_; }
  index_t position() const noexcept { return position_; }
  // Whether a full-KV prefill is running (LookaheadOptions::full_prefill, until hand_over()).
  bool prefilling() const noexcept { return prefilling_; }
  LookaheadOptions const& options() const noexcept { return options_; }
  residency::ResidentSet const& resident_set() const noexcept { return current_; }
  store::ChunkCellTable const& table() const noexcept { return table_; }
  EntryStore const& entries(index_t layer) const { return entries_.at(static_cast<std::size_t>(layer)); }
  KeyStore const& keys(index_t layer) const { return keys_.at(static_cast<std::size_t>(layer)); }
  LookaheadStats const& stats() const noexcept { return stats_; }
  // The scorer and the policy, replaceable between windows (one prefill, several policies compared).
  Scorer& scorer() noexcept { return scorer_; }
  Policy& policy() noexcept { return policy_; }
  Policy const& policy() const noexcept { return policy_; }

  FootprintReport footprint() const {
    FootprintReport r;
    index_t resident = table_.resident_pages();
    auto add = [&](KindFootprint& f, auto const& s) {
      f += {s.reserve.bytes(), static_cast<std::size_t>(resident) * s.reserve.page_bytes(),
            static_cast<std::size_t>(s.mirror.num_pages()) * s.reserve.page_bytes(), s.mirror.allocated_bytes()};
    };
    for (auto const& s : entries_) add(r.entries, s);
    for (auto const& s : keys_) add(r.keys, s);
    return r;
  }

 private:
  struct Input {
    std::vector<float> hidden, query, head_weights;
  };

  void check_layer(index_t layer) const {
    if (layer < 0 || layer >= csa_layers()) fail(errc::invalid_argument, "Lookahead: CSA layer ", layer, " of ", csa_layers());
  }
  // Pool rows: reserve rows (cell · chunks per page + slot), or chunk indices in the mirror while prefilling.
  std::int32_t row_of(index_t chunk) const {
    return static_cast<std::int32_t>(prefilling_ ? chunk : table_.cell_of(chunk / per_) * per_ + chunk % per_);
  }
  template <class Store>
  void read(Store const& s, std::span<std::int32_t const> rows, matrix_view<float> out) const {
    if (!prefilling_) return s.reserve.gather(rows, out);
    for (std::size_t i = 0; i < rows.size(); ++i)
      s.mirror.decode(rows[i], {&out(static_cast<index_t>(i), 0), static_cast<std::size_t>(out.extent(1))});
  }
  index_t target_index(index_t layer) const {
    auto it = std::find(options_.target_layers.begin(), options_.target_layers.end(), layer);
    return it == options_.target_layers.end() ? -1 : static_cast<index_t>(it - options_.target_layers.begin());
  }
  // A new page gets a cell now if one is free or held by a page outside the current set (LRU).
  void open_page(index_t page) {
    std::vector<index_t> cells = recall::eviction_order(table_, lru_, current_);
    if (cells.empty()) {
      ++stats_.deferred_pages;
      return;
    }
    index_t cell = cells.front();
    recall::RecallPlan plan;
    if (!table_.is_free(cell)) plan.evict.push_back({table_.page_of(cell), cell});
    recall::retire(plan, table_, entries_, keys_);
    stats_.recall.pages_evicted += static_cast<index_t>(plan.evict.size());
    table_.map(page, cell);  // nothing to copy: the page has no chunk yet, and its slots are readable once written
    lru_.touch(cell);
    ++stats_.opened_pages;
  }

  Scorer scorer_;
  Policy policy_;
  LookaheadOptions options_;
  index_t tau_;
  index_t per_;
  bool prefilling_;
  Allocator allocator_;
  std::vector<EntryStore> entries_;
  std::vector<KeyStore> keys_;
  store::ChunkCellTable table_;
  recall::CellLru lru_;
  residency::ResidentSet current_;
  std::vector<Input> inputs_;
  std::vector<std::vector<float>> target_keys_;  // decoded index keys of the target layers, [chunks, d] each
  std::vector<float> future_;
  index_t position_ = 0;
  index_t windows_ = 0;
  LookaheadStats stats_;
};
static_assert(kv_controller<Lookahead<indexer::Recency, residency::RecencyTail>>);

}  // namespace flashmemory::lsa
