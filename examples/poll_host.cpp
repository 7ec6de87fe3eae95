// An example host: a program with a poll() loop and a timer of its own (here a "sensor" read
// every 20 ms) that serves its log from the same thread, through Server::fd() and
// Server::run_once(). The server never blocks the loop: run_once(0) does what is ready and
// returns, and Server::timeout_ms() says how soon it wants to run again.
//
// With METRICS=[ADDRESS]:PORT it also serves GET /metrics and GET /health to scrapers, from the
// same loop (Server::listen_metrics()).
//
// SIGTERM or SIGINT stops it gracefully (Server::stop() is async-signal-safe). At exit it prints
// how late its timer ever ran: {"msg":"timer","ticks":N,"late_ms_max":M}.
#include <poll.h>
#include <signal.h>
#include <time.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>

#include "host_config.hpp"
#include "tcp-log-server.hpp"

namespace {

tcp_log_server::Server* g_server = nullptr;

void on_signal(int) {
  if (g_server) g_server->stop();
}

int64_t now_ms() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

int main() {
  const HostConfig config = host_config_from_environment();
  tcp_log_server::Store store;
  tcp_log_server::Status s = store.open(config.store);
  if (!s.ok()) {
    std::fprintf(stderr, "poll_host: %s\n", s.message().c_str());
    return 1;
  }
  tcp_log_server::Server server(store, config.limits, nullptr);
  // METRICS: scrapers get GET /metrics and GET /health from the same loop.
  if (config.metrics) s = server.listen_metrics(config.metrics_host, config.metrics_port);
  if (s.ok()) s = server.listen(config.host, config.port);
  if (!s.ok()) {
    std::fprintf(stderr, "poll_host: %s\n", s.message().c_str());
    return 1;
  }
  g_server = &server;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  print_listening(server.port(), server.metrics_address());

  // The host's own work: a tick every 20 ms, and how late it ever was.
  constexpr int64_t kPeriodMs = 20;
  int64_t next_tick = now_ms() + kPeriodMs, late_max = 0;
  uint64_t ticks = 0;
  while (!server.stopped()) {
    int wait = static_cast<int>(next_tick - now_ms());
    if (wait < 0) wait = 0;
    const int server_wait = server.timeout_ms();
    if (server_wait >= 0 && server_wait < wait) wait = server_wait;
    pollfd fds[1] = {{server.fd(), POLLIN, 0}};
    if (::poll(fds, 1, wait) < 0 && errno != EINTR) {
      std::perror("poll_host: poll");
      return 1;
    }
    const int64_t now = now_ms();
    if (now >= next_tick) {
      if (now - next_tick > late_max) late_max = now - next_tick;
      ticks++;
      next_tick += kPeriodMs;
      if (next_tick < now) next_tick = now + kPeriodMs;  // a tick missed is not run twice
    }
    s = server.run_once(0);  // never waits: the host's poll() did
    if (!s.ok()) {
      std::fprintf(stderr, "poll_host: %s\n", s.message().c_str());
      return 1;
    }
  }
  g_server = nullptr;
  std::printf("{\"msg\":\"timer\",\"ticks\":%llu,\"late_ms_max\":%lld}\n",
              static_cast<unsigned long long>(ticks), static_cast<long long>(late_max));
  s = store.close();
  if (!s.ok()) {
    std::fprintf(stderr, "poll_host: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}
