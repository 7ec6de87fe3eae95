// Durability and crash safety (issues 3 and 10): kill -9 under load (with SYNC=always, half the
// stores with a 128 KiB journal, so that the kills land among checkpoints), during recovery and
// during the replay of a journal, torn and garbage tails, the directory locks, SIGTERM under
// load, --check, bounded startup cost.
//
// Seeded: SEED=<n> replays a run (the seed is printed first). CRASH_ROUNDS (default 25) sets the
// kill -9 rounds per SYNC mode; `make crash-soak ROUNDS=N` runs them alone, N per mode.
#include "durability_harness.hpp"

using namespace dur;
using harness::Client;
using harness::ServerProcess;

namespace {

struct CrashStats {
  uint64_t rounds = 0, kills = 0, in_flight_at_kill = 0, sent = 0, confirmed = 0, unanswered = 0,
           reader_entries = 0, violations = 0, max_head = 0;
  uint64_t warn_torn = 0, warn_cut = 0, warn_tmp = 0;  // recovery warn lines by kind
  uint64_t replays = 0, small_journal_rounds = 0;      // SYNC=always: restarts that replayed the journal
};

// Every other store (the first included) has a 128 KiB journal under SYNC=always: a side is
// half full after about 30 KB of records, so checkpoints, side switches and retired sides
// written again happen all through the load, and the kills land in them. The others keep the
// default 64 MiB journal, which the load never fills: only the idle checkpoint and the replay.
void configure(ServerProcess& s, const std::string& sync, bool small) {
  s.env("SYNC", sync);
  if (small) s.env(small_journal());
}

// Rounds of: load (pipelining writers + two stream readers from 1) -> kill -9 at a random
// moment -> restart on the same directories -> invariants -> a new write gets head+1. The
// store and every promise carry over from round to round, up to `per_store` rounds per store.
void crash_rounds(const std::string& sync, long rounds, Rng& rng, CrashStats& st) {
  const long per_store = env_long("CRASH_ROUNDS_PER_STORE", 25);
  for (long done = 0, store = 0; done < rounds; store++) {
    TempDir dir;
    Promises promises;
    Authors authors;
    const bool small_journal = sync == "always" && store % 2 == 0;
    auto server = std::make_unique<ServerProcess>(dir.path());
    configure(*server, sync, small_journal);
    server->start();
    for (long r = 0; r < per_store && done < rounds; r++, done++) {
      std::string ctx = "SYNC=" + sync + " round " + std::to_string(done) + " (seed " +
                        std::to_string(base_seed()) + ")";
      INFO(ctx);
      LoadOptions o;
      o.round = static_cast<uint64_t>(done);
      o.writers = static_cast<int>(rng.range(2, 6));
      o.readers = 2;
      o.max_per_writer = rng.range(50, 600);
      o.window = static_cast<size_t>(rng.range(4, 200));
      const uint64_t planned = o.max_per_writer * static_cast<uint64_t>(o.writers);
      Load load(server->port(), o, &promises, &authors, &rng);
      // The moment: early (before or at the first commits) or once a random share is confirmed.
      auto start = Clock::now();
      if (rng.chance(0.15)) {
        load.step(milliseconds(rng.below(6)));
      } else {
        uint64_t target = rng.below(planned * 9 / 10) + 1;
        while (load.confirmed() < target && Clock::now() - start < milliseconds(3000))
          load.step(milliseconds(1));
        auto extra = std::chrono::microseconds(rng.below(1500));
        auto until = Clock::now() + extra;
        while (Clock::now() < until) load.step(milliseconds(0));
      }
      REQUIRE_MESSAGE(server->running(), "the server died on its own under load; stdout: "
                                             << harness::detail::tail(server->stdout_text(), 600));
      bool in_flight = !load.idle();
      CHECK(server->kill9() == 128 + SIGKILL);
      load.drain(milliseconds(3000));
      const LoadResult& lr = load.result();
      CHECK_MESSAGE(lr.errors == 0, "write errors without any fault: "
                                        << (lr.first_errors.empty() ? std::string() : lr.first_errors.front()));
      st.kills++;
      st.in_flight_at_kill += in_flight;
      st.sent += lr.sent;
      st.confirmed += lr.confirmed;
      st.unanswered += load.unanswered().size();
      st.reader_entries += lr.reader_entries;

      server = std::make_unique<ServerProcess>(dir.path());
      configure(*server, sync, small_journal);
      server->start();
      auto lines = server->log_lines();
      st.replays += lines_with(lines, kWarn, "journal record(s)").size() > 0;
      st.small_journal_rounds += small_journal;
      st.warn_torn += lines_with(lines, kWarn, "torn record").size();
      st.warn_cut += lines_with(lines, kWarn, "unconfirmed record").size();
      st.warn_tmp += lines_with(lines, kWarn, "unfinished blob").size();
      Snapshot snap = read_store(server->blobs_dir(), server->leveldb_dir());
      st.violations += check_invariants(snap, promises, ctx);
      st.violations += authors.check_log(snap, ctx);
      st.max_head = std::max<uint64_t>(st.max_head, snap.head());
      // New writes continue at head+1.
      std::string probe = "{\"probe\":" + std::to_string(done) + "}";
      uint64_t index = write_one(server->port(), "probe-" + std::to_string(done), probe);
      CHECK_MESSAGE(index == snap.head() + 1, "a new write after the restart got " << index
                                                                                 << ", head was " << snap.head());
      promises.confirm("probe-" + std::to_string(done), index, probe);
      authors.shared.insert(probe);
      st.rounds++;
      if (st.violations > 0) break;  // the first failing round is the one to replay
    }
    CHECK(server->stop_term() == 0);
    if (st.violations > 0) return;
  }
}

void report(const std::string& sync, const CrashStats& st, double seconds) {
  std::ostringstream m;
  m << "crash rounds SYNC=" << sync << ": " << st.rounds << " rounds, " << st.kills << " kill -9 ("
    << st.in_flight_at_kill << " with writes in flight), " << st.sent << " writes sent, "
    << st.confirmed << " confirmed, " << st.unanswered << " unanswered at the kill, "
    << st.reader_entries << " entries sent to readers; recovery cut a torn record "
    << st.warn_torn << "x, cut bad tail records " << st.warn_cut << "x, removed temp blobs "
    << st.warn_tmp << "x; restarts that replayed the journal " << st.replays << " (" << st.small_journal_rounds
    << " rounds with a 128 KiB journal); largest log " << st.max_head << ", violations (lost/changed/bad) "
    << st.violations << ", " << seconds << " s";
  MESSAGE(m.str());
}

void crash_case(const std::string& sync) {
  Rng rng("crash under load SYNC=" + sync);
  INFO("SEED=" << base_seed());
  long rounds = env_long("CRASH_ROUNDS", 25);
  CrashStats st;
  auto t0 = Clock::now();
  crash_rounds(sync, rounds, rng, st);
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  report(sync, st, secs);
  CHECK(st.violations == 0);
  CHECK(st.kills == static_cast<uint64_t>(rounds));
}

}  // namespace

