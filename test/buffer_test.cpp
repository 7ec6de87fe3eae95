// Unit tests of Buffer and LineFramer (buffer.hpp): no sockets.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "buffer.hpp"

namespace {

// Frames `chunks` as if each arrived in its own read, taking every line at once; returns the
// lines, and "<too long>" for a TooLong frame (after which the input is abandoned).
std::vector<std::string> frame_chunks(const std::vector<std::string>& chunks, size_t max_line,
                                      bool end_after = false) {
  Buffer input;
  LineFramer framer(max_line);
  std::vector<std::string> lines;
  for (size_t i = 0; i < chunks.size(); i++) {
    input.append(chunks[i]);
    const bool at_end = end_after && i + 1 == chunks.size();
    for (;;) {
      LineFramer::Frame f = framer.next(input.view(), at_end);
      if (f.kind == LineFramer::Kind::NeedMore) break;
      if (f.kind == LineFramer::Kind::TooLong) {
        lines.push_back("<too long>");
        return lines;
      }
      lines.emplace_back(f.line);
      input.consume(f.length);
      framer.consumed(f.length);
    }
  }
  return lines;
}

}  // namespace

TEST_CASE("Buffer: empty holds no memory, grows by what arrives, frees itself when drained") {
  size_t total = 0;
  Buffer b(&total);
  CHECK(b.capacity() == 0);
  CHECK(total == 0);
  b.append("hello", 5);
  CHECK(b.capacity() == 5);  // exactly what arrived, not a fixed chunk
  CHECK(total == 5);
  CHECK(b.view() == "hello");
  b.consume(2);
  CHECK(b.view() == "llo");
  CHECK(b.capacity() == 5);
  b.consume(3);
  CHECK(b.empty());
  CHECK(b.capacity() == 0);
  CHECK(total == 0);
}

TEST_CASE("Buffer: many small appends stay amortised and keep every byte in order") {
  Buffer b;
  std::string expect;
  size_t reallocations = 0, last_capacity = 0;
  for (int i = 0; i < 100000; i++) {
    char c = static_cast<char>('a' + i % 26);
    b.append(c);
    expect.push_back(c);
    if (b.capacity() != last_capacity) reallocations++;
    last_capacity = b.capacity();
  }
  CHECK(b.view() == expect);
  CHECK(reallocations < 40);  // growth by half: logarithmic, not one per byte
  CHECK(b.capacity() < 2 * expect.size());
}

TEST_CASE("Buffer: consumed space at the front is reused before the buffer grows") {
  Buffer b;
  b.append(std::string(1000, 'x'));
  b.consume(900);
  const size_t cap = b.capacity();
  b.append(std::string(800, 'y'));  // 100 live + 800 fit in 1000 once the 100 slide forward
  CHECK(b.capacity() == cap);
  CHECK(b.view() == std::string(100, 'x') + std::string(800, 'y'));
}

TEST_CASE("Buffer: a large allocation left mostly unused moves to a smaller one") {
  size_t total = 0;
  Buffer b(&total);
  b.append(std::string(1 << 20, 'z'));
  CHECK(total == size_t{1} << 20);
  b.consume((1 << 20) - 1000);
  CHECK(b.size() == 1000);
  CHECK(b.capacity() < Buffer::kShrinkFrom);
  CHECK(total == b.capacity());
  CHECK(b.view() == std::string(1000, 'z'));
}

TEST_CASE("Buffer: prepare and commit write in place; accounting sums several buffers") {
  size_t total = 0;
  {
    Buffer a(&total), b(&total);
    char* p = a.prepare(10);
    std::memcpy(p, "0123456789", 10);
    a.commit(4);
    CHECK(a.view() == "0123");
    b.append("xy", 2);
    CHECK(total == a.capacity() + b.capacity());
    a.clear();
    CHECK(total == b.capacity());
  }
  CHECK(total == 0);  // destruction gives it all back
}

