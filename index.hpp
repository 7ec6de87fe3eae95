// The store: content-addressed blob files, the fixed-width append-only index that orders them,
// and the locks that give one server exclusive use of both directories.
//
// Layout on disk:
//   BLOBS/<h0h1>/<h2..h63>   canonical entry bytes, named by their SHA-256
//   BLOBS/tmp/               blobs being written; renamed into place once whole (and synced)
//   BLOBS/LOCK, LEVELDB/LOCK flock()ed and OFD-locked by the running server; hold its pid as text
//   LEVELDB/index            record i (1-based) at offset (i-1)*65: 64 lowercase hex digits + '\n'
//   LEVELDB/journal          the write-ahead journal of SYNC=always (journal.hpp)
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "journal.hpp"
#include "status.hpp"

constexpr size_t kRecordSize = 65;
// Entries of one commit, at most: one index append. Recovery inspects at most this many records
// at the tail, because only the last append can have left garbage there.
constexpr size_t kMaxBatchEntries = 4096;
// The journal's size unless JOURNAL_BYTES says otherwise: a share of the file system it lives
// on, up to this much on a large disk, where the journal absorbs bursts of writes.
constexpr uint64_t kDefaultJournalBytes = 64ull * 1024 * 1024;
constexpr uint64_t kJournalShareOfFilesystem = 32;  // 1/32: 8 MiB of a 256 MB partition

// The journal's size for a file system of `filesystem_bytes` when JOURNAL_BYTES is not given:
// 1/32 of it, at most kDefaultJournalBytes (reached at 2 GiB), and never below `min_bytes`
// (what the longest entry needs: each side holds two of them).
uint64_t default_journal_bytes(uint64_t filesystem_bytes, uint64_t min_bytes);


// Whether committed data must reach stable storage before it is confirmed.
enum class SyncMode { Always, None };

// An exclusive lock on DIR/LOCK, held until destruction: a flock(), which other servers of ours
// take, and an open-file-description fcntl() write lock, which is the kind LevelDB takes on the
// LOCK file of its directory (the Node.js server's LEVELDB). Linux keeps the two kinds apart, so
// only both together keep a Node.js server and ours off one directory at the same time.
class DirLock {
 public:
  DirLock() = default;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  ~DirLock();
  // Fails with "directory <dir> is in use by pid N" when another process holds either lock.
  Status acquire(const std::string& dir);

 private:
  int fd_ = -1;
};

// Blob files named by the hash of their bytes. Writes go through BLOBS/tmp and a rename, so a
// process crash never leaves a partial blob under its final name. A power cut can (a blob
// renamed without a sync, as SYNC=none does): so a blob is only trusted, and not written again,
// when its file holds exactly its bytes.
class BlobStore {
 public:
  ~BlobStore();
  // Creates the directories as needed and removes temporary files a crash left behind.
  Status open(const std::string& dir, std::vector<std::string>* warnings);
  void set_dir(const std::string& dir) { dir_ = dir; }  // for reading only (--check)
  std::string path_of(std::string_view hex) const;
  // Whether the blob is stored whole: a file under its name holding exactly `bytes`. A file
  // with other bytes is damaged, and *whole is false, so that it is written again. An error
  // other than "no such file" is a failure.
  Status holds(std::string_view hex, std::string_view bytes, bool* whole) const;
  // A new blob is written in two steps. First to BLOBS/tmp/<hex>, with fdatasync when `sync`
  // (on failure the temp file is removed)...
  Status write_temp(std::string_view hex, std::string_view bytes, bool sync);
  // ...then renamed into place (making hh/ if needed). The directories that gained a name are
  // added to *dirty_dirs for sync_dirs(). On failure the temp file is removed.
  Status rename_into_place(std::string_view hex, std::vector<std::string>* dirty_dirs);
  void remove_temp(std::string_view hex) const;
  // syncfs() on the blobs' file system, where it reports write-back errors (Linux >= 5.8).
  bool can_sync_filesystem() const { return can_sync_filesystem_; }
  Status sync_filesystem() const;
  int dir_fd() const { return dir_fd_; }
  // After a batch's blobs: on failure, removes the blobs it created (a name whose sync failed
  // must not be trusted by "holds"; those that cannot be removed are rewritten next time).
  void end_batch(bool committed, const std::vector<std::string_view>& created);
  // fsyncs each directory once.
  static Status sync_dirs(std::vector<std::string>* dirs);
  // fsyncs a blob under its final name.
  Status sync_blob(std::string_view hex) const;
  // Reads a blob and verifies that its bytes hash to its name: NotFound when there is no such
  // blob, Corruption when its bytes do not match its name, IOError when it could not be read.
  Status read(std::string_view hex, std::string* bytes) const;

