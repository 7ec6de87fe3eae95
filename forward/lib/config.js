'use strict'
// The forwarder's configuration, in the server's style: each setting has an environment
// variable and a flag of the same meaning (`--stream LOG` or `--stream=LOG`); a flag wins over
// the variable. A bad value throws a ConfigError naming the setting and the value (exit 64).

class ConfigError extends Error {}

const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity }

// name: the variable; flag: its flag; kind: how the text is read; def: the default.
const SETTINGS = [
  { key: 'logServer', env: 'LOG_SERVER', flag: '--log-server', kind: 'address', def: '127.0.0.1:8089', help: 'the tcp-log-server to read, host:port' },
  { key: 'natsUrl', env: 'NATS_URL', flag: '--nats-url', kind: 'list', def: 'nats://127.0.0.1:4222', help: 'NATS servers, comma-separated (nats://, tls://)' },
  { key: 'stream', env: 'STREAM', flag: '--stream', kind: 'name', def: 'LOG', help: 'the JetStream stream, holding this log alone' },
  { key: 'subject', env: 'SUBJECT', flag: '--subject', kind: 'subject', def: 'log', help: 'the subject each entry is published to' },
  { key: 'createStream', env: 'CREATE_STREAM', flag: '--create-stream', kind: 'bool', def: false, help: 'create the stream if it is missing (file storage, no limits)' },
  { key: 'replicas', env: 'REPLICAS', flag: '--replicas', kind: 'int', min: 1, max: 5, def: 3, help: 'replicas of a stream it creates (1 for a single node)' },
  { key: 'natsToken', env: 'NATS_TOKEN', flag: '--nats-token', kind: 'string', def: '', secret: true, help: 'token authentication' },
  { key: 'natsUser', env: 'NATS_USER', flag: '--nats-user', kind: 'string', def: '', help: 'user of user/password authentication' },
  { key: 'natsPassword', env: 'NATS_PASSWORD', flag: '--nats-password', kind: 'string', def: '', secret: true, help: 'password of user/password authentication' },
  { key: 'natsCreds', env: 'NATS_CREDS', flag: '--nats-creds', kind: 'string', def: '', help: 'a .creds file (JWT and nkey seed)' },
  { key: 'natsNkey', env: 'NATS_NKEY', flag: '--nats-nkey', kind: 'string', def: '', help: 'a file holding an nkey seed' },
  { key: 'natsCa', env: 'NATS_CA', flag: '--nats-ca', kind: 'string', def: '', help: 'TLS: CA certificate file to verify the servers with' },
  { key: 'natsCert', env: 'NATS_CERT', flag: '--nats-cert', kind: 'string', def: '', help: 'TLS: client certificate file' },
  { key: 'natsKey', env: 'NATS_KEY', flag: '--nats-key', kind: 'string', def: '', help: 'TLS: client key file' },
  { key: 'maxInFlight', env: 'MAX_IN_FLIGHT', flag: '--max-in-flight', kind: 'int', min: 1, max: 65536, def: 256, help: 'publishes awaiting their acknowledgement at once' },
  { key: 'maxInFlightBytes', env: 'MAX_IN_FLIGHT_BYTES', flag: '--max-in-flight-bytes', kind: 'int', min: 1, max: 1 << 30, def: 8 << 20, help: 'bytes of entries awaiting their acknowledgement at once (one entry may go over)' },
  { key: 'ackTimeout', env: 'ACK_TIMEOUT', flag: '--ack-timeout', kind: 'seconds', def: 10, help: 'seconds to wait for a publish acknowledgement before starting over' },
  { key: 'maxBackoff', env: 'MAX_BACKOFF', flag: '--max-backoff', kind: 'seconds', def: 5, help: 'longest wait between two attempts after a failure' },
  { key: 'lagInterval', env: 'LAG_INTERVAL', flag: '--lag-interval', kind: 'seconds', def: 10, help: 'seconds between two "lag" lines while behind' },
  { key: 'logLevel', env: 'LOG_LEVEL', flag: '--log-level', kind: 'level', def: 'info', help: 'trace debug info warn error fatal silent' },
  { key: 'once', env: null, flag: '--once', kind: 'bool', def: false, help: 'forward up to the head of the log as it is at start, then exit' }
]

const USAGE = 'usage: node forward.js [--log-server host:port] [--nats-url url,...] [--stream NAME] [--subject SUBJ]\n' +
  '         [--create-stream [--replicas N]] [--once] [other flags: --help]'

