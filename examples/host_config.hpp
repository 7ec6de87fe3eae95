// What the example hosts share: the store's options and the limits from the environment
// variables the binary reads (PORT, HOST, BLOBS, LEVELDB, SYNC, MAX_MESSAGE_BYTES,
// MAX_CONNECTIONS, MAX_INPUT_BYTES, MAX_OUTPUT_BYTES, LINE_TIMEOUT, READ_RETRY_SECONDS,
// JOURNAL_BYTES, and METRICS for the hosts that serve metrics), so that the end-to-end tests can run against an embedded server, and the
// "listening" line the tests wait for. A real host would take these from its own configuration.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tcp-log-server.hpp"

struct HostConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 8089;
  tcp_log_server::StoreOptions store;
  tcp_log_server::Limits limits;
  bool metrics = false;  // METRICS=[ADDRESS]:PORT: the monitoring listener (Server::listen_metrics())
  std::string metrics_host;
  uint16_t metrics_port = 0;
};

inline HostConfig host_config_from_environment() {
  HostConfig c;
  auto text = [](const char* name, std::string* out) {
    if (const char* v = std::getenv(name)) *out = v;
  };
  auto number = [](const char* name, uint64_t* out) {
    if (const char* v = std::getenv(name)) *out = std::strtoull(v, nullptr, 10);
  };
  uint64_t port = c.port;
  number("PORT", &port);
  c.port = static_cast<uint16_t>(port);
  text("HOST", &c.host);
  text("BLOBS", &c.store.blobs_dir);
  text("LEVELDB", &c.store.index_dir);
  if (const char* sync = std::getenv("SYNC"))
    c.store.sync = std::string(sync) == "none" ? tcp_log_server::Sync::None : tcp_log_server::Sync::Always;
  number("JOURNAL_BYTES", &c.store.journal_bytes);
  number("MAX_MESSAGE_BYTES", &c.limits.max_message_bytes);
  c.store.max_message_bytes = c.limits.max_message_bytes;
  number("MAX_CONNECTIONS", &c.limits.max_connections);
  number("MAX_INPUT_BYTES", &c.limits.max_input_bytes);
  number("MAX_OUTPUT_BYTES", &c.limits.max_output_bytes);
  number("LINE_TIMEOUT", &c.limits.line_timeout_s);
  number("READ_RETRY_SECONDS", &c.limits.read_retry_s);
  if (const char* m = std::getenv("METRICS")) {
    const std::string value = m;
    const size_t colon = value.rfind(':');
    c.metrics = !value.empty();
    c.metrics_host = colon == std::string::npos ? "" : value.substr(0, colon);  // "": 127.0.0.1
    c.metrics_port = static_cast<uint16_t>(std::strtoul(value.c_str() + (colon == std::string::npos ? 0 : colon + 1), nullptr, 10));
  }
  return c;
}

// The line the tests' harness waits for (as the binary's log has it): {"msg":"listening","port":N},
// with "metrics":"ADDRESS:PORT" when the host serves metrics.
inline void print_listening(uint16_t port, const std::string& metrics_address = "") {
  if (metrics_address.empty())
    std::printf("{\"msg\":\"listening\",\"port\":%u}\n", static_cast<unsigned>(port));
  else
    std::printf("{\"msg\":\"listening\",\"port\":%u,\"metrics\":\"%s\"}\n", static_cast<unsigned>(port),
                metrics_address.c_str());
  std::fflush(stdout);
}
