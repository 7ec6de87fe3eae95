#!/usr/bin/env node
'use strict'
// Moves a Node.js tcp-log-server's log (4.x-6.x or 9.x-10.x) to the C++ server, in place:
// reads the LevelDB in LEVELDB that orders the entries, checks every blob in BLOBS it names, and
// writes LEVELDB/index, the C++ server's index, with one record per entry at the same index.
// The LevelDB's files are only ever read (from a copy: LevelDB writes into any directory it
// opens), and the index appears whole or not at all. doc/migrating.md.
//
//   make migrate BLOBS=dir LEVELDB=dir [ACCEPT_DAMAGED=1]
//   node migrate.js --blobs dir --leveldb dir [--accept-damaged]
//
// Exit status: 0 migrated, or already migrated; 1 could not run (a directory missing or in use,
// an I/O error); 64 bad arguments; 65 the data stops it (not a log it knows, blobs missing or
// damaged without --accept-damaged, an index that disagrees with the LevelDB).

const fs = require('node:fs')
const path = require('node:path')
const { FORMATS, recognise, show } = require('./lib/formats')
const files = require('./lib/files')
const { MigrationError, attempt } = files

const USAGE = 'usage: make migrate BLOBS=dir LEVELDB=dir [ACCEPT_DAMAGED=1]\n' +
  '   or: node migrate.js --blobs dir --leveldb dir [--accept-damaged]'
const RECORD = 65 // "<64 lowercase hex>\n", entry i at (i-1)*65
const SHOWN = 20 // problems listed one by one; the rest are counted

const say = (line) => process.stdout.write(`migrate: ${line}\n`)

// For the tests of an interrupted migration only: TCP_LOG_MIGRATE_CRASH_AT=<step> ends the
// process with SIGKILL when it reaches that step, as a power cut or kill -9 would.
function step (name) {
  if (process.env.TCP_LOG_MIGRATE_CRASH_AT === name) process.kill(process.pid, 'SIGKILL')
}

function parseArgs (argv, env) {
  const config = {
    blobs: env.BLOBS || '',
    leveldb: env.LEVELDB || env.LEVELDOWN || '',
    acceptDamaged: ['1', 'true', 'yes'].includes(String(env.ACCEPT_DAMAGED || '').toLowerCase())
  }
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s)
    const value = () => {
      if (inline !== undefined) return inline
      if (i + 1 >= argv.length) throw new MigrationError(`${flag} needs a directory\n${USAGE}`, 64)
      return argv[++i]
    }
    if (flag === '--blobs') config.blobs = value()
    else if (flag === '--leveldb') config.leveldb = value()
    else if (flag === '--accept-damaged') config.acceptDamaged = true
    else if (flag === '--help') config.help = true
    else throw new MigrationError(`unknown argument ${JSON.stringify(argv[i])}\n${USAGE}`, 64)
  }
  if (config.help) return config
  if (!config.blobs || !config.leveldb) {
    throw new MigrationError(`BLOBS and LEVELDB must both name the Node.js server's directories\n${USAGE}`, 64)
  }
  config.blobs = path.resolve(config.blobs)
  config.leveldb = path.resolve(config.leveldb)
  return config
}

function requireDirectory (dir, name) {
  const st = attempt(`use ${name} directory ${dir}`, () => fs.statSync(dir))
  if (!st.isDirectory()) throw new MigrationError(`cannot use ${name} directory ${dir}: ENOTDIR: not a directory`)
}

const exists = (p) => fs.existsSync(p)

