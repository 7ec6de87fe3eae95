'use strict'
// Moving from the Node.js server (issue 11), end to end: a log written by the real Node.js
// tcp-log-server of each version line, stopped, migrated with `make migrate`, then served by ours
// from the same BLOBS and LEVELDB.
//
// Servers: tcp-log-server@10.0.0 as published; 9.0.4 and 6.0.2 are the published packages too, but
// their leveldown@1.x does not build on Node.js 20, so package.json "overrides" gives them
// leveldown@5.6.0 (the one 10.0.0 uses). Their own code (level-simple-log@2 or level-logs@1 over
// levelup@1, fs-blob-store, their hash function) is what writes the keys, values and blobs, and
// LevelDB's file format is the same across those leveldown versions. 6.0.2's server.js requires
// `sha256`, which it lists only as a devDependency; it is installed beside it here, as a 6.x
// user must have had it (its Latin-1 hashing is what lib/files.js's 'latin1-name' handles).
//
// Every server and migration runs in a fresh temporary directory on loopback, is stopped by
// its pid, and every wait is bounded.

const { describe, test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const h = require('./lib/harness')
const { identicalEntries } = require('./lib/entries')

const REPO = path.resolve(h.INTEROP_DIR, '../..')
const MIGRATE = path.join(REPO, 'migrate/migrate.js')
const { ClassicLevel } = require(path.join(REPO, 'migrate/node_modules/classic-level'))
const Client6 = require('tcp-log-client-6')
const lexint = require('lexicographic-integer')
const { decodeIndex } = require(path.join(REPO, 'migrate/lib/formats'))

// 280 varied entries (see lib/entries.js; two of them are one entry in another key order) and
// entry 3 once more at the end: the same entry twice, and the last entry shares its blob. Past
// 250, lexicographic-integer keys take two bytes (fb00 is 251).
const BASE = identicalEntries(280)
const ENTRIES = [...BASE, BASE[2]]
// What the Node.js servers store for each (json-stable-stringify), and so what ours must serve.
const STORED = ENTRIES.map((raw) => h.canonical(JSON.parse(raw)))
const HASHES = STORED.map((text) => h.sha256(Buffer.from(text, 'utf8')))
const N = ENTRIES.length
const INDEX_BYTES = HASHES.map((hash) => hash + '\n').join('')

const T = { migrate: 60000, read: 30000 }

// ---------------------------------------------------------------------------------------------
// Helpers

const children = new Set()
process.on('exit', () => {
  for (const child of children) try { process.kill(child.pid, 'SIGKILL') } catch (_) {}
})

const cleanEnv = () => {
  const env = { ...process.env }
  for (const key of ['BLOBS', 'LEVELDB', 'LEVELDOWN', 'ACCEPT_DAMAGED', 'TCP_LOG_MIGRATE_CRASH_AT']) delete env[key]
  return env
}

// Runs the migration on `store` ({blobs, leveldb}) to its end: as the README says
// (`make migrate BLOBS=.. LEVELDB=..` in the repository) with `make`, else `node migrate.js`.
function runMigrate (store, { env = {}, make = false } = {}) {
  const [command, args] = make
    ? ['make', ['-s', '--no-print-directory', '-C', REPO, 'migrate', `BLOBS=${store.blobs}`, `LEVELDB=${store.leveldb}`]]
    : [process.execPath, [MIGRATE]]
  const childEnv = { ...cleanEnv(), ...(make ? {} : { BLOBS: store.blobs, LEVELDB: store.leveldb }), ...env }
  const child = spawn(command, args, { env: childEnv, cwd: path.dirname(store.blobs), stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  let out = ''
  let err = ''
  child.stdout.on('data', (chunk) => { out += chunk })
  child.stderr.on('data', (chunk) => { err += chunk })
  const done = new Promise((resolve) => child.once('close', (status, signal) => {
    children.delete(child)
    resolve({ status, signal, out, err, output: out + err })
  }))
  return h.withTimeout(done, T.migrate, `migration of ${store.leveldb}`).catch((error) => {
    try { process.kill(child.pid, 'SIGKILL') } catch (_) {}
    throw error
  })
}

// Our binary run to its end with `args` (e.g. --check) on `store`.
function runOurs (store, args = []) {
  const r = spawnSync(h.OUR_SERVER, args, {
    env: { ...cleanEnv(), PORT: '0', BLOBS: store.blobs, LEVELDB: store.leveldb },
    cwd: path.dirname(store.blobs),
    encoding: 'utf8',
    timeout: 20000
  })
  return { status: r.status, out: r.stdout, err: r.stderr }
}

// Every file under `dir` (not those whose name is in `skip`): kind, mode, size, time and bytes.
function snapshot (dir, skip = []) {
  const result = new Map()
  const walk = (rel) => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      if (skip.includes(name)) continue
      const r = path.join(rel, name)
      const st = fs.lstatSync(path.join(dir, r), { bigint: true })
      const bytes = st.isFile() ? h.sha256(fs.readFileSync(path.join(dir, r))) : ''
      result.set(r, `mode ${st.mode} size ${st.size} mtime ${st.mtimeNs} ${bytes}`)
      if (st.isDirectory()) walk(r)
    }
  }
  walk('')
  return result
}

function assertSameTree (before, after, what) {
  const changed = [...new Set([...before.keys(), ...after.keys()])].filter((k) => before.get(k) !== after.get(k))
  assert.deepEqual(changed, [], `${what}: changed, added or removed: ${changed.slice(0, 5).join(', ')}`)
}

// A Node.js server of `version` on a fresh directory; `entries` written over one connection.
async function nodeStore (version, entries) {
  const dir = h.makeTempDir(`migrate-node${version}`)
  const server = await h.startServer({ kind: 'node', dir, port: await h.freePort(), script: h.NODE_SERVERS[version] })
  try {
    const indices = entries.length ? await h.writeRawEntries(server.port, entries, { idPrefix: `node${version}` }) : []
    return { dir, blobs: server.blobs, leveldb: server.leveldb, indices }
  } finally {
    await h.stopServer(server)
  }
}

// A copy of a store in a new temporary directory.
function copyStore (store, label) {
  const dir = h.makeTempDir(label)
  fs.cpSync(store.dir, dir, { recursive: true })
  return { dir, blobs: path.join(dir, 'blobs'), leveldb: path.join(dir, 'leveldb') }
}

const blobFile = (store, hash) => path.join(store.blobs, hash.slice(0, 2), hash.slice(2))
const readIndex = (store) => fs.readFileSync(path.join(store.leveldb, 'index'), 'latin1')

// Raw lines from our server for `request`, up to and including the first line `isLast` accepts.
function rawLines (port, request, isLast, what) {
  return h.withTimeout(new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: h.HOST })
    let buffer = ''
    const lines = []
    socket.setEncoding('utf8')
    socket.on('connect', () => socket.write(request + '\n'))
    socket.on('error', reject)
    socket.on('data', (chunk) => {
      buffer += chunk
      let nl
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl)
        buffer = buffer.slice(nl + 1)
        lines.push(line)
        if (isLast(line)) {
          socket.destroy()
          return resolve(lines)
        }
      }
    })
    socket.on('close', () => reject(new Error(`connection closed after ${lines.length} lines waiting for ${what}`)))
  }), T.read, what)
}

