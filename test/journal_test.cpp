// Unit tests of the journal (journal.hpp): one named test per rule of its format and recovery.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "journal.hpp"
#include "sha256.hpp"
#include "test/support.hpp"

using test_support::file_size;
using test_support::TempDir;

namespace {

constexpr uint64_t kBytes = 256 * 1024;  // two sides of 128 KiB

struct Replayed {
  uint64_t index;
  std::string hash;
  std::string bytes;
  bool operator==(const Replayed& o) const {
    return index == o.index && hash == o.hash && bytes == o.bytes;
  }
};

std::vector<Replayed> replay(const Journal& j, std::vector<std::string>* notes = nullptr) {
  std::vector<Replayed> out;
  Status s = j.replay(
      [&](const Journal::Entry& e) {
        out.push_back({e.index, std::string(e.hash_hex), std::string(e.bytes)});
        return Status::Ok();
      },
      notes);
  REQUIRE_MESSAGE(s.ok(), s.error);
  return out;
}

// Entries i..i+n-1 ({"n":i}), appended as one batch; returns what replay should give for them.
std::vector<Replayed> append(Journal& j, uint64_t first, int n, bool sync = true) {
  std::vector<std::string> bytes, hashes;
  for (int k = 0; k < n; k++) {
    bytes.push_back("{\"n\":" + std::to_string(first + k) + "}");
    hashes.push_back(sha256_hex(bytes.back()));
  }
  std::vector<Journal::Entry> entries;
  std::vector<Replayed> expect;
  for (int k = 0; k < n; k++) {
    entries.push_back({first + k, hashes[k], bytes[k]});
    expect.push_back({first + k, hashes[k], bytes[k]});
  }
  Status s = j.append(entries, sync);
  REQUIRE_MESSAGE(s.ok(), s.error);
  return expect;
}

std::vector<Replayed> operator+(std::vector<Replayed> a, const std::vector<Replayed>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void overwrite(const std::string& path, uint64_t offset, const std::string& bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)) ==
          static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

// A journal opened on `dir`, recovered (nothing expected) and reset: ready for appends.
void open_fresh(Journal& j, const std::string& dir) {
  Status s = j.open(dir, kBytes, Journal::Mode::Create);
  REQUIRE_MESSAGE(s.ok(), s.error);
  CHECK(replay(j).empty());
  s = j.reset();
  REQUIRE_MESSAGE(s.ok(), s.error);
}

}  // namespace

TEST_CASE("journal: created whole at its size, zeros, and records replay in order after a reopen") {
  TempDir dir;
  std::vector<Replayed> expect;
  {
    Journal j;
    open_fresh(j, dir.path());
    CHECK(file_size(dir / "journal") == static_cast<long long>(kBytes));
    CHECK(j.side_capacity() == kBytes / 2 - Journal::kHeaderBytes);
    expect = append(j, 1, 3);
    expect = expect + append(j, 4, 1);
    CHECK(j.used() == 4 * Journal::record_size(7));
  }
  Journal again;
  REQUIRE(again.open(dir.path(), kBytes, Journal::Mode::Create).ok());
  CHECK(replay(again) == expect);
}

TEST_CASE("journal: a torn last record is not replayed, and what came before is") {
  TempDir dir;
  Journal j;
  open_fresh(j, dir.path());
  std::vector<Replayed> keep = append(j, 1, 2);
  const uint64_t torn_at = j.end();
  append(j, 3, 1);
  // The last record lost its last bytes: a crash in the middle of its append.
  overwrite(dir / "journal", torn_at + Journal::record_size(7) - 3, std::string(3, '\0'));
  Journal again;
  REQUIRE(again.open(dir.path(), kBytes, Journal::Mode::Create).ok());
  std::vector<std::string> notes;
  CHECK(replay(again, &notes) == keep);
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find("checksum does not match") != std::string::npos);
}

TEST_CASE("journal: a bad record ends its side; nothing after it replays") {
  TempDir dir;
  Journal j;
  open_fresh(j, dir.path());
  std::vector<Replayed> keep = append(j, 1, 1);
  const uint64_t bad_at = j.end();
  append(j, 2, 3);
  overwrite(dir / "journal", bad_at + Journal::kRecordHeaderBytes + 2, "X");  // one byte flipped
  Journal again;
  REQUIRE(again.open(dir.path(), kBytes, Journal::Mode::Create).ok());
  CHECK(replay(again) == keep);
}

