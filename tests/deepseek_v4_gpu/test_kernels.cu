// Every DeepSeek-V4 kernel against its host reference twin on seeded random data, with poisoned outputs:
// linear / detail::linear, norm_rope / rms_norm + Rope::apply, the mHC kernels / hyper_mix, hyper_collapse,
// hyper_expand, hyper_head, kv_step / CompressorState::push, index_scores / indexer::index_scores,
// attention / SparseDecodeReference + inverse RoPE, route + experts / route() + moe_forward().
// Storage-typed kernels run with float32 and bf16 storage; the reference sees the stored (rounded) values.
#include "support.cuh"

#include <flashmemory/core/cuda/stream.cuh>

#include <flashmemory/attention/reference.hpp>
#include <flashmemory/indexer/reference.hpp>
#include <flashmemory/models/deepseek_v4/cache.hpp>
#include <flashmemory/models/deepseek_v4/compressor.hpp>
#include <flashmemory/models/deepseek_v4/cuda/attention.cuh>
#include <flashmemory/models/deepseek_v4/cuda/cache.cuh>
#include <flashmemory/models/deepseek_v4/cuda/compressor.cuh>
#include <flashmemory/models/deepseek_v4/cuda/indexer.cuh>
#include <flashmemory/models/deepseek_v4/cuda/linear.cuh>
#include <flashmemory/models/deepseek_v4/cuda/mhc.cuh>
#include <flashmemory/models/deepseek_v4/cuda/moe.cuh>
#include <flashmemory/models/deepseek_v4/cuda/norm_rope.cuh>
#include <flashmemory/models/deepseek_v4/cuda/weights.cuh>
#include <flashmemory/models/deepseek_v4/detail/ops.hpp>
#include <flashmemory/models/deepseek_v4/mhc.hpp>
#include <flashmemory/models/deepseek_v4/moe.hpp>
#include <flashmemory/models/deepseek_v4/rope.hpp>

#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

using namespace dsv4_gpu;
namespace vc = v4::cuda;
using fm::test::download;
using fm::test::rel_error;
using fm::test::upload;

namespace {

// Float32 kernels against double-accumulating references: only the order of the float sums differs.
constexpr double kTolerance = 2e-5;

float inv_sqrt(index_t n) { return 1.0f / std::sqrt(static_cast<float>(n)); }

std::vector<float> pick(std::vector<float> const& v, index_t rows, index_t stride, index_t offset, index_t cols) {
  std::vector<float> out;
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) out.push_back(v[static_cast<std::size_t>(r * stride + offset + c)]);
  return out;
}

bool all_nan(std::vector<float> const& v, std::size_t from, std::size_t to) {
  for (std::size_t i = from; i < to; ++i)
    if (!std::isnan(v[i])) return false;
  return true;
}

vc::DeviceRope device_rope(DeviceBuffer<float> const& inv_freq) { return {inv_freq.data(), static_cast<int>(inv_freq.size()), 1.0f}; }

}  // namespace

