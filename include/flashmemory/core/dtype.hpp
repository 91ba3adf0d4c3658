// flashmemory/core/dtype.hpp — element types of checkpoints and KV records, with exact host (and device)
// encode/decode.
//
// Formats (all round-to-nearest-even on encode):
//   bf16      1-8-7,  NaN kept quiet
//   f16       1-5-10, IEEE half with subnormals and infinities
//   f8_e4m3   1-4-3 "fn": bias 7, no infinities, 0x7F/0xFF = NaN, max ±448; overflow → NaN unless saturating
//   f8_e8m0   8-bit exponent-only scale ("ue8m0"): byte e means 2^(e-127); 255 = NaN
//   fp4 e2m1  1-2-1: values {0, .5, 1, 1.5, 2, 3, 4, 6}; two per byte, low nibble = even column
//             (deepseek-v4.md §9.2); no NaN or infinity: encode saturates to ±6 and maps NaN to +0
// The functions are constexpr and FLASHMEMORY_HOST_DEVICE so kernels use the same definitions as the
// references that check them.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace flashmemory {

// ---------------------------------------------------------------------------------------------------
// Element types as checkpoints name them.
enum class dtype : std::uint8_t { f64, f32, f16, bf16, f8_e4m3, f8_e8m0, i64, i32, i16, i8, u8, boolean };

constexpr std::size_t size_of(dtype t) noexcept {
  switch (t) {
    case dtype::f64: case dtype::i64: return 8;
    case dtype::f32: case dtype::i32: return 4;
    case dtype::f16: case dtype::bf16: case dtype::i16: return 2;
    default: return 1;
  }
}

// The spelling used in safetensors headers.
constexpr std::string_view name_of(dtype t) noexcept {
  switch (t) {
    case dtype::f64: return "F64";
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::f8_e4m3: return "F8_E4M3";
    case dtype::f8_e8m0: return "F8_E8M0";
    case dtype::i64: return "I64";
    case dtype::i32: return "I32";
    case dtype::i16: return "I16";
    case dtype::i8: return "I8";
    case dtype::u8: return "U8";
    case dtype::boolean: return "BOOL";
  }
  return "?";
}