TEST_CASE("journal: after reset nothing replays, and records of an earlier generation never come back") {
  TempDir dir;
  Journal j;
  open_fresh(j, dir.path());
  append(j, 1, 5);
  REQUIRE(j.reset().ok());
  // One short record where five were: the old records after it are whole and have valid
  // checksums, but belong to the side's earlier generation.
  std::vector<Replayed> expect = append(j, 6, 1);
  Journal again;
  REQUIRE(again.open(dir.path(), kBytes, Journal::Mode::Create).ok());
  CHECK(replay(again) == expect);
}

TEST_CASE("journal: both sides replay, the older generation first; a retired side replays nothing") {
  TempDir dir;
  Journal j;
  open_fresh(j, dir.path());
  std::vector<Replayed> first = append(j, 1, 2);
  REQUIRE(j.can_switch());
  const int left = j.switch_sides();
  CHECK_FALSE(j.can_switch());  // the side left behind is not free until retired
  std::vector<Replayed> second = append(j, 3, 2);
  {
    Journal crashed;  // a crash before the checkpoint finished: both sides hold records
    REQUIRE(crashed.open(dir.path(), kBytes, Journal::Mode::Create).ok());
    CHECK(replay(crashed) == first + second);
  }
  const uint64_t generation = j.next_generation();
  REQUIRE(j.retire(left, generation).ok());
  j.retired(left, generation);
  CHECK(j.can_switch());
  {
    Journal later;
    REQUIRE(later.open(dir.path(), kBytes, Journal::Mode::Create).ok());
    CHECK(replay(later) == second);
  }
  // The retired side takes appends again once it is switched to, newest generation last.
  j.switch_sides();
  std::vector<Replayed> third = append(j, 5, 1);
  Journal last;
  REQUIRE(last.open(dir.path(), kBytes, Journal::Mode::Create).ok());
  CHECK(replay(last) == second + third);
}

TEST_CASE("journal: a batch that does not fit is refused whole, and the side keeps what it had") {
  TempDir dir;
  Journal j;
  open_fresh(j, dir.path());
  std::string big(static_cast<size_t>(j.side_capacity() / 2), 'x');
  std::string hash = sha256_hex(big);
  REQUIRE(j.append({{1, hash, big}}, true).ok());
  const uint64_t end = j.end();
  Status s = j.append({{2, hash, big}}, true);
  CHECK_FALSE(s.ok());
  CHECK(s.error.find("no room") != std::string::npos);
  CHECK(j.end() == end);
  CHECK_FALSE(j.failed());
  CHECK(replay(j).size() == 1);
}

TEST_CASE("journal: a journal of another size is replayed first, then replaced at the new size") {
  TempDir dir;
  std::vector<Replayed> expect;
  {
    Journal j;
    open_fresh(j, dir.path());
    expect = append(j, 1, 2);
  }
  Journal bigger;
  REQUIRE(bigger.open(dir.path(), 2 * kBytes, Journal::Mode::Create).ok());
  CHECK(file_size(dir / "journal") == static_cast<long long>(kBytes));  // not replaced yet
  CHECK(replay(bigger) == expect);
  REQUIRE(bigger.reset().ok());
  CHECK(file_size(dir / "journal") == static_cast<long long>(2 * kBytes));
  CHECK(replay(bigger).empty());
  std::vector<Replayed> next = append(bigger, 3, 1);
  Journal again;
  REQUIRE(again.open(dir.path(), 2 * kBytes, Journal::Mode::Create).ok());
  CHECK(replay(again) == next);
}

TEST_CASE("journal: read-only open of a store without a journal replays nothing and creates nothing") {
  TempDir dir;
  Journal j;
  Status s = j.open(dir.path(), kBytes, Journal::Mode::ReadOnly);
  REQUIRE_MESSAGE(s.ok(), s.error);
  CHECK(replay(j).empty());
  CHECK(file_size(dir / "journal") == -1);
}
