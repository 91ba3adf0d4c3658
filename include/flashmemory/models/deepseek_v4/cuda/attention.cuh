// flashmemory/models/deepseek_v4/cuda/attention.cuh — core attention of one query token over its window
// ring ∪ its compressed entries ∪ the per-head sink, then the inverse RoPE of the output (deepseek-v4.md
// §5.3, §5.4 step 1, §6): the device twin of attention::SparseDecodeReference followed by Rope::apply(…,
// inverse). Keys are values (one shared latent head).
//
// The visible rows of the token at position p (read from device memory, so a captured step stays valid):
//   window   rows 0 … min(p + 1, W) − 1 of the ring (all of them are in the window; order is irrelevant)
//   pool     PoolRows::none     nothing (sliding-only layers)
//            PoolRows::causal   entries 0 … (p + 1)/ratio − 1 (HCA: every emitted entry)
//            PoolRows::selected the `slots` entries listed in `selected` (CSA top-k), −1 = unused slot
// fm::attention::cuda::SparseDecode is the tensor-core kernel for DeepSeek's 512-wide latent and 64·k heads;
// this one serves any head count and width up to 512 (the test fixtures, and models with 16 or 32 heads).
//
// Algorithm (FlashDecoding): grid (splits, heads); a block takes one head and a contiguous share of the
// token's rows, each warp an online softmax over every fourth group of four rows (four rows' loads in
// flight), the warps merged in shared memory into the split's (max, sum, unnormalised output). A second
// kernel merges the splits with the sink, normalises, and undoes the RoPE. Float32 throughout.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/models/deepseek_v4/cuda/detail/common.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace flashmemory::models::deepseek_v4::cuda {

enum class PoolRows : std::uint8_t { none, causal, selected };

inline constexpr int kMaxAttentionDim = 512;
inline constexpr int kMaxAttentionSplits = 64;

template <storage_element T>
struct AttentionArguments {
  float const* q = nullptr;  // [heads, dim] this token's normed, roped queries
  T const* window = nullptr;  // [window_rows, dim] ring
  int window_rows = 0;
  T const* pool = nullptr;  // [pool_rows, dim] compressed entries
  std::int64_t pool_rows = 0;
  PoolRows mode = PoolRows::none;
  int ratio = 1;                              // causal: entries = (p + 1) / ratio
  std::int32_t const* selected = nullptr;     // selected: [slots]
  int slots = 0;
  float const* sink = nullptr;  // [heads]
  float scale = 0.0f;           // d^(−1/2)
  int heads = 0, dim = 0;
  std::int64_t const* position = nullptr;  // device: position of token 0 of the chunk
  std::int64_t token = 0;
  int splits = 1;              // at most kMaxAttentionSplits
  float* partial_o = nullptr;  // workspace [heads, splits, dim]
  float* partial_ml = nullptr;  // workspace [heads, splits, 2]
  DeviceRope rope;              // the layer's variant, for the inverse rotation
  float* out = nullptr;         // [heads, dim]
  cudaStream_t stream = nullptr;
  bool overlap = false;         // programmatic dependent launch (detail/common.cuh)
  // A batched decode step: one token of each of `sequences` sequences in one launch. Sequence b's query
  // and output are q_stride and out_stride further on, its position is position[b], and its window, pool,
  // selection and workspace are slice b of buffers holding [sequences, …] of each.
  int sequences = 1;
  std::int64_t q_stride = 0, out_stride = 0;
};

// Splits that keep about 32 rows per block for at most `max_rows` rows per token.
inline int attention_splits(std::int64_t max_rows) {
  return static_cast<int>(std::clamp<std::int64_t>((max_rows + 31) / 32, 1, kMaxAttentionSplits));
}

