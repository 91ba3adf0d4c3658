// flashmemory/models/deepseek_v4/config.hpp — the DeepSeek-V4 configuration, read from a Hugging Face
// `config.json` and validated (deepseek-v4.md §1).
//
// Two spellings of the schedule exist and both are accepted:
//   * transformers (what save_pretrained writes): `layer_types` (strings), `mlp_layer_types`,
//     `compress_rates` {type: ratio}, `partial_rotary_factor`, `rope_parameters` {main, compress};
//   * the released checkpoints: `compress_ratios` (one int per layer + a trailing MTP entry),
//     `num_hash_layers`, `qk_rope_head_dim`, `rope_theta` + `compress_rope_theta` + `rope_scaling` (YaRN).
// Every problem is reported as flashmemory::error naming the file, the key, and expected vs found.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/rope.hpp>
#include <flashmemory/core/tensor_view.hpp>
#include <flashmemory/io/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

// The attention kind of a layer (§1.2). Every kind has the sliding-window branch; CSA adds an overlapping
// ratio-4 compressor with a Lightning Indexer, HCA a non-overlapping ratio-128 compressor.
enum class LayerKind : std::uint8_t { sliding, csa, hca };
inline constexpr LayerKind kLayerKinds[] = {LayerKind::sliding, LayerKind::csa, LayerKind::hca};

// transformers' `layer_types` spelling.
constexpr std::string_view hf_name(LayerKind k) noexcept {
  switch (k) {
    case LayerKind::sliding: return "sliding_attention";
    case LayerKind::csa: return "compressed_sparse_attention";
    case LayerKind::hca: return "heavily_compressed_attention";
  }
  return "?";
}
// Short name for reports.
constexpr std::string_view short_name(LayerKind k) noexcept {
  switch (k) {
    case LayerKind::sliding: return "sliding";
    case LayerKind::csa: return "CSA";
    case LayerKind::hca: return "HCA";
  }
  return "?";
}

// MoE routing of a layer (§7): learned top-k, or a frozen token → experts table.
enum class MlpKind : std::uint8_t { moe, hash_moe };

// Router score function (§7 step 2).
enum class ScoringFunc : std::uint8_t { sqrtsoftplus, sigmoid };

// One RoPE variant (§2.2): plain RoPE with base `theta`, optionally YaRN-scaled (core/rope.hpp).
using ::flashmemory::RopeParameters;

struct Config {
  index_t vocab_size = 0;
  index_t hidden_size = 0;              // D
  index_t num_hidden_layers = 0;        // L (the MTP block is not counted)
  index_t num_attention_heads = 0;      // H
  index_t num_key_value_heads = 1;      // always 1: one shared K = V latent
  index_t head_dim = 0;                 // d
  index_t qk_rope_head_dim = 0;         // r_d: RoPE on the last r_d channels of every head
  index_t q_lora_rank = 0;
  index_t o_groups = 0;                 // G
  index_t o_lora_rank = 0;              // R
  index_t sliding_window = 0;           // W
  index_t max_position_embeddings = 0;
  RopeParameters rope_main;             // sliding-only layers
  RopeParameters rope_compress;         // CSA and HCA layers (θ = compress_rope_theta, YaRN)
  index_t compress_rate_csa = 4;        // m
  index_t compress_rate_hca = 128;      // m'
  index_t index_n_heads = 0;
  index_t index_head_dim = 0;
  index_t index_topk = 0;
  index_t n_routed_experts = 0;
  index_t num_experts_per_tok = 0;
  index_t n_shared_experts = 1;
  index_t moe_intermediate_size = 0;
  ScoringFunc scoring_func = ScoringFunc::sqrtsoftplus;
  double routed_scaling_factor = 1.0;
  double swiglu_limit = 10.0;
  index_t hc_mult = 4;
  index_t hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;
  double rms_norm_eps = 1e-6;
  index_t num_nextn_predict_layers = 0;  // MTP blocks in the checkpoint; not run by this decoder
  std::vector<index_t> eos_token_ids;
  std::vector<LayerKind> layer_types;    // one per layer
  std::vector<MlpKind> mlp_layer_types;  // one per layer
  std::string source = "config";         // where it came from, for error messages

