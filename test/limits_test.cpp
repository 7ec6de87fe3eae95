// End-to-end tests of what clients can cost the server, and of fairness between them (issues 7
// and 8): the real ./tcp-log-server on PORT=0 in a temporary directory, over loopback. Memory is
// read from /proc with bounds far from both the figures measured and the faults they catch, so
// that no test here depends on timing or on a quiet machine.
#include <doctest/doctest.h>

#include "test/durability_harness.hpp"
#include "test/harness.hpp"

#include <netinet/tcp.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace harness;
using namespace std::chrono_literals;

namespace {

// Resident memory of a process, in KiB.
long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  FAIL("no VmRSS for pid " << pid);
  return 0;
}

// Descriptors a process has open.
size_t open_fds(pid_t pid) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    (void)e;
    n++;
  }
  return n;
}

// Waits (at most 10 s) until the server has at most `fds` descriptors open, i.e. has closed
// the connections a test just closed, then for a housekeeping tick (which gives memory back).
void settle(pid_t pid, size_t fds) {
  auto deadline = Clock::now() + 10s;
  while (open_fds(pid) > fds && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  CHECK(open_fds(pid) <= fds);
  std::this_thread::sleep_for(1500ms);
}

// Reads lines until {"current":true}; returns how many lines came before it.
size_t read_to_current(Client& c) {
  size_t n = 0;
  for (;;) {
    std::string line = c.read_line(20s);
    if (line == kCurrent || c.failed()) return n;
    n++;
  }
}

// `count` writes of about `size` bytes each in one send, then their confirmations.
void fill_log(Client& c, int count, size_t size, const std::string& id_prefix) {
  std::string batch;
  for (int i = 0; i < count; i++)
    batch += write_msg(id_prefix + std::to_string(i),
                       R"({"pad":")" + std::string(size, 'p') + R"(","i":)" + std::to_string(i) + "}") +
             "\n";
  c.send(batch, 30s);
  std::vector<std::string> lines = c.read_lines(static_cast<size_t>(count), 60s);
  CHECK(lines.back().find("\"id\":\"" + id_prefix + std::to_string(count - 1) + "\"") != std::string::npos);
}

// The server-side socket of a connection from local port `client_port`, as /proc/net/tcp (or
// tcp6: a dual-stack listener's connections are IPv6 sockets) sees it: the bytes the server has
// queued for it that the client has not acknowledged.
std::optional<long> server_send_queue(int server_port, int client_port) {
  std::string text = read_file("/proc/net/tcp") + read_file("/proc/net/tcp6");
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("local_address") != std::string::npos) continue;  // a header
    std::istringstream fields(line);
    std::string slot, local, remote, state, queues;
    fields >> slot >> local >> remote >> state >> queues;
    auto port_of = [](const std::string& address) {
      return std::stoi(address.substr(address.find(':') + 1), nullptr, 16);
    };
    if (port_of(local) != server_port || port_of(remote) != client_port) continue;
    return std::stol(queues.substr(0, queues.find(':')), nullptr, 16);
  }
  return std::nullopt;
}

int local_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  return ntohs(a.sin_port);
}


// The descriptors a process's epoll sets watch: the "tfd:" lines of /proc/PID/fdinfo of each
// of its epoll descriptors.
size_t epoll_watched(pid_t pid) {
  size_t n = 0;
  const std::string fds = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& e : std::filesystem::directory_iterator(fds)) {
    std::error_code ec;
    if (std::filesystem::read_symlink(e.path(), ec).string() != "anon_inode:[eventpoll]") continue;
    std::ifstream in("/proc/" + std::to_string(pid) + "/fdinfo/" + e.path().filename().string());
    for (std::string line; std::getline(in, line);) n += line.rfind("tfd:", 0) == 0;
  }
  return n;
}

// Waits (at most 10 s) until the process's epoll sets watch `want` descriptors; returns how many.
size_t wait_epoll_watched(pid_t pid, size_t want) {
  size_t n = 0;
  for (auto deadline = Clock::now() + 10s; Clock::now() < deadline; std::this_thread::sleep_for(20ms))
    if ((n = epoll_watched(pid)) == want) break;
  return n;
}

}  // namespace

// ===== Memory ===================================================================================

