// Fuzz target: the JSON parser, the canonical emitter and classify(), against the plain second
// reading of the same rules in json_reference.hpp. For every input:
//   - json.hpp accepts it exactly when the reference does (a failed parse leaves no tokens);
//   - its canonical form is the reference's json-stable-stringify, numbers as written;
//   - the canonical form parses, is a fixed point, and is no longer than the input (the writer
//     sizes its output by that);
//   - every string written through decode_string + write_string equals its canonical form;
//   - every number's to_uint64 agrees with exact decimal arithmetic;
//   - classify() decides what the protocol's rules (doc/protocol.md) decide, on the input and on its canonical form
//     alike (a write's id and canonical entry included).
// A failed property prints what differs and aborts, so libFuzzer keeps the input.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz/json_reference.hpp"
#include "json.hpp"
#include "message.hpp"

namespace {

[[noreturn]] void fail(const char* property, std::string_view input, const std::string& ours,
                       const std::string& theirs) {
  std::fprintf(stderr, "json_fuzz: %s\n  input (%zu bytes): %.*s\n  json.hpp:  %s\n  reference: %s\n",
               property, input.size(), static_cast<int>(input.size()), input.data(), ours.c_str(),
               theirs.c_str());
  std::abort();
}

const char* kind_name(Message::Kind k) {
  switch (k) {
    case Message::Kind::NotJson: return "not JSON";
    case Message::Kind::Invalid: return "invalid";
    case Message::Kind::Read: return "read";
    case Message::Kind::Write: return "write";
  }
  return "?";
}

const char* kind_name(reference::Request::Kind k) {
  switch (k) {
    case reference::Request::Kind::Invalid: return "invalid";
    case reference::Request::Kind::Read: return "read";
    case reference::Request::Kind::Write: return "write";
  }
  return "?";
}

std::string describe(const json::Document& d, const Message& m) {
  std::string s = kind_name(m.kind);
  if (m.kind == Message::Kind::Read) s += " from " + std::to_string(m.from) + " read " + std::to_string(m.read);
  if (m.kind == Message::Kind::Write) {
    s += " id ";
    json::write_string(d.decode_string(d[static_cast<size_t>(m.id)]), &s);
    s += " entry ";
    d.write_canonical(static_cast<size_t>(m.entry), &s);
  }
  return s;
}

std::string describe(const reference::Request& r) {
  std::string s = kind_name(r.kind);
  if (r.kind == reference::Request::Kind::Read) s += " from " + std::to_string(r.from) + " read " + std::to_string(r.read);
  if (r.kind == reference::Request::Kind::Write)
    s += " id " + reference::quote(r.id) + " entry " + reference::stable_stringify(*r.entry);
  return s;
}

// classify() on `text` must say what the protocol's rules say of the reference's tree.
void check_classify(std::string_view input, std::string_view text, const reference::Value& tree) {
  json::Document d;
  const Message m = classify(d, text);
  const reference::Request r = reference::classify(tree);
  const std::string ours = describe(d, m), theirs = describe(r);
  if (ours != theirs) fail("classify() disagrees with the protocol's rules", input, ours, theirs);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  json::Document d;
  reference::Value tree;
  const bool ours = d.parse(input);
  const bool theirs = reference::Parser().parse(input, &tree);
  if (ours != theirs)
    fail("accepted by one parser only", input, ours ? "accepted" : "rejected: " + d.error(),
         theirs ? "accepted" : "rejected");
  if (!ours) {
    if (d.size() != 0 || d.error().find(" at byte ") == std::string::npos)
      fail("a failed parse must leave no tokens and say where", input, d.error(), "");
    return 0;
  }

  std::string canonical;
  d.write_canonical(0, &canonical);
  const std::string expected = reference::stable_stringify(tree);
  if (canonical != expected) fail("canonical form differs from json-stable-stringify", input, canonical, expected);
  if (canonical.size() > input.size()) fail("canonical form longer than the input", input, canonical, "");

  json::Document again;
  if (!again.parse(canonical)) fail("canonical form does not parse", input, again.error(), canonical);
  std::string twice;
  again.write_canonical(0, &twice);
  if (twice != canonical) fail("canonical form is not a fixed point", input, twice, canonical);

  for (size_t i = 0; i < d.size(); ++i) {
    const json::Token& t = d[i];
    if (t.kind == json::Kind::String) {
      std::string via_decode, direct;
      json::write_string(d.decode_string(t), &via_decode);
      d.write_canonical(i, &direct);
      if (via_decode != direct) fail("decode_string + write_string differs from the canonical string", input, via_decode, direct);
    } else if (t.kind == json::Kind::Number) {
      uint64_t ours_value = 0, theirs_value = 0;
      const bool ours_int = d.to_uint64(t, &ours_value);
      const bool theirs_int = reference::exact_uint63(std::string(d.raw(t)), &theirs_value);
      if (ours_int != theirs_int || ours_value != theirs_value)
        fail("to_uint64 disagrees with exact decimal arithmetic", input,
             ours_int ? std::to_string(ours_value) : "not an integer in [0, 2^63)",
             theirs_int ? std::to_string(theirs_value) : "not an integer in [0, 2^63)");
    }
  }

  check_classify(input, input, tree);
  check_classify(input, canonical, tree);
  return 0;
}
