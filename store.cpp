// The store: the blob files, the index and the journal together, with the directory locks,
// commit, checkpoints and recovery (store.hpp).
#include "store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_set>

#include "monotonic.hpp"
#include "posix_file.hpp"
#include "sha256.hpp"

uint64_t default_journal_bytes(uint64_t filesystem_bytes, uint64_t min_bytes) {
  const uint64_t share = std::min(filesystem_bytes / kJournalShareOfFilesystem, kDefaultJournalBytes);
  return std::max(share, std::max(min_bytes, Journal::kMinBytes));
}

// ---------------------------------------------------------------------------------------------
// DirLock

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

Status DirLock::acquire(const std::string& dir) {
  std::string path = dir + "/LOCK";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::Errno("cannot open lock file", path, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    ::close(fd);
    if (err == EWOULDBLOCK) {
      Status s;
      s.error = "directory " + dir + " is in use";
      long pid = n > 0 ? std::strtol(buf, nullptr, 10) : 0;
      if (pid > 0) s.error += " by pid " + std::to_string(pid);
      s.error += " (lock file " + path + ")";
      return s;
    }
    return Status::Errno("cannot lock", path, err);
  }
  // LevelDB locks its LOCK with fcntl(F_SETLK), which never conflicts with a flock. An OFD lock
  // (owned by this open file, so closing another descriptor of LOCK cannot drop it, as it would
  // a classic fcntl lock) does conflict with LevelDB's, both ways.
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    int err = errno;
    struct flock holder {};
    holder.l_type = F_WRLCK;
    holder.l_whence = SEEK_SET;
    bool known = ::fcntl(fd, F_OFD_GETLK, &holder) == 0 && holder.l_type != F_UNLCK && holder.l_pid > 0;
    ::close(fd);
    if (err == EAGAIN || err == EACCES) {
      Status s;
      s.error = "directory " + dir + " is in use";
      if (known) s.error += " by pid " + std::to_string(holder.l_pid);
      s.error += " (an fcntl lock on " + path + ", as LevelDB takes: a Node.js tcp-log-server?)";
      return s;
    }
    return Status::Errno("cannot lock", path, err);
  }
  // The pid is only a hint for the messages above; the locks are what exclude.
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || pwrite_all(fd, pid.data(), pid.size(), 0) != 0) {
    // Not fatal: the lock is held all the same.
  }
  fd_ = fd;
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Store

namespace {

// `text` as one shell word: as it is when it has nothing the shell would act on, else quoted.
std::string shell_word(const std::string& text) {
  bool plain = !text.empty();
  for (char c : text)
    plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || std::strchr("/._-+,:@%=", c));
  if (plain) return text;
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// The Node.js server keeps a LevelDB where we keep our index. Started there before its entries
// are migrated, we would begin an empty log beside the old one and the history would vanish from
// reads; so a LevelDB (CURRENT, or a MANIFEST-* file of one whose CURRENT was lost) without an
// index file of ours stops us here, before anything in either directory is created or locked
// (our LOCK is also the name of LevelDB's lock file). A directory we cannot list is left to the
// steps after this one to report.
Status refuse_unmigrated_leveldb(const std::string& blobs_dir, const std::string& index_dir) {
  DIR* d = ::opendir(index_dir.c_str());
  if (!d) return Status::Ok();
  bool has_index = false;
  std::string leveldb_file;
  Status listed = for_each_name(d, index_dir, [&](const char* entry) {
    std::string_view name(entry);
    if (name == "index") has_index = true;
    if (leveldb_file.empty() && (name == "CURRENT" || name.rfind("MANIFEST-", 0) == 0))
      leveldb_file = entry;
  });
  // A listing that failed part way may have missed CURRENT: it must not pass for "no LevelDB".
  if (!listed.ok()) return listed;
  if (has_index || leveldb_file.empty()) return Status::Ok();
  const std::string leveldb = absolute_path(index_dir);
  Status s;
  s.error = "LEVELDB directory " + leveldb + " holds a LevelDB database (" + leveldb_file +
            ") and no index file: it is a Node.js tcp-log-server's log, not yet migrated, and "
            "nothing has been written to it. Stop the Node.js server, then run in the "
            "tcp-log-server source directory: make migrate BLOBS=" +
            shell_word(absolute_path(blobs_dir)) + " LEVELDB=" + shell_word(leveldb);
  return s;
}

bool same_directory(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}
}  // namespace

