// What every test file needs and none should write again: a temporary directory, whole-file
// reads and writes, the pino log levels, the small journal most store tests run with, and the
// environment variables the server reads. Header-only, no doctest: errors are exceptions
// (std::runtime_error), which doctest reports as the failure of the test case that hit them,
// and which a thread or a harness that makes no assertions can catch.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace test_support {

// `what`: <strerror(errno)>, for an error message. Call it before anything can change errno.
inline std::string errno_text(std::string_view what) {
  return std::string(what) + ": " + std::strerror(errno);
}

// ---------------------------------------------------------------------------------------------
// Temporary directories

// Where temporary directories go by default: $TMPDIR, else /tmp.
inline std::string temp_base() {
  const char* base = std::getenv("TMPDIR");
  return base && *base ? base : "/tmp";
}

// A fresh, empty directory `base`/`prefix`.XXXXXX (mkdtemp, mode 0700), removed with all it
// holds at destruction (errors ignored there: what a test leaves must not fail another).
// path() is absolute and canonical (no symbolic links), as /proc and strace show paths.
// Throws std::runtime_error "mkdtemp <pattern>: <reason>" when it cannot be made.
class TempDir {
 public:
  TempDir() : TempDir(temp_base()) {}
  explicit TempDir(const std::string& base, const std::string& prefix = "tcp-log-server-test") {
    const std::string pattern = base + "/" + prefix + ".XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error(errno_text("mkdtemp " + pattern));
    std::error_code ec;
    path_ = std::filesystem::canonical(buf.data(), ec).string();
    if (ec) path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of `name` inside it (which need not exist).
  std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------------------------
// Whole files

// Every byte of the file at `path`; empty if it cannot be opened (a file not written yet reads
// as empty: a test that must tell the two apart asks file_size()).
inline std::string read_file(const std::string& path) {
  std::string out;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fd);
  return out;
}

namespace internal {
inline void write_all(const std::string& path, std::string_view bytes, int flags) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, 0666);
  if (fd < 0) throw std::runtime_error(errno_text("open " + path));
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = errno_text("write " + path);
      ::close(fd);
      throw std::runtime_error(why);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  if (::close(fd) != 0) throw std::runtime_error(errno_text("close " + path));
}
}  // namespace internal

// Makes the file at `path` hold exactly `bytes` (created as a shell's > creates it: mode 0666
// less the umask). Throws std::runtime_error "<call> <path>: <reason>" on any error.
inline void write_file(const std::string& path, std::string_view bytes) {
  internal::write_all(path, bytes, O_TRUNC);
}

// Adds `bytes` at the end of the file at `path` (created if absent). Throws as write_file().
inline void append_file(const std::string& path, std::string_view bytes) {
  internal::write_all(path, bytes, O_APPEND);
}

// The size of the file at `path`, or -1 if it cannot be stat'ed (it does not exist).
inline long long file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<long long>(st.st_size) : -1;
}

// ---------------------------------------------------------------------------------------------
// The server's log and configuration

// pino's levels, as the "level" of each log line ({"level":40,...} is a warn line).
inline constexpr int kTrace = 10, kDebug = 20, kInfo = 30, kWarn = 40, kError = 50, kFatal = 60;

// Whether `line` is a log line of `level`: pino writes the level first, {"level":40,...}.
inline bool at_level(std::string_view line, int level) {
  const std::string prefix = "{\"level\":" + std::to_string(level) + ",";
  return line.substr(0, prefix.size()) == prefix;
}

// The smallest journal the tests use: 128 KiB, two sides of 60 KiB of records; a checkpoint
// starts when one is half full (about 30 KiB). The default (a share of the file system) would
// make every crash state as large, and no test workload would fill half a side.
inline constexpr uint64_t kSmallJournalBytes = 131072;
// The longest line such a journal allows: each side must hold two of the longest entries,
// 4 x (28 KiB + 4 KiB) = 128 KiB. A connection's input holds one longest line, so this also
// bounds what one pass reads from one connection: a batch of up to 28 KB sent at once is one
// commit.
inline constexpr uint64_t kSmallJournalMaxMessageBytes = 28672;

// The server's variables for that journal, with lines of at most `max_message_bytes`.
inline std::map<std::string, std::string> small_journal(uint64_t max_message_bytes = kSmallJournalMaxMessageBytes) {
  return {{"JOURNAL_BYTES", std::to_string(kSmallJournalBytes)}, {"MAX_MESSAGE_BYTES", std::to_string(max_message_bytes)}};
}

// Every environment variable the server reads (parse_config and main in tcp-log-server.cpp,
// the service manager's in notify.cpp, socket activation's, which it also clears), so that a
// test's server never inherits one from the environment the tests run in. support_test checks
// this list against the server's sources.
inline const std::vector<std::string>& server_variables() {
  static const std::vector<std::string> names{
      "PORT",           "HOST",       "BLOBS",          "LEVELDB",           "LEVELDOWN",
      "SYNC",           "LOG_LEVEL",  "MAX_MESSAGE_BYTES", "MAX_CONNECTIONS", "MAX_INPUT_BYTES",
      "MAX_OUTPUT_BYTES", "LINE_TIMEOUT", "READ_RETRY_SECONDS", "JOURNAL_BYTES",   "NOTIFY_SOCKET",
      "LISTEN_PID",     "LISTEN_FDS", "LISTEN_FDNAMES", "TCP_LOG_SERVER_FAKE_TIME", "METRICS"};
  return names;
}

}  // namespace test_support
