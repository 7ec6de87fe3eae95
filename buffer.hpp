// A connection's bytes in one direction (Buffer), and the line framer that finds messages in
// its input (LineFramer). No I/O here: the loop reads sockets into a scratch area it owns and
// appends what arrived; it sends from the front of an output buffer and consumes what was sent.
#pragma once
#include <cstddef>
#include <string_view>

// A byte queue: appended at the back, consumed from the front (muduo's read and write indexes).
//
// Memory: an empty buffer holds no heap memory. It grows by what is appended (to at least the
// bytes it must hold, and by half its size when it must grow again, so that many small appends
// stay amortised); before it grows it slides its bytes to the front if that makes room. When
// consume() empties it, its memory is freed; when consume() leaves a large allocation mostly
// unused, the bytes move to a smaller one. Every change of capacity is added to *accounting
// (when given), so that the owner can bound what all its buffers hold together.
class Buffer {
 public:
  explicit Buffer(size_t* accounting = nullptr) : accounting_(accounting) {}
  ~Buffer() { clear(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  const char* data() const { return data_ + begin_; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  // Bytes of heap memory held (0 when empty).
  size_t capacity() const { return capacity_; }
  std::string_view view() const { return std::string_view(data(), size()); }

  void append(const char* bytes, size_t n);
  void append(std::string_view bytes) { append(bytes.data(), bytes.size()); }
  void append(char c) { append(&c, 1); }
  // Room for at least n more bytes at the back: write into it, then commit(k) with k <= n.
  // The pointer is valid until the next call that changes the buffer.
  char* prepare(size_t n);
  void commit(size_t n) { end_ += n; }
  // Drops n <= size() bytes from the front (see Memory above).
  void consume(size_t n);
  // Drops everything and frees the memory.
  void clear();

  // A buffer of at least this capacity that holds less than a quarter of it moves to a smaller
  // allocation when consumed from.
  static constexpr size_t kShrinkFrom = 64 * 1024;

 private:
  void reallocate(size_t capacity);  // to exactly `capacity`, with the bytes at the front
  void account(size_t old_capacity);

  char* data_ = nullptr;
  size_t begin_ = 0;  // first unconsumed byte
  size_t end_ = 0;    // one past the last byte
  size_t capacity_ = 0;
  size_t* accounting_;
};

// Finds '\n'-terminated lines at the front of a connection's unconsumed input, scanning each
// byte once however slowly the line arrives (picohttpparser's rule), and caps their length.
//
// Contract: each call to next() passes the connection's unconsumed input; between calls that
// input may only grow at the back, or lose a prefix that the caller announces with consumed().
class LineFramer {
 public:
  explicit LineFramer(size_t max_line) : max_line_(max_line) {}

  enum class Kind {
    NeedMore,  // no complete line yet
    Line,      // `line` is the next line, without its "\n" or "\r\n"; `length` bytes to consume
    TooLong,   // the next line is (or will be) longer than max_line: the input is unusable
  };
  struct Frame {
    Kind kind = Kind::NeedMore;
    std::string_view line;
    size_t length = 0;
  };
  // The next line of `input`. With `at_end` (the peer sent everything it will), an unterminated
  // rest is a line too. A line may be blank (see is_blank); a "\r" right before the "\n" is not
  // part of it. A line longer than max_line bytes is TooLong as soon as that is certain: one byte
  // more is held back while it may still be the "\r" of a "\r\n".
  Frame next(std::string_view input, bool at_end);
  // The caller dropped n bytes from the front of the input (a line it took, with its terminator).
  void consumed(size_t n) { scanned_ = n < scanned_ ? scanned_ - n : 0; }
  // Most input bytes a connection ever needs to hold: a longest line and its "\r\n".
  size_t max_input() const { return max_line_ + 2; }
  size_t max_line() const { return max_line_; }

  // True for a line of only spaces, tabs and "\r": the protocol ignores it.
  static bool is_blank(std::string_view line);

 private:
  size_t max_line_;
  size_t scanned_ = 0;  // bytes at the front of the input known to hold no '\n'
};
