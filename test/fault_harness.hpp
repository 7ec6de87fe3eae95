// The fault-injection harness of test/fault_test.cpp: a fixed workload of batches and its
// driver, which checks every reply, a live and a fresh reader, the files while the server runs
// and a restart without injection; the strace options that record or inject, and the trace
// read back (the thread that answers clients told apart from the checkpoint's); the dry run
// that lists every write-path call of the workload with the batch that made it and what its
// failure must do; the fault matrix, one run per call; the LD_PRELOAD shim that makes one write
// short; and the checkers of a trace: the commit order, no foreign sync before a confirmation,
// confirmations that rest on synced journal records, and the faults of the checkpoint thread.
//
// Every server here has a 128 KiB journal (small_journal(), test/support.hpp): a fresh store
// creates it at once, and one batch of the commit-order test fills half a side to start a
// checkpoint. MAX_MESSAGE_BYTES is 28 KiB, the most such a journal allows (4 x (28 KiB +
// 4 KiB)): a connection's input holds one longest line, so it also bounds what one pass reads
// from a connection, and each batch of the workload (at most 28 KB) is read, committed and
// answered as one.
#pragma once

#include <dirent.h>

#include <algorithm>
#include <cstdio>
#include <functional>

#include "crc32c.hpp"
#include "durability_harness.hpp"
#include "journal.hpp"
#include "strace_parse.hpp"

namespace fault {

using namespace dur;
using harness::Client;
using harness::ServerProcess;

// ---------------------------------------------------------------------------------------------
// The servers: every one with the small journal.

// The environment of a server on `dir` (blobs/, leveldb/) run under a wrapper (Wrapped).
inline harness::detail::EnvOverrides server_env(const std::string& dir, const std::string& sync) {
  harness::detail::EnvOverrides env{{"PORT", "0"}, {"BLOBS", dir + "/blobs"}, {"LEVELDB", dir + "/leveldb"}, {"SYNC", sync}};
  for (const auto& [name, value] : small_journal()) env[name] = value;
  return env;
}

// `s`, given the small journal.
inline ServerProcess& small(ServerProcess& s) { return s.env(small_journal()); }

// ---------------------------------------------------------------------------------------------
// The workload: batches sent whole (one send) and answered before the next is sent, so the
// system calls the server makes are the same in every run up to the injected fault.

using Batch = std::vector<Write>;
constexpr size_t kBigNew = 10;  // new distinct blobs of the big batch

// {"<key>":k} entries with the id `id`.
inline Write keyed_write(const std::string& id, const std::string& key, int k) {
  Write w;
  w.id = id;
  w.canonical = "{\"" + key + "\":" + std::to_string(k) + "}";
  w.line = "{\"id\":\"" + id + "\",\"entry\":" + w.canonical + "}";
  return w;
}

inline Write with_id(Write w, const std::string& id) {
  w.line.replace(w.line.find("\"" + w.id + "\""), w.id.size() + 2, "\"" + id + "\"");
  w.id = id;
  return w;
}

inline std::string prefix_of(const Write& w) { return sha256_hex(w.canonical).substr(0, 2); }

inline std::vector<Batch> make_workload() {
  std::vector<Batch> b(7);
  auto uw = [](int batch, int n, size_t pad) {
    return unique_write(static_cast<uint64_t>(batch), 0, static_cast<uint64_t>(n), std::string(pad, 'a' + batch));
  };
  b[0] = {uw(1, 0, 10), uw(1, 1, 20), uw(1, 2, 30)};  // new blobs, new hh/ directories
  Write again = dup_write("b2-dup", 0);                 // {"d":0}: a blob already stored
  b[0].push_back(dup_write("b1-dup", 0));
  b[1] = {again, uw(2, 0, 40)};
  b[2] = {dup_write("b3-dup", 0)};  // nothing but an existing blob: no blob writes at all
  // An entry whose hh/ directory does not exist yet, twice in one batch.
  std::set<std::string> prefixes;
  for (int i = 0; i < 2; i++)
    for (const auto& w : b[i]) prefixes.insert(prefix_of(w));
  for (int k = 0;; k++) {
    Write fresh = keyed_write("b4-fresh", "fresh", k);
    if (prefixes.count(prefix_of(fresh))) continue;
    b[3] = {fresh, with_id(fresh, "b4-fresh-again")};
    break;
  }
  b[4] = {uw(5, 0, 4000), uw(5, 1, 5000)};
  for (int i = 0; i < 5; i++)
    for (const auto& w : b[i]) prefixes.insert(prefix_of(w));
  // The big batch: kBigNew new distinct blobs behind one journal append. One lands in an hh/
  // an earlier batch made, two share an hh/ new in this batch (the second mkdir finds it
  // made), the rest in new hh/ directories of their own; one of them is sent twice, and
  // {"d":0} (stored since batch 1) once: not new blobs.
  {
    std::vector<Write> old_dir, pair, single;
    std::map<std::string, std::vector<Write>> by_new_prefix;
    for (int k = 0; old_dir.empty() || pair.empty() || by_new_prefix.size() < kBigNew - 1; k++) {
      Write w = keyed_write("b6-" + std::to_string(k), "big", k);
      std::string p = prefix_of(w);
      if (prefixes.count(p)) {
        if (old_dir.empty()) old_dir.push_back(w);
        continue;
      }
      auto& at = by_new_prefix[p];
      at.push_back(w);
      if (at.size() == 2 && pair.empty()) pair = at;
    }
    for (const auto& [p, ws] : by_new_prefix)
      if (p != prefix_of(pair[0]) && single.size() < kBigNew - 3) single.push_back(ws[0]);
    b[5] = {old_dir[0], pair[0], dup_write("b6-dup", 0)};
    for (size_t i = 0; i < single.size(); i++) {
      b[5].push_back(single[i]);
      if (i == 2) b[5].push_back(pair[1]);
      if (i == 4) b[5].push_back(with_id(single[1], single[1].id + "-again"));
    }
  }
  b[6] = {uw(8, 0, 7), uw(8, 1, 8)};  // after the faults: must succeed
  return b;
}

inline const std::vector<Batch>& workload() {
  static const std::vector<Batch> w = make_workload();
  return w;
}
constexpr size_t kFaultBatches = 6;  // faults are injected in batches 1..6; batch 7 must succeed
constexpr size_t kBigBatch = 6;      // the batch with kBigNew new blobs

// New distinct blobs per batch (index 0: batch 1).
inline std::vector<size_t> new_blobs_per_batch(const std::vector<Batch>& batches) {
  std::vector<size_t> out;
  std::set<std::string> stored;
  for (const auto& b : batches) {
    size_t n = 0;
    for (const auto& w : b) n += stored.insert(w.canonical).second;
    out.push_back(n);
  }
  return out;
}

// The bytes of a batch's journal append: one record per entry (Journal::record_size).
inline size_t journal_bytes_of(const Batch& b) {
  size_t n = 0;
  for (const auto& w : b) n += Journal::record_size(w.canonical.size());
  return n;
}

// What one run of the workload saw.
struct Observed {
  std::vector<int> batch;  // per batch: 1 all confirmed, 0 all refused, -1 mixed or unanswered
  std::vector<std::string> first_error;
  Promises promises;
  uint64_t confirmed = 0;
};

// What the journal would replay now (the page cache's view: what a restart after kill -9
// replays): index -> bytes. Read with the server's own reader.
inline std::map<uint64_t, std::string> journal_replays(const std::string& leveldb) {
  std::map<uint64_t, std::string> out;
  Journal j;
  Status s = j.open(leveldb, kSmallJournalBytes, Journal::Mode::ReadOnly);
  REQUIRE_MESSAGE(s.ok(), s.error);
  s = j.replay(
      [&](const Journal::Entry& e) {
        out[e.index] = std::string(e.bytes);
        return Status::Ok();
      },
      nullptr);
  REQUIRE_MESSAGE(s.ok(), s.error);
  return out;
}

// While the server runs, after each batch: the index is a whole number of valid records, one
// per confirmed write; no temporary blob is left; and (SYNC=always) every record the journal
// would replay is a confirmed entry with exactly its bytes: a refused batch's records were
// zeroed. (SYNC=none writes no journal at all.) Under SYNC=always the store thread makes the
// index records and blob files a moment after the confirmations: the check waits for them
// (bounded); with `store_may_fail` (a fault injected into the store thread) it may wait in vain,
// and then the index holds fewer records than were confirmed, never more.
inline std::function<void(size_t, const Observed&)> files_stay_whole(const std::string& dir, const std::string& sync,
                                                                   bool store_may_fail = false) {
  // Once a wait was in vain (the store thread failed), the later batches' are too: not again.
  auto waited_in_vain = std::make_shared<bool>(false);
  return [dir, sync, store_may_fail, waited_in_vain](size_t b, const Observed& o) {
    INFO("after batch " << b + 1);
    const std::string index_path = dir + "/leveldb/index";
    std::string index = read_file(index_path);
    const auto deadline = Clock::now() + milliseconds(*waited_in_vain ? 0 : store_may_fail ? 300 : 3000);
    while (sync == "always" && index.size() < o.confirmed * kRecordSize && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(2));
      index = read_file(index_path);
    }
    if (index.size() < o.confirmed * kRecordSize) *waited_in_vain = true;
    if (store_may_fail) {
      CHECK_MESSAGE(index.size() <= o.confirmed * kRecordSize,
                    "index has " << index.size() << " bytes with " << o.confirmed << " writes confirmed");
    } else {
      CHECK_MESSAGE(index.size() == o.confirmed * kRecordSize,
                    "index has " << index.size() << " bytes with " << o.confirmed << " writes confirmed");
      CHECK(list_dir(dir + "/blobs/tmp").empty());
    }
    CHECK(index.size() % kRecordSize == 0);
    for (size_t at = 0; at + kRecordSize <= index.size(); at += kRecordSize)
      CHECK_MESSAGE(valid_record(std::string_view(index).substr(at, kRecordSize)), "record " << at / 65 + 1);
    if (sync != "always") {
      CHECK_MESSAGE(!exists(dir + "/leveldb/journal"), "a SYNC=none server wrote a journal");
      return;
    }
    for (const auto& [i, bytes] : journal_replays(dir + "/leveldb")) {
      auto it = o.promises.confirmed.find(i);
      CHECK_MESSAGE((it != o.promises.confirmed.end() && it->second == bytes),
                    "the journal would replay entry " << i << " as '" << bytes << "', which was not confirmed so");
    }
  };
}

