// flashmemory/store/host_mirror.hpp — every chunk ever written, in host memory (lsa.md §1, §6).
//
// The mirror is the ground truth of one KV kind of one layer: every chunk, from prefill or decode, is
// appended here first, encoded in its layout's record format (the same bytes the device reserve holds, so a
// recall is a plain page copy). It grows by whole pages, each its own allocation, so growing never moves a
// page that a recall may be reading. New pages are zero-filled, so a page is the same bytes wherever it is
// copied, written or not. The mirror is read and written by host code: its memory must be host-accessible
// (plain or pinned host memory).
//
// Host RAM is finite: `max_bytes` caps what the mirror may allocate. An append that would need a page past
// the cap fails with errc::out_of_memory naming the cap BEFORE anything changes — the mirror keeps every
// chunk it had and stays usable (reads go on; appends resume once the cap is raised).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>
#include <flashmemory/layout/concepts.hpp>
#include <flashmemory/store/allocator.hpp>

#include <cstddef>
#include <cstring>
#include <limits>
#include <span>
#include <utility>
#include <vector>

namespace flashmemory::store {

inline constexpr std::size_t kUnlimited = std::numeric_limits<std::size_t>::max();

template <layout::chunk_layout Layout, byte_allocator Allocator = HostAllocator>
  requires(Allocator::kHostAccessible)
class HostMirror {
 public:
  explicit HostMirror(Layout layout, std::size_t max_bytes = kUnlimited, Allocator allocator = {})
      : layout_(std::move(layout)), max_bytes_(max_bytes), allocator_(std::move(allocator)) {}
  // A deep copy: every page (a sequence forked after a shared prefill).
  HostMirror(HostMirror const& o) : layout_(o.layout_), max_bytes_(o.max_bytes_), allocator_(o.allocator_) {
    for (std::byte const* page : o.pages_) {
      std::byte* copy = allocator_.allocate(page_bytes());
      if (!copy) {
        release();
        fail(errc::out_of_memory, "host mirror: cannot allocate ", o.allocated_bytes(), " B of ", Allocator::kName,
             " memory for a copy");
      }
      std::memcpy(copy, page, page_bytes());
      pages_.push_back(copy);
    }
    chunks_ = o.chunks_;
  }
  HostMirror& operator=(HostMirror const& o) {
    if (this != &o) *this = HostMirror(o);
    return *this;
  }
  HostMirror(HostMirror&& o) noexcept
      : layout_(o.layout_), max_bytes_(o.max_bytes_), allocator_(o.allocator_), pages_(std::exchange(o.pages_, {})),
        chunks_(std::exchange(o.chunks_, 0)) {}
  HostMirror& operator=(HostMirror&& o) noexcept {
    if (this != &o) {
      release();
      layout_ = o.layout_, max_bytes_ = o.max_bytes_, allocator_ = o.allocator_;
      pages_ = std::exchange(o.pages_, {}), chunks_ = std::exchange(o.chunks_, 0);
    }
    return *this;
  }
  ~HostMirror() { release(); }

  Layout const& layout() const noexcept { return layout_; }
  index_t num_chunks() const noexcept { return chunks_; }
  index_t num_pages() const noexcept { return static_cast<index_t>(pages_.size()); }
  std::size_t page_bytes() const noexcept { return static_cast<std::size_t>(layout::page_bytes(layout_)); }
  std::size_t allocated_bytes() const noexcept { return pages_.size() * page_bytes(); }
  std::size_t max_bytes() const noexcept { return max_bytes_; }
  // A new cap; it may not be below what is already allocated (nothing is ever dropped).
  void set_max_bytes(std::size_t bytes) {
    if (bytes < allocated_bytes())
      fail(errc::invalid_argument, "host mirror: cap of ", bytes, " B is below the ", allocated_bytes(), " B it already holds");
    max_bytes_ = bytes;
  }

