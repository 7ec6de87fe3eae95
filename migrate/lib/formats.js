'use strict'
// What the Node.js tcp-log-server keeps in its LevelDB, by version line, as read from the
// published code (README, "Moving from the Node.js server"):
//
//   4.x-6.x   level-logs@1 over levelup@1, `require('level-logs')(level, {valueEncoding: 'json'})`,
//             one log named "log", no prefix, separator "!":
//               key   "log!" + lexicographic-integer(index) in hex     e.g. log!01, log!fb05
//               value JSON.stringify(hash), quotes included             e.g. "9f86d0...0a08"
//   9.x-10.x  level-simple-log@2 (over levelup@1) or @3 (over levelup@4), no prefix:
//               key   lexicographic-integer(index) in hex               e.g. 01, fa, fb00, fc0100
//               value the hash as it is                                 e.g. 9f86d0...0a08
//
// Indices start at 1 and each append writes head + 1, so a log's keys are 1..N without a gap.
// lexicographic-integer@1 writes n < 251 as one byte; below 251 + 2^8, 2^16, 2^24, 2^32 as the
// byte 251, 252, 253 or 254 followed by n - 251 in 1 to 4 big-endian bytes; larger numbers as
// 255 and a lossy floating form, which no log reaches and this tool does not accept.

const HASH = /^[0-9a-f]{64}$/

const FORMATS = {
  'level-logs': {
    servers: 'tcp-log-server 4.x-6.x (level-logs)',
    keyPrefix: 'log!',
    hashOf: (value) => {
      if (value.length !== 66 || value[0] !== '"' || value[65] !== '"') return null
      const hash = value.slice(1, 65)
      return HASH.test(hash) ? hash : null
    }
  },
  'level-simple-log': {
    servers: 'tcp-log-server 9.x-10.x (level-simple-log)',
    keyPrefix: '',
    hashOf: (value) => (HASH.test(value) ? value : null)
  }
}

// The index a key's lexicographic-integer hex text stands for, or null unless `hex` is exactly
// how lexicographic-integer writes that index (so two keys can never name the same index).
function decodeIndex (hex) {
  if (!/^(?:[0-9a-f]{2})+$/.test(hex)) return null
  const bytes = Buffer.from(hex, 'hex')
  const lead = bytes[0]
  let n
  if (lead < 251) {
    if (bytes.length !== 1) return null
    n = lead
  } else if (lead <= 254) {
    const width = lead - 250 // 1 to 4 bytes follow
    if (bytes.length !== 1 + width) return null
    n = 251 + bytes.readUIntBE(1, width)
    // Written in the shortest form only: a smaller n has a shorter key.
    if (width > 1 && n < 251 + 2 ** (8 * (width - 1))) return null
  } else {
    return null
  }
  return n
}

// A (key, value) pair of the LevelDB, both as raw bytes: {format, index, hash}, or null when it
// is not a record of either format.
function recognise (key, value) {
  if (!isAscii(key) || !isAscii(value)) return null
  const k = key.toString('latin1')
  const v = value.toString('latin1')
  for (const [format, f] of Object.entries(FORMATS)) {
    if (!k.startsWith(f.keyPrefix)) continue
    const index = decodeIndex(k.slice(f.keyPrefix.length))
    const hash = f.hashOf(v)
    if (index !== null && index >= 1 && hash !== null) return { format, index, hash }
  }
  return null
}

function isAscii (buffer) {
  for (const byte of buffer) if (byte > 0x7e || byte < 0x20) return false
  return true
}

// A key or value for a message: printable text as JSON, anything else as hex.
function show (buffer, max = 80) {
  const cut = buffer.length > max ? buffer.subarray(0, max) : buffer
  const more = buffer.length > max ? `... (${buffer.length} bytes)` : ''
  return (isAscii(cut) ? JSON.stringify(cut.toString('latin1')) : `hex ${cut.toString('hex')}`) + more
}

module.exports = { FORMATS, decodeIndex, recognise, show }
