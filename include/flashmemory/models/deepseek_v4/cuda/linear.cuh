// flashmemory/models/deepseek_v4/cuda/linear.cuh — bias-free linear layers for a few tokens at a time:
//   y[t, r] = Σ_k W[r, k] · x[t, k]           (W [rows, cols] in the storage type, x and y float32)
// the device twin of detail::linear (detail/ops.hpp). A decode step multiplies one token by every weight
// matrix once, so the product is a matrix-vector stream bound by the bytes of W; prefill runs tiles of up
// to kTileTokens tokens per pass over W.
//
// Grouped input (the grouped output projection wo_a, deepseek-v4.md §5.4): row r reads its input at
// x[t, (r / group_rows) · group_offset …], so G groups of rows each see their own slice of x.
//
// Kernel: one warp per output row at a time, grid-stride over the rows (the decoder caps the grid at the
// blocks that fit on the device at once, linear_resident_blocks()); 16-byte weight loads, four of them in
// flight per lane before the first use, the next four requested before the current ones are used; x is
// read through L1 (every warp of the block reads the same x). Requires cols % 8 == 0.
//
// With `overlap` (a programmatic dependent launch, detail/common.cuh) the kernel starts while the kernels
// before it still run: every warp first asks L2 for its rows (up to kL2PrefetchBytes of the matrix) and
// loads the first chunks of its first row, then waits for its input. The small kernels between two
// products thus overlap the streaming of the next matrix.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/models/deepseek_v4/cuda/detail/common.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

namespace flashmemory::models::deepseek_v4::cuda {

template <storage_element T>
struct LinearArguments {
  T const* w = nullptr;  // [rows, cols]
  std::int64_t rows = 0, cols = 0;
  float const* x = nullptr;  // [tokens, x_stride]
  std::int64_t x_stride = 0;
  std::int64_t tokens = 0;
  std::int64_t group_rows = 0;    // rows per input group; 0 = one group
  std::int64_t group_offset = 0;  // input offset between consecutive groups
  float* y = nullptr;  // [tokens, y_stride], columns [0, rows) written
  std::int64_t y_stride = 0;
  cudaStream_t stream = nullptr;
  bool overlap = false;  // programmatic dependent launch (detail/common.cuh)
  int max_blocks = 0;    // grid cap, e.g. linear_resident_blocks(); 0 = one block per kLinearWarps rows
};

namespace detail {

inline constexpr int kTileTokens = 8;
inline constexpr int kLinearWarps = 8;
inline constexpr int kUnroll = 4;  // 16-byte weight loads per lane in flight
inline constexpr std::int64_t kL2PrefetchBytes = 16 << 20;  // of a matrix, prefetched before the inputs are ready

__device__ __forceinline__ void prefetch_l2(void const* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Weight chunks c0, c0 + 32, … (kUnroll of them, those below `chunks`) of one row.
template <class T>
__device__ __forceinline__ void load_chunks(T const* w, int c0, int chunks, float (&wv)[kUnroll][8]) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u)
    if (c0 + 32 * u < chunks) load8_stream(w + static_cast<std::int64_t>(c0 + 32 * u) * 8, wv[u]);
}

// acc[m] += the loaded chunks · x_m for the nt ≤ M tokens of a tile.
template <int M>
__device__ __forceinline__ void fma_chunks(float const (&wv)[kUnroll][8], float const* x, std::int64_t x_stride, int c0, int chunks,
                                           int nt, float (&acc)[M]) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    int const c = c0 + 32 * u;
    if (c >= chunks) break;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (m >= nt) break;
      float const* xm = x + m * x_stride + static_cast<std::int64_t>(c) * 8;
      float4 const a = *reinterpret_cast<float4 const*>(xm), b = *reinterpret_cast<float4 const*>(xm + 4);
      acc[m] += wv[u][0] * a.x + wv[u][1] * a.y + wv[u][2] * a.z + wv[u][3] * a.w + wv[u][4] * b.x + wv[u][5] * b.y +
                wv[u][6] * b.z + wv[u][7] * b.w;
    }
  }
}

// acc[m] += W_row · x_m (per-lane partial sums; the caller reduces the warp). The next group of weight
// loads is issued before the current one is used; `before_inputs()` runs once the first group is requested
// and before x is read (the linear kernel waits for its prerequisites there).
template <class T, int M, class F>
__device__ __forceinline__ void row_dot(T const* w, float const* x, std::int64_t x_stride, int chunks, int nt, float (&acc)[M],
                                        F&& before_inputs) {
  int const lane = static_cast<int>(threadIdx.x % 32);
  float wv[kUnroll][8];
  load_chunks(w, lane, chunks, wv);
  before_inputs();
  for (int c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    float next[kUnroll][8];
    load_chunks(w, c0 + 32 * kUnroll, chunks, next);
    fma_chunks<M>(wv, x, x_stride, c0, chunks, nt, acc);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int e = 0; e < 8; ++e) wv[u][e] = next[u][e];
  }
}

