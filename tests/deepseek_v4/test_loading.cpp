// Checkpoint loading: the three name spellings and fused experts give the same model, quantised storage is
// dequantised exactly, shards work, and every malformed checkpoint is an error naming the tensor.
#include "checkpoint_copy.hpp"

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

using namespace dsv4_test;
using Catch::Matchers::ContainsSubstring;

namespace {

std::vector<float> logits_of(std::filesystem::path const& dir, std::span<fm::index_t const> ids) {
  auto [config, weights] = v4::load_model(dir);
  v4::Decoder<> model(config, std::move(weights));
  return model.forward(ids, v4::Logits::all);
}

// transformers' runtime name of a tensor as save_pretrained writes it (deepseek-v4.md §9.3, §15), written
// out leaf by leaf; routed experts are left for the caller to fuse.
std::string runtime_name(std::string const& saved) {
  static std::map<std::string, std::string> const kLeaves = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"hc_attn_fn", "attn_hc.fn"}, {"hc_attn_base", "attn_hc.base"}, {"hc_attn_scale", "attn_hc.scale"},
      {"hc_ffn_fn", "ffn_hc.fn"}, {"hc_ffn_base", "ffn_hc.base"}, {"hc_ffn_scale", "ffn_hc.scale"},
      {"attn.wq_a.weight", "self_attn.q_a_proj.weight"},
      {"attn.q_norm.weight", "self_attn.q_a_norm.weight"},
      {"attn.wq_b.weight", "self_attn.q_b_proj.weight"},
      {"attn.wkv.weight", "self_attn.kv_proj.weight"},
      {"attn.norm.weight", "self_attn.kv_norm.weight"},
      {"attn.wo_a.weight", "self_attn.o_a_proj.weight"},
      {"attn.wo_b.weight", "self_attn.o_b_proj.weight"},
      {"attn.attn_sink", "self_attn.sinks"},
      {"attn.compressor.wkv.weight", "self_attn.compressor.kv_proj.weight"},
      {"attn.compressor.wgate.weight", "self_attn.compressor.gate_proj.weight"},
      {"attn.compressor.ape", "self_attn.compressor.position_bias"},
      {"attn.compressor.norm.weight", "self_attn.compressor.kv_norm.weight"},
      {"attn.indexer.compressor.wkv.weight", "self_attn.compressor.indexer.kv_proj.weight"},
      {"attn.indexer.compressor.wgate.weight", "self_attn.compressor.indexer.gate_proj.weight"},
      {"attn.indexer.compressor.ape", "self_attn.compressor.indexer.position_bias"},
      {"attn.indexer.compressor.norm.weight", "self_attn.compressor.indexer.kv_norm.weight"},
      {"attn.indexer.wq_b.weight", "self_attn.compressor.indexer.q_b_proj.weight"},
      {"attn.indexer.weights_proj.weight", "self_attn.compressor.indexer.scorer.weights_proj.weight"},
      {"ffn.gate.weight", "mlp.gate.weight"},
      {"ffn.gate.bias", "mlp.gate.e_score_correction_bias"},
      {"ffn.gate.tid2eid", "mlp.gate.tid2eid"},
      {"ffn.shared_experts.w1.weight", "mlp.shared_experts.gate_proj.weight"},
      {"ffn.shared_experts.w3.weight", "mlp.shared_experts.up_proj.weight"},
      {"ffn.shared_experts.w2.weight", "mlp.shared_experts.down_proj.weight"},
  };
  if (saved == "head.weight") return "lm_head.weight";
  std::string const prefix = "model.layers.";
  if (!saved.starts_with(prefix)) return saved;  // embed_tokens, norm, hc_head keep their saved names
  std::size_t dot = saved.find('.', prefix.size());
  std::string layer = saved.substr(0, dot + 1), leaf = saved.substr(dot + 1);
  auto it = kLeaves.find(leaf);
  REQUIRE(it != kLeaves.end());
  return layer + it->second;
}

