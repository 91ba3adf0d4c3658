// flashmemory/models/deepseek_v4/load.hpp — loading a DeepSeek-V4 checkpoint (deepseek-v4.md §9, §15).
//
// Tensor names: three spellings are accepted and may be mixed —
//   * upstream (released checkpoints, §9.1): `embed.weight`, `layers.0.attn.wq_a.weight`, `layers.0.ffn.experts.3.w1.weight`;
//   * transformers runtime names (§9.3): `model.embed_tokens.weight`, `model.layers.0.self_attn.q_a_proj.weight`,
//     with routed experts fused into `mlp.experts.gate_up_proj [E, 2I, D]` and `mlp.experts.down_proj [E, D, I]`;
//   * what transformers' save_pretrained writes (§15): upstream leaves under a `model.` prefix.
// Storage: F32 / BF16 / F16 as is; F8_E4M3 with ue8m0 (or float) scales per 128×128 block in `<name>.scale` or
// `<name>.weight_scale_inv`; routed experts as FP4 e2m1 packed two per byte (I8/U8 [out, in/2], low nibble =
// even column) with one ue8m0 scale per 32 inputs in `<name>.scale` [out, in/32]. Everything is dequantised to
// float32 at load. A missing tensor, a tensor nothing asked for (other than the MTP block `mtp.*`, which this
// decoder does not run), a shape that disagrees with config.json, or a dtype that cannot hold the parameter is
// an error naming the tensor and the file, with expected vs found.
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/dtype.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/io/checkpoint.hpp>
#include <flashmemory/models/deepseek_v4/config.hpp>
#include <flashmemory/models/deepseek_v4/weights.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flashmemory::models::deepseek_v4 {

// The upstream spelling of a tensor name given in any of the accepted spellings.
inline std::string upstream_name(std::string_view stored) {
  // Whole dotted segments, applied in order to "." + name + "." (so every pattern can anchor on dots).
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 33> kRenames{{
      {".embed_tokens.", ".embed."},
      {".lm_head.", ".head."},
      {".hc_head.hc_fn.", ".hc_head_fn."},
      {".hc_head.hc_base.", ".hc_head_base."},
      {".hc_head.hc_scale.", ".hc_head_scale."},
      {".self_attn.", ".attn."},
      {".mlp.", ".ffn."},
      {".input_layernorm.", ".attn_norm."},
      {".post_attention_layernorm.", ".ffn_norm."},
      {".attn_hc.fn.", ".hc_attn_fn."},
      {".attn_hc.base.", ".hc_attn_base."},
      {".attn_hc.scale.", ".hc_attn_scale."},
      {".ffn_hc.fn.", ".hc_ffn_fn."},
      {".ffn_hc.base.", ".hc_ffn_base."},
      {".ffn_hc.scale.", ".hc_ffn_scale."},
      {".sinks.", ".attn_sink."},
      {".compressor.indexer.scorer.weights_proj.", ".indexer.weights_proj."},
      {".compressor.indexer.weights_proj.", ".indexer.weights_proj."},
      {".compressor.indexer.q_b_proj.", ".indexer.wq_b."},
      {".compressor.indexer.", ".indexer.compressor."},
      {".kv_norm.", ".norm."},
      {".position_bias.", ".ape."},
      {".q_a_proj.", ".wq_a."},
      {".q_b_proj.", ".wq_b."},
      {".kv_proj.", ".wkv."},
      {".shared_experts.gate_proj.", ".shared_experts.w1."},
      {".shared_experts.up_proj.", ".shared_experts.w3."},
      {".shared_experts.down_proj.", ".shared_experts.w2."},
      {".gate_proj.", ".wgate."},
      {".o_a_proj.", ".wo_a."},
      {".o_b_proj.", ".wo_b."},
      {".q_a_norm.", ".q_norm."},
      {".gate.e_score_correction_bias.", ".gate.bias."},
  }};
  std::string s(1, '.');
  s.append(stored.starts_with("model.") ? stored.substr(6) : stored).push_back('.');
  for (auto [from, to] : kRenames)
    for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size() - 1))
      s.replace(at, from.size(), to);
  if (s.ends_with(".weight_scale_inv.")) s.replace(s.size() - 18, 18, ".scale.");
  return s.substr(1, s.size() - 2);
}

// A weight source (see weights.hpp) over a checkpoint: resolves spellings, dequantises, and remembers what was
// read so that finish() can reject what was not.
class CheckpointSource {
 public:
  CheckpointSource(io::Checkpoint const& checkpoint, Config const& config)
      : ckpt_(checkpoint), experts_(config.n_routed_experts) {
    for (std::string const& name : ckpt_.names()) {
      auto [it, fresh] = stored_.emplace(upstream_name(name), name);
      if (!fresh)
        fail(errc::parse, where(), ": tensors \"", it->second, "\" and \"", name, "\" both name \"", it->first, "\"");
    }
  }

