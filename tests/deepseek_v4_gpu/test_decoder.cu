// The CUDA decoder against the float32 host decoder on the golden fixtures (tests/data/dsv4, docs/fixtures.md):
// full prefill, chunked prefill, token-by-token decode (graph replay and direct launches) and 64 greedy
// steps, with the logits of every step compared (design.md §4 invariant 3).
//
// Float32 storage (fm::cuda::Float32Backend) runs the same arithmetic as the reference up to the order of
// float sums: every fixture, tight tolerance, identical greedy tokens. Bf16 storage (fm::cuda::Backend) is
// compared with the reference run on the same bf16-rounded weights, on the `dense` fixture only: its KV rows
// are bf16 as well, and on `select` and `yarn` that rounding alone moves indexer scores by more than the
// fixtures' top-k margins (≥ 1.2e-3 relative, chosen for float32 ports) — emulating the KV rounding in the
// host reference changes their logits by 10–20% through a different selection, not through an error.
#include "support.cuh"

#include "../deepseek_v4/fixtures.hpp"

#include <flashmemory/models/deepseek_v4/cuda/decoder.cuh>

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace dsv4_gpu;
using dsv4_test::fixture_dir;
using dsv4_test::load_golden;

namespace {

constexpr int kGreedySteps = 64;
constexpr double kFloat32Tolerance = 1e-3;  // the issue asks ≤ 2e-2; float32 storage is far inside it
constexpr double kBf16Tolerance = 2e-2;

template <class Backend>
using GpuDecoder = v4::Decoder<Backend>;

v4::CudaDecoderOptions options(bool graph = true, bool overlap = true) {
  return {.max_context = 256, .max_chunk = 32, .graph = graph, .overlap = overlap};  // prompts of 64–80 tokens: internal chunks too
}

// The worst per-row error of [rows, V] logits (dsv4_test::rel_err: max |a − b| / max |ref| of the row).
struct RowError {
  double error = 0;
  index_t row = -1;
};
RowError worst_row(std::vector<float> const& got, std::vector<float> const& ref, index_t V) {
  RowError w;
  for (index_t r = 0; r * V < static_cast<index_t>(ref.size()); ++r) {
    double const e = dsv4_test::rel_err(std::span<float const>(got).subspan(static_cast<std::size_t>(r * V), static_cast<std::size_t>(V)),
                                        std::span<float const>(ref).subspan(static_cast<std::size_t>(r * V), static_cast<std::size_t>(V)));
    if (!(e <= w.error)) w = {e, r};  // NaN counts as worst
  }
  return w;
}

index_t argmax(std::vector<float> const& v) { return std::max_element(v.begin(), v.end()) - v.begin(); }

// The gap between the best and second-best logit (how close a greedy choice was).
float margin(std::vector<float> v) {
  std::partial_sort(v.begin(), v.begin() + 2, v.end(), std::greater<>());
  return v[0] - v[1];
}

// Both decoders continue greedily from their last logits for kGreedySteps tokens; every step's logits must
// agree within `tolerance` and both must pick the same token.
template <class Gpu>
void greedy_lockstep(v4::Decoder<>& ref, Gpu& gpu, std::vector<float> ref_logits, std::vector<float> gpu_logits, double tolerance,
                     std::string const& what) {
  index_t const V = ref.config().vocab_size;
  double worst = 0;
  for (int step = 0; step < kGreedySteps; ++step) {
    double const e = dsv4_test::rel_err(gpu_logits, ref_logits);
    worst = std::max(worst, e);
    index_t const want = argmax(ref_logits), got = argmax(gpu_logits);
    INFO(what << ": greedy step " << step << " (position " << ref.position() << "): logits error " << e << ", reference token " << want
              << " (margin " << margin(ref_logits) << "), CUDA token " << got << " (margin " << margin(gpu_logits) << ")");
    REQUIRE(e <= tolerance);
    REQUIRE(got == want);
    ref_logits = ref.forward(std::span<index_t const>(&want, 1));
    gpu_logits = gpu.forward(std::span<index_t const>(&got, 1));
    REQUIRE(static_cast<index_t>(gpu_logits.size()) == V);
  }
  UNSCOPED_INFO(what << ": worst greedy-step error " << worst);
}

// Rounds every parameter the CUDA decoder stores in bf16 (matrices), leaving the float32 ones.
void round_stored_to_bf16(v4::Weights& w) {
  auto r = [](v4::Tensor& t) {
    for (float& v : t.data) v = fm::decode_bf16(fm::encode_bf16(v));
  };
  r(w.embed), r(w.head);
  for (auto& l : w.layers) {
    for (v4::Tensor* t : {&l.attn.wq_a, &l.attn.wq_b, &l.attn.wkv, &l.attn.wo_a, &l.attn.wo_b, &l.ffn.gate, &l.ffn.shared.w1,
                          &l.ffn.shared.w2, &l.ffn.shared.w3})
      r(*t);
    if (l.attn.compressor) r(l.attn.compressor->wkv), r(l.attn.compressor->wgate);
    if (l.attn.indexer) {
      r(l.attn.indexer->wq_b), r(l.attn.indexer->weights_proj);
      r(l.attn.indexer->compressor.wkv), r(l.attn.indexer->compressor.wgate);
    }
    for (auto& e : l.ffn.experts) r(e.w1), r(e.w2), r(e.w3);
  }
}

// Prefill of the whole prompt, then greedy decoding in lockstep with the reference.
template <class Backend>
void prefill_and_greedy(std::string const& name, bool bf16_weights, double tolerance) {
  auto [config, weights] = v4::load_model(fixture_dir(name));
  if (bf16_weights) round_stored_to_bf16(weights);
  GpuDecoder<Backend> gpu(config, weights, options());
  v4::Decoder<> ref(config, std::move(weights));
  dsv4_test::Golden const g = load_golden(name);
  index_t const V = config.vocab_size, S = static_cast<index_t>(g.ids.size());
  std::string const what = name + " (" + std::string(Backend::kName) + ")";

  auto ref_all = ref.forward(g.ids, v4::Logits::all);
  auto gpu_all = gpu.forward(g.ids, v4::Logits::all);
  REQUIRE(gpu_all.size() == ref_all.size());
  RowError const w = worst_row(gpu_all, ref_all, V);
  INFO(what << ": prefill of " << S << " tokens: whole-tensor error " << dsv4_test::rel_err(gpu_all, ref_all) << ", worst row " << w.row
            << " with " << w.error);
  CHECK(w.error <= tolerance);

  greedy_lockstep(ref, gpu, std::vector<float>(ref_all.end() - V, ref_all.end()), std::vector<float>(gpu_all.end() - V, gpu_all.end()),
                  tolerance, what);
}

}  // namespace

