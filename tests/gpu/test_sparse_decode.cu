// Sparse decode attention on the GPU against SparseDecodeReference (float64 accumulation): bf16 rows and
// packed fp8 rows, bf16 and float outputs, one split and many, ragged windows, unused slots; both kernels
// (wgmma, the default, and mma.sync).
#include "gpu_test.cuh"

#include <flashmemory/attention/cuda/packed_rows.cuh>
#include <flashmemory/attention/cuda/sparse_decode.cuh>
#include <flashmemory/attention/reference.hpp>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/layout/csa_entry.hpp>

#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

using namespace flashmemory;
using flashmemory::cuda::DeviceBuffer;
using attention::cuda::Bf16Rows;
using attention::cuda::PackedRows;
using attention::cuda::SparseDecode;

namespace {

constexpr index_t kD = 512;

struct Case {
  index_t batch, heads, window, slots, pool_rows;
  int splits = 0;     // 0: the kernel's own choice
  bool wgmma = true;  // which kernel
};

// Rows as the kernel stores them, and the floats the reference must see.
template <class Rows>
struct RowSet {
  std::vector<std::conditional_t<Rows::kPacked, std::byte, bfloat16>> stored;
  std::vector<float> values;
};

template <class Rows>
RowSet<Rows> make_rows(index_t count, std::mt19937& rng) {
  std::vector<float> x = test::normal(static_cast<std::size_t>(count * kD), rng);
  RowSet<Rows> r;
  if constexpr (Rows::kPacked) {
    layout::CsaEntryPacked const l;
    r.stored.resize(static_cast<std::size_t>(count * l.record_bytes()));
    r.values.resize(x.size());
    for (index_t i = 0; i < count; ++i) {
      layout::encode_record(l, x.data() + i * kD, r.stored.data() + i * l.record_bytes());
      layout::decode_record(l, r.stored.data() + i * l.record_bytes(), r.values.data() + i * kD);
    }
  } else {
    r.stored = test::to_bf16(x);
    r.values = test::to_float(r.stored);
  }
  return r;
}

struct Outcome {
  double error;
  std::vector<float> out;
};

template <class Rows, class Output>
Outcome run_case(Case const& c, unsigned seed) {
  std::mt19937 rng(seed);
  index_t const B = c.batch, H = c.heads, W = c.window, K = c.slots, R = c.pool_rows;
  // q scaled by 2: logits of standard deviation ~2, a softmax far from flat.
  std::vector<bfloat16> q = test::to_bf16(test::normal(static_cast<std::size_t>(B * H * kD), rng, 2.0f));
  std::vector<float> qf = test::to_float(q);
  RowSet<Rows> window = make_rows<Rows>(B * W, rng), pool = make_rows<Rows>(R, rng);
  std::vector<std::int32_t> window_len(static_cast<std::size_t>(B)), selected(static_cast<std::size_t>(B * K));
  std::uniform_int_distribution<std::int32_t> row(0, static_cast<std::int32_t>(R - 1)), len(0, static_cast<std::int32_t>(W));
  std::uniform_real_distribution<float> u(0, 1);
  for (index_t b = 0; b < B; ++b) window_len[b] = b == 0 ? static_cast<std::int32_t>(W) : b == 1 ? 0 : len(rng);
  for (auto& s : selected) s = u(rng) < 0.1f ? -1 : row(rng);
  std::vector<float> sink = test::normal(static_cast<std::size_t>(H), rng);
  float const scale = 1.0f / std::sqrt(float(kD));

  // Reference.
  std::vector<float> ref(static_cast<std::size_t>(B * H * kD));
  attention::SparseDecodeReference::Arguments ra{
      view<float const, 3>(qf.data(), B, H, kD),         view<float const, 3>(window.values.data(), B, W, kD),
      vector_view<std::int32_t const>(window_len.data(), B), matrix_view<float const>(pool.values.data(), R, kD),
      matrix_view<std::int32_t const>(selected.data(), B, K), vector_view<float const>(sink.data(), H),
      view<float, 3>(ref.data(), B, H, kD),               scale};
  REQUIRE(attention::SparseDecodeReference{}.run(ra).ok());

  // GPU.
  auto dq = test::upload(q);
  auto dwindow = test::upload(window.stored), dpool = test::upload(pool.stored);
  auto dlen = test::upload(window_len), dsel = test::upload(selected);
  auto dsink = test::upload(sink);
  DeviceBuffer<Output> dout(ref.size());
  dout.fill_bytes(0xff);  // NaN in bf16 and float: every element must be written
  constexpr index_t kExtent = Rows::kRowExtent;
  using Arguments = typename SparseDecode<Rows, Output>::Arguments;
  Arguments a{
      view<bfloat16 const, 3>(dq.data(), B, H, kD),
      decltype(Arguments::window)(dwindow.data(), B, W, kExtent),
      vector_view<std::int32_t const>(dlen.data(), B),
      decltype(Arguments::pool)(dpool.data(), R, kExtent),
      matrix_view<std::int32_t const>(dsel.data(), B, K),
      vector_view<float const>(dsink.data(), H),
      view<Output, 3>(dout.data(), B, H, kD),
      scale};
  typename SparseDecode<Rows, Output>::Options opt{c.splits, c.wgmma};
  SparseDecode<Rows, Output> probe({}, opt);
  DeviceBuffer<std::byte> workspace(probe.workspace_size(a));
  SparseDecode<Rows, Output> kernel(workspace.span(), opt);
  REQUIRE(kernel.can_implement(a).ok());
  Status st = kernel.run(a);
  INFO(st.message);
  REQUIRE(st.ok());
  FLASHMEMORY_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> got;
  if constexpr (std::is_same_v<Output, float>) got = test::download(dout);
  else got = test::to_float(test::download(dout));
  return {test::rel_error(got, ref), got};
}

// bf16 output adds its own rounding (2^-9) to the bf16 P of the kernel.
template <class Output>
constexpr double kTolerance = std::is_same_v<Output, float> ? 4e-3 : 8e-3;

}  // namespace

