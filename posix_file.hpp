// The small POSIX file helpers of the store (index.cpp, blob_store.cpp, journal.cpp, store.cpp):
// whole writes, directories, listings, paths. Errors are errno values or Status with the path.
#pragma once
#include <dirent.h>
#include <sys/types.h>

#include <ctime>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "status.hpp"

// Offsets past 2 GiB (an index of 33 million entries) and times past January 2038 must fit:
// the Makefile builds every variant with _FILE_OFFSET_BITS=64 and _TIME_BITS=64, which 32-bit
// targets need. A build without them must fail, not corrupt: posix_file.cpp and the binary's
// main include this, and every object of a build variant shares its flags.
static_assert(sizeof(off_t) == 8, "build with -D_FILE_OFFSET_BITS=64 (see the Makefile)");
static_assert(sizeof(time_t) == 8, "build with -D_TIME_BITS=64 -D_FILE_OFFSET_BITS=64 (see the Makefile)");

// Writes all of `data` at `offset`, retrying short writes and EINTR; 0 or an errno value.
int pwrite_all(int fd, const char* data, size_t len, uint64_t offset);
// Writes all of `data` at the file's offset, retrying short writes and EINTR; 0 or an errno value.
int write_all(int fd, const char* data, size_t len);
// Creates the directory `path` unless it exists; fails if it exists as something else.
Status make_dir(const std::string& path);
// fsyncs the directory `path`.
Status fsync_path(const std::string& path);
// `path` made absolute (resolved when it exists): for a message or a log line that its reader
// may read elsewhere. As given when not even the working directory is known.
std::string absolute_path(const std::string& path);

// Calls `fn` with the name of every entry of the open directory `d` but "." and "..", then
// closes it. readdir() returns null both at the end and on an error: only errno tells them
// apart (EOVERFLOW, for one, where a 64-bit directory cookie does not fit a 32-bit off_t), and
// a failure taken for the end would let a half-read listing pass for the whole.
template <typename Fn>
Status for_each_name(DIR* d, const std::string& path, Fn fn) {
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(d);
    if (!e) break;
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    fn(e->d_name);
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return Status::Errno("cannot list directory", path, err);
  return Status::Ok();
}

// The value of a lowercase hex digit, or -1: hashes are named in lowercase hex on disk (JSON's
// \u escapes, which take either case, have their own reader in json.hpp).
inline int lowercase_hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}
