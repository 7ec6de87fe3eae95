// tcp-log-server: serves an append-only log over TCP with newline-delimited JSON.
//
// One thread, one poll() loop. The path of the data, in the order of the sections below:
//   socket bytes -> line framer -> JSON parse -> message dispatch -> batch of writes
//   -> commit (blobs, index, one sync) -> confirmations and reader cursors -> socket bytes
// Each pass of the loop reads what sockets have, dispatches every complete line, commits the
// writes of the whole pass as one batch, then confirms them, lets readers advance and flushes.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "index.hpp"
#include "json.hpp"
#include "sha256.hpp"

namespace {

constexpr const char* kVersion = "0.1.0";

// Exit statuses (also in --help and the README).
constexpr int kExitOk = 0;        // stopped by a signal, gracefully; or --check found no problem
constexpr int kExitFailure = 1;   // could not start (port, directory, lock) or a fatal error
constexpr int kExitUsage = 64;    // bad flag or value (EX_USAGE)
constexpr int kExitDamaged = 65;  // --check found problems (EX_DATAERR)

// A connection's output past this mark stops its reader from filling and its input from
// being read, so a slow peer costs at most about this much memory (plus one entry).
constexpr size_t kOutputHighWater = 256 * 1024;
// Recently committed entries kept in memory, so live readers need not touch the disk.
constexpr size_t kRecentEntriesBytes = 8 * 1024 * 1024;
// How long a graceful stop keeps flushing output to peers before it closes them.
constexpr int kShutdownFlushMs = 3000;
constexpr size_t kReadChunk = 64 * 1024;
// How long a closing connection waits for the peer to acknowledge the last replies.
constexpr int64_t kLingerMs = 2000;

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
  }
}

Config parse_config(int argc, char** argv) {
  Config config;
  static const struct { const char* env; const char* flag; } kVars[] = {
      {"PORT", "port"},           {"HOST", "host"},         {"BLOBS", "blobs"},
      {"LEVELDOWN", "leveldb"},   {"LEVELDB", "leveldb"},   {"SYNC", "sync"},
      {"LOG_LEVEL", "log-level"}, {"MAX_MESSAGE_BYTES", "max-message-bytes"}};
  for (const auto& v : kVars) {
    const char* value = std::getenv(v.env);
    if (value) apply_setting(&config, v.flag, value, v.env);
  }
  static const char* const kFlags[] = {"port", "host", "blobs", "leveldb", "sync", "log-level",
                                       "max-message-bytes"};
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
  }
  return config;
}

// =============================================================================================
// Log lines: pino-compatible NDJSON on stdout.

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
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) host[0] = 0;
    tail_ = ",\"pid\":" + std::to_string(::getpid()) + ",\"hostname\":";
    json::write_string(host, &tail_);
  }
  bool enabled(int level) const { return level >= level_; }
  void line(int level, std::string_view msg, const Fields& fields = Fields()) {
    if (!enabled(level)) return;
    struct timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
    std::string out = "{\"level\":" + std::to_string(level) + ",\"time\":" + std::to_string(ms);
    out += tail_;
    out += ",\"msg\":";
    json::write_string(msg, &out);
    out += fields.text();
    out += "}\n";
    // A closed or failing stdout must never stop the server: the result is ignored.
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n = ::write(STDOUT_FILENO, out.data() + done, out.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
  }

 private:
  int level_ = 30;
  std::string tail_;
};

constexpr int kTrace = 10, kDebug = 20, kInfo = 30, kWarn = 40, kError = 50, kFatal = 60;
Log g_log;

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

// What a connection has asked to read. Both kinds of read share this one mechanism.
struct ReadCursor {
  enum class Kind { None, Stream, Batch };
  Kind kind = Kind::None;
  uint64_t next = 0;          // the next index to send
  uint64_t current_at = 0;    // {"current":true} goes out once every index <= this was sent
  bool current_sent = false;
  uint64_t remaining = 0;     // Batch: entries still to send before {"head":H}
  // Stream: indices this connection wrote after its read, not echoed back to it.
  std::deque<uint64_t> own_writes;
};

