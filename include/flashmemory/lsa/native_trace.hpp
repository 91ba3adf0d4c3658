// flashmemory/lsa/native_trace.hpp — what full attention reads, step by step: the future an oracle is given
// (evaluation only; lsa.md §4, indexer/oracle.hpp).
//
// NativeTrace is a kv_controller that forwards every call to another one (FullResident by default: the native
// model) and records, for each step, the chunks its Level-2 top-k selected in any CSA layer. Running a decoder
// with it over a token sequence yields the labels of every window; an oracle run of the same sequence, with the
// same steps, is handed them before each window boundary:
//
//   v4::Decoder<cpu::Backend, lsa::NativeTrace<>> native(config, weights, lsa::NativeTrace<>(v4::full_resident_kv(config)));
//   …run the sequence…
//   for each step of `tokens` tokens of the oracle run:  native.kv().offer_future(oracle.kv(), tokens);  oracle.forward(…)
//
// The labels of the window that follows a boundary step ending at position p mark every chunk that existed after
// that step and that a step ending in (p, next window end] selected: exactly what the native top-k of the next
// window reads among the chunks Level 1 can see (chunks born during the window are the append path's business).
//
// Golden labels (lsa.md §4), the Memory Indexer's training targets, are the filtered version, per token: in each
// CSA layer the nucleus of the native top-k (softmax over its k scores, the smallest prefix holding mass p, at
// least the best chunk) votes for its chunks; a chunk is golden at that token when ≥ θ layers vote for it.
// golden(t, τ) is the union over the tokens t+1 … t+τ. Per-layer labels are one layer's nucleus alone, without
// the vote: the target of that layer's Memory Indexer tower, whose max over layers is then the union of θ = 1.
// The trace also keeps the Level-1 input each CSA layer was last offered (the hidden states a dump writes next
// to the labels).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/lsa/concepts.hpp>
#include <flashmemory/lsa/full_resident.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <span>
#include <utility>
#include <vector>

namespace flashmemory::lsa {

// The filter of golden labels: nucleus mass p and layer votes θ (published: 0.6 and 3 of 21 CSA layers).
struct GoldenFilter {
  double nucleus_p = 0.6;
  index_t votes = 3;
};

template <kv_controller Inner = FullResident<>>
class NativeTrace {
 public:
  // One step as the trace saw it.
  struct Step {
    index_t end = 0;                     // position after the step
    index_t chunks = 0;                  // chunks per CSA layer after the step
    std::vector<std::int32_t> selected;  // chunks the step's top-k read in any layer, ascending, unique
  };

  explicit NativeTrace(Inner inner, GoldenFilter filter = {}) : inner_(std::move(inner)), filter_(filter) {}

  Inner& inner() noexcept { return inner_; }
  Inner const& inner() const noexcept { return inner_; }
  std::span<Step const> steps() const noexcept { return steps_; }

  // ---- kv_controller: forwarded, with the selections recorded ---------------------------------------
  void append(index_t layer, std::span<float const> entry, std::span<float const> key) {
    inner_.append(layer, entry, key);
    if (layer == 0) ++chunks_;
  }
  void score(index_t layer, matrix_view<float const> q, vector_view<float const> w, std::span<float> scores) const {
    inner_.score(layer, q, w, scores);
  }
  // Recording does not change what is read. The decoder selects token by token within a layer, so the i-th
  // call of a layer in a step belongs to the step's i-th token.
  Selection select(index_t layer, std::span<float const> scores, index_t k) const {
    Selection s = inner_.select(layer, scores, k);
    pending_.insert(pending_.end(), s.chunks.begin(), s.chunks.end());
    if (static_cast<std::size_t>(layer) >= calls_.size()) calls_.resize(static_cast<std::size_t>(layer) + 1, 0);
    index_t token = position_ + calls_[static_cast<std::size_t>(layer)]++;
    vote(layer, token, scores, s.chunks);
    return s;
  }
  void gather(index_t layer, std::span<std::int32_t const> rows, matrix_view<float> out) const { inner_.gather(layer, rows, out); }
  bool boundary_due(index_t tokens) const { return inner_.boundary_due(tokens); }
  void offer(index_t layer, TargetInput const& in) {
    inner_.offer(layer, in);
    if (static_cast<std::size_t>(layer) >= hidden_.size()) hidden_.resize(static_cast<std::size_t>(layer) + 1);
    hidden_[static_cast<std::size_t>(layer)].assign(in.hidden.begin(), in.hidden.end());
  }
  void end_step(index_t tokens) {
    inner_.end_step(tokens);
    for (index_t t = position_; t < position_ + tokens; ++t) {
      auto node = nuclei_.extract(t);
      std::vector<std::vector<std::int32_t>> nuclei = node ? std::move(node.mapped()) : decltype(nuclei){};
      std::map<std::int32_t, index_t> votes;  // chunk → layers whose nucleus holds it
      for (auto const& nucleus : nuclei)
        for (std::int32_t c : nucleus) ++votes[c];
      std::vector<std::int32_t> chosen;
      for (auto [chunk, n] : votes)
        if (n >= filter_.votes) chosen.push_back(chunk);
      golden_.push_back(std::move(chosen));
      layer_golden_.push_back(std::move(nuclei));
    }
    std::fill(calls_.begin(), calls_.end(), 0);
    position_ += tokens;
    std::sort(pending_.begin(), pending_.end());
    pending_.erase(std::unique(pending_.begin(), pending_.end()), pending_.end());
    steps_.push_back({position_, chunks_, std::move(pending_)});
    pending_.clear();
  }
  FootprintReport footprint() const { return inner_.footprint(); }
  void reset() {
    inner_.reset();
    steps_.clear(), pending_.clear(), calls_.clear(), nuclei_.clear(), golden_.clear(), layer_golden_.clear(), hidden_.clear();
    position_ = chunks_ = 0;
  }

