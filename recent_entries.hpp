// Committed entries still in memory, newest last, so that live readers need not touch the disk.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <string_view>

// Everything it holds counts against the budget it is given: the entries' bytes live in one
// ring (three quarters of the budget; an entry never wraps: one that would is placed at the
// ring's start), the 16-byte slots that locate them in a second ring of bounded length (the
// last quarter). Millions of tiny entries therefore cost no more than a few large ones. An
// entry larger than the byte ring is not kept, and neither is anything older than it.
class RecentEntries {
 public:
  explicit RecentEntries(size_t budget_bytes)
      : arena_bytes_(budget_bytes - budget_bytes / 4), max_slots_(budget_bytes / 4 / sizeof(Slot)) {}

  // Keeps entry `index`, which must be the one after the newest kept (any index when none is).
  void add(uint64_t index, std::string_view bytes) {
    if (bytes.size() > arena_bytes_ || max_slots_ == 0) {  // too large to keep
      slots_.clear();
      first_ = index + 1;
      return;
    }
    if (!arena_) arena_.reset(new char[arena_bytes_]);  // untouched pages cost nothing yet
    uint64_t at = end_;
    const size_t offset = static_cast<size_t>(at % arena_bytes_);
    if (offset + bytes.size() > arena_bytes_) at += arena_bytes_ - offset;
    while (!slots_.empty() &&
           (slots_.size() >= max_slots_ || at + bytes.size() > slots_.front().at + arena_bytes_)) {
      slots_.pop_front();
      first_++;
    }
    if (slots_.empty()) first_ = index;
    if (!bytes.empty()) std::memcpy(arena_.get() + at % arena_bytes_, bytes.data(), bytes.size());
    slots_.push_back({at, static_cast<uint32_t>(bytes.size())});
    end_ = at + bytes.size();
  }
  // The bytes of entry `index` if it is kept; valid until the next add().
  bool find(uint64_t index, std::string_view* bytes) const {
    if (index < first_ || index - first_ >= slots_.size()) return false;
    const Slot& s = slots_[static_cast<size_t>(index - first_)];
    *bytes = std::string_view(arena_.get() + s.at % arena_bytes_, s.length);
    return true;
  }
  // The oldest and the number of entries kept.
  uint64_t first() const { return first_; }
  size_t count() const { return slots_.size(); }
  // At most the budget: the byte ring once used, and the slots.
  size_t memory() const { return (arena_ ? arena_bytes_ : 0) + slots_.size() * sizeof(Slot); }

 private:
  struct Slot {
    uint64_t at;  // position in the byte ring, counted from its creation
    uint32_t length;
  };
  const size_t arena_bytes_;
  const size_t max_slots_;
  std::unique_ptr<char[]> arena_;
  std::deque<Slot> slots_;
  uint64_t first_ = 0;  // index of slots_.front()
  uint64_t end_ = 0;    // ring position after the newest entry
};