  index_t compress_ratio(index_t layer) const {
    switch (layer_types[static_cast<std::size_t>(layer)]) {
      case LayerKind::csa: return compress_rate_csa;
      case LayerKind::hca: return compress_rate_hca;
      case LayerKind::sliding: return 0;
    }
    return 0;
  }
  RopeParameters const& rope(LayerKind k) const { return k == LayerKind::sliding ? rope_main : rope_compress; }
  index_t count(LayerKind k) const {
    index_t n = 0;
    for (LayerKind t : layer_types) n += t == k;
    return n;
  }

  // Throws naming the first inconsistent key.
  void validate() const;
};

namespace detail {

inline void expect_positive(Config const& c, std::string_view key, index_t v) {
  if (v <= 0) fail(errc::invalid_argument, c.source, ": key \"", key, "\": expected a positive integer, found ", v);
}

inline LayerKind layer_kind_from_name(io::JsonObject const& o, std::size_t i, std::string const& name) {
  for (LayerKind k : kLayerKinds)
    if (hf_name(k) == name) return k;
  fail(errc::unsupported, o.where(), ": key \"layer_types[", i, "]\": unknown layer type \"", name,
       "\"; expected sliding_attention, compressed_sparse_attention or heavily_compressed_attention");
}

// A `rope_parameters` / `rope_scaling` block: {rope_type | type, rope_theta, factor,
// original_max_position_embeddings, beta_fast, beta_slow, attention_factor}.
inline RopeParameters rope_from_block(io::JsonObject const& o, double theta) {
  RopeParameters r;
  r.theta = o.get_or("rope_theta", theta);
  auto type = o.find<std::string>("rope_type");
  if (!type) type = o.get_or<std::string>("type", "default");
  if (*type == "yarn") {
    r.yarn = true;
    r.factor = o.get<double>("factor");
    r.original_max_position_embeddings = o.get<double>("original_max_position_embeddings");
    // transformers reads `get("beta_fast") or 32`: null or zero means the default.
    double bf = o.get_or("beta_fast", 0.0), bs = o.get_or("beta_slow", 0.0);
    r.beta_fast = bf != 0 ? bf : 32.0;
    r.beta_slow = bs != 0 ? bs : 1.0;
    r.attention_factor = o.get_or("attention_factor", 1.0);
  } else if (*type != "default") {
    fail(errc::unsupported, o.where(), ": RoPE type \"", *type, "\" is not supported (expected default or yarn)");
  }
  return r;
}

}  // namespace detail

