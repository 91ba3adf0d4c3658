// flashmemory/core/cuda/device_buffer.cuh — an owning array in device memory.
//
// DeviceBuffer<T> is the device twin of HostBuffer<T>: move-only, freed on destruction, and an allocation
// failure becomes errc::out_of_memory naming the size and what the memory was for. The contents start
// uninitialised (kernels and tests write them; fill() poisons or clears them explicitly).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

namespace flashmemory::cuda {

template <class T>
class DeviceBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "DeviceBuffer holds trivially copyable elements");

 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count, std::string_view what = "device buffer") : size_(count) {
    if (count == 0) return;
    if (count > SIZE_MAX / sizeof(T)) fail(errc::out_of_memory, what, ": ", count, " elements overflow size_t");
    cudaError_t err = cudaMalloc(&data_, count * sizeof(T));
    if (err != cudaSuccess) {
      cudaGetLastError();  // the failed cudaMalloc also set the last error: clear it for later launch checks
      data_ = nullptr;
      fail(errc_of(err), what, ": cannot allocate ", count * sizeof(T), " bytes of device memory (",
           cudaGetErrorString(err), ")");
    }
  }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(DeviceBuffer const&) = delete;
  DeviceBuffer& operator=(DeviceBuffer const&) = delete;
  ~DeviceBuffer() { release(); }

  T* data() noexcept { return data_; }
  T const* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::size_t bytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }
  std::span<T> span() noexcept { return {data_, size_}; }
  std::span<T const> span() const noexcept { return {data_, size_}; }

  // Synchronous copies from / to host memory of the same element count.
  void copy_from(std::span<T const> host) {
    expect_size(host.size(), "copy_from");
    if (size_) FLASHMEMORY_CUDA_CHECK(cudaMemcpy(data_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  void copy_to(std::span<T> host) const {
    expect_size(host.size(), "copy_to");
    if (size_) FLASHMEMORY_CUDA_CHECK(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost));
  }
  // Sets every byte to `byte` (e.g. 0xff to poison an output before a kernel writes it).
  void fill_bytes(std::uint8_t byte, cudaStream_t stream = nullptr) {
    if (size_) FLASHMEMORY_CUDA_CHECK(cudaMemsetAsync(data_, byte, bytes(), stream));
  }

 private:
  void expect_size(std::size_t n, char const* op) const {
    if (n != size_) fail(errc::bad_shape, "DeviceBuffer::", op, ": host span has ", n, " elements, buffer ", size_);
  }
  void release() noexcept {
    if (data_) cudaFree(data_);  // errors here cannot be reported from a destructor
    data_ = nullptr;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace flashmemory::cuda