TEST_CASE("crash under load: kill -9 at random moments, SYNC=none") { crash_case("none"); }

TEST_CASE("crash under load: kill -9 at random moments, SYNC=always") { crash_case("always"); }

// =============================================================================================
// kill -9 during startup recovery

namespace {

// A store whose recovery has real work: `good` records naming one good blob, then
// kMaxBatchEntries records naming a blob whose bytes do not hash to its name (each must be read
// and hashed before it is cut), then a torn record.
void build_recovery_store(const std::string& blobs, const std::string& leveldb, uint64_t good,
                          const std::string& good_entry) {
  std::filesystem::create_directories(leveldb);
  std::string g = put_blob(blobs, good_entry);
  std::string bad_bytes(16 * 1024, 'x');
  std::string bad = sha256_hex("not the bytes below");
  std::filesystem::create_directories(blobs + "/" + bad.substr(0, 2));
  write_file(blob_path(blobs, bad), bad_bytes);
  std::string index;
  index.reserve((good + kMaxBatchEntries) * kRecordSize + 64);
  for (uint64_t i = 0; i < good; i++) index.append(g).push_back('\n');
  for (size_t i = 0; i < kMaxBatchEntries; i++) index.append(bad).push_back('\n');
  index.append(std::string(30, '7'));
  write_file(leveldb + "/index", index);
}

}  // namespace

TEST_CASE("kill -9 during startup recovery, repeatedly, then a full recovery keeps every good entry") {
  Rng rng("kill during recovery");
  INFO("SEED=" << base_seed());
  const uint64_t good = 20000;
  const std::string entry = "{\"good\":true}";
  TempDir dir;
  const std::string blobs = dir / "blobs", leveldb = dir / "leveldb";
  build_recovery_store(blobs, leveldb, good, entry);

  // How long an uninterrupted recovery of the same store takes, to spread the kills over it.
  // The first start also flushes the freshly built store to disk (syncfs), which no later start
  // has to do: so the second start is timed, or the kills would mostly land after listening.
  std::chrono::microseconds full{0};
  {
    TempDir probe_dir;
    build_recovery_store(probe_dir / "blobs", probe_dir / "leveldb", good, entry);
    for (int start = 0; start < 2; start++) {
      Wrapped probe(probe_dir.path(), {}, {{"PORT", "0"}, {"BLOBS", probe_dir / "blobs"},
                                           {"LEVELDB", probe_dir / "leveldb"}});
      REQUIRE(probe.start());
      full = probe.listening_after();
      probe.signal_server(SIGTERM);
      CHECK(probe.wait(milliseconds(10000)) == 0);
    }
  }
  const int kills = static_cast<int>(env_long("RECOVERY_KILLS", 12));
  int during = 0;
  for (int k = 0; k < kills; k++) {
    Wrapped s(dir.path(), {}, {{"PORT", "0"}, {"BLOBS", blobs}, {"LEVELDB", leveldb}});
    s.launch();
    auto delay = std::chrono::microseconds(rng.below(static_cast<uint64_t>(full.count()) + 1));
    std::this_thread::sleep_for(delay);
    s.signal_child(SIGKILL);
    REQUIRE(s.wait(milliseconds(10000)).has_value());
    bool listened = s.out().find("\"msg\":\"listening\"") != std::string::npos;
    if (!listened) during++;
    // Whatever the kill interrupted, the good records are untouched and nothing was added.
    long long size = file_size(leveldb + "/index");
    CHECK(size >= static_cast<long long>(good * kRecordSize));
  }
  MESSAGE("kill -9 during recovery: " << kills << " kills over a recovery of " << full.count()
                                      << " us, " << during << " before the server listened");
  CHECK(during >= kills / 3);

  ServerProcess s(dir.path());
  s.start();
  Snapshot snap = read_store(s.blobs_dir(), s.leveldb_dir());
  CHECK(snap.head() == good);
  Promises p;
  for (uint64_t i = 1; i <= good; i++) p.confirmed[i] = entry;
  check_invariants(snap, p, "after kills during recovery");
  CHECK(write_one(s.port(), "after", "{\"after\":1}") == good + 1);
  CHECK(s.stop_term() == 0);
}

