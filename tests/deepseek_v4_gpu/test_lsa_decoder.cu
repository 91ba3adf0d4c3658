// The CUDA decoder with LSA (lsa::cuda::DecoderLookahead) on the golden fixtures, prompt + 64 greedy tokens:
//   * everything resident: the native CUDA decoder's logits bit for bit, however the prompt is chunked;
//   * a recency budget under churn (cells evicted and reused, so reserve rows are not chunk numbers): the
//     host reference with the same controller (lsa::Lookahead), step for step;
//   * a full-KV prefill: native until hand_over, then the host reference's hand-over, step for step;
//   * random sets with recalls: every published cell holds its mirror page's bytes, the mirrors hold every
//     chunk, the footprint is what was allocated, and the recall statistics add up;
//   * a host-RAM cap: the documented error, the mirrors in lockstep, and reset() starts over;
//   * bad sizes and a controller for another model: clear errors.
#include "support.cuh"

#include "../deepseek_v4/fixtures.hpp"

#include <flashmemory/indexer/random.hpp>
#include <flashmemory/indexer/recency.hpp>
#include <flashmemory/lsa/cuda/decoder_lookahead.cuh>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/models/deepseek_v4/cuda/decoder.cuh>
#include <flashmemory/residency/top_fraction.hpp>
#include <flashmemory/store/device_reserve.hpp>

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

using namespace dsv4_gpu;
using dsv4_test::fixture_dir;
using dsv4_test::load_golden;
using dsv4_test::rows_differing;

namespace {

constexpr index_t kDecodeSteps = 64;
constexpr index_t kTau = 8;      // windows of 8 tokens
constexpr index_t kPerPage = 2;  // pages of 2 chunks (8 tokens): one new page per window

template <class Scorer, class Policy, class Storage>
using GpuLsa = fm::lsa::cuda::DecoderLookahead<Scorer, Policy, Storage>;

v4::CudaDecoderOptions options() { return {.max_context = 256, .max_chunk = 32}; }

struct Run {
  v4::Config config;
  v4::Weights weights;
  std::vector<index_t> tokens;  // the prompt, then the native CUDA decoder's greedy tokens
  index_t prompt = 0;
};

index_t argmax(std::span<float const> v) { return std::max_element(v.begin(), v.end()) - v.begin(); }

Run load_run(std::string const& name) {
  auto [config, weights] = v4::load_model(fixture_dir(name));
  Run r{config, std::move(weights), load_golden(name).ids, 0};
  r.prompt = static_cast<index_t>(r.tokens.size());
  v4::Decoder<fm::cuda::Float32Backend> native(r.config, r.weights, options());
  auto logits = native.forward(r.tokens);
  for (index_t i = 0; i < kDecodeSteps; ++i) {
    r.tokens.push_back(argmax(logits));
    logits = native.forward(std::span(&r.tokens.back(), 1));
  }
  return r;
}

// The logits of every position: the prompt in steps of `chunk` tokens, then one token per step.
template <class M>
std::vector<float> run(M& model, Run const& r, index_t chunk) {
  std::vector<float> all;
  for (index_t at = 0; at < static_cast<index_t>(r.tokens.size());) {
    index_t const n = at < r.prompt ? std::min(chunk, r.prompt - at) : 1;
    auto logits = model.forward(std::span(r.tokens).subspan(static_cast<std::size_t>(at), static_cast<std::size_t>(n)), v4::Logits::all);
    all.insert(all.end(), logits.begin(), logits.end());
    at += n;
  }
  return all;
}

index_t chunks(Run const& r) { return static_cast<index_t>(r.tokens.size()) / r.config.compress_rate_csa; }
index_t csa_layers(Run const& r) { return r.config.count(v4::LayerKind::csa); }

// Bytes of `n` device bytes at `p`.
std::vector<std::byte> download(std::byte const* p, std::size_t n) {
  std::vector<std::byte> out(n);
  FLASHMEMORY_CUDA_CHECK(cudaMemcpy(out.data(), p, n, cudaMemcpyDeviceToHost));
  return out;
}

// Every written slot of every published cell equals its mirror record; returns the slots compared.
template <class Store>
index_t check_cells_against_mirror(Store const& s, fm::store::ChunkCellTable const& table) {
  auto const rec = static_cast<std::size_t>(s.layout().record_bytes());
  auto const bytes = download(s.reserve.data(), s.reserve.bytes());
  index_t compared = 0;
  for (index_t cell = 0; cell < table.cells(); ++cell) {
    if (table.is_free(cell)) continue;
    index_t const page = table.page_of(cell);
    for (index_t slot = 0; slot < s.reserve.written(cell); ++slot) {
      auto const want = s.mirror.record(page * s.layout().chunks_per_page() + slot);
      INFO("cell " << cell << " (page " << page << "), slot " << slot);
      REQUIRE(std::memcmp(bytes.data() + (static_cast<std::size_t>(cell) * s.reserve.page_bytes() + static_cast<std::size_t>(slot) * rec),
                          want.data(), rec) == 0);
      ++compared;
    }
  }
  return compared;
}

template <class Storage>
void everything_resident(std::string const& name) {
  Run const r = load_run(name);
  using Backend = fm::cuda::BasicBackend<Storage>;
  using Everything = GpuLsa<fm::indexer::Recency, fm::residency::TopFraction, Storage>;
  index_t const cells = (chunks(r) + kPerPage - 1) / kPerPage;
  v4::Decoder<Backend> native(r.config, r.weights, options());
  std::vector<float> const want = run(native, r, r.prompt);
  for (index_t chunk : {r.prompt, index_t{5}, index_t{1}}) {
    CAPTURE(name, chunk);
    v4::Decoder<Backend, Everything> lsa(
        r.config, r.weights, options(),
        Everything({}, {1.0}, {.csa_layers = csa_layers(r), .target_layers = {}, .reserve_cells = cells, .tau = kTau}, kPerPage));
    CHECK(run(lsa, r, chunk) == want);
    auto const& kv = lsa.kv();
    CHECK(kv.stats().windows >= kDecodeSteps / kTau);
    CHECK(kv.table().resident_pages() == cells);
    CHECK(kv.num_chunks() == chunks(r));
    auto const total = kv.footprint().total();
    CHECK(total.resident_bytes == total.full_bytes);
  }
}

}  // namespace

