// JSON loading: typed access, strictness (duplicates, ranges, types) and messages naming file and key.
#include <flashmemory/io/json.hpp>

#include "io_test_support.hpp"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

using namespace flashmemory;
using Catch::Matchers::ContainsSubstring;
using io::JsonObject;

namespace {
JsonObject object_of(std::string const& text) { return {io::parse_json(text, "cfg.json"), "cfg.json"}; }

// Runs `f`, expecting a flashmemory::error with `code` whose message holds every piece of `pieces`.
template <class F>
void expect_error(F&& f, errc code, std::vector<std::string> const& pieces) {
  try {
    f();
    FAIL("no error thrown");
  } catch (error const& e) {
    INFO(e.what());
    CHECK(e.code() == code);
    for (auto const& p : pieces) CHECK_THAT(e.what(), ContainsSubstring(p));
  }
}
}  // namespace

TEST_CASE("json: a file loads; missing, malformed and duplicate-key files name the file", "[io][json]") {
  io_test::TempDir dir;
  io_test::write_file(dir / "config.json", R"({"hidden_size": 64, "rope_scaling": {"factor": 4.0}})");
  JsonObject cfg = JsonObject::load(dir / "config.json");
  CHECK(cfg.get<int>("hidden_size") == 64);
  CHECK(cfg.get<JsonObject>("rope_scaling").get<double>("factor") == 4.0);

  std::string missing = (dir / "nope.json").string();
  expect_error([&] { io::load_json(dir / "nope.json"); }, errc::not_found, {missing});

  io_test::write_file(dir / "bad.json", "{\"a\": 1,\n \"b\": }");
  expect_error([&] { io::load_json(dir / "bad.json"); }, errc::parse, {(dir / "bad.json").string(), "invalid JSON", "line 2"});
  io_test::write_file(dir / "empty.json", "");
  expect_error([&] { io::load_json(dir / "empty.json"); }, errc::parse, {"empty.json", "invalid JSON"});

  // nlohmann would keep the last "b" silently.
  io_test::write_file(dir / "dup.json", R"({"a": {"b": 1, "c": [{"x": 1}], "b": 2}})");
  expect_error([&] { io::load_json(dir / "dup.json"); }, errc::parse, {"dup.json", "duplicate key \"a.b\""});
  expect_error([] { io::parse_json(R"({"a": [{"x": 1, "x": 2}]})", "t"); }, errc::parse, {"duplicate key \"a.x\""});
  // Equal keys in different objects are fine.
  CHECK_NOTHROW(io::parse_json(R"({"a": {"k": 1}, "b": {"k": 2}, "k": [{"k": 3}, {"k": 4}]})", "t"));

  expect_error([] { JsonObject(io::parse_json("[1]", "list.json"), "list.json"); }, errc::parse,
               {"list.json", "expected an object, found an array of 1 element"});
}

