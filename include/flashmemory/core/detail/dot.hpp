// flashmemory/core/detail/dot.hpp — the dot product of the host references: float inputs, double sums.
//
// Eight independent partial sums instead of one running sum: the compiler may not reorder a single
// floating-point chain, so one sum runs at one add per latency; eight let it use vector lanes and keep
// the references usable on long sequences. Still double: the references stay the more exact side of
// every comparison with a kernel.
#pragma once

#include <flashmemory/core/tensor_view.hpp>  // index_t

namespace flashmemory::detail {

inline double dot(float const* a, float const* b, index_t n) {
  constexpr index_t kLanes = 8;
  double s[kLanes] = {};
  index_t const body = n - n % kLanes;
  for (index_t i = 0; i < body; i += kLanes)
    for (index_t j = 0; j < kLanes; ++j) s[j] += double(a[i + j]) * double(b[i + j]);
  for (index_t i = body; i < n; ++i) s[0] += double(a[i]) * double(b[i]);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

}  // namespace flashmemory::detail
