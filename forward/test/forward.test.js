'use strict'
// The forwarder against the real thing: Debian's nats-server as a three-node JetStream cluster
// on loopback (each node with its own store directory), our tcp-log-server, and the forwarder,
// all started here and stopped by pid. Rules checked, one test each:
//   - through kill -9 of the stream leader, two kill -9 of the forwarder, SIGTERM and kill -9 of
//     the server and the whole cluster down for a while, the stream ends holding exactly
//     messages 1..N, message i byte for byte entry i as the server serves it, no duplicate and no
//     gap, and a JetStream consumer (the official client) reads them back in order;
//   - a stream holding different data makes the forwarder refuse, naming both;
//   - two forwarders at once still store each entry once, even when one of them is frozen
//     mid-flight and thaws after the other has stored what it holds;
//   - a single node with one replica works the same; --once stops at the head.
// FORWARD_ENTRIES (default 20000) sets the scenario's size, FORWARD_SEED replays its timing.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { connect, StorageType } = require('nats')
const h = require('./lib/harness')
const { entryTexts } = require('./lib/entries')
const { prng } = require('../../test/interop/lib/entries')

const ENTRIES = Number(process.env.FORWARD_ENTRIES || 20000)
const SEED = Number(process.env.FORWARD_SEED || Math.floor(Math.random() * 2 ** 31))
const FAST = { ACK_TIMEOUT: '2', MAX_BACKOFF: '1', LAG_INTERVAL: '1' }

// A test body that, when it fails, first prints the last lines of every process it started.
// FORWARD_TEST_LOGS=dir keeps every line of every process there, failed or not.
function diagnosed (body) {
  return async () => {
    const from = h.started.length
    try {
      await body()
    } catch (error) {
      for (const p of h.started.slice(from)) console.log(p.output().replace(/^/gm, '# '))
      throw error
    } finally {
      if (process.env.FORWARD_TEST_LOGS) h.keepLogs(process.env.FORWARD_TEST_LOGS, h.started.slice(from))
    }
  }
}

let dir, cluster, nc

before(async () => {
  dir = h.makeTempDir('cluster')
  cluster = await h.startNats(dir, 3)
  nc = await connect({ servers: cluster.urls.split(','), maxReconnectAttempts: -1, reconnectTimeWait: 250, waitOnFirstConnect: true })
  // JetStream answers once the cluster has elected its meta leader.
  const jsm = await nc.jetstreamManager({ checkAPI: false })
  await h.waitUntil(() => jsm.getAccountInfo().then(() => true, () => false), 30000, 'the JetStream cluster to elect a leader', 200)
})

after(async () => {
  // A handle left open by a failed test must not keep this process (and CI) waiting.
  setTimeout(() => { console.log('# a handle kept the test process alive after the tests: exiting'); process.exit(1) }, 20000).unref()
  await h.stopAll()
  if (nc) await h.withTimeout(nc.close(), 5000, 'the test client to close').catch(() => {})
  if (dir) h.removeTempDir(dir)
})

function forwarderEnv (server, stream, extra = {}) {
  return { LOG_SERVER: server.address, NATS_URL: cluster.urls, STREAM: stream, SUBJECT: `log.${stream.toLowerCase()}`, ...FAST, ...extra }
}

async function streamInfo (stream) {
  const jsm = await nc.jetstreamManager({ checkAPI: false })
  return jsm.streams.info(stream)
}

async function lastSeq (stream) {
  try { return (await streamInfo(stream)).state.last_seq } catch (_) { return -1 }
}