TEMPLATE_TEST_CASE("linear equals detail::linear, plain and grouped", "[gpu][deepseek_v4][kernels]", float, fm::bfloat16) {
  using T = TestType;
  CAPTURE(storage_name<T>());
  std::mt19937 rng(11);
  for (index_t tokens : {1, 3, 11}) {
    CAPTURE(tokens);
    // Plain: 37 rows (not a multiple of the 8 rows of a block) of 264 inputs (33 chunks of 8: a ragged unroll).
    index_t const rows = 37, cols = 264, ys = rows + 5;
    auto w = fm::test::normal(static_cast<std::size_t>(rows * cols), rng, inv_sqrt(cols));
    auto x = fm::test::normal(static_cast<std::size_t>(tokens * cols), rng);
    auto dw = upload(stored<T>(w));
    auto dx = upload(x);
    auto dy = poisoned(static_cast<std::size_t>(tokens * ys));
    require_ok(vc::linear<T>({dw.data(), rows, cols, dx.data(), cols, tokens, 0, 0, dy.data(), ys, nullptr}));
    wait_device();
    auto got = download(dy);
    auto ws = seen<T>(w);
    std::vector<float> ref(static_cast<std::size_t>(tokens * rows));
    v4::detail::linear(fm::matrix_view<float const>(x.data(), tokens, cols), fm::matrix_view<float const>(ws.data(), rows, cols),
                       fm::matrix_view<float>(ref.data(), tokens, rows));
    CHECK(rel_error(pick(got, tokens, ys, 0, rows), ref) < kTolerance);
    CHECK(all_nan(got, static_cast<std::size_t>(rows), static_cast<std::size_t>(ys)));  // columns past the rows untouched

    // Grouped (wo_a): 3 groups of R rows, each reading its own 24 inputs of a 72-wide row. R = 5: a warp's
    // rows of a token tile would straddle groups (the one-row-per-warp kernel); R = 8: they do not.
    for (index_t R : {index_t{5}, index_t{8}}) {
      CAPTURE(R);
      index_t const G = 3, gin = 24;
      auto wg = fm::test::normal(static_cast<std::size_t>(G * R * gin), rng, inv_sqrt(gin));
      auto xg = fm::test::normal(static_cast<std::size_t>(tokens * G * gin), rng);
      auto dwg = upload(stored<T>(wg));
      auto dxg = upload(xg);
      auto dyg = poisoned(static_cast<std::size_t>(tokens * G * R));
      require_ok(vc::linear<T>({dwg.data(), G * R, gin, dxg.data(), G * gin, tokens, R, gin, dyg.data(), G * R, nullptr}));
      wait_device();
      auto wgs = seen<T>(wg);
      std::vector<float> refg;
      for (index_t t = 0; t < tokens; ++t)
        for (index_t r = 0; r < G * R; ++r)
          refg.push_back(static_cast<float>(v4::detail::dot(&wgs[static_cast<std::size_t>(r * gin)],
                                                            &xg[static_cast<std::size_t>(t * G * gin + (r / R) * gin)], gin)));
      CHECK(rel_error(download(dyg), refg) < kTolerance);
    }
  }
}

TEMPLATE_TEST_CASE("linear streams more rows than the device holds warps, with prefetch and overlap", "[gpu][deepseek_v4][kernels]",
                   float, fm::bfloat16) {
  using T = TestType;
  CAPTURE(storage_name<T>());
  std::mt19937 rng(19);
  index_t const rows = 40000, cols = 72;  // more row groups than resident blocks: every warp takes several rows
  auto w = fm::test::normal(static_cast<std::size_t>(rows * cols), rng, inv_sqrt(cols));
  auto dw = upload(stored<T>(w));
  auto ws = seen<T>(w);
  fm::cuda::Stream stream;
  for (index_t tokens : {1, 9}) {
    CAPTURE(tokens);
    auto x = fm::test::normal(static_cast<std::size_t>(tokens * cols), rng);
    auto dx = upload(x);
    auto dy = poisoned(static_cast<std::size_t>(tokens * rows));
    wait_device();  // the uploads ran on the legacy stream
    require_ok(vc::linear<T>({dw.data(), rows, cols, dx.data(), cols, tokens, 0, 0, dy.data(), rows, stream, /*overlap=*/true,
                              vc::linear_resident_blocks<T>(tokens)}));
    stream.synchronize();
    std::vector<float> ref(static_cast<std::size_t>(tokens * rows));
    v4::detail::linear(fm::matrix_view<float const>(x.data(), tokens, cols), fm::matrix_view<float const>(ws.data(), rows, cols),
                       fm::matrix_view<float>(ref.data(), tokens, rows));
    CHECK(rel_error(download(dy), ref) < kTolerance);
  }
}

