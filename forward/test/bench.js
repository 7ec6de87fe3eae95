'use strict'
// make forward-bench: the forwarder's figures on this machine, into a three-node JetStream
// cluster (Debian's nats-server on loopback, R3, file storage), as in make forward-test.
//   1. throughput: a log of BENCH_ENTRIES (100,000) entries forwarded by `--once` into an empty
//      stream; entries/s from the forwarder's "resuming" line to its "caught-up" line, and for
//      the whole run of the process (connecting, creating the stream);
//   2. live lag: BENCH_RATE (1,000) writes/s for BENCH_WARMUP (5) + BENCH_SECONDS (30) into a
//      log that a running forwarder follows (into a stream it has just created); for each entry, the time from the write's confirmation (seen by the
//      writer) to the JetStream acknowledgement of its publish (seen by the forwarder, in its
//      trace line `acked`, whose `at` is the wall clock in ms with microseconds); p50, p99, max.
// Prints one table and one JSON line. Not in CI.

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { performance } = require('node:perf_hooks')
const h = require('./lib/harness')

const ENTRIES = Number(process.env.BENCH_ENTRIES || 100000)
const RATE = Number(process.env.BENCH_RATE || 1000)
const SECONDS = Number(process.env.BENCH_SECONDS || 30)
// Left out of the lag figures: the first seconds after the forwarder created the stream, when
// acknowledgements lag by up to about 150 ms here (reported apart, as warm-up).
const WARMUP = Number(process.env.BENCH_WARMUP || 5)
const now = () => performance.timeOrigin + performance.now()

// A typical device entry, about 150 bytes stored.
const entry = (i) => `{"device":"sensor-${i % 64}","seq":${i},"at":${1764000000000 + i},"temperature":${(20 + (i % 100) / 10).toFixed(1)},"ok":true,"tags":["field","é","${'x'.repeat(i % 40)}"]}`

async function fill (port, count) {
  const writers = new h.Writers(port, (() => { let i = 0; return () => entry(++i) })(), { connections: 4, depth: 64 })
  await writers.run(count)
  return writers.lastIndex
}

// Writes `rate` entries a second for `seconds` on one connection, 10 ms at a time; returns the
// wall-clock time (ms) of each confirmation by index.
function paced (port, rate, seconds) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: h.HOST, port })
    const confirmed = new Map()
    let sent = 0
    let tail = ''
    const total = rate * seconds
    const start = Date.now()
    let timer
    socket.setNoDelay(true)
    socket.setEncoding('utf8')
    socket.on('error', reject)
    socket.on('data', (chunk) => {
      const at = now()
      const parts = (tail + chunk).split('\n')
      tail = parts.pop()
      for (const line of parts) {
        const reply = JSON.parse(line)
        if (typeof reply.index !== 'number') return reject(new Error(`write failed: ${line}`))
        confirmed.set(reply.index, at)
      }
      if (confirmed.size === total) { clearInterval(timer); socket.destroy(); resolve(confirmed) }
    })
    socket.once('connect', () => {
      timer = setInterval(() => {
        const due = Math.min(total, Math.floor((Date.now() - start) * rate / 1000))
        let batch = ''
        while (sent < due) { sent++; batch += `{"id":"${sent}","entry":${entry(sent)}}\n` }
        if (batch) socket.write(batch)
      }, 10)
    })
  })
}

