'use strict';
// The package's hooks for the relay's inspector, on nodes in this process:
// the tree as rows (a cycle and a shared object as links to their one
// place), the places of objects, the lock table with tokens as known to a
// node that only watches, and when each peer was last heard.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Facsimile } = require('./support/net');

function network(names) {
  const nodes = names.map((h) => new Facsimile(h, { manualTime: true, failureDetection: { heartbeat: 100, timeout: 100000 } }));
  for (const n of nodes) {
    n.send = (m, to) => {
      for (const o of nodes) if (o !== n) o.receive(m, to);
    };
  }
  return nodes;
}

test('the tree as rows: each object at its first place, links elsewhere', () => {
  const [a] = network(['a']);
  a.store = { x: { y: { z: 1, s: 'text' } }, list: [1, 2], empty: {} };
  a.store.x.y.back = a.store.x;
  a.store.other = a.store.list;
  const all = a._tree([], 3, [a.store.x.y, a.store.list]);
  const byPath = Object.fromEntries(all.rows.map(([depth, label, path, type, text, extra]) => [path, { depth, label, type, text, extra }]));
  assert.equal(all.objects, 5);
  assert.deepEqual(byPath[''], { depth: 0, label: null, type: 'map', text: '4', extra: true });
  assert.deepEqual(byPath['/x/y/back'], { depth: 3, label: 'back', type: 'link', text: '', extra: '/x' });
  assert.deepEqual(byPath['/other'], { depth: 1, label: 'other', type: 'link', text: '', extra: '/list' });
  assert.deepEqual(byPath['/x/y/s'], { depth: 3, label: 's', type: 'str', text: '"text"', extra: null });
  assert.deepEqual(byPath['/list/1'], { depth: 2, label: 1, type: 'num', text: '2', extra: null });
  assert.deepEqual(all.places, ['/x/y', '/list']);
  // Depth first, keys in order; only what is open is listed.
  const closed = a._tree(['', '/list'], 0, []);
  assert.deepEqual(closed.rows.map((r) => r[2]), ['', '/empty', '/list', '/list/0', '/list/1', '/other', '/x']);
  assert.equal(closed.rows.find((r) => r[2] === '/x')[5], false);
  // An object the root no longer reaches has no place.
  const gone = a.store.x.y;
  delete a.store.x.y;
  assert.deepEqual(a._placesOf([gone, a.store.x]), [null, '/x']);
});

test('the lock table and the peers, as a node that only watches knows them', async () => {
  const [holder, waiter, watcher] = network(['holder', 'waiter', 'watcher']);
  holder.store = { jobs: {} };
  waiter.sync();
  watcher.sync();
  const token = await holder.lock(holder.store.jobs);
  const waiting = waiter.lock(waiter.store.jobs);
  const [entry, ...more] = watcher._locks();
  assert.deepEqual(more, []);
  assert.equal(entry.target, watcher.store.jobs);
  assert.deepEqual(entry.queue.map((r) => [r.hostname, r.token]), [['holder', token], ['waiter', null]]);
  assert.equal(entry.lastToken, token);
  holder.release(holder.store.jobs);
  assert.ok((await waiting) > token);
  assert.deepEqual(watcher._locks().map((l) => l.queue.map((r) => r.hostname)), [['waiter']]);

  for (const n of [holder, waiter, watcher]) n._advance(100);
  const peers = watcher._peers();
  assert.deepEqual(peers.map((p) => p.hostname), ['holder', 'waiter']);
  for (const p of peers) {
    assert.equal(p.incarnation, (p.hostname === 'holder' ? holder : waiter).incarnation);
    assert.equal(typeof p.lastHeard, 'number');
    assert.equal(p.silentFor, 0);
    assert.equal(p.held, 0);
  }
  // Each peer's stream position: one more message of the holder's, applied.
  const applied = () => watcher._peers().find((p) => p.hostname === 'holder').applied;
  const before = applied();
  assert.ok(before > 0);
  holder.store.n = 1;
  assert.equal(applied(), before + 1);
});
