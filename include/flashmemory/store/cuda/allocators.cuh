// flashmemory/store/cuda/allocators.cuh — the store's `byte_allocator`s on the GPU side (store/allocator.hpp):
//   PinnedAllocator   page-locked host memory mapped into the device address space: the host mirror. Host
//                     code appends records; the recall gather kernel reads pages over PCIe through
//                     device_address(). Pages come from slabs (one cudaHostAlloc per slab, not per page: a 1M
//                     context has 4096 pages per layer and kind), freed pages are reused by size.
//   DeviceAllocator   device memory (cudaMalloc): the reserve. Not host-accessible; the store then keeps only
//                     sizes and written counts on the host and the CUDA recall engine moves the bytes.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/store/allocator.hpp>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <memory>
#include <string_view>
#include <vector>

namespace flashmemory::store::cuda {

// The device-side address of mapped pinned memory (with unified addressing, usually the same pointer).
inline std::byte const* device_address(std::byte const* host) {
  void* d = nullptr;
  FLASHMEMORY_CUDA_CHECK(cudaHostGetDevicePointer(&d, const_cast<std::byte*>(host), 0));
  return static_cast<std::byte const*>(d);
}

class PinnedAllocator {
 public:
  static constexpr std::string_view kName = "pinned";
  static constexpr bool kHostAccessible = true;
  static constexpr std::size_t kAlignment = 64;

  // Copies share one pool of slabs (the mirrors of all layers of a sequence, say); the slabs live as long as
  // any copy does.
  explicit PinnedAllocator(std::size_t slab_bytes = std::size_t{64} << 20) : pool_(std::make_shared<Pool>(slab_bytes)) {}

  std::byte* allocate(std::size_t bytes) noexcept { return pool_->allocate(round(bytes)); }
  void deallocate(std::byte* p, std::size_t bytes) noexcept { pool_->free[round(bytes)].push_back(p); }
  // Pinned bytes held (slabs), for footprint reports.
  std::size_t reserved_bytes() const noexcept { return pool_->reserved; }

 private:
  static std::size_t round(std::size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

  struct Pool {
    explicit Pool(std::size_t slab) : slab_bytes(slab) {}
    Pool(Pool const&) = delete;
    Pool& operator=(Pool const&) = delete;
    ~Pool() {
      for (void* s : slabs) cudaFreeHost(s);
    }
    std::byte* allocate(std::size_t n) noexcept {
      if (auto it = free.find(n); it != free.end() && !it->second.empty()) {
        std::byte* p = it->second.back();
        it->second.pop_back();
        return p;
      }
      if (n > left) {
        std::size_t const bytes = n > slab_bytes ? n : slab_bytes;
        void* s = nullptr;
        if (cudaHostAlloc(&s, bytes, cudaHostAllocMapped | cudaHostAllocPortable) != cudaSuccess) {
          cudaGetLastError();
          return nullptr;
        }
        slabs.push_back(s);
        next = static_cast<std::byte*>(s), left = bytes, reserved += bytes;
      }
      std::byte* p = next;
      next += n, left -= n;
      return p;
    }
    std::size_t slab_bytes;
    std::vector<void*> slabs;
    std::byte* next = nullptr;
    std::size_t left = 0, reserved = 0;
    std::map<std::size_t, std::vector<std::byte*>> free;
  };
  std::shared_ptr<Pool> pool_;
};
static_assert(byte_allocator<PinnedAllocator>);

struct DeviceAllocator {
  static constexpr std::string_view kName = "device";
  static constexpr bool kHostAccessible = false;

  std::byte* allocate(std::size_t bytes) noexcept {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return static_cast<std::byte*>(p);
  }
  void deallocate(std::byte* p, std::size_t) noexcept { cudaFree(p); }
};
static_assert(byte_allocator<DeviceAllocator>);

}  // namespace flashmemory::store::cuda
