'use strict';
// The store's proxies behave like plain data: reads, writes, identity,
// the language's operations on objects and arrays, listeners, and the
// node's other calls.

const test = require('node:test');
const assert = require('node:assert/strict');
const util = require('node:util');
const { SyncNet, Facsimile } = require('./support/net');

function pair(options) {
  const net = new SyncNet({ wire: 'none', ...options });
  return [net.join('a'), net.join('b'), net];
}

test('one proxy per object: s.a === s.a, cycles, shared references', () => {
  const [a, b] = pair();
  a.store = { inner: { x: 1 }, list: [{ y: 2 }] };
  assert.equal(a.store, a.store);
  assert.equal(a.store.inner, a.store.inner);
  assert.equal(a.store.list[0], a.store.list[0]);
  a.store.again = a.store.inner;
  assert.equal(b.store.again, b.store.inner, 'a shared reference is one object');
  a.store.inner.up = a.store;
  assert.equal(b.store.inner.up, b.store);
  assert.equal(b.store.again.up.inner.up.again, b.store.inner);
  // Stored inside plain data, a proxy is a reference too.
  a.store.wrapped = { ref: a.store.list, copy: [1] };
  assert.equal(b.store.wrapped.ref, b.store.list);
});

test('a map of many keys (found through its keyed hash index) reads, writes and replicates', () => {
  const [a, b] = pair();
  a.store = {};
  for (let i = 0; i < 300; i++) a.store[`k${i}`] = i;
  for (let i = 0; i < 300; i += 2) delete b.store[`k${i}`];
  b.store.k1 = 'one';
  for (const s of [a.store, b.store]) {
    assert.equal(Object.keys(s).length, 150);
    assert.equal(s.k1, 'one');
    assert.equal(s.k299, 299);
    assert.equal(s.k0, undefined);
  }
  assert.deepEqual(a.snapshot(), b.snapshot());
});

test('the language sees plain data: JSON, keys, spread, for…of, in, deepStrictEqual', () => {
  const [a, b] = pair();
  const doc = { name: 'n', n: 1.5, t: true, z: null, list: [1, 'two', [3], { four: 4 }], m: { k: 'v' } };
  a.store = doc;
  for (const s of [a.store, b.store]) {
    assert.deepStrictEqual(s, doc);
    assert.deepStrictEqual(doc, s);
    assert.deepStrictEqual(JSON.parse(JSON.stringify(s)), doc);
    assert.equal(JSON.stringify(s.list), JSON.stringify(doc.list));
    assert.deepEqual(Object.keys(s).sort(), Object.keys(doc).sort());
    assert.deepEqual(Object.keys(s.list), ['0', '1', '2', '3']);
    assert.deepEqual({ ...s.m }, { k: 'v' });
    assert.deepEqual([...s.list].length, 4);
    const seen = [];
    for (const v of s.list) seen.push(v);
    assert.equal(seen[2], s.list[2]);
    assert.deepStrictEqual(Object.entries(s.m), [['k', 'v']]);
    assert.ok('name' in s && !('nope' in s) && 'k' in s.m);
    assert.ok(0 in s.list && !(4 in s.list) && 'length' in s.list && 'push' in s.list);
    assert.ok(Array.isArray(s.list) && !Array.isArray(s.m) && Array.isArray(s.list[2]));
    assert.equal(s.list.length, 4);
    assert.equal(Object.getPrototypeOf(s), Object.prototype);
    assert.equal(Object.getPrototypeOf(s.list), Array.prototype);
    assert.equal(Object.prototype.toString.call(s.list), '[object Array]');
    assert.equal(String(s.m), '[object Object]');
    assert.equal(`${s.list[2]}`, '3');
    assert.ok(s.m.hasOwnProperty('k') && Object.hasOwn(s.m, 'k') && !Object.hasOwn(s.m, 'on'));
    assert.deepStrictEqual(Object.getOwnPropertyDescriptor(s.list, 'length'), {
      value: 4,
      writable: true,
      enumerable: false,
      configurable: false,
    });
    assert.deepEqual(Object.getOwnPropertyNames(s.list), ['0', '1', '2', '3', 'length']);
    assert.deepStrictEqual(structuredClone(JSON.parse(JSON.stringify(s))), doc);
    assert.notDeepStrictEqual(s, { ...doc, extra: 1 });
  }
});

test('.on and .off answer on every object and are not own properties', () => {
  const [a] = pair();
  a.store = { m: {}, l: [] };
  for (const o of [a.store, a.store.m, a.store.l]) {
    assert.equal(typeof o.on, 'function');
    assert.equal(typeof o.off, 'function');
    assert.equal(Object.hasOwn(o, 'on'), false);
    assert.ok(!Object.keys(o).includes('on'));
    assert.ok(!JSON.stringify(o).includes('on'));
  }
  // A key named "on" is data, as an own property shadows a method.
  a.store.m.on = 'data';
  assert.equal(a.store.m.on, 'data');
  assert.deepEqual(Object.keys(a.store.m), ['on']);
});

test('console.log and util.inspect show the data, cycles included', () => {
  const [a] = pair();
  a.store = { list: [1, 2, 3], m: { k: 'v' } };
  assert.equal(util.inspect(a.store.list), '[ 1, 2, 3 ]');
  assert.equal(util.inspect(a.store), "{ list: [ 1, 2, 3 ], m: { k: 'v' } }");
  a.store.self = a.store;
  assert.match(util.inspect(a.store, { depth: Infinity }), /self: \[Circular \*1\]/);
  a.store.list.push(4);
  assert.equal(util.inspect(a.store.list), '[ 1, 2, 3, 4 ]', 'a change is seen at once');
});

