'use strict'
// One connection to a tcp-log-server, speaking its protocol with a plain socket.
//
// Why not tcp-log-client: it parses each line with JSON.parse and hands back objects, so what
// it gives is a re-serialisation, not the stored bytes: `{"n":1.0}` comes back as `{"n":1}`,
// `12345678901234567890` rounded, and keys such as "10" and "9" in another order. The server
// sends each entry as `{"index":N,"entry":<the stored bytes>}`, so the bytes between
// `"entry":` and the closing `}` are the entry exactly as stored: those are what we forward,
// as a Buffer, never decoded.
//
// Lines are dispatched one at a time to the handler; `pause()` stops the dispatch (and the
// reading from the socket) so that a consumer with a full window holds nothing but the socket's
// own buffers: the server's log is the queue.

const net = require('node:net')

const ENTRY_PREFIX = Buffer.from('{"index":')
const ENTRY_KEY = Buffer.from(',"entry":')
const ERROR_KEY = Buffer.from(',"error":')
const CURRENT = '{"current":true}'

// Classifies one line of the server. Returns
//   {kind: 'entry', index, bytes}    an entry; bytes is a slice of `line`
//   {kind: 'damaged', index, error}  an entry the server cannot read back
//   {kind: 'current'} | {kind: 'head', head} | {kind: 'error', error} | {kind: 'other', text}
function classify (line) {
  if (line.subarray(0, ENTRY_PREFIX.length).equals(ENTRY_PREFIX)) {
    let i = ENTRY_PREFIX.length
    while (i < line.length && line[i] >= 0x30 && line[i] <= 0x39) i++
    const index = Number(line.subarray(ENTRY_PREFIX.length, i).toString('latin1'))
    if (i > ENTRY_PREFIX.length && line[line.length - 1] === 0x7d /* } */) {
      if (line.subarray(i, i + ENTRY_KEY.length).equals(ENTRY_KEY)) {
        return { kind: 'entry', index, bytes: line.subarray(i + ENTRY_KEY.length, line.length - 1) }
      }
      if (line.subarray(i, i + ERROR_KEY.length).equals(ERROR_KEY)) {
        return { kind: 'damaged', index, error: parseOr(line).error }
      }
    }
  }
  const text = line.toString('utf8')
  if (text === CURRENT) return { kind: 'current' }
  const message = parseOr(line)
  if (message && Number.isSafeInteger(message.head)) return { kind: 'head', head: message.head }
  if (message && typeof message.error === 'string') return { kind: 'error', error: message.error }
  return { kind: 'other', text }
}

function parseOr (line) {
  try { return JSON.parse(line.toString('utf8')) } catch (_) { return null }
}

class LogConnection {
  // address: {host, port, text}. Resolves once connected; rejects after timeoutMs.
  static open (address, timeoutMs) {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: address.host, port: address.port })
      const timer = setTimeout(() => {
        socket.destroy()
        reject(new Error(`cannot connect to the log server at ${address.text}: no connection within ${timeoutMs} ms`))
      }, timeoutMs)
      socket.once('connect', () => {
        clearTimeout(timer)
        socket.removeAllListeners('error')
        resolve(new LogConnection(socket, address))
      })
      socket.once('error', (error) => {
        clearTimeout(timer)
        reject(new Error(`cannot connect to the log server at ${address.text}: ${error.message}`))
      })
    })
  }

  constructor (socket, address) {
    this.socket = socket
    this.address = address
    this.chunks = [] // received bytes not yet dispatched
    this.paused = false
    this.closed = false
    this.onLine = () => {} // (classified line) => void
    this.onClose = () => {} // (Error) => void, once
    socket.setNoDelay(true)
    // A stream read on a quiet log sends nothing: keep-alive finds a peer that is gone.
    socket.setKeepAlive(true, 10000)
    socket.on('data', (chunk) => { this.chunks.push(chunk); this._dispatch() })
    socket.on('error', (error) => this._closed(new Error(`the connection to the log server at ${address.text} failed: ${error.message}`)))
    socket.on('close', () => this._closed(new Error(`the log server at ${address.text} closed the connection`)))
  }

  send (message) {
    this.socket.write(JSON.stringify(message) + '\n')
  }

  pause () {
    this.paused = true
    this.socket.pause()
  }

  resume () {
    if (!this.paused || this.closed) return
    this.paused = false
    this._dispatch()
    if (!this.paused) this.socket.resume()
  }

  close () {
    this.closed = true
    this.socket.destroy()
  }

  _closed (error) {
    if (this.closed) return
    this.closed = true
    this.socket.destroy()
    this.onClose(error)
  }

  // Hands complete lines to onLine, one at a time, until paused. The unfinished tail stays.
  _dispatch () {
    if (this.chunks.length === 0) return
    let buffer = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks)
    this.chunks = []
    let start = 0
    while (!this.paused && !this.closed) {
      const end = buffer.indexOf(0x0a, start)
      if (end < 0) break
      let line = buffer.subarray(start, end)
      start = end + 1
      if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1)
      if (line.length === 0) continue
      this.onLine(classify(line))
    }
    if (start < buffer.length && !this.closed) {
      // Copy a short tail out of a large chunk, so the chunk can be freed.
      buffer = buffer.subarray(start)
      this.chunks.push(buffer.length < 4096 ? Buffer.from(buffer) : buffer)
    }
  }
}

module.exports = { LogConnection, classify }
