// The index: the ordered list of entry hashes, one file of fixed-width records.
//   LEVELDB/index            record i (1-based) at offset (i-1)*65: 64 lowercase hex digits + '\n'
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "status.hpp"

constexpr size_t kRecordSize = 65;

// The ordered list of entry hashes. Owns one file; never decides when to sync.
class IndexFile {
 public:
  IndexFile() = default;
  IndexFile(const IndexFile&) = delete;
  IndexFile& operator=(const IndexFile&) = delete;
  ~IndexFile();
  // Opens (creating) DIR/index and cuts a torn tail (a size that is not a multiple of 65).
  // With `read_only`, a torn tail is only reported in *warnings, not cut.
  Status open(const std::string& dir, bool read_only, std::vector<std::string>* warnings);
  uint64_t head() const { return head_; }
  const std::string& path() const { return path_; }
  // Appends whole records in one write. On any failure the file is cut back to its old size,
  // so it always holds a whole number of records, and head() is unchanged.
  Status append(std::string_view records);
  // fdatasync. Safe from another thread while this one appends.
  Status sync() const;
  // Recovery: writes record `index` (replayed from the journal) where it belongs, after the
  // head if need be (records between the head and it must be written too, in order).
  Status write_at(uint64_t index, std::string_view record);
  // Reads records first..first+count-1 (1-based, within head) as raw bytes.
  Status read(uint64_t first, size_t count, std::string* records) const;
  // Forgets records past `old_head` after a failed append or sync of `appended_bytes`: cuts the
  // file back (or, if even that fails, blanks them and cuts before the next append).
  void rollback(uint64_t old_head, size_t appended_bytes);
  // Cuts the index back to `new_head` records and syncs the cut (recovery).
  Status truncate(uint64_t new_head);

 private:
  int fd_ = -1;
  // Written by the one thread that appends (the store thread under SYNC=always), read by
  // others: an entry is readable once head() covers it.
  std::atomic<uint64_t> head_{0};
  std::string path_;
  bool cut_pending_ = false;  // a rollback's ftruncate failed; retried before the next append
};

// True when `record` is 64 lowercase hex digits followed by '\n'.
bool valid_record(std::string_view record);
