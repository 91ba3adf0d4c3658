// flashmemory/core/rope.hpp — interleaved partial RoPE with optional YaRN (deepseek-v4.md §2.2).
//
// A vector of n channels is laid out [nope (n − r) | rope (r)]; only the trailing r channels are rotated, as
// r/2 ADJACENT pairs (2i, 2i+1) — the GPT-J convention, not Llama's half split. Pair i turns by pos · ω_i:
//   plain:  ω_i = θ^(−2i/r)
//   YaRN:   ω_i = θ^(−2i/r) · keep_i + θ^(−2i/r)/factor · (1 − keep_i),  keep_i = 1 − clamp((i − lo)/(hi − lo), 0, 1)
//           lo/hi from the correction range of beta_fast/beta_slow at original_max_position_embeddings
// cos/sin are multiplied by `attention_factor` (1 for V4: no YaRN mscale). Frequencies are rounded to float as
// transformers stores them; the rotation runs in float. Shared by the DeepSeek-V4 decoder and the Memory
// Indexer (which ropes its queries like the model's indexer).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <span>
#include <vector>

namespace flashmemory {

// One RoPE variant: plain RoPE with base `theta`, optionally YaRN-scaled.
struct RopeParameters {
  double theta = 10000.0;
  bool yarn = false;
  double factor = 1.0;
  double original_max_position_embeddings = 0.0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double attention_factor = 1.0;  // multiplies cos/sin; V4 forces 1 (no YaRN mscale)
};

class Rope {
 public:
  Rope() = default;
  Rope(RopeParameters const& p, index_t rope_dim) : scale_(static_cast<float>(p.attention_factor)), inv_freq_(static_cast<std::size_t>(rope_dim / 2)) {
    double dim = static_cast<double>(rope_dim);
    double lo = 0, hi = 0;
    if (p.yarn) {
      auto correction = [&](double rotations) {
        return dim * std::log(p.original_max_position_embeddings / (rotations * 2 * std::numbers::pi)) / (2 * std::log(p.theta));
      };
      lo = std::max(std::floor(correction(p.beta_fast)), 0.0);
      hi = std::min(std::ceil(correction(p.beta_slow)), dim - 1);
      if (lo == hi) hi += 0.001;
    }
    for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
      double base = 1.0 / std::pow(p.theta, 2.0 * static_cast<double>(i) / dim);
      double w = base;
      if (p.yarn) {
        double keep = 1.0 - std::clamp((static_cast<double>(i) - lo) / (hi - lo), 0.0, 1.0);
        w = base / p.factor * (1.0 - keep) + base * keep;
      }
      inv_freq_[i] = static_cast<float>(w);
    }
  }

  index_t rope_dim() const noexcept { return static_cast<index_t>(2 * inv_freq_.size()); }
  std::span<float const> inv_freq() const noexcept { return inv_freq_; }

  // Rotates the trailing rope_dim() channels of `x` by position `pos` (by −pos when `inverse`).
  void apply(std::span<float> x, index_t pos, bool inverse = false) const {
    std::size_t r = 2 * inv_freq_.size();
    if (x.size() < r) fail(errc::bad_shape, "rope: vector of ", x.size(), " channels is shorter than the rope dims ", r);
    float* tail = x.data() + (x.size() - r);
    for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
      float angle = static_cast<float>(pos) * inv_freq_[i];
      float c = static_cast<float>(std::cos(double(angle))) * scale_;
      float s = static_cast<float>(std::sin(double(angle))) * scale_;
      if (inverse) s = -s;
      float a = tail[2 * i], b = tail[2 * i + 1];
      tail[2 * i] = a * c - b * s;
      tail[2 * i + 1] = b * c + a * s;
    }
  }

  // Rotates every `width`-channel slice of `x` (the heads of one token).
  void apply_heads(std::span<float> x, index_t width, index_t pos, bool inverse = false) const {
    for (std::size_t h = 0; h + static_cast<std::size_t>(width) <= x.size(); h += static_cast<std::size_t>(width))
      apply(x.subspan(h, static_cast<std::size_t>(width)), pos, inverse);
  }

 private:
  float scale_ = 1.0f;
  std::vector<float> inv_freq_;
};

}  // namespace flashmemory
