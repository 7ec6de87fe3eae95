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
};

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

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tcp_log_server
