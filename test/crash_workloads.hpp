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

using dur::Write;
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
    rec_.phases.push_back(Phase{read_file(trace), sync, false, {}});
    if (stop == SIGKILL) {
      // What the dead process left under the root: which of the calls it was killed in took
      // effect (crash_trace.hpp, Phase).
      Phase& phase = rec_.phases.back();
      phase.killed = true;
      for (const auto& entry : std::filesystem::recursive_directory_iterator(rec_.root))
        phase.names_after.insert(std::filesystem::relative(entry.path(), rec_.root).string());
    }
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

// ---------------------------------------------------------------------------------------------
// The workloads, each recorded into a Recorder, which it returns: what the crash-state tests
// explore and the sync-removal proofs take apart.

// Notes `w` in `r` and returns it.
inline Write noted(Recorder& r, const Write& w) { return r.note(w); }

// Single writes one at a time (under SYNC=always, each one journal append and its fdatasync),
// a stream reader from the start. Entries of 20, 700, 5000 and 40 bytes: blobs and journal
// records that tear at 512 and at 4096 bytes. The clean stop checkpoints and resets the journal.
inline Recorder& single_writes(Recorder& r, const std::string& sync) {
  r.run(sync, [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    REQUIRE(reader.read_line() == "{\"current\":true}");
    Client c(port);
    const size_t pads[] = {20, 700, 5000, 40};
    for (int i = 0; i < 4; i++) {
      auto reply = send_batch(c, {noted(r, entry_write("single-" + std::to_string(i), i, pads[i]))});
      REQUIRE(reply[0] == "{\"id\":\"single-" + std::to_string(i) + "\",\"index\":" + std::to_string(i + 1) + "}");
    }
    follow_to(reader, 4);
  });
  r.finish(sync);
  return r;
}

// Whether a SYNC=always trace shows the journal's sides at work: a checkpoint thread retired
// side 0 (its header written by a thread other than the one answering clients) and side 0 took
// records again after that, and side 1 was retired too.
inline void expect_sides_reused(const std::string& trace) {
  long main_tid = 0;
  const auto writes = journal_writes(trace, &main_tid);
  const uint64_t side = kSmallJournalBytes / 2;
  bool side0_retired = false, side0_reused = false, side1_retired = false;
  for (const auto& w : writes) {
    if (w.tid != main_tid && w.size == 4096 && w.offset == 0) side0_retired = true;
    if (w.tid != main_tid && w.size == 4096 && w.offset == side) side1_retired = true;
    if (w.tid == main_tid && side0_retired && w.offset == 4096) side0_reused = true;
  }
  CHECK_MESSAGE(side0_retired, "no checkpoint retired side 0 of the journal");
  CHECK_MESSAGE(side1_retired, "no checkpoint retired side 1 of the journal");
  CHECK_MESSAGE(side0_reused, "side 0 of the journal took no records after it was retired");
}

// Batches of 3 KB entries that fill the journal's sides: the first two stop just short of half a
// side (10 records, 30.5 KB of 60 KB); the third (11 records) does not fit in what is left, so
// its first 9 records fill side 0 and the last 2 start side 1 (one batch, two appends, one
// confirmation), and a checkpoint retires side 0; five more of 4 records take side 1 past half,
// a checkpoint retires it, and side 0 takes records again over those of its earlier generation.
// Duplicates within a batch and across batches (blobs stored and not checkpointed yet). A stream
// reader from the start. Under SYNC=none (no journal) the same batches.
inline Recorder& checkpointed_batches(Recorder& r, const std::string& sync) {
  r.run(sync, [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    REQUIRE(reader.read_line() == "{\"current\":true}");
    Client c(port);
    int n = 0;
    auto fresh = [&](const std::string& batch) {
      n++;
      return noted(r, entry_write("cp-" + batch + "-" + std::to_string(n), 300 + n, 2980));
    };
    std::vector<std::vector<Write>> batches(8);
    for (int i = 0; i < 5; i++) batches[0].push_back(fresh("1"));
    batches[0].push_back(noted(r, with_id(batches[0][0], "cp-1-again")));
    for (int i = 0; i < 3; i++) batches[1].push_back(fresh("2"));
    batches[1].push_back(noted(r, with_id(batches[0][1], "cp-2-again")));
    for (int i = 0; i < 10; i++) batches[2].push_back(fresh("3"));
    batches[2].insert(batches[2].begin() + 4, noted(r, with_id(batches[1][0], "cp-3-again")));
    for (int b = 3; b < 8; b++)
      for (int i = 0; i < 4; i++) batches[b].push_back(fresh(std::to_string(b + 1)));
    size_t total = 0;
    for (const auto& batch : batches) {
      for (const auto& reply : send_batch(c, batch)) REQUIRE(confirmed(reply));
      total += batch.size();
    }
    follow_to(reader, total);
  });
  if (sync == "always") expect_sides_reused(r.recording().phases.back().trace);
  r.finish(sync);
  return r;
}

