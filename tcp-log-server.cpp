// tcp-log-server: the binary. It serves an append-only log over TCP with newline-delimited JSON
// through the library (tcp-log-server.hpp; the engine is server.cpp). What is here belongs to
// the process, not to the library: flags and environment, the pino log (the binary's
// EventSink), signals, the service manager's notices, socket activation, --check, exit codes.
#include <fcntl.h>
#include <malloc.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
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
#include <string>
#include <string_view>
#include <vector>

#include "buffer.hpp"
#include "check_progress.hpp"
#include "crc32c.hpp"
#include "store.hpp"
#include "json.hpp"
#include "notify.hpp"
#include "pino_log.hpp"
#include "posix_file.hpp"
#include "sha256.hpp"
#include "tcp-log-server.hpp"

namespace {

using tcp_log_server::kVersion;

// Exit statuses (also in --help, the man page and doc/operations.md).
constexpr int kExitOk = 0;        // stopped by a signal, gracefully; or --check found no problem
constexpr int kExitFailure = 1;   // could not start (port, directory, lock) or a fatal error
constexpr int kExitUsage = 64;    // bad flag or value (EX_USAGE)
constexpr int kExitDamaged = 65;  // --check found problems (EX_DATAERR)

// Descriptors kept free for the store, the listeners, stdout and refused connections when
// MAX_CONNECTIONS comes from the descriptor limit.
constexpr uint64_t kDescriptorReserve = 64;
// Allocations this large are their own mappings, returned to the system when freed (glibc
// otherwise raises its threshold after each such free and keeps later ones in the heap).
constexpr int kMmapThreshold = 256 * 1024;
// How long the last log lines may wait for a stdout that does not take them.
constexpr int kLogStopFlushMs = 200;

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
  bool metrics = false;            // the monitoring listener: off unless METRICS or --metrics
  std::string metrics_host = "127.0.0.1";
  uint16_t metrics_port = 0;
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
    "  --metrics [ADDR]:PORT   serve GET /metrics (Prometheus) and GET /health over HTTP there;\n"
    "                          ADDR defaults to 127.0.0.1; :0 picks a free port\n"
    "                                                                  [METRICS, default off]\n"
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

// METRICS: PORT, :PORT or ADDRESS:PORT, an IPv6 address in brackets ([::1]:9108); no address
// means 127.0.0.1 (loopback unless an address is given). False if it is none of these.
bool parse_metrics(const std::string& value, std::string* host, uint16_t* port) {
  const size_t colon = value.rfind(':');
  std::string address = colon == std::string::npos ? "" : value.substr(0, colon);
  const std::string digits = colon == std::string::npos ? value : value.substr(colon + 1);
  uint64_t n = 0;
  if (!parse_unsigned(digits, 65535, &n)) return false;
  if (address.empty()) address = "127.0.0.1";
  // An IPv6 address needs its brackets here, or its last group would read as the port.
  if (address.find(':') != std::string::npos && address.front() != '[') return false;
  if (!valid_host(address)) return false;
  *host = address;
  *port = static_cast<uint16_t>(n);
  return true;
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
  } else if (name == "metrics") {
    config->metrics = !value.empty();  // METRICS= (empty) leaves it off
    if (config->metrics && !parse_metrics(value, &config->metrics_host, &config->metrics_port))
      bad("[ADDRESS]:PORT, e.g. 127.0.0.1:9108, :9108 or [::1]:9108");
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
      {"JOURNAL_BYTES", "journal-bytes"},
      {"METRICS", "metrics"}};
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
                                       "journal-bytes",     "metrics"};
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

// The pino log on stdout (pino_log.hpp).
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


// =============================================================================================
// The pino log as the server's EventSink: each event the library reports becomes the log line
// this binary has always written (level, msg and fields, in this order), and the service
// manager hears READY=1 and STOPPING=1 from the same events.

