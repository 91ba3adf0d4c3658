#include <flashmemory/core/host_buffer.hpp>
#include <flashmemory/residency/recency_tail.hpp>

#include <cstdio>
#include <vector>

int main() {
  // 10 chunks in pages of 4: a tail of 5 chunks starts in page 1 and ends in page 2.
  fm::HostBuffer<float> scores(10, "scores");
  fm::residency::SelectionContext ctx{.num_chunks = 10, .chunks_per_page = 4, .scores = scores.span()};
  fm::residency::ResidentSet set = fm::residency::RecencyTail{.tail_chunks = 5}.select(ctx);

  std::printf("flashmemory %s: resident pages %zu\n", FLASHMEMORY_VERSION_STRING, set.pages.size());
  return set.pages == std::vector<fm::index_t>{1, 2} ? 0 : 1;
}
