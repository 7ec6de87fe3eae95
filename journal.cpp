// The write-ahead journal: see journal.hpp for the layout and the rules.
#include "journal.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "crc32c.hpp"
#include "monotonic.hpp"
#include "posix_file.hpp"

namespace {

constexpr char kMagic[8] = {'T', 'L', 'S', 'J', 'R', 'N', 'L', '1'};

// A checksum stored next to data that may itself hold checksums (an entry could): rotated and
// offset, as LevelDB does, so that the CRC of bytes that end in their own CRC is not trivially 0.
uint32_t mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

void put32(char* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = static_cast<char>(v >> (8 * i));
}
void put64(char* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<char>(v >> (8 * i));
}
uint32_t get32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = v << 8 | static_cast<unsigned char>(p[i]);
  return v;
}
uint64_t get64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | static_cast<unsigned char>(p[i]);
  return v;
}

// 64 hex digits -> 32 bytes; false if `hex` is not 64 lowercase hex digits.
bool hex_to_bytes(std::string_view hex, char* out) {
  if (hex.size() != 64) return false;
  for (size_t i = 0; i < 32; i++) {
    int hi = lowercase_hex_value(hex[2 * i]), lo = lowercase_hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return true;
}

std::string bytes_to_hex(const char* p) {
  static const char kDigits[] = "0123456789abcdef";
  std::string hex(64, '0');
  for (size_t i = 0; i < 32; i++) {
    hex[2 * i] = kDigits[static_cast<unsigned char>(p[i]) >> 4];
    hex[2 * i + 1] = kDigits[static_cast<unsigned char>(p[i]) & 0xF];
  }
  return hex;
}

// Reads up to n bytes at offset; returns the bytes read (fewer only at the end of the file), or
// -errno.
long pread_full(int fd, char* data, size_t n, uint64_t offset) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, data + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return static_cast<long>(got);
}

}  // namespace

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
  if (retire_fd_ >= 0) ::close(retire_fd_);
}

Status Journal::open_retire_fd() {
  if (retire_fd_ >= 0) ::close(retire_fd_);
  retire_fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
  if (retire_fd_ < 0) return Status::Errno("cannot open journal", path_, errno);
  return Status::Ok();
}

Status Journal::open(const std::string& dir, uint64_t bytes, Mode mode) {
  dir_ = dir;
  path_ = dir + "/journal";
  bytes -= bytes % 8192;
  if (bytes < kMinBytes) bytes = kMinBytes;
  const bool read_only = mode == Mode::ReadOnly;
  fd_ = ::open(path_.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd_ < 0 && (errno != ENOENT || mode != Mode::Create)) {
    if (errno == ENOENT) return Status::Ok();  // no journal: nothing to replay
    return Status::Errno("cannot open journal", path_, errno);
  }
  struct stat st {};
  if (fd_ >= 0 && ::fstat(fd_, &st) != 0) return Status::Errno("cannot stat journal", path_, errno);
  if (read_only) {
    side_bytes_ = static_cast<uint64_t>(st.st_size) / 2;
  } else if (fd_ < 0 || static_cast<uint64_t>(st.st_size) != bytes) {
    // Missing, or of another size (JOURNAL_BYTES changed): only after recovery replayed the old
    // one may it be replaced, so an existing file of another size is replayed first (its own
    // size is used until reset()) and recreated by reset().
    if (fd_ >= 0) {
      side_bytes_ = static_cast<uint64_t>(st.st_size) / 2;
      recreate_bytes_ = bytes;
    } else {
      Status s = create(bytes);
      if (!s.ok()) return s;
    }
  } else {
    side_bytes_ = bytes / 2;
  }
  if (!read_only) {
    Status s = open_retire_fd();
    if (!s.ok()) return s;
  }
  for (int side = 0; side < 2; side++) {
    bool valid = false;
    uint64_t generation = 0;
    if (side_bytes_ >= kHeaderBytes) {
      Status s = read_header(side, &generation, &valid);
      if (!s.ok()) return s;
    }
    generation_[side] = valid ? generation : 0;
    if (generation_[side] > newest_generation_) newest_generation_ = generation_[side];
  }
  return Status::Ok();
}

