// flashmemory/indexer/cuda/topk.cuh — masked top-k on the GPU: per row of scores, the indices of the k
// largest eligible scores, in the reference's order (indexer/reference.hpp: top_k).
//
// Eligible: allowed[c] (when a mask is given), and the score is neither NaN nor −∞. Output row b holds the
// selected indices by descending score, ties broken toward the lower index — the reference's order, so the
// result is deterministic and equal to top_k() element for element, ties included. Slots past the number
// of eligible entries are −1 (an unused slot for the attention kernels). With `ids`, ids[c] is written
// instead of c (e.g. the pool row of the c-th resident entry).
//
// Algorithm: radix select over 64-bit keys, one CTA of 1024 threads per row. Each eligible score becomes
//   key = order(score) << 32 | (2^32 − 1 − c)
// where order() maps float bits to unsigned integers of the same order; the low half makes every key
// distinct and puts the lower index first among equal scores. Passes over the row (L2-resident after the
// first) histogram the next 11 bits of the keys that match the prefix fixed so far (warp-aggregated
// shared-memory atomics, robust to many equal scores) and fix the digit where the count from the top
// reaches k; once the threshold digit holds at most kCandidates keys, one more pass moves the keys above
// the prefix to the output list and those on it to a candidate list, which is refined in shared memory
// the same way. A bitonic sort of the ≤ k selected keys gives the order. No workspace, one launch.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <cuda_runtime.h>

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

inline constexpr int kTopKThreads = 1024;
inline constexpr int kMaxK = 2048;
inline constexpr int kCandidates = 8192;
inline constexpr int kDigitBits = 11;
inline constexpr int kBins = 1 << kDigitBits;

struct TopKShared {
  unsigned long long selected[kMaxK];
  unsigned long long candidates[kCandidates];
  unsigned int hist[kBins];
  unsigned int warp_sums[kTopKThreads / 32];
  unsigned int n_selected, n_candidates, eligible;
  unsigned int digit, above, digit_count;
};