// Bytes waiting to go to the peer: appended at the back, sent from the front.
struct OutputBuffer {
  std::string bytes;
  size_t sent = 0;
  size_t pending() const { return bytes.size() - sent; }
  void consumed(size_t n) {
    sent += n;
    if (sent == bytes.size()) {
      bytes.clear();
      sent = 0;
    } else if (sent > 64 * 1024 && sent * 2 > bytes.size()) {
      bytes.erase(0, sent);
      sent = 0;
    }
  }
};

struct Connection {
  int fd = -1;
  uint64_t id = 0;
  std::string address;
  uint16_t port = 0;

  std::string input;        // received bytes; [input_start, end) not yet dispatched
  size_t input_start = 0;
  size_t scanned = 0;       // bytes after input_start known to hold no '\n'
  bool input_closed = false;    // the peer shut down its sending side
  bool close_when_done = false; // a protocol error: no more input; close once flushed
  bool dead = false;            // to be removed at the end of the pass
  int64_t linger_until_ms = 0;  // closing: our FIN is sent, waiting for the peer's ACKs

  OutputBuffer output;
  size_t pending_writes = 0;  // writes of this connection in the current batch
  ReadCursor reader;
};

// =============================================================================================
// The batch: writes accepted in this pass, committed together at its end.

struct PendingWrite {
  Connection* connection;
  std::string id;
  std::string bytes;  // canonical entry
  std::string hash;   // hex SHA-256 of bytes
};

// Committed entries still in memory, newest last, bounded by kRecentEntriesBytes.
class RecentEntries {
 public:
  void add(uint64_t index, std::string bytes) {
    if (entries_.empty()) first_ = index;
    total_ += bytes.size();
    entries_.push_back(std::move(bytes));
    while (total_ > kRecentEntriesBytes && entries_.size() > 1) {
      total_ -= entries_.front().size();
      entries_.pop_front();
      first_++;
    }
  }
  const std::string* find(uint64_t index) const {
    if (entries_.empty() || index < first_ || index - first_ >= entries_.size()) return nullptr;
    return &entries_[index - first_];
  }

 private:
  std::deque<std::string> entries_;
  uint64_t first_ = 0;
  size_t total_ = 0;
};

// =============================================================================================
// Messages: a parsed line, classified

// What a parsed line asks for. Valid JSON that is neither a read nor a write is Invalid.
struct Message {
  enum class Kind { NotJson, Invalid, Read, Write };
  Kind kind = Kind::Invalid;
  uint64_t from = 0;  // Read
  uint64_t read = 0;  // Read: 0 streams, K > 0 reads at most K entries then the head
  long id = -1;       // Write: token of the id string
  long entry = -1;    // Write: token of the entry object or array
};

Message classify(json::Document& d, std::string_view line) {
  Message m;
  if (!d.parse(line)) {
    m.kind = Message::Kind::NotJson;
    return m;
  }
  if (d[0].kind != json::Kind::Object) return m;
  // A read: {"from":N} streams; {"from":N,"read":K} reads at most K entries, then the head.
  long from = d.find(0, "from");
  long read = d.find(0, "read");
  if (from >= 0 && d[from].kind == json::Kind::Number && d.to_uint64(d[from], &m.from) &&
      (read < 0 || (d[read].kind == json::Kind::Number && d.to_uint64(d[read], &m.read) &&
                    m.read > 0))) {
    m.kind = Message::Kind::Read;
    return m;
  }
  // A write: {"id":"non-empty","entry":{...} or [...]}; other keys are ignored.
  m.id = d.find(0, "id");
  m.entry = d.find(0, "entry");
  if (m.id >= 0 && m.entry >= 0 && d[m.id].kind == json::Kind::String &&
      d[m.id].end - d[m.id].begin > 2 &&  // more than the quotes: not empty
      (d[m.entry].kind == json::Kind::Object || d[m.entry].kind == json::Kind::Array))
    m.kind = Message::Kind::Write;
  return m;
}