TEST_CASE("kill -9 during the replay of a journal, repeatedly, then a full recovery keeps every confirmed entry") {
  // A SYNC=always server killed with 6,000 entries in its journal (an 8 MiB journal: no
  // checkpoint runs while they are written): each start replays them all (a blob written again
  // through a temp file and a rename per entry, an index record each) before it syncs and
  // empties the journal. Killed at random moments of that, again and again, it must lose nothing.
  Rng rng("kill during replay");
  INFO("SEED=" << base_seed());
  TempDir dir;
  const harness::detail::EnvOverrides env{{"PORT", "0"}, {"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"},
                                          {"JOURNAL_BYTES", "8388608"}};
  Promises promised;
  {
    Wrapped s(dir.path(), {}, env);
    REQUIRE(s.start());
    Client c(s.port());
    for (int batch = 0; batch < 60; batch++) {
      std::string lines;
      std::vector<Write> sent;
      for (int i = 0; i < 100; i++) {
        sent.push_back(unique_write(7, batch, static_cast<uint64_t>(i), rng.word(rng.range(0, 40))));
        lines += sent.back().line + "\n";
      }
      c.send(lines);
      for (const auto& w : sent) {
        std::string reply = c.read_line();
        auto index = harness::json_int_field(reply, "index");
        REQUIRE_MESSAGE(index, reply);
        promised.confirm(w.id, static_cast<uint64_t>(*index), w.canonical);
      }
    }
    s.signal_child(SIGKILL);
    REQUIRE(s.wait(milliseconds(10000)).has_value());
  }
  // The uninterrupted replay's length, on a copy, to spread the kills over it.
  std::chrono::microseconds full{0};
  {
    TempDir copy;
    std::filesystem::copy(dir / "blobs", copy / "blobs", std::filesystem::copy_options::recursive);
    std::filesystem::copy(dir / "leveldb", copy / "leveldb", std::filesystem::copy_options::recursive);
    Wrapped probe(copy.path(), {}, {{"PORT", "0"}, {"BLOBS", copy / "blobs"}, {"LEVELDB", copy / "leveldb"}, {"JOURNAL_BYTES", "8388608"}});
    REQUIRE(probe.start(milliseconds(60000)));
    full = probe.listening_after();
    CHECK(lines_with(probe.log_lines(), kWarn, "replayed 6000 journal record(s)").size() == 1);
    probe.signal_server(SIGTERM);
    CHECK(probe.wait(milliseconds(20000)) == 0);
  }
  const int kills = static_cast<int>(env_long("REPLAY_KILLS", 8));
  int before_listening = 0;
  for (int k = 0; k < kills; k++) {
    Wrapped s(dir.path(), {}, env);
    s.launch();
    std::this_thread::sleep_for(std::chrono::microseconds(rng.below(static_cast<uint64_t>(full.count()) + 1)));
    s.signal_child(SIGKILL);
    REQUIRE(s.wait(milliseconds(10000)).has_value());
    before_listening += s.out().find("\"msg\":\"listening\"") == std::string::npos;
  }
  MESSAGE("kill -9 during replay: " << kills << " kills over a replay of " << full.count() << " us, "
                                    << before_listening << " before the server listened");
  Wrapped s(dir.path(), {}, env);
  REQUIRE(s.start(milliseconds(60000)));
  Snapshot snap = read_store(dir / "blobs", dir / "leveldb");
  CHECK(snap.head() == 6000);
  check_invariants(snap, promised, "after kills during the replay");
  CHECK(write_one(s.port(), "after", "{\"after\":1}") == 6001);
  s.signal_server(SIGTERM);
  CHECK(s.wait(milliseconds(20000)) == 0);
}

// =============================================================================================
// Torn and garbage tails made by the test

