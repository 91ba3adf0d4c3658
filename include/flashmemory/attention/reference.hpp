// flashmemory/attention/reference.hpp — the host reference of sparse decode attention (float32 in, float64
// accumulation). It is the oracle of the CUDA kernels and what runs where there is no GPU.
#pragma once

#include <flashmemory/attention/concepts.hpp>
#include <flashmemory/attention/sparse_decode.hpp>
#include <flashmemory/core/detail/dot.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace flashmemory::attention {

struct SparseDecodeReference {
  using Arguments = SparseDecodeArguments<float, float>;

  Status can_implement(Arguments const& a) const {
    index_t B = a.q.extent(0), H = a.q.extent(1), d = a.q.extent(2);
    if (a.window.extent(0) != B || a.window.extent(2) != d)
      return Status::failure(errc::bad_shape, "sparse attention: window must be [", B, ", W, ", d, "], found [",
                             a.window.extent(0), ", ", a.window.extent(1), ", ", a.window.extent(2), "]");
    if (a.window_len.extent(0) != B)
      return Status::failure(errc::bad_shape, "sparse attention: window_len must have ", B, " entries");
    if (a.selected.extent(0) != B)
      return Status::failure(errc::bad_shape, "sparse attention: selected must have ", B, " rows");
    if (a.selected.extent(1) > 0 && a.pool.extent(1) != d)
      return Status::failure(errc::bad_shape, "sparse attention: pool rows have ", a.pool.extent(1),
                             " channels, queries ", d);
    if (a.sink.extent(0) != H) return Status::failure(errc::bad_shape, "sparse attention: sink must have ", H, " heads");
    if (a.out.extent(0) != B || a.out.extent(1) != H || a.out.extent(2) != d)
      return Status::failure(errc::bad_shape, "sparse attention: out must be [", B, ", ", H, ", ", d, "]");
    for (index_t b = 0; b < B; ++b) {
      if (a.window_len(b) < 0 || a.window_len(b) > a.window.extent(1))
        return Status::failure(errc::invalid_argument, "sparse attention: window_len[", b, "] = ", a.window_len(b),
                               " outside [0, ", a.window.extent(1), "]");
      for (index_t k = 0; k < a.selected.extent(1); ++k)
        if (a.selected(b, k) >= a.pool.extent(0))
          return Status::failure(errc::invalid_argument, "sparse attention: selected[", b, ", ", k, "] = ",
                                 a.selected(b, k), " is past the pool's ", a.pool.extent(0), " rows");
    }
    return Status::success();
  }

  Status run(Arguments const& a) const {
    if (Status s = can_implement(a); !s) return s;
    index_t B = a.q.extent(0), H = a.q.extent(1), d = a.q.extent(2);
    std::vector<float const*> rows;
    std::vector<double> logits, acc(static_cast<std::size_t>(d));
    for (index_t b = 0; b < B; ++b) {
      rows.clear();
      for (index_t w = 0; w < a.window_len(b); ++w) rows.push_back(&a.window(b, w, 0));
      for (index_t k = 0; k < a.selected.extent(1); ++k)
        if (a.selected(b, k) >= 0) rows.push_back(&a.pool(a.selected(b, k), 0));
      for (index_t h = 0; h < H; ++h) {
        logits.assign(rows.size(), 0.0);
        double m = a.sink(h);
        for (std::size_t j = 0; j < rows.size(); ++j) {
          logits[j] = ::flashmemory::detail::dot(&a.q(b, h, 0), rows[j], d) * a.scale;
          m = std::max(m, logits[j]);
        }
        double denom = std::exp(double(a.sink(h)) - m);
        std::fill(acc.begin(), acc.end(), 0.0);
        for (std::size_t j = 0; j < rows.size(); ++j) {
          double p = std::exp(logits[j] - m);
          denom += p;
          for (index_t c = 0; c < d; ++c) acc[c] += p * rows[j][c];
        }
        for (index_t c = 0; c < d; ++c) a.out(b, h, c) = static_cast<float>(acc[c] / denom);
      }
    }
    return Status::success();
  }
};
static_assert(sparse_attention<SparseDecodeReference>);

}  // namespace flashmemory::attention
