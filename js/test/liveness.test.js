'use strict';
// What the package does with the engine's own events: a node its peers
// evicted starts over as a new incarnation (and its lock promises and
// locks end); a node that missed messages nobody can resend syncs again.
// Nodes run on virtual time; a router can cut a node off or lose messages.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Facsimile } = require('./support/net');

const hex = (bytes) => Buffer.from(bytes).toString('hex');

class Router {
  constructor() {
    this.nodes = [];
    this.cut = new Set();
    this.drop = 0; // messages to lose, from `dropFrom`
    this.dropFrom = null;
  }

  join(hostname, options) {
    const node = new Facsimile(hostname, { manualTime: true, ...options });
    this.nodes.push(node);
    node.send = (m, to) => {
      if (this.cut.has(node)) return;
      if (node === this.dropFrom && this.drop > 0) {
        this.drop--;
        return;
      }
      for (const other of this.nodes) if (other !== node && !this.cut.has(other)) other.receive(m, to);
    };
    return node;
  }

  advance(ms, nodes = this.nodes) {
    for (const n of nodes) if (!this.cut.has(n)) n._advance(ms);
  }
}

test('a silent node is evicted: its lock goes to the next in line; it comes back as a new incarnation', async () => {
  const net = new Router();
  const detect = { failureDetection: { heartbeat: 100, timeout: 1000 } };
  const a = net.join('a', detect);
  const b = net.join('b', detect);
  const c = net.join('c', detect);
  a.store = { m: { x: 0 } };
  const t1 = await a.lock(a.store.m);
  const aLocks = [];
  a.on('lock', (target, what) => aLocks.push(what));
  let granted = null;
  b.lock(b.store.m).then((t) => {
    granted = t;
  });
  await Promise.resolve();
  assert.equal(granted, null, 'b waits for a');

  // a goes silent (a crash, a lost link): b and c stop waiting for it.
  net.cut.add(a);
  const before = a.incarnation;
  for (let t = 0; t < 3000 && granted === null; t += 100) {
    net.advance(100);
    await Promise.resolve();
  }
  assert.ok(granted > t1, `b was granted after a's eviction (token ${granted} > ${t1})`);
  b.store.m.x = 1;

  // a is back: it hears it was evicted, loses its lock and starts over.
  net.cut.delete(a);
  for (let t = 0; t < 10000 && !(a.incarnation !== before && a.ready); t += 100) {
    net.advance(100);
    await Promise.resolve();
  }
  assert.notEqual(a.incarnation, before, 'a new incarnation');
  assert.ok(a.ready);
  assert.deepEqual(aLocks, ['lost']);
  assert.throws(() => a.release(a.store.m), { code: 'NOT_OWNER' }, 'b holds it now');
  b.release(b.store.m);
  a.store.m.x = 2;
  for (let i = 0; i < 5; i++) net.advance(100);
  for (const n of [b, c]) assert.equal(n.store.m.x, 2);
  assert.equal(hex(a.snapshot()), hex(b.snapshot()));
  assert.equal(hex(c.snapshot()), hex(b.snapshot()));
});

test('a waiting lock of an evicted node fails with LOST', async () => {
  const net = new Router();
  const detect = { failureDetection: { heartbeat: 100, timeout: 1000 } };
  const a = net.join('a', detect);
  const b = net.join('b', detect);
  a.store = { m: {} };
  await b.lock(b.store.m);
  const waiting = a.lock(a.store.m);
  net.cut.add(a);
  for (let i = 0; i < 20; i++) net.advance(100);
  let settled = false;
  waiting.then(
    () => (settled = true),
    () => (settled = true),
  );
  net.cut.delete(a);
  for (let i = 0; i < 100 && !settled; i++) {
    net.advance(100);
    await new Promise(setImmediate);
  }
  await assert.rejects(waiting, { code: 'LOST' });
});

test('a node its transport reports gone loses its lock on every node: evict', async () => {
  // No failure detection: only the transport's report frees the lock.
  const net = new Router();
  const a = net.join('a');
  const b = net.join('b');
  const c = net.join('c');
  a.store = { m: { x: 0 } };
  const dead = await b.lock(b.store.m);
  // b's process dies holding the lock.
  net.cut.add(b);
  let granted = null;
  a.lock(a.store.m).then((t) => {
    granted = t;
  });
  await new Promise(setImmediate);
  assert.equal(granted, null, 'a waits for b');
  assert.throws(() => (c.store.m.x = 1), { code: 'NOT_OWNER' });
  assert.equal(a.evict('nobody'), 0);
  assert.equal(a.evict('a'), 0, 'not itself');
  assert.throws(() => a.evict(7), TypeError);

  assert.equal(a.evict('b', b.incarnation + 1), 0, 'another incarnation');
  assert.equal(a.evict('b'), 1);
  await new Promise(setImmediate);
  assert.ok(granted > dead, 'granted, with a larger fencing token');
  a.store.m.x = 2;
  assert.throws(() => (c.store.m.x = 3), { code: 'NOT_OWNER' }, 'c sees a holding it');
  for (const n of [a, c]) assert.ok(!n._peers().some((p) => p.hostname === 'b'));
  a.release(a.store.m);
  c.store.m.x = 3;
  assert.equal(hex(a.snapshot()), hex(c.snapshot()));
});

test('a node that missed messages no one can resend syncs again by itself', () => {
  const net = new Router();
  // a keeps only its last 2 messages for resending.
  const a = net.join('a', { resendLog: 2 });
  const b = net.join('b');
  a.store = { list: [] };
  net.dropFrom = a;
  net.drop = 5;
  for (let i = 0; i < 5; i++) a.store.list.push(i); // lost on the way to b
  let readies = 0;
  b.on('ready', () => readies++);
  a.store.list.push(5); // b sees the gap, asks, hears they are gone, syncs
  for (let i = 0; i < 10; i++) net.advance(100);
  assert.equal(readies, 1, 'b synced');
  assert.deepEqual(b.store.list, [0, 1, 2, 3, 4, 5]);
  assert.equal(hex(a.snapshot()), hex(b.snapshot()));
});

