// What --check shows on a terminal while it reads a large store: how far it is, how fast it
// goes and how long it still needs, at most a few times a second. Only the text and its pace;
// the caller decides where it goes (stderr, when that is a terminal). No I/O, no clock.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

class CheckProgress {
 public:
  // Updates are at least this far apart, so a fast check does not flood a slow terminal.
  static constexpr int64_t kIntervalMs = 250;

  // The line to show now for `checked` of `total` entries at time `now_ms` (any monotonic
  // clock), or "" when the last one shown is too recent. The first call always shows one.
  std::string update(uint64_t checked, uint64_t total, int64_t now_ms) {
    if (shown_) {
      if (now_ms - shown_ms_ < kIntervalMs) return {};
    } else {
      shown_ = true;
      start_ms_ = now_ms;
      shown_ms_ = now_ms;
      return "checking " + std::to_string(total) + " entries";
    }
    shown_ms_ = now_ms;
    const int64_t elapsed = now_ms - start_ms_;
    std::string line = "checked " + std::to_string(checked) + " of " + std::to_string(total) +
                       " entries (" + std::to_string(total ? checked * 100 / total : 100) + "%)";
    if (checked == 0 || elapsed <= 0) return line;
    const double rate = static_cast<double>(checked) * 1000.0 / static_cast<double>(elapsed);
    const double left = static_cast<double>(total - checked) / rate;
    return line + ", " + std::to_string(static_cast<uint64_t>(rate)) + " entries/s, about " +
           duration(left) + " left";
  }

  // The summary once all `total` entries are checked, at `now_ms`.
  std::string done(uint64_t total, int64_t now_ms) const {
    const int64_t elapsed = shown_ ? now_ms - start_ms_ : 0;
    std::string line = "checked " + std::to_string(total) + " entries in " +
                       duration(static_cast<double>(elapsed) / 1000.0);
    if (elapsed > 0)
      line += ", " + std::to_string(static_cast<uint64_t>(static_cast<double>(total) * 1000.0 /
                                                          static_cast<double>(elapsed))) +
              " entries/s";
    return line;
  }

  // "0.4 s", "42 s", "17 min", "3 h 5 min".
  static std::string duration(double seconds) {
    char text[64];
    if (seconds < 10) std::snprintf(text, sizeof text, "%.1f s", seconds);
    else if (seconds < 100) std::snprintf(text, sizeof text, "%.0f s", seconds);
    else if (seconds < 6000) std::snprintf(text, sizeof text, "%.0f min", seconds / 60);
    else {
      const unsigned long long whole = static_cast<unsigned long long>(seconds);
      std::snprintf(text, sizeof text, "%llu h %llu min", whole / 3600, whole % 3600 / 60);
    }
    return text;
  }

 private:
  bool shown_ = false;
  int64_t start_ms_ = 0;
  int64_t shown_ms_ = 0;
};
