// The state of one connection of the server's loop (server.cpp): its buffers, its line framer,
// its read cursor, the lists it is in and its slot in the poll set. Plain data: the loop alone
// changes it, and server.cpp states the rules that tie its fields together.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "buffer.hpp"

// The peer's address, kept in binary (20 bytes) and formatted only for log lines.
struct PeerAddress {
  uint8_t family = AF_INET;
  uint8_t addr[16] = {};
  uint16_t port = 0;

  static PeerAddress from(const sockaddr_storage& ss) {
    PeerAddress p;
    p.family = static_cast<uint8_t>(ss.ss_family);
    if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
      std::memcpy(p.addr, &a->sin6_addr, 16);
      p.port = ntohs(a->sin6_port);
    } else {
      auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
      std::memcpy(p.addr, &a->sin_addr, 4);
      p.port = ntohs(a->sin_port);
    }
    return p;
  }
  std::string text() const {
    char out[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, addr, out, sizeof out);
    return out;
  }
};

// What a connection has asked to read. Both kinds of read share this one mechanism.
//
// A read's catch-up is every entry that existed when it arrived, then {"current":true}; a
// batch read that reaches its K entries first ends there with {"head":H}. Until its catch-up
// is out, no later message of the connection is dispatched (doc/protocol.md, "Replies in order").
struct ReadCursor {
  enum class Kind : uint8_t { None, Stream, Batch };
  Kind kind = Kind::None;
  bool current_sent = false;
  uint64_t next = 0;        // the next index to send
  uint64_t current_at = 0;  // {"current":true} goes out once every index <= this was sent
  uint64_t remaining = 0;   // Batch: entries still to send before {"head":H}
  // Indices this connection wrote while the read was active that the read has not reached
  // yet, ascending, from own_front on. A stream read skips them (they were confirmed instead);
  // a batch read sends them, and its {"head":H} stops short of the first it did not send.
  std::vector<uint64_t> own_writes;
  size_t own_front = 0;

  bool active() const { return kind != Kind::None; }
  bool catching_up() const { return kind != Kind::None && !current_sent; }
  bool has_own(uint64_t index) const {
    return own_front < own_writes.size() && own_writes[own_front] == index;
  }
  void pop_own() {
    if (++own_front == own_writes.size()) {
      std::vector<uint64_t>().swap(own_writes);  // holds nothing once empty
      own_front = 0;
    }
  }
};

struct Connection {
  Connection(uint64_t id_, int fd_, const PeerAddress& peer_, size_t max_line,
             size_t* input_total, size_t* output_total)
      : fd(fd_), id(id_), peer(peer_), input(input_total), output(output_total), framer(max_line) {}

  int fd;
  uint64_t id;
  PeerAddress peer;
  Buffer input;   // received bytes not yet dispatched
  Buffer output;  // replies and entries not yet sent
  LineFramer framer;
  ReadCursor reader;
  uint32_t pending_writes = 0;  // writes of this connection in the current batch

  int64_t line_started_ms = 0;   // when the first byte of the unfinished line arrived; 0: none
  int64_t linger_until_ms = 0;   // closing: our FIN is out, waiting for the peer's ACKs
  int64_t retry_at_ms = 0;       // the reader waits to try a failed read again; 0: not waiting
  int64_t retry_since_ms = 0;    // when the failing read first failed; 0: none failing
  int64_t retry_delay_ms = 0;

  bool input_closed = false;  // the peer shut down its sending side
  bool closing = false;       // no more input; close once the replies are out
  bool dead = false;          // to be removed at the end of the pass
  bool refused = false;       // over MAX_CONNECTIONS: gets one error line, is not counted
  bool waits_for_journal = false;  // a write of it waits for the journal's checkpoint
  int8_t close_reason = -1;  // metrics: why it closes (a CloseReason), once that is known

  // The poll set: this connection's slot in it and the events registered there. A parked
  // connection (see Server::park()) waits for input in the epoll set instead; its slot's
  // descriptor is then -1, which poll() skips.
  size_t slot = 0;
  short events = 0;
  bool parked = false;
  int64_t quiet_since_ms = 0;  // when it was last refreshed wanting input only
  // Membership of the loop's lists (see Server): each flag says the pointer is in that list.
  bool in_work = false, in_fill = false, in_live = false, in_touched = false, in_timed = false;
};

// A write accepted in this pass, committed with the others at its end.
struct PendingWrite {
  Connection* connection;
  std::string id;
  std::string bytes;  // canonical entry
  std::string hash;   // hex SHA-256 of bytes
};

