// flashmemory/layout/detail/record_io.hpp — little-endian field access inside byte records, and the size
// check of the span-taking encode/decode members. Not part of the API.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <cstddef>
#include <cstdint>

namespace flashmemory::layout::detail {

FLASHMEMORY_HOST_DEVICE inline void store_u16(std::byte* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::byte>(v & 0xffu);
  p[1] = static_cast<std::byte>(v >> 8);
}
FLASHMEMORY_HOST_DEVICE inline std::uint16_t load_u16(std::byte const* p) noexcept {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | std::to_integer<unsigned>(p[1]) << 8);
}
FLASHMEMORY_HOST_DEVICE inline void store_u32(std::byte* p, std::uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xffu);
}
FLASHMEMORY_HOST_DEVICE inline std::uint32_t load_u32(std::byte const* p) noexcept {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(std::to_integer<unsigned>(p[i])) << (8 * i);
  return v;
}

// The span members of a layout check what the raw-pointer functions cannot: that both buffers are big enough.
template <class Layout>
void check_record_spans(char const* what, Layout const& l, std::size_t floats, std::size_t bytes) {
  if (floats < static_cast<std::size_t>(l.channels()) || bytes < static_cast<std::size_t>(l.record_bytes()))
    fail(errc::bad_shape, what, ": needs ", l.channels(), " floats and ", l.record_bytes(), " bytes, given ", floats,
         " floats and ", bytes, " bytes");
}

}  // namespace flashmemory::layout::detail
