'use strict';
// Property tests (fast-check):
// - 3 to 5 nodes make random writes of every kind (map sets, deletes,
//   assigns, every array method, root replacements, locks, syncs, time
//   passing) while messages are delivered in random interleavings that keep
//   each sender's order; once everything is delivered and the locks are
//   released, every node's snapshot is byte-identical.
// - A lone writer's array methods give what the same calls give on a plain
//   array (with the package's dense-array rules), on the writer and on a
//   node that receives its messages.
// A failure prints fast-check's seed and path; replay with FC_SEED and
// FC_PATH (FC_RUNS sets the number of runs).

const test = require('node:test');
const assert = require('node:assert/strict');
const fc = require('fast-check');
const { Facsimile, mulberry32 } = require('./support/net');

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const HOSTS = ['alpha', 'bravo', 'charlie', 'delta', 'echo'];
const KEYS = ['a', 'b', 'c', 'd', 'e'];
const EXPECTED = new Set(['NOT_OWNER', 'LOCKED', 'NOT_LOCKED', 'SYNCING', 'UNKNOWN_OBJECT', 'DETACHED', 'LOST', 'CLOSED']);

function settings(runs) {
  const s = { numRuns: Number(process.env.FC_RUNS || runs), verbose: 1 };
  if (process.env.FC_SEED) s.seed = Number(process.env.FC_SEED);
  if (process.env.FC_PATH) s.path = process.env.FC_PATH;
  return s;
}

// ------------------------------------------------------------ the network

// Per (sender, receiver) FIFO queues; deliveries pick a random non-empty
// queue, so senders interleave freely while each one's order holds.
class Net {
  constructor(count, binary) {
    this.nodes = [];
    this.queues = [];
    for (let i = 0; i < count; i++) {
      const node = new Facsimile(HOSTS[i], { manualTime: true, binary });
      this.nodes.push(node);
      this.queues.push(Array.from({ length: count }, () => []));
      node.send = (m, to) => {
        for (let j = 0; j < count; j++) if (j !== i) this.queues[i][j].push([m, to]);
      };
    }
  }

  ready() {
    const out = [];
    for (let i = 0; i < this.queues.length; i++) {
      for (let j = 0; j < this.queues.length; j++) if (this.queues[i][j].length > 0) out.push([i, j]);
    }
    return out;
  }

  deliver(choice) {
    const ready = this.ready();
    if (ready.length === 0) return false;
    const [i, j] = ready[choice % ready.length];
    const [m, to] = this.queues[i][j].shift();
    this.nodes[j].receive(m, to);
    return true;
  }

  deliverAll(rng) {
    let n = 0;
    while (this.deliver(Math.floor(rng() * 1e9))) {
      if (++n > 1e6) throw new Error('the network does not quiesce');
    }
  }
}

// ---------------------------------------------------------------- commands

const scalar = fc.oneof(
  fc.integer({ min: -5, max: 5 }),
  fc.constantFrom('x', 'y', 'z', ''),
  fc.boolean(),
  fc.constant(null),
  fc.double({ noDefaultInfinity: false }),
);
const tree = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalar, tie('array'), tie('map'), tie('ref')),
  array: fc.array(tie('value'), { maxLength: 3 }).map((a) => ({ kind: 'array', a })),
  map: fc.dictionary(fc.constantFrom(...KEYS), tie('value'), { maxKeys: 3 }).map((m) => ({ kind: 'map', m })),
  ref: fc.array(fc.nat(7), { maxLength: 3 }).map((path) => ({ kind: 'ref', path })),
})).value;

