// The packed record codecs run in device code (one thread per record) and agree with the host bit for bit.
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/layout/csa_entry.hpp>
#include <flashmemory/layout/index_key.hpp>

#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace flashmemory;

namespace {
template <class Layout>
__global__ void encode_kernel(Layout l, float const* in, std::byte* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) encode_record(l, in + i * l.channels(), out + i * l.record_bytes());
}
template <class Layout>
__global__ void decode_kernel(Layout l, std::byte const* in, float* out, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) decode_record(l, in + i * l.record_bytes(), out + i * l.channels());
}
}  // namespace

TEMPLATE_TEST_CASE("record codecs: device = host, bit for bit", "[layout][gpu]", layout::CsaEntryPacked, layout::IndexKeyFp8,
                   layout::CsaEntryBf16) {
  TestType l{};
  constexpr int n = 300;
  std::size_t C = static_cast<std::size_t>(l.channels()), B = static_cast<std::size_t>(l.record_bytes());
  std::mt19937 rng(1);
  std::normal_distribution<float> n01;
  std::uniform_real_distribution<float> e(-12, 12);
  std::vector<float> in(n * C);
  for (float& x : in) x = n01(rng) * std::exp2(e(rng));
  std::vector<std::byte> host_rec(n * B);
  std::vector<float> host_out(n * C);
  for (int i = 0; i < n; ++i) {
    encode_record(l, in.data() + i * C, host_rec.data() + i * B);
    decode_record(l, host_rec.data() + i * B, host_out.data() + i * C);
  }
  fm::cuda::DeviceBuffer<float> d_in(n * C), d_out(n * C);
  fm::cuda::DeviceBuffer<std::byte> d_rec(n * B);
  d_in.copy_from(in);
  encode_kernel<<<(n + 127) / 128, 128>>>(l, d_in.data(), d_rec.data(), n);
  FLASHMEMORY_CUDA_CHECK(cudaGetLastError());
  decode_kernel<<<(n + 127) / 128, 128>>>(l, d_rec.data(), d_out.data(), n);
  FLASHMEMORY_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::byte> dev_rec(n * B);
  std::vector<float> dev_out(n * C);
  d_rec.copy_to(dev_rec);
  d_out.copy_to(dev_out);
  CHECK(std::memcmp(dev_rec.data(), host_rec.data(), dev_rec.size()) == 0);
  CHECK(std::memcmp(dev_out.data(), host_out.data(), dev_out.size() * sizeof(float)) == 0);
}
