'use strict'
// Our log lines, piped through the real pino-pretty, render with their msg
// and fields and no parse error; and a pino-pretty that exits does not take
// the server down.

const { describe, test, afterEach } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const h = require('./lib/harness')

const LABELS = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' }
const PINO_KEYS = new Set(['level', 'time', 'pid', 'hostname', 'msg'])

const cleanup = h.cleanupAfterEach(afterEach)

// Run our server through a little of everything, stop it, return its lines.
async function serverLines (env) {
  const dir = h.makeTempDir('pino')
  cleanup.push(() => h.removeTempDir(dir))
  const server = await h.startServer({ kind: 'ours', dir, env })
  cleanup.push(() => h.stopServer(server))
  const reader = await h.RawConnection.connect(server.port)
  reader.send({ from: 1 })
  await reader.waitFor((m) => m.some((x) => x.current === true), 10000, 'current')
  await h.writeRawEntries(server.port, ['{"a":1}', '{"b":[2,3]}'])
  await reader.waitFor((m) => m.filter((x) => 'entry' in x).length >= 2, 10000, 'two live entries')
  const bad = await h.RawConnection.connect(server.port)
  bad.send({ neither: 'read nor write' })
  await bad.waitFor((m) => m.some((x) => x.error === 'invalid message'), 10000, 'invalid message error')
  bad.send('{not json')
  await bad.waitFor((m) => m.some((x) => x.error === 'invalid JSON'), 10000, 'invalid JSON error')
  await bad.waitFor(() => bad.closed, 10000, 'close after invalid JSON').catch(() => {})
  bad.close()
  reader.close()
  await h.sleep(200) // let the server log the closes
  const exit = await h.stopServer(server)
  assert.deepEqual(exit, { code: 0, signal: null })
  return server.lines
}

function prettify (lines) {
  return h.withTimeout(new Promise((resolve, reject) => {
    const child = spawn(h.PINO_PRETTY, [], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' } })
    cleanup.push(async () => { if (child.exitCode === null) try { process.kill(child.pid, 'SIGKILL') } catch (_) {} })
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (d) => { out += d })
    child.stderr.setEncoding('utf8').on('data', (d) => { err += d })
    child.once('error', reject)
    child.once('exit', (code) => resolve({ code, out, err }))
    child.stdin.end(lines.join('\n') + '\n')
  }), 20000, 'pino-pretty')
}

