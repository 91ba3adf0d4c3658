// flashmemory/attention/cuda/sparse_decode.cuh — sparse decode attention on the GPU: per query token, 64
// heads attend to its window rows ∪ its selected pool rows in one softmax with a per-head sink logit
// (deepseek-v4.md §5.3); keys = values = one shared 512-channel latent (MQA). Models `sparse_attention`.
//
// Algorithm (FlashAttention-2 online softmax, FlashDecoding split over rows, the MQA trick of FlashMLA of
// putting all heads of a token in the M dimension of the tensor-core products):
//   grid  = (splits, H / 64, B); one CTA = one token, 64 heads, a contiguous range of 64-row tiles of the
//           token's virtual row list [window rows 0..window_len) ++ [selected slots 0..K)
//   tile  : the 64 rows are gathered by cp.async into shared memory (double-buffered: tile j+1 streams in
//           while tile j is computed); the row table of tile j+2 is resolved one iteration ahead so that
//           the index loads never stall the copies
//   S     = Q·Kᵀ  [64 heads × 64 rows]       8 warps × (16 heads × 32 rows), k = 512, mma.m16n8k16 bf16
//   P     = exp2(S·scale·log2e − m)           row maxima exchanged through shared memory; P stored as bf16
//   O    += P·V   [64 heads × 512 channels]  8 warps × (64 heads × 64 channels), fp32 accumulators
//   end   : one split → O / (l + exp(sink − m)) written directly; several → unnormalised O and (m, l) to
//           the workspace and a combine kernel merges the splits with the sink (launched as a programmatic
//           dependent, so that its launch overlaps the split kernel; its loads over the splits are
//           independent, several in flight per thread).
// That is the mma.sync kernel (Options::wgmma = false, kept to compare against); the default on sm_90a is
// sparse_decode_wgmma_kernel below: the same tiles, splits and combine, with S and P·V as warpgroup MMAs and
// P kept in registers (one barrier per tile instead of three; see its comment).
// Rows are bf16 latents (Bf16Rows) or packed fp8 records dequantised in shared memory (PackedRows, in
// packed_rows.cuh). Masked slots (−1, or ≥ pool rows) and rows past window_len are skipped; an index past
// the pool is treated as −1 rather than read.
//
// Numerics: logits and softmax statistics fp32, P rounded to bf16 before P·V, fp32 accumulation — the
// DeepSeek-V4 reference kernel's choices (deepseek-v4.md §11.1).
#pragma once

#include <flashmemory/attention/concepts.hpp>
#include <flashmemory/attention/sparse_decode.hpp>
#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/detail/ptx.cuh>
#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/error.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

