#include <flashmemory/residency/recency_tail.hpp>

int main() { return fm::residency::RecencyTail{}.tail_chunks == 2048 ? 0 : 1; }