// A fault in the store thread (SYNC=always) cannot refuse what was confirmed before it: the
// batches confirmed form a prefix, each batch all or nothing, and every refusal says why.
inline void expect_confirmed_prefix(const Observed& o) {
  bool refused = false;
  for (size_t b = 0; b < o.batch.size(); b++) {
    INFO("batch " << b + 1 << (o.first_error[b].empty() ? "" : ", error: " + o.first_error[b]));
    CHECK_MESSAGE(o.batch[b] != -1, "a batch partly confirmed and partly refused");
    if (refused) CHECK_MESSAGE(o.batch[b] == 0, "a batch confirmed after one was refused for the store thread");
    if (o.batch[b] == 0) {
      refused = true;
      CHECK_MESSAGE(o.first_error[b].find("writes are refused until the server restarts") != std::string::npos,
                    o.first_error[b]);
    }
  }
}

// Runs the workload against a server on `port`, with a stream reader connected first. Checks
// the replies, the live reader and a fresh reader against what was confirmed. `after_batch`
// is called after each batch's replies (for checks of the files while the server runs).
inline Observed drive(int port, const std::vector<Batch>& batches,
                      const std::function<void(size_t, const Observed&)>& after_batch = {}) {
  Observed o;
  Client reader(port);
  reader.send_line("{\"from\":1}");
  CHECK(reader.read_line() == "{\"current\":true}");
  Client w(port);
  for (size_t b = 0; b < batches.size(); b++) {
    std::string lines;
    for (const auto& x : batches[b]) lines += x.line + "\n";
    w.send(lines);
    int confirmed = 0, refused = 0;
    std::string first_error;
    for (const auto& x : batches[b]) {
      auto reply = w.try_read_line(milliseconds(5000));
      if (!reply) {
        CHECK_MESSAGE(false, "batch " << b + 1 << ": no reply for " << x.id);
        break;
      }
      CHECK_MESSAGE(harness::json_string_field(*reply, "id") == x.id, "reply out of order: " << *reply);
      auto index = harness::json_int_field(*reply, "index");
      if (index && reply->find("\"error\"") == std::string::npos) {
        confirmed++;
        o.promises.confirm(x.id, static_cast<uint64_t>(*index), x.canonical);
        CHECK_MESSAGE(static_cast<uint64_t>(*index) == o.confirmed + 1,
                      "index " << *index << " after " << o.confirmed << " confirmed writes");
        o.confirmed++;
      } else {
        CHECK_MESSAGE(reply->find("\"error\":\"") != std::string::npos, "not a reply: " << *reply);
        refused++;
        if (first_error.empty()) first_error = *reply;
      }
    }
    int n = static_cast<int>(batches[b].size());
    o.batch.push_back(confirmed == n ? 1 : refused == n ? 0 : -1);
    o.first_error.push_back(first_error);
    if (after_batch) after_batch(b, o);
  }
  // The live reader got exactly the confirmed entries, in order, and nothing else.
  for (const auto& [index, bytes] : o.promises.confirmed) {
    auto line = reader.try_read_line(milliseconds(3000));
    CHECK_MESSAGE(line == "{\"index\":" + std::to_string(index) + ",\"entry\":" + bytes + "}",
                  "live reader: expected entry " << index << ", got " << line.value_or("<nothing>"));
  }
  auto extra = reader.try_read_line(milliseconds(50));
  CHECK_MESSAGE(!extra, "live reader got more than the confirmed entries: " << extra.value_or(""));
  // So does a fresh reader.
  auto all = read_all(port, milliseconds(5000));
  CHECK(all.size() == o.promises.confirmed.size());
  return o;
}

// After the server stopped: restart WITHOUT injection; the log is exactly the confirmed writes,
// the invariants hold, and a new write gets head+1.
inline void restart_and_verify(const std::string& dir, const std::string& sync, const Observed& o,
                               const std::string& ctx) {
  INFO(ctx);
  // Blobs the failed batch created were removed: every blob file is named by a record.
  {
    std::set<std::string> named;
    std::string index = read_file(dir + "/leveldb/index");
    for (size_t at = 0; at + 64 <= index.size(); at += kRecordSize) named.insert(index.substr(at, 64));
    for (const auto& sub : list_dir(dir + "/blobs")) {
      if (sub.size() != 2) continue;
      for (const auto& name : list_dir(dir + "/blobs/" + sub))
        CHECK_MESSAGE(named.count(sub + name), "blob " << sub << "/" << name
                                                       << " left behind by a failed batch (no record names it)");
    }
  }
  // No temporary blob outlived the batch that wrote it (recovery would hide one).
  for (const auto& name : list_dir(dir + "/blobs/tmp"))
    CHECK_MESSAGE(false, "temporary blob left in BLOBS/tmp by the server that stopped: " << name);
  ServerProcess s(dir);
  small(s).env("SYNC", sync).start();
  CHECK(list_dir(dir + "/blobs/tmp").empty());
  Snapshot snap = read_store(s.blobs_dir(), s.leveldb_dir());
  CHECK_MESSAGE(snap.head() == o.confirmed, "after restart head is " << snap.head() << " but "
                                                                      << o.confirmed << " writes were confirmed");
  check_invariants(snap, o.promises, ctx);
  CHECK(write_one(s.port(), "after-restart", "{\"after\":\"restart\"}") == snap.head() + 1);
  CHECK(s.stop_term() == 0);
}

// ---------------------------------------------------------------------------------------------
// Traces: strace -f -y, read with strace_parse.hpp (calls another thread interrupted are joined
// again). The thread that answers clients is the first in the trace.

inline const char* const kTraced =
    "trace=openat,open,creat,write,pwrite64,writev,rename,renameat,renameat2,mkdir,mkdirat,"
    "ftruncate,fsync,fdatasync,syncfs,sync,sync_file_range,close,unlink,unlinkat,newfstatat,sendto,recvfrom";

inline std::string strace_path() {
  std::string s = find_program("strace");
  REQUIRE_MESSAGE(!s.empty(), "strace is needed (make check-deps installs it)");
  return s;
}

// The strace options that record a run: every thread, descriptors with their paths, strings up
// to `max` bytes.
inline std::vector<std::string> recording(const std::string& trace, size_t max = 300) {
  return {strace_path(), "-f", "-qq", "-y", "-s", std::to_string(max), "-o", trace, "-e", kTraced};
}

// The thread of the server `pid` named `comm` (the store thread names itself "store"), or -1
// if none has that name within `timeout`.
inline pid_t thread_named(pid_t pid, const std::string& comm, milliseconds timeout = milliseconds(5000)) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (auto deadline = Clock::now() + timeout;;) {
    pid_t found = -1;
    if (DIR* d = ::opendir(tasks.c_str())) {
      while (const dirent* e = ::readdir(d)) {
        if (e->d_name[0] == '.') continue;
        std::string name = read_file(tasks + "/" + e->d_name + "/comm");
        if (!name.empty() && name.back() == '\n') name.pop_back();
        if (name == comm) found = static_cast<pid_t>(std::atol(e->d_name));
      }
      ::closedir(d);
    }
    if (found > 0 || Clock::now() >= deadline) return found;
    std::this_thread::sleep_for(milliseconds(1));
  }
}

