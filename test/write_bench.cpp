// Load generator for tcp-log-server, over loopback. One thread, one poll() over all sockets.
//
//   write mode: C connections, each sends up to M writes keeping at most W unconfirmed
//               (W=1: one at a time; W>1: pipelined). Measures confirmed writes/s and the
//               latency from queueing a write to receiving its {"id":..,"index":N}.
//   read mode:  one connection sends {"from":F} and counts entries until {"current":true}.
//               With --redis: the stream "log" read from its start with XRANGE, B entries per
//               request, each request sent once the previous reply is in (it starts after the
//               last id that reply gave), until a reply with fewer than B entries.
//   catchup mode: C readers, each reading the whole log from F again and again (connect,
//               {"from":F}, read until {"current":true}, close) until T seconds passed.
//   create mode: no server: a plain create-write loop on --dir for --seconds, the file system's
//               own limit for what the store thread does per new blob: each file named by 64
//               random hex digits under a two-digit directory (made as needed), opened with
//               O_CREAT|O_EXCL, --size bytes written, closed. No temp file, no rename, no sync.
//   readfiles mode: no server: every file under --dir/hh/ (a blob directory) opened, read and
//               closed once, timed without the listing: the floor under a replay that reads one
//               file per entry.
//   fanout mode: C readers follow the log (ours: {"from":1} on an empty log; --redis: XREAD
//               BLOCK from the stream's end, again after each reply) while one writer sends
//               --rate writes/s for --seconds, each entry holding the time it was sent; the
//               latency of every entry to every reader (p50, p99, max), leaving out those
//               written in the first --warmup seconds.
//   hold mode:  C connections that stay open until SIGTERM: each writes one entry first with
//               --write-once, then with --read sends {"from":F} (--from 0: one past the newest
//               entry the connections wrote) and reads until {"current":true}, or with --stalled
//               sends {"from":F} and never reads. Prints "ready ..." once all are in that state.
//
// Options (flag wins over environment variable):
//   --host H     BENCH_HOST     127.0.0.1
//   --port P     BENCH_PORT     (required)
//   --mode M     BENCH_MODE     write | read              (write)
//   --conns C    BENCH_CONNS    connections               (1)
//   --writes M   BENCH_WRITES   writes per connection     (1000)
//   --window W   BENCH_WINDOW   max unconfirmed per conn  (1)
//   --size S     BENCH_SIZE     canonical entry bytes     (200)
//   --seconds T  BENCH_SECONDS  stop issuing after T s; 0 = no limit (0)
//   --stall-seconds N  write mode: give up after N s without a confirmation (30)
//   --warmup U   BENCH_WARMUP   leave out of the figures the writes queued in the first U s,
//                               and count writes/s from U on (0)
//   --from F     BENCH_FROM     read mode start index     (1)
//   --label L    BENCH_LABEL    free text put in the summary line
//   --batch B    BENCH_BATCH    read mode with --redis: entries per XRANGE (1000)
//   --dir D                     create mode: the directory to create files in (made if absent)
//   --rate R                    fanout mode: writes per second (1000)
//   --redis      write mode: speak to a Redis server instead, each write an XADD of the same
//                entry to the stream "log" (the peer people would pick instead; RESP protocol);
//                read mode: read that stream back with XRANGE
//   --write-once, --read, --stalled   hold mode, see above (flags without a value)
// Prints one summary line of key=value pairs; exit 0 when every write was confirmed (or the
// read reached {"current":true}), 1 on errors, 2 on bad usage. A run with no progress for
// 30 s gives up, so it never hangs.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kStallSeconds = 30;

double secs_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string mode = "write";
  std::string dir;  // create mode
  long conns = 1, writes = 1000, window = 1, size = 200, from = 1, batch = 1000, rate = 1000;
  double seconds = 0, warmup = 0;
  double stall_seconds = kStallSeconds;  // write mode: give up after this long with no confirmation
  std::string label;
  bool write_once = false, read = false, stalled = false, redis = false;
};

[[noreturn]] void usage(const char* what) {
  std::fprintf(stderr,
               "write_bench: %s\nusage: write_bench --port P [--mode write|read] [--conns C] "
               "[--writes M] [--window W] [--size S] [--seconds T] [--warmup U] [--from F] "
               "[--host H] [--stall-seconds N] "
               "[--label L] [--redis] [--batch B]\n",
               what);
  std::exit(2);
}

long to_long(const char* name, const char* v, long min) {
  char* end = nullptr;
  errno = 0;
  long n = std::strtol(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n < min) {
    std::string msg = std::string("bad value for ") + name + ": " + v;
    usage(msg.c_str());
  }
  return n;
}

