// Checkpoints: one lookup over a single file or index-listed shards; index/shard disagreements refused.
#include <flashmemory/io/checkpoint.hpp>
#include <flashmemory/io/safetensors_writer.hpp>

#include "io_test_support.hpp"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_exception.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

using namespace flashmemory;
using Catch::Matchers::ContainsSubstring;
using io::Checkpoint;

namespace {
constexpr char kConfigText[] = R"({"hidden_size": 8, "num_hidden_layers": 2})";

// name → float32 values of shape [4, 2], seeded.
using Tensors = std::map<std::string, std::vector<float>>;

Tensors random_tensors(std::vector<std::string> const& names, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  Tensors out;
  for (auto const& n : names) {
    std::vector<float> v(8);
    for (float& x : v) x = u(rng);
    out[n] = v;
  }
  return out;
}

void write_shard(std::filesystem::path const& path, Tensors const& tensors) {
  io::SafetensorsWriter w;
  for (auto const& [name, v] : tensors) w.add(name, dtype::f32, {4, 2}, std::as_bytes(std::span(v)));
  w.write(path);
}

// A directory with config.json, three shards and an index mapping every tensor to its shard.
struct ShardedDir {
  io_test::TempDir dir;
  std::vector<Tensors> shards = {random_tensors({"embed.weight", "layers.0.attn_norm.weight"}, 1),
                                 random_tensors({"layers.0.ffn_norm.weight", "layers.1.attn_norm.weight"}, 2),
                                 random_tensors({"head.weight", "norm.weight"}, 3)};
  static std::string file(std::size_t i) { return "model-0000" + std::to_string(i + 1) + "-of-00003.safetensors"; }

  ShardedDir() {
    io_test::write_file(dir / "config.json", kConfigText);
    for (std::size_t i = 0; i < shards.size(); ++i) write_shard(dir / file(i), shards[i]);
    write_index();
  }
  void write_index(std::map<std::string, std::string> const& overrides = {}) {
    nlohmann::json map = nlohmann::json::object();
    for (std::size_t i = 0; i < shards.size(); ++i)
      for (auto const& [name, v] : shards[i]) map[name] = file(i);
    for (auto const& [name, f] : overrides) map[name] = f;
    nlohmann::json index = {{"metadata", {{"total_size", 192}}}, {"weight_map", map}};
    io_test::write_file(dir / "model.safetensors.index.json", index.dump(2));
  }
};

void check_error(std::filesystem::path const& path, errc code, std::vector<std::string> const& pieces) {
  try {
    Checkpoint::open(path);
    FAIL("opened");
  } catch (error const& e) {
    INFO(e.what());
    CHECK(e.code() == code);
    for (auto const& p : pieces) CHECK_THAT(e.what(), ContainsSubstring(p));
  }
}
}  // namespace

TEST_CASE("checkpoint: sharded index gives one lookup over all shards", "[io][checkpoint]") {
  ShardedDir d;
  Checkpoint c = Checkpoint::open(d.dir.path());
  CHECK(c.config().get<int>("hidden_size") == 8);
  REQUIRE(c.shards().size() == 3);

  std::vector<std::string> all;
  for (std::size_t i = 0; i < d.shards.size(); ++i) {
    for (auto const& [name, values] : d.shards[i]) {
      INFO(name);
      all.push_back(name);
      CHECK(c.contains(name));
      CHECK(c.file(name).path() == (d.dir / ShardedDir::file(i)).string());
      CHECK(c.info(name).shape == std::vector<std::int64_t>{4, 2});
      auto got = c.read_float(name, {4, 2});
      CHECK(std::equal(got.begin(), got.end(), values.begin(), values.end()));
      CHECK(c.bytes(name).size() == 32);
    }
  }
  std::sort(all.begin(), all.end());
  CHECK(c.names() == all);

  CHECK_FALSE(c.contains("mtp.0.norm.weight"));
  CHECK_THROWS_MATCHES(c.info("mtp.0.norm.weight"), error,
                       Catch::Matchers::MessageMatches(ContainsSubstring(d.dir.path().string()) &&
                                                       ContainsSubstring("no tensor \"mtp.0.norm.weight\"")));
  CHECK_THROWS_MATCHES(c.read_float("norm.weight", {8}), error,
                       Catch::Matchers::MessageMatches(ContainsSubstring(ShardedDir::file(2)) &&
                                                       ContainsSubstring("tensor \"norm.weight\"") &&
                                                       ContainsSubstring("expected shape [8], found [4,2]")));
}

