// EXPECT: l\.decode\(stored, decoded\)
// A chunk_layout must decode its records: the diagnostic names the missing expression.
#include <flashmemory/layout/concepts.hpp>

struct NoDecode {
  flashmemory::index_t channels() const { return 1; }
  flashmemory::index_t record_bytes() const { return 4; }
  flashmemory::index_t chunks_per_page() const { return 64; }
  void encode(std::span<float const>, std::span<std::byte>) const {}
};
template <flashmemory::layout::chunk_layout L> void use(L const&) {}
void f() { use(NoDecode{}); }