Status Store::open(const Options& options, std::vector<std::string>* warnings) {
  options_ = options;
  Status refused = refuse_unmigrated_leveldb(options.blobs_dir, options.index_dir);
  if (!refused.ok()) return refused;
  if (options.check_only) {
    blobs_.set_dir(options.blobs_dir);
  } else {
    Status s = make_dir(options.blobs_dir);
    if (!s.ok()) return s;
    s = make_dir(options.index_dir);
    if (!s.ok()) return s;
  }
  // Lock before touching anything else: recovery must never run beside a live server.
  Status s = blobs_lock_.acquire(options.blobs_dir);
  if (!s.ok()) return s;
  if (!same_directory(options.blobs_dir, options.index_dir)) {
    s = index_lock_.acquire(options.index_dir);
    if (!s.ok()) return s;
  }
  if (!options.check_only) {
    s = blobs_.open(options.blobs_dir, warnings);
    if (!s.ok()) return s;
  }
  s = index_.open(options.index_dir, options.check_only, warnings);
  if (!s.ok()) return s;
  // SYNC=always keeps a journal; SYNC=none writes none, but replays one a SYNC=always run left.
  const Journal::Mode mode = options.check_only                 ? Journal::Mode::ReadOnly
                             : options.sync == SyncMode::Always ? Journal::Mode::Create
                                                                : Journal::Mode::IfPresent;
  if (!options.check_only) {
    // Temp files of ours that a process killed while writing them left behind, which nothing
    // names: a journal being created or resized (as large as the journal, enough to keep a
    // small partition full) and a marker being replaced. They go, as BLOBS/tmp's do.
    for (const char* name : {"journal.tmp", "UNSYNCED.tmp"}) {
      const std::string path = options.index_dir + "/" + name;
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0) continue;
      if (::unlink(path.c_str()) != 0) return Status::Errno("cannot remove", path, errno);
      warnings->push_back("removed " + path + " (" + std::to_string(st.st_size) +
                          " bytes), left unfinished by an earlier run");
    }
  }
  uint64_t journal_bytes = options.journal_bytes;
  if (journal_bytes == 0) {
    struct statvfs fs {};
    if (::statvfs(options.index_dir.c_str(), &fs) != 0)
      return Status::Errno("cannot look at the file system of", options.index_dir, errno);
    journal_bytes = default_journal_bytes(static_cast<uint64_t>(fs.f_blocks) * fs.f_frsize,
                                          options.journal_min_bytes);
  }
  s = journal_.open(options.index_dir, journal_bytes, mode);
  if (!s.ok() || options.check_only) return s;
  uint64_t durable_head = 0;
  bool unsynced_run = false;
  s = read_unsynced_marker(&unsynced_run, &durable_head);
  if (!s.ok()) return s;
  bool replayed = false;
  s = replay_journal(warnings, &replayed);
  if (!s.ok()) return s;
  s = recover_tail(unsynced_run, durable_head, warnings);
  if (!s.ok()) return s;
  if (journal_.is_open()) {
    // What the journal held is written again above; once that is durable the journal is
    // emptied, so that it replays nothing at the next start.
    if (replayed || options.sync == SyncMode::Always) {
      s = sync_both_file_systems();
      if (!s.ok()) return s;
    }
    s = journal_.reset();
    if (!s.ok()) return s;
  }
  if (options.sync == SyncMode::None) {
    // From here on nothing is synced until a clean stop: say so durably first, and from where,
    // so that recovery after a power cut checks every record and blob this run may write. After
    // a SYNC=always run, all but its last append is durable. After a SYNC=none run that did not
    // stop cleanly, what recovery just checked is made durable, so that the next recovery need
    // not check it again; if that sync fails, the old marker stays and it will.
    uint64_t head = index_.head();
    if (!unsynced_run) s = write_unsynced_marker(head > kMaxBatchEntries ? head - kMaxBatchEntries : 0);
    else if (sync_both_file_systems().ok()) s = write_unsynced_marker(head);
    if (!s.ok()) return s;
    head_ = index_.head();
    opened_ = true;
    return Status::Ok();
  }
  // What the last process wrote may still be only in the page cache: an append it was killed
  // before syncing, or everything, if it ran with SYNC=none. Recovery above read it from there,
  // and readers are about to; under SYNC=always none of it may be shown before it is durable.
  // (Done above, before the journal was emptied.)
  if (unsynced_run) s = remove_unsynced_marker();
  if (!s.ok()) return s;
  struct stat blobs_st {}, index_st {};
  separate_file_systems_ = ::stat(options.blobs_dir.c_str(), &blobs_st) == 0 &&
                           ::stat(options.index_dir.c_str(), &index_st) == 0 &&
                           blobs_st.st_dev != index_st.st_dev;
  head_ = index_.head();
  active_first_ = head_ + 1;  // recovery emptied the journal
  worker_ = std::make_unique<Worker>(this);
  opened_ = true;
  return Status::Ok();
}

Store::Store() = default;

