// How test/crash_states_test.cpp explores the workloads of crash_workloads.hpp: the bounds of
// an exploration (a seeded slice in make test, the whole with CRASH_STATES=full), its printed
// tallies and the closing "N passed, M failed" line, the expectation of no violation, and the
// proof that the checker can fail: each sync of a recorded run left out in turn must show a
// violation, unless nothing else needed it.
#pragma once

#include <iomanip>

#include "crash_workloads.hpp"

namespace crash {

// ---------------------------------------------------------------------------------------------
// Exploring a workload

// Whether this run explores it all (make crash-states: CRASH_STATES=full).
inline bool full() {
  const char* v = std::getenv("CRASH_STATES");
  return v && std::string(v) == "full";
}

// The bounds of an exploration: a seeded slice, or with full() the whole; CRASH_JOBS states
// recovered at once, at most CRASH_MAX_STATES distinct ones.
inline ExploreOptions options() {
  ExploreOptions o;
  o.seed = dur::base_seed();
  o.jobs = static_cast<size_t>(dur::env_long("CRASH_JOBS", 2));
  if (full()) {
    o.exhaustive = 1024;
    o.samples = 32;
    o.cap = 16;
    o.max_states = static_cast<size_t>(dur::env_long("CRASH_MAX_STATES", 6000));
  } else {
    o.exhaustive = 64;
    o.samples = 4;
    o.cap = 4;
    o.max_states = static_cast<size_t>(dur::env_long("CRASH_MAX_STATES", 300));
  }
  return o;
}

// The closing line: explorations (and sync-removal proofs) that passed and failed.
struct Summary {
  int passed = 0, failed = 0;
  ~Summary() {
    if (passed + failed > 0) std::cout << "[crash-states] " << passed << " passed, " << failed << " failed" << std::endl;
  }
};
inline Summary summary;

// A recording's traces as the events the explorer replays.
inline std::vector<Event> events_of(Recorder& r, const Recording& rec) {
  TraceReader reader(rec.root, rec.initial);
  try {
    return reader.read(rec.phases, r.devices());
  } catch (const std::exception& e) {
    FAIL("cannot follow the trace of " << rec.name << ": " << std::string(e.what()));
  }
  return {};
}

// One exploration's tally, and its first violations.
inline void print(const std::string& label, const Tally& t) {
  std::cout << "[crash-states] " << label << ": " << t.trace_points << " trace points, " << t.states << " states ("
            << t.distinct << " distinct), " << t.violations << " violations";
  if (t.lossy) std::cout << "; SYNC=none promises lost in " << t.lossy << " states (at most " << t.most_lost << " entries)";
  std::cout << ", " << std::fixed << std::setprecision(1) << t.seconds << " s" << std::endl;
  for (const auto& e : t.examples) std::cout << "    " << e << std::endl;
}

// Explores a recording and expects no violation.
inline void explore_and_expect_none(Recorder& r) {
  const Recording& rec = r.recording();
  std::vector<Event> events = events_of(r, rec);
  Tally t = explore(rec, events, options());
  print(rec.name + ", " + rec.mode, t);
  INFO(rec.name << ", " << rec.mode << " (SEED=" << dur::base_seed() << ")");
  CHECK(t.states > 0);
  CHECK(t.violations == 0);
  (t.violations == 0 && t.states > 0 ? summary.passed : summary.failed)++;
}

// ---------------------------------------------------------------------------------------------
// Proof that the checker can fail: the trace with syncs left out must show violations.

// What a sync of a SYNC=always run is there for, told from the trace: the calls of the thread
// that answers clients (the first of its run) and of the checkpoint thread, and what was
// written to the journal by the same thread since its last sync of it.
enum class Role { Startup, Append, TakeBack, Checkpoint, Retire, StopSync, Reset, Other };

inline const char* role_name(Role r) {
  switch (r) {
    case Role::Startup: return "startup sync";
    case Role::Append: return "the journal append's fdatasync";
    case Role::TakeBack: return "the fdatasync of a failed batch's zeroed records";
    case Role::Checkpoint: return "the checkpoint's syncfs";
    case Role::Retire: return "the checkpoint's fdatasync of a retired side's header";
    case Role::StopSync: return "the clean stop's syncfs";
    case Role::Reset: return "the clean stop's fdatasync of the reset journal";
    case Role::Other: return "sync";
  }
  return "sync";
}

inline std::map<size_t, Role> sync_roles(const Recording& rec, const std::vector<Event>& ev) {
  std::map<size_t, Role> out;
  std::map<size_t, long> main_tid;                    // phase -> its first thread
  std::set<size_t> served;                            // phases that have sent to a client
  std::map<std::pair<long, crashfs::Ino>, std::vector<size_t>> written;  // (thread, file) -> writes since its sync
  for (size_t k = 0; k < ev.size(); k++) {
    const Event& e = ev[k];
    main_tid.emplace(e.phase, e.tid);
    if (e.kind == Event::Kind::Send) served.insert(e.phase);
    if (e.kind == Event::Kind::Write) written[{e.tid, e.ino}].push_back(k);
    if (!e.is_sync()) continue;
    std::vector<size_t> writes;
    if (e.ino >= 0) writes = std::move(written[{e.tid, e.ino}]), written.erase({e.tid, e.ino});
    if (rec.phases[e.phase].sync != "always") continue;
    const bool main = e.tid == main_tid[e.phase];
    Role role = Role::Other;
    if (!served.count(e.phase)) {
      role = Role::Startup;
    } else if (e.ino < 0) {
      role = main ? Role::StopSync : Role::Checkpoint;
    } else if (e.what.find("leveldb/journal)") != std::string::npos && !writes.empty()) {
      bool header = false, zeros = true;
      for (size_t w : writes) {
        header = header || (ev[w].bytes.size() == 4096 && ev[w].bytes.compare(0, 8, "TLSJRNL1") == 0);
        zeros = zeros && ev[w].bytes.find_first_not_of('\0') == std::string::npos;
      }
      role = header ? (main ? Role::Reset : Role::Retire) : zeros ? Role::TakeBack : Role::Append;
    }
    out[k] = role;
  }
  return out;
}

// Whether a promise can rest on the dropped syncs alone: not if a later sync that covers all
// they cover (a syncfs of the same file system, or a sync of the same file, begun after them)
// comes before the server next tells a client of an entry, nor if an earlier one did and
// nothing changed since.
inline std::string covered_by(const std::vector<Event>& ev, const std::set<size_t>& dropped) {
  auto covers = [&](const Event& a, const Event& b) {
    return a.is_sync() && a.began >= b.began && ((a.ino < 0 && (a.fs < 0 || a.fs == b.fs)) || (a.ino >= 0 && a.ino == b.ino));
  };
  auto promise = [](const Event& e) { return e.kind == Event::Kind::Send && e.bytes.find("\"index\":") != std::string::npos; };
  auto covers_all = [&](size_t j) {
    for (size_t k : dropped)
      if (!covers(ev[j], ev[k]) || ev[j].phase != ev[k].phase) return false;
    return true;
  };
  for (size_t j = *dropped.rbegin() + 1; j < ev.size() && !promise(ev[j]); j++)
    if (!dropped.count(j) && covers_all(j)) return "the next " + ev[j].what + " covers it before any entry is promised";
  // Back to an earlier sync that covers all they cover, across closes, sends, other syncs, and
  // writes each made durable by a sync of its own file (in the same thread, after it) before the
  // dropped ones: e.g. an idle checkpoint's syncfs, then its retire's header write and journal
  // fdatasync, then the clean stop's syncfs, which finds nothing left to make durable.
  std::map<crashfs::Ino, long> file_synced;  // file -> the thread that synced it, later in time
  for (size_t j = *dropped.begin(); j-- > 0;) {
    const Event& e = ev[j];
    if (e.is_sync()) {
      if (covers_all(j)) return "the " + e.what + " just before it covered it already";
      if (e.ino >= 0) file_synced.emplace(e.ino, e.tid);
      continue;
    }
    if (e.kind == Event::Kind::Close || e.kind == Event::Kind::Send) continue;
    const bool synced_since = (e.kind == Event::Kind::Write || e.kind == Event::Kind::Resize) &&
                              file_synced.count(e.ino) && file_synced.at(e.ino) == e.tid;
    if (!synced_since) break;
  }
  return {};
}

// Whether nothing was left to make durable when event `k` began: the model, replayed up to it
// with every sync, holds no unsynced change, so that leaving that sync out changes no state. A
// clean stop's syncfs after an idle checkpoint, or a checkpoint's syncfs after another that began
// once the batches before it were written: whether that happens in a run depends on timing.
inline bool nothing_unsynced_at(const Recording& rec, const std::vector<Event>& ev, size_t k) {
  bool none = false;
  ExploreOptions all_syncs;
  replay_model(
      rec, ev, all_syncs,
      [&](size_t at, const crashfs::FsModel& model) {
        if (at == k) none = model.units(0, 1).empty();
      },
      [](const Event&) {});
  return none;
}

// Explores `rec` once per sync of its SYNC=always runs left out (and once without all the
// startup syncs of each such run). A sync that makes entries durable (a journal append's, a
// checkpoint's or a clean stop's syncfs, the startup syncs) must show a violation unless
// covered_by() explains why it cannot. A sync that only makes a journal header or zeros durable
// (a retired side, a reset, a failed batch's records taken back) protects no promise when a later
// sync of the journal does not cover it: losing it can only make the journal replay entries that
// are durable already (or, for zeros, replay a refused batch, which no client was promised);
// with it left out the explorer must find no violation at all. The first look is at the state
// with every unsynced change lost at each point (few distinct states: cheap); only if none of
// them shows a violation are the others explored, up to a bound.
// Returns, per role, how many of its syncs left out showed a violation.
inline std::map<Role, int> prove_syncs_needed(Recorder& r) {
  const Recording& rec = r.recording();
  std::vector<Event> ev = events_of(r, rec);
  const std::map<size_t, Role> roles = sync_roles(rec, ev);
  struct Drop {
    std::set<size_t> events;
    Role role;
    std::string label, covered;
  };
  std::vector<Drop> drops;
  std::map<size_t, std::set<size_t>> startup;  // phase -> its syncs before serving
  std::map<std::pair<size_t, Role>, int> nth;
  for (const auto& [k, role] : roles) {
    const Event& e = ev[k];
    if (role == Role::Startup) {
      startup[e.phase].insert(k);
      continue;
    }
    const int n = ++nth[{e.phase, role}];
    std::string covered = covered_by(ev, {k});
    if (covered.empty() && nothing_unsynced_at(rec, ev, k)) covered = "nothing was left unsynced when it began";
    drops.push_back({{k}, role, std::string("without ") + role_name(role) + " #" + std::to_string(n) + ", " + e.what +
                                   " (server run " + std::to_string(e.phase + 1) + ")", covered});
  }
  for (const auto& [phase, ks] : startup)
    drops.push_back({ks, Role::Startup, "without the " + std::to_string(ks.size()) + " startup sync(s) of server run " +
                                            std::to_string(phase + 1), covered_by(ev, ks)});
  REQUIRE(!drops.empty());
  std::map<Role, int> caught;
  for (const auto& d : drops) {
    const bool harmless = d.role == Role::Retire || d.role == Role::Reset || d.role == Role::TakeBack;
    const bool needed = d.covered.empty() && !harmless;
    if (!d.covered.empty() && !full()) {  // nothing to prove; the whole exploration explores it all the same
      std::cout << "[crash-states] " << rec.name << ", " << rec.mode << ", " << d.label << ": needs none: " << d.covered
                << " (explored by make crash-states)" << std::endl;
      summary.passed++;
      continue;
    }
    ExploreOptions o = options();
    o.dropped = d.events;
    o.from_event = *d.events.begin();
    o.stop_at_violation = true;
    o.max_states = full() ? 1500 : needed ? 300 : 100;
    Tally t = explore(rec, ev, o);
    std::ostringstream line;
    line << "[crash-states] " << rec.name << ", " << rec.mode << ", " << d.label << ": " << t.states << " states, "
         << t.violations << " violations";
    bool ok = true;
    if (!d.covered.empty()) {
      line << " (needs none: " << d.covered << ")";
    } else if (harmless) {
      ok = t.violations == 0;
      line << (ok ? " (as expected: it makes no entry durable)" : " -- A VIOLATION WITHOUT A SYNC THAT PROTECTS NO ENTRY");
    } else {
      ok = t.violations > 0;
      if (!ok) line << " -- NOT CAUGHT";
    }
    std::cout << line.str() << ", " << std::fixed << std::setprecision(1) << t.seconds << " s" << std::endl;
    if (t.violations > 0 && !t.examples.empty()) std::cout << "    first: " << t.examples.front() << std::endl;
    INFO(d.label);
    CHECK_MESSAGE(ok, (needed ? "the explorer found no violation with a sync left out that nothing else covers"
                              : "a violation with a sync left out that makes no entry durable"));
    (ok ? summary.passed : summary.failed)++;
    if (needed && t.violations > 0) caught[d.role]++;
  }
  return caught;
}

}  // namespace crash