// The whole log by a stream read, as raw lines, without the closing {"current":true}.
async function streamRead (port, from = 1) {
  const lines = await rawLines(port, `{"from":${from}}`, (l) => l === '{"current":true}', '{"current":true}')
  return lines.slice(0, -1)
}

// The whole log through tcp-log-client@6.0.0 (batch reads): [{index, entry}].
async function clientRead (port, count) {
  const client = new Client6({ server: { host: h.HOST, port } })
  const entries = []
  const errors = []
  let current = false
  client.on('error', (error) => errors.push(error))
  client.on('current', () => { current = true })
  client.readStream.on('data', (chunk) => entries.push(chunk))
  client.connect()
  try {
    await h.waitUntil(() => (current && entries.length >= count) || errors.length, T.read, `${count} entries through tcp-log-client@6.0.0`)
  } finally {
    client.destroy()
    if (client._socketStream) client._socketStream.destroy()
  }
  assert.deepEqual(errors, [])
  return entries
}

const entryLine = (index, text) => `{"index":${index},"entry":${text}}`

// ---------------------------------------------------------------------------------------------
// Keys

test('the tool reads every index the way lexicographic-integer@1.1.0 writes it, and only that way', () => {
  const samples = [1, 2, 127, 250, 251, 252, 506, 507, 508, 65786, 65787, 65788, 16777466, 16777467, 16777468, 4294967545, 4294967546]
  for (let n = 1; n < 1000; n++) samples.push(n)
  for (const n of samples) assert.equal(decodeIndex(lexint.pack(n, 'hex')), n, `${n} = ${lexint.pack(n, 'hex')}`)
  assert.equal(lexint.pack(251, 'hex'), 'fb00')
  // Longer forms of small numbers, the lossy form from 251 + 2^32 on, and text that is not hex.
  for (const key of ['0001', 'fc00fa', 'fd0000ff', 'fe00000000', lexint.pack(4294967547, 'hex'), 'FB00', 'fb0', '', 'zz']) {
    assert.equal(decodeIndex(key), null, key)
  }
})