// The stream must hold exactly the log: messages 1..N, message i entry i byte for byte, with
// the message id i, read back in order by an ordered consumer of the official client.
async function checkStreamIsLog (stream, subject, entries) {
  const info = await streamInfo(stream)
  assert.equal(info.state.first_seq, 1, 'the stream starts at sequence 1')
  assert.equal(info.state.last_seq, entries.length, `the stream's last sequence is the log's head ${entries.length}`)
  assert.equal(info.state.messages, entries.length, 'as many messages as entries: no duplicate, no gap')
  const consumer = await nc.jetstream().consumers.get(stream)
  const messages = await consumer.consume()
  const problems = []
  let seen = 0
  await h.withTimeout((async () => {
    for await (const m of messages) {
      seen++
      const want = entries[seen - 1]
      if (m.seq !== seen) problems.push(`message ${seen} read as sequence ${m.seq}`)
      else if (!Buffer.from(m.data).equals(want)) problems.push(`message ${seen} differs from entry ${seen}: ${Buffer.from(m.data).subarray(0, 80)} vs ${want.subarray(0, 80)}`)
      else if (m.headers?.get('Nats-Msg-Id') !== String(seen)) problems.push(`message ${seen} has message id ${m.headers?.get('Nats-Msg-Id')}`)
      else if (m.subject !== subject) problems.push(`message ${seen} has subject ${m.subject}`)
      if (problems.length >= 5 || seen === entries.length) break
    }
  })(), 120000, `a consumer to read ${entries.length} messages (read ${seen})`)
  await messages.close()
  assert.deepEqual(problems, [])
  assert.equal(seen, entries.length)
}

// For the waits: a forwarder that exited by itself ends the wait with its fatal line, rather
// than leave it to time out.
function noneGaveUp (forwarders) {
  for (const f of forwarders) {
    if (f.exited && f.exited.signal === null) {
      const fatal = f.events().find((e) => e.level >= 60)
      throw new Error(`${f.label} exited with status ${f.exited.code}: ${fatal ? fatal.msg : f.output()}`)
    }
  }
  return true
}

async function streamLeader (stream) {
  const info = await streamInfo(stream)
  return cluster.nodes.find((n) => n.name === info.cluster?.leader)
}