namespace {

// Writes n entries through a real server (some of them duplicates of each other; the last one
// unique), stops it with SIGTERM, and returns the canonical bytes of entries 1..n.
std::vector<std::string> fill_store(const std::string& dir, int n) {
  ServerProcess s(dir);
  s.start();
  Client c(s.port());
  std::string lines;
  std::vector<std::string> canon;
  for (int i = 0; i < n; i++) {
    Write w = (i % 7 == 3 && i != n - 1) ? dup_write("f" + std::to_string(i), i % 3)
                                         : unique_write(0, 0, static_cast<uint64_t>(i), "pad" + std::to_string(i));
    lines += w.line + "\n";
    canon.push_back(w.canonical);
  }
  c.send(lines);
  auto replies = c.read_lines(static_cast<size_t>(n));
  for (int i = 0; i < n; i++)
    REQUIRE_MESSAGE(harness::json_int_field(replies[i], "index") == i + 1, replies[i]);
  REQUIRE(s.stop_term() == 0);
  return canon;
}

std::string last_hex(const std::string& leveldb) {
  std::string index = read_file(leveldb + "/index");
  REQUIRE(index.size() >= kRecordSize);
  return index.substr(index.size() - kRecordSize, 64);
}

// Restarts on the damaged store and checks: head, the entries 1..head exactly, whole valid
// records, the expected recovery warn lines, readers see 1..head identical, a new write gets
// head+1.
void restart_and_check(const std::string& dir, const std::vector<std::string>& canon, uint64_t head,
                       const std::vector<std::string>& warnings) {
  ServerProcess s(dir);
  s.start();
  auto lines = s.log_lines();
  for (const auto& w : warnings)
    CHECK_MESSAGE(lines_with(lines, kWarn, w).size() == 1,
                  "expected one warn line with '" << w << "'; log: " << harness::detail::tail(s.stdout_text(), 1500));
  Snapshot snap = read_store(s.blobs_dir(), s.leveldb_dir());
  CHECK(snap.head() == head);
  Promises p;
  for (uint64_t i = 1; i <= head; i++) p.confirmed[i] = canon[i - 1];
  check_invariants(snap, p, "after restart on a damaged tail");
  auto read = read_all(s.port());
  REQUIRE(read.size() == head);
  for (uint64_t i = 1; i <= head; i++)
    CHECK(read[i - 1] == "{\"index\":" + std::to_string(i) + ",\"entry\":" + canon[i - 1] + "}");
  CHECK(write_one(s.port(), "new", "{\"new\":1}") == head + 1);
  CHECK(s.stop_term() == 0);
}

}  // namespace

TEST_CASE("torn and garbage tails are cut at startup with a warn line; nothing before them is lost") {
  Rng rng("torn tails");
  INFO("SEED=" << base_seed());
  TempDir dir;
  const int n = 40;
  auto canon = fill_store(dir.path(), n);
  const std::string blobs = dir / "blobs", leveldb = dir / "leveldb", index = leveldb + "/index";
  const long long size = file_size(index);
  REQUIRE(size == n * 65);

  SUBCASE("index truncated in the middle of the last record") {
    long long cut = static_cast<long long>(rng.range(1, 64));
    std::filesystem::resize_file(index, static_cast<uintmax_t>(size - cut));
    restart_and_check(dir.path(), canon, n - 1,
                      {"cut a torn record of " + std::to_string(65 - cut) + " byte(s)"});
  }
  SUBCASE("zero bytes appended (a power cut after the size grew)") {
    size_t zeros = static_cast<size_t>(rng.range(1, 65 * 6 + 64));
    append_file(index, std::string(zeros, '\0'));
    std::vector<std::string> warn;
    if (zeros % 65) warn.push_back("cut a torn record of " + std::to_string(zeros % 65) + " byte(s)");
    if (zeros / 65) warn.push_back("cut " + std::to_string(zeros / 65) + " unconfirmed record(s)");
    INFO(zeros << " zero bytes");
    restart_and_check(dir.path(), canon, n, warn);
  }
  SUBCASE("random bytes appended") {
    size_t len = static_cast<size_t>(rng.range(1, 65 * 8));
    append_file(index, rng.bytes(len));
    std::vector<std::string> warn;
    if (len % 65) warn.push_back("cut a torn record of " + std::to_string(len % 65) + " byte(s)");
    if (len / 65) warn.push_back("cut " + std::to_string(len / 65) + " unconfirmed record(s)");
    INFO(len << " random bytes");
    restart_and_check(dir.path(), canon, n, warn);
  }
  SUBCASE("well-formed records naming missing blobs appended, then a torn one") {
    std::string tail;
    for (int i = 0; i < 3; i++) tail += sha256_hex("never stored " + std::to_string(i)) + "\n";
    tail += "0123456789";
    append_file(index, tail);
    restart_and_check(dir.path(), canon, n,
                      {"cut a torn record of 10 byte(s)", "cut 3 unconfirmed record(s)"});
  }
  SUBCASE("the last entry's blob deleted") {
    REQUIRE(std::filesystem::remove(blob_path(blobs, last_hex(leveldb))));
    restart_and_check(dir.path(), canon, n - 1, {"cut 1 unconfirmed record(s)"});
  }
  SUBCASE("the last entry's blob damaged") {
    std::string path = blob_path(blobs, last_hex(leveldb));
    std::string bytes = read_file(path);
    bytes[rng.below(bytes.size())] ^= 0x20;
    write_file(path, bytes);
    restart_and_check(dir.path(), canon, n - 1, {"cut 1 unconfirmed record(s)"});
  }
  SUBCASE("the last blob deleted and zero records appended") {
    REQUIRE(std::filesystem::remove(blob_path(blobs, last_hex(leveldb))));
    append_file(index, std::string(65 * 2, '\0'));
    restart_and_check(dir.path(), canon, n - 1, {"cut 3 unconfirmed record(s)"});
  }
  SUBCASE("leftover temporary blob files are removed") {
    write_file(blobs + "/tmp/" + sha256_hex("half"), "{\"half");
    write_file(blobs + "/tmp/" + sha256_hex("other"), "");
    restart_and_check(dir.path(), canon, n, {"removed 2 unfinished blob file(s)"});
  }
}

