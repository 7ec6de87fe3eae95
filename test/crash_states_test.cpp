// Power loss, explored (issue 9): every workload below is recorded once under strace, and the
// crash-state explorer (crash_explorer.hpp) has the real server recover every state a power
// cut at each recorded call may leave under the persistence model (fs_model.hpp).
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
    o.max_states = static_cast<size_t>(dur::env_long("CRASH_MAX_STATES", 400));
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

// Single writes one at a time (the per-blob fdatasync path), a stream reader from the start.
// Entries of 20, 700 and 5000 bytes: blobs that tear at 512 and at 4096 bytes.
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

// Batches of 8 or more new blobs (the syncfs path under SYNC=always), one with a duplicate.
Recorder& big_batches(Recorder& r, const std::string& sync) {
  r.run(sync, [&](int port) {
    Client reader(port);
    reader.send_line("{\"from\":1}");
    REQUIRE(reader.read_line() == "{\"current\":true}");
    Client c(port);
    std::vector<Write> first, second;
    for (int i = 0; i < 10; i++) first.push_back(noted(r, entry_write("big-a" + std::to_string(i), 100 + i, 10 + i)));
    for (int i = 0; i < 9; i++) second.push_back(noted(r, entry_write("big-b" + std::to_string(i), 200 + i, 600)));
    second.push_back(noted(r, with_id(first[3], "big-b-again")));
    for (const auto& batch : {first, second})
      for (const auto& reply : send_batch(c, batch)) REQUIRE(confirmed(reply));
    follow_to(reader, 20);
  });
  r.finish(sync);
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

// A write that fails (ENOSPC from strace) and its retry: once on the batch's first write to a
// file (a blob), once on its last (the index append). Batches 2 and 4 fail; 3 and 5 retry them.
Recorder& enospc_then_retry(Recorder& r, const std::string& sync) {
  std::vector<std::vector<Write>> batches{
      {entry_write("ok-1", 1, 10), entry_write("ok-2", 2, 20)},
      {entry_write("fail-3", 3, 30), entry_write("fail-4", 4, 40)},
      {},
      {entry_write("fail-5", 5, 50), entry_write("fail-6", 6, 60)},
      {},
      {entry_write("ok-7", 7, 70)}};
  batches[2] = {with_id(batches[1][0], "retry-3"), with_id(batches[1][1], "retry-4")};
  batches[4] = {with_id(batches[3][0], "retry-5"), with_id(batches[3][1], "retry-6")};
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
  std::string first, second;
  {
    Recorder dry(r.recording().name, "dry run");
    dry.run(sync, drive(dry, {}));
    first = inject_at_write(dry.recording().phases[0].trace, dry.root(), 2, sizes, false, "ENOSPC");
  }
  {
    Recorder dry(r.recording().name, "dry run");
    dry.run(sync, drive(dry, {2}), SIGTERM, {first});
    second = inject_at_write(dry.recording().phases[0].trace, dry.root(), 4, sizes, true, "ENOSPC");
  }
  r.run(sync, drive(r, {2, 4}), SIGTERM, {first, second});
  r.finish(sync);
  return r;
}

// A restart on a store whose index ends with a zeroed record and a torn one (as a power cut
// leaves it), then more writes. The three entries stored before are promises too.
Recorder& torn_tail_restart(Recorder& r, const std::string& sync) {
  std::map<uint64_t, std::string> stored;
  {
    harness::ServerProcess s(r.root());
    s.env("BLOBS", r.blobs()).env("LEVELDB", r.leveldb()).start();
    for (int i = 1; i <= 3; i++) {
      Write w = entry_write("before-" + std::to_string(i), 10 + i, 10 * i);
      CHECK(dur::write_one(s.port(), w.id, w.canonical) == static_cast<uint64_t>(i));
      stored[i] = w.canonical;
    }
    CHECK(s.stop_term() == 0);
  }
  for (const auto& name : dur::list_dir(r.root()))
    if (name.rfind("server-", 0) == 0) std::filesystem::remove(r.root() + "/" + name);
  dur::spit(r.leveldb() + "/index", std::string(65, '\0') + std::string(30, '7'), true);
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

// A sync's call with its hashes shortened: "fsync(blobs/<hash>)".
std::string shape(const std::string& what) {
  std::string out;
  for (size_t i = 0; i < what.size();) {
    size_t j = i;
    while (j < what.size() && std::isxdigit(static_cast<unsigned char>(what[j]))) j++;
    if (j - i >= 2 && (j == what.size() || what[j] == ')' || what[j] == '.') && i > 0 && what[i - 1] == '/') {
      out += "<hash>";
      i = j;
    } else {
      out += what[i++];
    }
  }
  return out.substr(0, out.find("..."));
}

// Whether a promise can rest on the dropped syncs alone: not if a later sync that covers all
// they cover (a syncfs of the same file system, or a sync of the same file) comes before the
// server next tells a client of an entry, nor if an earlier one did and nothing changed since.
std::string covered_by(const std::vector<Event>& ev, const std::set<size_t>& dropped) {
  auto covers = [&](const Event& a, const Event& b) {
    return a.is_sync() && ((a.ino < 0 && (a.fs < 0 || a.fs == b.fs)) || (a.ino >= 0 && a.ino == b.ino));
  };
  auto promise = [](const Event& e) { return e.kind == Event::Kind::Send && e.bytes.find("\"index\":") != std::string::npos; };
  auto covers_all = [&](size_t j) {
    for (size_t k : dropped)
      if (!covers(ev[j], ev[k]) || ev[j].phase != ev[k].phase) return false;
    return true;
  };
  for (size_t j = *dropped.rbegin() + 1; j < ev.size() && !promise(ev[j]); j++)
    if (!dropped.count(j) && covers_all(j)) return "the next " + ev[j].what + " covers it before any entry is promised";
  for (size_t j = *dropped.begin(); j-- > 0;) {
    if (ev[j].kind != Event::Kind::Close && ev[j].kind != Event::Kind::Send && !ev[j].is_sync()) break;
    if (covers_all(j)) return "the " + ev[j].what + " just before it covered it already";
  }
  return {};
}

// Explores `rec` once per sync of its SYNC=always runs left out (and once without all the
// startup syncs of each such run): each must show a violation unless covered_by() explains why
// it cannot. In the slice, one sync of each shape per batch position.
void prove_syncs_needed(Recorder& r) {
  const Recording& rec = r.recording();
  std::vector<Event> ev = events_of(r, rec);
  struct Drop {
    std::set<size_t> events;
    std::string label, covered;
  };
  std::vector<Drop> drops;
  std::set<std::string> shapes;
  std::vector<bool> served(rec.phases.size(), false);  // a phase has sent to a client
  std::map<size_t, std::set<size_t>> startup;          // phase -> its syncs before serving
  std::map<std::string, int> since_send;               // shape -> count since the last send
  for (size_t k = 0; k < ev.size(); k++) {
    const Event& e = ev[k];
    if (e.kind == Event::Kind::Send) {
      served[e.phase] = true;
      since_send.clear();
      continue;
    }
    if (!e.is_sync() || rec.phases[e.phase].sync != "always") continue;
    if (!served[e.phase]) {
      startup[e.phase].insert(k);
      continue;
    }
    int nth = ++since_send[shape(e.what)];
    if (!full() && !shapes.insert(shape(e.what) + " #" + std::to_string(nth)).second) continue;
    drops.push_back({{k}, "without " + e.what + (nth > 1 ? " #" + std::to_string(nth) + " of its batch" : "") +
                              " (server run " + std::to_string(e.phase + 1) + ")", covered_by(ev, {k})});
  }
  for (const auto& [phase, ks] : startup)
    drops.push_back({ks, "without the " + std::to_string(ks.size()) + " startup sync(s) of server run " +
                             std::to_string(phase + 1), covered_by(ev, ks)});
  REQUIRE(!drops.empty());
  for (const auto& d : drops) {
    ExploreOptions o = options();
    o.dropped = d.events;
    o.from_event = *d.events.begin();
    o.stop_at_violation = true;
    o.max_states = full() ? 1500 : 400;
    Tally t = explore(rec, ev, o);
    std::ostringstream line;
    line << "[crash-states] " << rec.name << ", " << rec.mode << ", " << d.label << ": " << t.states << " states, "
         << t.violations << " violations";
    bool ok = d.covered.empty() ? t.violations > 0 : true;
    if (!d.covered.empty()) line << " (needs none: " << d.covered << ")";
    else if (t.violations == 0) line << " -- NOT CAUGHT";
    std::cout << line.str() << ", " << std::fixed << std::setprecision(1) << t.seconds << " s" << std::endl;
    if (t.violations > 0 && !t.examples.empty()) std::cout << "    first: " << t.examples.front() << std::endl;
    INFO(d.label);
    CHECK_MESSAGE(ok, "the explorer found no violation with a sync left out that nothing else covers");
    (ok ? summary.passed : summary.failed)++;
  }
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
TEST_CASE("crash states: batches of 8+ new blobs, SYNC=always") {
  Recorder r("batches of 8+ new blobs", "SYNC=always");
  explore_and_expect_none(big_batches(r, "always"));
}
TEST_CASE("crash states: batches of 8+ new blobs, SYNC=none") {
  Recorder r("batches of 8+ new blobs", "SYNC=none");
  explore_and_expect_none(big_batches(r, "none"));
}
TEST_CASE("crash states: the same entry stored under SYNC=none, then written again to a SYNC=always server") {
  Recorder r("the same entry twice", "SYNC=none, then SYNC=always");
  explore_and_expect_none(same_entry_twice(r));
}
TEST_CASE("crash states: a SYNC=none server killed, then restarted with SYNC=none") {
  Recorder r("SYNC=none killed and restarted", "SYNC=none");
  explore_and_expect_none(none_killed_and_restarted(r));
}
TEST_CASE("crash states: ENOSPC on a blob write and on an index append, each retried, SYNC=always") {
  Recorder r("ENOSPC then retry", "SYNC=always");
  explore_and_expect_none(enospc_then_retry(r, "always"));
}
TEST_CASE("crash states: ENOSPC on a blob write and on an index append, each retried, SYNC=none") {
  Recorder r("ENOSPC then retry", "SYNC=none");
  explore_and_expect_none(enospc_then_retry(r, "none"));
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

TEST_CASE("sync removal: without any one sync of the commit path, a crash state violates a promise (single writes)") {
  Recorder r("single writes", "SYNC=always");
  prove_syncs_needed(single_writes(r, "always"));
}
TEST_CASE("sync removal: without any one sync of the syncfs path, a crash state violates a promise (batches of 8+ new blobs)") {
  Recorder r("batches of 8+ new blobs", "SYNC=always");
  prove_syncs_needed(big_batches(r, "always"));
}
TEST_CASE("sync removal: without the startup syncs of a SYNC=always server, an entry stored under SYNC=none and confirmed again can be lost") {
  Recorder r("the same entry twice", "SYNC=none, then SYNC=always");
  prove_syncs_needed(same_entry_twice(r));
}
