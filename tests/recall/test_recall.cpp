// Recall plans keep resident pages in place, evict true LRU outside the protected set, refuse sets larger
// than the reserve; executing them under random churn never exposes a cell holding other bytes.
#include <flashmemory/layout/csa_entry.hpp>
#include <flashmemory/layout/index_key.hpp>
#include <flashmemory/recall/host_engine.hpp>
#include <flashmemory/store/chunk_store.hpp>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace flashmemory;
using recall::PageMove;

namespace {
residency::ResidentSet set_of(std::vector<index_t> pages) {
  std::sort(pages.begin(), pages.end());
  pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
  return {pages};
}

// Every row the table exposes, in every store, holds the mirror's record of that chunk; a mapped cell has
// as many written chunks as the mirror's page. Returns the number of rows checked.
template <class... Stores>
index_t check_reads(store::ChunkCellTable const& table, Stores const&... stores) {
  index_t rows = 0;
  auto one = [&](auto const& s) {
    index_t per = s.layout().chunks_per_page();
    for (index_t c = 0; c < s.mirror.num_chunks(); ++c) {
      index_t cell = table.cell_of(c / per);
      if (cell < 0) continue;
      REQUIRE(s.reserve.written(cell) == s.mirror.chunks_in_page(c / per));
      if (c % per >= s.reserve.written(cell)) continue;
      auto got = s.reserve.record(cell * per + c % per), want = s.mirror.record(c);
      REQUIRE(std::equal(got.begin(), got.end(), want.begin(), want.end()));
      ++rows;
    }
  };
  (..., one(stores));
  return rows;
}
}  // namespace

TEST_CASE("a plan keeps resident pages, fills free cells first, then evicts the least recently used", "[recall]") {
  store::ChunkCellTable table(4, 64);
  recall::CellLru lru(4);
  table.map(10, 0), table.map(11, 1), table.map(12, 2);  // cell 3 free
  lru.touch(2), lru.touch(0), lru.touch(1);               // LRU order: 2, 0, 1

  auto plan = recall::plan_recall(table, lru, set_of({11, 20}));
  CHECK(plan.kept == 1);
  CHECK(plan.evict.empty());
  CHECK(plan.fetch == std::vector<PageMove>{{20, 3}});

  plan = recall::plan_recall(table, lru, set_of({11, 20, 21}));
  CHECK(plan.fetch == std::vector<PageMove>{{20, 3}, {21, 2}});  // free cell 3, then LRU cell 2 (page 12)
  CHECK(plan.evict == std::vector<PageMove>{{12, 2}});

  // The new set is protected even when it holds the least recently used page.
  plan = recall::plan_recall(table, lru, set_of({12, 30, 31}));
  CHECK(plan.kept == 1);
  CHECK(plan.fetch == std::vector<PageMove>{{30, 3}, {31, 0}});
  CHECK(plan.evict == std::vector<PageMove>{{10, 0}});

  try {
    recall::plan_recall(table, lru, set_of({1, 2, 3, 4, 5}));
    FAIL("a set larger than the reserve was planned");
  } catch (error const& e) {
    CHECK(e.code() == errc::out_of_memory);
    CHECK(std::string(e.what()).find("5 pages but the reserve only 4 cells") != std::string::npos);
  }
}

TEST_CASE("plans under random sets match a brute-force LRU model", "[recall]") {
  std::mt19937 rng(17);
  constexpr index_t cells = 12, pages = 40;
  store::ChunkCellTable table(cells, 8);
  recall::CellLru lru(cells);
  std::map<index_t, std::uint64_t> used;  // page → last window it was selected in (model)
  for (std::uint64_t window = 1; window <= 3000; ++window) {
    std::vector<index_t> pick;
    std::uniform_int_distribution<index_t> size(0, cells), page(0, pages - 1);
    for (index_t n = size(rng); n > 0; --n) pick.push_back(page(rng));
    auto next = set_of(pick);
    store::ChunkCellTable before = table;
    auto plan = recall::plan_recall(table, lru, next);
    // Every page of the set that was resident stays in its cell; exactly the others are fetched.
    for (index_t p : next.pages)
      if (before.cell_of(p) >= 0) CHECK(std::none_of(plan.fetch.begin(), plan.fetch.end(), [&](PageMove m) { return m.page == p; }));
    CHECK(plan.kept + static_cast<index_t>(plan.fetch.size()) == static_cast<index_t>(next.pages.size()));
    // Evictions only when no free cell is left, only outside the set, and the oldest first.
    index_t free_before = cells - before.resident_pages();
    CHECK(plan.evict.size() == static_cast<std::size_t>(std::max<index_t>(0, static_cast<index_t>(plan.fetch.size()) - free_before)));
    for (PageMove e : plan.evict) {
      CHECK(!next.contains_page(e.page));
      for (index_t c = 0; c < cells; ++c) {
        index_t other = before.page_of(c);
        bool evicted = std::any_of(plan.evict.begin(), plan.evict.end(), [&](PageMove m) { return m.cell == c; });
        if (other >= 0 && !evicted && !next.contains_page(other)) CHECK(used[e.page] <= used[other]);
      }
    }
    for (PageMove e : plan.evict) table.unmap(e.cell);
    for (PageMove f : plan.fetch) table.map(f.page, f.cell);
    for (index_t p : next.pages) {
      REQUIRE(table.cell_of(p) >= 0);
      used[p] = window;
    }
    lru.touch(table, next);
  }
}

