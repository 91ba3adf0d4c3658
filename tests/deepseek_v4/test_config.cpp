// config.json reading: both schemas (transformers' and the released one) and every validation error.
#include "fixtures.hpp"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <fstream>

using namespace dsv4_test;
using Catch::Matchers::ContainsSubstring;

namespace {

nlohmann::json read_json(std::filesystem::path const& p) { return nlohmann::json::parse(std::ifstream(p)); }

v4::Config parse(nlohmann::json const& j) { return v4::config_from_json(fm::io::JsonObject(j, "test/config.json")); }

nlohmann::json dense() { return read_json(fixture_dir("dense") / "config.json"); }

std::filesystem::path flash_config() {
  return std::filesystem::path(FLASHMEMORY_TEST_DATA).parent_path().parent_path() / "examples/deepseek_v4/configs/v4-flash.json";
}

}  // namespace

TEST_CASE("a transformers config.json (save_pretrained)", "[deepseek_v4][config]") {
  v4::Config c = v4::load_config(fixture_dir("dense") / "config.json");
  CHECK(c.hidden_size == 32);
  CHECK(c.qk_rope_head_dim == 8);
  CHECK(c.layer_types == std::vector{v4::LayerKind::sliding, v4::LayerKind::csa, v4::LayerKind::hca, v4::LayerKind::csa});
  CHECK(c.mlp_layer_types == std::vector{v4::MlpKind::hash_moe, v4::MlpKind::moe, v4::MlpKind::moe, v4::MlpKind::moe});
  CHECK(c.compress_ratio(1) == 4);
  CHECK(c.compress_ratio(2) == 8);
  CHECK(c.compress_ratio(0) == 0);
  CHECK(c.rope_main.theta == 10000.0);
  CHECK(c.rope_compress.theta == 160000.0);
  CHECK_FALSE(c.rope_compress.yarn);
  CHECK(c.eos_token_ids == std::vector<fm::index_t>{1});

  v4::Config y = v4::load_config(fixture_dir("yarn") / "config.json");
  CHECK(y.rope_compress.yarn);
  CHECK(y.rope_compress.factor == 4.0);
  CHECK(y.rope_compress.original_max_position_embeddings == 2048.0);
  CHECK(y.rope_compress.theta == 40000.0);
  CHECK(y.rope_main.theta == 5000.0);
  CHECK_FALSE(y.rope_main.yarn);
}

TEST_CASE("a released config.json (compress_ratios, num_hash_layers, rope_scaling)", "[deepseek_v4][config]") {
  v4::Config c = v4::load_config(flash_config());
  CHECK(c.num_hidden_layers == 43);
  CHECK(c.layer_types.size() == 43);  // the trailing MTP entry of compress_ratios is dropped
  CHECK(c.count(v4::LayerKind::sliding) == 2);
  CHECK(c.count(v4::LayerKind::csa) == 21);
  CHECK(c.count(v4::LayerKind::hca) == 20);
  CHECK(c.layer_types[2] == v4::LayerKind::csa);
  CHECK(c.layer_types[3] == v4::LayerKind::hca);
  CHECK(c.layer_types[42] == v4::LayerKind::csa);
  CHECK(c.mlp_layer_types[2] == v4::MlpKind::hash_moe);
  CHECK(c.mlp_layer_types[3] == v4::MlpKind::moe);
  CHECK(c.qk_rope_head_dim == 64);
  CHECK(c.rope_compress.yarn);
  CHECK(c.rope_compress.factor == 16.0);
  CHECK(c.rope_compress.theta == 160000.0);
  CHECK(c.rope_main.theta == 10000.0);
  CHECK_FALSE(c.rope_main.yarn);
}

