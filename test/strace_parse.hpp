// Reads the text that `strace -f -qq -X raw -y -xx -s N` writes: one system call per line,
// every string byte as \xNN (so quotes, newlines and non-UTF-8 bytes never confuse the
// parser), flags as raw numbers, and each descriptor followed by what it refers to:
//   1234  pwrite64(6<\x2f\x74...>, "\x35\x30...", 65, 0) = 65
//   1234  openat(-100<\x2f...>, "\x2f...", 0x80042, 0644) = 6<\x2f...>
//   1235  write(3<...>, "\x61", 1 <unfinished ...>        (another thread runs meanwhile)
//   1235  <... write resumed>) = 1
// A call split by another thread's line is joined again, and keeps both of its positions:
// where it started and where it returned (the explorer needs both, see crash_trace.hpp).
#pragma once

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace strace {

// One system call as strace showed it.
struct Call {
  long tid = 0;
  std::string name;
  std::vector<std::string> args;  // top-level arguments, raw text
  long result = 0;                // -1 on failure ("?" for calls that never return: 0)
  std::string result_path;        // "<...>" after the result (a new descriptor's target)
  std::string error;              // "ENOSPC", ... when result == -1
  bool injected = false;          // strace made it fail (-e inject); it did nothing
  bool returned = true;           // false for "= ?" (the process died inside the call)
  size_t start_line = 0;          // 0-based line numbers in the trace
  size_t end_line = 0;
};

// "\x2f\x74" -> "/t". Also takes plain printable text and C escapes, in case -xx was not used.
inline std::string unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size() / 4 + 1);
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] != '\\' || i + 1 >= s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    if (c == 'x' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else if (c >= '0' && c <= '7') {
      size_t j = i;
      int v = 0;
      while (j < s.size() && j < i + 3 && s[j] >= '0' && s[j] <= '7') v = v * 8 + (s[j++] - '0');
      out += static_cast<char>(v);
      i = j - 1;
    } else {
      static const std::map<char, char> simple{{'n', '\n'}, {'t', '\t'}, {'r', '\r'}, {'v', '\v'},
                                               {'f', '\f'}, {'\\', '\\'}, {'"', '"'}};
      auto it = simple.find(c);
      out += it == simple.end() ? c : it->second;
    }
  }
  return out;
}

// The decoded bytes of a string argument "\x..". Fails (nullopt) on anything else, and on a
// string strace cut short ("..." after it: -s was too small for the data).
inline std::optional<std::string> string_arg(std::string_view arg) {
  if (arg.size() < 2 || arg.front() != '"') return std::nullopt;
  size_t end = arg.size() - 1;
  if (arg[end] != '"') return std::nullopt;
  return unescape(arg.substr(1, end - 1));
}

// True when a string argument was cut short by -s.
inline bool truncated(std::string_view arg) {
  return arg.size() >= 4 && arg.substr(arg.size() - 3) == "...";
}

// The integer an argument starts with: decimal, 0x hex or 0-prefixed octal (as strace -X raw
// prints flags and modes). "-100<...>" gives -100.
inline long long int_arg(std::string_view arg) {
  std::string s(arg.substr(0, arg.find_first_of("<|, ")));
  return std::strtoll(s.c_str(), nullptr, 0);
}

// The path in "<...>" after a descriptor (what -y prints), decoded; empty if none.
inline std::string fd_path(std::string_view arg) {
  size_t open = arg.find('<');
  size_t close = arg.rfind('>');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open) return {};
  return unescape(arg.substr(open + 1, close - open - 1));
}

// The value of "name=" inside a struct or named-argument list ("flags=0x3d0f00").
inline std::optional<long long> named_int(std::string_view text, std::string_view name) {
  std::string key = std::string(name) + "=";
  for (size_t at = text.find(key); at != std::string_view::npos; at = text.find(key, at + 1)) {
    if (at > 0 && (std::isalnum(static_cast<unsigned char>(text[at - 1])) || text[at - 1] == '_')) continue;
    return int_arg(text.substr(at + key.size()));
  }
  return std::nullopt;
}

namespace detail {

// Splits "a, "b,c", [d, e], {f=1}" at its top-level commas.
inline std::vector<std::string> split_args(std::string_view s) {
  std::vector<std::string> out;
  int depth = 0;
  bool in_string = false;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); i++) {
    char c = s[i];
    if (in_string) {
      if (c == '\\') i++;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '(' || c == '[' || c == '{') depth++;
    else if (c == ')' || c == ']' || c == '}') depth--;
    else if (c == '/' && i + 1 < s.size() && s[i + 1] == '*') {  // a /* comment */
      size_t end = s.find("*/", i + 2);
      i = end == std::string_view::npos ? s.size() : end + 1;
    } else if (c == ',' && depth == 0) {
      std::string a(s.substr(start, i - start));
      out.push_back(a.substr(a.find_first_not_of(' ') == std::string::npos ? 0 : a.find_first_not_of(' ')));
      start = i + 1;
    }
  }
  std::string a(s.substr(start));
  size_t first = a.find_first_not_of(' ');
  if (first != std::string::npos) out.push_back(a.substr(first));
  return out;
}

