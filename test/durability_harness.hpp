// Helpers for the durability, crash and fault-injection tests (issue 3), on top of harness.hpp:
// a printed, replayable seed; direct reads of the store's files; the invariants every test
// checks after a restart; a single-threaded load driver (pipelining writers and stream readers
// on raw non-blocking sockets, so that a server killed mid-stream cannot trip an assertion in
// another thread); and a runner for the server under a wrapper command (strace).
//
// Every wait is bounded. Only loopback is dialled. Only processes started here are signalled.
#pragma once

#include "harness.hpp"
#include "store.hpp"
#include "sha256.hpp"

#include <deque>
#include <iostream>
#include <random>
#include <set>
#include <unordered_map>

namespace dur {

using namespace test_support;
using harness::Clock;
using std::chrono::milliseconds;

// ---------------------------------------------------------------------------------------------
// Seed and configuration

// SEED from the environment, else from the clock; printed once so a failure can be replayed.
inline uint64_t base_seed() {
  static const uint64_t seed = [] {
    const char* s = std::getenv("SEED");
    uint64_t v = s && *s ? std::strtoull(s, nullptr, 0)
                         : static_cast<uint64_t>(
                               std::chrono::system_clock::now().time_since_epoch().count()) %
                               1000000007ull;
    std::cout << "[durability] SEED=" << v << "  (replay: SEED=" << v << " ./test/<name> -tc='<case>')"
              << std::endl;
    return v;
  }();
  return seed;
}

inline long env_long(const char* name, long fallback) {
  const char* s = std::getenv(name);
  if (!s || !*s) return fallback;
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  return end && *end == 0 ? v : fallback;
}

// A generator per test case: the base seed mixed with the case's name, so each case replays
// alone with the same SEED.
class Rng {
 public:
  explicit Rng(std::string_view name) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
    gen_.seed(base_seed() ^ h);
  }
  uint64_t below(uint64_t n) { return n == 0 ? 0 : std::uniform_int_distribution<uint64_t>(0, n - 1)(gen_); }
  uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }  // inclusive
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(gen_) < p; }
  std::string word(size_t len) {
    static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string s(len, 'a');
    for (auto& c : s) c = kAlphabet[below(sizeof kAlphabet - 1)];
    return s;
  }
  std::string bytes(size_t len) {
    std::string s(len, '\0');
    for (auto& c : s) c = static_cast<char>(below(256));
    return s;
  }
  std::mt19937_64& gen() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

// ---------------------------------------------------------------------------------------------
// Files

// (read_file, write_file, append_file and file_size: support.hpp)

inline bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

inline std::string blob_path(const std::string& blobs, std::string_view hex) {
  return blobs + "/" + std::string(hex.substr(0, 2)) + "/" + std::string(hex.substr(2));
}

inline std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(dir, ec)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// Writes a blob file for `bytes` directly (as the server would name it); returns its hash.
inline std::string put_blob(const std::string& blobs, std::string_view bytes) {
  std::string hex = sha256_hex(bytes);
  std::filesystem::create_directories(blobs + "/" + hex.substr(0, 2));
  write_file(blob_path(blobs, hex), bytes);
  return hex;
}

// ---------------------------------------------------------------------------------------------
// The store as the files say, read without the server.

struct Snapshot {
  std::string blobs, leveldb;
  long long size = 0;               // of the index file
  std::vector<std::string> records; // whole records, 65 bytes each (record i at [i-1])
  std::vector<std::string> problems;  // record-level damage: "entry i: ..."
  std::unordered_map<std::string, std::string> blob_cache;  // hex -> bytes (verified)

  uint64_t head() const { return records.size(); }
  // The bytes of entry i (1-based), or nullopt when its record or blob is bad.
  std::optional<std::string> entry(uint64_t i) const {
    if (i < 1 || i > records.size()) return std::nullopt;
    auto it = blob_cache.find(records[i - 1].substr(0, 64));
    if (it == blob_cache.end()) return std::nullopt;
    return it->second;
  }
};

