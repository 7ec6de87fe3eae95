// The machinery of test/metrics_test.cpp: HTTP over loopback and the samples of a scrape, the
// real promtool, a server with the monitoring listener, a writer timed one write at a time, a
// raw connection for hostile scrapers, and the server's checkpoint thread for strace to attach to.
// Header-only, for doctest tests; every wait is bounded.
#pragma once

#include <doctest/doctest.h>

#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "test/durability_harness.hpp"
#include "test/harness.hpp"
#include "test/support.hpp"

namespace metrics_harness {

using namespace harness;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// HTTP over loopback

struct Http {
  int status = 0;     // 0: no response
  std::string head;   // status line and headers
  std::string body;
  bool closed = false;  // the server ended the connection after it
};

inline Http parse_http(std::string_view all) {
  Http r;
  const size_t end = all.find("\r\n\r\n");
  if (all.rfind("HTTP/1.1 ", 0) == 0 && end != std::string_view::npos) {
    r.status = std::atoi(std::string(all.substr(9, 3)).c_str());
    r.head = std::string(all.substr(0, end + 2));
    r.body = std::string(all.substr(end + 4));
  }
  return r;
}

// Sends `request` and reads the response up to the end of the connection.
inline Http http(int port, const std::string& request, milliseconds timeout = kWait) {
  Client c(port);
  c.send(request);
  const bool closed = c.wait_eof(timeout);
  Http r = parse_http(c.pending());
  r.closed = closed;
  return r;
}

inline Http get(int port, const std::string& path) {
  return http(port, "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n");
}

inline std::string header(const Http& r, const std::string& name) {
  const std::string key = "\r\n" + name + ": ";
  const size_t at = r.head.find(key);
  if (at == std::string::npos) return "";
  const size_t start = at + key.size();
  return r.head.substr(start, r.head.find("\r\n", start) - start);
}

// The monitoring port from the listening line ("metrics":"127.0.0.1:N").
inline int metrics_port_in(const std::string& listening) {
  auto address = json_string_field(listening, "metrics");
  REQUIRE_MESSAGE(address, "no metrics in the listening line: " << listening);
  return std::atoi(address->substr(address->rfind(':') + 1).c_str());
}
inline int metrics_port_of(const ServerProcess& server) {
  auto lines = server.wait_for_log(R"("msg":"listening")");
  REQUIRE(lines.size() >= 1);
  return metrics_port_in(lines[0]);
}
// The same for a server under a wrapper (started: its listening line is logged).
inline int metrics_port_of(const dur::Wrapped& server) {
  std::string listening;
  for (const std::string& line : server.log_lines())
    if (line.find(R"("msg":"listening")") != std::string::npos) listening = line;
  return metrics_port_in(listening);
}

// "name{labels}" -> value, for every sample of a scrape.
using Samples = std::map<std::string, double>;

inline Samples parse_samples(const std::string& text) {
  Samples out;
  for (const std::string& line : detail::complete_lines(text)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    out[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return out;
}

inline Samples scrape(int mport) {
  Http r = get(mport, "/metrics");
  REQUIRE_MESSAGE(r.status == 200, r.head);
  return parse_samples(r.body);
}

inline double value(const Samples& s, const std::string& key) {
  auto it = s.find("tcp_log_server_" + key);
  if (it == s.end()) FAIL_CHECK("no sample tcp_log_server_" << key);
  return it == s.end() ? -1 : it->second;
}

// Whether the server has closed `c`: its end of stream or a reset is there to read now.
inline bool closed_now(const Client& c) {
  pollfd p{c.fd(), POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  char byte;
  const ssize_t n = ::recv(c.fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

// Scrapes until `key` has `want` (at most 10 s); returns the last scrape.
inline Samples wait_for_value(int mport, const std::string& key, double want) {
  Samples s;
  for (auto deadline = Clock::now() + 10s;;) {
    s = scrape(mport);
    auto it = s.find("tcp_log_server_" + key);
    if ((it != s.end() && it->second == want) || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(20ms);
  }
  CHECK_MESSAGE(value(s, key) == want, key);
  return s;
}

// `promtool check metrics` on `text`: its exit status and what it printed.
inline std::pair<int, std::string> promtool_check(const std::string& text) {
  const std::string promtool = dur::find_program("promtool");
  REQUIRE_MESSAGE(!promtool.empty(), "promtool is needed (Debian package prometheus; make installs it)");
  TempDir dir;
  test_support::write_file(dir / "scrape.txt", text);
  const std::string command = promtool + " check metrics < " + dir / "scrape.txt" + " > " + dir / "out" + " 2>&1";
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, test_support::read_file(dir / "out")};
}

// A server with the monitoring listener on 127.0.0.1:0.
struct Monitored {
  TempDir dir;
  ServerProcess server{dir.path()};
  int mport = 0;
  explicit Monitored(std::initializer_list<std::pair<std::string, std::string>> env = {}) {
    server.env("METRICS", "127.0.0.1:0");
    for (const auto& [name, value] : env) server.env(name, value);
    server.start();
    mport = metrics_port_of(server);
  }
};

// `count` writes of {"i":k,"p":"<pad>"} (canonical as sent) in one send, then their confirmations;
// returns the entries' bytes.
inline uint64_t write_entries(Client& c, int count, size_t pad, long long first_index) {
  std::string batch;
  uint64_t bytes = 0;
  for (int i = 0; i < count; i++) {
    const std::string entry = R"({"i":)" + std::to_string(i) + R"(,"p":")" + std::string(pad, 'p') + R"("})";
    bytes += entry.size();
    batch += write_msg("w" + std::to_string(i), entry) + "\n";
  }
  c.send(batch, 30s);
  std::vector<std::string> replies = c.read_lines(static_cast<size_t>(count), 60s);
  CHECK(replies.back() == confirmation("w" + std::to_string(count - 1), first_index + count - 1));
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// A writer's latency: one write at a time, each confirmed before the next.

struct Latency {
  double p50 = 0, p99 = 0, max = 0;
  int writes = 0, confirmed = 0;
};

inline Latency probe_writes(int port, milliseconds duration, const std::string& prefix) {
  Client c(port);
  std::vector<double> ms;
  Latency l;
  const auto until = Clock::now() + duration;
  for (int i = 0; Clock::now() < until && !c.failed(); i++) {
    const auto start = Clock::now();
    c.send_line(write_msg(prefix + std::to_string(i), numbered(i)));
    const std::string reply = c.read_line(10s);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    l.writes++;
    l.confirmed += reply.find("\"index\":") != std::string::npos;
    std::this_thread::sleep_for(2ms);
  }
  std::sort(ms.begin(), ms.end());
  if (!ms.empty()) {
    l.p50 = ms[ms.size() / 2];
    l.p99 = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
    l.max = ms.back();
  }
  return l;
}

// A raw loopback connection that sends without failing the test when the peer has gone.
struct RawConnection {
  int fd = -1;
  explicit RawConnection(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~RawConnection() { ::close(fd); }
  // Sends what the peer takes; false once it has closed or reset.
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // Waits for the end of the connection (EOF or reset); what came before it is in *got.
  bool wait_closed(milliseconds timeout, std::string* got = nullptr) {
    for (auto deadline = Clock::now() + timeout; Clock::now() < deadline;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return true;
      if (got) got->append(buf, static_cast<size_t>(n));
    }
    return false;
  }
};

// ---------------------------------------------------------------------------------------------
// The server's checkpoint thread, for an strace that injects a fault into it alone

inline pid_t tracer_of(pid_t tid) {
  const std::string status = test_support::read_file("/proc/" + std::to_string(tid) + "/status");
  const size_t at = status.find("TracerPid:");
  return at == std::string::npos ? 0 : static_cast<pid_t>(std::atol(status.c_str() + at + 10));
}

}  // namespace metrics_harness