test('writes: set, delete, Object.assign, index, length', () => {
  const [a, b, net] = pair();
  a.store = { m: {}, l: [] };
  const m = a.store.m;
  m.x = 1;
  Object.assign(m, { y: 2, z: [3] });
  delete m.x;
  Object.defineProperty(m, 'w', { value: 4, enumerable: true, writable: true, configurable: true });
  assert.deepStrictEqual(b.store.m, { y: 2, z: [3], w: 4 });
  assert.throws(() => Object.defineProperty(m, 'g', { get() {} }), { name: 'TypeError', code: 'UNSUPPORTED' });
  assert.throws(() => Object.setPrototypeOf(m, null), { name: 'TypeError', code: 'UNSUPPORTED' });
  assert.throws(() => Object.freeze(m), { name: 'TypeError', code: 'UNSUPPORTED' });
  assert.throws(() => {
    m[Symbol('s')] = 1;
  }, { code: 'BAD_KEY' });

  const l = a.store.l;
  l[0] = 'a';
  l[2] = 'c'; // arrays are dense: the gap is null
  assert.deepStrictEqual(b.store.l, ['a', null, 'c']);
  l.length = 1;
  assert.deepStrictEqual(b.store.l, ['a']);
  l.length = 3;
  assert.deepStrictEqual(b.store.l, ['a', null, null]);
  delete l[0];
  assert.deepStrictEqual(b.store.l, [null, null, null]);
  assert.throws(() => {
    l.length = -1;
  }, RangeError);
  assert.throws(() => {
    l.length = 1.5;
  }, RangeError);
  assert.throws(() => {
    l.named = 1;
  }, { code: 'BAD_KEY' });
  assert.throws(() => {
    l[1e9] = 1;
  }, { code: 'OUT_OF_BOUNDS' });
  assert.throws(() => {
    delete l.length;
  }, { name: 'TypeError', code: 'UNSUPPORTED' });

  // node.assign onto an array: its indices as Object.assign writes them,
  // in one message.
  const sent = net.sent;
  assert.equal(a.assign(l, { 0: 'x', 2: 'z' }, ['w']), l);
  assert.equal(net.sent - sent, 1, 'one message');
  assert.deepStrictEqual(b.store.l, ['w', null, 'z']);
});

test('what a store object cannot be is refused with a code, as a TypeError, and changes nothing', () => {
  const [a, b] = pair();
  a.store = { m: { k: 1 }, l: [1, 2] };
  const { m, l } = a.store;
  const before = a.snapshot();
  const unsupported = (err) => err instanceof TypeError && err.constructor === TypeError && err.code === 'UNSUPPORTED';
  const badKey = (err) => err instanceof TypeError && err.constructor === TypeError && err.code === 'BAD_KEY';
  const cases = [
    ['a getter on a map', () => Object.defineProperty(m, 'g', { get() {}, enumerable: true, configurable: true }), unsupported],
    ['a setter on an array', () => Object.defineProperty(l, '0', { set() {}, enumerable: true, configurable: true }), unsupported],
    ['a hidden property', () => Object.defineProperty(m, 'h', { value: 1, enumerable: false, writable: true, configurable: true }), unsupported],
    ['a read-only element', () => Object.defineProperty(l, '1', { value: 1, enumerable: true, writable: false, configurable: true }), unsupported],
    ['attributes without a value', () => Object.defineProperty(m, 'k', { enumerable: true }), unsupported],
    ['a length with a getter', () => Object.defineProperty(l, 'length', { get() {} }), unsupported],
    ['a read-only length', () => Object.defineProperty(l, 'length', { value: 2, writable: false }), unsupported],
    ['a symbol key defined on a map', () => Object.defineProperty(m, Symbol('s'), { value: 1, enumerable: true, writable: true, configurable: true }), badKey],
    ['a named property defined on an array', () => Object.defineProperty(l, 'named', { value: 1, enumerable: true, writable: true, configurable: true }), badKey],
    ['a symbol defined on an array', () => Object.defineProperty(l, Symbol('s'), { value: 1 }), badKey],
    ['another prototype for a map', () => Object.setPrototypeOf(m, null), unsupported],
    ['another prototype for an array', () => Object.setPrototypeOf(l, Object.prototype), unsupported],
    ['Object.freeze', () => Object.freeze(m), unsupported],
    ['Object.seal', () => Object.seal(l), unsupported],
    ['Object.preventExtensions', () => Object.preventExtensions(m), unsupported],
    ['delete arr.length', () => delete l.length, unsupported],
    // Reflect's methods throw it too, rather than return false.
    ['Reflect.defineProperty', () => Reflect.defineProperty(m, 'g', { get() {} }), unsupported],
    ['Reflect.setPrototypeOf', () => Reflect.setPrototypeOf(l, null), unsupported],
  ];
  for (const [what, f, refused] of cases) assert.throws(f, refused, what);
  assert.deepStrictEqual(a.snapshot(), before, 'nothing changed');
  // The prototype an object already has may be set again, as on plain data.
  assert.equal(Object.setPrototypeOf(m, Object.prototype), m);
  assert.equal(Object.setPrototypeOf(l, Array.prototype), l);
  assert.ok(!Object.isFrozen(m) && Object.isExtensible(l));
  assert.deepStrictEqual(b.store, { m: { k: 1 }, l: [1, 2] });
});

test('values: what can be stored and how it comes back', () => {
  const [a, b] = pair();
  const bytes = new Uint8Array([1, 2, 255]);
  a.store = { bytes, big: 2n ** 62n, neg: -0, inf: Infinity, nan: NaN, date: new Date(0), undef: undefined };
  const s = b.store;
  assert.deepEqual([...s.bytes], [1, 2, 255]);
  assert.ok(s.bytes instanceof Uint8Array);
  assert.equal(s.big, 2n ** 62n);
  assert.ok(Object.is(s.neg, -0));
  assert.equal(s.inf, Infinity);
  assert.ok(Number.isNaN(s.nan));
  assert.equal(s.date, '1970-01-01T00:00:00.000Z', 'as JSON would store it');
  assert.equal(s.undef, null, 'undefined is stored as null');
  assert.equal(a.store.big, 2n ** 62n);
  // Integers read back by value: a BigInt within 2^53 as a number; a
  // number beyond it stays one. Surrogate pairs travel as they are.
  a.store.small = 5n;
  a.store.wide = 2 ** 60;
  a.store['\uD834\uDD1E'] = 'a\uD834\uDD1E';
  assert.equal(s.small, 5);
  assert.equal(s.wide, 2 ** 60);
  assert.equal(s['\uD834\uDD1E'], 'a\uD834\uDD1E');

  assert.throws(() => {
    a.store.f = () => {};
  }, { code: 'BAD_VALUE' });
  assert.throws(() => {
    a.store.sym = Symbol('x');
  }, { code: 'BAD_VALUE' });
  assert.throws(() => {
    a.store.huge = 2n ** 64n;
  }, { code: 'BAD_VALUE' });
  const cyclic = { x: 1 };
  cyclic.self = cyclic;
  assert.throws(() => {
    a.store.c = cyclic;
  }, { code: 'CYCLE' });
  const shared = { x: 1 };
  a.store.twice = [shared, shared]; // plain data is copied: two objects
  assert.notEqual(b.store.twice[0], b.store.twice[1]);
  assert.deepStrictEqual(b.store.twice, [{ x: 1 }, { x: 1 }]);
});

