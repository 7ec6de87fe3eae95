// The binary's log: pino-compatible NDJSON on stdout, never blocking the loop.
//
// A terminal after Ctrl-S, or a `| pino-pretty` that is suspended, stops taking output; a
// blocking write would then stop every client, and even SIGTERM. So stdout is written without
// blocking: lines that it does not take wait in a bounded buffer, which the loop flushes when
// poll() says stdout is writable; lines that do not fit are dropped and counted, and once the
// buffer drains one warn line says how many. How to write without blocking depends on what
// stdout is, and must not change the open file that other processes may share with us:
//   - a regular file (or a device such as /dev/null): plain write(), which does not block;
//   - a socket (journald): send(MSG_DONTWAIT);
//   - a pipe or a terminal: a second open file of our own on it (/proc/self/fd/1) with
//     O_NONBLOCK; where /proc is missing, write only what poll() says fits (at most PIPE_BUF).

#pragma once
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "buffer.hpp"
#include "json.hpp"

class Log {
 public:
  // A line's extra fields, built only when its level is enabled.
  class Fields {
   public:
    Fields& str(const char* key, std::string_view value) {
      key_(key);
      json::write_string(value, &text_);
      return *this;
    }
    Fields& num(const char* key, uint64_t value) {
      key_(key);
      text_ += std::to_string(value);
      return *this;
    }
    const std::string& text() const { return text_; }

   private:
    void key_(const char* key) {
      text_ += ",\"";
      text_ += key;
      text_ += "\":";
    }
    std::string text_;
  };

  // `fake_start` (when not null), for the tests only: the log's wall clock starts there, in
  // Unix seconds, and runs at the real pace (TCP_LOG_SERVER_FAKE_TIME: a test of 2038 on a
  // 32-bit target, where no LD_PRELOAD clock reaches a static binary). It goes through time_t
  // as the real one does.
  void init(int level, const uint64_t* fake_start = nullptr) {
    level_ = level;
    if (fake_start) {
      struct timespec now;
      ::clock_gettime(CLOCK_REALTIME, &now);
      fake_offset_ = static_cast<time_t>(*fake_start) - now.tv_sec;
      fake_ = true;
    }
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) host[0] = 0;
    tail_ = ",\"pid\":" + std::to_string(::getpid()) + ",\"hostname\":";
    json::write_string(host, &tail_);
    open_stdout();
  }
  bool enabled(int level) const { return level >= level_; }
  void line(int level, std::string_view msg, const Fields& fields = Fields()) {
    if (!enabled(level)) return;
    struct timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    if (fake_) ts.tv_sec += fake_offset_;
    uint64_t ms = static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
    std::string out = "{\"level\":" + std::to_string(level) + ",\"time\":" + std::to_string(ms);
    out += tail_;
    out += ",\"msg\":";
    json::write_string(msg, &out);
    out += fields.text();
    out += "}\n";
    emit(out);
  }
  // The descriptor the loop polls for POLLOUT while lines wait, else -1.
  int waiting_fd() const { return pending_.empty() || broken_ ? -1 : fd_; }
  // Writes what stdout takes now; once everything waiting is out, reports dropped lines.
  void flush() {
    while (!pending_.empty() && !broken_) {
      ssize_t n = write_some(pending_.data(), pending_.size());
      if (n <= 0) return;
      pending_.consume(static_cast<size_t>(n));
    }
    if (pending_.empty() && dropped_ > 0 && !broken_) {
      const uint64_t dropped = dropped_;
      dropped_ = 0;
      dropped_reported_ += dropped;
      line(40, "log lines dropped: stdout was not taking them",
           Fields().str("event", "log-dropped").num("dropped", dropped));
    }
  }
  // Every line dropped so far (for the metrics).
  uint64_t dropped_total() const { return dropped_reported_ + dropped_; }
  // At exit: waits at most `ms` for stdout to take what is waiting.
  void flush_for(int ms) {
    const int64_t deadline = monotonic_ms() + ms;
    flush();
    while (waiting_fd() >= 0) {
      const int64_t left = deadline - monotonic_ms();
      if (left <= 0) return;
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) return;
      flush();
    }
  }

 private:
  enum class Mode { Plain, Socket, Guarded };
  // Log lines waiting for stdout; past this, lines are dropped and counted.
  static constexpr size_t kLogBufferBytes = 1024 * 1024;

  static int64_t monotonic_ms() {
    struct timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
  }

  void open_stdout() {
    struct stat st;
    if (::fstat(STDOUT_FILENO, &st) != 0) {
      broken_ = true;  // no stdout at all: log nothing
      return;
    }
    if (S_ISSOCK(st.st_mode)) {
      mode_ = Mode::Socket;
    } else if (S_ISFIFO(st.st_mode) || (S_ISCHR(st.st_mode) && ::isatty(STDOUT_FILENO))) {
      int fd = ::open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
      if (fd >= 0) {
        fd_ = fd;
        mode_ = Mode::Plain;  // our own open file, non-blocking
      } else {
        mode_ = Mode::Guarded;
      }
    }
  }

  // Writes a prefix of [data, data+n) without blocking; returns its length, 0 when stdout takes
  // nothing now, -1 when it failed (ENOSPC, EPIPE, ...): then what waited is dropped and
  // counted, and later lines try again.
  ssize_t write_some(const char* data, size_t n) {
    for (;;) {
      ssize_t r;
      if (mode_ == Mode::Socket) {
        r = ::send(fd_, data, n, MSG_DONTWAIT | MSG_NOSIGNAL);
      } else {
        if (mode_ == Mode::Guarded) {
          pollfd p{fd_, POLLOUT, 0};
          if (::poll(&p, 1, 0) <= 0 || !(p.revents & POLLOUT)) return 0;
          if (n > PIPE_BUF) n = PIPE_BUF;  // a pipe with room takes this much without blocking
        }
        r = ::write(fd_, data, n);
      }
      if (r >= 0) return r;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      // A closed or failing stdout never stops the server.
      for (const char* p = pending_.data(), *end = p + pending_.size();
           (p = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p))));
           p++)
        dropped_++;
      pending_.clear();
      return -1;
    }
  }

  void emit(std::string_view text) {
    if (broken_) return;
    if (pending_.empty()) {
      ssize_t n = write_some(text.data(), text.size());
      if (n < 0) {
        dropped_++;
        return;
      }
      text.remove_prefix(static_cast<size_t>(n));
      if (text.empty()) return;
      // Part of the line is out: the rest must follow whatever the limit, or the stream breaks.
      pending_.append(text);
      return;
    }
    if (pending_.size() + text.size() > kLogBufferBytes) {
      dropped_++;
      return;
    }
    pending_.append(text);
  }

  int level_ = 30;
  bool fake_ = false;
  time_t fake_offset_ = 0;  // TCP_LOG_SERVER_FAKE_TIME less the real time at the start
  std::string tail_;
  int fd_ = STDOUT_FILENO;
  Mode mode_ = Mode::Plain;
  bool broken_ = false;
  Buffer pending_;
  uint64_t dropped_ = 0;           // dropped since the last log-dropped line
  uint64_t dropped_reported_ = 0;  // ... and before it
};

constexpr int kTrace = 10, kDebug = 20, kInfo = 30, kWarn = 40, kError = 50, kFatal = 60;
