// flashmemory/models/deepseek_v4/cuda/decoder.cuh — the DeepSeek-V4 decoder on the GPU: the
// `Decoder<fm::cuda::Backend, Kv>` specialisation of decoder.hpp's primary template (deepseek-v4.md §3).
//
//   #include <flashmemory/models/deepseek_v4/cuda/decoder.cuh>
//   v4::Decoder<fm::cuda::Backend> gpu(config, weights, {.max_context = 65536});   // bf16 weights and KV
//   auto logits = gpu.forward(prompt);                 // the host reference's interface
//   for (...) { next = argmax(logits); logits = gpu.forward(std::span(&next, 1)); }
//   // or on the device: write device_token(), step(), read device_logits() (no host synchronisation)
//
//   v4::Decoder<fm::cuda::Backend> batched(config, weights, {.max_context = 65536, .batch = 8});
//   for (b ...) batched.forward(prompt[b], v4::Logits::last, b);   // prefill each sequence
//   auto logits = batched.decode(next);                 // next[b] appended to sequence b: logits [8, V]
//
// Same contract as the host reference, per sequence: forward(ids) appends the tokens and returns their
// logits; any chunking gives the same logits up to float rounding. A Decoder holds Options::batch
// sequences (one by default), each with its own KV and position; decode() and step() append one token to
// every sequence in one pass, so each weight matrix is read once for the whole batch. Weights are uploaded once
// in the backend's storage type (fm::cuda::Backend: bf16; fm::cuda::Float32Backend: float32), activations
// are float32 with float32 accumulation.
//
// Every buffer is sized at construction for Options::max_context tokens and chunks of Options::max_chunk
// tokens, for Options::batch sequences; a forward() that would pass max_context is an error, not a
// reallocation. The positions live in device memory and every kernel reads them there, so one decode step
// is the same launch sequence at every position: step() (and forward() of one token with batch 1) records
// it once into a CUDA graph and replays it.
//
// A step is a chain of ~20 kernels per layer; with Options::overlap each is a programmatic dependent launch
// (detail/common.cuh), so a kernel's launch and the first weight loads of a matrix-vector product overlap
// the end of the kernel before it. Off by default: on the H100 plain graph launches were as fast or faster
// (bench/decode/notes.md).
//
// The CSA layers' KV: with Kv = FullResidentKv every entry and index key stays in device pools sized for
// max_context; with a paged controller (lsa::cuda::DecoderLookahead: LSA) they live in its reserve — the
// compressors write each new chunk there and into its ring, the indexer scores the readable reserve rows, the
// top-k returns reserve rows, attention reads them — and each forward() pass or step() is one controller
// step (begin_step before, end_step after: pages open, Level 1 at window boundaries, on the host).
//
// A chunk runs layer by layer: the projections of all its tokens at once (one pass over each weight
// matrix per kTileTokens tokens), then token by token the cache update, indexer scores, top-k and
// attention (the order of §6.5 that makes chunking invisible), then the output projection and the MoE for
// all tokens again. A batched step (step(), decode()) runs the same chain once for all sequences: the
// projections and experts as a tile of one token per sequence, the per-token kernels (cache update, indexer
// scores, attention) with one block row per sequence, every sequence's top-k in one launch. The caches hold
// [sequences, …] of each buffer (cuda/cache.cuh).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/cuda/pinned_buffer.cuh>
#include <flashmemory/core/cuda/stream.cuh>
#include <flashmemory/core/cuda_backend.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/indexer/cuda/topk.cuh>
#include <flashmemory/lsa/cuda/decoder_lookahead.cuh>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/cuda/attention.cuh>
#include <flashmemory/models/deepseek_v4/cuda/cache.cuh>
#include <flashmemory/models/deepseek_v4/cuda/compressor.cuh>
#include <flashmemory/models/deepseek_v4/cuda/indexer.cuh>
#include <flashmemory/models/deepseek_v4/cuda/linear.cuh>
#include <flashmemory/models/deepseek_v4/cuda/mhc.cuh>
#include <flashmemory/models/deepseek_v4/cuda/moe.cuh>
#include <flashmemory/models/deepseek_v4/cuda/norm_rope.cuh>
#include <flashmemory/models/deepseek_v4/cuda/weights.cuh>
#include <flashmemory/models/deepseek_v4/decoder.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

struct CudaDecoderOptions {
  index_t max_context = 4096;  // tokens one sequence may hold; sizes every KV buffer
  index_t max_chunk = 64;      // tokens per internal pass of forward(); sizes the activation buffers
  bool graph = true;           // replay single-token steps from a captured CUDA graph
  bool overlap = false;        // programmatic dependent launch: each kernel starts while the previous finishes (sm_90+)
  index_t batch = 1;           // sequences, each with its own KV; step() and decode() append a token to each
};

namespace cuda::detail {

// positions[0, count) += tokens.
static __global__ void advance_position_kernel(std::int64_t* positions, std::int64_t count, std::int64_t tokens) {
  enter();
  for (std::int64_t i = 0; i < count; ++i) positions[i] += tokens;
}

struct GraphExecDeleter {
  void operator()(cudaGraphExec_t g) const noexcept { cudaGraphExecDestroy(g); }
};
using GraphExec = std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, GraphExecDeleter>;

// Activation buffers of one chunk of at most `chunk` tokens (names follow decoder.hpp / attention.hpp).
struct Workspace {
  std::int64_t chunk = 0, px_stride = 0, pq_stride = 0, splits = 1;
  DeviceBuffer<std::int64_t> position;  // [batch] each sequence's position (of its next token)
  DeviceBuffer<std::int32_t> ids;       // [chunk]
  DeviceBuffer<float> streams, partial, mix_state, x, px, q_residual, pq, latent, o, grouped, y;
  DeviceBuffer<float> router_logits, route_weights, hidden, head_in, logits;
  DeviceBuffer<std::int32_t> chosen, selected;
  DeviceBuffer<float> attn_o, attn_ml;

