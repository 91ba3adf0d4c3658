// evidence.cpp — fm-dsv4 --dump and --eval (evidence.hpp): the float32 reference decoder, --eval also the CUDA one.
#include "evidence.hpp"

#include "cuda_decoder.hpp"
#include "lsa_parts.hpp"

#include <flashmemory/io/json.hpp>
#include <flashmemory/io/safetensors_writer.hpp>
#include <flashmemory/lsa/lookahead.hpp>
#include <flashmemory/models/deepseek_v4/decoder.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <numeric>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fm_dsv4 {
namespace {

using fm::index_t;
using Clock = std::chrono::steady_clock;

struct TaskItem {
  std::string id, task;
  index_t length = 0;
  std::vector<index_t> prompt, answer;
};

std::vector<index_t> ids_of(nlohmann::json const& v, std::string const& where) {
  if (!v.is_array() || v.empty()) throw std::runtime_error(where + ": expected a non-empty array of token ids");
  std::vector<index_t> ids;
  for (auto const& x : v) ids.push_back(x.get<index_t>());
  return ids;
}

// The items of a task directory that `s` selects, item-major (the first item of every task and length, then the
// second, …), so that a run stopped early still covers every task and length alike.
std::vector<TaskItem> read_tasks(TaskSelection const& s) {
  nlohmann::json manifest = fm::io::load_json(s.dir / "manifest.json");
  if (manifest.value("format", "") != "flashmemory-tasks-v1")
    throw std::runtime_error((s.dir / "manifest.json").string() + ": not a task manifest of tools/make_tasks.py (format \"" +
                             manifest.value("format", "") + "\", expected \"flashmemory-tasks-v1\")");
  std::vector<std::vector<TaskItem>> files;
  for (auto const& file : manifest.at("files")) {
    auto length = file.at("length").get<index_t>();
    if (!s.lengths.empty() && std::find(s.lengths.begin(), s.lengths.end(), length) == s.lengths.end()) continue;
    auto path = s.dir / file.at("path").get<std::string>();
    std::ifstream in(path);
    if (!in) throw std::runtime_error(path.string() + ": cannot open (named by the manifest)");
    std::string line;
    auto& items = files.emplace_back();
    for (index_t index = 0; std::getline(in, line) && (s.items == 0 || index < s.items); ++index) {
      if (index % s.shards != s.shard) continue;
      std::string where = path.string() + ":" + std::to_string(index + 1);
      nlohmann::json j = fm::io::parse_json(line, where);
      items.push_back({j.at("id").get<std::string>(), j.at("task").get<std::string>(), length, ids_of(j.at("prompt"), where + " prompt"),
                       ids_of(j.at("answer"), where + " answer")});
    }
  }
  std::vector<TaskItem> items;
  for (std::size_t index = 0, added = 1; added > 0; ++index) {
    added = 0;
    for (auto& file : files)
      if (index < file.size()) items.push_back(std::move(file[index])), ++added;
  }
  if (items.empty() && s.shards == 1) throw std::runtime_error(s.dir.string() + ": no task items selected");
  return items;
}

std::vector<index_t> all_csa_layers(v4::Config const& c) {
  std::vector<index_t> layers(static_cast<std::size_t>(c.count(v4::LayerKind::csa)));
  std::iota(layers.begin(), layers.end(), 0);
  return layers;
}

template <class T>
void add_tensor(fm::io::SafetensorsWriter& w, std::string name, fm::dtype type, std::vector<std::int64_t> shape, std::vector<T> const& v) {
  w.add(std::move(name), type, std::move(shape), std::as_bytes(std::span(v)));
}

index_t argmax(std::span<float const> v) { return std::max_element(v.begin(), v.end()) - v.begin(); }

}  // namespace

// ---- --dump -----------------------------------------------------------------------------------------------

