// Recovery of one crash state by the real server, and what it shows: the tree is written to a
// fresh directory, the server is started on it (PORT=0, loopback only) and must listen; the
// whole log is read over TCP; every entry of the workload is written again and must be
// confirmed at head+1, head+2, ... (a store that trusts a damaged blob under its final name
// fails here); the server must stop with status 0 on SIGTERM; and `--check` must then find
// nothing wrong. Safe to call from several threads: no assertion is made here, everything
// found is returned.
#pragma once

#include <sys/stat.h>

#include "durability_harness.hpp"
#include "fs_model.hpp"

namespace crash {

using namespace test_support;
using std::chrono::milliseconds;

// How the server is run on a crash state.
struct RecoveryConfig {
  std::string blobs = "blobs", leveldb = "leveldb";  // relative to the state's root
  std::string sync = "always";
  // More settings for the server, as the recorded runs had them (the small journal).
  std::map<std::string, std::string> env;
  std::vector<std::string> rewrites;  // canonical entries written again after the read
  std::string base_dir;               // where states are written (a tmpfs when there is one)
};

// What the server made of one crash state.
struct Recovery {
  bool started = false;
  std::vector<std::optional<std::string>> log;  // entry i at [i-1]; nullopt: it came as an error
  std::vector<std::string> problems;            // violations that do not depend on promises
  std::string recovery_notes;                   // the server's warn lines at startup
};

namespace detail {

inline bool write_tree(const std::string& root, const crashfs::Tree& tree, std::string* why) {
  if (::mkdir(root.c_str(), 0755) != 0) {
    *why = "mkdir " + root + ": " + std::strerror(errno);
    return false;
  }
  for (const auto& e : tree) {
    std::string path = root + "/" + e.path;
    if (e.dir) {
      if (::mkdir(path.c_str(), 0755) != 0) {
        *why = "mkdir " + path + ": " + std::strerror(errno);
        return false;
      }
      continue;
    }
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || (!e.bytes.empty() && ::write(fd, e.bytes.data(), e.bytes.size()) != static_cast<ssize_t>(e.bytes.size()))) {
      *why = "write " + path + ": " + std::strerror(errno);
      if (fd >= 0) ::close(fd);
      return false;
    }
    ::close(fd);
  }
  return true;
}

// Lines from `net` until `done(line)` says so, or the time is up; false on timeout or close.
template <typename F>
bool read_lines(dur::Net& net, milliseconds timeout, F&& take) {
  auto deadline = dur::Clock::now() + timeout;
  for (;;) {
    net.pump();
    while (auto line = net.line())
      if (take(*line)) return true;
    if (net.eof || dur::Clock::now() >= deadline) return false;
    std::vector<dur::Net*> nets{&net};
    dur::wait_any(nets, 5);
  }
}

}  // namespace detail

