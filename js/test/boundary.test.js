'use strict';
// What crosses into the engine: values and messages are read by the
// package, outside the engine, from their internal slots, so that nothing
// of the program's runs inside an engine call (a getter that throws there
// would leave the engine borrowed for good) and nothing it says about
// itself (a `length` that lies) decides what the engine copies.

const test = require('node:test');
const assert = require('node:assert/strict');
const { SyncNet, Facsimile } = require('./support/net');

function pair(options) {
  const net = new SyncNet({ wire: 'none', ...options });
  return [net.join('a'), net.join('b'), net];
}

const hex = (bytes) => Buffer.from(bytes).toString('hex');

// Both nodes still write, and agree.
function working(a, b) {
  a.store.after = 1;
  b.store.after = 2;
  assert.equal(a.store.after, 2);
  assert.equal(hex(a.snapshot()), hex(b.snapshot()));
}

test('bytes are copied from their internal slots: a length getter of the program\'s never runs', () => {
  const [a, b] = pair();
  a.store = { x: 1 };
  let calls = 0;
  class Throws extends Uint8Array {
    get length() {
      calls++;
      throw new Error('boom');
    }
  }
  class Writes extends Uint8Array {
    get length() {
      calls++;
      a.store.q = 1;
      return super.length;
    }
  }
  const own = new Uint8Array([7, 8]);
  Object.defineProperty(own, 'length', { get: () => calls++ });
  a.store.thrown = new Throws([1, 2, 3]);
  a.store.nested = { list: [new Writes([4, 5])] };
  a.store.own = own;
  a.store.buffer = Buffer.from([9]);
  assert.equal(calls, 0);
  assert.deepEqual([...b.store.thrown], [1, 2, 3]);
  assert.deepEqual([...b.store.nested.list[0]], [4, 5]);
  assert.deepEqual([...b.store.own], [7, 8]);
  assert.deepEqual([...b.store.buffer], [9]);
  working(a, b);
});

test('what passes for a Uint8Array without being one (a Proxy around one) is refused, outside the engine', () => {
  const [a, b] = pair();
  a.store = { x: 1 };
  const before = hex(a.snapshot());
  for (const [what, v] of [
    ['a Proxy', new Proxy(new Uint8Array([1, 2, 3]), {})],
    ['an object of its prototype', Object.create(Uint8Array.prototype)],
  ]) {
    assert.throws(() => {
      a.store.y = v;
    }, { name: 'TypeError', code: 'BAD_VALUE' }, what);
    assert.throws(() => {
      a.store = { nested: [v] };
    }, { name: 'TypeError', code: 'BAD_VALUE' }, `${what}, nested`);
  }
  // A trap that throws throws in the package, before the engine is called.
  const trapped = new Proxy(new Uint8Array(1), {
    get() {
      throw new Error('trap');
    },
  });
  assert.throws(() => {
    a.store.y = trapped;
  }, /trap/);
  // Detached: nothing to copy.
  const detached = new Uint8Array(4);
  structuredClone(detached.buffer, { transfer: [detached.buffer] });
  assert.throws(() => {
    a.store.y = detached;
  }, { name: 'TypeError', code: 'BAD_VALUE' }, 'detached');
  assert.equal(hex(a.snapshot()), before, 'nothing changed');
  working(a, b);
});

test('an engine call that fails other than by a refusal closes the node, the failure as its cause', async () => {
  const [a, b, net] = pair();
  a.store = { x: 1, m: {} };
  const c = net.join('c');
  c.sync();
  await b.lock(b.store.m);
  let waiting = null;
  a.lock(a.store.m).catch((e) => {
    waiting = e;
  });
  const m = a.store.m;
  // An engine that throws what is none of its refusals: here, freed under
  // the node (in the field: a trap, an exception that crossed its frames).
  a._engine.free();
  const closed = (e) => e.code === 'CLOSED' && e.cause instanceof Error && /engine failed/.test(e.message);
  assert.throws(() => {
    a.store.y = 2;
  }, closed, 'the write that met the failure');
  await new Promise(setImmediate);
  assert.ok(waiting !== null && closed(waiting), 'a lock promise still waiting rejects');
  for (const [what, f] of [
    ['a write', () => (m.z = 1)],
    ['a read', () => a.store.x],
    ['a read through a proxy', () => m.z],
    ['sync', () => a.sync()],
    ['snapshot', () => a.snapshot()],
  ]) {
    assert.throws(f, closed, what);
  }
  await assert.rejects(a.lock(m), closed);
  assert.doesNotThrow(() => a.close());
  // The others go on; a ignores their messages, as a closed node does.
  b.store.x = 3;
  assert.equal(c.store.x, 3);
});

