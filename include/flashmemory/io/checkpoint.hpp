// flashmemory/io/checkpoint.hpp — a Hugging Face style checkpoint: one lookup over all its shards.
//
// A checkpoint is either
//   - a directory holding config.json and model.safetensors, or config.json and the shards listed in
//     model.safetensors.index.json ({"weight_map": {tensor name: shard file}}); model.safetensors wins when
//     both exist, as in transformers; or
//   - a single .safetensors file (no config).
// Every shard is opened (mapped and validated) up front, and the index is checked against the shards: a
// missing shard file, a name the index maps to a shard that lacks it, and a tensor stored in two shards are
// errors naming the index, the tensor and the shard files. Tensors a shard holds beyond the index are
// served too.
//
//   auto ckpt = fm::io::Checkpoint::open("DeepSeek-V4-Flash/");
//   int dim = ckpt.config().get<int>("hidden_size");
//   auto norm = ckpt.read_float("norm.weight", {dim});
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/io/json.hpp>
#include <flashmemory/io/safetensors.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace flashmemory::io {

class Checkpoint {
 public:
  static constexpr char const* kConfig = "config.json";
  static constexpr char const* kSingle = "model.safetensors";
  static constexpr char const* kIndex = "model.safetensors.index.json";

  // Opens a checkpoint directory or a single safetensors file.
  static Checkpoint open(std::filesystem::path const& path) {
    Checkpoint c;
    c.path_ = path;
    if (!is_a(path, std::filesystem::file_type::directory)) {
      c.add_shard(SafetensorsFile::open(path));
      return c;
    }
    c.config_ = JsonObject::load(path / kConfig);
    if (is_a(path / kSingle, std::filesystem::file_type::regular)) c.add_shard(SafetensorsFile::open(path / kSingle));
    else if (is_a(path / kIndex, std::filesystem::file_type::regular)) c.open_shards(path, JsonObject::load(path / kIndex));
    else fail(errc::not_found, path.string(), ": checkpoint directory has neither ", kSingle, " nor ", kIndex);
    return c;
  }

  std::filesystem::path const& path() const noexcept { return path_; }

  // config.json; errc::not_found for a single-file checkpoint.
  JsonObject const& config() const {
    if (!config_) fail(errc::not_found, path_.string(), ": a single safetensors file has no ", kConfig);
    return *config_;
  }

  // The shards in file-name order (one for a single file).
  std::span<SafetensorsFile const> shards() const noexcept { return shards_; }

  // Tensor names over all shards, in sorted order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(owner_.size());
    for (auto const& [name, shard] : owner_) out.push_back(name);
    return out;
  }
  bool contains(std::string_view name) const { return owner_.find(name) != owner_.end(); }

  // The shard that holds a tensor; errc::not_found naming the checkpoint and the tensor.
  SafetensorsFile const& file(std::string_view name) const {
    auto it = owner_.find(name);
    if (it == owner_.end()) fail(errc::not_found, path_.string(), ": checkpoint has no tensor \"", name, "\"");
    return shards_[it->second];
  }
  TensorInfo const& info(std::string_view name) const { return file(name).info(name); }
  std::span<std::byte const> bytes(std::string_view name) const { return file(name).bytes(name); }
  HostBuffer<float> read_float(std::string_view name, std::vector<std::int64_t> const& expected_shape) const {
    return file(name).read_float(name, expected_shape);
  }

 private:
  Checkpoint() = default;

  // Never throws: a path that cannot be inspected is no directory and no file, and opening it reports why.
  static bool is_a(std::filesystem::path const& p, std::filesystem::file_type type) noexcept {
    std::error_code ec;
    return std::filesystem::status(p, ec).type() == type;
  }

  void add_shard(SafetensorsFile file) {
    std::size_t index = shards_.size();
    for (std::string& name : file.names()) {
      auto [it, fresh] = owner_.emplace(std::move(name), index);
      if (!fresh)
        fail(errc::parse, path_.string(), ": tensor \"", it->first, "\" is stored in two shards, ",
             shards_[it->second].path(), " and ", file.path());
    }
    shards_.push_back(std::move(file));
  }

  void open_shards(std::filesystem::path const& dir, JsonObject const& index) {
    auto weight_map = index.get<std::map<std::string, std::string>>("weight_map");
    // Shard file → one tensor mapped to it (for messages), in file-name order.
    std::map<std::string, std::string> files;
    for (auto const& [name, file] : weight_map) {
      std::filesystem::path rel(file);
      bool inside = !file.empty() && rel.is_relative() && std::find(rel.begin(), rel.end(), std::filesystem::path("..")) == rel.end();
      if (!inside)
        fail(errc::parse, index.where(), ": weight_map maps \"", name, "\" to \"", file,
             "\", which is not a file name inside the checkpoint directory");
      files.emplace(file, name);
    }
    std::map<std::string, std::size_t> shard_of;
    for (auto const& [file, example] : files) {
      if (!is_a(dir / file, std::filesystem::file_type::regular))
        fail(errc::not_found, index.where(), ": shard \"", file, "\" (holding \"", example, "\") does not exist");
      shard_of.emplace(file, shards_.size());
      add_shard(SafetensorsFile::open(dir / file));
    }
    for (auto const& [name, file] : weight_map) {
      auto it = owner_.find(name);
      if (it == owner_.end())
        fail(errc::not_found, index.where(), ": weight_map maps \"", name, "\" to shard \"", file,
             "\", which does not contain it");
      if (it->second != shard_of.at(file))
        fail(errc::parse, index.where(), ": weight_map maps \"", name, "\" to shard \"", file, "\", but it is in ",
             shards_[it->second].path());
    }
  }

  std::filesystem::path path_;
  std::optional<JsonObject> config_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, std::size_t, std::less<>> owner_;  // tensor name → index into shards_
};

}  // namespace flashmemory::io