// Float bits → unsigned integer of the same order (negative floats reversed).
__device__ __forceinline__ unsigned int order_bits(float x) {
  unsigned int const u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ unsigned long long make_key(float score, unsigned int index) {
  return (static_cast<unsigned long long>(order_bits(score)) << 32) | (0xffffffffu - index);
}

__device__ __forceinline__ bool eligible(float score, std::uint8_t allowed) {
  return allowed && score > -__builtin_huge_valf();  // false for NaN as well
}

// Calls f(key, ok) for every entry of the row, warp-uniformly (ok = false for padding and ineligible
// entries), with four 16-byte loads in flight per thread when the row is aligned.
template <class F>
__device__ __forceinline__ void for_each_key(float const* row, std::uint8_t const* allowed, int n, F&& f) {
  int const tid = static_cast<int>(threadIdx.x);
  bool const vec = (reinterpret_cast<std::uintptr_t>(row) % 16 == 0) &&
                   (!allowed || reinterpret_cast<std::uintptr_t>(allowed) % 4 == 0);
  int const n4 = vec ? n / 4 : 0;
  for (int base = 0; base < n4; base += 4 * kTopKThreads) {
    float4 v[4];
    uchar4 m[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int const q = base + j * kTopKThreads + tid;
      v[j] = q < n4 ? __ldg(reinterpret_cast<float4 const*>(row) + q) : make_float4(0.f, 0.f, 0.f, 0.f);
      m[j] = q < n4 ? (allowed ? reinterpret_cast<uchar4 const*>(allowed)[q] : make_uchar4(1, 1, 1, 1)) : make_uchar4(0, 0, 0, 0);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      unsigned int const c = static_cast<unsigned int>(base + j * kTopKThreads + tid) * 4;
      f(make_key(v[j].x, c), eligible(v[j].x, m[j].x));
      f(make_key(v[j].y, c + 1), eligible(v[j].y, m[j].y));
      f(make_key(v[j].z, c + 2), eligible(v[j].z, m[j].z));
      f(make_key(v[j].w, c + 3), eligible(v[j].w, m[j].w));
    }
  }
  for (int base = n4 * 4; base < n; base += kTopKThreads) {
    int const c = base + tid;
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

// Finds, in hist, the digit d where the count of keys with digit ≥ d first reaches `need` (need ≥ 1 and
// the histogram holds at least need keys); stores d, the count above d and hist[d]. Block-wide.
__device__ __forceinline__ void select_digit(TopKShared& s, unsigned int need) {
  int const tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  // Thread t owns the two bins 2047 − 2t and 2046 − 2t, so an inclusive scan over t counts from the top.
  unsigned int const hi = s.hist[kBins - 1 - 2 * tid], lo = s.hist[kBins - 2 - 2 * tid];
  unsigned int incl = hi + lo;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    unsigned int const v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  if (lane == 31) s.warp_sums[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    unsigned int w = s.warp_sums[lane], wi = w;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      unsigned int const v = __shfl_up_sync(0xffffffffu, wi, o);
      if (lane >= o) wi += v;
    }
    s.warp_sums[lane] = wi - w;  // exclusive
  }
  __syncthreads();
  unsigned int const before = s.warp_sums[warp] + incl - (hi + lo);
  if (before < need && before + hi + lo >= need) {
    bool const in_hi = before + hi >= need;
    s.digit = static_cast<unsigned int>(in_hi ? kBins - 1 - 2 * tid : kBins - 2 - 2 * tid);
    s.above = in_hi ? before : before + hi;
    s.digit_count = in_hi ? hi : lo;
  }
  __syncthreads();
}

__device__ __forceinline__ void clear_hist(TopKShared& s) {
  for (int i = static_cast<int>(threadIdx.x); i < kBins; i += kTopKThreads) s.hist[i] = 0;
}

// The top `bits` bits of key (bits in 1..64).
__device__ __forceinline__ unsigned long long top_bits(unsigned long long key, int bits) {
  return key >> (64 - bits);
}

__global__ void __launch_bounds__(kTopKThreads, 1) topk_kernel(float const* scores, std::int64_t row_stride, int n,
                                                               std::uint8_t const* allowed, std::int32_t const* ids,
                                                               std::int32_t* out, std::int64_t out_stride, int k) {
  extern __shared__ __align__(16) std::byte smem_bytes[];
  auto& s = *reinterpret_cast<TopKShared*>(smem_bytes);
  int const tid = static_cast<int>(threadIdx.x);
  float const* row = scores + static_cast<std::int64_t>(blockIdx.x) * row_stride;
  out += static_cast<std::int64_t>(blockIdx.x) * out_stride;

  if (tid == 0) s.n_selected = s.n_candidates = s.eligible = 0;
  clear_hist(s);
  __syncthreads();

  // Level 1 over the row: histogram of the top digit, and the eligible count.
  unsigned int mine = 0;
  for_each_key(row, allowed, n, [&](unsigned long long key, bool ok) {
    histogram_add(s.hist, static_cast<unsigned int>(top_bits(key, kDigitBits)), ok);
    mine += ok;
  });
  mine = __reduce_add_sync(0xffffffffu, mine);
  if (tid % 32 == 0) atomicAdd(&s.eligible, mine);
  __syncthreads();
  unsigned int const total = s.eligible;

  unsigned long long prefix = 0;  // the fixed top `bits` bits of the k-th key
  int bits = 0;
  unsigned int need = static_cast<unsigned int>(k);
  if (total > need) {
    // Refine over the row until the keys on the prefix fit in the candidate list.
    for (;;) {
      select_digit(s, need);
      need -= s.above;
      prefix = prefix << kDigitBits | s.digit;
      bits += kDigitBits;
      if (s.digit_count <= kCandidates) break;
      __syncthreads();
      clear_hist(s);
      __syncthreads();
      int const width = bits + kDigitBits <= 64 ? kDigitBits : 64 - bits;  // never reached: counts shrink first
      for_each_key(row, allowed, n, [&](unsigned long long key, bool ok) {
        bool const on = ok && top_bits(key, bits) == prefix;
        histogram_add(s.hist, static_cast<unsigned int>(top_bits(key, bits + width)) & (kBins - 1), on);
      });
      __syncthreads();
    }
  }
  // Keys above the prefix are selected; keys on it are candidates (with no prefix: all are selected).
  for_each_key(row, allowed, n, [&](unsigned long long key, bool ok) {
    unsigned long long const top = bits ? top_bits(key, bits) : 0;
    append(s.selected, &s.n_selected, key, ok && (bits == 0 || top > prefix));
    append(s.candidates, &s.n_candidates, key, ok && bits > 0 && top == prefix);
  });
  __syncthreads();

  // Refine the candidates in shared memory until the last `need` of them are exactly determined.
  unsigned int const n_cand = s.n_candidates;
  if (bits > 0 && need < n_cand) {
    while (bits < 64) {
      int const width = bits + kDigitBits <= 64 ? kDigitBits : 64 - bits;
      __syncthreads();
      clear_hist(s);
      __syncthreads();
      for (unsigned int base = 0; base < n_cand; base += kTopKThreads) {
        unsigned int const c = base + tid;
        unsigned long long const key = c < n_cand ? s.candidates[c] : 0;
        bool const on = c < n_cand && top_bits(key, bits) == prefix;
        histogram_add(s.hist, static_cast<unsigned int>(top_bits(key, bits + width)) & ((1u << width) - 1), on);
      }
      __syncthreads();
      select_digit(s, need);  // digits of a narrower last level occupy the low bins only
      need -= s.above;
      prefix = prefix << width | s.digit;
      bits += width;
      if (s.digit_count == need) break;
    }
  }
  if (bits > 0) {
    // Every candidate whose top bits are ≥ the prefix is selected: exactly the `need` left at the start.
    for (unsigned int base = 0; base < n_cand; base += kTopKThreads) {
      unsigned int const c = base + tid;
      unsigned long long const key = c < n_cand ? s.candidates[c] : 0;
      append(s.selected, &s.n_selected, key, c < n_cand && top_bits(key, bits) >= prefix);
    }
  }
  __syncthreads();

  // Bitonic sort of the selected keys, descending, padded with zero keys (below every real key).
  unsigned int const count = s.n_selected;
  unsigned int size = 1;
  while (size < count) size *= 2;
  for (unsigned int i = count + tid; i < size; i += kTopKThreads) s.selected[i] = 0;
  __syncthreads();
  for (unsigned int width = 2; width <= size; width *= 2) {
    for (unsigned int stride = width / 2; stride > 0; stride /= 2) {
      for (unsigned int i = tid; i < size / 2; i += kTopKThreads) {
        unsigned int const a = 2 * i - (i & (stride - 1)), b = a + stride;
        bool const descending = (a & width) == 0;
        unsigned long long const x = s.selected[a], y = s.selected[b];
        if ((x < y) == descending) {
          s.selected[a] = y;
          s.selected[b] = x;
        }
      }
      __syncthreads();
    }
  }
  for (int j = tid; j < k; j += kTopKThreads) {
    std::int32_t v = -1;
    if (static_cast<unsigned int>(j) < count) {
      auto const c = static_cast<std::int32_t>(0xffffffffu - static_cast<unsigned int>(s.selected[j]));
      v = ids ? ids[c] : c;
    }
    out[j] = v;
  }
}

}  // namespace detail

// Launcher of the top-k kernel; construct once (raises the shared-memory limit), run() never allocates.
class TopK {
 public:
  using Arguments = TopKArguments;
  static constexpr int kMaxK = detail::kMaxK;

  TopK() {
    FLASHMEMORY_CUDA_CHECK(cudaFuncSetAttribute(detail::topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(sizeof(detail::TopKShared))));
  }

  Status can_implement(Arguments const& a) const {
    index_t const B = a.scores.extent(0), n = a.scores.extent(1), k = a.out.extent(1);
    if (a.out.extent(0) != B)
      return Status::failure(errc::bad_shape, "top-k (CUDA): out has ", a.out.extent(0), " rows, scores ", B);
    if (k < 0 || k > kMaxK) return Status::failure(errc::unsupported, "top-k (CUDA): k = ", k, " (at most ", kMaxK, ")");
    if (n > INT32_MAX) return Status::failure(errc::unsupported, "top-k (CUDA): ", n, " scores per row exceed int32");
    if (B > INT32_MAX) return Status::failure(errc::unsupported, "top-k (CUDA): ", B, " rows");
    if (a.allowed.extent(0) != 0 && a.allowed.extent(0) != n)
      return Status::failure(errc::bad_shape, "top-k (CUDA): allowed has ", a.allowed.extent(0), " entries, rows ", n);
    if (a.ids.extent(0) != 0 && a.ids.extent(0) != n)
      return Status::failure(errc::bad_shape, "top-k (CUDA): ids has ", a.ids.extent(0), " entries, rows ", n);
    if (B > 0 && k > 0 && (!a.out.data_handle() || (n > 0 && !a.scores.data_handle())))
      return Status::failure(errc::invalid_argument, "top-k (CUDA): null scores or out");
    return Status::success();
  }

  Status run(Arguments const& a) const {
    if (Status st = can_implement(a); !st) return st;
    index_t const B = a.scores.extent(0), k = a.out.extent(1);
    if (B == 0 || k == 0) return Status::success();
    detail::topk_kernel<<<static_cast<unsigned>(B), detail::kTopKThreads, sizeof(detail::TopKShared),
                          static_cast<cudaStream_t>(a.stream)>>>(
        a.scores.data_handle(), a.scores.extent(1), static_cast<int>(a.scores.extent(1)),
        a.allowed.extent(0) ? a.allowed.data_handle() : nullptr, a.ids.extent(0) ? a.ids.data_handle() : nullptr,
        a.out.data_handle(), k, static_cast<int>(k));
    return flashmemory::cuda::launch_status("topk_kernel", __FILE__, __LINE__);
  }
};

}  // namespace flashmemory::indexer::cuda