test('values are converted as JSON.stringify converts them: boxed primitives, toJSON once per value, cycles through toJSON', () => {
  const [a, b] = pair();
  a.store = {};
  const s = a.store;
  // Number, String, Boolean (and BigInt) objects are their primitives,
  // converted as JSON.stringify converts them (valueOf, toString).
  const seven = new Number(1);
  seven.valueOf = () => 7;
  s.boxed = [new Number(3), new String('ab'), new Boolean(false), Object(5n), seven, { n: new Number(-1.5) }];
  assert.deepStrictEqual(b.store.boxed, [3, 'ab', false, 5, 7, { n: -1.5 }]);
  s.n = new Number(4);
  assert.equal(b.store.n, 4);
  assert.deepStrictEqual(b.store.boxed, JSON.parse(JSON.stringify([3, 'ab', false, 5, seven, { n: new Number(-1.5) }])));

  // toJSON is called once per value, with its key, and what it returns is
  // stored as it is (its own toJSON is not called again).
  class Again {
    constructor(depth) {
      this.depth = depth;
    }
    toJSON() {
      return new Again(this.depth + 1);
    }
  }
  s.again = new Again(0);
  assert.deepStrictEqual(b.store.again, { depth: 1 });
  class Self {
    constructor() {
      this.x = 1;
    }
    toJSON() {
      return this;
    }
  }
  s.self = [new Self()];
  assert.deepStrictEqual(b.store.self, [{ x: 1 }]);
  s.keys = { k: { toJSON: (key) => key }, l: [{ toJSON: (key) => key }] };
  assert.deepStrictEqual(b.store.keys, { k: 'k', l: ['0'] });
  const list = [1, 2];
  list.toJSON = () => 'a list';
  s.list = [list];
  assert.deepStrictEqual(b.store.list, ['a list']);

  // What JSON.stringify cannot write is refused with a code, not a stack
  // overflow: data that leads back to itself through toJSON, data that
  // toJSON nests without end, and a toJSON that returns its own object
  // with the function as a key (functions are refused).
  const before = a.snapshot();
  const parent = { child: { toJSON: () => parent } };
  assert.throws(() => {
    s.c = parent;
  }, { name: 'TypeError', code: 'CYCLE' });
  const endless = () => ({ next: { toJSON: endless } });
  assert.throws(() => {
    s.d = endless();
  }, { name: 'RangeError', code: 'TOO_DEEP' });
  assert.throws(() => {
    s.e = {
      toJSON() {
        return this;
      },
    };
  }, { name: 'TypeError', code: 'BAD_VALUE' });
  assert.deepStrictEqual(a.snapshot(), before, 'nothing changed');
});

test('every error has a code, and each code one class, from the package or the engine', async () => {
  const [a, b] = pair();
  a.store = { l: [3, 1], m: {}, e: [] };
  const { l, m, e } = a.store;
  const cases = [
    ['sort(5)', () => l.sort(5), 'BAD_ARGUMENT', TypeError],
    ['on(change, 5)', () => a.on('change', 5), 'BAD_ARGUMENT', TypeError],
    ['proxy.on(5)', () => m.on(5), 'BAD_ARGUMENT', TypeError],
    ['send = 5', () => (a.send = 5), 'BAD_ARGUMENT', TypeError],
    ['batch(5)', () => a.batch(5), 'BAD_ARGUMENT', TypeError],
    ['forEach(5)', () => l.forEach(5), 'BAD_ARGUMENT', TypeError],
    ['reduce of empty', () => e.reduce((x) => x), 'BAD_ARGUMENT', TypeError],
    ['evict(7)', () => a.evict(7), 'BAD_ARGUMENT', TypeError],
    ['length = -1', () => (l.length = -1), 'BAD_LENGTH', RangeError],
    ['length = 1.5', () => (l.length = 1.5), 'BAD_LENGTH', RangeError],
    ['release({})', () => a.release({}), 'NOT_AN_OBJECT', TypeError],
    ['a function', () => (m.f = () => {}), 'BAD_VALUE', TypeError],
    ['a BigInt past 64 bits (engine)', () => (m.big = 2n ** 70n), 'BAD_VALUE', TypeError],
    ['an index far past the end', () => (l[1e9] = 1), 'OUT_OF_BOUNDS', RangeError],
    ['an accessor property', () => Object.defineProperty(m, 'g', { get() {} }), 'UNSUPPORTED', TypeError],
    ['Object.freeze', () => Object.freeze(l), 'UNSUPPORTED', TypeError],
    ['a symbol key', () => (m[Symbol('s')] = 1), 'BAD_KEY', TypeError],
    ['receive(42)', () => b.receive(42), 'MALFORMED', Error],
    ['receive(garbage JSON)', () => b.receive('{"from":1}'), 'MALFORMED', Error],
  ];
  for (const [what, f, code, Type] of cases) {
    assert.throws(f, (err) => err.code === code && err.constructor === Type, what);
  }
  await assert.rejects(a.lock({}), (err) => err.code === 'NOT_AN_OBJECT' && err.constructor === TypeError);
  assert.throws(() => new Facsimile('x', { maxMessage: 0 }), (err) => err.code === 'BAD_OPTION' && err.constructor === RangeError);
});

test('a proxy of another node is refused with a clear error', async () => {
  const [a] = pair();
  const [c] = pair();
  a.store = { x: {} };
  c.store = { y: 1 };
  const refused = { code: 'FOREIGN_OBJECT', message: /another Facsimile node/ };
  assert.throws(() => {
    c.store = a.store.x;
  }, refused);
  assert.throws(() => {
    c.store.y = a.store.x;
  }, refused);
  assert.throws(() => {
    c.store.y = { nested: [a.store.x] };
  }, refused);
  await assert.rejects(c.lock(a.store.x), refused);
  assert.throws(() => c.release(a.store.x), refused);
  await assert.rejects(c.lock({}), { code: 'NOT_AN_OBJECT' });
  assert.equal(c.store.y, 1);
});

test('array methods return what Array methods return, each one message and one mass change', () => {
  const [a, b] = pair();
  a.store = [5, 1, 4];
  const arr = a.store;
  const events = [];
  b.on('change', (target, prop) => events.push(prop));
  let sent = 0;
  const send = a.send;
  a.send = (...m) => {
    sent++;
    send(...m);
  };
  const model = [5, 1, 4];
  let changes = 0;
  const calls = [
    ['push', 7, 8],
    ['pop'],
    ['unshift', 0],
    ['shift'],
    ['splice', 1, 1, 'x', 'y'],
    ['splice', -2],
    ['reverse'],
    ['push', 3, 9, 2],
    ['sort', (x, y) => (typeof x === 'number' && typeof y === 'number' ? x - y : String(x) < String(y) ? -1 : 1)],
    ['sort'],
    ['fill', 0, 1, 3],
    ['copyWithin', 0, 3, 5],
    ['fill', 'end', -2],
  ];
  for (const [name, ...args] of calls) {
    const before = sent;
    const old = JSON.stringify(model);
    const want = model[name](...args);
    const got = arr[name](...args);
    if (want === model) assert.equal(got, arr, `${name} returns the array`);
    else assert.deepStrictEqual(got, want, `${name} result`);
    assert.deepStrictEqual(arr, model, `${name}(${args.join(', ')})`);
    assert.deepStrictEqual(b.store, model, `${name} replicated`);
    const changed = JSON.stringify(model) !== old;
    assert.equal(sent - before, changed ? 1 : 0, `${name}: one message`);
    if (changed) changes++;
  }
  assert.deepEqual(events, Array(changes).fill(undefined), 'one mass change per call');

  // A call that sets one element is that element's assignment, on the
  // wire and in its event.
  events.length = 0;
  arr.fill('last', -1);
  assert.deepEqual(events, [String(arr.length - 1)]);

  // Calls that change nothing send nothing.
  const before = sent;
  arr.splice(0, 0);
  arr.push();
  arr.fill(1, 2, 2);
  assert.equal([].pop.call(a.store.slice(0, 0)), undefined);
  assert.equal(sent, before);
});

