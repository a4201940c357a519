// Facsimile.connect against a real relay (`facsimile serve`) over
// WebSocket, beside the CLI (a Rust node on the relay's TCP protocol).
import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';

import { Relay, TOKEN, cli, until } from './support/relay.mjs';

const require = createRequire(import.meta.url);
const Facsimile = require('..');
const WebSocket = require('ws');

let relay;
// Every node a test connects, closed after it whatever happened.
const nodes = [];

before(async () => {
  relay = await new Relay().start();
});

after(async () => {
  await relay.stop();
});

/** A node of `on` (the shared relay by default), closed after the test. */
async function connect(hostname, options = {}, on = relay) {
  const node = await Facsimile.connect(on.url, hostname, { token: TOKEN, WebSocket, doc: 'js', ...options });
  nodes.push(node);
  return node;
}

afterEach(async () => {
  await Promise.allSettled(nodes.splice(0).map((n) => n.close()));
});

async function get(path, doc = 'js') {
  return JSON.parse(await cli(relay, ['get', '@', path, '--doc', doc, '--compact']));
}

test('Node.js nodes and the CLI mirror one document through the relay', async () => {
  const a = await connect('a');
  a.store = { greeting: 'hi', items: [1, 2] };
  await a.flush();
  const b = await connect('b');
  assert.deepEqual(JSON.parse(JSON.stringify(b.store)), { greeting: 'hi', items: [1, 2] });
  // The CLI's write reaches both; theirs reach the CLI.
  await cli(relay, ['set', '@', '/greeting', '"hello"', '--doc', 'js']);
  await until(a, () => a.store.greeting === 'hello', 'the CLI write on a');
  await until(b, () => b.store.greeting === 'hello', 'the CLI write on b');
  b.store.items.push(3);
  await b.flush();
  assert.deepEqual(await get('/items'), [1, 2, 3]);
  await until(a, () => a.store.items.length === 3, 'b push on a');
  assert.deepEqual(Buffer.from(a.snapshot()), Buffer.from(b.snapshot()));
  await a.close();
  await b.close();
  assert.equal(a.connection.status, 'closed');
});

test('a lock held in JavaScript makes the CLI wait, and the next token is larger', async () => {
  const a = await connect('locker');
  if (a.store === null) a.store = {};
  a.store.jobs = [];
  const token = await a.lock(a.store.jobs);
  const lockCmd = (extra) => ['lock', '@', '/jobs', '--doc', 'js', ...extra, '--', 'sh', '-c', 'echo "$FACSIMILE_LOCK_TOKEN"'];
  // While this node holds it, the CLI waits, and gives up after its --wait.
  await assert.rejects(cli(relay, lockCmd(['--wait', '1'])), /exit/);
  a.release(a.store.jobs);
  const next = Number((await cli(relay, lockCmd([]))).trim());
  assert.ok(next > token, `${next} > ${token}`);
  await a.close();
});

test('acknowledged writes survive a kill -9 of the relay; the node resumes by itself', async () => {
  const a = await connect('survivor', { backoff: { min: 20, max: 200 } });
  a.store = { log: [] };
  for (let i = 0; i < 50; i++) a.store.log.push(i);
  await a.flush();
  await relay.kill();
  // Writes while the relay is down wait in the node.
  for (let i = 50; i < 60; i++) a.store.log.push(i);
  const flushed = a.flush();
  await relay.start();
  await flushed;
  assert.equal(a.connection.status, 'connected');
  const log = await get('/log');
  assert.deepEqual(log, Array.from({ length: 60 }, (_, i) => i));
  const b = await connect('late');
  assert.deepEqual(Buffer.from(b.snapshot()), Buffer.from(a.snapshot()));
  await a.close();
  await b.close();
});

test('a refusal on reconnecting is tried again, as the Rust client does', async () => {
  const a = await connect('patient', { backoff: { min: 20, max: 100 } });
  a.store = { n: 1 };
  await a.flush();
  await relay.kill();
  relay.token = 'rotated';
  try {
    await relay.start();
    await waitFor(() => a.connection.error?.code === 'REFUSED', 'a refused reconnection');
    assert.equal(a.connection.status, 'disconnected', 'still trying, not closed');
    a.store.n = 2;
  } finally {
    await relay.kill();
    relay.token = undefined;
    await relay.start();
  }
  await a.flush();
  assert.equal(a.connection.status, 'connected');
  assert.equal(await get('/n'), 2);
});

