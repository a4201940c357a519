'use strict';
// The workloads, written once against the system interface, after
// bench/src/workload.rs.
//
// A system is a class with `static pair()` (two replicas of one empty
// document holding the roots `map`, `array`, `items` and `graph`, the second
// made from the first's snapshot), `static join(sender)` (a fresh replica
// given the sender's whole document), `static bytes(update)`, and replicas
// with `set(key, value)`, `push(value)`, `insert(index, value)`,
// `remove(index)` (each one local edit, returning the update that carries it
// to a peer), `apply(update)`, `build(root, entries)` (one local
// transaction) and `walk(root, visitor)`.
//
// Incremental workloads replay a live app: replica A makes one edit, encodes
// it, and replica B applies it at once (or, for two_writers, later, one by
// one). Snapshot workloads build a document on A in one transaction and send
// it whole to a fresh B. Every workload ends by checking that the replicas
// converged to the expected state; peak memory is read before that check.

const { Totals, canonical } = require('./state');
const { peakBytes } = require('./memory');

const WORKLOADS = {
  map_set: { n: 100_000, incremental: true, run: mapSet },
  map_overwrite: { n: 100_000, incremental: true, run: mapOverwrite },
  array_push: { n: 100_000, incremental: true, run: arrayPush },
  nested: { n: 10_000, incremental: false, run: nested },
  two_writers: { n: 100_000, incremental: true, run: twoWriters },
  seq_stress: { n: 100_000, incremental: true, run: seqStress },
  graph_sync: { n: 10_000, incremental: false, run: graphSync },
};

/**
 * Times the edits and applies of an incremental workload. With `phases`
 * off it only counts; with it on it reads the clock around every edit and
 * apply (about 0.1 µs a read), so its sums may exceed an untimed total.
 */
class Meter {
  constructor(S, phases) {
    this.S = S;
    this.phases = phases;
    this.editMs = 0;
    this.applyMs = 0;
    this.bytes = 0;
    this.ops = 0;
  }

  edit(update) {
    this.bytes += this.S.bytes(update);
    this.ops++;
    return update;
  }

  report(totalMs, status, peak) {
    const r = { ops: this.ops, totalMs, updateBytes: this.bytes, peakBytes: peak, status };
    if (this.phases) {
      r.editMs = this.editMs;
      r.applyMs = this.applyMs;
    }
    return r;
  }
}

function fail(why) {
  return { fail: why };
}

const OK = 'ok';

/** Checks that the replicas converged and that `root` holds what `expected` says. */
function verify(replicas, root, expected) {
  const reference = canonical(replicas[0]);
  for (let i = 1; i < replicas.length; i++) {
    if (canonical(replicas[i]) !== reference) return fail(`replica ${i} differs from replica 0`);
  }
  return check(Totals.of(replicas[0], root), expected);
}

function check(got, expected) {
  for (const name of Object.keys(expected)) {
    if (got[name] !== expected[name]) return fail(`${name}: expected ${expected[name]}, got ${got[name]}`);
  }
  if (got.others !== 0) return fail(`${got.others} values of an unexpected type`);
  return OK;
}

const sumBelow = (n) => (n * (n - 1)) / 2;

function mapSet(S, n, phases) {
  const [a, b] = S.pair();
  const m = new Meter(S, phases);
  const start = performance.now();
  if (phases) {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const u = m.edit(a.set(`k${i}`, i));
      const t1 = performance.now();
      b.apply(u);
      const t2 = performance.now();
      m.editMs += t1 - t0;
      m.applyMs += t2 - t1;
    }
  } else {
    for (let i = 0; i < n; i++) b.apply(m.edit(a.set(`k${i}`, i)));
  }
  const total = performance.now() - start;
  const peak = peakBytes();
  const status = verify([a, b], 'map', { maps: 1, ints: n, intSum: sumBelow(n) });
  return m.report(total, status, peak);
}

function mapOverwrite(S, n, phases) {
  const HOT = 100;
  const [a, b] = S.pair();
  const m = new Meter(S, phases);
  const start = performance.now();
  if (phases) {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const u = m.edit(a.set(`k${i % HOT}`, i));
      const t1 = performance.now();
      b.apply(u);
      const t2 = performance.now();
      m.editMs += t1 - t0;
      m.applyMs += t2 - t1;
    }
  } else {
    for (let i = 0; i < n; i++) b.apply(m.edit(a.set(`k${i % HOT}`, i)));
  }
  const total = performance.now() - start;
  const peak = peakBytes();
  // Each hot key ends with the last value written to it.
  let last = 0;
  for (let i = Math.max(0, n - HOT); i < n; i++) last += i;
  const status = verify([a, b], 'map', { maps: 1, ints: Math.min(n, HOT), intSum: last });
  return m.report(total, status, peak);
}

function arrayPush(S, n, phases) {
  const [a, b] = S.pair();
  const m = new Meter(S, phases);
  const start = performance.now();
  if (phases) {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const u = m.edit(a.push(i));
      const t1 = performance.now();
      b.apply(u);
      const t2 = performance.now();
      m.editMs += t1 - t0;
      m.applyMs += t2 - t1;
    }
  } else {
    for (let i = 0; i < n; i++) b.apply(m.edit(a.push(i)));
  }
  const total = performance.now() - start;
  const peak = peakBytes();
  const status = verify([a, b], 'array', { arrays: 1, ints: n, intSum: sumBelow(n) });
  return m.report(total, status, peak);
}

