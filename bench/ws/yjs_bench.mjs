// The relay's WebSocket benchmark workload (crates/facsimile-server/examples/
// ws_bench.rs) on y-websocket's server with Yjs clients.
//
//   npm ci --omit=optional && node yjs_bench.mjs [--quick]
//
// The server (y-websocket 2.1.0's bin/server.cjs, the last release that
// ships it; documents in memory, no persistence) runs in a child process;
// the clients and an observer, each a Y.Doc with a WebsocketProvider, run in
// this one. Each client writes 64-byte strings into its own key of a Y.Map;
// every 100 writes it waits until the observer has its latest write (the
// server sends no acknowledgement). Every write reaches every other client
// and the observer; latency is from the write call to the observer's
// change event. Prints a table like ws_bench's, and the CPU time the server
// and this process spent.

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'

const PAYLOAD = 64
// Every provider listens for the process's exit.
process.setMaxListeners(0)
const STALL_MS = 30_000
const quick = process.argv.includes('--quick')
const total = quick ? 4_000 : 32_000
const epoch = process.hrtime.bigint()
const now = () => Number(process.hrtime.bigint() - epoch)

/** One write: its time in nanoseconds since the epoch, padded to 64 bytes. */
const stamped = () => {
  const ts = String(now()).padStart(20, ' ')
  return (ts + ':').padEnd(PAYLOAD, 'x')
}

const freePort = () => new Promise((resolve) => {
  const s = createServer()
  s.listen(0, '127.0.0.1', () => {
    const { port } = s.address()
    s.close(() => resolve(port))
  })
})

/** Clock ticks of a process (user + system), from /proc. */
const cpuTicks = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return Number(fields[11]) + Number(fields[12])
}
const TICKS_PER_SEC = 100

const port = await freePort()
const serverJs = fileURLToPath(new URL('./node_modules/y-websocket/bin/server.cjs', import.meta.url))
const server = spawn(process.execPath, [serverJs], {
  env: { ...process.env, HOST: '127.0.0.1', PORT: String(port) },
  stdio: ['ignore', 'pipe', 'inherit']
})
await new Promise((resolve, reject) => {
  server.stdout.on('data', (d) => { if (String(d).includes('running at')) resolve() })
  server.on('exit', (code) => reject(new Error(`the server exited (${code})`)))
})

const connect = (doc) => new Promise((resolve) => {
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(`ws://127.0.0.1:${port}`, doc, ydoc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true
  })
  const done = (synced) => {
    if (synced) {
      provider.off('sync', done)
      resolve({ ydoc, provider, map: ydoc.getMap('root') })
    }
  }
  provider.on('sync', done)
})

const run = async (clients, perClient) => {
  const doc = `bench-${clients}`
  const observer = await connect(doc)
  const latencies = []
  let delivered = 0
  // key -> [value, resolve]: a client waiting for the observer to have it.
  const waiting = new Map()
  observer.map.observe((ev) => {
    if (ev.transaction.local) return
    for (const key of ev.keysChanged) {
      const v = observer.map.get(key)
      latencies.push(now() - Number(v.slice(0, 20)))
      delivered++
      const w = waiting.get(key)
      if (w && w[0] === v) {
        waiting.delete(key)
        w[1]()
      }
    }
  })
  const conns = []
  for (let i = 0; i < clients; i++) {
    const c = await connect(doc)
    c.map.observe((ev) => {
      if (!ev.transaction.local) delivered += ev.keysChanged.size
    })
    conns.push(c)
  }
  const expected = clients * perClient * clients
  const started = now()
  const writers = conns.map(async (c, i) => {
    const key = `c${i}`
    for (let j = 0; j < perClient; j++) {
      const value = stamped()
      c.map.set(key, value)
      if (j % 100 === 99 || j + 1 === perClient) {
        await new Promise((resolve) => {
          if (observer.map.get(key) === value) resolve()
          else waiting.set(key, [value, resolve])
        })
      }
    }
  })
  await Promise.all(writers)
  let progress = [delivered, now()]
  while (delivered < expected) {
    await new Promise((resolve) => setTimeout(resolve, 1))
    if (delivered > progress[0]) progress = [delivered, now()]
    if (now() - progress[1] > STALL_MS * 1e6) {
      throw new Error(`${clients} clients: stalled at ${delivered} of ${expected} deliveries`)
    }
  }
  const secs = (now() - started) / 1e9
  latencies.sort((a, b) => a - b)
  const pick = (q) => latencies[Math.floor((latencies.length - 1) * q)] / 1e6
  for (const c of [observer, ...conns]) {
    c.provider.destroy()
    c.ydoc.destroy()
  }
  return { writes: clients * perClient, secs, delivered, p50: pick(0.5), p99: pick(0.99) }
}

console.log(`y-websocket 2.1.0 server, yjs ${JSON.parse(readFileSync(new URL('./node_modules/yjs/package.json', import.meta.url))).version}, node ${process.version}`)
console.log('pacing: every 100 writes, until the observer has the latest')
console.log('\n| clients | writes | writes/s | deliveries/s | p50 latency | p99 latency | server CPU | clients CPU |')
console.log('|---:|---:|---:|---:|---:|---:|---:|---:|')
for (const clients of [1, 4, 16]) {
  const serverBefore = cpuTicks(server.pid)
  const clientsBefore = process.cpuUsage()
  const f = await run(clients, Math.floor(total / clients))
  const serverSecs = (cpuTicks(server.pid) - serverBefore) / TICKS_PER_SEC
  const used = process.cpuUsage(clientsBefore)
  const clientSecs = (used.user + used.system) / 1e6
  console.log(`| ${clients} | ${f.writes} | ${(f.writes / f.secs).toFixed(0)} | ${(f.delivered / f.secs).toFixed(0)} | ${f.p50.toFixed(2)} ms | ${f.p99.toFixed(2)} ms | ${serverSecs.toFixed(2)} s | ${clientSecs.toFixed(2)} s |`)
}
server.kill()
process.exit(0)
