// The record formats: sizes, bf16 exact round trips, fp8 within the format's error bound, and one record
// of each packed format compared byte for byte with a hand-computed one.
#include <flashmemory/layout/csa_entry.hpp>
#include <flashmemory/layout/index_key.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <vector>

using namespace flashmemory;

namespace {
std::vector<float> random_values(std::size_t n, unsigned seed, float spread) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> exponent(-spread, spread);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng) * std::exp2(exponent(rng));
  return v;
}
std::vector<std::uint8_t> bytes_of(std::span<std::byte const> s) {
  std::vector<std::uint8_t> out;
  for (std::byte b : s) out.push_back(std::to_integer<std::uint8_t>(b));
  return out;
}
}  // namespace

TEST_CASE("record sizes follow DeepSeek-V4's formats and scale with the parameters", "[layout]") {
  CHECK(layout::CsaEntryBf16().record_bytes() == 1024);
  CHECK(layout::IndexKeyBf16().record_bytes() == 256);
  CHECK(layout::CsaEntryPacked().record_bytes() == 584);
  CHECK(layout::CsaEntryPacked().scale_count() == 7);
  CHECK(layout::page_bytes(layout::CsaEntryPacked()) == 37'376);
  CHECK(layout::IndexKeyFp8().record_bytes() == 132);
  // Tiny model: 48 nope channels in one partial block, 16 rope channels: 48 + 32 + 1 → 88.
  layout::CsaEntryPacked tiny(64, 16);
  CHECK(tiny.scale_count() == 1);
  CHECK(tiny.record_bytes() == 88);
  CHECK(layout::IndexKeyFp8(32).record_bytes() == 36);
  CHECK_THROWS_AS(layout::CsaEntryPacked(16, 32), error);
}

TEST_CASE("bf16 records round-trip bf16 values exactly and round others to nearest", "[layout]") {
  layout::CsaEntryBf16 l(96, 4);
  auto v = random_values(96, 1, 20.0f);
  for (float& x : v) x = decode_bf16(encode_bf16(x));  // representable values
  std::vector<std::byte> rec(static_cast<std::size_t>(l.record_bytes()));
  std::vector<float> back(96);
  l.encode(v, rec);
  l.decode(rec, back);
  CHECK(back == v);

  auto raw = random_values(96, 2, 20.0f);
  l.encode(raw, rec);
  l.decode(rec, back);
  for (std::size_t i = 0; i < raw.size(); ++i) CHECK(std::abs(back[i] - raw[i]) <= std::abs(raw[i]) * 0x1p-8f);
  CHECK(bytes_of(rec).size() == 192);
  std::vector<std::byte> small(10);
  CHECK_THROWS_AS(l.encode(raw, small), error);
}

TEST_CASE("CsaEntryPacked: fp8 nope within half a step, bf16 rope exact, scales are powers of two", "[layout]") {
  for (auto l : {layout::CsaEntryPacked(), layout::CsaEntryPacked(64, 16, 8), layout::CsaEntryPacked(200, 8, 4, 32)}) {
    for (unsigned seed = 0; seed < 20; ++seed) {
      auto v = random_values(static_cast<std::size_t>(l.channels()), 10 + seed, 12.0f);
      for (index_t r = l.nope_channels(); r < l.channels(); ++r) v[r] = decode_bf16(encode_bf16(v[r]));
      if (seed == 0) std::fill(v.begin(), v.begin() + std::min<index_t>(l.block(), l.nope_channels()), 0.0f);  // all-zero block
      std::vector<std::byte> rec(static_cast<std::size_t>(l.record_bytes()), std::byte{0xAB});
      std::vector<float> back(v.size());
      l.encode(v, rec);
      l.decode(rec, back);
      for (index_t b = 0; b < l.scale_count(); ++b) {
        index_t first = b * l.block(), last = std::min(first + l.block(), l.nope_channels());
        float amax = 1e-4f;
        for (index_t c = first; c < last; ++c) amax = std::max(amax, std::abs(v[c]));
        float scale = decode_e8m0(std::to_integer<std::uint8_t>(rec[l.scale_offset() + b]));
        CHECK(scale >= amax / 448.0f * (1 - 1e-6f));  // the smallest power of two that fits the block
        CHECK(scale < amax / 448.0f * 2);
        for (index_t c = first; c < last; ++c)
          CHECK(std::abs(back[c] - v[c]) <= std::max(std::abs(v[c]) * 0x1p-4f, scale * 0x1p-10f));
      }
      for (index_t r = l.nope_channels(); r < l.channels(); ++r) CHECK(back[r] == v[r]);
      for (index_t p = l.scale_offset() + l.scale_count(); p < l.record_bytes(); ++p) CHECK(rec[p] == std::byte{0});
    }
  }
}

TEST_CASE("CsaEntryPacked encodes a hand-computed record byte for byte", "[layout]") {
  // 8 channels, 2 rope, block 4: nope [0, 6) in blocks {0..3}, {4, 5}; 6 + 4 + 2 = 12 bytes → padded to 16.
  layout::CsaEntryPacked l(8, 2, 1, 4);
  REQUIRE(l.record_bytes() == 16);
  std::array<float, 8> v{1.0f, -2.0f, 0.5f, 3.0f, 0.1f, -0.05f, 1.5f, -0.25f};
  std::array<std::byte, 16> rec{};
  l.encode(v, rec);
  // Block 0: amax 3 → 3/448 ≈ 0.0067 → scale 2^-7 (byte 120). x / scale = 128, −256, 64, 384:
  //   e4m3 128 = 2^7 → 0x70; −256 = −2^8 → 0xF8; 64 = 2^6 → 0x68; 384 = 1.5·2^8 → 0x7C.
  // Block 1: amax 0.1 → 2.23e-4 → scale 2^-12 (byte 115). 409.6 → 416 = 1.625·2^8 → 0x7D;
  //   −204.8 → −208 = −1.625·2^7 → 0xF5.
  // Rope (bf16 little-endian): 1.5 = 0x3FC0, −0.25 = 0xBE80. Scales 0x78 0x73, then 4 zero pad bytes.
  std::vector<std::uint8_t> expected{0x70, 0xF8, 0x68, 0x7C, 0x7D, 0xF5, 0xC0, 0x3F, 0x80, 0xBE, 0x78, 0x73, 0, 0, 0, 0};
  CHECK(bytes_of(rec) == expected);
  std::array<float, 8> back{};
  l.decode(rec, back);
  CHECK(back == std::array<float, 8>{1.0f, -2.0f, 0.5f, 3.0f, 416.0f / 4096, -208.0f / 4096, 1.5f, -0.25f});
}

TEST_CASE("IndexKeyFp8: within the error bound, scale stored as fp32, hand-computed record", "[layout]") {
  layout::IndexKeyFp8 l;
  for (unsigned seed = 0; seed < 20; ++seed) {
    auto v = random_values(128, 100 + seed, 10.0f);
    std::vector<std::byte> rec(132);
    std::vector<float> back(128);
    l.encode(v, rec);
    l.decode(rec, back);
    float amax = 1e-4f;
    for (float x : v) amax = std::max(amax, std::abs(x));
    float scale = amax / 448.0f;
    CHECK(__builtin_bit_cast(std::uint32_t, scale) == layout::detail::load_u32(rec.data() + 128));
    for (std::size_t c = 0; c < v.size(); ++c)
      CHECK(std::abs(back[c] - v[c]) <= std::max(std::abs(v[c]) * 0x1p-4f, scale * 0x1p-10f) * 1.0001f);
  }
  // 4 channels: amax 4.48 → scale 0.01 (fp32 0x3C23D70A). x / scale ≈ 448, −110, 2.5, 0:
  //   448 → 0x7E; −110 → −112 = −1.75·2^6 → 0xEE; 2.5 = 1.25·2^1 → 0x42; 0 → 0x00.
  layout::IndexKeyFp8 tiny(4);
  std::array<float, 4> v{4.48f, -1.1f, 0.025f, 0.0f};
  std::array<std::byte, 8> rec{};
  tiny.encode(v, rec);
  CHECK(bytes_of(rec) == std::vector<std::uint8_t>{0x7E, 0xEE, 0x42, 0x00, 0x0A, 0xD7, 0x23, 0x3C});
}