// ---------------------------------------------------------------------------------------------
// Each version line, end to end

const LINES = [
  { version: 10, format: 'tcp-log-server 9.x-10.x (level-simple-log)' },
  { version: 9, format: 'tcp-log-server 9.x-10.x (level-simple-log)' },
  { version: 6, format: 'tcp-log-server 4.x-6.x (level-logs)' }
]

const stores = {} // version -> a pristine copy of its store (never migrated), for the later tests

for (const { version, format } of LINES) {
  describe(`tcp-log-server ${version}: write with it, migrate, serve with ours`, () => {
    let store, server, leveldbBefore, blobsBefore
    const more = Array.from({ length: 20 }, (_, i) => `{"after":"migration","i":${i},"s":"é😀"}`)

    before(async () => {
      store = await nodeStore(version, ENTRIES)
      stores[version] = copyStore(store, `migrate-pristine${version}`)
    }, { timeout: 120000 })

    after(async () => { if (server) await h.stopServer(server) })

    test(`the Node.js server ${version} confirms indices 1..${N} and stores the blob names its code computes`, () => {
      assert.ok(N >= 200)
      assert.deepEqual(store.indices, ENTRIES.map((_, i) => i + 1))
      for (let i = 0; i < N; i++) {
        // 6.x names a blob by the SHA-256 of its text as Latin-1; its bytes are UTF-8.
        const name = version === 6 ? h.sha256(Buffer.from(STORED[i], 'latin1')) : HASHES[i]
        assert.equal(fs.readFileSync(blobFile(store, name), 'utf8'), STORED[i], `entry ${i + 1}`)
      }
      leveldbBefore = snapshot(store.leveldb)
      blobsBefore = snapshot(store.blobs)
    })

    test('ours refuses the unmigrated directories: exit 1, one fatal line with the migrate command, nothing written', () => {
      const r = runOurs(store)
      assert.equal(r.status, 1, r.out + r.err)
      const lines = r.out.trim().split('\n')
      assert.equal(lines.length, 1, r.out)
      const line = JSON.parse(lines[0])
      assert.equal(line.level, 60)
      assert.match(line.error, /holds a LevelDB database .* not yet migrated/)
      assert.ok(line.error.endsWith(`make migrate BLOBS=${store.blobs} LEVELDB=${store.leveldb}`), line.error)
      assertSameTree(leveldbBefore, snapshot(store.leveldb), 'LEVELDB')
      assertSameTree(blobsBefore, snapshot(store.blobs), 'BLOBS')
    })

    test('make migrate writes the index: every entry at the index the Node.js server gave it', async () => {
      const r = await runMigrate(store, { make: true })
      assert.equal(r.status, 0, r.output)
      assert.match(r.out, new RegExp(`read ${N} entries of a ${format.replace(/[().]/g, '\\$&')} log`))
      assert.match(r.out, /each one is whole and matches its name/)
      assert.equal(readIndex(store), INDEX_BYTES)
      assert.ok(!fs.existsSync(path.join(store.leveldb, 'migrate.tmp')))
    })

    test('the LevelDB files are left byte for byte; BLOBS keeps every file it had', () => {
      assertSameTree(leveldbBefore, snapshot(store.leveldb, ['index']), 'LEVELDB')
      const blobsAfter = snapshot(store.blobs)
      for (const [name, state] of blobsBefore) {
        if (name.includes('/')) assert.equal(blobsAfter.get(name), state, name) // files (an hh/ may gain one)
        else assert.ok(blobsAfter.has(name), name)
      }
      // 6.x only: each entry whose Latin-1 name differs now also has a blob under its own hash.
      const added = [...blobsAfter.keys()].filter((k) => !blobsBefore.has(k) && /^[0-9a-f]{2}\/[0-9a-f]{62}$/.test(k))
      const expected = version === 6
        ? [...new Set(STORED.filter((t) => h.sha256(Buffer.from(t, 'latin1')) !== h.sha256(Buffer.from(t, 'utf8'))).map(h.blobName))]
        : []
      assert.deepEqual(added.sort(), expected.sort())
      if (version === 6) assert.ok(expected.length > 100, `${expected.length} non-ASCII entries`)
    })

    test('ours serves every entry at its index, byte for byte, to a stream read and to tcp-log-client@6.0.0', async () => {
      server = await h.startServer({ kind: 'ours', dir: store.dir })
      const lines = await streamRead(server.port)
      assert.equal(lines.length, N)
      for (let i = 0; i < N; i++) assert.equal(lines[i], entryLine(i + 1, STORED[i]), `entry ${i + 1}`)
      const chunks = await clientRead(server.port, N)
      assert.deepEqual(chunks.map((c) => c.index), ENTRIES.map((_, i) => i + 1))
      for (let i = 0; i < N; i++) assert.deepEqual(chunks[i].entry, JSON.parse(STORED[i]), `entry ${i + 1}`)
    })

    test(`writes continue at ${N + 1} and read back`, async () => {
      const indices = await h.writeRawEntries(server.port, more, { idPrefix: 'more' })
      assert.deepEqual(indices, more.map((_, i) => N + 1 + i))
      const lines = await streamRead(server.port, N + 1)
      assert.deepEqual(lines, more.map((raw, i) => entryLine(N + 1 + i, h.canonical(JSON.parse(raw)))))
      const all = await clientRead(server.port, N + more.length)
      assert.equal(all.length, N + more.length)
    })

    test('the migration refuses while ours runs on the directories, naming its pid', async () => {
      const r = await runMigrate(store)
      assert.equal(r.status, 1, r.output)
      assert.match(r.err, new RegExp(`LEVELDB directory ${store.leveldb} is in use: .*LOCK is locked by pid ${server.pid}`))
    })

    if (version === 10) {
      test('a Node.js server started on the migrated directories while ours runs cannot open the LevelDB', async () => {
        const indexBefore = readIndex(store)
        let node
        try {
          node = await h.startServer({ kind: 'node', dir: store.dir, port: await h.freePort(), script: h.NODE_SERVERS[10] })
        } catch (error) {
          assert.match(error.message, /lock/i)
        }
        if (node) {
          // 10.0.0 listens before its LevelDB has opened; the failed open then ends it.
          const exited = await h.withTimeout(node.exitPromise, 10000, 'the Node.js server to exit')
          assert.notEqual(exited.code, 0)
          assert.match(node.stderr, /lock/i)
        }
        assert.equal(readIndex(store), indexBefore)
        assert.equal((await streamRead(server.port)).length, N + more.length)
      })
    }

    test('run again after ours wrote more: "already migrated", nothing changes', async () => {
      await h.stopServer(server)
      server = null
      assert.equal(readIndex(store).length, (N + more.length) * 65)
      const beforeRun = snapshot(store.leveldb)
      const r = await runMigrate(store)
      assert.equal(r.status, 0, r.output)
      assert.match(r.out, new RegExp(`already migrated: .* holds the ${N} entries of the LevelDB, and ${more.length} written to our server since`))
      assertSameTree(beforeRun, snapshot(store.leveldb), 'LEVELDB, index included')
      // Since the migration: ours wrote its pid into LOCK (the name both use) and made its
      // journal, and, for 10, the Node.js server of the test above rotated LevelDB's LOG before
      // it failed to lock; the LevelDB's data files are as the Node.js server left them.
      const data = (tree) => new Map([...tree].filter(([k]) => !['LOCK', 'LOG', 'LOG.old', 'index', 'journal'].includes(k)))
      assertSameTree(data(leveldbBefore), data(snapshot(store.leveldb)), 'LEVELDB')
    })
  })
}

