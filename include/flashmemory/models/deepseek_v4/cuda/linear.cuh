// flashmemory/models/deepseek_v4/cuda/linear.cuh — bias-free linear layers for a few tokens at a time:
//   y[t, r] = Σ_k W[r, k] · x[t, k]           (W [rows, cols] in the storage type, x and y float32)
// the device twin of detail::linear (detail/ops.hpp). A decode step multiplies one token by every weight
// matrix once, so the product is a matrix-vector stream bound by the bytes of W; prefill runs tiles of up
// to kTileTokens tokens per pass over W.
//
// Grouped input (the grouped output projection wo_a, deepseek-v4.md §5.4): row r reads its input at
// x[t, (r / group_rows) · group_offset …], so G groups of rows each see their own slice of x.
//
// Kernels, grid-stride over the rows (the decoder caps the grid at the blocks that fit on the device at once,
// linear_resident_blocks()), 16-byte weight loads, x read through L1 (every warp reads the same x):
// - one token: one warp per output row at a time; four weight loads in flight per lane before the first
//   use, the next four requested before the current ones are used;
// - tiles of up to kTileTokens tokens (prefill chunks, batched decode steps): a warp takes kTileRows rows
//   and a slice of their columns at a time, each token's x chunk loaded once for all the rows; the
//   kTileSplit slices of a row group meet in shared memory. With one row per warp the tile's float inputs
//   were 16× the bytes of its bf16 weights, and L1, not memory, bounded the pass (a batch-8 step's
//   products took 3.3× the time of batch 1's); the column slices keep as many warps streaming as rows.
//   Grouped inputs whose groups a warp's rows would straddle take the one-row-per-warp kernel.
// Requires cols % 8 == 0.
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
inline constexpr int kTileRows = 4;    // rows per warp in a tile kernel: one x load serves them all
inline constexpr int kTileSplit = 4;   // warps sharing a row group, each summing a slice of its columns
inline constexpr int kTileGroups = 2;  // row groups per block
inline constexpr int kLinearWarps = 8;
inline constexpr int kUnroll = 4;  // 16-byte weight loads per lane in flight
inline constexpr std::int64_t kL2PrefetchBytes = 16 << 20;  // of a matrix, prefetched before the inputs are ready

__device__ __forceinline__ void prefetch_l2(void const* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Asks L2 for the rows [first_row + k · row_step, + rows_per_step) of W that lie within the first
// kL2PrefetchBytes of the matrix (weights only, which nothing writes: safe before the wait).
template <class T>
__device__ __forceinline__ void prefetch_rows(LinearArguments<T> const& p, std::int64_t first_row, std::int64_t row_step, int rows_per_step) {
  int const lane = static_cast<int>(threadIdx.x % 32);
  std::int64_t const row_bytes = p.cols * static_cast<std::int64_t>(sizeof(T));
  std::int64_t const limit = min(p.rows, kL2PrefetchBytes / row_bytes);
  char const* base = reinterpret_cast<char const*>(p.w);
  for (std::int64_t row0 = first_row; row0 < limit; row0 += row_step)
    for (std::int64_t row = row0; row < min(limit, row0 + rows_per_step); ++row)
      for (std::int64_t b = lane * 128; b < row_bytes; b += 32 * 128) prefetch_l2(base + row * row_bytes + b);
}

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
  if (p.overlap && blockIdx.y == 0) prefetch_rows(p, first, warps, 1);
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

// Chunk c of a warp's kTileRows rows (zeros for rows past the matrix and chunks past the row).
template <class T>
__device__ __forceinline__ void load_tile_rows(LinearArguments<T> const& p, std::int64_t r0, int c, int chunks, float (&wv)[kTileRows][8]) {
#pragma unroll
  for (int i = 0; i < kTileRows; ++i) {
    if (r0 + i < p.rows && c < chunks) {
      load8_stream(p.w + (r0 + i) * p.cols + static_cast<std::int64_t>(c) * 8, wv[i]);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) wv[i][e] = 0.0f;
    }
  }
}

