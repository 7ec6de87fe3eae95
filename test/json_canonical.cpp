// For the differential test against Node.js (test/interop/differential.test.js): reads inputs,
// one per line in hex, and answers each on its own line with "1 <hex of the canonical form>" if
// json.hpp parses it, or "0" if it refuses it. Hex keeps any byte, newlines included, intact.
#include <cstdio>
#include <iostream>
#include <string>

#include "json.hpp"

namespace {

int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

int main() {
  static const char kHex[] = "0123456789abcdef";
  std::ios::sync_with_stdio(false);
  json::Document d;
  std::string line, input, canonical, out;
  while (std::getline(std::cin, line)) {
    input.clear();
    for (size_t i = 0; i + 1 < line.size(); i += 2) {
      const int hi = nibble(line[i]), lo = nibble(line[i + 1]);
      if (hi < 0 || lo < 0) {
        std::fprintf(stderr, "json_canonical: not lowercase hex: %s\n", line.c_str());
        return 2;
      }
      input.push_back(static_cast<char>(hi << 4 | lo));
    }
    out.clear();
    if (d.parse(input)) {
      canonical.clear();
      d.write_canonical(0, &canonical);
      out = "1 ";
      for (unsigned char c : canonical) {
        out += kHex[c >> 4];
        out += kHex[c & 0xF];
      }
    } else {
      out = "0";
    }
    out += '\n';
    std::cout << out;
  }
  return std::cout.good() ? 0 : 1;
}
