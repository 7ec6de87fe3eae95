// The server's engine: one thread, one poll() loop (tcp-log-server.hpp is its contract).
//
// The path of the data, in the order of the sections below:
//   socket bytes -> line framer -> JSON parse -> message dispatch -> batch of writes
//   -> commit (blobs, index, one sync) -> confirmations and reader cursors -> socket bytes
// Each pass of the loop reads what sockets have, dispatches every complete line it may,
// commits the writes of the whole pass as one batch, then confirms them, lets readers advance
// within a budget shared round-robin, and flushes. Work in a pass is proportional to the
// connections that are active in it, not to all connections (see "The loop"); connections
// that have been quiet for a while wait for input in an epoll set that is one slot of the poll
// set (poller.hpp), so that one poll() costs what is active too (see "Parked connections").
// What it does is reported to the host's EventSink; it writes no log of its own.
#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <unordered_map>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "buffer.hpp"
#include "connection.hpp"
#include "store.hpp"
#include "json.hpp"
#include "message.hpp"
#include "poller.hpp"
#include "recent_entries.hpp"
#include "sha256.hpp"
#include "engine.hpp"
#include "monotonic.hpp"
#include "sockets.hpp"
#include "tcp-log-server.hpp"

namespace tcp_log_server {
namespace {

Status from_store(const ::Status& s) { return s.ok() ? Status::Ok() : Status::Error(s.error); }

}  // namespace

// =============================================================================================
// The store, as hosts see it: the internal Store (index.hpp) behind a pimpl.

struct Store::Impl {
  ::Store store;
  bool open = false;
};

Store::Store() : impl_(new Impl) {}
Store::~Store() = default;

Status Store::open(const StoreOptions& options, std::vector<std::string>* notes) {
  if (impl_->open) return Status::Error("the store is open already");
  ::Store::Options o{options.blobs_dir, options.index_dir,
                     options.sync == Sync::Always ? SyncMode::Always : SyncMode::None};
  o.journal_bytes = options.journal_bytes;
  o.journal_min_bytes = 4 * (options.max_message_bytes + 4096);
  std::vector<std::string> warnings;
  ::Status s = impl_->store.open(o, &warnings);
  if (notes) notes->insert(notes->end(), warnings.begin(), warnings.end());
  impl_->open = s.ok();
  return from_store(s);
}

Status Store::close() {
  if (!impl_->open) return Status::Ok();
  return from_store(impl_->store.close());
}

bool Store::is_open() const { return impl_->open; }
uint64_t Store::head() const { return impl_->store.head(); }
uint64_t Store::journal_bytes() const { return impl_->store.journal_bytes(); }

Server::Impl::Impl(::Store* store, const Limits& limits, EventSink* sink)
    : limits_(limits), store_(store), sink_(sink), scratch_(new char[kReadChunk]) {
  if (sink_)
    for (unsigned k = 0; k <= static_cast<unsigned>(EventKind::PollFailed); k++)
      if (sink_->wants(static_cast<EventKind>(k))) wanted_ |= 1u << k;
  // Limits: 0 picks the default; an input budget must hold one longest line and its "\r\n".
  limits_.max_message_bytes = std::max<uint64_t>(limits_.max_message_bytes, 64);
  const uint64_t one_line = limits_.max_message_bytes + 2;
  if (limits_.max_input_bytes == 0)
    limits_.max_input_bytes = std::max<uint64_t>(64ull * 1024 * 1024, 2 * one_line);
  limits_.max_input_bytes = std::max(limits_.max_input_bytes, one_line);
  if (limits_.max_connections == 0) {
    struct rlimit rl;
    const uint64_t descriptors = ::getrlimit(RLIMIT_NOFILE, &rl) != 0 ? 1024
                                 : rl.rlim_cur == RLIM_INFINITY     ? (1ull << 20)
                                                                    : static_cast<uint64_t>(rl.rlim_cur);
    limits_.max_connections = descriptors > 2 * kDescriptorReserve ? descriptors - kDescriptorReserve
                                                                   : std::max<uint64_t>(1, descriptors / 2);
  }
  std::string error;
  if (::pipe2(wake_pipe_, O_NONBLOCK | O_CLOEXEC) != 0) {
    broken_ = Status::Error(std::string("cannot create the wake pipe: ") + std::strerror(errno));
    return;
  }
  if (!poller_.open(&error)) {
    broken_ = Status::Error(error);
    return;
  }
  poller_.add(wake_pipe_[0], POLLIN);
  poller_.add(-1, POLLOUT);
  poller_.add(-1, POLLIN);
  poller_.add(poller_.parked_fd(), POLLIN);
  poller_.add(-1, POLLIN);  // the monitoring listener's, once it listens
  connections_.resize(kFixedSlots);
  first_connection_slot_ = kFixedSlots;
}

// Gives back every descriptor the server opened, so that a process may run one server after
// another (the protocol fuzz target runs one per input).
Server::Impl::~Impl() {
  for (auto& c : connections_)
    if (c) ::close(c->fd);
  for (int fd : listeners_) ::close(fd);  // begin_shutdown() closed them if it ran
  for (int fd : wake_pipe_)
    if (fd >= 0) ::close(fd);
}

// A listener's slot goes before the connections': a connection in the first connection slot
// moves to the end.
Status Server::Impl::add_listener(int fd, std::string_view host, bool report) {
  if (!broken_.ok()) {
    ::close(fd);
    return broken_;
  }
  if (shutting_down_) {
    ::close(fd);
    return Status::Error("the server is stopping");
  }
  const size_t slot = poller_.add(fd, POLLIN);
  connections_.emplace_back();
  if (slot != first_connection_slot_) {
    poller_.swap(slot, first_connection_slot_);
    std::swap(connections_[slot], connections_[first_connection_slot_]);
    connections_[slot]->slot = slot;
  }
  first_connection_slot_++;
  listeners_.push_back(fd);
  const uint16_t port = bound_port(fd);
  if (listeners_.size() == 1) port_ = port;
  // The first minute: what runs, where its data is, how much is in it.
  if (report && wants(EventKind::Listening)) {
    Event e = event(EventKind::Listening);
    e.port = port;
    e.address = host;
    e.head = store_->head();
    e.journal_bytes = store_->journal_bytes();
    if (metrics_http_) e.metrics_address = metrics_http_->address();
    emit(e);
  }
  return Status::Ok();
}

Status Server::Impl::adopt(int fd) {
  if (!broken_.ok() || shutting_down_) {
    ::close(fd);
    return broken_.ok() ? Status::Error("the server is stopping") : broken_;
  }
  sockaddr_storage ss{};
  std::string error;
  if (!take_over_socket(fd, false, &ss, &error)) {
    ::close(fd);
    return Status::Error(error);
  }
  now_ = now_ms();
  const PeerAddress peer = PeerAddress::from(ss);
  if (open_connections_ >= limits_.max_connections) refuse(fd, peer);
  else take_connection(fd, peer);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// The loop's lists and the poll set

void Server::Impl::touch(Connection& c) {
  if (c.in_touched) return;
  c.in_touched = true;
  touched_.push_back(&c);
}

void Server::Impl::queue_work(Connection& c) {
  if (c.in_work) return;
  c.in_work = true;
  work_.push_back(&c);
}

void Server::Impl::queue_fill(Connection& c) {
  if (c.in_fill) return;
  c.in_fill = true;
  fill_queue_.push_back(&c);
}

void Server::Impl::queue_timed(Connection& c) {
  if (c.in_timed) return;
  c.in_timed = true;
  timed_.push_back(&c);
}

void Server::Impl::set_line_started(Connection& c, int64_t when) {
  if ((c.line_started_ms != 0) != (when != 0)) {
    if (when != 0) partial_lines_++;
    else partial_lines_--;
  }
  c.line_started_ms = when;
}

void Server::Impl::add_connection(std::unique_ptr<Connection> c) {
  c->slot = poller_.add(c->fd, 0);
  c->events = 0;
  if (c->refused) refused_lingering_++;
  else open_connections_++;
  touch(*c);
  connections_.push_back(std::move(c));
}

void Server::Impl::remove_slot(size_t slot) {
  const size_t last = poller_.size() - 1;
  poller_.remove(slot);
  if (slot != last) {
    connections_[slot] = std::move(connections_[last]);
    connections_[slot]->slot = slot;
  }
  connections_.pop_back();
}

// ---------------------------------------------------------------------------------------------
// Parked connections
//
// poll() looks at every descriptor it is given on every call, ready or not: with 10,000 idle
// connections one call costs 2.5 ms here, and every write waits for it. So a connection that
// has wanted nothing but input for kParkAfterMs is parked: its descriptor moves to an epoll set
// (level-triggered, EPOLLIN) whose own descriptor is one slot of the poll set, and its slot
// holds -1. When epoll says it has input (or a hang-up or an error), it is unparked before its
// events are handled as poll()'s would be; when refresh() finds that it wants more than input
// (output to send, its input held back, a stop), it is unparked there. The loop stays one
// poll() loop; epoll only stands in for the quiet part of the poll set.

void Server::Impl::park(Connection& c) {
  // Out of memory for the epoll set (or over fs.epoll.max_user_watches): it stays in the poll set.
  if (!poller_.park(c.slot, c.fd, &c)) return;
  c.parked = true;
}

void Server::Impl::unpark(Connection& c) {
  poller_.unpark(c.slot, c.fd);
  c.parked = false;
}

// At most every kParkAfterMs, while some connection not parked waits only for input: park those
// that have been quiet for kParkAfterMs.
void Server::Impl::park_quiet() {
  park_candidates_ = false;
  next_park_ms_ = now_ + kParkAfterMs;
  for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++) {
    Connection& c = *connections_[slot];
    if (c.parked || c.dead || c.events != POLLIN || c.in_touched || c.in_work || c.in_fill) continue;
    if (now_ - c.quiet_since_ms >= kParkAfterMs) park(c);
    else park_candidates_ = true;
  }
}

void Server::Impl::on_parked_ready() {
  epoll_event ready[kParkedPerPass];
  const int n = poller_.ready_parked(ready, kParkedPerPass);
  for (int i = 0; i < n; i++) {
    Connection& c = *static_cast<Connection*>(ready[i].data.ptr);
    unpark(c);
    if (c.dead) continue;
    short revents = 0;
    if (ready[i].events & EPOLLIN) revents |= POLLIN;
    if (ready[i].events & EPOLLHUP) revents |= POLLHUP;
    if (ready[i].events & EPOLLERR) revents |= POLLERR;
    on_events(c, revents);
  }
}

// ---------------------------------------------------------------------------------------------
// Accepting

void Server::Impl::accept_connections(int listen_fd) {
  // A bounded number per pass, so that a flood of connections cannot hold up the others.
  for (int accepted = 0; accepted < 64; accepted++) {
    sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: stop accepting for a moment rather than spin on the listener.
        if (wants(EventKind::AcceptFailed)) {
          Event e = event(EventKind::AcceptFailed);
          e.error = std::strerror(errno);
          emit(e);
        }
        accept_paused_until_ms_ = now_ + 100;
        counters_.connections_refused[static_cast<size_t>(
            errno == EMFILE || errno == ENFILE ? RefuseReason::OutOfDescriptors : RefuseReason::OutOfMemory)]++;
      }
      return;
    }
    const PeerAddress peer = PeerAddress::from(ss);
    if (open_connections_ >= limits_.max_connections) {
      refuse(fd, peer);
      continue;
    }
    take_connection(fd, peer);
  }
}

