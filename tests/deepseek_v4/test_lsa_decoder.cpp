// The reference decoder wired to LSA controllers (design.md §4 invariant 4, lsa.md §2): on every golden fixture,
// prefill + 64 decode steps,
//   * FullResident (the native model) and a Lookahead that keeps everything give the same logits bit for bit,
//     whatever the chunking of the prefill;
//   * a Lookahead at a small budget changes the logits and reports the bytes it allocated;
//   * an oracle (labels from a traced full-attention run) keeps every chunk the native top-k reads, so its
//     logits are the native ones while a random set of the same size is not;
//   * Level 1 sees the attention input of each target layer and that layer's index keys.
#include "fixtures.hpp"

#include <flashmemory/indexer/oracle.hpp>
#include <flashmemory/indexer/random.hpp>
#include <flashmemory/indexer/recency.hpp>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/lsa/native_trace.hpp>
#include <flashmemory/residency/threshold.hpp>
#include <flashmemory/residency/top_fraction.hpp>

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

using namespace dsv4_test;
using fm::index_t;

namespace {

constexpr index_t kDecodeSteps = 64;
constexpr index_t kTau = 8;       // windows of 8 tokens: 16 windows over the decode
constexpr index_t kPerPage = 2;   // pages of 2 chunks (8 tokens): 16 pages over 128 tokens

// Host memory whose live bytes are counted, to check the controller's footprint against what it allocated.
struct CountingAllocator {
  static constexpr std::string_view kName = "counted host";
  static constexpr bool kHostAccessible = true;
  std::shared_ptr<std::size_t> live = std::make_shared<std::size_t>(0);

  std::byte* allocate(std::size_t n) noexcept {
    std::byte* p = fm::store::HostAllocator{}.allocate(n);
    if (p) *live += n;
    return p;
  }
  void deallocate(std::byte* p, std::size_t n) noexcept {
    *live -= n;
    fm::store::HostAllocator{}.deallocate(p, n);
  }
};

template <class Scorer, class Policy, class Allocator = fm::store::HostAllocator>
using Lsa = fm::lsa::Lookahead<Scorer, Policy, kTau, fm::layout::F32Records, fm::layout::F32Records, Allocator>;

template <class Kv>
using Decoder = v4::Decoder<fm::cpu::Backend, Kv>;

struct Fixture {
  std::string name;
  v4::Config config;
  std::vector<index_t> tokens;  // the prompt, then the native model's 64 greedy tokens
  std::vector<float> native;    // native logits of every position [128, V]

  v4::Weights weights() const { return v4::load_model(fixture_dir(name)).weights; }
};

index_t argmax(std::span<float const> v) { return std::max_element(v.begin(), v.end()) - v.begin(); }

// Runs `tokens` through `model`: the prompt in steps of `chunk` tokens, then one token per step; `before(n)` is
// called before each step of n tokens. Returns the logits of every position.
template <class M>
std::vector<float> run(M& model, std::span<index_t const> tokens, index_t prompt, index_t chunk,
                       std::function<void(index_t)> const& before = {}) {
  std::vector<float> all;
  for (index_t at = 0; at < static_cast<index_t>(tokens.size());) {
    index_t n = at < prompt ? std::min(chunk, prompt - at) : 1;
    if (before) before(n);
    auto logits = model.forward(tokens.subspan(static_cast<std::size_t>(at), static_cast<std::size_t>(n)), v4::Logits::all);
    all.insert(all.end(), logits.begin(), logits.end());
    at += n;
  }
  return all;
}

Fixture load_fixture(std::string const& name) {
  Fixture f{.name = name, .config = v4::load_config(fixture_dir(name) / "config.json")};
  Golden g = load_golden(name);
  f.tokens = g.ids;
  v4::Decoder<> native(f.config, f.weights());
  auto logits = native.forward(g.ids);
  for (index_t i = 0; i < kDecodeSteps; ++i) {
    f.tokens.push_back(argmax(logits));
    logits = native.forward(std::span(&f.tokens.back(), 1));
  }
  native.reset();
  f.native = run(native, f.tokens, static_cast<index_t>(g.ids.size()), static_cast<index_t>(g.ids.size()));
  // The native model is transformers' on the prompt.
  CHECK(rel_err(std::span(f.native).first(g.full.size()), g.full) <= 1e-4);
  return f;
}

index_t prompt_len(Fixture const& f) { return static_cast<index_t>(f.tokens.size()) - kDecodeSteps; }
index_t max_chunks(Fixture const& f) { return static_cast<index_t>(f.tokens.size()) / f.config.compress_rate_csa; }
index_t csa_layers(Fixture const& f) { return f.config.count(v4::LayerKind::csa); }

}  // namespace

