// End-to-end tests of the write-ahead journal (issue 10) with the real binary over loopback:
// a clean stop leaves it empty, a crash leaves the confirmed entries in it and the next start
// writes them again, a pause in writes checkpoints it, writes wait while it is full (and reads
// do not), and the store stays readable by a server without a journal after a clean stop.
#include <doctest/doctest.h>

#include "test/durability_harness.hpp"
#include "test/fault_harness.hpp"
#include "test/metrics_harness.hpp"
#include "test/harness.hpp"

#include <string>
#include <vector>

using namespace harness;
using namespace std::chrono_literals;

namespace {

RunResult check_store(const std::string& dir) {
  return run_server_binary({"--check"}, {{"BLOBS", dir + "/blobs"}, {"LEVELDB", dir + "/leveldb"}});
}

// The number after "journal records: " in --check's output, or -1.
long journal_records(const RunResult& r) {
  const std::string key = "journal records: ";
  size_t at = r.out.find(key);
  return at == std::string::npos ? -1 : std::stol(r.out.substr(at + key.size()));
}

// `count` writes {"n":i} from `first` on, in one send; checks each confirmation.
void write_range(Client& c, int first, int count) {
  std::string batch;
  for (int i = first; i < first + count; i++) batch += write_msg("w" + std::to_string(i), numbered(i)) + "\n";
  c.send(batch, 30s);
  std::vector<std::string> replies = c.read_lines(static_cast<size_t>(count), 30s);
  for (int i = 0; i < count; i++) CHECK(replies[i] == confirmation("w" + std::to_string(first + i), first + i));
}

void check_entries(int port, int count) {
  std::vector<std::string> lines = dump(port);
  REQUIRE(lines.size() == static_cast<size_t>(count + 1));
  for (int i = 1; i <= count; i++) CHECK(lines[i - 1] == entry_line(i, numbered(i)));
}

}  // namespace

TEST_CASE("journal: a clean stop leaves the journal empty; the next start replays nothing") {
  TempDir dir;
  {
    ServerProcess s(dir.path());
    s.start();
    Client c(s.port());
    write_range(c, 1, 20);
    CHECK(s.stop_term() == 0);
  }
  RunResult r = check_store(dir.path());
  INFO(r.output());
  CHECK(r.status == 0);
  CHECK(journal_records(r) == 0);
  ServerProcess again(dir.path());
  again.start();
  CHECK(again.wait_for_log("journal record", 1, 0ms).empty());
  check_entries(again.port(), 20);
}

TEST_CASE("journal: after kill -9 the journal holds what was confirmed, and the next start writes it all again") {
  TempDir dir;
  {
    ServerProcess s(dir.path());
    s.start();
    Client c(s.port());
    write_range(c, 1, 30);
    s.kill9();  // within a second of the writes: no checkpoint has run
  }
  RunResult r = check_store(dir.path());
  INFO(r.output());
  CHECK(journal_records(r) == 30);
  // What the journal holds is the only copy a power cut could not take: remove the blobs and
  // the index records it covers, and the start must bring them all back.
  std::filesystem::remove_all(dir / "blobs");
  ::truncate((dir / "leveldb/index").c_str(), 0);
  ServerProcess again(dir.path());
  again.start();
  auto replayed = again.wait_for_log("replayed 30 journal record(s), entries 1..30");
  CHECK(replayed.size() == 1);
  check_entries(again.port(), 30);
  Client c(again.port());
  write_ok(c, "next", numbered(31), 31);
  CHECK(again.stop_term() == 0);
  RunResult after = check_store(dir.path());
  CHECK(after.status == 0);
  CHECK(journal_records(after) == 0);
}