// ---------------------------------------------------------------------------------------------
// Interrupted, damaged, unknown

describe('safe to interrupt', () => {
  const steps = [
    { at: 'copied', version: 9 },
    { at: 'read', version: 9 },
    { at: 'blobs-written', version: 6 },
    { at: 'temp-index', version: 9 },
    { at: 'linked', version: 9 }
  ]
  for (const { at, version } of steps) {
    test(`killed (SIGKILL) at "${at}": the LevelDB untouched, then a second run finishes`, async () => {
      const store = copyStore(stores[version], `migrate-crash-${at}`)
      const leveldb = snapshot(store.leveldb)
      const first = await runMigrate(store, { env: { TCP_LOG_MIGRATE_CRASH_AT: at } })
      assert.equal(first.signal, 'SIGKILL', first.output)
      assertSameTree(leveldb, snapshot(store.leveldb, ['index', 'migrate.tmp']), 'LEVELDB')
      assert.ok(fs.existsSync(path.join(store.leveldb, 'migrate.tmp')))
      const indexFile = path.join(store.leveldb, 'index')
      if (at === 'linked') {
        assert.equal(readIndex(store), INDEX_BYTES) // whole once it has its name
      } else {
        assert.ok(!fs.existsSync(indexFile))
        assert.equal(runOurs(store).status, 1) // still refused
      }
      const second = await runMigrate(store)
      assert.equal(second.status, 0, second.output)
      assert.match(second.out, /migrate\.tmp, left by an interrupted migration/)
      assert.ok(!fs.existsSync(path.join(store.leveldb, 'migrate.tmp')))
      assert.equal(readIndex(store), INDEX_BYTES)
      assertSameTree(leveldb, snapshot(store.leveldb, ['index']), 'LEVELDB')
      const check = runOurs(store, ['--check'])
      assert.equal(check.status, 0, check.out + check.err)
      assert.match(check.out, new RegExp(`entries: ${N}\n`))
    })
  }

  test('a leftover scratch directory with a partial index file is removed, not trusted', async () => {
    const store = copyStore(stores[10], 'migrate-stale')
    fs.mkdirSync(path.join(store.leveldb, 'migrate.tmp/leveldb'), { recursive: true })
    fs.writeFileSync(path.join(store.leveldb, 'migrate.tmp/index'), INDEX_BYTES.slice(0, 1000))
    fs.writeFileSync(path.join(store.leveldb, 'migrate.tmp/leveldb/CURRENT'), 'MANIFEST-000099\n')
    const r = await runMigrate(store)
    assert.equal(r.status, 0, r.output)
    assert.equal(readIndex(store), INDEX_BYTES)
    assert.ok(!fs.existsSync(path.join(store.leveldb, 'migrate.tmp')))
  })
})

