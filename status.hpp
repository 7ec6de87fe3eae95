// Status: the result of an operation on files, as LevelDB's Status is: empty when it
// succeeded, else what failed, where and why, and what kind of failure it was.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

// The result of a store operation: empty when it succeeded, else what failed, where, and why,
// and what kind of failure it is (LevelDB's Status codes): a reader sends an error in an entry's
// place only for an entry that is gone (NotFound) or damaged (Corruption); an IOError (EMFILE,
// ENOMEM, EIO, ...) may pass, so the read is tried again later instead.
struct Status {
  enum class Code : uint8_t { IOError, NotFound, Corruption };  // meaningful when !ok()
  std::string error;
  Code code = Code::IOError;
  bool ok() const { return error.empty(); }
  bool transient() const { return !ok() && code == Code::IOError; }
  static Status Ok() { return {}; }
  // "<what> <path>: <strerror(err)>"; NotFound for ENOENT and ENOTDIR, else IOError.
  static Status Errno(std::string_view what, const std::string& path, int err) {
    Status s;
    s.error.append(what).append(" ").append(path).append(": ").append(std::strerror(err));
    s.code = err == ENOENT || err == ENOTDIR ? Code::NotFound : Code::IOError;
    return s;
  }
  static Status Corruption(std::string error) {
    Status s;
    s.error = std::move(error);
    s.code = Code::Corruption;
    return s;
  }
};

