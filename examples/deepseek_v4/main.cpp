// fm-dsv4 — run the DeepSeek-V4 reference decoder on a checkpoint, or report its KV-cache footprint.
//
//   fm-dsv4 [CHECKPOINT] [options]           prefill a prompt, decode, print ids, tokens/s and KV bytes
//   fm-dsv4 [CHECKPOINT] --lsa MODE [...]     the same with Lookahead Sparse Attention on the CSA layers
//   fm-dsv4 --kv-report --context N [--config FILE]
//
// With no CHECKPOINT the embedded tiny checkpoint is used (FLASHMEMORY_DSV4_TINY_CHECKPOINT, compiled in).
// This file is host-only; --device cuda goes through cuda_decoder.hpp.
#include "cuda_decoder.hpp"
#include "evidence.hpp"
#include "lsa_parts.hpp"

#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/lsa/native_trace.hpp>
#include <flashmemory/models/deepseek_v4/decoder.hpp>
#include <flashmemory/models/deepseek_v4/kv_footprint.hpp>
#include <flashmemory/models/deepseek_v4/load.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <functional>
#include <iostream>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#ifndef FLASHMEMORY_DSV4_TINY_CHECKPOINT
#error "FLASHMEMORY_DSV4_TINY_CHECKPOINT must name the embedded tiny checkpoint directory"
#endif

namespace {

namespace fm = flashmemory;
namespace v4 = flashmemory::models::deepseek_v4;

constexpr char const* kUsage = R"(usage:
  fm-dsv4 [CHECKPOINT] [options]
      CHECKPOINT          directory with config.json and *.safetensors (sharded index supported);
                          default: the embedded tiny checkpoint
      --prompt IDS        prompt token ids, separated by commas or spaces
      --prompt-len N      random prompt of N tokens (default 64) when --prompt is not given
      --max-new-tokens N  tokens to generate (default 32)
      --temperature T     0 = greedy (default); > 0 samples from softmax(logits / T)
      --top-p P           nucleus sampling mass in (0, 1] (default 1)
      --seed S            seed of the prompt and of sampling (default 0)
      --chunk N           prefill chunk size (default 256)
      --stop-at-eos       stop when the model emits an end-of-sequence token
      --device cpu|cuda   where to run (default cpu): the float32 host reference, or the CUDA decoder
      --cuda-storage S    bf16 (default) or f32: what the CUDA decoder keeps weights and KV in (f32 matches
                          the host reference to rounding error)
      --batch N           with --device cuda: decode N sequences together, one token each per step (the
                          prompt, then N − 1 more random prompts of its length); default 1
    Lookahead Sparse Attention on the CSA layers (docs/deepseek-v4.md, "LSA on the CSA layers"):
      --lsa MODE          off (default: every chunk resident, the native model) or the Level-1 scorer:
                          memory (the Memory Indexer, needs --indexer), recency, random, oracle (labels
                          from a first, full-attention pass; the LSA pass is fed its tokens; cpu only),
                          minmax. With --device cuda: lsa::cuda::DecoderLookahead, bf16 rows, recalls on
                          a copy stream
      --policy P          threshold (chunks scoring > 0.5), densest (the densest --budget of the pages)
                          or topfraction (the best --budget of the pages); default threshold for memory and
                          oracle, topfraction otherwise (threshold and densest need probability scores)
      --tau N             window length in tokens: Level 1 runs every N tokens (default 64)
      --budget F          GPU reserve as a fraction of the pages of the whole run, in (0, 1] (default 0.25),
                          plus one cell for the page being written
      --page N            chunks per page, the unit of recall (default 64 = 256 tokens)
      --indexer FILE      Memory Indexer weights: safetensors with retrievers.l{L}.{wq_a.weight,
                          q_norm_weight, wq_b.weight, weights_proj.weight}, L = target CSA layer
  fm-dsv4 --kv-report --context N [--config FILE]
      KV-cache bytes per layer kind at N tokens, bf16 and packed fp8 records;
      FILE is a config.json (default: the embedded tiny checkpoint's)
  fm-dsv4 [CHECKPOINT] --dump DIR --tasks TASKS [--tau N] [--nucleus-p P] [--votes N]
      the Memory Indexer's training data (docs/training.md §8): every task document (prompt and
      answer) through the float32 decoder with full attention; a sample at the prompt's last token and at
      each answer token: the hidden states entering each CSA layer, the index keys of every chunk and the
      golden labels (nucleus --nucleus-p of each layer's top-k, default 0.6; --votes layers agreeing,
      default 2; union over the next --tau tokens, default 64); one safetensors file per document
  fm-dsv4 [CHECKPOINT] --eval TASKS --out FILE [--indexer FILE] [--modes LIST] [--budget F] [--page N]
      answers the items of TASKS greedily with each KV mode after one shared full-attention prefill (the
      prompt on full KV, the answer with LSA, as the paper serves): full, memory_threshold,
      memory_densest, recency, random, minmax, oracle (the golden labels of the full-attention answer,
      threshold policy: a perfect Memory Indexer) (default: all; memory_* need --indexer). Equal-
      budget modes keep --budget of the pages (default 0.125) including a tail of 16 chunks; pages of
      --page chunks (default 16); --nucleus-p and --votes filter the oracle's golden labels as --dump's.
      One JSONL line per item and mode (tools/lsa_table.py: the table). With --device cuda: the CUDA
      decoder with LSA (bf16 rows, recalls on a copy stream), each mode prefilling again; no oracle
    Both read TASKS from tools/make_tasks.py generate and take [--items N] (per task and length),
    [--lengths L1,L2,...] and [--shard K/N] (items whose index is K mod N: parallel processes)
  fm-dsv4 --help
)";

