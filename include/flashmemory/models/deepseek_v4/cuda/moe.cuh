// flashmemory/models/deepseek_v4/cuda/moe.cuh — the Mixture-of-Experts block on the GPU (deepseek-v4.md §7),
// the device twins of route() and expert_accumulate() (moe.hpp). Three launches after the router logits
// g = x · gateᵀ (a linear()):
//   route        one warp per token: s = sqrtsoftplus(g) (or sigmoid), experts = top-k of s + bias (ties to
//                the lower index, as indexer::top_k) or tid2eid[token] on hash layers, weights
//                s_i / (Σ s + 1e-20) · routed_scaling_factor — all on the device, so a captured step
//                routes every token afresh
//   expert_up    h_j = silu(min(x·w1ᵀ, L)) ⊙ clamp(x·w3ᵀ, −L, L) for the k routed experts and the shared one
//                (one warp per row of w1 and w3: both dot products, then the clamped SwiGLU)
//   expert_down  y = Σ_j weight_j · h_j · w2_jᵀ + h_shared · w2_sharedᵀ (one warp per output row, summed
//                in routing order, shared last — the reference's order of accumulation)
// For more than one token (a prefill chunk, or one token of each sequence of a batched step) both run per
// tile of up to kTileTokens tokens and per expert that the tile chose, so an expert's rows are read once
// for all its tokens; a single token runs the one-token kernels (its own experts, no tile bookkeeping).
// Expert matrices are stacked [E + 1, …] with the shared expert at index E.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/cuda/detail/common.cuh>
#include <flashmemory/models/deepseek_v4/cuda/linear.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace flashmemory::models::deepseek_v4::cuda {

inline constexpr int kMaxExperts = 512;
inline constexpr int kMaxExpertsPerToken = 16;

struct RouteArguments {
  float const* logits = nullptr;  // [tokens, experts] router logits
  std::int64_t tokens = 0;
  int experts = 0, k = 0;
  float const* bias = nullptr;            // [experts] selection bias, or null on hash layers
  std::int32_t const* tid2eid = nullptr;  // [vocab, k] on hash layers
  std::int32_t const* ids = nullptr;      // [tokens] token ids
  ScoringFunc scoring = ScoringFunc::sqrtsoftplus;
  float routed_scale = 1.0f;
  std::int32_t* chosen = nullptr;  // [tokens, k]
  float* weights = nullptr;        // [tokens, k]
  cudaStream_t stream = nullptr;
  bool overlap = false;  // programmatic dependent launch (detail/common.cuh)
};

template <storage_element T>
struct ExpertArguments {
  T const* w1 = nullptr;  // [experts + 1, inter, hidden]
  T const* w3 = nullptr;  // [experts + 1, inter, hidden]
  T const* w2 = nullptr;  // [experts + 1, hidden, inter]
  std::int64_t hidden = 0, inter = 0;
  int experts = 0, k = 0;
  float const* x = nullptr;  // [tokens, hidden] ffn-normed input
  std::int64_t tokens = 0;
  std::int32_t const* chosen = nullptr;  // [tokens, k] from route
  float const* weights = nullptr;        // [tokens, k]
  float limit = 10.0f;                   // swiglu_limit
  float* h = nullptr;  // workspace [tokens, k + 1, inter]
  float* y = nullptr;  // [tokens, hidden]
  cudaStream_t stream = nullptr;
  bool overlap = false;
};

