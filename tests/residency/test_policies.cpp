// Residency policies against direct restatements of their rules, on random scores.
#include <flashmemory/residency/fallback.hpp>
#include <flashmemory/residency/published.hpp>
#include <flashmemory/residency/top_fraction.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

using namespace flashmemory;
using namespace flashmemory::residency;

namespace {
std::vector<float> random_probabilities(index_t n, unsigned seed, double p_high) {
  std::mt19937 rng(seed);
  std::bernoulli_distribution high(p_high);
  std::uniform_real_distribution<float> lo(0.0f, 0.5f), hi(0.5001f, 1.0f);
  std::vector<float> s(static_cast<std::size_t>(n));
  for (float& x : s) x = high(rng) ? hi(rng) : lo(rng);
  return s;
}
bool valid(ResidentSet const& s, SelectionContext const& ctx) {
  return std::is_sorted(s.pages.begin(), s.pages.end()) &&
         std::adjacent_find(s.pages.begin(), s.pages.end()) == s.pages.end() &&
         (s.pages.empty() || (s.pages.front() >= 0 && s.pages.back() < page_count(ctx)));
}
}  // namespace

TEST_CASE("Threshold keeps exactly the pages with a chunk above t, and needs probabilities", "[residency]") {
  for (unsigned seed = 0; seed < 10; ++seed) {
    index_t n = 1000 + 37 * seed;
    auto s = random_probabilities(n, seed, 0.02);
    SelectionContext ctx{.num_chunks = n, .chunks_per_page = 16, .scores = s, .probabilities = true};
    auto set = Threshold{0.5}.select(ctx);
    REQUIRE(valid(set, ctx));
    std::set<index_t> expect;
    for (index_t c = 0; c < n; ++c)
      if (s[c] > 0.5f) expect.insert(c / 16);
    CHECK(set.pages == std::vector<index_t>(expect.begin(), expect.end()));
    CHECK(!set.pages.empty());
    CHECK(Threshold{1.0}.select(ctx).pages.empty());
  }
  std::vector<float> s(10, 0.9f);
  try {
    Threshold{}.select({.num_chunks = 10, .chunks_per_page = 4, .scores = s, .probabilities = false});
    FAIL("no error");
  } catch (error const& e) {
    CHECK(e.code() == errc::invalid_argument);
    CHECK(std::string(e.what()).find("probabilit") != std::string::npos);
  }
  CHECK_THROWS_AS(Threshold{}.select({.num_chunks = 11, .chunks_per_page = 4, .scores = s, .probabilities = true}), error);
}