// Refuses to go on while any process holds a lock on BLOBS/LOCK or LEVELDB/LOCK: a Node.js
// server (LevelDB's fcntl lock) or ours (flock and an OFD lock).
function requireUnused (config) {
  for (const [name, dir] of [['LEVELDB', config.leveldb], ['BLOBS', config.blobs]]) {
    const lockFile = path.join(dir, 'LOCK')
    const held = files.locksOn(lockFile)
    if (held === null) {
      say(`warning: cannot read /proc/locks, so cannot tell whether a server is running on ${dir}; make sure none is`)
      return
    }
    if (held.length > 0) {
      const pids = [...new Set(held.map((l) => l.pid).filter((p) => p > 0))]
      throw new MigrationError(`${name} directory ${dir} is in use: ${lockFile} is locked` +
        (pids.length ? ` by pid ${pids.join(', ')}` : '') + ` (${[...new Set(held.map((l) => l.type))].join(', ')}). ` +
        'Stop the server running on it (the Node.js one, or ours) and run this again; nothing was written.')
    }
  }
}

// Reads the LevelDB (a copy of it) in key order: {format, hashes} with hashes[i-1] the hash of
// entry i. Anything that is not a whole log of one known format stops the migration.
async function readLog (copy, leveldb) {
  const { ClassicLevel } = require('classic-level')
  const db = new ClassicLevel(copy, { keyEncoding: 'buffer', valueEncoding: 'buffer', createIfMissing: false })
  try {
    await db.open()
  } catch (error) {
    const cause = error.cause ? ` (${error.cause.message})` : ''
    throw new MigrationError(`cannot open the LevelDB in ${leveldb} (read from a copy in ${copy}): ${error.message}${cause}`, 65)
  }
  let format = null
  const hashes = []
  const strange = [] // records that fit no format, or not the format of the first one
  let strangeCount = 0
  let gap = null
  try {
    for await (const [key, value] of db.iterator()) {
      const r = recognise(key, value)
      if (r && format === null) format = r.format
      if (!r || r.format !== format) {
        strangeCount++
        if (strange.length < 5) strange.push(`key ${show(key)} value ${show(value)}`)
        continue
      }
      if (r.index !== hashes.length + 1 && gap === null) {
        gap = `after entry ${hashes.length} the next key is entry ${r.index}`
      }
      hashes.push(r.hash)
    }
  } finally {
    await db.close()
  }
  if (strangeCount > 0) {
    throw new MigrationError(`the LevelDB in ${leveldb} holds ${strangeCount} record(s) that are not ` +
      (format ? `of the ${FORMATS[format].servers} log its first record belongs to` : 'a tcp-log-server log') +
      `, e.g.:\n  ${strange.join('\n  ')}\n` +
      'This tool knows the logs of tcp-log-server 4.x-6.x (keys log!<n>, values "<sha-256>" as JSON) ' +
      'and 9.x-10.x (keys <n>, values <sha-256>), n in lexicographic-integer hex, and nothing else. ' +
      'Nothing was written.', 65)
  }
  if (gap !== null) {
    throw new MigrationError(`the log in ${leveldb} is not contiguous: ${gap}; our index cannot keep its ` +
      'indices. Nothing was written.', 65)
  }
  return { format, hashes }
}

// Checks every blob the log names. Returns the index records (one per entry), the problems, and
// the blobs to store again: a 4.x-6.x entry stored under its Latin-1 name gets a copy under its
// own hash, which its record then names. A missing or damaged blob keeps the log's hash.
function checkBlobs (config, format, hashes) {
  const latin1Names = format === 'level-logs'
  const seen = new Map() // hash -> {kind, hash?, detail?}
  const records = new Array(hashes.length)
  const problems = [] // {index, detail}
  const toStore = [] // {hash, bytes}
  for (let i = 0; i < hashes.length; i++) {
    const hash = hashes[i]
    let found = seen.get(hash)
    if (!found) {
      found = files.inspectBlob(config.blobs, hash, latin1Names)
      if (found.kind === 'latin1-name') toStore.push({ hash: found.hash, bytes: found.bytes })
      delete found.bytes
      seen.set(hash, found)
    }
    records[i] = found.kind === 'latin1-name' ? found.hash : hash
    if (found.kind === 'missing' || found.kind === 'unreadable' || found.kind === 'damaged') {
      problems.push({ index: i + 1, detail: `blob ${found.kind}: ${found.detail}` })
    }
  }
  return { records, problems, distinct: seen.size, toStore }
}