// The same call on a plain array, by JavaScript's generic Array methods
// (wrapped in a proxy, which takes them off V8's fast paths: Node.js 20's
// fill on a fast array stops at the length its conversions left, where the
// specification fills up to the length read before them, as later V8s do).
function onPlain(plain, name, args) {
  const wrapped = new Proxy(plain, {});
  const result = Array.prototype[name].apply(wrapped, args);
  return result === wrapped ? plain : result;
}
// A plain array as a store's array holds it: a hole is null.
const dense = (a) => Array.from(a, (v) => (v === undefined ? null : v));
// An argument whose conversion first runs `effect`.
const converting = (n, effect) => ({
  valueOf() {
    effect();
    return n;
  },
});

// Runs `args(array)` through `name` on a store's array [1, 2, 3, 4, 5]
// and on a plain one: the same array, on both nodes, and the same result.
// The conversions' writes are one message each, and so is the method.
function sameAsPlain(what, name, args, initial = [1, 2, 3, 4, 5]) {
  const [a, b] = pair();
  a.store = { l: initial };
  const l = a.store.l;
  let sent = 0;
  const send = a.send;
  a.send = (...m) => {
    sent++;
    send(...m);
  };
  const plain = initial.slice();
  let conversions = 0;
  const want = onPlain(plain, name, args(plain, () => conversions++));
  sent = 0;
  const got = l[name](...args(l, () => {}));
  if (want === plain) assert.equal(got, l, `${what}: returns the array`);
  else assert.deepStrictEqual(got, Array.isArray(want) ? dense(want) : want, `${what}: returns`);
  assert.deepStrictEqual(l, dense(plain), what);
  assert.deepStrictEqual(b.store.l, dense(plain), `${what}, on the other node`);
  assert.equal(sent, conversions + 1, `${what}: one message besides the conversions' writes`);
}

test('copyWithin converts its arguments, then copies the array as it is by then, as Array does', () => {
  const cases = [
    ['the elements change', (x, w) => [converting(0, () => w(x.reverse())), 2]],
    ['missing elements copy as null', (x, w) => [0, converting(1, () => w((x.length = 2)))]],
    ['a destination past the end extends the array', (x, w) => [3, 0, converting(5, () => w((x.length = 1)))]],
    ['appended elements stay', (x, w) => [1, 0, converting(3, () => w(x.push(9, 9)))]],
    ['replaced, objects too', (x, w) => [2, converting(0, () => w(x.splice(0, 5, 'a', { o: 1 })))]],
    ['an overlap copies backwards', (x, w) => [1, 0, converting(4, () => w(x.unshift('u')))]],
    [
      'every conversion writes',
      (x, w) => [converting(1, () => w(x.pop())), converting(0, () => w(x.reverse())), converting(3, () => w((x[0] = 'z')))],
    ],
  ];
  for (const [what, args] of cases) sameAsPlain(what, 'copyWithin', args);
});

test('splice and fill convert their arguments, then write what Array writes on the array as it is by then', () => {
  const splices = [
    ['a shorter array is taken as long as it was: its missing elements are null', (x, w) => [converting(1, () => w((x.length = 2))), 1]],
    ['a start past the new end', (x, w) => [3, converting(1, () => w((x.length = 1))), 'a']],
    ['missing elements removed come back as null', (x, w) => [1, converting(3, () => w((x.length = 2))), 'a', 'b']],
    ['what was appended meanwhile is dropped', (x, w) => [converting(0, () => w(x.push(6, 7))), 1]],
    ['also by a splice that removes and inserts nothing', (x, w) => [converting(0, () => w(x.push(6))), 0]],
    ['appended, with items', (x, w) => [converting(4, () => w(x.push(6))), 0, 'a', 'b']],
    ['the elements change', (x, w) => [1, converting(2, () => w(x.reverse())), 'a']],
  ];
  for (const [what, args] of splices) sameAsPlain(`splice: ${what}`, 'splice', args);
  const fills = [
    ['indices the conversions removed are filled again', (x, w) => [0, converting(0, () => w((x.length = 2)))]],
    ['past the end, after nulls', (x, w) => [0, 3, converting(4, () => w((x.length = 1)))]],
    ['an object referenced past the end', (x, w) => [{ k: 1 }, 1, converting(4, () => w((x.length = 1)))]],
    ['an object created past the end', (x, w) => [{ k: 1 }, 3, converting(5, () => w((x.length = 1)))]],
    ['a longer array', (x, w) => [{ k: 1 }, converting(0, () => w(x.push(7, 7)))]],
  ];
  for (const [what, args] of fills) sameAsPlain(`fill: ${what}`, 'fill', args, [1, 2, 3, 4]);
  // A stored object filled into several indices is one object.
  const [a] = pair();
  a.store = [1, 2, 3];
  a.store.fill({ k: 1 }, 1, converting(5, () => (a.store.length = 1)));
  assert.deepStrictEqual(a.store, [1, { k: 1 }, { k: 1 }]);
  assert.equal(a.store[1], a.store[2]);
});

test('the values an array method stores are copied before it reads the array', () => {
  const [a, b] = pair();
  a.store = { l: [1, 2] };
  const l = a.store.l;
  // A getter that appends: the values still go at the end.
  const appending = {
    get g() {
      l.push(9);
      return 1;
    },
  };
  assert.equal(l.push(appending, 3), 5);
  assert.deepStrictEqual(b.store.l, [1, 2, 9, { g: 1 }, 3]);
  // A getter that shortens the array: the splice is of the shorter one.
  const shortening = {
    get g() {
      l.length = 1;
      return 2;
    },
  };
  assert.deepStrictEqual(l.splice(1, 1, shortening), []);
  assert.deepStrictEqual(b.store.l, [1, { g: 2 }]);
  // unshift returns the length its write made, not what listeners wrote
  // after it.
  let once = true;
  const grow = () => {
    if (once) l.push('listener');
    once = false;
  };
  l.on(grow);
  assert.equal(l.unshift(0), 3);
  l.off(grow);
  assert.deepStrictEqual(b.store.l, [0, 1, { g: 2 }, 'listener']);
});