// The journal's side 0 or 1 header generation, as LEVELDB/journal holds it now (0: none).
inline uint64_t side_generation(const std::string& journal, int side) {
  std::string bytes = read_file(journal);
  const size_t at = static_cast<size_t>(side) * (bytes.size() / 2);
  if (bytes.size() < at + 16 || bytes.compare(at, 8, "TLSJRNL1") != 0) return 0;
  uint64_t g = 0;
  for (int i = 7; i >= 0; i--) g = g << 8 | static_cast<unsigned char>(bytes[at + 8 + i]);
  return g;
}

// Waits (at most 15 s) until a checkpoint has given side `side` a new generation.
inline void wait_for_retire(const std::string& journal, int side, uint64_t before) {
  auto deadline = dur::Clock::now() + milliseconds(15000);
  while (side_generation(journal, side) == before && dur::Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(20));
  REQUIRE_MESSAGE(side_generation(journal, side) != before, "no checkpoint retired side " << side << " within 15 s");
}

// The checkpoint after a second without writes (SYNC=always): two writes, a pause until the
// idle checkpoint retired side 0, a write (to side 1), a pause until side 1 was retired too,
// and a write to side 0 again. A stream reader from the start.
inline Recorder& idle_checkpoints(Recorder& r) {
  const std::string journal = r.leveldb() + "/journal";
  r.run("always", [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    REQUIRE(reader.read_line() == "{\"current\":true}");
    Client c(port);
    REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("idle-1", 1, 700))})[0]));
    REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("idle-2", 2, 40))})[0]));
    const uint64_t g0 = side_generation(journal, 0), g1 = side_generation(journal, 1);
    wait_for_retire(journal, 0, g0);
    REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("idle-3", 3, 5000))})[0]));
    wait_for_retire(journal, 1, g1);
    REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("idle-4", 4, 20))})[0]));
    follow_to(reader, 4);
  });
  r.finish("always");
  return r;
}

// A SYNC=always server killed (kill -9) with entries in its journal that no checkpoint made
// durable: the next server (SYNC=`restart`) replays them (blobs and index records written
// again), syncs, resets the journal, serves them to a reader, takes one more write and stops.
// Crash states during the replay and the reset: the first server's confirmations must hold.
inline Recorder& replay_after_kill(Recorder& r, const std::string& restart) {
  r.run("always", [&](int port) {
    Client c(port);
    std::vector<Write> first, second;
    for (int i = 0; i < 6; i++) first.push_back(noted(r, entry_write("kill-a" + std::to_string(i), 500 + i, 2980)));
    for (int i = 0; i < 5; i++) second.push_back(noted(r, entry_write("kill-b" + std::to_string(i), 510 + i, 2980)));
    second.push_back(noted(r, with_id(first[2], "kill-b-again")));
    for (const auto& batch : {first, second})
      for (const auto& reply : send_batch(c, batch)) REQUIRE(confirmed(reply));
    // Half a side is full: side 1 takes these while a checkpoint empties side 0.
    for (const auto& reply : send_batch(c, {noted(r, entry_write("kill-c0", 520, 30)), noted(r, entry_write("kill-c1", 521, 700))}))
      REQUIRE(confirmed(reply));
  }, SIGKILL);
  r.run(restart, [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    follow_to(reader, 14);
    Client c(port);
    REQUIRE(send_batch(c, {noted(r, entry_write("kill-d", 530, 100))})[0] == "{\"id\":\"kill-d\",\"index\":15}");
    follow_to(reader, 15);
  });
  r.finish(restart);
  return r;
}

// The same entry written twice across a restart: stored under SYNC=none (whose server then
// dies: kill -9), written again to a SYNC=always server, which finds its blob stored and
// confirms it without writing it.
inline Recorder& same_entry_twice(Recorder& r) {
  const Write a = noted(r, entry_write("twice-a", 1, 30)), b = noted(r, entry_write("twice-b", 2, 700));
  r.run("none", [&](int port) {
    Client c(port);
    REQUIRE(confirmed(send_batch(c, {a})[0]));
    REQUIRE(confirmed(send_batch(c, {b})[0]));
  }, SIGKILL);
  r.run("always", [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    follow_to(reader, 2);
    Client c(port);
    REQUIRE(send_batch(c, {noted(r, with_id(a, "twice-a-again"))})[0] == "{\"id\":\"twice-a-again\",\"index\":3}");
    REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("twice-c", 3, 50))})[0]));
    REQUIRE(confirmed(send_batch(c, {noted(r, with_id(b, "twice-b-again"))})[0]));
    follow_to(reader, 5);
  });
  r.finish("always");
  return r;
}