TEST_CASE("a bad record deeper than the last batch is left alone: readers get an error for it, the rest reads") {
  // Recovery cuts from the first bad record only among the last kMaxBatchEntries (the records
  // a power cut can have left unsynced); deeper, a bad record is damage it does not "repair".
  TempDir dir;
  const int n = static_cast<int>(kMaxBatchEntries) + 20;
  std::vector<std::string> canon;
  std::string index;
  for (int i = 1; i <= n; i++) {
    canon.push_back("{\"deep\":" + std::to_string(i) + "}");
    index += put_blob(dir / "blobs", canon.back()) + "\n";
  }
  index.replace(9 * 65, 64, std::string(64, 'z'));  // entry 10
  std::filesystem::create_directories(dir / "leveldb");
  write_file(dir / "leveldb/index", index);
  ServerProcess s(dir.path());
  s.start();
  CHECK(lines_with(s.log_lines(), kWarn, "unconfirmed record").empty());
  auto read = read_all(s.port());
  REQUIRE(read.size() == static_cast<size_t>(n));
  for (int i = 1; i <= n; i++) {
    if (i == 10)
      CHECK((read[9].rfind("{\"index\":10,\"error\":", 0) == 0));
    else if (read[i - 1] != "{\"index\":" + std::to_string(i) + ",\"entry\":" + canon[i - 1] + "}")
      CHECK_MESSAGE(false, "entry " << i << ": " << read[i - 1]);
  }
  CHECK(write_one(s.port(), "new", "{\"new\":1}") == static_cast<uint64_t>(n + 1));
  CHECK(s.stop_term() == 0);
  CHECK(file_size(dir / "leveldb/index") == static_cast<long long>(n + 1) * 65);
}

// =============================================================================================
// The locks

TEST_CASE("a second server on the same BLOBS or LEVELDB exits with one fatal line; the first keeps serving") {
  TempDir dir, other;
  ServerProcess first(dir.path());
  first.start();
  CHECK(write_one(first.port(), "a", "{\"a\":1}") == 1);
  std::string pid = std::to_string(first.pid());

  struct Case {
    const char* name;
    std::string blobs, leveldb, named;
  };
  std::vector<Case> cases{
      {"same BLOBS", first.blobs_dir(), other / "leveldb", first.blobs_dir()},
      {"same LEVELDB", other / "blobs", first.leveldb_dir(), first.leveldb_dir()},
      {"both the same", first.blobs_dir(), first.leveldb_dir(), first.blobs_dir()},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto r = harness::run_server_binary({}, {{"BLOBS", c.blobs}, {"LEVELDB", c.leveldb}});
    CHECK(r.status == 1);  // "could not start", as --help documents
    auto lines = harness::detail::complete_lines(r.out);
    auto fatal = lines_with(lines, kFatal, "");
    REQUIRE_MESSAGE(fatal.size() == 1, "stdout: " << r.out);
    CHECK_MESSAGE(fatal[0].find("directory " + c.named + " is in use by pid " + pid) != std::string::npos,
                  fatal[0]);
    CHECK(lines_with(lines, kInfo, "\"msg\":\"listening\"").empty());
    // The first server is untouched and keeps serving; its lock files still name it.
    REQUIRE(first.running());
    CHECK(read_file(first.blobs_dir() + "/LOCK").rfind(pid, 0) == 0);
  }
  CHECK(write_one(first.port(), "b", "{\"b\":1}") == 2);
  auto read = read_all(first.port());
  CHECK(read.size() == 2);
  CHECK(first.stop_term() == 0);
  // Once the first has stopped, the directories are free again.
  ServerProcess again(dir.path());
  again.start();
  CHECK(write_one(again.port(), "c", "{\"c\":1}") == 3);
  CHECK(again.stop_term() == 0);
}

// =============================================================================================
// SIGTERM under load

