// Device, pinned and mapped-pinned buffers, streams and events, and CUDA errors as flashmemory errors;
// a tensor read from a safetensors file goes pinned → device → host unchanged.
#include "gpu_test.cuh"

#include <flashmemory/core/cuda/check.cuh>
#include <flashmemory/core/cuda/device_buffer.cuh>
#include <flashmemory/core/cuda/pinned_buffer.cuh>
#include <flashmemory/core/cuda/stream.cuh>
#include <flashmemory/io/safetensors.hpp>
#include <flashmemory/io/safetensors_writer.hpp>

#include <catch2/catch_test_macros.hpp>

#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

using namespace flashmemory;
using flashmemory::cuda::DeviceBuffer;
using flashmemory::cuda::PinnedBuffer;
using flashmemory::cuda::Stream;
using flashmemory::cuda::Event;

TEST_CASE("a failing CUDA call becomes a flashmemory::error naming the call and the place", "[gpu][core]") {
  try {
    FLASHMEMORY_CUDA_CHECK(cudaSetDevice(1 << 20));
    FAIL("no exception");
  } catch (error const& e) {
    std::string const what = e.what();
    CHECK(e.code() == errc::cuda);
    CHECK(what.find("cudaSetDevice(1 << 20)") != std::string::npos);
    CHECK(what.find("cudaErrorInvalidDevice") != std::string::npos);
    CHECK(what.find("test_buffers.cu:") != std::string::npos);
  }
  auto status = [] {
    FLASHMEMORY_CUDA_TRY(cudaSetDevice(1 << 20));
    return Status::success();
  }();
  CHECK(status.code == errc::cuda);
  CHECK(cudaGetLastError() == cudaSuccess);  // nothing sticky left behind
}

TEST_CASE("an impossible device allocation is out_of_memory and leaves no error behind", "[gpu][core]") {
  try {
    DeviceBuffer<float> huge(std::size_t{1} << 50, "huge test buffer");
    FAIL("no exception");
  } catch (error const& e) {
    CHECK(e.code() == errc::out_of_memory);
    CHECK(std::string(e.what()).find("huge test buffer") != std::string::npos);
  }
  CHECK(cudaGetLastError() == cudaSuccess);
  DeviceBuffer<float> fine(16);  // the device still works
  CHECK(fine.size() == 16);
}

TEST_CASE("device buffers round-trip, move, and poison", "[gpu][core]") {
  std::mt19937 rng(5);
  std::vector<float> host = test::normal(10'000, rng);
  DeviceBuffer<float> d = test::upload(host);
  DeviceBuffer<float> moved = std::move(d);
  CHECK(d.data() == nullptr);
  CHECK(test::download(moved) == host);
  moved.fill_bytes(0xff);
  FLASHMEMORY_CUDA_CHECK(cudaDeviceSynchronize());
  for (float x : test::download(moved)) REQUIRE(std::isnan(x));
}

TEST_CASE("a safetensors tensor goes pinned → device → host unchanged, timed by events on a stream", "[gpu][core][io]") {
  std::mt19937 rng(11);
  std::vector<float> values = test::normal(3 * 1000, rng);
  std::vector<bfloat16> tensor = test::to_bf16(values);
  auto dir = std::filesystem::temp_directory_path() / ("flashmemory_gpu_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  io::SafetensorsWriter w;
  w.add("layers.0.attn.kv", dtype::bf16, {3, 1000}, std::as_bytes(std::span(tensor)));
  w.write(dir / "t.safetensors");
  auto file = io::SafetensorsFile::open(dir / "t.safetensors");
  std::span<std::byte const> bytes = file.bytes("layers.0.attn.kv");
  REQUIRE(bytes.size() == tensor.size() * 2);

  PinnedBuffer<std::byte> pinned(bytes.size());
  std::memcpy(pinned.data(), bytes.data(), bytes.size());
  DeviceBuffer<std::byte> device(bytes.size());
  Stream stream;
  Event start(Event::kTiming), stop(Event::kTiming);
  start.record(stream);
  FLASHMEMORY_CUDA_CHECK(cudaMemcpyAsync(device.data(), pinned.data(), bytes.size(), cudaMemcpyHostToDevice, stream));
  stop.record(stream);
  stream.synchronize();
  CHECK(stop.ready());
  CHECK(elapsed_ms(start, stop) >= 0.0f);

  std::vector<std::byte> back = test::download(device);
  CHECK(std::memcmp(back.data(), tensor.data(), back.size()) == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("mapped pinned memory is readable from the device at its device pointer", "[gpu][core]") {
  PinnedBuffer<std::uint32_t> host(4096, PinnedBuffer<std::uint32_t>::kMapped);
  REQUIRE(host.mapped());
  REQUIRE(host.device_pointer() != nullptr);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<std::uint32_t>(i * 2654435761u);
  DeviceBuffer<std::uint32_t> device(host.size());
  FLASHMEMORY_CUDA_CHECK(cudaMemcpy(device.data(), host.device_pointer(), host.bytes(), cudaMemcpyDeviceToDevice));
  std::vector<std::uint32_t> back = test::download(device);
  CHECK(std::equal(back.begin(), back.end(), host.data()));

  PinnedBuffer<std::uint32_t> plain(16);
  CHECK_FALSE(plain.mapped());
  CHECK(plain.device_pointer() == nullptr);
}
