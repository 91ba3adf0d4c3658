// The chunk store: the mirror keeps every chunk (also past a host-RAM cap), the reserve's cells hold exactly
// what was written into them, and the bytes each part reports are the bytes it allocated.
#include <flashmemory/layout/csa_entry.hpp>
#include <flashmemory/layout/f32_records.hpp>
#include <flashmemory/layout/index_key.hpp>
#include <flashmemory/store/chunk_store.hpp>

#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

using namespace flashmemory;

namespace {
// Host memory that counts what is live, and can be told to refuse after a number of allocations.
struct Ledger {
  std::size_t live = 0;
  int allocations_left = 1 << 30;
};
struct CountingAllocator {
  static constexpr std::string_view kName = "counted host";
  static constexpr bool kHostAccessible = true;
  Ledger* ledger;
  std::byte* allocate(std::size_t n) noexcept {
    if (ledger->allocations_left-- <= 0) return nullptr;
    ledger->live += n;
    return store::HostAllocator{}.allocate(n);
  }
  void deallocate(std::byte* p, std::size_t n) noexcept {
    ledger->live -= n;
    store::HostAllocator{}.deallocate(p, n);
  }
};
static_assert(store::byte_allocator<CountingAllocator>);

struct DeviceOnly {  // stands in for device memory: the host may not touch it
  static constexpr std::string_view kName = "device";
  static constexpr bool kHostAccessible = false;
  std::byte* allocate(std::size_t n) noexcept { return store::HostAllocator{}.allocate(n); }
  void deallocate(std::byte* p, std::size_t n) noexcept { store::HostAllocator{}.deallocate(p, n); }
};
static_assert(store::byte_allocator<DeviceOnly>);
template <class Reserve>
concept host_access = requires(Reserve& r) { r.cell(0); };
static_assert(!host_access<store::DeviceReserve<layout::F32Records, DeviceOnly>>);
static_assert(host_access<store::DeviceReserve<layout::F32Records>>);

std::vector<float> random_chunk(index_t channels, std::mt19937& rng) {
  std::normal_distribution<float> n01;
  std::vector<float> v(static_cast<std::size_t>(channels));
  for (float& x : v) x = n01(rng) * 3;
  return v;
}
template <class Layout>
std::vector<std::byte> encoded(Layout const& l, std::vector<float> const& v) {
  std::vector<std::byte> rec(static_cast<std::size_t>(l.record_bytes()));
  l.encode(v, rec);
  return rec;
}
bool same(std::span<std::byte const> a, std::span<std::byte const> b) { return std::ranges::equal(a, b); }
}  // namespace

TEMPLATE_TEST_CASE("the host mirror holds every appended chunk, page by page", "[store]", layout::F32Records,
                   layout::CsaEntryPacked, layout::IndexKeyFp8) {
  using L = TestType;
  L l = [] {
    if constexpr (std::is_same_v<L, layout::F32Records>) return L(24, 8);
    else if constexpr (std::is_same_v<L, layout::CsaEntryPacked>) return L(64, 16, 8);
    else return L(32, 8);
  }();
  Ledger ledger;
  std::mt19937 rng(11);
  std::vector<std::vector<std::byte>> written;
  {
    store::HostMirror<L, CountingAllocator> mirror(l, store::kUnlimited, CountingAllocator{&ledger});
    for (int i = 0; i < 203; ++i) {
      auto v = random_chunk(l.channels(), rng);
      written.push_back(encoded(l, v));
      if (i % 3 == 0) CHECK(mirror.append(v) == i);
      else CHECK(mirror.append_record(written.back()) == i);
      CHECK(mirror.allocated_bytes() == ledger.live);
    }
    CHECK(mirror.num_chunks() == 203);
    CHECK(mirror.num_pages() == 26);  // ⌈203 / 8⌉
    CHECK(ledger.live == 26 * static_cast<std::size_t>(layout::page_bytes(l)));
    for (index_t c = 0; c < 203; ++c) CHECK(same(mirror.record(c), written[c]));
    CHECK(mirror.chunks_in_page(25) == 3);
    CHECK(mirror.chunks_in_page(24) == 8);
    // A page is its records back to back; the unwritten tail of the last page is zeros.
    auto last = mirror.page(25);
    CHECK(same(last.subspan(0, l.record_bytes()), written[200]));
    CHECK(std::all_of(last.begin() + 3 * l.record_bytes(), last.end(), [](std::byte b) { return b == std::byte{0}; }));
    CHECK_THROWS_AS(mirror.record(203), error);
    CHECK_THROWS_AS(mirror.append(std::vector<float>(3)), error);
    // Moving hands the pages over without copying or freeing them.
    auto moved = std::move(mirror);
    CHECK(moved.num_chunks() == 203);
    CHECK(ledger.live == 26 * static_cast<std::size_t>(layout::page_bytes(l)));
  }
  CHECK(ledger.live == 0);
}

