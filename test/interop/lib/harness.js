'use strict'
// Helpers shared by the interop tests: start and stop servers (ours and the
// Node.js tcp-log-server), speak raw newline-delimited JSON, bounded waits,
// temporary directories. Every process started here is tracked by pid and
// killed when the test process exits; every temp dir is removed.

const { spawn } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')

const INTEROP_DIR = path.resolve(__dirname, '..')
const HOST = '127.0.0.1'

// Our binary: $TCP_LOG_SERVER (relative to the current directory) or the
// one built at the top of the repository.
const OUR_SERVER = process.env.TCP_LOG_SERVER
  ? path.resolve(process.env.TCP_LOG_SERVER)
  : path.resolve(INTEROP_DIR, '../../tcp-log-server')

const NODE_SERVER = path.join(INTEROP_DIR, 'node_modules/tcp-log-server/server.js')
// The Node.js servers by major version: 10.0.0 as published; 6.0.2 and 9.0.4 with leveldown 5.6.0
// in place of their leveldown 1.x, which does not build on Node.js 20 (package.json "overrides").
const NODE_SERVERS = {
  6: path.join(INTEROP_DIR, 'node_modules/tcp-log-server-6/server.js'),
  9: path.join(INTEROP_DIR, 'node_modules/tcp-log-server-9/server.js'),
  10: NODE_SERVER
}
const PINO_PRETTY = path.join(INTEROP_DIR, 'node_modules/.bin/pino-pretty')

const running = new Set() // child processes not yet seen to exit
const tempDirs = new Set()

process.on('exit', () => {
  for (const child of running) {
    try { process.kill(child.pid, 'SIGKILL') } catch (_) {}
  }
  for (const dir of tempDirs) {
    try { fs.rmSync(dir, { recursive: true, force: true }) } catch (_) {}
  }
})

function makeTempDir (label) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tls-interop-${label}-`))
  tempDirs.add(dir)
  return dir
}

function removeTempDir (dir) {
  fs.rmSync(dir, { recursive: true, force: true })
  tempDirs.delete(dir)
}

// Reject after `ms` with a message saying what was awaited.
function withTimeout (promise, ms, what) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// Poll `predicate` every 10 ms until it is true; bounded.
// `what` names what is awaited; a function is called when the wait times out, so that the
// message says what was there at the end, not at the start.
async function waitUntil (predicate, ms, what) {
  const deadline = Date.now() + ms
  while (!predicate()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`)
    }
    await sleep(10)
  }
}

function once (emitter, event, ms, what) {
  return withTimeout(new Promise((resolve) => emitter.once(event, (...args) => resolve(args))),
    ms, what || `event "${event}"`)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// A free TCP port on the loopback interface: bind port 0, read it, close.
function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, HOST, () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

// Start a server process; resolve once a stdout line reports listening.
// kind 'ours': our binary, `"msg":"listening"` with `"port"`.
// kind 'node': tcp-log-server@10.0.0 (or the server.js `script`), pino line with `"event":"listening"`;
// it gets its LevelDB directory as LEVELDB (6.x reads that) and as LEVELDOWN (9.x and later).
async function startServer ({ kind = 'ours', dir, port = 0, env = {}, args = [], timeoutMs = 15000, script = NODE_SERVER }) {
  const blobs = path.join(dir, 'blobs')
  const leveldb = path.join(dir, 'leveldb')
  let command, argv, childEnv
  const base = { ...process.env }
  for (const key of ['PORT', 'BLOBS', 'LEVELDB', 'LEVELDOWN', 'HOST', 'SYNC', 'LOG_LEVEL', 'MAX_MESSAGE_BYTES']) delete base[key]
  if (kind === 'ours') {
    if (!fs.existsSync(OUR_SERVER)) throw new Error(`our server binary is missing: ${OUR_SERVER} (build it with \`make tcp-log-server\` or set TCP_LOG_SERVER)`)
    command = OUR_SERVER
    argv = args
    childEnv = { ...base, PORT: String(port), BLOBS: blobs, LEVELDB: leveldb, HOST, ...env }
  } else {
    if (!port) throw new Error('the Node.js server ignores PORT=0: pass a real port')
    command = process.execPath
    argv = [script, ...args]
    childEnv = { ...base, PORT: String(port), BLOBS: blobs, LEVELDB: leveldb, LEVELDOWN: leveldb, ...env }
  }
  const child = spawn(command, argv, { env: childEnv, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  const server = {
    kind, dir, blobs, leveldb, child, pid: child.pid,
    port: null,
    lines: [], // raw stdout lines
    stderr: '',
    exited: null // {code, signal} once exited
  }
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child)
      server.exited = { code, signal }
      resolve(server.exited)
    })
  })
  server.exitPromise = exited
  child.once('error', (error) => { server.spawnError = error })
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk) => { server.stderr += chunk })
  const rl = readline.createInterface({ input: child.stdout, crlfDelay: Infinity })
  const listening = new Promise((resolve, reject) => {
    rl.on('line', (line) => {
      server.lines.push(line)
      if (server.port !== null) return
      let parsed
      try { parsed = JSON.parse(line) } catch (_) { return }
      const isListening = kind === 'ours'
        ? parsed && parsed.msg === 'listening'
        : parsed && parsed.event === 'listening'
      if (isListening) {
        server.port = parsed.port
        resolve(parsed.port)
      }
    })
    exited.then(({ code, signal }) => reject(new Error(
      `${kind} server exited (code ${code}, signal ${signal}) before listening; stderr: ${server.stderr}; stdout: ${server.lines.join('\n')}`)))
  })
  try {
    await withTimeout(listening, timeoutMs, `${kind} server to log "listening"`)
  } catch (error) {
    await stopServer(server)
    throw error
  }
  if (typeof server.port !== 'number' || !(server.port > 0)) {
    await stopServer(server)
    throw new Error(`listening line has no valid port: ${server.lines[server.lines.length - 1]}`)
  }
  if (port && server.port !== port) {
    await stopServer(server)
    throw new Error(`asked for port ${port}, listening on ${server.port}`)
  }
  return server
}

