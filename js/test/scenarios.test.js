'use strict';
// SPEC §6, the original's test suite restated: scenarios 1–14, each run
// over a synchronous re-entrant network and an asynchronous shuffling one,
// with JSON string messages and with binary ones.

const test = require('node:test');
const assert = require('node:assert/strict');
const { networks, Facsimile } = require('./support/net');

const plain = (v) => JSON.parse(JSON.stringify(v));

function sameSnapshots(nodes, label) {
  const first = Buffer.from(nodes[0].snapshot()).toString('hex');
  for (const n of nodes.slice(1)) {
    assert.equal(Buffer.from(n.snapshot()).toString('hex'), first, `${label}: ${n.hostname} converged`);
  }
}

// Counts each node's messages.
function countSends(node) {
  const send = node.send;
  const counter = { n: 0 };
  node.send = (...m) => {
    counter.n++;
    return send(...m);
  };
  return counter;
}

// Each scenario over each network; the asynchronous ones over several
// delivery schedules (seeds).
function scenario(name, body) {
  for (const [label, make] of networks()) {
    const seeds = label.startsWith('async') ? [7, 1234, 99991] : [undefined];
    for (const seed of seeds) {
      const title = seed === undefined ? label : `${label}, seed ${seed}`;
      test(`${name} (${title})`, async () => {
        const net = make(seed);
        try {
          await body(net, label, make);
        } finally {
          net.close();
        }
      });
    }
  }
}

test('s01: a node with no transport refuses a store write with a clear error', async () => {
  const lonely = new Facsimile('lonely');
  const refused = { message: 'This object does not have support signalling', code: 'NO_SENDER' };
  assert.throws(() => {
    lonely.store = 1;
  }, refused);
  assert.equal(lonely.store, null);

  // A node that only receives has proxies, and refuses writes through them.
  const writer = new Facsimile('writer');
  writer.send = (...m) => lonely.receive(...m);
  writer.store = { x: 1, list: [1] };
  assert.deepEqual(plain(lonely.store), { x: 1, list: [1] });
  assert.throws(() => {
    lonely.store.x = 2;
  }, refused);
  assert.throws(() => lonely.store.list.push(2), refused);
  assert.throws(() => {
    delete lonely.store.x;
  }, refused);
  await assert.rejects(lonely.lock(lonely.store), refused);
  assert.deepEqual(plain(lonely.store), { x: 1, list: [1] }, 'refused writes change nothing');

  // Once a transport exists, writes work.
  lonely.send = () => {};
  lonely.store.x = 3;
  assert.equal(lonely.store.x, 3);
  writer.close();
  lonely.close();
});

scenario('s02: the root may be a number', async (net) => {
  const a = net.join('a');
  const b = net.join('b');
  a.store = 3;
  await net.settle();
  assert.equal(b.store, 3);
  a.store = 2.5;
  await net.settle();
  assert.equal(b.store, 2.5);
  for (const v of ['text', true, null, -0, 2 ** 60, Number.NaN]) {
    a.store = v;
    await net.settle();
    assert.ok(Object.is(b.store, v), `${String(v)} arrives as it is`);
  }
  sameSnapshots([a, b], 'numbers');
});

scenario('s03: the root may be a map, an array (stays an array), nested maps and arrays', async (net, label) => {
  const a = net.join('a');
  const b = net.join('b');
  a.store = { x: 1 };
  await net.settle();
  assert.deepEqual(b.store, { x: 1 });
  a.store = [1, 2, 3];
  await net.settle();
  assert.ok(Array.isArray(b.store), `${label}: an array stays an array`);
  assert.deepEqual(b.store, [1, 2, 3]);
  const doc = { a: { b: [1, { c: [true, null, 's'] }, []] }, d: {} };
  a.store = doc;
  await net.settle();
  assert.deepEqual(b.store, doc);
  assert.equal(JSON.stringify(b.store), JSON.stringify(plain(a.store)));
  assert.ok(Array.isArray(b.store.a.b[1].c));
  sameSnapshots([a, b], label);
});

