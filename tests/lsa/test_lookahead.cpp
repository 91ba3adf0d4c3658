// The Lookahead controller: FullResident and an everything-resident Lookahead are the native top-k; Level 1
// runs on the window cadence with the right inputs; the host cap fails cleanly; footprints add up.
#include "support.hpp"

#include <flashmemory/indexer/memory_indexer.hpp>
#include <flashmemory/indexer/minmax_bounds.hpp>
#include <flashmemory/indexer/oracle.hpp>
#include <flashmemory/layout/csa_entry.hpp>
#include <flashmemory/layout/index_key.hpp>
#include <flashmemory/lsa/full_resident.hpp>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/residency/fallback.hpp>
#include <flashmemory/residency/published.hpp>
#include <flashmemory/residency/top_fraction.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

using namespace flashmemory;

TEST_CASE("FullResident and an everything-resident Lookahead select exactly the native top-k", "[lsa]") {
  constexpr index_t L = 3, d = 12, dk = 8, k = 20;
  layout::F32Records entry(d, 8), key(dk, 8);
  lsa::FullResident<> full(entry, key, L);
  // τ = 16; a reserve for the whole history and a policy that keeps every page: nothing may differ.
  lsa::Lookahead<indexer::Recency, residency::TopFraction, 16> all({}, {1.0}, entry, key, {.csa_layers = L, .reserve_cells = 64});
  std::mt19937 rng(1);
  std::vector<std::vector<std::vector<float>>> written(L);
  index_t checked = 0;
  for (index_t t = 0; t < 1500; ++t) {
    for (index_t l = 0; l < L; ++l) {
      if ((t + 1) % 4 == 0) {  // a CSA layer emits one chunk every 4 tokens
        auto e = random_vector(d, rng), kk = random_vector(dk, rng);
        full.append(l, e, kk);
        all.append(l, e, kk);
        written[l].push_back(e);
      }
      index_t n = static_cast<index_t>(written[l].size());
      std::vector<float> scores = random_vector(static_cast<std::size_t>(n), rng);
      for (float& s : scores) s = std::round(s * 4) / 4;  // ties, to pin the tie order too
      auto native = indexer::top_k(scores, k);
      auto a = full.select(l, scores, k), b = all.select(l, scores, k);
      REQUIRE(a.chunks == native);
      REQUIRE(b.chunks == native);
      std::vector<float> ga(native.size() * d), gb(native.size() * d);
      full.gather(l, a.rows, matrix_view<float>(ga.data(), static_cast<index_t>(native.size()), d));
      all.gather(l, b.rows, matrix_view<float>(gb.data(), static_cast<index_t>(native.size()), d));
      REQUIRE(ga == gb);
      for (std::size_t i = 0; i < native.size(); ++i)
        REQUIRE(std::equal(written[l][native[i]].begin(), written[l][native[i]].end(), ga.begin() + i * d));
      checked += static_cast<index_t>(native.size());
    }
    all.end_step(1);
    full.end_step(1);
  }
  CHECK(checked > 50'000);
  CHECK(all.stats().windows == 1500 / 16 + 1);
  CHECK(all.stats().recall.pages_fetched == 0);  // appends opened every page in a cell: nothing to recall
  CHECK(full.footprint().total().resident_bytes == all.footprint().total().full_bytes);
}

TEST_CASE("Level 1 runs once per window, on the offered hidden states and the stored keys", "[lsa]") {
  // A tiny Memory Indexer on CSA layers 1 and 2 of 3; keys stored as fp8, so the scorer must see decoded fp8.
  indexer::MemoryIndexerConfig c;
  c.hidden_size = 16, c.rank = 8, c.heads = 2, c.head_dim = 16, c.rope_dim = 4;
  c.rope = {.theta = 1000.0};
  std::mt19937 rng(2);
  auto tower = [&] {
    auto buf = [&](std::size_t n, float s) {
      HostBuffer<float> b(n);
      for (float& x : b) x = std::normal_distribution<float>(0, s)(rng);
      return b;
    };
    auto gain = buf(8, 0.1f);
    for (float& g : gain) g += 1;
    return indexer::MemoryIndexerLayer{buf(8 * 16, 0.5f), std::move(gain), buf(32 * 8, 0.5f), buf(2 * 16, 2.0f)};
  };
  std::vector<indexer::MemoryIndexerLayer> towers;
  towers.push_back(tower()), towers.push_back(tower());
  indexer::MemoryIndexer reference_scorer = [&] {
    std::vector<indexer::MemoryIndexerLayer> copies;
    for (auto const& t : towers) {
      indexer::MemoryIndexerLayer cp{HostBuffer<float>(t.wq_a.size()), HostBuffer<float>(t.q_norm.size()),
                                     HostBuffer<float>(t.wq_b.size()), HostBuffer<float>(t.weights_proj.size())};
      std::copy(t.wq_a.begin(), t.wq_a.end(), cp.wq_a.begin()), std::copy(t.q_norm.begin(), t.q_norm.end(), cp.q_norm.begin());
      std::copy(t.wq_b.begin(), t.wq_b.end(), cp.wq_b.begin());
      std::copy(t.weights_proj.begin(), t.weights_proj.end(), cp.weights_proj.begin());
      copies.push_back(std::move(cp));
    }
    return indexer::MemoryIndexer(c, std::move(copies));
  }();
  residency::Union<residency::DensestPages, residency::RecencyTail> policy{residency::DensestPages{.kmax = 3}, residency::RecencyTail{8}};
  layout::CsaEntryPacked entry(32, 8, 8);
  layout::IndexKeyFp8 key(16, 8);
  using Lsa = lsa::Lookahead<indexer::MemoryIndexer, decltype(policy), 8, layout::CsaEntryPacked, layout::IndexKeyFp8>;
  Lsa lsa(indexer::MemoryIndexer(c, std::move(towers)), policy, entry, key,
          {.csa_layers = 3, .target_layers = {1, 2}, .reserve_cells = 8});
  index_t windows = 0, above = 0, below = 0;
  for (index_t step = 0; step < 400; ++step) {
    index_t tokens = step == 0 ? 37 : 1 + step % 3;  // a prefill, then steps of 1–3 tokens
    bool due = lsa.boundary_due(tokens);
    CHECK(due == (step == 0 || (lsa.position() + tokens) / 8 > lsa.position() / 8));
    std::vector<std::vector<float>> hidden(3);
    for (index_t l = 0; l < 3; ++l) {
      index_t emitted = (lsa.position() + tokens) / 4 - lsa.position() / 4;
      for (index_t e = 0; e < emitted; ++e) lsa.append(l, random_vector(32, rng), random_vector(16, rng));
      hidden[l] = random_vector(16, rng);
      if (due) lsa.offer(l, {.hidden = hidden[l]});
    }
    lsa.end_step(tokens);
    if (!due) continue;
    ++windows;
    // Recompute what Level 1 should have chosen, from the mirrors' decoded keys.
    index_t n = lsa.entries(0).mirror.num_chunks();
    std::vector<std::vector<float>> keys(2, std::vector<float>(static_cast<std::size_t>(n * 16)));
    for (int t = 0; t < 2; ++t)
      for (index_t ch = 0; ch < n; ++ch) lsa.keys(1 + t).mirror.decode(ch, std::span<float>(keys[t]).subspan(ch * 16, 16));
    std::vector<indexer::ScoringLayer> layers;
    for (int t = 0; t < 2; ++t)
      layers.push_back({.hidden = vector_view<float const>(hidden[1 + t].data(), 16), .keys = matrix_view<float const>(keys[t].data(), n, 16)});
    std::vector<float> scores(static_cast<std::size_t>(n));
    reference_scorer.score({.position = lsa.position() - 1, .num_chunks = n, .layers = layers}, scores);
    auto want = policy.select({.num_chunks = n, .chunks_per_page = 8, .scores = scores, .probabilities = true});
    REQUIRE(lsa.resident_set() == want);
    for (index_t p : want.pages) REQUIRE(lsa.table().cell_of(p) >= 0);
    above += std::count_if(scores.begin(), scores.end(), [](float s) { return s > 0.5f; });
    below += std::count_if(scores.begin(), scores.end(), [](float s) { return s < 0.5f; });
  }
  CHECK(above > 100);  // the scores straddle the threshold: the densest pages are a real choice
  CHECK(below > 100);
  CHECK(lsa.stats().windows == windows);
  CHECK(windows > 50);
  CHECK(lsa.stats().recall.pages_fetched > 0);
  auto const& r = lsa.stats().recall;
  CHECK(r.bytes_moved == static_cast<std::size_t>(r.pages_fetched) * 3 * static_cast<std::size_t>(layout::page_bytes(entry) + layout::page_bytes(key)));
  // A boundary without offered hidden states is an error the scorer names, not a silent reuse of old ones.
  while (!lsa.boundary_due(1)) lsa.end_step(1);
  CHECK_THROWS_AS(lsa.end_step(1), error);
}

TEST_CASE("MinMaxBounds gets the native query offered at a boundary; fallbacks are counted", "[lsa]") {
  std::mt19937 rng(3);
  layout::F32Records entry(4, 4), key(8, 4);
  lsa::Lookahead<indexer::MinMaxBounds, residency::TopFraction, 4> bounds({.chunks_per_page = 4}, {0.25}, entry, key,
                                                                         {.csa_layers = 1, .target_layers = {0}, .reserve_cells = 10});
  for (int i = 0; i < 40; ++i) bounds.append(0, random_vector(4, rng), random_vector(8, rng));
  auto q = random_vector(3 * 8, rng), w = random_vector(3, rng), x = random_vector(5, rng);
  bounds.offer(0, {.hidden = x, .query = q, .head_weights = w});
  bounds.end_step(160);
  CHECK(bounds.resident_set().pages.size() == 3);  // ⌈0.25 · 10⌉
  CHECK_THROWS_AS(bounds.offer(0, {.hidden = x, .query = q, .head_weights = std::span<float const>(w).first(2)}), error);

  using Policy = residency::Fallback<residency::Threshold>;
  lsa::Lookahead<indexer::Oracle, Policy, 4> oracle({}, Policy{.limit = 0.3, .mode = residency::FallbackMode::widen, .widened_fraction = 0.5},
                                                     entry, key, {.csa_layers = 1, .reserve_cells = 10});
  for (int i = 0; i < 40; ++i) oracle.append(0, random_vector(4, rng), random_vector(8, rng));
  std::vector<float> future(40, 0.0f);
  future[5] = 1;
  oracle.offer_future(future);
  oracle.end_step(160);
  CHECK(oracle.resident_set().pages == std::vector<index_t>{1});
  CHECK(oracle.stats().fallbacks == 0);
  std::fill(future.begin(), future.begin() + 20, 1.0f);  // half of the chunks "needed": the indexer cannot decide
  oracle.offer_future(future);
  oracle.end_step(4);
  CHECK(oracle.resident_set().fallback);
  CHECK(oracle.stats().fallbacks == 1);
  CHECK(oracle.resident_set().pages == std::vector<index_t>{0, 1, 2, 3, 4});  // ⌈0.5 · 10⌉ pages, the densest
}

TEST_CASE("the host-RAM cap stops an append before anything changes; the controller stays usable", "[lsa]") {
  layout::CsaEntryPacked entry(64, 16, 4);  // 352 B pages
  layout::IndexKeyFp8 key(32, 4);           // 144 B pages
  std::size_t cap = 2 * 5 * (352 + 144);    // 2 CSA layers × 5 pages
  lsa::Lookahead<indexer::Recency, residency::TopFraction, 8, layout::CsaEntryPacked, layout::IndexKeyFp8> lsa(
      {}, {0.5}, entry, key, {.csa_layers = 2, .reserve_cells = 3, .host_cap_bytes = cap});
  std::mt19937 rng(4);
  for (int i = 0; i < 20; ++i)
    for (index_t l = 0; l < 2; ++l) lsa.append(l, random_vector(64, rng), random_vector(32, rng));
  lsa.end_step(80);
  auto table = lsa.table();
  auto before = lsa.footprint();
  try {
    lsa.append(0, random_vector(64, rng), random_vector(32, rng));
    FAIL("the cap did not stop the append");
  } catch (error const& e) {
    CHECK(e.code() == errc::out_of_memory);
    CHECK(std::string(e.what()).find("host-RAM cap") != std::string::npos);
  }
  CHECK(lsa.table() == table);
  CHECK(lsa.entries(0).mirror.num_chunks() == 20);
  CHECK(lsa.keys(0).mirror.num_chunks() == 20);
  CHECK(before.total().mirror_bytes == cap);
  CHECK(lsa.footprint().total().mirror_bytes == cap);
  // Still usable: Level 2 reads and Level 1 windows go on over what is stored.
  std::vector<float> scores = random_vector(20, rng);
  auto sel = lsa.select(1, scores, 6);
  CHECK(!sel.chunks.empty());
  for (std::size_t i = 0; i < sel.chunks.size(); ++i) {
    auto got = lsa.entries(1).reserve.record(sel.rows[i]), want = lsa.entries(1).mirror.record(sel.chunks[i]);
    CHECK(std::ranges::equal(got, want));
  }
  lsa.end_step(8);
  CHECK(lsa.stats().windows == 2);
}

TEST_CASE("a resident set larger than the reserve fails clearly at the window boundary", "[lsa]") {
  layout::F32Records entry(4, 4), key(4, 4);
  lsa::Lookahead<indexer::Recency, residency::TopFraction, 4> lsa({}, {1.0}, entry, key, {.csa_layers = 1, .reserve_cells = 2});
  std::mt19937 rng(5);
  for (int i = 0; i < 12; ++i) lsa.append(0, random_vector(4, rng), random_vector(4, rng));
  try {
    lsa.end_step(48);
    FAIL("no error");
  } catch (error const& e) {
    CHECK(e.code() == errc::out_of_memory);
    CHECK(std::string(e.what()).find("3 pages but the reserve only 2 cells") != std::string::npos);
  }
}