Store::~Store() {
  worker_.reset();  // stops the thread (what was handed over finishes first)
  // A clean stop under SYNC=none makes everything durable, so that the next start need not
  // check what this run wrote. If a sync fails the marker stays, and it will.
  if (!opened_ || options_.sync != SyncMode::None) return;
  if (sync_both_file_systems().ok()) remove_unsynced_marker();
}

// ---------------------------------------------------------------------------------------------
// Journal replay and checkpoints

Status Store::replay_journal(std::vector<std::string>* warnings, bool* replayed) {
  *replayed = false;
  std::unordered_set<std::string> written;  // blobs already written again in this replay
  std::vector<std::string> dirty_dirs;      // synced with everything else after the replay
  return journal_.replay(
      [&](const Journal::Entry& e) -> Status {
        const std::string where = "journal " + journal_.path() + ", entry " + std::to_string(e.index);
        if (sha256_hex(e.bytes) != e.hash_hex)
          return Status::Corruption(where + ": its bytes do not hash to its name");
        if (e.index == 0 || e.index > index_.head() + 1)
          return Status::Corruption(where + " follows entry " + std::to_string(index_.head()) +
                                    " of the index: the entries between are lost");
        // Written again whatever is under its name: after a failed checkpoint the page cache
        // may hold bytes that never reached the disk, and only a new write makes them dirty.
        if (written.insert(std::string(e.hash_hex)).second) {
          Status s = blobs_.write_temp(e.hash_hex, e.bytes, false);
          if (s.ok()) s = blobs_.rename_into_place(e.hash_hex, &dirty_dirs);
          if (!s.ok()) return s;
        }
        std::string record(e.hash_hex);
        record.push_back('\n');
        *replayed = true;
        return index_.write_at(e.index, record);
      },
      warnings);
}

Status Store::make_durable(const std::vector<std::string>& blobs,
                           const std::vector<std::string>& dirs) const {
  if (blobs_.can_sync_filesystem()) {
    // One syncfs of each file system makes every blob, every name and the index durable, and
    // reports any write-back error since the last one (Linux >= 5.8).
    Status s = blobs_.sync_filesystem();
    if (s.ok() && separate_file_systems_) s = sync_both_file_systems();
    return s;
  }
  for (const std::string& hex : blobs) {
    Status s = blobs_.sync_blob(hex);
    if (!s.ok()) return s;
  }
  std::vector<std::string> directories(dirs);
  Status s = BlobStore::sync_dirs(&directories);
  if (s.ok()) s = index_.sync();
  return s;
}

