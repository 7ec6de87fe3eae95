// SHA-256 per FIPS 180-4. Every blob is hashed on each write and each read from
// disk, so the block function is written for speed: with the x86 SHA extensions or the ARMv8
// SHA-256 instructions where the CPU has them (checked once, at startup), else with plain
// portable C++.
#include "sha256.hpp"

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SHA256_X86_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

// The ARMv8 Cryptography Extension's SHA-256 instructions (optional, so detected at run time).
// GCC only: the function-level target strings below are GCC's spelling, and a Clang build takes
// the portable code. Little-endian only: the byte reversal of message words below and the
// lane order of vld1q_u32 on the state are written for it (and no big-endian ARM is a target).
#if defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#if defined(__aarch64__)
#define SHA256_ARM 1
// GCC 12 has no "+sha2" for AArch64 functions; "+crypto" is AES and SHA-1/SHA-256 together.
#define SHA256_ARM_TARGET "+crypto"
#elif defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 6 && defined(__ARM_FP)
#define SHA256_ARM 1
// An FPU setting rather than an architecture: it enables NEON and the crypto instructions for
// this function only, so the file (and the binary) stays at the baseline (armv7-a with VFPv3-D16
// for Debian armhf, ARMv6 with VFP for Raspberry Pi OS) and runs on older CPUs. <arm_neon.h> of
// GCC 12 declares the intrinsics under the same setting, for any baseline with an FPU (hence
// __ARM_FP: soft-float builds go without).
#define SHA256_ARM_TARGET "fpu=crypto-neon-fp-armv8"
#endif
#ifdef SHA256_ARM
#include <arm_neon.h>
#include <sys/auxv.h>
#endif
#endif

namespace {

// FIPS 180-4 section 4.2.2: first 32 bits of the fractional parts of the cube
// roots of the first 64 primes.
constexpr uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

// Written so that compilers recognise a rotate instruction (count is never 0).
inline uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

// Byte-wise assembly is alignment- and endian-independent; GCC and Clang turn
// it into a single load plus bswap.
inline uint32_t load_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

inline void store_be32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}

inline uint32_t big_sigma0(uint32_t x) { return rotr(x, 2) ^ rotr(x, 13) ^ rotr(x, 22); }
inline uint32_t big_sigma1(uint32_t x) { return rotr(x, 6) ^ rotr(x, 11) ^ rotr(x, 25); }
inline uint32_t small_sigma0(uint32_t x) { return rotr(x, 7) ^ rotr(x, 18) ^ (x >> 3); }
inline uint32_t small_sigma1(uint32_t x) { return rotr(x, 17) ^ rotr(x, 19) ^ (x >> 10); }
// Same truth tables as FIPS Ch and Maj, one operation fewer each.
inline uint32_t choose(uint32_t e, uint32_t f, uint32_t g) { return g ^ (e & (f ^ g)); }
inline uint32_t majority(uint32_t a, uint32_t b, uint32_t c) { return (a & b) | (c & (a | b)); }

// One round without shuffling eight variables: callers rotate the argument
// order instead, so only d and h are written.
inline void round_step(uint32_t a, uint32_t b, uint32_t c, uint32_t& d, uint32_t e, uint32_t f,
                       uint32_t g, uint32_t& h, uint32_t k_plus_w) {
  const uint32_t t1 = h + big_sigma1(e) + choose(e, f, g) + k_plus_w;
  d += t1;
  h = t1 + big_sigma0(a) + majority(a, b, c);
}

constexpr char kHexDigits[] = "0123456789abcdef";