namespace detail {

inline constexpr int kAttentionWarps = 4;
inline constexpr int kRowsPerWarpStep = 4;
inline constexpr int kAttentionChunks = kMaxAttentionDim / 8 / 32;  // 8-channel chunks per lane

// Sequence b's part of a batched step's arguments.
template <class T>
__device__ AttentionArguments<T> sequence_slice(AttentionArguments<T> p, std::int64_t b) {
  p.q += b * p.q_stride;
  p.out += b * p.out_stride;
  p.position += b;
  p.window += b * p.window_rows * p.dim;
  if (p.pool) p.pool += b * p.pool_rows * p.dim;
  if (p.selected) p.selected += b * p.slots;
  p.partial_o += b * p.heads * p.splits * p.dim;
  p.partial_ml += b * p.heads * p.splits * 2;
  return p;
}

template <class T>
__global__ void __launch_bounds__(kAttentionWarps * 32) attention_split_kernel(AttentionArguments<T> const batch) {
  enter();
  AttentionArguments<T> const p = sequence_slice(batch, blockIdx.z);
  extern __shared__ __align__(16) float smem[];  // per-warp (m, l) [warps][2] | per-warp o [warps][dim]
  int const split = static_cast<int>(blockIdx.x), h = static_cast<int>(blockIdx.y);
  int const lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  int const chunks = p.dim / 8;
  std::int64_t const pos = *p.position + p.token;
  std::int64_t const n_window = min(pos + 1, static_cast<std::int64_t>(p.window_rows));
  std::int64_t const n_pool = p.mode == PoolRows::causal     ? min((pos + 1) / p.ratio, p.pool_rows)
                              : p.mode == PoolRows::selected ? p.slots
                                                             : 0;
  std::int64_t const total = n_window + n_pool, per = (total + p.splits - 1) / p.splits;
  std::int64_t const begin = split * per, end = min(total, begin + per);

  // Lanes past the row's chunks hold zeros: they still enter the dot products (times zero rows), and an
  // uninitialised q there is undefined behaviour the compiler may exploit (e.g. by dropping the zeroing
  // of kv), which gave garbage scores for dim < 512 depending on leftover register contents.
  float q[kAttentionChunks][8] = {};
#pragma unroll
  for (int u = 0; u < kAttentionChunks; ++u) {
    int const c = lane + 32 * u;
    if (c < chunks) {
      float const* src = p.q + static_cast<std::int64_t>(h) * p.dim + c * 8;
      float4 const a = *reinterpret_cast<float4 const*>(src), b = *reinterpret_cast<float4 const*>(src + 4);
      q[u][0] = a.x, q[u][1] = a.y, q[u][2] = a.z, q[u][3] = a.w, q[u][4] = b.x, q[u][5] = b.y, q[u][6] = b.z, q[u][7] = b.w;
    }
  }
  float m = kNegInf, l = 0.0f, o[kAttentionChunks][8] = {};

  for (std::int64_t j0 = begin + warp * kRowsPerWarpStep; j0 < end; j0 += kAttentionWarps * kRowsPerWarpStep) {
    T const* rows[kRowsPerWarpStep];
#pragma unroll
    for (int r = 0; r < kRowsPerWarpStep; ++r) {
      std::int64_t const j = j0 + r;
      T const* row = nullptr;
      if (j < end) {
        if (j < n_window) {
          row = p.window + j * p.dim;
        } else {
          std::int64_t const idx = p.mode == PoolRows::selected ? p.selected[j - n_window] : j - n_window;
          if (idx >= 0 && idx < p.pool_rows) row = p.pool + idx * p.dim;
        }
      }
      rows[r] = row;
    }
    float kv[kRowsPerWarpStep][kAttentionChunks][8];
    float s[kRowsPerWarpStep];
#pragma unroll
    for (int r = 0; r < kRowsPerWarpStep; ++r)
#pragma unroll
      for (int u = 0; u < kAttentionChunks; ++u) {
        int const c = lane + 32 * u;
        if (rows[r] && c < chunks) load8(rows[r] + c * 8, kv[r][u]);
        else
#pragma unroll
          for (int e = 0; e < 8; ++e) kv[r][u][e] = 0.0f;
      }
#pragma unroll
    for (int r = 0; r < kRowsPerWarpStep; ++r) {
      float d = 0.0f;
#pragma unroll
      for (int u = 0; u < kAttentionChunks; ++u)
#pragma unroll
        for (int e = 0; e < 8; ++e) d += q[u][e] * kv[r][u][e];
      d = warp_sum(d);
      s[r] = rows[r] ? d * p.scale : kNegInf;
    }
    float step_max = s[0];
#pragma unroll
    for (int r = 1; r < kRowsPerWarpStep; ++r) step_max = fmaxf(step_max, s[r]);
    if (step_max == kNegInf) continue;  // warp-uniform: no visible row in this group
    float const m_new = fmaxf(m, step_max);
    float const corr = expf(m - m_new);  // 0 while m is −∞
    l *= corr;
#pragma unroll
    for (int u = 0; u < kAttentionChunks; ++u)
#pragma unroll
      for (int e = 0; e < 8; ++e) o[u][e] *= corr;
#pragma unroll
    for (int r = 0; r < kRowsPerWarpStep; ++r) {
      float const pr = expf(s[r] - m_new);  // 0 for masked rows
      l += pr;
#pragma unroll
      for (int u = 0; u < kAttentionChunks; ++u)
#pragma unroll
        for (int e = 0; e < 8; ++e) o[u][e] += pr * kv[r][u][e];
    }
    m = m_new;
  }

  // Merge the warps of the block into the split's partial result.
  float* ml = smem;
  float* wo = smem + 2 * kAttentionWarps;
  if (lane == 0) ml[2 * warp] = m, ml[2 * warp + 1] = l;
#pragma unroll
  for (int u = 0; u < kAttentionChunks; ++u) {
    int const c = lane + 32 * u;
    if (c < chunks)
#pragma unroll
      for (int e = 0; e < 8; ++e) wo[warp * p.dim + c * 8 + e] = o[u][e];
  }
  __syncthreads();
  float mb = kNegInf;
  for (int w = 0; w < kAttentionWarps; ++w) mb = fmaxf(mb, ml[2 * w]);
  float weight[kAttentionWarps];
  float lb = 0.0f;
#pragma unroll
  for (int w = 0; w < kAttentionWarps; ++w) {
    weight[w] = ml[2 * w] == kNegInf ? 0.0f : expf(ml[2 * w] - mb);
    lb += weight[w] * ml[2 * w + 1];
  }
  std::int64_t const part = static_cast<std::int64_t>(h) * p.splits + split;
  for (int c = static_cast<int>(threadIdx.x); c < p.dim; c += blockDim.x) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kAttentionWarps; ++w) v += weight[w] * wo[w * p.dim + c];
    p.partial_o[part * p.dim + c] = v;
  }
  if (threadIdx.x == 0) p.partial_ml[2 * part] = mb, p.partial_ml[2 * part + 1] = lb;
}

