'use strict'
// Differential test of our JSON parser and canonical emitter (json.hpp, through the small
// test/json_canonical tool) against what the Node.js server used: JSON.parse, then
// json-stable-stringify. On a generated and a fuzzed corpus of valid UTF-8 inputs nested no
// deeper than our limit (512):
//   - both accept or both reject;
//   - where both accept and every number in the input is one that JavaScript prints back
//     unchanged, our canonical bytes equal json-stable-stringify(JSON.parse(x)) as UTF-8.
// The corpus: generated values written with random whitespace, key order, escapes and
// duplicates; byte mutations of those (mostly invalid JSON); values nested near the limit; the
// checked-in fuzz corpus (fuzz/corpus/json); and, when FUZZ_CORPUS names a directory (the one
// make fuzz leaves, or any), the inputs in it.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const stableStringify = require('json-stable-stringify')
const { prng } = require('./lib/entries')

const REPO = path.resolve(__dirname, '../..')
const TOOL = process.env.JSON_CANONICAL ? path.resolve(process.env.JSON_CANONICAL) : path.join(REPO, 'test/json_canonical')
const MAX_DEPTH = 512
const GENERATED = 12000
const MUTATED = 12000

// A seeded PRNG (lib/entries.js), so that every run compares the same inputs.
const rand = prng(12)
const int = (n) => Math.floor(rand() * n)
const pick = (list) => list[int(list.length)]
const chance = (p) => rand() < p

const CHARS = ['a', 'b', 'Z', '0', ' ', '"', '\\', '/', '\b', '\f', '\n', '\r', '\t', '\u0000', '\u001f', '\u007f',
  '\u00e9', '\u2028', '\u20ac', '\ue000', '\uffff', '\ufeff', '\u{1f600}', '\u{10ffff}', '\ud800', '\udfff']
const KEYS = ['a', 'b', 'B', 'id', 'entry', 'from', 'read', '\u00e9', '\ue000', '\u{1f600}', '\uffff', '10', '9', '', '__proto__']
const NUMBERS = ['0', '-0', '1', '-1', '7', '42', '0.5', '-0.25', '3.14', '1e+21', '1e21', '1E2', '1.0', '1e-7', '0.000001',
  '12345678901234567890', '9007199254740993', '2.5e-3', '1e400', '-1e-400', '100', '0.30000000000000004', '5e-324']
const SPACE = ['', '', '', ' ', '\t', '\n', '\r\n', '  ']

function randomText (max) {
  let s = ''
  for (let n = int(max + 1); n > 0; n--) s += chance(0.5) ? pick(CHARS) : String.fromCharCode(97 + int(26))
  return s
}

function randomValue (depth) {
  const k = int(depth > 4 ? 5 : 8)
  if (k === 0) return null
  if (k === 1) return chance(0.5)
  if (k === 2) return { number: pick(NUMBERS) } // kept as text: written exactly so
  if (k <= 4) return randomText(6)
  if (k === 5) return Array.from({ length: int(4) }, () => randomValue(depth + 1))
  const members = []
  for (let n = int(4); n > 0; n--) members.push([chance(0.6) ? pick(KEYS) : randomText(3), randomValue(depth + 1)])
  if (members.length && chance(0.2)) members.push([members[0][0], randomValue(depth + 1)]) // a duplicate key
  return { members }
}

function hex4 (unit) {
  const h = unit.toString(16).padStart(4, '0')
  return '\\u' + (chance(0.5) ? h : h.toUpperCase())
}

// A JSON string literal, escaped at random wherever JSON allows a choice.
function writeString (s) {
  let out = '"'
  for (const ch of s) { // by code point; a lone surrogate is a code point of its own here
    const cp = ch.codePointAt(0)
    if (cp >= 0xd800 && cp <= 0xdfff) out += hex4(cp)
    else if (ch === '"' || ch === '\\') out += '\\' + ch
    else if (cp < 0x20) out += ({ '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' }[ch] && chance(0.5)) ? { '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' }[ch] : hex4(cp)
    else if (ch === '/' && chance(0.3)) out += '\\/'
    else if (chance(0.1)) out += cp > 0xffff ? hex4(0xd800 + ((cp - 0x10000) >> 10)) + hex4(0xdc00 + ((cp - 0x10000) & 0x3ff)) : hex4(cp)
    else out += ch
  }
  return out + '"'
}

function write (v) {
  const ws = () => pick(SPACE)
  if (v === null) return 'null'
  if (v === true || v === false) return String(v)
  if (typeof v === 'string') return writeString(v)
  if (Array.isArray(v)) return '[' + ws() + v.map((x) => write(x) + ws()).join(',' + ws()) + ']'
  if (v.number !== undefined) return v.number
  return '{' + ws() + v.members.map(([k, x]) => writeString(k) + ws() + ':' + ws() + write(x) + ws()).join(',' + ws()) + '}'
}

function nested (depth) {
  let open = ''
  let close = ''
  for (let i = 0; i < depth; i++) {
    if (chance(0.5)) { open += '['; close = ']' + close } else { open += '{"k":'; close = '}' + close }
  }
  return open + write(randomValue(5)) + close
}