test(`${ENTRIES} entries reach an R3 stream exactly once through leader, forwarder, server and cluster failures (seed ${SEED})`, { timeout: 600000 }, diagnosed(async () => {
  const rand = prng(SEED)
  const serverDir = h.makeTempDir('log')
  const server = await h.LogServer.start(serverDir)
  const stream = 'FLEET'
  const subject = 'log.fleet'
  const forwarders = []
  const startForwarder = (extra = {}) => {
    const f = h.startForwarder(`forwarder ${forwarders.length + 1}`, forwarderEnv(server, stream, extra))
    forwarders.push(f)
    return f
  }
  let forwarder = startForwarder({ CREATE_STREAM: '1', REPLICAS: '3' })
  const writers = new h.Writers(server.port, entryTexts(SEED), { connections: 4, depth: 16, rate: 400 })
  const writing = writers.run(ENTRIES)
  const at = async (fraction, what) => {
    const threshold = Math.floor(ENTRIES * (fraction + (rand() - 0.5) * 0.04))
    await h.waitUntil(() => writers.confirmed >= threshold, 300000, `${threshold} confirmed writes before: ${what}`)
    console.log(`# ${writers.confirmed} writes confirmed, stream at ${await lastSeq(stream)}: ${what}`)
  }
  const timeline = (async () => {
    await at(0.08, 'kill -9 the forwarder')
    forwarder.kill('SIGKILL')
    await forwarder.exit
    await h.sleep(200 + rand() * 800)
    forwarder = startForwarder()

    await at(0.2, 'kill -9 the stream leader')
    const leader = await streamLeader(stream)
    assert.ok(leader, 'the stream has a leader')
    const seqAtKill = await lastSeq(stream)
    leader.proc.kill('SIGKILL')
    await leader.proc.exit
    // The two others elect a new leader (nats-server's raft waits 4 to 9 s for a dead leader),
    // and the forwarder goes on with it, before the old one comes back.
    const killed = Date.now()
    let successor = null
    await h.waitUntil(async () => {
      successor = await streamLeader(stream).catch(() => null)
      return successor && successor !== leader && (await lastSeq(stream)) > seqAtKill + 100
    }, 60000, `a new stream leader, and the stream to grow past ${seqAtKill + 100} without ${leader.name}`, 250)
    console.log(`# ${successor.name} leads the stream ${((Date.now() - killed) / 1000).toFixed(1)} s after ${leader.name} died, and the stream grew to ${await lastSeq(stream)}; restart ${leader.name}`)
    await leader.start()

    await at(0.35, 'SIGTERM the log server')
    assert.equal((await server.proc.stop('SIGTERM')).code, 0, 'the server stops gracefully')
    await h.sleep(500)
    await server.start()

    await at(0.5, 'kill -9 the forwarder again')
    await h.sleep(rand() * 500)
    forwarder.kill('SIGKILL')
    await forwarder.exit
    await h.sleep(rand() * 1000)
    forwarder = startForwarder()

    await at(0.62, 'kill -9 the log server')
    server.proc.kill('SIGKILL')
    await server.proc.exit
    await h.sleep(500)
    await server.start()

    await at(0.75, 'stop the whole cluster for 4 s')
    await Promise.all(cluster.nodes.map((n) => n.proc.stop('SIGTERM', 15000)))
    await h.sleep(4000)
    await Promise.all(cluster.nodes.map((n) => n.start()))
  })()
  await Promise.all([writing, timeline])
  const head = writers.lastIndex
  console.log(`# writers done: ${writers.confirmed} confirmed, head at least ${head}`)
  await h.waitUntil(async () => noneGaveUp(forwarders) && (await lastSeq(stream)) >= head, 180000, `the stream to reach the log's head ${head}`, 250)
  // Nothing arrives after the head once the writers stopped; give a stray publish time to show.
  await h.sleep(1000)
  assert.equal((await forwarder.stop('SIGTERM')).code, 0, 'the forwarder stops with status 0 on SIGTERM')
  const entries = await h.readLog(server.port)
  await checkStreamIsLog(stream, subject, entries)
  const events = forwarders.flatMap((f) => f.events())
  for (const event of ['started', 'resuming', 'caught-up', 'lag', 'retry', 'nats-disconnected', 'nats-reconnected', 'stopped']) {
    assert.ok(events.some((e) => e.event === event), `a forwarder logged "${event}"`)
  }
  assert.ok(forwarders.every((f) => !f.events().some((e) => e.level >= 60)), 'no forwarder logged a fatal line')
  await server.proc.stop()
  h.removeTempDir(serverDir)
}))

test('a stream that holds other data makes the forwarder refuse, naming both', { timeout: 60000 }, diagnosed(async () => {
  const serverDir = h.makeTempDir('refuse')
  const server = await h.LogServer.start(serverDir)
  const writers = new h.Writers(server.port, entryTexts(7), { connections: 1 })
  await writers.run(3)
  // The stream holds three messages, the last of which is not entry 3.
  const jsm = await nc.jetstreamManager({ checkAPI: false })
  await jsm.streams.add({ name: 'OTHER', subjects: ['log.other'], storage: StorageType.File, num_replicas: 3 })
  const js = nc.jetstream()
  for (const text of ['{"a":1}', '{"a":2}', '{"not":"this log"}']) await js.publish('log.other', Buffer.from(text))
  const f = h.startForwarder('refusing forwarder', forwarderEnv(server, 'OTHER'))
  const { code } = await h.withTimeout(f.exit, 30000, 'the forwarder to refuse')
  assert.equal(code, 65, f.output())
  const fatal = f.events().find((e) => e.level === 60)
  assert.match(fatal?.msg || '', new RegExp(`message 3 of stream OTHER .*"\\{\\\\"not\\\\":\\\\"this log\\\\"\\}".* is not entry 3 of the log at 127\\.0\\.0\\.1:${server.port}`), f.output())
  assert.equal((await streamInfo('OTHER')).state.last_seq, 3, 'nothing was appended')

  // A stream with more messages than the log has entries: refused too.
  await js.publish('log.other', Buffer.from('{"a":4}'))
  await js.publish('log.other', Buffer.from('{"a":5}'))
  const g = h.startForwarder('refusing forwarder 2', forwarderEnv(server, 'OTHER'))
  assert.equal((await h.withTimeout(g.exit, 30000, 'the forwarder to refuse')).code, 65, g.output())
  assert.match(g.events().find((e) => e.level === 60)?.msg || '', /stream OTHER holds 5 messages but the log at .* has fewer entries/)

  // A missing stream is not created unless asked.
  const m = h.startForwarder('forwarder without a stream', forwarderEnv(server, 'MISSING'))
  assert.equal((await h.withTimeout(m.exit, 30000, 'the forwarder to stop')).code, 65, m.output())
  assert.match(m.events().find((e) => e.level === 60)?.msg || '', /stream MISSING does not exist: .*--create-stream/)
  await server.proc.stop()
  h.removeTempDir(serverDir)
}))

