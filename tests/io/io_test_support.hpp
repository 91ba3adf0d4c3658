// Helpers of the io tests: a scratch directory, raw safetensors images, seeded random tensors.
#pragma once

#include <flashmemory/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace io_test {

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "flashmemory-io-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(TempDir const&) = delete;
  TempDir& operator=(TempDir const&) = delete;
  std::filesystem::path const& path() const { return path_; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_file(std::filesystem::path const& path, std::span<std::byte const> bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<char const*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}
inline void write_file(std::filesystem::path const& path, std::string_view text) {
  write_file(path, std::as_bytes(std::span(text.data(), text.size())));
}

// A hand-made safetensors image: `header_length` (the 8-byte prefix), `header` text, `data_bytes` of data.
inline std::vector<std::byte> image(std::uint64_t header_length, std::string_view header, std::size_t data_bytes = 0) {
  std::vector<std::byte> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>(header_length >> (8 * i)));
  for (char c : header) out.push_back(static_cast<std::byte>(c));
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::byte>(i * 37 + 11));
  return out;
}
inline std::vector<std::byte> image(std::string_view header, std::size_t data_bytes = 0) {
  return image(header.size(), header, data_bytes);
}

// Random bytes from a seeded engine (every bit pattern, NaN codes included).
inline std::vector<std::byte> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xff);
  return out;
}

}  // namespace io_test
