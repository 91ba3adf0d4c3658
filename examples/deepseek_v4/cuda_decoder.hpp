// fm-dsv4's door to the CUDA decoder. Host-only, so main.cpp compiles with the C++ compiler alone:
// cuda_decoder.cu (built when CMake finds CUDA) implements it with v4::Decoder<fm::cuda::Backend> or
// <fm::cuda::Float32Backend>; without_cuda.cpp, in a build without CUDA, says that it cannot.
#pragma once

#include "lsa_parts.hpp"

#include <flashmemory/config.hpp>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace fm_dsv4 {

namespace fm = flashmemory;
namespace v4 = flashmemory::models::deepseek_v4;

// What the GPU keeps weights and KV rows in (activations are float32 either way).
enum class CudaStorage { bf16, f32 };

// LSA on the CSA layers (lsa::cuda::DecoderLookahead, bf16 rows): the Level-1 scorer, the policy, the sizes.
struct CudaLsa {
  AllScorers scorer;
  AnyPolicy policy;
  fm::lsa::LookaheadOptions options;
  fm::index_t chunks_per_page = 64;
};

struct CudaSettings {
  CudaStorage storage = CudaStorage::bf16;
  fm::index_t max_context = 0;  // tokens the sequence may hold: sizes the KV buffers
  fm::index_t max_chunk = 1;    // tokens per prefill pass: sizes the activation buffers
  fm::index_t batch = 1;        // sequences decoded together (without LSA)
  std::optional<CudaLsa> lsa;   // none: every CSA chunk resident (the native model)
};

// What LSA kept on the GPU and moved (CudaModel::lsa_report).
struct CudaLsaReport {
  fm::lsa::FootprintReport footprint;
  fm::lsa::LookaheadStats stats;
  fm::index_t resident_pages = 0, history_pages = 0;
  double copy_ms = 0;  // copy-stream time of the recalls
  fm::index_t stalls = 0;
};

// The CUDA decoder behind what fm-dsv4's generation loop calls: forward(ids) appends the tokens and returns
// the last one's logits (after the device finished), config(), position().
class CudaModel {
 public:
  virtual ~CudaModel() = default;
  virtual std::vector<float> forward(std::span<fm::index_t const> ids) = 0;
  virtual v4::Config const& config() const = 0;
  virtual fm::index_t position() const = 0;
  virtual void reset() = 0;  // a new sequence
  // With CudaSettings::batch sequences: appends `ids` to one of them (forward() is sequence 0), or one token to
  // each at once (logits [batch, V]).
  virtual std::vector<float> forward_sequence(fm::index_t sequence, std::span<fm::index_t const> ids) = 0;
  virtual std::vector<float> decode(std::span<fm::index_t const> ids) = 0;
  // With LSA (CudaSettings::lsa; errc::unsupported otherwise): what the report says; another scorer and policy
  // for the next Level 1; the end of a full-KV prefill (LookaheadOptions::full_prefill).
  virtual std::optional<CudaLsaReport> lsa_report() const { return std::nullopt; }
  virtual void set_lsa(AllScorers scorer, AnyPolicy policy) = 0;
  virtual void hand_over(fm::index_t cells) = 0;
};

// The CUDA device fm-dsv4 will run on, in words (name, compute capability, memory). Throws fm::error when this
// build has no CUDA or the machine no usable device: call it before loading a checkpoint.
std::string cuda_device();

// Uploads the weights and sizes every buffer; throws fm::error (errc::out_of_memory when the GPU is too small,
// errc::unsupported for LSA with float32 storage).
std::unique_ptr<CudaModel> make_cuda_model(v4::Config config, v4::Weights weights, CudaSettings const& settings);

}  // namespace fm_dsv4
