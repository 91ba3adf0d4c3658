#include <flashmemory/core/dtype.hpp>

#include <cstdio>

int main() {
  // 1 + 3·2^-8 lies halfway between two bfloat16 values; round-to-nearest-even picks 1 + 2^-6.
  float rounded = fm::bfloat16::from_float(1.0f + 3.0f / 256).to_float();
  std::printf("flashmemory %s: bf16(1 + 3/256) = %g\n", FLASHMEMORY_VERSION_STRING, rounded);
  return rounded == 1.0f + 1.0f / 64 ? 0 : 1;
}