// SIGTERM (or `signal`), then SIGKILL if it has not exited in time.
async function stopServer (server, { signal = 'SIGTERM', graceMs = 8000 } = {}) {
  if (server.exited) return server.exited
  try { process.kill(server.pid, signal) } catch (_) {}
  try {
    return await withTimeout(server.exitPromise, graceMs, `${server.kind} server pid ${server.pid} to exit on ${signal}`)
  } catch (error) {
    try { process.kill(server.pid, 'SIGKILL') } catch (_) {}
    await withTimeout(server.exitPromise, 5000, `pid ${server.pid} to die on SIGKILL`)
    server.stopTimedOut = true
    return server.exited
  }
}

// A raw newline-delimited JSON connection.
class RawConnection {
  constructor (socket) {
    this.socket = socket
    this.messages = [] // every parsed message received, in order
    this.badLines = []
    this.closed = false
    this.waiters = new Set()
    socket.setEncoding('utf8')
    const rl = readline.createInterface({ input: socket, crlfDelay: Infinity })
    rl.on('line', (line) => {
      if (line === '') return
      try { this.messages.push(JSON.parse(line)) } catch (_) { this.badLines.push(line) }
      this._notify()
    })
    socket.on('error', (error) => { this.error = error })
    socket.on('close', () => { this.closed = true; this._notify() })
  }

  static connect (port, host = HOST) {
    return withTimeout(new Promise((resolve, reject) => {
      const socket = net.connect({ port, host }, () => {
        socket.removeListener('error', reject)
        resolve(new RawConnection(socket))
      })
      socket.once('error', reject)
    }), 5000, `connection to ${host}:${port}`)
  }

  _notify () { for (const waiter of this.waiters) waiter() }

  send (messageOrLine) {
    const line = typeof messageOrLine === 'string' ? messageOrLine : JSON.stringify(messageOrLine)
    this.socket.write(line + '\n')
  }

  // Wait until predicate(messages) is true; bounded.
  waitFor (predicate, ms, what) {
    return withTimeout(new Promise((resolve, reject) => {
      const check = () => {
        if (predicate(this.messages)) { this.waiters.delete(check); resolve(this.messages) } else if (this.closed) {
          this.waiters.delete(check)
          reject(new Error(`connection closed while waiting for ${what}; last messages: ${JSON.stringify(this.messages.slice(-3))}`))
        }
      }
      this.waiters.add(check)
      check()
    }), ms, what)
  }

  close () { this.socket.destroy() }
}

