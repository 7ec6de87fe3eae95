'use strict'
// The forwarder's pieces without any server: how a line of the log server is classified (the
// entry's bytes taken as they are), how the configuration is read, which subjects a stream's
// filters capture.

const { test } = require('node:test')
const assert = require('node:assert/strict')
const { classify } = require('../lib/log-connection')
const config = require('../lib/config')
const { captures, streamConfig } = require('../lib/jetstream')

test('an entry line gives the stored bytes between "entry": and the last brace, untouched', () => {
  const stored = '{"10":"a","9":"b","n":1.0,"big":12345678901234567890,"u":"é😀\\ud800\\u0000"}'
  const line = Buffer.from(`{"index":42,"entry":${stored}}`)
  const c = classify(line)
  assert.equal(c.kind, 'entry')
  assert.equal(c.index, 42)
  assert.ok(c.bytes.equals(Buffer.from(stored)))
  // What JSON.parse and JSON.stringify (tcp-log-client's way) would have made of it instead:
  assert.notEqual(JSON.stringify(JSON.parse(stored)), stored)
})

test('the other lines of the protocol are told apart', () => {
  assert.deepEqual(classify(Buffer.from('{"current":true}')), { kind: 'current' })
  assert.deepEqual(classify(Buffer.from('{"head":20000}')), { kind: 'head', head: 20000 })
  assert.deepEqual(classify(Buffer.from('{"index":7,"error":"blob missing"}')), { kind: 'damaged', index: 7, error: 'blob missing' })
  assert.deepEqual(classify(Buffer.from('{"error":"cannot read entry 45: EMFILE"}')), { kind: 'error', error: 'cannot read entry 45: EMFILE' })
  assert.equal(classify(Buffer.from('{"index":"7","entry":{}}')).kind, 'other')
  assert.equal(classify(Buffer.from('{"index":7,"entry":{}} ')).kind, 'other')
})

test('a flag wins over its environment variable; defaults otherwise', () => {
  const c = config.parse(['--stream=FLAG', '--replicas', '1', '--once'], { STREAM: 'ENV', SUBJECT: 'log.env', LOG_SERVER: '10.0.0.1:9000' })
  assert.equal(c.stream, 'FLAG')
  assert.equal(c.subject, 'log.env')
  assert.deepEqual(c.logServer, { host: '10.0.0.1', port: 9000, text: '10.0.0.1:9000' })
  assert.equal(c.replicas, 1)
  assert.equal(c.once, true)
  assert.deepEqual(c.natsUrl, ['nats://127.0.0.1:4222'])
  assert.equal(c.createStream, false)
  assert.equal(config.parse([], { CREATE_STREAM: '1', NATS_URL: 'nats://a:1, tls://b:2' }).createStream, true)
  assert.deepEqual(config.parse([], { NATS_URL: 'nats://a:1, tls://b:2' }).natsUrl, ['nats://a:1', 'tls://b:2'])
  assert.deepEqual(config.parse(['--log-server', '[::1]:8089'], {}).logServer, { host: '::1', port: 8089, text: '[::1]:8089' })
})

test('a bad value names the setting and the value', () => {
  assert.throws(() => config.parse(['--replicas', '0'], {}), /invalid REPLICAS "0": expected an integer from 1 to 5/)
  assert.throws(() => config.parse([], { LOG_SERVER: 'host' }), /invalid LOG_SERVER "host": expected host:port/)
  assert.throws(() => config.parse(['--subject', 'log.*'], {}), /invalid SUBJECT "log\.\*"/)
  assert.throws(() => config.parse(['--stream', 'a.b'], {}), /invalid STREAM "a\.b"/)
  assert.throws(() => config.parse(['--nope'], {}), /unknown argument "--nope"/)
  assert.throws(() => config.parse(['--stream'], {}), /--stream needs a value/)
  assert.throws(() => config.parse([], { NATS_CERT: 'c.pem' }), /NATS_CERT and NATS_KEY go together/)
})

test('secrets are masked in the started line', () => {
  const shown = config.shown(config.parse(['--nats-token', 't0k', '--nats-password', 'pw', '--nats-user', 'u'], {}))
  assert.equal(shown.natsToken, '***')
  assert.equal(shown.natsPassword, '***')
  assert.equal(shown.natsUser, 'u')
})

test('subject filters capture subjects as NATS matches them', () => {
  assert.ok(captures('log', 'log'))
  assert.ok(captures('log.*', 'log.a'))
  assert.ok(captures('log.>', 'log.a.b'))
  assert.ok(!captures('log.>', 'log'))
  assert.ok(!captures('log.*', 'log.a.b'))
  assert.ok(!captures('other', 'log'))
})

test('a stream the forwarder creates removes nothing', () => {
  const c = streamConfig({ stream: 'S', subject: 's', replicas: 3 })
  assert.equal(c.storage, 'file')
  assert.equal(c.num_replicas, 3)
  assert.equal(c.retention, 'limits')
  for (const key of ['max_msgs', 'max_bytes', 'max_msgs_per_subject', 'max_msg_size']) assert.equal(c[key], -1)
  assert.equal(c.max_age, 0)
})