TEST_CASE("FullResident and an everything-resident Lookahead decode exactly like the native model", "[deepseek_v4][lsa]") {
  std::string name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  Fixture f = load_fixture(name);
  index_t chunk = GENERATE(1000, 5);  // the prompt in one step, or in steps that straddle windows and pages
  CAPTURE(chunk);

  Decoder<v4::FullResidentKv> full(f.config, f.weights(), v4::full_resident_kv(f.config));
  CHECK(run(full, f.tokens, prompt_len(f), chunk) == f.native);

  // Keep every page (TopFraction 1) in a reserve for the whole history: Level 2 reads its reserve, Level 1
  // runs every 8 tokens and recalls, and nothing may change.
  using Everything = Lsa<fm::indexer::Recency, fm::residency::TopFraction>;
  index_t cells = fm::store::cells_for_fraction(1.0, max_chunks(f), kPerPage);
  Decoder<Everything> lsa(f.config, f.weights(),
                          Everything({}, {1.0}, v4::entry_layout(f.config, kPerPage), v4::key_layout(f.config, kPerPage),
                                     {.csa_layers = csa_layers(f), .reserve_cells = cells}));
  CHECK(run(lsa, f.tokens, prompt_len(f), chunk) == f.native);
  CHECK(lsa.kv().stats().windows >= kDecodeSteps / kTau);
  CHECK(lsa.kv().table().resident_pages() == cells);
  CHECK(lsa.kv().footprint().total().resident_bytes == lsa.kv().footprint().total().full_bytes);
}

TEST_CASE("a Lookahead at a small budget changes the logits and holds the bytes it reports",
          "[deepseek_v4][lsa]") {
  std::string name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  Fixture f = load_fixture(name);
  // The newest fifth of the pages, plus one cell so that a page opened by a decode chunk is readable at once.
  using Recent = Lsa<fm::indexer::Recency, fm::residency::TopFraction, CountingAllocator>;
  index_t cells = fm::store::cells_for_fraction(0.2, max_chunks(f), kPerPage) + 1;
  CountingAllocator counter;
  auto entry = v4::entry_layout(f.config, kPerPage), key = v4::key_layout(f.config, kPerPage);
  Decoder<Recent> lsa(f.config, f.weights(),
                      Recent({}, {0.2}, entry, key, {.csa_layers = csa_layers(f), .reserve_cells = cells}, counter));
  auto logits = run(lsa, f.tokens, prompt_len(f), prompt_len(f));

  index_t V = f.config.vocab_size, differ = rows_differing(logits, f.native, V);
  UNSCOPED_INFO(differ << " of " << f.tokens.size() << " positions differ from the native model");
  CHECK(differ > 0);  // the selection matters
  CHECK(differ < static_cast<index_t>(f.tokens.size()));
  CHECK(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));

  auto const& kv = lsa.kv();
  auto total = kv.footprint().total();
  std::size_t page_bytes = static_cast<std::size_t>(fm::layout::page_bytes(entry) + fm::layout::page_bytes(key));
  std::size_t history_pages = static_cast<std::size_t>(kv.entries(0).mirror.num_pages());
  CHECK(history_pages == static_cast<std::size_t>((max_chunks(f) + kPerPage - 1) / kPerPage));
  CHECK(total.reserve_bytes + total.mirror_bytes == *counter.live);  // what it reports is what it allocated
  CHECK(total.reserve_bytes == static_cast<std::size_t>(cells * csa_layers(f)) * page_bytes);
  CHECK(total.mirror_bytes == history_pages * static_cast<std::size_t>(csa_layers(f)) * page_bytes);
  CHECK(total.full_bytes == total.mirror_bytes);
  CHECK(total.resident_bytes <= total.reserve_bytes);
  CHECK(total.reserve_bytes * 10 < total.full_bytes * 4);  // the GPU side holds under 40% of the history
  CHECK(kv.stats().windows == 1 + kDecodeSteps / kTau);
  CHECK(kv.stats().recall.pages_evicted > 0);
  CHECK(kv.resident_set().pages.size() == static_cast<std::size_t>(std::ceil(0.2 * double(history_pages))));
}

