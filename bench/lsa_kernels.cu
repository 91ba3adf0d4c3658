// bench/lsa_kernels.cu — timings of the LSA kernels against the two ceilings measured in the same run.
//
// Ceilings: device memory (a large device-to-device copy, bytes read + written) and pinned host → device
// (a large cudaMemcpy from pinned memory). Every case is timed with CUDA events, warmed up, repeated, and
// reported as the median; inputs rotate over sets larger than the L2 cache (so that timings are of DRAM,
// not of a cache holding last run's rows), filled on the device with random values (never zeros).
// Bytes are the fewest a case must move (each input read once, each output written once); achieved GB/s
// is those bytes over the median time.
//
// Usage: bench_lsa_kernels [--reps N] [--csv FILE]
#include <flashmemory/attention/cuda/packed_rows.cuh>
#include <flashmemory/attention/cuda/sparse_decode.cuh>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/cuda/pinned_buffer.cuh>
#include <flashmemory/core/cuda/stream.cuh>
#include <flashmemory/indexer/cuda/scores.cuh>
#include <flashmemory/indexer/cuda/topk.cuh>
#include <flashmemory/recall/cuda/page_gather.cuh>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace flashmemory;
using flashmemory::cuda::DeviceBuffer;
using flashmemory::cuda::Event;
using flashmemory::cuda::PinnedBuffer;
using flashmemory::cuda::Stream;

constexpr double kRotateBytes = 128e6;  // input sets per case add up to at least this (H100 L2: 50 MB)
int g_reps = 50;

// ---- random device data -------------------------------------------------------------------------------
enum class Fill { bf16, f32, csa_packed, index_fp8, bytes };

__device__ std::uint32_t mix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<std::uint32_t>(x);
}
__device__ float unit(std::uint32_t h) { return static_cast<float>(h >> 8) * (2.0f / 16777216.0f) - 1.0f; }  // [-1, 1)
__device__ std::uint16_t bf16_bits(float x) { return static_cast<std::uint16_t>(__float_as_uint(x) >> 16); }

// Fills n bytes with values valid for `kind` (finite floats, e4m3 codes that are not NaN, scales near 1).
__global__ void fill_kernel(std::byte* p, std::size_t n, std::uint32_t seed, Fill kind) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n / 4;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    std::uint32_t const h = mix(i * 0x9e3779b97f4a7c15ull + seed), h2 = mix(i + 0x1234567ull * seed);
    std::uint32_t w = h;
    std::size_t const byte = i * 4;
    switch (kind) {
      case Fill::bf16: w = bf16_bits(unit(h)) | static_cast<std::uint32_t>(bf16_bits(unit(h2))) << 16; break;
      case Fill::f32: w = __float_as_uint(unit(h)); break;
      case Fill::csa_packed: {
        std::size_t const o = byte % 584;
        if (o < 448) w = h & 0x7e7e7e7eu;  // no 0x7f/0xff: never NaN
        else if (o < 576) w = bf16_bits(unit(h)) | static_cast<std::uint32_t>(bf16_bits(unit(h2))) << 16;
        else w = 0x79797979u;  // scales 2^-6 (the pad byte too: harmless)
        break;
      }
      case Fill::index_fp8: {
        std::size_t const o = byte % 132;
        w = o < 128 ? (h & 0x7e7e7e7eu) : __float_as_uint(0.01f);
        break;
      }
      case Fill::bytes: break;
    }
    reinterpret_cast<std::uint32_t*>(p)[i] = w;
  }
}

void fill(void* p, std::size_t bytes, std::uint32_t seed, Fill kind) {
  fill_kernel<<<1024, 256>>>(static_cast<std::byte*>(p), bytes, seed, kind);
  FLASHMEMORY_CUDA_CHECK(cudaGetLastError());
}

