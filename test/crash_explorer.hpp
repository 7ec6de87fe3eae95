// The crash-state explorer: replays a recorded run (crash_trace.hpp) through the persistence
// model (fs_model.hpp); at every trace point, builds the states a power cut there may leave;
// has the real server recover each distinct state (crash_check.hpp); and checks what it shows
// against what clients had been told before that point.
//
// States per trace point: every combination of the units' fates when there are at most
// `exhaustive` of them; beyond that, all lost, all kept, each unit's every fate with the rest
// kept and with the rest lost, and `samples` random combinations, seeded. Identical trees are
// recovered once. `max_states` (if set) bounds the distinct trees recovered: the structured
// ones first, then a seeded choice of the random ones.
//
// A violation, in a state reached from trace point P:
//   - the server does not start, a read shows an unreadable entry or a gap, an entry is no
//     write of the workload, writing the workload again fails, SIGTERM does not stop it with
//     status 0, --check finds a problem (crash_check.hpp);
//   - a write confirmed before P, or an entry sent to a reader before P, by a server running
//     with SYNC=always (or present before recording began), is missing or changed.
// Promises made by a SYNC=none server are not violations when lost: they are counted and
// reported as what SYNC=none can lose.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "crash_check.hpp"
#include "crash_trace.hpp"

namespace crash {

// Everything known about one recorded workload.
struct Recording {
  std::string name;                    // "single writes"
  std::string mode;                    // "SYNC=always", "SYNC=none", "SYNC=none then SYNC=always"
  std::string root;                    // absolute path of the directory the model covers
  crashfs::Tree initial;               // what it held when recording began (all durable)
  std::vector<Phase> phases;           // one per server run
  std::map<std::string, std::string> entry_of_id;  // every write sent: id -> canonical bytes
  std::map<uint64_t, std::string> before;           // entries stored before recording began
  RecoveryConfig recovery;             // how crash states are recovered
  std::map<std::string, int> devices;  // st_dev of each directory met, as small numbers
};

// One promise a client holds.
struct Promise {
  std::string bytes;
  bool durable = true;  // made under SYNC=always (or stored before recording)
  std::string how;      // "confirmed to id x", "sent to a reader"
};

// What clients had been told up to a trace point: index -> promise.
struct Promises {
  std::map<uint64_t, Promise> confirmed, seen;
  std::vector<std::string> live_violations;  // wrong while recording (not a crash matter)
};

// Turns the bytes the server sent into promises.
class PromiseReader {
 public:
  PromiseReader(const Recording& rec) : rec_(rec) {
    for (const auto& [i, bytes] : rec.before) p_.confirmed[i] = {bytes, true, "stored before recording"};
  }
  void take(const Event& e) {
    std::string& buf = pending_[{e.phase, e.path}];
    buf += e.bytes;
    bool durable = rec_.phases[e.phase].sync == "always";
    for (size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
      std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      auto index = harness::json_int_field(line, "index");
      auto id = harness::json_string_field(line, "id");
      bool error = line.find("\"error\":") != std::string::npos;
      if (id && index && !error) {
        auto it = rec_.entry_of_id.find(*id);
        if (it == rec_.entry_of_id.end()) {
          p_.live_violations.push_back("a confirmation for an id never sent: " + line);
          continue;
        }
        p_.confirmed[static_cast<uint64_t>(*index)] = {it->second, durable, "confirmed to id " + *id};
      } else if (index && !id) {
        auto bytes = dur::entry_of(line);
        if (!bytes) {
          p_.live_violations.push_back("a reader got an error while recording: " + harness::detail::tail(line, 200));
          continue;
        }
        auto [it, fresh] = p_.seen.emplace(static_cast<uint64_t>(*index), Promise{*bytes, durable, "sent to a reader"});
        if (!fresh && durable) it->second = Promise{*bytes, true, "sent to a reader"};
      }
    }
  }
  const Promises& now() const { return p_; }