// strace attached to one thread of a running server: -p TID without -f follows that thread
// alone and counts its calls from the attach. An injection's when=N counts per traced thread,
// so under strace -f from the start it would fail the Nth call of every thread at once (the
// loop's Nth pwrite64 to the journal and the store thread's Nth to the index); attached to one
// thread it fails that thread's call and no other. The thread is asleep when strace attaches
// (the loop in poll, the store thread waiting for work), so no call of the workload is missed.
class Attached {
 public:
  Attached(const std::string& dir, pid_t tid, const std::vector<std::string>& options, const std::string& trace)
      : Attached(dir, std::vector<pid_t>{tid}, options, trace) {}
  // Several threads in one trace, each line led by its thread's id, in the order strace saw
  // them (an injection still counts per thread).
  Attached(const std::string& dir, const std::vector<pid_t>& tids, const std::vector<std::string>& options,
           const std::string& trace) {
    REQUIRE(!tids.empty());
    std::vector<std::string> args = options;
    for (const char* a : {"-qq", "-o"}) args.push_back(a);
    args.push_back(trace);
    for (pid_t tid : tids) {
      REQUIRE_MESSAGE(tid > 0, "no thread to attach to");
      args.push_back("-p");
      args.push_back(std::to_string(tid));
    }
    const std::string base = dir + "/strace-" + std::to_string(tids[0]);
    pid_ = harness::detail::spawn(strace_path(), args, harness::detail::build_environment({}), dir, base + ".out",
                                  base + ".err");
    REQUIRE(pid_ > 0);
    // Attached once the kernel names strace each thread's tracer; then a moment for strace to
    // stop the threads and set their options before the workload wakes them.
    const std::string tracer = "TracerPid:\t" + std::to_string(pid_) + "\n";
    auto deadline = Clock::now() + milliseconds(10000);
    for (pid_t tid : tids) {
      const std::string status = "/proc/" + std::to_string(tid) + "/status";
      while (read_file(status).find(tracer) == std::string::npos) {
        REQUIRE_MESSAGE(Clock::now() < deadline, "strace did not attach to " << tid << ": " << read_file(base + ".err"));
        std::this_thread::sleep_for(milliseconds(1));
      }
    }
    std::this_thread::sleep_for(milliseconds(30));
  }
  ~Attached() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  Attached(const Attached&) = delete;
  Attached& operator=(const Attached&) = delete;
  // Waits for strace to end, which it does when its thread exits: the trace is then whole.
  void finish(milliseconds timeout = milliseconds(10000)) {
    if (pid_ <= 0) return;
    auto s = harness::detail::wait_for_exit(pid_, Clock::now() + timeout);
    CHECK_MESSAGE(s.has_value(), "strace did not end after its thread");
    if (!s) ::kill(pid_, SIGKILL), ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

// The options that inject `err` into the `when`th call of `name` (and trace only that call:
// strace 6.1 does not inject with -e trace=none).
inline std::vector<std::string> injecting(const std::string& name, const std::string& err, int when) {
  return {"-y", "-s", "120", "-e", "trace=" + name, "-e",
          "inject=" + name + ":error=" + err + ":when=" + std::to_string(when)};
}

// The thread that makes the blob files and index records: the store thread under SYNC=always
// (after the confirmation), the loop's, the server's main thread, under SYNC=none.
inline pid_t making_thread(pid_t server, const std::string& sync) {
  return sync == "always" ? thread_named(server, "store") : server;
}

// The path a call's first argument names (a descriptor's -y path, or a quoted path), with the
// test's directory shown as DIR.
inline std::string path_arg(const strace::Call& c, size_t i = 0) {
  if (c.args.size() <= i) return {};
  if (auto s = strace::string_arg(c.args[i])) return *s;
  return strace::fd_path(c.args[i]);
}

// The path an *at() call names (its argument `i`, after the directory descriptor), made whole
// when it is relative to the descriptor (-y shows the descriptor's path: "3</x/blobs>").
inline std::string at_path_arg(const strace::Call& c, size_t i = 1) {
  std::string p = path_arg(c, i);
  if (p.empty() || p[0] == '/' || i == 0 || c.args.size() <= i - 1) return p;
  const std::string dir = strace::fd_path(c.args[i - 1]);
  return dir.empty() || dir[0] != '/' ? p : dir + "/" + p;
}

// What a call concerns, the same from run to run: its name and the path it names or writes,
// from the store's directories on ("pwrite64 /leveldb/index"); the log for stdout.
inline std::string call_key(const strace::Call& c) {
  std::string path;
  if (c.name == "openat" || c.name == "newfstatat" || c.name == "unlinkat" || c.name == "mkdirat") path = at_path_arg(c, 1);
  else path = path_arg(c, 0);
  if (!c.args.empty() && strace::string_arg(c.args[0]) == std::nullopt) {
    const long fd = static_cast<long>(strace::int_arg(c.args[0]));
    if (fd == 1 || fd == 2) path = fd == 1 ? "stdout" : "stderr";
  }
  size_t first = std::string::npos;
  for (const char* dir : {"/blobs", "/leveldb"}) first = std::min(first, path.find(dir));
  return c.name + " " + (first == std::string::npos ? path : path.substr(first));
}

inline std::string shown(std::string text, const std::string& dir) {
  for (size_t d; (d = text.find(dir)) != std::string::npos;) text.replace(d, dir.size(), "DIR");
  return text;
}

inline bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
inline bool is_journal(const std::string& p) { return ends_with(p, "/leveldb/journal"); }
inline bool is_index(const std::string& p) { return ends_with(p, "/leveldb/index"); }
inline bool is_blob_tmp(const std::string& p) { return p.find("/blobs/tmp/") != std::string::npos; }
// A blob under its final name: .../blobs/<2 hex>/<62 hex>.
inline bool is_blob_final(const std::string& p) {
  const size_t at = p.rfind("/blobs/");
  return at != std::string::npos && p.size() == at + 7 + 2 + 1 + 62 && p[at + 9] == '/' &&
         p.compare(at + 7, 3, "tmp") != 0;
}
// A blob file being written: a temp file (SYNC=none, and rewrites) or one under its name (the
// store thread creates new blobs there).
inline bool is_blob_file(const std::string& p) { return is_blob_tmp(p) || is_blob_final(p); }

// The calls of a trace, with the one thread that answers clients told apart.
struct Trace {
  std::vector<strace::Call> calls;
  long main_tid = 0;
};
inline Trace read_trace(const std::string& text) {
  Trace t;
  t.calls = strace::parse(text);
  if (!t.calls.empty()) t.main_tid = t.calls.front().tid;
  return t;
}
// A string argument's bytes, or those strace showed of it when -s cut it short.
inline std::string text_of(const std::string& arg) {
  if (strace::truncated(arg)) return strace::string_arg(arg.substr(0, arg.size() - 3)).value_or("");
  return strace::string_arg(arg).value_or("");
}
inline bool is_reply(const strace::Call& c) {
  return c.name == "sendto" && c.args.size() >= 2 && text_of(c.args[1]).find("{\"id\":") != std::string::npos;
}

// ---------------------------------------------------------------------------------------------
// The dry run: which write-path calls the workload makes, and in which batch.

struct Call {
  std::string name;       // system call
  int occurrence = 0;     // 1-based, counted per name in the thread that answers clients (strace counts per thread)
  size_t batch = 0;       // 1-based batch whose commit made it
  std::string what;       // the call, shortened, with DIR for the test's directory
  long result = -1;       // what it returned in the dry run
  std::string target;     // the path it names or the path of its fd
  std::string key;        // call_key()
  std::string thread;     // SYNC=always, a store_calls entry: the thread that made it ("store", "checkpoint")
  enum class Expect { Fail, Succeed, Either } expect = Expect::Either;
};

struct DryRun {
  // The loop thread's write-path calls of batches 1..kFaultBatches, counted from the attach
  // (after "listening"), as an injection attached the same way counts them.
  std::vector<Call> calls;
  // SYNC=always: the store thread's write-path calls while it made the blob files and index
  // records of batches 1..kFaultBatches, and the checkpoint thread's for the checkpoints among
  // them, each counted in its thread from the attach; `batch` is the batch whose index append
  // they precede.
  std::vector<Call> store_calls;
  std::string trace, store_trace;
};

// A dry-run call's fields but its expectation.
inline Call dry_call(const strace::Call& c, int occurrence, size_t batch, const std::string& dir) {
  Call call;
  call.name = c.name;
  call.occurrence = occurrence;
  call.batch = batch;
  call.result = c.result;
  call.target = c.name == "openat" && c.args.size() >= 2 ? at_path_arg(c, 1) : path_arg(c);
  call.key = call_key(c);
  std::string args;
  for (const auto& a : c.args) args += (args.empty() ? "" : ", ") + a.substr(0, 70);
  call.what = shown(c.name + "(" + args + ") = " + std::to_string(c.result), dir);
  return call;
}

// The workload once, with strace attached to the loop's thread and (SYNC=always) to the store
// thread as the fault runs attach it, each to a trace of its own.
inline DryRun dry_run(const std::string& sync) {
  DryRun dry;
  TempDir dir;
  const std::string trace = dir / "dry.trace", store_trace = dir / "dry-store.trace";
  const bool always = sync == "always";
  pid_t store_tid = 0;
  {
    Wrapped s(dir.path(), {}, server_env(dir.path(), sync));
    REQUIRE_MESSAGE(s.start(), "server: " << s.out() << s.err());
    const std::vector<std::string> options = {"-y", "-s", "300", "-e", kTraced};
    Attached loop(dir.path(), s.server_pid(), options, trace);
    std::optional<Attached> store;  // and the checkpoint thread, in the same trace
    if (always) {
      store_tid = thread_named(s.server_pid(), "store");
      store.emplace(dir.path(), std::vector<pid_t>{store_tid, thread_named(s.server_pid(), "checkpoint")}, options,
                    store_trace);
    }
    Observed o = drive(s.port(), workload());
    for (int ok : o.batch) REQUIRE(ok == 1);
    s.signal_server(SIGTERM);
    REQUIRE(s.wait(milliseconds(10000)) == 0);
    loop.finish();
    if (store) store->finish();
  }
  dry.trace = read_file(trace);
  std::map<std::string, int> count;
  size_t replies = 0;  // reply sends to the writer seen so far
  for (const auto& c : strace::parse(dry.trace)) {
    const int occurrence = ++count[c.name];
    const std::string path = path_arg(c);
    if (c.name == "sendto") {
      if (is_reply(c)) replies++;
      continue;
    }
    if (c.name == "recvfrom" || replies >= kFaultBatches) continue;
    Call call = dry_call(c, occurrence, replies + 1, dir.path());
    const long fd = c.args.empty() ? -1 : static_cast<long>(strace::int_arg(c.args[0]));
    const bool o_directory = c.name == "openat" && c.args.size() >= 3 && c.args[2].find("O_DIRECTORY") != std::string::npos;
    if (c.name == "openat")
      call.expect = is_blob_tmp(call.target) || o_directory ? Call::Expect::Fail : Call::Expect::Either;
    else if (c.name == "write" || c.name == "pwrite64")
      call.expect = fd == 1 || fd == 2 ? Call::Expect::Succeed
                    : is_blob_tmp(path) || is_index(path) || is_journal(path) ? Call::Expect::Fail
                                                                             : Call::Expect::Either;
    else if (c.name == "close")
      call.expect = is_blob_tmp(path) ? Call::Expect::Fail : Call::Expect::Succeed;
    else if (c.name == "fsync" || c.name == "fdatasync" || c.name == "rename" || c.name == "renameat" ||
             c.name == "renameat2" || c.name == "mkdir" || c.name == "mkdirat" || c.name == "syncfs")
      call.expect = Call::Expect::Fail;
    else
      call.expect = Call::Expect::Either;  // newfstatat (exists?): a failure may only cost a rewrite
    dry.calls.push_back(call);
  }
  REQUIRE(replies >= kFaultBatches);
  if (!always) return dry;
  dry.store_trace = read_file(store_trace);
  std::map<std::pair<long, std::string>, int> store_count;  // per thread and name
  size_t store_appends = 0;  // index appends of the store thread so far
  std::set<long> writing;    // its descriptors open for writing
  for (const auto& c : strace::parse(dry.store_trace)) {
    const int occurrence = ++store_count[{c.tid, c.name}];
    const std::string path = path_arg(c);
    const long fd = c.args.empty() ? -1 : static_cast<long>(strace::int_arg(c.args[0]));
    if (c.name == "openat" && c.result >= 0 && c.args.size() >= 3 && c.args[2].find("O_RDONLY") == std::string::npos)
      writing.insert(c.result);
    const bool closes_written = c.name == "close" && writing.erase(fd) > 0;
    // Its write to the loop's pipe (a checkpoint finished) is not a store's write.
    if (store_appends >= kFaultBatches || (c.name == "write" && !is_blob_file(path))) continue;
    Call call = dry_call(c, occurrence, store_appends + 1, dir.path());
    call.thread = c.tid == store_tid ? "store" : "checkpoint";
    // Every call is a step of making the entries durable (a checkpoint's: of retiring them from
    // the journal), a failed lookup of a stored blob too (it must not be taken for "absent");
    // but the close of a blob read to compare it.
    call.expect = c.name == "close" && !closes_written ? Call::Expect::Either : Call::Expect::Fail;
    if (c.name == "pwrite64" && is_index(path)) store_appends++;
    dry.store_calls.push_back(call);
  }
  REQUIRE(store_appends >= kFaultBatches);
  return dry;
}

inline const char* expect_name(Call::Expect e) {
  return e == Call::Expect::Fail ? "must fail its batch" : e == Call::Expect::Succeed ? "must not fail" : "either";
}

// Checks the batch outcomes of a run with one fault in `c`.
inline void check_outcome(const Observed& o, const Call& c) {
  REQUIRE(o.batch.size() == workload().size());
  for (size_t b = 0; b < o.batch.size(); b++) {
    INFO("batch " << b + 1 << (o.first_error[b].empty() ? "" : ", error: " + o.first_error[b]));
    CHECK_MESSAGE(o.batch[b] != -1, "a batch partly confirmed and partly refused");
    bool faulted = b + 1 == c.batch;
    if (!faulted || c.expect == Call::Expect::Succeed)
      CHECK_MESSAGE(o.batch[b] == 1, "a batch without the fault was refused");
    else if (c.expect == Call::Expect::Fail)
      CHECK_MESSAGE(o.batch[b] == 0, "the batch whose " << c.name << " failed was confirmed");
  }
}

inline std::string inject_error(const std::string& name) {
  if (name == "fsync" || name == "fdatasync" || name == "syncfs" || name == "close" || name == "newfstatat")
    return "EIO";
  return "ENOSPC";
}

// The calls strace marked (INJECTED) in a trace of one thread, by call_key().
inline std::vector<std::string> injected_calls(const std::string& trace_text) {
  std::vector<std::string> out;
  for (const auto& c : strace::parse(trace_text))
    if (c.injected) out.push_back(call_key(c));
  return out;
}

// What the runs of a fault matrix did, for its closing message.
struct FaultTally {
  std::map<std::string, int> runs;  // per syscall
  int refused_batches = 0;
  int sync_failures = 0, confirmed_after_failed_sync = 0;
};

// One run of the workload with the call `c` of the dry run failing: the outcome of each batch
// is the one its expectation says (check_outcome), the files stay whole meanwhile, the fault hit
// that very call in the thread that answers clients, and a restart without injection has
// exactly the confirmed writes.
inline void one_fault_run(const std::string& sync, const Call& c, FaultTally& t) {
  std::string err = inject_error(c.name);
  std::string ctx = "SYNC=" + sync + ": " + c.name + " #" + std::to_string(c.occurrence) + " -> " + err +
                    " (batch " + std::to_string(c.batch) + ", " + expect_name(c.expect) + "): " + c.what;
  INFO(ctx);
  TempDir dir;
  Observed o;
  std::string trace = dir / "inject.trace";
  {
    Wrapped s(dir.path(), {}, server_env(dir.path(), sync));
    REQUIRE_MESSAGE(s.start(), "did not start: " << harness::detail::tail(s.out() + s.err(), 800));
    Attached strace(dir.path(), s.server_pid(), injecting(c.name, err, c.occurrence), trace);
    o = drive(s.port(), workload(), files_stay_whole(dir.path(), sync));
    check_outcome(o, c);
    CHECK_MESSAGE(s.running(), "the server exited after the fault");
    s.signal_server(SIGTERM);
    CHECK(s.wait(milliseconds(10000)) == 0);
    CHECK(lines_with(s.log_lines(), kInfo, "\"msg\":\"stopped\"").size() == 1);
    strace.finish();
  }
  // The fault did happen, once, at the call the dry run saw (in the loop's thread: strace
  // followed no other).
  auto injected = injected_calls(read_file(trace));
  REQUIRE_MESSAGE(injected.size() == 1, injected.size() << " calls injected");
  CHECK_MESSAGE(injected[0] == c.key, "the injected call differs from the dry run's: " << injected[0]);
  t.runs[c.name]++;
  for (int b : o.batch) t.refused_batches += b == 0;
  if (c.name == "fsync" || c.name == "fdatasync" || c.name == "syncfs") {
    t.sync_failures++;
    if (c.batch >= 1 && c.batch <= o.batch.size() && o.batch[c.batch - 1] != 0) t.confirmed_after_failed_sync++;
  }
  restart_and_verify(dir.path(), sync, o, ctx);
}

// The fault matrix of SYNC=`sync`: the dry run's write-path calls show the commit order, batch
// for batch (SYNC=always: one journal append and its fdatasync before anything else is written;
// then the blobs through temp files and one index append; no other sync), then each call fails
// once (one_fault_run), and no batch whose sync failed is confirmed.
// One run with a fault in the store thread's `c` (SYNC=always): the writes before it stay
// confirmed, the batches confirmed are a prefix, a failure that matters stops the store (every
// later write refused until restart, exit 1 at SIGTERM), and the restart has every confirmed
// entry (the journal kept them).
inline void one_store_fault_run(const Call& c, FaultTally& t) {
  std::string err = inject_error(c.name);
  std::string ctx = "SYNC=always, " + c.thread + " thread: " + c.name + " #" + std::to_string(c.occurrence) + " -> " + err +
                    " (before batch " + std::to_string(c.batch) + "'s index append, " + expect_name(c.expect) + "): " + c.what;
  INFO(ctx);
  TempDir dir;
  Observed o;
  std::string trace = dir / "inject.trace";
  std::optional<int> status;
  {
    Wrapped s(dir.path(), {}, server_env(dir.path(), "always"));
    REQUIRE_MESSAGE(s.start(), "did not start: " << harness::detail::tail(s.out() + s.err(), 800));
    Attached strace(dir.path(), thread_named(s.server_pid(), c.thread), injecting(c.name, err, c.occurrence), trace);
    o = drive(s.port(), workload(), files_stay_whole(dir.path(), "always", true));
    expect_confirmed_prefix(o);
    CHECK_MESSAGE(s.running(), "the server exited after the fault");
    s.signal_server(SIGTERM);
    status = s.wait(milliseconds(10000));
    REQUIRE(status.has_value());
    if (c.expect == Call::Expect::Fail) CHECK_MESSAGE(*status == 1, "status " << *status << " after a failed " << c.name);
    else CHECK((*status == 0 || *status == 1));
    CHECK(lines_with(s.log_lines(), kInfo, "\"msg\":\"stopped\"").size() + (*status == 1 ? 1 : 0) >= 1);
    strace.finish();
  }
  // The fault did happen, once, in that thread (strace followed no other), at the call the dry
  // run saw.
  auto injected = injected_calls(read_file(trace));
  REQUIRE_MESSAGE(injected.size() == 1, injected.size() << " calls injected");
  CHECK_MESSAGE(injected[0] == c.key, "the injected call differs from the dry run's: " << injected[0]);
  t.runs[c.thread + " " + c.name]++;
  for (int b : o.batch) t.refused_batches += b == 0;
  restart_and_verify(dir.path(), "always", o, ctx);
}

inline void fault_matrix(const std::string& sync) {
  DryRun dry = dry_run(sync);
  const std::vector<Call>& calls = dry.calls;
  const bool always = sync == "always";
  // The calls that make the blob files and the index: the loop's under SYNC=none, the store
  // thread's under SYNC=always (after the confirmation).
  const std::vector<Call>& making = always ? dry.store_calls : dry.calls;
  // The log's lines (writes to stdout) are no step of a commit: counted apart.
  auto is_log = [](const Call& c) { return c.key == "write stdout" || c.key == "write stderr"; };
  std::map<std::string, int> per_call, per_making;
  for (const auto& c : calls)
    if (!is_log(c)) per_call[c.name]++;
  for (const auto& c : making) per_making[c.name]++;
  // Every step of the commit order appears in the trace.
  CHECK(per_making["openat"] > 0);
  CHECK(per_making["write"] > 0);
  // New blobs: the store thread's are created under their names, the loop's renamed there.
  CHECK((per_making["rename"] > 0) == !always);
  CHECK(per_making["mkdir"] > 0);
  CHECK(per_making["pwrite64"] >= static_cast<int>(kFaultBatches));
  // No sync of any file but the journal, and no syncfs, in the thread that answers clients;
  // under SYNC=always it writes nothing but the journal.
  CHECK(per_call["fsync"] == 0);
  CHECK(per_call["syncfs"] == 0);
  CHECK(per_call["fdatasync"] == (always ? static_cast<int>(kFaultBatches) : 0));
  if (always) {
    for (const std::string name : {"openat", "rename", "mkdir", "write"}) CHECK_MESSAGE(per_call[name] == 0, name);
    CHECK(per_call["pwrite64"] == static_cast<int>(kFaultBatches));
  }
  // Per batch: SYNC=always appends all its records to the journal in one pwrite64 and syncs the
  // journal once, and the store thread then makes its blobs and appends its index records in
  // one write. SYNC=none: the blobs and the index append. No fsync, no syncfs.
  const auto fresh = new_blobs_per_batch(workload());
  REQUIRE(fresh[kBigBatch - 1] >= kBigNew);
  for (size_t b = 1; b <= kFaultBatches; b++) {
    const Batch& batch = workload()[b - 1];
    INFO("SYNC=" << sync << ", batch " << b << " (" << batch.size() << " entries, " << fresh[b - 1] << " new blobs)");
    std::map<std::string, int> fail;  // making calls that must fail, per name
    std::vector<const Call*> in_batch, made;
    for (const auto& c : calls)
      if (c.batch == b && !is_log(c)) in_batch.push_back(&c);
    for (const auto& c : making)
      if (c.batch == b) {
        made.push_back(&c);
        if (c.expect == Call::Expect::Fail) fail[c.name]++;
      }
    std::vector<const Call*> journal_appends, index_appends, syncs;
    for (const Call* c : in_batch) {
      if (c->name == "pwrite64" && is_journal(c->target)) journal_appends.push_back(c);
      if (c->name == "fdatasync") syncs.push_back(c);
    }
    for (const Call* c : made)
      if (c->name == "pwrite64" && is_index(c->target)) index_appends.push_back(c);
    std::string listing;
    for (const Call* c : made) listing += "\n  " + c->what;
    REQUIRE_MESSAGE(index_appends.size() == 1, "the batch's calls:" << listing);
    CHECK_MESSAGE(index_appends[0]->result == static_cast<long>(batch.size() * kRecordSize),
                  "the index append does not hold all the batch's records: " << index_appends[0]->what);
    if (always) {
      REQUIRE(journal_appends.size() == 1);
      REQUIRE(syncs.size() == 1);
      CHECK(in_batch.size() == 2);  // the journal's append and sync, and nothing else
      CHECK_MESSAGE(journal_appends[0]->result == static_cast<long>(journal_bytes_of(batch)),
                    "the journal append does not hold all the batch's records: " << journal_appends[0]->what);
      CHECK(is_journal(syncs[0]->target));
      CHECK(journal_appends[0]->expect == Call::Expect::Fail);
      CHECK(syncs[0]->expect == Call::Expect::Fail);
    } else {
      CHECK(journal_appends.empty());
      CHECK(syncs.empty());
    }
    if (b == kBigBatch) {
      // Every new blob's file opened, written and closed (and under SYNC=none renamed): ENOSPC
      // runs on each.
      CHECK(fail["openat"] >= static_cast<int>(kBigNew));
      CHECK(fail["write"] >= static_cast<int>(kBigNew));
      CHECK(fail["close"] >= static_cast<int>(kBigNew));
      CHECK(fail["rename"] == (always ? 0 : static_cast<int>(kBigNew)));
      CHECK(fail["mkdir"] >= 2);
    }
  }
  FaultTally t;
  auto t0 = Clock::now();
  for (const auto& c : calls) one_fault_run(sync, c, t);
  if (always)
    for (const auto& c : dry.store_calls) one_store_fault_run(c, t);
  std::ostringstream m;
  m << "SYNC=" << sync << ": " << calls.size() + (always ? dry.store_calls.size() : 0) << " fault runs (";
  for (auto& [name, n] : t.runs) m << name << " " << n << ", ";
  m << "), " << t.refused_batches << " batches refused, " << t.sync_failures << " failed syncs, "
    << t.confirmed_after_failed_sync << " confirmations after a failed sync; "
    << std::chrono::duration<double>(Clock::now() - t0).count() << " s";
  MESSAGE(m.str());
  CHECK(t.confirmed_after_failed_sync == 0);
}

// ---------------------------------------------------------------------------------------------
// Short writes from the LD_PRELOAD shim, and the pieces of the double faults.

// test/short_write_shim.so as the Makefile builds it, else a private build of the same source.
inline std::string shim_library() {
  static TempDir build_dir;
  static const std::string path = [] {
    std::string made = (std::filesystem::current_path() / "test/short_write_shim.so").string();
    std::string source = (std::filesystem::current_path() / "test/short_write_shim.c").string();
    if (exists(made) && (!exists(source) || std::filesystem::last_write_time(made) >=
                                                 std::filesystem::last_write_time(source)))
      return made;
    std::string out = build_dir / "short_write_shim.so";
    std::string cmd = "${CC:-cc} -shared -fPIC -O2 -o '" + out + "' '" + source + "' -ldl";
    return std::system(cmd.c_str()) == 0 ? out : std::string();
  }();
  REQUIRE_MESSAGE(!path.empty(), "cannot find or build test/short_write_shim.so (make test/short_write_shim.so)");
  return path;
}

// Every batch of `o` confirmed but batch `refused_batch` (1-based; 0: none), refused whole.
inline void expect_only_refused(const Observed& o, size_t refused_batch) {
  for (size_t b = 0; b < o.batch.size(); b++) {
    INFO("batch " << b + 1 << (o.first_error[b].empty() ? "" : ", error: " + o.first_error[b]));
    CHECK(o.batch[b] == (b + 1 == refused_batch ? 0 : 1));
  }
}

// The workload's first `n` batches.
inline std::vector<Batch> first_batches(size_t n) {
  auto all = workload();
  all.resize(n);
  return all;
}

// The main thread's nth call of `name` (1-based) whose first argument's path satisfies `pick`,
// in batch `batch` of the dry run: its occurrence number, or -1.
inline int occurrence_in_batch(const DryRun& dry, const std::string& name, size_t batch,
                               const std::function<bool(const std::string&)>& pick, int nth = 1) {
  int hits = 0;
  for (const auto& c : dry.calls)
    if (c.batch == batch && c.name == name && pick(c.target) && ++hits == nth) return c.occurrence;
  return -1;
}

// One write, answered: its reply line.
inline std::string write_line(int port, const std::string& id, const std::string& entry) {
  Client c(port);
  c.send_line("{\"id\":\"" + id + "\",\"entry\":" + entry + "}");
  return c.read_line();
}

// ---------------------------------------------------------------------------------------------
// The commit order, read from a trace, step for step.

inline uint32_t get32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = v << 8 | static_cast<unsigned char>(s[at + i]);
  return v;
}
inline uint64_t get64(const std::string& s, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | static_cast<unsigned char>(s[at + i]);
  return v;
}
inline std::string to_hex(const std::string& raw) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) out += {digits[c >> 4], digits[c & 15]};
  return out;
}

