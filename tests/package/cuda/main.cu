#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <cstdio>

// Rounds a vector to bfloat16 on the device with the same conversion the host references use.
__global__ void round_to_bf16(fm::vector_view<float const> in, fm::vector_view<fm::bfloat16> out) {
  fm::index_t i = blockIdx.x * fm::index_t{blockDim.x} + threadIdx.x;
  if (i < in.extent(0)) out[i] = fm::bfloat16::from_float(in[i]);
}

int main() {
  constexpr fm::index_t n = 256;
  float* in = nullptr;
  fm::bfloat16* out = nullptr;
  if (cudaMalloc(&in, n * sizeof(float)) != cudaSuccess || cudaMalloc(&out, n * sizeof(fm::bfloat16)) != cudaSuccess) {
    std::puts("no CUDA device");
    return 1;
  }
  round_to_bf16<<<1, n>>>(fm::vector_view<float const>(in, n), fm::vector_view<fm::bfloat16>(out, n));
  cudaError_t status = cudaDeviceSynchronize();
  cudaFree(in);
  cudaFree(out);
  std::printf("flashmemory %s: %s\n", FLASHMEMORY_VERSION_STRING, cudaGetErrorString(status));
  return status == cudaSuccess ? 0 : 1;
}
