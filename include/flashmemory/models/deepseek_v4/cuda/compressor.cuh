// flashmemory/models/deepseek_v4/cuda/compressor.cuh — one token's KV update on the GPU: its window latent
// into the sliding ring and its projections into the layer's compressors, which emit an entry when their
// window closes (deepseek-v4.md §6.1, §6.2, §6.5) — the device twin of CompressorState::push (compressor.hpp).
//
// State of one compressor (float32, as the reference keeps it): the current window's values and gate
// logits (ape added) [ratio, c·n], and for the overlapping CSA kind the a-halves of the last complete
// window [ratio, n] (gates −∞ before the first). Nothing else crosses a token: the slot is position mod
// ratio and the entry index position / ratio, so a step reads its position from device memory and the same
// launch serves every step of a captured CUDA graph.
//
// Kernel: block 0 writes the window row; block 1 + c runs compressor c: store the slot, and when the window
// closes pool every channel with a softmax over its slots, RMS-norm, rotate at position w·ratio, append
// row w to the pool (storage type), and for CSA keep this window's a-halves for the next entry.
//
// A batched decode step (`sequences` > 1, the decoder's Options::batch): one token of each sequence in one
// launch, blockIdx.y = b. Sequence b's token is row token + b of the projections, sits at position[b] +
// token, and its window, states and pool are slice b of buffers that hold [sequences, …] of each.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/models/deepseek_v4/cuda/detail/common.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace flashmemory::models::deepseek_v4::cuda {

// Where a paged KV controller (LSA: lsa/cuda/decoder_lookahead.cuh) wants a compressor's entries: entry w
// goes to row w mod ring_rows of a ring (what the controller copies to its host mirror), and, when its page
// w / per is published in a cell (cells[page] ≥ 0), to row cell · per + w mod per of the pool, which it
// marks readable in the layer's row list. Unpaged (cells == nullptr): entry w is pool row w.
template <storage_element T>
struct PagedRows {
  std::int32_t const* cells = nullptr;  // [pages] page → published cell, −1 = none
  std::int32_t* readable = nullptr;     // [cells · per] row list: row r readable iff readable[r] == r
  int per = 0;                          // chunks per page
  T* ring = nullptr;                    // [ring_rows, width]
  std::int64_t ring_rows = 0;
};

// One compressor: its state, its pool and where this chunk's projections of it are.
template <storage_element T>
struct CompressorStep {
  float* kv = nullptr;         // [ratio, c·n] current window
  float* gate = nullptr;       // [ratio, c·n] its gate logits + ape
  float* prev_kv = nullptr;    // [ratio, n] a-halves of the last complete window (overlap only)
  float* prev_gate = nullptr;  // [ratio, n]
  T* pool = nullptr;           // [capacity, n] emitted entries
  std::int64_t capacity = 0;   // entries of a pool slice (batched steps)
  int ratio = 0, width = 0;    // m, n
  bool overlap = false;        // c = 2
  float const* ape = nullptr;   // [ratio, c·n]
  float const* norm = nullptr;  // [n]
  float const* values = nullptr;  // token t's C_t at values[t·stride …] (c·n)
  float const* gates = nullptr;   // token t's Z_t (without ape)
  std::int64_t stride = 0;
  PagedRows<T> paged;             // set by a paged KV controller
};

template <storage_element T>
struct KvStepArguments {
  std::int64_t const* position = nullptr;  // device: position of token 0 of the chunk [sequences]
  std::int64_t token = 0;                  // this step's token within the chunk
  int sequences = 1;                       // a batched step: one token of each (see above)
  float const* latent = nullptr;           // token t's window latent at latent[t·latent_stride …] (normed, roped)
  std::int64_t latent_stride = 0;
  T* window = nullptr;  // [window_rows, dim] ring: position p in row p mod window_rows
  int window_rows = 0, dim = 0;
  CompressorStep<T> compressors[2];
  int count = 0;  // compressors in use (0, 1 or 2)
  DeviceRope rope;
  double eps = 1e-6;
  cudaStream_t stream = nullptr;
  bool overlap = false;  // programmatic dependent launch (detail/common.cuh)
};

