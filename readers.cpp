// The readers of the server's engine: each read cursor copies stored entries into its
// connection's output, within the pass's budget, round-robin (doc/operations.md, "Fairness").
#include <algorithm>
#include <string>
#include <string_view>

#include "engine.hpp"

namespace tcp_log_server {

bool Server::Impl::reader_can_fill(Connection& c) {
  const ReadCursor& r = c.reader;
  if (!r.active() || c.dead || c.closing || c.retry_at_ms != 0 || !output_has_room(c)) return false;
  // Stopping: a read goes on only while a line of its connection waits behind its catch-up.
  if (shutting_down_ && !(r.catching_up() && has_line(c))) return false;
  return r.next <= store_->head() || (!r.current_sent && r.next > r.current_at) ||
         (r.kind == ReadCursor::Kind::Batch && r.remaining == 0);
}

bool Server::Impl::reader_waits_for_entries(const Connection& c) const {
  const ReadCursor& r = c.reader;
  return r.active() && !c.dead && !c.closing && r.next > store_->head();
}

void Server::Impl::fill_readers() {
  size_t budget = kPassReaderBudget;
  while (budget > 0 && !fill_queue_.empty()) {
    Connection& c = *fill_queue_.front();
    fill_queue_.pop_front();
    c.in_fill = false;
    touch(c);
    if (!reader_can_fill(c)) continue;  // refresh() at the end of the pass files it elsewhere
    const size_t cost = fill_reader(c, std::min(budget, kReaderQuantum));
    budget -= std::min(cost, budget);
    // Half the mark waiting: send now, so that the reader can go on in its next turn. Less
    // waits for the end of the pass: one send per reader per pass, not one per turn.
    if (c.output.size() >= kOutputHighWater / 2) flush(c);
    if (reader_can_fill(c)) queue_fill(c);
  }
}

size_t Server::Impl::fill_reader(Connection& c, size_t quantum) {
  ReadCursor& r = c.reader;
  const uint64_t head = store_->head();
  size_t cost = 0;
  while (cost < quantum && output_has_room(c)) {
    while (r.own_front < r.own_writes.size() && r.own_writes[r.own_front] < r.next) r.pop_own();
    if (r.kind == ReadCursor::Kind::Batch && r.remaining == 0) {
      // The head, short of the first of this connection's own writes the read did not send.
      const uint64_t h = r.own_front < r.own_writes.size()
                             ? std::min(head, r.own_writes[r.own_front] - 1) : head;
      reply::head(h, &c.output);
      r = ReadCursor();
      return cost + kMarkerCost;
    }
    if (!r.current_sent && r.next > r.current_at) {
      reply::current(&c.output);
      r.current_sent = true;
      cost += kMarkerCost;
      continue;
    }
    if (r.next > head) break;
    if (r.has_own(r.next)) {
      r.pop_own();
      if (r.kind == ReadCursor::Kind::Stream) {  // confirmed to it instead
        r.next++;
        cost += kMarkerCost;
        continue;
      }
    }
    if (append_entry(c, r.next, &cost) == EntryResult::Retry) break;
    r.next++;
    if (r.kind == ReadCursor::Kind::Batch) r.remaining--;
  }
  return cost;
}

Server::Impl::EntryResult Server::Impl::append_entry(Connection& c, uint64_t index, size_t* cost) {
  std::string_view bytes;
  ::Status s;
  if (recent_.find(index, &bytes)) {
    *cost += kEntryCost + bytes.size();
  } else {
    // Older entries come from disk.
    s = store_->read(index, &blob_);
    if (s.ok()) bytes = blob_;
    *cost += kDiskReadCost + blob_.size();
  }
  if (s.transient()) {
    // Not the entry's fault: try again later, from the same index.
    if (c.retry_since_ms == 0) {
      c.retry_since_ms = now_;
      c.retry_delay_ms = kReadRetryFirstMs;
      Event e = event(EventKind::ReadRetry, &c);
      e.index = index;
      e.error = s.error;
      emit(e);
    } else {
      c.retry_delay_ms = std::min(2 * c.retry_delay_ms, kReadRetryMaxMs);
    }
    if (now_ - c.retry_since_ms >= static_cast<int64_t>(limits_.read_retry_s) * 1000) {
      Event e = event(EventKind::ReadFailed, &c);
      e.index = index;
      e.error = s.error;
      emit(e);
      reply::error("cannot read entry " + std::to_string(index) + ": " + s.error, &c.output);
      set_close_reason(c, CloseReason::ReadFailed);
      c.closing = true;
      c.reader = ReadCursor();
      c.input.clear();
      set_line_started(c, 0);
      return EntryResult::Retry;
    }
    c.retry_at_ms = now_ + c.retry_delay_ms;
    queue_timed(c);
    return EntryResult::Retry;
  }
  if (c.retry_since_ms != 0) {
    Event e = event(EventKind::ReadResumed, &c);
    e.index = index;
    e.count = static_cast<uint64_t>(now_ - c.retry_since_ms);
    emit(e);
    c.retry_since_ms = 0;
  }
  if (s.ok()) {
    reply::entry(index, bytes, &c.output);
  } else {
    // Missing or damaged: the reader is told in the entry's place, and the read goes on.
    Event e = event(EventKind::EntryUnreadable);
    e.index = index;
    e.error = s.error;
    emit(e);
    reply::entry_error(index, s.error, &c.output);
  }
  if (blob_.capacity() >= kLargeLine) std::string().swap(blob_);  // keep no large scratch
  return EntryResult::Sent;
}

}  // namespace tcp_log_server