test('fill with an object stores one object, referenced from every index', () => {
  const [a, b] = pair();
  a.store = [0, 0, 0];
  const events = [];
  b.on('change', (t, p) => events.push(p));
  a.store.fill({ k: 1 });
  assert.deepStrictEqual(b.store, [{ k: 1 }, { k: 1 }, { k: 1 }]);
  assert.equal(b.store[0], b.store[2]);
  assert.deepEqual(events, [undefined]);

  // Refused as the method it is: locked elsewhere, or closed.
  a.lock(a.store);
  assert.throws(() => b.store.fill({ k: 2 }), { message: 'Object is locked', code: 'LOCKED' });
  a.release(a.store);
  a.close();
  assert.throws(() => a.store.fill({ k: 3 }), { code: 'CLOSED' });
  assert.deepStrictEqual(b.store, [{ k: 1 }, { k: 1 }, { k: 1 }], 'nothing changed');
});

test('an array method that throws changes nothing', () => {
  const [a, b] = pair();
  a.store = { l: [1, 2, 3, 4] };
  const l = a.store.l;
  // Storing the value runs its getter, which shortens the array, and
  // throws: what the getter wrote stays, the fill is not made.
  const value = {
    get v() {
      l.shift();
      l.pop();
      throw new Error('no value');
    },
  };
  assert.throws(() => l.fill(value, 0, 4), { message: 'no value' });
  assert.deepStrictEqual(a.store.l, [2, 3], 'the getter\'s writes, none of the fill');
  assert.deepStrictEqual(b.store.l, [2, 3]);

  // An object whose references would not fit in the fill's message.
  const net = new SyncNet({ wire: 'none' });
  const c = net.join('c', { maxMessage: 4096 });
  const d = net.join('d', { maxMessage: 4096 });
  c.store = [];
  for (let i = 0; i < 60; i++) c.store.push(0);
  c.store[0] = { s: 'x'.repeat(1500) }; // fits alone
  c.store[0] = 0;
  const sent = c.snapshot();
  assert.throws(() => c.store.fill({ s: 'x'.repeat(1500) }), { code: 'TOO_LARGE' });
  assert.deepStrictEqual(c.snapshot(), sent);
  assert.deepStrictEqual(d.snapshot(), sent);

  // A comparator that changes the array: the sort is refused, its writes stay.
  a.store.l = [3, 1, 2];
  const m = a.store.l;
  let first = true;
  const compare = (x, y) => {
    if (first) m.push(0);
    first = false;
    return x - y;
  };
  assert.throws(() => m.sort(compare), { code: 'MODIFIED', message: /changed while sort/ });
  assert.deepStrictEqual(b.store.l, [3, 1, 2, 0]);
  // One that writes elsewhere sorts.
  m.sort((x, y) => {
    a.store.n = (a.store.n ?? 0) + 1;
    return x - y;
  });
  assert.deepStrictEqual(b.store.l, [0, 1, 2, 3]);
  assert.ok(b.store.n > 0);
});

test('non-mutating methods work as on arrays, also while a callback writes', () => {
  const [a] = pair();
  a.store = [3, 1, { k: 2 }, [4]];
  const arr = a.store;
  const obj = arr[2];
  assert.equal(arr.indexOf(obj), 2);
  assert.ok(arr.includes(1));
  assert.equal(arr.join('-'), '3-1-[object Object]-4');
  assert.deepStrictEqual(arr.slice(1, 2), [1]);
  assert.equal(arr.slice(2)[0], obj);
  assert.deepStrictEqual(arr.map((x) => typeof x), ['number', 'number', 'object', 'object']);
  assert.deepStrictEqual(arr.filter((x) => typeof x === 'number'), [3, 1]);
  assert.equal(arr.find((x) => typeof x === 'object'), obj);
  assert.equal(arr.findIndex((x) => x === 1), 1);
  assert.equal(arr.findLastIndex((x) => typeof x === 'number'), 1);
  assert.ok(arr.some((x) => x === 3) && !arr.every((x) => x === 3));
  assert.equal(arr.reduce((s, x) => s + (typeof x === 'number' ? x : 0), 0), 4);
  assert.equal(arr.at(-1), arr[3]);
  assert.deepStrictEqual(arr.concat([5]), [3, 1, { k: 2 }, [4], 5]);
  assert.deepStrictEqual(arr.flat(), [3, 1, { k: 2 }, 4]);
  assert.deepStrictEqual([...arr.keys()], [0, 1, 2, 3]);
  assert.deepStrictEqual([...arr.entries()][1], [1, 1]);
  assert.deepStrictEqual(arr.toSorted((x, y) => (typeof x === 'number' && typeof y === 'number' ? x - y : 0)).slice(0, 2), [1, 3]);
  assert.equal(arr.toString(), '3,1,[object Object],4');

  // A callback that writes is seen, as by the native methods.
  a.store = [1, 2, 3];
  const live = a.store;
  const seen = [];
  live.forEach((x, i, self) => {
    assert.equal(self, live);
    seen.push(x);
    if (i === 0) live.pop();
    if (i === 1) live[2] = 'late';
  });
  const model = [1, 2, 3];
  const modelSeen = [];
  model.forEach((x, i) => {
    modelSeen.push(x);
    if (i === 0) model.pop();
    if (i === 1) model[2] = 'late';
  });
  assert.deepEqual(seen, modelSeen);
  const it = [];
  for (const x of live) {
    it.push(x);
    if (it.length === 1) live.push('more');
  }
  assert.deepEqual(it, [1, 2, 'late', 'more']);
  assert.throws(() => [].reduce.call(a.store.slice(0, 0), (x) => x), TypeError);
  assert.throws(() => a.store.slice(0, 0).reduce((x) => x), TypeError);
});