  // Allocates the page the next append writes to, if it is not there yet. Fails (cap, allocation) exactly
  // when the next append would, changing nothing: callers that must not half-append check with it first.
  void make_room() { next_slot(); }

  // Encodes one chunk (layout().channels() floats) and appends it; returns its chunk index.
  index_t append(std::span<float const> chunk) {
    if (static_cast<index_t>(chunk.size()) != layout_.channels())
      fail(errc::bad_shape, "host mirror: a chunk has ", layout_.channels(), " channels, given ", chunk.size());
    std::byte* slot = next_slot();
    layout_.encode(chunk, {slot, static_cast<std::size_t>(layout_.record_bytes())});
    return chunks_++;
  }
  // Appends one already-encoded record (layout().record_bytes() bytes).
  index_t append_record(std::span<std::byte const> record) {
    if (static_cast<index_t>(record.size()) != layout_.record_bytes())
      fail(errc::bad_shape, "host mirror: a record has ", layout_.record_bytes(), " bytes, given ", record.size());
    std::memcpy(next_slot(), record.data(), record.size());
    return chunks_++;
  }

  std::span<std::byte const> record(index_t chunk) const {
    check_chunk(chunk);
    index_t per = layout_.chunks_per_page();
    return {pages_[static_cast<std::size_t>(chunk / per)] + (chunk % per) * layout_.record_bytes(),
            static_cast<std::size_t>(layout_.record_bytes())};
  }
  void decode(index_t chunk, std::span<float> out) const { layout_.decode(record(chunk), out); }

  // A whole page (page_bytes()); slots past chunks_in_page(p) hold no chunk yet.
  std::span<std::byte const> page(index_t p) const {
    if (p < 0 || p >= num_pages()) fail(errc::invalid_argument, "host mirror: page ", p, " of ", num_pages());
    return {pages_[static_cast<std::size_t>(p)], page_bytes()};
  }
  // Chunks written to page p so far.
  index_t chunks_in_page(index_t p) const noexcept {
    index_t n = chunks_ - p * layout_.chunks_per_page();
    return n < 0 ? 0 : n > layout_.chunks_per_page() ? layout_.chunks_per_page() : n;
  }

 private:
  // Where the next record goes, allocating its page first. Everything that can fail happens before the
  // mirror changes.
  std::byte* next_slot() {
    index_t per = layout_.chunks_per_page(), slot = chunks_ % per;
    if (slot == 0 && chunks_ / per == num_pages()) {
      if (page_bytes() > max_bytes_ - allocated_bytes())
        fail(errc::out_of_memory, "host mirror: chunk ", chunks_, " needs a new page of ", page_bytes(),
             " B, past the host-RAM cap of ", max_bytes_, " B (", allocated_bytes(), " B in ", num_pages(),
             " pages held); every chunk so far is kept — raise the cap to append more");
      pages_.reserve(pages_.size() + 1);
      std::byte* page = allocator_.allocate(page_bytes());
      if (!page)
        fail(errc::out_of_memory, "host mirror: cannot allocate page ", num_pages(), " (", page_bytes(), " B of ",
             Allocator::kName, " memory, ", allocated_bytes(), " B held); every chunk so far is kept");
      std::memset(page, 0, page_bytes());
      pages_.push_back(page);
    }
    return pages_[static_cast<std::size_t>(chunks_ / per)] + slot * layout_.record_bytes();
  }
  void check_chunk(index_t chunk) const {
    if (chunk < 0 || chunk >= chunks_) fail(errc::invalid_argument, "host mirror: chunk ", chunk, " of ", chunks_);
  }
  void release() noexcept {
    for (std::byte* p : pages_) allocator_.deallocate(p, page_bytes());
    pages_.clear();
  }

  Layout layout_;
  std::size_t max_bytes_;
  Allocator allocator_;
  std::vector<std::byte*> pages_;
  index_t chunks_ = 0;
};

}  // namespace flashmemory::store
