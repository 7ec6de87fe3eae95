// The index file: the ordered list of entry hashes, fixed-width records (index.hpp).
#include "index.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "posix_file.hpp"

bool valid_record(std::string_view record) {
  if (record.size() != kRecordSize || record[64] != '\n') return false;
  for (size_t i = 0; i < 64; i++)
    if (lowercase_hex_value(record[i]) < 0) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// IndexFile

IndexFile::~IndexFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status IndexFile::open(const std::string& dir, bool read_only, std::vector<std::string>* warnings) {
  path_ = dir + "/index";
  fd_ = read_only ? ::open(path_.c_str(), O_RDONLY | O_CLOEXEC)
                  : ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) return Status::Errno("cannot open index", path_, errno);
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Status::Errno("cannot stat index", path_, errno);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  uint64_t torn = size % kRecordSize;
  head_ = size / kRecordSize;
  if (torn != 0 && read_only) {
    warnings->push_back(path_ + " ends with a torn record of " + std::to_string(torn) +
                        " byte(s) after entry " + std::to_string(head_));
  } else if (torn != 0) {
    // A partial record at the end is an append the machine did not finish, never confirmed.
    Status s = truncate(head_);
    if (!s.ok()) return s;
    warnings->push_back("cut a torn record of " + std::to_string(torn) + " byte(s) from the end of " +
                        path_);
  }
  return Status::Ok();
}

Status IndexFile::append(std::string_view records) {
  off_t old_size = static_cast<off_t>(head_ * kRecordSize);
  if (cut_pending_) {
    if (::ftruncate(fd_, old_size) != 0)
      return Status::Errno("cannot cut a failed append from index", path_, errno);
    cut_pending_ = false;
  }
  int err = pwrite_all(fd_, records.data(), records.size(), old_size);
  if (err != 0) {
    // Whatever part of the records reached the file must not be mistaken for entries later.
    rollback(head_, records.size());
    return Status::Errno("cannot append to index", path_, err);
  }
  head_ += records.size() / kRecordSize;
  return Status::Ok();
}

Status IndexFile::write_at(uint64_t index, std::string_view record) {
  int err = pwrite_all(fd_, record.data(), record.size(), static_cast<off_t>((index - 1) * kRecordSize));
  if (err != 0) {
    Status s = Status::Errno("cannot write index", path_, err);
    s.error += " at entry " + std::to_string(index);
    return s;
  }
  if (index > head_) head_ = index;
  return Status::Ok();
}

Status IndexFile::sync() const {
  if (::fdatasync(fd_) != 0) return Status::Errno("cannot sync index", path_, errno);
  return Status::Ok();
}

Status IndexFile::read(uint64_t first, size_t count, std::string* records) const {
  records->resize(count * kRecordSize);
  size_t got = 0;
  off_t offset = static_cast<off_t>((first - 1) * kRecordSize);
  while (got < records->size()) {
    ssize_t n = ::pread(fd_, &(*records)[got], records->size() - got, offset + static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Status s = Status::Errno("cannot read index", path_, n < 0 ? errno : EIO);
      s.error += " at entry " + std::to_string(first + got / kRecordSize);
      return s;
    }
    got += static_cast<size_t>(n);
  }
  return Status::Ok();
}

void IndexFile::rollback(uint64_t old_head, size_t appended_bytes) {
  head_ = old_head;
  const off_t old_size = static_cast<off_t>(old_head * kRecordSize);
  if (::ftruncate(fd_, old_size) == 0) return;
  // The cut failed too. Records a reader never saw and nobody was confirmed must still not
  // come back as entries after a restart: blank them, so that recovery sees malformed records
  // and cuts them, and cut them for real before the next append.
  cut_pending_ = true;
  std::string zeros(appended_bytes, '\0');
  if (pwrite_all(fd_, zeros.data(), zeros.size(), old_size) != 0) {
    // Nothing more can be done here; the next append retries the cut before writing.
  }
}

Status IndexFile::truncate(uint64_t new_head) {
  if (::ftruncate(fd_, static_cast<off_t>(new_head * kRecordSize)) != 0)
    return Status::Errno("cannot truncate index", path_, errno);
  if (::fdatasync(fd_) != 0) return Status::Errno("cannot sync index", path_, errno);
  head_ = new_head;
  return Status::Ok();
}
