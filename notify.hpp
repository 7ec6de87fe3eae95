// Telling a service manager that we are ready or stopping: systemd's notify protocol
// (sd_notify(3)), spoken without libsystemd. The whole protocol is one datagram per message, of
// newline-separated KEY=VALUE lines ("READY=1\nSTATUS=...\n"), sent to the AF_UNIX datagram
// socket named by the environment variable NOTIFY_SOCKET: a path, or, when it starts with '@',
// a name in the Linux abstract namespace. No I/O except that socket; no log lines (the caller
// logs the errors, which are never fatal).
#pragma once
#include <sys/socket.h>
#include <sys/un.h>

#include <string>
#include <string_view>

// Turns a NOTIFY_SOCKET value into a socket address. Fails, with *error saying why, for an
// empty value, a relative path, a name too long for sockaddr_un, or a kind of address this
// implementation does not speak (systemd 256's "vsock:..." addresses).
bool parse_notify_address(std::string_view value, sockaddr_un* address, socklen_t* length,
                          std::string* error);

class ServiceNotifier {
 public:
  ServiceNotifier() = default;
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;
  ~ServiceNotifier();

  // Reads NOTIFY_SOCKET once and opens the socket that every later message goes through, so
  // that a notice at stopping time does not need a descriptor when connections may have taken
  // them all. Then removes NOTIFY_SOCKET from our environment: we start no child processes, so
  // nothing else of ours could speak for us, and the value read here is the one that counts.
  // Returns false with *error when the variable is set but unusable; when it is not set, returns
  // true and enabled() stays false.
  bool open_from_environment(std::string* error);
  bool enabled() const { return fd_ >= 0; }
  // NOTIFY_SOCKET as it was given, for log lines.
  const std::string& address_text() const { return address_text_; }

  // Sends one message, e.g. "READY=1\nSTATUS=listening\n". A no-op when not enabled. Waits at
  // most about two seconds for room in the manager's queue (a busy manager should not lose our
  // READY=1, and a stuck one must not stop the server). Fails with *error naming the socket and
  // the errno.
  bool send(std::string_view message, std::string* error);

 private:
  int fd_ = -1;
  sockaddr_un address_{};
  socklen_t address_length_ = 0;
  std::string address_text_;
};