  Workspace(Config const& c, std::int64_t chunk_, std::int64_t batch, std::int64_t px_stride_, std::int64_t pq_stride_, int splits_)
      : chunk(chunk_), px_stride(px_stride_), pq_stride(pq_stride_), splits(splits_) {
    auto const S = static_cast<std::size_t>(chunk), D = static_cast<std::size_t>(c.hidden_size);
    auto const hc = static_cast<std::size_t>(c.hc_mult), H = static_cast<std::size_t>(c.num_attention_heads);
    auto const d = static_cast<std::size_t>(c.head_dim), k = static_cast<std::size_t>(c.num_experts_per_tok);
    position = DeviceBuffer<std::int64_t>(static_cast<std::size_t>(batch), "positions");
    ids = DeviceBuffer<std::int32_t>(S, "token ids");
    streams = DeviceBuffer<float>(S * hc * D, "residual streams");
    partial = DeviceBuffer<float>(S * static_cast<std::size_t>(hyper_blocks(c.hidden_size)) * ((2 + hc) * hc + 1), "mHC partial sums");
    mix_state = DeviceBuffer<float>(S * static_cast<std::size_t>(mix_state_size(c.hc_mult)), "mHC mix state");
    x = DeviceBuffer<float>(S * D, "sub-layer input");
    px = DeviceBuffer<float>(S * static_cast<std::size_t>(px_stride), "attention input projections");
    q_residual = DeviceBuffer<float>(S * static_cast<std::size_t>(c.q_lora_rank), "q_residual");
    pq = DeviceBuffer<float>(S * static_cast<std::size_t>(pq_stride), "queries");
    latent = DeviceBuffer<float>(S * d, "window latents");
    o = DeviceBuffer<float>(S * H * d, "attention output");
    grouped = DeviceBuffer<float>(S * static_cast<std::size_t>(c.o_groups * c.o_lora_rank), "grouped projection");
    y = DeviceBuffer<float>(S * D, "sub-layer output");
    router_logits = DeviceBuffer<float>(S * static_cast<std::size_t>(c.n_routed_experts), "router logits");
    chosen = DeviceBuffer<std::int32_t>(S * k, "routed experts");
    route_weights = DeviceBuffer<float>(S * k, "routing weights");
    hidden = DeviceBuffer<float>(S * (k + 1) * static_cast<std::size_t>(c.moe_intermediate_size), "expert hidden");
    head_in = DeviceBuffer<float>(S * D, "final hidden");
    logits = DeviceBuffer<float>(S * static_cast<std::size_t>(c.vocab_size), "logits");
    selected = DeviceBuffer<std::int32_t>(static_cast<std::size_t>(batch * std::max<index_t>(c.index_topk, 1)), "selected entries");
    attn_o = DeviceBuffer<float>(static_cast<std::size_t>(batch) * H * static_cast<std::size_t>(splits) * d, "attention partial outputs");
    attn_ml = DeviceBuffer<float>(static_cast<std::size_t>(batch) * H * static_cast<std::size_t>(splits) * 2, "attention partial statistics");
  }
};

}  // namespace cuda::detail

// A KV controller whose reserve the CUDA decoder's kernels read and write (lsa::cuda::DecoderLookahead).
template <class Kv, class Storage>
concept paged_device_kv = std::is_same_v<typename Kv::storage, Storage> &&
                          requires(Kv& kv, ::flashmemory::lsa::cuda::DecoderShape const& shape, cudaStream_t s, index_t n) {
                            kv.bind(shape, s);
                            kv.begin_step(n);
                            kv.end_step(n);
                            { kv.entry_pool(n) } -> std::same_as<Storage*>;
                            { kv.rows(n) } -> std::same_as<std::int32_t*>;
                            { kv.offer(n) } -> std::same_as<float*>;
                          };

template <class Storage, class Kv>
class Decoder<::flashmemory::cuda::BasicBackend<Storage>, Kv> {
  static constexpr bool kPaged = !std::is_same_v<Kv, FullResidentKv>;
  static_assert(!kPaged || paged_device_kv<Kv, Storage>,
                "deepseek_v4::Decoder<cuda>: the Kv parameter is FullResidentKv or a paged device controller in the "
                "decoder's storage type (lsa::cuda::DecoderLookahead<Scorer, Policy, Storage>)");
  using T = Storage;
  using KvMember = std::conditional_t<kPaged, Kv, std::monostate>;  // the native model needs no controller
  template <class U>
  using DeviceBuffer = ::flashmemory::cuda::DeviceBuffer<U>;

 public:
  using Options = CudaDecoderOptions;

  // The native model: every CSA chunk resident.
  Decoder(Config config, Weights const& weights, Options options = {})
    requires(!kPaged)
      : Decoder(std::move(config), weights, options, KvMember{}, kConstruct) {}

