// Helpers of the GPU tests: seeded random data, bf16 rounding, device upload/download, and the error
// measure of METHOD.md (‖got − ref‖ / ‖ref‖, NaN never passes).
#pragma once

#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/dtype.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace flashmemory::test {

inline std::vector<float> normal(std::size_t n, std::mt19937& rng, float stddev = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Values as bf16, and the floats those bf16 values stand for (what a reference must see).
inline std::vector<bfloat16> to_bf16(std::span<float const> v) {
  std::vector<bfloat16> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = bfloat16::from_float(v[i]);
  return out;
}
inline std::vector<float> round_bf16(std::span<float const> v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = decode_bf16(encode_bf16(v[i]));
  return out;
}
inline std::vector<float> to_float(std::span<bfloat16 const> v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = v[i].to_float();
  return out;
}

template <class T>
cuda::DeviceBuffer<T> upload(std::span<T const> host, char const* what = "test input") {
  cuda::DeviceBuffer<T> d(host.size(), what);
  d.copy_from(host);
  return d;
}
template <class T>
cuda::DeviceBuffer<T> upload(std::vector<T> const& host, char const* what = "test input") {
  return upload(std::span<T const>(host), what);
}
template <class T>
std::vector<T> download(cuda::DeviceBuffer<T> const& d) {
  std::vector<T> host(d.size());
  d.copy_to(host);
  return host;
}

// ‖got − ref‖ / ‖ref‖ in double; +∞ if any value of got is not finite.
inline double rel_error(std::span<float const> got, std::span<float const> ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    double const e = double(got[i]) - double(ref[i]);
    num += e * e;
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

}  // namespace flashmemory::test
