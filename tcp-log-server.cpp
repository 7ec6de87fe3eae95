// tcp-log-server: serves an append-only log over TCP with newline-delimited JSON.
//
// One thread, one poll() loop. The path of the data, in the order of the sections below:
//   socket bytes -> line framer -> JSON parse -> message dispatch -> batch of writes
//   -> commit (blobs, index, one sync) -> confirmations and reader cursors -> socket bytes
// Each pass of the loop reads what sockets have, dispatches every complete line it may,
// commits the writes of the whole pass as one batch, then confirms them, lets readers advance
// within a budget shared round-robin, and flushes. Work in a pass is proportional to the
// connections that are active in it, not to all connections (see "The loop"); connections
// that have been quiet for a while wait for input in an epoll set that is one slot of the poll
// set, so that one poll() costs what is active too (see "Parked connections").
#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "buffer.hpp"
#include "check_progress.hpp"
#include "crc32c.hpp"
#include "index.hpp"
#include "json.hpp"
#include "message.hpp"
#include "notify.hpp"
#include "recent_entries.hpp"
#include "sha256.hpp"

// Log times and timers past January 2038, and offsets past 2 GiB: the Makefile builds with
// _TIME_BITS=64 and _FILE_OFFSET_BITS=64, which 32-bit targets need; without them, fail here.
static_assert(sizeof(time_t) == 8, "build with -D_TIME_BITS=64 -D_FILE_OFFSET_BITS=64 (see the Makefile)");
static_assert(sizeof(off_t) == 8, "build with -D_FILE_OFFSET_BITS=64 (see the Makefile)");

namespace {

constexpr const char* kVersion = "0.2.0";

// Exit statuses (also in --help and the README).
constexpr int kExitOk = 0;        // stopped by a signal, gracefully; or --check found no problem
constexpr int kExitFailure = 1;   // could not start (port, directory, lock) or a fatal error
constexpr int kExitUsage = 64;    // bad flag or value (EX_USAGE)
constexpr int kExitDamaged = 65;  // --check found problems (EX_DATAERR)

// ---- What one connection may hold (README, "Limits").
// Output past this mark stops the connection's reader from filling and its input from being
// read, so a peer that does not read costs at most about this much (plus one entry).
constexpr size_t kOutputHighWater = 256 * 1024;
// While all connections together hold more output than MAX_OUTPUT_BYTES, each may still hold
// this much, so that a few stalled readers cannot stop everyone else's replies.
constexpr size_t kOutputFloor = 16 * 1024;
// The kernel queues at most about this much that the peer has not taken yet (TCP_NOTSENT_LOWAT);
// without it a stalled reader's send queue auto-tunes up to tcp_wmem's maximum (4 MiB).
constexpr int kUnsentLowWater = 128 * 1024;
// Bytes read from one socket per pass, into a scratch area the loop owns.
constexpr size_t kReadChunk = 64 * 1024;
// Descriptors kept free for the store, the listeners, stdout and refused connections when
// MAX_CONNECTIONS comes from the descriptor limit.
constexpr uint64_t kDescriptorReserve = 64;
// Refused connections (over MAX_CONNECTIONS) that are given a moment to read their error.
constexpr size_t kMaxRefusedLingering = 16;

// ---- Fairness (README, "Fairness"). Work done for readers in one pass (copying entries into
// output, reading and checking blobs) is bounded by a budget shared round-robin, so that the
// lines of other connections are dispatched and committed every pass, i.e. within about a
// millisecond, whatever the readers do. Costs are in bytes: an entry costs its size plus
// kEntryCost, or plus kDiskReadCost if its blob had to be read from disk (open, read, check,
// close: about 4 us here, against 0.3 us for an entry in memory). A pass's budget is then
// about 240 entries from disk, or 2,000 from memory: a millisecond or less.
constexpr size_t kPassReaderBudget = 1024 * 1024;
constexpr size_t kReaderQuantum = 256 * 1024;  // one reader's turn before the next one's
constexpr size_t kEntryCost = 256;
constexpr size_t kDiskReadCost = 4096;
constexpr size_t kMarkerCost = 64;  // {"current":true}, {"head":H}, a skipped own write

// A read that fails for a reason that may pass (EMFILE, ENOMEM, EIO, ...) is tried again after
// a delay that doubles up to a second; after READ_RETRY_SECONDS without success the reader gets
// an error and its connection is closed, as nothing in the log is lost but the reader cannot go on.
constexpr int64_t kReadRetryFirstMs = 20;
constexpr int64_t kReadRetryMaxMs = 1000;

// A checkpoint starts after this long without a commit, if the journal holds entries: the next
// recovery then replays little, and the journal has room when writes come back.
constexpr int64_t kCheckpointIdleMs = 1000;

// A connection that has wanted nothing but input for this long is parked: it leaves the poll
// set for the epoll set in one of its slots (see Server::park()). poll() costs about 0.25 µs per
// descriptor here on every call, so 10,000 idle connections cost 2.5 ms per pass; parked, they
// cost nothing until one of them sends. Short enough that idle clients are parked soon after
// they go quiet, long enough that a client in a request-reply exchange stays in the poll set
// (each park and unpark is a system call).
constexpr int64_t kParkAfterMs = 100;
// Parked connections reported ready per epoll_wait() (more wait for the next pass).
constexpr int kParkedPerPass = 256;

// ---- Memory given back.
// Committed entries kept in memory for live readers, counting what the cache really costs.
constexpr size_t kRecentEntriesBytes = 8 * 1024 * 1024;
// After this much of the connections' buffers, or this many connections, were freed, or the
// parser's memory after a large line, malloc_trim() hands free memory back to the system.
constexpr size_t kTrimAfterBytes = 1024 * 1024;
constexpr uint64_t kTrimAfterClosed = 1000;
// A line at least this long leaves the parser's working memory freed after it.
constexpr size_t kLargeLine = 64 * 1024;
// Allocations this large are their own mappings, returned to the system when freed (glibc
// otherwise raises its threshold after each such free and keeps later ones in the heap).
constexpr int kMmapThreshold = 256 * 1024;

// ---- Stopping.
// How long a graceful stop keeps flushing output to peers before it closes them.
constexpr int64_t kShutdownFlushMs = 3000;
// How long a closing connection waits for the peer to acknowledge the last replies.
constexpr int64_t kLingerMs = 2000;
constexpr int64_t kRefusedLingerMs = 500;
// How long the last log lines may wait for a stdout that does not take them.
constexpr int kLogStopFlushMs = 200;
// Log lines waiting for stdout; past this, lines are dropped and counted.
constexpr size_t kLogBufferBytes = 1024 * 1024;

int64_t now_ms() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// =============================================================================================
// Configuration

struct Config {
  std::string host;  // empty: all interfaces
  uint16_t port = 8089;
  std::string blobs = ".tcp-log-server.blobs";
  std::string leveldb = ".tcp-log-server.leveldb";
  SyncMode sync = SyncMode::Always;
  int log_level = 30;
  size_t max_message_bytes = 1048576;
  uint64_t max_connections = 0;  // 0: the descriptor limit less kDescriptorReserve
  uint64_t max_input_bytes = 0;  // 0: the larger of 64 MiB and two longest lines
  uint64_t max_output_bytes = 64 * 1024 * 1024;
  uint64_t line_timeout_s = 60;  // 0: none
  uint64_t read_retry_s = 30;
  uint64_t journal_bytes = 0;  // 0: sized to its file system (default_journal_bytes())
  uint64_t journal_min_bytes = 0;  // what MAX_MESSAGE_BYTES needs
  bool check = false;
};

const char* const kUsage =
    "Usage: tcp-log-server [options]\n"
    "Serve an append-only log over TCP, as newline-delimited JSON.\n"
    "\n"
    "Options (each also read from the environment variable in brackets; a flag wins):\n"
    "  --port N                TCP port, 0 picks a free one            [PORT, default 8089]\n"
    "  --host ADDR             IP address literal or localhost         [HOST, default all interfaces]\n"
    "  --blobs DIR             directory of entry files, named by hash [BLOBS, default .tcp-log-server.blobs]\n"
    "  --leveldb DIR           directory of the index file             [LEVELDB or LEVELDOWN,\n"
    "                                                                    default .tcp-log-server.leveldb]\n"
    "  --sync always|none      sync to stable storage before confirming [SYNC, default always]\n"
    "  --log-level LEVEL       trace debug info warn error fatal silent [LOG_LEVEL, default info]\n"
    "  --max-message-bytes N   longest accepted line                   [MAX_MESSAGE_BYTES, default 1048576]\n"
    "  --max-connections N     connections served at once; more are refused\n"
    "                                                                  [MAX_CONNECTIONS, default: the\n"
    "                                                                    descriptor limit less 64]\n"
    "  --max-input-bytes N     unfinished input held for all connections together\n"
    "                                                                  [MAX_INPUT_BYTES, default 67108864\n"
    "                                                                    or two longest lines if more]\n"
    "  --max-output-bytes N    output queued for all connections together before readers wait\n"
    "                                                                  [MAX_OUTPUT_BYTES, default 67108864]\n"
    "  --line-timeout S        seconds to finish a line once started, 0 for no limit\n"
    "                                                                  [LINE_TIMEOUT, default 60]\n"
    "  --read-retry-seconds S  how long a reader waits for an entry that cannot be read now\n"
    "                          (out of descriptors, I/O error) before it gets an error\n"
    "                                                                  [READ_RETRY_SECONDS, default 30]\n"
    "  --journal-bytes N       size of the write-ahead journal of SYNC=always (LEVELDB/journal)\n"
    "                                                                  [JOURNAL_BYTES, default 1/32 of its\n"
    "                                                                    file system, 67108864 at most, and\n"
    "                                                                    4 x (MAX_MESSAGE_BYTES + 4096) at least]\n"
    "  --check                 verify the whole store and exit (refuses to run beside a live server)\n"
    "  --help, --version\n"
    "\n"
    "Exit status: 0 stopped by SIGINT, SIGTERM or SIGHUP after confirming every received write\n"
    "(or --check found no problem); 1 could not start (port in use, directory not usable or\n"
    "locked by another server) or failed fatally; 64 bad flag or value; 65 --check found problems.\n";

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "tcp-log-server: %s (see --help)\n", message.c_str());
  std::exit(kExitUsage);
}

