// flashmemory/indexer/cuda/scores.cuh — index scoring on the GPU: for each listed key row c,
//   logit_l(c) = Σ_h w_l[h] · ReLU(⟨q_l[h], k_l[c]⟩)            (indexer/reference.hpp: index_scores)
// for L target layers at once, each optionally through a sigmoid, combined by max or mean. One layer without
// sigmoid is the native Lightning Indexer (Level 2, every step, over resident rows); three layers with
// sigmoid and max is the Memory Indexer (Level 1, every τ steps, over all chunks; lsa.md §3).
//
// Keys are float32 rows (F32Keys, [N, 128]) or DeepSeek's packed fp8 records (Fp8Keys: 128 e4m3 bytes and
// one fp32 scale per row, layout::IndexKeyFp8, 132 B). An optional row list picks which pool rows to score
// (the resident cells); a listed row outside [0, N) scores −∞.
//
// Algorithm: memory-bound streaming with tensor-core dot products. Per layer, every warp keeps the
// B-fragments of qᵀ for 64 heads in registers (128 registers); tiles of 16·(8/HG) keys stream through a
// cp.async pipeline in shared memory about 100–150 KB deep (what keeps ~3 TB/s in flight); each warp
// computes S = K·qᵀ [16 keys × 64 heads] with mma.m16n8k16 and reduces Σ_h w_h·ReLU(S) in registers.
// Without a row list, the packed records of a full tile are one contiguous block, copied 16 bytes at a
// time; listed rows are gathered record by record in 4-byte pieces. The dot product is a sum over channels, so the
// channels may be visited in any order as long as keys and queries use the same one: each format picks
// the order in which its shared-memory reads are bank-conflict free and 4 channels sit in one word
// (fp8) or one 16-byte vector (f32). Layers run one after another over the CTA's tiles; the combined score
// is kept in `scores` itself (read-modify-write by the same thread), 4–8 bytes per key against 132–512.
//
// Numerics: fp32 accumulation. f32 keys: q and the keys enter the product as bf16 (rounded). fp8 keys: as
// f16 — e4m3 → f16 is exact and one instruction per two channels (the decode would otherwise cost more than
// the product), and q as f16 keeps more bits than bf16 for |q| within f16's range (below 65504). The fp8
// scale is applied to the logit (ReLU(s·x) = s·ReLU(x) for s > 0).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/detail/ptx.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>
#include <flashmemory/layout/index_key.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

