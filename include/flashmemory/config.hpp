// flashmemory/config.hpp — language checks and the execution-space macros every header uses.
#pragma once

#if defined(_MSVC_LANG)
#define FLASHMEMORY_CPLUSPLUS _MSVC_LANG
#else
#define FLASHMEMORY_CPLUSPLUS __cplusplus
#endif
#if FLASHMEMORY_CPLUSPLUS < 202002L
#error "flashmemory requires C++20 (concepts): compile with -std=c++20 or newer"
#endif

#include <flashmemory/version.hpp>

// Functions that run on both host and device are marked FLASHMEMORY_HOST_DEVICE; under g++ alone the
// marks vanish so that every .hpp header compiles without CUDA.
#if defined(__CUDACC__) || defined(__CUDA_ARCH__)
#define FLASHMEMORY_HOST_DEVICE __host__ __device__
#define FLASHMEMORY_DEVICE __device__
#else
#define FLASHMEMORY_HOST_DEVICE
#define FLASHMEMORY_DEVICE
#endif

namespace flashmemory {}
namespace fm = flashmemory;
