// CRC-32C: see crc32c.hpp.
#include "crc32c.hpp"

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC32C_X86_SSE42 1
#include <cpuid.h>
#include <nmmintrin.h>
#endif

namespace {

constexpr uint32_t kPolynomial = 0x82F63B78;  // 0x1EDC6F41, bits reversed

// Slicing-by-8 tables: kTable[0] is the byte-at-a-time table; kTable[k][b] is the CRC of byte b
// followed by k zero bytes, so that eight bytes are folded in with eight lookups.
struct Tables {
  uint32_t t[8][256];
  constexpr Tables() : t() {
    for (uint32_t b = 0; b < 256; b++) {
      uint32_t c = b;
      for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ kPolynomial : c >> 1;
      t[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++)
      for (int k = 1; k < 8; k++) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFF];
  }
};
constexpr Tables kTables;

uint32_t crc32c_tables(uint32_t crc, const unsigned char* p, size_t n) {
  uint32_t c = ~crc;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = (c >> 8) ^ kTables.t[0][(c ^ *p++) & 0xFF];
    n--;
  }
  while (n >= 8) {
    uint32_t lo, hi;  // little-endian words: the reflected CRC takes bytes low first
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    lo = __builtin_bswap32(lo);
    hi = __builtin_bswap32(hi);
#endif
    lo ^= c;
    c = kTables.t[7][lo & 0xFF] ^ kTables.t[6][(lo >> 8) & 0xFF] ^ kTables.t[5][(lo >> 16) & 0xFF] ^
        kTables.t[4][lo >> 24] ^ kTables.t[3][hi & 0xFF] ^ kTables.t[2][(hi >> 8) & 0xFF] ^
        kTables.t[1][(hi >> 16) & 0xFF] ^ kTables.t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ kTables.t[0][(c ^ *p++) & 0xFF];
  return ~c;
}

#ifdef CRC32C_X86_SSE42
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(uint32_t crc, const unsigned char* p,
                                                         size_t n) {
  uint64_t c = ~crc;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
    n--;
  }
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = _mm_crc32_u8(static_cast<uint32_t>(c), *p++);
  return ~static_cast<uint32_t>(c);
}

bool cpu_has_sse42() {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 20));  // CPUID.1:ECX.SSE4_2
}
#else
bool cpu_has_sse42() { return false; }
#endif

using CrcFn = uint32_t (*)(uint32_t, const unsigned char*, size_t);

CrcFn choose(bool hardware) {
#ifdef CRC32C_X86_SSE42
  if (hardware && cpu_has_sse42()) return crc32c_sse42;
#endif
  (void)hardware;
  return crc32c_tables;
}

CrcFn g_crc = choose(true);

}  // namespace

uint32_t crc32c(uint32_t crc, const void* data, size_t n) {
  return g_crc(crc, static_cast<const unsigned char*>(data), n);
}

bool crc32c_hardware_available() { return cpu_has_sse42(); }

bool crc32c_use_hardware(bool use) {
  g_crc = choose(use);
  return g_crc != crc32c_tables;
}
