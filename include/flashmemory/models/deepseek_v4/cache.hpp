// flashmemory/models/deepseek_v4/cache.hpp — the per-layer KV state of one sequence (deepseek-v4.md §6, §10).
//
// Every layer keeps a ring of its last W window latents (position p in row p mod W). CSA and HCA layers add
// their compressor state with the pool of emitted entries; CSA layers also the indexer compressor with its
// pool of index keys. Everything is float32 and resident in host memory here; what is kept where is the KV
// policy's business (Decoder's second parameter), which the LSA work fills in.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/models/deepseek_v4/compressor.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>

#include <algorithm>
#include <span>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

// The baseline KV policy: every record of every layer stays resident; nothing is offloaded or skipped.
// A placeholder until fm::lsa provides the real policies.
struct FullResidentKv {};

struct LayerCache {
  LayerKind kind = LayerKind::sliding;
  index_t window_size = 0, head_dim = 0;
  std::vector<float> window;   // [W, d] ring of window latents
  index_t tokens = 0;          // positions processed so far
  CompressorState compressor;  // CSA, HCA
  CompressorState indexer;     // CSA

  LayerCache(Config const& c, index_t layer)
      : kind(c.layer_types[static_cast<std::size_t>(layer)]), window_size(c.sliding_window), head_dim(c.head_dim),
        window(static_cast<std::size_t>(c.sliding_window * c.head_dim)) {
    if (kind != LayerKind::sliding) compressor = CompressorState(c.compress_ratio(layer), c.head_dim, kind == LayerKind::csa);
    if (kind == LayerKind::csa) indexer = CompressorState(c.compress_rate_csa, c.index_head_dim, true);
  }

  void reset() {
    std::fill(window.begin(), window.end(), 0.0f);
    tokens = 0;
    compressor.reset();
    indexer.reset();
  }
  index_t window_rows() const noexcept { return std::min(tokens, window_size); }
  std::span<float> window_row(index_t pos) {
    return std::span<float>(window).subspan(static_cast<std::size_t>((pos % window_size) * head_dim), static_cast<std::size_t>(head_dim));
  }
};

// The KV state of every layer of one sequence.
class KvCache {
 public:
  explicit KvCache(Config const& c) {
    for (index_t i = 0; i < c.num_hidden_layers; ++i) layers_.emplace_back(c, i);
  }
  void reset() {
    for (auto& l : layers_) l.reset();
  }
  // Tokens processed so far: the position of the next one.
  index_t position() const noexcept { return layers_.empty() ? 0 : layers_.front().tokens; }
  LayerCache& layer(index_t i) { return layers_[static_cast<std::size_t>(i)]; }
  LayerCache const& layer(index_t i) const { return layers_[static_cast<std::size_t>(i)]; }
  std::span<LayerCache const> layers() const noexcept { return layers_; }

 private:
  std::vector<LayerCache> layers_;
};

}  // namespace flashmemory::models::deepseek_v4
