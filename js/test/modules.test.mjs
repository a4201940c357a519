// The entry points: require('facsimile') and import Facsimile from
// 'facsimile' give the same class, whose nodes mirror one document; the
// browser build (its own WebAssembly instance) speaks the same messages.

import test from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import Facsimile, { Facsimile as Named } from 'facsimile';

const require = createRequire(import.meta.url);

test('CommonJS and ES module entry points load the same class', () => {
  const fromRequire = require('facsimile');
  assert.equal(typeof Facsimile, 'function');
  assert.equal(Facsimile, Named);
  assert.equal(fromRequire, Facsimile);
  assert.equal(fromRequire.default, Facsimile);
  assert.equal(fromRequire.Facsimile, Facsimile);
  assert.equal(Facsimile.platform, 'node');
});

test('nodes made through either entry point mirror one document', () => {
  const Cjs = require('facsimile');
  const a = new Cjs('a');
  const b = new Facsimile('b');
  a.send = (...m) => b.receive(...m);
  b.send = (...m) => a.receive(...m);
  a.store = { list: [1] };
  b.store.list.push(2);
  assert.deepEqual(a.store, { list: [1, 2] });
  assert.ok(b.store instanceof Object);
});

test('the browser build loads and interoperates with the Node.js build', async () => {
  // Node's fetch does not read file: URLs; the browser build fetches its
  // WebAssembly next to itself.
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (url) => {
    const u = new URL(url);
    if (u.protocol !== 'file:') return realFetch(url);
    return new Response(await readFile(u), { headers: { 'content-type': 'application/wasm' } });
  };
  let Browser;
  try {
    ({ default: Browser } = await import('facsimile/browser'));
  } finally {
    globalThis.fetch = realFetch;
  }
  assert.equal(Browser.platform, 'browser');
  assert.notEqual(Browser, Facsimile, 'its own instance');
  for (const binary of [false, true]) {
    const web = new Browser('web', { binary });
    const node = new Facsimile('node', { binary });
    web.send = (...m) => node.receive(...structuredClone(m));
    node.send = (...m) => web.receive(...structuredClone(m));
    node.store = { shared: [1, { two: 2 }] };
    web.store.shared.push('three');
    web.store.shared.sort();
    assert.deepEqual(node.store, { shared: [1, { two: 2 }, 'three'].sort() });
    assert.deepEqual(Buffer.from(web.snapshot()), Buffer.from(node.snapshot()));
    // A proxy of one build's store is refused by the other's node.
    assert.throws(() => {
      web.store.x = node.store.shared;
    }, { code: 'FOREIGN_OBJECT' });
  }
});
