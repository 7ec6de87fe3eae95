// A file system as a power cut may leave it: what is durable, what is only in the page cache,
// and every state the disk may hold after a crash. Knows nothing of tcp-log-server.
//
// =============================================================================================
// THE PERSISTENCE MODEL (doc/durability.md repeats it; this is the one place
// the explorer encodes it). Conservative: where ext4 (data=ordered), xfs and btrfs differ, a
// crash may leave whatever any of them may leave, and more.
//
//  1. Bytes. Changes to a file's bytes and size (write, pwrite, ftruncate, fallocate, O_TRUNC)
//     are durable once fsync or fdatasync of that file, or syncfs or sync of its file system,
//     has returned success after the change was made. Until then a crash may leave, for each
//     file independently:
//       - none of them (the file as of its last sync), or all of them;
//       - the changes up to any one of them, in the order they were made;
//       - of that, only a prefix: the bytes before a 512-byte or a 4096-byte boundary (file
//         offsets), the rest as on disk before, and a file that grew either ending at the
//         boundary or keeping its new size with zeros or garbage after it;
//       - its new size with the appended region all zeros or all garbage;
//       - everything but one 512- or 4096-byte block, which holds its old bytes (zeros or
//         garbage past the old end): writeback completes out of order (xfs updates the size
//         as each I/O completes).
//     A file shrunk by ftruncate may be left cut at any 512- or 4096-byte boundary between
//     its new and old size.
//  2. Names. Creating a file (open with O_CREAT), mkdir, link, unlink, rmdir and rename are
//     durable once fsync of the directory that holds the new name (for rename: the target
//     directory), or syncfs or sync of its file system, has returned success after the
//     change. A file's own fsync does not make its name durable, nor does fsync of a rename's
//     source directory. Until then each such change, independently of the others and of the
//     file's bytes, may be lost or kept; a later change may survive an earlier one.
//  3. rename is atomic: a crash leaves the old name or the new one, never neither, never
//     half of it. A name that replaced another leaves the other file under it, or the new.
//  4. syncfs(fd) makes everything on fd's file system durable: every file's bytes and every
//     name, in every directory of it, whichever process or directory they belong to. sync()
//     does so for every file system.
//  5. Nothing else is durable: close, sync_file_range (no metadata, no disk cache flush) and a
//     sync that failed persist nothing. A call that failed changed nothing.
//  6. A sync covers the changes made before it began; one that overlaps it in time from
//     another thread may or may not be covered, so it is not.
// Not modelled: bit rot and misdirected writes (a medium fault, not a crash); a file's old
// bytes coming back as another file's garbage is covered only as random garbage (ext4
// data=writeback could show stale data that looks valid; none of the three file systems
// named above does).
// =============================================================================================
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace crashfs {

using Ino = int;
constexpr Ino kRoot = 0;
constexpr uint64_t kGranularities[] = {512, 4096};

// One file or directory of a tree, by its path relative to the tree's root.
struct Entry {
  std::string path;
  bool dir = false;
  std::string bytes;
  bool operator==(const Entry& o) const { return path == o.path && dir == o.dir && bytes == o.bytes; }
};
using Tree = std::vector<Entry>;  // sorted by path; the root itself is not listed

// A deterministic byte generator for "garbage", so that a crash state can be rebuilt.
inline std::string garbage(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  for (auto& c : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

inline uint64_t mix(uint64_t h, std::string_view s) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// A change to a file's bytes: a write at an offset, or a new size.
struct ContentOp {
  enum class Kind { Write, Resize } kind = Kind::Write;
  uint64_t offset = 0;  // Write
  std::string bytes;    // Write
  uint64_t size = 0;    // Resize
  uint64_t seq = 0;
};

inline void apply_change(std::string* data, const ContentOp& op) {
  if (op.kind == ContentOp::Kind::Resize) {
    data->resize(op.size, '\0');
    return;
  }
  if (data->size() < op.offset + op.bytes.size()) data->resize(op.offset + op.bytes.size(), '\0');
  data->replace(op.offset, op.bytes.size(), op.bytes);
}

// One possible content of a file after a crash, and how it came about.
struct Variant {
  std::string label;
  std::string bytes;
};

// Every content rule 1 allows for a file whose durable bytes are `durable` and whose unsynced
// changes are `ops`: [0] is "all lost", the last is "all kept", duplicates are dropped. Where a
// rule would give more than `cap` boundaries or blocks, `cap` of them are taken (the first, the
// last, and the rest spread by `seed`).
inline std::vector<Variant> content_variants(const std::string& durable, const std::vector<ContentOp>& ops,
                                             uint64_t seed, size_t cap) {
  std::vector<std::string> versions{durable};
  for (const auto& op : ops) {
    versions.push_back(versions.back());
    apply_change(&versions.back(), op);
  }
  const size_t m = ops.size();
  std::vector<Variant> out{{"all unsynced changes lost", durable}};
  std::set<std::string> seen{durable};
  auto add = [&](std::string label, std::string bytes) {
    if (seen.insert(bytes).second) out.push_back({std::move(label), std::move(bytes)});
  };
  // Up to `cap` of the values, always the first and the last.
  auto pick = [&](std::vector<uint64_t> all, uint64_t salt) {
    if (all.size() <= cap) return all;
    std::vector<uint64_t> picked{all.front(), all.back()};
    uint64_t x = seed ^ salt;
    while (picked.size() < cap) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      uint64_t v = all[1 + (x >> 33) % (all.size() - 2)];
      if (std::find(picked.begin(), picked.end(), v) == picked.end()) picked.push_back(v);
    }
    std::sort(picked.begin(), picked.end());
    return picked;
  };
  std::vector<size_t> which;  // versions to tear: all when few, else a spread
  for (size_t j = 1; j <= m; j++) which.push_back(j);
  if (which.size() > cap) {
    std::vector<uint64_t> all(which.begin(), which.end()), p = pick(all, 7);
    which.assign(p.begin(), p.end());
  }
  const size_t d = durable.size();
  for (size_t j : which) {
    const std::string& v = versions[j];
    std::string tag = j == m ? "" : " (of changes 1.." + std::to_string(j) + " of " + std::to_string(m) + ")";
    if (j < m) add("changes 1.." + std::to_string(j) + " of " + std::to_string(m) + " kept", v);
    size_t lo = 0;
    while (lo < v.size() && lo < d && v[lo] == durable[lo]) lo++;
    const size_t hi = v.size();
    const uint64_t gseed = mix(seed, std::to_string(j));
    for (uint64_t g : kGranularities) {
      const std::string gs = std::to_string(g);
      // A shrink left half done: cut at a boundary between the new and the old size.
      if (hi < d) {
        std::vector<uint64_t> cuts;
        for (uint64_t b = (hi / g + 1) * g; b < d; b += g) cuts.push_back(b);
        for (uint64_t b : pick(cuts, g))
          add("cut to " + std::to_string(b) + " bytes (" + gs + "-byte boundary), not to " + std::to_string(hi) + tag,
              v + durable.substr(hi, b - hi));
      }
      // Only a prefix of the change reached the disk.
      std::vector<uint64_t> bounds;
      for (uint64_t b = (lo / g + 1) * g; b < hi; b += g) bounds.push_back(b);
      for (uint64_t b : pick(bounds, g + 1)) {
        std::string kept = v.substr(0, b) + (b < d ? durable.substr(b) : std::string());
        std::string at = "torn at byte " + std::to_string(b) + " (" + gs + "-byte boundary)" + tag;
        add(at + ", rest as before", kept);
        size_t end = std::max<size_t>(b, d);
        if (hi > end) {
          add(at + ", new size, zeros after", kept + std::string(hi - end, '\0'));
          add(at + ", new size, garbage after", kept + garbage(hi - end, mix(gseed, at)));
        }
      }
      // One block out of order: all kept but it.
      std::vector<uint64_t> blocks;
      for (uint64_t s = lo / g * g; s < hi; s += g) blocks.push_back(s);
      for (uint64_t s : pick(blocks, g + 2)) {
        size_t e = std::min<size_t>(s + g, hi);
        std::string zeros = v, junk = v;
        bool past_end = false;
        for (size_t i = s; i < e; i++) {
          zeros[i] = i < d ? durable[i] : '\0';
          past_end = past_end || i >= d;
        }
        std::string label = "block " + std::to_string(s) + ".." + std::to_string(e) + " (" + gs + " bytes) not written" + tag;
        add(label + (past_end ? ", zeros past the old end" : ", old bytes"), zeros);
        if (past_end) {
          std::string g2 = garbage(e - s, mix(gseed, label));
          for (size_t i = s; i < e; i++) junk[i] = i < d ? durable[i] : g2[i - s];
          add(label + ", garbage past the old end", junk);
        }
      }
    }
    // The new size reached the disk, the appended bytes did not.
    if (hi > d) {
      add("appended region all zeros" + tag, v.substr(0, d) + std::string(hi - d, '\0'));
      add("appended region all garbage" + tag, v.substr(0, d) + garbage(hi - d, mix(gseed, "appended")));
    }
  }
  // "All kept" last, even if an earlier rule produced the same bytes.
  const std::string& current = versions.back();
  out.erase(std::remove_if(out.begin() + 1, out.end(), [&](const Variant& x) { return x.bytes == current; }),
            out.end());
  out.push_back({"all unsynced changes kept", current});
  return out;
}

// A change to a directory's names.
struct NameOp {
  enum class Kind { Link, Unlink, Rename } kind = Kind::Link;
  Ino dir = kRoot;       // Link, Unlink: the directory; Rename: the source directory
  std::string name;
  Ino to_dir = kRoot;    // Rename: the target directory (whose fsync makes it durable)
  std::string to_name;
  Ino ino = kRoot;       // the file or directory named
  Ino replaced = -1;     // Rename over an existing name: what it named before
  uint64_t seq = 0;
  bool durable = false;
  std::string what;      // for reports: "rename blobs/tmp/ab.. -> blobs/ab/..."
  Ino sync_dir() const { return kind == Kind::Rename ? to_dir : dir; }
};

// Something a crash may keep or lose, and in how many ways.
struct Unit {
  enum class Kind { Name, Content } kind = Kind::Name;
  size_t op = 0;   // Name: index into the pending name changes
  Ino ino = -1;    // Content: the file
  std::string what;
  std::vector<Variant> variants;  // Content: [0] all lost ... [last] all kept
  size_t fates() const { return kind == Kind::Name ? 2 : variants.size(); }
  // Fate 0 is "lost", fates()-1 "kept".
  std::string fate_label(size_t f) const {
    if (kind == Kind::Name) return f ? "kept" : "lost";
    return variants[f].label;
  }
};

class FsModel {
 public:
  // Starts with `initial` on disk, all of it durable, in file system 0.
  explicit FsModel(const Tree& initial = {}) {
    inodes_.push_back(Inode{true, {}, {}, {}, 0});
    for (const Entry& e : initial) {
      auto [parent, name] = split(e.path);
      auto p = lookup_in(base_, parent);
      if (!p) continue;  // entries come sorted, parents first
      Ino ino = new_inode(e.dir, *p);
      inodes_[ino].durable = inodes_[ino].current = e.bytes;
      base_[*p][name] = ino;
      current_[*p][name] = ino;
    }
  }

  uint64_t seq() const { return seq_; }
  std::optional<Ino> lookup(const std::string& path) const { return lookup_in(current_, path); }
  bool is_dir(Ino ino) const { return inodes_.at(ino).dir; }
  int fs_of(Ino ino) const { return inodes_.at(ino).fs; }
  void set_fs(Ino ino, int fs) { inodes_.at(ino).fs = fs; }
  const std::string& bytes(Ino ino) const { return inodes_.at(ino).current; }

  // --- Changes, as the page cache sees them at once. Paths are relative to the root.
  // Each returns false (changing nothing) when the path does not fit the current names.

  std::optional<Ino> create(const std::string& path, bool dir = false) {
    auto [parent, name] = split(path);
    auto p = lookup(parent);
    if (!p || !is_dir(*p) || lookup(path)) return std::nullopt;
    Ino ino = new_inode(dir, *p);
    NameOp op;
    op.kind = NameOp::Kind::Link;
    op.dir = *p;
    op.name = name;
    op.ino = ino;
    op.what = (dir ? "mkdir " : "create ") + path;
    push(std::move(op));
    return ino;
  }
  bool link(const std::string& from, const std::string& to) {
    auto ino = lookup(from);
    auto [parent, name] = split(to);
    auto p = lookup(parent);
    if (!ino || !p || lookup(to)) return false;
    NameOp op;
    op.kind = NameOp::Kind::Link;
    op.dir = *p;
    op.name = name;
    op.ino = *ino;
    op.what = "link " + from + " -> " + to;
    push(std::move(op));
    return true;
  }
  bool unlink(const std::string& path) {
    auto ino = lookup(path);
    auto [parent, name] = split(path);
    if (!ino) return false;
    NameOp op;
    op.kind = NameOp::Kind::Unlink;
    op.dir = *lookup(parent);
    op.name = name;
    op.ino = *ino;
    op.what = "unlink " + path;
    push(std::move(op));
    return true;
  }
  bool rename(const std::string& from, const std::string& to) {
    auto ino = lookup(from);
    auto [fparent, fname] = split(from);
    auto [tparent, tname] = split(to);
    auto tp = lookup(tparent);
    if (!ino || !tp) return false;
    NameOp op;
    op.kind = NameOp::Kind::Rename;
    op.dir = *lookup(fparent);
    op.name = fname;
    op.to_dir = *tp;
    op.to_name = tname;
    op.ino = *ino;
    if (auto old = lookup(to)) op.replaced = *old;
    op.what = "rename " + from + " -> " + to;
    push(std::move(op));
    return true;
  }
  void write(Ino ino, uint64_t offset, std::string_view bytes) {
    if (bytes.empty()) return;
    ContentOp op;
    op.kind = ContentOp::Kind::Write;
    op.offset = offset;
    op.bytes = std::string(bytes);
    push(ino, std::move(op));
  }
  void resize(Ino ino, uint64_t size) {
    if (inodes_.at(ino).current.size() == size) return;  // changes nothing
    ContentOp op;
    op.kind = ContentOp::Kind::Resize;
    op.size = size;
    push(ino, std::move(op));
  }

  // --- Persistence. `began` is seq() when the sync started (rule 6).

  // fsync or fdatasync: a file's bytes, or a directory's names.
  void sync_inode(Ino ino, uint64_t began) {
    if (!is_dir(ino)) {
      settle_content(ino, began);
      return;
    }
    for (auto& op : pending_)
      if (op.seq < began && op.sync_dir() == ino) mark_durable(op);
    fold();
  }
  // syncfs: every file and name of file system `fs`; sync(): of every one (fs < 0).
  void sync_fs(int fs, uint64_t began) {
    for (Ino i = 0; i < static_cast<Ino>(inodes_.size()); i++)
      if (!inodes_[i].dir && (fs < 0 || inodes_[i].fs == fs)) settle_content(i, began);
    for (auto& op : pending_)
      if (op.seq < began && (fs < 0 || inodes_[op.sync_dir()].fs == fs)) mark_durable(op);
    fold();
  }

  // --- Crash states.

  // Everything a crash now may keep or lose. `cap` bounds the boundaries and blocks tried
  // per rule and file (content_variants).
  std::vector<Unit> units(uint64_t seed, size_t cap) const {
    std::vector<Unit> out;
    std::set<Ino> named;  // files some choice of names can reach
    for (const auto& [dir, names] : base_)
      for (const auto& [n, ino] : names) named.insert(ino);
    for (size_t i = 0; i < pending_.size(); i++) {
      named.insert(pending_[i].ino);
      if (pending_[i].durable) continue;
      Unit u;
      u.kind = Unit::Kind::Name;
      u.op = i;
      u.what = pending_[i].what;
      out.push_back(std::move(u));
    }
    for (Ino ino : named) {
      const Inode& n = inodes_[ino];
      if (n.dir || n.pending.empty()) continue;
      Unit u;
      u.kind = Unit::Kind::Content;
      u.ino = ino;
      u.what = "bytes of " + path_of(ino);
      u.variants = content_variants(n.durable, n.pending, mix(seed, u.what), cap);
      out.push_back(std::move(u));
    }
    return out;
  }

  // The tree a crash leaves when each unit of `units` takes the fate in `fates`.
  Tree crash(const std::vector<Unit>& units, const std::vector<size_t>& fates) const {
    std::vector<bool> kept(pending_.size(), false);
    std::map<Ino, const std::string*> content;
    for (size_t u = 0; u < units.size(); u++) {
      if (units[u].kind == Unit::Kind::Name) kept[units[u].op] = fates[u] == 1;
      else content[units[u].ino] = &units[u].variants[fates[u]].bytes;
    }
    Names names = base_;
    for (size_t i = 0; i < pending_.size(); i++)
      if (pending_[i].durable || kept[i]) apply_name(&names, pending_[i]);
    Tree tree;
    walk(names, kRoot, "", [&](const std::string& path, Ino ino) {
      Entry e;
      e.path = path;
      e.dir = inodes_[ino].dir;
      if (!e.dir) {
        auto it = content.find(ino);
        e.bytes = it != content.end() ? *it->second : inodes_[ino].durable;
      }
      tree.push_back(std::move(e));
    });
    std::sort(tree.begin(), tree.end(), [](const Entry& a, const Entry& b) { return a.path < b.path; });
    return tree;
  }

  // The tree as the page cache shows it now (what a process crash leaves).
  Tree current() const {
    Tree tree;
    walk(current_, kRoot, "", [&](const std::string& path, Ino ino) {
      tree.push_back({path, inodes_[ino].dir, inodes_[ino].dir ? std::string() : inodes_[ino].current});
    });
    std::sort(tree.begin(), tree.end(), [](const Entry& a, const Entry& b) { return a.path < b.path; });
    return tree;
  }

  // A path of `ino` in the current names (or the durable ones), for reports.
  std::string path_of(Ino ino) const {
    std::string found;
    for (const Names* names : {&current_, &base_}) {
      walk(*names, kRoot, "", [&](const std::string& path, Ino i) {
        if (i == ino && found.empty()) found = path;
      });
      if (!found.empty()) return found;
    }
    for (const auto& op : pending_)
      if (op.ino == ino) return op.what.substr(op.what.find(' ') + 1);
    return "inode " + std::to_string(ino);
  }

 private:
  struct Inode {
    bool dir = false;
    std::string durable;  // bytes as of the last sync
    std::string current;  // bytes as the page cache holds them
    std::vector<ContentOp> pending;
    int fs = 0;
  };
  using Names = std::map<Ino, std::map<std::string, Ino>>;

  static std::pair<std::string, std::string> split(const std::string& path) {
    size_t slash = path.rfind('/');
    if (slash == std::string::npos) return {"", path};
    return {path.substr(0, slash), path.substr(slash + 1)};
  }
  static std::optional<Ino> lookup_in(const Names& names, const std::string& path) {
    Ino at = kRoot;
    size_t start = 0;
    while (start < path.size()) {
      size_t slash = path.find('/', start);
      std::string part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
      start = slash == std::string::npos ? path.size() : slash + 1;
      if (part.empty() || part == ".") continue;
      auto dir = names.find(at);
      if (dir == names.end()) return std::nullopt;
      auto it = dir->second.find(part);
      if (it == dir->second.end()) return std::nullopt;
      at = it->second;
    }
    return at;
  }
  template <typename F>
  void walk(const Names& names, Ino dir, const std::string& prefix, F&& f) const {
    auto it = names.find(dir);
    if (it == names.end()) return;
    for (const auto& [name, ino] : it->second) {
      std::string path = prefix.empty() ? name : prefix + "/" + name;
      f(path, ino);
      if (inodes_[ino].dir) walk(names, ino, path, f);
    }
  }
  static void apply_name(Names* names, const NameOp& op) {
    switch (op.kind) {
      case NameOp::Kind::Link:
        (*names)[op.dir][op.name] = op.ino;
        break;
      case NameOp::Kind::Unlink: {
        auto& d = (*names)[op.dir];
        auto it = d.find(op.name);
        if (it != d.end() && it->second == op.ino) d.erase(it);
        break;
      }
      case NameOp::Kind::Rename: {
        // By inode: the file keeps its new name even where the change that named it under
        // the old one was lost (it exists on disk either way).
        auto& d = (*names)[op.dir];
        auto it = d.find(op.name);
        if (it != d.end() && it->second == op.ino) d.erase(it);
        (*names)[op.to_dir][op.to_name] = op.ino;
        break;
      }
    }
  }
  Ino new_inode(bool dir, Ino parent) {
    Inode n;
    n.dir = dir;
    n.fs = inodes_[parent].fs;
    inodes_.push_back(std::move(n));
    return static_cast<Ino>(inodes_.size() - 1);
  }
  void push(NameOp op) {
    op.seq = seq_++;
    apply_name(&current_, op);
    pending_.push_back(std::move(op));
  }
  void push(Ino ino, ContentOp op) {
    op.seq = seq_++;
    Inode& n = inodes_.at(ino);
    apply_change(&n.current, op);
    n.pending.push_back(std::move(op));
  }
  void settle_content(Ino ino, uint64_t began) {
    Inode& n = inodes_[ino];
    size_t k = 0;
    while (k < n.pending.size() && n.pending[k].seq < began) apply_change(&n.durable, n.pending[k++]);
    n.pending.erase(n.pending.begin(), n.pending.begin() + static_cast<long>(k));
  }
  void mark_durable(NameOp& op) {
    op.durable = true;
    // A name made and then durably removed again is gone whether or not its making survived.
    if (op.kind == NameOp::Kind::Link) return;
    for (auto& earlier : pending_) {
      if (earlier.seq >= op.seq) break;
      if (earlier.kind == NameOp::Kind::Link && earlier.dir == op.dir && earlier.name == op.name &&
          earlier.ino == op.ino)
        earlier.durable = true;
    }
  }
  // Durable changes at the front of the list become part of the base.
  void fold() {
    size_t k = 0;
    while (k < pending_.size() && pending_[k].durable) apply_name(&base_, pending_[k++]);
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(k));
  }

  std::vector<Inode> inodes_;
  Names base_;     // names that are durable (the initial tree plus folded changes)
  Names current_;  // names as the page cache shows them
  std::vector<NameOp> pending_;  // name changes not folded into base_, in order
  uint64_t seq_ = 0;
};

// A stable text form of a tree, for hashing and comparing crash states.
inline std::string serialize(const Tree& tree) {
  std::string out;
  for (const Entry& e : tree) {
    out += e.path;
    out.append(e.dir ? "\0d\0" : "\0f\0", 3);
    if (!e.dir) {
      out += std::to_string(e.bytes.size());
      out += '\0';
      out += e.bytes;
    }
    out += '\n';
  }
  return out;
}

}  // namespace crashfs