// ---- timing -------------------------------------------------------------------------------------------
// Median of g_reps timed calls of f(rep) on `stream` after 3 warm-up calls.
template <class F>
double median_us(cudaStream_t stream, F&& f, int reps = 0) {
  reps = reps > 0 ? reps : g_reps;
  Event start(Event::kTiming), stop(Event::kTiming);
  for (int i = 0; i < 3; ++i) f(i);
  FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> us;
  for (int i = 0; i < reps; ++i) {
    start.record(stream);
    f(i);
    stop.record(stream);
    stop.synchronize();
    us.push_back(1000.0 * elapsed_ms(start, stop));
  }
  FLASHMEMORY_CUDA_CHECK(cudaGetLastError());
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

void check(Status const& st) { st.throw_if_error(); }

// ---- results ------------------------------------------------------------------------------------------
struct Row {
  std::string group, name;
  double us = 0, bytes = 0, flops = 0;
  double ceiling = 0;  // GB/s the case is compared with
  std::string note;
  double gbs() const { return bytes / us * 1e-3; }
};
std::vector<Row> g_rows;

void report(Row r) {
  std::printf("  %-44s %10.2f us %9.1f GB/s %6.1f%% %8.1f TFLOP/s  %s\n", r.name.c_str(), r.us, r.gbs(),
              100.0 * r.gbs() / r.ceiling, r.flops / r.us * 1e-6, r.note.c_str());
  std::fflush(stdout);
  g_rows.push_back(std::move(r));
}

int sets_for(double bytes_per_set, int max_sets = 64) {
  return std::clamp(static_cast<int>(kRotateBytes / std::max(bytes_per_set, 1.0)) + 1, 1, max_sets);
}

// ---- ceilings -----------------------------------------------------------------------------------------
double device_copy_gbs(Stream& s) {
  std::size_t const bytes = std::size_t{1} << 30;
  DeviceBuffer<std::byte> a(bytes), b(bytes);
  fill(a.data(), bytes, 1, Fill::bytes);
  double const us = median_us(s, [&](int) { FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, s)); }, 20);
  return 2.0 * bytes / us * 1e-3;
}

double pinned_h2d_gbs(Stream& s) {
  std::size_t const bytes = std::size_t{256} << 20;
  PinnedBuffer<std::byte> host(bytes);
  std::memset(host.data(), 0x5a, bytes);
  DeviceBuffer<std::byte> dev(bytes);
  double const us = median_us(s, [&](int) { FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(dev.data(), host.data(), bytes, cudaMemcpyHostToDevice, s)); }, 20);
  return bytes / us * 1e-3;
}

// ---- sparse attention ---------------------------------------------------------------------------------
// Engines and timing modes of one attention case. `graph`: kGraphLaunches runs (different inputs, as
// consecutive layers of a decode step would be) captured in one CUDA graph; the time is per run, so the
// host launch latency that dominates a single batch-1 launch is amortised as in a graph-captured decoder.
constexpr int kGraphLaunches = 8;
struct AttentionMode {
  int splits = 0;
  bool wgmma = true;
  bool graph = false;
};

