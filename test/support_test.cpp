// The support every test file shares (test/support.hpp): a temporary directory is fresh, and
// gone with all it holds at destruction; whole files are read and written byte for byte, and a
// failure says which file and why; log lines are told by their level; the small journal is the
// smallest the server takes with its longest lines; and the list of the server's variables is
// every variable the server's sources read, and no other (it had drifted once). Run from the
// repository root, as make test does.
#include <doctest/doctest.h>

#include <filesystem>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>

#include "test/support.hpp"

using namespace test_support;
namespace fs = std::filesystem;

namespace {

// The message of the std::runtime_error `f` throws ("" if it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a TempDir is a fresh empty directory with a canonical path, removed with all it holds at destruction") {
  std::string path;
  {
    TempDir dir;
    path = dir.path();
    REQUIRE(fs::is_directory(path));
    CHECK(fs::is_empty(path));
    CHECK(path == fs::canonical(path).string());
    CHECK(path.rfind(fs::canonical(temp_base()).string() + "/tcp-log-server-test.", 0) == 0);
    CHECK(dir / "blobs" == path + "/blobs");
    TempDir other;
    CHECK(other.path() != path);
    fs::create_directories(dir / "sub/deeper");
    write_file(dir / "sub/deeper/file", "x");
  }
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("a TempDir that cannot be made throws, naming the pattern and the reason") {
  TempDir parent;
  const std::string why = error_of([&] { TempDir inside(parent / "missing", "t"); });
  CHECK(why == "mkdtemp " + parent / "missing/t.XXXXXX" + ": No such file or directory");
}

TEST_CASE("files are written, appended to and read back byte for byte; a missing file reads empty, size -1") {
  TempDir dir;
  const std::string path = dir / "f";
  CHECK(read_file(path).empty());
  CHECK(file_size(path) == -1);
  std::string bytes(200000, '\0');  // longer than one read, with every byte value
  for (size_t i = 0; i < bytes.size(); i++) bytes[i] = static_cast<char>(i * 7);
  write_file(path, bytes);
  CHECK(read_file(path) == bytes);
  CHECK(file_size(path) == static_cast<long long>(bytes.size()));
  write_file(path, "short");  // truncates
  CHECK(read_file(path) == "short");
  append_file(path, std::string("\0tail", 5));
  CHECK(read_file(path) == std::string("short\0tail", 10));
  append_file(dir / "new", "made");  // creates
  CHECK(read_file(dir / "new") == "made");
  write_file(path, "");
  CHECK(file_size(path) == 0);
}

TEST_CASE("a file that cannot be written throws, naming the file and the reason") {
  TempDir dir;
  CHECK(error_of([&] { write_file(dir / "no/such/dir", "x"); }) ==
        "open " + dir / "no/such/dir" + ": No such file or directory");
  CHECK(error_of([&] { append_file(dir.path(), "x"); }) == "open " + dir.path() + ": Is a directory");
}

TEST_CASE("log lines are told by the level pino writes first") {
  CHECK(at_level(R"({"level":40,"time":1,"msg":"x"})", kWarn));
  CHECK_FALSE(at_level(R"({"level":40,"time":1,"msg":"x"})", kInfo));
  CHECK_FALSE(at_level(R"({"level":400,"time":1})", kWarn));
  CHECK_FALSE(at_level(R"({"msg":"x","level":40,})", kWarn));
  CHECK(at_level(R"({"level":60,"msg":"cannot start"})", kFatal));
  CHECK(kTrace == 10);
  CHECK(kDebug == 20);
  CHECK(kInfo == 30);
  CHECK(kError == 50);
}

TEST_CASE("the small journal is the smallest the server takes with lines of 28 KiB") {
  // The server's rule (tcp-log-server.cpp): each side holds two longest entries,
  // JOURNAL_BYTES >= 4 x (MAX_MESSAGE_BYTES + 4096).
  CHECK(kSmallJournalBytes == 4 * (kSmallJournalMaxMessageBytes + 4096));
  CHECK(small_journal() == std::map<std::string, std::string>{{"JOURNAL_BYTES", "131072"}, {"MAX_MESSAGE_BYTES", "28672"}});
  CHECK(small_journal(4096).at("MAX_MESSAGE_BYTES") == "4096");
  CHECK(small_journal(4096).at("JOURNAL_BYTES") == "131072");
}

TEST_CASE("the list of the server's variables is every variable the server's sources read or clear, and no other") {
  REQUIRE_MESSAGE(fs::exists("tcp-log-server.cpp"), "run the tests from the repository root");
  // getenv("X") and unsetenv("X") anywhere in the server's sources, and the table of
  // variables and flags in parse_config: {"X", "flag"}.
  static const std::regex call(R"re(\b(?:secure_)?(?:getenv|unsetenv)\("([A-Z0-9_]+)"\))re");
  static const std::regex table(R"re(\{"([A-Z0-9_]+)", "[a-z-]+"\})re");
  std::set<std::string> read;
  for (const auto& entry : fs::directory_iterator(".")) {
    const std::string ext = entry.path().extension().string();
    if (!entry.is_regular_file() || (ext != ".cpp" && ext != ".hpp" && ext != ".h")) continue;
    const std::string text = read_file(entry.path().string());
    for (std::sregex_iterator m(text.begin(), text.end(), call), end; m != end; ++m) read.insert(m->str(1));
    if (entry.path().filename() == "tcp-log-server.cpp")
      for (std::sregex_iterator m(text.begin(), text.end(), table), end; m != end; ++m) read.insert(m->str(1));
  }
  CHECK(read.size() >= 17);  // the parser finds the variables there are
  const std::set<std::string> listed(server_variables().begin(), server_variables().end());
  CHECK(listed.size() == server_variables().size());  // no name twice
  for (const auto& name : read) CHECK_MESSAGE(listed.count(name), name << " is read by the server and missing from server_variables()");
  for (const auto& name : listed) CHECK_MESSAGE(read.count(name), name << " is in server_variables() and read nowhere in the server");
}
