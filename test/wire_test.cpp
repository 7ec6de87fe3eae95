// End-to-end tests: the real ./tcp-log-server on PORT=0 in a temporary directory, spoken to over
// loopback. One test case per rule of the protocol, storage, logs and configuration (issues 2, 4).
#include <doctest/doctest.h>

#include "sha256.hpp"
#include "test/durability_harness.hpp"  // Wrapped: the server under strace
#include "test/harness.hpp"

#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

using namespace harness;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

std::string blob_path(const std::string& blobs, const std::string& hash) {
  return blobs + "/" + hash.substr(0, 2) + "/" + hash.substr(2);
}

// Files in `blobs` laid out as blobs are: <2 hex digits>/<62 hex digits> (other files, such as a
// lock, are not blobs).
size_t count_blobs(const std::string& blobs) {
  auto hex = [](const std::string& name, size_t length) {
    return name.size() == length && name.find_first_not_of("0123456789abcdef") == std::string::npos;
  };
  size_t n = 0;
  std::error_code ec;
  for (const auto& dir : fs::directory_iterator(blobs, ec)) {
    if (!dir.is_directory() || !hex(dir.path().filename().string(), 2)) continue;
    for (const auto& file : fs::directory_iterator(dir.path(), ec))
      if (file.is_regular_file() && hex(file.path().filename().string(), 62)) ++n;
  }
  return n;
}

bool ipv6_loopback_usable() {
  int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// A write line of exactly `size` bytes (without the newline).
std::string write_of_size(const std::string& id, size_t size) {
  std::string head = R"({"id":")" + id + R"(","entry":{"p":")";
  std::string tail = "\"}}";
  REQUIRE(size >= head.size() + tail.size());
  return head + std::string(size - head.size() - tail.size(), 'x') + tail;
}

// Entries of many shapes, with their canonical forms.
const std::vector<std::pair<std::string, std::string>>& varied_entries() {
  static const std::vector<std::pair<std::string, std::string>> entries{
      {R"({"b":1,"a":"x"})", R"({"a":"x","b":1})"},
      {R"([ 1, 2 ,{"z":null,"y":[true,false]} ])", R"([1,2,{"y":[true,false],"z":null}])"},
      {R"({"n":12345678901234567890,"f":1.0,"e":-2.5e-3})", R"({"e":-2.5e-3,"f":1.0,"n":12345678901234567890})"},
      {R"({"s":"tab\tquote\"slash\/nl\n\u00e9"})", "{\"s\":\"tab\\tquote\\\"slash/nl\\n\xc3\xa9\"}"},
      {R"({})", R"({})"},
      {R"([])", R"([])"},
      {R"({"nested":{"deeper":{"deepest":[[[]]]}}})", R"({"nested":{"deeper":{"deepest":[[[]]]}}})"},
      {"{\"emoji\":\"\xf0\x9f\x98\x80\",\"k\":\"\\ud83d\\ude00\"}",
       "{\"emoji\":\"\xf0\x9f\x98\x80\",\"k\":\"\xf0\x9f\x98\x80\"}"},
      {R"({"dup":1,"dup":2})", R"({"dup":2})"},
      {R"({"b":1,"a":"x"})", R"({"a":"x","b":1})"},  // same entry again: same blob
  };
  return entries;
}

}  // namespace

// ===== Writes =================================================================================

TEST_CASE("writes are confirmed with contiguous indices from 1, across connections") {
  Fresh s;
  Client a = s.connect();
  for (int i = 1; i <= 5; ++i) write_ok(a, "a" + std::to_string(i), numbered(i), i);
  Client b = s.connect();
  write_ok(b, "b", "[1,2]", 6);
  write_ok(a, "a6", "{}", 7);
  // Keys other than id and entry are ignored.
  a.send_line(R"({"id":"extra","entry":{"x":1},"other":"ignored","from":"x"})");
  CHECK(a.read_line() == confirmation("extra", 8));
  a.close();
  Client c = s.connect();
  write_ok(c, "c", numbered(9), 9);

  auto lines = dump(s.server.port());
  REQUIRE(lines.size() == 10);
  for (int i = 1; i <= 9; ++i) CHECK(json_int_field(lines[i - 1], "index") == i);
  CHECK(lines[5] == entry_line(6, "[1,2]"));
  CHECK(lines[7] == entry_line(8, R"({"x":1})"));
}

// ===== Stream reads ===========================================================================

TEST_CASE("a read from 0 or from 1 sends every entry, then current") {
  Fresh s;
  Client w = s.connect();
  for (int i = 1; i <= 3; ++i) write_ok(w, "w", numbered(i), i);
  for (int from : {0, 1}) {
    CAPTURE(from);
    Client r = s.connect();
    r.send_line(read_from(from));
    CHECK(r.read_line() == entry_line(1, numbered(1)));
    CHECK(r.read_line() == entry_line(2, numbered(2)));
    CHECK(r.read_line() == entry_line(3, numbered(3)));
    CHECK(r.read_line() == kCurrent);
    r.expect_silence(100ms);
  }
}

TEST_CASE("a read from the middle starts at that index") {
  Fresh s;
  Client w = s.connect();
  for (int i = 1; i <= 5; ++i) write_ok(w, "w", numbered(i), i);
  Client r = s.connect();
  r.send_line(read_from(3));
  CHECK(r.read_line() == entry_line(3, numbered(3)));
  CHECK(r.read_line() == entry_line(4, numbered(4)));
  CHECK(r.read_line() == entry_line(5, numbered(5)));
  CHECK(r.read_line() == kCurrent);
  Client last = s.connect();
  last.send_line(read_from(5));
  CHECK(last.read_line() == entry_line(5, numbered(5)));
  CHECK(last.read_line() == kCurrent);
}

TEST_CASE("a read beyond the head sends current at once, then live entries from its index") {
  Fresh s;
  Client w = s.connect();
  for (int i = 1; i <= 3; ++i) write_ok(w, "w", numbered(i), i);
  Client next = s.connect();  // from head + 1
  next.send_line(read_from(4));
  CHECK(next.read_line() == kCurrent);
  Client far = s.connect();  // from head + 3
  far.send_line(read_from(6));
  CHECK(far.read_line() == kCurrent);
  next.expect_silence(100ms);
  far.expect_silence(0ms);

  write_ok(w, "w", numbered(4), 4);
  CHECK(next.read_line() == entry_line(4, numbered(4)));
  write_ok(w, "w", numbered(5), 5);
  CHECK(next.read_line() == entry_line(5, numbered(5)));
  far.expect_silence(100ms);
  write_ok(w, "w", numbered(6), 6);
  CHECK(next.read_line() == entry_line(6, numbered(6)));
  CHECK(far.read_line() == entry_line(6, numbered(6)));
  write_ok(w, "w", numbered(7), 7);
  CHECK(far.read_line() == entry_line(7, numbered(7)));
}

TEST_CASE("a read of an empty log sends current at once") {
  Fresh s;
  for (int from : {0, 1, 5}) {
    CAPTURE(from);
    Client r = s.connect();
    r.send_line(read_from(from));
    CHECK(r.read_line(2s) == kCurrent);
    r.expect_silence(100ms);
  }
}

TEST_CASE("a stream reader gets entries from other connections live, and the read never ends") {
  Fresh s;
  Client r1 = s.connect(), r2 = s.connect();
  r1.send_line(read_from(1));
  r2.send_line(read_from(0));
  CHECK(r1.read_line() == kCurrent);
  CHECK(r2.read_line() == kCurrent);
  Client w = s.connect();
  for (int i = 1; i <= 3; ++i) {
    write_ok(w, "w", numbered(i), i);
    CHECK(r1.read_line() == entry_line(i, numbered(i)));
    CHECK(r2.read_line() == entry_line(i, numbered(i)));
  }
  w.expect_silence(100ms);  // a writer that did not read gets only its confirmations
  r1.expect_silence(200ms);
  r2.expect_silence(0ms);
}

