// A reference model of the protocol (doc/protocol.md, "Protocol" and "Replies in order") that checks what
// a real server sends, line by line, over any number of connections, and the loopback plumbing
// to drive one. Used by the model-based test (test/model_test.cpp) and by the protocol fuzz
// target (fuzz/protocol_fuzz.cpp). No doctest here: a violation is reported as text, so that
// a caller can shrink a failing run or abort a fuzz input with it.
//
// The model does not predict one exact reply stream: the server may batch writes of several
// connections in any order, and a reader's live entries interleave with the replies to its later
// messages as the passes fall. Instead it accepts a line only if some correct server could have
// sent it at that point, given everything seen so far:
//   - a connection's messages are answered in order; nothing after a read is answered before the
//     read's catch-up is out (every entry that existed when the read arrived, then current, or a
//     batch read's head when its K entries come first);
//   - confirmations carry indices that are unique over all connections, increasing on each one;
//   - a reader gets the entries from its `from` on, in order, none skipped, each with exactly the
//     bytes its writer was confirmed for; a stream read skips (only) its own connection's writes
//     sent after it, a batch read includes them and its head stops short of the first it did not
//     send;
//   - the catch-up ends where the head was when the read arrived: at least every entry known to
//     exist when the read was sent, and no entry that could not yet exist;
//   - a connection ends only after a protocol error, after its client half-closed and everything
//     owed was sent, or once the server is stopping;
//   - the log read back at the end (or after a restart) holds every confirmed entry at its index
//     and every entry a reader was sent, and nothing else but writes whose confirmation never
//     came (a client that vanished, a server that was killed).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "json.hpp"
#include "message.hpp"

namespace protocol_model {

// ---------------------------------------------------------------------------------------------
// What a client sent, as far as the replies depend on it.

struct Sent {
  enum class Kind { Write, Read, Invalid, NotJson, TooLong };
  Kind kind = Kind::Invalid;
  std::string id_json;  // Write: the id as its confirmation quotes it
  std::string entry;    // Write: the entry's canonical bytes
  uint64_t from = 0;    // Read
  uint64_t read = 0;    // Read: 0 for a stream read, else K
  std::string text;     // the line as sent (shortened), for reports
  uint64_t known_head = 0;  // set by Checker::send: entries known to exist when it was sent

