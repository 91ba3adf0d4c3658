// flashmemory/attention/concepts.hpp — the `sparse_attention` concept: Level 2 of LSA reads through it.
//
// A sparse-attention kernel family follows the CUTLASS/FlashInfer shape: a plain Arguments struct, a check
// that says whether this implementation can serve those arguments (a Status naming the offending
// dimension, never an exception), and run(). run() must not allocate, so a decode step that calls it can
// be captured in a CUDA graph. The host reference and the CUDA kernels model the same concept, so tests and
// the decoder swap one for the other as a template parameter.
//
// Requirements, for a const kernel `k` and `a` of type K::Arguments (attention/sparse_decode.hpp):
//   k.can_implement(a) -> Status   shapes agree, dims supported, pointers non-null
//   k.run(a)           -> Status   computes a.out; on the CUDA backend enqueues on a.stream
// Complexity: O(B · H · (W + K) · d) reads of d-wide rows; memory-bound on the pool rows.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>

#include <concepts>

namespace flashmemory::attention {

template <class K>
concept sparse_attention = requires(K const& k, typename K::Arguments const& args) {
  { k.can_implement(args) } -> std::same_as<Status>;
  { k.run(args) } -> std::same_as<Status>;
};

}  // namespace flashmemory::attention