TEST_CASE("a stream read does not echo the entries its own connection writes after it") {
  Fresh s;
  Client c = s.connect();
  Client other = s.connect();
  other.send_line(read_from(1));
  CHECK(other.read_line() == kCurrent);
  c.send_line(read_from(1));
  CHECK(c.read_line() == kCurrent);
  write_ok(c, "own", numbered(1), 1);
  c.expect_silence(200ms);
  CHECK(other.read_line() == entry_line(1, numbered(1)));
  // Entries written by others still arrive, with the right index.
  write_ok(other, "theirs", numbered(2), 2);
  CHECK(c.read_line() == entry_line(2, numbered(2)));
  write_ok(c, "own2", numbered(3), 3);
  c.expect_silence(200ms);
}

TEST_CASE("a read that follows writes on the same connection sees them") {
  Fresh s;
  Client c = s.connect();
  // Both writes and the read in one send: messages take effect in the order sent.
  c.send(write_msg("a", numbered(1)) + "\n" + write_msg("b", numbered(2)) + "\n" + read_from(1) + "\n");
  CHECK(c.read_line() == confirmation("a", 1));
  CHECK(c.read_line() == confirmation("b", 2));
  CHECK(c.read_line() == entry_line(1, numbered(1)));
  CHECK(c.read_line() == entry_line(2, numbered(2)));
  CHECK(c.read_line() == kCurrent);
  // After the read, its own writes are confirmed only.
  write_ok(c, "c", numbered(3), 3);
  c.expect_silence(200ms);
}

TEST_CASE("a second read while one is active gets already reading, and the connection stays usable") {
  Fresh s;
  Client c = s.connect();
  write_ok(c, "w", numbered(1), 1);
  c.send_line(read_from(1));
  CHECK(c.read_line() == entry_line(1, numbered(1)));
  CHECK(c.read_line() == kCurrent);
  c.send_line(read_from(1));
  CHECK(c.read_line() == kAlreadyReading);
  c.send_line(batch_read(1, 5));
  CHECK(c.read_line() == kAlreadyReading);
  write_ok(c, "w", numbered(2), 2);
  // The first read is still active.
  Client other = s.connect();
  write_ok(other, "o", numbered(3), 3);
  CHECK(c.read_line() == entry_line(3, numbered(3)));
  c.expect_silence(100ms);
}

// ===== Errors =================================================================================

TEST_CASE("valid JSON that is neither a read nor a write is an invalid message; the connection stays usable") {
  const std::vector<std::string> invalid{
      R"({"id":1,"entry":{}})",          // id not a string
      R"({"id":null,"entry":{}})",       //
      R"({"id":"","entry":{}})",         // empty id
      R"({"entry":{}})",                 // no id
      R"({"id":"a"})",                   // no entry
      R"({"id":"a","entry":null})",      // null entry
      R"({"id":"a","entry":1})",         // scalar entries
      R"({"id":"a","entry":"text"})",    //
      R"({"id":"a","entry":true})",      //
      R"({"from":-1})",                  // negative from
      R"({"from":1.5})",                 // fractional from
      R"({"from":"1"})",                 // from not a number
      R"({"from":null})",                //
      R"({"from":true})",                //
      R"({"from":1,"read":0})",          // batch count not >= 1
      R"({"from":1,"read":-1})",         //
      R"({"from":1,"read":1.5})",        //
      R"({"from":1,"read":"2"})",        //
      R"({})",                           // neither
      R"({"other":1})",                  //
      R"([])",                           // bare array
      R"([{"id":"a","entry":{}}])",      //
      R"(1)",                            // bare number
      R"("hello")",                      // string
      R"(null)",                         //
      R"(true)",                         //
  };
  Fresh s;
  Client c = s.connect();
  long long index = 0;
  for (const auto& line : invalid) {
    CAPTURE(line);
    // The error comes back in order: after the reply to the write sent before it.
    ++index;
    c.send(write_msg("before", numbered(index)) + "\n" + line + "\n");
    CHECK(c.read_line() == confirmation("before", index));
    CHECK(c.read_line() == kInvalidMessage);
  }
  // Still usable for writes and reads; nothing invalid was stored.
  write_ok(c, "after", numbered(index + 1), index + 1);
  c.send_line(read_from(index + 1));
  CHECK(c.read_line() == entry_line(index + 1, numbered(index + 1)));
  CHECK(c.read_line() == kCurrent);
  CHECK(dump(s.server.port()).size() == static_cast<size_t>(index + 2));
}

TEST_CASE("a line that is not JSON gets invalid JSON, after the earlier writes are confirmed, then close") {
  const std::vector<std::string> not_json{
      "{",
      "hello",
      R"({"id":"a","entry":{}} x)",       // trailing garbage
      R"({"id":"a","entry":{}}})",        //
      R"({"id":"a","entry":{},})",        // trailing comma
      R"({'id':'a','entry':{}})",         // single quotes
      R"({"id":"a","entry":{"x":01}})",   // leading zero
      R"({"id":"a","entry":{"x":NaN}})",  //
      R"({"id":"a","entry":{"x":1.}})",   //
      "{\"id\":\"a\",\"entry\":{\"x\":\"\x01\"}}",  // raw control character in a string
      R"({"id":"a","entry":{"x":"\q"}})",           // bad escape
      R"({"id":"a","entry":{"x":"\u12"}})",         // short \u escape
      R"("unterminated)",
      R"([1,])",
      "tru",
  };
  Fresh s;
  Client reader = s.connect();
  reader.send_line(read_from(1));
  CHECK(reader.read_line() == kCurrent);
  long long index = 0;
  for (const auto& bad : not_json) {
    CAPTURE(bad);
    ++index;
    Client c = s.connect();
    // A write, the bad line, and a write after it that must never take effect.
    c.send(write_msg("ok", numbered(index)) + "\n" + bad + "\n" + write_msg("never", R"({"never":1})") + "\n");
    CHECK(c.read_line() == confirmation("ok", index));
    CHECK(c.read_line() == kInvalidJson);
    c.expect_eof();
    CHECK(reader.read_line() == entry_line(index, numbered(index)));
  }
  reader.expect_silence(100ms);  // nothing after a bad line was stored, other readers unaffected
  CHECK(dump(s.server.port()).size() == static_cast<size_t>(index + 1));
}

TEST_CASE("invalid UTF-8 is invalid JSON and closes the connection") {
  const std::vector<std::string> bad_utf8{
      "\xff",              // never valid
      "\x80",              // lone continuation byte
      "\xc0\xaf",          // overlong '/'
      "\xe0\x80\xaf",      // overlong, three bytes
      "\xed\xa0\x80",      // encoded surrogate U+D800
      "\xf4\x90\x80\x80",  // above U+10FFFF
      "\xe2\x82",          // truncated sequence
      "\xf8\x88\x80\x80\x80",  // five-byte form
  };
  Fresh s;
  long long index = 0;
  for (const auto& bytes : bad_utf8) {
    for (bool in_key : {false, true}) {
      std::string entry = in_key ? "{\"k" + bytes + "\":1}" : "{\"v\":\"a" + bytes + "b\"}";
      CAPTURE(entry);
      ++index;
      Client c = s.connect();
      c.send(write_msg("ok", numbered(index)) + "\n" + write_msg("bad", entry) + "\n");
      CHECK(c.read_line() == confirmation("ok", index));
      CHECK(c.read_line() == kInvalidJson);
      c.expect_eof();
    }
  }
  CHECK(dump(s.server.port()).size() == static_cast<size_t>(index + 1));
}

TEST_CASE("a line longer than MAX_MESSAGE_BYTES gets message too large, then close") {
  Fresh s({{"MAX_MESSAGE_BYTES", "1024"}});
  // The over-long lines are sent without their newline and only just over the limit (room for a
  // '\r' included), so that the server has read every byte when it closes (no reset).
  {
    Client c = s.connect();
    c.send(write_of_size("big", 1026));
    CHECK(c.read_line() == kTooLarge);
    c.expect_eof();
  }
  {
    Client c = s.connect();  // after a write: that write is confirmed first
    c.send_line(write_msg("ok", numbered(1)));
    CHECK(c.read_line() == confirmation("ok", 1));
    std::string big = write_of_size("big", 1026);
    c.send(big.substr(0, 700));
    c.expect_silence(100ms);
    c.send(big.substr(700));
    CHECK(c.read_line() == kTooLarge);
    c.expect_eof();
  }
  auto lines = dump(s.server.port());
  CHECK(lines.size() == 2);
}

