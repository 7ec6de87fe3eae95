// The poll set of the server's loop, with its parked epoll slot (muduo's PollPoller, plus one
// slot that stands for many quiet descriptors).
//
// poll() looks at every descriptor it is given on every call, ready or not: with 10,000 idle
// connections one call costs 2.5 ms here. So a descriptor that only waits for input may be
// parked: it moves to an epoll set (level-triggered, EPOLLIN) whose own descriptor is one slot
// of the poll set, and its own slot holds -1, which poll() skips. The loop stays one poll()
// loop; epoll only stands in for its quiet part.
//
// For a host that runs its own loop (Server::fd()), the whole set can also be mirrored into a
// second epoll set, whose descriptor is readable whenever any slot is ready. The mirror is made
// on the first host_fd() call only: the binary's loop never pays for it.
#pragma once
#include <poll.h>
#include <sys/epoll.h>

#include <cstddef>
#include <string>
#include <vector>

class Poller {
 public:
  Poller() = default;
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;
  ~Poller();  // closes the epoll sets; never the descriptors of the slots
  // Creates the epoll set of parked descriptors; false with *error saying why.
  bool open(std::string* error);
  // The epoll set of parked descriptors (to be given a slot of its own, for POLLIN).
  int parked_fd() const { return parked_fd_; }

  size_t size() const { return slots_.size(); }
  int fd(size_t slot) const { return slots_[slot].fd; }
  short events(size_t slot) const { return slots_[slot].events; }
  // Events poll() reported for `slot` in the last wait(); cleared by take_revents().
  short take_revents(size_t slot) {
    const short r = slots_[slot].revents;
    slots_[slot].revents = 0;
    return r;
  }
  // A new slot at the end; returns it. `fd` may be -1 (skipped until set_fd()).
  size_t add(int fd, short events);
  // Removes `slot` by moving the last slot into it. The caller moves its own per-slot data
  // the same way. The slot's descriptor is forgotten, not closed (close it after this).
  void remove(size_t slot);
  void swap(size_t a, size_t b);
  void set_events(size_t slot, short events);
  void set_fd(size_t slot, int fd);

  // Parks the descriptor of `slot`: it waits for input in the parked set, reported with `data`,
  // and its slot holds -1. False (and nothing changed) if epoll cannot take it (out of memory,
  // fs.epoll.max_user_watches).
  bool park(size_t slot, int fd, void* data);
  // Back into its slot, out of the parked set.
  void unpark(size_t slot, int fd);
  // Parked descriptors that are ready now: at most `max`, without waiting.
  int ready_parked(epoll_event* out, int max);

  // poll() on the set; as poll() returns.
  int wait(int timeout_ms);
  // The mirror's descriptor (see above), made now if need be; -1 if it cannot be made.
  int host_fd();
  // Gives back the capacity of a set that was once much larger.
  void shrink();

 private:
  void mirror(int old_fd, int fd, short events);
  std::vector<pollfd> slots_;
  int parked_fd_ = -1;
  int mirror_fd_ = -1;
};