  static Sent write(std::string id_json, std::string entry, std::string text) {
    Sent s;
    s.kind = Kind::Write;
    s.id_json = std::move(id_json);
    s.entry = std::move(entry);
    s.text = std::move(text);
    return s;
  }
  static Sent read_from(uint64_t from, uint64_t count, std::string text) {
    Sent s;
    s.kind = Kind::Read;
    s.from = from;
    s.read = count;
    s.text = std::move(text);
    return s;
  }
  static Sent of_kind(Kind kind, std::string text) {
    Sent s;
    s.kind = kind;
    s.text = std::move(text);
    return s;
  }
};

inline std::string shorten(std::string_view text, size_t max = 160) {
  std::string out;
  for (unsigned char c : text.substr(0, max)) {
    if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  if (text.size() > max) out += "...(" + std::to_string(text.size()) + " bytes)";
  return out;
}

// A complete line the way the server reads it: the parser and classify() decide (the fuzz targets
// hold both to an independent reading of the rules).
inline Sent classify_line(std::string_view line) {
  json::Document d;
  const Message m = classify(d, line);
  switch (m.kind) {
    case Message::Kind::NotJson: return Sent::of_kind(Sent::Kind::NotJson, shorten(line));
    case Message::Kind::Invalid: return Sent::of_kind(Sent::Kind::Invalid, shorten(line));
    case Message::Kind::Read: return Sent::read_from(m.from, m.read, shorten(line));
    case Message::Kind::Write: break;
  }
  std::string id, entry;
  json::write_string(d.decode_string(d[static_cast<size_t>(m.id)]), &id);
  d.write_canonical(static_cast<size_t>(m.entry), &entry);
  return Sent::write(std::move(id), std::move(entry), shorten(line));
}

// Splits what one connection sends into messages as doc/protocol.md frames them: lines end at "\n",
// a "\r" before it is dropped, blank lines (spaces, tabs, "\r") are ignored, a line longer than
// MAX_MESSAGE_BYTES is too long as soon as that is certain, and after a half-close an unfinished
// rest is a line. Nothing is framed after a too-long line: the server drops the connection's input.
class SentFramer {
 public:
  explicit SentFramer(size_t max_line) : max_line_(max_line) {}

  // The messages that `bytes` completes.
  std::vector<Sent> feed(std::string_view bytes) {
    std::vector<Sent> out;
    if (done_) return out;
    pending_.append(bytes);
    size_t nl;
    while (!done_ && (nl = pending_.find('\n')) != std::string::npos) {
      take(std::string_view(pending_).substr(0, nl), &out);
      pending_.erase(0, nl + 1);
    }
    if (!done_ && (pending_.size() > max_line_ + 1 || (pending_.size() == max_line_ + 1 && pending_.back() != '\r'))) {
      out.push_back(Sent::of_kind(Sent::Kind::TooLong, shorten(pending_)));
      done_ = true;
    }
    return out;
  }
  // The client half-closed: the unfinished rest, if any, is a line.
  std::vector<Sent> finish() {
    std::vector<Sent> out;
    if (!done_ && !pending_.empty()) take(pending_, &out);
    pending_.clear();
    done_ = true;
    return out;
  }

 private:
  void take(std::string_view line, std::vector<Sent>* out) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > max_line_) {
      out->push_back(Sent::of_kind(Sent::Kind::TooLong, shorten(line)));
      done_ = true;
      return;
    }
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;  // blank
    out->push_back(classify_line(line));
  }

  size_t max_line_;
  std::string pending_;
  bool done_ = false;
};

// ---------------------------------------------------------------------------------------------
// The server's lines, taken apart. The server writes them canonically, so fixed shapes suffice.

struct Reply {
  enum class Kind { Confirmation, WriteError, Entry, EntryError, Current, Head, Error, Unknown };
  Kind kind = Kind::Unknown;
  std::string id_json;  // Confirmation, WriteError
  uint64_t index = 0;   // Confirmation, Entry, EntryError, Head (the head)
  std::string text;     // Entry: the entry's bytes; Error: the error's text (quoted)
};