Options parse(int argc, char** argv) {
  Options o;
  auto env = [](const char* n) { return std::getenv(n); };
  if (auto v = env("BENCH_HOST")) o.host = v;
  if (auto v = env("BENCH_PORT")) o.port = static_cast<int>(to_long("BENCH_PORT", v, 1));
  if (auto v = env("BENCH_MODE")) o.mode = v;
  if (auto v = env("BENCH_CONNS")) o.conns = to_long("BENCH_CONNS", v, 1);
  if (auto v = env("BENCH_WRITES")) o.writes = to_long("BENCH_WRITES", v, 1);
  if (auto v = env("BENCH_WINDOW")) o.window = to_long("BENCH_WINDOW", v, 1);
  if (auto v = env("BENCH_SIZE")) o.size = to_long("BENCH_SIZE", v, 1);
  if (auto v = env("BENCH_SECONDS")) o.seconds = static_cast<double>(to_long("BENCH_SECONDS", v, 0));
  if (auto v = env("BENCH_WARMUP")) o.warmup = static_cast<double>(to_long("BENCH_WARMUP", v, 0));
  if (auto v = env("BENCH_FROM")) o.from = to_long("BENCH_FROM", v, 0);
  if (auto v = env("BENCH_LABEL")) o.label = v;
  if (auto v = env("BENCH_BATCH")) o.batch = to_long("BENCH_BATCH", v, 1);
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") usage("help");
    if (a == "--write-once" || a == "--read" || a == "--stalled" || a == "--redis") {
      (a == "--write-once" ? o.write_once : a == "--read" ? o.read : a == "--stalled" ? o.stalled : o.redis) = true;
      continue;
    }
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    if (a == "--host") o.host = v;
    else if (a == "--port") o.port = static_cast<int>(to_long("--port", v, 1));
    else if (a == "--mode") o.mode = v;
    else if (a == "--conns") o.conns = to_long("--conns", v, 1);
    else if (a == "--writes") o.writes = to_long("--writes", v, 1);
    else if (a == "--window") o.window = to_long("--window", v, 1);
    else if (a == "--size") o.size = to_long("--size", v, 1);
    else if (a == "--seconds") o.seconds = static_cast<double>(to_long("--seconds", v, 0));
    else if (a == "--warmup") o.warmup = static_cast<double>(to_long("--warmup", v, 0));
    else if (a == "--from") o.from = to_long("--from", v, 0);
    else if (a == "--label") o.label = v;
    else if (a == "--stall-seconds") o.stall_seconds = static_cast<double>(to_long("--stall-seconds", v, 1));
    else if (a == "--batch") o.batch = to_long("--batch", v, 1);
    else if (a == "--dir") o.dir = v;
    else if (a == "--rate") o.rate = to_long("--rate", v, 1);
    else usage(("unknown option " + a).c_str());
  }
  if (o.mode == "create") {
    if (o.dir.empty() || o.seconds <= 0) usage("create mode needs --dir and --seconds");
    return o;
  }
  if (o.mode == "readfiles") {
    if (o.dir.empty()) usage("readfiles mode needs --dir");
    return o;
  }
  if (o.port <= 0 || o.port > 65535) usage("--port is required (1..65535)");
  if (o.mode != "write" && o.mode != "read" && o.mode != "catchup" && o.mode != "hold" && o.mode != "fanout")
    usage("--mode must be write, read, catchup, hold, fanout, create or readfiles");
  if (o.mode == "fanout" && o.seconds <= 0) usage("fanout mode needs --seconds");
  if (o.conns > (o.mode == "hold" ? 20000 : 1000)) usage("--conns at most 1000 (20000 in hold mode)");
  if (o.redis && o.mode != "write" && o.mode != "read" && o.mode != "fanout")
    usage("--redis is for write, read and fanout mode");
  return o;
}

int connect_to(const Options& o) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(o.port));
  if (::inet_pton(AF_INET, o.host.c_str(), &sa.sin_addr) != 1) usage("--host must be an IPv4 literal");
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    std::perror("socket");
    std::exit(1);
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    std::fprintf(stderr, "write_bench: connect %s:%d: %s\n", o.host.c_str(), o.port,
                 std::strerror(errno));
    std::exit(1);
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

