// The loop's own promise: it waits in poll() when nothing can make progress, and never spins.
// A connection whose next line is held back (behind its writes waiting for the journal's
// checkpoint, behind a full output) must not be queued for a pass that cannot dispatch it:
// each such pass would poll with a zero timeout and come back at once, using a whole CPU
// until the checkpoint ends. Traced with strace, whose delay on the checkpoint's syncfs
// keeps the journal full for a second at a time.
#include <doctest/doctest.h>

#include "test/durability_harness.hpp"
#include "test/harness.hpp"

#include <regex>
#include <string>
#include <vector>

using namespace harness;
using namespace std::chrono_literals;

namespace {

// The timeouts of the poll() calls in an `strace -f -o` trace, in order.
std::vector<long> poll_timeouts(const std::string& trace) {
  static const std::regex poll_call(R"(poll\(\[.*\], \d+, (-?\d+)(\)| <unfinished))");
  std::vector<long> timeouts;
  for (const std::string& line : detail::complete_lines(trace)) {
    std::smatch m;
    if (std::regex_search(line, m, poll_call)) timeouts.push_back(std::stol(m[1]));
  }
  return timeouts;
}

}  // namespace

TEST_CASE("loop: reads, too-long lines and writes held behind writes waiting for a full journal do not make the loop spin") {
  std::string strace = dur::find_program("strace");
  REQUIRE_MESSAGE(!strace.empty(), "strace is needed (make check-deps installs it)");
  TempDir dir;
  const std::string trace = dir / "poll.trace";
  // The smallest journal (two sides of 60 KiB of records) and every checkpoint after the first
  // slowed down to one second: 600 writes of 300 bytes fill it more than once.
  dur::Wrapped s(dir.path(),
                 {strace, "-f", "-qq", "-o", trace, "-e", "trace=poll,syncfs", "-e",
                  "inject=syncfs:delay_enter=1000000:when=2+"},
                 {{"PORT", "0"}, {"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"},
                  {"MAX_MESSAGE_BYTES", "4096"}, {"JOURNAL_BYTES", "131072"}});
  REQUIRE(s.start());
  Client writer(s.port());
  Client other(s.port());
  // Pipelined: writes with a batch read after every 20th, so that some pass dispatches writes
  // the journal cannot take and then finds a read behind them. The other connection pipelines
  // writes and then a line over MAX_MESSAGE_BYTES, which must wait for its writes' confirmations.
  constexpr int kWrites = 600;
  const std::string pad(240, 'p');
  std::string pipelined;
  int reads = 0;
  for (int i = 1; i <= kWrites; i++) {
    pipelined += write_msg("w" + std::to_string(i), "{\"n\":" + std::to_string(i) + ",\"p\":\"" + pad + "\"}") + "\n";
    if (i % 20 == 0) {
      pipelined += batch_read(1, 1) + "\n";
      reads++;
    }
  }
  std::string too_long;
  for (int i = 1; i <= 40; i++) too_long += write_msg("o" + std::to_string(i), numbered(i)) + "\n";
  too_long += std::string(5000, 'x') + "\n";
  writer.send(pipelined, 30s);
  other.send(too_long, 30s);
  // Every write is confirmed and every read answered (entry 1, then its head), in order.
  std::vector<std::string> replies = writer.read_lines(kWrites + 2 * reads, 60s);
  REQUIRE(replies.size() == static_cast<size_t>(kWrites + 2 * reads));
  int confirmed = 0;
  for (const std::string& r : replies) confirmed += r.find("\"id\":\"w") != std::string::npos;
  CHECK(confirmed == kWrites);
  std::vector<std::string> other_replies = other.read_lines(41, 60s);
  REQUIRE(other_replies.size() == 41);
  CHECK(other_replies.back() == kTooLarge);
  bool full = false;
  for (const auto& l : s.log_lines()) full = full || l.find("\"event\":\"journal-full\"") != std::string::npos;
  CHECK_MESSAGE(full, "the journal never filled: the test did not test the held lines");
  s.signal_server(SIGTERM);
  CHECK(s.wait(20s) == 0);
  // Passes happen for work: a few per batch of input, per checkpoint and per reply. A spinning
  // loop makes thousands of zero-timeout calls for each second a checkpoint is delayed.
  const std::vector<long> timeouts = poll_timeouts(read_file(trace));
  size_t zero = 0;
  for (long t : timeouts) zero += t == 0;
  INFO("poll calls: " << timeouts.size() << ", with a zero timeout: " << zero);
  CHECK(timeouts.size() > 10);  // the trace was read
  CHECK(zero < 600);
}
