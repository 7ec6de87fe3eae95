// Fault injection (issue 3, "Errors at run time"): a fixed small workload, run once under
// strace to find every write-path system call, then once per (call, occurrence) with that one
// call failing (ENOSPC, or EIO for the syncs and close); and short writes (k < n bytes, then
// ENOSPC) from an LD_PRELOAD shim, test/short_write_shim.so.
//
// After each run: each write got a confirmation or an error, a failed batch got an error for
// every write and nothing of it became visible (live readers, a fresh reader, the files), no
// batch whose sync failed was confirmed, later writes succeed, and after a restart WITHOUT
// injection the invariants hold and the log is exactly the confirmed writes.
//
// The workload has one batch with kBigNew new blobs, which under SYNC=always takes the syncfs()
// path (temp files unsynced, syncfs, renames, syncfs); its calls are in the matrix like any other,
// and BLOBS/tmp must be empty after every batch, refused or not.
//
// Also from traces: the commit order step for step (temp blob, sync, rename, directory syncs,
// one index append, index sync, then confirmations; or the syncfs variant), and that a refused
// batch retried by its client is confirmed only on blob bytes and directory entries that were
// synced (fdatasync/fsync, or a syncfs after them). Double faults (a failed write
// or sync whose rollback or cleanup fails too) are covered for the rollback's ftruncate and unlink.
#include "durability_harness.hpp"

#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <functional>

using namespace dur;
using harness::Client;
using harness::ServerProcess;

