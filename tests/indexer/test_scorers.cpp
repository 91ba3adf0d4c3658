// The Level-1 scorers against direct restatements of their definitions, on small random models.
#include <flashmemory/indexer/memory_indexer.hpp>
#include <flashmemory/indexer/minmax_bounds.hpp>
#include <flashmemory/indexer/oracle.hpp>
#include <flashmemory/indexer/random.hpp>
#include <flashmemory/io/safetensors.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace flashmemory;
using indexer::MemoryIndexer;
using indexer::MemoryIndexerConfig;
using indexer::MemoryIndexerLayer;
using indexer::ScoringContext;
using indexer::ScoringLayer;

namespace {
HostBuffer<float> random_buffer(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> n01;
  HostBuffer<float> b(n);
  for (float& x : b) x = n01(rng) * scale;
  return b;
}
std::vector<float> random_vector(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  auto b = random_buffer(n, rng, scale);
  return {b.begin(), b.end()};
}

// A tiny model: D 24, rank 12, 4 heads of 16 dims, 8 rope dims, plain RoPE θ 100 (fast turns, so a wrong
// pairing or position shows).
MemoryIndexerConfig tiny_config() {
  MemoryIndexerConfig c;
  c.hidden_size = 24, c.rank = 12, c.heads = 4, c.head_dim = 16, c.rope_dim = 8;
  c.rope = {.theta = 100.0};
  return c;
}
MemoryIndexerLayer random_layer(MemoryIndexerConfig const& c, std::mt19937& rng) {
  auto gain = random_buffer(static_cast<std::size_t>(c.rank), rng, 0.3f);
  for (float& g : gain) g += 1.0f;
  return {random_buffer(static_cast<std::size_t>(c.rank * c.hidden_size), rng, 0.3f), std::move(gain),
          random_buffer(static_cast<std::size_t>(c.heads * c.head_dim * c.rank), rng, 0.3f),
          random_buffer(static_cast<std::size_t>(c.heads * c.hidden_size), rng, 0.3f)};
}
MemoryIndexerLayer copy_of(MemoryIndexerLayer const& l) {
  auto dup = [](HostBuffer<float> const& b) {
    HostBuffer<float> o(b.size());
    std::copy(b.begin(), b.end(), o.begin());
    return o;
  };
  return {dup(l.wq_a), dup(l.q_norm), dup(l.wq_b), dup(l.weights_proj), l.bias};
}

// lsa.md §3 restated with plain loops: explicit Hadamard matrix, explicit rotation of adjacent pairs.
std::vector<double> direct_logits(MemoryIndexerConfig const& c, MemoryIndexerLayer const& w, std::vector<float> const& x,
                                  index_t pos, std::vector<float> const& keys, index_t n) {
  index_t D = c.hidden_size, R = c.rank, H = c.heads, d = c.head_dim;
  std::vector<double> a(R), q(H * d), wh(H), out(n);
  double ss = 0;
  for (index_t r = 0; r < R; ++r) {
    for (index_t i = 0; i < D; ++i) a[r] += double(w.wq_a[r * D + i]) * x[i];
    ss += a[r] * a[r];
  }
  for (index_t r = 0; r < R; ++r) a[r] = a[r] / std::sqrt(ss / R + 1e-6) * w.q_norm[r];
  for (index_t o = 0; o < H * d; ++o)
    for (index_t r = 0; r < R; ++r) q[o] += double(w.wq_b[o * R + r]) * a[r];
  for (index_t h = 0; h < H; ++h) {
    double* head = &q[h * d];
    for (index_t i = 0; i < c.rope_dim / 2; ++i) {
      double angle = double(pos) * std::pow(c.rope.theta, -2.0 * double(i) / double(c.rope_dim));
      double& u = head[d - c.rope_dim + 2 * i];
      double& v = head[d - c.rope_dim + 2 * i + 1];
      double nu = u * std::cos(angle) - v * std::sin(angle), nv = v * std::cos(angle) + u * std::sin(angle);
      u = nu, v = nv;
    }
    if (c.hadamard) {
      std::vector<double> rot(d);
      for (index_t i = 0; i < d; ++i)
        for (index_t j = 0; j < d; ++j) rot[i] += (std::popcount(std::uint64_t(i & j)) % 2 ? -1.0 : 1.0) * head[j] / std::sqrt(double(d));
      std::copy(rot.begin(), rot.end(), head);
    }
    for (index_t i = 0; i < D; ++i) wh[h] += double(w.weights_proj[h * D + i]) * x[i];
    wh[h] /= std::sqrt(double(d) * double(H));
  }
  for (index_t k = 0; k < n; ++k)
    for (index_t h = 0; h < H; ++h) {
      double dot = 0;
      for (index_t i = 0; i < d; ++i) dot += q[h * d + i] * keys[k * d + i];
      out[k] += wh[h] * std::max(dot, 0.0);
    }
  return out;
}
double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// A safetensors image of float32 tensors.
struct NamedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  HostBuffer<float> const* data;
};
std::vector<std::byte> safetensors_image(std::vector<NamedTensor> const& tensors) {
  std::string header = "{";
  std::size_t offset = 0;
  for (auto const& t : tensors) {
    std::string shape;
    for (auto s : t.shape) shape += detail::cat(shape.empty() ? "" : ",", s);
    header += detail::cat(header.size() > 1 ? "," : "", '"', t.name, "\":{\"dtype\":\"F32\",\"shape\":[", shape,
                          "],\"data_offsets\":[", offset, ",", offset + t.data->bytes(), "]}");
    offset += t.data->bytes();
  }
  header += "}";
  std::vector<std::byte> image(8 + header.size() + offset);
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) image[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  std::memcpy(image.data() + 8, header.data(), header.size());
  std::size_t at = 8 + header.size();
  for (auto const& t : tensors) {
    std::memcpy(image.data() + at, t.data->data(), t.data->bytes());
    at += t.data->bytes();
  }
  return image;
}
}  // namespace