TEST_CASE("norm_rope equals rms_norm and Rope::apply", "[gpu][deepseek_v4][kernels]") {
  std::mt19937 rng(12);
  index_t const tokens = 5, pos0 = 123;
  v4::RopeParameters yarn;
  yarn.theta = 40000, yarn.yarn = true, yarn.factor = 4, yarn.original_max_position_embeddings = 2048;
  v4::Rope const rope(yarn, 16);
  auto inv = upload(std::vector<float>(rope.inv_freq().begin(), rope.inv_freq().end()));
  auto dpos = device_position(pos0);
  // Job 0: weighted norm of 40 channels at offset 3 of 50-wide rows; job 1: 3 heads of 32, unweighted norm
  // and RoPE; job 2: 2 heads of 16, RoPE only, in place.
  auto a = fm::test::normal(static_cast<std::size_t>(tokens * 50), rng, 3.0f);
  auto wa = uniform(40, rng, 0.5f, 1.5f);
  auto b = fm::test::normal(static_cast<std::size_t>(tokens * 96), rng);
  auto c = fm::test::normal(static_cast<std::size_t>(tokens * 32), rng);
  auto da = upload(a), dwa = upload(wa), db = upload(b), dc = upload(c);
  auto oa = poisoned(static_cast<std::size_t>(tokens * 40)), ob = poisoned(static_cast<std::size_t>(tokens * 96));
  vc::NormRopeArguments nr;
  nr.jobs[0] = {da.data() + 3, oa.data(), 50, 40, 40, 1, dwa.data(), true, false};
  nr.jobs[1] = {db.data(), ob.data(), 96, 96, 32, 3, nullptr, true, true};
  nr.jobs[2] = {dc.data(), dc.data(), 32, 32, 16, 2, nullptr, false, true};
  nr.count = 3;
  nr.tokens = tokens;
  nr.position = dpos.data();
  nr.rope = device_rope(inv);
  nr.eps = 1e-6;
  require_ok(vc::norm_rope(nr));
  wait_device();
  std::vector<float> ra, rb = b, rc = c;
  for (index_t t = 0; t < tokens; ++t) {
    std::vector<float> row(a.begin() + t * 50 + 3, a.begin() + t * 50 + 43);
    v4::detail::rms_norm(row, wa, 1e-6);
    ra.insert(ra.end(), row.begin(), row.end());
    for (index_t h = 0; h < 3; ++h) {
      std::span<float> head(rb.data() + t * 96 + h * 32, 32);
      v4::detail::rms_norm(head, {}, 1e-6);
      rope.apply(head, pos0 + t);
    }
    rope.apply_heads(std::span<float>(rc.data() + t * 32, 32), 16, pos0 + t);
  }
  CHECK(rel_error(download(oa), ra) < kTolerance);
  CHECK(rel_error(download(ob), rb) < kTolerance);
  CHECK(rel_error(download(dc), rc) < kTolerance);

  // A batched decode step: token t belongs to sequence t and sits at its own position.
  std::vector<std::int64_t> const positions{7, 300, 41, 1000, 5};
  auto dpositions = fm::test::upload(positions, "positions");
  auto ob2 = poisoned(static_cast<std::size_t>(tokens * 96));
  nr.jobs[0] = {db.data(), ob2.data(), 96, 96, 32, 3, nullptr, true, true};
  nr.count = 1;
  nr.position = dpositions.data();
  nr.batch = true;
  require_ok(vc::norm_rope(nr));
  wait_device();
  std::vector<float> rb2 = b;
  for (index_t t = 0; t < tokens; ++t)
    for (index_t h = 0; h < 3; ++h) {
      std::span<float> head(rb2.data() + t * 96 + h * 32, 32);
      v4::detail::rms_norm(head, {}, 1e-6);
      rope.apply(head, positions[static_cast<std::size_t>(t)]);
    }
  CHECK(rel_error(download(ob2), rb2) < kTolerance);
}

