// The server's sockets: see sockets.hpp.
#include "sockets.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace {

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

}  // namespace

uint16_t bound_port(int fd) {
  sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

bool open_listeners(const std::string& host, uint16_t port, std::vector<int>* out,
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
    out->push_back(fd);
    return true;
  }
  if (host == "localhost") {
    v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = listen_on(reinterpret_cast<sockaddr*>(&v4), sizeof v4, false);
    if (fd < 0) return fail("127.0.0.1");
    out->push_back(fd);
    // ::1 too where the kernel has IPv6, on the same port (also when PORT=0 picked it).
    v6.sin6_addr = in6addr_loopback;
    v6.sin6_port = htons(bound_port(fd));
    int fd6 = listen_on(reinterpret_cast<sockaddr*>(&v6), sizeof v6, false);
    if (fd6 >= 0) out->push_back(fd6);
    return true;
  }
  std::string literal = host;
  if (literal.size() > 2 && literal.front() == '[' && literal.back() == ']')
    literal = literal.substr(1, literal.size() - 2);
  if (::inet_pton(AF_INET, literal.c_str(), &v4.sin_addr) == 1) {
    int fd = listen_on(reinterpret_cast<sockaddr*>(&v4), sizeof v4, false);
    if (fd < 0) return fail(literal);
    out->push_back(fd);
    return true;
  }
  if (::inet_pton(AF_INET6, literal.c_str(), &v6.sin6_addr) == 1) {
    int fd = listen_on(reinterpret_cast<sockaddr*>(&v6), sizeof v6,
                       IN6_IS_ADDR_UNSPECIFIED(&v6.sin6_addr));
    if (fd < 0) return fail(literal);
    out->push_back(fd);
    return true;
  }
  *error = "HOST \"" + host + "\" is not an IP address literal or localhost";
  return false;
}




std::string bound_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  char text[INET6_ADDRSTRLEN] = {};
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  if (ss.ss_family == AF_INET6)
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, text, sizeof text);
  else if (ss.ss_family == AF_INET)
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, text, sizeof text);
  return text;
}

bool take_over_socket(int fd, bool listening, sockaddr_storage* peer, std::string* error) {
  const std::string which = "cannot adopt descriptor " + std::to_string(fd) + ": ";
  int value = 0, type = 0;
  socklen_t len = sizeof value, tlen = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0) {
    *error = which + std::strerror(errno);
    return false;
  }
  if (type != SOCK_STREAM) {
    *error = which + "not a stream socket";
    return false;
  }
  if (listening) {
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &value, &len) != 0 || !value) {
      *error = which + "not a listening socket";
      return false;
    }
  } else {
    socklen_t plen = sizeof *peer;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(peer), &plen) != 0) {
      *error = which + "not a connected socket: " + std::strerror(errno);
      return false;
    }
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 || ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    *error = which + std::strerror(errno);
    return false;
  }
  return true;
}