// A journal record as the journal's reader checks it (journal.hpp): its masked CRC-32C over
// everything after it, its length, generation, index, the entry's SHA-256 and bytes.
struct Record {
  uint64_t generation = 0, index = 0;
  std::string hash_hex, bytes;
};
// The whole records at the start of `data`, back to back, until one is not whole.
inline std::vector<Record> records_in(const std::string& data) {
  std::vector<Record> out;
  size_t at = 0;
  while (data.size() - at >= Journal::kRecordHeaderBytes) {
    const uint32_t n = get32(data, at + 4);
    if (data.size() - at - Journal::kRecordHeaderBytes < n) break;
    const size_t size = Journal::kRecordHeaderBytes + n;
    uint32_t crc = crc32c(0, data.data() + at + 4, size - 4);
    crc = ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
    if (crc != get32(data, at)) break;
    out.push_back({get64(data, at + 8), get64(data, at + 16), to_hex(data.substr(at + 24, 32)),
                   data.substr(at + Journal::kRecordHeaderBytes, n)});
    at += size;
  }
  return out;
}

// A batch of 9 entries of 3 KB (27.5 KB of records: one commit): after the workload's first
// batches, more than half a 60 KB side is used, so a checkpoint starts after it.
inline Batch half_a_side() {
  Batch b;
  for (int i = 0; i < 9; i++) {
    Write w;
    w.id = "half-" + std::to_string(i);
    w.canonical = "{\"half\":" + std::to_string(i) + ",\"p\":\"" + std::string(2980, 'h') + "\"}";
    w.line = "{\"id\":\"" + w.id + "\",\"entry\":" + w.canonical + "}";
    b.push_back(w);
  }
  return b;
}