// The portable block function: `blocks` 64-byte blocks at p.
void compress_portable(uint32_t state[8], const uint8_t* p, size_t blocks) {
  for (; blocks > 0; --blocks, p += 64) {
    const uint8_t* block = p;
    // A 16-word ring keeps the schedule in registers/L1 rather than expanding all 64 words up front.
    uint32_t w[16];
    for (int i = 0; i < 16; ++i) w[i] = load_be32(block + 4 * i);

    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];

    // Eight rounds per iteration bring the variable naming back to where it started.
    for (int i = 0; i < 64; i += 8) {
      if (i >= 16) {
        for (int j = 0; j < 8; ++j) {
          const int t = i + j;
          w[t & 15] += small_sigma1(w[(t - 2) & 15]) + w[(t - 7) & 15] + small_sigma0(w[(t - 15) & 15]);
        }
      }
      round_step(a, b, c, d, e, f, g, h, kRound[i + 0] + w[(i + 0) & 15]);
      round_step(h, a, b, c, d, e, f, g, kRound[i + 1] + w[(i + 1) & 15]);
      round_step(g, h, a, b, c, d, e, f, kRound[i + 2] + w[(i + 2) & 15]);
      round_step(f, g, h, a, b, c, d, e, kRound[i + 3] + w[(i + 3) & 15]);
      round_step(e, f, g, h, a, b, c, d, kRound[i + 4] + w[(i + 4) & 15]);
      round_step(d, e, f, g, h, a, b, c, kRound[i + 5] + w[(i + 5) & 15]);
      round_step(c, d, e, f, g, h, a, b, kRound[i + 6] + w[(i + 6) & 15]);
      round_step(b, c, d, e, f, g, h, a, kRound[i + 7] + w[(i + 7) & 15]);
    }

    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
  }
}

#ifdef SHA256_X86_SHA_NI
// The block function with the SHA extensions (Intel SDM: SHA256RNDS2 does two rounds on the
// state held as {A,B,E,F} and {C,D,G,H}, from two W+K words in the low half of its third
// operand; SHA256MSG1 and SHA256MSG2 compute the message schedule four words at a time).
__attribute__((target("sha,sse4.1"))) void compress_sha_ni(uint32_t state[8], const uint8_t* p,
                                                           size_t blocks) {
  // Words are big-endian in the message: reverse the bytes of each 32-bit lane.
  const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  // state[0..7] = a..h. Lanes are listed from lane 0 (the low 32 bits) up.
  __m128i abcd = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state));      // a b c d
  __m128i efgh = _mm_loadu_si128(reinterpret_cast<const __m128i*>(state + 4));  // e f g h
  abcd = _mm_shuffle_epi32(abcd, 0xB1);                  // b a d c
  efgh = _mm_shuffle_epi32(efgh, 0x1B);                  // h g f e
  __m128i abef = _mm_alignr_epi8(abcd, efgh, 8);         // f e b a: A in the top lane
  __m128i cdgh = _mm_blend_epi16(efgh, abcd, 0xF0);      // h g d c: C in the top lane
  for (; blocks > 0; --blocks, p += 64) {
    const __m128i abef_start = abef, cdgh_start = cdgh;
    __m128i w[4];  // the last 16 schedule words, four to a register, oldest first
    for (int i = 0; i < 4; ++i)
      w[i] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * i)), byte_swap);
    for (int i = 0; i < 16; ++i) {  // four rounds each
      __m128i words;
      if (i < 4) {
        words = w[i];
      } else {
        // W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], for t = 4i .. 4i+3.
        __m128i t = _mm_sha256msg1_epu32(w[0], w[1]);          // W[t-16] + s0(W[t-15])
        t = _mm_add_epi32(t, _mm_alignr_epi8(w[3], w[2], 4));  // + W[t-7]
        words = _mm_sha256msg2_epu32(t, w[3]);                 // + s1(W[t-2])
        w[0] = w[1];
        w[1] = w[2];
        w[2] = w[3];
        w[3] = words;
      }
      __m128i wk = _mm_add_epi32(
          words, _mm_loadu_si128(reinterpret_cast<const __m128i*>(kRound + 4 * i)));
      cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);  // rounds 4i, 4i+1: cdgh is the new abef
      wk = _mm_shuffle_epi32(wk, 0x0E);              // the other two W+K words down
      abef = _mm_sha256rnds2_epu32(abef, cdgh, wk);  // rounds 4i+2, 4i+3
    }
    abef = _mm_add_epi32(abef, abef_start);
    cdgh = _mm_add_epi32(cdgh, cdgh_start);
  }
  __m128i feba = _mm_shuffle_epi32(abef, 0x1B);   // a b e f
  __m128i ghcd = _mm_shuffle_epi32(cdgh, 0xB1);   // g h c d
  abcd = _mm_blend_epi16(feba, ghcd, 0xF0);       // a b c d
  efgh = _mm_alignr_epi8(ghcd, feba, 8);          // e f g h
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state), abcd);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(state + 4), efgh);
}