function help () {
  const rows = SETTINGS.map((s) => {
    const def = s.kind === 'bool' ? '' : ` (default ${s.def === '' ? 'none' : s.def})`
    return `  ${s.flag.padEnd(24)}${(s.env || '').padEnd(21)}${s.help}${def}`
  })
  return `${USAGE}\n\nflags, their environment variables, and what they set:\n${rows.join('\n')}\n` +
    '  --help, --version\n'
}

function read (setting, text) {
  const bad = (expected) => new ConfigError(`invalid ${setting.env || setting.flag} ${JSON.stringify(text)}: expected ${expected}`)
  switch (setting.kind) {
    case 'string': return text
    case 'bool': {
      const t = text.toLowerCase()
      if (['1', 'true', 'yes', ''].includes(t)) return true
      if (['0', 'false', 'no'].includes(t)) return false
      throw bad('1, true, yes, 0, false or no')
    }
    case 'int': {
      if (!/^[0-9]+$/.test(text) || Number(text) < setting.min || Number(text) > setting.max) {
        throw bad(`an integer from ${setting.min} to ${setting.max}`)
      }
      return Number(text)
    }
    case 'seconds': {
      if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || Number(text) <= 0 || Number(text) > 86400) throw bad('a number of seconds above 0')
      return Number(text)
    }
    case 'level':
      if (!(text in LEVELS)) throw bad(Object.keys(LEVELS).join(', '))
      return text
    case 'address': {
      // host:port, [v6]:port; a bare port means 127.0.0.1.
      const m = /^(?:\[([^\]]+)\]|([^:]*)):([0-9]{1,5})$/.exec(text) || /^()()([0-9]{1,5})$/.exec(text)
      if (!m || Number(m[3]) < 1 || Number(m[3]) > 65535) throw bad('host:port, e.g. 127.0.0.1:8089')
      return { host: m[1] || m[2] || '127.0.0.1', port: Number(m[3]), text }
    }
    case 'list': {
      const list = text.split(',').map((s) => s.trim()).filter(Boolean)
      if (list.length === 0) throw bad('one URL or more, comma-separated')
      return list
    }
    case 'name':
      // JetStream stream names: no whitespace, '.', '*', '>', path separators.
      if (!/^[^\s.*>/\\]+$/.test(text)) throw bad('a stream name without spaces, ".", "*", ">", "/" or "\\"')
      return text
    case 'subject':
      if (!/^[^\s.*>]+(\.[^\s.*>]+)*$/.test(text)) throw bad('a literal subject (tokens separated by ".", no wildcards)')
      return text
  }
  throw new Error(`unknown kind ${setting.kind}`)
}

// argv: the arguments after the script; env: the environment. Returns the settings by key,
// plus `help` or `version` when asked.
function parse (argv, env) {
  const config = {}
  for (const s of SETTINGS) {
    config[s.key] = s.env && env[s.env] !== undefined && env[s.env] !== '' ? read(s, env[s.env]) : s.def
    if (s.kind === 'address' && typeof config[s.key] === 'string') config[s.key] = read(s, config[s.key])
    if (s.kind === 'list' && typeof config[s.key] === 'string') config[s.key] = read(s, config[s.key])
  }
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].split(/=(.*)/s)
    if (flag === '--help') { config.help = true; continue }
    if (flag === '--version') { config.version = true; continue }
    const s = SETTINGS.find((x) => x.flag === flag)
    if (!s) throw new ConfigError(`unknown argument ${JSON.stringify(argv[i])}\n${USAGE}`)
    if (s.kind === 'bool') {
      config[s.key] = inline === undefined ? true : read(s, inline)
      continue
    }
    let text = inline
    if (text === undefined) {
      if (i + 1 >= argv.length) throw new ConfigError(`${flag} needs a value\n${USAGE}`)
      text = argv[++i]
    }
    config[s.key] = read(s, text)
  }
  if (config.natsCreds && config.natsNkey) throw new ConfigError('NATS_CREDS and NATS_NKEY are two ways to authenticate: give one')
  if (Boolean(config.natsCert) !== Boolean(config.natsKey)) throw new ConfigError('NATS_CERT and NATS_KEY go together: give both or neither')
  return config
}

// What the "started" line shows: every setting, secrets masked.
function shown (config) {
  const out = {}
  for (const s of SETTINGS) {
    let v = config[s.key]
    if (s.secret && v) v = '***'
    if (s.kind === 'address') v = v.text
    if (v === '') continue
    out[s.key] = v
  }
  return out
}

module.exports = { parse, help, shown, ConfigError, LEVELS, USAGE }