TEST_CASE("memory: 2,000 connections that each wrote once and hold a stream read, 200 of them after reading a 1 MB log, cost a few hundred bytes each; closing them gives it back") {
  Fresh s({{"SYNC", "none"}});
  const pid_t pid = s.server.pid();
  const size_t idle_fds = open_fds(pid);
  {
    Client w = s.connect();
    fill_log(w, 4000, 230, "f");
  }
  settle(pid, idle_fds);
  const long before = rss_kib(pid);
  constexpr int kConnections = 2000, kReaders = 200;
  std::vector<Client> clients;
  clients.reserve(kConnections);
  for (int i = 0; i < kConnections; i++) clients.emplace_back(s.server.port());
  for (int i = 0; i < kConnections; i++) clients[i].send_line(write_msg("c" + std::to_string(i), "[]"));
  long long head = 0;
  for (auto& c : clients) {
    std::string line = c.read_line();
    head = std::max(head, json_int_field(line, "index").value_or(0));
  }
  REQUIRE(head == 4000 + kConnections);
  for (int i = 0; i < kConnections; i++) clients[i].send_line(read_from(i < kReaders ? 1 : head + 1));
  for (int i = 0; i < kConnections; i++) {
    CAPTURE(i);
    REQUIRE(read_to_current(clients[i]) == static_cast<size_t>(i < kReaders ? head : 0));
  }
  std::this_thread::sleep_for(300ms);
  const long after = rss_kib(pid);
  const long per_connection = (after - before) * 1024 / kConnections;
  MESSAGE("server memory: " << before << " KiB before, " << after << " KiB with " << kConnections
                            << " connections: " << per_connection << " bytes each");
  // A 64 KiB input buffer kept per connection (or the 256 KiB output buffers of the readers)
  // would be far above this; the figure measured is a few hundred bytes.
  CHECK(per_connection < 8192);
  clients.clear();
  settle(pid, idle_fds);
  const long closed = rss_kib(pid);
  MESSAGE("server memory after all closed: " << closed << " KiB (before: " << before << " KiB)");
  CHECK(closed <= before + before / 10);
}

TEST_CASE("memory: a stalled reader's kernel send queue is bounded by TCP_NOTSENT_LOWAT, not auto-tuned to megabytes") {
  Fresh s({{"SYNC", "none"}});
  {
    Client w = s.connect();
    fill_log(w, 12000, 1000, "f");  // 12 MB, far more than any buffer
  }
  dur::Net reader;
  // A receive buffer of 1 MiB (2 MiB of window): enough for the server's congestion window, and
  // so its send buffer, to grow as it would towards a real reader; far less than the log.
  REQUIRE(reader.dial(s.server.port(), 3000ms, 1024 * 1024).empty());
  reader.out = read_from(1) + "\n";
  reader.pump();  // sends the read, and never reads
  const int client_port = local_port(reader.fd);
  // Wait until the server has stopped sending: its queue for this reader no longer grows.
  long queued = -1;
  int stable = 0;
  for (auto deadline = Clock::now() + 10s; Clock::now() < deadline && stable < 10;) {
    std::this_thread::sleep_for(100ms);
    long now = server_send_queue(s.server.port(), client_port).value_or(-1);
    stable = now == queued ? stable + 1 : 0;
    queued = now;
  }
  MESSAGE("the server's send queue for a stalled reader: " << queued << " bytes");
  CHECK(queued > 0);
  // Auto-tuning lets it reach 4 MiB (tcp_wmem's maximum here); the low-water mark keeps it at
  // about 128 KiB plus what was in flight.
  CHECK(queued < 1024 * 1024);
}

// ===== Limits ===================================================================================

TEST_CASE("MAX_CONNECTIONS: a connection past the limit gets too many connections and is closed, with a warn line; a freed place is taken again") {
  Fresh s({{"MAX_CONNECTIONS", "3"}});
  std::vector<Client> clients;
  for (int i = 0; i < 3; i++) {
    clients.emplace_back(s.server.port());
    write_ok(clients.back(), "c" + std::to_string(i), numbered(i), i + 1);
  }
  Client over = s.connect();
  CHECK(over.read_line() == R"({"error":"too many connections"})");
  over.expect_eof();
  auto warned = s.server.wait_for_log("\"event\":\"refused\"");
  REQUIRE(warned.size() == 1);
  CHECK(warned[0].find("\"level\":40") != std::string::npos);
  CHECK(json_int_field(warned[0], "refused") == 1);
  CHECK(json_int_field(warned[0], "max_connections") == 3);
  // The three are still served.
  for (int i = 0; i < 3; i++) write_ok(clients[i], "again" + std::to_string(i), numbered(10 + i), 4 + i);
  clients.pop_back();
  s.server.wait_for_log("\"event\":\"close\"");
  Client next = s.connect();
  write_ok(next, "next", numbered(20), 7);
}