bool cpu_has_sha_ni() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool ssse3 = c & (1u << 9), sse41 = c & (1u << 19);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return ssse3 && sse41 && (b & (1u << 29));  // CPUID.7.0:EBX.SHA
}
#endif

#ifdef SHA256_ARM
// Four rounds with the ARMv8 SHA-256 instructions (Arm ARM: SHA256H and SHA256H2 each do four
// rounds, from four W+K words, on the state held as {a,b,c,d} and {e,f,g,h} in lane order;
// SHA256H gives the new abcd and SHA256H2, which needs the abcd from before, the new efgh).
// `w` holds W[t..t+3] and `k` points at K[t].
__attribute__((target(SHA256_ARM_TARGET), always_inline)) inline void four_rounds_armv8(
    uint32x4_t& abcd, uint32x4_t& efgh, uint32x4_t w, const uint32_t* k) {
  const uint32x4_t wk = vaddq_u32(w, vld1q_u32(k));
  const uint32x4_t abcd_before = abcd;
  abcd = vsha256hq_u32(abcd, efgh, wk);
  efgh = vsha256h2q_u32(efgh, abcd_before, wk);
}

// W[t..t+3] from the sixteen words before, held oldest first in w0..w3: SHA256SU0 adds
// s0(W[t-15]) to W[t-16], SHA256SU1 adds W[t-7] and s1(W[t-2]) (the latter also for the words
// it computes itself).
__attribute__((target(SHA256_ARM_TARGET), always_inline)) inline uint32x4_t schedule_armv8(
    uint32x4_t w0, uint32x4_t w1, uint32x4_t w2, uint32x4_t w3) {
  return vsha256su1q_u32(vsha256su0q_u32(w0, w1), w2, w3);
}

// The block function with the ARMv8 SHA-256 instructions; the same intrinsics exist on AArch64
// and AArch32. The sixteen schedule words stay in four registers that take turns as the oldest,
// so that nothing goes through memory between rounds.
__attribute__((target(SHA256_ARM_TARGET))) void compress_armv8(uint32_t state[8], const uint8_t* p,
                                                               size_t blocks) {
  uint32x4_t abcd = vld1q_u32(state);
  uint32x4_t efgh = vld1q_u32(state + 4);
  for (; blocks > 0; --blocks, p += 64) {
    const uint32x4_t abcd_start = abcd, efgh_start = efgh;
    // Words are big-endian in the message: reverse the bytes of each 32-bit lane. vld1q_u8 has
    // no alignment requirement, so blocks are hashed wherever the caller's bytes are.
    uint32x4_t w0 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(p)));
    uint32x4_t w1 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(p + 16)));
    uint32x4_t w2 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(p + 32)));
    uint32x4_t w3 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(p + 48)));
    four_rounds_armv8(abcd, efgh, w0, kRound);
    four_rounds_armv8(abcd, efgh, w1, kRound + 4);
    four_rounds_armv8(abcd, efgh, w2, kRound + 8);
    four_rounds_armv8(abcd, efgh, w3, kRound + 12);
    for (int t = 16; t < 64; t += 16) {
      w0 = schedule_armv8(w0, w1, w2, w3);
      four_rounds_armv8(abcd, efgh, w0, kRound + t);
      w1 = schedule_armv8(w1, w2, w3, w0);
      four_rounds_armv8(abcd, efgh, w1, kRound + t + 4);
      w2 = schedule_armv8(w2, w3, w0, w1);
      four_rounds_armv8(abcd, efgh, w2, kRound + t + 8);
      w3 = schedule_armv8(w3, w0, w1, w2);
      four_rounds_armv8(abcd, efgh, w3, kRound + t + 12);
    }
    abcd = vaddq_u32(abcd, abcd_start);
    efgh = vaddq_u32(efgh, efgh_start);
  }
  vst1q_u32(state, abcd);
  vst1q_u32(state + 4, efgh);
}

// Linux reports the SHA-256 instructions in AT_HWCAP to AArch64 programs
// (arch/arm64/include/uapi/asm/hwcap.h: HWCAP_SHA2) and in AT_HWCAP2 to 32-bit ones
// (arch/arm/include/uapi/asm/hwcap.h: HWCAP2_SHA2).
bool hwcap_has_sha2(unsigned long hwcap, unsigned long hwcap2) {
#ifdef __aarch64__
  (void)hwcap2;
  return hwcap & (1ul << 6);
#else
  (void)hwcap;
  return hwcap2 & (1ul << 3);
#endif
}
#endif