bool parse_unsigned(std::string_view text, uint64_t max, uint64_t* out) {
  if (text.empty() || text.size() > 19) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > max) return false;
  *out = value;
  return true;
}

// HOST is an address literal (IPv6 optionally in brackets) or localhost: never a name lookup.
bool valid_host(std::string literal) {
  if (literal == "localhost") return true;
  if (literal.size() > 2 && literal.front() == '[' && literal.back() == ']')
    literal = literal.substr(1, literal.size() - 2);
  unsigned char addr[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, literal.c_str(), addr) == 1 ||
         ::inet_pton(AF_INET6, literal.c_str(), addr) == 1;
}

// Applies one setting by its flag name; `source` names where it came from, for the error.
void apply_setting(Config* config, std::string_view name, const std::string& value,
                   const std::string& source) {
  auto bad = [&](const char* expected) {
    usage_error("invalid " + source + " \"" + value + "\": expected " + expected);
  };
  uint64_t n = 0;
  if (name == "port") {
    if (!parse_unsigned(value, 65535, &n)) bad("an integer from 0 to 65535");
    config->port = static_cast<uint16_t>(n);
  } else if (name == "host") {
    if (!valid_host(value)) bad("an IP address literal or localhost");
    config->host = value;
  } else if (name == "blobs") {
    if (value.empty()) bad("a directory");
    config->blobs = value;
  } else if (name == "leveldb") {
    if (value.empty()) bad("a directory");
    config->leveldb = value;
  } else if (name == "sync") {
    if (value == "always") config->sync = SyncMode::Always;
    else if (value == "none") config->sync = SyncMode::None;
    else bad("always or none");
  } else if (name == "log-level") {
    static const struct { const char* name; int level; } kLevels[] = {
        {"trace", 10}, {"debug", 20}, {"info", 30}, {"warn", 40},
        {"error", 50}, {"fatal", 60}, {"silent", 1000}};
    bool found = false;
    for (const auto& l : kLevels)
      if (value == l.name) config->log_level = l.level, found = true;
    if (!found) bad("trace, debug, info, warn, error, fatal or silent");
  } else if (name == "max-message-bytes") {
    if (!parse_unsigned(value, 1ull << 30, &n) || n < 64) bad("an integer from 64 to 1073741824");
    config->max_message_bytes = n;
  } else if (name == "max-connections") {
    if (!parse_unsigned(value, 10000000, &n) || n < 1) bad("an integer from 1 to 10000000");
    config->max_connections = n;
  } else if (name == "max-input-bytes") {
    if (!parse_unsigned(value, 1ull << 40, &n) || n < 1) bad("an integer from 1 to 1099511627776");
    config->max_input_bytes = n;
  } else if (name == "max-output-bytes") {
    if (!parse_unsigned(value, 1ull << 40, &n) || n < 1) bad("an integer from 1 to 1099511627776");
    config->max_output_bytes = n;
  } else if (name == "line-timeout") {
    if (!parse_unsigned(value, 86400, &n)) bad("a number of seconds from 0 to 86400");
    config->line_timeout_s = n;
  } else if (name == "journal-bytes") {
    if (!parse_unsigned(value, 1ull << 40, &n) || n < 1) bad("an integer from 1 to 1099511627776");
    config->journal_bytes = n;
  } else if (name == "read-retry-seconds") {
    if (!parse_unsigned(value, 86400, &n) || n < 1) bad("a number of seconds from 1 to 86400");
    config->read_retry_s = n;
  }
}

Config parse_config(int argc, char** argv) {
  Config config;
  static const struct { const char* env; const char* flag; } kVars[] = {
      {"PORT", "port"},
      {"HOST", "host"},
      {"BLOBS", "blobs"},
      {"LEVELDOWN", "leveldb"},
      {"LEVELDB", "leveldb"},
      {"SYNC", "sync"},
      {"LOG_LEVEL", "log-level"},
      {"MAX_MESSAGE_BYTES", "max-message-bytes"},
      {"MAX_CONNECTIONS", "max-connections"},
      {"MAX_INPUT_BYTES", "max-input-bytes"},
      {"MAX_OUTPUT_BYTES", "max-output-bytes"},
      {"LINE_TIMEOUT", "line-timeout"},
      {"READ_RETRY_SECONDS", "read-retry-seconds"},
      {"JOURNAL_BYTES", "journal-bytes"}};
  for (const auto& v : kVars) {
    const char* value = std::getenv(v.env);
    if (value) apply_setting(&config, v.flag, value, v.env);
  }
  static const char* const kFlags[] = {"port",          "host",
                                       "blobs",         "leveldb",
                                       "sync",          "log-level",
                                       "max-message-bytes", "max-connections",
                                       "max-input-bytes",   "max-output-bytes",
                                       "line-timeout",      "read-retry-seconds",
                                       "journal-bytes"};
  std::string input_source = config.max_input_bytes ? "MAX_INPUT_BYTES" : "";
  std::string journal_source = config.journal_bytes ? "JOURNAL_BYTES" : "";
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(kExitOk);
    }
    if (arg == "--version") {
      std::printf("tcp-log-server %s\n", kVersion);
      std::exit(kExitOk);
    }
    if (arg == "--check") {
      config.check = true;
      continue;
    }
    if (arg.compare(0, 2, "--") != 0) usage_error("unexpected argument \"" + arg + "\"");
    std::string name = arg.substr(2), value;
    bool has_value = false;
    size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    if (name == "leveldown") name = "leveldb";
    bool known = false;
    for (const char* f : kFlags) known = known || name == f;
    if (!known) usage_error("unknown flag \"" + arg + "\"");
    if (!has_value) {
      if (i + 1 >= argc) usage_error("flag --" + name + " needs a value");
      value = argv[++i];
    }
    apply_setting(&config, name, value, "--" + name);
    if (name == "max-input-bytes") input_source = "--max-input-bytes";
    if (name == "journal-bytes") journal_source = "--journal-bytes";
  }
  // Input budget: a connection must be able to hold one longest line and its "\r\n".
  const uint64_t one_line = config.max_message_bytes + 2;
  if (config.max_input_bytes == 0) {
    config.max_input_bytes = std::max<uint64_t>(64ull * 1024 * 1024, 2 * one_line);
  } else if (config.max_input_bytes < one_line) {
    usage_error("invalid " + input_source + " \"" + std::to_string(config.max_input_bytes) +
                "\": expected at least MAX_MESSAGE_BYTES + 2 (" + std::to_string(one_line) + ")");
  }
  // Journal: each of its two sides must hold at least two longest entries.
  const uint64_t journal_min = 4 * (config.max_message_bytes + 4096);
  config.journal_min_bytes = journal_min;
  if (config.journal_bytes != 0 && config.journal_bytes < journal_min) {
    usage_error("invalid " + journal_source + " \"" + std::to_string(config.journal_bytes) +
                "\": expected at least 4 x (MAX_MESSAGE_BYTES + 4096) (" + std::to_string(journal_min) + ")");
  }
  return config;
}

// =============================================================================================
// Log lines: pino-compatible NDJSON on stdout, never blocking the loop.
//
// A terminal after Ctrl-S, or a `| pino-pretty` that is suspended, stops taking output; a
// blocking write would then stop every client, and even SIGTERM. So stdout is written without
// blocking: lines that it does not take wait in a bounded buffer, which the loop flushes when
// poll() says stdout is writable; lines that do not fit are dropped and counted, and once the
// buffer drains one warn line says how many. How to write without blocking depends on what
// stdout is, and must not change the open file that other processes may share with us:
//   - a regular file (or a device such as /dev/null): plain write(), which does not block;
//   - a socket (journald): send(MSG_DONTWAIT);
//   - a pipe or a terminal: a second open file of our own on it (/proc/self/fd/1) with
//     O_NONBLOCK; where /proc is missing, write only what poll() says fits (at most PIPE_BUF).

class Log {
 public:
  // A line's extra fields, built only when its level is enabled.
  class Fields {
   public:
    Fields& str(const char* key, std::string_view value) {
      key_(key);
      json::write_string(value, &text_);
      return *this;
    }
    Fields& num(const char* key, uint64_t value) {
      key_(key);
      text_ += std::to_string(value);
      return *this;
    }
    const std::string& text() const { return text_; }

   private:
    void key_(const char* key) {
      text_ += ",\"";
      text_ += key;
      text_ += "\":";
    }
    std::string text_;
  };