TEST_CASE("MAX_INPUT_BYTES: past the total, the oldest unfinished lines are refused and closed; the others go on") {
  Fresh s({{"MAX_MESSAGE_BYTES", "1000"}, {"MAX_INPUT_BYTES", "4000"}, {"LINE_TIMEOUT", "0"}});
  constexpr int kSenders = 8;
  const std::string line = write_msg("slow", R"({"p":")" + std::string(880, 'x') + R"("})");
  REQUIRE(line.size() > 900);
  std::vector<Client> senders;
  for (int i = 0; i < kSenders; i++) {
    senders.emplace_back(s.server.port());
    senders.back().send(line.substr(0, 900));  // unfinished: no newline
    // One at a time, so that their lines are ordered by age (the server's clock is in ms).
    std::this_thread::sleep_for(30ms);
  }
  // 8 x 900 bytes is more than 4,000: the four oldest go, which leaves 3,600.
  for (int i = 0; i < kSenders; i++) {
    CAPTURE(i);
    if (i < 4) {
      CHECK(senders[i].read_line() == R"({"error":"server input buffers full"})");
      senders[i].expect_eof();
    } else {
      senders[i].expect_silence(100ms);
    }
  }
  CHECK(s.server.wait_for_log("\"event\":\"evicted\"", 4).size() == 4);
  for (int i = 4; i < kSenders; i++) {
    senders[i].send(line.substr(900) + "\n");
    std::string reply = senders[i].read_line();
    CHECK(reply.find("\"index\":") != std::string::npos);
  }
}

TEST_CASE("LINE_TIMEOUT: a line not finished in time gets message timeout, after the earlier writes are confirmed; idle connections are left alone") {
  Fresh s({{"LINE_TIMEOUT", "1"}});
  Client idle = s.connect();
  Client slow = s.connect();
  slow.send(write_msg("done", numbered(1)) + "\n" + R"({"id":"never","ent)");
  CHECK(slow.read_line() == confirmation("done", 1));
  // One to two seconds later (the deadline is checked once a second).
  CHECK(slow.read_line(5s) == R"({"error":"message timeout"})");
  slow.expect_eof();
  write_ok(idle, "idle", numbered(2), 2);
}

TEST_CASE("a stdout pipe that nobody reads stops neither confirmations nor SIGTERM; dropped log lines are counted once it drains") {
  TempDir dir;
  ServerProcess server(dir.path());
  server.env("LOG_LEVEL", "debug").env("SYNC", "none").stdout_to_pipe();
  server.start();
  // Each message is a debug line of about 200 bytes: 12,000 of them are far more than the
  // pipe (64 KiB) and the server's log buffer (1 MiB) together.
  Client c(server.port());
  constexpr int kWrites = 12000;
  std::string batch;
  for (int i = 0; i < kWrites; i++) batch += write_msg("w" + std::to_string(i), numbered(i)) + "\n";
  c.send(batch, 30s);
  std::vector<std::string> replies = c.read_lines(kWrites, 30s);
  CHECK(replies.back() == confirmation("w" + std::to_string(kWrites - 1), kWrites));
  // Once the pipe is read again, the server says how many lines it dropped.
  std::vector<std::string> dropped;
  for (auto deadline = Clock::now() + 10s; dropped.empty() && Clock::now() < deadline;) {
    server.read_stdout_pipe();
    for (const auto& l : server.log_lines())
      if (l.find("\"event\":\"log-dropped\"") != std::string::npos) dropped.push_back(l);
    std::this_thread::sleep_for(10ms);
  }
  REQUIRE(dropped.size() == 1);
  CHECK(json_int_field(dropped[0], "dropped").value_or(0) > 1000);
  // Stop reading again, fill the pipe, and stop the server: it must not wait on stdout.
  batch.clear();
  for (int i = 0; i < 2000; i++) batch += write_msg("x" + std::to_string(i), numbered(i)) + "\n";
  c.send(batch, 30s);
  CHECK(c.read_lines(2000, 30s).back() == confirmation("x1999", kWrites + 2000));
  CHECK(server.stop_term(10s) == 0);
}

