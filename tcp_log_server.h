/* tcp-log-server for C programs: a thin layer over tcp-log-server.hpp (its contracts hold here
 * too), with opaque handles. Link: c++ program.o libtcplogserver.a -lpthread (pkg-config
 * --libs tcp-log-server).
 *
 * Functions that can fail return 0 on success and -1 on failure, with a message saying what
 * failed, where and why copied into `error` (at most `error_size` bytes, NUL-terminated) when
 * `error` is not NULL. Nothing here writes to stdout, installs a signal handler or exits. */
#ifndef TCP_LOG_SERVER_H
#define TCP_LOG_SERVER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tcp_log_server_store tcp_log_server_store;
typedef struct tcp_log_server_server tcp_log_server_server;

/* The store's options and the server's limits, in one struct. Fill it with
 * tcp_log_server_options_init() (the binary's defaults), then change what you need. */
typedef struct tcp_log_server_options {
  const char* blobs_dir;      /* default ".tcp-log-server.blobs" */
  const char* index_dir;      /* default ".tcp-log-server.leveldb" */
  int sync_always;            /* 1 (default): confirm writes once on stable storage; 0: SYNC=none */
  uint64_t journal_bytes;     /* 0: sized to its file system */
  uint64_t max_message_bytes; /* see tcp_log_server::Limits for these and their 0s */
  uint64_t max_connections;
  uint64_t max_input_bytes;
  uint64_t max_output_bytes;
  uint64_t line_timeout_s;
  uint64_t read_retry_s;
} tcp_log_server_options;

void tcp_log_server_options_init(tcp_log_server_options* options);

/* Opens (locking, creating, recovering) the store; *store is NULL on failure. */
int tcp_log_server_store_open(const tcp_log_server_options* options, tcp_log_server_store** store,
                              char* error, size_t error_size);
/* The clean stop, then frees the handle (also on failure). Free every server of it first. */
int tcp_log_server_store_close(tcp_log_server_store* store, char* error, size_t error_size);
uint64_t tcp_log_server_store_head(const tcp_log_server_store* store);

/* A server of `store` with the limits of `options` (NULL: the defaults); NULL if out of memory.
 * It reports no events. */
tcp_log_server_server* tcp_log_server_new(tcp_log_server_store* store, const tcp_log_server_options* options);
/* Closes every descriptor the server owns and frees it. */
void tcp_log_server_free(tcp_log_server_server* server);

int tcp_log_server_listen(tcp_log_server_server* server, const char* host, uint16_t port, char* error, size_t error_size);
int tcp_log_server_adopt_listener(tcp_log_server_server* server, int fd, char* error, size_t error_size);
int tcp_log_server_adopt(tcp_log_server_server* server, int fd, char* error, size_t error_size);
uint16_t tcp_log_server_port(const tcp_log_server_server* server);

/* Runs until tcp_log_server_stop() has finished. */
int tcp_log_server_run(tcp_log_server_server* server, char* error, size_t error_size);
/* For the host's own loop: poll tcp_log_server_fd() for reading, at most
 * tcp_log_server_timeout_ms() (-1: no limit), then call tcp_log_server_run_once(server, 0). */
int tcp_log_server_fd(tcp_log_server_server* server);
int tcp_log_server_timeout_ms(const tcp_log_server_server* server);
int tcp_log_server_run_once(tcp_log_server_server* server, int timeout_ms, char* error, size_t error_size);
/* Async-signal-safe and thread-safe: asks for the graceful stop. */
void tcp_log_server_stop(tcp_log_server_server* server);
int tcp_log_server_stopping(const tcp_log_server_server* server);
int tcp_log_server_stopped(const tcp_log_server_server* server);

/* The monitoring listener (Server::listen_metrics()): GET /metrics and GET /health over HTTP on
 * `host` (NULL or "": 127.0.0.1) and `port` (0 picks one). Call it before tcp_log_server_listen(). */
int tcp_log_server_listen_metrics(tcp_log_server_server* server, const char* host, uint16_t port, char* error,
                                  size_t error_size);
uint16_t tcp_log_server_metrics_port(const tcp_log_server_server* server);
/* The metrics as GET /metrics serves them (Prometheus text format 0.0.4), copied into `out` and
 * NUL-terminated when `size` > 0; returns their length without the NUL, as snprintf does: a
 * result >= `size` means `out` held only a prefix. From the thread that drives the server. */
size_t tcp_log_server_metrics_text(const tcp_log_server_server* server, char* out, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* TCP_LOG_SERVER_H */