namespace detail {

inline constexpr int kKvStepThreads = 256;

// Sequence b's slice of a compressor's state and pool.
template <class T>
__device__ CompressorStep<T> sequence_slice(CompressorStep<T> c, std::int64_t b) {
  std::int64_t const cn = (c.overlap ? 2 : 1) * c.width;
  c.kv += b * c.ratio * cn;
  c.gate += b * c.ratio * cn;
  if (c.overlap) c.prev_kv += b * c.ratio * c.width, c.prev_gate += b * c.ratio * c.width;
  c.pool += b * c.capacity * c.width;
  return c;
}

template <class T>
__device__ void compressor_push(CompressorStep<T> const& c, std::int64_t pos, std::int64_t token, DeviceRope const& rope,
                                double eps, float* smem) {
  int const tid = static_cast<int>(threadIdx.x), n = c.width, m = c.ratio, cn = (c.overlap ? 2 : 1) * n;
  int const slot = static_cast<int>(pos % m);
  float const* values = c.values + token * c.stride;
  float const* gates = c.gates + token * c.stride;
  float const* ape = c.ape + static_cast<std::int64_t>(slot) * cn;
  for (int k = tid; k < cn; k += blockDim.x) {
    c.kv[slot * cn + k] = values[k];
    c.gate[slot * cn + k] = gates[k] + ape[k];
  }
  if ((pos + 1) % m != 0) return;  // block-uniform
  __syncthreads();

  // Pool channel k over the previous window's a-halves (CSA) and this window's own slice.
  float* scratch = smem;
  float* entry = smem + 33;
  int const own = c.overlap ? n : 0;
  int const prev = c.overlap ? m : 0;
  float ss = 0.0f;
  for (int k = tid; k < n; k += blockDim.x) {
    float mx = kNegInf;
    for (int j = 0; j < prev; ++j) mx = fmaxf(mx, c.prev_gate[j * n + k]);
    for (int j = 0; j < m; ++j) mx = fmaxf(mx, c.gate[j * cn + own + k]);
    float total = 0.0f, acc = 0.0f;  // softmax over the slots (gate −∞ → weight 0), weighted sum of the values
    for (int j = 0; j < prev; ++j) {
      float const e = expf(c.prev_gate[j * n + k] - mx);
      total += e;
      acc += e * c.prev_kv[j * n + k];
    }
    for (int j = 0; j < m; ++j) {
      float const e = expf(c.gate[j * cn + own + k] - mx);
      total += e;
      acc += e * c.kv[j * cn + own + k];
    }
    acc /= total;
    entry[k] = acc;
    ss += acc * acc;
  }
  ss = block_sum(ss, scratch);  // also orders every read of prev_* before the writes below
  auto const r = static_cast<float>(1.0 / sqrt(static_cast<double>(ss) / n + eps));
  for (int k = tid; k < n; k += blockDim.x) entry[k] = c.norm[k] * (entry[k] * r);
  __syncthreads();
  std::int64_t const w = pos / m;
  rope_block(rope, entry, n, w * m, /*inverse=*/false);
  __syncthreads();
  if (!c.paged.cells) {
    for (int k = tid; k < n; k += blockDim.x) c.pool[w * n + k] = from_float<T>(entry[k]);
  } else {
    PagedRows<T> const& pr = c.paged;
    for (int k = tid; k < n; k += blockDim.x) pr.ring[(w % pr.ring_rows) * n + k] = from_float<T>(entry[k]);
    if (std::int32_t const cell = pr.cells[w / pr.per]; cell >= 0) {
      auto const row = static_cast<std::int32_t>(cell * pr.per + w % pr.per);
      for (int k = tid; k < n; k += blockDim.x) c.pool[static_cast<std::int64_t>(row) * n + k] = from_float<T>(entry[k]);
      if (tid == 0) pr.readable[row] = row;
    }
  }
  if (c.overlap)
    for (int i = tid; i < m * n; i += blockDim.x) {
      int const j = i / n, k = i % n;
      c.prev_kv[i] = c.kv[j * cn + k];
      c.prev_gate[i] = c.gate[j * cn + k];
    }
}

template <class T>
__global__ void __launch_bounds__(kKvStepThreads) kv_step_kernel(KvStepArguments<T> const p) {
  enter();
  extern __shared__ __align__(16) float smem[];
  std::int64_t const b = blockIdx.y, pos = p.position[b] + p.token, row = p.token + b;
  if (blockIdx.x == 0) {
    float const* src = p.latent + row * p.latent_stride;
    T* dst = p.window + (b * p.window_rows + pos % p.window_rows) * p.dim;
    for (int k = static_cast<int>(threadIdx.x); k < p.dim; k += blockDim.x) dst[k] = from_float<T>(src[k]);
  } else {
    compressor_push(sequence_slice(p.compressors[blockIdx.x - 1], b), pos, row, p.rope, p.eps, smem);
  }
}

}  // namespace detail

template <storage_element T>
Status kv_step(KvStepArguments<T> const& a) {
  if (a.count < 0 || a.count > 2) return Status::failure(errc::invalid_argument, "kv_step (CUDA): ", a.count, " compressors");
  if (a.window_rows <= 0 || a.dim <= 0 || !a.window || !a.latent || !a.position)
    return Status::failure(errc::invalid_argument, "kv_step (CUDA): window [", a.window_rows, ", ", a.dim, "]");
  int width = 0;
  for (int i = 0; i < a.count; ++i) {
    CompressorStep<T> const& c = a.compressors[i];
    if (c.ratio <= 0 || c.width <= 0 || 2 * a.rope.pairs > c.width || !c.kv || !c.gate || (!c.pool && !c.paged.cells) || !c.ape || !c.norm ||
        !c.values || !c.gates || (c.overlap && (!c.prev_kv || !c.prev_gate)) ||
        (c.paged.cells && (!c.paged.readable || c.paged.per <= 0 || !c.paged.ring || c.paged.ring_rows <= 0)))
      return Status::failure(errc::invalid_argument, "kv_step (CUDA): compressor ", i, " (ratio ", c.ratio, ", width ", c.width,
                             ") is incomplete");
    if (a.sequences > 1 && (c.paged.cells || c.capacity <= 0))
      return Status::failure(errc::unsupported, "kv_step (CUDA): a batched step needs resident pools with their capacity (compressor ", i,
                             ")");
    width = std::max(width, c.width);
  }
  if (a.sequences < 1 || a.sequences > 65535)
    return Status::failure(errc::invalid_argument, "kv_step (CUDA): ", a.sequences, " sequences (1 to 65535)");
  std::size_t const smem = (33 + static_cast<std::size_t>(width)) * sizeof(float);
  if (smem > 48 * 1024) return Status::failure(errc::unsupported, "kv_step (CUDA): entries of ", width, " channels");
  return detail::launch("deepseek_v4 kv_step_kernel", a.overlap, detail::kv_step_kernel<T>,
                        dim3(static_cast<unsigned>(1 + a.count), static_cast<unsigned>(a.sequences)), detail::kKvStepThreads, smem, a.stream,
                        a);
}

}  // namespace flashmemory::models::deepseek_v4::cuda
