// Committed entries still in memory, newest last, so that live readers need not touch the disk.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

// Everything it holds counts against the budget it is given: the entries' bytes live in one
// ring (three quarters of the budget; an entry never wraps: one that would is placed at the
// ring's start), the 16-byte slots that locate them in a second ring of bounded length (the
// last quarter). Millions of tiny entries therefore cost no more than a few large ones. An
// entry larger than the byte ring is not kept, and neither is anything older than it.
// Both rings are single allocations (the slot ring grows by doubling), not many small nodes
// that would pin pages of the heap between short-lived allocations.
class RecentEntries {
 public:
  explicit RecentEntries(size_t budget_bytes)
      : arena_bytes_(budget_bytes - budget_bytes / 4), max_slots_(budget_bytes / 4 / sizeof(Slot)) {}

  // Keeps entry `index`, which must be the one after the newest kept (any index when none is).
  void add(uint64_t index, std::string_view bytes) {
    if (bytes.size() > arena_bytes_ || max_slots_ == 0) {  // too large to keep
      count_ = 0;
      first_ = index + 1;
      return;
    }
    if (!arena_) arena_.reset(new char[arena_bytes_]);  // untouched pages cost nothing yet
    uint64_t at = end_;
    const size_t offset = static_cast<size_t>(at % arena_bytes_);
    if (offset + bytes.size() > arena_bytes_) at += arena_bytes_ - offset;
    while (count_ > 0 && (count_ >= max_slots_ || at + bytes.size() > slot(0).at + arena_bytes_)) {
      head_ = (head_ + 1) % slots_.size();  // the oldest goes
      count_--;
      first_++;
    }
    if (count_ == 0) first_ = index;
    if (!bytes.empty()) std::memcpy(arena_.get() + at % arena_bytes_, bytes.data(), bytes.size());
    if (count_ == slots_.size()) grow_slots();
    slots_[(head_ + count_) % slots_.size()] = {at, static_cast<uint32_t>(bytes.size())};
    count_++;
    end_ = at + bytes.size();
  }
  // The bytes of entry `index` if it is kept; valid until the next add().
  bool find(uint64_t index, std::string_view* bytes) const {
    if (index < first_ || index - first_ >= count_) return false;
    const Slot& s = slot(static_cast<size_t>(index - first_));
    *bytes = std::string_view(arena_.get() + s.at % arena_bytes_, s.length);
    return true;
  }
  // The oldest and the number of entries kept.
  uint64_t first() const { return first_; }
  size_t count() const { return count_; }
  // At most the budget: the byte ring once used, and the slot ring.
  size_t memory() const { return (arena_ ? arena_bytes_ : 0) + slots_.capacity() * sizeof(Slot); }

 private:
  struct Slot {
    uint64_t at;  // position in the byte ring, counted from its creation
    uint32_t length;
  };
  const Slot& slot(size_t i) const { return slots_[(head_ + i) % slots_.size()]; }
  // Doubles the slot ring (up to max_slots_), oldest first from 0 again.
  void grow_slots() {
    size_t size = slots_.empty() ? 64 : 2 * slots_.size();
    if (size > max_slots_) size = max_slots_;
    std::vector<Slot> bigger;
    bigger.reserve(size);
    for (size_t i = 0; i < count_; i++) bigger.push_back(slot(i));
    bigger.resize(size);
    slots_.swap(bigger);
    head_ = 0;
  }

  const size_t arena_bytes_;
  const size_t max_slots_;
  std::unique_ptr<char[]> arena_;
  std::vector<Slot> slots_;  // a ring: count_ slots from head_ on, oldest first
  size_t head_ = 0;
  size_t count_ = 0;
  uint64_t first_ = 0;  // index of the oldest entry kept
  uint64_t end_ = 0;    // ring position after the newest entry
};
