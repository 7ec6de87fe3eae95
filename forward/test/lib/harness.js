'use strict'
// What the forwarder's tests start and stop: a NATS cluster (Debian's nats-server), our
// tcp-log-server, the forwarder itself, and writers. Everything listens on 127.0.0.1, on
// ports found free at run time; every process is tracked by pid, killed by its pid only, and
// killed (SIGKILL) when the test process exits; every temporary directory is removed then.
// Every wait is bounded and says what it waited for.

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const HOST = '127.0.0.1'
const FORWARD_DIR = path.resolve(__dirname, '../..')
const FORWARD = path.join(FORWARD_DIR, 'forward.js')
const LOG_SERVER = process.env.TCP_LOG_SERVER
  ? path.resolve(process.env.TCP_LOG_SERVER)
  : path.resolve(FORWARD_DIR, '../tcp-log-server')
const NATS_SERVER = process.env.NATS_SERVER ||
  ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].find((p) => fs.existsSync(p)) || 'nats-server'

const running = new Set()
const writerSets = new Set() // Writers still writing
const tempDirs = new Set()
process.on('exit', () => {
  for (const p of running) { try { process.kill(p.pid, 'SIGKILL') } catch (_) {} }
  for (const dir of tempDirs) { try { fs.rmSync(dir, { recursive: true, force: true }) } catch (_) {} }
})
// Stopped from outside (Ctrl-C, a timeout): the same clean-up, through 'exit'.
for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => process.exit(130))

// Stops (SIGTERM, then SIGKILL) every process still running: for after() hooks, so that a
// failed test leaves nothing behind and the test process can exit.
async function stopAll () {
  for (const w of writerSets) w.stop()
  await Promise.all([...running].map((p) => p.stop('SIGTERM', 5000).catch(() => {})))
}

// Every process started so far, for a failure's diagnostics.
const started = []

function keepLogs (dir, procs) {
  fs.mkdirSync(dir, { recursive: true })
  for (const p of procs) {
    const name = `${p.pid}-${p.label.replace(/[^A-Za-z0-9]+/g, '-')}.log`
    fs.writeFileSync(path.join(dir, name), [...p.lines, '--- stderr', ...p.errLines].join('\n') + '\n')
  }
}

function makeTempDir (label) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tls-forward-${label}-`))
  tempDirs.add(dir)
  return dir
}

function removeTempDir (dir) {
  fs.rmSync(dir, { recursive: true, force: true })
  tempDirs.delete(dir)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function withTimeout (promise, ms, what) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

async function waitUntil (predicate, ms, what, every = 20) {
  const deadline = Date.now() + ms
  for (;;) {
    if (await predicate()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(every)
  }
}

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

// A child process with its output kept as lines (stdout and stderr apart).
class Proc {
  constructor (label, command, args, options) {
    this.label = label
    this.lines = []
    this.errLines = []
    this.exited = null
    this.child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options })
    this.pid = this.child.pid
    running.add(this)
    started.push(this)
    this.exit = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        running.delete(this)
        this.exited = { code, signal }
        resolve(this.exited)
      })
    })
    this.child.once('error', (error) => { this.spawnError = error })
    for (const [stream, into] of [[this.child.stdout, this.lines], [this.child.stderr, this.errLines]]) {
      let tail = ''
      stream.setEncoding('utf8')
      stream.on('data', (chunk) => {
        const parts = (tail + chunk).split('\n')
        tail = parts.pop()
        into.push(...parts)
      })
    }
  }

  // Lines of stdout parsed as JSON (the pino lines of the server and the forwarder).
  events () {
    const out = []
    for (const line of this.lines) { try { out.push(JSON.parse(line)) } catch (_) {} }
    return out
  }

  has (predicate) { return this.events().some(predicate) }

  kill (signal = 'SIGKILL') {
    if (this.exited) return
    try { process.kill(this.pid, signal) } catch (_) {}
  }

  async stop (signal = 'SIGTERM', ms = 10000) {
    if (this.exited) return this.exited
    this.kill(signal)
    try {
      return await withTimeout(this.exit, ms, `${this.label} (pid ${this.pid}) to exit on ${signal}`)
    } catch (error) {
      this.kill('SIGKILL')
      await withTimeout(this.exit, 5000, `${this.label} (pid ${this.pid}) to exit on SIGKILL`)
      throw error
    }
  }

  output () {
    return `--- ${this.label} stdout (last 30 lines)\n${this.lines.slice(-30).join('\n')}\n--- stderr\n${this.errLines.slice(-30).join('\n')}`
  }
}

// ---- NATS ---------------------------------------------------------------------------------

// One nats-server node of a cluster (or alone): its configuration file, store directory and
// ports stay the same across restarts.
class NatsNode {
  constructor (dir, name, clientPort, clusterPort, routes) {
    this.name = name
    this.port = clientPort
    this.url = `nats://${HOST}:${clientPort}`
    this.store = path.join(dir, name)
    this.conf = path.join(dir, `${name}.conf`)
    fs.mkdirSync(this.store, { recursive: true })
    const cluster = routes ? `
cluster {
  name: fwdtest
  listen: ${HOST}:${clusterPort}
  routes: [${routes.map((p) => `nats-route://${HOST}:${p}`).join(', ')}]
}` : ''
    fs.writeFileSync(this.conf, `server_name: ${name}