namespace {

constexpr int kInfo = 30;

// ---------------------------------------------------------------------------------------------
// The workload: batches sent whole (one send) and answered before the next is sent, so the
// system calls the server makes are the same in every run up to the injected fault.

using Batch = std::vector<Write>;
constexpr size_t kBigNew = 10;  // new distinct blobs of the big batch

// {"<key>":k} entries with the id `id`.
Write keyed_write(const std::string& id, const std::string& key, int k) {
  Write w;
  w.id = id;
  w.canonical = "{\"" + key + "\":" + std::to_string(k) + "}";
  w.line = "{\"id\":\"" + id + "\",\"entry\":" + w.canonical + "}";
  return w;
}

Write with_id(Write w, const std::string& id) {
  w.line.replace(w.line.find("\"" + w.id + "\""), w.id.size() + 2, "\"" + id + "\"");
  w.id = id;
  return w;
}

std::string prefix_of(const Write& w) { return sha256_hex(w.canonical).substr(0, 2); }

std::vector<Batch> make_workload() {
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
  // The big batch: kBigNew (>= kSyncfsMinBlobs) new distinct blobs, so under SYNC=always the
  // syncfs() path. One lands in an hh/ an earlier batch made, two share an hh/ new in this batch
  // (the second mkdir finds it made, unsynced), the rest in new hh/ directories of their own;
  // one of them is sent twice, and {"d":0} (stored since batch 1) once: not new blobs.
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

const std::vector<Batch>& workload() {
  static const std::vector<Batch> w = make_workload();
  return w;
}
constexpr size_t kFaultBatches = 6;  // faults are injected in batches 1..6; batch 7 must succeed
constexpr size_t kBigBatch = 6;      // the batch with kBigNew (>= kSyncfsMinBlobs) new blobs

// For the commit-order test only (the fault matrix has the old path covered by batches 1..5):
// the workload with two batches at the threshold before its last batch, after the big one.
// Just under it: kSyncfsMinBlobs - 1 new blobs among 10 entries (one sent twice, two stored
// already), so still one fdatasync per blob; just at it: kSyncfsMinBlobs new blobs among 11.
std::vector<Batch> order_workload() {
  std::vector<Batch> b = workload();
  const Batch last = b.back();
  b.pop_back();
  Batch under, at;
  for (int k = 0; k + 1 < static_cast<int>(kSyncfsMinBlobs); k++)
    under.push_back(keyed_write("u-" + std::to_string(k), "under", k));
  under.insert(under.begin() + 2, with_id(b[kBigBatch - 1][1], "u-big-again"));
  under.insert(under.begin() + 4, with_id(under[0], "u-0-again"));
  under.push_back(dup_write("u-dup", 0));
  for (int k = 0; k < static_cast<int>(kSyncfsMinBlobs); k++)
    at.push_back(keyed_write("a-" + std::to_string(k), "at", k));
  at.insert(at.begin() + 1, with_id(under[1], "a-under-again"));
  at.insert(at.begin() + 3, with_id(at[2], "a-again"));
  at.push_back(dup_write("a-dup", 0));
  b.push_back(under);
  b.push_back(at);
  b.push_back(last);
  return b;
}

// New distinct blobs per batch (index 0: batch 1).
std::vector<size_t> new_blobs_per_batch(const std::vector<Batch>& batches) {
  std::vector<size_t> out;
  std::set<std::string> stored;
  for (const auto& b : batches) {
    size_t n = 0;
    for (const auto& w : b) n += stored.insert(w.canonical).second;
    out.push_back(n);
  }
  return out;
}

// Whether the server takes the syncfs() path for a SYNC=always batch with `fresh` new blobs:
// from kSyncfsMinBlobs new blobs on, on Linux >= 5.8 (where syncfs reports write-back errors).
bool syncfs_path(size_t fresh) {
  struct utsname u;
  int major = 0, minor = 0;
  bool reports = ::uname(&u) == 0 && std::sscanf(u.release, "%d.%d", &major, &minor) == 2 &&
                 (major > 5 || (major == 5 && minor >= 8));
  return reports && fresh >= kSyncfsMinBlobs;
}

// What one run of the workload saw.
struct Observed {
  std::vector<int> batch;  // per batch: 1 all confirmed, 0 all refused, -1 mixed or unanswered
  std::vector<std::string> first_error;
  Promises promises;
  uint64_t confirmed = 0;
};

// While the server runs, after each batch: the index is a whole number of valid records, one
// per confirmed write, and no temporary blob is left.
std::function<void(size_t, const Observed&)> files_stay_whole(const std::string& dir) {
  return [dir](size_t b, const Observed& o) {
    INFO("after batch " << b + 1);
    std::string index = slurp(dir + "/leveldb/index");
    CHECK_MESSAGE(index.size() == o.confirmed * kRecordSize,
                  "index has " << index.size() << " bytes with " << o.confirmed << " writes confirmed");
    for (size_t at = 0; at + kRecordSize <= index.size(); at += kRecordSize)
      CHECK_MESSAGE(valid_record(std::string_view(index).substr(at, kRecordSize)), "record " << at / 65 + 1);
    CHECK(list_dir(dir + "/blobs/tmp").empty());
  };
}

// Runs the workload against a server on `port`, with a stream reader connected first. Checks
// the replies, the live reader and a fresh reader against what was confirmed. `after_batch`
// is called after each batch's replies (for checks of the files while the server runs).
Observed drive(int port, const std::vector<Batch>& batches,
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
void restart_and_verify(const std::string& dir, const std::string& sync, const Observed& o,
                        const std::string& ctx) {
  INFO(ctx);
  // Blobs the failed batch created were removed: every blob file is named by a record.
  {
    std::set<std::string> named;
    std::string index = slurp(dir + "/leveldb/index");
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
  s.env("SYNC", sync).start();
  CHECK(list_dir(dir + "/blobs/tmp").empty());
  Snapshot snap = read_store(s.blobs_dir(), s.leveldb_dir());
  CHECK_MESSAGE(snap.head() == o.confirmed, "after restart head is " << snap.head() << " but "
                                                                      << o.confirmed << " writes were confirmed");
  check_invariants(snap, o.promises, ctx);
  CHECK(write_one(s.port(), "after-restart", "{\"after\":\"restart\"}") == snap.head() + 1);
  CHECK(s.stop_term() == 0);
}

// ---------------------------------------------------------------------------------------------
// The dry run: which write-path calls the workload makes, and in which batch.

struct Call {
  std::string name;       // system call
  int occurrence = 0;     // 1-based, counted per name from the start of the process
  size_t batch = 0;       // 1-based batch whose commit made it; 0: not in a batch's commit
  std::string what;       // the trace line, shortened
  long result = -1;       // what it returned in the dry run
  std::string target;     // the path it names or the path of its fd, if known
  enum class Expect { Fail, Succeed, Either } expect = Expect::Either;
};

const char* const kTraced =
    "trace=openat,open,creat,write,pwrite64,writev,rename,renameat,renameat2,mkdir,mkdirat,"
    "ftruncate,fsync,fdatasync,syncfs,sync_file_range,close,unlink,unlinkat,newfstatat,sendto";

std::string strace_path() {
  std::string s = find_program("strace");
  REQUIRE_MESSAGE(!s.empty(), "strace is needed (make check-deps installs it)");
  return s;
}

harness::detail::EnvOverrides server_env(const std::string& dir, const std::string& sync) {
  return {{"PORT", "0"}, {"BLOBS", dir + "/blobs"}, {"LEVELDB", dir + "/leveldb"}, {"SYNC", sync}};
}

// The first quoted string argument of a trace line, unescaped enough for paths.
std::string first_string(const std::string& line) {
  size_t q = line.find('"');
  if (q == std::string::npos) return {};
  size_t e = line.find('"', q + 1);
  return e == std::string::npos ? std::string() : line.substr(q + 1, e - q - 1);
}

struct DryRun {
  std::vector<Call> calls;              // write-path calls of batches 1..kFaultBatches
  std::map<std::string, int> at_start;  // calls per name made before "listening"
  std::string trace;
};

DryRun dry_run(const std::string& sync) {
  DryRun dry;
  std::string* trace_text = &dry.trace;
  TempDir dir;
  std::string trace = dir / "dry.trace";
  Wrapped s(dir.path(), {strace_path(), "-f", "-qq", "-s", "300", "-o", trace, "-e", kTraced},
            server_env(dir.path(), sync));
  REQUIRE_MESSAGE(s.start(), "server under strace: " << s.out() << s.err());
  Observed o = drive(s.port(), workload());
  for (int ok : o.batch) REQUIRE(ok == 1);
  s.signal_server(SIGTERM);
  REQUIRE(s.wait(milliseconds(10000)) == 0);
  *trace_text = slurp(trace);

  std::map<std::string, int> count;
  std::map<long, std::string> fds;  // fd -> path
  bool listening = false;
  size_t replies = 0;  // reply sends to the writer seen so far
  std::istringstream in(*trace_text);
  for (std::string line; std::getline(in, line);) {
    size_t at = line.find_first_not_of("0123456789 ");
    if (at == std::string::npos) continue;
    line = line.substr(at);
    size_t paren = line.find('(');
    if (paren == std::string::npos || line.rfind("+++", 0) == 0 || line.rfind("---", 0) == 0) continue;
    std::string name = line.substr(0, paren);
    int occurrence = ++count[name];
    size_t eq = line.rfind(" = ");
    long result = eq == std::string::npos ? -1 : std::atol(line.c_str() + eq + 3);
    long fd = std::atol(line.c_str() + paren + 1);
    std::string path = first_string(line);
    if (name == "openat" && result >= 0) path = first_string(line), fds[result] = path;
    std::string fd_path = fds.count(fd) ? fds[fd] : std::string();
    if (name == "close" && result == 0) fds.erase(fd);
    if (name == "write" && fd == 1 && line.find("listening") != std::string::npos) {
      listening = true;
      dry.at_start = count;
      continue;
    }
    if (name == "sendto") {
      if (line.find("\\\"id\\\":") != std::string::npos) replies++;
      continue;
    }
    if (!listening || replies >= kFaultBatches) continue;
    for (size_t d; (d = line.find(dir.path())) != std::string::npos;) line.replace(d, dir.path().size(), "DIR");
    Call c;
    c.name = name;
    c.occurrence = occurrence;
    c.batch = replies + 1;
    c.result = result;
    c.what = harness::detail::tail(line.substr(0, 160), 160);
    c.target = name == "openat" || name == "mkdir" || name == "rename" || name == "newfstatat" ? path : fd_path;
    if (c.target == fd_path && !fd_path.empty()) {
      std::string shown = fd_path;
      if (shown.rfind(dir.path(), 0) == 0) shown.replace(0, dir.path().size(), "DIR");
      c.what += " [fd " + std::to_string(fd) + ": " + shown + "]";
    }
    auto blob_tmp = [](const std::string& p) { return p.find("/blobs/tmp/") != std::string::npos; };
    auto index = [](const std::string& p) { return p.find("/leveldb/index") != std::string::npos; };
    if (name == "openat")
      c.expect = blob_tmp(path) || line.find("O_DIRECTORY") != std::string::npos ? Call::Expect::Fail
                                                                                 : Call::Expect::Either;
    else if (name == "write" || name == "pwrite64")
      c.expect = fd == 1 || fd == 2 ? Call::Expect::Succeed
                 : blob_tmp(fd_path) || index(fd_path) ? Call::Expect::Fail
                                                       : Call::Expect::Either;
    else if (name == "close")
      c.expect = blob_tmp(fd_path) ? Call::Expect::Fail : Call::Expect::Succeed;
    else if (name == "fsync" || name == "fdatasync" || name == "rename" || name == "renameat" ||
             name == "renameat2" || name == "mkdir" || name == "mkdirat" || name == "syncfs")
      c.expect = Call::Expect::Fail;
    else
      c.expect = Call::Expect::Either;  // newfstatat (exists?): a failure may only cost a rewrite
    dry.calls.push_back(c);
  }
  REQUIRE(listening);
  REQUIRE(replies >= kFaultBatches);
  return dry;
}

const char* expect_name(Call::Expect e) {
  return e == Call::Expect::Fail ? "must fail its batch" : e == Call::Expect::Succeed ? "must not fail" : "either";
}

// Checks the batch outcomes of a run with one fault in `c`.
void check_outcome(const Observed& o, const Call& c) {
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

std::string inject_error(const std::string& name) {
  if (name == "fsync" || name == "fdatasync" || name == "syncfs" || name == "close" || name == "newfstatat")
    return "EIO";
  return "ENOSPC";
}

struct FaultTally {
  std::map<std::string, int> runs;  // per syscall
  int refused_batches = 0;
  int sync_failures = 0, confirmed_after_failed_sync = 0;
};

void one_fault_run(const std::string& sync, const Call& c, FaultTally& t) {
  std::string err = inject_error(c.name);
  std::string ctx = "SYNC=" + sync + ": " + c.name + " #" + std::to_string(c.occurrence) + " -> " + err +
                    " (batch " + std::to_string(c.batch) + ", " + expect_name(c.expect) + "): " + c.what;
  INFO(ctx);
  TempDir dir;
  Observed o;
  // Only the injected call is traced: strace 6.1 does not inject with -e trace=none.
  std::string trace = dir / "inject.trace";
  {
    Wrapped s(dir.path(),
              {strace_path(), "-f", "-qq", "-s", "120", "-o", trace, "-e", "trace=" + c.name, "-e",
               "inject=" + c.name + ":error=" + err + ":when=" + std::to_string(c.occurrence)},
              server_env(dir.path(), sync));
    REQUIRE_MESSAGE(s.start(), "did not start: " << harness::detail::tail(s.out() + s.err(), 800));
    o = drive(s.port(), workload(), files_stay_whole(dir.path()));
    check_outcome(o, c);
    CHECK_MESSAGE(s.running(), "the server exited after the fault");
    s.signal_server(SIGTERM);
    CHECK(s.wait(milliseconds(10000)) == 0);
    CHECK(lines_with(s.log_lines(), kInfo, "\"msg\":\"stopped\"").size() == 1);
  }
  // The fault did happen, at the call the dry run saw.
  std::string injected;
  for (auto line : harness::detail::complete_lines(slurp(trace))) {
    if (line.find("(INJECTED)") == std::string::npos) continue;
    for (size_t d; (d = line.find(dir.path())) != std::string::npos;) line.replace(d, dir.path().size(), "DIR");
    injected = line;
  }
  REQUIRE_MESSAGE(!injected.empty(), "strace injected nothing");
  // Log lines carry a time and a pid: compare the call up to its first JSON text.
  std::string expected_call = c.what.substr(0, std::min(c.what.find(" = "), c.what.find("\"{")));
  CHECK_MESSAGE(injected.find(expected_call.substr(0, 100)) != std::string::npos,
                "the injected call differs from the dry run's: " << injected);
  t.runs[c.name]++;
  for (int b : o.batch) t.refused_batches += b == 0;
  if (c.name == "fsync" || c.name == "fdatasync" || c.name == "syncfs") {
    t.sync_failures++;
    if (c.batch >= 1 && c.batch <= o.batch.size() && o.batch[c.batch - 1] != 0) t.confirmed_after_failed_sync++;
  }
  restart_and_verify(dir.path(), sync, o, ctx);
}

void fault_matrix(const std::string& sync) {
  DryRun dry = dry_run(sync);
  const std::vector<Call>& calls = dry.calls;
  std::map<std::string, int> per_call;
  for (const auto& c : calls) per_call[c.name]++;
  // Every step of the commit order appears in the trace.
  CHECK(per_call["openat"] > 0);
  CHECK(per_call["write"] > 0);
  CHECK(per_call["rename"] > 0);
  CHECK(per_call["mkdir"] > 0);
  CHECK(per_call["pwrite64"] >= static_cast<int>(kFaultBatches));
  if (sync == "always") {
    CHECK(per_call["fdatasync"] > 0);
    CHECK(per_call["fsync"] > 0);
  } else {
    CHECK(per_call["fdatasync"] == 0);
    CHECK(per_call["fsync"] == 0);
    CHECK(per_call["syncfs"] == 0);
  }
  // Each batch is one commit: one index append of all its records. Under SYNC=always, a batch
  // with kSyncfsMinBlobs new blobs (the big one) syncs them with two syncfs() of BLOBS and no
  // fdatasync/fsync but the index's; the others sync per blob and directory, without syncfs.
  const auto fresh = new_blobs_per_batch(workload());
  REQUIRE(fresh[kBigBatch - 1] >= kBigNew);
  REQUIRE(workload()[kBigBatch - 1].size() > kBigNew);
  for (size_t b = 1; b <= kFaultBatches; b++) {
    INFO("SYNC=" << sync << ", batch " << b << " (" << workload()[b - 1].size() << " entries, " << fresh[b - 1]
                 << " new blobs)");
    std::map<std::string, int> n;
    std::map<std::string, int> fail;  // calls that must fail the batch, per name
    for (const auto& c : calls) {
      if (c.batch != b) continue;
      n[c.name]++;
      if (c.expect == Call::Expect::Fail) fail[c.name]++;
      if (c.name == "pwrite64")
        CHECK_MESSAGE(c.result == static_cast<long>(workload()[b - 1].size() * kRecordSize),
                      "the index append does not hold all the batch's records: " << c.what);
      if (c.name == "syncfs") {
        CHECK_MESSAGE((c.target.size() > 6 && c.target.substr(c.target.size() - 6) == "/blobs"),
                      "syncfs not on an fd of BLOBS: " << c.what);
        CHECK(inject_error(c.name) == "EIO");
      }
    }
    CHECK(n["pwrite64"] == 1);
    const bool big = sync == "always" && syncfs_path(fresh[b - 1]);
    if (b == kBigBatch) {
      if (sync == "always")
        CHECK_MESSAGE(big, "this kernel (< 5.8?) does not take the syncfs path; it is not covered");
      // Every new blob's temp file opened, written, closed and renamed: ENOSPC runs on each.
      CHECK(fail["openat"] >= static_cast<int>(kBigNew));
      CHECK(fail["write"] >= static_cast<int>(kBigNew));
      CHECK(fail["close"] >= static_cast<int>(kBigNew));
      CHECK(fail["rename"] == static_cast<int>(kBigNew));
      CHECK(fail["mkdir"] >= 2);
    }
    CHECK(n["syncfs"] == (big ? 2 : 0));
    CHECK(fail["syncfs"] == n["syncfs"]);
    if (big) {
      CHECK(n["fsync"] == 0);
      CHECK(n["fdatasync"] == 1);  // the index's
    } else if (sync == "always") {
      CHECK(n["fdatasync"] == static_cast<int>(fresh[b - 1]) + 1);
    }
  }
  FaultTally t;
  auto t0 = Clock::now();
  for (const auto& c : calls) one_fault_run(sync, c, t);
  std::ostringstream m;
  m << "SYNC=" << sync << ": " << calls.size() << " fault runs (";
  for (auto& [name, n] : t.runs) m << name << " " << n << ", ";
  m << "), " << t.refused_batches << " batches refused, " << t.sync_failures << " failed syncs, "
    << t.confirmed_after_failed_sync << " confirmations after a failed sync, "
    << std::chrono::duration<double>(Clock::now() - t0).count() << " s";
  MESSAGE(m.str());
  CHECK(t.confirmed_after_failed_sync == 0);
}

}  // namespace

TEST_CASE("ENOSPC/EIO at every write-path system call of a fixed workload, SYNC=always") {
  fault_matrix("always");
}

TEST_CASE("ENOSPC/EIO at every write-path system call of a fixed workload, SYNC=none") {
  fault_matrix("none");
}

// =============================================================================================
// Short writes from the LD_PRELOAD shim, and double faults (a failed write or sync whose
// rollback fails too).

namespace {

// test/short_write_shim.so as the Makefile builds it, else a private build of the same source.
std::string shim_library() {
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

void expect_only_refused(const Observed& o, size_t refused_batch) {
  for (size_t b = 0; b < o.batch.size(); b++) {
    INFO("batch " << b + 1 << (o.first_error[b].empty() ? "" : ", error: " + o.first_error[b]));
    CHECK(o.batch[b] == (b + 1 == refused_batch ? 0 : 1));
  }
}

std::vector<Batch> first_batches(size_t n) {
  auto all = workload();
  all.resize(n);
  return all;
}

}  // namespace

TEST_CASE("short index appends (k < n bytes, then ENOSPC) are rolled back: the index stays whole records") {
  Rng rng("short index appends");
  INFO("SEED=" << base_seed());
  const std::string shim = shim_library();
  auto batches = workload();
  int runs = 0;
  for (size_t b = 1; b <= kFaultBatches; b++) {
    const long n = static_cast<long>(batches[b - 1].size() * kRecordSize);
    std::set<long> ks{1, 64, n - 1, static_cast<long>(rng.range(1, static_cast<uint64_t>(n - 1)))};
    if (n > 65) ks.insert(65);  // whole records written, the rest not
    if (n > 130) ks.insert(130);
    for (long k : ks) {
      for (long fails : {1L, 0L}) {  // 0: the retry of the rest succeeds, so the batch must too
        std::string sync = runs % 2 ? "none" : "always";
        std::string ctx = "index pwrite of batch " + std::to_string(b) + " writes " + std::to_string(k) +
                          " of " + std::to_string(n) + " bytes, then " +
                          (fails ? "ENOSPC" : "the retry succeeds") + ", SYNC=" + sync;
        INFO(ctx);
        TempDir dir;
        Observed o;
        {
          ServerProcess s(dir.path());
          s.env("SYNC", sync).env("LD_PRELOAD", shim).env("SHIM_PATH", "/leveldb/index")
              .env("SHIM_NTH", std::to_string(b)).env("SHIM_BYTES", std::to_string(k))
              .env("SHIM_FAILS", std::to_string(fails)).start();
          o = drive(s.port(), batches, files_stay_whole(dir.path()));
          expect_only_refused(o, fails ? b : 0);
          CHECK(s.stop_term() == 0);
        }
        restart_and_verify(dir.path(), sync, o, ctx);
        runs++;
      }
    }
  }
  MESSAGE(runs << " short-write runs on the index");
}

TEST_CASE("short blob writes (k < n bytes, then ENOSPC) refuse the batch and leave no blob behind") {
  Rng rng("short blob writes");
  INFO("SEED=" << base_seed());
  const std::string shim = shim_library();
  auto batches = workload();
  // Which batch writes the Nth new blob.
  std::vector<size_t> blob_batch;
  std::set<std::string> stored;
  for (size_t b = 0; b < batches.size(); b++)
    for (const auto& w : batches[b])
      if (stored.insert(w.canonical).second) blob_batch.push_back(b + 1);
  int runs = 0;
  for (size_t nth = 1; nth <= blob_batch.size() && blob_batch[nth - 1] <= kFaultBatches; nth++) {
    std::string sync = nth % 2 ? "always" : "none";
    long k = static_cast<long>(rng.range(1, 20));
    std::string ctx = "blob write #" + std::to_string(nth) + " (batch " + std::to_string(blob_batch[nth - 1]) +
                      ") writes at most " + std::to_string(k) + " bytes, then ENOSPC, SYNC=" + sync;
    INFO(ctx);
    TempDir dir;
    Observed o;
    {
      ServerProcess s(dir.path());
      s.env("SYNC", sync).env("LD_PRELOAD", shim).env("SHIM_PATH", "/blobs/tmp/")
          .env("SHIM_NTH", std::to_string(nth)).env("SHIM_BYTES", std::to_string(k)).start();
      o = drive(s.port(), batches, files_stay_whole(dir.path()));
      expect_only_refused(o, blob_batch[nth - 1]);
      CHECK(s.stop_term() == 0);
    }
    restart_and_verify(dir.path(), sync, o, ctx);
    runs++;
  }
  MESSAGE(runs << " short-write runs on blobs");
}

TEST_CASE("double fault: the index sync fails (EIO) and so does the rollback's ftruncate; the refused batch never becomes visible") {
  DryRun dry = dry_run("always");
  const int rollback = dry.at_start["ftruncate"] + 1;  // no ftruncate runs unless a batch fails
  for (size_t b = 1; b <= kFaultBatches; b++) {
    const Call* sync_call = nullptr;
    for (const auto& c : dry.calls)
      if (c.name == "fdatasync" && c.batch == b && c.target.find("/leveldb/index") != std::string::npos)
        sync_call = &c;
    REQUIRE_MESSAGE(sync_call, "no index fdatasync in batch " << b);
    std::string ctx = "batch " + std::to_string(b) + " (the last before the restart): fdatasync #" +
                      std::to_string(sync_call->occurrence) + " EIO, then ftruncate #" +
                      std::to_string(rollback) + " EIO";
    INFO(ctx);
    TempDir dir;
    std::string trace = dir / "inject.trace";
    Observed o;
    {
      Wrapped s(dir.path(),
                {strace_path(), "-f", "-qq", "-o", trace, "-e", "trace=fdatasync,ftruncate", "-e",
                 "inject=fdatasync:error=EIO:when=" + std::to_string(sync_call->occurrence), "-e",
                 "inject=ftruncate:error=EIO:when=" + std::to_string(rollback)},
                server_env(dir.path(), "always"));
      REQUIRE(s.start());
      o = drive(s.port(), first_batches(b));
      expect_only_refused(o, b);
      s.signal_server(SIGTERM);
      CHECK(s.wait(milliseconds(10000)) == 0);
    }
    size_t injected = 0;
    for (const auto& line : harness::detail::complete_lines(slurp(trace)))
      injected += line.find("(INJECTED)") != std::string::npos;
    REQUIRE(injected == 2);
    restart_and_verify(dir.path(), "always", o, ctx);
  }
}

TEST_CASE("double fault: a stored blob whose lookup fails (EIO) is neither rewritten nor removed by its failing batch") {
  // Batch A stores {"x":1} as entry 1. Batch B writes {"x":1} again with {"y":2}: the stat of
  // x's blob fails with EIO and B's index append fails with ENOSPC. Were the failed lookup read
  // as "absent", B would rewrite x's blob, count it as its own and remove it on failure,
  // taking entry 1 with it.
  const std::string x = "{\"x\":1}", y = "{\"y\":2}";
  auto workload = [&](int port) {
    harness::Client c(port);
    c.send_line("{\"id\":\"a\",\"entry\":" + x + "}");
    std::string a = c.read_line();
    c.send("{\"id\":\"b1\",\"entry\":" + x + "}\n{\"id\":\"b2\",\"entry\":" + y + "}\n");
    return std::vector<std::string>{a, c.read_line(), c.read_line()};
  };
  auto occurrence = [](const std::string& trace, const std::string& call, const std::string& needle,
                       int nth) {  // 1-based count of `call` up to the nth one containing needle
    int count = 0, hits = 0;
    for (const auto& line : harness::detail::complete_lines(slurp(trace))) {
      size_t at = line.find_first_not_of("0123456789 ");
      if (at == std::string::npos || line.compare(at, call.size() + 1, call + "(") != 0) continue;
      count++;
      if (line.find(needle) != std::string::npos && ++hits == nth) return count;
    }
    return -1;
  };
  TempDir dry_dir;
  std::string dry_trace = dry_dir / "dry.trace";
  {
    Wrapped s(dry_dir.path(), {strace_path(), "-f", "-qq", "-s", "300", "-o", dry_trace, "-e", "trace=newfstatat,pwrite64"},
              server_env(dry_dir.path(), "always"));
    REQUIRE(s.start());
    auto replies = workload(s.port());
    REQUIRE(replies[0] == "{\"id\":\"a\",\"index\":1}");
    REQUIRE(replies[2] == "{\"id\":\"b2\",\"index\":3}");
    s.signal_server(SIGTERM);
    REQUIRE(s.wait(milliseconds(10000)) == 0);
  }
  const std::string hx = sha256_hex(x), hy = sha256_hex(y);
  const int stat_x = occurrence(dry_trace, "newfstatat", hx.substr(2), 2);  // in batch B
  const int append_b = occurrence(dry_trace, "pwrite64", hy, 1);
  REQUIRE(stat_x > 0);
  REQUIRE(append_b > 0);
  TempDir dir;
  std::string trace = dir / "inject.trace";
  {
    Wrapped s(dir.path(), {strace_path(), "-f", "-qq", "-o", trace, "-e", "trace=newfstatat,pwrite64",
                           "-e", "inject=newfstatat:error=EIO:when=" + std::to_string(stat_x),
                           "-e", "inject=pwrite64:error=ENOSPC:when=" + std::to_string(append_b)},
              server_env(dir.path(), "always"));
    REQUIRE(s.start());
    auto replies = workload(s.port());
    CHECK(replies[0] == "{\"id\":\"a\",\"index\":1}");
    CHECK(replies[1].rfind("{\"id\":\"b1\",\"error\":", 0) == 0);
    CHECK(replies[2].rfind("{\"id\":\"b2\",\"error\":", 0) == 0);
    s.signal_server(SIGTERM);
    CHECK(s.wait(milliseconds(10000)) == 0);
  }
  REQUIRE(slurp(trace).find("(INJECTED)") != std::string::npos);
  ServerProcess again(dir.path());
  again.start();
  auto lines = read_all(again.port());
  REQUIRE(lines.size() == 1);
  CHECK(lines[0] == "{\"index\":1,\"entry\":" + x + "}");
  CHECK(again.stop_term() == 0);
}

TEST_CASE("double fault: a short index append (then ENOSPC) whose rollback ftruncate fails; the refused batch never becomes visible") {
  const std::string shim = shim_library();
  DryRun dry = dry_run("none");
  const int rollback = dry.at_start["ftruncate"] + 1;
  auto batches = workload();
  for (size_t b = 1; b <= kFaultBatches; b++) {
    const long n = static_cast<long>(batches[b - 1].size() * kRecordSize);
    const long k = n > 65 ? 65 : n - 1;
    std::string ctx = "batch " + std::to_string(b) + " (the last before the restart): index pwrite writes " +
                      std::to_string(k) + " of " + std::to_string(n) + " bytes then ENOSPC, ftruncate #" +
                      std::to_string(rollback) + " EIO, SYNC=none";
    INFO(ctx);
    TempDir dir;
    std::string trace = dir / "inject.trace";
    Observed o;
    {
      auto env = server_env(dir.path(), "none");
      env["LD_PRELOAD"] = shim;
      env["SHIM_PATH"] = "/leveldb/index";
      env["SHIM_NTH"] = std::to_string(b);
      env["SHIM_BYTES"] = std::to_string(k);
      Wrapped s(dir.path(),
                {strace_path(), "-f", "-qq", "-o", trace, "-e", "trace=ftruncate", "-e",
                 "inject=ftruncate:error=EIO:when=" + std::to_string(rollback)},
                env);
      REQUIRE(s.start());
      o = drive(s.port(), first_batches(b));
      expect_only_refused(o, b);
      s.signal_server(SIGTERM);
      CHECK(s.wait(milliseconds(10000)) == 0);
    }
    restart_and_verify(dir.path(), "none", o, ctx);
  }
}

// =============================================================================================
// The commit order, read from the dry run's trace, step for step as issue 3 writes it down.

namespace {

struct Event {
  std::string name, args, line;
  long result = -1;
  std::vector<std::string> strings;  // quoted arguments
  std::string fd_path;               // for calls on an fd
};

std::vector<std::string> quoted(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] != '"') continue;
    size_t j = i + 1;
    while (j < s.size() && s[j] != '"') j += s[j] == '\\' ? 2 : 1;
    out.push_back(s.substr(i + 1, j - i - 1));
    i = j;
  }
  return out;
}

// Checks, for each batch of the trace but the last: each new blob opened under BLOBS/tmp,
// written, synced (always), closed, renamed into BLOBS/hh/; each directory that gained a name
// synced (always); then one index append; then the index synced (always); only then
// confirmations and fan-out. A SYNC=always batch with kSyncfsMinBlobs new blobs (Linux >= 5.8)
// takes the syncfs variant instead, checked step for step: every temp file opened, written and
// closed, none fdatasynced; syncfs(BLOBS); every rename (and mkdir of hh/); syncfs(BLOBS) again,
// no directory fsync; then the append, the index sync and the confirmations as above. SYNC=none
// makes no sync call of any kind, syncfs included (at startup neither).
void check_commit_order(const std::string& trace, const std::string& sync, const std::string& dir,
                        const std::vector<Batch>& sent) {
  const bool always = sync == "always";
  std::map<long, std::string> fds;
  std::vector<std::vector<Event>> batches(1);
  bool listening = false;
  int syncfs_calls = 0;  // in the whole trace, startup included
  bool batch_sent = false;  // the current batch's confirmation is out
  std::istringstream in(trace);
  for (std::string line; std::getline(in, line);) {
    size_t at = line.find_first_not_of("0123456789 ");
    if (at == std::string::npos) continue;
    line = line.substr(at);
    size_t paren = line.find('(');
    if (paren == std::string::npos || line[0] == '+' || line[0] == '-') continue;
    Event e;
    e.name = line.substr(0, paren);
    e.line = line.substr(0, 200);
    size_t eq = line.rfind(" = ");
    e.result = eq == std::string::npos ? -1 : std::atol(line.c_str() + eq + 3);
    e.strings = quoted(line.substr(0, eq));
    long fd = std::atol(line.c_str() + paren + 1);
    if (fds.count(fd)) e.fd_path = fds[fd];
    if (e.name == "openat" && e.result >= 0 && !e.strings.empty()) fds[e.result] = e.strings[0];
    if (e.name == "close") fds.erase(fd);
    syncfs_calls += e.name == "syncfs";
    if (e.name == "write" && fd == 1) {
      listening = listening || line.find("listening") != std::string::npos;
      continue;
    }
    if (!listening) continue;
    // A batch ends with its sends: the writer's confirmation and the readers' entries, in the
    // order the pass flushes them. The next batch begins at the first other call.
    if (batch_sent && e.name != "sendto") {
      batches.emplace_back();
      batch_sent = false;
    }
    batches.back().push_back(e);
    if (e.name == "sendto" && line.find("\\\"id\\\":") != std::string::npos) batch_sent = true;
  }
  if (!always) CHECK_MESSAGE(syncfs_calls == 0, "syncfs called " << syncfs_calls << " times with SYNC=none");
  const std::string blobs = dir + "/blobs/", tmp = dir + "/blobs/tmp/", index = dir + "/leveldb/index";
  const auto fresh = new_blobs_per_batch(sent);
  REQUIRE(batches.size() >= sent.size());
  size_t checked = 0, syncfs_batches = 0;
  for (size_t b = 0; b + 1 < sent.size(); b++) {
    const auto& ev = batches[b];
    const bool variant = always && syncfs_path(fresh[b]);
    INFO("batch " << b + 1 << " (" << sent[b].size() << " entries, " << fresh[b] << " new blobs"
                  << (variant ? ", syncfs path)" : ")"));
    auto pos = [&](auto pred, size_t from = 0) {
      for (size_t i = from; i < ev.size(); i++)
        if (pred(ev[i])) return static_cast<long>(i);
      return -1L;
    };
    long append = pos([&](const Event& e) { return e.name == "pwrite64" && e.fd_path == index; });
    REQUIRE_MESSAGE(append >= 0, "no index append in the batch");
    CHECK_MESSAGE(ev[append].result == static_cast<long>(sent[b].size() * kRecordSize),
                  "the index append does not hold the batch's records: " << ev[append].line);
    CHECK_MESSAGE(pos([&](const Event& e) { return e.name == "pwrite64" && e.fd_path == index; }, append + 1) < 0,
                  "more than one index append in one batch");
    long index_sync = pos([&](const Event& e) { return e.name == "fdatasync" && e.fd_path == index; });
    long first_send = pos([](const Event& e) {  // a confirmation or an entry sent to a reader
      return e.name == "sendto" && (e.line.find("\\\"id\\\":") != std::string::npos ||
                                    e.line.find("\\\"entry\\\":") != std::string::npos);
    });
    if (always) {
      CHECK_MESSAGE(index_sync > append, "the index is not synced after its append");
      CHECK_MESSAGE(first_send > index_sync, "a confirmation or fan-out before the index sync");
    } else {
      CHECK(first_send > append);
      CHECK(pos([](const Event& e) { return e.name == "fsync" || e.name == "fdatasync" || e.name == "syncfs"; }) < 0);
    }
    // The syncfs calls of the batch: two, both of BLOBS, both succeeded, before the append.
    std::vector<long> syncfs;
    for (size_t i = 0; i < ev.size(); i++)
      if (ev[i].name == "syncfs") syncfs.push_back(static_cast<long>(i));
    CHECK_MESSAGE(syncfs.size() == (variant ? 2u : 0u), "syncfs calls in the batch: " << syncfs.size());
    const bool syncfs_variant = !syncfs.empty();  // checked as such even where it should not be
    const long first_syncfs = syncfs_variant ? syncfs.front() : -1;
    const long second_syncfs = syncfs.size() >= 2 ? syncfs[1] : -1;
    if (syncfs_variant) {
      syncfs_batches++;
      REQUIRE_MESSAGE(syncfs.size() == 2, "the syncfs path syncs BLOBS exactly twice per batch");
      for (long i : syncfs) {
        CHECK_MESSAGE((ev[i].fd_path == dir + "/blobs" || ev[i].fd_path == blobs), "syncfs not of BLOBS: " << ev[i].line);
        CHECK_MESSAGE(ev[i].result == 0, ev[i].line);
      }
      CHECK_MESSAGE(second_syncfs < append, "the second syncfs is not before the index append");
      // The directory fsyncs are replaced by the second syncfs; no blob is fdatasynced.
      for (const Event& x : ev) {
        CHECK_MESSAGE(x.name != "fsync", "a directory fsync in a syncfs batch: " << x.line);
        if (x.name == "fdatasync") CHECK_MESSAGE(x.fd_path == index, "an fdatasync in a syncfs batch: " << x.line);
      }
    }
    std::set<std::string> temps_opened, temps_renamed;
    for (size_t i = 0; i < ev.size(); i++) {
      const Event& e = ev[i];
      // Nothing under BLOBS is opened for writing except temporary files: no blob is ever
      // rewritten in place.
      if (e.name == "openat" && !e.strings.empty() && e.strings[0].rfind(blobs, 0) == 0 &&
          (e.line.find("O_WRONLY") != std::string::npos || e.line.find("O_RDWR") != std::string::npos))
        CHECK_MESSAGE(e.strings[0].rfind(tmp, 0) == 0, "a blob opened for writing under its final name: " << e.line);
      if (e.name == "openat" && !e.strings.empty() && e.strings[0].rfind(tmp, 0) == 0) {
        temps_opened.insert(e.strings[0]);
        if (syncfs_variant) {
          // The temp file's whole life before the first syncfs: opened, written, closed; never
          // fdatasynced.
          long wrote = -1, closed = -1;
          for (size_t j = i + 1; j < ev.size(); j++) {
            if (ev[j].fd_path != e.strings[0]) continue;
            if (ev[j].name == "write") wrote = static_cast<long>(j);
            if (ev[j].name == "fdatasync") CHECK_MESSAGE(false, "a temp blob fdatasynced in a syncfs batch: " << ev[j].line);
            if (ev[j].name == "close") {
              closed = static_cast<long>(j);
              break;
            }
          }
          CHECK_MESSAGE(static_cast<long>(i) < first_syncfs, "temp blob opened after the first syncfs: " << e.line);
          CHECK_MESSAGE(wrote > static_cast<long>(i), "temp blob not written: " << e.line);
          CHECK_MESSAGE((closed > wrote && closed < first_syncfs), "temp blob not closed before the first syncfs: " << e.line);
        }
      }
      if (e.name == "mkdir" && always) {
        if (syncfs_variant) {
          // BLOBS gained (or may have gained, unsynced, in a failed batch) a name: the second
          // syncfs makes it durable.
          CHECK_MESSAGE(static_cast<long>(i) < second_syncfs, "an hh/ made after the second syncfs: " << e.line);
        } else if (e.result == 0) {
          // BLOBS gained a name: BLOBS synced before the append.
          long synced = pos([&](const Event& x) {
            return x.name == "fsync" && (x.fd_path == dir + "/blobs" || x.fd_path == blobs);
          }, i + 1);
          CHECK_MESSAGE((synced >= 0 && synced < append), "BLOBS not synced after " << e.line);
        }
      }
      if (e.name != "rename") continue;
      REQUIRE(e.strings.size() == 2);
      const std::string& from = e.strings[0];
      const std::string& to = e.strings[1];
      temps_renamed.insert(from);
      CHECK(from.rfind(tmp, 0) == 0);
      CHECK(to.rfind(blobs, 0) == 0);
      CHECK(e.result == 0);
      CHECK(i < static_cast<size_t>(append));
      if (syncfs_variant) {
        CHECK_MESSAGE((static_cast<long>(i) > first_syncfs && static_cast<long>(i) < second_syncfs),
                      "a rename not between the two syncfs calls: " << e.line);
      }
      // The temp file's life: open, write(s), sync (always, per-blob path), close, all before
      // the rename.
      long opened = -1, wrote = -1, synced = -1, closed = -1;
      for (size_t j = 0; j < i; j++) {
        const Event& x = ev[j];
        if (x.name == "openat" && !x.strings.empty() && x.strings[0] == from) opened = static_cast<long>(j);
        if (x.name == "write" && x.fd_path == from) wrote = static_cast<long>(j);
        if (x.name == "fdatasync" && x.fd_path == from) synced = static_cast<long>(j);
        if (x.name == "close" && x.fd_path == from) closed = static_cast<long>(j);
      }
      CHECK_MESSAGE(opened >= 0, "blob not written through a temp file: " << e.line);
      CHECK_MESSAGE(wrote > opened, "temp blob not written before the rename: " << e.line);
      CHECK_MESSAGE(closed > wrote, "temp blob not closed before the rename: " << e.line);
      if (always && !syncfs_variant)
        CHECK_MESSAGE((synced > wrote && synced < closed), "temp blob not synced before the rename: " << e.line);
      // The directory that gained the name is synced after the rename, before the append.
      std::string parent = to.substr(0, to.rfind('/'));
      long dir_sync = pos([&](const Event& x) { return x.name == "fsync" && x.fd_path == parent; }, i + 1);
      if (always && !syncfs_variant)
        CHECK_MESSAGE((dir_sync > static_cast<long>(i) && dir_sync < append),
                      "directory " << parent << " not synced between the rename and the append");
      checked++;
    }
    // Every new blob of the batch, and only those, went through a temp file and a rename.
    CHECK_MESSAGE(temps_opened.size() == fresh[b], temps_opened.size() << " temp files opened");
    CHECK(temps_renamed == temps_opened);
  }
  size_t all_new = 0;
  for (size_t b = 0; b + 1 < sent.size(); b++) all_new += fresh[b];
  CHECK(checked == all_new);  // every new blob was followed through
  if (always) CHECK(syncfs_batches >= 1);
}

}  // namespace

TEST_CASE("the commit order in a system-call trace matches the one written down, SYNC=always and none") {
  // The workload, and two batches at the syncfs threshold (one under, one at) before its last.
  const std::vector<Batch> batches = order_workload();
  const auto fresh = new_blobs_per_batch(batches);
  REQUIRE(fresh[batches.size() - 3] == kSyncfsMinBlobs - 1);
  REQUIRE(fresh[batches.size() - 2] == kSyncfsMinBlobs);
  for (std::string sync : {"always", "none"}) {
    INFO("SYNC=" << sync);
    TempDir dir;
    std::string trace = dir / "order.trace";
    {
      Wrapped s(dir.path(), {strace_path(), "-f", "-qq", "-s", "300", "-o", trace, "-e", kTraced},
                server_env(dir.path(), sync));
      REQUIRE(s.start());
      Observed o = drive(s.port(), batches);
      for (int ok : o.batch) REQUIRE(ok == 1);
      s.signal_server(SIGTERM);
      REQUIRE(s.wait(milliseconds(10000)) == 0);
    }
    check_commit_order(slurp(trace), sync, dir.path(), batches);
  }
}

// =============================================================================================
// After a failed directory sync: no confirmation may rest on a directory entry that was never
// synced (issue 3: "each directory that gained a name synced (a new hh/ and BLOBS/ itself when a
// hh/ is new)"), also when the sync that should have covered it failed in an earlier batch.

namespace {

// For every confirmed index in `trace` (SYNC=always): its blob's bytes were synced between
// their last write to the temp file and its rename (an fdatasync of the temp file, or a syncfs
// of BLOBS); its rename into BLOBS/hh/ was followed by a successful fsync of BLOBS/hh, and the
// mkdir of BLOBS/hh by a successful fsync of BLOBS, or either by a successful syncfs of BLOBS;
// all before the confirmation was sent.
void check_names_synced_before_confirmation(const std::string& trace, const std::string& dir,
                                            const std::vector<std::string>& hash_of_index) {
  std::map<long, std::string> fds;
  std::map<std::string, long> mkdir_at, rename_at;  // hh dir / final path -> event number
  std::map<std::string, long> synced_at;            // dir -> last successful fsync
  std::map<std::string, long> written_at;           // temp path -> last write
  std::map<std::string, long> datasynced_at;        // temp path -> last successful fdatasync
  std::map<std::string, bool> data_synced;          // final path -> bytes synced before the rename
  long syncfs_at = -1;                              // last successful syncfs of BLOBS
  const std::string blobs = dir + "/blobs";
  std::istringstream in(trace);
  long n = 0;
  size_t checked = 0;
  for (std::string line; std::getline(in, line); n++) {
    size_t at = line.find_first_not_of("0123456789 ");
    if (at == std::string::npos) continue;
    line = line.substr(at);
    size_t paren = line.find('(');
    if (paren == std::string::npos || line[0] == '+' || line[0] == '-') continue;
    std::string name = line.substr(0, paren);
    size_t eq = line.rfind(" = ");
    long result = eq == std::string::npos ? -1 : std::atol(line.c_str() + eq + 3);
    auto strings = quoted(line.substr(0, eq));
    long fd = std::atol(line.c_str() + paren + 1);
    if (name == "openat" && result >= 0 && !strings.empty()) fds[result] = strings[0];
    if (name == "close") fds.erase(fd);
    if (name == "mkdir" && result == 0) mkdir_at[strings[0]] = n;
    if (name == "rename" && result == 0) rename_at[strings[1]] = n;
    if (name == "fsync" && result == 0 && fds.count(fd)) synced_at[fds[fd]] = n;
    if (name == "syncfs" && result == 0 && fds.count(fd) && fds[fd] == blobs) syncfs_at = n;
    if (name == "write" && fds.count(fd)) written_at[fds[fd]] = n;
    if (name == "fdatasync" && result == 0 && fds.count(fd)) datasynced_at[fds[fd]] = n;
    if (name == "rename" && result == 0) {
      const std::string& from = strings[0];
      long wrote = written_at.count(from) ? written_at[from] : -1;
      data_synced[strings[1]] = wrote >= 0 && ((datasynced_at.count(from) && datasynced_at[from] > wrote) ||
                                               syncfs_at > wrote);
      written_at.erase(from);
      datasynced_at.erase(from);
    }
    if (name != "sendto" || line.find("\\\"id\\\":") == std::string::npos) continue;
    // Confirmations in this send: {"id":..,"index":N}
    for (size_t p = 0; (p = line.find("\\\"index\\\":", p)) != std::string::npos; p++) {
      size_t index = static_cast<size_t>(std::atol(line.c_str() + p + 10));
      if (index == 0 || index > hash_of_index.size()) continue;
      const std::string& hex = hash_of_index[index - 1];
      std::string hh = blobs + "/" + hex.substr(0, 2);
      std::string final_path = hh + "/" + hex.substr(2);
      INFO("confirmation of entry " << index << " (blob " << hex.substr(0, 2) << "/...) in: " << line.substr(0, 120));
      REQUIRE(rename_at.count(final_path));
      CHECK_MESSAGE(data_synced[final_path], "the blob's bytes were not synced between their write and its rename");
      CHECK_MESSAGE(((synced_at.count(hh) && synced_at[hh] > rename_at[final_path]) ||
                     syncfs_at > rename_at[final_path]),
                    "BLOBS/" << hex.substr(0, 2) << " not synced (fsync or syncfs) after the blob's rename");
      if (mkdir_at.count(hh))
        CHECK_MESSAGE(((synced_at.count(blobs) && synced_at[blobs] > mkdir_at[hh]) || syncfs_at > mkdir_at[hh]),
                      "BLOBS not synced after BLOBS/" << hex.substr(0, 2) << " was made: the blob's name "
                      "may not survive a power cut");
      checked++;
    }
  }
  CHECK(checked > 0);
}

}  // namespace

TEST_CASE("a refused batch retried by the client: its confirmation rests only on synced directory entries") {
  DryRun dry = dry_run("always");
  // Every directory sync, both syncfs calls of the big batch (the second one follows its
  // renames), and the first failing call of each other kind in batch 1 (after the batch made
  // its new hh/ directories).
  std::vector<Call> points;
  std::set<std::string> kinds;
  int syncfs_points = 0;
  for (const auto& c : dry.calls) {
    if (c.name == "syncfs") {
      CHECK(c.batch == kBigBatch);
      syncfs_points++;
    }
    if (c.name == "fsync" || c.name == "syncfs" ||
        (c.batch == 1 && c.expect == Call::Expect::Fail && c.name != "mkdir" && kinds.insert(c.name).second))
      points.push_back(c);
  }
  CHECK(syncfs_points == 2);
  int runs = 0;
  for (const auto& c : points)
  for (bool unlink_fails : {false, true}) {  // true: the cleanup of the batch's new blobs fails too
    if (unlink_fails && c.name != "fsync" && c.name != "syncfs") continue;
    std::string err = inject_error(c.name);
    std::string ctx = c.name + " #" + std::to_string(c.occurrence) + " -> " + err + " (batch " +
                      std::to_string(c.batch) + "): " + c.what +
                      (unlink_fails ? "; and every unlink -> EIO" : "");
    INFO(ctx);
    std::vector<std::string> inject{"-e", "inject=" + c.name + ":error=" + err + ":when=" + std::to_string(c.occurrence)};
    if (unlink_fails) inject.insert(inject.end(), {"-e", "inject=unlink:error=EIO:when=1+"});
    TempDir dir;
    std::string trace = dir / "inject.trace";
    Observed o;
    {
      std::vector<std::string> argv{strace_path(), "-f", "-qq", "-s", "300", "-o", trace, "-e", kTraced};
      argv.insert(argv.end(), inject.begin(), inject.end());
      Wrapped s(dir.path(), argv, server_env(dir.path(), "always"));
      REQUIRE(s.start());
      // The client retries the refused batch at once, as a client would.
      std::vector<Batch> batches;
      for (const auto& b : workload()) {
        batches.push_back(b);
        if (batches.size() != c.batch) continue;
        Batch retry = b;
        for (auto& w : retry) {
          std::string id = w.id + "-retry";
          w.line.replace(w.line.find("\"" + w.id + "\""), w.id.size() + 2, "\"" + id + "\"");
          w.id = id;
        }
        batches.push_back(retry);
      }
      o = drive(s.port(), batches);
      CHECK(o.batch[c.batch - 1] == 0);
      CHECK(o.batch[c.batch] == 1);
      s.signal_server(SIGTERM);
      REQUIRE(s.wait(milliseconds(10000)) == 0);
    }
    std::string index = slurp(dir / "leveldb/index");
    std::vector<std::string> hashes;
    for (size_t at = 0; at + kRecordSize <= index.size(); at += kRecordSize) hashes.push_back(index.substr(at, 64));
    check_names_synced_before_confirmation(slurp(trace), dir.path(), hashes);
    runs++;
  }
  CHECK(runs > 0);
}