// Reads a parsed config.json (see the top of this file for the accepted keys) and validates it.
inline Config config_from_json(io::JsonObject const& o) {
  Config c;
  c.source = o.where();
  c.vocab_size = o.get<index_t>("vocab_size");
  c.hidden_size = o.get<index_t>("hidden_size");
  c.num_hidden_layers = o.get<index_t>("num_hidden_layers");
  c.num_attention_heads = o.get<index_t>("num_attention_heads");
  c.num_key_value_heads = o.get_or<index_t>("num_key_value_heads", 1);
  c.head_dim = o.get<index_t>("head_dim");
  c.q_lora_rank = o.get<index_t>("q_lora_rank");
  c.o_groups = o.get<index_t>("o_groups");
  c.o_lora_rank = o.get<index_t>("o_lora_rank");
  c.sliding_window = o.get<index_t>("sliding_window");
  c.max_position_embeddings = o.get_or<index_t>("max_position_embeddings", 1048576);
  c.index_n_heads = o.get<index_t>("index_n_heads");
  c.index_head_dim = o.get<index_t>("index_head_dim");
  c.index_topk = o.get<index_t>("index_topk");
  c.n_routed_experts = o.get<index_t>("n_routed_experts");
  c.num_experts_per_tok = o.get<index_t>("num_experts_per_tok");
  c.n_shared_experts = o.get_or<index_t>("n_shared_experts", 1);
  c.moe_intermediate_size = o.get<index_t>("moe_intermediate_size");
  c.routed_scaling_factor = o.get_or("routed_scaling_factor", 1.5);
  c.swiglu_limit = o.get_or("swiglu_limit", 10.0);
  c.hc_mult = o.get_or<index_t>("hc_mult", 4);
  c.hc_sinkhorn_iters = o.get_or<index_t>("hc_sinkhorn_iters", 20);
  c.hc_eps = o.get_or("hc_eps", 1e-6);
  c.rms_norm_eps = o.get_or("rms_norm_eps", 1e-6);
  c.num_nextn_predict_layers = o.get_or<index_t>("num_nextn_predict_layers", 0);

  auto scoring = o.get_or<std::string>("scoring_func", "sqrtsoftplus");
  if (scoring == "sqrtsoftplus") c.scoring_func = ScoringFunc::sqrtsoftplus;
  else if (scoring == "sigmoid") c.scoring_func = ScoringFunc::sigmoid;
  else fail(errc::unsupported, c.source, ": key \"scoring_func\": expected sqrtsoftplus or sigmoid, found \"", scoring, "\"");
  if (!o.get_or("norm_topk_prob", true))
    fail(errc::unsupported, c.source, ": key \"norm_topk_prob\": expected true (routed weights are always normalised), found false");
  if (auto act = o.get_or<std::string>("hidden_act", "silu"); act != "silu")
    fail(errc::unsupported, c.source, ": key \"hidden_act\": expected silu, found \"", act, "\"");
  if (o.get_or("tie_word_embeddings", false))
    fail(errc::unsupported, c.source, ": key \"tie_word_embeddings\": expected false (V4's LM head is untied), found true");
  // Routing is flat top-k (noaux_tc without groups) and FP8 weights use 128×128 blocks; refuse anything else.
  if (auto groups = o.find<index_t>("n_group"); groups && *groups > 1)
    fail(errc::unsupported, c.source, ": key \"n_group\": group-limited expert routing is not supported (expected 1), found ", *groups);
  if (auto q = o.find<io::JsonObject>("quantization_config"))
    if (auto block = q->find<std::vector<index_t>>("weight_block_size"); block && *block != std::vector<index_t>{128, 128})
      fail(errc::unsupported, c.source, ": key \"quantization_config.weight_block_size\": expected [128, 128], found [",
           block->size() ? (*block)[0] : 0, block->size() > 1 ? ", " + std::to_string((*block)[1]) : std::string(), "]");
  if (auto eos = o.find<nlohmann::json>("eos_token_id"))
    c.eos_token_ids = eos->is_array() ? o.get<std::vector<index_t>>("eos_token_id")
                                      : std::vector<index_t>{o.get<index_t>("eos_token_id")};

  // Ratios per kind: the `compress_rates` dict, or the legacy scalar keys.
  if (auto rates = o.find<io::JsonObject>("compress_rates")) {
    c.compress_rate_csa = rates->get_or<index_t>(std::string(hf_name(LayerKind::csa)), 4);
    c.compress_rate_hca = rates->get_or<index_t>(std::string(hf_name(LayerKind::hca)), 128);
  }
  c.compress_rate_csa = o.get_or("compress_rate_csa", c.compress_rate_csa);
  c.compress_rate_hca = o.get_or("compress_rate_hca", c.compress_rate_hca);

  // Attention schedule: `layer_types` (exactly one per layer) > `compress_ratios` (may carry the MTP entry).
  index_t L = c.num_hidden_layers;
  if (auto types = o.find<std::vector<std::string>>("layer_types")) {
    if (static_cast<index_t>(types->size()) != L)
      fail(errc::bad_shape, c.source, ": key \"layer_types\": expected num_hidden_layers = ", L, " entries, found ", types->size());
    for (std::size_t i = 0; i < types->size(); ++i) c.layer_types.push_back(detail::layer_kind_from_name(o, i, (*types)[i]));
  } else if (auto ratios = o.find<std::vector<index_t>>("compress_ratios")) {
    if (static_cast<index_t>(ratios->size()) < L)
      fail(errc::bad_shape, c.source, ": key \"compress_ratios\": expected at least num_hidden_layers = ", L,
           " entries, found ", ratios->size());
    for (std::size_t i = 0; static_cast<index_t>(i) < L; ++i) {
      index_t r = (*ratios)[i];
      if (r == 0) c.layer_types.push_back(LayerKind::sliding);
      else if (r == c.compress_rate_csa) c.layer_types.push_back(LayerKind::csa);
      else if (r == c.compress_rate_hca) c.layer_types.push_back(LayerKind::hca);
      else
        fail(errc::unsupported, c.source, ": key \"compress_ratios[", i, "]\": expected 0, ", c.compress_rate_csa, " or ",
             c.compress_rate_hca, ", found ", r);
    }
  } else {
    fail(errc::not_found, c.source, ": neither \"layer_types\" nor \"compress_ratios\" is present; DeepSeek-V4 needs an "
         "explicit per-layer attention schedule (transformers' fallback matches no released model)");
  }

  // MoE schedule: `mlp_layer_types` > the first `num_hash_layers` (default 3) hash-routed.
  if (auto types = o.find<std::vector<std::string>>("mlp_layer_types")) {
    if (static_cast<index_t>(types->size()) != L)
      fail(errc::bad_shape, c.source, ": key \"mlp_layer_types\": expected num_hidden_layers = ", L, " entries, found ",
           types->size());
    for (std::size_t i = 0; i < types->size(); ++i) {
      std::string const& t = (*types)[i];
      if (t == "moe") c.mlp_layer_types.push_back(MlpKind::moe);
      else if (t == "hash_moe") c.mlp_layer_types.push_back(MlpKind::hash_moe);
      else fail(errc::unsupported, c.source, ": key \"mlp_layer_types[", i, "]\": expected moe or hash_moe, found \"", t, "\"");
    }
  } else {
    auto hash = o.get_or<index_t>("num_hash_layers", 3);
    if (hash < 0) fail(errc::invalid_argument, c.source, ": key \"num_hash_layers\": expected ≥ 0, found ", hash);
    for (index_t i = 0; i < L; ++i) c.mlp_layer_types.push_back(i < hash ? MlpKind::hash_moe : MlpKind::moe);
  }

  // RoPE dims: `partial_rotary_factor` · head_dim, else `qk_rope_head_dim`, else 64/512 · head_dim.
  auto factor = o.find<double>("partial_rotary_factor");
  auto rope_dim = o.find<index_t>("qk_rope_head_dim");
  c.qk_rope_head_dim = factor ? static_cast<index_t>(static_cast<double>(c.head_dim) * *factor)
                     : rope_dim ? *rope_dim
                                : c.head_dim / 8;
  if (factor && rope_dim && *rope_dim != c.qk_rope_head_dim)
    fail(errc::invalid_argument, c.source, ": key \"qk_rope_head_dim\" = ", *rope_dim, " disagrees with partial_rotary_factor · head_dim = ",
         *factor, " · ", c.head_dim);

  // RoPE variants: nested `rope_parameters` {main, compress}; else rope_theta / compress_rope_theta, with the
  // YaRN block (flat `rope_parameters` or the released `rope_scaling`) applied to the compress variant only.
  double theta = o.get_or("rope_theta", 10000.0), compress_theta = o.get_or("compress_rope_theta", 160000.0);
  auto block = o.find<io::JsonObject>("rope_parameters");
  if (!block) block = o.find<io::JsonObject>("rope_scaling");
  if (block && block->contains("main") && block->contains("compress")) {
    c.rope_main = detail::rope_from_block(block->get<io::JsonObject>("main"), theta);
    c.rope_compress = detail::rope_from_block(block->get<io::JsonObject>("compress"), compress_theta);
  } else {
    c.rope_main.theta = theta;
    if (block) c.rope_compress = detail::rope_from_block(*block, compress_theta);
    c.rope_compress.theta = compress_theta;  // a flat block's rope_theta is the main one
  }

  c.validate();
  return c;
}