inline bool parse_index(std::string_view digits, uint64_t* out) {
  if (digits.empty() || digits.size() > 19 || (digits.size() > 1 && digits[0] == '0')) return false;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

inline bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

inline Reply parse_reply(std::string_view line) {
  Reply r;
  if (line == R"({"current":true})") {
    r.kind = Reply::Kind::Current;
    return r;
  }
  if (line.size() < 2 || line.back() != '}') return r;
  const std::string_view body = line.substr(0, line.size() - 1);
  if (starts_with(body, R"({"head":)")) {
    if (parse_index(body.substr(8), &r.index)) r.kind = Reply::Kind::Head;
    return r;
  }
  if (starts_with(body, R"({"error":")")) {
    r.kind = Reply::Kind::Error;
    r.text = std::string(body.substr(9));  // the quoted error
    return r;
  }
  if (starts_with(body, R"({"index":)")) {
    const size_t comma = body.find(',');
    if (comma == std::string_view::npos || !parse_index(body.substr(9, comma - 9), &r.index)) return r;
    const std::string_view rest = body.substr(comma);
    if (starts_with(rest, R"(,"entry":)")) {
      r.kind = Reply::Kind::Entry;
      r.text = std::string(rest.substr(9));
    } else if (starts_with(rest, R"(,"error":)")) {
      r.kind = Reply::Kind::EntryError;
      r.text = std::string(rest.substr(9));
    }
    return r;
  }
  if (starts_with(body, R"({"id":")")) {
    // The id is a JSON string: an unescaped '"' ends it, so the last `,"index":` is ours.
    const size_t at = body.rfind(R"(,"index":)");
    if (at != std::string_view::npos && parse_index(body.substr(at + 9), &r.index)) {
      r.kind = Reply::Kind::Confirmation;
      r.id_json = std::string(body.substr(6, at - 6));
      return r;
    }
    const size_t err = body.rfind(R"(,"error":)");
    if (err != std::string_view::npos) {
      r.kind = Reply::Kind::WriteError;
      r.id_json = std::string(body.substr(6, err - 6));
    }
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// The checker.

class Checker {
 public:
  // `log`: the entries the log holds when the server starts (canonical bytes, index 1 first).
  explicit Checker(std::vector<std::string> log = {}) : log_(std::move(log)) {}

  int connect() {
    connections_.emplace_back();
    return static_cast<int>(connections_.size() - 1);
  }
  // A message the client sends on c, in order, before its bytes go out.
  void send(int c, Sent m) {
    Connection& k = connections_[c];
    m.known_head = known_head();
    if (m.kind == Sent::Kind::Write) ++unconfirmed_;
    k.transcript.push_back("> " + m.text);
    k.queue.push_back(std::move(m));
  }
  void half_close(int c) {
    connections_[c].input_closed = true;
    connections_[c].transcript.push_back("> (half-close)");
  }
  // The client closed or reset c: it is not checked any further; its writes not yet confirmed may
  // or may not be in the log.
  void drop(int c) {
    connections_[c].dropped = true;
    connections_[c].transcript.push_back("> (closed by the client)");
  }
  // SIGTERM or kill -9 is on its way: any connection may end from now on.
  void server_stopping() { stopping_ = true; }

  // A line the server sent on c. False if no correct server could have sent it now.
  bool line(int c, std::string_view text) {
    Connection& k = connections_[c];
    ++lines_;
    k.transcript.push_back("< " + shorten(text));
    if (k.ended) return violation(c, "a line after the end of the connection");
    if (k.closing) return violation(c, "a line after the error that closes the connection");
    advance(k);
    const Reply r = parse_reply(text);
    switch (r.kind) {
      case Reply::Kind::Confirmation: return confirmation(c, r);
      case Reply::Kind::Entry: return entry(c, r);
      case Reply::Kind::Current: return current(c);
      case Reply::Kind::Head: return head(c, r);
      case Reply::Kind::Error: return error_reply(c, r);
      case Reply::Kind::WriteError: return violation(c, "a write failed (no storage fault was injected)");
      case Reply::Kind::EntryError: return violation(c, "an entry could not be read back");
      case Reply::Kind::Unknown: break;
    }
    return violation(c, "a line that is no reply of the protocol");
  }

  // The server ended c (end of stream, or a reset if `reset`). False if it had no reason to.
  bool eof(int c, bool reset = false) {
    Connection& k = connections_[c];
    k.transcript.push_back(reset ? "< (reset)" : "< (end)");
    k.ended = true;
    if (k.dropped || k.closing || stopping_) return true;
    advance(k);
    if (k.input_closed && k.queue.empty() && !k.catching_up()) return true;
    if (!k.input_closed) return violation(c, "the server closed a connection that did nothing wrong");
    return violation(c, "the server closed a half-closed connection before answering everything");
  }

  // True while a line or the end of c must still come: the driver reads until none is owed.
  bool owes(int c) {
    Connection& k = connections_[c];
    if (k.dropped || k.ended) return false;
    if (k.closing || stopping_) return true;  // its end, at least
    advance(k);
    if (k.reading() && (!k.read.current_sent || (k.read.batch() && k.read.remaining == 0))) return true;
    if (!k.queue.empty()) return true;
    if (k.input_closed) return true;  // its end (live entries may come first)
    if (k.reading()) return next_entry(k) <= known_head();
    return false;
  }
  bool ended(int c) const { return connections_[c].ended || connections_[c].dropped; }
  bool closing(int c) const { return connections_[c].closing; }

  // The log as a read from 1 returned it (canonical bytes, index 1 first), with every connection
  // ended: every confirmed entry at its index, every entry a reader got, every head within it,
  // and the rest only writes whose confirmation never came, each at most once.
  bool check_log(const std::vector<std::string>& log) {
    for (size_t i = 0; i < log_.size(); ++i)
      if (i >= log.size() || log[i] != log_[i])
        return violation(-1, "entry " + std::to_string(i + 1) + ", in the log before the last start, is " +
                                 (i < log.size() ? "changed" : "gone"));
    for (const auto& [index, confirmed] : confirmed_)
      if (index > log.size() || log[index - 1] != confirmed.entry)
        return violation(confirmed.connection, "confirmed entry " + std::to_string(index) + " is " +
                                                   (index > log.size() ? "missing" : "different") + " in the log");
    for (const auto& seen : seen_)
      if (seen.index > log.size() || log[seen.index - 1] != seen.entry)
        return violation(seen.connection, "entry " + std::to_string(seen.index) + " as a reader got it is " +
                                              (seen.index > log.size() ? "not in the log" : "not the log's"));
    for (const auto& [connection, head] : heads_)
      if (head > log.size()) return violation(connection, "a head of " + std::to_string(head) + " beyond the log");
    std::multiset<std::string> unconfirmed;
    for (const Connection& k : connections_)
      for (const Sent& m : k.queue)
        if (m.kind == Sent::Kind::Write) unconfirmed.insert(m.entry);
    for (size_t i = log_.size(); i < log.size(); ++i) {
      if (confirmed_.count(i + 1)) continue;
      auto it = unconfirmed.find(log[i]);
      if (it == unconfirmed.end())
        return violation(-1, "entry " + std::to_string(i + 1) + " is in the log, but nobody wrote it (or not so often): " + shorten(log[i]));
      unconfirmed.erase(it);
    }
    return true;
  }

  // The server was started again on the same data; `log` is what it holds, checked as above.
  bool restarted(const std::vector<std::string>& log) {
    if (!check_log(log)) return false;
    for (size_t c = 0; c < connections_.size(); ++c)
      if (!connections_[c].ended && !connections_[c].dropped)
        return violation(static_cast<int>(c), "still open when the server was restarted");
    log_ = log;
    confirmed_.clear();
    seen_.clear();
    heads_.clear();
    unconfirmed_ = 0;
    stopping_ = false;
    for (Connection& k : connections_) k.queue.clear();
    return true;
  }

  const std::string& error() const { return error_; }
  uint64_t lines_checked() const { return lines_; }
  size_t log_size_known() const { return static_cast<size_t>(known_head()); }
  // What c sent and got, for a report.
  std::string transcript(int c, size_t last = 40) const {
    const auto& t = connections_[c].transcript;
    std::string out;
    for (size_t i = t.size() > last ? t.size() - last : 0; i < t.size(); ++i) out += "    " + t[i] + "\n";
    return out;
  }

 private:
  struct Read {
    enum class Kind { None, Stream, Batch };
    Kind kind = Kind::None;
    uint64_t next = 0;          // the next index it must send
    uint64_t remaining = 0;     // Batch: entries still to send before the head
    uint64_t at_least = 0;      // its catch-up reaches at least this index
    bool current_sent = false;
    std::set<uint64_t> own;     // the connection's writes confirmed while it reads, >= next then
    bool batch() const { return kind == Kind::Batch; }
  };
  struct Connection {
    std::deque<Sent> queue;  // sent, not answered (a read leaves it when it starts)
    Read read;
    uint64_t last_own = 0;   // its last confirmed index
    uint64_t last_head = 0;  // the last head a batch read of it ended with
    bool input_closed = false, dropped = false, ended = false;
    bool closing = false;    // an error that closes the connection was sent
    std::vector<std::string> transcript;
    bool reading() const { return read.kind != Read::Kind::None; }
    bool catching_up() const { return reading() && !read.current_sent; }
  };
  struct Confirmed {
    std::string entry;
    int connection;
  };
  struct Seen {
    uint64_t index;
    std::string entry;
    int connection;
  };

  // Entries known to exist: the log at the start and every confirmed one.
  uint64_t known_head() const {
    return std::max<uint64_t>(log_.size(), confirmed_.empty() ? 0 : confirmed_.rbegin()->first);
  }
  // Most entries that can exist: those known, and every write sent whose fate is open.
  uint64_t possible_head() const { return log_.size() + confirmed_.size() + unconfirmed_; }

  // Starts the reads that the server has taken by now: a read at the front of the queue starts
  // as soon as no read is active (its earlier messages are answered, as it is at the front).
  void advance(Connection& k) {
    while (!k.closing && !k.queue.empty() && !k.reading() && k.queue.front().kind == Sent::Kind::Read) {
      const Sent m = k.queue.front();
      k.queue.pop_front();
      Read& r = k.read;
      r = Read();
      r.kind = m.read == 0 ? Read::Kind::Stream : Read::Kind::Batch;
      r.next = m.from == 0 ? 1 : m.from;
      r.remaining = m.read;
      // The head when it arrived: no less than what was known when it was sent, than this
      // connection's own writes before it (confirmed before it starts), or than its last head.
      r.at_least = std::max({m.known_head, k.last_own, k.last_head});
      k.transcript.push_back("  (read starts: next " + std::to_string(r.next) + ", catch-up to >= " +
                             std::to_string(r.at_least) + ")");
    }
  }

  // The index the active read must send next (a stream read passes over its own later writes).
  uint64_t next_entry(Connection& k) {
    Read& r = k.read;
    while (!r.own.empty() && *r.own.begin() < r.next) r.own.erase(r.own.begin());
    if (r.kind == Read::Kind::Stream)
      while (!r.own.empty() && *r.own.begin() == r.next) {
        r.own.erase(r.own.begin());
        ++r.next;
      }
    return r.next;
  }

  // The front message may be answered now (no read is catching up ahead of it).
  bool answerable(Connection& k) { return !k.queue.empty() && !k.catching_up(); }

  bool confirmation(int c, const Reply& r) {
    Connection& k = connections_[c];
    if (!answerable(k) || k.queue.front().kind != Sent::Kind::Write)
      return violation(c, k.catching_up() ? "a confirmation before the read's catch-up was out"
                                          : "a confirmation where no write was waiting for one");
    const Sent& m = k.queue.front();
    if (r.id_json != m.id_json) return violation(c, "a confirmation for id " + r.id_json + ", expected " + m.id_json);
    if (r.index <= log_.size()) return violation(c, "index " + std::to_string(r.index) + " was in the log already");
    if (confirmed_.count(r.index)) {
      const int other = confirmed_[r.index].connection;
      return violation(c, "index " + std::to_string(r.index) + " confirmed twice (also to connection " + std::to_string(other) + ")");
    }
    if (r.index <= k.last_own) return violation(c, "confirmed indices of one connection must increase");
    confirmed_[r.index] = Confirmed{m.entry, c};
    --unconfirmed_;
    k.last_own = r.index;
    if (k.reading() && r.index >= k.read.next) k.read.own.insert(r.index);
    for (const Seen& s : seen_)
      if (s.index == r.index && s.entry != m.entry)
        return violation(s.connection, "a reader got entry " + std::to_string(r.index) + " with other bytes than its writer");
    k.queue.pop_front();
    return true;
  }

  bool entry(int c, const Reply& r) {
    Connection& k = connections_[c];
    if (!k.reading()) return violation(c, "an entry without an active read");
    Read& read = k.read;
    if (read.batch() && read.remaining == 0) return violation(c, "more entries than the batch read asked for");
    const uint64_t expected = next_entry(k);
    if (r.index != expected)
      return violation(c, "entry " + std::to_string(r.index) + " where entry " + std::to_string(expected) + " was due");
    if (!read.current_sent && r.index > possible_head())
      return violation(c, "entry " + std::to_string(r.index) + " in a catch-up, beyond any head the read could have found");
    const auto known = confirmed_.find(r.index);
    if (known != confirmed_.end() && known->second.entry != r.text)
      return violation(c, "entry " + std::to_string(r.index) + " differs from what its writer was confirmed for");
    if (r.index <= log_.size() && log_[r.index - 1] != r.text)
      return violation(c, "entry " + std::to_string(r.index) + " differs from the log read back at the start");
    seen_.push_back(Seen{r.index, r.text, c});
    read.next = r.index + 1;
    if (read.batch()) --read.remaining;
    return true;
  }

  bool current(int c) {
    Connection& k = connections_[c];
    Read& r = k.read;
    if (!k.reading()) return violation(c, "current without an active read");
    if (r.current_sent) return violation(c, "current twice for one read");
    if (r.batch() && r.remaining == 0) return violation(c, "current after the batch read had its entries (the head was due)");
    if (r.next - 1 < r.at_least)
      return violation(c, "current before entry " + std::to_string(r.at_least) + ", which existed when the read arrived");
    r.current_sent = true;
    return true;
  }

  bool head(int c, const Reply& h) {
    Connection& k = connections_[c];
    Read& r = k.read;
    if (!r.batch()) return violation(c, "a head without a batch read");
    if (r.remaining != 0) return violation(c, "a head before the batch read sent its entries");
    next_entry(k);  // forgets own writes it has passed
    if (h.index + 1 < r.next || h.index < r.at_least)
      return violation(c, "a head of " + std::to_string(h.index) + " short of what the read sent or found");
    if (!r.own.empty() && h.index >= *r.own.begin())
      return violation(c, "a head of " + std::to_string(h.index) + " counts write " + std::to_string(*r.own.begin()) +
                              " of this connection that the read did not send");
    heads_.emplace_back(c, h.index);
    k.last_head = h.index;
    r = Read();
    return true;
  }

  bool error_reply(int c, const Reply& r) {
    Connection& k = connections_[c];
    if (!answerable(k)) return violation(c, k.catching_up() ? "an error before the read's catch-up was out"
                                                             : "an error where no message was waiting for a reply");
    const Sent& m = k.queue.front();
    std::string expected;
    bool closes = false;
    switch (m.kind) {
      case Sent::Kind::Invalid: expected = "invalid message"; break;
      case Sent::Kind::Read: expected = "already reading"; break;  // a read is active (advance())
      case Sent::Kind::NotJson: expected = "invalid JSON", closes = true; break;
      case Sent::Kind::TooLong: expected = "message too large", closes = true; break;
      case Sent::Kind::Write: return violation(c, "an error where a write's confirmation was due");
    }
    if (r.text != "\"" + expected + "\"") return violation(c, "error " + r.text + " where \"" + expected + "\" was due");
    k.queue.pop_front();
    if (closes) {
      // The server drops the rest of the input: those writes are never stored.
      for (const Sent& later : k.queue)
        if (later.kind == Sent::Kind::Write) --unconfirmed_;
      k.queue.clear();
      k.read = Read();
      k.closing = true;
    }
    return true;
  }

  bool violation(int c, const std::string& what) {
    if (error_.empty()) {
      error_ = what;
      if (c >= 0) error_ += "\n  on connection " + std::to_string(c) + ", which sent and got:\n" + transcript(c);
    }
    return false;
  }

  std::vector<std::string> log_;  // the log when the server (re)started
  std::vector<Connection> connections_;
  std::map<uint64_t, Confirmed> confirmed_;  // since the last start
  std::vector<Seen> seen_;
  std::vector<std::pair<int, uint64_t>> heads_;
  uint64_t unconfirmed_ = 0;  // writes sent whose fate is open
  bool stopping_ = false;
  uint64_t lines_ = 0;
  std::string error_;
};

// ---------------------------------------------------------------------------------------------
// Wire: loopback connections to one server, driven without blocking, every line fed to a Checker.

class Wire {
 public:
  using Clock = std::chrono::steady_clock;

  Wire(Checker* checker, int port) : checker_(checker), port_(port) {}
  ~Wire() {
    for (auto& [c, s] : sockets_)
      if (s.fd >= 0) ::close(s.fd);
  }
  Wire(const Wire&) = delete;
  Wire& operator=(const Wire&) = delete;

  // A new connection to 127.0.0.1; its checker id, or -1 (see error()).
  int connect(Clock::time_point deadline) {
    std::string why;
    const int fd = connect_loopback(port_, deadline, &why);
    if (fd < 0) {
      fail(why);
      return -1;
    }
    const int c = checker_->connect();
    sockets_[c].fd = fd;
    return c;
  }

  // A non-blocking TCP connection to 127.0.0.1:port, or -1 with *error. Every wait here and
  // below is bounded, and taken up again when a signal interrupts it (libFuzzer's timers do).
  static int connect_loopback(int port, Clock::time_point deadline, std::string* error) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      *error = std::string("socket: ") + std::strerror(errno);
      return -1;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int error_code = 0;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS && errno != EINTR) {
      error_code = errno;
    } else {
      pollfd p{fd, POLLOUT, 0};
      int ready;
      while ((ready = ::poll(&p, 1, millis_left(deadline))) < 0 && errno == EINTR) {
      }
      socklen_t len = sizeof error_code;
      if (ready != 1) error_code = ETIMEDOUT;
      else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error_code, &len) != 0) error_code = errno;
    }
    if (error_code == 0) return fd;
    ::close(fd);
    *error = std::string("connect: ") + std::strerror(error_code);
    return -1;
  }

  // Sends all of `bytes` on c (the caller has told the checker what they hold), reading what
  // the server sends meanwhile. False on a violation or when time runs out (see error()).
  bool send(int c, std::string_view bytes, Clock::time_point deadline) {
    Socket& s = sockets_[c];
    while (!bytes.empty()) {
      if (s.fd < 0 || s.eof) return true;  // the server ended it: the checker judged that already
      ssize_t n = ::send(s.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n > 0) {
        bytes.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return true;  // likewise, seen on reading
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return fail(std::string("send: ") + std::strerror(errno));
      if (Clock::now() >= deadline) return fail("the server took no input for too long on connection " + std::to_string(c));
      if (!pump(10, c)) return false;
    }
    return true;
  }

  void half_close(int c) {
    if (sockets_[c].fd >= 0) ::shutdown(sockets_[c].fd, SHUT_WR);
    checker_->half_close(c);
  }
  // Closes c; with `reset`, with a TCP reset (a client that vanishes).
  void close(int c, bool reset) {
    Socket& s = sockets_[c];
    if (s.fd >= 0) {
      if (reset) {
        linger l{1, 0};
        ::setsockopt(s.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      }
      ::close(s.fd);
      s.fd = -1;
    }
    checker_->drop(c);
  }
  bool ended(int c) { return checker_->ended(c); }

  // Reads until no connection owes anything. False on a violation or when time runs out.
  bool settle(Clock::time_point deadline) {
    for (;;) {
      std::vector<int> owing;
      for (auto& [c, s] : sockets_)
        if (checker_->owes(c)) owing.push_back(c);
      if (owing.empty()) return true;
      if (Clock::now() >= deadline) {
        std::string what = "the server did not send what it owes in time";
        for (int c : owing) what += "\n  connection " + std::to_string(c) + ":\n" + checker_->transcript(c, 12);
        return fail(what);
      }
      if (!pump(millis_left(deadline), -1)) return false;
    }
  }

  // Reads whatever the server sends, for at most `ms` (returns at the first data or end); c >= 0
  // also returns once c is writable. False on a violation.
  bool pump(int ms, int writable) {
    std::vector<pollfd> fds;
    std::vector<int> ids;
    for (auto& [c, s] : sockets_) {
      if (s.fd < 0 || s.eof) continue;
      fds.push_back({s.fd, static_cast<short>(POLLIN | (c == writable ? POLLOUT : 0)), 0});
      ids.push_back(c);
    }
    if (fds.empty()) return true;
    if (::poll(fds.data(), fds.size(), std::max(ms, 0)) <= 0) return true;
    for (size_t i = 0; i < fds.size(); ++i)
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) && !drain(ids[i])) return false;
    return true;
  }

  const std::string& error() const { return error_.empty() ? checker_->error() : error_; }

  static int millis_left(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left < 0 ? 0 : static_cast<int>(std::min<long long>(left, 1000000));
  }

 private:
  struct Socket {
    int fd = -1;
    std::string in;  // bytes after the last complete line
    bool eof = false;
  };

  // Reads all there is on c, feeding complete lines (and the end) to the checker.
  bool drain(int c) {
    Socket& s = sockets_[c];
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(s.fd, buf, sizeof buf, 0);
      if (n > 0) {
        s.in.append(buf, static_cast<size_t>(n));
        size_t start = 0, nl;
        while ((nl = s.in.find('\n', start)) != std::string::npos) {
          if (!checker_->line(c, std::string_view(s.in).substr(start, nl - start))) return false;
          start = nl + 1;
        }
        s.in.erase(0, start);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      // End of stream or reset: the server ended the connection.
      const bool reset = n < 0 && errno == ECONNRESET;
      s.eof = true;
      ::close(s.fd);
      s.fd = -1;
      if (!s.in.empty()) return fail("an unterminated line at the end of connection " + std::to_string(c) + ": " + shorten(s.in));
      return checker_->eof(c, reset);
    }
  }

  bool fail(const std::string& what) {
    if (error_.empty()) error_ = what;
    return false;
  }

  Checker* checker_;
  int port_;
  std::map<int, Socket> sockets_;
  std::string error_;
};

