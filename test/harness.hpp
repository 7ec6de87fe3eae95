// End-to-end test harness: the real server binary as a child process, with its data in a
// temporary directory, and a loopback client that speaks newline-delimited JSON. Header-only,
// for doctest tests; on top of support.hpp, whose names (TempDir, read_file, the log levels,
// small_journal(), ...) are harness's too.
//
// Every wait is bounded; running out of time fails the current test with what was seen.
// Only processes started here are ever signalled, by their pid; only loopback is dialled.
#pragma once

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "support.hpp"

extern char** environ;

namespace harness {

using namespace test_support;

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long a test waits for something that should happen "at once" before it gives up.
inline constexpr milliseconds kWait{5000};
// How long a server gets to start, or to stop after SIGTERM.
inline constexpr milliseconds kProcessWait{10000};

// ---------------------------------------------------------------------------------------------
// Small helpers

namespace detail {

inline int millis_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

// The tail of `text`, for failure messages that must stay readable.
inline std::string tail(std::string_view text, size_t max = 300) {
  if (text.size() <= max) return std::string(text);
  return "..." + std::string(text.substr(text.size() - max));
}

// Complete ('\n'-terminated) lines of `text`, without their '\n'.
inline std::vector<std::string> complete_lines(std::string_view text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string_view::npos; start = nl + 1)
    lines.emplace_back(text.substr(start, nl - start));
  return lines;
}

// Exit status as a shell reports it: the exit code, or 128 + the signal number.
inline int shell_status(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

// Reaps `pid` if it exits before `deadline`; returns its wait status, or nothing on timeout.
inline std::optional<int> wait_for_exit(pid_t pid, Clock::time_point deadline) {
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return std::nullopt;  // not our child (any more)
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(milliseconds(5));
  }
}

using EnvOverrides = std::map<std::string, std::optional<std::string>>;  // nullopt: unset

// The inherited environment without the server's variables (server_variables()), plus `overrides`.
inline std::vector<std::string> build_environment(const EnvOverrides& overrides) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view entry(*e);
    std::string name(entry.substr(0, entry.find('=')));
    bool ours = overrides.count(name) != 0;
    for (const auto& v : server_variables()) ours = ours || v == name;
    if (!ours) env.emplace_back(entry);
  }
  for (const auto& [name, value] : overrides)
    if (value) env.push_back(name + "=" + *value);
  return env;
}

// Absolute path of the binary under test: $TCP_LOG_SERVER, or ./tcp-log-server.
inline std::string server_binary() {
  const char* configured = std::getenv("TCP_LOG_SERVER");
  std::string path = configured && *configured ? configured : "./tcp-log-server";
  if (path[0] != '/') path = (std::filesystem::current_path() / path).lexically_normal().string();
  return path;
}

inline int next_serial() {
  static std::atomic<int> serial{0};
  return ++serial;
}