test('a relay gone silent without closing is left and connected again once back', async () => {
  const a = await connect('watchful', { heartbeat: 100, backoff: { min: 20, max: 100 } });
  a.store = { n: 1 };
  await a.flush();
  relay.freeze(true);
  try {
    await waitFor(
      () => a.connection.error?.code === 'TIMEOUT' && a.connection.status === 'disconnected',
      'the silence noticed',
    );
  } finally {
    relay.freeze(false);
  }
  // Evicted by the relay meanwhile, it starts over and syncs.
  await waitFor(() => a.connection.status === 'connected' && a.store?.n === 1, 'connected again');
  a.store.n = 2;
  await a.flush();
  assert.equal(await get('/n'), 2);
});

test('with a reconnection grace, writes made while cut off survive the reconnection', async () => {
  const graceful = await new Relay(['--reconnect-grace', '30']).start();
  const join = async (name) => {
    const n = await Facsimile.connect(graceful.url, name, {
      token: TOKEN,
      WebSocket,
      doc: 'grace',
      heartbeat: 100,
      backoff: { min: 20, max: 100 },
    });
    nodes.push(n);
    return n;
  };
  try {
    const a = await join('graceful-a');
    a.store = { n: 1 };
    await a.flush();
    const b = await join('graceful-b');
    const incarnation = a.incarnation;
    graceful.freeze(true);
    try {
      a.store.n = 2; // never heard by the frozen relay on this connection
      await waitFor(
        () => a.connection.error?.code === 'TIMEOUT' && a.connection.status === 'disconnected',
        'the silence noticed',
      );
    } finally {
      graceful.freeze(false);
    }
    await a.flush(); // rejects with WRITES_LOST if the relay had evicted it
    assert.equal(a.incarnation, incarnation, 'the same incarnation goes on');
    await until(b, () => b.store?.n === 2, 'b sees the write made while cut off');
  } finally {
    await Promise.allSettled(nodes.splice(0).map((n) => n.close()));
    await graceful.stop();
  }
});

test('a node takes a relay\'s smaller frame limit from its welcome', async () => {
  const small = await new Relay(['--max-frame', '65536']).start();
  try {
    const a = await connect('limited', { doc: 'limit' }, small);
    a.store = { n: 0 };
    // Sent, it would end the session: the relay refuses what it cannot pass on.
    assert.throws(
      () => {
        a.store.big = 'x'.repeat(70000);
      },
      (e) => e.code === 'TOO_LARGE',
    );
    // Refused before it is copied into the engine's memory, which would
    // grow for good: the node's own maxMessage (64 MiB) would take it.
    const memory = Facsimile._memoryBytes();
    assert.throws(
      () => {
        a.store.big = 'z'.repeat(memory);
      },
      (e) => e.code === 'TOO_LARGE',
    );
    assert.equal(Facsimile._memoryBytes(), memory);
    a.store.fits = 'y'.repeat(60000);
    a.store.n = 1;
    await a.flush();
    assert.equal(a.connection.status, 'connected');
    assert.equal(a.store.big, undefined);
  } finally {
    await Promise.allSettled(nodes.splice(0).map((n) => n.close()));
    await small.stop();
  }
});

test('a node closed while its relay is down keeps reconnecting quietly until it gives up', async () => {
  const gone = await new Relay().start();
  try {
    const a = await Facsimile.connect(gone.url, 'orphan', {
      token: TOKEN,
      WebSocket,
      doc: 'gone',
      backoff: { min: 10, max: 20 },
    });
    a.store = { n: 1 };
    await a.flush();
    await gone.kill();
    await waitFor(() => a.connection.status === 'disconnected', 'the relay gone');
    // Reconnection attempts go on while it waits for the last messages'
    // acknowledgement; none of them may throw on the closed node.
    await assert.rejects(a.close(), { code: 'TIMEOUT' });
    assert.equal(a.connection.status, 'closed');
  } finally {
    await gone.stop();
  }
});

