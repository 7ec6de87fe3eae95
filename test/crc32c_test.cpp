// CRC-32C against published check values (RFC 3720, B.4; the "123456789" check), both ways.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "crc32c.hpp"

namespace {
void check_vectors() {
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
}
}  // namespace

TEST_CASE("CRC-32C check values, with the instruction and with the tables") {
  struct Restore {
    ~Restore() { crc32c_use_hardware(true); }
  } restore;
  CHECK_FALSE(crc32c_use_hardware(false));
  check_vectors();
  if (!crc32c_hardware_available()) {
    MESSAGE("no SSE4.2 here: only the tables were checked");
    return;
  }
  CHECK(crc32c_use_hardware(true));
  check_vectors();
}

TEST_CASE("CRC-32C: both ways agree at every length and alignment, and continuing equals one pass") {
  struct Restore {
    ~Restore() { crc32c_use_hardware(true); }
  } restore;
  std::string data;
  for (int i = 0; i < 1000; i++) data.push_back(static_cast<char>((i * 167 + 13) & 0xFF));
  for (size_t offset = 0; offset < 8; offset++) {
    for (size_t n = 0; n + offset <= 300; n++) {
      crc32c_use_hardware(false);
      const uint32_t tables = crc32c(0, data.data() + offset, n);
      crc32c_use_hardware(true);
      CHECK(crc32c(0, data.data() + offset, n) == tables);
      const size_t half = n / 3;
      CHECK(crc32c(crc32c(0, data.data() + offset, half), data.data() + offset + half, n - half) == tables);
    }
  }
}
