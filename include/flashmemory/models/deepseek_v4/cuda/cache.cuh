// flashmemory/models/deepseek_v4/cuda/cache.cuh — the KV state of a batch of sequences on the GPU, the device
// twin of KvCache (cache.hpp), sized once for a maximum context so that no decode step allocates. Every
// buffer holds [sequences, …]: sequence b's part is slice b, so one launch of a batched decode step finds
// every sequence's rows from the shapes alone.
//
// Per layer: the window ring [W, d] (storage type); CSA and HCA layers a compressor (float32 state as the
// reference keeps it, entry pool [capacity / ratio, d] in the storage type); CSA layers also the indexer
// compressor with its pool of index keys [capacity / 4, d_I]. Everything is resident: the FullResidentKv
// policy. (The index scores the top-k reads are the decoder's, one row per sequence of a batch.)
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/cuda/compressor.cuh>
#include <flashmemory/models/deepseek_v4/cuda/detail/common.cuh>
#include <flashmemory/models/deepseek_v4/cuda/weights.cuh>

#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace flashmemory::models::deepseek_v4::cuda {

namespace detail {

static __global__ void fill_kernel(float* p, std::int64_t n, float value) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    p[i] = value;
}

// Uniform values in [−√3, √3) (unit RMS, like the normalised rows the cache holds) from a counter hash.
template <class T>
__global__ void random_fill_kernel(T* p, std::int64_t n, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    float const u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    p[i] = from_float<T>((2.0f * u - 1.0f) * 1.7320508f);
  }
}

inline void fill(float* p, std::int64_t n, float value, cudaStream_t stream) {
  if (n == 0) return;
  fill_kernel<<<static_cast<unsigned>(std::min<std::int64_t>(ceil_div(n, 256), 1024)), 256, 0, stream>>>(p, n, value);
  ::flashmemory::cuda::launch_status("deepseek_v4 fill_kernel", __FILE__, __LINE__).throw_if_error();
}

template <class T>
void random_fill(T* p, std::int64_t n, std::uint64_t seed, cudaStream_t stream) {
  if (n == 0) return;
  random_fill_kernel<T><<<static_cast<unsigned>(std::min<std::int64_t>(ceil_div(n, 256), 4096)), 256, 0, stream>>>(p, n, seed);
  ::flashmemory::cuda::launch_status("deepseek_v4 random_fill_kernel", __FILE__, __LINE__).throw_if_error();
}

}  // namespace detail

template <storage_element T>
struct DeviceCompressorState {
  int ratio = 0, width = 0;
  bool overlap = false;
  std::int64_t capacity = 0;  // entries per sequence
  DeviceBuffer<float> kv, gate, prev_kv, prev_gate;  // [sequences, ratio, c·n], [sequences, ratio, n]
  DeviceBuffer<T> pool;                              // [sequences, capacity, n]

  DeviceCompressorState(int ratio_, int width_, bool overlap_, std::int64_t capacity_, std::int64_t sequences, std::string const& what)
      : ratio(ratio_), width(width_), overlap(overlap_), capacity(capacity_),
        kv(static_cast<std::size_t>(sequences * ratio_ * (overlap_ ? 2 : 1) * width_), what + " window values"),
        gate(kv.size(), what + " window gates"),
        prev_kv(overlap_ ? static_cast<std::size_t>(sequences * ratio_ * width_) : 0, what + " previous values"),
        prev_gate(prev_kv.size(), what + " previous gates"),
        pool(static_cast<std::size_t>(sequences * capacity * width_), what + " entries") {}

