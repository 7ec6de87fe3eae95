#!/usr/bin/env node
'use strict'
// Forwards a tcp-log-server's log into a NATS JetStream stream, entry N as message N, live
// (doc/replication.md). Configuration by environment variables and flags (`--help`).
//
//   node forward/forward.js --log-server 127.0.0.1:8089 --nats-url nats://n1:4222,nats://n2:4222 \
//     --stream LOG --subject log [--create-stream --replicas 3] [--once]
//
// Exit status: 0 stopped by SIGINT or SIGTERM, or --once done; 1 failed unexpectedly (a
// supervisor may start it again); 64 a bad flag or value (one line on stderr); 65 refused for
// good, so that starting it again cannot help: the stream holds another log, or cannot hold
// this one as it is (missing without --create-stream, not capturing the subject, message L
// removed), an entry cannot be forwarded (damaged, too large), NATS refused the credentials.
// The last log line, at level fatal, says which.

const { connect } = require('nats')
const config = require('./lib/config')
const { createLog } = require('./lib/log')
const js = require('./lib/jetstream')
const { Forwarder } = require('./lib/forwarder')
const { version } = require('./package.json')

const REFUSED = 65

async function main () {
  let settings
  try {
    settings = config.parse(process.argv.slice(2), process.env)
  } catch (error) {
    if (!(error instanceof config.ConfigError)) throw error
    process.stderr.write(`tcp-log-server-forward: ${error.message}\n`)
    return 64
  }
  if (settings.help) { process.stdout.write(config.help()); return 0 }
  if (settings.version) { process.stdout.write(`${version}\n`); return 0 }

  const log = createLog(settings.logLevel)
  log.info('started', 'started', { version, ...config.shown(settings) })

  let forwarder = null
  let stopped = false
  const stop = (signal) => {
    if (stopped) return
    stopped = true
    log.info('stopping', `stopping on ${signal}`, { signal })
    if (forwarder) forwarder.stop()
    else process.exit(0) // still connecting to NATS: nothing in flight
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))

  let nc
  try {
    log.info('nats-connecting', `connecting to NATS at ${settings.natsUrl.join(', ')}`, { servers: settings.natsUrl })
    nc = await connect(js.connectOptions(settings))
  } catch (error) {
    log.fatal('fatal', `cannot connect to NATS at ${settings.natsUrl.join(', ')}: ${error.message}`, { error: error.message, code: error.code })
    return error instanceof js.FatalError || (error.isAuthError && error.isAuthError()) ? REFUSED : 1
  }
  log.info('nats-connected', `connected to NATS at ${nc.getServer()}`, { server: nc.getServer() })
  watchStatus(nc, log)

  forwarder = new Forwarder(settings, nc, log)
  let status
  try {
    status = await forwarder.run()
  } catch (error) {
    if (!(error instanceof js.FatalError)) throw error
    log.fatal('fatal', error.message, { error: error.message })
    status = REFUSED
  }
  await Promise.race([nc.drain().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 2000))])
  log.info('stopped', 'stopped', { index: forwarder.acked, forwarded: forwarder.forwarded, status })
  return status
}

// The client reconnects by itself (forever); these lines say when.
async function watchStatus (nc, log) {
  for await (const s of nc.status()) {
    const data = typeof s.data === 'string' || typeof s.data === 'number' ? s.data : JSON.stringify(s.data)
    if (s.type === 'disconnect') log.warn('nats-disconnected', `disconnected from NATS at ${data}`, { server: data })
    else if (s.type === 'reconnect') log.info('nats-reconnected', `reconnected to NATS at ${data}`, { server: data })
    else if (s.type === 'error') log.warn('nats-error', `NATS: ${data}`, { error: data })
    else log.debug('nats-status', `NATS ${s.type}`, { type: s.type, data })
  }
}

main().then((status) => process.exit(status), (error) => {
  process.stderr.write(`tcp-log-server-forward: ${error.stack || error}\n`)
  process.exit(1)
})
