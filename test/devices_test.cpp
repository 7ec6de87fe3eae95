// Devices (issue 17): what breaks on the small 32-bit boards this server is for, and never on
// the 64-bit machine it is developed on. Each case runs on every target: natively in make test,
// and under qemu-user in make test-cross ARCH=armhf|arm64|mips, where the server and this test
// are the target's own binaries.
//
// Rules held here:
//  - a store whose index is past 2 GiB, and past 4 GiB, opens, takes writes that cross the
//    boundary, reads them back and restarts (32-bit off_t: "Value too large for defined data
//    type" at open, the day the index crosses 2 GiB);
//  - log times past January 2038 are right, and timers do not care (32-bit time_t);
//  - a directory listing that fails is an error, never the end of the directory (a half-read
//    listing once let an unmigrated LevelDB directory pass for an empty one);
//  - the journal's default size follows its file system, and a journal that cannot fit is one
//    clear fatal line; temp files a killed run left in LEVELDB do not keep a partition full.
#include <sys/statvfs.h>

#include "harness.hpp"
#include "store.hpp"
#include "sha256.hpp"

using namespace harness;

namespace {

constexpr uint64_t kRecord = 65;

// Set by make test-cross: the server and this test run under qemu-user.
bool emulated() {
  const char* e = std::getenv("TCP_LOG_SERVER_EMULATED");
  return e && *e;
}

// A store whose index holds `head` entries, each the blob of `entry`. Only the last records
// are written (all that recovery and these tests read: recovery looks at the last 4096); the
// rest of the index is a hole. The offsets are the point, and a hole has the same ones as
// written records, without writing gigabytes to disk: the test needs a few hundred KB.
void make_large_store(const std::string& dir, uint64_t head, const std::string& entry) {
  const std::string blobs = dir + "/blobs", leveldb = dir + "/leveldb";
  const std::string hash = sha256_hex(entry);
  REQUIRE(::mkdir(blobs.c_str(), 0755) == 0);
  REQUIRE(::mkdir(leveldb.c_str(), 0755) == 0);
  REQUIRE(::mkdir((blobs + "/" + hash.substr(0, 2)).c_str(), 0755) == 0);
  write_file(blobs + "/" + hash.substr(0, 2) + "/" + hash.substr(2), entry);
  const std::string path = leveldb + "/index";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE_MESSAGE(fd >= 0, errno_text("open " + path));
  REQUIRE_MESSAGE(::ftruncate(fd, static_cast<off_t>(head * kRecord)) == 0, errno_text("ftruncate " + path));
  const uint64_t tail = std::min<uint64_t>(head, 8192);
  std::string records;
  for (uint64_t i = 0; i < tail; i++) records += hash + "\n";
  const off_t at = static_cast<off_t>((head - tail) * kRecord);
  REQUIRE_MESSAGE(::pwrite(fd, records.data(), records.size(), at) == static_cast<ssize_t>(records.size()),
                  errno_text("pwrite " + path));
  ::close(fd);
}

// The servers here have the small journal (support.hpp), quick to create under emulation (the
// index is the subject here), with lines of at most 4 KiB.
constexpr uint64_t kMaxMessageBytes = 4096;

// The index's byte `boundary` lies inside record boundary/65 + 1. The store starts a few
// records short of it, a running server writes across it, and a restart opens it past it.
void crosses_index_boundary(uint64_t boundary) {
  TempDir dir;
  // The hole takes no disk where files may have holes (ext4, btrfs, xfs, tmpfs, f2fs); where
  // they cannot, the index is written whole: then the test needs its size free, or skips.
  struct statvfs fs {};
  REQUIRE(::statvfs(dir.path().c_str(), &fs) == 0);
  const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  const std::string probe = dir / "probe";
  {
    int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 64 << 20) == 0);
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    ::close(fd);
    ::unlink(probe.c_str());
    if (static_cast<uint64_t>(st.st_blocks) * 512 >= (64u << 20) && free_bytes < boundary + (1ull << 30)) {
      MESSAGE("skipped: the file system of " << dir.path() << " has no holes and " << free_bytes
              << " bytes free, less than an index of " << boundary << " bytes needs");
      return;
    }
  }
  const std::string filler = R"({"filler":true})";
  const uint64_t head0 = boundary / kRecord - 2;
  make_large_store(dir.path(), head0, filler);
  INFO("index boundary " << boundary << " bytes; the store starts at entry " << head0);
  {
    ServerProcess server(dir.path());
    server.env(small_journal(kMaxMessageBytes));
    server.start();
    auto listening = server.wait_for_log("\"msg\":\"listening\"", 1);
    REQUIRE(listening.size() == 1);
    CHECK(ServerProcess::json_int(listening[0], "head") == static_cast<long long>(head0));
    Client c(server.port());
    for (long long n = 1; n <= 4; n++) write_ok(c, "w" + std::to_string(n), numbered(n), head0 + n);
    // The last filler entries, and the new ones across the boundary.
    c.send_line(batch_read(head0 - 1, 6));
    CHECK(c.read_line() == entry_line(head0 - 1, filler));
    CHECK(c.read_line() == entry_line(head0, filler));
    for (long long n = 1; n <= 4; n++) CHECK(c.read_line() == entry_line(head0 + n, numbered(n)));
    CHECK(c.read_line() == head_line(head0 + 4));
    CHECK(server.stop_term() == 0);
  }
  CHECK(file_size(dir / "leveldb/index") == static_cast<long long>((head0 + 4) * kRecord));
  CHECK((head0 + 4) * kRecord > boundary);
  {
    ServerProcess server(dir.path());
    server.env(small_journal(kMaxMessageBytes));
    server.start();
    Client c(server.port());
    write_ok(c, "after", numbered(5), head0 + 5);
    c.send_line(batch_read(head0, 6));
    CHECK(c.read_line() == entry_line(head0, filler));
    for (long long n = 1; n <= 5; n++) CHECK(c.read_line() == entry_line(head0 + n, numbered(n)));
    CHECK(c.read_line() == head_line(head0 + 5));
    CHECK(server.stop_term() == 0);
  }
  CHECK(file_size(dir / "leveldb/index") == static_cast<long long>((head0 + 5) * kRecord));
}