namespace flashmemory::attention::cuda {

// Rows stored as bf16 latents: the pool and window of SparseDecodeArguments<bfloat16, Output>.
struct Bf16Rows {
  static constexpr bool kPacked = false;
  static constexpr int kRecordBytes = 1024;
  static constexpr int kRowExtent = 512;  // the last extent of window and pool: channels
  template <class Output>
  using Arguments = SparseDecodeArguments<bfloat16, Output>;
};

namespace detail {
namespace ptx = ::flashmemory::cuda::detail;

inline constexpr int kHeadDim = 512;
inline constexpr int kHeadsPerCta = 64;
inline constexpr int kTileRows = 64;
inline constexpr int kThreads = 256;
inline constexpr int kCombineThreads = kHeadDim / 4;  // 4 channels per thread
inline constexpr int kMaxSplits = 1024;
// Shared rows are padded by 16 bytes so that the 8 rows one ldmatrix reads fall in distinct banks.
inline constexpr int kRowStride = kHeadDim * 2 + 16;
inline constexpr int kPStride = kTileRows * 2 + 16;
inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kNegInf = -__builtin_huge_valf();

struct Params {
  std::uint16_t const* q;         // [B, H, 512] bf16
  std::byte const* window;        // [B, W] records
  std::int32_t const* window_len; // [B]
  std::byte const* pool;          // [R] records
  std::int32_t const* selected;   // [B, K]
  float const* sink;              // [H]
  void* out;                      // [B, H, 512] Output
  float* partial_o;               // [B, splits, H, 512] unnormalised, when splits > 1
  float2* partial_ml;             // [B, splits, H] (max, sum) in the log2 domain
  std::int64_t pool_rows;
  std::int32_t window_rows, slots, heads, splits, tiles_per_split;
  float scale_log2;               // softmax scale · log2(e)
};

template <class Rows>
struct SharedStorage {
  static constexpr int kRawBytes = Rows::kPacked ? kTileRows * Rows::kRecordBytes : 16;
  alignas(128) std::byte q[kHeadsPerCta * kRowStride];                   // Q    [64 heads × 512] bf16
  alignas(128) std::byte kv[Rows::kPacked ? 1 : 2][kTileRows * kRowStride]; // K=V [64 rows × 512] bf16
  alignas(128) std::byte raw[Rows::kPacked ? 2 : 1][kRawBytes];          // packed records as loaded
  alignas(16) std::byte p[kHeadsPerCta * kPStride];                      // P    [64 heads × 64 rows] bf16
  std::byte const* rows[3][kTileRows];  // source of each row of three consecutive tiles; null = masked
  std::uint32_t valid[3][2];            // the same as bit masks, 32 rows per word
  float red_max[2][kHeadsPerCta];       // per-head maxima of the two row halves of the tile
  float alpha[kHeadsPerCta];            // per-head rescale factor of O for this tile
  float l_part[2][kHeadsPerCta];        // epilogue: per-head sums of the two row halves
  float m_final[kHeadsPerCta];          // epilogue: per-head maxima
};

__device__ __forceinline__ int ceil_div(int a, int b) { return (a + b - 1) / b; }

// The record that row v of sequence b reads: window rows first (wl of them), then the selected pool rows;
// null for a masked row (past the window and the slots, or an unused / out-of-range selection).
template <class Rows>
__device__ __forceinline__ std::byte const* row_source(Params const& p, int b, int wl, int v) {
  if (v < wl) return p.window + (static_cast<std::int64_t>(b) * p.window_rows + v) * Rows::kRecordBytes;
  if (v - wl >= p.slots) return nullptr;
  std::int32_t idx = p.selected[static_cast<std::int64_t>(b) * p.slots + (v - wl)];
  return idx >= 0 && idx < p.pool_rows ? p.pool + static_cast<std::int64_t>(idx) * Rows::kRecordBytes : nullptr;
}

template <class Rows, class Output>
__global__ void __launch_bounds__(kThreads, 1) sparse_decode_kernel(Params const p) {
  extern __shared__ __align__(128) std::byte smem_bytes[];
  auto& s = *reinterpret_cast<SharedStorage<Rows>*>(smem_bytes);
  int const tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  int const g = lane / 4, t = lane % 4;
  int const split = static_cast<int>(blockIdx.x), head0 = static_cast<int>(blockIdx.y) * kHeadsPerCta;
  int const b = static_cast<int>(blockIdx.z);

  if (p.splits > 1) ptx::launch_dependents();  // the combine kernel may launch; it waits for this one's results
  int const wl = min(max(p.window_len[b], 0), p.window_rows);
  int const tile_begin = split * p.tiles_per_split;
  int const tile_end = min(tile_begin + p.tiles_per_split, ceil_div(wl + p.slots, kTileRows));

  // Resolves the 64 row sources of `tile` into table `slot` (warps 0 and 1, one row per thread).
  auto resolve_rows = [&](int tile, int slot) {
    std::byte const* src = tile < tile_end ? row_source<Rows>(p, b, wl, tile * kTileRows + tid) : nullptr;
    s.rows[slot][tid] = src;
    unsigned mask = __ballot_sync(0xffffffffu, src != nullptr);
    if (lane == 0) s.valid[slot][warp] = mask;
  };

  // Starts the copies of one tile: bf16 rows straight into a K=V buffer (masked rows zero-filled), packed
  // records into a raw buffer (masked rows skipped; dequantisation writes zeros for them).
  auto load_tile = [&](int slot, int buf) {
    if constexpr (!Rows::kPacked) {
      int const chunk = tid % 64;  // 16-byte chunk of a 1024-byte row
#pragma unroll
      for (int i = 0; i < kTileRows * 64 / kThreads; ++i) {
        int const row = tid / 64 + i * (kThreads / 64);
        std::byte const* src = s.rows[slot][row];
        ptx::cp_async_16(s.kv[buf] + row * kRowStride + chunk * 16, src ? src + chunk * 16 : reinterpret_cast<std::byte const*>(p.q),
                         src != nullptr);
      }
    } else {
      constexpr int kPieces = Rows::kRecordBytes / 8;  // 8-byte pieces of a record
      for (int c = tid; c < kTileRows * kPieces; c += kThreads) {
        int const row = c / kPieces, piece = c % kPieces;
        std::byte const* src = s.rows[slot][row];
        if (src) ptx::cp_async_8(s.raw[buf] + row * Rows::kRecordBytes + piece * 8, src + piece * 8);
      }
    }
  };

  // Q of this token's 64 heads, once.
  {
    std::uint16_t const* q = p.q + (static_cast<std::int64_t>(b) * p.heads + head0) * kHeadDim;
    int const chunk = tid % 64;
#pragma unroll
    for (int i = 0; i < kHeadsPerCta * 64 / kThreads; ++i) {
      int const head = tid / 64 + i * (kThreads / 64);
      ptx::cp_async_16(s.q + head * kRowStride + chunk * 16, q + head * kHeadDim + chunk * 8);
    }
  }
  if (warp < 2) {
    resolve_rows(tile_begin, 0);
    resolve_rows(tile_begin + 1, 1);
  }
  __syncthreads();
  if (tile_begin < tile_end) load_tile(0, 0);
  ptx::cp_async_commit();

  // S-phase role: heads 16·hg … +16, tile rows 32·rh … +32. PV-phase role: all 64 heads, channels 64·warp … +64.
  int const hg = warp % 4, rh = warp / 4;
  float m_run[2] = {kNegInf, kNegInf};  // running maxima of heads 16hg+g and 16hg+g+8 (log2 domain)
  float l_run[2] = {0.f, 0.f};          // this thread's share of the running sums of the same heads
  float o[4][8][4];                     // O [4 head tiles × 8 channel tiles × fragment]
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][nt][e] = 0.f;

