'use strict'
// File-system steps of the migration: durable writes, who holds a LOCK file, what a LevelDB
// directory looks like, and a copy of it to open (LevelDB writes into any directory it opens).

const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')
const { isUtf8 } = require('node:buffer')

// An error for the operator: which file, which errno, what it means. `status` is the exit status.
class MigrationError extends Error {
  constructor (message, status = 1) {
    super(message)
    this.status = status
  }
}

function describe (error) {
  return error.code ? `${error.code}: ${error.message.replace(/^[A-Z]+: /, '')}` : error.message
}

// Runs fs call `fn`; a failure becomes a MigrationError that says what was being done.
function attempt (what, fn) {
  try {
    return fn()
  } catch (error) {
    throw new MigrationError(`cannot ${what}: ${describe(error)}`)
  }
}

function fsyncPath (p, what) {
  attempt(`sync ${what} ${p}`, () => {
    const fd = fs.openSync(p, 'r')
    try { fs.fsyncSync(fd) } finally { fs.closeSync(fd) }
  })
}

// Writes `data` to `file` (created or truncated) and fsyncs it.
function writeSynced (file, data) {
  attempt(`write ${file}`, () => {
    const fd = fs.openSync(file, 'w', 0o644)
    try {
      fs.writeSync(fd, data)
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
  })
}

const sha256 = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex')

// ---------------------------------------------------------------------------------------------
// Who holds a lock on a file. Node.js can neither flock() nor fcntl(), so this reads the
// kernel's table (Linux: /proc/locks, "ID: TYPE ADVISORY MODE PID MAJ:MIN:INODE START END"),
// where both our server's locks (FLOCK, OFDLCK) and LevelDB's (POSIX) show up.

// The locks on `file` as [{type, pid}]; [] when there are none or the file does not exist;
// null when the table cannot be read (not Linux).
function locksOn (file, procLocks = '/proc/locks') {
  let st
  try {
    st = fs.statSync(file, { bigint: true })
  } catch (error) {
    if (error.code === 'ENOENT') return []
    throw new MigrationError(`cannot stat ${file}: ${describe(error)}`)
  }
  let table
  try {
    table = fs.readFileSync(procLocks, 'latin1')
  } catch (_) {
    return null
  }
  // Linux's dev_t: 12 bits of major and 20 of minor, split across the word.
  const major = Number(((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn))
  const minor = Number((st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn))
  const held = []
  for (const line of table.split('\n')) {
    const m = /^\d+:\s+(?:->\s+)?(\S+)\s+\S+\s+\S+\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line)
    if (!m) continue
    if (parseInt(m[3], 16) === major && parseInt(m[4], 16) === minor && BigInt(m[5]) === st.ino) {
      held.push({ type: m[1], pid: Number(m[2]) })
    }
  }
  return held
}

// ---------------------------------------------------------------------------------------------
// The LevelDB directory

// Names in LEVELDB that are not the LevelDB's: ours, and LOCK, which both use (see the README).
const NOT_LEVELDB = new Set(['LOCK', 'index', 'migrate.tmp'])

// Each LevelDB file's name, kind, size, time and inode, to tell whether anything changed.
function fingerprint (dir) {
  const names = attempt(`list ${dir}`, () => fs.readdirSync(dir)).filter((n) => !NOT_LEVELDB.has(n)).sort()
  return names.map((name) => {
    const st = attempt(`stat ${path.join(dir, name)}`, () => fs.lstatSync(path.join(dir, name), { bigint: true }))
    return `${name} mode ${st.mode} size ${st.size} mtime ${st.mtimeNs} inode ${st.ino}`
  })
}

// Copies the LevelDB's regular files from `dir` into `copy` (created), fsyncing nothing: the copy
// is scratch. Returns the names of entries left out because they are not regular files.
function copyLevelDb (dir, copy) {
  attempt(`create directory ${copy}`, () => fs.mkdirSync(copy))
  const skipped = []
  for (const name of attempt(`list ${dir}`, () => fs.readdirSync(dir)).sort()) {
    if (NOT_LEVELDB.has(name)) continue
    const from = path.join(dir, name)
    const st = attempt(`stat ${from}`, () => fs.statSync(from))
    if (!st.isFile()) {
      skipped.push(name)
      continue
    }
    attempt(`copy ${from} to ${copy}`, () => fs.copyFileSync(from, path.join(copy, name)))
  }
  return skipped
}

// ---------------------------------------------------------------------------------------------
// Blobs: BLOBS/<first 2 hex digits>/<other 62>, as fs-blob-store lays them out for the Node.js
// server and as ours does.

const blobPath = (blobs, hash) => path.join(blobs, hash.slice(0, 2), hash.slice(2))

// What is stored under `hash`:
//   {kind: 'ok'}                        its bytes hash to its name
//   {kind: 'latin1-name', hash: real}   a 4.x-6.x name: those servers hashed the entry's text as
//                                       Latin-1 (the sha256@0.2 package, a "binary" Buffer) but
//                                       wrote it as UTF-8, so an entry with a character past
//                                       U+007F is stored under a name its bytes do not hash to
//   {kind: 'missing' | 'unreadable' | 'damaged', detail}
function inspectBlob (blobs, hash, latin1Names) {
  const file = blobPath(blobs, hash)
  let bytes
  try {
    bytes = fs.readFileSync(file)
  } catch (error) {
    const kind = error.code === 'ENOENT' || error.code === 'ENOTDIR' ? 'missing' : 'unreadable'
    return { kind, detail: `${file}: ${describe(error)}` }
  }
  const real = sha256(bytes)
  if (real === hash) return { kind: 'ok' }
  if (latin1Names && isUtf8(bytes) && sha256(Buffer.from(bytes.toString('utf8'), 'latin1')) === hash) {
    return { kind: 'latin1-name', hash: real, bytes }
  }
  return { kind: 'damaged', detail: `${file}: its ${bytes.length} bytes hash to ${real}, not to its name` }
}

// Stores `bytes` under their own hash as our server would: BLOBS/tmp/<name>, fsync, rename into
// place, fsync of the directories that gained a name. Nothing is written when a whole copy is
// already there.
function storeBlob (blobs, hash, bytes) {
  const file = blobPath(blobs, hash)
  try {
    if (sha256(fs.readFileSync(file)) === hash) return false
  } catch (_) {}
  const tmpDir = path.join(blobs, 'tmp')
  const subdir = path.dirname(file)
  for (const dir of [tmpDir, subdir]) {
    attempt(`create directory ${dir}`, () => {
      try {
        fs.mkdirSync(dir, 0o755)
        fsyncPath(blobs, 'directory')
      } catch (error) {
        if (error.code !== 'EEXIST') throw error
      }
    })
  }
  const tmp = path.join(tmpDir, `migrate-${hash}`)
  writeSynced(tmp, bytes)
  attempt(`rename ${tmp} to ${file}`, () => fs.renameSync(tmp, file))
  fsyncPath(subdir, 'directory')
  return true
}

module.exports = {
  MigrationError,
  attempt,
  blobPath,
  copyLevelDb,
  describe,
  fingerprint,
  fsyncPath,
  inspectBlob,
  locksOn,
  sha256,
  storeBlob,
  writeSynced
}
