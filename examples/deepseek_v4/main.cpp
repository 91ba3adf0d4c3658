// fm-dsv4 — run the DeepSeek-V4 reference decoder on a checkpoint, or report its KV-cache footprint.
//
//   fm-dsv4 [CHECKPOINT] [options]           prefill a prompt, decode, print ids, tokens/s and KV bytes
//   fm-dsv4 --kv-report --context N [--config FILE]
//
// With no CHECKPOINT the embedded tiny checkpoint is used (FLASHMEMORY_DSV4_TINY_CHECKPOINT, compiled in).
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
#include <iostream>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
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
      --device cpu|cuda   where to run (default cpu)
  fm-dsv4 --kv-report --context N [--config FILE]
      KV-cache bytes per layer kind at N tokens, bf16 and packed fp8 records;
      FILE is a config.json (default: the embedded tiny checkpoint's)
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
  fm::index_t prompt_len = 64, max_new_tokens = 32, chunk = 256, context = -1;
  double temperature = 0.0, top_p = 1.0;
  std::uint64_t seed = 0;
  bool stop_at_eos = false, kv_report = false, help = false;
  std::optional<std::filesystem::path> config;
  std::string device = "cpu";
};

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
    else if (a == "--stop-at-eos") o.stop_at_eos = true;
    else if (a == "--device") {
      o.device = std::string(value());
      if (o.device != "cpu" && o.device != "cuda") throw Usage("--device: expected cpu or cuda, found \"" + o.device + "\"");
    } else if (a == "--kv-report") o.kv_report = true;
    else if (a == "--context") {
      o.context = parse_number<fm::index_t>(a, value());
      if (o.context < 0) throw Usage("--context: expected a token count ≥ 0");
    } else if (a == "--config") o.config = std::filesystem::path(value());
    else if (a.starts_with("-")) throw Usage("unknown option " + std::string(a));
    else if (have_checkpoint) throw Usage("more than one checkpoint given: " + std::string(a));
    else o.checkpoint = a, have_checkpoint = true;
  }
  if (o.kv_report && o.context < 0) throw Usage("--kv-report needs --context N");
  if (!o.kv_report && (o.context >= 0 || o.config)) throw Usage("--context and --config belong to --kv-report");
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

int generate(Options const& o) {
  if (o.device == "cuda") {
    std::fprintf(stderr, "fm-dsv4: --device cuda: the CUDA decoder is not built yet; use --device cpu\n");
    return 1;
  }
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };

  auto t0 = Clock::now();
  auto [config, weights] = v4::load_model(o.checkpoint);
  std::printf("checkpoint: %s\n  %s; loaded in %.3f s; device cpu (float32 reference)\n", o.checkpoint.string().c_str(),
              describe(config).c_str(), seconds(Clock::now() - t0));
  v4::Decoder<> model(config, std::move(weights));

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

  // Prefill in chunks (any chunking gives the same logits); a progress bar when there is more than one.
  auto tp = Clock::now();
  std::vector<float> logits;
  auto n = static_cast<fm::index_t>(prompt.size());
  for (fm::index_t at = 0; at < n; at += o.chunk) {
    fm::index_t len = std::min(o.chunk, n - at);
    logits = model.forward(std::span(prompt).subspan(static_cast<std::size_t>(at), static_cast<std::size_t>(len)));
    if (n > o.chunk) progress(at + len, n);
  }
  double prefill_s = seconds(Clock::now() - tp);

  std::vector<fm::index_t> generated;
  auto td = Clock::now();
  for (fm::index_t i = 0; i < o.max_new_tokens; ++i) {
    fm::index_t next = sample(logits, o, rng);
    generated.push_back(next);
    bool eos = std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), next) != config.eos_token_ids.end();
    if ((o.stop_at_eos && eos) || i + 1 == o.max_new_tokens) break;
    logits = model.forward(std::span(&next, 1));
  }
  double decode_s = seconds(Clock::now() - td);
  auto decoded = static_cast<fm::index_t>(generated.size()) - 1;  // the first token comes from the prefill logits

  std::printf("prompt: %lld tokens (%s)\n", static_cast<long long>(n), o.prompt ? "given" : "random");
  std::printf("generated (%s):", o.temperature == 0 ? "greedy" : "sampled");
  for (fm::index_t id : generated) std::printf(" %lld", static_cast<long long>(id));
  std::printf("\nprefill: %lld tokens in %.4f s = %.1f tokens/s\n", static_cast<long long>(n), prefill_s, double(n) / prefill_s);
  if (decoded > 0)
    std::printf("decode:  %lld tokens in %.4f s = %.1f tokens/s\n", static_cast<long long>(decoded), decode_s,
                double(decoded) / decode_s);
  fm::index_t held = model.position();
  std::printf("KV cache after %lld tokens:\n", static_cast<long long>(held));
  print_kv_table(config, held, [&](v4::KvFormat f) { return v4::kv_footprint(config, model.cache(), f); });
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options o = parse_args(argc, argv);
    if (o.help) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    return o.kv_report ? kv_report(o) : generate(o);
  } catch (Usage const& e) {
    std::fprintf(stderr, "fm-dsv4: %s\n(run fm-dsv4 --help for usage)\n", e.what());
    return 2;
  } catch (std::exception const& e) {
    std::fprintf(stderr, "fm-dsv4: %s\n", e.what());
    return 1;
  }
}