TEST_CASE("the host-RAM cap fails before anything is lost, naming the cap; the mirror stays usable", "[store]") {
  layout::CsaEntryPacked l(64, 16, 4);  // 88 B records, 352 B pages
  std::size_t cap = 3 * 352 + 100;      // three pages fit, a fourth does not
  store::HostMirror<layout::CsaEntryPacked> mirror(l, cap);
  std::mt19937 rng(5);
  std::vector<std::vector<std::byte>> written;
  for (int i = 0; i < 12; ++i) {
    auto v = random_chunk(64, rng);
    written.push_back(encoded(l, v));
    mirror.append(v);
  }
  auto extra = random_chunk(64, rng);
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      mirror.append(extra);
      FAIL("the cap did not stop the append");
    } catch (error const& e) {
      CHECK(e.code() == errc::out_of_memory);
      std::string msg = e.what();
      CHECK(msg.find("host-RAM cap of " + std::to_string(cap) + " B") != std::string::npos);
      CHECK(msg.find("chunk 12") != std::string::npos);
    }
    CHECK(mirror.num_chunks() == 12);
    CHECK(mirror.allocated_bytes() == 3 * 352);
    for (index_t c = 0; c < 12; ++c) CHECK(same(mirror.record(c), written[c]));
  }
  CHECK_THROWS_AS(mirror.set_max_bytes(100), error);  // below what it holds
  mirror.set_max_bytes(4 * 352);
  CHECK(mirror.append(extra) == 12);
  CHECK(same(mirror.record(12), encoded(l, extra)));

  // The allocator itself refusing is the same error, with the same guarantee.
  Ledger ledger{.allocations_left = 2};
  store::HostMirror<layout::F32Records, CountingAllocator> small(layout::F32Records(4, 2), store::kUnlimited, CountingAllocator{&ledger});
  for (int i = 0; i < 4; ++i) small.append(random_chunk(4, rng));
  CHECK_THROWS_AS(small.append(random_chunk(4, rng)), error);
  CHECK(small.num_chunks() == 4);
  CHECK(small.allocated_bytes() == ledger.live);
}

TEST_CASE("chunk→cell table: both directions, and misuse is refused", "[store]") {
  store::ChunkCellTable t(4, 64);
  CHECK(t.cell_of(0) == -1);
  CHECK(t.cell_of(1'000'000) == -1);
  t.map(7, 2);
  t.map(0, 0);
  CHECK(t.cell_of(7) == 2);
  CHECK(t.page_of(2) == 7);
  CHECK(t.resident_pages() == 2);
  CHECK_THROWS_AS(t.map(7, 1), error);  // already resident
  CHECK_THROWS_AS(t.map(3, 2), error);  // cell taken
  CHECK_THROWS_AS(t.map(3, 4), error);  // no such cell
  t.unmap(2);
  CHECK(t.cell_of(7) == -1);
  CHECK(t.is_free(2));
  CHECK_THROWS_AS(t.unmap(2), error);
  CHECK(t.page_to_cell().size() == 8);
}