// Stores the blobs checkBlobs() found under 4.x-6.x names under their own hashes (whole, synced;
// a blob already there is kept), before any index names them.
function storeRenamed (config, toStore) {
  if (!toStore.length) return
  let written = 0
  for (const { hash, bytes } of toStore) if (files.storeBlob(config.blobs, hash, bytes)) written++
  say(`${toStore.length} blob(s) had the Latin-1 names of tcp-log-server 4.x-6.x; their bytes are ` +
    `stored under their own SHA-256 too (${written} written now), and the index names those`)
  step('blobs-written')
}

// The entries our index will hold: all but a run of bad ones at the very end. Our server takes
// bad records at the end of its index for an append it never finished and cuts them at startup,
// which would hand their indices out again; in the middle they stay, read back as errors.
function keptCount (count, problems) {
  const bad = new Set(problems.map((p) => p.index))
  let kept = count
  while (kept > 0 && bad.has(kept)) kept--
  return kept
}

function reportProblems (problems) {
  for (const p of problems.slice(0, SHOWN)) say(`entry ${p.index}: ${p.detail}`)
  if (problems.length > SHOWN) say(`... and ${problems.length - SHOWN} more entries with problems`)
}

// LEVELDB/index already exists: fine if its first `kept` records are the ones we would write
// (a finished migration, perhaps followed by writes to our server); anything else is a conflict.
function compareIndex (indexFile, records, kept) {
  const bytes = attempt(`read ${indexFile}`, () => fs.readFileSync(indexFile))
  const head = Math.floor(bytes.length / RECORD)
  for (let i = 0; i < Math.min(head, kept); i++) {
    const have = bytes.toString('latin1', i * RECORD, i * RECORD + 64)
    if (have !== records[i]) {
      throw new MigrationError(`${indexFile} already exists and disagrees with the LevelDB at entry ${i + 1} ` +
        `(index: ${have}, LevelDB: ${records[i]}). Left as it is; nothing was written.`, 65)
    }
  }
  if (head < kept) {
    throw new MigrationError(`${indexFile} already exists and holds ${head} entries, the LevelDB ${kept}: ` +
      'did the Node.js server write more after a migration? Left as it is; nothing was written.', 65)
  }
  return head
}

async function migrate (config) {
  requireDirectory(config.leveldb, 'LEVELDB')
  // The Node.js server makes BLOBS at its first write: an empty log has none.
  if (exists(config.blobs)) requireDirectory(config.blobs, 'BLOBS')
  else say(`warning: BLOBS directory ${config.blobs} does not exist: every entry's blob will be missing`)
  const indexFile = path.join(config.leveldb, 'index')
  if (!exists(path.join(config.leveldb, 'CURRENT'))) {
    if (exists(indexFile)) {
      say(`${config.leveldb} holds our index and no LevelDB: nothing to migrate`)
      return 0
    }
    throw new MigrationError(`${config.leveldb} holds no LevelDB database (no CURRENT file), so there is ` +
      'nothing to migrate: is it the Node.js server\'s LEVELDB (or LEVELDOWN) directory?', 65)
  }
  requireUnused(config)
  const scratch = path.join(config.leveldb, 'migrate.tmp')
  if (exists(scratch)) {
    attempt(`remove ${scratch}`, () => fs.rmSync(scratch, { recursive: true, force: true }))
    say(`removed ${scratch}, left by an interrupted migration`)
  }
  attempt(`create directory ${scratch}`, () => fs.mkdirSync(scratch))
  try {
    return await migrateWith(config, indexFile, scratch)
  } finally {
    // Success or failure, the scratch directory goes (an interrupted run leaves it for the next).
    attempt(`remove ${scratch}`, () => fs.rmSync(scratch, { recursive: true, force: true }))
    files.fsyncPath(config.leveldb, 'directory')
  }
}

