// The monitoring listener (Server::listen_metrics(), METRICS): a small HTTP/1.1 server for
// scrapers, GET /metrics and GET /health, run by the server's own loop and never in the way of
// the log's clients. It knows HTTP and nothing of the log: what it serves comes from a Source.
//
// Its listening sockets and its connections wait in an epoll set of their own, whose descriptor
// is one slot of the loop's poll set (as parked connections do): however many scrapers are
// connected, poll() looks at one descriptor for all of them. A pass handles at most
// kEventsPerPass of their events and accepts at most kAcceptsPerPass connections, renders the
// metrics at most once (the scrapes of a pass share the text), and reads at most
// kMaxRequestBytes + 1 from a connection. Limits of its own, apart from the log's:
//   - at most kMaxConnections connections; one more is closed as soon as it is accepted;
//   - a request head (request line and headers) of at most kMaxRequestBytes; a longer one, or
//     one that is not "METHOD TARGET HTTP/1.x", is closed (the malformed with a 400);
//   - kTimeoutMs from the accept to a complete request, and as long again for the response to
//     be taken; then it is closed (a slowloris costs one connection for 5 s, at most 8 KiB).
// Every response says "Connection: close" and its connection closes once it is sent: no
// keep-alive (HTTP/1.1 allows that), so a connection holds its request while it arrives, then
// its response's headers and a share of the rendered text.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

class MetricsHttp {
 public:
  static constexpr size_t kMaxConnections = 64;
  static constexpr size_t kMaxRequestBytes = 8192;
  static constexpr int64_t kTimeoutMs = 5000;
  static constexpr int kEventsPerPass = 64;
  static constexpr int kAcceptsPerPass = 16;
  // After accept() fails for want of descriptors or memory, accepting pauses this long.
  static constexpr int64_t kAcceptPauseMs = 100;

  // What is served. Called from on_ready() only.
  class Source {
   public:
    // Appends the metrics in the text exposition format.
    virtual void render_metrics(std::string* out) = 0;
    // True while the server serves fully; else false with the reason.
    virtual bool healthy(std::string* reason) = 0;

   protected:
    ~Source() = default;
  };

  MetricsHttp();
  MetricsHttp(const MetricsHttp&) = delete;
  MetricsHttp& operator=(const MetricsHttp&) = delete;
  ~MetricsHttp();  // closes its listeners, its connections and its epoll set

  // Listens on `host` (as open_listeners() takes it; "" means 127.0.0.1) and `port`. False with
  // *error saying why. May be called again for more addresses.
  bool listen(const std::string& host, uint16_t port, std::string* error);
  // The epoll set: readable when something here is ready (poll it for POLLIN); -1 before listen().
  int fd() const { return epoll_fd_; }
  // "127.0.0.1:9108" or "[::1]:9108" of the first listener; "" before listen().
  const std::string& address() const { return address_; }
  uint16_t port() const { return port_; }
  size_t connections() const { return connections_.size(); }

  // Does what is ready now (never waits): accepts, reads requests, answers, sends, closes.
  void on_ready(int64_t now_ms, Source& source);
  // When on_timers() has something to do (a deadline, the end of an accept pause); -1: never.
  int64_t next_timer_ms() const;
  void on_timers(int64_t now_ms);

 private:
  struct Connection;
  void accept_from(Connection& listener, int64_t now_ms);
  void read_request(Connection& c, int64_t now_ms, Source& source,
                    std::shared_ptr<const std::string>* rendered);
  void respond(Connection& c, int64_t now_ms, Source& source,
               std::shared_ptr<const std::string>* rendered);
  void send_response(Connection& c);
  void pause_accepting(bool paused);
  void sweep();

  int epoll_fd_ = -1;
  std::vector<std::unique_ptr<Connection>> listeners_;  // marked as listeners
  std::string address_;
  uint16_t port_ = 0;
  std::vector<std::unique_ptr<Connection>> connections_;
  bool any_done_ = false;
  int64_t accept_paused_until_ms_ = 0;  // 0: accepting
};