// Reads the whole log with a stream read from 1 on a new connection, half-closed: the entries'
// bytes, index 1 first. False (with *error) unless the reply is entries 1..N with current among
// them, then the end.
inline bool read_log(int port, std::vector<std::string>* log, std::string* error,
                     std::chrono::steady_clock::time_point deadline) {
  log->clear();
  const int sock = Wire::connect_loopback(port, deadline, error);
  if (sock < 0) {
    *error = "reading the log: " + *error;
    return false;
  }
  std::string in;
  // 11 bytes always fit in an empty socket's buffer: one send.
  bool ok = ::send(sock, "{\"from\":1}\n", 11, MSG_NOSIGNAL) == 11 && ::shutdown(sock, SHUT_WR) == 0;
  if (!ok) *error = std::string("reading the log: ") + std::strerror(errno);
  while (ok) {
    pollfd p{sock, POLLIN, 0};
    const int ready = ::poll(&p, 1, Wire::millis_left(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready != 1) {
      ok = false;
      *error = "reading the log: it did not end in time";
      break;
    }
    char buf[65536];
    const ssize_t n = ::recv(sock, buf, sizeof buf, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) break;  // the end (a reset shows as a missing current below)
    in.append(buf, static_cast<size_t>(n));
  }
  ::close(sock);
  if (!ok) return false;
  size_t start = 0, nl;
  bool current = false;
  while ((nl = in.find('\n', start)) != std::string::npos) {
    const std::string_view text = std::string_view(in).substr(start, nl - start);
    start = nl + 1;
    const Reply r = parse_reply(text);
    // Entries after current are live: writes of clients that vanished may still be committed.
    if (r.kind == Reply::Kind::Entry && r.index == log->size() + 1) {
      log->push_back(r.text);
    } else if (!current && r.kind == Reply::Kind::Current) {
      current = true;
    } else {
      *error = "reading the log: unexpected line " + shorten(text) + " after " + std::to_string(log->size()) + " entries";
      return false;
    }
  }
  if (!current || start != in.size()) {
    *error = "reading the log: it did not end with current (" + std::to_string(log->size()) + " entries)";
    return false;
  }
  return true;
}

}  // namespace protocol_model