scenario('s04: a map that references itself arrives as a cycle', async (net, label) => {
  const a = net.join('a');
  const b = net.join('b');
  a.store = { name: 'loop' };
  a.store.self = a.store;
  await net.settle();
  const root = b.store;
  assert.equal(root.self, root, `${label}: the same object, not a copy`);
  assert.equal(root.self.self.self.name, 'loop');
  assert.throws(() => JSON.stringify(root), TypeError);
  sameSnapshots([a, b], label);
});

scenario('s05: a node created after the state exists calls sync() and gets it all', async (net, label) => {
  const a = net.join('a');
  const b = net.join('b');
  a.store = { list: [1, 2, 3], m: { k: 'v' } };
  a.store.shared = a.store.m;
  await net.settle();
  b.store.list.push(4);
  await net.settle();

  const late = net.join('late');
  const ready = new Promise((resolve) => late.once('ready', resolve));
  late.sync();
  if (label.startsWith('sync')) {
    // Delivery is synchronous: the document is there when sync() returns.
    assert.ok(late.ready);
    assert.deepEqual(plain(late.store), { list: [1, 2, 3, 4], m: { k: 'v' }, shared: { k: 'v' } });
  }
  await ready;
  await net.settle();
  assert.deepEqual(late.store, { list: [1, 2, 3, 4], m: { k: 'v' }, shared: { k: 'v' } });
  assert.equal(late.store.shared, late.store.m, `${label}: sharing survives`);
  sameSnapshots([a, b, late], label);
  // And it keeps up afterwards.
  late.store.after = true;
  await net.settle();
  assert.equal(a.store.after, true);
  sameSnapshots([a, b, late], label);
});

scenario('s06: set, delete and add keys', async (net, label) => {
  const a = net.join('a');
  const b = net.join('b');
  a.store = { x: 1, y: 2 };
  a.store.x = 10;
  assert.equal(delete a.store.y, true);
  assert.equal(delete a.store.y, true);
  a.store.z = 'new';
  await net.settle();
  assert.deepEqual(b.store, { x: 10, z: 'new' });
  assert.deepEqual(Object.keys(b.store), ['x', 'z']);
  assert.equal('y' in b.store, false);
  sameSnapshots([a, b], label);
});

scenario('s07: two nodes write the same key at once; the higher hostname wins', async (net, label, make) => {
  for (let seed = 1; seed <= (label.startsWith('async') ? 10 : 1); seed++) {
    const n = seed === 1 ? net : make(seed);
    const low = n.join('alpha');
    const high = n.join('bravo');
    low.store = {};
    await n.settle();
    await n.concurrently(() => {
      low.store.k = 'from alpha';
      high.store.k = 'from bravo';
    });
    await n.settle();
    for (const node of [low, high]) assert.equal(node.store.k, 'from bravo', `${label} seed ${seed} on ${node.hostname}`);
    sameSnapshots([low, high], `${label} seed ${seed}`);
    if (n !== net) n.close();
  }
});

scenario('s08: assigning several keys at once arrives whole', async (net, label) => {
  const a = net.join('a');
  const b = net.join('b');
  a.store = {};
  await net.settle();
  const seen = [];
  const rb = b.store;
  rb.on(() => seen.push(Object.keys(rb)));
  let changes = 0;
  b.on('change', () => changes++);
  const sent = countSends(a);

  a.assign(a.store, { p: 1, q: 2, r: 3 });
  assert.equal(sent.n, 1, 'one message');
  await net.settle();
  assert.deepEqual(seen, [['p', 'q', 'r'], ['p', 'q', 'r'], ['p', 'q', 'r']], `${label}: one event per key, all keys there`);
  assert.equal(changes, 3);

  // Object.assign writes key by key; every key arrives.
  Object.assign(a.store, { s: 4, t: { u: 5 } });
  await net.settle();
  assert.deepEqual(b.store, { p: 1, q: 2, r: 3, s: 4, t: { u: 5 } });
  assert.equal(changes, 5);
  sameSnapshots([a, b], label);
});

