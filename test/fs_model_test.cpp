// The persistence model of the crash-state explorer (test/fs_model.hpp), rule by rule, and
// the strace reader that feeds it (test/strace_parse.hpp, test/crash_trace.hpp).
#include <doctest/doctest.h>

#include "crash_trace.hpp"

using crashfs::FsModel;
using crashfs::Tree;
using crashfs::Unit;

namespace {

// Every tree a crash may leave now: the product of all units' fates.
std::vector<Tree> all_crash_trees(const FsModel& fs, size_t cap = 64) {
  std::vector<Unit> units = fs.units(1, cap);
  std::vector<Tree> out;
  std::vector<size_t> fates(units.size(), 0);
  for (;;) {
    Tree t = fs.crash(units, fates);
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
    size_t u = 0;
    while (u < units.size() && ++fates[u] == units[u].fates()) fates[u++] = 0;
    if (u == units.size()) break;
  }
  return out;
}

const crashfs::Entry* find(const Tree& t, const std::string& path) {
  for (const auto& e : t)
    if (e.path == path) return &e;
  return nullptr;
}

// The contents `path` has across `trees` ("<absent>" where it is missing).
std::set<std::string> contents(const std::vector<Tree>& trees, const std::string& path) {
  std::set<std::string> out;
  for (const auto& t : trees) {
    const auto* e = find(t, path);
    out.insert(e ? e->bytes : "<absent>");
  }
  return out;
}

Tree durable_dir_with_file(const std::string& bytes) {
  return {{"d", true, ""}, {"d/f", false, bytes}};
}

}  // namespace

TEST_CASE("model: unsynced appended bytes may be lost, kept, torn at 512 and 4096 bytes, or zeros or garbage") {
  FsModel fs(durable_dir_with_file(std::string(100, 'o')));
  crashfs::Ino f = *fs.lookup("d/f");
  fs.write(f, 100, std::string(5000, 'n'));
  auto seen = contents(all_crash_trees(fs), "d/f");
  std::string old(100, 'o');
  CHECK(seen.count(old));                                           // lost
  CHECK(seen.count(old + std::string(5000, 'n')));                  // kept
  CHECK(seen.count(old + std::string(412, 'n')));                   // torn at 512
  CHECK(seen.count(old + std::string(3996, 'n')));                  // torn at 4096
  CHECK(seen.count(old + std::string(412, 'n') + std::string(4588, '\0')));  // torn, new size, zeros
  CHECK(seen.count(old + std::string(5000, '\0')));                 // appended region zeros
  // One 512-byte block not written, the rest kept: a hole.
  CHECK(seen.count(old + std::string(412, 'n') + std::string(512, '\0') + std::string(4076, 'n')));
  bool garbage = false;
  for (const auto& s : seen)
    garbage = garbage || (s.size() == 5100 && s.substr(100).find_first_not_of(std::string("n\0", 2)) != std::string::npos);
  CHECK(garbage);
}

TEST_CASE("model: fsync or fdatasync of a file makes its bytes durable, not its name") {
  FsModel fs(Tree{{"d", true, ""}});
  crashfs::Ino f = *fs.create("d/f");
  fs.write(f, 0, "data");
  fs.sync_inode(f, fs.seq());
  auto seen = contents(all_crash_trees(fs), "d/f");
  CHECK(seen == std::set<std::string>{"<absent>", "data"});
  fs.sync_inode(*fs.lookup("d"), fs.seq());
  CHECK(contents(all_crash_trees(fs), "d/f") == std::set<std::string>{"data"});
}

TEST_CASE("model: a new directory's files are lost with it until its own name is durable") {
  FsModel fs(Tree{{"d", true, ""}});
  fs.create("d/sub", true);
  crashfs::Ino f = *fs.create("d/sub/f");
  fs.write(f, 0, "x");
  fs.sync_inode(f, fs.seq());
  fs.sync_inode(*fs.lookup("d/sub"), fs.seq());  // sub's entries durable, sub's name in d not
  CHECK(contents(all_crash_trees(fs), "d/sub/f") == std::set<std::string>{"<absent>", "x"});
  fs.sync_inode(*fs.lookup("d"), fs.seq());
  CHECK(contents(all_crash_trees(fs), "d/sub/f") == std::set<std::string>{"x"});
}

TEST_CASE("model: rename leaves the old name or the new one, never neither, durable with an fsync of the target directory") {
  FsModel fs(Tree{{"a", true, ""}, {"a/x", false, "X"}, {"b", true, ""}});
  fs.rename("a/x", "b/y");
  auto trees = all_crash_trees(fs);
  for (const auto& t : trees) CHECK(((find(t, "a/x") != nullptr) != (find(t, "b/y") != nullptr)));
  CHECK(trees.size() == 2);
  fs.sync_inode(*fs.lookup("a"), fs.seq());  // the source directory: not enough
  CHECK(all_crash_trees(fs).size() == 2);
  fs.sync_inode(*fs.lookup("b"), fs.seq());
  trees = all_crash_trees(fs);
  REQUIRE(trees.size() == 1);
  CHECK(find(trees[0], "b/y"));
  CHECK_FALSE(find(trees[0], "a/x"));
}

