// The minimal conforming model of each concept passes, near-misses are rejected, and each model computes
// what its contract says.
#include <flashmemory/attention/reference.hpp>
#include <flashmemory/indexer/recency.hpp>
#include <flashmemory/layout/f32_records.hpp>
#include <flashmemory/residency/recency_tail.hpp>

#include <catch2/catch_test_macros.hpp>

#include <array>
#include <cmath>
#include <random>
#include <vector>

using namespace flashmemory;

namespace {
struct NoDecode {  // a layout that cannot decode its records
  index_t channels() const { return 1; }
  index_t record_bytes() const { return 4; }
  index_t chunks_per_page() const { return 64; }
  void encode(std::span<float const>, std::span<std::byte>) const {}
};
struct UnflaggedScorer {  // scores but does not say whether they are probabilities
  void score(indexer::ScoringContext const&, std::span<float>) {}
};
struct PolicyReturningVector {  // returns pages in the wrong type
  std::vector<index_t> select(residency::SelectionContext const&) const { return {}; }
};
struct KernelWithoutCheck {
  using Arguments = attention::SparseDecodeArguments<float>;
  Status run(Arguments const&) const { return {}; }
};
}  // namespace

static_assert(layout::chunk_layout<layout::F32Records>);
static_assert(!layout::chunk_layout<NoDecode>);
static_assert(indexer::indexer_scorer<indexer::Recency>);
static_assert(!indexer::indexer_scorer<UnflaggedScorer>);
static_assert(residency::residency_policy<residency::RecencyTail>);
static_assert(!residency::residency_policy<PolicyReturningVector>);
static_assert(attention::sparse_attention<attention::SparseDecodeReference>);
static_assert(!attention::sparse_attention<KernelWithoutCheck>);

TEST_CASE("F32Records round-trips a chunk and sizes its pages", "[concepts][layout]") {
  layout::F32Records l(5, 64);
  std::array<float, 5> in{1.5f, -2.0f, 3.25f, 0.125f, 7.0f}, out{};
  std::array<std::byte, 20> rec{};
  l.encode(in, rec);
  l.decode(rec, out);
  CHECK(out == in);
  CHECK(layout::page_bytes(l) == 5 * 4 * 64);
}

TEST_CASE("Recency scores newer chunks higher; RecencyTail keeps the tail's pages", "[concepts][residency]") {
  indexer::Recency r;
  indexer::ScoringContext ctx{.position = 1000, .num_chunks = 250};
  std::vector<float> scores(250);
  r.score(ctx, scores);
  CHECK(std::is_sorted(scores.begin(), scores.end()));
  CHECK(scores.back() == 1.0f);

  residency::RecencyTail tail{.tail_chunks = 100};
  auto set = tail.select({.num_chunks = 250, .chunks_per_page = 64, .scores = scores});
  CHECK(set.pages == std::vector<index_t>{2, 3});  // chunks 150..249 lie in pages 2 and 3
  CHECK(tail.select({.num_chunks = 0, .chunks_per_page = 64}).pages.empty());
  CHECK(residency::RecencyTail{.tail_chunks = 1000}.select({.num_chunks = 250, .chunks_per_page = 64}).pages.size() == 4);
}

TEST_CASE("SparseDecodeReference equals a direct softmax with sink on random data", "[concepts][attention]") {
  constexpr index_t B = 2, H = 3, d = 8, W = 4, R = 10, K = 3;
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> q(B * H * d), win(B * W * d), pool(R * d), sink(H), out(B * H * d, NAN);
  for (auto* v : {&q, &win, &pool, &sink})
    for (float& x : *v) x = n(rng);
  std::vector<std::int32_t> wlen{4, 2}, sel{7, -1, 2, 0, 9, 9};
  attention::SparseDecodeReference k;
  attention::SparseDecodeReference::Arguments a{
      .q = view<float const, 3>(q.data(), B, H, d),
      .window = view<float const, 3>(win.data(), B, W, d),
      .window_len = vector_view<std::int32_t const>(wlen.data(), B),
      .pool = matrix_view<float const>(pool.data(), R, d),
      .selected = matrix_view<std::int32_t const>(sel.data(), B, K),
      .sink = vector_view<float const>(sink.data(), H),
      .out = view<float, 3>(out.data(), B, H, d),
      .scale = 0.35f};
  REQUIRE(k.run(a).ok());
  // b = 1, h = 2: rows = window 0,1 and pool 0, 9, 9 (a duplicate slot counts twice).
  std::vector<float const*> rows{&win[(1 * W + 0) * d], &win[(1 * W + 1) * d], &pool[0], &pool[9 * d], &pool[9 * d]};
  double den = std::exp(double(sink[2])), num[d] = {};
  for (auto* r : rows) {
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += double(q[(1 * H + 2) * d + c]) * r[c];
    double p = std::exp(0.35 * dot);
    den += p;
    for (int c = 0; c < d; ++c) num[c] += p * r[c];
  }
  for (int c = 0; c < d; ++c) CHECK(std::abs(out[(1 * H + 2) * d + c] - num[c] / den) < 1e-5);

  std::vector<std::int32_t> bad{7, -1, 2, 0, 10, 9};
  a.selected = matrix_view<std::int32_t const>(bad.data(), B, K);
  Status s = k.run(a);
  CHECK(s.code == errc::invalid_argument);
  CHECK(s.message.find("selected[1, 1] = 10") != std::string::npos);
}