scenario('s09: push and pop replicate; under a lock, push, pop, reverse and sort too', async (net, label) => {
  const a = net.join('a');
  const b = net.join('b');
  a.store = [1, 2];
  const arr = a.store;
  assert.equal(arr.push(3), 3);
  assert.equal(arr.pop(), 3);
  assert.equal(arr.pop(), 2);
  arr.push('x');
  await net.settle();
  assert.deepEqual(b.store, [1, 'x']);
  assert.equal(b.store.pop(), 'x');
  await net.settle();
  assert.deepEqual(a.store, [1]);

  a.store = [3, 1, 2];
  await net.settle();
  const list = b.store;
  const token = await b.lock(list);
  assert.ok(token > 0, 'a fencing token');
  const events = [];
  a.on('change', (target, prop) => events.push([target === a.store, prop]));
  const sent = countSends(b);
  list.push(5);
  assert.equal(list.pop(), 5);
  list.push(4);
  assert.equal(list.reverse(), list);
  assert.equal(sent.n, 4, 'one message per method');
  await net.settle();
  assert.deepEqual(a.store, [4, 2, 1, 3]);
  assert.equal(list.sort((x, y) => x - y), list);
  await net.settle();
  assert.deepEqual(a.store, [1, 2, 3, 4]);
  assert.deepEqual(events, Array(5).fill([true, undefined]), 'one mass change per method');
  b.release(list);
  await net.settle();
  sameSnapshots([a, b], label);
});

scenario('s10: root_changed fires on both nodes for each root assignment, in order', async (net) => {
  const a = net.join('a');
  const b = net.join('b');
  const logs = [[], []];
  a.on('root_changed', (root) => logs[0].push(plain(root)));
  b.on('root_changed', (root) => logs[1].push(plain(root)));
  a.store = 1;
  await net.settle();
  b.store = { two: 2 };
  await net.settle();
  a.store = [3];
  await net.settle();
  a.store = [3]; // a new array: a new root
  await net.settle();
  const want = [1, { two: 2 }, [3], [3]];
  assert.deepEqual(logs[0], want);
  assert.deepEqual(logs[1], want);
});

scenario('s11: ready fires after sync() on a nested array-of-arrays root', async (net) => {
  const a = net.join('a');
  const doc = [[1, [2, [3, []]]], [], [[4]]];
  a.store = doc;
  await net.settle();
  const late = net.join('late');
  const ready = [];
  late.on('ready', (root) => ready.push(plain(root)));
  late.sync();
  await net.settle();
  assert.deepEqual(ready, [doc]);
  assert.deepEqual(late.store, doc);
  assert.ok(Array.isArray(late.store[0][1][1]));
});

scenario('s12: change events fire exactly once, with the right target and property', async (net, label) => {
  const a = net.join('a');
  const b = net.join('b');
  a.store = { k: 1, other: 1 };
  await net.settle();
  for (const node of [a, b]) {
    const root = node.store;
    const global = [];
    const object = [];
    const prop = [];
    let removed = 0;
    const onGlobal = (target, p) => global.push([target, p]);
    const onObject = (target, p, nv, ov) => object.push([target === root, p, nv, ov]);
    const onProp = (target, p, nv) => prop.push([target === root, p, nv]);
    const gone = () => removed++;
    node.on('change', onGlobal);
    root.on(onObject);
    root.on('k', onProp);
    root.on('k', gone);
    root.off('k', gone);
    root.on(gone);
    root.off(gone);
    node.on('change', gone);
    node.off('change', gone);

    const writer = a.store;
    writer.k = 2;
    writer.k = 2; // no-op: nothing fires
    delete writer.k;
    delete writer.k; // no-op
    writer.other = 5;
    await net.settle();

    const who = `${label} on ${node.hostname}`;
    assert.equal(global.length, 3, who);
    assert.ok(global.every(([target]) => target === root), `${who}: the target is the store's proxy`);
    assert.deepEqual(global.map(([, p]) => p), ['k', 'k', 'other'], who);
    assert.deepEqual(object, [
      [true, 'k', 2, 1],
      [true, 'k', undefined, 2],
      [true, 'other', 5, 1],
    ], who);
    assert.deepEqual(prop, [
      [true, 'k', 2],
      [true, 'k', undefined],
    ], who);
    assert.equal(removed, 0, `${who}: removed listeners never fire`);

    node.off('change', onGlobal);
    root.off(onObject);
    root.off('k', onProp);
    writer.k = 1;
    writer.other = 1;
    await net.settle();
    assert.equal(global.length + object.length + prop.length, 8, `${who}: removed listeners stay removed`);
  }
});

