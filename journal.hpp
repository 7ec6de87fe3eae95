// The write-ahead journal: with SYNC=always, a batch of entries is durable once its records are
// appended here and the journal is synced (one fdatasync); the blobs and the index are written
// after that without syncs, and made durable in bulk later by a checkpoint (Store).
//
// Layout of LEVELDB/journal, a file of fixed size (preallocated with zeros and synced when it is
// created, so that an append's fdatasync never has to persist a size change), in two sides of
// half the file each. Appends go to one side, the active one; a checkpoint switches appends to
// the other side, makes everything the first side holds durable elsewhere, and then retires it
// by giving it a new generation. Each side:
//
//   header (4096 bytes):  "TLSJRNL1" | u64 generation | u32 side | u32 masked crc32c of the 20
//                         bytes before it | zeros
//   records, back to back from offset 4096:
//     u32 masked crc32c of everything after it | u32 n = bytes of the entry | u64 generation |
//     u64 index | 32-byte SHA-256 of the entry | n bytes: the entry's canonical JSON
//
// All integers little-endian. A record counts only with its side's generation and a matching
// checksum: bytes a side held in an earlier generation, a torn append and garbage all end the
// side's replay (LevelDB's rule for a log: a bad record at the end is an append the writer did
// not finish, never an error). The sides are replayed in the order of their generations.
//
// The Journal owns its file and never decides when to sync or to checkpoint (the Store does).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "status.hpp"

class Journal {
 public:
  static constexpr size_t kHeaderBytes = 4096;
  static constexpr size_t kRecordHeaderBytes = 56;
  // The smallest journal: two sides of a header and 60 KiB of records.
  static constexpr uint64_t kMinBytes = 2 * 64 * 1024;

  // One entry, as appended and as replayed.
  struct Entry {
    uint64_t index;
    std::string_view hash_hex;  // 64 lowercase hex digits
    std::string_view bytes;
  };

  Journal() = default;
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal();

  enum class Mode {
    Create,      // create it when missing (SYNC=always)
    IfPresent,   // open it only if it is there, to replay it (SYNC=none writes no journal)
    ReadOnly,    // change nothing (--check)
  };
  // Opens DIR/journal. A missing file (with Mode::Create) is created with `bytes` (rounded
  // down to a multiple of 8 KiB, at least kMinBytes) of zeros, synced, with a synced directory
  // entry; a file of another size is replayed at its size and recreated by reset(). A journal
  // that its file system has no room for is an error that names its size and the free space.
  Status open(const std::string& dir, uint64_t bytes, Mode mode);
  bool is_open() const { return fd_ >= 0; }
  uint64_t size() const { return 2 * side_bytes_; }
  const std::string& path() const { return path_; }

  // Recovery: calls `fn` for every record, the older side first, each in order, until a side's
  // first record that is not whole and current. Stops at the first error `fn` returns. Notes
  // what ended each side (other than its unused space) in *notes.
  Status replay(const std::function<Status(const Entry&)>& fn, std::vector<std::string>* notes) const;
  // After recovery made every record's entry durable elsewhere: both sides get new generations
  // (one write and one fdatasync each), so that no record replays again.
  Status reset();

  // The bytes `append` writes for an entry of `n` bytes.
  static size_t record_size(size_t n) { return kRecordHeaderBytes + n; }
  // Bytes of records a side can hold.
  uint64_t side_capacity() const { return side_bytes_ - kHeaderBytes; }
  // Bytes of records the active side holds, and can still take.
  uint64_t used() const { return offset_[active_] - side_start(active_) - kHeaderBytes; }
  uint64_t room() const { return side_start(active_) + side_bytes_ - offset_[active_]; }

  // Appends the entries' records to the active side in one write, then (with `sync`) syncs the
  // file. The records must fit (room()). On failure the side's end stays where it was and the
  // records are overwritten with zeros, so that the next append's sync also persists their
  // erasure, and nothing of the failed batch replays once that sync succeeded (a failed sync is
  // never retried and then trusted: the next batch writes those pages again). If even the
  // zeros cannot be written the journal is failed() and takes no more appends.
  Status append(const std::vector<Entry>& entries, bool sync);
  // Where the active side's records end: where the next append's go.
  uint64_t end() const { return offset_[active_]; }
  // Reads the records an append wrote at [start, end) of the file, which no retire() has
  // covered since, and calls `fn` for each in order (its Entry's views live until `fn`
  // returns). Fails (Corruption) on a record that is not whole and of its side's generation:
  // they were appended and synced by this process, so that is damage, never a normal end.
  // Safe from another thread while this one appends elsewhere (pread on the same descriptor).
  Status read_appended(uint64_t start, uint64_t end, std::string* buffer,
                       const std::function<Status(const Entry&)>& fn) const;
  bool failed() const { return failed_; }

  // Metrics: how long the last append's fdatasync took (0 if it did not sync), and the bytes of
  // records both sides hold that no checkpoint has retired yet.
  uint64_t last_sync_ns() const { return last_sync_ns_; }
  uint64_t held() const {
    uint64_t bytes = 0;
    for (int side = 0; side < 2 && is_open(); side++)
      if (!free_[side]) bytes += offset_[side] - side_start(side) - kHeaderBytes;
    return bytes;
  }

  // Checkpoints. A side is free once retired: switch() moves appends to the other side if it
  // is free, and returns the side left behind, which holds records until it is retired.
  bool can_switch() const { return free_[1 - active_]; }
  int active_side() const { return active_; }
  // Whether any side holds records that no checkpoint has retired yet, or may: after a failed
  // append whose records could not be zeroed, they are still there, past the side's end.
  bool holds_records() const { return failed_ || used() > 0 || (is_open() && !free_[1 - active_]); }
  int switch_sides();
  // Writes `side`'s header with `generation` (from next_generation()) and syncs the file: no
  // record of the side replays after that. Changes nothing in this object, so that another
  // thread may call it while the active (other) side takes appends; then the appending thread
  // calls retired(side, generation), which makes the side free. It writes and syncs through a
  // descriptor of its own (another open file description), so that a write-back error is
  // reported to its sync and to the appends' alike.
  Status retire(int side, uint64_t generation) const;
  void retired(int side, uint64_t generation);
  // The generation retire() should give the side being left now.
  uint64_t next_generation() { return ++newest_generation_; }

 private:
  uint64_t side_start(int side) const { return static_cast<uint64_t>(side) * side_bytes_; }
  // Writes a new file of `bytes` zeros through a temp name, syncs it and its directory entry.
  Status create(uint64_t bytes);
  Status write_header(int fd, int side, uint64_t generation) const;
  // Opens retire_fd_ (again, after the file was replaced).
  Status open_retire_fd();
  Status read_header(int side, uint64_t* generation, bool* valid) const;

  int fd_ = -1;
  int retire_fd_ = -1;  // the same file, opened again for retire(): see there
  std::string path_;
  std::string dir_;
  uint64_t side_bytes_ = 0;
  uint64_t generation_[2] = {0, 0};
  uint64_t offset_[2] = {0, 0};  // where each side's next record goes
  bool free_[2] = {false, false};
  int active_ = 0;
  uint64_t newest_generation_ = 0;
  uint64_t recreate_bytes_ = 0;  // the size reset() gives a journal found with another size
  bool failed_ = false;
  std::string scratch_;  // one append's records
  uint64_t last_sync_ns_ = 0;
};
