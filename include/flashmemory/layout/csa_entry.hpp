// flashmemory/layout/csa_entry.hpp — the attention entry of a DeepSeek-V4 CSA layer (one chunk = one
// compressed entry of 4 tokens), in the two formats of deepseek-v4.md §10:
//
//   CsaEntryBf16     all channels bf16: 512 channels → 1024 B (the reference / transformers format)
//   CsaEntryPacked   DeepSeek's production packing, 584 B for 512 channels:
//                      [ nope channels as fp8 e4m3 | rope channels as bf16 | one ue8m0 scale per block | pad ]
//                        448 B                      128 B                   7 B                       1 B
//                    The record is padded to a multiple of 8 bytes.
//
// Quantisation of one block of the nope channels (deepseek-v4.md §11.3, bit-exact with the reference's FP8
// simulation): amax = max(max|x|, 1e-4); scale = 2^ceil(log2(amax · (1/448))) stored as its exponent byte;
// each value x → e4m3(clamp(x / scale, ±448)). Decoding multiplies back. The error per value is at most half
// an e4m3 step: |x̂ − x| ≤ max(|x| · 2^-4, scale · 2^-10).
//
// Channels, rope channels and the block are parameters so that tiny test models fit (e.g. 64 channels with
// 16 rope dims: 48 nope channels in one partial block → 88 B); the defaults are DeepSeek-V4's.
#pragma once

#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/layout/bf16_records.hpp>
#include <flashmemory/layout/concepts.hpp>
#include <flashmemory/layout/detail/record_io.hpp>

#include <cstdint>

namespace flashmemory::layout {

// 512 bf16 channels (1024 B) by default.
class CsaEntryBf16 : public Bf16Records {
 public:
  constexpr explicit CsaEntryBf16(index_t channels = 512, index_t chunks_per_page = 64) : Bf16Records(channels, chunks_per_page) {}
};
static_assert(chunk_layout<CsaEntryBf16>);

class CsaEntryPacked {
 public:
  // The smallest amax a block is quantised with, so that an all-zero block gets a finite scale.
  static constexpr float kMinAmax = 1e-4f;

  constexpr explicit CsaEntryPacked(index_t channels = 512, index_t rope_channels = 64, index_t chunks_per_page = 64,
                                    index_t block = 64)
      : channels_(channels), rope_(rope_channels), chunks_per_page_(chunks_per_page), block_(block) {
    if (channels <= 0 || rope_channels < 0 || rope_channels > channels || block <= 0 || chunks_per_page <= 0)
      fail(errc::invalid_argument, "CsaEntryPacked: channels ", channels, ", rope channels ", rope_channels, ", block ",
           block, ", chunks per page ", chunks_per_page, " (need 0 ≤ rope ≤ channels, positive block and page)");
  }

  FLASHMEMORY_HOST_DEVICE constexpr index_t channels() const noexcept { return channels_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t chunks_per_page() const noexcept { return chunks_per_page_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t rope_channels() const noexcept { return rope_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t nope_channels() const noexcept { return channels_ - rope_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t block() const noexcept { return block_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t scale_count() const noexcept { return (nope_channels() + block_ - 1) / block_; }
  // Byte offsets of the three fields inside a record.
  FLASHMEMORY_HOST_DEVICE constexpr index_t rope_offset() const noexcept { return nope_channels(); }
  FLASHMEMORY_HOST_DEVICE constexpr index_t scale_offset() const noexcept { return nope_channels() + 2 * rope_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t record_bytes() const noexcept { return (scale_offset() + scale_count() + 7) / 8 * 8; }

  void encode(std::span<float const> in, std::span<std::byte> out) const;
  void decode(std::span<std::byte const> in, std::span<float> out) const;

 private:
  index_t channels_, rope_, chunks_per_page_, block_;
};

// channels() floats → record_bytes() bytes (the padding is written as zeros).
FLASHMEMORY_HOST_DEVICE inline void encode_record(CsaEntryPacked const& l, float const* in, std::byte* out) noexcept {
  index_t nope = l.nope_channels();
  for (index_t b = 0; b < l.scale_count(); ++b) {
    index_t first = b * l.block(), last = first + l.block() < nope ? first + l.block() : nope;
    float amax = CsaEntryPacked::kMinAmax;
    for (index_t c = first; c < last; ++c) {
      float a = in[c] < 0 ? -in[c] : in[c];
      if (a > amax) amax = a;
    }
    std::uint8_t e = encode_e8m0_ceil(amax * (1.0f / kF8E4M3Max));
    float scale = decode_e8m0(e);
    out[l.scale_offset() + b] = static_cast<std::byte>(e);
    for (index_t c = first; c < last; ++c) out[c] = static_cast<std::byte>(encode_f8_e4m3(in[c] / scale, /*saturate=*/true));
  }
  for (index_t r = 0; r < l.rope_channels(); ++r) detail::store_u16(out + l.rope_offset() + 2 * r, encode_bf16(in[nope + r]));
  for (index_t p = l.scale_offset() + l.scale_count(); p < l.record_bytes(); ++p) out[p] = std::byte{0};
}

// record_bytes() bytes → channels() floats.
FLASHMEMORY_HOST_DEVICE inline void decode_record(CsaEntryPacked const& l, std::byte const* in, float* out) noexcept {
  index_t nope = l.nope_channels();
  for (index_t c = 0; c < nope; ++c) {
    float scale = decode_e8m0(std::to_integer<std::uint8_t>(in[l.scale_offset() + c / l.block()]));
    out[c] = decode_f8_e4m3(std::to_integer<std::uint8_t>(in[c])) * scale;
  }
  for (index_t r = 0; r < l.rope_channels(); ++r) out[nope + r] = decode_bf16(detail::load_u16(in + l.rope_offset() + 2 * r));
}

inline void CsaEntryPacked::encode(std::span<float const> in, std::span<std::byte> out) const {
  detail::check_record_spans("CsaEntryPacked", *this, in.size(), out.size());
  encode_record(*this, in.data(), out.data());
}
inline void CsaEntryPacked::decode(std::span<std::byte const> in, std::span<float> out) const {
  detail::check_record_spans("CsaEntryPacked", *this, out.size(), in.size());
  decode_record(*this, in.data(), out.data());
}

static_assert(chunk_layout<CsaEntryPacked>);
static_assert(CsaEntryPacked().record_bytes() == 584);

}  // namespace flashmemory::layout