TEST_CASE("json: required keys, types and messages naming key, expected and found", "[io][json]") {
  JsonObject cfg = object_of(R"({
    "n": 7, "neg": -3, "big": 18446744073709551615, "half": 3.5, "whole": 4096.0, "flag": true, "name": "dsv4",
    "ratios": [0, 4, "x"], "ints": [1, 2, 3], "nested": {"factor": "two", "ok": 1.5}, "none": null,
    "map": {"a": "1", "b": "2"}, "bad_map": {"a": "1", "b": 2}})");
  CHECK(cfg.get<int>("n") == 7);
  CHECK(cfg.get<std::int64_t>("neg") == -3);
  CHECK(cfg.get<std::uint64_t>("big") == std::numeric_limits<std::uint64_t>::max());
  CHECK(cfg.get<int>("whole") == 4096);
  CHECK(cfg.get<double>("n") == 7.0);
  CHECK(cfg.get<float>("half") == 3.5f);
  CHECK(cfg.get<bool>("flag"));
  CHECK(cfg.get<std::string>("name") == "dsv4");
  CHECK(cfg.get<std::vector<int>>("ints") == std::vector<int>{1, 2, 3});
  CHECK(cfg.get<std::map<std::string, std::string>>("map") == std::map<std::string, std::string>{{"a", "1"}, {"b", "2"}});
  CHECK(cfg.get<nlohmann::json>("ratios").size() == 3);

  expect_error([&] { cfg.get<int>("hidden_size"); }, errc::not_found, {"cfg.json", "missing required key \"hidden_size\""});
  expect_error([&] { cfg.get<int>("name"); }, errc::parse,
               {"cfg.json", "key \"name\"", "expected an integer in [-2147483648, 2147483647]", "found a string (\"dsv4\")"});
  expect_error([&] { cfg.get<int>("half"); }, errc::parse, {"key \"half\"", "found a number (3.5)"});
  expect_error([&] { cfg.get<std::uint32_t>("neg"); }, errc::parse, {"key \"neg\"", "[0, 4294967295]", "found an integer (-3)"});
  expect_error([&] { cfg.get<std::int64_t>("big"); }, errc::parse, {"key \"big\"", "found an integer (18446744073709551615)"});
  expect_error([&] { cfg.get<bool>("n"); }, errc::parse, {"key \"n\"", "expected a boolean", "found an integer (7)"});
  expect_error([&] { cfg.get<double>("flag"); }, errc::parse, {"key \"flag\"", "expected a number", "found a boolean (true)"});
  expect_error([&] { cfg.get<std::string>("ints"); }, errc::parse, {"expected a string", "found an array of 3 elements"});
  expect_error([&] { cfg.get<std::vector<int>>("ratios"); }, errc::parse, {"key \"ratios[2]\"", "found a string (\"x\")"});
  expect_error([&] { cfg.get<std::vector<int>>("n"); }, errc::parse, {"key \"n\"", "expected an array"});
  expect_error([&] { cfg.get<std::map<std::string, std::string>>("bad_map"); }, errc::parse,
               {"key \"bad_map.b\"", "expected a string", "found an integer (2)"});
  expect_error([&] { cfg.get<JsonObject>("name"); }, errc::parse, {"key \"name\"", "expected an object"});
  expect_error([&] { cfg.get<int>("none"); }, errc::parse, {"key \"none\"", "found null"});

  // Nested objects carry the path of their key.
  JsonObject nested = cfg.get<JsonObject>("nested");
  CHECK(nested.get<double>("ok") == 1.5);
  expect_error([&] { nested.get<double>("factor"); }, errc::parse, {"cfg.json", "key \"nested.factor\"", "found a string"});
  expect_error([&] { nested.get<double>("scale"); }, errc::not_found, {"missing required key \"nested.scale\""});
}

TEST_CASE("json: optional keys treat absent and null alike, but never hide a wrong type", "[io][json]") {
  JsonObject cfg = object_of(R"({"theta": 50000, "scaling": null, "name": 3})");
  CHECK(cfg.get_or("theta", 10000.0) == 50000.0);
  CHECK(cfg.get_or("absent", 10000.0) == 10000.0);
  CHECK(cfg.get_or("scaling", 1.25) == 1.25);
  CHECK(cfg.contains("theta"));
  CHECK_FALSE(cfg.contains("scaling"));
  CHECK_FALSE(cfg.contains("absent"));
  CHECK_FALSE(cfg.find<JsonObject>("scaling").has_value());
  CHECK(cfg.find<int>("theta") == 50000);
  expect_error([&] { cfg.get_or("name", std::string("x")); }, errc::parse, {"key \"name\"", "expected a string"});
}

TEST_CASE("json: integers convert exactly when they fit the requested type, and fail otherwise", "[io][json]") {
  std::mt19937_64 rng(1234);
  int fits = 0, misses = 0;
  for (int i = 0; i < 2000; ++i) {
    // Magnitudes spread over all bit widths, both signs.
    std::int64_t v = static_cast<std::int64_t>(rng() >> (rng() % 64));
    if (rng() & 1) v = -v;
    JsonObject cfg = object_of("{\"v\": " + std::to_string(v) + ", \"f\": " + std::to_string(v) + ".0}");
    bool in16 = v >= INT16_MIN && v <= INT16_MAX;
    if (in16) {
      ++fits;
      CHECK(cfg.get<std::int16_t>("v") == v);
    } else {
      ++misses;
      CHECK_THROWS_AS(cfg.get<std::int16_t>("v"), error);
    }
    bool in_u32 = v >= 0 && v <= static_cast<std::int64_t>(UINT32_MAX);
    if (in_u32) CHECK(cfg.get<std::uint32_t>("v") == static_cast<std::uint32_t>(v));
    else CHECK_THROWS_AS(cfg.get<std::uint32_t>("v"), error);
    // The same value written as a float: accepted when the double holds it exactly.
    double d = static_cast<double>(v);
    if (in16) CHECK(cfg.get<std::int16_t>("f") == v);
    if (static_cast<std::int64_t>(d) == v && d < 9.2e18) CHECK(cfg.get<std::int64_t>("f") == v);
  }
  CHECK(fits > 100);
  CHECK(misses > 100);
}