// Pinpoints the first failing stage: the model cut after its first L layers (L = 1, 2, …; the layer kinds
// come in the fixture's order, e.g. sliding, CSA, HCA, CSA), on the first token, then the first three tokens
// in one chunk and one by one (graph replay). The first (fixture, L, tokens) that fails names the layer kind
// and whether a single token (projections, norms, mHC, attention over one window row, MoE, head) or the
// token-to-token state (window ring, positions, compressors, indexer) is at fault.
TEST_CASE("CUDA decoder, staged: the first 1 and 3 tokens through the first L layers match the host reference",
          "[gpu][deepseek_v4][decoder]") {
  std::string const name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  dsv4_test::Golden const g = load_golden(name);
  index_t const layers = v4::load_model(fixture_dir(name)).config.num_hidden_layers;
  for (index_t L = 1; L <= layers; ++L) {
    auto [config, weights] = v4::load_model(fixture_dir(name));
    config.num_hidden_layers = L;
    config.layer_types.resize(static_cast<std::size_t>(L));
    config.mlp_layer_types.resize(static_cast<std::size_t>(L));
    weights.layers.erase(weights.layers.begin() + L, weights.layers.end());
    std::string const stage = name + ", first " + std::to_string(L) + " layer(s), the last one " +
                              std::string(v4::short_name(config.layer_types.back()));
    GpuDecoder<fm::cuda::Float32Backend> one(config, weights, options()), chunk(config, weights, options()),
        steps(config, weights, options());
    v4::Decoder<> ref(config, std::move(weights));
    index_t const V = config.vocab_size;
    std::span<index_t const> const ids(g.ids.data(), 3);
    auto const ref3 = ref.forward(ids, v4::Logits::all);

    auto const first = one.forward(ids.subspan(0, 1));
    double const e1 = dsv4_test::rel_err(std::span<float const>(first), std::span<float const>(ref3).subspan(0, static_cast<std::size_t>(V)));
    RowError const e3 = worst_row(chunk.forward(ids, v4::Logits::all), ref3, V);
    RowError const s3 = worst_row(dsv4_test::run_chunked(steps, ids, {1}), ref3, V);
    INFO(stage << ": token 0 error " << e1 << "; 3 tokens in one chunk: worst row " << e3.row << " with " << e3.error
               << "; 3 single-token steps: worst step " << s3.row << " with " << s3.error);
    bool const ok = e1 <= kFloat32Tolerance && e3.error <= kFloat32Tolerance && s3.error <= kFloat32Tolerance;
    CHECK(ok);
    if (!ok) break;  // the first failing stage is the one to look at
  }
}

