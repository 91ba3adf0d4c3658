// flashmemory/flashmemory.hpp — every host-side public header (compiles with a C++20 compiler alone).
// CUDA kernels are in flashmemory.cuh. Prefer including the one header you need; this is for exploring.
#pragma once

#include <flashmemory/config.hpp>

// core: errors, dtypes, views, buffers, backends, RoPE
#include <flashmemory/core/backend.hpp>
#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/core/rope.hpp>
#include <flashmemory/core/tensor_view.hpp>

// io: safetensors, checkpoints, JSON
#include <flashmemory/io/checkpoint.hpp>
#include <flashmemory/io/json.hpp>
#include <flashmemory/io/safetensors.hpp>
#include <flashmemory/io/safetensors_writer.hpp>

// layout: chunk_layout and the record formats
#include <flashmemory/layout/bf16_records.hpp>
#include <flashmemory/layout/concepts.hpp>
#include <flashmemory/layout/csa_entry.hpp>
#include <flashmemory/layout/f32_records.hpp>
#include <flashmemory/layout/index_key.hpp>

// store: host mirror, device reserve, chunk→cell table
#include <flashmemory/store/allocator.hpp>
#include <flashmemory/store/chunk_cell_table.hpp>
#include <flashmemory/store/chunk_store.hpp>
#include <flashmemory/store/device_reserve.hpp>
#include <flashmemory/store/host_mirror.hpp>

// indexer: indexer_scorer, the Memory Indexer and the baselines
#include <flashmemory/indexer/concepts.hpp>
#include <flashmemory/indexer/memory_indexer.hpp>
#include <flashmemory/indexer/minmax_bounds.hpp>
#include <flashmemory/indexer/oracle.hpp>
#include <flashmemory/indexer/random.hpp>
#include <flashmemory/indexer/recency.hpp>
#include <flashmemory/indexer/reference.hpp>

// residency: residency_policy and the policies
#include <flashmemory/residency/concepts.hpp>
#include <flashmemory/residency/densest_pages.hpp>
#include <flashmemory/residency/fallback.hpp>
#include <flashmemory/residency/published.hpp>
#include <flashmemory/residency/recency_tail.hpp>
#include <flashmemory/residency/sink.hpp>
#include <flashmemory/residency/threshold.hpp>
#include <flashmemory/residency/top_fraction.hpp>
#include <flashmemory/residency/union.hpp>

// recall: plans and the host engine
#include <flashmemory/recall/host_engine.hpp>
#include <flashmemory/recall/plan.hpp>

// attention: sparse_attention and the host reference
#include <flashmemory/attention/concepts.hpp>
#include <flashmemory/attention/reference.hpp>
#include <flashmemory/attention/sparse_decode.hpp>

// lsa: kv_controller, Lookahead, FullResident
#include <flashmemory/lsa/concepts.hpp>
#include <flashmemory/lsa/full_resident.hpp>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/lsa/native_trace.hpp>

// models: the DeepSeek-V4 decoder (host reference)
#include <flashmemory/models/deepseek_v4/decoder.hpp>
#include <flashmemory/models/deepseek_v4/load.hpp>
