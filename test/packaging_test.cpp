// Shipping the server as a system daemon (issue 13): the static binary that `make static`
// builds, the manual page, the systemd unit, and `make install` / `make uninstall`. Tools run
// here (make, groff, mandoc, systemd-analyze, strace) come from `make check-deps`; each runs
// under timeout(1), so no wait is unbounded. Run from the repository root, as `make test` does.
#include <doctest/doctest.h>

#include <elf.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test/durability_harness.hpp"  // Wrapped: the server under strace
#include "test/harness.hpp"

using namespace harness;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

struct CommandResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};

// Runs `command` with sh, killed after `seconds`; make's own variables are dropped, so a make
// started here is not taken for part of the make that runs the tests.
CommandResult run_command(const std::string& command, int seconds = 120) {
  std::string quoted = "'";
  for (char ch : command) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  quoted += "'";
  std::string full = "env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS timeout -s KILL " +
                     std::to_string(seconds) + " sh -c " + quoted + " 2>&1";
  CommandResult result;
  FILE* pipe = ::popen(full.c_str(), "r");
  REQUIRE_MESSAGE(pipe, errno_text("popen " + command));
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) result.output.append(buf, n);
  int status = ::pclose(pipe);
  result.status = detail::shell_status(status);
  return result;
}

bool has_program(const std::string& name) { return !dur::find_program(name).empty(); }

// Sets an environment variable of this process for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string help_text() {
  RunResult help = run_server_binary({"--help"});
  REQUIRE(help.status == 0);
  return help.out;
}

// The manual page as plain text, one long line per paragraph (no hyphenation, no fonts).
std::string manual_text() {
  CommandResult r = run_command("groff -man -Tascii -rLL=4000n -P-cbou tcp-log-server.1");
  REQUIRE_MESSAGE(r.status == 0, r.output);
  return r.output;
}

// The unit file's values of `key`, in order.
std::vector<std::string> unit_values(const std::string& unit, const std::string& key) {
  std::vector<std::string> values;
  for (const std::string& line : detail::complete_lines(unit))
    if (line.rfind(key + "=", 0) == 0) values.push_back(line.substr(key.size() + 1));
  return values;
}

// systemd's syscall groups (systemd-analyze syscall-filter), each expanded to syscall names.
std::map<std::string, std::set<std::string>> syscall_groups() {
  CommandResult r = run_command("systemd-analyze syscall-filter");
  REQUIRE_MESSAGE(r.status == 0, r.output);
  std::map<std::string, std::vector<std::string>> members;
  std::string group;
  for (const std::string& raw : detail::complete_lines(r.output)) {
    if (!raw.empty() && raw[0] == '@') {
      group = raw;
      continue;
    }
    size_t start = raw.find_first_not_of(' ');
    if (start == std::string::npos || start == 0) {
      group.clear();
      continue;
    }
    std::string item = raw.substr(start);
    if (!group.empty() && item[0] != '#') members[group].push_back(item);
  }
  std::map<std::string, std::set<std::string>> expanded;
  std::function<const std::set<std::string>&(const std::string&)> expand =
      [&](const std::string& name) -> const std::set<std::string>& {
    auto found = expanded.find(name);
    if (found != expanded.end()) return found->second;
    std::set<std::string> names;
    for (const std::string& m : members[name]) {
      if (m[0] == '@') {
        const auto& sub = expand(m);
        names.insert(sub.begin(), sub.end());
      } else {
        names.insert(m);
      }
    }
    return expanded[name] = names;
  };
  for (const auto& [name, list] : members) expand(name);
  return expanded;
}