// A connection accepted here or adopted from the host: keep-alive, no delay, and a bounded
// unsent queue (kUnsentLowWater).
void Server::Impl::take_connection(int fd, const PeerAddress& peer) {
  int one = 1, unsent = kUnsentLowWater;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &unsent, sizeof unsent);
  auto c = std::make_unique<Connection>(next_connection_id_++, fd, peer, limits_.max_message_bytes,
                                        &input_bytes_, &output_bytes_);
  counters_.connections_accepted++;
  if (wants(EventKind::ConnectionAccepted)) {
    const std::string address = peer.text();
    Event e = event(EventKind::ConnectionAccepted, c.get());
    e.address = address;
    e.port = peer.port;
    emit(e);
  }
  add_connection(std::move(c));
}

// Over MAX_CONNECTIONS: one error line, then close. The connection lingers briefly (not counted
// as open) so that the error is not lost to a reset; past kMaxRefusedLingering it closes at once.
void Server::Impl::refuse(int fd, const PeerAddress& peer) {
  std::string refusal;
  reply::error("too many connections", &refusal);
  refused_unlogged_++;
  counters_.connections_refused[static_cast<size_t>(RefuseReason::MaxConnections)]++;
  log_refused();
  if (refused_lingering_ >= kMaxRefusedLingering) {
    if (::send(fd, refusal.data(), refusal.size(), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
    }
    ::close(fd);
    return;
  }
  auto c = std::make_unique<Connection>(next_connection_id_++, fd, peer, limits_.max_message_bytes,
                                        &input_bytes_, &output_bytes_);
  c->refused = true;
  c->closing = true;
  c->output.append(refusal);
  add_connection(std::move(c));
}

// At most one warn line a second however many are refused; the count says how many.
void Server::Impl::log_refused() {
  if (refused_unlogged_ == 0 || now_ - refused_logged_ms_ < 1000) return;
  Event e = event(EventKind::Refused);
  e.count = refused_unlogged_;
  e.limit = limits_.max_connections;
  emit(e);
  refused_unlogged_ = 0;
  refused_logged_ms_ = now_;
}

// ---------------------------------------------------------------------------------------------
// Input: socket bytes -> lines

void Server::Impl::on_events(Connection& c, short revents) {
  touch(c);
  if (revents & POLLOUT) flush(c);
  if (!(revents & (POLLIN | POLLHUP | POLLERR)) || c.dead) return;
  if (c.events & POLLIN) {
    read_input(c);
  } else if (done_at_hangup(c, revents)) {
    // Our replies may still be in the kernel, not yet taken by the peer; input we will never
    // read (what followed a bad line) would make close() send a reset, which throws them
    // away. The peer has sent its end, so discarding that input comes to an end.
    if (!(revents & POLLERR)) discard_input(c);
    else set_close_reason(c, CloseReason::Reset);
    c.dead = true;
  }
}

void Server::Impl::discard_input(Connection& c) {
  while (::recv(c.fd, scratch_.get(), kReadChunk, MSG_DONTWAIT) > 0) {
  }
}

void Server::Impl::read_input(Connection& c) {
  // Never more than one longest line (and its "\r\n") of a connection's input.
  const size_t room = c.framer.max_input() - std::min(c.input.size(), c.framer.max_input());
  if (room == 0) return;
  ssize_t n = ::recv(c.fd, scratch_.get(), std::min(room, kReadChunk), 0);
  if (n > 0) {
    c.input.append(scratch_.get(), static_cast<size_t>(n));
    queue_work(c);
    return;
  }
  if (n == 0) {
    c.input_closed = true;
    queue_work(c);  // an unterminated last line is a line now
  } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    // Reset or failed: nothing more can be said to this peer.
    if (wants(EventKind::ConnectionError)) {
      Event e = event(EventKind::ConnectionError, &c);
      e.error = std::strerror(errno);
      emit(e);
    }
    set_close_reason(c, CloseReason::Reset);
    c.dead = true;
  }
}