using tcp_log_server::Event;
using tcp_log_server::EventKind;

class LogSink : public tcp_log_server::EventSink {
 public:
  explicit LogSink(const Config& config) : config_(config) {}

  bool wants(EventKind kind) const override {
    if (kind == EventKind::Ready) return g_service_manager.enabled();
    if (kind == EventKind::Stopping && g_service_manager.enabled()) return true;
    return g_log.enabled(level(kind));
  }
  int writable_fd() const override { return g_log.waiting_fd(); }
  void on_writable() override { g_log.flush(); }
  uint64_t lines_dropped() const override { return g_log.dropped_total(); }

  void on_event(const Event& e) override {
    using F = Log::Fields;
    const int at = level(e.kind);
    switch (e.kind) {
      case EventKind::Listening: {
        // The first minute: what runs, where its data is, how safe a confirmation is, how much
        // is in it. Directories as absolute paths, since the defaults are relative to where it
        // was started.
        F fields;
        fields.str("event", "listening").num("port", e.port).str("version", kVersion)
            .str("host", e.address.empty() ? "all interfaces" : e.address);
        // Where to scrape, in the one line that scripts read the port from.
        if (!e.metrics_address.empty()) fields.str("metrics", e.metrics_address);
        g_log.line(at, "listening",
                   fields.str("blobs", absolute_path(config_.blobs))
                       .str("leveldb", absolute_path(config_.leveldb))
                       .str("sync", config_.sync == SyncMode::Always ? "always" : "none")
                       .num("journal_bytes", e.journal_bytes)
                       .str("crc32c", crc32c_implementation()).str("sha256", sha256_implementation())
                       .num("head", e.head));
        return;
      }
      case EventKind::Ready:
        notify_service_manager("READY=1\nSTATUS=listening on port " + std::to_string(e.port) + ", " +
                               std::to_string(e.head) + " entries\nMAINPID=" +
                               std::to_string(::getpid()) + "\n");
        return;
      case EventKind::ConnectionAccepted:
        g_log.line(at, "connection accepted",
                   F().str("event", "connected").num("connection", e.connection)
                       .str("address", e.address).num("port", e.port));
        return;
      case EventKind::ConnectionClosed:
        g_log.line(at, "connection closed",
                   F().str("event", "close").num("connection", e.connection)
                       .str("address", e.address).num("port", e.port));
        return;
      case EventKind::ConnectionError:
        g_log.line(at, "connection error", F().num("connection", e.connection).str("error", e.error));
        return;
      case EventKind::AcceptFailed:
        g_log.line(at, "cannot accept connection", F().str("error", e.error));
        return;
      case EventKind::Refused:
        g_log.line(at, "too many connections",
                   F().str("event", "refused").num("refused", e.count).num("max_connections", e.limit));
        return;
      case EventKind::Message:
        g_log.line(at, "message", F().num("connection", e.connection).str("message", e.text));
        return;
      case EventKind::ProtocolError:
        g_log.line(at, e.text,
                   F().str("event", "invalid").num("connection", e.connection).str("error", e.error));
        return;
      case EventKind::InvalidMessage:
        g_log.line(at, "invalid message",
                   F().str("event", "invalid").num("connection", e.connection).str("message", e.text));
        return;
      case EventKind::AlreadyReading:
        g_log.line(at, "already reading", F().num("connection", e.connection));
        return;
      case EventKind::Appended:
        g_log.line(at, "appended", F().num("index", e.index).str("hash", e.text));
        return;
      case EventKind::StorageError:
        g_log.line(at, "cannot store entries", F().str("error", e.error).num("entries", e.count));
        return;
      case EventKind::JournalFull:
        g_log.line(at, "the journal is full until its checkpoint finishes: writes wait",
                   F().str("event", "journal-full").num("waiting", e.count));
        return;
      case EventKind::Checkpoint:
        g_log.line(at, "checkpoint done", F().str("event", "checkpoint"));
        return;
      case EventKind::CheckpointFailed:
        g_log.line(at, "checkpoint failed: no more writes are taken until the server restarts",
                   F().str("event", "checkpoint-failed").str("error", e.error));
        return;
      case EventKind::ReadRetry:
        g_log.line(at, "cannot read entry now, will retry",
                   F().str("event", "read-retry").num("connection", e.connection)
                       .num("index", e.index).str("error", e.error));
        return;
      case EventKind::ReadResumed:
        g_log.line(at, "read entry after retrying",
                   F().str("event", "read-resumed").num("connection", e.connection)
                       .num("index", e.index).num("ms", e.count));
        return;
      case EventKind::ReadFailed:
        g_log.line(at, "cannot read entry, giving up",
                   F().str("event", "read-failed").num("connection", e.connection)
                       .num("index", e.index).str("error", e.error));
        return;
      case EventKind::EntryUnreadable:
        g_log.line(at, "cannot read entry", F().num("index", e.index).str("error", e.error));
        return;
      case EventKind::Evicted:
        g_log.line(at, "input buffers full",
                   F().str("event", "evicted").num("connection", e.connection)
                       .num("held", e.count).num("max_input_bytes", e.limit));
        return;
      case EventKind::Stopping:
        g_log.line(at, "stopping", F().num("connections", e.count));
        notify_service_manager("STOPPING=1\nSTATUS=stopping: confirming received writes\n");
        return;
      case EventKind::Stopped:
        g_log.line(at, "stopped");
        return;
      case EventKind::PollFailed:
        g_log.line(at, "poll failed", F().str("error", e.error));
        return;
    }
  }

