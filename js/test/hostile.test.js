'use strict';
// Hostile input to receive(): wrong types, truncated, garbage, wrong
// version byte, huge lengths, and a fuzz loop over mutated real messages,
// JSON and binary. A refused message throws an Error with a `code` and
// changes nothing; no panic of the engine ever escapes (a WebAssembly trap
// would poison every node of the process); the node keeps working.

const test = require('node:test');
const assert = require('node:assert/strict');
const { SyncNet, mulberry32, Facsimile } = require('./support/net');

const hex = (bytes) => Buffer.from(bytes).toString('hex');

// A document written by two nodes, every message recorded as sent.
function recorded(binary) {
  const net = new SyncNet({ wire: 'none', binary });
  const log = [];
  const a = net.join('alpha');
  const b = net.join('bravo');
  for (const n of [a, b]) {
    const send = n.send;
    n.send = (m, to) => {
      log.push([m, to]);
      send(m, to);
    };
  }
  a.store = { text: 'héllo', n: 1, list: [1, 2, { deep: [true, null] }], bytes: new Uint8Array([0, 255]) };
  a.store.self = a.store;
  b.store.list.push(4.5, 'x', -7);
  b.store.list.sort();
  b.store.list.reverse();
  a.store.list.fill(0, 1, 3);
  a.store.list.copyWithin(0, 2);
  delete a.store.n;
  a.assign(a.store, { p: 1, q: [2] });
  b.lock(b.store.list);
  b.store.list.push(9);
  b.release(b.store.list);
  const late = net.join('late');
  late.sync();
  late.store.big = 2n ** 60n;
  return { net, log, nodes: [a, b, late] };
}

// A node that follows the document and is then fed hostile input.
function victim(binary) {
  const { net, log, nodes } = recorded(binary);
  const v = net.join('victim');
  v.sync();
  assert.deepEqual(v.snapshot(), nodes[0].snapshot());
  return { v, log, net, nodes };
}

function refusedUnchanged(v, message, to, what) {
  const before = hex(v.snapshot());
  let error = null;
  try {
    v.receive(message, to);
  } catch (e) {
    error = e;
  }
  assert.ok(error !== null, `${what}: refused`);
  assert.ok(!(error instanceof WebAssembly.RuntimeError), `${what}: no trap (${error})`);
  assert.equal(typeof error.code, 'string', `${what}: a code (${error})`);
  assert.equal(hex(v.snapshot()), before, `${what}: nothing changed`);
  return error;
}

