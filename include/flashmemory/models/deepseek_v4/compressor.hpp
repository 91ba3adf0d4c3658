// flashmemory/models/deepseek_v4/compressor.hpp — the token-level KV compressor and its carried state
// (deepseek-v4.md §6.2, §6.5).
//
// Every source token t contributes values C_t = x_t · wkvᵀ and gate logits Z_t = x_t · wgateᵀ + ape[t mod m]
// (c·n channels each). When the window of m tokens [w·m, (w+1)·m) is complete, entry w is pooled channel by
// channel with a softmax over the window's slots:
//   HCA (c = 1): the m tokens of window w;
//   CSA (c = 2, overlapping): the a-halves (channels [0, n)) of window w−1 and the b-halves ([n, 2n)) of window
//     w — 2m slots; window −1 does not exist (gate −∞, value 0).
// The entry is RMS-normed, RoPE'd at position w·m (compress rope), and appended to the pool — or, for a
// compressor whose entries go elsewhere (CSA layers hand theirs to the LSA kv_controller), only kept as the
// latest entry. Feeding tokens one at a time or in any chunking gives the same entries: the state below is
// all that crosses a call.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/models/deepseek_v4/detail/ops.hpp>
#include <flashmemory/models/deepseek_v4/rope.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

class CompressorState {
 public:
  CompressorState() = default;
  // `keep`: whether the state keeps the pool of emitted entries (otherwise only the latest one).
  CompressorState(index_t ratio, index_t width, bool overlap, bool keep = true)
      : ratio_(ratio), width_(width), overlap_(overlap), keep_(keep) {
    reset();
  }

  // Back to an empty sequence: no buffered tokens, no previous window, no entries.
  void reset() {
    index_t cn = (overlap_ ? 2 : 1) * width_;
    kv_.assign(static_cast<std::size_t>(ratio_ * cn), 0.0f);
    gate_.assign(kv_.size(), 0.0f);
    prev_kv_.assign(overlap_ ? static_cast<std::size_t>(ratio_ * width_) : 0, 0.0f);
    prev_gate_.assign(prev_kv_.size(), -std::numeric_limits<float>::infinity());
    filled_ = 0;
    count_ = 0;
    entries_.clear();
    last_.assign(static_cast<std::size_t>(width_), 0.0f);
  }

  index_t ratio() const noexcept { return ratio_; }
  index_t width() const noexcept { return width_; }
  bool overlap() const noexcept { return overlap_; }
  // Entries emitted so far.
  index_t count() const noexcept { return count_; }
  index_t buffered() const noexcept { return filled_; }
  // The kept pool of emitted entries: [count, width], or [0, width] when the state does not keep it.
  matrix_view<float const> entries() const noexcept { return matrix_view<float const>(entries_.data(), keep_ ? count_ : 0, width_); }
  // The latest emitted entry [width] (zeros before the first).
  std::span<float const> last() const noexcept { return last_; }

  // Adds one token's projections (c·n values and gate logits without ape); emits an entry when its window closes.
  // Returns whether an entry was emitted.
  bool push(CompressorWeights const& w, Rope const& rope, double eps, std::span<float const> kv, std::span<float const> gate) {
    std::size_t cn = kv.size(), slot = static_cast<std::size_t>(filled_);
    auto ape = w.ape.span().subspan(slot * cn, cn);
    for (std::size_t k = 0; k < cn; ++k) {
      kv_[slot * cn + k] = kv[k];
      gate_[slot * cn + k] = gate[k] + ape[k];
    }
    if (++filled_ < ratio_) return false;
    emit(w, rope, eps);
    return true;
  }

 private:
  void emit(CompressorWeights const& w, Rope const& rope, double eps) {
    auto n = static_cast<std::size_t>(width_), m = static_cast<std::size_t>(ratio_), cn = (overlap_ ? 2 : 1) * n;
    std::size_t off = overlap_ ? n : 0;       // the slice of this window that pools into its own entry
    std::size_t prev = overlap_ ? m : 0;      // slots of the previous window (CSA)
    std::vector<float> entry(n), z, v;
    for (std::size_t k = 0; k < n; ++k) {
      z.clear(), v.clear();
      for (std::size_t j = 0; j < prev; ++j)
        z.push_back(prev_gate_[j * n + k]), v.push_back(prev_kv_[j * n + k]);
      for (std::size_t j = 0; j < m; ++j) z.push_back(gate_[j * cn + off + k]), v.push_back(kv_[j * cn + off + k]);
      float mx = *std::max_element(z.begin(), z.end());
      double total = 0, acc = 0;  // softmax over the slots (gate −∞ → weight 0), weighted sum of the values
      for (std::size_t j = 0; j < z.size(); ++j) total += z[j] = std::exp(z[j] - mx);
      for (std::size_t j = 0; j < z.size(); ++j) acc += z[j] * double(v[j]);
      entry[k] = static_cast<float>(acc / total);
    }
    detail::rms_norm(entry, w.norm.span(), eps);
    rope.apply(entry, count_ * ratio_);
    if (keep_) entries_.insert(entries_.end(), entry.begin(), entry.end());
    last_ = entry;
    ++count_;
    if (overlap_)
      for (std::size_t j = 0; j < m; ++j)
        for (std::size_t k = 0; k < n; ++k) {
          prev_kv_[j * n + k] = kv_[j * cn + k];
          prev_gate_[j * n + k] = gate_[j * cn + k];
        }
    filled_ = 0;
  }

  index_t ratio_ = 0, width_ = 0;
  bool overlap_ = false, keep_ = true;
  std::vector<float> kv_, gate_;             // [ratio, c·n] the current window (gate includes ape)
  std::vector<float> prev_kv_, prev_gate_;   // [ratio, n] a-halves of the last complete window (overlap only)
  index_t filled_ = 0;                       // tokens in the current window
  index_t count_ = 0;                        // entries emitted
  std::vector<float> entries_;               // [count, n] when kept
  std::vector<float> last_;                  // [n] the latest entry
};

}  // namespace flashmemory::models::deepseek_v4