template <class T>
__global__ void attention_combine_kernel(AttentionArguments<T> const batch) {
  enter();
  AttentionArguments<T> const p = sequence_slice(batch, blockIdx.y);
  __shared__ float weight[kMaxAttentionSplits];
  __shared__ float denom;
  int const h = static_cast<int>(blockIdx.x);
  float const* ml = p.partial_ml + static_cast<std::int64_t>(h) * p.splits * 2;
  float const sink = p.sink[h];
  float mx = sink;
  for (int s = 0; s < p.splits; ++s) mx = fmaxf(mx, ml[2 * s]);
  for (int s = static_cast<int>(threadIdx.x); s < p.splits; s += blockDim.x)
    weight[s] = ml[2 * s] == kNegInf ? 0.0f : expf(ml[2 * s] - mx);
  __syncthreads();
  if (threadIdx.x == 0) {
    float d = expf(sink - mx);
    for (int s = 0; s < p.splits; ++s) d += weight[s] * ml[2 * s + 1];
    denom = d;
  }
  __syncthreads();
  std::int64_t const pos = *p.position + p.token;
  int const first_rope = p.dim - 2 * p.rope.pairs;
  float const* po = p.partial_o + static_cast<std::int64_t>(h) * p.splits * p.dim;
  float* out = p.out + static_cast<std::int64_t>(h) * p.dim;
  for (int i = static_cast<int>(threadIdx.x); i < p.dim / 2; i += blockDim.x) {
    float a = 0.0f, b = 0.0f;
    for (int s = 0; s < p.splits; ++s) {
      a += weight[s] * po[s * p.dim + 2 * i];
      b += weight[s] * po[s * p.dim + 2 * i + 1];
    }
    a /= denom;
    b /= denom;
    if (2 * i >= first_rope) rope_pair(p.rope, (2 * i - first_rope) / 2, pos, /*inverse=*/true, a, b);
    out[2 * i] = a;
    out[2 * i + 1] = b;
  }
}

}  // namespace detail

