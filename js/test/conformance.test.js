'use strict';
// The relay client's conformance cases
// (crates/facsimile-protocol/tests/conformance.json) against the
// RelayClient that Facsimile.connect drives: the same frame sequences the
// Rust client's Session passes, step by step (step kinds:
// crates/facsimile-protocol/tests/conformance.rs).

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { readFileSync } = require('node:fs');
const { RelayClient } = require('../dist/node/facsimile_wasm.js');

const file = path.join(__dirname, '..', '..', 'crates', 'facsimile-protocol', 'tests', 'conformance.json');
const { cases } = JSON.parse(readFileSync(file, 'utf8'));
const bytes = (hex) => Uint8Array.from(Buffer.from(hex, 'hex'));
const hex = (b) => Buffer.from(b).toString('hex');
const ADMISSIONS = ['joined', 'resumed', 'sync', 'rejoin'];

test('the conformance file has its cases', () => {
  assert.ok(cases.length >= 6);
});

for (const c of cases) {
  test(`conformance: ${c.name}`, () => {
    const client = new RelayClient(c.document, c.token, c.read_only);
    c.steps.forEach((step, i) => {
      const at = `step ${i}: ${JSON.stringify(step)}`;
      if ('hello' in step) {
        assert.equal(hex(client.hello(step.hello[0], step.hello[1])), step.expect, at);
      } else if ('welcome' in step) {
        let got;
        try {
          got = ADMISSIONS[client.welcome(bytes(step.welcome))];
        } catch (e) {
          got = e.code === 'REFUSED' ? `refused:${e.message}` : e.code === 'NOT_A_RELAY' ? 'not_a_relay' : `thrown ${e.code}`;
        }
        assert.equal(got, step.expect, at);
      } else if ('send' in step) {
        const [to, m] = step.send;
        assert.equal(client.send(bytes(m), to === null ? undefined : to), step.expect, at);
      } else if ('take' in step) {
        const got = [];
        let f;
        while ((f = client.next_frame()) !== undefined) got.push(hex(f));
        assert.deepEqual(got, step.take, at);
      } else if ('receive' in step) {
        let got;
        try {
          const r = client.receive(bytes(step.receive));
          got = r === null ? 'acked' : typeof r === 'string' ? `closing:${r}` : `message:${hex(r)}`;
        } catch (e) {
          assert.equal(e.code, 'PROTOCOL', at);
          got = 'error';
        }
        assert.equal(got, step.expect, at);
      } else if ('max_message' in step) {
        assert.equal(client.relay_max_message() ?? null, step.max_message, at);
      } else if ('counters' in step) {
        assert.deepEqual([client.queued(), client.done(), client.dropped()], step.counters, at);
      } else {
        assert.fail(`unknown step ${at}`);
      }
    });
    client.free();
  });
}