function twoWriters(S, n, phases) {
  const KEYS = 1000;
  const per = Math.floor(n / 2);
  const [a, b] = S.pair();
  const m = new Meter(S, phases);
  const fromA = new Array(per);
  const fromB = new Array(per);
  const start = performance.now();
  let t0 = performance.now();
  for (let i = 0; i < per; i++) fromA[i] = m.edit(a.set(`k${i % KEYS}`, i));
  for (let i = 0; i < per; i++) fromB[i] = m.edit(b.set(`k${i % KEYS}`, 1_000_000 + i));
  let t1 = performance.now();
  if (phases) m.editMs += t1 - t0;
  t0 = performance.now();
  for (let i = 0; i < per; i++) b.apply(fromA[i]);
  for (let i = 0; i < per; i++) a.apply(fromB[i]);
  t1 = performance.now();
  if (phases) m.applyMs += t1 - t0;
  const total = performance.now() - start;
  const peak = peakBytes();
  // Which writer wins a key is each library's rule; only the key count is fixed.
  const status = verify([a, b], 'map', { maps: 1, ints: Math.min(per, KEYS) });
  return m.report(total, status, peak);
}

/** A small seeded generator (mulberry32), the same sequence for every system. */
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seqStress(S, n, phases) {
  const [a, b] = S.pair();
  const m = new Meter(S, phases);
  const random = rng(42);
  let len = 0;
  let step = 0;
  const start = performance.now();
  while (len < n) {
    let insert;
    let index;
    if (random() < 0.8) {
      insert = true;
      index = Math.floor(random() * (len + 1));
    } else if (len > 0) {
      insert = false;
      index = Math.floor(random() * len);
    } else {
      continue;
    }
    const t0 = phases ? performance.now() : 0;
    let u;
    if (insert) {
      u = a.insert(index, step);
      len++;
    } else {
      u = a.remove(index);
      len--;
    }
    m.edit(u);
    step++;
    if (phases) {
      const t1 = performance.now();
      b.apply(u);
      const t2 = performance.now();
      m.editMs += t1 - t0;
      m.applyMs += t2 - t1;
    } else {
      b.apply(u);
    }
  }
  const total = performance.now() - start;
  const peak = peakBytes();
  const status = verify([a, b], 'array', { arrays: 1, ints: n });
  return m.report(total, status, peak);
}

/**
 * Builds `entries` into `root` on a fresh A, sends A's whole document to a
 * fresh B, and walks `root` on B.
 */
function snapshotSync(S, root, entries, objects) {
  const a = S.create(1);
  const start = performance.now();
  a.build(root, entries);
  const build = performance.now() - start;
  const joined = S.join(a, 2);
  const t = performance.now();
  const read = Totals.of(joined.replica, root);
  const readMs = performance.now() - t;
  const total = performance.now() - start;
  return {
    a,
    b: joined.replica,
    read,
    report: {
      ops: objects,
      totalMs: total,
      buildMs: build,
      snapshotBytes: joined.bytes,
      encodeMs: joined.encodeMs,
      decodeMs: joined.decodeMs,
      readMs,
      peakBytes: peakBytes(),
    },
  };
}

function nested(S, n) {
  const FIELDS = 10;
  const TAGS = 10;
  const int = (i, j) => i * 100 + j;
  function* entries() {
    for (let i = 0; i < n; i++) {
      const item = {};
      for (let j = 0; j < FIELDS; j++) item[`f${j}`] = j < FIELDS / 2 ? int(i, j) : `v${i}-${j}`;
      const tags = [];
      for (let k = 0; k < TAGS; k++) tags.push(int(i, 50 + k));
      item.tags = tags;
      yield [`item${i}`, item];
    }
  }
  const run = snapshotSync(S, 'items', entries(), n);
  let intSum = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < FIELDS / 2; j++) intSum += int(i, j);
    for (let k = 0; k < TAGS; k++) intSum += int(i, 50 + k);
  }
  const expected = {
    maps: 1 + n,
    arrays: n,
    ints: n * (FIELDS / 2 + TAGS),
    intSum,
    strs: (n * FIELDS) / 2,
  };
  let status = check(run.read, expected);
  if (status === OK) status = verify([run.a, run.b], 'items', expected);
  return { ...run.report, status };
}

function graphSync(S, n) {
  const FANOUT = 1000;
  const children = Math.min(n, FANOUT);
  const parents = Math.max(1, Math.floor(n / FANOUT));
  function* entries() {
    for (let i = 0; i < parents; i++) {
      const kids = {};
      for (let j = 0; j < children; j++) kids[`c${j}`] = { v: i * children + j };
      yield [`m${i}`, kids];
    }
  }
  const objects = parents * children;
  const run = snapshotSync(S, 'graph', entries(), objects);
  // As in the Rust benchmark, the graph is checked by counts and sums on
  // both sides rather than by a canonical export.
  const expected = { maps: 1 + parents + objects, arrays: 0, ints: objects, intSum: sumBelow(objects), strs: 0 };
  let status = check(run.read, expected);
  if (status === OK) status = check(Totals.of(run.a, 'graph'), expected);
  return { ...run.report, status };
}

/**
 * Runs `workload` at size `n` on system `S`. An incremental workload runs
 * twice: once untimed inside the loop, for its total, bytes, peak memory and
 * result, then with every edit and apply timed, for the split.
 */
function run(S, name, n) {
  const w = WORKLOADS[name];
  if (w === undefined) throw new Error(`unknown workload ${name}`);
  const report = w.run(S, n, false);
  if (w.incremental && report.status === OK) {
    const timed = w.run(S, n, true);
    report.editMs = timed.editMs;
    report.applyMs = timed.applyMs;
    report.status = timed.status;
  }
  return report;
}

module.exports = { WORKLOADS, run, rng, OK };
