// flashmemory/attention/cuda/packed_rows.cuh — sparse decode attention over DeepSeek's packed fp8 rows.
//
// The window and pool rows are layout::CsaEntryPacked records (584 B: 448 nope channels as fp8 e4m3 with one
// ue8m0 scale per 64, 64 rope channels as bf16; deepseek-v4.md §10), 57% of the bytes of bf16 rows. The
// kernels of sparse_decode.cuh copy the raw records of a tile into shared memory and dequantise them there
// into the bf16 tile their tensor-core products read; fp8 · 2^k is exact in bf16, so the kernel attends to
// exactly the values layout::decode_record() gives.
//
//   SparseDecode<PackedRows, Output> kernel(workspace);
//   kernel.run(PackedSparseDecodeArguments<Output>{q, window_records, window_len, pool_records, ...});
#pragma once

#include <flashmemory/attention/cuda/sparse_decode.cuh>
#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/tensor_view.hpp>
#include <flashmemory/layout/csa_entry.hpp>

#include <cstddef>
#include <cstdint>

namespace flashmemory::attention::cuda {

// As SparseDecodeArguments, with the rows as packed records (row extent = record bytes):
//   window [B, W, 584] bytes, pool [R, 584] bytes; q bf16 [B, H, 512]; out [B, H, 512].
template <class Output>
struct PackedSparseDecodeArguments {
  view<bfloat16 const, 3> q;
  view<std::byte const, 3> window;
  vector_view<std::int32_t const> window_len;
  matrix_view<std::byte const> pool;
  matrix_view<std::int32_t const> selected;
  vector_view<float const> sink;
  view<Output, 3> out;
  float scale = 0.0f;
  void* stream = nullptr;
};

struct PackedRows {
  static constexpr layout::CsaEntryPacked kLayout{};
  static constexpr bool kPacked = true;
  static constexpr int kRecordBytes = static_cast<int>(kLayout.record_bytes());
  static constexpr int kRowExtent = kRecordBytes;
  template <class Output>
  using Arguments = PackedSparseDecodeArguments<Output>;

  static constexpr int kNope = static_cast<int>(kLayout.nope_channels());
  static constexpr int kRopeOffset = static_cast<int>(kLayout.rope_offset());
  static constexpr int kScaleOffset = static_cast<int>(kLayout.scale_offset());
  static constexpr int kBlock = static_cast<int>(kLayout.block());
  static_assert(kLayout.channels() == detail::kHeadDim && kNope % 8 == 0 && kBlock % 8 == 0 && kRopeOffset % 8 == 0 &&
                kRecordBytes % 8 == 0, "the dequantiser works on 8-channel pieces of 8-byte aligned fields");

  // Channels 8·piece … 8·piece+7 of one record as eight bf16 values (16 bytes).
  __device__ __forceinline__ static uint4 dequantize_piece(std::byte const* record, int piece) {
    if (piece * 8 < kNope) {
      uint2 const q = *reinterpret_cast<uint2 const*>(record + piece * 8);
      float const scale = decode_e8m0(static_cast<std::uint8_t>(record[kScaleOffset + piece * 8 / kBlock]));
      auto two = [scale](std::uint32_t bytes) {
        float2 const f = flashmemory::cuda::detail::e4m3x2_to_float2(static_cast<std::uint16_t>(bytes));
        return flashmemory::cuda::detail::pack_bf16x2(f.x * scale, f.y * scale);
      };
      return make_uint4(two(q.x), two(q.x >> 16), two(q.y), two(q.y >> 16));
    }
    std::byte const* rope = record + kRopeOffset + (piece * 8 - kNope) * 2;  // 8-byte aligned only
    uint2 const lo = *reinterpret_cast<uint2 const*>(rope), hi = *reinterpret_cast<uint2 const*>(rope + 8);
    return make_uint4(lo.x, lo.y, hi.x, hi.y);
  }

  // raw [64 records] → kv [64 rows × 512] bf16, 16-byte piece `piece` of row `row` at kv + offset(row, piece)
  // (the kernel's shared layout); masked rows become zeros so that P = 0 never meets stale bytes.
  template <class Offset>
  __device__ __forceinline__ static void dequantize_tile(std::byte const* raw, std::byte const* const* rows,
                                                         std::byte* kv, Offset offset, int tid, int threads) {
    constexpr int kPieces = detail::kHeadDim / 8;
    for (int c = tid; c < detail::kTileRows * kPieces; c += threads) {
      int const row = c / kPieces, piece = c % kPieces;
      uint4 const v = rows[row] ? dequantize_piece(raw + row * kRecordBytes, piece) : make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4*>(kv + offset(row, piece)) = v;
    }
  }
};

static_assert(sparse_attention<SparseDecode<PackedRows, bfloat16>>);
static_assert(sparse_attention<SparseDecode<PackedRows, float>>);

}  // namespace flashmemory::attention::cuda
