// flashmemory/models/deepseek_v4/cuda/detail/common.cuh — what the DeepSeek-V4 kernels share: storage
// element loads and stores (bf16 or float, widened to float), warp and block reductions, RoPE with the
// host reference's exact angles, and programmatic dependent launch. Not part of the API.
//
// Programmatic dependent launch (sm_90, "PDL"): a decode step is a chain of ~150 dependent kernels, most of
// them small. Launched with `overlap`, a kernel may start while its predecessor in the stream is still
// running; every kernel here first lets its own successor launch (launch_dependents), then waits for its
// predecessor to complete and flush (wait_for_prerequisites) before it touches any activation or cache
// buffer — only weights, which nothing writes, are read before the wait (the linear kernels prefetch their
// first rows). Every kernel waits unconditionally, before any early exit, so that completion stays
// transitive along the chain (a kernel that could finish without waiting would let its successor overtake
// its predecessor).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/error.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace flashmemory::models::deepseek_v4::cuda {

// The element types weights and KV rows may be stored in (fm::cuda::BasicBackend<Storage>).
template <class T>
concept storage_element = std::is_same_v<T, float> || std::is_same_v<T, bfloat16>;

// A RoPE variant on the device: the host Rope's frequencies (rope.hpp), so angles match it bit for bit.
struct DeviceRope {
  float const* inv_freq = nullptr;  // [pairs]
  int pairs = 0;                    // rope dims / 2
  float scale = 1.0f;               // attention_factor
};

namespace detail {

inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr float kNegInf = -__builtin_huge_valf();

__host__ __device__ constexpr int ceil_div(std::int64_t a, std::int64_t b) { return static_cast<int>((a + b - 1) / b); }

// Eight consecutive elements widened to float, from one 32-byte (float) or 16-byte (bf16) load. `Load` reads
// one vector: plainly for activations and KV rows, or streaming for weights (below).
template <class T, class Load>
__device__ __forceinline__ void widen8(T const* p, float (&v)[8], Load load) {
  if constexpr (std::is_same_v<T, float>) {
    float4 const a = load(reinterpret_cast<float4 const*>(p)), b = load(reinterpret_cast<float4 const*>(p + 4));
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    uint4 const u = load(reinterpret_cast<uint4 const*>(p));
    unsigned const w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(w[i] << 16);
      v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
}

// p is 16-byte aligned (bf16) or 32-byte aligned (float).
template <class T>
__device__ __forceinline__ void load8(T const* p, float (&v)[8]) {
  widen8(p, v, [](auto const* q) { return *q; });
}

// The same for weights that are read once per step: streamed past L1 and marked evict-first in L2, so the
// KV rows and activations that are reused stay cached.
template <class T>
__device__ __forceinline__ void load8_stream(T const* p, float (&v)[8]) {
  widen8(p, v, [](auto const* q) { return __ldcs(q); });
}

template <class T>
__device__ __forceinline__ float to_float(T x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else return __uint_as_float(static_cast<unsigned>(x.bits) << 16);
}

// Rounds to nearest even, exactly as the host's encode_bf16.
template <class T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else return bfloat16{encode_bf16(x)};
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. `scratch`
// holds 33 floats of shared memory; the call begins and ends with a barrier, so it may be reused at once.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  int const lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  int const warps = static_cast<int>(blockDim.x / 32);
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < warps ? scratch[lane] : 0.0f;
    t = warp_sum(t);
    if (lane == 0) scratch[32] = t;
  }
  __syncthreads();
  return scratch[32];
}

// Rotates the pair (a, b) by ±pos·ω_i the way Rope::apply does: a float angle, cos/sin in double rounded to
// float, times the attention factor.
__device__ __forceinline__ void rope_pair(DeviceRope const& rope, int pair, std::int64_t pos, bool inverse, float& a,
                                          float& b) {
  float const angle = static_cast<float>(pos) * rope.inv_freq[pair];
  double s = 0, c = 0;
  sincos(static_cast<double>(angle), &s, &c);
  float const cf = static_cast<float>(c) * rope.scale;
  float sf = static_cast<float>(s) * rope.scale;
  if (inverse) sf = -sf;
  float const x = a, y = b;
  a = x * cf - y * sf;
  b = y * cf + x * sf;
}

// Rotates the trailing 2·pairs channels of the n-channel vector v (shared memory), block-wide; the caller
// synchronises before and after.
__device__ __forceinline__ void rope_block(DeviceRope const& rope, float* v, int n, std::int64_t pos, bool inverse) {
  int const first = n - 2 * rope.pairs;
  for (int i = static_cast<int>(threadIdx.x); i < rope.pairs; i += static_cast<int>(blockDim.x))
    rope_pair(rope, i, pos, inverse, v[first + 2 * i], v[first + 2 * i + 1]);
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Lets the next kernel of the stream launch (it still waits for this one's results before using them).
__device__ __forceinline__ void launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Waits until the previous kernel of the stream has completed and its writes are visible (returns at once
// when this kernel was not launched with `overlap`).
__device__ __forceinline__ void wait_for_prerequisites() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The start of every kernel that reads nothing before its prerequisites.
__device__ __forceinline__ void enter() {
  launch_dependents();
  wait_for_prerequisites();
}

// kernel<<<grid, block, smem, stream>>>(args…), as a programmatic dependent launch when `overlap`.
template <class... Params, class... Args>
Status launch(char const* name, bool overlap, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
              cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = overlap ? &attr : nullptr;
  config.numAttrs = overlap ? 1 : 0;
  return ::flashmemory::cuda::cuda_status(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), name, __FILE__,
                                          __LINE__);
}

}  // namespace detail
}  // namespace flashmemory::models::deepseek_v4::cuda
