// The README's nc recipes, run as written with the real nc (netcat-openbsd) against the real
// server: the commands are read from README.md's "With nc" block, only the port (8089 -> the
// server's PORT=0 port) and the host (localhost -> 127.0.0.1) changed, and the "# -> " lines
// there are the output the test expects.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test/harness.hpp"

using namespace harness;
using namespace std::chrono_literals;

namespace {

struct Recipe {
  std::string command;
  std::vector<std::string> expected;  // output lines documented under it
};

std::vector<Recipe> readme_nc_recipes() {
  std::ifstream readme("README.md");
  REQUIRE_MESSAGE(readme, "README.md not found; run the tests from the repository root");
  std::vector<Recipe> recipes;
  std::string line;
  bool in_section = false, in_block = false;
  while (std::getline(readme, line)) {
    if (line.rfind("### With nc", 0) == 0) in_section = true;
    else if (in_section && line.rfind("#", 0) == 0 && !in_block) break;
    if (!in_section) continue;
    if (line.rfind("```", 0) == 0) {
      if (in_block) break;
      in_block = true;
      continue;
    }
    if (!in_block) continue;
    if (line.rfind("printf ", 0) == 0) {
      recipes.push_back({line, {}});
    } else if (!recipes.empty()) {
      for (const char* prefix : {"# -> ", "#    "})
        if (line.rfind(prefix, 0) == 0) recipes.back().expected.push_back(line.substr(5));
    }
  }
  return recipes;
}

std::string localize(std::string command, int port) {
  size_t at = command.find("localhost 8089");
  REQUIRE_MESSAGE(at != std::string::npos, "recipe without 'localhost 8089': " << command);
  command.replace(at, 14, "127.0.0.1 " + std::to_string(port));
  size_t comment = command.find("  #");
  if (comment != std::string::npos) command.resize(comment);
  return command;
}

// Runs `command` with sh in its own process group, output to `out_path`.
pid_t spawn_shell(const std::string& command, const std::string& out_path) {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::setpgid(0, 0);
    int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ::_exit(127);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  return pid;
}

// Runs a recipe that should finish by itself; returns its output lines.
std::vector<std::string> run_to_end(const std::string& command, const std::string& out_path) {
  pid_t pid = spawn_shell(command, out_path);
  auto status = detail::wait_for_exit(pid, Clock::now() + 10s);
  if (!status) {
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    FAIL("recipe did not finish within 10 s: " << command);
  }
  CHECK_MESSAGE(detail::shell_status(*status) == 0, command);
  return detail::complete_lines(read_file(out_path));
}

}  // namespace

TEST_CASE("the README's nc recipes work as written and print what the README shows") {
  REQUIRE_MESSAGE(std::system("command -v nc >/dev/null 2>&1") == 0,
                  "nc missing: make check-deps installs netcat-openbsd");
  std::vector<Recipe> recipes = readme_nc_recipes();
  REQUIRE(recipes.size() == 3);
  TempDir dir;
  ServerProcess server(dir.path());
  server.start();

  // Write one entry, then dump the log: both finish by themselves (nc -N half-closes).
  REQUIRE(recipes[0].command.find("nc -N") != std::string::npos);
  CHECK(run_to_end(localize(recipes[0].command, server.port()), dir / "write.out") ==
        recipes[0].expected);
  REQUIRE(recipes[1].command.find("nc -N") != std::string::npos);
  CHECK(run_to_end(localize(recipes[1].command, server.port()), dir / "dump.out") ==
        recipes[1].expected);

  // Follow: the log so far, current, then a live entry; it never ends by itself.
  pid_t follower = spawn_shell(localize(recipes[2].command, server.port()), dir / "follow.out");
  auto wait_for = [&](const std::string& text) {
    auto deadline = Clock::now() + kWait;
    while (read_file(dir / "follow.out").find(text) == std::string::npos) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(10ms);
    }
    return true;
  };
  CHECK(wait_for("{\"current\":true}\n"));
  {
    Client writer(server.port());
    writer.send_line(R"({"id":"2","entry":{"live":true}})");
    CHECK(writer.read_line() == R"({"id":"2","index":2})");
  }
  CHECK(wait_for("{\"index\":2,\"entry\":{\"live\":true}}\n"));
  std::this_thread::sleep_for(100ms);
  CHECK_MESSAGE(!detail::wait_for_exit(follower, Clock::now()), "the follower ended by itself");
  ::kill(-follower, SIGTERM);
  if (!detail::wait_for_exit(follower, Clock::now() + 5s)) {
    ::kill(-follower, SIGKILL);
    ::waitpid(follower, nullptr, 0);
  }
  std::vector<std::string> followed = detail::complete_lines(read_file(dir / "follow.out"));
  std::vector<std::string> expected = recipes[1].expected;
  expected.push_back(R"({"index":2,"entry":{"live":true}})");
  CHECK(followed == expected);
}