struct Usage : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class T>
T parse_number(std::string_view option, std::string_view text) {
  T value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size())
    throw Usage(std::string(option) + ": expected a number, found \"" + std::string(text) + "\"");
  return value;
}

struct Options {
  std::filesystem::path checkpoint = FLASHMEMORY_DSV4_TINY_CHECKPOINT;
  std::optional<std::string> prompt;
  fm::index_t prompt_len = 64, max_new_tokens = 32, chunk = 256, context = -1, batch = 1;
  double temperature = 0.0, top_p = 1.0;
  std::uint64_t seed = 0;
  bool stop_at_eos = false, kv_report = false, help = false;
  std::optional<std::filesystem::path> config;
  std::string device = "cpu";
  std::optional<std::string> cuda_storage;
  // LSA
  std::string lsa = "off";
  std::optional<std::string> policy;
  std::optional<fm::index_t> tau, page;
  std::optional<double> budget;
  std::optional<std::filesystem::path> indexer;
  // Evidence (evidence.hpp)
  std::optional<std::filesystem::path> dump, tasks, eval, out;
  fm::index_t items = 0, votes = fm_dsv4::kGoldenFilter.votes, shard = 0, shards = 1;
  double nucleus_p = fm_dsv4::kGoldenFilter.nucleus_p;
  std::vector<fm::index_t> lengths;
  std::vector<std::string> modes;
};

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> parts;
  for (std::size_t at = 0; at <= text.size();) {
    std::size_t end = std::min(text.find(',', at), text.size());
    if (end > at) parts.emplace_back(text.substr(at, end - at));
    at = end + 1;
  }
  return parts;
}

bool probability_scorer(std::string_view lsa) { return lsa == "memory" || lsa == "oracle"; }

