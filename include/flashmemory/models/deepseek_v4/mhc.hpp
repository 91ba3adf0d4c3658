// flashmemory/models/deepseek_v4/mhc.hpp — Manifold-Constrained Hyper-Connections (deepseek-v4.md §4).
//
// The residual of one token is n_hc streams X [n_hc, D] (stream-major, contiguous). Around every sub-layer
// an mHC site computes from X
//   pre  [n_hc]         collapse weights:   u = Σ_i pre_i X[i]                       (the sub-layer input)
//   post [n_hc]         placement weights
//   comb [n_hc, n_hc]   a doubly-stochastic mixer (Sinkhorn): X'[k] = post_k · y + Σ_j comb[j, k] X[j]
// The head hyper-connection (§4.3) only collapses, with its own `pre`.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/detail/ops.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

struct HyperMix {
  std::vector<float> pre, post, comb;  // [n_hc], [n_hc], [n_hc · n_hc] row-major: comb[j·n_hc + k]
};

namespace detail {
// μ = ρ · (fn · z) with ρ = 1/sqrt(mean(z²) + eps) over the flattened streams (transformers normalises z first).
inline std::vector<float> hyper_logits(Tensor const& fn, std::span<float const> x, double eps) {
  std::vector<float> z(x.begin(), x.end());
  rms_norm(z, {}, eps);
  auto f = fn.matrix();
  std::vector<float> mu(static_cast<std::size_t>(f.extent(0)));
  for (index_t r = 0; r < f.extent(0); ++r) mu[static_cast<std::size_t>(r)] = static_cast<float>(dot(&f(r, 0), z.data(), f.extent(1)));
  return mu;
}

// Sinkhorn projection of the comb logits C [n, n] in place (§4.1 step 5): a row softmax + eps, then alternating
// column and row normalisations, ending with a column one (1 softmax, `iters` column and `iters − 1` row passes).
inline void sinkhorn(std::span<float> c, index_t n, index_t iters, float eps) {
  auto at = [&](index_t j, index_t k) -> float& { return c[static_cast<std::size_t>(j * n + k)]; };
  auto normalise_columns = [&] {
    for (index_t k = 0; k < n; ++k) {
      float s = 0;
      for (index_t j = 0; j < n; ++j) s += at(j, k);
      for (index_t j = 0; j < n; ++j) at(j, k) /= s + eps;
    }
  };
  for (index_t j = 0; j < n; ++j) {
    float m = at(j, 0);
    for (index_t k = 1; k < n; ++k) m = std::max(m, at(j, k));
    float s = 0;
    for (index_t k = 0; k < n; ++k) s += at(j, k) = std::exp(at(j, k) - m);
    for (index_t k = 0; k < n; ++k) at(j, k) = at(j, k) / s + eps;
  }
  normalise_columns();
  for (index_t it = 1; it < iters; ++it) {
    for (index_t j = 0; j < n; ++j) {
      float s = 0;
      for (index_t k = 0; k < n; ++k) s += at(j, k);
      for (index_t k = 0; k < n; ++k) at(j, k) /= s + eps;
    }
    normalise_columns();
  }
}
}  // namespace detail

// pre / post / comb of one mHC site for one token's streams x [n_hc · D].
inline HyperMix hyper_mix(HyperConnectionWeights const& w, Config const& c, std::span<float const> x) {
  index_t n = c.hc_mult;
  auto eps = static_cast<float>(c.hc_eps);
  std::vector<float> mu = detail::hyper_logits(w.fn, x, c.rms_norm_eps);
  auto base = w.base.span(), scale = w.scale.span();
  HyperMix m;
  for (index_t i = 0; i < n; ++i) {
    auto u = static_cast<std::size_t>(i), v = static_cast<std::size_t>(n + i);
    m.pre.push_back(detail::sigmoid(mu[u] * scale[0] + base[u]) + eps);
    m.post.push_back(2.0f * detail::sigmoid(mu[v] * scale[1] + base[v]));
  }
  for (index_t i = 0; i < n * n; ++i) {
    auto u = static_cast<std::size_t>(2 * n + i);
    m.comb.push_back(mu[u] * scale[2] + base[u]);
  }
  detail::sinkhorn(m.comb, n, c.hc_sinkhorn_iters, eps);
  return m;
}

// u = Σ_i pre_i · x[i] for x [n_hc · D], u [D].
inline void hyper_collapse(std::span<float const> pre, std::span<float const> x, std::span<float> u) {
  std::size_t D = u.size();
  std::fill(u.begin(), u.end(), 0.0f);
  for (std::size_t i = 0; i < pre.size(); ++i)
    for (std::size_t k = 0; k < D; ++k) u[k] += pre[i] * x[i * D + k];
}

// x[k] ← post_k · y + Σ_j comb[j, k] · x[j] (the sub-layer output placed into the mixed residual).
inline void hyper_expand(HyperMix const& m, std::span<float const> y, std::span<float> x) {
  std::size_t n = m.post.size(), D = y.size();
  std::vector<float> old(x.begin(), x.end());
  for (std::size_t k = 0; k < n; ++k)
    for (std::size_t e = 0; e < D; ++e) {
      float v = m.post[k] * y[e];
      for (std::size_t j = 0; j < n; ++j) v += m.comb[j * n + k] * old[j * D + e];
      x[k * D + e] = v;
    }
}

// The head hyper-connection (§4.3): h = Σ_i pre_i x[i], pre_i = sigmoid(μ_i · scale + base_i) + hc_eps.
inline void hyper_head(HyperConnectionWeights const& w, Config const& c, std::span<float const> x, std::span<float> h) {
  std::vector<float> mu = detail::hyper_logits(w.fn, x, c.rms_norm_eps);
  auto base = w.base.span();
  float scale = w.scale.span()[0];
  for (std::size_t i = 0; i < mu.size(); ++i) mu[i] = detail::sigmoid(mu[i] * scale + base[i]) + static_cast<float>(c.hc_eps);
  hyper_collapse(mu, x, h);
}

}  // namespace flashmemory::models::deepseek_v4
