// From strace text to what the explorer needs: the calls that changed or persisted files under
// one directory (the store's root), as changes to a crashfs::FsModel, in the order they took
// effect, interleaved with every byte the server sent to a client.
//
// Order (fs_model.hpp, rule 6): a change takes effect when its call returns; a sync covers
// what took effect before the sync began; bytes sent count from when the send began. With one
// thread these are all the same line.
//
// Descriptors are followed per process (clone with CLONE_FILES shares the table, fork copies
// it, exec drops O_CLOEXEC ones), for write()'s file position and for fds opened before a
// rename; -y paths are the fallback for a descriptor the table does not know.
#pragma once

#include <fcntl.h>
#include <sched.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <memory>
#include <stdexcept>

#include "fs_model.hpp"
#include "strace_parse.hpp"

namespace crash {

// System calls the recorder asks strace for.
inline const char* traced_calls() {
  return "trace=open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,ftruncate,truncate,"
         "fallocate,rename,renameat,renameat2,link,linkat,unlink,unlinkat,mkdir,mkdirat,rmdir,"
         "fsync,fdatasync,syncfs,sync,close,lseek,dup,dup2,dup3,fcntl,sendto,sendmsg,"
         "clone,clone3,fork,vfork,execve";
}

// One step of a recorded run.
struct Event {
  enum class Kind {
    Create,   // path (a file), or a directory with dir = true
    Link,     // path -> path2
    Unlink,   // path
    Rename,   // path -> path2
    Write,    // ino, offset, bytes
    Resize,   // ino, size
    Sync,     // fsync/fdatasync of ino, or syncfs of file system fs (ino < 0), or sync (fs < 0)
    Close,    // a file under the root closed (changes nothing; a trace point all the same)
    Send,     // bytes sent on socket `path`
  } kind = Kind::Close;
  std::string path, path2;
  bool dir = false;
  crashfs::Ino ino = -1;
  int fs = 0;           // Sync: the file system synced, or the synced file's; Create of a directory: its own
  uint64_t offset = 0, size = 0;
  std::string bytes;
  uint64_t began = 0;  // Sync: the model's seq() when it began
  size_t phase = 0;    // which recorded server run
  long tid = 0;        // the thread that made the call
  std::string what;    // the call, for reports: "fdatasync(leveldb/index)"
  bool trace_point() const { return kind != Kind::Send; }
  bool is_sync() const { return kind == Kind::Sync; }
};

// Applies one event to `fs`. Returns false if it does not fit the model (a bug in the recorder).
inline bool apply(crashfs::FsModel* fs, const Event& e) {
  switch (e.kind) {
    case Event::Kind::Create: {
      auto ino = fs->create(e.path, e.dir);
      if (ino && e.dir) fs->set_fs(*ino, e.fs);
      return ino.has_value();
    }
    case Event::Kind::Link: return fs->link(e.path, e.path2);
    case Event::Kind::Unlink: return fs->unlink(e.path);
    case Event::Kind::Rename: return fs->rename(e.path, e.path2);
    case Event::Kind::Write: fs->write(e.ino, e.offset, e.bytes); return true;
    case Event::Kind::Resize: fs->resize(e.ino, e.size); return true;
    case Event::Kind::Sync:
      if (e.ino >= 0) fs->sync_inode(e.ino, e.began);
      else fs->sync_fs(e.fs, e.began);
      return true;
    case Event::Kind::Close:
    case Event::Kind::Send: return true;
  }
  return false;
}

// One recorded server run: its strace text and its SYNC mode; and, for a run ended by SIGKILL,
// the names under the root once it was dead. A call the kill cut off has no result in the
// trace, but it may have taken effect: the store thread works after the confirmations, so the
// kill can find it inside an openat, mkdir, rename or unlink. The names say which did.
struct Phase {
  std::string trace;
  std::string sync;  // "always" or "none"
  bool killed = false;
  std::set<std::string> names_after;  // paths relative to the root, when killed
};

namespace detail {

struct OpenFile {
  crashfs::Ino ino = -1;
  uint64_t pos = 0;
  bool append = false;
};
struct Fd {
  std::shared_ptr<OpenFile> file;  // shared by dup and by fork
  bool cloexec = false;
  std::string path;                // absolute, as opened
};
using FdTable = std::map<long, Fd>;

inline std::string normalize(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

}  // namespace detail

// Turns the recorded runs into events. `root` is the absolute, symlink-free path of the
// directory the model covers (the store's directories are inside it); `initial` is what it
// held when recording began. `fs_of_dir(path)` names the file system of a directory under the
// root (st_dev), so that syncfs covers what it covers. Throws std::runtime_error with the
// offending line when the trace cannot be followed.
class TraceReader {
 public:
  TraceReader(std::string root, const crashfs::Tree& initial) : root_(std::move(root)), model_(initial) {}

