// What a line of the protocol asks for: the server's classification of a parsed line, apart from
// the server so that the fuzz targets and the differential test can check this very function
// (fuzz/json_fuzz.cpp holds it to an independent reading of the protocol's rules).
#pragma once
#include <cstdint>
#include <string>
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

// ---- Replies: every line the server sends, one writer per shape (doc/protocol.md). `Out` is
// anything with append(std::string_view): a connection's Buffer, or a std::string.
namespace reply {

// {"error":"<error>"}: a line refused, or the connection refused or ended.
template <class Out>
void error(std::string_view error, Out* out) {
  std::string line = "{\"error\":";
  json::write_string(error, &line);
  line += "}\n";
  out->append(std::string_view(line));
}

// {"id":"<id>","index":N}: a write confirmed, as entry N.
template <class Out>
void confirmed(std::string_view id, uint64_t index, Out* out) {
  std::string line = "{\"id\":";
  json::write_string(id, &line);
  line += ",\"index\":";
  line += std::to_string(index);
  line += "}\n";
  out->append(std::string_view(line));
}

// {"id":"<id>","error":"<error>"}: a write the store could not take.
template <class Out>
void write_failed(std::string_view id, std::string_view error, Out* out) {
  std::string line = "{\"id\":";
  json::write_string(id, &line);
  line += ",\"error\":";
  json::write_string(error, &line);
  line += "}\n";
  out->append(std::string_view(line));
}

// {"index":N,"entry":<entry>}: an entry for a reader; `entry` is its stored canonical JSON.
template <class Out>
void entry(uint64_t index, std::string_view entry, Out* out) {
  out->append(std::string_view("{\"index\":"));
  out->append(std::string_view(std::to_string(index)));
  out->append(std::string_view(",\"entry\":"));
  out->append(entry);
  out->append(std::string_view("}\n"));
}

// {"index":N,"error":"<error>"}: an entry that is missing or damaged, in its place.
template <class Out>
void entry_error(uint64_t index, std::string_view error, Out* out) {
  std::string line = "{\"index\":" + std::to_string(index) + ",\"error\":";
  json::write_string(error, &line);
  line += "}\n";
  out->append(std::string_view(line));
}

// {"current":true}: a read's catch-up is out; what follows is new.
template <class Out>
void current(Out* out) {
  out->append(std::string_view("{\"current\":true}\n"));
}

// {"head":H}: a batch read is done; H is the head it saw.
template <class Out>
void head(uint64_t head, Out* out) {
  out->append(std::string_view("{\"head\":" + std::to_string(head) + "}\n"));
}

}  // namespace reply