template <class Rows>
void bench_attention(Stream& s, double ceiling, index_t B, index_t K, char const* label, AttentionMode mode = {}) {
  int const splits = mode.splits;
  constexpr index_t H = 64, D = 512, W = 128;
  using Kernel = attention::cuda::SparseDecode<Rows, bfloat16>;
  using Arguments = typename Kernel::Arguments;
  index_t const row_bytes = Rows::kRecordBytes;
  index_t const R = 262'144;  // pool rows: 256 MB of bf16 rows, 146 MB packed; each run picks K random ones
  DeviceBuffer<std::byte> pool(static_cast<std::size_t>(R * row_bytes));
  fill(pool.data(), pool.bytes(), 7, Rows::kPacked ? Fill::csa_packed : Fill::bf16);
  double const run_bytes = double(B) * ((W + K) * row_bytes + 2.0 * H * D * 2 + K * 4.0);
  int const sets = sets_for(double(B) * (W * row_bytes + H * D * 2), 16);
  DeviceBuffer<bfloat16> q(static_cast<std::size_t>(sets * B * H * D)), out(static_cast<std::size_t>(B * H * D));
  DeviceBuffer<std::byte> window(static_cast<std::size_t>(sets * B * W * row_bytes));
  fill(q.data(), q.bytes(), 8, Fill::bf16);
  fill(window.data(), window.bytes(), 9, Rows::kPacked ? Fill::csa_packed : Fill::bf16);
  std::vector<std::int32_t> host_sel(static_cast<std::size_t>(sets * B * K)), host_len(static_cast<std::size_t>(B), W);
  std::mt19937 rng(10);
  std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(R - 1));
  for (auto& x : host_sel) x = pick(rng);
  DeviceBuffer<std::int32_t> sel(host_sel.size()), len(host_len.size());
  sel.copy_from(host_sel);
  len.copy_from(host_len);
  DeviceBuffer<float> sink(H);
  fill(sink.data(), sink.bytes(), 11, Fill::f32);
  std::vector<Arguments> args;
  for (int i = 0; i < sets; ++i)
    args.push_back(Arguments{view<bfloat16 const, 3>(q.data() + i * B * H * D, B, H, D),
                             decltype(Arguments::window)(reinterpret_cast<typename decltype(Arguments::window)::element_type*>(
                                                             window.data() + i * B * W * row_bytes),
                                                         B, W, Rows::kRowExtent),
                             vector_view<std::int32_t const>(len.data(), B),
                             decltype(Arguments::pool)(reinterpret_cast<typename decltype(Arguments::pool)::element_type*>(pool.data()),
                                                       R, Rows::kRowExtent),
                             matrix_view<std::int32_t const>(sel.data() + i * B * K, B, K),
                             vector_view<float const>(sink.data(), H),
                             view<bfloat16, 3>(out.data(), B, H, D),
                             0.044194173f,
                             s.get()});
  typename Kernel::Options const options{splits, mode.wgmma};
  Kernel probe({}, options);
  DeviceBuffer<std::byte> workspace(std::max(probe.max_workspace_size(), probe.workspace_size(args[0])));
  Kernel kernel(workspace.span(), options);
  check(kernel.can_implement(args[0]));
  double us = 0;
  if (mode.graph) {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    FLASHMEMORY_CUDA_CHECK(cudaStreamBeginCapture(s.get(), cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < kGraphLaunches; ++i) check(kernel.run(args[static_cast<std::size_t>(i % sets)]));
    FLASHMEMORY_CUDA_CHECK(cudaStreamEndCapture(s.get(), &graph));
    FLASHMEMORY_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    us = median_us(s, [&](int) { FLASHMEMORY_CUDA_CHECK(cudaGraphLaunch(exec, s.get())); }) / kGraphLaunches;
    FLASHMEMORY_CUDA_CHECK(cudaGraphExecDestroy(exec));
    FLASHMEMORY_CUDA_CHECK(cudaGraphDestroy(graph));
  } else {
    us = median_us(s, [&](int i) { check(kernel.run(args[static_cast<std::size_t>(i % sets)])); });
  }
  auto const plan = kernel.plan(args[0]);
  std::string const suffix = std::string(mode.wgmma ? "" : " mma.sync") + (mode.graph ? " graph" : "") + (splits ? " (forced)" : "");
  report({splits ? "attention-splits" : "attention",
          std::string("sparse attention ") + label + " B=" + std::to_string(B) + " k=" + std::to_string(K) + " W=128" + suffix,
          us, run_bytes, 4.0 * B * H * (W + K) * D, ceiling,
          "splits " + std::to_string(plan.splits) + " x " + std::to_string(plan.tiles_per_split) + " tiles" +
              (mode.graph ? ", per run of a " + std::to_string(kGraphLaunches) + "-run graph" : "")});
}

// ---- index scoring ------------------------------------------------------------------------------------
template <class Keys>
void bench_scores(Stream& s, double ceiling, index_t n, index_t L, index_t H, bool sigmoid, char const* label) {
  constexpr index_t D = 128;
  index_t const rec = Keys::kRecordBytes;
  double const run_bytes = double(L) * n * rec + 4.0 * n;
  int const sets = sets_for(double(L) * n * rec, 16);
  DeviceBuffer<std::byte> keys(static_cast<std::size_t>(sets * L * n * rec));
  fill(keys.data(), keys.bytes(), 12, std::is_same_v<Keys, indexer::cuda::Fp8Keys> ? Fill::index_fp8 : Fill::f32);
  DeviceBuffer<float> q(static_cast<std::size_t>(L * H * D)), w(static_cast<std::size_t>(L * H)), scores(static_cast<std::size_t>(n));
  fill(q.data(), q.bytes(), 13, Fill::f32);
  fill(w.data(), w.bytes(), 14, Fill::f32);
  std::vector<std::vector<typename Keys::Pool>> pools(static_cast<std::size_t>(sets));
  for (int i = 0; i < sets; ++i)
    for (index_t l = 0; l < L; ++l)
      pools[i].emplace_back(reinterpret_cast<typename Keys::Pool::element_type*>(keys.data() + (i * L + l) * n * rec), n,
                            Keys::kRowExtent);
  indexer::cuda::IndexScores<Keys> kernel;
  auto args = [&](int i) {
    return typename indexer::cuda::IndexScores<Keys>::Arguments{view<float const, 3>(q.data(), L, H, D),
                                                                 matrix_view<float const>(w.data(), L, H),
                                                                 pools[static_cast<std::size_t>(i % sets)],
                                                                 {},
                                                                 vector_view<float>(scores.data(), n),
                                                                 sigmoid,
                                                                 indexer::cuda::LayerCombine::max,
                                                                 s.get()};
  };
  check(kernel.can_implement(args(0)));
  double const us = median_us(s, [&](int i) { check(kernel.run(args(i))); });
  report({"scores", std::string("index scores ") + label + " " + std::to_string(n / 1024) + "K x " + std::to_string(L) + "L x " +
                        std::to_string(H) + "H",
          us, run_bytes, 2.0 * L * n * H * D, ceiling, std::to_string(sets) + " rotating sets"});
}