std::string one_of(std::string_view option, std::string_view value, std::initializer_list<std::string_view> allowed) {
  std::string list;
  for (std::string_view a : allowed) {
    if (a == value) return std::string(value);
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  throw Usage(std::string(option) + ": expected one of " + list + ", found \"" + std::string(value) + "\"");
}

Options parse_args(int argc, char** argv) {
  Options o;
  bool have_checkpoint = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) throw Usage(std::string(a) + ": missing value");
      return argv[++i];
    };
    auto positive = [&](std::string_view v) {
      auto n = parse_number<fm::index_t>(a, v);
      if (n <= 0) throw Usage(std::string(a) + ": expected a positive integer, found " + std::string(v));
      return n;
    };
    if (a == "--help" || a == "-h") o.help = true;
    else if (a == "--prompt") o.prompt = std::string(value());
    else if (a == "--prompt-len") o.prompt_len = positive(value());
    else if (a == "--max-new-tokens") {
      o.max_new_tokens = parse_number<fm::index_t>(a, value());
      if (o.max_new_tokens < 0) throw Usage("--max-new-tokens: expected a count ≥ 0");
    } else if (a == "--temperature") {
      o.temperature = parse_number<double>(a, value());
      if (!(o.temperature >= 0)) throw Usage("--temperature: expected a number ≥ 0");
    } else if (a == "--top-p") {
      o.top_p = parse_number<double>(a, value());
      if (!(o.top_p > 0 && o.top_p <= 1)) throw Usage("--top-p: expected a number in (0, 1]");
    } else if (a == "--seed") o.seed = parse_number<std::uint64_t>(a, value());
    else if (a == "--chunk") o.chunk = positive(value());
    else if (a == "--batch") o.batch = positive(value());
    else if (a == "--stop-at-eos") o.stop_at_eos = true;
    else if (a == "--device") {
      o.device = std::string(value());
      if (o.device != "cpu" && o.device != "cuda") throw Usage("--device: expected cpu or cuda, found \"" + o.device + "\"");
    } else if (a == "--cuda-storage") o.cuda_storage = one_of(a, value(), {"bf16", "f32"});
    else if (a == "--lsa") o.lsa = one_of(a, value(), {"off", "memory", "recency", "random", "oracle", "minmax"});
    else if (a == "--policy") o.policy = one_of(a, value(), {"threshold", "densest", "topfraction"});
    else if (a == "--tau") o.tau = positive(value());
    else if (a == "--page") o.page = positive(value());
    else if (a == "--budget") {
      o.budget = parse_number<double>(a, value());
      if (!(*o.budget > 0 && *o.budget <= 1)) throw Usage("--budget: expected a fraction in (0, 1], found " + std::string(argv[i]));
    } else if (a == "--indexer") o.indexer = std::filesystem::path(value());
    else if (a == "--kv-report") o.kv_report = true;
    else if (a == "--dump") o.dump = std::filesystem::path(value());
    else if (a == "--tasks") o.tasks = std::filesystem::path(value());
    else if (a == "--eval") o.eval = std::filesystem::path(value());
    else if (a == "--out") o.out = std::filesystem::path(value());
    else if (a == "--items") o.items = positive(value());
    else if (a == "--votes") o.votes = positive(value());
    else if (a == "--nucleus-p") {
      o.nucleus_p = parse_number<double>(a, value());
      if (!(o.nucleus_p > 0 && o.nucleus_p <= 1)) throw Usage("--nucleus-p: expected a mass in (0, 1]");
    } else if (a == "--lengths") {
      for (auto const& l : split_list(value())) o.lengths.push_back(positive(l));
    } else if (a == "--modes") o.modes = split_list(value());
    else if (a == "--shard") {
      std::string_view v = value();
      auto slash = v.find('/');
      if (slash == std::string_view::npos) throw Usage("--shard: expected K/N, found " + std::string(v));
      o.shard = parse_number<fm::index_t>(a, v.substr(0, slash)), o.shards = positive(v.substr(slash + 1));
      if (o.shard < 0 || o.shard >= o.shards) throw Usage("--shard: K must be in [0, N), found " + std::string(v));
    }
    else if (a == "--context") {
      o.context = parse_number<fm::index_t>(a, value());
      if (o.context < 0) throw Usage("--context: expected a token count ≥ 0");
    } else if (a == "--config") o.config = std::filesystem::path(value());
    else if (a.starts_with("-")) throw Usage("unknown option " + std::string(a));
    else if (have_checkpoint) throw Usage("more than one checkpoint given: " + std::string(a));
    else o.checkpoint = a, have_checkpoint = true;
  }
  if (o.kv_report && o.context < 0) throw Usage("--kv-report needs --context N");
  if (o.dump && o.eval) throw Usage("--dump and --eval are separate runs");
  if (!o.dump && !o.eval && (o.tasks || o.out || !o.lengths.empty() || !o.modes.empty() || o.items || o.shards > 1))
    throw Usage("--tasks, --out, --items, --lengths, --modes and --shard belong to --dump or --eval");
  if (o.dump && !o.tasks) throw Usage("--dump needs the documents: --tasks DIR (tools/make_tasks.py generate)");
  if (o.eval && !o.out) throw Usage("--eval needs --out FILE (JSONL of predictions)");
  if ((o.dump || o.eval) && (o.lsa != "off" || o.kv_report))
    throw Usage("--dump and --eval choose their KV modes themselves: no --lsa or --kv-report");
  if (o.dump && o.device != "cpu") throw Usage("--dump runs the float32 reference: no --device");
  if (o.eval && o.cuda_storage) throw Usage("--eval on --device cuda keeps bf16 rows: no --cuda-storage");
  if (o.dump && (o.policy || o.page || o.budget || o.indexer)) throw Usage("--dump takes --tau but no --policy, --page, --budget or --indexer");
  if (o.dump || o.eval) return o;  // they take --tau (and --eval --indexer, --budget, --page) without --lsa
  if (!o.kv_report && (o.context >= 0 || o.config)) throw Usage("--context and --config belong to --kv-report");
  if (o.lsa == "off" && (o.policy || o.tau || o.page || o.budget || o.indexer))
    throw Usage("--policy, --tau, --page, --budget and --indexer configure LSA: give --lsa MODE too");
  if (o.kv_report && o.lsa != "off") throw Usage("--lsa belongs to generation, not to --kv-report");
  if (o.lsa == "memory" && !o.indexer) throw Usage("--lsa memory needs the Memory Indexer weights: --indexer FILE");
  if (o.indexer && o.lsa != "memory") throw Usage("--indexer is the Memory Indexer of --lsa memory, not of --lsa " + o.lsa);
  if (o.policy && *o.policy != "topfraction" && o.lsa != "off" && !probability_scorer(o.lsa))
    throw Usage("--policy " + *o.policy + " needs probability scores (--lsa memory or oracle); --lsa " + o.lsa +
                " scores are not probabilities: use --policy topfraction");
  if (o.lsa == "oracle" && o.device == "cuda") throw Usage("--lsa oracle traces a full-attention pass first: use --device cpu");
  if (o.lsa != "off" && o.device == "cuda" && o.cuda_storage == "f32")
    throw Usage("--lsa on --device cuda keeps bf16 rows: leave out --cuda-storage f32");
  if (o.cuda_storage && o.device != "cuda") throw Usage("--cuda-storage belongs to --device cuda");
  if (o.batch > 1 && (o.device != "cuda" || o.lsa != "off" || o.dump || o.eval || o.kv_report || o.stop_at_eos))
    throw Usage("--batch decodes several sequences on the CUDA decoder: it needs --device cuda, without --lsa, --dump, --eval, "
                "--kv-report or --stop-at-eos");
  if (o.kv_report && o.device == "cuda") throw Usage("--device belongs to generation, not to --kv-report");
  return o;
}

std::vector<fm::index_t> parse_prompt(std::string const& text) {
  std::vector<fm::index_t> ids;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find_first_of(", ", at);
    if (end == std::string::npos) end = text.size();
    if (end > at) ids.push_back(parse_number<fm::index_t>("--prompt", std::string_view(text).substr(at, end - at)));
    at = end + 1;
  }
  if (ids.empty()) throw Usage("--prompt: no token ids given");
  return ids;
}

