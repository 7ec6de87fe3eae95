// A second, deliberately plain reading of the same rules as json.hpp and message.hpp, for the
// fuzz targets to hold the real ones to: a recursive-descent parser into a tree whose strings are
// UTF-16 code units (what JSON.parse makes of them), json-stable-stringify of that tree (numbers
// as written), and the protocol's rules (doc/protocol.md) for what a line asks for. Nothing here is shared with
// json.hpp: where the two disagree on an input, one of them is wrong.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace reference {

struct Value {
  enum class Kind { Null, False, True, Number, String, Array, Object };
  Kind kind = Kind::Null;
  std::string number;                                     // Number: its text as written
  std::u16string text;                                    // String: UTF-16 code units
  std::vector<Value> items;                               // Array
  std::vector<std::pair<std::u16string, Value>> members;  // Object: in text order, repeats kept
};

constexpr int kMaxDepth = 512;  // containers nested deeper are refused (doc/protocol.md, json.hpp)

class Parser {
 public:
  // True if `text` is exactly one JSON value (RFC 8259, strings valid UTF-8), nested no deeper
  // than kMaxDepth.
  bool parse(std::string_view text, Value* out) {
    s_ = text;
    p_ = 0;
    skip_ws();
    if (!value(out, 0)) return false;
    skip_ws();
    return p_ == s_.size();
  }

