// Unit tests for json.hpp: the strict parser and the canonical (json-stable-stringify) emitter.
// Expected canonical strings were produced by Node v20 (JSON.parse, then a recursive
// Object.keys(o).sort() / JSON.stringify emulation of json-stable-stringify).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "json.hpp"

namespace {

std::string canonical(std::string_view in) {
  json::Document d;
  INFO("input: ", std::string(in));
  const bool ok = d.parse(in);
  INFO("error: ", d.error());
  REQUIRE(ok);
  std::string out;
  d.write_canonical(0, &out);
  return out;
}

bool parses(std::string_view in) {
  json::Document d;
  return d.parse(in);
}

// Parses `in`, expecting failure, and returns the error message.
std::string error_of(std::string_view in) {
  json::Document d;
  INFO("input: ", std::string(in));
  CHECK_FALSE(d.parse(in));
  CHECK(d.size() == 0);
  return d.error();
}

std::string decoded(std::string_view json_string) {
  json::Document d;
  REQUIRE(d.parse(json_string));
  REQUIRE(d[0].kind == json::Kind::String);
  return d.decode_string(d[0]);
}

std::string written(std::string_view s) {
  std::string out;
  json::write_string(s, &out);
  return out;
}

std::string repeat(std::string_view s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

}  // namespace

TEST_CASE("simple escapes decode and are written back as JSON.stringify writes them") {
  CHECK(decoded(R"("\"")") == "\"");
  CHECK(decoded(R"("\\")") == "\\");
  CHECK(decoded(R"("\/")") == "/");
  CHECK(decoded(R"("\b")") == "\b");
  CHECK(decoded(R"("\f")") == "\f");
  CHECK(decoded(R"("\n")") == "\n");
  CHECK(decoded(R"("\r")") == "\r");
  CHECK(decoded(R"("\t")") == "\t");
  CHECK(decoded(R"("a\tb\nc")") == "a\tb\nc");

  CHECK(canonical(R"("\"")") == R"("\"")");
  CHECK(canonical(R"("\\")") == R"("\\")");
  CHECK(canonical(R"("\/")") == R"("/")");
  CHECK(canonical(R"("a/b")") == R"("a/b")");
  CHECK(canonical(R"("\b\f\n\r\t")") == R"("\b\f\n\r\t")");

  CHECK(written("\"") == R"("\"")");
  CHECK(written("\\") == R"("\\")");
  CHECK(written("/") == R"("/")");
  CHECK(written("\b\f\n\r\t") == R"("\b\f\n\r\t")");
  CHECK(written("") == R"("")");
}

TEST_CASE("write_string escapes U+0000..U+007F exactly like JSON.stringify") {
  std::string all;
  for (int c = 0; c < 0x80; ++c) all.push_back(static_cast<char>(c));
  // node -e 'let s=""; for(let i=0;i<0x80;i++) s+=String.fromCharCode(i); console.log(JSON.stringify(s))'
  const std::string expected =
      "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010"
      "\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f"
      " !\\\"#$%&'()*+,-./0123456789:;<=>\077@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
      "\177\"";
  CHECK(written(all) == expected);

  // The same characters given as \u escapes in the input canonicalize to the same text.
  std::string escaped = "\"";
  for (int c = 0; c < 0x80; ++c) {
    char buf[8];
    snprintf(buf, sizeof buf, "\\u%04X", c);
    escaped += buf;
  }
  escaped += "\"";
  CHECK(canonical(escaped) == expected);
  CHECK(decoded(escaped) == all);
}

TEST_CASE("unicode escapes decode to UTF-8 and non-ASCII is written raw") {
  CHECK(decoded(R"("\u0041")") == "A");
  CHECK(decoded(R"("\u00e9")") == "\xC3\xA9");
  CHECK(decoded(R"("\u00E9")") == "\xC3\xA9");
  CHECK(decoded(R"("\u20ac")") == "\xE2\x82\xAC");
  CHECK(decoded(R"("\uffff")") == "\xEF\xBF\xBF");
  CHECK(decoded(R"("\u0000")") == std::string(1, '\0'));
  CHECK(canonical(R"("\u0041")") == R"("A")");
  CHECK(canonical(R"("\u00e9")") == "\"\xC3\xA9\"");
  CHECK(canonical(R"("\u2028\u2029")") == "\"\xE2\x80\xA8\xE2\x80\xA9\"");  // not escaped by JSON.stringify
  CHECK(canonical(R"("\u007f")") == "\"\x7F\"");
  CHECK(canonical(R"("\u001F")") == R"("\u001f")");  // lowercase hex
  CHECK(canonical(R"("\u0008")") == R"("\b")");      // short form
  // node: JSON.stringify("\u0080\u07ff\u0800\ud7ff\ue000\uffff\u{10000}\u{10ffff}\u2028\u2029")
  const char* raw_range =
      "\"\302\200\337\277\340\240\200\355\237\277\356\200\200\357\277\277\360\220\200\200\364\217\277\277"
      "\342\200\250\342\200\251\"";
  CHECK(canonical(raw_range) == raw_range);
  CHECK(canonical(R"("\u0080\u07ff\u0800\ud7ff\ue000\uffff\ud800\udc00\udbff\udfff\u2028\u2029")") == raw_range);
  CHECK(written(std::string_view(raw_range + 1, std::strlen(raw_range) - 2)) == raw_range);
}

TEST_CASE("surrogate pairs are joined into one 4-byte character") {
  CHECK(decoded(R"("\ud83d\ude00")") == "\xF0\x9F\x98\x80");
  CHECK(decoded(R"("\uD83D\uDE00")") == "\xF0\x9F\x98\x80");
  CHECK(decoded(R"("\ud800\udc00")") == "\xF0\x90\x80\x80");
  CHECK(decoded(R"("\udbff\udfff")") == "\xF4\x8F\xBF\xBF");
  CHECK(decoded(R"("x\ud83d\ude00y")") == "x\xF0\x9F\x98\x80y");
  CHECK(canonical(R"("\ud83d\ude00")") == "\"\xF0\x9F\x98\x80\"");
  CHECK(canonical("\"\xF0\x9F\x98\x80\"") == "\"\xF0\x9F\x98\x80\"");
}

TEST_CASE("lone surrogates decode to generalized UTF-8 and are written back as lowercase escapes") {
  // Lone high, lone low.
  CHECK(decoded(R"("\ud800")") == "\xED\xA0\x80");
  CHECK(decoded(R"("\uDBFF")") == "\xED\xAF\xBF");
  CHECK(decoded(R"("\udc00")") == "\xED\xB0\x80");
  CHECK(decoded(R"("\udfff")") == "\xED\xBF\xBF");
  // High followed by something that is not a low surrogate; low followed by high.
  CHECK(decoded(R"("\ud800x")") == "\xED\xA0\x80x");
  CHECK(decoded(R"("\ud800\u0041")") == "\xED\xA0\x80" "A");
  CHECK(decoded(R"("\ud800\ud800")") == "\xED\xA0\x80\xED\xA0\x80");
  CHECK(decoded(R"("\udc00\ud800")") == "\xED\xB0\x80\xED\xA0\x80");
  CHECK(decoded(R"("\ud800\n")") == "\xED\xA0\x80\n");
  CHECK(decoded(R"("\ud83d\ud83d\ude00")") == "\xED\xA0\xBD\xF0\x9F\x98\x80");

  // node: stable-stringify of {"lone":[...]} (JSON.stringify is well-formed since Node 12)
  CHECK(canonical(R"({"lone":["\ud800","\udbff","\udc00","\udfff","\ud800x","\ud800\u0041","\ud800\ud800","\udc00\ud800","\ud83d\ude00"]})") ==
        "{\"lone\":[\"\\ud800\",\"\\udbff\",\"\\udc00\",\"\\udfff\",\"\\ud800x\",\"\\ud800A\",\"\\ud800\\ud800\","
        "\"\\udc00\\ud800\",\"\360\237\230\200\"]}");
  CHECK(canonical(R"("\uD800")") == R"("\ud800")");

  // write_string of decoded text gives the same as the canonical writer.
  CHECK(written("\xED\xA0\x80") == R"("\ud800")");
  CHECK(written("\xED\xB0\x80\xED\xA0\x80") == R"("\udc00\ud800")");
  CHECK(written("a\xED\xAF\xBF") == R"("a\udbff")");
  // Adjacent generalized high+low form a pair, as they would in a JavaScript string.
  CHECK(written("\xED\xA0\xBD\xED\xB8\x80") == "\"\xF0\x9F\x98\x80\"");
  // Ordinary ED-led characters (U+D000..U+D7FF) are plain UTF-8.
  CHECK(written("\xED\x9F\xBF") == "\"\xED\x9F\xBF\"");
}

TEST_CASE("invalid UTF-8 in strings is rejected") {
  const char* bad[] = {
      "\x80",                  // stray continuation byte
      "\xBF",                  //
      "\xC3\x28",              // bad continuation (2-byte)
      "\xE2\x28\xA1",          // bad continuation (3-byte, 2nd byte)
      "\xE2\x82\x28",          // bad continuation (3-byte, 3rd byte)
      "\xF0\x28\x8C\xBC",      // bad continuation (4-byte)
      "\xF0\x90\x28\xBC",      //
      "\xF0\x90\x8C\x28",      //
      "\xC0\xAF",              // overlong 2-byte '/'
      "\xC1\xBF",              // overlong 2-byte
      "\xC0\x80",              // overlong NUL
      "\xE0\x80\xAF",          // overlong 3-byte
      "\xE0\x9F\xBF",          // overlong 3-byte (U+07FF)
      "\xF0\x80\x80\xAF",      // overlong 4-byte
      "\xF0\x8F\xBF\xBF",      // overlong 4-byte (U+FFFF)
      "\xED\xA0\x80",          // UTF-8-encoded surrogate U+D800
      "\xED\xAF\xBF",          // U+DBFF
      "\xED\xB0\x80",          // U+DC00
      "\xED\xBF\xBF",          // U+DFFF
      "\xED\xA0\xBD\xED\xB8\x80",  // CESU-8 pair
      "\xF4\x90\x80\x80",      // U+110000
      "\xF5\x80\x80\x80",      // lead byte F5
      "\xF7\xBF\xBF\xBF",      //
      "\xF8\x88\x80\x80\x80",  // 5-byte form
      "\xFF",                  // never valid
      "\xFE",                  //
      "\xC0",                  // lead C0 alone
      "\xF5",                  // lead F5 alone
      "\xC3",                  // truncated before the closing quote
      "\xE2\x82",              //
      "\xF0\x9F\x98",          //
  };
  for (const char* b : bad) {
    const std::string in = std::string("\"") + b + "\"";
    CHECK(error_of(in) == "invalid UTF-8 at byte 1");
    CHECK(error_of(std::string("{\"k\":\"ab") + b + "\"}") == "invalid UTF-8 at byte 8");
    CHECK(error_of(std::string("{\"ab") + b + "\":1}") == "invalid UTF-8 at byte 4");  // in a key
  }
  // Truncated at the very end of the text.
  CHECK(error_of("\"\xE2\x82") == "invalid UTF-8 at byte 1");
  CHECK(error_of("\"\xF0\x9F\x98") == "invalid UTF-8 at byte 1");
  CHECK(error_of("\"\xC3") == "invalid UTF-8 at byte 1");
  CHECK(error_of("[\"ok\",\"\xF4\x8F\xBF") == "invalid UTF-8 at byte 7");
}

TEST_CASE("valid UTF-8 at every sequence-length boundary is accepted") {
  const char* good[] = {"\xC2\x80",         "\xDF\xBF",         "\xE0\xA0\x80",     "\xED\x9F\xBF",
                        "\xEE\x80\x80",     "\xEF\xBF\xBF",     "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF",
                        "\xF3\xBF\xBF\xBF", "\xE1\x80\x80",     "\xEC\xBF\xBF",     "\xF1\x80\x80\x80"};
  for (const char* g : good) {
    const std::string in = std::string("\"") + g + "\"";
    INFO(in);
    CHECK(canonical(in) == in);
    CHECK(decoded(in) == g);
  }
}

TEST_CASE("bytes outside strings must be JSON syntax: non-ASCII and a BOM are rejected") {
  CHECK(error_of("\xEF\xBB\xBF{}") == "unexpected byte 0xef at byte 0, expected a value");
  CHECK(error_of("[1,\xC3\xA9]") == "unexpected byte 0xc3 at byte 3, expected a value");
  CHECK(error_of("{}\xFF") == "unexpected byte 0xff at byte 2, expected end of input");
}

TEST_CASE("raw control characters inside strings are rejected") {
  for (int c = 0; c < 0x20; ++c) {
    std::string in = "\"ab";
    in.push_back(static_cast<char>(c));
    in += "\"";
    CHECK(error_of(in) == "unescaped control character in string at byte 3");
  }
  CHECK(error_of("{\"a\nb\":1}") == "unescaped control character in string at byte 3");
  CHECK(canonical("\"\x7F\"") == "\"\x7F\"");  // DEL is not a control character for JSON
}

TEST_CASE("invalid escapes are rejected") {
  CHECK(error_of(R"("\x41")") == "invalid escape at byte 1");
  CHECK(error_of(R"("\'")") == "invalid escape at byte 1");
  CHECK(error_of(R"("\U0041")") == "invalid escape at byte 1");
  CHECK(error_of(R"("\a")") == "invalid escape at byte 1");
  CHECK(error_of(R"("\0")") == "invalid escape at byte 1");
  CHECK(error_of(R"("ab\u12G4")") == "invalid \\u escape at byte 3");
  CHECK(error_of(R"("\u12")") == "invalid \\u escape at byte 1");
  CHECK(error_of(R"("\u")") == "invalid \\u escape at byte 1");
  CHECK(error_of(R"("\u-123")") == "invalid \\u escape at byte 1");
  CHECK(error_of("\"\\") == "unterminated string starting at byte 0");
  CHECK(error_of("\"\\u12") == "unterminated string starting at byte 0");
  CHECK(error_of("[\"abc") == "unterminated string starting at byte 1");
  CHECK(error_of("\"\\\"") == "unterminated string starting at byte 0");
  CHECK(error_of("\"\\\xC3\xA9\"") == "invalid escape at byte 1");
}

TEST_CASE("nesting of exactly 256 and 512 levels is accepted") {
  for (size_t depth : {size_t{1}, size_t{256}, size_t{511}, size_t{512}}) {
    INFO("depth ", depth);
    const std::string arrays = repeat("[", depth) + repeat("]", depth);
    json::Document d;
    REQUIRE(d.parse(arrays));
    CHECK(d.size() == depth);
    CHECK(d[0].next == depth);
    CHECK(canonical(arrays) == arrays);

    const std::string objects = repeat("{\"a\":", depth) + "1" + repeat("}", depth);
    REQUIRE(d.parse(objects));
    CHECK(d.size() == 2 * depth + 1);
    CHECK(canonical(objects) == objects);

    const std::string mixed = repeat("[{\"k\" : ", depth / 2) + "[]" + repeat("}]", depth / 2);
    CHECK(parses(mixed) == (depth / 2 * 2 + 1 <= json::kMaxDepth));
  }
  const std::string spaced = repeat(" [ ", 512) + "0" + repeat(" ] ", 512);
  CHECK(parses(spaced));
}

TEST_CASE("nesting deeper than 512 levels is refused with an error, not a crash") {
  CHECK(error_of(repeat("[", 513) + repeat("]", 513)) == "nesting deeper than 512 at byte 512");
  CHECK(error_of(repeat("{\"a\":", 513) + "1" + repeat("}", 513)) == "nesting deeper than 512 at byte 2560");
  CHECK(error_of(repeat("[", 100000)) == "nesting deeper than 512 at byte 512");
  CHECK(error_of(repeat("[", 100000) + repeat("]", 100000)) == "nesting deeper than 512 at byte 512");
  CHECK(error_of(repeat("{\"a\":", 100000)) == "nesting deeper than 512 at byte 2560");
  CHECK(error_of(repeat("[{\"\":", 300)) == "nesting deeper than 512 at byte 1280");
  // Deep but closed containers do not count: siblings at depth 512 are fine.
  const std::string wide = repeat("[", 511) + "[],[],[[]]" + repeat("]", 511);
  CHECK_FALSE(parses(wide));  // [[]] inside depth 511 makes 513
  const std::string siblings = repeat("[", 511) + "[],[],[]" + repeat("]", 511);
  CHECK(parses(siblings));
}

TEST_CASE("numbers are kept exactly as written") {
  const char* numbers[] = {"0",  "-0",    "1",       "-1",     "12345678901234567890", "1.0", "1E+2", "1e-2",
                           "1E2", "-0.0", "0.000001", "1e400", "-1.5e-7",             "123456789.123456789e+010",
                           "100", "2.50", "9007199254740993"};
  for (const char* n : numbers) {
    INFO(std::string(n));
    CHECK(canonical(n) == n);
    CHECK(canonical(std::string("[") + n + "]") == std::string("[") + n + "]");
    CHECK(canonical(std::string("{\"n\":") + n + "}") == std::string("{\"n\":") + n + "}");
    json::Document d;
    const std::string padded = std::string(" ") + n + " ";  // must outlive the Document's use of it
    REQUIRE(d.parse(padded));
    CHECK(d[0].kind == json::Kind::Number);
    CHECK(d.raw(d[0]) == n);
  }
}

TEST_CASE("invalid numbers are rejected") {
  const char* bad[] = {"01",  "00",     "-01", "1.",     ".5",   "+1",  "-",    "1e",  "1e+", "1E-",   "0x1",
                       "NaN", "-NaN",   "Infinity", "-Infinity", "1.e5", "-.5", "--1", "1..2", "1e5.5", "0.1.2",
                       "1 2", "- 1",    "1ee5", "1e++5", "01.5", "1_000", "\xEF\xBC\x91"};
  for (const char* b : bad) {
    INFO(std::string(b));
    CHECK_FALSE(parses(b));
    CHECK_FALSE(parses(std::string("[") + b + "]"));
    CHECK_FALSE(parses(std::string("{\"n\":") + b + "}"));
  }
  CHECK(error_of("01") == "unexpected '1' at byte 1, expected end of input");
  CHECK(error_of("[1.]") == "invalid number at byte 1");
  CHECK(error_of("-") == "invalid number at byte 0");
  CHECK(error_of(".5") == "unexpected '.' at byte 0, expected a value");
  CHECK(error_of("[0x1]") == "unexpected 'x' at byte 2, expected ',' or ']'");
}

TEST_CASE("literals true, false and null are exact") {
  CHECK(canonical("true") == "true");
  CHECK(canonical("false") == "false");
  CHECK(canonical("null") == "null");
  CHECK(canonical("[true,false,null]") == "[true,false,null]");
  for (const char* b : {"tru", "nul", "fals", "True", "NULL", "nulll", "truefalse", "t", "undefined", "[nul]"}) {
    INFO(std::string(b));
    CHECK_FALSE(parses(b));
  }
  CHECK(error_of("[tru]") == "invalid literal at byte 1");
}

TEST_CASE("duplicate keys: the last value wins in find() and in canonical output") {
  json::Document d;
  REQUIRE(d.parse(R"({"a":1,"b":2,"a":3})"));
  CHECK(d[0].size == 3);
  const long a = d.find(0, "a");
  REQUIRE(a >= 0);
  CHECK(d.raw(d[a]) == "3");
  CHECK(canonical(R"({"a":1,"b":2,"a":3})") == R"({"a":3,"b":2})");
  // Same decoded key written differently: node gives {"a":4,"b":2}.
  CHECK(canonical(R"({"a":1,"b":2,"a":3,"\u0061":4})") == R"({"a":4,"b":2})");
  CHECK(canonical(R"({"\u0061":1,"a":{"x":1,"x":[2]}})") == R"({"a":{"x":[2]}})");
  CHECK(canonical(R"({"k":1,"k":2,"k":3,"k":4,"k":5})") == R"({"k":5})");
  REQUIRE(d.parse(R"({"caf\u00e9":1,"café":2,"x":0,"caf\u00E9":3})"));
  CHECK(d.raw(d[d.find(0, "caf\xC3\xA9")]) == "3");
  CHECK(canonical(R"({"caf\u00e9":1,"café":2,"x":0,"caf\u00E9":3})") == "{\"caf\xC3\xA9\":3,\"x\":0}");
  // "__proto__" is an ordinary own key for JSON.parse (node: {"__proto__":[3],"a":2,"b":1}).
  CHECK(canonical(R"({"b":1,"__proto__":{"x":1},"a":2,"__proto__":[3]})") == R"({"__proto__":[3],"a":2,"b":1})");
  // Duplicates whose values are containers: the earlier subtree is skipped entirely.
  CHECK(canonical(R"({"a":[1,{"b":2}],"c":true,"a":{"d":[]}})") == R"({"a":{"d":[]},"c":true})");
}

TEST_CASE("find returns the value token of a member, -1 otherwise") {
  json::Document d;
  REQUIRE(d.parse(R"({"a":[1,{"b":null}],"c":"x","\ud800":7,"e\u0301":8})"));
  CHECK(d.find(0, "a") == 2);
  CHECK(d.find(0, "c") == 8);
  CHECK(d.raw(d[d.find(0, "\xED\xA0\x80")]) == "7");  // lone surrogate key, generalized UTF-8
  CHECK(d.raw(d[d.find(0, "e\xCC\x81")]) == "8");
  CHECK(d.find(0, "zz") == -1);
  CHECK(d.find(0, "") == -1);
  CHECK(d.find(0, "\"a\"") == -1);
  CHECK(d.find(2, "a") == -1);  // an array
  CHECK(d.find(4, "b") == 6);   // nested object
  CHECK(d.find(1, "a") == -1);  // a string
  CHECK(d.find(999, "a") == -1);
  REQUIRE(d.parse("{}"));
  CHECK(d.find(0, "a") == -1);
}

TEST_CASE("token layout: spans, sizes and next indices") {
  json::Document d;
  const std::string text = R"( {"a":[1,{"b":null}],"c":"x\n"} )";
  REQUIRE(d.parse(text));
  REQUIRE(d.size() == 9);
  CHECK(d[0].kind == json::Kind::Object);
  CHECK(d.raw(d[0]) == R"({"a":[1,{"b":null}],"c":"x\n"})");
  CHECK(d[0].begin == 1);
  CHECK(d[0].size == 2);
  CHECK(d[0].next == 9);
  CHECK(d[1].kind == json::Kind::String);
  CHECK(d.raw(d[1]) == "\"a\"");
  CHECK(d[1].next == 2);
  CHECK(d[2].kind == json::Kind::Array);
  CHECK(d[2].size == 2);
  CHECK(d[2].next == 7);
  CHECK(d.raw(d[2]) == R"([1,{"b":null}])");
  CHECK(d[3].kind == json::Kind::Number);
  CHECK(d[4].kind == json::Kind::Object);
  CHECK(d[4].size == 1);
  CHECK(d[4].next == 7);
  CHECK(d[6].kind == json::Kind::Null);
  CHECK(d.raw(d[7]) == "\"c\"");
  CHECK(d.raw(d[8]) == R"("x\n")");
  CHECK(json::Document::has_escapes(d[8]));
  CHECK_FALSE(json::Document::has_escapes(d[7]));
  CHECK(d[8].next == 9);
  REQUIRE(d.parse("[[],{},[[]]]"));
  REQUIRE(d.size() == 5);
  CHECK(d[0].size == 3);
  CHECK(d[1].size == 0);
  CHECK(d[1].next == 2);
  CHECK(d[2].next == 3);
  CHECK(d[3].next == 5);
  CHECK(d.raw(d[3]) == "[[]]");
}

TEST_CASE("whitespace is allowed between all tokens, only space, tab, LF and CR") {
  const std::string ws = " \t\n\r";
  const std::string in = ws + "{" + ws + "\"a\"" + ws + ":" + ws + "[" + ws + "1" + ws + "," + ws + "true" + ws + "," +
                         ws + "{" + ws + "}" + ws + "," + ws + "[" + ws + "]" + ws + "]" + ws + "," + ws + "\"b\"" + ws +
                         ":" + ws + "null" + ws + "}" + ws;
  CHECK(canonical(in) == R"({"a":[1,true,{},[]],"b":null})");
  CHECK(canonical(" \"s p\" ") == "\"s p\"");
  for (const char* b : {"\f1", "\v1", "1\f", "[1\v]", "\xC2\xA0" "1", "{\"a\"\f:1}", "\xE2\x80\xA8[]"}) {
    INFO(std::string(b));
    CHECK_FALSE(parses(b));
  }
}

TEST_CASE("trailing garbage after the value is rejected") {
  CHECK(error_of("{} x") == "unexpected 'x' at byte 3, expected end of input");
  CHECK(error_of("{}{}") == "unexpected '{' at byte 2, expected end of input");
  CHECK(error_of("1 2") == "unexpected '2' at byte 2, expected end of input");
  CHECK(error_of("[] ]") == "unexpected ']' at byte 3, expected end of input");
  CHECK(error_of("\"a\"\"b\"") == "unexpected '\"' at byte 3, expected end of input");
  CHECK(error_of(std::string("{}\0", 3)) == "unexpected byte 0x00 at byte 2, expected end of input");
  CHECK(error_of("null,") == "unexpected ',' at byte 4, expected end of input");
  CHECK_FALSE(parses("true false"));
}

TEST_CASE("empty and whitespace-only input is rejected") {
  CHECK(error_of("") == "unexpected end of input at byte 0");
  CHECK(error_of(" ") == "unexpected end of input at byte 1");
  CHECK(error_of(" \t\r\n ") == "unexpected end of input at byte 5");
}

TEST_CASE("syntax errors name the unexpected character and its byte offset") {
  CHECK(error_of("[1,,2]") == "unexpected ',' at byte 3, expected a value");
  CHECK(error_of("[1,]") == "unexpected ']' at byte 3, expected a value");
  CHECK(error_of("{\"a\":1,}") == "unexpected '}' at byte 7, expected a string key");
  CHECK(error_of("{,}") == "unexpected ',' at byte 1, expected a string key");
  CHECK(error_of("{\"a\" 1}") == "unexpected '1' at byte 5, expected ':'");
  CHECK(error_of("{\"a\":1 \"b\":2}") == "unexpected '\"' at byte 7, expected ',' or '}'");
  CHECK(error_of("{a:1}") == "unexpected 'a' at byte 1, expected a string key");
  CHECK(error_of("{1:1}") == "unexpected '1' at byte 1, expected a string key");
  CHECK(error_of("[1}") == "unexpected '}' at byte 2, expected ',' or ']'");
  CHECK(error_of("{\"a\":1]") == "unexpected ']' at byte 6, expected ',' or '}'");
  CHECK(error_of("[1") == "unexpected end of input at byte 2");
  CHECK(error_of("{\"a\"") == "unexpected end of input at byte 4");
  CHECK(error_of("'a'") == "unexpected ''' at byte 0, expected a value");
  CHECK(error_of("}") == "unexpected '}' at byte 0, expected a value");
}

TEST_CASE("every proper prefix of a valid document is rejected") {
  const std::string docs[] = {
      R"({"type":"write","id":"c1-42","entry":{"s":"caf\u00e9 \ud83d\ude00 \"q\" \\","n":[-1.5e+3,0,true,false,null],"o":{},"a":[]}})",
      "[\"\xF0\x9F\x98\x80\xE2\x82\xAC\xC3\xA9\",{\"\xEF\xBF\xBF\":[[[1]]]},-0.0E-0]",
      " { \"a\" : [ 1 , 2 ] } ",
  };
  for (const std::string& doc : docs) {
    REQUIRE(parses(doc));
    size_t end = doc.size();
    while (end > 0 && doc[end - 1] == ' ') --end;  // trailing whitespace is not part of the value
    for (size_t len = 0; len < end; ++len) {
      INFO("prefix length ", len, " of ", doc);
      CHECK_FALSE(parses(std::string_view(doc).substr(0, len)));
    }
  }
}

TEST_CASE("to_uint64 accepts exact non-negative integers below 2^63") {
  struct Case {
    const char* text;
    bool ok;
    uint64_t value;
  };
  const Case cases[] = {
      {"0", true, 0},
      {"-0", true, 0},
      {"-0.0e-5", true, 0},
      {"0e999999999999999999", true, 0},
      {"7", true, 7},
      {"7.0", true, 7},
      {"7e0", true, 7},
      {"70e-1", true, 7},
      {"0.7e1", true, 7},
      {"700E-2", true, 7},
      {"1E+2", true, 100},
      {"100e-2", true, 1},
      {"0.00000000000000000000000001e26", true, 1},
      {"1e18", true, 1000000000000000000ull},
      {"9223372036854775807", true, 9223372036854775807ull},
      {"9223372036854775807.000", true, 9223372036854775807ull},
      {"922337203685477580.7e1", true, 9223372036854775807ull},
      {"0009", false, 0},  // not JSON (see below): parse fails
      {"-1", false, 0},
      {"-7.0", false, 0},
      {"7.5", false, 0},
      {"0.1", false, 0},
      {"1e-1", false, 0},
      {"1.5e0", false, 0},
      {"9223372036854775808", false, 0},
      {"18446744073709551615", false, 0},
      {"18446744073709551616", false, 0},
      {"1e19", false, 0},
      {"10000000000000000000", false, 0},
      {"1e999999999999999999999", false, 0},
      {"99999999999999999999999999", false, 0},
      {"9223372036854775807.5", false, 0},
  };
  for (const Case& c : cases) {
    INFO(std::string(c.text));
    json::Document d;
    if (!d.parse(c.text)) {
      CHECK(std::string(c.text) == "0009");
      continue;
    }
    uint64_t v = 12345;
    CHECK(d.to_uint64(d[0], &v) == c.ok);
    if (c.ok) CHECK(v == c.value);
  }
  json::Document d;
  REQUIRE(d.parse(R"(["7",true,null,[7],{"a":7}])"));
  uint64_t v = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    if (d[i].kind != json::Kind::Number) CHECK_FALSE(d.to_uint64(d[i], &v));
  }
  CHECK(d.to_uint64(d[5], &v));  // the 7 inside [7]
  CHECK(v == 7);
}

