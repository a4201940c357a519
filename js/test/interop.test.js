'use strict';
// JavaScript and Rust nodes mirror one document: two nodes of this package
// and a Rust `facsimile::Node` (crates/facsimile/examples/stdio_peer.rs, a
// node whose transport is its standard input and output) write at once, a
// JavaScript node joins late, the Rust node syncs again; every snapshot is
// byte-identical. And a JavaScript node writing a number over the equal
// float (or big integer) the Rust node stored changes nothing. In both
// wire formats.
//
// The Rust peer is built with Cargo on first use, as the workspace's
// release build (a no-op after the Rust tests).

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const readline = require('node:readline');
const { release } = require('./support/cargo');
const { Facsimile } = require('./support/net');



const hex = (bytes) => Buffer.from(bytes).toString('hex');

// A Rust node behind a pipe: commands in, messages and answers out.
class RustPeer {
  constructor(bin, hostname, binary, deliver) {
    this.binary = binary;
    this.deliver = deliver;
    this.proc = spawn(bin, [hostname, binary ? 'binary' : 'json'], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.pending = 0; // lines written, not yet answered
    this.waiting = []; // resolvers of idle()
    this.answers = []; // resolvers of the answers to commands, in order
    this.errors = [];
    this.exited = new Promise((resolve) => this.proc.on('exit', resolve));
    readline.createInterface({ input: this.proc.stdout }).on('line', (line) => this.line(JSON.parse(line)));
  }

  line(out) {
    if (out.msg !== undefined || out.msg_hex !== undefined) {
      const message = out.msg !== undefined ? out.msg : Uint8Array.from(Buffer.from(out.msg_hex, 'hex'));
      this.deliver(message, out.to === null ? undefined : out.to);
      return;
    }
    if (out.snapshot !== undefined) {
      this.snapshotHex = out.snapshot;
      return;
    }
    if (out.error !== undefined) this.errors.push(out.error);
    this.pending--;
    const answer = this.answers.shift();
    if (answer) answer(out);
    if (this.pending === 0) {
      const waiting = this.waiting;
      this.waiting = [];
      for (const resolve of waiting) resolve();
    }
  }

  write(cmd) {
    return this.writeLine(JSON.stringify(cmd));
  }

  /** A command as JSON text (a float such as `3.0`, which JSON.stringify writes `3`). */
  writeLine(line) {
    this.pending++;
    this.proc.stdin.write(`${line}\n`);
    return new Promise((resolve) => this.answers.push(resolve));
  }

  receive(message) {
    if (typeof message === 'string') this.write({ recv: message });
    else this.write({ recv_hex: hex(message) });
  }

  /** Resolves when the peer has answered everything written to it. */
  idle() {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  async snapshot() {
    await this.write({ do: 'snapshot' });
    return this.snapshotHex;
  }

  async close() {
    this.proc.stdin.end();
    await this.exited;
  }
}

let bin;
test.before(() => {
  bin = release('examples', 'stdio_peer');
});

for (const binary of [false, true]) {
  test(`${binary ? 'binary' : 'JSON'}: JavaScript and Rust nodes mirror one document`, async () => {
    const js = [];
    let rust;
    // Every message reaches every other node, in its sender's order.
    const fromJs = (sender) => (message, to) => {
      for (const n of js) if (n !== sender) n.receive(message, to);
      rust.receive(message);
    };
    const join = (hostname) => {
      const n = new Facsimile(hostname, { binary });
      js.push(n);
      n.send = fromJs(n);
      return n;
    };
    rust = new RustPeer(bin, 'rust', binary, (message, to) => {
      for (const n of js) n.receive(message, to);
    });
    const a = join('js-a');
    const b = join('js-b');
    // Quiet when the Rust node answered everything and the JavaScript
    // nodes, delivered synchronously, sent nothing more to it.
    const settle = async () => {
      do await rust.idle();
      while (rust.pending > 0);
    };

    await rust.write({ do: 'root', value: { items: [1, 2], k0: 'from rust' } });
    await settle();
    assert.deepEqual(a.store, { items: [1, 2], k0: 'from rust' });

    a.store.k1 = { n: 1, s: 'js' };
    b.store.items.push(3);
    a.store.items.sort((x, y) => y - x);
    b.assign(b.store, { k2: [true, null], k3: 2.5 });
    await settle();
    assert.equal(rust.errors.length, 0, rust.errors.join('; '));
    assert.equal(await rust.snapshot(), hex(a.snapshot()));

    // Both languages write at once, many times over.
    for (let round = 0; round < 20; round++) {
      const done = rust.write({ do: 'random', seed: round, ops: 20 });
      for (let i = 0; i < 10; i++) {
        const w = (round + i) % 2 ? a : b;
        const k = `k${(round * 7 + i) % 8}`;
        try {
          switch ((round + i) % 5) {
            case 0:
              w.store[k] = round * 100 + i;
              break;
            case 1:
              delete w.store[k];
              break;
            case 2:
              if (Array.isArray(w.store.items)) w.store.items.push(`js${i}`);
              break;
            case 3:
              if (Array.isArray(w.store.items)) w.store.items.splice(0, 1, { js: i });
              break;
            default:
              if (Array.isArray(w.store.items)) w.store.items.reverse();
          }
        } catch (e) {
          assert.fail(`${w.hostname}: ${e.code} ${e.message}`);
        }
      }
      await done;
    }
    await settle();
    assert.equal(rust.errors.length, 0, rust.errors.join('; '));
    const want = hex(a.snapshot());
    assert.equal(hex(b.snapshot()), want);
    assert.equal(await rust.snapshot(), want, 'the Rust node converged with the JavaScript nodes');

    // A JavaScript node joins late; then the Rust node drops its document
    // and fetches it again.
    const late = join('js-late');
    late.sync();
    await settle();
    assert.ok(late.ready);
    assert.equal(hex(late.snapshot()), want);
    await rust.write({ do: 'sync' });
    await settle();
    assert.equal(await rust.snapshot(), want);
    assert.deepEqual(late.store, a.store);

    await rust.close();
    for (const n of js) n.close();
  });
}

for (const binary of [false, true]) {
  test(`${binary ? 'binary' : 'JSON'}: a number written over an equal float (or integer) a Rust node stored changes nothing`, async (t) => {
    const a = new Facsimile('js-a', { binary });
    const rust = new RustPeer(bin, 'rust', binary, (message, to) => a.receive(message, to));
    t.after(() => rust.proc.kill());
    let sent = 0;
    a.send = (message, to) => {
      sent++;
      rust.receive(message, to);
    };
    const settle = async () => {
      do await rust.idle();
      while (rust.pending > 0);
    };
    // Floats with integral values, and an integer beyond 2^53 (2^60).
    await rust.writeLine('{"do": "root", "value": {"f": 3.0, "g": -2.0, "h": 0.5, "i": 1152921504606846976, "l": [3.0, 1]}}');
    await settle();
    const s = a.store;
    assert.deepEqual([s.f, s.g, s.h, s.i, [...s.l]], [3, -2, 0.5, 2n ** 60n, [3, 1]]);
    const changes = [];
    a.on('change', (target, prop, nv, ov) => changes.push([prop, nv, ov]));
    sent = 0;
    s.f = s.f;
    s.f = 3;
    s.g = -2;
    s.h = s.h;
    s.i = 2 ** 60;
    s.i = s.i;
    s.l[0] = s.l[0];
    a.assign(s, { f: 3, g: -2 });
    s.l.fill(3, 0, 1);
    assert.equal(sent, 0, 'no message');
    assert.deepEqual(changes, [], 'no change event');
    await settle();
    assert.equal(await rust.snapshot(), hex(a.snapshot()), 'the stored values kept their representation');

    // A number of another value is a write, as ever. (Counted from here:
    // while settling, the Rust node's own messages, a reclamation round's
    // say, may have drawn answers.)
    sent = 0;
    s.f = 3.5;
    s.l[1] = 2;
    assert.equal(sent, 2);
    assert.deepEqual(changes, [['f', 3.5, 3], ['1', 2, 1]]);
    // A fill writes the elements of another value only.
    changes.length = 0;
    s.l.fill(3);
    assert.equal(sent, 3);
    assert.deepEqual(changes, [['1', 3, 2]]);
    await settle();
    assert.equal(rust.errors.length, 0, rust.errors.join('; '));
    assert.equal(await rust.snapshot(), hex(a.snapshot()));
    await rust.close();
    a.close();
  });
}
