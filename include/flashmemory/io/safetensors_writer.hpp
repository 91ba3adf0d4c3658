// flashmemory/io/safetensors_writer.hpp — builds safetensors files, for tools, fixtures and tests.
//
// Tensors are stored in the order they were added, packed without gaps; the JSON header is padded with
// spaces so that the data section starts at a multiple of 8 bytes. Bytes are copied at add(), so the
// writer suits test- and tool-sized data, not streaming a whole checkpoint.
//
//   fm::io::SafetensorsWriter w;
//   w.add("norm.weight", fm::dtype::f32, {4}, std::as_bytes(std::span(values)));
//   w.set_metadata("format", "pt");
//   w.write(dir / "model.safetensors");
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/io/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace flashmemory::io {

class SafetensorsWriter {
 public:
  // Adds a tensor; `bytes` must hold exactly numel(shape) · size_of(type) bytes. A repeated or reserved
  // name, a negative dimension or a wrong byte count is an error naming the tensor.
  void add(std::string name, dtype type, std::vector<std::int64_t> shape, std::span<std::byte const> bytes) {
    if (name == "__metadata__") fail(errc::invalid_argument, "safetensors writer: \"__metadata__\" is reserved");
    if (header_.contains(name)) fail(errc::invalid_argument, "safetensors writer: tensor \"", name, "\" added twice");
    std::size_t need = size_of(type);
    bool overflow = false;
    for (std::int64_t d : shape) {
      if (d < 0)
        fail(errc::bad_shape, "safetensors writer: tensor \"", name, "\": negative dimension in ",
             detail::format_shape(shape));
      overflow |= __builtin_mul_overflow(need, static_cast<std::size_t>(d), &need);
    }
    if (std::find(shape.begin(), shape.end(), 0) != shape.end()) need = 0, overflow = false;  // [0, 2^40, 2^40] is empty
    if (overflow || bytes.size() != need)
      fail(errc::bad_shape, "safetensors writer: tensor \"", name, "\": shape ", detail::format_shape(shape), " of ",
           name_of(type), " needs ", overflow ? "more than SIZE_MAX" : std::to_string(need), " bytes, got ",
           bytes.size());
    header_[name] = {{"dtype", name_of(type)}, {"shape", shape}, {"data_offsets", {data_.size(), data_.size() + bytes.size()}}};
    data_.insert(data_.end(), bytes.begin(), bytes.end());
  }

  void set_metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }

  // The complete file image.
  std::vector<std::byte> serialize() const {
    nlohmann::json header = header_;
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::vector<std::byte> image(8);
    std::uint64_t n = text.size();
    for (std::size_t i = 0; i < 8; ++i) image[i] = static_cast<std::byte>(n >> (8 * i));
    for (char c : text) image.push_back(static_cast<std::byte>(c));
    image.insert(image.end(), data_.begin(), data_.end());
    return image;
  }

  // Writes the file, replacing any file at `path`; errc::io naming the path when that fails.
  void write(std::filesystem::path const& path) const {
    std::vector<std::byte> image = serialize();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<char const*>(image.data()), static_cast<std::streamsize>(image.size()));
    out.close();
    if (!out) fail(errc::io, path.string(), ": cannot write ", image.size(), " bytes");
  }

 private:
  nlohmann::json header_ = nlohmann::json::object();
  std::map<std::string, std::string> metadata_;
  std::vector<std::byte> data_;
};

}  // namespace flashmemory::io
