// The device Lookahead and its recall engine: every readable reserve row holds its own chunk's bytes (as in
// the mirror) under random churn, pages evicted while written and fetched back equal their mirror pages
// (an append during the fetch included), statistics equal the bytes allocated and moved, and with
// everything resident Level 2 selects exactly the native GPU top-k.
#include "../gpu/gpu_test.cuh"

#include <flashmemory/core/cuda/stream.cuh>
#include <flashmemory/lsa/cuda/lookahead.cuh>

#include <catch2/catch_test_macros.hpp>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

using namespace flashmemory;
using flashmemory::cuda::DeviceBuffer;

namespace {

// A random set of pages (at most `budget`), a fresh one each window: maximal churn.
struct RandomPages {
  index_t budget = 0;
  std::uint32_t seed = 1;
  residency::ResidentSet select(residency::SelectionContext const& ctx) const {
    std::mt19937 rng(seed + static_cast<std::uint32_t>(ctx.num_chunks));
    std::vector<index_t> all(static_cast<std::size_t>(residency::page_count(ctx)));
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<index_t>(i);
    std::shuffle(all.begin(), all.end(), rng);
    std::uniform_int_distribution<index_t> count(0, std::min<index_t>(budget, static_cast<index_t>(all.size())));
    residency::ResidentSet s;
    s.pages.assign(all.begin(), all.begin() + count(rng));
    std::sort(s.pages.begin(), s.pages.end());
    return s;
  }
};
// Exactly the pages the test names (it changes them between windows).
struct ChosenPages {
  std::vector<index_t> const* pages = nullptr;
  residency::ResidentSet select(residency::SelectionContext const&) const {
    residency::ResidentSet s;
    s.pages = *pages;
    return s;
  }
};
struct AllPages {
  residency::ResidentSet select(residency::SelectionContext const& ctx) const {
    residency::ResidentSet s;
    for (index_t p = 0; p < residency::page_count(ctx); ++p) s.pages.push_back(p);
    return s;
  }
};

std::vector<std::byte> random_record(std::size_t bytes, std::mt19937& rng) {
  std::uniform_int_distribution<int> b(1, 255);
  std::vector<std::byte> r(bytes);
  for (auto& x : r) x = static_cast<std::byte>(b(rng));
  return r;
}
// An fp8 index key record with a positive finite scale (scores must be finite).
std::vector<std::byte> random_key(std::mt19937& rng) {
  layout::IndexKeyFp8 l;
  std::vector<float> v = test::normal(static_cast<std::size_t>(l.channels()), rng);
  std::vector<std::byte> r(static_cast<std::size_t>(l.record_bytes()));
  l.encode(v, r);
  return r;
}

template <class L>
void append_random(L& lsa, index_t layers, std::mt19937& rng) {
  for (index_t l = 0; l < layers; ++l) {
    auto e = random_record(static_cast<std::size_t>(layout::CsaEntryPacked{}.record_bytes()), rng);
    auto k = random_key(rng);
    lsa.append(l, e, k);
  }
}

// Every row the device lists as readable holds, in both reserves of the layer, the mirror's record of the
// chunk that the table maps there.
template <class L>
void check_readable_rows(L const& lsa, cudaStream_t stream) {
  FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(stream));
  auto const& table = lsa.engine().table();
  index_t const per = table.chunks_per_page(), R = lsa.engine().rows_per_layer();
  for (index_t l = 0; l < lsa.options().csa_layers; ++l) {
    std::vector<std::int32_t> rows(static_cast<std::size_t>(R));
    FLASHMEMORY_CUDA_CHECK(cudaMemcpy(rows.data(), lsa.engine().rows(l).data_handle(), rows.size() * 4, cudaMemcpyDeviceToHost));
    auto check_store = [&](auto const& s) {
      std::vector<std::byte> reserve(s.reserve.bytes());
      FLASHMEMORY_CUDA_CHECK(cudaMemcpy(reserve.data(), s.reserve.data(), reserve.size(), cudaMemcpyDeviceToHost));
      auto const rec = static_cast<std::size_t>(s.layout().record_bytes());
      for (index_t r = 0; r < R; ++r) {
        if (rows[static_cast<std::size_t>(r)] < 0) continue;
        REQUIRE(rows[static_cast<std::size_t>(r)] == r);
        index_t const cell = r / per, page = table.page_of(cell), chunk = page * per + r % per;
        REQUIRE(page >= 0);
        REQUIRE(!lsa.engine().pending(cell));
        REQUIRE(chunk < s.mirror.num_chunks());
        REQUIRE(std::memcmp(reserve.data() + static_cast<std::size_t>(r) * rec, s.mirror.record(chunk).data(), rec) == 0);
      }
    };
    check_store(lsa.entries(l));
    check_store(lsa.keys(l));
  }
}

}  // namespace

