// Index scoring on the GPU against indexer::index_scores (float64 accumulation): float32 and packed fp8
// keys, 64 and 128 heads, one layer (Lightning Indexer) and three fused layers with sigmoid and max/mean
// (Memory Indexer), all rows or a row list with invalid entries.
#include "gpu_test.cuh"

#include <flashmemory/indexer/cuda/scores.cuh>
#include <flashmemory/indexer/reference.hpp>
#include <flashmemory/layout/index_key.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <type_traits>
#include <vector>

using namespace flashmemory;
using flashmemory::cuda::DeviceBuffer;
using indexer::cuda::F32Keys;
using indexer::cuda::Fp8Keys;
using indexer::cuda::IndexScores;
using indexer::cuda::LayerCombine;

namespace {

constexpr index_t kD = 128;

struct Case {
  index_t layers, heads, pool_rows;
  index_t listed;  // 0: score every row; else a list of this many rows (some invalid)
  bool sigmoid;
  LayerCombine combine;
  index_t pool_offset = 0;  // bytes between an allocation's start and the pool (16-byte aligned, or only 4)
};

template <class Keys>
void check_case(Case const& c, unsigned seed) {
  std::mt19937 rng(seed);
  index_t const L = c.layers, H = c.heads, N = c.pool_rows;
  // Queries are rounded to bf16 here because the kernel multiplies in bf16 (f32 keys) or f16 (fp8 keys),
  // which holds these bf16 values exactly; the reference then sees the kernel's exact operands and only
  // the accumulation order differs.
  std::vector<float> q = test::round_bf16(test::normal(static_cast<std::size_t>(L * H * kD), rng));
  std::vector<float> w = test::normal(static_cast<std::size_t>(L * H), rng, 0.125f);
  std::vector<std::vector<float>> key_values(static_cast<std::size_t>(L));
  std::vector<std::vector<std::conditional_t<std::is_same_v<Keys, Fp8Keys>, std::byte, float>>> key_stored(
      static_cast<std::size_t>(L));
  for (index_t l = 0; l < L; ++l) {
    std::vector<float> x = test::normal(static_cast<std::size_t>(N * kD), rng, 0.5f);
    auto& values = key_values[l];
    auto& stored = key_stored[l];
    if constexpr (std::is_same_v<Keys, Fp8Keys>) {
      layout::IndexKeyFp8 const layout;
      stored.resize(static_cast<std::size_t>(N * layout.record_bytes()));
      values.resize(x.size());
      for (index_t r = 0; r < N; ++r) {
        layout::encode_record(layout, x.data() + r * kD, stored.data() + r * layout.record_bytes());
        layout::decode_record(layout, stored.data() + r * layout.record_bytes(), values.data() + r * kD);
      }
    } else {
      stored = test::round_bf16(x);
      values = stored;
    }
  }
  std::vector<std::int32_t> rows;
  if (c.listed > 0) {
    std::uniform_int_distribution<std::int32_t> any(0, static_cast<std::int32_t>(N - 1));
    for (index_t i = 0; i < c.listed; ++i)
      rows.push_back(i % 17 == 5 ? -1 : i % 23 == 7 ? static_cast<std::int32_t>(N + i) : any(rng));
  }
  index_t const n = c.listed > 0 ? c.listed : N;

  // Reference: per layer index_scores over the listed rows, sigmoid, combine.
  std::vector<float> ref(static_cast<std::size_t>(n), c.combine == LayerCombine::max ? -INFINITY : 0.0f);
  std::vector<float> layer_scores(static_cast<std::size_t>(N));
  for (index_t l = 0; l < L; ++l) {
    indexer::index_scores(matrix_view<float const>(q.data() + l * H * kD, H, kD), vector_view<float const>(w.data() + l * H, H),
                          matrix_view<float const>(key_values[l].data(), N, kD), layer_scores);
    for (index_t i = 0; i < n; ++i) {
      index_t const r = c.listed > 0 ? rows[i] : i;
      float v = r >= 0 && r < N ? layer_scores[r] : -INFINITY;
      if (c.sigmoid && v > -INFINITY) v = 1.0f / (1.0f + std::exp(-v));
      ref[i] = c.combine == LayerCombine::max ? std::max(ref[i], v) : ref[i] + v / float(L);
    }
  }

  // GPU.
  auto dq = test::upload(q), dw = test::upload(w);
  auto drows = test::upload(rows);
  using Element = typename Keys::Pool::value_type;
  index_t const skip = c.pool_offset / static_cast<index_t>(sizeof(Element));
  std::vector<DeviceBuffer<Element>> dkeys;
  std::vector<typename Keys::Pool> pools;
  for (index_t l = 0; l < L; ++l) {
    std::vector<Element> padded(static_cast<std::size_t>(skip));
    padded.insert(padded.end(), key_stored[l].begin(), key_stored[l].end());
    dkeys.push_back(test::upload(padded));
    pools.emplace_back(dkeys.back().data() + skip, N, Keys::kRowExtent);
  }
  DeviceBuffer<float> dscores(static_cast<std::size_t>(n));
  dscores.fill_bytes(0xff);
  typename IndexScores<Keys>::Arguments a{view<float const, 3>(dq.data(), L, H, kD),
                                          matrix_view<float const>(dw.data(), L, H),
                                          pools,
                                          vector_view<std::int32_t const>(drows.data(), static_cast<index_t>(rows.size())),
                                          vector_view<float>(dscores.data(), n),
                                          c.sigmoid,
                                          c.combine};
  IndexScores<Keys> kernel;
  Status st = kernel.run(a);
  INFO(st.message);
  REQUIRE(st.ok());
  FLASHMEMORY_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> got = test::download(dscores);

  // Invalid rows are exactly −∞; the rest agree to fp32 accumulation.
  std::vector<float> got_finite, ref_finite;
  index_t invalid = 0;
  for (index_t i = 0; i < n; ++i) {
    if (ref[i] == -INFINITY) {
      ++invalid;
      CHECK(got[i] == -INFINITY);
    } else {
      got_finite.push_back(got[i]);
      ref_finite.push_back(ref[i]);
    }
  }
  CHECK(invalid == (c.listed > 0 ? std::count_if(rows.begin(), rows.end(), [&](std::int32_t r) { return r < 0 || r >= N; }) : 0));
  REQUIRE(!ref_finite.empty());
  CHECK(test::rel_error(got_finite, ref_finite) < 2e-5);
}

}  // namespace

