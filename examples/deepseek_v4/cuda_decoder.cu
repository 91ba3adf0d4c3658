// fm-dsv4 --device cuda: the CUDA decoder (deepseek-v4.md §3) in the one translation unit nvcc compiles.
#include "cuda_decoder.hpp"

#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/error.hpp>
#include <flashmemory/lsa/cuda/decoder_lookahead.cuh>
#include <flashmemory/models/deepseek_v4/cuda/decoder.cuh>

#include <cuda_runtime.h>

#include <cstdio>
#include <type_traits>
#include <utility>

namespace fm_dsv4 {

namespace {

template <class Backend, class Kv = v4::FullResidentKv>
class Model final : public CudaModel {
  static constexpr bool kNative = std::is_same_v<Kv, v4::FullResidentKv>;

 public:
  template <class... KvArgs>
  Model(v4::Config config, v4::Weights const& weights, v4::CudaDecoderOptions const& options, KvArgs&&... kv)
      : decoder_(std::move(config), weights, options, std::forward<KvArgs>(kv)...) {}
  std::vector<float> forward(std::span<fm::index_t const> ids) override { return decoder_.forward(ids); }
  std::vector<float> forward_sequence(fm::index_t sequence, std::span<fm::index_t const> ids) override {
    return decoder_.forward(ids, v4::Logits::last, sequence);
  }
  std::vector<float> decode(std::span<fm::index_t const> ids) override { return decoder_.decode(ids); }
  v4::Config const& config() const override { return decoder_.config(); }
  fm::index_t position() const override { return decoder_.position(); }
  void reset() override { decoder_.reset(); }
  std::optional<CudaLsaReport> lsa_report() const override {
    if constexpr (kNative) {
      return std::nullopt;
    } else {
      auto const& kv = decoder_.kv();
      auto const engine = kv.engine_stats();
      return CudaLsaReport{.footprint = kv.footprint(), .stats = kv.stats(), .resident_pages = kv.table().resident_pages(),
                           .history_pages = kv.history_pages(), .copy_ms = engine.copy_ms, .stalls = engine.stalls};
    }
  }
  void set_lsa(AllScorers scorer, AnyPolicy policy) override {
    if constexpr (kNative) fm::fail(fm::errc::unsupported, "fm-dsv4: this CUDA decoder runs without LSA");
    else decoder_.kv().scorer() = std::move(scorer), decoder_.kv().policy() = std::move(policy);
  }
  void hand_over(fm::index_t cells) override {
    if constexpr (kNative) fm::fail(fm::errc::unsupported, "fm-dsv4: this CUDA decoder runs without LSA");
    else decoder_.hand_over(cells);
  }

 private:
  v4::Decoder<Backend, Kv> decoder_;
};

using Lsa = fm::lsa::cuda::DecoderLookahead<AllScorers, AnyPolicy, fm::bfloat16>;

}  // namespace

std::string cuda_device() {
  int count = 0;
  if (cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess || count == 0) {
    cudaGetLastError();
    fm::fail(fm::errc::cuda, "--device cuda: no usable CUDA device (",
             err != cudaSuccess ? cudaGetErrorString(err) : "the driver reports none", "); use --device cpu");
  }
  int device = 0;
  cudaDeviceProp p{};
  FLASHMEMORY_CUDA_CHECK(cudaGetDevice(&device));
  FLASHMEMORY_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  char text[320];
  std::snprintf(text, sizeof text, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor, double(p.totalGlobalMem) / double(1 << 30));
  return text;
}

std::unique_ptr<CudaModel> make_cuda_model(v4::Config config, v4::Weights weights, CudaSettings const& s) {
  v4::CudaDecoderOptions options{.max_context = s.max_context, .max_chunk = s.max_chunk, .batch = s.batch};
  // `weights` (the host copy) is freed when this returns: only the GPU copy stays.
  if (s.lsa) {
    if (s.storage == CudaStorage::f32)
      fm::fail(fm::errc::unsupported, "--lsa on --device cuda keeps bf16 rows: use --cuda-storage bf16");
    CudaLsa const& l = *s.lsa;
    return std::make_unique<Model<fm::cuda::Backend, Lsa>>(std::move(config), weights, options,
                                                          Lsa(l.scorer, l.policy, l.options, l.chunks_per_page));
  }
  if (s.storage == CudaStorage::f32) return std::make_unique<Model<fm::cuda::Float32Backend>>(std::move(config), weights, options);
  return std::make_unique<Model<fm::cuda::Backend>>(std::move(config), weights, options);
}

}  // namespace fm_dsv4
