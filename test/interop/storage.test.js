'use strict'
// Byte-identical storage: the same entries written to tcp-log-server@10.0.0
// (the Node.js server, from the npm registry) and to ours must leave the same
// blob files, name for name and byte for byte. Files are compared, not
// reads: 10.0.0 reads back from disk without `index` and cannot restart on
// its own data. Numbers that Node rounds or normalizes differ on purpose:
// ours keeps the number text as written; that difference is shown here
// entry by entry.

const { describe, test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const h = require('./lib/harness')
const { identicalEntries, NUMBER_DIFFERENCES } = require('./lib/entries')

const ENTRIES = identicalEntries(240)

// Run one server over the entries, then the number cases on a second
// connection; return the blob files after each step. Both servers are given
// the same wait for their files: the names each should have (ours makes its
// blob files just after confirming, Node's before); a name that never comes
// is reported by the tests below.
async function storeAll (kind) {
  const dir = h.makeTempDir(`storage-${kind}`)
  const port = kind === 'node' ? await h.freePort() : 0
  const server = await h.startServer({ kind, dir, port })
  try {
    const indices = await h.writeRawEntries(server.port, ENTRIES, { idPrefix: `${kind}-e` })
    const entryNames = ENTRIES.map((raw) => h.blobName(h.canonical(JSON.parse(raw))))
    const afterEntries = await h.readBlobDirWhenComplete(server.blobs, entryNames)
    const numberIndices = await h.writeRawEntries(server.port, NUMBER_DIFFERENCES.map((d) => d.raw), { idPrefix: `${kind}-n` })
    const numberNames = NUMBER_DIFFERENCES.map((d) => h.blobName(kind === 'node' ? h.canonical(JSON.parse(d.raw)) : d.ours))
    const afterNumbers = await h.readBlobDirWhenComplete(server.blobs, [...entryNames, ...numberNames])
    return { dir, indices, numberIndices, afterEntries, afterNumbers }
  } finally {
    await h.stopServer(server)
  }
}

const newFiles = (before, after) => new Map([...after].filter(([name]) => !before.has(name)))

describe('storage: byte-identical blobs with tcp-log-server@10.0.0', () => {
  let node, ours, oursError

  before(async () => {
    node = await storeAll('node')
    try { ours = await storeAll('ours') } catch (error) { oursError = error }
  }, { timeout: 120000 })

  after(() => {
    for (const run of [node, ours]) if (run) h.removeTempDir(run.dir)
  })

  test(`the entry list has at least 200 entries and is valid JSON (${ENTRIES.length})`, () => {
    assert.ok(ENTRIES.length >= 200)
    for (const raw of ENTRIES) JSON.parse(raw)
  })

  test('the Node.js server confirms indices 1..N over one connection', () => {
    assert.deepEqual(node.indices, ENTRIES.map((_, i) => i + 1))
  })

  test('the Node.js server stores the canonical JSON (sorted keys, JSON.stringify) named by its SHA-256', () => {
    // A check of this harness's model of the Node.js server.
    const expected = new Map()
    for (const raw of ENTRIES) {
      const text = h.canonical(JSON.parse(raw))
      expected.set(h.blobName(text), text)
    }
    assert.deepEqual([...node.afterEntries.keys()].sort(), [...expected.keys()].sort())
    for (const [name, bytes] of node.afterEntries) assert.equal(bytes.toString('utf8'), expected.get(name), name)
  })

  test('ours confirms indices 1..N over one connection', () => {
    if (oursError) throw oursError
    assert.deepEqual(ours.indices, ENTRIES.map((_, i) => i + 1))
  })

  test('ours leaves the same set of blob file names as the Node.js server', () => {
    if (oursError) throw oursError
    const nodeNames = [...node.afterEntries.keys()].sort()
    const ourNames = [...ours.afterEntries.keys()].sort()
    const missing = nodeNames.filter((n) => !ours.afterEntries.has(n))
    const extra = ourNames.filter((n) => !node.afterEntries.has(n))
    const explain = (names, files) => names.slice(0, 5).map((n) => `${n}: ${JSON.stringify(files.get(n).toString('utf8').slice(0, 200))}`).join('\n')
    assert.deepEqual({ missing: missing.length, extra: extra.length }, { missing: 0, extra: 0 },
      `missing from ours:\n${explain(missing, node.afterEntries)}\nextra in ours:\n${explain(extra, ours.afterEntries)}`)
    assert.equal(ourNames.length, nodeNames.length)
  })

  test('ours writes each blob file byte for byte as the Node.js server does', () => {
    if (oursError) throw oursError
    let compared = 0
    for (const [name, nodeBytes] of node.afterEntries) {
      const ourBytes = ours.afterEntries.get(name)
      if (!ourBytes) continue // reported by the test above
      assert.ok(nodeBytes.equals(ourBytes), `${name}: node ${JSON.stringify(nodeBytes.toString())} ours ${JSON.stringify(ourBytes.toString())}`)
      compared++
    }
    assert.equal(compared, node.afterEntries.size)
  })

  describe('deliberate difference: numbers are kept as written, Node rounds them', () => {
    for (const [i, d] of NUMBER_DIFFERENCES.entries()) {
      const nodeText = h.canonical(JSON.parse(d.raw)) // what Node prints
      test(`${d.raw}: Node stores ${nodeText}, ours stores ${d.ours}`, () => {
        assert.notEqual(nodeText, d.ours)
        // Node's blob: its rounded text, under the hash of that text.
        assert.equal(node.numberIndices[i], ENTRIES.length + i + 1)
        assert.ok(node.afterNumbers.has(h.blobName(nodeText)), `Node has no blob for ${nodeText}`)
        assert.equal(node.afterNumbers.get(h.blobName(nodeText)).toString('utf8'), nodeText)
        if (oursError) throw oursError
        const ourNew = newFiles(ours.afterEntries, ours.afterNumbers)
        assert.equal(ours.numberIndices[i], ENTRIES.length + i + 1)
        // Ours: the number text as written, under the hash of that text...
        assert.ok(ourNew.has(h.blobName(d.ours)), `ours has no blob for ${d.ours}; new blobs: ${JSON.stringify([...ourNew.values()].map(String))}`)
        assert.equal(ourNew.get(h.blobName(d.ours)).toString('utf8'), d.ours)
        // ...and not Node's rounded text.
        assert.ok(!ourNew.has(h.blobName(nodeText)) || NUMBER_DIFFERENCES.some((o) => o.ours === nodeText),
          `ours also stored Node's rounded ${nodeText}`)
      })
    }

    test('all number cases together: ours and Node add disjoint sets of blobs', () => {
      if (oursError) throw oursError
      const nodeNew = newFiles(node.afterEntries, node.afterNumbers)
      const ourNew = newFiles(ours.afterEntries, ours.afterNumbers)
      assert.deepEqual([...ourNew.keys()].sort(), [...new Set(NUMBER_DIFFERENCES.map((d) => h.blobName(d.ours)))].sort())
      for (const name of ourNew.keys()) assert.ok(!nodeNew.has(name), `${name} stored by both`)
      // e.g. the big integer: ours keeps every digit, Node prints the double.
      const big = [...ourNew.values()].map(String).find((t) => t.includes('12345678901234567890'))
      assert.equal(big, '{"n":12345678901234567890}')
      const nodeBig = [...nodeNew.values()].map(String).find((t) => t.includes('1234567890123456'))
      assert.equal(nodeBig, `{"n":${JSON.stringify(JSON.parse('12345678901234567890'))}}`)
      assert.equal(nodeBig, '{"n":12345678901234567000}')
    })
  })
})