TEST_CASE("journal: writes are confirmed and read (stream and batch, from memory or the journal) before their blob files exist; after kill -9 the next start makes them all") {
  std::string strace = dur::find_program("strace");
  REQUIRE_MESSAGE(!strace.empty(), "strace is needed (make check-deps installs it)");
  TempDir dir;
  // Every openat of the store thread waits 3 s (an strace attached to that thread alone delays
  // it): the store thread, which creates each new blob file with one openat, makes one every
  // 3 s, while writes go on. 150 entries of 64 KiB are more than the 8 MiB of recent entries
  // the server keeps in memory: the first of them can only come from their journal records.
  constexpr int kEntries = 150;
  const std::string pad(64 * 1024, 'p');
  auto entry = [&](int i) { return "{\"n\":" + std::to_string(i) + ",\"p\":\"" + pad + "\"}"; };
  std::vector<std::string> hashes;
  for (int i = 1; i <= kEntries; i++) hashes.push_back(sha256_hex(entry(i)));
  {
    dur::Wrapped s(dir.path(), {},
                   {{"PORT", "0"}, {"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"}, {"METRICS", "127.0.0.1:0"}});
    REQUIRE(s.start(30s));
    fault::Attached slowed(dir.path(), fault::thread_named(s.server_pid(), "store"),
                           {"-e", "trace=openat", "-e", "inject=openat:delay_enter=3000000"}, dir / "store.trace");
    Client writer(s.port());
    std::string batch;
    for (int i = 1; i <= kEntries; i++) batch += write_msg("w" + std::to_string(i), entry(i)) + "\n";
    writer.send(batch, 30s);
    std::vector<std::string> replies = writer.read_lines(kEntries, 30s);
    REQUIRE(replies.size() == static_cast<size_t>(kEntries));
    for (int i = 1; i <= kEntries; i++) CHECK(replies[i - 1] == confirmation("w" + std::to_string(i), i));
    Client stream(s.port());
    stream.send_line(read_from(1));
    std::vector<std::string> lines = stream.read_lines(kEntries + 1, 30s);
    REQUIRE(lines.size() == static_cast<size_t>(kEntries + 1));
    for (int i = 1; i <= kEntries; i++) CHECK(lines[i - 1] == entry_line(i, entry(i)));
    CHECK(lines.back() == kCurrent);
    Client batch_reader(s.port());
    batch_reader.send_line(batch_read(2, 3));
    for (int i = 2; i <= 4; i++) CHECK(batch_reader.read_line(30s) == entry_line(i, entry(i)));
    CHECK(batch_reader.read_line(30s) == head_line(kEntries));
    // Most blob files are still to be made (one every 3 s): the reads did not come from them.
    int made = 0;
    for (const std::string& h : hashes) made += dur::exists(dur::blob_path(dir / "blobs", h));
    INFO("blob files made while the entries were read: " << made);
    CHECK(made < 20);
    CHECK_FALSE(dur::exists(dur::blob_path(dir / "blobs", hashes[29])));
    // The metrics say how far behind the store thread is: most of the entries.
    const double lag = metrics_harness::value(metrics_harness::scrape(metrics_harness::metrics_port_of(s)), "store_lag_entries");
    CHECK(lag > kEntries - 20);
    CHECK(lag <= kEntries);
    ::kill(s.server_pid(), SIGKILL);
    s.wait(30s);
  }
  // The next start writes every confirmed entry from the journal: blob files under their
  // hashes with the canonical bytes, index records in order (the Node.js server's layout).
  ServerProcess again(dir.path());
  again.start(30s);
  CHECK(again.wait_for_log("journal record(s)").size() >= 1);
  Client r(again.port());
  r.send_line(batch_read(1, kEntries));
  for (int i = 1; i <= kEntries; i++) CHECK(r.read_line(30s) == entry_line(i, entry(i)));
  CHECK(r.read_line(30s) == head_line(kEntries));
  std::string records;
  for (const std::string& h : hashes) records += h + "\n";
  CHECK(wait_for_contents(dir / "leveldb/index", records) == records);
  for (int i = 1; i <= kEntries; i++)
    CHECK(read_file(dur::blob_path(dir / "blobs", hashes[i - 1])) == entry(i));
  CHECK(again.stop_term() == 0);
  RunResult after = check_store(dir.path());
  INFO(after.output());
  CHECK(after.status == 0);
  CHECK(journal_records(after) == 0);
}

