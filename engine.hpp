// The server's engine inside: its tuning and the state of Server::Impl, shared by the files
// that run its pass (server.cpp: the loop, input, dispatch, commit, output; readers.cpp: read
// cursors). Internal: hosts see tcp-log-server.hpp only.
#pragma once
#include <time.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "connection.hpp"
#include "store.hpp"
#include "json.hpp"
#include "message.hpp"
#include "metrics_http.hpp"
#include "poller.hpp"
#include "recent_entries.hpp"
#include "tcp-log-server.hpp"

namespace tcp_log_server {

// ---- What one connection may hold (doc/operations.md, "Limits").
// Output past this mark stops the connection's reader from filling and its input from being
// read, so a peer that does not read costs at most about this much (plus one entry).
constexpr size_t kOutputHighWater = 256 * 1024;
// While all connections together hold more output than MAX_OUTPUT_BYTES, each may still hold
// this much, so that a few stalled readers cannot stop everyone else's replies.
constexpr size_t kOutputFloor = 16 * 1024;
// The kernel queues at most about this much that the peer has not taken yet (TCP_NOTSENT_LOWAT);
// without it a stalled reader's send queue auto-tunes up to tcp_wmem's maximum (4 MiB).
constexpr int kUnsentLowWater = 128 * 1024;
// Bytes read from one socket per pass, into a scratch area the loop owns.
constexpr size_t kReadChunk = 64 * 1024;
// Descriptors kept free for the store, the listeners, stdout and refused connections when
// max_connections comes from the descriptor limit.
constexpr uint64_t kDescriptorReserve = 64;
// Refused connections (over MAX_CONNECTIONS) that are given a moment to read their error.
constexpr size_t kMaxRefusedLingering = 16;

// ---- Fairness (doc/operations.md, "Fairness"). Work done for readers in one pass (copying entries into
// output, reading and checking blobs) is bounded by a budget shared round-robin, so that the
// lines of other connections are dispatched and committed every pass, i.e. within about a
// millisecond, whatever the readers do. Costs are in bytes: an entry costs its size plus
// kEntryCost, or plus kDiskReadCost if its blob had to be read from disk (open, read, check,
// close: about 4 us here, against 0.3 us for an entry in memory). A pass's budget is then
// about 240 entries from disk, or 2,000 from memory: a millisecond or less.
constexpr size_t kPassReaderBudget = 1024 * 1024;
constexpr size_t kReaderQuantum = 256 * 1024;  // one reader's turn before the next one's
constexpr size_t kEntryCost = 256;
constexpr size_t kDiskReadCost = 4096;
constexpr size_t kMarkerCost = 64;  // {"current":true}, {"head":H}, a skipped own write

// A read that fails for a reason that may pass (EMFILE, ENOMEM, EIO, ...) is tried again after
// a delay that doubles up to a second; after READ_RETRY_SECONDS without success the reader gets
// an error and its connection is closed, as nothing in the log is lost but the reader cannot go on.
constexpr int64_t kReadRetryFirstMs = 20;
constexpr int64_t kReadRetryMaxMs = 1000;

// A checkpoint starts after this long without a commit, if the journal holds entries: the next
// recovery then replays little, and the journal has room when writes come back.
constexpr int64_t kCheckpointIdleMs = 1000;
// How soon writes paced to the store thread (Store::paced()) are tried again: a 100-byte
// entry's blob file takes the store thread 40-500 us, so a few milliseconds free room for
// a batch of writes, and the loop does not spin.
constexpr int64_t kPacedRetryMs = 5;

// A connection that has wanted nothing but input for this long is parked: it leaves the poll
// set for the epoll set in one of its slots (see Server::park()). poll() costs about 0.25 µs per
// descriptor here on every call, so 10,000 idle connections cost 2.5 ms per pass; parked, they
// cost nothing until one of them sends. Short enough that idle clients are parked soon after
// they go quiet, long enough that a client in a request-reply exchange stays in the poll set
// (each park and unpark is a system call).
constexpr int64_t kParkAfterMs = 100;
// Parked connections reported ready per epoll_wait() (more wait for the next pass).
constexpr int kParkedPerPass = 256;

// ---- Memory given back.
// Committed entries kept in memory for live readers, counting what the cache really costs.
constexpr size_t kRecentEntriesBytes = 8 * 1024 * 1024;
// After this much of the connections' buffers, or this many connections, were freed, or the
// parser's memory after a large line, malloc_trim() hands free memory back to the system.
constexpr size_t kTrimAfterBytes = 1024 * 1024;
constexpr uint64_t kTrimAfterClosed = 1000;
// A line at least this long leaves the parser's working memory freed after it.
constexpr size_t kLargeLine = 64 * 1024;

// ---- Stopping.
// How long a graceful stop keeps flushing output to peers before it closes them.
constexpr int64_t kShutdownFlushMs = 3000;
// How long a closing connection waits for the peer to acknowledge the last replies.
constexpr int64_t kLingerMs = 2000;
constexpr int64_t kRefusedLingerMs = 500;

// The fixed slots at the front of the poll set; the listeners follow them.
constexpr size_t kWakeSlot = 0;
constexpr size_t kSinkSlot = 1;        // the sink's descriptor, while its output waits
constexpr size_t kCheckpointSlot = 2;  // the store's checkpoint, while one runs
constexpr size_t kParkedSlot = 3;      // the epoll set of parked connections
constexpr size_t kMetricsSlot = 4;     // the monitoring listener's epoll set, once it listens
constexpr size_t kFixedSlots = 5;
// check_pass_invariants() walks every connection while at most this many are open.
constexpr size_t kDeepCheckConnections = 64;

inline int64_t now_ms() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// =============================================================================================
// The server

struct Server::Impl {
  Impl(::Store* store, const Limits& limits, EventSink* sink);
  ~Impl();