// ---------------------------------------------------------------------------------------------
// The mirror recipe of doc/replication.md ("A live copy on another machine"), saved as written
// and run with bash against two real servers on loopback.

namespace {

std::string mirror_script() {
  std::ifstream page("doc/replication.md");
  REQUIRE_MESSAGE(page, "doc/replication.md not found; run the tests from the repository root");
  std::string line, script;
  bool in_section = false, in_block = false;
  const std::string heading = " A live copy on another machine";
  while (std::getline(page, line)) {
    if (!in_block && line.rfind("#", 0) == 0 && line.size() >= heading.size() &&
        line.compare(line.size() - heading.size(), heading.size(), heading) == 0)
      in_section = true;
    if (!in_section) continue;
    if (!in_block && line == "```bash") {
      in_block = true;
      continue;
    }
    if (in_block && line == "```") break;
    if (in_block) script += line + "\n";
  }
  REQUIRE_MESSAGE(script.rfind("#!/bin/bash\n", 0) == 0, "no bash block under the mirror heading");
  return script;
}

// A server on 127.0.0.1 over its own directory under `dir`.
struct Named {
  ServerProcess server;
  Named(const TempDir& dir, const std::string& name) : server(dir / name) {
    std::filesystem::create_directories(dir / name);
    server.env("HOST", "127.0.0.1").start();
  }
};

// Writes entries `from`..`to` (each a few awkward numbers and a string) and checks their indices.
void write_entries(int port, int from, int to) {
  Client c(port);
  for (int i = from; i <= to; i++)
    write_ok(c, "w" + std::to_string(i),
             R"({"n":)" + std::to_string(i) + R"(,"f":1.0,"big":12345678901234567890,"s":"\u00e9\"\\"})", i);
}

class Mirror {
 public:
  Mirror(const TempDir& dir, int from_port, int to_port) : out_(dir / ("mirror-" + std::to_string(detail::next_serial()) + ".out")) {
    const std::string script = dir / "mirror.sh";
    std::ofstream(script) << mirror_script();
    pid_ = spawn_shell("bash " + script + " 127.0.0.1 " + std::to_string(from_port) + " 127.0.0.1 " +
                           std::to_string(to_port),
                       out_);
  }
  ~Mirror() { stop(); }
  std::string output() const { return read_file(out_); }
  // Waits for the script to exit by itself; its status, or nothing if it did not in time.
  std::optional<int> wait_exit(milliseconds timeout = kWait) {
    if (pid_ < 0) return status_;
    auto status = detail::wait_for_exit(pid_, Clock::now() + timeout);
    if (!status) return std::nullopt;
    pid_ = -1;
    status_ = detail::shell_status(*status);
    return status_;
  }
  // Ends it and everything it started (its own process group).
  void stop() {
    if (pid_ < 0) return;
    ::kill(-pid_, SIGTERM);
    if (!detail::wait_for_exit(pid_, Clock::now() + kWait)) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }

