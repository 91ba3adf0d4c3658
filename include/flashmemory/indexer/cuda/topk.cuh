// flashmemory/indexer/cuda/topk.cuh — masked top-k on the GPU: per row of scores, the indices of the k
// largest eligible scores, in the reference's order (indexer/reference.hpp: top_k).
//
// Eligible: allowed[c] (when a mask is given), and the score is neither NaN nor −∞. Output row b holds the
// selected indices by descending score, ties broken toward the lower index — the reference's order, so the
// result is deterministic and equal to top_k() element for element, ties included (−0 and +0 are equal).
// Slots past the number of eligible entries are −1 (an unused slot for the attention kernels). With `ids`,
// ids[c] is written instead of c (e.g. the pool row of the c-th resident entry).
//
// Algorithm: radix select over 64-bit keys by a thread-block cluster per row (up to 16 CTAs on Hopper,
// their shared memory joined through DSMEM). Each eligible score becomes
//   key = order(score) << 32 | (2^32 − 1 − c)
// where order() maps float bits to unsigned integers of the same order; the low half makes every key
// distinct and puts the lower index first among equal scores. Every CTA owns an interleaved share of the
// row. A pass histograms the next 11 bits of the keys that match the prefix fixed so far (warp-aggregated
// shared-memory atomics, robust to many equal scores); after one cluster barrier every CTA sums the
// cluster's histograms and fixes the same digit, where the count from the top reaches k. The passes stop
// as soon as the keys on the prefix are exactly the ones still needed (two passes for typical scores; the
// index bits break ties). Then each CTA lists its keys at or above the prefix, gathers the cluster's lists
// (≤ k keys) and writes each of its own keys at its rank among them. No workspace, one launch, no host
// synchronisation: graph-capture safe. Passes after the first re-read the row from L2.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace flashmemory::indexer::cuda {

struct TopKArguments {
  matrix_view<float const> scores;          // [B, n]
  vector_view<std::uint8_t const> allowed;  // [n] shared by all rows, or empty (all allowed)
  vector_view<std::int32_t const> ids;      // [n] values to write instead of indices, or empty
  matrix_view<std::int32_t> out;            // [B, k]
  void* stream = nullptr;
};