// Checks, for each batch of the trace but the last, in the thread that answers clients: under
// SYNC=always, one journal append holding exactly the batch's records (whole, in order, with
// their indexes, hashes and bytes), then its fdatasync, before anything else is written; each
// new blob opened under BLOBS/tmp, written, closed, renamed into BLOBS/hh/ (after a mkdir of a
// new hh/), never synced; one index append; no other sync; then the confirmations. Under
// SYNC=none the same without the journal and without any sync. And in the checkpoint thread
// (SYNC=always): syncfs of BLOBS, then a side's header (4096 bytes at a side's start) and an
// fdatasync of the journal, nothing else.
inline void check_commit_order(const std::string& text, const std::string& sync, const std::string& dir,
                               const std::vector<Batch>& sent) {
  const bool always = sync == "always";
  Trace t = read_trace(text);
  const std::string blobs = dir + "/blobs", tmp = dir + "/blobs/tmp/";
  std::vector<std::vector<const strace::Call*>> batches(1);
  std::vector<const strace::Call*> checkpoint;
  bool listening = false;
  int startup_syncfs = 0;
  bool batch_sent = false;  // the current batch's confirmation is out
  // The store thread (SYNC=always): its checkpoints apart, its calls grouped by index append,
  // one group per batch (the blobs it made for the batch, then the batch's index records).
  std::vector<std::vector<const strace::Call*>> made(1);
  for (const auto& c : t.calls) {
    if (c.tid != t.main_tid) {
      const std::string p = path_arg(c);
      if (c.name == "write" && !is_blob_file(p)) continue;  // its write to the loop's pipe
      if (c.name == "syncfs" || (is_journal(p) && (c.name == "pwrite64" || c.name == "fdatasync"))) {
        checkpoint.push_back(&c);
        continue;
      }
      made.back().push_back(&c);
      if (c.name == "pwrite64" && is_index(p)) made.emplace_back();
      continue;
    }
    startup_syncfs += c.name == "syncfs" && !listening;
    if (c.name == "write" && strace::int_arg(c.args.at(0)) == 1) {
      listening = listening || text_of(c.args.at(1)).find("\"listening\"") != std::string::npos;
      continue;
    }
    if (!listening || c.name == "recvfrom") continue;
    // A batch ends with its sends: the writer's confirmation and the readers' entries, in the
    // order the pass flushes them. The next batch begins at the first other call.
    if (batch_sent && c.name != "sendto") {
      batches.emplace_back();
      batch_sent = false;
    }
    batches.back().push_back(&c);
    batch_sent = batch_sent || is_reply(c);
  }
  CHECK_MESSAGE(startup_syncfs == (always ? 2 : 0), "syncfs calls at startup: " << startup_syncfs);
  const auto fresh = new_blobs_per_batch(sent);
  REQUIRE(batches.size() >= sent.size());
  size_t checked = 0;
  uint64_t first_index = 1;
  if (always) REQUIRE(made.size() >= sent.size());
  for (size_t b = 0; b + 1 < sent.size(); b++) {
    // The batch's calls in the thread that answers clients, and those that make its blobs and
    // index records: the same under SYNC=none, the store thread's under SYNC=always.
    const auto& main_ev = batches[b];
    const auto& ev = always ? made[b] : batches[b];
    INFO("batch " << b + 1 << " (" << sent[b].size() << " entries, " << fresh[b] << " new blobs)");
    auto pos = [&](auto pred, size_t from = 0) {
      for (size_t i = from; i < ev.size(); i++)
        if (pred(*ev[i])) return static_cast<long>(i);
      return -1L;
    };
    auto named = [&](const std::string& name, const std::function<bool(const std::string&)>& path) {
      return [name, path](const strace::Call& c) { return c.name == name && path(path_arg(c)); };
    };
    auto mpos = [&](auto pred, size_t from = 0) {
      for (size_t i = from; i < main_ev.size(); i++)
        if (pred(*main_ev[i])) return static_cast<long>(i);
      return -1L;
    };
    const long journal = mpos(named("pwrite64", is_journal));
    const long journal_sync = mpos(named("fdatasync", is_journal));
    const long append = pos(named("pwrite64", is_index));
    REQUIRE_MESSAGE(append >= 0, "no index append for the batch");
    CHECK_MESSAGE(ev[append]->result == static_cast<long>(sent[b].size() * kRecordSize), "the index append does not hold the batch's records");
    CHECK_MESSAGE(pos(named("pwrite64", is_index), append + 1) < 0, "more than one index append in one batch");
    // What the confirmation waits for: the journal's sync (SYNC=always), the index append
    // (SYNC=none). The first confirmation or entry sent to a reader comes after it. (A batch's
    // calls end at the first confirmation; entries of the previous batch flushed to readers in
    // the same pass come after it, so they open the next batch's calls.)
    const long confirmed_after = always ? journal_sync : append;
    const long first_send = mpos([](const strace::Call& c) { return c.name == "sendto"; }, static_cast<size_t>(std::max(0L, confirmed_after + 1)));
    CHECK(first_send > confirmed_after);
    auto writes_something = [](const strace::Call& c) {
      return c.name != "sendto" && c.name != "newfstatat" && c.name != "fdatasync" &&
             !(c.name == "openat" && c.args.size() >= 3 && c.args[2].find("O_RDONLY") != std::string::npos) &&
             !(c.name == "close" && !is_blob_tmp(path_arg(c)));
    };
    long last_write = -1, last_made = -1;  // the last call that writes anything
    for (size_t i = 0; i < main_ev.size(); i++)
      if (writes_something(*main_ev[i])) last_write = static_cast<long>(i);
    for (size_t i = 0; i < ev.size(); i++)
      if (writes_something(*ev[i])) last_made = static_cast<long>(i);
    CHECK(last_write == (always ? journal : append));  // SYNC=always: the loop writes the journal alone
    CHECK(last_made == append);
    for (const auto* list : {&main_ev, &ev})
      for (const auto* c : *list) {
        CHECK_MESSAGE((c->name != "fsync" && c->name != "syncfs" && c->name != "sync"), "a sync on the commit path: " << c->name << " " << path_arg(*c));
        if (c->name == "fdatasync") CHECK_MESSAGE(is_journal(path_arg(*c)), "an fdatasync of another file than the journal: " << path_arg(*c));
      }
    if (always) {
      REQUIRE_MESSAGE(journal >= 0, "no journal append in the batch");
      REQUIRE_MESSAGE(journal_sync > journal, "the journal is not synced after its append");
      CHECK_MESSAGE(mpos(named("pwrite64", is_journal), journal + 1) < 0, "more than one journal append in one batch");
      CHECK_MESSAGE(mpos(named("fdatasync", is_journal), journal_sync + 1) < 0, "more than one journal sync in one batch");
      CHECK(main_ev[journal_sync]->result == 0);
      // Nothing is written before the journal is synced: the loop writes nothing else, and the
      // store thread begins the batch's blobs after the sync returned.
      for (long i = 0; i < journal_sync; i++)
        CHECK_MESSAGE((!writes_something(*main_ev[i]) || main_ev[i] == main_ev[journal]),
                      "before the journal's sync: " << main_ev[i]->name << " " << path_arg(*main_ev[i]));
      CHECK_MESSAGE(ev.front()->start_line > main_ev[journal_sync]->end_line,
                    "the store thread began the batch before the journal's sync returned: " << ev.front()->name);
      // The append holds exactly the batch's records: whole, in order, with their bytes.
      std::string data = strace::string_arg(main_ev[journal]->args.at(1)).value_or("");
      REQUIRE_MESSAGE(!strace::truncated(main_ev[journal]->args.at(1)), "raise strace -s");
      CHECK(data.size() == journal_bytes_of(sent[b]));
      auto records = records_in(data);
      REQUIRE_MESSAGE(records.size() == sent[b].size(), records.size() << " whole records in the append");
      for (size_t i = 0; i < records.size(); i++) {
        CHECK(records[i].index == first_index + i);
        CHECK(records[i].bytes == sent[b][i].canonical);
        CHECK(records[i].hash_hex == sha256_hex(sent[b][i].canonical));
        CHECK(records[i].generation == records[0].generation);
      }
    } else {
      CHECK_MESSAGE(journal < 0, "a journal append under SYNC=none");
      CHECK_MESSAGE(journal_sync < 0, "a journal sync under SYNC=none");
    }
    first_index += sent[b].size();
    // Each new blob, after the journal sync and before the index append, with no sync: under
    // SYNC=always created under its name by the store thread (openat O_CREAT|O_EXCL, write,
    // close: the journal holds its bytes until the checkpoint's syncfs); under SYNC=none through
    // a temp file, renamed into place.
    std::set<std::string> temps_opened, temps_renamed, created;
    for (size_t i = 0; i < ev.size(); i++) {
      const auto& c = *ev[i];
      if (c.name == "openat" && c.args.size() >= 3) {
        std::string p = at_path_arg(c, 1);
        const bool writing = c.args[2].find("O_WRONLY") != std::string::npos || c.args[2].find("O_RDWR") != std::string::npos;
        if (writing && is_blob_final(p)) {
          CHECK_MESSAGE(always, "a blob opened for writing under its final name under SYNC=none: " << p);
          CHECK_MESSAGE(c.args[2].find("O_CREAT") != std::string::npos, p);
          CHECK_MESSAGE(c.args[2].find("O_EXCL") != std::string::npos, "a blob's file opened under its name without O_EXCL: " << p);
          CHECK_MESSAGE(c.args[2].find("O_TRUNC") == std::string::npos, p);
          CHECK(static_cast<long>(i) < append);
          // A blob stored before: its name is taken, and it is looked at, not written.
          if (c.result < 0) {
            CHECK_MESSAGE(c.error == "EEXIST", c.error << " creating " << p);
            continue;
          }
          // Its life: write(s), then close, all before the index append; no sync.
          long wrote = -1, closed = -1;
          for (size_t j = i + 1; j < ev.size(); j++) {
            const auto& x = *ev[j];
            if (x.name == "write" && path_arg(x) == p && closed < 0) wrote = static_cast<long>(j);
            if (x.name == "close" && path_arg(x) == p && closed < 0) closed = static_cast<long>(j);
          }
          CHECK_MESSAGE(wrote > static_cast<long>(i), "blob not written after its creation: " << p);
          CHECK_MESSAGE(closed > wrote, "blob not closed after its write: " << p);
          CHECK_MESSAGE(closed < append, "blob closed after the index append: " << p);
          created.insert(p);
          checked++;
        }
        if (p.rfind(tmp, 0) == 0) {
          CHECK_MESSAGE(!always, "a temp blob file under SYNC=always: " << p);
          temps_opened.insert(p);
          CHECK_MESSAGE(c.args[2].find("O_CREAT") != std::string::npos, p);
          CHECK_MESSAGE(c.args[2].find("O_TRUNC") != std::string::npos, p);
        }
      }
      if (c.name != "rename") continue;
      REQUIRE(c.args.size() >= 2);
      const std::string from = strace::string_arg(c.args[0]).value_or(""), to = strace::string_arg(c.args[1]).value_or("");
      temps_renamed.insert(from);
      CHECK(from.rfind(tmp, 0) == 0);
      CHECK(to.rfind(blobs + "/", 0) == 0);
      CHECK(c.result == 0);
      CHECK(static_cast<long>(i) < append);
      // The temp file's life: open, write(s), close, all before the rename; no sync.
      long opened = -1, wrote = -1, closed = -1;
      for (size_t j = 0; j < i; j++) {
        const auto& x = *ev[j];
        if (x.name == "openat" && x.args.size() >= 2 && strace::string_arg(x.args[1]).value_or("") == from) opened = static_cast<long>(j);
        if (x.name == "write" && path_arg(x) == from) wrote = static_cast<long>(j);
        if (x.name == "close" && path_arg(x) == from) closed = static_cast<long>(j);
      }
      CHECK_MESSAGE(opened >= 0, "blob not written through a temp file: " << to);
      CHECK_MESSAGE(wrote > opened, "temp blob not written before the rename: " << to);
      CHECK_MESSAGE(closed > wrote, "temp blob not closed before the rename: " << to);
      checked++;
    }
    // Every new blob of the batch, and only those, made so.
    if (always) {
      CHECK_MESSAGE(created.size() == fresh[b], created.size() << " blob files created");
      CHECK(temps_opened.empty());
      CHECK(temps_renamed.empty());
    } else {
      CHECK_MESSAGE(temps_opened.size() == fresh[b], temps_opened.size() << " temp files opened");
      CHECK(temps_renamed == temps_opened);
      CHECK(created.empty());
    }
  }
  size_t all_new = 0;
  for (size_t b = 0; b + 1 < sent.size(); b++) all_new += fresh[b];
  CHECK(checked == all_new);  // every new blob was followed through
  // The checkpoint thread: only syncfs of BLOBS, then a header and an fdatasync of the journal.
  if (!always) {
    CHECK_MESSAGE(checkpoint.empty(), "another thread made calls under SYNC=none");
    return;
  }
  REQUIRE_MESSAGE(checkpoint.size() >= 3, "no checkpoint in the trace (the half-a-side batch should start one)");
  size_t checkpoints = 0;
  for (size_t i = 0; i < checkpoint.size(); i++) {
    const auto& c = *checkpoint[i];
    INFO("checkpoint thread, call " << i + 1 << ": " << c.name << " " << path_arg(c));
    CHECK((c.name == "syncfs" || c.name == "pwrite64" || c.name == "fdatasync"));
    if (c.name != "syncfs") continue;
    checkpoints++;
    CHECK(path_arg(c) == blobs);
    CHECK(c.result == 0);
    REQUIRE(i + 2 < checkpoint.size());
    const auto& header = *checkpoint[i + 1];
    const auto& sync2 = *checkpoint[i + 2];
    CHECK(header.name == "pwrite64");
    CHECK(is_journal(path_arg(header)));
    CHECK(header.result == 4096);
    const long long at = strace::int_arg(header.args.at(3));
    CHECK_MESSAGE((at == 0 || at == static_cast<long long>(kSmallJournalBytes / 2)), "a header written at " << at);
    CHECK(strace::string_arg(header.args.at(1)).value_or("").rfind("TLSJRNL1", 0) == 0);
    CHECK(sync2.name == "fdatasync");
    CHECK(is_journal(path_arg(sync2)));
  }
  CHECK(checkpoints >= 1);
}