const MUTATION_BYTES = Buffer.from('{}[],:"\\u0dD8e1-+.E \t\n\rtruefalsn\u00e9')

function mutate (buf) {
  const out = Array.from(buf)
  for (let n = 1 + int(3); n > 0 && out.length; n--) {
    const at = int(out.length)
    const b = chance(0.8) ? pick(MUTATION_BYTES) : int(256)
    const how = int(4)
    if (how === 0) out[at] = b
    else if (how === 1) out.splice(at, 1)
    else if (how === 2) out.splice(at, 0, b)
    else out.splice(at, 0, 0x5c, 0x20 + int(95)) // a backslash and any printable: escapes valid or not
  }
  return Buffer.from(out)
}

// Valid UTF-8 only (JSON.parse takes a JavaScript string; other bytes would be replaced first).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
function asText (buf) {
  try { return utf8.decode(buf) } catch (_) { return null }
}

// The deepest nesting of brackets outside strings (for any text, valid or not).
function depthOf (text) {
  let depth = 0
  let max = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (inString) {
      if (c === '\\') i++
      else if (c === '"') inString = false
    } else if (c === '"') inString = true
    else if (c === '[' || c === '{') max = Math.max(max, ++depth)
    else if (c === ']' || c === '}') depth--
  }
  return max
}

// The number literals of a valid JSON text.
function numbersOf (text) {
  const numbers = []
  const re = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === '"') {
      for (i++; text[i] !== '"'; i++) if (text[i] === '\\') i++
    } else if (c === '-' || (c >= '0' && c <= '9')) {
      re.lastIndex = i
      const m = re.exec(text)
      numbers.push(m[0])
      i += m[0].length - 1
    }
  }
  return numbers
}

function corpus () {
  const inputs = []
  for (let i = 0; i < GENERATED; i++) inputs.push(Buffer.from(write(randomValue(0)), 'utf8'))
  for (let i = 0; i < 40; i++) inputs.push(Buffer.from(nested(MAX_DEPTH - 3 + int(4)), 'utf8'))
  for (let i = 0; i < MUTATED; i++) inputs.push(mutate(inputs[int(GENERATED)]))
  const dirs = [path.join(REPO, 'fuzz/corpus/json')]
  if (process.env.FUZZ_CORPUS) dirs.push(path.resolve(process.env.FUZZ_CORPUS))
  for (const dir of dirs) {
    for (const name of fs.readdirSync(dir)) {
      const file = path.join(dir, name)
      if (fs.statSync(file).isFile()) inputs.push(fs.readFileSync(file))
    }
  }
  return inputs
}

test('json.hpp agrees with JSON.parse and json-stable-stringify on valid UTF-8 nested no deeper than 512', () => {
  const inputs = []
  let skipped = 0
  for (const buf of corpus()) {
    const text = asText(buf)
    if (text === null || depthOf(text) > MAX_DEPTH) skipped++
    else inputs.push({ buf, text })
  }
  const answers = execFileSync(TOOL, {
    input: inputs.map(({ buf }) => buf.toString('hex')).join('\n') + '\n',
    maxBuffer: 1 << 30
  }).toString().split('\n')
  assert.equal(answers.length, inputs.length + 1, 'one answer per input')

  const differences = []
  let accepted = 0
  let rejected = 0
  let canonicalCompared = 0
  inputs.forEach(({ buf, text }, i) => {
    const ours = answers[i]
    let parsed
    let theirs = true
    try { parsed = JSON.parse(text) } catch (_) { theirs = false }
    if ((ours !== '0') !== theirs) {
      differences.push(`${theirs ? 'JSON.parse accepts, we reject' : 'we accept, JSON.parse rejects'}: ${JSON.stringify(text).slice(0, 300)}`)
      return
    }
    if (!theirs) {
      rejected++
      return
    }
    accepted++
    if (!numbersOf(text).every((n) => String(Number(n)) === n)) return
    canonicalCompared++
    const expected = Buffer.from(stableStringify(parsed), 'utf8')
    const got = Buffer.from(ours.slice(2), 'hex')
    if (!got.equals(expected)) {
      differences.push(`canonical form differs for ${JSON.stringify(text).slice(0, 200)}: ours ${JSON.stringify(got.toString('utf8')).slice(0, 200)}, json-stable-stringify ${JSON.stringify(expected.toString('utf8')).slice(0, 200)}`)
    }
  })
  console.log(`differential: ${inputs.length} inputs compared (${accepted} accepted by both, ${rejected} rejected by both; ` +
    `canonical bytes compared for ${canonicalCompared}); ${skipped} not valid UTF-8 or nested deeper than ${MAX_DEPTH}, left out`)
  assert.deepEqual(differences.slice(0, 20), [], `${differences.length} differences`)
  assert.ok(accepted > 5000 && rejected > 3000 && canonicalCompared > 3000, 'the corpus exercises both outcomes and the emitter')
})