  for (int j = tile_begin, it = 0; j < tile_end; ++j, ++it) {
    int const slot = it % 3, buf = it % 2;
    ptx::cp_async_wait<0>();
    __syncthreads();  // tile j is in shared memory; every warp is done with tile j−1
    if (j + 1 < tile_end) load_tile((it + 1) % 3, (it + 1) % 2);
    ptx::cp_async_commit();
    if (warp < 2) resolve_rows(j + 2, (it + 2) % 3);
    std::byte const* kv = s.kv[0];
    if constexpr (Rows::kPacked) {
      Rows::dequantize_tile(s.raw[buf], s.rows[slot], s.kv[0], [](int row, int piece) { return row * kRowStride + piece * 16; },
                            tid, kThreads);
      __syncthreads();
    } else {
      kv = s.kv[buf];
    }

    // ---- S = Q·Kᵀ for 16 heads × 32 rows --------------------------------------------------------------
    float acc[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
    {
      std::byte const* a_base = s.q + (hg * 16 + (lane % 16)) * kRowStride + (lane / 16) * 16;
      int const mi = lane / 8;
      std::byte const* b_base = kv + (rh * 32 + (lane % 8) + (mi / 2) * 8) * kRowStride + (mi % 2) * 16;
#pragma unroll 4
      for (int ks = 0; ks < kHeadDim / 16; ++ks) {
        std::uint32_t a[4], b0[4], b1[4];
        ptx::ldmatrix_x4(a, a_base + ks * 32);
        ptx::ldmatrix_x4(b0, b_base + ks * 32);
        ptx::ldmatrix_x4(b1, b_base + 16 * kRowStride + ks * 32);
        ptx::mma_bf16(acc[0], a, b0[0], b0[1]);
        ptx::mma_bf16(acc[1], a, b0[2], b0[3]);
        ptx::mma_bf16(acc[2], a, b1[0], b1[1]);
        ptx::mma_bf16(acc[3], a, b1[2], b1[3]);
      }
    }
    // Scale into the log2 domain, mask, and take this warp's per-head maxima.
    std::uint32_t const valid = s.valid[slot][rh];
    float mx[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int const row = nt * 8 + 2 * t + (e % 2);
        float v = (valid >> row) & 1u ? acc[nt][e] * p.scale_log2 : kNegInf;
        acc[nt][e] = v;
        mx[e / 2] = fmaxf(mx[e / 2], v);
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    }
    if (t == 0) {
      s.red_max[rh][hg * 16 + g] = mx[0];
      s.red_max[rh][hg * 16 + g + 8] = mx[1];
    }
    __syncthreads();  // both row halves' maxima are visible

    // ---- P = exp2(S − m), running sums, rescale factors ------------------------------------------------
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      int const head = hg * 16 + g + 8 * h;
      float const m_new = fmaxf(m_run[h], fmaxf(s.red_max[0][head], s.red_max[1][head]));
      float const m_use = m_new == kNegInf ? 0.f : m_new;  // a fully masked head so far: keep exp2 finite
      float const alpha = exp2f(m_run[h] - m_use);
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        float const p0 = exp2f(acc[nt][2 * h] - m_use), p1 = exp2f(acc[nt][2 * h + 1] - m_use);
        sum += p0 + p1;
        *reinterpret_cast<std::uint32_t*>(s.p + head * kPStride + (rh * 32 + nt * 8 + 2 * t) * 2) =
            ptx::pack_bf16x2(p0, p1);
      }
      l_run[h] = l_run[h] * alpha + sum;
      m_run[h] = m_new;
      if (rh == 0 && t == 0) s.alpha[head] = alpha;
    }
    __syncthreads();  // P and the rescale factors are visible

    // ---- O = O·alpha + P·V for 64 heads × 64 channels --------------------------------------------------
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
      float const a_lo = s.alpha[mt * 16 + g], a_hi = s.alpha[mt * 16 + g + 8];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        o[mt][nt][0] *= a_lo;
        o[mt][nt][1] *= a_lo;
        o[mt][nt][2] *= a_hi;
        o[mt][nt][3] *= a_hi;
      }
    }
    {
      int const mi = lane / 8;
      std::byte const* v_base = kv + ((lane % 8) + (mi % 2) * 8) * kRowStride + (warp * 64 + (mi / 2) * 8) * 2;
      std::byte const* a_base = s.p + (lane % 16) * kPStride + (lane / 16) * 16;
#pragma unroll
      for (int kk = 0; kk < kTileRows / 16; ++kk) {
        std::uint32_t a[4][4];
#pragma unroll
        for (int mt = 0; mt < 4; ++mt) ptx::ldmatrix_x4(a[mt], a_base + mt * 16 * kPStride + kk * 32);
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          std::uint32_t bv[4];
          ptx::ldmatrix_x4_trans(bv, v_base + kk * 16 * kRowStride + np * 32);
#pragma unroll
          for (int mt = 0; mt < 4; ++mt) {
            ptx::mma_bf16(o[mt][2 * np], a[mt], bv[0], bv[1]);
            ptx::mma_bf16(o[mt][2 * np + 1], a[mt], bv[2], bv[3]);
          }
        }
      }
    }
  }
  ptx::cp_async_wait<0>();

  // ---- epilogue: combine the two row halves' sums, normalise or write the split's partial result -------
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
    if (t == 0) {
      s.l_part[rh][hg * 16 + g + 8 * h] = l_run[h];
      if (rh == 0) s.m_final[hg * 16 + g + 8 * h] = m_run[h];
    }
  }
  __syncthreads();

  std::int64_t const token_head0 = static_cast<std::int64_t>(b) * p.heads + head0;
  if (p.splits == 1) {
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int const head = mt * 16 + g + 8 * h;
        float const m = s.m_final[head];
        float const m_use = m == kNegInf ? 0.f : m;
        float const denom = s.l_part[0][head] + s.l_part[1][head] + exp2f(p.sink[head0 + head] * kLog2e - m_use);
        float const inv = 1.f / denom;
        Output* out = static_cast<Output*>(p.out) + (token_head0 + head) * kHeadDim + warp * 64 + 2 * t;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          float const x = o[mt][nt][2 * h] * inv, y = o[mt][nt][2 * h + 1] * inv;
          if constexpr (std::is_same_v<Output, float>) {
            *reinterpret_cast<float2*>(out + nt * 8) = make_float2(x, y);
          } else {
            *reinterpret_cast<std::uint32_t*>(out + nt * 8) = ptx::pack_bf16x2(x, y);
          }
        }
      }
  } else {
    std::int64_t const part0 = (static_cast<std::int64_t>(b) * p.splits + split) * p.heads + head0;
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int const head = mt * 16 + g + 8 * h;
        float* out = p.partial_o + (part0 + head) * kHeadDim + warp * 64 + 2 * t;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
          *reinterpret_cast<float2*>(out + nt * 8) = make_float2(o[mt][nt][2 * h], o[mt][nt][2 * h + 1]);
      }
    if (tid < kHeadsPerCta)
      p.partial_ml[part0 + tid] = make_float2(s.m_final[tid], s.l_part[0][tid] + s.l_part[1][tid]);
  }
}