TEST_CASE("mHC kernels equal hyper_mix, hyper_collapse, hyper_expand and hyper_head", "[gpu][deepseek_v4][kernels]") {
  std::mt19937 rng(13);
  for (int hc : {2, 4}) {
    CAPTURE(hc);
    v4::Config c;
    c.hc_mult = hc;
    c.hc_sinkhorn_iters = hc == 2 ? 20 : 7;
    index_t const D = 96, tokens = 3, mix = (2 + hc) * hc, ms = vc::mix_state_size(hc);  // D: one full and one half block
    auto site = [&](index_t rows, index_t scales) {
      return v4::HyperConnectionWeights{tensor(fm::test::normal(static_cast<std::size_t>(rows * hc * D), rng, inv_sqrt(hc * D)), {rows, hc * D}),
                                        tensor(fm::test::normal(static_cast<std::size_t>(rows), rng, 0.5f), {rows}),
                                        tensor(uniform(static_cast<std::size_t>(scales), rng, 0.5f, 1.5f), {scales})};
    };
    v4::HyperConnectionWeights const prev = site(mix, 3), now = site(mix, 3), head = site(hc, 1);
    auto norm = uniform(static_cast<std::size_t>(D), rng, 0.5f, 1.5f);
    auto x = fm::test::normal(static_cast<std::size_t>(tokens * hc * D), rng);
    auto y = fm::test::normal(static_cast<std::size_t>(tokens * D), rng);

    // Reference: the previous site's mix places y, then this site mixes and collapses; then the head.
    std::vector<float> state, ref_x = x, ref_u, ref_h;
    for (index_t t = 0; t < tokens; ++t) {
      std::span<float> xt(ref_x.data() + t * hc * D, static_cast<std::size_t>(hc * D));
      v4::HyperMix const before = v4::hyper_mix(prev, c, xt);
      for (auto const* part : {&before.pre, &before.post, &before.comb}) state.insert(state.end(), part->begin(), part->end());
      v4::hyper_expand(before, std::span<float const>(y.data() + t * D, static_cast<std::size_t>(D)), xt);
      v4::HyperMix const m = v4::hyper_mix(now, c, xt);
      std::vector<float> u(static_cast<std::size_t>(D));
      v4::hyper_collapse(m.pre, xt, u);
      v4::detail::rms_norm(u, norm, c.rms_norm_eps);
      ref_u.insert(ref_u.end(), u.begin(), u.end());
      std::vector<float> h(static_cast<std::size_t>(D));
      v4::hyper_head(head, c, xt, h);
      v4::detail::rms_norm(h, norm, c.rms_norm_eps);
      ref_h.insert(ref_h.end(), h.begin(), h.end());
    }
    std::vector<float> ref_state;
    for (index_t t = 0; t < tokens; ++t) {
      v4::HyperMix const m = v4::hyper_mix(now, c, std::span<float const>(ref_x.data() + t * hc * D, static_cast<std::size_t>(hc * D)));
      for (auto const* part : {&m.pre, &m.post, &m.comb}) ref_state.insert(ref_state.end(), part->begin(), part->end());
    }

    auto dx = upload(x), dy = upload(y), dstate = upload(state), dnorm = upload(norm);
    auto fn = upload(values(now.fn)), base = upload(values(now.base)), scale = upload(values(now.scale));
    auto hfn = upload(values(head.fn)), hbase = upload(values(head.base)), hscale = upload(values(head.scale));
    auto partial = poisoned(static_cast<std::size_t>(tokens * vc::hyper_blocks(D) * (mix + 1)));
    auto u = poisoned(static_cast<std::size_t>(tokens * D)), h = poisoned(static_cast<std::size_t>(tokens * D));
    require_ok(vc::hyper_partial({dx.data(), tokens, D, hc, fn.data(), static_cast<int>(mix), dy.data(), dstate.data(), partial.data()}));
    require_ok(vc::hyper_finish({dx.data(), partial.data(), 0, tokens, D, hc, false, base.data(), scale.data(),
                                 static_cast<int>(c.hc_sinkhorn_iters), c.rms_norm_eps, c.hc_eps, dnorm.data(), dstate.data(), u.data()}));
    wait_device();
    CHECK(rel_error(download(dx), ref_x) < kTolerance);
    CHECK(rel_error(download(u), ref_u) < kTolerance);
    auto got_state = download(dstate);
    CHECK(got_state.size() == static_cast<std::size_t>(tokens * ms));
    CHECK(rel_error(got_state, ref_state) < kTolerance);

    // Head: pre only, no placement; the two tokens after the first (as the decoder skips tokens without logits).
    require_ok(vc::hyper_partial({dx.data() + hc * D, tokens - 1, D, hc, hfn.data(), hc, nullptr, nullptr, partial.data()}));
    require_ok(vc::hyper_finish({dx.data() + hc * D, partial.data(), 0, tokens - 1, D, hc, true, hbase.data(), hscale.data(), 0,
                                 c.rms_norm_eps, c.hc_eps, dnorm.data(), nullptr, h.data()}));
    wait_device();
    auto got_h = download(h);
    CHECK(rel_error(std::vector<float>(got_h.begin(), got_h.begin() + (tokens - 1) * D),
                    std::vector<float>(ref_h.begin() + D, ref_h.end())) < kTolerance);
  }
}

TEMPLATE_TEST_CASE("embed_streams copies the embedding into every stream", "[gpu][deepseek_v4][kernels]", float, fm::bfloat16) {
  using T = TestType;
  std::mt19937 rng(14);
  index_t const V = 10, D = 40, hc = 3;
  auto table = fm::test::normal(static_cast<std::size_t>(V * D), rng);
  std::vector<std::int32_t> ids{3, 7, 0, 9};
  auto dt = upload(stored<T>(table));
  auto di = upload(ids);
  auto dx = poisoned(ids.size() * hc * D);
  require_ok(vc::embed_streams<T>({dt.data(), di.data(), dx.data(), static_cast<index_t>(ids.size()), D, hc}));
  wait_device();
  auto ts = seen<T>(table);
  std::vector<float> ref;
  for (auto id : ids)
    for (index_t i = 0; i < hc; ++i) ref.insert(ref.end(), ts.begin() + id * D, ts.begin() + (id + 1) * D);
  CHECK(download(dx) == ref);
}

