// flashmemory/lsa/concepts.hpp — the `kv_controller` concept: what a decoder calls to keep its CSA KV.
//
// A decoder owns one controller per sequence, shared by all its CSA layers (LSA keeps one global resident set,
// lsa.md §2), and, for every CSA layer (numbered 0 … csa_layers − 1 among the model's CSA layers), hands it
// each new compressed chunk and asks it which chunks attention may read:
//
//   c.append(layer, entry, key)       a chunk just emitted by the layer's compressors: the attention entry
//                                     (entry channels) and its index key (key channels). Every chunk is kept
//                                     (host mirror); a resident page is written through.
//   c.score(layer, q, w, scores)      Level 2 (every step): the native Lightning-Indexer score
//                                     Σ_h w_h·ReLU(⟨q_h, k⟩) (fm::indexer::index_scores) of every chunk of the
//                                     layer whose index key is readable now, read from where the controller
//                                     keeps it (the reserve); −∞ for the others. q [H, d_index], w [H].
//   c.select(layer, scores, k)        Level 2 (every step): `scores` are the native Lightning-Indexer scores
//                                     of every chunk of the layer; chunks that are not readable now count as
//                                     −∞, the k best of the rest are chosen (fm::indexer::top_k order) and
//                                     returned with the pool rows holding them → Selection.
//   c.gather(layer, rows, out)        decodes pool rows into out [rows, entry channels] (the host reference
//                                     of the gather attention performs).
//   c.boundary_due(tokens)            whether the step about to run (tokens ≥ 1 tokens) ends a window; the
//                                     decoder then offers Level-1 inputs while it runs:
//   c.offer(layer, input)             the last token's hidden state entering that layer's attention (and,
//                                     optionally, its native indexer query); ignored for non-target layers.
//   c.end_step(tokens)                the step is done: at a window boundary, Level 1 runs (score → select →
//                                     recall → publish) and the new resident set serves the next window.
//   c.footprint()                     bytes held, per kind (FootprintReport).
//   c.reset()                         forgets the sequence (every chunk, the resident set, the statistics).
//
// Models: lsa::Lookahead (LSA), lsa::FullResident (everything resident: the native model) and lsa::NativeTrace
// (a recorder of another controller's selections: the labels of an oracle).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace flashmemory::lsa {

// Level-1 inputs of one target layer at a window boundary (spans into the decoder's buffers, copied on offer).
struct TargetInput {
  std::span<float const> hidden;        // [D] the hidden state entering the layer's attention
  std::span<float const> query;         // optional [H · d_index] native indexer query (MinMaxBounds)
  std::span<float const> head_weights;  // optional [H] its head weights
};

// What Level 2 chose for one layer: chunks in descending score order, and the pool row holding each.
struct Selection {
  std::vector<std::int32_t> chunks;
  std::vector<std::int32_t> rows;
};

// Bytes of one KV kind (attention entries or index keys), over all CSA layers.
struct KindFootprint {
  std::size_t reserve_bytes = 0;   // device memory set aside for resident pages (allocated, fixed)
  std::size_t resident_bytes = 0;  // the part of it holding pages now
  std::size_t full_bytes = 0;      // keeping every page of the history resident (what FullResident holds)
  std::size_t mirror_bytes = 0;    // host memory of the mirror (allocated)

  KindFootprint& operator+=(KindFootprint const& o) {
    reserve_bytes += o.reserve_bytes, resident_bytes += o.resident_bytes, full_bytes += o.full_bytes,
        mirror_bytes += o.mirror_bytes;
    return *this;
  }
};
struct FootprintReport {
  KindFootprint entries;
  KindFootprint keys;

  KindFootprint total() const {
    KindFootprint t = entries;
    return t += keys;
  }
};

template <class C>
concept kv_controller = requires(C& c, C const& cc, index_t n, std::span<float const> v, std::span<std::int32_t const> rows,
                                 matrix_view<float> out, TargetInput const& in, matrix_view<float const> q,
                                 vector_view<float const> w, std::span<float> scores) {
  { c.append(n, v, v) } -> std::same_as<void>;
  { cc.score(n, q, w, scores) } -> std::same_as<void>;
  { cc.select(n, v, n) } -> std::same_as<Selection>;
  { cc.gather(n, rows, out) } -> std::same_as<void>;
  { cc.boundary_due(n) } -> std::convertible_to<bool>;
  { c.offer(n, in) } -> std::same_as<void>;
  { c.end_step(n) } -> std::same_as<void>;
  { cc.footprint() } -> std::same_as<FootprintReport>;
  { c.reset() } -> std::same_as<void>;
};

}  // namespace flashmemory::lsa