// The whole checkpoint in transformers' runtime names, routed experts fused per layer.
TensorMap to_runtime_names(TensorMap const& saved, v4::Config const& c) {
  TensorMap out;
  std::map<std::string, std::vector<float>> gate_up, down;  // layer prefix → fused values
  for (auto const& [name, t] : saved) {
    std::size_t at = name.find(".ffn.experts.");
    if (at == std::string::npos) {
      out.emplace(runtime_name(name), t);
      continue;
    }
    std::string layer = name.substr(0, at);
    std::size_t dot = name.find('.', at + 13);
    auto e = static_cast<std::size_t>(std::stoi(name.substr(at + 13, dot - at - 13)));
    std::string leaf = name.substr(dot + 1);
    auto I = static_cast<std::size_t>(c.moe_intermediate_size), D = static_cast<std::size_t>(c.hidden_size);
    auto E = static_cast<std::size_t>(c.n_routed_experts);
    auto values = t.floats();
    if (leaf == "w2.weight") {
      auto& f = down[layer];
      f.resize(E * D * I);
      std::copy(values.begin(), values.end(), f.begin() + static_cast<std::ptrdiff_t>(e * D * I));
    } else {
      auto& f = gate_up[layer];
      f.resize(E * 2 * I * D);
      std::size_t offset = e * 2 * I * D + (leaf == "w3.weight" ? I * D : 0);  // gate rows first, then up
      std::copy(values.begin(), values.end(), f.begin() + static_cast<std::ptrdiff_t>(offset));
    }
  }
  auto I = c.moe_intermediate_size, D = c.hidden_size, E = c.n_routed_experts;
  for (auto const& [layer, f] : gate_up) out.emplace(layer + ".mlp.experts.gate_up_proj", StoredTensor::of_floats({E, 2 * I, D}, f));
  for (auto const& [layer, f] : down) out.emplace(layer + ".mlp.experts.down_proj", StoredTensor::of_floats({E, D, I}, f));
  return out;
}

// Upstream names as the released checkpoints spell them (no `model.` prefix; the KV norm as `kv_norm`).
TensorMap to_upstream_names(TensorMap const& saved) {
  TensorMap out;
  for (auto const& [name, t] : saved) {
    std::string n = name.starts_with("model.") ? name.substr(6) : name;
    if (n == "embed_tokens.weight") n = "embed.weight";
    else if (n.starts_with("hc_head.hc_")) n = "hc_head_" + n.substr(11);
    else if (auto at = n.find(".attn.norm.weight"); at != std::string::npos) n = n.substr(0, at) + ".attn.kv_norm.weight";
    out.emplace(n, t);
  }
  return out;
}

// Tensors compared one by one (all experts included; logits alone could miss an expert nothing routes to).
void require_same_weights(v4::Weights const& a, v4::Weights const& b) {
  auto same = [](v4::Tensor const& x, v4::Tensor const& y) {
    REQUIRE(x.shape == y.shape);
    REQUIRE(std::equal(x.span().begin(), x.span().end(), y.span().begin()));
  };
  same(a.embed, b.embed);
  same(a.head, b.head);
  same(a.norm, b.norm);
  for (std::size_t l = 0; l < a.layers.size(); ++l) {
    auto const &x = a.layers[l], &y = b.layers[l];
    same(x.attn.kv_norm, y.attn.kv_norm);
    same(x.attn.sink, y.attn.sink);
    same(x.hc_ffn.fn, y.hc_ffn.fn);
    for (std::size_t e = 0; e < x.ffn.experts.size(); ++e) {
      same(x.ffn.experts[e].w1, y.ffn.experts[e].w1);
      same(x.ffn.experts[e].w3, y.ffn.experts[e].w3);
      same(x.ffn.experts[e].w2, y.ffn.experts[e].w2);
    }
    same(x.ffn.shared.w1, y.ffn.shared.w1);
    if (x.attn.indexer) same(x.attn.indexer->weights_proj, y.attn.indexer->weights_proj);
  }
}

}  // namespace

TEST_CASE("the three name spellings and fused experts load the same model", "[deepseek_v4][load]") {
  std::string fixture = GENERATE("dense", "select");
  CAPTURE(fixture);
  TensorMap saved = read_tensors(fixture_dir(fixture) / "model.safetensors");
  auto reference = v4::load_model(fixture_dir(fixture));
  Golden g = load_golden(fixture);
  auto expected = logits_of(fixture_dir(fixture), g.ids);

  TempCheckpoint runtime(fixture), upstream(fixture), sharded(fixture);
  runtime.write(to_runtime_names(saved, reference.config));
  upstream.write(to_upstream_names(saved));
  sharded.write(saved, 3);
  for (auto const* copy : {&runtime, &upstream, &sharded}) {
    require_same_weights(reference.weights, v4::load_model(copy->dir()).weights);
    CHECK(logits_of(copy->dir(), g.ids) == expected);
  }
}

