// The monotonic clock in nanoseconds, for the durations the metrics count (a vDSO call: no
// system call, about 20 ns).
#pragma once
#include <time.h>

#include <cstdint>

inline uint64_t monotonic_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}
