// flashmemory/models/deepseek_v4/cuda/mhc.cuh — the residual streams on the GPU: embedding into n_hc
// streams and the Manifold-Constrained Hyper-Connections around every sub-layer (deepseek-v4.md §3, §4), the
// device twins of hyper_mix / hyper_collapse / hyper_expand / hyper_head (mhc.hpp).
//
// A site needs ρ = rms(z) and μ = fn · z over all n_hc·D entries of the streams z — a reduction across the
// whole hidden size — so it runs as two kernels:
//   hyper_partial   many blocks, each a slice of 64 columns of every stream: first (optionally) places the
//                   previous sub-layer's output, X'[k] = post_k · y + Σ_j comb[j, k] X[j] with the previous
//                   site's post/comb, then writes its slice's partial μ and Σ z²;
//   hyper_finish    one block per token: sums the partials; warp 0 computes pre/post/comb (Sinkhorn across
//                   its lanes) and stores them for the next expand, while the other warps collapse
//                   u = Σ_i pre_i X[i] and apply the sub-layer's RMSNorm. The head hyper-connection (§4.3)
//                   is the same with `head`: pre only, and the final norm.
// Streams X are float32 [tokens, n_hc·D], stream-major per token. The mix state of a token is
// [pre (n_hc) | post (n_hc) | comb (n_hc²)].
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/models/deepseek_v4/cuda/detail/common.cuh>

#include <cuda_runtime.h>

#include <cstdint>

