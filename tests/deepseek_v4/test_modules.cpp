// The decoder's parts on their own: RoPE (plain and YaRN), mHC / Sinkhorn, the compressors (against the
// compressed entries transformers produced), MoE routing and the clamped SwiGLU.
#include "fixtures.hpp"

#include <flashmemory/models/deepseek_v4/mhc.hpp>
#include <flashmemory/models/deepseek_v4/moe.hpp>
#include <flashmemory/models/deepseek_v4/rope.hpp>

#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <numeric>
#include <random>

using namespace dsv4_test;
using Catch::Approx;

namespace {

std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

v4::Tensor tensor_of(std::vector<fm::index_t> shape, std::vector<float> const& values) {
  v4::Tensor t{fm::HostBuffer<float>(values.size()), std::move(shape)};
  std::copy(values.begin(), values.end(), t.data.begin());
  return t;
}

}  // namespace

TEST_CASE("RoPE frequencies equal transformers' (plain and YaRN)", "[deepseek_v4][rope]") {
  std::string fixture = GENERATE("dense", "yarn");
  CAPTURE(fixture);
  v4::Config c = v4::load_config(fixture_dir(fixture) / "config.json");
  for (auto [label, params] : {std::pair{"main", &c.rope_main}, std::pair{"compress", &c.rope_compress}}) {
    CAPTURE(label);
    v4::Rope rope(*params, c.qk_rope_head_dim);
    auto want = intermediate(fixture, std::string("rope.") + label + ".inv_freq");
    REQUIRE(rope.inv_freq().size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) CHECK(rope.inv_freq()[i] == Approx(want[i]).epsilon(1e-6));
  }
}

TEST_CASE("V4-Flash compress RoPE reproduces the YaRN reference values", "[deepseek_v4][rope]") {
  v4::RopeParameters p{.theta = 160000, .yarn = true, .factor = 16, .original_max_position_embeddings = 65536};
  v4::Rope rope(p, 64);
  // deepseek-v4.md §2.2: pairs 0…15 unscaled, 16…24 blended, 25…31 divided by 16.
  CHECK(rope.inv_freq()[15] == Approx(3.6355e-3).epsilon(1e-4));
  CHECK(rope.inv_freq()[16] == Approx(2.26563e-3).epsilon(1e-4));
  CHECK(rope.inv_freq()[20] == Approx(2.96978e-4).epsilon(1e-4));
  CHECK(rope.inv_freq()[24] == Approx(1.95312e-5).epsilon(1e-4));
  CHECK(rope.inv_freq()[25] == Approx(5.37231e-6).epsilon(1e-4));
  CHECK(rope.inv_freq()[31] == Approx(5.68053e-7).epsilon(1e-4));
}

TEST_CASE("RoPE rotates adjacent pairs of the trailing channels only", "[deepseek_v4][rope]") {
  v4::Rope rope(v4::RopeParameters{.theta = 10000}, 8);
  auto x = random_vector(16, 1);
  auto y = x;
  rope.apply(y, 37);
  CHECK(std::equal(x.begin(), x.begin() + 8, y.begin()));  // nope channels untouched
  for (std::size_t i = 8; i < 16; i += 2)  // each pair keeps its norm
    CHECK(std::hypot(y[i], y[i + 1]) == Approx(std::hypot(x[i], x[i + 1])).epsilon(1e-6));
  CHECK(y[8] != Approx(x[8]).margin(1e-3));
  rope.apply(y, 37, /*inverse=*/true);
  for (std::size_t i = 0; i < 16; ++i) CHECK(y[i] == Approx(x[i]).margin(1e-5));

  // ⟨R(p)q, R(p')k⟩ depends on p − p' only.
  auto q = random_vector(16, 2), k = random_vector(16, 3);
  auto score = [&](fm::index_t pq, fm::index_t pk) {
    auto a = q, b = k;
    rope.apply(a, pq);
    rope.apply(b, pk);
    return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
  };
  CHECK(score(10, 3) == Approx(score(107, 100)).epsilon(1e-5));
  CHECK(score(10, 3) != Approx(score(10, 4)).epsilon(1e-5));
}

TEST_CASE("mHC: Sinkhorn makes comb doubly stochastic; pre and post stay in range", "[deepseek_v4][mhc]") {
  v4::Config c = v4::load_config(fixture_dir("dense") / "config.json");
  c.hc_mult = 4;
  fm::index_t n = c.hc_mult, D = c.hidden_size, mix = (2 + n) * n;
  v4::HyperConnectionWeights w{tensor_of({mix, n * D}, random_vector(static_cast<std::size_t>(mix * n * D), 4, 0.3f)),
                               tensor_of({mix}, random_vector(static_cast<std::size_t>(mix), 5)),
                               tensor_of({3}, random_vector(3, 6))};
  auto x = random_vector(static_cast<std::size_t>(n * D), 7);
  v4::HyperMix m = v4::hyper_mix(w, c, x);
  for (fm::index_t i = 0; i < n; ++i) {
    CHECK(m.pre[i] > 0.0f);
    CHECK(m.pre[i] < 1.0f + 1e-5f);
    CHECK(m.post[i] > 0.0f);
    CHECK(m.post[i] < 2.0f);
    double row = 0, col = 0;
    for (fm::index_t j = 0; j < n; ++j) {
      row += m.comb[static_cast<std::size_t>(i * n + j)];
      col += m.comb[static_cast<std::size_t>(j * n + i)];
    }
    CHECK(col == Approx(1.0).margin(1e-5));  // the last pass normalises columns
    CHECK(row == Approx(1.0).margin(1e-3));  // rows converge after 20 iterations
  }
  CHECK(std::adjacent_find(m.comb.begin(), m.comb.end()) == m.comb.end());  // a real mix, not a constant
}

