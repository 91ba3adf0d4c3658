// flashmemory/flashmemory.cuh — the host-side headers plus every CUDA part (needs nvcc, sm_90a by default).
#pragma once

#include <flashmemory/flashmemory.hpp>

// core: error checks, device / pinned buffers, streams and events, the CUDA backend tags
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/cuda/pinned_buffer.cuh>
#include <flashmemory/core/cuda/stream.cuh>
#include <flashmemory/core/cuda_backend.hpp>

// kernels: sparse decode attention, index scoring, top-k, page gather
#include <flashmemory/attention/cuda/sparse_decode.cuh>
#include <flashmemory/indexer/cuda/scores.cuh>
#include <flashmemory/indexer/cuda/topk.cuh>
#include <flashmemory/recall/cuda/page_gather.cuh>

// the LSA runtime on the device: pinned mirror / device reserve allocators, recall engine, the Lookahead
// controllers (V4-Flash device formats; a CUDA decoder's own rows)
#include <flashmemory/lsa/cuda/decoder_lookahead.cuh>
#include <flashmemory/lsa/cuda/lookahead.cuh>
#include <flashmemory/recall/cuda/engine.cuh>
#include <flashmemory/store/cuda/allocators.cuh>

// the DeepSeek-V4 decoder on the device
#include <flashmemory/models/deepseek_v4/cuda/decoder.cuh>