TEMPLATE_TEST_CASE("kv_step equals CompressorState::push and keeps the window ring", "[gpu][deepseek_v4][kernels]", float, fm::bfloat16) {
  using T = TestType;
  CAPTURE(storage_name<T>());
  std::mt19937 rng(15);
  int const tokens = 37, W = 8, dim = 32;
  v4::Rope const rope(v4::RopeParameters{.theta = 160000.0}, 8);
  auto inv = upload(std::vector<float>(rope.inv_freq().begin(), rope.inv_freq().end()));
  auto dpos = device_position(0);

  // Compressor 0: overlapping (CSA) ratio 4, width 32. Compressor 1: plain (HCA) ratio 8, width 16.
  struct Side {
    int ratio, width;
    bool overlap;
    v4::CompressorWeights w;
    std::vector<float> values, gates;
    DeviceBuffer<float> dvalues, dgates, dape, dnorm;
  };
  std::vector<Side> sides;
  for (auto [ratio, width, overlap] : {std::tuple{4, 32, true}, std::tuple{8, 16, false}}) {
    Side s{ratio, width, overlap, {}, {}, {}, {}, {}, {}, {}};
    index_t const cn = (overlap ? 2 : 1) * width;
    s.w.ape = tensor(fm::test::normal(static_cast<std::size_t>(ratio * cn), rng), {ratio, cn});
    s.w.norm = tensor(uniform(static_cast<std::size_t>(width), rng, 0.5f, 1.5f), {width});
    s.w.ratio = ratio, s.w.width = width, s.w.overlap = overlap;
    s.values = fm::test::normal(static_cast<std::size_t>(tokens * cn), rng);
    s.gates = fm::test::normal(static_cast<std::size_t>(tokens * cn), rng);
    s.dvalues = upload(s.values), s.dgates = upload(s.gates);
    s.dape = upload(values(s.w.ape)), s.dnorm = upload(values(s.w.norm));
    sides.push_back(std::move(s));
  }
  std::vector<vc::DeviceCompressorState<T>> states;
  for (Side const& s : sides) {
    states.emplace_back(s.ratio, s.width, s.overlap, 64, 1, "test compressor");
    states.back().reset(0, nullptr);
    states.back().pool.fill_bytes(0xff);  // NaN in both storage types: every emitted row must be written
  }
  auto latent = fm::test::normal(static_cast<std::size_t>(tokens * dim), rng);
  auto dlatent = upload(latent);
  DeviceBuffer<T> window(static_cast<std::size_t>(W * dim));

  for (int t = 0; t < tokens; ++t) {
    vc::KvStepArguments<T> a;
    a.position = dpos.data();
    a.token = t;
    a.latent = dlatent.data();
    a.latent_stride = dim;
    a.window = window.data();
    a.window_rows = W;
    a.dim = dim;
    for (std::size_t i = 0; i < sides.size(); ++i) {
      index_t const cn = (sides[i].overlap ? 2 : 1) * sides[i].width;
      a.compressors[a.count++] = states[i].step(sides[i].dape.data(), sides[i].dnorm.data(), sides[i].dvalues.data(),
                                                sides[i].dgates.data(), cn);
    }
    a.rope = device_rope(inv);
    require_ok(vc::kv_step(a));
  }
  wait_device();

  for (std::size_t i = 0; i < sides.size(); ++i) {
    Side const& s = sides[i];
    CAPTURE(s.ratio, s.width, s.overlap);
    std::size_t const cn = static_cast<std::size_t>((s.overlap ? 2 : 1) * s.width);
    v4::CompressorState ref(s.ratio, s.width, s.overlap);
    for (int t = 0; t < tokens; ++t)
      ref.push(s.w, rope, 1e-6, std::span<float const>(s.values.data() + t * cn, cn), std::span<float const>(s.gates.data() + t * cn, cn));
    REQUIRE(ref.count() == tokens / s.ratio);
    auto e = ref.entries();
    std::vector<float> want(e.data_handle(), e.data_handle() + ref.count() * s.width);
    std::vector<float> got = widen(download(states[i].pool));
    got.resize(want.size());
    CHECK(rel_error(got, seen<T>(want)) < (std::is_same_v<T, float> ? kTolerance : 4e-3));
  }
  std::vector<float> const ring = widen(download(window)), latent_seen = seen<T>(latent);
  for (int p = tokens - W; p < tokens; ++p) {
    INFO("position " << p);
    CHECK(std::vector<float>(ring.begin() + (p % W) * dim, ring.begin() + (p % W + 1) * dim) ==
          std::vector<float>(latent_seen.begin() + p * dim, latent_seen.begin() + (p + 1) * dim));
  }
}