scenario('s13: lock rules', async (net, label) => {
  const a = net.join('a');
  const b = net.join('b');
  a.store = { m: { x: 0 }, l: [1] };
  await net.settle();
  const [ma, la] = [a.store.m, a.store.l];
  const [mb, lb] = [b.store.m, b.store.l];

  assert.throws(() => b.release(mb), { message: 'Object is not locked', code: 'NOT_LOCKED' });

  const tm = await a.lock(ma);
  const tl = await a.lock(la);
  assert.ok(tm > 0 && tl > 0);
  ma.x = 1;
  la.push(2);
  await net.settle();
  assert.equal(mb.x, 1, `${label}: writes under a lock replicate`);
  assert.deepEqual(lb, [1, 2]);

  await assert.rejects(b.request(mb), { message: 'Object is locked', code: 'LOCKED' });
  assert.throws(() => {
    mb.x = 99;
  }, { message: 'Object is not owned by current host', code: 'NOT_OWNER' });
  assert.throws(() => {
    delete mb.x;
  }, { code: 'NOT_OWNER' });
  assert.throws(() => b.release(mb), { message: 'Node does not own this lock', code: 'NOT_OWNER' });
  // Waiting behind a, b's request still fails at once; its lock waits on.
  let bGranted = null;
  b.lock(mb).then((t) => (bGranted = t));
  await net.settle();
  await assert.rejects(b.request(mb), { message: 'Object is locked', code: 'LOCKED' });
  assert.equal(bGranted, null);
  assert.throws(() => lb.push(3), { message: 'Object is locked', code: 'LOCKED' });
  assert.throws(() => lb.sort(), { message: 'Object is locked', code: 'LOCKED' });
  assert.throws(() => {
    lb[0] = 5;
  }, { message: 'Object is not owned by current host', code: 'NOT_OWNER' });
  assert.equal(mb.x, 1, 'refused writes change nothing');
  assert.deepEqual(lb, [1, 2]);

  a.release(ma);
  a.release(la);
  await net.settle();
  assert.ok(bGranted > tm, `${label}: b's lock is granted once a releases`);
  b.release(mb);
  await net.settle();
  mb.x = 2;
  lb.push(3);
  await net.settle();
  assert.equal(ma.x, 2);
  assert.deepEqual(la, [1, 2, 3]);
  sameSnapshots([a, b], label);
});

scenario('s14: two nodes lock at once; the higher hostname first, then the other', async (net, label, make) => {
  for (let seed = 1; seed <= (label.startsWith('async') ? 10 : 1); seed++) {
    const n = seed === 1 ? net : make(seed);
    const low = n.join('alpha');
    const high = n.join('bravo');
    low.store = { log: [] };
    await n.settle();
    const logLow = low.store.log;
    const logHigh = high.store.log;
    const order = [];
    let pl;
    let ph;
    await n.concurrently(() => {
      pl = low.lock(logLow).then((token) => order.push(['alpha', token]));
      ph = high.lock(logHigh).then((token) => order.push(['bravo', token]));
    });
    await ph;
    await n.settle();
    assert.deepEqual(order.map(([who]) => who), ['bravo'], `${label} seed ${seed}: bravo, the higher hostname, goes first`);
    logHigh.push('bravo');
    high.release(logHigh);
    await pl;
    logLow.push('alpha');
    low.release(logLow);
    await n.settle();
    for (const node of [low, high]) assert.deepEqual(node.store, { log: ['bravo', 'alpha'] }, `${label} seed ${seed}`);
    assert.deepEqual(order.map(([who]) => who), ['bravo', 'alpha']);
    assert.ok(order[1][1] > order[0][1], `${label} seed ${seed}: fencing tokens increase`);
    sameSnapshots([low, high], `${label} seed ${seed}`);
    if (n !== net) n.close();
  }
});