TEST_CASE("object keys sort by UTF-16 code units, like JavaScript's default sort") {
  // node: Object.keys(JSON.parse(in)).sort(); note U+1F600 (D83D DE00) sorts before U+E000/U+FFFF,
  // although its UTF-8 bytes (F0 ..) are greater than theirs (EE .., EF ..).
  CHECK(canonical("{\"b\":1,\"a\":2,\"B\":3,\"10\":4,\"9\":5,\"\303\251\":6,\"\357\277\277\":7,\"\360\237\230\200\":8,"
                  "\"\":9,\"a b\":10,\"ab\":11,\"a\":12,\"~\":13,\"\":14}") ==
        "{\"\":14,\"10\":4,\"9\":5,\"B\":3,\"a\":12,\"a b\":10,\"ab\":11,\"b\":1,\"~\":13,\"\303\251\":6,"
        "\"\360\237\230\200\":8,\"\357\277\277\":7}");
  // The same with escaped keys (the decoded-key path), lone surrogates and a NUL included.
  CHECK(canonical("{\"b\":1,\"a\":2,\"B\":3,\"10\":4,\"9\":5,\"\303\251\":6,\"\\uFFFF\":7,\"\360\237\230\200\":8,"
                  "\"\":9,\"a\\u0000\":10,\"\\ud800\":11,\"\\udc00\":12,\"\\ue000\":13}") ==
        "{\"\":9,\"10\":4,\"9\":5,\"B\":3,\"a\":2,\"a\\u0000\":10,\"b\":1,\"\303\251\":6,\"\\ud800\":11,"
        "\"\360\237\230\200\":8,\"\\udc00\":12,\"\356\200\200\":13,\"\357\277\277\":7}");
  CHECK(canonical(R"({"\ud83d\ude00":1,"\uffff":2,"\ue000":3,"\ud7ff":4,"z":5})") ==
        "{\"z\":5,\"\355\237\277\":4,\"\360\237\230\200\":1,\"\356\200\200\":3,\"\357\277\277\":2}");
  // Prefixes sort first; integer-like keys are not reordered numerically.
  CHECK(canonical(R"({"2":0,"10":0,"1":0,"01":0,"-1":0})") == R"({"-1":0,"01":0,"1":0,"10":0,"2":0})");
  CHECK(canonical(R"({"ab":0,"a":0,"abc":0,"":0})") == R"({"":0,"a":0,"ab":0,"abc":0})");
}