TEST_CASE("index scores (f32 keys) match index_scores", "[gpu][indexer]") {
  check_case<F32Keys>({1, 64, 3001, 0, false, LayerCombine::max}, 1);
  check_case<F32Keys>({1, 64, 5000, 1234, false, LayerCombine::max}, 2);
  check_case<F32Keys>({3, 128, 2049, 0, true, LayerCombine::max}, 3);
  check_case<F32Keys>({2, 64, 700, 0, true, LayerCombine::mean}, 4);
}

TEST_CASE("index scores (packed fp8 keys) match index_scores on the decoded keys", "[gpu][indexer]") {
  check_case<Fp8Keys>({1, 64, 40'000, 0, false, LayerCombine::max}, 5);
  check_case<Fp8Keys>({1, 64, 10'000, 3333, false, LayerCombine::max}, 6);
  check_case<Fp8Keys>({3, 128, 9999, 0, true, LayerCombine::max}, 7);
  check_case<Fp8Keys>({3, 64, 513, 200, true, LayerCombine::mean}, 8);
  // A pool only 4-byte aligned: full tiles are gathered in 4-byte pieces instead of one 16-byte block copy.
  check_case<Fp8Keys>({1, 64, 5000, 0, false, LayerCombine::max, 4}, 12);
  check_case<Fp8Keys>({2, 128, 3000, 0, true, LayerCombine::max, 4}, 13);
}

TEST_CASE("index scores, small shapes: partial tiles, both head counts, a row list", "[gpu][indexer][small]") {
  check_case<Fp8Keys>({1, 64, 300, 0, false, LayerCombine::max}, 9);
  check_case<Fp8Keys>({2, 128, 100, 150, true, LayerCombine::mean}, 10);
  check_case<F32Keys>({1, 64, 77, 0, false, LayerCombine::max}, 11);
}

TEST_CASE("index scores reject unsupported shapes", "[gpu][indexer]") {
  DeviceBuffer<float> buf(96 * 128);
  std::vector<F32Keys::Pool> pools{F32Keys::Pool(buf.data(), 10, 128)};
  IndexScores<F32Keys> kernel;
  IndexScores<F32Keys>::Arguments a{view<float const, 3>(buf.data(), 1, 96, 128), matrix_view<float const>(buf.data(), 1, 96),
                                    pools, {}, vector_view<float>(buf.data(), 10)};
  Status st = kernel.can_implement(a);
  CHECK(st.code == errc::unsupported);
  CHECK(st.message.find("96 heads") != std::string::npos);
}