  // ---- The host's calls (tcp-log-server.hpp).
  // Serves a listening socket; reports Listening with `host` when `report`.
  Status add_listener(int fd, std::string_view host, bool report);
  Status adopt(int fd);
  Status run_once(int timeout_ms);
  int timeout_ms();

  // ---- The pass, in order (see run_once()).
  void handle_events(int ready);
  void accept_connections(int listen_fd);
  void take_connection(int fd, const PeerAddress& peer);
  void on_events(Connection& c, short revents);
  void read_input(Connection& c);
  void discard_input(Connection& c);  // reads and drops what the peer sent, up to its end
  void dispatch_lines(Connection& c);
  void dispatch(Connection& c, const Message& m, std::string_view line);
  void commit_batch();
  void on_checkpoint_finished();
  void wake_journal_waiters();
  void fill_readers();
  size_t fill_reader(Connection& c, size_t quantum);  // returns the cost of what it did
  void flush(Connection& c);
  void refresh(Connection& c);
  void check_timers();
  void housekeeping();
  void park_quiet();
  void sweep();

  // ---- What a connection wants next: the one place that says it (server.cpp, its section).
  // What the next line of a connection is, as far as holding it back goes.
  enum class NextLine : uint8_t {
    Any,           // not known yet: what holds back any line
    Write,         // a write: joins the batch
    Reply,         // a read, or a message answered with an error: an immediate reply
    ClosingError,  // a line too long, or not finished in time: an error, then close
  };
  // Why that line may not be dispatched now; None when it may.
  enum class Hold : uint8_t {
    None,
    Finished,    // dead or closing: no line of it is dispatched again
    CatchUp,     // its read's catch-up goes out first
    OutputFull,  // its output is at its mark, or every output buffer together at MAX_OUTPUT_BYTES
    Journal,     // a write of it waits for the journal's checkpoint (then so does all behind it)
    OwnWrites,   // its writes in the batch are confirmed first
  };
  Hold hold(const Connection& c, NextLine next) const;
  bool done_at_hangup(Connection& c, short revents);  // the peer hung up while its input is not read
  bool output_has_room(const Connection& c) const;
  bool has_line(Connection& c);                  // a complete (or too long) line is buffered
  bool reader_can_fill(Connection& c);
  bool reader_waits_for_entries(const Connection& c) const;
  short wanted_events(Connection& c);
  void close_if_finished(Connection& c);

  // ---- Helpers.
  enum class EntryResult { Sent, Retry };
  EntryResult append_entry(Connection& c, uint64_t index, size_t* cost);
  void protocol_error(Connection& c, const char* error, std::string_view detail, CloseReason reason);
  void refuse(int fd, const PeerAddress& peer);
  void add_connection(std::unique_ptr<Connection> c);
  void remove_slot(size_t slot);
  void park(Connection& c);
  void unpark(Connection& c);
  void on_parked_ready();
  void touch(Connection& c);
  void queue_work(Connection& c);
  void queue_fill(Connection& c);
  void queue_timed(Connection& c);
  void set_line_started(Connection& c, int64_t when);
  void evict_input();
  void begin_shutdown();
  int poll_timeout();
  void log_refused();
  void check_invariants(const Connection& c) const;
  void check_pass_invariants() const;