// Merges the splits of one (token, head): out = Σ_s 2^(m_s−M)·O_s / (Σ_s 2^(m_s−M)·l_s + 2^(sink·log2e−M)).
// A split with no unmasked row has m = −∞, l = 0 and O = 0: its weight is 0 and adds nothing.
template <class Output>
__global__ void __launch_bounds__(kCombineThreads) combine_splits_kernel(Params const p) {
  __shared__ float weight[kMaxSplits];  // 2^(m_s − M)
  __shared__ float red[kCombineThreads / 32];
  int const head = static_cast<int>(blockIdx.x), b = static_cast<int>(blockIdx.y);
  int const tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  std::int64_t const first = static_cast<std::int64_t>(b) * p.splits * p.heads + head;
  ptx::wait_for_prerequisites();  // the split kernel's partial results are complete and visible

  // Block-wide reductions over the splits, one split per thread at a time.
  auto block_reduce = [&](float v, auto op) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = red[0];
#pragma unroll
    for (int w = 1; w < kCombineThreads / 32; ++w) v = op(v, red[w]);
    __syncthreads();  // red is free again
    return v;
  };
  float const sink = p.sink[head] * kLog2e;
  float m = sink;
  for (int sp = tid; sp < p.splits; sp += kCombineThreads) m = fmaxf(m, p.partial_ml[first + sp * p.heads].x);
  m = block_reduce(m, [](float x, float y) { return fmaxf(x, y); });
  float l = 0.f;
  for (int sp = tid; sp < p.splits; sp += kCombineThreads) {
    float2 const ml = p.partial_ml[first + sp * p.heads];
    float const w = exp2f(ml.x - m);
    weight[sp] = w;
    l += w * ml.y;
  }
  float const denom = block_reduce(l, [](float x, float y) { return x + y; }) + exp2f(sink - m);  // also orders `weight`

  int const c = tid * 4;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
  for (int sp = 0; sp < p.splits; ++sp) {
    float const w = weight[sp];
    float4 const v = *reinterpret_cast<float4 const*>(p.partial_o + (first + sp * p.heads) * kHeadDim + c);
    acc.x += w * v.x;
    acc.y += w * v.y;
    acc.z += w * v.z;
    acc.w += w * v.w;
  }
  float const inv = 1.f / denom;
  Output* out = static_cast<Output*>(p.out) + (static_cast<std::int64_t>(b) * p.heads + head) * kHeadDim + c;
  if constexpr (std::is_same_v<Output, float>) {
    *reinterpret_cast<float4*>(out) = make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
  } else {
    *reinterpret_cast<uint2*>(out) =
        make_uint2(ptx::pack_bf16x2(acc.x * inv, acc.y * inv), ptx::pack_bf16x2(acc.z * inv, acc.w * inv));
  }
}

// ---- the wgmma kernel (sm_90a) --------------------------------------------------------------------------
// Two warpgroups; each computes the whole S = Q·Kᵀ [64 heads × 64 rows] (32 × wgmma m64n64k16, Q and K from
// shared memory) — the duplicate product costs less tensor time than a tile's DRAM time and leaves every
// softmax statistic inside one warpgroup, so no maxima or P cross shared memory — then keeps P in registers
// as the A operand of O[64 heads × 256 channels] += P·V (4 × wgmma m64n256k16, V from shared memory, the
// warpgroup's half of the channels). One barrier per tile. Q and the K=V tiles sit in wgmma's 128-byte
// swizzled layout (swizzled_offset): 8 blocks of 64 channels, each [64 rows × 128 B], which is K-major for
// Q·Kᵀ and N-major for P·V.
inline constexpr int kSwizzleRows = 64;  // rows of Q (heads) and of a tile
inline constexpr int kBlockBytes = kSwizzleRows * 128;