// Greedy when temperature is 0; otherwise samples from the top-p nucleus of softmax(logits / T).
fm::index_t sample(std::span<float const> logits, Options const& o, std::mt19937_64& rng) {
  if (o.temperature == 0) return std::max_element(logits.begin(), logits.end()) - logits.begin();
  std::vector<std::size_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return logits[a] > logits[b]; });
  std::vector<double> p(order.size());
  double total = 0;
  for (std::size_t i = 0; i < order.size(); ++i) total += p[i] = std::exp((logits[order[i]] - logits[order[0]]) / o.temperature);
  std::size_t keep = 0;
  for (double mass = 0; keep < p.size() && mass < o.top_p * total; ++keep) mass += p[keep];
  std::discrete_distribution<std::size_t> pick(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(std::max<std::size_t>(keep, 1)));
  return static_cast<fm::index_t>(order[pick(rng)]);
}

std::string describe(v4::Config const& c) {
  std::string s = std::to_string(c.num_hidden_layers) + " layers (";
  for (v4::LayerKind k : v4::kLayerKinds)
    if (c.count(k)) s += std::to_string(c.count(k)) + " " + std::string(v4::short_name(k)) + ", ";
  s.resize(s.size() - 2);
  return s + "), hidden " + std::to_string(c.hidden_size) + ", vocab " + std::to_string(c.vocab_size);
}

// One table per record format: per layer kind, the records held and their bytes.
template <class Footprint>
void print_kv_table(v4::Config const& c, fm::index_t tokens, Footprint footprint) {
  for (v4::KvFormat f : {v4::KvFormat::bf16, v4::KvFormat::packed}) {
    std::printf("  %s records (latent %lld B, index key %lld B):\n", std::string(v4::name_of(f)).c_str(),
                static_cast<long long>(v4::latent_record_bytes(c, f)), static_cast<long long>(v4::index_key_bytes(c, f)));
    std::printf("    %-8s %6s %14s %14s %14s %12s %16s %12s %12s\n", "kind", "layers", "window B", "entries B",
                "index keys B", "state B", "total B", "B/token", "B/tok/layer");
    fm::index_t total = 0, growing = 0;
    for (v4::KindFootprint const& k : footprint(f)) {
      double per_token = tokens ? double(k.growing_bytes()) / double(tokens) : 0.0;
      std::printf("    %-8s %6lld %14lld %14lld %14lld %12lld %16lld %12.4f %12.4f\n", std::string(v4::short_name(k.kind)).c_str(),
                  static_cast<long long>(k.layers), static_cast<long long>(k.window_bytes), static_cast<long long>(k.entry_bytes),
                  static_cast<long long>(k.index_key_bytes), static_cast<long long>(k.state_bytes),
                  static_cast<long long>(k.total_bytes()), per_token, per_token / double(k.layers));
      total += k.total_bytes();
      growing += k.growing_bytes();
    }
    std::printf("    %-8s %6lld %14s %14s %14s %12s %16lld %12.4f\n", "all", static_cast<long long>(c.num_hidden_layers), "", "",
                "", "", static_cast<long long>(total), tokens ? double(growing) / double(tokens) : 0.0);
  }
}

int kv_report(Options const& o) {
  v4::Config c = v4::load_config(o.config ? *o.config : o.checkpoint / "config.json");
  std::printf("KV cache at %lld tokens: %s (%s)\n", static_cast<long long>(o.context), describe(c).c_str(), c.source.c_str());
  std::printf("  B/token counts what grows with the context (compressed entries and index keys); window rings and\n"
              "  compressor states are fixed per request.\n");
  print_kv_table(c, o.context, [&](v4::KvFormat f) { return v4::kv_footprint(c, o.context, f); });
  return 0;
}

void progress(fm::index_t done, fm::index_t total) {
  constexpr int kWidth = 40;
  int filled = static_cast<int>(kWidth * done / total);
  std::fprintf(stderr, "\rprefill [%s%s] %lld/%lld", std::string(static_cast<std::size_t>(filled), '#').c_str(),
               std::string(static_cast<std::size_t>(kWidth - filled), '.').c_str(), static_cast<long long>(done),
               static_cast<long long>(total));
  if (done == total) std::fprintf(stderr, "\n");
}

// ---- LSA -------------------------------------------------------------------------------------------------

using fm_dsv4::AnyPolicy;
using fm_dsv4::BudgetScorer;
using fm_dsv4::ProbabilityScorer;
using fm_dsv4::load_memory_indexer;
using fm_dsv4::make_policy;

template <class Scorer>
using LsaKv = fm::lsa::Lookahead<Scorer, AnyPolicy>;