TEST_CASE("sparse decode (bf16 rows) matches the reference", "[gpu][attention]") {
  for (Case c : {Case{3, 64, 128, 300, 1000}, Case{1, 64, 128, 512, 4096}, Case{5, 128, 64, 70, 333},
                 Case{2, 64, 0, 200, 500}}) {
    for (bool wgmma : {true, false})
      for (int splits : {0, 1, 3}) {
        c.splits = splits;
        c.wgmma = wgmma;
        INFO("B " << c.batch << " H " << c.heads << " W " << c.window << " K " << c.slots << " splits " << splits
                  << " wgmma " << wgmma);
        auto r = run_case<Bf16Rows, bfloat16>(c, 1000u + static_cast<unsigned>(splits));
        CHECK(r.error < kTolerance<bfloat16>);
        auto f = run_case<Bf16Rows, float>(c, 2000u + static_cast<unsigned>(splits));
        CHECK(f.error < kTolerance<float>);
      }
  }
}

TEST_CASE("sparse decode merges more splits than the combine kernel has threads", "[gpu][attention]") {
  // 315 tiles in 158 splits of 2: each combine thread reduces two splits' statistics.
  Case const c{2, 64, 128, 20'000, 30'000, 300};
  CHECK(run_case<Bf16Rows, float>(c, 5000u).error < kTolerance<float>);
}

TEST_CASE("sparse decode (packed fp8 rows) matches the reference on the decoded rows", "[gpu][attention]") {
  for (Case c : {Case{3, 64, 128, 300, 1000}, Case{1, 64, 128, 2048, 8192}, Case{4, 128, 32, 100, 257}}) {
    for (bool wgmma : {true, false})
      for (int splits : {0, 1}) {
        c.splits = splits;
        c.wgmma = wgmma;
        INFO("B " << c.batch << " H " << c.heads << " W " << c.window << " K " << c.slots << " splits " << splits
                  << " wgmma " << wgmma);
        CHECK(run_case<PackedRows, bfloat16>(c, 3000u + static_cast<unsigned>(splits)).error < kTolerance<bfloat16>);
        CHECK(run_case<PackedRows, float>(c, 4000u + static_cast<unsigned>(splits)).error < kTolerance<float>);
      }
  }
}

