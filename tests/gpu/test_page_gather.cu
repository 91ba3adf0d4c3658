// The recall gather kernel: scattered pages of mapped pinned host memory land byte-exact in their reserve
// cells, and no other cell is touched.
#include "gpu_test.cuh"

#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/cuda/pinned_buffer.cuh>
#include <flashmemory/recall/cuda/page_gather.cuh>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

using namespace flashmemory;
using flashmemory::cuda::DeviceBuffer;
using flashmemory::cuda::PinnedBuffer;
using recall::cuda::PageGather;

TEST_CASE("page gather copies listed host pages into their cells, byte-exact", "[gpu][recall]") {
  constexpr std::int64_t kPageBytes = 37'376;  // 64 packed CSA entries of 584 B
  constexpr std::size_t kMirrorPages = 300, kCells = 128, kMoves = 100;
  std::mt19937 rng(9);
  // The mirror: one mapped allocation of many pages, and one page allocated on its own (mirror pages are
  // separate allocations, so the sources are a list of addresses).
  using Bytes = PinnedBuffer<std::byte>;
  Bytes mirror(kMirrorPages * kPageBytes, Bytes::kMapped), lone(kPageBytes, Bytes::kMapped);
  std::uniform_int_distribution<int> byte(1, 255);  // never zero
  for (std::size_t i = 0; i < mirror.size(); ++i) mirror[i] = static_cast<std::byte>(byte(rng));
  for (std::size_t i = 0; i < lone.size(); ++i) lone[i] = static_cast<std::byte>(byte(rng));

  // kMoves distinct pages (the last one the lone page) into kMoves distinct cells, lists in mapped memory.
  std::vector<std::size_t> pages(kMirrorPages), cells(kCells);
  std::iota(pages.begin(), pages.end(), 0);
  std::iota(cells.begin(), cells.end(), 0);
  std::shuffle(pages.begin(), pages.end(), rng);
  std::shuffle(cells.begin(), cells.end(), rng);
  PinnedBuffer<std::byte const*> src(kMoves, PinnedBuffer<std::byte const*>::kMapped);
  PinnedBuffer<std::int32_t> dst(kMoves, PinnedBuffer<std::int32_t>::kMapped);
  std::vector<std::byte const*> host_src(kMoves);
  for (std::size_t m = 0; m < kMoves; ++m) {
    bool const last = m + 1 == kMoves;
    host_src[m] = last ? lone.data() : mirror.data() + pages[m] * kPageBytes;
    src[m] = last ? lone.device_pointer() : mirror.device_pointer() + pages[m] * kPageBytes;
    dst[m] = static_cast<std::int32_t>(cells[m]);
  }

  DeviceBuffer<std::byte> reserve(kCells * kPageBytes);
  reserve.fill_bytes(0);  // the poison: the sources hold no zero byte
  PageGather gather;
  recall::cuda::PageGatherArguments const a{
      vector_view<std::byte const* const>(src.device_pointer(), static_cast<index_t>(kMoves)),
      vector_view<std::int32_t const>(dst.device_pointer(), static_cast<index_t>(kMoves)), reserve.data(), kPageBytes};
  Status st = gather.run(a);
  INFO(st.message);
  REQUIRE(st.ok());
  FLASHMEMORY_CUDA_CHECK(cudaDeviceSynchronize());

  std::vector<std::byte> got = test::download(reserve);
  std::vector<bool> filled(kCells, false);
  for (std::size_t m = 0; m < kMoves; ++m) {
    filled[cells[m]] = true;
    INFO("move " << m << " → cell " << cells[m]);
    CHECK(std::memcmp(got.data() + cells[m] * kPageBytes, host_src[m], kPageBytes) == 0);
  }
  for (std::size_t c = 0; c < kCells; ++c)
    if (!filled[c])
      CHECK(std::all_of(got.begin() + static_cast<std::ptrdiff_t>(c * kPageBytes),
                        got.begin() + static_cast<std::ptrdiff_t>((c + 1) * kPageBytes), [](std::byte b) { return b == std::byte{0}; }));
}

TEST_CASE("page gather rejects pages that are not whole 16-byte pieces", "[gpu][recall]") {
  PageGather gather;
  DeviceBuffer<std::byte> reserve(1024);
  recall::cuda::PageGatherArguments const a{{}, {}, reserve.data(), 584};
  Status st = gather.can_implement(a);
  CHECK(st.code == errc::invalid_argument);
  CHECK(st.message.find("584") != std::string::npos);
}
