// The poll set and its parked epoll slot: see poller.hpp.
#include "poller.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

Poller::~Poller() {
  if (parked_fd_ >= 0) ::close(parked_fd_);
  if (mirror_fd_ >= 0) ::close(mirror_fd_);
}

bool Poller::open(std::string* error) {
  parked_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (parked_fd_ < 0) {
    *error = std::string("cannot create the epoll set of parked connections: ") + std::strerror(errno);
    return false;
  }
  return true;
}

size_t Poller::add(int fd, short events) {
  slots_.push_back({fd, events, 0});
  mirror(-1, fd, events);
  return slots_.size() - 1;
}

void Poller::remove(size_t slot) {
  mirror(slots_[slot].fd, -1, 0);
  const size_t last = slots_.size() - 1;
  if (slot != last) slots_[slot] = slots_[last];
  slots_.pop_back();
}

void Poller::swap(size_t a, size_t b) { std::swap(slots_[a], slots_[b]); }

void Poller::set_events(size_t slot, short events) {
  if (slots_[slot].events == events) return;
  slots_[slot].events = events;
  mirror(slots_[slot].fd, slots_[slot].fd, events);
}

void Poller::set_fd(size_t slot, int fd) {
  if (slots_[slot].fd == fd) return;
  mirror(slots_[slot].fd, fd, slots_[slot].events);
  slots_[slot].fd = fd;
}

bool Poller::park(size_t slot, int fd, void* data) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = data;
  if (::epoll_ctl(parked_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  set_fd(slot, -1);
  return true;
}

void Poller::unpark(size_t slot, int fd) {
  ::epoll_ctl(parked_fd_, EPOLL_CTL_DEL, fd, nullptr);
  set_fd(slot, fd);
}

int Poller::ready_parked(epoll_event* out, int max) { return ::epoll_wait(parked_fd_, out, max, 0); }

int Poller::wait(int timeout_ms) { return ::poll(slots_.data(), slots_.size(), timeout_ms); }

int Poller::host_fd() {
  if (mirror_fd_ >= 0) return mirror_fd_;
  mirror_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (mirror_fd_ < 0) return -1;
  for (const pollfd& p : slots_) mirror(-1, p.fd, p.events);
  return mirror_fd_;
}

void Poller::shrink() {
  if (slots_.capacity() > 1024 && slots_.size() * 4 < slots_.capacity()) slots_.shrink_to_fit();
}

// Keeps the mirror's registration of a slot in step with it. A descriptor closed while
// registered left the set by itself (ENOENT on change: added again; EEXIST on add: changed).
void Poller::mirror(int old_fd, int fd, short events) {
  if (mirror_fd_ < 0) return;
  if (old_fd >= 0 && old_fd != fd) ::epoll_ctl(mirror_fd_, EPOLL_CTL_DEL, old_fd, nullptr);
  if (fd < 0) return;
  epoll_event ev{};
  ev.events = (events & POLLIN ? EPOLLIN : 0u) | (events & POLLOUT ? EPOLLOUT : 0u);
  ev.data.fd = fd;
  const int op = old_fd == fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (::epoll_ctl(mirror_fd_, op, fd, &ev) != 0) {
    if (errno == ENOENT) ::epoll_ctl(mirror_fd_, EPOLL_CTL_ADD, fd, &ev);
    else if (errno == EEXIST) ::epoll_ctl(mirror_fd_, EPOLL_CTL_MOD, fd, &ev);
  }
}
