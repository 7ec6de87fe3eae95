// An example host that owns its listening socket, as a daemon does whose port also serves
// something else, or that is started by inetd: it accepts each connection itself and hands it
// to the server with Server::adopt(), as the Node.js package's handler is given to
// net.createServer(). The server and the host share one thread and one poll() loop.
//
// SIGTERM or SIGINT stops it gracefully.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "host_config.hpp"
#include "tcp-log-server.hpp"

namespace {

tcp_log_server::Server* g_server = nullptr;

void on_signal(int) {
  if (g_server) g_server->stop();
}

// The host's own listener on 127.0.0.1 (IPv4 only, for brevity); returns -1 with errno set.
int listen_loopback(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 128) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

uint16_t port_of(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof addr;
  return ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 ? ntohs(addr.sin_port) : 0;
}

}  // namespace

int main() {
  const HostConfig config = host_config_from_environment();
  tcp_log_server::Store store;
  tcp_log_server::Status s = store.open(config.store);
  if (!s.ok()) {
    std::fprintf(stderr, "adopt_host: %s\n", s.message().c_str());
    return 1;
  }
  const int listener = listen_loopback(config.port);
  if (listener < 0) {
    std::fprintf(stderr, "adopt_host: cannot listen on 127.0.0.1 port %u: %s\n",
                 static_cast<unsigned>(config.port), std::strerror(errno));
    return 1;
  }
  tcp_log_server::Server server(store, config.limits, nullptr);  // no listener of its own
  g_server = &server;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  print_listening(port_of(listener));

  bool accepting = true;
  while (!server.stopped()) {
    pollfd fds[2] = {{server.fd(), POLLIN, 0}, {accepting ? listener : -1, POLLIN, 0}};
    if (::poll(fds, 2, server.timeout_ms()) < 0 && errno != EINTR) {
      std::perror("adopt_host: poll");
      return 1;
    }
    if (fds[1].revents & POLLIN) {
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        s = server.adopt(fd);  // the server owns fd now, even if it refuses it
        if (!s.ok()) std::fprintf(stderr, "adopt_host: %s\n", s.message().c_str());
      }
    }
    s = server.run_once(0);
    if (!s.ok()) {
      std::fprintf(stderr, "adopt_host: %s\n", s.message().c_str());
      return 1;
    }
    // Once the server stops taking connections, the host stops accepting them.
    if (accepting && server.stopping()) {
      accepting = false;
      ::close(listener);
    }
  }
  g_server = nullptr;
  s = store.close();
  if (!s.ok()) {
    std::fprintf(stderr, "adopt_host: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}