// Sends what it can of out[*off..]; false when the connection failed.
bool send_some(int fd, const std::string& out, size_t* off) {
  while (*off < out.size()) {
    ssize_t n = ::send(fd, out.data() + *off, out.size() - *off, MSG_NOSIGNAL);
    if (n > 0) {
      *off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n < 0 && errno == EINTR) continue;
    return false;
  }
  return true;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

// ---------------------------------------------------------------------------------------------
// Write mode

struct Conn {
  int fd = -1;
  long sent = 0, confirmed = 0, errors = 0;
  std::deque<std::pair<long, Clock::time_point>> inflight;  // seq, queued at
  std::string out;
  size_t out_off = 0;
  std::string in;
  bool failed = false;
};

// An entry whose canonical form ({"c":..,"i":..,"n":"..","p":"xxx"}) is `size` bytes where
// possible; "n" makes every run's entries (and so blobs) new.
std::string make_line(long conn, long seq, long size, const std::string& nonce) {
  std::string id = std::to_string(conn) + "-" + std::to_string(seq);
  std::string entry = "{\"c\":" + std::to_string(conn) + ",\"i\":" + std::to_string(seq) +
                      ",\"n\":\"" + nonce + "\",\"p\":\"";
  size_t fixed = entry.size() + 2;  // + "\"}"
  if (static_cast<size_t>(size) > fixed) entry.append(static_cast<size_t>(size) - fixed, 'x');
  entry += "\"}";
  return "{\"id\":\"" + id + "\",\"entry\":" + entry + "}\n";
}

// The same entry as an XADD to the stream "log" with one field, in RESP.
std::string make_xadd(long conn, long seq, long size, const std::string& nonce) {
  std::string line = make_line(conn, seq, size, nonce);
  const size_t at = line.find("\"entry\":") + 8;
  std::string entry = line.substr(at, line.size() - at - 2);  // without the closing "}\n"
  auto bulk = [](const std::string& s) { return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n"; };
  return "*5\r\n" + bulk("XADD") + bulk("log") + bulk("*") + bulk("e") + bulk(entry);
}

// The next complete RESP reply at in[start..]: its length, 0 if incomplete. *ok is false for an
// error reply. Only the replies XADD gives: a bulk string (the id) or an error.
size_t redis_reply(const std::string& in, size_t start, bool* ok) {
  size_t eol = in.find("\r\n", start);
  if (eol == std::string::npos) return 0;
  if (in[start] == '$') {
    long n = std::strtol(in.c_str() + start + 1, nullptr, 10);
    size_t end = eol + 2 + static_cast<size_t>(n < 0 ? 0 : n) + (n < 0 ? 0 : 2);
    if (end > in.size()) return 0;
    *ok = n >= 0;
    return end - start;
  }
  *ok = false;  // '-': an error line
  return eol + 2 - start;
}

int run_write(const Options& o) {
  char nonce[48];
  std::snprintf(nonce, sizeof nonce, "%ld.%ld", static_cast<long>(::getpid()),
                static_cast<long>(Clock::now().time_since_epoch().count() % 1000000000));
  std::vector<Conn> conns(static_cast<size_t>(o.conns));
  for (auto& c : conns) c.fd = connect_to(o);
  std::vector<double> lat_us;
  lat_us.reserve(static_cast<size_t>(std::min<long>(o.conns * o.writes, 50'000'000)));
  std::vector<uint64_t> indices;
  indices.reserve(lat_us.capacity());
  long mismatched = 0;
  const auto t0 = Clock::now();
  const auto measured_from = t0 + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(o.warmup));
  long measured = 0;  // confirmations of writes queued after the warm-up
  auto last_progress = t0;
  bool issuing = true;
  std::vector<pollfd> fds(conns.size());
  char buf[65536];
  for (;;) {
    if (issuing && o.seconds > 0 && secs_since(t0) >= o.seconds) issuing = false;
    bool busy = false;
    for (size_t k = 0; k < conns.size(); k++) {
      Conn& c = conns[k];
      if (c.failed) continue;
      if (c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
      }
      while (issuing && c.sent < o.writes && static_cast<long>(c.inflight.size()) < o.window) {
        c.out += o.redis ? make_xadd(static_cast<long>(k), c.sent, o.size, nonce)
                         : make_line(static_cast<long>(k), c.sent, o.size, nonce);
        c.inflight.emplace_back(c.sent, Clock::now());
        c.sent++;
      }
      if (!send_some(c.fd, c.out, &c.out_off)) c.failed = true;
      if (!c.inflight.empty() && !c.failed) busy = true;
    }
    if (!busy) break;
    for (size_t k = 0; k < conns.size(); k++) {
      fds[k].fd = conns[k].failed ? -1 : conns[k].fd;
      fds[k].events = POLLIN | (conns[k].out_off < conns[k].out.size() ? POLLOUT : 0);
      fds[k].revents = 0;
    }
    int n = ::poll(fds.data(), fds.size(), 1000);
    if (n < 0 && errno != EINTR) {
      std::perror("poll");
      return 1;
    }
    for (size_t k = 0; k < conns.size() && n > 0; k++) {
      Conn& c = conns[k];
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      for (;;) {
        ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
        if (r > 0) {
          c.in.append(buf, static_cast<size_t>(r));
          continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) c.failed = true;
        break;
      }
      const auto now = Clock::now();
      size_t start = 0;
      while (o.redis && start < c.in.size()) {
        bool ok = false;
        size_t n = redis_reply(c.in, start, &ok);
        if (n == 0) break;
        start += n;
        if (c.inflight.empty()) {
          mismatched++;
          continue;
        }
        auto queued = c.inflight.front().second;
        c.inflight.pop_front();
        if (!ok) {
          c.errors++;
          continue;
        }
        c.confirmed++;
        if (queued >= measured_from) {
          measured++;
          lat_us.push_back(std::chrono::duration<double, std::micro>(now - queued).count());
        }
        last_progress = now;
      }
      for (;;) {
        if (o.redis) break;
        size_t nl = c.in.find('\n', start);
        if (nl == std::string::npos) break;
        std::string_view line(c.in.data() + start, nl - start);
        start = nl + 1;
        if (c.inflight.empty()) {
          mismatched++;
          continue;
        }
        auto [seq, queued] = c.inflight.front();
        c.inflight.pop_front();
        std::string want = "{\"id\":\"" + std::to_string(k) + "-" + std::to_string(seq) + "\",";
        if (line.compare(0, want.size(), want) != 0) mismatched++;
        size_t ip = line.find("\"index\":");
        if (ip == std::string_view::npos) {
          c.errors++;
          continue;
        }
        c.confirmed++;
        indices.push_back(std::strtoull(line.data() + ip + 8, nullptr, 10));
        if (queued >= measured_from) {
          measured++;
          lat_us.push_back(std::chrono::duration<double, std::micro>(now - queued).count());
        }
        last_progress = now;
      }
      c.in.erase(0, start);
    }
    if (std::chrono::duration<double>(Clock::now() - last_progress).count() > o.stall_seconds) {
      std::fprintf(stderr, "write_bench: no confirmation for %.0f s, giving up\n", o.stall_seconds);
      break;
    }
  }
  const double elapsed = secs_since(t0);
  const double measured_secs = elapsed - o.warmup;
  long sent = 0, confirmed = 0, errors = 0, failed = 0;
  for (auto& c : conns) {
    sent += c.sent;
    confirmed += c.confirmed;
    errors += c.errors;
    failed += c.failed ? 1 : 0;
    ::close(c.fd);
  }
  // Indices handed out in this run must be distinct and, with no other writer, contiguous.
  std::sort(indices.begin(), indices.end());
  bool contiguous = indices.empty() ||
                    (std::adjacent_find(indices.begin(), indices.end()) == indices.end() &&
                     indices.back() - indices.front() + 1 == indices.size());
  std::sort(lat_us.begin(), lat_us.end());
  std::printf(
      "mode=write label=%s conns=%ld window=%ld size=%ld sent=%ld confirmed=%ld errors=%ld "
      "mismatched=%ld failed_conns=%ld contiguous=%s secs=%.3f warmup=%.0f measured=%ld "
      "writes_per_s=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
      o.label.empty() ? "-" : o.label.c_str(), o.conns, o.window, o.size, sent, confirmed, errors,
      mismatched, failed, contiguous ? "yes" : "no", elapsed, o.warmup, measured,
      measured_secs > 0 ? static_cast<double>(measured) / measured_secs : 0.0,
      percentile(lat_us, 0.50) / 1000, percentile(lat_us, 0.99) / 1000,
      lat_us.empty() ? 0.0 : lat_us.back() / 1000);
  return (confirmed == sent && errors == 0 && mismatched == 0 && failed == 0 && contiguous) ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Read mode

int run_read(const Options& o) {
  int fd = connect_to(o);
  std::string req = "{\"from\":" + std::to_string(o.from) + "}\n";
  size_t off = 0;
  const auto t0 = Clock::now();
  auto last_progress = t0;
  while (off < req.size()) {
    if (!send_some(fd, req, &off)) {
      std::fprintf(stderr, "write_bench: send failed\n");
      return 1;
    }
  }
  std::vector<char> buf(1 << 18);
  std::string partial;  // the unterminated tail of the last chunk
  long entries = 0, errors = 0, other = 0;
  uint64_t bytes = 0;
  bool current = false, closed = false;
  double first_byte = -1;
  while (!current && !closed) {
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, 1000);
    if (n < 0 && errno != EINTR) {
      std::perror("poll");
      return 1;
    }
    if (secs_since(last_progress) > kStallSeconds) {
      std::fprintf(stderr, "write_bench: no data for %.0f s, giving up\n", kStallSeconds);
      break;
    }
    if (n <= 0) continue;
    for (;;) {
      ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        closed = true;
        break;
      }
      if (r < 0) break;
      if (first_byte < 0) first_byte = secs_since(t0);
      last_progress = Clock::now();
      bytes += static_cast<uint64_t>(r);
      // Classify each complete line by its start; only a line split across chunks is copied.
      const char* p0 = buf.data();
      const char* end = p0 + r;
      const char* line = p0;
      if (!partial.empty()) {
        const char* nl = static_cast<const char*>(std::memchr(p0, '\n', static_cast<size_t>(r)));
        if (!nl) {
          partial.append(p0, end);
          continue;
        }
        partial.append(p0, nl);
        line = nl + 1;
        std::string_view l(partial);
        if (l.compare(0, 9, "{\"index\":") == 0)
          (l.find(",\"error\":") != std::string_view::npos ? errors : entries)++;
        else if (l == "{\"current\":true}") current = true;
        else other++;
        partial.clear();
      }
      while (line < end) {
        const char* nl = static_cast<const char*>(std::memchr(line, '\n', static_cast<size_t>(end - line)));
        if (!nl) {
          partial.assign(line, end);
          break;
        }
        std::string_view l(line, static_cast<size_t>(nl - line));
        if (l.compare(0, 9, "{\"index\":") == 0) {
          // An unreadable entry is {"index":N,"error":...}: the number, then the key.
          const char* q = line + 9;
          while (q < nl && *q >= '0' && *q <= '9') q++;
          (l.compare(static_cast<size_t>(q - line), 9, ",\"error\":") == 0 ? errors : entries)++;
        } else if (l == "{\"current\":true}") {
          current = true;
        } else {
          other++;
        }
        line = nl + 1;
      }
      if (current) break;
    }
  }
  const double elapsed = secs_since(t0);
  ::close(fd);
  std::printf(
      "mode=read label=%s from=%ld entries=%ld errors=%ld other=%ld current=%s secs=%.3f "
      "first_byte_ms=%.3f entries_per_s=%.0f mb_per_s=%.1f bytes=%llu\n",
      o.label.empty() ? "-" : o.label.c_str(), o.from, entries, errors, other,
      current ? "yes" : "no", elapsed, first_byte * 1000,
      elapsed > 0 ? static_cast<double>(entries) / elapsed : 0.0,
      elapsed > 0 ? static_cast<double>(bytes) / elapsed / 1e6 : 0.0,
      static_cast<unsigned long long>(bytes));
  return (current && errors == 0 && other == 0) ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Read mode against Redis

constexpr size_t kIncomplete = std::string::npos;

// The end of the complete RESP value that starts at in[at], kIncomplete while it is not all
// there yet. *bad is set for a type byte RESP 2 does not have.
size_t resp_end(const std::string& in, size_t at, bool* bad) {
  if (at >= in.size()) return kIncomplete;
  const size_t eol = in.find("\r\n", at);
  if (eol == std::string::npos) return kIncomplete;
  const long n = std::strtol(in.c_str() + at + 1, nullptr, 10);
  switch (in[at]) {
    case '+':
    case '-':
    case ':':
      return eol + 2;
    case '$': {
      if (n < 0) return eol + 2;
      const size_t end = eol + 2 + static_cast<size_t>(n) + 2;
      return end <= in.size() ? end : kIncomplete;
    }
    case '*': {
      size_t p = eol + 2;
      for (long i = 0; i < n && p != kIncomplete; i++) p = resp_end(in, p, bad);
      return p;
    }
    default:
      *bad = true;
      return kIncomplete;
  }
}

std::string resp_command(const std::vector<std::string>& args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& a : args) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  return out;
}

