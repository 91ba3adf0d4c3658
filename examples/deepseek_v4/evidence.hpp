// evidence.hpp — what fm-dsv4 does for the accuracy evidence of LSA (docs/results.md, docs/training.md):
//
//   dump_labels()   --dump DIR: runs task documents through the reference decoder with full attention and
//                   writes the Memory Indexer's training data (hidden states, index keys, golden labels) at
//                   the prompt's last token and the answer tokens (what decode steps see);
//   evaluate()      --eval TASKS: answers held-out task items with every KV mode after one shared prefill,
//                   and writes one JSONL line per item and mode (tools/lsa_table.py makes the table).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/lsa/native_trace.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace fm_dsv4 {

// The filter of golden labels (lsa.md §4) scaled to the small model of docs/results.md: nucleus 0.6 as
// published, two of its three CSA layers agreeing (published: 3 of 21). docs/results.md also reports 0.9.
inline constexpr flashmemory::lsa::GoldenFilter kGoldenFilter{.nucleus_p = 0.6, .votes = 2};

// Which items of a task directory (tools/make_tasks.py generate) a run takes.
struct TaskSelection {
  std::filesystem::path dir;
  flashmemory::index_t items = 0;                  // per task and length; 0: all
  std::vector<flashmemory::index_t> lengths;       // empty: all
  flashmemory::index_t shard = 0, shards = 1;      // items whose index ≡ shard (mod shards)
};

struct DumpSettings {
  TaskSelection tasks;
  std::filesystem::path out;
  flashmemory::index_t tau = 64;     // labels: the union over the next τ tokens
  flashmemory::index_t chunk = 256;  // context step
  flashmemory::lsa::GoldenFilter filter = kGoldenFilter;
};

struct EvalSettings {
  TaskSelection tasks;
  std::filesystem::path out;                     // JSONL, one line per item and mode
  std::optional<std::filesystem::path> indexer;  // Memory Indexer weights (modes memory_*)
  std::vector<std::string> modes;                // empty: all of kEvalModes that the inputs allow
  double budget = 0.125;                         // equal-budget modes: this fraction of the pages, the tail included
  flashmemory::index_t page = 16;                // chunks per page
  flashmemory::index_t tail_chunks = 16;         // the recency tail of every LSA policy but recency's own (64 tokens)
  flashmemory::index_t tau = 64;
  flashmemory::index_t chunk = 256;              // prefill step
  flashmemory::lsa::GoldenFilter filter = kGoldenFilter;  // the oracle's labels: the golden chunks of the answer
  bool cuda = false;  // the CUDA decoder with LSA (bf16 rows; no oracle) instead of the float32 host reference
};

inline constexpr char const* kEvalModes[] = {"full",   "memory_threshold", "memory_densest", "recency",
                                             "random", "minmax",           "oracle"};

void dump_labels(flashmemory::models::deepseek_v4::Config const& config, flashmemory::models::deepseek_v4::Weights weights,
                 DumpSettings const& settings);
void evaluate(flashmemory::models::deepseek_v4::Config const& config, flashmemory::models::deepseek_v4::Weights weights,
              EvalSettings const& settings);

}  // namespace fm_dsv4
