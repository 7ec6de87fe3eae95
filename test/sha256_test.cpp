// Checks sha256.cpp against published FIPS vectors and digests computed with an
// independent tool (Python hashlib, cross-checked with coreutils sha256sum), with the SHA
// instructions (x86 SHA extensions, ARMv8 SHA-256) and with the portable code.
//
// Set EXPECT_SHA256_IMPLEMENTATION (e.g. to "armv8-sha2" under `qemu-aarch64 -cpu max`,
// "portable" under `qemu-arm -cpu cortex-a15`) and the first case checks that detection picked
// that path, so that a run on a CPU with the instructions cannot pass by quietly going portable.
#include <doctest/doctest.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

#include "sha256.hpp"

#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
#include <sys/auxv.h>
#endif

namespace {

std::string to_hex(const uint8_t digest[32]) {
  static const char digits[] = "0123456789abcdef";
  std::string hex;
  for (int i = 0; i < 32; ++i) {
    hex += digits[digest[i] >> 4];
    hex += digits[digest[i] & 0x0f];
  }
  return hex;
}

// Hashes `message` by feeding it in pieces whose sizes cycle through `chunks`.
std::string hash_in_chunks(const std::string& message, std::initializer_list<size_t> chunks) {
  Sha256 hasher;
  size_t pos = 0;
  while (pos < message.size()) {
    for (size_t chunk : chunks) {
      if (pos >= message.size()) break;
      const size_t n = chunk < message.size() - pos ? chunk : message.size() - pos;
      hasher.update(message.data() + pos, n);
      pos += n;
    }
  }
  uint8_t digest[32];
  hasher.finish(digest);
  return to_hex(digest);
}

// 'a', 'b', ..., 'z', 'a', ...: not a single repeated byte, so word order and
// byte order mistakes change the digest.
std::string alphabet_message(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char('a' + i % 26);
  return s;
}

// Puts back what detection chose at startup, whatever a case did.
struct Restore {
  ~Restore() {
#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
    sha256_detect_from_hwcap(getauxval(AT_HWCAP), getauxval(AT_HWCAP2));
#endif
    sha256_use_hardware(true);
  }
};

// A std::string, which doctest prints as text (a const char* it prints as a pointer).
std::string implementation() { return sha256_implementation(); }

// Byte i of the long vector; the SHA-256 of its first 100003 bytes is from Python's hashlib.
char long_vector_byte(uint64_t i) { return static_cast<char>(((i * i * 7 + i * 13 + 5) >> 3) & 0xFF); }
const char* const kLongVectorDigest =
    "76f71edcad7721baf424e1b72194bb8054af2ec51aeb7f1046a0f77dc6ebe55f";

// The vectors of the cases below, a long input at every alignment modulo 16, and the long vector
// fed in uneven chunks, with whichever block function is in use.
void check_vectors() {
  const std::string in_use = implementation();
  CAPTURE(in_use);
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_hex(std::string(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  CHECK(sha256_hex(alphabet_message(119)) ==
        "faef67da856d6fd9c8d12f9ed0a4fefd3cf0ce085ab43e2907418d457e3c354b");
  CHECK(sha256_hex(alphabet_message(128)) ==
        "6c05be2c4268843ae47e68e611277ce62c02153f2f4d2e1e2a1a4b44f766cf74");
  std::string buffer(100003 + 16, '\0');
  for (size_t offset = 0; offset < 16; ++offset) {
    CAPTURE(offset);
    for (uint64_t i = 0; i < 100003; ++i) buffer[offset + i] = long_vector_byte(i);
    // Hashed in place from buffer + offset: whole blocks are not copied to an aligned buffer first.
    CHECK(sha256_hex(std::string_view(buffer.data() + offset, 100003)) == kLongVectorDigest);
  }
  CHECK(hash_in_chunks(std::string(buffer.data() + 15, 100003),
                       {1, 63, 64, 65, 7, 1000, 3, 4096, 127, 129}) == kLongVectorDigest);
}

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

TEST_CASE("SHA-256: the implementation detection chose") {
  const std::string available =
      sha256_hardware_available() ? " (instructions available)" : " (no instructions here)";
  MESSAGE("sha256 implementation in use: " << implementation() << available);
  if (!sha256_hardware_available()) CHECK(implementation() == "portable");
  if (const char* expected = std::getenv("EXPECT_SHA256_IMPLEMENTATION")) {
    CHECK(implementation() == expected);
  }
}

TEST_CASE("FIPS 180-2 vector: empty message") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("FIPS 180-2 vector: abc") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("FIPS 180-2 vector: 448-bit message") {
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("FIPS 180-2 vector: 896-bit message") {
  CHECK(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
                   "lmnopqrsmnopqrstnopqrstu") ==
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST_CASE("FIPS 180-2 vector: one million 'a', at once and in uneven chunks") {
  const std::string million(1000000, 'a');
  const char* expected = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  CHECK(sha256_hex(million) == expected);
  CHECK(hash_in_chunks(million, {1, 63, 64, 65, 7, 1000, 3, 4096, 127, 129}) == expected);
}

TEST_CASE("padding edges: lengths around 56 and 64 bytes modulo 64") {
  struct Case {
    size_t length;
    const char* hex;
  };
  const Case cases[] = {
      {55, "595615dbe4f0f407ae397d08b4c2cb870cb9b0e11937416f950c5160acf9c005"},
      {56, "784f623b787495078e93ff28a25b581df0584055a7e71d8cd90c454716b92f51"},
      {57, "808f0738aa4401bdee842e5a15a7baad5809f976d8eb6f9bd2683cebd2e8d671"},
      {63, "5ca3e1ef5207490eac01a795e5cc94d59582a5118bf9534665c8668d87aa647c"},
      {64, "2fcd5a0d60e4c941381fcc4e00a4bf8be422c3ddfafb93c809e8d1e2bfffae8e"},
      {65, "1b3cd1877ab2f2f19f7be001722554f336cb799df0329de0bb4c118dc6abc06d"},
      {119, "faef67da856d6fd9c8d12f9ed0a4fefd3cf0ce085ab43e2907418d457e3c354b"},
      {120, "c9512b08619c19fbb503c7da6b46ef20301e5f7a7a5f43989182398536f5c5c8"},
      {127, "1b9907986f18ddc2b37e18be502d82d69d6e18bb9dff9e16f2aceea7d88cb933"},
      {128, "6c05be2c4268843ae47e68e611277ce62c02153f2f4d2e1e2a1a4b44f766cf74"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.length);
    const std::string message = alphabet_message(c.length);
    CHECK(sha256_hex(message) == c.hex);
    CHECK(hash_in_chunks(message, {1}) == c.hex);
  }
}

TEST_CASE("incremental update equals one-shot for every split point") {
  const std::string message = alphabet_message(200);
  const std::string one_shot = sha256_hex(message);
  for (size_t split = 0; split <= message.size(); ++split) {
    CAPTURE(split);
    Sha256 hasher;
    hasher.update(message.data(), split);
    hasher.update(message.data() + split, message.size() - split);
    uint8_t digest[32];
    hasher.finish(digest);
    CHECK(to_hex(digest) == one_shot);
  }
}

TEST_CASE("update with zero bytes changes nothing") {
  Sha256 hasher;
  hasher.update(nullptr, 0);
  hasher.update("ab", 2);
  hasher.update(nullptr, 0);
  hasher.update("c", 1);
  uint8_t digest[32];
  hasher.finish(digest);
  CHECK(to_hex(digest) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("sha256_hex is 64 lowercase hex digits") {
  // A digest with many letter digits, so uppercase output would show.
  const std::string hex = sha256_hex("abc");
  CHECK(hex.size() == 64);
  for (char ch : hex) {
    CAPTURE(ch);
    CHECK(std::isxdigit(static_cast<unsigned char>(ch)));
    CHECK_FALSE(std::isupper(static_cast<unsigned char>(ch)));
  }
}

TEST_CASE("the SHA instructions and the portable code both pass the vectors") {
  // Whichever block function the CPU gets, the other one is checked here too: the cases
  // above ran with the one in use.
  Restore restore;
  CHECK_FALSE(sha256_use_hardware(false));
  CHECK(implementation() == "portable");
  check_vectors();
  if (!sha256_hardware_available()) {
    CHECK_FALSE(sha256_use_hardware(true));
    CHECK(implementation() == "portable");
    MESSAGE("no SHA-256 instructions here: only the portable code was checked");
    return;
  }
  CHECK(sha256_use_hardware(true));
  CHECK(implementation() != "portable");
  check_vectors();
  MESSAGE("the vectors passed with " << implementation() << " and with portable");
}

TEST_CASE("the SHA instructions and the portable code agree at many lengths and alignments") {
  Restore restore;
  std::string data(20000 + 16, '\0');
  Random random;
  for (char& b : data) b = static_cast<char>(random.next() >> 56);
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 300; ++n) lengths.push_back(n);
  for (int i = 0; i < 60; ++i) lengths.push_back(301 + random.next() % 20000);
  lengths.push_back(20000);
  size_t checked = 0;
  for (size_t offset = 0; offset < 16; ++offset) {
    for (size_t n : lengths) {
      const std::string_view message(data.data() + offset, n);
      sha256_use_hardware(false);
      const std::string portable = sha256_hex(message);
      sha256_use_hardware(true);
      const std::string in_use = sha256_hex(message);
      // Fed in two pieces, so that whole blocks also start at an odd address after a buffered part.
      const size_t part = static_cast<size_t>(random.next() % (n + 1));
      Sha256 hasher;
      hasher.update(message.data(), part);
      hasher.update(message.data() + part, n - part);
      uint8_t digest[32];
      hasher.finish(digest);
      const std::string split = to_hex(digest);
      if (in_use != portable || split != portable) {
        CAPTURE(offset);
        CAPTURE(n);
        CAPTURE(part);
        CHECK(in_use == portable);
        CHECK(split == portable);
      }
      ++checked;
    }
  }
  MESSAGE("portable and " << implementation() << " agreed on " << checked
                          << " messages of lengths 0 to 20000 at offsets 0 to 15");
}

#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
TEST_CASE("SHA-256 on a CPU whose hwcaps lack SHA2: not detected, and the portable code is used") {
  // Zero hwcap words stand for such a CPU: qemu-aarch64 has no CPU model without the
  // instructions (under qemu-arm, -cpu cortex-a15 is a real one and the first case shows it).
  Restore restore;
  CHECK_FALSE(sha256_detect_from_hwcap(0, 0));
  CHECK_FALSE(sha256_hardware_available());
  CHECK_FALSE(sha256_use_hardware(true));
  CHECK(implementation() == "portable");
  MESSAGE("with hwcaps of a CPU without SHA2 the implementation is " << implementation());
  check_vectors();
}
#endif
