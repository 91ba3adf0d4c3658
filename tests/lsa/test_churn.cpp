// Random churn through the whole controller: thousands of windows with random appends, random native scores
// and random policies. Every read the controller hands out is the chunk it names, byte for byte; the mirrors
// hold everything written; the footprint it reports is what its allocator holds.
#include <flashmemory/indexer/oracle.hpp>
#include <flashmemory/indexer/random.hpp>
#include <flashmemory/layout/csa_entry.hpp>
#include <flashmemory/layout/index_key.hpp>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/residency/fallback.hpp>
#include <flashmemory/residency/published.hpp>
#include <flashmemory/residency/top_fraction.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <random>
#include <vector>

using namespace flashmemory;

namespace {
struct Ledger {
  std::size_t live = 0;
};
struct CountingAllocator {
  static constexpr std::string_view kName = "counted host";
  static constexpr bool kHostAccessible = true;
  Ledger* ledger;
  std::byte* allocate(std::size_t n) noexcept {
    ledger->live += n;
    return store::HostAllocator{}.allocate(n);
  }
  void deallocate(std::byte* p, std::size_t n) noexcept {
    ledger->live -= n;
    store::HostAllocator{}.deallocate(p, n);
  }
};

template <class Layout>
std::vector<std::byte> encoded(Layout const& l, std::vector<float> const& v) {
  std::vector<std::byte> rec(static_cast<std::size_t>(l.record_bytes()));
  l.encode(v, rec);
  return rec;
}

struct ChurnResult {
  index_t windows = 0, reads = 0, fallbacks = 0, fetched = 0;
};

// `dense_every`: every that many windows the oracle's labels cover half the history (a needle-style storm).
template <class Scorer, class Policy>
ChurnResult churn(Scorer scorer, Policy policy, index_t reserve_cells, unsigned seed, index_t steps, int dense_every = 0) {
  constexpr index_t L = 2, per = 8;
  layout::CsaEntryPacked entry(32, 8, per);
  layout::IndexKeyFp8 key(16, per);
  Ledger ledger;
  ChurnResult result;
  {
    lsa::Lookahead<Scorer, Policy, 4, layout::CsaEntryPacked, layout::IndexKeyFp8, CountingAllocator> lsa(
        std::move(scorer), std::move(policy), entry, key, {.csa_layers = L, .reserve_cells = reserve_cells}, CountingAllocator{&ledger});
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01;
    auto vec = [&](index_t n) {
      std::vector<float> v(static_cast<std::size_t>(n));
      for (float& x : v) x = n01(rng) * 2;
      return v;
    };
    std::vector<std::vector<std::vector<std::byte>>> entries_written(L), keys_written(L);
    for (index_t step = 0; step < steps; ++step) {
      index_t tokens = std::uniform_int_distribution<index_t>(1, 6)(rng);
      index_t emitted = std::uniform_int_distribution<index_t>(0, 3)(rng);
      bool due = lsa.boundary_due(tokens);
      for (index_t l = 0; l < L; ++l) {
        for (index_t e = 0; e < emitted; ++e) {
          auto ev = vec(32), kv = vec(16);
          lsa.append(l, ev, kv);
          entries_written[l].push_back(encoded(entry, ev));
          keys_written[l].push_back(encoded(key, kv));
        }
        // Level 2 with random native scores (with ties).
        index_t n = static_cast<index_t>(entries_written[l].size());
        std::vector<float> scores(static_cast<std::size_t>(n));
        for (float& s : scores) s = std::round(n01(rng) * 3) / 3;
        index_t k = std::uniform_int_distribution<index_t>(1, 40)(rng);
        std::vector<std::uint8_t> allowed(static_cast<std::size_t>(n));
        auto const& es = lsa.entries(l);
        auto const& ks = lsa.keys(l);
        for (index_t c = 0; c < n; ++c) {
          index_t cell = lsa.table().cell_of(c / per);
          allowed[c] = cell >= 0 && c % per < es.reserve.written(cell) && c % per < ks.reserve.written(cell);
        }
        auto sel = lsa.select(l, scores, k);
        REQUIRE(sel.chunks == indexer::top_k(scores, k, allowed));
        std::vector<float> gathered(sel.rows.size() * 32), decoded(32);
        lsa.gather(l, sel.rows, matrix_view<float>(gathered.data(), static_cast<index_t>(sel.rows.size()), 32));
        for (std::size_t i = 0; i < sel.chunks.size(); ++i) {
          index_t c = sel.chunks[i], row = sel.rows[i];
          REQUIRE(row / per == lsa.table().cell_of(c / per));
          REQUIRE(std::ranges::equal(es.reserve.record(row), entries_written[l][c]));
          REQUIRE(std::ranges::equal(ks.reserve.record(row), keys_written[l][c]));
          entry.decode(entries_written[l][c], decoded);
          REQUIRE(std::equal(decoded.begin(), decoded.end(), gathered.begin() + static_cast<std::ptrdiff_t>(i * 32)));
          ++result.reads;
        }
      }
      if (due) {
        index_t n = static_cast<index_t>(entries_written[0].size());
        bool dense = dense_every > 0 && result.windows % dense_every == dense_every - 1;
        std::vector<float> future(static_cast<std::size_t>(n));
        for (float& f : future) f = std::bernoulli_distribution(dense ? 0.5 : 0.01)(rng);
        lsa.offer_future(future);
      }
      lsa.end_step(tokens);
      if (!due) continue;
      ++result.windows;
      // After the boundary: the selected set is resident and every mapped cell agrees with its mirror page.
      auto const& table = lsa.table();
      for (index_t p : lsa.resident_set().pages) REQUIRE(table.cell_of(p) >= 0);
      for (index_t cell = 0; cell < table.cells(); ++cell) {
        index_t p = table.page_of(cell);
        if (p < 0) continue;
        for (index_t l = 0; l < L; ++l) {
          auto check = [&](auto const& s) {
            index_t w = s.reserve.written(cell);
            REQUIRE(w == s.mirror.chunks_in_page(p));
            std::size_t bytes = static_cast<std::size_t>(w * s.layout().record_bytes());
            REQUIRE(std::ranges::equal(s.reserve.cell(cell).first(bytes), s.mirror.page(p).first(bytes)));
          };
          check(lsa.entries(l));
          check(lsa.keys(l));
        }
      }
      auto f = lsa.footprint().total();
      REQUIRE(ledger.live == f.reserve_bytes + f.mirror_bytes);
      REQUIRE(f.resident_bytes == static_cast<std::size_t>(table.resident_pages()) * L * (layout::page_bytes(entry) + layout::page_bytes(key)));
    }
    // The mirrors hold every chunk ever written.
    for (index_t l = 0; l < L; ++l)
      for (std::size_t c = 0; c < entries_written[l].size(); ++c) {
        REQUIRE(std::ranges::equal(lsa.entries(l).mirror.record(static_cast<index_t>(c)), entries_written[l][c]));
        REQUIRE(std::ranges::equal(lsa.keys(l).mirror.record(static_cast<index_t>(c)), keys_written[l][c]));
      }
    result.fallbacks = lsa.stats().fallbacks;
    result.fetched = lsa.stats().recall.pages_fetched;
    CHECK(lsa.stats().windows == result.windows);
  }
  CHECK(ledger.live == 0);
  return result;
}
}  // namespace

