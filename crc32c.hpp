// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78), written for this project:
// it protects the journal's records, so that recovery tells a whole record from a torn one.
#pragma once
#include <cstddef>
#include <cstdint>

// The CRC-32C of `n` bytes at `data`, continuing from `crc` (0 to start): crc32c(0, "123456789", 9)
// is 0xE3069283. Uses the CPU's CRC32C instructions where it has them (SSE4.2 on x86-64, the
// ARMv8 CRC32 instructions on 32- and 64-bit ARM, detected at startup), else tables. Any
// alignment of `data`, either byte order.
uint32_t crc32c(uint32_t crc, const void* data, size_t n);

// The code crc32c() runs now, for logs and tests: "sse4.2", "armv8-crc32" or "tables".
const char* crc32c_implementation();

// Whether this CPU has instructions this build can use (and crc32c() uses them unless told not to).
bool crc32c_hardware_available();
// For tests: use the instructions (when available) or the tables; returns whether the
// instructions are now in use. Not thread-safe: call before any other thread hashes.
bool crc32c_use_hardware(bool use);

#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
// For tests: detect again as if getauxval(AT_HWCAP) and getauxval(AT_HWCAP2) had returned these
// words, and use the instructions if they say so; returns crc32c_hardware_available(). Lets a test
// run the path of a CPU without the instructions where no such CPU can be had (every CPU model of
// qemu-aarch64 7.2 has them). Words that claim instructions the CPU lacks make crc32c() trap.
// Not thread-safe.
bool crc32c_detect_from_hwcap(unsigned long hwcap, unsigned long hwcap2);
#endif
