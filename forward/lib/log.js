'use strict'
// Log lines as the server writes them: pino-compatible NDJSON on stdout, one object a line,
// {"level":30,"time":...,"pid":...,"hostname":...,"msg":"caught up","event":"caught-up",...}.

const os = require('node:os')
const { LEVELS } = require('./config')

function createLog (levelName, out = process.stdout) {
  const threshold = LEVELS[levelName]
  const base = { pid: process.pid, hostname: os.hostname() }
  function line (level, event, msg, fields) {
    if (level < threshold) return
    const record = { level, time: Date.now(), ...base, msg, event, ...fields }
    out.write(JSON.stringify(record) + '\n')
  }
  return {
    trace: (event, msg, fields) => line(10, event, msg, fields),
    debug: (event, msg, fields) => line(20, event, msg, fields),
    info: (event, msg, fields) => line(30, event, msg, fields),
    warn: (event, msg, fields) => line(40, event, msg, fields),
    error: (event, msg, fields) => line(50, event, msg, fields),
    fatal: (event, msg, fields) => line(60, event, msg, fields)
  }
}

module.exports = { createLog }