// Small enough for compute-sanitizer's racecheck and memcheck (tools/gpu_check.sh runs the [small] cases).
TEST_CASE("sparse decode, small shapes: partial tiles, an empty token, one split and many", "[gpu][attention][small]") {
  for (bool wgmma : {true, false})
    for (int splits : {0, 1, 2}) {
      INFO("splits " << splits << " wgmma " << wgmma);
      CHECK(run_case<Bf16Rows, bfloat16>({3, 64, 16, 90, 200, splits, wgmma}, 50u + static_cast<unsigned>(splits)).error <
            kTolerance<bfloat16>);
      CHECK(run_case<PackedRows, float>({2, 64, 8, 70, 100, splits, wgmma}, 60u + static_cast<unsigned>(splits)).error <
            kTolerance<float>);
    }
}

TEST_CASE("sparse decode: the wgmma and mma.sync kernels agree closely", "[gpu][attention]") {
  // Same inputs (same seed): both accumulate in fp32 from the same bf16 P, only the summation order differs.
  Case c{2, 64, 128, 700, 2000};
  auto w = run_case<Bf16Rows, float>(c, 88);
  c.wgmma = false;
  auto m = run_case<Bf16Rows, float>(c, 88);
  CHECK(w.error < kTolerance<float>);
  CHECK(test::rel_error(w.out, m.out) < 2e-3);
}

TEST_CASE("sparse decode is deterministic: the same inputs give the same bits", "[gpu][attention]") {
  Case const c{4, 64, 128, 1000, 3000};
  auto a = run_case<Bf16Rows, float>(c, 77), b = run_case<Bf16Rows, float>(c, 77);
  REQUIRE(a.out.size() == b.out.size());
  CHECK(std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(float)) == 0);
  CHECK(a.error < kTolerance<float>);
}

TEST_CASE("sparse decode rejects what it cannot serve, naming the problem", "[gpu][attention]") {
  using Kernel = SparseDecode<Bf16Rows, bfloat16>;
  DeviceBuffer<bfloat16> buf(1024 * 512);
  DeviceBuffer<std::int32_t> ints(512);
  DeviceBuffer<float> sink(64);
  Kernel kernel;
  Kernel::Arguments a{view<bfloat16 const, 3>(buf.data(), 1, 64, 256),
                      view<bfloat16 const, 3>(buf.data(), 1, 0, 256),
                      vector_view<std::int32_t const>(ints.data(), 1),
                      matrix_view<bfloat16 const>(buf.data(), 4, 256),
                      matrix_view<std::int32_t const>(ints.data(), 1, 4),
                      vector_view<float const>(sink.data(), 64),
                      view<bfloat16, 3>(buf.data(), 1, 64, 256),
                      0.1f};
  Status st = kernel.can_implement(a);
  CHECK(st.code == errc::unsupported);
  CHECK(st.message.find("head_dim 256") != std::string::npos);
  CHECK(kernel.run(a).code == errc::unsupported);

  // 512 slots in 4 splits need a workspace; none was given.
  Kernel::Arguments b{view<bfloat16 const, 3>(buf.data(), 1, 64, 512),
                      view<bfloat16 const, 3>(buf.data(), 1, 0, 512),
                      vector_view<std::int32_t const>(ints.data(), 1),
                      matrix_view<bfloat16 const>(buf.data(), 1024, 512),
                      matrix_view<std::int32_t const>(ints.data(), 1, 512),
                      vector_view<float const>(sink.data(), 64),
                      view<bfloat16, 3>(buf.data(), 1, 64, 512),
                      0.1f};
  Kernel split({}, {4});
  REQUIRE(split.plan(b).splits == 4);
  REQUIRE(split.workspace_size(b) > 0);
  Status ws = split.can_implement(b);
  CHECK(ws.code == errc::invalid_argument);
  CHECK(ws.message.find("workspace") != std::string::npos);
  CHECK(kernel.can_implement(b).ok() == (kernel.workspace_size(b) == 0));
}
