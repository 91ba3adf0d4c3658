// Helpers of the DeepSeek-V4 GPU tests: values in a storage type and what kernels see of them, host tensors
// for the reference functions, poisoned outputs, device positions.
#pragma once

#include "../gpu/gpu_test.cuh"

#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <type_traits>
#include <vector>

namespace dsv4_gpu {

namespace fm = flashmemory;
namespace v4 = flashmemory::models::deepseek_v4;
using fm::index_t;
using fm::cuda::DeviceBuffer;

// Values as a kernel stores them (T = float or bf16), and the floats those stored values stand for.
template <class T>
std::vector<T> stored(std::vector<float> const& v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return fm::test::to_bf16(v);
}
template <class T>
std::vector<float> seen(std::vector<float> const& v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return fm::test::round_bf16(v);
}
template <class T>
std::vector<float> widen(std::vector<T> const& v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return fm::test::to_float(v);
}
template <class T>
char const* storage_name() {
  return std::is_same_v<T, float> ? "float32" : "bf16";
}

inline std::vector<float> uniform(std::size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

inline v4::Tensor tensor(std::vector<float> const& v, std::vector<index_t> shape) {
  v4::Tensor t{fm::HostBuffer<float>(v.size(), "test tensor"), std::move(shape)};
  std::copy(v.begin(), v.end(), t.data.begin());
  return t;
}
inline std::vector<float> values(v4::Tensor const& t) { return {t.data.begin(), t.data.end()}; }

// n floats of NaN: an element a kernel should write and does not stays NaN.
inline DeviceBuffer<float> poisoned(std::size_t n) {
  DeviceBuffer<float> d(n, "test output");
  d.fill_bytes(0xff);
  return d;
}

inline DeviceBuffer<std::int64_t> device_position(index_t p) {
  std::vector<std::int64_t> v{p};
  return fm::test::upload(v, "position");
}

inline void require_ok(fm::Status const& s) {
  INFO(s.message);
  REQUIRE(s.ok());
}

inline void wait_device() { FLASHMEMORY_CUDA_CHECK(cudaDeviceSynchronize()); }

}  // namespace dsv4_gpu
