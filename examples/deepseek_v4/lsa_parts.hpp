// lsa_parts.hpp — the LSA pieces fm-dsv4 chooses among at run time: Level-1 scorers and residency policies
// behind one type each, and the Memory Indexer of a weights file, fitted to the model.
#pragma once

#include <flashmemory/indexer/memory_indexer.hpp>
#include <flashmemory/indexer/minmax_bounds.hpp>
#include <flashmemory/indexer/oracle.hpp>
#include <flashmemory/indexer/random.hpp>
#include <flashmemory/indexer/recency.hpp>
#include <flashmemory/io/safetensors.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/residency/densest_pages.hpp>
#include <flashmemory/residency/recency_tail.hpp>
#include <flashmemory/residency/threshold.hpp>
#include <flashmemory/residency/top_fraction.hpp>
#include <flashmemory/residency/union.hpp>

#include <filesystem>
#include <regex>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace fm_dsv4 {

namespace fm = flashmemory;
namespace v4 = flashmemory::models::deepseek_v4;

// The Level-1 scorers behind one type per kind of score: probabilities (threshold policies accept them) or not.
template <bool Probabilities, class... Scorers>
struct AnyScorer {
  static constexpr bool kProbabilities = Probabilities;
  std::variant<Scorers...> scorer;
  void score(fm::indexer::ScoringContext const& ctx, std::span<float> scores) {
    std::visit([&](auto& s) { s.score(ctx, scores); }, scorer);
  }
};
using ProbabilityScorer = AnyScorer<true, fm::indexer::MemoryIndexer, fm::indexer::Oracle>;
using BudgetScorer = AnyScorer<false, fm::indexer::Recency, fm::indexer::Random, fm::indexer::MinMaxBounds>;
// Every scorer in one type (the CUDA decoder's, and the eval's, which switches scorers on one sequence); the
// caller pairs threshold policies with probability scores only.
using AllScorers = AnyScorer<true, fm::indexer::MemoryIndexer, fm::indexer::Oracle, fm::indexer::Recency, fm::indexer::Random,
                             fm::indexer::MinMaxBounds>;

template <class Part>
using WithTail = fm::residency::Union<Part, fm::residency::RecencyTail>;

struct AnyPolicy {
  std::variant<fm::residency::Threshold, fm::residency::DensestPages, fm::residency::TopFraction,
               WithTail<fm::residency::Threshold>, WithTail<fm::residency::DensestPages>, WithTail<fm::residency::TopFraction>>
      policy;
  fm::residency::ResidentSet select(fm::residency::SelectionContext const& ctx) const {
    return std::visit([&](auto const& p) { return p.select(ctx); }, policy);
  }
};

inline AnyPolicy make_policy(std::string const& name, double budget) {
  if (name == "threshold") return {fm::residency::Threshold{0.5}};
  if (name == "densest") return {fm::residency::DensestPages{.kmax_fraction = budget}};
  return {fm::residency::TopFraction{budget}};
}

// The Memory Indexer of `path` for this model: one target CSA layer per retrievers.l{L} (ascending, written
// to `targets`), sizes from the tensors, the query roped like the model's indexer; the reference decoder's
// index keys are not Hadamard-rotated.
inline fm::indexer::MemoryIndexer load_memory_indexer(std::filesystem::path const& path, v4::Config const& c,
                                                      std::vector<fm::index_t>& targets) {
  auto file = fm::io::SafetensorsFile::open(path);
  std::regex name(R"(retrievers\.l(\d+)\.wq_a\.weight)");
  std::set<fm::index_t> layers;
  for (std::string const& n : file.names())
    if (std::smatch m; std::regex_match(n, m, name)) layers.insert(std::stoll(m[1].str()));
  if (layers.empty()) throw std::runtime_error(path.string() + ": no Memory Indexer tensors (retrievers.l{L}.wq_a.weight)");
  fm::index_t csa = c.count(v4::LayerKind::csa);
  if (*layers.rbegin() >= csa)
    throw std::runtime_error(path.string() + ": retrievers.l" + std::to_string(*layers.rbegin()) + " names a CSA layer, but the model has " +
                             std::to_string(csa) + " CSA layers");
  targets.assign(layers.begin(), layers.end());
  auto const& wq_a = file.info("retrievers.l" + std::to_string(targets[0]) + ".wq_a.weight").shape;
  auto const& wq_b = file.info("retrievers.l" + std::to_string(targets[0]) + ".wq_b.weight").shape;
  if (wq_a.size() != 2 || wq_b.size() != 2 || wq_b[0] % c.index_head_dim != 0)
    throw std::runtime_error(path.string() + ": wq_a / wq_b of retrievers.l" + std::to_string(targets[0]) +
                             " are not [rank, D] / [heads · " + std::to_string(c.index_head_dim) + ", rank]");
  fm::indexer::MemoryIndexerConfig mc;
  mc.hidden_size = c.hidden_size, mc.rank = wq_a[0], mc.heads = wq_b[0] / c.index_head_dim, mc.head_dim = c.index_head_dim;
  mc.rope_dim = c.qk_rope_head_dim, mc.rope = c.rope_compress, mc.hadamard = false;
  return fm::indexer::MemoryIndexer::load(file, mc, targets);
}

}  // namespace fm_dsv4