void dump_labels(v4::Config const& config, v4::Weights weights, DumpSettings const& s) {
  // Full attention that offers every step's Level-1 inputs: a Lookahead in its full-KV prefill, never handed
  // over (the native model), traced for labels and hidden states.
  using Kv = fm::lsa::Lookahead<fm::indexer::Recency, fm::residency::TopFraction>;
  using Trace = fm::lsa::NativeTrace<Kv>;
  std::vector<index_t> layers = all_csa_layers(config);
  if (layers.empty()) throw std::runtime_error("--dump: the model has no CSA layers, so no chunks to label");
  index_t const csa = static_cast<index_t>(layers.size()), D = config.hidden_size, d = config.index_head_dim;
  v4::Decoder<fm::cpu::Backend, Trace> model(
      config, std::move(weights),
      Trace(Kv({}, {}, v4::entry_layout(config), v4::key_layout(config), {.csa_layers = csa, .full_prefill = true}), s.filter));
  std::filesystem::create_directories(s.out);
  std::vector<TaskItem> items = read_tasks(s.tasks);
  nlohmann::json files = nlohmann::json::array();
  double positives = 0, candidates = 0, samples_total = 0;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < items.size(); ++i) {
    TaskItem const& item = items[i];
    std::vector<index_t> ids = item.prompt;
    ids.insert(ids.end(), item.answer.begin(), item.answer.end());
    auto const n = static_cast<index_t>(ids.size());
    model.reset();
    std::vector<std::int64_t> positions, chunks;
    std::vector<std::vector<float>> hidden(static_cast<std::size_t>(csa));
    // The prompt in steps of `chunk` tokens, then the answer token by token: a sample after the prompt and
    // after every answer token but the last (the decode steps of the paper's dumps, lsa.md §4).
    auto const P = static_cast<index_t>(item.prompt.size());
    for (index_t at = 0; at < n;) {
      index_t len = at < P ? std::min(s.chunk, P - at) : 1;
      model.forward(std::span(ids).subspan(static_cast<std::size_t>(at), static_cast<std::size_t>(len)));
      at += len;
      index_t t = at - 1;
      if (t < P - 1) continue;
      if (t + 1 >= n) break;  // no window after the last token
      positions.push_back(t);
      chunks.push_back(model.kv().inner().entries(0).mirror.num_chunks());
      for (index_t l = 0; l < csa; ++l) {
        auto h = model.kv().offered_hidden(l);
        hidden[static_cast<std::size_t>(l)].insert(hidden[static_cast<std::size_t>(l)].end(), h.begin(), h.end());
      }
    }
    auto const S = static_cast<index_t>(positions.size());
    index_t const N = model.kv().inner().entries(0).mirror.num_chunks();
    // labels: the golden union (θ votes); layer_labels[l]: CSA layer l's own nucleus (its tower's target).
    std::vector<std::vector<std::uint8_t>> layer_labels(static_cast<std::size_t>(csa + 1), std::vector<std::uint8_t>(static_cast<std::size_t>(S * N), 0));
    for (index_t l = -1; l < csa; ++l)
      for (index_t k = 0; k < S; ++k) {
        auto window = model.kv().golden_window(positions[static_cast<std::size_t>(k)], s.tau, chunks[static_cast<std::size_t>(k)], l);
        std::copy(window.begin(), window.end(), layer_labels[static_cast<std::size_t>(l + 1)].begin() + k * N);
        if (l >= 0) continue;
        positives += static_cast<double>(std::count(window.begin(), window.end(), 1));
        candidates += static_cast<double>(window.size());
      }
    samples_total += static_cast<double>(S);

    fm::io::SafetensorsWriter w;
    add_tensor(w, "positions", fm::dtype::i64, {S}, positions);
    add_tensor(w, "num_chunks", fm::dtype::i64, {S}, chunks);
    for (index_t l = 0; l < csa; ++l) {
      add_tensor(w, "hidden.l" + std::to_string(l), fm::dtype::f32, {S, D}, hidden[static_cast<std::size_t>(l)]);
      std::vector<float> keys(static_cast<std::size_t>(N * d));
      auto const& mirror = model.kv().inner().keys(l).mirror;
      for (index_t c = 0; c < N; ++c) mirror.decode(c, std::span(keys).subspan(static_cast<std::size_t>(c * d), static_cast<std::size_t>(d)));
      add_tensor(w, "keys.l" + std::to_string(l), fm::dtype::f32, {N, d}, keys);
      add_tensor(w, "labels.l" + std::to_string(l), fm::dtype::u8, {S, N}, layer_labels[static_cast<std::size_t>(l + 1)]);
    }
    add_tensor(w, "labels", fm::dtype::u8, {S, N}, layer_labels[0]);
    std::string targets;
    for (index_t l : layers) {
      if (!targets.empty()) targets += ',';
      targets += std::to_string(l);
    }
    std::map<std::string, std::string> meta = {
        {"schema", "flashmemory.dump.v2"},       {"id", item.id},
        {"task", item.task},                     {"length", std::to_string(item.length)},
        {"prompt_tokens", std::to_string(item.prompt.size())},
        {"tau", std::to_string(s.tau)},
        {"nucleus_p", std::to_string(s.filter.nucleus_p)},
        {"votes", std::to_string(s.filter.votes)},
        {"index_topk", std::to_string(config.index_topk)},
        {"target_layers", targets},              {"hidden_size", std::to_string(D)},
        {"index_head_dim", std::to_string(d)},   {"rope_dim", std::to_string(config.qk_rope_head_dim)},
        {"rope_theta", std::to_string(config.rope_compress.theta)},
        {"compress_rate", std::to_string(config.compress_rate_csa)}};
    for (auto const& [k, v] : meta) w.set_metadata(k, v);
    std::string name = item.id;
    std::replace(name.begin(), name.end(), '/', '-');
    w.write(s.out / (name + ".safetensors"));
    files.push_back({{"id", item.id}, {"path", name + ".safetensors"}, {"samples", S}, {"chunks", N}});
    std::fprintf(stderr, "\rdump %zu/%zu  %s: %lld samples, %lld chunks, %.1f s", i + 1, items.size(), item.id.c_str(),
                 static_cast<long long>(S), static_cast<long long>(N), std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::fprintf(stderr, "\n");
  nlohmann::json manifest = {{"schema", "flashmemory.dump.v2"},
                             {"tau", s.tau},
                             {"nucleus_p", s.filter.nucleus_p},
                             {"votes", s.filter.votes},
                             {"files", files},
                             {"mean_positives_per_sample", samples_total > 0 ? positives / samples_total : 0.0},
                             {"positive_fraction", candidates > 0 ? positives / candidates : 0.0}};
  std::string manifest_name = s.tasks.shards > 1 ? "manifest." + std::to_string(s.tasks.shard) + ".json" : "manifest.json";
  std::ofstream(s.out / manifest_name) << manifest.dump(1) << "\n";
  std::printf("dumped %zu documents, %.0f samples to %s: %.1f golden chunks per sample (%.2f%% of the candidates), "
              "nucleus p %.2f, %lld of %lld CSA layers voting, τ %lld\n",
              items.size(), samples_total, s.out.string().c_str(), samples_total > 0 ? positives / samples_total : 0.0,
              candidates > 0 ? 100.0 * positives / candidates : 0.0, s.filter.nucleus_p, static_cast<long long>(s.filter.votes),
              static_cast<long long>(layers.size()), static_cast<long long>(s.tau));
}

// ---- --eval -----------------------------------------------------------------------------------------------

namespace {

// Every Level-1 scorer in one type, so that one prefilled sequence can be forked into every mode. The eval picks
// threshold policies only for the Memory Indexer and the oracle, whose scores are probabilities.
using EvalScorer = AllScorers;
using EvalLookahead = fm::lsa::Lookahead<EvalScorer, AnyPolicy>;
using EvalModel = v4::Decoder<fm::cpu::Backend, fm::lsa::NativeTrace<EvalLookahead>>;

struct Answer {
  std::vector<index_t> generated;
  double seconds = 0;
  index_t decoded = 0;  // tokens decoded (the first comes from the prefill's logits)
};

// Greedy answer of at most `limit` tokens, stopping at an end-of-sequence token.
template <class Model>
Answer answer(Model& model, std::vector<float> logits, index_t limit) {
  Answer a;
  auto t0 = Clock::now();
  auto const& eos = model.config().eos_token_ids;
  for (index_t i = 0; i < limit; ++i) {
    index_t next = argmax(logits);
    a.generated.push_back(next);
    if (std::find(eos.begin(), eos.end(), next) != eos.end() || i + 1 == limit) break;
    logits = model.forward(std::span(&next, 1));
    ++a.decoded;
  }
  a.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return a;
}

// The prompt in steps of `chunk` tokens; the last token's logits.
template <class Model>
std::vector<float> prefill(Model& model, std::vector<index_t> const& prompt, index_t chunk) {
  std::vector<float> logits;
  auto const P = static_cast<index_t>(prompt.size());
  for (index_t at = 0; at < P; at += chunk)
    logits = model.forward(std::span(prompt).subspan(static_cast<std::size_t>(at), static_cast<std::size_t>(std::min(chunk, P - at))));
  return logits;
}

// What a mode sets before the hand-over: its scorer and policy (none: the default's), and the reserve's cells.
struct ModeSetup {
  std::optional<EvalScorer> scorer;
  std::optional<AnyPolicy> policy;
  index_t cells = 0;
};

// The modes that need one, share the sizes of one item: `pages` of history, `budget` pages for the equal-budget
// modes (the recency tail of `tail_pages` included), pages of `per` chunks.
struct ModeSizes {
  index_t pages = 0, budget = 0, tail_pages = 0, per = 0;
};
ModeSizes mode_sizes(EvalSettings const& s, index_t pages) {
  index_t const tail_pages = (s.tail_chunks + s.page - 1) / s.page;
  return {pages, std::max<index_t>(tail_pages + 1, static_cast<index_t>(std::ceil(s.budget * double(pages)))), tail_pages, s.page};
}

ModeSetup mode_setup(std::string const& mode, ModeSizes const& z, std::optional<fm::indexer::MemoryIndexer> const& indexer,
                     std::string const& item_id) {
  ModeSetup m{.cells = z.budget + 1};  // + the page a decode step opens
  fm::residency::RecencyTail const recent{z.tail_pages * z.per};
  if (mode == "memory_threshold" || mode == "oracle") {
    m.policy = AnyPolicy{WithTail<fm::residency::Threshold>(fm::residency::Threshold{0.5}, recent)};
    m.cells = z.pages + 1;  // a threshold set has no fixed size: what it holds is reported, not what is set aside
  } else if (mode == "memory_densest") {
    m.policy = AnyPolicy{WithTail<fm::residency::DensestPages>(fm::residency::DensestPages{.kmax = z.budget - z.tail_pages}, recent)};
  } else if (mode == "recency") {
    m.policy = AnyPolicy{fm::residency::TopFraction{.count = z.budget}};
  } else if (mode != "full") {
    m.policy = AnyPolicy{WithTail<fm::residency::TopFraction>(fm::residency::TopFraction{.count = z.budget - z.tail_pages}, recent)};
  }
  if (mode.starts_with("memory")) m.scorer = EvalScorer{*indexer};
  else if (mode == "random") m.scorer = EvalScorer{fm::indexer::Random(std::hash<std::string>{}(item_id))};
  else if (mode == "minmax") m.scorer = EvalScorer{fm::indexer::MinMaxBounds{.chunks_per_page = z.per}};
  else if (mode == "oracle") m.scorer = EvalScorer{fm::indexer::Oracle{}};
  return m;
}

// One JSONL line and the tally of one (item, mode).
struct Recorder {
  std::ofstream out;
  std::map<std::string, std::pair<index_t, index_t>> tally;  // mode → (correct, items), for the progress line

  // `resident` and `footprint` as the hand-over left them (what Level 1 chose for the answer), `stats` after it.
  void record(TaskItem const& item, std::string const& mode, Answer const& a, index_t resident, index_t pages,
              fm::lsa::KindFootprint footprint, double prefill_s, fm::lsa::LookaheadStats const& stats) {
    if (mode == "full") footprint.resident_bytes = footprint.full_bytes;  // every page, read from the mirror
    nlohmann::json line = {{"id", item.id},
                           {"task", item.task},
                           {"length", item.length},
                           {"mode", mode},
                           {"generated", a.generated},
                           {"answer", item.answer},
                           {"resident_fraction", double(resident) / double(pages)},
                           {"resident_pages", resident},
                           {"history_pages", pages},
                           {"gpu_kv_bytes", footprint.resident_bytes},
                           {"full_kv_bytes", footprint.full_bytes},
                           {"reserve_bytes", footprint.reserve_bytes},
                           {"prefill_s", prefill_s},
                           {"decode_tokens_per_s", a.decoded > 0 ? double(a.decoded) / a.seconds : 0.0},
                           {"pages_recalled", stats.recall.pages_fetched},
                           {"recall_bytes", stats.recall.bytes_moved},
                           {"fallbacks", stats.fallbacks}};
    out << line.dump() << "\n";
    auto const limit = static_cast<std::ptrdiff_t>(item.answer.size());
    bool const correct = std::vector<index_t>(a.generated.begin(), a.generated.begin() + std::min<std::ptrdiff_t>(a.generated.size(), limit)) == item.answer;
    auto& [right, seen] = tally[mode];
    right += correct, ++seen;
  }
  void progress(std::size_t i, std::size_t n, TaskItem const& item, Clock::time_point t0) {
    out.flush();
    std::fprintf(stderr, "\reval %zu/%zu (%s, %.1f s):", i + 1, n, item.id.c_str(), std::chrono::duration<double>(Clock::now() - t0).count());
    for (auto const& [mode, c] : tally) std::fprintf(stderr, " %s %lld/%lld", mode.c_str(), static_cast<long long>(c.first), static_cast<long long>(c.second));
  }
  void summary(std::size_t items, std::size_t modes, std::filesystem::path const& path) const {
    std::fprintf(stderr, "\n");
    std::printf("evaluated %zu items × %zu modes → %s\n", items, modes, path.string().c_str());
    for (auto const& [mode, c] : tally)
      std::printf("  %-18s %lld/%lld exact\n", mode.c_str(), static_cast<long long>(c.first), static_cast<long long>(c.second));
  }
};

// The float32 host reference: one prefill per item, forked into every mode.
void evaluate_host(v4::Config const& config, v4::Weights weights, EvalSettings const& s, std::vector<std::string> const& modes,
                   std::optional<fm::indexer::MemoryIndexer> const& indexer, std::vector<index_t> const& targets,
                   std::vector<TaskItem> const& items, Recorder& rec) {
  index_t const per = s.page;
  EvalModel base(config, std::move(weights),
                 fm::lsa::NativeTrace<EvalLookahead>(EvalLookahead({fm::indexer::Recency{}}, {}, v4::entry_layout(config, per),
                                                                   v4::key_layout(config, per),
                                                                   {.csa_layers = config.count(v4::LayerKind::csa),
                                                                    .target_layers = targets,
                                                                    .tau = s.tau,
                                                                    .full_prefill = true}),
                                                     s.filter));
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < items.size(); ++i) {
    TaskItem const& item = items[i];
    auto const P = static_cast<index_t>(item.prompt.size()), limit = static_cast<index_t>(item.answer.size());
    base.reset();
    auto tp = Clock::now();
    std::vector<float> const logits = prefill(base, item.prompt, s.chunk);
    double const prefill_s = std::chrono::duration<double>(Clock::now() - tp).count();
    index_t const pages = base.kv().inner().entries(0).mirror.num_pages();
    ModeSizes const z = mode_sizes(s, pages);

    std::optional<EvalModel> full;  // the oracle's labels come from the full-attention answer
    auto run_mode = [&](std::string const& mode) {
      EvalModel m = base;
      auto& kv = m.kv().inner();
      ModeSetup const setup = mode_setup(mode, z, indexer, item.id);
      if (setup.scorer) kv.scorer() = *setup.scorer;
      if (setup.policy) kv.policy() = *setup.policy;
      if (mode == "oracle") {
        auto golden = full->kv().golden_window(P - 1, s.tau, kv.entries(0).mirror.num_chunks());
        kv.offer_future(std::vector<float>(golden.begin(), golden.end()));
      }
      if (mode != "full") kv.hand_over(setup.cells);
      index_t const resident = mode == "full" ? pages : kv.table().resident_pages();  // at the hand-over
      fm::lsa::KindFootprint const footprint = kv.footprint().total();
      Answer const a = answer(m, logits, limit);
      rec.record(item, mode, a, resident, pages, footprint, prefill_s, kv.stats());
      if (mode == "full") full.emplace(std::move(m));
    };
    run_mode("full");  // always first: the oracle's labels are the golden chunks of its answer
    for (std::string const& mode : modes)
      if (mode != "full") run_mode(mode);
    rec.progress(i, items.size(), item, t0);
  }
}

// The CUDA decoder with LSA (bf16 rows): every mode prefills the item again on full KV, then hands over.
void evaluate_cuda(v4::Config const& config, v4::Weights weights, EvalSettings const& s, std::vector<std::string> const& modes,
                   std::optional<fm::indexer::MemoryIndexer> const& indexer, std::vector<index_t> const& targets,
                   std::vector<TaskItem> const& items, Recorder& rec) {
  index_t const per = s.page;
  index_t longest = 1;
  for (TaskItem const& item : items) longest = std::max<index_t>(longest, static_cast<index_t>(item.prompt.size() + item.answer.size()));
  index_t const most_pages = (longest / config.compress_rate_csa + per - 1) / per;
  auto model = make_cuda_model(config, std::move(weights),
                               {.max_context = longest,
                                .max_chunk = s.chunk,
                                .lsa = CudaLsa{.scorer = {fm::indexer::Recency{}},
                                               .policy = {},
                                               .options = {.csa_layers = config.count(v4::LayerKind::csa),
                                                           .target_layers = targets,
                                                           .reserve_cells = most_pages + 1,
                                                           .tau = s.tau,
                                                           .full_prefill = true},
                                               .chunks_per_page = per}});
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < items.size(); ++i) {
    TaskItem const& item = items[i];
    auto const P = static_cast<index_t>(item.prompt.size()), limit = static_cast<index_t>(item.answer.size());
    index_t const pages = (P / config.compress_rate_csa + per - 1) / per;
    ModeSizes const z = mode_sizes(s, pages);
    for (std::string const& mode : modes) {
      model->reset();
      auto tp = Clock::now();
      std::vector<float> const logits = prefill(*model, item.prompt, s.chunk);
      double const prefill_s = std::chrono::duration<double>(Clock::now() - tp).count();
      ModeSetup setup = mode_setup(mode, z, indexer, item.id);
      model->set_lsa(setup.scorer.value_or(EvalScorer{fm::indexer::Recency{}}), setup.policy.value_or(AnyPolicy{}));
      if (mode != "full") model->hand_over(setup.cells);
      CudaLsaReport const at_hand_over = *model->lsa_report();
      Answer const a = answer(*model, logits, limit);
      rec.record(item, mode, a, mode == "full" ? pages : at_hand_over.resident_pages, pages, at_hand_over.footprint.total(),
                 prefill_s, model->lsa_report()->stats);
    }
    rec.progress(i, items.size(), item, t0);
  }
}

}  // namespace