// A SYNC=none server killed (its UNSYNCED marker left behind), restarted with SYNC=none: recovery
// checks what the first run wrote, syncs it and moves the marker on; more writes; a clean stop
// syncs everything and removes the marker.
inline Recorder& none_killed_and_restarted(Recorder& r) {
  r.run("none", [&](int port) {
    Client c(port);
    for (int i = 0; i < 3; i++) REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("first-" + std::to_string(i), 40 + i, 30 * i))})[0]));
    for (const auto& reply : send_batch(c, {noted(r, entry_write("first-3", 43, 600)), noted(r, entry_write("first-4", 44, 5))}))
      REQUIRE(confirmed(reply));
  }, SIGKILL);
  r.run("none", [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    follow_to(reader, 5);
    Client c(port);
    for (int i = 5; i < 7; i++) REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("second-" + std::to_string(i), 40 + i, 20))})[0]));
    follow_to(reader, 7);
  });
  r.finish("none");
  return r;
}

// Writes that fail, each followed by its retry: under SYNC=always, the journal append (ENOSPC:
// nothing appended) and the journal's fdatasync (EIO: the records are zeroed, unsynced, and the
// retry writes over them), the only calls between a write and its confirmation (the store
// thread's blob writes and index appends come after: failed_making() below); under SYNC=none
// the blob write and the index append (ENOSPC: the blobs the batch created are removed, the
// index cut back). Faults come from strace (-e inject), at calls found by dry runs.
inline Recorder& enospc_then_retry(Recorder& r, const std::string& sync) {
  struct Fault {
    std::string what;
    std::function<bool(const std::string&, const std::string&)> pick;  // (call, path)
    bool last;
    std::string error;
  };
  auto journal = [](const std::string& p) { return p.size() > 8 && p.compare(p.size() - 8, 8, "/journal") == 0; };
  auto index = [](const std::string& p) { return p.size() > 6 && p.compare(p.size() - 6, 6, "/index") == 0; };
  auto blob = [](const std::string& p) { return p.find("/blobs/tmp/") != std::string::npos; };
  std::vector<Fault> faults;
  if (sync == "always") {
    faults.push_back({"journal append", [=](const std::string& n, const std::string& p) { return n == "pwrite64" && journal(p); }, false, "ENOSPC"});
    faults.push_back({"journal sync", [=](const std::string& n, const std::string& p) { return n == "fdatasync" && journal(p); }, false, "EIO"});
  }
  if (sync == "none") {
    faults.push_back({"blob write", [=](const std::string& n, const std::string& p) { return n == "write" && blob(p); }, false, "ENOSPC"});
    faults.push_back({"index append", [=](const std::string& n, const std::string& p) { return n == "pwrite64" && index(p); }, true, "ENOSPC"});
  }
  // Batch 1 succeeds; then each fault's batch (two new entries) and its retry; a last batch.
  std::vector<std::vector<Write>> batches{{entry_write("ok-1", 1, 10), entry_write("ok-2", 2, 2000)}};
  std::vector<size_t> failing;
  for (size_t f = 0; f < faults.size(); f++) {
    const int n = 10 + 2 * static_cast<int>(f);
    batches.push_back({entry_write("fail-" + std::to_string(n), n, 30 + 500 * f), entry_write("fail-" + std::to_string(n + 1), n + 1, 40)});
    failing.push_back(batches.size());
    batches.push_back({with_id(batches.back()[0], "retry-" + std::to_string(n)), with_id(batches.back()[1], "retry-" + std::to_string(n + 1))});
  }
  batches.push_back({entry_write("ok-last", 99, 70)});
  std::vector<size_t> sizes;
  for (const auto& b : batches) sizes.push_back(b.size());
  auto drive = [&](Recorder& rec, const std::vector<size_t>& must_fail) {
    return [&rec, &batches, must_fail](int port) {
      Client c(port);
      for (size_t b = 0; b < batches.size(); b++) {
        for (const auto& w : batches[b]) rec.note(w);
        bool fails = std::find(must_fail.begin(), must_fail.end(), b + 1) != must_fail.end();
        for (const auto& reply : send_batch(c, batches[b]))
          CHECK_MESSAGE(confirmed(reply) != fails, "batch " << b + 1 << ": " << reply);
      }
    };
  };
  // Each fault is found by a dry run that has the faults before it injected.
  std::vector<std::string> inject;
  for (size_t f = 0; f < faults.size(); f++) {
    Recorder dry(r.recording().name, "dry run");
    std::vector<size_t> fail_so_far(failing.begin(), failing.begin() + static_cast<long>(f));
    dry.run(sync, drive(dry, fail_so_far), SIGTERM, merge_injections(inject));
    inject.push_back(inject_at(dry.recording().phases[0].trace, dry.root(), failing[f], sizes, faults[f].pick,
                               faults[f].last, faults[f].error));
  }
  r.run(sync, drive(r, failing), SIGTERM, merge_injections(inject));
  r.finish(sync);
  return r;
}

