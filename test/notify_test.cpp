// The service manager's notify protocol (notify.hpp): the address rules and the sender in
// process, then the real binary against a Unix datagram socket of the test's own, standing in
// for systemd (which does not run here): READY=1 only once the port accepts connections,
// STOPPING=1 when SIGTERM begins a graceful stop, path and abstract addresses, and failures that
// are logged but never stop the server.
#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdlib>
#include <string>

#include "notify.hpp"
#include "test/harness.hpp"

using namespace harness;
using namespace std::chrono_literals;

namespace {

// A bound AF_UNIX datagram socket: what systemd listens on for a Type=notify service.
class ManagerSocket {
 public:
  // `name` is a path, or an abstract name when it starts with '@'.
  explicit ManagerSocket(const std::string& name) : name_(name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un address;
    socklen_t length = 0;
    std::string error;
    REQUIRE_MESSAGE(parse_notify_address(name, &address, &length, &error), error);
    REQUIRE_MESSAGE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), length) == 0,
                    errno_text("bind " + name));
  }
  ~ManagerSocket() { ::close(fd_); }
  ManagerSocket(const ManagerSocket&) = delete;
  ManagerSocket& operator=(const ManagerSocket&) = delete;

  const std::string& name() const { return name_; }

  // The next datagram, or nothing if none arrives within `timeout`.
  std::optional<std::string> receive(milliseconds timeout = kProcessWait) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
  }

 private:
  std::string name_;
  int fd_ = -1;
};

// An abstract name no other test run uses at the same time.
std::string abstract_name(const std::string& what) {
  return "@tcp-log-server-test/" + std::to_string(::getpid()) + "/" + what + "/" +
         std::to_string(detail::next_serial());
}