// The system calls named in an strace -f output.
std::set<std::string> traced_syscalls(const std::string& trace) {
  static const std::regex call(R"(^\d+\s+([a-z_0-9]+)\()");
  std::set<std::string> names;
  std::smatch m;
  for (const std::string& line : detail::complete_lines(trace))
    if (std::regex_search(line, m, call)) names.insert(m[1]);
  return names;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// make static

TEST_CASE("the static binary's terminate handler: an uncaught exception is one line with its what() on stderr, then abort") {
  // static/terminate_handler.o, as `make static` links it, in a static program that throws.
  REQUIRE_MESSAGE(fs::exists("static/terminate_handler.o"), "build it with make static (make test does)");
  TempDir dir;
  const std::string source = dir / "throws.cpp", program = dir / "throws";
  write_file(source, "#include <stdexcept>\nint main() { throw std::runtime_error(\"the probe's own words\"); }\n");
  CommandResult build = run_command("g++ -Os -static -o " + program + " " + source + " static/terminate_handler.o");
  REQUIRE_MESSAGE(build.status == 0, build.output);
  CommandResult run = run_command(program);
  CHECK(run.status == 128 + SIGABRT);
  // (sh adds its "Aborted" line after it.)
  CHECK_MESSAGE(run.output.rfind("tcp-log-server: terminate called after an uncaught exception: the probe's own words\n", 0) == 0,
                run.output);
}

TEST_CASE("make static builds a static, stripped binary of at most 1 MiB that needs no NSS") {
  const std::string path = "static/tcp-log-server";
  REQUIRE_MESSAGE(fs::exists(path), "build it with make static (make test does)");
  const std::string bytes = read_file(path);
  CHECK(bytes.size() <= 1024 * 1024);
  REQUIRE(bytes.size() > sizeof(Elf64_Ehdr));
  Elf64_Ehdr header;
  std::memcpy(&header, bytes.data(), sizeof header);
  REQUIRE(std::memcmp(header.e_ident, ELFMAG, SELFMAG) == 0);
  REQUIRE(header.e_ident[EI_CLASS] == ELFCLASS64);
  // No program interpreter and no dynamic section: nothing is loaded at run time.
  std::set<uint32_t> segment_types;
  for (int i = 0; i < header.e_phnum; i++) {
    Elf64_Phdr ph;
    REQUIRE(header.e_phoff + (i + 1) * sizeof ph <= bytes.size());
    std::memcpy(&ph, bytes.data() + header.e_phoff + i * sizeof ph, sizeof ph);
    segment_types.insert(ph.p_type);
  }
  CHECK(segment_types.count(PT_INTERP) == 0);
  CHECK(segment_types.count(PT_DYNAMIC) == 0);
  // Stripped: no symbol table.
  bool has_symtab = false;
  for (int i = 0; i < header.e_shnum; i++) {
    Elf64_Shdr sh;
    REQUIRE(header.e_shoff + (i + 1) * sizeof sh <= bytes.size());
    std::memcpy(&sh, bytes.data() + header.e_shoff + i * sizeof sh, sizeof sh);
    has_symtab = has_symtab || sh.sh_type == SHT_SYMTAB;
  }
  CHECK_FALSE(has_symtab);
  // glibc's NSS would read /etc/nsswitch.conf and load libnss_*.so at run time.
  CHECK(bytes.find("nsswitch.conf") == std::string::npos);
}

TEST_CASE("the static binary serves a write and a read, and stops cleanly") {
  ScopedEnv binary("TCP_LOG_SERVER", "static/tcp-log-server");
  Fresh s({{"HOST", "127.0.0.1"}});
  Client c = s.connect();
  write_ok(c, "w", R"({"static":true})", 1);
  CHECK(dump(s.server.port()) == std::vector<std::string>{entry_line(1, R"({"static":true})"), kCurrent});
  CHECK(s.server.stop_term() == 0);
}

// ---------------------------------------------------------------------------------------------
// The manual page

TEST_CASE("the manual page has no groff or mandoc warnings") {
  REQUIRE_MESSAGE(has_program("groff"), "groff missing: make check-deps installs groff-base");
  REQUIRE_MESSAGE(has_program("mandoc"), "mandoc missing: make check-deps installs mandoc");
  CommandResult groff = run_command("groff -man -ww -z tcp-log-server.1");
  CHECK_MESSAGE(groff.status == 0, groff.output);
  CHECK_MESSAGE(groff.output == "", groff.output);
  CommandResult lint = run_command("mandoc -T lint -W style tcp-log-server.1");
  CHECK_MESSAGE(lint.status == 0, lint.output);
  CHECK_MESSAGE(lint.output == "", lint.output);
}

TEST_CASE("every flag, variable and default of --help is in the manual page, and its version is the binary's") {
  const std::string help = help_text();
  const std::string manual = manual_text();
  const std::string source = read_file("tcp-log-server.1");
  // Each flag is the tag of an entry under OPTIONS: the line after a .TP starts with it.
  static const std::regex flag(R"(--[a-z][a-z-]*)");
  std::set<std::string> flags;
  for (std::sregex_iterator it(help.begin(), help.end(), flag), end; it != end; ++it) flags.insert(it->str());
  CHECK(flags.size() >= 14);
  std::string tags;  // the tag lines, with roff's \- as -
  std::vector<std::string> lines = detail::complete_lines(source);
  for (size_t i = 0; i + 1 < lines.size(); i++)
    if (lines[i] == ".TP") tags += std::regex_replace(lines[i + 1], std::regex(R"(\\-)"), "-") + "\n";
  for (const std::string& f : flags) {
    CAPTURE(f);
    CHECK(std::regex_search(tags, std::regex("^\\.B[IR]? " + f + "( |,|=|$)", std::regex::multiline)));
  }
  // Each variable, and each default as --help words it.
  static const std::regex variable(R"((\[| or )([A-Z][A-Z_]+))");
  std::set<std::string> variables;
  for (std::sregex_iterator it(help.begin(), help.end(), variable), end; it != end; ++it)
    if (it->str(2) != "SIGHUP") variables.insert(it->str(2));
  CHECK(variables.size() >= 12);
  for (const std::string& v : variables) CHECK_MESSAGE(manual.find(v) != std::string::npos, v);
  static const std::regex default_value(R"(default:? ([^\],\s]+))");
  for (std::sregex_iterator it(help.begin(), help.end(), default_value), end; it != end; ++it)
    CHECK_MESSAGE(manual.find(it->str(0)) != std::string::npos, it->str(0));
  // The version in its header line is the binary's.
  RunResult version = run_server_binary({"--version"});
  REQUIRE(version.status == 0);
  CHECK(source.find(".TH TCP-LOG-SERVER 1 ") != std::string::npos);
  CHECK(source.find("\"" + version.out.substr(0, version.out.size() - 1) + "\"") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// The systemd unit

TEST_CASE("the unit is Type=notify, bound to localhost, hardened, restarted on failure, and waits longer than a graceful stop") {
  const std::string unit = read_file("tcp-log-server.service");
  REQUIRE(!unit.empty());
  CHECK(unit_values(unit, "Type") == std::vector<std::string>{"notify"});
  CHECK(unit_values(unit, "KillSignal") == std::vector<std::string>{"SIGTERM"});
  CHECK(unit_values(unit, "Restart") == std::vector<std::string>{"on-failure"});
  std::vector<std::string> environment = unit_values(unit, "Environment");
  CHECK(std::count(environment.begin(), environment.end(), "HOST=127.0.0.1") == 1);
  CHECK(unit_values(unit, "StateDirectory") == std::vector<std::string>{"tcp-log-server"});
  CHECK(unit_values(unit, "DynamicUser") == std::vector<std::string>{"yes"});
  CHECK(unit_values(unit, "ProtectSystem") == std::vector<std::string>{"strict"});
  CHECK(unit_values(unit, "NoNewPrivileges") == std::vector<std::string>{"yes"});
  // A graceful stop flushes to readers for at most 3 s, and closing connections linger at most
  // 2 s more; a slow disk's last sync comes on top.
  auto stop = unit_values(unit, "TimeoutStopSec");
  REQUIRE(stop.size() == 1);
  CHECK(std::stoi(stop[0]) >= 15);
}

TEST_CASE("systemd-analyze verify accepts the installed unit without a warning") {
  REQUIRE_MESSAGE(has_program("systemd-analyze"), "systemd-analyze missing: make check-deps installs systemd");
  TempDir prefix;
  CommandResult install = run_command("make -s install PREFIX=" + prefix.path());
  REQUIRE_MESSAGE(install.status == 0, install.output);
  // MANPATH: so that its Documentation=man:tcp-log-server(1) is found where it was installed.
  CommandResult verify = run_command("MANPATH=" + prefix.path() + "/share/man systemd-analyze verify " +
                                     prefix.path() + "/lib/systemd/system/tcp-log-server.service");
  CHECK_MESSAGE(verify.status == 0, verify.output);
  CHECK_MESSAGE(verify.output == "", verify.output);
}

// The unit's SystemCallFilter and RestrictAddressFamilies would stop a server that needs more:
// the server runs a whole life under strace here (start, a batch large enough for the syncfs
// path, a read from disk after a restart, a stop, --check), and every call it made must be one
// the unit allows.
TEST_CASE("every system call and address family the server uses is allowed by the unit") {
  REQUIRE_MESSAGE(has_program("systemd-analyze"), "systemd-analyze missing: make check-deps installs systemd");
  std::string strace = dur::find_program("strace");
  REQUIRE_MESSAGE(!strace.empty(), "strace is needed (make check-deps installs it)");
  const std::string unit = read_file("tcp-log-server.service");
  auto groups = syscall_groups();
  std::set<std::string> allowed, denied;
  for (const std::string& value : unit_values(unit, "SystemCallFilter")) {
    const bool deny = !value.empty() && value[0] == '~';
    std::istringstream words(deny ? value.substr(1) : value);
    for (std::string word; words >> word;) {
      std::set<std::string>& into = deny ? denied : allowed;
      if (word[0] == '@') {
        REQUIRE_MESSAGE(groups.count(word), "unknown group " << word);
        into.insert(groups[word].begin(), groups[word].end());
      } else {
        into.insert(word);
      }
    }
  }
  REQUIRE(!allowed.empty());
  std::set<std::string> families;
  for (const std::string& value : unit_values(unit, "RestrictAddressFamilies")) {
    std::istringstream words(value);
    for (std::string word; words >> word;) families.insert(word);
  }

  TempDir dir;
  std::string all_traces;
  for (int life = 0; life < 2; life++) {
    const std::string trace = dir / ("life" + std::to_string(life) + ".trace");
    // Loopback as the unit has it, then all interfaces (IPv6) as an administrator may set it;
    // a notify socket that nobody listens on still makes the server open and use one.
    detail::EnvOverrides env{{"PORT", "0"}, {"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"},
                             {"NOTIFY_SOCKET", dir / "no-manager"}};
    if (life == 0) env["HOST"] = "127.0.0.1";
    dur::Wrapped s(dir.path(), {strace, "-f", "-qq", "-o", trace}, env);
    REQUIRE(s.start());
    Client c(s.port());
    if (life == 0) {
      std::string batch;  // 16 new entries in one send: one batch, synced with syncfs
      for (int i = 1; i <= 16; i++) batch += write_msg(std::to_string(i), numbered(i)) + "\n";
      c.send(batch);
      for (int i = 1; i <= 16; i++) CHECK(c.read_line() == confirmation(std::to_string(i), i));
    } else {
      c.send_line(read_from(1));  // from disk: this process never had them in memory
      std::vector<std::string> lines = c.read_lines(17);
      CHECK(lines.back() == kCurrent);
    }
    s.signal_server(SIGTERM);
    CHECK(s.wait(10000ms) == 0);
    all_traces += read_file(trace);
  }
  {
    const std::string trace = dir / "check.trace";
    CommandResult check = run_command(strace + " -f -qq -o " + trace + " env PORT=0 BLOBS=" + dir / "blobs" +
                                      " LEVELDB=" + dir / "leveldb " + detail::server_binary() + " --check");
    CHECK_MESSAGE(check.status == 0, check.output);
    std::string text = read_file(trace);
    // Only what the server did, not env(1) before its execve.
    size_t exec = text.rfind("execve(\"" + detail::server_binary());
    all_traces += exec == std::string::npos ? text : text.substr(text.rfind('\n', exec) + 1);
  }
  std::set<std::string> used = traced_syscalls(all_traces);
  CHECK(used.count("syncfs") == 1);  // the large batch really took that path
  CHECK(used.count("accept4") == 1);
  CHECK(used.count("sendmsg") == 1);  // the notice to the manager
  for (const std::string& call : used) {
    CAPTURE(call);
    CHECK(allowed.count(call) == 1);
    CHECK(denied.count(call) == 0);
  }
  static const std::regex socket_call(R"(\bsocket\((AF_[A-Z0-9]+))");
  for (std::sregex_iterator it(all_traces.begin(), all_traces.end(), socket_call), end; it != end; ++it)
    CHECK_MESSAGE(families.count(it->str(1)) == 1, it->str(1));
}

// ---------------------------------------------------------------------------------------------
// make install, make uninstall

TEST_CASE("make install puts the binary, the manual page and the unit under DESTDIR and PREFIX; make uninstall removes them") {
  TempDir destdir;
  CommandResult install = run_command("make -s install DESTDIR=" + destdir.path() + " PREFIX=/usr");
  REQUIRE_MESSAGE(install.status == 0, install.output);
  const std::string root = destdir.path() + "/usr";
  struct Installed {
    std::string path;
    fs::perms mode;
  };
  const std::vector<Installed> files{
      {root + "/bin/tcp-log-server", fs::perms(0755)},
      {root + "/share/man/man1/tcp-log-server.1", fs::perms(0644)},
      {root + "/lib/systemd/system/tcp-log-server.service", fs::perms(0644)}};
  for (const Installed& f : files) {
    CAPTURE(f.path);
    REQUIRE(fs::is_regular_file(f.path));
    CHECK((fs::status(f.path).permissions() & fs::perms::all) == f.mode);
  }
  CHECK(read_file(files[0].path) == read_file("tcp-log-server"));
  CHECK(read_file(files[1].path) == read_file("tcp-log-server.1"));
  const std::string unit = read_file(files[2].path);
  CHECK(unit_values(unit, "ExecStart") == std::vector<std::string>{"/usr/bin/tcp-log-server"});
  // Only ExecStart differs from the unit in the repository.
  std::string original = read_file("tcp-log-server.service");
  original.replace(original.find("ExecStart=/usr/local/bin/"), 25, "ExecStart=/usr/bin/");
  CHECK(unit == original);
  // The installed binary runs.
  CommandResult version = run_command(files[0].path + " --version");
  CHECK(version.status == 0);

  CommandResult uninstall = run_command("make -s uninstall DESTDIR=" + destdir.path() + " PREFIX=/usr");
  REQUIRE_MESSAGE(uninstall.status == 0, uninstall.output);
  std::vector<std::string> left;
  for (const auto& entry : fs::recursive_directory_iterator(destdir.path()))
    if (!entry.is_directory()) left.push_back(entry.path().string());
  CHECK_MESSAGE(left.empty(), "left after uninstall: " << left.size() << " files, first " << (left.empty() ? "" : left[0]));
}