test('bytes whose length reads differently each time are stored as they are, and nothing else', () => {
  // Memory another node freed, which held data of its own.
  const other = new Facsimile('other');
  other.send = () => {};
  other.store = { secret: 'S'.repeat(5000) };
  other.store = null;
  const [a, b] = pair();
  a.store = {};
  let reads = 0;
  class Shifting extends Uint8Array {
    get length() {
      return reads++ % 3 === 0 ? 4000 : super.length;
    }
  }
  for (let i = 0; i < 10; i++) {
    a.store[`y${i}`] = new Shifting([1, 2, 3]);
    assert.deepEqual([...b.store[`y${i}`]], [1, 2, 3]);
  }
  working(a, b);
});

test('receive reads a message\'s bytes from the array itself, whatever its length says', () => {
  const a = new Facsimile('a', { binary: true });
  const sent = [];
  a.send = (m) => sent.push(m);
  a.store = { x: 'y'.repeat(100) };
  a.store.n = 1;
  let calls = 0;
  class Short extends Uint8Array {
    get length() {
      calls++;
      return 1;
    }
  }
  class Long extends Uint8Array {
    get length() {
      calls++;
      return 1 << 20;
    }
  }
  const b = new Facsimile('b', { binary: true });
  b.send = () => {};
  for (const m of sent.slice(0, -1)) b.receive(Short.from(m));
  const own = Uint8Array.from(sent.at(-1));
  Object.defineProperty(own, 'length', { value: 3 });
  b.receive(own);
  assert.equal(calls, 0);
  assert.equal(hex(b.snapshot()), hex(a.snapshot()));
  // A message whose bytes are garbage, whatever it says of its length, is
  // refused and changes nothing.
  const before = hex(b.snapshot());
  for (const m of [Short.from(new Uint8Array(4096).fill(0x41)), Long.from([1, 2, 3])]) {
    assert.throws(() => b.receive(m), (e) => typeof e.code === 'string' && !(e instanceof WebAssembly.RuntimeError));
  }
  assert.throws(() => b.receive(new Proxy(Uint8Array.from(sent[0]), {})), { code: 'MALFORMED' });
  assert.equal(hex(b.snapshot()), before);
  // The module's memory is whole: other nodes of it still work.
  const [c, d] = pair();
  c.store = { list: [] };
  for (let i = 0; i < 50; i++) c.store.list.push({ i });
  assert.equal(d.store.list.length, 50);
});

test('the inspector\'s tree takes its paths as any list, read outside the engine', () => {
  const [a] = pair();
  a.store = { x: { y: 1 } };
  const lying = new Proxy(['', '/x'], {
    get(t, k, r) {
      return k === 'length' ? 1 : Reflect.get(t, k, r);
    },
  });
  assert.deepEqual(a._tree(lying, 0, []), a._tree([''], 0, []));
  assert.deepEqual(a._tree(['', 7], 0, []), a._tree(['', '7'], 0, []), 'paths as strings');
  a.store.after = 1;
  assert.equal(a.store.after, 1);
});

test('a JSON node\'s maxMessage is at most the longest string JavaScript makes', () => {
  // A larger one let a write make a message `send` could not be handed
  // (the string made inside the engine call, which threw there).
  const MAX = 0x1fffffe8;
  assert.throws(() => new Facsimile('a', { maxMessage: MAX + 1 }), { name: 'RangeError', code: 'BAD_OPTION' });
  assert.throws(() => new Facsimile('a', { maxMessage: 2 ** 32 }), { name: 'RangeError', code: 'BAD_OPTION' });
  for (const options of [{ maxMessage: MAX }, { binary: true, maxMessage: 2 ** 32 }]) {
    const net = new SyncNet({ wire: 'none' });
    const [a, b] = [net.join('a', options), net.join('b', options)];
    a.store = { x: 'é' };
    assert.equal(b.store.x, 'é');
  }
});

