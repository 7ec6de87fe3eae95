// The harness of the model-based protocol test (test/model_test.cpp): a seeded generator of
// operations on up to four connections (entries as random JSON trees, sent as messy but valid
// text of them; reads, invalid messages, lines that are not JSON or too long, half-closes,
// closes, resets, writes from several connections at once, restarts), a runner (ModelRun) that
// applies a list of them to the real server and checks every line it sends with the reference
// model of test/protocol_model.hpp, and shrink(), which drops operations from a failing list
// while it still fails.
#pragma once

#include <doctest/doctest.h>

#include <signal.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz/json_reference.hpp"
#include "test/harness.hpp"
#include "test/protocol_model.hpp"

namespace model {

using namespace std::chrono_literals;
using protocol_model::Checker;
using protocol_model::Sent;
using protocol_model::Wire;
using reference::Value;

constexpr size_t kMaxMessageBytes = 4096;  // the server's MAX_MESSAGE_BYTES here
constexpr int kSlots = 4;                  // connections at once

// A seeded generator (splitmix64): the same seed gives the same operations.
struct Random {
  uint64_t state;
  explicit Random(uint64_t seed) : state(seed) {}
  uint64_t next() {  // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
  bool chance(int percent) { return below(100) < static_cast<size_t>(percent); }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[below(v.size())]; }
};

// ---------------------------------------------------------------------------------------------
// Entries: a random tree (the model's truth) and a messy but valid text of it (what is sent).

inline std::u16string utf16(uint32_t cp) {
  if (cp < 0x10000) return std::u16string(1, static_cast<char16_t>(cp));
  cp -= 0x10000;
  return {static_cast<char16_t>(0xD800 + (cp >> 10)), static_cast<char16_t>(0xDC00 + (cp & 0x3FF))};
}

// Code points that exercise escaping and key order: controls, quote, backslash, slash, Latin-1,
// U+2028, U+E000 (sorts after astral characters in UTF-16), U+FFFF, an emoji, a lone surrogate.
inline const std::vector<uint32_t> kCodePoints{'a', 'b', 'B', 'z', '0', '9', ' ', '"', '\\', '/', 0x00, 0x08, 0x0A,
                                               0x1F, 0x7F, 0xE9, 0x2028, 0xE000, 0xFFFF, 0x1F600, 0xD800, 0xDC00};

inline std::u16string random_text(Random& rng, size_t max_length) {
  std::u16string s;
  const size_t n = rng.below(max_length + 1);
  for (size_t i = 0; i < n; ++i) s += utf16(rng.chance(60) ? 'a' + rng.below(26) : rng.pick(kCodePoints));
  return s;
}

// Keys that sort differently by UTF-16 code units than by code points or bytes: U+E000 and
// U+FFFF come after astral characters (surrogates, D800..DFFF) in UTF-16.
inline std::u16string random_key(Random& rng) {
  static const std::vector<std::u16string> kKeys{u"a", u"b", u"B", u"\u00e9", u"\ue000", u"\U0001F600", u"\uffff",
                                                 u"a\ue000", u"a\U0001F600", u"10", u"9", u""};
  return rng.chance(60) ? rng.pick(kKeys) : random_text(rng, 3);
}

inline const std::vector<std::string> kNumbers{"0", "-0", "7", "-12", "1.0", "1e2", "2E-3", "3.25",
                                               "12345678901234567890", "-0.5e+10", "1e400"};

inline Value random_value(Random& rng, int depth) {
  Value v;
  const size_t kind = depth >= 3 ? rng.below(5) : rng.below(7);
  switch (kind) {
    case 0: v.kind = Value::Kind::Null; break;
    case 1: v.kind = rng.chance(50) ? Value::Kind::True : Value::Kind::False; break;
    case 2: v.kind = Value::Kind::Number, v.number = rng.pick(kNumbers); break;
    case 3:
    case 4: v.kind = Value::Kind::String, v.text = random_text(rng, 6); break;
    case 5:
      v.kind = Value::Kind::Array;
      for (size_t i = rng.below(4); i > 0; --i) v.items.push_back(random_value(rng, depth + 1));
      break;
    default:
      v.kind = Value::Kind::Object;
      for (size_t i = rng.below(4); i > 0; --i) v.members.emplace_back(random_key(rng), random_value(rng, depth + 1));
  }
  return v;
}

// An entry: an object or array, unique by its "op" member (or first item), so that a log entry
// can be traced to the one write that made it.
inline Value random_entry(Random& rng, const std::string& tag) {
  Value entry;
  Value label;
  label.kind = Value::Kind::String;
  label.text = reference::u16(tag);
  if (rng.chance(75)) {
    entry.kind = Value::Kind::Object;
    for (size_t i = rng.below(5); i > 0; --i) entry.members.emplace_back(random_key(rng), random_value(rng, 1));
    // Sometimes a key twice: the first value must be dropped (JSON.parse keeps the last).
    if (rng.chance(20)) entry.members.emplace_back(u"op", random_value(rng, 2));
    entry.members.emplace_back(u"op", label);
    std::swap(entry.members.back(), entry.members[rng.below(entry.members.size())]);
    // ...but keep "op"'s real value after any other "op" member.
    size_t last_op = 0;
    for (size_t i = 0; i < entry.members.size(); ++i)
      if (entry.members[i].first == u"op") last_op = i;
    for (size_t i = 0; i < entry.members.size(); ++i)
      if (entry.members[i].first == u"op" && entry.members[i].second.kind == Value::Kind::String &&
          entry.members[i].second.text == label.text)
        std::swap(entry.members[i], entry.members[last_op]);
  } else {
    entry.kind = Value::Kind::Array;
    entry.items.push_back(label);
    for (size_t i = rng.below(3); i > 0; --i) entry.items.push_back(random_value(rng, 1));
  }
  return entry;
}

inline std::string whitespace(Random& rng) {
  static const std::vector<std::string> kSpace{"", "", "", " ", "  ", "\t", " \r "};
  return rng.pick(kSpace);
}

inline void append_utf8(uint32_t cp, std::string* out) { reference::append_utf8(cp, out); }

inline std::string escape_unit(char16_t u, Random& rng) {
  static const char kHexLower[] = "0123456789abcdef", kHexUpper[] = "0123456789ABCDEF";
  const char* hex = rng.chance(50) ? kHexLower : kHexUpper;
  std::string s = "\\u";
  for (int shift = 12; shift >= 0; shift -= 4) s += hex[(u >> shift) & 0xF];
  return s;
}

// A JSON string literal for `s`, escaped at random wherever JSON allows a choice.
inline std::string messy_string(const std::u16string& s, Random& rng) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const char16_t u = s[i];
    const bool pair = reference::is_high(u) && i + 1 < s.size() && reference::is_low(s[i + 1]);
    if (pair) {
      if (rng.chance(50)) {
        out += escape_unit(u, rng) + escape_unit(s[i + 1], rng);
      } else {
        append_utf8(0x10000 + ((u - 0xD800u) << 10) + (s[i + 1] - 0xDC00u), &out);
      }
      ++i;
    } else if (reference::is_high(u) || reference::is_low(u) || u < 0x20 || rng.chance(10)) {
      static const std::string kShort = "\b\f\n\r\t";
      const size_t k = kShort.find(static_cast<char>(u));
      if (u < 0x20 && k != std::string::npos && rng.chance(50)) out += std::string("\\") + "bfnrt"[k];
      else out += escape_unit(u, rng);
    } else if (u == '"' || u == '\\') {
      out += std::string("\\") + static_cast<char>(u);
    } else if (u == '/' && rng.chance(50)) {
      out += "\\/";
    } else {
      append_utf8(u, &out);
    }
  }
  return out + "\"";
}

