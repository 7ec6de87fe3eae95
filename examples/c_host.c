/* An example C host: it serves the log from its own poll() loop through the C API
 * (tcp_log_server.h). Built with: cc -std=c11 -Wall -Werror -c c_host.c, linked with
 * c++ c_host.o libtcplogserver.a -lpthread.
 *
 * Configuration from PORT, HOST (default 127.0.0.1), BLOBS, LEVELDB, SYNC and MAX_MESSAGE_BYTES, as the binary
 * reads them; it prints {"msg":"listening","port":N} once it listens. SIGTERM or SIGINT stops
 * it gracefully. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcp_log_server.h"

static tcp_log_server_server* g_server;

static void on_signal(int signal_number) {
  (void)signal_number;
  if (g_server) tcp_log_server_stop(g_server);
}

int main(void) {
  char error[512];
  tcp_log_server_options options;
  tcp_log_server_options_init(&options);
  if (getenv("BLOBS")) options.blobs_dir = getenv("BLOBS");
  if (getenv("LEVELDB")) options.index_dir = getenv("LEVELDB");
  if (getenv("SYNC") && strcmp(getenv("SYNC"), "none") == 0) options.sync_always = 0;
  if (getenv("MAX_MESSAGE_BYTES")) options.max_message_bytes = strtoull(getenv("MAX_MESSAGE_BYTES"), NULL, 10);
  const char* host = getenv("HOST") ? getenv("HOST") : "127.0.0.1";
  const unsigned long port = getenv("PORT") ? strtoul(getenv("PORT"), NULL, 10) : 8089;

  tcp_log_server_store* store;
  if (tcp_log_server_store_open(&options, &store, error, sizeof error) != 0) {
    fprintf(stderr, "c_host: %s\n", error);
    return 1;
  }
  tcp_log_server_server* server = tcp_log_server_new(store, &options);
  if (!server || tcp_log_server_listen(server, host, (uint16_t)port, error, sizeof error) != 0) {
    fprintf(stderr, "c_host: %s\n", server ? error : "out of memory");
    return 1;
  }
  g_server = server;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  printf("{\"msg\":\"listening\",\"port\":%u}\n", (unsigned)tcp_log_server_port(server));
  fflush(stdout);

  int status = 0;
  while (!tcp_log_server_stopped(server)) {
    struct pollfd fds[1] = {{tcp_log_server_fd(server), POLLIN, 0}};
    if (poll(fds, 1, tcp_log_server_timeout_ms(server)) < 0 && errno != EINTR) {
      perror("c_host: poll");
      status = 1;
      break;
    }
    if (tcp_log_server_run_once(server, 0, error, sizeof error) != 0) {
      fprintf(stderr, "c_host: %s\n", error);
      status = 1;
      break;
    }
  }
  g_server = NULL;
  tcp_log_server_free(server);
  if (tcp_log_server_store_close(store, error, sizeof error) != 0) {
    fprintf(stderr, "c_host: %s\n", error);
    status = 1;
  }
  return status;
}