namespace flashmemory::models::deepseek_v4::cuda {

inline constexpr int kHyperColumns = 64;  // columns of every stream per hyper_partial block
inline constexpr int kMaxHc = 16;
inline constexpr int kHyperBatch = 8;  // columns a hyper_finish thread loads before it stores

constexpr int mix_state_size(int hc) { return 2 * hc + hc * hc; }
constexpr int hyper_blocks(std::int64_t hidden) { return static_cast<int>((hidden + kHyperColumns - 1) / kHyperColumns); }

// X[t, i, :] = embed[ids[t], :] for every stream i.
template <storage_element T>
struct EmbedArguments {
  T const* table = nullptr;  // [V, D]
  std::int32_t const* ids = nullptr;  // [tokens]
  float* x = nullptr;  // [tokens, hc·D]
  std::int64_t tokens = 0, hidden = 0;
  int hc = 0;
  cudaStream_t stream = nullptr;
  bool overlap = false;  // programmatic dependent launch (detail/common.cuh)
};

struct HyperPartialArguments {
  float* x = nullptr;  // [tokens, hc·D], updated in place when y is given
  std::int64_t tokens = 0, hidden = 0;
  int hc = 0;
  float const* fn = nullptr;  // [mix, hc·D]
  int mix = 0;                // rows of fn: (2 + hc)·hc for a sub-layer site, hc for the head
  float const* y = nullptr;          // [tokens, D] previous sub-layer output to place first, or null
  float const* mix_state = nullptr;  // [tokens, mix_state_size(hc)] of the previous site (with y)
  float* partial = nullptr;          // [tokens, hyper_blocks(D), mix + 1]
  cudaStream_t stream = nullptr;
  bool overlap = false;
};

struct HyperFinishArguments {
  float const* x = nullptr;        // [tokens, hc·D]
  float const* partial = nullptr;  // from hyper_partial over the same tokens
  std::int64_t first = 0, count = 0;  // finish tokens [first, first + count)
  std::int64_t hidden = 0;
  int hc = 0;
  bool head = false;
  float const* base = nullptr;   // [mix]
  float const* scale = nullptr;  // [3], or [1] for the head
  int sinkhorn_iters = 0;
  double rms_eps = 1e-6, hc_eps = 1e-6;
  float const* norm = nullptr;  // [D] weight of the norm after the collapse
  float* mix_state = nullptr;   // [tokens, mix_state_size(hc)] written for sub-layer sites (absolute token)
  float* out = nullptr;         // [count, D]
  cudaStream_t stream = nullptr;
  bool overlap = false;
};

namespace detail {

template <class T>
__global__ void embed_kernel(EmbedArguments<T> const p) {
  enter();
  std::int64_t const t = blockIdx.x;
  T const* row = p.table + static_cast<std::int64_t>(p.ids[t]) * p.hidden;
  float* x = p.x + t * p.hc * p.hidden;
  for (std::int64_t e = threadIdx.x; e < p.hidden; e += blockDim.x) {
    float const v = to_float(row[e]);
    for (int i = 0; i < p.hc; ++i) x[i * p.hidden + e] = v;
  }
}

static __global__ void hyper_partial_kernel(HyperPartialArguments const p) {
  enter();
  extern __shared__ __align__(16) float smem[];  // old streams [hc][64], then per-warp sums [warps][mix + 1]
  int const tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  int const i = tid / kHyperColumns, col = tid % kHyperColumns;
  std::int64_t const D = p.hidden, t = blockIdx.y, e = static_cast<std::int64_t>(blockIdx.x) * kHyperColumns + col;
  bool const in = e < D;
  float* x = p.x + t * p.hc * D;
  float v = in ? x[i * D + e] : 0.0f;
  if (p.y) {
    float* old = smem;
    old[i * kHyperColumns + col] = v;
    __syncthreads();
    int const ms = mix_state_size(p.hc);
    float const* post = p.mix_state + t * ms + p.hc;
    float const* comb = post + p.hc;
    float nv = post[i] * (in ? p.y[t * D + e] : 0.0f);
    for (int j = 0; j < p.hc; ++j) nv += comb[j * p.hc + i] * old[j * kHyperColumns + col];
    v = nv;
    if (in) x[i * D + e] = v;
  }
  float* sums = smem + p.hc * kHyperColumns;
  int const stride = p.mix + 1;
  float const* fn = p.fn + i * D + e;
  for (int r = 0; r < p.mix; ++r) {
    float c = in ? fn[static_cast<std::int64_t>(r) * p.hc * D] * v : 0.0f;
    c = warp_sum(c);
    if (lane == 0) sums[warp * stride + r] = c;
  }
  float const ss = warp_sum(v * v);
  if (lane == 0) sums[warp * stride + p.mix] = ss;
  __syncthreads();
  int const warps = static_cast<int>(blockDim.x / 32);
  float* out = p.partial + (t * gridDim.x + blockIdx.x) * stride;
  for (int r = tid; r < stride; r += blockDim.x) {
    float s = 0.0f;
    for (int w = 0; w < warps; ++w) s += sums[w * stride + r];
    out[r] = s;
  }
}

// Sinkhorn projection of the comb logits c [n, n] in place — the same operations in the same order as
// detail::sinkhorn (mhc.hpp).
__device__ inline void sinkhorn(float* c, int n, int iters, float eps) {
  auto normalise_columns = [&] {
    for (int k = 0; k < n; ++k) {
      float s = 0;
      for (int j = 0; j < n; ++j) s += c[j * n + k];
      for (int j = 0; j < n; ++j) c[j * n + k] /= s + eps;
    }
  };
  for (int j = 0; j < n; ++j) {
    float m = c[j * n];
    for (int k = 1; k < n; ++k) m = fmaxf(m, c[j * n + k]);
    float s = 0;
    for (int k = 0; k < n; ++k) s += c[j * n + k] = expf(c[j * n + k] - m);
    for (int k = 0; k < n; ++k) c[j * n + k] = c[j * n + k] / s + eps;
  }
  normalise_columns();
  for (int it = 1; it < iters; ++it) {
    for (int j = 0; j < n; ++j) {
      float s = 0;
      for (int k = 0; k < n; ++k) s += c[j * n + k];
      for (int k = 0; k < n; ++k) c[j * n + k] /= s + eps;
    }
    normalise_columns();
  }
}

// The same across the lanes of a warp for n · n ≤ 32: lane j · n + k holds c[j, k] (`v`; the other lanes
// pass anything) and gets its projected value back. Every lane sums its row and its column in the order of
// the loops above (gathered with shuffles), so the result is bit for bit the serial one's, while the 2 · iters
// passes of divisions run in parallel instead of one after another on one thread (the serial projection of
// a 4 × 4 matrix took longer than all the rest of hyper_finish).
__device__ inline float sinkhorn_lanes(float v, int n, int iters, float eps) {
  int const lane = static_cast<int>(threadIdx.x % 32), j = lane / n, k = lane % n;
  bool const mine = lane < n * n;
  auto row_sum = [&](float x) {
    float s = 0;
    for (int q = 0; q < n; ++q) s += __shfl_sync(0xffffffffu, x, mine ? j * n + q : lane);
    return s;
  };
  auto column_sum = [&](float x) {
    float s = 0;
    for (int q = 0; q < n; ++q) s += __shfl_sync(0xffffffffu, x, mine ? q * n + k : lane);
    return s;
  };
  float m = __shfl_sync(0xffffffffu, v, mine ? j * n : lane);
  for (int q = 1; q < n; ++q) m = fmaxf(m, __shfl_sync(0xffffffffu, v, mine ? j * n + q : lane));
  v = expf(v - m);
  v = v / row_sum(v) + eps;
  v /= column_sum(v) + eps;
  for (int it = 1; it < iters; ++it) {
    v /= row_sum(v) + eps;
    v /= column_sum(v) + eps;
  }
  return v;
}

static __global__ void hyper_finish_kernel(HyperFinishArguments const p) {
  enter();
  extern __shared__ __align__(16) float smem[];  // scratch [33] | mu [mix + 1] | state [mix_state_size] | u [D] | pre [hc]
  int const hc = p.hc, mix = p.head ? hc : (2 + hc) * hc, ms = mix_state_size(hc);
  float* scratch = smem;
  float* mu = scratch + 33;
  float* state = mu + mix + 1;
  float* u = state + ms;
  std::int64_t const D = p.hidden, t = p.first + blockIdx.x;
  int const tid = static_cast<int>(threadIdx.x), blocks = hyper_blocks(D);
  float const* partial = p.partial + t * blocks * (mix + 1);
  for (int r = tid; r <= mix; r += blockDim.x) {
    float s = 0.0f;
    for (int b = 0; b < blocks; ++b) s += partial[b * (mix + 1) + r];
    mu[r] = s;
  }
  __syncthreads();
  auto const rho = static_cast<float>(1.0 / sqrt(static_cast<double>(mu[mix]) / static_cast<double>(hc * D) + p.rms_eps));
  auto const eps = static_cast<float>(p.hc_eps);
  auto pre = [&](int i) { return sigmoid(mu[i] * rho * p.scale[0] + p.base[i]) + eps; };
  int const warp = tid / 32, lane = tid % 32;
  if (warp == 0) {
    // Warp 0: the next site's mixing state (pre, post and the Sinkhorn-projected comb). The collapse needs
    // only pre, so the other warps run it meanwhile instead of waiting for the Sinkhorn chain at a barrier.
    if (p.head) return;
    float* post = state + hc;
    float* comb = state + 2 * hc;
    for (int i = lane; i < hc; i += 32) state[i] = pre(i), post[i] = 2.0f * sigmoid(mu[hc + i] * rho * p.scale[1] + p.base[hc + i]);
    auto logit = [&](int i) { return mu[2 * hc + i] * rho * p.scale[2] + p.base[2 * hc + i]; };
    if (hc * hc <= 32) {
      float const v = sinkhorn_lanes(lane < hc * hc ? logit(lane) : 0.0f, hc, p.sinkhorn_iters, eps);
      if (lane < hc * hc) comb[lane] = v;
    } else if (lane == 0) {
      for (int i = 0; i < hc * hc; ++i) comb[i] = logit(i);
      sinkhorn(comb, hc, p.sinkhorn_iters, eps);
    }
    __syncwarp();
    for (int i = lane; i < ms; i += 32) p.mix_state[t * ms + i] = state[i];
    return;
  }
  // Warps 1 …: the collapse u = Σ_i pre_i · x_i, its RMS norm and the output, synchronised among themselves
  // (named barrier 1). In batches of kHyperBatch columns per thread: every load of a batch is issued before
  // its results are stored (the stores could alias the loads for all the compiler knows, which serialised
  // one load latency per column); the sums keep the column order.
  int const threads = static_cast<int>(blockDim.x) - 32, ct = tid - 32;
  auto const sync = [threads] { asm volatile("bar.sync 1, %0;" ::"r"(threads) : "memory"); };
  float* weights = u + D;  // [hc] pre
  if (warp == 1 && lane < hc) weights[lane] = pre(lane);
  sync();
  float const* x = p.x + t * hc * D;
  float ss = 0.0f;
  std::int64_t const step = threads;
  for (std::int64_t e0 = ct; e0 < D; e0 += kHyperBatch * step) {
    float v[kHyperBatch] = {};
    for (int i = 0; i < hc; ++i) {
      float xs[kHyperBatch];
#pragma unroll
      for (int b = 0; b < kHyperBatch; ++b) xs[b] = e0 + b * step < D ? x[i * D + e0 + b * step] : 0.0f;
#pragma unroll
      for (int b = 0; b < kHyperBatch; ++b) v[b] += weights[i] * xs[b];
    }
#pragma unroll
    for (int b = 0; b < kHyperBatch; ++b)
      if (e0 + b * step < D) {
        u[e0 + b * step] = v[b];
        ss += v[b] * v[b];
      }
  }
  ss = warp_sum(ss);
  if (lane == 0) scratch[warp] = ss;
  sync();  // the warps' sums and every u are written
  float total = 0.0f;
  for (int w = 1; w <= threads / 32; ++w) total += scratch[w];
  auto const r = static_cast<float>(1.0 / sqrt(static_cast<double>(total) / static_cast<double>(D) + p.rms_eps));
  float* out = p.out + blockIdx.x * D;
  for (std::int64_t e0 = ct; e0 < D; e0 += kHyperBatch * step) {
    float w[kHyperBatch];
#pragma unroll
    for (int b = 0; b < kHyperBatch; ++b) w[b] = e0 + b * step < D ? p.norm[e0 + b * step] : 0.0f;
#pragma unroll
    for (int b = 0; b < kHyperBatch; ++b)
      if (e0 + b * step < D) out[e0 + b * step] = w[b] * (u[e0 + b * step] * r);
  }
}

}  // namespace detail

template <storage_element T>
Status embed_streams(EmbedArguments<T> const& a) {
  if (a.tokens == 0) return Status::success();
  return detail::launch("deepseek_v4 embed_kernel", a.overlap, detail::embed_kernel<T>, dim3(static_cast<unsigned>(a.tokens)), 256, 0,
                        a.stream, a);
}

inline Status hyper_partial(HyperPartialArguments const& a) {
  if (a.hc < 1 || a.hc > kMaxHc) return Status::failure(errc::unsupported, "hyper_partial (CUDA): hc_mult ", a.hc, " (1 to ", kMaxHc, ")");
  if (a.mix < 1 || a.hidden < 1) return Status::failure(errc::invalid_argument, "hyper_partial (CUDA): mix ", a.mix, ", hidden ", a.hidden);
  if (a.y && !a.mix_state) return Status::failure(errc::invalid_argument, "hyper_partial (CUDA): y without the mix state");
  if (a.tokens == 0) return Status::success();
  int const threads = a.hc * kHyperColumns;
  std::size_t const smem = (static_cast<std::size_t>(a.hc) * kHyperColumns + static_cast<std::size_t>(threads / 32) * (a.mix + 1)) * sizeof(float);
  if (smem > 48 * 1024) return Status::failure(errc::unsupported, "hyper_partial (CUDA): ", a.mix, " mix rows");
  return detail::launch("deepseek_v4 hyper_partial_kernel", a.overlap, detail::hyper_partial_kernel,
                        dim3(static_cast<unsigned>(hyper_blocks(a.hidden)), static_cast<unsigned>(a.tokens)), threads, smem, a.stream, a);
}

inline Status hyper_finish(HyperFinishArguments const& a) {
  if (a.hc < 1 || a.hc > kMaxHc) return Status::failure(errc::unsupported, "hyper_finish (CUDA): hc_mult ", a.hc);
  if (!a.head && !a.mix_state) return Status::failure(errc::invalid_argument, "hyper_finish (CUDA): a sub-layer site needs the mix state");
  if (a.count == 0) return Status::success();
  int const mix = a.head ? a.hc : (2 + a.hc) * a.hc;
  std::size_t const smem =
      (33 + static_cast<std::size_t>(mix + 1) + mix_state_size(a.hc) + static_cast<std::size_t>(a.hidden + a.hc)) * sizeof(float);
  if (smem > 48 * 1024) return Status::failure(errc::unsupported, "hyper_finish (CUDA): hidden size ", a.hidden);
  return detail::launch("deepseek_v4 hyper_finish_kernel", a.overlap, detail::hyper_finish_kernel, dim3(static_cast<unsigned>(a.count)),
                        256, smem, a.stream, a);
}

}  // namespace flashmemory::models::deepseek_v4::cuda