TEST_CASE("an oracle keeps what the native top-k reads in each window: native logits from a small reserve",
          "[deepseek_v4][lsa]") {
  std::string name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  Fixture f = load_fixture(name);
  index_t prompt = prompt_len(f);
  // Short windows and one chunk per page: the tiny random models spread their picks over the whole history, so
  // only a window of few steps needs a small part of it.
  constexpr index_t tau = 2, per = 1;

  // Full attention, traced: which chunks each step's top-k read. The prompt runs in steps of τ tokens so that
  // every window, prefill included, has labels.
  using Trace = fm::lsa::NativeTrace<>;
  Decoder<Trace> native(f.config, f.weights(), Trace(v4::full_resident_kv(f.config)));
  CHECK(run(native, f.tokens, prompt, tau) == f.native);  // tracing changes nothing
  Trace const& trace = native.kv();

  // The largest labelled set of a window sizes the reserve, + 1 cell for the page a decode chunk opens.
  std::size_t largest = 0;
  for (auto const& step : trace.steps()) {
    auto labels = trace.labels(step.end, (step.end / tau + 1) * tau);
    largest = std::max<std::size_t>(largest, static_cast<std::size_t>(std::count(labels.begin(), labels.end(), 1.0f)));
  }
  index_t cells = static_cast<index_t>(largest) + 1, history_pages = max_chunks(f);
  UNSCOPED_INFO("reserve of " << cells << " cells for " << history_pages << " pages");
  auto entry = v4::entry_layout(f.config, per), key = v4::key_layout(f.config, per);
  fm::lsa::LookaheadOptions options{.csa_layers = csa_layers(f), .reserve_cells = cells, .tau = tau};

  using Oracle = Lsa<fm::indexer::Oracle, fm::residency::Threshold>;
  Decoder<Oracle> oracle(f.config, f.weights(), Oracle({}, {0.5}, entry, key, options));
  std::vector<float> pending;  // labels of the window whose set the last boundary chose
  index_t windows = 0;
  auto covered = [&] {  // the set Level 1 chose is exactly the labelled chunks, all of them resident
    if (pending.empty()) return;
    std::vector<index_t> need;
    for (std::size_t c = 0; c < pending.size(); ++c)
      if (pending[c] > 0) need.push_back(static_cast<index_t>(c));
    CHECK(oracle.kv().resident_set().pages == need);
    for (index_t p : need) CHECK(oracle.kv().table().cell_of(p) >= 0);
    ++windows;
    pending.clear();
  };
  auto logits = run(oracle, f.tokens, prompt, tau, [&](index_t n) {
    covered();
    trace.offer_future(oracle.kv(), n);
    if (index_t end = oracle.position() + n; oracle.kv().boundary_due(n)) pending = trace.labels(end, (end / tau + 1) * tau);
  });
  covered();
  CHECK(windows == static_cast<index_t>(f.tokens.size()) / tau - 1);  // every step but the last labels a window
  CHECK(logits == f.native);  // every chunk the native top-k read was resident when it read it
  if (name == "dense") return;  // dense selects every chunk (top-k 32 ≥ 32 chunks): nothing to leave out
  CHECK(cells < history_pages);

  // A random set of the same size in the same reserve is not the native model.
  using Random = Lsa<fm::indexer::Random, fm::residency::TopFraction>;
  Decoder<Random> random(f.config, f.weights(),
                         Random(fm::indexer::Random(3), {double(cells - 1) / double(history_pages)}, entry, key, options));
  CHECK(rows_differing(run(random, f.tokens, prompt, tau), f.native, f.config.vocab_size) > 0);
}

namespace {
// Records what Level 1 is given.
struct Spy {
  static constexpr bool kProbabilities = false;
  struct Call {
    index_t position = 0, chunks = 0;
    std::vector<std::vector<float>> hidden, keys, query, head_weights;
  };
  std::shared_ptr<std::vector<Call>> calls = std::make_shared<std::vector<Call>>();

  void score(fm::indexer::ScoringContext const& ctx, std::span<float> scores) const {
    Call c{ctx.position, ctx.num_chunks, {}, {}, {}, {}};
    auto copy = [](auto const& v) { return std::vector<float>(v.data_handle(), v.data_handle() + v.size()); };
    for (auto const& l : ctx.layers) {
      c.hidden.push_back(copy(l.hidden)), c.keys.push_back(copy(l.keys));
      c.query.push_back(copy(l.query)), c.head_weights.push_back(copy(l.head_weights));
    }
    calls->push_back(std::move(c));
    std::fill(scores.begin(), scores.end(), 1.0f);
  }
};
}  // namespace

