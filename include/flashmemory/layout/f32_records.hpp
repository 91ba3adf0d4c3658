// flashmemory/layout/f32_records.hpp — the plainest chunk_layout: a chunk is `channels` float32 values.
//
// Lossless; used by the float32 reference decoder and as the model a custom layout can start from.
#pragma once

#include <flashmemory/layout/concepts.hpp>

#include <cstring>

namespace flashmemory::layout {

class F32Records {
 public:
  constexpr F32Records(index_t channels, index_t chunks_per_page = 64)
      : channels_(channels), chunks_per_page_(chunks_per_page) {}

  constexpr index_t channels() const noexcept { return channels_; }
  constexpr index_t record_bytes() const noexcept { return channels_ * static_cast<index_t>(sizeof(float)); }
  constexpr index_t chunks_per_page() const noexcept { return chunks_per_page_; }

  void encode(std::span<float const> in, std::span<std::byte> out) const {
    std::memcpy(out.data(), in.data(), static_cast<std::size_t>(record_bytes()));
  }
  void decode(std::span<std::byte const> in, std::span<float> out) const {
    std::memcpy(out.data(), in.data(), static_cast<std::size_t>(record_bytes()));
  }

 private:
  index_t channels_;
  index_t chunks_per_page_;
};
static_assert(chunk_layout<F32Records>);

}  // namespace flashmemory::layout