/** Resolves once `cond()` holds, looking every 10 ms, for at most 20 s. */
async function waitFor(cond, what) {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > 20000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The relay's log position for the document, from its status route. */
async function logPosition(doc = 'js') {
  const res = await fetch(`http://${relay.addr}/inspect/${doc}/status?token=${TOKEN}`);
  assert.equal(res.status, 200);
  return (await res.json()).position;
}

test('writes made while the relay is down reach it packed, in a few messages', async () => {
  const a = await connect('offline', { backoff: { min: 20, max: 200 } });
  a.store = { scores: {} };
  await a.flush();
  const before = await logPosition();
  await relay.kill();
  await waitFor(() => a.connection.status === 'disconnected', 'the node to notice');
  for (let i = 0; i < 2000; i++) a.store.scores[`player${i % 50}`] = i;
  const flushed = a.flush();
  await relay.start();
  await flushed;
  // One message a write would take 2,000 positions of the relay's log.
  const messages = (await logPosition()) - before;
  assert.ok(messages < 50, `${messages} messages for 2,000 writes`);
  assert.equal(await get('/scores/player49'), 1999);
  await a.close();
});

test('writes held while the relay is down, packed for its frame limit, reach it come back with a smaller one', async () => {
  const shrinking = await new Relay(['--max-frame', String(1 << 20)]).start();
  try {
    const a = await connect('backlog', { doc: 'backlog', backoff: { min: 20, max: 200 } }, shrinking);
    a.store = { k: {} };
    await a.flush();
    const member = a.incarnation;
    await shrinking.kill();
    await waitFor(() => a.connection.status === 'disconnected', 'the node to notice');
    // Some 200 KiB of writes, held into one message; the document stays
    // small (ten keys), so that its state fits a small frame.
    const value = (i) => `${String(i).padStart(4, '0')}${'x'.repeat(100)}`;
    for (let i = 0; i < 2000; i++) a.store.k[`k${i % 10}`] = value(i);
    const flushed = a.flush();
    shrinking.extra = ['--max-frame', String(16 << 10)];
    await shrinking.start();
    // Sent packed as it was, the relay would refuse the frame and evict
    // the node: its writes reported lost.
    await flushed;
    const got = await cli(shrinking, ['get', '@', '/k/k9', '--doc', 'backlog', '--compact']);
    assert.equal(JSON.parse(got), value(1999));
    assert.equal(a.incarnation, member, 'resumed, not rejoined');
  } finally {
    await Promise.allSettled(nodes.splice(0).map((n) => n.close()));
    await shrinking.stop();
  }
});

test('a read-only node mirrors, refuses its own writes even past the package\'s check, and is no member', async () => {
  const w = await connect('writer');
  w.store = { n: 1 };
  await w.flush();
  const r = await connect('reader', { readOnly: true });
  assert.equal(r.store.n, 1);
  assert.throws(() => {
    r.store.n = 2;
  }, { code: 'READ_ONLY' });
  await assert.rejects(r.lock(r.store), { code: 'READ_ONLY' });
  w.store.n = 3;
  await until(r, () => r.store.n === 3, 'the writer on the reader');
  // Past the package's check the engine refuses too: the node only
  // observes (the relay's refusal of a write that reaches it anyway is
  // tested in Rust, from a node that does not observe).
  r._readOnly = false;
  assert.throws(() => {
    r.store.n = 4;
  }, { code: 'READ_ONLY' });
  assert.ok(!w._peers().some((p) => p.hostname === 'reader'), 'nobody waits for the reader');
  await w.flush();
  assert.equal((await get('/n')), 3);
  await r.close();
  await w.close();
});

test('refusals: a wrong token, a wrong protocol on the port, no WebSocket', async () => {
  await assert.rejects(connect('x', { token: 'wrong' }), (e) => e.code === 'REFUSED' && /token/.test(e.message));
  await assert.rejects(Facsimile.connect(relay.url, 'x', { token: TOKEN }), (e) => e.code === 'NO_WEBSOCKET' || typeof WebSocket === 'function');
  await assert.rejects(Facsimile.connect('ws://127.0.0.1:1/', 'x', { WebSocket }), { code: 'CONNECT' });
});

test('a write too large for the relay throws TOO_LARGE, and the connection goes on', async () => {
  const a = await connect('large-a', { doc: 'large' });
  a.store = { n: 0 };
  assert.throws(
    () => {
      a.store.big = 'x'.repeat(17 * 1024 * 1024);
    },
    (e) => e.code === 'TOO_LARGE',
  );
  a.store.n = 1;
  await a.flush();
  // A node told of a smaller relay limit refuses by that one.
  const b = await connect('large-b', { doc: 'large', maxFrame: 65536 });
  assert.deepEqual(b.store, { n: 1 });
  assert.throws(
    () => {
      b.store.s = 'y'.repeat(70000);
    },
    (e) => e.code === 'TOO_LARGE',
  );
  b.store.s = 'y'.repeat(60000);
  await b.flush();
  await until(a, () => a.store.s?.length === 60000, 'a sees the large write that fit');
});

test("a listener's exception for a change from the relay is thrown from the event loop, not lost", async () => {
  // In a process of its own: the exception ends it, as one from any event
  // handler does.
  const script = `
    const Facsimile = require(${JSON.stringify(require.resolve('..'))});
    const WebSocket = require(${JSON.stringify(require.resolve('ws'))});
    const options = { token: process.env.TOKEN, WebSocket, doc: 'thrown' };
    (async () => {
      const a = await Facsimile.connect(process.env.URL, 'a', options);
      a.store = { n: 0 };
      await a.flush();
      const b = await Facsimile.connect(process.env.URL, 'b', options);
      b.on('change', () => {
        throw new Error('a listener failed');
      });
      console.log('listening');
      a.store.n = 1;
      await a.flush();
    })();
  `;
  const child = spawn(process.execPath, ['-e', script], {
    env: { ...process.env, URL: relay.url, TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Without the exception the process would stay connected.
  const stop = setTimeout(() => child.kill(), 30_000);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const code = await new Promise((done) => child.on('exit', done));
  clearTimeout(stop);
  assert.match(stdout, /listening/);
  assert.equal(code, 1, stderr);
  assert.match(stderr, /a listener failed/);
});

/**
 * A WebSocket class whose sockets can stop handing the node what the relay
 * sends, as a link that delivers late: the node goes on sending, and hears
 * nothing until the messages held are delivered.
 */
function lateLink() {
  const link = {
    held: false,
    queue: [],
    sockets: [],
    arrived: null,
    hold() {
      link.held = true;
    },
    /** Delivers what was held, and everything after it as it comes. */
    release() {
      link.held = false;
      for (const deliver of link.queue.splice(0)) deliver();
    },
    /** Delivers what was held, one message at a time, until `cond()` holds. */
    async deliverUntil(cond) {
      while (!cond()) {
        if (link.queue.length === 0) await new Promise((resolve) => (link.arrived = resolve));
        else link.queue.shift()();
      }
    },
    /** Ends the latest connection at once; what it held is never delivered. */
    cut() {
      link.held = false;
      link.queue.length = 0;
      link.sockets.at(-1).terminate();
    },
  };
  link.WebSocket = class LateSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      link.sockets.push(this);
    }

    get onmessage() {
      return super.onmessage;
    }

    set onmessage(handler) {
      super.onmessage = (ev) => {
        if (!link.held) {
          handler(ev);
          return;
        }
        link.queue.push(() => handler(ev));
        link.arrived?.();
        link.arrived = null;
      };
    }
  };
  return link;
}

/** How many writes the flush `flushed` reports lost; fails if it resolves. */
async function lostWrites(flushed) {
  const e = await flushed.then(
    () => assert.fail('the flush resolved: no write was reported lost'),
    (err) => err,
  );
  assert.equal(e.code, 'WRITES_LOST', e.message);
  assert.equal(e.lost, Number(/^(\d+) writes/.exec(e.message)[1]), e.message);
  return e.lost;
}

/**
 * Node a of `link` writes three times once `b` has evicted it, while it
 * hears nothing yet: the relay drops those writes (a departed peer's), yet
 * acknowledges them. Returns a's incarnation before and what `end(a)`
 * returns (a's flush of them, by default).
 */
async function writeOnceEvicted(a, b, link, end = (n) => n.flush()) {
  a.store = { l: [0] };
  await a.flush();
  await waitFor(() => b.store?.l?.length === 1, 'b to have the document');
  const old = a.incarnation;
  link.hold();
  assert.equal(b.evict(a.hostname), 1);
  await b.flush(); // the relay applied the eviction
  for (const i of [1, 2, 3]) a.store.l.push(i);
  return { old, flushed: end(a) };
}

test('writes a node made after the relay evicted it, while still connected, are reported lost by flush', async () => {
  const link = lateLink();
  const a = await connect('evicted-a', { doc: 'evicted', WebSocket: link.WebSocket });
  const b = await connect('evicted-b', { doc: 'evicted' });
  const { old, flushed } = await writeOnceEvicted(a, b, link);
  link.release();
  const lost = await lostWrites(flushed);
  assert.notEqual(a.incarnation, old, 'a started over');
  // What the relay and b lack is exactly what was reported lost.
  const kept = await get('/l', 'evicted');
  assert.equal(lost, [1, 2, 3].filter((i) => !kept.includes(i)).length, `lost ${lost}, the relay has ${kept}`);
  assert.deepEqual(kept, [0]);
  assert.deepEqual([...b.store.l], [0]);
  // Back with the document, the new incarnation's writes are kept.
  await waitFor(() => a.ready && a.store?.l?.length === 1, 'a to rejoin with the document');
  a.store.l.push(4);
  await a.flush();
  await until(b, () => b.store.l.length === 2, "b sees a's new write");
  assert.deepEqual(await get('/l', 'evicted'), [0, 4]);
});

test('close reports as lost the writes a node made after the relay evicted it, while still connected', async () => {
  const link = lateLink();
  const a = await connect('closing-a', { doc: 'closing', WebSocket: link.WebSocket });
  const b = await connect('closing-b', { doc: 'closing' });
  // Closed before it hears of its eviction: it must still hear of it, or
  // take the relay's acknowledgement of the writes it dropped for done.
  const { flushed: closed } = await writeOnceEvicted(a, b, link, (n) => n.close());
  link.release();
  assert.equal(await lostWrites(closed), 3);
  assert.equal(a.connection.status, 'closed');
  assert.deepEqual(await get('/l', 'closing'), [0]);
});

test('a node evicted while connected, cut off before the relay acknowledged its dropped writes, reconnects as its new incarnation', async () => {
  // With a reconnection grace, the relay resumes the new incarnation's
  // session, and drops the old one's writes sent again.
  const graceful = await new Relay(['--reconnect-grace', '30']).start();
  const link = lateLink();
  const join = async (name, options = {}) => {
    const n = await Facsimile.connect(graceful.url, name, {
      token: TOKEN,
      WebSocket,
      doc: 'cut',
      backoff: { min: 20, max: 100 },
      ...options,
    });
    nodes.push(n);
    return n;
  };
  try {
    const a = await join('cut-a', { WebSocket: link.WebSocket });
    const b = await join('cut-b');
    const { old, flushed } = await writeOnceEvicted(a, b, link);
    const lost = lostWrites(flushed);
    // a hears of its eviction and starts over; the acknowledgements of
    // its dropped writes that follow are cut off with the connection.
    await link.deliverUntil(() => a.incarnation !== old);
    const started = a.incarnation;
    link.cut();
    await waitFor(() => link.sockets.length >= 2 && a.connection.status === 'connected', 'a to reconnect');
    assert.equal(await lost, 3);
    assert.equal(a.incarnation, started, 'a did not start over again');
    await waitFor(() => a.ready && a.store?.l?.length === 1, 'a to rejoin with the document');
    a.store.l.push(4);
    await a.flush();
    await until(b, () => b.store.l.length === 2, "b sees a's new write");
    assert.deepEqual([...b.store.l], [0, 4]);
  } finally {
    await Promise.allSettled(nodes.splice(0).map((n) => n.close()));
    await graceful.stop();
  }
});

test('a node evicted while connected comes back as its new incarnation: its write the relay applied is not reported lost', async () => {
  const graceful = await new Relay(['--reconnect-grace', '30']).start();
  const link = lateLink();
  const join = async (name, options = {}) => {
    const n = await Facsimile.connect(graceful.url, name, {
      token: TOKEN,
      WebSocket,
      doc: 'back',
      backoff: { min: 20, max: 100 },
      ...options,
    });
    nodes.push(n);
    return n;
  };
  try {
    const a = await join('back-a', { WebSocket: link.WebSocket });
    const b = await join('back-b');
    a.store = { l: [] };
    await a.flush();
    await waitFor(() => b.store?.l?.length === 0, 'b to have the document');
    const old = a.incarnation;
    assert.equal(b.evict(a.hostname), 1);
    // The relay keeps a's connection, and a starts over on it.
    await waitFor(() => a.incarnation !== old && a.ready && a.store?.l !== undefined, 'a to start over');
    const started = a.incarnation;
    a.store.l.push('x');
    await a.flush();
    // Applied by the relay, its acknowledgement cut off with the connection.
    link.hold();
    a.store.l.push('y');
    const flushed = a.flush();
    await until(b, () => b.store.l.length === 2, "b sees a's write");
    link.cut();
    await flushed;
    assert.equal(a.incarnation, started, 'a did not start over again');
    assert.deepEqual([...b.store.l], ['x', 'y']);
  } finally {
    await Promise.allSettled(nodes.splice(0).map((n) => n.close()));
    await graceful.stop();
  }
});

test('reconnections a relay ends after its welcome back off: the waits start over only once something is acknowledged', async () => {
  // Each connection ended right after its welcome, before the relay
  // acknowledges anything, as by a relay that refuses a frame sent again
  // first on each.
  let ending = false;
  let made = 0;
  class EndingSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      made += 1;
    }

    set onmessage(handler) {
      super.onmessage = (ev) => {
        handler(ev);
        if (ending) this.terminate();
      };
    }

    get onmessage() {
      return super.onmessage;
    }
  }
  const min = 20;
  const a = await connect('ended', { doc: 'ended', WebSocket: EndingSocket, backoff: { min, max: 60000 } });
  a.store = { n: 1 };
  await a.flush();
  const conn = a._connection;
  ending = true;
  conn.ws.terminate();
  await waitFor(() => made >= 5, 'four reconnections');
  // The first loss, of a connection that got acknowledgements, waited
  // `min`; each of the three after it, welcomed yet ended, doubled it.
  assert.ok(conn.delay >= 16 * min, `the next wait is about ${conn.delay} ms`);
  ending = false;
  // Evicted as its connections ended, it starts over and syncs.
  await waitFor(() => a.connection.status === 'connected' && a.ready && a.store?.n === 1, 'a to connect again');
  a.store.n = 2;
  await a.flush();
  // This one got something acknowledged: the waits start over.
  const ws = conn.ws;
  const closed = new Promise((resolve) => ws.once('close', resolve));
  ws.terminate();
  await closed;
  assert.equal(conn.delay, 2 * min);
});