TEST_CASE("mHC expansion uses comb transposed: X'[k] = post_k·y + Σ_j comb[j,k]·X[j]", "[deepseek_v4][mhc]") {
  v4::HyperMix m{{0.f, 0.f}, {0.5f, 2.0f}, {0.9f, 0.1f, 0.3f, 0.7f}};
  std::vector<float> x{1.0f, 10.0f};  // two streams of width 1
  std::vector<float> y{4.0f};
  v4::hyper_expand(m, y, x);
  CHECK(x[0] == Approx(0.5 * 4 + 0.9 * 1 + 0.3 * 10));
  CHECK(x[1] == Approx(2.0 * 4 + 0.1 * 1 + 0.7 * 10));
}

TEST_CASE("compressed entries and index keys equal transformers'", "[deepseek_v4][compressor]") {
  auto [config, weights] = v4::load_model(fixture_dir("dense"));
  Golden g = load_golden("dense");
  v4::Decoder<> model(config, std::move(weights));
  run_chunked(model, g.ids, {5});  // chunks that split every compression window
  auto same = [](fm::matrix_view<float const> got, std::vector<float> const& want) {
    REQUIRE(static_cast<std::size_t>(got.extent(0) * got.extent(1)) == want.size());
    CHECK(rel_err(std::span<float const>(got.data_handle(), want.size()), want) < 1e-5);
  };
  // CSA layers hand their chunks to the KV controller (here the native FullResident): read its mirrors.
  std::vector<float> buffer;
  auto decoded = [&](auto const& mirror) {
    fm::index_t n = mirror.num_chunks(), ch = mirror.layout().channels();
    buffer.resize(static_cast<std::size_t>(n * ch));
    for (fm::index_t c = 0; c < n; ++c) mirror.decode(c, std::span<float>(buffer).subspan(static_cast<std::size_t>(c * ch), static_cast<std::size_t>(ch)));
    return fm::matrix_view<float const>(buffer.data(), n, ch);
  };
  same(decoded(model.kv().entries(0)), intermediate("dense", "layers.1.compressed_kv"));  // CSA, ratio 4
  same(decoded(model.kv().keys(0)), intermediate("dense", "layers.1.indexer_kv"));
  same(model.cache().layer(2).compressor.entries(), intermediate("dense", "layers.2.compressed_kv"));  // HCA, ratio 8
  same(decoded(model.kv().entries(1)), intermediate("dense", "layers.3.compressed_kv"));
  CHECK(model.cache().layer(1).compressor.count() == 16);  // CSA compressors count their chunks but do not keep them
  CHECK(model.cache().layer(1).compressor.entries().extent(0) == 0);
}

TEST_CASE("MoE routing: hash table or biased top-k; weights from the unbiased scores", "[deepseek_v4][moe]") {
  auto [c, w] = v4::load_model(fixture_dir("dense"));
  auto x = random_vector(static_cast<std::size_t>(c.hidden_size), 8);

  v4::MoeWeights const& hash = w.layers[0].ffn;  // hash_moe
  v4::Routing r = v4::route(hash, c, x, 17);
  auto row = hash.tid2eid.row(17);
  CHECK(std::vector<std::int32_t>(row.begin(), row.end()) == r.experts);
  CHECK(std::accumulate(r.weights.begin(), r.weights.end(), 0.0) == Approx(c.routed_scaling_factor));

  v4::MoeWeights const& learned = w.layers[1].ffn;
  r = v4::route(learned, c, x, 17);
  std::vector<float> s, biased;
  for (fm::index_t e = 0; e < c.n_routed_experts; ++e) {
    double g = 0;
    for (fm::index_t i = 0; i < c.hidden_size; ++i) g += double(learned.gate.matrix()(e, i)) * x[static_cast<std::size_t>(i)];
    s.push_back(static_cast<float>(std::sqrt(std::log1p(std::exp(g)))));
    biased.push_back(s.back() + learned.bias.span()[static_cast<std::size_t>(e)]);
  }
  std::vector<std::int32_t> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return biased[a] > biased[b]; });
  order.resize(static_cast<std::size_t>(c.num_experts_per_tok));
  CHECK(r.experts == order);
  double total = 0;
  for (auto e : order) total += s[static_cast<std::size_t>(e)];
  for (std::size_t i = 0; i < order.size(); ++i)
    CHECK(r.weights[i] == Approx(s[order[i]] / total * c.routed_scaling_factor).epsilon(1e-6));
}

TEST_CASE("experts clamp the SwiGLU gate from above and the up projection both ways", "[deepseek_v4][moe]") {
  // One input channel x = 1; gate rows give 30 and −3, up rows 50 and −40; w2 sums the two hidden units.
  v4::ExpertWeights e{tensor_of({2, 1}, {30.0f, -3.0f}), tensor_of({2, 1}, {50.0f, -40.0f}), tensor_of({1, 2}, {1.0f, 1.0f})};
  std::vector<float> x{1.0f}, out{0.5f};
  v4::expert_accumulate(e, 10.0f, x, 2.0f, out);
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  CHECK(out[0] == Approx(0.5 + 2.0 * (silu(10.0) * 10.0 + silu(-3.0) * -10.0)).epsilon(1e-6));
}