TEST_CASE("CUDA decoder, float32 storage: prefill and 64 greedy steps match the host reference",
          "[gpu][deepseek_v4][decoder]") {
  std::string const name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  prefill_and_greedy<fm::cuda::Float32Backend>(name, false, kFloat32Tolerance);
}

TEST_CASE("CUDA decoder, bf16 storage: prefill and 64 greedy steps match the reference on bf16 weights (dense)",
          "[gpu][deepseek_v4][decoder]") {
  prefill_and_greedy<fm::cuda::Backend>("dense", true, kBf16Tolerance);
}

TEST_CASE("CUDA decoder: token-by-token decode (graph, direct, without overlap) and odd chunks match the one-shot reference",
          "[gpu][deepseek_v4][decoder]") {
  std::string const name = GENERATE("dense", "select", "yarn");
  CAPTURE(name);
  auto [config, weights] = v4::load_model(fixture_dir(name));
  GpuDecoder<fm::cuda::Float32Backend> graph(config, weights, options(true)), direct(config, weights, options(false)),
      serial(config, weights, options(true, false));
  v4::Decoder<> ref(config, std::move(weights));
  dsv4_test::Golden const g = load_golden(name);
  index_t const V = config.vocab_size;
  auto const ref_all = ref.forward(g.ids, v4::Logits::all);

  auto by_graph = dsv4_test::run_chunked(graph, g.ids, {1});
  auto by_launch = dsv4_test::run_chunked(direct, g.ids, {1});
  auto by_serial = dsv4_test::run_chunked(serial, g.ids, {1});
  RowError const w = worst_row(by_graph, ref_all, V);
  INFO(name << ": token-by-token decode (CUDA graph): worst step " << w.row << " with error " << w.error);
  CHECK(w.error <= kFloat32Tolerance);
  CHECK(by_graph == by_launch);  // the graph replays exactly the launches it captured
  CHECK(by_graph == by_serial);  // overlapping launches change no result: every kernel waits before it reads

  graph.reset();
  auto chunked = dsv4_test::run_chunked(graph, g.ids, {1, 3, 5, 7, 9, 11, 13, 15});
  RowError const c = worst_row(chunked, ref_all, V);
  INFO(name << ": chunks of 1, 3, 5, …, 15 tokens: worst row " << c.row << " with error " << c.error);
  CHECK(c.error <= kFloat32Tolerance);

  graph.reset();
  auto again = graph.forward(g.ids, v4::Logits::all);
  graph.reset();
  CHECK(graph.forward(g.ids, v4::Logits::all) == again);  // reset() forgets everything; kernels are deterministic
}