// ===== Fairness =================================================================================

namespace {

// A store of `entries` entries {"n":i}, written by a server that is then stopped, so that the
// next server reads every entry from its blob file (one descriptor each).
void write_store(const std::string& dir, int entries) {
  ServerProcess first(dir);
  first.start();
  Client w(first.port());
  for (int i = 1; i <= entries; i++) write_ok(w, "e" + std::to_string(i), numbered(i), i);
  CHECK(first.stop_term() == 0);
}

// Connects idle clients until `server` logs that it cannot accept: every descriptor it has is
// then taken. Returns them.
std::vector<Client> take_every_descriptor(ServerProcess& server, size_t already_connected) {
  std::vector<Client> idle;
  bool full = false;
  for (int i = 0; i < 60 && !full; i++) {
    idle.emplace_back(server.port());
    for (auto deadline = Clock::now() + 5s; Clock::now() < deadline;) {
      size_t connected = 0;
      for (const auto& l : server.log_lines()) {
        full = full || l.find("cannot accept connection") != std::string::npos;
        connected += l.find("\"event\":\"connected\"") != std::string::npos;
      }
      if (full || connected == idle.size() + already_connected) break;
      std::this_thread::sleep_for(5ms);
    }
  }
  REQUIRE_MESSAGE(full, "the server never ran out of descriptors");
  return idle;
}

}  // namespace

TEST_CASE("a reader at the descriptor limit gets its entries once descriptors are free again, never an error in an intact entry's place") {
  TempDir dir;
  constexpr int kEntries = 20;
  write_store(dir.path(), kEntries);
  ServerProcess server(dir.path());
  server.env("MAX_CONNECTIONS", "1000").nofile(48);
  server.start();
  Client reader(server.port());
  std::vector<Client> idle = take_every_descriptor(server, 1);
  reader.send_line(read_from(1));
  auto retry = server.wait_for_log("\"event\":\"read-retry\"");
  REQUIRE(retry.size() == 1);
  CHECK(retry[0].find("Too many open files") != std::string::npos);
  reader.expect_silence(300ms);  // no error sent in an entry's place
  idle.clear();                  // descriptors come free
  std::vector<std::string> lines = reader.read_lines(kEntries + 1, 10s);
  for (int i = 1; i <= kEntries; i++) CHECK(lines[i - 1] == entry_line(i, numbered(i)));
  CHECK(lines[kEntries] == kCurrent);
  CHECK(server.wait_for_log("\"event\":\"read-resumed\"").size() == 1);
}