namespace detail {
namespace cg = cooperative_groups;

inline constexpr int kTopKThreads = 512;
inline constexpr int kMaxK = 2048;
inline constexpr int kDigitBits = 11;
inline constexpr int kBins = 1 << kDigitBits;
inline constexpr int kBinsPerThread = kBins / kTopKThreads;  // 4: one 16-byte vector of each CTA's histogram
inline constexpr int kMaxCluster = 16;
inline constexpr int kScoresPerCta = 8 * kTopKThreads * 4;  // a cluster grows by one CTA per 16K scores
static_assert(kBinsPerThread == 4);

struct TopKShared {
  alignas(16) unsigned int hist[2][kBins];  // this CTA's histogram; a pass writes one while the last is read
  unsigned long long mine[kMaxK];           // this CTA's selected keys
  unsigned long long all[kMaxK];            // the cluster's selected keys, CTA by CTA
  unsigned int warp_sums[kTopKThreads / 32];
  unsigned int offset[kMaxCluster + 1];     // where each CTA's keys start in `all`
  unsigned int n_mine;
  unsigned int digit, above, digit_count, total;
};

// Float bits → unsigned integer of the same order (negative floats reversed; −0 counts as +0).
__device__ __forceinline__ unsigned int order_bits(float x) {
  unsigned int const u = x == 0.0f ? 0u : __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ unsigned long long make_key(float score, unsigned int index) {
  return (static_cast<unsigned long long>(order_bits(score)) << 32) | (0xffffffffu - index);
}

__device__ __forceinline__ bool eligible(float score, std::uint8_t allowed) {
  return allowed && score > -__builtin_huge_valf();  // false for NaN as well
}

// Calls f(key, ok) for this CTA's share of the row — 4-score pieces first + rank · threads + tid, strided
// by the cluster's threads — warp-uniformly (ok = false for padding and ineligible entries), with four
// 16-byte loads in flight per thread when the row is aligned.
template <class F>
__device__ __forceinline__ void for_each_key(float const* row, std::uint8_t const* allowed, int n, int first, int stride,
                                             F&& f) {
  bool const vec = (reinterpret_cast<std::uintptr_t>(row) % 16 == 0) &&
                   (!allowed || reinterpret_cast<std::uintptr_t>(allowed) % 4 == 0);
  int const n4 = vec ? n / 4 : 0;
  for (int base = first - static_cast<int>(threadIdx.x); base < n4; base += 4 * stride) {
    float4 v[4];
    uchar4 m[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int const q = base + j * stride + static_cast<int>(threadIdx.x);
      v[j] = q < n4 ? __ldg(reinterpret_cast<float4 const*>(row) + q) : make_float4(0.f, 0.f, 0.f, 0.f);
      m[j] = q < n4 ? (allowed ? reinterpret_cast<uchar4 const*>(allowed)[q] : make_uchar4(1, 1, 1, 1)) : make_uchar4(0, 0, 0, 0);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      unsigned int const c = static_cast<unsigned int>(base + j * stride + static_cast<int>(threadIdx.x)) * 4;
      f(make_key(v[j].x, c), eligible(v[j].x, m[j].x));
      f(make_key(v[j].y, c + 1), eligible(v[j].y, m[j].y));
      f(make_key(v[j].z, c + 2), eligible(v[j].z, m[j].z));
      f(make_key(v[j].w, c + 3), eligible(v[j].w, m[j].w));
    }
  }
  for (int base = n4 * 4 + first - static_cast<int>(threadIdx.x); base < n; base += stride) {
    int const c = base + static_cast<int>(threadIdx.x);
    float const x = c < n ? row[c] : 0.f;
    f(make_key(x, static_cast<unsigned int>(c)), c < n && eligible(x, allowed ? allowed[c] : std::uint8_t{1}));
  }
}

// Adds one to hist[digit] for every lane with ok, one atomic per distinct digit of the warp.
__device__ __forceinline__ void histogram_add(unsigned int* hist, unsigned int digit, bool ok) {
  if (!__any_sync(0xffffffffu, ok)) return;
  unsigned int const group = __match_any_sync(0xffffffffu, ok ? digit : 0xffffffffu);
  if (ok && (threadIdx.x % 32) == static_cast<unsigned int>(__ffs(group) - 1)) atomicAdd(&hist[digit], __popc(group));
}

// Appends key to list at a position taken from *count, one atomic per warp.
__device__ __forceinline__ void append(unsigned long long* list, unsigned int* count, unsigned long long key, bool ok) {
  unsigned int const ballot = __ballot_sync(0xffffffffu, ok);
  if (!ballot) return;
  unsigned int const lane = threadIdx.x % 32, leader = __ffs(ballot) - 1;
  unsigned int base = 0;
  if (lane == leader) base = atomicAdd(count, __popc(ballot));
  base = __shfl_sync(0xffffffffu, base, leader);
  if (ok) list[base + __popc(ballot & ((1u << lane) - 1))] = key;
}

// Sums histogram `buf` over the cluster and finds the digit d where the count of keys with digit ≥ d
// first reaches `need`; stores d, the count above d, the count at d and the total. Block-wide; when the
// total is below need, no digit is stored.
__device__ __forceinline__ void select_digit(TopKShared& s, cg::cluster_group const& cluster, int buf, unsigned int need) {
  int const tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  // Thread t owns bins kBins − 4 − 4t … kBins − 1 − 4t, so an inclusive scan over t counts from the top.
  uint4 sum = make_uint4(0, 0, 0, 0);
  unsigned int const ctas = cluster.num_blocks();
  for (unsigned int r = 0; r < ctas; ++r) {
    uint4 const v = *reinterpret_cast<uint4 const*>(cluster.map_shared_rank(&s.hist[buf][kBins - 4 - 4 * tid], r));
    sum.x += v.x;
    sum.y += v.y;
    sum.z += v.z;
    sum.w += v.w;
  }
  unsigned int const own = sum.x + sum.y + sum.z + sum.w;
  unsigned int incl = own;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    unsigned int const v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) s.warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    unsigned int const w = lane < kTopKThreads / 32 ? s.warp_sums[lane] : 0u;
    unsigned int wi = w;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      unsigned int const v = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += v;
    }
    if (lane < kTopKThreads / 32) s.warp_sums[lane] = wi - w;  // exclusive
    if (lane == 31) s.total = wi;
  }
  __syncthreads();
  unsigned int before = s.warp_sums[warp] + incl - own;
  if (before < need && before + own >= need) {
    unsigned int const counts[4] = {sum.w, sum.z, sum.y, sum.x};  // bins from the top down
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (before + counts[j] >= need) {
        s.digit = static_cast<unsigned int>(kBins - 1 - 4 * tid - j);
        s.above = before;
        s.digit_count = counts[j];
        break;
      }
      before += counts[j];
    }
  }
  __syncthreads();
}

