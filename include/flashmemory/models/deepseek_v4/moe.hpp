// flashmemory/models/deepseek_v4/moe.hpp — the Mixture-of-Experts feed-forward block (deepseek-v4.md §7).
//
//   g = gate · x,  s = sqrtsoftplus(g) (or sigmoid)
//   experts: top-k of s + bias (the bias only selects), or tid2eid[token] on hash layers
//   w_i = s[e_i] / (Σ s[e_·] + 1e-20) · routed_scaling_factor
//   out = Σ_i w_i · expert_{e_i}(x) + shared(x),  expert(x) = w2 · (silu(min(w1·x, L)) ⊙ clamp(w3·x, −L, L))
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/indexer/reference.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/detail/ops.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

// Adds weight · expert(x) to out (clamped SwiGLU, §7 step 5).
inline void expert_accumulate(ExpertWeights const& e, float limit, std::span<float const> x, float weight, std::span<float> out) {
  auto w1 = e.w1.matrix(), w3 = e.w3.matrix(), w2 = e.w2.matrix();
  index_t I = w1.extent(0), D = w1.extent(1);
  std::vector<float> h(static_cast<std::size_t>(I));
  for (index_t r = 0; r < I; ++r) {
    auto a = static_cast<float>(detail::dot(&w1(r, 0), x.data(), D));
    auto b = static_cast<float>(detail::dot(&w3(r, 0), x.data(), D));
    h[static_cast<std::size_t>(r)] = detail::silu(std::min(a, limit)) * std::clamp(b, -limit, limit);
  }
  for (index_t r = 0; r < D; ++r)
    out[static_cast<std::size_t>(r)] += weight * static_cast<float>(detail::dot(&w2(r, 0), h.data(), I));
}

// The routed experts of one token and their weights.
struct Routing {
  std::vector<std::int32_t> experts;
  std::vector<float> weights;
};

inline Routing route(MoeWeights const& w, Config const& c, std::span<float const> x, index_t token) {
  auto gate = w.gate.matrix();
  index_t E = gate.extent(0);
  std::vector<float> s(static_cast<std::size_t>(E));
  for (index_t e = 0; e < E; ++e) {
    auto g = static_cast<float>(detail::dot(&gate(e, 0), x.data(), gate.extent(1)));
    s[static_cast<std::size_t>(e)] =
        c.scoring_func == ScoringFunc::sigmoid ? detail::sigmoid(g) : std::sqrt(detail::softplus(g));
  }
  Routing r;
  if (w.bias.size() == 0) {  // hash routing
    auto ids = w.tid2eid.row(token);
    r.experts.assign(ids.begin(), ids.end());
  } else {
    std::vector<float> biased(s);
    for (std::size_t e = 0; e < biased.size(); ++e) biased[e] += w.bias.span()[e];
    r.experts = indexer::top_k(biased, c.num_experts_per_tok);
  }
  float total = 0;
  for (auto e : r.experts) total += s[static_cast<std::size_t>(e)];
  for (auto e : r.experts)
    r.weights.push_back(s[static_cast<std::size_t>(e)] / (total + 1e-20f) * static_cast<float>(c.routed_scaling_factor));
  return r;
}

// out = MoE(x) for one ffn-normed token x [D] whose id is `token`.
inline void moe_forward(MoeWeights const& w, Config const& c, std::span<float const> x, index_t token, std::span<float> out) {
  auto limit = static_cast<float>(c.swiglu_limit);
  std::fill(out.begin(), out.end(), 0.0f);
  Routing r = route(w, c, x, token);
  for (std::size_t i = 0; i < r.experts.size(); ++i)
    expert_accumulate(w.experts[static_cast<std::size_t>(r.experts[i])], limit, x, r.weights[i], out);
  expert_accumulate(w.shared, limit, x, 1.0f, out);
}

}  // namespace flashmemory::models::deepseek_v4