TEST_CASE("an unfinished line is never held beyond MAX_MESSAGE_BYTES") {
  // 1025 bytes of which the last is not '\r': whatever follows, the line is too long, and holding
  // it would hold more than the limit.
  Fresh s({{"MAX_MESSAGE_BYTES", "1024"}});
  Client c = s.connect();
  c.send(write_of_size("big", 1025));
  CHECK(c.read_line(2s) == kTooLarge);
  c.expect_eof(1s);
}

TEST_CASE("a line of exactly MAX_MESSAGE_BYTES is accepted") {
  Fresh s({{"MAX_MESSAGE_BYTES", "1024"}});
  Client c = s.connect();
  std::string exact = write_of_size("exact", 1024);
  REQUIRE(exact.size() == 1024);
  c.send_line(exact);
  CHECK(c.read_line() == confirmation("exact", 1));
  // Held in full, waiting for its newline.
  c.send(exact);
  c.expect_silence(200ms);
  c.send("\n");
  CHECK(c.read_line() == confirmation("exact", 2));
  c.send(exact + "\r\n");  // the line ending is not part of the line
  CHECK(c.read_line() == confirmation("exact", 3));
  // Reads of entries near the limit are not limited by it.
  c.send_line(read_from(1));
  std::string stored = exact.substr(exact.find(R"({"p")"), exact.size() - exact.find(R"({"p")") - 1);
  CHECK(c.read_line() == entry_line(1, stored));
  CHECK(c.read_line() == entry_line(2, stored));
  CHECK(c.read_line() == entry_line(3, stored));
  CHECK(c.read_line() == kCurrent);
}

// ===== Framing ================================================================================

TEST_CASE("CRLF line endings are accepted") {
  Fresh s;
  Client c = s.connect();
  c.send(write_msg("a", R"({"b":1,"a":2})") + "\r\n");
  CHECK(c.read_line() == confirmation("a", 1));
  c.send(write_msg("b", "[3]") + "\r\n" + write_msg("c", "[4]") + "\n" + read_from(1) + "\r\n");
  CHECK(c.read_line() == confirmation("b", 2));
  CHECK(c.read_line() == confirmation("c", 3));
  CHECK(c.read_line() == entry_line(1, R"({"a":2,"b":1})"));
  CHECK(c.read_line() == entry_line(2, "[3]"));
  CHECK(c.read_line() == entry_line(3, "[4]"));
  CHECK(c.read_line() == kCurrent);
  c.expect_silence(100ms);
}

TEST_CASE("blank lines are ignored") {
  Fresh s;
  Client c = s.connect();
  c.send("\n\r\n\n");
  c.expect_silence(100ms);
  c.send(write_msg("a", numbered(1)) + "\n\n\r\n");
  CHECK(c.read_line() == confirmation("a", 1));
  c.expect_silence(100ms);
  c.send("\n" + read_from(1) + "\n\n");
  CHECK(c.read_line() == entry_line(1, numbered(1)));
  CHECK(c.read_line() == kCurrent);
  c.expect_silence(100ms);
}

TEST_CASE("messages sent one byte at a time are framed and answered") {
  Fresh s;
  Client c = s.connect();
  // Multi-byte UTF-8 characters are split across sends too.
  std::string entry = "{\"t\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}";
  std::string input = write_msg("slow", entry) + "\n" + read_from(1) + "\r\n";
  for (char byte : input) {
    c.send(std::string(1, byte));
    std::this_thread::sleep_for(1ms);
  }
  CHECK(c.read_line() == confirmation("slow", 1));
  CHECK(c.read_line() == entry_line(1, entry));
  CHECK(c.read_line() == kCurrent);
}

TEST_CASE("pipelined writes: 1000 lines in one send are confirmed in order 1..1000") {
  Fresh s;
  Client c = s.connect();
  std::string input;
  for (int i = 1; i <= 1000; ++i) input += write_msg("p" + std::to_string(i), numbered(i)) + "\n";
  c.send(input);
  auto lines = c.read_lines(1000, 20s);
  for (int i = 1; i <= 1000; ++i) {
    if (lines[i - 1] != confirmation("p" + std::to_string(i), i)) {
      FAIL_CHECK("confirmation " << i << " is " << lines[i - 1]);
      break;
    }
  }
  auto all = dump(s.server.port());
  REQUIRE(all.size() == 1001);
  for (int i = 1; i <= 1000; ++i) {
    if (all[i - 1] != entry_line(i, numbered(i))) {
      FAIL_CHECK("entry " << i << " is " << all[i - 1]);
      break;
    }
  }
}

// ===== Concurrency ============================================================================

TEST_CASE("two writers and a reader at once: each index once, in order, no gaps, matching confirmations") {
  Fresh s;
  Client reader = s.connect();
  reader.send_line(read_from(1));
  CHECK(reader.read_line() == kCurrent);
  Client a = s.connect(), b = s.connect();
  const int per_writer = 500, chunk = 10;
  std::map<long long, std::string> confirmed;  // index -> canonical entry
  auto writes = [](const std::string& who, int first, int count) {
    std::string out;
    for (int i = first; i < first + count; ++i)
      out += write_msg(who + std::to_string(i), R"({"w":")" + who + R"(","i":)" + std::to_string(i) + "}") + "\n";
    return out;
  };
  for (int i = 0; i < per_writer; i += chunk) {  // interleaved, so both are in flight together
    a.send(writes("a", i, chunk));
    b.send(writes("b", i, chunk));
  }
  for (auto* w : {&a, &b}) {
    std::string who = w == &a ? "a" : "b";
    auto lines = w->read_lines(per_writer, 20s);
    long long last = 0;
    for (int i = 0; i < per_writer; ++i) {
      auto id = json_string_field(lines[i], "id");
      auto index = json_int_field(lines[i], "index");
      REQUIRE_MESSAGE(id == who + std::to_string(i), lines[i]);
      REQUIRE_MESSAGE(index.has_value(), lines[i]);
      CHECK_MESSAGE(*index > last, "confirmations of one connection out of order: " << lines[i]);
      last = *index;
      CHECK_MESSAGE(confirmed.count(*index) == 0, "index " << *index << " given twice");
      confirmed[*index] = R"({"i":)" + std::to_string(i) + R"(,"w":")" + who + R"("})";
    }
  }
  REQUIRE(confirmed.size() == 2u * per_writer);
  CHECK(confirmed.begin()->first == 1);
  CHECK(confirmed.rbegin()->first == 2 * per_writer);
  auto seen = reader.read_lines(2 * per_writer, 20s);
  for (long long i = 1; i <= 2 * per_writer; ++i) {
    if (seen[i - 1] != entry_line(i, confirmed[i])) {
      FAIL_CHECK("reader line " << i << " is " << seen[i - 1] << ", expected " << entry_line(i, confirmed[i]));
      break;
    }
  }
  reader.expect_silence(100ms);
}

TEST_CASE("a stalled reader holds back neither writers nor other readers, and later gets everything") {
  Fresh s({{"SYNC", "none"}});
  const int count = 2000;
  const std::string pad(1000, 'p');
  auto entry = [&](int i) { return R"({"i":)" + std::to_string(i) + R"(,"p":")" + pad + "\"}"; };
  Client stalled = s.connect(), live = s.connect();
  stalled.send_line(read_from(1));
  live.send_line(read_from(1));
  CHECK(live.read_line() == kCurrent);
  Client w = s.connect();
  std::string input;
  for (int i = 1; i <= count; ++i) input += write_msg("w", entry(i)) + "\n";
  w.send(input, 20s);
  auto confirmations = w.read_lines(count, 20s);
  CHECK(confirmations.back() == confirmation("w", count));
  auto check_all = [&](Client& c, const std::string& who) {
    auto lines = c.read_lines(count, 20s);
    for (int i = 1; i <= count; ++i)
      if (lines[i - 1] != entry_line(i, entry(i))) {
        FAIL_CHECK(who << " line " << i << " is " << detail::tail(lines[i - 1], 80));
        break;
      }
  };
  check_all(live, "live reader");
  CHECK(stalled.read_line() == kCurrent);
  check_all(stalled, "stalled reader");
  {
    Client quitter = s.connect();  // a reader that vanishes mid-read
    quitter.send_line(read_from(1));
    quitter.read_lines(10);
    quitter.reset();
  }
  write_ok(w, "after", "[1]", count + 1);
  CHECK(live.read_line() == entry_line(count + 1, "[1]"));
  CHECK(stalled.read_line() == entry_line(count + 1, "[1]"));
}