inline Snapshot read_store(const std::string& blobs, const std::string& leveldb) {
  Snapshot s;
  s.blobs = blobs;
  s.leveldb = leveldb;
  std::string index = read_file(leveldb + "/index");
  s.size = static_cast<long long>(index.size());
  for (size_t at = 0; at + kRecordSize <= index.size(); at += kRecordSize)
    s.records.push_back(index.substr(at, kRecordSize));
  std::set<std::string> bad_blobs;
  for (size_t i = 0; i < s.records.size(); i++) {
    const std::string& r = s.records[i];
    std::string where = "entry " + std::to_string(i + 1) + ": ";
    if (!valid_record(r)) {
      s.problems.push_back(where + "malformed record '" + harness::detail::tail(r, 70) + "'");
      continue;
    }
    std::string hex = r.substr(0, 64);
    if (s.blob_cache.count(hex)) continue;
    if (bad_blobs.count(hex)) {
      s.problems.push_back(where + "blob " + hex + " missing or bad (as above)");
      continue;
    }
    std::string path = blob_path(blobs, hex);
    if (!exists(path)) {
      s.problems.push_back(where + "blob " + hex + " missing");
      bad_blobs.insert(hex);
      continue;
    }
    std::string bytes = read_file(path);
    if (sha256_hex(bytes) != hex) {
      s.problems.push_back(where + "blob " + hex + " does not hash to its name");
      bad_blobs.insert(hex);
      continue;
    }
    s.blob_cache.emplace(hex, std::move(bytes));
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// What clients were promised, across rounds and restarts.

struct Promises {
  std::map<uint64_t, std::string> confirmed;  // index -> canonical bytes of the confirmed write
  std::map<std::string, uint64_t> confirmed_ids;  // id -> index
  std::map<uint64_t, std::string> seen;       // index -> bytes a reader was sent
  std::vector<std::string> violations;        // found while recording (shown by check_invariants)

  void confirm(const std::string& id, uint64_t index, const std::string& canonical) {
    if (confirmed_ids.count(id))
      violations.push_back("id " + id + " confirmed twice (" + std::to_string(confirmed_ids[id]) +
                           " and " + std::to_string(index) + ")");
    confirmed_ids[id] = index;
    auto [it, fresh] = confirmed.emplace(index, canonical);
    if (!fresh)
      violations.push_back("index " + std::to_string(index) + " confirmed twice: '" + it->second +
                           "' and (id " + id + ") '" + canonical + "'");
  }
  void saw(uint64_t index, const std::string& bytes) {
    auto [it, fresh] = seen.emplace(index, bytes);
    if (!fresh && it->second != bytes)
      violations.push_back("index " + std::to_string(index) + " sent to readers as '" + it->second +
                           "' and later as '" + bytes + "'");
  }
};

// Checks the invariants of issue 3 on the files: a whole number of records, indices 1..head
// each with a valid record whose blob exists and hashes to its name, every confirmed index and
// every reader-visible entry still there with exactly its bytes. `context` goes into messages.
// Returns the number of violations found (0 when all hold).
inline size_t check_invariants(const Snapshot& s, const Promises& p, const std::string& context) {
  INFO(context);
  for (const auto& v : p.violations) CHECK_MESSAGE(false, "while running: " << v);
  CHECK_MESSAGE(s.size % static_cast<long long>(kRecordSize) == 0,
                "index size " << s.size << " is not a whole number of records");
  size_t shown = 0;
  for (const auto& problem : s.problems)
    if (shown++ < 10) CHECK_MESSAGE(false, "damaged store: " << problem);
  CHECK_MESSAGE(s.problems.empty(), s.problems.size() << " damaged record(s)");
  size_t lost = 0, changed = 0;
  for (const auto& [index, bytes] : p.confirmed) {
    auto got = s.entry(index);
    if (index > s.head()) {
      if (lost++ < 10)
        CHECK_MESSAGE(false, "confirmed index " << index << " lost: head is " << s.head());
    } else if (!got || *got != bytes) {
      if (changed++ < 10)
        CHECK_MESSAGE(false, "confirmed index " << index << " holds '"
                                                << (got ? *got : std::string("<bad>"))
                                                << "', expected '" << bytes << "'");
    }
  }
  for (const auto& [index, bytes] : p.seen) {
    auto got = s.entry(index);
    if (index > s.head()) {
      if (lost++ < 20)
        CHECK_MESSAGE(false, "index " << index << " was sent to a reader but is gone: head is "
                                      << s.head());
    } else if (!got || *got != bytes) {
      if (changed++ < 20)
        CHECK_MESSAGE(false, "index " << index << " was sent to a reader as '" << bytes
                                      << "' but holds '" << (got ? *got : std::string("<bad>"))
                                      << "'");
    }
  }
  CHECK_MESSAGE(lost == 0, lost << " promised entries lost");
  CHECK_MESSAGE(changed == 0, changed << " promised entries changed");
  bool tmp_clean = list_dir(s.blobs + "/tmp").empty();
  CHECK_MESSAGE(tmp_clean, "temporary blob files left in " << s.blobs << "/tmp");
  return p.violations.size() + s.problems.size() + lost + changed + (tmp_clean ? 0 : 1) +
         (s.size % static_cast<long long>(kRecordSize) == 0 ? 0 : 1);
}

// ---------------------------------------------------------------------------------------------
// Raw non-blocking line connections (no assertions inside: safe while the server dies).

struct Net {
  int fd = -1;
  std::string in;
  size_t in_head = 0;
  std::string out;
  size_t out_sent = 0;
  bool eof = false;        // nothing more will arrive
  bool send_dead = false;  // the peer is gone for sending
  bool reset = false;      // the stream ended with a reset (ECONNRESET), not a FIN

  Net() = default;
  Net(const Net&) = delete;
  Net& operator=(const Net&) = delete;
  Net(Net&& o) noexcept { *this = std::move(o); }
  Net& operator=(Net&& o) noexcept {
    if (this != &o) {
      close();
      fd = std::exchange(o.fd, -1);
      in = std::move(o.in);
      in_head = o.in_head;
      out = std::move(o.out);
      out_sent = o.out_sent;
      eof = o.eof;
      send_dead = o.send_dead;
      reset = o.reset;
    }
    return *this;
  }
  ~Net() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  // Connects to 127.0.0.1:port; returns an error text, empty on success.
  // A non-zero `rcvbuf` makes a small receive buffer (a peer slow to take replies).
  std::string dial(int port, milliseconds timeout = milliseconds(3000), int rcvbuf = 0) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::strerror(errno);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      if (errno != EINPROGRESS) return std::strerror(errno);
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return "connect timed out";
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err) return std::strerror(err);
    }
    return {};
  }
  size_t unsent() const { return out.size() - out_sent; }
  // Sends what it can and reads what there is; never blocks.
  void pump() {
    if (fd < 0) return;
    while (!send_dead && unsent() > 0) {
      ssize_t n = ::send(fd, out.data() + out_sent, unsent(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        out_sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      send_dead = true;
    }
    if (out_sent == out.size()) {
      out.clear();
      out_sent = 0;
    }
    char buf[65536];
    while (!eof) {
      ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        in.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      eof = true;  // end of stream, or reset (queued data was read first)
      reset = n < 0 && errno == ECONNRESET;
      send_dead = true;
    }
  }
  std::optional<std::string> line() {
    size_t nl = in.find('\n', in_head);
    if (nl == std::string::npos) {
      if (in_head > 0 && in_head == in.size()) {
        in.clear();
        in_head = 0;
      }
      return std::nullopt;
    }
    std::string l = in.substr(in_head, nl - in_head);
    in_head = nl + 1;
    if (in_head > (1u << 20)) {
      in.erase(0, in_head);
      in_head = 0;
    }
    return l;
  }
};

// Waits until any of `nets` is readable (or writable with output pending), at most `ms`.
inline void wait_any(std::vector<Net*>& nets, int ms) {
  std::vector<pollfd> fds;
  for (Net* n : nets)
    if (n->fd >= 0 && !n->eof)
      fds.push_back({n->fd, static_cast<short>(POLLIN | (n->unsent() && !n->send_dead ? POLLOUT : 0)), 0});
  if (fds.empty()) {
    std::this_thread::sleep_for(milliseconds(ms));
    return;
  }
  ::poll(fds.data(), fds.size(), ms);
}

// The bytes of "entry" in a reader line {"index":N,"entry":BYTES}, if it is one.
inline std::optional<std::string> entry_of(const std::string& line) {
  static const std::string key = ",\"entry\":";
  if (line.rfind("{\"index\":", 0) != 0 || line.empty() || line.back() != '}') return std::nullopt;
  size_t at = line.find(key);
  if (at == std::string::npos) return std::nullopt;
  return line.substr(at + key.size(), line.size() - 1 - at - key.size());
}

// ---------------------------------------------------------------------------------------------
// Writes whose canonical form the test knows.

struct Write {
  std::string id;
  std::string line;       // as sent (keys unsorted, some whitespace)
  std::string canonical;  // as the server must store it
};

// Unique writes say who sent them: {"c":conn,"n":seq,"r":round,"w":pad}; duplicates are
// {"d":k}, shared by many writes, so that "same entry again" (blob exists) is exercised too.
inline Write unique_write(uint64_t round, int conn, uint64_t n, const std::string& pad) {
  Write w;
  w.id = "r" + std::to_string(round) + "c" + std::to_string(conn) + "-" + std::to_string(n);
  std::string c = std::to_string(conn), ns = std::to_string(n), r = std::to_string(round);
  w.line = "{\"entry\":{\"w\":\"" + pad + "\",\"r\":" + r + ", \"n\":" + ns + ",\"c\":" + c +
           "},\"id\":\"" + w.id + "\"}";
  w.canonical = "{\"c\":" + c + ",\"n\":" + ns + ",\"r\":" + r + ",\"w\":\"" + pad + "\"}";
  return w;
}
inline Write dup_write(const std::string& id, int k) {
  Write w;
  w.id = id;
  w.line = "{\"id\":\"" + id + "\", \"entry\": { \"d\" : " + std::to_string(k) + " } }";
  w.canonical = "{\"d\":" + std::to_string(k) + "}";
  return w;
}

// Who wrote each unique entry, to check that each connection's entries in the log are a prefix
// of what it sent, in order (a connection's writes take effect in the order it sent them).
struct Authors {
  std::unordered_map<std::string, std::pair<std::string, uint64_t>> by_canonical;  // -> (stream, seq)
  std::set<std::string> shared;  // canonical forms that many writes share (duplicates, probes)

  void add(const std::string& canonical, const std::string& stream, uint64_t seq) {
    by_canonical[canonical] = {stream, seq};
  }
  // Checks the log: every entry is a known write; unique ones appear once, per stream in order
  // 0,1,2,... with no gap.
  size_t check_log(const Snapshot& s, const std::string& context) const {
    INFO(context);
    std::map<std::string, uint64_t> next;  // stream -> next expected seq
    size_t reported = 0;
    for (uint64_t i = 1; i <= s.head(); i++) {
      auto bytes = s.entry(i);
      if (!bytes) continue;  // reported by check_invariants
      if (shared.count(*bytes)) continue;
      auto it = by_canonical.find(*bytes);
      if (it == by_canonical.end()) {
        if (++reported <= 10) CHECK_MESSAGE(false, "entry " << i << " is no write of this test: " << *bytes);
        continue;
      }
      auto& [stream, seq] = it->second;
      uint64_t& expected = next[stream];
      if (seq != expected && ++reported <= 10)
        CHECK_MESSAGE(false, "entry " << i << " is write " << seq << " of " << stream
                                      << " but the next of that connection should be " << expected
                                      << " (a write lost before a later one, or repeated)");
      expected = std::max(expected, seq + 1);
    }
    return reported;
  }
};

// ---------------------------------------------------------------------------------------------
// Load: writers pipelining and stream readers, in one thread, until told to stop.

struct LoadOptions {
  uint64_t round = 0;
  int writers = 4;
  int readers = 2;
  uint64_t from = 1;             // readers' {"from":N}
  uint64_t max_per_writer = 600;  // writes each connection sends at most
  size_t window = 128;            // unconfirmed writes a connection keeps in flight at most
  double dup_share = 0.1;
};

struct LoadResult {
  uint64_t sent = 0, confirmed = 0, errors = 0, reader_entries = 0;
  std::vector<std::string> first_errors;
  bool all_eof = false;
};

class Load {
 public:
  Load(int port, const LoadOptions& o, Promises* promises, Authors* authors, Rng* rng)
      : o_(o), p_(promises), authors_(authors), rng_(rng) {
    for (int r = 0; r < o.readers; r++) {
      Reader rd;
      std::string err = rd.net.dial(port);
      REQUIRE_MESSAGE(err.empty(), "reader connect: " << err);
      rd.next = o.from == 0 ? 1 : o.from;
      rd.net.out = "{\"from\":" + std::to_string(o.from) + "}\n";
      readers_.push_back(std::move(rd));
    }
    for (int c = 0; c < o.writers; c++) {
      Writer w;
      w.conn = c;
      std::string err = w.net.dial(port);
      REQUIRE_MESSAGE(err.empty(), "writer connect: " << err);
      writers_.push_back(std::move(w));
    }
  }

  // Drives the load for `step`; returns false once every connection has ended.
  bool step(milliseconds step) {
    auto until = Clock::now() + step;
    bool any_open = true;
    do {
      for (auto& w : writers_) feed(w);
      std::vector<Net*> nets;
      for (auto& w : writers_) nets.push_back(&w.net);
      for (auto& r : readers_) nets.push_back(&r.net);
      any_open = false;
      for (Net* n : nets) {
        n->pump();
        any_open = any_open || !n->eof;
      }
      for (auto& w : writers_) take_replies(w);
      for (auto& r : readers_) take_entries(r);
      if (!any_open) break;
      wait_any(nets, harness::detail::millis_left(until) > 0 ? 1 : 0);
    } while (Clock::now() < until);
    return any_open;
  }
  // Stops sending; reads what the server still sends until every connection ends (or timeout).
  void drain(milliseconds timeout) {
    stop_sending_ = true;
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline && step(milliseconds(5))) {
    }
    result_.all_eof = !step(milliseconds(0));
  }
  // After a graceful drain: every connection half-closed, then read to the end.
  void finish(milliseconds timeout) {
    stop_sending_ = true;
    for (auto& w : writers_) {
      while (w.net.unsent() && !w.net.send_dead) step(milliseconds(1));
      ::shutdown(w.net.fd, SHUT_WR);
    }
    drain(timeout);
  }
  bool idle() const {
    for (auto& w : writers_)
      if (!w.inflight.empty() || w.net.unsent()) return false;
    return true;
  }
  uint64_t confirmed() const { return result_.confirmed; }
  const LoadResult& result() const { return result_; }
  // Writes sent but neither confirmed nor refused (their fate is unknown to the client).
  std::vector<Write> unanswered() const {
    std::vector<Write> out;
    for (auto& w : writers_) out.insert(out.end(), w.inflight.begin(), w.inflight.end());
    return out;
  }
  const std::vector<Write>& refused() const { return refused_; }

 private:
  struct Writer {
    Net net;
    int conn = 0;
    uint64_t next = 0;    // writes sent
    uint64_t unique = 0;  // unique (non-duplicate) writes sent: their order in the log
    std::deque<Write> inflight;
  };
  struct Reader {
    Net net;
    uint64_t next = 1;
  };

  void feed(Writer& w) {
    if (stop_sending_ || w.net.send_dead || w.next >= o_.max_per_writer) return;
    if (w.inflight.size() >= o_.window || w.net.unsent() > 65536) return;
    size_t burst = static_cast<size_t>(rng_->range(1, 40));
    std::string stream = "r" + std::to_string(o_.round) + "c" + std::to_string(w.conn);
    for (size_t i = 0; i < burst && w.next < o_.max_per_writer && w.inflight.size() < o_.window; i++) {
      Write x;
      if (rng_->chance(o_.dup_share)) {
        x = dup_write(stream + "-" + std::to_string(w.next) + "d", static_cast<int>(rng_->below(16)));
        authors_->shared.insert(x.canonical);
      } else {
        size_t pad = rng_->chance(0.05) ? rng_->range(200, 3000) : rng_->range(0, 40);
        x = unique_write(o_.round, w.conn, w.next, rng_->word(pad));
        authors_->add(x.canonical, stream, w.unique++);
      }
      w.next++;
      w.net.out += x.line;
      w.net.out += '\n';
      w.inflight.push_back(std::move(x));
      result_.sent++;
    }
  }

  void take_replies(Writer& w) {
    while (auto line = w.net.line()) {
      auto id = harness::json_string_field(*line, "id");
      if (w.inflight.empty() || !id || *id != w.inflight.front().id) {
        p_->violations.push_back("writer " + std::to_string(w.conn) + " got '" + *line +
                                 "' while expecting a reply for " +
                                 (w.inflight.empty() ? std::string("nothing") : w.inflight.front().id));
        continue;
      }
      Write x = std::move(w.inflight.front());
      w.inflight.pop_front();
      auto index = harness::json_int_field(*line, "index");
      if (index && line->find("\"error\"") == std::string::npos) {
        p_->confirm(x.id, static_cast<uint64_t>(*index), x.canonical);
        result_.confirmed++;
      } else {
        result_.errors++;
        if (result_.first_errors.size() < 5) result_.first_errors.push_back(*line);
        refused_.push_back(std::move(x));
      }
    }
  }

  void take_entries(Reader& r) {
    while (auto line = r.net.line()) {
      if (*line == "{\"current\":true}") continue;
      auto index = harness::json_int_field(*line, "index");
      auto bytes = entry_of(*line);
      if (!index || !bytes) {
        p_->violations.push_back("reader got '" + harness::detail::tail(*line, 200) + "'");
        continue;
      }
      if (static_cast<uint64_t>(*index) != r.next)
        p_->violations.push_back("reader expected index " + std::to_string(r.next) + ", got " +
                                 std::to_string(*index));
      r.next = static_cast<uint64_t>(*index) + 1;
      p_->saw(static_cast<uint64_t>(*index), *bytes);
      result_.reader_entries++;
    }
  }

  LoadOptions o_;
  Promises* p_;
  Authors* authors_;
  Rng* rng_;
  std::vector<Writer> writers_;
  std::vector<Reader> readers_;
  std::vector<Write> refused_;
  LoadResult result_;
  bool stop_sending_ = false;
};