test('a relay that accepts the connection but never answers is given up on after the connect timeout', async () => {
  const { createServer } = await import('node:net');
  const sockets = [];
  const mute = createServer((s) => sockets.push(s));
  await new Promise((resolve) => mute.listen(0, '127.0.0.1', resolve));
  try {
    const url = `ws://127.0.0.1:${mute.address().port}/`;
    await assert.rejects(
      Facsimile.connect(url, 'mute', { WebSocket, connectTimeout: 200, timeout: 15000 }),
      (e) => e.code === 'TIMEOUT' && /cannot reach/.test(e.message),
    );
  } finally {
    for (const s of sockets) s.destroy();
    mute.close();
  }
});

test('a welcome that does not come is waited for within the timeout, then the node connects again', async () => {
  const link = lateLink();
  const a = await connect('unwelcomed', { doc: 'unwelcomed', WebSocket: link.WebSocket, timeout: 5000, backoff: { min: 20, max: 100 } });
  a.store = { n: 1 };
  await a.flush();
  // The next connection's welcome is held, as by a relay still recovering
  // the document.
  link.cut();
  link.hold();
  await waitFor(() => link.sockets.length >= 3, 'a connection after the one whose welcome was held');
  assert.equal(a.connection.error?.code, 'NOT_A_RELAY', a.connection.error?.message);
  link.release();
  // Evicted as its connection was cut, it starts over and syncs.
  await waitFor(() => a.connection.status === 'connected' && a.ready && a.store?.n === 1, 'a to connect again');
  a.store.n = 2;
  await a.flush();
  assert.equal(await get('/n', 'unwelcomed'), 2);
});