const path = fc.array(fc.nat(7), { maxLength: 4 });
const index = fc.integer({ min: -4, max: 6 });
const arrayCall = fc.oneof(
  fc.tuple(fc.constant('push'), fc.array(tree, { minLength: 1, maxLength: 3 })),
  fc.tuple(fc.constant('pop'), fc.constant([])),
  fc.tuple(fc.constant('shift'), fc.constant([])),
  fc.tuple(fc.constant('unshift'), fc.array(tree, { minLength: 1, maxLength: 2 })),
  fc.tuple(fc.constant('splice'), fc.tuple(index, fc.nat(3), fc.array(tree, { maxLength: 2 })).map(([s, d, items]) => [s, d, ...items])),
  fc.tuple(fc.constant('reverse'), fc.constant([])),
  fc.tuple(fc.constant('sort'), fc.constant([])),
  fc.tuple(fc.constant('fill'), fc.tuple(tree, index, index)),
  fc.tuple(fc.constant('copyWithin'), fc.tuple(index, index, index)),
  fc.tuple(fc.constant('set'), fc.tuple(fc.nat(5), tree)),
  fc.tuple(fc.constant('length'), fc.tuple(fc.nat(5))),
);
const mapCall = fc.oneof(
  fc.tuple(fc.constant('set'), fc.tuple(fc.constantFrom(...KEYS), tree)),
  fc.tuple(fc.constant('delete'), fc.tuple(fc.constantFrom(...KEYS))),
  fc.tuple(fc.constant('assign'), fc.tuple(fc.dictionary(fc.constantFrom(...KEYS), tree, { maxKeys: 3 }))),
  fc.tuple(fc.constant('objectAssign'), fc.tuple(fc.dictionary(fc.constantFrom(...KEYS), tree, { maxKeys: 2 }))),
);
const command = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('deliver'), n: fc.nat(12), choice: fc.nat() }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant('write'), node: fc.nat(4), path, map: mapCall, array: arrayCall }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('root'), node: fc.nat(4), value: tree }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constantFrom('lock', 'request', 'release'), node: fc.nat(4), path }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('advance'), node: fc.nat(4), ms: fc.constantFrom(10, 500, 1100) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('sync'), node: fc.nat(4) }) },
);

// The object a path leads to from a node's root (or the root itself).
function follow(node, choices) {
  let cur = node.store;
  if (typeof cur !== 'object' || cur === null) return null;
  for (const c of choices) {
    const children = Object.values(cur).filter((v) => typeof v === 'object' && v !== null && !(v instanceof Uint8Array));
    if (children.length === 0) break;
    cur = children[c % children.length];
  }
  return cur;
}

// A generated value as the program would write it on `node`.
function build(node, v) {
  if (v === null || typeof v !== 'object') return v;
  if (v.kind === 'array') return v.a.map((x) => build(node, x));
  if (v.kind === 'map') {
    const out = {};
    for (const [k, x] of Object.entries(v.m)) out[k] = build(node, x);
    return out;
  }
  const target = follow(node, v.path);
  return target === null ? 0 : target;
}

// The document read through the proxies, objects numbered in the order
// they are first met (shared references and cycles included).
function dump(root) {
  const seen = new Map();
  const walk = (v) => {
    if (typeof v !== 'object' || v === null || v instanceof Uint8Array) {
      return typeof v === 'number' ? `n${Object.is(v, -0) ? '-0' : String(v)}` : JSON.stringify(v) ?? String(v);
    }
    if (seen.has(v)) return `#${seen.get(v)}`;
    seen.set(v, seen.size);
    if (Array.isArray(v)) return `[${v.map(walk).join(',')}]`;
    return `{${Object.keys(v).map((k) => `${JSON.stringify(k)}:${walk(v[k])}`).join(',')}}`;
  };
  return walk(root);
}

function expected(e, what) {
  if (!(e && EXPECTED.has(e.code))) {
    throw new Error(`${what}: unexpected ${e && e.code} ${e && e.stack}`);
  }
}