// strace, to make one system call fail; empty when it is not installed.
std::string strace_path() {
  for (const char* p : {"/usr/bin/strace", "/bin/strace"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

// Runs the server under strace with the `when`th getdents64 (readdir) failing with EIO.
RunResult run_with_failing_readdir(const TempDir& dir, int when) {
  std::vector<std::string> args{"-f", "-qq", "-o", "/dev/null", "-e", "trace=getdents64", "-e",
                                "inject=getdents64:error=EIO:when=" + std::to_string(when),
                                detail::server_binary()};
  detail::EnvOverrides env{{"PORT", "0"}, {"HOST", "127.0.0.1"}, {"BLOBS", dir / "blobs"},
                           {"LEVELDB", dir / "leveldb"}};
  return run_to_exit(strace_path(), args, env, dir.path(), dir.path());
}

}  // namespace

TEST_CASE("a store whose index is past 2 GiB opens, takes writes across the boundary, reads them back, restarts") {
  crosses_index_boundary(uint64_t{1} << 31);
}

TEST_CASE("a store whose index is past 4 GiB opens, takes writes across the boundary, reads them back, restarts") {
  crosses_index_boundary(uint64_t{1} << 32);
}

TEST_CASE("past January 2038: log times are right and timers, on the monotonic clock, unaffected") {
  // 2040-01-01T00:00:00Z: past 2^31 seconds, where a 32-bit time_t wraps to 1901.
  constexpr long long k2040 = 2208988800;
  TempDir dir;
  ServerProcess server(dir.path());
  server.env("TCP_LOG_SERVER_FAKE_TIME", std::to_string(k2040)).env("LINE_TIMEOUT", "1");
  server.start();
  auto in_2040 = [&](const std::string& line) {
    auto time = ServerProcess::json_int(line, "time");
    REQUIRE_MESSAGE(time.has_value(), line);
    CHECK_MESSAGE(*time >= k2040 * 1000, line);
    CHECK_MESSAGE(*time < (k2040 + 600) * 1000, line);
  };
  auto listening = server.wait_for_log("\"msg\":\"listening\"", 1);
  REQUIRE(listening.size() == 1);
  in_2040(listening[0]);
  Client c(server.port());
  write_ok(c, "a", numbered(1), 1);
  // LINE_TIMEOUT runs on the monotonic clock: an unfinished line times out after about 1 s.
  const auto sent = Clock::now();
  c.send("{\"id\":");
  CHECK(c.read_line(milliseconds(15000)) == R"({"error":"message timeout"})");
  const auto waited = std::chrono::duration_cast<milliseconds>(Clock::now() - sent).count();
  CHECK(waited >= 900);
  auto timeout = server.wait_for_log("\"msg\":\"message timeout\"", 1);
  REQUIRE(timeout.size() == 1);
  in_2040(timeout[0]);
  CHECK(server.stop_term() == 0);
  for (const auto& line : server.log_lines()) in_2040(line);
}

TEST_CASE("the journal's default size follows its file system; one that cannot fit is one clear fatal line") {
  CHECK(default_journal_bytes(256ull << 20, 4 * (1048576 + 4096)) == 8ull << 20);
  CHECK(default_journal_bytes(100ull << 30, 4 * (1048576 + 4096)) == kDefaultJournalBytes);
  CHECK(default_journal_bytes(2ull << 30, 4 * (1048576 + 4096)) == kDefaultJournalBytes);
  CHECK(default_journal_bytes(64ull << 20, 4 * (1048576 + 4096)) == 4 * (1048576 + 4096));
  CHECK(default_journal_bytes(1ull << 20, 0) == 128 * 1024);  // the journal's least size

  TempDir dir;
  {
    ServerProcess server(dir.path());
    server.start();
    auto listening = server.wait_for_log("\"msg\":\"listening\"", 1);
    REQUIRE(listening.size() == 1);
    struct statvfs fs {};
    REQUIRE(::statvfs(dir.path().c_str(), &fs) == 0);
    const uint64_t expected = default_journal_bytes(static_cast<uint64_t>(fs.f_blocks) * fs.f_frsize,
                                                    4 * (1048576 + 4096));
    CHECK(ServerProcess::json_int(listening[0], "journal_bytes") == static_cast<long long>(expected));
    CHECK(file_size(server.leveldb_dir() + "/journal") == static_cast<long long>(expected));
    CHECK(server.stop_term() == 0);
  }
  // 1 TiB: more than this disk has free.
  RunResult r = run_server_binary({}, {{"JOURNAL_BYTES", "1099511627776"}, {"HOST", "127.0.0.1"}});
  CHECK(r.status == 1);
  auto fatal = detail::complete_lines(r.out);
  size_t matching = 0;
  for (const auto& line : fatal)
    if (line.find("\"level\":60") != std::string::npos &&
        line.find("cannot create the journal") != std::string::npos &&
        line.find("of 1099511627776 bytes: its file system has ") != std::string::npos &&
        line.find(" bytes free") != std::string::npos)
      matching++;
  CHECK_MESSAGE(matching == 1, r.output());
}

TEST_CASE("a directory listing that fails is an error, not the end of the directory") {
  if (emulated() || strace_path().empty()) {
    MESSAGE("skipped: needs strace on the host's own binary (under qemu, strace sees qemu's calls)");
    return;
  }
  SUBCASE("LEVELDB of a Node.js server, whose listing fails: refused, nothing created in it") {
    TempDir dir;
    REQUIRE(::mkdir((dir / "leveldb").c_str(), 0755) == 0);
    write_file(dir / "leveldb/CURRENT", "MANIFEST-000002\n");
    RunResult r = run_with_failing_readdir(dir, 1);
    CHECK_MESSAGE(r.status == 1, r.output());
    CHECK_MESSAGE(r.out.find("cannot list directory " + (dir / "leveldb") + ": Input/output error") !=
                      std::string::npos, r.output());
    CHECK(::access((dir / "leveldb/index").c_str(), F_OK) != 0);
    CHECK(::access((dir / "leveldb/journal").c_str(), F_OK) != 0);
  }
  SUBCASE("BLOBS/tmp, whose listing fails at the sweep of unfinished blobs: the start fails, naming it") {
    TempDir dir;
    {
      ServerProcess server(dir.path());
      server.start();
      CHECK(server.stop_term() == 0);
    }
    write_file(dir / "blobs/tmp/unfinished", "{");
    // getdents64 calls: LEVELDB's listing (entries, then the end), then BLOBS/tmp's.
    RunResult r = run_with_failing_readdir(dir, 3);
    CHECK_MESSAGE(r.status == 1, r.output());
    CHECK_MESSAGE(r.out.find("cannot list directory " + (dir / "blobs/tmp") + ": Input/output error") !=
                      std::string::npos, r.output());
  }
}

TEST_CASE("temp files a killed run left in LEVELDB (a journal half created, a marker half replaced) are removed at start, with a warn line") {
  TempDir dir;
  {
    ServerProcess server(dir.path());
    server.env(small_journal(kMaxMessageBytes));
    server.start();
    Client c(server.port());
    write_ok(c, "a", numbered(1), 1);
    CHECK(server.stop_term() == 0);
  }
  write_file(dir / "leveldb/journal.tmp", std::string(1 << 20, '\0'));
  write_file(dir / "leveldb/UNSYNCED.tmp", "12");
  ServerProcess server(dir.path());
  server.env(small_journal(kMaxMessageBytes));
  server.start();
  CHECK(::access((dir / "leveldb/journal.tmp").c_str(), F_OK) != 0);
  CHECK(::access((dir / "leveldb/UNSYNCED.tmp").c_str(), F_OK) != 0);
  auto warned = server.wait_for_log("left unfinished by an earlier run", 2);
  CHECK(warned.size() == 2);
  for (const auto& line : warned) CHECK_MESSAGE(line.find("\"level\":40") != std::string::npos, line);
  CHECK(dump(server.port()) == std::vector<std::string>{entry_line(1, numbered(1)), kCurrent});
  CHECK(server.stop_term() == 0);
}
