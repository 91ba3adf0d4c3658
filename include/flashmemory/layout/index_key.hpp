// flashmemory/layout/index_key.hpp — the lightning-indexer key of a DeepSeek-V4 CSA chunk, in the two
// formats of deepseek-v4.md §10:
//
//   IndexKeyBf16   all channels bf16: 128 channels → 256 B
//   IndexKeyFp8    DeepSeek's production packing, 132 B for 128 channels:
//                    [ channels as fp8 e4m3 | one fp32 scale, little-endian ]
//                  scale = max(max|x|, 1e-4) / 448 (NOT rounded to a power of two); x → e4m3(clamp(x / scale,
//                  ±448)). The error per value is at most about half an e4m3 step: max(|x| · 2^-4, scale · 2^-10).
//
// Channels are a parameter so that tiny test models fit; the defaults are DeepSeek-V4's.
#pragma once

#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/layout/bf16_records.hpp>
#include <flashmemory/layout/concepts.hpp>
#include <flashmemory/layout/detail/record_io.hpp>

#include <cstdint>

namespace flashmemory::layout {

// 128 bf16 channels (256 B) by default.
class IndexKeyBf16 : public Bf16Records {
 public:
  constexpr explicit IndexKeyBf16(index_t channels = 128, index_t chunks_per_page = 64) : Bf16Records(channels, chunks_per_page) {}
};
static_assert(chunk_layout<IndexKeyBf16>);

class IndexKeyFp8 {
 public:
  static constexpr float kMinAmax = 1e-4f;

  constexpr explicit IndexKeyFp8(index_t channels = 128, index_t chunks_per_page = 64)
      : channels_(channels), chunks_per_page_(chunks_per_page) {
    if (channels <= 0 || chunks_per_page <= 0)
      fail(errc::invalid_argument, "IndexKeyFp8: channels ", channels, " and chunks per page ", chunks_per_page, " must be positive");
  }

  FLASHMEMORY_HOST_DEVICE constexpr index_t channels() const noexcept { return channels_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t chunks_per_page() const noexcept { return chunks_per_page_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t scale_offset() const noexcept { return channels_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t record_bytes() const noexcept { return channels_ + 4; }

  void encode(std::span<float const> in, std::span<std::byte> out) const;
  void decode(std::span<std::byte const> in, std::span<float> out) const;

 private:
  index_t channels_, chunks_per_page_;
};

FLASHMEMORY_HOST_DEVICE inline void encode_record(IndexKeyFp8 const& l, float const* in, std::byte* out) noexcept {
  float amax = IndexKeyFp8::kMinAmax;
  for (index_t c = 0; c < l.channels(); ++c) {
    float a = in[c] < 0 ? -in[c] : in[c];
    if (a > amax) amax = a;
  }
  float scale = amax / kF8E4M3Max;
  for (index_t c = 0; c < l.channels(); ++c) out[c] = static_cast<std::byte>(encode_f8_e4m3(in[c] / scale, /*saturate=*/true));
  detail::store_u32(out + l.scale_offset(), __builtin_bit_cast(std::uint32_t, scale));
}

FLASHMEMORY_HOST_DEVICE inline void decode_record(IndexKeyFp8 const& l, std::byte const* in, float* out) noexcept {
  float scale = __builtin_bit_cast(float, detail::load_u32(in + l.scale_offset()));
  for (index_t c = 0; c < l.channels(); ++c) out[c] = decode_f8_e4m3(std::to_integer<std::uint8_t>(in[c])) * scale;
}

inline void IndexKeyFp8::encode(std::span<float const> in, std::span<std::byte> out) const {
  detail::check_record_spans("IndexKeyFp8", *this, in.size(), out.size());
  encode_record(*this, in.data(), out.data());
}
inline void IndexKeyFp8::decode(std::span<std::byte const> in, std::span<float> out) const {
  detail::check_record_spans("IndexKeyFp8", *this, out.size(), in.size());
  decode_record(*this, in.data(), out.data());
}

static_assert(chunk_layout<IndexKeyFp8>);
static_assert(IndexKeyFp8().record_bytes() == 132);

}  // namespace flashmemory::layout
