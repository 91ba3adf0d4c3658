// flashmemory/layout/bf16_records.hpp — chunks stored as bf16 channels (2 bytes each, little-endian).
//
// The in-memory format of the reference model and transformers (deepseek-v4.md §10 (a)): a CSA latent of
// 512 channels is 1024 B, an index key of 128 channels 256 B. Encoding rounds to nearest even; a value that
// is already bf16 round-trips exactly. The raw-pointer functions are FLASHMEMORY_HOST_DEVICE so a kernel
// decodes a record with the same code as the host reference.
#pragma once

#include <flashmemory/core/dtype.hpp>
#include <flashmemory/layout/concepts.hpp>
#include <flashmemory/layout/detail/record_io.hpp>

#include <cstdint>

namespace flashmemory::layout {

class Bf16Records {
 public:
  constexpr Bf16Records(index_t channels, index_t chunks_per_page = 64) : channels_(channels), chunks_per_page_(chunks_per_page) {}

  FLASHMEMORY_HOST_DEVICE constexpr index_t channels() const noexcept { return channels_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t record_bytes() const noexcept { return 2 * channels_; }
  FLASHMEMORY_HOST_DEVICE constexpr index_t chunks_per_page() const noexcept { return chunks_per_page_; }

  void encode(std::span<float const> in, std::span<std::byte> out) const;
  void decode(std::span<std::byte const> in, std::span<float> out) const;

 private:
  index_t channels_;
  index_t chunks_per_page_;
};

// channels() floats → record_bytes() bytes.
FLASHMEMORY_HOST_DEVICE inline void encode_record(Bf16Records const& l, float const* in, std::byte* out) noexcept {
  for (index_t c = 0; c < l.channels(); ++c) detail::store_u16(out + 2 * c, encode_bf16(in[c]));
}
// record_bytes() bytes → channels() floats.
FLASHMEMORY_HOST_DEVICE inline void decode_record(Bf16Records const& l, std::byte const* in, float* out) noexcept {
  for (index_t c = 0; c < l.channels(); ++c) out[c] = decode_bf16(detail::load_u16(in + 2 * c));
}

inline void Bf16Records::encode(std::span<float const> in, std::span<std::byte> out) const {
  detail::check_record_spans("bf16 record", *this, in.size(), out.size());
  encode_record(*this, in.data(), out.data());
}
inline void Bf16Records::decode(std::span<std::byte const> in, std::span<float> out) const {
  detail::check_record_spans("bf16 record", *this, out.size(), in.size());
  decode_record(*this, in.data(), out.data());
}

static_assert(chunk_layout<Bf16Records>);

}  // namespace flashmemory::layout
