// The first minute with the server (issue 13): the listening line says what runs on what data,
// and --check shows its progress on a terminal, and nothing extra anywhere else.
#include <doctest/doctest.h>

#include <pty.h>
#include <climits>
#include <cstdlib>

#include <string>

#include "check_progress.hpp"
#include "crc32c.hpp"
#include "sha256.hpp"
#include "test/harness.hpp"

using namespace harness;
using namespace std::chrono_literals;

namespace {

std::string canonical(const std::string& path) {
  char resolved[PATH_MAX];
  REQUIRE_MESSAGE(::realpath(path.c_str(), resolved), errno_text("realpath " + path));
  return resolved;
}

// A store of `count` entries in dir/blobs and dir/leveldb, written through a real server.
void make_store(const TempDir& dir, int count) {
  ServerProcess server(dir.path());
  server.env("SYNC", "none").start();
  Client c(server.port());
  std::string lines;
  for (int i = 1; i <= count; i++) lines += write_msg(std::to_string(i), numbered(i)) + "\n";
  c.send(lines);
  for (int i = 1; i <= count; i++) REQUIRE(c.read_line() == confirmation(std::to_string(i), i));
  REQUIRE(server.stop_term() == 0);
}

struct TerminalRun {
  int status = -1;
  std::string terminal;  // what the program wrote to the terminal (its stderr)
  std::string out;       // its stdout, a file
};

// Runs the server binary with `args` and `env`, stderr on a new pseudo-terminal (so isatty(2)
// is true), stdout into a file; returns once it exits and the terminal is drained.
TerminalRun run_on_terminal(const std::vector<std::string>& args, const detail::EnvOverrides& env,
                            const TempDir& dir) {
  int master = -1, slave = -1;
  REQUIRE_MESSAGE(::openpty(&master, &slave, nullptr, nullptr, nullptr) == 0, errno_text("openpty"));
  std::vector<std::string> environment = detail::build_environment(env);
  std::string binary = detail::server_binary();
  std::vector<char*> argv{binary.data()};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : environment) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string out_path = dir / "terminal-run.stdout";
  int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  REQUIRE(out >= 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::setsid();
    int in = ::open("/dev/null", O_RDONLY);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(slave, 2);
    ::close(master);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(slave);
  ::close(out);
  TerminalRun run;
  // Read until the terminal has no writer left (EIO), or time is up.
  const auto deadline = Clock::now() + kProcessWait;
  for (;;) {
    pollfd p{master, POLLIN, 0};
    if (::poll(&p, 1, detail::millis_left(deadline)) <= 0) break;
    char buf[4096];
    ssize_t n = ::read(master, buf, sizeof buf);
    if (n <= 0) break;
    run.terminal.append(buf, static_cast<size_t>(n));
  }
  ::close(master);
  if (auto status = detail::wait_for_exit(pid, Clock::now() + kProcessWait)) {
    run.status = detail::shell_status(*status);
  } else {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    FAIL("still running after the timeout; killed");
  }
  run.out = read_file(out_path);
  return run;
}

}  // namespace