test('two forwarders at once still store each entry once', { timeout: 180000 }, diagnosed(async () => {
  const serverDir = h.makeTempDir('two')
  const server = await h.LogServer.start(serverDir)
  const writers = new h.Writers(server.port, entryTexts(11, { bigEvery: 500 }), { connections: 2, rate: 1000 })
  const writing = writers.run(5000)
  await h.waitUntil(() => writers.confirmed >= 1000, 60000, '1000 entries written')
  // A deduplication window of 100 ms, the shortest JetStream takes: its message-id check hides
  // fewer second copies, so the expected-last-sequence header must refuse them.
  const jsm = await nc.jetstreamManager({ checkAPI: false })
  await jsm.streams.add({ name: 'TWO', subjects: ['log.two'], storage: StorageType.File, num_replicas: 3, duplicate_window: 1e8 })
  const env = forwarderEnv(server, 'TWO')
  const a = h.startForwarder('forwarder A', env)
  const b = h.startForwarder('forwarder B', env)
  await writing
  const head = writers.lastIndex
  await h.waitUntil(async () => noneGaveUp([a, b]) && (await lastSeq('TWO')) >= head, 120000, `stream TWO to reach ${head}`, 250)
  await h.sleep(500)
  assert.equal((await a.stop()).code, 0, a.output())
  assert.equal((await b.stop()).code, 0, b.output())
  await checkStreamIsLog('TWO', 'log.two', await h.readLog(server.port))
  // Where both sent the same entry, the stream refused one copy.
  const refused = [...a.events(), ...b.events()].filter((e) => e.event === 'retry' && /refused entry/.test(e.msg))
  console.log(`# forwarders A and B were refused ${refused.length} times by the expected-last-sequence check`)

  // --once: up to the head, then exit 0, here with nothing left to do.
  const once = h.startForwarder('forwarder --once', env, ['--once'])
  assert.equal((await h.withTimeout(once.exit, 30000, 'the forwarder --once to exit')).code, 0, once.output())
  assert.ok(once.has((e) => e.event === 'caught-up' && e.index === head), once.output())
  await server.proc.stop()
  h.removeTempDir(serverDir)
}))