TEST_CASE("Sink, Union and the published defaults", "[residency]") {
  std::vector<float> s(300, 0.1f);
  s[5] = 0.9f;    // page 0
  s[130] = 0.7f;  // page 2
  SelectionContext ctx{.num_chunks = 300, .chunks_per_page = 64, .scores = s, .probabilities = true};
  CHECK(Sink{0}.select(ctx).pages.empty());
  CHECK(Sink{1}.select(ctx).pages == std::vector<index_t>{0});
  CHECK(Sink{65}.select(ctx).pages == std::vector<index_t>{0, 1});
  CHECK(Sink{10'000}.select(ctx).pages.size() == 5);

  ThresholdRecencySink trs;
  CHECK(trs.get<RecencyTail>().tail_chunks == 2048);
  CHECK(trs.get<Threshold>().threshold == 0.5);
  CHECK(trs.get<Sink>().chunks == 0);
  Union u{Threshold{0.5}, RecencyTail{64}, Sink{1}};
  auto set = u.select(ctx);
  CHECK(set.pages == std::vector<index_t>{0, 2, 3, 4});  // sink 0, threshold {0, 2}, tail chunks 236..299 → {3, 4}
  CHECK(!set.fallback);

  Published pub;
  CHECK(pub.get<DensestPages>().budget(1024) == 96);  // 256K tokens
  CHECK(pub.get<DensestPages>().budget(2048) == 192);
  CHECK(pub.get<DensestPages>().budget(4096) == 384);
  // Short history: the 2048-chunk tail covers everything.
  CHECK(pub.select(ctx).pages == std::vector<index_t>{0, 1, 2, 3, 4});
}

TEST_CASE("DensestPages keeps the kmax pages with most chunks above t, ties to the newer page", "[residency]") {
  for (unsigned seed = 0; seed < 10; ++seed) {
    index_t n = 64 * 200 + 17, per = 64;
    auto s = random_probabilities(n, 50 + seed, 0.03);
    SelectionContext ctx{.num_chunks = n, .chunks_per_page = per, .scores = s, .probabilities = true};
    DensestPages dp{.kmax = 12};
    auto set = dp.select(ctx);
    REQUIRE(valid(set, ctx));
    REQUIRE(set.pages.size() == 12);
    std::vector<int> density(static_cast<std::size_t>(page_count(ctx)));
    for (index_t c = 0; c < n; ++c) density[c / per] += s[c] > 0.5f;
    // Every kept page beats (or ties and is newer than) every dropped page.
    for (index_t kept : set.pages)
      for (index_t p = 0; p < page_count(ctx); ++p)
        if (!set.contains_page(p)) CHECK((density[kept] > density[p] || (density[kept] == density[p] && kept > p)));
    CHECK(dp.budget(page_count(ctx)) == 12);
    CHECK(DensestPages{}.select(ctx).pages.size() == static_cast<std::size_t>(std::ceil(page_count(ctx) * 3.0 / 32)));
  }
  std::vector<float> none(200, 0.2f);
  CHECK(DensestPages{.kmax = 3}.select({.num_chunks = 200, .chunks_per_page = 64, .scores = none, .probabilities = true}).pages.empty());
  std::vector<float> tie(256, 0.0f);
  tie[0] = tie[70] = tie[200] = 0.9f;  // pages 0, 1, 3 each have one chunk above
  CHECK(DensestPages{.kmax = 2}.select({.num_chunks = 256, .chunks_per_page = 64, .scores = tie, .probabilities = true}).pages ==
        std::vector<index_t>{1, 3});
}

TEST_CASE("TopFraction keeps a fixed budget of pages by summed score, any scores", "[residency]") {
  std::mt19937 rng(7);
  std::normal_distribution<float> n01;
  std::vector<float> s(1000);
  for (float& x : s) x = n01(rng);
  SelectionContext ctx{.num_chunks = 1000, .chunks_per_page = 10, .scores = s};
  auto set = TopFraction{0.25}.select(ctx);
  REQUIRE(set.pages.size() == 25);
  std::vector<double> sum(100);
  for (index_t c = 0; c < 1000; ++c) sum[c / 10] += s[c];
  double worst_kept = 1e9, best_dropped = -1e9;
  for (index_t p = 0; p < 100; ++p) {
    if (set.contains_page(p)) worst_kept = std::min(worst_kept, sum[p]);
    else best_dropped = std::max(best_dropped, sum[p]);
  }
  CHECK(worst_kept >= best_dropped);
  CHECK(TopFraction{0.0}.select(ctx).pages.empty());
  CHECK(TopFraction{1.0}.select(ctx).pages.size() == 100);
  // A count replaces the fraction: the best 7 pages, the first 7 of the best 25.
  auto seven = TopFraction{.fraction = 0.25, .count = 7}.select(ctx);
  REQUIRE(seven.pages.size() == 7);
  for (index_t p : seven.pages) CHECK(set.contains_page(p));
}

TEST_CASE("Fallback fires above the limit: full or a bounded wider budget, and says so", "[residency]") {
  index_t n = 64 * 40;
  using Inner = Union<DensestPages, RecencyTail>;
  Inner inner{DensestPages{.kmax = 4}, RecencyTail{64}};
  auto calm = random_probabilities(n, 3, 0.05), storm = random_probabilities(n, 4, 0.5);
  SelectionContext calm_ctx{.num_chunks = n, .chunks_per_page = 64, .scores = calm, .probabilities = true};
  SelectionContext storm_ctx{.num_chunks = n, .chunks_per_page = 64, .scores = storm, .probabilities = true};

  Fallback<Inner> full{.inner = inner, .limit = 0.2};
  CHECK(!full.fires(calm_ctx));
  CHECK(full.select(calm_ctx) == inner.select(calm_ctx));
  auto f = full.select(storm_ctx);
  CHECK(f.fallback);
  CHECK(f.pages.size() == 40);

  Fallback<Inner> widen{.inner = inner, .limit = 0.2, .mode = FallbackMode::widen, .widened_fraction = 0.5};
  auto w = widen.select(storm_ctx);
  CHECK(w.fallback);
  CHECK(w.pages == TopFraction{0.5}.select(storm_ctx).pages);
  CHECK(w.pages.size() == 20);  // bounded, unlike the storm's threshold set
  CHECK(Threshold{}.select(storm_ctx).pages.size() == 40);
  CHECK(Union<Fallback<Inner>, Sink>(full, Sink{1}).select(storm_ctx).fallback);
}