namespace flashmemory::indexer::cuda {

enum class LayerCombine : std::uint8_t { max, mean };

inline constexpr int kIndexDim = 128;
inline constexpr int kMaxScoringLayers = 4;

// Keys as float32 rows [N, 128].
struct F32Keys {
  using Pool = matrix_view<float const>;
  static constexpr int kRowExtent = kIndexDim;  // floats
  static constexpr int kRecordBytes = kIndexDim * 4;
  static constexpr int kPieceBytes = 16;
  static constexpr int kSmemStride = kRecordBytes + 64;  // the 8 rows of a 16-byte phase start 4 vectors apart
  static constexpr int kPipelineBytes = 150 * 1024;      // shared memory for the stages of tiles
  // First of the four consecutive channels behind fragment word (k-step s, thread t).
  __device__ static constexpr int channel(int s, int t) { return 16 * s + 4 * t; }
  __device__ static void fragment(std::byte const* row, int s, int t, std::uint32_t& lo, std::uint32_t& hi) {
    float4 const v = *reinterpret_cast<float4 const*>(row + channel(s, t) * 4);
    lo = flashmemory::cuda::detail::pack_bf16x2(v.x, v.y);
    hi = flashmemory::cuda::detail::pack_bf16x2(v.z, v.w);
  }
  __device__ static std::uint32_t pack_q(float lo, float hi) { return flashmemory::cuda::detail::pack_bf16x2(lo, hi); }
  __device__ static void mma(float (&d)[4], std::uint32_t const (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    flashmemory::cuda::detail::mma_bf16(d, a, b0, b1);
  }
  __device__ static float scale(std::byte const*) { return 1.0f; }
};

// Keys as layout::IndexKeyFp8 records [N, 132] bytes: 128 × e4m3, then the row's fp32 scale.
struct Fp8Keys {
  using Pool = matrix_view<std::byte const>;
  static constexpr layout::IndexKeyFp8 kLayout{};
  static constexpr int kRecordBytes = static_cast<int>(kLayout.record_bytes());
  static constexpr int kRowExtent = kRecordBytes;  // bytes
  static constexpr int kPieceBytes = 4;             // records are only 4-byte aligned
  static constexpr int kSmemStride = kRecordBytes;  // 33 words: rows g and the 8 words of t are conflict free
  static constexpr int kPipelineBytes = 110 * 1024;
  static constexpr int kScaleOffset = static_cast<int>(kLayout.scale_offset());
  static_assert(kLayout.channels() == kIndexDim && kRecordBytes % 4 == 0);
  __device__ static constexpr int channel(int s, int t) { return 32 * t + 4 * s; }
  __device__ static void fragment(std::byte const* row, int s, int t, std::uint32_t& lo, std::uint32_t& hi) {
    std::uint32_t const w = *reinterpret_cast<std::uint32_t const*>(row + channel(s, t));
    lo = flashmemory::cuda::detail::e4m3x2_to_f16x2(static_cast<std::uint16_t>(w));
    hi = flashmemory::cuda::detail::e4m3x2_to_f16x2(static_cast<std::uint16_t>(w >> 16));
  }
  __device__ static std::uint32_t pack_q(float lo, float hi) { return flashmemory::cuda::detail::pack_f16x2(lo, hi); }
  __device__ static void mma(float (&d)[4], std::uint32_t const (&a)[4], std::uint32_t b0, std::uint32_t b1) {
    flashmemory::cuda::detail::mma_f16(d, a, b0, b1);
  }
  __device__ static float scale(std::byte const* row) { return *reinterpret_cast<float const*>(row + kScaleOffset); }
};

// L layers' queries, head weights and key pools; `rows` empty = score every pool row.
template <class Keys>
struct IndexScoreArguments {
  view<float const, 3> q;                          // [L, H, 128]
  matrix_view<float const> weights;                // [L, H], constant factors folded in
  std::span<typename Keys::Pool const> keys;       // L pools, each [N, Keys::kRowExtent]
  vector_view<std::int32_t const> rows;            // [n] pool rows to score, or empty (n = N)
  vector_view<float> scores;                       // [n]
  bool sigmoid = false;                            // per-layer sigmoid (Memory Indexer probabilities)
  LayerCombine combine = LayerCombine::max;        // across layers
  void* stream = nullptr;
};

namespace detail {
namespace ptx = ::flashmemory::cuda::detail;

inline constexpr int kThreads = 256;
inline constexpr int kWarps = kThreads / 32;

struct Params {
  float const* q;
  float const* weights;
  std::byte const* keys[kMaxScoringLayers];
  std::int32_t const* rows;  // null: identity
  float* scores;
  int pool_rows, n;  // both < 2^31 (can_implement)
  int layers, heads;
  bool sigmoid;
  LayerCombine combine;
};

template <class Keys, int HeadGroups>
struct Tiling {
  static constexpr int kKeyWarps = kWarps / HeadGroups;
  static constexpr int kTileKeys = 16 * kKeyWarps;
  static constexpr int kTileBytes = kTileKeys * Keys::kSmemStride;
  static constexpr int kStages = std::clamp(Keys::kPipelineBytes / kTileBytes, 2, 16);
  static constexpr int kSlots = kStages + 1;  // row tables alive at once
  // Records stored unpadded: a full tile of consecutive pool rows is one contiguous block.
  static constexpr bool kBlockCopy = Keys::kSmemStride == Keys::kRecordBytes && kTileBytes % 16 == 0;
  static constexpr int kPiecesPerRow = Keys::kRecordBytes / Keys::kPieceBytes;
};

template <class Keys, int HeadGroups>
struct SharedStorage {
  using T = Tiling<Keys, HeadGroups>;
  alignas(16) std::byte keys[T::kStages][T::kTileBytes];
  std::int32_t rows[T::kSlots][T::kTileKeys];  // pool row of each key of a tile; −1 = none
  float partial[T::kKeyWarps][16];             // head group 1's logits, handed to head group 0
  alignas(8) float weights[64 * HeadGroups];   // this layer's head weights
};

template <class Keys, int HeadGroups>
__global__ void __launch_bounds__(kThreads, 1) index_scores_kernel(Params const p) {
  using T = Tiling<Keys, HeadGroups>;
  extern __shared__ __align__(16) std::byte smem_bytes[];
  auto& s = *reinterpret_cast<SharedStorage<Keys, HeadGroups>*>(smem_bytes);
  int const tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  int const kg = warp % T::kKeyWarps, hg = warp / T::kKeyWarps;
  int const tiles = (p.n + T::kTileKeys - 1) / T::kTileKeys;
  int const my_tiles = (tiles - static_cast<int>(blockIdx.x) + static_cast<int>(gridDim.x) - 1) / static_cast<int>(gridDim.x);
  // First key of local tile i (n ≤ 2^30: no overflow).
  auto first_key = [&](int i) { return (static_cast<int>(blockIdx.x) + i * static_cast<int>(gridDim.x)) * T::kTileKeys; };

  for (int layer = 0; layer < p.layers; ++layer) {
    std::byte const* pool = p.keys[0];  // (a constant-index select keeps the parameter array out of local memory)
#pragma unroll
    for (int l = 1; l < kMaxScoringLayers; ++l)
      if (l == layer) pool = p.keys[l];
    // Resolves the pool rows of local tile i into its table slot (threads < kTileKeys).
    auto resolve = [&](int i) {
      if (tid >= T::kTileKeys) return;
      int const key = first_key(i) + tid;
      std::int32_t row = -1;
      if (i < my_tiles && key < p.n) {
        std::int32_t const r = p.rows ? p.rows[key] : key;
        if (r >= 0 && r < p.pool_rows) row = r;
      }
      s.rows[i % T::kSlots][tid] = row;
    };
    // Starts the copies of local tile i (always commits a group, possibly empty).
    bool const block_copy = T::kBlockCopy && !p.rows && reinterpret_cast<std::uintptr_t>(pool) % 16 == 0;
    auto issue = [&](int i) {
      if (i < my_tiles && block_copy && first_key(i) + T::kTileKeys <= p.n) {
        std::byte const* src = pool + static_cast<std::int64_t>(first_key(i)) * Keys::kRecordBytes;
        std::byte* dst = s.keys[i % T::kStages];
#pragma unroll
        for (int c = tid; c < T::kTileBytes / 16; c += kThreads) ptx::cp_async_16(dst + c * 16, src + c * 16);
      } else if (i < my_tiles) {
        std::byte* dst = s.keys[i % T::kStages];
        std::int32_t const* rows = s.rows[i % T::kSlots];
        for (int c = tid; c < T::kTileKeys * T::kPiecesPerRow; c += kThreads) {
          int const r = c / T::kPiecesPerRow, piece = c % T::kPiecesPerRow;
          std::int32_t const row = rows[r];
          if (row < 0) continue;
          std::byte const* src = pool + static_cast<std::int64_t>(row) * Keys::kRecordBytes + piece * Keys::kPieceBytes;
          std::byte* to = dst + r * Keys::kSmemStride + piece * Keys::kPieceBytes;
          if constexpr (Keys::kPieceBytes == 16) ptx::cp_async_16(to, src);
          else ptx::cp_async_4(to, src);
        }
      }
      ptx::cp_async_commit();
    };

    // qᵀ fragments of this warp's 64 heads, in registers for the whole layer; head weights in shared memory.
    std::uint32_t bq[8][8][2];  // [head tile][k-step][b0, b1]
    {
      float const* q = p.q + (static_cast<std::int64_t>(layer) * p.heads + hg * 64) * kIndexDim;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
          float4 const v = *reinterpret_cast<float4 const*>(q + (nt * 8 + g) * kIndexDim + Keys::channel(ks, t));
          bq[nt][ks][0] = Keys::pack_q(v.x, v.y);
          bq[nt][ks][1] = Keys::pack_q(v.z, v.w);
        }
      if (tid < p.heads) s.weights[tid] = p.weights[static_cast<std::int64_t>(layer) * p.heads + tid];
    }

    for (int i = 0; i < T::kStages; ++i) resolve(i);
    __syncthreads();
    for (int i = 0; i < T::kStages - 1; ++i) issue(i);

    for (int i = 0; i < my_tiles; ++i) {
      ptx::cp_async_wait<T::kStages - 2>();
      __syncthreads();  // tile i has landed; every warp is done with tile i − 1 (its stage and row slot)
      issue(i + T::kStages - 1);
      resolve(i + T::kStages);

      // S = K·qᵀ: 16 keys (rows g, g+8) × 64 heads (8 tiles of 8), k = 128 in 8 steps; then
      // Σ_h w_h · ReLU(S) for keys g and g+8, 16 heads per thread.
      std::byte const* k0 = s.keys[i % T::kStages] + (kg * 16 + g) * Keys::kSmemStride;
      std::byte const* k1 = k0 + 8 * Keys::kSmemStride;
      float acc[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < 8; ++ks) {
        std::uint32_t a[4];
        Keys::fragment(k0, ks, t, a[0], a[2]);
        Keys::fragment(k1, ks, t, a[1], a[3]);
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) Keys::mma(acc[nt], a, bq[nt][ks][0], bq[nt][ks][1]);
      }
      float logit[2] = {0.f, 0.f};
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        float2 const w = *reinterpret_cast<float2 const*>(&s.weights[hg * 64 + nt * 8 + 2 * t]);
#pragma unroll
        for (int e = 0; e < 4; ++e) logit[e / 2] += (e % 2 ? w.y : w.x) * fmaxf(acc[nt][e], 0.f);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        logit[h] += __shfl_xor_sync(0xffffffffu, logit[h], 1);
        logit[h] += __shfl_xor_sync(0xffffffffu, logit[h], 2);
      }
      if constexpr (HeadGroups == 2) {
        if (hg == 1 && t == 0) {
          s.partial[kg][g] = logit[0];
          s.partial[kg][g + 8] = logit[1];
        }
        __syncthreads();
        if (hg == 0) {
          logit[0] += s.partial[kg][g];
          logit[1] += s.partial[kg][g + 8];
        }
      }
      if (hg == 0 && t == 0) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          int const local = kg * 16 + g + 8 * h;
          int const key = first_key(i) + local;
          if (key >= p.n) continue;
          float v = -__builtin_huge_valf();
          if (s.rows[i % T::kSlots][local] >= 0) {
            v = logit[h] * Keys::scale(h == 0 ? k0 : k1);
            if (p.sigmoid) v = 1.f / (1.f + __expf(-v));
          }
          if (layer > 0) {
            float const prev = p.scores[key];
            v = p.combine == LayerCombine::max ? fmaxf(prev, v) : prev + v;
          }
          if (p.combine == LayerCombine::mean && layer == p.layers - 1) v /= static_cast<float>(p.layers);
          p.scores[key] = v;
        }
      }
    }
    ptx::cp_async_wait<0>();
    __syncthreads();  // the next layer reuses the stages and row slots
  }
}

}  // namespace detail