TEST_CASE("device reserve: sizing, fills, write-through, gather of written rows only", "[store]") {
  layout::IndexKeyFp8 l(32, 8);  // 36 B records, 288 B pages
  CHECK(store::cells_for_budget(10'000, 288) == 34);
  CHECK(store::cells_for_fraction(0.094, 64 * 1000, 64) == 94);
  CHECK(store::cells_for_fraction(0.1, 0, 64) == 0);
  CHECK_THROWS_AS(store::cells_for_fraction(1.5, 10, 64), error);

  Ledger ledger;
  {
    store::DeviceReserve<layout::IndexKeyFp8, CountingAllocator> r(l, 5, CountingAllocator{&ledger});
    CHECK(r.bytes() == 5 * 288);
    CHECK(ledger.live == r.bytes());
    store::HostMirror<layout::IndexKeyFp8> mirror(l);
    std::mt19937 rng(3);
    std::vector<std::vector<float>> chunks;
    for (int i = 0; i < 13; ++i) mirror.append(chunks.emplace_back(random_chunk(32, rng)));
    r.fill(3, mirror.page(1), mirror.chunks_in_page(1));  // chunks 8..12
    CHECK(r.written(3) == 5);
    CHECK(same(r.cell(3), mirror.page(1)));
    auto v = random_chunk(32, rng);
    mirror.append(v);
    r.write(3, 5, mirror.record(13));
    CHECK(r.written(3) == 6);
    CHECK_THROWS_AS(r.write(3, 7, mirror.record(13)), error);  // slots fill in order
    std::vector<std::int32_t> rows{3 * 8 + 5, 3 * 8 + 0};
    std::vector<float> out(2 * 32);
    r.gather(rows, matrix_view<float>(out.data(), 2, 32));
    std::vector<float> expect(32);
    mirror.decode(13, expect);
    CHECK(std::equal(expect.begin(), expect.end(), out.begin()));
    mirror.decode(8, expect);
    CHECK(std::equal(expect.begin(), expect.end(), out.begin() + 32));
    std::vector<std::int32_t> unwritten{3 * 8 + 6};
    CHECK_THROWS_AS(r.gather(unwritten, matrix_view<float>(out.data(), 1, 32)), error);
    r.clear(3);
    CHECK_THROWS_AS(r.gather(rows, matrix_view<float>(out.data(), 2, 32)), error);
  }
  CHECK(ledger.live == 0);
  Ledger refuse{.allocations_left = 0};
  try {
    store::DeviceReserve<layout::IndexKeyFp8, CountingAllocator> r(l, 5, CountingAllocator{&refuse});
    FAIL("allocation did not fail");
  } catch (error const& e) {
    CHECK(e.code() == errc::out_of_memory);
    CHECK(std::string(e.what()).find("1440 B") != std::string::npos);
  }
}

TEST_CASE("chunk store appends to the mirror and writes resident pages through", "[store]") {
  layout::F32Records l(6, 4);
  store::ChunkStore<layout::F32Records> s(l, 2);
  store::ChunkCellTable table(2, 4);
  std::mt19937 rng(9);
  for (int i = 0; i < 5; ++i) s.append(random_chunk(6, rng), table);  // nothing resident yet
  CHECK(s.reserve.written(0) == 0);
  table.map(1, 0);
  s.reserve.fill(0, s.mirror.page(1), s.mirror.chunks_in_page(1));
  for (int i = 0; i < 3; ++i) s.append(random_chunk(6, rng), table);  // chunks 5, 6, 7 of page 1
  CHECK(s.reserve.written(0) == 4);
  CHECK(same(s.reserve.cell(0), s.mirror.page(1)));
  s.append(random_chunk(6, rng), table);  // page 2: not resident, mirror only
  CHECK(s.mirror.num_chunks() == 9);
  CHECK(s.reserve.written(1) == 0);
}
