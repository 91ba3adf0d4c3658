// flashmemory/core/cuda/stream.cuh — owning CUDA streams and events.
//
// Stream: a non-blocking stream (it does not synchronise with the legacy default stream), e.g. the copy
// stream that recall runs on beside the decode stream. Event: record / wait / time; the recall engine
// publishes a new chunk→cell table only after the copy stream's event has completed (design.md §1).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/cuda/check.cuh>

#include <cuda_runtime_api.h>

#include <utility>

namespace flashmemory::cuda {

class Stream {
 public:
  // priority: lower numbers run first (cudaDeviceGetStreamPriorityRange); 0 is the default priority.
  explicit Stream(int priority = 0) {
    FLASHMEMORY_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, priority));
  }
  Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
  Stream& operator=(Stream&& other) noexcept {
    if (this != &other) {
      release();
      stream_ = std::exchange(other.stream_, nullptr);
    }
    return *this;
  }
  Stream(Stream const&) = delete;
  Stream& operator=(Stream const&) = delete;
  ~Stream() { release(); }

  cudaStream_t get() const noexcept { return stream_; }
  operator cudaStream_t() const noexcept { return stream_; }
  void synchronize() const { FLASHMEMORY_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  void release() noexcept {
    if (stream_) cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  enum Timing : bool { kNoTiming = false, kTiming = true };

  // Events that are not timed are cheaper to record and to wait on; the default is the cheap kind.
  explicit Event(Timing timing = kNoTiming) {
    FLASHMEMORY_CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
  }
  Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  Event& operator=(Event&& other) noexcept {
    if (this != &other) {
      release();
      event_ = std::exchange(other.event_, nullptr);
    }
    return *this;
  }
  Event(Event const&) = delete;
  Event& operator=(Event const&) = delete;
  ~Event() { release(); }

  cudaEvent_t get() const noexcept { return event_; }
  void record(cudaStream_t stream) { FLASHMEMORY_CUDA_CHECK(cudaEventRecord(event_, stream)); }
  // Makes `stream` wait (on the device) for the work captured by the last record().
  void wait_on(cudaStream_t stream) const { FLASHMEMORY_CUDA_CHECK(cudaStreamWaitEvent(stream, event_, 0)); }
  void synchronize() const { FLASHMEMORY_CUDA_CHECK(cudaEventSynchronize(event_)); }
  // True once the recorded work has completed; never blocks.
  bool ready() const {
    cudaError_t err = cudaEventQuery(event_);
    if (err == cudaErrorNotReady) return false;
    FLASHMEMORY_CUDA_CHECK(err);
    return true;
  }
  // Milliseconds between two timed events that have both completed.
  friend float elapsed_ms(Event const& start, Event const& stop) {
    float ms = 0;
    FLASHMEMORY_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, stop.event_));
    return ms;
  }

 private:
  void release() noexcept {
    if (event_) cudaEventDestroy(event_);
    event_ = nullptr;
  }
  cudaEvent_t event_ = nullptr;
};

}  // namespace flashmemory::cuda
