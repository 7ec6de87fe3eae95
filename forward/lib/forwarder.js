'use strict'
// The forwarding loop: entry N of the log becomes message N of the stream.
//
// The one rule that makes it safe: every publish of entry N carries the expected-last-sequence
// header N-1 (and the message id N), so the stream stores it only as message N, right after
// message N-1. A duplicate (a retry, a second forwarder) or a gap (an entry lost in flight)
// is refused by JetStream itself, whatever this process believes. So the forwarder may keep
// many publishes in flight, may be killed at any instant, and after any failure it simply
// starts a new session:
//
//   1. read the stream's last sequence L;
//   2. check that message L is entry L of the log, byte for byte (refuse for good if not);
//   3. stream-read the log from L+1 and publish each entry, at most a window of them unacknowledged.
//
// A session ends on the first failure of either side; the next one starts after a backoff.

const { performance } = require('node:perf_hooks')
const { LogConnection } = require('./log-connection')
const js = require('./jetstream')
const { FatalError } = js

const CONNECT_TIMEOUT_MS = 5000

class SessionError extends Error {}

class Forwarder {
  // nc: a connected NatsConnection; log: ./log.js
  constructor (config, nc, log) {
    this.config = config
    this.nc = nc
    this.log = log
    this.js = nc.jetstream({ timeout: config.ackTimeout * 1000 })
    this.stopping = false
    this.wake = null // resolves the current backoff sleep early on stop
    this.session = null // the running session's state
    this.forwarded = 0 // acknowledged in this process's life
    this.head = 0 // highest index known to exist in the log
    this.acked = 0 // the stream's last sequence as we know it
    this.reportedLag = 0
  }

  // Runs sessions until stopped, or (--once) until the log's head at start is in the stream.
  // Resolves with the exit status; a FatalError rejects.
  async run () {
    const lagTimer = setInterval(() => this._reportLag(), this.config.lagInterval * 1000)
    let failures = 0
    try {
      while (!this.stopping) {
        const before = this.forwarded
        const started = Date.now()
        try {
          await this._session()
          if (this.config.once || this.stopping) return 0
        } catch (error) {
          if (error instanceof FatalError) throw error
          if (this.stopping) return 0
          // A session that made progress, or ran a while, starts the backoff over.
          if (this.forwarded > before || Date.now() - started > 10000) failures = 0
          const delay = this._backoff(failures++)
          this.log.warn('retry', `${error.message}; starting over in ${delay} ms`, { error: error.message, delayMs: delay, attempt: failures })
          await this._sleep(delay)
        }
      }
      return 0
    } finally {
      clearInterval(lagTimer)
    }
  }

  // Stops reading, waits (bounded) for the publishes in flight, and lets run() resolve.
  async stop () {
    this.stopping = true
    if (this.wake) this.wake()
    const s = this.session
    if (s) {
      s.conn.pause()
      await Promise.race([Promise.allSettled([...s.inFlight]), new Promise((resolve) => setTimeout(resolve, 2000))])
      s.finish(null, false)
    }
  }

  _backoff (failures) {
    const base = Math.min(this.config.maxBackoff * 1000, 100 * 2 ** failures)
    return Math.round(base / 2 + Math.random() * base / 2)
  }

