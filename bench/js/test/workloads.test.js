'use strict';
// Every workload converges on every system at a tiny size, and a replica
// that missed an update is caught by the check.

const test = require('node:test');
const assert = require('node:assert');
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const systems = require('../src/systems');
const { WORKLOADS, run, OK } = require('../src/workloads');

const built = existsSync(join(__dirname, '..', 'node_modules', 'facsimile', 'dist', 'index.cjs'));

for (const name of systems.names) {
  const skip = name.startsWith('facsimile') && !built ? 'facsimile is not built' : false;
  test(`${name}: every workload converges`, { skip }, () => {
    const S = systems.load(name);
    for (const workload of Object.keys(WORKLOADS)) {
      const n = Math.max(20, Math.floor(WORKLOADS[workload].n / 1000));
      const report = run(S, workload, n);
      assert.strictEqual(report.status, OK, `${name} ${workload}: ${JSON.stringify(report.status)}`);
      assert.ok(report.totalMs > 0);
    }
  });

  test(`${name}: a missed update is detected`, { skip }, () => {
    const S = systems.load(name);
    const [a, b] = S.pair();
    a.set('k', 1);
    const { canonical } = require('../src/state');
    assert.notStrictEqual(canonical(a), canonical(b));
    b.apply(a.set('k2', 2));
    assert.notStrictEqual(canonical(a), canonical(b));
  });
}
