// Writes modified copies of a fixture checkpoint into a temporary directory: renamed tensors, quantised
// storage, tensors removed or added, shards. Tests then load the copy and compare it with the original.
#pragma once

#include "fixtures.hpp"

#include <flashmemory/io/safetensors.hpp>
#include <flashmemory/io/safetensors_writer.hpp>

#include <atomic>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <unistd.h>

namespace dsv4_test {

// The tensors of a fixture's model.safetensors as stored (name → dtype, shape, bytes), editable.
struct StoredTensor {
  fm::dtype type;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;

  std::vector<float> floats() const {
    std::vector<float> v(bytes.size() / fm::size_of(type));
    fm::to_float(type, bytes, v);
    return v;
  }
  static StoredTensor of_floats(std::vector<std::int64_t> shape, std::span<float const> values) {
    auto raw = std::as_bytes(values);
    return {fm::dtype::f32, std::move(shape), {raw.begin(), raw.end()}};
  }
};
using TensorMap = std::map<std::string, StoredTensor>;

inline TensorMap read_tensors(std::filesystem::path const& file) {
  auto f = fm::io::SafetensorsFile::open(file);
  TensorMap out;
  for (std::string const& name : f.names()) {
    auto const& info = f.info(name);
    auto bytes = f.bytes(name);
    out.emplace(name, StoredTensor{info.type, info.shape, {bytes.begin(), bytes.end()}});
  }
  return out;
}

// A temporary checkpoint directory, removed when the object goes.
class TempCheckpoint {
 public:
  explicit TempCheckpoint(std::string const& fixture) {
    static std::atomic<int> counter{0};
    dir_ = std::filesystem::temp_directory_path() /
           ("fm_dsv4_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(dir_);
    std::filesystem::copy_file(fixture_dir(fixture) / "config.json", dir_ / "config.json");
  }
  ~TempCheckpoint() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  TempCheckpoint(TempCheckpoint const&) = delete;
  TempCheckpoint& operator=(TempCheckpoint const&) = delete;

  std::filesystem::path const& dir() const noexcept { return dir_; }

  // Writes the tensors as one file (or `shards` files with an index).
  void write(TensorMap const& tensors, int shards = 1) const {
    std::vector<fm::io::SafetensorsWriter> writers(static_cast<std::size_t>(shards));
    nlohmann::json weight_map = nlohmann::json::object();
    std::size_t i = 0;
    for (auto const& [name, t] : tensors) {
      std::size_t shard = i++ % writers.size();
      writers[shard].add(name, t.type, t.shape, t.bytes);
      weight_map[name] = shard_name(shard, shards);
    }
    for (std::size_t s = 0; s < writers.size(); ++s) writers[s].write(dir_ / shard_name(s, shards));
    if (shards > 1) std::ofstream(dir_ / "model.safetensors.index.json") << nlohmann::json{{"weight_map", weight_map}}.dump(2);
  }

  // Rewrites config.json through `edit`.
  void edit_config(std::function<void(nlohmann::json&)> const& edit) const {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(dir_ / "config.json"));
    edit(j);
    std::ofstream(dir_ / "config.json") << j.dump(2);
  }

 private:
  static std::string shard_name(std::size_t s, int shards) {
    if (shards == 1) return "model.safetensors";
    return "model-" + std::to_string(s + 1) + "-of-" + std::to_string(shards) + ".safetensors";
  }
  std::filesystem::path dir_;
};

}  // namespace dsv4_test
