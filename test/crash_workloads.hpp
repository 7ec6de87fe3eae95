// The workloads the crash-state explorer records: each runs the real server (TCP_LOG_SERVER, a
// wrapper script that execs it is fine) under strace, drives it with loopback clients, and
// keeps the trace, what every write was, and how crash states are to be recovered.
//
// Recorder: strace -f -X raw -y -xx -s 16 MiB. Chosen over an LD_PRELOAD recorder because it
// sees system calls, not libc functions: it works for a static binary (make LDFLAGS=-static)
// and through a wrapper script, misses nothing that bypasses the wrapped functions (syscall(),
// libc-internal calls), and the same tool injects the ENOSPC faults (-e inject). -y names
// each descriptor's file, -xx prints every byte as \xNN (nothing to mis-parse), -X raw prints
// flags as numbers the explorer decodes with <fcntl.h>, and -s is larger than any entry.
#pragma once

#include <dirent.h>

#include <functional>

#include "crash_explorer.hpp"

namespace crash {

using harness::Client;

// A write whose stored (canonical) form the test knows: {"n":N,"p":"<pad>"}.
inline dur::Write entry_write(const std::string& id, int n, size_t pad) {
  dur::Write w;
  w.id = id;
  std::string p(pad, static_cast<char>('a' + n % 26));
  w.canonical = "{\"n\":" + std::to_string(n) + ",\"p\":\"" + p + "\"}";
  w.line = "{\"id\":\"" + id + "\",\"entry\":{\"p\":\"" + p + "\", \"n\":" + std::to_string(n) + "}}";
  return w;
}

inline dur::Write with_id(dur::Write w, const std::string& id) {
  w.line.replace(w.line.find("\"" + w.id + "\""), w.id.size() + 2, "\"" + id + "\"");
  w.id = id;
  return w;
}

// The tree under `root`, as crashfs sees trees.
inline crashfs::Tree read_tree(const std::string& root) {
  crashfs::Tree tree;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    crashfs::Entry e;
    e.path = std::filesystem::relative(it->path(), root).string();
    e.dir = it->is_directory();
    if (!e.dir) e.bytes = read_file(it->path().string());
    tree.push_back(std::move(e));
  }
  std::sort(tree.begin(), tree.end(), [](const crashfs::Entry& a, const crashfs::Entry& b) { return a.path < b.path; });
  return tree;
}

// The strace inject option that fails, with `error`, the first (or last) call that `pick(name,
// path)` accepts among those made while the server worked on batch `batch` (1-based: the calls
// after the replies to the batches before it and before its own replies) on a file whose path
// starts with `root`. Counted as strace counts (per thread), and only calls of the thread that
// answers clients (the first in the trace): the checkpoint thread's calls are not the batch's,
// and their timing differs from run to run.
inline std::string inject_at(const std::string& trace, const std::string& root, size_t batch,
                             const std::vector<size_t>& batch_sizes,
                             const std::function<bool(const std::string&, const std::string&)>& pick,
                             bool last, const std::string& error) {
  size_t before = 0;
  for (size_t b = 0; b + 1 < batch; b++) before += batch_sizes[b];
  size_t replies = 0;
  std::map<std::pair<long, std::string>, int> count;
  std::string chosen;
  const auto calls = strace::parse(trace);
  const long main_tid = calls.empty() ? 0 : calls.front().tid;
  for (const auto& c : calls) {
    int n = ++count[{c.tid, c.name}];
    if (c.name == "sendto" || (c.name == "write" && !c.args.empty() && strace::fd_path(c.args[0]).rfind("socket:", 0) == 0)) {
      if (!c.args.empty() && c.args.size() >= 2) {
        std::string data = strace::string_arg(c.args[1]).value_or("");
        for (size_t at = data.find("{\"id\":"); at != std::string::npos; at = data.find("{\"id\":", at + 1)) replies++;
      }
      continue;
    }
    if (replies < before) continue;
    if (replies > before) break;
    if (c.tid != main_tid || c.args.empty()) continue;
    std::string path = strace::fd_path(c.args[0]);
    if (path.rfind(root + "/", 0) != 0 || !pick(c.name, path)) continue;
    chosen = "inject=" + c.name + ":error=" + error + ":when=" + std::to_string(n);
    if (!last) break;
  }
  REQUIRE_MESSAGE(!chosen.empty(), "no such call in batch " << batch << " of the dry run");
  return chosen;
}