namespace detail {

inline constexpr int kPerLane = kMaxExperts / 32;

__device__ __forceinline__ float router_score(float g, ScoringFunc f) {
  if (f == ScoringFunc::sigmoid) return sigmoid(g);
  float const sp = g > 20.0f ? g : log1pf(expf(g));  // PyTorch's softplus threshold
  return sqrtf(sp);
}

static __global__ void route_kernel(RouteArguments const p) {
  enter();
  std::int64_t const t = blockIdx.x;
  int const lane = static_cast<int>(threadIdx.x);
  float s[kPerLane], key[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    int const e = lane + 32 * j;
    s[j] = e < p.experts ? router_score(p.logits[t * p.experts + e], p.scoring) : 0.0f;
    key[j] = e < p.experts ? s[j] + (p.bias ? p.bias[e] : 0.0f) : kNegInf;
  }
  float total = 0.0f;
  int chosen[kMaxExpertsPerToken];
  for (int i = 0; i < p.k; ++i) {
    int e = -1;
    if (p.bias) {
      // Warp arg-max of key, ties to the lower expert.
      float best = kNegInf;
      int arg = p.experts;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j)
        if (key[j] > best) best = key[j], arg = lane + 32 * j;
#pragma unroll
      for (int o = 16; o > 0; o /= 2) {
        float const ob = __shfl_xor_sync(kFullMask, best, o);
        int const oa = __shfl_xor_sync(kFullMask, arg, o);
        if (ob > best || (ob == best && oa < arg)) best = ob, arg = oa;
      }
      e = arg;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j)
        if (lane + 32 * j == e) key[j] = kNegInf;
    } else {
      e = p.tid2eid[static_cast<std::int64_t>(p.ids[t]) * p.k + i];
    }
    float mine = 0.0f;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      if (lane + 32 * j == e) mine = s[j];
    total += warp_sum(mine);  // s of expert e (one lane holds it)
    chosen[i] = e;
  }
  if (lane == 0)
    for (int i = 0; i < p.k; ++i) p.chosen[t * p.k + i] = chosen[i];
  for (int i = 0; i < p.k; ++i) {
    float mine = 0.0f;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      if (lane + 32 * j == chosen[i]) mine = s[j];
    float const si = warp_sum(mine);
    if (lane == 0) p.weights[t * p.k + i] = si / (total + 1e-20f) * p.routed_scale;
  }
}

// The distinct experts a tile of tokens [t0, t0 + nt) chose, in increasing order, into `list`; returns how
// many (block-wide: every thread calls it and gets the list).
template <class T>
__device__ int tile_experts(ExpertArguments<T> const& p, std::int64_t t0, int nt, int* list) {
  __shared__ unsigned used[kMaxExperts / 32];
  __shared__ int count;
  for (int i = static_cast<int>(threadIdx.x); i < kMaxExperts / 32; i += blockDim.x) used[i] = 0;
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < nt * p.k; i += blockDim.x) {
    int const e = p.chosen[t0 * p.k + i];
    atomicOr(&used[e / 32], 1u << (e % 32));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int n = 0;
    for (int w = 0; w < kMaxExperts / 32; ++w)
      for (unsigned bits = used[w]; bits; bits &= bits - 1) list[n++] = w * 32 + __ffs(bits) - 1;
    count = n;
  }
  __syncthreads();
  return count;
}

// Which tokens of the tile run expert e (the shared one: p.experts): bit m of the mask for token t0 + m, and
// in lane m the slot j (0 … k − 1 routed, k shared) of its output in h.
template <class T>
__device__ __forceinline__ unsigned expert_tokens(ExpertArguments<T> const& p, std::int64_t t0, int nt, int e, int& slot) {
  int const lane = static_cast<int>(threadIdx.x % 32);
  slot = -1;
  if (lane < nt) {
    if (e == p.experts) slot = p.k;
    else
      for (int i = 0; i < p.k; ++i)
        if (p.chosen[(t0 + lane) * p.k + i] == e) slot = i;
  }
  return __ballot_sync(kFullMask, slot >= 0);
}