TEST_CASE("READ_RETRY_SECONDS: a reader whose entry stays unreadable gets an error naming the entry, then the connection closes") {
  TempDir dir;
  write_store(dir.path(), 3);
  ServerProcess server(dir.path());
  server.env("MAX_CONNECTIONS", "1000").env("READ_RETRY_SECONDS", "1").nofile(48);
  server.start();
  Client reader(server.port());
  std::vector<Client> idle = take_every_descriptor(server, 1);
  reader.send_line(read_from(1));
  std::string error = reader.read_line(10s);  // one to two seconds of retrying
  CHECK(error.rfind(R"({"error":"cannot read entry 1: cannot open blob )", 0) == 0);
  CHECK(error.find("Too many open files") != std::string::npos);
  reader.expect_eof();
  CHECK(server.wait_for_log("\"event\":\"read-failed\"").size() == 1);
}

TEST_CASE("quiet connections are parked out of the poll set (poll() gets a handful of descriptors, not 300), and a parked connection still gets its writes, entries, half-close and close") {
  std::string strace = dur::find_program("strace");
  REQUIRE_MESSAGE(!strace.empty(), "strace is needed (make check-deps installs it)");
  Fresh s({{"SYNC", "none"}});
  const pid_t pid = s.server.pid();
  constexpr int kConnections = 300, kReaders = 100;
  std::vector<Client> clients;
  clients.reserve(kConnections);
  for (int i = 0; i < kConnections; i++) clients.emplace_back(s.server.port());
  for (int i = 0; i < kConnections; i++) write_ok(clients[i], "c" + std::to_string(i), "[]", i + 1);
  // The first kReaders hold a stream read from the head on.
  for (int i = 0; i < kReaders; i++) {
    clients[i].send_line(read_from(kConnections + 1));
    REQUIRE(clients[i].read_line() == kCurrent);
  }
  // Quiet for a while, every one of them is parked.
  REQUIRE(wait_epoll_watched(pid, kConnections) == kConnections);

  // One poll() of the loop while they are parked: its set holds the fixed slots and the
  // listeners, and -1 in the place of each parked connection. strace attaches, and a new
  // connection gets the loop going (a message that is no write, so the log stays as it is);
  // tried again if strace saw no whole poll() (it may still have been setting up).
  TempDir trace_dir;
  const std::string trace = trace_dir / "poll.trace";
  auto traced = [&] {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);)
      if (line.rfind("TracerPid:", 0) == 0) return std::stol(line.substr(10)) != 0;
    return false;
  };
  std::vector<std::string> calls;
  for (int attempt = 0; attempt < 5 && calls.empty(); attempt++) {
    pid_t tracer = ::fork();
    if (tracer == 0) {
      // The trace to stderr, which strace does not buffer: it is whole once strace has detached.
      const std::string p = std::to_string(pid);
      const int out = ::open(trace.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (out < 0 || ::dup2(out, 2) < 0) ::_exit(126);
      ::execl(strace.c_str(), "strace", "-qq", "-s", "65536", "-e", "trace=poll", "-p", p.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    REQUIRE(tracer > 0);
    for (auto deadline = Clock::now() + 10s; !traced() && Clock::now() < deadline;) std::this_thread::sleep_for(10ms);
    std::this_thread::sleep_for(100ms);
    {
      Client ping(s.server.port());
      ping.send_line("{}");
      CHECK(ping.read_line().find("\"error\"") != std::string::npos);
    }
    std::this_thread::sleep_for(100ms);
    ::kill(tracer, SIGINT);
    CHECK(detail::wait_for_exit(tracer, Clock::now() + 10s).has_value());
    for (auto deadline = Clock::now() + 10s; traced() && Clock::now() < deadline;) std::this_thread::sleep_for(10ms);
    for (const std::string& l : detail::complete_lines(read_file(trace)))
      if (l.rfind("poll([", 0) == 0) calls.push_back(l);
  }
  REQUIRE(!calls.empty());
  // The set passed in: up to the first ']' (the revents after " = " name ready ones only).
  const std::string set = calls.front().substr(0, calls.front().find(']'));
  size_t slots = 0, skipped = 0;
  for (size_t at = set.find("{fd="); at != std::string::npos; at = set.find("{fd=", at + 1)) {
    slots++;
    skipped += set.compare(at, 6, "{fd=-1") == 0;
  }
  MESSAGE("one poll() with " << kConnections << " parked connections: " << slots << " slots, "
                             << slots - skipped << " descriptors polled");
  CHECK(slots >= static_cast<size_t>(kConnections));
  CHECK(slots - skipped < 20);

  // A write from a parked connection: confirmed, and every parked stream reader gets it.
  REQUIRE(wait_epoll_watched(pid, kConnections) == kConnections);
  write_ok(clients[150], "parked-write", "{\"n\":1}", kConnections + 1);
  for (int i = 0; i < kReaders; i++) {
    CAPTURE(i);
    CHECK(clients[i].read_line() == entry_line(kConnections + 1, "{\"n\":1}"));
  }

  // Closed while parked: the server lets it go (and the epoll set with it).
  REQUIRE(wait_epoll_watched(pid, kConnections) == kConnections);
  const size_t fds = open_fds(pid);
  clients[250] = Client(s.server.port());  // the old one closes; a new one takes its place
  clients[251].close();
  auto deadline = Clock::now() + 10s;
  while (open_fds(pid) != fds - 1 && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  CHECK(open_fds(pid) == fds - 1);
  CHECK(wait_epoll_watched(pid, kConnections - 1) == kConnections - 1);
  // Parked, a connection sends a write and half-closes: its confirmation, then the end.
  clients[200].send_line(write_msg("half", "{\"n\":2}"));
  clients[200].shutdown_write();
  CHECK(clients[200].read_line() == confirmation("half", kConnections + 2));
  clients[200].expect_eof();
  // And every reader still reads on.
  write_ok(clients[250], "after", "{\"n\":3}", kConnections + 3);
  for (int i = 0; i < kReaders; i++) {
    CAPTURE(i);
    CHECK(clients[i].read_line() == entry_line(kConnections + 2, "{\"n\":2}"));
    CHECK(clients[i].read_line() == entry_line(kConnections + 3, "{\"n\":3}"));
  }
}

TEST_CASE("readers catching up from disk do not hold a writer's line: little reader work between its arrival and its confirmation (counted in a syscall trace)") {
  std::string strace = dur::find_program("strace");
  REQUIRE_MESSAGE(!strace.empty(), "strace is needed (make check-deps installs it)");
  TempDir dir;
  constexpr int kEntries = 20000, kReaders = 8, kWrites = 10;
  {
    ServerProcess first(dir.path());
    first.env("SYNC", "none").start();
    Client w(first.port());
    fill_log(w, kEntries, 100, "f");
    CHECK(first.stop_term() == 0);
  }
  // Restarted under strace: every entry comes from its blob, and every blob read is an openat.
  const std::string trace = dir / "fair.trace";
  dur::Wrapped s(dir.path(),
                 {strace, "-f", "-qq", "--seccomp-bpf", "-s", "40", "-o", trace, "-e",
                  "trace=poll,recvfrom,sendto,openat"},
                 {{"PORT", "0"}, {"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"}, {"SYNC", "none"}});
  REQUIRE(s.start());
  std::vector<dur::Net> readers(kReaders);
  std::vector<dur::Net*> all;
  for (auto& r : readers) {
    REQUIRE(r.dial(s.port()).empty());
    r.out = read_from(1) + "\n";
    all.push_back(&r);
  }
  dur::Net writer;
  REQUIRE(writer.dial(s.port()).empty());
  all.push_back(&writer);
  auto pump_until = [&](auto done, milliseconds limit) {
    for (auto deadline = Clock::now() + limit; Clock::now() < deadline;) {
      if (done()) return true;
      dur::wait_any(all, 20);
      for (dur::Net* n : all) n->pump();
    }
    return false;
  };
  // Let the readers get going, then write one entry at a time while they catch up.
  size_t reader_lines = 0;
  auto count_reader_lines = [&] {
    for (auto& r : readers)
      while (auto l = r.line()) reader_lines++;
  };
  pump_until([&] { count_reader_lines(); return reader_lines > 2000; }, 30s);
  int confirmed = 0;
  for (int i = 0; i < kWrites; i++) {
    writer.out += write_msg("probe" + std::to_string(i), numbered(i)) + "\n";
    bool got = pump_until([&] {
      count_reader_lines();
      auto l = writer.line();
      return l && l->find("\"index\":") != std::string::npos;
    }, 30s);
    CHECK(got);
    confirmed += got;
    std::this_thread::sleep_for(20ms);
  }
  // The readers were still catching up when the last write was confirmed.
  CHECK(reader_lines < static_cast<size_t>(kReaders) * kEntries);
  s.signal_server(SIGTERM);
  CHECK(s.wait(20s) == 0);
  // For each probe: from the recvfrom() that brought its line to the sendto() of its
  // confirmation, count the passes (poll calls) and the blob reads done for readers.
  std::vector<std::string> lines = detail::complete_lines(read_file(trace));
  int probes = 0;
  for (int i = 0; i < kWrites; i++) {
    const std::string id = "\\\"probe" + std::to_string(i) + "\\\"";
    size_t start = 0;
    while (start < lines.size() && !(lines[start].find("recvfrom(") != std::string::npos &&
                                     lines[start].find(id) != std::string::npos))
      start++;
    if (start == lines.size()) continue;
    size_t polls = 0, opens = 0, end = start + 1;
    for (; end < lines.size(); end++) {
      const std::string& l = lines[end];
      if (l.find("sendto(") != std::string::npos && l.find(id) != std::string::npos) break;
      if (l.find("poll(") != std::string::npos) polls++;
      if (l.find("openat(") != std::string::npos) opens++;
    }
    if (end == lines.size()) continue;
    probes++;
    CAPTURE(i);
    // One pass reads the line, commits it and confirms it; the readers' budget for that pass is
    // about 240 blob reads. Without a budget a pass refills every reader up to its mark: over
    // a thousand reads each.
    CHECK(polls <= 2);
    CHECK(opens <= 2 * 250);
  }
  CHECK(probes == confirmed);
  CHECK(probes >= kWrites / 2);
}