TEST_CASE("SIGTERM under load: exit 0 with a stopped line; every write confirmed and kept, or never confirmed and absent") {
  Rng rng("shutdown under load");
  INFO("SEED=" << base_seed());
  const long rounds = env_long("SHUTDOWN_ROUNDS", 6);
  for (long round = 0; round < rounds; round++) {
    std::string sync = round % 2 ? "always" : "none";
    std::string ctx = "round " + std::to_string(round) + " SYNC=" + sync;
    INFO(ctx);
    TempDir dir;
    Promises promises;
    Authors authors;
    ServerProcess s(dir.path());
    s.env("SYNC", sync).start();
    LoadOptions o;
    o.round = static_cast<uint64_t>(round);
    o.writers = static_cast<int>(rng.range(2, 6));
    o.readers = 2;
    o.max_per_writer = 100000;  // still sending when the signal comes
    o.window = static_cast<size_t>(rng.range(16, 256));
    Load load(s.port(), o, &promises, &authors, &rng);
    load.step(milliseconds(rng.range(5, 150)));
    ::kill(s.pid(), SIGTERM);
    auto deadline = Clock::now() + milliseconds(10000);
    while (s.running() && Clock::now() < deadline) load.step(milliseconds(2));
    REQUIRE_MESSAGE(!s.running(), "the server did not exit within 10 s of SIGTERM");
    load.drain(milliseconds(3000));
    CHECK(s.exit_status() == 0);
    auto lines = s.log_lines();
    CHECK(lines_with(lines, kInfo, "\"msg\":\"stopped\"").size() == 1);
    CHECK(load.result().all_eof);
    CHECK(load.result().errors == 0);

    ServerProcess again(dir.path());
    again.env("SYNC", sync).start();
    CHECK(lines_with(again.log_lines(), kWarn, "").empty());  // a clean stop needs no recovery
    Snapshot snap = read_store(again.blobs_dir(), again.leveldb_dir());
    check_invariants(snap, promises, ctx);
    authors.check_log(snap, ctx);
    // Exactly the confirmed writes are in the log: no write was committed without its
    // confirmation reaching the client.
    CHECK(promises.confirmed.size() == snap.head());
    if (!promises.confirmed.empty()) CHECK(promises.confirmed.rbegin()->first == snap.head());
    MESSAGE(ctx << ": " << load.result().sent << " sent, " << load.result().confirmed
                << " confirmed before exit, " << load.unanswered().size()
                << " never answered (absent), head " << snap.head());
    CHECK(write_one(again.port(), "after", "{\"after\":1}") == snap.head() + 1);
    CHECK(again.stop_term() == 0);
  }
}

TEST_CASE("SIGTERM while a pipelining writer is slow to read its replies: every committed write's confirmation arrives") {
  Rng rng("shutdown slow reader");
  INFO("SEED=" << base_seed());
  for (int round = 0; round < 3; round++) {
    INFO("round " << round);
    TempDir dir;
    ServerProcess s(dir.path());
    s.env("SYNC", "none").start();
    Net w;
    REQUIRE(w.dial(s.port(), milliseconds(3000), 4096).empty());
    std::vector<Write> sent;
    // Pipeline without reading, so that replies queue up in the server; keep sending after
    // the signal too (input the server no longer reads).
    auto send_for = [&](milliseconds d) {
      auto until = Clock::now() + d;
      while (Clock::now() < until) {
        if (w.unsent() < 65536) {
          for (int i = 0; i < 50; i++) {
            sent.push_back(unique_write(0, 0, sent.size(), rng.word(rng.range(0, 30))));
            w.out += sent.back().line + "\n";
          }
        }
        while (!w.send_dead && w.unsent() > 0) {
          ssize_t n = ::send(w.fd, w.out.data() + w.out_sent, w.unsent(), MSG_NOSIGNAL | MSG_DONTWAIT);
          if (n <= 0) break;
          w.out_sent += static_cast<size_t>(n);
        }
        std::this_thread::sleep_for(milliseconds(1));
      }
    };
    send_for(milliseconds(rng.range(100, 300)));
    ::kill(s.pid(), SIGTERM);
    send_for(milliseconds(rng.range(50, 300)));
    // Now read everything the server sends, to the end.
    std::vector<Net*> nets{&w};
    auto deadline = Clock::now() + milliseconds(10000);
    while (!w.eof && Clock::now() < deadline) {
      w.out.clear();
      w.out_sent = 0;
      w.pump();
      wait_any(nets, 5);
    }
    Promises p;
    size_t next = 0;
    while (auto line = w.line()) {
      auto index = harness::json_int_field(*line, "index");
      REQUIRE_MESSAGE((index && next < sent.size()), *line);
      CHECK(harness::json_string_field(*line, "id") == sent[next].id);
      p.confirm(sent[next].id, static_cast<uint64_t>(*index), sent[next].canonical);
      next++;
    }
    REQUIRE(s.wait_for_log("\"msg\":\"stopped\"").size() == 1);
    auto deadline2 = Clock::now() + milliseconds(10000);
    while (s.running() && Clock::now() < deadline2) std::this_thread::sleep_for(milliseconds(5));
    CHECK(s.exit_status() == 0);
    ServerProcess again(dir.path());
    again.start();
    Snapshot snap = read_store(again.blobs_dir(), again.leveldb_dir());
    check_invariants(snap, p, "slow reader");
    MESSAGE("round " << round << ": " << sent.size() << " writes sent, " << p.confirmed.size()
                     << " confirmations received, " << snap.head() << " entries in the log; the server "
                     << std::string(w.reset ? "reset the connection" : "closed the connection"));
    CHECK_MESSAGE(snap.head() == p.confirmed.size(),
                  (snap.head() - p.confirmed.size()) << " writes were committed but their confirmation never reached the client");
    CHECK(again.stop_term() == 0);
  }
}