// ---- top-k --------------------------------------------------------------------------------------------
void bench_topk(Stream& s, double ceiling, index_t B, index_t n, index_t k) {
  int const sets = sets_for(4.0 * B * n, 64);
  DeviceBuffer<float> scores(static_cast<std::size_t>(sets * B * n));
  fill(scores.data(), scores.bytes(), 15, Fill::f32);
  DeviceBuffer<std::int32_t> out(static_cast<std::size_t>(B * k));
  indexer::cuda::TopK topk;
  auto args = [&](int i) {
    return indexer::cuda::TopK::Arguments{matrix_view<float const>(scores.data() + (i % sets) * B * n, B, n), {}, {},
                                          matrix_view<std::int32_t>(out.data(), B, k), s.get()};
  };
  check(topk.can_implement(args(0)));
  double const us = median_us(s, [&](int i) { check(topk.run(args(i))); });
  report({"topk", "top-k " + std::to_string(k) + " of " + std::to_string(n) + ", " + std::to_string(B) + " row" + (B > 1 ? "s" : ""),
          us, 4.0 * B * n + 4.0 * B * k, 0, ceiling,
          std::to_string(topk.cluster_size(n)) + " CTAs per row; target < 130 us (torch.topk, 512 of 262144)"});
}

// ---- page gather --------------------------------------------------------------------------------------
void bench_gather(Stream& s, double ceiling) {
  constexpr std::int64_t kPage = 37'376;
  constexpr std::size_t kMirrorPages = 8192, kCells = 2048, kMoves = 1024, kSets = 8;
  PinnedBuffer<std::byte> mirror(kMirrorPages * kPage, PinnedBuffer<std::byte>::kMapped);
  std::memset(mirror.data(), 0x3c, mirror.bytes());
  DeviceBuffer<std::byte> reserve(kCells * kPage);
  PinnedBuffer<std::byte const*> src(kSets * kMoves, PinnedBuffer<std::byte const*>::kMapped);
  PinnedBuffer<std::int32_t> dst(kSets * kMoves, PinnedBuffer<std::int32_t>::kMapped);
  std::vector<std::byte const*> host_src(kSets * kMoves);
  std::mt19937 rng(16);
  std::vector<std::size_t> pages(kMirrorPages), cells(kCells);
  std::iota(pages.begin(), pages.end(), 0);
  std::iota(cells.begin(), cells.end(), 0);
  for (std::size_t set = 0; set < kSets; ++set) {
    std::shuffle(pages.begin(), pages.end(), rng);
    std::shuffle(cells.begin(), cells.end(), rng);
    for (std::size_t m = 0; m < kMoves; ++m) {
      src[set * kMoves + m] = mirror.device_pointer() + pages[m] * kPage;
      host_src[set * kMoves + m] = mirror.data() + pages[m] * kPage;
      dst[set * kMoves + m] = static_cast<std::int32_t>(cells[m]);
    }
  }
  recall::cuda::PageGather gather;
  auto args = [&](int i) {
    std::size_t const set = static_cast<std::size_t>(i) % kSets;
    return recall::cuda::PageGatherArguments{
        vector_view<std::byte const* const>(src.device_pointer() + set * kMoves, kMoves),
        vector_view<std::int32_t const>(dst.device_pointer() + set * kMoves, kMoves), reserve.data(), kPage, s.get()};
  };
  check(gather.can_implement(args(0)));
  double const bytes = double(kMoves) * kPage;
  double const us = median_us(s, [&](int i) { check(gather.run(args(i))); }, 20);
  report({"gather", "page gather, 1024 scattered 37376 B pages", us, bytes, 0, ceiling, "mapped pinned -> reserve"});
  double const us_copies = median_us(s, [&](int i) {
    std::size_t const set = static_cast<std::size_t>(i) % kSets;
    for (std::size_t m = 0; m < kMoves; ++m)
      FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(reserve.data() + dst[set * kMoves + m] * kPage, host_src[set * kMoves + m], kPage,
                                             cudaMemcpyHostToDevice, s));
  }, 10);
  report({"gather", "page copies, 1024 cudaMemcpyAsync", us_copies, bytes, 0, ceiling, "for comparison"});
}

}  // namespace

