// flashmemory/store/allocator.hpp — where the chunk store's bytes live: the `byte_allocator` policy.
//
// The host mirror and the device reserve take their memory from an allocator so that the CUDA part can
// plug in pinned (mapped) host memory for the mirror and device memory for the reserve, while the host
// reference uses plain aligned host memory. An allocator is a small copyable value:
//   A::kName             what kind of memory, for messages ("host", "pinned", "device")
//   A::kHostAccessible   whether host code may read and write it (host and pinned: yes; device: no). The
//                        host reference's byte access (recall copies, decoding a cell) requires it.
//   a.allocate(bytes)    → std::byte*, or nullptr when the memory is not available (the store turns that
//                          into errc::out_of_memory naming what it was for); never throws
//   a.deallocate(p, n)   frees what allocate(n) returned
#pragma once

#include <flashmemory/config.hpp>

#include <concepts>
#include <cstddef>
#include <new>
#include <string_view>

namespace flashmemory::store {

template <class A>
concept byte_allocator = std::copyable<A> && requires(A& a, std::size_t n, std::byte* p) {
  { A::kName } -> std::convertible_to<std::string_view>;
  { A::kHostAccessible } -> std::convertible_to<bool>;
  { a.allocate(n) } noexcept -> std::same_as<std::byte*>;
  { a.deallocate(p, n) } noexcept;
};

// Ordinary host memory, 64-byte aligned (a cache line; enough for any vector load of a record).
struct HostAllocator {
  static constexpr std::string_view kName = "host";
  static constexpr bool kHostAccessible = true;
  static constexpr std::size_t kAlignment = 64;

  std::byte* allocate(std::size_t bytes) noexcept {
    return static_cast<std::byte*>(::operator new(bytes, std::align_val_t{kAlignment}, std::nothrow));
  }
  void deallocate(std::byte* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{kAlignment}); }
};
static_assert(byte_allocator<HostAllocator>);

}  // namespace flashmemory::store