int run_redis_read(const Options& o) {
  int fd = connect_to(o);
  const auto t0 = Clock::now();
  auto last_progress = t0;
  std::vector<char> buf(1 << 18);
  std::string in, last_id;
  long entries = 0, errors = 0, requests = 0;
  uint64_t bytes = 0;
  bool done = false, closed = false;
  double first_byte = -1;
  while (!done && !closed) {
    const std::string start = requests == 0 ? "-" : "(" + last_id;  // "(": after that id
    const std::string req = resp_command({"XRANGE", "log", start, "+", "COUNT", std::to_string(o.batch)});
    requests++;
    size_t off = 0;
    while (off < req.size())
      if (!send_some(fd, req, &off)) {
        std::fprintf(stderr, "write_bench: send failed\n");
        return 1;
      }
    // The reply, an array of [id, [field, value, ...]], is counted element by element as
    // its bytes arrive.
    in.clear();
    long count = -1, got = 0;  // the reply's entries, once its header is in; those counted
    size_t next = 0;           // where the next element starts
    for (;;) {  // until the whole reply is in
      bool bad = false;
      if (count < 0 && in.find("\r\n") != std::string::npos) {
        if (in[0] != '*') bad = true;
        count = std::strtol(in.c_str() + 1, nullptr, 10);
        next = in.find("\r\n") + 2;
      }
      while (!bad && count >= 0 && got < count) {
        const size_t end = resp_end(in, next, &bad);
        if (bad || end == kIncomplete) break;
        // An element: *2, the id as a bulk string, the fields.
        if (in.compare(next, 5, "*2\r\n$") != 0) {
          bad = true;
          break;
        }
        const size_t id_at = in.find("\r\n", next + 4) + 2;
        last_id.assign(in, id_at, static_cast<size_t>(std::strtol(in.c_str() + next + 5, nullptr, 10)));
        next = end;
        got++;
      }
      if (bad) {
        std::fprintf(stderr, "write_bench: unexpected XRANGE reply: %.80s\n", in.c_str());
        errors++;
        closed = true;
        break;
      }
      if (count >= 0 && got == count) {
        entries += got;
        done = got < o.batch;
        break;
      }
      pollfd p{fd, POLLIN, 0};
      int n = ::poll(&p, 1, 1000);
      if (n < 0 && errno != EINTR) {
        std::perror("poll");
        return 1;
      }
      if (secs_since(last_progress) > kStallSeconds) {
        std::fprintf(stderr, "write_bench: no data for %.0f s, giving up\n", kStallSeconds);
        closed = true;
        break;
      }
      if (n <= 0) continue;
      ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        closed = true;
        break;
      }
      if (r < 0) continue;
      if (first_byte < 0) first_byte = secs_since(t0);
      last_progress = Clock::now();
      bytes += static_cast<uint64_t>(r);
      in.append(buf.data(), static_cast<size_t>(r));
    }
  }
  const double elapsed = secs_since(t0);
  ::close(fd);
  // The same keys as a read of our server (current=yes: the last reply was short, the end of
  // the stream), and the batch and request count.
  std::printf(
      "mode=read label=%s from=1 entries=%ld errors=%ld other=0 current=%s secs=%.3f "
      "first_byte_ms=%.3f entries_per_s=%.0f mb_per_s=%.1f bytes=%llu redis=yes batch=%ld "
      "requests=%ld\n",
      o.label.empty() ? "-" : o.label.c_str(), entries, errors, done ? "yes" : "no", elapsed,
      first_byte * 1000, elapsed > 0 ? static_cast<double>(entries) / elapsed : 0.0,
      elapsed > 0 ? static_cast<double>(bytes) / elapsed / 1e6 : 0.0,
      static_cast<unsigned long long>(bytes), o.batch, requests);
  return (done && errors == 0) ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Catch-up mode

