// tcp-log-server as a library: the whole public surface. A program that embeds the server
// includes this header alone and links libtcplogserver.a (pkg-config: tcp-log-server).
//
// The smallest host:
//
//   tcp_log_server::Store store;
//   tcp_log_server::Status s = store.open(tcp_log_server::StoreOptions());
//   tcp_log_server::Server server(store, tcp_log_server::Limits(), nullptr);
//   if (s.ok()) s = server.listen("127.0.0.1", 8089);
//   if (s.ok()) s = server.run();  // until server.stop(), from a signal handler or a thread
//
// The library never writes to stdout or stderr, installs no signal handler, never calls exit()
// and throws no exception across this API: failures are Status values, and what the server
// does is reported to an EventSink (the binary's is its pino log). One Server serves one Store,
// from one thread at a time; only stop() may be called from elsewhere.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tcp_log_server {

// The library's version (the binary's --version, and build_info in the metrics).
inline constexpr const char* kVersion = "0.2.0";

// The result of an operation: ok(), or a message saying what failed, where and why (the file
// or address, and the system's reason).
class Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(std::string message) {
    Status s;
    s.message_ = message.empty() ? std::string("error") : std::move(message);
    return s;
  }
  bool ok() const { return message_.empty(); }
  const std::string& message() const { return message_; }

 private:
  std::string message_;  // empty: ok
};

// Whether a write is on stable storage before it is confirmed (doc/durability.md).
enum class Sync { Always, None };

// Where the log lives and how it is written. The defaults are the binary's.
struct StoreOptions {
  std::string blobs_dir = ".tcp-log-server.blobs";   // entry files, named by their SHA-256
  std::string index_dir = ".tcp-log-server.leveldb";  // the index file and the journal
  Sync sync = Sync::Always;
  // The write-ahead journal of Sync::Always: 0 sizes it to its file system (1/32 of it, at
  // most 64 MiB); else at least 4 x (max_message_bytes + 4096).
  uint64_t journal_bytes = 0;
  // The longest entry the store must be able to journal: Limits::max_message_bytes.
  uint64_t max_message_bytes = 1048576;
};

// The log on disk. Open it once; a Server serves it. Not copyable; one process at a time (both
// directories are locked while it is open).
class Store {
 public:
  Store();
  ~Store();  // an open store is stopped as close() does, its errors unreported
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Locks and opens both directories, creating them as needed, and recovers what a crash left
  // (doc/durability.md). What recovery did (bytes cut, entries replayed) is appended to
  // *notes when given. Fails on a directory in use, unusable, or holding the Node.js server's
  // LevelDB database that was not migrated. Call at most once.
  Status open(const StoreOptions& options, std::vector<std::string>* notes = nullptr);
  // The clean stop: everything made durable, the journal emptied (the next open replays
  // nothing). An error says what the next open will replay. Stop the Server first.
  Status close();
  bool is_open() const;
  // The index of the last entry (0: empty log).
  uint64_t head() const;
  // The journal's size in bytes (0 under Sync::None).
  uint64_t journal_bytes() const;

  struct Impl;

 private:
  friend class Server;
  std::unique_ptr<Impl> impl_;
};

// What one server may hold (doc/operations.md, "Limits"). 0 where noted picks the default.
struct Limits {
  uint64_t max_message_bytes = 1048576;  // the longest line; at least 64
  // Connections served at once; more get {"error":"too many connections"}. 0: the process's
  // descriptor limit (RLIMIT_NOFILE, as it is) less 64.
  uint64_t max_connections = 0;
  // Unfinished input held for all connections together; 0: the larger of 64 MiB and two
  // longest lines. Less than one longest line (max_message_bytes + 2) is raised to it.
  uint64_t max_input_bytes = 0;
  uint64_t max_output_bytes = 64ull * 1024 * 1024;  // output queued before readers wait
  uint64_t line_timeout_s = 60;                    // to finish a started line; 0: no limit
  uint64_t read_retry_s = 30;                      // to read an entry that cannot be read now
};