TEST_CASE("UTF-8 byte comparison with the E000 fix-up agrees with UTF-16 comparison") {
  // Characters from every region where UTF-8 and UTF-16 orders might disagree.
  const char* chars[] = {"",     "A",    "\x7F", "\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF",
                         "\xEE\x80\x80",  "\xEF\xBF\xBF",  "\xEF\xBF\xBD", "\xF0\x90\x80\x80",
                         "\xF0\x9F\x98\x80", "\xF4\x8F\xBF\xBF", "\xF3\xA0\x80\x80"};
  const size_t n = sizeof chars / sizeof chars[0];
  for (size_t a1 = 0; a1 < n; ++a1)
    for (size_t a2 = 0; a2 < n; ++a2)
      for (size_t b1 = 0; b1 < n; ++b1)
        for (size_t b2 = 0; b2 < n; ++b2) {
          const std::string a = std::string(chars[a1]) + chars[a2];
          const std::string b = std::string(chars[b1]) + chars[b2];
          const int fast = json::detail::compare_utf8_as_utf16(a, b);
          const int slow = json::detail::compare_utf16(a, b);
          if (fast != slow) {
            FAIL_CHECK("order differs for " << a1 << "," << a2 << " vs " << b1 << "," << b2);
          }
        }
}

TEST_CASE("canonical output matches Node json-stable-stringify for realistic entries") {
  CHECK(canonical(R"({"type":"write","id":"c1-42","entry":{"user":"alice","action":"login","at":1700000000123,"tags":["web","eu"],"ok":true,"meta":null}})") ==
        R"({"entry":{"action":"login","at":1700000000123,"meta":null,"ok":true,"tags":["web","eu"],"user":"alice"},"id":"c1-42","type":"write"})");
  CHECK(canonical("{ \"z\" : [ 1 , 2 , { \"b\" : false , \"a\" : \"x\\ty\" } ] , \"a\" : { } , \"m\" : [ ] , "
                  "\"\303\251\" : \"caf\\u00e9 \\ud83d\\ude00 \\/ \\u0000\\u001f\\u007f\" }") ==
        "{\"a\":{},\"m\":[],\"z\":[1,2,{\"a\":\"x\\ty\",\"b\":false}],\"\303\251\":\"caf\303\251 \360\237\230\200 / "
        "\\u0000\\u001f\177\"}");
  CHECK(canonical(R"({"s":"\"\\\/\b\f\n\r\t\u0001\u0008\u000b\u001F\u0020\u0041\u00e9\u20ac\u2028\ud83d\ude00\ud800\udc00x\udbff\udfff"})") ==
        "{\"s\":\"\\\"\\\\/\\b\\f\\n\\r\\t\\u0001\\b\\u000b\\u001f A\303\251\342\202\254\342\200\250\360\237\230\200"
        "\360\220\200\200x\364\217\277\277\"}");
  // Keys with escapes are written in canonical form too.
  CHECK(canonical(R"({"a\/b":1,"\u0041":2,"t\tab":3,"q\"":4})") == R"({"A":2,"a/b":1,"q\"":4,"t\tab":3})");
  CHECK(canonical(R"([])") == "[]");
  CHECK(canonical(R"({})") == "{}");
  CHECK(canonical(R"([{}, [], "", 0])") == R"([{},[],"",0])");
}