// =============================================================================================
// --check

namespace {
harness::RunResult run_check(const std::string& dir) {
  return harness::run_server_binary({"--check"}, {{"BLOBS", dir + "/blobs"}, {"LEVELDB", dir + "/leveldb"}});
}
}  // namespace

TEST_CASE("--check on a clean store: exit 0 and the right counts") {
  TempDir dir;
  const int n = 40;
  auto canon = fill_store(dir.path(), n);
  std::set<std::string> distinct(canon.begin(), canon.end());
  uint64_t bytes = 0;
  for (const auto& d : distinct) bytes += d.size();
  auto r = run_check(dir.path());
  INFO(r.output());
  CHECK(r.status == 0);
  CHECK(r.out.find("entries: " + std::to_string(n) + "\n") != std::string::npos);
  CHECK(r.out.find("distinct blobs: " + std::to_string(distinct.size()) + "\n") != std::string::npos);
  CHECK(r.out.find("bytes: " + std::to_string(bytes) + "\n") != std::string::npos);
  CHECK(r.out.find("problems: 0\n") != std::string::npos);
  CHECK(r.out.find("problem: ") == std::string::npos);
  // --check changes nothing.
  CHECK(file_size(dir / "leveldb/index") == n * 65);
}

TEST_CASE("--check on a damaged store: exit 65, each problem with its index") {
  TempDir dir;
  const int n = 40;
  auto canon = fill_store(dir.path(), n);
  const std::string blobs = dir / "blobs", index = dir / "leveldb/index";
  std::string records = read_file(index);
  auto hex_of = [&](int i) { return records.substr(static_cast<size_t>(i - 1) * 65, 64); };
  // Entries 5, 12, 20 are unique (i % 7 != 3): damage each in its own way.
  std::string p5 = blob_path(blobs, hex_of(5));
  std::string b5 = read_file(p5);
  b5[1] = b5[1] == 'x' ? 'y' : 'x';
  write_file(p5, b5);                                              // blob modified
  REQUIRE(std::filesystem::remove(blob_path(blobs, hex_of(12))));  // blob deleted
  records.replace(19 * 65, 65, std::string(30, 'G') + std::string(35, ' '));  // record 20 malformed
  write_file(index, records);
  auto r = run_check(dir.path());
  INFO(r.output());
  CHECK(r.status == 65);
  CHECK(r.out.find("entries: " + std::to_string(n) + "\n") != std::string::npos);
  CHECK(r.out.find("problems: 3\n") != std::string::npos);
  for (int i : {5, 12, 20})
    CHECK(r.out.find("problem: entry " + std::to_string(i) + ": ") != std::string::npos);

  SUBCASE("a torn tail is reported too, and left for the server to cut") {
    append_file(index, "abc");
    auto r2 = run_check(dir.path());
    INFO(r2.output());
    CHECK(r2.status == 65);
    CHECK(r2.out.find("problems: 4\n") != std::string::npos);
    CHECK(r2.out.find("torn") != std::string::npos);
    CHECK(file_size(index) == n * 65 + 3);
  }
  SUBCASE("the server serves the damaged store: damaged blobs as errors in place, the rest intact") {
    // Record 20 is among the last batch's records, where recovery takes a malformed record for
    // an append a power cut tore and cuts from it (a deeper one stays: see "a bad record deeper
    // than the last batch").
    ServerProcess s(dir.path());
    s.start();
    CHECK(lines_with(s.log_lines(), kWarn, "entry 20 is malformed").size() == 1);
    auto read = read_all(s.port());
    REQUIRE(read.size() == 19u);
    for (int i = 1; i <= 19; i++) {
      INFO("entry " << i << ": " << read[i - 1]);
      if (i == 5 || i == 12)
        CHECK(read[i - 1].rfind("{\"index\":" + std::to_string(i) + ",\"error\":", 0) == 0);
      else
        CHECK(read[i - 1] == "{\"index\":" + std::to_string(i) + ",\"entry\":" + canon[i - 1] + "}");
    }
    CHECK(s.stop_term() == 0);
  }
}

TEST_CASE("--check beside a live server refuses: exit 1, says the directory is in use") {
  TempDir dir;
  ServerProcess s(dir.path());
  s.start();
  CHECK(write_one(s.port(), "a", "{\"a\":1}") == 1);
  auto r = run_check(dir.path());
  INFO(r.output());
  CHECK(r.status == 1);
  CHECK(r.output().find("is in use by pid " + std::to_string(s.pid())) != std::string::npos);
  CHECK(r.out.find("entries: ") == std::string::npos);
  CHECK(write_one(s.port(), "b", "{\"b\":1}") == 2);
  CHECK(s.stop_term() == 0);
}