 private:
  const Recording& rec_;
  Promises p_;
  std::map<std::pair<size_t, std::string>, std::string> pending_;  // unfinished lines per socket
};

struct ExploreOptions {
  uint64_t seed = 1;
  size_t jobs = 2;
  size_t exhaustive = 256;
  size_t samples = 8;
  size_t cap = 8;            // boundaries or blocks per content rule and file
  size_t max_states = 0;     // 0: every distinct state found
  std::set<size_t> dropped;  // indices of Sync events left out of the trace
  size_t from_event = 0;     // trace points before this event are not explored
  bool stop_at_violation = false;
};

struct Tally {
  size_t trace_points = 0;  // recorded calls that change or persist files (+1: the end)
  size_t states = 0;        // (trace point, crash state) pairs checked
  size_t distinct = 0;      // distinct trees recovered by the server
  size_t violations = 0;    // pairs with at least one violation
  size_t lossy = 0;         // pairs where a SYNC=none promise was lost
  size_t most_lost = 0;     // the most SYNC=none promises lost in one state
  std::vector<std::string> examples;  // the first violations, with where and how
  double seconds = 0;
};

namespace detail {

struct Point {
  size_t event;          // the crash happens just before this event (events.size(): at the end)
  std::string after;     // the last trace-point call before it
  Promises promises;
  std::vector<std::pair<std::string, std::string>> states;  // (tree hash, how the state came about)
};

// Fates as text: the units that did not keep everything.
inline std::string describe(const std::vector<crashfs::Unit>& units, const std::vector<size_t>& fates) {
  std::string out;
  size_t shown = 0, hidden = 0;
  for (size_t u = 0; u < units.size(); u++) {
    if (fates[u] + 1 == units[u].fates()) continue;
    if (shown++ < 6) out += (out.empty() ? "" : "; ") + units[u].what + ": " + units[u].fate_label(fates[u]);
    else hidden++;
  }
  if (hidden) out += "; and " + std::to_string(hidden) + " more lost or torn";
  return out.empty() ? "every unsynced change kept (what a process crash leaves)" : out;
}

// The fate combinations to try at one trace point, each with its tier (0: structured,
// 1: random): every combination when there are at most o.exhaustive; else all kept, all lost,
// each unit's every fate against all kept and against all lost, and o.samples random ones.
inline std::vector<std::pair<std::vector<size_t>, int>> choices(const std::vector<crashfs::Unit>& units,
                                                                const ExploreOptions& o, dur::Rng& rng) {
  std::set<std::vector<size_t>> seen;
  std::vector<std::pair<std::vector<size_t>, int>> out;
  auto add = [&](std::vector<size_t> f, int t) {
    if (seen.insert(f).second) out.emplace_back(std::move(f), t);
  };
  std::vector<size_t> kept(units.size()), lost(units.size(), 0);
  size_t product = 1;
  for (size_t u = 0; u < units.size(); u++) {
    kept[u] = units[u].fates() - 1;
    product = std::min<size_t>(product * units[u].fates(), o.exhaustive + 1);
  }
  add(kept, 0);
  add(lost, 0);
  if (product <= o.exhaustive) {
    std::vector<size_t> f(units.size(), 0);
    for (;;) {
      add(f, 0);
      size_t u = 0;
      while (u < units.size() && ++f[u] == units[u].fates()) f[u++] = 0;
      if (u == units.size()) return out;
    }
  }
  for (size_t u = 0; u < units.size(); u++)
    for (size_t v = 0; v + 1 < units[u].fates(); v++) {
      auto a = kept, b = lost;
      a[u] = v;
      b[u] = v + 1;
      add(a, 0);
      add(b, 0);
    }
  for (size_t n = 0; n < o.samples; n++) {
    std::vector<size_t> f(units.size());
    for (size_t u = 0; u < units.size(); u++) f[u] = rng.below(units[u].fates());
    add(f, 1);
  }
  return out;
}

// Which distinct trees to recover, in order: for a sync-removal run, those of the points nearest
// the dropped sync first; else all, or, within o.max_states, the same share of every trace point
// (round robin over the points, each point's structured states first).
inline std::vector<std::string> to_recover(const Recording& rec, const std::vector<Point>& points,
                                           const std::map<std::string, int>& tier, const ExploreOptions& o) {
  std::vector<std::string> order;
  std::set<std::string> taken;
  if (o.stop_at_violation || !o.max_states || tier.size() <= o.max_states) {
    for (const auto& point : points)
      for (const auto& s : point.states)
        if (taken.insert(s.first).second) order.push_back(s.first);
  } else {
    dur::Rng pick(rec.name + rec.mode + "pick");
    std::vector<std::vector<std::string>> per_point;
    for (const auto& point : points) {
      std::vector<std::string> hashes;
      for (const auto& s : point.states) hashes.push_back(s.first);
      std::shuffle(hashes.begin(), hashes.end(), pick.gen());
      std::stable_sort(hashes.begin(), hashes.end(),
                       [&](const std::string& a, const std::string& b) { return tier.at(a) < tier.at(b); });
      per_point.push_back(std::move(hashes));
    }
    std::vector<size_t> visit(per_point.size());
    for (size_t i = 0; i < visit.size(); i++) visit[i] = i;
    std::shuffle(visit.begin(), visit.end(), pick.gen());
    for (size_t round = 0; order.size() < o.max_states; round++) {
      bool any = false;
      for (size_t i : visit) {
        if (round >= per_point[i].size()) continue;
        any = true;
        if (taken.insert(per_point[i][round]).second) order.push_back(per_point[i][round]);
        if (order.size() == o.max_states) break;
      }
      if (!any) break;
    }
  }
  if (o.max_states && order.size() > o.max_states) order.resize(o.max_states);
  return order;
}

}  // namespace detail

// Violations of `p` in recovery `r`; *lost is how many entries promised by a SYNC=none server
// (confirmed or sent to a reader) are missing or changed.
inline std::vector<std::string> judge(const Recording& rec, const Promises& p, const Recovery& r, size_t* lost) {
  std::vector<std::string> out = r.problems;
  std::set<uint64_t> lost_entries;
  *lost = 0;
  if (!r.started) return out;
  auto check = [&](const std::map<uint64_t, Promise>& promised) {
    for (const auto& [i, promise] : promised) {
      const bool there = i <= r.log.size() && r.log[i - 1] && *r.log[i - 1] == promise.bytes;
      if (there) continue;
      if (!promise.durable) {
        lost_entries.insert(i);
        continue;
      }
      out.push_back("entry " + std::to_string(i) + " (" + promise.how + ") " +
                    (i > r.log.size() ? "is lost: the log ends at " + std::to_string(r.log.size())
                                      : "holds '" + harness::detail::tail(r.log[i - 1].value_or("<error>"), 80) + "'"));
    }
  };
  check(p.confirmed);
  check(p.seen);
  *lost = lost_entries.size();
  std::set<std::string> known;
  for (const auto& [id, bytes] : rec.entry_of_id) known.insert(bytes);
  for (const auto& [i, bytes] : rec.before) known.insert(bytes);
  for (size_t i = 0; i < r.log.size(); i++)
    if (r.log[i] && !known.count(*r.log[i]))
      out.push_back("entry " + std::to_string(i + 1) + " is no write of the workload: '" +
                    harness::detail::tail(*r.log[i], 80) + "'");
  return out;
}

// Replays `events` through a fresh model and calls `at_point(k, model)` at every trace point k
// (before event k; k == events.size(): the end) and `applied(e)` after each event applied.
template <typename AtPoint, typename Applied>
void replay_model(const Recording& rec, const std::vector<Event>& events, const ExploreOptions& o,
                  AtPoint&& at_point, Applied&& applied) {
  crashfs::FsModel model(rec.initial);
  for (size_t k = 0; k <= events.size(); k++) {
    const bool end = k == events.size();
    if (end || events[k].trace_point()) at_point(k, model);
    if (end) break;
    const Event& e = events[k];
    if (o.dropped.count(k)) continue;
    if (!apply(&model, e)) throw std::runtime_error("replay does not fit the model at " + e.what);
    applied(e);
  }
}

inline Tally explore_states(const Recording& rec, const std::vector<Event>& events, const ExploreOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  Tally tally;
  PromiseReader promises(rec);
  std::vector<detail::Point> points;
  std::map<std::string, int> tier;  // 0: structured, 1: random
  // Where each distinct tree was first met: (point, choice), so that only the trees chosen for
  // recovery are ever held, built again in a second pass (the model is deterministic). Holding
  // every tree met would take gigabytes: a crash state holds the whole journal.
  std::map<std::string, std::pair<size_t, size_t>> origin;
  std::string after = "the start of recording";
  bool changed = true;
  auto seed_at = [&](size_t k) { return crashfs::mix(o.seed, rec.name + rec.mode + std::to_string(k)); };
  auto choices_at = [&](size_t k, const crashfs::FsModel& model, std::vector<crashfs::Unit>* units) {
    const uint64_t seed = seed_at(k);
    *units = model.units(seed, o.cap);
    dur::Rng rng(rec.name + rec.mode + std::to_string(seed));
    return detail::choices(*units, o, rng);
  };
  replay_model(
      rec, events, o,
      [&](size_t k, const crashfs::FsModel& model) {
        tally.trace_points++;
        if (k < o.from_event) return;
        detail::Point point;
        point.event = k;
        point.after = after;
        point.promises = promises.now();
        if (!changed && !points.empty()) {
          point.states = points.back().states;
        } else {
          std::vector<crashfs::Unit> units;
          auto ordered = choices_at(k, model, &units);
          for (size_t i = 0; i < ordered.size(); i++) {
            const auto& [f, t] = ordered[i];
            std::string hash = sha256_hex(crashfs::serialize(model.crash(units, f)));
            auto it = tier.find(hash);
            if (it == tier.end()) {
              tier[hash] = t;
              origin[hash] = {points.size(), i};
            } else {
              it->second = std::min(it->second, t);
            }
            point.states.emplace_back(hash, detail::describe(units, f));
          }
        }
        points.push_back(std::move(point));
        changed = false;
      },
      [&](const Event& e) {
        if (e.kind == Event::Kind::Send) promises.take(e);
        else if (e.kind != Event::Kind::Close) changed = true;
        if (e.trace_point()) after = e.what + " (server run " + std::to_string(e.phase + 1) + ")";
      });
  for (const auto& v : promises.now().live_violations)
    if (tally.examples.size() < 5) tally.examples.push_back("while recording: " + v);
  tally.violations += promises.now().live_violations.size();

  std::vector<std::string> order = detail::to_recover(rec, points, tier, o);

  // The chosen trees, built again point by point, are recovered `jobs` at a time as they come
  // (a bounded queue keeps few of them in memory).
  std::map<std::string, size_t> slot;
  for (size_t i = 0; i < order.size(); i++) slot[order[i]] = i;
  std::map<size_t, std::vector<std::pair<size_t, std::string>>> build;  // point -> (choice, hash)
  for (const auto& hash : order) build[origin.at(hash).first].emplace_back(origin.at(hash).second, hash);
  std::vector<std::optional<Recovery>> results(order.size());
  std::map<std::string, std::vector<size_t>> points_of;  // hash -> points that reach it
  for (size_t i = 0; i < points.size(); i++)
    for (const auto& s : points[i].states) points_of[s.first].push_back(i);
  std::deque<std::pair<std::string, crashfs::Tree>> queue;
  bool produced_all = false;
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable cv;
  const size_t jobs = std::max<size_t>(1, o.jobs), capacity = 2 * jobs;
  auto worker = [&] {
    for (;;) {
      std::pair<std::string, crashfs::Tree> item;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return !queue.empty() || produced_all || stop; });
        if (queue.empty() || stop) return;
        item = std::move(queue.front());
        queue.pop_front();
      }
      cv.notify_all();
      Recovery r = recover(item.second, rec.recovery);
      std::lock_guard<std::mutex> lock(mu);
      if (o.stop_at_violation) {
        size_t lost = 0;
        for (size_t pi : points_of[item.first])
          if (!judge(rec, points[pi].promises, r, &lost).empty()) stop = true;
      }
      results[slot.at(item.first)] = std::move(r);
      cv.notify_all();
    }
  };
  std::vector<std::thread> threads;
  for (size_t j = 0; j < jobs; j++) threads.emplace_back(worker);
  size_t point_index = 0;
  bool changed_again = true;
  try {
    replay_model(
        rec, events, o,
        [&](size_t k, const crashfs::FsModel& model) {
          if (k < o.from_event || stop) return;
          const size_t p = point_index++;
          const bool fresh = changed_again || p == 0;  // as the first pass decided
          changed_again = false;
          auto it = build.find(p);
          if (it == build.end() || !fresh) return;  // an unchanged point's trees were built before
          std::vector<crashfs::Unit> units;
          auto ordered = choices_at(k, model, &units);
          for (const auto& [choice, hash] : it->second) {
            crashfs::Tree tree = model.crash(units, ordered.at(choice).first);
            std::unique_lock<std::mutex> lock(mu);
            cv.wait(lock, [&] { return queue.size() < capacity || stop; });
            if (stop) return;
            queue.emplace_back(hash, std::move(tree));
            cv.notify_all();
          }
        },
        [&](const Event& e) {
          if (e.kind != Event::Kind::Send && e.kind != Event::Kind::Close) changed_again = true;
        });
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    for (auto& t : threads) t.join();
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    produced_all = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();

  // Judge every (point, state) pair whose state was recovered.
  std::set<std::string> recovered;
  for (const auto& point : points) {
    std::set<std::string> done;  // a tree reached twice from one point counts once
    for (const auto& [hash, how] : point.states) {
      auto s = slot.find(hash);
      if (s == slot.end() || !results[s->second] || !done.insert(hash).second) continue;
      recovered.insert(hash);
      tally.states++;
      size_t lost = 0;
      auto v = judge(rec, point.promises, *results[s->second], &lost);
      if (lost) {
        tally.lossy++;
        tally.most_lost = std::max(tally.most_lost, lost);
      }
      if (v.empty()) continue;
      tally.violations++;
      if (tally.examples.size() < 5) {
        std::string text = "crash after " + point.after + "; state: " + how + "\n      -> " + v[0];
        if (v.size() > 1) text += "\n      -> " + v[1] + (v.size() > 2 ? " (and " + std::to_string(v.size() - 2) + " more)" : "");
        if (!results[s->second]->recovery_notes.empty())
          text += "\n      server's recovery notes: " + harness::detail::tail(results[s->second]->recovery_notes, 300);
        tally.examples.push_back(text);
      }
    }
  }
  tally.distinct = recovered.size();
  tally.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return tally;
}

