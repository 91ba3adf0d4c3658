// flashmemory/models/deepseek_v4/cuda/norm_rope.cuh — RMS norms and RoPE on rows of projections, the
// device twins of detail::rms_norm (detail/ops.hpp) and Rope::apply (rope.hpp).
//
// One launch serves up to kMaxNormRopeJobs kinds of rows of a chunk of tokens, e.g. after the first
// attention projection: q_residual = RMSNorm_w(x·wq_aᵀ; q_norm) and the window latent RoPE(RMSNorm_w(x·wkvᵀ;
// kv_norm)); after the second: every query head's unweighted norm + RoPE and the indexer heads' RoPE
// (deepseek-v4.md §5.1, §5.2, §6.4). Token t of the chunk sits at position *position + t; in a batched
// decode step (`batch`) token t is sequence t's and sits at position[t].
//
// Kernel: one block per (row, token); the row is staged in shared memory, normalised with a block
// reduction, its trailing rope channels rotated in pairs, and written out (in place is fine).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/models/deepseek_v4/cuda/detail/common.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace flashmemory::models::deepseek_v4::cuda {

inline constexpr int kMaxNormRopeJobs = 3;

// `rows` rows of n channels per token: row h of token t is src[t·src_stride + h·n …].
struct NormRopeJob {
  float const* src = nullptr;
  float* dst = nullptr;
  std::int64_t src_stride = 0, dst_stride = 0;
  int n = 0;
  int rows = 1;
  float const* weight = nullptr;  // [n] norm weight; null = unweighted
  bool normalize = true;
  bool rope = false;  // rotate the trailing rope channels at the token's position
};

struct NormRopeArguments {
  NormRopeJob jobs[kMaxNormRopeJobs];
  int count = 0;
  std::int64_t tokens = 0;
  std::int64_t const* position = nullptr;  // device: position of token 0, or of every token with `batch`
  bool batch = false;  // token t is the next token of sequence t (a batched decode step): at position[t]
  DeviceRope rope;
  double eps = 1e-6;
  cudaStream_t stream = nullptr;
  bool overlap = false;  // programmatic dependent launch (detail/common.cuh)
};

namespace detail {

inline constexpr int kNormRopeThreads = 128;

static __global__ void __launch_bounds__(kNormRopeThreads) norm_rope_kernel(NormRopeArguments const p) {
  enter();
  extern __shared__ __align__(16) float smem[];  // [33] reduction scratch, then the row
  float* scratch = smem;
  float* v = smem + 33;
  int job = 0, row = static_cast<int>(blockIdx.x);
  while (row >= p.jobs[job].rows) row -= p.jobs[job++].rows;  // block-uniform
  NormRopeJob const& j = p.jobs[job];
  std::int64_t const t = blockIdx.y;
  float const* src = j.src + t * j.src_stride + static_cast<std::int64_t>(row) * j.n;
  float* dst = j.dst + t * j.dst_stride + static_cast<std::int64_t>(row) * j.n;
  int const tid = static_cast<int>(threadIdx.x);

  float ss = 0.0f;
  for (int i = tid; i < j.n; i += blockDim.x) {
    float const x = src[i];
    v[i] = x;
    ss += x * x;
  }
  if (j.normalize) {
    ss = block_sum(ss, scratch);
    auto const r = static_cast<float>(1.0 / sqrt(static_cast<double>(ss) / j.n + p.eps));
    for (int i = tid; i < j.n; i += blockDim.x) v[i] = j.weight ? j.weight[i] * (v[i] * r) : v[i] * r;
  }
  __syncthreads();
  if (j.rope) {
    rope_block(p.rope, v, j.n, p.batch ? p.position[t] : *p.position + t, /*inverse=*/false);
    __syncthreads();
  }
  for (int i = tid; i < j.n; i += blockDim.x) dst[i] = v[i];
}

}  // namespace detail

inline Status norm_rope(NormRopeArguments const& a) {
  if (a.count < 1 || a.count > kMaxNormRopeJobs)
    return Status::failure(errc::invalid_argument, "norm_rope (CUDA): ", a.count, " jobs (1 to ", kMaxNormRopeJobs, ")");
  int rows = 0, width = 0;
  for (int i = 0; i < a.count; ++i) {
    NormRopeJob const& j = a.jobs[i];
    if (j.n <= 0 || j.rows <= 0 || !j.src || !j.dst)
      return Status::failure(errc::invalid_argument, "norm_rope (CUDA): job ", i, " has ", j.rows, " rows of ", j.n, " channels");
    if (j.rope && 2 * a.rope.pairs > j.n)
      return Status::failure(errc::bad_shape, "norm_rope (CUDA): rope dims ", 2 * a.rope.pairs, " exceed the row of ", j.n);
    rows += j.rows;
    width = std::max(width, j.n);
  }
  if (a.tokens == 0) return Status::success();
  if (a.tokens > 65535) return Status::failure(errc::unsupported, "norm_rope (CUDA): ", a.tokens, " tokens in one launch");
  std::size_t const smem = (33 + static_cast<std::size_t>(width)) * sizeof(float);
  if (smem > 48 * 1024) return Status::failure(errc::unsupported, "norm_rope (CUDA): rows of ", width, " channels");
  return detail::launch("deepseek_v4 norm_rope_kernel", a.overlap, detail::norm_rope_kernel,
                        dim3(static_cast<unsigned>(rows), static_cast<unsigned>(a.tokens)), detail::kNormRopeThreads, smem, a.stream, a);
}

}  // namespace flashmemory::models::deepseek_v4::cuda