test('timeouts and waits past what a timer holds mean never, not at once', async () => {
  // A timer's delay past 2^31 - 1 ms fires at once.
  const forever = 2 ** 32;
  const a = await connect('patient-forever', {
    doc: 'forever',
    timeout: forever,
    connectTimeout: forever,
    backoff: { min: forever, max: forever },
  });
  a.store = { n: 1 };
  await a.flush();
  const conn = a._connection;
  const made = conn.ws;
  const closed = new Promise((resolve) => made.once('close', resolve));
  made.terminate();
  await closed;
  // The next attempt waits: none is made as the event loop turns.
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(conn.ws, null, 'no attempt made yet');
  assert.equal(a.connection.status, 'disconnected');
});

test('an engine failure ends the relay connection with it; peers evict the node', { timeout: 30_000 }, async () => {
  // Short failure detection: a node whose connection ends is evicted at
  // once, one gone silent after 3 s.
  const strict = await new Relay(['--peer-timeout', '3', '--reconnect-grace', '0']).start();
  try {
    const options = { doc: 'failing', heartbeat: 100, backoff: { min: 20, max: 100 } };
    const a = await connect('failing-a', options, strict);
    a.store = { m: {}, n: 1 };
    const held = await a.lock(a.store.m);
    await a.flush();
    const b = await connect('failing-b', options, strict);
    await assert.rejects(b.request(b.store.m), { code: 'LOCKED' }, 'b sees the lock a holds');
    const granted = b.lock(b.store.m);
    // Rejected (closed) only when the test fails before it is granted.
    granted.catch(() => {});
    const m = a.store.m;
    const ws = a._connection.ws;
    const socketClosed = new Promise((resolve) => ws.once('close', resolve));
    // A write the relay has not acknowledged yet: its flush is under way.
    a.store.n = 2;
    const underWay = a.flush().then(
      () => null,
      (e) => e,
    );
    // An engine that throws what is none of its refusals: here, freed under
    // the node (in the field: a trap, an exception that crossed its frames).
    a._engine.free();
    let failure = null;
    try {
      a.store.n = 3;
    } catch (e) {
      failure = e;
    }
    assert.ok(failure !== null, 'the write that met the failure throws');
    assert.equal(failure.code, 'CLOSED', String(failure));
    const cause = failure.cause;
    assert.ok(cause instanceof Error, `the failure is the cause (${cause})`);
    const closed = (e) => e != null && e.code === 'CLOSED' && e.cause === cause;
    // The connection ends, with the failure as its error.
    await socketClosed;
    assert.equal(a.connection.status, 'closed');
    assert.ok(closed(a.connection.error), `the connection's error: ${a.connection.error}`);
    const flushed = await underWay;
    assert.ok(flushed !== null && closed(flushed), `the flush under way rejects: ${flushed}`);
    // Every later call of the node throws CLOSED, the failure as its cause.
    for (const [what, f] of [
      ['a write', () => (a.store.n = 4)],
      ['a read', () => a.store.n],
      ['sync', () => a.sync()],
      ['snapshot', () => a.snapshot()],
      ['a read through a proxy', () => m.k],
      ['release', () => a.release(m)],
    ]) {
      assert.throws(f, closed, what);
    }
    await assert.rejects(a.lock(m), closed, 'lock');
    await assert.rejects(() => a.flush(), closed, 'flush');
    // The relay evicted a (its connection ended without a goodbye): the
    // lock it held goes to b, which goes on writing.
    const token = await granted;
    assert.ok(token > held, `${token} > ${held}`);
    assert.ok(!b._peers().some((p) => p.hostname === 'failing-a'), 'a is no longer a member of b');
    b.store.m.k = 1;
    await b.flush();
    assert.equal(JSON.parse(await cli(strict, ['get', '@', '/m/k', '--doc', 'failing', '--compact'])), 1);
    await a.close();
    assert.equal(a.connection.status, 'closed');
  } finally {
    await Promise.allSettled(nodes.splice(0).map((n) => n.close()));
    await strict.stop();
  }
});
