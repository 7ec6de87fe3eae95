// Power loss, explored (issue 9), on the commit path of the write-ahead journal (issue 10):
// every workload below is recorded once under strace, and the crash-state explorer
// (crash_explorer.hpp) has the real server recover every state a power cut at each recorded
// call may leave under the persistence model (fs_model.hpp). Every run, recorded or recovering,
// has a 128 KiB journal (small_journal()), so that checkpoints, side switches, retired sides
// written again and resets all happen inside the workloads.
//
// `make test` runs a bounded, seeded slice; `make crash-states` (CRASH_STATES=full) the whole
// exploration. SEED=<n> replays either; CRASH_JOBS sets how many states recover at once;
// CRASH_STATE_DIR where they are written (default /dev/shm: the states need no real disk).
// Each exploration prints "<workload>, <mode>: T trace points, N states, M violations"; the
// run ends with "N passed, M failed".
#include <iomanip>

#include "crash_workloads.hpp"

using namespace crash;
using dur::Write;

namespace {

bool full() {
  const char* v = std::getenv("CRASH_STATES");
  return v && std::string(v) == "full";
}

ExploreOptions options() {
  ExploreOptions o;
  o.seed = dur::base_seed();
  o.jobs = static_cast<size_t>(dur::env_long("CRASH_JOBS", 2));
  if (full()) {
    o.exhaustive = 1024;
    o.samples = 32;
    o.cap = 16;
    o.max_states = static_cast<size_t>(dur::env_long("CRASH_MAX_STATES", 6000));
  } else {
    o.exhaustive = 64;
    o.samples = 4;
    o.cap = 4;
    o.max_states = static_cast<size_t>(dur::env_long("CRASH_MAX_STATES", 300));
  }
  return o;
}

// The closing line: explorations (and sync-removal proofs) that passed and failed.
struct Summary {
  int passed = 0, failed = 0;
  ~Summary() {
    if (passed + failed > 0) std::cout << "[crash-states] " << passed << " passed, " << failed << " failed" << std::endl;
  }
} summary;

std::vector<Event> events_of(Recorder& r, const Recording& rec) {
  TraceReader reader(rec.root, rec.initial);
  try {
    return reader.read(rec.phases, r.devices());
  } catch (const std::exception& e) {
    FAIL("cannot follow the trace of " << rec.name << ": " << e.what());
  }
  return {};
}

void print(const std::string& label, const Tally& t) {
  std::cout << "[crash-states] " << label << ": " << t.trace_points << " trace points, " << t.states << " states ("
            << t.distinct << " distinct), " << t.violations << " violations";
  if (t.lossy) std::cout << "; SYNC=none promises lost in " << t.lossy << " states (at most " << t.most_lost << " entries)";
  std::cout << ", " << std::fixed << std::setprecision(1) << t.seconds << " s" << std::endl;
  for (const auto& e : t.examples) std::cout << "    " << e << std::endl;
}

// Explores a recording and expects no violation.
void explore_and_expect_none(Recorder& r) {
  const Recording& rec = r.recording();
  std::vector<Event> events = events_of(r, rec);
  Tally t = explore(rec, events, options());
  print(rec.name + ", " + rec.mode, t);
  INFO(rec.name << ", " << rec.mode << " (SEED=" << dur::base_seed() << ")");
  CHECK(t.states > 0);
  CHECK(t.violations == 0);
  (t.violations == 0 && t.states > 0 ? summary.passed : summary.failed)++;
}

Write noted(Recorder& r, const Write& w) { return r.note(w); }

// ---------------------------------------------------------------------------------------------
// The workloads

// Single writes one at a time (under SYNC=always, each one journal append and its fdatasync),
// a stream reader from the start. Entries of 20, 700, 5000 and 40 bytes: blobs and journal
// records that tear at 512 and at 4096 bytes. The clean stop checkpoints and resets the journal.
Recorder& single_writes(Recorder& r, const std::string& sync) {
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
void expect_sides_reused(const std::string& trace) {
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
Recorder& checkpointed_batches(Recorder& r, const std::string& sync) {
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
uint64_t side_generation(const std::string& journal, int side) {
  std::string bytes = read_file(journal);
  const size_t at = static_cast<size_t>(side) * (bytes.size() / 2);
  if (bytes.size() < at + 16 || bytes.compare(at, 8, "TLSJRNL1") != 0) return 0;
  uint64_t g = 0;
  for (int i = 7; i >= 0; i--) g = g << 8 | static_cast<unsigned char>(bytes[at + 8 + i]);
  return g;
}

// Waits (at most 15 s) until a checkpoint has given side `side` a new generation.
void wait_for_retire(const std::string& journal, int side, uint64_t before) {
  auto deadline = dur::Clock::now() + milliseconds(15000);
  while (side_generation(journal, side) == before && dur::Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(20));
  REQUIRE_MESSAGE(side_generation(journal, side) != before, "no checkpoint retired side " << side << " within 15 s");
}

// The checkpoint after a second without writes (SYNC=always): two writes, a pause until the
// idle checkpoint retired side 0, a write (to side 1), a pause until side 1 was retired too,
// and a write to side 0 again. A stream reader from the start.
Recorder& idle_checkpoints(Recorder& r) {
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
Recorder& replay_after_kill(Recorder& r, const std::string& restart) {
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
Recorder& same_entry_twice(Recorder& r) {
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
Recorder& none_killed_and_restarted(Recorder& r) {
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
// nothing appended), the journal's fdatasync (EIO: the records are zeroed, unsynced, and the
// retry writes over them), a blob write after the journal sync and the index append (ENOSPC:
// the batch's records are taken back, zeros synced); under SYNC=none the blob write and the
// index append. Faults come from strace (-e inject), at calls found by dry runs.
Recorder& enospc_then_retry(Recorder& r, const std::string& sync) {
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
  faults.push_back({"blob write", [=](const std::string& n, const std::string& p) { return n == "write" && blob(p); }, false, "ENOSPC"});
  faults.push_back({"index append", [=](const std::string& n, const std::string& p) { return n == "pwrite64" && index(p); }, true, "ENOSPC"});
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
Recorder& failed_checkpoint(Recorder& r) {
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

// A restart on a store whose index ends with a zeroed record and a torn one (as a power cut
// leaves it), then more writes. The three entries stored before are promises too.
Recorder& torn_tail_restart(Recorder& r, const std::string& sync) {
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
Recorder& concurrent(Recorder& r, const std::string& sync) {
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

// ---------------------------------------------------------------------------------------------
// Proof that the checker can fail: the trace with syncs left out must show violations.

// What a sync of a SYNC=always run is there for, told from the trace: the calls of the thread
// that answers clients (the first of its run) and of the checkpoint thread, and what was
// written to the journal by the same thread since its last sync of it.
enum class Role { Startup, Append, TakeBack, Checkpoint, Retire, StopSync, Reset, Other };

const char* role_name(Role r) {
  switch (r) {
    case Role::Startup: return "startup sync";
    case Role::Append: return "the journal append's fdatasync";
    case Role::TakeBack: return "the fdatasync of a failed batch's zeroed records";
    case Role::Checkpoint: return "the checkpoint's syncfs";
    case Role::Retire: return "the checkpoint's fdatasync of a retired side's header";
    case Role::StopSync: return "the clean stop's syncfs";
    case Role::Reset: return "the clean stop's fdatasync of the reset journal";
    case Role::Other: return "sync";
  }
  return "sync";
}

std::map<size_t, Role> sync_roles(const Recording& rec, const std::vector<Event>& ev) {
  std::map<size_t, Role> out;
  std::map<size_t, long> main_tid;                    // phase -> its first thread
  std::set<size_t> served;                            // phases that have sent to a client
  std::map<std::pair<long, crashfs::Ino>, std::vector<size_t>> written;  // (thread, file) -> writes since its sync
  for (size_t k = 0; k < ev.size(); k++) {
    const Event& e = ev[k];
    main_tid.emplace(e.phase, e.tid);
    if (e.kind == Event::Kind::Send) served.insert(e.phase);
    if (e.kind == Event::Kind::Write) written[{e.tid, e.ino}].push_back(k);
    if (!e.is_sync()) continue;
    std::vector<size_t> writes;
    if (e.ino >= 0) writes = std::move(written[{e.tid, e.ino}]), written.erase({e.tid, e.ino});
    if (rec.phases[e.phase].sync != "always") continue;
    const bool main = e.tid == main_tid[e.phase];
    Role role = Role::Other;
    if (!served.count(e.phase)) {
      role = Role::Startup;
    } else if (e.ino < 0) {
      role = main ? Role::StopSync : Role::Checkpoint;
    } else if (e.what.find("leveldb/journal)") != std::string::npos && !writes.empty()) {
      bool header = false, zeros = true;
      for (size_t w : writes) {
        header = header || (ev[w].bytes.size() == 4096 && ev[w].bytes.compare(0, 8, "TLSJRNL1") == 0);
        zeros = zeros && ev[w].bytes.find_first_not_of('\0') == std::string::npos;
      }
      role = header ? (main ? Role::Reset : Role::Retire) : zeros ? Role::TakeBack : Role::Append;
    }
    out[k] = role;
  }
  return out;
}

// Whether a promise can rest on the dropped syncs alone: not if a later sync that covers all
// they cover (a syncfs of the same file system, or a sync of the same file, begun after them)
// comes before the server next tells a client of an entry, nor if an earlier one did and
// nothing changed since.
std::string covered_by(const std::vector<Event>& ev, const std::set<size_t>& dropped) {
  auto covers = [&](const Event& a, const Event& b) {
    return a.is_sync() && a.began >= b.began && ((a.ino < 0 && (a.fs < 0 || a.fs == b.fs)) || (a.ino >= 0 && a.ino == b.ino));
  };
  auto promise = [](const Event& e) { return e.kind == Event::Kind::Send && e.bytes.find("\"index\":") != std::string::npos; };
  auto covers_all = [&](size_t j) {
    for (size_t k : dropped)
      if (!covers(ev[j], ev[k]) || ev[j].phase != ev[k].phase) return false;
    return true;
  };
  for (size_t j = *dropped.rbegin() + 1; j < ev.size() && !promise(ev[j]); j++)
    if (!dropped.count(j) && covers_all(j)) return "the next " + ev[j].what + " covers it before any entry is promised";
  // Back to an earlier sync that covers all they cover, across closes, sends, other syncs, and
  // writes each made durable by a sync of its own file (in the same thread, after it) before the
  // dropped ones: e.g. an idle checkpoint's syncfs, then its retire's header write and journal
  // fdatasync, then the clean stop's syncfs, which finds nothing left to make durable.
  std::map<crashfs::Ino, long> file_synced;  // file -> the thread that synced it, later in time
  for (size_t j = *dropped.begin(); j-- > 0;) {
    const Event& e = ev[j];
    if (e.is_sync()) {
      if (covers_all(j)) return "the " + e.what + " just before it covered it already";
      if (e.ino >= 0) file_synced.emplace(e.ino, e.tid);
      continue;
    }
    if (e.kind == Event::Kind::Close || e.kind == Event::Kind::Send) continue;
    const bool synced_since = (e.kind == Event::Kind::Write || e.kind == Event::Kind::Resize) &&
                              file_synced.count(e.ino) && file_synced.at(e.ino) == e.tid;
    if (!synced_since) break;
  }
  return {};
}

// Whether nothing was left to make durable when event `k` began: the model, replayed up to it
// with every sync, holds no unsynced change, so that leaving that sync out changes no state. A
// clean stop's syncfs after an idle checkpoint, or a checkpoint's syncfs after another that began
// once the batches before it were written: whether that happens in a run depends on timing.
bool nothing_unsynced_at(const Recording& rec, const std::vector<Event>& ev, size_t k) {
  bool none = false;
  ExploreOptions all_syncs;
  replay_model(
      rec, ev, all_syncs,
      [&](size_t at, const crashfs::FsModel& model) {
        if (at == k) none = model.units(0, 1).empty();
      },
      [](const Event&) {});
  return none;
}

// Explores `rec` once per sync of its SYNC=always runs left out (and once without all the
// startup syncs of each such run). A sync that makes entries durable (a journal append's, a
// checkpoint's or a clean stop's syncfs, the startup syncs) must show a violation unless
// covered_by() explains why it cannot. A sync that only makes a journal header or zeros durable
// (a retired side, a reset, a failed batch's records taken back) protects no promise when a later
// sync of the journal does not cover it: losing it can only make the journal replay entries that
// are durable already (or, for zeros, replay a refused batch, which no client was promised);
// with it left out the explorer must find no violation at all. The first look is at the state
// with every unsynced change lost at each point (few distinct states: cheap); only if none of
// them shows a violation are the others explored, up to a bound.
// Returns, per role, how many of its syncs left out showed a violation.
std::map<Role, int> prove_syncs_needed(Recorder& r) {
  const Recording& rec = r.recording();
  std::vector<Event> ev = events_of(r, rec);
  const std::map<size_t, Role> roles = sync_roles(rec, ev);
  struct Drop {
    std::set<size_t> events;
    Role role;
    std::string label, covered;
  };
  std::vector<Drop> drops;
  std::map<size_t, std::set<size_t>> startup;  // phase -> its syncs before serving
  std::map<std::pair<size_t, Role>, int> nth;
  for (const auto& [k, role] : roles) {
    const Event& e = ev[k];
    if (role == Role::Startup) {
      startup[e.phase].insert(k);
      continue;
    }
    const int n = ++nth[{e.phase, role}];
    std::string covered = covered_by(ev, {k});
    if (covered.empty() && nothing_unsynced_at(rec, ev, k)) covered = "nothing was left unsynced when it began";
    drops.push_back({{k}, role, std::string("without ") + role_name(role) + " #" + std::to_string(n) + ", " + e.what +
                                   " (server run " + std::to_string(e.phase + 1) + ")", covered});
  }
  for (const auto& [phase, ks] : startup)
    drops.push_back({ks, Role::Startup, "without the " + std::to_string(ks.size()) + " startup sync(s) of server run " +
                                            std::to_string(phase + 1), covered_by(ev, ks)});
  REQUIRE(!drops.empty());
  std::map<Role, int> caught;
  for (const auto& d : drops) {
    const bool harmless = d.role == Role::Retire || d.role == Role::Reset || d.role == Role::TakeBack;
    const bool needed = d.covered.empty() && !harmless;
    if (!d.covered.empty() && !full()) {  // nothing to prove; the whole exploration explores it all the same
      std::cout << "[crash-states] " << rec.name << ", " << rec.mode << ", " << d.label << ": needs none: " << d.covered
                << " (explored by make crash-states)" << std::endl;
      summary.passed++;
      continue;
    }
    ExploreOptions o = options();
    o.dropped = d.events;
    o.from_event = *d.events.begin();
    o.stop_at_violation = true;
    o.max_states = full() ? 1500 : needed ? 300 : 100;
    Tally t = explore(rec, ev, o);
    std::ostringstream line;
    line << "[crash-states] " << rec.name << ", " << rec.mode << ", " << d.label << ": " << t.states << " states, "
         << t.violations << " violations";
    bool ok = true;
    if (!d.covered.empty()) {
      line << " (needs none: " << d.covered << ")";
    } else if (harmless) {
      ok = t.violations == 0;
      line << (ok ? " (as expected: it makes no entry durable)" : " -- A VIOLATION WITHOUT A SYNC THAT PROTECTS NO ENTRY");
    } else {
      ok = t.violations > 0;
      if (!ok) line << " -- NOT CAUGHT";
    }
    std::cout << line.str() << ", " << std::fixed << std::setprecision(1) << t.seconds << " s" << std::endl;
    if (t.violations > 0 && !t.examples.empty()) std::cout << "    first: " << t.examples.front() << std::endl;
    INFO(d.label);
    CHECK_MESSAGE(ok, (needed ? "the explorer found no violation with a sync left out that nothing else covers"
                              : "a violation with a sync left out that makes no entry durable"));
    (ok ? summary.passed : summary.failed)++;
    if (needed && t.violations > 0) caught[d.role]++;
  }
  return caught;
}

}  // namespace

TEST_CASE("crash states: single writes one at a time, SYNC=always") {
  Recorder r("single writes", "SYNC=always");
  explore_and_expect_none(single_writes(r, "always"));
}
TEST_CASE("crash states: single writes one at a time, SYNC=none") {
  Recorder r("single writes", "SYNC=none");
  explore_and_expect_none(single_writes(r, "none"));
}
TEST_CASE("crash states: batches that fill the journal's sides (checkpoints, a retired side written again), SYNC=always") {
  Recorder r("batches filling journal sides", "SYNC=always");
  explore_and_expect_none(checkpointed_batches(r, "always"));
}
TEST_CASE("crash states: the same batches, SYNC=none") {
  Recorder r("batches filling journal sides", "SYNC=none");
  explore_and_expect_none(checkpointed_batches(r, "none"));
}
TEST_CASE("crash states: checkpoints after a second without writes, each side retired and written again, SYNC=always") {
  Recorder r("idle checkpoints", "SYNC=always");
  explore_and_expect_none(idle_checkpoints(r));
}
TEST_CASE("crash states: the same entry stored under SYNC=none, then written again to a SYNC=always server") {
  Recorder r("the same entry twice", "SYNC=none, then SYNC=always");
  explore_and_expect_none(same_entry_twice(r));
}
TEST_CASE("crash states: a SYNC=none server killed, then restarted with SYNC=none") {
  Recorder r("SYNC=none killed and restarted", "SYNC=none");
  explore_and_expect_none(none_killed_and_restarted(r));
}
TEST_CASE("crash states: failed journal append, journal sync, blob write and index append, each retried, SYNC=always") {
  Recorder r("faults then retry", "SYNC=always");
  explore_and_expect_none(enospc_then_retry(r, "always"));
}
TEST_CASE("crash states: failed blob write and index append, each retried, SYNC=none") {
  Recorder r("faults then retry", "SYNC=none");
  explore_and_expect_none(enospc_then_retry(r, "none"));
}
TEST_CASE("crash states: a checkpoint whose syncfs fails, writes refused, exit 1, the journal replayed by the next start, SYNC=always") {
  Recorder r("failed checkpoint, restart", "SYNC=always");
  explore_and_expect_none(failed_checkpoint(r));
}
TEST_CASE("crash states: a restart on a torn tail, then more writes, SYNC=always") {
  Recorder r("torn tail, restart, more writes", "SYNC=always");
  explore_and_expect_none(torn_tail_restart(r, "always"));
}
TEST_CASE("crash states: a restart on a torn tail, then more writes, SYNC=none") {
  Recorder r("torn tail, restart, more writes", "SYNC=none");
  explore_and_expect_none(torn_tail_restart(r, "none"));
}
TEST_CASE("crash states: concurrent writers and a reader, SYNC=always") {
  Recorder r("concurrent writers and a reader", "SYNC=always");
  explore_and_expect_none(concurrent(r, "always"));
}
TEST_CASE("crash states: concurrent writers and a reader, SYNC=none") {
  Recorder r("concurrent writers and a reader", "SYNC=none");
  explore_and_expect_none(concurrent(r, "none"));
}
TEST_CASE("crash states: a SYNC=always server killed with entries in its journal; the replay and the reset of the next start, SYNC=always") {
  Recorder r("journal replayed after kill -9", "SYNC=always, then SYNC=always");
  explore_and_expect_none(replay_after_kill(r, "always"));
}
TEST_CASE("crash states: a SYNC=always server killed with entries in its journal; the replay and the reset of the next start, SYNC=none") {
  Recorder r("journal replayed after kill -9", "SYNC=always, then SYNC=none");
  explore_and_expect_none(replay_after_kill(r, "none"));
}

TEST_CASE("sync removal: single writes (the journal append's fdatasync, the clean stop's syncfs and reset, the startup syncs)") {
  Recorder r("single writes", "SYNC=always");
  prove_syncs_needed(single_writes(r, "always"));
}
TEST_CASE("sync removal: batches filling the journal's sides (the checkpoint's syncfs and its retire's fdatasync)") {
  Recorder r("batches filling journal sides", "SYNC=always");
  // Whatever the timing made vacuous, some checkpoint's syncfs and some append's fdatasync here
  // are needed, and the explorer must see that each is.
  auto caught = prove_syncs_needed(checkpointed_batches(r, "always"));
  CHECK(caught[Role::Checkpoint] > 0);
  CHECK(caught[Role::Append] > 0);
}
TEST_CASE("sync removal: idle checkpoints") {
  Recorder r("idle checkpoints", "SYNC=always");
  prove_syncs_needed(idle_checkpoints(r));
}
TEST_CASE("sync removal: failed batches taken back from the journal") {
  Recorder r("faults then retry", "SYNC=always");
  prove_syncs_needed(enospc_then_retry(r, "always"));
}
TEST_CASE("sync removal: without the startup syncs of a SYNC=always server, an entry stored under SYNC=none and confirmed again can be lost") {
  Recorder r("the same entry twice", "SYNC=none, then SYNC=always");
  prove_syncs_needed(same_entry_twice(r));
}
TEST_CASE("sync removal: the replay of a killed server's journal (its startup syncs)") {
  Recorder r("journal replayed after kill -9", "SYNC=always, then SYNC=always");
  prove_syncs_needed(replay_after_kill(r, "always"));
}
