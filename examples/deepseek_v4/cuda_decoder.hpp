// fm-dsv4's door to the CUDA decoder. Host-only, so main.cpp compiles with the C++ compiler alone:
// cuda_decoder.cu (built when CMake finds CUDA) implements it with v4::Decoder<fm::cuda::Backend> or
// <fm::cuda::Float32Backend>; without_cuda.cpp, in a build without CUDA, says that it cannot.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <memory>
#include <span>
#include <string>
#include <vector>

namespace fm_dsv4 {

namespace fm = flashmemory;
namespace v4 = flashmemory::models::deepseek_v4;

// What the GPU keeps weights and KV rows in (activations are float32 either way).
enum class CudaStorage { bf16, f32 };

struct CudaSettings {
  CudaStorage storage = CudaStorage::bf16;
  fm::index_t max_context = 0;  // tokens the sequence may hold: sizes the KV buffers
  fm::index_t max_chunk = 1;    // tokens per prefill pass: sizes the activation buffers
};

// The CUDA decoder behind what fm-dsv4's generation loop calls: forward(ids) appends the tokens and returns
// the last one's logits (after the device finished), config(), position().
class CudaModel {
 public:
  virtual ~CudaModel() = default;
  virtual std::vector<float> forward(std::span<fm::index_t const> ids) = 0;
  virtual v4::Config const& config() const = 0;
  virtual fm::index_t position() const = 0;
};

// The CUDA device fm-dsv4 will run on, in words (name, compute capability, memory). Throws fm::error when this
// build has no CUDA or the machine no usable device: call it before loading a checkpoint.
std::string cuda_device();

// Uploads the weights and sizes every buffer; throws fm::error (errc::out_of_memory when the GPU is too small).
std::unique_ptr<CudaModel> make_cuda_model(v4::Config config, v4::Weights weights, CudaSettings const& settings);

}  // namespace fm_dsv4