test('a forwarder frozen mid-flight while another carries on appends nothing stale when it thaws', { timeout: 180000 }, diagnosed(async () => {
  // Forwarder A is stopped (SIGSTOP: a long GC pause, a suspended VM) while it catches up, with
  // publishes in flight and entries read; B forwards everything meanwhile; A resumes long after
  // the 100 ms deduplication window, holding entries that B has already stored.
  const serverDir = h.makeTempDir('frozen')
  const server = await h.LogServer.start(serverDir)
  const writers = new h.Writers(server.port, entryTexts(17, { bigEvery: 1000 }), { connections: 4, depth: 64 })
  await writers.run(15000)
  const head = writers.lastIndex
  const jsm = await nc.jetstreamManager({ checkAPI: false })
  await jsm.streams.add({ name: 'FROZEN', subjects: ['log.frozen'], storage: StorageType.File, num_replicas: 3, duplicate_window: 1e8 })
  const env = forwarderEnv(server, 'FROZEN')
  // A's acknowledgements may take longer than its freeze: at the thaw it takes the ones that
  // arrived meanwhile and goes on publishing what it had read, rather than timing out first.
  const a = h.startForwarder('forwarder A', { ...env, ACK_TIMEOUT: '60' })
  await h.waitUntil(async () => (await lastSeq('FROZEN')) >= 1000, 60000, 'forwarder A to forward 1000 entries', 5)
  a.kill('SIGSTOP')
  const frozenAt = await lastSeq('FROZEN')
  assert.ok(frozenAt < head - 1000, `A was frozen in the middle (at ${frozenAt} of ${head})`)
  const b = h.startForwarder('forwarder B', env)
  await h.waitUntil(async () => noneGaveUp([b]) && (await lastSeq('FROZEN')) >= head, 120000, `forwarder B to reach ${head}`, 100)
  await h.sleep(500)
  a.kill('SIGCONT')
  await h.waitUntil(() => noneGaveUp([a, b]) && a.has((e) => e.event === 'caught-up' && e.index === head), 30000, 'forwarder A to start over and find the stream caught up')
  assert.equal((await a.stop()).code, 0, a.output())
  assert.equal((await b.stop()).code, 0, b.output())
  await checkStreamIsLog('FROZEN', 'log.frozen', await h.readLog(server.port))
  const refused = a.events().filter((e) => e.event === 'retry' && /refused entry/.test(e.msg))
  assert.ok(refused.length > 0, `the stream refused A's stale publishes: ${a.output()}`)
  await server.proc.stop()
  h.removeTempDir(serverDir)
}))

test('a single node with one replica: --once forwards up to the head and exits', { timeout: 60000 }, diagnosed(async () => {
  const natsDir = h.makeTempDir('single')
  const single = await h.startNats(natsDir, 1)
  const server = await h.LogServer.start(natsDir)
  const writers = new h.Writers(server.port, entryTexts(13), { connections: 2 })
  await writers.run(500)
  const env = { LOG_SERVER: server.address, NATS_URL: single.urls, STREAM: 'SOLO', SUBJECT: 'log.solo', ...FAST }
  // Three replicas cannot be placed on one node: a clear error, not a retry.
  const r3 = h.startForwarder('forwarder --replicas 3', { ...env, CREATE_STREAM: '1' })
  assert.equal((await h.withTimeout(r3.exit, 30000, 'the forwarder to give up')).code, 65, r3.output())
  assert.match(r3.events().find((e) => e.level === 60)?.msg || '', /cannot create stream SOLO with 3 replica\(s\).*--replicas 1/)
  const f = h.startForwarder('forwarder --once', { ...env, CREATE_STREAM: '1', REPLICAS: '1' }, ['--once'])
  assert.equal((await h.withTimeout(f.exit, 30000, 'the forwarder --once to exit')).code, 0, f.output())
  assert.ok(f.has((e) => e.event === 'caught-up' && e.index === writers.lastIndex), f.output())
  const snc = await connect({ servers: single.urls })
  try {
    const entries = await h.readLog(server.port)
    const jsm = await snc.jetstreamManager()
    const info = await jsm.streams.info('SOLO')
    assert.equal(info.config.num_replicas, 1)
    assert.equal(info.config.storage, 'file')
    assert.equal(info.state.messages, entries.length)
    for (const i of [1, Math.ceil(entries.length / 2), entries.length]) {
      assert.ok(Buffer.from((await jsm.streams.getMessage('SOLO', { seq: i })).data).equals(entries[i - 1]), `message ${i} is entry ${i}`)
    }
  } finally {
    await snc.close()
  }
  await server.proc.stop()
  await single.nodes[0].proc.stop()
  h.removeTempDir(natsDir)
}))
