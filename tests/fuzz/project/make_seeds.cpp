// Writes a few valid safetensors files into the directory given as argv[1]: the fuzzer's seed corpus.
#include <flashmemory/io/safetensors_writer.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds <directory>\n";
    return 2;
  }
  std::filesystem::path dir = argv[1];
  auto bytes = [](std::size_t n, unsigned seed) {
    std::vector<std::byte> out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 131 + seed * 17 + 7) & 0xff);
    return out;
  };
  try {
    fm::io::SafetensorsWriter empty;
    empty.write(dir / "empty.safetensors");

    fm::io::SafetensorsWriter one;
    one.add("norm.weight", fm::dtype::f32, {4}, bytes(16, 1));
    one.set_metadata("format", "pt");
    one.write(dir / "one.safetensors");

    fm::io::SafetensorsWriter mixed;
    mixed.add("layers.0.attn.wq_a.weight", fm::dtype::f8_e4m3, {4, 8}, bytes(32, 2));
    mixed.add("layers.0.attn.wq_a.scale", fm::dtype::f8_e8m0, {1, 1}, bytes(1, 3));
    mixed.add("embed.weight", fm::dtype::bf16, {3, 4}, bytes(24, 4));
    mixed.add("ffn.gate.tid2eid", fm::dtype::i64, {2, 3}, bytes(48, 5));
    mixed.add("hc_head_scale", fm::dtype::f32, {}, bytes(4, 6));
    mixed.add("empty", fm::dtype::f16, {0, 3}, {});
    mixed.add("mask", fm::dtype::boolean, {5}, bytes(5, 7));
    mixed.add("counts", fm::dtype::i32, {2}, bytes(8, 8));
    mixed.add("wide", fm::dtype::f64, {1, 2}, bytes(16, 9));
    mixed.add("packed", fm::dtype::i8, {2, 2}, bytes(4, 10));
    mixed.add("small", fm::dtype::i16, {3}, bytes(6, 11));
    mixed.add("raw", fm::dtype::u8, {2}, bytes(2, 12));
    mixed.set_metadata("format", "pt");
    mixed.set_metadata("source", "seed");
    mixed.write(dir / "mixed.safetensors");
  } catch (fm::error const& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