TEST_CASE("CUDA decoder + DecoderLookahead, everything resident: the native CUDA decoder bit for bit", "[gpu][deepseek_v4][lsa]") {
  std::string const name = GENERATE("dense", "select", "yarn");
  everything_resident<float>(name);
  everything_resident<fm::bfloat16>(name);
}

TEST_CASE("CUDA decoder + DecoderLookahead at a recency budget: the host reference's Lookahead step for step",
          "[gpu][deepseek_v4][lsa]") {
  std::string const name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  Run const r = load_run(name);
  index_t const V = r.config.vocab_size;
  // The newest fifth of the pages and one cell more for the page a window opens: no page is ever fetched,
  // so the GPU's one-window publication delay never shows, while cells are evicted and reused throughout.
  index_t const cells = fm::store::cells_for_fraction(0.2, chunks(r), kPerPage) + 1;
  fm::lsa::LookaheadOptions const lo{.csa_layers = csa_layers(r), .target_layers = {}, .reserve_cells = cells, .tau = kTau};
  using Gpu = GpuLsa<fm::indexer::Recency, fm::residency::TopFraction, float>;
  v4::Decoder<fm::cuda::Float32Backend, Gpu> gpu(r.config, r.weights, options(), Gpu({}, {0.2}, lo, kPerPage));
  using Host = fm::lsa::Lookahead<fm::indexer::Recency, fm::residency::TopFraction>;
  v4::Decoder<fm::cpu::Backend, Host> host(
      r.config, r.weights, Host({}, {0.2}, v4::entry_layout(r.config, kPerPage), v4::key_layout(r.config, kPerPage), lo));
  v4::Decoder<fm::cuda::Float32Backend> native(r.config, r.weights, options());

  auto const got = run(gpu, r, 1), want = run(host, r, 1), full = run(native, r, 1);
  index_t const differ = rows_differing(want, full, V);
  UNSCOPED_INFO(name << ": " << differ << " of " << r.tokens.size() << " positions differ from the native model");
  CHECK(differ > 0);  // the budget matters
  for (index_t row = 0; row < static_cast<index_t>(r.tokens.size()); ++row) {
    auto const a = std::span(got).subspan(static_cast<std::size_t>(row * V), static_cast<std::size_t>(V));
    auto const b = std::span(want).subspan(static_cast<std::size_t>(row * V), static_cast<std::size_t>(V));
    double const e = dsv4_test::rel_err(a, b);
    INFO("position " << row << ": error " << e);
    REQUIRE(e <= 1e-3);
    REQUIRE(argmax(a) == argmax(b));
  }
  CHECK(gpu.kv().stats().recall.pages_evicted > 0);
  CHECK(gpu.kv().stats().recall.pages_fetched == 0);
  CHECK(gpu.kv().stats().windows == host.kv().stats().windows);
  CHECK(gpu.kv().resident_set() == host.kv().resident_set());
}

