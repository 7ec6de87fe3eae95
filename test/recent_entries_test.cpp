// Unit tests of RecentEntries (recent_entries.hpp): what it keeps, and what that costs.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "recent_entries.hpp"

namespace {
std::string entry_bytes(uint64_t index, size_t size) {
  std::string s = std::to_string(index) + ":";
  while (s.size() < size) s += static_cast<char>('a' + index % 26);
  s.resize(size);
  return s;
}
}  // namespace

TEST_CASE("RecentEntries: a million tiny entries cost no more than the budget (slots count too)") {
  const size_t budget = 8 * 1024 * 1024;
  RecentEntries recent(budget);
  for (uint64_t i = 1; i <= 1000000; i++) recent.add(i, "[]");
  CHECK(recent.memory() <= budget);
  // One slot is 16 bytes: a quarter of the budget holds 131,072 of them, and the oldest went.
  CHECK(recent.count() == budget / 4 / 16);
  std::string_view bytes;
  REQUIRE(recent.find(1000000, &bytes));
  CHECK(bytes == "[]");
  CHECK(recent.find(1000000 - recent.count() + 1, &bytes));
  CHECK_FALSE(recent.find(1000000 - recent.count(), &bytes));
  CHECK_FALSE(recent.find(1000001, &bytes));
}

TEST_CASE("RecentEntries: entries of every size read back whole while their bytes fit; older ones make room") {
  const size_t budget = 64 * 1024;  // a 48 KiB ring
  RecentEntries recent(budget);
  std::vector<size_t> sizes;
  for (uint64_t i = 1; i <= 5000; i++) {
    size_t size = (i * 7919) % 3000 + 1;
    sizes.push_back(size);
    recent.add(i, entry_bytes(i, size));
    CHECK(recent.memory() <= budget);
  }
  // Everything still kept is exactly what was added (no entry wraps around the ring).
  REQUIRE(recent.count() > 10);
  size_t kept_bytes = 0;
  for (uint64_t i = recent.first(); i <= 5000; i++) {
    std::string_view bytes;
    REQUIRE(recent.find(i, &bytes));
    CHECK(bytes == entry_bytes(i, sizes[i - 1]));
    kept_bytes += bytes.size();
  }
  CHECK(kept_bytes <= budget - budget / 4);
  CHECK(kept_bytes > (budget - budget / 4) / 2);  // the ring is used, not left mostly empty
}

TEST_CASE("RecentEntries: an entry larger than the ring is not kept, nor anything older; later ones are") {
  RecentEntries recent(4096);  // a 3 KiB ring
  recent.add(1, "[1]");
  recent.add(2, std::string(5000, 'x'));
  std::string_view bytes;
  CHECK_FALSE(recent.find(1, &bytes));
  CHECK_FALSE(recent.find(2, &bytes));
  recent.add(3, "[3]");
  REQUIRE(recent.find(3, &bytes));
  CHECK(bytes == "[3]");
  CHECK(recent.first() == 3);
}

TEST_CASE("RecentEntries: nothing is allocated before the first entry") {
  RecentEntries recent(8 * 1024 * 1024);
  CHECK(recent.memory() == 0);
  std::string_view bytes;
  CHECK_FALSE(recent.find(1, &bytes));
}