// Reads and validates a config.json file.
inline Config load_config(std::filesystem::path const& file) { return config_from_json(io::JsonObject::load(file)); }

inline void Config::validate() const {
  using detail::expect_positive;
  expect_positive(*this, "vocab_size", vocab_size);
  expect_positive(*this, "hidden_size", hidden_size);
  expect_positive(*this, "num_hidden_layers", num_hidden_layers);
  expect_positive(*this, "num_attention_heads", num_attention_heads);
  expect_positive(*this, "head_dim", head_dim);
  expect_positive(*this, "q_lora_rank", q_lora_rank);
  expect_positive(*this, "o_groups", o_groups);
  expect_positive(*this, "o_lora_rank", o_lora_rank);
  expect_positive(*this, "sliding_window", sliding_window);
  expect_positive(*this, "n_routed_experts", n_routed_experts);
  expect_positive(*this, "num_experts_per_tok", num_experts_per_tok);
  expect_positive(*this, "moe_intermediate_size", moe_intermediate_size);
  expect_positive(*this, "hc_mult", hc_mult);
  expect_positive(*this, "hc_sinkhorn_iters", hc_sinkhorn_iters);
  expect_positive(*this, "qk_rope_head_dim", qk_rope_head_dim);
  if (num_key_value_heads != 1)
    fail(errc::unsupported, source, ": key \"num_key_value_heads\": expected 1 (one shared K = V latent), found ", num_key_value_heads);
  if (qk_rope_head_dim % 2 != 0)
    fail(errc::invalid_argument, source, ": key \"qk_rope_head_dim\" must be even (RoPE rotates pairs), found ", qk_rope_head_dim);
  if (head_dim < qk_rope_head_dim)
    fail(errc::invalid_argument, source, ": key \"head_dim\" = ", head_dim, " is smaller than the RoPE dims qk_rope_head_dim = ",
         qk_rope_head_dim);
  if ((num_attention_heads * head_dim) % o_groups != 0)
    fail(errc::invalid_argument, source, ": key \"o_groups\" = ", o_groups, " does not divide num_attention_heads · head_dim = ",
         num_attention_heads * head_dim);
  if (num_experts_per_tok > n_routed_experts)
    fail(errc::invalid_argument, source, ": key \"num_experts_per_tok\" = ", num_experts_per_tok,
         " exceeds n_routed_experts = ", n_routed_experts);
  if (n_shared_experts != 1)
    fail(errc::unsupported, source, ": key \"n_shared_experts\": expected 1, found ", n_shared_experts);
  if (static_cast<index_t>(layer_types.size()) != num_hidden_layers ||
      static_cast<index_t>(mlp_layer_types.size()) != num_hidden_layers)
    fail(errc::bad_shape, source, ": layer_types / mlp_layer_types need num_hidden_layers = ", num_hidden_layers, " entries");
  if (count(LayerKind::csa) > 0) {
    expect_positive(*this, "compress_rates[compressed_sparse_attention]", compress_rate_csa);
    expect_positive(*this, "index_n_heads", index_n_heads);
    expect_positive(*this, "index_head_dim", index_head_dim);
    expect_positive(*this, "index_topk", index_topk);
    if (index_head_dim < qk_rope_head_dim)
      fail(errc::invalid_argument, source, ": key \"index_head_dim\" = ", index_head_dim,
           " is smaller than the RoPE dims qk_rope_head_dim = ", qk_rope_head_dim);
  }
  if (count(LayerKind::hca) > 0) expect_positive(*this, "compress_rates[heavily_compressed_attention]", compress_rate_hca);
  if (!(rms_norm_eps > 0)) fail(errc::invalid_argument, source, ": key \"rms_norm_eps\" must be > 0, found ", rms_norm_eps);
  if (!(hc_eps >= 0)) fail(errc::invalid_argument, source, ": key \"hc_eps\" must be ≥ 0, found ", hc_eps);
  for (RopeParameters const* r : {&rope_main, &rope_compress}) {
    char const* which = r == &rope_main ? "main" : "compress";
    if (!(r->theta > 1)) fail(errc::invalid_argument, source, ": ", which, " rope_theta must be > 1, found ", r->theta);
    if (r->yarn && !(r->factor >= 1 && r->original_max_position_embeddings > 0))
      fail(errc::invalid_argument, source, ": ", which, " YaRN needs factor ≥ 1 and original_max_position_embeddings > 0, found ",
           r->factor, " and ", r->original_max_position_embeddings);
  }
}

}  // namespace flashmemory::models::deepseek_v4
