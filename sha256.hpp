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

// Whether this CPU has the x86 SHA extensions; they are used when it does.
bool sha256_hardware_available();
// For tests: use the SHA extensions (when available) or the portable code. Returns whether the
// SHA extensions are now in use. Not thread-safe: call before hashing starts.
bool sha256_use_hardware(bool use);