// What the server reports. Each kind names the fields of Event that it sets.
enum class EventKind {
  Listening,           // port, address (the host as given to listen(), "" for all interfaces),
                       // head, journal_bytes
  Ready,               // the first pass of the loop: port (of the first listener, 0 if none), head
  ConnectionAccepted,  // connection, address, port (the peer's)
  ConnectionClosed,    // connection, address, port
  ConnectionError,     // connection, error: a reset or failed read
  AcceptFailed,        // error: out of descriptors or memory; accepting pauses 100 ms
  Refused,             // count (refused since the last), limit (max_connections); at most 1/s
  Message,             // connection, text (the line): every line dispatched
  ProtocolError,       // connection, text (the reply's error), error (detail); the connection
                       // closes after its earlier writes are confirmed
  InvalidMessage,      // connection, text (the line): JSON but neither a read nor a write
  AlreadyReading,      // connection
  Appended,            // index, text (the entry's hex SHA-256)
  StorageError,        // error, count (entries refused with it)
  JournalFull,         // count (writes waiting for the checkpoint)
  Checkpoint,          // a checkpoint finished
  CheckpointFailed,    // error: no more writes are taken until the store is opened again
  ReadRetry,           // connection, index, error: an entry cannot be read now; tried again
  ReadResumed,         // connection, index, count (milliseconds it took)
  ReadFailed,          // connection, index, error: gave up after read_retry_s; it closes
  EntryUnreadable,     // index, error: missing or damaged; the reader gets an error in its place
  Evicted,             // connection, count (bytes it held), limit (max_input_bytes)
  Stopping,            // count (open connections): stop() was called
  Stopped,             // every connection is closed; run() returns
  PollFailed,          // error; run() returns it
};

// One event. Views point into the server's memory: valid during EventSink::on_event only.
struct Event {
  EventKind kind;
  uint64_t connection = 0;   // the server's number for the connection, from 1
  std::string_view address;  // an IP address as text
  uint16_t port = 0;
  uint64_t index = 0;
  uint64_t head = 0;
  uint64_t journal_bytes = 0;
  uint64_t count = 0;
  uint64_t limit = 0;
  std::string_view error;
  std::string_view text;
  // Listening: where the monitoring listener is ("127.0.0.1:9108"), "" if there is none (see
  // Server::listen_metrics()).
  std::string_view metrics_address;
};

// The host's ear. on_event runs in the server's thread, inside run()/run_once(); it must not
// call back into the Server (stop() excepted) and should not block.
class EventSink {
 public:
  virtual ~EventSink() = default;
  // Asked once per kind when the Server is constructed; events not wanted are not built.
  virtual bool wants(EventKind) const { return true; }
  virtual void on_event(const Event& event) = 0;
  // A sink that buffers output for a non-blocking descriptor (a log on a pipe) names it here
  // while output waits, and the loop calls on_writable() when it takes more; -1: none.
  virtual int writable_fd() const { return -1; }
  virtual void on_writable() {}
  // Lines of its own output the sink has dropped so far (a log whose reader does not keep up),
  // for the metrics (Metrics::log_lines_dropped). Called from the server's thread.
  virtual uint64_t lines_dropped() const { return 0; }
};

// ---- Metrics (doc/operations.md, "Metrics")

// Durations counted in fixed buckets, as a Prometheus histogram exposes them. observe_ns() is a
// few comparisons and three additions: nothing is allocated, nothing is sorted.
struct Histogram {
  static constexpr size_t kBuckets = 17;
  // Each bucket's upper bound in microseconds: 100 us to 30 s.
  static constexpr uint64_t kBoundsUs[kBuckets] = {100,    250,    500,     1000,    2500,    5000,
                                                   10000,  25000,  50000,   100000,  250000,  500000,
                                                   1000000, 2500000, 5000000, 10000000, 30000000};
  // counts[i]: observations above bound i - 1 and at most bound i (each in one bucket, not
  // cumulative); counts[kBuckets]: those above the last bound.
  uint64_t counts[kBuckets + 1] = {};
  uint64_t count = 0;   // every observation
  uint64_t sum_ns = 0;  // their sum, in nanoseconds

  void observe_ns(uint64_t ns) {
    size_t i = 0;
    while (i < kBuckets && ns > kBoundsUs[i] * 1000) i++;
    counts[i]++;
    count++;
    sum_ns += ns;
  }
};

