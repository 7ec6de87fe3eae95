// A Node.js server's LevelDB directory is not ours to start on (issue 11): the real binary
// refuses it before writing anything, names the command that migrates it, and once migrated
// keeps LevelDB processes off the directory while it runs.
#include <doctest/doctest.h>

#include "sha256.hpp"
#include "test/harness.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

using namespace harness;
namespace fs = std::filesystem;

namespace {

// The files a tcp-log-server 10 leaves in its LEVELDB after a few writes, with stand-in bytes
// (only the names matter to the server), and a BLOBS directory with one entry.
void make_node_store(const std::string& blobs, const std::string& leveldb) {
  fs::create_directories(leveldb);
  write_file(leveldb + "/CURRENT", "MANIFEST-000002\n");
  write_file(leveldb + "/MANIFEST-000002", std::string("\x56\xf9\xb8\xf8\x1c\x00\x01\x01", 8));
  write_file(leveldb + "/000003.log", std::string("\x01\x02\x03\x00log record", 14));
  write_file(leveldb + "/LOCK", "");
  write_file(leveldb + "/LOG", "2026/01/01-00:00:00.000000 7f Delete type=3 #1\n");
  const std::string entry = R"({"a":1})";
  const std::string hex = sha256_hex(entry);
  fs::create_directories(blobs + "/" + hex.substr(0, 2));
  write_file(blobs + "/" + hex.substr(0, 2) + "/" + hex.substr(2), entry);
}

// Everything about a tree that a write could change: each path's kind, mode, size, modification
// time (nanoseconds) and bytes; directories' times change when a name is added or removed.
std::map<std::string, std::string> snapshot(const std::string& root) {
  std::map<std::string, std::string> result;
  auto describe = [](const fs::path& p) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return std::string("lstat failed");
    std::string d = std::to_string(st.st_mode) + " " + std::to_string(st.st_size) + " " +
                    std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
    if (S_ISREG(st.st_mode)) d += " " + read_file(p.string());
    return d;
  };
  result["."] = describe(root);
  for (const auto& e : fs::recursive_directory_iterator(root))
    result[fs::relative(e.path(), root).string()] = describe(e.path());
  return result;
}

// Runs the binary with `args` in `cwd` with BLOBS and LEVELDB as given, until it exits.
RunResult run_in(const std::string& cwd, const std::string& blobs, const std::string& leveldb,
                 const std::vector<std::string>& args = {}) {
  TempDir out;  // the output files live outside the directories under test
  return run_to_exit(detail::server_binary(), args, {{"PORT", "0"}, {"BLOBS", blobs}, {"LEVELDB", leveldb}}, cwd,
                     out.path());
}

// The one fatal line of a refused start, after checking there is exactly one line and it is fatal.
std::string the_fatal_line(const RunResult& r) {
  auto lines = detail::complete_lines(r.out);
  REQUIRE_MESSAGE(lines.size() == 1, "stdout: " << r.out);
  CHECK(ServerProcess::json_int(lines[0], "level") == kFatal);
  return lines[0];
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

// A classic fcntl() write lock on `path`, held by this process until destruction: what LevelDB
// (and so a Node.js server) holds on its LOCK file while it has the database open.
struct LevelDbStyleLock {
  int fd = -1;
  explicit LevelDbStyleLock(const std::string& path) {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
  }
  bool try_lock() {
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    return ::fcntl(fd, F_SETLK, &fl) == 0;
  }
  ~LevelDbStyleLock() { ::close(fd); }
};

}  // namespace

TEST_CASE("a LEVELDB holding a LevelDB and no index: exit 1, one fatal line with the migrate command, nothing written") {
  TempDir dir;
  const std::string blobs = dir / "blobs", leveldb = dir / "leveldb";
  make_node_store(blobs, leveldb);
  const auto before = snapshot(dir.path());
  for (const auto& args : {std::vector<std::string>{}, std::vector<std::string>{"--check"}}) {
    INFO("args: " << (args.empty() ? "(none)" : args[0]));
    RunResult r = run_in(dir.path(), blobs, leveldb, args);
    CHECK(r.status == 1);
    std::string fatal = the_fatal_line(r);
    CHECK_MESSAGE(contains(fatal, "LEVELDB directory " + leveldb + " holds a LevelDB database"), fatal);
    CHECK_MESSAGE(contains(fatal, "not yet migrated"), fatal);
    CHECK_MESSAGE(contains(fatal, "make migrate BLOBS=" + blobs + " LEVELDB=" + leveldb + "\""), fatal);
    CHECK_FALSE(contains(r.out, "listening"));
    // Byte for byte, name for name, time for time: no LOCK, index, tmp/ or hh/ was made.
    CHECK(snapshot(dir.path()) == before);
  }
}