using CompressFn = void (*)(uint32_t*, const uint8_t*, size_t);

// The fastest block function this CPU runs, or the portable one; `name` is what
// sha256_implementation says.
struct Implementation {
  CompressFn fn;
  const char* name;
};
constexpr Implementation kPortableImplementation{compress_portable, "portable"};

#if defined(SHA256_ARM)
bool g_hardware = hwcap_has_sha2(getauxval(AT_HWCAP), getauxval(AT_HWCAP2));
constexpr Implementation kHardwareImplementation{compress_armv8, "armv8-sha2"};
#elif defined(SHA256_X86_SHA_NI)
bool g_hardware = cpu_has_sha_ni();
constexpr Implementation kHardwareImplementation{compress_sha_ni, "sha-ni"};
#else
bool g_hardware = false;
constexpr Implementation kHardwareImplementation = kPortableImplementation;
#endif

Implementation choose_compress(bool hardware) {
  return hardware && g_hardware ? kHardwareImplementation : kPortableImplementation;
}

Implementation g_compress = choose_compress(true);

}  // namespace

const char* sha256_implementation() { return g_compress.name; }
bool sha256_hardware_available() { return g_hardware; }
bool sha256_use_hardware(bool use) {
  g_compress = choose_compress(use);
  return g_compress.fn != compress_portable;
}

#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
bool sha256_detect_from_hwcap(unsigned long hwcap, unsigned long hwcap2) {
#ifdef SHA256_ARM
  g_hardware = hwcap_has_sha2(hwcap, hwcap2);
#else
  (void)hwcap;
  (void)hwcap2;
#endif
  g_compress = choose_compress(true);
  return g_hardware;
}
#endif

Sha256::Sha256()
    // FIPS 180-4 section 5.3.3: fractional parts of the square roots of the first 8 primes.
    : state_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19} {}

void Sha256::compress(const uint8_t block[64]) { g_compress.fn(state_, block, 1); }

void Sha256::update(const void* data, size_t len) {
  // update(nullptr, 0) is legal for callers, but memcpy from a null pointer is not.
  if (len == 0) return;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  total_len_ += len;

  if (buffered_ > 0) {
    const size_t take = len < 64 - buffered_ ? len : 64 - buffered_;
    std::memcpy(buffer_ + buffered_, p, take);
    buffered_ += take;
    p += take;
    len -= take;
    if (buffered_ < 64) return;
    compress(buffer_);
    buffered_ = 0;
  }

  // Whole blocks are hashed in place: copying them to buffer_ first would cost
  // a second pass over large blobs.
  if (len >= 64) {
    g_compress.fn(state_, p, len / 64);
    p += len / 64 * 64;
    len %= 64;
  }

  if (len > 0) {
    std::memcpy(buffer_, p, len);
    buffered_ = len;
  }
}

void Sha256::finish(uint8_t digest[32]) {
  // The length field counts bits of the message only, so capture it before padding.
  const uint64_t bit_len = total_len_ * 8;

  buffer_[buffered_++] = 0x80;
  // Not enough room for the 8-byte length: pad out this block and start another.
  if (buffered_ > 56) {
    std::memset(buffer_ + buffered_, 0, 64 - buffered_);
    compress(buffer_);
    buffered_ = 0;
  }
  std::memset(buffer_ + buffered_, 0, 56 - buffered_);
  store_be32(buffer_ + 56, uint32_t(bit_len >> 32));
  store_be32(buffer_ + 60, uint32_t(bit_len));
  compress(buffer_);

  for (int i = 0; i < 8; ++i) store_be32(digest + 4 * i, state_[i]);
}

std::string sha256_hex(std::string_view bytes) {
  Sha256 hasher;
  hasher.update(bytes.data(), bytes.size());
  uint8_t digest[32];
  hasher.finish(digest);

  std::string hex(64, '\0');
  for (int i = 0; i < 32; ++i) {
    hex[2 * i] = kHexDigits[digest[i] >> 4];
    hex[2 * i + 1] = kHexDigits[digest[i] & 0x0f];
  }
  return hex;
}