test('what cannot fit in a message is refused before it is copied into the engine\'s memory', () => {
  // The module's memory never shrinks: a value or a message as large as
  // all of it, copied in to be refused there, would grow it for good.
  const n = Facsimile._memoryBytes();
  const net = new SyncNet({ wire: 'none' });
  const [a, b] = [net.join('a', { maxMessage: n }), net.join('b', { maxMessage: n })];
  a.store = { x: 1, list: [] };
  const before = hex(a.snapshot());
  const grown = Facsimile._memoryBytes();
  const long = 'é'.repeat(n); // n UTF-16 code units, 2n bytes of UTF-8
  const tooLarge = { code: 'TOO_LARGE' };
  for (const [what, write] of [
    ['a string', () => (a.store.x = long)],
    ['a key', () => (a.store[long] = 1)],
    ['bytes', () => (a.store.x = new Uint8Array(n + 1))],
    ['plain data whose strings add up', () => (a.store.x = { p: 'x'.repeat(0.6 * n), q: ['x'.repeat(0.6 * n)] })],
    ['plain data whose keys add up', () => (a.store.x = { ['p'.repeat(0.6 * n)]: 1, ['q'.repeat(0.6 * n)]: 2 })],
    ['a push', () => a.store.list.push(long)],
    ['a push of several', () => a.store.list.push(1, long)],
    ['an element', () => (a.store.list[0] = long)],
    ['assign', () => a.assign(a.store, { [long]: 1 })],
    ['a delete', () => delete a.store[long]],
  ]) {
    assert.throws(write, tooLarge, what);
  }
  assert.equal(a.store[long], undefined, 'a key no message can hold is absent');
  assert.equal(long in a.store, false);
  assert.equal(Object.getOwnPropertyDescriptor(a.store, long), undefined);
  assert.throws(() => b.receive(`{${' '.repeat(n)}}`), tooLarge, 'a JSON message');
  assert.throws(() => b.receive(new Uint8Array(n + 1)), tooLarge, 'a binary message');
  assert.equal(Facsimile._memoryBytes(), grown, 'the module\'s memory did not grow');
  assert.equal(hex(a.snapshot()), before, 'nothing changed');
  working(a, b);
});

test('evict takes an incarnation from 0 to 2^32 - 1, never one wrapped into that range', () => {
  const [a, b] = pair();
  a.store = { x: 1 };
  const old = b.incarnation;
  // b starts over as a new incarnation once evicted.
  const member = () => a._peers().some((p) => p.hostname === 'b' && p.incarnation === old);
  for (const bad of [old + 2 ** 32, old - 2 ** 32, -1, 2 ** 32, 2 ** 53, 0.5]) {
    assert.throws(() => a.evict('b', bad), { name: 'TypeError', code: 'BAD_ARGUMENT' }, String(bad));
  }
  assert.ok(member(), 'b is still a member');
  assert.equal(a.evict('x'.repeat(5000)), 0, 'a hostname longer than any');
  assert.equal(a.evict('b', old), 1);
  assert.ok(!member());
});

test('the inspector\'s tree takes its open depth as a count, clamped, never wrapped', () => {
  const [a] = pair();
  a.store = { x: { y: { z: 1 } } };
  assert.deepEqual(a._tree([], -1, []), a._tree([], 0, []));
  assert.deepEqual(a._tree([], 2 ** 32, []), a._tree([], 10, []));
  assert.deepEqual(a._tree([], Infinity, []), a._tree([], 10, []));
});

test('strings that are not well-formed UTF-16 are refused, keys and values alike: none is stored as another', () => {
  // UTF-8 has no form for a lone surrogate (half of a UTF-16 pair): stored,
  // '\uD800' and '\uDC00' both became U+FFFD, one key.
  const [a, b] = pair();
  a.store = { x: 1 };
  const before = hex(a.snapshot());
  const badKey = { name: 'TypeError', code: 'BAD_KEY' };
  const badValue = { name: 'TypeError', code: 'BAD_VALUE' };
  for (const s of ['\uD800', '\uDC00', 'a\uD800b', '\uDC00\uD800', 'x\uD83D']) {
    assert.throws(() => (a.store[s] = 1), badKey);
    assert.throws(() => Object.defineProperty(a.store, s, { value: 1, writable: true, enumerable: true, configurable: true }), badKey);
    assert.throws(() => a.assign(a.store, { [s]: 1 }), badKey);
    assert.throws(() => delete a.store[s], badKey);
    assert.throws(() => (a.store.x = { nested: { [s]: 1 } }), badKey);
    assert.throws(() => (a.store.x = s), badValue);
    assert.throws(() => (a.store.x = ['ok', s]), badValue);
    assert.throws(() => (a.store.x = new String(s)), badValue);
    assert.throws(() => (a.store.x = { toJSON: () => s }), badValue);
    assert.throws(() => new Facsimile(s), { name: 'RangeError', code: 'BAD_HOSTNAME' });
    assert.equal(a.evict(s), 0);
  }
  assert.equal(hex(a.snapshot()), before, 'nothing changed');
  // Nor is such a key read as the one it would have become.
  a.store['\uFFFD'] = 'replacement';
  assert.equal(a.store['\uD800'], undefined);
  assert.equal('\uD800' in a.store, false);
  assert.equal(Object.getOwnPropertyDescriptor(a.store, '\uD800'), undefined);
  // Pairs are well-formed.
  a.store['\uD834\uDD1E'] = 'a\uD834\uDD1E';
  assert.equal(b.store['\uD834\uDD1E'], 'a\uD834\uDD1E');
  working(a, b);
});