// Byte offset of 16-byte chunk `chunk` (0…63) of row `row` in a swizzled [64 × 512] bf16 matrix.
__device__ __forceinline__ int swizzled_offset(int row, int chunk) {
  return (chunk / 8) * kBlockBytes + row * 128 + (((chunk % 8) ^ (row % 8)) * 16);
}

template <class Rows>
struct WgmmaStorage {
  static constexpr int kMatrixBytes = kSwizzleRows * kHeadDim * 2;
  static constexpr int kRawBytes = Rows::kPacked ? kTileRows * Rows::kRecordBytes : 16;
  alignas(1024) std::byte q[kMatrixBytes];                        // Q    [64 heads × 512] bf16, swizzled
  alignas(1024) std::byte kv[Rows::kPacked ? 1 : 2][kMatrixBytes]; // K=V [64 rows × 512] bf16, swizzled
  alignas(16) std::byte raw[Rows::kPacked ? 2 : 1][kRawBytes];    // packed records as loaded
  std::byte const* rows[3][kTileRows];  // source of each row of three consecutive tiles; null = masked
  std::uint32_t valid[3][2];            // the same as bit masks, 32 rows per word
};

template <class Rows, class Output>
__global__ void __launch_bounds__(kThreads, 1) sparse_decode_wgmma_kernel(Params const p) {
  extern __shared__ __align__(128) std::byte smem_bytes[];
  // The swizzle is a function of address bits: the storage starts on a 1024-byte boundary.
  auto& s = *reinterpret_cast<WgmmaStorage<Rows>*>(smem_bytes + (1024 - ptx::smem_address(smem_bytes) % 1024) % 1024);
  int const tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  int const g = lane / 4, t = lane % 4;
  int const wg = warp / 4, wq = warp % 4;  // warpgroup (channel half of P·V), warp within it (16 heads)
  int const split = static_cast<int>(blockIdx.x), head0 = static_cast<int>(blockIdx.y) * kHeadsPerCta;
  int const b = static_cast<int>(blockIdx.z);

  if (p.splits > 1) ptx::launch_dependents();  // the combine kernel may launch; it waits for this one's results
  int const wl = min(max(p.window_len[b], 0), p.window_rows);
  int const tile_begin = split * p.tiles_per_split;
  int const tile_end = min(tile_begin + p.tiles_per_split, ceil_div(wl + p.slots, kTileRows));

  auto resolve_rows = [&](int tile, int slot) {  // as in sparse_decode_kernel: warps 0 and 1, one row per thread
    std::byte const* src = tile < tile_end ? row_source<Rows>(p, b, wl, tile * kTileRows + tid) : nullptr;
    s.rows[slot][tid] = src;
    unsigned mask = __ballot_sync(0xffffffffu, src != nullptr);
    if (lane == 0) s.valid[slot][warp] = mask;
  };
  auto load_tile = [&](int slot, int buf) {
    if constexpr (!Rows::kPacked) {
      int const chunk = tid % 64;
#pragma unroll
      for (int i = 0; i < kTileRows * 64 / kThreads; ++i) {
        int const row = tid / 64 + i * (kThreads / 64);
        std::byte const* src = s.rows[slot][row];
        ptx::cp_async_16(s.kv[buf] + swizzled_offset(row, chunk), src ? src + chunk * 16 : reinterpret_cast<std::byte const*>(p.q),
                         src != nullptr);
      }
    } else {
      constexpr int kPieces = Rows::kRecordBytes / 8;
      for (int c = tid; c < kTileRows * kPieces; c += kThreads) {
        int const row = c / kPieces, piece = c % kPieces;
        std::byte const* src = s.rows[slot][row];
        if (src) ptx::cp_async_8(s.raw[buf] + row * Rows::kRecordBytes + piece * 8, src + piece * 8);
      }
    }
  };

  {
    std::uint16_t const* q = p.q + (static_cast<std::int64_t>(b) * p.heads + head0) * kHeadDim;
    int const chunk = tid % 64;
#pragma unroll
    for (int i = 0; i < kHeadsPerCta * 64 / kThreads; ++i) {
      int const head = tid / 64 + i * (kThreads / 64);
      ptx::cp_async_16(s.q + swizzled_offset(head, chunk), q + head * kHeadDim + chunk * 8);
    }
  }
  if (warp < 2) {
    resolve_rows(tile_begin, 0);
    resolve_rows(tile_begin + 1, 1);
  }
  __syncthreads();
  if (tile_begin < tile_end) load_tile(0, 0);
  ptx::cp_async_commit();

  // Descriptors: Q and K are K-major (8-row groups 1024 B apart), V is N-major (64-channel blocks kBlockBytes
  // apart, 8-row groups 1024 B apart). K-steps add byte offsets >> 4 to the start address field.
  std::uint64_t const q_desc = ptx::wgmma_descriptor_sw128(s.q, 16, 1024);
  float m_run[2] = {kNegInf, kNegInf};  // running maxima of heads 16wq+g and 16wq+g+8 (log2 domain)
  float l_run[2] = {0.f, 0.f};          // this thread's share of their running sums
  float o[128];                          // O [64 heads × channels 256wg … +256], accumulator fragment
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;

  for (int j = tile_begin, it = 0; j < tile_end; ++j, ++it) {
    int const slot = it % 3, buf = it % 2;
    ptx::cp_async_wait<0>();
    if constexpr (!Rows::kPacked) ptx::fence_proxy_async_shared();  // cp.async wrote the tile wgmma reads
    __syncthreads();  // tile j is in shared memory; both warpgroups are done with tile j−1
    if (j + 1 < tile_end) load_tile((it + 1) % 3, (it + 1) % 2);
    ptx::cp_async_commit();
    if (warp < 2) resolve_rows(j + 2, (it + 2) % 3);
    std::byte* kv = s.kv[0];
    if constexpr (Rows::kPacked) {
      Rows::dequantize_tile(s.raw[buf], s.rows[slot], s.kv[0], [](int row, int piece) { return swizzled_offset(row, piece); },
                            tid, kThreads);
      ptx::fence_proxy_async_shared();
      __syncthreads();
    } else {
      kv = s.kv[buf];
    }

    // ---- S = Q·Kᵀ [64 heads × 64 rows] ----------------------------------------------------------------
    float acc[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) acc[i] = 0.f;
    std::uint64_t const k_desc = ptx::wgmma_descriptor_sw128(kv, 16, 1024);
    ptx::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kHeadDim / 16; ++ks) {
      std::uint64_t const step = static_cast<std::uint64_t>(((ks / 4) * kBlockBytes + (ks % 4) * 32) >> 4);
      ptx::wgmma_m64n64k16_bf16_ss(acc, q_desc + step, k_desc + step, ks > 0);
    }
    ptx::wgmma_commit();
    ptx::wgmma_wait<0>();
    ptx::wgmma_fence_registers(acc);

    // Scale into the log2 domain, mask, row maxima (each row's 64 columns live in the 4 threads of a quad).
    std::uint32_t const valid[2] = {s.valid[slot][0], s.valid[slot][1]};
    float mx[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int const col = n * 8 + 2 * t + (e % 2);
        float const v = (valid[n / 4] >> (col % 32)) & 1u ? acc[4 * n + e] * p.scale_log2 : kNegInf;
        acc[4 * n + e] = v;
        mx[e / 2] = fmaxf(mx[e / 2], v);
      }
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      float const m_new = fmaxf(m_run[h], mx[h]);
      float const m_use = m_new == kNegInf ? 0.f : m_new;  // a fully masked head so far: keep exp2 finite
      alpha[h] = exp2f(m_run[h] - m_use);
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        float const p0 = exp2f(acc[4 * n + 2 * h] - m_use), p1 = exp2f(acc[4 * n + 2 * h + 1] - m_use);
        acc[4 * n + 2 * h] = p0;
        acc[4 * n + 2 * h + 1] = p1;
        sum += p0 + p1;
      }
      l_run[h] = l_run[h] * alpha[h] + sum;
      m_run[h] = m_new;
    }
    // P as bf16 A fragments: k-step kk covers columns 16kk … +16, i.e. accumulator chunks 2kk and 2kk+1.
    std::uint32_t pa[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      pa[kk][0] = ptx::pack_bf16x2(acc[8 * kk + 0], acc[8 * kk + 1]);
      pa[kk][1] = ptx::pack_bf16x2(acc[8 * kk + 2], acc[8 * kk + 3]);
      pa[kk][2] = ptx::pack_bf16x2(acc[8 * kk + 4], acc[8 * kk + 5]);
      pa[kk][3] = ptx::pack_bf16x2(acc[8 * kk + 6], acc[8 * kk + 7]);
    }

    // ---- O = O·alpha + P·V [64 heads × 256 channels] --------------------------------------------------