  std::vector<Event> read(const std::vector<Phase>& phases,
                          const std::function<int(const std::string&)>& fs_of_dir) {
    fs_of_dir_ = fs_of_dir;
    events_.clear();
    for (size_t p = 0; p < phases.size(); p++) read_phase(phases[p], p);
    return events_;
  }
  const crashfs::FsModel& model() const { return model_; }

 private:
  struct Timed {
    size_t line;
    int order;  // starts before ends on one line
    const strace::Call* call;
    bool at_start;
  };

  void read_phase(const Phase& phase, size_t p) {
    phase_ = p;
    current_ = &phase;
    tables_.clear();
    calls_ = strace::parse(phase.trace);
    children_.clear();
    for (const auto& c : calls_) {
      if ((c.name == "clone" || c.name == "clone3" || c.name == "fork" || c.name == "vfork") && c.result > 0) {
        long flags = 0;
        for (const auto& a : c.args)
          if (auto f = strace::named_int(a, "flags")) flags = static_cast<long>(*f);
        if (c.name == "clone" && !c.args.empty() && c.args[0].find('=') == std::string::npos)
          flags = static_cast<long>(strace::int_arg(c.args[0]));
        children_[c.result] = {c.tid, flags};
      }
    }
    // Sends count from their start, everything else from its return (file header).
    std::vector<Timed> order;
    for (const auto& c : calls_) {
      bool send = is_send(c);
      order.push_back({send ? c.start_line : c.end_line, send ? 0 : 1, &c, send});
    }
    std::stable_sort(order.begin(), order.end(), [](const Timed& a, const Timed& b) {
      return a.line != b.line ? a.line < b.line : a.order < b.order;
    });
    seq_at_line_.clear();
    for (const auto& t : order) {
      handle(*t.call);
      seq_at_line_.emplace_back(t.line, model_.seq());
    }
  }

  // Whether a call the kill cut off changed the names under the root: a file or directory
  // created is there, a renamed one is under its new name and no longer under its old one, a
  // removed one is gone.
  bool took_effect_before_kill(const strace::Call& c) const {
    if (!current_ || !current_->killed) return false;
    const auto& a = c.args;
    const std::string& n = c.name;
    auto named = [&](const std::string& dirfd, size_t i) -> std::optional<std::string> {
      if (a.size() <= i) return std::nullopt;
      auto s = strace::string_arg(a[i]);
      if (!s) return std::nullopt;
      return relative(resolve(dirfd, *s));
    };
    auto there = [&](const std::optional<std::string>& rel) { return rel && current_->names_after.count(*rel) > 0; };
    if (n == "openat" && a.size() >= 3 && (strace::int_arg(a[2]) & O_CREAT)) {
      auto rel = named(a[0], 1);
      return there(rel) && !model_.lookup(*rel);
    }
    if (n == "mkdir") return there(named("", 0));
    if (n == "mkdirat") return a.size() >= 2 && there(named(a[0], 1));
    if (n == "rename") return there(named("", 1)) && !there(named("", 0));
    if (n == "renameat" || n == "renameat2") return a.size() >= 4 && there(named(a[2], 3)) && !there(named(a[0], 1));
    if (n == "unlink") {
      auto rel = named("", 0);
      return rel && !there(rel) && model_.lookup(*rel);
    }
    if (n == "unlinkat") {
      auto rel = a.size() >= 2 ? named(a[0], 1) : std::nullopt;
      return rel && !there(rel) && model_.lookup(*rel);
    }
    return false;
  }

