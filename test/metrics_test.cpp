// The monitoring listener (issue 21, METRICS): the real ./tcp-log-server on PORT=0 and
// METRICS=127.0.0.1:0 in a temporary directory, scraped over loopback, and the library's API in
// this process.
//
// Rules checked here:
//   - the listening line names the monitoring listener, with the port it got; bad values exit 64;
//   - GET /metrics is the Prometheus text format 0.0.4 that `promtool check metrics` (Debian's
//     prometheus package) accepts, every family prefixed tcp_log_server_;
//   - its numbers are what the clients did: writes and their bytes, connections open, accepted,
//     refused over MAX_CONNECTIONS and closed by reason, readers and their lag, buffers;
//   - GET /health: 200 while serving, 503 while a graceful stop lasts and after a failed
//     checkpoint, with the reason; other paths 404, other methods 405, a malformed request 400;
//   - the listener's own limits: 64 connections, a request of 8 KiB, 5 s; hostile scrapers (a
//     request trickled forever, a 1 MiB request line, 1,000 idle connections) do not delay a
//     writer's confirmations (measured, with generous bounds);
//   - a host gets the same numbers from Server::metrics() and write_metrics_text(), and the C
//     API's text; an example host serves /metrics through the same Server::listen_metrics().
#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tcp-log-server.hpp"
#include "tcp_log_server.h"
#include "test/fault_harness.hpp"
#include "test/metrics_harness.hpp"

using namespace metrics_harness;

// ===== The listening line and the setting =======================================================

