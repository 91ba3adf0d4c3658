// flashmemory/recall/cuda/page_gather.cuh — the recall copy as one kernel: listed pages of the host mirror,
// read through mapped pinned memory (cuda::PinnedBuffer::kMapped), written into cells of the device reserve.
//
// One launch moves any number of scattered pages, where cudaMemcpyAsync would need one call (and a few µs
// of launch and PCIe set-up) per page. Every thread keeps four 16-byte loads in flight over PCIe before it
// stores them; with every SM busy that is megabytes in flight, well above what PCIe needs (bandwidth ×
// latency ≈ 55 GB/s × 2 µs ≈ 110 KB). The work is the flat list of 16-byte pieces of all pages, strided
// over the grid, so the last page costs no tail.
//
// Sources may be any device-readable addresses (mapped pinned host pages, or device memory for a
// device-to-device move); the lists themselves must be device-readable too (device or mapped pinned memory).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace flashmemory::recall::cuda {

struct PageGatherArguments {
  vector_view<std::byte const* const> src;  // [n] device-visible address of each page to copy
  vector_view<std::int32_t const> cells;    // [n] destination cell of each page
  std::byte* reserve = nullptr;             // cell c is reserve + c · page_bytes
  std::int64_t page_bytes = 0;              // a multiple of 16
  void* stream = nullptr;
};

namespace detail {

inline constexpr int kGatherThreads = 512;
inline constexpr int kInFlight = 4;  // 16-byte loads per thread before the stores

static __global__ void __launch_bounds__(kGatherThreads) page_gather_kernel(std::byte const* const* src,
                                                                      std::int32_t const* cells, std::byte* reserve,
                                                                      std::int64_t page_bytes, std::uint32_t pieces) {
  auto const per_page = static_cast<std::uint32_t>(page_bytes / 16);
  std::uint32_t const stride = gridDim.x * blockDim.x;
  for (std::uint32_t base = blockIdx.x * blockDim.x + threadIdx.x; base < pieces; base += stride * kInFlight) {
    uint4 v[kInFlight];
    uint4* to[kInFlight];
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      std::uint32_t const piece = base + j * stride;  // < 2^32: can_implement bounds the piece count by 2^31
      to[j] = nullptr;
      if (piece < pieces) {
        std::uint32_t const page = piece / per_page, offset = (piece - page * per_page) * 16;
        v[j] = *reinterpret_cast<uint4 const*>(src[page] + offset);
        to[j] = reinterpret_cast<uint4*>(reserve + static_cast<std::int64_t>(cells[page]) * page_bytes + offset);
      }
    }
#pragma unroll
    for (int j = 0; j < kInFlight; ++j)
      if (to[j]) *to[j] = v[j];
  }
}

}  // namespace detail

// Launcher; construct once (reads the SM count), run() never allocates.
class PageGather {
 public:
  PageGather() {
    int device = 0;
    FLASHMEMORY_CUDA_CHECK(cudaGetDevice(&device));
    FLASHMEMORY_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device));
  }

  Status can_implement(PageGatherArguments const& a) const {
    index_t const n = a.src.extent(0);
    if (a.cells.extent(0) != n)
      return Status::failure(errc::bad_shape, "page gather (CUDA): ", n, " pages but ", a.cells.extent(0), " cells");
    if (a.page_bytes <= 0 || a.page_bytes % 16 != 0)
      return Status::failure(errc::invalid_argument, "page gather (CUDA): page bytes ", a.page_bytes, " is not a positive multiple of 16");
    if (n > 0 && (!a.src.data_handle() || !a.cells.data_handle() || !a.reserve))
      return Status::failure(errc::invalid_argument, "page gather (CUDA): null page list, cell list or reserve");
    if (n * (a.page_bytes / 16) > INT32_MAX)
      return Status::failure(errc::unsupported, "page gather (CUDA): ", n, " pages of ", a.page_bytes, " B in one launch (split the list)");
    if (reinterpret_cast<std::uintptr_t>(a.reserve) % 16 != 0)
      return Status::failure(errc::invalid_argument, "page gather (CUDA): the reserve must be 16-byte aligned");
    return Status::success();
  }

  // Source pages must be 16-byte aligned and cells inside the reserve: the lists live in device-visible
  // memory, so they are the caller's contract rather than checked here.
  Status run(PageGatherArguments const& a) const {
    if (Status st = can_implement(a); !st) return st;
    std::int64_t const pieces = a.src.extent(0) * (a.page_bytes / 16);
    if (pieces == 0) return Status::success();
    std::int64_t const want = (pieces + detail::kGatherThreads * detail::kInFlight - 1) / (detail::kGatherThreads * detail::kInFlight);
    auto const ctas = static_cast<unsigned>(std::min<std::int64_t>(want, 4 * static_cast<std::int64_t>(sms_)));
    detail::page_gather_kernel<<<ctas, detail::kGatherThreads, 0, static_cast<cudaStream_t>(a.stream)>>>(
        a.src.data_handle(), a.cells.data_handle(), a.reserve, a.page_bytes, static_cast<std::uint32_t>(pieces));
    return flashmemory::cuda::launch_status("page_gather_kernel", __FILE__, __LINE__);
  }

 private:
  int sms_ = 0;
};

}  // namespace flashmemory::recall::cuda