  static bool is_send(const strace::Call& c) {
    if (c.name == "sendto" || c.name == "sendmsg") return true;
    if ((c.name == "write" || c.name == "writev") && !c.args.empty())
      return strace::fd_path(c.args[0]).rfind("socket:", 0) == 0;
    return false;
  }
  // The model's seq() just before trace line `line` (for a sync that began there).
  uint64_t seq_before(size_t line) const {
    uint64_t seq = 0;
    for (const auto& [l, s] : seq_at_line_) {
      if (l >= line) break;
      seq = s;
    }
    return seq;
  }

  detail::FdTable& table(long tid) {
    auto it = tables_.find(tid);
    if (it != tables_.end()) return *it->second;
    auto child = children_.find(tid);
    std::shared_ptr<detail::FdTable> t;
    if (child != children_.end() && tables_.count(child->second.first)) {
      auto& parent = tables_[child->second.first];
      t = (child->second.second & CLONE_FILES) ? parent : std::make_shared<detail::FdTable>(*parent);
    } else {
      t = std::make_shared<detail::FdTable>();
    }
    tables_[tid] = t;
    return *t;
  }

  // The path relative to the root, or nothing when it is outside.
  std::optional<std::string> relative(const std::string& abs) const {
    std::string n = detail::normalize(abs);
    if (n == root_) return std::string();
    if (n.size() > root_.size() && n.compare(0, root_.size(), root_) == 0 && n[root_.size()] == '/')
      return n.substr(root_.size() + 1);
    return std::nullopt;
  }
  // The absolute path a (dirfd, path) pair names; without a dirfd, relative to the working
  // directory (the last one strace showed for AT_FDCWD).
  std::string resolve(const std::string& dirfd_arg, const std::string& path) const {
    if (!path.empty() && path[0] == '/') return detail::normalize(path);
    std::string base = dirfd_arg.empty() ? cwd_ : strace::fd_path(dirfd_arg);
    return detail::normalize(base + "/" + path);
  }

  // The open file behind a descriptor argument "3<...>".
  std::shared_ptr<detail::OpenFile> file_of(long tid, const std::string& arg) {
    long fd = static_cast<long>(strace::int_arg(arg));
    auto& t = table(tid);
    auto it = t.find(fd);
    if (it != t.end()) return it->second.file;
    // Not opened in this trace (before recording began): find it by its path.
    auto rel = relative(strace::fd_path(arg));
    if (!rel) return nullptr;
    auto ino = model_.lookup(*rel);
    if (!ino) return nullptr;
    auto f = std::make_shared<detail::OpenFile>();
    f->ino = *ino;
    t[fd] = {f, false, strace::fd_path(arg)};
    return f;
  }

  void emit(Event e, const strace::Call& c) {
    e.phase = phase_;
    e.tid = c.tid;
    if (e.what.empty()) e.what = c.name + "(" + describe(c) + ")";
    if (!apply(&model_, e))
      throw std::runtime_error("the trace does not fit the model at line " + std::to_string(c.end_line + 1) +
                               ": " + e.what);
    events_.push_back(std::move(e));
  }
  std::string describe(const strace::Call& c) const {
    std::string out;
    for (const auto& a : c.args) {
      std::string shown;
      if (auto s = strace::string_arg(a)) {
        if (c.name.find("write") != std::string::npos || c.name == "sendto") shown = std::to_string(s->size()) + " bytes";
        else shown = relative(resolve("", *s)).value_or(*s);
      } else if (a.find('<') != std::string::npos) {
        shown = relative(strace::fd_path(a)).value_or(strace::fd_path(a));
      } else {
        shown = a;
      }
      if (!out.empty()) out += ", ";
      out += shown.size() > 60 ? shown.substr(0, 60) + "..." : shown;
    }
    return out;
  }