// =============================================================================================
// The server

class Server {
 public:
  Server(const Config& config, Store* store) : config_(config), store_(store) {}
  bool start(std::string* error);
  int run();

 private:
  // The pass, in order.
  void accept_connections(int listen_fd);
  void read_input(Connection& c);
  void dispatch_lines(Connection& c);
  void dispatch(Connection& c, const Message& m, std::string_view line);
  void commit_batch();
  void fill_reader(Connection& c);
  bool reader_can_fill(const Connection& c) const;  // more to send and room for it
  void flush(Connection& c);
  void close_finished(Connection& c);
  void sweep();
  // Helpers.
  bool has_complete_line(Connection& c);
  bool too_long(std::string_view unterminated) const;
  bool can_dispatch(const Connection& c) const;
  void reply_error(Connection& c, const char* error);
  void protocol_error(Connection& c, const char* error, std::string_view detail);
  void append_entry(Connection& c, uint64_t index, std::string* records, uint64_t* records_first);
  void begin_shutdown();
  int poll_timeout(bool accepting);

  Config config_;
  Store* store_;
  std::vector<Listener> listeners_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<PendingWrite> batch_;
  RecentEntries recent_;
  json::Document doc_;
  uint64_t next_connection_id_ = 1;
  int signal_pipe_[2] = {-1, -1};
  bool shutting_down_ = false;
  int64_t accept_paused_until_ms_ = 0;
  std::string scratch_;
};

int g_signal_write_fd = -1;

void on_signal(int) {
  int saved = errno;
  char b = 1;
  if (::write(g_signal_write_fd, &b, 1) < 0) {
  }
  errno = saved;
}

int64_t now_ms() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

bool Server::start(std::string* error) {
  if (!open_listeners(config_.host, config_.port, &listeners_, error)) return false;
  if (::pipe2(signal_pipe_, O_NONBLOCK | O_CLOEXEC) != 0) {
    *error = std::string("cannot create signal pipe: ") + std::strerror(errno);
    return false;
  }
  g_signal_write_fd = signal_pipe_[1];
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
  g_log.line(kInfo, "listening",
             Log::Fields().str("event", "listening").num("port", bound_port(listeners_[0].fd)));
  return true;
}

void Server::accept_connections(int listen_fd) {
  for (;;) {
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
        accept_paused_until_ms_ = now_ms() + 100;
      }
      return;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->id = next_connection_id_++;
    char text[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
      c->port = ntohs(a->sin6_port);
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
      c->port = ntohs(a->sin_port);
    }
    c->address = text;
    g_log.line(kInfo, "connection accepted",
               Log::Fields().str("event", "connected").num("connection", c->id)
                   .str("address", c->address).num("port", c->port));
    connections_.push_back(std::move(c));
  }
}

// ---------------------------------------------------------------------------------------------
// Input: socket bytes -> lines

void Server::read_input(Connection& c) {
  // Never hold more than one maximal line (plus "\r\n") of a connection's input.
  const size_t cap = config_.max_message_bytes + 2;
  if (c.input_start > 0) {
    c.input.erase(0, c.input_start);
    c.input_start = 0;
  }
  size_t room = cap > c.input.size() ? cap - c.input.size() : 0;
  if (room == 0) return;
  size_t chunk = room < kReadChunk ? room : kReadChunk;
  size_t old = c.input.size();
  c.input.resize(old + chunk);
  ssize_t n = ::recv(c.fd, &c.input[old], chunk, 0);
  if (n > 0) {
    c.input.resize(old + static_cast<size_t>(n));
    return;
  }
  c.input.resize(old);
  if (n == 0) {
    c.input_closed = true;
  } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    // Reset or failed: nothing more can be said to this peer.
    g_log.line(kDebug, "connection error",
               Log::Fields().num("connection", c.id).str("error", std::strerror(errno)));
    c.dead = true;
  }
}