TEST_CASE("a writer that does not read its confirmations is held back by TCP, with bounded server memory") {
  // Long ids make every confirmation ~4 KB, so unread confirmations pile up fast. The server
  // must stop reading this writer once its output is over the high-water mark: the writer's
  // sends then block long before it has pushed the 256 MB it tries to.
  Fresh s({{"SYNC", "none"}});
  const std::string id(4000, 'i');
  const std::string line = write_msg(id, "{\"a\":1}") + "\n";
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(s.server.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE((::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 || errno == EINPROGRESS));
  pollfd p{fd, POLLOUT, 0};
  REQUIRE(::poll(&p, 1, 5000) == 1);
  const size_t limit = 256u << 20;
  size_t sent = 0;  // bytes of whole and partial lines sent
  auto last_progress = Clock::now();
  while (sent < limit && Clock::now() - last_progress < 1s) {
    size_t off = sent % line.size();
    ssize_t n = ::send(fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      last_progress = Clock::now();
    } else {
      REQUIRE((n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)));
      pollfd q{fd, POLLOUT, 0};
      ::poll(&q, 1, 50);
    }
  }
  MESSAGE("the writer was held back after " << sent / 1024 << " KiB");
  CHECK(sent < limit / 4);
  std::ifstream status("/proc/" + std::to_string(s.server.pid()) + "/status");
  std::string field;
  long rss_kb = -1;
  while (status >> field)
    if (field == "VmRSS:") status >> rss_kb;
  MESSAGE("server resident memory while held back: " << rss_kb << " KiB");
  CHECK(rss_kb > 0);
  CHECK(rss_kb < 48 * 1024);
  // Finish the partial line while reading, half-close, and every whole line is confirmed.
  std::string got;
  char buf[65536];
  size_t lines_sent = (sent + line.size() - 1) / line.size();
  bool shut = false;
  auto deadline = Clock::now() + 60s;
  for (;;) {
    REQUIRE(Clock::now() < deadline);
    if (!shut && sent % line.size() != 0) {
      ssize_t n = ::send(fd, line.data() + sent % line.size(), line.size() - sent % line.size(), MSG_NOSIGNAL);
      if (n > 0) sent += static_cast<size_t>(n);
    }
    if (!shut && sent % line.size() == 0) {
      REQUIRE(::shutdown(fd, SHUT_WR) == 0);
      shut = true;
    }
    pollfd q{fd, POLLIN, 0};
    ::poll(&q, 1, 50);
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n > 0) got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  auto replies = detail::complete_lines(got);
  REQUIRE(replies.size() == lines_sent);
  CHECK(replies.back() == confirmation(id, static_cast<long long>(lines_sent)));
}

TEST_CASE("a read of a log far larger than any buffer gets every entry, then current") {
  Fresh s({{"SYNC", "none"}});
  const int count = 2000;
  const std::string pad(1000, 'p');
  auto entry = [&](int i) { return R"({"i":)" + std::to_string(i) + R"(,"p":")" + pad + "\"}"; };
  Client w = s.connect();
  std::string input;
  for (int i = 1; i <= count; ++i) input += write_msg("w", entry(i)) + "\n";
  w.send(input, 20s);
  CHECK(w.read_lines(count, 20s).back() == confirmation("w", count));
  for (int from : {1, 900}) {
    CAPTURE(from);
    Client r = s.connect();  // a client that reads as fast as it can
    r.send_line(read_from(from));
    auto lines = r.read_lines(count - from + 2, 10s);
    for (int i = from; i <= count; ++i)
      if (lines[i - from] != entry_line(i, entry(i))) {
        FAIL_CHECK("line for index " << i << " is " << detail::tail(lines[i - from], 80));
        break;
      }
    CHECK(lines.back() == kCurrent);
  }
}

// ===== Half-close =============================================================================

TEST_CASE("half-close after writes: the server confirms them, then closes") {
  Fresh s;
  {
    Client c = s.connect();
    c.send_line(write_msg("one", numbered(1)));
    c.shutdown_write();
    CHECK(c.read_line() == confirmation("one", 1));
    c.expect_eof();
  }
  {
    Client c = s.connect();
    std::string input;
    for (int i = 2; i <= 101; ++i) input += write_msg("w" + std::to_string(i), numbered(i)) + "\n";
    c.send(input);
    c.shutdown_write();
    auto lines = c.read_lines(100);
    CHECK(lines.front() == confirmation("w2", 2));
    CHECK(lines.back() == confirmation("w101", 101));
    c.expect_eof();
  }
  CHECK(dump(s.server.port()).size() == 102);
}

// Found by the protocol fuzz target. After a bad line the server stops reading and closes; the
// client, like `printf ... | nc -N`, has sent more and its end of input. Closing a socket with
// unread input sends a reset, and a reset throws away the replies the kernel still holds for the
// peer. Here the client's small receive window keeps replies in the server's kernel until the
// server has closed, so a reset would cut them off and the client would read a reset, not the end.
TEST_CASE("half-close after a bad line and more input: the confirmations before it and the error all arrive, then the end, not a reset") {
  Fresh s;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  int small = 4096;
  REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);  // before connect: the window
  timeval bound{static_cast<time_t>(kWait.count() / 1000), 0};
  REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof bound) == 0);  // a send never hangs
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(s.server.port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  // 300 writes (about 8 KB of confirmations, more than the client's window), the bad line, and
  // more than one read's worth (64 KiB) of input after it, which the server never reads.
  const int writes = 300;
  std::string input;
  for (int i = 1; i <= writes; ++i) input += write_msg("w" + std::to_string(i), numbered(i)) + "\n";
  input += "{bad}\n";
  while (input.size() < 100 * 1024) input += write_msg("never", numbered(0)) + "\n";
  for (size_t sent = 0; sent < input.size();) {
    const ssize_t n = ::send(fd, input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
    REQUIRE(n > 0);
    sent += static_cast<size_t>(n);
  }
  REQUIRE(::shutdown(fd, SHUT_WR) == 0);
  // Read nothing until the server has closed its side: its replies wait in its kernel meanwhile.
  CHECK(s.server.wait_for_log("\"event\":\"close\"").size() == 1);
  std::string got;
  bool reset = false;
  for (auto deadline = Clock::now() + kWait; Clock::now() < deadline;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) != 1) continue;
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      got.append(buf, static_cast<size_t>(n));
      continue;
    }
    reset = n < 0 && errno == ECONNRESET;
    break;
  }
  ::close(fd);
  CHECK_FALSE(reset);
  const auto lines = detail::complete_lines(got);
  REQUIRE(lines.size() == writes + 1);
  CHECK(lines[0] == confirmation("w1", 1));
  CHECK(lines[writes - 1] == confirmation("w" + std::to_string(writes), writes));
  CHECK(lines[writes] == kInvalidJson);
}

TEST_CASE("half-close after a read: the server sends the entries and current, then closes") {
  Fresh s;
  {
    Client c = s.connect();  // empty log
    c.send_line(read_from(1));
    c.shutdown_write();
    CHECK(c.read_line() == kCurrent);
    c.expect_eof();
  }
  Client w = s.connect();
  for (int i = 1; i <= 3; ++i) write_ok(w, "w", numbered(i), i);
  {
    Client c = s.connect();
    c.send_line(read_from(2));
    c.shutdown_write();
    CHECK(c.read_line() == entry_line(2, numbered(2)));
    CHECK(c.read_line() == entry_line(3, numbered(3)));
    CHECK(c.read_line() == kCurrent);
    c.expect_eof();
  }
  {
    Client c = s.connect();  // a write, then a read that sees it, then half-close
    c.send(write_msg("x", numbered(4)) + "\n" + read_from(3) + "\n");
    c.shutdown_write();
    CHECK(c.read_line() == confirmation("x", 4));
    CHECK(c.read_line() == entry_line(3, numbered(3)));
    CHECK(c.read_line() == entry_line(4, numbered(4)));
    CHECK(c.read_line() == kCurrent);
    c.expect_eof();
  }
}