// For every write confirmed in `text` (a reply sent by the thread that answers clients): the
// last recvfrom of that thread that brought its id, and the reply, have nothing between them
// (in that thread) that syncs anything but the journal: no syncfs, no sync, no fsync, no
// fdatasync of another file. Returns how many confirmations were checked.
inline size_t check_no_foreign_sync_before_confirmation(const std::string& text) {
  Trace t = read_trace(text);
  std::map<std::string, size_t> arrived;  // id -> position of the recvfrom that brought it
  std::vector<const strace::Call*> main;
  for (const auto& c : t.calls)
    if (c.tid == t.main_tid) main.push_back(&c);
  size_t checked = 0;
  for (size_t i = 0; i < main.size(); i++) {
    const auto& c = *main[i];
    if (c.name == "recvfrom" && c.result > 0 && c.args.size() >= 2) {
      std::string data = strace::string_arg(c.args[1]).value_or("");
      for (size_t at = data.find("\"id\":\""); at != std::string::npos; at = data.find("\"id\":\"", at + 1)) {
        size_t end = data.find('"', at + 6);
        if (end != std::string::npos) arrived[data.substr(at + 6, end - at - 6)] = i;
      }
      continue;
    }
    if (!is_reply(c)) continue;
    std::string data = strace::string_arg(c.args[1]).value_or("");
    for (size_t at = data.find("{\"id\":\""); at != std::string::npos; at = data.find("{\"id\":\"", at + 1)) {
      size_t end = data.find('"', at + 7);
      std::string id = data.substr(at + 7, end - at - 7);
      if (data.compare(end, 10, "\",\"index\":") != 0) continue;  // a refusal
      auto a = arrived.find(id);
      REQUIRE_MESSAGE(a != arrived.end(), "confirmation of " << id << " without its arrival in the trace");
      for (size_t j = a->second + 1; j < i; j++) {
        const auto& x = *main[j];
        const bool foreign = x.name == "syncfs" || x.name == "sync" || x.name == "fsync" ||
                             (x.name == "fdatasync" && !is_journal(path_arg(x)));
        CHECK_MESSAGE(!foreign, "between the arrival of " << id << " and its confirmation: " << x.name << " " << path_arg(x));
      }
      checked++;
    }
  }
  return checked;
}