  void init(int level) {
    level_ = level;
    // TCP_LOG_SERVER_FAKE_TIME=<Unix seconds>, read for the tests only: the log's wall clock
    // starts there and runs at the real pace (a test of 2038 on a 32-bit target, where no
    // LD_PRELOAD clock reaches a static binary). It goes through time_t as the real one does.
    if (const char* fake = std::getenv("TCP_LOG_SERVER_FAKE_TIME")) {
      uint64_t start = 0;
      if (parse_unsigned(fake, UINT64_MAX, &start)) {
        struct timespec now;
        ::clock_gettime(CLOCK_REALTIME, &now);
        fake_offset_ = static_cast<time_t>(start) - now.tv_sec;
        fake_ = true;
      }
    }
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) host[0] = 0;
    tail_ = ",\"pid\":" + std::to_string(::getpid()) + ",\"hostname\":";
    json::write_string(host, &tail_);
    open_stdout();
  }
  bool enabled(int level) const { return level >= level_; }
  void line(int level, std::string_view msg, const Fields& fields = Fields()) {
    if (!enabled(level)) return;
    struct timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    if (fake_) ts.tv_sec += fake_offset_;
    uint64_t ms = static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
    std::string out = "{\"level\":" + std::to_string(level) + ",\"time\":" + std::to_string(ms);
    out += tail_;
    out += ",\"msg\":";
    json::write_string(msg, &out);
    out += fields.text();
    out += "}\n";
    emit(out);
  }
  // The descriptor the loop polls for POLLOUT while lines wait, else -1.
  int waiting_fd() const { return pending_.empty() || broken_ ? -1 : fd_; }
  // Writes what stdout takes now; once everything waiting is out, reports dropped lines.
  void flush() {
    while (!pending_.empty() && !broken_) {
      ssize_t n = write_some(pending_.data(), pending_.size());
      if (n <= 0) return;
      pending_.consume(static_cast<size_t>(n));
    }
    if (pending_.empty() && dropped_ > 0 && !broken_) {
      const uint64_t dropped = dropped_;
      dropped_ = 0;
      line(40, "log lines dropped: stdout was not taking them",
           Fields().str("event", "log-dropped").num("dropped", dropped));
    }
  }
  // At exit: waits at most `ms` for stdout to take what is waiting.
  void flush_for(int ms) {
    const int64_t deadline = now_ms() + ms;
    flush();
    while (waiting_fd() >= 0) {
      const int64_t left = deadline - now_ms();
      if (left <= 0) return;
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) return;
      flush();
    }
  }

 private:
  enum class Mode { Plain, Socket, Guarded };

  void open_stdout() {
    struct stat st;
    if (::fstat(STDOUT_FILENO, &st) != 0) {
      broken_ = true;  // no stdout at all: log nothing
      return;
    }
    if (S_ISSOCK(st.st_mode)) {
      mode_ = Mode::Socket;
    } else if (S_ISFIFO(st.st_mode) || (S_ISCHR(st.st_mode) && ::isatty(STDOUT_FILENO))) {
      int fd = ::open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
      if (fd >= 0) {
        fd_ = fd;
        mode_ = Mode::Plain;  // our own open file, non-blocking
      } else {
        mode_ = Mode::Guarded;
      }
    }
  }

  // Writes a prefix of [data, data+n) without blocking; returns its length, 0 when stdout takes
  // nothing now, -1 when it failed (ENOSPC, EPIPE, ...): then what waited is dropped and
  // counted, and later lines try again.
  ssize_t write_some(const char* data, size_t n) {
    for (;;) {
      ssize_t r;
      if (mode_ == Mode::Socket) {
        r = ::send(fd_, data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
      } else {
        if (mode_ == Mode::Guarded) {
          pollfd p{fd_, POLLOUT, 0};
          if (::poll(&p, 1, 0) <= 0 || !(p.revents & POLLOUT)) return 0;
          if (n > PIPE_BUF) n = PIPE_BUF;  // a pipe with room takes this much without blocking
        }
        r = ::write(fd_, data, n);
      }
      if (r >= 0) return r;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      // A closed or failing stdout never stops the server.
      for (const char* p = pending_.data(), *end = p + pending_.size();
           (p = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p))));
           p++)
        dropped_++;
      pending_.clear();
      return -1;
    }
  }

  void emit(std::string_view text) {
    if (broken_) return;
    if (pending_.empty()) {
      ssize_t n = write_some(text.data(), text.size());
      if (n < 0) {
        dropped_++;
        return;
      }
      text.remove_prefix(static_cast<size_t>(n));
      if (text.empty()) return;
      // Part of the line is out: the rest must follow whatever the limit, or the stream breaks.
      pending_.append(text);
      return;
    }
    if (pending_.size() + text.size() > kLogBufferBytes) {
      dropped_++;
      return;
    }
    pending_.append(text);
  }

  int level_ = 30;
  bool fake_ = false;
  time_t fake_offset_ = 0;  // TCP_LOG_SERVER_FAKE_TIME less the real time at the start
  std::string tail_;
  int fd_ = STDOUT_FILENO;
  Mode mode_ = Mode::Plain;
  bool broken_ = false;
  Buffer pending_;
  uint64_t dropped_ = 0;
};

constexpr int kTrace = 10, kDebug = 20, kInfo = 30, kWarn = 40, kError = 50, kFatal = 60;
Log g_log;

// =============================================================================================
// Service manager notices (systemd's Type=notify, see notify.hpp): READY=1 once the store is
// recovered and the listeners are open, STOPPING=1 when a graceful stop begins. A failure is
// logged, never fatal: the server serves either way, and a manager that did not hear READY=1
// says so itself when its start timeout runs out.

ServiceNotifier g_service_manager;

void notify_service_manager(const std::string& message) {
  if (!g_service_manager.enabled()) return;
  std::string error;
  if (g_service_manager.send(message, &error))
    g_log.line(kDebug, "notified the service manager",
               Log::Fields().str("event", "notify").str("message", message));
  else
    g_log.line(kWarn, "cannot notify the service manager",
               Log::Fields().str("event", "notify").str("error", error));
}

// A directory's absolute, canonical path for log lines; as given if that cannot be had.
std::string absolute_path(const std::string& path) {
  char resolved[PATH_MAX];
  return ::realpath(path.c_str(), resolved) ? std::string(resolved) : path;
}

// =============================================================================================
// Listening sockets. HOST is parsed as an address literal only: no name lookup, so a static
// build needs no NSS.

struct Listener {
  int fd = -1;
};