describe('missing and damaged blobs', () => {
  // Entries with a blob of their own (not shared with another entry).
  const single = (i) => HASHES.filter((x) => x === HASHES[i - 1]).length === 1
  const missing = [17, 18, 19, 20].find(single)
  const damaged = [30, 31, 32, 33].find(single)

  function damage (store) {
    fs.unlinkSync(blobFile(store, HASHES[missing - 1]))
    const file = blobFile(store, HASHES[damaged - 1])
    fs.truncateSync(file, fs.statSync(file).size - 1)
  }

  test('are reported with their index and path; nothing is written and ours still refuses', async () => {
    const store = copyStore(stores[9], 'migrate-damaged')
    damage(store)
    const leveldb = snapshot(store.leveldb)
    const r = await runMigrate(store)
    assert.equal(r.status, 65, r.output)
    assert.match(r.out, new RegExp(`entry ${missing}: blob missing: ${blobFile(store, HASHES[missing - 1])}: ENOENT`))
    assert.match(r.out, new RegExp(`entry ${damaged}: blob damaged: ${blobFile(store, HASHES[damaged - 1])}: its \\d+ bytes hash to [0-9a-f]{64}, not to its name`))
    assert.match(r.err, /2 entries have a missing or damaged blob .* Nothing was written/)
    assertSameTree(leveldb, snapshot(store.leveldb), 'LEVELDB')
    assert.equal(runOurs(store).status, 1)
  })

  test('with ACCEPT_DAMAGED=1 they keep their indices and read back as errors; the rest is served', async () => {
    const store = copyStore(stores[9], 'migrate-accept')
    damage(store)
    const r = await runMigrate(store, { env: { ACCEPT_DAMAGED: '1' } })
    assert.equal(r.status, 0, r.output)
    assert.equal(readIndex(store), INDEX_BYTES)
    const server = await h.startServer({ kind: 'ours', dir: store.dir })
    try {
      const lines = await streamRead(server.port)
      assert.equal(lines.length, N)
      for (let i = 1; i <= N; i++) {
        if (i === missing || i === damaged) assert.match(lines[i - 1], new RegExp(`^\\{"index":${i},"error":`))
        else assert.equal(lines[i - 1], entryLine(i, STORED[i - 1]))
      }
    } finally {
      await h.stopServer(server)
    }
    const check = runOurs(store, ['--check'])
    assert.equal(check.status, 65)
    assert.match(check.out, new RegExp(`problem: entry ${missing}: `))
    assert.match(check.out, new RegExp(`problem: entry ${damaged}: `))
  })

  test('with ACCEPT_DAMAGED=1 a bad entry at the very end is left out (ours would cut it), and said so', async () => {
    // The last entry is entry 3 again: its blob gone, entry 3 is damaged in the middle too.
    const store = copyStore(stores[10], 'migrate-tail')
    fs.unlinkSync(blobFile(store, HASHES[N - 1]))
    const r = await runMigrate(store, { env: { ACCEPT_DAMAGED: '1' } })
    assert.equal(r.status, 0, r.output)
    assert.match(r.out, /entry 3: blob missing/)
    assert.match(r.out, new RegExp(`entry ${N}: blob missing`))
    assert.match(r.out, new RegExp(`left out entries ${N}\\.\\.${N} at the end of the log`))
    assert.equal(readIndex(store), INDEX_BYTES.slice(0, (N - 1) * 65))
    const server = await h.startServer({ kind: 'ours', dir: store.dir })
    try {
      assert.deepEqual(await h.writeRawEntries(server.port, ['{"next":true}']), [N])
    } finally {
      await h.stopServer(server)
    }
  })
})

