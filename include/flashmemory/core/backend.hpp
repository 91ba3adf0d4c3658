// flashmemory/core/backend.hpp — execution-space tags.
//
// Everything that runs code takes a Backend as a template parameter (design.md §2): `fm::cpu::Backend` selects
// the host references (plain loops, float32 storage), `fm::cuda::Backend` the kernels under cuda/. A tag
// carries no state; it only picks the implementation at compile time.
#pragma once

#include <flashmemory/config.hpp>

#include <concepts>
#include <string_view>

namespace flashmemory {

// A backend tag names itself (for logs and errors) and says whether it runs on the host.
template <class B>
concept backend = requires {
  { B::kName } -> std::convertible_to<std::string_view>;
  { B::kHost } -> std::convertible_to<bool>;
};

namespace cpu {
struct Backend {
  static constexpr std::string_view kName = "cpu";
  static constexpr bool kHost = true;
};
static_assert(backend<Backend>);
}  // namespace cpu

}  // namespace flashmemory