  Tensor tensor(std::string const& name, std::vector<index_t> const& shape) {
    if (auto it = stored_.find(name); it != stored_.end()) return read(it->second, shape);
    if (auto fused = fused_expert(name, shape)) return std::move(*fused);
    fail(errc::not_found, where(), ": missing tensor \"", name, "\" (shape ", format(shape), ")");
  }

  IdTable ids(std::string const& name, std::vector<index_t> const& shape, index_t bound) {
    auto it = stored_.find(name);
    if (it == stored_.end()) fail(errc::not_found, where(), ": missing tensor \"", name, "\" (shape ", format(shape), ")");
    io::TensorInfo const& t = info(it->second, shape);
    if (t.type != dtype::i64 && t.type != dtype::i32)
      fail(errc::bad_dtype, where(), ": tensor \"", t.name, "\": expected I64 or I32 ids, found ", name_of(t.type));
    IdTable out{HostBuffer<std::int32_t>(static_cast<std::size_t>(t.numel()), t.name), shape[0], shape[1]};
    auto bytes = ckpt_.bytes(t.name);
    for (std::size_t i = 0; i < out.data.size(); ++i) {
      std::int64_t v = 0;
      if (t.type == dtype::i64) __builtin_memcpy(&v, bytes.data() + 8 * i, 8);
      else {
        std::int32_t w = 0;
        __builtin_memcpy(&w, bytes.data() + 4 * i, 4);
        v = w;
      }
      if (v < 0 || v >= bound)
        fail(errc::invalid_argument, where(), ": tensor \"", t.name, "\": element ", i, " = ", v, " is outside [0, ", bound, ")");
      out.data[i] = static_cast<std::int32_t>(v);
    }
    return out;
  }

  // Every stored tensor must have been read (the MTP block excepted).
  void finish() const {
    for (auto const& [up, name] : stored_)
      if (!used_.contains(name) && !up.starts_with("mtp."))
        fail(errc::unsupported, where(), ": unexpected tensor \"", name, "\" (", name_of(ckpt_.info(name).type), " ",
             io::detail::format_shape(ckpt_.info(name).shape), "): the configuration has no parameter of that name");
  }

 private:
  std::string where() const { return ckpt_.path().string(); }
  static std::string format(std::vector<index_t> const& shape) { return io::detail::format_shape(shape); }

  // The stored entry, marked as read, after checking its shape (`stored_shape` defaults to `shape`).
  io::TensorInfo const& info(std::string const& stored, std::vector<index_t> const& shape,
                             std::optional<std::vector<index_t>> const& stored_shape = {}) {
    io::TensorInfo const& t = ckpt_.info(stored);
    std::vector<index_t> const& want = stored_shape ? *stored_shape : shape;
    if (t.shape != want)
      fail(errc::bad_shape, where(), ": tensor \"", stored, "\": expected shape ", format(want), " from the config, found ",
           format(t.shape), " (", name_of(t.type), ")");
    used_.insert(stored);
    return t;
  }

  Tensor read(std::string const& stored, std::vector<index_t> const& shape) {
    dtype type = ckpt_.info(stored).type;
    Tensor out{HostBuffer<float>(static_cast<std::size_t>(numel(shape)), stored), shape};
    switch (type) {
      case dtype::f32: case dtype::bf16: case dtype::f16: case dtype::f64:
        info(stored, shape);
        to_float(type, ckpt_.bytes(stored), out.span());
        return out;
      case dtype::f8_e4m3: return read_fp8(stored, std::move(out));
      case dtype::i8: case dtype::u8: return read_fp4(stored, std::move(out));
      default:
        fail(errc::bad_dtype, where(), ": tensor \"", stored, "\": dtype ", name_of(type), " cannot hold a float parameter ",
             "(expected F32, BF16, F16, F8_E4M3 with block scales, or FP4 packed in I8 with scales)");
    }
  }

  // The scale tensor stored beside a quantised weight, dequantised to float; its shape must be `shape`.
  HostBuffer<float> companion_scale(std::string const& stored, std::vector<index_t> const& shape) {
    std::string up = upstream_name(stored);
    std::string key = (up.ends_with(".weight") ? up.substr(0, up.size() - 7) : up) + ".scale";
    auto it = stored_.find(key);
    if (it == stored_.end())
      fail(errc::not_found, where(), ": tensor \"", stored, "\" is quantised (", name_of(ckpt_.info(stored).type),
           ") but its scale \"", key, "\" (or \".weight_scale_inv\") is missing");
    io::TensorInfo const& s = info(it->second, shape);
    HostBuffer<float> out(static_cast<std::size_t>(s.numel()), s.name);
    to_float(s.type, ckpt_.bytes(s.name), out.span());
    return out;
  }