TEMPLATE_TEST_CASE("index_scores equals indexer::index_scores on the causal entries", "[gpu][deepseek_v4][kernels]", float,
                   fm::bfloat16) {
  using T = TestType;
  CAPTURE(storage_name<T>());
  std::mt19937 rng(16);
  for (auto [heads, dim] : {std::pair{16, 32}, std::pair{4, 16}, std::pair{64, 128}}) {
    CAPTURE(heads, dim);
    index_t const capacity = 100, pos0 = 300, token = 7, count = (pos0 + token + 1) / 4;  // 77 causal entries
    auto q = fm::test::normal(static_cast<std::size_t>(heads * dim), rng);
    auto w = fm::test::normal(static_cast<std::size_t>(heads), rng);
    auto keys = fm::test::normal(static_cast<std::size_t>(capacity * dim), rng);
    float const fold = inv_sqrt(heads * dim);
    auto dq = upload(q), dw = upload(w);
    auto dk = upload(stored<T>(keys));
    auto dpos = device_position(pos0);
    auto scores = poisoned(static_cast<std::size_t>(capacity));
    require_ok(vc::index_scores<T>({dq.data(), dw.data(), fold, dk.data(), capacity, heads, dim, 4, dpos.data(), token, scores.data()}));
    wait_device();
    auto got = download(scores);
    auto ks = seen<T>(keys);
    std::vector<float> wf(w), ref(static_cast<std::size_t>(count));
    for (float& v : wf) v *= fold;
    fm::indexer::index_scores(fm::matrix_view<float const>(q.data(), heads, dim), fm::vector_view<float const>(wf.data(), heads),
                              fm::matrix_view<float const>(ks.data(), count, dim), ref);
    CHECK(rel_error(std::vector<float>(got.begin(), got.begin() + count), ref) < kTolerance);
    CHECK(all_nan(got, static_cast<std::size_t>(count), got.size()));  // non-causal entries untouched

    // A paged controller's reserve: every row scored, −∞ where it holds nothing readable.
    std::vector<std::int32_t> rows(static_cast<std::size_t>(capacity));
    for (index_t r = 0; r < capacity; ++r) rows[static_cast<std::size_t>(r)] = r % 3 == 1 ? -1 : static_cast<std::int32_t>(r);
    auto drows = fm::test::upload(rows, "rows");
    auto paged = poisoned(static_cast<std::size_t>(capacity));
    vc::IndexScoreArguments<T> a{dq.data(), dw.data(), fold, dk.data(), capacity, heads, dim, 4, dpos.data(), token, paged.data()};
    a.rows = drows.data();
    require_ok(vc::index_scores<T>(a));
    wait_device();
    auto got_paged = download(paged);
    std::vector<float> all(static_cast<std::size_t>(capacity));
    fm::indexer::index_scores(fm::matrix_view<float const>(q.data(), heads, dim), fm::vector_view<float const>(wf.data(), heads),
                              fm::matrix_view<float const>(ks.data(), capacity, dim), all);
    std::vector<float> want, have;
    for (index_t r = 0; r < capacity; ++r) {
      if (rows[static_cast<std::size_t>(r)] < 0) {
        CHECK(got_paged[static_cast<std::size_t>(r)] == -std::numeric_limits<float>::infinity());
      } else {
        want.push_back(all[static_cast<std::size_t>(r)]);
        have.push_back(got_paged[static_cast<std::size_t>(r)]);
      }
    }
    CHECK(rel_error(have, want) < kTolerance);
  }
}

