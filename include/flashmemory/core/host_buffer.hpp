// flashmemory/core/host_buffer.hpp — an owning, aligned, zero-initialised host array.
//
// Allocation failure becomes errc::out_of_memory naming the size and what it was for, never std::bad_alloc
// escaping from deep inside a model. Pinned (page-locked) and device buffers live in core/cuda/.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <utility>

namespace flashmemory {

template <class T>
class HostBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "HostBuffer holds trivially copyable elements");

 public:
  static constexpr std::size_t kAlignment = 64;

  HostBuffer() = default;
  explicit HostBuffer(std::size_t count, std::string_view what = "host buffer") : size_(count) {
    if (count == 0) return;
    if (count > SIZE_MAX / sizeof(T)) fail(errc::out_of_memory, what, ": ", count, " elements overflow size_t");
    void* p = ::operator new(count * sizeof(T), std::align_val_t{kAlignment}, std::nothrow);
    if (!p) fail(errc::out_of_memory, what, ": cannot allocate ", count * sizeof(T), " bytes of host memory");
    std::memset(p, 0, count * sizeof(T));
    data_.reset(static_cast<T*>(p));
  }

  // Copies are deep (a decoder forked after a shared prefill copies its weights and state).
  HostBuffer(HostBuffer const& o) : HostBuffer(o.size_, "host buffer copy") {
    if (size_) std::memcpy(data(), o.data(), bytes());
  }
  HostBuffer& operator=(HostBuffer const& o) {
    if (this != &o) *this = HostBuffer(o);
    return *this;
  }
  HostBuffer(HostBuffer&&) noexcept = default;
  HostBuffer& operator=(HostBuffer&&) noexcept = default;

  T* data() noexcept { return data_.get(); }
  T const* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  std::size_t bytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }
  T& operator[](std::size_t i) noexcept { return data_.get()[i]; }
  T const& operator[](std::size_t i) const noexcept { return data_.get()[i]; }
  T* begin() noexcept { return data(); }
  T* end() noexcept { return data() + size_; }
  T const* begin() const noexcept { return data(); }
  T const* end() const noexcept { return data() + size_; }
  std::span<T> span() noexcept { return {data(), size_}; }
  std::span<T const> span() const noexcept { return {data(), size_}; }

 private:
  struct Free {
    void operator()(T* p) const noexcept { ::operator delete(p, std::align_val_t{kAlignment}); }
  };
  std::unique_ptr<T, Free> data_;
  std::size_t size_ = 0;
};

}  // namespace flashmemory
