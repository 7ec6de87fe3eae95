'use strict'
// Entries for the storage comparison, as raw JSON texts (what goes on the
// wire), generated from a fixed seed so every run sends the same bytes.
//
// `identicalEntries()`: texts that tcp-log-server@10.0.0 and ours must store
// byte for byte the same. The raw text varies what a canonical form must
// undo (key order, whitespace, \u escapes in either case, `\/`, surrogate
// pairs written as escapes, duplicate keys) while every number is written
// exactly as JavaScript prints it, so Node has nothing to round.
//
// `numberDifferences()`: entries whose numbers Node rounds or normalizes; ours
// keeps the number text as written. Each comes with the canonical text we
// expect from ours.

// mulberry32: a small seeded PRNG.
function prng (seed) {
  let a = seed >>> 0
  return function () {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// Characters to build strings from, by kind. Lone surrogates are only ever
// written as \u escapes (they cannot be sent as UTF-8).
const ASCII = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:;!?@#$%^&*()[]{}<>=+~`|\'/'
const SPECIAL = ['"', '\\', '/', '\b', '\f', '\n', '\r', '\t', '\u0000', '\u0001', '\u0007', '\u000b', '\u000e', '\u001b', '\u001f', '\u007f']
const BMP = ['é', 'ß', 'ñ', 'Ω', 'ж', 'ק', 'ع', 'क', '中', '文', '日', '한', '\u00a0', '\u00ad', '\u0300', '\u200b', '\u200d', '\u2028', '\u2029', '\u20ac', '\ufeff', '\ud7ff']
const HIGH_BMP = ['\ue000', '\ue0ff', '\uf000', '\uf8ff', '\uf900', '\ufb01', '\ufdd0', '\ufe0f', '\uff21', '\uff5e', '\ufff0', '\ufffc', '\ufffd', '\ufffe', '\uffff']
const ASTRAL = ['\u{10000}', '\u{1d11e}', '\u{1f600}', '\u{1f4a9}', '\u{1f468}\u200d\u{1f469}', '\u{20000}', '\u{2a6d6}', '\u{e0001}', '\u{f0000}', '\u{10fffd}', '\u{10ffff}']
const LONE = ['\ud800', '\udbff', '\udc00', '\udfff', '\ud83d']

// Numbers written as JavaScript prints them: JSON.stringify(JSON.parse(t)) === t.
const NUMBER_TEXTS = [
  '0', '1', '-1', '7', '42', '-42', '100', '255', '256', '1000', '65535', '65536', '2147483647', '-2147483648',
  '4294967296', '9007199254740991', '-9007199254740991', '1e+21', '1.5e+300', '-1e-7', '5e-324', '1.7976931348623157e+308',
  '0.1', '0.5', '-0.25', '3.14', '2.718281828459045', '0.30000000000000004', '123.456', '-98.76', '1e-7', '0.000001',
  '100000000000000000000', '123456789012345680000', '1.0000000000000002', '0.1234567890123'
]

function generator (seed) {
  const rand = prng(seed)
  const int = (n) => Math.floor(rand() * n)
  const pick = (list) => list[int(list.length)]

  function randomString (maxLen) {
    const len = int(maxLen + 1)
    let s = ''
    for (let i = 0; i < len; i++) {
      const r = rand()
      if (r < 0.45) s += pick(ASCII)
      else if (r < 0.6) s += pick(SPECIAL)
      else if (r < 0.72) s += pick(BMP)
      else if (r < 0.84) s += pick(HIGH_BMP)
      else if (r < 0.96) s += pick(ASTRAL)
      else s += pick(LONE)
    }
    return s
  }

  function randomKey () {
    const r = rand()
    if (r < 0.3) return pick(['a', 'b', 'B', 'z', 'Z', '_', '$', 'id', 'type', 'value', 'name', '1', '10', '2', '01', '-1', '', ' ', 'aa', 'a b', '__proto__', 'constructor', 'toString'])
    if (r < 0.45) return pick(HIGH_BMP) + randomString(2)
    if (r < 0.6) return pick(ASTRAL) + randomString(2)
    return randomString(8)
  }

  function randomNumberText () {
    const r = rand()
    if (r < 0.4) return pick(NUMBER_TEXTS)
    if (r < 0.7) return JSON.stringify(int(2000001) - 1000000)
    return JSON.stringify(Math.round((rand() - 0.5) * 1e6) / 1000)
  }

  // A value as a tree whose numbers are kept as text: {t:'num', text}.
  function randomValue (depth) {
    const r = rand()
    if (depth > 5 || r < 0.55) {
      const s = rand()
      if (s < 0.45) return randomString(12)
      if (s < 0.8) return { t: 'num', text: randomNumberText() }
      if (s < 0.87) return true
      if (s < 0.94) return false
      return null
    }
    if (r < 0.75) {
      const n = int(5)
      const a = []
      for (let i = 0; i < n; i++) a.push(randomValue(depth + 1))
      return a
    }
    return randomObject(depth + 1)
  }

  function randomObject (depth) {
    const n = int(7)
    const pairs = new Map()
    for (let i = 0; i < n; i++) pairs.set(randomKey(), randomValue(depth))
    return { t: 'obj', pairs }
  }

  const ws = () => {
    const r = rand()
    if (r < 0.7) return ''
    return pick([' ', '  ', '\t', ' \t '])
  }

  const hex4 = (code) => {
    const h = code.toString(16).padStart(4, '0')
    return rand() < 0.5 ? h : h.toUpperCase()
  }

  // Write a string as JSON text, choosing escapes at random.
  function writeString (s) {
    let out = '"'
    for (let i = 0; i < s.length; i++) {
      const code = s.charCodeAt(i)
      const ch = s[i]
      const short = { '"': '\\"', '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' }[ch]
      if (code >= 0xd800 && code <= 0xdbff && i + 1 < s.length && s.charCodeAt(i + 1) >= 0xdc00 && s.charCodeAt(i + 1) <= 0xdfff) {
        // A surrogate pair: raw UTF-8 or two escapes.
        if (rand() < 0.6) out += s[i] + s[i + 1]
        else out += '\\u' + hex4(code) + '\\u' + hex4(s.charCodeAt(i + 1))
        i++
      } else if (code >= 0xd800 && code <= 0xdfff) {
        out += '\\u' + hex4(code) // lone surrogate
      } else if (short) {
        out += rand() < 0.75 ? short : '\\u' + hex4(code)
      } else if (code < 0x20) {
        out += '\\u' + hex4(code)
      } else if (ch === '/' && rand() < 0.5) {
        out += '\\/'
      } else if (rand() < 0.1) {
        out += '\\u' + hex4(code)
      } else {
        out += ch
      }
    }
    return out + '"'
  }

  function writeValue (v) {
    if (v === null) return 'null'
    if (v === true) return 'true'
    if (v === false) return 'false'
    if (typeof v === 'string') return writeString(v)
    if (Array.isArray(v)) return '[' + ws() + v.map((x) => writeValue(x)).join(ws() + ',' + ws()) + ws() + ']'
    if (v.t === 'num') return v.text
    // Object: keys shuffled; sometimes a duplicate key first (the last wins).
    const keys = [...v.pairs.keys()]
    for (let i = keys.length - 1; i > 0; i--) {
      const j = int(i + 1);
      [keys[i], keys[j]] = [keys[j], keys[i]]
    }
    const members = []
    for (const k of keys) {
      if (rand() < 0.08) members.push(writeString(k) + ws() + ':' + ws() + writeValue(randomValue(4)))
      members.push(writeString(k) + ws() + ':' + ws() + writeValue(v.pairs.get(k)))
    }
    return '{' + ws() + members.join(ws() + ',' + ws()) + ws() + '}'
  }

  return { rand, randomObject, randomValue, writeValue, int }
}

// Hand-written edge cases, as raw texts.
const HANDWRITTEN = [
  '{}',
  '[]',
  '{"b":1,"a":2}',
  '{"a":2,"b":1}', // same entry as the previous one, other key order: same blob
  '  {  "b" : 1 ,	"a" : 2 }  ',
  '{"a":1,"a":2}', // duplicate key: the last one wins
  '{"a":{"y":[1,{"d":4,"c":3}],"x":null},"A":[[[]]],"":""}',
  '[{"z":1,"y":2},[3,[4,[5]]],"s",null,true,false,0]',
  '{"esc":"\\"\\\\\\/\\b\\f\\n\\r\\t","ctl":"\\u0000\\u0001\\u001F\\u007f\\u0080"}',
  '{"u":"\\u00e9\\u00E9é","astral":"\\ud83d\\ude00\\uD83D\\uDE00😀","lone":"\\ud800x\\udc00\\uDBFF"}',
  '{"\\ue000":1,"\\ud83d\\ude00":2,"\\uffff":3,"\\ud7ff":4,"a":5}', // UTF-16 order: a, U+D7FF, U+1F600 (D83D..), U+E000, U+FFFF
  '{"\uffff":"max BMP","\u{10000}":"min astral","\uE000":"private use","\u{10FFFF}":"max"}',
  '{"line sep":"\u2028\u2029","bom":"\ufeff","nbsp":"\u00a0","zwj":"\u{1F468}\u200D\u{1F469}"}',
  '{"__proto__":{"polluted":true},"constructor":1,"toString":"x"}',
  '{"10":"ten","9":"nine","1":"one","01":"zero-one","-1":"minus","1.5":"x"}',
  '{"n":[0,-0.5,1e+21,1e-7,5e-324,9007199254740991,0.1,2147483648]}',
  '{"deep":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{"x":[{"y":[{}]}]}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}',
  '{"long":"' + 'x'.repeat(5000) + '"}',
  '{"ws":"\\t tab and space inside a string\\u0009"}',
  '{"bools":[true,false,null],"str":"true","num":"1"}',
  '{"nest200":' + '['.repeat(200) + '{"k":"v"}' + ']'.repeat(200) + '}',
  '{"big":"' + 'ü€😀\\n'.repeat(20000) + '","z":[' + Array.from({ length: 2000 }, (_, i) => i * 7).join(',') + ']}'
]

function identicalEntries (count = 240) {
  const g = generator(0x7c9)
  const texts = [...HANDWRITTEN]
  while (texts.length < count) {
    const top = g.rand() < 0.88 ? g.randomObject(0) : (() => {
      const n = 1 + g.int(5)
      const a = []
      for (let i = 0; i < n; i++) a.push(g.randomValue(1))
      return a
    })()
    texts.push(g.writeValue(top))
  }
  return texts
}

// Numbers that Node normalizes. `ours` is the canonical text we expect from
// our server (numbers as written); Node's is computed from JSON.parse.
const NUMBER_DIFFERENCES = [
  { raw: '{"n":12345678901234567890}', ours: '{"n":12345678901234567890}' },
  { raw: '{"n":1.0}', ours: '{"n":1.0}' },
  { raw: '{"n":1e2}', ours: '{"n":1e2}' },
  { raw: '{"n":1E2}', ours: '{"n":1E2}' },
  { raw: '{"n":-0}', ours: '{"n":-0}' },
  { raw: '{"n":2.50}', ours: '{"n":2.50}' },
  { raw: '{"n":0.1e1}', ours: '{"n":0.1e1}' },
  { raw: '{"n":1e400}', ours: '{"n":1e400}' }, // Node: Infinity, stored as null
  { raw: '{"z":[1.0,  2],"a":123456789.123456789123}', ours: '{"a":123456789.123456789123,"z":[1.0,2]}' }
]

module.exports = { identicalEntries, prng, NUMBER_DIFFERENCES, NUMBER_TEXTS }
