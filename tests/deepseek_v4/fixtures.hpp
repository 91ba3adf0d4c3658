// Shared helpers of the DeepSeek-V4 tests: the golden fixtures under tests/data/dsv4/<name>/ (written by
// tools/make_golden.py from transformers in float32) and the error measure they are compared with.
#pragma once

#include <flashmemory/io/safetensors.hpp>
#include <flashmemory/models/deepseek_v4/decoder.hpp>
#include <flashmemory/models/deepseek_v4/load.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace dsv4_test {

namespace fm = flashmemory;
namespace v4 = flashmemory::models::deepseek_v4;

inline std::filesystem::path fixture_dir(std::string const& name) {
  return std::filesystem::path(FLASHMEMORY_TEST_DATA) / "dsv4" / name;
}

struct Golden {
  std::vector<fm::index_t> ids;
  std::vector<float> full, decode, chunked;  // [S, V]
  fm::index_t vocab = 0;
};

inline Golden load_golden(std::string const& name) {
  auto file = fm::io::SafetensorsFile::open(fixture_dir(name) / "golden.safetensors");
  auto const& ids = file.info("input_ids");
  Golden g;
  fm::HostBuffer<float> raw = file.read_float("input_ids", ids.shape);  // I64 ids widen exactly (< 2^24)
  for (float v : raw) g.ids.push_back(static_cast<fm::index_t>(v));
  auto const& full = file.info("logits_full");
  g.vocab = full.shape[1];
  for (auto [key, out] : {std::pair{"logits_full", &g.full}, std::pair{"logits_decode", &g.decode},
                          std::pair{"logits_chunked", &g.chunked}}) {
    fm::HostBuffer<float> v = file.read_float(key, full.shape);
    out->assign(v.begin(), v.end());
  }
  return g;
}

// One tensor of a fixture's intermediates.safetensors (what transformers computed inside the model).
inline std::vector<float> intermediate(std::string const& fixture, std::string const& name) {
  auto file = fm::io::SafetensorsFile::open(fixture_dir(fixture) / "intermediates.safetensors");
  auto v = file.read_float(name, file.info(name).shape);
  return {v.begin(), v.end()};
}

// max |a − b| / max |ref|: the measure make_golden.py uses for transformers' own agreement.
inline double rel_err(std::span<float const> a, std::span<float const> ref) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - ref[i]));
    scale = std::max(scale, std::abs(double(ref[i])));
  }
  return diff / scale;
}

// Feeds `ids` in chunks of the given sizes (cycled) and collects every position's logits.
template <class Decoder>
std::vector<float> run_chunked(Decoder& model, std::span<fm::index_t const> ids, std::vector<fm::index_t> const& sizes) {
  std::vector<float> all;
  std::size_t at = 0;
  for (std::size_t i = 0; at < ids.size(); ++i) {
    std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(sizes[i % sizes.size()]), ids.size() - at);
    auto logits = model.forward(ids.subspan(at, n), v4::Logits::all);
    all.insert(all.end(), logits.begin(), logits.end());
    at += n;
  }
  return all;
}

// Rows of [positions, V] logits that differ anywhere.
inline fm::index_t rows_differing(std::vector<float> const& a, std::vector<float> const& b, fm::index_t V) {
  fm::index_t n = 0;
  for (std::size_t r = 0; r * static_cast<std::size_t>(V) < a.size(); ++r)
    n += !std::equal(a.begin() + static_cast<std::ptrdiff_t>(r * V), a.begin() + static_cast<std::ptrdiff_t>((r + 1) * V),
                     b.begin() + static_cast<std::ptrdiff_t>(r * V));
  return n;
}

}  // namespace dsv4_test