// Launcher of the fused scoring kernel. Construct once (reads the SM count, raises the shared-memory
// limit); run() never allocates.
template <class Keys>
class IndexScores {
 public:
  using Arguments = IndexScoreArguments<Keys>;

  IndexScores() {
    int device = 0;
    FLASHMEMORY_CUDA_CHECK(cudaGetDevice(&device));
    FLASHMEMORY_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device));
    FLASHMEMORY_CUDA_CHECK(cudaFuncSetAttribute(detail::index_scores_kernel<Keys, 1>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes(1)));
    FLASHMEMORY_CUDA_CHECK(cudaFuncSetAttribute(detail::index_scores_kernel<Keys, 2>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes(2)));
  }

  Status can_implement(Arguments const& a) const {
    index_t const L = a.q.extent(0), H = a.q.extent(1), d = a.q.extent(2);
    if (d != kIndexDim) return Status::failure(errc::unsupported, "index scores (CUDA): index dim ", d, " is not ", kIndexDim);
    if (H != 64 && H != 128) return Status::failure(errc::unsupported, "index scores (CUDA): ", H, " heads (64 or 128 supported)");
    if (L < 1 || L > kMaxScoringLayers)
      return Status::failure(errc::unsupported, "index scores (CUDA): ", L, " layers (1 to ", kMaxScoringLayers, " supported)");
    if (a.weights.extent(0) != L || a.weights.extent(1) != H)
      return Status::failure(errc::bad_shape, "index scores (CUDA): weights must be [", L, ", ", H, "], found [",
                             a.weights.extent(0), ", ", a.weights.extent(1), "]");
    if (static_cast<index_t>(a.keys.size()) != L)
      return Status::failure(errc::bad_shape, "index scores (CUDA): ", a.keys.size(), " key pools for ", L, " layers");
    index_t const N = a.keys[0].extent(0);
    for (std::size_t l = 0; l < a.keys.size(); ++l) {
      if (a.keys[l].extent(0) != N || a.keys[l].extent(1) != Keys::kRowExtent)
        return Status::failure(errc::bad_shape, "index scores (CUDA): key pool ", l, " is [", a.keys[l].extent(0), ", ",
                               a.keys[l].extent(1), "], expected [", N, ", ", Keys::kRowExtent, "]");
      if (reinterpret_cast<std::uintptr_t>(a.keys[l].data_handle()) % Keys::kPieceBytes != 0 || (N > 0 && !a.keys[l].data_handle()))
        return Status::failure(errc::invalid_argument, "index scores (CUDA): key pool ", l, " must be non-null and ",
                               Keys::kPieceBytes, "-byte aligned");
    }
    index_t const n = a.rows.extent(0) > 0 ? a.rows.extent(0) : N;
    if (std::max(N, n) > (index_t{1} << 30))
      return Status::failure(errc::unsupported, "index scores (CUDA): ", std::max(N, n), " rows exceed 2^30");
    if (a.scores.extent(0) != n)
      return Status::failure(errc::bad_shape, "index scores (CUDA): scores has ", a.scores.extent(0), " entries, expected ", n);
    if (reinterpret_cast<std::uintptr_t>(a.q.data_handle()) % 16 != 0 || !a.q.data_handle() || !a.weights.data_handle() ||
        (n > 0 && !a.scores.data_handle()))
      return Status::failure(errc::invalid_argument, "index scores (CUDA): q must be non-null and 16-byte aligned; weights and scores non-null");
    return Status::success();
  }

  Status run(Arguments const& a) const {
    if (Status st = can_implement(a); !st) return st;
    detail::Params p{};
    p.q = a.q.data_handle();
    p.weights = a.weights.data_handle();
    for (std::size_t l = 0; l < a.keys.size(); ++l) p.keys[l] = reinterpret_cast<std::byte const*>(a.keys[l].data_handle());
    p.rows = a.rows.extent(0) > 0 ? a.rows.data_handle() : nullptr;
    p.scores = a.scores.data_handle();
    p.pool_rows = static_cast<int>(a.keys[0].extent(0));
    p.n = static_cast<int>(a.scores.extent(0));
    p.layers = static_cast<int>(a.q.extent(0));
    p.heads = static_cast<int>(a.q.extent(1));
    p.sigmoid = a.sigmoid;
    p.combine = a.combine;
    if (p.n == 0) return Status::success();
    int const groups = p.heads / 64;
    int const tile = 16 * (detail::kWarps / groups);
    auto const ctas = static_cast<unsigned>(std::min((p.n + tile - 1) / tile, sms_));
    auto stream = static_cast<cudaStream_t>(a.stream);
    if (groups == 1)
      detail::index_scores_kernel<Keys, 1><<<ctas, detail::kThreads, smem_bytes(1), stream>>>(p);
    else
      detail::index_scores_kernel<Keys, 2><<<ctas, detail::kThreads, smem_bytes(2), stream>>>(p);
    return flashmemory::cuda::launch_status("index_scores_kernel", __FILE__, __LINE__);
  }

 private:
  static int smem_bytes(int groups) {
    return static_cast<int>(groups == 1 ? sizeof(detail::SharedStorage<Keys, 1>) : sizeof(detail::SharedStorage<Keys, 2>));
  }
  int sms_ = 0;
};

}  // namespace flashmemory::indexer::cuda