TEST_CASE("hadamard is the normalised Sylvester transform", "[indexer]") {
  std::mt19937 rng(1);
  auto x = random_vector(32, rng);
  auto y = x;
  indexer::hadamard(y);
  for (int i = 0; i < 32; ++i) {
    double s = 0;
    for (int j = 0; j < 32; ++j) s += (std::popcount(unsigned(i & j)) % 2 ? -1.0 : 1.0) * x[j];
    CHECK(std::abs(y[i] - s / std::sqrt(32.0)) < 1e-5);
  }
  indexer::hadamard(y);  // an involution
  for (int i = 0; i < 32; ++i) CHECK(std::abs(y[i] - x[i]) < 1e-5);
  std::vector<float> bad(12);
  CHECK_THROWS_AS(indexer::hadamard(bad), error);
}

TEST_CASE("the default configuration is the released Memory Indexer on DeepSeek-V4's compress rope", "[indexer]") {
  MemoryIndexerConfig c;
  CHECK(c.hidden_size == 4096);
  CHECK(c.heads == 128);
  CHECK(c.head_dim == 128);
  CHECK(c.rank == 2048);
  Rope rope(c.rope, c.rope_dim);
  auto f = rope.inv_freq();  // deepseek-v4.md §2.2 reference values
  CHECK(std::abs(f[15] / 3.6355e-3 - 1) < 1e-4);
  CHECK(std::abs(f[20] / 2.96978e-4 - 1) < 1e-4);
  CHECK(std::abs(f[31] / 5.68053e-7 - 1) < 1e-4);
  // 42.5 M parameters per layer (lsa.md §3).
  double params = double(c.rank * c.hidden_size + c.rank + c.heads * c.head_dim * c.rank + c.heads * c.hidden_size);
  CHECK(std::abs(params / 42.5e6 - 1) < 0.01);
}

TEST_CASE("MemoryIndexer equals lsa.md §3 restated, for each layer and both combinations", "[indexer]") {
  std::mt19937 rng(2);
  for (bool rotate : {true, false}) {
    auto c = tiny_config();
    c.hadamard = rotate;
    std::vector<MemoryIndexerLayer> layers, kept;
    for (int l = 0; l < 3; ++l) layers.push_back(random_layer(c, rng)), kept.push_back(copy_of(layers.back()));
    index_t n = 150, pos = 603;
    std::vector<std::vector<float>> hidden, keys;
    std::vector<ScoringLayer> ctx_layers;
    for (int l = 0; l < 3; ++l) {
      hidden.push_back(random_vector(24, rng));
      keys.push_back(random_vector(static_cast<std::size_t>(n * 16), rng, 0.5f));
      ctx_layers.push_back({.hidden = vector_view<float const>(hidden[l].data(), 24), .keys = matrix_view<float const>(keys[l].data(), n, 16)});
    }
    ScoringContext ctx{.position = pos, .num_chunks = n, .layers = ctx_layers};
    MemoryIndexer mi(c, std::move(layers));
    std::vector<float> got(n);
    mi.score(ctx, got);
    std::vector<std::vector<double>> logits;
    for (int l = 0; l < 3; ++l) logits.push_back(direct_logits(c, kept[l], hidden[l], pos, keys[l], n));
    int above = 0;
    for (index_t k = 0; k < n; ++k) {
      double want = std::max({sigmoid(logits[0][k]), sigmoid(logits[1][k]), sigmoid(logits[2][k])});
      CHECK(std::abs(got[k] - want) < 2e-6);
      above += got[k] > 0.5f;
    }
    CHECK(above > 0);  // non-trivial: the scores straddle 0.5
    CHECK(above < n);

    auto mean_config = c;
    mean_config.combine = indexer::LayerCombine::mean;
    std::vector<MemoryIndexerLayer> again;
    for (auto const& l : kept) again.push_back(copy_of(l));
    MemoryIndexer mean(mean_config, std::move(again));
    mean.score(ctx, got);
    for (index_t k = 0; k < n; ++k)
      CHECK(std::abs(got[k] - (sigmoid(logits[0][k]) + sigmoid(logits[1][k]) + sigmoid(logits[2][k])) / 3) < 2e-6);
  }
}