template <storage_element T>
Status can_implement(AttentionArguments<T> const& a) {
  if (a.dim <= 0 || a.dim % 8 != 0 || a.dim > kMaxAttentionDim)
    return Status::failure(errc::unsupported, "attention (CUDA): head_dim ", a.dim, " (a multiple of 8 up to ", kMaxAttentionDim, ")");
  if (a.dim % 2 != 0 || 2 * a.rope.pairs > a.dim || (a.dim - 2 * a.rope.pairs) % 2 != 0)
    return Status::failure(errc::bad_shape, "attention (CUDA): rope dims ", 2 * a.rope.pairs, " for head_dim ", a.dim);
  if (a.heads <= 0 || a.heads > 65535 || a.window_rows <= 0)
    return Status::failure(errc::invalid_argument, "attention (CUDA): ", a.heads, " heads, window of ", a.window_rows);
  if (a.splits < 1 || a.splits > kMaxAttentionSplits)
    return Status::failure(errc::invalid_argument, "attention (CUDA): ", a.splits, " splits (1 to ", kMaxAttentionSplits, ")");
  if (a.mode == PoolRows::causal && (a.ratio <= 0 || !a.pool))
    return Status::failure(errc::invalid_argument, "attention (CUDA): causal pool rows need the pool and its ratio");
  if (a.mode == PoolRows::selected && a.slots > 0 && (!a.selected || !a.pool))
    return Status::failure(errc::invalid_argument, "attention (CUDA): selected rows need the pool and the selection");
  if (!a.q || !a.window || !a.sink || !a.position || !a.partial_o || !a.partial_ml || !a.out)
    return Status::failure(errc::invalid_argument, "attention (CUDA): null argument");
  if (a.sequences < 1 || a.sequences > 65535)
    return Status::failure(errc::invalid_argument, "attention (CUDA): ", a.sequences, " sequences (1 to 65535)");
  return Status::success();
}

// Enqueues both kernels; the workspace holds sequences · heads · splits · (dim + 2) floats.
template <storage_element T>
Status attention(AttentionArguments<T> const& a) {
  if (Status s = can_implement(a); !s) return s;
  std::size_t const smem = (2 * detail::kAttentionWarps + static_cast<std::size_t>(detail::kAttentionWarps) * a.dim) * sizeof(float);
  if (Status s = detail::launch("deepseek_v4 attention_split_kernel", a.overlap, detail::attention_split_kernel<T>,
                                dim3(static_cast<unsigned>(a.splits), static_cast<unsigned>(a.heads), static_cast<unsigned>(a.sequences)),
                                detail::kAttentionWarps * 32, smem,
                                a.stream, a);
      !s)
    return s;
  return detail::launch("deepseek_v4 attention_combine_kernel", a.overlap, detail::attention_combine_kernel<T>,
                        dim3(static_cast<unsigned>(a.heads), static_cast<unsigned>(a.sequences)), 128, 0, a.stream, a);
}

}  // namespace flashmemory::models::deepseek_v4::cuda