// acc[m] += W_row · x[m] over the row for the tokens in `mask` (per-lane partial sums, chunks in row_dot's
// order, with as many weight loads in flight).
template <class T, int M>
__device__ __forceinline__ void masked_row_dot(T const* w, float const* const (&x)[M], int chunks, unsigned mask, float (&acc)[M]) {
  int const lane = static_cast<int>(threadIdx.x % 32);
  float wv[kUnroll][8];
  load_chunks(w, lane, chunks, wv);
  for (int c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    float next[kUnroll][8];
    load_chunks(w, c0 + 32 * kUnroll, chunks, next);
#pragma unroll
    for (int m = 0; m < M; ++m)
      if (mask >> m & 1u) {
        float one[1] = {acc[m]};
        fma_chunks<1>(wv, x[m], 0, c0, chunks, 1, one);
        acc[m] = one[0];
      }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int e = 0; e < 8; ++e) wv[u][e] = next[u][e];
  }
}

// Block (row block, slot, tile): the slot-th expert the tile chose (the last slot: the shared expert), one
// warp per row of its w1 and w3, both products for every token of the tile that runs it, then the clamped
// SwiGLU. Each expert's rows are read once per tile of tokens.
template <class T>
__global__ void __launch_bounds__(kLinearWarps * 32) expert_up_kernel(ExpertArguments<T> const p) {
  launch_dependents();
  std::int64_t const r = static_cast<std::int64_t>(blockIdx.x) * kLinearWarps + threadIdx.x / 32;
  bool const shared = blockIdx.y == gridDim.y - 1;
  std::int64_t const t0 = static_cast<std::int64_t>(blockIdx.z) * kTileTokens;
  int const nt = static_cast<int>(min(static_cast<std::int64_t>(kTileTokens), p.tokens - t0));
  if (shared && r < p.inter) {  // the shared expert's rows are known before routing: request them first
    int const lane = static_cast<int>(threadIdx.x % 32);
    std::int64_t const row_bytes = p.hidden * static_cast<std::int64_t>(sizeof(T)), row = p.experts * p.inter + r;
    for (std::int64_t b = lane * 128; b < row_bytes; b += 32 * 128) {
      prefetch_l2(reinterpret_cast<char const*>(p.w1) + row * row_bytes + b);
      prefetch_l2(reinterpret_cast<char const*>(p.w3) + row * row_bytes + b);
    }
  }
  wait_for_prerequisites();
  __shared__ int list[kTileTokens * kMaxExpertsPerToken];
  int const e = shared ? p.experts : static_cast<int>(blockIdx.y) < tile_experts(p, t0, nt, list) ? list[blockIdx.y] : -1;
  if (e < 0 || r >= p.inter) return;
  int slot = -1;
  unsigned const mask = expert_tokens(p, t0, nt, e, slot);
  std::int64_t const row = (e * p.inter + r) * p.hidden;
  float const* x[kTileTokens];
#pragma unroll
  for (int m = 0; m < kTileTokens; ++m) x[m] = p.x + (t0 + m) * p.hidden;
  float a[kTileTokens] = {}, b[kTileTokens] = {};
  int const chunks = static_cast<int>(p.hidden / 8);
  masked_row_dot<T, kTileTokens>(p.w1 + row, x, chunks, mask, a);
  masked_row_dot<T, kTileTokens>(p.w3 + row, x, chunks, mask, b);
#pragma unroll
  for (int m = 0; m < kTileTokens; ++m) {
    if (!(mask >> m & 1u)) continue;
    float const ga = warp_sum(a[m]), gb = warp_sum(b[m]);
    int const j = __shfl_sync(kFullMask, slot, m);
    if (threadIdx.x % 32 == 0) {
      float const g = fminf(ga, p.limit), u = fminf(fmaxf(gb, -p.limit), p.limit);
      p.h[((t0 + m) * (p.k + 1) + j) * p.inter + r] = g * sigmoid(g) * u;
    }
  }
}