// Starts `binary args...` with exactly `env`, in directory `cwd`, stdin from /dev/null,
// stdout and stderr into the given files (stdout into `stdout_fd` instead when it is >= 0),
// with at most `nofile` descriptors when it is > 0. Returns the child's pid.
inline pid_t spawn(const std::string& binary, const std::vector<std::string>& args,
                   const std::vector<std::string>& env, const std::string& cwd,
                   const std::string& stdout_path, const std::string& stderr_path,
                   int stdout_fd = -1, long nofile = 0) {
  struct stat st {};
  if (::stat(binary.c_str(), &st) != 0 || !(st.st_mode & S_IXUSR)) {
    FAIL("server binary " << binary << " is missing or not executable (build it with make, or "
                          << "set TCP_LOG_SERVER)");
    return -1;
  }
  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::vector<char*> argv{const_cast<char*>(binary.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  int out = stdout_fd >= 0 ? ::fcntl(stdout_fd, F_DUPFD_CLOEXEC, 3)
                           : ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out < 0 || err < 0 || in < 0) {
    std::string why = errno_text("open " + stdout_path);
    for (int fd : {out, err, in})
      if (fd >= 0) ::close(fd);
    FAIL(why);
    return -1;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(err, 2);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (nofile > 0) {
      struct rlimit rl;
      rl.rlim_cur = rl.rlim_max = static_cast<rlim_t>(nofile);
      if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::_exit(125);
    }
    if (::chdir(cwd.c_str()) != 0) ::_exit(126);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  std::string why = pid < 0 ? errno_text("fork") : std::string();
  ::close(out);
  ::close(err);
  ::close(in);
  if (pid < 0) FAIL(why);
  return pid;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Running the binary to completion (for --help, bad flags, failures to start).

struct RunResult {
  int status = -1;  // shell convention; -1 when it had to be killed after the timeout
  std::string out;  // stdout
  std::string err;  // stderr
  std::string output() const { return out + err; }
};

// Runs `binary args...` in `cwd` with `env` (build_environment: the server's variables are not
// inherited) until it exits, its stdout and stderr into the files stdout and stderr of
// `out_dir`; killed after `timeout`, and err says so.
inline RunResult run_to_exit(const std::string& binary, const std::vector<std::string>& args,
                             const detail::EnvOverrides& env, const std::string& cwd,
                             const std::string& out_dir, milliseconds timeout = kProcessWait) {
  pid_t pid = detail::spawn(binary, args, detail::build_environment(env), cwd, out_dir + "/stdout",
                            out_dir + "/stderr");
  RunResult result;
  if (auto status = detail::wait_for_exit(pid, Clock::now() + timeout)) {
    result.status = detail::shell_status(*status);
  } else {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    result.err = "[harness: still running after the timeout; killed]\n";
  }
  result.out = read_file(out_dir + "/stdout");
  result.err = read_file(out_dir + "/stderr") + result.err;
  return result;
}

// Runs the server binary with `args` and `env` (on top of PORT=0 and data directories in a
// private temporary directory, so a binary that unexpectedly starts harms nothing) until it exits.
inline RunResult run_server_binary(const std::vector<std::string>& args,
                                   const detail::EnvOverrides& env = {},
                                   milliseconds timeout = kProcessWait) {
  TempDir dir;
  detail::EnvOverrides all{{"PORT", "0"}, {"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"}};
  for (const auto& [name, value] : env) all[name] = value;
  return run_to_exit(detail::server_binary(), args, all, dir.path(), dir.path(), timeout);
}

// ---------------------------------------------------------------------------------------------
// ServerProcess: the real server on PORT=0 with its data in `data_dir` (blobs/, leveldb/).
// Several ServerProcess objects may use one data_dir in turn (restart tests); each has its own
// output files there.

class ServerProcess {
 public:
  explicit ServerProcess(std::string data_dir) : dir_(std::move(data_dir)) {
    int serial = detail::next_serial();
    stdout_path_ = dir_ + "/server-" + std::to_string(serial) + ".stdout";
    stderr_path_ = dir_ + "/server-" + std::to_string(serial) + ".stderr";
    env_["PORT"] = "0";
    env_["BLOBS"] = blobs_dir();
    env_["LEVELDB"] = leveldb_dir();
  }
  ~ServerProcess() {
    if (pid_ > 0) {  // still ours and not reaped: it cannot be anyone else's process
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (pipe_read_ >= 0) ::close(pipe_read_);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Configuration, before start(). Later calls win.
  ServerProcess& env(const std::string& name, const std::string& value) {
    env_[name] = value;
    return *this;
  }
  // Every variable of `variables` (as small_journal() gives them).
  ServerProcess& env(const std::map<std::string, std::string>& variables) {
    for (const auto& [name, value] : variables) env_[name] = value;
    return *this;
  }
  ServerProcess& unset_env(const std::string& name) {
    env_[name] = std::nullopt;
    return *this;
  }
  ServerProcess& arg(const std::string& a) {
    args_.push_back(a);
    return *this;
  }
  // Stdout into a pipe that only read_stdout_pipe() reads (instead of a file).
  ServerProcess& stdout_to_pipe() {
    use_pipe_ = true;
    return *this;
  }
  // At most `n` descriptors (RLIMIT_NOFILE, soft and hard).
  ServerProcess& nofile(long n) {
    nofile_ = n;
    return *this;
  }

  // Starts the server and waits until it logs "listening"; takes the port from that line.
  ServerProcess& start(milliseconds timeout = kProcessWait) {
    REQUIRE_MESSAGE(pid_ < 0, "server already started");
    int pipe_write = -1;
    if (use_pipe_) {
      int fds[2];
      REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
      pipe_read_ = fds[0];
      pipe_write = fds[1];
      ::fcntl(pipe_read_, F_SETFL, O_NONBLOCK);
    }
    pid_ = detail::spawn(detail::server_binary(), args_, detail::build_environment(env_), dir_,
                         stdout_path_, stderr_path_, pipe_write, nofile_);
    if (pipe_write >= 0) ::close(pipe_write);
    auto deadline = Clock::now() + timeout;
    for (;;) {
      if (pipe_read_ >= 0) read_stdout_pipe();
      for (const auto& line : log_lines()) {
        if (line.find("\"msg\":\"listening\"") == std::string::npos) continue;
        auto port = json_int(line, "port");
        if (port && *port > 0 && *port < 65536) {
          port_ = static_cast<int>(*port);
          return *this;
        }
        FAIL("listening line without a usable port: " << line);
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_status_ = detail::shell_status(status);
        FAIL("server exited with status " << *exit_status_ << " before listening; stdout: "
                                          << detail::tail(stdout_text())
                                          << " stderr: " << detail::tail(stderr_text()));
      }
      if (Clock::now() >= deadline)
        FAIL("server did not log listening within " << timeout.count() << " ms; stdout: "
                                                    << detail::tail(stdout_text()));
      std::this_thread::sleep_for(milliseconds(5));
    }
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& data_dir() const { return dir_; }
  std::string blobs_dir() const { return dir_ + "/blobs"; }
  std::string leveldb_dir() const { return dir_ + "/leveldb"; }
  std::optional<int> exit_status() const { return exit_status_; }

  // True while the child has not exited (reaps it when it has).
  bool running() {
    if (pid_ < 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_status_ = detail::shell_status(status);
      return false;
    }
    return true;
  }

  // SIGTERM, then waits for the exit; returns the exit status (shell convention). If the server
  // does not stop in time it is killed and the test fails.
  int stop_term(milliseconds timeout = kProcessWait) {
    REQUIRE_MESSAGE(running(), "server is not running (exit status "
                                   << exit_status_.value_or(-1) << ")");
    ::kill(pid_, SIGTERM);
    return reap_or_kill(timeout, "SIGTERM");
  }

  // SIGKILL, then reaps it; returns the exit status (137).
  int kill9() {
    REQUIRE_MESSAGE(running(), "server is not running");
    ::kill(pid_, SIGKILL);
    return reap_or_kill(kProcessWait, "SIGKILL");
  }

  std::string stdout_text() const {
    if (pipe_read_ >= 0) return pipe_text_;
    return read_file(stdout_path_);
  }
  // Reads what the stdout pipe holds now (see stdout_to_pipe()); returns the bytes read. All
  // of it stays in stdout_text().
  size_t read_stdout_pipe() {
    size_t got = 0;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(pipe_read_, buf, sizeof buf);
      if (n <= 0) return got;
      pipe_text_.append(buf, static_cast<size_t>(n));
      got += static_cast<size_t>(n);
    }
  }
  std::string stderr_text() const { return read_file(stderr_path_); }
  // The complete log lines written to stdout so far.
  std::vector<std::string> log_lines() const { return detail::complete_lines(stdout_text()); }

  // Waits until at least `count` log lines contain `needle`; returns those lines (fewer if the
  // time ran out: the caller checks).
  std::vector<std::string> wait_for_log(std::string_view needle, size_t count = 1,
                                        milliseconds timeout = kWait) const {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      std::vector<std::string> found;
      for (auto& line : log_lines())
        if (line.find(needle) != std::string::npos) found.push_back(std::move(line));
      if (found.size() >= count || Clock::now() >= deadline) return found;
      std::this_thread::sleep_for(milliseconds(5));
    }
  }

  // The integer value of "key" in a flat JSON line (first occurrence), if any.
  static std::optional<long long> json_int(std::string_view line, std::string_view key) {
    std::string pattern = "\"" + std::string(key) + "\":";
    size_t at = line.find(pattern);
    if (at == std::string_view::npos) return std::nullopt;
    size_t i = at + pattern.size();
    bool negative = i < line.size() && line[i] == '-';
    if (negative) ++i;
    if (i >= line.size() || line[i] < '0' || line[i] > '9') return std::nullopt;
    long long value = 0;
    for (; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i) value = value * 10 + (line[i] - '0');
    return negative ? -value : value;
  }

 private:
  int reap_or_kill(milliseconds timeout, const std::string& what) {
    auto status = detail::wait_for_exit(pid_, Clock::now() + timeout);
    if (!status) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
      exit_status_ = -1;
      FAIL("server did not exit within " << timeout.count() << " ms of " << what);
      return -1;
    }
    pid_ = -1;
    exit_status_ = detail::shell_status(*status);
    return *exit_status_;
  }

  std::string dir_;
  std::string stdout_path_, stderr_path_;
  detail::EnvOverrides env_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::optional<int> exit_status_;
  bool use_pipe_ = false;
  int pipe_read_ = -1;
  std::string pipe_text_;
  long nofile_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Client: one TCP connection to a loopback address, reading '\n'-terminated lines.

class Client {
 public:
  // Connects to `address` (a loopback literal: 127.x.x.x or ::1) on `port`; fails the test if it
  // cannot.
  explicit Client(int port, const std::string& address = "127.0.0.1", milliseconds timeout = kWait) {
    std::string why = open(port, address, timeout);
    if (!why.empty()) FAIL("connect to " << address << " port " << port << ": " << why);
  }
  // A connection, or nothing (with no test failure) if the connect is refused or times out.
  static std::optional<Client> try_connect(int port, const std::string& address = "127.0.0.1",
                                           milliseconds timeout = kWait) {
    Client c;
    if (!c.open(port, address, timeout).empty()) return std::nullopt;
    return std::optional<Client>(std::move(c));
  }

  ~Client() { close(); }
  Client(Client&& other) noexcept { *this = std::move(other); }
  Client& operator=(Client&& other) noexcept {
    if (this != &other) {
      close();
      fd_ = std::exchange(other.fd_, -1);
      buf_ = std::move(other.buf_);
      head_ = other.head_;
      eof_ = other.eof_;
      reset_ = other.reset_;
      failed_ = other.failed_;
    }
    return *this;
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends all of `bytes`. While the server is not taking input, keeps reading its output into the
  // buffer, so a test that sends a lot before reading cannot deadlock against flow control.
  void send(std::string_view bytes, milliseconds timeout = kWait) {
    REQUIRE_MESSAGE(fd_ >= 0, "send on a closed client");
    auto deadline = Clock::now() + timeout;
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n > 0) {
        bytes.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        FAIL(errno_text("send") << " with " << bytes.size() << " bytes unsent");
      if (Clock::now() >= deadline)
        FAIL("send: server took no input for " << timeout.count() << " ms, " << bytes.size()
                                               << " bytes unsent");
      pollfd p{fd_, static_cast<short>(eof_ ? POLLOUT : POLLOUT | POLLIN), 0};
      if (::poll(&p, 1, std::min(detail::millis_left(deadline), 50)) > 0 && (p.revents & POLLIN))
        drain();
    }
  }
  void send_line(std::string_view line, milliseconds timeout = kWait) {
    send(std::string(line) + "\n", timeout);
  }

  // The next line (without its '\n'). On timeout or end of stream it records a test failure
  // (without throwing, so it is safe inside CHECK) and returns a "[harness: ...]" text that no
  // server line equals; after that the client is marked failed and later reads fail at once
  // instead of waiting again.
  std::string read_line(milliseconds timeout = kWait) {
    if (failed_) return "[harness: an earlier read on this connection failed]";
    if (auto line = try_read_line(timeout)) return *line;
    return fail_read("no line");
  }
  // The next line, or nothing on timeout or end of stream (no test failure).
  std::optional<std::string> try_read_line(milliseconds timeout = kWait) {
    auto deadline = Clock::now() + timeout;
    size_t scanned = head_;
    for (;;) {
      size_t nl = buf_.find('\n', scanned);
      if (nl != std::string::npos) {
        std::string line = buf_.substr(head_, nl - head_);
        head_ = nl + 1;
        if (head_ > 65536 && head_ * 2 > buf_.size()) {  // keep the buffer from growing forever
          buf_.erase(0, head_);
          head_ = 0;
        }
        return line;
      }
      scanned = buf_.size();
      if (eof_ || fd_ < 0) return std::nullopt;
      int left = detail::millis_left(deadline);
      if (left == 0) return std::nullopt;
      wait_readable(left);
    }
  }

  // Exactly `count` lines; on failure (recorded as by read_line) the missing ones are "[harness:
  // ...]" texts, so callers may index the result freely.
  std::vector<std::string> read_lines(size_t count, milliseconds timeout = kWait) {
    std::vector<std::string> lines;
    auto deadline = Clock::now() + timeout;
    while (lines.size() < count && !failed_) {
      auto line = try_read_line(milliseconds(detail::millis_left(deadline)));
      if (!line) {
        fail_read("got " + std::to_string(lines.size()) + " of " + std::to_string(count) +
                  " lines" + (lines.empty() ? std::string() : " (last: " + detail::tail(lines.back(), 120) + ")"));
        break;
      }
      lines.push_back(std::move(*line));
    }
    while (lines.size() < count) lines.emplace_back("[harness: line missing]");
    return lines;
  }

  // True once a read_line/read_lines on this connection has failed.
  bool failed() const { return failed_; }

  // Checks that nothing at all arrives (no bytes, no end of stream) for `quiet`.
  void expect_silence(milliseconds quiet = milliseconds(200)) {
    auto deadline = Clock::now() + quiet;
    while (!eof_ && fd_ >= 0) {
      int left = detail::millis_left(deadline);
      if (left == 0) break;
      wait_readable(left);
    }
    CHECK_MESSAGE(pending().empty(), "expected silence, got: '" << detail::tail(pending()) << "'");
    CHECK_MESSAGE(!eof_, "expected silence, but the server closed the connection");
  }

  // Half-close: no more input from this side (what nc -N does at the end of its input).
  void shutdown_write() { REQUIRE(::shutdown(fd_, SHUT_WR) == 0); }

  // Waits for end of stream; whatever arrives first stays readable. True if it came in time.
  bool wait_eof(milliseconds timeout = kWait) {
    auto deadline = Clock::now() + timeout;
    while (!eof_ && fd_ >= 0) {
      int left = detail::millis_left(deadline);
      if (left == 0) return false;
      wait_readable(left);
    }
    return eof_;
  }
  // Checks that the server closes the connection with nothing (more) unread.
  void expect_eof(milliseconds timeout = kWait) {
    bool closed = wait_eof(timeout);
    CHECK_MESSAGE(pending().empty(), "unread output before close: '" << detail::tail(pending()) << "'");
    CHECK_MESSAGE(closed, "the server did not close the connection within " << timeout.count() << " ms");
  }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes with a TCP reset instead of a FIN (a client that vanishes).
  void reset() {
    if (fd_ < 0) return;
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close();
  }

  bool eof() const { return eof_; }
  bool was_reset() const { return reset_; }
  std::string_view pending() const { return std::string_view(buf_).substr(head_); }
  int fd() const { return fd_; }

 private:
  Client() = default;

  static bool is_loopback(const sockaddr_storage& ss) {
    if (ss.ss_family == AF_INET)
      return (ntohl(reinterpret_cast<const sockaddr_in&>(ss).sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family == AF_INET6)
      return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr);
    return false;
  }

  // Returns an error text, empty on success.
  std::string open(int port, const std::string& address, milliseconds timeout) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (::inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      v4->sin_port = htons(static_cast<uint16_t>(port));
      len = sizeof *v4;
    } else if (::inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      v6->sin6_port = htons(static_cast<uint16_t>(port));
      len = sizeof *v6;
    } else {
      return "not an IP address literal";
    }
    if (!is_loopback(ss)) return "not a loopback address (tests only dial loopback)";
    fd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return errno_text("socket");
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
      if (errno != EINPROGRESS) {
        std::string why = errno_text("connect");
        close();
        return why;
      }
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) {
        close();
        return "timed out";
      }
      int error = 0;
      socklen_t elen = sizeof error;
      ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &elen);
      if (error != 0) {
        close();
        return std::string("connect: ") + std::strerror(error);
      }
    }
    return {};
  }

  std::string fail_read(const std::string& what) {
    failed_ = true;
    std::string why = "[harness: " + what + (eof_ ? (reset_ ? ", connection reset" : ", connection closed")
                                                   : std::string(", timed out")) +
                      "; unterminated rest: '" + detail::tail(pending()) + "']";
    FAIL_CHECK(why);
    return why;
  }

  // Waits up to `ms` for input, then reads what there is.
  void wait_readable(int ms) {
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, ms);
    if (r > 0) drain();
  }

  // Reads everything available now; notes end of stream (a reset counts as one).
  void drain() {
    char chunk[65536];
    for (;;) {
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n > 0) {
        buf_.append(chunk, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) {
        eof_ = true;
      } else if (errno == EINTR) {
        continue;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        eof_ = true;
        reset_ = errno == ECONNRESET;
      }
      return;
    }
  }

  int fd_ = -1;
  std::string buf_;
  size_t head_ = 0;  // start of the unread part of buf_
  bool eof_ = false;
  bool reset_ = false;
  bool failed_ = false;
};