TEST_CASE("churn: random scorer, fixed budget", "[lsa][churn]") {
  auto r = churn(indexer::Random(7), residency::TopFraction{0.1}, 64, 101, 3000);
  CHECK(r.windows > 2000);
  CHECK(r.reads > 50'000);
  CHECK(r.fetched > 1000);
}

TEST_CASE("churn: oracle, densest pages ∪ tail ∪ sink", "[lsa][churn]") {
  residency::Published policy{residency::DensestPages{.kmax = 6}, residency::RecencyTail{16}, residency::Sink{8}};
  auto r = churn(indexer::Oracle{}, policy, 12, 202, 3000);
  CHECK(r.windows > 2000);
  CHECK(r.reads > 20'000);
  CHECK(r.fetched > 1000);
}

TEST_CASE("churn: oracle, threshold ∪ tail with a widening fallback", "[lsa][churn]") {
  residency::Fallback<residency::ThresholdRecencySink> policy{
      .inner = residency::ThresholdRecencySink{residency::Threshold{0.5}, residency::RecencyTail{16}, residency::Sink{0}},
      .limit = 0.2, .mode = residency::FallbackMode::widen, .widened_fraction = 0.2};
  auto r = churn(indexer::Oracle{}, policy, 150, 303, 3000, 7);
  CHECK(r.windows > 2000);
  CHECK(r.fallbacks > 200);
  CHECK(r.fetched > 1000);
}