// ===== Batch reads (issue 4) ==================================================================

TEST_CASE("a batch read with fewer than K entries: current, then live entries including its own writes, then head") {
  Fresh s;
  Client w = s.connect();
  write_ok(w, "w", numbered(1), 1);
  write_ok(w, "w", numbered(2), 2);
  Client c = s.connect();
  c.send_line(batch_read(1, 4));
  CHECK(c.read_line() == entry_line(1, numbered(1)));
  CHECK(c.read_line() == entry_line(2, numbered(2)));
  CHECK(c.read_line() == kCurrent);
  c.expect_silence(100ms);
  write_ok(w, "w", numbered(3), 3);
  CHECK(c.read_line() == entry_line(3, numbered(3)));
  // Its own write counts: both the confirmation and the entry arrive, then the batch ends.
  c.send_line(write_msg("own", numbered(4)));
  std::vector<std::string> lines = c.read_lines(3);
  std::set<std::string> got(lines.begin(), lines.begin() + 2);
  CHECK(got == std::set<std::string>{confirmation("own", 4), entry_line(4, numbered(4))});
  CHECK(lines[2] == head_line(4));
  c.expect_silence(100ms);
  write_ok(w, "w", numbered(5), 5);
  c.expect_silence(100ms);  // the batch is over
}

TEST_CASE("a batch read with at least K entries: K entries, no current, then head") {
  Fresh s;
  Client w = s.connect();
  for (int i = 1; i <= 3; ++i) write_ok(w, "w", numbered(i), i);
  Client c = s.connect();
  c.send_line(batch_read(1, 3));  // exactly K
  CHECK(c.read_line() == entry_line(1, numbered(1)));
  CHECK(c.read_line() == entry_line(2, numbered(2)));
  CHECK(c.read_line() == entry_line(3, numbered(3)));
  CHECK(c.read_line() == head_line(3));
  c.expect_silence(100ms);
  c.send_line(batch_read(1, 2));  // more than K
  CHECK(c.read_line() == entry_line(1, numbered(1)));
  CHECK(c.read_line() == entry_line(2, numbered(2)));
  CHECK(c.read_line() == head_line(3));
  c.send_line(batch_read(0, 1));  // from 0 means from 1
  CHECK(c.read_line() == entry_line(1, numbered(1)));
  CHECK(c.read_line() == head_line(3));
  c.send_line(batch_read(3, 1));
  CHECK(c.read_line() == entry_line(3, numbered(3)));
  CHECK(c.read_line() == head_line(3));
  c.expect_silence(100ms);
}

TEST_CASE("a new read may follow a finished batch read") {
  Fresh s;
  Client c = s.connect();
  write_ok(c, "w", numbered(1), 1);
  c.send_line(batch_read(1, 1));
  CHECK(c.read_line() == entry_line(1, numbered(1)));
  CHECK(c.read_line() == head_line(1));
  c.send_line(batch_read(2, 1));  // nothing there yet: waits for the next entry
  CHECK(c.read_line() == kCurrent);
  Client w = s.connect();
  write_ok(w, "w", numbered(2), 2);
  CHECK(c.read_line() == entry_line(2, numbered(2)));
  CHECK(c.read_line() == head_line(2));
  c.send_line(read_from(2));  // a stream read after a batch read
  CHECK(c.read_line() == entry_line(2, numbered(2)));
  CHECK(c.read_line() == kCurrent);
  write_ok(w, "w", numbered(3), 3);
  CHECK(c.read_line() == entry_line(3, numbered(3)));
}

TEST_CASE("a batch read from beyond the head waits for entries from its index") {
  Fresh s;
  Client w = s.connect();
  write_ok(w, "w", numbered(1), 1);
  Client c = s.connect();
  c.send_line(batch_read(3, 2));
  CHECK(c.read_line() == kCurrent);
  write_ok(w, "w", numbered(2), 2);
  c.expect_silence(100ms);
  write_ok(w, "w", numbered(3), 3);
  CHECK(c.read_line() == entry_line(3, numbered(3)));
  write_ok(w, "w", numbered(4), 4);
  CHECK(c.read_line() == entry_line(4, numbered(4)));
  CHECK(c.read_line() == head_line(4));
}

TEST_CASE("a read during an unfinished batch read gets already reading") {
  Fresh s;
  Client c = s.connect();
  c.send_line(batch_read(1, 2));
  CHECK(c.read_line() == kCurrent);
  c.send_line(read_from(1));
  CHECK(c.read_line() == kAlreadyReading);
  c.send_line(batch_read(1, 1));
  CHECK(c.read_line() == kAlreadyReading);
  Client w = s.connect();
  write_ok(w, "w", numbered(1), 1);
  write_ok(w, "w", numbered(2), 2);
  CHECK(c.read_line() == entry_line(1, numbered(1)));
  CHECK(c.read_line() == entry_line(2, numbered(2)));
  CHECK(c.read_line() == head_line(2));
}

// ===== Replies in message order (doc/protocol.md, "Replies in order") ==================================

namespace {
// Three entries written by another connection, so that reads have something to catch up on.
void three_entries(Fresh& s) {
  Client w = s.connect();
  for (int i = 1; i <= 3; i++) write_ok(w, "w" + std::to_string(i), numbered(i), i);
}
}  // namespace

TEST_CASE("order: a batch read's entries and head come before the reply to a write sent after it in the same packet, and the head does not count that write") {
  Fresh s;
  three_entries(s);
  Client c = s.connect();
  c.send(batch_read(1, 3) + "\n" + write_msg("x", numbered(9)) + "\n");
  CHECK(c.read_lines(5) == std::vector<std::string>{entry_line(1, numbered(1)), entry_line(2, numbered(2)),
                                                   entry_line(3, numbered(3)), head_line(3),
                                                   confirmation("x", 4)});
}

TEST_CASE("order: a stream read's catch-up, up to current, comes before the reply to a later invalid message") {
  Fresh s;
  three_entries(s);
  Client c = s.connect();
  c.send(read_from(1) + "\n[1]\n");
  CHECK(c.read_lines(5) == std::vector<std::string>{entry_line(1, numbered(1)), entry_line(2, numbered(2)),
                                                   entry_line(3, numbered(3)), kCurrent, kInvalidMessage});
}

TEST_CASE("order: two batch reads in one packet; the first is answered whole before the second is taken") {
  Fresh s;
  three_entries(s);
  Client c = s.connect();
  // The first ends before current, so the second is a new read, not "already reading".
  c.send(batch_read(1, 2) + "\n" + batch_read(2, 2) + "\n");
  CHECK(c.read_lines(6) == std::vector<std::string>{entry_line(1, numbered(1)), entry_line(2, numbered(2)),
                                                   head_line(3), entry_line(2, numbered(2)),
                                                   entry_line(3, numbered(3)), head_line(3)});
  // A first read that reaches current stays live: the second gets already reading, after current.
  Client d = s.connect();
  d.send(batch_read(1, 5) + "\n" + batch_read(1, 5) + "\n");
  CHECK(d.read_lines(5) == std::vector<std::string>{entry_line(1, numbered(1)), entry_line(2, numbered(2)),
                                                   entry_line(3, numbered(3)), kCurrent, kAlreadyReading});
}

TEST_CASE("order: a write sent after a stream read's request waits for its catch-up, then is confirmed and not echoed") {
  Fresh s;
  three_entries(s);
  Client c = s.connect();
  c.send(read_from(2) + "\n" + write_msg("mine", numbered(4)) + "\n");
  CHECK(c.read_lines(4) == std::vector<std::string>{entry_line(2, numbered(2)), entry_line(3, numbered(3)),
                                                   kCurrent, confirmation("mine", 4)});
  c.expect_silence(100ms);
}