  // ---- Metrics (metrics.cpp). Counters are kept in counters_ where their events happen;
  // gauges are computed by snapshot().
  void snapshot(Metrics* m) const;
  void on_metrics_ready();
  void count_closed(const Connection& c);
  void count_commit(bool ok, bool store_failed, uint64_t ns, const std::vector<std::string_view>& bytes);
  static void set_close_reason(Connection& c, CloseReason reason) {
    if (c.close_reason < 0) c.close_reason = static_cast<int8_t>(reason);
  }

  // ---- Events for the host's sink (tcp-log-server.hpp); built only when wanted.
  bool wants(EventKind kind) const { return (wanted_ >> static_cast<unsigned>(kind)) & 1u; }
  void emit(const Event& e) {
    if (wants(e.kind)) sink_->on_event(e);
  }
  Event event(EventKind kind, const Connection* c = nullptr) const {
    Event e;
    e.kind = kind;
    if (c) e.connection = c->id;
    return e;
  }

  Limits limits_;
  ::Store* store_;
  EventSink* sink_;
  uint32_t wanted_ = 0;  // bit k: the sink wants EventKind k
  Status broken_;        // the constructor could not make the wake pipe or the epoll set
  std::vector<int> listeners_;  // in slots kFixedSlots .. first_connection_slot_ - 1
  uint16_t port_ = 0;           // of the first listener

  // The poll set: the wake pipe, the sink's descriptor, the checkpoint, the parked set, the
  // listeners, then one slot per connection; connections_[slot] owns the connection in that
  // slot (null for the others). A closed connection's slot is filled by the last one, so the
  // set stays dense.
  Poller poller_;
  std::vector<std::unique_ptr<Connection>> connections_;
  size_t first_connection_slot_ = 0;
  size_t open_connections_ = 0;  // not counting refused ones
  // Parked connections: whether some connection not parked only waits for input (then
  // park_quiet() runs again at next_park_ms_).
  bool park_candidates_ = false;
  int64_t next_park_ms_ = 0;
  size_t refused_lingering_ = 0;

  // The loop's lists; each holds only connections with something to do, so a pass costs what
  // is active, not what is connected. A connection is in a list when its flag says so.
  std::vector<Connection*> work_;         // lines to dispatch next pass
  std::deque<Connection*> fill_queue_;    // readers that can send now, served round-robin
  std::vector<Connection*> live_;         // readers waiting for new entries
  std::vector<Connection*> touched_;      // changed in this pass: flushed and refreshed at its end
  std::vector<Connection*> timed_;        // lingering, or waiting to retry a read
  std::vector<Connection*> pass_work_;    // work_ of the pass being run
  size_t partial_lines_ = 0;              // connections with an unfinished line (line_started_ms)
  bool any_dead_ = false;

  std::vector<PendingWrite> batch_;  // writes dispatched and not yet committed or refused
  bool journal_paced_ = false;      // batch_ waits because room_for() paced it (metrics)
  bool journal_full_ = false;        // some of batch_ wait for the journal's checkpoint
  std::vector<Connection*> waiting_for_journal_;  // with a write line held back meanwhile
  int64_t last_commit_ms_ = 0;
  RecentEntries recent_{kRecentEntriesBytes};
  json::Document doc_;
  size_t input_bytes_ = 0;   // heap memory of every connection's input buffer
  size_t output_bytes_ = 0;  // ... and of every output buffer
  size_t buffer_peak_ = 0;   // of their sum, since the last housekeeping
  uint64_t closed_since_trim_ = 0;
  bool parser_released_ = false;
  std::unique_ptr<char[]> scratch_;  // every socket read lands here first
  std::string blob_;                 // an entry read from disk

  uint64_t next_connection_id_ = 1;
  int wake_pipe_[2] = {-1, -1};  // stop() writes a byte; the loop wakes and stops
  bool started_ = false;         // the first pass ran (Ready reported)
  bool shutting_down_ = false;
  bool stopped_ = false;
  int64_t shutdown_deadline_ms_ = 0;
  int64_t now_ = 0;  // the time of the current pass
  int64_t accept_paused_until_ms_ = 0;
  int64_t next_housekeeping_ms_ = 0;
  uint64_t refused_unlogged_ = 0;
  int64_t refused_logged_ms_ = 0;

  Metrics counters_;                            // the counters and histograms of metrics()
  std::unique_ptr<MetricsHttp> metrics_http_;  // the monitoring listener, once it listens
};

}  // namespace tcp_log_server