describe('what the tool does not recognise, or cannot use', () => {
  // Opens a copy's LevelDB (the copy is ours to change) and applies `change` to it.
  async function editLevelDb (store, change) {
    const db = new ClassicLevel(store.leveldb, { keyEncoding: 'buffer', valueEncoding: 'buffer', createIfMissing: false })
    await db.open()
    try { await change(db) } finally { await db.close() }
  }

  const cases = [
    {
      name: 'a key of no known format',
      change: (db) => db.put(Buffer.from('hello'), Buffer.from('world')),
      message: /holds 1 record\(s\) that are not of the tcp-log-server 9\.x-10\.x \(level-simple-log\) log .*\n {2}key "hello" value "world"/
    },
    {
      name: 'a 6.x record in a 10.x log',
      change: (db) => db.put(Buffer.from('log!01'), Buffer.from(JSON.stringify(HASHES[0]))),
      message: /holds 1 record\(s\) that are not .*\n {2}key "log!01"/
    },
    {
      name: 'a value that is not a hash',
      change: (db) => db.put(Buffer.from('05'), Buffer.from('{"not":"a hash"}')),
      message: /key "05" value "\{\\"not\\":\\"a hash\\"\}"/
    },
    {
      name: 'a missing entry (a gap)',
      change: (db) => db.del(Buffer.from('05')),
      message: /not contiguous: after entry 4 the next key is entry 6/
    }
  ]
  for (const c of cases) {
    test(`${c.name}: stopped with the key, nothing written`, async () => {
      const store = copyStore(stores[10], 'migrate-unknown')
      await editLevelDb(store, c.change)
      const leveldb = snapshot(store.leveldb)
      const r = await runMigrate(store)
      assert.equal(r.status, 65, r.output)
      assert.match(r.err, c.message)
      assert.match(r.err, /Nothing was written/)
      assertSameTree(leveldb, snapshot(store.leveldb), 'LEVELDB')
    })
  }

  test('a Node.js server still running: refused with its pid, nothing written', async () => {
    const dir = h.makeTempDir('migrate-running')
    const node = await h.startServer({ kind: 'node', dir, port: await h.freePort(), script: h.NODE_SERVERS[10] })
    try {
      await h.writeRawEntries(node.port, ['{"a":1}'])
      const store = { blobs: node.blobs, leveldb: node.leveldb }
      const r = await runMigrate(store)
      assert.equal(r.status, 1, r.output)
      assert.match(r.err, new RegExp(`LEVELDB directory ${node.leveldb} is in use: .*LOCK is locked by pid ${node.pid} \\(POSIX\\)`))
      assert.ok(!fs.existsSync(path.join(node.leveldb, 'index')))
      assert.ok(!fs.existsSync(path.join(node.leveldb, 'migrate.tmp')))
    } finally {
      await h.stopServer(node)
    }
  })

  test('an empty log (a Node.js server that never got a write) becomes an empty index', async () => {
    const store = await nodeStore(10, [])
    const r = await runMigrate(store)
    assert.equal(r.status, 0, r.output)
    assert.match(r.out, /is empty: the log has no entries/)
    assert.equal(readIndex(store), '')
    const server = await h.startServer({ kind: 'ours', dir: store.dir })
    try {
      assert.deepEqual(await h.writeRawEntries(server.port, ['{"first":1}']), [1])
    } finally {
      await h.stopServer(server)
    }
  })

  test('LEVELDB without a LevelDB, and missing arguments, get specific errors', async () => {
    const dir = h.makeTempDir('migrate-args')
    const store = { blobs: path.join(dir, 'blobs'), leveldb: path.join(dir, 'leveldb') }
    let r = await runMigrate(store)
    assert.equal(r.status, 1)
    assert.match(r.err, new RegExp(`cannot use LEVELDB directory ${store.leveldb}: ENOENT`))
    fs.writeFileSync(store.leveldb, '')
    r = await runMigrate(store)
    assert.equal(r.status, 1)
    assert.match(r.err, new RegExp(`cannot use LEVELDB directory ${store.leveldb}: ENOTDIR`))
    fs.unlinkSync(store.leveldb)
    fs.mkdirSync(store.blobs)
    fs.mkdirSync(store.leveldb)
    r = await runMigrate(store)
    assert.equal(r.status, 65)
    assert.match(r.err, /holds no LevelDB database \(no CURRENT file\)/)
    r = await runMigrate(store, { env: { BLOBS: '' } })
    assert.equal(r.status, 64)
    assert.match(r.err, /BLOBS and LEVELDB must both name/)
  })
})