 private:
  Status ensure_subdir(std::string_view hex, std::vector<std::string>* dirty_dirs);
  std::string temp_path(std::string_view hex) const;
  std::string dir_;
  int dir_fd_ = -1;  // BLOBS, for syncfs()
  bool can_sync_filesystem_ = false;
  std::string tmp_dir_;
  bool subdir_durable_[256] = {};  // hh/ directories whose name in BLOBS is known synced
  std::vector<int> batch_slots_;     // hh/ slots whose BLOBS sync rides on the current batch
  std::unordered_set<std::string> suspect_;  // blobs of failed batches that could not be removed
};

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
  uint64_t head_ = 0;
  std::string path_;
  bool cut_pending_ = false;  // a rollback's ftruncate failed; retried before the next append
};

// True when `record` is 64 lowercase hex digits followed by '\n'.
bool valid_record(std::string_view record);

// What --check found.
struct CheckReport {
  uint64_t entries = 0;
  uint64_t distinct_blobs = 0;
  uint64_t bytes = 0;  // of the distinct blobs
  uint64_t journal_records = 0;  // the next start replays them (a stop that was not clean)
  std::vector<std::string> problems;  // each with the index it concerns
};

// LEVELDB/UNSYNCED exists while a SYNC=none server may have written records and blobs that
// are not durable; it holds the head up to which they were ("<n>\n"). Recovery checks every
// record after it, and every blob they name.
constexpr const char* kUnsyncedMarker = "UNSYNCED";