test('a written value is read by the engine from its own properties: getters on Object.prototype never run inside it', () => {
  const [a, b] = pair();
  a.store = { m: {} };
  const seen = new Set();
  const added = ['r', 'm', 'a'].filter((k) => !(k in Object.prototype));
  for (const k of added) {
    Object.defineProperty(Object.prototype, k, {
      configurable: true,
      get() {
        seen.add(k);
        throw new Error(`${k} read from Object.prototype`);
      },
    });
  }
  try {
    a.store.m.x = { list: [1, [2, { y: 3 }]], n: null, ref: a.store.m };
    a.store.m.y = [{}, []];
  } finally {
    for (const k of added) delete Object.prototype[k];
  }
  assert.deepEqual([...seen], []);
  assert.deepEqual(b.store.m.x.list, [1, [2, { y: 3 }]]);
  assert.deepEqual(b.store.m.y, [{}, []]);
  // A value put there is not read as a reference to an object.
  if (!('r' in Object.prototype)) {
    Object.prototype.r = 1;
    try {
      a.store.m.z = { k: [1] };
    } finally {
      delete Object.prototype.r;
    }
    assert.deepEqual(b.store.m.z, { k: [1] });
  }
  working(a, b);
});

// A JSON message too long for a JavaScript string (a sync answer for a
// document of more than 512 MiB) is handed to `send` as its UTF-8 bytes,
// which every node's `receive` takes. A network that hands every JSON
// message over that way, in turn as a Uint8Array, a Buffer and an
// ArrayBuffer.
class BytesNet extends SyncNet {
  constructor() {
    super({ wire: 'none' });
    this.asBytes = 0;
    this.answers = 0; // of them, meant for one node (sync answers)
  }

  deliver(source, [message, to]) {
    const forms = [(b) => b, (b) => Buffer.from(b), (b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)];
    for (const target of this.nodes) {
      if (target === source) continue;
      let m = message;
      if (typeof message === 'string') {
        m = forms[this.asBytes++ % forms.length](new TextEncoder().encode(message));
        if (to !== undefined) this.answers++;
      }
      target.receive(m, to);
    }
  }
}

test('a JSON message handed over as its UTF-8 bytes is applied as its string is, by JSON and binary nodes alike', async () => {
  const net = new BytesNet();
  const a = net.join('a');
  const b = net.join('b');
  const c = net.join('c', { binary: true });
  const doc = {
    text: 'héllo wörld 🎉 "quoted" \\ back\nslash \u0001 \u2028 \u{10FFFF}',
    keys: { 'clé 🔑': 'valeur', '': 'the empty key', '{"v":1}': 'a key that reads as a message' },
    numbers: [0, -0, 1.5, -(2 ** 53) + 1, 2 ** 53 + 2, NaN, Infinity, -Infinity, 1e300, 5e-324],
    big: 2n ** 60n,
    negative: -(2n ** 63n),
    bytes: new Uint8Array([0, 0x7b, 0xc3, 0xff]),
    flags: [true, false, null],
    nested: { list: [{ deep: [[]] }] },
  };
  a.store = doc;
  a.store.alias = a.store.nested;
  a.store.self = a.store;
  b.store.flags.splice(1, 1, 'ë');
  c.store.keys['ü'] = 'from the binary node';
  const expected = {
    ...doc,
    flags: [true, 'ë', null],
    keys: { ...doc.keys, ü: 'from the binary node' },
  };
  for (const n of [a, b, c]) {
    const s = n.store;
    for (const k of Object.keys(doc)) {
      if (k === 'flags' || k === 'keys') continue;
      assert.deepStrictEqual(s[k], doc[k], `${n.hostname}: ${k}`);
    }
    assert.deepStrictEqual(s.flags, expected.flags, `${n.hostname}: flags`);
    assert.deepStrictEqual(s.keys, expected.keys, `${n.hostname}: keys`);
    assert.ok(Object.is(s.numbers[1], -0), `${n.hostname}: -0`);
    assert.equal(s.alias, s.nested, `${n.hostname}: a shared reference`);
    assert.equal(s.self, s, `${n.hostname}: a cycle`);
  }
  // Locks, and a late joiner whose sync answer comes as bytes.
  const token = await a.lock(a.store.nested);
  assert.throws(() => (c.store.nested.x = 1), { code: 'NOT_OWNER' });
  await assert.rejects(b.request(b.store.nested), { code: 'LOCKED' });
  const d = net.join('d');
  d.sync();
  assert.ok(d.ready);
  assert.deepStrictEqual(d.store.keys, expected.keys);
  assert.equal(d.store.text, doc.text);
  assert.equal(d.store.self, d.store);
  a.release(a.store.nested);
  assert.ok((await d.lock(d.store.nested)) > token);
  d.store.nested.x = 'ß';
  assert.equal(c.store.nested.x, 'ß');
  assert.ok(net.answers > 0, 'a sync answer went over as bytes');
  assert.ok(net.asBytes > 20, `${net.asBytes} JSON messages went over as bytes`);
  for (const n of [b, c, d]) assert.equal(hex(n.snapshot()), hex(a.snapshot()), n.hostname);
});