// Parses a safetensors dtype name; false when the name is not one this library reads.
constexpr bool parse_dtype(std::string_view name, dtype& out) noexcept {
  for (auto t : {dtype::f64, dtype::f32, dtype::f16, dtype::bf16, dtype::f8_e4m3, dtype::f8_e8m0, dtype::i64,
                 dtype::i32, dtype::i16, dtype::i8, dtype::u8, dtype::boolean}) {
    if (name_of(t) == name) {
      out = t;
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------------
// Bit-exact scalar conversions.
namespace detail {
FLASHMEMORY_HOST_DEVICE constexpr std::uint32_t bits_of(float x) noexcept { return __builtin_bit_cast(std::uint32_t, x); }
FLASHMEMORY_HOST_DEVICE constexpr float float_of(std::uint32_t b) noexcept { return __builtin_bit_cast(float, b); }
FLASHMEMORY_HOST_DEVICE constexpr bool is_nan(float x) noexcept { return (bits_of(x) & 0x7fffffffu) > 0x7f800000u; }
// 2^e for e in [-149, 127] without <cmath> (constexpr, device-safe).
FLASHMEMORY_HOST_DEVICE constexpr float exp2i(int e) noexcept {
  if (e >= -126) return float_of(static_cast<std::uint32_t>(e + 127) << 23);
  return float_of(1u << (e + 149));  // subnormal
}
// Rounds the non-negative integer part of v / 2^shift to nearest even.
FLASHMEMORY_HOST_DEVICE constexpr std::uint32_t shift_rne(std::uint32_t v, int shift) noexcept {
  if (shift <= 0) return v << -shift;
  if (shift >= 32) return 0;
  std::uint32_t q = v >> shift, rem = v & ((1u << shift) - 1), half = 1u << (shift - 1);
  return q + ((rem > half || (rem == half && (q & 1))) ? 1u : 0u);
}
}  // namespace detail

// bf16 ------------------------------------------------------------------------------------------------
FLASHMEMORY_HOST_DEVICE constexpr std::uint16_t encode_bf16(float x) noexcept {
  std::uint32_t b = detail::bits_of(x);
  if (detail::is_nan(x)) return static_cast<std::uint16_t>((b >> 16) | 0x0040u);
  return static_cast<std::uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
FLASHMEMORY_HOST_DEVICE constexpr float decode_bf16(std::uint16_t h) noexcept {
  return detail::float_of(static_cast<std::uint32_t>(h) << 16);
}

// A bf16 value as stored (layout-compatible with CUDA's __nv_bfloat16), for views over bf16 tensors.
struct bfloat16 {
  std::uint16_t bits = 0;
  FLASHMEMORY_HOST_DEVICE constexpr static bfloat16 from_float(float x) noexcept { return {encode_bf16(x)}; }
  FLASHMEMORY_HOST_DEVICE constexpr float to_float() const noexcept { return decode_bf16(bits); }
  friend constexpr bool operator==(bfloat16, bfloat16) = default;
};
static_assert(sizeof(bfloat16) == 2);

// f16 -------------------------------------------------------------------------------------------------
FLASHMEMORY_HOST_DEVICE constexpr float decode_f16(std::uint16_t h) noexcept {
  std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  int exp = (h >> 10) & 0x1f;
  std::uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return detail::float_of(sign | 0x7f800000u | (man << 13));
  float mag = exp == 0 ? static_cast<float>(man) * detail::exp2i(-24)
                       : detail::float_of(static_cast<std::uint32_t>(exp - 15 + 127) << 23 | man << 13);
  return detail::float_of(sign | detail::bits_of(mag));
}
FLASHMEMORY_HOST_DEVICE constexpr std::uint16_t encode_f16(float x) noexcept {
  std::uint32_t b = detail::bits_of(x);
  std::uint16_t sign = static_cast<std::uint16_t>((b >> 16) & 0x8000u);
  std::uint32_t a = b & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u | static_cast<std::uint16_t>((a >> 13) & 0x3ffu);
  int e = static_cast<int>(a >> 23) - 127;
  std::uint32_t m = (a & 0x7fffffu) | 0x800000u;  // 24-bit significand
  if (a == 0x7f800000u || e > 15) return sign | 0x7c00u;
  if (e < -25) return sign;
  if (e < -14) return sign | static_cast<std::uint16_t>(detail::shift_rne(m, -e - 1));  // subnormal (may round up to normal)
  std::uint32_t r = detail::shift_rne(m, 13);  // 11-bit significand, may carry to 2^11
  std::uint32_t v = (static_cast<std::uint32_t>(e + 15) << 10) + (r - 0x400u);
  return sign | static_cast<std::uint16_t>(v >= 0x7c00u ? 0x7c00u : v);
}

// f8 e4m3fn -------------------------------------------------------------------------------------------
inline constexpr float kF8E4M3Max = 448.0f;

FLASHMEMORY_HOST_DEVICE constexpr float decode_f8_e4m3(std::uint8_t v) noexcept {
  int exp = (v >> 3) & 0xf, man = v & 0x7;
  float mag = (exp == 0xf && man == 0x7) ? detail::float_of(0x7fc00000u)
              : exp == 0               ? static_cast<float>(man) * detail::exp2i(-9)
                                       : static_cast<float>(8 + man) * detail::exp2i(exp - 10);
  return (v & 0x80) ? -mag : mag;
}
// Overflow beyond the rounding range of 448 gives NaN (as torch's float8_e4m3fn cast does), or ±448 with
// saturate = true (as DeepSeek's quantisers, which clamp first).
FLASHMEMORY_HOST_DEVICE constexpr std::uint8_t encode_f8_e4m3(float x, bool saturate = false) noexcept {
  std::uint32_t b = detail::bits_of(x);
  std::uint8_t sign = static_cast<std::uint8_t>((b >> 24) & 0x80u);
  std::uint32_t a = b & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7f;
  int e = static_cast<int>(a >> 23) - 127;
  std::uint32_t m = (a & 0x7fffffu) | 0x800000u;
  std::uint32_t code = 0;
  if (a == 0x7f800000u || e > 8) code = 0x7f;
  else if (e < -10) code = 0;
  else if (e < -6) code = detail::shift_rne(m, 20 + (-6 - e));  // subnormal: units of 2^-9
  else {
    std::uint32_t r = detail::shift_rne(m, 20);  // 4-bit significand, may carry to 16
    code = (static_cast<std::uint32_t>(e + 7) << 3) + (r - 8u);
  }
  if (code > 0x7e) code = saturate ? 0x7e : 0x7f;
  return sign | static_cast<std::uint8_t>(code);
}

// ue8m0 -----------------------------------------------------------------------------------------------
FLASHMEMORY_HOST_DEVICE constexpr float decode_e8m0(std::uint8_t e) noexcept {
  return e == 0xff ? detail::float_of(0x7fc00000u) : detail::exp2i(static_cast<int>(e) - 127);
}
// The smallest power of two ≥ x (x > 0, finite), as a ue8m0 byte: DeepSeek's "round the scale up" rule.
FLASHMEMORY_HOST_DEVICE constexpr std::uint8_t encode_e8m0_ceil(float x) noexcept {
  std::uint32_t a = detail::bits_of(x) & 0x7fffffffu;
  if (a > 0x7f800000u) return 0xff;
  if (a <= 0x00400000u) return 0;  // ≤ 2^-127
  if (a < 0x00800000u) return 1;   // (2^-127, 2^-126)
  std::uint32_t e = a >> 23;
  if (a & 0x7fffffu) ++e;
  return e >= 0xff ? 0xfe : static_cast<std::uint8_t>(e);
}

// fp4 e2m1 --------------------------------------------------------------------------------------------
inline constexpr float kFp4E2M1Max = 6.0f;

FLASHMEMORY_HOST_DEVICE constexpr float decode_fp4_e2m1(std::uint8_t nibble) noexcept {
  constexpr float table[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  float mag = table[nibble & 0x7];
  return (nibble & 0x8) ? -mag : mag;
}
FLASHMEMORY_HOST_DEVICE constexpr std::uint8_t encode_fp4_e2m1(float x) noexcept {
  std::uint32_t b = detail::bits_of(x);
  if (detail::is_nan(x)) return 0;
  std::uint8_t sign = static_cast<std::uint8_t>((b >> 28) & 0x8u);
  float a = detail::float_of(b & 0x7fffffffu);
  // Midpoints between neighbours; at a tie the even code (mantissa bit 0) wins.
  std::uint8_t code = a < 0.25f ? 0 : a <= 0.25f ? 0
                    : a < 0.75f ? 1 : a <= 0.75f ? 2
                    : a < 1.25f ? 2 : a <= 1.25f ? 2
                    : a < 1.75f ? 3 : a <= 1.75f ? 4
                    : a < 2.5f  ? 4 : a <= 2.5f  ? 4
                    : a < 3.5f  ? 5 : a <= 3.5f  ? 6
                    : a < 5.0f  ? 6 : a <= 5.0f  ? 6 : 7;
  return sign | code;
}
// Two fp4 values per byte: the even column in the low nibble.
FLASHMEMORY_HOST_DEVICE constexpr std::uint8_t pack_fp4(std::uint8_t even, std::uint8_t odd) noexcept {
  return static_cast<std::uint8_t>((even & 0xf) | ((odd & 0xf) << 4));
}
FLASHMEMORY_HOST_DEVICE constexpr float unpack_fp4(std::uint8_t byte, std::size_t column) noexcept {
  return decode_fp4_e2m1(column & 1 ? byte >> 4 : byte & 0xf);
}

// ---------------------------------------------------------------------------------------------------
// Widens `count` elements of a raw (little-endian) buffer of type t to float. Integer types convert by
// value; used when loading checkpoints into the float32 reference.
inline void to_float(dtype t, std::span<std::byte const> src, std::span<float> dst) {
  std::size_t n = dst.size();
  if (src.size() < n * size_of(t))
    fail(errc::bad_shape, "to_float: ", src.size(), " bytes of ", name_of(t), " hold fewer than ", n, " elements");
  auto load = [&]<class T>(std::size_t i, T) {
    T v;
    __builtin_memcpy(&v, src.data() + i * sizeof(T), sizeof(T));
    return v;
  };
  for (std::size_t i = 0; i < n; ++i) {
    switch (t) {
      case dtype::f64: dst[i] = static_cast<float>(load(i, double{})); break;
      case dtype::f32: dst[i] = load(i, float{}); break;
      case dtype::f16: dst[i] = decode_f16(load(i, std::uint16_t{})); break;
      case dtype::bf16: dst[i] = decode_bf16(load(i, std::uint16_t{})); break;
      case dtype::f8_e4m3: dst[i] = decode_f8_e4m3(load(i, std::uint8_t{})); break;
      case dtype::f8_e8m0: dst[i] = decode_e8m0(load(i, std::uint8_t{})); break;
      case dtype::i64: dst[i] = static_cast<float>(load(i, std::int64_t{})); break;
      case dtype::i32: dst[i] = static_cast<float>(load(i, std::int32_t{})); break;
      case dtype::i16: dst[i] = static_cast<float>(load(i, std::int16_t{})); break;
      case dtype::i8: dst[i] = static_cast<float>(load(i, std::int8_t{})); break;
      case dtype::u8: case dtype::boolean: dst[i] = static_cast<float>(load(i, std::uint8_t{})); break;
    }
  }
}

}  // namespace flashmemory