TEST_CASE("Level 1 gets each target layer's attention input and index keys at every window boundary", "[deepseek_v4][lsa]") {
  auto [config, weights] = v4::load_model(fixture_dir("dense"));  // CSA layers 1 and 3
  Golden g = load_golden("dense");
  using Watched = Lsa<Spy, fm::residency::TopFraction>;
  Spy spy;
  Decoder<Watched> model(config, std::move(weights),
                       Watched(spy, {1.0}, v4::entry_layout(config, kPerPage), v4::key_layout(config, kPerPage),
                               {.csa_layers = 2, .target_layers = {1, 0}, .reserve_cells = 32}));
  model.forward(g.ids);  // 64 tokens: the first window ends with the prefill
  for (index_t i = 0; i < 20; ++i) model.forward(std::span(&g.ids[static_cast<std::size_t>(i)], 1));
  auto const& calls = *spy.calls;
  REQUIRE(calls.size() == 3);  // after the prefill, then at positions 72 and 80
  CHECK(calls[0].position == 63);
  CHECK(calls[1].position == 71);
  CHECK(calls[2].position == 79);
  CHECK(calls[2].chunks == 20);

  // The keys are the target layers' own index keys (transformers' after the prompt), in target order.
  auto const& first = calls[0];
  REQUIRE(first.chunks == 16);
  CHECK(rel_err(first.keys[0], intermediate("dense", "layers.3.indexer_kv")) < 1e-5);
  CHECK(rel_err(first.keys[1], intermediate("dense", "layers.1.indexer_kv")) < 1e-5);
  // The hidden state is what that layer's indexer reads: its head weights are weights_proj · hidden with both
  // constant factors folded in, and the query has n_I · d_I values.
  double fold = 1.0 / std::sqrt(double(config.index_n_heads) * double(config.index_head_dim));
  for (auto const& call : calls)
    for (std::size_t t = 0; t < 2; ++t) {
      auto const& wp = model.weights().layers[t == 0 ? 3 : 1].attn.indexer->weights_proj;
      auto proj = wp.matrix();
      REQUIRE(call.hidden[t].size() == static_cast<std::size_t>(config.hidden_size));
      REQUIRE(call.query[t].size() == static_cast<std::size_t>(config.index_n_heads * config.index_head_dim));
      std::vector<float> want(static_cast<std::size_t>(config.index_n_heads));
      for (index_t h = 0; h < config.index_n_heads; ++h)
        want[static_cast<std::size_t>(h)] = static_cast<float>(
            fold * v4::detail::dot(&proj(h, 0), call.hidden[t].data(), config.hidden_size));
      CHECK(rel_err(call.head_weights[t], want) < 1e-6);
      CHECK(call.hidden[0] != call.hidden[1]);
    }
}

TEST_CASE("a full-KV prefill is the native model; hand_over keeps only Level 1's set; a forked decoder continues alike",
          "[deepseek_v4][lsa]") {
  std::string name = GENERATE("select", "yarn");
  CAPTURE(name);
  Fixture f = load_fixture(name);
  index_t prompt = prompt_len(f), V = f.config.vocab_size;
  using Recent = Lsa<fm::indexer::Recency, fm::residency::TopFraction>;
  auto make = [&] {
    return Decoder<Recent>(f.config, f.weights(),
                           Recent({}, {0.25}, v4::entry_layout(f.config, kPerPage), v4::key_layout(f.config, kPerPage),
                                  {.csa_layers = csa_layers(f), .full_prefill = true}));
  };
  // Never handed over: every chunk is read from the mirrors, Level 1 never runs, no reserve is held.
  auto full = make();
  CHECK(run(full, f.tokens, prompt, 7) == f.native);
  CHECK(full.kv().prefilling());
  CHECK(full.kv().stats().windows == 0);
  CHECK(full.kv().footprint().total().reserve_bytes == 0);

  // Prefill once, fork, hand one copy over: the copy that is not handed over stays the native model.
  auto base = make();
  auto prefix = std::span<index_t const>(f.tokens).first(static_cast<std::size_t>(prompt));
  run(base, prefix, prompt, 5);
  auto fork = base;
  auto rest = std::span<index_t const>(f.tokens).subspan(static_cast<std::size_t>(prompt));
  auto native_rest = std::vector<float>(f.native.begin() + prompt * V, f.native.end());
  CHECK(run(base, rest, 0, 1) == native_rest);

  // Sized for the decode's largest set (a quarter of its pages, rounded up) and the page a decode chunk opens.
  index_t history_pages = fork.kv().entries(0).mirror.num_pages();
  auto cells = static_cast<index_t>(std::ceil(0.25 * double(max_chunks(f) / kPerPage + 1))) + 1;
  fork.kv().hand_over(cells);
  CHECK_FALSE(fork.kv().prefilling());
  CHECK(fork.kv().stats().windows == 1);
  // Recency over a quarter of the pages: the newest ones, and nothing else, are resident and readable.
  auto const& set = fork.kv().resident_set().pages;
  REQUIRE(set.size() == static_cast<std::size_t>(std::ceil(0.25 * double(history_pages))));
  CHECK(set.back() == history_pages - 1);
  CHECK(fork.kv().table().resident_pages() == static_cast<index_t>(set.size()));
  for (index_t c = 0; c < fork.kv().entries(0).mirror.num_chunks(); ++c)
    CHECK(fork.kv().readable(0, c) == fork.kv().resident_set().contains_page(c / kPerPage));
  CHECK(fork.kv().footprint().total().reserve_bytes ==
        static_cast<std::size_t>(cells * csa_layers(f)) *
            static_cast<std::size_t>(fm::layout::page_bytes(v4::entry_layout(f.config, kPerPage)) +
                                     fm::layout::page_bytes(v4::key_layout(f.config, kPerPage))));
  auto lsa = run(fork, rest, 0, 1);
  CHECK(rows_differing(lsa, native_rest, V) > 0);  // what was left behind mattered
  CHECK_THROWS_WITH(fork.kv().hand_over(cells), Catch::Matchers::ContainsSubstring("none is running"));
}

