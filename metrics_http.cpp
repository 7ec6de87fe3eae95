// The monitoring listener: see metrics_http.hpp.
#include "metrics_http.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "sockets.hpp"

struct MetricsHttp::Connection {
  int fd = -1;
  bool listener = false;
  bool responding = false;  // the request is answered; the response is being sent
  bool done = false;        // to be closed at the end of the pass
  int64_t deadline_ms = 0;
  std::string request;      // the request head so far
  size_t scanned = 0;       // bytes of it already searched for its end
  std::string head;         // the response's status line and headers
  std::shared_ptr<const std::string> body;  // its body (null for HEAD)
  size_t sent = 0;          // bytes of head, then body, sent
};

MetricsHttp::MetricsHttp() = default;

MetricsHttp::~MetricsHttp() {
  for (auto& c : connections_) ::close(c->fd);
  for (auto& l : listeners_) ::close(l->fd);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

bool MetricsHttp::listen(const std::string& host, uint16_t port, std::string* error) {
  if (epoll_fd_ < 0) {
    epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd_ < 0) {
      *error = std::string("cannot create the monitoring listener's epoll set: ") + std::strerror(errno);
      return false;
    }
  }
  std::vector<int> fds;
  if (!open_listeners(host.empty() ? "127.0.0.1" : host, port, &fds, error)) {
    *error = "monitoring listener: " + *error;
    return false;
  }
  for (int fd : fds) {
    auto l = std::make_unique<Connection>();
    l->fd = fd;
    l->listener = true;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = l.get();
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      *error = std::string("monitoring listener: epoll_ctl: ") + std::strerror(errno);
      for (int f : fds) ::close(f);
      return false;
    }
    listeners_.push_back(std::move(l));
  }
  if (address_.empty() && !fds.empty()) {
    const std::string ip = bound_address(fds[0]);
    port_ = bound_port(fds[0]);
    address_ = (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + std::to_string(port_);
  }
  return true;
}

void MetricsHttp::on_ready(int64_t now_ms, Source& source) {
  if (epoll_fd_ < 0) return;
  epoll_event ready[kEventsPerPass];
  const int n = ::epoll_wait(epoll_fd_, ready, kEventsPerPass, 0);
  std::shared_ptr<const std::string> rendered;  // this pass's metrics, rendered once
  for (int i = 0; i < n; i++) {
    Connection& c = *static_cast<Connection*>(ready[i].data.ptr);
    if (c.listener) {
      accept_from(c, now_ms);
    } else if (ready[i].events & EPOLLERR) {
      c.done = true;
    } else if (!c.responding) {
      read_request(c, now_ms, source, &rendered);
    } else {
      send_response(c);
    }
    any_done_ = any_done_ || c.done;
  }
  sweep();
}

void MetricsHttp::accept_from(Connection& listener, int64_t now_ms) {
  for (int i = 0; i < kAcceptsPerPass; i++) {
    const int fd = ::accept4(listener.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The listener would stay readable: pause rather than spin.
        accept_paused_until_ms_ = now_ms + kAcceptPauseMs;
        pause_accepting(true);
      }
      return;
    }
    if (connections_.size() >= kMaxConnections) {
      ::close(fd);  // its own limit: the log's descriptors are not the scrapers' to take
      continue;
    }
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->deadline_ms = now_ms + kTimeoutMs;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = c.get();
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      continue;
    }
    connections_.push_back(std::move(c));
  }
}

void MetricsHttp::pause_accepting(bool paused) {
  for (auto& l : listeners_) {
    epoll_event ev{};
    ev.events = paused ? 0u : static_cast<uint32_t>(EPOLLIN);
    ev.data.ptr = l.get();
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, l->fd, &ev);
  }
}

