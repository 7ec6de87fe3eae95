// Strict JSON (RFC 8259) parser into a flat token array, and the canonical emitter that
// reproduces json-stable-stringify(JSON.parse(x)) byte for byte (numbers excepted: they are
// kept exactly as the client wrote them). Written for this project; header-only, no I/O,
// no exceptions thrown by the API (only std::bad_alloc from the standard library).
//
// Tokens hold byte offsets into the caller's text (no allocation per value). A Document is
// meant to be reused: parse() clears its vectors but keeps their capacity (release_memory()
// gives it back).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace json {

enum class Kind : uint8_t { Null, False, True, Number, String, Array, Object };

struct Token {
  Kind kind;
  uint32_t begin, end;  // byte span of the value in the text; a String's span includes its quotes
  uint32_t size;        // Array: number of items; Object: number of members (key+value pairs);
                        // String: 1 if its text contains a backslash escape, else 0; others: 0
  uint32_t next;        // index of the first token after this token's whole subtree
};
// Object members are laid out as: key token (a String) then the value's subtree.

constexpr unsigned kMaxDepth = 512;  // deeper nesting is refused with an error (parsing is iterative)

// Appends `s` (UTF-8, possibly with generalized-UTF-8 lone surrogates) as a quoted JSON string
// escaped exactly as JSON.stringify does. Bytes that are not UTF-8 are copied through unchanged.
inline void write_string(std::string_view s, std::string* out);

class Document {
 public:
  // Parses exactly one JSON value (RFC 8259); see the project notes for the exact rules.
  // The document keeps a view of `text`, which must outlive it. Returns false on error; then
  // error() says what and where, and size() is 0.
  bool parse(std::string_view text);
  const std::string& error() const { return error_; }
  // Frees the working memory kept for reuse (a parse after an unusually large document would
  // otherwise keep its high-water mark for good). The last parse's tokens are gone.
  void release_memory() {
    std::vector<Token>().swap(tokens_);
    std::vector<uint32_t>().swap(stack_);
    std::vector<Member>().swap(scratch_);
    count_ = 0;
    scratch_used_ = 0;
  }
  // Bytes of working memory held.
  size_t memory() const {
    return tokens_.capacity() * sizeof(Token) + stack_.capacity() * sizeof(uint32_t) +
           scratch_.capacity() * sizeof(Member);
  }
  size_t size() const { return count_; }
  const Token& operator[](size_t i) const { return tokens_[i]; }
  std::string_view text() const { return text_; }
  std::string_view raw(const Token& t) const { return std::string_view(text_.data() + t.begin, t.end - t.begin); }
  // True if a String token's text contains escapes, i.e. its raw bytes between the quotes are
  // not its decoded value.
  static bool has_escapes(const Token& t) { return t.kind == Kind::String && t.size != 0; }

  // Value token index of the member of object `obj` whose decoded key equals `key`; the last
  // such member when keys repeat (JSON.parse semantics); -1 if none or obj is not an Object.
  long find(size_t obj, std::string_view key) const;
  // Decoded contents of a String token as UTF-8; a lone surrogate becomes its 3-byte
  // generalized-UTF-8 form (ED A0..BF xx). Empty for non-String tokens.
  std::string decode_string(const Token& t) const;
  // True if the Number token's value is exactly an integer in [0, 2^63) (exact decimal math,
  // so "7.0", "70e-1" and "-0" qualify; "7.5", "-1" and "9223372036854775808" do not).
  bool to_uint64(const Token& t, uint64_t* out) const;
  // Appends the canonical JSON of the subtree rooted at token i to *out. Uses scratch space
  // inside the Document: do not call concurrently on one Document from several threads.
  void write_canonical(size_t i, std::string* out) const;

