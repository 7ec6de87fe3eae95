// The blob files: canonical entry bytes named by their SHA-256.
//   BLOBS/<h0h1>/<h2..h63>   canonical entry bytes, named by their SHA-256
//   BLOBS/tmp/               blobs being written; renamed into place once whole (and synced)
//                            (a blob the journal holds is written under its final name)
#pragma once
#include <atomic>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "status.hpp"

// Blob files named by the hash of their bytes. Writes of a blob nothing else holds go through
// BLOBS/tmp and a rename, so that a process crash never leaves a partial blob under its final
// name. A power cut can (a blob renamed without a sync, as SYNC=none does): so a blob is only
// trusted, and not written again, when its file holds exactly its bytes. A blob whose bytes the
// journal holds is written under its final name at once (create_in_place): the journal, not the
// rename, is what makes it safe.
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
  // Creates the blob under its final name (making hh/ if needed) and writes it, without a sync,
  // when no file has that name; *existed says one had, and then nothing was done (the caller
  // looks at it with holds()). One openat relative to BLOBS, one write, one close: no stat, no
  // temp file, no rename, the cheapest way a file system has to make a file.
  // Only for a blob whose bytes stay in the journal until a syncfs (or fsync of it and its
  // directories) that covers this file has returned: until then a crash may leave it absent,
  // empty or torn under its name, and recovery writes every blob of the journal again
  // (Store::replay_journal), and no index record names it before it is whole. On failure the
  // file is removed (or, when it cannot be, not trusted by holds() again).
  Status create_in_place(std::string_view hex, std::string_view bytes, std::vector<std::string>* dirty_dirs,
                         bool* existed);
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
  // Adds BLOBS/hh/, which has just gained the blob's name, to *dirty_dirs (once).
  void note_dirty_subdir(std::string_view hex, std::vector<std::string>* dirty_dirs) const;
  std::string temp_path(std::string_view hex) const;
  std::string dir_;
  int dir_fd_ = -1;  // BLOBS, for syncfs() and for reads relative to it
  mutable std::atomic<bool> noatime_{true};  // reads may ask for O_NOATIME (until an EPERM)
  bool can_sync_filesystem_ = false;
  std::string tmp_dir_;
  bool subdir_durable_[256] = {};  // hh/ directories whose name in BLOBS is known synced
  std::vector<int> batch_slots_;     // hh/ slots whose BLOBS sync rides on the current batch
  std::unordered_set<std::string> suspect_;  // blobs of failed batches that could not be removed
};