// The position of the ')' that closes the argument list opened at `open`.
inline size_t closing_paren(std::string_view s, size_t open) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = open; i < s.size(); i++) {
    char c = s[i];
    if (in_string) {
      if (c == '\\') i++;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '(' || c == '[' || c == '{') depth++;
    else if (c == ')' || c == ']' || c == '}') {
      if (--depth == 0) return i;
    }
  }
  return std::string_view::npos;
}

// Fills result, result_path, error, injected from the text after the closing ')'.
inline void parse_result(std::string_view rest, Call* c) {
  size_t eq = rest.find("= ");
  if (eq == std::string_view::npos) return;
  std::string_view r = rest.substr(eq + 2);
  if (!r.empty() && r[0] == '?') {
    c->returned = false;
    return;
  }
  c->result = static_cast<long>(int_arg(r));
  size_t sp = r.find(' ');
  size_t lt = r.find('<');
  if (lt != std::string_view::npos && (sp == std::string_view::npos || lt < sp)) {
    size_t gt = r.find('>', lt);
    if (gt != std::string_view::npos) c->result_path = unescape(r.substr(lt + 1, gt - lt - 1));
  }
  if (c->result == -1 && sp != std::string_view::npos) {
    std::string_view e = r.substr(sp + 1);
    c->error = std::string(e.substr(0, e.find(' ')));
  }
  c->injected = rest.find("(INJECTED)") != std::string_view::npos;
}

}  // namespace detail

// Parses a whole trace. Lines that are not system calls (signals, exits) are skipped; a call
// whose "<unfinished ...>" half never resumed (its process was killed) is kept with
// returned = false, so that what it may have done is not forgotten.
inline std::vector<Call> parse(const std::string& text) {
  std::vector<Call> calls;
  std::map<long, std::pair<std::string, size_t>> unfinished;  // tid -> (text so far, line)
  std::istringstream in(text);
  size_t line_no = 0;
  auto finish = [&](long tid, const std::string& joined, size_t start, size_t end) {
    size_t paren = joined.find('(');
    if (paren == std::string::npos) return;
    size_t close = detail::closing_paren(joined, paren);
    if (close == std::string::npos) return;
    Call c;
    c.tid = tid;
    c.name = joined.substr(0, paren);
    c.args = detail::split_args(std::string_view(joined).substr(paren + 1, close - paren - 1));
    detail::parse_result(std::string_view(joined).substr(close + 1), &c);
    c.start_line = start;
    c.end_line = end;
    calls.push_back(std::move(c));
  };
  for (std::string line; std::getline(in, line); line_no++) {
    // "TID call(...)" when several threads are traced; "call(...)" when strace follows one
    // (attached to a single thread with -p, without -f): tid 0.
    long tid = 0;
    std::string body = line;
    if (!line.empty() && std::isdigit(static_cast<unsigned char>(line[0]))) {
      size_t sp = line.find(' ');
      if (sp == std::string::npos) continue;
      tid = std::atol(line.c_str());
      size_t body_at = line.find_first_not_of(' ', sp);
      if (body_at == std::string::npos) continue;
      body = line.substr(body_at);
    }
    if (body.rfind("+++", 0) == 0 || body.rfind("---", 0) == 0) continue;
    static const std::string kUnfinished = " <unfinished ...>";
    if (body.size() >= kUnfinished.size() &&
        body.compare(body.size() - kUnfinished.size(), kUnfinished.size(), kUnfinished) == 0) {
      unfinished[tid] = {body.substr(0, body.size() - kUnfinished.size()), line_no};
      continue;
    }
    if (body.rfind("<... ", 0) == 0) {
      size_t resumed = body.find(" resumed>");
      auto it = unfinished.find(tid);
      if (resumed == std::string::npos || it == unfinished.end()) continue;
      std::string joined = it->second.first + body.substr(resumed + 9);
      size_t start = it->second.second;
      unfinished.erase(it);
      finish(tid, joined, start, line_no);
      continue;
    }
    finish(tid, body, line_no, line_no);
  }
  for (const auto& [tid, part] : unfinished) {  // killed inside the call
    finish(tid, part.first + ") = ?", part.second, line_no);
  }
  return calls;
}

}  // namespace strace