TEST_CASE("CUDA decoder + DecoderLookahead, full-KV prefill: native until hand_over, then the host reference's hand-over",
          "[gpu][deepseek_v4][lsa]") {
  std::string const name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  Run const r = load_run(name);
  index_t const V = r.config.vocab_size, pages = (chunks(r) + kPerPage - 1) / kPerPage;
  index_t const cells = fm::store::cells_for_fraction(0.2, chunks(r), kPerPage) + 1;
  fm::lsa::LookaheadOptions const lo{.csa_layers = csa_layers(r), .target_layers = {}, .reserve_cells = pages, .tau = kTau,
                                     .full_prefill = true};
  using Gpu = GpuLsa<fm::indexer::Recency, fm::residency::TopFraction, float>;
  v4::Decoder<fm::cuda::Float32Backend, Gpu> gpu(r.config, r.weights, options(), Gpu({}, {0.2}, lo, kPerPage));
  v4::Decoder<fm::cuda::Float32Backend> native(r.config, r.weights, options());
  CHECK(run(gpu, r, 7) == run(native, r, 7));  // never handed over: the native model
  CHECK(gpu.kv().stats().windows == 0);
  CHECK_THROWS_WITH(gpu.hand_over(pages + 1), Catch::Matchers::ContainsSubstring("1 to the prefill reserve's"));

  using Host = fm::lsa::Lookahead<fm::indexer::Recency, fm::residency::TopFraction>;
  auto host_options = lo;
  host_options.reserve_cells = 0;
  v4::Decoder<fm::cpu::Backend, Host> host(
      r.config, r.weights, Host({}, {0.2}, v4::entry_layout(r.config, kPerPage), v4::key_layout(r.config, kPerPage), host_options));
  gpu.reset();
  auto const prompt = std::span(r.tokens).first(static_cast<std::size_t>(r.prompt));
  auto got = gpu.forward(prompt), want = host.forward(prompt);
  gpu.hand_over(cells);
  host.kv().hand_over(cells);
  CHECK(gpu.kv().resident_set() == host.kv().resident_set());
  CHECK(gpu.kv().table().resident_pages() == host.kv().table().resident_pages());
  auto const f = gpu.kv().footprint().total();
  CHECK(f.resident_bytes < f.full_bytes / 2);
  std::vector<float> all_got, all_want;
  for (index_t at = r.prompt; at < static_cast<index_t>(r.tokens.size()); ++at) {
    got = gpu.forward(std::span(r.tokens).subspan(static_cast<std::size_t>(at), 1));
    want = host.forward(std::span(r.tokens).subspan(static_cast<std::size_t>(at), 1));
    double const e = dsv4_test::rel_err(got, want);
    INFO("decode position " << at << ": error " << e);
    REQUIRE(e <= 1e-3);
    REQUIRE(argmax(got) == argmax(want));
    all_got.insert(all_got.end(), got.begin(), got.end());
  }
  CHECK(gpu.kv().stats().windows == host.kv().stats().windows);
  // The decode read less than everything: its logits are not the native ones.
  gpu.reset();
  gpu.forward(prompt);
  std::vector<float> full;
  for (index_t at = r.prompt; at < static_cast<index_t>(r.tokens.size()); ++at) {
    auto l = gpu.forward(std::span(r.tokens).subspan(static_cast<std::size_t>(at), 1));
    full.insert(full.end(), l.begin(), l.end());
  }
  CHECK(rows_differing(all_got, full, V) > 0);
}

TEST_CASE("CUDA decoder + DecoderLookahead with random sets: cells equal their mirror pages, the footprint is what was allocated",
          "[gpu][deepseek_v4][lsa]") {
  std::string const name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  Run const r = load_run(name);
  index_t const V = r.config.vocab_size, L = csa_layers(r);
  index_t const cells = fm::store::cells_for_fraction(0.3, chunks(r), kPerPage) + 2;
  using Gpu = GpuLsa<fm::indexer::Random, fm::residency::TopFraction, fm::bfloat16>;
  v4::Decoder<fm::cuda::Backend, Gpu> gpu(r.config, r.weights, options(),
                                          Gpu(fm::indexer::Random(7), {0.3}, {.csa_layers = L, .target_layers = {}, .reserve_cells = cells, .tau = kTau}, kPerPage));
  v4::Decoder<fm::cuda::Backend> native(r.config, r.weights, options());
  auto const got = run(gpu, r, 7), full = run(native, r, 7);
  CHECK(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }));
  CHECK(rows_differing(got, full, V) > 0);

  auto const& kv = gpu.kv();
  gpu.kv().refresh();  // one more Level 1 publishes the previous recall and starts another
  FLASHMEMORY_CUDA_CHECK(cudaDeviceSynchronize());
  index_t compared = 0;
  for (index_t l = 0; l < L; ++l) {
    CHECK(kv.entries(l).mirror.num_chunks() == chunks(r));
    CHECK(kv.keys(l).mirror.num_chunks() == chunks(r));
    compared += check_cells_against_mirror(kv.entries(l), kv.table());
    compared += check_cells_against_mirror(kv.keys(l), kv.table());
  }
  CHECK(compared > 0);
  auto const s = kv.stats();
  CHECK(s.recall.pages_fetched > 0);
  CHECK(s.recall.bytes_moved == static_cast<std::size_t>(s.recall.pages_fetched) * static_cast<std::size_t>(L) *
                                    (kv.entries(0).reserve.page_bytes() + kv.keys(0).reserve.page_bytes()));
  auto const f = kv.footprint().total();
  std::size_t const ring_bytes = static_cast<std::size_t>(L * kv.ring_rows() * (r.config.head_dim + r.config.index_head_dim)) * 2;
  CHECK(f.reserve_bytes == static_cast<std::size_t>(L * cells) * (kv.entries(0).reserve.page_bytes() + kv.keys(0).reserve.page_bytes()) + ring_bytes);
  CHECK(f.resident_bytes <= f.reserve_bytes);
  CHECK(f.full_bytes == static_cast<std::size_t>(L) * static_cast<std::size_t>(kv.entries(0).mirror.num_pages()) *
                            (kv.entries(0).reserve.page_bytes() + kv.keys(0).reserve.page_bytes()));
}

