// flashmemory/models/deepseek_v4/cuda/indexer.cuh — the Lightning Indexer's scores for one token of a CSA
// layer (deepseek-v4.md §6.4 steps 3–5), the device twin of indexer::index_scores (indexer/reference.hpp):
//   score[w] = fold · Σ_h iw[h] · ReLU(⟨qI[h], K[w]⟩)     for the causal entries w < (position + 1) / ratio
// with fold = (n_I · d_I)^(−1/2). Entries at or past the causal count are not written: the decoder keeps them
// at −∞ (it fills the buffer at reset, and entries only ever become causal), so the top-k over the whole
// buffer (fm::indexer::cuda::TopK) sees exactly the causal ones, whatever the step — graph-capture safe.
//
// With a row list (`rows`, a paged KV controller's: lsa/cuda/decoder_lookahead.cuh) the keys are the rows
// of a reserve: every row r < capacity is scored, −∞ where rows[r] < 0 (not readable), fixed-shape as well.
//
// A batched decode step (`sequences` > 1): one token of each sequence in one launch, blockIdx.y = b, with
// sequence b's query and head weights q_stride and weights_stride further on, its position at position[b],
// and its keys and scores slice b of [sequences, capacity, …] buffers.
//
// fm::indexer::cuda::IndexScores is the tensor-core kernel for DeepSeek's 64/128 × 128 indexer, but it
// takes the number of keys from the host; this one reads the causal count from device memory and serves
// any head count and width (the test fixtures have 4–16 heads of 16–32 channels).
//
// Kernel: tiles of 32 entries, one per lane; the eight warps of a block split the heads, each accumulating
// eight heads' dot products per pass over the entry's key row (the other warps' passes hit L1), the token's
// queries and head weights in shared memory (read as broadcasts); the warps' sums meet in shared memory.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/models/deepseek_v4/cuda/detail/common.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace flashmemory::models::deepseek_v4::cuda {

template <storage_element T>
struct IndexScoreArguments {
  float const* q = nullptr;        // [heads, dim] this token's roped indexer queries
  float const* weights = nullptr;  // [heads] head weights (x · weights_projᵀ)
  float fold = 1.0f;
  T const* keys = nullptr;  // [capacity, dim] index keys
  std::int64_t capacity = 0;
  int heads = 0, dim = 0, ratio = 0;
  std::int64_t const* position = nullptr;  // device: position of token 0 of the chunk
  std::int64_t token = 0;
  float* scores = nullptr;  // [capacity]
  cudaStream_t stream = nullptr;
  bool overlap = false;  // programmatic dependent launch (detail/common.cuh)
  std::int32_t const* rows = nullptr;  // optional [capacity]: key r is readable iff rows[r] >= 0
  int sequences = 1;                   // a batched step (see above; no row list)
  std::int64_t q_stride = 0, weights_stride = 0;
};