  // Sequence b empty: no buffered token, no previous window (gates −∞), no entry.
  void reset(std::int64_t b, cudaStream_t stream) {
    std::int64_t const cn = ratio * (overlap ? 2 : 1) * width, n = overlap ? ratio * width : 0;
    FLASHMEMORY_CUDA_CHECK(cudaMemsetAsync(kv.data() + b * cn, 0, static_cast<std::size_t>(cn) * sizeof(float), stream));
    FLASHMEMORY_CUDA_CHECK(cudaMemsetAsync(gate.data() + b * cn, 0, static_cast<std::size_t>(cn) * sizeof(float), stream));
    if (n == 0) return;
    FLASHMEMORY_CUDA_CHECK(cudaMemsetAsync(prev_kv.data() + b * n, 0, static_cast<std::size_t>(n) * sizeof(float), stream));
    detail::fill(prev_gate.data() + b * n, n, detail::kNegInf, stream);
  }

  // The state and pool of sequence b (of every sequence, from b = 0, for a batched step) for kv_step(),
  // reading this chunk's projections.
  CompressorStep<T> step(float const* ape, float const* norm, float const* values, float const* gates, std::int64_t stride,
                         std::int64_t b = 0) {
    std::int64_t const cn = ratio * (overlap ? 2 : 1) * width, n = ratio * width;
    return {kv.data() + b * cn, gate.data() + b * cn, overlap ? prev_kv.data() + b * n : nullptr, overlap ? prev_gate.data() + b * n : nullptr,
            pool.data() + b * capacity * width, capacity, ratio, width, overlap, ape, norm, values, gates, stride, {}};
  }

  T* pool_of(std::int64_t b) { return pool.data() + b * capacity * width; }
};

template <storage_element T>
struct DeviceLayerCache {
  LayerKind kind = LayerKind::sliding;
  std::int64_t window_rows = 0, dim = 0;
  DeviceBuffer<T> window;  // [sequences, W, d]
  std::optional<DeviceCompressorState<T>> compressor, indexer;

  // `paged`: a paged KV controller keeps this CSA layer's entries and index keys (in its reserve), so the
  // layer holds only the compressor states.
  DeviceLayerCache(Config const& c, index_t layer, index_t max_context, bool paged = false, std::int64_t sequences = 1)
      : kind(c.layer_types[static_cast<std::size_t>(layer)]), window_rows(c.sliding_window), dim(c.head_dim),
        window(static_cast<std::size_t>(sequences * c.sliding_window * c.head_dim), "layer " + std::to_string(layer) + " window") {
    std::string const name = "layer " + std::to_string(layer);
    paged = paged && kind == LayerKind::csa;
    auto const ratio = c.compress_ratio(layer);
    if (kind != LayerKind::sliding)
      compressor.emplace(static_cast<int>(ratio), static_cast<int>(c.head_dim), kind == LayerKind::csa,
                         paged ? 0 : max_context / ratio, sequences, name + " compressor");
    if (kind == LayerKind::csa) {
      indexer.emplace(static_cast<int>(c.compress_rate_csa), static_cast<int>(c.index_head_dim), true,
                      paged ? 0 : max_context / c.compress_rate_csa, sequences, name + " indexer");
    }
  }

  T* window_of(std::int64_t b) { return window.data() + b * window_rows * dim; }

  // Sequence b starts over.
  void reset(std::int64_t b, cudaStream_t stream) {
    if (compressor) compressor->reset(b, stream);
    if (indexer) indexer->reset(b, stream);
  }

  // Random rows in place of `tokens` tokens of history of sequence b (benchmarks): the whole window, and the
  // entries and index keys those tokens would have emitted. The compressor states stay empty.
  void fill_random(std::int64_t b, std::int64_t tokens, std::uint64_t seed, cudaStream_t stream) {
    detail::random_fill(window_of(b), window_rows * dim, seed, stream);
    if (compressor) detail::random_fill(compressor->pool_of(b), tokens / compressor->ratio * compressor->width, seed + 1, stream);
    if (indexer) detail::random_fill(indexer->pool_of(b), tokens / indexer->ratio * indexer->width, seed + 2, stream);
  }
};

}  // namespace flashmemory::models::deepseek_v4::cuda