TEST_CASE("model: syncfs makes every file and name of its file system durable, in every directory") {
  FsModel fs(Tree{{"a", true, ""}, {"b", true, ""}, {"b/index", false, ""}});
  crashfs::Ino blob = *fs.create("a/blob");
  fs.write(blob, 0, "blob");
  fs.write(*fs.lookup("b/index"), 0, "record");
  fs.sync_fs(0, fs.seq());
  auto trees = all_crash_trees(fs);
  REQUIRE(trees.size() == 1);
  CHECK(find(trees[0], "a/blob")->bytes == "blob");
  CHECK(find(trees[0], "b/index")->bytes == "record");
}

TEST_CASE("model: syncfs of one file system leaves another's changes unsynced") {
  FsModel fs(Tree{{"a", true, ""}, {"b", true, ""}, {"b/index", false, ""}});
  fs.set_fs(*fs.lookup("b"), 1);
  fs.set_fs(*fs.lookup("b/index"), 1);
  fs.write(*fs.lookup("b/index"), 0, "record");
  fs.sync_fs(0, fs.seq());
  CHECK(contents(all_crash_trees(fs), "b/index").count(""));
}

TEST_CASE("model: a sync covers only the changes made before it began") {
  FsModel fs(durable_dir_with_file(""));
  crashfs::Ino f = *fs.lookup("d/f");
  fs.write(f, 0, "one");
  uint64_t began = fs.seq();
  fs.write(f, 3, "two");  // from another thread while the sync ran
  fs.sync_inode(f, began);
  auto seen = contents(all_crash_trees(fs), "d/f");
  CHECK(seen.count("one"));
  CHECK(seen.count("onetwo"));
  CHECK_FALSE(seen.count(""));
}

TEST_CASE("model: a shrink may be left half done at a 512- or 4096-byte boundary") {
  FsModel fs(durable_dir_with_file(std::string(9000, 'x')));
  fs.resize(*fs.lookup("d/f"), 100);
  auto seen = contents(all_crash_trees(fs), "d/f");
  CHECK(seen.count(std::string(100, 'x')));
  CHECK(seen.count(std::string(9000, 'x')));
  CHECK(seen.count(std::string(4096, 'x')));
  CHECK(seen.count(std::string(512, 'x')));
}

TEST_CASE("model: names change independently; a later change may survive an earlier one") {
  FsModel fs(Tree{{"d", true, ""}});
  fs.create("d/first");
  fs.create("d/second");
  bool second_only = false;
  for (const auto& t : all_crash_trees(fs)) second_only = second_only || (!find(t, "d/first") && find(t, "d/second"));
  CHECK(second_only);
}

TEST_CASE("strace reader: calls, descriptors, positions and sends become model events in effect order") {
  // Paths as strace -xx prints them; a write from a second thread interrupted by the main one.
  auto hex = [](const std::string& s) {
    std::string out;
    char buf[8];
    for (unsigned char c : s) {
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
    return out;
  };
  const std::string root = "/r";
  std::string t;
  t += "10  mkdir(\"" + hex("/r/d") + "\", 0755) = 0\n";
  t += "10  openat(-100<" + hex("/") + ">, \"" + hex("/r/d/f") + "\", 0x80241, 0644) = 3<" + hex("/r/d/f") + ">\n";
  t += "10  clone3({flags=0x3d0f00, child_tid=0x1} => {parent_tid=[11]}, 88) = 11\n";
  t += "11  write(3<" + hex("/r/d/f") + ">, \"" + hex("ab") + "\", 2 <unfinished ...>\n";
  t += "10  sendto(5<" + hex("socket:[7]") + ">, \"" + hex("{\"id\":\"x\",\"index\":1}\n") + "\", 21, 0x4040, NULL, 0) = 21\n";
  t += "11  <... write resumed>) = 2\n";
  t += "11  write(3<" + hex("/r/d/f") + ">, \"" + hex("cd") + "\", 2) = 2\n";
  t += "10  pwrite64(3<" + hex("/r/d/f") + ">, \"" + hex("Z") + "\", 1, 0) = -1 ENOSPC (No space left on device) (INJECTED)\n";
  t += "10  fdatasync(3<" + hex("/r/d/f") + ">) = 0\n";
  t += "10  rename(\"" + hex("/r/d/f") + "\", \"" + hex("/r/d/g") + "\") = 0\n";
  t += "10  close(3<" + hex("/r/d/g") + ">) = 0\n";
  crash::TraceReader reader(root, {});
  auto events = reader.read({{t, "always", false, {}}}, {});
  std::vector<std::string> kinds;
  for (const auto& e : events) kinds.push_back(e.what.substr(0, e.what.find('(')));
  std::string listed;
  for (const auto& k : kinds) listed += k + " ";
  INFO(listed);
  CHECK(kinds == std::vector<std::string>{"mkdir", "openat", "sendto", "write", "write", "fdatasync", "rename", "close"});
  CHECK(events[3].offset == 0);
  CHECK(events[4].offset == 2);  // the shared file position advanced
  CHECK(events[2].bytes == "{\"id\":\"x\",\"index\":1}\n");
  auto trees = all_crash_trees(reader.model());
  CHECK(contents(trees, "d/g").count("abcd"));
  CHECK(contents(trees, "d/f").count("abcd"));  // the rename is not durable
  CHECK_FALSE(contents(trees, "d/g").count("Zbcd"));  // the injected failure did nothing
  // Both writes returned before the fdatasync began: whichever name survives has them.
  CHECK(contents(trees, "d/g") == std::set<std::string>{"<absent>", "abcd"});
}