TEST_CASE("rotating the query and the keys by Hadamard leaves the scores unchanged", "[indexer]") {
  std::mt19937 rng(3);
  auto c = tiny_config();
  auto layer = random_layer(c, rng);
  auto plain_config = c;
  plain_config.hadamard = false;
  std::vector<MemoryIndexerLayer> a, b;
  a.push_back(copy_of(layer)), b.push_back(std::move(layer));
  MemoryIndexer rotated(c, std::move(a)), plain(plain_config, std::move(b));
  index_t n = 80;
  auto x = random_vector(24, rng);
  auto keys = random_vector(static_cast<std::size_t>(n * 16), rng), rotated_keys = keys;
  for (index_t k = 0; k < n; ++k) indexer::hadamard(std::span<float>(rotated_keys).subspan(static_cast<std::size_t>(k * 16), 16));
  std::vector<ScoringLayer> l1{{.hidden = vector_view<float const>(x.data(), 24), .keys = matrix_view<float const>(rotated_keys.data(), n, 16)}};
  std::vector<ScoringLayer> l2{{.hidden = vector_view<float const>(x.data(), 24), .keys = matrix_view<float const>(keys.data(), n, 16)}};
  std::vector<float> s1(n), s2(n);
  rotated.score({.position = 77, .num_chunks = n, .layers = l1}, s1);
  plain.score({.position = 77, .num_chunks = n, .layers = l2}, s2);
  for (index_t k = 0; k < n; ++k) CHECK(std::abs(s1[k] - s2[k]) < 1e-5);
  // A different position gives different scores (the rope is applied).
  plain.score({.position = 78, .num_chunks = n, .layers = l2}, s1);
  CHECK(s1 != s2);
}

TEST_CASE("MemoryIndexer loads retrievers.l{L}.* from safetensors and names bad tensors", "[indexer]") {
  std::mt19937 rng(4);
  auto c = tiny_config();
  auto l10 = random_layer(c, rng), l12 = random_layer(c, rng);
  l12.bias = -0.75f;  // only l12 stores one: l10 loads with 0
  HostBuffer<float> bias12(1);
  bias12[0] = l12.bias;
  auto entry = [&](index_t id, MemoryIndexerLayer const& l) {
    std::string p = "retrievers.l" + std::to_string(id) + ".";
    return std::vector<NamedTensor>{{p + "wq_a.weight", {c.rank, c.hidden_size}, &l.wq_a},
                                    {p + "q_norm_weight", {c.rank}, &l.q_norm},
                                    {p + "wq_b.weight", {c.heads * c.head_dim, c.rank}, &l.wq_b},
                                    {p + "weights_proj.weight", {c.heads, c.hidden_size}, &l.weights_proj}};
  };
  auto tensors = entry(10, l10);
  for (auto& t : entry(12, l12)) tensors.push_back(t);
  tensors.push_back({"retrievers.l12.bias", {1}, &bias12});
  auto image = safetensors_image(tensors);
  auto file = io::SafetensorsFile::parse(image, "retrievers.safetensors");
  std::vector<index_t> ids{10, 12};
  auto loaded = MemoryIndexer::load(file, c, ids);
  std::vector<MemoryIndexerLayer> direct;
  direct.push_back(copy_of(l10)), direct.push_back(copy_of(l12));
  MemoryIndexer built(c, std::move(direct));
  index_t n = 40;
  auto x = random_vector(24, rng), y = random_vector(24, rng), keys = random_vector(static_cast<std::size_t>(n * 16), rng);
  std::vector<ScoringLayer> layers{{.hidden = vector_view<float const>(x.data(), 24), .keys = matrix_view<float const>(keys.data(), n, 16)},
                                   {.hidden = vector_view<float const>(y.data(), 24), .keys = matrix_view<float const>(keys.data(), n, 16)}};
  std::vector<float> s1(n), s2(n);
  loaded.score({.position = 9, .num_chunks = n, .layers = layers}, s1);
  built.score({.position = 9, .num_chunks = n, .layers = layers}, s2);
  CHECK(s1 == s2);
  // The bias shifts the logit of its layer and nothing else: l12 alone, with and without it.
  auto alone = [&](float bias) {
    std::vector<MemoryIndexerLayer> one;
    one.push_back(copy_of(l12)), one.back().bias = bias;
    std::vector<float> s(static_cast<std::size_t>(n));
    MemoryIndexer(c, std::move(one)).score({.position = 9, .num_chunks = n, .layers = std::span(layers).subspan(1)}, s);
    return s;
  };
  auto with = alone(l12.bias), without = alone(0.0f);
  auto logit = [](float p) { return std::log(double(p) / (1.0 - double(p))); };
  for (index_t k = 0; k < n; ++k) CHECK(std::abs(logit(with[k]) - logit(without[k]) - l12.bias) < 1e-4);

  std::vector<index_t> missing{10, 20};
  try {
    MemoryIndexer::load(file, c, missing);
    FAIL("a missing layer loaded");
  } catch (error const& e) {
    CHECK(e.code() == errc::not_found);
    CHECK(std::string(e.what()).find("retrievers.l20.wq_a.weight") != std::string::npos);
  }
  auto wide = c;
  wide.rank = 16;
  CHECK_THROWS_AS(MemoryIndexer::load(file, wide, ids), error);
  CHECK_THROWS_AS(loaded.score({.position = 9, .num_chunks = n, .layers = std::span(layers).first(1)}, s1), error);
}