TEST_CASE("the listening line names the monitoring listener with the port it got; no other line has a port; bad METRICS values exit 64") {
  Monitored m;
  auto lines = m.server.wait_for_log(R"("msg":"listening")");
  REQUIRE(lines.size() == 1);
  CHECK(json_string_field(lines[0], "metrics") == "127.0.0.1:" + std::to_string(m.mport));
  CHECK(m.mport > 0);
  CHECK(m.mport != m.server.port());
  // The first line with a port is the listening line, and it is the only one so far.
  size_t with_port = 0;
  for (const std::string& line : m.server.log_lines()) with_port += line.find("\"port\":") != std::string::npos;
  CHECK(with_port == 1);
  CHECK(get(m.mport, "/health").status == 200);
  CHECK(m.server.stop_term() == 0);

  // A bare port, and :PORT, mean loopback; a flag wins over the variable.
  for (const std::string& value : {std::string("0"), std::string(":0")}) {
    TempDir dir;
    ServerProcess s(dir.path());
    s.env("METRICS", "203.0.113.1:1").arg("--metrics=" + value).start();
    const int port = metrics_port_of(s);
    CHECK(json_string_field(s.wait_for_log(R"("msg":"listening")").at(0), "metrics") ==
          "127.0.0.1:" + std::to_string(port));
    CHECK(get(port, "/health").status == 200);
    CHECK(s.stop_term() == 0);
  }
  // Without METRICS there is no listener, and the line says nothing of it.
  {
    Fresh plain;
    auto l = plain.server.wait_for_log(R"("msg":"listening")");
    REQUIRE(l.size() == 1);
    CHECK(l[0].find("metrics") == std::string::npos);
  }
  for (const char* bad : {"abc", "127.0.0.1", "::1:9108", "127.0.0.1:65536", "example.com:9108", "1.2.3:80"}) {
    CAPTURE(bad);
    RunResult r = run_server_binary({}, {{"METRICS", bad}});
    CHECK(r.status == 64);
    CHECK(r.err.find("METRICS") != std::string::npos);
  }
  RunResult flag = run_server_binary({"--metrics", "x:1"});
  CHECK(flag.status == 64);
  CHECK(flag.err.find("--metrics") != std::string::npos);
  // A monitoring port in use: the server does not start, and says why.
  const int busy = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  REQUIRE(::bind(busy, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(busy, 1) == 0);
  REQUIRE(::getsockname(busy, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  RunResult taken = run_server_binary({}, {{"METRICS", "127.0.0.1:" + std::to_string(ntohs(a.sin_port))}});
  ::close(busy);
  CHECK(taken.status == 1);
  CHECK(taken.out.find("monitoring listener") != std::string::npos);
  CHECK(taken.out.find(R"("msg":"listening")") == std::string::npos);
}

// ===== GET /metrics ============================================================================

TEST_CASE("GET /metrics is the Prometheus text format 0.0.4 that promtool check metrics accepts, every family tcp_log_server_ with HELP and TYPE") {
  Monitored m({{"JOURNAL_BYTES", "131072"}, {"MAX_MESSAGE_BYTES", "28672"}});  // SYNC=always
  Client c(m.server.port());
  for (int i = 1; i <= 5; i++) write_ok(c, "w" + std::to_string(i), numbered(i), i);
  Client reader(m.server.port());
  reader.send_line(read_from(1));
  CHECK(reader.read_lines(6).back() == kCurrent);
  // A second without writes starts a checkpoint.
  Samples s = wait_for_value(m.mport, "checkpoint_duration_seconds_count", 1);
  Http r = get(m.mport, "/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.closed);
  CHECK(header(r, "Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(header(r, "Content-Length") == std::to_string(r.body.size()));
  CHECK(header(r, "Connection") == "close");
  auto [status, output] = promtool_check(r.body);
  CHECK_MESSAGE(status == 0, output);
  CHECK_MESSAGE(output.empty(), output);
  // Every sample's name is ours, and every family has its HELP and TYPE.
  for (const std::string& line : detail::complete_lines(r.body)) {
    CAPTURE(line);
    if (line.rfind("# ", 0) == 0) CHECK(line.rfind("tcp_log_server_", 7) == 7);
    else CHECK(line.rfind("tcp_log_server_", 0) == 0);
  }
  static const std::vector<std::pair<std::string, std::string>> kFamilies{
      {"build_info", "gauge"},           {"process_start_time_seconds", "gauge"}, {"head", "gauge"},
      {"entries_written_total", "counter"}, {"entry_bytes_written_total", "counter"},
      {"writes_confirmed_total", "counter"}, {"writes_refused_total", "counter"}, {"store_failed", "gauge"},
      {"stopping", "gauge"},             {"connections_open", "gauge"},      {"connections_accepted_total", "counter"},
      {"connections_refused_total", "counter"}, {"connections_closed_total", "counter"}, {"readers", "gauge"},
      {"reader_max_lag_entries", "gauge"}, {"journal_used_bytes", "gauge"}, {"journal_capacity_bytes", "gauge"},
      {"journal_full_total", "counter"}, {"journal_paced_total", "counter"}, {"store_lag_entries", "gauge"},
      {"checkpoint_duration_seconds", "histogram"},
      {"checkpoints_failed_total", "counter"}, {"journal_sync_duration_seconds", "histogram"},
      {"commit_duration_seconds", "histogram"}, {"input_buffer_bytes", "gauge"}, {"output_buffer_bytes", "gauge"},
      {"log_lines_dropped_total", "counter"}};
  for (const auto& [name, type] : kFamilies) {
    CAPTURE(name);
    CHECK(("\n" + r.body).find("\n# HELP tcp_log_server_" + name + " ") != std::string::npos);
    CHECK(("\n" + r.body).find("\n# TYPE tcp_log_server_" + name + " " + type + "\n") != std::string::npos);
  }
  s = parse_samples(r.body);
  // The version is the binary's; the start time is this process's.
  RunResult version = run_server_binary({"--version"});
  CHECK(s.count("tcp_log_server_build_info{version=\"" + version.out.substr(15, version.out.size() - 16) + "\"}") == 1);
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  CHECK(value(s, "process_start_time_seconds") <= now + 1);
  CHECK(value(s, "process_start_time_seconds") >= now - 120);
  // One sync and one commit per write here, each sent alone; a checkpoint that succeeded.
  CHECK(value(s, "journal_sync_duration_seconds_count") == 5);
  CHECK(value(s, "commit_duration_seconds_count") == 5);
  CHECK(value(s, "journal_sync_duration_seconds_bucket{le=\"+Inf\"}") == 5);
  CHECK(value(s, "journal_sync_duration_seconds_sum") > 0);
  CHECK(value(s, "checkpoint_duration_seconds_count") == 1);
  CHECK(value(s, "checkpoint_duration_seconds_bucket{le=\"30\"}") <= 1);
  CHECK(value(s, "journal_capacity_bytes") == 131072 - 2 * 4096);
  CHECK(value(s, "journal_used_bytes") == 0);  // the checkpoint retired them
  CHECK(value(s, "store_lag_entries") == 0);   // after it had made them all
  CHECK(value(s, "log_lines_dropped_total") == 0);
  CHECK(value(s, "store_failed") == 0);
  CHECK(value(s, "stopping") == 0);
}

TEST_CASE("the metrics count what the clients did: writes and their bytes, connections open, accepted, refused over MAX_CONNECTIONS and closed by reason, readers, their lag and the buffers") {
  Monitored m({{"SYNC", "none"}, {"MAX_CONNECTIONS", "12"}, {"LINE_TIMEOUT", "2"}});
  const int port = m.server.port();
  // N writes of known bytes, on one connection: 1.8 MB, more than a reader that does not read
  // can be sent (its output mark and the kernel's buffers).
  constexpr int kWrites = 60;
  Client writer(port);
  const uint64_t bytes = write_entries(writer, kWrites, 30000, 1);
  Samples s = scrape(m.mport);
  CHECK(value(s, "head") == kWrites);
  CHECK(value(s, "entries_written_total") == kWrites);
  CHECK(value(s, "entry_bytes_written_total") == static_cast<double>(bytes));
  CHECK(value(s, "writes_confirmed_total") == kWrites);
  CHECK(value(s, "writes_refused_total{reason=\"storage_error\"}") == 0);
  CHECK(value(s, "journal_sync_duration_seconds_count") == 0);  // SYNC=none: no journal, no sync
  CHECK(value(s, "commit_duration_seconds_count") >= 1);

  // A reader that does not read (catching up, its output full), one that is current, a line
  // left unfinished, and three idle connections: seven open.
  Client stalled(port);
  stalled.send_line(read_from(1));
  Client live(port);
  live.send_line(read_from(kWrites + 1));
  CHECK(live.read_line() == kCurrent);
  Client partial(port);
  partial.send(R"({"id":"unfinished","entry":{"p":")" + std::string(200, 'u'));
  std::vector<Client> idle;
  for (int i = 0; i < 3; i++) idle.emplace_back(port);
  s = wait_for_value(m.mport, "connections_open", 7);
  CHECK(value(s, "connections_accepted_total") == 7);
  CHECK(value(s, "readers{state=\"catching_up\"}") == 1);
  CHECK(value(s, "readers{state=\"streaming\"}") == 1);
  CHECK(value(s, "reader_max_lag_entries") > 0);
  CHECK(value(s, "reader_max_lag_entries") < kWrites);
  CHECK(value(s, "output_buffer_bytes") >= 16 * 1024);  // the stalled reader's, at least
  // The unfinished line, once read (a scrape is answered in the pass it arrives, before the
  // connections' input is read).
  for (auto deadline = Clock::now() + 5s; value(s, "input_buffer_bytes") < 200 && Clock::now() < deadline;) {
    std::this_thread::sleep_for(20ms);
    s = scrape(m.mport);
  }
  CHECK(value(s, "input_buffer_bytes") >= 200);

  // Five more fill MAX_CONNECTIONS (12); three more are refused.
  std::vector<Client> extra;
  for (int i = 0; i < 5; i++) extra.emplace_back(port);
  wait_for_value(m.mport, "connections_open", 12);
  for (int i = 0; i < 3; i++) {
    Client over(port);
    CHECK(over.read_line() == R"({"error":"too many connections"})");
    over.expect_eof();
  }
  s = wait_for_value(m.mport, "connections_refused_total{reason=\"max_connections\"}", 3);
  CHECK(value(s, "connections_accepted_total") == 12);
  CHECK(value(s, "connections_refused_total{reason=\"out_of_descriptors\"}") == 0);
  // The five close: closed by the peer.
  extra.clear();
  s = wait_for_value(m.mport, "connections_closed_total{reason=\"peer\"}", 5);
  CHECK(value(s, "connections_open") == 7);

  // A line that is not JSON, one too long, a reset and a line not finished in time.
  idle[0].send_line("not json");
  CHECK(idle[0].read_line() == kInvalidJson);
  idle[0].expect_eof();
  idle[1].send_line(std::string(1048577, 'a'));  // MAX_MESSAGE_BYTES + 1
  CHECK(idle[1].read_line() == kTooLarge);
  idle[1].expect_eof();
  idle[2].reset();
  CHECK(partial.read_line(6s) == R"({"error":"message timeout"})");
  partial.expect_eof();
  s = wait_for_value(m.mport, "connections_closed_total{reason=\"reset\"}", 1);
  s = wait_for_value(m.mport, "connections_open", 3);
  CHECK(value(s, "connections_closed_total{reason=\"invalid_json\"}") == 1);
  CHECK(value(s, "connections_closed_total{reason=\"too_large\"}") == 1);
  CHECK(value(s, "connections_closed_total{reason=\"line_timeout\"}") == 1);
  CHECK(value(s, "connections_closed_total{reason=\"peer\"}") == 5);
  CHECK(value(s, "connections_closed_total{reason=\"input_limit\"}") == 0);
  CHECK(value(s, "connections_closed_total{reason=\"stopping\"}") == 0);
  CHECK(value(s, "connections_accepted_total") == 12);
  // Scrapes are not the log's connections.
  CHECK(value(s, "entries_written_total") == kWrites);
}

// ===== GET /health and the rest ================================================================

TEST_CASE("GET /health is 200 while serving and 503 while a graceful stop lasts; other paths 404, other methods 405, a malformed request 400") {
  Monitored m({{"SYNC", "none"}});
  Http ok = get(m.mport, "/health");
  CHECK(ok.status == 200);
  CHECK(ok.body == "ok\n");
  CHECK(get(m.mport, "/metrics?name[]=x").status == 200);  // a query is ignored
  CHECK(http(m.mport, "GET /health HTTP/1.0\r\n\r\n").status == 200);
  CHECK(http(m.mport, "GET /health HTTP/1.1\n\n").status == 200);  // bare newlines too
  Http missing = get(m.mport, "/");
  CHECK(missing.status == 404);
  CHECK(missing.closed);
  CHECK(missing.body.size() < 100);
  CHECK(get(m.mport, "/metricsx").status == 404);
  Http post = http(m.mport, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  CHECK(post.status == 405);
  CHECK(header(post, "Allow") == "GET, HEAD");
  Http head = http(m.mport, "HEAD /metrics HTTP/1.1\r\n\r\n");
  CHECK(head.status == 200);
  CHECK(head.body.empty());
  CHECK(std::atoi(header(head, "Content-Length").c_str()) > 1000);
  for (const char* bad : {"garbage\r\n\r\n", "GET /health\r\n\r\n", "GET /health SPDY/3\r\n\r\n", "\r\n\r\n"}) {
    CAPTURE(bad);
    Http r = http(m.mport, bad);
    CHECK(r.status == 400);
    CHECK(r.closed);
  }

  // A graceful stop that lasts: a reader that does not read holds its output for up to 3 s.
  Client writer(m.server.port());
  write_entries(writer, 60, 30000, 1);
  Client stalled(m.server.port());
  stalled.send_line(read_from(1));
  wait_for_value(m.mport, "readers{state=\"catching_up\"}", 1);
  ::kill(m.server.pid(), SIGTERM);
  REQUIRE(m.server.wait_for_log(R"("msg":"stopping")").size() == 1);
  Http stopping = get(m.mport, "/health");
  CHECK(stopping.status == 503);
  CHECK(stopping.body == "stopping\n");
  CHECK(value(scrape(m.mport), "stopping") == 1);
  for (auto deadline = Clock::now() + 10s; m.server.running() && Clock::now() < deadline;)
    std::this_thread::sleep_for(10ms);
  CHECK(m.server.exit_status() == 0);
  // Gone with the server.
  CHECK(!Client::try_connect(m.mport, "127.0.0.1", 1s));
}

TEST_CASE("after a failed checkpoint GET /health is 503 with the reason, and the refused writes and the failure are counted") {
  const std::string strace = dur::find_program("strace");
  REQUIRE_MESSAGE(!strace.empty(), "strace is needed (make check-deps installs it)");
  Monitored m({{"SYNC", "always"}, {"JOURNAL_BYTES", "131072"}, {"MAX_MESSAGE_BYTES", "28672"}});
  const pid_t checkpoint_thread = fault::thread_named(m.server.pid(), "checkpoint");
  REQUIRE(checkpoint_thread > 0);
  // EIO for the checkpoint thread's first syncfs (as fault_test does), by an strace on it alone.
  const pid_t tracer = detail::spawn(strace, {"-qq", "-p", std::to_string(checkpoint_thread), "-o", m.dir / "trace", "-e",
                                              "trace=syncfs", "-e", "inject=syncfs:error=EIO:when=1"},
                                     detail::build_environment({}), m.dir.path(), m.dir / "strace.out",
                                     m.dir / "strace.err");
  struct Reap {
    pid_t pid;
    ~Reap() {
      if (detail::wait_for_exit(pid, Clock::now() + 10s)) return;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{tracer};
  for (auto deadline = Clock::now() + 10s; tracer_of(checkpoint_thread) != tracer && Clock::now() < deadline;)
    std::this_thread::sleep_for(10ms);
  REQUIRE_MESSAGE(tracer_of(checkpoint_thread) == tracer, "strace did not attach to the checkpoint thread");
  CHECK(get(m.mport, "/health").status == 200);
  Client c(m.server.port());
  for (int i = 1; i <= 3; i++) write_ok(c, "w" + std::to_string(i), numbered(i), i);
  Samples s = wait_for_value(m.mport, "checkpoints_failed_total", 1);
  CHECK(value(s, "store_failed") == 1);
  CHECK(value(s, "checkpoint_duration_seconds_count") == 0);
  Http health = get(m.mport, "/health");
  CHECK(health.status == 503);
  CHECK(health.body.rfind("writes are refused until the server restarts: a checkpoint could not", 0) == 0);
  CHECK(health.body.find("Input/output error") != std::string::npos);
  c.send_line(write_msg("after", numbered(4)));
  CHECK(c.read_line().find(R"({"id":"after","error":"writes are refused)") == 0);
  s = scrape(m.mport);
  CHECK(value(s, "writes_refused_total{reason=\"store_failed\"}") == 1);
  CHECK(value(s, "writes_refused_total{reason=\"storage_error\"}") == 0);
  CHECK(value(s, "writes_confirmed_total") == 3);
  CHECK(m.server.stop_term() == 1);  // the journal is left to the next start
}

// ===== The listener's limits, and hostile scrapers ==============================================

TEST_CASE("the monitoring listener's own limits: a request head of at most 8 KiB; a request trickled a byte at a time is answered if it ends in time") {
  Monitored m({{"SYNC", "none"}});
  // A request trickled a byte at a time, finished in time: answered.
  {
    RawConnection slow(m.mport);
    for (char ch : std::string("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")) {
      REQUIRE(slow.send(std::string_view(&ch, 1)));
      std::this_thread::sleep_for(10ms);
    }
    std::string got;
    CHECK(slow.wait_closed(5s, &got));
    CHECK(parse_http(got).status == 200);
  }
  // A head of exactly 8 KiB is answered; one byte more is closed unanswered.
  auto padded = [](size_t total) {
    std::string r = "GET /health HTTP/1.1\r\nX-Pad: ";
    r += std::string(total - r.size() - 4, 'x');
    return r + "\r\n\r\n";
  };
  REQUIRE(padded(8192).size() == 8192);
  CHECK(http(m.mport, padded(8192)).status == 200);
  Http over = http(m.mport, padded(8193));
  CHECK(over.status == 0);
  CHECK(over.closed);
}

TEST_CASE("hostile scrapers (a request trickled forever, a 1 MiB request line, 1,000 idle connections) do not delay a writer's confirmations") {
  Monitored m({{"SYNC", "none"}});  // the loop is measured, not the disk
  const Latency quiet = probe_writes(m.server.port(), 1500ms, "quiet");
  REQUIRE(quiet.confirmed == quiet.writes);

  // The writer writes throughout, from before the first hostile scraper comes until after the
  // slowloris and the idle ones have been closed.
  Latency hostile;
  std::thread writer([&] { hostile = probe_writes(m.server.port(), 7000ms, "hostile"); });
  std::this_thread::sleep_for(200ms);
  // A request that never ends, a byte every 20 ms (its header lines never end in a blank one),
  // and a 1 MiB request line: connected first, so that they have their places.
  RawConnection trickle(m.mport), huge(m.mport);
  std::atomic<bool> stop{false};
  std::atomic<double> slowloris_closed_after{-1};
  std::atomic<size_t> slowloris_sent{0};
  std::thread slowloris([&] {
    const auto start = Clock::now();
    std::string line = "GET /metrics HTTP/1.1\r\n";
    for (size_t i = 0, at = 0; !stop; i++) {
      if (at == line.size()) line = "X-Slow: " + std::to_string(i) + "\r\n", at = 0;
      if (!trickle.send(std::string_view(&line[at++], 1))) break;
      slowloris_sent++;
      if (trickle.wait_closed(20ms)) break;
    }
    slowloris_closed_after = std::chrono::duration<double>(Clock::now() - start).count();
  });
  std::atomic<bool> big_closed{false};
  std::atomic<int> big_status{-1};
  std::thread big([&] {
    huge.send("GET /" + std::string(1 << 20, 'a') + " HTTP/1.1\r\n\r\n");
    std::string got;
    big_closed = huge.wait_closed(10s, &got);
    big_status = parse_http(got).status;
  });
  // 1,000 idle scrapers: all but the listener's 64 places are closed at once; those that got a
  // place are closed at their deadline, 5 s on.
  std::vector<Client> idle;
  idle.reserve(1000);
  for (int i = 0; i < 1000; i++)
    if (auto c = Client::try_connect(m.mport, "127.0.0.1", 1s)) idle.push_back(std::move(*c));
  CHECK(idle.size() == 1000);
  std::this_thread::sleep_for(300ms);
  size_t closed_at_once = 0;
  for (Client& c : idle) closed_at_once += closed_now(c);
  // And a scraper that scrapes as fast as it can (refused while the idle ones hold the places).
  std::atomic<int> scrapes{0};
  std::thread scraper([&] {
    while (!stop) {
      Client c(m.mport);
      c.send("GET /metrics HTTP/1.1\r\n\r\n");
      c.wait_eof(5s);
      scrapes += parse_http(c.pending()).status == 200;
    }
  });
  writer.join();
  stop = true;
  slowloris.join();
  big.join();
  scraper.join();
  size_t idle_closed = 0;
  for (Client& c : idle) idle_closed += closed_now(c);

  MESSAGE("a writer's confirmations, one write at a time: quiet (" << quiet.writes << " writes) p50 " << quiet.p50
                                                                    << " ms, p99 " << quiet.p99 << " ms, max " << quiet.max
                                                                    << " ms; with hostile scrapers (" << hostile.writes
                                                                    << " writes) p50 " << hostile.p50 << " ms, p99 "
                                                                    << hostile.p99 << " ms, max " << hostile.max
                                                                    << " ms; " << scrapes.load() << " scrapes served meanwhile");
  MESSAGE("slowloris closed after " << slowloris_closed_after.load() << " s and " << slowloris_sent.load()
                                    << " bytes; the 1 MiB request line closed unanswered: " << big_closed.load()
                                    << "; idle scrapers closed at once: " << closed_at_once << ", in the end: "
                                    << idle_closed << " of " << idle.size());
  CHECK(hostile.confirmed == hostile.writes);
  CHECK(hostile.writes > 100);
  // Generous bounds: a pass takes about a millisecond here, and other jobs share the machine.
  CHECK(hostile.p50 < quiet.p50 + 20);
  CHECK(hostile.p99 < 250);
  CHECK(hostile.max < 1000);
  CHECK(scrapes > 0);
  CHECK(big_closed);
  CHECK(big_status == 0);
  CHECK(slowloris_closed_after >= 4.0);
  CHECK(slowloris_closed_after < 7.0);
  CHECK(slowloris_sent < 8192);
  CHECK(closed_at_once >= 1000 - 64);
  CHECK(closed_at_once <= 1000 - 62);
  CHECK(idle_closed == idle.size());
  // The server is fine.
  CHECK(get(m.mport, "/health").status == 200);
  Client after(m.server.port());
  write_ok(after, "after", numbered(1), quiet.writes + hostile.writes + 1);
}

// ===== The library ==============================================================================

TEST_CASE("a host gets the numbers GET /metrics serves from Server::metrics() and write_metrics_text(), and from the C API") {
  TempDir dir;
  tcp_log_server::Store store;
  tcp_log_server::StoreOptions options;
  options.blobs_dir = dir / "blobs";
  options.index_dir = dir / "leveldb";
  options.sync = tcp_log_server::Sync::None;
  REQUIRE(store.open(options).ok());
  tcp_log_server::Limits limits;
  limits.max_connections = 8;
  tcp_log_server::Server server(store, limits, nullptr);
  REQUIRE(server.listen_metrics("", 0).ok());  // "": loopback
  REQUIRE(server.listen("127.0.0.1", 0).ok());
  CHECK(server.metrics_address() == "127.0.0.1:" + std::to_string(server.metrics_port()));
  // The host's loop, in a thread of its own; a snapshot is taken there, between passes.
  std::atomic<bool> want{false}, loop_failed{false};
  tcp_log_server::Metrics snapshot;
  std::string text;
  std::thread loop([&] {
    while (!server.stopped() && !loop_failed) {
      loop_failed = !server.run_once(10).ok();
      if (want) {
        snapshot = server.metrics();
        text.clear();
        tcp_log_server::write_metrics_text(snapshot, &text);
        want = false;
      }
    }
  });
  const int port = server.port(), mport = server.metrics_port();
  {
    Client c(port);
    for (int i = 1; i <= 4; i++) write_ok(c, "w" + std::to_string(i), numbered(i), i);
    Client reader(port);
    reader.send_line(read_from(1));
    CHECK(reader.read_lines(5).back() == kCurrent);
    Client bad(port);
    bad.send_line("{");
    CHECK(bad.read_line() == kInvalidJson);
    bad.expect_eof();
    wait_for_value(mport, "connections_closed_total{reason=\"invalid_json\"}", 1);
    want = true;
    for (auto deadline = Clock::now() + 5s; want && Clock::now() < deadline;) std::this_thread::sleep_for(5ms);
    CHECK(!want);
    // Nothing happened since: the scrape is the host's text, byte for byte.
    CHECK(get(mport, "/metrics").body == text);
  }
  CHECK(snapshot.head == 4);
  CHECK(snapshot.entries_written == 4);
  CHECK(snapshot.entry_bytes_written == 4 * numbered(1).size());
  CHECK(snapshot.writes_confirmed == 4);
  CHECK(snapshot.connections_open == 2);
  CHECK(snapshot.connections_accepted == 3);
  CHECK(snapshot.connections_closed[static_cast<size_t>(tcp_log_server::CloseReason::InvalidJson)] == 1);
  CHECK(snapshot.readers_streaming == 1);
  CHECK(snapshot.readers_catching_up == 0);
  CHECK(snapshot.commit_seconds.count >= 1);
  CHECK(snapshot.writes_refused_reason.empty());
  CHECK(!snapshot.stopping);
  CHECK(std::string(tcp_log_server::metric_label(tcp_log_server::CloseReason::LineTimeout)) == "line_timeout");
  server.stop();
  loop.join();
  CHECK(!loop_failed);
  // The stop closed the monitoring listener with the rest.
  CHECK(!Client::try_connect(mport, "127.0.0.1", 1s));
  CHECK(store.close().ok());

  // The C API: the listener, and the same text into a caller's buffer.
  TempDir cdir;
  tcp_log_server_options o;
  tcp_log_server_options_init(&o);
  const std::string blobs = cdir / "blobs", index = cdir / "leveldb";
  o.blobs_dir = blobs.c_str();
  o.index_dir = index.c_str();
  o.sync_always = 0;
  tcp_log_server_store* cstore = nullptr;
  char error[256] = {};
  REQUIRE(tcp_log_server_store_open(&o, &cstore, error, sizeof error) == 0);
  tcp_log_server_server* cserver = tcp_log_server_new(cstore, &o);
  REQUIRE(cserver);
  CHECK(tcp_log_server_listen_metrics(cserver, nullptr, 0, error, sizeof error) == 0);
  CHECK(tcp_log_server_metrics_port(cserver) > 0);
  CHECK(tcp_log_server_listen_metrics(cserver, "not an address", 0, error, sizeof error) == -1);
  CHECK(std::string(error).find("not an IP address") != std::string::npos);
  const size_t length = tcp_log_server_metrics_text(cserver, nullptr, 0);
  std::vector<char> buffer(length + 1);
  CHECK(tcp_log_server_metrics_text(cserver, buffer.data(), buffer.size()) == length);
  const std::string ctext(buffer.data());
  CHECK(ctext.size() == length);
  CHECK(ctext.find("\ntcp_log_server_head 0\n") != std::string::npos);
  char small[16];
  CHECK(tcp_log_server_metrics_text(cserver, small, sizeof small) == length);
  CHECK(std::string(small) == ctext.substr(0, 15));
  tcp_log_server_free(cserver);
  CHECK(tcp_log_server_store_close(cstore, error, sizeof error) == 0);
}

TEST_CASE("an example host serves GET /metrics through Server::listen_metrics(), as the binary does") {
  const char* examples = std::getenv("EXAMPLES_DIR");
  ServerBinaryOverride host((examples && *examples ? std::string(examples) : std::string("examples")) + "/poll_host");
  Monitored m({{"SYNC", "none"}});
  Client c(m.server.port());
  for (int i = 1; i <= 3; i++) write_ok(c, "w" + std::to_string(i), numbered(i), i);
  Samples s = scrape(m.mport);
  CHECK(value(s, "head") == 3);
  CHECK(value(s, "entries_written_total") == 3);
  CHECK(value(s, "connections_open") == 1);
  CHECK(get(m.mport, "/health").status == 200);
  CHECK(m.server.stop_term() == 0);
}
