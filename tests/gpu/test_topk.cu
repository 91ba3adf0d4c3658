// Masked top-k on the GPU against indexer::top_k: the same indices in the same order (descending score,
// ties to the lower index), with masks, NaN and −∞, heavy ties, fewer eligible entries than k, and ids.
#include "gpu_test.cuh"

#include <flashmemory/indexer/cuda/topk.cuh>
#include <flashmemory/indexer/reference.hpp>

#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <random>
#include <vector>

using namespace flashmemory;
using flashmemory::cuda::DeviceBuffer;
using indexer::cuda::TopK;

namespace {

// Runs the kernel on B rows of n scores; checks each row against the reference, element for element.
void check_rows(std::vector<std::vector<float>> const& rows, index_t k, std::vector<std::uint8_t> const& allowed = {},
                std::vector<std::int32_t> const& ids = {}) {
  index_t const B = static_cast<index_t>(rows.size()), n = static_cast<index_t>(rows[0].size());
  std::vector<float> flat;
  for (auto const& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  auto dscores = test::upload(flat);
  auto dallowed = test::upload(allowed);
  auto dids = test::upload(ids);
  DeviceBuffer<std::int32_t> dout(static_cast<std::size_t>(B * k));
  dout.fill_bytes(0x7f);  // an index no row has: every slot must be written
  TopK topk;
  TopK::Arguments const a{matrix_view<float const>(dscores.data(), B, n),
                          vector_view<std::uint8_t const>(dallowed.data(), static_cast<index_t>(allowed.size())),
                          vector_view<std::int32_t const>(dids.data(), static_cast<index_t>(ids.size())),
                          matrix_view<std::int32_t>(dout.data(), B, k)};
  Status st = topk.run(a);
  INFO(st.message);
  REQUIRE(st.ok());
  FLASHMEMORY_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::int32_t> got = test::download(dout);
  for (index_t b = 0; b < B; ++b) {
    std::vector<std::int32_t> want = indexer::top_k(rows[b], k, allowed);
    if (!ids.empty())
      for (auto& i : want) i = ids[i];
    want.resize(static_cast<std::size_t>(k), -1);
    std::vector<std::int32_t> row(got.begin() + b * k, got.begin() + (b + 1) * k);
    INFO("row " << b << " of " << B << ", n " << n << ", k " << k);
    CHECK(row == want);
  }
}

}  // namespace

TEST_CASE("top-k of random scores equals the reference, order included", "[gpu][topk]") {
  std::mt19937 rng(3);
  check_rows({test::normal(262'144, rng)}, 512);
  check_rows({test::normal(100'003, rng), test::normal(100'003, rng), test::normal(100'003, rng)}, 2048);
  check_rows({test::normal(5000, rng, 1.0f, 10.0f)}, 1);  // all positive
  check_rows({test::normal(777, rng, 0.01f, -3.0f)}, 64);  // all negative
}

TEST_CASE("top-k honours the mask, skips NaN and −∞, and pads with −1", "[gpu][topk]") {
  std::mt19937 rng(4);
  std::vector<float> s = test::normal(65'536, rng);
  std::vector<std::uint8_t> allowed(s.size());
  std::bernoulli_distribution keep(0.3);
  for (auto& a : allowed) a = keep(rng);
  for (std::size_t i = 0; i < s.size(); i += 97) s[i] = NAN;
  for (std::size_t i = 5; i < s.size(); i += 89) s[i] = -INFINITY;
  s[1234] = INFINITY;
  allowed[1234] = 1;
  check_rows({s}, 512, allowed);

  std::vector<float> few = test::normal(1000, rng);
  std::vector<std::uint8_t> sparse(few.size(), 0);
  for (std::size_t i = 0; i < few.size(); i += 10) sparse[i] = 1;  // 100 eligible < k
  check_rows({few}, 512, sparse);
  check_rows({std::vector<float>(300, -INFINITY)}, 16);  // none eligible
}

TEST_CASE("top-k breaks ties toward the lower index, even among thousands of equal scores", "[gpu][topk]") {
  std::mt19937 rng(5);
  std::vector<float> coarse = test::normal(200'000, rng);
  for (float& x : coarse) x = std::round(x * 4.0f) / 4.0f;  // ~30 distinct values
  check_rows({coarse}, 512);
  check_rows({std::vector<float>(50'000, 0.0f)}, 512);  // one value: the first k indices
  std::vector<float> plateau(300'000, 1.0f);
  for (std::size_t i = 0; i < 100; ++i) plateau[i * 2999] = 2.0f;
  check_rows({plateau}, 1000);
}

TEST_CASE("top-k, small shapes: every path (all selected, one level, refinement, ties)", "[gpu][topk][small]") {
  std::mt19937 rng(7);
  check_rows({test::normal(300, rng)}, 512);                        // fewer than k: all selected
  check_rows({test::normal(4000, rng), test::normal(4000, rng)}, 100); // one level, candidates refined
  std::vector<float> ties(12'000, 0.5f);
  for (std::size_t i = 0; i < ties.size(); i += 7) ties[i] = 0.25f;
  check_rows({ties}, 64);  // more equal scores than candidate slots: refinement into the index bits
}

TEST_CASE("top-k across a cluster: many rows, long rows, winners in one CTA's share", "[gpu][topk]") {
  std::mt19937 rng(8);
  std::vector<std::vector<float>> rows;
  for (int b = 0; b < 20; ++b) rows.push_back(test::normal(262'144, rng));
  check_rows(rows, 512);
  check_rows({test::normal(1 << 20, rng)}, 2048);
  // Every winner in the first 2048 entries (one CTA's first pieces), then in the last 2048.
  std::vector<float> front = test::normal(300'000, rng), back = front;
  for (std::size_t i = 0; i < 2048; ++i) {
    front[i] += 100.0f;
    back[back.size() - 1 - i] += 100.0f;
  }
  check_rows({front, back}, 2048);
}

TEST_CASE("top-k counts -0 and +0 as equal scores", "[gpu][topk][small]") {
  std::mt19937 rng(9);
  std::vector<float> s = test::normal(40'000, rng, 0.5f, -5.0f);  // all negative; a cluster of three CTAs
  std::bernoulli_distribution negative(0.5);
  for (std::size_t i = 0; i < s.size(); i += 13) s[i] = negative(rng) ? -0.0f : 0.0f;
  for (std::size_t i = 0; i < s.size(); i += 1000) s[i] = 1.0f;
  check_rows({s}, 100);  // 40 ones, then zeros of either sign by index
}

TEST_CASE("top-k writes ids instead of indices when given", "[gpu][topk]") {
  std::mt19937 rng(6);
  std::vector<float> s = test::normal(10'000, rng);
  std::vector<std::int32_t> ids(s.size());
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>(7 * i + 3);
  check_rows({s}, 300, {}, ids);
}

TEST_CASE("top-k rejects k above its limit", "[gpu][topk]") {
  DeviceBuffer<float> s(10);
  DeviceBuffer<std::int32_t> out(4096);
  TopK topk;
  Status st = topk.can_implement({matrix_view<float const>(s.data(), 1, 10), {}, {}, matrix_view<std::int32_t>(out.data(), 1, 4096)});
  CHECK(st.code == errc::unsupported);
  CHECK(st.message.find("k = 4096") != std::string::npos);
}
