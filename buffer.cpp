// Buffer and LineFramer: see buffer.hpp for their contracts.
#include "buffer.hpp"

#include <cstdlib>
#include <cstring>
#include <new>

void Buffer::account(size_t old_capacity) {
  if (accounting_) *accounting_ = *accounting_ - old_capacity + capacity_;
}

void Buffer::reallocate(size_t capacity) {
  const size_t n = size();
  char* fresh = nullptr;
  if (capacity > 0) {
    fresh = static_cast<char*>(std::malloc(capacity));
    if (!fresh) throw std::bad_alloc();
    if (n > 0) std::memcpy(fresh, data(), n);
  }
  std::free(data_);
  const size_t old = capacity_;
  data_ = fresh;
  begin_ = 0;
  end_ = n;
  capacity_ = capacity;
  account(old);
}

char* Buffer::prepare(size_t n) {
  if (capacity_ - end_ >= n) return data_ + end_;
  const size_t live = size();
  // Sliding the bytes to the front is enough, and cheap when they are few: keep the allocation.
  if (capacity_ - live >= n && live <= begin_) {
    std::memmove(data_, data(), live);
    begin_ = 0;
    end_ = live;
    return data_ + end_;
  }
  size_t want = live + n;
  const size_t grown = capacity_ + capacity_ / 2;
  if (want < grown) want = grown;
  reallocate(want);
  return data_ + end_;
}

void Buffer::append(const char* bytes, size_t n) {
  if (n == 0) return;
  std::memcpy(prepare(n), bytes, n);
  end_ += n;
}

void Buffer::consume(size_t n) {
  begin_ += n;
  if (begin_ >= end_) {
    clear();
  } else if (capacity_ >= kShrinkFrom && size() * 4 < capacity_) {
    reallocate(size());
  }
}

void Buffer::clear() {
  std::free(data_);
  const size_t old = capacity_;
  data_ = nullptr;
  begin_ = end_ = capacity_ = 0;
  account(old);
}

LineFramer::Frame LineFramer::next(std::string_view input, bool at_end) {
  Frame f;
  if (scanned_ > input.size()) scanned_ = 0;  // not the input of the last call: rescan
  const void* nl = scanned_ < input.size()
                       ? std::memchr(input.data() + scanned_, '\n', input.size() - scanned_)
                       : nullptr;
  if (nl) {
    const size_t at = static_cast<size_t>(static_cast<const char*>(nl) - input.data());
    scanned_ = at;  // a caller that does not take the line finds it again at once
    std::string_view line = input.substr(0, at);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    f.kind = line.size() > max_line_ ? Kind::TooLong : Kind::Line;
    f.line = line;
    f.length = at + 1;
    return f;
  }
  scanned_ = input.size();
  // Unterminated: too long once it exceeds the limit by more than a possible "\r".
  if (input.size() > max_line_ + 1 || (input.size() == max_line_ + 1 && input.back() != '\r')) {
    f.kind = Kind::TooLong;
    return f;
  }
  if (at_end && !input.empty()) {
    std::string_view line = input;
    if (line.back() == '\r') line.remove_suffix(1);
    f.kind = line.size() > max_line_ ? Kind::TooLong : Kind::Line;
    f.line = line;
    f.length = input.size();
  }
  return f;
}

bool LineFramer::is_blank(std::string_view line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r') return false;
  return true;
}