 private:
  static int level(EventKind kind) {
    switch (kind) {
      case EventKind::Appended:
        return kTrace;
      case EventKind::ConnectionError:
      case EventKind::Message:
      case EventKind::Checkpoint:
      case EventKind::Ready:  // not logged: the notice it sends logs itself
        return kDebug;
      case EventKind::Listening:
      case EventKind::ConnectionAccepted:
      case EventKind::ConnectionClosed:
      case EventKind::ReadResumed:
      case EventKind::Stopping:
      case EventKind::Stopped:
        return kInfo;
      case EventKind::AcceptFailed:
      case EventKind::Refused:
      case EventKind::ProtocolError:
      case EventKind::InvalidMessage:
      case EventKind::AlreadyReading:
      case EventKind::JournalFull:
      case EventKind::ReadRetry:
      case EventKind::Evicted:
        return kWarn;
      case EventKind::StorageError:
      case EventKind::ReadFailed:
      case EventKind::EntryUnreadable:
        return kError;
      case EventKind::CheckpointFailed:
      case EventKind::PollFailed:
        return kFatal;
    }
    return kInfo;
  }

  const Config& config_;
};

// =============================================================================================
// Signals: SIGINT, SIGTERM and SIGHUP ask the server for its graceful stop (Server::stop() is
// async-signal-safe: it writes one byte to the loop's wake pipe).

tcp_log_server::Server* g_server = nullptr;

void on_signal(int) {
  if (g_server) g_server->stop();
}

void handle_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
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

// =============================================================================================
// Socket activation (systemd's sd_listen_fds protocol, tcp-log-server.socket): when LISTEN_PID
// is this process, descriptors 3 .. 3 + LISTEN_FDS - 1 are listening sockets that the service
// manager opened for us; the server serves them instead of opening its own (HOST and PORT are
// then not used). The variables are removed, as sd_listen_fds(1) does, so that nothing started
// later takes them for its own.

constexpr int kFirstActivatedFd = 3;  // SD_LISTEN_FDS_START