TEST_CASE("LineFramer: every split point of a sequence of lines gives the same lines") {
  const std::string text = "{\"a\":1}\n\r\n{\"id\":\"x\",\"entry\":[]}\r\n  \n[1,2,3]\nlast\n";
  const std::vector<std::string> expect{"{\"a\":1}", "", "{\"id\":\"x\",\"entry\":[]}", "  ",
                                        "[1,2,3]", "last"};
  CHECK(frame_chunks({text}, 64) == expect);
  for (size_t i = 0; i <= text.size(); i++) {
    CAPTURE(i);
    CHECK(frame_chunks({text.substr(0, i), text.substr(i)}, 64) == expect);
    for (size_t j = i; j <= text.size(); j += 3) {
      CAPTURE(j);
      CHECK(frame_chunks({text.substr(0, i), text.substr(i, j - i), text.substr(j)}, 64) == expect);
    }
  }
  // One byte per read.
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  CHECK(frame_chunks(bytes, 64) == expect);
}

TEST_CASE("LineFramer: \\r\\n split across reads ends the line without the \\r") {
  CHECK(frame_chunks({"abc\r", "\ndef\n"}, 16) == std::vector<std::string>{"abc", "def"});
  CHECK(frame_chunks({"abc", "\r", "\n"}, 16) == std::vector<std::string>{"abc"});
  // A lone \r inside a line is content.
  CHECK(frame_chunks({"a\rb\n"}, 16) == std::vector<std::string>{"a\rb"});
}

TEST_CASE("LineFramer: a line of exactly the limit is accepted, one byte over is too long") {
  const size_t max = 10;
  const std::string exact(max, 'x'), over(max + 1, 'x');
  CHECK(frame_chunks({exact + "\n"}, max) == std::vector<std::string>{exact});
  CHECK(frame_chunks({exact + "\r\n"}, max) == std::vector<std::string>{exact});
  CHECK(frame_chunks({exact, "\r", "\n"}, max) == std::vector<std::string>{exact});
  CHECK(frame_chunks({over + "\n"}, max) == std::vector<std::string>{"<too long>"});
  CHECK(frame_chunks({over + "\r\n"}, max) == std::vector<std::string>{"<too long>"});
  // Unterminated: known too long as soon as the extra byte cannot be a "\r".
  LineFramer framer(max);
  CHECK(framer.next(exact, false).kind == LineFramer::Kind::NeedMore);
  CHECK(framer.next(exact + "\r", false).kind == LineFramer::Kind::NeedMore);
  CHECK(framer.next(over, false).kind == LineFramer::Kind::TooLong);
  LineFramer fresh(max);
  CHECK(fresh.next(exact + "\r" + "x", false).kind == LineFramer::Kind::TooLong);
  CHECK(fresh.max_input() == max + 2);
}

TEST_CASE("LineFramer: at the end of input an unterminated rest is a line") {
  CHECK(frame_chunks({"one\ntwo"}, 16, true) == std::vector<std::string>{"one", "two"});
  CHECK(frame_chunks({"one\ntwo\r"}, 16, true) == std::vector<std::string>{"one", "two"});
  CHECK(frame_chunks({"one\n"}, 16, true) == std::vector<std::string>{"one"});
  CHECK(frame_chunks({"one\ntwo"}, 16, false) == std::vector<std::string>{"one"});
}

TEST_CASE("LineFramer: bytes already scanned are not scanned again") {
  // The contract says earlier bytes never change; a framer that rescanned them would notice
  // the '\n' planted here behind its back. This one resumes where it stopped.
  LineFramer framer(64);
  std::string input = "abcdef";
  CHECK(framer.next(input, false).kind == LineFramer::Kind::NeedMore);
  input[1] = '\n';
  input += "gh";
  CHECK(framer.next(input, false).kind == LineFramer::Kind::NeedMore);
  input += "\n";
  LineFramer::Frame f = framer.next(input, false);
  REQUIRE(f.kind == LineFramer::Kind::Line);
  CHECK(f.length == input.size());
  // After the caller takes that line, scanning starts at the new front.
  framer.consumed(f.length);
  CHECK(framer.next("x\n", false).line == "x");
}

TEST_CASE("LineFramer: a line the caller does not take yet is found again without a rescan") {
  LineFramer framer(64);
  std::string input = "first\nsecond\n";
  LineFramer::Frame a = framer.next(input, false);
  LineFramer::Frame b = framer.next(input, false);
  CHECK(a.line == "first");
  CHECK(b.line == "first");
  CHECK(a.length == b.length);
}

TEST_CASE("LineFramer: blank lines") {
  CHECK(LineFramer::is_blank(""));
  CHECK(LineFramer::is_blank(" \t\r "));
  CHECK_FALSE(LineFramer::is_blank(" x "));
  CHECK_FALSE(LineFramer::is_blank("{}"));
}
