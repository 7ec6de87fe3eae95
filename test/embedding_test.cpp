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

#include <atomic>
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
  // Four writers, each writing and waiting for its confirmation, and two stream readers, for a
  // second: about 50 of the host's 20 ms ticks. (A burst of pipelined writes is another
  // matter: a pass commits every write it read, and holds the host while it writes them.)
  constexpr auto kDuration = milliseconds(1000);
  std::atomic<int> written{0};
  std::vector<std::thread> writers, readers;
  for (int w = 0; w < 4; w++)
    writers.emplace_back([&, w] {
      Client c(server.port());
      const auto until = Clock::now() + kDuration;
      for (int i = 0; Clock::now() < until && !c.failed(); i++) {
        c.send_line(write_msg("w" + std::to_string(w) + "-" + std::to_string(i), numbered(i)));
        c.read_line();
        written++;
      }
    });
  std::vector<size_t> received(2);
  for (int r = 0; r < 2; r++)
    readers.emplace_back([&, r] {
      Client c(server.port());
      c.send_line(read_from(1));
      const auto until = Clock::now() + kDuration + milliseconds(2000);
      while (Clock::now() < until && c.try_read_line(milliseconds(200))) received[r]++;
    });
  for (std::thread& t : writers) t.join();
  for (std::thread& t : readers) t.join();
  // Each reader got every entry and {"current":true}.
  CHECK(received[0] == static_cast<size_t>(written) + 1);
  CHECK(received[1] == static_cast<size_t>(written) + 1);
  CHECK(server.stop_term() == 0);
  const std::vector<std::string> timer = server.wait_for_log("\"msg\":\"timer\"");
  REQUIRE(timer.size() == 1);
  const auto ticks = json_int_field(timer[0], "ticks");
  const auto late = json_int_field(timer[0], "late_ms_max");
  REQUIRE(ticks);
  REQUIRE(late);
  MESSAGE("the host's timer: " << *ticks << " ticks, at most " << *late << " ms late, while "
                                 << written.load() << " writes went through its loop");
  CHECK(*ticks >= 25);
  // A pass of the server is bounded (doc/operations.md, "Fairness"): about a millisecond. 100 ms leaves
  // room for a machine that other work shares.
  CHECK(*late < 100);
}