TEST_CASE("upstream_name maps every spelling to the upstream one", "[deepseek_v4][load]") {
  CHECK(v4::upstream_name("model.layers.3.self_attn.compressor.indexer.kv_norm.weight") == "layers.3.attn.indexer.compressor.norm.weight");
  CHECK(v4::upstream_name("model.layers.3.self_attn.compressor.indexer.scorer.weights_proj.weight") == "layers.3.attn.indexer.weights_proj.weight");
  CHECK(v4::upstream_name("model.layers.0.mlp.shared_experts.gate_proj.weight") == "layers.0.ffn.shared_experts.w1.weight");
  CHECK(v4::upstream_name("model.layers.0.self_attn.compressor.gate_proj.weight") == "layers.0.attn.compressor.wgate.weight");
  CHECK(v4::upstream_name("layers.2.attn.wq_b.weight_scale_inv") == "layers.2.attn.wq_b.scale");
  CHECK(v4::upstream_name("model.hc_head.hc_fn") == "hc_head_fn");
  CHECK(v4::upstream_name("lm_head.weight") == "head.weight");
  CHECK(v4::upstream_name("layers.1.attn.kv_norm.weight") == "layers.1.attn.norm.weight");
  CHECK(v4::upstream_name("layers.1.ffn.experts.7.w2.scale") == "layers.1.ffn.experts.7.w2.scale");
}

TEST_CASE("FP8 weights with 128x128 block scales are dequantised at load", "[deepseek_v4][load]") {
  // yarn's wq_b is [256, 24]: two row blocks, so a wrong block index would pick the wrong scale.
  TensorMap saved = read_tensors(fixture_dir("yarn") / "model.safetensors");
  std::string const name = "model.layers.1.attn.wq_b.weight";
  auto const& ref = saved.at(name);
  REQUIRE(ref.shape == std::vector<std::int64_t>{256, 24});
  std::vector<std::uint8_t> scales{121, 126};  // ue8m0: 2^-6 and 2^-1
  auto source = ref.floats();
  std::vector<std::byte> codes(source.size());
  std::vector<float> want(source.size());
  for (std::size_t i = 0; i < codes.size(); ++i) {
    std::uint8_t code = fm::encode_f8_e4m3(source[i] * 64.0f, /*saturate=*/true);
    codes[i] = std::byte{code};
    want[i] = fm::decode_f8_e4m3(code) * fm::decode_e8m0(scales[i / 24 / 128]);
  }
  saved[name] = {fm::dtype::f8_e4m3, ref.shape, codes};
  saved["model.layers.1.attn.wq_b.weight_scale_inv"] = {fm::dtype::f8_e8m0, {2, 1}, {std::byte{scales[0]}, std::byte{scales[1]}}};

  TempCheckpoint copy("yarn");
  copy.write(saved);
  auto model = v4::load_model(copy.dir());
  auto got = model.weights.layers[1].attn.wq_b.span();
  CHECK(std::vector<float>(got.begin(), got.end()) == want);
  CHECK(want[0] != want[128 * 24]);
}

TEST_CASE("FP4 routed experts with per-32 scales are dequantised at load", "[deepseek_v4][load]") {
  TensorMap saved = read_tensors(fixture_dir("dense") / "model.safetensors");
  std::string const name = "model.layers.2.ffn.experts.3.w2.weight";
  std::int64_t out = saved.at(name).shape[0], in = saved.at(name).shape[1];
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> nibble(0, 15), exponent(120, 130);
  std::vector<std::byte> packed(static_cast<std::size_t>(out * in / 2)), scales(static_cast<std::size_t>(out * in / 32));
  std::vector<float> want(static_cast<std::size_t>(out * in));
  for (auto& s : scales) s = std::byte{static_cast<std::uint8_t>(exponent(rng))};
  for (std::int64_t i = 0; i < out; ++i)
    for (std::int64_t j = 0; j < in; j += 2) {
      auto lo = static_cast<std::uint8_t>(nibble(rng)), hi = static_cast<std::uint8_t>(nibble(rng));
      packed[static_cast<std::size_t>(i * in / 2 + j / 2)] = std::byte{fm::pack_fp4(lo, hi)};  // low nibble = even column
      float scale = fm::decode_e8m0(std::to_integer<std::uint8_t>(scales[static_cast<std::size_t>(i * in / 32 + j / 32)]));
      want[static_cast<std::size_t>(i * in + j)] = fm::decode_fp4_e2m1(lo) * scale;
      want[static_cast<std::size_t>(i * in + j + 1)] = fm::decode_fp4_e2m1(hi) * scale;
    }
  saved[name] = {fm::dtype::i8, {out, in / 2}, packed};
  saved["model.layers.2.ffn.experts.3.w2.scale"] = {fm::dtype::f8_e8m0, {out, in / 32}, scales};

  TempCheckpoint copy("dense");
  copy.write(saved);
  auto model = v4::load_model(copy.dir());
  auto got = model.weights.layers[2].ffn.experts[3].w2.span();
  CHECK(std::vector<float>(got.begin(), got.end()) == want);
  CHECK(std::count(want.begin(), want.end(), 0.0f) < static_cast<std::ptrdiff_t>(want.size() / 4));
}