// Reads from `fd` until {"current":true}; counts entry lines. False on a failure or stall.
bool read_until_current(int fd, std::vector<char>& buf, long* entries, uint64_t* bytes) {
  std::string partial;
  auto last = Clock::now();
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, 1000);
    if (n < 0 && errno != EINTR) return false;
    if (secs_since(last) > kStallSeconds) return false;
    if (n <= 0) continue;
    for (;;) {
      ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return false;
      if (r < 0) break;
      last = Clock::now();
      *bytes += static_cast<uint64_t>(r);
      // Only the start of each line matters; lines are counted by their '\n'.
      const char* b = buf.data();
      const char* end = b + r;
      for (const char* q = b; q < end;) {
        const char* nl = static_cast<const char*>(std::memchr(q, '\n', static_cast<size_t>(end - q)));
        if (!nl) {
          partial.append(q, end);
          break;
        }
        std::string_view line(q, static_cast<size_t>(nl - q));
        std::string joined;
        if (!partial.empty()) {
          joined = partial;
          joined.append(line);
          partial.clear();
          line = joined;
        }
        if (line == "{\"current\":true}") return true;
        if (line.compare(0, 9, "{\"index\":") == 0) (*entries)++;
        q = nl + 1;
      }
    }
  }
}

int run_catchup(const Options& o) {
  // One thread per reader would measure the threads; instead readers take turns in one poll
  // loop: each reads whatever it has, so all stay in flight at once.
  struct Reader {
    int fd = -1;
    std::string partial;
  };
  std::vector<Reader> readers(static_cast<size_t>(o.conns));
  std::string req = "{\"from\":" + std::to_string(o.from) + "}\n";
  auto open_reader = [&](Reader& r) {
    r.fd = connect_to(o);
    size_t off = 0;
    while (off < req.size())
      if (!send_some(r.fd, req, &off)) return false;
    r.partial.clear();
    return true;
  };
  for (auto& r : readers)
    if (!open_reader(r)) return 1;
  const auto t0 = Clock::now();
  long entries = 0, rounds = 0;
  uint64_t bytes = 0;
  std::vector<char> buf(1 << 18);
  std::vector<pollfd> fds(readers.size());
  auto last = Clock::now();
  while (o.seconds <= 0 || secs_since(t0) < o.seconds) {
    for (size_t k = 0; k < readers.size(); k++) fds[k] = {readers[k].fd, POLLIN, 0};
    int n = ::poll(fds.data(), fds.size(), 1000);
    if (n < 0 && errno != EINTR) return 1;
    if (secs_since(last) > kStallSeconds) {
      std::fprintf(stderr, "write_bench: catchup readers stalled\n");
      return 1;
    }
    for (size_t k = 0; k < readers.size() && n > 0; k++) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Reader& r = readers[k];
      ssize_t got = ::recv(r.fd, buf.data(), buf.size(), 0);
      if (got <= 0) {
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        std::fprintf(stderr, "write_bench: catchup reader lost its connection\n");
        return 1;
      }
      last = Clock::now();
      bytes += static_cast<uint64_t>(got);
      bool current = false;
      const char* b = buf.data();
      const char* end = b + got;
      for (const char* q = b; q < end;) {
        const char* nl = static_cast<const char*>(std::memchr(q, '\n', static_cast<size_t>(end - q)));
        if (!nl) {
          r.partial.append(q, end);
          break;
        }
        std::string line = r.partial + std::string(q, nl);
        r.partial.clear();
        if (line == "{\"current\":true}") current = true;
        else if (line.compare(0, 9, "{\"index\":") == 0) entries++;
        q = nl + 1;
      }
      if (current) {  // caught up: start again from the beginning
        rounds++;
        ::close(r.fd);
        if (!open_reader(r)) return 1;
      }
    }
  }
  const double elapsed = secs_since(t0);
  for (auto& r : readers) ::close(r.fd);
  std::printf("mode=catchup label=%s conns=%ld from=%ld rounds=%ld entries=%ld secs=%.3f "
              "entries_per_s=%.0f mb_per_s=%.1f\n",
              o.label.empty() ? "-" : o.label.c_str(), o.conns, o.from, rounds, entries, elapsed,
              static_cast<double>(entries) / elapsed, static_cast<double>(bytes) / elapsed / 1e6);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Hold mode

