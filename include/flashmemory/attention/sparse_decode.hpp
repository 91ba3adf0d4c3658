// flashmemory/attention/sparse_decode.hpp — arguments of one sparse-attention decode step.
//
// Each query token of a batch attends, per head, to (a) its sliding-window rows and (b) `selected` rows of
// a shared pool — the device reserve's cells, reached through the chunk→cell table — in one softmax with a
// per-head sink logit that only adds to the denominator (deepseek-v4.md §5.3). Keys equal values (one
// shared latent head, MQA). Shapes (B batch, H heads, d head_dim, W window rows, R pool rows, K slots):
//   q        [B, H, d]      queries, already normed and roped
//   window   [B, W, d]      window latents; rows ≥ window_len[b] are ignored
//   pool     [R, d]         the reserve's rows (cells × chunks per page)
//   selected [B, K]         pool row per slot; −1 marks an unused slot
//   sink     [H]            sink logits (fp32)
//   out      [B, H, d]      Σ_j p_j · v_j
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <cstdint>

namespace flashmemory::attention {

template <class Element, class Output = Element>
struct SparseDecodeArguments {
  view<Element const, 3> q;
  view<Element const, 3> window;
  vector_view<std::int32_t const> window_len;
  matrix_view<Element const> pool;
  matrix_view<std::int32_t const> selected;
  vector_view<float const> sink;
  view<Output, 3> out;
  float scale = 0.0f;     // softmax scale, d^(-1/2) in DeepSeek-V4
  void* stream = nullptr; // cudaStream_t for CUDA kernels; the host reference ignores it
};

}  // namespace flashmemory::attention
