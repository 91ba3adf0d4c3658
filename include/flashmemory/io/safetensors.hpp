// flashmemory/io/safetensors.hpp — a validated, memory-mapped safetensors reader.
//
// Format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N, N bytes of
// JSON, then the data section. The JSON maps each tensor name to {"dtype", "shape", "data_offsets":
// [begin, end]} (offsets relative to the data section) and may hold "__metadata__", a string → string map.
//
// Everything in the header is checked before any tensor is handed out: its length (≤ 100 MB and inside
// the file), the JSON (an object, no duplicate keys), every entry (fields present and typed, a dtype this
// library reads, shape × dtype size = the byte span, offsets ordered and inside the data section) and the
// tensors together (no two overlap). A failure is a flashmemory::error naming the file, the tensor and the
// problem; a bad file never leads to a read outside it. Gaps between tensors and trailing bytes are allowed.
//
// open() maps the file and parses it; parse() reads an image already in memory (tests, the fuzzer).
//
//   auto f = fm::io::SafetensorsFile::open("model.safetensors");
//   fm::HostBuffer<float> w = f.read_float("norm.weight", {4096});   // checks the shape, widens to f32
//   std::span<std::byte const> raw = f.bytes("embed.weight");        // zero-copy view of the stored bytes
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/io/json.hpp>
#include <flashmemory/io/mapped_file.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flashmemory::io {

// Headers longer than this are refused as corrupt (the limit of the reference implementation).
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;

// One tensor's header entry, validated.
struct TensorInfo {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;  // first byte, counted from the start of the file
  std::size_t size = 0;    // bytes = numel() · size_of(type)

  std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
};

namespace detail {
inline std::string format_shape(std::span<std::int64_t const> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}
}  // namespace detail

class SafetensorsFile {
 public:
  // Maps and validates the file at `path`.
  static SafetensorsFile open(std::filesystem::path const& path) {
    MappedFile map = MappedFile::open(path);
    SafetensorsFile f = parse(map.bytes(), path.string());
    f.map_ = std::move(map);
    return f;
  }

  // Validates a whole file image held by the caller, which must outlive the result; `path` names it in
  // messages.
  static SafetensorsFile parse(std::span<std::byte const> image, std::string path) {
    SafetensorsFile f;
    f.image_ = image;
    f.path_ = std::move(path);
    std::string const& where = f.path_;
    if (image.size() < 8)
      fail(errc::parse, where, ": ", image.size(), " bytes is too short for a safetensors file (8-byte header length)");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = n << 8 | std::to_integer<std::uint64_t>(image[static_cast<std::size_t>(i)]);
    if (n > kMaxSafetensorsHeader)
      fail(errc::parse, where, ": header length ", n, " exceeds the limit of ", kMaxSafetensorsHeader, " bytes");
    if (n > image.size() - 8)
      fail(errc::parse, where, ": header length ", n, " runs past the end of the file (", image.size(), " bytes)");

    std::size_t data_begin = 8 + static_cast<std::size_t>(n);
    nlohmann::json header =
        parse_json({reinterpret_cast<char const*>(image.data()) + 8, static_cast<std::size_t>(n)}, where + " header");
    if (!header.is_object()) fail(errc::parse, where, ": header: expected a JSON object, found ", detail::describe(header));
    for (auto const& [name, entry] : header.items()) {
      if (name == "__metadata__") f.read_metadata(entry);
      else f.tensors_.emplace(name, f.read_entry(name, entry, data_begin, image.size() - data_begin));
    }
    f.check_overlaps(data_begin);
    return f;
  }

  // The path (or the label given to parse()) that messages name.
  std::string const& path() const noexcept { return path_; }