// ---------------------------------------------------------------------------------------------
// A refused batch retried at once by its client: the retry's confirmation rests on a journal
// record of its own, synced, holding its bytes.

// For every confirmed index in `text` (SYNC=always): the thread that answers clients appended a
// whole journal record of that index holding the entry's bytes (which hash to the name the
// index file gives it), and then, with nothing written over that record in between, a
// successful fdatasync of the journal returned, all before the confirmation was sent. And after
// a refused batch whose journal append had been written, zeros were written over its records
// before the next confirmation. Returns the confirmations checked.
inline size_t check_confirmations_rest_on_synced_records(const std::string& text, const std::vector<std::string>& hash_of_index) {
  Trace t = read_trace(text);
  struct Appended {
    uint64_t offset, end;
    std::vector<Record> records;
    bool synced = false, overwritten = false;
  };
  std::vector<Appended> appends;
  std::map<uint64_t, size_t> record_of;  // index -> the newest append holding it
  long since_reply = -1;                 // the append made since the last replies, if any
  size_t checked = 0;
  for (const auto& c : t.calls) {
    if (c.tid != t.main_tid) continue;
    if (c.name == "pwrite64" && c.result > 0 && is_journal(path_arg(c))) {
      std::string data = strace::string_arg(c.args.at(1)).value_or("");
      REQUIRE_MESSAGE(!strace::truncated(c.args.at(1)), "raise strace -s");
      const uint64_t offset = static_cast<uint64_t>(strace::int_arg(c.args.at(3)));
      for (auto& a : appends)
        if (offset < a.end && a.offset < offset + data.size()) a.overwritten = true;
      if (data.find_first_not_of('\0') == std::string::npos) continue;  // zeros: a failed batch's records erased
      if (data.size() == Journal::kHeaderBytes && data.rfind("TLSJRNL1", 0) == 0) continue;  // a side's header (a reset)
      Appended a{offset, offset + data.size(), records_in(data)};
      CHECK_MESSAGE(a.records.size() > 0, "a journal append without a whole record at " << offset);
      for (const auto& r : a.records) record_of[r.index] = appends.size();
      since_reply = static_cast<long>(appends.size());
      appends.push_back(std::move(a));
      continue;
    }
    if (c.name == "fdatasync" && is_journal(path_arg(c)) && c.result == 0) {
      for (auto& a : appends)
        if (!a.overwritten) a.synced = true;
      continue;
    }
    if (!is_reply(c)) continue;
    std::string data = strace::string_arg(c.args.at(1)).value_or("");
    const long appended = since_reply;
    since_reply = -1;
    for (size_t p = 0; (p = data.find("{\"id\":\"", p)) != std::string::npos; p++) {
      size_t end = data.find("}", p);
      std::string reply = data.substr(p, end - p + 1);
      auto index = harness::json_int_field(reply, "index");
      if (!index || reply.find("\"error\"") != std::string::npos) {
        // Refused: the records its batch appended were erased (zeros written over them) first.
        CHECK_MESSAGE((appended < 0 || appends[appended].overwritten),
                      "a refusal sent while the refused batch's journal records were still there: " << reply);
        continue;
      }
      INFO("confirmation " << reply);
      const uint64_t i = static_cast<uint64_t>(*index);
      REQUIRE(i >= 1);
      REQUIRE(i <= hash_of_index.size());
      auto at = record_of.find(i);
      REQUIRE_MESSAGE(at != record_of.end(), "no journal record of entry " << i << " before its confirmation");
      const Appended& a = appends[at->second];
      const Record* r = nullptr;
      for (const auto& x : a.records)
        if (x.index == i) r = &x;
      REQUIRE(r);
      CHECK_MESSAGE(!a.overwritten, "the record of entry " << i << " was written over before its confirmation");
      CHECK_MESSAGE(a.synced, "the record of entry " << i << " was not synced before its confirmation");
      CHECK(r->hash_hex == hash_of_index[i - 1]);
      CHECK(sha256_hex(r->bytes) == r->hash_hex);
      checked++;
    }
  }
  return checked;
}

