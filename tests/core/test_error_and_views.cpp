#include <flashmemory/core/error.hpp>
#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

using namespace flashmemory;
using Catch::Matchers::ContainsSubstring;

TEST_CASE("error carries a code and a message naming the problem", "[core]") {
  try {
    fail(errc::bad_shape, "wq_a.weight: expected ", 3, " rows");
    FAIL("fail() returned");
  } catch (error const& e) {
    CHECK(e.code() == errc::bad_shape);
    CHECK_THAT(e.what(), ContainsSubstring("bad shape") && ContainsSubstring("wq_a.weight: expected 3 rows"));
  }
  Status s = Status::failure(errc::unsupported, "head_dim ", 7);
  CHECK_FALSE(s.ok());
  CHECK_THROWS_WITH(s.throw_if_error(), ContainsSubstring("head_dim 7"));
  CHECK(Status::success().ok());
}

TEST_CASE("views are row-major mdspans; expect_shape names the tensor", "[core]") {
  HostBuffer<float> buf(6, "test");
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i) + 0.5f;
  matrix_view<float> m(buf.data(), 2, 3);
  CHECK(m(1, 2) == 5.5f);
  CHECK(m.extent(0) == 2);
  expect_shape(m, {2, 3}, "m");
  CHECK_THROWS_WITH(expect_shape(m, {3, 2}, "kv_norm"),
                    ContainsSubstring("kv_norm") && ContainsSubstring("[3,2]") && ContainsSubstring("[2,3]"));
}

TEST_CASE("HostBuffer is zeroed, aligned, and reports impossible sizes", "[core]") {
  HostBuffer<double> b(100);
  CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % HostBuffer<double>::kAlignment == 0);
  for (double v : b) CHECK(v == 0.0);
  CHECK_THROWS_AS(HostBuffer<double>(SIZE_MAX / 4, "huge"), error);
  try {
    HostBuffer<char> huge(std::size_t{1} << 62, "the mirror");
  } catch (error const& e) {
    CHECK(e.code() == errc::out_of_memory);
    CHECK_THAT(e.what(), ContainsSubstring("the mirror"));
  }
}