// Why a connection was closed. Each is an index of Metrics::connections_closed, and a value of
// the label `reason` (metric_label()).
enum class CloseReason : uint8_t {
  Peer,         // the peer closed, or hung up, with nothing left to answer
  Reset,        // a reset, or a read or send that failed
  InvalidJson,  // a line that is not JSON
  TooLarge,     // a line over max_message_bytes
  LineTimeout,  // a line not finished within line_timeout_s
  InputLimit,   // evicted: all unfinished input together was over max_input_bytes
  ReadFailed,   // an entry could not be read for read_retry_s
  Stopping,     // closed by a graceful stop
  Count
};
// Why a connection was not served: an index of Metrics::connections_refused.
enum class RefuseReason : uint8_t {
  MaxConnections,    // over max_connections: {"error":"too many connections"}, then closed
  OutOfDescriptors,  // accept() failed with EMFILE or ENFILE (accepting pauses 100 ms)
  OutOfMemory,       // accept() failed with ENOBUFS or ENOMEM (the same)
  Count
};
// Why a write was answered with an error: an index of Metrics::writes_refused.
enum class WriteRefusal : uint8_t {
  StorageError,  // its batch's commit failed (an I/O error, a full disk)
  StoreFailed,   // the store refuses every write until the process restarts (a failed checkpoint)
  Count
};
const char* metric_label(CloseReason reason);
const char* metric_label(RefuseReason reason);
const char* metric_label(WriteRefusal reason);

// What a Server has done and holds, as a plain snapshot (Server::metrics()). Counters count
// from the Server's construction and only grow; gauges are as of the snapshot. Connections
// are those of the log's protocol: the monitoring listener's are not counted here.
struct Metrics {
  // The log.
  uint64_t head = 0;                 // gauge: the index of the last entry
  uint64_t entries_written = 0;      // entries appended to the log
  uint64_t entry_bytes_written = 0;  // their bytes (canonical JSON)
  uint64_t writes_confirmed = 0;     // writes answered with their index
  uint64_t writes_refused[static_cast<size_t>(WriteRefusal::Count)] = {};
  // Connections.
  uint64_t connections_open = 0;      // gauge
  uint64_t connections_accepted = 0;  // accepted or adopted, and served
  uint64_t connections_refused[static_cast<size_t>(RefuseReason::Count)] = {};
  uint64_t connections_closed[static_cast<size_t>(CloseReason::Count)] = {};
  // Readers (gauges): reads that have not sent {"current":true} yet, reads past it (a stream
  // read, or a batch read waiting for new entries), and the most entries that any one of them
  // has yet to be sent to reach the head.
  uint64_t readers_catching_up = 0;
  uint64_t readers_streaming = 0;
  uint64_t reader_lag_max = 0;
  // The journal of Sync::Always (0 under Sync::None). Writes wait when its records reach its
  // capacity before a checkpoint has emptied a side.
  uint64_t journal_used_bytes = 0;      // gauge: records no checkpoint has retired yet
  uint64_t journal_capacity_bytes = 0;  // gauge: records its two sides hold at most
  uint64_t journal_full = 0;            // times writes had to wait for a checkpoint
  uint64_t journal_paced = 0;           // times writes began to wait for the store thread
  uint64_t store_lag_entries = 0;       // gauge: confirmed entries without their blob file and
                                        // index record yet (the store thread makes them)
  uint64_t checkpoints_failed = 0;      // then writes are refused until restart
  Histogram checkpoint_seconds;         // each checkpoint that succeeded, from start to collection
  Histogram journal_sync_seconds;       // each fdatasync of a journal append (a write's sync)
  Histogram commit_seconds;             // each commit of a batch, until its confirmation
  // Memory (gauges): what the connections' input and output buffers hold.
  uint64_t input_buffer_bytes = 0;
  uint64_t output_buffer_bytes = 0;
  // The host: lines its EventSink dropped (EventSink::lines_dropped()), and when the process
  // started (Unix time in milliseconds, from /proc; the Server's construction where unknown).
  uint64_t log_lines_dropped = 0;
  uint64_t process_start_time_ms = 0;
  // Health: stop() was called; and, once the store refuses every write, why.
  bool stopping = false;
  std::string writes_refused_reason;
};