async function migrateWith (config, indexFile, scratch) {
  // 1. A copy of the LevelDB to open, in the scratch directory.
  const before = files.fingerprint(config.leveldb)
  const copy = path.join(scratch, 'leveldb')
  const skipped = files.copyLevelDb(config.leveldb, copy)
  if (skipped.length) say(`left out of the copy, not regular files: ${skipped.join(', ')}`)
  step('copied')

  // 2. The log, in order; the original must not have changed meanwhile.
  const { format, hashes } = await readLog(copy, config.leveldb)
  const after = files.fingerprint(config.leveldb)
  if (before.join('\n') !== after.join('\n')) {
    const changed = after.filter((line) => !before.includes(line))[0] || before.filter((l) => !after.includes(l))[0]
    throw new MigrationError(`the LevelDB in ${config.leveldb} changed while it was read (${changed}): is a ` +
      'Node.js server running on it? Stop it and run this again; nothing was written.')
  }
  say(format
    ? `read ${hashes.length} entries of a ${FORMATS[format].servers} log from ${config.leveldb}`
    : `the LevelDB in ${config.leveldb} is empty: the log has no entries`)
  step('read')

  // 3. Every blob.
  const { records, problems, distinct, toStore } = checkBlobs(config, format, hashes)
  say(`checked ${distinct} distinct blob(s) in ${config.blobs}: ` +
    (problems.length ? `${problems.length} entries with a missing or damaged blob` : 'each one is whole and matches its name'))
  reportProblems(problems)
  const kept = keptCount(hashes.length, problems)
  const existing = exists(indexFile)
  if (!existing && problems.length && !config.acceptDamaged) {
    throw new MigrationError(`${problems.length} entries have a missing or damaged blob (listed above). ` +
      'Nothing was written. Put the blobs back (from a backup) and run this again, or run it with ' +
      'ACCEPT_DAMAGED=1 to migrate anyway: then those entries read back as errors at their indices, and ' +
      'such entries at the very end of the log are left out (our server would cut them at startup).', 65)
  }
  storeRenamed(config, toStore)
  if (existing) return finishExisting(indexFile, records, kept)

  // 4. The index: written to a temp file and synced, then linked into place (a link, unlike a
  // rename, never replaces an index that appeared meanwhile), then the directory synced.
  const temp = path.join(scratch, 'index')
  files.writeSynced(temp, records.slice(0, kept).map((r) => r + '\n').join(''))
  step('temp-index')
  try {
    fs.linkSync(temp, indexFile)
  } catch (error) {
    if (error.code === 'EEXIST') return finishExisting(indexFile, records, kept)
    throw new MigrationError(`cannot link ${temp} to ${indexFile}: ${files.describe(error)}`)
  }
  files.fsyncPath(config.leveldb, 'directory')
  step('linked')
  if (kept < hashes.length) {
    say(`left out entries ${kept + 1}..${hashes.length} at the end of the log: their blobs are missing or damaged`)
  }
  if (problems.length) say(`migrated ${problems.length} entries with a missing or damaged blob, as ACCEPT_DAMAGED asked`)
  say(`wrote ${indexFile}: ${kept} entries, each at the index the Node.js server gave it`)
  say(`done. The LevelDB's files are left as they were. Start tcp-log-server with BLOBS=${config.blobs} LEVELDB=${config.leveldb}`)
  return 0
}

function finishExisting (indexFile, records, kept) {
  const head = compareIndex(indexFile, records, kept)
  say(`already migrated: ${indexFile} holds the ${kept} entries of the LevelDB` +
    (head > kept ? `, and ${head - kept} written to our server since` : '') + '; nothing to do')
  return 0
}

async function main () {
  try {
    const config = parseArgs(process.argv.slice(2), process.env)
    if (config.help) return process.stdout.write(USAGE + '\n')
    say(`BLOBS=${config.blobs} LEVELDB=${config.leveldb}`)
    process.exitCode = await migrate(config)
  } catch (error) {
    if (!(error instanceof MigrationError)) throw error
    process.stderr.write(`migrate: ${error.message}\n`)
    process.exitCode = error.status
  }
}

main()
