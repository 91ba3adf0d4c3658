// safetensors: writer → reader round trips, and every malformed header refused with a message naming the
// file, the tensor and the problem.
#include <flashmemory/io/safetensors.hpp>
#include <flashmemory/io/safetensors_writer.hpp>

#include "io_test_support.hpp"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_exception.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

using namespace flashmemory;
using Catch::Matchers::ContainsSubstring;
using io::SafetensorsFile;
using io::SafetensorsWriter;

namespace {
struct Tensor {
  std::string name;
  dtype type;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;
};

// A mix of dtypes and edge shapes (scalar, empty, odd sizes), with seeded random contents.
std::vector<Tensor> sample_tensors(std::uint32_t seed) {
  std::vector<Tensor> out = {
      {"layers.0.attn.wq_a.weight", dtype::f8_e4m3, {6, 10}, {}},
      {"layers.0.attn.wq_a.scale", dtype::f8_e8m0, {1, 1}, {}},
      {"embed.weight", dtype::bf16, {7, 5}, {}},
      {"norm.weight", dtype::f32, {5}, {}},
      {"ffn.gate.tid2eid", dtype::i64, {3, 2}, {}},
      {"hc_head_scale", dtype::f32, {}, {}},
      {"empty", dtype::f16, {0, 4}, {}},
      {"mask", dtype::boolean, {3}, {}},
  };
  std::uint32_t k = 0;
  for (Tensor& t : out) {
    std::size_t n = size_of(t.type);
    for (auto d : t.shape) n *= static_cast<std::size_t>(d);
    t.bytes = io_test::random_bytes(n, seed + k++);
  }
  return out;
}

std::vector<std::byte> write_image(std::vector<Tensor> const& tensors) {
  SafetensorsWriter w;
  for (Tensor const& t : tensors) w.add(t.name, t.type, t.shape, t.bytes);
  w.set_metadata("format", "pt");
  w.set_metadata("note", "round trip");
  return w.serialize();
}

void check_matches(SafetensorsFile const& f, std::vector<Tensor> const& tensors) {
  std::vector<std::string> want;
  for (Tensor const& t : tensors) want.push_back(t.name);
  std::sort(want.begin(), want.end());
  CHECK(f.names() == want);
  for (Tensor const& t : tensors) {
    INFO(t.name);
    REQUIRE(f.contains(t.name));
    io::TensorInfo const& info = f.info(t.name);
    CHECK(info.name == t.name);
    CHECK(info.type == t.type);
    CHECK(info.shape == t.shape);
    CHECK(info.size == t.bytes.size());
    auto got = f.bytes(t.name);
    REQUIRE(got.size() == t.bytes.size());
    CHECK(std::equal(got.begin(), got.end(), t.bytes.begin()));
  }
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"note", "round trip"}});
}

// Expects parse() of `bytes` to fail with `code` and a message naming the file and each of `pieces`.
void expect_rejected(std::vector<std::byte> const& bytes, errc code, std::vector<std::string> const& pieces) {
  try {
    SafetensorsFile::parse(bytes, "bad.safetensors");
    FAIL("accepted");
  } catch (error const& e) {
    INFO(e.what());
    CHECK(e.code() == code);
    CHECK_THAT(e.what(), ContainsSubstring("bad.safetensors"));
    for (auto const& p : pieces) CHECK_THAT(e.what(), ContainsSubstring(p));
  }
}
void expect_rejected(std::string const& header, std::size_t data, errc code, std::vector<std::string> const& pieces) {
  expect_rejected(io_test::image(header, data), code, pieces);
}
}  // namespace

TEST_CASE("safetensors: writer and reader round-trip names, dtypes, shapes, bytes and metadata", "[io][safetensors]") {
  auto tensors = sample_tensors(42);
  auto bytes = write_image(tensors);

  // The header length is a multiple of 8, so the data section starts 8-aligned.
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(bytes.size() > 8 + n);

  SafetensorsFile mem = SafetensorsFile::parse(bytes, "memory");
  check_matches(mem, tensors);
  CHECK(mem.info("layers.0.attn.wq_a.weight").offset >= 8 + n);

  io_test::TempDir dir;
  io_test::write_file(dir / "model.safetensors", bytes);
  SafetensorsFile file = SafetensorsFile::open(dir / "model.safetensors");
  CHECK(file.path() == (dir / "model.safetensors").string());
  check_matches(file, tensors);

  // Spans stay valid when the file object moves (they point into the map, not into the object).
  auto before = file.bytes("embed.weight");
  SafetensorsFile moved = std::move(file);
  CHECK(moved.bytes("embed.weight").data() == before.data());
  check_matches(moved, tensors);

  // write() gives the same image as serialize().
  SafetensorsWriter w;
  for (Tensor const& t : tensors) w.add(t.name, t.type, t.shape, t.bytes);
  w.set_metadata("format", "pt");
  w.set_metadata("note", "round trip");
  w.write(dir / "again.safetensors");
  check_matches(SafetensorsFile::open(dir / "again.safetensors"), tensors);
}