test('resendLog: 0 keeps no message: a peer that missed one syncs again', () => {
  const net = new Router();
  const a = net.join('a', { resendLog: 0 });
  const b = net.join('b');
  a.store = { list: [] };
  net.dropFrom = a;
  net.drop = 1;
  a.store.list.push(0); // lost on the way to b
  let readies = 0;
  b.on('ready', () => readies++);
  a.store.list.push(1);
  for (let i = 0; i < 10; i++) net.advance(100);
  assert.equal(readies, 1, 'b synced: a had nothing to resend');
  assert.deepEqual(b.store.list, [0, 1]);
});

test('a node that syncs again by itself reports what changed in the objects that stay', () => {
  const net = new Router();
  const a = net.join('a', { resendLog: 0 });
  const b = net.join('b');
  a.store = { m: { k: 0 }, l: [0], gone: {} };
  const root = b.store;
  const heard = [];
  b.store.m.on((t, p, v) => heard.push(['m', p, v]));
  b.store.l.on((t, p) => heard.push(['l', p]));
  b.store.l.on(0, (t, p) => heard.push(['l[0]', p]));
  b.on('root_changed', (store) => heard.push(['root_changed', store === root]));
  b.on('ready', () => heard.push(['ready']));
  net.dropFrom = a;
  net.drop = 3;
  a.store.m.k = 1; // these three are lost on the way to b
  a.store.l[0] = 1;
  delete a.store.gone;
  a.store.n = 1; // b sees the gap, asks, hears they are gone, syncs
  for (let i = 0; i < 10; i++) net.advance(100);
  assert.deepEqual(heard, [['m', 'k', 1], ['l', undefined], ['root_changed', true], ['ready']]);
  assert.deepStrictEqual(b.store, { l: [1], m: { k: 1 }, n: 1 });
});

test('options are checked', () => {
  assert.throws(() => new Facsimile('x', { maxMessage: 0 }), { code: 'BAD_OPTION', name: 'RangeError' });
  assert.throws(() => new Facsimile('x', { maxMessage: -1 }), { code: 'BAD_OPTION', name: 'RangeError' });
  assert.throws(() => new Facsimile('x', { resendLog: -1 }), { code: 'BAD_OPTION' });
  assert.throws(() => new Facsimile('x', { resendLog: 1.5 }), { code: 'BAD_OPTION' });
  assert.throws(() => new Facsimile('x', { failureDetection: { heartbeat: 100 } }), { code: 'BAD_OPTION' });
  assert.throws(() => new Facsimile('x', { failureDetection: { heartbeat: 100, timeout: Infinity } }), { code: 'BAD_OPTION' });
  assert.throws(() => new Facsimile('x', { failureDetection: { heartbeat: 1e-6, timeout: 100 } }), { code: 'BAD_OPTION' });
  assert.throws(() => new Facsimile('x', { failureDetection: { heartbeat: 100, timeout: 0.5 } }), { code: 'BAD_OPTION' });
  new Facsimile('x', { failureDetection: { heartbeat: 1, timeout: 1 } }).close();
  const n = new Facsimile('x', { manualTime: true });
  n._advance(Number.MAX_VALUE); // time past what the engine counts: nothing runs, nothing breaks
  n.send = () => {};
  n.store = 1;
  assert.equal(n.store, 1);
});

test('host timers drive the engine: a silent holder is evicted in real time', async () => {
  const detect = { failureDetection: { heartbeat: 20, timeout: 150 } };
  const a = new Facsimile('a', detect);
  const b = new Facsimile('b', detect);
  let aLinked = true;
  a.send = (...m) => {
    if (aLinked) b.receive(...m);
  };
  b.send = (...m) => {
    if (aLinked) a.receive(...m);
  };
  a.store = { m: {} };
  const t1 = await a.lock(a.store.m);
  const waiting = b.lock(b.store.m);
  aLinked = false; // a falls silent; only b's timers run what follows
  // The package's timers never keep a process alive (a real program's
  // transport does): this handle stands in for it.
  const alive = setInterval(() => {}, 1000);
  const started = Date.now();
  const t2 = await waiting;
  clearInterval(alive);
  assert.ok(t2 > t1);
  assert.ok(Date.now() - started >= 100, 'not before the timeout');
  a.close();
  b.close();
});

test('an observer that stalls holds up no lock, where a member that stalls does', async () => {
  const net = new Router();
  const a = net.join('a');
  const b = net.join('b');
  a.store = { m: { x: 0 } };
  const o = net.join('o', { observer: true });
  const m = net.join('m');
  o.sync();
  m.sync();
  assert.equal(o.store.m.x, 0);
  assert.throws(() => {
    o.store.m.x = 1;
  }, { code: 'READ_ONLY' });
  assert.deepEqual(a._peers().map((p) => p.hostname).sort(), ['b', 'm'], 'the observer is no member');

  net.cut.add(o); // stalls: neither hears nor answers
  const token = await a.lock(a.store.m);
  assert.ok(token > 0, 'granted without the observer');
  a.release(a.store.m);

  net.cut.add(m); // a member stalls: the next grant waits for it
  let granted = null;
  b.lock(b.store.m).then((t) => {
    granted = t;
  });
  for (let i = 0; i < 10; i++) await Promise.resolve();
  assert.equal(granted, null, 'b waits for m');
});