  void handle(const strace::Call& c) {
    if (c.returned && (c.result < 0 || c.injected) && c.name != "close") return;  // failed: no effect
    const std::string& n = c.name;
    const auto& a = c.args;
    auto need = [&](size_t k) {
      if (a.size() < k) throw std::runtime_error("cannot read line " + std::to_string(c.end_line + 1) + ": " + n);
    };
    for (const auto& arg : a)
      if (strace::truncated(arg))
        throw std::runtime_error("strace cut a string short at line " + std::to_string(c.end_line + 1) +
                                 " (raise -s)");
    // Killed before it returned: writes may have happened (their bytes are in the trace); a
    // change of names, as the names after the kill say.
    if (!c.returned && n != "write" && n != "pwrite64" && !is_send(c) && !took_effect_before_kill(c)) return;
    for (const auto& arg : a)
      if (arg.rfind("-100<", 0) == 0) cwd_ = strace::fd_path(arg);
    if (is_send(c)) {
      need(2);
      Event e;
      e.kind = Event::Kind::Send;
      e.path = strace::fd_path(a[0]);
      if (n == "sendmsg") {
        for (const auto& part : iov_strings(a[1])) e.bytes += part;
      } else if (n == "writev") {
        for (const auto& part : iov_strings(a[1])) e.bytes += part;
      } else {
        e.bytes = strace::string_arg(a[1]).value_or("");
      }
      if (c.returned && c.result >= 0 && static_cast<size_t>(c.result) < e.bytes.size()) e.bytes.resize(c.result);
      emit(std::move(e), c);
      return;
    }
    if (n == "clone" || n == "clone3" || n == "fork" || n == "vfork") return;  // see children_
    if (n == "execve") {
      auto& t = table(c.tid);
      for (auto it = t.begin(); it != t.end();) it = it->second.cloexec ? t.erase(it) : std::next(it);
      return;
    }
    if (n == "open" || n == "openat" || n == "creat") {
      need(n == "openat" ? 3 : 2);
      std::string path = resolve(n == "openat" ? a[0] : std::string(), *strace::string_arg(a[n == "openat" ? 1 : 0]));
      long flags = n == "creat" ? (O_CREAT | O_WRONLY | O_TRUNC)
                                : static_cast<long>(strace::int_arg(a[n == "openat" ? 2 : 1]));
      if (!c.result_path.empty()) path = detail::normalize(c.result_path);
      auto rel = relative(path);
      if (!rel) return;
      auto ino = model_.lookup(*rel);
      if (!ino && (flags & O_CREAT)) {
        Event e;
        e.kind = Event::Kind::Create;
        e.path = *rel;
        emit(std::move(e), c);
        ino = model_.lookup(*rel);
      }
      if (!ino) return;  // a file the model does not know: nothing it can say about it
      if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY && !model_.is_dir(*ino) &&
          !model_.bytes(*ino).empty()) {
        Event e;
        e.kind = Event::Kind::Resize;
        e.ino = *ino;
        e.size = 0;
        emit(std::move(e), c);
      }
      auto f = std::make_shared<detail::OpenFile>();
      f->ino = *ino;
      f->append = flags & O_APPEND;
      table(c.tid)[c.result] = {f, (flags & O_CLOEXEC) != 0, path};
      return;
    }
    if (n == "close") {
      need(1);
      long fd = static_cast<long>(strace::int_arg(a[0]));
      auto& t = table(c.tid);
      auto it = t.find(fd);
      bool ours = it != t.end() || relative(strace::fd_path(a[0])).has_value();
      if (it != t.end()) t.erase(it);
      if (ours && relative(strace::fd_path(a[0]))) {
        Event e;
        e.kind = Event::Kind::Close;
        emit(std::move(e), c);
      }
      return;
    }
    if (n == "dup" || n == "dup2" || n == "dup3" || (n == "fcntl" && a.size() >= 2 && is_dupfd(a[1]))) {
      auto& t = table(c.tid);
      auto it = t.find(static_cast<long>(strace::int_arg(a[0])));
      if (it != t.end()) {
        detail::Fd copy = it->second;
        copy.cloexec = (n == "dup3" && a.size() >= 3 && (strace::int_arg(a[2]) & O_CLOEXEC)) ||
                       (n == "fcntl" && strace::int_arg(a[1]) == F_DUPFD_CLOEXEC);
        t[c.result] = copy;
      }
      return;
    }
    if (n == "fcntl") return;
    if (n == "lseek") {
      need(1);
      if (auto f = file_of(c.tid, a[0])) f->pos = static_cast<uint64_t>(c.result);
      return;
    }
    if (n == "write" || n == "pwrite64" || n == "writev" || n == "pwritev" || n == "pwritev2") {
      need(2);
      auto f = file_of(c.tid, a[0]);
      if (!f) return;
      std::string bytes;
      if (n == "write" || n == "pwrite64") bytes = strace::string_arg(a[1]).value_or("");
      else for (const auto& part : iov_strings(a[1])) bytes += part;
      // A call that never returned (its process was killed in it) may have written any part.
      size_t done = c.returned ? static_cast<size_t>(c.result) : bytes.size();
      bytes.resize(std::min(bytes.size(), done));
      bool positional = n == "pwrite64" || n == "pwritev" || n == "pwritev2";
      if (positional) need(4);
      uint64_t offset = positional ? static_cast<uint64_t>(strace::int_arg(a[3]))
                                   : (f->append ? model_.bytes(f->ino).size() : f->pos);
      if (!positional) f->pos = offset + bytes.size();
      if (model_.is_dir(f->ino) || bytes.empty()) return;
      Event e;
      e.kind = Event::Kind::Write;
      e.ino = f->ino;
      e.offset = offset;
      e.bytes = std::move(bytes);
      emit(std::move(e), c);
      return;
    }
    if (n == "ftruncate" || n == "truncate") {
      need(2);
      crashfs::Ino ino = -1;
      if (n == "ftruncate") {
        auto f = file_of(c.tid, a[0]);
        if (!f) return;
        ino = f->ino;
      } else {
        auto rel = relative(resolve("", *strace::string_arg(a[0])));
        if (!rel || !model_.lookup(*rel)) return;
        ino = *model_.lookup(*rel);
      }
      Event e;
      e.kind = Event::Kind::Resize;
      e.ino = ino;
      e.size = static_cast<uint64_t>(strace::int_arg(a[1]));
      emit(std::move(e), c);
      return;
    }
    if (n == "fallocate") {
      need(4);
      auto f = file_of(c.tid, a[0]);
      if (!f) return;
      long mode = static_cast<long>(strace::int_arg(a[1]));
      uint64_t off = static_cast<uint64_t>(strace::int_arg(a[2])), len = static_cast<uint64_t>(strace::int_arg(a[3]));
      const std::string& now = model_.bytes(f->ino);
      constexpr long kKeepSize = 0x01, kPunchHole = 0x02, kZeroRange = 0x10;
      uint64_t end = (mode & kKeepSize) ? std::min<uint64_t>(off + len, now.size()) : off + len;
      if (mode & (kPunchHole | kZeroRange)) {
        if (end > off) {
          Event e;
          e.kind = Event::Kind::Write;
          e.ino = f->ino;
          e.offset = off;
          e.bytes.assign(end - off, '\0');
          emit(std::move(e), c);
        }
      } else if (end > now.size()) {
        Event e;
        e.kind = Event::Kind::Resize;
        e.ino = f->ino;
        e.size = end;
        emit(std::move(e), c);
      }
      return;
    }
    if (n == "mkdir" || n == "mkdirat") {
      std::string path = n == "mkdir" ? resolve("", *strace::string_arg(a[0])) : resolve(a[0], *strace::string_arg(a[1]));
      auto rel = relative(path);
      if (!rel) return;
      Event e;
      e.kind = Event::Kind::Create;
      e.dir = true;
      e.path = *rel;
      e.fs = fs_of_dir_ ? fs_of_dir_(path) : 0;
      emit(std::move(e), c);
      return;
    }
    if (n == "rename" || n == "renameat" || n == "renameat2" || n == "link" || n == "linkat") {
      bool at = n != "rename" && n != "link";
      need(at ? 4 : 2);
      std::string from = at ? resolve(a[0], *strace::string_arg(a[1])) : resolve("", *strace::string_arg(a[0]));
      std::string to = at ? resolve(a[2], *strace::string_arg(a[3])) : resolve("", *strace::string_arg(a[1]));
      if (n == "renameat2" && a.size() >= 5 && (strace::int_arg(a[4]) & 2 /* RENAME_EXCHANGE */))
        throw std::runtime_error("renameat2 with RENAME_EXCHANGE is not modelled (line " +
                                 std::to_string(c.end_line + 1) + ")");
      auto rf = relative(from), rt = relative(to);
      if (!rf && !rt) return;
      if (!rf || !rt) throw std::runtime_error("a rename or link across the root is not modelled: " + from + " -> " + to);
      Event e;
      e.kind = n.find("link") != std::string::npos ? Event::Kind::Link : Event::Kind::Rename;
      e.path = *rf;
      e.path2 = *rt;
      emit(std::move(e), c);
      return;
    }
    if (n == "unlink" || n == "unlinkat" || n == "rmdir") {
      std::string path = n == "unlinkat" ? resolve(a[0], *strace::string_arg(a[1])) : resolve("", *strace::string_arg(a[0]));
      auto rel = relative(path);
      if (!rel) return;
      Event e;
      e.kind = Event::Kind::Unlink;
      e.path = *rel;
      emit(std::move(e), c);
      return;
    }
    if (n == "fsync" || n == "fdatasync" || n == "syncfs" || n == "sync") {
      Event e;
      e.kind = Event::Kind::Sync;
      e.began = seq_before(c.start_line);
      if (n == "sync") {
        e.fs = -1;
      } else {
        need(1);
        auto f = file_of(c.tid, a[0]);
        if (!f) return;
        e.fs = model_.fs_of(f->ino);
        if (n != "syncfs") e.ino = f->ino;
      }
      emit(std::move(e), c);
      return;
    }
  }