TEST_CASE("safetensors: read_float widens each dtype and checks the shape", "[io][safetensors]") {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> f32(12);
  std::vector<std::uint16_t> bf16(12);
  std::vector<std::int64_t> i64(12);
  for (std::size_t i = 0; i < 12; ++i) {
    f32[i] = normal(rng);
    bf16[i] = static_cast<std::uint16_t>(rng());
    i64[i] = static_cast<std::int64_t>(rng() % 2001) - 1000;
  }
  SafetensorsWriter w;
  w.add("a", dtype::f32, {3, 4}, std::as_bytes(std::span(f32)));
  w.add("b", dtype::bf16, {2, 6}, std::as_bytes(std::span(bf16)));
  w.add("c", dtype::i64, {12}, std::as_bytes(std::span(i64)));
  auto image = w.serialize();
  SafetensorsFile f = SafetensorsFile::parse(image, "weights.safetensors");

  auto a = f.read_float("a", {3, 4});
  auto b = f.read_float("b", {2, 6});
  auto c = f.read_float("c", {12});
  REQUIRE(a.size() == 12);
  float norm = 0;
  for (std::size_t i = 0; i < 12; ++i) {
    norm += std::abs(a[i]);
    CHECK(a[i] == f32[i]);
    // bf16 is the top half of a float32: compare bit patterns (NaN codes included).
    std::uint32_t bits;
    std::memcpy(&bits, &b[i], 4);
    CHECK(bits == static_cast<std::uint32_t>(bf16[i]) << 16);
    CHECK(c[i] == static_cast<float>(i64[i]));
  }
  CHECK(norm > 0);

  CHECK_THROWS_MATCHES(f.read_float("a", {4, 3}), error,
                       Catch::Matchers::MessageMatches(ContainsSubstring("weights.safetensors") &&
                                                       ContainsSubstring("tensor \"a\"") &&
                                                       ContainsSubstring("expected shape [4,3], found [3,4]")));
  CHECK_THROWS_MATCHES(f.read_float("c", {}), error,
                       Catch::Matchers::MessageMatches(ContainsSubstring("expected shape [], found [12]")));
  try {
    f.bytes("missing.weight");
    FAIL("found a tensor that is not there");
  } catch (error const& e) {
    CHECK(e.code() == errc::not_found);
    CHECK_THAT(e.what(), ContainsSubstring("weights.safetensors") && ContainsSubstring("no tensor \"missing.weight\""));
  }
}

TEST_CASE("safetensors: gaps, trailing bytes, padding, empty tensors and an empty header are valid", "[io][safetensors]") {
  // "a" [0,8), gap, "b" [16,24), an empty tensor inside "a"'s range, 8 trailing bytes, space padding.
  std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[1,2],"data_offsets":[16,24]},)"
      R"("e":{"dtype":"BF16","shape":[3,0],"data_offsets":[4,4]}}       )";
  SafetensorsFile f = SafetensorsFile::parse(io_test::image(header, 32), "ok.safetensors");
  CHECK(f.names() == std::vector<std::string>{"a", "b", "e"});
  CHECK(f.info("b").offset == 8 + header.size() + 16);
  CHECK(f.bytes("e").empty());
  CHECK(f.info("e").numel() == 0);
  CHECK(f.info("b").numel() == 2);

  SafetensorsFile none = SafetensorsFile::parse(io_test::image("{}"), "none.safetensors");
  CHECK(none.names().empty());
  CHECK(none.metadata().empty());
}