inline Recovery recover(const crashfs::Tree& tree, const RecoveryConfig& cfg) {
  Recovery r;
  std::optional<TempDir> state;
  try {
    state.emplace(cfg.base_dir, "crash-state");
  } catch (const std::exception& e) {
    r.problems.push_back(std::string("harness: ") + e.what());
    return r;
  }
  const std::string dir = state->path(), root = dir + "/root";
  std::string why;
  if (!detail::write_tree(root, tree, &why)) {
    r.problems.push_back("harness: " + why);
    return r;
  }
  const std::string blobs = root + "/" + cfg.blobs, leveldb = root + "/" + cfg.leveldb;
  harness::detail::EnvOverrides env{{"PORT", "0"}, {"BLOBS", blobs}, {"LEVELDB", leveldb}, {"SYNC", cfg.sync}};
  for (const auto& [name, value] : cfg.env) env[name] = value;
  dur::Wrapped server(dir, {}, env);
  if (!server.start(milliseconds(10000))) {
    std::string out = server.out() + server.err();
    r.problems.push_back("the server did not start on the state (exit status " +
                         std::to_string(server.exit_status().value_or(-1)) + "): " +
                         harness::detail::tail(out, 400));
    return r;
  }
  r.started = true;
  for (const auto& line : server.log_lines())
    if (at_level(line, kWarn)) r.recovery_notes += harness::detail::tail(line, 300) + "\n";
  // The whole log, as a reader gets it.
  {
    dur::Net reader;
    std::string err = reader.dial(server.port());
    if (!err.empty()) r.problems.push_back("cannot connect to read: " + err);
    reader.out = "{\"from\":1}\n";
    bool current = detail::read_lines(reader, milliseconds(10000), [&](const std::string& line) {
      if (line == "{\"current\":true}") return true;
      auto index = harness::json_int_field(line, "index");
      auto bytes = dur::entry_of(line);
      if (!index) {
        r.problems.push_back("the reader got '" + harness::detail::tail(line, 200) + "'");
        return false;
      }
      if (static_cast<size_t>(*index) != r.log.size() + 1)
        r.problems.push_back("the reader got index " + std::to_string(*index) + " after " + std::to_string(r.log.size()));
      if (bytes) {
        r.log.push_back(*bytes);
      } else {
        r.log.push_back(std::nullopt);
        r.problems.push_back("entry " + std::to_string(*index) + " is unreadable: " + harness::detail::tail(line, 240));
      }
      return false;
    });
    if (!current) r.problems.push_back("the reader got no {\"current\":true} within 10 s after " + std::to_string(r.log.size()) + " entries");
  }
  // Every entry again: each must be confirmed, in order, after the recovered head.
  if (!cfg.rewrites.empty()) {
    dur::Net writer;
    std::string err = writer.dial(server.port());
    if (!err.empty()) r.problems.push_back("cannot connect to write: " + err);
    for (size_t k = 0; k < cfg.rewrites.size(); k++)
      writer.out += "{\"id\":\"again-" + std::to_string(k) + "\",\"entry\":" + cfg.rewrites[k] + "}\n";
    size_t got = 0;
    bool all = detail::read_lines(writer, milliseconds(10000), [&](const std::string& line) {
      std::string want = "{\"id\":\"again-" + std::to_string(got) + "\",\"index\":" +
                         std::to_string(r.log.size() + got + 1) + "}";
      if (line != want)
        r.problems.push_back("writing entry " + std::to_string(got) + " of the workload again after recovery got '" +
                             harness::detail::tail(line, 240) + "', expected '" + want + "'");
      return ++got == cfg.rewrites.size();
    });
    if (!all) r.problems.push_back("only " + std::to_string(got) + " of " + std::to_string(cfg.rewrites.size()) +
                                   " writes after recovery were answered within 10 s");
  }
  server.signal_server(SIGTERM);
  auto status = server.wait(milliseconds(10000));
  if (status != 0)
    r.problems.push_back("the server did not stop with status 0 on SIGTERM (status " +
                         std::to_string(status.value_or(-1)) + "): " + harness::detail::tail(server.out(), 300));
  // --check reads every record and blob from disk.
  harness::detail::EnvOverrides check_env{{"BLOBS", blobs}, {"LEVELDB", leveldb}, {"SYNC", cfg.sync}};
  for (const auto& [name, value] : cfg.env) check_env[name] = value;
  harness::RunResult check = harness::run_server_binary({"--check"}, check_env);
  if (check.status != 0) {
    std::string problems;
    for (const auto& line : harness::detail::complete_lines(check.out))
      if (line.rfind("problem:", 0) == 0 && problems.size() < 400) problems += " " + line;
    r.problems.push_back("--check exited with status " + std::to_string(check.status) + ":" +
                         (problems.empty() ? " " + harness::detail::tail(check.output(), 300) : problems));
  } else {
    std::string want = "entries: " + std::to_string(r.log.size() + cfg.rewrites.size()) + "\n";
    if (check.out.find(want) == std::string::npos)
      r.problems.push_back("--check counted other entries than were read and written: " + harness::detail::tail(check.out, 200));
    // The clean stop made everything durable and emptied the journal: nothing left to replay.
    if (check.out.find("journal records: 0\n") == std::string::npos)
      r.problems.push_back("the journal holds records after a clean stop: " + harness::detail::tail(check.out, 200));
  }
  return r;
}

}  // namespace crash