template <class T, int M>
__global__ void __launch_bounds__(kLinearWarps * 32) linear_kernel(LinearArguments<T> const p) {
  launch_dependents();
  int const lane = static_cast<int>(threadIdx.x % 32);
  std::int64_t const warps = static_cast<std::int64_t>(gridDim.x) * kLinearWarps;
  std::int64_t const first = static_cast<std::int64_t>(blockIdx.x) * kLinearWarps + threadIdx.x / 32;
  if (p.overlap && blockIdx.y == 0) {
    // Weights only (nothing writes them): safe before the wait.
    std::int64_t const row_bytes = p.cols * static_cast<std::int64_t>(sizeof(T));
    std::int64_t const limit = min(p.rows, kL2PrefetchBytes / row_bytes);
    char const* base = reinterpret_cast<char const*>(p.w);
    for (std::int64_t row = first; row < limit; row += warps)
      for (std::int64_t b = lane * 128; b < row_bytes; b += 32 * 128) prefetch_l2(base + row * row_bytes + b);
  }
  std::int64_t const t0 = static_cast<std::int64_t>(blockIdx.y) * M;
  int const nt = static_cast<int>(min(static_cast<std::int64_t>(M), p.tokens - t0));
  bool waiting = true;
  for (std::int64_t row = first; row < p.rows; row += warps) {
    std::int64_t const group = p.group_rows > 0 ? row / p.group_rows : 0;
    float const* x = p.x + t0 * p.x_stride + group * p.group_offset;
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = 0.0f;
    // The first chunks of the first row are requested before the wait.
    row_dot<T, M>(p.w + row * p.cols, x, p.x_stride, static_cast<int>(p.cols / 8), nt, acc, [&waiting] {
      if (waiting) wait_for_prerequisites();
      waiting = false;
    });
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = warp_sum(acc[m]);
    if (lane == 0)
#pragma unroll
      for (int m = 0; m < M; ++m)
        if (m < nt) p.y[(t0 + m) * p.y_stride + row] = acc[m];
  }
  if (waiting) wait_for_prerequisites();
}

}  // namespace detail

template <storage_element T>
Status can_implement(LinearArguments<T> const& a) {
  if (a.rows < 0 || a.cols <= 0 || a.tokens < 0)
    return Status::failure(errc::bad_shape, "linear (CUDA): W [", a.rows, ", ", a.cols, "] for ", a.tokens, " tokens");
  if (a.cols % 8 != 0)
    return Status::failure(errc::unsupported, "linear (CUDA): input width ", a.cols, " is not a multiple of 8");
  if (a.x_stride % 4 != 0 || a.group_offset % 4 != 0 || reinterpret_cast<std::uintptr_t>(a.x) % 16 != 0 ||
      reinterpret_cast<std::uintptr_t>(a.w) % 16 != 0)
    return Status::failure(errc::invalid_argument, "linear (CUDA): W and x rows must be 16-byte aligned");
  std::int64_t const groups = a.group_rows > 0 ? (a.rows + a.group_rows - 1) / a.group_rows : 1;
  if ((groups - 1) * a.group_offset + a.cols > a.x_stride)
    return Status::failure(errc::bad_shape, "linear (CUDA): ", groups, " input groups of ", a.cols,
                           " columns overrun the input row of ", a.x_stride);
  if (a.y_stride < a.rows) return Status::failure(errc::bad_shape, "linear (CUDA): output row of ", a.y_stride, " < ", a.rows);
  return Status::success();
}

// Enqueues y = x · Wᵀ on a.stream.
template <storage_element T>
Status linear(LinearArguments<T> const& a) {
  if (Status s = can_implement(a); !s) return s;
  if (a.rows == 0 || a.tokens == 0) return Status::success();
  int const threads = detail::kLinearWarps * 32;
  auto const blocks = static_cast<unsigned>(std::min(detail::ceil_div(a.rows, detail::kLinearWarps), a.max_blocks > 0 ? a.max_blocks : INT32_MAX));
  if (a.tokens == 1)
    return detail::launch("deepseek_v4 linear_kernel", a.overlap, detail::linear_kernel<T, 1>, dim3(blocks, 1), threads, 0, a.stream, a);
  auto const tiles = static_cast<unsigned>(detail::ceil_div(a.tokens, detail::kTileTokens));
  return detail::launch("deepseek_v4 linear_kernel", a.overlap, detail::linear_kernel<T, detail::kTileTokens>, dim3(blocks, tiles),
                        threads, 0, a.stream, a);
}

// The blocks of the linear kernel for `tokens` tokens that the current device holds at once: the grid cap
// (LinearArguments::max_blocks) with which every warp of a launch can start, and prefetch, at once. A
// device query: call it outside stream capture.
template <storage_element T>
int linear_resident_blocks(std::int64_t tokens) {
  int device = 0, sms = 0, per_sm = 0;
  FLASHMEMORY_CUDA_CHECK(cudaGetDevice(&device));
  FLASHMEMORY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  if (tokens == 1)
    FLASHMEMORY_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, detail::linear_kernel<T, 1>, detail::kLinearWarps * 32, 0));
  else
    FLASHMEMORY_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, detail::linear_kernel<T, detail::kTileTokens>,
                                                                         detail::kLinearWarps * 32, 0));
  return sms * std::max(per_sm, 1);
}

}  // namespace flashmemory::models::deepseek_v4::cuda