// A checkpoint that fails (EIO injected into its syncfs, the checkpoint thread's third: strace
// counts per thread, and the loop's own two come at startup), after which every write is
// refused; SIGTERM exits 1 with the journal left to replay; the next server replays it, syncs,
// resets, serves every confirmed entry and takes one more write. A failed sync is never retried
// and then trusted: whatever the failed syncfs did or did not write, the journal covers it.
inline Recorder& failed_checkpoint(Recorder& r) {
  r.run("always", [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    REQUIRE(reader.read_line() == "{\"current\":true}");
    Client c(port);
    uint64_t confirmed_writes = 0;
    bool refused = false;
    for (int b = 0; b < 20 && !refused; b++) {
      std::vector<Write> batch;  // two entries of 9 KB: four fill half a side
      for (int i = 0; i < 2; i++)
        batch.push_back(noted(r, entry_write("fc-" + std::to_string(b) + "-" + std::to_string(i), 600 + 2 * b + i, 8980)));
      for (const auto& reply : send_batch(c, batch)) {
        if (confirmed(reply)) confirmed_writes++;
        else refused = true;
      }
    }
    // The failure is collected by the loop a moment after the checkpoint's syncfs returned.
    for (int k = 0; k < 100 && !refused; k++) {
      std::this_thread::sleep_for(milliseconds(20));
      auto reply = send_batch(c, {noted(r, entry_write("fc-late-" + std::to_string(k), 800 + k, 10))});
      if (confirmed(reply[0])) confirmed_writes++;
      else refused = reply[0].find("a checkpoint could not make the journal's entries durable") != std::string::npos;
    }
    REQUIRE_MESSAGE(refused, "no write was refused after the injected checkpoint failure");
    follow_to(reader, confirmed_writes);
  }, SIGTERM, {"inject=syncfs:error=EIO:when=3"}, 1);
  r.run("always", [&](int port) {
    Client c(port);
    REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("fc-after", 900, 100))})[0]));
  });
  r.finish("always");
  return r;
}

// The store thread cannot make a confirmed entry's blob (ENOSPC injected into the mkdir of the
// fifth hh/ directory it makes: strace counts per thread, and the loop makes at most four
// directories, all at startup; each new entry here is the first of its hh/ with near
// certainty, and one that is not only delays the failure by an entry): the entries stay
// confirmed and readable, every later write is refused, SIGTERM exits 1 with the journal left
// to replay; the next server replays it, serves every confirmed entry and takes one more write.
inline Recorder& failed_making(Recorder& r) {
  r.run("always", [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    REQUIRE(reader.read_line() == "{\"current\":true}");
    Client c(port);
    uint64_t confirmed_writes = 0;
    bool refused = false;
    for (int k = 0; k < 100 && !refused; k++) {
      if (k >= 4) std::this_thread::sleep_for(milliseconds(20));  // the failure is taken at the next commit
      auto reply = send_batch(c, {noted(r, entry_write("fm-" + std::to_string(k), 700 + k, 50 + 10 * k))});
      if (confirmed(reply[0])) confirmed_writes++;
      else refused = reply[0].find("could not be made") != std::string::npos;
    }
    REQUIRE_MESSAGE(refused, "no write was refused after the injected mkdir failure");
    REQUIRE(confirmed_writes >= 5);
    follow_to(reader, confirmed_writes);
  }, SIGTERM, {"inject=mkdir:error=ENOSPC:when=5"}, 1);
  r.run("always", [&](int port) {
    Client c(port);
    REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("fm-after", 990, 100))})[0]));
  });
  r.finish("always");
  return r;
}

