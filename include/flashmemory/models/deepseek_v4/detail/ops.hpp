// flashmemory/models/deepseek_v4/detail/ops.hpp — the float32 building blocks of the reference decoder:
// row-major linear layers, RMS norms and the scalar activations of deepseek-v4.md §2. Plain loops over
// contiguous rows; dot products accumulate in double (core/detail/dot.hpp) so the reference is the more exact side of any comparison.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/detail/dot.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <cmath>
#include <cstddef>
#include <span>
#include <string_view>

namespace flashmemory::models::deepseek_v4::detail {

using ::flashmemory::detail::dot;

// y[s, o] = Σ_i x[s, i] · w[o, i]: a bias-free linear layer with PyTorch's [out, in] weight layout.
inline void linear(matrix_view<float const> x, matrix_view<float const> w, matrix_view<float> y) {
  index_t S = x.extent(0), in = x.extent(1), out = w.extent(0);
  if (w.extent(1) != in || y.extent(0) != S || y.extent(1) != out)
    fail(errc::bad_shape, "linear: x [", S, ", ", in, "] · w [", out, ", ", w.extent(1), "]ᵀ → y [", y.extent(0), ", ",
         y.extent(1), "] disagree");
  for (index_t o = 0; o < out; ++o) {
    float const* row = &w(o, 0);
    for (index_t s = 0; s < S; ++s) y(s, o) = static_cast<float>(dot(&x(s, 0), row, in));
  }
}

// x ← x / sqrt(mean(x²) + eps) (· weight when given), statistics in double.
inline void rms_norm(std::span<float> x, std::span<float const> weight, double eps) {
  double ss = 0;
  for (float v : x) ss += double(v) * v;
  float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = weight.empty() ? x[i] * r : weight[i] * (x[i] * r);
}

// Every row of a [rows, n] matrix, normalised with the same weight.
inline void rms_norm_rows(matrix_view<float> x, std::span<float const> weight, double eps) {
  for (index_t s = 0; s < x.extent(0); ++s)
    rms_norm(std::span<float>(&x(s, 0), static_cast<std::size_t>(x.extent(1))), weight, eps);
}

inline float sigmoid(float x) { return static_cast<float>(1.0 / (1.0 + std::exp(-double(x)))); }
inline float silu(float x) { return x * sigmoid(x); }
// PyTorch's softplus: x itself above the threshold 20.
inline float softplus(float x) { return x > 20.0f ? x : static_cast<float>(std::log1p(std::exp(double(x)))); }

// A row-major [rows, cols] float scratch matrix.
struct Scratch {
  HostBuffer<float> data;
  index_t rows = 0, cols = 0;
  Scratch(index_t r, index_t c, std::string_view what) : data(static_cast<std::size_t>(r * c), what), rows(r), cols(c) {}
  matrix_view<float> view() { return matrix_view<float>(data.data(), rows, cols); }
  matrix_view<float const> cview() const { return matrix_view<float const>(data.data(), rows, cols); }
  std::span<float> row(index_t r) { return {data.data() + r * cols, static_cast<std::size_t>(cols)}; }
};

}  // namespace flashmemory::models::deepseek_v4::detail
