// EXPECT: S::kProbabilities
// An indexer_scorer must say whether its scores are probabilities.
#include <flashmemory/indexer/concepts.hpp>

struct Unflagged {
  void score(flashmemory::indexer::ScoringContext const&, std::span<float>) {}
};
template <flashmemory::indexer::indexer_scorer S> void use(S&) {}
void f() { Unflagged s; use(s); }
