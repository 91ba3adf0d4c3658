// Exhaustive round trips of every code of every small format against its value table.
#include <flashmemory/core/dtype.hpp>

#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

using namespace flashmemory;

namespace {
// The value an e4m3fn code stands for, computed independently from the bit fields.
double e4m3_value(int code) {
  int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}
std::uint32_t bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
}  // namespace

TEST_CASE("f8 e4m3fn: every code decodes to its table value and encodes back", "[core][dtype]") {
  int nan_codes = 0;
  for (int c = 0; c < 256; ++c) {
    double want = e4m3_value(c);
    float got = decode_f8_e4m3(static_cast<std::uint8_t>(c));
    if (std::isnan(want)) {
      CHECK(std::isnan(got));
      ++nan_codes;
      continue;
    }
    CHECK(got == static_cast<float>(want));
    CHECK(encode_f8_e4m3(got) == c);
  }
  CHECK(nan_codes == 2);
  CHECK(decode_f8_e4m3(0x7e) == kF8E4M3Max);
}

TEST_CASE("f8 e4m3fn: rounding to nearest even, overflow and saturation", "[core][dtype]") {
  CHECK(encode_f8_e4m3(1.0625f) == encode_f8_e4m3(1.0f));    // tie between 1 and 1.125 → even (1.0)
  CHECK(encode_f8_e4m3(1.1875f) == encode_f8_e4m3(1.25f));   // tie between 1.125 and 1.25 → even (1.25)
  CHECK(encode_f8_e4m3(464.0f) == 0x7e);                     // tie 448/480 → 448
  CHECK(encode_f8_e4m3(465.0f) == 0x7f);                     // beyond → NaN (torch semantics)
  CHECK(encode_f8_e4m3(1e9f, true) == 0x7e);                 // saturating
  CHECK(encode_f8_e4m3(-1e9f, true) == 0xfe);
  CHECK(encode_f8_e4m3(std::ldexp(1.0f, -10)) == 0x00);      // half the smallest subnormal → even (0)
  CHECK(encode_f8_e4m3(std::ldexp(3.0f, -11)) == 0x01);      // 0.75 of it → 1 ulp
  // Against a brute-force nearest search on random inputs.
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-500.0f, 500.0f);
  for (int i = 0; i < 20000; ++i) {
    float x = u(rng) * (i % 3 == 0 ? 1e-3f : 1.0f);
    std::uint8_t c = encode_f8_e4m3(x, true);
    double best = 1e30;
    for (int k = 0; k < 256; ++k) {
      double v = e4m3_value(k);
      if (!std::isnan(v)) best = std::min(best, std::abs(v - x));
    }
    REQUIRE(std::abs(decode_f8_e4m3(c) - x) == static_cast<float>(best));
  }
}

TEST_CASE("bf16: every finite code round-trips; rounding is to nearest even", "[core][dtype]") {
  for (std::uint32_t c = 0; c < 65536; ++c) {
    float f = decode_bf16(static_cast<std::uint16_t>(c));
    REQUIRE(bits(f) == c << 16);
    if (!std::isnan(f)) REQUIRE(encode_bf16(f) == c);
    else REQUIRE(std::isnan(decode_bf16(encode_bf16(f))));
  }
  CHECK(encode_bf16(1.0f + std::ldexp(1.0f, -8)) == encode_bf16(1.0f));  // tie → even
  CHECK(encode_bf16(1.0f + std::ldexp(3.0f, -8)) == encode_bf16(1.0f + std::ldexp(1.0f, -6)));
}

TEST_CASE("f16: every code round-trips, subnormals and infinities included", "[core][dtype]") {
  for (std::uint32_t c = 0; c < 65536; ++c) {
    float f = decode_f16(static_cast<std::uint16_t>(c));
    int e = (c >> 10) & 31, m = c & 1023;
    double mag = e == 31 ? (m ? NAN : INFINITY) : e == 0 ? std::ldexp(m, -24) : std::ldexp(1.0 + m / 1024.0, e - 15);
    double want = (c & 0x8000) ? -mag : mag;
    if (std::isnan(want)) {
      REQUIRE(std::isnan(f));
      continue;
    }
    REQUIRE(f == static_cast<float>(want));
    REQUIRE(encode_f16(f) == c);
  }
  CHECK(encode_f16(65520.0f) == 0x7c00);  // rounds past the max → inf
  CHECK(encode_f16(65519.0f) == 0x7bff);
}

TEST_CASE("ue8m0: byte e is 2^(e-127); ceil encoding rounds up to a power of two", "[core][dtype]") {
  for (int e = 0; e < 255; ++e) {
    REQUIRE(decode_e8m0(static_cast<std::uint8_t>(e)) == std::ldexp(1.0f, e - 127));
    REQUIRE(encode_e8m0_ceil(decode_e8m0(static_cast<std::uint8_t>(e))) == e);
  }
  CHECK(std::isnan(decode_e8m0(255)));
  CHECK(encode_e8m0_ceil(3.0f) == 129);  // 4 = 2^2
  CHECK(encode_e8m0_ceil(0.3f) == 126);  // 0.5
}

TEST_CASE("fp4 e2m1: table, round trips, ties to even, nibble order", "[core][dtype]") {
  const float table[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  for (int c = 0; c < 16; ++c) {
    CHECK(decode_fp4_e2m1(static_cast<std::uint8_t>(c)) == table[c]);
    CHECK(std::signbit(decode_fp4_e2m1(static_cast<std::uint8_t>(c))) == (c >= 8));
    CHECK(encode_fp4_e2m1(table[c]) == c);
  }
  CHECK(encode_fp4_e2m1(0.75f) == 2);   // tie 0.5/1 → 1 (even mantissa)
  CHECK(encode_fp4_e2m1(1.75f) == 4);   // tie 1.5/2 → 2
  CHECK(encode_fp4_e2m1(2.5f) == 4);    // tie 2/3 → 2
  CHECK(encode_fp4_e2m1(5.0f) == 6);    // tie 4/6 → 4
  CHECK(encode_fp4_e2m1(100.0f) == 7);  // saturates
  std::uint8_t byte = pack_fp4(encode_fp4_e2m1(1.5f), encode_fp4_e2m1(-3.0f));
  CHECK(byte == 0xd3);  // low nibble = even column
  CHECK(unpack_fp4(byte, 0) == 1.5f);
  CHECK(unpack_fp4(byte, 1) == -3.0f);
}

TEST_CASE("dtype names and widening", "[core][dtype]") {
  dtype t{};
  CHECK(parse_dtype("BF16", t));
  CHECK(t == dtype::bf16);
  CHECK(parse_dtype("F8_E8M0", t));
  CHECK(size_of(t) == 1);
  CHECK_FALSE(parse_dtype("F8_E5M3", t));
  std::uint16_t raw[3] = {encode_bf16(1.5f), encode_bf16(-2.0f), encode_bf16(0.25f)};
  float out[3];
  to_float(dtype::bf16, std::as_bytes(std::span(raw)), out);
  CHECK(out[0] == 1.5f);
  CHECK(out[1] == -2.0f);
  CHECK(out[2] == 0.25f);
  CHECK_THROWS_AS(to_float(dtype::f32, std::as_bytes(std::span(raw)), out), error);
}