// For a sync-removal run: at every trace point from o.from_event on, the state in which every
// unsynced change is lost (the one a missing sync most surely breaks). That state changes only
// when a sync returns, so there are few distinct ones: each is recovered once and judged against
// the promises of every point that reaches it.
inline Tally sweep_durable_states(const Recording& rec, const std::vector<Event>& events, const ExploreOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  Tally tally;
  PromiseReader promises(rec);
  std::string after = "the start of recording";
  bool synced = true;
  struct At {
    std::string hash, after;
    Promises promises;
  };
  std::vector<At> points;
  std::map<std::string, crashfs::Tree> trees;
  std::string hash;
  replay_model(
      rec, events, o,
      [&](size_t k, const crashfs::FsModel& model) {
        tally.trace_points++;
        if (k < o.from_event) return;
        if (synced || hash.empty()) {
          crashfs::Tree tree = model.crash({}, {});
          hash = sha256_hex(crashfs::serialize(tree));
          trees.emplace(hash, std::move(tree));
          synced = false;
        }
        points.push_back({hash, after, promises.now()});
      },
      [&](const Event& e) {
        if (e.kind == Event::Kind::Send) promises.take(e);
        synced = synced || e.is_sync();
        if (e.trace_point()) after = e.what + " (server run " + std::to_string(e.phase + 1) + ")";
      });
  std::vector<std::string> order;
  for (const auto& [h, tree] : trees) order.push_back(h);
  std::map<std::string, Recovery> results;
  std::atomic<size_t> next{0};
  std::mutex mu;
  auto worker = [&] {
    for (size_t i; (i = next++) < order.size();) {
      Recovery r = recover(trees.at(order[i]), rec.recovery);
      std::lock_guard<std::mutex> lock(mu);
      results[order[i]] = std::move(r);
    }
  };
  std::vector<std::thread> threads;
  for (size_t j = 0; j < std::max<size_t>(1, o.jobs); j++) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  for (const auto& p : points) {
    size_t lost = 0;
    auto v = judge(rec, p.promises, results.at(p.hash), &lost);
    tally.states++;
    if (v.empty()) continue;
    tally.violations++;
    if (tally.examples.size() < 5)
      tally.examples.push_back("crash after " + p.after + "; state: every unsynced change lost\n      -> " + v[0]);
  }
  tally.distinct = trees.size();
  tally.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return tally;
}

// Explores the crash states of a recording (see the top of this file). With o.stop_at_violation
// (sync-removal runs), first the state with every unsynced change lost at each point, then, if
// none violated a promise, the others, until the first violation.
inline Tally explore(const Recording& rec, const std::vector<Event>& events, const ExploreOptions& o) {
  if (!o.stop_at_violation) return explore_states(rec, events, o);
  Tally a = sweep_durable_states(rec, events, o);
  if (a.violations > 0) return a;
  Tally b = explore_states(rec, events, o);
  b.states += a.states;
  b.distinct += a.distinct;
  b.seconds += a.seconds;
  return b;
}

}  // namespace crash
