// TimescaleDB (PGlite compiled to WebAssembly, with the timescaledb extension) on a TCP port, speaking the
// PostgreSQL wire protocol: the engine tests run tickpipe's TimescaleDB-only SQL against, with no Docker.
// Usage: node server.mjs --port N [--data-dir DIR]   (prints "READY 127.0.0.1:N" once it accepts connections)
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`)
  return index >= 0 ? process.argv[index + 1] : fallback
}

const port = Number(option('port', '5433'))
const dataDir = option('data-dir', undefined) // in memory unless given

const db = await PGlite.create({ dataDir, extensions: { timescaledb } })
// One client at a time is PGlite's model; the socket server queues the others.
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1', connectionQueueTimeout: 60000 })
await server.start()
console.log(`READY 127.0.0.1:${port}`)

async function stop() {
  await server.stop()
  await db.close()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
