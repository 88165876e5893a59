// Writes the log check benchmark's corpus with the real loggers a BFF uses:
//   node write_corpus.js winston <path> <lines> [seed]   the BFF's winston request logger
//   node write_corpus.js pino <path> <lines> [seed]      pino-http's default request lines
// Requests go through each library's own code (winston's json format with timestamp; pino-http
// on real http.IncomingMessage/ServerResponse objects), so field names, key order, number
// formatting and nesting are what a real BFF writes. About 85% of lines are requests
// (fractional responseTime for winston, as the BFF measures it with process.hrtime), the rest
// application events, some with a duration, some errors.
'use strict'

const fs = require('fs')
const http = require('http')
const winston = require('winston')
const pino = require('pino')
const pinoHttp = require('pino-http')

const [kind, path, linesArg, seedArg] = process.argv.slice(2)
const total = Number(linesArg)
let seed = Number(seedArg || 1) >>> 0
function rand () { // mulberry32: the same corpus for the same seed
  seed = (seed + 0x6D2B79F5) >>> 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
const pick = (xs) => xs[Math.floor(rand() * xs.length)]
const lognormal = (mu, sigma) => Math.exp(mu + sigma * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()))
const PATHS = ['/api/invoices', '/api/invoices/{id}', '/api/services', '/api/tickets/{id}', '/api/auth/login',
  '/api/auth/refresh', '/api/orders/{id}/provision', '/health']
const STATUSES = Array(85).fill(200).concat([201, 204, 301, 304, 400, 401, 401, 403, 404, 404, 500, 502, 503])
const UA = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0'

function request () {
  const status = pick(STATUSES)
  const url = pick(PATHS).replace('{id}', String(1 + Math.floor(rand() * 99999)))
  const method = url.startsWith('/api/auth') ? 'POST' : 'GET'
  const forwarded = `203.0.113.${1 + Math.floor(rand() * 254)}`
  return { status, url, method, forwarded, ms: lognormal(4.5, 1.0) }
}

async function drained (stream) {
  if (stream.writableLength > (16 << 20)) await new Promise((resolve) => stream.once('drain', resolve))
}

async function writeWinston () {
  const out = fs.createWriteStream(path)
  const logger = winston.createLogger({
    level: 'debug',
    format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
    transports: [new winston.transports.Stream({ stream: out })]
  })
  for (let i = 0; i < total; i++) {
    const r = rand()
    if (r < 0.85) {
      const q = request()
      const level = q.status >= 500 ? 'error' : q.status >= 400 ? 'warn' : 'info'
      logger.log(level, `${q.method} ${q.url} ${q.status}`, {
        method: q.method,
        url: q.url,
        status: q.status,
        responseTime: Number(q.ms.toFixed(3)),
        ip: q.forwarded,
        userAgent: UA
      })
    } else if (r < 0.95) {
      logger.info('Platform Event received', { channel: '/event/Order_Provisioned__e', replayId: 1000 + i })
    } else if (r < 0.98) {
      logger.debug('WHMCS GetClientsProducts', { service: 'whmcs', duration: Number(lognormal(5, 0.7).toFixed(3)) })
    } else {
      logger.error('WHMCS API error: Invalid IP 198.51.100.4', { service: 'whmcs', error: { code: 'ip_denied' } })
    }
    if (i % 10000 === 9999) await drained(out)
  }
  logger.end()
  await new Promise((resolve) => out.on('finish', resolve))
}

async function writePino () {
  fs.writeFileSync(path, '')
  const dest = pino.destination({ dest: path, sync: false, minLength: 1 << 13 })
  const logger = pino({ level: 'debug' }, dest)
  const httpLogger = pinoHttp({ logger })
  const socket = { remoteAddress: '::ffff:127.0.0.1', remotePort: 40000 }
  for (let i = 0; i < total; i++) {
    const r = rand()
    if (r < 0.85) {
      const q = request()
      const req = new http.IncomingMessage(socket)
      req.method = q.method
      req.url = q.url
      req.headers = { host: 'portal.example', 'user-agent': UA, 'x-forwarded-for': q.forwarded, connection: 'close' }
      const res = new http.ServerResponse(req)
      res[pinoHttp.startTime] = Date.now() - Math.round(q.ms) // pino-http measures whole ms itself
      httpLogger(req, res)
      res.statusCode = q.status
      res._header = `HTTP/1.1 ${q.status}\r\n\r\n` // sent, as after res.end() on a socket
      res.finished = true
      res.emit('finish')
    } else if (r < 0.97) {
      logger.info({ channel: '/event/Order_Provisioned__e', replayId: 1000 + i }, 'Platform Event received')
    } else {
      logger.error({ err: new Error('WHMCS timeout') }, 'WHMCS API error')
    }
    if (i % 10000 === 9999) {
      await new Promise((resolve) => setImmediate(resolve))
      if (dest.writableLength > (16 << 20)) await new Promise((resolve) => dest.once('drain', resolve))
    }
  }
  dest.flushSync()
  dest.end()
}

(kind === 'winston' ? writeWinston() : writePino()).catch((e) => {
  console.error(`write_corpus ${kind} ${path}: ${e.stack || e}`)
  process.exit(1)
})