function percentile (sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

async function main () {
  const dir = h.makeTempDir('bench')
  const cluster = await h.startNats(dir, 3)
  const results = {}
  try {
    // 1. Throughput.
    const server = await h.LogServer.start(fs.mkdtempSync(path.join(dir, 'log-')))
    let t = Date.now()
    const head = await fill(server.port, ENTRIES)
    const bytes = (await h.readLog(server.port)).reduce((sum, b) => sum + b.length, 0)
    console.log(`log of ${head} entries (${(bytes / head).toFixed(0)} bytes each on average) written in ${((Date.now() - t) / 1000).toFixed(1)} s`)
    const env = { LOG_SERVER: server.address, NATS_URL: cluster.urls, STREAM: 'BENCH', SUBJECT: 'bench', CREATE_STREAM: '1', REPLICAS: '3' }
    t = Date.now()
    const once = h.startForwarder('forwarder --once', env, ['--once'])
    const { code } = await h.withTimeout(once.exit, 600000, 'the forwarder --once')
    const whole = (Date.now() - t) / 1000
    if (code !== 0) throw new Error(`the forwarder failed:\n${once.output()}`)
    const events = once.events()
    const from = events.find((e) => e.event === 'resuming')
    const to = events.find((e) => e.event === 'caught-up')
    if (!from || !to || to.index !== head) throw new Error(`no resuming/caught-up lines to ${head}:\n${once.output()}`)
    const forwarding = (to.time - from.time) / 1000
    results.throughput = { entries: head, meanEntryBytes: Math.round(bytes / head), seconds: forwarding, entriesPerSecond: Math.round(head / forwarding), wholeRunSeconds: whole, wholeRunEntriesPerSecond: Math.round(head / whole) }
    await server.proc.stop()

    // 2. Live lag.
    const live = await h.LogServer.start(fs.mkdtempSync(path.join(dir, 'live-')))
    const follower = h.startForwarder('forwarder', { ...env, LOG_SERVER: live.address, STREAM: 'LIVE', SUBJECT: 'live', LOG_LEVEL: 'trace' })
    await h.waitUntil(() => follower.has((e) => e.event === 'resuming'), 30000, 'the forwarder to start following')
    const confirmed = await paced(live.port, RATE, WARMUP + SECONDS)
    await h.waitUntil(() => follower.has((e) => e.event === 'acked' && e.index === RATE * (WARMUP + SECONDS)), 30000, 'the last acknowledgement')
    await follower.stop()
    await live.proc.stop()
    const lags = []
    let warmupMax = 0
    for (const e of follower.events()) {
      if (e.event !== 'acked') continue
      const lag = e.at - confirmed.get(e.index)
      if (e.index <= WARMUP * RATE) warmupMax = Math.max(warmupMax, lag)
      else lags.push(lag)
    }
    lags.sort((a, b) => a - b)
    results.lag = { rate: RATE, seconds: SECONDS, samples: lags.length, p50ms: +percentile(lags, 0.5).toFixed(2), p99ms: +percentile(lags, 0.99).toFixed(2), maxMs: +lags[lags.length - 1].toFixed(2), warmupSeconds: WARMUP, warmupMaxMs: +warmupMax.toFixed(2) }
  } finally {
    await h.stopAll()
    h.removeTempDir(dir)
  }
  const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) || [])[1]
  let commit = 'unknown'
  try { commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: __dirname, encoding: 'utf8' }).trim() } catch (_) {}
  const natsVersion = execFileSync(require('./lib/harness').NATS_SERVER, ['--version'], { encoding: 'utf8' }).trim()
  results.machine = { cpus: os.cpus().length, cpu, loadAverage: os.loadavg().map((x) => +x.toFixed(2)), memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, natsServer: natsVersion, commit, date: new Date().toISOString() }
  const { throughput: tp, lag } = results
  console.log(`
| figure | value |
|---|---|
| throughput, ${tp.entries} entries (${tp.meanEntryBytes} bytes each) into an R3 stream | ${tp.entriesPerSecond} entries/s (${tp.seconds.toFixed(1)} s; whole run of --once ${tp.wholeRunSeconds.toFixed(1)} s, ${tp.wholeRunEntriesPerSecond} entries/s) |
| live lag at ${lag.rate} writes/s for ${lag.seconds} s, confirmation to JetStream ack | p50 ${lag.p50ms} ms, p99 ${lag.p99ms} ms, max ${lag.maxMs} ms (${lag.samples} entries; in the ${lag.warmupSeconds} s of warm-up before them, max ${lag.warmupMaxMs} ms) |

machine: ${results.machine.cpus} x ${cpu}, ${results.machine.memoryGiB} GiB, load average ${results.machine.loadAverage.join(' ')} at the end; node ${process.version}; ${natsVersion}; commit ${commit}; ${results.machine.date}`)
  console.log(JSON.stringify(results))
}

main().then(() => process.exit(0), (error) => {
  console.error(`forward-bench: ${error.stack || error}`)
  process.exit(1)
})