namespace detail {

inline constexpr int kScoreEntries = 32;  // entries per tile: one per lane
inline constexpr int kScoreWarps = 8;     // the warps of a block share the heads of a tile
inline constexpr int kScoreHeads = 8;     // heads per pass over a key row
inline constexpr int kMaxScoreBlocks = 1024;

template <class T>
__global__ void __launch_bounds__(kScoreWarps * 32) index_score_kernel(IndexScoreArguments<T> const p) {
  enter();
  extern __shared__ __align__(16) float smem[];  // q [heads, dim] | weights [heads] | per-warp sums [warps][32]
  std::int64_t const b = blockIdx.y;
  std::int64_t const count = p.rows ? p.capacity : (p.position[b] + p.token + 1) / p.ratio;
  if (static_cast<std::int64_t>(blockIdx.x) * kScoreEntries >= count) return;  // block-uniform
  float* q = smem;
  float* hw = q + p.heads * p.dim;
  float* part = hw + p.heads;
  int const tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  for (int i = tid; i < p.heads * p.dim; i += blockDim.x) q[i] = p.q[b * p.q_stride + i];
  for (int i = tid; i < p.heads; i += blockDim.x) hw[i] = p.weights[b * p.weights_stride + i];
  T const* const keys = p.keys + b * p.capacity * p.dim;
  float* const scores = p.scores + b * p.capacity;
  int const per_warp = (p.heads + kScoreWarps - 1) / kScoreWarps;
  int const h_begin = warp * per_warp, h_end = min(p.heads, h_begin + per_warp);
  for (std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kScoreEntries; first < count;
       first += static_cast<std::int64_t>(gridDim.x) * kScoreEntries) {
    __syncthreads();  // q staged; the previous tile's sums consumed
    std::int64_t const w = first + lane;
    bool const live = w < count && (!p.rows || p.rows[w] >= 0);
    float sum = 0.0f;
    if (live) {
      T const* key = keys + w * p.dim;
      for (int h0 = h_begin; h0 < h_end; h0 += kScoreHeads) {
        float acc[kScoreHeads] = {};
        for (int c = 0; c < p.dim; c += 8) {
          float k[8];
          load8(key + c, k);
#pragma unroll
          for (int j = 0; j < kScoreHeads; ++j) {
            if (h0 + j >= h_end) break;
            float4 const a = *reinterpret_cast<float4 const*>(q + (h0 + j) * p.dim + c);
            float4 const b = *reinterpret_cast<float4 const*>(q + (h0 + j) * p.dim + c + 4);
            acc[j] += a.x * k[0] + a.y * k[1] + a.z * k[2] + a.w * k[3] + b.x * k[4] + b.y * k[5] + b.z * k[6] + b.w * k[7];
          }
        }
#pragma unroll
        for (int j = 0; j < kScoreHeads; ++j)
          if (h0 + j < h_end) sum += hw[h0 + j] * fmaxf(acc[j], 0.0f);
      }
    }
    part[warp * 32 + lane] = sum;
    __syncthreads();
    if (warp == 0 && w < count) {
      float total = 0.0f;
      for (int i = 0; i < kScoreWarps; ++i) total += part[i * 32 + lane];
      scores[w] = live ? total * p.fold : kNegInf;
    }
  }
}

}  // namespace detail

template <storage_element T>
Status index_scores(IndexScoreArguments<T> const& a) {
  if (a.heads <= 0 || a.dim <= 0 || a.dim % 8 != 0 || a.ratio <= 0)
    return Status::failure(errc::unsupported, "index scores (CUDA): ", a.heads, " heads of ", a.dim,
                           " channels, ratio ", a.ratio, " (width must be a positive multiple of 8)");
  if (!a.q || !a.weights || !a.keys || !a.scores || !a.position)
    return Status::failure(errc::invalid_argument, "index scores (CUDA): null argument");
  std::size_t const smem = (static_cast<std::size_t>(a.heads) * a.dim + a.heads + detail::kScoreWarps * 32) * sizeof(float);
  if (smem > 48 * 1024) return Status::failure(errc::unsupported, "index scores (CUDA): ", a.heads, " × ", a.dim, " queries");
  if (a.sequences < 1 || a.sequences > 65535 || (a.sequences > 1 && a.rows))
    return Status::failure(errc::invalid_argument, "index scores (CUDA): ", a.sequences, " sequences", a.rows ? " with a row list" : "");
  if (a.capacity == 0) return Status::success();
  auto const blocks = static_cast<unsigned>(std::min<std::int64_t>(detail::ceil_div(a.capacity, detail::kScoreEntries), detail::kMaxScoreBlocks));
  return detail::launch("deepseek_v4 index_score_kernel", a.overlap, detail::index_score_kernel<T>,
                        dim3(blocks, static_cast<unsigned>(a.sequences)),
                        detail::kScoreWarps * 32, smem, a.stream, a);
}

}  // namespace flashmemory::models::deepseek_v4::cuda
