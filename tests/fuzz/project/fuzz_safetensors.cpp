// libFuzzer target: SafetensorsFile::parse over arbitrary bytes.
//
// A malformed image must end in flashmemory::error; anything else — a crash, a sanitizer report, a leak, a
// different exception (uncaught, so it aborts) — is a finding. An accepted image must also keep the reader's
// promises: every span lies inside the input and matches its shape, read_float reads it, and writing the
// tensors back out and parsing that gives the same tensors and metadata.
#include <flashmemory/io/safetensors.hpp>
#include <flashmemory/io/safetensors_writer.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace {
void check(bool ok) {
  if (!ok) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
  std::span<std::byte const> input(reinterpret_cast<std::byte const*>(data), size);
  std::optional<fm::io::SafetensorsFile> parsed;
  try {
    parsed.emplace(fm::io::SafetensorsFile::parse(input, "fuzz.safetensors"));
  } catch (fm::error const&) {
    return 0;  // a refusal is the expected outcome for most inputs
  }
  // Accepted: from here on nothing may throw.
  auto const& file = *parsed;
  fm::io::SafetensorsWriter writer;
  for (auto const& [key, value] : file.metadata()) writer.set_metadata(key, value);
  for (auto const& name : file.names()) {
    fm::io::TensorInfo const& info = file.info(name);
    std::span<std::byte const> bytes = file.bytes(name);
    check(bytes.size() == info.size && info.size == static_cast<std::size_t>(info.numel()) * fm::size_of(info.type));
    check(bytes.empty() || (bytes.data() >= input.data() && bytes.data() + bytes.size() <= input.data() + size));
    if (info.numel() <= 4096) check(file.read_float(name, info.shape).size() == static_cast<std::size_t>(info.numel()));
    writer.add(name, info.type, info.shape, bytes);
  }
  std::vector<std::byte> again = writer.serialize();
  auto copy = fm::io::SafetensorsFile::parse(again, "rewritten.safetensors");
  check(copy.names() == file.names() && copy.metadata() == file.metadata());
  for (auto const& name : file.names()) {
    auto a = file.bytes(name), b = copy.bytes(name);
    check(copy.info(name).shape == file.info(name).shape && copy.info(name).type == file.info(name).type);
    check(std::equal(a.begin(), a.end(), b.begin(), b.end()));
  }
  return 0;
}
