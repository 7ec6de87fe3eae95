// Socket activation (doc/operations.md, "Socket activation"; tcp-log-server.socket): with LISTEN_PID set
// to its pid and LISTEN_FDS=n, the server serves the listening sockets 3 .. 3+n-1 that the
// service manager opened, instead of opening its own.
//
// Rules checked here:
//   - the server serves an activated socket, and its listening line names that socket's port;
//   - LISTEN_PID of another process is not for it: it listens on PORT as usual;
//   - an activated descriptor that is not a listening socket is a failure to start (status 1).
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "test/harness.hpp"

using namespace harness;

namespace {

// A listening socket on 127.0.0.1 and a free port, inherited by the processes the test starts
// (no close-on-exec), as a service manager's is.
class ActivationSocket {
 public:
  ActivationSocket() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
  }
  ~ActivationSocket() { ::close(fd_); }
  int fd() const { return fd_; }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Runs the harness's servers through a script that does what the service manager does: the
// descriptor `fd` of this process becomes descriptor 3 of the server, with LISTEN_FDS=1 and
// LISTEN_PID its pid (the shell's, which exec keeps).
class Activated {
 public:
  Activated(const TempDir& dir, int fd) : script_(write_script(dir, fd)), binary_(script_) {}

 private:
  static std::string write_script(const TempDir& dir, int fd) {
    const std::string script = dir / "activate.sh";
    std::ofstream(script) << "#!/bin/sh\nLISTEN_PID=$$ LISTEN_FDS=1 exec '" << detail::server_binary()
                          << "' \"$@\" 3<&" << fd << "\n";
    REQUIRE(::chmod(script.c_str(), 0755) == 0);
    return script;
  }
  std::string script_;
  ServerBinaryOverride binary_;
};

}  // namespace

TEST_CASE("under socket activation the server serves the listening socket it is given") {
  TempDir dir;
  ActivationSocket socket;
  Activated activated(dir, socket.fd());
  ServerProcess server(dir.path());
  server.env("PORT", "1");  // not used: a server that listened on it would fail to start
  server.start();
  CHECK(server.port() == socket.port());
  const std::vector<std::string> listening = server.wait_for_log("\"msg\":\"listening\"");
  REQUIRE(listening.size() == 1);
  CHECK(json_string_field(listening[0], "host") == std::string("127.0.0.1"));
  Client c(socket.port());
  write_ok(c, "a", R"({"n":1})", 1);
  c.send_line(read_from(1));
  CHECK(c.read_line() == entry_line(1, R"({"n":1})"));
  CHECK(c.read_line() == kCurrent);
  CHECK(server.stop_term() == 0);
}

TEST_CASE("LISTEN_PID of another process is not for the server: it listens on PORT") {
  TempDir dir;
  ServerProcess server(dir.path());
  server.env("LISTEN_PID", "1").env("LISTEN_FDS", "1");
  server.start();
  Client c(server.port());
  write_ok(c, "a", R"({"n":1})", 1);
  CHECK(server.stop_term() == 0);
}

TEST_CASE("an activated descriptor that is not a listening socket is a failure to start") {
  TempDir dir;
  const int not_a_socket = ::open("/dev/null", O_RDONLY);  // inherited: no close-on-exec
  REQUIRE(not_a_socket >= 0);
  {
    Activated activated(dir, not_a_socket);
    RunResult r = run_server_binary({});
    CHECK(r.status == 1);
    CHECK(r.out.find("cannot adopt descriptor 3") != std::string::npos);
  }
  ::close(not_a_socket);
}