// The GPU side of the CSA layers' KV, and what LSA did to keep it small.
void print_lsa_report(fm::lsa::FootprintReport const& f, char const* records, fm::lsa::LookaheadStats const* stats = nullptr,
                      fm::index_t resident_pages = 0, fm::index_t history_pages = 0) {
  std::printf("GPU KV of the CSA layers (%s), resident vs full:\n", records);
  std::printf("    %-10s %14s %14s %14s %13s %14s\n", "kind", "GPU reserve B", "in use B", "full B", "reserve/full", "host mirror B");
  auto row = [](char const* kind, fm::lsa::KindFootprint const& k) {
    std::printf("    %-10s %14zu %14zu %14zu %12.1f%% %14zu\n", kind, k.reserve_bytes, k.resident_bytes, k.full_bytes,
                k.full_bytes ? 100.0 * double(k.reserve_bytes) / double(k.full_bytes) : 100.0, k.mirror_bytes);
  };
  row("entries", f.entries), row("index keys", f.keys), row("total", f.total());
  auto t = f.total();
  double fraction = t.full_bytes ? 100.0 * double(t.resident_bytes) / double(t.full_bytes) : 100.0;
  if (!stats) {
    std::printf("  resident fraction: %.1f%% (every chunk resident: the native model)\n", fraction);
    return;
  }
  std::printf("  resident fraction: %.1f%% (%lld of %lld pages in cells); last selected set: %lld pages\n", fraction,
              static_cast<long long>(resident_pages), static_cast<long long>(history_pages),
              static_cast<long long>(stats->selected_pages));
  auto const& r = stats->recall;
  std::printf("  Level 1: %lld windows, %lld fallbacks; pages recalled: %lld (%zu B), evicted %lld, kept %lld; pages "
              "opened by appends %lld, deferred %lld\n",
              static_cast<long long>(stats->windows), static_cast<long long>(stats->fallbacks), static_cast<long long>(r.pages_fetched),
              r.bytes_moved, static_cast<long long>(r.pages_evicted), static_cast<long long>(r.pages_kept),
              static_cast<long long>(stats->opened_pages), static_cast<long long>(stats->deferred_pages));
}

// ---- generation ----------------------------------------------------------------------------------------

// One run over a prompt: prefill in chunks, then decode by sampling — or feeding `forced` tokens (an LSA pass
// over a full-attention pass's sequence). `before(n)` runs before each step of n tokens.
struct Sequence {
  std::vector<fm::index_t> generated;
  std::vector<std::vector<float>> logits;  // what each generated token was chosen from
  double prefill_s = 0, decode_s = 0;
};

template <class Model>
Sequence run_sequence(Model& model, std::vector<fm::index_t> const& prompt, Options const& o, std::mt19937_64& rng,
                      std::span<fm::index_t const> forced = {}, std::function<void(fm::index_t)> const& before = {}) {
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  auto step = [&](std::span<fm::index_t const> ids) {
    if (before) before(static_cast<fm::index_t>(ids.size()));
    return model.forward(ids);
  };
  Sequence run;
  // Prefill in chunks (any chunking gives the same logits); a progress bar when there is more than one.
  auto tp = Clock::now();
  std::vector<float> logits;
  auto n = static_cast<fm::index_t>(prompt.size());
  for (fm::index_t at = 0; at < n; at += o.chunk) {
    fm::index_t len = std::min(o.chunk, n - at);
    logits = step(std::span(prompt).subspan(static_cast<std::size_t>(at), static_cast<std::size_t>(len)));
    if (n > o.chunk) progress(at + len, n);
  }
  run.prefill_s = seconds(Clock::now() - tp);

  auto td = Clock::now();
  auto const& eos = model.config().eos_token_ids;
  fm::index_t steps = forced.empty() ? o.max_new_tokens : static_cast<fm::index_t>(forced.size());
  for (fm::index_t i = 0; i < steps; ++i) {
    fm::index_t next = forced.empty() ? sample(logits, o, rng) : forced[static_cast<std::size_t>(i)];
    run.generated.push_back(next);
    run.logits.push_back(logits);
    if ((forced.empty() && o.stop_at_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) || i + 1 == steps) break;
    logits = step(std::span(&next, 1));
  }
  run.decode_s = seconds(Clock::now() - td);
  return run;
}

void print_run(Sequence const& run, fm::index_t prompt_len, Options const& o, bool forced) {
  auto decoded = static_cast<fm::index_t>(run.generated.size()) - 1;  // the first token comes from the prefill logits
  std::printf("prompt: %lld tokens (%s)\n", static_cast<long long>(prompt_len), o.prompt ? "given" : "random");
  std::printf("generated (%s):", forced ? "fed from the full-attention pass" : o.temperature == 0 ? "greedy" : "sampled");
  for (fm::index_t id : run.generated) std::printf(" %lld", static_cast<long long>(id));
  std::printf("\nprefill: %lld tokens in %.4f s = %.1f tokens/s\n", static_cast<long long>(prompt_len), run.prefill_s,
              double(prompt_len) / run.prefill_s);
  if (decoded > 0)
    std::printf("decode:  %lld tokens in %.4f s = %.1f tokens/s\n", static_cast<long long>(decoded), run.decode_s,
                double(decoded) / run.decode_s);
}

// How far an LSA pass fed a full-attention pass's tokens strays from it: top-1 agreement and the largest logit
// difference relative to the largest logit.
void print_agreement(Sequence const& lsa, Sequence const& full) {
  std::size_t same = 0;
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < full.logits.size(); ++i) {
    auto const &a = lsa.logits[i], &b = full.logits[i];
    same += std::max_element(a.begin(), a.end()) - a.begin() == std::max_element(b.begin(), b.end()) - b.begin();
    for (std::size_t v = 0; v < b.size(); ++v) diff = std::max(diff, std::abs(double(a[v]) - b[v])), scale = std::max(scale, std::abs(double(b[v])));
  }
  std::printf("top-1 agreement with full attention: %zu/%zu steps; max |Δlogit| / max |logit| = %.3g\n", same,
              full.logits.size(), scale > 0 ? diff / scale : 0.0);
}