function run(net, locks, cmd) {
  if (cmd.t === 'deliver') {
    for (let k = 0; k < cmd.n; k++) net.deliver(cmd.choice + k * 7919);
    return;
  }
  const node = net.nodes[cmd.node % net.nodes.length];
  const what = `${cmd.t} on ${node.hostname}`;
  try {
    switch (cmd.t) {
      case 'root':
        node.store = build(node, cmd.value);
        break;
      case 'advance':
        node._advance(cmd.ms);
        break;
      case 'sync':
        // The first node keeps the document, so that someone can answer.
        if (node !== net.nodes[0]) node.sync();
        break;
      case 'lock':
      case 'request':
      case 'release': {
        const obj = follow(node, cmd.path);
        if (obj === null) break;
        if (cmd.t === 'release') {
          node.release(obj);
        } else {
          node[cmd.t](obj).catch((e) => expected(e, what));
          locks.push([node, obj]);
        }
        break;
      }
      case 'write': {
        const obj = follow(node, cmd.path);
        if (obj === null) break;
        if (Array.isArray(obj)) {
          const [name, args] = cmd.array;
          if (name === 'set') obj[args[0]] = build(node, args[1]);
          else if (name === 'length') obj.length = args[0];
          else if (name === 'sort') obj.sort((x, y) => (String(x) < String(y) ? -1 : String(x) > String(y) ? 1 : 0));
          else if (name === 'copyWithin') obj.copyWithin(...args);
          else obj[name](...args.map((x) => build(node, x)));
        } else {
          const [name, args] = cmd.map;
          if (name === 'set') obj[args[0]] = build(node, args[1]);
          else if (name === 'delete') delete obj[args[0]];
          else {
            const src = {};
            for (const [k, x] of Object.entries(args[0])) src[k] = build(node, x);
            if (name === 'assign') node.assign(obj, src);
            else Object.assign(obj, src);
          }
        }
        break;
      }
      default:
        throw new Error(cmd.t);
    }
  } catch (e) {
    expected(e, what);
  }
}

// Delivers everything, releases every lock, lets time pass until every
// sync completed (a fetch that goes unanswered is retried after the sync
// timeout) and reclamation ran.
async function quiesce(net, locks, rng) {
  let extra = 4;
  for (let round = 0; extra > 0; round++) {
    if (round > 200) throw new Error('the nodes do not settle in 200 virtual seconds');
    if (net.nodes.every((n) => n.ready)) extra--;
    net.deliverAll(rng);
    await new Promise(setImmediate); // lock promises settle
    for (const [node, obj] of locks) {
      try {
        node.release(obj);
      } catch (e) {
        expected(e, `release on ${node.hostname}`);
      }
    }
    net.deliverAll(rng);
    for (const node of net.nodes) node._advance(1100);
    net.deliverAll(rng);
  }
}

for (const binary of [false, true]) {
  test(`${binary ? 'binary' : 'JSON'}: 3 to 5 nodes, random writes, locks and interleavings converge byte for byte`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 3, max: 5 }),
        fc.array(command, { minLength: 5, maxLength: 150 }),
        fc.nat(),
        async (count, commands, seed) => {
          const net = new Net(count, binary);
          const rng = mulberry32(seed);
          net.nodes[0].store = { list: [1, 2, 3], map: { a: 1 }, nested: [[1], { b: [2] }] };
          net.deliverAll(rng);
          const locks = [];
          for (const cmd of commands) run(net, locks, cmd);
          await quiesce(net, locks, rng);
          for (const node of net.nodes) assert.ok(node.ready, `${node.hostname} finished its sync`);
          const want = hex(net.nodes[0].snapshot());
          for (const node of net.nodes.slice(1)) {
            assert.equal(hex(node.snapshot()), want, `${node.hostname} converged with ${net.nodes[0].hostname}`);
          }
          // The proxies read the same document everywhere.
          const doc = dump(net.nodes[0].store);
          for (const node of net.nodes.slice(1)) assert.equal(dump(node.store), doc);
          for (const node of net.nodes) node.close();
        },
      ),
      settings(binary ? 2500 : 4000),
    );
  });
}

// ------------------------------------------------------- lone writer model

// The package's arrays are dense: a write past the end pads with null, as
// does a longer length; a deleted element becomes null.
function modelCall(model, name, args) {
  switch (name) {
    case 'set': {
      const [i, v] = args;
      while (model.length < i) model.push(null);
      model[i] = v;
      return undefined;
    }
    case 'length': {
      const [n] = args;
      if (n < model.length) model.length = n;
      while (model.length < n) model.push(null);
      return undefined;
    }
    case 'delete':
      if (args[0] < model.length) model[args[0]] = null;
      return undefined;
    default:
      return model[name](...args);
  }
}

function proxyCall(arr, name, args) {
  switch (name) {
    case 'set':
      arr[args[0]] = args[1];
      return undefined;
    case 'length':
      arr.length = args[0];
      return undefined;
    case 'delete':
      delete arr[args[0]];
      return undefined;
    default:
      return arr[name](...args);
  }
}