  _sleep (ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.wake = () => { clearTimeout(timer); resolve() }
    }).finally(() => { this.wake = null })
  }

  async _session () {
    const { config, log } = this
    const jsm = await this.nc.jetstreamManager({ checkAPI: false, timeout: config.ackTimeout * 1000 })
    const info = await js.findStream(jsm, config, log)
    js.checkStream(info, config, log)
    const last = info.state.last_seq
    const conn = await LogConnection.open(config.logServer, CONNECT_TIMEOUT_MS)
    try {
      if (last > 0) await this._checkLast(jsm, conn, last, info)
      this.acked = last
      this.head = Math.max(this.head, last)
      log.info('resuming', `stream ${config.stream} holds ${last === 0 ? 'no entry' : `entries 1 to ${last}`}; forwarding from ${last + 1}`,
        { stream: config.stream, last, from: last + 1, head: this.head })
      if (!this.stopping) await this._forward(conn, last)
    } finally {
      conn.close()
      this.session = null
    }
  }

  // Message L of the stream must be entry L of the log, byte for byte: else this stream holds
  // another log (or this log lost entries) and nothing may be appended. A batch read of one
  // entry answers with the entry and {"head":H}, or, if the log has fewer than L entries,
  // with {"current":true} first.
  async _checkLast (jsm, conn, last, info) {
    const { config } = this
    let stored
    try {
      stored = await jsm.streams.getMessage(config.stream, { seq: last })
    } catch (error) {
      if (js.apiCode(error) === js.ERR_NO_MESSAGE_FOUND) {
        throw new FatalError(`refusing to forward: stream ${config.stream} no longer holds its last message ${last} (first sequence ${info.state.first_seq}), so it cannot be checked against entry ${last} of the log at ${config.logServer.text}`)
      }
      throw error
    }
    const reply = await new Promise((resolve, reject) => {
      let entry = null
      const timer = setTimeout(() => reject(new SessionError(`the log server at ${config.logServer.text} did not answer a read of entry ${last} within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS)
      const done = (value) => { clearTimeout(timer); resolve(value) }
      conn.onClose = (error) => { clearTimeout(timer); reject(error) }
      conn.onLine = (line) => {
        if (line.kind === 'entry' && line.index === last) entry = Buffer.from(line.bytes)
        else if (line.kind === 'head' && entry) done({ entry, head: line.head })
        else if (line.kind === 'current') done({ entry: null })
        else if (line.kind === 'damaged') done({ damaged: line.error })
        else { clearTimeout(timer); reject(new SessionError(`unexpected reply from the log server at ${config.logServer.text} to a read of entry ${last}: ${JSON.stringify(line)}`)) }
      }
      conn.send({ from: last, read: 1 })
    })
    const where = `the log at ${config.logServer.text}`
    if (reply.damaged !== undefined) {
      throw new FatalError(`refusing to forward: entry ${last} of ${where} cannot be read back (${reply.damaged}), so stream ${config.stream}'s message ${last} cannot be checked against it`)
    }
    if (reply.entry === null) {
      throw new FatalError(`refusing to forward: stream ${config.stream} holds ${last} messages but ${where} has fewer entries: the stream holds another log, or this log lost entries`)
    }
    const data = Buffer.from(stored.data)
    if (stored.subject !== config.subject || !data.equals(reply.entry)) {
      throw new FatalError(`refusing to forward: message ${last} of stream ${config.stream} (subject ${stored.subject}, ${data.length} bytes: ${preview(data)}) is not entry ${last} of ${where} (${reply.entry.length} bytes: ${preview(reply.entry)}): the stream holds another log`)
    }
    this.head = Math.max(this.head, reply.head)
  }

  // Stream-reads the log from last+1 and publishes each entry, conditionally. Resolves (--once)
  // when every entry up to the head at the read is acknowledged, or on stop; rejects on the
  // first failure, after the publishes in flight have settled.
  _forward (conn, last) {
    const { config, log } = this
    return new Promise((resolve, reject) => {
      const s = {
        conn,
        inFlight: new Set(),
        inFlightBytes: 0,
        next: last + 1, // the index the log must send next
        currentAt: null, // the head when the read caught up
        caughtUpLogged: false,
        failed: null,
        finish: null
      }
      this.session = s
      s.finish = (error, waitForInFlight = true) => {
        if (s.failed) return
        s.failed = error || 'done'
        conn.pause()
        conn.onLine = () => {}
        conn.onClose = () => {}
        // The settled publishes decide nothing more (JetStream already did): wait for them only
        // so that the next session does not race its own leftovers. Each is bounded by ackTimeout.
        Promise.allSettled(waitForInFlight ? [...s.inFlight] : []).then(() => {
          conn.close()
          if (error) reject(error)
          else resolve()
        })
      }
      const fail = (error) => s.finish(error)
      const windowFull = () => s.inFlight.size >= config.maxInFlight || s.inFlightBytes >= config.maxInFlightBytes

      const checkCaughtUp = () => {
        if (s.currentAt === null || this.acked < s.currentAt) return
        if (!s.caughtUpLogged) {
          s.caughtUpLogged = true
          this.reportedLag = 0
          log.info('caught-up', `caught up: stream ${config.stream} holds entries 1 to ${this.acked}`, { stream: config.stream, index: this.acked, forwarded: this.forwarded })
        }
        if (config.once) s.finish(null)
      }

      conn.onClose = (error) => fail(new SessionError(error.message))
      conn.onLine = (line) => {
        if (s.failed) return
        if (line.kind === 'entry') {
          if (line.index !== s.next) return fail(new SessionError(`the log server sent entry ${line.index} where ${s.next} was expected`))
          s.next++
          if (line.index > this.head) this.head = line.index
          publish(line.index, line.bytes)
          if (windowFull()) conn.pause()
        } else if (line.kind === 'current') {
          s.currentAt = s.next - 1
          checkCaughtUp()
        } else if (line.kind === 'damaged') {
          fail(new FatalError(`entry ${line.index} of the log at ${config.logServer.text} cannot be read back (${line.error}); it cannot be forwarded, and nothing after it can`))
        } else {
          fail(new SessionError(`the log server at ${config.logServer.text} answered ${line.kind === 'error' ? line.error : JSON.stringify(line)}`))
        }
      }

      const publish = (index, bytes) => {
        const size = bytes.length
        const promise = this.js.publish(config.subject, bytes, {
          msgID: String(index),
          expect: { lastSequence: index - 1 },
          timeout: config.ackTimeout * 1000
        }).then((ack) => {
          // A duplicate ack (message id seen within the window) names the message stored first:
          // fine when it is this index; anything else means the stream is not the log's.
          if (ack.seq !== index) throw new SessionError(`stream ${config.stream} acknowledged entry ${index} as message ${ack.seq}${ack.duplicate ? ' (a duplicate)' : ''}`)
          if (index > this.acked) {
            this.forwarded += index - this.acked
            this.acked = index
          }
          // `at`: the wall clock with microseconds, for make forward-bench's lag figures.
          log.trace('acked', `entry ${index} is message ${index}`, { index, at: +(performance.timeOrigin + performance.now()).toFixed(3) })
          checkCaughtUp()
        }).catch((error) => {
          if (error instanceof SessionError) return fail(error)
          const code = js.apiCode(error)
          if (code === js.ERR_MESSAGE_TOO_LARGE || error.code === 'MAX_PAYLOAD_EXCEEDED') {
            return fail(new FatalError(`entry ${index} (${size} bytes) is larger than NATS accepts (${error.message}): raise the server's max_payload and the stream's max_msg_size`))
          }
          if (code === js.ERR_WRONG_LAST_SEQUENCE) {
            return fail(new SessionError(`stream ${config.stream} refused entry ${index}: ${error.message} (another forwarder, or a publish lost in flight)`))
          }
          fail(new SessionError(`publishing entry ${index} to stream ${config.stream} failed: ${error.message}`))
        }).finally(() => {
          s.inFlight.delete(promise)
          s.inFlightBytes -= size
          if (!s.failed && !windowFull()) conn.resume()
        })
        s.inFlight.add(promise)
        s.inFlightBytes += size
      }

      conn.send({ from: last + 1 })
    })
  }

  _reportLag () {
    const lag = this.head - this.acked
    if (lag > 0) {
      this.reportedLag = lag
      this.log.info('lag', `${lag} entries behind the log`, { lag, head: this.head, index: this.acked, forwarded: this.forwarded })
    } else if (this.reportedLag > 0) {
      this.reportedLag = 0
      this.log.info('caught-up', `caught up: stream ${this.config.stream} holds entries 1 to ${this.acked}`, { stream: this.config.stream, index: this.acked, forwarded: this.forwarded })
    }
  }
}

function preview (bytes) {
  const text = bytes.subarray(0, 60).toString('utf8')
  return JSON.stringify(bytes.length > 60 ? text + '...' : text)
}

module.exports = { Forwarder }
