'use strict'
// The NATS side, through the official client (the npm package `nats`): the connection options
// from the configuration, the stream (found, or created when asked), and the checks that the
// stream can hold a log: it captures our subject and removes nothing.

const fs = require('node:fs')
const nats = require('nats')

// JetStream API error codes we act on (nats-server's errors.json).
const ERR_STREAM_NOT_FOUND = 10059
const ERR_NO_MESSAGE_FOUND = 10037
const ERR_WRONG_LAST_SEQUENCE = 10071
const ERR_MESSAGE_TOO_LARGE = 10054

// An error the forwarder must not retry: it exits with status 1 and this message.
class FatalError extends Error {}

function connectOptions (config) {
  const options = {
    servers: config.natsUrl,
    name: `tcp-log-server-forward ${config.stream}`,
    maxReconnectAttempts: -1, // never give up: the log server's log is the buffer meanwhile
    reconnectTimeWait: 500,
    reconnectJitter: 250,
    waitOnFirstConnect: true,
    pingInterval: 10000,
    maxPingOut: 2
  }
  if (config.natsToken) options.token = config.natsToken
  if (config.natsUser) {
    options.user = config.natsUser
    options.pass = config.natsPassword
  }
  if (config.natsCreds) options.authenticator = nats.credsAuthenticator(readFile(config.natsCreds, 'NATS_CREDS'))
  if (config.natsNkey) options.authenticator = nats.nkeyAuthenticator(readFile(config.natsNkey, 'NATS_NKEY').toString('utf8').trim())
  if (config.natsCa || config.natsCert) {
    options.tls = {}
    if (config.natsCa) options.tls.caFile = config.natsCa
    if (config.natsCert) {
      options.tls.certFile = config.natsCert
      options.tls.keyFile = config.natsKey
    }
  }
  return options
}

function readFile (file, what) {
  try {
    return fs.readFileSync(file)
  } catch (error) {
    throw new FatalError(`cannot read ${what} file ${file}: ${error.code || error.message}`)
  }
}

function apiCode (error) {
  return error && error.api_error ? error.api_error.err_code : undefined
}

// Does a subject filter (with * and > wildcards) capture a literal subject?
function captures (filter, subject) {
  const f = filter.split('.')
  const s = subject.split('.')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '>') return s.length > i
    if (i >= s.length) return false
    if (f[i] !== '*' && f[i] !== s[i]) return false
  }
  return f.length === s.length
}

// The stream's configuration for a log: file storage, every message kept, no size limit.
function streamConfig (config) {
  return {
    name: config.stream,
    subjects: [config.subject],
    storage: nats.StorageType.File,
    num_replicas: config.replicas,
    retention: nats.RetentionPolicy.Limits,
    discard: nats.DiscardPolicy.Old,
    max_msgs: -1,
    max_bytes: -1,
    max_age: 0,
    max_msgs_per_subject: -1,
    max_msg_size: -1
  }
}

// Returns the stream's info, creating the stream first if it is missing and config.createStream.
// Throws FatalError when it is missing and not to be created, or cannot be created for good.
async function findStream (jsm, config, log) {
  try {
    return await jsm.streams.info(config.stream)
  } catch (error) {
    if (apiCode(error) !== ERR_STREAM_NOT_FOUND) throw error
    if (!config.createStream) {
      throw new FatalError(`stream ${config.stream} does not exist: create it (file storage, no limits), or run with --create-stream (CREATE_STREAM=1) and --replicas N`)
    }
  }
  try {
    const info = await jsm.streams.add(streamConfig(config))
    log.info('stream-created', `created stream ${config.stream}`, { stream: config.stream, subject: config.subject, replicas: config.replicas, storage: 'file' })
    return info
  } catch (error) {
    const code = apiCode(error)
    if (code === undefined) throw error // unreachable, a timeout: try again
    // Created meanwhile by another forwarder with the same configuration: use it.
    if (/already in use/.test(error.message)) return await jsm.streams.info(config.stream)
    throw new FatalError(`cannot create stream ${config.stream} with ${config.replicas} replica(s) and file storage: ${error.message}` +
      (/insufficient resources|non-clustered/.test(error.message) && config.replicas > 1 ? ` (a server with fewer than ${config.replicas} JetStream nodes needs --replicas 1)` : ''))
  }
}

// Refuses a stream that does not capture our subject; warns about settings that remove messages.
function checkStream (info, config, log) {
  const c = info.config
  if (!(c.subjects || []).some((f) => captures(f, config.subject))) {
    throw new FatalError(`stream ${config.stream} does not capture subject ${config.subject} (its subjects: ${(c.subjects || []).join(', ') || 'none'})`)
  }
  const dropping = []
  if (c.retention && c.retention !== 'limits') dropping.push(`retention ${c.retention}`)
  for (const key of ['max_msgs', 'max_bytes', 'max_msgs_per_subject']) if (c[key] > 0) dropping.push(`${key} ${c[key]}`)
  if (c.max_age > 0) dropping.push(`max_age ${c.max_age / 1e9} s`)
  if (dropping.length > 0) {
    log.warn('stream-limits', `stream ${config.stream} removes messages (${dropping.join(', ')}): once message L is gone the forwarder cannot check that it resumes the same log`, { stream: config.stream, limits: dropping })
  }
}

module.exports = {
  connectOptions, findStream, checkStream, captures, streamConfig, apiCode, FatalError,
  ERR_NO_MESSAGE_FOUND, ERR_WRONG_LAST_SEQUENCE, ERR_MESSAGE_TOO_LARGE
}