static __global__ void __launch_bounds__(kTopKThreads) topk_kernel(float const* scores, std::int64_t row_stride, int n,
                                                           std::uint8_t const* allowed, std::int32_t const* ids,
                                                           std::int32_t* out, std::int64_t out_stride, int k) {
  extern __shared__ __align__(16) std::byte smem_bytes[];
  auto& s = *reinterpret_cast<TopKShared*>(smem_bytes);
  cg::cluster_group const cluster = cg::this_cluster();
  int const tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  int const ctas = static_cast<int>(cluster.num_blocks()), rank = static_cast<int>(cluster.block_rank());
  std::int64_t const b = blockIdx.x / static_cast<unsigned int>(ctas);
  float const* row = scores + b * row_stride;
  out += b * out_stride;
  int const first = rank * kTopKThreads + tid, stride = ctas * kTopKThreads;

  if (tid == 0) s.n_mine = 0;
  unsigned long long prefix = 0;  // the fixed top `bits` bits of the k-th key
  int bits = 0;
  unsigned int need = static_cast<unsigned int>(k);
  for (int pass = 0;; ++pass) {
    // The cluster barrier of the previous pass ordered every CTA's reads of this buffer before this clear.
    unsigned int* hist = s.hist[pass % 2];
    reinterpret_cast<uint4*>(hist)[tid] = make_uint4(0, 0, 0, 0);
    __syncthreads();
    int const width = bits + kDigitBits <= 64 ? kDigitBits : 64 - bits;
    for_each_key(row, allowed, n, first, stride, [&](unsigned long long key, bool ok) {
      bool const on = ok && (bits == 0 || key >> (64 - bits) == prefix);
      histogram_add(hist, static_cast<unsigned int>(key >> (64 - bits - width)) & ((1u << width) - 1), on);
    });
    cluster.sync();  // every CTA's histogram is complete and visible
    select_digit(s, cluster, pass % 2, need);
    if (pass == 0 && s.total <= need) break;  // every eligible key is selected (bits = 0)
    need -= s.above;
    prefix = prefix << width | s.digit;
    bits += width;
    if (s.digit_count == need) break;  // every key on the prefix is selected
  }

  // This CTA's keys at or above the prefix (with no prefix: every eligible key).
  for_each_key(row, allowed, n, first, stride, [&](unsigned long long key, bool ok) {
    append(s.mine, &s.n_mine, key, ok && (bits == 0 || key >> (64 - bits) >= prefix));
  });
  cluster.sync();  // every CTA's list is complete and visible

  // Gather the cluster's lists, then write each of this CTA's keys at its rank among all of them.
  if (tid == 0) {
    unsigned int o = 0;
    for (int r = 0; r < ctas; ++r) {
      s.offset[r] = o;
      o += *cluster.map_shared_rank(&s.n_mine, r);
    }
    s.offset[ctas] = o;
  }
  __syncthreads();
  for (int r = 0; r < ctas; ++r) {
    unsigned long long const* theirs = cluster.map_shared_rank(s.mine, r);
    unsigned int const count = s.offset[r + 1] - s.offset[r];
    for (unsigned int i = static_cast<unsigned int>(tid); i < count; i += kTopKThreads) s.all[s.offset[r] + i] = theirs[i];
  }
  __syncthreads();
  unsigned int const m = s.offset[ctas];
  for (unsigned int i = static_cast<unsigned int>(warp); i < s.n_mine; i += kTopKThreads / 32) {
    unsigned long long const key = s.mine[i];
    unsigned int greater = 0;
    for (unsigned int j = static_cast<unsigned int>(lane); j < m; j += 32) greater += s.all[j] > key;
    greater = __reduce_add_sync(0xffffffffu, greater);
    if (lane == 0) {
      auto const c = static_cast<std::int32_t>(0xffffffffu - static_cast<unsigned int>(key));
      out[greater] = ids ? ids[c] : c;
    }
  }
  for (int j = static_cast<int>(m) + first; j < k; j += stride) out[j] = -1;
  cluster.sync();  // no CTA leaves while another may still read its list
}

}  // namespace detail