void Server::Impl::dispatch_lines(Connection& c) {
  while (hold(c, NextLine::Any) == Hold::None) {
    LineFramer::Frame f = c.framer.next(c.input.view(), c.input_closed);
    if (f.kind == LineFramer::Kind::NeedMore) break;
    if (f.kind == LineFramer::Kind::TooLong) {
      if (hold(c, NextLine::ClosingError) == Hold::None)
        protocol_error(c, "message too large", "", CloseReason::TooLarge);
      break;
    }
    const bool blank = LineFramer::is_blank(f.line);
    Message m;
    if (!blank) {
      m = classify(doc_, f.line);
      const Hold h = hold(c, m.kind == Message::Kind::Write ? NextLine::Write : NextLine::Reply);
      if (h == Hold::Journal && !c.waits_for_journal) {
        // The write waits in the input, and so does everything after it (TCP holds the peer
        // back); wake_journal_waiters() lets it go when the checkpoint finishes.
        c.waits_for_journal = true;
        waiting_for_journal_.push_back(&c);
      }
      if (h != Hold::None) break;
      dispatch(c, m, f.line);
      if (f.line.size() >= kLargeLine) {
        doc_.release_memory();
        parser_released_ = true;
      }
    }
    if (c.closing) break;  // protocol_error() dropped the input
    c.input.consume(f.length);
    c.framer.consumed(f.length);
    set_line_started(c, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch: one parsed message -> batch, cursor or error reply

void Server::Impl::protocol_error(Connection& c, const char* error, std::string_view detail,
                                  CloseReason reason) {
  set_close_reason(c, reason);
  if (wants(EventKind::ProtocolError)) {
    Event e = event(EventKind::ProtocolError, &c);
    e.text = error;
    e.error = detail;
    emit(e);
  }
  reply::error(error, &c.output);
  // Writes before the bad line are still committed and confirmed; then the connection closes.
  c.closing = true;
  c.reader = ReadCursor();
  c.input.clear();
  set_line_started(c, 0);
}

void Server::Impl::dispatch(Connection& c, const Message& m, std::string_view line) {
  const json::Document& d = doc_;
  if (wants(EventKind::Message)) {
    Event e = event(EventKind::Message, &c);
    e.text = line;
    emit(e);
  }
  switch (m.kind) {
    case Message::Kind::NotJson:
      protocol_error(c, "invalid JSON", d.error(), CloseReason::InvalidJson);
      return;
    case Message::Kind::Invalid:
      if (wants(EventKind::InvalidMessage)) {
        Event e = event(EventKind::InvalidMessage, &c);
        e.text = line;
        emit(e);
      }
      reply::error("invalid message", &c.output);
      return;
    case Message::Kind::Read:
      if (c.reader.active()) {
        if (wants(EventKind::AlreadyReading)) emit(event(EventKind::AlreadyReading, &c));
        reply::error("already reading", &c.output);
        return;
      }
      c.reader = ReadCursor();
      c.reader.kind = m.read == 0 ? ReadCursor::Kind::Stream : ReadCursor::Kind::Batch;
      c.reader.next = m.from == 0 ? 1 : m.from;
      c.reader.current_at = store_->head();
      c.reader.remaining = m.read;
      queue_fill(c);  // its catch-up may start in this very pass
      return;
    case Message::Kind::Write: {
      PendingWrite w;
      w.connection = &c;
      w.id = d.decode_string(d[m.id]);
      d.write_canonical(static_cast<size_t>(m.entry), &w.bytes);
      w.hash = sha256_hex(w.bytes);
      batch_.push_back(std::move(w));
      c.pending_writes++;
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Commit: the pass's writes -> store (one sync per chunk) -> confirmations, visible to readers

void Server::Impl::commit_batch() {
  if (batch_.empty()) return;
  const uint64_t old_head = store_->head();
  std::vector<std::string_view> hashes, bytes;
  size_t done = 0;  // writes of batch_ answered: committed, or refused
  while (done < batch_.size()) {
    size_t end = std::min(batch_.size(), done + kMaxBatchEntries);
    hashes.clear();
    bytes.clear();
    for (size_t i = done; i < end; i++) {
      hashes.push_back(batch_[i].hash);
      bytes.push_back(batch_[i].bytes);
    }
    // The journal may take only some of them now: the rest wait for the checkpoint.
    const size_t room = store_->room_for(bytes);
    if (room == 0) break;
    if (room < end - done) {
      end = done + room;
      hashes.resize(room);
      bytes.resize(room);
    }
    uint64_t first = store_->head() + 1;
    const bool store_failed = !store_->writes_refused().empty();
    const uint64_t started = monotonic_ns();
    ::Status s = store_->commit(hashes, bytes);
    count_commit(s.ok(), store_failed, monotonic_ns() - started, bytes);
    if (!s.ok() && wants(EventKind::StorageError)) {
      Event e = event(EventKind::StorageError);
      e.error = s.error;
      e.count = end - done;
      emit(e);
    }
    for (size_t i = done; i < end; i++) {
      PendingWrite& w = batch_[i];
      Connection& c = *w.connection;
      c.pending_writes--;
      touch(c);
      if (s.ok()) {
        const uint64_t index = first + (i - done);
        ReadCursor& r = c.reader;
        if (r.active() && index >= r.next) r.own_writes.push_back(index);
        if (wants(EventKind::Appended)) {
          Event e = event(EventKind::Appended);
          e.index = index;
          e.text = w.hash;
          emit(e);
        }
        recent_.add(index, w.bytes);
        if (!c.dead) {
          reply::confirmed(w.id, index, &c.output);
          counters_.writes_confirmed++;
        }
      } else if (!c.dead) {
        reply::write_failed(w.id, s.error, &c.output);
      }
    }
    done = end;
    last_commit_ms_ = now_;
  }
  batch_.erase(batch_.begin(), batch_.begin() + static_cast<ptrdiff_t>(done));
  // Paced (Store::room_for()): the writes wait a moment for the store thread, no event; the
  // journal full, they wait for the checkpoint.
  const bool paced = !batch_.empty() && store_->paced();
  if (paced && !journal_paced_) counters_.journal_paced++;
  journal_paced_ = paced;
  if (!batch_.empty() && !journal_full_ && !paced) {
    counters_.journal_full++;
    Event e = event(EventKind::JournalFull);
    e.count = batch_.size();
    emit(e);
  }
  journal_full_ = !batch_.empty();
  // New entries: every reader that was waiting for them can go on.
  if (store_->head() != old_head) {
    for (Connection* c : live_) {
      c->in_live = false;
      if (!c->dead) queue_fill(*c);
    }
    live_.clear();
  }
}

// The checkpoint that ran in the background finished: the journal has room again (or, if it
// failed, every write from now on is refused with the reason).
void Server::Impl::on_checkpoint_finished() {
  ::Status s = store_->checkpoint_finished();
  if (s.ok()) counters_.checkpoint_seconds.observe_ns(store_->last_checkpoint_ns());
  else counters_.checkpoints_failed++;
  if (!s.ok()) {
    Event e = event(EventKind::CheckpointFailed);
    e.error = s.error;
    emit(e);
  } else {
    emit(event(EventKind::Checkpoint));
  }
  journal_full_ = false;  // commit_batch() tries the waiting writes again in this pass
}

// ---------------------------------------------------------------------------------------------
// What each connection wants next: the one place that answers "can this connection make
// progress?" The steps above and refresh() ask these functions and decide nothing of their own.

bool Server::Impl::has_line(Connection& c) {
  return c.framer.next(c.input.view(), c.input_closed).kind != LineFramer::Kind::NeedMore;
}

bool Server::Impl::output_has_room(const Connection& c) const {
  return c.output.size() < kOutputHighWater &&
         (output_bytes_ < limits_.max_output_bytes || c.output.size() < kOutputFloor);
}

Server::Impl::Hold Server::Impl::hold(const Connection& c, NextLine next) const {
  if (c.dead || c.closing) return Hold::Finished;
  // An error that closes the connection (a line too long, or not finished in time) cuts a
  // read short and sends no more output of its own worth waiting for: it waits only for the
  // confirmations of this connection's writes in the batch, which go out first.
  if (next == NextLine::ClosingError) return c.pending_writes > 0 ? Hold::OwnWrites : Hold::None;
  // A read's catch-up goes out before the reply to anything sent after the read.
  if (c.reader.catching_up()) return Hold::CatchUp;
  if (!output_has_room(c)) return Hold::OutputFull;
  // A write of it waits for the journal's checkpoint, or writes of it wait in the batch for
  // it: so does everything behind them. (Those in the batch are committed, and their
  // connection touched, when the checkpoint finishes.)
  if (c.waits_for_journal || (c.pending_writes > 0 && journal_full_)) return Hold::Journal;
  // Replies keep the order of messages: anything but a write waits until this connection's
  // writes in the batch are committed and confirmed (and a read then sees them).
  if (next == NextLine::Reply && c.pending_writes > 0) return Hold::OwnWrites;
  // The journal has no room until its checkpoint finishes.
  if (next == NextLine::Write && journal_full_) return Hold::Journal;
  return Hold::None;
}

bool Server::Impl::done_at_hangup(Connection& c, short revents) {
  // Reset, or hung up both ways while its input is not read: done unless a line of it is left
  // to answer or replies are left to send. Without this, poll() would report the hang-up on
  // every pass (it reports POLLHUP and POLLERR whatever events are asked for). A TCP socket
  // reports POLLHUP without POLLERR only once both ways are shut, and our way is shut only by
  // close_if_finished(), once nothing is left: so a held line never meets a hang-up here.
  return (revents & POLLERR) || (c.output.empty() && !has_line(c));
}

short Server::Impl::wanted_events(Connection& c) {
  short events = 0;
  // Input is read while there is room for it and nothing already read is waiting: a line that
  // cannot be dispatched yet holds back the peer (TCP), not our memory.
  if (!shutting_down_ && !c.input_closed && !c.closing && output_has_room(c) &&
      c.input.size() < c.framer.max_input() && !has_line(c))
    events |= POLLIN;
  if (!c.output.empty()) events |= POLLOUT;
  return events;
}

// ---------------------------------------------------------------------------------------------
// Output and closing

void Server::Impl::flush(Connection& c) {
  while (!c.dead && !c.output.empty()) {
    ssize_t n = ::send(c.fd, c.output.data(), c.output.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.output.consume(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    set_close_reason(c, CloseReason::Reset);
    c.dead = true;  // EPIPE, ECONNRESET: the peer is gone
  }
}

void Server::Impl::close_if_finished(Connection& c) {
  if (c.dead || !c.output.empty() || c.pending_writes > 0) return;
  bool finished;
  if (c.closing) {
    finished = true;
  } else if (shutting_down_) {
    // Stopping: once no line is left that could still be dispatched (a line behind a read's
    // catch-up waits for it; reader_can_fill() lets that catch-up go on).
    finished = !has_line(c);
  } else {
    // After a half-close: once every line is answered and a read has reached "current".
    finished = c.input_closed && c.input.empty() && !c.reader.catching_up();
  }
  if (!finished) return;
  if (!c.input_closed) {
    // The peer may still be sending. close() with unread input sends a reset, and a reset
    // throws away whatever of our replies the peer's kernel has not acknowledged yet: so
    // send our FIN, and close only once every byte we sent is acknowledged, or time is up.
    if (c.linger_until_ms == 0) {
      ::shutdown(c.fd, SHUT_WR);
      c.linger_until_ms = now_ + (c.refused ? kRefusedLingerMs : kLingerMs);
      queue_timed(c);
    }
    int unacked = 0;
    if (::ioctl(c.fd, SIOCOUTQ, &unacked) == 0 && unacked > 0 && now_ < c.linger_until_ms) return;
  }
  c.dead = true;
}

// The one place that files a connection after its pass: what to poll for, which list it
// belongs to, and whether it is done.
void Server::Impl::refresh(Connection& c) {
  if (c.dead) return;
  close_if_finished(c);
  if (c.dead) return;
  const short events = wanted_events(c);
  if (events != c.events) {
    c.events = events;
    poller_.set_events(c.slot, events);
  }
  if (events == POLLIN) {  // quiet from now on, unless something comes
    c.quiet_since_ms = now_;
    if (!c.parked) park_candidates_ = true;
  } else if (c.parked) {
    unpark(c);
  }
  // LINE_TIMEOUT runs from the first byte of an unfinished line; a complete line that waits
  // for its turn is not the peer's delay.
  const bool line = has_line(c);
  if (line || c.input.empty()) set_line_started(c, 0);
  else if (c.line_started_ms == 0) set_line_started(c, now_);
  if (line && hold(c, NextLine::Any) == Hold::None) queue_work(c);
  if (reader_can_fill(c)) {
    queue_fill(c);
  } else if (!c.in_live && reader_waits_for_entries(c)) {
    c.in_live = true;
    live_.push_back(&c);
  }
}

// Lingering connections and readers waiting to retry, on their own clock.
void Server::Impl::check_timers() {
  size_t kept = 0;
  for (Connection* c : timed_) {
    if (c->dead) {
      c->in_timed = false;
      continue;
    }
    bool waiting = false;
    if (c->retry_at_ms != 0) {
      if (now_ >= c->retry_at_ms) {
        c->retry_at_ms = 0;
        touch(*c);  // refresh() puts the reader back in the fill queue
      } else {
        waiting = true;
      }
    }
    if (c->linger_until_ms != 0) {
      touch(*c);  // close_if_finished() looks at the acknowledgements again
      waiting = true;
    }
    if (waiting) timed_[kept++] = c;
    else c->in_timed = false;
  }
  timed_.resize(kept);
}

// Once a second while needed: lines not finished in time, the refused-connections line, and
// memory given back to the system after a burst.
void Server::Impl::housekeeping() {
  next_housekeeping_ms_ = now_ + 1000;
  log_refused();
  if (limits_.line_timeout_s > 0 && partial_lines_ > 0) {
    const int64_t limit = static_cast<int64_t>(limits_.line_timeout_s) * 1000;
    for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++) {
      Connection& c = *connections_[slot];
      if (c.line_started_ms == 0 || now_ - c.line_started_ms < limit) continue;
      if (hold(c, NextLine::ClosingError) != Hold::None) continue;
      protocol_error(c, "message timeout", "a line was not finished within LINE_TIMEOUT",
                     CloseReason::LineTimeout);
      touch(c);
    }
  }
  const size_t held = input_bytes_ + output_bytes_;
  if (buffer_peak_ - std::min(buffer_peak_, held) >= kTrimAfterBytes ||
      closed_since_trim_ >= kTrimAfterClosed || parser_released_) {
    // The per-connection arrays keep the capacity of the most connections there ever were.
    auto shrink = [](auto& v) {
      if (v.capacity() > 1024 && v.size() * 4 < v.capacity()) v.shrink_to_fit();
    };
    poller_.shrink();
    shrink(connections_);
    shrink(work_);
    shrink(pass_work_);
    shrink(live_);
    shrink(touched_);
    shrink(timed_);
    shrink(batch_);
    fill_queue_.shrink_to_fit();
    ::malloc_trim(0);
    closed_since_trim_ = 0;
    parser_released_ = false;
  }
  buffer_peak_ = held;
}

// Over MAX_INPUT_BYTES: close connections, oldest unfinished line first (a peer that trickles
// a line holds memory longest), until the input held fits again.
void Server::Impl::evict_input() {
  while (input_bytes_ > limits_.max_input_bytes) {
    Connection* victim = nullptr;
    for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++) {
      Connection* c = connections_[slot].get();
      if (c->closing || c->dead || c->input.capacity() == 0) continue;
      if (!victim) {
        victim = c;
        continue;
      }
      // Unfinished lines first, oldest first; else whoever holds the most.
      const bool c_partial = c->line_started_ms != 0, v_partial = victim->line_started_ms != 0;
      if (c_partial != v_partial ? c_partial
                                 : (c_partial ? c->line_started_ms < victim->line_started_ms
                                              : c->input.capacity() > victim->input.capacity()))
        victim = c;
    }
    if (!victim) return;
    Event e = event(EventKind::Evicted, victim);
    e.count = victim->input.capacity();
    e.limit = limits_.max_input_bytes;
    emit(e);
    protocol_error(*victim, "server input buffers full", "", CloseReason::InputLimit);
    touch(*victim);
  }
}

void Server::Impl::wake_journal_waiters() {
  for (Connection* c : waiting_for_journal_) {
    c->waits_for_journal = false;
    touch(*c);  // refresh() queues its lines again
  }
  waiting_for_journal_.clear();
}

void Server::Impl::sweep() {
  if (!any_dead_) return;
  any_dead_ = false;
  // Writes of a dead connection that wait for the journal go with it: nobody waits for them.
  batch_.erase(std::remove_if(batch_.begin(), batch_.end(),
                              [](const PendingWrite& w) { return w.connection->dead; }),
               batch_.end());
  // The dead are freed below: first no list may keep them.
  auto drop_dead = [](auto& list) {
    list.erase(std::remove_if(list.begin(), list.end(), [](Connection* c) { return c->dead; }),
               list.end());
  };
  drop_dead(work_);
  drop_dead(fill_queue_);
  drop_dead(live_);
  drop_dead(timed_);
  drop_dead(waiting_for_journal_);
  for (size_t slot = first_connection_slot_; slot < connections_.size();) {
    Connection& c = *connections_[slot];
    if (!c.dead) {
      slot++;
      continue;
    }
    if (c.parked) unpark(c);
    if (c.refused) {
      refused_lingering_--;
    } else {
      open_connections_--;
      count_closed(c);
      if (wants(EventKind::ConnectionClosed)) {
        const std::string address = c.peer.text();
        Event e = event(EventKind::ConnectionClosed, &c);
        e.address = address;
        e.port = c.peer.port;
        emit(e);
      }
    }
    set_line_started(c, 0);
    closed_since_trim_++;
    const int fd = c.fd;
    remove_slot(slot);  // the last connection moves into this slot: look at it next
    ::close(fd);        // after the poll set forgot it
  }
}

void Server::Impl::begin_shutdown() {
  shutting_down_ = true;
  shutdown_deadline_ms_ = now_ + kShutdownFlushMs;
  for (size_t slot = kFixedSlots; slot < first_connection_slot_; slot++) poller_.set_fd(slot, -1);
  for (int fd : listeners_) ::close(fd);
  listeners_.clear();
  Event e = event(EventKind::Stopping);
  e.count = open_connections_;
  emit(e);
  // Every connection stops reading and decides whether it is done.
  for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++)
    touch(*connections_[slot]);
}

// ---------------------------------------------------------------------------------------------
// The loop: it only moves data between the steps above.

int Server::Impl::poll_timeout() {
  if (!work_.empty() || !fill_queue_.empty() || !touched_.empty()) return 0;
  int64_t wake = -1;
  auto at = [&](int64_t when) {
    if (wake < 0 || when < wake) wake = when;
  };
  for (Connection* c : timed_) {
    if (c->linger_until_ms != 0) at(now_ + 10);  // acknowledgements wake nobody
    if (c->retry_at_ms != 0) at(c->retry_at_ms);
  }
  if (shutting_down_) at(now_ + 10);
  if (store_->can_checkpoint()) at(last_commit_ms_ + kCheckpointIdleMs);
  // Writes paced to the store thread: its progress sends no event; look again shortly.
  if (journal_full_ && store_->paced()) at(now_ + kPacedRetryMs);
  if (park_candidates_) at(next_park_ms_);
  if (accept_paused_until_ms_ > now_) at(accept_paused_until_ms_);
  if (metrics_http_ && metrics_http_->next_timer_ms() >= 0) at(metrics_http_->next_timer_ms());
  if (refused_unlogged_ > 0 || (limits_.line_timeout_s > 0 && partial_lines_ > 0) ||
      buffer_peak_ >= input_bytes_ + output_bytes_ + kTrimAfterBytes ||
      closed_since_trim_ >= kTrimAfterClosed || parser_released_)
    at(next_housekeeping_ms_);
  if (wake < 0) return -1;
  return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(wake - now_, 1000)));
}

void Server::Impl::handle_events(int ready) {
  for (size_t slot = 0; slot < poller_.size() && ready > 0; slot++) {
    const short revents = poller_.take_revents(slot);
    if (revents == 0) continue;
    ready--;
    if (slot == kWakeSlot) {
      char drain[64];
      while (::read(wake_pipe_[0], drain, sizeof drain) > 0) {
      }
      if (!shutting_down_) begin_shutdown();
    } else if (slot == kSinkSlot) {
      sink_->on_writable();
    } else if (slot == kCheckpointSlot) {
      on_checkpoint_finished();
    } else if (slot == kParkedSlot) {
      on_parked_ready();
    } else if (slot == kMetricsSlot) {
      on_metrics_ready();
    } else if (slot < first_connection_slot_) {
      if (!shutting_down_) accept_connections(poller_.fd(slot));
    } else {
      on_events(*connections_[slot], revents);
    }
  }
}

// One pass: poll, then each step in the order of the data's path.
Status Server::Impl::run_once(int timeout_ms) {
  if (!broken_.ok()) return broken_;
  if (stopped_) return Status::Ok();
  now_ = now_ms();
  if (!started_) {
    started_ = true;
    Event e = event(EventKind::Ready);
    e.port = port_;
    e.head = store_->head();
    emit(e);
  }
  const bool accepting = !shutting_down_ && now_ >= accept_paused_until_ms_;
  for (size_t slot = kFixedSlots; slot < first_connection_slot_; slot++)
    poller_.set_events(slot, accepting ? POLLIN : 0);
  poller_.set_fd(kSinkSlot, sink_ ? sink_->writable_fd() : -1);
  poller_.set_fd(kCheckpointSlot, store_->checkpoint_fd());
  int timeout = poll_timeout();
  if (timeout_ms >= 0 && (timeout < 0 || timeout_ms < timeout)) timeout = timeout_ms;
  int n = poller_.wait(timeout);
  if (n < 0 && errno != EINTR) {
    const std::string error = std::strerror(errno);
    Event e = event(EventKind::PollFailed);
    e.error = error;
    emit(e);
    return Status::Error("poll failed: " + error);
  }
  now_ = now_ms();
  if (n > 0) handle_events(n);
  if (!timed_.empty()) check_timers();
  if (metrics_http_ && metrics_http_->next_timer_ms() >= 0 && now_ >= metrics_http_->next_timer_ms())
    metrics_http_->on_timers(now_);
  if (now_ >= next_housekeeping_ms_) housekeeping();

  // Lines: every connection with something new dispatches what it may.
  pass_work_.swap(work_);
  for (Connection* c : pass_work_) {
    c->in_work = false;
    touch(*c);
    dispatch_lines(*c);
  }
  pass_work_.clear();
  if (input_bytes_ > limits_.max_input_bytes) evict_input();
  commit_batch();
  if (!journal_full_ && !waiting_for_journal_.empty()) wake_journal_waiters();
  // A pause in writes: a checkpoint now keeps the journal short and the next recovery quick.
  if (now_ - last_commit_ms_ >= kCheckpointIdleMs) store_->checkpoint_if_possible();
  fill_readers();
  // The end of the pass: what changed is flushed and filed for the next one.
  buffer_peak_ = std::max(buffer_peak_, input_bytes_ + output_bytes_);
  for (size_t i = 0; i < touched_.size(); i++) {  // refresh() may touch no one new
    Connection& c = *touched_[i];
    c.in_touched = false;
    flush(c);
    refresh(c);
    check_invariants(c);
    any_dead_ = any_dead_ || c.dead;
  }
  touched_.clear();
  sweep();
  if (park_candidates_ && now_ >= next_park_ms_) park_quiet();
  check_pass_invariants();

  if (shutting_down_ && (open_connections_ + refused_lingering_ == 0 || now_ >= shutdown_deadline_ms_)) {
    // Done when every connection is closed by close_if_finished(), or time is up.
    for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++)
      connections_[slot]->dead = true;
    any_dead_ = true;
    sweep();
    stopped_ = true;
    poller_.set_fd(kMetricsSlot, -1);
    metrics_http_.reset();  // its /health said "stopping" until now
    emit(event(EventKind::Stopped));
  }
  return Status::Ok();
}

// What poll_timeout() said at the last pass, less the time since.
int Server::Impl::timeout_ms() {
  if (stopped_ || !broken_.ok()) return -1;
  if (!started_) return 0;
  const int timeout = poll_timeout();
  if (timeout <= 0) return timeout;
  return static_cast<int>(std::max<int64_t>(0, timeout - (now_ms() - now_)));
}

// The rules the comments state, checked where the pass files a connection (on in the test and
// sanitizer builds, which do not define NDEBUG).
void Server::Impl::check_invariants([[maybe_unused]] const Connection& c) const {
#ifndef NDEBUG
  // A parked connection's slot holds -1: poll() must not see it twice.
  assert(!c.parked || poller_.fd(c.slot) == -1);
  assert(c.parked || c.dead || poller_.fd(c.slot) == c.fd);
  assert(connections_[c.slot].get() == &c);
  assert(!c.in_touched);  // the end of the pass took it off the list
  assert(c.pending_writes == 0 || !batch_.empty());
#endif
}

// The rules that tie the loop's lists to the connections, checked whole at the end of a pass:
// each list holds exactly the connections whose flag says so, each once, and pending_writes
// counts a connection's writes in the batch exactly. It walks every connection, so it runs
// only where that costs nothing: in a build with TCP_LOG_SERVER_DEEP_CHECKS (the sanitizer
// build), or, with assertions on, while at most kDeepCheckConnections are open (every test
// but the crowd ones).
void Server::Impl::check_pass_invariants() const {
#ifndef NDEBUG
#ifndef TCP_LOG_SERVER_DEEP_CHECKS
  if (connections_.size() - first_connection_slot_ > kDeepCheckConnections) return;
#endif
  std::unordered_map<const Connection*, uint32_t> writes;
  for (const PendingWrite& w : batch_) writes[w.connection]++;
  size_t flagged[6] = {};
  for (size_t slot = first_connection_slot_; slot < connections_.size(); slot++) {
    const Connection& c = *connections_[slot];
    assert(c.slot == slot);
    assert(!c.dead);  // sweep() freed them
    auto w = writes.find(&c);
    assert(c.pending_writes == (w == writes.end() ? 0 : w->second));
    flagged[0] += c.in_work;
    flagged[1] += c.in_fill;
    flagged[2] += c.in_live;
    flagged[3] += c.in_timed;
    flagged[4] += c.waits_for_journal;
    flagged[5] += c.in_touched;
  }
  // Every member carries its flag; as many carry it as there are members: so none is missing
  // and none is there twice.
  for (const Connection* c : work_) assert(c->in_work);
  for (const Connection* c : fill_queue_) assert(c->in_fill);
  for (const Connection* c : live_) assert(c->in_live);
  for (const Connection* c : timed_) assert(c->in_timed);
  for (const Connection* c : waiting_for_journal_) assert(c->waits_for_journal);
  assert(flagged[0] == work_.size());
  assert(flagged[1] == fill_queue_.size());
  assert(flagged[2] == live_.size());
  assert(flagged[3] == timed_.size());
  assert(flagged[4] == waiting_for_journal_.size());
  assert(flagged[5] == 0 && touched_.empty());
  // Writes wait in the batch between passes only while the journal is full.
  assert(batch_.empty() || journal_full_);
#endif
}

// =============================================================================================
// The public face (tcp-log-server.hpp)

Server::Server(Store& store, const Limits& limits, EventSink* sink)
    : impl_(new Impl(&store.impl_->store, limits, sink)) {}
Server::~Server() = default;

Status Server::listen(const std::string& host, uint16_t port) {
  if (!impl_->broken_.ok()) return impl_->broken_;
  std::vector<int> fds;
  std::string error;
  if (!open_listeners(host, port, &fds, &error)) return Status::Error(error);
  // One Listening event for the call: "localhost" is two sockets on one port.
  Status s;
  for (size_t i = 0; i < fds.size(); i++)
    if (s.ok()) s = impl_->add_listener(fds[i], host, i == 0);
    else ::close(fds[i]);
  return s;
}

Status Server::adopt_listener(int fd) {
  std::string error;
  if (!take_over_socket(fd, true, nullptr, &error)) {
    ::close(fd);
    return Status::Error(error);
  }
  return impl_->add_listener(fd, bound_address(fd), true);
}

Status Server::adopt(int fd) { return impl_->adopt(fd); }
uint16_t Server::port() const { return impl_->port_; }

Status Server::run() {
  while (!impl_->stopped_) {
    Status s = impl_->run_once(-1);
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

int Server::fd() { return impl_->poller_.host_fd(); }
int Server::timeout_ms() const { return impl_->timeout_ms(); }
Status Server::run_once(int timeout_ms) { return impl_->run_once(timeout_ms); }
bool Server::stopping() const { return impl_->shutting_down_; }
bool Server::stopped() const { return impl_->stopped_; }

void Server::stop() {
  const int saved = errno;
  char b = 1;
  if (impl_->wake_pipe_[1] >= 0 && ::write(impl_->wake_pipe_[1], &b, 1) < 0) {
  }
  errno = saved;
}

}  // namespace tcp_log_server

