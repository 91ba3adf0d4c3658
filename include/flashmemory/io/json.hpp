// flashmemory/io/json.hpp — JSON loading with errors that name the file and the key.
//
// nlohmann::json does the parsing. This header adds what a user needs when a config is wrong: the file,
// the key path ("rope_scaling.factor", "compress_ratios[3]") and the expected vs found type in every
// message, a strict reading (duplicate keys are an error, where nlohmann would silently keep the last;
// 3.5 is not an integer; 300 does not fit an int8), and nothing thrown but flashmemory::error.
//
//   auto cfg = fm::io::JsonObject::load(dir / "config.json");
//   int dim = cfg.get<int>("hidden_size");                       // required
//   double theta = cfg.get_or("rope_theta", 10000.0);            // absent or null → the default
//   auto ratios = cfg.get<std::vector<int>>("compress_ratios");
//   if (auto rs = cfg.find<fm::io::JsonObject>("rope_scaling")) double f = rs->get<double>("factor");
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/io/mapped_file.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace flashmemory::io {

namespace detail {

// The found side of a type mismatch: "an integer (5)", "a string ("abc")", "an array of 3 elements".
// Containers are not printed: they may be large, and dumping them recurses once per nesting level.
inline std::string describe(nlohmann::json const& v) {
  using V = nlohmann::json::value_t;
  switch (v.type()) {
    case V::null: return "null";
    case V::boolean: return v.get<bool>() ? "a boolean (true)" : "a boolean (false)";
    case V::number_integer:
    case V::number_unsigned: return "an integer (" + v.dump() + ")";
    case V::number_float: return "a number (" + v.dump() + ")";
    case V::string: {
      std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return "a string (" + (s.size() > 40 ? s.substr(0, 40) + "...\"" : s) + ")";
    }
    case V::array: return "an array of " + std::to_string(v.size()) + (v.size() == 1 ? " element" : " elements");
    case V::object: return "an object";
    default: return "binary data";
  }
}

template <class T> struct is_vector : std::false_type {};
template <class T> struct is_vector<std::vector<T>> : std::true_type {};
template <class T> struct is_string_map : std::false_type {};
template <class T> struct is_string_map<std::map<std::string, T>> : std::true_type {};

}  // namespace detail

// Parses JSON text. `where` (a path, or "<file> header") starts every message. Malformed text and duplicate
// keys at any depth are errc::parse.
inline nlohmann::json parse_json(std::string_view text, std::string_view where) {
  // nlohmann stops at a NUL byte as at the end of the input; no JSON text holds one.
  if (auto nul = text.find('\0'); nul != std::string_view::npos)
    fail(errc::parse, where, ": invalid JSON: NUL byte at offset ", nul);
  // nlohmann keeps the last of two equal keys; a parser callback sees every key and records the first
  // repeat (with its path) instead. It does not throw: the parser's state is left alone.
  struct Frame {
    std::set<std::string> keys;
    std::string last;
  };
  std::vector<Frame> frames;
  std::string duplicate;
  auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) frames.emplace_back();
    else if (event == E::object_end && !frames.empty()) frames.pop_back();
    else if (event == E::key && !frames.empty()) {
      Frame& top = frames.back();
      top.last = parsed.get<std::string>();
      if (!top.keys.insert(top.last).second && duplicate.empty()) {
        for (Frame const& f : frames) duplicate += (duplicate.empty() ? "" : ".") + f.last;
      }
    }
    return true;
  };
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (nlohmann::json::exception const& e) {
    fail(errc::parse, where, ": invalid JSON: ", e.what());
  }
  if (!duplicate.empty()) fail(errc::parse, where, ": duplicate key \"", duplicate, "\"");
  return value;
}

// Reads and parses a JSON file; errors name the path.
inline nlohmann::json load_json(std::filesystem::path const& path) {
  MappedFile file = MappedFile::open(path);
  auto bytes = file.bytes();
  return parse_json({reinterpret_cast<char const*>(bytes.data()), bytes.size()}, path.string());
}