const plainValue = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: -20, max: 20 }) },
  { weight: 2, arbitrary: fc.constantFrom('a', 'b', 'B', '10', '9', '') },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false) },
  { weight: 1, arbitrary: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 2 }) },
);
const comparators = {
  none: undefined,
  numeric: (x, y) => (typeof x === 'number' && typeof y === 'number' ? x - y : 0),
  string: (x, y) => (String(x) < String(y) ? -1 : String(x) > String(y) ? 1 : 0),
  descending: (x, y) => (String(y) < String(x) ? -1 : String(y) > String(x) ? 1 : 0),
};
const loneCall = fc.oneof(
  fc.tuple(fc.constant('push'), fc.array(plainValue, { maxLength: 3 })),
  fc.tuple(fc.constant('pop'), fc.constant([])),
  fc.tuple(fc.constant('shift'), fc.constant([])),
  fc.tuple(fc.constant('unshift'), fc.array(plainValue, { maxLength: 3 })),
  fc.tuple(
    fc.constant('splice'),
    fc.oneof(
      fc.tuple(index),
      fc.tuple(index, fc.integer({ min: -1, max: 4 })),
      fc.tuple(index, fc.nat(4), plainValue, plainValue),
      fc.constant([]),
    ),
  ),
  fc.tuple(fc.constant('reverse'), fc.constant([])),
  fc.tuple(fc.constant('sort'), fc.constantFrom(...Object.keys(comparators)).map((c) => (c === 'none' ? [] : [comparators[c]]))),
  fc.tuple(fc.constant('fill'), fc.oneof(fc.tuple(plainValue), fc.tuple(plainValue, index), fc.tuple(plainValue, index, index))),
  fc.tuple(fc.constant('copyWithin'), fc.oneof(fc.tuple(index, index), fc.tuple(index, index, index))),
  fc.tuple(fc.constant('set'), fc.tuple(fc.nat(8), plainValue)),
  fc.tuple(fc.constant('length'), fc.tuple(fc.nat(8))),
  fc.tuple(fc.constant('delete'), fc.tuple(fc.nat(6))),
);

// What an array method returned, and the array on the writer and the
// reader, against what the same call did to a plain array (`model`).
function agrees(arr, reader, model, got, want, what) {
  if (want === model) assert.equal(got, arr, `${what} returns the array`);
  else assert.deepStrictEqual(got, want, `${what} returns`);
  assert.deepStrictEqual(arr, model, what);
  assert.deepStrictEqual(reader.store.list, model, `${what} on the reader`);
}

test("a lone writer's array methods give what Array's give, on the writer and on a reader", () => {
  fc.assert(
    fc.property(fc.array(plainValue, { maxLength: 8 }), fc.array(loneCall, { maxLength: 30 }), fc.boolean(), (initial, calls, lock) => {
      const writer = new Facsimile('writer');
      const reader = new Facsimile('reader');
      writer.send = (...m) => reader.receive(...m);
      reader.send = (...m) => writer.receive(...m);
      writer.store = { list: initial };
      const arr = writer.store.list;
      if (lock) writer.lock(arr);
      const model = JSON.parse(JSON.stringify(initial));
      for (const [name, args] of calls) {
        const want = modelCall(model, name, args);
        const got = proxyCall(arr, name, args);
        const what = `${name}(${args.map((a) => (typeof a === 'function' ? 'fn' : JSON.stringify(a))).join(', ')})`;
        agrees(arr, reader, model, got, want, what);
      }
      assert.equal(hex(writer.snapshot()), hex(reader.snapshot()));
      writer.close();
      reader.close();
    }),
    settings(4000),
  );
});

// -------------------------------------- conversions and getters that write