  static bool is_dupfd(const std::string& cmd) {
    long v = static_cast<long>(strace::int_arg(cmd));
    return v == F_DUPFD || v == F_DUPFD_CLOEXEC;
  }
  // The strings of an iovec array "[{iov_base="..", iov_len=5}, ...]" (or of a msghdr).
  static std::vector<std::string> iov_strings(const std::string& arg) {
    std::vector<std::string> out;
    for (size_t at = arg.find("iov_base=\""); at != std::string::npos; at = arg.find("iov_base=\"", at + 1)) {
      size_t start = at + 9, end = start + 1;
      while (end < arg.size() && arg[end] != '"') end += arg[end] == '\\' ? 2 : 1;
      if (auto s = strace::string_arg(arg.substr(start, end - start + 1))) out.push_back(*s);
    }
    return out;
  }

  std::string root_;
  crashfs::FsModel model_;
  std::vector<Event> events_;
  size_t phase_ = 0;
  const Phase* current_ = nullptr;  // the phase being read
  std::vector<strace::Call> calls_;
  std::map<long, std::shared_ptr<detail::FdTable>> tables_;
  std::map<long, std::pair<long, long>> children_;  // child tid -> (parent tid, clone flags)
  std::string cwd_ = "/";
  std::vector<std::pair<size_t, uint64_t>> seq_at_line_;
  std::function<int(const std::string&)> fs_of_dir_;
};

}  // namespace crash