volatile sig_atomic_t g_stop = 0;
void on_term(int) { g_stop = 1; }

int run_hold(const Options& o) {
  ::signal(SIGTERM, on_term);
  ::signal(SIGINT, on_term);
  std::vector<int> fds;
  fds.reserve(static_cast<size_t>(o.conns));
  // Connect in waves, so that the server's listen backlog never overflows (a dropped SYN
  // costs a second).
  for (long i = 0; i < o.conns; i++) {
    fds.push_back(connect_to(o));
    if (i % 256 == 255) ::usleep(2000);
  }
  std::vector<char> buf(1 << 16);
  auto read_line = [&](int fd, std::string* line) {
    // One short reply: read byte runs until '\n' (replies here are tiny).
    line->clear();
    auto t0 = Clock::now();
    for (;;) {
      char c;
      ssize_t r = ::recv(fd, &c, 1, 0);
      if (r == 1) {
        if (c == '\n') return true;
        line->push_back(c);
        continue;
      }
      if (r == 0 || (errno != EAGAIN && errno != EINTR)) return false;
      if (secs_since(t0) > kStallSeconds) return false;
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 100);
    }
  };
  uint64_t newest = 0;
  if (o.write_once) {
    for (size_t k = 0; k < fds.size(); k++) {
      std::string w = "{\"id\":\"h" + std::to_string(k) + "\",\"entry\":[]}\n";
      size_t off = 0;
      while (off < w.size())
        if (!send_some(fds[k], w, &off)) return 1;
    }
    std::string line;
    for (int fd : fds) {
      if (!read_line(fd, &line) || line.find("\"index\":") == std::string::npos) {
        std::fprintf(stderr, "write_bench: hold: no confirmation: %s\n", line.c_str());
        return 1;
      }
      newest = std::max<uint64_t>(newest, std::strtoull(line.c_str() + line.find("\"index\":") + 8, nullptr, 10));
    }
  }
  long entries = 0;
  uint64_t bytes = 0;
  if (o.read || o.stalled) {
    const uint64_t from = o.from > 0 ? static_cast<uint64_t>(o.from) : newest + 1;
    std::string req = "{\"from\":" + std::to_string(from) + "}\n";
    for (int fd : fds) {
      size_t off = 0;
      while (off < req.size())
        if (!send_some(fd, req, &off)) return 1;
    }
    if (o.read)
      for (int fd : fds)
        if (!read_until_current(fd, buf, &entries, &bytes)) {
          std::fprintf(stderr, "write_bench: hold: a reader did not reach current\n");
          return 1;
        }
  }
  // What one poll() over this many idle TCP sockets costs the kernel here: the server's loop
  // makes at least one such call per pass, over as many sockets.
  std::vector<pollfd> probe(fds.size());
  for (size_t k = 0; k < fds.size(); k++) probe[k] = {fds[k], POLLIN, 0};
  const auto p0 = Clock::now();
  constexpr int kPolls = 50;
  for (int i = 0; i < kPolls; i++) ::poll(probe.data(), probe.size(), 0);
  const double poll_us = secs_since(p0) * 1e6 / kPolls;
  std::printf("ready mode=hold label=%s conns=%ld entries_read=%ld poll_us=%.0f\n",
              o.label.empty() ? "-" : o.label.c_str(), o.conns, entries, poll_us);
  std::fflush(stdout);
  // Hold until told to stop; readers that are not stalled take (and drop) whatever arrives.
  std::vector<pollfd> p(fds.size());
  while (!g_stop) {
    for (size_t k = 0; k < fds.size(); k++) p[k] = {fds[k], static_cast<short>(o.stalled ? 0 : POLLIN), 0};
    int n = ::poll(p.data(), p.size(), 200);
    for (size_t k = 0; k < p.size() && n > 0; k++)
      if (p[k].revents & POLLIN)
        while (::recv(fds[k], buf.data(), buf.size(), MSG_DONTWAIT) > 0) {
        }
  }
  for (int fd : fds) ::close(fd);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Fan-out mode

