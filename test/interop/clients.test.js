'use strict'
// The real tcp-log-client, as published, against our server.
//   tcp-log-client@6.0.0 reads in batches: {"from":N,"read":5}, then again
//     after each {"head":H}; a batch read echoes this connection's own writes.
//   tcp-log-client@4.0.0 reads with one stream read {"from":N}; a stream read
//     does not echo this connection's own writes (issue 2).
// Both reconnect by themselves (reconnect-core, fibonacci backoff from 100 ms)
// and read again from one past the last index their readStream passed on.

const { describe, test, afterEach } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const h = require('./lib/harness')

const CLIENTS = [
  { version: '6.0.0', Client: require('tcp-log-client-6'), echoesOwnWrites: true },
  { version: '4.0.0', Client: require('tcp-log-client-4'), echoesOwnWrites: false }
]

const T = { start: 15000, ready: 10000, writes: 60000, read: 30000, reconnect: 30000 }

// Everything a test started, stopped after it whatever happened.
const cleanup = h.cleanupAfterEach(afterEach)

async function startOurs ({ port = 0, dir } = {}) {
  dir = dir || h.makeTempDir('client')
  const server = await h.startServer({ kind: 'ours', dir, port, timeoutMs: T.start })
  cleanup.push(() => h.stopServer(server))
  return server
}

function newDir () {
  const dir = h.makeTempDir('client')
  cleanup.push(() => h.removeTempDir(dir))
  return dir
}

// A connected client whose readStream is always consumed (as the client
// requires: its confirmations travel through the same pipeline).
function makeClient (Client, port) {
  const client = new Client({ server: { host: h.HOST, port } })
  const state = { entries: [], currents: 0, readies: 0, disconnects: 0, errors: [] }
  client.on('error', (error) => state.errors.push(error))
  client.on('current', () => { state.currents++ })
  client.on('ready', () => { state.readies++ })
  client.on('disconnect', () => { state.disconnects++ })
  client.readStream.on('data', (chunk) => state.entries.push(chunk))
  client.connect()
  cleanup.push(async () => {
    client.destroy()
    if (client._socketStream) client._socketStream.destroy()
  })
  return { client, state }
}

async function connected (client, state, readies = 1) {
  await h.waitUntil(() => state.readies >= readies && client.connected, T.ready, `client ready #${readies}`)
}

// Write entries with client.write and collect every callback.
function writeAll (client, entries) {
  const results = []
  entries.forEach((entry, i) => {
    client.write(entry, (error, index) => results.push({ i, error, index }))
  })
  return results
}

const indicesOf = (chunks) => chunks.map((c) => c.index)
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k)