// Launcher of the top-k kernel; construct once (raises the shared-memory limit, picks the largest cluster
// the device schedules), run() never allocates.
class TopK {
 public:
  using Arguments = TopKArguments;
  static constexpr int kMaxK = detail::kMaxK;

  TopK() {
    FLASHMEMORY_CUDA_CHECK(cudaFuncSetAttribute(detail::topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(sizeof(detail::TopKShared))));
    // 16 CTAs per cluster is beyond the portable 8: use it where the device can schedule it.
    max_cluster_ = 8;
    if (cudaFuncSetAttribute(detail::topk_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess) {
      cudaLaunchAttribute attr{};
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim = {detail::kMaxCluster, 1, 1};
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3(detail::kMaxCluster);
      cfg.blockDim = dim3(detail::kTopKThreads);
      cfg.dynamicSmemBytes = sizeof(detail::TopKShared);
      cfg.attrs = &attr;
      cfg.numAttrs = 1;
      int clusters = 0;
      if (cudaOccupancyMaxActiveClusters(&clusters, detail::topk_kernel, &cfg) == cudaSuccess && clusters > 0)
        max_cluster_ = detail::kMaxCluster;
    }
    cudaGetLastError();  // a refused query leaves the portable size
  }

  Status can_implement(Arguments const& a) const {
    index_t const B = a.scores.extent(0), n = a.scores.extent(1), k = a.out.extent(1);
    if (a.out.extent(0) != B)
      return Status::failure(errc::bad_shape, "top-k (CUDA): out has ", a.out.extent(0), " rows, scores ", B);
    if (k < 0 || k > kMaxK) return Status::failure(errc::unsupported, "top-k (CUDA): k = ", k, " (at most ", kMaxK, ")");
    if (n > INT32_MAX / 2) return Status::failure(errc::unsupported, "top-k (CUDA): ", n, " scores per row exceed 2^30");
    if (B * detail::kMaxCluster > INT32_MAX) return Status::failure(errc::unsupported, "top-k (CUDA): ", B, " rows");
    if (a.allowed.extent(0) != 0 && a.allowed.extent(0) != n)
      return Status::failure(errc::bad_shape, "top-k (CUDA): allowed has ", a.allowed.extent(0), " entries, rows ", n);
    if (a.ids.extent(0) != 0 && a.ids.extent(0) != n)
      return Status::failure(errc::bad_shape, "top-k (CUDA): ids has ", a.ids.extent(0), " entries, rows ", n);
    if (B > 0 && k > 0 && (!a.out.data_handle() || (n > 0 && !a.scores.data_handle())))
      return Status::failure(errc::invalid_argument, "top-k (CUDA): null scores or out");
    return Status::success();
  }

  // CTAs per row for n scores: one per kScoresPerCta, at most the largest cluster the device schedules.
  int cluster_size(index_t n) const {
    return static_cast<int>(std::clamp<index_t>((n + detail::kScoresPerCta - 1) / detail::kScoresPerCta, 1, max_cluster_));
  }

  Status run(Arguments const& a) const {
    if (Status st = can_implement(a); !st) return st;
    index_t const B = a.scores.extent(0), n = a.scores.extent(1), k = a.out.extent(1);
    if (B == 0 || k == 0) return Status::success();
    int const ctas = cluster_size(n);
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim = {static_cast<unsigned>(ctas), 1, 1};
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(B * ctas));
    cfg.blockDim = dim3(detail::kTopKThreads);
    cfg.dynamicSmemBytes = sizeof(detail::TopKShared);
    cfg.stream = static_cast<cudaStream_t>(a.stream);
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    FLASHMEMORY_CUDA_TRY(cudaLaunchKernelEx(&cfg, detail::topk_kernel, a.scores.data_handle(),
                                            static_cast<std::int64_t>(a.scores.extent(1)), static_cast<int>(n),
                                            a.allowed.extent(0) ? a.allowed.data_handle() : nullptr,
                                            a.ids.extent(0) ? a.ids.data_handle() : nullptr, a.out.data_handle(),
                                            static_cast<std::int64_t>(k), static_cast<int>(k)));
    return flashmemory::cuda::launch_status("topk_kernel", __FILE__, __LINE__);
  }

 private:
  int max_cluster_ = 8;
};

}  // namespace flashmemory::indexer::cuda
