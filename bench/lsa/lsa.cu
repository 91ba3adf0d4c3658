// bench/lsa/lsa.cu — LSA against full attention at DeepSeek-V4-Flash attention dims, side by side in one run:
// head_dim 512 (packed 584 B entries), 64 heads, native index 64 heads × 128 (132 B fp8 keys), top-k 512,
// window 128; Memory Indexer 3 target layers × 128 heads; 21 CSA layers. Contexts 64K / 256K / 1M tokens,
// batch 1 and 16. Resident pages (the published policy, residency/published.hpp): --fraction of the pages
// (the densest pages; default 0.10) plus the pages of the newest --tail chunks (default 2048 = 8K tokens;
// --tail 0 for the fraction alone). bench/lsa/notes.md explains every column and its floor.
//
// One CSA layer is timed and multiplied by 21 (the layers are identical in shape); keys and scores are
// synthetic (random encoded records, random queries). Per case:
//   footprint  GPU KV bytes of 21 layers: full = every chunk's entry + key; LSA = the reserve (cells × page of
//              entry + key) + the 3 target layers' full key arrays (Level 1 reads every chunk).
//   step       one decode step = 21 × (per sequence: index scores → top-k 512; then sparse attention for the
//              batch), captured in a CUDA graph, median of replays. Full = native DeepSeek-V4 with the whole
//              CSA KV resident: the Lightning Indexer scores every key of the sequence (contiguous, no row
//              list). LSA: it scores the resident rows only (through the row list), adds Level 1 (fused
//              scoring of every chunk of the 3 target layers + the scores' copy to the host) / τ, and runs its
//              step while the window's recall copies run on a copy stream (the window's time / τ).
//   parts      the same three stages timed alone (one graph each) for both paths, and the HBM floor of a
//              step: the bytes it must read or write over the measured device copy bandwidth.
//   recall     per window --churn of the cells are refetched per sequence (scattered mirror pages, mapped
//              pinned memory → reserve, the recall gather kernel); bandwidth against the pinned H2D ceiling
//              (one large cudaMemcpy) measured in this run; stalls = windows whose copy had not completed
//              when the window's 64 steps had (steady state: should be 0).
// Usage: bench_lsa [--fraction F] [--churn F] [--windows N] [--csv FILE]
#include <flashmemory/attention/cuda/packed_rows.cuh>
#include <flashmemory/attention/cuda/sparse_decode.cuh>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/cuda/pinned_buffer.cuh>
#include <flashmemory/core/cuda/stream.cuh>
#include <flashmemory/indexer/cuda/scores.cuh>
#include <flashmemory/indexer/cuda/topk.cuh>
#include <flashmemory/layout/csa_entry.hpp>
#include <flashmemory/layout/index_key.hpp>
#include <flashmemory/recall/cuda/page_gather.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
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

constexpr index_t kLayers = 21, kTargets = 3, kTau = 64, kTopK = 512, kWindow = 128, kHeads = 64, kL1Heads = 128;
constexpr index_t kPer = 64, kEntry = 584, kKey = 132;

void check(Status const& st) { st.throw_if_error(); }

// `bytes` of valid records (random floats encoded with `layout`), a page pattern repeated.
template <class Layout>
void fill_records(std::byte* dst, std::size_t records, Layout const& layout, std::mt19937& rng, bool device) {
  std::normal_distribution<float> n(0.f, 1.f);
  std::size_t const rec = static_cast<std::size_t>(layout.record_bytes()), pattern = 1024;
  std::vector<std::byte> host(pattern * rec);
  std::vector<float> v(static_cast<std::size_t>(layout.channels()));
  for (std::size_t r = 0; r < pattern; ++r) {
    for (float& x : v) x = n(rng);
    layout.encode(v, std::span(host).subspan(r * rec, rec));
  }
  for (std::size_t r = 0; r < records; r += pattern) {
    std::size_t const m = std::min(pattern, records - r) * rec;
    if (device) FLASHMEMORY_CUDA_CHECK(cudaMemcpy(dst + r * rec, host.data(), m, cudaMemcpyHostToDevice));
    else std::memcpy(dst + r * rec, host.data(), m);
  }
}
template <class T>
DeviceBuffer<T> random_device(std::size_t n, std::mt19937& rng, float scale = 1.f) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<T> h(n);
  for (auto& x : h) {
    if constexpr (std::is_same_v<T, bfloat16>) x = bfloat16::from_float(d(rng));
    else x = static_cast<T>(d(rng));
  }
  DeviceBuffer<T> b(n);
  b.copy_from(h);
  return b;
}