TEST_CASE("golden labels: the nucleus of each layer's top-k votes, θ layers must agree, windows take the union",
          "[lsa]") {
  // Two CSA layers, chunk scores chosen so that the softmax over the top-3 is known: with scores {2, 1, 0} the
  // masses are 0.665, 0.245, 0.090.
  using Trace = fm::lsa::NativeTrace<>;
  fm::layout::F32Records layout{4, 2};
  for (index_t votes : {1, 2}) {
    Trace trace(fm::lsa::FullResident<>(layout, layout, 2), {.nucleus_p = 0.8, .votes = votes});
    std::vector<float> record(4, 0.5f);
    for (index_t c = 0; c < 4; ++c) trace.append(0, record, record), trace.append(1, record, record);
    std::vector<float> layer0 = {2, 1, 0, -1}, layer1 = {0, 2, 1, -1};
    // A step of two tokens: token 0 sees the scores above, token 1 only chunk 3 on top.
    trace.select(0, layer0, 3), trace.select(0, std::vector<float>{0, 0, 0, 9}, 3);
    trace.select(1, layer1, 3), trace.select(1, std::vector<float>{0, 0, 0, 9}, 3);
    trace.end_step(2);
    // p = 0.8: the nucleus is the best two of each layer: {0, 1} and {1, 2}.
    if (votes == 1) CHECK(std::vector<std::int32_t>(trace.golden(0).begin(), trace.golden(0).end()) == std::vector<std::int32_t>{0, 1, 2});
    else CHECK(std::vector<std::int32_t>(trace.golden(0).begin(), trace.golden(0).end()) == std::vector<std::int32_t>{1});
    CHECK(std::vector<std::int32_t>(trace.golden(1).begin(), trace.golden(1).end()) == std::vector<std::int32_t>{3});
    // The window after token 0 is token 1; after a token −1, both tokens, restricted to the first 3 chunks.
    CHECK(trace.golden_window(0, 64, 4) == std::vector<std::uint8_t>{0, 0, 0, 1});
    CHECK(trace.golden_window(-1, 64, 3) == (votes == 1 ? std::vector<std::uint8_t>{1, 1, 1} : std::vector<std::uint8_t>{0, 1, 0}));
    CHECK(trace.golden_window(-1, 1, 4) == (votes == 1 ? std::vector<std::uint8_t>{1, 1, 1, 0} : std::vector<std::uint8_t>{0, 1, 0, 0}));
    // Per layer: its own nucleus, whatever θ.
    auto nucleus = [&](index_t layer, index_t token) {
      auto n = trace.layer_golden(layer, token);
      return std::vector<std::int32_t>(n.begin(), n.end());
    };
    CHECK(nucleus(0, 0) == std::vector<std::int32_t>{0, 1});
    CHECK(nucleus(1, 0) == std::vector<std::int32_t>{1, 2});
    CHECK(nucleus(1, 1) == std::vector<std::int32_t>{3});
    CHECK(trace.golden_window(-1, 64, 4, 0) == std::vector<std::uint8_t>{1, 1, 0, 1});
    CHECK(trace.golden_window(-1, 1, 4, 1) == std::vector<std::uint8_t>{0, 1, 1, 0});
    CHECK_THROWS_WITH(trace.layer_golden(0, 2), Catch::Matchers::ContainsSubstring("no golden labels at position 2"));
  }
}
