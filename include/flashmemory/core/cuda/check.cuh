// flashmemory/core/cuda/check.cuh — CUDA runtime errors as flashmemory errors.
//
// FLASHMEMORY_CUDA_CHECK(call) throws flashmemory::error (errc::cuda, or errc::out_of_memory for a failed
// allocation) naming the call, the CUDA error and the file:line, for host code that may throw.
// FLASHMEMORY_CUDA_TRY(call) returns the same message as a failed Status from the enclosing function, for
// launchers and run() paths that must not throw. cuda_status(err, what) is the function under both.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>

#include <cuda_runtime_api.h>

namespace flashmemory::cuda {

// errc for a CUDA error: allocation failures are reported as out_of_memory so callers can react to them.
inline errc errc_of(cudaError_t err) noexcept {
  return err == cudaErrorMemoryAllocation ? errc::out_of_memory : errc::cuda;
}

// A Status for `err` (success when err == cudaSuccess); `what` names the call or kernel that failed. The
// runtime's last error is cleared, so that a later launch check does not report this failure again (sticky
// errors, which corrupt the context, stay).
inline Status cuda_status(cudaError_t err, char const* what, char const* file = "", int line = 0) {
  if (err == cudaSuccess) return Status::success();
  cudaGetLastError();
  return Status::failure(errc_of(err), what, " failed: ", cudaGetErrorName(err), " (", cudaGetErrorString(err),
                         ") at ", file, ":", line);
}

// The launch status of the last kernel launched from this thread (configuration errors, not faults inside
// the kernel, which surface at the next synchronising call).
inline Status launch_status(char const* kernel, char const* file = "", int line = 0) {
  return cuda_status(cudaGetLastError(), kernel, file, line);
}

}  // namespace flashmemory::cuda

#define FLASHMEMORY_CUDA_CHECK(call)                                                              \
  do {                                                                                            \
    ::cudaError_t flashmemory_cuda_err_ = (call);                                                 \
    if (flashmemory_cuda_err_ != ::cudaSuccess)                                                   \
      ::flashmemory::cuda::cuda_status(flashmemory_cuda_err_, #call, __FILE__, __LINE__).throw_if_error(); \
  } while (0)

#define FLASHMEMORY_CUDA_TRY(call)                                                                \
  do {                                                                                            \
    ::cudaError_t flashmemory_cuda_err_ = (call);                                                 \
    if (flashmemory_cuda_err_ != ::cudaSuccess)                                                   \
      return ::flashmemory::cuda::cuda_status(flashmemory_cuda_err_, #call, __FILE__, __LINE__);  \
  } while (0)