// strace takes one -e inject= per system call: two faults in calls of one name ("inject=pwrite64:
// error=ENOSPC:when=5" and "...:when=9", with the same error) become one ("when=5..9+4").
inline std::vector<std::string> merge_injections(const std::vector<std::string>& injections) {
  std::map<std::string, std::vector<std::pair<long, std::string>>> by_call;  // name -> (when, option)
  for (const auto& i : injections) {
    const size_t colon = i.find(':'), when = i.rfind(":when=");
    by_call[i.substr(0, colon)].emplace_back(std::atol(i.c_str() + when + 6), i.substr(0, when));
  }
  std::vector<std::string> out;
  for (auto& [call, list] : by_call) {
    std::sort(list.begin(), list.end());
    if (list.size() == 1) {
      out.push_back(list[0].second + ":when=" + std::to_string(list[0].first));
      continue;
    }
    REQUIRE_MESSAGE(list.size() == 2, "more than two faults in " << call);
    REQUIRE_MESSAGE(list[0].second == list[1].second, "two faults of " << call << " with other errors");
    const long a = list[0].first, b = list[1].first;
    out.push_back(list[0].second + ":when=" + std::to_string(a) + ".." + std::to_string(b) + "+" + std::to_string(b - a));
  }
  return out;
}

// The journal's writes in a trace: (thread, offset, bytes) of each pwrite64 to LEVELDB/journal,
// and the thread that answers clients (the first in the trace).
struct JournalWrite {
  long tid;
  uint64_t offset, size;
};
inline std::vector<JournalWrite> journal_writes(const std::string& trace, long* main_tid) {
  std::vector<JournalWrite> out;
  const auto calls = strace::parse(trace);
  *main_tid = calls.empty() ? 0 : calls.front().tid;
  for (const auto& c : calls) {
    if (c.name != "pwrite64" || c.args.size() < 4 || c.result <= 0) continue;
    const std::string path = strace::fd_path(c.args[0]);
    if (path.size() < 8 || path.compare(path.size() - 8, 8, "/journal") != 0) continue;
    out.push_back({c.tid, static_cast<uint64_t>(strace::int_arg(c.args[3])), static_cast<uint64_t>(c.result)});
  }
  return out;
}

// Where recordings and crash states are written: CRASH_STATE_DIR, else /dev/shm (neither needs a
// real disk, and nothing left dirty there slows another test's syncs), else TMPDIR or /tmp.
inline std::string scratch_base() {
  const char* dir = std::getenv("CRASH_STATE_DIR");
  if (dir && *dir) return dir;
  if (dur::exists("/dev/shm")) return "/dev/shm";
  return temp_base();
}

// Records one workload. Runs happen in a fresh directory under scratch_base() whose `data`
// subdirectory (the root) holds BLOBS and LEVELDB. Every recorded run and every recovery has
// the small journal (support.hpp's small_journal(): 128 KiB, lines of at most 28 KiB): the
// default journal would make every crash state as large (the model keeps whole files) and no
// workload would fill half a side; with this one, checkpoints, side switches and resets happen
// inside them.
class Recorder {
 public:
  Recorder(std::string name, std::string mode) {
    base_ = dir_.path();
    rec_.name = std::move(name);
    rec_.mode = std::move(mode);
    rec_.root = base_ + "/data";
    std::filesystem::create_directories(rec_.root);
    struct stat st {};
    if (::stat(rec_.root.c_str(), &st) == 0) root_dev_ = st.st_dev;
  }
  const std::string& root() const { return rec_.root; }
  std::string blobs() const { return rec_.root + "/" + rec_.recovery.blobs; }
  std::string leveldb() const { return rec_.root + "/" + rec_.recovery.leveldb; }

  // What the root holds now becomes the durable starting point (as if read after a reboot);
  // `stored` are the entries it holds.
  void start_from_here(const std::map<uint64_t, std::string>& stored) {
    REQUIRE_MESSAGE(rec_.phases.empty(), "the starting point must come before the first recorded run");
    rec_.initial = read_tree(rec_.root);
    rec_.before = stored;
  }

