// The store: content-addressed blob files (blob_store.hpp), the fixed-width append-only index
// that orders them (index.hpp), the write-ahead journal (journal.hpp), and the locks that give
// one server exclusive use of both directories.
//
// Layout on disk:
//   BLOBS/...                the blob files (blob_store.hpp)
//   BLOBS/LOCK, LEVELDB/LOCK flock()ed and OFD-locked by the running server; hold its pid as text
//   LEVELDB/index            the index (index.hpp)
//   LEVELDB/journal          the write-ahead journal of SYNC=always (journal.hpp)
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "blob_store.hpp"
#include "index.hpp"
#include "journal.hpp"
#include "status.hpp"

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
// With SYNC=always, a commit appends the batch to the journal and syncs it (one fdatasync): the
// entries are then confirmed and readable. Their blob files and index records are made after,
// by the store thread, from the journal's records, in the order of the commits; a checkpoint,
// handed to the same thread after them, makes them durable in bulk (syncfs, or per-file syncs
// where syncfs does not report write-back errors) and retires the journal side that held them.
// Until its blob file and index record exist, read() reads an entry from its journal record.
// See doc/durability.md.
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
  // Locks both directories, opens them and recovers the index tail (see doc/durability.md).
  // Recovery notes (cut bytes, cut records, removed temp files) are appended to *warnings.
  // Before anything else, and before creating or writing anything: fails, naming the directory
  // and the command that migrates it, when the index directory holds a LevelDB database (the
  // Node.js server's: a CURRENT or MANIFEST-* file) and no index file (doc/migrating.md).
  // Recovery replays the journal (every entry it holds gets its blob and its index record
  // written again), cuts a bad tail, makes everything durable, and empties the journal. Then,
  // under SYNC=none, writes the UNSYNCED marker (durably).
  Status open(const Options& options, std::vector<std::string>* warnings);
  // The last entry committed (confirmed): readable, though under SYNC=always its blob file and
  // index record may not exist yet.
  uint64_t head() const { return head_; }
  // The last entry whose blob file and index record exist (head() but while the store thread
  // is behind, under SYNC=always).
  uint64_t made_head() const { return index_.head(); }
  // The journal's size in bytes (0 under SYNC=none, which writes none).
  uint64_t journal_bytes() const { return journaled() ? journal_.size() : 0; }
  // How many of the entries of `bytes`, from the first, commit() can take now: all of them,
  // but while the journal has no room for them and a checkpoint still runs. With no room, it
  // may start a checkpoint (which gives the journal room once it finishes).
  // While a checkpoint runs, the journal's active side fills freely to half, then only as far
  // as the store thread has made the entries of the side being checkpointed: from half to
  // three quarters, in proportion, and all of it once every entry of that side is made (the
  // last quarter is for the checkpoint's syncfs). So a load the
  // store thread cannot keep up with is slowed to its pace bit by bit, instead of running
  // at the journal's pace until the side is full and then waiting for a whole side's files
  // (measured: 60 s at once, for 644,000 entries of 100 B).
  size_t room_for(const std::vector<std::string_view>& bytes);
  // Whether the last room_for() gave less than the journal has room for, to pace writes to
  // the store thread: then room grows as the store thread goes on, with no event to say so,
  // and the caller tries again after a short while.
  bool paced() const { return paced_; }
  // Makes entries head()+1 .. head()+hashes.size() part of the log. SYNC=always: the journal
  // append and its sync; the store thread makes each new blob (a temp file, renamed) and
  // appends the index records after. SYNC=none: each new blob and the index records here, and
  // no journal. On failure no entry of the call is in the log and head() is unchanged.
  // hashes[i] is the hex name of bytes[i]; at most kMaxBatchEntries entries, and room_for()
  // all of them.
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
  // Not empty once writes are refused; says why (also once the store thread has failed, before
  // any write was refused for it: /health and the metrics say so at once).
  const std::string& writes_refused() {
    take_worker_failure();
    return refused_;
  }
  // Metrics: the journal's records not yet retired, and what its two sides hold at most (both
  // 0 under SYNC=none); how long the last commit's journal sync took (0: none), and the last
  // checkpoint collected by checkpoint_finished(), from its start.
  uint64_t journal_used_bytes() const { return journaled() ? journal_.held() : 0; }
  uint64_t journal_capacity_bytes() const { return journaled() ? 2 * journal_.side_capacity() : 0; }
  uint64_t last_sync_ns() const { return journaled() ? journal_.last_sync_ns() : 0; }
  uint64_t last_checkpoint_ns() const { return last_checkpoint_ns_; }
  // The clean stop: waits for the store thread to make every blob file and index record and
  // for a running checkpoint, then makes everything durable and empties the journal, so that
  // the next start replays nothing. An error says what is left to replay.
  Status close();
  // Waits until the store thread has made the blob file and index record of every entry
  // committed so far (at once under SYNC=none); fails if it could not (writes are then refused).
  Status settle();
  // Reads the hex hashes of entries first..first+count-1, within made_head().
  Status read_hashes(uint64_t first, size_t count, std::string* records) const {
    return index_.read(first, count, records);
  }
  // Reads one entry's bytes given its index record; fails if the record is malformed
  // (Corruption) or the blob is missing (NotFound) or does not hash to its name (Corruption),
  // or with IOError if it could not be read now.
  Status read_blob(std::string_view record, std::string* bytes) const;
  // Reads entry `index` (1 .. head()) into *bytes: its index record, then its blob, as
  // read_blob() does; or, while its blob file and index record are not made yet, its journal
  // record (Corruption if that is damaged). Records are read in runs of up to kReadRun and
  // kept, so that a reader going forward costs one read of the index per run. Only from the
  // thread that commits.
  Status read(uint64_t index, std::string* bytes) const;
  // Reads the whole index and every blob it names, verifying each blob against its name, and
  // the journal's records. Calls `progress` (when given) before each entry and once at the end,
  // with the number of entries checked so far and the head.
  void check(CheckReport* report,
             const std::function<void(uint64_t checked, uint64_t head)>& progress = nullptr) const;

 private:
  struct Worker;  // the store thread and the checkpoint thread (store.cpp)
  Status recover_tail(bool unsynced_run, uint64_t durable_head, std::vector<std::string>* warnings);
  Status replay_journal(std::vector<std::string>* warnings, bool* replayed);
  Status sync_both_file_systems() const;
  // What a checkpoint does, in either thread: makes durable what the journal side's entries
  // wrote (`files` and `dirs` are used where syncfs does not report write-back errors).
  Status make_durable(const std::vector<std::string>& files, const std::vector<std::string>& dirs) const;
  // The store thread's work for one commit: the blob files and index records of the entries
  // first.. whose records the journal holds at [start, end) of side `side`.
  Status make_entries(int side, uint64_t first, uint64_t start, uint64_t end, std::string* buffer);
  // SYNC=none's commit: the blob files and the index records, here.
  Status write_entries(const std::vector<std::string_view>& hashes,
                       const std::vector<std::string_view>& bytes);
  Status read_unmade(uint64_t index, std::string* bytes) const;
  // Writes are refused from now on if the store thread failed (it says why).
  void take_worker_failure();
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
  std::unique_ptr<Worker> worker_;
  uint64_t head_ = 0;  // see head()
  // Pacing (room_for()): the first entry of the journal's active side, the entries of the side
  // a checkpoint is making durable, and whether room_for() last paced.
  uint64_t active_first_ = 1;
  uint64_t checkpoint_first_ = 0, checkpoint_last_ = 0;
  bool paced_ = false;
  uint64_t paced_limit() const;
  // Where syncfs does not report write-back errors: the blobs each journal side's entries
  // created, and the directories that gained names, for the checkpoint to sync one by one.
  // The store thread's (SYNC=always), or the committing thread's (SYNC=none).
  std::vector<std::string> side_blobs_[2];
  std::set<std::string> side_dirs_[2];
  // Committed entries whose blob files and index records are not made yet, one run per commit,
  // oldest first: where each one's journal record starts (and the run's end), for read().
  // Runs the store thread has made are dropped as read() and commit() pass.
  struct UnmadeRun {
    uint64_t first;
    std::vector<uint64_t> offsets;
    uint64_t end;
  };
  mutable std::deque<UnmadeRun> unmade_;
  mutable std::string journal_buffer_;
  bool separate_file_systems_ = false;  // BLOBS and LEVELDB: one syncfs each, or one for both
  std::string refused_;
  uint64_t checkpoint_started_ns_ = 0;  // metrics: see last_checkpoint_ns()
  uint64_t last_checkpoint_ns_ = 0;
  // read()'s cache: a run of index records, from records_first_. The index below the head
  // never changes while the store is open, so the cache never goes stale.
  static constexpr size_t kReadRun = 64;
  mutable std::string records_;
  mutable uint64_t records_first_ = 0;
};