test('a JSON message as bytes that is not valid is refused with its code, and changes nothing', () => {
  const a = new Facsimile('a');
  const sent = [];
  a.send = (m) => sent.push(m);
  a.store = { s: 'é' };
  // The last message, the longest.
  const value = 'ü'.padEnd(300, 'x');
  a.store['clé'] = value;
  const encoder = new TextEncoder();
  const last = encoder.encode(sent.at(-1));
  assert.ok(sent.slice(0, -1).every((m) => encoder.encode(m).length < last.length));
  // Where the UTF-8 of 'é' and of 'ü' stand in the last message.
  const at = (bytes, text) => Buffer.from(bytes).indexOf(Buffer.from(text));
  const patched = (bytes, index, ...values) => {
    const copy = Uint8Array.from(bytes);
    copy.set(values, index);
    return copy;
  };
  assert.ok(at(last, 'é') > 0 && at(last, 'ü') > 0, sent.at(-1));
  const refusals = [
    ['a key that is not UTF-8', patched(last, at(last, 'é'), 0xc3, 0x28), 'MALFORMED'],
    ['a value that is not UTF-8', patched(last, at(last, 'ü'), 0xff), 'MALFORMED'],
    ['a surrogate encoded in UTF-8', patched(last, at(last, 'ü'), 0xed, 0xa0, 0x80), 'MALFORMED'],
    ['cut short', last.subarray(0, last.length - 1), 'MALFORMED'],
    ['cut in half', last.slice(0, last.length >> 1), 'MALFORMED'],
    ['another version', encoder.encode(`{"v":2,${sent.at(-1).slice('{"v":1,'.length)}`), 'UNSUPPORTED_VERSION'],
  ];
  for (const binary of [false, true]) {
    // At most the message and one byte more.
    const v = new Facsimile('v', { binary, maxMessage: last.length + 1 });
    v.send = () => {};
    for (const m of sent.slice(0, -1)) v.receive(encoder.encode(m));
    const before = hex(v.snapshot());
    for (const [what, m, code] of [
      ...refusals,
      ['longer than maxMessage', Uint8Array.from([...last, 0x20, 0x20]), 'TOO_LARGE'],
    ]) {
      assert.throws(() => v.receive(m), { code }, `${binary ? 'binary' : 'JSON'} node: ${what}`);
      assert.equal(hex(v.snapshot()), before, `${what}: nothing changed`);
    }
    if (!binary) {
      // As a string, a lone surrogate would read as U+FFFD: refused as the
      // bytes above are.
      const lone = sent.at(-1).replace('ü', '\ud800');
      assert.throws(() => v.receive(lone), { code: 'MALFORMED' }, 'a lone surrogate in a string');
      assert.equal(hex(v.snapshot()), before, 'a lone surrogate: nothing changed');
    }
    // The message itself, with a trailing space: within maxMessage, applied.
    v.receive(Uint8Array.from([...last, 0x20]));
    assert.equal(v.store['clé'], value);
    assert.equal(hex(v.snapshot()), hex(a.snapshot()));
  }
});