// Check every line renders: a header "[time] LEVEL (pid...): msg" followed
// by its other fields as "    key: value".
function checkRendered (lines, pretty) {
  // eslint-disable-next-line no-control-regex
  const out = pretty.out.replace(/\x1b\[[0-9;]*m/g, '').split('\n')
  assert.equal(pretty.code, 0)
  assert.equal(pretty.err, '')
  for (const line of out) assert.ok(!line.startsWith('{'), `pino-pretty passed a line through unparsed: ${line}`)
  let at = 0
  for (const line of lines) {
    const record = JSON.parse(line)
    const header = `${LABELS[record.level]} (${record.pid}`
    while (at < out.length && !(out[at].includes(header) && out[at].endsWith(`: ${record.msg}`))) at++
    assert.ok(at < out.length, `no rendered header "${header} ...: ${record.msg}" for ${line}\n${pretty.out}`)
    assert.match(out[at], /^\[\d\d:\d\d:\d\d\.\d\d\d\] /, 'time rendered')
    at++
    const fields = []
    while (at < out.length && out[at].startsWith('    ')) fields.push(out[at++])
    for (const [key, value] of Object.entries(record)) {
      if (PINO_KEYS.has(key)) continue
      const expected = value !== null && typeof value === 'object'
        ? `    ${key}: ${Array.isArray(value) ? '[' : '{'}`
        : `    ${key}: ${JSON.stringify(value)}`
      assert.ok(fields.some((f) => f.startsWith(expected)), `field ${key} of ${line} not rendered as "${expected}"; got:\n${fields.join('\n')}`)
    }
  }
}

function checkShape (lines) {
  assert.ok(lines.length > 0)
  for (const line of lines) {
    let record
    assert.doesNotThrow(() => { record = JSON.parse(line) }, `not JSON: ${line}`)
    assert.ok(record.level in LABELS, `level ${record.level} in ${line}`)
    assert.equal(typeof record.time, 'number', `time in ${line}`)
    assert.ok(Math.abs(record.time - Date.now()) < 10 * 60 * 1000, `time is ms since epoch in ${line}`)
    assert.equal(typeof record.pid, 'number', `pid in ${line}`)
    assert.equal(typeof record.hostname, 'string', `hostname in ${line}`)
    assert.equal(typeof record.msg, 'string', `msg in ${line}`)
    assert.ok(record.msg.length > 0, `msg in ${line}`)
  }
}

describe('logs through pino-pretty', () => {
  test('at the default level: listening, connected, close and invalid lines render with msg and fields', { timeout: 60000 }, async () => {
    const lines = await serverLines({})
    checkShape(lines)
    const records = lines.map((l) => JSON.parse(l))
    const listening = records.find((r) => r.msg === 'listening')
    assert.ok(listening && listening.event === 'listening' && typeof listening.port === 'number' && listening.port > 0, 'listening line with event and port')
    for (const event of ['connected', 'close', 'invalid']) {
      assert.ok(records.some((r) => r.event === event), `a line with "event":"${event}"`)
    }
    assert.ok(records.some((r) => r.event === 'invalid' && r.level === 40), 'invalid input logged at warn')
    for (const r of records.filter((r) => r.event === 'connected' || r.event === 'close')) {
      assert.ok('connection' in r && r.address === h.HOST && typeof r.port === 'number', `connection id, remote address and port in ${JSON.stringify(r)}`)
    }
    assert.ok(!records.some((r) => r.level < 30), 'nothing below info at the default level')
    checkRendered(lines, await prettify(lines))
  })

  test('at LOG_LEVEL=trace: every line renders', { timeout: 60000 }, async () => {
    const lines = await serverLines({ LOG_LEVEL: 'trace' })
    checkShape(lines)
    const records = lines.map((l) => JSON.parse(l))
    assert.ok(records.some((r) => r.level < 30), 'trace or debug lines at LOG_LEVEL=trace')
    checkRendered(lines, await prettify(lines))
  })

  test('live through a pipe: `tcp-log-server | pino-pretty`, and the server survives pino-pretty exiting', { timeout: 60000 }, async () => {
    const dir = h.makeTempDir('pino-pipe')
    cleanup.push(() => h.removeTempDir(dir))
    assert.ok(fs.existsSync(h.OUR_SERVER), `our server binary is missing: ${h.OUR_SERVER}`)
    const port = await h.freePort()
    const server = spawn(h.OUR_SERVER, [], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PORT: String(port), HOST: h.HOST, BLOBS: `${dir}/blobs`, LEVELDB: `${dir}/leveldb`, LOG_LEVEL: 'info' }
    })
    cleanup.push(async () => { if (server.exitCode === null && server.signalCode === null) try { process.kill(server.pid, 'SIGKILL') } catch (_) {} })
    const serverExit = new Promise((resolve) => server.once('exit', (code, signal) => resolve({ code, signal })))
    let stderr = ''
    server.stderr.setEncoding('utf8').on('data', (d) => { stderr += d })
    // pino-pretty reads the server's stdout directly; this process lets go
    // of its own end, so that when pino-pretty exits nobody reads it.
    const pretty = spawn(h.PINO_PRETTY, [], { stdio: [server.stdout, 'pipe', 'ignore'], env: { ...process.env, NO_COLOR: '1' } })
    cleanup.push(async () => { if (pretty.exitCode === null && pretty.signalCode === null) try { process.kill(pretty.pid, 'SIGKILL') } catch (_) {} })
    server.stdout.destroy()
    const prettyExit = new Promise((resolve) => pretty.once('exit', resolve))
    let out = ''
    pretty.stdout.setEncoding('utf8').on('data', (d) => { out += d })
    await h.waitUntil(() => /INFO \(\d+.*\): listening/.test(out), 15000, `the listening line through pino-pretty (stderr: ${stderr})`)
    assert.match(out, new RegExp(`port: ${port}`))
    const first = await h.writeRawEntries(port, ['{"before":"pino-pretty exits"}'])
    assert.deepEqual(first, [1])
    await h.waitUntil(() => (out.match(/INFO \(\d+/g) || []).length >= 2, 10000, 'a connection line through pino-pretty')
    // pino-pretty goes away; the server's stdout now has no reader.
    process.kill(pretty.pid, 'SIGKILL')
    await h.withTimeout(prettyExit, 10000, 'pino-pretty to exit')
    for (let i = 0; i < 20; i++) {
      const indices = await h.writeRawEntries(port, [`{"i":${i}}`])
      assert.deepEqual(indices, [i + 2], 'the server still answers with its stdout closed')
    }
    const log = await h.readLog(port)
    assert.equal(log.length, 21)
    assert.equal(server.exitCode, null, 'server still running')
    assert.equal(server.signalCode, null, 'server not killed by a signal (SIGPIPE)')
    process.kill(server.pid, 'SIGTERM')
    const exit = await h.withTimeout(serverExit, 10000, 'the server to exit on SIGTERM')
    assert.equal(exit.signal, null, 'not killed by a signal')
  })
})