// Binds and listens; returns the fd or -1 with errno set.
int listen_on(const sockaddr* addr, socklen_t len, bool dual_stack) {
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1, zero = 0;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr->sa_family == AF_INET6)
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, dual_stack ? &zero : &one, sizeof one);
  if (::bind(fd, addr, len) != 0 || ::listen(fd, 511) != 0) {
    int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

uint16_t bound_port(int fd) {
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

// Opens the listeners for `host` (see Config); returns false with *error saying what and where.
bool open_listeners(const std::string& host, uint16_t port, std::vector<Listener>* out,
                    std::string* error) {
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(port);
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons(port);
  auto fail = [&](const std::string& where) {
    *error = "cannot listen on " + where + " port " + std::to_string(port) + ": " + std::strerror(errno);
    return false;
  };
  if (host.empty()) {
    // All interfaces: IPv6 dual-stack where the kernel has IPv6, else IPv4.
    v6.sin6_addr = in6addr_any;
    int fd = listen_on(reinterpret_cast<sockaddr*>(&v6), sizeof v6, true);
    if (fd < 0 && (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL)) {
      v4.sin_addr.s_addr = htonl(INADDR_ANY);
      fd = listen_on(reinterpret_cast<sockaddr*>(&v4), sizeof v4, false);
    }
    if (fd < 0) return fail("all interfaces");
    out->push_back({fd});
    return true;
  }
  if (host == "localhost") {
    v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = listen_on(reinterpret_cast<sockaddr*>(&v4), sizeof v4, false);
    if (fd < 0) return fail("127.0.0.1");
    out->push_back({fd});
    // ::1 too where the kernel has IPv6, on the same port (also when PORT=0 picked it).
    v6.sin6_addr = in6addr_loopback;
    v6.sin6_port = htons(bound_port(fd));
    int fd6 = listen_on(reinterpret_cast<sockaddr*>(&v6), sizeof v6, false);
    if (fd6 >= 0) out->push_back({fd6});
    return true;
  }
  std::string literal = host;
  if (literal.size() > 2 && literal.front() == '[' && literal.back() == ']')
    literal = literal.substr(1, literal.size() - 2);
  if (::inet_pton(AF_INET, literal.c_str(), &v4.sin_addr) == 1) {
    int fd = listen_on(reinterpret_cast<sockaddr*>(&v4), sizeof v4, false);
    if (fd < 0) return fail(literal);
    out->push_back({fd});
    return true;
  }
  if (::inet_pton(AF_INET6, literal.c_str(), &v6.sin6_addr) == 1) {
    int fd = listen_on(reinterpret_cast<sockaddr*>(&v6), sizeof v6,
                       IN6_IS_ADDR_UNSPECIFIED(&v6.sin6_addr));
    if (fd < 0) return fail(literal);
    out->push_back({fd});
    return true;
  }
  *error = "HOST \"" + host + "\" is not an IP address literal or localhost";
  return false;
}


// =============================================================================================
// Connections

// The peer's address, kept in binary (20 bytes) and formatted only for log lines.
struct PeerAddress {
  uint8_t family = AF_INET;
  uint8_t addr[16] = {};
  uint16_t port = 0;

  static PeerAddress from(const sockaddr_storage& ss) {
    PeerAddress p;
    p.family = static_cast<uint8_t>(ss.ss_family);
    if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
      std::memcpy(p.addr, &a->sin6_addr, 16);
      p.port = ntohs(a->sin6_port);
    } else {
      auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
      std::memcpy(p.addr, &a->sin_addr, 4);
      p.port = ntohs(a->sin_port);
    }
    return p;
  }
  std::string text() const {
    char out[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, addr, out, sizeof out);
    return out;
  }
};

// What a connection has asked to read. Both kinds of read share this one mechanism.
//
// A read's catch-up is every entry that existed when it arrived, then {"current":true}; a
// batch read that reaches its K entries first ends there with {"head":H}. Until its catch-up
// is out, no later message of the connection is dispatched (README, "Replies in order").
struct ReadCursor {
  enum class Kind : uint8_t { None, Stream, Batch };
  Kind kind = Kind::None;
  bool current_sent = false;
  uint64_t next = 0;        // the next index to send
  uint64_t current_at = 0;  // {"current":true} goes out once every index <= this was sent
  uint64_t remaining = 0;   // Batch: entries still to send before {"head":H}
  // Indices this connection wrote while the read was active that the read has not reached
  // yet, ascending, from own_front on. A stream read skips them (they were confirmed instead);
  // a batch read sends them, and its {"head":H} stops short of the first it did not send.
  std::vector<uint64_t> own_writes;
  size_t own_front = 0;

  bool active() const { return kind != Kind::None; }
  bool catching_up() const { return kind != Kind::None && !current_sent; }
  bool has_own(uint64_t index) const {
    return own_front < own_writes.size() && own_writes[own_front] == index;
  }
  void pop_own() {
    if (++own_front == own_writes.size()) {
      std::vector<uint64_t>().swap(own_writes);  // holds nothing once empty
      own_front = 0;
    }
  }
};

struct Connection {
  Connection(uint64_t id_, int fd_, const PeerAddress& peer_, size_t max_line,
             size_t* input_total, size_t* output_total)
      : fd(fd_), id(id_), peer(peer_), input(input_total), output(output_total), framer(max_line) {}

  int fd;
  uint64_t id;
  PeerAddress peer;
  Buffer input;   // received bytes not yet dispatched
  Buffer output;  // replies and entries not yet sent
  LineFramer framer;
  ReadCursor reader;
  uint32_t pending_writes = 0;  // writes of this connection in the current batch

  int64_t line_started_ms = 0;   // when the first byte of the unfinished line arrived; 0: none
  int64_t linger_until_ms = 0;   // closing: our FIN is out, waiting for the peer's ACKs
  int64_t retry_at_ms = 0;       // the reader waits to try a failed read again; 0: not waiting
  int64_t retry_since_ms = 0;    // when the failing read first failed; 0: none failing
  int64_t retry_delay_ms = 0;

  bool input_closed = false;  // the peer shut down its sending side
  bool closing = false;       // no more input; close once the replies are out
  bool dead = false;          // to be removed at the end of the pass
  bool refused = false;       // over MAX_CONNECTIONS: gets one error line, is not counted
  bool waits_for_journal = false;  // a write of it waits for the journal's checkpoint

  // The poll set: this connection's slot in it and the events registered there. A parked
  // connection (see Server::park()) waits for input in the epoll set instead; its slot's
  // descriptor is then -1, which poll() skips.
  size_t slot = 0;
  short events = 0;
  bool parked = false;
  int64_t quiet_since_ms = 0;  // when it was last refreshed wanting input only
  // Membership of the loop's lists (see Server): each flag says the pointer is in that list.
  bool in_work = false, in_fill = false, in_live = false, in_touched = false, in_timed = false;
};

// =============================================================================================
// The server

// A write accepted in this pass, committed with the others at its end.
struct PendingWrite {
  Connection* connection;
  std::string id;
  std::string bytes;  // canonical entry
  std::string hash;   // hex SHA-256 of bytes
};

class Server {
 public:
  Server(const Config& config, Store* store)
      : config_(config), store_(store), scratch_(new char[kReadChunk]) {}
  ~Server();
  bool start(std::string* error);
  int run();

 private:
  // ---- The pass, in order (see run()).
  void handle_events(int ready);
  void accept_connections(int listen_fd);
  void on_events(Connection& c, short revents);
  void read_input(Connection& c);
  void discard_input(Connection& c);  // reads and drops what the peer sent, up to its end
  void dispatch_lines(Connection& c);
  void dispatch(Connection& c, const Message& m, std::string_view line);
  void commit_batch();
  void on_checkpoint_finished();
  void wake_journal_waiters();
  void fill_readers();
  size_t fill_reader(Connection& c, size_t quantum);  // returns the cost of what it did
  void flush(Connection& c);
  void refresh(Connection& c);
  void check_timers();
  void housekeeping();
  void park_quiet();
  void sweep();

  // ---- What a connection can do: the one place that says it (used by refresh()).
  bool output_has_room(const Connection& c) const;
  bool can_dispatch(const Connection& c) const;  // may a complete line of it be dispatched now
  bool has_line(Connection& c);                  // a complete (or too long) line is buffered
  bool reader_can_fill(Connection& c);
  bool reader_waits_for_entries(const Connection& c) const;
  short wanted_events(Connection& c);
  void close_if_finished(Connection& c);

  // ---- Helpers.
  enum class EntryResult { Sent, Retry };
  EntryResult append_entry(Connection& c, uint64_t index, size_t* cost);
  void reply_error(Connection& c, const char* error);
  void protocol_error(Connection& c, const char* error, std::string_view detail);
  void refuse(int fd, const PeerAddress& peer);
  void add_connection(std::unique_ptr<Connection> c);
  void remove_slot(size_t slot);
  void park(Connection& c);
  void unpark(Connection& c);
  void on_parked_ready();
  void touch(Connection& c);
  void queue_work(Connection& c);
  void queue_fill(Connection& c);
  void queue_timed(Connection& c);
  void set_line_started(Connection& c, int64_t when);
  void evict_input();
  void begin_shutdown();
  int poll_timeout();
  void log_refused();

  Config config_;
  Store* store_;
  std::vector<Listener> listeners_;

  // The poll set: the signal pipe, stdout, the listeners, then one slot per connection;
  // connections_[slot] owns the connection in that slot (null for the fixed ones). A closed
  // connection's slot is filled by the last one, so the set stays dense.
  std::vector<pollfd> pollfds_;
  std::vector<std::unique_ptr<Connection>> connections_;
  size_t first_connection_slot_ = 0;
  size_t open_connections_ = 0;  // not counting refused ones
  // Parked connections: the epoll set, and whether some connection not parked only waits for
  // input (then park_quiet() runs again at next_park_ms_).
  int parked_fd_ = -1;
  bool park_candidates_ = false;
  int64_t next_park_ms_ = 0;
  size_t refused_lingering_ = 0;

  // The loop's lists; each holds only connections with something to do, so a pass costs what
  // is active, not what is connected. A connection is in a list when its flag says so.
  std::vector<Connection*> work_;         // lines to dispatch next pass
  std::deque<Connection*> fill_queue_;    // readers that can send now, served round-robin
  std::vector<Connection*> live_;         // readers waiting for new entries
  std::vector<Connection*> touched_;      // changed in this pass: flushed and refreshed at its end
  std::vector<Connection*> timed_;        // lingering, or waiting to retry a read
  std::vector<Connection*> pass_work_;    // work_ of the pass being run
  size_t partial_lines_ = 0;              // connections with an unfinished line (line_started_ms)
  bool any_dead_ = false;

  std::vector<PendingWrite> batch_;  // writes dispatched and not yet committed or refused
  bool journal_full_ = false;        // some of batch_ wait for the journal's checkpoint
  std::vector<Connection*> waiting_for_journal_;  // with a write line held back meanwhile
  int64_t last_commit_ms_ = 0;
  RecentEntries recent_{kRecentEntriesBytes};
  json::Document doc_;
  size_t input_bytes_ = 0;   // heap memory of every connection's input buffer
  size_t output_bytes_ = 0;  // ... and of every output buffer
  size_t buffer_peak_ = 0;   // of their sum, since the last housekeeping
  uint64_t closed_since_trim_ = 0;
  bool parser_released_ = false;
  std::unique_ptr<char[]> scratch_;  // every socket read lands here first
  std::string blob_;                 // an entry read from disk
  std::string records_;              // a run of index records read from disk, from records_first_
  uint64_t records_first_ = 0;

  uint64_t next_connection_id_ = 1;
  int signal_pipe_[2] = {-1, -1};
  bool shutting_down_ = false;
  int64_t shutdown_deadline_ms_ = 0;
  int64_t now_ = 0;  // the time of the current pass
  int64_t accept_paused_until_ms_ = 0;
  int64_t next_housekeeping_ms_ = 0;
  uint64_t refused_unlogged_ = 0;
  int64_t refused_logged_ms_ = 0;
};

int g_signal_write_fd = -1;

void on_signal(int) {
  int saved = errno;
  char b = 1;
  if (::write(g_signal_write_fd, &b, 1) < 0) {
  }
  errno = saved;
}

// The fixed slots at the front of the poll set.
constexpr size_t kSignalSlot = 0;
constexpr size_t kLogSlot = 1;
constexpr size_t kCheckpointSlot = 2;
constexpr size_t kParkedSlot = 3;  // the epoll set of parked connections

// Gives back every descriptor the server opened, so that a process may run one server after
// another (the protocol fuzz target runs one per input).
Server::~Server() {
  for (auto& c : connections_)
    if (c) ::close(c->fd);
  if (parked_fd_ >= 0) ::close(parked_fd_);
  for (Listener& l : listeners_) ::close(l.fd);  // begin_shutdown() closed them if it ran
  if (g_signal_write_fd == signal_pipe_[1]) g_signal_write_fd = -1;  // a late signal writes nowhere
  for (int fd : signal_pipe_)
    if (fd >= 0) ::close(fd);
}

bool Server::start(std::string* error) {
  if (!open_listeners(config_.host, config_.port, &listeners_, error)) return false;
  if (::pipe2(signal_pipe_, O_NONBLOCK | O_CLOEXEC) != 0) {
    *error = std::string("cannot create signal pipe: ") + std::strerror(errno);
    return false;
  }
  parked_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (parked_fd_ < 0) {
    *error = std::string("cannot create the epoll set of parked connections: ") + std::strerror(errno);
    return false;
  }
  g_signal_write_fd = signal_pipe_[1];
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
  pollfds_.push_back({signal_pipe_[0], POLLIN, 0});
  pollfds_.push_back({-1, POLLOUT, 0});  // stdout, while log lines wait for it
  pollfds_.push_back({-1, POLLIN, 0});   // the store's checkpoint, while one runs
  pollfds_.push_back({parked_fd_, POLLIN, 0});  // parked connections, when one of them is ready
  for (Listener& l : listeners_) pollfds_.push_back({l.fd, POLLIN, 0});
  connections_.resize(pollfds_.size());
  first_connection_slot_ = pollfds_.size();
  // The first minute: what runs, where its data is, how safe a confirmation is, how much is in
  // it. Directories as absolute paths, since the defaults are relative to where it was started.
  const uint16_t port = bound_port(listeners_[0].fd);
  g_log.line(kInfo, "listening",
             Log::Fields().str("event", "listening").num("port", port).str("version", kVersion)
                 .str("host", config_.host.empty() ? "all interfaces" : config_.host)
                 .str("blobs", absolute_path(config_.blobs))
                 .str("leveldb", absolute_path(config_.leveldb))
                 .str("sync", config_.sync == SyncMode::Always ? "always" : "none")
                 .num("journal_bytes", store_->journal_bytes())
                 .str("crc32c", crc32c_implementation()).str("sha256", sha256_implementation())
                 .num("head", store_->head()));
  notify_service_manager("READY=1\nSTATUS=listening on port " + std::to_string(port) + ", " +
                         std::to_string(store_->head()) + " entries\nMAINPID=" +
                         std::to_string(::getpid()) + "\n");
  return true;
}

// ---------------------------------------------------------------------------------------------
// The loop's lists and the poll set

void Server::touch(Connection& c) {
  if (c.in_touched) return;
  c.in_touched = true;
  touched_.push_back(&c);
}

void Server::queue_work(Connection& c) {
  if (c.in_work) return;
  c.in_work = true;
  work_.push_back(&c);
}

void Server::queue_fill(Connection& c) {
  if (c.in_fill) return;
  c.in_fill = true;
  fill_queue_.push_back(&c);
}

void Server::queue_timed(Connection& c) {
  if (c.in_timed) return;
  c.in_timed = true;
  timed_.push_back(&c);
}

void Server::set_line_started(Connection& c, int64_t when) {
  if ((c.line_started_ms != 0) != (when != 0)) {
    if (when != 0) partial_lines_++;
    else partial_lines_--;
  }
  c.line_started_ms = when;
}

void Server::add_connection(std::unique_ptr<Connection> c) {
  c->slot = pollfds_.size();
  c->events = 0;
  pollfds_.push_back({c->fd, 0, 0});
  if (c->refused) refused_lingering_++;
  else open_connections_++;
  touch(*c);
  connections_.push_back(std::move(c));
}

void Server::remove_slot(size_t slot) {
  const size_t last = pollfds_.size() - 1;
  if (slot != last) {
    pollfds_[slot] = pollfds_[last];
    connections_[slot] = std::move(connections_[last]);
    connections_[slot]->slot = slot;
  }
  pollfds_.pop_back();
  connections_.pop_back();
}

// ---------------------------------------------------------------------------------------------
// Parked connections
//
// poll() looks at every descriptor it is given on every call, ready or not: with 10,000 idle
// connections one call costs 2.5 ms here, and every write waits for it. So a connection that
// has wanted nothing but input for kParkAfterMs is parked: its descriptor moves to an epoll set
// (level-triggered, EPOLLIN) whose own descriptor is one slot of the poll set, and its slot
// holds -1. When epoll says it has input (or a hang-up or an error), it is unparked before its
// events are handled as poll()'s would be; when refresh() finds that it wants more than input
// (output to send, its input held back, a stop), it is unparked there. The loop stays one
// poll() loop; epoll only stands in for the quiet part of the poll set.

void Server::park(Connection& c) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &c;
  // Out of memory for the epoll set (or over fs.epoll.max_user_watches): it stays in the poll set.
  if (::epoll_ctl(parked_fd_, EPOLL_CTL_ADD, c.fd, &ev) != 0) return;
  c.parked = true;
  pollfds_[c.slot].fd = -1;
}