for (const binary of [false, true]) {
  const kind = binary ? 'binary' : 'JSON';

  test(`${kind}: wrong types, empty, garbage, truncated, wrong version, huge lengths`, () => {
    const { v, log } = victim(binary);
    for (const [what, m] of [
      ['a number', 42],
      ['an object', { from: 'x', body: {} }],
      ['an array', [1, 2, 3]],
      ['null', null],
      ['undefined', undefined],
      ['a boolean', true],
      ['a bigint', 10n],
      ['a symbol', Symbol('m')],
      ['a function', () => '{}'],
      ['a Uint16Array', new Uint16Array([1, 2])],
      ['an empty string', ''],
      ['empty bytes', new Uint8Array(0)],
      ['garbage text', 'not a message at all'],
      ['garbage bytes', new Uint8Array([1, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x42])],
      ['JSON of the wrong shape', '{"from":"00000000","body":{"Nope":{}}}'],
      ['JSON with a huge number', '{"from":"00000000","body":{"Hello":{"seq":1e400,"hostname":"h"}}}'],
      ['deeply nested JSON', `{"from":${'['.repeat(100000)}${']'.repeat(100000)}}`],
      ['a hostname past the limit', `{"from":"0000000a","body":{"Hello":{"seq":1,"hostname":"${'h'.repeat(2000)}"}}}`],
    ]) {
      const e = refusedUnchanged(v, m, undefined, what);
      assert.ok(e.message.length > 0);
    }
    assert.equal(refusedUnchanged(v, 'x', 'not a number', 'a recipient that is no number').code, 'MALFORMED');

    for (const [m] of log.slice(0, 40)) {
      const bytes = typeof m === 'string' ? Buffer.from(m) : m;
      // Every proper prefix of a real message.
      for (let cut = 1; cut < bytes.length; cut += Math.max(1, Math.floor(bytes.length / 16))) {
        const part = typeof m === 'string' ? m.slice(0, cut) : m.slice(0, cut);
        refusedUnchanged(v, part, undefined, `a message cut at ${cut}`);
      }
      if (typeof m === 'string') {
        // JSON names its version first, as "v".
        assert.ok(m.startsWith('{"v":1,'), m.slice(0, 20));
        for (const version of [0, 2, 255, 256]) {
          const e = refusedUnchanged(v, `{"v":${version},${m.slice(7)}`, undefined, `version ${version}`);
          assert.equal(e.code, 'UNSUPPORTED_VERSION');
        }
      } else {
        // Wrong version bytes ('{' starts JSON).
        for (const version of [0, 2, 0x7a, 0x7c, 0xff]) {
          const wrong = Uint8Array.from(m);
          wrong[0] = version;
          const e = refusedUnchanged(v, wrong, undefined, `version ${version}`);
          if (version !== 0 || m[0] !== 0) assert.ok(['UNSUPPORTED_VERSION', 'MALFORMED'].includes(e.code), e.code);
        }
        // A length claiming four billion bytes, at every place.
        for (let at = 1; at < m.length; at++) {
          const huge = new Uint8Array(m.length + 5);
          huge.set(m.subarray(0, at));
          huge.set([0xff, 0xff, 0xff, 0xff, 0x0f], at);
          huge.set(m.subarray(at), at + 5);
          let error = null;
          const before = hex(v.snapshot());
          try {
            v.receive(huge);
          } catch (e) {
            error = e;
          }
          if (error !== null) {
            assert.equal(typeof error.code, 'string', String(error));
            assert.equal(hex(v.snapshot()), before);
          }
        }
      }
    }
    // Still working.
    v.store.after = 'fine';
    assert.equal(v.store.after, 'fine');
  });

  test(`${kind}: fuzzing mutated real messages never traps, refusals change nothing`, () => {
    const { v, log, net, nodes } = victim(binary);
    const seed = Number(process.env.FUZZ_SEED || 20261204 + (binary ? 1 : 0));
    const rng = mulberry32(seed);
    const pick = (n) => Math.floor(rng() * n);
    const messages = log.map(([m]) => (typeof m === 'string' ? Buffer.from(m) : Buffer.from(m)));
    const interesting = [0, 1, 0x7f, 0x80, 0xff, 0x7b, 0x22, 0x30, 0x39];
    let refused = 0;
    let accepted = 0;
    const rounds = Number(process.env.FUZZ_ROUNDS || 15000);
    for (let round = 0; round < rounds; round++) {
      let bytes = Buffer.from(messages[pick(messages.length)]);
      const mutations = 1 + pick(4);
      for (let k = 0; k < mutations; k++) {
        const at = pick(bytes.length + 1);
        switch (pick(7)) {
          case 0: // flip a bit
            if (bytes.length > 0) bytes[at % bytes.length] ^= 1 << pick(8);
            break;
          case 1: // an interesting byte
            if (bytes.length > 0) bytes[at % bytes.length] = interesting[pick(interesting.length)];
            break;
          case 2: // delete a run
            bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + pick(8))]);
            break;
          case 3: // duplicate a run
            bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at, at + 1 + pick(16)), bytes.subarray(at)]);
            break;
          case 4: // random bytes
            bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(Array.from({ length: 1 + pick(6) }, () => pick(256))), bytes.subarray(at)]);
            break;
          case 5: // truncate
            bytes = bytes.subarray(0, at);
            break;
          default: {
            // splice with another message
            const other = messages[pick(messages.length)];
            bytes = Buffer.concat([bytes.subarray(0, at), other.subarray(pick(other.length + 1))]);
          }
        }
      }
      // JSON messages travel as strings (invalid UTF-8 becomes U+FFFD).
      const message = binary ? new Uint8Array(bytes) : bytes.toString('utf8');
      const before = hex(v.snapshot());
      try {
        v.receive(message);
        accepted++;
      } catch (e) {
        refused++;
        assert.ok(!(e instanceof WebAssembly.RuntimeError), `seed ${seed} round ${round}: a trap: ${e}`);
        assert.equal(typeof e.code, 'string', `seed ${seed} round ${round}: ${e}`);
        assert.equal(hex(v.snapshot()), before, `seed ${seed} round ${round}: a refusal changed nothing`);
      }
      if (round % 500 === 0) v._advance(); // timers run on whatever was accepted
    }
    assert.ok(refused > rounds / 2, `most mutations are refused (${refused} of ${rounds})`);
    assert.ok(accepted + refused === rounds);

    // The victim still works, and so do the others. An accepted forgery
    // may have made it start over (an eviction in its name, a broken
    // stream): it syncs again, as a node does when told so.
    if (!v.ready) v.sync();
    assert.ok(v.ready, `seed ${seed}: the victim is ready again`);
    v.store = { fresh: [1] };
    v.store.fresh.push(2);
    assert.deepEqual(v.store, { fresh: [1, 2] });
    nodes[0].store = { x: 1 };
    assert.deepEqual(nodes[1].store, { x: 1 });
    const c = new Facsimile('c');
    const d = new Facsimile('d');
    c.send = (...m) => d.receive(...m);
    d.send = (...m) => c.receive(...m);
    c.store = [1];
    d.store.push(2);
    assert.deepEqual(c.store, [1, 2]);
    net.close();
  });
}