test('listeners: whole object, property, index; they may write; targets are the store proxies', () => {
  const [a, b] = pair();
  a.store = { m: { x: 0 }, l: [0, 0] };
  const log = [];
  const m = b.store.m;
  m.on((t, p, nv, ov) => log.push(['m', t === b.store.m, p, nv, ov]));
  m.on('x', (t, p, nv) => log.push(['m.x', p, nv]));
  b.store.l.on(1, (t, p, nv, ov) => log.push(['l[1]', t === b.store.l, p, nv, ov]));
  b.store.l.on('0', (t, p, nv) => log.push(['l[0]', p, nv]));
  // A listener that writes: its write is replicated after the change.
  b.store.l.on((t, p, nv) => {
    if (p === '1' && nv === 1) t.push('echo');
  });
  a.store.m.x = 1;
  a.store.m.y = { deep: 1 };
  a.store.l[1] = 1;
  a.store.l[0] = 2;
  assert.deepEqual(log.slice(0, 3), [
    ['m', true, 'x', 1, 0],
    ['m.x', 'x', 1],
    ['m', true, 'y', b.store.m.y, undefined],
  ]);
  assert.equal(log[2][3], b.store.m.y, 'object values are proxies');
  // Indices as JavaScript names properties: strings.
  assert.deepStrictEqual(log.slice(3), [
    ['l[1]', true, '1', 1, 0],
    ['l[0]', '0', 2],
  ]);
  assert.deepStrictEqual(a.store.l, [2, 1, 'echo']);
  assert.deepStrictEqual(b.store.l, [2, 1, 'echo']);
  assert.deepStrictEqual(a.snapshot(), b.snapshot());
});

test('a listener that throws stops no other listener; the first exception reaches the caller', () => {
  const [a, b] = pair();
  a.store = { m: { k: 0 } };
  const ran = [];
  b.on('change', () => {
    ran.push('first');
    throw new Error('first');
  });
  b.on('change', () => {
    ran.push('second');
    throw new Error('second');
  });
  b.store.m.on(() => ran.push('object'));
  b.store.m.on('k', () => ran.push('property'));
  b.on('root_changed', () => {
    ran.push('root 1');
    throw new Error('root');
  });
  b.on('root_changed', () => ran.push('root 2'));
  assert.throws(() => {
    b.store.m.k = 1;
  }, /^Error: first$/);
  assert.deepEqual(ran, ['first', 'second', 'object', 'property']);
  assert.equal(a.store.m.k, 1, 'the write reached the other node');
  ran.length = 0;
  // A remote change: the exception is thrown from the receive into b.
  assert.throws(() => {
    a.store.m.k = 2;
  }, /^Error: first$/);
  assert.deepEqual(ran, ['first', 'second', 'object', 'property']);
  ran.length = 0;
  assert.throws(() => {
    b.store = { m: {} };
  }, /^Error: root$/);
  assert.deepEqual(ran, ['root 1', 'root 2']);
  assert.deepStrictEqual(a.store, { m: {} });
});

test('node events: once, off during dispatch, removeListener, lock events', async () => {
  const [a, b] = pair();
  a.store = { x: 0 };
  const calls = [];
  const second = () => calls.push('second');
  a.once('change', () => calls.push('once'));
  a.on('change', () => {
    calls.push('first');
    a.off('change', second);
  });
  a.on('change', second);
  a.store.x = 1;
  a.store.x = 2;
  assert.deepEqual(calls, ['once', 'first', 'first'], 'a listener removed during dispatch does not fire');
  a.removeListener('change', second);

  const locks = [];
  b.on('lock', (target, what, token) => locks.push([target === b.store, what, token]));
  const token = await b.lock(b.store);
  b.release(b.store);
  assert.deepEqual(locks, [
    [true, 'granted', token],
    [true, 'released', token],
  ]);
});

test('locks: waiting, an aborted lock() withdraws, tokens increase, close frees the lock', async () => {
  const net = new SyncNet({ wire: 'none' });
  const a = net.join('a');
  const b = net.join('b');
  const c = net.join('c');
  a.store = { m: {} };
  const t1 = await a.lock(a.store.m);
  let granted = false;
  const waiting = b.lock(b.store.m).then((t) => {
    granted = true;
    return t;
  });
  await new Promise(setImmediate);
  assert.equal(granted, false);
  const giveUp = new AbortController();
  const withdrawn = c.lock(c.store.m, { signal: giveUp.signal });
  assert.throws(() => c.release(c.store.m), { code: 'NOT_OWNER' }, 'a waiting request is not released');
  giveUp.abort(new Error('gave up'));
  await assert.rejects(withdrawn, { message: 'gave up' });
  assert.deepEqual(
    c._locks()[0].queue.map((r) => r.hostname),
    ['a', 'b'],
    "c's request is withdrawn",
  );
  a.close(); // leaves: its lock is freed at once
  const t2 = await waiting;
  assert.ok(t2 > t1, 'tokens increase');
  assert.throws(() => {
    a.store.x = 1;
  }, { code: 'CLOSED' });
  b.release(b.store.m);
  const t3 = await c.request(c.store.m);
  assert.ok(t3 > t2);
});

test('locks: an aborted lock() leaves the request to another call waiting on it', async () => {
  const net = new SyncNet({ wire: 'none' });
  const a = net.join('a');
  const b = net.join('b');
  a.store = { m: {} };
  await a.lock(a.store.m);
  const first = new AbortController();
  const abandoned = b.lock(b.store.m, { signal: first.signal });
  const kept = b.lock(b.store.m);
  first.abort();
  await assert.rejects(abandoned, { name: 'AbortError' });
  assert.deepEqual(b._locks()[0].queue.map((r) => r.hostname), ['a', 'b'], 'still waiting');
  assert.throws(() => b.release(b.store.m), { code: 'NOT_OWNER' });
  a.release(a.store.m);
  const token = await kept;
  assert.ok(token > 0);
  const late = new AbortController();
  late.abort();
  await assert.rejects(a.lock(a.store.m, { signal: late.signal }), { name: 'AbortError' });
  assert.deepEqual(a._locks()[0].queue.map((r) => r.hostname), ['b'], 'an aborted signal requests nothing');
  b.release(b.store.m);
  assert.throws(() => b.release(b.store.m), { code: 'NOT_LOCKED' });
});

// Runs `fn` with the exceptions thrown from the event loop (uncaught)
// collected instead of failing the test, until a task after it returns.
async function uncaught(fn) {
  const saved = process.listeners('uncaughtException');
  process.removeAllListeners('uncaughtException');
  const errors = [];
  const collect = (e) => errors.push(e);
  process.on('uncaughtException', collect);
  try {
    await fn();
    await new Promise(setImmediate);
  } finally {
    process.off('uncaughtException', collect);
    for (const l of saved) process.on('uncaughtException', l);
  }
  return errors.map((e) => e.message);
}

// Whether a promise has settled, a task after the call that should settle it.
async function settled(promise) {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise(setImmediate);
  return done;
}