void Server::unpark(Connection& c) {
  ::epoll_ctl(parked_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
  c.parked = false;
  pollfds_[c.slot].fd = c.fd;
}

// At most every kParkAfterMs, while some connection not parked waits only for input: park those
// that have been quiet for kParkAfterMs.
void Server::park_quiet() {
  park_candidates_ = false;
  next_park_ms_ = now_ + kParkAfterMs;
  for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++) {
    Connection& c = *connections_[slot];
    if (c.parked || c.dead || c.events != POLLIN || c.in_touched || c.in_work || c.in_fill) continue;
    if (now_ - c.quiet_since_ms >= kParkAfterMs) park(c);
    else park_candidates_ = true;
  }
}

void Server::on_parked_ready() {
  epoll_event ready[kParkedPerPass];
  const int n = ::epoll_wait(parked_fd_, ready, kParkedPerPass, 0);
  for (int i = 0; i < n; i++) {
    Connection& c = *static_cast<Connection*>(ready[i].data.ptr);
    unpark(c);
    if (c.dead) continue;
    short revents = 0;
    if (ready[i].events & EPOLLIN) revents |= POLLIN;
    if (ready[i].events & EPOLLHUP) revents |= POLLHUP;
    if (ready[i].events & EPOLLERR) revents |= POLLERR;
    on_events(c, revents);
  }
}

// ---------------------------------------------------------------------------------------------
// Accepting

void Server::accept_connections(int listen_fd) {
  // A bounded number per pass, so that a flood of connections cannot hold up the others.
  for (int accepted = 0; accepted < 64; accepted++) {
    sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: stop accepting for a moment rather than spin on the listener.
        g_log.line(kWarn, "cannot accept connection",
                   Log::Fields().str("error", std::strerror(errno)));
        accept_paused_until_ms_ = now_ + 100;
      }
      return;
    }
    const PeerAddress peer = PeerAddress::from(ss);
    if (open_connections_ >= config_.max_connections) {
      refuse(fd, peer);
      continue;
    }
    int one = 1, unsent = kUnsentLowWater;
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &unsent, sizeof unsent);
    auto c = std::make_unique<Connection>(next_connection_id_++, fd, peer, config_.max_message_bytes,
                                          &input_bytes_, &output_bytes_);
    g_log.line(kInfo, "connection accepted",
               Log::Fields().str("event", "connected").num("connection", c->id)
                   .str("address", peer.text()).num("port", peer.port));
    add_connection(std::move(c));
  }
}

// Over MAX_CONNECTIONS: one error line, then close. The connection lingers briefly (not counted
// as open) so that the error is not lost to a reset; past kMaxRefusedLingering it closes at once.
void Server::refuse(int fd, const PeerAddress& peer) {
  static const char kRefusal[] = "{\"error\":\"too many connections\"}\n";
  refused_unlogged_++;
  log_refused();
  if (refused_lingering_ >= kMaxRefusedLingering) {
    if (::send(fd, kRefusal, sizeof kRefusal - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
    }
    ::close(fd);
    return;
  }
  auto c = std::make_unique<Connection>(next_connection_id_++, fd, peer, config_.max_message_bytes,
                                        &input_bytes_, &output_bytes_);
  c->refused = true;
  c->closing = true;
  c->output.append(kRefusal, sizeof kRefusal - 1);
  add_connection(std::move(c));
}

// At most one warn line a second however many are refused; the count says how many.
void Server::log_refused() {
  if (refused_unlogged_ == 0 || now_ - refused_logged_ms_ < 1000) return;
  g_log.line(kWarn, "too many connections",
             Log::Fields().str("event", "refused").num("refused", refused_unlogged_)
                 .num("max_connections", config_.max_connections));
  refused_unlogged_ = 0;
  refused_logged_ms_ = now_;
}

// ---------------------------------------------------------------------------------------------
// Input: socket bytes -> lines

void Server::on_events(Connection& c, short revents) {
  touch(c);
  if (revents & POLLOUT) flush(c);
  if (!(revents & (POLLIN | POLLHUP | POLLERR)) || c.dead) return;
  if (c.events & POLLIN) {
    read_input(c);
  } else if ((revents & POLLERR) || (c.output.empty() && !has_line(c))) {
    // Hung up both ways with nothing left to do: without this, poll() would report the hang-up
    // on every pass. Our replies may still be in the kernel, not yet taken by the peer; input we
    // will never read (what followed a bad line) would make close() send a reset, which throws
    // them away. The peer has sent its end, so discarding that input comes to an end.
    if (!(revents & POLLERR)) discard_input(c);
    c.dead = true;
  }
}

void Server::discard_input(Connection& c) {
  while (::recv(c.fd, scratch_.get(), kReadChunk, MSG_DONTWAIT) > 0) {
  }
}

void Server::read_input(Connection& c) {
  // Never more than one longest line (and its "\r\n") of a connection's input.
  const size_t room = c.framer.max_input() - std::min(c.input.size(), c.framer.max_input());
  if (room == 0) return;
  ssize_t n = ::recv(c.fd, scratch_.get(), std::min(room, kReadChunk), 0);
  if (n > 0) {
    c.input.append(scratch_.get(), static_cast<size_t>(n));
    queue_work(c);
    return;
  }
  if (n == 0) {
    c.input_closed = true;
    queue_work(c);  // an unterminated last line is a line now
  } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    // Reset or failed: nothing more can be said to this peer.
    g_log.line(kDebug, "connection error",
               Log::Fields().num("connection", c.id).str("error", std::strerror(errno)));
    c.dead = true;
  }
}

bool Server::has_line(Connection& c) {
  return c.framer.next(c.input.view(), c.input_closed).kind != LineFramer::Kind::NeedMore;
}

bool Server::output_has_room(const Connection& c) const {
  return c.output.size() < kOutputHighWater &&
         (output_bytes_ < config_.max_output_bytes || c.output.size() < kOutputFloor);
}

bool Server::can_dispatch(const Connection& c) const {
  // A read's catch-up goes out before the reply to anything sent after the read.
  return !c.dead && !c.closing && !c.reader.catching_up() && output_has_room(c) &&
         !c.waits_for_journal;
}