Status Journal::create(uint64_t bytes) {
  // Written whole through a temp name and renamed, so that a crash never leaves a journal of
  // the right size with some of it never written.
  const std::string tmp = path_ + ".tmp";
  // Said plainly before a write of many megabytes fails half way with ENOSPC.
  struct statvfs fs {};
  if (::statvfs(dir_.c_str(), &fs) == 0) {
    const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
    if (free_bytes < bytes) {
      Status s;
      s.error = "cannot create the journal " + path_ + " of " + std::to_string(bytes) +
                " bytes: its file system has " + std::to_string(free_bytes) +
                " bytes free (JOURNAL_BYTES sets the journal's size)";
      return s;
    }
  }
  int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::Errno("cannot create journal", tmp, errno);
  // On a copy-on-write file system (btrfs) every append would go to new space while the old
  // extent stays allocated: 8 MiB of journal took 12.5 MiB after 10,000 entries of 1 KiB. The
  // journal overwrites its pages in place and checksums its own records, so it asks for no
  // copy-on-write (taken only while the file is empty). Elsewhere the flag is refused or means
  // nothing: either way nothing changes.
  int flags = 0;
  if (::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0 && !(flags & FS_NOCOW_FL)) {
    flags |= FS_NOCOW_FL;
    if (::ioctl(fd, FS_IOC_SETFLAGS, &flags) != 0) {
    }
  }
  std::string zeros(1 << 20, '\0');
  Status s;
  for (uint64_t at = 0; at < bytes && s.ok(); at += zeros.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), bytes - at));
    int err = pwrite_all(fd, zeros.data(), n, at);
    if (err != 0) s = Status::Errno("cannot write journal", tmp, err);
  }
  if (s.ok() && ::fsync(fd) != 0) s = Status::Errno("cannot sync journal", tmp, errno);
  if (s.ok() && ::rename(tmp.c_str(), path_.c_str()) != 0)
    s = Status::Errno("cannot rename journal into place", path_, errno);
  if (!s.ok()) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  int dir_fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) s = Status::Errno("cannot open directory", dir_, errno);
  else if (::fsync(dir_fd) != 0) s = Status::Errno("cannot sync directory", dir_, errno);
  if (dir_fd >= 0) ::close(dir_fd);
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  side_bytes_ = bytes / 2;
  return Status::Ok();
}

Status Journal::read_header(int side, uint64_t* generation, bool* valid) const {
  char h[24];
  long n = pread_full(fd_, h, sizeof h, side_start(side));
  if (n < 0) return Status::Errno("cannot read journal", path_, static_cast<int>(-n));
  *valid = n == sizeof h && std::memcmp(h, kMagic, 8) == 0 &&
           get32(h + 16) == static_cast<uint32_t>(side) && get32(h + 20) == mask(crc32c(0, h, 20));
  *generation = *valid ? get64(h + 8) : 0;
  return Status::Ok();
}

Status Journal::write_header(int fd, int side, uint64_t generation) const {
  char h[kHeaderBytes] = {};
  std::memcpy(h, kMagic, 8);
  put64(h + 8, generation);
  put32(h + 16, static_cast<uint32_t>(side));
  put32(h + 20, mask(crc32c(0, h, 20)));
  int err = pwrite_all(fd, h, sizeof h, side_start(side));
  if (err != 0) return Status::Errno("cannot write journal header", path_, err);
  return Status::Ok();
}