void MetricsHttp::read_request(Connection& c, int64_t now_ms, Source& source,
                               std::shared_ptr<const std::string>* rendered) {
  // One byte more than a request may have: it tells a request that is too long.
  char buf[kMaxRequestBytes + 1];
  const size_t room = kMaxRequestBytes + 1 - c.request.size();
  const ssize_t n = ::recv(c.fd, buf, room, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {  // closed or failed before its request was whole
    c.done = true;
    return;
  }
  c.request.append(buf, static_cast<size_t>(n));
  // The head ends with an empty line; only the new bytes are searched (picohttpparser's way).
  const std::string& r = c.request;
  for (size_t i = c.scanned; i < r.size(); i++) {
    if (r[i] != '\n') continue;
    const bool blank = (i >= 1 && r[i - 1] == '\n') || (i >= 2 && r[i - 1] == '\r' && r[i - 2] == '\n');
    if (!blank) continue;
    if (i + 1 > kMaxRequestBytes) break;
    respond(c, now_ms, source, rendered);
    return;
  }
  c.scanned = r.size();
  if (r.size() > kMaxRequestBytes) c.done = true;  // too long: closed unanswered
}

namespace {

std::string head_of(std::string_view status, std::string_view type, size_t length, std::string_view extra) {
  std::string h = "HTTP/1.1 ";
  h.append(status);
  h += "\r\nContent-Type: ";
  h.append(type);
  h += "\r\nContent-Length: ";
  h += std::to_string(length);
  h += "\r\nConnection: close\r\n";
  h.append(extra);
  h += "\r\n";
  return h;
}

constexpr std::string_view kText = "text/plain; charset=utf-8";
constexpr std::string_view kExposition = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

void MetricsHttp::respond(Connection& c, int64_t now_ms, Source& source,
                          std::shared_ptr<const std::string>* rendered) {
  // The request line: METHOD SP TARGET SP HTTP/1.x. The headers are not needed.
  std::string_view line(c.request);
  line = line.substr(0, line.find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  std::string_view method, path, version;
  if (sp2 != std::string_view::npos) {
    method = line.substr(0, sp1);
    path = line.substr(sp1 + 1, sp2 - sp1 - 1);
    version = line.substr(sp2 + 1);
    path = path.substr(0, path.find('?'));
  }
  auto body = [](std::string text) { return std::make_shared<const std::string>(std::move(text)); };
  std::shared_ptr<const std::string> content;
  std::string_view status, type = kText, extra;
  if (method.empty() || path.empty() || version.size() != 8 || version.substr(0, 7) != "HTTP/1.") {
    status = "400 Bad Request";
    content = body("bad request\n");
  } else if (method != "GET" && method != "HEAD") {
    status = "405 Method Not Allowed";
    extra = "Allow: GET, HEAD\r\n";
    content = body("method not allowed: GET or HEAD\n");
  } else if (path == "/metrics") {
    if (!*rendered) {
      auto text = std::make_shared<std::string>();
      source.render_metrics(text.get());
      *rendered = std::move(text);
    }
    status = "200 OK";
    type = kExposition;
    content = *rendered;
  } else if (path == "/health") {
    std::string reason;
    const bool ok = source.healthy(&reason);
    status = ok ? "200 OK" : "503 Service Unavailable";
    content = body(ok ? "ok\n" : reason + "\n");
  } else {
    status = "404 Not Found";
    content = body("not found: try /metrics or /health\n");
  }
  c.head = head_of(status, type, content->size(), extra);
  if (method != "HEAD") c.body = std::move(content);
  std::string().swap(c.request);
  c.responding = true;
  c.deadline_ms = now_ms + kTimeoutMs;
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.ptr = &c;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  send_response(c);
}

void MetricsHttp::send_response(Connection& c) {
  const size_t body_size = c.body ? c.body->size() : 0;
  while (c.sent < c.head.size() + body_size) {
    iovec iov[2];
    int count = 0;
    if (c.sent < c.head.size()) iov[count++] = {&c.head[c.sent], c.head.size() - c.sent};
    if (body_size > 0) {
      const size_t from = c.sent > c.head.size() ? c.sent - c.head.size() : 0;
      iov[count++] = {const_cast<char*>(c.body->data()) + from, body_size - from};
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(count);
    const ssize_t n = ::sendmsg(c.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // EPOLLOUT brings it back
    if (n <= 0) break;
    c.sent += static_cast<size_t>(n);
  }
  // Sent (or the peer is gone). Input left unread would make close() send a reset, which can
  // throw the response away before the peer has read it: read what is there first.
  char drain[4096];
  for (int i = 0; i < 16 && ::recv(c.fd, drain, sizeof drain, MSG_DONTWAIT) > 0; i++) {
  }
  c.done = true;
}

int64_t MetricsHttp::next_timer_ms() const {
  int64_t next = accept_paused_until_ms_ != 0 ? accept_paused_until_ms_ : -1;
  for (const auto& c : connections_)
    if (next < 0 || c->deadline_ms < next) next = c->deadline_ms;
  return next;
}

void MetricsHttp::on_timers(int64_t now_ms) {
  if (accept_paused_until_ms_ != 0 && now_ms >= accept_paused_until_ms_) {
    accept_paused_until_ms_ = 0;
    pause_accepting(false);
  }
  for (auto& c : connections_)
    if (now_ms >= c->deadline_ms) c->done = any_done_ = true;  // too slow to ask, or to take
  sweep();
}

// Closes the connections that are done. Their epoll registrations go with their descriptors.
void MetricsHttp::sweep() {
  if (!any_done_) return;
  any_done_ = false;
  for (size_t i = 0; i < connections_.size();) {
    if (!connections_[i]->done) {
      i++;
      continue;
    }
    ::close(connections_[i]->fd);
    connections_[i] = std::move(connections_.back());
    connections_.pop_back();
  }
}