  // Tensor names in sorted order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (auto const& [name, info] : tensors_) out.push_back(name);
    return out;
  }
  bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

  // The tensor's entry; errc::not_found naming the file and the tensor when absent.
  TensorInfo const& info(std::string_view name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) fail(errc::not_found, path_, ": no tensor \"", name, "\"");
    return it->second;
  }

  // The tensor's stored bytes (little-endian, row-major), a view into the file.
  std::span<std::byte const> bytes(std::string_view name) const {
    TensorInfo const& t = info(name);
    return image_.subspan(t.offset, t.size);
  }

  // The tensor widened to float32 (core/dtype.hpp to_float), after checking that its shape is exactly
  // `expected_shape`; a mismatch is errc::bad_shape naming the file, the tensor and both shapes.
  HostBuffer<float> read_float(std::string_view name, std::vector<std::int64_t> const& expected_shape) const {
    TensorInfo const& t = info(name);
    if (t.shape != expected_shape)
      fail(errc::bad_shape, path_, ": tensor \"", name, "\": expected shape ", detail::format_shape(expected_shape),
           ", found ", detail::format_shape(t.shape), " (", name_of(t.type), ")");
    HostBuffer<float> out(static_cast<std::size_t>(t.numel()), t.name);
    to_float(t.type, bytes(name), out.span());
    return out;
  }

  // "__metadata__" (empty when the header has none).
  std::map<std::string, std::string> const& metadata() const noexcept { return metadata_; }

 private:
  SafetensorsFile() = default;

  void read_metadata(nlohmann::json const& entry) {
    if (!entry.is_object())
      fail(errc::parse, path_, ": \"__metadata__\": expected an object of strings, found ", detail::describe(entry));
    for (auto const& [key, value] : entry.items()) {
      if (!value.is_string())
        fail(errc::parse, path_, ": \"__metadata__\" key \"", key, "\": expected a string, found ",
             detail::describe(value));
      metadata_.emplace(key, value.get<std::string>());
    }
  }

  TensorInfo read_entry(std::string const& name, nlohmann::json const& entry, std::size_t data_begin,
                        std::size_t data_size) const {
    auto bad = [&](auto const&... problem) { fail(errc::parse, path_, ": tensor \"", name, "\": ", problem...); };
    if (!entry.is_object()) bad("expected an object, found ", detail::describe(entry));
    auto field = [&](char const* key) -> nlohmann::json const& {
      auto it = entry.find(key);
      if (it == entry.end()) bad("missing \"", key, "\"");
      return *it;
    };
    TensorInfo t;
    t.name = name;

    nlohmann::json const& type = field("dtype");
    if (!type.is_string()) bad("\"dtype\": expected a string, found ", detail::describe(type));
    if (!parse_dtype(type.get_ref<std::string const&>(), t.type))
      fail(errc::bad_dtype, path_, ": tensor \"", name, "\": unknown dtype ",
           type.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));

    nlohmann::json const& shape = field("shape");
    if (!shape.is_array()) bad("\"shape\": expected an array, found ", detail::describe(shape));
    std::uint64_t numel = 1;
    bool overflow = false;
    for (nlohmann::json const& d : shape) {
      if (!d.is_number_unsigned() || d.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        bad("\"shape\": expected non-negative integers, found ", detail::describe(d));
      std::uint64_t dim = d.get<std::uint64_t>();
      t.shape.push_back(static_cast<std::int64_t>(dim));
      overflow |= __builtin_mul_overflow(numel, dim, &numel);
    }
    std::uint64_t need = 0;
    bool empty = std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end();
    if (!empty && (overflow || __builtin_mul_overflow(numel, size_of(t.type), &need)))
      bad("shape ", detail::format_shape(t.shape), " has more elements than any file can hold");

    nlohmann::json const& offsets = field("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      bad("\"data_offsets\": expected [begin, end] (two non-negative integers), found ", detail::describe(offsets));
    std::uint64_t begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    if (begin > end) bad("data_offsets [", begin, ", ", end, "] are reversed");
    if (end > data_size)
      bad("data_offsets [", begin, ", ", end, "] lie outside the data section (", data_size, " bytes)");
    if (end - begin != need)
      bad("shape ", detail::format_shape(t.shape), " of ", name_of(t.type), " needs ", need,
          " bytes, but data_offsets [", begin, ", ", end, "] span ", end - begin);
    t.offset = data_begin + static_cast<std::size_t>(begin);
    t.size = static_cast<std::size_t>(need);
    return t;
  }

  // Sorted by start, any overlap shows up between neighbours. Empty tensors overlap nothing.
  void check_overlaps(std::size_t data_begin) const {
    std::vector<TensorInfo const*> order;
    for (auto const& [name, t] : tensors_)
      if (t.size > 0) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (std::size_t i = 1; i < order.size(); ++i) {
      TensorInfo const &a = *order[i - 1], &b = *order[i];
      if (b.offset < a.offset + a.size)
        fail(errc::parse, path_, ": tensors \"", a.name, "\" (data_offsets [", a.offset - data_begin, ", ",
             a.offset + a.size - data_begin, "]) and \"", b.name, "\" (data_offsets [", b.offset - data_begin, ", ",
             b.offset + b.size - data_begin, "]) overlap");
    }
  }

  MappedFile map_;                     // empty for parse()
  std::span<std::byte const> image_;   // the whole file
  std::string path_;
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace flashmemory::io