TEST_CASE("CUDA decoder: step() on device tokens equals forward()", "[gpu][deepseek_v4][decoder]") {
  auto [config, weights] = v4::load_model(fixture_dir("yarn"));
  GpuDecoder<fm::cuda::Float32Backend> a(config, weights, options()), b(config, weights, options());
  dsv4_test::Golden const g = load_golden("yarn");
  std::vector<index_t> const prompt(g.ids.begin(), g.ids.begin() + 20);
  a.forward(prompt);
  b.forward(prompt);
  index_t const V = config.vocab_size;
  for (index_t id : {index_t{3}, index_t{17}, index_t{159}}) {
    auto want = a.forward(std::span<index_t const>(&id, 1));
    auto const token = static_cast<std::int32_t>(id);
    FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(b.device_token(), &token, 4, cudaMemcpyHostToDevice, b.stream()));
    b.step();
    std::vector<float> got(static_cast<std::size_t>(V));
    FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(got.data(), b.device_logits(), static_cast<std::size_t>(V) * 4, cudaMemcpyDeviceToHost, b.stream()));
    FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(b.stream()));
    CHECK(got == want);
  }
  CHECK(a.position() == b.position());
}

namespace {

// A batch of sequences at different positions, stepped together by decode(), against one decoder per
// sequence: the per-token kernels are the same, and the projections read the same rows.
template <class Backend>
void batch_against_singles(std::string const& name, double tolerance) {
  auto [config, weights] = v4::load_model(fixture_dir(name));
  dsv4_test::Golden const g = load_golden(name);
  REQUIRE(g.ids.size() >= 62);
  index_t const B = 3, V = config.vocab_size;
  auto batch_options = options();
  batch_options.batch = B;
  GpuDecoder<Backend> batched(config, weights, batch_options);
  std::vector<std::unique_ptr<GpuDecoder<Backend>>> singles;
  std::vector<std::vector<float>> last(B);
  auto prompt = [&](index_t offset, index_t length) { return std::vector<index_t>(g.ids.begin() + offset, g.ids.begin() + offset + length); };
  // Prefill: each sequence alone, its own length (compressors and windows at different phases).
  auto prefill = [&](index_t b, std::vector<index_t> const& ids) {
    singles[static_cast<std::size_t>(b)] = std::make_unique<GpuDecoder<Backend>>(config, weights, options());
    last[static_cast<std::size_t>(b)] = singles[static_cast<std::size_t>(b)]->forward(ids);
    CHECK(batched.forward(ids, v4::Logits::last, b) == last[static_cast<std::size_t>(b)]);
    CHECK(batched.position(b) == static_cast<index_t>(ids.size()));
  };
  singles.resize(B);
  prefill(0, prompt(0, 20));
  prefill(1, prompt(5, 37));
  prefill(2, prompt(10, 52));

  double worst = 0;
  int bitwise = 0, rows = 0;
  auto lockstep = [&](int steps) {
    for (int step = 0; step < steps; ++step) {
      std::vector<index_t> next(B);
      for (index_t b = 0; b < B; ++b) next[static_cast<std::size_t>(b)] = argmax(last[static_cast<std::size_t>(b)]);
      auto const got = batched.decode(next);
      REQUIRE(got.size() == static_cast<std::size_t>(B * V));
      for (index_t b = 0; b < B; ++b) {
        auto& single = *singles[static_cast<std::size_t>(b)];
        last[static_cast<std::size_t>(b)] = single.forward(std::span<index_t const>(&next[static_cast<std::size_t>(b)], 1));
        std::vector<float> const row(got.begin() + b * V, got.begin() + (b + 1) * V);
        double const e = dsv4_test::rel_err(row, last[static_cast<std::size_t>(b)]);
        worst = std::max(worst, e);
        bitwise += row == last[static_cast<std::size_t>(b)];
        ++rows;
        INFO(name << " (" << Backend::kName << "): step " << step << ", sequence " << b << " at position " << single.position()
                  << ": error " << e);
        REQUIRE(e <= tolerance);
        REQUIRE(argmax(row) == argmax(last[static_cast<std::size_t>(b)]));
        CHECK(batched.position(b) == single.position());
      }
    }
  };
  lockstep(24);
  // One sequence starts over while the others go on.
  batched.reset(1);
  CHECK(batched.position(1) == 0);
  prefill(1, prompt(30, 9));
  lockstep(8);
  UNSCOPED_INFO(name << " (" << Backend::kName << "): " << rows << " batched rows, " << bitwise << " bit for bit equal, worst error " << worst);
}

}  // namespace