  // LSA: the controller is bound to this decoder here (it sizes its buffers for this model).
  Decoder(Config config, Weights const& weights, Options options, Kv kv)
    requires(kPaged)
      : Decoder(std::move(config), weights, options, std::move(kv), kConstruct) {}

 private:
  enum Construct { kConstruct };
  Decoder(Config config, Weights const& weights, Options options, KvMember kv, Construct)
      : config_(supported(std::move(config), options)), options_(options), weights_(cuda::upload_weights<T>(config_, weights)),
        kv_(std::move(kv)) {
    // The uploads ran on the legacy stream, which stream() does not wait for: let them land first.
    FLASHMEMORY_CUDA_CHECK(cudaDeviceSynchronize());
    Config const& c = config_;
    std::int64_t px = 0, pq = 0, max_rows = c.sliding_window;
    if constexpr (kPaged) {
      if (kv_.csa_layers() != c.count(LayerKind::csa))
        fail(errc::invalid_argument, "deepseek_v4::Decoder<cuda>: the KV controller serves ", kv_.csa_layers(),
             " CSA layers, the model has ", c.count(LayerKind::csa));
      kv_.bind({.entry_channels = c.head_dim, .key_channels = c.index_head_dim, .hidden = c.hidden_size,
                .index_heads = c.index_n_heads,
                .head_weight_fold = static_cast<float>(1.0 / std::sqrt(double(c.index_n_heads) * double(c.index_head_dim))),
                .ratio = c.compress_rate_csa, .max_context = options_.max_context, .max_step = options_.max_chunk},
               stream_);
    }
    for (index_t l = 0, csa = 0; l < c.num_hidden_layers; ++l) {
      csa_index_.push_back(c.layer_types[static_cast<std::size_t>(l)] == LayerKind::csa ? csa++ : -1);
      px = std::max(px, weights_.layers[static_cast<std::size_t>(l)].layout.rows);
      pq = std::max(pq, weights_.layers[static_cast<std::size_t>(l)].layout.q_rows);
      max_rows = std::max(max_rows, rows_per_token(l));
    }
    for (index_t l = 0; l < c.num_hidden_layers; ++l)
      cache_.emplace_back(c, l, options_.max_context, kPaged && c.layer_types[static_cast<std::size_t>(l)] == LayerKind::csa,
                          options_.batch);
    for (index_t l = 0; l < c.num_hidden_layers; ++l) {
      std::int64_t const rows = c.layer_types[static_cast<std::size_t>(l)] != LayerKind::csa ? 0
                                : kPaged                                                      ? paged_rows()
                                                                                              : options_.max_context / c.compress_rate_csa;
      scores_.emplace_back(static_cast<std::size_t>(options_.batch * rows), "layer " + std::to_string(l) + " index scores");
    }
    positions_.assign(static_cast<std::size_t>(options_.batch), 0);
    std::int64_t const pass_tokens = std::max(options_.max_chunk, options_.batch);
    work_ = std::make_unique<cuda::detail::Workspace>(c, pass_tokens, options_.batch, px, pq, cuda::attention_splits(max_rows));
    linear_blocks_[0] = cuda::linear_resident_blocks<T>(1);
    linear_blocks_[1] = cuda::linear_resident_blocks<T>(2);
    int device = 0, major = 0;
    FLASHMEMORY_CUDA_CHECK(cudaGetDevice(&device));
    FLASHMEMORY_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    options_.overlap = options_.overlap && major >= 9;  // programmatic dependent launch is sm_90 and later
    ids_staging_ = ::flashmemory::cuda::PinnedBuffer<std::int32_t>(static_cast<std::size_t>(pass_tokens),
                                                                   ::flashmemory::cuda::PinnedBuffer<std::int32_t>::kHostOnly,
                                                                   "token id staging");
    reset();
    stream_.synchronize();
  }

 public:
  Config const& config() const noexcept { return config_; }
  Options const& options() const noexcept { return options_; }
  // Sequences (Options::batch).
  index_t batch() const noexcept { return options_.batch; }
  // Position of the next token of a sequence.
  index_t position(index_t sequence = 0) const { return positions_[checked(sequence)]; }
  // The most tokens the sequence can hold (Options::max_context).
  index_t capacity() const noexcept { return options_.max_context; }
  // The stream every kernel of this decoder runs on.
  cudaStream_t stream() const noexcept { return stream_.get(); }
  // The controller of the CSA layers' KV (footprint, statistics).
  Kv& kv() noexcept
    requires kPaged
  { return kv_; }
  Kv const& kv() const noexcept
    requires kPaged
  { return kv_; }

  // Starts every sequence anew (enqueued on stream()).
  void reset() {
    for (index_t b = 0; b < batch(); ++b) reset(b);
    if constexpr (kPaged) {
      kv_.reset();
      graph_.reset();  // the controller's buffers are new: capture the step again
    }
  }

  // Starts one sequence anew (a paged controller's state is reset only by reset()).
  void reset(index_t sequence) {
    positions_[checked(sequence)] = 0;
    FLASHMEMORY_CUDA_CHECK(cudaMemsetAsync(work_->position.data() + sequence, 0, sizeof(std::int64_t), stream_));
    for (index_t l = 0; l < config_.num_hidden_layers; ++l) {
      cache_[static_cast<std::size_t>(l)].reset(sequence, stream_);
      auto& scores = scores_[static_cast<std::size_t>(l)];
      std::int64_t const rows = static_cast<std::int64_t>(scores.size()) / batch();
      cuda::detail::fill(scores.data() + sequence * rows, rows, cuda::detail::kNegInf, stream_);
    }
  }