TEST_CASE("journal: while a checkpoint's syncfs runs, the entries confirmed meanwhile are made (the store thread does not wait for it)") {
  TempDir dir;
  detail::EnvOverrides env{{"PORT", "0"}, {"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"}, {"METRICS", "127.0.0.1:0"}};
  for (const auto& [name, value] : small_journal(4096)) env[name] = value;
  dur::Wrapped s(dir.path(), {}, env);
  REQUIRE(s.start(30s));
  const int mport = metrics_harness::metrics_port_of(s);
  // Every syncfs of the server's threads but the loop's waits 6 s (an strace attached to them
  // delays it): the checkpoint's, whichever thread runs it.
  std::vector<pid_t> others;
  for (const auto& name : dur::list_dir("/proc/" + std::to_string(s.server_pid()) + "/task"))
    if (std::atol(name.c_str()) != s.server_pid()) others.push_back(static_cast<pid_t>(std::atol(name.c_str())));
  REQUIRE(!others.empty());
  fault::Attached slowed(dir.path(), others, {"-e", "trace=syncfs", "-e", "inject=syncfs:delay_enter=6000000"},
                         dir / "syncfs.trace");
  const std::string pad(1000, 'p');
  auto write_kib = [&](Client& c, int first, int count) {
    std::string batch;
    for (int i = first; i < first + count; i++)
      batch += write_msg("w" + std::to_string(i), "{\"n\":" + std::to_string(i) + ",\"p\":\"" + pad + "\"}") + "\n";
    c.send(batch, 30s);
    std::vector<std::string> replies = c.read_lines(static_cast<size_t>(count), 30s);
    REQUIRE(replies.size() == static_cast<size_t>(count));
    for (int i = 0; i < count; i++) CHECK(replies[i] == confirmation("w" + std::to_string(first + i), first + i));
  };
  auto made_all = [&](Clock::duration within) {
    for (auto deadline = Clock::now() + within; Clock::now() < deadline; std::this_thread::sleep_for(5ms)) {
      metrics_harness::Samples m = metrics_harness::scrape(mport);
      if (metrics_harness::value(m, "store_lag_entries") == 0) return std::optional<metrics_harness::Samples>(m);
    }
    return std::optional<metrics_harness::Samples>();
  };
  // 40 entries of 1 KiB fill more than half of a side (60 KiB of records): its checkpoint
  // starts, and once they are made, its syncfs (6 s).
  Client writer(s.port());
  write_kib(writer, 1, 40);
  REQUIRE(made_all(10s));
  // Ten more, confirmed in the other side: made while that syncfs still runs.
  const auto t0 = Clock::now();
  write_kib(writer, 41, 10);
  std::optional<metrics_harness::Samples> made = made_all(10s);
  const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  REQUIRE_MESSAGE(made, "the ten entries were not made within 10 s");
  INFO("made " << waited << " s after they were sent");
  CHECK(metrics_harness::value(*made, "checkpoint_duration_seconds_count") == 0);  // its syncfs was still running
  CHECK(waited < 3.0);
  // The checkpoint did run, and ends; so does the clean stop (whose syncfs, the main thread's, is not slowed).
  metrics_harness::wait_for_value(mport, "checkpoint_duration_seconds_count", 1);
  s.signal_server(SIGTERM);
  CHECK(s.wait(30s) == 0);
  slowed.finish(30s);
}

TEST_CASE("journal: a second without writes runs a checkpoint, after which a crash replays nothing") {
  TempDir dir;
  ServerProcess s(dir.path());
  s.env("LOG_LEVEL", "debug").start();
  Client c(s.port());
  write_range(c, 1, 10);
  CHECK(s.wait_for_log("\"event\":\"checkpoint\"", 1, 10s).size() == 1);
  s.kill9();
  RunResult r = check_store(dir.path());
  INFO(r.output());
  CHECK(journal_records(r) == 0);
  CHECK(r.status == 0);
}