TEST_CASE("CUDA decoder, batch: decode() steps three sequences at different positions as each alone, and one restarts",
          "[gpu][deepseek_v4][decoder][batch]") {
  std::string const name = GENERATE("dense", "select", "yarn");
  batch_against_singles<fm::cuda::Float32Backend>(name, 1e-5);
}

TEST_CASE("CUDA decoder, batch, bf16 storage: decode() steps three sequences as each alone", "[gpu][deepseek_v4][decoder][batch]") {
  batch_against_singles<fm::cuda::Backend>("dense", kBf16Tolerance);
}

TEST_CASE("CUDA decoder, batch: bad sequence numbers, token counts and ids are clear errors; nothing is appended",
          "[gpu][deepseek_v4][decoder][batch]") {
  auto [config, weights] = v4::load_model(fixture_dir("dense"));
  GpuDecoder<fm::cuda::Backend> gpu(config, weights, {.max_context = 16, .max_chunk = 8, .batch = 2});
  std::vector<index_t> const ids(12, 5);
  gpu.forward(ids, v4::Logits::last, 1);
  auto expect_error = [](auto&& f, fm::errc code, std::string const& words) {
    try {
      f();
      FAIL("no error (expected: " << words << ")");
    } catch (fm::error const& e) {
      INFO(e.what());
      CHECK(e.code() == code);
      CHECK(std::string(e.what()).find(words) != std::string::npos);
    }
  };
  expect_error([&] { gpu.forward(ids, v4::Logits::last, 2); }, fm::errc::invalid_argument, "sequence 2 of a batch of 2");
  expect_error([&] { gpu.decode(std::vector<index_t>{1, 2, 3}); }, fm::errc::bad_shape, "one token per sequence");
  expect_error([&] { gpu.decode(std::vector<index_t>{1, config.vocab_size}); }, fm::errc::invalid_argument, "outside the vocabulary");
  gpu.forward(std::span<index_t const>(ids).first(3), v4::Logits::last, 1);  // sequence 1 at 15: one more token fits
  gpu.decode(std::vector<index_t>{1, 2});
  expect_error([&] { gpu.decode(std::vector<index_t>{1, 2}); }, fm::errc::out_of_memory, "at position 16 of sequence 1");
  CHECK(gpu.position(0) == 1);
  CHECK(gpu.position(1) == 16);
  CHECK_THROWS_AS((GpuDecoder<fm::cuda::Backend>(config, weights, {.batch = 0})), fm::error);
}

TEST_CASE("CUDA decoder: the max context is a hard limit with a clear error", "[gpu][deepseek_v4][decoder]") {
  auto [config, weights] = v4::load_model(fixture_dir("dense"));
  GpuDecoder<fm::cuda::Backend> gpu(config, weights, {.max_context = 16, .max_chunk = 8});
  std::vector<index_t> ids(12, 5);
  gpu.forward(ids);
  try {
    gpu.forward(std::span<index_t const>(ids).subspan(0, 5));
    FAIL("no error past the max context");
  } catch (fm::error const& e) {
    CHECK(e.code() == fm::errc::out_of_memory);
    CHECK(std::string(e.what()).find("max context of 16") != std::string::npos);
  }
  CHECK(gpu.position() == 12);  // nothing was appended
  std::vector<index_t> bad{3, 128};
  CHECK_THROWS_AS(gpu.forward(bad), fm::error);
}