test('lock() returns a promise of the lock also when a listener or send throws meanwhile; the exception is thrown from the event loop', async () => {
  const [a, b] = pair();
  a.store = { m: {}, n: {} };
  // Granted at once; a 'lock' listener throws on the grant.
  const grants = (node) =>
    node.on('lock', (target, what) => {
      if (what === 'granted') throw new Error(`${node.hostname} granted`);
    });
  grants(a);
  let token;
  let errors = await uncaught(async () => {
    const p = a.lock(a.store.m);
    assert.ok(p instanceof Promise);
    token = await p;
  });
  assert.deepEqual(errors, ['a granted']);
  assert.ok(token > 0);
  assert.deepEqual(a._locks()[0].queue.map((r) => r.hostname), ['a'], 'held, as the promise says');
  assert.throws(() => {
    b.store.m.x = 1;
  }, { code: 'NOT_OWNER' });

  // Waiting: b's send delivers its request, then throws.
  const deliver = b.send;
  let failing = true;
  b.send = (...m) => {
    deliver(...m);
    if (failing) {
      failing = false;
      throw new Error('b send');
    }
  };
  let waiting;
  errors = await uncaught(async () => {
    waiting = b.lock(b.store.m);
    assert.ok(waiting instanceof Promise);
  });
  assert.deepEqual(errors, ['b send']);
  assert.equal(await settled(waiting), false, 'still waiting');
  // The grant comes later: the listener's exception reaches the caller of
  // the call that delivered it, and the promise resolves.
  grants(b);
  assert.throws(() => a.release(a.store.m), /^Error: b granted$/);
  assert.ok((await waiting) > token);
  b.release(b.store.m);

  // request() too, with a send that throws after delivering each message.
  b.send = (...m) => {
    deliver(...m);
    throw new Error('send');
  };
  errors = await uncaught(async () => {
    assert.ok((await b.request(b.store.n)) > 0);
  });
  assert.deepEqual(errors, ['send'], 'the first exception');
});

test('an aborted lock() rejects also when a listener or send throws as its request is withdrawn', async () => {
  const [a, b] = pair();
  a.store = { m: {} };
  await a.lock(a.store.m);
  b.on('lock', (target, what) => {
    if (what === 'withdrawn') throw new Error('withdrawn listener');
  });
  const giveUp = new AbortController();
  const withdrawn = b.lock(b.store.m, { signal: giveUp.signal });
  let outcome;
  const errors = await uncaught(async () => {
    giveUp.abort(new Error('gave up'));
    assert.equal(await settled(withdrawn), true, 'the aborted lock() settled');
    outcome = await withdrawn.catch((e) => e.message);
  });
  assert.equal(outcome, 'gave up');
  assert.deepEqual(errors, ['withdrawn listener']);
  assert.deepEqual(a._locks()[0].queue.map((r) => r.hostname), ['a'], "b's request is withdrawn");

  // A send that throws on the withdrawal.
  const deliver = b.send;
  const second = new AbortController();
  const again = b.lock(b.store.m, { signal: second.signal });
  b.send = (...m) => {
    deliver(...m);
    throw new Error('send');
  };
  const errors2 = await uncaught(async () => {
    second.abort(new Error('gave up again'));
    assert.equal(await settled(again), true, 'the aborted lock() settled');
    outcome = await again.catch((e) => e.message);
  });
  assert.equal(outcome, 'gave up again');
  assert.ok(errors2.includes('send'), errors2.join());
  assert.deepEqual(a._locks()[0].queue.map((r) => r.hostname), ['a']);

  // A signal that is not one is refused before anything is requested.
  b.send = deliver;
  await assert.rejects(b.lock(b.store.m, { signal: {} }), { name: 'TypeError', code: 'BAD_ARGUMENT' });
  assert.deepEqual(a._locks()[0].queue.map((r) => r.hostname), ['a'], 'nothing requested');
});

test('sync() with direct wiring: the document is there when it returns', () => {
  const a = new Facsimile('a');
  const b = new Facsimile('b');
  a.send = (...m) => b.receive(...m);
  a.store = { x: [1, 2], y: { z: 'z' } };
  b.send = (...m) => a.receive(...m);
  a.store.x.push(3);
  b.sync();
  assert.deepStrictEqual(b.store, { x: [1, 2, 3], y: { z: 'z' } });
  a.store.y.z = 'zz';
  assert.equal(b.store.y.z, 'zz', 'after a write returns, the other node has it');
  b.store.x.push(4);
  assert.deepStrictEqual(a.store.x, [1, 2, 3, 4]);
});

test('messages: receive ignores what is meant for another node; send errors reach the caller', () => {
  const a = new Facsimile('a');
  const b = new Facsimile('b');
  const msgs = [];
  a.send = (m, to) => msgs.push([m, to]);
  a.store = 1;
  for (const [m] of msgs) b.receive(m, b.incarnation + 1); // meant for someone else
  assert.equal(b.store, null);
  for (const [m, to] of msgs) b.receive(m, to);
  assert.equal(b.store, 1);
  assert.throws(() => b.receive(msgs[0][0], 'x'), { code: 'MALFORMED' });

  a.send = () => {
    throw new Error('link down');
  };
  assert.throws(() => {
    a.store = 2;
  }, /link down/);
  assert.equal(a.store, 2, 'the write is made; the transport failed');
});

test('batch: several writes, one message', () => {
  const [a, b] = pair();
  a.store = { l: [] };
  let sent = 0;
  const send = a.send;
  a.send = (...m) => {
    sent++;
    send(...m);
  };
  const r = a.batch(() => {
    a.store.x = 1;
    a.store.l.push(1, 2);
    a.store.l.reverse();
    return 'done';
  });
  assert.equal(r, 'done');
  assert.equal(sent, 1);
  assert.deepStrictEqual(b.store, { l: [2, 1], x: 1 });
});

test('the root: primitives as they are, replaced objects keep their proxies', () => {
  const [a, b] = pair();
  assert.equal(a.store, null);
  a.store = { keep: { k: 1 } };
  const kept = a.store.keep;
  a.store = kept; // a proxy of this store: a reference
  assert.equal(a.store, kept);
  assert.equal(b.store.k, 1);
  a.store = 'text';
  assert.equal(b.store, 'text');
  assert.equal(kept.k, 1, 'a detached object stays readable until reclaimed');
});

test('hostnames: any value as a string, at most 1024 bytes', () => {
  assert.equal(new Facsimile(42).hostname, '42');
  assert.throws(() => new Facsimile('x'.repeat(1025)), { code: 'BAD_HOSTNAME' });
  assert.throws(() => new Facsimile('é'.repeat(513)), { code: 'BAD_HOSTNAME' });
  new Facsimile('é'.repeat(512));
});

