'use strict';
// The seed README's "Basic local example", as written (examples/basic.js,
// whose `require('..')` is this package), run in its own process: its
// output is checked, and it ends by itself (the timers do not hold it).

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const path = require('node:path');

test('the seed README example runs as written, prints what it should and ends by itself', () => {
  const example = path.join(__dirname, '..', 'examples', 'basic.js');
  const out = execFileSync(process.execPath, [example], { encoding: 'utf8', timeout: 20000 });
  const lines = out.split('\n').filter((l) => l !== '');

  // The Network logs every delivery: sender, message, recipient.
  const deliveries = lines.filter((l) => /^(host|client) /.test(l));
  assert.ok(deliveries.length >= 10, out);
  for (const line of deliveries) {
    const m = /^(host|client) (\{.*\}) (undefined|\d+)$/.exec(line);
    assert.ok(m, `a delivery: ${line}`);
    const message = JSON.parse(m[2]);
    assert.equal(typeof message.from, 'string');
  }

  // What the program itself prints; the intentional error with its stack.
  const rest = lines.filter((l) => !/^(host|client) /.test(l));
  const error = rest.findIndex((l) => l.startsWith('Intentional error:'));
  assert.equal(rest[error], 'Intentional error: Error: Object is locked');
  const after = rest.slice(error + 1).filter((l) => !/^\s+at /.test(l) && !/^\s*code: 'LOCKED'$/.test(l) && l !== '}');
  assert.deepEqual(rest.slice(0, error), [
    'Root element has changed.',
    'elements = [ 1, 2, 3 ]',
    'Locking',
    'Locked',
    'Trying to create a dead lock',
  ]);
  assert.deepEqual(after, [
    // host's listeners on elements: the whole object, then index 0
    'Index[0] = 999',
    'Index[0] = 999',
    'Index[1] = 888',
    // unshift and sort: one mass change each
    'Index[undefined] = undefined',
    'Index[undefined] = undefined',
    'Unlocking',
  ]);
  // The error's stack points at the program, not into the engine.
  assert.match(rest[error + 1], /^\s+at /);
  assert.ok(!rest[error + 1].includes('wasm'), rest[error + 1]);

  // The client wrote under its lock, then released it: the last delivery.
  assert.match(deliveries[deliveries.length - 1], /^client .*Unlock/);
});
