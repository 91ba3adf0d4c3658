// fm-dsv4 built without a CUDA compiler: --device cuda is an error that says so.
#include "cuda_decoder.hpp"

#include <flashmemory/core/error.hpp>

namespace fm_dsv4 {

namespace {
[[noreturn]] void no_cuda() {
  fm::fail(fm::errc::unsupported, "--device cuda: this fm-dsv4 was built without CUDA (CMake found no CUDA compiler); "
           "rebuild with nvcc on the PATH, or use --device cpu");
}
}  // namespace

std::string cuda_device() { no_cuda(); }

std::unique_ptr<CudaModel> make_cuda_model(v4::Config, v4::Weights, CudaSettings const&) { no_cuda(); }

}  // namespace fm_dsv4