// The bulk strings of the RESP values in[at, end), in order (arrays flattened).
std::vector<std::string> resp_bulks(const std::string& in, size_t at, size_t end) {
  std::vector<std::string> out;
  while (at < end) {
    const size_t eol = in.find("\r\n", at);
    if (eol == std::string::npos || eol >= end) break;
    if (in[at] == '$') {
      const long n = std::strtol(in.c_str() + at + 1, nullptr, 10);
      if (n < 0) {
        at = eol + 2;
        continue;
      }
      out.push_back(in.substr(eol + 2, static_cast<size_t>(n)));
      at = eol + 2 + static_cast<size_t>(n) + 2;
    } else {
      at = eol + 2;  // an array's header, or a line value
    }
  }
  return out;
}

int run_fanout(const Options& o) {
  const auto t0 = Clock::now();
  auto now_ns = [&t0] {
    return static_cast<long long>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
  };
  auto send_all = [](int fd, const std::string& out) {
    size_t off = 0;
    while (off < out.size())
      if (!send_some(fd, out, &off)) {
        std::fprintf(stderr, "write_bench: send failed\n");
        std::exit(1);
      }
  };
  auto xread = [](const std::string& after) {
    return resp_command({"XREAD", "BLOCK", "0", "COUNT", "1000", "STREAMS", "log", after});
  };
  const size_t n = static_cast<size_t>(o.conns);
  std::vector<int> readers;
  std::vector<std::string> in(n);
  std::vector<bool> current(n, o.redis);
  for (size_t k = 0; k < n; k++) {
    readers.push_back(connect_to(o));
    send_all(readers[k], o.redis ? xread("$") : "{\"from\":1}\n");
  }
  const int writer = connect_to(o);
  std::vector<char> buf(1 << 16);
  std::vector<double> latencies_ms;
  const long long warmup_ns = static_cast<long long>(o.warmup * 1e9), end_ns = static_cast<long long>(o.seconds * 1e9);
  const long long drain_ns = end_ns + 2000000000LL;  // readers get 2 s more for the last entries
  const std::string pad(static_cast<size_t>(std::max(1L, o.size - 30)), 'x');
  long writes = 0, counted_writes = 0, errors = 0;
  long long next_write = -1;  // the first once every reader is following
  auto readers_following = [&] { return std::all_of(current.begin(), current.end(), [](bool b) { return b; }); };
  for (;;) {
    const long long now = now_ns();
    if (next_write < 0 && readers_following()) next_write = now;
    if (now > drain_ns || (next_write < 0 && now > 30000000000LL)) break;
    if (next_write >= 0 && now >= next_write && now < end_ns) {
      const std::string t = std::to_string(now);
      send_all(writer, o.redis ? resp_command({"XADD", "log", "*", "t", t, "p", pad})
                               : "{\"id\":\"f" + std::to_string(writes) + "\",\"entry\":{\"t\":" + t + ",\"p\":\"" + pad + "\"}}\n");
      writes++;
      if (now >= warmup_ns) counted_writes++;
      next_write += static_cast<long long>(1e9 / static_cast<double>(o.rate));
      continue;
    }
    std::vector<pollfd> p;
    for (int fd : readers) p.push_back({fd, POLLIN, 0});
    p.push_back({writer, POLLIN, 0});
    const long long wait_ns = next_write >= 0 && now < end_ns ? std::max(0LL, next_write - now) : 10000000LL;
    if (::poll(p.data(), p.size(), static_cast<int>(wait_ns / 1000000)) < 0 && errno != EINTR) {
      std::perror("poll");
      return 1;
    }
    if (p.back().revents & (POLLIN | POLLHUP | POLLERR))
      while (::recv(writer, buf.data(), buf.size(), MSG_DONTWAIT) > 0) {
      }
    for (size_t k = 0; k < n; k++) {
      if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t r = ::recv(readers[k], buf.data(), buf.size(), MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        std::fprintf(stderr, "write_bench: reader %zu closed\n", k);
        return 1;
      }
      if (r < 0) continue;
      const long long arrived = now_ns();
      in[k].append(buf.data(), static_cast<size_t>(r));
      auto record = [&](long long sent) {
        if (sent >= warmup_ns) latencies_ms.push_back(static_cast<double>(arrived - sent) / 1e6);
      };
      if (!o.redis) {
        size_t start = 0;
        for (size_t eol; (eol = in[k].find('\n', start)) != std::string::npos; start = eol + 1) {
          const size_t t = in[k].find("\"t\":", start);
          if (in[k].compare(start, 17, "{\"current\":true}\n") == 0) current[k] = true;
          else if (t != std::string::npos && t < eol) record(std::strtoll(in[k].c_str() + t + 4, nullptr, 10));
          else errors++;
        }
        in[k].erase(0, start);
        continue;
      }
      for (;;) {  // each complete XREAD reply: its entries, then the next XREAD after the last
        bool bad = false;
        const size_t end = resp_end(in[k], 0, &bad);
        if (bad) {
          std::fprintf(stderr, "write_bench: unexpected XREAD reply: %.80s\n", in[k].c_str());
          return 1;
        }
        if (end == kIncomplete) break;
        const std::vector<std::string> bulks = resp_bulks(in[k], 0, end);
        std::string last_id;
        for (size_t i = 1; i + 1 < bulks.size(); i++)
          if (bulks[i] == "t") {
            record(std::strtoll(bulks[i + 1].c_str(), nullptr, 10));
            last_id = bulks[i - 1];
          }
        in[k].erase(0, end);
        if (last_id.empty()) errors++;
        else send_all(readers[k], xread(last_id));
      }
    }
  }
  for (int fd : readers) ::close(fd);
  ::close(writer);
  std::sort(latencies_ms.begin(), latencies_ms.end());
  const long expected = counted_writes * o.conns;
  std::printf("mode=fanout label=%s readers=%ld rate=%ld writes=%ld samples=%zu expected=%ld errors=%ld p50_ms=%.3f "
              "p99_ms=%.3f max_ms=%.3f\n",
              o.label.empty() ? "-" : o.label.c_str(), o.conns, o.rate, writes, latencies_ms.size(), expected, errors,
              percentile(latencies_ms, 0.50), percentile(latencies_ms, 0.99),
              latencies_ms.empty() ? 0.0 : latencies_ms.back());
  return static_cast<long>(latencies_ms.size()) == expected && errors == 0 ? 0 : 1;
}