for (const { version, Client, echoesOwnWrites } of CLIENTS) {
  describe(`tcp-log-client@${version}`, () => {
    test('1000 writes in flight at once call back with indices 1..1000, once each, in write order', { timeout: T.writes + 20000 }, async () => {
      const server = await startOurs({ dir: newDir() })
      const { client, state } = makeClient(Client, server.port)
      await connected(client, state)
      const entries = range(1, 1000).map((n) => ({ n, text: `entry ${n}`, nested: { list: [n, String(n)] } }))
      const results = writeAll(client, entries)
      await h.waitUntil(() => results.length >= 1000, T.writes, '1000 write callbacks')
      await h.sleep(100) // a second callback for any write would show here
      assert.equal(results.length, 1000)
      assert.deepEqual(results.filter((r) => r.error), [])
      for (const r of results) assert.equal(typeof r.index, 'number', `index must be a JSON number, got ${JSON.stringify(r.index)}`)
      assert.deepEqual(results.map((r) => r.i), range(0, 999), 'callbacks in write order, each once')
      assert.deepEqual(results.map((r) => r.index), range(1, 1000), 'write i gets index i+1')
      // The log holds exactly these entries at these indices.
      const log = await h.readLog(server.port)
      assert.deepEqual(indicesOf(log), range(1, 1000))
      assert.deepEqual(log.map((m) => m.entry), entries)
      assert.deepEqual(state.errors, [])
    })

    test('readStream yields every entry in order, "current" fires, and entries written by another client arrive live', { timeout: 60000 }, async () => {
      const server = await startOurs({ dir: newDir() })
      const old = range(1, 300).map((n) => ({ old: n, s: 'x'.repeat(n % 50) }))
      assert.deepEqual(await h.writeRawEntries(server.port, old.map((e) => JSON.stringify(e))), range(1, 300))

      const a = makeClient(Client, server.port)
      await h.waitUntil(() => a.state.currents >= 1, T.read, '"current" on client A')
      await h.waitUntil(() => a.state.entries.length >= 300, T.read, 'client A to read 300 entries')
      assert.deepEqual(indicesOf(a.state.entries), range(1, 300))
      for (const chunk of a.state.entries) assert.equal(typeof chunk.index, 'number')
      assert.deepEqual(a.state.entries.map((c) => c.entry), old)

      // Another client writes; A receives the entries live, in order.
      const b = makeClient(Client, server.port)
      await connected(b.client, b.state)
      await h.waitUntil(() => b.state.currents >= 1, T.read, '"current" on client B')
      const live = range(301, 350).map((n) => ({ live: n }))
      const results = writeAll(b.client, live)
      await h.waitUntil(() => results.length >= live.length, T.writes, 'client B write callbacks')
      assert.deepEqual(results.map((r) => r.index), range(301, 350))
      await h.waitUntil(() => a.state.entries.length >= 350, T.read, 'client A to receive 50 live entries')
      assert.deepEqual(indicesOf(a.state.entries), range(1, 350), 'no gaps, no duplicates')
      assert.deepEqual(a.state.entries.slice(300).map((c) => c.entry), live)

      // The echo rule: A writes 5 entries itself. B (another connection)
      // receives them; A's readStream has them only on the batch protocol.
      const own = range(351, 355).map((n) => ({ own: n }))
      const ownResults = writeAll(a.client, own)
      await h.waitUntil(() => ownResults.length >= 5, T.writes, 'client A write callbacks')
      assert.deepEqual(ownResults.map((r) => r.index), range(351, 355))
      // B has read 1..300, its own writes 301..350 only if echoed, then A's.
      const bExpected = [...range(1, 300), ...(echoesOwnWrites ? range(301, 350) : []), ...range(351, 355)]
      await h.waitUntil(() => b.state.entries.length >= bExpected.length, T.read, 'client B to receive A\'s writes')
      await h.sleep(echoesOwnWrites ? 0 : 300)
      assert.deepEqual(indicesOf(b.state.entries), bExpected)
      if (echoesOwnWrites) {
        await h.waitUntil(() => a.state.entries.length >= 355, T.read, 'client A to receive its own writes (batch read)')
        assert.deepEqual(indicesOf(a.state.entries), range(1, 355))
      } else {
        await h.sleep(300)
        assert.deepEqual(indicesOf(a.state.entries), range(1, 350), 'a stream read does not echo its own connection\'s writes')
      }
      assert.deepEqual(a.state.errors, [])
      assert.deepEqual(b.state.errors, [])
    })

    test('after the server is stopped and restarted on the same data, the client reconnects and resumes without duplicates or gaps', { timeout: 90000 }, async () => {
      const dir = newDir()
      const port = await h.freePort()
      let server = await startOurs({ dir, port })
      const first = range(1, 20).map((n) => ({ before: n }))
      await h.writeRawEntries(server.port, first.map((e) => JSON.stringify(e)))
      const { client, state } = makeClient(Client, port)
      await h.waitUntil(() => state.currents >= 1 && state.entries.length >= 20, T.read, 'client to read 20 entries')

      const exit = await h.stopServer(server)
      assert.deepEqual(exit, { code: 0, signal: null }, 'a graceful stop on SIGTERM exits 0')
      await h.waitUntil(() => !client.connected && state.disconnects >= 1, T.reconnect, 'client to notice the disconnect')

      server = await startOurs({ dir, port })
      await connected(client, state, 2)
      const second = range(21, 40).map((n) => ({ after: n }))
      assert.deepEqual(await h.writeRawEntries(server.port, second.map((e) => JSON.stringify(e))), range(21, 40),
        'indices continue after the restart')
      await h.waitUntil(() => state.entries.length >= 40, T.read, 'client to read 20 new entries after reconnecting')
      await h.sleep(200) // duplicates, if any, would show here
      assert.deepEqual(indicesOf(state.entries), range(1, 40), 'no duplicates, no gaps')
      assert.deepEqual(state.entries.map((c) => c.entry), [...first, ...second])

      // And the reconnected client writes.
      const results = writeAll(client, [{ reconnected: true }])
      await h.waitUntil(() => results.length >= 1, T.writes, 'write callback after reconnecting')
      assert.deepEqual(results, [{ i: 0, error: null, index: 41 }])
      assert.deepEqual(state.errors, [])

      // A new client reads everything back from the restarted server's disk.
      const fresh = makeClient(Client, port)
      await h.waitUntil(() => fresh.state.currents >= 1 && fresh.state.entries.length >= 41, T.read, 'a new client to read 41 entries')
      assert.deepEqual(indicesOf(fresh.state.entries), range(1, 41))
      assert.deepEqual(fresh.state.entries.map((c) => c.entry), [...first, ...second, { reconnected: true }])
      assert.deepEqual(fresh.state.errors, [])
    })

    test('a write while disconnected fails as the client documents, and nothing is half-written', { timeout: 90000 }, async (t) => {
      const dir = newDir()
      const port = await h.freePort()
      let server = await startOurs({ dir, port })
      const { client, state } = makeClient(Client, port)
      await connected(client, state)
      const confirmedFirst = range(1, 10).map((n) => ({ first: n }))
      const r1 = writeAll(client, confirmedFirst)
      await h.waitUntil(() => r1.length >= 10, T.writes, '10 write callbacks')
      assert.deepEqual(r1.map((r) => r.index), range(1, 10))

      // 200 writes in flight while the server stops: each calls back, with
      // an index or with the client's disconnect error.
      const inflight = range(1, 200).map((n) => ({ inflight: n, pad: 'p'.repeat(200) }))
      const r2 = writeAll(client, inflight)
      const stopped = h.stopServer(server)
      await h.waitUntil(() => r2.length >= 200, T.reconnect, 'every in-flight write to call back')
      assert.deepEqual(await stopped, { code: 0, signal: null }, 'a graceful stop on SIGTERM exits 0')
      await h.waitUntil(() => !client.connected, T.reconnect, 'client to notice the disconnect')
      const allowed = ['Disconnected from server.', 'Server closed the connection.']
      for (const r of r2) {
        if (r.error) assert.ok(allowed.includes(r.error.message), `unexpected error: ${r.error.message}`)
        else assert.equal(typeof r.index, 'number')
      }
      const confirmed = r2.filter((r) => !r.error)
      t.diagnostic(`in flight at SIGTERM: ${confirmed.length} confirmed, ${r2.length - confirmed.length} failed with the disconnect error`)

      // Disconnected: write() throws, as documented in the client's source
      // (check `client.connected` first); its callback is never called.
      let called = false
      assert.throws(() => client.write({ lost: true }, () => { called = true }),
        /^Error: Cannot write when disconnected\. Check `client.connected` before calling `client.write\(\)`\.$/)

      // Restart on the same data; the client reconnects and writes again.
      server = await startOurs({ dir, port })
      await connected(client, state, 2)
      const r3 = writeAll(client, [{ after: 'restart' }])
      await h.waitUntil(() => r3.length >= 1, T.writes, 'write callback after restart')
      assert.equal(r3[0].error, null)
      assert.equal(called, false, 'the failed write\'s callback is never called')

      // The log: the 10 first entries, then a prefix of the in-flight writes
      // in write order (every confirmed one among them), then the last write.
      const log = await h.readLog(server.port)
      const head = log.length
      assert.deepEqual(indicesOf(log), range(1, head), 'contiguous indices')
      assert.equal(r3[0].index, head)
      assert.deepEqual(log[head - 1].entry, { after: 'restart' })
      assert.deepEqual(log.slice(0, 10).map((m) => m.entry), confirmedFirst)
      const stored = log.slice(10, head - 1).map((m) => m.entry)
      t.diagnostic(`stored of the 200 in flight: ${stored.length}`)
      assert.deepEqual(stored, inflight.slice(0, stored.length), 'in-flight writes stored whole, in order, none skipped')
      for (const r of confirmed) assert.deepEqual(log[r.index - 1].entry, inflight[r.i], `confirmed write ${r.i} at index ${r.index}`)
      assert.ok(!log.some((m) => m.entry && m.entry.lost), 'the write made while disconnected is not in the log')
      // Every blob file holds bytes whose SHA-256 is its name; the index
      // file has one 65-byte record per entry.
      const blobs = h.readBlobDir(server.blobs)
      for (const [name, bytes] of blobs) assert.equal(name.replace('/', ''), h.sha256(bytes), `blob ${name} is whole`)
      // The server confirms at its journal and appends index records just
      // after (within a second once writes pause): wait for them, bounded.
      const sizes = () => fs.readdirSync(server.leveldb)
        .map((f) => fs.statSync(path.join(server.leveldb, f)))
        .filter((s) => s.isFile()).map((s) => s.size)
      await h.waitUntil(() => sizes().includes(head * 65), 10000, () => `an index file of ${head} records (${head * 65} bytes) in LEVELDB; sizes: ${sizes()}`)
      assert.deepEqual(state.errors, [])
    })

    test('killed (kill -9) with writes in flight: pending writes call back with the disconnect error, confirmed ones survive, nothing is half-written', { timeout: 90000 }, async (t) => {
      const dir = newDir()
      const port = await h.freePort()
      let server = await startOurs({ dir, port })
      const { client, state } = makeClient(Client, port)
      await connected(client, state)
      // 3,000 writes, and once 300 are confirmed the server is frozen
      // (SIGSTOP) and 200 more are written: those cannot be confirmed, so
      // some writes are surely pending at the kill however fast the server
      // confirms the first 3,000.
      const inflight = range(1, 3200).map((n) => ({ inflight: n, pad: 'k'.repeat(500) }))
      const results = []
      const write = (from, to) => {
        for (let i = from; i < to; i++) client.write(inflight[i], (error, index) => results.push({ i, error, index }))
      }
      write(0, 3000)
      await h.waitUntil(() => results.length >= 300, T.writes, '300 confirmations')
      process.kill(server.pid, 'SIGSTOP')
      write(3000, inflight.length)
      await h.stopServer(server, { signal: 'SIGKILL' })
      await h.waitUntil(() => results.length >= inflight.length, T.reconnect, 'every in-flight write to call back')
      await h.waitUntil(() => !client.connected, T.reconnect, 'client to notice the disconnect')
      const confirmed = results.filter((r) => !r.error)
      const failed = results.filter((r) => r.error)
      t.diagnostic(`at kill -9: ${confirmed.length} confirmed, ${failed.length} failed`)
      for (const r of failed) assert.ok(['Disconnected from server.', 'Server closed the connection.'].includes(r.error.message), `unexpected error: ${r.error.message}`)
      assert.ok(failed.length > 0, 'some writes were still pending at kill -9')
      assert.deepEqual(confirmed.map((r) => r.index), range(1, confirmed.length), 'confirmations in order')

      server = await startOurs({ dir, port })
      await connected(client, state, 2)
      const log = await h.readLog(server.port)
      t.diagnostic(`stored after restart: ${log.length}`)
      assert.deepEqual(indicesOf(log), range(1, log.length), 'contiguous indices')
      assert.ok(log.length >= confirmed.length, 'every confirmed write survives kill -9')
      assert.deepEqual(log.map((m) => m.entry), inflight.slice(0, log.length), 'whole entries, in write order, none skipped')
      for (const [name, bytes] of h.readBlobDir(server.blobs)) assert.equal(name.replace('/', ''), h.sha256(bytes), `blob ${name} is whole`)
      // The client writes again after reconnecting; its index follows the log.
      const after = writeAll(client, [{ after: 'kill -9' }])
      await h.waitUntil(() => after.length >= 1, T.writes, 'write callback after restart')
      assert.deepEqual(after, [{ i: 0, error: null, index: log.length + 1 }])
      assert.deepEqual(state.errors, [])
    })

    test('destroy() ends the connection: the server closes its side, so the client\'s process can exit', { timeout: 30000 }, async () => {
      const server = await startOurs({ dir: newDir() })
      await h.writeRawEntries(server.port, ['{"a":1}', '{"b":2}'])
      const { client, state } = makeClient(Client, server.port)
      await h.waitUntil(() => state.currents >= 1 && state.entries.length >= 2, T.read, 'client to read 2 entries')
      const results = writeAll(client, [{ c: 3 }])
      await h.waitUntil(() => results.length >= 1, T.writes, 'write callback')
      const socket = client._socketStream
      let closed = false
      socket.once('close', () => { closed = true })
      client.destroy() // half-closes: socket.end()
      await h.waitUntil(() => closed, 10000, 'the server to close the connection after the client\'s FIN')
      assert.deepEqual(state.errors, [])
    })
  })
}