// What an argument's conversion (valueOf) or a stored value's getter does
// to the array first.
const effect = fc.oneof(
  fc.tuple(fc.constant('push'), fc.array(plainValue, { minLength: 1, maxLength: 2 })),
  fc.tuple(fc.constant('pop'), fc.constant([])),
  fc.tuple(fc.constant('shift'), fc.constant([])),
  fc.tuple(fc.constant('unshift'), fc.array(plainValue, { minLength: 1, maxLength: 2 })),
  fc.tuple(fc.constant('reverse'), fc.constant([])),
  fc.tuple(fc.constant('length'), fc.tuple(fc.nat(7))),
  fc.tuple(fc.constant('set'), fc.tuple(fc.nat(6), plainValue)),
);
// An argument: a number, or an object converted to one after its effect.
const arg = fc.oneof(
  { weight: 2, arbitrary: index.map((n) => ({ n })) },
  { weight: 3, arbitrary: fc.record({ n: index, effect }) },
);
// A value: plain data, or an object whose getter has an effect.
const item = fc.oneof(
  { weight: 2, arbitrary: plainValue.map((v) => ({ v })) },
  { weight: 1, arbitrary: fc.record({ g: plainValue, effect }) },
);
// The calls, as the kinds of their arguments in order.
const args = (...kinds) => fc.tuple(...kinds.map((k) => (k === 'arg' ? arg : item)));
const convertingCall = fc.oneof(
  fc.tuple(fc.constant('copyWithin'), fc.oneof(args('arg', 'arg'), args('arg', 'arg', 'arg'))),
  fc.tuple(fc.constant('fill'), fc.oneof(args('item', 'arg'), args('item', 'arg', 'arg'))),
  fc.tuple(fc.constant('splice'), fc.oneof(args('arg'), args('arg', 'arg'), args('arg', 'arg', 'item', 'item'))),
  fc.tuple(fc.constant('push'), fc.array(item, { maxLength: 3 })),
  fc.tuple(fc.constant('unshift'), fc.array(item, { minLength: 1, maxLength: 3 })),
);

function describe(name, specs) {
  const one = (s) => {
    if ('v' in s) return JSON.stringify(s.v);
    const fx = `${s.effect[0]}(${s.effect[1].map((x) => JSON.stringify(x)).join(', ')})`;
    return 'n' in s ? `${s.n} after ${fx}` : `{ g: ${JSON.stringify(s.g)} } after ${fx}`;
  };
  return `${name}(${specs.map((s) => ('n' in s && !s.effect ? String(s.n) : one(s))).join(', ')})`;
}

// The arguments as the program passes them, their effects on `array` made
// by `call(array, name, args)`.
function realize(specs, array, call) {
  return specs.map((s) => {
    if ('v' in s) return s.v;
    if (!s.effect) return s.n;
    const [name, args] = s.effect;
    if ('n' in s) {
      return {
        valueOf() {
          call(array, name, args);
          return s.n;
        },
      };
    }
    return {
      get g() {
        call(array, name, args);
        return s.g;
      },
    };
  });
}

test("a lone writer's array methods whose conversions and getters write the array give what Array's give", () => {
  fc.assert(
    fc.property(fc.array(plainValue, { maxLength: 6 }), fc.array(convertingCall, { maxLength: 15 }), (initial, calls) => {
      const writer = new Facsimile('writer');
      const reader = new Facsimile('reader');
      writer.send = (...m) => reader.receive(...m);
      reader.send = (...m) => writer.receive(...m);
      writer.store = { list: initial };
      const arr = writer.store.list;
      const model = JSON.parse(JSON.stringify(initial));
      for (const [name, specs] of calls) {
        const what = describe(name, specs);
        // The package copies the values first (their getters run then),
        // before it reads the array; on the plain array, the same order.
        const values = realize(specs, model, modelCall).map((v, i) =>
          'g' in specs[i] ? JSON.parse(JSON.stringify(v)) : v,
        );
        // By JavaScript's generic steps (see proxy.test.js, onPlain).
        const wrapped = new Proxy(model, {});
        let want = Array.prototype[name].apply(wrapped, values);
        if (want === wrapped) want = model;
        else if (Array.isArray(want)) want = Array.from(want, (v) => (v === undefined ? null : v));
        // Arrays are dense: what a plain array leaves as a hole is null.
        for (let i = 0; i < model.length; i++) if (!(i in model)) model[i] = null;
        const got = arr[name](...realize(specs, arr, proxyCall));
        agrees(arr, reader, model, got, want, what);
      }
      assert.equal(hex(writer.snapshot()), hex(reader.snapshot()));
      writer.close();
      reader.close();
    }),
    settings(1500),
  );
});