TEST_CASE("device Lookahead: random churn never exposes another chunk's bytes; stats equal bytes moved", "[gpu][lsa]") {
  constexpr index_t kLayers = 3, kTau = 16, kCells = 12, kMaxChunks = 64 * 40;
  flashmemory::cuda::Stream decode, copy;
  std::mt19937 rng(2024);
  lsa::cuda::Lookahead<RandomPages> lsa(RandomPages{kCells - 1, 7},
                                        {.csa_layers = kLayers, .target_layers = {0, 2}, .reserve_cells = kCells,
                                         .max_chunks = kMaxChunks, .tau = kTau},
                                        decode, copy);
  std::vector<float> q = test::normal(2 * 64 * 128, rng), w = test::normal(2 * 64, rng);
  auto dq = test::upload(q), dw = test::upload(w);
  index_t windows_checked = 0;
  for (index_t step = 0; step < 300 * kTau && lsa.num_chunks() + 1 < kMaxChunks; ++step) {
    if (step % 4 == 0) append_random(lsa, kLayers, rng);
    bool const boundary = lsa.boundary_due(1);
    lsa.end_step(1, view<float const, 3>(dq.data(), 2, 64, 128), matrix_view<float const>(dw.data(), 2, 64));
    if (boundary && windows_checked++ % 3 == 0) check_readable_rows(lsa, decode);  // copies may still be in flight
  }
  check_readable_rows(lsa, decode);
  auto const st = lsa.stats();
  CHECK(st.windows >= 250);
  CHECK(st.recall.recall.pages_fetched > 100);
  std::size_t const cell_bytes = kLayers * static_cast<std::size_t>(37'376 + 8'448);
  CHECK(st.recall.recall.bytes_moved == static_cast<std::size_t>(st.recall.recall.pages_fetched) * cell_bytes);
  CHECK(st.recall.copy_ms > 0);
  auto const fp = lsa.footprint();
  CHECK(fp.entries.reserve_bytes == kLayers * kCells * std::size_t{37'376});
  CHECK(fp.keys.reserve_bytes == kLayers * kCells * std::size_t{8'448} + 2 * kMaxChunks * std::size_t{132});
}

TEST_CASE("device Lookahead: recalled cells equal their mirror pages byte for byte", "[gpu][lsa]") {
  constexpr index_t kLayers = 2, kCells = 20, kPages = 32;
  flashmemory::cuda::Stream decode, copy;
  std::mt19937 rng(77);
  // The reserve holds 20 of the 32 pages: while the history is written the oldest pages leave (pages 12–31
  // stay). Then set A = pages 0–19 fetches the 12 oldest back, and set B = pages 12–31 fetches the 12 newest
  // back while a chunk is appended to the last of them (caught up at publish).
  std::vector<index_t> chosen;
  lsa::cuda::Lookahead<ChosenPages> lsa(ChosenPages{&chosen}, {.csa_layers = kLayers, .target_layers = {1}, .reserve_cells = kCells,
                                                              .max_chunks = kPages * 64, .tau = 64},
                                        decode, copy);
  for (index_t c = 0; c < kPages * 64 - 5; ++c) append_random(lsa, kLayers, rng);
  REQUIRE(lsa.engine().table().cell_of(0) < 0);  // the oldest page left while the history was written
  std::vector<float> q = test::normal(64 * 128, rng), w = test::normal(64, rng);
  auto dq = test::upload(q), dw = test::upload(w);
  view<float const, 3> qv(dq.data(), 1, 64, 128);
  matrix_view<float const> wv(dw.data(), 1, 64);
  // Every page of the published set sits in a cell whose written records equal its mirror page.
  auto check_pages = [&](index_t first, index_t last) {
    FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(decode));
    auto const& table = lsa.engine().table();
    for (index_t l = 0; l < kLayers; ++l) {
      auto check_store = [&](auto const& s) {
        std::vector<std::byte> reserve(s.reserve.bytes());
        FLASHMEMORY_CUDA_CHECK(cudaMemcpy(reserve.data(), s.reserve.data(), reserve.size(), cudaMemcpyDeviceToHost));
        for (index_t p = first; p <= last; ++p) {
          INFO("layer " << l << ", page " << p);
          index_t const cell = table.cell_of(p), n = s.mirror.chunks_in_page(p);
          REQUIRE(cell >= 0);
          REQUIRE(!lsa.engine().pending(cell));
          CHECK(s.reserve.written(cell) == n);
          CHECK(std::memcmp(reserve.data() + static_cast<std::size_t>(cell) * s.reserve.page_bytes(), s.mirror.page(p).data(),
                            static_cast<std::size_t>(n) * static_cast<std::size_t>(s.layout().record_bytes())) == 0);
        }
      };
      check_store(lsa.entries(l));
      check_store(lsa.keys(l));
    }
    check_readable_rows(lsa, decode);
  };
  auto pages = [](index_t first, index_t last) {
    std::vector<index_t> v;
    for (index_t p = first; p <= last; ++p) v.push_back(p);
    return v;
  };

  chosen = pages(0, 19);
  lsa.refresh(qv, wv);  // begin: pages 0–11 fetched into the cells of pages 20–31
  lsa.refresh(qv, wv);  // publish
  check_pages(0, 19);
  CHECK(lsa.stats().recall.recall.pages_fetched == 12);

  chosen = pages(12, 31);
  lsa.refresh(qv, wv);               // begin: pages 20–31 fetched into the cells of pages 0–11
  append_random(lsa, kLayers, rng);  // lands in page 31 while it is being fetched
  lsa.refresh(qv, wv);               // publish, the appended chunk caught up
  check_pages(12, 31);
  auto const st = lsa.stats().recall;
  CHECK(st.recall.pages_fetched == 24);
  CHECK(st.recall.bytes_moved == 24 * kLayers * std::size_t{37'376 + 8'448});
  CHECK(st.caught_up == 2 * kLayers);  // one entry and one key record per layer
}

TEST_CASE("device Lookahead with everything resident selects exactly the native GPU top-k", "[gpu][lsa]") {
  constexpr index_t kLayers = 2, kChunks = 64 * 20 + 17, kTopK = 512;
  flashmemory::cuda::Stream decode, copy;
  std::mt19937 rng(5);
  lsa::cuda::Lookahead<AllPages> lsa(AllPages{}, {.csa_layers = kLayers, .target_layers = {0}, .reserve_cells = 21,
                                                  .max_chunks = kChunks, .tau = 64},
                                     decode, copy);
  std::vector<std::vector<std::byte>> keys;
  for (index_t c = 0; c < kChunks; ++c)
    for (index_t l = 0; l < kLayers; ++l) {
      auto e = random_record(584, rng);
      auto k = random_key(rng);
      if (l == 1) keys.push_back(k);
      lsa.append(l, e, k);
    }
  std::vector<float> q = test::normal(64 * 128, rng), w = test::normal(64, rng);
  auto dq = test::upload(q), dw = test::upload(w);
  DeviceBuffer<std::int32_t> rows(kTopK);
  rows.fill_bytes(0x7f, decode);
  Status st = lsa.select(1, matrix_view<float const>(dq.data(), 64, 128), vector_view<float const>(dw.data(), 64),
                         vector_view<std::int32_t>(rows.data(), kTopK));
  REQUIRE(st.ok());

  // Native: the same kernels over the full key array in chunk order.
  std::vector<std::byte> flat;
  for (auto const& k : keys) flat.insert(flat.end(), k.begin(), k.end());
  auto dkeys = test::upload(flat);
  DeviceBuffer<float> scores(kChunks);
  DeviceBuffer<std::int32_t> native(kTopK);
  matrix_view<std::byte const> pool(dkeys.data(), kChunks, 132);
  indexer::cuda::IndexScores<indexer::cuda::Fp8Keys> scorer;
  REQUIRE(scorer.run({.q = view<float const, 3>(dq.data(), 1, 64, 128), .weights = matrix_view<float const>(dw.data(), 1, 64),
                      .keys = std::span(&pool, 1), .rows = {}, .scores = vector_view<float>(scores.data(), kChunks), .stream = decode.get()})
              .ok());
  indexer::cuda::TopK topk;
  REQUIRE(topk.run({.scores = matrix_view<float const>(scores.data(), 1, kChunks), .allowed = {}, .ids = {},
                    .out = matrix_view<std::int32_t>(native.data(), 1, kTopK), .stream = decode.get()})
              .ok());
  decode.synchronize();
  auto got = test::download(rows), want = test::download(native);
  auto const& table = lsa.engine().table();
  for (index_t i = 0; i < kTopK; ++i) {
    INFO("slot " << i);
    std::int32_t const r = got[static_cast<std::size_t>(i)];
    REQUIRE(r >= 0);
    CHECK(table.page_of(r / 64) * 64 + r % 64 == want[static_cast<std::size_t>(i)]);
  }
}
