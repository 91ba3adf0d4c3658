// EXPECT: k\.can_implement\(args\)
// A sparse_attention kernel must offer can_implement().
#include <flashmemory/attention/concepts.hpp>
#include <flashmemory/attention/sparse_decode.hpp>

struct NoCheck {
  using Arguments = flashmemory::attention::SparseDecodeArguments<float>;
  flashmemory::Status run(Arguments const&) const { return {}; }
};
template <flashmemory::attention::sparse_attention K> void use(K const&) {}
void f() { use(NoCheck{}); }