Status Journal::replay(const std::function<Status(const Entry&)>& fn,
                       std::vector<std::string>* notes) const {
  if (fd_ < 0 || side_bytes_ < kHeaderBytes) return Status::Ok();
  int order[2] = {0, 1};
  if (generation_[1] < generation_[0]) std::swap(order[0], order[1]);
  std::string buffer, hash;
  for (int side : order) {
    const uint64_t generation = generation_[side];
    if (generation == 0) continue;  // never initialised: nothing was appended to it
    const uint64_t end = side_start(side) + side_bytes_;
    uint64_t at = side_start(side) + kHeaderBytes;
    uint64_t records = 0, first_index = 0, last_index = 0;
    std::string ended;
    for (;;) {
      if (end - at < kRecordHeaderBytes) break;  // no room for another record: the side is full
      char head[kRecordHeaderBytes];
      long n = pread_full(fd_, head, sizeof head, at);
      if (n < 0) return Status::Errno("cannot read journal", path_, static_cast<int>(-n));
      const uint64_t length = get32(head + 4);
      // Unused space (zeros), a record of an earlier generation (left by a reset or a retired
      // use of the side: the normal end), or a record header torn before its generation.
      if (get64(head + 8) != generation) break;
      if (length > end - at - kRecordHeaderBytes) {
        ended = "a record longer than the space left";
        break;
      }
      buffer.resize(kRecordHeaderBytes + length);
      n = pread_full(fd_, &buffer[0], buffer.size(), at);
      if (n < 0) return Status::Errno("cannot read journal", path_, static_cast<int>(-n));
      if (static_cast<uint64_t>(n) != buffer.size() ||
          get32(buffer.data()) != mask(crc32c(0, buffer.data() + 4, buffer.size() - 4))) {
        ended = "a record whose checksum does not match (torn, or damaged)";
        break;
      }
      hash = bytes_to_hex(buffer.data() + 24);
      Entry e{get64(buffer.data() + 16), hash,
              std::string_view(buffer.data() + kRecordHeaderBytes, length)};
      Status s = fn(e);
      if (!s.ok()) return s;
      if (records++ == 0) first_index = e.index;
      last_index = e.index;
      at += kRecordHeaderBytes + length;
    }
    if (notes && records > 0)
      notes->push_back("replayed " + std::to_string(records) + " journal record(s), entries " +
                       std::to_string(first_index) + ".." + std::to_string(last_index) + ", from side " +
                       std::to_string(side) + " of " + path_ +
                       (ended.empty() ? std::string() : "; it ended with " + ended));
    else if (notes && !ended.empty())
      notes->push_back("side " + std::to_string(side) + " of " + path_ + " began with " + ended);
  }
  return Status::Ok();
}

Status Journal::reset() {
  if (recreate_bytes_ != 0) {  // JOURNAL_BYTES changed: the old file is replayed; replace it
    Status s = create(recreate_bytes_);
    if (s.ok()) s = open_retire_fd();
    if (!s.ok()) return s;
    recreate_bytes_ = 0;
  }
  for (int side = 0; side < 2; side++) {
    Status s = write_header(fd_, side, ++newest_generation_);
    if (!s.ok()) return s;
    generation_[side] = newest_generation_;
    offset_[side] = side_start(side) + kHeaderBytes;
  }
  if (::fdatasync(fd_) != 0) return Status::Errno("cannot sync journal", path_, errno);
  active_ = 0;  // the older generation takes appends first
  free_[0] = false;
  free_[1] = true;
  failed_ = false;
  return Status::Ok();
}