#pragma unroll
    for (int n = 0; n < 32; ++n) {
      o[4 * n + 0] *= alpha[0];
      o[4 * n + 1] *= alpha[0];
      o[4 * n + 2] *= alpha[1];
      o[4 * n + 3] *= alpha[1];
    }
    std::uint64_t const v_desc = ptx::wgmma_descriptor_sw128(kv + wg * 4 * kBlockBytes, kBlockBytes, 1024);
    ptx::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kTileRows / 16; ++kk)
      ptx::wgmma_m64n256k16_bf16_rs_tb(o, pa[kk], v_desc + static_cast<std::uint64_t>((kk * 16 * 128) >> 4));
    ptx::wgmma_commit();
    ptx::wgmma_wait<0>();  // V's buffer is reloaded after the next barrier
    ptx::wgmma_fence_registers(o);
  }
  ptx::cp_async_wait<0>();

  // ---- epilogue: both warpgroups hold the same statistics; each writes its 256 channels ----------------
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
    l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
  }
  std::int64_t const token_head0 = static_cast<std::int64_t>(b) * p.heads + head0;
  int const c0 = wg * 256 + 2 * t;
  if (p.splits == 1) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      int const head = wq * 16 + g + 8 * h;
      float const m_use = m_run[h] == kNegInf ? 0.f : m_run[h];
      float const inv = 1.f / (l_run[h] + exp2f(p.sink[head0 + head] * kLog2e - m_use));
      Output* out = static_cast<Output*>(p.out) + (token_head0 + head) * kHeadDim + c0;
