'use strict';
// Time per operation on the package's hot paths: two nodes wired
// synchronously (a write is applied on the other node before it returns),
// or a node whose messages go nowhere. Each case runs in its own process
// (three times; the median is shown).
//   node bench/hot-paths.js [N]          every case
//   node bench/hot-paths.js N CASE       one case
const { execFileSync } = require('node:child_process');
const Facsimile = require('..');

const N = Number(process.argv[2] || 100000);

function nodes(wiring, binary) {
  const a = new Facsimile('a', { binary });
  const b = new Facsimile('b', { binary });
  if (wiring === 'pair') {
    a.send = (...m) => b.receive(...m);
    b.send = (...m) => a.receive(...m);
  } else {
    a.send = () => {};
  }
  return [a, b];
}

let sink = 0;
const writes = {
  'store.x = i': (a, n) => {
    a.store = {};
    for (let i = 0; i < n; i++) a.store.x = i;
  },
  "root['k' + i] = 'v' (distinct keys)": (a, n) => {
    a.store = {};
    const root = a.store;
    for (let i = 0; i < n; i++) root[`k${i}`] = 'v';
  },
  'list.push(i)': (a, n) => {
    a.store = { list: [] };
    const list = a.store.list;
    for (let i = 0; i < n; i++) list.push(i);
  },
  'store.list.push(i)': (a, n) => {
    a.store = { list: [] };
    for (let i = 0; i < n; i++) a.store.list.push(i);
  },
};
const reads = {
  'get store.x': (b, n) => {
    for (let i = 0; i < n; i++) sink += b.store.x;
  },
  'get root.s (a string)': (b, n) => {
    const root = b.store;
    for (let i = 0; i < n; i++) sink += root.s.length;
  },
  'get root.o (an object)': (b, n) => {
    const root = b.store;
    for (let i = 0; i < n; i++) sink += root.o === root ? 1 : 0;
  },
  'get list[i % 1000]': (b, n) => {
    const list = b.store.list;
    for (let i = 0; i < n; i++) sink += list[i % 1000];
  },
  'for…of over 1000 elements (per element)': (b, n) => {
    const list = b.store.list;
    for (let i = 0; i < n / 1000; i++) for (const v of list) sink += v;
  },
  'JSON.stringify of 1000 maps (per map)': (b, n) => {
    for (let i = 0; i < n / 1000; i++) sink += JSON.stringify(b.store.maps).length;
  },
  'read, write, read (list[0]; x = i; list[1])': (b, n) => {
    const list = b.store.list;
    const root = b.store;
    for (let i = 0; i < n; i++) {
      sink += list[0];
      root.x = i;
      sink += list[1];
    }
  },
};

const cases = [];
for (const binary of [true, false]) {
  for (const wiring of ['pair', 'lone']) {
    for (const name of Object.keys(writes)) cases.push(`${name} | ${binary ? 'binary' : 'json'}, ${wiring}`);
  }
}
for (const name of Object.keys(reads)) cases.push(`${name} | binary, reader`);

function run(label, n) {
  const [name, how] = label.split(' | ');
  const [format, wiring] = how.split(', ');
  const binary = format === 'binary';
  const go = (count) => {
    if (wiring === 'reader') {
      const [a, b] = nodes('pair', binary);
      a.store = {
        x: 1,
        s: 'text',
        o: { y: 2 },
        list: Array.from({ length: 1000 }, (_, i) => i),
        maps: Array.from({ length: 1000 }, (_, i) => ({ i, name: `n${i}`, ok: true })),
      };
      const t0 = process.hrtime.bigint();
      reads[name](b, count);
      return process.hrtime.bigint() - t0;
    }
    const [a] = nodes(wiring, binary);
    const t0 = process.hrtime.bigint();
    writes[name](a, count);
    return process.hrtime.bigint() - t0;
  };
  go(Math.min(n, 5000));
  const ns = Number(go(n)) / n;
  console.log(`${label.padEnd(58)} ${ns.toFixed(0).padStart(6)} ns/op`);
}

if (process.argv[3]) {
  run(process.argv[3], N);
} else {
  // The median of three processes per case (a shared machine is noisy).
  for (const c of cases) {
    const runs = [0, 1, 2].map(() => execFileSync(process.execPath, [__filename, String(N), c], { encoding: 'utf8' }));
    const ns = (line) => Number(/(\d+) ns\/op/.exec(line)[1]);
    runs.sort((x, y) => ns(x) - ns(y));
    process.stdout.write(runs[1]);
  }
}
if (sink === 0.5) console.log(sink);