TEST_CASE("safetensors: truncated files and bad header lengths are refused", "[io][safetensors]") {
  std::vector<std::byte> five(5, std::byte{0});
  expect_rejected(five, errc::parse, {"5 bytes is too short"});
  expect_rejected(io_test::image(std::uint64_t{1} << 40, "{}"), errc::parse, {"header length 1099511627776 exceeds the limit"});
  expect_rejected(io_test::image(~std::uint64_t{0}, "{}"), errc::parse, {"exceeds the limit"});
  expect_rejected(io_test::image(100, "{}", 10), errc::parse, {"header length 100 runs past the end of the file (20 bytes)"});
  // A valid file cut short: the header still parses but the last tensor's bytes are gone.
  auto whole = write_image(sample_tensors(3));
  std::vector<std::byte> cut(whole.begin(), whole.end() - 1);
  expect_rejected(cut, errc::parse, {"outside the data section"});
}

TEST_CASE("safetensors: malformed headers are refused, naming the tensor and the problem", "[io][safetensors]") {
  auto entry = [](std::string const& body) { return R"({"w":{)" + body + "}}"; };
  std::string const offsets = R"("data_offsets":[0,16])";
  std::string const shape = R"("shape":[2,2])";
  std::string const type = R"("dtype":"F32")";

  SECTION("not JSON") { expect_rejected(R"({"w": )", 16, errc::parse, {"header", "invalid JSON"}); }
  SECTION("not UTF-8") { expect_rejected("{\"w\xff\": 1}", 0, errc::parse, {"invalid JSON"}); }
  SECTION("NUL inside") { expect_rejected(std::string("{}\0\0", 4), 0, errc::parse, {"NUL byte at offset 2"}); }
  SECTION("not an object") { expect_rejected("[1, 2]", 0, errc::parse, {"expected a JSON object, found an array of 2 elements"}); }
  SECTION("entry not an object") { expect_rejected(R"({"w": 5})", 0, errc::parse, {"tensor \"w\"", "expected an object, found an integer (5)"}); }
  SECTION("missing dtype") { expect_rejected(entry(shape + "," + offsets), 16, errc::parse, {"tensor \"w\"", "missing \"dtype\""}); }
  SECTION("missing shape") { expect_rejected(entry(type + "," + offsets), 16, errc::parse, {"tensor \"w\"", "missing \"shape\""}); }
  SECTION("missing data_offsets") { expect_rejected(entry(type + "," + shape), 16, errc::parse, {"tensor \"w\"", "missing \"data_offsets\""}); }
  SECTION("dtype not a string") {
    expect_rejected(entry(R"("dtype":4,)" + shape + "," + offsets), 16, errc::parse, {"tensor \"w\"", "\"dtype\"", "found an integer (4)"});
  }
  SECTION("unknown dtype") {
    expect_rejected(entry(R"("dtype":"F8_E5M2",)" + shape + "," + offsets), 16, errc::bad_dtype,
                    {"tensor \"w\"", "unknown dtype \"F8_E5M2\""});
  }
  SECTION("shape not an array") {
    expect_rejected(entry(type + R"(,"shape":4,)" + offsets), 16, errc::parse, {"tensor \"w\"", "\"shape\": expected an array"});
  }
  SECTION("negative dimension") {
    expect_rejected(entry(type + R"(,"shape":[-2,2],)" + offsets), 16, errc::parse, {"tensor \"w\"", "non-negative integers", "(-2)"});
  }
  SECTION("fractional dimension") {
    expect_rejected(entry(type + R"(,"shape":[2.5],)" + offsets), 16, errc::parse, {"tensor \"w\"", "found a number (2.5)"});
  }
  SECTION("dimension beyond int64") {
    expect_rejected(entry(type + R"(,"shape":[9223372036854775808,0],"data_offsets":[0,0])"), 0, errc::parse,
                    {"tensor \"w\"", "(9223372036854775808)"});
  }
  SECTION("element count overflows") {
    expect_rejected(entry(type + R"(,"shape":[4294967296,4294967296],)" + offsets), 16, errc::parse,
                    {"tensor \"w\"", "[4294967296,4294967296] has more elements"});
  }
  SECTION("offsets not a pair of integers") {
    for (std::string bad : {R"([0])", R"([0,16,32])", R"([0,"16"])", R"([-1,15])", R"({"begin":0})"})
      expect_rejected(entry(type + "," + shape + R"(,"data_offsets":)" + bad), 16, errc::parse,
                      {"tensor \"w\"", "\"data_offsets\": expected [begin, end]"});
  }
  SECTION("span disagrees with shape × dtype size") {
    expect_rejected(entry(type + "," + shape + R"(,"data_offsets":[0,12])"), 16, errc::parse,
                    {"tensor \"w\"", "shape [2,2] of F32 needs 16 bytes, but data_offsets [0, 12] span 12"});
  }
  SECTION("offsets outside the data section") {
    expect_rejected(entry(type + "," + shape + R"(,"data_offsets":[16,32])"), 24, errc::parse,
                    {"tensor \"w\"", "data_offsets [16, 32] lie outside the data section (24 bytes)"});
    expect_rejected(entry(type + R"(,"shape":[0],"data_offsets":[25,25])"), 24, errc::parse, {"outside the data section"});
  }
  SECTION("reversed offsets") {
    expect_rejected(entry(type + "," + shape + R"(,"data_offsets":[16,0])"), 16, errc::parse, {"tensor \"w\"", "data_offsets [16, 0] are reversed"});
  }
  SECTION("overlapping tensors") {
    std::string h = R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"z":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})";
    expect_rejected(h, 32, errc::parse, {"\"a\" (data_offsets [0, 16])", "\"z\" (data_offsets [12, 20])", "overlap"});
    // Two tensors at the same place.
    std::string same = R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[8,16]},"b":{"dtype":"U8","shape":[8],"data_offsets":[8,16]}})";
    expect_rejected(same, 16, errc::parse, {"\"a\"", "\"b\"", "overlap"});
  }
  SECTION("duplicate tensor names") {
    std::string h = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
    expect_rejected(h, 8, errc::parse, {"duplicate key \"w\""});
    expect_rejected(entry(type + "," + type + "," + shape + "," + offsets), 16, errc::parse, {"duplicate key \"w.dtype\""});
  }
  SECTION("metadata not a string map") {
    expect_rejected(R"({"__metadata__": ["pt"]})", 0, errc::parse, {"\"__metadata__\": expected an object of strings"});
    expect_rejected(R"({"__metadata__": {"format": "pt", "step": 3}})", 0, errc::parse,
                    {"\"__metadata__\" key \"step\": expected a string, found an integer (3)"});
  }
}