// =============================================================================================
// Startup cost does not grow with the log

namespace {

struct StartupReads {
  uint64_t calls = 0, bytes = 0, opens = 0;
  bool listened = false;
};

// Runs the server under strace until it listens, then stops it; counts the read calls (and
// bytes read) made before the "listening" line.
StartupReads traced_startup(const std::string& dir, const std::string& strace) {
  std::string trace = dir + "/startup.trace";
  Wrapped s(dir, {strace, "-f", "-qq", "-s", "200", "-o", trace, "-e",
                  "trace=read,pread64,readv,preadv,preadv2,openat,write"},
            {{"PORT", "0"}, {"BLOBS", dir + "/blobs"}, {"LEVELDB", dir + "/leveldb"}});
  REQUIRE_MESSAGE(s.start(), "server under strace did not start: " << s.out() << s.err());
  s.signal_server(SIGTERM);
  REQUIRE(s.wait(milliseconds(10000)) == 0);
  StartupReads r;
  std::istringstream in(read_file(trace));
  for (std::string line; std::getline(in, line);) {
    size_t at = line.find_first_not_of("0123456789 ");  // "<pid> " prefix with -f
    std::string call = line.substr(at);
    if (call.rfind("write(1,", 0) == 0 && call.find("listening") != std::string::npos) {
      r.listened = true;
      break;
    }
    bool read = call.rfind("read(", 0) == 0 || call.rfind("pread64(", 0) == 0 ||
                call.rfind("readv(", 0) == 0 || call.rfind("preadv", 0) == 0;
    if (call.rfind("openat(", 0) == 0) r.opens++;
    if (!read) continue;
    r.calls++;
    size_t eq = call.rfind("= ");
    if (eq != std::string::npos) {
      long long n = std::atoll(call.c_str() + eq + 2);
      if (n > 0) r.bytes += static_cast<uint64_t>(n);
    }
  }
  return r;
}

void write_big_index(const std::string& dir, uint64_t records, const std::string& entry) {
  std::string hex = put_blob(dir + "/blobs", entry);
  std::filesystem::create_directories(dir + "/leveldb");
  std::string rec = hex + "\n";
  std::string chunk;
  for (int i = 0; i < 16384; i++) chunk += rec;
  std::ofstream f(dir + "/leveldb/index", std::ios::binary);
  uint64_t left = records;
  while (left > 0) {
    uint64_t now = std::min<uint64_t>(left, 16384);
    f.write(chunk.data(), static_cast<std::streamsize>(now * kRecordSize));
    left -= now;
  }
  REQUIRE(f.good());
}

}  // namespace

TEST_CASE("startup reads a bounded tail: the same read calls for 1,000 and 1,000,000 entries") {
  std::string strace = find_program("strace");
  REQUIRE_MESSAGE(!strace.empty(), "strace is needed (make check-deps installs it)");
  TempDir small, big;
  const std::string entry = "{\"same\":\"entry\"}";
  write_big_index(small.path(), 1000, entry);
  write_big_index(big.path(), 1000000, entry);
  REQUIRE(file_size(big / "leveldb/index") == 65000000);

  StartupReads rs = traced_startup(small.path(), strace);
  StartupReads rb = traced_startup(big.path(), strace);
  CHECK(rs.listened);
  CHECK(rb.listened);
  MESSAGE("startup before listening: 1,000 entries: " << rs.calls << " read calls, " << rs.bytes
                                                      << " bytes, " << rs.opens << " opens; 1,000,000 entries: "
                                                      << rb.calls << " read calls, " << rb.bytes << " bytes, "
                                                      << rb.opens << " opens");
  CHECK(rb.calls <= rs.calls + 2);
  // Recovery reads the last batch's worth of records (kMaxBatchEntries) in one call: all 1,000
  // of the small log, 4,096 of the big one; nothing else grows.
  CHECK(rb.bytes <= rs.bytes + (kMaxBatchEntries - 1000) * kRecordSize + 2 * kRecordSize);
  CHECK(rb.opens <= rs.opens);

  // Times, for the record (no assertion: machines vary): median of 5 starts each.
  auto median_start = [](const std::string& dir) {
    std::vector<long long> us;
    for (int i = 0; i < 5; i++) {
      Wrapped s(dir, {}, {{"PORT", "0"}, {"BLOBS", dir + "/blobs"}, {"LEVELDB", dir + "/leveldb"}});
      REQUIRE(s.start());
      us.push_back(s.listening_after().count());
      s.signal_server(SIGTERM);
      REQUIRE(s.wait(milliseconds(10000)) == 0);
    }
    std::sort(us.begin(), us.end());
    return us[2];
  };
  long long ts = median_start(small.path()), tb = median_start(big.path());
  MESSAGE("time from exec to listening (median of 5, includes the test's 0.5 ms polling): 1,000 entries "
          << ts << " us, 1,000,000 entries " << tb << " us, ratio " << (ts ? double(tb) / double(ts) : 0.0));
}