TEMPLATE_TEST_CASE("attention equals SparseDecodeReference followed by the inverse RoPE", "[gpu][deepseek_v4][kernels]", float,
                   fm::bfloat16) {
  using T = TestType;
  CAPTURE(storage_name<T>());
  std::mt19937 rng(17);
  struct Case {
    int heads, dim, rope_dim;
    vc::PoolRows mode;
    index_t pos;
    int splits;
  };
  int const W = 8, R = 60, slots = 12;
  for (Case const& k : {Case{6, 64, 16, vc::PoolRows::none, 5, 1}, Case{6, 64, 16, vc::PoolRows::causal, 150, 3},
                        Case{3, 512, 64, vc::PoolRows::selected, 200, 7}, Case{5, 32, 8, vc::PoolRows::selected, 3, 2},
                        Case{4, 32, 8, vc::PoolRows::causal, 239, 64},
                        // the fixtures' shapes (4 heads of 32): a first token, and the decoder's split counts
                        Case{4, 32, 8, vc::PoolRows::none, 0, 1}, Case{4, 32, 8, vc::PoolRows::causal, 17, 2}}) {
    CAPTURE(k.heads, k.dim, static_cast<int>(k.mode), k.pos, k.splits);
    v4::Rope const rope(v4::RopeParameters{.theta = 10000.0}, k.rope_dim);
    auto inv = upload(std::vector<float>(rope.inv_freq().begin(), rope.inv_freq().end()));
    auto q = fm::test::normal(static_cast<std::size_t>(k.heads * k.dim), rng);
    auto window = fm::test::normal(static_cast<std::size_t>(W * k.dim), rng);
    auto pool = fm::test::normal(static_cast<std::size_t>(R * k.dim), rng);
    auto sink = fm::test::normal(static_cast<std::size_t>(k.heads), rng);
    std::vector<std::int32_t> selected(static_cast<std::size_t>(slots));
    std::uniform_int_distribution<int> row(0, R - 1);
    for (int i = 0; i < slots; ++i) selected[static_cast<std::size_t>(i)] = i % 4 == 3 ? -1 : row(rng);
    float const scale = inv_sqrt(k.dim);

    index_t const token = 2;
    auto dq = upload(q), dsink = upload(sink);
    auto dwin = upload(stored<T>(window)), dpool = upload(stored<T>(pool));
    auto dsel = upload(selected);
    auto dpos = device_position(k.pos - token);
    auto po = poisoned(static_cast<std::size_t>(k.heads * k.splits * k.dim)), pml = poisoned(static_cast<std::size_t>(k.heads * k.splits * 2));
    auto out = poisoned(static_cast<std::size_t>(k.heads * k.dim));
    vc::AttentionArguments<T> a;
    a.q = dq.data();
    a.window = dwin.data();
    a.window_rows = W;
    a.pool = dpool.data();
    a.pool_rows = R;
    a.mode = k.mode;
    a.ratio = 4;
    a.selected = dsel.data();
    a.slots = slots;
    a.sink = dsink.data();
    a.scale = scale;
    a.heads = k.heads;
    a.dim = k.dim;
    a.position = dpos.data();
    a.token = token;
    a.splits = k.splits;
    a.partial_o = po.data();
    a.partial_ml = pml.data();
    a.rope = device_rope(inv);
    a.out = out.data();
    require_ok(vc::attention<T>(a));
    wait_device();

    auto ws = seen<T>(window), ps = seen<T>(pool);
    std::int32_t const window_len = static_cast<std::int32_t>(std::min<index_t>(k.pos + 1, W));
    std::vector<std::int32_t> rows;
    if (k.mode == vc::PoolRows::causal) {
      rows.resize(static_cast<std::size_t>(std::min<index_t>((k.pos + 1) / 4, R)));
      std::iota(rows.begin(), rows.end(), 0);
    } else if (k.mode == vc::PoolRows::selected) {
      rows = selected;
    }
    std::vector<float> ref(static_cast<std::size_t>(k.heads * k.dim));
    fm::attention::SparseDecodeReference::Arguments const r{
        .q = fm::view<float const, 3>(q.data(), 1, k.heads, k.dim),
        .window = fm::view<float const, 3>(ws.data(), 1, W, k.dim),
        .window_len = fm::vector_view<std::int32_t const>(&window_len, 1),
        .pool = fm::matrix_view<float const>(ps.data(), R, k.dim),
        .selected = fm::matrix_view<std::int32_t const>(rows.data(), 1, static_cast<index_t>(rows.size())),
        .sink = fm::vector_view<float const>(sink.data(), k.heads),
        .out = fm::view<float, 3>(ref.data(), 1, k.heads, k.dim),
        .scale = scale,
    };
    require_ok(fm::attention::SparseDecodeReference{}.run(r));
    rope.apply_heads(ref, k.dim, k.pos, /*inverse=*/true);
    CHECK(rel_error(download(out), ref) < kTolerance);
  }
}

