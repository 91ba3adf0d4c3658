// What a decoder needs beyond select/gather (lsa/concepts.hpp): Level-2 scores read from where the chunks live,
// reset, a run-time τ, and the NativeTrace that labels an oracle's windows.
#include "support.hpp"

#include <flashmemory/indexer/oracle.hpp>
#include <flashmemory/indexer/random.hpp>
#include <flashmemory/indexer/recency.hpp>
#include <flashmemory/layout/index_key.hpp>
#include <flashmemory/lsa/full_resident.hpp>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/lsa/native_trace.hpp>
#include <flashmemory/residency/threshold.hpp>
#include <flashmemory/residency/top_fraction.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

using namespace flashmemory;

namespace {
constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// A deterministic scorer that prefers different old pages at each boundary (so recalls fetch).
struct Shuffled {
  static constexpr bool kProbabilities = false;
  void score(indexer::ScoringContext const& ctx, std::span<float> scores) const {
    for (index_t c = 0; c < ctx.num_chunks; ++c) scores[static_cast<std::size_t>(c)] = static_cast<float>((c * 37 + ctx.position) % 11);
  }
};
}  // namespace

TEST_CASE("Level-2 scores cover exactly the readable chunks, from the keys as stored", "[lsa]") {
  constexpr index_t L = 2, d = 8, dk = 32, H = 3, k = 5;
  layout::F32Records entry(d, 4);
  layout::IndexKeyFp8 key(dk, 4);  // lossy: the scores must use the decoded fp8 keys
  lsa::FullResident<layout::F32Records, layout::IndexKeyFp8> full(entry, key, L);
  lsa::Lookahead<indexer::Random, residency::TopFraction, 8, layout::F32Records, layout::IndexKeyFp8> lsa(
      indexer::Random(1), {0.25}, entry, key, {.csa_layers = L, .reserve_cells = 11});
  std::mt19937 rng(7);
  index_t readable = 0, masked = 0;
  for (index_t t = 0; t < 600; ++t) {
    for (index_t l = 0; l < L; ++l) {
      if (t % 4 == 3) {
        auto e = random_vector(d, rng), kk = random_vector(dk, rng);
        full.append(l, e, kk), lsa.append(l, e, kk);
      }
      index_t n = full.keys(l).num_chunks();
      auto q = random_vector(H * dk, rng), w = random_vector(H, rng);
      matrix_view<float const> qv(q.data(), H, dk);
      vector_view<float const> wv(w.data(), H);
      // The reference: index_scores over every key decoded from the mirror.
      std::vector<float> keys(static_cast<std::size_t>(n * dk)), want(static_cast<std::size_t>(n));
      for (index_t c = 0; c < n; ++c) full.keys(l).decode(c, std::span<float>(keys).subspan(static_cast<std::size_t>(c * dk), dk));
      indexer::index_scores(qv, wv, matrix_view<float const>(keys.data(), n, dk), want);

      std::vector<float> a(static_cast<std::size_t>(n)), b(static_cast<std::size_t>(n));
      full.score(l, qv, wv, a);
      lsa.score(l, qv, wv, b);
      REQUIRE(a == want);
      for (index_t c = 0; c < n; ++c) {
        bool r = lsa.readable(l, c);
        REQUIRE(b[static_cast<std::size_t>(c)] == (r ? want[static_cast<std::size_t>(c)] : kMinusInf));
        readable += r, masked += !r;
      }
      auto s = lsa.select(l, b, k);
      for (std::int32_t c : s.chunks) REQUIRE(lsa.readable(l, c));
      REQUIRE(s.chunks == indexer::top_k(b, k));  // masking in score() and in select() agree
    }
    lsa.end_step(1);
  }
  CHECK(readable > 10'000);
  CHECK(masked > readable);  // a quarter of the pages (+1 cell): most chunks are not readable
  std::vector<float> wrong(3);
  CHECK_THROWS_AS(lsa.score(0, matrix_view<float const>(nullptr, 0, dk), vector_view<float const>(nullptr, 0), wrong), error);
}

TEST_CASE("reset forgets the sequence: a second run repeats the first", "[lsa]") {
  layout::F32Records entry(6, 4), key(8, 4);
  using Lsa = lsa::Lookahead<Shuffled, residency::TopFraction, 8>;
  Lsa lsa({}, {0.3}, entry, key, {.csa_layers = 2, .reserve_cells = 7});
  lsa::FullResident<> full(entry, key, 2);
  auto run = [&](std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<std::int32_t> rows;
    for (index_t t = 0; t < 300; ++t) {
      for (index_t l = 0; l < 2; ++l) {
        if (t % 4 == 3) {
          auto e = random_vector(6, rng), kk = random_vector(8, rng);
          lsa.append(l, e, kk), full.append(l, e, kk);
        }
        auto s = lsa.select(l, random_vector(static_cast<std::size_t>(full.keys(l).num_chunks()), rng), 4);
        rows.insert(rows.end(), s.rows.begin(), s.rows.end());
      }
      lsa.end_step(1), full.end_step(1);
    }
    return rows;
  };
  auto first = run(1);
  auto stats = lsa.stats();
  auto table = lsa.table();
  CHECK(stats.recall.pages_fetched > 0);
  lsa.reset(), full.reset();
  CHECK(lsa.position() == 0);
  CHECK(lsa.entries(0).mirror.num_chunks() == 0);
  CHECK(full.entries(1).num_chunks() == 0);
  CHECK(lsa.footprint().total().mirror_bytes == 0);
  CHECK(full.footprint().total().full_bytes == 0);
  CHECK(run(1) == first);
  CHECK(lsa.table() == table);
  CHECK(lsa.stats().windows == stats.windows);
  CHECK(lsa.stats().recall.bytes_moved == stats.recall.bytes_moved);
}

TEST_CASE("τ can be set at run time", "[lsa]") {
  layout::F32Records entry(4, 4), key(4, 4);
  lsa::Lookahead<indexer::Recency, residency::TopFraction> lsa({}, {1.0}, entry, key, {.csa_layers = 1, .reserve_cells = 8, .tau = 5});
  CHECK(lsa.tau() == 5);
  index_t boundaries = 0;
  for (index_t t = 0; t < 100; ++t) {
    bool due = lsa.boundary_due(1);
    CHECK(due == (t == 0 || (t + 1) % 5 == 0));
    boundaries += due;
    lsa.end_step(1);
  }
  CHECK(boundaries == 21);  // the first step, then every 5th
  CHECK(lsa.stats().windows == 21);
  CHECK_THROWS_AS((lsa::Lookahead<indexer::Recency, residency::TopFraction>({}, {1.0}, entry, key, {.csa_layers = 1, .tau = -1})),
                  error);
}

TEST_CASE("NativeTrace forwards, records each step's selections and labels the window after a boundary", "[lsa]") {
  constexpr index_t d = 4, per = 2, tau = 4;
  layout::F32Records entry(d, per), key(d, per);
  lsa::NativeTrace<> trace(lsa::FullResident<>(entry, key, 2));
  lsa::FullResident<> plain(entry, key, 2);
  std::mt19937 rng(9);
  std::vector<index_t> steps{9, 3, 1, 1, 1, 1, 2, 1, 1, 1, 1, 5, 1, 1, 1, 1};  // prefill-like and decode steps
  std::vector<std::set<std::int32_t>> picked;  // per step, over both layers
  index_t position = 0, chunks = 0;
  for (index_t n : steps) {
    std::set<std::int32_t> step;
    for (index_t s = 0; s < n; ++s, ++position) {
      if (position % 4 == 3) {
        for (index_t l = 0; l < 2; ++l) {
          auto e = random_vector(d, rng), kk = random_vector(d, rng);
          trace.append(l, e, kk), plain.append(l, e, kk);
        }
        ++chunks;
      }
      for (index_t l = 0; l < 2; ++l) {
        auto scores = random_vector(static_cast<std::size_t>(chunks), rng);
        auto got = trace.select(l, scores, 2);
        REQUIRE(got.chunks == plain.select(l, scores, 2).chunks);
        step.insert(got.chunks.begin(), got.chunks.end());
      }
    }
    trace.end_step(n);
    picked.push_back(step);
  }
  REQUIRE(trace.steps().size() == steps.size());
  CHECK(trace.footprint().total().full_bytes == plain.footprint().total().full_bytes);
  for (std::size_t i = 0; i < steps.size(); ++i)
    CHECK(std::set<std::int32_t>(trace.steps()[i].selected.begin(), trace.steps()[i].selected.end()) == picked[i]);

  // The window after the step ending at 12 is the steps ending in (12, 16]; only chunks that existed at 12 count.
  auto labels = trace.labels(12, 16);
  REQUIRE(labels.size() == 3);
  std::set<std::int32_t> want;
  for (std::size_t i = 0; i < steps.size(); ++i)
    if (trace.steps()[i].end > 12 && trace.steps()[i].end <= 16)
      for (std::int32_t c : picked[i])
        if (c < 3) want.insert(c);
  for (std::int32_t c = 0; c < 3; ++c) CHECK((labels[static_cast<std::size_t>(c)] == 1.0f) == want.contains(c));
  CHECK_THROWS_AS(trace.labels(11, 16), error);  // no step ended at 11

  // An oracle run over the same steps gets labels at every boundary, sized to its history; a multi-token step
  // that crosses the next multiple of τ closes the window.
  lsa::Lookahead<indexer::Oracle, residency::Threshold> oracle({}, {0.5}, entry, key, {.csa_layers = 2, .reserve_cells = 16, .tau = tau});
  position = 0;
  index_t windows = 0;
  for (index_t n : steps) {
    trace.offer_future(oracle, n);
    for (index_t s = 0; s < n; ++s, ++position)
      if (position % 4 == 3)
        for (index_t l = 0; l < 2; ++l) oracle.append(l, random_vector(d, rng), random_vector(d, rng));
    windows += oracle.boundary_due(n);
    oracle.end_step(n);  // the Oracle scorer fails on a boundary without labels of the right size
  }
  CHECK(windows == oracle.stats().windows);
  CHECK(windows == 6);  // after the steps ending at 9, 12, 16, 20, 27 (from 22: it crosses 24) and 28

  trace.reset();
  CHECK(trace.steps().empty());
  CHECK(trace.inner().entries(0).num_chunks() == 0);
}