TEST_CASE("the listening line says the version, host, absolute directories, sync mode, head, journal size and hashing code, and keeps event and port") {
  TempDir dir;
  make_store(dir, 3);
  ServerProcess server(dir.path());
  server.env("BLOBS", "blobs").env("LEVELDB", "leveldb").env("SYNC", "none");  // relative to its directory
  server.start();
  auto lines = server.wait_for_log(R"("msg":"listening")");
  REQUIRE(lines.size() == 1);
  const std::string& line = lines[0];
  CAPTURE(line);
  CHECK(json_string_field(line, "event") == std::string("listening"));
  CHECK(json_int_field(line, "port") == server.port());
  RunResult version = run_server_binary({"--version"});
  CHECK(version.out == "tcp-log-server " + json_string_field(line, "version").value_or("?") + "\n");
  CHECK(json_string_field(line, "host") == std::string("all interfaces"));
  CHECK(json_string_field(line, "blobs") == canonical(dir / "blobs"));
  CHECK(json_string_field(line, "leveldb") == canonical(dir / "leveldb"));
  CHECK(json_string_field(line, "sync") == std::string("none"));
  CHECK(json_int_field(line, "head") == 3);
  // SYNC=none writes no journal; which hashing code runs (the accelerated one where the CPU
  // has it), as this very machine picks it.
  CHECK(json_int_field(line, "journal_bytes") == 0);
  CHECK(json_string_field(line, "crc32c") == std::string(crc32c_implementation()));
  CHECK(json_string_field(line, "sha256") == std::string(sha256_implementation()));
  CHECK(server.stop_term() == 0);

  ServerProcess local(dir.path());
  local.env("HOST", "127.0.0.1").start();  // SYNC=always by default
  auto local_lines = local.wait_for_log(R"("msg":"listening")");
  REQUIRE(local_lines.size() == 1);
  CHECK(json_string_field(local_lines[0], "host") == std::string("127.0.0.1"));
  CHECK(json_string_field(local_lines[0], "sync") == std::string("always"));
}

TEST_CASE("--check prints nothing on stderr when stderr is not a terminal") {
  TempDir dir;
  make_store(dir, 50);
  RunResult r = run_server_binary({"--check"}, {{"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"}});
  CHECK(r.status == 0);
  CHECK(r.err == "");
  CHECK(r.out == "entries: 50\ndistinct blobs: 50\nbytes: 391\njournal records: 0\nproblems: 0\n");
}

TEST_CASE("--check on a terminal shows how far it is on stderr, then a summary; the report on stdout is unchanged") {
  TempDir dir;
  make_store(dir, 50);
  TerminalRun r = run_on_terminal({"--check"}, {{"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"}}, dir);
  CAPTURE(r.terminal);
  CHECK(r.status == 0);
  CHECK(r.out == "entries: 50\ndistinct blobs: 50\nbytes: 391\njournal records: 0\nproblems: 0\n");
  CHECK(r.terminal.rfind("\rchecking 50 entries\033[K", 0) == 0);
  const size_t summary = r.terminal.rfind("\rchecked 50 entries in ");
  REQUIRE(summary != std::string::npos);
  CHECK(r.terminal.find('\n', summary) != std::string::npos);  // the summary line stays
}

// ---------------------------------------------------------------------------------------------
// The progress line's text and pace (check_progress.hpp), on a clock of the test's own.

TEST_CASE("progress: the first call shows at once, later ones at most every 250 ms, with rate and time left") {
  CheckProgress p;
  CHECK(p.update(0, 1000000, 5000) == "checking 1000000 entries");
  CHECK(p.update(10, 1000000, 5001) == "");
  CHECK(p.update(20000, 1000000, 5249) == "");
  // 50,000 entries in 1 s: 950,000 left at 50,000 a second is 19 s.
  CHECK(p.update(50000, 1000000, 6000) == "checked 50000 of 1000000 entries (5%), 50000 entries/s, about 19 s left");
  CHECK(p.update(50001, 1000000, 6100) == "");
  CHECK(p.update(100000, 1000000, 7000) == "checked 100000 of 1000000 entries (10%), 50000 entries/s, about 18 s left");
  CHECK(p.done(1000000, 25000) == "checked 1000000 entries in 20 s, 50000 entries/s");
}

TEST_CASE("progress: durations read as seconds, minutes or hours") {
  CHECK(CheckProgress::duration(0.04) == "0.0 s");
  CHECK(CheckProgress::duration(9.94) == "9.9 s");
  CHECK(CheckProgress::duration(42) == "42 s");
  CHECK(CheckProgress::duration(1020) == "17 min");
  CHECK(CheckProgress::duration(3 * 3600 + 5 * 60 + 9) == "3 h 5 min");
}