template <class F>
double median_us(cudaStream_t s, F&& f, int reps) {
  Event a(Event::kTiming), b(Event::kTiming);
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    a.record(s);
    f();
    b.record(s);
    b.synchronize();
    t.push_back(elapsed_ms(a, b) * 1e3);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// One layer's Level 2 + attention for a batch over a pool, captured as a graph.
struct Step {
  cudaGraphExec_t exec = nullptr;
  ~Step() {
    if (exec) cudaGraphExecDestroy(exec);
  }
};

// One layer's stages alone (µs): index scores, top-k, sparse attention.
struct Parts {
  double full[3] = {}, lsa[3] = {};
};

struct Row {
  std::string name;
  double resident, full_gb, lsa_gb, full_us, lsa_us, l1_us, full_floor_us, lsa_floor_us, recall_gbps, ceiling_gbps, window_copy_ms, window_ms;
  index_t stalls, windows;
};

}  // namespace

int main(int argc, char** argv) try {
  double fraction = 0.10, churn = 0.10;
  index_t tail = 2048;
  int windows = 3;
  std::string csv;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--fraction" && i + 1 < argc) fraction = std::stod(argv[++i]);
    else if (a == "--churn" && i + 1 < argc) churn = std::stod(argv[++i]);
    else if (a == "--tail" && i + 1 < argc) tail = std::stoll(argv[++i]);
    else if (a == "--windows" && i + 1 < argc) windows = std::stoi(argv[++i]);
    else if (a == "--csv" && i + 1 < argc) csv = argv[++i];
    else fail(errc::invalid_argument, "bench_lsa: unknown argument ", a, " (--fraction F --tail CHUNKS --churn F --windows N --csv FILE)");
  }
  Stream decode, copy;
  std::mt19937 rng(42);
  layout::CsaEntryPacked const entry_layout;
  layout::IndexKeyFp8 const key_layout;

  // Pinned H2D ceiling: one large copy.
  double ceiling_gbps = 0;
  {
    std::size_t const bytes = std::size_t{256} << 20;
    PinnedBuffer<std::byte> host(bytes);
    DeviceBuffer<std::byte> dev(bytes);
    double const us = median_us(decode, [&] { FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(dev.data(), host.data(), bytes, cudaMemcpyHostToDevice, decode)); }, 10);
    ceiling_gbps = bytes / us * 1e-3;
  }
  // Device ceiling: one large device-to-device copy (bytes read + written).
  double hbm_gbps = 0;
  {
    std::size_t const bytes = std::size_t{256} << 20;
    DeviceBuffer<std::byte> a(bytes), b(bytes);
    double const us = median_us(decode, [&] { FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, decode)); }, 10);
    hbm_gbps = 2.0 * bytes / us * 1e-3;
  }
  std::printf("ceiling: pinned H2D %.1f GB/s, device copy %.0f GB/s (read + write)\n", ceiling_gbps, hbm_gbps);

  indexer::cuda::IndexScores<indexer::cuda::Fp8Keys> scorer;
  indexer::cuda::TopK topk;
  recall::cuda::PageGather gather;
  std::vector<Row> rows;

  for (index_t ctx : {index_t{65536}, index_t{262144}, index_t{1048576}})
    for (index_t B : {index_t{1}, index_t{16}}) {
      index_t const C = ctx / 4, P = C / kPer;
      index_t const cells = std::min(P, static_cast<index_t>(std::ceil(fraction * static_cast<double>(P))) + (tail + kPer - 1) / kPer);
      index_t const R = cells * kPer;  // LSA rows per sequence
      // Device KV: full (every chunk of B sequences) and LSA (B reserves); one layer.
      DeviceBuffer<std::byte> full_entries(static_cast<std::size_t>(B * C * kEntry)), full_keys(static_cast<std::size_t>(std::max(B, kTargets) * C * kKey));
      DeviceBuffer<std::byte> lsa_entries(static_cast<std::size_t>(B * R * kEntry)), lsa_keys(static_cast<std::size_t>(B * R * kKey));
      fill_records(full_entries.data(), static_cast<std::size_t>(B * C), entry_layout, rng, true);
      fill_records(full_keys.data(), static_cast<std::size_t>(std::max(B, kTargets) * C), key_layout, rng, true);
      FLASHMEMORY_CUDA_CHECK(cudaMemcpy(lsa_entries.data(), full_entries.data(), lsa_entries.bytes(), cudaMemcpyDeviceToDevice));
      FLASHMEMORY_CUDA_CHECK(cudaMemcpy(lsa_keys.data(), full_keys.data(), lsa_keys.bytes(), cudaMemcpyDeviceToDevice));
      // ids: global pool rows (full: b·C + c; LSA: the row lists, every resident row readable).
      std::vector<std::int32_t> h_ids(static_cast<std::size_t>(B * C));
      std::iota(h_ids.begin(), h_ids.end(), 0);
      DeviceBuffer<std::int32_t> full_ids(h_ids.size());
      full_ids.copy_from(h_ids);
      DeviceBuffer<std::int32_t> lsa_rows(static_cast<std::size_t>(B * R));
      lsa_rows.copy_from(std::span<std::int32_t const>(h_ids.data(), static_cast<std::size_t>(B * R)));
      DeviceBuffer<float> scores(static_cast<std::size_t>(B * C));
      DeviceBuffer<std::int32_t> selected(static_cast<std::size_t>(B * kTopK));
      auto q_idx = random_device<float>(static_cast<std::size_t>(B * kHeads * 128), rng);
      auto w_idx = random_device<float>(static_cast<std::size_t>(B * kHeads), rng, 0.1f);
      auto q = random_device<bfloat16>(static_cast<std::size_t>(B * kHeads * 512), rng);
      auto sink = random_device<float>(static_cast<std::size_t>(kHeads), rng);
      DeviceBuffer<std::byte> window(static_cast<std::size_t>(B * kWindow * kEntry));
      fill_records(window.data(), static_cast<std::size_t>(B * kWindow), entry_layout, rng, true);
      std::vector<std::int32_t> h_wl(static_cast<std::size_t>(B), static_cast<std::int32_t>(kWindow));
      DeviceBuffer<std::int32_t> window_len(h_wl.size());
      window_len.copy_from(h_wl);
      DeviceBuffer<bfloat16> out(static_cast<std::size_t>(B * kHeads * 512));

      attention::cuda::SparseDecode<attention::cuda::PackedRows, bfloat16> probe;
      DeviceBuffer<std::byte> ws(probe.max_workspace_size());
      attention::cuda::SparseDecode<attention::cuda::PackedRows, bfloat16> attn(ws.span());
      // The three stages of one layer. Full: sequence b scores its own C keys (native, contiguous) and top-k
      // maps the winners to pool rows b·C + c. LSA: sequence b scores its R reserve rows through its row list.
      auto score = [&](bool lsa) {
        for (index_t b = 0; b < B; ++b) {
          index_t const n = lsa ? R : C;
          matrix_view<std::byte const> pool = lsa ? matrix_view<std::byte const>(lsa_keys.data(), B * R, kKey)
                                                  : matrix_view<std::byte const>(full_keys.data() + b * C * kKey, C, kKey);
          check(scorer.run({.q = view<float const, 3>(q_idx.data() + b * kHeads * 128, 1, kHeads, 128),
                            .weights = matrix_view<float const>(w_idx.data() + b * kHeads, 1, kHeads),
                            .keys = std::span(&pool, 1),
                            .rows = lsa ? vector_view<std::int32_t const>(lsa_rows.data() + b * R, R) : vector_view<std::int32_t const>{},
                            .scores = vector_view<float>(scores.data() + b * n, n), .stream = decode.get()}));
        }
      };
      auto pick = [&](bool lsa) {
        for (index_t b = 0; b < B; ++b) {
          index_t const n = lsa ? R : C;
          vector_view<std::int32_t const> ids(lsa ? lsa_rows.data() + b * R : full_ids.data() + b * C, n);
          check(topk.run({.scores = matrix_view<float const>(scores.data() + b * n, 1, n), .allowed = {}, .ids = ids,
                          .out = matrix_view<std::int32_t>(selected.data() + b * kTopK, 1, kTopK), .stream = decode.get()}));
        }
      };
      auto attend = [&](bool lsa) {
        check(attn.run({.q = view<bfloat16 const, 3>(q.data(), B, kHeads, 512),
                        .window = view<std::byte const, 3>(window.data(), B, kWindow, kEntry),
                        .window_len = vector_view<std::int32_t const>(window_len.data(), B),
                        .pool = matrix_view<std::byte const>(lsa ? lsa_entries.data() : full_entries.data(), lsa ? B * R : B * C, kEntry),
                        .selected = matrix_view<std::int32_t const>(selected.data(), B, kTopK),
                        .sink = vector_view<float const>(sink.data(), kHeads),
                        .out = view<bfloat16, 3>(out.data(), B, kHeads, 512),
                        .scale = 1.f / std::sqrt(512.f), .stream = decode.get()}));
      };
      auto capture = [&](auto&& enqueue) {
        cudaGraph_t graph;
        FLASHMEMORY_CUDA_CHECK(cudaStreamBeginCapture(decode, cudaStreamCaptureModeThreadLocal));
        enqueue();
        FLASHMEMORY_CUDA_CHECK(cudaStreamEndCapture(decode, &graph));
        auto step = std::make_unique<Step>();
        FLASHMEMORY_CUDA_CHECK(cudaGraphInstantiate(&step->exec, graph, 0));
        cudaGraphDestroy(graph);
        return step;
      };
      auto replay_us = [&](Step const& g) { return median_us(decode, [&] { FLASHMEMORY_CUDA_CHECK(cudaGraphLaunch(g.exec, decode)); }, 20); };
      auto full_step = capture([&] { score(false), pick(false), attend(false); });
      auto lsa_step = capture([&] { score(true), pick(true), attend(true); });
      double const full_us = replay_us(*full_step);
      Parts parts;
      for (bool lsa : {false, true}) {
        double* p = lsa ? parts.lsa : parts.full;
        p[0] = replay_us(*capture([&] { score(lsa); }));
        p[1] = replay_us(*capture([&] { pick(lsa); }));
        p[2] = replay_us(*capture([&] { attend(lsa); }));
      }

      // Level 1 per window: fused 3-layer scoring of every chunk per sequence + the scores to the host.
      auto q1 = random_device<float>(static_cast<std::size_t>(kTargets * kL1Heads * 128), rng);
      auto w1 = random_device<float>(static_cast<std::size_t>(kTargets * kL1Heads), rng, 0.1f);
      PinnedBuffer<float> host_scores(static_cast<std::size_t>(B * C));
      double const l1_us = median_us(decode, [&] {
        for (index_t b = 0; b < B; ++b) {
          std::vector<matrix_view<std::byte const>> pools;
          for (index_t t = 0; t < kTargets; ++t)
            pools.emplace_back(full_keys.data() + ((b + t) % std::max(B, kTargets)) * C * kKey, C, kKey);
          check(scorer.run({.q = view<float const, 3>(q1.data(), kTargets, kL1Heads, 128),
                            .weights = matrix_view<float const>(w1.data(), kTargets, kL1Heads), .keys = pools, .rows = {},
                            .scores = vector_view<float>(scores.data() + b * C, C), .sigmoid = true, .stream = decode.get()}));
        }
        FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(host_scores.data(), scores.data(), static_cast<std::size_t>(B * C) * 4, cudaMemcpyDeviceToHost, decode));
      }, 5);

      // Recall: mirrors of the B sequences (one layer, entries and keys, mapped pinned), `churn` of the cells per
      // sequence refetched per window from random pages.
      index_t const fetch = std::max<index_t>(1, static_cast<index_t>(std::ceil(churn * static_cast<double>(cells))));
      PinnedBuffer<std::byte> mirror_e(static_cast<std::size_t>(B * P * kPer * kEntry), PinnedBuffer<std::byte>::kMapped);
      PinnedBuffer<std::byte> mirror_k(static_cast<std::size_t>(B * P * kPer * kKey), PinnedBuffer<std::byte>::kMapped);
      fill_records(mirror_e.data(), static_cast<std::size_t>(B * P * kPer), entry_layout, rng, false);
      fill_records(mirror_k.data(), static_cast<std::size_t>(B * P * kPer), key_layout, rng, false);
      PinnedBuffer<std::byte const*> src_e(static_cast<std::size_t>(B * fetch), PinnedBuffer<std::byte const*>::kMapped);
      PinnedBuffer<std::byte const*> src_k(static_cast<std::size_t>(B * fetch), PinnedBuffer<std::byte const*>::kMapped);
      PinnedBuffer<std::int32_t> dst(static_cast<std::size_t>(B * fetch), PinnedBuffer<std::int32_t>::kMapped);
      auto plan = [&] {
        for (index_t b = 0; b < B; ++b) {
          std::vector<index_t> pages(static_cast<std::size_t>(P)), cs(static_cast<std::size_t>(cells));
          std::iota(pages.begin(), pages.end(), 0);
          std::iota(cs.begin(), cs.end(), 0);
          std::shuffle(pages.begin(), pages.end(), rng);
          std::shuffle(cs.begin(), cs.end(), rng);
          for (index_t i = 0; i < fetch; ++i) {
            std::size_t const m = static_cast<std::size_t>(b * fetch + i), page = static_cast<std::size_t>(b * P + pages[static_cast<std::size_t>(i)]);
            src_e[m] = mirror_e.device_pointer() + page * kPer * kEntry;
            src_k[m] = mirror_k.device_pointer() + page * kPer * kKey;
            dst[m] = static_cast<std::int32_t>(b * cells + cs[static_cast<std::size_t>(i)]);
          }
        }
      };
      auto enqueue_recall = [&] {
        index_t const n = B * fetch;
        check(gather.run({vector_view<std::byte const* const>(src_e.device_pointer(), n), vector_view<std::int32_t const>(dst.device_pointer(), n),
                          lsa_entries.data(), kPer * kEntry, copy.get()}));
        check(gather.run({vector_view<std::byte const* const>(src_k.device_pointer(), n), vector_view<std::int32_t const>(dst.device_pointer(), n),
                          lsa_keys.data(), kPer * kKey, copy.get()}));
      };
      // The recall alone (bandwidth against the ceiling).
      plan();
      double const copy_us = median_us(copy, enqueue_recall, 5);
      double const window_bytes = static_cast<double>(B * fetch) * kPer * (kEntry + kKey);
      // Steady state: each window's copies (21 layers' worth, as 21 gathers of one layer) run beside its τ steps
      // (each step 21 layer graphs); a stall is a window whose copy had not completed when its steps had.
      Event w0(Event::kTiming), w1e(Event::kTiming), copied(Event::kTiming), copy0(Event::kTiming);
      index_t stalls = 0;
      std::vector<double> window_ms, copy_ms;
      for (int w = 0; w < windows; ++w) {
        plan();
        decode.synchronize();
        copy0.record(copy);
        for (index_t l = 0; l < kLayers; ++l) enqueue_recall();
        copied.record(copy);
        w0.record(decode);
        for (index_t s = 0; s < kTau * kLayers; ++s) FLASHMEMORY_CUDA_CHECK(cudaGraphLaunch(lsa_step->exec, decode));
        w1e.record(decode);
        w1e.synchronize();
        stalls += !copied.ready();
        copied.wait_on(decode);  // the publish
        decode.synchronize();
        window_ms.push_back(elapsed_ms(w0, w1e));
        copy_ms.push_back(elapsed_ms(copy0, copied));
      }
      std::sort(window_ms.begin(), window_ms.end());
      std::sort(copy_ms.begin(), copy_ms.end());
      double const win_ms = window_ms[window_ms.size() / 2];
      double const lsa_step_us = win_ms * 1e3 / kTau + l1_us / kTau;

      // HBM floors of one step (21 layers): what each stage must read or write once, over the device copy
      // bandwidth. Scores: written once, read once by the top-k (its later passes hit L2); LSA rows: the row
      // id besides the key; attention: the top-k and window entries; Level 1: every target key / τ.
      double const attend_bytes = static_cast<double>(B) * (kTopK + kWindow) * kEntry;
      double const full_bytes = static_cast<double>(B) * C * (kKey + 4 + 4) + attend_bytes;
      double const lsa_bytes = static_cast<double>(B) * R * (kKey + 4 + 4 + 4) + attend_bytes +
                               static_cast<double>(B) * C * (kTargets * kKey + 4) / kLayers / kTau;
      auto floor_us = [&](double bytes) { return kLayers * bytes / (hbm_gbps * 1e3); };

      double const full_gb = static_cast<double>(kLayers) * B * C * (kEntry + kKey) * 1e-9;
      double const lsa_gb = (static_cast<double>(kLayers) * B * R * (kEntry + kKey) + static_cast<double>(kTargets) * B * C * kKey) * 1e-9;
      Row row{std::to_string(ctx / 1024) + "K b" + std::to_string(B), static_cast<double>(cells) / static_cast<double>(P), full_gb,
              lsa_gb, kLayers * full_us, lsa_step_us, l1_us, floor_us(full_bytes), floor_us(lsa_bytes), window_bytes / copy_us * 1e-3,
              ceiling_gbps, copy_ms[copy_ms.size() / 2], win_ms, stalls, windows};
      std::printf("%-9s cells %lld of %lld pages (%.1f%%), fetch %lld/seq/window, L1 %.0f us/window, copy %.0f us/layer\n", row.name.c_str(),
                  static_cast<long long>(cells), static_cast<long long>(P), 100 * row.resident, static_cast<long long>(fetch), l1_us, copy_us);
      std::printf("          per layer us: full step %.1f = scores %.1f + top-k %.1f + attention %.1f (alone); LSA scores %.1f + top-k %.1f + "
                  "attention %.1f + L1/tau %.1f; floors %.1f / %.1f\n",
                  full_us, parts.full[0], parts.full[1], parts.full[2], parts.lsa[0], parts.lsa[1], parts.lsa[2], l1_us / kTau,
                  row.full_floor_us / kLayers, row.lsa_floor_us / kLayers);
      rows.push_back(row);
    }

  std::printf("\nnotes: one CSA layer timed, x21; full = native V4 (score every key, top-k 512, attention); LSA step = window time with\n"
              "       the recall copies running / tau + Level 1 / tau; footprint LSA = 21 reserves (entry + key pages) + 3 target\n"
              "       layers' full keys; resident = (fraction + tail pages) / pages; floor = HBM bytes of a step / device copy bandwidth;\n"
              "       goals: KV <= 15%% @64K, <= 10%% @1M; step <= 1.0x @64K, <= 0.5x @1M; recall >= 80%% of the pinned ceiling (batch\n"
              "       16; batch 1 moves a few pages per window and is latency-bound); stalls 0. See bench/lsa/notes.md.\n");
  std::printf("summary (fraction %.2f + tail %lld chunks, churn %.2f, %d windows)\n", fraction, static_cast<long long>(tail), churn, windows);
  std::printf("%-9s %6s %9s %9s %6s | %9s %9s %6s %6s | %9s %5s | %8s %9s %6s\n", "case", "res", "full GB", "LSA GB", "ratio", "full us",
              "LSA us", "ratio", "floor", "recall", "%", "copy ms", "window ms", "stalls");
  for (auto const& r : rows)
    std::printf("%-9s %5.1f%% %9.3f %9.3f %5.1f%% | %9.1f %9.1f %5.2fx %5.2fx | %4.1f GB/s %4.0f%% | %8.2f %9.2f %3lld/%lld\n", r.name.c_str(),
                100 * r.resident, r.full_gb, r.lsa_gb, 100 * r.lsa_gb / r.full_gb, r.full_us, r.lsa_us, r.lsa_us / r.full_us,
                r.lsa_floor_us / r.full_floor_us, r.recall_gbps, 100 * r.recall_gbps / r.ceiling_gbps, r.window_copy_ms, r.window_ms,
                static_cast<long long>(r.stalls), static_cast<long long>(r.windows));
  if (!csv.empty()) {
    std::ofstream f(csv);
    f << "case,resident,full_gb,lsa_gb,full_step_us,lsa_step_us,level1_us_per_window,full_floor_us,lsa_floor_us,recall_gbps,pinned_ceiling_gbps,"
         "window_copy_ms,window_ms,stalls,windows\n";
    for (auto const& r : rows)
      f << r.name << ',' << r.resident << ',' << r.full_gb << ',' << r.lsa_gb << ',' << r.full_us << ',' << r.lsa_us << ',' << r.l1_us << ','
        << r.full_floor_us << ',' << r.lsa_floor_us << ',' << r.recall_gbps << ',' << r.ceiling_gbps << ',' << r.window_copy_ms << ','
        << r.window_ms << ',' << r.stalls << ',' << r.windows << '\n';
  }
  return 0;
} catch (std::exception const& e) {
  std::fprintf(stderr, "bench_lsa: %s\n", e.what());
  return 1;
}