TEST_CASE("order: writes while a batch read waits for live entries are not held; its head stops short of the writes it did not send") {
  Fresh s;
  three_entries(s);
  Client c = s.connect();
  c.send_line(batch_read(3, 3));
  CHECK(c.read_lines(2) == std::vector<std::string>{entry_line(3, numbered(3)), kCurrent});
  // Three writes in one packet (as tcp-log-client 6 sends them while its read waits): all are
  // confirmed; the read takes two of them and ends, and its head does not count the third.
  c.send(write_msg("a", numbered(4)) + "\n" + write_msg("b", numbered(5)) + "\n" +
         write_msg("c", numbered(6)) + "\n");
  std::vector<std::string> lines = c.read_lines(6);
  std::vector<std::string> confirmations, entries;
  for (const auto& l : lines) (l.find("\"id\"") != std::string::npos ? confirmations : entries).push_back(l);
  CHECK(confirmations == std::vector<std::string>{confirmation("a", 4), confirmation("b", 5), confirmation("c", 6)});
  CHECK(entries == std::vector<std::string>{entry_line(4, numbered(4)), entry_line(5, numbered(5)), head_line(5)});
  c.expect_silence(100ms);
}

// ===== Restart and storage ====================================================================

namespace {
// Writes the varied entries, reads everything back, stops the server with `stop`, restarts it on
// the same data and checks the read-back is identical and the next index follows on.
template <typename Stop>
void check_restart(Stop stop) {
  TempDir dir;
  std::vector<std::string> before;
  long long count = 0;
  {
    ServerProcess server(dir.path());
    server.start();
    Client c(server.port());
    for (const auto& [entry, canonical] : varied_entries()) write_ok(c, "r", entry, ++count);
    before = dump(server.port());
    REQUIRE(before.size() == static_cast<size_t>(count + 1));
    for (long long i = 1; i <= count; ++i) CHECK(before[i - 1] == entry_line(i, varied_entries()[i - 1].second));
    stop(server);
  }
  ServerProcess again(dir.path());
  again.start();
  CHECK(dump(again.port()) == before);
  Client c(again.port());
  write_ok(c, "next", "[0]", count + 1);
  CHECK(again.stop_term() == 0);
}
}  // namespace

TEST_CASE("restart after SIGTERM: exit status 0, everything read back identical") {
  check_restart([](ServerProcess& server) {
    Client idle(server.port());  // open connections do not stop a graceful exit
    CHECK(server.stop_term() == 0);
    CHECK(idle.wait_eof());
  });
}

TEST_CASE("restart after kill -9 while idle: everything read back identical") {
  check_restart([](ServerProcess& server) {
    std::this_thread::sleep_for(50ms);
    CHECK(server.kill9() == 128 + SIGKILL);
  });
}

TEST_CASE("SIGTERM stops the server with exit 0 while readers and writers are connected") {
  Fresh s;
  Client reader = s.connect(), writer = s.connect(), idle = s.connect();
  reader.send_line(read_from(1));
  CHECK(reader.read_line() == kCurrent);
  write_ok(writer, "w", numbered(1), 1);
  CHECK(reader.read_line() == entry_line(1, numbered(1)));
  CHECK(s.server.stop_term() == 0);
  CHECK(reader.wait_eof());
  CHECK(writer.wait_eof());
  CHECK(idle.wait_eof());
}

TEST_CASE("an entry is stored as a blob named by the SHA-256 of its canonical bytes, indexed in 65-byte records") {
  Fresh s;
  Client c = s.connect();
  write_ok(c, "a", R"({"b":1,"a":"x"})", 1);
  const std::string canonical = R"({"a":"x","b":1})";
  const std::string hash = "cdab067e9f3beb32d1252cfd63e492592fecbf591b0d08cadb24bb17f3864246";
  CHECK(sha256_hex(canonical) == hash);
  const std::string blobs = s.server.blobs_dir();
  // The index record is made after the blob file, both a moment after the confirmation.
  const std::string index_file = s.server.leveldb_dir() + "/index";
  CHECK(wait_for_contents(index_file, hash + "\n") == hash + "\n");
  CHECK(fs::is_regular_file(blobs + "/cd/ab067e9f3beb32d1252cfd63e492592fecbf591b0d08cadb24bb17f3864246"));
  CHECK(read_file(blob_path(blobs, hash)) == canonical);

  // The same entry again: a second index record, no second blob.
  write_ok(c, "b", R"({ "a" : "x", "b" : 1 })", 2);
  // Another entry (an array, with UTF-8).
  const std::string array = "[1,\"\xc3\xa9\",{\"k\":null}]";
  write_ok(c, "c", "[ 1, \"\\u00e9\", {\"k\":null} ]", 3);
  const std::string array_hash = sha256_hex(array);
  const std::string records = hash + "\n" + hash + "\n" + array_hash + "\n";
  CHECK(wait_for_contents(index_file, records) == records);
  CHECK(read_file(blob_path(blobs, array_hash)) == array);
  CHECK(count_blobs(blobs) == 2);
  CHECK(fs::file_size(index_file) == 3 * 65);
}

TEST_CASE("an entry whose blob is missing or corrupt is sent as an index error, and the stream goes on") {
  TempDir dir;
  std::vector<std::string> hashes;
  {
    ServerProcess server(dir.path());
    server.start();
    Client c(server.port());
    for (int i = 1; i <= 4; ++i) {
      write_ok(c, "w", numbered(i), i);
      hashes.push_back(sha256_hex(numbered(i)));
    }
    CHECK(server.stop_term() == 0);
  }
  const std::string blobs = dir / "blobs";
  REQUIRE(fs::remove(blob_path(blobs, hashes[1])));                  // entry 2: missing
  write_file(blob_path(blobs, hashes[2]), R"({"n":333})");          // entry 3: wrong bytes
  ServerProcess server(dir.path());
  server.start();
  Client r(server.port());
  r.send_line(read_from(1));
  CHECK(r.read_line() == entry_line(1, numbered(1)));
  std::string missing = r.read_line();
  CHECK_MESSAGE(missing.rfind(R"({"index":2,"error":")", 0) == 0, missing);
  std::string corrupt = r.read_line();
  CHECK_MESSAGE(corrupt.rfind(R"({"index":3,"error":")", 0) == 0, corrupt);
  CHECK(r.read_line() == entry_line(4, numbered(4)));
  CHECK(r.read_line() == kCurrent);
  Client w(server.port());
  write_ok(w, "w", numbered(5), 5);
  CHECK(r.read_line() == entry_line(5, numbered(5)));
}

TEST_CASE("reading an entry leaves its blob's access time alone (O_NOATIME): a replay writes nothing to the disk") {
  TempDir dir;
  {
    ServerProcess server(dir.path());
    server.start();
    Client c(server.port());
    write_ok(c, "w", numbered(1), 1);
    CHECK(server.stop_term() == 0);
  }
  const std::string blob = blob_path(dir / "blobs", sha256_hex(numbered(1)));
  const std::string control = dir / "control";
  write_file(control, "x");
  // Access times three days old: relatime updates such an access time at the next read.
  const timespec old_atime{::time(nullptr) - 3 * 86400, 0};
  const timespec times[2] = {old_atime, {0, UTIME_OMIT}};
  REQUIRE(::utimensat(AT_FDCWD, blob.c_str(), times, 0) == 0);
  REQUIRE(::utimensat(AT_FDCWD, control.c_str(), times, 0) == 0);
  auto atime_of = [](const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_atim.tv_sec;
  };
  (void)read_file(control);  // a plain read: does this file system record access times at all?
  if (atime_of(control) == old_atime.tv_sec) {
    MESSAGE("skipped: the file system of " << dir.path() << " does not update access times (noatime)");
    return;
  }
  ServerProcess server(dir.path());
  server.start();
  Client r(server.port());
  r.send_line(read_from(1));
  CHECK(r.read_line() == entry_line(1, numbered(1)));
  CHECK(r.read_line() == kCurrent);
  CHECK(server.stop_term() == 0);
  CHECK(atime_of(blob) == old_atime.tv_sec);
}

TEST_CASE("entries are canonicalised: UTF-16 key order, last duplicate wins, JSON.stringify escapes, numbers as written") {
  const std::string input =
      R"({ "z" : 1 , "b" : [ 1 , { "d" : 2 , "c" : 1 } , [ ] , { } , true , false , null ] ,)"
      "\t"
      R"("a" : "first", "s" : "\u0041\n\t\"\\\/\u00E9\u0001\u001f\b\f\r\ud83d\ude00\u007f\u2028",)"
      R"( "l" : "\uD800x\udc00", "n" : 12345678901234567890 , "f" : 1.0 , "e" : -0.5E+10 , "m" : -0,)"
      R"( "B" : 0, "\u00e9" : 1, )"
      "\"\xf0\x9f\x98\x80\": 2, \"\xef\xbd\x9a\": 3, "
      R"("a" : "last" })";
  const std::string expected =
      R"({"B":0,"a":"last","b":[1,{"c":1,"d":2},[],{},true,false,null],"e":-0.5E+10,"f":1.0,)"
      R"("l":"\ud800x\udc00","m":-0,"n":12345678901234567890,"s":"A\n\t\"\\/)"
      "\xc3\xa9"
      R"(\u0001\u001f\b\f\r)"
      "\xf0\x9f\x98\x80\x7f\xe2\x80\xa8"
      R"(","z":1,)"
      "\"\xc3\xa9\":1,\"\xf0\x9f\x98\x80\":2,\"\xef\xbd\x9a\":3}";
  Fresh s;
  Client c = s.connect();
  write_ok(c, "canon", input, 1);
  write_ok(c, "array", R"([ {"b":1,"a":2} , "x" , -1e-7 ])", 2);
  c.send_line(read_from(1));
  CHECK(c.read_line() == entry_line(1, expected));
  CHECK(c.read_line() == entry_line(2, R"([{"a":2,"b":1},"x",-1e-7])"));
  CHECK(c.read_line() == kCurrent);
  CHECK(wait_for_contents(blob_path(s.server.blobs_dir(), sha256_hex(expected)), expected) == expected);
  for (const auto& [entry, canonical] : varied_entries()) {
    CAPTURE(entry);
    Client one = s.connect();
    one.send_line(write_msg("v", entry));
    auto index = json_int_field(one.read_line(), "index");
    REQUIRE(index.has_value());
    one.send_line(read_from(*index));
    CHECK(one.read_line() == entry_line(*index, canonical));
  }
}