#pragma unroll
      for (int n = 0; n < 32; ++n) {
        float const x = o[4 * n + 2 * h] * inv, y = o[4 * n + 2 * h + 1] * inv;
        if constexpr (std::is_same_v<Output, float>) {
          *reinterpret_cast<float2*>(out + n * 8) = make_float2(x, y);
        } else {
          *reinterpret_cast<std::uint32_t*>(out + n * 8) = ptx::pack_bf16x2(x, y);
        }
      }
    }
  } else {
    std::int64_t const part0 = (static_cast<std::int64_t>(b) * p.splits + split) * p.heads + head0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      int const head = wq * 16 + g + 8 * h;
      float* out = p.partial_o + (part0 + head) * kHeadDim + c0;
#pragma unroll
      for (int n = 0; n < 32; ++n) *reinterpret_cast<float2*>(out + n * 8) = make_float2(o[4 * n + 2 * h], o[4 * n + 2 * h + 1]);
      if (wg == 0 && t == 0) p.partial_ml[part0 + head] = make_float2(m_run[h], l_run[h]);
    }
  }
}

}  // namespace detail

// The CUDA model of `sparse_attention`. Construct it once (it reads the device's SM count and raises the
// kernel's shared-memory limit); run() only launches, never allocates, and can be captured in a CUDA graph.
//
// Shapes: d = 512 (DeepSeek-V4's latent), H a multiple of 64, q/window/pool 16-byte aligned. When the rows
// of the batch do not fill the GPU, run() splits each token's rows over several CTAs and needs a device
// workspace of workspace_size(args) bytes (at most max_workspace_size()), passed at construction.
template <class Rows = Bf16Rows, class Output = bfloat16>
class SparseDecode {
  static_assert(std::is_same_v<Output, float> || std::is_same_v<Output, bfloat16>, "Output is float or bfloat16");

 public:
  using Arguments = typename Rows::template Arguments<Output>;
  struct Options {
    int splits = 0;      // splits per token (at most 1024); 0 = as many as fill the GPU's SMs once
    bool wgmma = true;   // the warpgroup-MMA kernel (sm_90a); false: the mma.sync kernel (kept for comparison)
  };