// The store thread (SYNC=always): it makes the blob files and index records of committed
// entries from their journal records, one task at a time in the order they were handed over.
// A checkpoint is one of those tasks: when the store thread reaches it, every entry of its side
// is made, and it hands the checkpoint on to the checkpoint thread, which runs the syncfs and
// retires the side while the store thread goes on making the entries of the other side (a
// syncfs of a side's files takes seconds under load; making nothing meanwhile would cost the
// store that share of its rate). At most one checkpoint runs: the committing thread starts the
// next only after it collected the last. It learns that a checkpoint finished from a pipe it
// polls, and that making failed from failure().
struct Store::Worker {
  explicit Worker(Store* store) : store_(store) {
    if (::pipe2(done_, O_CLOEXEC) != 0) done_[0] = done_[1] = -1;
    thread_ = std::thread([this] { loop(); });
    checkpoint_thread_ = std::thread([this] { checkpoint_loop(); });
  }
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_one();
    thread_.join();  // hands over a checkpoint still queued first
    {
      std::lock_guard<std::mutex> lock(mu_);
      checkpoint_stop_ = true;
    }
    checkpoint_cv_.notify_one();
    checkpoint_thread_.join();
    for (int fd : done_)
      if (fd >= 0) ::close(fd);
  }
  // The entries first.. whose records an append wrote at [start, end) of `side`.
  void make(int side, uint64_t first, uint64_t start, uint64_t end) {
    hand_over(Task{Task::Kind::Make, side, first, start, end, 0});
  }
  void checkpoint(int side, uint64_t generation) {
    checkpoint_running_ = true;
    hand_over(Task{Task::Kind::Checkpoint, side, 0, 0, 0, generation});
  }
  // The committing thread's view: a checkpoint handed over whose result is not collected yet.
  bool checkpoint_running() const { return checkpoint_running_; }
  int fd() const { return checkpoint_running_ ? done_[0] : -1; }
  // Waits for the running checkpoint to finish (at once when fd() is readable).
  Status wait_checkpoint(int* side, uint64_t* generation) {
    char byte;
    while (::read(done_[0], &byte, 1) < 0 && errno == EINTR) {
    }
    std::lock_guard<std::mutex> lock(mu_);
    checkpoint_running_ = false;
    *side = checkpoint_side_;
    *generation = checkpoint_generation_;
    return checkpoint_result_;
  }
  // Waits until every task handed over is done, a checkpoint's syncfs and retire included.
  // What the threads wrote is then the caller's.
  void drain() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait(lock, [this] { return tasks_.empty() && !busy_ && !pending_checkpoint_; });
  }
  // Why making failed (Ok while it has not): once it has, no later entry is made and no side is
  // retired; the journal keeps them all for the next start.
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  Status failure() {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_;
  }

 private:
  struct Task {
    enum class Kind { Make, Checkpoint } kind;
    int side;
    uint64_t first, start, end;  // Make
    uint64_t generation;         // Checkpoint
  };
  // A checkpoint the store thread handed on: every entry of `side` is made.
  struct Checkpoint {
    int side;
    uint64_t generation;
    std::vector<std::string> blobs, dirs;  // see Store::side_blobs_
  };
  void hand_over(const Task& task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(task);
    }
    work_cv_.notify_one();
  }
  // With mu_ held: the checkpoint's result for the committing thread, which reads it once the
  // byte on the pipe wakes it.
  void finish_checkpoint(int side, uint64_t generation, const Status& s) {
    checkpoint_side_ = side;
    checkpoint_generation_ = generation;
    checkpoint_result_ = s;
    const char byte = 1;
    if (::write(done_[1], &byte, 1) < 0) {
    }
  }
  void loop() {
    // Named so that an operator's `top -H` and the fault tests (which attach strace to this
    // thread alone) can tell it from the loop's.
    ::pthread_setname_np(::pthread_self(), "store");
    std::string buffer;
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping, and everything handed over is done
      const Task task = tasks_.front();
      tasks_.pop_front();
      busy_ = true;
      const bool failed_before = !failure_.ok();
      lock.unlock();
      if (task.kind == Task::Kind::Make) {
        Status s = failed_before ? Status::Ok() : store_->make_entries(task.side, task.first, task.start, task.end, &buffer);
        if (buffer.capacity() > (1u << 20)) std::string().swap(buffer);
        lock.lock();
        if (!s.ok() && failure_.ok()) {
          failure_ = s;
          failed_.store(true, std::memory_order_release);
        }
      } else if (failed_before) {
        // Some entry of the side may be unmade: it is not retired.
        lock.lock();
        finish_checkpoint(task.side, task.generation, failure_);
      } else {
        // The side's bookkeeping is the checkpoint's from here; the store thread's next tasks
        // are of the other side.
        Checkpoint c{task.side, task.generation, std::move(store_->side_blobs_[task.side]),
                     std::vector<std::string>(store_->side_dirs_[task.side].begin(), store_->side_dirs_[task.side].end())};
        store_->side_blobs_[task.side].clear();
        store_->side_dirs_[task.side].clear();
        lock.lock();
        pending_checkpoint_.emplace(std::move(c));
        checkpoint_cv_.notify_one();
      }
      busy_ = false;
      if (tasks_.empty() && !pending_checkpoint_) idle_cv_.notify_all();
    }
  }
  void checkpoint_loop() {
    // Named for the same reasons as the store thread: the fault tests fail its syncfs.
    ::pthread_setname_np(::pthread_self(), "checkpoint");
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      checkpoint_cv_.wait(lock, [this] { return checkpoint_stop_ || pending_checkpoint_; });
      if (!pending_checkpoint_) return;
      // Taken out, but the slot stays engaged until the result is out (drain() waits on it).
      const Checkpoint c = std::move(*pending_checkpoint_);
      lock.unlock();
      Status s = store_->make_durable(c.blobs, c.dirs);
      if (s.ok()) s = store_->journal_.retire(c.side, c.generation);
      lock.lock();
      finish_checkpoint(c.side, c.generation, s);
      pending_checkpoint_.reset();
      if (tasks_.empty() && !busy_) idle_cv_.notify_all();
    }
  }

  Store* store_;
  std::thread thread_, checkpoint_thread_;
  std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_, checkpoint_cv_;
  std::deque<Task> tasks_;
  bool stop_ = false, checkpoint_stop_ = false;
  bool busy_ = false;                      // a task taken from tasks_ is being done
  std::optional<Checkpoint> pending_checkpoint_;  // handed on, until its result is out
  bool checkpoint_running_ = false;        // the committing thread's alone
  int checkpoint_side_ = 0;
  uint64_t checkpoint_generation_ = 0;
  Status checkpoint_result_;
  Status failure_;
  std::atomic<bool> failed_{false};
  int done_[2] = {-1, -1};
};

void Store::start_checkpoint() {
  checkpoint_started_ns_ = monotonic_ns();  // metrics
  const int side = journal_.switch_sides();
  checkpoint_first_ = active_first_;
  checkpoint_last_ = head_;
  active_first_ = head_ + 1;
  worker_->checkpoint(side, journal_.next_generation());
}