// ===== Network ================================================================================

TEST_CASE("HOST=::1 serves IPv6 loopback only") {
  if (!ipv6_loopback_usable()) {
    MESSAGE("skipped: no IPv6 loopback on this machine");
    return;
  }
  Fresh s({{"HOST", "::1"}});
  Client c(s.server.port(), "::1");
  write_ok(c, "v6", numbered(1), 1);
  c.send_line(read_from(1));
  CHECK(c.read_line() == entry_line(1, numbered(1)));
  CHECK(c.read_line() == kCurrent);
  CHECK_FALSE(Client::try_connect(s.server.port(), "127.0.0.1", 1s).has_value());
}

TEST_CASE("HOST=127.0.0.1 serves IPv4 loopback only") {
  Fresh s({{"HOST", "127.0.0.1"}});
  Client c(s.server.port(), "127.0.0.1");
  write_ok(c, "v4", numbered(1), 1);
  if (ipv6_loopback_usable()) CHECK_FALSE(Client::try_connect(s.server.port(), "::1", 1s).has_value());
}

TEST_CASE("HOST=localhost is accepted and serves loopback") {
  Fresh s({{"HOST", "localhost"}});
  auto v4 = Client::try_connect(s.server.port(), "127.0.0.1", 1s);
  auto v6 = ipv6_loopback_usable() ? Client::try_connect(s.server.port(), "::1", 1s) : std::nullopt;
  REQUIRE_MESSAGE((v4 || v6), "neither 127.0.0.1 nor ::1 accepts connections");
  Client& c = v4 ? *v4 : *v6;
  write_ok(c, "local", numbered(1), 1);
}

TEST_CASE("by default the server accepts IPv4 and IPv6 loopback on one port") {
  Fresh s;
  Client v4(s.server.port(), "127.0.0.1");
  write_ok(v4, "v4", numbered(1), 1);
  if (!ipv6_loopback_usable()) return;
  Client v6(s.server.port(), "::1");
  write_ok(v6, "v6", numbered(2), 2);
}

// ===== Logs ===================================================================================

TEST_CASE("the listening log line is pino NDJSON with the real port") {
  Fresh s;
  auto lines = s.server.wait_for_log(R"("msg":"listening")");
  REQUIRE(lines.size() == 1);
  const std::string& line = lines[0];
  CAPTURE(line);
  CHECK(line.rfind(R"({"level":30,"time":)", 0) == 0);
  CHECK(line.back() == '}');
  CHECK(line.find(R"("event":"listening")") != std::string::npos);
  CHECK(json_int_field(line, "port") == s.server.port());
  CHECK(json_int_field(line, "pid") == s.server.pid());
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  CHECK(json_string_field(line, "hostname") == std::string(host));
  auto now_ms = std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto time = json_int_field(line, "time");
  REQUIRE(time.has_value());
  CHECK(*time <= now_ms + 1000);
  CHECK(*time >= now_ms - 60000);
  Client c(s.server.port());  // and it is the port it really listens on
  write_ok(c, "w", numbered(1), 1);
}

