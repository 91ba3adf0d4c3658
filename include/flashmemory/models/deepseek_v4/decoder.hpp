// flashmemory/models/deepseek_v4/decoder.hpp — the DeepSeek-V4 decoder assembled from its parts
// (deepseek-v4.md §3).
//
//   ids ─► embed ─► n_hc streams ─► L × [mHC ─► attn_norm ─► Attention(kind) ─► mHC ─► ffn_norm ─► MoE]
//       ─► head mHC ─► norm ─► LM head ─► logits
//
// One Decoder holds one sequence: forward(ids) appends the tokens at the next positions (prefill is any
// number of tokens, decode is one) and returns their logits. Any chunking of a prompt gives the same logits
// as one call. Template parameters (design.md §3): the Backend that runs it (the float32 host reference is
// fm::cpu::Backend) and the controller of the CSA layers' KV, any fm::lsa::kv_controller (one per sequence,
// shared by all CSA layers: one global resident set, lsa.md §2):
//
//   v4::Decoder<> native(config, weights);                           // FullResidentKv: the native model
//   using Lsa = fm::lsa::Lookahead<fm::indexer::MemoryIndexer, fm::residency::Published>;
//   v4::Decoder<fm::cpu::Backend, Lsa> lsa(config, weights, Lsa(scorer, policy, v4::entry_layout(config),
//                                                              v4::key_layout(config), options));
//
// Each forward() call is one controller step: boundary_due(S) before the layers (then every CSA layer offers
// its Level-1 input), end_step(S) after them (Level 1 runs there at a window boundary).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/backend.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/lsa/concepts.hpp>
#include <flashmemory/models/deepseek_v4/attention.hpp>
#include <flashmemory/models/deepseek_v4/cache.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/mhc.hpp>
#include <flashmemory/models/deepseek_v4/moe.hpp>
#include <flashmemory/models/deepseek_v4/rope.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <algorithm>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

// Which logits forward() returns.
enum class Logits : std::uint8_t { last, all };

template <backend Backend = cpu::Backend, class Kv = FullResidentKv>
class Decoder {
  static_assert(std::is_same_v<Backend, cpu::Backend>,
                "deepseek_v4::Decoder: only the host reference (fm::cpu::Backend) is implemented so far");
  static_assert(lsa::kv_controller<Kv>,
                "deepseek_v4::Decoder: the Kv parameter must satisfy fm::lsa::kv_controller (lsa/concepts.hpp): "
                "append, score, select, gather, boundary_due, offer, end_step, footprint, reset");

 public:
  // The native model: every CSA chunk resident.
  Decoder(Config config, Weights weights)
    requires std::is_same_v<Kv, FullResidentKv>
      : Decoder(config, std::move(weights), full_resident_kv(config)) {}

  // Any controller, made for this model's CSA layers (entry and key channels head_dim and index_head_dim).
  Decoder(Config config, Weights weights, Kv kv)
      : config_(std::move(config)), weights_(std::move(weights)), cache_(config_), kv_(std::move(kv)),
        rope_main_(config_.rope_main, config_.qk_rope_head_dim), rope_compress_(config_.rope_compress, config_.qk_rope_head_dim) {
    if (static_cast<index_t>(weights_.layers.size()) != config_.num_hidden_layers)
      fail(errc::bad_shape, "deepseek_v4::Decoder: weights have ", weights_.layers.size(), " layers, the config ",
           config_.num_hidden_layers);
    if constexpr (requires { kv_.csa_layers(); })
      if (kv_.csa_layers() != config_.count(LayerKind::csa))
        fail(errc::invalid_argument, "deepseek_v4::Decoder: the KV controller serves ", kv_.csa_layers(),
             " CSA layers, the model has ", config_.count(LayerKind::csa));
  }

