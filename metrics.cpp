// The server's metrics (tcp-log-server.hpp, doc/operations.md "Metrics"): the counters the
// engine keeps where its events happen, the gauges computed when someone asks, their text in
// the Prometheus exposition format 0.0.4, and the monitoring listener's place in the loop.
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <string_view>

#include "engine.hpp"
#include "metrics_http.hpp"
#include "tcp-log-server.hpp"

namespace tcp_log_server {

const char* metric_label(CloseReason reason) {
  switch (reason) {
    case CloseReason::Peer: return "peer";
    case CloseReason::Reset: return "reset";
    case CloseReason::InvalidJson: return "invalid_json";
    case CloseReason::TooLarge: return "too_large";
    case CloseReason::LineTimeout: return "line_timeout";
    case CloseReason::InputLimit: return "input_limit";
    case CloseReason::ReadFailed: return "read_failed";
    case CloseReason::Stopping: return "stopping";
    case CloseReason::Count: break;
  }
  return "unknown";
}

const char* metric_label(RefuseReason reason) {
  switch (reason) {
    case RefuseReason::MaxConnections: return "max_connections";
    case RefuseReason::OutOfDescriptors: return "out_of_descriptors";
    case RefuseReason::OutOfMemory: return "out_of_memory";
    case RefuseReason::Count: break;
  }
  return "unknown";
}

const char* metric_label(WriteRefusal reason) {
  switch (reason) {
    case WriteRefusal::StorageError: return "storage_error";
    case WriteRefusal::StoreFailed: return "store_failed";
    case WriteRefusal::Count: break;
  }
  return "unknown";
}

namespace {

uint64_t clock_ns(clockid_t clock) {
  struct timespec ts;
  ::clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// When this process started, in Unix milliseconds: its start in clock ticks after boot (field 22
// of /proc/self/stat), placed on the wall clock through CLOCK_BOOTTIME. The time of the first
// call where /proc cannot say.
uint64_t process_start_time_ms() {
  static const uint64_t start = [] {
    const uint64_t now_ms = clock_ns(CLOCK_REALTIME) / 1000000;
    char text[1024];
    const int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return now_ms;
    const ssize_t n = ::read(fd, text, sizeof text - 1);
    ::close(fd);
    if (n <= 0) return now_ms;
    text[n] = '\0';
    const char* p = std::strrchr(text, ')');  // the command name may hold spaces and ')'
    if (!p) return now_ms;
    for (int field = 2; field < 22 && *p; p++)  // fields counted from 1; ")" ends field 2
      if (*p == ' ') field++;
    uint64_t ticks = 0;
    for (; *p >= '0' && *p <= '9'; p++) ticks = ticks * 10 + static_cast<uint64_t>(*p - '0');
    const long hz = ::sysconf(_SC_CLK_TCK);
    const uint64_t since_boot_ms = clock_ns(CLOCK_BOOTTIME) / 1000000;
    const uint64_t started_ms = hz > 0 ? ticks * 1000 / static_cast<uint64_t>(hz) : since_boot_ms;
    if (started_ms > since_boot_ms) return now_ms;
    return now_ms - (since_boot_ms - started_ms);
  }();
  return start;
}

// The text format, one family at a time.
class Exposition {
 public:
  explicit Exposition(std::string* out) : out_(*out) {}

  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP tcp_log_server_";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE tcp_log_server_";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  // One sample of the family `name` (with a suffix such as "_bucket"), its value in units of
  // 10^-decimals (decimals 0: an integer).
  void sample(const char* name, uint64_t value, const char* label = nullptr, std::string_view label_value = {},
              int decimals = 0) {
    out_ += "tcp_log_server_";
    out_ += name;
    if (label) {
      out_ += '{';
      out_ += label;
      out_ += "=\"";
      for (char c : label_value) {  // escaped as the format asks: \\, \" and \n
        if (c == '\\' || c == '"') out_ += '\\';
        if (c == '\n') {
          out_ += "\\n";
          continue;
        }
        out_ += c;
      }
      out_ += "\"}";
    }
    out_ += ' ';
    decimal(value, decimals);
    out_ += '\n';
  }
  void scalar(const char* name, const char* type, const char* help, uint64_t value, int decimals = 0) {
    family(name, type, help);
    sample(name, value, nullptr, {}, decimals);
  }
  template <typename Reason, size_t N>
  void by_reason(const char* name, const char* help, const uint64_t (&values)[N]) {
    family(name, "counter", help);
    for (size_t i = 0; i < N; i++) sample(name, values[i], "reason", metric_label(static_cast<Reason>(i)));
  }
  void histogram(const char* name, const char* help, const Histogram& h) {
    family(name, "histogram", help);
    const std::string base = name;
    const std::string bucket = base + "_bucket";
    uint64_t cumulative = 0;
    for (size_t i = 0; i < Histogram::kBuckets; i++) {
      cumulative += h.counts[i];
      std::string bound;
      decimal(Histogram::kBoundsUs[i], 6, &bound);
      sample(bucket.c_str(), cumulative, "le", bound);
    }
    sample(bucket.c_str(), h.count, "le", "+Inf");
    sample((base + "_sum").c_str(), h.sum_ns, nullptr, {}, 9);
    sample((base + "_count").c_str(), h.count);
  }

 private:
  // `value` x 10^-decimals in plain decimal notation, without trailing zeros.
  void decimal(uint64_t value, int decimals) { decimal(value, decimals, &out_); }
  static void decimal(uint64_t value, int decimals, std::string* out) {
    uint64_t scale = 1;
    for (int i = 0; i < decimals; i++) scale *= 10;
    *out += std::to_string(value / scale);
    uint64_t fraction = value % scale;
    if (fraction == 0) return;
    std::string digits = std::to_string(fraction);
    digits.insert(0, static_cast<size_t>(decimals) - digits.size(), '0');
    digits.erase(digits.find_last_not_of('0') + 1);
    *out += '.';
    *out += digits;
  }

  std::string& out_;
};

}  // namespace

void write_metrics_text(const Metrics& m, std::string* out) {
  Exposition x(out);
  x.family("build_info", "gauge", "The version of this tcp-log-server, as a label; the value is always 1.");
  x.sample("build_info", 1, "version", kVersion);
  x.scalar("process_start_time_seconds", "gauge", "When the process started, in seconds since the Unix epoch.",
           m.process_start_time_ms, 3);
  // The log.
  x.scalar("head", "gauge", "Index of the last entry of the log (0: empty).", m.head);
  x.scalar("entries_written_total", "counter", "Entries appended to the log.", m.entries_written);
  x.scalar("entry_bytes_written_total", "counter", "Bytes of the entries appended to the log (canonical JSON).",
           m.entry_bytes_written);
  x.scalar("writes_confirmed_total", "counter", "Writes answered with their index.", m.writes_confirmed);
  x.by_reason<WriteRefusal>("writes_refused_total",
                            "Writes answered with an error: storage_error, their commit failed; store_failed, "
                            "the store refuses every write until the process restarts.",
                            m.writes_refused);
  x.scalar("store_failed", "gauge",
           "1 while the store refuses every write until the process restarts (a failed checkpoint); "
           "GET /health says why.",
           m.writes_refused_reason.empty() ? 0 : 1);
  x.scalar("stopping", "gauge", "1 once a graceful stop has begun.", m.stopping ? 1 : 0);
  // Connections.
  x.scalar("connections_open", "gauge", "Connections of the log's protocol open now.", m.connections_open);
  x.scalar("connections_accepted_total", "counter", "Connections accepted (or handed over by the host) and served.",
           m.connections_accepted);
  x.by_reason<RefuseReason>("connections_refused_total",
                            "Connections not served: max_connections, over MAX_CONNECTIONS (told so, then closed); "
                            "out_of_descriptors or out_of_memory, accept() failed and accepting paused 100 ms.",
                            m.connections_refused);
  x.by_reason<CloseReason>("connections_closed_total",
                           "Connections closed: peer, by the client; reset, a reset or failed read or send; "
                           "invalid_json, too_large, line_timeout, input_limit (MAX_INPUT_BYTES) and read_failed "
                           "(READ_RETRY_SECONDS), after an error reply; stopping, by a graceful stop.",
                           m.connections_closed);
  // Readers.
  x.family("readers", "gauge",
           "Reads in progress: catching_up, not yet at {\"current\":true}; streaming, past it and sent new "
           "entries as they come.");
  x.sample("readers", m.readers_catching_up, "state", "catching_up");
  x.sample("readers", m.readers_streaming, "state", "streaming");
  x.scalar("reader_max_lag_entries", "gauge", "Entries the reader furthest behind has yet to be sent to reach the head.",
           m.reader_lag_max);
  // The journal and the store.
  x.scalar("journal_used_bytes", "gauge",
           "Bytes of journal records that no checkpoint has retired yet (SYNC=always; writes wait when it "
           "reaches the capacity).",
           m.journal_used_bytes);
  x.scalar("journal_capacity_bytes", "gauge", "Bytes of records the journal's two sides hold at most (0: SYNC=none).",
           m.journal_capacity_bytes);
  x.scalar("journal_full_total", "counter", "Times writes had to wait for a checkpoint to make room in the journal.",
           m.journal_full);
  x.scalar("journal_paced_total", "counter",
           "Times writes began to wait for the store thread to make blob files (paced, before the journal is full).",
           m.journal_paced);
  x.scalar("store_lag_entries", "gauge",
           "Confirmed entries whose blob file and index record the store thread has not made yet (SYNC=always: "
           "they are read from memory or the journal meanwhile).",
           m.store_lag_entries);
  x.histogram("checkpoint_duration_seconds", "Checkpoints that succeeded, from their start until the loop collected them.",
              m.checkpoint_seconds);
  x.scalar("checkpoints_failed_total", "counter",
           "Checkpoints that failed: every write is refused from then on, until the process restarts.",
           m.checkpoints_failed);
  x.histogram("journal_sync_duration_seconds",
              "The fdatasync of each journal append, which a SYNC=always write waits for before its confirmation.",
              m.journal_sync_seconds);
  x.histogram("commit_duration_seconds", "Each commit of a batch of writes, until its confirmation: SYNC=always, the journal append and sync; SYNC=none, the blobs and the index.",
              m.commit_seconds);
  // Memory and the host.
  x.scalar("input_buffer_bytes", "gauge", "Bytes the connections' input buffers hold.", m.input_buffer_bytes);
  x.scalar("output_buffer_bytes", "gauge", "Bytes the connections' output buffers hold.", m.output_buffer_bytes);
  x.scalar("log_lines_dropped_total", "counter", "Log lines dropped because stdout did not take them in time.",
           m.log_lines_dropped);
}

// ---------------------------------------------------------------------------------------------
// The engine's side

void Server::Impl::count_closed(const Connection& c) {
  const CloseReason reason = c.close_reason >= 0 ? static_cast<CloseReason>(c.close_reason)
                             : shutting_down_    ? CloseReason::Stopping
                                                 : CloseReason::Peer;
  counters_.connections_closed[static_cast<size_t>(reason)]++;
}

void Server::Impl::count_commit(bool ok, bool store_failed, uint64_t ns, const std::vector<std::string_view>& bytes) {
  counters_.commit_seconds.observe_ns(ns);
  if (!ok) {
    const WriteRefusal why = store_failed ? WriteRefusal::StoreFailed : WriteRefusal::StorageError;
    counters_.writes_refused[static_cast<size_t>(why)] += bytes.size();
    return;
  }
  // Only after a commit that appended: a failed one may have failed before its sync.
  if (const uint64_t sync_ns = store_->last_sync_ns()) counters_.journal_sync_seconds.observe_ns(sync_ns);
  counters_.entries_written += bytes.size();
  for (std::string_view b : bytes) counters_.entry_bytes_written += b.size();
}

void Server::Impl::snapshot(Metrics* m) const {
  *m = counters_;
  m->head = store_->head();
  m->connections_open = open_connections_;
  for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++) {
    const Connection& c = *connections_[slot];
    const ReadCursor& r = c.reader;
    if (c.refused || c.dead || !r.active()) continue;
    if (r.catching_up()) m->readers_catching_up++;
    else m->readers_streaming++;
    if (r.next <= m->head && m->head - r.next + 1 > m->reader_lag_max) m->reader_lag_max = m->head - r.next + 1;
  }
  m->journal_used_bytes = store_->journal_used_bytes();
  m->store_lag_entries = store_->head() - store_->made_head();
  m->journal_capacity_bytes = store_->journal_capacity_bytes();
  m->input_buffer_bytes = input_bytes_;
  m->output_buffer_bytes = output_bytes_;
  m->log_lines_dropped = sink_ ? sink_->lines_dropped() : 0;
  m->process_start_time_ms = process_start_time_ms();
  m->stopping = shutting_down_;
  m->writes_refused_reason = store_->writes_refused();
}

namespace {

// What the monitoring listener serves, from the server's state at the moment it asks.
class ServerSource final : public MetricsHttp::Source {
 public:
  explicit ServerSource(const Server::Impl& impl) : impl_(impl) {}
  void render_metrics(std::string* out) override {
    Metrics m;
    impl_.snapshot(&m);
    write_metrics_text(m, out);
  }
  bool healthy(std::string* reason) override {
    if (impl_.shutting_down_) *reason = "stopping";
    else *reason = impl_.store_->writes_refused();
    return reason->empty();
  }

 private:
  const Server::Impl& impl_;
};

}  // namespace

void Server::Impl::on_metrics_ready() {
  ServerSource source(*this);
  metrics_http_->on_ready(now_, source);
}

// ---------------------------------------------------------------------------------------------
// The public face

Status Server::listen_metrics(const std::string& host, uint16_t port) {
  if (!impl_->broken_.ok()) return impl_->broken_;
  if (impl_->stopped_) return Status::Error("the server has stopped");
  if (!impl_->metrics_http_) impl_->metrics_http_ = std::make_unique<MetricsHttp>();
  std::string error;
  if (!impl_->metrics_http_->listen(host, port, &error)) return Status::Error(error);
  impl_->poller_.set_fd(kMetricsSlot, impl_->metrics_http_->fd());
  return Status::Ok();
}

std::string Server::metrics_address() const {
  return impl_->metrics_http_ ? impl_->metrics_http_->address() : std::string();
}

uint16_t Server::metrics_port() const { return impl_->metrics_http_ ? impl_->metrics_http_->port() : 0; }

Metrics Server::metrics() const {
  Metrics m;
  impl_->snapshot(&m);
  return m;
}

}  // namespace tcp_log_server
