// The store: content-addressed blob files, the fixed-width append-only index that orders them,
// and the locks that give one server exclusive use of both directories.
//
// Layout on disk:
//   BLOBS/<h0h1>/<h2..h63>   canonical entry bytes, named by their SHA-256
//   BLOBS/tmp/               blobs being written; renamed into place once whole (and synced)
//   BLOBS/LOCK, LEVELDB/LOCK flock()ed and OFD-locked by the running server; hold its pid as text
//   LEVELDB/index            record i (1-based) at offset (i-1)*65: 64 lowercase hex digits + '\n'
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

constexpr size_t kRecordSize = 65;
// Entries made durable by one index append and one sync. Recovery inspects at most this many
// records at the tail, because only the last, unsynced append can have left garbage there.
constexpr size_t kMaxBatchEntries = 4096;
// From this many new blobs in a SYNC=always batch on, two syncfs() calls replace one fdatasync
// per blob (README, "Durability"); below it, fdatasync keeps a small batch's latency free of
// other processes' unwritten data on the same file system.
constexpr size_t kSyncfsMinBlobs = 8;

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
  static Status Errno(std::string_view what, const std::string& path, int err);
  static Status Corruption(std::string error) {
    Status s;
    s.error = std::move(error);
    s.code = Code::Corruption;
    return s;
  }
};

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
  Status sync_filesystem();
  // After a batch's blobs: on failure, removes the blobs it created (a name whose sync failed
  // must not be trusted by "holds"; those that cannot be removed are rewritten next time).
  void end_batch(bool committed, const std::vector<std::string_view>& created);
  // fsyncs each directory once.
  static Status sync_dirs(std::vector<std::string>* dirs);
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
  Status sync();
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
  std::vector<std::string> problems;  // each with the index it concerns
};

// LEVELDB/UNSYNCED exists while a SYNC=none server may have written records and blobs that
// are not durable; it holds the head up to which they were ("<n>\n"). Recovery checks every
// record after it, and every blob they name.
constexpr const char* kUnsyncedMarker = "UNSYNCED";

// The whole store. commit() is the one way entries are added.
class Store {
 public:
  Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  // Under SYNC=none, makes everything durable and removes the UNSYNCED marker (a clean stop).
  ~Store();
  struct Options {
    std::string blobs_dir;
    std::string index_dir;
    SyncMode sync = SyncMode::Always;
    // Open for --check: lock, but create nothing, change nothing, recover nothing.
    bool check_only = false;
  };
  // Locks both directories, opens them and recovers the index tail (see README, "Durability").
  // Recovery notes (cut bytes, cut records, removed temp files) are appended to *warnings.
  // Before anything else, and before creating or writing anything: fails, naming the directory
  // and the command that migrates it, when the index directory holds a LevelDB database (the
  // Node.js server's: a CURRENT or MANIFEST-* file) and no index file (README, "Moving from
  // the Node.js server").
  // Then, under SYNC=always, makes all it found durable; under SYNC=none, writes the
  // UNSYNCED marker (durably), after making all it found durable if a marker was there.
  Status open(const Options& options, std::vector<std::string>* warnings);
  uint64_t head() const { return index_.head(); }
  // Makes entries head()+1 .. head()+hashes.size() part of the log, in this order: each new
  // blob written to a temp file, synced and renamed; each directory that gained a name synced;
  // all index records appended in one write; the index synced. Syncs are skipped with
  // SyncMode::None. On failure no entry of the call is in the log and head() is unchanged.
  // hashes[i] is the hex name of bytes[i]; at most kMaxBatchEntries entries.
  Status commit(const std::vector<std::string_view>& hashes,
                const std::vector<std::string_view>& bytes);
  // Reads the hex hashes of entries first..first+count-1.
  Status read_hashes(uint64_t first, size_t count, std::string* records) const {
    return index_.read(first, count, records);
  }
  // Reads one entry's bytes given its index record; fails if the record is malformed
  // (Corruption) or the blob is missing (NotFound) or does not hash to its name (Corruption),
  // or with IOError if it could not be read now.
  Status read_blob(std::string_view record, std::string* bytes) const;
  // Reads the whole index and every blob it names, verifying each blob against its name. Calls
  // `progress` (when given) before each entry and once at the end, with the number of entries
  // checked so far and the head.
  void check(CheckReport* report,
             const std::function<void(uint64_t checked, uint64_t head)>& progress = nullptr) const;

 private:
  Status recover_tail(bool unsynced_run, uint64_t durable_head, std::vector<std::string>* warnings);
  Status sync_both_file_systems();
  std::string unsynced_marker_path() const;
  Status read_unsynced_marker(bool* present, uint64_t* durable_head) const;
  Status write_unsynced_marker(uint64_t durable_head);
  Status remove_unsynced_marker();
  Options options_;
  bool opened_ = false;  // open() succeeded for serving (not --check)
  DirLock blobs_lock_;
  DirLock index_lock_;
  BlobStore blobs_;
  IndexFile index_;
};