// The value of KEY= in a notify message, if the message has that line.
std::optional<std::string> notify_field(const std::string& message, const std::string& key) {
  for (const std::string& line : detail::complete_lines(message))
    if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
  return std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The address rules

TEST_CASE("a NOTIFY_SOCKET path becomes a NUL-terminated Unix address") {
  sockaddr_un a;
  socklen_t length = 0;
  std::string error;
  REQUIRE(parse_notify_address("/run/systemd/notify", &a, &length, &error));
  CHECK(a.sun_family == AF_UNIX);
  CHECK(std::string(a.sun_path) == "/run/systemd/notify");
  CHECK(length == offsetof(sockaddr_un, sun_path) + sizeof "/run/systemd/notify");
}

TEST_CASE("a NOTIFY_SOCKET starting with @ is a name in the abstract namespace, without a NUL at its end") {
  sockaddr_un a;
  socklen_t length = 0;
  std::string error;
  REQUIRE(parse_notify_address("@manager/notify", &a, &length, &error));
  CHECK(a.sun_path[0] == '\0');
  CHECK(std::string(a.sun_path + 1, 14) == "manager/notify");
  CHECK(length == offsetof(sockaddr_un, sun_path) + 1 + 14);
}

TEST_CASE("an unusable NOTIFY_SOCKET is refused with the reason") {
  sockaddr_un a;
  socklen_t length = 0;
  const size_t room = sizeof a.sun_path - 1;
  struct Case {
    std::string value;
    const char* reason;
  };
  for (const Case& c : {Case{"", "absolute path"}, Case{"run/notify", "absolute path"},
                        Case{"vsock:2:1234", "absolute path"},
                        Case{"/" + std::string(room, 'p'), "longer than"},
                        Case{"@" + std::string(room + 1, 'a'), "longer than"}}) {
    std::string error;
    CAPTURE(c.value);
    CHECK_FALSE(parse_notify_address(c.value, &a, &length, &error));
    CHECK(error.find(c.reason) != std::string::npos);
    CHECK(error.find("NOTIFY_SOCKET") != std::string::npos);
  }
  std::string error;  // the longest names that fit
  CHECK(parse_notify_address("/" + std::string(room - 1, 'p'), &a, &length, &error));
  CHECK(parse_notify_address("@" + std::string(room, 'a'), &a, &length, &error));
}

// ---------------------------------------------------------------------------------------------
// The sender, in process

TEST_CASE("without NOTIFY_SOCKET the notifier is off and sending does nothing") {
  ::unsetenv("NOTIFY_SOCKET");
  ServiceNotifier notifier;
  std::string error;
  CHECK(notifier.open_from_environment(&error));
  CHECK_FALSE(notifier.enabled());
  CHECK(notifier.send("READY=1\n", &error));
  CHECK(error.empty());
}

TEST_CASE("the notifier sends each message as one datagram, to a path and to an abstract name, and takes NOTIFY_SOCKET out of the environment") {
  TempDir dir;
  for (const std::string& name : {dir / "notify", abstract_name("sender")}) {
    CAPTURE(name);
    ManagerSocket manager(name);
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
    ServiceNotifier notifier;
    std::string error;
    REQUIRE(notifier.open_from_environment(&error));
    CHECK(notifier.enabled());
    CHECK(std::getenv("NOTIFY_SOCKET") == nullptr);
    CHECK(notifier.address_text() == name);
    REQUIRE_MESSAGE(notifier.send("READY=1\nSTATUS=ready\n", &error), error);
    REQUIRE_MESSAGE(notifier.send("STOPPING=1\n", &error), error);
    CHECK(manager.receive() == std::string("READY=1\nSTATUS=ready\n"));
    CHECK(manager.receive() == std::string("STOPPING=1\n"));
  }
}

TEST_CASE("a send to a socket nobody listens on fails with the socket's name and the errno") {
  TempDir dir;
  const std::string name = dir / "nobody";
  ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
  ServiceNotifier notifier;
  std::string error;
  REQUIRE(notifier.open_from_environment(&error));
  CHECK_FALSE(notifier.send("READY=1\n", &error));
  CHECK(error.find(name) != std::string::npos);
  CHECK(error.find("No such file or directory") != std::string::npos);
}

// A manager that reads nothing: its queue fills (net.unix.max_dgram_qlen, 10 by default), and a
// send must then give up after its timeout instead of stopping the server for good.
TEST_CASE("a send to a manager whose queue is full gives up after its timeout") {
  ManagerSocket manager(abstract_name("full"));
  ::setenv("NOTIFY_SOCKET", manager.name().c_str(), 1);
  ServiceNotifier notifier;
  std::string error;
  REQUIRE(notifier.open_from_environment(&error));
  bool failed = false;
  for (int i = 0; i < 1000 && !failed; i++) failed = !notifier.send("STATUS=filling\n", &error);
  REQUIRE(failed);
  CHECK(error.find(manager.name()) != std::string::npos);
  CHECK(error.find("Resource temporarily unavailable") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// The real binary

TEST_CASE("the server sends READY=1 with STATUS and MAINPID once its port accepts connections, and STOPPING=1 on SIGTERM") {
  TempDir sockets;
  for (const std::string& name : {sockets / "notify", abstract_name("server")}) {
    CAPTURE(name);
    ManagerSocket manager(name);
    TempDir dir;
    ServerProcess server(dir.path());
    server.env("NOTIFY_SOCKET", name);
    server.start();
    auto ready = manager.receive();
    REQUIRE(ready.has_value());
    CAPTURE(*ready);
    CHECK(ready->back() == '\n');
    CHECK(notify_field(*ready, "READY") == std::string("1"));
    CHECK(notify_field(*ready, "MAINPID") == std::to_string(server.pid()));
    auto status = notify_field(*ready, "STATUS");
    REQUIRE(status.has_value());
    CHECK(status->find("port " + std::to_string(server.port())) != std::string::npos);
    // Ready means ready: the port takes a write at once.
    Client c(server.port());
    write_ok(c, "w", numbered(1), 1);
    CHECK_FALSE(manager.receive(0ms).has_value());  // nothing else until the stop
    CHECK(server.stop_term() == 0);
    auto stopping = manager.receive(0ms);  // queued before the exit
    REQUIRE(stopping.has_value());
    CHECK(notify_field(*stopping, "STOPPING") == std::string("1"));
    CHECK(notify_field(*stopping, "STATUS").has_value());
    CHECK_FALSE(manager.receive(0ms).has_value());
  }
}

// If READY=1 went out before the listeners were open (or before the store was recovered), a
// server that then fails to start would have told systemd it was running.
TEST_CASE("a server that cannot listen or cannot open its store never sends READY=1") {
  Fresh running({{"HOST", "127.0.0.1"}});
  TempDir dir;
  ManagerSocket manager(dir / "notify");
  RunResult port_taken = run_server_binary(
      {}, {{"HOST", "127.0.0.1"}, {"PORT", std::to_string(running.server.port())}, {"NOTIFY_SOCKET", manager.name()}});
  CAPTURE(port_taken.output());
  CHECK(port_taken.status == 1);
  CHECK_FALSE(manager.receive(0ms).has_value());

  std::ofstream(dir / "plainfile") << "not a directory";
  RunResult no_store = run_server_binary({}, {{"LEVELDB", dir / "plainfile/index"}, {"NOTIFY_SOCKET", manager.name()}});
  CAPTURE(no_store.output());
  CHECK(no_store.status == 1);
  CHECK_FALSE(manager.receive(0ms).has_value());
}

TEST_CASE("a NOTIFY_SOCKET that cannot be used is a warn line naming it, and the server serves anyway") {
  TempDir sockets;
  for (const std::string& name : {sockets / "nobody-listens", std::string("relative/notify")}) {
    CAPTURE(name);
    TempDir dir;
    ServerProcess server(dir.path());
    server.env("NOTIFY_SOCKET", name).start();
    auto warned = server.wait_for_log(R"("event":"notify")");
    REQUIRE(warned.size() == 1);
    CHECK(warned[0].find(R"("level":40)") != std::string::npos);
    CHECK(warned[0].find(name) != std::string::npos);
    Client c(server.port());
    c.send_line(read_from(1));
    CHECK(c.read_line() == kCurrent);
    CHECK(server.stop_term() == 0);
  }
}