 private:
  bool fail(const char* what, uint32_t at);
  bool fail_unexpected(uint32_t at, const char* expected);
  bool parse_string(uint32_t* p);
  bool parse_key(uint32_t* p);
  bool parse_number(uint32_t* p);
  bool parse_literal(uint32_t* p, const char* word, uint32_t len, Kind kind);
  // Appends a token and returns its index. Fields are stored one by one straight into the
  // array (building a Token on the stack and copying it costs a store-forwarding stall).
  uint32_t push_token(Kind kind, uint32_t begin, uint32_t end, uint32_t size, uint32_t next) {
    if (count_ == tokens_.size()) grow_tokens();
    const uint32_t idx = count_++;
    Token& t = tokens_[idx];
    t.kind = kind;
    t.begin = begin;
    t.end = end;
    t.size = size;
    t.next = next;
    return idx;
  }
  void push_leaf(Kind kind, uint32_t begin, uint32_t end, uint32_t size = 0) {
    push_token(kind, begin, end, size, count_ + 1);
  }
  // The bytes between a String token's quotes.
  std::string_view inner(const Token& t) const {
    return std::string_view(text_.data() + t.begin + 1, t.end - t.begin - 2);
  }
  // Room for more tokens: doubling, but never past the most a text of this size can hold (a
  // token takes at least two bytes of text, but for a lone scalar), so that the array stays
  // within a small factor of the line however large it is.
  void grow_tokens() {
    const size_t most = text_.size() / 2 + 2;
    size_t want = tokens_.size() < 32 ? 64 : tokens_.size() * 2;
    if (want > most) want = most > tokens_.size() ? most : tokens_.size() + 1;
    tokens_.reserve(want);  // exactly: resize() alone may double the capacity past `most`
    tokens_.resize(want);
  }
  char* write_value(size_t i, char* o) const;
  char* write_object(size_t i, char* o) const;
  char* write_key_or_string(const Token& t, char* o) const;

  std::string_view text_;
  std::vector<Token> tokens_;  // only the first count_ are in use; the rest is reserve
  uint32_t count_ = 0;
  std::vector<uint32_t> stack_;            // open containers while parsing
  struct Member {
    std::string_view key;  // raw bytes between the key's quotes, or the decoded key (see write_object)
    uint32_t token;        // index of the key token; its value follows at token + 1
  };
  mutable std::vector<Member> scratch_;  // members of the objects being written, innermost last;
  mutable size_t scratch_used_ = 0;      // only the first scratch_used_ are in use
  std::string error_;
};

// ---------------------------------------------------------------------------------------------
// Implementation details.