void print_kv_cache(v4::Config const& config, v4::KvCache const& cache, fm::index_t held) {
  std::printf("KV cache after %lld tokens:\n", static_cast<long long>(held));
  print_kv_table(config, held, [&](v4::KvFormat f) { return v4::kv_footprint(config, cache, f); });
}

// An LSA run: the Lookahead over `scorer`, and for the oracle first a traced full-attention pass.
// The LSA settings of the command line for a run of `tokens` tokens (printed): the reserve holds --budget of
// the run's pages plus one cell for the page being written.
struct LsaSetup {
  fm::index_t per = 64;
  AnyPolicy policy;
  fm::lsa::LookaheadOptions options;
};
LsaSetup lsa_setup(Options const& o, v4::Config const& config, fm::index_t tokens, std::vector<fm::index_t> targets) {
  fm::index_t const per = o.page.value_or(64), tau = o.tau.value_or(64);
  double const budget = o.budget.value_or(0.25);
  std::string const policy = o.policy.value_or(probability_scorer(o.lsa) ? "threshold" : "topfraction");
  fm::index_t const chunks = tokens / config.compress_rate_csa, history_pages = (chunks + per - 1) / per;
  fm::index_t const cells = fm::store::cells_for_fraction(budget, chunks, per) + 1;
  std::printf("LSA: %s scorer, %s policy, tau %lld tokens, pages of %lld chunks; GPU reserve %lld cells for %lld pages "
              "(budget %.3g + 1)\n",
              o.lsa.c_str(), policy.c_str(), static_cast<long long>(tau), static_cast<long long>(per), static_cast<long long>(cells),
              static_cast<long long>(history_pages), budget);
  return {per, make_policy(policy, budget),
          {.csa_layers = config.count(v4::LayerKind::csa), .target_layers = std::move(targets), .reserve_cells = cells, .tau = tau}};
}

template <class Scorer>
int generate_lsa(Options const& o, v4::Config const& config, v4::Weights weights, std::vector<fm::index_t> const& prompt,
                 std::mt19937_64& rng, Scorer scorer, std::vector<fm::index_t> targets) {
  LsaSetup setup = lsa_setup(o, config, static_cast<fm::index_t>(prompt.size()) + o.max_new_tokens, std::move(targets));
  using Kv = LsaKv<Scorer>;
  auto make = [&](v4::Weights w) {
    return v4::Decoder<fm::cpu::Backend, Kv>(config, std::move(w),
                                             Kv(std::move(scorer), setup.policy, v4::entry_layout(config, setup.per),
                                                v4::key_layout(config, setup.per), setup.options));
  };
  auto report = [&](auto const& model) {
    auto const& kv = model.kv();
    print_kv_cache(config, model.cache(), model.position());
    print_lsa_report(kv.footprint(), "float32 records", &kv.stats(), kv.table().resident_pages(), kv.entries(0).mirror.num_pages());
    std::printf("  stalls: 0 (the host reference finishes each recall at its window boundary)\n");
  };
  if (o.lsa != "oracle") {
    auto model = make(std::move(weights));
    Sequence run = run_sequence(model, prompt, o, rng);
    print_run(run, static_cast<fm::index_t>(prompt.size()), o, false);
    report(model);
    return 0;
  }
  // The oracle: a full-attention pass records what its top-k reads (steps of the same lengths as the LSA pass);
  // the LSA pass is fed its tokens and given the labels of each window before the boundary that chooses it.
  using Trace = fm::lsa::NativeTrace<>;
  std::optional<v4::Decoder<fm::cpu::Backend, Trace>> full;
  full.emplace(config, std::move(weights), Trace(v4::full_resident_kv(config)));
  Sequence native = run_sequence(*full, prompt, o, rng);
  std::printf("full-attention pass: %zu tokens\n", native.generated.size());
  Trace trace = std::move(full->kv());
  full.reset();  // one model in memory at a time
  auto model = make(v4::load_model(o.checkpoint).weights);
  Sequence run = run_sequence(model, prompt, o, rng, std::span(native.generated).first(native.generated.size()),
                              [&](fm::index_t n) { trace.offer_future(model.kv(), n); });
  print_run(run, static_cast<fm::index_t>(prompt.size()), o, true);
  print_agreement(run, native);
  report(model);
  return 0;
}