// The activated sockets: false (and none) when the variables are absent or not for us.
bool activated_sockets(std::vector<int>* fds, std::string* error) {
  const char* pid = std::getenv("LISTEN_PID");
  const char* count = std::getenv("LISTEN_FDS");
  if (!pid || !count) return false;
  uint64_t for_pid = 0, n = 0;
  const bool ours = parse_unsigned(pid, UINT64_MAX, &for_pid) && for_pid == static_cast<uint64_t>(::getpid());
  const bool valid = parse_unsigned(count, 1024, &n);
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (!ours) return false;
  if (!valid || n == 0) {
    *error = std::string("LISTEN_FDS \"") + count + "\" is not a number of sockets from 1 to 1024";
    return true;
  }
  for (uint64_t i = 0; i < n; i++) fds->push_back(kFirstActivatedFd + static_cast<int>(i));
  return true;
}

// Serves until a signal stops it; returns the exit status.
int serve(const Config& config) {
  tcp_log_server::Store store;
  tcp_log_server::StoreOptions options;
  options.blobs_dir = config.blobs;
  options.index_dir = config.leveldb;
  options.sync = config.sync == SyncMode::Always ? tcp_log_server::Sync::Always : tcp_log_server::Sync::None;
  options.journal_bytes = config.journal_bytes;
  options.max_message_bytes = config.max_message_bytes;
  std::vector<std::string> warnings;
  tcp_log_server::Status s = store.open(options, &warnings);
  for (const std::string& w : warnings) g_log.line(kWarn, w, Log::Fields().str("event", "recovery"));
  if (!s.ok()) {
    g_log.line(kFatal, "cannot open the store", Log::Fields().str("error", s.message()));
    return kExitFailure;
  }
  tcp_log_server::Limits limits;
  limits.max_message_bytes = config.max_message_bytes;
  limits.max_connections = config.max_connections;
  limits.max_input_bytes = config.max_input_bytes;
  limits.max_output_bytes = config.max_output_bytes;
  limits.line_timeout_s = config.line_timeout_s;
  limits.read_retry_s = config.read_retry_s;
  LogSink sink(config);
  int status = kExitOk;
  {
    tcp_log_server::Server server(store, limits, &sink);
    // Before the listening line: a SIGTERM sent as soon as it appears is the graceful stop.
    g_server = &server;
    handle_stop_signals();
    std::vector<int> activated;
    std::string activation_error;
    // The monitoring listener first, so that the listening line can say where it is.
    if (config.metrics) s = server.listen_metrics(config.metrics_host, config.metrics_port);
    if (s.ok() && activated_sockets(&activated, &activation_error)) {
      if (!activation_error.empty()) s = tcp_log_server::Status::Error(activation_error);
      for (int fd : activated)
        if (s.ok()) s = server.adopt_listener(fd);
    } else if (s.ok()) {
      s = server.listen(config.host, config.port);
    }
    if (!s.ok()) {
      g_server = nullptr;
      g_log.line(kFatal, "cannot start", Log::Fields().str("error", s.message()));
      return kExitFailure;
    }
    s = server.run();  // a failure was reported to the sink
    g_server = nullptr;
    if (!s.ok()) status = kExitFailure;
  }
  // The clean stop of the store: what the journal holds is made durable, and it is emptied.
  // If that fails, the next start writes it all again from the journal.
  tcp_log_server::Status closed = store.close();
  if (!closed.ok()) {
    g_log.line(kFatal, "cannot stop the store cleanly", Log::Fields().str("error", closed.message()));
    status = kExitFailure;
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  Config config = parse_config(argc, argv);
  // TCP_LOG_SERVER_FAKE_TIME=<Unix seconds>, for the tests only (see Log::init()).
  uint64_t fake_start = 0;
  const char* fake = std::getenv("TCP_LOG_SERVER_FAKE_TIME");
  const bool faked = fake && parse_unsigned(fake, UINT64_MAX, &fake_start);
  g_log.init(config.log_level, faked ? &fake_start : nullptr);
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
    status = serve(config);
  }
  g_log.flush_for(kLogStopFlushMs);
  return status;
}