TEST_CASE("checkpoint: a single model.safetensors, or a bare .safetensors path", "[io][checkpoint]") {
  io_test::TempDir dir;
  Tensors t = random_tensors({"a", "b"}, 9);
  io_test::write_file(dir / "config.json", kConfigText);
  write_shard(dir / "model.safetensors", t);
  // An index next to model.safetensors is ignored, as transformers does.
  io_test::write_file(dir / "model.safetensors.index.json", R"({"weight_map": {"a": "gone.safetensors"}})");

  Checkpoint c = Checkpoint::open(dir.path());
  CHECK(c.names() == std::vector<std::string>{"a", "b"});
  CHECK(c.config().get<int>("num_hidden_layers") == 2);
  auto b = c.read_float("b", {4, 2});
  CHECK(std::equal(b.begin(), b.end(), t["b"].begin(), t["b"].end()));

  Checkpoint file = Checkpoint::open(dir / "model.safetensors");
  CHECK(file.names() == std::vector<std::string>{"a", "b"});
  CHECK_THROWS_MATCHES(file.config(), error, Catch::Matchers::MessageMatches(ContainsSubstring("has no config.json")));
}

TEST_CASE("checkpoint: missing pieces are named", "[io][checkpoint]") {
  io_test::TempDir dir;
  check_error(dir / "absent", errc::not_found, {"absent"});
  check_error(dir.path(), errc::not_found, {(dir / "config.json").string()});
  io_test::write_file(dir / "config.json", kConfigText);
  check_error(dir.path(), errc::not_found, {dir.path().string(), "neither model.safetensors nor model.safetensors.index.json"});
  io_test::write_file(dir / "model.safetensors.index.json", R"({"metadata": {}})");
  check_error(dir.path(), errc::not_found, {"model.safetensors.index.json", "missing required key \"weight_map\""});
  io_test::write_file(dir / "model.safetensors.index.json", R"({"weight_map": {"a": 3}})");
  check_error(dir.path(), errc::parse, {"model.safetensors.index.json", "key \"weight_map.a\"", "expected a string"});
}

TEST_CASE("checkpoint: an index that disagrees with its shards is refused", "[io][checkpoint]") {
  ShardedDir d;
  std::string index = "model.safetensors.index.json";

  SECTION("a missing shard file") {
    std::filesystem::remove(d.dir / ShardedDir::file(1));
    check_error(d.dir.path(), errc::not_found, {index, "shard \"" + ShardedDir::file(1) + "\"", "does not exist"});
  }
  SECTION("a name mapped to a shard that lacks it") {
    d.write_index({{"layers.7.attn_norm.weight", ShardedDir::file(0)}});
    check_error(d.dir.path(), errc::not_found,
                {index, "\"layers.7.attn_norm.weight\"", ShardedDir::file(0), "does not contain it"});
  }
  SECTION("a name mapped to the wrong shard") {
    d.write_index({{"norm.weight", ShardedDir::file(0)}});
    check_error(d.dir.path(), errc::parse, {index, "\"norm.weight\"", ShardedDir::file(0), "but it is in", ShardedDir::file(2)});
  }
  SECTION("a tensor stored in two shards") {
    write_shard(d.dir / ShardedDir::file(1), random_tensors({"layers.0.ffn_norm.weight", "norm.weight"}, 5));
    check_error(d.dir.path(), errc::parse, {"tensor \"norm.weight\" is stored in two shards", ShardedDir::file(1), ShardedDir::file(2)});
  }
  SECTION("a shard outside the directory") {
    d.write_index({{"norm.weight", "../" + ShardedDir::file(2)}});
    check_error(d.dir.path(), errc::parse, {index, "\"norm.weight\"", "not a file name inside the checkpoint directory"});
  }
  SECTION("a malformed shard names the shard") {
    io_test::write_file(d.dir / ShardedDir::file(2), "{}");
    check_error(d.dir.path(), errc::parse, {ShardedDir::file(2), "too short"});
  }
  SECTION("duplicate names in the index") {
    io_test::write_file(d.dir / index, R"({"weight_map": {"norm.weight": "a", "norm.weight": "b"}})");
    check_error(d.dir.path(), errc::parse, {index, "duplicate key \"weight_map.norm.weight\""});
  }
}
