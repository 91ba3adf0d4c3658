// flashmemory/models/deepseek_v4/cache.hpp — the per-layer KV state of one sequence (deepseek-v4.md §6, §10).
//
// Every layer keeps a ring of its last W window latents (position p in row p mod W). HCA layers add their
// compressor state with the pool of emitted entries. CSA layers keep their two compressor states (attention
// entries and index keys) but not the chunks they emit: those go to the sequence's kv_controller (Decoder's
// second parameter, lsa/concepts.hpp), which decides where they live and which of them attention may read.
// FullResidentKv, the default, keeps every chunk resident: the native model.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/layout/f32_records.hpp>
#include <flashmemory/lsa/full_resident.hpp>
#include <flashmemory/models/deepseek_v4/compressor.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>

#include <algorithm>
#include <span>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

// The native model's KV: every chunk of every CSA layer resident (float32 records), the native top-k over all.
using FullResidentKv = lsa::FullResident<>;

// Float32 records for the reference decoder's chunks: attention entries of head_dim and index keys of
// index_head_dim channels, `chunks_per_page` per page (64 in LSA).
inline layout::F32Records entry_layout(Config const& c, index_t chunks_per_page = 64) { return {c.head_dim, chunks_per_page}; }
inline layout::F32Records key_layout(Config const& c, index_t chunks_per_page = 64) { return {c.index_head_dim, chunks_per_page}; }

// The native KV of a model: one FullResident over its CSA layers.
inline FullResidentKv full_resident_kv(Config const& c) { return FullResidentKv(entry_layout(c), key_layout(c), c.count(LayerKind::csa)); }

struct LayerCache {
  LayerKind kind = LayerKind::sliding;
  index_t window_size = 0, head_dim = 0;
  std::vector<float> window;   // [W, d] ring of window latents
  index_t tokens = 0;          // positions processed so far
  CompressorState compressor;  // CSA (entries go to the kv_controller), HCA (entries kept here)
  CompressorState indexer;     // CSA (keys go to the kv_controller)
  index_t csa = -1;            // CSA layers: the index among them (the kv_controller's layer number)

  LayerCache(Config const& c, index_t layer, index_t csa_index = -1)
      : kind(c.layer_types[static_cast<std::size_t>(layer)]), window_size(c.sliding_window), head_dim(c.head_dim),
        window(static_cast<std::size_t>(c.sliding_window * c.head_dim)), csa(kind == LayerKind::csa ? csa_index : -1) {
    bool is_csa = kind == LayerKind::csa;
    if (kind != LayerKind::sliding) compressor = CompressorState(c.compress_ratio(layer), c.head_dim, is_csa, /*keep=*/!is_csa);
    if (is_csa) indexer = CompressorState(c.compress_rate_csa, c.index_head_dim, true, /*keep=*/false);
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
    index_t csa = 0;
    for (index_t i = 0; i < c.num_hidden_layers; ++i) {
      layers_.emplace_back(c, i, csa);
      csa += layers_.back().kind == LayerKind::csa;
    }
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