bool Server::too_long(std::string_view unterminated) const {
  // The one byte allowed past the limit is the '\r' of a "\r\n" still to come.
  size_t max = config_.max_message_bytes;
  return unterminated.size() > max + 1 ||
         (unterminated.size() == max + 1 && unterminated.back() != '\r');
}

bool Server::has_complete_line(Connection& c) {
  size_t from = c.input_start + c.scanned;
  if (from < c.input.size() &&
      std::memchr(c.input.data() + from, '\n', c.input.size() - from) != nullptr)
    return true;
  c.scanned = c.input.size() - c.input_start;
  std::string_view rest(c.input.data() + c.input_start, c.input.size() - c.input_start);
  // At the end of input an unterminated last line still counts as a line, and so does one
  // already too long to be a message (it is answered with an error).
  return (c.input_closed && !rest.empty()) || too_long(rest);
}

bool Server::can_dispatch(const Connection& c) const {
  return !c.dead && !c.close_when_done && c.output.pending() < kOutputHighWater;
}

void Server::dispatch_lines(Connection& c) {
  while (can_dispatch(c)) {
    const char* begin = c.input.data() + c.input_start;
    size_t avail = c.input.size() - c.input_start;
    const char* nl = static_cast<const char*>(
        std::memchr(begin + c.scanned, '\n', avail - c.scanned));
    size_t line_len = nl ? static_cast<size_t>(nl - begin) : avail;
    std::string_view line(begin, line_len);
    if (!nl) {
      c.scanned = avail;
      if (!too_long(line) && (!c.input_closed || avail == 0)) return;  // wait for the rest
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // Replies keep the order of messages: anything but a write waits until this connection's
    // writes in the batch are committed and confirmed, and a read then sees them. (An
    // over-long line cannot share a pass with earlier writes, as the input holds at most one
    // line's worth; the check keeps that from being load-bearing.)
    if (line.size() > config_.max_message_bytes) {
      if (c.pending_writes == 0) protocol_error(c, "message too large", "");
      return;
    }
    bool blank = line.find_first_not_of(" \t\r") == std::string_view::npos;
    Message m;
    if (!blank) {
      m = classify(doc_, line);
      if (m.kind != Message::Kind::Write && c.pending_writes > 0) return;
    }
    c.input_start += nl ? line_len + 1 : line_len;
    c.scanned = 0;
    if (!blank) dispatch(c, m, line);
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch: one parsed message -> batch, cursor or error reply

void Server::reply_error(Connection& c, const char* error) {
  c.output.bytes += "{\"error\":\"";
  c.output.bytes += error;
  c.output.bytes += "\"}\n";
}

void Server::protocol_error(Connection& c, const char* error, std::string_view detail) {
  g_log.line(kWarn, error,
             Log::Fields().str("event", "invalid").num("connection", c.id).str("error", detail));
  reply_error(c, error);
  // Writes before the bad line are still committed and confirmed; then the connection closes.
  c.close_when_done = true;
  c.reader = ReadCursor();
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
      if (c.reader.kind != ReadCursor::Kind::None) {
        g_log.line(kWarn, "already reading", Log::Fields().num("connection", c.id));
        reply_error(c, "already reading");
        return;
      }
      c.reader = ReadCursor();
      c.reader.kind = m.read == 0 ? ReadCursor::Kind::Stream : ReadCursor::Kind::Batch;
      c.reader.next = m.from == 0 ? 1 : m.from;
      c.reader.current_at = store_->head();
      c.reader.remaining = m.read;
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
  std::vector<std::string_view> hashes, bytes;
  for (size_t start = 0; start < batch_.size(); start += kMaxBatchEntries) {
    size_t end = std::min(batch_.size(), start + kMaxBatchEntries);
    hashes.clear();
    bytes.clear();
    for (size_t i = start; i < end; i++) {
      hashes.push_back(batch_[i].hash);
      bytes.push_back(batch_[i].bytes);
    }
    uint64_t first = store_->head() + 1;
    Status s = store_->commit(hashes, bytes);
    if (!s.ok())
      g_log.line(kError, "cannot store entries",
                 Log::Fields().str("error", s.error).num("entries", end - start));
    for (size_t i = start; i < end; i++) {
      PendingWrite& w = batch_[i];
      Connection& c = *w.connection;
      c.pending_writes--;
      std::string& out = c.output.bytes;
      if (s.ok()) {
        uint64_t index = first + (i - start);
        if (!c.dead) {
          out += "{\"id\":";
          json::write_string(w.id, &out);
          out += ",\"index\":";
          out += std::to_string(index);
          out += "}\n";
          if (c.reader.kind == ReadCursor::Kind::Stream && index >= c.reader.next)
            c.reader.own_writes.push_back(index);
        }
        if (g_log.enabled(kTrace))
          g_log.line(kTrace, "appended", Log::Fields().num("index", index).str("hash", w.hash));
        recent_.add(index, std::move(w.bytes));
      } else if (!c.dead) {
        out += "{\"id\":";
        json::write_string(w.id, &out);
        out += ",\"error\":";
        json::write_string(s.error, &out);
        out += "}\n";
      }
    }
  }
  batch_.clear();
}

// ---------------------------------------------------------------------------------------------
// Readers: cursor -> stored bytes -> output, while under the high-water mark

void Server::append_entry(Connection& c, uint64_t index, std::string* records,
                          uint64_t* records_first) {
  std::string& out = c.output.bytes;
  const std::string* bytes = recent_.find(index);
  Status s;
  if (!bytes) {
    // Older entries come from disk; index records are read in runs to save system calls.
    size_t have = records->size() / kRecordSize;
    if (index < *records_first || index >= *records_first + have) {
      size_t run = static_cast<size_t>(std::min<uint64_t>(64, store_->head() - index + 1));
      s = store_->read_hashes(index, run, records);
      *records_first = index;
      if (!s.ok()) records->clear();
    }
    if (s.ok()) {
      std::string_view record(records->data() + (index - *records_first) * kRecordSize, kRecordSize);
      s = store_->read_blob(record, &scratch_);
      bytes = &scratch_;
    }
  }
  out += "{\"index\":";
  out += std::to_string(index);
  if (s.ok()) {
    out += ",\"entry\":";
    out += *bytes;
  } else {
    g_log.line(kError, "cannot read entry", Log::Fields().num("index", index).str("error", s.error));
    out += ",\"error\":";
    json::write_string(s.error, &out);
  }
  out += "}\n";
}

bool Server::reader_can_fill(const Connection& c) const {
  const ReadCursor& r = c.reader;
  if (r.kind == ReadCursor::Kind::None || c.dead || shutting_down_ ||
      c.output.pending() >= kOutputHighWater)
    return false;
  return r.next <= store_->head() || (!r.current_sent && r.next > r.current_at) ||
         (r.kind == ReadCursor::Kind::Batch && r.remaining == 0);
}

void Server::fill_reader(Connection& c) {
  ReadCursor& r = c.reader;
  if (r.kind == ReadCursor::Kind::None || c.dead) return;
  std::string records;
  uint64_t records_first = 0;
  const uint64_t head = store_->head();
  while (c.output.pending() < kOutputHighWater) {
    if (r.kind == ReadCursor::Kind::Batch && r.remaining == 0) {
      c.output.bytes += "{\"head\":" + std::to_string(head) + "}\n";
      r = ReadCursor();
      return;
    }
    if (!r.current_sent && r.next > r.current_at) {
      c.output.bytes += "{\"current\":true}\n";
      r.current_sent = true;
      continue;
    }
    if (r.next > head) return;
    if (!r.own_writes.empty() && r.own_writes.front() == r.next) {
      r.own_writes.pop_front();
      r.next++;
      continue;
    }
    append_entry(c, r.next, &records, &records_first);
    r.next++;
    if (r.kind == ReadCursor::Kind::Batch) r.remaining--;
  }
}

// ---------------------------------------------------------------------------------------------
// Output: flush, close, sweep

void Server::flush(Connection& c) {
  // A fast reader keeps streaming within the pass while its socket takes more, but only for a
  // few refills, so that one reader of a long log cannot starve the other connections.
  int refills = 4;
  while (!c.dead && c.output.pending() > 0) {
    ssize_t n = ::send(c.fd, c.output.bytes.data() + c.output.sent, c.output.pending(),
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.output.consumed(static_cast<size_t>(n));
      if (c.output.pending() == 0 && !shutting_down_ && refills-- > 0) fill_reader(c);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c.dead = true;  // EPIPE, ECONNRESET: the peer is gone
  }
}

void Server::close_finished(Connection& c) {
  if (c.dead || c.output.pending() > 0 || c.pending_writes > 0) return;
  bool finished;
  if (c.close_when_done) {
    finished = true;
  } else if (shutting_down_) {
    // Stopping: once every line it can still dispatch is answered.
    finished = !(can_dispatch(c) && has_complete_line(c));
  } else {
    // After a half-close: once every line is answered and a read has reached "current".
    finished = c.input_closed && c.input.size() == c.input_start &&
               (c.reader.kind == ReadCursor::Kind::None || c.reader.current_sent);
  }
  if (!finished) return;
  if (!c.input_closed) {
    // The peer may still be sending. close() with unread input sends a reset, and a reset
    // throws away whatever of our replies the peer's kernel has not acknowledged yet: so
    // send our FIN, and close only once every byte we sent is acknowledged, or time is up.
    if (c.linger_until_ms == 0) {
      ::shutdown(c.fd, SHUT_WR);
      c.linger_until_ms = now_ms() + kLingerMs;
    }
    int unacked = 0;
    if (::ioctl(c.fd, SIOCOUTQ, &unacked) == 0 && unacked > 0 && now_ms() < c.linger_until_ms)
      return;
  }
  c.dead = true;
}

void Server::sweep() {
  size_t kept = 0;
  for (auto& c : connections_) {
    if (c->dead) {
      ::close(c->fd);
      g_log.line(kInfo, "connection closed",
                 Log::Fields().str("event", "close").num("connection", c->id)
                     .str("address", c->address).num("port", c->port));
      continue;
    }
    connections_[kept++] = std::move(c);
  }
  connections_.resize(kept);
}

void Server::begin_shutdown() {
  shutting_down_ = true;
  for (Listener& l : listeners_) ::close(l.fd);
  listeners_.clear();
  g_log.line(kInfo, "stopping", Log::Fields().num("connections", connections_.size()));
}

// ---------------------------------------------------------------------------------------------
// The loop: it only moves data between the steps above.

int Server::poll_timeout(bool accepting) {
  bool lingering = false;
  for (auto& c : connections_) {
    // Lines already buffered (e.g. behind a write now confirmed) and readers with entries to
    // send and room for them need no wait.
    if ((can_dispatch(*c) && has_complete_line(*c)) || reader_can_fill(*c)) return 0;
    lingering = lingering || c->linger_until_ms != 0;
  }
  // Acknowledgements, the stop's deadline and the end of an accept pause wake nobody.
  if (lingering || shutting_down_) return 10;
  if (!accepting) return 100;
  return -1;
}

int Server::run() {
  std::vector<pollfd> fds;
  int64_t shutdown_deadline = 0;
  for (;;) {
    fds.clear();
    fds.push_back({signal_pipe_[0], POLLIN, 0});
    const bool accepting = !shutting_down_ && now_ms() >= accept_paused_until_ms_;
    for (Listener& l : listeners_) fds.push_back({l.fd, static_cast<short>(accepting ? POLLIN : 0), 0});
    const size_t first_conn = fds.size();
    for (auto& c : connections_) {
      short events = 0;
      if (!shutting_down_ && !c->input_closed && !c->close_when_done &&
          c->output.pending() < kOutputHighWater &&
          c->input.size() - c->input_start < config_.max_message_bytes + 2)
        events |= POLLIN;
      if (c->output.pending() > 0) events |= POLLOUT;
      fds.push_back({c->fd, events, 0});
    }
    int n = ::poll(fds.data(), fds.size(), poll_timeout(accepting));
    if (n < 0 && errno != EINTR) {
      g_log.line(kFatal, "poll failed", Log::Fields().str("error", std::strerror(errno)));
      return kExitFailure;
    }

    if (n > 0 && (fds[0].revents & POLLIN)) {
      char drain[64];
      while (::read(signal_pipe_[0], drain, sizeof drain) > 0) {
      }
      if (!shutting_down_) {
        begin_shutdown();
        shutdown_deadline = now_ms() + kShutdownFlushMs;
      }
    }
    for (size_t i = 1; i < first_conn && n > 0 && !shutting_down_; i++)
      if (fds[i].revents & POLLIN) accept_connections(fds[i].fd);

    // connections_ may have grown by accepting; fds covers those that existed before.
    for (size_t i = first_conn; i < fds.size() && n > 0; i++) {
      Connection& c = *connections_[i - first_conn];
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        if (fds[i].events & POLLIN) {
          read_input(c);
        } else if ((fds[i].revents & POLLERR) ||
                   (c.output.pending() == 0 && !has_complete_line(c))) {
          // Hung up both ways with nothing left to do: without this, poll() would report the
          // hang-up on every pass.
          c.dead = true;
        }
      }
    }
    for (auto& c : connections_) dispatch_lines(*c);
    commit_batch();
    for (auto& c : connections_) {
      if (!shutting_down_) fill_reader(*c);
      flush(*c);
      close_finished(*c);
    }
    sweep();

    if (shutting_down_) {
      // Done when every connection is closed by close_finished(), or time is up.
      if (connections_.empty() || now_ms() >= shutdown_deadline) {
        for (auto& c : connections_) c->dead = true;
        sweep();
        g_log.line(kInfo, "stopped");
        return kExitOk;
      }
    }
  }
}

// =============================================================================================
// --check: verify the whole store without changing it.

int run_check(const Config& config) {
  Store store;
  Store::Options options{config.blobs, config.leveldb, config.sync};
  options.check_only = true;
  std::vector<std::string> notes;
  Status s = store.open(options, &notes);
  if (!s.ok()) {
    g_log.line(kFatal, "cannot check the store", Log::Fields().str("error", s.error));
    std::fprintf(stderr, "tcp-log-server: cannot check the store: %s\n", s.error.c_str());
    return kExitFailure;
  }
  CheckReport report;
  store.check(&report);
  for (const std::string& n : notes) report.problems.push_back(n);
  std::printf("entries: %llu\ndistinct blobs: %llu\nbytes: %llu\nproblems: %zu\n",
              static_cast<unsigned long long>(report.entries),
              static_cast<unsigned long long>(report.distinct_blobs),
              static_cast<unsigned long long>(report.bytes), report.problems.size());
  for (const std::string& p : report.problems) std::printf("problem: %s\n", p.c_str());
  return report.problems.empty() ? kExitOk : kExitDamaged;
}

void raise_fd_limit() {
  // Every connection is a descriptor: use what the administrator allows.
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Config config = parse_config(argc, argv);
  g_log.init(config.log_level);
  ::signal(SIGPIPE, SIG_IGN);  // a closed stdout or a vanished peer is an error code, not death
  if (config.check) return run_check(config);
  raise_fd_limit();

  Store store;
  std::vector<std::string> warnings;
  Status s = store.open({config.blobs, config.leveldb, config.sync}, &warnings);
  for (const std::string& w : warnings) g_log.line(kWarn, w, Log::Fields().str("event", "recovery"));
  if (!s.ok()) {
    g_log.line(kFatal, "cannot open the store", Log::Fields().str("error", s.error));
    return kExitFailure;
  }
  Server server(config, &store);
  std::string error;
  if (!server.start(&error)) {
    g_log.line(kFatal, "cannot start", Log::Fields().str("error", error));
    return kExitFailure;
  }
  return server.run();
}
