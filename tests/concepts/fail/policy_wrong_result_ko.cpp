// EXPECT: p\.select\(ctx\).*ResidentSet
// A residency_policy returns a ResidentSet, not a bare vector.
#include <flashmemory/residency/concepts.hpp>

struct ReturnsVector {
  std::vector<flashmemory::index_t> select(flashmemory::residency::SelectionContext const&) const { return {}; }
};
template <flashmemory::residency::residency_policy P> void use(P const&) {}
void f() { use(ReturnsVector{}); }