// Write raw entry texts over one connection; resolve with the confirmed
// indices, in the order of `rawEntries`.
async function writeRawEntries (port, rawEntries, { idPrefix = 'w', timeoutMs = 30000 } = {}) {
  const conn = await RawConnection.connect(port)
  try {
    const ids = rawEntries.map((_, i) => `${idPrefix}-${i}`)
    conn.socket.write(rawEntries.map((raw, i) => `{"id":${JSON.stringify(ids[i])},"entry":${raw}}\n`).join(''))
    const want = new Set(ids)
    await conn.waitFor((messages) => {
      let n = 0
      for (const m of messages) if (m && want.has(m.id) && ('index' in m || 'error' in m)) n++
      return n >= ids.length
    }, timeoutMs, `${ids.length} write confirmations`)
    const byId = new Map()
    for (const m of conn.messages) if (m && want.has(m.id)) byId.set(m.id, m)
    const errors = ids.map((id) => byId.get(id)).filter((m) => 'error' in m)
    if (errors.length) throw new Error(`writes failed: ${JSON.stringify(errors.slice(0, 3))}`)
    return ids.map((id) => byId.get(id).index)
  } finally {
    conn.close()
  }
}

// Read the whole log with a stream read `{"from":1}` up to `{"current":true}`.
async function readLog (port, { timeoutMs = 30000 } = {}) {
  const conn = await RawConnection.connect(port)
  try {
    conn.send({ from: 1 })
    await conn.waitFor((messages) => messages.some((m) => m && m.current === true), timeoutMs, '{"current":true}')
    const idx = conn.messages.findIndex((m) => m && m.current === true)
    return conn.messages.slice(0, idx)
  } finally {
    conn.close()
  }
}

const sha256 = (buffer) => crypto.createHash('sha256').update(buffer).digest('hex')

// Blob files of a BLOBS directory: Map "hh/rest" -> Buffer. Only the
// two-hex-digit subdirectories are looked at; every file inside them counts.
function readBlobDir (blobs) {
  const files = new Map()
  if (!fs.existsSync(blobs)) return files
  for (const sub of fs.readdirSync(blobs).sort()) {
    if (!/^[0-9a-f]{2}$/.test(sub)) continue
    const subPath = path.join(blobs, sub)
    if (!fs.statSync(subPath).isDirectory()) continue
    for (const name of fs.readdirSync(subPath).sort()) {
      files.set(`${sub}/${name}`, fs.readFileSync(path.join(subPath, name)))
    }
  }
  return files
}

// The blob files of `blobs` once each of `names` ("hh/rest") is there and
// whole (its bytes hash to its name). Our server confirms at its journal and
// makes blob files just after (within a second once writes pause), so a test
// that inspects a running server's files waits for them; bounded by `ms`,
// after which it returns what is there and the test's own assertion reports
// what is missing.
async function readBlobDirWhenComplete (blobs, names, ms = 10000) {
  const deadline = Date.now() + ms
  const whole = (name) => {
    try { return sha256(fs.readFileSync(path.join(blobs, name))) === name.replace('/', '') } catch (_) { return false }
  }
  while (![...names].every(whole) && Date.now() < deadline) await sleep(20)
  return readBlobDir(blobs)
}

// The canonical form of a parsed entry, as tcp-log-server@10.0.0 stores it
// (json-stable-stringify: keys in default sort order, JSON.stringify
// everything else).
function canonical (value) {
  if (Array.isArray(value)) return '[' + value.map(canonical).join(',') + ']'
  if (value !== null && typeof value === 'object') {
    return '{' + Object.keys(value).sort().map((k) => JSON.stringify(k) + ':' + canonical(value[k])).join(',') + '}'
  }
  return JSON.stringify(value)
}

const blobName = (text) => {
  const hash = sha256(Buffer.from(text, 'utf8'))
  return `${hash.slice(0, 2)}/${hash.slice(2)}`
}

// Returns a list that a test pushes stop/remove tasks onto; after each test they run, newest
// first, whatever happened, and the list is emptied.
function cleanupAfterEach (afterEach) {
  const tasks = []
  afterEach(async () => {
    for (const task of tasks.splice(0).reverse()) {
      try { await task() } catch (_) {}
    }
  })
  return tasks
}

module.exports = {
  cleanupAfterEach,
  HOST,
  INTEROP_DIR,
  NODE_SERVER,
  NODE_SERVERS,
  OUR_SERVER,
  PINO_PRETTY,
  RawConnection,
  blobName,
  canonical,
  freePort,
  makeTempDir,
  once,
  readBlobDir,
  readBlobDirWhenComplete,
  readLog,
  removeTempDir,
  sha256,
  sleep,
  startServer,
  stopServer,
  waitUntil,
  withTimeout,
  writeRawEntries
}