TEST_CASE("connections are logged with connected and close events, and messages are not logged at info") {
  Fresh s;
  Client c = s.connect();
  auto connected = s.server.wait_for_log(R"("event":"connected")");
  REQUIRE(connected.size() == 1);
  CHECK(connected[0].rfind(R"({"level":30,)", 0) == 0);
  CHECK(connected[0].find(R"("msg":")") != std::string::npos);
  size_t lines_before = s.server.log_lines().size();
  for (int i = 1; i <= 20; ++i) write_ok(c, "w", numbered(i), i);
  c.send_line(read_from(1));
  c.read_lines(21);
  std::this_thread::sleep_for(100ms);
  CHECK(s.server.log_lines().size() == lines_before);
  c.close();
  auto closed = s.server.wait_for_log(R"("event":"close")");
  REQUIRE(closed.size() == 1);
  CHECK(closed[0].rfind(R"({"level":30,)", 0) == 0);
  for (const auto& line : s.server.log_lines()) {
    CAPTURE(line);
    CHECK(line.rfind(R"({"level":)", 0) == 0);
    CHECK(line.back() == '}');
    CHECK(line.find(R"(,"time":)") != std::string::npos);
    CHECK(line.find(R"(,"pid":)") != std::string::npos);
    CHECK(line.find(R"(,"hostname":")") != std::string::npos);
    CHECK(line.find(R"(,"msg":")") != std::string::npos);
  }
}

TEST_CASE("invalid input is logged at warn with event invalid") {
  Fresh s;
  Client c = s.connect();
  c.send_line("[]");
  CHECK(c.read_line() == kInvalidMessage);
  auto invalid = s.server.wait_for_log(R"("event":"invalid")");
  REQUIRE(invalid.size() == 1);
  CHECK(invalid[0].rfind(R"({"level":40,)", 0) == 0);
  c.send_line("not json");
  CHECK(c.read_line() == kInvalidJson);
  CHECK(s.server.wait_for_log(R"("event":"invalid")", 2).size() == 2);
}

// ===== Configuration ==========================================================================

TEST_CASE("a bad flag or value exits 64 with one line naming it") {
  struct Bad {
    std::vector<std::string> args;
    detail::EnvOverrides env;
    std::string name;  // must appear in the message (case-insensitive)
  };
  const std::vector<Bad> cases{
      {{"--bogus"}, {}, "bogus"},
      {{}, {{"PORT", "abc"}}, "PORT"},
      {{}, {{"PORT", "70000"}}, "PORT"},
      {{}, {{"PORT", "-1"}}, "PORT"},
      {{}, {{"SYNC", "sometimes"}}, "SYNC"},
      {{}, {{"LOG_LEVEL", "loud"}}, "LOG_LEVEL"},
      {{}, {{"MAX_MESSAGE_BYTES", "lots"}}, "MAX_MESSAGE_BYTES"},
      {{}, {{"HOST", "not-an-address"}}, "HOST"},
      {{"--port", "abc"}, {}, "port"},
      {{"--sync", "sometimes"}, {}, "sync"},
      {{"--port"}, {}, "port"},
      {{}, {{"MAX_CONNECTIONS", "0"}}, "MAX_CONNECTIONS"},
      {{"--max-connections", "many"}, {}, "max-connections"},
      {{}, {{"MAX_INPUT_BYTES", "-5"}}, "MAX_INPUT_BYTES"},
      // Less than one longest line and its "\r\n": no connection could send a longest line.
      {{}, {{"MAX_MESSAGE_BYTES", "1000"}, {"MAX_INPUT_BYTES", "1001"}}, "MAX_INPUT_BYTES"},
      {{"--max-input-bytes", "100"}, {}, "max-input-bytes"},
      {{}, {{"MAX_OUTPUT_BYTES", "0"}}, "MAX_OUTPUT_BYTES"},
      {{}, {{"LINE_TIMEOUT", "1.5"}}, "LINE_TIMEOUT"},
      {{"--line-timeout", "86401"}, {}, "line-timeout"},
      {{}, {{"READ_RETRY_SECONDS", "0"}}, "READ_RETRY_SECONDS"},
      {{}, {{"JOURNAL_BYTES", "lots"}}, "JOURNAL_BYTES"},
      // Less than 4 x (MAX_MESSAGE_BYTES + 4096): a side could not hold two longest entries.
      {{"--journal-bytes", "4194304"}, {}, "journal-bytes"},
      {{}, {{"MAX_MESSAGE_BYTES", "1000"}, {"JOURNAL_BYTES", "20383"}}, "JOURNAL_BYTES"},
  };
  auto lower = [](std::string s) {
    for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return s;
  };
  for (const auto& bad : cases) {
    std::string what = bad.args.empty() ? bad.env.begin()->first + "=" + *bad.env.begin()->second
                                        : bad.args[0] + (bad.args.size() > 1 ? " " + bad.args[1] : "");
    CAPTURE(what);
    RunResult r = run_server_binary(bad.args, bad.env, 5s);
    std::string output = r.output();
    CAPTURE(output);
    CHECK(r.status == 64);
    CHECK(lower(output).find(lower(bad.name)) != std::string::npos);
    CHECK(detail::complete_lines(output).size() == 1);
  }
}

TEST_CASE("--help exits 0 and documents the variables and exit statuses; --version exits 0") {
  RunResult help = run_server_binary({"--help"});
  CAPTURE(help.output());
  CHECK(help.status == 0);
  for (const char* word : {"PORT", "HOST", "BLOBS", "LEVELDB", "SYNC", "LOG_LEVEL", "MAX_MESSAGE_BYTES",
                           "MAX_CONNECTIONS", "MAX_INPUT_BYTES", "MAX_OUTPUT_BYTES", "LINE_TIMEOUT", "READ_RETRY_SECONDS", "JOURNAL_BYTES", "64"})
    CHECK_MESSAGE(help.output().find(word) != std::string::npos, std::string(word));
  RunResult version = run_server_binary({"--version"});
  CAPTURE(version.output());
  CHECK(version.status == 0);
  CHECK_FALSE(version.output().empty());
}

TEST_CASE("flags win over environment variables") {
  TempDir dir;
  ServerProcess server(dir.path());
  server.env("BLOBS", dir / "env-blobs").env("LEVELDB", dir / "env-index");
  server.arg("--blobs").arg(dir / "flag-blobs").arg("--leveldb").arg(dir / "flag-index");
  server.start();
  Client c(server.port());
  write_ok(c, "w", R"({"b":1,"a":"x"})", 1);
  const std::string hash = sha256_hex(R"({"a":"x","b":1})");
  CHECK(wait_for_path(blob_path(dir / "flag-blobs", hash)));
  CHECK(fs::is_regular_file(blob_path(dir / "flag-blobs", hash)));
  CHECK(wait_for_contents(dir / "flag-index/index", hash + "\n") == hash + "\n");
  CHECK_FALSE(fs::exists(blob_path(dir / "env-blobs", hash)));
  CHECK_FALSE(fs::exists(dir / "env-index/index"));
}

TEST_CASE("LEVELDOWN is accepted as an alias of LEVELDB") {
  TempDir dir;
  ServerProcess server(dir.path());
  server.unset_env("LEVELDB").env("LEVELDOWN", dir / "leveldown");
  server.start();
  Client c(server.port());
  write_ok(c, "w", numbered(1), 1);
  CHECK(wait_for_contents(dir / "leveldown/index", sha256_hex(numbered(1)) + "\n") == sha256_hex(numbered(1)) + "\n");
}

TEST_CASE("a failure to start is one fatal log line and a non-zero status other than 64") {
  Fresh running({{"HOST", "127.0.0.1"}});
  {
    RunResult r = run_server_binary({}, {{"HOST", "127.0.0.1"}, {"PORT", std::to_string(running.server.port())}});
    CAPTURE(r.output());
    CHECK(r.status != 0);
    CHECK(r.status != 64);
    CHECK(r.status != -1);
    CHECK(r.out.find(R"("level":60)") != std::string::npos);
    CHECK(r.output().find(std::to_string(running.server.port())) != std::string::npos);
  }
  {
    TempDir dir;
    write_file(dir / "plainfile", "not a directory");
    RunResult r = run_server_binary({}, {{"LEVELDB", dir / "plainfile/index-dir"}});
    CAPTURE(r.output());
    CHECK(r.status != 0);
    CHECK(r.status != 64);
    CHECK(r.status != -1);
    CHECK(r.out.find(R"("level":60)") != std::string::npos);
    CHECK(r.output().find("plainfile") != std::string::npos);
  }
  // The running server is unaffected.
  Client c = running.connect();
  write_ok(c, "w", numbered(1), 1);
}

// Socket options are invisible to a peer, so the server runs under strace here and the test
// reads which options it set on the socket it accepted.
TEST_CASE("every accepted socket gets SO_KEEPALIVE and TCP_NODELAY") {
  std::string strace = dur::find_program("strace");
  REQUIRE_MESSAGE(!strace.empty(), "strace is needed (make check-deps installs it)");
  TempDir dir;
  std::string trace = dir / "sockopt.trace";
  dur::Wrapped s(dir.path(), {strace, "-f", "-qq", "-o", trace, "-e", "trace=accept4,setsockopt"},
                 {{"PORT", "0"}, {"BLOBS", dir / "blobs"}, {"LEVELDB", dir / "leveldb"}});
  REQUIRE(s.start());
  for (int i = 0; i < 2; i++) {
    Client c(s.port());
    c.send_line(write_msg("k" + std::to_string(i), numbered(i)));
    CHECK(c.read_line() == confirmation("k" + std::to_string(i), i + 1));
  }
  s.signal_server(SIGTERM);
  CHECK(s.wait(10000ms) == 0);
  // Each accept4() result, then the options set on that descriptor before the next accept.
  std::vector<std::string> accepted;
  std::vector<std::set<std::string>> options;
  for (const auto& line : detail::complete_lines(read_file(trace))) {
    size_t call = line.find_first_not_of("0123456789 ");
    if (call == std::string::npos) continue;
    std::string rest = line.substr(call);
    size_t eq = rest.rfind(" = ");
    if (rest.rfind("accept4(", 0) == 0 && eq != std::string::npos && rest[eq + 3] != '-') {
      accepted.push_back(rest.substr(eq + 3, rest.find_first_not_of("0123456789", eq + 3) - eq - 3));
      options.emplace_back();
    }
    if (!accepted.empty() && rest.rfind("setsockopt(" + accepted.back() + ",", 0) == 0 &&
        rest.find(", [1], ") != std::string::npos)
      for (const char* opt : {"SO_KEEPALIVE", "TCP_NODELAY"})
        if (rest.find(opt) != std::string::npos) options.back().insert(opt);
  }
  REQUIRE(accepted.size() == 2);
  for (const auto& set : options) {
    CHECK(set.count("SO_KEEPALIVE") == 1);
    CHECK(set.count("TCP_NODELAY") == 1);
  }
}