 private:
  std::string out_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Waits until the copy's log reads exactly as the original's.
bool same_log_soon(int original, int copy) {
  auto deadline = Clock::now() + 10s;
  for (;;) {
    if (dump(copy) == dump(original)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
}

}  // namespace

TEST_CASE("the mirror recipe of doc/replication.md copies a log live, entry for entry, and resumes where it stopped") {
  TempDir dir;
  Named original(dir, "original"), copy(dir, "copy");
  write_entries(original.server.port(), 1, 30);
  {
    Mirror mirror(dir, original.server.port(), copy.server.port());
    CHECK(same_log_soon(original.server.port(), copy.server.port()));
    write_entries(original.server.port(), 31, 35);  // live
    CHECK(same_log_soon(original.server.port(), copy.server.port()));
    CHECK(mirror.output().find("mirror: caught up") != std::string::npos);
    CHECK_FALSE(mirror.wait_exit(0ms).has_value());  // it follows; it does not end by itself
  }
  write_entries(original.server.port(), 36, 40);  // while no mirror runs
  Mirror again(dir, original.server.port(), copy.server.port());
  CHECK(same_log_soon(original.server.port(), copy.server.port()));
  CHECK(dump(copy.server.port()).size() == 41);  // 40 entries and current: nothing twice
  // When the original stops, so does the mirror, with a status a supervisor restarts it on.
  CHECK(original.server.stop_term() == 0);
  CHECK(again.wait_exit() == 1);
  CHECK(again.output().find("mirror: the original closed the connection") != std::string::npos);
}

TEST_CASE("the mirror recipe of doc/replication.md refuses to resume onto a log that is not a copy") {
  TempDir dir;
  Named original(dir, "original"), other(dir, "other");
  write_entries(original.server.port(), 1, 3);
  {
    Client c(other.server.port());
    write_ok(c, "x", R"({"something":"else"})", 1);
  }
  const std::vector<std::string> before = dump(other.server.port());
  Mirror mirror(dir, original.server.port(), other.server.port());
  CHECK(mirror.wait_exit() == 1);
  CHECK(mirror.output().find("mirror: entry 1 differs") != std::string::npos);
  CHECK(dump(other.server.port()) == before);
}

TEST_CASE("the mirror recipe of doc/replication.md stops at an entry the original cannot read back") {
  TempDir dir;
  std::filesystem::create_directories(dir / "original");
  {
    ServerProcess writer(dir / "original");
    writer.env("HOST", "127.0.0.1").start();
    write_entries(writer.port(), 1, 5);
    REQUIRE(writer.stop_term() == 0);
  }
  // Entry 3's blob is gone; a new server reads it from disk and sends an error in its place.
  const std::string index = read_file(dir / "original/leveldb/index");
  const std::string hash = index.substr(2 * 65, 64);
  REQUIRE(std::filesystem::remove(dir / ("original/blobs/" + hash.substr(0, 2) + "/" + hash.substr(2))));
  Named original(dir, "original"), copy(dir, "copy");
  Mirror mirror(dir, original.server.port(), copy.server.port());
  auto deadline = Clock::now() + kWait;
  while (mirror.output().find("mirror: cannot copy") == std::string::npos && Clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  CHECK(mirror.output().find(R"(mirror: cannot copy {"index":3,"error":)") != std::string::npos);
  CHECK(mirror.wait_exit() == 1);
  std::vector<std::string> copied = dump(copy.server.port());
  REQUIRE(copied.size() == 3);  // entries 1 and 2, current
  CHECK(copied[1] == dump(original.server.port())[1]);
}

TEST_CASE("the mirror recipe of doc/replication.md stops when the copy does not store an entry under its index") {
  TempDir dir;
  Named original(dir, "original");
  std::filesystem::create_directories(dir / "copy");
  ServerProcess copy(dir / "copy");
  copy.env("HOST", "127.0.0.1").env("MAX_MESSAGE_BYTES", "64").start();  // entry 2 will not fit
  {
    Client c(original.server.port());
    write_ok(c, "a", R"({"n":1})", 1);
    write_ok(c, "b", R"({"long":")" + std::string(100, 'x') + R"("})", 2);
  }
  Mirror mirror(dir, original.server.port(), copy.port());
  auto deadline = Clock::now() + kWait;
  while (mirror.output().find("mirror: the copy answered") == std::string::npos && Clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  CHECK(mirror.output().find(R"(mirror: the copy answered {"error":"message too large"})") != std::string::npos);
  CHECK(mirror.wait_exit() == 1);
  std::vector<std::string> copied = dump(copy.port());
  REQUIRE(copied.size() == 2);  // entry 1, current
  CHECK(copied[0] == entry_line(1, R"({"n":1})"));
}