// A block's warps: kTileGroups groups of kTileRows rows, each group's row split in kTileSplit column slices
// (one warp each; slice s holds chunks s·32 + lane + k·32·kTileSplit), whose sums meet in shared memory.
template <class T, int M>
__global__ void __launch_bounds__(kLinearWarps * 32) linear_tile_kernel(LinearArguments<T> const p) {
  static_assert(kTileGroups * kTileSplit == kLinearWarps);
  __shared__ float part[kLinearWarps][kTileRows * M];
  launch_dependents();
  int const lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  int const group = warp / kTileSplit, slice = warp % kTileSplit;
  constexpr int kBlockRows = kTileGroups * kTileRows;
  if (p.overlap && blockIdx.y == 0 && slice == 0)
    prefetch_rows(p, (static_cast<std::int64_t>(blockIdx.x) * kTileGroups + group) * kTileRows,
                  static_cast<std::int64_t>(gridDim.x) * kBlockRows, kTileRows);
  wait_for_prerequisites();
  std::int64_t const t0 = static_cast<std::int64_t>(blockIdx.y) * M;
  int const nt = static_cast<int>(min(static_cast<std::int64_t>(M), p.tokens - t0));
  int const chunks = static_cast<int>(p.cols / 8), step = 32 * kTileSplit;
  for (std::int64_t b0 = static_cast<std::int64_t>(blockIdx.x) * kBlockRows; b0 < p.rows; b0 += static_cast<std::int64_t>(gridDim.x) * kBlockRows) {
    std::int64_t const r0 = b0 + group * kTileRows;
    float const* x = p.x + t0 * p.x_stride + (p.group_rows > 0 ? r0 / p.group_rows : 0) * p.group_offset;
    float acc[kTileRows][M];
#pragma unroll
    for (int i = 0; i < kTileRows; ++i)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[i][m] = 0.0f;
    float wv[kTileRows][8];
    load_tile_rows(p, r0, slice * 32 + lane, chunks, wv);
    for (int c = slice * 32 + lane; c < chunks; c += step) {
      float next[kTileRows][8];
      load_tile_rows(p, r0, c + step, chunks, next);  // in flight while this chunk is used
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (m >= nt) break;
        float const* xm = x + m * p.x_stride + static_cast<std::int64_t>(c) * 8;
        float4 const a = *reinterpret_cast<float4 const*>(xm), b = *reinterpret_cast<float4 const*>(xm + 4);
#pragma unroll
        for (int i = 0; i < kTileRows; ++i)
          acc[i][m] += wv[i][0] * a.x + wv[i][1] * a.y + wv[i][2] * a.z + wv[i][3] * a.w + wv[i][4] * b.x + wv[i][5] * b.y +
                       wv[i][6] * b.z + wv[i][7] * b.w;
      }
#pragma unroll
      for (int i = 0; i < kTileRows; ++i)
#pragma unroll
        for (int e = 0; e < 8; ++e) wv[i][e] = next[i][e];
    }
#pragma unroll
    for (int i = 0; i < kTileRows; ++i)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float const sum = warp_sum(acc[i][m]);
        if (lane == 0) part[warp][i * M + m] = sum;
      }
    __syncthreads();
    for (int v = static_cast<int>(threadIdx.x); v < kTileGroups * kTileRows * M; v += blockDim.x) {
      int const g = v / (kTileRows * M), i = v / M % kTileRows, m = v % M;
      std::int64_t const row = b0 + g * kTileRows + i;
      if (m < nt && row < p.rows) {
        float sum = 0.0f;
        for (int s2 = 0; s2 < kTileSplit; ++s2) sum += part[g * kTileSplit + s2][i * M + m];
        p.y[(t0 + m) * p.y_stride + row] = sum;
      }
    }
    __syncthreads();  // part is read before the next rows overwrite it
  }
}

// Whether a warp's kTileRows consecutive rows always read the same input group.
template <class T>
bool tile_rows_share_inputs(LinearArguments<T> const& a) {
  return a.group_rows == 0 || a.group_rows % kTileRows == 0;
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
  if (!detail::tile_rows_share_inputs(a))
    return detail::launch("deepseek_v4 linear_kernel", a.overlap, detail::linear_kernel<T, detail::kTileTokens>, dim3(blocks, tiles),
                          threads, 0, a.stream, a);
  auto const tile_blocks = static_cast<unsigned>(
      std::min(detail::ceil_div(a.rows, detail::kTileGroups * detail::kTileRows), a.max_blocks > 0 ? a.max_blocks : INT32_MAX));
  return detail::launch("deepseek_v4 linear_tile_kernel", a.overlap, detail::linear_tile_kernel<T, detail::kTileTokens>,
                        dim3(tile_blocks, tiles), threads, 0, a.stream, a);
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
    FLASHMEMORY_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, detail::linear_tile_kernel<T, detail::kTileTokens>,
                                                                         detail::kLinearWarps * 32, 0));
  return sms * std::max(per_sm, 1);
}

}  // namespace flashmemory::models::deepseek_v4::cuda
