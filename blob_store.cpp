// The blob files: entries named by the SHA-256 of their bytes (blob_store.hpp).
#include "blob_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_set>

#include "posix_file.hpp"
#include "sha256.hpp"

// ---------------------------------------------------------------------------------------------
// BlobStore

BlobStore::~BlobStore() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

namespace {
// syncfs() reports write-back errors only since Linux 5.8; before, it returned 0 regardless.
bool syncfs_reports_errors() {
  struct utsname u;
  if (::uname(&u) != 0) return false;
  // The release starts "<major>.<minor>" (read by hand: sscanf alone adds 40 KB to a static
  // binary).
  const char* p = u.release;
  auto number = [&p](int* out) {
    if (*p < '0' || *p > '9') return false;
    int v = 0;
    while (*p >= '0' && *p <= '9' && v < 100000) v = v * 10 + (*p++ - '0');
    *out = v;
    return true;
  };
  int major = 0, minor = 0;
  if (!number(&major) || *p++ != '.' || !number(&minor)) return false;
  return major > 5 || (major == 5 && minor >= 8);
}

// "hh/<62 hex>": a blob's name relative to BLOBS, for the *at() calls on its descriptor.
struct RelativeName {
  char text[2 + 1 + 62 + 1];
  explicit RelativeName(std::string_view hex) {
    std::memcpy(text, hex.data(), 2);
    text[2] = '/';
    std::memcpy(text + 3, hex.data() + 2, 62);
    text[65] = '\0';
  }
};
}  // namespace

Status BlobStore::open(const std::string& dir, std::vector<std::string>* warnings) {
  dir_ = dir;
  tmp_dir_ = dir + "/tmp";
  Status s = make_dir(dir_);
  if (!s.ok()) return s;
  s = make_dir(tmp_dir_);
  if (!s.ok()) return s;
  // Kept open for syncfs(): errors are reported per open file, from when it was opened.
  dir_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) return Status::Errno("cannot open directory", dir_, errno);
  can_sync_filesystem_ = syncfs_reports_errors();
  // A temp file is a blob whose write or sync did not finish, so no index record names it.
  DIR* d = ::opendir(tmp_dir_.c_str());
  if (!d) return Status::Errno("cannot list directory", tmp_dir_, errno);
  size_t removed = 0;
  Status listed = for_each_name(d, tmp_dir_, [&](const char* name) {
    std::string path = tmp_dir_ + "/" + name;
    if (::unlink(path.c_str()) == 0) removed++;
  });
  if (!listed.ok()) return listed;
  if (removed > 0)
    warnings->push_back("removed " + std::to_string(removed) + " unfinished blob file(s) from " +
                        tmp_dir_);
  return Status::Ok();
}

std::string BlobStore::path_of(std::string_view hex) const {
  std::string path;
  path.reserve(dir_.size() + 66);
  path.append(dir_).append("/").append(hex.substr(0, 2)).append("/").append(hex.substr(2));
  return path;
}