 private:
  bool at(char c) const { return p_ < s_.size() && s_[p_] == c; }
  unsigned char byte(size_t i) const { return static_cast<unsigned char>(s_[i]); }
  void skip_ws() {
    while (p_ < s_.size() && (s_[p_] == ' ' || s_[p_] == '\t' || s_[p_] == '\n' || s_[p_] == '\r')) ++p_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(p_, word.size()) != word) return false;
    p_ += word.size();
    return true;
  }

  bool value(Value* v, int depth) {
    if (p_ >= s_.size()) return false;
    switch (s_[p_]) {
      case 'n': v->kind = Value::Kind::Null; return literal("null");
      case 't': v->kind = Value::Kind::True; return literal("true");
      case 'f': v->kind = Value::Kind::False; return literal("false");
      case '"': v->kind = Value::Kind::String; return string(&v->text);
      case '[': return array(v, depth + 1);
      case '{': return object(v, depth + 1);
      default: v->kind = Value::Kind::Number; return number(&v->number);
    }
  }

  bool array(Value* v, int depth) {
    if (depth > kMaxDepth) return false;
    v->kind = Value::Kind::Array;
    ++p_;
    skip_ws();
    if (at(']')) {
      ++p_;
      return true;
    }
    for (;;) {
      skip_ws();
      v->items.emplace_back();
      if (!value(&v->items.back(), depth)) return false;
      skip_ws();
      if (at(']')) {
        ++p_;
        return true;
      }
      if (!at(',')) return false;
      ++p_;
    }
  }

  bool object(Value* v, int depth) {
    if (depth > kMaxDepth) return false;
    v->kind = Value::Kind::Object;
    ++p_;
    skip_ws();
    if (at('}')) {
      ++p_;
      return true;
    }
    for (;;) {
      skip_ws();
      if (!at('"')) return false;
      std::pair<std::u16string, Value> member;
      if (!string(&member.first)) return false;
      skip_ws();
      if (!at(':')) return false;
      ++p_;
      skip_ws();
      if (!value(&member.second, depth)) return false;
      v->members.push_back(std::move(member));
      skip_ws();
      if (at('}')) {
        ++p_;
        return true;
      }
      if (!at(',')) return false;
      ++p_;
    }
  }

  bool digits() {
    const size_t start = p_;
    while (p_ < s_.size() && s_[p_] >= '0' && s_[p_] <= '9') ++p_;
    return p_ > start;
  }

  bool number(std::string* out) {
    const size_t start = p_;
    if (at('-')) ++p_;
    if (at('0')) {
      ++p_;
    } else if (!digits()) {
      return false;
    }
    if (at('.')) {
      ++p_;
      if (!digits()) return false;
    }
    if (at('e') || at('E')) {
      ++p_;
      if (at('+') || at('-')) ++p_;
      if (!digits()) return false;
    }
    out->assign(s_.substr(start, p_ - start));
    return true;
  }

  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // One UTF-8 encoded code point at p_ (a byte >= 0x80), appended as UTF-16.
  bool utf8(std::u16string* out) {
    const unsigned char b0 = byte(p_);
    int need;
    uint32_t cp, min;
    if (b0 >= 0xC0 && b0 <= 0xDF) {
      need = 1, cp = b0 & 0x1F, min = 0x80;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      need = 2, cp = b0 & 0x0F, min = 0x800;
    } else if (b0 >= 0xF0 && b0 <= 0xF7) {
      need = 3, cp = b0 & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (p_ + need >= s_.size()) return false;  // the string's closing quote must still follow
    for (int k = 1; k <= need; ++k) {
      const unsigned char b = byte(p_ + k);
      if ((b & 0xC0) != 0x80) return false;
      cp = cp << 6 | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p_ += need + 1;
    if (cp >= 0x10000) {
      out->push_back(static_cast<char16_t>(0xD800 + ((cp - 0x10000) >> 10)));
      out->push_back(static_cast<char16_t>(0xDC00 + ((cp - 0x10000) & 0x3FF)));
    } else {
      out->push_back(static_cast<char16_t>(cp));
    }
    return true;
  }

  bool string(std::u16string* out) {
    ++p_;  // the opening quote
    for (;;) {
      if (p_ >= s_.size()) return false;
      const unsigned char c = byte(p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) return false;
      if (c >= 0x80) {
        if (!utf8(out)) return false;
        continue;
      }
      if (c != '\\') {
        out->push_back(c);
        ++p_;
        continue;
      }
      if (p_ + 1 >= s_.size()) return false;
      const char e = s_[p_ + 1];
      p_ += 2;
      switch (e) {
        case '"': out->push_back(u'"'); break;
        case '\\': out->push_back(u'\\'); break;
        case '/': out->push_back(u'/'); break;
        case 'b': out->push_back(u'\b'); break;
        case 'f': out->push_back(u'\f'); break;
        case 'n': out->push_back(u'\n'); break;
        case 'r': out->push_back(u'\r'); break;
        case 't': out->push_back(u'\t'); break;
        case 'u': {
          if (p_ + 4 > s_.size()) return false;
          uint32_t unit = 0;
          for (int k = 0; k < 4; ++k) {
            const int h = hex(s_[p_ + k]);
            if (h < 0) return false;
            unit = unit << 4 | static_cast<uint32_t>(h);
          }
          p_ += 4;
          out->push_back(static_cast<char16_t>(unit));  // JSON.parse keeps lone surrogates
          break;
        }
        default:
          return false;
      }
    }
  }

  std::string_view s_;
  size_t p_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Output: JSON.stringify of strings, json-stable-stringify of values (numbers as written).

inline void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | cp >> 6));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | cp >> 12));
    out->push_back(static_cast<char>(0x80 | (cp >> 6 & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | cp >> 18));
    out->push_back(static_cast<char>(0x80 | (cp >> 12 & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp >> 6 & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

inline bool is_high(char16_t u) { return u >= 0xD800 && u <= 0xDBFF; }
inline bool is_low(char16_t u) { return u >= 0xDC00 && u <= 0xDFFF; }

// JSON.stringify(s) (ES2019 well-formed: a lone surrogate becomes a lowercase \u escape), UTF-8.
inline std::string quote(const std::u16string& s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const char16_t u = s[i];
    switch (u) {
      case u'"': out += "\\\""; continue;
      case u'\\': out += "\\\\"; continue;
      case u'\b': out += "\\b"; continue;
      case u'\f': out += "\\f"; continue;
      case u'\n': out += "\\n"; continue;
      case u'\r': out += "\\r"; continue;
      case u'\t': out += "\\t"; continue;
      default: break;
    }
    if (is_high(u) && i + 1 < s.size() && is_low(s[i + 1])) {
      append_utf8(0x10000 + ((u - 0xD800u) << 10) + (s[i + 1] - 0xDC00u), &out);
      ++i;
    } else if (u < 0x20 || is_high(u) || is_low(u)) {
      out += "\\u";
      for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(u >> shift) & 0xF];
    } else {
      append_utf8(u, &out);
    }
  }
  return out + "\"";
}

// What JSON.parse keeps of an object: each key once, with its last value.
inline std::vector<std::pair<std::u16string, const Value*>> last_members(const Value& object) {
  std::vector<std::pair<std::u16string, const Value*>> kept;
  for (const auto& member : object.members) {
    auto same = std::find_if(kept.begin(), kept.end(), [&](const auto& m) { return m.first == member.first; });
    if (same != kept.end()) same->second = &member.second;
    else kept.emplace_back(member.first, &member.second);
  }
  return kept;
}

// json-stable-stringify(v): keys in the order of Array.prototype.sort (UTF-16 code units, which
// is how std::u16string compares), no whitespace.
inline void stable_stringify(const Value& v, std::string* out) {
  switch (v.kind) {
    case Value::Kind::Null: *out += "null"; return;
    case Value::Kind::False: *out += "false"; return;
    case Value::Kind::True: *out += "true"; return;
    case Value::Kind::Number: *out += v.number; return;
    case Value::Kind::String: *out += quote(v.text); return;
    case Value::Kind::Array:
      *out += '[';
      for (size_t i = 0; i < v.items.size(); ++i) {
        if (i) *out += ',';
        stable_stringify(v.items[i], out);
      }
      *out += ']';
      return;
    case Value::Kind::Object: {
      auto members = last_members(v);
      std::sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      *out += '{';
      for (size_t i = 0; i < members.size(); ++i) {
        if (i) *out += ',';
        *out += quote(members[i].first);
        *out += ':';
        stable_stringify(*members[i].second, out);
      }
      *out += '}';
      return;
    }
  }
}

inline std::string stable_stringify(const Value& v) {
  std::string out;
  stable_stringify(v, &out);
  return out;
}

// A UTF-16 string as generalized UTF-8 (a lone surrogate as its 3-byte form), the way the server
// holds a decoded id.
inline std::string to_utf8(const std::u16string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (is_high(s[i]) && i + 1 < s.size() && is_low(s[i + 1])) {
      append_utf8(0x10000 + ((s[i] - 0xD800u) << 10) + (s[i + 1] - 0xDC00u), &out);
      ++i;
    } else {
      append_utf8(s[i], &out);
    }
  }
  return out;
}

inline std::u16string u16(std::string_view ascii) { return std::u16string(ascii.begin(), ascii.end()); }

// The exact value of a JSON number if it is an integer in [0, 2^63); by decimal digits, never
// through floating point ("7.0", "70e-1" and "-0" qualify; "7.5" and "-1" do not).
inline bool exact_uint63(const std::string& number, uint64_t* out) {
  size_t i = 0;
  const bool negative = number[0] == '-';
  if (negative) ++i;
  std::string digits;  // integer and fraction digits together
  long long exponent = 0;  // value = digits * 10^exponent
  for (; i < number.size() && number[i] != 'e' && number[i] != 'E'; ++i) {
    if (number[i] == '.') continue;
    digits += number[i];
  }
  const size_t dot = number.find('.');
  if (dot != std::string::npos) {
    size_t end = number.find_first_of("eE");
    if (end == std::string::npos) end = number.size();
    exponent -= static_cast<long long>(end - dot - 1);
  }
  if (i < number.size()) {  // the exponent, capped far beyond anything that matters
    ++i;
    const bool minus = number[i] == '-';
    if (number[i] == '+' || number[i] == '-') ++i;
    long long e = 0;
    for (; i < number.size(); ++i) e = std::min(e * 10 + (number[i] - '0'), 1000000000LL);
    exponent += minus ? -e : e;
  }
  digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size()));
  if (digits.empty()) {
    *out = 0;  // any zero, -0 included
    return true;
  }
  if (negative) return false;
  while (digits.back() == '0') {
    digits.pop_back();
    ++exponent;
  }
  if (exponent < 0) return false;  // a fraction
  if (static_cast<long long>(digits.size()) + exponent > 19) return false;  // >= 10^19
  digits.append(static_cast<size_t>(exponent), '0');
  // At most 19 digits: below 10^19, which fits in 64 bits (and no 32-bit target has __int128).
  uint64_t value = 0;
  for (char d : digits) value = value * 10 + static_cast<unsigned>(d - '0');
  if (value >= (uint64_t{1} << 63)) return false;
  *out = value;
  return true;
}