TEST_CASE("random churn: appends, recalls in three phases; no read ever sees another chunk's bytes", "[recall]") {
  std::mt19937 rng(23);
  layout::CsaEntryPacked entry(64, 16, 8);
  layout::IndexKeyFp8 key(32, 8);
  constexpr index_t cells = 9, layers = 2;
  std::vector<store::ChunkStore<layout::CsaEntryPacked>> entries;
  std::vector<store::ChunkStore<layout::IndexKeyFp8>> keys;
  for (index_t l = 0; l < layers; ++l) entries.emplace_back(entry, cells), keys.emplace_back(key, cells);
  store::ChunkCellTable table(cells, 8);
  recall::CellLru lru(cells);
  recall::RecallStats stats;
  std::normal_distribution<float> n01;
  std::vector<float> e(64), k(32);
  index_t rows_checked = 0;
  for (int window = 0; window < 2000; ++window) {
    // Appends: every layer writes the chunk (entry and key), resident pages are written through.
    for (int n = std::uniform_int_distribution<int>(0, 12)(rng); n > 0; --n)
      for (index_t l = 0; l < layers; ++l) {
        for (float& x : e) x = n01(rng);
        for (float& x : k) x = n01(rng);
        entries[l].append(e, table);
        keys[l].append(k, table);
      }
    index_t pages = entries[0].mirror.num_pages();
    if (pages == 0) continue;
    std::vector<index_t> pick;
    for (index_t n = std::uniform_int_distribution<index_t>(0, cells)(rng); n > 0; --n)
      pick.push_back(std::uniform_int_distribution<index_t>(0, pages - 1)(rng));
    auto next = set_of(pick);
    auto plan = recall::plan_recall(table, lru, next);
    recall::retire(plan, table, entries, keys);
    rows_checked += check_reads(table, entries[0], entries[1], keys[0], keys[1]);
    std::size_t bytes = recall::copy_pages(plan, entries, keys);
    CHECK(bytes == plan.fetch.size() * layers * static_cast<std::size_t>(layout::page_bytes(entry) + layout::page_bytes(key)));
    for (PageMove f : plan.fetch) {  // every recalled cell is byte-identical to its mirror page
      for (auto& s : entries) REQUIRE(std::ranges::equal(s.reserve.cell(f.cell), s.mirror.page(f.page)));
      for (auto& s : keys) REQUIRE(std::ranges::equal(s.reserve.cell(f.cell), s.mirror.page(f.page)));
    }
    rows_checked += check_reads(table, entries[0], entries[1], keys[0], keys[1]);
    recall::publish(plan, table);
    lru.touch(table, next);
    for (index_t p : next.pages) REQUIRE(table.cell_of(p) >= 0);
    rows_checked += check_reads(table, entries[0], entries[1], keys[0], keys[1]);
    stats += {.recalls = 1, .pages_fetched = static_cast<index_t>(plan.fetch.size()), .bytes_moved = bytes};
  }
  CHECK(rows_checked > 100'000);  // the churn did read through the table
  CHECK(stats.pages_fetched > 1000);
  CHECK(entries[1].mirror.num_chunks() == keys[0].mirror.num_chunks());
}

TEST_CASE("execute_recall runs the phases and reports what moved", "[recall]") {
  layout::IndexKeyFp8 key(16, 4);
  std::vector<store::ChunkStore<layout::IndexKeyFp8>> keys;
  keys.emplace_back(key, 2);
  store::ChunkCellTable table(2, 4);
  recall::CellLru lru(2);
  std::vector<float> k(16, 0.25f);
  for (int i = 0; i < 10; ++i) k[i] = float(i), keys[0].append(k, table);
  auto plan = recall::plan_recall(table, lru, set_of({0, 2}));
  auto stats = recall::execute_recall(plan, table, keys);
  CHECK(stats.pages_fetched == 2);
  CHECK(stats.bytes_moved == 2 * 4 * 20);
  CHECK(keys[0].reserve.written(table.cell_of(2)) == 2);  // page 2 holds chunks 8 and 9 only
  lru.touch(table, set_of({0, 2}));
  plan = recall::plan_recall(table, lru, set_of({1, 2}));
  stats = recall::execute_recall(plan, table, keys);
  CHECK(stats.pages_evicted == 1);
  CHECK(stats.pages_kept == 1);
  CHECK(table.cell_of(0) == -1);
  CHECK(check_reads(table, keys[0]) == 6);
}
