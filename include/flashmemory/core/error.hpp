// flashmemory/core/error.hpp — the one exception type of the host layer, and Status for launchers.
//
// Every failure names what was wrong (file, tensor or key, expected vs found) so that a user can act on
// the message alone. Host code throws flashmemory::error; kernel launchers and can_implement() return a
// Status instead, because they sit on paths that must not throw (CUDA-graph capture, device code).
#pragma once

#include <flashmemory/config.hpp>

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace flashmemory {

enum class errc {
  ok = 0,
  invalid_argument,  // a value outside its documented range
  bad_shape,         // a tensor whose shape disagrees with what the caller or config expects
  bad_dtype,         // an element type that is unknown or not allowed here
  parse,             // malformed JSON / safetensors header / file structure
  io,                // a file that cannot be opened, read or mapped
  not_found,         // a missing tensor, key or file
  unsupported,       // a valid request this build or configuration cannot serve
  out_of_memory,     // a host or device allocation (or a configured cap) failed
  cuda,              // a CUDA runtime call failed
};

constexpr char const* to_string(errc c) noexcept {
  switch (c) {
    case errc::ok: return "ok";
    case errc::invalid_argument: return "invalid argument";
    case errc::bad_shape: return "bad shape";
    case errc::bad_dtype: return "bad dtype";
    case errc::parse: return "parse error";
    case errc::io: return "i/o error";
    case errc::not_found: return "not found";
    case errc::unsupported: return "unsupported";
    case errc::out_of_memory: return "out of memory";
    case errc::cuda: return "CUDA error";
  }
  return "unknown error";
}

class error : public std::runtime_error {
 public:
  error(errc code, std::string const& message)
      : std::runtime_error(std::string("flashmemory: ") + to_string(code) + ": " + message), code_(code) {}
  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

namespace detail {
// Concatenates anything streamable; g++ 12 has no <format>.
template <class... Args>
std::string cat(Args const&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// Throws flashmemory::error with the pieces of the message concatenated.
template <class... Args>
[[noreturn]] void fail(errc code, Args const&... message) {
  throw error(code, detail::cat(message...));
}

// The result of a check that must not throw (can_implement, launchers).
struct Status {
  errc code = errc::ok;
  std::string message;

  static Status success() { return {}; }
  template <class... Args>
  static Status failure(errc code, Args const&... message) {
    return {code, detail::cat(message...)};
  }
  bool ok() const noexcept { return code == errc::ok; }
  explicit operator bool() const noexcept { return ok(); }
  // Turns a failed status into an exception at a host boundary.
  void throw_if_error() const {
    if (!ok()) throw error(code, message);
  }
};

}  // namespace flashmemory