// create mode (see the top): files/s of a plain create-write loop.
int run_create(const Options& o) {
  if (::mkdir(o.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    std::fprintf(stderr, "write_bench: mkdir %s: %s\n", o.dir.c_str(), std::strerror(errno));
    return 1;
  }
  const std::string bytes(static_cast<size_t>(o.size), 'c');
  uint64_t state = static_cast<uint64_t>(Clock::now().time_since_epoch().count()) | 1;
  auto next = [&state] {  // xorshift64*: names only, no quality needed beyond no collisions
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 2685821657736338717ull;
  };
  long files = 0;
  const auto t0 = Clock::now();
  while (secs_since(t0) < o.seconds) {
    char name[65];
    for (int i = 0; i < 64; i += 16) std::snprintf(name + i, 17, "%016llx", static_cast<unsigned long long>(next()));
    const std::string sub = o.dir + "/" + std::string(name, 2);
    const std::string path = sub + "/" + std::string(name + 2, 62);
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) {
      if (::mkdir(sub.c_str(), 0755) != 0 && errno != EEXIST) {
        std::fprintf(stderr, "write_bench: mkdir %s: %s\n", sub.c_str(), std::strerror(errno));
        return 1;
      }
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    }
    if (fd < 0 || ::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()) || ::close(fd) != 0) {
      std::fprintf(stderr, "write_bench: create %s: %s\n", path.c_str(), std::strerror(errno));
      return 1;
    }
    files++;
  }
  const double secs = secs_since(t0);
  std::printf("mode=create label=%s size=%ld files=%ld secs=%.3f files_per_s=%.0f\n", o.label.c_str(), o.size, files,
              secs, static_cast<double>(files) / secs);
  return 0;
}

// readfiles mode (see the top): files/s of open, read, close.
int run_readfiles(const Options& o) {
  std::vector<std::string> paths;
  if (DIR* top = ::opendir(o.dir.c_str())) {
    while (const dirent* d = ::readdir(top)) {
      if (std::strlen(d->d_name) != 2) continue;
      const std::string sub = o.dir + "/" + d->d_name;
      if (DIR* in = ::opendir(sub.c_str())) {
        while (const dirent* f = ::readdir(in))
          if (f->d_name[0] != '.') paths.push_back(sub + "/" + f->d_name);
        ::closedir(in);
      }
    }
    ::closedir(top);
  }
  if (paths.empty()) {
    std::fprintf(stderr, "write_bench: no files under %s/hh/\n", o.dir.c_str());
    return 1;
  }
  std::string buf(65536, '\0');
  long bytes = 0;
  const auto t0 = Clock::now();
  for (const auto& p : paths) {
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME);
    if (fd < 0) fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    const ssize_t n = fd < 0 ? -1 : ::read(fd, &buf[0], buf.size());
    if (n < 0 || ::close(fd) != 0) {
      std::fprintf(stderr, "write_bench: read %s: %s\n", p.c_str(), std::strerror(errno));
      return 1;
    }
    bytes += n;
  }
  const double secs = secs_since(t0);
  std::printf("mode=readfiles label=%s files=%zu bytes=%ld secs=%.3f files_per_s=%.0f\n", o.label.c_str(), paths.size(), bytes,
              secs, static_cast<double>(paths.size()) / secs);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (o.mode == "write") return run_write(o);
  if (o.mode == "catchup") return run_catchup(o);
  if (o.mode == "hold") return run_hold(o);
  if (o.mode == "create") return run_create(o);
  if (o.mode == "fanout") return run_fanout(o);
  if (o.mode == "readfiles") return run_readfiles(o);
  if (o.redis) return run_redis_read(o);
  return run_read(o);
}