// ---------------------------------------------------------------------------------------------
// Tiny JSON helpers for the server's canonical one-line output.

// The integer value of "key" (first occurrence), if any.
inline std::optional<long long> json_int_field(std::string_view line, std::string_view key) {
  return ServerProcess::json_int(line, key);
}

// The string value of "key" (first occurrence, no escape decoding), if any.
inline std::optional<std::string> json_string_field(std::string_view line, std::string_view key) {
  std::string pattern = "\"" + std::string(key) + "\":\"";
  size_t at = line.find(pattern);
  if (at == std::string_view::npos) return std::nullopt;
  size_t start = at + pattern.size();
  size_t end = start;
  while (end < line.size() && line[end] != '"') end += line[end] == '\\' ? 2 : 1;
  if (end >= line.size()) return std::nullopt;
  return std::string(line.substr(start, end - start));
}

// A JSON string literal for `text` (escapes quotes, backslashes and control characters).
inline std::string json_quote(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", c);
      out += esc;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// ---------------------------------------------------------------------------------------------
// The protocol's messages and replies, as the server writes them (canonical, one line each).

inline const std::string kCurrent = R"({"current":true})";
inline const std::string kInvalidMessage = R"({"error":"invalid message"})";
inline const std::string kInvalidJson = R"({"error":"invalid JSON"})";
inline const std::string kAlreadyReading = R"({"error":"already reading"})";
inline const std::string kTooLarge = R"({"error":"message too large"})";

inline std::string write_msg(const std::string& id, const std::string& entry) {
  return R"({"id":")" + id + R"(","entry":)" + entry + "}";
}
inline std::string confirmation(const std::string& id, long long index) {
  return R"({"id":")" + id + R"(","index":)" + std::to_string(index) + "}";
}
inline std::string entry_line(long long index, const std::string& canonical) {
  return R"({"index":)" + std::to_string(index) + R"(,"entry":)" + canonical + "}";
}
inline std::string head_line(long long head) { return R"({"head":)" + std::to_string(head) + "}"; }
inline std::string read_from(long long from) { return R"({"from":)" + std::to_string(from) + "}"; }
inline std::string batch_read(long long from, long long count) {
  return R"({"from":)" + std::to_string(from) + R"(,"read":)" + std::to_string(count) + "}";
}
inline std::string numbered(long long n) { return R"({"n":)" + std::to_string(n) + "}"; }

// While it lives, the servers this process starts are `binary` instead of $TCP_LOG_SERVER (an
// example host, a wrapper script); then $TCP_LOG_SERVER is as it was.
class ServerBinaryOverride {
 public:
  explicit ServerBinaryOverride(const std::string& binary) {
    const char* old = std::getenv("TCP_LOG_SERVER");
    had_ = old != nullptr;
    if (old) saved_ = old;
    ::setenv("TCP_LOG_SERVER", binary.c_str(), 1);
  }
  ~ServerBinaryOverride() {
    if (had_) ::setenv("TCP_LOG_SERVER", saved_.c_str(), 1);
    else ::unsetenv("TCP_LOG_SERVER");
  }
  ServerBinaryOverride(const ServerBinaryOverride&) = delete;
  ServerBinaryOverride& operator=(const ServerBinaryOverride&) = delete;

 private:
  std::string saved_;
  bool had_ = false;
};

// The store makes a confirmed entry's blob file and index record a moment after the
// confirmation (its store thread): a test that looks at them waits, bounded. The contents of
// `path` once they equal `expected`, else what it held when time ran out.
inline std::string wait_for_contents(const std::string& path, const std::string& expected,
                                     milliseconds timeout = kWait) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    std::string now = read_file(path);
    if (now == expected || Clock::now() >= deadline) return now;
    std::this_thread::sleep_for(milliseconds(2));
  }
}
// Whether `path` exists within `timeout`.
inline bool wait_for_path(const std::string& path, milliseconds timeout = kWait) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (::access(path.c_str(), F_OK) == 0) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
}

// A server started on a fresh temporary directory.
struct Fresh {
  TempDir dir;
  ServerProcess server{dir.path()};
  explicit Fresh(std::initializer_list<std::pair<std::string, std::string>> env = {}) {
    for (const auto& [name, value] : env) server.env(name, value);
    server.start();
  }
  Client connect() { return Client(server.port()); }
};

// Writes `entry` and checks the confirmation carries `index`.
inline void write_ok(Client& c, const std::string& id, const std::string& entry, long long index) {
  c.send_line(write_msg(id, entry));
  CHECK(c.read_line() == confirmation(id, index));
}

// Every line a fresh stream read from 1 sends up to and including {"current":true}.
inline std::vector<std::string> dump(int port) {
  Client c(port);
  c.send_line(read_from(1));
  std::vector<std::string> lines;
  for (;;) {
    std::string line = c.read_line(milliseconds(10000));
    lines.push_back(line);
    if (line == kCurrent || c.failed()) return lines;
  }
}

}  // namespace harness