// A write is checked against the message limit before it changes anything:
// a message too large for the peers (or the relay) is never made.
for (const binary of [false, true]) {
  const kind = binary ? 'binary' : 'JSON';
  test(`${kind}: a write larger than maxMessage throws TOO_LARGE and changes nothing`, () => {
    const net = new SyncNet({ wire: 'none', binary });
    const a = net.join('a', { maxMessage: 4096 });
    const b = net.join('b', { maxMessage: 4096 });
    a.store = { n: 0, list: [] };
    const sent = net.sent;
    const tooLarge = (e) => e.code === 'TOO_LARGE' && /4096 bytes/.test(e.message);
    assert.throws(() => {
      a.store.s = 'x'.repeat(5000);
    }, tooLarge);
    assert.throws(() => a.store.list.push({ deep: ['y'.repeat(5000)] }), tooLarge);
    assert.throws(() => a.assign(a.store, { p: 'z'.repeat(2500), q: 'z'.repeat(2500) }), tooLarge);
    assert.equal(net.sent, sent, 'nothing was sent');
    assert.deepEqual(a.store, { n: 0, list: [] });
    // What fits goes through, and the node goes on.
    a.store.s = 'x'.repeat(3000);
    a.store.list.push(1);
    assert.deepEqual(b.store, { n: 0, list: [1], s: 'x'.repeat(3000) });
    assert.deepEqual(b.snapshot(), a.snapshot());
    assert.throws(() => new Facsimile('c', { maxMessage: -1 }), (e) => e.code === 'BAD_OPTION');
    net.close();
  });
}

// Ids and map keys come from peers, so the engine's hash tables are keyed
// per run: WebAssembly's standard library has no random source of its own
// (its keys would repeat in every run, and a peer could pick colliding
// ids once for all), so the module seeds them from crypto.getRandomValues.
test('each run of the module draws its own hash keys', () => {
  const { execFileSync } = require('node:child_process');
  const path = require('node:path');
  const module = path.join(__dirname, '..', 'dist', 'node', 'facsimile_wasm.js');
  const script = `process.stdout.write(String(require(${JSON.stringify(module)}).hash_keys_fingerprint()))`;
  const runs = new Set();
  for (let i = 0; i < 4; i++) {
    runs.add(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }));
  }
  assert.equal(runs.size, 4, `fingerprints ${[...runs]}`);
});