// Confirmations ahead of their files: every write(2) is delayed 30 ms (strace delay_enter; the
// loop writes only its log lines with it, the store thread each new blob's bytes), so the store
// thread falls behind the writer, whose writes are confirmed at their journal sync: when a
// confirmation goes out most of the entries before it have no blob file yet, one has its file
// created under its name and still empty, and the last made has its blob but no index record. The power cuts of this trace fall
// between a confirmation and its blob, and between a blob and its index record, for many
// entries at once. A reader follows them all (from memory and the journal); the server is
// killed (SIGKILL) while the store thread is still behind, and the next start makes the rest
// and takes one more write.
inline Recorder& confirmed_before_made(Recorder& r) {
  constexpr uint64_t kWrites = 12;
  r.run("always", [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    REQUIRE(reader.read_line() == "{\"current\":true}");
    Client c(port);
    for (uint64_t k = 0; k < kWrites; k++)
      REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("cm-" + std::to_string(k), 800 + static_cast<int>(k), 60 + 10 * k))})[0]));
    // Every write confirmed, and the store thread far behind: the trace has what this is for.
    const long long index_bytes = std::max(0LL, file_size(r.leveldb() + "/index"));
    CHECK_MESSAGE(index_bytes <= static_cast<long long>(kWrites / 2 * kRecordSize), index_bytes << " bytes of index already");
    follow_to(reader, kWrites);
  }, SIGKILL, {"inject=write:delay_enter=30000"});
  r.run("always", [&](int port) {
    Client c(port);
    REQUIRE(confirmed(send_batch(c, {noted(r, entry_write("cm-after", 899, 100))})[0]));
  });
  r.finish("always");
  return r;
}

// A restart on a store whose index ends with a zeroed record and a torn one (as a power cut
// leaves it), then more writes. The three entries stored before are promises too.
inline Recorder& torn_tail_restart(Recorder& r, const std::string& sync) {
  std::map<uint64_t, std::string> stored;
  {
    harness::ServerProcess s(r.root());
    s.env("BLOBS", r.blobs()).env("LEVELDB", r.leveldb());
    s.env(small_journal());
    s.start();
    for (int i = 1; i <= 3; i++) {
      Write w = entry_write("before-" + std::to_string(i), 10 + i, 10 * i);
      CHECK(dur::write_one(s.port(), w.id, w.canonical) == static_cast<uint64_t>(i));
      stored[i] = w.canonical;
    }
    CHECK(s.stop_term() == 0);
  }
  for (const auto& name : dur::list_dir(r.root()))
    if (name.rfind("server-", 0) == 0) std::filesystem::remove(r.root() + "/" + name);
  append_file(r.leveldb() + "/index", std::string(65, '\0') + std::string(30, '7'));
  r.start_from_here(stored);
  for (const auto& [i, bytes] : stored) r.note({"before-" + std::to_string(i), "", bytes});
  r.run(sync, [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    follow_to(reader, 3);
    Client c(port);
    for (int i = 4; i <= 6; i++) {
      auto reply = send_batch(c, {noted(r, entry_write("after-" + std::to_string(i), 20 + i, 100 * i))});
      REQUIRE(reply[0] == "{\"id\":\"after-" + std::to_string(i) + "\",\"index\":" + std::to_string(i) + "}");
    }
    follow_to(reader, 6);
  });
  r.finish(sync);
  return r;
}

// Three writers pipelining at once and a stream reader: batches of whatever the server read
// in one pass, one writer's ten writes sent in one go.
inline Recorder& concurrent(Recorder& r, const std::string& sync) {
  r.run(sync, [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    REQUIRE(reader.read_line() == "{\"current\":true}");
    std::vector<Client> writers;
    for (int w = 0; w < 3; w++) writers.emplace_back(port);
    std::vector<std::vector<Write>> sent(3);
    const size_t bursts[3] = {10, 3, 2};
    for (int round = 0; round < 3; round++)
      for (int w = 0; w < 3; w++) {
        std::string lines;
        for (size_t k = 0; k < bursts[w] && sent[w].size() < 12; k++) {
          int n = 1000 * (w + 1) + static_cast<int>(sent[w].size());
          sent[w].push_back(noted(r, entry_write("w" + std::to_string(w) + "-" + std::to_string(sent[w].size()), n, 8 + n % 50)));
          lines += sent[w].back().line + "\n";
        }
        writers[w].send(lines);
      }
    size_t total = 0;
    for (int w = 0; w < 3; w++) {
      for (const auto& reply : writers[w].read_lines(sent[w].size(), milliseconds(15000))) REQUIRE(confirmed(reply));
      total += sent[w].size();
    }
    follow_to(reader, total);
  });
  r.finish(sync);
  return r;
}

}  // namespace crash