// ---------------------------------------------------------------------------------------------
// Protocol helpers on a running server (harness::Client, assertions allowed).

// Writes one entry and returns the index it got (fails the test on an error reply).
inline uint64_t write_one(int port, const std::string& id, const std::string& entry_json) {
  harness::Client c(port);
  c.send_line("{\"id\":\"" + id + "\",\"entry\":" + entry_json + "}");
  std::string reply = c.read_line();
  auto index = harness::json_int_field(reply, "index");
  REQUIRE_MESSAGE((index && reply.find("\"error\"") == std::string::npos),
                  "write " << id << " got: " << reply);
  return static_cast<uint64_t>(*index);
}

// Reads the whole log with {"from":1} up to {"current":true}: index -> line.
inline std::vector<std::string> read_all(int port, milliseconds timeout = milliseconds(20000)) {
  harness::Client c(port);
  c.send_line("{\"from\":1}");
  std::vector<std::string> lines;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    std::string line = c.read_line(milliseconds(harness::detail::millis_left(deadline) + 1));
    if (line == "{\"current\":true}") return lines;
    lines.push_back(line);
  }
}

// Log lines of `level` containing `needle`.
inline std::vector<std::string> lines_with(const std::vector<std::string>& lines, int level,
                                           std::string_view needle) {
  std::vector<std::string> out;
  for (const auto& l : lines)
    if (at_level(l, level) && l.find(needle) != std::string::npos) out.push_back(l);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The server under a wrapper (strace ...) or with extra environment, for fault injection.

inline std::string find_program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  for (;;) {
    size_t colon = dirs.find(':', start);
    std::string dir = dirs.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string::npos) return {};
    start = colon + 1;
  }
}