test('a subclass may define send as a method', () => {
  const got = [];
  class Node extends Facsimile {
    send(m, to) {
      got.push([this, m, to]);
    }
  }
  const n = new Node('n');
  n.store = 1;
  assert.ok(got.length > 0 && got[0][0] === n);
  // A function assigned over the method is the one called from then on.
  const assigned = [];
  n.send = (m) => assigned.push(m);
  const before = got.length;
  n.store = 2;
  assert.equal(got.length, before);
  assert.equal(assigned.length, 1);
  // So is a field that holds the transport.
  class Fielded extends Facsimile {
    sent = [];
    send = (m) => this.sent.push(m);
  }
  const f = new Fielded('f');
  f.store = 1;
  assert.ok(f.sent.length > 0);
});

test('JSON.stringify goes through toJSON, by JSON rules', () => {
  const [a, b] = pair();
  // Keys in the engine's order (by bytes, the same on every node).
  const doc = { bytes: new Uint8Array([7, 8]), m: { k: [{}] }, n: [1, -0, 1.5, NaN, Infinity], s: 'q"\\\n\u0001é', t: true, z: null };
  a.store = doc;
  assert.equal(JSON.stringify(b.store), JSON.stringify(doc));
  assert.equal(JSON.stringify(b.store, null, 2), JSON.stringify(doc, null, 2));
  assert.equal(JSON.stringify({ wrapped: b.store.m }), JSON.stringify({ wrapped: doc.m }));
  assert.deepStrictEqual(b.store.m.toJSON(), { k: [{}] });
  assert.equal(Object.hasOwn(b.store, 'toJSON'), false);
  b.store.shared = { x: 1 };
  b.store.twice = [b.store.shared, b.store.shared];
  assert.equal(JSON.stringify(a.store.twice), '[{"x":1},{"x":1}]', 'a shared object is written at each reference');
  b.store.m.self = b.store.m;
  assert.throws(() => JSON.stringify(a.store), { name: 'TypeError', code: 'CYCLE' });
  delete b.store.m.self;
  b.store.big = 2n ** 60n;
  assert.throws(() => JSON.stringify(a.store), { name: 'TypeError', code: 'BIGINT' });
  // A key named toJSON is data.
  a.store = { toJSON: 'data', x: 1 };
  assert.equal(JSON.stringify(b.store), '{"toJSON":"data","x":1}');
});

test('deep values: written at once up to 500 levels; deeper documents are built step by step', () => {
  const net = new SyncNet({ wire: 'none' });
  const a = net.join('a', { manualTime: true });
  const b = net.join('b', { manualTime: true });
  const nest = (d) => {
    let v = 0;
    for (let i = 0; i < d; i++) v = i % 2 ? [v] : { v };
    return v;
  };
  a.store = nest(500);
  assert.throws(() => {
    a.store = nest(501);
  }, { code: 'TOO_DEEP' });
  a.store = { list: [] };
  assert.throws(() => a.store.list.push(nest(600)), { code: 'TOO_DEEP' });
  assert.deepEqual(b.store, { list: [] });
  a.store = {};
  let cur = a.store;
  for (let i = 0; i < 5000; i++) {
    cur.x = {};
    cur = cur.x;
  }
  for (let i = 0; i < 3; i++) for (const n of [a, b]) n._advance(1100);
  const late = net.join('late', { manualTime: true });
  late.sync();
  assert.deepEqual(late.snapshot(), a.snapshot());
  let depth = 0;
  for (let o = late.store; o.x !== undefined; o = o.x) depth++;
  assert.equal(depth, 5000);
  late.store.y = 1;
  assert.equal(b.store.y, 1, 'every node still works');
});

test('reads served from the read cache are never stale', async () => {
  const [a, b] = pair();
  a.store = { x: 0, list: [0, 1, 2], m: { k: 'v' } };
  const root = b.store;
  const list = b.store.list;
  for (let round = 1; round <= 5; round++) {
    // Enough reads to be served whole from the cache...
    for (let i = 0; i < 100; i++) assert.equal(root.x, round - 1);
    for (let i = 0; i < 100; i++) assert.equal(list[i % 3], i % 3 === 0 ? round - 1 : i % 3);
    assert.deepEqual(Object.keys(root.m), ['k', ...Array.from({ length: round - 1 }, (_, i) => `r${i + 1}`)]);
    // ...then a remote write, a local write, and reads in a listener.
    let seen = null;
    const listener = () => {
      seen = [root.x, list[0], list.length];
    };
    root.on('x', listener);
    a.store.x = round;
    assert.deepEqual(seen, [round, round - 1, 3 + round - 1]);
    root.off('x', listener);
    a.store.list[0] = round;
    b.store.list.push(round);
    assert.equal(list[0], round);
    assert.equal(list.length, 3 + round);
    assert.equal(list[list.length - 1], round);
    b.store.m[`r${round}`] = round;
    assert.equal(root.m[`r${round}`], round);
    assert.equal(root.x, round);
    if (round % 2) await new Promise(setImmediate); // a task boundary drops the cache too
  }
  assert.deepStrictEqual(b.store, a.store);
});

test('close: waiting locks reject with CLOSED even when sending the goodbye throws', async () => {
  const net = new SyncNet({ wire: 'none' });
  const a = net.join('a');
  const b = net.join('b');
  a.store = { m: {} };
  await a.lock(a.store.m);
  const waiting = b.lock(b.store.m);
  b.send = () => {
    throw new Error('link down');
  };
  assert.throws(() => b.close(), { message: 'link down' }, 'close() reports what its goodbye threw');
  await assert.rejects(waiting, { code: 'CLOSED' });
  await assert.rejects(b.lock(b.store.m), { code: 'CLOSED' });
});

test('close: waiting locks reject with CLOSED, messages are ignored, the store stays readable', async () => {
  const net = new SyncNet({ wire: 'none' });
  const a = net.join('a');
  const b = net.join('b');
  a.store = { m: { x: 1 } };
  await a.lock(a.store.m);
  const waiting = b.lock(b.store.m);
  b.close();
  await assert.rejects(waiting, { code: 'CLOSED' });
  await assert.rejects(b.lock(b.store.m), { code: 'CLOSED' });
  assert.throws(() => b.sync(), { code: 'CLOSED' });
  assert.throws(() => b.release(b.store.m), { code: 'CLOSED' });
  a.store.m.x = 2;
  assert.equal(b.store.m.x, 1, 'a closed node ignores messages');
  b.close(); // twice is fine
  a.release(a.store.m);
  a.store.m.x = 3;
  assert.equal(a.store.m.x, 3, 'nobody waits for the closed node');
  // A lock held when the node closed: close freed it, release refuses.
  await a.lock(a.store.m);
  a.close();
  const sent = net.sent;
  assert.throws(() => a.release(a.store.m), { code: 'CLOSED' });
  assert.equal(net.sent, sent, 'a closed node sends nothing');
});