Status Journal::append(const std::vector<Entry>& entries, bool sync) {
  if (failed_) {
    Status s;
    s.error = "the journal " + path_ + " failed earlier and takes no more appends until restart";
    return s;
  }
  size_t total = 0;
  for (const Entry& e : entries) total += record_size(e.bytes.size());
  if (total > room()) {
    Status s;
    s.error = "no room in the journal " + path_ + " for " + std::to_string(total) + " bytes";
    return s;
  }
  scratch_.resize(total);
  char* p = &scratch_[0];
  const uint64_t generation = generation_[active_];
  for (const Entry& e : entries) {
    put32(p + 4, static_cast<uint32_t>(e.bytes.size()));
    put64(p + 8, generation);
    put64(p + 16, e.index);
    if (!hex_to_bytes(e.hash_hex, p + 24)) {
      Status s;
      s.error = "not a SHA-256 in hex: " + std::string(e.hash_hex);
      return s;
    }
    std::memcpy(p + kRecordHeaderBytes, e.bytes.data(), e.bytes.size());
    put32(p, mask(crc32c(0, p + 4, kRecordHeaderBytes - 4 + e.bytes.size())));
    p += record_size(e.bytes.size());
  }
  int err = pwrite_all(fd_, scratch_.data(), total, offset_[active_]);
  const bool written = err == 0;
  last_sync_ns_ = 0;
  if (written && sync) {
    const uint64_t started = monotonic_ns();  // metrics: the sync's latency
    if (::fdatasync(fd_) != 0) err = errno;
    last_sync_ns_ = monotonic_ns() - started;
  }
  if (err != 0) {
    std::fill(scratch_.begin(), scratch_.end(), '\0');
    if (pwrite_all(fd_, scratch_.data(), total, offset_[active_]) != 0) failed_ = true;
    if (scratch_.capacity() > (1u << 20)) std::string().swap(scratch_);
    return Status::Errno(written ? "cannot sync journal" : "cannot append to journal", path_, err);
  }
  if (scratch_.capacity() > (1u << 20)) std::string().swap(scratch_);
  offset_[active_] += total;
  return Status::Ok();
}

Status Journal::read_appended(uint64_t start, uint64_t end, std::string* buffer,
                              const std::function<Status(const Entry&)>& fn) const {
  if (end < start || end - start > 2 * side_bytes_) {
    return Status::Corruption("journal " + path_ + ": no appended records at " + std::to_string(start) +
                              ".." + std::to_string(end));
  }
  buffer->resize(static_cast<size_t>(end - start));
  long n = pread_full(fd_, buffer->empty() ? nullptr : &(*buffer)[0], buffer->size(), start);
  if (n < 0) return Status::Errno("cannot read journal", path_, static_cast<int>(-n));
  if (static_cast<uint64_t>(n) != buffer->size())
    return Status::Corruption("journal " + path_ + " ended before offset " + std::to_string(end));
  const char* p = buffer->data();
  size_t left = buffer->size();
  std::string hash;
  while (left > 0) {
    const uint64_t at = end - left;
    if (left < kRecordHeaderBytes || get32(p + 4) > left - kRecordHeaderBytes ||
        get32(p) != mask(crc32c(0, p + 4, kRecordHeaderBytes - 4 + get32(p + 4)))) {
      return Status::Corruption("journal " + path_ + ": the record at offset " + std::to_string(at) +
                                " is not whole (damaged since it was appended)");
    }
    const size_t length = get32(p + 4);
    hash = bytes_to_hex(p + 24);
    Status s = fn(Entry{get64(p + 16), hash, std::string_view(p + kRecordHeaderBytes, length)});
    if (!s.ok()) return s;
    p += kRecordHeaderBytes + length;
    left -= kRecordHeaderBytes + length;
  }
  return Status::Ok();
}

int Journal::switch_sides() {
  const int old = active_;
  active_ = 1 - active_;
  free_[active_] = false;
  return old;
}

Status Journal::retire(int side, uint64_t generation) const {
  // Through a file description of its own: a sync reports a write-back error once per open
  // file description, so a retire and an append syncing through the same one could each take
  // the other's error, and one of them would return success for pages that never reached the
  // disk (an append confirmed on nothing, or a side reused under a header that is not there).
  Status s = write_header(retire_fd_, side, generation);
  if (s.ok() && ::fdatasync(retire_fd_) != 0) s = Status::Errno("cannot sync journal", path_, errno);
  return s;
}

void Journal::retired(int side, uint64_t generation) {
  generation_[side] = generation;
  offset_[side] = side_start(side) + kHeaderBytes;
  free_[side] = true;
}