// Appends `metrics` to *out in the Prometheus text exposition format 0.0.4, every name
// prefixed tcp_log_server_, with HELP and TYPE lines, as GET /metrics serves it
// (doc/operations.md, "Metrics", lists the families).
void write_metrics_text(const Metrics& metrics, std::string* out);

// Serves a Store over TCP with the newline-delimited JSON protocol of doc/protocol.md. Construct,
// give it sockets (listen(), adopt_listener(), adopt()), then drive it: run(), or fd() and
// run_once() from the host's own loop. The Store must stay open while the Server lives.
class Server {
 public:
  // `sink` may be null (nothing reported) and must outlive the Server.
  Server(Store& store, const Limits& limits, EventSink* sink);
  ~Server();  // closes every descriptor it owns; confirms nothing more (stop() and run first)
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Listens on `host` (an IP address literal, IPv6 optionally in brackets, or "localhost" for
  // 127.0.0.1 and ::1; "" for all interfaces) and `port` (0 picks a free one). Never resolves
  // a name. Reports Listening. May be called again for more addresses.
  Status listen(const std::string& host, uint16_t port);
  // Serves a listening socket that the host opened (systemd socket activation, inetd): the
  // Server owns it from now on, and makes it non-blocking. Fails if it is not a listening
  // stream socket. Reports Listening.
  Status adopt_listener(int fd);
  // Serves one accepted, connected stream socket, as if accepted from a listener (counted in
  // max_connections; refused over it). The Server owns it from now on, even on failure.
  Status adopt(int fd);
  // The port of the first listener, 0 if none.
  uint16_t port() const;

  // Runs the loop until stop() has finished: every received write confirmed, readers given
  // their catch-up, connections closed (3 s at most). Returns an error only if poll() failed.
  Status run();
  // For a host's own loop: a descriptor that is readable whenever run_once() has something to
  // do now (poll it for POLLIN, or add it to an epoll or select set; never read it).
  int fd();
  // How long the host may wait for fd() before calling run_once(): -1 for as long as it likes,
  // 0 when there is work now.
  int timeout_ms() const;
  // One pass of the loop: waits at most `timeout_ms` (0: not at all; -1: as run() would) for
  // its descriptors, then does what is ready. Returns an error only if poll() failed. A pass
  // reads at most 64 KiB per connection and serves readers within a budget (doc/operations.md,
  // "Fairness"), but commits every write it read: a burst of pipelined writes holds the host
  // for as long as storing them takes (SYNC=always: one sync per 4096 entries).
  Status run_once(int timeout_ms);
  // Whether a stop has begun: no more connections are taken (adopt() refuses them), and a host
  // that accepts them itself may close its listener.
  bool stopping() const;
  // Whether a stop has finished (run_once() then does nothing).
  bool stopped() const;
  // Asks for a graceful stop, as SIGTERM does to the binary: no more connections or lines are
  // taken, received writes are confirmed, then connections close. Async-signal-safe, and safe
  // from any thread; it only wakes the loop, which does the rest.
  void stop();

  // ---- Monitoring (doc/operations.md, "Metrics").
  // Listens for scrapers on `host` (as listen() takes it, but "" is 127.0.0.1 here, not all
  // interfaces) and `port` (0 picks a free one): HTTP/1.1, GET /metrics (write_metrics_text()),
  // GET /health (200 "ok", or 503 with the reason while stopping or while writes are refused),
  // 404 for other paths; every response closes its connection. Served by the same loop within
  // limits of its own, so that no scraper can hold up the log's clients: at most 64 connections
  // (more are closed at once), a request of at most 8 KiB (a longer or malformed one is closed),
  // 5 s to send it and 5 s to take the response; its connections wait in one slot of the poll
  // set. Call it before listen() or adopt_listener() for their Listening events to name it. It
  // stays open through a graceful stop (its /health says so) and closes when the stop ends.
  Status listen_metrics(const std::string& host, uint16_t port);
  // Where the monitoring listener is ("127.0.0.1:9108", "[::1]:9108"), "" if none.
  std::string metrics_address() const;
  // Its port, 0 if none.
  uint16_t metrics_port() const;
  // A snapshot of the metrics, the same numbers GET /metrics shows. From the thread that
  // drives the server, between passes (as every call but stop()); its cost is a walk over the
  // connections.
  Metrics metrics() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tcp_log_server