Status BlobStore::holds(std::string_view hex, std::string_view bytes, bool* whole) const {
  *whole = false;
  if (!suspect_.empty() && suspect_.count(std::string(hex))) return Status::Ok();
  std::string path = path_of(hex);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    // Only "no such file" (or "hh is not a directory") means absent: a blob that is there but
    // cannot be looked at must not be rewritten, as a failed batch removes the blobs it wrote.
    if (errno != ENOENT && errno != ENOTDIR) return Status::Errno("cannot look up blob", path, errno);
    return Status::Ok();
  }
  // A power cut can leave a name whose bytes never reached the disk (empty, zeros, a torn
  // prefix): compare before trusting it, or a new confirmation would rest on a damaged file.
  if (static_cast<uint64_t>(st.st_size) != bytes.size()) return Status::Ok();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Errno("cannot open blob", path, errno);
  std::string stored(bytes.size(), '\0');
  size_t got = 0;
  while (got < stored.size()) {
    ssize_t n = ::pread(fd, &stored[got], stored.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      ::close(fd);
      return Status::Errno("cannot read blob", path, err);
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  *whole = stored == bytes;
  return Status::Ok();
}

void BlobStore::note_dirty_subdir(std::string_view hex, std::vector<std::string>* dirty_dirs) const {
  std::string sub = dir_ + "/" + std::string(hex.substr(0, 2));
  if (std::find(dirty_dirs->begin(), dirty_dirs->end(), sub) == dirty_dirs->end()) dirty_dirs->push_back(sub);
}

Status BlobStore::ensure_subdir(std::string_view hex, std::vector<std::string>* dirty_dirs) {
  int slot = lowercase_hex_value(hex[0]) * 16 + lowercase_hex_value(hex[1]);
  if (subdir_durable_[slot]) return Status::Ok();
  std::string sub = dir_ + "/" + std::string(hex.substr(0, 2));
  if (::mkdir(sub.c_str(), 0755) != 0 && errno != EEXIST)
    return Status::Errno("cannot create directory", sub, errno);
  // New, or made by a run or a batch whose sync of BLOBS may have failed: BLOBS is synced in
  // this batch either way, once per hh/ in the life of the process.
  dirty_dirs->push_back(dir_);
  batch_slots_.push_back(slot);
  return Status::Ok();
}

void BlobStore::end_batch(bool committed, const std::vector<std::string_view>& created) {
  if (committed) {
    for (int slot : batch_slots_) subdir_durable_[slot] = true;
    for (std::string_view hex : created) suspect_.erase(std::string(hex));
  } else {
    // A blob this batch created may sit under its final name without its name being durable;
    // were it kept, a later write of the same entry would skip it and confirm on its strength.
    for (std::string_view hex : created)
      if (::unlink(path_of(hex).c_str()) != 0 && errno != ENOENT) suspect_.insert(std::string(hex));
  }
  batch_slots_.clear();
}

std::string BlobStore::temp_path(std::string_view hex) const {
  return tmp_dir_ + "/" + std::string(hex);
}

Status BlobStore::write_temp(std::string_view hex, std::string_view bytes, bool sync) {
  std::string tmp = temp_path(hex);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::Errno("cannot create blob", tmp, errno);
  Status s;
  int err = write_all(fd, bytes.data(), bytes.size());
  if (err != 0) s = Status::Errno("cannot write blob", tmp, err);
  if (s.ok() && sync && ::fdatasync(fd) != 0) s = Status::Errno("cannot sync blob", tmp, errno);
  if (::close(fd) != 0 && s.ok()) s = Status::Errno("cannot close blob", tmp, errno);
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

Status BlobStore::rename_into_place(std::string_view hex, std::vector<std::string>* dirty_dirs) {
  Status s = ensure_subdir(hex, dirty_dirs);
  std::string final_path = path_of(hex);
  if (s.ok() && ::rename(temp_path(hex).c_str(), final_path.c_str()) != 0)
    s = Status::Errno("cannot rename blob into place", final_path, errno);
  if (!s.ok()) {
    remove_temp(hex);
    return s;
  }
  note_dirty_subdir(hex, dirty_dirs);
  return Status::Ok();
}

void BlobStore::remove_temp(std::string_view hex) const { ::unlink(temp_path(hex).c_str()); }

Status BlobStore::create_in_place(std::string_view hex, std::string_view bytes,
                                  std::vector<std::string>* dirty_dirs, bool* existed) {
  *existed = false;
  if (hex.size() != 64) return Status::Corruption("not a blob name: " + std::string(hex));
  Status s = ensure_subdir(hex, dirty_dirs);
  if (!s.ok()) return s;
  const RelativeName relative(hex);
  int fd = ::openat(dir_fd_, relative.text, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST) {
      *existed = true;
      return Status::Ok();
    }
    return Status::Errno("cannot create blob", path_of(hex), errno);
  }
  int err = write_all(fd, bytes.data(), bytes.size());
  if (err != 0) s = Status::Errno("cannot write blob", path_of(hex), err);
  if (::close(fd) != 0 && s.ok()) s = Status::Errno("cannot close blob", path_of(hex), errno);
  if (!s.ok()) {
    // Torn or unwritten: no later batch may take it for the blob.
    if (::unlinkat(dir_fd_, relative.text, 0) != 0 && errno != ENOENT) suspect_.insert(std::string(hex));
    return s;
  }
  note_dirty_subdir(hex, dirty_dirs);
  return Status::Ok();
}

Status BlobStore::sync_blob(std::string_view hex) const {
  const std::string path = path_of(hex);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Errno("cannot open blob", path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::Errno("cannot sync blob", path, err);
  return Status::Ok();
}

Status BlobStore::sync_filesystem() const {
  if (::syncfs(dir_fd_) != 0) return Status::Errno("cannot sync the file system of", dir_, errno);
  return Status::Ok();
}

Status BlobStore::sync_dirs(std::vector<std::string>* dirs) {
  // Children before parents would not matter for correctness; order kept as gained.
  std::sort(dirs->begin(), dirs->end());
  dirs->erase(std::unique(dirs->begin(), dirs->end()), dirs->end());
  for (const std::string& dir : *dirs) {
    Status s = fsync_path(dir);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

// Replaying a log reads one blob per entry, and the system calls are nearly all of its cost
// (perf on a replay of 100,000 blobs: open 42 %, pread 18 %, close 14 %, fstat 10 %, SHA-256
// 4 %). So: open relative to BLOBS' descriptor (the kernel looks up two names, not the whole
// path); O_NOATIME, so that a read does not dirty the blob's inode (relatime updates the
// access time on the first read after a write), allowed to the files' owner only, without it
// on EPERM; and no fstat: one pread into a buffer bigger than most blobs, whose short count is
// the end of a regular file. Should a read ever stop short of it, the hash would not match, and
// the blob is read again by its size.
Status BlobStore::read(std::string_view hex, std::string* bytes) const {
  const int flags = O_RDONLY | O_CLOEXEC | (noatime_.load(std::memory_order_relaxed) ? O_NOATIME : 0);
  auto open_blob = [&](int f) {
    if (dir_fd_ < 0 || hex.size() != 64) return ::open(path_of(hex).c_str(), f);
    return ::openat(dir_fd_, RelativeName(hex).text, f);
  };
  int fd = open_blob(flags);
  if (fd < 0 && errno == EPERM && (flags & O_NOATIME)) {
    noatime_.store(false, std::memory_order_relaxed);
    fd = open_blob(flags & ~O_NOATIME);
  }
  if (fd < 0) return Status::Errno("cannot open blob", path_of(hex), errno);
  constexpr size_t kFirstRead = 16384;
  thread_local std::string first;
  first.resize(kFirstRead);
  ssize_t n;
  while ((n = ::pread(fd, &first[0], kFirstRead, 0)) < 0 && errno == EINTR) {
  }
  if (n < 0) {
    const int err = errno;
    ::close(fd);
    return Status::Errno("cannot read blob", path_of(hex), err);
  }
  if (static_cast<size_t>(n) < kFirstRead && sha256_hex(std::string_view(first.data(), static_cast<size_t>(n))) == hex) {
    ::close(fd);
    bytes->assign(first.data(), static_cast<size_t>(n));
    return Status::Ok();
  }
  // Bigger than the buffer (or not whole a moment ago): by its size.
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::Errno("cannot stat blob", path_of(hex), err);
  }
  bytes->resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes->size()) {
    n = ::pread(fd, &(*bytes)[got], bytes->size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return Status::Errno("cannot read blob", path_of(hex), err);
    }
    if (n == 0) {  // shorter than its size a moment ago: blobs never change, so it is damaged
      ::close(fd);
      return Status::Corruption("blob " + path_of(hex) + " ended after " + std::to_string(got) + " of " +
                                std::to_string(bytes->size()) + " bytes");
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (sha256_hex(*bytes) != hex) return Status::Corruption("blob " + path_of(hex) + " does not match its hash");
  return Status::Ok();
}
