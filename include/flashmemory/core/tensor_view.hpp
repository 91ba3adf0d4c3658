// flashmemory/core/tensor_view.hpp — non-owning multi-dimensional views.
//
// We use mdspan rather than a home-made view: std::mdspan where the standard library has it, otherwise
// libcu++'s cuda::std::mdspan (header-only; compiles with plain g++ given CCCL's include folder). The same
// type works in host references and in CUDA kernels.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include <cuda/std/mdspan>

namespace flashmemory {

namespace stdex = ::cuda::std;

using index_t = std::int64_t;

// view<T, R>: a row-major rank-R view over T with run-time extents.
template <class T, std::size_t Rank, class Layout = stdex::layout_right>
using view = stdex::mdspan<T, stdex::dextents<index_t, Rank>, Layout>;

template <class T> using vector_view = view<T, 1>;
template <class T> using matrix_view = view<T, 2>;

// Checks a view's extents against the expected ones, naming the tensor in the error.
template <class T, class Extents, class Layout, class Accessor>
void expect_shape(stdex::mdspan<T, Extents, Layout, Accessor> const& v,
                  std::type_identity_t<std::array<index_t, Extents::rank()>> const& expected, std::string_view name) {
  constexpr std::size_t Rank = Extents::rank();
  for (std::size_t r = 0; r < Rank; ++r) {
    if (v.extent(r) != expected[r]) {
      std::string got, want;
      for (std::size_t i = 0; i < Rank; ++i) {
        if (i) got += ',', want += ',';
        got += std::to_string(v.extent(i));
        want += std::to_string(expected[i]);
      }
      fail(errc::bad_shape, name, ": expected shape [", want, "], found [", got, "]");
    }
  }
}

}  // namespace flashmemory
