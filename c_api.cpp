// The C API (tcp_log_server.h) over the C++ one: handles are the C++ objects, and a Status
// becomes -1 and its message. No exception crosses: allocation failures become NULL or -1.
#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "tcp-log-server.hpp"
#include "tcp_log_server.h"

struct tcp_log_server_store {
  tcp_log_server::Store store;
};

struct tcp_log_server_server {
  tcp_log_server_server(tcp_log_server_store* s, const tcp_log_server::Limits& limits)
      : server(s->store, limits, nullptr) {}
  tcp_log_server::Server server;
};

namespace {

int result(const tcp_log_server::Status& s, char* error, size_t error_size) {
  if (s.ok()) return 0;
  if (error && error_size > 0) {
    const size_t n = std::min(s.message().size(), error_size - 1);
    std::memcpy(error, s.message().data(), n);
    error[n] = '\0';
  }
  return -1;
}

tcp_log_server::Limits limits_of(const tcp_log_server_options* o) {
  tcp_log_server::Limits limits;
  if (!o) return limits;
  limits.max_message_bytes = o->max_message_bytes;
  limits.max_connections = o->max_connections;
  limits.max_input_bytes = o->max_input_bytes;
  limits.max_output_bytes = o->max_output_bytes;
  limits.line_timeout_s = o->line_timeout_s;
  limits.read_retry_s = o->read_retry_s;
  return limits;
}

}  // namespace

extern "C" {

void tcp_log_server_options_init(tcp_log_server_options* o) {
  const tcp_log_server::StoreOptions store;
  const tcp_log_server::Limits limits;
  o->blobs_dir = ".tcp-log-server.blobs";
  o->index_dir = ".tcp-log-server.leveldb";
  o->sync_always = 1;
  o->journal_bytes = store.journal_bytes;
  o->max_message_bytes = limits.max_message_bytes;
  o->max_connections = limits.max_connections;
  o->max_input_bytes = limits.max_input_bytes;
  o->max_output_bytes = limits.max_output_bytes;
  o->line_timeout_s = limits.line_timeout_s;
  o->read_retry_s = limits.read_retry_s;
}

int tcp_log_server_store_open(const tcp_log_server_options* o, tcp_log_server_store** store,
                              char* error, size_t error_size) {
  *store = nullptr;
  try {
    tcp_log_server::StoreOptions options;
    if (o->blobs_dir) options.blobs_dir = o->blobs_dir;
    if (o->index_dir) options.index_dir = o->index_dir;
    options.sync = o->sync_always ? tcp_log_server::Sync::Always : tcp_log_server::Sync::None;
    options.journal_bytes = o->journal_bytes;
    options.max_message_bytes = o->max_message_bytes;
    auto* s = new tcp_log_server_store;
    const int r = result(s->store.open(options), error, error_size);
    if (r != 0) delete s;
    else *store = s;
    return r;
  } catch (const std::bad_alloc&) {
    return result(tcp_log_server::Status::Error("out of memory"), error, error_size);
  }
}

int tcp_log_server_store_close(tcp_log_server_store* store, char* error, size_t error_size) {
  const int r = result(store->store.close(), error, error_size);
  delete store;
  return r;
}

uint64_t tcp_log_server_store_head(const tcp_log_server_store* store) { return store->store.head(); }

tcp_log_server_server* tcp_log_server_new(tcp_log_server_store* store, const tcp_log_server_options* options) {
  try {
    return new tcp_log_server_server(store, limits_of(options));
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}

void tcp_log_server_free(tcp_log_server_server* server) { delete server; }

int tcp_log_server_listen(tcp_log_server_server* server, const char* host, uint16_t port, char* error, size_t error_size) {
  return result(server->server.listen(host ? host : "", port), error, error_size);
}

int tcp_log_server_adopt_listener(tcp_log_server_server* server, int fd, char* error, size_t error_size) {
  return result(server->server.adopt_listener(fd), error, error_size);
}

int tcp_log_server_adopt(tcp_log_server_server* server, int fd, char* error, size_t error_size) {
  return result(server->server.adopt(fd), error, error_size);
}

uint16_t tcp_log_server_port(const tcp_log_server_server* server) { return server->server.port(); }

int tcp_log_server_run(tcp_log_server_server* server, char* error, size_t error_size) {
  return result(server->server.run(), error, error_size);
}

int tcp_log_server_fd(tcp_log_server_server* server) { return server->server.fd(); }
int tcp_log_server_timeout_ms(const tcp_log_server_server* server) { return server->server.timeout_ms(); }

int tcp_log_server_run_once(tcp_log_server_server* server, int timeout_ms, char* error, size_t error_size) {
  return result(server->server.run_once(timeout_ms), error, error_size);
}

void tcp_log_server_stop(tcp_log_server_server* server) { server->server.stop(); }
int tcp_log_server_stopping(const tcp_log_server_server* server) { return server->server.stopping(); }
int tcp_log_server_stopped(const tcp_log_server_server* server) { return server->server.stopped(); }

int tcp_log_server_listen_metrics(tcp_log_server_server* server, const char* host, uint16_t port, char* error,
                                  size_t error_size) {
  try {
    return result(server->server.listen_metrics(host ? host : "", port), error, error_size);
  } catch (const std::bad_alloc&) {
    return result(tcp_log_server::Status::Error("out of memory"), error, error_size);
  }
}

uint16_t tcp_log_server_metrics_port(const tcp_log_server_server* server) { return server->server.metrics_port(); }

size_t tcp_log_server_metrics_text(const tcp_log_server_server* server, char* out, size_t size) {
  try {
    std::string text;
    tcp_log_server::write_metrics_text(server->server.metrics(), &text);
    if (out && size > 0) {
      const size_t n = std::min(text.size(), size - 1);
      std::memcpy(out, text.data(), n);
      out[n] = '\0';
    }
    return text.size();
  } catch (const std::bad_alloc&) {
    if (out && size > 0) out[0] = '\0';
    return 0;
  }
}

}  // extern "C"
