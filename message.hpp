// What a line of the protocol asks for: the server's classification of a parsed line, apart from
// the server so that the fuzz targets and the differential test can check this very function
// (fuzz/json_fuzz.cpp holds it to an independent reading of the README's rules).
#pragma once
#include <cstdint>
#include <string_view>

#include "json.hpp"

// What a parsed line asks for. Valid JSON that is neither a read nor a write is Invalid.
struct Message {
  enum class Kind { NotJson, Invalid, Read, Write };
  Kind kind = Kind::Invalid;
  uint64_t from = 0;  // Read
  uint64_t read = 0;  // Read: 0 streams, K > 0 reads at most K entries then the head
  long id = -1;       // Write: token of the id string
  long entry = -1;    // Write: token of the entry object or array
};

// Parses `line` into `d` and classifies it; the tokens of a Write point into `d`.
inline Message classify(json::Document& d, std::string_view line) {
  Message m;
  if (!d.parse(line)) {
    m.kind = Message::Kind::NotJson;
    return m;
  }
  if (d[0].kind != json::Kind::Object) return m;
  // A read: {"from":N} streams; {"from":N,"read":K} reads at most K entries, then the head.
  long from = d.find(0, "from");
  long read = d.find(0, "read");
  if (from >= 0 && d[from].kind == json::Kind::Number && d.to_uint64(d[from], &m.from) &&
      (read < 0 || (d[read].kind == json::Kind::Number && d.to_uint64(d[read], &m.read) &&
                    m.read > 0))) {
    m.kind = Message::Kind::Read;
    return m;
  }
  // A write: {"id":"non-empty","entry":{...} or [...]}; other keys are ignored.
  m.id = d.find(0, "id");
  m.entry = d.find(0, "entry");
  if (m.id >= 0 && m.entry >= 0 && d[m.id].kind == json::Kind::String &&
      d[m.id].end - d[m.id].begin > 2 &&  // more than the quotes: not empty
      (d[m.entry].kind == json::Kind::Object || d[m.entry].kind == json::Kind::Array))
    m.kind = Message::Kind::Write;
  return m;
}
