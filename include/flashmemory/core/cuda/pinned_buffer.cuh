// flashmemory/core/cuda/pinned_buffer.cuh — an owning array of page-locked (pinned) host memory.
//
// Pinned memory is what host↔device copies run at full PCIe rate from, and what the host mirror of LSA
// lives in. With PinnedBuffer::kMapped the pages are also mapped into the device address space
// (cudaHostAllocMapped): a kernel reads them over PCIe through device_pointer(), which is how the recall
// gather kernel copies scattered pages without one cudaMemcpy per page. Contents start zeroed, as
// HostBuffer's do, so a mirror never exposes stale bytes.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

namespace flashmemory::cuda {

template <class T>
class PinnedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "PinnedBuffer holds trivially copyable elements");

 public:
  enum Mapping : unsigned { kHostOnly = 0, kMapped = 1 };

  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t count, Mapping mapping = kHostOnly, std::string_view what = "pinned buffer")
      : size_(count) {
    if (count == 0) return;
    if (count > SIZE_MAX / sizeof(T)) fail(errc::out_of_memory, what, ": ", count, " elements overflow size_t");
    unsigned flags = cudaHostAllocPortable | (mapping == kMapped ? cudaHostAllocMapped : 0u);
    void* p = nullptr;
    cudaError_t err = cudaHostAlloc(&p, count * sizeof(T), flags);
    if (err != cudaSuccess) {
      cudaGetLastError();
      fail(errc_of(err), what, ": cannot pin ",
           count * sizeof(T), " bytes of host memory (", cudaGetErrorString(err), ")");
    }
    data_ = static_cast<T*>(p);
    std::memset(p, 0, count * sizeof(T));
    if (mapping == kMapped) {
      void* d = nullptr;
      cudaError_t map_err = cudaHostGetDevicePointer(&d, p, 0);
      if (map_err != cudaSuccess) {
        release();
        FLASHMEMORY_CUDA_CHECK(map_err);
      }
      device_ = static_cast<T*>(d);
    }
  }
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        device_(std::exchange(other.device_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      device_ = std::exchange(other.device_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  PinnedBuffer(PinnedBuffer const&) = delete;
  PinnedBuffer& operator=(PinnedBuffer const&) = delete;
  ~PinnedBuffer() { release(); }

  T* data() noexcept { return data_; }
  T const* data() const noexcept { return data_; }
  // The device-side address of the same pages; nullptr unless allocated kMapped.
  T* device_pointer() const noexcept { return device_; }
  bool mapped() const noexcept { return device_ != nullptr; }
  std::size_t size() const noexcept { return size_; }
  std::size_t bytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  T const& operator[](std::size_t i) const noexcept { return data_[i]; }
  std::span<T> span() noexcept { return {data_, size_}; }
  std::span<T const> span() const noexcept { return {data_, size_}; }

 private:
  void release() noexcept {
    if (data_) cudaFreeHost(data_);
    data_ = nullptr;
    device_ = nullptr;
  }

  T* data_ = nullptr;
  T* device_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace flashmemory::cuda
