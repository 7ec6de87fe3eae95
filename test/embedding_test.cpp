// The server embedded in other programs (examples/, tcp-log-server.hpp, tcp_log_server.h): each
// example host serves the protocol from its own loop, and stops gracefully on SIGTERM. The
// end-to-end tests themselves also run against the example hosts (make test, "embedded").
//
// Rules checked here:
//   - a host with a poll() loop and a timer of its own keeps the timer on time while clients
//     write and read (the server never blocks inside run_once());
//   - a host that accepts connections itself and hands them over with adopt() serves them;
//   - a C program built against tcp_log_server.h alone serves the protocol.
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "test/harness.hpp"

using namespace harness;

namespace {

// The harness's servers are the example host `name` while it lives ($EXAMPLES_DIR, else examples/).
class ExampleHost : public ServerBinaryOverride {
 public:
  explicit ExampleHost(const std::string& name) : ServerBinaryOverride(path_of(name)) {}

 private:
  static std::string path_of(const std::string& name) {
    const char* dir = std::getenv("EXAMPLES_DIR");
    return (dir && *dir ? std::string(dir) : std::string("examples")) + "/" + name;
  }
};

// Writes, reads back (stream and batch), an invalid line, and a graceful stop; then the entries
// are still there for the next start.
void serves_the_protocol(const std::string& host) {
  ExampleHost example(host);
  TempDir dir;
  {
    ServerProcess server(dir.path());
    server.start();
    Client c(server.port());
    write_ok(c, "a", R"({"n":1})", 1);
    write_ok(c, "b", R"([2,"two"])", 2);
    c.send_line(batch_read(1, 1));
    CHECK(c.read_line() == entry_line(1, R"({"n":1})"));
    CHECK(c.read_line() == head_line(2));
    c.send_line(R"({"what":1})");
    CHECK(c.read_line() == kInvalidMessage);
    Client reader(server.port());
    reader.send_line(read_from(1));
    CHECK(reader.read_line() == entry_line(1, R"({"n":1})"));
    CHECK(reader.read_line() == entry_line(2, R"([2,"two"])"));
    CHECK(reader.read_line() == kCurrent);
    write_ok(c, "c", R"({"n":3})", 3);
    CHECK(reader.read_line() == entry_line(3, R"({"n":3})"));
    CHECK(server.stop_term() == 0);
  }
  ServerProcess again(dir.path());
  again.start();
  const std::vector<std::string> lines = dump(again.port());
  REQUIRE(lines.size() == 4);
  CHECK(lines[2] == entry_line(3, R"({"n":3})"));
  CHECK(again.stop_term() == 0);
}

}  // namespace

TEST_CASE("a host that hands over the connections it accepts (adopt) serves the protocol") {
  serves_the_protocol("adopt_host");
}

TEST_CASE("a C host built against tcp_log_server.h alone serves the protocol") {
  serves_the_protocol("c_host");
}

TEST_CASE("a host with its own poll loop serves the protocol") { serves_the_protocol("poll_host"); }

TEST_CASE("a host's own timer stays on time while clients write and read through its loop") {
  ExampleHost example("poll_host");
  TempDir dir;
  ServerProcess server(dir.path());
  server.env("SYNC", "none");  // the loop's own work is measured, not the disk's syncs
  server.start();
  // Four writers, each with 300 writes in flight at once, and two stream readers, for about a
  // second and more of the host's 20 ms ticks.
  std::vector<std::thread> clients;
  for (int w = 0; w < 4; w++)
    clients.emplace_back([&, w] {
      Client c(server.port());
      std::string burst;
      for (int i = 0; i < 300; i++) burst += write_msg("w" + std::to_string(w) + "-" + std::to_string(i), numbered(i)) + "\n";
      for (int round = 0; round < 5; round++) {
        c.send(burst);
        c.read_lines(300, milliseconds(10000));
      }
    });
  for (int r = 0; r < 2; r++)
    clients.emplace_back([&] {
      Client c(server.port());
      c.send_line(read_from(1));
      c.read_lines(4 * 300 * 5 + 1, milliseconds(20000));  // every entry and {"current":true}
    });
  for (std::thread& t : clients) t.join();
  CHECK(server.stop_term() == 0);
  const std::vector<std::string> timer = server.wait_for_log("\"msg\":\"timer\"");
  REQUIRE(timer.size() == 1);
  const auto ticks = json_int_field(timer[0], "ticks");
  const auto late = json_int_field(timer[0], "late_ms_max");
  REQUIRE(ticks);
  REQUIRE(late);
  MESSAGE("the host's timer: " << *ticks << " ticks, at most " << *late << " ms late");
  CHECK(*ticks >= 10);
  // A pass of the server is bounded (README, "Fairness"): about a millisecond. 100 ms leaves
  // room for a machine that other work shares.
  CHECK(*late < 100);
}
