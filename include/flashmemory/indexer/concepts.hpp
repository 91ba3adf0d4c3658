// flashmemory/indexer/concepts.hpp — the `indexer_scorer` concept: Level 1 of LSA.
//
// Once per window (every τ decode steps) a scorer rates every chunk of the history: how likely the next τ
// steps' native top-k is to need it. A residency policy turns the scores into the resident set. The
// Memory Indexer (a trained dual encoder) is the scorer of the method; recency, random, oracle and page
// min/max bounds are the baselines it is compared with.
//
// What a scorer sees (ScoringContext):
//   position     absolute position of the token at the window boundary
//   num_chunks   chunks in the history (scores to write)
//   layers       one entry per target layer: the hidden state entering that layer's attention, [D], and
//                that layer's index keys of every chunk, [num_chunks, d_index] (decoded to float);
//                optionally the layer's native Lightning-Indexer query of the same token, [H, d_index], and its
//                head weights, [H] (constant factors folded in) — what query-aware bounds (MinMaxBounds) need;
//                empty (extent 0) when the caller does not provide them
//   future       optional, evaluation only: per chunk, 1 if the next τ steps' native top-k picks it
//                (what an oracle may read; empty otherwise)
//
// Requirements, for a scorer `s` (mutable: a seeded random baseline advances its generator):
//   s.score(ctx, scores)   writes scores[c] for every c < ctx.num_chunks; higher means "keep". Scorers
//                          whose scores are probabilities (sigmoid outputs) say so with
//   S::kProbabilities      a constexpr bool; threshold policies accept only those.
// Complexity: O(num_chunks · cost of one key) per call; called off the decode critical path.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/tensor_view.hpp>

#include <concepts>
#include <span>

namespace flashmemory::indexer {

struct ScoringLayer {
  vector_view<float const> hidden;        // [D]
  matrix_view<float const> keys;          // [num_chunks, d_index]
  matrix_view<float const> query;         // optional: [H, d_index] native indexer query
  vector_view<float const> head_weights;  // optional: [H] its head weights
};

struct ScoringContext {
  index_t position = 0;
  index_t num_chunks = 0;
  std::span<ScoringLayer const> layers;
  std::span<float const> future;  // evaluation-only oracle labels, [num_chunks] or empty
};

template <class S>
concept indexer_scorer = requires(S& s, ScoringContext const& ctx, std::span<float> scores) {
  { s.score(ctx, scores) } -> std::same_as<void>;
  { S::kProbabilities } -> std::convertible_to<bool>;
};

}  // namespace flashmemory::indexer
