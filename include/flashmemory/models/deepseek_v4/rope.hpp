// flashmemory/models/deepseek_v4/rope.hpp — the model's RoPE (deepseek-v4.md §2.2); it lives in core/rope.hpp,
// shared with the Memory Indexer.
#pragma once

#include <flashmemory/core/rope.hpp>

namespace flashmemory::models::deepseek_v4 {

using ::flashmemory::Rope;

}  // namespace flashmemory::models::deepseek_v4