int Store::checkpoint_fd() const { return worker_ ? worker_->fd() : -1; }

Status Store::checkpoint_finished() {
  int side = 0;
  uint64_t generation = 0;
  Status s = worker_->wait_checkpoint(&side, &generation);
  last_checkpoint_ns_ = monotonic_ns() - checkpoint_started_ns_;  // metrics
  if (s.ok()) {
    journal_.retired(side, generation);
  } else if (refused_.empty()) {
    refused_ = "writes are refused until the server restarts: a checkpoint could not make the "
               "journal's entries durable (" + s.error + "); the next start writes them all again";
  }
  return s;
}

void Store::take_worker_failure() {
  if (!worker_ || !worker_->failed() || !refused_.empty()) return;
  refused_ = "writes are refused until the server restarts: the blob files or index records of "
             "confirmed entries could not be made (" + worker_->failure().error +
             "); the journal keeps those entries, and the next start writes them again";
}

bool Store::journal_holds_entries() const { return journaled() && journal_.holds_records(); }

bool Store::can_checkpoint() const {
  return journaled() && refused_.empty() && worker_ && !worker_->checkpoint_running() &&
         journal_.used() > 0 && journal_.can_switch();
}

void Store::checkpoint_if_possible() {
  if (can_checkpoint()) start_checkpoint();
}

uint64_t Store::paced_limit() const {
  const uint64_t capacity = journal_.side_capacity(), half = capacity / 2;
  if (checkpoint_last_ < checkpoint_first_) return capacity;  // a side with no entries
  const uint64_t entries = checkpoint_last_ - checkpoint_first_ + 1;
  const uint64_t made_head = index_.head();  // the store thread's progress
  const uint64_t made = made_head < checkpoint_first_ ? 0 : std::min(entries, made_head - checkpoint_first_ + 1);
  if (made >= entries) return capacity;  // all made: the checkpoint's syncfs runs; the rest is its
  const uint64_t quarter = (capacity - half) / 2;
  return half + static_cast<uint64_t>(static_cast<double>(quarter) * static_cast<double>(made) /
                                      static_cast<double>(entries));
}

size_t Store::room_for(const std::vector<std::string_view>& bytes) {
  take_worker_failure();
  paced_ = false;
  if (!journaled() || !refused_.empty()) return bytes.size();  // commit() refuses them itself
  auto fitting = [&] {
    uint64_t room = journal_.room();
    bool limited = false;
    if (worker_->checkpoint_running()) {
      const uint64_t limit = paced_limit(), used = journal_.used();
      if (used + room > limit) {
        room = limit > used ? limit - used : 0;
        limited = true;
      }
    }
    size_t n = 0;
    uint64_t taken = 0;
    for (; n < bytes.size(); n++) {
      const uint64_t size = Journal::record_size(bytes[n].size());
      if (size > room) break;
      room -= size;
      taken += size;
    }
    // Paced only if the pacing is what stops the next record: a half really full waits for
    // the checkpoint (and says so), as before.
    paced_ = limited && n < bytes.size() && Journal::record_size(bytes[n].size()) <= journal_.room() - taken;
    return n;
  };
  size_t n = fitting();
  if (n < bytes.size() && !worker_->checkpoint_running() && journal_.can_switch()) {
    start_checkpoint();  // the other side, empty, takes appends from now on
    n = fitting();
  }
  return n;
}

Status Store::settle() {
  if (!worker_) return Status::Ok();
  worker_->drain();
  take_worker_failure();
  return worker_->failed() ? worker_->failure() : Status::Ok();
}

Status Store::close() {
  if (!journaled() || !worker_) return Status::Ok();
  worker_->drain();  // every blob file and index record made, or failed
  take_worker_failure();
  if (worker_->checkpoint_running()) checkpoint_finished();
  if (!refused_.empty()) {
    Status r;
    r.error = refused_;
    return r;
  }
  unmade_.clear();
  if (!journal_.holds_records()) return Status::Ok();
  std::vector<std::string> blobs, dirs;
  for (int side = 0; side < 2; side++) {
    blobs.insert(blobs.end(), side_blobs_[side].begin(), side_blobs_[side].end());
    dirs.insert(dirs.end(), side_dirs_[side].begin(), side_dirs_[side].end());
  }
  Status s = make_durable(blobs, dirs);
  if (s.ok()) s = journal_.reset();
  if (!s.ok()) s.error = "cannot make the journal's entries durable at the stop (" + s.error +
                         "); the next start writes them all again";
  return s;
}

std::string Store::unsynced_marker_path() const { return options_.index_dir + "/" + kUnsyncedMarker; }

