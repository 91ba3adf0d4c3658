// flashmemory/core/cuda_backend.hpp — the CUDA execution-space tag (host-safe: no CUDA header needed).
//
// `fm::cuda::Backend` selects the kernels under cuda/ folders (design.md §2). The tag also names the element
// type the GPU keeps weight matrices and KV rows in; arithmetic always accumulates in float32:
//   fm::cuda::Backend          bf16 storage — the production choice (half the bytes per decode step)
//   fm::cuda::Float32Backend   float32 storage — the same kernels with nothing rounded, for checking the CUDA
//                              code path against the float32 host reference to rounding error
// Code that runs on a backend names the tag; only headers that launch kernels (.cuh) need nvcc.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/backend.hpp>
#include <flashmemory/core/dtype.hpp>

#include <string_view>
#include <type_traits>

namespace flashmemory::cuda {

template <class Storage>
struct BasicBackend {
  static_assert(std::is_same_v<Storage, bfloat16> || std::is_same_v<Storage, float>,
                "fm::cuda::BasicBackend: storage is bfloat16 or float");
  using storage = Storage;
  static constexpr std::string_view kName = std::is_same_v<Storage, float> ? "cuda-f32" : "cuda";
  static constexpr bool kHost = false;
};

using Backend = BasicBackend<bfloat16>;
using Float32Backend = BasicBackend<float>;
static_assert(backend<Backend> && backend<Float32Backend>);

}  // namespace flashmemory::cuda