TEST_CASE("safetensors: files that cannot be opened name the path", "[io][safetensors]") {
  io_test::TempDir dir;
  try {
    SafetensorsFile::open(dir / "absent.safetensors");
    FAIL("opened a missing file");
  } catch (error const& e) {
    CHECK(e.code() == errc::not_found);
    CHECK_THAT(e.what(), ContainsSubstring((dir / "absent.safetensors").string()));
  }
  try {
    SafetensorsFile::open(dir.path());
    FAIL("opened a directory");
  } catch (error const& e) {
    CHECK(e.code() == errc::io);
    CHECK_THAT(e.what(), ContainsSubstring(dir.path().string()));
  }
  io_test::write_file(dir / "empty.safetensors", "");
  CHECK_THROWS_MATCHES(SafetensorsFile::open(dir / "empty.safetensors"), error,
                       Catch::Matchers::MessageMatches(ContainsSubstring("empty.safetensors") &&
                                                       ContainsSubstring("0 bytes is too short")));
}

TEST_CASE("safetensors writer: refuses what the reader would refuse", "[io][safetensors]") {
  SafetensorsWriter w;
  std::vector<std::byte> eight(8);
  w.add("x", dtype::f32, {2}, eight);
  CHECK_THROWS_WITH(w.add("x", dtype::f32, {2}, eight), ContainsSubstring("tensor \"x\" added twice"));
  CHECK_THROWS_WITH(w.add("y", dtype::f32, {3}, eight), ContainsSubstring("tensor \"y\": shape [3] of F32 needs 12 bytes, got 8"));
  CHECK_THROWS_WITH(w.add("z", dtype::u8, {-8}, eight), ContainsSubstring("negative dimension"));
  CHECK_THROWS_WITH(w.add("__metadata__", dtype::u8, {8}, eight), ContainsSubstring("reserved"));
  io_test::TempDir dir;
  CHECK_THROWS_MATCHES(w.write(dir / "no" / "such" / "dir.safetensors"), error,
                       Catch::Matchers::MessageMatches(ContainsSubstring("dir.safetensors") && ContainsSubstring("cannot write")));
}
