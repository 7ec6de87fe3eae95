// Fuzz target: the server's whole protocol path, bytes in to replies out, over several
// connections, checked line by line against the reference model (test/protocol_model.hpp).
//
// The server has no entry point below its sockets: the loop owns accept, recv and send. So each
// input runs a fresh server on a fresh store over loopback, as the wire tests do, but in this
// process, in a second thread, through the library's public API (tcp-log-server.hpp): its code
// is instrumented like the target's, so coverage of the dispatch, the commit and the readers
// guides the fuzzer, and ASan and UBSan watch it. Nothing in the library knows it is fuzzed.
//
// An input is one byte of configuration, then operations, each one byte (connection slot in the
// low 2 bits, action above) and its operands:
//   0-3  send raw bytes: a length byte, then that many bytes
//   4    send a message made from a template byte (writes, reads, batch reads, errors)
//   5    half-close the slot's connection
//   6    wait until every connection got all it is owed
//   7    reset the slot's connection
// A send on a slot whose connection is gone (or closing) opens a new one. At the end every
// connection is half-closed and read to its end, the log is read back whole and checked, and the
// server stopped; it must leave no descriptor behind.
#include <dirent.h>
#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>

#include "tcp-log-server.hpp"
#include "test/protocol_model.hpp"

namespace {

using protocol_model::Checker;
using protocol_model::Sent;
using protocol_model::SentFramer;
using protocol_model::Wire;

std::string g_base_dir;

[[noreturn]] void report(const std::string& what) {
  std::fprintf(stderr, "protocol_fuzz: %s\n", what.c_str());
  std::abort();
}

size_t open_descriptors() {
  size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

// A message line from a template byte: the shapes that matter, with small varying numbers, so
// that the fuzzer reaches deep states without first having to find JSON.
std::string template_line(uint8_t t, size_t max_line) {
  const std::string n = std::to_string(t >> 3);
  switch (t & 7) {
    case 0: return R"({"id":"w)" + n + R"(","entry":{"n":)" + n + "}}";
    case 1: return R"({"from":)" + std::to_string((t >> 3) % 4) + "}";
    case 2: return R"({"from":)" + std::to_string((t >> 3) % 4) + R"(,"read":)" + std::to_string(1 + (t >> 5)) + "}";
    case 3: return R"({"id":"a)" + n + R"(","entry":[)" + n + ",\"\\u00e9\"]}";
    case 4: return R"({"from":-1})";
    case 5: return R"({"id":"x","entry":)";  // not JSON
    case 6: return " \t\r";                   // blank
    default: return std::string(max_line + 1, 'x');  // too long
  }
}

struct Slot {
  int id = -1;
  bool can_send = false;
};

class Run {
 public:
  Run(size_t max_line, int port) : max_line_(max_line), wire_(&checker_, port), port_(port) {}

  // Plays the operations; returns what went wrong, or "".
  std::string play(const uint8_t* data, size_t size) {
    size_t pos = 0;
    while (pos < size) {
      const uint8_t op = data[pos++];
      Slot& slot = slots_[op & 3];
      const int action = op >> 2 & 7;
      if (action <= 4) {
        std::string bytes;
        if (action == 4) {
          if (pos >= size) break;
          bytes = template_line(data[pos++], max_line_) + "\n";
        } else {
          const size_t wanted = pos < size ? data[pos++] : 0;
          const size_t n = std::min(wanted, size - pos);
          bytes.assign(reinterpret_cast<const char*>(data + pos), n);
          pos += n;
        }
        if (!usable(slot) && !open(&slot)) return wire_.error();
        if (slot.id < 0) continue;  // no more connections for this input
        for (Sent& m : framers_.at(slot.id).feed(bytes)) checker_.send(slot.id, std::move(m));
        if (!wire_.send(slot.id, bytes, deadline())) return wire_.error();
      } else if (action == 5) {
        if (usable(slot)) half_close(&slot);
      } else if (action == 6) {
        if (!wire_.settle(deadline())) return wire_.error();
      } else if (usable(slot)) {
        wire_.close(slot.id, true);
        slot.can_send = false;
      }
    }
    for (Slot& slot : slots_)
      if (usable(slot)) half_close(&slot);
    if (!wire_.settle(deadline())) return wire_.error();
    std::vector<std::string> log;
    std::string error;
    if (!protocol_model::read_log(port_, &log, &error, deadline())) return error;
    if (!checker_.check_log(log)) return checker_.error();
    return "";
  }

 private:
  static Wire::Clock::time_point deadline() { return Wire::Clock::now() + std::chrono::seconds(20); }

  bool usable(const Slot& slot) { return slot.id >= 0 && slot.can_send && !wire_.ended(slot.id) && !checker_.closing(slot.id); }
  bool open(Slot* slot) {
    slot->id = -1;
    if (opened_ == kMaxConnections) return true;
    ++opened_;
    slot->id = wire_.connect(deadline());
    if (slot->id < 0) return false;
    slot->can_send = true;
    framers_.emplace(slot->id, SentFramer(max_line_));
    return true;
  }
  void half_close(Slot* slot) {
    for (Sent& m : framers_.at(slot->id).finish()) checker_.send(slot->id, std::move(m));
    wire_.half_close(slot->id);
    slot->can_send = false;
  }

  static constexpr int kMaxConnections = 12;
  size_t max_line_;
  Checker checker_;
  Wire wire_;
  int port_;
  Slot slots_[4];
  std::map<int, SentFramer> framers_;
  int opened_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/protocol-fuzz.XXXXXX";
  if (!::mkdtemp(pattern.data())) report("cannot make a temporary directory: " + std::string(std::strerror(errno)));
  g_base_dir = pattern;
  std::atexit([] {
    std::error_code ignored;
    std::filesystem::remove_all(g_base_dir, ignored);
  });
  ::signal(SIGPIPE, SIG_IGN);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const size_t kMaxLines[] = {64, 100, 300, 1 << 20};
  const size_t max_line = kMaxLines[data[0] & 3];
  const size_t descriptors = open_descriptors();

  const std::string dir = g_base_dir + "/run";
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir, ec);
  std::string failure;
  {
    tcp_log_server::StoreOptions options;
    options.blobs_dir = dir + "/blobs";
    options.index_dir = dir + "/leveldb";
    options.sync = tcp_log_server::Sync::None;
    options.max_message_bytes = max_line;
    tcp_log_server::Store store;
    tcp_log_server::Status s = store.open(options);
    if (!s.ok()) report("cannot open the store: " + s.message());
    tcp_log_server::Limits limits;
    limits.max_message_bytes = max_line;
    limits.max_connections = 64;
    tcp_log_server::Server server(store, limits, nullptr);  // silent: the fuzzer's output stays readable
    s = server.listen("127.0.0.1", 0);
    if (!s.ok()) report("cannot start the server: " + s.message());
    const int port = server.port();
    if (port <= 0) report("the server listens on no port");
    tcp_log_server::Status ran;
    std::thread loop([&] { ran = server.run(); });
    failure = Run(max_line, port).play(data + 1, size - 1);
    server.stop();  // what SIGTERM does to the binary: a graceful stop
    loop.join();
    if (failure.empty() && !ran.ok()) failure = "the server stopped with an error: " + ran.message();
    tcp_log_server::Status closed = store.close();  // the clean stop the binary makes
    if (failure.empty() && !closed.ok()) failure = "cannot stop the store cleanly: " + closed.message();
  }
  if (failure.empty() && open_descriptors() != descriptors)
    failure = "a stopped server left " + std::to_string(open_descriptors() - descriptors) + " descriptors open";
  if (!failure.empty()) report(failure);
  return 0;
}