// --batch: every prompt prefilled into its own sequence, then all decoded together, one token per sequence a
// step (Decoder<cuda>::decode: each weight matrix read once for the batch). Sequence 0 is the run without
// --batch: same prompt, same tokens when greedy.
void run_batch(fm_dsv4::CudaModel& model, std::vector<std::vector<fm::index_t>> const& prompts, Options const& o, std::mt19937_64& rng) {
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  std::size_t const B = prompts.size(), V = static_cast<std::size_t>(model.config().vocab_size);
  std::vector<std::vector<float>> logits(B);
  auto tp = Clock::now();
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t at = 0; at < prompts[b].size(); at += static_cast<std::size_t>(o.chunk))
      logits[b] = model.forward_sequence(static_cast<fm::index_t>(b), std::span(prompts[b]).subspan(at).first(
                                                                          std::min(static_cast<std::size_t>(o.chunk), prompts[b].size() - at)));
  double const prefill_s = seconds(Clock::now() - tp);
  std::vector<std::vector<fm::index_t>> generated(B);
  auto td = Clock::now();
  for (fm::index_t i = 0; i < o.max_new_tokens; ++i) {
    std::vector<fm::index_t> next(B);
    for (std::size_t b = 0; b < B; ++b) generated[b].push_back(next[b] = sample(logits[b], o, rng));
    if (i + 1 == o.max_new_tokens) break;
    std::vector<float> const all = model.decode(next);
    for (std::size_t b = 0; b < B; ++b) logits[b].assign(all.begin() + b * V, all.begin() + (b + 1) * V);
  }
  double const decode_s = seconds(Clock::now() - td);
  auto const n = static_cast<long long>(prompts[0].size());
  std::printf("prompt: %lld tokens (%s), and %zu more random prompts of %lld tokens (--batch %zu)\n", n, o.prompt ? "given" : "random",
              B - 1, n, B);
  for (std::size_t b = 0; b < B; ++b) {
    if (b == 0) std::printf("generated (%s):", o.temperature == 0 ? "greedy" : "sampled");
    else std::printf("  sequence %zu:", b);
    for (fm::index_t id : generated[b]) std::printf(" %lld", static_cast<long long>(id));
    std::printf("\n");
  }
  std::printf("prefill: %zu × %lld tokens in %.4f s = %.1f tokens/s\n", B, n, prefill_s, double(B) * double(n) / prefill_s);
  if (auto const decoded = static_cast<double>(B) * static_cast<double>(o.max_new_tokens - 1); decoded > 0)
    std::printf("decode:  %zu × %lld tokens in %.4f s = %.1f tokens/s (%zu sequences a step)\n", B,
                static_cast<long long>(o.max_new_tokens - 1), decode_s, decoded / decode_s, B);
}

// The CUDA decoder, sized for this run: the prompt and the generated tokens, prefill passes of --chunk tokens.
// With --lsa, `scorer` and `targets` are its Level-1 scorer and target CSA layers.
int generate_cuda(Options const& o, v4::Config config, v4::Weights weights, std::vector<fm::index_t> const& prompt,
                  std::mt19937_64& rng, std::optional<std::variant<ProbabilityScorer, BudgetScorer>> scorer,
                  std::vector<fm::index_t> targets) {
  auto n = static_cast<fm::index_t>(prompt.size());
  fm_dsv4::CudaSettings settings{.storage = o.cuda_storage == "f32" ? fm_dsv4::CudaStorage::f32 : fm_dsv4::CudaStorage::bf16,
                                 .max_context = n + o.max_new_tokens,
                                 .max_chunk = std::min<fm::index_t>({o.chunk, n, 65535}),
                                 .batch = o.batch};
  if (scorer) {
    LsaSetup setup = lsa_setup(o, config, n + o.max_new_tokens, std::move(targets));
    auto all = std::visit([](auto& any) { return std::visit([](auto& s) { return fm_dsv4::AllScorers{std::move(s)}; }, any.scorer); },
                          *scorer);
    settings.lsa = fm_dsv4::CudaLsa{std::move(all), std::move(setup.policy), std::move(setup.options), setup.per};
  }
  auto model = fm_dsv4::make_cuda_model(std::move(config), std::move(weights), settings);
  if (o.batch > 1) {
    std::vector<std::vector<fm::index_t>> prompts{prompt};
    std::uniform_int_distribution<fm::index_t> token(0, model->config().vocab_size - 1);
    while (static_cast<fm::index_t>(prompts.size()) < o.batch) {
      prompts.emplace_back(prompt.size());
      for (fm::index_t& id : prompts.back()) id = token(rng);
    }
    run_batch(*model, prompts, o, rng);
  } else {
    print_run(run_sequence(*model, prompt, o, rng), n, o, false);
  }
  v4::Config const& c = model->config();
  fm::index_t held = model->position();
  std::printf("KV cache after %lld tokens (every chunk resident%s):\n", static_cast<long long>(held),
              o.batch > 1 ? ", per sequence" : "");
  print_kv_table(c, held, [&](v4::KvFormat f) { return v4::kv_footprint(c, held, f); });
  if (auto r = model->lsa_report()) {
    print_lsa_report(r->footprint, "bf16 rows", &r->stats, r->resident_pages, r->history_pages);
    std::printf("  recall on the copy stream: %.3f ms in all (%.2f GB/s); stalls: %lld (publishes that found the copy unfinished)\n",
                r->copy_ms, r->copy_ms > 0 ? double(r->stats.recall.bytes_moved) / (r->copy_ms * 1e6) : 0.0,
                static_cast<long long>(r->stalls));
  }
  return 0;
}

