// The notify protocol's sender (see notify.hpp).
#include "notify.hpp"

#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace {
// How long one message may wait for room in the manager's receive queue.
constexpr time_t kSendTimeoutSeconds = 2;
}  // namespace

bool parse_notify_address(std::string_view value, sockaddr_un* address, socklen_t* length,
                          std::string* error) {
  *address = sockaddr_un{};
  address->sun_family = AF_UNIX;
  const bool abstract = !value.empty() && value[0] == '@';
  if (value.empty() || (!abstract && value[0] != '/')) {
    *error = "NOTIFY_SOCKET \"" + std::string(value) +
             "\" is neither an absolute path nor an abstract name starting with @";
    return false;
  }
  // An abstract name has no terminating NUL: its length is the address length. A path keeps one.
  const size_t room = sizeof address->sun_path - 1;
  const std::string_view name = abstract ? value.substr(1) : value;
  if (name.size() > room) {
    *error = "NOTIFY_SOCKET \"" + std::string(value) + "\" is longer than a Unix socket address (" +
             std::to_string(room) + " bytes)";
    return false;
  }
  char* path = address->sun_path + (abstract ? 1 : 0);  // sun_path[0] stays NUL when abstract
  std::memcpy(path, name.data(), name.size());
  *length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + (abstract ? 1 : 0) +
                                   name.size() + (abstract ? 0 : 1));
  return true;
}

ServiceNotifier::~ServiceNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

bool ServiceNotifier::open_from_environment(std::string* error) {
  const char* value = std::getenv("NOTIFY_SOCKET");
  if (!value) return true;
  address_text_ = value;
  ::unsetenv("NOTIFY_SOCKET");
  if (!parse_notify_address(address_text_, &address_, &address_length_, error)) return false;
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    *error = std::string("cannot create a socket for NOTIFY_SOCKET: ") + std::strerror(errno);
    return false;
  }
  timeval timeout{kSendTimeoutSeconds, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  return true;
}

bool ServiceNotifier::send(std::string_view message, std::string* error) {
  if (fd_ < 0) return true;
  iovec part{const_cast<char*>(message.data()), message.size()};
  msghdr header{};
  header.msg_name = &address_;
  header.msg_namelen = address_length_;
  header.msg_iov = &part;
  header.msg_iovlen = 1;
  for (;;) {
    const ssize_t sent = ::sendmsg(fd_, &header, MSG_NOSIGNAL);
    if (sent == static_cast<ssize_t>(message.size())) return true;
    if (sent < 0 && errno == EINTR) continue;
    // A datagram goes whole or not at all; EAGAIN here is the send timeout running out.
    *error = "cannot notify " + address_text_ + ": " +
             (sent < 0 ? std::strerror(errno) : "short send");
    return false;
  }
}
