// A BFF as the portal runs it, for the log check's end-to-end test:
//   node bff.js winston|pino <log path> <port>
// Express, with one request line per request written by real winston (the BFF's own request
// logger: status, fractional responseTime, ip, url, method, userAgent) or real pino-http
// (its default line, levels by status). SIGHUP reopens the log file (what logrotate's
// postrotate sends); SIGTERM stops. GET /__counts returns what this process logged, line by
// line: [request id, level, status, responseTime, client] (the ground truth the test
// compares the monitor's metrics with; itself not logged).
'use strict'

const fs = require('fs')
const express = require('express')

const [kind, logPath, portArg] = process.argv.slice(2)
const records = []

function tally (level, status, ms, url, client) {
  const rid = url && url.includes('rid=') ? Number(url.split('rid=')[1].split('&')[0]) : null
  records.push([rid, level, status === undefined ? null : status, ms === undefined ? null : ms,
    url && url.includes('/auth/login') ? client : null])
}

function levelOf (status) {
  return status >= 500 ? 'error' : status >= 400 ? 'warn' : 'info'
}

function clientOf (req) { // what the monitor should find: X-Forwarded-For behind our loopback proxy
  const xff = req.headers['x-forwarded-for']
  return xff ? xff.split(',').pop().trim() : '127.0.0.1'
}

const app = express()
let logLine // (level, message) for application lines

if (kind === 'winston') {
  const winston = require('winston')
  const Transport = require('winston-transport')
  const { MESSAGE } = require('triple-beam')
  // A file transport that reopens on SIGHUP; every line is one write(2) with O_APPEND.
  class ReopenableFile extends Transport {
    constructor (opts) {
      super(opts)
      this.path = opts.filename
      this.fd = fs.openSync(this.path, 'a')
    }

    log (info, callback) {
      fs.writeSync(this.fd, info[MESSAGE] + '\n')
      callback()
    }

    reopen () {
      const old = this.fd
      this.fd = fs.openSync(this.path, 'a')
      fs.closeSync(old)
    }
  }
  const file = new ReopenableFile({ filename: logPath })
  const logger = winston.createLogger({
    level: 'debug',
    format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
    transports: [file]
  })
  process.on('SIGHUP', () => file.reopen())
  app.use((req, res, next) => {
    if (req.path === '/__counts') return next()
    const t0 = process.hrtime.bigint()
    res.on('finish', () => {
      const ms = Number((Number(process.hrtime.bigint() - t0) / 1e6).toFixed(3))
      const status = res.statusCode
      const level = levelOf(status)
      const ip = req.headers['x-forwarded-for'] || req.socket.remoteAddress
      logger.log(level, `${req.method} ${req.originalUrl} ${status}`, {
        method: req.method,
        url: req.originalUrl,
        status,
        responseTime: ms,
        ip,
        userAgent: req.get('user-agent')
      })
      tally(level, status, ms, req.originalUrl, clientOf(req))
    })
    next()
  })
  logLine = (level, message) => { logger.log(level, message); tally(level) }
} else {
  const pino = require('pino')
  const pinoHttp = require('pino-http')
  const dest = pino.destination({ dest: logPath, sync: true })
  const logger = pino({ level: 'debug' }, dest)
  process.on('SIGHUP', () => dest.reopen())
  const NUM = { info: 30, warn: 40, error: 50 }
  const counted = (req, res, val) => {
    const status = res.statusCode
    tally(String(NUM[levelOf(status)]), status, val.responseTime, req.url, clientOf(req))
    return val
  }
  const countedError = (req, res, err, val) => counted(req, res, val)
  app.use(pinoHttp({
    logger,
    customLogLevel: (req, res, err) => (err ? 'error' : levelOf(res.statusCode)),
    customSuccessObject: counted,
    customErrorObject: countedError,
    autoLogging: { ignore: (req) => req.url === '/__counts' }
  }))
  logLine = (level, message) => { logger[level](message); tally(String(NUM[level])) }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
app.get('/api/invoices', async (req, res) => { await sleep(Number(req.query.delay || 0)); res.json({ invoices: [] }) })
app.get('/api/slow', async (req, res) => { await sleep(Number(req.query.delay || 300)); res.json({ ok: true }) })
app.get('/api/fail', (req, res) => res.status(Number(req.query.status || 500)).json({ error: 'upstream' }))
app.post('/api/auth/login', (req, res) => res.status(req.query.ok === '1' ? 200 : 401).json({}))
app.get('/health', (req, res) => res.json({ ok: true }))
app.get('/__counts', (req, res) => res.json({ records }))

const server = app.listen(Number(portArg), '127.0.0.1', () => {
  logLine('info', `BFF listening on ${portArg}`)
  process.stdout.write(`ready ${process.pid}\n`)
})
server.keepAliveTimeout = 30000
process.on('SIGTERM', () => server.close(() => process.exit(0)))