void Server::dispatch_lines(Connection& c) {
  while (can_dispatch(c)) {
    LineFramer::Frame f = c.framer.next(c.input.view(), c.input_closed);
    if (f.kind == LineFramer::Kind::NeedMore) break;
    // Replies keep the order of messages: anything but a write waits until this connection's
    // writes in the batch are committed and confirmed, and a read then sees them. (A too-long
    // line cannot share a pass with earlier writes, as the input holds at most one line's
    // worth; the check keeps that from being load-bearing.)
    if (f.kind == LineFramer::Kind::TooLong) {
      if (c.pending_writes == 0) protocol_error(c, "message too large", "");
      break;
    }
    const bool blank = LineFramer::is_blank(f.line);
    Message m;
    if (!blank) {
      m = classify(doc_, f.line);
      if (m.kind != Message::Kind::Write && c.pending_writes > 0) break;
      if (m.kind == Message::Kind::Write && journal_full_) {
        // The journal has no room until its checkpoint finishes: the write waits in the input,
        // and so does everything after it (TCP holds the peer back).
        if (!c.waits_for_journal) {
          c.waits_for_journal = true;
          waiting_for_journal_.push_back(&c);
        }
        break;
      }
      dispatch(c, m, f.line);
      if (f.line.size() >= kLargeLine) {
        doc_.release_memory();
        parser_released_ = true;
      }
    }
    if (c.closing) break;  // protocol_error() dropped the input
    c.input.consume(f.length);
    c.framer.consumed(f.length);
    set_line_started(c, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch: one parsed message -> batch, cursor or error reply

void Server::reply_error(Connection& c, const char* error) {
  c.output.append("{\"error\":\"");
  c.output.append(error);
  c.output.append("\"}\n");
}

void Server::protocol_error(Connection& c, const char* error, std::string_view detail) {
  g_log.line(kWarn, error,
             Log::Fields().str("event", "invalid").num("connection", c.id).str("error", detail));
  reply_error(c, error);
  // Writes before the bad line are still committed and confirmed; then the connection closes.
  c.closing = true;
  c.reader = ReadCursor();
  c.input.clear();
  set_line_started(c, 0);
}

void Server::dispatch(Connection& c, const Message& m, std::string_view line) {
  const json::Document& d = doc_;
  if (g_log.enabled(kDebug))
    g_log.line(kDebug, "message", Log::Fields().num("connection", c.id).str("message", line));
  switch (m.kind) {
    case Message::Kind::NotJson:
      protocol_error(c, "invalid JSON", d.error());
      return;
    case Message::Kind::Invalid:
      g_log.line(kWarn, "invalid message",
                 Log::Fields().str("event", "invalid").num("connection", c.id).str("message", line));
      reply_error(c, "invalid message");
      return;
    case Message::Kind::Read:
      if (c.reader.active()) {
        g_log.line(kWarn, "already reading", Log::Fields().num("connection", c.id));
        reply_error(c, "already reading");
        return;
      }
      c.reader = ReadCursor();
      c.reader.kind = m.read == 0 ? ReadCursor::Kind::Stream : ReadCursor::Kind::Batch;
      c.reader.next = m.from == 0 ? 1 : m.from;
      c.reader.current_at = store_->head();
      c.reader.remaining = m.read;
      queue_fill(c);  // its catch-up may start in this very pass
      return;
    case Message::Kind::Write: {
      PendingWrite w;
      w.connection = &c;
      w.id = d.decode_string(d[m.id]);
      d.write_canonical(static_cast<size_t>(m.entry), &w.bytes);
      w.hash = sha256_hex(w.bytes);
      batch_.push_back(std::move(w));
      c.pending_writes++;
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Commit: the pass's writes -> store (one sync per chunk) -> confirmations, visible to readers

void Server::commit_batch() {
  if (batch_.empty()) return;
  const uint64_t old_head = store_->head();
  std::vector<std::string_view> hashes, bytes;
  size_t done = 0;  // writes of batch_ answered: committed, or refused
  while (done < batch_.size()) {
    size_t end = std::min(batch_.size(), done + kMaxBatchEntries);
    hashes.clear();
    bytes.clear();
    for (size_t i = done; i < end; i++) {
      hashes.push_back(batch_[i].hash);
      bytes.push_back(batch_[i].bytes);
    }
    // The journal may take only some of them now: the rest wait for the checkpoint.
    const size_t room = store_->room_for(bytes);
    if (room == 0) break;
    if (room < end - done) {
      end = done + room;
      hashes.resize(room);
      bytes.resize(room);
    }
    uint64_t first = store_->head() + 1;
    Status s = store_->commit(hashes, bytes);
    if (!s.ok())
      g_log.line(kError, "cannot store entries",
                 Log::Fields().str("error", s.error).num("entries", end - done));
    for (size_t i = done; i < end; i++) {
      PendingWrite& w = batch_[i];
      Connection& c = *w.connection;
      c.pending_writes--;
      touch(c);
      Buffer& out = c.output;
      std::string reply = "{\"id\":";
      json::write_string(w.id, &reply);
      if (s.ok()) {
        const uint64_t index = first + (i - done);
        reply += ",\"index\":";
        reply += std::to_string(index);
        ReadCursor& r = c.reader;
        if (r.active() && index >= r.next) r.own_writes.push_back(index);
        if (g_log.enabled(kTrace))
          g_log.line(kTrace, "appended", Log::Fields().num("index", index).str("hash", w.hash));
        recent_.add(index, w.bytes);
      } else {
        reply += ",\"error\":";
        json::write_string(s.error, &reply);
      }
      reply += "}\n";
      if (!c.dead) out.append(reply);
    }
    done = end;
    last_commit_ms_ = now_;
  }
  batch_.erase(batch_.begin(), batch_.begin() + static_cast<ptrdiff_t>(done));
  if (!batch_.empty() && !journal_full_)
    g_log.line(kWarn, "the journal is full until its checkpoint finishes: writes wait",
               Log::Fields().str("event", "journal-full").num("waiting", batch_.size()));
  journal_full_ = !batch_.empty();
  // New entries: every reader that was waiting for them can go on.
  if (store_->head() != old_head) {
    for (Connection* c : live_) {
      c->in_live = false;
      if (!c->dead) queue_fill(*c);
    }
    live_.clear();
  }
}

// The checkpoint that ran in the background finished: the journal has room again (or, if it
// failed, every write from now on is refused with the reason).
void Server::on_checkpoint_finished() {
  Status s = store_->checkpoint_finished();
  if (!s.ok())
    g_log.line(kFatal, "checkpoint failed: no more writes are taken until the server restarts",
               Log::Fields().str("event", "checkpoint-failed").str("error", s.error));
  else if (g_log.enabled(kDebug))
    g_log.line(kDebug, "checkpoint done", Log::Fields().str("event", "checkpoint"));
  journal_full_ = false;  // commit_batch() tries the waiting writes again in this pass
}

// ---------------------------------------------------------------------------------------------
// Readers: cursor -> stored bytes -> output, within the pass's budget, round-robin

bool Server::reader_can_fill(Connection& c) {
  const ReadCursor& r = c.reader;
  if (!r.active() || c.dead || c.closing || c.retry_at_ms != 0 || !output_has_room(c)) return false;
  // Stopping: a read goes on only while a line of its connection waits behind its catch-up.
  if (shutting_down_ && !(r.catching_up() && has_line(c))) return false;
  return r.next <= store_->head() || (!r.current_sent && r.next > r.current_at) ||
         (r.kind == ReadCursor::Kind::Batch && r.remaining == 0);
}

bool Server::reader_waits_for_entries(const Connection& c) const {
  const ReadCursor& r = c.reader;
  return r.active() && !c.dead && !c.closing && r.next > store_->head();
}

void Server::fill_readers() {
  size_t budget = kPassReaderBudget;
  while (budget > 0 && !fill_queue_.empty()) {
    Connection& c = *fill_queue_.front();
    fill_queue_.pop_front();
    c.in_fill = false;
    touch(c);
    if (!reader_can_fill(c)) continue;  // refresh() at the end of the pass files it elsewhere
    const size_t cost = fill_reader(c, std::min(budget, kReaderQuantum));
    budget -= std::min(cost, budget);
    // Half the mark waiting: send now, so that the reader can go on in its next turn. Less
    // waits for the end of the pass: one send per reader per pass, not one per turn.
    if (c.output.size() >= kOutputHighWater / 2) flush(c);
    if (reader_can_fill(c)) queue_fill(c);
  }
}

size_t Server::fill_reader(Connection& c, size_t quantum) {
  ReadCursor& r = c.reader;
  const uint64_t head = store_->head();
  size_t cost = 0;
  while (cost < quantum && output_has_room(c)) {
    while (r.own_front < r.own_writes.size() && r.own_writes[r.own_front] < r.next) r.pop_own();
    if (r.kind == ReadCursor::Kind::Batch && r.remaining == 0) {
      // The head, short of the first of this connection's own writes the read did not send.
      const uint64_t h = r.own_front < r.own_writes.size()
                             ? std::min(head, r.own_writes[r.own_front] - 1) : head;
      c.output.append("{\"head\":" + std::to_string(h) + "}\n");
      r = ReadCursor();
      return cost + kMarkerCost;
    }
    if (!r.current_sent && r.next > r.current_at) {
      c.output.append("{\"current\":true}\n");
      r.current_sent = true;
      cost += kMarkerCost;
      continue;
    }
    if (r.next > head) break;
    if (r.has_own(r.next)) {
      r.pop_own();
      if (r.kind == ReadCursor::Kind::Stream) {  // confirmed to it instead
        r.next++;
        cost += kMarkerCost;
        continue;
      }
    }
    if (append_entry(c, r.next, &cost) == EntryResult::Retry) break;
    r.next++;
    if (r.kind == ReadCursor::Kind::Batch) r.remaining--;
  }
  return cost;
}

Server::EntryResult Server::append_entry(Connection& c, uint64_t index, size_t* cost) {
  std::string_view bytes;
  Status s;
  if (recent_.find(index, &bytes)) {
    *cost += kEntryCost + bytes.size();
  } else {
    // Older entries come from disk; index records are read in runs to save system calls.
    const size_t have = records_.size() / kRecordSize;
    if (index < records_first_ || index >= records_first_ + have) {
      const size_t run = static_cast<size_t>(std::min<uint64_t>(64, store_->head() - index + 1));
      s = store_->read_hashes(index, run, &records_);
      records_first_ = index;
      if (!s.ok()) records_.clear();
    }
    if (s.ok()) {
      std::string_view record(records_.data() + (index - records_first_) * kRecordSize, kRecordSize);
      s = store_->read_blob(record, &blob_);
      bytes = blob_;
    }
    *cost += kDiskReadCost + blob_.size();
  }
  if (s.transient()) {
    // Not the entry's fault: try again later, from the same index.
    if (c.retry_since_ms == 0) {
      c.retry_since_ms = now_;
      c.retry_delay_ms = kReadRetryFirstMs;
      g_log.line(kWarn, "cannot read entry now, will retry",
                 Log::Fields().str("event", "read-retry").num("connection", c.id)
                     .num("index", index).str("error", s.error));
    } else {
      c.retry_delay_ms = std::min(2 * c.retry_delay_ms, kReadRetryMaxMs);
    }
    if (now_ - c.retry_since_ms >= static_cast<int64_t>(config_.read_retry_s) * 1000) {
      g_log.line(kError, "cannot read entry, giving up",
                 Log::Fields().str("event", "read-failed").num("connection", c.id)
                     .num("index", index).str("error", s.error));
      std::string error = "cannot read entry " + std::to_string(index) + ": " + s.error;
      c.output.append("{\"error\":");
      std::string quoted;
      json::write_string(error, &quoted);
      c.output.append(quoted);
      c.output.append("}\n");
      c.closing = true;
      c.reader = ReadCursor();
      c.input.clear();
      set_line_started(c, 0);
      return EntryResult::Retry;
    }
    c.retry_at_ms = now_ + c.retry_delay_ms;
    queue_timed(c);
    return EntryResult::Retry;
  }
  if (c.retry_since_ms != 0) {
    g_log.line(kInfo, "read entry after retrying",
               Log::Fields().str("event", "read-resumed").num("connection", c.id).num("index", index)
                   .num("ms", static_cast<uint64_t>(now_ - c.retry_since_ms)));
    c.retry_since_ms = 0;
  }
  Buffer& out = c.output;
  std::string prefix = "{\"index\":" + std::to_string(index);
  out.append(prefix);
  if (s.ok()) {
    out.append(",\"entry\":");
    out.append(bytes);
  } else {
    // Missing or damaged: the reader is told in the entry's place, and the read goes on.
    g_log.line(kError, "cannot read entry", Log::Fields().num("index", index).str("error", s.error));
    std::string quoted;
    json::write_string(s.error, &quoted);
    out.append(",\"error\":");
    out.append(quoted);
  }
  out.append("}\n");
  if (blob_.capacity() >= kLargeLine) std::string().swap(blob_);  // keep no large scratch
  return EntryResult::Sent;
}

// ---------------------------------------------------------------------------------------------
// Output, closing, and what each connection wants next

void Server::flush(Connection& c) {
  while (!c.dead && !c.output.empty()) {
    ssize_t n = ::send(c.fd, c.output.data(), c.output.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.output.consume(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c.dead = true;  // EPIPE, ECONNRESET: the peer is gone
  }
}

void Server::close_if_finished(Connection& c) {
  if (c.dead || !c.output.empty() || c.pending_writes > 0) return;
  bool finished;
  if (c.closing) {
    finished = true;
  } else if (shutting_down_) {
    // Stopping: once no line is left that could still be dispatched (a line behind a read's
    // catch-up waits for it; reader_can_fill() lets that catch-up go on).
    finished = !has_line(c);
  } else {
    // After a half-close: once every line is answered and a read has reached "current".
    finished = c.input_closed && c.input.empty() && !c.reader.catching_up();
  }
  if (!finished) return;
  if (!c.input_closed) {
    // The peer may still be sending. close() with unread input sends a reset, and a reset
    // throws away whatever of our replies the peer's kernel has not acknowledged yet: so
    // send our FIN, and close only once every byte we sent is acknowledged, or time is up.
    if (c.linger_until_ms == 0) {
      ::shutdown(c.fd, SHUT_WR);
      c.linger_until_ms = now_ + (c.refused ? kRefusedLingerMs : kLingerMs);
      queue_timed(c);
    }
    int unacked = 0;
    if (::ioctl(c.fd, SIOCOUTQ, &unacked) == 0 && unacked > 0 && now_ < c.linger_until_ms) return;
  }
  c.dead = true;
}

short Server::wanted_events(Connection& c) {
  short events = 0;
  // Input is read while there is room for it and nothing already read is waiting: a line that
  // cannot be dispatched yet holds back the peer (TCP), not our memory.
  if (!shutting_down_ && !c.input_closed && !c.closing && output_has_room(c) &&
      c.input.size() < c.framer.max_input() && !has_line(c))
    events |= POLLIN;
  if (!c.output.empty()) events |= POLLOUT;
  return events;
}

// The one place that files a connection after its pass: what to poll for, which list it
// belongs to, and whether it is done.
void Server::refresh(Connection& c) {
  if (c.dead) return;
  close_if_finished(c);
  if (c.dead) return;
  const short events = wanted_events(c);
  if (events != c.events) {
    c.events = events;
    pollfds_[c.slot].events = events;
  }
  if (events == POLLIN) {  // quiet from now on, unless something comes
    c.quiet_since_ms = now_;
    if (!c.parked) park_candidates_ = true;
  } else if (c.parked) {
    unpark(c);
  }
  // LINE_TIMEOUT runs from the first byte of an unfinished line; a complete line that waits
  // for its turn is not the peer's delay.
  const bool line = has_line(c);
  if (line || c.input.empty()) set_line_started(c, 0);
  else if (c.line_started_ms == 0) set_line_started(c, now_);
  if (line && can_dispatch(c)) queue_work(c);
  if (reader_can_fill(c)) {
    queue_fill(c);
  } else if (!c.in_live && reader_waits_for_entries(c)) {
    c.in_live = true;
    live_.push_back(&c);
  }
}

// Lingering connections and readers waiting to retry, on their own clock.
void Server::check_timers() {
  size_t kept = 0;
  for (Connection* c : timed_) {
    if (c->dead) {
      c->in_timed = false;
      continue;
    }
    bool waiting = false;
    if (c->retry_at_ms != 0) {
      if (now_ >= c->retry_at_ms) {
        c->retry_at_ms = 0;
        touch(*c);  // refresh() puts the reader back in the fill queue
      } else {
        waiting = true;
      }
    }
    if (c->linger_until_ms != 0) {
      touch(*c);  // close_if_finished() looks at the acknowledgements again
      waiting = true;
    }
    if (waiting) timed_[kept++] = c;
    else c->in_timed = false;
  }
  timed_.resize(kept);
}

// Once a second while needed: lines not finished in time, the refused-connections line, and
// memory given back to the system after a burst.
void Server::housekeeping() {
  next_housekeeping_ms_ = now_ + 1000;
  log_refused();
  if (config_.line_timeout_s > 0 && partial_lines_ > 0) {
    const int64_t limit = static_cast<int64_t>(config_.line_timeout_s) * 1000;
    for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++) {
      Connection& c = *connections_[slot];
      if (c.line_started_ms == 0 || now_ - c.line_started_ms < limit || c.closing || c.dead) continue;
      if (c.pending_writes > 0) continue;  // its earlier writes are confirmed first
      protocol_error(c, "message timeout", "a line was not finished within LINE_TIMEOUT");
      touch(c);
    }
  }
  const size_t held = input_bytes_ + output_bytes_;
  if (buffer_peak_ - std::min(buffer_peak_, held) >= kTrimAfterBytes ||
      closed_since_trim_ >= kTrimAfterClosed || parser_released_) {
    // The per-connection arrays keep the capacity of the most connections there ever were.
    auto shrink = [](auto& v) {
      if (v.capacity() > 1024 && v.size() * 4 < v.capacity()) v.shrink_to_fit();
    };
    shrink(pollfds_);
    shrink(connections_);
    shrink(work_);
    shrink(pass_work_);
    shrink(live_);
    shrink(touched_);
    shrink(timed_);
    shrink(batch_);
    fill_queue_.shrink_to_fit();
    ::malloc_trim(0);
    closed_since_trim_ = 0;
    parser_released_ = false;
  }
  buffer_peak_ = held;
}

// Over MAX_INPUT_BYTES: close connections, oldest unfinished line first (a peer that trickles
// a line holds memory longest), until the input held fits again.
void Server::evict_input() {
  while (input_bytes_ > config_.max_input_bytes) {
    Connection* victim = nullptr;
    for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++) {
      Connection* c = connections_[slot].get();
      if (c->closing || c->dead || c->input.capacity() == 0) continue;
      if (!victim) {
        victim = c;
        continue;
      }
      // Unfinished lines first, oldest first; else whoever holds the most.
      const bool c_partial = c->line_started_ms != 0, v_partial = victim->line_started_ms != 0;
      if (c_partial != v_partial ? c_partial
                                 : (c_partial ? c->line_started_ms < victim->line_started_ms
                                              : c->input.capacity() > victim->input.capacity()))
        victim = c;
    }
    if (!victim) return;
    g_log.line(kWarn, "input buffers full",
               Log::Fields().str("event", "evicted").num("connection", victim->id)
                   .num("held", victim->input.capacity()).num("max_input_bytes", config_.max_input_bytes));
    protocol_error(*victim, "server input buffers full", "");
    touch(*victim);
  }
}

void Server::wake_journal_waiters() {
  for (Connection* c : waiting_for_journal_) {
    c->waits_for_journal = false;
    touch(*c);  // refresh() queues its lines again
  }
  waiting_for_journal_.clear();
}

void Server::sweep() {
  if (!any_dead_) return;
  any_dead_ = false;
  // Writes of a dead connection that wait for the journal go with it: nobody waits for them.
  batch_.erase(std::remove_if(batch_.begin(), batch_.end(),
                              [](const PendingWrite& w) { return w.connection->dead; }),
               batch_.end());
  // The dead are freed below: first no list may keep them.
  auto drop_dead = [](auto& list) {
    list.erase(std::remove_if(list.begin(), list.end(), [](Connection* c) { return c->dead; }),
               list.end());
  };
  drop_dead(work_);
  drop_dead(fill_queue_);
  drop_dead(live_);
  drop_dead(timed_);
  drop_dead(waiting_for_journal_);
  for (size_t slot = first_connection_slot_; slot < connections_.size();) {
    Connection& c = *connections_[slot];
    if (!c.dead) {
      slot++;
      continue;
    }
    if (c.parked) unpark(c);
    ::close(c.fd);
    if (c.refused) {
      refused_lingering_--;
    } else {
      open_connections_--;
      g_log.line(kInfo, "connection closed",
                 Log::Fields().str("event", "close").num("connection", c.id)
                     .str("address", c.peer.text()).num("port", c.peer.port));
    }
    set_line_started(c, 0);
    closed_since_trim_++;
    remove_slot(slot);  // the last connection moves into this slot: look at it next
  }
}

void Server::begin_shutdown() {
  shutting_down_ = true;
  shutdown_deadline_ms_ = now_ + kShutdownFlushMs;
  for (Listener& l : listeners_) ::close(l.fd);
  for (size_t slot = kParkedSlot + 1; slot < first_connection_slot_; slot++) pollfds_[slot].fd = -1;
  listeners_.clear();
  g_log.line(kInfo, "stopping", Log::Fields().num("connections", open_connections_));
  notify_service_manager("STOPPING=1\nSTATUS=stopping: confirming received writes\n");
  // Every connection stops reading and decides whether it is done.
  for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++)
    touch(*connections_[slot]);
}

// ---------------------------------------------------------------------------------------------
// The loop: it only moves data between the steps above.

int Server::poll_timeout() {
  if (!work_.empty() || !fill_queue_.empty() || !touched_.empty()) return 0;
  int64_t wake = -1;
  auto at = [&](int64_t when) {
    if (wake < 0 || when < wake) wake = when;
  };
  for (Connection* c : timed_) {
    if (c->linger_until_ms != 0) at(now_ + 10);  // acknowledgements wake nobody
    if (c->retry_at_ms != 0) at(c->retry_at_ms);
  }
  if (shutting_down_) at(now_ + 10);
  if (store_->can_checkpoint()) at(last_commit_ms_ + kCheckpointIdleMs);
  if (park_candidates_) at(next_park_ms_);
  if (accept_paused_until_ms_ > now_) at(accept_paused_until_ms_);
  if (refused_unlogged_ > 0 || (config_.line_timeout_s > 0 && partial_lines_ > 0) ||
      buffer_peak_ >= input_bytes_ + output_bytes_ + kTrimAfterBytes ||
      closed_since_trim_ >= kTrimAfterClosed || parser_released_)
    at(next_housekeeping_ms_);
  if (wake < 0) return -1;
  return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(wake - now_, 1000)));
}

void Server::handle_events(int ready) {
  for (size_t slot = 0; slot < pollfds_.size() && ready > 0; slot++) {
    const short revents = pollfds_[slot].revents;
    if (revents == 0) continue;
    pollfds_[slot].revents = 0;
    ready--;
    if (slot == kSignalSlot) {
      char drain[64];
      while (::read(signal_pipe_[0], drain, sizeof drain) > 0) {
      }
      if (!shutting_down_) begin_shutdown();
    } else if (slot == kLogSlot) {
      g_log.flush();
    } else if (slot == kCheckpointSlot) {
      on_checkpoint_finished();
    } else if (slot == kParkedSlot) {
      on_parked_ready();
    } else if (slot < first_connection_slot_) {
      if (!shutting_down_) accept_connections(pollfds_[slot].fd);
    } else {
      on_events(*connections_[slot], revents);
    }
  }
}

int Server::run() {
  for (;;) {
    now_ = now_ms();
    const bool accepting = !shutting_down_ && now_ >= accept_paused_until_ms_;
    for (size_t slot = kParkedSlot + 1; slot < first_connection_slot_; slot++)
      pollfds_[slot].events = accepting ? POLLIN : 0;
    pollfds_[kLogSlot].fd = g_log.waiting_fd();
    pollfds_[kCheckpointSlot].fd = store_->checkpoint_fd();
    int n = ::poll(pollfds_.data(), pollfds_.size(), poll_timeout());
    if (n < 0 && errno != EINTR) {
      g_log.line(kFatal, "poll failed", Log::Fields().str("error", std::strerror(errno)));
      return kExitFailure;
    }
    now_ = now_ms();
    if (n > 0) handle_events(n);
    if (!timed_.empty()) check_timers();
    if (now_ >= next_housekeeping_ms_) housekeeping();

    // Lines: every connection with something new dispatches what it may.
    pass_work_.swap(work_);
    for (Connection* c : pass_work_) {
      c->in_work = false;
      touch(*c);
      dispatch_lines(*c);
    }
    pass_work_.clear();
    if (input_bytes_ > config_.max_input_bytes) evict_input();
    commit_batch();
    if (!journal_full_ && !waiting_for_journal_.empty()) wake_journal_waiters();
    // A pause in writes: a checkpoint now keeps the journal short and the next recovery quick.
    if (now_ - last_commit_ms_ >= kCheckpointIdleMs) store_->checkpoint_if_possible();
    fill_readers();
    // The end of the pass: what changed is flushed and filed for the next one.
    buffer_peak_ = std::max(buffer_peak_, input_bytes_ + output_bytes_);
    for (size_t i = 0; i < touched_.size(); i++) {  // refresh() may touch no one new
      Connection& c = *touched_[i];
      c.in_touched = false;
      flush(c);
      refresh(c);
      any_dead_ = any_dead_ || c.dead;
    }
    touched_.clear();
    sweep();
    if (park_candidates_ && now_ >= next_park_ms_) park_quiet();

    if (shutting_down_ && (open_connections_ + refused_lingering_ == 0 || now_ >= shutdown_deadline_ms_)) {
      // Done when every connection is closed by close_if_finished(), or time is up.
      for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++)
        connections_[slot]->dead = true;
      any_dead_ = true;
      sweep();
      g_log.line(kInfo, "stopped");
      return kExitOk;
    }
  }
}

// =============================================================================================
// --check: verify the whole store without changing it.

int run_check(const Config& config) {
  Store store;
  Store::Options options{config.blobs, config.leveldb, config.sync};
  options.journal_bytes = config.journal_bytes;
  options.check_only = true;
  std::vector<std::string> notes;
  Status s = store.open(options, &notes);
  if (!s.ok()) {
    g_log.line(kFatal, "cannot check the store", Log::Fields().str("error", s.error));
    std::fprintf(stderr, "tcp-log-server: cannot check the store: %s\n", s.error.c_str());
    return kExitFailure;
  }
  CheckReport report;
  if (::isatty(STDERR_FILENO)) {
    // Someone is watching: one line on stderr, rewritten in place, then a summary. Nothing of
    // it when stderr is a file or a pipe, so scripts see exactly what they saw before.
    CheckProgress meter;
    uint64_t checked_so_far = 0;
    store.check(&report, [&](uint64_t checked, uint64_t head) {
      checked_so_far = checked;
      const std::string line = meter.update(checked, head, now_ms());
      if (!line.empty()) std::fprintf(stderr, "\r%s\033[K", line.c_str());
    });
    std::fprintf(stderr, "\r%s\033[K\n", meter.done(checked_so_far, now_ms()).c_str());
  } else {
    store.check(&report);
  }
  for (const std::string& n : notes) report.problems.push_back(n);
  std::printf("entries: %llu\ndistinct blobs: %llu\nbytes: %llu\njournal records: %llu\nproblems: %zu\n",
              static_cast<unsigned long long>(report.entries),
              static_cast<unsigned long long>(report.distinct_blobs),
              static_cast<unsigned long long>(report.bytes),
              static_cast<unsigned long long>(report.journal_records), report.problems.size());
  for (const std::string& p : report.problems) std::printf("problem: %s\n", p.c_str());
  return report.problems.empty() ? kExitOk : kExitDamaged;
}

// Every connection is a descriptor: use what the administrator allows. Returns the limit.
uint64_t raise_fd_limit() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur == RLIM_INFINITY ? (1ull << 20) : static_cast<uint64_t>(rl.rlim_cur);
}

}  // namespace