TEST_CASE("both schemas describe the same model", "[deepseek_v4][config]") {
  nlohmann::json hf = read_json(fixture_dir("yarn") / "config.json");
  v4::Config a = parse(hf);

  // The same model in the released spelling.
  nlohmann::json released = hf;
  for (char const* key : {"layer_types", "mlp_layer_types", "compress_rates", "partial_rotary_factor", "rope_parameters"})
    released.erase(key);
  std::vector<int> ratios;
  for (auto const& t : hf["layer_types"])
    ratios.push_back(t == "sliding_attention" ? 0 : t == "compressed_sparse_attention" ? 4 : 16);
  ratios.push_back(0);  // MTP
  released["compress_ratios"] = ratios;
  released["compress_rate_hca"] = 16;
  int hash = 0;
  while (hash < static_cast<int>(hf["mlp_layer_types"].size()) && hf["mlp_layer_types"][hash] == "hash_moe") ++hash;
  released["num_hash_layers"] = hash;
  released["rope_theta"] = hf["rope_parameters"]["main"]["rope_theta"];
  released["compress_rope_theta"] = hf["rope_parameters"]["compress"]["rope_theta"];
  released["rope_scaling"] = {{"type", "yarn"}, {"factor", 4}, {"original_max_position_embeddings", 2048}, {"beta_fast", 32}, {"beta_slow", 1}};
  v4::Config b = parse(released);

  CHECK(a.layer_types == b.layer_types);
  CHECK(a.mlp_layer_types == b.mlp_layer_types);
  CHECK(a.compress_rate_hca == b.compress_rate_hca);
  CHECK(a.qk_rope_head_dim == b.qk_rope_head_dim);
  for (auto [x, y] : {std::pair{&a.rope_main, &b.rope_main}, std::pair{&a.rope_compress, &b.rope_compress}}) {
    CHECK(x->theta == y->theta);
    CHECK(x->yarn == y->yarn);
    CHECK(x->factor == y->factor);
    CHECK(x->original_max_position_embeddings == y->original_max_position_embeddings);
    CHECK(x->beta_fast == y->beta_fast);
    CHECK(x->beta_slow == y->beta_slow);
    CHECK(x->attention_factor == y->attention_factor);
  }
}

TEST_CASE("invalid configurations name the key and expected vs found", "[deepseek_v4][config][errors]") {
  nlohmann::json j = dense();
  auto fails_with = [&](std::string const& a, std::string const& b) {
    CHECK_THROWS_WITH(parse(j), ContainsSubstring("test/config.json") && ContainsSubstring(a) && ContainsSubstring(b));
  };
  SECTION("unknown layer type") {
    j["layer_types"][1] = "full_attention";
    fails_with("layer_types[1]", "unknown layer type \"full_attention\"");
  }
  SECTION("layer_types of the wrong length") {
    j["layer_types"].erase(3);
    fails_with("layer_types", "expected num_hidden_layers = 4 entries, found 3");
  }
  SECTION("unknown compress ratio") {
    j.erase("layer_types");
    j["compress_ratios"] = {0, 4, 7, 4, 0};
    fails_with("compress_ratios[2]", "found 7");
  }
  SECTION("no attention schedule at all") {
    j.erase("layer_types");
    fails_with("layer_types", "compress_ratios");
  }
  SECTION("unknown MoE layer type") {
    j["mlp_layer_types"][0] = "dense";
    fails_with("mlp_layer_types[0]", "found \"dense\"");
  }
  SECTION("head_dim smaller than the rope dims") {
    j.erase("partial_rotary_factor");
    j["qk_rope_head_dim"] = 64;
    fails_with("head_dim", "smaller than the RoPE dims qk_rope_head_dim = 64");
  }
  SECTION("rope dims disagreeing between the two spellings") {
    j["qk_rope_head_dim"] = 16;
    fails_with("qk_rope_head_dim", "partial_rotary_factor");
  }
  SECTION("zero attention heads") {
    j["num_attention_heads"] = 0;
    fails_with("num_attention_heads", "expected a positive integer, found 0");
  }
  SECTION("output groups not dividing the heads") {
    j["o_groups"] = 3;
    fails_with("o_groups", "does not divide num_attention_heads · head_dim = 128");
  }
  SECTION("more experts per token than experts") {
    j["num_experts_per_tok"] = 5;
    fails_with("num_experts_per_tok", "exceeds n_routed_experts = 4");
  }
  SECTION("several KV heads") {
    j["num_key_value_heads"] = 2;
    fails_with("num_key_value_heads", "expected 1");
  }
  SECTION("missing key") {
    j.erase("hidden_size");
    fails_with("hidden_size", "missing");
  }
  SECTION("wrong type") {
    j["hidden_size"] = "wide";
    fails_with("hidden_size", "expected an integer");
  }
  SECTION("unsupported RoPE type") {
    j["rope_parameters"]["compress"]["rope_type"] = "longrope";
    fails_with("longrope", "default or yarn");
  }
  SECTION("group-limited routing") {
    j["n_group"] = 8;
    fails_with("n_group", "found 8");
  }
  SECTION("FP8 blocks other than 128x128") {
    j["quantization_config"] = {{"quant_method", "fp8"}, {"weight_block_size", {64, 64}}};
    fails_with("quantization_config.weight_block_size", "expected [128, 128], found [64, 64]");
  }
  SECTION("unsupported router score function") {
    j["scoring_func"] = "softmax";
    fails_with("scoring_func", "found \"softmax\"");
  }
}