// The whole store. commit() is the one way entries are added.
//
// With SYNC=always, a commit appends the batch to the journal and syncs it (one fdatasync),
// then writes the blobs and the index records without syncing; a checkpoint, in a thread of
// its own, later makes them durable in bulk (syncfs, or per-file syncs where syncfs does not
// report write-back errors) and retires the journal side that held them. See README,
// "Durability".
class Store {
 public:
  Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  // Under SYNC=none, makes everything durable and removes the UNSYNCED marker (a clean stop).
  // Stops the checkpoint thread (close() is the clean stop under SYNC=always).
  ~Store();
  struct Options {
    std::string blobs_dir;
    std::string index_dir;
    SyncMode sync = SyncMode::Always;
    // Open for --check: lock, but create nothing, change nothing, recover nothing.
    bool check_only = false;
    // The journal's size; 0 sizes it to its file system (default_journal_bytes()), at least
    // journal_min_bytes.
    uint64_t journal_bytes = 0;
    uint64_t journal_min_bytes = 4 * (1048576 + 4096);
  };
  // Locks both directories, opens them and recovers the index tail (see README, "Durability").
  // Recovery notes (cut bytes, cut records, removed temp files) are appended to *warnings.
  // Before anything else, and before creating or writing anything: fails, naming the directory
  // and the command that migrates it, when the index directory holds a LevelDB database (the
  // Node.js server's: a CURRENT or MANIFEST-* file) and no index file (README, "Moving from
  // the Node.js server").
  // Recovery replays the journal (every entry it holds gets its blob and its index record
  // written again), cuts a bad tail, makes everything durable, and empties the journal. Then,
  // under SYNC=none, writes the UNSYNCED marker (durably).
  Status open(const Options& options, std::vector<std::string>* warnings);
  uint64_t head() const { return index_.head(); }
  // The journal's size in bytes (0 under SYNC=none, which writes none).
  uint64_t journal_bytes() const { return journaled() ? journal_.size() : 0; }
  // How many of the entries of `bytes`, from the first, commit() can take now: all of them,
  // but while the journal has no room for them and a checkpoint still runs. With no room, it
  // may start a checkpoint (which gives the journal room once it finishes).
  size_t room_for(const std::vector<std::string_view>& bytes);
  // Makes entries head()+1 .. head()+hashes.size() part of the log. SYNC=always: the journal
  // append and its sync, then each new blob written to a temp file and renamed, and all index
  // records appended in one write, without syncs. SYNC=none: the same without the journal.
  // On failure no entry of the call is in the log and head() is unchanged. hashes[i] is the
  // hex name of bytes[i]; at most kMaxBatchEntries entries, and room_for() all of them.
  Status commit(const std::vector<std::string_view>& hashes,
                const std::vector<std::string_view>& bytes);
  // Checkpoints, under SYNC=always. A descriptor that becomes readable when the checkpoint that
  // runs in the background has finished (-1 while none runs): then call checkpoint_finished().
  int checkpoint_fd() const;
  // Collects the finished checkpoint. If it failed, the store takes no more writes until the
  // process restarts (writes_refused() says why): a failed sync is never retried and then
  // trusted, and recovery at the next start writes everything the journal holds again.
  Status checkpoint_finished();
  // Whether a checkpoint can start now: the journal's active side holds entries, none runs,
  // and writes are not refused.
  bool can_checkpoint() const;
  // Starts one if it can (after a pause in writes).
  void checkpoint_if_possible();
  bool journal_holds_entries() const;
  // Not empty once writes are refused; says why.
  const std::string& writes_refused() const { return refused_; }
  // The clean stop: waits for a running checkpoint, then makes everything durable and empties
  // the journal, so that the next start replays nothing. An error says what is left to replay.
  Status close();
  // Reads the hex hashes of entries first..first+count-1.
  Status read_hashes(uint64_t first, size_t count, std::string* records) const {
    return index_.read(first, count, records);
  }
  // Reads one entry's bytes given its index record; fails if the record is malformed
  // (Corruption) or the blob is missing (NotFound) or does not hash to its name (Corruption),
  // or with IOError if it could not be read now.
  Status read_blob(std::string_view record, std::string* bytes) const;
  // Reads the whole index and every blob it names, verifying each blob against its name, and
  // the journal's records. Calls `progress` (when given) before each entry and once at the end,
  // with the number of entries checked so far and the head.
  void check(CheckReport* report,
             const std::function<void(uint64_t checked, uint64_t head)>& progress = nullptr) const;

 private:
  struct Checkpointer;  // the checkpoint thread (index.cpp)
  Status recover_tail(bool unsynced_run, uint64_t durable_head, std::vector<std::string>* warnings);
  Status replay_journal(std::vector<std::string>* warnings, bool* replayed);
  Status sync_both_file_systems() const;
  // What a checkpoint does, in either thread: makes durable what the journal side's entries
  // wrote (`files` and `dirs` are used where syncfs does not report write-back errors).
  Status make_durable(const std::vector<std::string>& files, const std::vector<std::string>& dirs) const;
  void start_checkpoint();
  std::string unsynced_marker_path() const;
  Status read_unsynced_marker(bool* present, uint64_t* durable_head) const;
  Status write_unsynced_marker(uint64_t durable_head);
  Status remove_unsynced_marker();
  bool journaled() const { return options_.sync == SyncMode::Always && journal_.is_open(); }
  Options options_;
  bool opened_ = false;  // open() succeeded for serving (not --check)
  DirLock blobs_lock_;
  DirLock index_lock_;
  BlobStore blobs_;
  IndexFile index_;
  Journal journal_;
  std::unique_ptr<Checkpointer> checkpointer_;
  // Where syncfs does not report write-back errors: the blobs each journal side's entries
  // created, and the directories that gained names, for the checkpoint to sync one by one.
  std::vector<std::string> side_blobs_[2];
  std::set<std::string> side_dirs_[2];
  bool separate_file_systems_ = false;  // BLOBS and LEVELDB: one syncfs each, or one for both
  std::string refused_;
};