  // Ends a full-KV prefill (lsa::cuda::DecoderLookahead::hand_over): the reserve shrinks to `cells` cells.
  void hand_over(index_t cells)
    requires kPaged
  {
    kv_.hand_over(cells);
    graph_.reset();
  }

  // Appends `ids` to a sequence; returns the logits of the last token [V] or of every token [S, V].
  std::vector<float> forward(std::span<index_t const> ids, Logits which = Logits::last, index_t sequence = 0) {
    index_t const S = static_cast<index_t>(ids.size()), V = config_.vocab_size;
    checked(sequence);
    expect_vocabulary(ids);
    if (S == 0) return {};
    expect_room(sequence, S);
    std::vector<float> logits(static_cast<std::size_t>((which == Logits::all ? S : 1) * V));
    for (index_t at = 0; at < S;) {
      index_t const n = std::min<index_t>(options_.max_chunk, S - at);
      bool const last = at + n == S;
      index_t const first = which == Logits::all ? 0 : last ? n - 1 : n;  // tokens [first, n) get logits
      for (index_t i = 0; i < n; ++i) ids_staging_[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(ids[at + i]);
      if constexpr (kPaged) kv_.begin_step(n);
      FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(work_->ids.data(), ids_staging_.data(), static_cast<std::size_t>(n) * 4,
                                             cudaMemcpyHostToDevice, stream_));
      if (n == 1 && first == 0 && batch() == 1) run_step();
      else enqueue({.tokens = n, .first = first, .sequence = sequence, .batched = false});
      positions_[static_cast<std::size_t>(sequence)] += n;
      if (first < n) {
        float* dst = logits.data() + (which == Logits::all ? at * V : 0);
        FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(dst, work_->logits.data(), static_cast<std::size_t>((n - first) * V) * 4,
                                               cudaMemcpyDeviceToHost, stream_));
      }
      stream_.synchronize();  // the staging buffer is reused by the next chunk; faults surface here
      if constexpr (kPaged) kv_.end_step(n);
      at += n;
    }
    return logits;
  }

  // Appends ids[b] to sequence b, for every sequence at once; returns their logits [batch, V].
  std::vector<float> decode(std::span<index_t const> ids) {
    if (static_cast<index_t>(ids.size()) != batch())
      fail(errc::bad_shape, "deepseek_v4::Decoder<cuda>: decode() takes one token per sequence: ", ids.size(), " tokens for a batch of ",
           batch());
    expect_vocabulary(ids);
    for (std::size_t b = 0; b < ids.size(); ++b) ids_staging_[b] = static_cast<std::int32_t>(ids[b]);
    FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(device_token(), ids_staging_.data(), ids.size() * 4, cudaMemcpyHostToDevice, stream_));
    step();
    std::vector<float> logits(ids.size() * static_cast<std::size_t>(config_.vocab_size));
    FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(logits.data(), device_logits(), logits.size() * 4, cudaMemcpyDeviceToHost, stream_));
    stream_.synchronize();
    return logits;
  }

  // Device-side decoding (generation loops that keep tokens on the GPU, benchmarks): step() appends the
  // tokens at device_token() [batch] to their sequences and leaves their logits [batch, V] in
  // device_logits(). Enqueued on stream(); it neither allocates nor waits for the device (with a paged
  // controller, except at window boundaries: Level 1).
  std::int32_t* device_token() noexcept { return work_->ids.data(); }
  float const* device_logits() const noexcept { return work_->logits.data(); }
  void step() {
    for (index_t b = 0; b < batch(); ++b) expect_room(b, 1);
    if constexpr (kPaged) kv_.begin_step(1);
    run_step();
    for (index_t& p : positions_) ++p;
    if constexpr (kPaged) kv_.end_step(1);
  }

  // Benchmarks: drops every sequence and stands in random rows for a history of `tokens` tokens in each (the
  // window, the compressed entries and index keys they would have emitted; compressor states empty, so
  // `tokens` should be a multiple of the compress rates), then continues at position `tokens`.
  void fill_context_for_benchmark(index_t tokens, std::uint64_t seed) {
    if (tokens < 0 || tokens >= capacity())
      fail(errc::invalid_argument, "deepseek_v4::Decoder<cuda>: a history of ", tokens, " tokens leaves no room in ", capacity());
    if (kPaged) fail(errc::unsupported, "deepseek_v4::Decoder<cuda>: a random history stands in for resident pools only (FullResidentKv)");
    reset();
    for (index_t b = 0; b < batch(); ++b)
      for (std::size_t l = 0; l < cache_.size(); ++l)
        cache_[l].fill_random(b, tokens, seed + 3 * l + 1000 * static_cast<std::uint64_t>(b), stream_);
    cuda::detail::launch("deepseek_v4 advance_position_kernel", false, cuda::detail::advance_position_kernel, dim3(1), dim3(1), 0,
                         stream_.get(), work_->position.data(), std::int64_t{batch()}, std::int64_t{tokens})
        .throw_if_error();
    positions_.assign(positions_.size(), tokens);
    stream_.synchronize();
  }

 private:
  // The config, after checking what these kernels serve (before anything is allocated).
  static Config supported(Config c, Options const& o) {
    if (o.max_context < 1 || o.max_chunk < 1 || o.max_chunk > 65535 || o.batch < 1 || o.batch > 65535)
      fail(errc::invalid_argument, "deepseek_v4::Decoder<cuda>: max_context ", o.max_context, ", max_chunk ", o.max_chunk, " and batch ",
           o.batch, " must be positive (max_chunk and batch at most 65535)");
    if (kPaged && o.batch != 1)
      fail(errc::unsupported, "deepseek_v4::Decoder<cuda>: a paged KV controller serves one sequence (Options::batch = ", o.batch, ")");
    if (c.count(LayerKind::csa) > 0 && c.index_topk > ::flashmemory::indexer::cuda::TopK::kMaxK)
      fail(errc::unsupported, "deepseek_v4::Decoder<cuda>: index_topk ", c.index_topk, " exceeds the top-k kernel's ",
           ::flashmemory::indexer::cuda::TopK::kMaxK);
    for (auto [what, v] : {std::pair{"hidden_size", c.hidden_size}, std::pair{"head_dim", c.head_dim},
                           std::pair{"q_lora_rank", c.q_lora_rank}, std::pair{"moe_intermediate_size", c.moe_intermediate_size},
                           std::pair{"o_lora_rank · o_groups", c.o_groups * c.o_lora_rank},
                           std::pair{"head_dim · heads / o_groups", c.head_dim * c.num_attention_heads / c.o_groups},
                           std::pair{"index_head_dim", c.count(LayerKind::csa) > 0 ? c.index_head_dim : 8}})
      if (v % 8 != 0)
        fail(errc::unsupported, "deepseek_v4::Decoder<cuda>: ", what, " = ", v, " is not a multiple of 8 (16-byte rows)");
    if (c.head_dim > cuda::kMaxAttentionDim)
      fail(errc::unsupported, "deepseek_v4::Decoder<cuda>: head_dim ", c.head_dim, " exceeds ", cuda::kMaxAttentionDim);
    if (c.hc_mult > cuda::kMaxHc || c.n_routed_experts > cuda::kMaxExperts || c.num_experts_per_tok > cuda::kMaxExpertsPerToken)
      fail(errc::unsupported, "deepseek_v4::Decoder<cuda>: hc_mult ", c.hc_mult, " (at most ", cuda::kMaxHc, "), ",
           c.num_experts_per_tok, " of ", c.n_routed_experts, " experts (at most ", cuda::kMaxExpertsPerToken, " of ",
           cuda::kMaxExperts, ")");
    return c;
  }

  // Rows of a paged controller's reserve (what a paged CSA layer's scores cover), or −1.
  std::int64_t paged_rows() const {
    if constexpr (kPaged) return kv_.max_pool_rows();
    else return -1;
  }

  std::size_t checked(index_t sequence) const {
    if (sequence < 0 || sequence >= batch())
      fail(errc::invalid_argument, "deepseek_v4::Decoder<cuda>: sequence ", sequence, " of a batch of ", batch());
    return static_cast<std::size_t>(sequence);
  }

  void expect_room(index_t sequence, index_t tokens) const {
    index_t const at = positions_[static_cast<std::size_t>(sequence)];
    if (at + tokens > capacity())
      fail(errc::out_of_memory, "deepseek_v4::Decoder<cuda>: ", tokens, " more tokens at position ", at, batch() > 1 ? " of sequence " : "",
           batch() > 1 ? std::to_string(sequence) : std::string(), " exceed the max context of ", capacity(),
           " tokens given at construction (Options::max_context)");
  }

  void expect_vocabulary(std::span<index_t const> ids) const {
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= config_.vocab_size)
        fail(errc::invalid_argument, "deepseek_v4::Decoder<cuda>: token id ", ids[i], " at index ", i, " is outside the vocabulary [0, ",
             config_.vocab_size, ")");
  }

  // Rows one token of layer l attends to at most: the window and the entries its kind may add.
  std::int64_t rows_per_token(index_t l) const {
    Config const& c = config_;
    switch (c.layer_types[static_cast<std::size_t>(l)]) {
      case LayerKind::sliding: return c.sliding_window;
      case LayerKind::csa: return c.sliding_window + c.index_topk;
      case LayerKind::hca: return c.sliding_window + options_.max_context / c.compress_rate_hca;
    }
    return c.sliding_window;
  }

  // One token of every sequence, with logits: replays the captured graph (capturing it the first time) or
  // enqueues directly.
  void run_step() {
    Pass const step{.tokens = batch(), .first = 0, .sequence = 0, .batched = true};
    if (!options_.graph) {
      enqueue(step);
      return;
    }
    if (!graph_) {
      cudaGraph_t g = nullptr;
      FLASHMEMORY_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      try {
        enqueue(step);
      } catch (...) {
        cudaStreamEndCapture(stream_, &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      FLASHMEMORY_CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
      cudaGraphExec_t exec = nullptr;
      cudaError_t const err = cudaGraphInstantiate(&exec, g, 0);
      cudaGraphDestroy(g);
      FLASHMEMORY_CUDA_CHECK(err);
      graph_.reset(exec);
    }
    FLASHMEMORY_CUDA_CHECK(cudaGraphLaunch(graph_.get(), stream_));
  }

  // One pass of `tokens` tokens whose ids are in the workspace: a chunk of one sequence, or one token of each
  // sequence (`batched`: token s is sequence s's). Logits for tokens [first, tokens).
  struct Pass {
    std::int64_t tokens = 0, first = 0;
    index_t sequence = 0;  // the chunk's; 0 for a batch
    bool batched = false;
  };

  void enqueue(Pass const& pass) {
    Config const& c = config_;
    cuda::detail::Workspace& w = *work_;
    cudaStream_t const st = stream_;
    std::int64_t const S = pass.tokens, first = pass.first;
    std::int64_t const D = c.hidden_size, H = c.num_attention_heads, d = c.head_dim, hc = c.hc_mult;
    // Where the tokens' positions are read: a chunk's token s at position[sequence] + s, a batch's token s
    // (sequence s's) at position[s] (a batch's pass has sequence 0).
    std::int64_t* const positions = w.position.data();
    std::int64_t const* const pos = positions + pass.sequence;
    bool const pdl = options_.overlap;
    auto check = [](Status const& s) { s.throw_if_error(); };
    // y = x · Wᵀ for the tokens of the chunk (a: weights, shapes and buffers; the launch settings are added).
    auto linear = [&](cuda::LinearArguments<T> a) {
      a.stream = st;
      a.overlap = pdl;
      a.max_blocks = linear_blocks_[a.tokens == 1 ? 0 : 1];
      check(cuda::linear<T>(a));
    };

    check(cuda::embed_streams<T>({weights_.embed.data(), w.ids.data(), w.streams.data(), S, D, static_cast<int>(hc), st, pdl}));
    float const* placed = nullptr;  // the previous sub-layer's output, placed into the streams by the next site
    // mHC site: place `placed`, mix, collapse, norm → w.x for every token of the chunk.
    auto site = [&](cuda::DeviceHyperConnection const& hcw, DeviceBuffer<float> const& norm) {
      check(cuda::hyper_partial({w.streams.data(), S, D, static_cast<int>(hc), hcw.fn.data(), static_cast<int>((2 + hc) * hc),
                                 placed, w.mix_state.data(), w.partial.data(), st, pdl}));
      check(cuda::hyper_finish({w.streams.data(), w.partial.data(), 0, S, D, static_cast<int>(hc), false, hcw.base.data(),
                                hcw.scale.data(), static_cast<int>(c.hc_sinkhorn_iters), c.rms_norm_eps, c.hc_eps, norm.data(),
                                w.mix_state.data(), w.x.data(), st, pdl}));
    };

    for (index_t l = 0; l < c.num_hidden_layers; ++l) {
      auto const& lw = weights_.layers[static_cast<std::size_t>(l)];
      cuda::ProjectionLayout const& p = lw.layout;
      LayerKind const kind = c.layer_types[static_cast<std::size_t>(l)];
      cuda::DeviceRope const rope = kind == LayerKind::sliding ? device_rope(weights_.rope_main, weights_.rope_main_scale)
                                                               : device_rope(weights_.rope_compress, weights_.rope_compress_scale);

      // ---- attention sub-layer ------------------------------------------------------------------------
      site(lw.hc_attn, lw.attn_norm);
      // Runs norm/RoPE jobs over this call's S tokens at this layer's rope.
      auto norm_rope = [&](cuda::NormRopeArguments& nr) {
        nr.tokens = S;
        nr.position = pos;
        nr.batch = pass.batched;
        nr.rope = rope;
        nr.eps = c.rms_norm_eps;
        nr.stream = st;
        nr.overlap = pdl;
        check(cuda::norm_rope(nr));
      };
      linear({lw.proj_x.data(), p.rows, D, w.x.data(), D, S, 0, 0, w.px.data(), w.px_stride});
      {
        cuda::NormRopeArguments nr;
        nr.jobs[0] = {w.px.data() + p.q_a, w.q_residual.data(), w.px_stride, c.q_lora_rank, static_cast<int>(c.q_lora_rank), 1,
                      lw.q_norm.data(), true, false};
        nr.jobs[1] = {w.px.data() + p.kv, w.latent.data(), w.px_stride, d, static_cast<int>(d), 1, lw.kv_norm.data(), true, true};
        nr.count = 2;
        norm_rope(nr);
      }
      linear({lw.proj_q.data(), p.q_rows, c.q_lora_rank, w.q_residual.data(), c.q_lora_rank, S, 0, 0, w.pq.data(), w.pq_stride});
      {
        cuda::NormRopeArguments nr;
        nr.jobs[0] = {w.pq.data() + p.q, w.pq.data() + p.q, w.pq_stride, w.pq_stride, static_cast<int>(d), static_cast<int>(H),
                      nullptr, true, true};
        nr.count = 1;
        if (kind == LayerKind::csa) {
          nr.jobs[1] = {w.pq.data() + p.index_q, w.pq.data() + p.index_q, w.pq_stride, w.pq_stride,
                        static_cast<int>(c.index_head_dim), static_cast<int>(c.index_n_heads), nullptr, false, true};
          nr.count = 2;
        }
        norm_rope(nr);
      }
      index_t const ci = csa_index_[static_cast<std::size_t>(l)];
      if constexpr (kPaged)
        if (index_t t = ci >= 0 ? kv_.target_index(ci) : -1; t >= 0) {
          // Level-1 inputs of this target layer: the last token's attention input, indexer query, head weights.
          std::int64_t const I = c.index_n_heads * c.index_head_dim;
          auto copy = [&](float* dst, float const* src, std::int64_t n) {
            FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * 4, cudaMemcpyDeviceToDevice, st));
          };
          float* offer = kv_.offer(t);
          copy(offer, w.x.data() + (S - 1) * D, D);
          copy(offer + D, w.pq.data() + (S - 1) * w.pq_stride + p.index_q, I);
          copy(offer + D + I, w.px.data() + (S - 1) * w.px_stride + p.index_weights, c.index_n_heads);
        }

      // The per-token kernels run token by token for a chunk (token s + 1 may overwrite the scores and rows
      // token s reads), and once for all the sequences of a batch (`sequences` = S: sequence b's token is row
      // b of the activations, its cache slice b of the layer's buffers).
      struct Tokens {
        std::int64_t sequence;  // the first sequence (its position: positions[sequence])
        std::int64_t token;     // row of the first token in the activations, and its offset from that position
        int sequences;
      };
      auto& kc = cache_[static_cast<std::size_t>(l)];
      std::int64_t const score_rows = kind == LayerKind::csa ? scores_[static_cast<std::size_t>(l)].size() / batch() : 0;
      // The cache update of the tokens, and on CSA layers their index scores.
      auto update = [&](Tokens const& t) {
        cuda::KvStepArguments<T> kv;
        kv.position = positions + t.sequence;
        kv.token = t.token;
        kv.sequences = t.sequences;
        kv.latent = w.latent.data();
        kv.latent_stride = d;
        kv.window = kc.window_of(t.sequence);
        kv.window_rows = static_cast<int>(c.sliding_window);
        kv.dim = static_cast<int>(d);
        float const* const px = w.px.data();
        if (kc.compressor)
          kv.compressors[kv.count++] =
              kc.compressor->step(lw.comp_ape.data(), lw.comp_norm.data(), px + p.comp_kv, px + p.comp_gate, w.px_stride, t.sequence);
        if (kc.indexer)
          kv.compressors[kv.count++] =
              kc.indexer->step(lw.index_ape.data(), lw.index_norm.data(), px + p.index_kv, px + p.index_gate, w.px_stride, t.sequence);
        if constexpr (kPaged)
          if (ci >= 0) {  // entries and keys go to the controller's reserve and rings
            cuda::PagedRows<T> const rows{kv_.page_cells(), kv_.rows(ci), static_cast<int>(kv_.chunks_per_page())};
            kv.compressors[0].pool = kv_.entry_pool(ci);
            kv.compressors[0].paged = rows;
            kv.compressors[0].paged.ring = kv_.entry_ring(ci);
            kv.compressors[1].pool = kv_.key_pool(ci);
            kv.compressors[1].paged = rows;
            kv.compressors[1].paged.ring = kv_.key_ring(ci);
            kv.compressors[0].paged.ring_rows = kv.compressors[1].paged.ring_rows = kv_.ring_rows();
          }
        kv.rope = rope;
        kv.eps = c.rms_norm_eps;
        kv.stream = st;
        kv.overlap = pdl;
        check(cuda::kv_step(kv));
        if (kind != LayerKind::csa) return;
        auto& ix = *kc.indexer;
        cuda::IndexScoreArguments<T> is{
            .q = w.pq.data() + t.token * w.pq_stride + p.index_q,
            .weights = w.px.data() + t.token * w.px_stride + p.index_weights,
            .fold = static_cast<float>(1.0 / std::sqrt(double(c.index_n_heads) * double(c.index_head_dim))),
            .keys = ix.pool_of(t.sequence),
            .capacity = score_rows,
            .heads = static_cast<int>(c.index_n_heads),
            .dim = static_cast<int>(c.index_head_dim),
            .ratio = ix.ratio,
            .position = positions + t.sequence,
            .token = t.token,
            .scores = scores_[static_cast<std::size_t>(l)].data() + t.sequence * score_rows,
            .stream = st,
            .overlap = pdl,
            .sequences = t.sequences,
            .q_stride = w.pq_stride,
            .weights_stride = w.px_stride};
        if constexpr (kPaged) is.keys = kv_.key_pool(ci), is.capacity = kv_.pool_rows(), is.rows = kv_.rows(ci);
        check(cuda::index_scores<T>(is));
        // Their top-k (a batch's rows in one launch); a chunk's selection is row 0.
        std::int64_t width = score_rows;  // a batch's rows lie score_rows apart (a paged controller: one row)
        if constexpr (kPaged) width = kv_.pool_rows();
        matrix_view<float const> const scores(is.scores, t.sequences, width);
        matrix_view<std::int32_t> const selected(w.selected.data(), t.sequences, c.index_topk);
        check(topk_.run({scores, {}, {}, selected, st}));
      };
      // Attention of the tokens (after their update).
      auto attend = [&](Tokens const& t) {
        cuda::AttentionArguments<T> at;
        if (kind == LayerKind::csa) {
          at.mode = cuda::PoolRows::selected;
          at.selected = w.selected.data();
          at.slots = static_cast<int>(c.index_topk);
        } else if (kind == LayerKind::hca) {
          at.mode = cuda::PoolRows::causal;
          at.ratio = kc.compressor->ratio;
        }
        at.q = w.pq.data() + t.token * w.pq_stride + p.q;
        at.q_stride = w.pq_stride;
        at.window = kc.window_of(t.sequence);
        at.window_rows = static_cast<int>(c.sliding_window);
        if (kc.compressor) {
          at.pool = kc.compressor->pool_of(t.sequence);
          at.pool_rows = kc.compressor->capacity;
          if constexpr (kPaged)
            if (ci >= 0) at.pool = kv_.entry_pool(ci), at.pool_rows = kv_.pool_rows();
        }
        at.sink = lw.sink.data();
        at.scale = static_cast<float>(1.0 / std::sqrt(double(d)));
        at.heads = static_cast<int>(H);
        at.dim = static_cast<int>(d);
        at.position = positions + t.sequence;
        at.token = t.token;
        at.splits = cuda::attention_splits(rows_per_token(l));
        at.partial_o = w.attn_o.data();
        at.partial_ml = w.attn_ml.data();
        at.rope = rope;
        at.out = w.o.data() + t.token * H * d;
        at.out_stride = H * d;
        at.sequences = t.sequences;
        at.stream = st;
        at.overlap = pdl;
        check(cuda::attention<T>(at));
      };
      if (pass.batched) {
        Tokens const all{0, 0, static_cast<int>(S)};
        update(all);
        attend(all);
      } else {
        for (std::int64_t s = 0; s < S; ++s) {
          Tokens const one{pass.sequence, s, 1};
          update(one);
          attend(one);
        }
      }

      std::int64_t const G = c.o_groups, R = c.o_lora_rank, gin = H * d / G;
      linear({lw.wo_a.data(), G * R, gin, w.o.data(), H * d, S, R, gin, w.grouped.data(), G * R});
      linear({lw.wo_b.data(), D, G * R, w.grouped.data(), G * R, S, 0, 0, w.y.data(), D});
      placed = w.y.data();

      // ---- MoE sub-layer ------------------------------------------------------------------------------
      site(lw.hc_ffn, lw.ffn_norm);
      std::int64_t const E = c.n_routed_experts;
      int const k = static_cast<int>(c.num_experts_per_tok);
      linear({lw.gate.data(), E, D, w.x.data(), D, S, 0, 0, w.router_logits.data(), E});
      bool const hash = c.mlp_layer_types[static_cast<std::size_t>(l)] == MlpKind::hash_moe;
      check(cuda::route({w.router_logits.data(), S, static_cast<int>(E), k, hash ? nullptr : lw.gate_bias.data(),
                         hash ? lw.tid2eid.data() : nullptr, w.ids.data(), c.scoring_func,
                         static_cast<float>(c.routed_scaling_factor), w.chosen.data(), w.route_weights.data(), st, pdl}));
      check(cuda::experts<T>({lw.w1.data(), lw.w3.data(), lw.w2.data(), D, c.moe_intermediate_size, static_cast<int>(E), k,
                              w.x.data(), S, w.chosen.data(), w.route_weights.data(), static_cast<float>(c.swiglu_limit),
                              w.hidden.data(), w.y.data(), st, pdl}));
    }

    // ---- head hyper-connection, final norm, LM head for tokens [first, S) -------------------------------
    if (first < S) {
      std::int64_t const n = S - first, ms = cuda::mix_state_size(static_cast<int>(hc));
      float* streams = w.streams.data() + first * hc * D;
      check(cuda::hyper_partial({streams, n, D, static_cast<int>(hc), weights_.hc_head.fn.data(), static_cast<int>(hc),
                                 placed + first * D, w.mix_state.data() + first * ms, w.partial.data(), st, pdl}));
      check(cuda::hyper_finish({streams, w.partial.data(), 0, n, D, static_cast<int>(hc), true, weights_.hc_head.base.data(),
                                weights_.hc_head.scale.data(), 0, c.rms_norm_eps, c.hc_eps, weights_.norm.data(), nullptr,
                                w.head_in.data(), st, pdl}));
      linear({weights_.head.data(), c.vocab_size, D, w.head_in.data(), D, n, 0, 0, w.logits.data(), c.vocab_size});
    }
    check(cuda::detail::launch("deepseek_v4 advance_position_kernel", pdl, cuda::detail::advance_position_kernel, dim3(1), dim3(1), 0, st,
                               positions + pass.sequence, pass.batched ? S : 1, pass.batched ? 1 : S));
  }

  static cuda::DeviceRope device_rope(DeviceBuffer<float> const& inv_freq, float scale) {
    return {inv_freq.data(), static_cast<int>(inv_freq.size()), scale};
  }

  Config config_;
  Options options_;
  ::flashmemory::cuda::Stream stream_;
  cuda::DeviceWeights<T> weights_;
  KvMember kv_;
  std::vector<index_t> csa_index_;  // per layer: its number among the CSA layers, −1 for the others
  std::vector<cuda::DeviceLayerCache<T>> cache_;  // per layer, every sequence's slice
  // Per layer: a CSA layer's index scores [batch, rows] (−∞ past each sequence's causal entries), which its
  // top-k reads (all sequences of a batched step in one launch).
  std::vector<DeviceBuffer<float>> scores_;
  std::unique_ptr<cuda::detail::Workspace> work_;
  ::flashmemory::cuda::PinnedBuffer<std::int32_t> ids_staging_;
  ::flashmemory::indexer::cuda::TopK topk_;
  cuda::detail::GraphExec graph_;
  int linear_blocks_[2] = {0, 0};  // the linear kernel's resident blocks for one token / a tile of tokens
  std::vector<index_t> positions_;  // per sequence: the next token's position
};

}  // namespace flashmemory::models::deepseek_v4