TEST_CASE("DecoderLookahead: the host-RAM cap stops the sequence with its error; the mirrors stay in lockstep; reset() starts over",
          "[gpu][deepseek_v4][lsa]") {
  Run const r = load_run("dense");
  index_t const L = csa_layers(r), cap_pages = 10;
  auto const page_bytes = [&](index_t channels) { return static_cast<std::size_t>(fm::layout::page_bytes(fm::layout::F32Records(channels, kPerPage))); };
  std::size_t const cap = static_cast<std::size_t>(L * cap_pages) * (page_bytes(r.config.head_dim) + page_bytes(r.config.index_head_dim));
  using Gpu = GpuLsa<fm::indexer::Recency, fm::residency::TopFraction, float>;
  fm::lsa::LookaheadOptions const lo{.csa_layers = L, .target_layers = {}, .reserve_cells = 6, .host_cap_bytes = cap, .tau = kTau};
  v4::Decoder<fm::cuda::Float32Backend, Gpu> gpu(r.config, r.weights, options(), Gpu({}, {0.3}, lo, kPerPage));
  auto step = [&](v4::Decoder<fm::cuda::Float32Backend, Gpu>& m, index_t at) {
    return m.forward(std::span(r.tokens).subspan(static_cast<std::size_t>(at), 1));
  };
  index_t at = 0;
  try {
    for (; at < static_cast<index_t>(r.tokens.size()); ++at) step(gpu, at);
    FAIL("the cap of " << cap_pages << " pages did not stop " << r.tokens.size() << " tokens");
  } catch (fm::error const& e) {
    CHECK(e.code() == fm::errc::out_of_memory);
    CHECK(std::string(e.what()).find("host-RAM cap") != std::string::npos);
  }
  CHECK(at > cap_pages * kPerPage * r.config.compress_rate_csa);  // it stopped past the cap, at a copy-out
  for (index_t l = 0; l < L; ++l) {  // every layer and kind holds the same whole pages: nothing half-written
    CHECK(gpu.kv().entries(l).mirror.num_chunks() == cap_pages * kPerPage);
    CHECK(gpu.kv().keys(l).mirror.num_chunks() == cap_pages * kPerPage);
  }
  CHECK(gpu.kv().footprint().total().mirror_bytes == cap);
  // Still usable: after reset() the decoder gives a fresh one's logits.
  gpu.reset();
  v4::Decoder<fm::cuda::Float32Backend, Gpu> fresh(r.config, r.weights, options(), Gpu({}, {0.3}, lo, kPerPage));
  for (index_t i = 0; i < 48; ++i) REQUIRE(step(gpu, i) == step(fresh, i));
}

TEST_CASE("DecoderLookahead: bad sizes and a controller for another model are clear errors", "[gpu][deepseek_v4][lsa]") {
  auto [config, weights] = v4::load_model(fixture_dir("dense"));
  using Gpu = GpuLsa<fm::indexer::Recency, fm::residency::TopFraction, fm::bfloat16>;
  CHECK_THROWS_WITH(Gpu({}, {0.5}, {.csa_layers = 2, .target_layers = {}, .reserve_cells = 0}), Catch::Matchers::ContainsSubstring("at least 1"));
  try {
    v4::Decoder<fm::cuda::Backend, Gpu> gpu(config, weights, options(), Gpu({}, {0.5}, {.csa_layers = 3, .target_layers = {}, .reserve_cells = 4}));
    FAIL("a controller for 3 CSA layers served a model with 2");
  } catch (fm::error const& e) {
    CHECK(std::string(e.what()).find("serves 3 CSA layers, the model has 2") != std::string::npos);
  }
}