  Config const& config() const noexcept { return config_; }
  Weights const& weights() const noexcept { return weights_; }
  KvCache const& cache() const noexcept { return cache_; }
  // The controller of the CSA layers' KV (footprint, statistics; an oracle harness offers it labels).
  Kv& kv() noexcept { return kv_; }
  Kv const& kv() const noexcept { return kv_; }
  // Position of the next token.
  index_t position() const noexcept { return cache_.position(); }
  // Starts a new sequence.
  void reset() {
    cache_.reset();
    kv_.reset();
  }

  // Appends `ids` to the sequence; returns the logits of the last token [V] or of every token [S, V].
  std::vector<float> forward(std::span<index_t const> ids, Logits which = Logits::last) {
    Config const& c = config_;
    index_t S = static_cast<index_t>(ids.size()), D = c.hidden_size, n = c.hc_mult, V = c.vocab_size;
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= V)
        fail(errc::invalid_argument, "deepseek_v4::Decoder: token id ", ids[i], " at index ", i,
             " is outside the vocabulary [0, ", V, ")");
    if (S == 0) return {};

    // Residual streams X [S, n_hc · D], every stream starting as the embedding (§3 steps 1–2).
    detail::Scratch X(S, n * D, "residual streams"), U(S, D, "sub-layer input"), Y(S, D, "sub-layer output");
    auto embed = weights_.embed.matrix();
    for (index_t s = 0; s < S; ++s)
      for (index_t i = 0; i < n; ++i) std::copy_n(&embed(ids[static_cast<std::size_t>(s)], 0), D, X.row(s).begin() + i * D);

    std::vector<HyperMix> mix(static_cast<std::size_t>(S));
    auto collapse = [&](HyperConnectionWeights const& hc, Tensor const& norm) {
      for (index_t s = 0; s < S; ++s) {
        mix[static_cast<std::size_t>(s)] = hyper_mix(hc, c, X.row(s));
        hyper_collapse(mix[static_cast<std::size_t>(s)].pre, X.row(s), U.row(s));
        detail::rms_norm(U.row(s), norm.span(), c.rms_norm_eps);
      }
    };
    auto expand = [&] {
      for (index_t s = 0; s < S; ++s) hyper_expand(mix[static_cast<std::size_t>(s)], Y.row(s), X.row(s));
    };

    bool boundary = kv_.boundary_due(S);
    for (index_t l = 0; l < c.num_hidden_layers; ++l) {
      LayerWeights const& lw = weights_.layers[static_cast<std::size_t>(l)];
      LayerCache& lc = cache_.layer(l);
      collapse(lw.hc_attn, lw.attn_norm);
      attention_forward(lw.attn, c, lc.kind == LayerKind::sliding ? rope_main_ : rope_compress_, lc, U.cview(), Y.view(),
                        CsaKv<Kv>{kv_, lc.csa, boundary});
      expand();
      collapse(lw.hc_ffn, lw.ffn_norm);
      for (index_t s = 0; s < S; ++s) moe_forward(lw.ffn, c, U.row(s), ids[static_cast<std::size_t>(s)], Y.row(s));
      expand();
    }
    kv_.end_step(S);

    // Head mHC, final norm, LM head (§3 steps 4–6).
    index_t first = which == Logits::all ? 0 : S - 1;
    std::vector<float> logits(static_cast<std::size_t>((S - first) * V));
    auto head = weights_.head.matrix();
    std::vector<float> h(static_cast<std::size_t>(D));
    for (index_t s = first; s < S; ++s) {
      hyper_head(weights_.hc_head, c, X.row(s), h);
      detail::rms_norm(h, weights_.norm.span(), c.rms_norm_eps);
      for (index_t v = 0; v < V; ++v)
        logits[static_cast<std::size_t>((s - first) * V + v)] = static_cast<float>(detail::dot(&head(v, 0), h.data(), D));
    }
    return logits;
  }

 private:
  Config config_;
  Weights weights_;
  KvCache cache_;
  Kv kv_;
  Rope rope_main_, rope_compress_;
};

}  // namespace flashmemory::models::deepseek_v4