TEST_CASE("MinMaxBounds bounds the native score of every chunk of a page, tightly for one-chunk pages", "[indexer]") {
  std::mt19937 rng(5);
  index_t H = 6, d = 16, n = 300;
  for (index_t per : {1, 7, 64}) {
    auto q = random_vector(static_cast<std::size_t>(H * d), rng), w = random_vector(static_cast<std::size_t>(H), rng);  // some w < 0
    auto keys = random_vector(static_cast<std::size_t>(n * d), rng), hidden = random_vector(4, rng);
    std::vector<ScoringLayer> layers{{.hidden = vector_view<float const>(hidden.data(), 4),
                                      .keys = matrix_view<float const>(keys.data(), n, d),
                                      .query = matrix_view<float const>(q.data(), H, d),
                                      .head_weights = vector_view<float const>(w.data(), H)}};
    std::vector<float> bound(n), exact(n);
    indexer::MinMaxBounds{.chunks_per_page = per}.score({.num_chunks = n, .layers = layers}, bound);
    indexer::index_scores(layers[0].query, layers[0].head_weights, layers[0].keys, exact);
    for (index_t k = 0; k < n; ++k) {
      CHECK(bound[k] >= exact[k] - 1e-5f * (1 + std::abs(exact[k])));
      CHECK(bound[k] == bound[k / per * per]);  // one bound per page
      if (per == 1) CHECK(std::abs(bound[k] - exact[k]) <= 1e-5f * (1 + std::abs(exact[k])));
    }
  }
  std::vector<float> keys(20), hidden(4), s(5);
  std::vector<ScoringLayer> no_query{{.hidden = vector_view<float const>(hidden.data(), 4), .keys = matrix_view<float const>(keys.data(), 5, 4)}};
  CHECK_THROWS_AS(indexer::MinMaxBounds{}.score({.num_chunks = 5, .layers = no_query}, s), error);
}

TEST_CASE("Random is seeded and uniform; Oracle returns the future labels and needs them", "[indexer]") {
  ScoringContext ctx{.num_chunks = 4000};
  std::vector<float> a(4000), b(4000), c(4000);
  indexer::Random r1(42), r2(42), r3(43);
  r1.score(ctx, a), r2.score(ctx, b), r3.score(ctx, c);
  CHECK(a == b);
  CHECK(a != c);
  double mean = 0;
  for (float v : a) {
    CHECK((v >= 0 && v < 1));
    mean += v;
  }
  CHECK(std::abs(mean / 4000 - 0.5) < 0.02);
  r1.score(ctx, b);
  CHECK(a != b);  // the generator advances

  std::mt19937 rng(6);
  std::vector<float> future(300);
  for (float& f : future) f = std::bernoulli_distribution(0.1)(rng);
  std::vector<float> s(300);
  indexer::Oracle{}.score({.num_chunks = 300, .future = future}, s);
  CHECK(s == future);
  CHECK_THROWS_AS(indexer::Oracle{}.score({.num_chunks = 300}, s), error);
}