namespace detail {

inline bool is_ws(unsigned char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

inline int hex_value(char ch) {
  unsigned char c = static_cast<unsigned char>(ch);
  if (c >= '0' && c <= '9') return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Length of the well-formed UTF-8 sequence (RFC 3629) starting at s (a byte >= 0x80), or 0 if
// it is not one: stray continuation bytes, overlongs, encoded surrogates, > U+10FFFF, truncation.
inline uint32_t utf8_sequence_length(const unsigned char* s, size_t avail) {
  const unsigned c = s[0];
  if (c < 0xC2) return 0;  // continuation byte, or C0/C1 (always overlong)
  if (c < 0xE0) return (avail >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
  if (c < 0xF0) {
    if (avail < 3) return 0;
    const unsigned lo = c == 0xE0 ? 0xA0 : 0x80;  // E0 80..9F would be overlong
    const unsigned hi = c == 0xED ? 0x9F : 0xBF;  // ED A0..BF would be a surrogate
    return (s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80) ? 3 : 0;
  }
  if (c < 0xF5) {
    if (avail < 4) return 0;
    const unsigned lo = c == 0xF0 ? 0x90 : 0x80;  // F0 80..8F would be overlong
    const unsigned hi = c == 0xF4 ? 0x8F : 0xBF;  // F4 90.. would be > U+10FFFF
    return (s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80) ? 4 : 0;
  }
  return 0;  // F5..FF never appear in UTF-8
}

// Bytes that a string scan can skip: printable ASCII other than '"' and '\\'.
struct PlainTable {
  bool plain[256];
  bool attention[256];  // bytes write_string must look at: controls, '"', '\\', 0xED
  constexpr PlainTable() : plain(), attention() {
    for (int c = 0; c < 256; ++c) {
      plain[c] = c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
      attention[c] = c < 0x20 || c == '"' || c == '\\' || c == 0xED;
    }
  }
};
inline constexpr PlainTable kTable{};

// Flags the 8 bytes at p that are '"', '\\', a control character (< 0x20) or non-ASCII: bit 7
// of each such byte of the (native-order) word is set. Bytes above the first flagged one may be
// flagged falsely (borrows), so only the lowest flag is exact.
inline uint64_t attention_mask(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  constexpr uint64_t kOnes = 0x0101010101010101ull, kHigh = 0x8080808080808080ull;
  auto zero_bytes = [](uint64_t x) { return (x - kOnes) & ~x & kHigh; };
  const uint64_t below_space = (w - kOnes * 0x20) & ~w & kHigh;
  return (w & kHigh) | below_space | zero_bytes(w ^ (kOnes * '"')) | zero_bytes(w ^ (kOnes * '\\'));
}

// Index of the first byte at or after p (< n) that is not plain string content, or n.
inline uint32_t skip_plain(const char* s, uint32_t p, uint32_t n) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  while (n - p >= 8) {
    const uint64_t mask = attention_mask(s + p);
    if (mask != 0) return p + static_cast<uint32_t>(__builtin_ctzll(mask) >> 3);
    p += 8;
  }
#else
  while (n - p >= 8 && attention_mask(s + p) == 0) p += 8;
#endif
  while (p < n && kTable.plain[static_cast<unsigned char>(s[p])]) ++p;
  return p;
}

// The output helpers below write through a char pointer into space the caller has sized
// (canonical JSON is never longer than its source text) and return the new end.

inline char* put_utf8(uint32_t cp, char* o) {
  if (cp < 0x80) {
    *o++ = static_cast<char>(cp);
  } else if (cp < 0x800) {
    *o++ = static_cast<char>(0xC0 | (cp >> 6));
    *o++ = static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {  // includes lone surrogates (generalized UTF-8)
    *o++ = static_cast<char>(0xE0 | (cp >> 12));
    *o++ = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *o++ = static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *o++ = static_cast<char>(0xF0 | (cp >> 18));
    *o++ = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *o++ = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *o++ = static_cast<char>(0x80 | (cp & 0x3F));
  }
  return o;
}

inline char* put_u_escape(uint32_t unit, char* o) {
  static const char kHex[] = "0123456789abcdef";
  o[0] = '\\';
  o[1] = 'u';
  o[2] = kHex[(unit >> 12) & 0xF];
  o[3] = kHex[(unit >> 8) & 0xF];
  o[4] = kHex[(unit >> 4) & 0xF];
  o[5] = kHex[unit & 0xF];
  return o + 6;
}

inline char* put_two(char a, char b, char* o) {
  o[0] = a;
  o[1] = b;
  return o + 2;
}

// Writes code point `cp` the way JSON.stringify writes it inside a string (at most 6 bytes).
inline char* put_escaped_cp(uint32_t cp, char* o) {
  if (cp >= 0x20) {
    if (cp == '"' || cp == '\\') return put_two('\\', static_cast<char>(cp), o);
    if (cp >= 0xD800 && cp <= 0xDFFF) return put_u_escape(cp, o);
    return put_utf8(cp, o);
  }
  switch (cp) {
    case '\b': return put_two('\\', 'b', o);
    case '\f': return put_two('\\', 'f', o);
    case '\n': return put_two('\\', 'n', o);
    case '\r': return put_two('\\', 'r', o);
    case '\t': return put_two('\\', 't', o);
    default: return put_u_escape(cp, o);
  }
}

inline uint32_t read_hex4(const char* p) {
  return static_cast<uint32_t>(hex_value(p[0]) << 12 | hex_value(p[1]) << 8 | hex_value(p[2]) << 4 |
                               hex_value(p[3]));
}

// Walks the text between the quotes of a validated String token. With kCanonical it writes the
// JSON.stringify form of the decoded value (without quotes); otherwise the decoded value. Either
// way the output is no longer than the input: every escape is replaced by at most its own length.
template <bool kCanonical>
char* transcode_string(const char* p, const char* end, char* o) {
  while (p < end) {
    const char* run = p;
    while (p < end && *p != '\\') ++p;
    if (p != run) {
      std::memcpy(o, run, static_cast<size_t>(p - run));
      o += p - run;
    }
    if (p == end) break;
    const char e = p[1];
    p += 2;
    char simple = 0;
    switch (e) {
      case '"': simple = '"'; break;
      case '\\': simple = '\\'; break;
      case '/': simple = '/'; break;
      case 'b': simple = '\b'; break;
      case 'f': simple = '\f'; break;
      case 'n': simple = '\n'; break;
      case 'r': simple = '\r'; break;
      case 't': simple = '\t'; break;
      default: break;  // 'u': the parser admits nothing else
    }
    if (simple != 0) {
      if (kCanonical && simple != '/') {
        o = put_two('\\', e, o);
      } else {
        *o++ = simple;
      }
      continue;
    }
    uint32_t cp = read_hex4(p);
    p += 4;
    if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
      const uint32_t lo = read_hex4(p + 2);
      if (lo >= 0xDC00 && lo <= 0xDFFF) {
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        p += 6;
      }
    }
    o = kCanonical ? put_escaped_cp(cp, o) : put_utf8(cp, o);
  }
  return o;
}

// Compares two well-formed UTF-8 strings in the order of their UTF-16 code units (the order of
// JavaScript's default sort). Byte order agrees with it except that U+E000..U+FFFF (lead bytes
// EE, EF) sort after U+10000.. (lead bytes F0..F4, surrogates D800..DBFF in UTF-16).
inline int compare_utf8_as_utf16(std::string_view a, std::string_view b) {
  const size_t n = a.size() < b.size() ? a.size() : b.size();
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  if (i == n) return a.size() < b.size() ? -1 : (a.size() > b.size() ? 1 : 0);
  unsigned x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
  if (x >= 0xEE && y >= 0xEE) {  // both lead bytes at the same character position
    if (x < 0xF0) x += 0x10;
    if (y < 0xF0) y += 0x10;
  }
  return x < y ? -1 : 1;
}

// Yields the UTF-16 code units of a generalized-UTF-8 string (as produced by decode_string).
class Utf16Units {
 public:
  explicit Utf16Units(std::string_view s) : s_(s) {}
  // Next code unit, or -1 at the end.
  long next() {
    if (pending_ != 0) {
      long u = pending_;
      pending_ = 0;
      return u;
    }
    if (i_ >= s_.size()) return -1;
    const auto* b = reinterpret_cast<const unsigned char*>(s_.data()) + i_;
    const size_t avail = s_.size() - i_;
    uint32_t cp;
    if (b[0] < 0x80) {
      cp = b[0];
      i_ += 1;
    } else if (b[0] < 0xE0 && avail >= 2) {
      cp = (b[0] & 0x1Fu) << 6 | (b[1] & 0x3Fu);
      i_ += 2;
    } else if (b[0] < 0xF0 && avail >= 3) {
      cp = (b[0] & 0x0Fu) << 12 | (b[1] & 0x3Fu) << 6 | (b[2] & 0x3Fu);
      i_ += 3;
    } else if (avail >= 4) {
      cp = (b[0] & 0x07u) << 18 | (b[1] & 0x3Fu) << 12 | (b[2] & 0x3Fu) << 6 | (b[3] & 0x3Fu);
      i_ += 4;
    } else {  // malformed tail: treat bytes as units so that the order stays total
      cp = b[0];
      i_ += 1;
    }
    if (cp >= 0x10000) {
      pending_ = static_cast<long>(0xDC00 + ((cp - 0x10000) & 0x3FF));
      return static_cast<long>(0xD800 + ((cp - 0x10000) >> 10));
    }
    return static_cast<long>(cp);
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
  long pending_ = 0;
};

inline int compare_utf16(std::string_view a, std::string_view b) {
  Utf16Units ua(a), ub(b);
  for (;;) {
    const long x = ua.next(), y = ub.next();
    if (x != y) return x < y ? -1 : 1;
    if (x < 0) return 0;
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Parsing.

inline bool Document::fail(const char* what, uint32_t at) {
  count_ = 0;
  stack_.clear();
  error_ = what;
  error_ += " at byte ";
  error_ += std::to_string(at);
  return false;
}

inline bool Document::fail_unexpected(uint32_t at, const char* expected) {
  if (at >= text_.size()) return fail("unexpected end of input", at);
  const unsigned char c = static_cast<unsigned char>(text_[at]);
  std::string what = "unexpected ";
  if (c > 0x20 && c < 0x7F) {
    what += '\'';
    what += static_cast<char>(c);
    what += '\'';
  } else {
    static const char kHex[] = "0123456789abcdef";
    what += "byte 0x";
    what += kHex[c >> 4];
    what += kHex[c & 0xF];
  }
  fail(what.c_str(), at);
  if (expected != nullptr) {
    error_ += ", expected ";
    error_ += expected;
  }
  return false;
}

inline bool Document::parse_string(uint32_t* pp) {
  const char* s = text_.data();
  const uint32_t n = static_cast<uint32_t>(text_.size());
  const uint32_t start = *pp;
  uint32_t p = start + 1;
  uint32_t escaped = 0;
  for (;;) {
    p = detail::skip_plain(s, p, n);
    if (p >= n) return fail("unterminated string starting", start);
    const unsigned char c = static_cast<unsigned char>(s[p]);
    if (c == '"') break;
    if (c == '\\') {
      escaped = 1;
      if (p + 1 >= n) return fail("unterminated string starting", start);
      switch (s[p + 1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
          p += 2;
          break;
        case 'u':
          for (uint32_t k = 2; k < 6; ++k) {
            if (p + k >= n) return fail("unterminated string starting", start);
            if (detail::hex_value(s[p + k]) < 0)
              return fail("invalid \\u escape", p);
          }
          p += 6;
          break;
        default:
          return fail("invalid escape", p);
      }
    } else if (c < 0x20) {
      return fail("unescaped control character in string", p);
    } else {
      const uint32_t len =
          detail::utf8_sequence_length(reinterpret_cast<const unsigned char*>(s) + p, n - p);
      if (len == 0) return fail("invalid UTF-8", p);
      p += len;
    }
  }
  ++p;  // closing quote
  push_leaf(Kind::String, start, p, escaped);
  *pp = p;
  return true;
}

// At *p (whitespace already skipped) expects: string key, optional whitespace, ':'.
inline bool Document::parse_key(uint32_t* p) {
  const uint32_t n = static_cast<uint32_t>(text_.size());
  if (*p >= n || text_[*p] != '"') return fail_unexpected(*p, "a string key");
  if (!parse_string(p)) return false;
  while (*p < n && detail::is_ws(static_cast<unsigned char>(text_[*p]))) ++*p;
  if (*p >= n || text_[*p] != ':') return fail_unexpected(*p, "':'");
  ++*p;
  return true;
}

inline bool Document::parse_number(uint32_t* pp) {
  const char* s = text_.data();
  const uint32_t n = static_cast<uint32_t>(text_.size());
  const uint32_t start = *pp;
  uint32_t p = start;
  auto digit_at = [&](uint32_t i) { return i < n && detail::is_digit(static_cast<unsigned char>(s[i])); };
  if (s[p] == '-') ++p;
  if (p < n && s[p] == '0') {
    ++p;
  } else if (digit_at(p)) {
    while (digit_at(p)) ++p;
  } else {
    return fail("invalid number", start);
  }
  if (p < n && s[p] == '.') {
    ++p;
    if (!digit_at(p)) return fail("invalid number", start);
    while (digit_at(p)) ++p;
  }
  if (p < n && (s[p] == 'e' || s[p] == 'E')) {
    ++p;
    if (p < n && (s[p] == '+' || s[p] == '-')) ++p;
    if (!digit_at(p)) return fail("invalid number", start);
    while (digit_at(p)) ++p;
  }
  push_leaf(Kind::Number, start, p);
  *pp = p;
  return true;
}

inline bool Document::parse_literal(uint32_t* p, const char* word, uint32_t len, Kind kind) {
  if (text_.size() - *p < len || std::memcmp(text_.data() + *p, word, len) != 0)
    return fail("invalid literal", *p);
  push_leaf(kind, *p, *p + len);
  *p += len;
  return true;
}

inline bool Document::parse(std::string_view text) {
  text_ = text;
  count_ = 0;
  stack_.clear();
  error_.clear();
  if (text.size() >= 0xFFFFFFFFu) return fail("document too large", 0);
  const char* s = text.data();
  const uint32_t n = static_cast<uint32_t>(text.size());
  uint32_t p = 0;
  for (;;) {
    // A value is expected at p (after optional whitespace).
    while (p < n && detail::is_ws(static_cast<unsigned char>(s[p]))) ++p;
    if (p >= n) return fail("unexpected end of input", p);
    const unsigned char c = static_cast<unsigned char>(s[p]);
    bool more = false;  // true: another value follows directly (container just opened)
    switch (c) {
      case '{':
      case '[': {
        if (stack_.size() >= kMaxDepth) return fail(("nesting deeper than " + std::to_string(kMaxDepth)).c_str(), p);
        const uint32_t idx = push_token(c == '{' ? Kind::Object : Kind::Array, p, 0, 0, 0);
        ++p;
        while (p < n && detail::is_ws(static_cast<unsigned char>(s[p]))) ++p;
        if (p < n && s[p] == (c == '{' ? '}' : ']')) {  // empty container
          ++p;
          tokens_[idx].end = p;
          tokens_[idx].next = idx + 1;
          break;
        }
        stack_.push_back(idx);
        tokens_[idx].size = 1;
        if (c == '{' && !parse_key(&p)) return false;
        more = true;
        break;
      }
      case '"':
        if (!parse_string(&p)) return false;
        break;
      case 't':
        if (!parse_literal(&p, "true", 4, Kind::True)) return false;
        break;
      case 'f':
        if (!parse_literal(&p, "false", 5, Kind::False)) return false;
        break;
      case 'n':
        if (!parse_literal(&p, "null", 4, Kind::Null)) return false;
        break;
      case '-': case '0': case '1': case '2': case '3': case '4':
      case '5': case '6': case '7': case '8': case '9':
        if (!parse_number(&p)) return false;
        break;
      default:
        return fail_unexpected(p, "a value");
    }
    if (more) continue;
    // A value just ended: close containers and find the next value, or the end.
    for (;;) {
      while (p < n && detail::is_ws(static_cast<unsigned char>(s[p]))) ++p;
      if (stack_.empty()) {
        if (p != n) return fail_unexpected(p, "end of input");
        return true;
      }
      if (p >= n) return fail("unexpected end of input", p);
      const uint32_t top = stack_.back();
      const bool is_object = tokens_[top].kind == Kind::Object;
      if (s[p] == ',') {
        ++p;
        ++tokens_[top].size;
        if (is_object) {
          while (p < n && detail::is_ws(static_cast<unsigned char>(s[p]))) ++p;
          if (!parse_key(&p)) return false;
        }
        more = true;
        break;
      }
      if (s[p] != (is_object ? '}' : ']')) return fail_unexpected(p, is_object ? "',' or '}'" : "',' or ']'");
      ++p;
      tokens_[top].end = p;
      tokens_[top].next = count_;
      stack_.pop_back();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Queries.

inline long Document::find(size_t obj, std::string_view key) const {
  if (obj >= count_ || tokens_[obj].kind != Kind::Object) return -1;
  long found = -1;
  size_t k = obj + 1;
  const uint32_t members = tokens_[obj].size;
  for (uint32_t m = 0; m < members; ++m) {
    const Token& kt = tokens_[k];
    const bool match = kt.size == 0 ? inner(kt) == key : decode_string(kt) == key;
    if (match) found = static_cast<long>(k + 1);
    k = tokens_[k + 1].next;
  }
  return found;
}

inline std::string Document::decode_string(const Token& t) const {
  std::string out;
  if (t.kind != Kind::String) return out;
  const std::string_view in = inner(t);
  if (t.size == 0) return std::string(in);
  out.resize(in.size());  // decoding never lengthens
  char* end = detail::transcode_string<false>(in.data(), in.data() + in.size(), &out[0]);
  out.resize(static_cast<size_t>(end - out.data()));
  return out;
}

inline bool Document::to_uint64(const Token& t, uint64_t* out) const {
  if (t.kind != Kind::Number) return false;
  const std::string_view r = raw(t);
  size_t i = 0;
  const bool negative = r[0] == '-';
  if (negative) ++i;
  const size_t int_begin = i;
  while (i < r.size() && detail::is_digit(static_cast<unsigned char>(r[i]))) ++i;
  const size_t int_len = i - int_begin;
  size_t frac_begin = i, frac_len = 0;
  if (i < r.size() && r[i] == '.') {
    frac_begin = ++i;
    while (i < r.size() && detail::is_digit(static_cast<unsigned char>(r[i]))) ++i;
    frac_len = i - frac_begin;
  }
  int64_t exp10 = 0;
  if (i < r.size()) {  // 'e' or 'E'
    ++i;
    bool exp_negative = false;
    if (r[i] == '+' || r[i] == '-') exp_negative = r[i++] == '-';
    for (; i < r.size(); ++i) {
      if (exp10 < 1000000000) exp10 = exp10 * 10 + (r[i] - '0');  // saturates; far beyond any use
    }
    if (exp_negative) exp10 = -exp10;
  }
  // The value is D * 10^(exp10 - frac_len), D being the digits of int and frac concatenated.
  const size_t len = int_len + frac_len;
  auto digit = [&](size_t k) { return r[k < int_len ? int_begin + k : frac_begin + (k - int_len)] - '0'; };
  size_t first = 0;
  while (first < len && digit(first) == 0) ++first;
  if (first == len) {  // zero, including -0 and 0.0e5
    *out = 0;
    return true;
  }
  if (negative) return false;
  size_t last = len - 1;
  while (digit(last) == 0) --last;
  const int64_t scale = exp10 - static_cast<int64_t>(frac_len) + static_cast<int64_t>(len - 1 - last);
  const int64_t sig = static_cast<int64_t>(last - first + 1);
  if (scale < 0) return false;        // significant digits after the point: not an integer
  if (sig + scale > 19) return false;  // >= 10^19 > 2^63
  uint64_t v = 0;
  for (size_t k = first; k <= last; ++k) v = v * 10 + static_cast<uint64_t>(digit(k));
  for (int64_t k = 0; k < scale; ++k) v *= 10;  // < 10^19 < 2^64: no overflow
  if (v >= (uint64_t{1} << 63)) return false;
  *out = v;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Canonical output.

inline void write_string(std::string_view s, std::string* out) {
  out->push_back('"');
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  char buf[8];
  while (i < n) {
    const size_t run = i;
    while (i < n && !detail::kTable.attention[b[i]]) ++i;
    if (i != run) out->append(s.data() + run, i - run);
    if (i == n) break;
    const unsigned c = b[i];
    if (c != 0xED) {
      out->append(buf, static_cast<size_t>(detail::put_escaped_cp(c, buf) - buf));
      ++i;
      continue;
    }
    // ED A0..BF xx is a generalized-UTF-8 surrogate; ED 80..9F xx is ordinary UTF-8.
    if (i + 2 < n && b[i + 1] >= 0xA0 && b[i + 1] <= 0xBF && (b[i + 2] & 0xC0) == 0x80) {
      const uint32_t hi = 0xD000u | (b[i + 1] & 0x3Fu) << 6 | (b[i + 2] & 0x3Fu);
      // A high surrogate directly followed by a low one forms a pair, as in a JS string.
      if (hi <= 0xDBFF && i + 5 < n && b[i + 3] == 0xED && b[i + 4] >= 0xB0 && b[i + 4] <= 0xBF &&
          (b[i + 5] & 0xC0) == 0x80) {
        const uint32_t lo = 0xD000u | (b[i + 4] & 0x3Fu) << 6 | (b[i + 5] & 0x3Fu);
        out->append(buf, static_cast<size_t>(detail::put_utf8(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), buf) - buf));
        i += 6;
      } else {
        out->append(buf, static_cast<size_t>(detail::put_u_escape(hi, buf) - buf));
        i += 3;
      }
    } else {
      out->push_back(static_cast<char>(c));
      ++i;
    }
  }
  out->push_back('"');
}

inline char* Document::write_key_or_string(const Token& t, char* o) const {
  const char* src = text_.data() + t.begin;
  if (t.size == 0) {  // no escapes: the raw text is already exactly what JSON.stringify writes
    std::memcpy(o, src, t.end - t.begin);
    return o + (t.end - t.begin);
  }
  *o++ = '"';
  o = detail::transcode_string<true>(src + 1, src + (t.end - t.begin) - 1, o);
  *o++ = '"';
  return o;
}

inline char* Document::write_value(size_t i, char* o) const {
  const Token& t = tokens_[i];
  switch (t.kind) {
    case Kind::Array: {
      *o++ = '[';
      size_t k = i + 1;
      for (uint32_t m = 0; m < t.size; ++m) {
        if (m != 0) *o++ = ',';
        o = write_value(k, o);
        k = tokens_[k].next;
      }
      *o++ = ']';
      return o;
    }
    case Kind::Object:
      return write_object(i, o);
    case Kind::String:
      if (t.size != 0) return write_key_or_string(t, o);
      [[fallthrough]];
    default:  // numbers as written; true, false, null; strings without escapes
      std::memcpy(o, text_.data() + t.begin, t.end - t.begin);
      return o + (t.end - t.begin);
  }
}

inline char* Document::write_object(size_t i, char* o) const {
  const uint32_t members = tokens_[i].size;
  if (members == 0) return detail::put_two('{', '}', o);
  // This object's members go on top of the scratch stack; nested objects push above them and
  // pop back to here. Only indices into scratch_ are held across calls (it may reallocate).
  const size_t base = scratch_used_;
  scratch_used_ += members;
  if (scratch_used_ > scratch_.size()) scratch_.resize(scratch_used_ < 32 ? 32 : 2 * scratch_used_);
  bool any_escaped = false;
  size_t k = i + 1;
  for (size_t m = base; m < scratch_used_; ++m) {
    const Token& key = tokens_[k];
    Member& member = scratch_[m];  // fields stored one by one: no Member temporary on the stack
    member.key = inner(key);
    member.token = static_cast<uint32_t>(k);
    any_escaped |= key.size != 0;
    k = tokens_[k + 1].next;
  }
  const auto first = scratch_.begin() + static_cast<ptrdiff_t>(base);
  const auto last = scratch_.begin() + static_cast<ptrdiff_t>(scratch_used_);
  std::vector<std::string> decoded;  // stays empty (no allocation) unless a key has escapes
  if (!any_escaped) {
    // Keys compare on their raw bytes; ties (duplicates) by position, so the last comes last.
    std::sort(first, last, [](const Member& a, const Member& b) {
      const int c = detail::compare_utf8_as_utf16(a.key, b.key);
      return c != 0 ? c < 0 : a.token < b.token;
    });
  } else {
    // Rare: some key has escapes. Compare decoded keys (which may hold generalized-UTF-8 lone
    // surrogates) by UTF-16 code units.
    decoded.reserve(members);
    for (auto it = first; it != last; ++it) {
      decoded.push_back(decode_string(tokens_[it->token]));
      it->key = decoded.back();  // no reallocation: capacity reserved above
    }
    std::sort(first, last, [](const Member& a, const Member& b) {
      const int c = detail::compare_utf16(a.key, b.key);
      return c != 0 ? c < 0 : a.token < b.token;
    });
  }
  // Keep only the last of each run of equal keys (JSON.parse: the last duplicate wins).
  size_t end = base;
  for (size_t r = base; r < base + members; ++r) {
    if (r + 1 < base + members && scratch_[r].key == scratch_[r + 1].key) continue;
    scratch_[end++] = scratch_[r];
  }
  *o++ = '{';
  for (size_t m = base; m < end; ++m) {
    if (m != base) *o++ = ',';
    const uint32_t key = scratch_[m].token;  // re-read each time: nested calls may reallocate scratch_
    o = write_key_or_string(tokens_[key], o);
    *o++ = ':';
    o = write_value(key + 1, o);
  }
  *o++ = '}';
  scratch_used_ = base;
  return o;
}

inline void Document::write_canonical(size_t i, std::string* out) const {
  // The canonical form is never longer than the source text of the value: whitespace and
  // duplicate members are dropped and every escape is rewritten no longer than it was.
  const Token& t = tokens_[i];
  const size_t old = out->size();
  out->resize(old + (t.end - t.begin));
  scratch_used_ = 0;
  char* end = write_value(i, &(*out)[0] + old);
  out->resize(static_cast<size_t>(end - out->data()));
}

}  // namespace json