inline std::string messy(const Value& v, Random& rng) {
  switch (v.kind) {
    case Value::Kind::Null: return "null";
    case Value::Kind::True: return "true";
    case Value::Kind::False: return "false";
    case Value::Kind::Number: return v.number;
    case Value::Kind::String: return messy_string(v.text, rng);
    case Value::Kind::Array: {
      std::string s = "[" + whitespace(rng);
      for (size_t i = 0; i < v.items.size(); ++i)
        s += (i ? "," + whitespace(rng) : "") + messy(v.items[i], rng) + whitespace(rng);
      return s + "]";
    }
    case Value::Kind::Object: {
      std::string s = "{" + whitespace(rng);
      for (size_t i = 0; i < v.members.size(); ++i)
        s += (i ? "," + whitespace(rng) : "") + messy_string(v.members[i].first, rng) + whitespace(rng) + ":" +
             whitespace(rng) + messy(v.members[i].second, rng) + whitespace(rng);
      return s + "}";
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Operations. Each carries its own random value, so that dropping some while shrinking leaves
// the others as they were; `serial` keeps its entries unique.

struct Op {
  enum class Kind { Send, Together, HalfClose, Close, Reset, Term, Kill };
  Kind kind = Kind::Send;
  int slot = 0;
  uint64_t value = 0;
  int serial = 0;
};

inline Op random_op(Random& rng, int serial) {
  Op op;
  op.serial = serial;
  op.slot = static_cast<int>(rng.below(kSlots));
  op.value = rng.next();
  const size_t r = rng.below(100);
  op.kind = r < 66   ? Op::Kind::Send
            : r < 78 ? Op::Kind::Together
            : r < 85 ? Op::Kind::HalfClose
            : r < 89 ? Op::Kind::Close
            : r < 93 ? Op::Kind::Reset
            : r < 97 ? Op::Kind::Term
                     : Op::Kind::Kill;
  return op;
}

// One message line as sent (without its line end) and what the model makes of it; `sent` is
// empty for a blank line.
struct Line {
  std::string text;
  std::vector<Sent> sent;
};

inline Line random_line(Random& rng, const std::string& tag, uint64_t known_head, bool writes_only) {
  Line line;
  const size_t r = writes_only ? 0 : rng.below(100);
  if (r < 55) {
    const Value entry = random_entry(rng, tag);
    std::u16string id = reference::u16(tag);
    if (rng.chance(20)) id += random_text(rng, 3);
    const std::string id_text = messy_string(id, rng), entry_text = messy(entry, rng);
    std::vector<std::string> members{"\"id\":" + whitespace(rng) + id_text, "\"entry\":" + whitespace(rng) + entry_text};
    if (rng.chance(20)) members.push_back("\"type\":\"write\"");
    if (rng.chance(50)) std::swap(members[0], members[1]);
    line.text = "{" + whitespace(rng);
    for (size_t i = 0; i < members.size(); ++i) line.text += (i ? "," : "") + members[i] + whitespace(rng);
    line.text += "}";
    line.sent.push_back(Sent::write(reference::quote(id), reference::stable_stringify(entry), tag));
  } else if (r < 72) {
    const uint64_t from = rng.below(known_head + 3);
    static const std::vector<std::string> kForms{"", ".0", "e0", ".00E+0"};
    const std::string form = from == 0 ? "" : rng.pick(kForms);
    line.text = "{\"from\":" + whitespace(rng) + std::to_string(from) + form + whitespace(rng) + "}";
    line.sent.push_back(Sent::read_from(from, 0, "stream read from " + std::to_string(from)));
  } else if (r < 84) {
    const uint64_t from = rng.below(known_head + 3), count = 1 + rng.below(4);
    line.text = "{\"read\":" + std::to_string(count) + ",\"from\":" + std::to_string(from) + "}";
    if (rng.chance(50)) line.text = "{\"from\":" + std::to_string(from) + ", \"read\":" + std::to_string(count) + "}";
    line.sent.push_back(Sent::read_from(from, count, "batch read " + std::to_string(count) + " from " + std::to_string(from)));
  } else if (r < 92) {
    static const std::vector<std::string> kInvalid{
        R"({"from":-1})", R"([1])", R"({"id":"","entry":{}})", R"({"id":"x","entry":1})", R"({"from":1,"read":0})",
        R"("text")", R"(null)", R"({"from":1.5})", R"({"from":"1"})", R"({"id":"x","entry":null})", R"({})", R"(7)"};
    line.text = rng.pick(kInvalid);
    line.sent.push_back(Sent::of_kind(Sent::Kind::Invalid, line.text));
  } else if (r < 95) {
    line.text = rng.chance(50) ? " \t" : "";
  } else if (r < 98) {
    static const std::vector<std::string> kNotJson{R"({"id":)", R"({bad})", "\xff", R"([1,])", R"({"a":1}})", R"({"s":"\x"})"};
    line.text = rng.pick(kNotJson);
    line.sent.push_back(Sent::of_kind(Sent::Kind::NotJson, line.text));
  } else {
    line.text = R"({"id":"long","entry":[")" + std::string(kMaxMessageBytes, 'x') + R"("]})";
    line.sent.push_back(Sent::of_kind(Sent::Kind::TooLong, "a line of " + std::to_string(line.text.size()) + " bytes"));
  }
  return line;
}

inline std::string describe(const Op& op) {
  static const char* const kNames[] = {"send", "several connections send at once", "half-close", "close",
                                       "reset", "restart after SIGTERM", "restart after kill -9"};
  return "#" + std::to_string(op.serial) + " " + kNames[static_cast<int>(op.kind)] + " (slot " +
         std::to_string(op.slot) + ", value " + std::to_string(op.value) + ")";
}

// ---------------------------------------------------------------------------------------------
// Running a list of operations against a fresh server.

struct Outcome {
  std::string failure;  // empty: every check held
  uint64_t operations = 0, lines = 0, restarts = 0;
};

// One run of a list of operations against a fresh server (SYNC=always or none, on a TempDir of
// its own, restarted on it by the restart operations): what failed first, if anything, and how
// much was checked.
class ModelRun {
 public:
  explicit ModelRun(bool sync_always) : sync_always_(sync_always) {}

  Outcome run(const std::vector<Op>& ops) {
    start();
    for (const Op& op : ops) {
      if (!outcome_.failure.empty()) break;
      apply(op);
      ++outcome_.operations;
      if (outcome_.failure.empty() && !wire_->settle(deadline())) fail("after " + describe(op) + ": " + wire_->error());
    }
    if (outcome_.failure.empty()) finish();
    outcome_.lines = checker_.lines_checked();
    return outcome_;
  }

 private:
  static harness::Clock::time_point deadline() { return harness::Clock::now() + 10s; }

  void start() {
    server_ = std::make_unique<harness::ServerProcess>(dir_.path());
    server_->env("SYNC", sync_always_ ? "always" : "none").env("MAX_MESSAGE_BYTES", std::to_string(kMaxMessageBytes));
    server_->start();
    wire_ = std::make_unique<Wire>(&checker_, server_->port());
    for (int& slot : slots_) slot = -1;
  }

  // The connection in `slot`, opened if it has none that can still take messages.
  int connection(int slot) {
    int& c = slots_[slot];
    if (c < 0 || checker_.ended(c) || checker_.closing(c) || half_closed_.count(c)) c = wire_->connect(deadline());
    if (c < 0) fail("connect: " + wire_->error());
    return c;
  }

  // Sends 1..4 random lines (only writes with `writes_only`) on slot's connection, as one packet
  // or split in two at a random byte, after telling the checker what they hold.
  void send_lines(int slot, Random& rng, int serial, bool writes_only) {
    const int c = connection(slot);
    if (c < 0) return;
    std::string packet;
    const size_t count = 1 + rng.below(4);
    for (size_t i = 0; i < count; ++i) {
      const std::string tag = "op" + std::to_string(serial) + "-" + std::to_string(i);
      Line line = random_line(rng, tag, checker_.log_size_known(), writes_only);
      for (Sent& m : line.sent) checker_.send(c, std::move(m));
      packet += line.text + (rng.chance(30) ? "\r\n" : "\n");
    }
    const size_t split = rng.chance(30) ? rng.below(packet.size()) : packet.size();
    if (!wire_->send(c, std::string_view(packet).substr(0, split), deadline()) ||
        !wire_->send(c, std::string_view(packet).substr(split), deadline()))
      fail("send: " + wire_->error());
  }

  void apply(const Op& op) {
    Random rng(op.value);
    switch (op.kind) {
      case Op::Kind::Send:
        send_lines(op.slot, rng, op.serial, false);
        return;
      case Op::Kind::Together: {
        // Two or three connections send writes back to back, without waiting: the server may
        // interleave them in any order, but each index once and in order per connection.
        // Often one of them first waits in a live read, so that its own writes and the others'
        // land in one batch while it reads (a batch read's head must stop short of its own).
        if (rng.chance(40)) {
          const int c = connection(op.slot);
          if (c < 0) return;
          const uint64_t from = checker_.log_size_known() + 1, count = 1 + rng.below(2);
          const bool batch = rng.chance(70);
          const std::string text = "{\"from\":" + std::to_string(from) + (batch ? ",\"read\":" + std::to_string(count) : "") + "}\n";
          checker_.send(c, Sent::read_from(from, batch ? count : 0, (batch ? "live batch read " + std::to_string(count) : "live stream read") + " from " + std::to_string(from)));
          if (!wire_->send(c, text, deadline()) || !wire_->settle(deadline())) return fail("live read: " + wire_->error());
        }
        const int n = 2 + static_cast<int>(rng.below(2));
        for (int k = 0; k < n && outcome_.failure.empty(); ++k) send_lines((op.slot + k) % kSlots, rng, op.serial * 10 + k, true);
        return;
      }
      case Op::Kind::HalfClose: {
        const int c = slots_[op.slot];
        if (c >= 0 && !checker_.ended(c) && !half_closed_.count(c)) {
          wire_->half_close(c);
          half_closed_.insert(c);
        }
        return;
      }
      case Op::Kind::Close:
      case Op::Kind::Reset: {
        const int c = slots_[op.slot];
        if (c >= 0 && !checker_.ended(c)) wire_->close(c, op.kind == Op::Kind::Reset);
        return;
      }
      case Op::Kind::Term:
      case Op::Kind::Kill:
        // Sometimes with writes in flight: sent, not yet confirmed, when the signal comes.
        if (rng.chance(50)) send_lines(op.slot, rng, op.serial, true);
        restart(op.kind == Op::Kind::Kill);
        return;
    }
  }

  void restart(bool kill) {
    if (!outcome_.failure.empty()) return;
    checker_.server_stopping();
    if (kill) {
      server_->kill9();
    } else {
      ::kill(server_->pid(), SIGTERM);
    }
    // Every connection ends now; what comes before its end is still checked.
    if (!wire_->settle(harness::Clock::now() + 15s)) return fail("while stopping: " + wire_->error());
    if (!kill) {
      const auto until = harness::Clock::now() + 15s;
      while (server_->running() && harness::Clock::now() < until) std::this_thread::sleep_for(5ms);
      if (server_->running()) return fail("the server did not exit after SIGTERM");
      if (server_->exit_status() != 0)
        return fail("the server exited with status " + std::to_string(server_->exit_status().value_or(-1)) + " after SIGTERM");
    }
    wire_.reset();
    server_.reset();
    start();
    std::vector<std::string> log;
    std::string error;
    if (!protocol_model::read_log(server_->port(), &log, &error, deadline())) return fail("after the restart, " + error);
    if (!checker_.restarted(log)) return fail("after the restart: " + checker_.error());
    ++outcome_.restarts;
  }

  // Half-closes every connection, reads each to its end, and checks the log read back.
  void finish() {
    for (int c : slots_)
      if (c >= 0 && !checker_.ended(c) && !half_closed_.count(c)) wire_->half_close(c);
    if (!wire_->settle(deadline())) return fail("at the end: " + wire_->error());
    std::vector<std::string> log;
    std::string error;
    if (!protocol_model::read_log(server_->port(), &log, &error, deadline())) return fail("at the end, " + error);
    if (!checker_.check_log(log)) return fail("at the end: " + checker_.error());
    if (server_->stop_term() != 0) fail("the server did not exit 0 after SIGTERM");
  }

  void fail(const std::string& what) {
    if (outcome_.failure.empty()) outcome_.failure = what;
  }

  bool sync_always_;
  harness::TempDir dir_;
  std::unique_ptr<harness::ServerProcess> server_;
  Checker checker_;
  std::unique_ptr<Wire> wire_;
  int slots_[kSlots] = {-1, -1, -1, -1};
  std::set<int> half_closed_;
  Outcome outcome_;
};

// The `count` operations of seed `seed`.
inline std::vector<Op> generate(uint64_t seed, size_t count) {
  Random rng(seed);
  std::vector<Op> ops;
  for (size_t i = 0; i < count; ++i) ops.push_back(random_op(rng, static_cast<int>(i)));
  return ops;
}

// Even seeds run SYNC=always, odd ones SYNC=none.
inline bool sync_always_for(uint64_t seed) { return seed % 2 == 0; }

// Drops runs of operations, halving the run length, as long as the run still fails; bounded.
inline std::vector<Op> shrink(std::vector<Op> ops, bool sync_always, std::string* failure) {
  size_t runs = 0;
  const auto until = harness::Clock::now() + 5min;
  for (size_t chunk = ops.size() / 2; chunk >= 1; chunk /= 2) {
    for (size_t i = 0; i < ops.size() && runs < 400 && harness::Clock::now() < until;) {
      std::vector<Op> candidate(ops.begin(), ops.begin() + static_cast<long>(i));
      candidate.insert(candidate.end(), ops.begin() + static_cast<long>(std::min(i + chunk, ops.size())), ops.end());
      ++runs;
      const Outcome o = ModelRun(sync_always).run(candidate);
      if (!o.failure.empty()) {
        ops = std::move(candidate);
        *failure = o.failure;
      } else {
        i += chunk;
      }
    }
  }
  return ops;
}

// The number in variable `name`, or `fallback`.
inline uint64_t env_number(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

}  // namespace model