  explicit SparseDecode(std::span<std::byte> workspace = {}, Options options = {})
      : workspace_(workspace), options_(options) {
    int device = 0;
    FLASHMEMORY_CUDA_CHECK(cudaGetDevice(&device));
    FLASHMEMORY_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device));
    int smem_limit = 0;
    FLASHMEMORY_CUDA_CHECK(cudaDeviceGetAttribute(&smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (static_cast<int>(smem_bytes()) > smem_limit)
      fail(errc::unsupported, "sparse attention: the kernel needs ", smem_bytes(), " bytes of shared memory, device ",
           device, " allows ", smem_limit);
    FLASHMEMORY_CUDA_CHECK(cudaFuncSetAttribute(kernel(), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(smem_bytes())));
  }

  // Workspace these arguments need (0 when one split per token suffices).
  std::size_t workspace_size(Arguments const& a) const {
    Plan pl = plan(a);
    if (pl.splits == 1) return 0;
    return static_cast<std::size_t>(a.q.extent(0)) * pl.splits * a.q.extent(1) * kPartialBytesPerHead;
  }
  // An upper bound of workspace_size over all arguments when Options::splits is 0.
  std::size_t max_workspace_size() const {
    return static_cast<std::size_t>(sms_) * detail::kHeadsPerCta * kPartialBytesPerHead;
  }

  Status can_implement(Arguments const& a) const {
    index_t const B = a.q.extent(0), H = a.q.extent(1), d = a.q.extent(2);
    index_t const W = a.window.extent(1), K = a.selected.extent(1);
    if (d != detail::kHeadDim)
      return Status::failure(errc::unsupported, "sparse attention (CUDA): head_dim ", d, " is not ", detail::kHeadDim);
    if (H <= 0 || H % detail::kHeadsPerCta != 0)
      return Status::failure(errc::unsupported, "sparse attention (CUDA): ", H, " heads is not a positive multiple of ",
                             detail::kHeadsPerCta);
    if (B > 65535 || H / detail::kHeadsPerCta > 65535)
      return Status::failure(errc::unsupported, "sparse attention (CUDA): batch ", B, " exceeds 65535");
    if (a.window.extent(0) != B)
      return Status::failure(errc::bad_shape, "sparse attention (CUDA): window has ", a.window.extent(0), " tokens, q ", B);
    if (a.window.extent(2) != Rows::kRowExtent || (K > 0 && a.pool.extent(1) != Rows::kRowExtent))
      return Status::failure(errc::bad_shape, "sparse attention (CUDA): window and pool rows must have ", Rows::kRowExtent,
                             Rows::kPacked ? " bytes" : " channels", ", found ", a.window.extent(2), " and ", a.pool.extent(1));
    if (a.window_len.extent(0) != B || a.selected.extent(0) != B)
      return Status::failure(errc::bad_shape, "sparse attention (CUDA): window_len [", a.window_len.extent(0), "] and selected [",
                             a.selected.extent(0), ", K] must have ", B, " rows");
    if (a.sink.extent(0) != H) return Status::failure(errc::bad_shape, "sparse attention (CUDA): sink must have ", H, " heads");
    if (a.out.extent(0) != B || a.out.extent(1) != H || a.out.extent(2) != d)
      return Status::failure(errc::bad_shape, "sparse attention (CUDA): out must be [", B, ", ", H, ", ", d, "]");
    if (W + K > (index_t{1} << 30))
      return Status::failure(errc::unsupported, "sparse attention (CUDA): ", W + K, " rows per token");
    auto misaligned = [](void const* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % 16 != 0; };
    if (misaligned(a.q.data_handle()) || misaligned(a.window.data_handle()) || misaligned(a.pool.data_handle()) ||
        misaligned(a.out.data_handle()))
      return Status::failure(errc::invalid_argument, "sparse attention (CUDA): q, window, pool and out must be 16-byte aligned");
    if (B > 0 && (!a.q.data_handle() || !a.window_len.data_handle() || !a.sink.data_handle() || !a.out.data_handle() ||
                  (W > 0 && !a.window.data_handle()) || (K > 0 && (!a.selected.data_handle() || !a.pool.data_handle()))))
      return Status::failure(errc::invalid_argument, "sparse attention (CUDA): a non-empty tensor has a null pointer");
    if (std::size_t need = workspace_size(a); need > workspace_.size())
      return Status::failure(errc::invalid_argument, "sparse attention (CUDA): ", plan(a).splits,
                             " splits per token need a workspace of ", need, " bytes, ", workspace_.size(), " given");
    return Status::success();
  }

  Status run(Arguments const& a) const {
    if (Status st = can_implement(a); !st) return st;
    index_t const B = a.q.extent(0), H = a.q.extent(1);
    if (B == 0) return Status::success();
    Plan const pl = plan(a);
    detail::Params p{};
    p.q = reinterpret_cast<std::uint16_t const*>(a.q.data_handle());
    p.window = reinterpret_cast<std::byte const*>(a.window.data_handle());
    p.window_len = a.window_len.data_handle();
    p.pool = reinterpret_cast<std::byte const*>(a.pool.data_handle());
    p.selected = a.selected.data_handle();
    p.sink = a.sink.data_handle();
    p.out = a.out.data_handle();
    p.partial_o = reinterpret_cast<float*>(workspace_.data());
    p.partial_ml = reinterpret_cast<float2*>(workspace_.data() + static_cast<std::size_t>(B) * pl.splits * H * detail::kHeadDim * 4);
    p.pool_rows = a.selected.extent(1) > 0 ? a.pool.extent(0) : 0;
    p.window_rows = static_cast<std::int32_t>(a.window.extent(1));
    p.slots = static_cast<std::int32_t>(a.selected.extent(1));
    p.heads = static_cast<std::int32_t>(H);
    p.splits = pl.splits;
    p.tiles_per_split = pl.tiles_per_split;
    p.scale_log2 = a.scale * detail::kLog2e;
    auto stream = static_cast<cudaStream_t>(a.stream);
    dim3 const grid(static_cast<unsigned>(pl.splits), static_cast<unsigned>(H / detail::kHeadsPerCta),
                    static_cast<unsigned>(B));
    kernel()<<<grid, detail::kThreads, smem_bytes(), stream>>>(p);
    if (Status st = flashmemory::cuda::launch_status("sparse_decode_kernel", __FILE__, __LINE__); !st) return st;
    if (pl.splits > 1) {
      cudaLaunchAttribute attr{};
      attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr.val.programmaticStreamSerializationAllowed = 1;
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3(static_cast<unsigned>(H), static_cast<unsigned>(B));
      cfg.blockDim = dim3(detail::kCombineThreads);
      cfg.stream = stream;
      cfg.attrs = &attr;
      cfg.numAttrs = 1;
      FLASHMEMORY_CUDA_TRY(cudaLaunchKernelEx(&cfg, detail::combine_splits_kernel<Output>, p));
      if (Status st = flashmemory::cuda::launch_status("combine_splits_kernel", __FILE__, __LINE__); !st) return st;
    }
    return Status::success();
  }

  // How run() would split these arguments (for benchmarks and logs).
  struct Plan {
    int splits = 1;
    int tiles_per_split = 0;
  };
  Plan plan(Arguments const& a) const {
    index_t const rows = a.window.extent(1) + a.selected.extent(1);
    int const tiles = static_cast<int>(std::max<index_t>((rows + detail::kTileRows - 1) / detail::kTileRows, 1));
    index_t const ctas = std::max<index_t>(a.q.extent(0) * (a.q.extent(1) / detail::kHeadsPerCta), 1);
    int splits = options_.splits > 0 ? options_.splits : static_cast<int>(std::max<index_t>(sms_ / ctas, 1));
    splits = std::clamp(splits, 1, std::min(tiles, detail::kMaxSplits));
    int const per_split = (tiles + splits - 1) / splits;
    return {(tiles + per_split - 1) / per_split, per_split};
  }

  // Dynamic shared memory of the selected kernel (the wgmma one aligns its storage to 1024 bytes itself).
  std::size_t smem_bytes() const {
    return options_.wgmma ? sizeof(detail::WgmmaStorage<Rows>) + 1024 : sizeof(detail::SharedStorage<Rows>);
  }

 private:
  using KernelFunction = void (*)(detail::Params);
  KernelFunction kernel() const {
    return options_.wgmma ? detail::sparse_decode_wgmma_kernel<Rows, Output> : detail::sparse_decode_kernel<Rows, Output>;
  }

  static constexpr std::size_t kPartialBytesPerHead = detail::kHeadDim * sizeof(float) + sizeof(float2);

  std::span<std::byte> workspace_;
  Options options_;
  int sms_ = 0;
};
static_assert(sparse_attention<SparseDecode<Bf16Rows, bfloat16>>);
static_assert(sparse_attention<SparseDecode<Bf16Rows, float>>);

}  // namespace flashmemory::attention::cuda
