'use strict'
// Entries for the forwarder's tests, as raw JSON texts: the varied texts of the interop tests
// (unicode including astral characters and lone surrogates as escapes, nested objects and
// arrays, unordered keys, escapes, numbers that JavaScript would rewrite), each wrapped with a
// serial so that every entry is distinct, and every `bigEvery`-th one a 64 KiB entry.

const { identicalEntries, prng, NUMBER_DIFFERENCES } = require('../../../test/interop/lib/entries')

const PIECES = ['a', 'Z', '0', ' ', 'é', '中', '😀', '\\n', '\\u0000', '\\"', '\\\\', '\u2028', 'ü€']

// A string literal (JSON text) of exactly 65,536 characters before escaping, from `rand`.
function bigString (rand) {
  let s = ''
  let chars = 0
  while (chars < 65536) {
    const piece = PIECES[Math.floor(rand() * PIECES.length)]
    s += piece
    chars += piece.startsWith('\\') ? 1 : [...piece].length
  }
  return `"${s}"`
}

// Returns a function giving the next entry text, the same sequence for the same seed.
function entryTexts (seed, { bigEvery = 100 } = {}) {
  const rand = prng(seed)
  const texts = [...identicalEntries(400), ...NUMBER_DIFFERENCES.map((d) => d.raw)]
  let serial = 0
  return () => {
    serial++
    if (serial % bigEvery === 0) return `{"serial":${serial},"big":${bigString(rand)}}`
    const text = texts[Math.floor(rand() * texts.length)]
    return rand() < 0.5 ? `{"serial":${serial},"v":${text}}` : `[${serial},${text}]`
  }
}

module.exports = { entryTexts }