int main(int argc, char** argv) {
  std::string csv;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) g_reps = std::max(5, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
  }
  try {
    cudaDeviceProp prop{};
    FLASHMEMORY_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s, sm_%d%d, %d SMs, L2 %d MB, %.1f GB\n", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount, prop.l2CacheSize >> 20, prop.totalGlobalMem / 1e9);
    Stream s;
    double const d2d = device_copy_gbs(s), h2d = pinned_h2d_gbs(s);
    std::printf("ceilings: device copy %.1f GB/s (read + write), pinned host->device %.1f GB/s\n", d2d, h2d);
    std::printf("cases (median of %d; GB/s = fewest bytes / time; %% of the ceiling named in the summary):\n", g_reps);

    for (index_t K : {512, 2048})
      for (index_t B : {1, 16}) {
        bench_attention<attention::cuda::Bf16Rows>(s, d2d, B, K, "bf16");
        bench_attention<attention::cuda::PackedRows>(s, d2d, B, K, "fp8 ");
      }
    // Batch 1 as a graph-captured decoder runs it (launch latency amortised), and the mma.sync kernel.
    for (index_t K : {512, 2048}) {
      bench_attention<attention::cuda::Bf16Rows>(s, d2d, 1, K, "bf16", {.graph = true});
      bench_attention<attention::cuda::PackedRows>(s, d2d, 1, K, "fp8 ", {.graph = true});
    }
    for (index_t B : {1, 16}) {
      bench_attention<attention::cuda::Bf16Rows>(s, d2d, B, 2048, "bf16", {.wgmma = false});
      bench_attention<attention::cuda::PackedRows>(s, d2d, B, 2048, "fp8 ", {.wgmma = false});
    }
    // The split heuristic's neighbourhood, for tuning.
    for (index_t B : {1, 16})
      for (int splits : {1, 2, 4, 8, 16, 34}) bench_attention<attention::cuda::Bf16Rows>(s, d2d, B, 2048, "bf16", {.splits = splits});
    for (index_t n : {index_t{65'536}, index_t{262'144}, index_t{1'048'576}})
      bench_scores<indexer::cuda::Fp8Keys>(s, d2d, n, 1, 64, false, "fp8");
    bench_scores<indexer::cuda::F32Keys>(s, d2d, 262'144, 1, 64, false, "f32");
    bench_scores<indexer::cuda::Fp8Keys>(s, d2d, 262'144, 3, 128, true, "fp8 sigmoid+max");
    bench_topk(s, d2d, 1, 262'144, 512);
    bench_topk(s, d2d, 16, 262'144, 512);
    bench_topk(s, d2d, 1, 1'048'576, 2048);
    bench_gather(s, h2d);

    std::printf("\nsummary (H100 targets: attention/scores >= 70%% of device copy; gather >= 70%% of pinned H2D; top-k < 130 us)\n");
    std::printf("%-46s %10s %10s %8s\n", "case", "us", "GB/s", "% ceil");
    for (Row const& r : g_rows)
      if (r.group != "attention-splits")
        std::printf("%-46s %10.2f %10.1f %7.1f%%\n", r.name.c_str(), r.us, r.gbs(), 100.0 * r.gbs() / r.ceiling);
    if (!csv.empty()) {
      std::ofstream f(csv);
      f << "group,case,us,bytes,gbs,ceiling_gbs,tflops,note\n";
      for (Row const& r : g_rows)
        f << r.group << ",\"" << r.name << "\"," << r.us << ',' << r.bytes << ',' << r.gbs() << ',' << r.ceiling << ','
          << r.flops / r.us * 1e-6 << ",\"" << r.note << "\"\n";
    }
  } catch (std::exception const& e) {
    std::fprintf(stderr, "bench_lsa_kernels: %s\n", e.what());
    return 1;
  }
  return 0;
}