TEST_CASE("a LevelDB that lost its CURRENT (a MANIFEST-* file) is refused too") {
  TempDir dir;
  make_node_store(dir / "blobs", dir / "leveldb");
  fs::remove(dir / "leveldb/CURRENT");
  const auto before = snapshot(dir.path());
  RunResult r = run_in(dir.path(), dir / "blobs", dir / "leveldb");
  CHECK(r.status == 1);
  CHECK(contains(the_fatal_line(r), "holds a LevelDB database (MANIFEST-000002)"));
  CHECK(snapshot(dir.path()) == before);
}

TEST_CASE("the migrate command names absolute directories, quoted for the shell where needed") {
  TempDir dir;
  fs::create_directories(dir / "run");
  make_node_store(dir / "blobs", dir / "level db's");
  // Relative to the server's working directory: the command must work from another one.
  RunResult r = run_in(dir / "run", "../blobs", "../level db's");
  CHECK(r.status == 1);
  std::string fatal = the_fatal_line(r);
  // In the JSON line the single quotes stand as they are; the shell word is
  // '<dir>/level db'\''s'.
  CHECK_MESSAGE(contains(fatal, "make migrate BLOBS=" + dir.path() + "/blobs LEVELDB='" + dir.path() +
                                    "/level db'\\\\''s'"),
                fatal);
  CHECK_FALSE(fs::exists(dir / "run/../level db's/index"));
}

TEST_CASE("a migrated LEVELDB (the LevelDB's files beside our index) starts and serves the index") {
  TempDir dir;
  ServerProcess server(dir.path());
  make_node_store(server.blobs_dir(), server.leveldb_dir());
  const std::string entry = R"({"a":1})";
  write_file(server.leveldb_dir() + "/index", sha256_hex(entry) + "\n");
  server.start();
  Client c(server.port());
  c.send_line(R"({"from":1})");
  CHECK(c.read_line() == R"({"index":1,"entry":{"a":1}})");
  CHECK(c.read_line() == R"({"current":true})");
  c.send_line(R"({"id":"x","entry":{"b":2}})");
  CHECK(c.read_line() == R"({"id":"x","index":2})");
  CHECK(server.stop_term() == 0);
  // The LevelDB's own files are still there and unchanged, apart from the shared LOCK.
  CHECK(read_file(server.leveldb_dir() + "/CURRENT") == "MANIFEST-000002\n");
}

TEST_CASE("while a LevelDB process holds LEVELDB/LOCK the server does not start; while the server runs no LevelDB can lock it") {
  TempDir dir;
  const std::string blobs = dir / "blobs", leveldb = dir / "leveldb";
  make_node_store(blobs, leveldb);
  write_file(leveldb + "/index", "");  // migrated, empty
  {
    LevelDbStyleLock node_server(leveldb + "/LOCK");
    REQUIRE(node_server.try_lock());
    RunResult r = run_in(dir.path(), blobs, leveldb);
    CHECK(r.status == 1);
    std::string fatal = the_fatal_line(r);
    CHECK_MESSAGE(contains(fatal, "directory " + leveldb + " is in use by pid " + std::to_string(::getpid())), fatal);
    CHECK_MESSAGE(contains(fatal, "an fcntl lock on " + leveldb + "/LOCK"), fatal);
  }
  ServerProcess server(dir.path());
  server.start();
  {
    LevelDbStyleLock node_server(leveldb + "/LOCK");
    bool locked = node_server.try_lock();
    int err = errno;
    CHECK_FALSE(locked);
    CHECK_MESSAGE((err == EAGAIN || err == EACCES), std::strerror(err));
  }
  CHECK(server.stop_term() == 0);
  LevelDbStyleLock after(leveldb + "/LOCK");
  CHECK(after.try_lock());
}
