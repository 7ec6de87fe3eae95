// SHA-256 (FIPS 180-4), written for this project: blobs are named by the hash of their bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

class Sha256 {
 public:
  Sha256();
  // Feeds more message bytes; may be called any number of times before finish().
  void update(const void* data, size_t len);
  // Pads, finishes and writes the 32-byte digest. The object must not be used afterwards.
  void finish(uint8_t digest[32]);

 private:
  void compress(const uint8_t block[64]);
  uint32_t state_[8];
  uint64_t total_len_ = 0;  // bytes fed so far
  uint8_t buffer_[64];
  size_t buffered_ = 0;  // bytes of buffer_ in use, always < 64 between calls
};

// The 64 lowercase hex digits of the SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);

// The block function in use, for logs and tests: "sha-ni" (the x86 SHA extensions),
// "armv8-sha2" (the ARMv8 SHA-256 instructions, 32- or 64-bit) or "portable".
const char* sha256_implementation();

// Whether this CPU has SHA-256 instructions this build can use (the x86 SHA extensions, or the
// ARMv8 ones, detected at startup); they are used when it does.
bool sha256_hardware_available();
// For tests: use the instructions (when available) or the portable code. Returns whether the
// instructions are now in use. Not thread-safe: call before hashing starts.
bool sha256_use_hardware(bool use);

#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
// For tests: detect again as if getauxval(AT_HWCAP) and getauxval(AT_HWCAP2) had returned these
// words, and use the instructions if they say so; returns sha256_hardware_available(). Lets a test
// run the path of a CPU without the instructions where no such CPU can be had (every CPU model of
// qemu-aarch64 7.2 has them). Words that claim instructions the CPU lacks make hashing trap.
// Not thread-safe.
bool sha256_detect_from_hwcap(unsigned long hwcap, unsigned long hwcap2);
#endif