// Block (row block, tile): one warp per output row; for each expert the tile chose (each row of w2 read once
// per tile), then the shared one, the products with every token's h that ran it, kept per (token, slot);
// then each token's sum in routing order with the shared expert last — the reference's order.
template <class T>
__global__ void __launch_bounds__(kLinearWarps * 32) expert_down_kernel(ExpertArguments<T> const p) {
  enter();
  __shared__ float dots[kLinearWarps][kTileTokens][kMaxExpertsPerToken + 1];
  std::int64_t const r = static_cast<std::int64_t>(blockIdx.x) * kLinearWarps + threadIdx.x / 32;
  std::int64_t const t0 = static_cast<std::int64_t>(blockIdx.y) * kTileTokens;
  int const nt = static_cast<int>(min(static_cast<std::int64_t>(kTileTokens), p.tokens - t0));
  int const warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  int const chunks = static_cast<int>(p.inter / 8);
  __shared__ int list[kTileTokens * kMaxExpertsPerToken];
  int const routed = tile_experts(p, t0, nt, list);
  if (r >= p.hidden) return;
  for (int s = 0; s <= routed; ++s) {
    int const e = s < routed ? list[s] : p.experts;
    int slot = -1;
    unsigned const mask = expert_tokens(p, t0, nt, e, slot);
    // Token m's input is its h row of this expert's slot.
    float const* h[kTileTokens];
#pragma unroll
    for (int m = 0; m < kTileTokens; ++m) h[m] = p.h + ((t0 + m) * (p.k + 1) + max(__shfl_sync(kFullMask, slot, m), 0)) * p.inter;
    float acc[kTileTokens] = {};
    masked_row_dot<T, kTileTokens>(p.w2 + (e * p.hidden + r) * p.inter, h, chunks, mask, acc);
#pragma unroll
    for (int m = 0; m < kTileTokens; ++m) {
      if (!(mask >> m & 1u)) continue;
      float const sum = warp_sum(acc[m]);
      int const j = __shfl_sync(kFullMask, slot, m);
      if (lane == 0) dots[warp][m][j] = sum;
    }
  }
  __syncwarp();
  if (lane < nt) {
    std::int64_t const t = t0 + lane;
    float total = 0.0f;
    for (int j = 0; j <= p.k; ++j) total += (j < p.k ? p.weights[t * p.k + j] : 1.0f) * dots[warp][lane][j];
    p.y[t * p.hidden + r] = total;
  }
}

// One token (a decode step of one sequence): block (row block, j) runs the token's j-th expert (j = k: the
// shared one), whose rows are known before routing and requested before the wait.
template <class T>
__global__ void __launch_bounds__(kLinearWarps * 32) expert_up_token_kernel(ExpertArguments<T> const p) {
  launch_dependents();
  std::int64_t const r = static_cast<std::int64_t>(blockIdx.x) * kLinearWarps + threadIdx.x / 32;
  int const j = static_cast<int>(blockIdx.y);
  bool const shared = j == p.k;
  if (r >= p.inter || !shared) wait_for_prerequisites();  // a routed expert is known only from route's output
  if (r >= p.inter) return;
  std::int64_t const t = blockIdx.z;
  std::int64_t const e = shared ? p.experts : p.chosen[t * p.k + j];
  std::int64_t const row = (e * p.inter + r) * p.hidden;
  float const* x = p.x + t * p.hidden;
  float a[1] = {0.0f}, b[1] = {0.0f};
  int const chunks = static_cast<int>(p.hidden / 8);
  // The shared expert's weights are requested before the wait, as the linear kernel's are.
  row_dot<T, 1>(p.w1 + row, x, 0, chunks, 1, a, [shared] {
    if (shared) wait_for_prerequisites();
  });
  row_dot<T, 1>(p.w3 + row, x, 0, chunks, 1, b, [] {});
  float const ga = warp_sum(a[0]), gb = warp_sum(b[0]);
  if (threadIdx.x % 32 == 0) {
    float const g = fminf(ga, p.limit), u = fminf(fmaxf(gb, -p.limit), p.limit);
    p.h[(t * (p.k + 1) + j) * p.inter + r] = g * sigmoid(g) * u;
  }
}

