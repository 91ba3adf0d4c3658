// flashmemory/io/mapped_file.hpp — a read-only memory map of a whole file (POSIX mmap), RAII.
//
// Checkpoints are read through maps rather than streams: a tensor's bytes are then a span into the page
// cache, loaded on first touch, and a 100 GB checkpoint costs address space, not memory. The map is private
// and read-only; a file truncated by someone else while mapped raises SIGBUS on access (as with any map).
#pragma once

#include <flashmemory/config.hpp>
#include <flashmemory/core/error.hpp>

#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace flashmemory::io {

class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept { swap(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    MappedFile(std::move(other)).swap(*this);
    return *this;
  }
  MappedFile(MappedFile const&) = delete;
  MappedFile& operator=(MappedFile const&) = delete;
  ~MappedFile() {
    if (data_) ::munmap(data_, size_);
  }

  // Maps a regular file. A missing file is errc::not_found, anything else that fails is errc::io; both
  // name the path and the system's reason. An empty file maps to an empty span.
  static MappedFile open(std::filesystem::path const& path) {
    auto reason = [] { return std::generic_category().message(errno); };
    // O_NONBLOCK: opening a FIFO by mistake must fail below, not hang.
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) fail(errno == ENOENT ? errc::not_found : errc::io, path.string(), ": cannot open: ", reason());
    MappedFile f;
    f.path_ = path;
    struct ::stat st {};
    if (::fstat(fd, &st) != 0) {
      std::string why = reason();
      ::close(fd);
      fail(errc::io, path.string(), ": cannot stat: ", why);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(errc::io, path.string(), ": not a regular file");
    }
    f.size_ = static_cast<std::size_t>(st.st_size);
    if (f.size_ > 0) {
      void* p = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        std::string why = reason();
        ::close(fd);
        fail(errc::io, path.string(), ": cannot map ", f.size_, " bytes: ", why);
      }
      f.data_ = p;
    }
    ::close(fd);  // the map keeps the file alive
    return f;
  }

  std::span<std::byte const> bytes() const noexcept { return {static_cast<std::byte const*>(data_), size_}; }
  std::filesystem::path const& path() const noexcept { return path_; }

 private:
  void swap(MappedFile& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(path_, other.path_);
  }

  void* data_ = nullptr;
  std::size_t size_ = 0;
  std::filesystem::path path_;
};

}  // namespace flashmemory::io
