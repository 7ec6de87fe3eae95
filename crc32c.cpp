// CRC-32C: see crc32c.hpp.
#include "crc32c.hpp"

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC32C_X86_SSE42 1
#include <cpuid.h>
#include <nmmintrin.h>
#endif

// The ARMv8 CRC32 instructions (optional in ARMv8.0, so detected at run time). GCC only: the
// function-level target strings below are GCC's spelling, and a Clang build takes the tables.
// Little-endian only: the word loads below feed bytes to the instruction lowest address first,
// which is the reflected CRC's order only when the low byte of a word is the first in memory.
#if defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#if defined(__aarch64__)
#define CRC32C_ARM64 1
#include <arm_acle.h>
#include <sys/auxv.h>
// 32-bit ARM from ARMv6 up: Raspberry Pi OS's 32-bit baseline is ARMv6 with VFP, and it runs on
// the ARMv8 cores of the Pi 3 and 4, which have the instructions.
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 6
#define CRC32C_ARM32 1
#include <sys/auxv.h>
#endif
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
#endif

#ifdef CRC32C_ARM64
// CRC32CX folds in eight bytes, the low byte first (the reflected order), like SSE4.2's CRC32 r64.
__attribute__((target("+crc"))) uint32_t crc32c_armv8(uint32_t crc, const unsigned char* p,
                                                      size_t n) {
  uint32_t c = ~crc;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    c = __crc32cb(c, *p++);
    n--;
  }
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = __crc32cd(c, word);
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = __crc32cb(c, *p++);
  return ~c;
}

// Linux's AT_HWCAP bit for the CRC32 instructions on AArch64 (arch/arm64/include/uapi/asm/hwcap.h).
constexpr unsigned long kHwcapCrc32 = 1ul << 7;
bool hwcap_has_crc32(unsigned long hwcap, unsigned long) { return hwcap & kHwcapCrc32; }
#endif

#ifdef CRC32C_ARM32
// AArch32 has only the 32-, 16- and 8-bit forms (CRC32CW, CRC32CH, CRC32CB). The builtins are
// called directly because GCC 12's <arm_acle.h> declares __crc32cw and the others only when the
// whole translation unit is built for +crc, and this one stays at the baseline (armv7-a for
// Debian armhf, armv6 for Raspberry Pi OS) so that the same binary runs on older CPUs; the target
// attribute lets this one function use the instructions. Hard-float builds name an FPU (+simd,
// ARMv8's) because GCC refuses an architecture without one under -mfloat-abi=hard.
#ifdef __ARM_FP
#define CRC32C_ARM32_TARGET "arch=armv8-a+crc+simd"
#else
#define CRC32C_ARM32_TARGET "arch=armv8-a+crc"
#endif
__attribute__((target(CRC32C_ARM32_TARGET))) uint32_t crc32c_armv8(uint32_t crc,
                                                                   const unsigned char* p, size_t n) {
  uint32_t c = ~crc;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 3) != 0) {
    c = __builtin_arm_crc32cb(c, *p++);
    n--;
  }
  while (n >= 8) {  // two words a turn: half the loop overhead of one
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    c = __builtin_arm_crc32cw(__builtin_arm_crc32cw(c, lo), hi);
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = __builtin_arm_crc32cb(c, *p++);
  return ~c;
}

// Linux reports the ARMv8 CRC32 instructions to 32-bit programs in AT_HWCAP2
// (arch/arm/include/uapi/asm/hwcap.h: HWCAP2_CRC32).
constexpr unsigned long kHwcap2Crc32 = 1ul << 4;
bool hwcap_has_crc32(unsigned long, unsigned long hwcap2) { return hwcap2 & kHwcap2Crc32; }
#endif

using CrcFn = uint32_t (*)(uint32_t, const unsigned char*, size_t);

// The fastest implementation this CPU runs, or the tables; `name` is what
// crc32c_implementation says.
struct Implementation {
  CrcFn fn;
  const char* name;
};
constexpr Implementation kTablesImplementation{crc32c_tables, "tables"};

#if defined(CRC32C_ARM64) || defined(CRC32C_ARM32)
bool g_hardware = hwcap_has_crc32(getauxval(AT_HWCAP), getauxval(AT_HWCAP2));
constexpr Implementation kHardwareImplementation{crc32c_armv8, "armv8-crc32"};
#elif defined(CRC32C_X86_SSE42)
bool g_hardware = cpu_has_sse42();
constexpr Implementation kHardwareImplementation{crc32c_sse42, "sse4.2"};
#else
bool g_hardware = false;
constexpr Implementation kHardwareImplementation = kTablesImplementation;
#endif

Implementation choose(bool hardware) {
  return hardware && g_hardware ? kHardwareImplementation : kTablesImplementation;
}

Implementation g_crc = choose(true);

}  // namespace

uint32_t crc32c(uint32_t crc, const void* data, size_t n) {
  return g_crc.fn(crc, static_cast<const unsigned char*>(data), n);
}

const char* crc32c_implementation() { return g_crc.name; }

bool crc32c_hardware_available() { return g_hardware; }

bool crc32c_use_hardware(bool use) {
  g_crc = choose(use);
  return g_crc.fn != crc32c_tables;
}

#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
bool crc32c_detect_from_hwcap(unsigned long hwcap, unsigned long hwcap2) {
#if defined(CRC32C_ARM64) || defined(CRC32C_ARM32)
  g_hardware = hwcap_has_crc32(hwcap, hwcap2);
#else
  (void)hwcap;
  (void)hwcap2;
#endif
  g_crc = choose(true);
  return g_hardware;
}
#endif