template <class T>
__global__ void __launch_bounds__(kLinearWarps * 32) expert_down_token_kernel(ExpertArguments<T> const p) {
  enter();
  std::int64_t const r = static_cast<std::int64_t>(blockIdx.x) * kLinearWarps + threadIdx.x / 32;
  if (r >= p.hidden) return;
  std::int64_t const t = blockIdx.y;
  int const chunks = static_cast<int>(p.inter / 8);
  float total = 0.0f;
  for (int j = 0; j <= p.k; ++j) {
    std::int64_t const e = j < p.k ? p.chosen[t * p.k + j] : p.experts;
    float const w = j < p.k ? p.weights[t * p.k + j] : 1.0f;
    float acc[1] = {0.0f};
    row_dot<T, 1>(p.w2 + (e * p.hidden + r) * p.inter, p.h + (t * (p.k + 1) + j) * p.inter, 0, chunks, 1, acc, [] {});
    total += w * warp_sum(acc[0]);
  }
  if (threadIdx.x % 32 == 0) p.y[t * p.hidden + r] = total;
}

}  // namespace detail

inline Status route(RouteArguments const& a) {
  if (a.experts < 1 || a.experts > kMaxExperts || a.k < 1 || a.k > kMaxExpertsPerToken || a.k > a.experts)
    return Status::failure(errc::unsupported, "route (CUDA): ", a.k, " of ", a.experts, " experts (at most ", kMaxExpertsPerToken,
                           " of ", kMaxExperts, ")");
  if (!a.bias && (!a.tid2eid || !a.ids))
    return Status::failure(errc::invalid_argument, "route (CUDA): a hash layer needs tid2eid and the token ids");
  if (a.tokens == 0) return Status::success();
  return detail::launch("deepseek_v4 route_kernel", a.overlap, detail::route_kernel, dim3(static_cast<unsigned>(a.tokens)), 32, 0,
                        a.stream, a);
}

// Enqueues expert_up and expert_down: y = the MoE output for every token.
template <storage_element T>
Status experts(ExpertArguments<T> const& a) {
  if (a.hidden % 8 != 0 || a.inter % 8 != 0 || a.hidden <= 0 || a.inter <= 0)
    return Status::failure(errc::unsupported, "experts (CUDA): hidden ", a.hidden, " and intermediate ", a.inter,
                           " must be positive multiples of 8");
  if (a.k < 0 || a.k > kMaxExpertsPerToken) return Status::failure(errc::unsupported, "experts (CUDA): ", a.k, " experts per token");
  if (a.tokens == 0) return Status::success();
  if (a.experts < 1 || a.experts > kMaxExperts)
    return Status::failure(errc::unsupported, "experts (CUDA): ", a.experts, " experts (1 to ", kMaxExperts, ")");
  // One token (a decode step of one sequence): its k experts and the shared one. A tile of tokens: a slot
  // for each expert it may choose, and the shared one.
  bool const one = a.tokens == 1;
  auto const tiles = static_cast<unsigned>(detail::ceil_div(a.tokens, detail::kTileTokens));
  auto const slots = static_cast<unsigned>(one ? a.k + 1 : std::min(a.experts, a.k * detail::kTileTokens) + 1);
  auto const rows = [](std::int64_t n) { return static_cast<unsigned>(detail::ceil_div(n, detail::kLinearWarps)); };
  int const threads = detail::kLinearWarps * 32;
  if (Status s = detail::launch("deepseek_v4 expert_up_kernel", a.overlap, one ? detail::expert_up_token_kernel<T> : detail::expert_up_kernel<T>,
                                dim3(rows(a.inter), slots, tiles), threads, 0, a.stream, a);
      !s)
    return s;
  return detail::launch("deepseek_v4 expert_down_kernel", a.overlap, one ? detail::expert_down_token_kernel<T> : detail::expert_down_kernel<T>,
                        dim3(rows(a.hidden), tiles), threads, 0, a.stream, a);
}

}  // namespace flashmemory::models::deepseek_v4::cuda