class Wrapped {
 public:
  // `wrapper`: argv before the server binary (e.g. {"/usr/bin/strace", "-f", ...}); may be empty.
  Wrapped(std::string dir, std::vector<std::string> wrapper, harness::detail::EnvOverrides env)
      : dir_(std::move(dir)), wrapper_(std::move(wrapper)), env_(std::move(env)) {
    int serial = harness::detail::next_serial();
    out_ = dir_ + "/wrapped-" + std::to_string(serial) + ".stdout";
    err_ = dir_ + "/wrapped-" + std::to_string(serial) + ".stderr";
  }
  ~Wrapped() {
    if (child_ > 0) {
      if (server_pid_ > 0 && server_pid_ != child_) ::kill(server_pid_, SIGKILL);
      ::kill(child_, SIGKILL);
      ::waitpid(child_, nullptr, 0);
    }
  }
  Wrapped(const Wrapped&) = delete;
  Wrapped& operator=(const Wrapped&) = delete;

  // Starts; returns true once "listening" is logged (port and server pid known), false if the
  // process exited first (exit_status() says how) or `timeout` passed.
  bool start(milliseconds timeout = milliseconds(15000)) {
    launch();
    return wait_listening(timeout);
  }
  // Spawns without waiting.
  void launch() {
    std::string binary = harness::detail::server_binary();
    std::vector<std::string> args;
    std::string exe = binary;
    if (!wrapper_.empty()) {
      exe = wrapper_[0];
      args.assign(wrapper_.begin() + 1, wrapper_.end());
      args.push_back(binary);
    }
    harness::detail::EnvOverrides all = env_;
    started_ = Clock::now();
    child_ = harness::detail::spawn(exe, args, harness::detail::build_environment(all), dir_, out_, err_);
  }
  bool wait_listening(milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      for (const auto& line : harness::detail::complete_lines(read_file(out_))) {
        if (line.find("\"msg\":\"listening\"") == std::string::npos) continue;
        auto port = harness::json_int_field(line, "port");
        auto pid = harness::json_int_field(line, "pid");
        if (port && pid) {
          port_ = static_cast<int>(*port);
          server_pid_ = static_cast<pid_t>(*pid);
          listening_after_ = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started_);
          return true;
        }
      }
      if (!running()) return false;
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }
  bool running() {
    if (child_ <= 0) return false;
    int status = 0;
    if (::waitpid(child_, &status, WNOHANG) == child_) {
      child_ = -1;
      status_ = harness::detail::shell_status(status);
      return false;
    }
    return true;
  }
  // Signals the process started here (the server itself when there is no wrapper).
  void signal_child(int sig) {
    if (running()) ::kill(child_, sig);
  }
  // Signals the server itself (not the wrapper), while the wrapper still runs.
  void signal_server(int sig) {
    if (running() && server_pid_ > 0) ::kill(server_pid_, sig);
  }
  // Waits for the wrapper (and so the server) to exit; its status, or nullopt on timeout.
  std::optional<int> wait(milliseconds timeout) {
    if (child_ <= 0) return status_;
    auto s = harness::detail::wait_for_exit(child_, Clock::now() + timeout);
    if (!s) return std::nullopt;
    child_ = -1;
    status_ = harness::detail::shell_status(*s);
    return status_;
  }
  int port() const { return port_; }
  pid_t server_pid() const { return server_pid_; }
  std::optional<int> exit_status() const { return status_; }
  std::chrono::microseconds listening_after() const { return listening_after_; }
  std::string out() const { return read_file(out_); }
  std::string err() const { return read_file(err_); }
  std::vector<std::string> log_lines() const { return harness::detail::complete_lines(out()); }

 private:
  std::string dir_, out_, err_;
  std::vector<std::string> wrapper_;
  harness::detail::EnvOverrides env_;
  pid_t child_ = -1;
  pid_t server_pid_ = -1;
  int port_ = 0;
  std::optional<int> status_;
  Clock::time_point started_;
  std::chrono::microseconds listening_after_{0};
};

}  // namespace dur