// A JSON object with typed access by key. Supported value types T: bool, integers (range-checked; an
// integral number such as 4096.0 is accepted), floating point (any number), std::string, std::vector<T>,
// std::map<std::string, T>, JsonObject (a nested object) and nlohmann::json (anything, unchecked).
// A missing required key is errc::not_found; a value of the wrong type or range is errc::parse.
class JsonObject {
 public:
  // `where` names the document in messages (its path); `prefix` is the key path of this object in it.
  JsonObject(nlohmann::json value, std::string where, std::string prefix = {})
      : value_(std::move(value)), where_(std::move(where)), prefix_(std::move(prefix)) {
    if (!value_.is_object())
      fail(errc::parse, where_, ": ", prefix_.empty() ? "the document" : "key \"" + prefix_ + "\"",
           ": expected an object, found ", detail::describe(value_));
  }
  static JsonObject load(std::filesystem::path const& path) { return {load_json(path), path.string()}; }

  std::string const& where() const noexcept { return where_; }
  nlohmann::json const& json() const noexcept { return value_; }

  // True when the key is present with a non-null value.
  bool contains(std::string_view key) const {
    auto it = value_.find(key);
    return it != value_.end() && !it->is_null();
  }

  // The value of a required key.
  template <class T>
  T get(std::string_view key) const {
    auto it = value_.find(key);
    if (it == value_.end()) fail(errc::not_found, where_, ": missing required key \"", path_of(key), "\"");
    return convert<T>(*it, path_of(key));
  }
  // The value of an optional key; nullopt when absent or null (HF configs write null for "not set").
  template <class T>
  std::optional<T> find(std::string_view key) const {
    if (!contains(key)) return std::nullopt;
    return convert<T>(*value_.find(key), path_of(key));
  }
  template <class T>
  T get_or(std::string_view key, T fallback) const {
    auto v = find<T>(key);
    return v ? std::move(*v) : std::move(fallback);
  }

 private:
  std::string path_of(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }

  template <class T>
  T convert(nlohmann::json const& v, std::string const& key) const {
    auto mismatch = [&](auto const& expected) -> T {
      fail(errc::parse, where_, ": key \"", key, "\": expected ", expected, ", found ", detail::describe(v));
    };
    if constexpr (std::is_same_v<T, nlohmann::json>) {
      return v;
    } else if constexpr (std::is_same_v<T, bool>) {
      return v.is_boolean() ? v.get<bool>() : mismatch("a boolean");
    } else if constexpr (std::is_integral_v<T>) {
      using L = std::numeric_limits<T>;
      std::string expected = fm::detail::cat("an integer in [", +L::min(), ", ", +L::max(), "]");
      if (v.is_number_unsigned()) {
        auto u = v.get<std::uint64_t>();
        return u <= static_cast<std::uint64_t>(L::max()) ? static_cast<T>(u) : mismatch(expected);
      }
      if (v.is_number_integer()) {
        auto s = v.get<std::int64_t>();
        return std::in_range<T>(s) ? static_cast<T>(s) : mismatch(expected);
      }
      if (v.is_number_float()) {
        // Only exact integers, and only within T's range (the bounds are exact powers of two ± 1).
        double d = v.get<double>();
        bool fits = std::floor(d) == d && d >= static_cast<double>(L::min()) &&
                    d < 2.0 * (static_cast<double>(L::max() / 2 + 1));
        return fits ? static_cast<T>(d) : mismatch(expected);
      }
      return mismatch(expected);
    } else if constexpr (std::is_floating_point_v<T>) {
      return v.is_number() ? v.get<T>() : mismatch("a number");
    } else if constexpr (std::is_same_v<T, std::string>) {
      return v.is_string() ? v.get<std::string>() : mismatch("a string");
    } else if constexpr (std::is_same_v<T, JsonObject>) {
      return v.is_object() ? JsonObject(v, where_, key) : mismatch("an object");
    } else if constexpr (detail::is_vector<T>::value) {
      if (!v.is_array()) return mismatch("an array");
      T out;
      out.reserve(v.size());
      for (std::size_t i = 0; i < v.size(); ++i)
        out.push_back(convert<typename T::value_type>(v[i], fm::detail::cat(key, "[", i, "]")));
      return out;
    } else if constexpr (detail::is_string_map<T>::value) {
      if (!v.is_object()) return mismatch("an object");
      T out;
      for (auto const& [k, item] : v.items()) out.emplace(k, convert<typename T::mapped_type>(item, key + "." + k));
      return out;
    } else {
      static_assert(!sizeof(T), "JsonObject: unsupported value type");
    }
  }

  nlohmann::json value_;
  std::string where_;
  std::string prefix_;
};

}  // namespace flashmemory::io
