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
  return detail::complete_lines(detail::read_whole_file(out_path));
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
    while (detail::read_whole_file(dir / "follow.out").find(text) == std::string::npos) {
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
  std::vector<std::string> followed = detail::complete_lines(detail::read_whole_file(dir / "follow.out"));
  std::vector<std::string> expected = recipes[1].expected;
  expected.push_back(R"({"index":2,"entry":{"live":true}})");
  CHECK(followed == expected);
}
