// CRC-32C against published check values (RFC 3720, B.4; the "123456789" check), a long input
// computed with an independent bit-at-a-time implementation (Python), and a bit-at-a-time
// reference here, with the instructions (SSE4.2, ARMv8 CRC32) and with the tables.
//
// Set EXPECT_CRC32C_IMPLEMENTATION (e.g. to "armv8-crc32" under `qemu-aarch64 -cpu max`, "tables"
// under `qemu-arm -cpu cortex-a15`) and the first case checks that detection picked that path, so
// that a run on a CPU with the instructions cannot pass by quietly using the tables.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "crc32c.hpp"

#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
#include <sys/auxv.h>
#endif

namespace {

// Puts back what detection chose at startup, whatever a case did.
struct Restore {
  ~Restore() {
#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
    crc32c_detect_from_hwcap(getauxval(AT_HWCAP), getauxval(AT_HWCAP2));
#endif
    crc32c_use_hardware(true);
  }
};

// The definition, one bit at a time: slow, and shares nothing with crc32c.cpp.
uint32_t crc32c_bitwise(const unsigned char* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ ((c & 1) ? 0x82F63B78u : 0u);
  }
  return ~c;
}

// Byte i of the long vector; its CRC-32C for 100003 bytes, 0x54FB864F, is from a bit-at-a-time
// Python implementation.
unsigned char long_vector_byte(uint64_t i) {
  return static_cast<unsigned char>(((i * i * 7 + i * 13 + 5) >> 3) & 0xFF);
}

void check_vectors() {
  const std::string in_use = crc32c_implementation();
  CAPTURE(in_use);
  CHECK(crc32c(0, "123456789", 9) == 0xE3069283u);
  CHECK(crc32c(0, "", 0) == 0u);
  std::vector<unsigned char> zeros(32, 0x00), ones(32, 0xFF), up(32), down(32);
  for (int i = 0; i < 32; i++) {
    up[i] = static_cast<unsigned char>(i);
    down[i] = static_cast<unsigned char>(31 - i);
  }
  CHECK(crc32c(0, zeros.data(), 32) == 0x8A9136AAu);
  CHECK(crc32c(0, ones.data(), 32) == 0x62A8AB43u);
  CHECK(crc32c(0, up.data(), 32) == 0x46DD794Eu);
  CHECK(crc32c(0, down.data(), 32) == 0x113FDB5Cu);
  std::vector<unsigned char> aa(4096 + 16, 0xAA);
  CHECK(crc32c(0, aa.data(), 4096) == 0x4ED66B65u);
  CHECK(crc32c(0, aa.data() + 3, 4096) == 0x4ED66B65u);  // unaligned: the same bytes elsewhere
  // The long vector at every alignment modulo 8, so that the word loops start off-boundary.
  std::vector<unsigned char> buffer(100003 + 8);
  for (size_t offset = 0; offset < 8; offset++) {
    CAPTURE(offset);
    for (uint64_t i = 0; i < 100003; i++) buffer[offset + i] = long_vector_byte(i);
    CHECK(crc32c(0, buffer.data() + offset, 100003) == 0x54FB864Fu);
  }
}

// A std::string, which doctest prints as text (a const char* it prints as a pointer).
std::string implementation() { return crc32c_implementation(); }

// xorshift64: fixed seed, the same data on every target.
struct Random {
  uint64_t s = 0x9E3779B97F4A7C15ull;
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

}  // namespace

TEST_CASE("CRC-32C: the implementation detection chose") {
  const std::string available =
      crc32c_hardware_available() ? " (instructions available)" : " (no instructions here)";
  MESSAGE("crc32c implementation in use: " << implementation() << available);
  if (!crc32c_hardware_available()) CHECK(implementation() == "tables");
  if (const char* expected = std::getenv("EXPECT_CRC32C_IMPLEMENTATION")) {
    CHECK(implementation() == expected);
  }
}

TEST_CASE("CRC-32C check values, with the instructions and with the tables") {
  Restore restore;
  CHECK_FALSE(crc32c_use_hardware(false));
  CHECK(implementation() == "tables");
  check_vectors();
  if (!crc32c_hardware_available()) {
    CHECK_FALSE(crc32c_use_hardware(true));
    CHECK(implementation() == "tables");
    MESSAGE("no CRC32C instructions here: only the tables were checked");
    return;
  }
  CHECK(crc32c_use_hardware(true));
  CHECK(implementation() != "tables");
  MESSAGE("check values passed with " << implementation() << " and with tables");
  check_vectors();
}

TEST_CASE("CRC-32C: both ways and the bit-at-a-time definition agree at every length and alignment") {
  Restore restore;
  std::vector<unsigned char> data(70000 + 16);
  Random random;
  for (unsigned char& b : data) b = static_cast<unsigned char>(random.next() >> 56);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 300; n++) lengths.push_back(n);
  for (int i = 0; i < 200; i++) lengths.push_back(301 + random.next() % 5000);
  lengths.push_back(65536);
  lengths.push_back(65536 + 7);
  lengths.push_back(70000);
  size_t checked = 0;
  for (size_t offset = 0; offset < 16; offset++) {
    for (size_t n : lengths) {
      const unsigned char* p = data.data() + offset;
      const uint32_t expected = crc32c_bitwise(p, n);
      crc32c_use_hardware(false);
      const uint32_t tables = crc32c(0, p, n);
      crc32c_use_hardware(true);
      const uint32_t in_use = crc32c(0, p, n);
      const size_t part = static_cast<size_t>(random.next() % (n + 1));
      const uint32_t continued = crc32c(crc32c(0, p, part), p + part, n - part);
      if (tables != expected || in_use != expected || continued != expected) {
        CAPTURE(offset);
        CAPTURE(n);
        CAPTURE(part);
        CHECK(tables == expected);
        CHECK(in_use == expected);
        CHECK(continued == expected);
      }
      checked++;
    }
  }
  MESSAGE("tables and " << implementation() << " matched the definition on " << checked
                        << " inputs of lengths 0 to 70000 at offsets 0 to 15");
}

#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
TEST_CASE("CRC-32C on a CPU whose hwcaps lack CRC32: not detected, and the tables are used") {
  // Zero hwcap words stand for such a CPU: qemu-aarch64 has no CPU model without the
  // instructions (under qemu-arm, -cpu cortex-a15 is a real one and the first case shows it).
  Restore restore;
  CHECK_FALSE(crc32c_detect_from_hwcap(0, 0));
  CHECK_FALSE(crc32c_hardware_available());
  CHECK_FALSE(crc32c_use_hardware(true));
  CHECK(implementation() == "tables");
  MESSAGE("with hwcaps of a CPU without CRC32 the implementation is " << implementation());
  check_vectors();
}
#endif
