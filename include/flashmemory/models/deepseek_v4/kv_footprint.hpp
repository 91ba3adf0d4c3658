// flashmemory/models/deepseek_v4/kv_footprint.hpp — KV-cache bytes per layer kind (deepseek-v4.md §10).
//
// What a layer keeps per request: its window ring (min(N, W) latents, every kind), its compressed entries
// (⌊N/m⌋ latents, CSA and HCA), its index keys (⌊N/4⌋, CSA), and its compressor state (fixed, fp32). Two record
// formats are counted:
//   bf16    the in-memory format of the reference and transformers: latent 2d B, index key 2·d_I B;
//   packed  sglang's production packing (layout::CsaEntryPacked, layout::IndexKeyFp8): latent = nope channels
//           as FP8 + rope channels as bf16 + one ue8m0 scale per 64 nope channels, padded to 8 B (584 B for
//           d = 512, r = 64); index key = d_I FP8 + one fp32 scale (132 B for d_I = 128).
// V4-Flash at long context: 21 CSA · 179 + 20 HCA · 4.5625 = 3850.25 B/token packed, plus 43 window rings.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/layout/csa_entry.hpp>
#include <flashmemory/layout/index_key.hpp>
#include <flashmemory/models/deepseek_v4/cache.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

enum class KvFormat : std::uint8_t { bf16, packed };

constexpr std::string_view name_of(KvFormat f) noexcept { return f == KvFormat::bf16 ? "bf16" : "packed fp8"; }

// Bytes of one attention latent record (window row or compressed entry).
inline index_t latent_record_bytes(Config const& c, KvFormat f) {
  if (f == KvFormat::bf16) return layout::CsaEntryBf16(c.head_dim).record_bytes();
  return layout::CsaEntryPacked(c.head_dim, c.qk_rope_head_dim).record_bytes();
}
// Bytes of one index key record.
inline index_t index_key_bytes(Config const& c, KvFormat f) {
  return f == KvFormat::bf16 ? layout::IndexKeyBf16(c.index_head_dim).record_bytes()
                             : layout::IndexKeyFp8(c.index_head_dim).record_bytes();
}

// The compressor state of one layer as the reference keeps it (fp32 values and gates of 2m slots × 2n for CSA,
// m slots × n for HCA; CSA adds its indexer compressor).
inline index_t compressor_state_bytes(Config const& c, LayerKind k) {
  switch (k) {
    case LayerKind::csa: return 2 * (2 * c.compress_rate_csa) * (2 * c.head_dim) * 4 + 2 * (2 * c.compress_rate_csa) * (2 * c.index_head_dim) * 4;
    case LayerKind::hca: return 2 * c.compress_rate_hca * c.head_dim * 4;
    case LayerKind::sliding: return 0;
  }
  return 0;
}

// The KV state of all layers of one kind.
struct KindFootprint {
  LayerKind kind = LayerKind::sliding;
  index_t layers = 0;
  index_t window_rows = 0, entries = 0, index_keys = 0;  // records over all layers of the kind
  index_t window_bytes = 0, entry_bytes = 0, index_key_bytes = 0, state_bytes = 0;

  // Bytes that grow with the context (entries and index keys).
  index_t growing_bytes() const noexcept { return entry_bytes + index_key_bytes; }
  index_t total_bytes() const noexcept { return window_bytes + growing_bytes() + state_bytes; }
};

namespace detail {
inline KindFootprint price(Config const& c, KvFormat f, LayerKind kind, index_t layers, index_t window_rows, index_t entries,
                           index_t index_keys) {
  KindFootprint k{kind, layers, window_rows, entries, index_keys};
  k.window_bytes = window_rows * latent_record_bytes(c, f);
  k.entry_bytes = entries * latent_record_bytes(c, f);
  k.index_key_bytes = index_keys * index_key_bytes(c, f);
  k.state_bytes = layers * compressor_state_bytes(c, kind);
  return k;
}
}  // namespace detail

// The footprint of every layer kind present in `c` after a context of `tokens` tokens.
inline std::vector<KindFootprint> kv_footprint(Config const& c, index_t tokens, KvFormat f) {
  std::vector<KindFootprint> out;
  for (LayerKind kind : kLayerKinds) {
    index_t n = c.count(kind);
    if (n == 0) continue;
    index_t ratio = kind == LayerKind::csa ? c.compress_rate_csa : kind == LayerKind::hca ? c.compress_rate_hca : 0;
    index_t entries = ratio ? tokens / ratio : 0, keys = kind == LayerKind::csa ? entries : 0;
    out.push_back(detail::price(c, f, kind, n, n * std::min(tokens, c.sliding_window), n * entries, n * keys));
  }
  return out;
}

// The footprint of what a cache holds now.
inline std::vector<KindFootprint> kv_footprint(Config const& c, KvCache const& cache, KvFormat f) {
  std::vector<KindFootprint> out;
  for (LayerKind kind : kLayerKinds) {
    index_t n = 0, rows = 0, entries = 0, keys = 0;
    for (LayerCache const& l : cache.layers()) {
      if (l.kind != kind) continue;
      ++n;
      rows += l.window_rows();
      entries += l.compressor.count();
      keys += l.indexer.count();
    }
    if (n > 0) out.push_back(detail::price(c, f, kind, n, rows, entries, keys));
  }
  return out;
}

}  // namespace flashmemory::models::deepseek_v4