// ---------------------------------------------------------------------------------------------
// A failed checkpoint: EIO injected into the checkpoint thread alone, by an strace attached to
// that thread.

// A checkpoint whose first `call` (syncfs or fdatasync) fails with EIO: three writes confirmed
// before it; the checkpoint-failed fatal line; every later write refused with the reason; reads
// served; SIGTERM exits 1; the fault hit that call once; a restart without injection has every
// confirmed entry, takes writes and leaves a journal with nothing to replay.
inline void checkpoint_fault(const std::string& call) {
  INFO("EIO injected into the checkpoint thread's first " << call);
  TempDir dir;
  const std::string trace = dir / "checkpoint.trace";
  Promises promised;
  {
    ServerProcess s(dir.path());
    small(s).env("SYNC", "always").start();
    // strace on the checkpoint thread alone: the main thread's syncs are untouched.
    Attached strace(dir.path(), thread_named(s.pid(), "checkpoint"),
                    {"-y", "-e", "trace=syncfs,fdatasync,pwrite64", "-e", "inject=" + call + ":error=EIO:when=1"}, trace);
    // Three writes; a second without writes starts the checkpoint, which fails.
    for (int i = 1; i <= 3; i++) {
      const std::string entry = "{\"checkpointed\":" + std::to_string(i) + "}";
      CHECK(write_one(s.port(), "w" + std::to_string(i), entry) == static_cast<uint64_t>(i));
      promised.confirm("w" + std::to_string(i), static_cast<uint64_t>(i), entry);
    }
    auto deadline = Clock::now() + milliseconds(15000);
    while (lines_with(s.log_lines(), kFatal, "\"event\":\"checkpoint-failed\"").empty() && Clock::now() < deadline)
      std::this_thread::sleep_for(milliseconds(20));
    auto fatal = lines_with(s.log_lines(), kFatal, "\"event\":\"checkpoint-failed\"");
    REQUIRE_MESSAGE(fatal.size() == 1, "no checkpoint-failed line within 15 s");
    CHECK(fatal[0].find("Input/output error") != std::string::npos);
    // Every later write is refused, with the reason.
    for (int i = 0; i < 2; i++) {
      std::string reply = write_line(s.port(), "after-" + std::to_string(i), "{\"after\":" + std::to_string(i) + "}");
      CHECK_MESSAGE(reply.rfind("{\"id\":\"after-" + std::to_string(i) +
                                    "\",\"error\":\"writes are refused until the server restarts: a checkpoint could not "
                                    "make the journal's entries durable (",
                                0) == 0,
                    reply);
      CHECK(reply.find("Input/output error") != std::string::npos);
    }
    // Reads go on.
    auto lines = read_all(s.port());
    REQUIRE(lines.size() == 3);
    for (const auto& [i, bytes] : promised.confirmed)
      CHECK(lines[i - 1] == "{\"index\":" + std::to_string(i) + ",\"entry\":" + bytes + "}");
    // SIGTERM: the store cannot stop cleanly (its journal is left to the next start): exit 1.
    CHECK(s.stop_term() == 1);
    CHECK(lines_with(s.log_lines(), kFatal, "cannot stop the store cleanly").size() == 1);
    strace.finish();
  }
  // The fault hit the checkpoint's call, once. (strace -p on one thread prints no thread id.)
  size_t injected = 0;
  for (const auto& line : harness::detail::complete_lines(read_file(trace)))
    injected += line.rfind(call + "(", 0) == 0 && line.find("(INJECTED)") != std::string::npos;
  CHECK(injected == 1);
  // A restart without injection has every confirmed entry, and takes writes again.
  ServerProcess again(dir.path());
  small(again).env("SYNC", "always").start();
  Snapshot snap = read_store(again.blobs_dir(), again.leveldb_dir());
  CHECK(snap.head() == 3);
  check_invariants(snap, promised, "after a restart");
  CHECK(write_one(again.port(), "w4", "{\"checkpointed\":4}") == 4);
  CHECK(again.stop_term() == 0);
  CHECK(journal_replays(dir / "leveldb").empty());
}

}  // namespace fault