// What a line asks for, by the protocol's rules (doc/protocol.md): a read is an object with an integer
// "from" >= 0 and, if "read" is there, an integer "read" >= 1; otherwise a write is an object
// with a non-empty string "id" and an object or array "entry"; any other JSON is invalid.
struct Request {
  enum class Kind { Invalid, Read, Write };
  Kind kind = Kind::Invalid;
  uint64_t from = 0, read = 0;
  std::u16string id;
  const Value* entry = nullptr;
};

inline Request classify(const Value& v) {
  Request r;
  if (v.kind != Value::Kind::Object) return r;
  const Value *from = nullptr, *read = nullptr, *id = nullptr, *entry = nullptr;
  for (const auto& [key, value] : last_members(v)) {
    if (key == u16("from")) from = value;
    if (key == u16("read")) read = value;
    if (key == u16("id")) id = value;
    if (key == u16("entry")) entry = value;
  }
  if (from && from->kind == Value::Kind::Number && exact_uint63(from->number, &r.from)) {
    if (!read) {
      r.kind = Request::Kind::Read;
      return r;
    }
    if (read->kind == Value::Kind::Number && exact_uint63(read->number, &r.read) && r.read >= 1) {
      r.kind = Request::Kind::Read;
      return r;
    }
    r.read = 0;
  }
  r.from = 0;
  if (id && id->kind == Value::Kind::String && !id->text.empty() && entry &&
      (entry->kind == Value::Kind::Object || entry->kind == Value::Kind::Array)) {
    r.kind = Request::Kind::Write;
    r.id = id->text;
    r.entry = entry;
  }
  return r;
}

}  // namespace reference