int main(int argc, char** argv) {
  Config config = parse_config(argc, argv);
  g_log.init(config.log_level);
  ::signal(SIGPIPE, SIG_IGN);  // a closed stdout or a vanished peer is an error code, not death
  ::mallopt(M_MMAP_THRESHOLD, kMmapThreshold);
  int status;
  if (config.check) {
    status = run_check(config);
  } else {
    const uint64_t descriptors = raise_fd_limit();
    const uint64_t fitting = descriptors > 2 * kDescriptorReserve ? descriptors - kDescriptorReserve
                                                                  : std::max<uint64_t>(1, descriptors / 2);
    if (config.max_connections == 0) {
      config.max_connections = fitting;
    } else if (config.max_connections > fitting) {
      g_log.line(kWarn, "MAX_CONNECTIONS is more than the descriptor limit leaves room for",
                 Log::Fields().str("event", "config").num("max_connections", config.max_connections)
                     .num("descriptor_limit", descriptors));
    }
    std::string notify_error;
    if (!g_service_manager.open_from_environment(&notify_error))
      g_log.line(kWarn, "cannot notify the service manager",
                 Log::Fields().str("event", "notify").str("error", notify_error));
    Store store;
    std::vector<std::string> warnings;
    Store::Options options{config.blobs, config.leveldb, config.sync};
    options.journal_bytes = config.journal_bytes;
    options.journal_min_bytes = config.journal_min_bytes;
    Status s = store.open(options, &warnings);
    for (const std::string& w : warnings) g_log.line(kWarn, w, Log::Fields().str("event", "recovery"));
    if (!s.ok()) {
      g_log.line(kFatal, "cannot open the store", Log::Fields().str("error", s.error));
      status = kExitFailure;
    } else {
      Server server(config, &store);
      std::string error;
      if (!server.start(&error)) {
        g_log.line(kFatal, "cannot start", Log::Fields().str("error", error));
        status = kExitFailure;
      } else {
        status = server.run();
        // The clean stop of the store: what the journal holds is made durable, and it is
        // emptied. If that fails, the next start writes it all again from the journal.
        Status closed = store.close();
        if (!closed.ok()) {
          g_log.line(kFatal, "cannot stop the store cleanly", Log::Fields().str("error", closed.error));
          status = kExitFailure;
        }
      }
    }
  }
  g_log.flush_for(kLogStopFlushMs);
  return status;
}