  // Remembers what `w` stores, so that its confirmation can be checked.
  const dur::Write& note(const dur::Write& w) {
    rec_.entry_of_id[w.id] = w.canonical;
    return w;
  }

  // One recorded server run with SYNC=`sync`: started under strace (with `inject`, strace
  // -e inject= options), driven by `drive(port)`, stopped with `stop` (SIGTERM, or SIGKILL
  // for a process crash); after SIGTERM it must exit with `status`.
  void run(const std::string& sync, const std::function<void(int)>& drive, int stop = SIGTERM,
           const std::vector<std::string>& inject = {}, int status_after_term = 0) {
    std::string trace = base_ + "/trace-" + std::to_string(rec_.phases.size() + 1);
    std::vector<std::string> wrapper{strace_path(), "-f", "-qq", "-X", "raw", "-y", "-xx", "-s", "16777216",
                                     "-o", trace, "-e", traced_calls()};
    for (const auto& i : inject) {
      wrapper.push_back("-e");
      wrapper.push_back(i);
    }
    harness::detail::EnvOverrides env{{"PORT", "0"}, {"BLOBS", blobs()}, {"LEVELDB", leveldb()}, {"SYNC", sync}};
    for (const auto& [name, value] : small_journal()) env[name] = value;
    dur::Wrapped s(base_, wrapper, env);
    REQUIRE_MESSAGE(s.start(milliseconds(20000)), "the server did not start under strace: " << harness::detail::tail(s.out() + s.err(), 600));
    drive(s.port());
    s.signal_server(stop);
    auto status = s.wait(milliseconds(20000));
    REQUIRE_MESSAGE(status.has_value(), "the server under strace did not exit");
    if (stop == SIGTERM)
      CHECK_MESSAGE(status == status_after_term, "status " << status.value_or(-1) << ": " << harness::detail::tail(s.out(), 400));
    rec_.phases.push_back({read_file(trace), sync});
  }
  const Recording& recording() const { return rec_; }

  // The recording, ready to explore: crash states are recovered by a server with SYNC=`sync`
  // and must take every entry of the workload again.
  Recording finish(const std::string& sync) {
    rec_.recovery.sync = sync;
    rec_.recovery.env = small_journal();
    std::set<std::string> distinct;
    for (const auto& [id, bytes] : rec_.entry_of_id) distinct.insert(bytes);
    rec_.recovery.rewrites.assign(distinct.begin(), distinct.end());
    rec_.recovery.base_dir = scratch_base();
    return rec_;
  }
  // The file system of a directory under the root: 0 for the root's, others numbered.
  std::function<int(const std::string&)> devices() {
    return [this](const std::string& path) {
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0 || st.st_dev == root_dev_) return 0;
      auto [it, fresh] = other_devs_.emplace(st.st_dev, static_cast<int>(other_devs_.size()) + 1);
      return it->second;
    };
  }

 private:
  static std::string strace_path() {
    std::string s = dur::find_program("strace");
    REQUIRE_MESSAGE(!s.empty(), "strace is needed (make check-deps installs it)");
    return s;
  }
  TempDir dir_{scratch_base(), "tcp-log-server-crash"};
  std::string base_;
  Recording rec_;
  dev_t root_dev_ = 0;
  std::map<dev_t, int> other_devs_;
};

// ---------------------------------------------------------------------------------------------
// Client helpers for the drivers (main thread: assertions allowed).

// Sends `batch` in one send and returns the replies, one per write.
inline std::vector<std::string> send_batch(Client& c, const std::vector<dur::Write>& batch) {
  std::string lines;
  for (const auto& w : batch) lines += w.line + "\n";
  c.send(lines);
  return c.read_lines(batch.size(), milliseconds(15000));
}

inline bool confirmed(const std::string& reply) {
  return reply.find("\"index\":") != std::string::npos && reply.find("\"error\"") == std::string::npos;
}

// Reads a stream reader's lines until it has been sent entry `head` (so that the trace holds
// every entry the server sent it).
inline void follow_to(Client& reader, uint64_t head) {
  if (head == 0) return;
  for (;;) {
    std::string line = reader.read_line(milliseconds(15000));
    if (reader.failed()) return;
    auto index = harness::json_int_field(line, "index");
    if (index && static_cast<uint64_t>(*index) >= head) return;
  }
}

}  // namespace crash