listen: ${HOST}:${clientPort}
jetstream {
  store_dir: "${this.store}"
  max_memory_store: 64MB
  max_file_store: 4GB
}${cluster}
`)
    this.proc = null
  }

  async start () {
    this.proc = new Proc(`nats-server ${this.name}`, NATS_SERVER, ['-c', this.conf], {})
    await withTimeout(new Promise((resolve, reject) => {
      const timer = setInterval(() => {
        if (this.proc.errLines.some((l) => l.includes('Server is ready')) || this.proc.lines.some((l) => l.includes('Server is ready'))) {
          clearInterval(timer)
          resolve()
        } else if (this.proc.exited || this.proc.spawnError) {
          clearInterval(timer)
          reject(new Error(`nats-server ${this.name} exited before it was ready (${NATS_SERVER}: ${this.proc.spawnError || JSON.stringify(this.proc.exited)})\n${this.proc.output()}`))
        }
      }, 20)
    }), 20000, `nats-server ${this.name} to be ready`)
  }

  get running () { return this.proc !== null && !this.proc.exited }
}

// n nodes: a cluster of n (JetStream needs 3 for R3), or one node on its own when n is 1.
async function startNats (dir, n) {
  const clientPorts = []
  const clusterPorts = []
  for (let i = 0; i < n; i++) {
    clientPorts.push(await freePort())
    clusterPorts.push(await freePort())
  }
  const nodes = clientPorts.map((p, i) => new NatsNode(dir, `n${i + 1}`, p, clusterPorts[i], n > 1 ? clusterPorts : null))
  await Promise.all(nodes.map((node) => node.start()))
  return { nodes, urls: nodes.map((node) => node.url).join(',') }
}

// ---- our server ---------------------------------------------------------------------------

class LogServer {
  constructor (dir, port) {
    this.dir = dir
    this.port = port
    this.proc = null
  }

  static async start (dir) {
    const server = new LogServer(dir, await freePort())
    await server.start()
    return server
  }

  async start () {
    if (!fs.existsSync(LOG_SERVER)) throw new Error(`the server binary is missing: ${LOG_SERVER} (make tcp-log-server, or set TCP_LOG_SERVER)`)
    const env = { ...process.env, PORT: String(this.port), HOST, BLOBS: path.join(this.dir, 'blobs'), LEVELDB: path.join(this.dir, 'leveldb'), LOG_LEVEL: 'warn' }
    delete env.SYNC
    this.proc = new Proc(`tcp-log-server :${this.port}`, LOG_SERVER, [], { env, cwd: this.dir })
    // At LOG_LEVEL=warn it prints nothing when ready: wait until it accepts a connection.
    await waitUntil(async () => {
      if (this.proc.exited) throw new Error(`tcp-log-server exited: ${JSON.stringify(this.proc.exited)}\n${this.proc.output()}`)
      return canConnect(this.port)
    }, 15000, `tcp-log-server on port ${this.port}`, 25)
  }

  get address () { return `${HOST}:${this.port}` }
  get running () { return this.proc !== null && !this.proc.exited }
}

function canConnect (port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

// The whole log as the server serves it: a stream read from 1 up to {"current":true}.
// Returns the stored bytes of each entry (index i at [i - 1]), taken from the raw lines.
async function readLog (port, ms = 60000) {
  const socket = net.connect({ host: HOST, port })
  const entries = []
  let pending = Buffer.alloc(0)
  const done = new Promise((resolve, reject) => {
    socket.on('error', reject)
    socket.on('close', () => reject(new Error('the server closed the connection before {"current":true}')))
    socket.on('data', (chunk) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk
      let start = 0
      for (;;) {
        const end = pending.indexOf(0x0a, start)
        if (end < 0) break
        const line = pending.subarray(start, end)
        start = end + 1
        const text = line.subarray(0, 40).toString('latin1')
        const m = /^\{"index":([0-9]+),"entry":/.exec(text)
        if (m) {
          if (Number(m[1]) !== entries.length + 1) return reject(new Error(`entry ${m[1]} where ${entries.length + 1} was expected`))
          entries.push(Buffer.from(line.subarray(m[0].length, line.length - 1)))
        } else if (line.toString() === '{"current":true}') {
          socket.removeAllListeners('close')
          socket.destroy()
          return resolve(entries)
        } else {
          return reject(new Error(`unexpected line: ${line.subarray(0, 200).toString()}`))
        }
      }
      pending = pending.subarray(start)
    })
    socket.write('{"from":1}\n')
  })
  return withTimeout(done, ms, `a read of the whole log on port ${port}`)
}

// Writers: `connections` sockets writing the texts that `nextText` gives (raw JSON), with up
// to `depth` writes in flight each and at most `rate` writes a second in all, reconnecting
// (every 100 ms) while the server is down, until `target` writes are confirmed or stop(). A
// write whose confirmation was lost may be stored or not; only confirmed ones count.
class Writers {
  constructor (port, nextText, { connections = 4, depth = 32, rate = Infinity } = {}) {
    this.port = port
    this.nextText = nextText
    this.confirmed = 0
    this.lastIndex = 0
    this.stopped = false
    this.connections = connections
    this.depth = depth
    this.rate = rate
    this.budget = Number.isFinite(rate) ? 0 : Infinity
    this.fills = new Set()
    this.errors = []
  }

  run (target) {
    this.target = target
    const tick = 20
    this.timer = Number.isFinite(this.rate)
      ? setInterval(() => {
        this.budget = Math.min(this.budget + this.rate * tick / 1000, Math.max(1, this.rate / 4))
        for (const fill of this.fills) fill()
      }, tick)
      : null
    writerSets.add(this)
    this.done = Promise.all(Array.from({ length: this.connections }, (_, w) => this._writer(w)))
      .finally(() => { clearInterval(this.timer); writerSets.delete(this) })
    return this.done
  }

  stop () { this.stopped = true }

  async _writer (w) {
    let serial = 0
    while (!this.stopped && this.confirmed < this.target) {
      const ok = await new Promise((resolve) => {
        const socket = net.connect({ host: HOST, port: this.port })
        let inFlight = 0
        let tail = ''
        let connected = false
        const fill = () => {
          if (!connected) return
          while (inFlight < this.depth && this.confirmed + inFlight < this.target && !this.stopped && this.budget >= 1) {
            inFlight++
            this.budget--
            socket.write(`{"id":"w${w}-${serial++}","entry":${this.nextText()}}\n`)
          }
          if (inFlight === 0 && (this.confirmed >= this.target || this.stopped)) { socket.destroy(); resolve(true) }
        }
        this.fills.add(fill)
        socket.setEncoding('utf8')
        socket.once('connect', () => { connected = true; fill() })
        socket.on('data', (chunk) => {
          const parts = (tail + chunk).split('\n')
          tail = parts.pop()
          for (const line of parts) {
            const reply = JSON.parse(line)
            if (typeof reply.index !== 'number') { this.errors.push(line); continue }
            inFlight--
            this.confirmed++
            if (reply.index > this.lastIndex) this.lastIndex = reply.index
          }
          fill()
        })
        socket.on('error', () => {})
        socket.on('close', () => { this.fills.delete(fill); resolve(false) })
      })
      if (!ok) await sleep(100)
    }
  }
}

// ---- the forwarder ------------------------------------------------------------------------

function startForwarder (label, env, args = []) {
  return new Proc(label, process.execPath, [FORWARD, ...args], {
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    cwd: FORWARD_DIR
  })
}

module.exports = {
  stopAll, started, keepLogs, HOST, NATS_SERVER, FORWARD, Proc, NatsNode, LogServer, Writers,
  makeTempDir, removeTempDir, sleep, withTimeout, waitUntil, freePort, startNats, startForwarder, readLog
}
