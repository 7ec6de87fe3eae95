// Fuzz target: the LineFramer over a Buffer, as the server's input path uses them. The input is
// a small header (line limit, how the caller takes lines, where the stream is split) and then
// the byte stream. The stream is framed three ways: in one piece, in the pieces the header asks
// for, and by the plain reference below; all three must give the same lines, the same "too long"
// at the same place, and the same rest. The Buffer must hold exactly the bytes a std::string
// model holds, and its memory accounting must match its capacity after every call.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "buffer.hpp"

namespace {

struct Framing {
  std::vector<std::string> lines;
  bool too_long = false;
  bool operator==(const Framing& o) const { return lines == o.lines && too_long == o.too_long; }
};

std::string show(const Framing& f) {
  std::string s;
  for (const auto& l : f.lines) {
    s += '[';
    for (unsigned char c : l) {
      if (c >= 0x20 && c < 0x7F) {
        s += static_cast<char>(c);
      } else {
        char hex[8];
        std::snprintf(hex, sizeof hex, "\\x%02x", c);
        s += hex;
      }
    }
    s += "] ";
  }
  return s + (f.too_long ? "<too long>" : "");
}

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "framer_fuzz: %s\n%s\n", what, detail.c_str());
  std::abort();
}

// The framing rules read straight from buffer.hpp's contract, on the whole stream at once: lines
// end at '\n', one '\r' before it is not part of the line; a line longer than max_line is too
// long, and so is an unfinished one that can no longer end within the limit; with at_end an
// unfinished rest is a line.
Framing reference_framing(std::string_view s, size_t max_line, bool at_end) {
  Framing f;
  size_t pos = 0;
  for (;;) {
    const size_t nl = s.find('\n', pos);
    std::string_view line = s.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    if (nl == std::string_view::npos) {
      if (line.size() > max_line + 1 || (line.size() == max_line + 1 && line.back() != '\r')) {
        f.too_long = true;
      } else if (at_end && !line.empty()) {
        if (line.back() == '\r') line.remove_suffix(1);
        if (line.size() > max_line) f.too_long = true;
        else f.lines.emplace_back(line);
      }
      return f;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > max_line) {
      f.too_long = true;
      return f;
    }
    f.lines.emplace_back(line);
    pos = nl + 1;
  }
}

struct Plan {
  size_t max_line = 1;
  bool at_end = false;      // the peer half-closes after the last piece
  bool peek_first = false;  // ask for each line twice before taking it (a line that must wait)
  bool one_per_piece = false;  // take at most one line per arrival: lines pile up in the buffer
  bool use_prepare = false;    // write pieces through prepare()/commit() instead of append()
  std::vector<size_t> piece_sizes;
};

// Frames `stream` arriving in the pieces of `plan` through a Buffer and a LineFramer, checking
// the Buffer against a std::string model all along.
Framing frame_in_pieces(std::string_view stream, const Plan& plan) {
  size_t accounted = 0;
  Buffer input(&accounted);
  std::string model;
  LineFramer framer(plan.max_line);
  Framing f;
  auto check_buffer = [&](const char* after) {
    if (input.view() != model || accounted != input.capacity() || input.size() > input.capacity() ||
        (input.empty() && input.capacity() != 0))
      fail("Buffer differs from its model", std::string("after ") + after + ": holds " +
                                                std::to_string(input.size()) + " of capacity " +
                                                std::to_string(input.capacity()) + ", accounted " +
                                                std::to_string(accounted) + ", model " + std::to_string(model.size()));
  };
  // Takes the lines that are ready; false once the input is unusable (too long).
  auto take_lines = [&](bool at_end, bool all) {
    for (;;) {
      LineFramer::Frame frame = framer.next(input.view(), at_end);
      if (plan.peek_first && frame.kind == LineFramer::Kind::Line) {
        LineFramer::Frame again = framer.next(input.view(), at_end);
        if (again.kind != frame.kind || again.line != frame.line || again.length != frame.length)
          fail("a line asked for twice came back different", show(f));
      }
      if (frame.kind == LineFramer::Kind::NeedMore) return true;
      if (frame.kind == LineFramer::Kind::TooLong) {
        f.too_long = true;
        return false;
      }
      if (frame.length > input.size() || frame.line.size() > framer.max_line() ||
          frame.line.data() != input.data())
        fail("a line that is not at the front of the input", show(f));
      f.lines.emplace_back(frame.line);
      input.consume(frame.length);
      model.erase(0, frame.length);
      framer.consumed(frame.length);
      check_buffer("consume");
      if (!all) return true;
    }
  };
  size_t pos = 0, piece = 0;
  while (pos < stream.size()) {
    size_t n = plan.piece_sizes.empty() ? stream.size() : plan.piece_sizes[piece++ % plan.piece_sizes.size()];
    n = std::min(n, stream.size() - pos);
    if (plan.use_prepare) {
      char* room = input.prepare(n + 3);  // asks for more than it uses, as a recv() does
      std::memcpy(room, stream.data() + pos, n);
      input.commit(n);
    } else {
      input.append(stream.data() + pos, n);
    }
    model.append(stream.data() + pos, n);
    pos += n;
    check_buffer("append");
    if (!take_lines(false, !plan.one_per_piece)) return f;
    // Once every complete line is taken, what is left is one unfinished line of at most a longest
    // line and its "\r\n" (the server reads no more than that).
    if (!plan.one_per_piece && input.size() > framer.max_input()) fail("input held beyond max_input() without a line", show(f));
  }
  take_lines(plan.at_end, true);
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  Plan plan;
  plan.max_line = 1 + data[0] % 48;
  plan.at_end = data[1] & 1;
  plan.peek_first = data[1] & 2;
  plan.one_per_piece = data[1] & 4;
  plan.use_prepare = data[1] & 8;
  const size_t pieces = data[2] % 8;
  if (size < 3 + pieces) return 0;
  for (size_t i = 0; i < pieces; ++i) plan.piece_sizes.push_back(1 + data[3 + i] % 32);
  const std::string_view stream(reinterpret_cast<const char*>(data) + 3 + pieces, size - 3 - pieces);

  // With one_per_piece the last piece may leave complete lines behind: they are taken at the end,
  // so every plan must frame the whole stream alike.
  const Framing expected = reference_framing(stream, plan.max_line, plan.at_end);
  Plan whole = plan;
  whole.piece_sizes.clear();
  const Framing in_one = frame_in_pieces(stream, whole);
  const Framing in_pieces = frame_in_pieces(stream, plan);
  if (!(in_one == expected)) fail("framing in one piece differs from the reference", show(in_one) + "\n  reference: " + show(expected));
  if (!(in_pieces == expected)) fail("framing in pieces differs from the reference", show(in_pieces) + "\n  reference: " + show(expected));
  return 0;
}