TEST_CASE("write_canonical of a subtree writes just that subtree") {
  json::Document d;
  REQUIRE(d.parse(R"({"type":"write","entry":{"b":[2,1],"a":"\u00e9"}})"));
  const long entry = d.find(0, "entry");
  REQUIRE(entry >= 0);
  std::string out = "prefix:";
  d.write_canonical(static_cast<size_t>(entry), &out);
  CHECK(out == "prefix:{\"a\":\"\xC3\xA9\",\"b\":[2,1]}");
}

TEST_CASE("a Document is reusable: a failed parse leaves no tokens, the next parse starts fresh") {
  json::Document d;
  REQUIRE(d.parse(R"({"a":[1,2,3,{"b":[4,5]}]})"));
  CHECK(d.size() == 11);
  CHECK(d.error().empty());
  CHECK_FALSE(d.parse("[1,2"));
  CHECK(d.size() == 0);
  CHECK_FALSE(d.error().empty());
  REQUIRE(d.parse("7"));
  CHECK(d.size() == 1);
  CHECK(d.error().empty());
  CHECK(d.raw(d[0]) == "7");
  std::string out;
  d.write_canonical(0, &out);
  CHECK(out == "7");
}

TEST_CASE("canonical output is a fixed point and decode+write_string agrees with it (mutation fuzz)") {
  const std::string seeds[] = {
      R"({"type":"write","id":"c1-42","entry":{"s":"caf\u00e9 \ud83d\ude00 \"q\" \\","n":[-1.5e+3,0,true,false,null],"o":{},"a":[],"a":1}})",
      "{\"\xF0\x9F\x98\x80\":[\"\\ud800\",\"\xEF\xBF\xBF\",{\"\\uFFFF\":{\"k\":\"\\u0000\",\"k\":2}}],\"\xC3\xA9\":-0.0E-0}",
      R"([[[{"b":1,"a":[2,"x\ny"],"c":{"\u0063":3,"c":4}}]]])",
  };
  uint64_t rng = 0x9E3779B97F4A7C15ull;
  auto next = [&rng]() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
  };
  const char alphabet[] = "{}[],:\"\\u0dD8ec1-+.eE \t\ntruefalsn\xED\xA0\x80\xF0\xC3\xA9";
  json::Document d, d2;
  size_t accepted = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s = seeds[next() % 3];
    const int edits = 1 + static_cast<int>(next() % 3);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const size_t pos = next() % s.size();
      const char c = alphabet[next() % (sizeof alphabet - 1)];
      switch (next() % 3) {
        case 0: s[pos] = c; break;
        case 1: s.erase(pos, 1); break;
        default: s.insert(pos, 1, c); break;
      }
    }
    if (!d.parse(s)) {
      CHECK(d.size() == 0);
      CHECK(d.error().find(" at byte ") != std::string::npos);
      continue;
    }
    ++accepted;
    std::string c1, c2;
    d.write_canonical(0, &c1);
    INFO("input: ", s);
    CHECK(c1.size() <= d[0].end - d[0].begin);  // the writer relies on this bound
    REQUIRE(d2.parse(c1));
    d2.write_canonical(0, &c2);
    CHECK(c1 == c2);
    for (size_t i = 0; i < d.size(); ++i) {
      if (d[i].kind != json::Kind::String) continue;
      std::string via_decode, direct;
      json::write_string(d.decode_string(d[i]), &via_decode);
      d.write_canonical(i, &direct);
      CHECK(via_decode == direct);
    }
  }
  CHECK(accepted > 1000);
}

TEST_CASE("the parser's working memory stays within a small factor of the text, and release_memory() gives it back") {
  // The densest text there is: a token every two bytes.
  std::string dense = "[";
  while (dense.size() < (1u << 20)) dense += "1,";
  dense += "1]";
  json::Document d;
  REQUIRE(d.parse(dense));
  // 20-byte tokens, at most one per two bytes of text: ten times the text, plus a little. A
  // doubling array could reach twenty.
  CAPTURE(d.memory());
  CHECK(d.memory() <= 11 * dense.size());
  d.release_memory();
  CHECK(d.memory() == 0);
  REQUIRE(d.parse(R"({"a":[1,2]})"));
  CHECK(d.size() == 5);  // the object, the key, the array and its two numbers
  CHECK(d.memory() < 4096);
}