  // FP8 e4m3 with one scale per 128×128 block: W[i, j] = fp8(Wq[i, j]) · s[i / 128, j / 128].
  Tensor read_fp8(std::string const& stored, Tensor out) {
    if (out.shape.size() != 2) fail(errc::bad_dtype, where(), ": tensor \"", stored, "\": F8_E4M3 is supported for matrices only");
    index_t rows = out.shape[0], cols = out.shape[1], sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    info(stored, out.shape);
    HostBuffer<float> scale = companion_scale(stored, {sr, sc});
    auto bytes = ckpt_.bytes(stored);
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = 0; j < cols; ++j)
        out.data[static_cast<std::size_t>(i * cols + j)] =
            decode_f8_e4m3(std::to_integer<std::uint8_t>(bytes[static_cast<std::size_t>(i * cols + j)])) *
            scale[static_cast<std::size_t>((i / 128) * sc + j / 128)];
    return out;
  }

  // FP4 e2m1, two per byte along the input axis, one scale per 32 inputs: W[i, j] = fp4(...) · s[i, j / 32].
  Tensor read_fp4(std::string const& stored, Tensor out) {
    if (out.shape.size() != 2 || out.shape[1] % 32 != 0)
      fail(errc::bad_dtype, where(), ": tensor \"", stored, "\": ", name_of(ckpt_.info(stored).type),
           " (FP4 packed) needs a matrix whose input dimension is a multiple of 32, expected shape ", format(out.shape));
    index_t rows = out.shape[0], cols = out.shape[1];
    info(stored, out.shape, std::vector<index_t>{rows, cols / 2});
    HostBuffer<float> scale = companion_scale(stored, {rows, cols / 32});
    auto bytes = ckpt_.bytes(stored);
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = 0; j < cols; ++j) {
        auto byte = std::to_integer<std::uint8_t>(bytes[static_cast<std::size_t>(i * (cols / 2) + j / 2)]);
        out.data[static_cast<std::size_t>(i * cols + j)] =
            unpack_fp4(byte, static_cast<std::size_t>(j)) * scale[static_cast<std::size_t>(i * (cols / 32) + j / 32)];
      }
    return out;
  }

  // `layers.{l}.ffn.experts.{e}.w{1,2,3}.weight` cut out of transformers' fused expert tensors.
  std::optional<Tensor> fused_expert(std::string const& name, std::vector<index_t> const& shape) {
    std::size_t at = name.find(".ffn.experts.");
    if (at == std::string::npos || shape.size() != 2) return std::nullopt;
    std::string layer = name.substr(0, at + 13);  // "layers.{l}.ffn.experts."
    std::size_t dot = name.find('.', at + 13);
    if (dot == std::string::npos) return std::nullopt;
    index_t e = std::stoll(name.substr(at + 13, dot - at - 13));
    std::string_view leaf = std::string_view(name).substr(dot + 1);
    bool down = leaf == "w2.weight";
    if (!down && leaf != "w1.weight" && leaf != "w3.weight") return std::nullopt;
    std::string fused = layer + (down ? "down_proj" : "gate_up_proj");
    auto it = stored_.find(fused);
    if (it == stored_.end()) return std::nullopt;
    if (fused_name_ != fused) {  // read once per layer, then sliced expert by expert
      fused_ = read(it->second, {experts_, down ? shape[0] : 2 * shape[0], shape[1]});
      fused_name_ = fused;
    }
    index_t per = fused_.shape[1] * fused_.shape[2], offset = e * per + (leaf == "w3.weight" ? shape[0] * shape[1] : 0);
    Tensor out{HostBuffer<float>(static_cast<std::size_t>(numel(shape)), name), shape};
    std::copy_n(fused_.data.data() + offset, out.size(), out.data.data());
    return out;
  }

  static index_t numel(std::vector<index_t> const& shape) {
    index_t n = 1;
    for (index_t d : shape) n *= d;
    return n;
  }

  io::Checkpoint const& ckpt_;
  index_t experts_;                                         // routed experts per layer (fused tensors' first axis)
  std::map<std::string, std::string, std::less<>> stored_;  // upstream name → stored name
  std::set<std::string, std::less<>> used_;                 // stored names read
  std::string fused_name_;                                  // the fused expert tensor held in fused_
  Tensor fused_;
};

// The weights of `config` from an open checkpoint.
inline Weights load_weights(io::Checkpoint const& checkpoint, Config const& config) {
  CheckpointSource source(checkpoint, config);
  Weights w = build_weights(config, source);
  source.finish();
  return w;
}

struct Model {
  Config config;
  Weights weights;
};

// A checkpoint directory: config.json plus model.safetensors or sharded *.safetensors with an index.
inline Model load_model(std::filesystem::path const& dir) {
  io::Checkpoint checkpoint = io::Checkpoint::open(dir);
  Config config = config_from_json(checkpoint.config());
  Weights weights = load_weights(checkpoint, config);
  return {std::move(config), std::move(weights)};
}

}  // namespace flashmemory::models::deepseek_v4