TEST_CASE("journal: while it is full and a checkpoint runs, writes wait (none refused) and reads go on") {
  std::string strace = dur::find_program("strace");
  REQUIRE_MESSAGE(!strace.empty(), "strace is needed (make check-deps installs it)");
  TempDir dir;
  // The smallest journal (two sides of 60 KiB of records) and a checkpoint slowed down to 1.5 s
  // (strace delays its syncfs): 200 writes of 1 KiB fill a side and a half while it runs.
  detail::EnvOverrides env{{"PORT", "0"}, {"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"}};
  for (const auto& [name, value] : small_journal(4096)) env[name] = value;
  dur::Wrapped s(dir.path(),
                 {strace, "-f", "-qq", "-o", dir / "strace.out", "-e", "trace=syncfs", "-e",
                  "inject=syncfs:delay_enter=1500000:when=2+"},
                 env);
  REQUIRE(s.start());
  Client reader(s.port());
  Client writer(s.port());
  write_ok(writer, "first", numbered(1), 1);
  const std::string pad(1000, 'p');
  std::string batch;
  constexpr int kWrites = 200;
  for (int i = 2; i < 2 + kWrites; i++)
    batch += write_msg("w" + std::to_string(i), "{\"n\":" + std::to_string(i) + ",\"p\":\"" + pad + "\"}") + "\n";
  writer.send(batch, 30s);
  // The journal fills: the server says so, and holds the remaining writes back.
  bool full = false;
  for (auto deadline = Clock::now() + 10s; !full && Clock::now() < deadline;) {
    for (const auto& l : s.log_lines()) full = full || l.find("\"event\":\"journal-full\"") != std::string::npos;
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(full);
  // A read while the writes wait is answered (it does not wait for the checkpoint): by the time
  // its reply is here, the writer still has writes unconfirmed.
  reader.send_line(batch_read(1, 1));
  CHECK(reader.read_line() == entry_line(1, numbered(1)));
  CHECK(reader.read_line().rfind("{\"head\":", 0) == 0);
  size_t confirmed_before = 0;
  while (auto l = writer.try_read_line(0ms)) confirmed_before++;
  CHECK(confirmed_before < static_cast<size_t>(kWrites));
  // Every write is confirmed in the end, in order, none refused.
  std::vector<std::string> rest = writer.read_lines(kWrites - confirmed_before, 30s);
  for (size_t k = 0; k < rest.size(); k++) {
    const int index = static_cast<int>(2 + confirmed_before + k);
    CHECK(rest[k] == confirmation("w" + std::to_string(index), index));
  }
  s.signal_server(SIGTERM);
  CHECK(s.wait(20s) == 0);
}

TEST_CASE("journal: a SYNC=none start replays what a crashed SYNC=always run left in the journal") {
  TempDir dir;
  {
    ServerProcess s(dir.path());
    s.start();
    Client c(s.port());
    write_range(c, 1, 12);
    s.kill9();
  }
  ServerProcess none(dir.path());
  none.env("SYNC", "none").start();
  CHECK(none.wait_for_log("replayed 12 journal record(s)").size() == 1);
  check_entries(none.port(), 12);
  CHECK(none.stop_term() == 0);
  RunResult r = check_store(dir.path());
  CHECK(journal_records(r) == 0);
}

TEST_CASE("journal: a store without a journal opens (one is made), and after a clean stop the store needs none") {
  TempDir dir;
  {
    ServerProcess s(dir.path());
    s.start();
    Client c(s.port());
    write_range(c, 1, 5);
    CHECK(s.stop_term() == 0);
  }
  // As a server from before the journal sees the store: blobs and index, nothing else.
  REQUIRE(std::filesystem::remove(dir / "leveldb/journal"));
  ServerProcess again(dir.path());
  again.start();
  check_entries(again.port(), 5);
  Client c(again.port());
  write_range(c, 6, 5);
  CHECK(again.stop_term() == 0);
  CHECK(std::filesystem::file_size(dir / "leveldb/journal") == 64ull * 1024 * 1024);
  REQUIRE(std::filesystem::remove(dir / "leveldb/journal"));
  ServerProcess third(dir.path());
  third.start();
  check_entries(third.port(), 10);
}