// --dump and --eval (evidence.hpp): the float32 reference decoder, or for --eval the CUDA one.
int evidence(Options const& o) {
  if (o.device == "cuda") std::printf("device: cuda: %s\n", fm_dsv4::cuda_device().c_str());
  auto [config, weights] = v4::load_model(o.checkpoint);
  fm_dsv4::TaskSelection tasks{.dir = o.dump ? *o.tasks : *o.eval, .items = o.items, .lengths = o.lengths, .shard = o.shard,
                               .shards = o.shards};
  if (o.dump) {
    fm_dsv4::dump_labels(config, std::move(weights),
                         {.tasks = tasks, .out = *o.dump, .tau = o.tau.value_or(64), .chunk = o.chunk,
                          .filter = {.nucleus_p = o.nucleus_p, .votes = o.votes}});
    return 0;
  }
  fm_dsv4::evaluate(config, std::move(weights),
                    {.tasks = tasks, .out = *o.out, .indexer = o.indexer, .modes = o.modes, .budget = o.budget.value_or(0.125),
                     .page = o.page.value_or(16), .tau = o.tau.value_or(64), .chunk = o.chunk,
                     .filter = {.nucleus_p = o.nucleus_p, .votes = o.votes}, .cuda = o.device == "cuda"});
  return 0;
}

int generate(Options const& o) {
  // Before loading anything: is there a device (and a CUDA build)?
  std::string device = "cpu (float32 reference)";
  if (o.device == "cuda")
    device = "cuda: " + fm_dsv4::cuda_device() + ", " + (o.cuda_storage == "f32" ? "float32" : "bf16") +
             " weights and KV, float32 activations";
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  auto [config, weights] = v4::load_model(o.checkpoint);
  std::printf("checkpoint: %s\n  %s; loaded in %.3f s; device %s\n", o.checkpoint.string().c_str(), describe(config).c_str(),
              std::chrono::duration<double>(Clock::now() - t0).count(), device.c_str());

  std::mt19937_64 rng(o.seed);
  std::vector<fm::index_t> prompt;
  if (o.prompt) prompt = parse_prompt(*o.prompt);
  else {
    std::uniform_int_distribution<fm::index_t> token(0, config.vocab_size - 1);
    for (fm::index_t i = 0; i < o.prompt_len; ++i) prompt.push_back(token(rng));
  }
  for (fm::index_t id : prompt)
    if (id < 0 || id >= config.vocab_size)
      throw Usage("--prompt: token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(config.vocab_size) + ")");

  if (o.lsa != "off" && config.count(v4::LayerKind::csa) == 0)
    throw std::runtime_error("--lsa " + o.lsa + ": the model has no CSA layers, so nothing for LSA to keep");
  // The Level-1 scorer of --lsa and the CSA layers whose inputs it reads.
  std::optional<std::variant<ProbabilityScorer, BudgetScorer>> scorer;
  std::vector<fm::index_t> targets;
  if (o.lsa == "memory") {
    auto indexer = load_memory_indexer(*o.indexer, config, targets);
    std::printf("Memory Indexer: %s, %lld target CSA layers, %lld heads, rank %lld\n", o.indexer->string().c_str(),
                static_cast<long long>(targets.size()), static_cast<long long>(indexer.config().heads),
                static_cast<long long>(indexer.config().rank));
    scorer = ProbabilityScorer{std::move(indexer)};
  } else if (o.lsa == "oracle") {
    scorer = ProbabilityScorer{fm::indexer::Oracle{}};
  } else if (o.lsa == "recency") {
    scorer = BudgetScorer{fm::indexer::Recency{}};
  } else if (o.lsa == "random") {
    scorer = BudgetScorer{fm::indexer::Random(o.seed)};
  } else if (o.lsa == "minmax") {  // bounds the native score of each page with the native query of every CSA layer
    scorer = BudgetScorer{fm::indexer::MinMaxBounds{.chunks_per_page = o.page.value_or(64)}};
    targets.resize(static_cast<std::size_t>(config.count(v4::LayerKind::csa)));
    std::iota(targets.begin(), targets.end(), 0);
  }
  if (o.device == "cuda") return generate_cuda(o, std::move(config), std::move(weights), prompt, rng, std::move(scorer), std::move(targets));
  if (!scorer) {
    v4::Decoder<> model(config, std::move(weights));
    Sequence run = run_sequence(model, prompt, o, rng);
    print_run(run, static_cast<fm::index_t>(prompt.size()), o, false);
    print_kv_cache(config, model.cache(), model.position());
    print_lsa_report(model.kv().footprint(), "float32 records");
    return 0;
  }
  return std::visit([&](auto& s) { return generate_lsa(o, config, std::move(weights), prompt, rng, std::move(s), std::move(targets)); },
                    *scorer);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse_args(argc, argv);
    if (o.help) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    return o.kv_report ? kv_report(o) : o.dump || o.eval ? evidence(o) : generate(o);
  } catch (Usage const& e) {
    std::fprintf(stderr, "fm-dsv4: %s\n(run fm-dsv4 --help for usage)\n", e.what());
    return 2;
  } catch (fm::error const& e) {
    std::fprintf(stderr, "fm-dsv4: %s\n", e.what());
    bool const resident_set = std::string_view(e.what()).find("resident set") != std::string_view::npos;
    if (e.code() == fm::errc::out_of_memory && resident_set)
      std::fprintf(stderr, "(raise --budget, or bound the resident set with --policy densest or topfraction)\n");
    else if (e.code() == fm::errc::out_of_memory && o.device == "cuda")
      std::fprintf(stderr, "(the CUDA decoder holds the weights and KV for the prompt + --max-new-tokens: shorten them, "
                           "use --cuda-storage bf16, or a smaller --chunk)\n");
    return 1;
  } catch (std::exception const& e) {
    std::fprintf(stderr, "fm-dsv4: %s\n", e.what());
    return 1;
  }
}