TEST_CASE("malformed checkpoints are errors naming the tensor", "[deepseek_v4][load][errors]") {
  TensorMap saved = read_tensors(fixture_dir("dense") / "model.safetensors");
  TempCheckpoint copy("dense");
  auto load = [&] { return v4::load_model(copy.dir()); };

  SECTION("missing tensor") {
    saved.erase("model.layers.2.attn.compressor.ape");
    copy.write(saved);
    CHECK_THROWS_WITH(load(), ContainsSubstring("missing tensor \"layers.2.attn.compressor.ape\"") && ContainsSubstring("[8,32]"));
  }
  SECTION("unexpected tensor") {
    saved.emplace("model.layers.0.attn.compressor.ape", StoredTensor::of_floats({4, 64}, std::vector<float>(256, 1.0f)));
    copy.write(saved);
    CHECK_THROWS_WITH(load(), ContainsSubstring("unexpected tensor \"model.layers.0.attn.compressor.ape\""));
  }
  SECTION("shape disagreeing with the config") {
    saved["model.layers.1.attn.wq_a.weight"] = StoredTensor::of_floats({32, 31}, std::vector<float>(32 * 31, 0.5f));
    copy.write(saved);
    CHECK_THROWS_WITH(load(), ContainsSubstring("model.layers.1.attn.wq_a.weight") && ContainsSubstring("expected shape [32,32]") &&
                                  ContainsSubstring("found [32,31]"));
  }
  SECTION("dtype that cannot hold a float parameter") {
    auto& t = saved.at("model.norm.weight");
    t = {fm::dtype::i32, t.shape, t.bytes};
    copy.write(saved);
    CHECK_THROWS_WITH(load(), ContainsSubstring("model.norm.weight") && ContainsSubstring("I32"));
  }
  SECTION("FP8 weight without its scale") {
    auto& t = saved.at("model.layers.0.attn.wo_b.weight");
    t = {fm::dtype::f8_e4m3, t.shape, std::vector<std::byte>(t.bytes.size() / 4, std::byte{0x38})};
    copy.write(saved);
    CHECK_THROWS_WITH(load(), ContainsSubstring("model.layers.0.attn.wo_b.weight") && ContainsSubstring("scale"));
  }
  SECTION("hash routing table pointing past the experts") {
    auto& t = saved.at("model.layers.0.ffn.gate.tid2eid");
    std::int64_t bad = 4;
    std::memcpy(t.bytes.data() + 8 * 5, &bad, 8);
    copy.write(saved);
    CHECK_THROWS_WITH(load(), ContainsSubstring("tid2eid") && ContainsSubstring("element 5 = 4") && ContainsSubstring("[0, 4)"));
  }
  SECTION("two spellings of one tensor") {
    saved.emplace("model.layers.0.self_attn.q_a_proj.weight", saved.at("model.layers.0.attn.wq_a.weight"));
    copy.write(saved);
    CHECK_THROWS_WITH(load(), ContainsSubstring("both name \"layers.0.attn.wq_a.weight\""));
  }
  SECTION("fused experts of the wrong count") {
    v4::Config c = v4::load_config(fixture_dir("dense") / "config.json");
    c.n_routed_experts = 5;  // one more than stored: the fused tensors are written with 5 experts
    TensorMap runtime = to_runtime_names(saved, c);
    copy.write(runtime);
    CHECK_THROWS_WITH(load(), ContainsSubstring("mlp.experts.gate_up_proj") && ContainsSubstring("expected shape [4,64,32]") &&
                                  ContainsSubstring("found [5,64,32]"));
  }
  SECTION("unknown layer type in config.json") {
    copy.write(saved);
    copy.edit_config([](nlohmann::json& j) { j["layer_types"][2] = "full_attention"; });
    CHECK_THROWS_WITH(load(), ContainsSubstring("layer_types[2]") && ContainsSubstring("full_attention"));
  }
}

TEST_CASE("the MTP block of a released checkpoint is ignored", "[deepseek_v4][load]") {
  TensorMap saved = read_tensors(fixture_dir("dense") / "model.safetensors");
  saved.emplace("mtp.0.enorm.weight", StoredTensor::of_floats({32}, std::vector<float>(32, 1.0f)));
  TempCheckpoint copy("dense");
  copy.write(saved);
  CHECK_NOTHROW(v4::load_model(copy.dir()));
}

TEST_CASE("token ids outside the vocabulary are rejected", "[deepseek_v4][errors]") {
  auto [config, weights] = v4::load_model(fixture_dir("dense"));
  v4::Decoder<> model(config, std::move(weights));
  std::vector<fm::index_t> ids{5, 7, config.vocab_size};
  CHECK_THROWS_WITH(model.forward(ids), ContainsSubstring("token id 128 at index 2") && ContainsSubstring("[0, 128)"));
  std::vector<fm::index_t> negative{-1};
  CHECK_THROWS_AS(model.forward(negative), fm::error);
  CHECK(model.position() == 0);  // nothing was consumed
}