Status Store::sync_both_file_systems() const {
  for (const std::string* dir : {&options_.blobs_dir, &options_.index_dir}) {
    int fd = ::open(dir->c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::Errno("cannot open directory", *dir, errno);
    int rc = ::syncfs(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return Status::Errno("cannot sync the file system of", *dir, err);
  }
  return Status::Ok();
}

Status Store::read_unsynced_marker(bool* present, uint64_t* durable_head) const {
  *present = false;
  *durable_head = 0;
  std::string path = unsynced_marker_path();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::Errno("cannot open", path, errno);
  }
  char buf[32] = {};
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  int err = errno;
  ::close(fd);
  if (n < 0) return Status::Errno("cannot read", path, err);
  *present = true;
  // Written whole (temp file, sync, rename); anything else counts as "from the start".
  char* end = nullptr;
  unsigned long long v = std::strtoull(buf, &end, 10);
  if (end != buf && *end == '\n') *durable_head = v;
  return Status::Ok();
}

Status Store::write_unsynced_marker(uint64_t durable_head) {
  std::string path = unsynced_marker_path(), tmp = path + ".tmp";
  std::string text = std::to_string(durable_head) + "\n";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::Errno("cannot create", tmp, errno);
  int err = write_all(fd, text.data(), text.size());
  if (err == 0 && ::fdatasync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    return Status::Errno("cannot write", path, err);
  }
  return fsync_path(options_.index_dir);
}

Status Store::remove_unsynced_marker() {
  std::string path = unsynced_marker_path();
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Status::Errno("cannot remove", path, errno);
  return fsync_path(options_.index_dir);
}

Status Store::recover_tail(bool unsynced_run, uint64_t durable_head, std::vector<std::string>* warnings) {
  // Which records a power cut can have left damaged: those of the last append (at most
  // kMaxBatchEntries), or, after a SYNC=none run that did not stop cleanly, every record it
  // wrote (those after durable_head) and their blobs. Startup cost does not grow with the log:
  // only with what the last run left unsynced.
  const uint64_t head = index_.head();
  const uint64_t window = head > kMaxBatchEntries ? head - kMaxBatchEntries + 1 : 1;
  const uint64_t first = unsynced_run ? std::min(window, durable_head + 1) : window;
  uint64_t new_head = head;
  std::string why;
  // 1. The first bad record among them cuts everything after it (point-in-time recovery): an
  //    append's pages can reach the disk out of order and leave zeros or garbage before good
  //    records, and a SYNC=none run's blobs can be lost while records naming them are not.
  //    None of the records cut was confirmed as durable.
  std::string records, bytes;
  std::unordered_set<std::string> verified;  // blobs already read and hashed
  for (uint64_t at = first; at <= head && new_head == head; at += kMaxBatchEntries) {
    size_t count = static_cast<size_t>(std::min<uint64_t>(kMaxBatchEntries, head - at + 1));
    Status s = index_.read(at, count, &records);
    if (!s.ok()) return s;
    for (size_t i = 0; i < count; i++) {
      std::string_view record(records.data() + i * kRecordSize, kRecordSize);
      if (!valid_record(record)) {
        new_head = at + i - 1;
        why = "entry " + std::to_string(at + i) + " is malformed";
        break;
      }
      if (!unsynced_run || at + i <= durable_head || verified.count(std::string(record.substr(0, 64)))) continue;
      if (!read_blob(record, &bytes).ok()) {
        new_head = at + i - 1;
        why = "entry " + std::to_string(at + i) + " names a missing or damaged blob, written by a SYNC=none run that did not stop cleanly";
        break;
      }
      verified.insert(std::string(record.substr(0, 64)));
    }
  }
  // 2. From the end, records whose blob is missing or damaged: the last append's, if its blobs
  //    were removed again (a failed batch). The first good record ends the scan, so a bad
  //    record deeper in the log is reported to readers rather than "repaired" away.
  while (new_head >= window && new_head > 0) {
    Status s = index_.read(new_head, 1, &records);
    if (!s.ok()) return s;
    if (verified.count(records.substr(0, 64)) || (valid_record(records) && read_blob(records, &bytes).ok())) break;
    if (why.empty()) why = "a malformed record or a missing or damaged blob at the end";
    new_head--;
  }
  if (new_head != head) {
    Status s = index_.truncate(new_head);
    if (!s.ok()) return s;
    warnings->push_back("cut " + std::to_string(head - new_head) + " unconfirmed record(s) from the end of " +
                        index_.path() + ", entries " + std::to_string(new_head + 1) + ".." +
                        std::to_string(head) + ": " + why);
  }
  return Status::Ok();
}

Status Store::commit(const std::vector<std::string_view>& hashes,
                     const std::vector<std::string_view>& bytes) {
  if (hashes.empty()) return Status::Ok();
  take_worker_failure();
  if (!refused_.empty()) {
    Status s;
    s.error = refused_;
    return s;
  }
  if (!journaled()) return write_entries(hashes, bytes);
  // SYNC=always: the batch is durable, and confirmed, once the journal holds it. Every entry's
  // bytes go into the journal, those of blobs already stored too: a blob may be in the page
  // cache only (from a SYNC=none run, or an earlier batch not checkpointed yet), and recovery
  // must be able to write it again.
  const uint64_t first = head_ + 1;
  const uint64_t start = journal_.end();
  std::vector<Journal::Entry> entries;
  entries.reserve(hashes.size());
  for (size_t i = 0; i < hashes.size(); i++) entries.push_back({first + i, hashes[i], bytes[i]});
  Status s = journal_.append(entries, true);
  if (!s.ok()) return s;
  // The blob files and index records are the store thread's to make, from the journal.
  UnmadeRun run{first, {}, journal_.end()};
  run.offsets.reserve(bytes.size());
  uint64_t at = start;
  for (std::string_view b : bytes) {
    run.offsets.push_back(at);
    at += Journal::record_size(b.size());
  }
  const uint64_t made = index_.head();
  while (!unmade_.empty() && unmade_.front().first + unmade_.front().offsets.size() - 1 <= made)
    unmade_.pop_front();
  unmade_.push_back(std::move(run));
  worker_->make(journal_.active_side(), first, start, journal_.end());
  head_ += hashes.size();
  // Half the side used: the other side takes appends while a checkpoint empties this one.
  if (journal_.used() >= journal_.side_capacity() / 2) checkpoint_if_possible();
  return Status::Ok();
}

Status Store::make_entries(int side, uint64_t first, uint64_t start, uint64_t end, std::string* buffer) {
  if (first != index_.head() + 1)
    return Status::Corruption("the store thread was given entry " + std::to_string(first) +
                              " after entry " + std::to_string(index_.head()) + " of " + index_.path());
  std::string records;
  std::vector<std::string> created, dirty_dirs;
  std::unordered_set<std::string> in_batch;
  uint64_t expected = first;
  Status s = journal_.read_appended(start, end, buffer, [&](const Journal::Entry& e) -> Status {
    if (e.index != expected++)
      return Status::Corruption("journal " + journal_.path() + ": entry " + std::to_string(e.index) +
                                " where entry " + std::to_string(expected - 1) + " was appended");
    records.append(e.hash_hex).push_back('\n');
    // The blobs to write: not stored whole (absent, or damaged by a power cut) and first here.
    if (!in_batch.insert(std::string(e.hash_hex)).second) return Status::Ok();
    // Absent, the usual case: made under its name at once, as the journal holds its bytes
    // until the checkpoint's syncfs covers the file (see create_in_place).
    bool existed = false;
    Status w = blobs_.create_in_place(e.hash_hex, e.bytes, &dirty_dirs, &existed);
    if (!w.ok()) return w;
    if (!existed) {
      created.emplace_back(e.hash_hex);
      return w;
    }
    // A file has its name: kept if whole, else replaced whole (readers of the entries made
    // before may be reading it, so never rewritten where it is).
    bool whole = false;
    w = blobs_.holds(e.hash_hex, e.bytes, &whole);
    if (!w.ok() || whole) return w;
    w = blobs_.write_temp(e.hash_hex, e.bytes, false);
    if (w.ok()) w = blobs_.rename_into_place(e.hash_hex, &dirty_dirs);
    if (w.ok()) created.emplace_back(e.hash_hex);
    return w;
  });
  if (s.ok()) s = index_.append(records);  // cuts itself back on failure
  std::vector<std::string_view> created_views(created.begin(), created.end());
  blobs_.end_batch(s.ok(), created_views);
  if (!s.ok()) return s;
  if (!blobs_.can_sync_filesystem())
    side_blobs_[side].insert(side_blobs_[side].end(), created.begin(), created.end());
  side_dirs_[side].insert(dirty_dirs.begin(), dirty_dirs.end());
  return s;
}

Status Store::write_entries(const std::vector<std::string_view>& hashes,
                            const std::vector<std::string_view>& bytes) {
  // The blobs to write: not stored whole (absent, or damaged by a power cut) and first in batch.
  std::vector<size_t> fresh;
  std::unordered_set<std::string_view> in_batch;
  std::string records;
  records.reserve(hashes.size() * kRecordSize);
  Status s;
  for (size_t i = 0; i < hashes.size() && s.ok(); i++) {
    bool found = false;
    if (in_batch.insert(hashes[i]).second) {
      s = blobs_.holds(hashes[i], bytes[i], &found);
      if (s.ok() && !found) fresh.push_back(i);
    }
    records.append(hashes[i]).push_back('\n');
  }
  if (!s.ok()) return s;
  std::vector<std::string> dirty_dirs;
  std::vector<std::string_view> created;
  for (size_t i = 0; i < fresh.size() && s.ok(); i++) {
    s = blobs_.write_temp(hashes[fresh[i]], bytes[fresh[i]], false);
    if (s.ok()) s = blobs_.rename_into_place(hashes[fresh[i]], &dirty_dirs);
    if (s.ok()) created.push_back(hashes[fresh[i]]);
  }
  if (s.ok()) s = index_.append(records);  // cuts itself back on failure
  blobs_.end_batch(s.ok(), created);
  if (s.ok()) head_ = index_.head();
  return s;
}

Status Store::read(uint64_t index, std::string* bytes) const {
  assert(index >= 1 && index <= head_);
  const uint64_t made = index_.head();
  if (index > made) return read_unmade(index, bytes);
  const size_t have = records_.size() / kRecordSize;
  if (index < records_first_ || index >= records_first_ + have) {
    const size_t run = static_cast<size_t>(std::min<uint64_t>(kReadRun, made - index + 1));
    Status s = index_.read(index, run, &records_);
    records_first_ = index;
    if (!s.ok()) {
      records_.clear();
      return s;
    }
  }
  return read_blob(std::string_view(records_.data() + (index - records_first_) * kRecordSize, kRecordSize), bytes);
}

Status Store::read_unmade(uint64_t index, std::string* bytes) const {
  // The runs are in order and contiguous, and end at head(): find the one that holds `index`.
  // Records stay where they are until their side is retired, which follows their making.
  auto run = std::upper_bound(unmade_.begin(), unmade_.end(), index,
                              [](uint64_t i, const UnmadeRun& r) { return i < r.first; });
  if (run == unmade_.begin()) return Status::Corruption("entry " + std::to_string(index) + " is not in the journal");
  --run;
  const size_t k = static_cast<size_t>(index - run->first);
  if (k >= run->offsets.size()) return Status::Corruption("entry " + std::to_string(index) + " is not in the journal");
  const uint64_t end = k + 1 < run->offsets.size() ? run->offsets[k + 1] : run->end;
  Status s = journal_.read_appended(run->offsets[k], end, &journal_buffer_, [&](const Journal::Entry& e) {
    if (e.index != index)
      return Status::Corruption("journal " + journal_.path() + ": entry " + std::to_string(e.index) +
                                " where entry " + std::to_string(index) + " was appended");
    bytes->assign(e.bytes.data(), e.bytes.size());
    return Status::Ok();
  });
  if (journal_buffer_.capacity() > (1u << 20)) std::string().swap(journal_buffer_);
  return s;
}

Status Store::read_blob(std::string_view record, std::string* bytes) const {
  if (!valid_record(record)) return Status::Corruption("malformed index record in " + index_.path());
  return blobs_.read(record.substr(0, 64), bytes);
}

void Store::check(CheckReport* report,
                  const std::function<void(uint64_t checked, uint64_t head)>& progress) const {
  const uint64_t head = index_.head();
  report->entries = head;
  std::unordered_set<std::string> seen;  // hashes already verified
  std::string records, bytes;
  constexpr size_t kRun = 4096;
  for (uint64_t first = 1; first <= head; first += kRun) {
    size_t count = static_cast<size_t>(std::min<uint64_t>(kRun, head - first + 1));
    Status s = index_.read(first, count, &records);
    if (!s.ok()) {
      report->problems.push_back(s.error);
      return;
    }
    for (size_t i = 0; i < count; i++) {
      if (progress) progress(first + i - 1, head);
      std::string_view record(records.data() + i * kRecordSize, kRecordSize);
      std::string where = "entry " + std::to_string(first + i) + ": ";
      if (!valid_record(record)) {
        report->problems.push_back(where + "malformed index record");
        continue;
      }
      std::string hex(record.substr(0, 64));
      if (seen.count(hex)) continue;
      s = blobs_.read(hex, &bytes);
      if (!s.ok()) {
        report->problems.push_back(where + s.error);
        continue;
      }
      seen.insert(std::move(hex));
      report->distinct_blobs++;
      report->bytes += bytes.size();
    }
  }
  if (progress) progress(head, head);
  // The journal: whole records, each of an entry whose bytes hash to its name.
  Status s = journal_.replay(
      [&](const Journal::Entry& e) {
        report->journal_records++;
        if (sha256_hex(e.bytes) != e.hash_hex)
          report->problems.push_back("journal record of entry " + std::to_string(e.index) +
                                     ": its bytes do not hash to its name");
        return Status::Ok();
      },
      nullptr);
  if (!s.ok()) report->problems.push_back(s.error);
}