TEMPLATE_TEST_CASE("route and experts equal route() and moe_forward()", "[gpu][deepseek_v4][kernels]", float, fm::bfloat16) {
  using T = TestType;
  CAPTURE(storage_name<T>());
  std::mt19937 rng(18);
  v4::Config c;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 3;
  c.routed_scaling_factor = 2.5;
  c.swiglu_limit = 1.0;  // small, so that both clamps cut
  c.vocab_size = 20;
  index_t const E = 8, k = 3, D = 64, I = 40;
  std::vector<std::int32_t> ids{5, 0, 19, 7};
  index_t const tokens = static_cast<index_t>(ids.size());
  auto matrix = [&](index_t rows, index_t cols) {
    return tensor(seen<T>(fm::test::normal(static_cast<std::size_t>(rows * cols), rng, inv_sqrt(cols))), {rows, cols});
  };
  for (bool hash : {false, true}) {
    CAPTURE(hash);
    v4::MoeWeights m;
    m.gate = matrix(E, D);
    if (hash) {
      m.tid2eid = v4::IdTable{fm::HostBuffer<std::int32_t>(static_cast<std::size_t>(c.vocab_size * k)), c.vocab_size, k};
      std::vector<std::int32_t> experts(static_cast<std::size_t>(E));
      std::iota(experts.begin(), experts.end(), 0);
      for (index_t v = 0; v < c.vocab_size; ++v) {
        std::shuffle(experts.begin(), experts.end(), rng);
        std::copy_n(experts.begin(), k, m.tid2eid.data.begin() + v * k);
      }
    } else {
      m.bias = tensor(fm::test::normal(static_cast<std::size_t>(E), rng, 0.3f), {E});
    }
    for (index_t e = 0; e <= E; ++e) {
      v4::ExpertWeights x{matrix(I, D), matrix(I, D), matrix(D, I)};
      if (e < E) m.experts.push_back(std::move(x));
      else m.shared = std::move(x);
    }
    auto x = fm::test::normal(static_cast<std::size_t>(tokens * D), rng);

    auto dgate = vc::detail::upload<T>(m.gate, "gate");
    auto dbias = hash ? DeviceBuffer<float>() : vc::detail::upload<float>(m.bias, "bias");
    DeviceBuffer<std::int32_t> dtid(m.tid2eid.data.size());
    if (hash) dtid.copy_from(m.tid2eid.data.span());
    auto w1 = vc::detail::upload_experts<T>(m, &v4::ExpertWeights::w1, "w1");
    auto w3 = vc::detail::upload_experts<T>(m, &v4::ExpertWeights::w3, "w3");
    auto w2 = vc::detail::upload_experts<T>(m, &v4::ExpertWeights::w2, "w2");
    auto dx = upload(x);
    auto dids = upload(ids);
    auto logits = poisoned(static_cast<std::size_t>(tokens * E));
    auto weights = poisoned(static_cast<std::size_t>(tokens * k)), hidden = poisoned(static_cast<std::size_t>(tokens * (k + 1) * I));
    auto y = poisoned(static_cast<std::size_t>(tokens * D));
    DeviceBuffer<std::int32_t> chosen(static_cast<std::size_t>(tokens * k));
    chosen.fill_bytes(0x7f);
    require_ok(vc::linear<T>({dgate.data(), E, D, dx.data(), D, tokens, 0, 0, logits.data(), E, nullptr}));
    require_ok(vc::route({logits.data(), tokens, static_cast<int>(E), static_cast<int>(k), hash ? nullptr : dbias.data(),
                          hash ? dtid.data() : nullptr, dids.data(), c.scoring_func, static_cast<float>(c.routed_scaling_factor),
                          chosen.data(), weights.data()}));
    require_ok(vc::experts<T>({w1.data(), w3.data(), w2.data(), D, I, static_cast<int>(E), static_cast<int>(k), dx.data(), tokens,
                               chosen.data(), weights.data(), static_cast<float>(c.swiglu_limit), hidden.data(), y.data()}));
    wait_device();
    auto got_chosen = download(chosen);
    auto got_weights = download(weights);
    std::vector<float> ref_weights, ref_y;
    for (index_t t = 0; t < tokens; ++t) {
      std::span<float const> xt(x.data() + t * D, static_cast<std::size_t>(D));
      v4::Routing const r = v4::route(m, c, xt, ids[static_cast<std::size_t>(t)]);
      INFO("token " << t);
      CHECK(std::vector<std::int32_t>(got_chosen.begin() + t * k, got_chosen.begin() + (t + 1) * k) == r.experts);
      ref_weights.insert(ref_weights.end(), r.weights.begin(), r.weights.end());
      std::vector<float> out(static_cast<std::size_t>(D));
      v4::moe_forward(m, c, xt, ids[static_cast<std::size_t>(t)], out);
      ref_y.insert(ref_y.end(), out.begin(), out.end());
    }
    CHECK(rel_error(got_weights, ref_weights) < kTolerance);
    CHECK(rel_error(download(y), ref_y) < kTolerance);
  }
}