void evaluate(v4::Config const& config, v4::Weights weights, EvalSettings const& s) {
  std::vector<std::string> modes = s.modes;
  if (modes.empty())
    for (char const* m : kEvalModes)
      if ((s.indexer || !std::string(m).starts_with("memory")) && (!s.cuda || std::string(m) != "oracle")) modes.push_back(m);
  std::optional<fm::indexer::MemoryIndexer> indexer;
  std::vector<index_t> targets = all_csa_layers(config);
  if (targets.empty()) throw std::runtime_error("--eval: the model has no CSA layers, so nothing for LSA to keep");
  for (auto const& m : modes) {
    if (std::find(std::begin(kEvalModes), std::end(kEvalModes), m) == std::end(kEvalModes))
      throw std::runtime_error("--modes: unknown mode \"" + m + "\"");
    if (m.starts_with("memory") && !s.indexer) throw std::runtime_error("--modes " + m + " needs the Memory Indexer: --indexer FILE");
    if (m == "oracle" && s.cuda) throw std::runtime_error("--modes oracle reads the host reference's trace of the full answer: --device cpu");
  }
  if (s.indexer) indexer = load_memory_indexer(*s.indexer, config, targets);
  std::vector<TaskItem> const items = read_tasks(s.tasks);
  Recorder rec{std::ofstream(s.out), {}};
  if (!rec.out) throw std::runtime_error(s.out.string() + ": cannot write");
  if (s.cuda) evaluate_cuda(config, std::move(weights), s, modes, indexer, targets, items, rec);
  else evaluate_host(config, std::move(weights), s, modes, indexer, targets, items, rec);
  rec.summary(items.size(), modes.size(), s.out);
}

}  // namespace fm_dsv4