  // ---- labels --------------------------------------------------------------------------------------
  GoldenFilter const& filter() const noexcept { return filter_; }
  // The hidden state CSA layer `layer` was last offered (empty before its first offer).
  std::span<float const> offered_hidden(index_t layer) const {
    return static_cast<std::size_t>(layer) < hidden_.size() ? std::span<float const>(hidden_[static_cast<std::size_t>(layer)])
                                                            : std::span<float const>{};
  }
  // Golden chunks of the token at `position` (ascending), once its step has ended.
  std::span<std::int32_t const> golden(index_t position) const {
    if (position < 0 || position >= static_cast<index_t>(golden_.size()))
      fail(errc::invalid_argument, "NativeTrace: no golden labels at position ", position, " (", golden_.size(), " tokens traced)");
    return golden_[static_cast<std::size_t>(position)];
  }
  // The nucleus of CSA layer `layer` at the token at `position` (ascending), once its step has ended.
  std::span<std::int32_t const> layer_golden(index_t layer, index_t position) const {
    golden(position);  // checks the position
    auto const& layers = layer_golden_[static_cast<std::size_t>(position)];
    return static_cast<std::size_t>(layer) < layers.size() ? std::span<std::int32_t const>(layers[static_cast<std::size_t>(layer)])
                                                           : std::span<std::int32_t const>{};
  }
  // Per chunk < chunks: 1 if golden at any token of t+1 … t+τ that was traced; with `layer` ≥ 0, if in that CSA
  // layer's nucleus at any of them.
  std::vector<std::uint8_t> golden_window(index_t t, index_t tau, index_t chunks, index_t layer = -1) const {
    std::vector<std::uint8_t> out(static_cast<std::size_t>(chunks), 0);
    for (index_t i = t + 1; i <= t + tau && i < static_cast<index_t>(golden_.size()); ++i)
      for (std::int32_t c : layer < 0 ? golden(i) : layer_golden(layer, i))
        if (c < chunks) out[static_cast<std::size_t>(c)] = 1;
    return out;
  }

  // Per chunk that existed after the step ending at `from`: 1 if a step ending in (from, to] selected it.
  std::vector<float> labels(index_t from, index_t to) const {
    auto at = std::find_if(steps_.begin(), steps_.end(), [&](Step const& s) { return s.end == from; });
    if (at == steps_.end())
      fail(errc::invalid_argument, "NativeTrace: no traced step ends at position ", from, " (", steps_.size(),
           " steps traced up to position ", position_, "); the oracle run must take the traced steps");
    std::vector<float> out(static_cast<std::size_t>(at->chunks), 0.0f);
    for (auto s = at + 1; s != steps_.end() && s->end <= to; ++s)
      for (std::int32_t c : s->selected)
        if (c < at->chunks) out[static_cast<std::size_t>(c)] = 1.0f;
    return out;
  }

  // Before a step of `tokens` tokens of an oracle run over the traced sequence: when that step ends a window,
  // hands `oracle` (a Lookahead) the labels of the window that follows it, which ends with the first step that
  // reaches the next multiple of τ.
  template <class Oracle>
  void offer_future(Oracle& oracle, index_t tokens) const {
    if (!oracle.boundary_due(tokens)) return;
    index_t end = oracle.position() + tokens, next = (end / oracle.tau() + 1) * oracle.tau();
    auto last = std::find_if(steps_.begin(), steps_.end(), [&](Step const& s) { return s.end >= next; });
    oracle.offer_future(labels(end, last == steps_.end() ? next : last->end));
  }

 private:
  // One layer's nucleus of a token's top-k (descending scores) votes for its chunks.
  void vote(index_t layer, index_t token, std::span<float const> scores, std::span<std::int32_t const> chosen) const {
    if (chosen.empty()) return;
    double top = scores[static_cast<std::size_t>(chosen[0])], total = 0;
    for (std::int32_t c : chosen) total += std::exp(double(scores[static_cast<std::size_t>(c)]) - top);
    auto& nuclei = nuclei_[token];
    if (static_cast<std::size_t>(layer) >= nuclei.size()) nuclei.resize(static_cast<std::size_t>(layer) + 1);
    auto& nucleus = nuclei[static_cast<std::size_t>(layer)];
    double mass = 0;
    for (std::int32_t c : chosen) {
      nucleus.insert(std::lower_bound(nucleus.begin(), nucleus.end(), c), c);
      mass += std::exp(double(scores[static_cast<std::size_t>(c)]) - top) / total;
      if (mass >= filter_.nucleus_p) break;
    }
  }

  Inner inner_;
  GoldenFilter filter_;
  mutable std::vector<std::int32_t> pending_;  // selections of the running step
  mutable std::vector<index_t> calls_;         // select() calls per layer in the running step
  mutable std::map<index_t, std::vector<std::vector<std::int32_t>>> nuclei_;  // running tokens: per layer, its nucleus
  std::vector<std::vector<std::int32_t>> golden_;                             // per traced token: chunks with ≥ θ votes
  std::vector<std::vector<std::vector<std::int32_t>>> layer_golden_;          // per traced token, per layer: its nucleus
  std::vector<std::vector<float>> hidden_;                            // per CSA layer: the last offered input
  std::vector<Step> steps_;
  index_t position_ = 0, chunks_ = 0;
};
static_assert(kv_controller<NativeTrace<>>);

}  // namespace flashmemory::lsa
