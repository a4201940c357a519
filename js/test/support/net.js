'use strict';
// Networks for the tests: every message of a node reaches every other node
// in that node's send order (the transport contract); how senders
// interleave is up to the network.
//
// - SyncNet delivers inside `send`, re-entrantly (a receive that answers
//   delivers its answer before the first send returns), as the seed's
//   example Network does; `concurrently(fn)` holds messages while `fn`
//   runs, so that writes made there are concurrent.
// - AsyncNet queues each message per (sender, receiver) and delivers one
//   at a time on a seeded random schedule of setImmediate and
//   queueMicrotask callbacks; `settle()` resolves when nothing is in flight.
//
// `wire` is how a message travels: 'json' (JSON.parse(JSON.stringify(..)),
// the default), 'clone' (structuredClone) or 'none'.

const Facsimile = require('../..');

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function carry(wire, message, to) {
  const args = [message, to];
  if (wire === 'json') return JSON.parse(JSON.stringify(args));
  if (wire === 'clone') return structuredClone(args);
  return args;
}

class SyncNet {
  constructor({ wire = 'json', binary = false } = {}) {
    this.wire = wire;
    this.binary = binary;
    this.nodes = [];
    this.held = false;
    this.queue = [];
    this.sent = 0;
  }

  join(hostname, options = {}) {
    const node = new Facsimile(hostname, { binary: this.binary, ...options });
    this.nodes.push(node);
    node.send = (message, to) => this.send(node, message, to);
    return node;
  }

  send(source, message, to) {
    this.sent++;
    if (this.held || this.queue.length > 0) {
      // Behind what is held, so that each sender's order holds.
      this.queue.push([source, carry(this.wire, message, to)]);
      return;
    }
    this.deliver(source, carry(this.wire, message, to));
  }

  deliver(source, args) {
    for (const target of this.nodes) {
      if (target !== source) target.receive(...args);
    }
  }

  flush() {
    while (this.queue.length > 0) {
      const [source, args] = this.queue[0];
      this.deliver(source, args);
      this.queue.shift();
    }
  }

  /** Runs `fn` with delivery held, then delivers in order. */
  async concurrently(fn) {
    this.held = true;
    try {
      await fn();
    } finally {
      this.held = false;
      this.flush();
    }
  }

  async settle() {}

  close() {
    for (const n of this.nodes) n.close();
  }
}

class AsyncNet {
  constructor({ seed = 1, wire = 'json', binary = false } = {}) {
    this.seed = seed;
    this.rng = mulberry32(seed);
    this.wire = wire;
    this.binary = binary;
    this.nodes = [];
    this.queues = new Map(); // sender -> Map(receiver -> [args])
    this.pending = 0; // messages queued and not delivered
    this.scheduled = 0; // delivery callbacks scheduled
    this.idle = [];
    this.errors = [];
    this.sent = 0;
  }

  join(hostname, options = {}) {
    const node = new Facsimile(hostname, { binary: this.binary, ...options });
    this.nodes.push(node);
    this.queues.set(node, new Map());
    node.send = (message, to) => this.send(node, message, to);
    return node;
  }

  send(source, message, to) {
    this.sent++;
    const out = this.queues.get(source);
    for (const target of this.nodes) {
      if (target === source) continue;
      let q = out.get(target);
      if (q === undefined) out.set(target, (q = []));
      q.push(carry(this.wire, message, to));
      this.pending++;
      this.schedule();
    }
  }

  schedule() {
    this.scheduled++;
    const run = () => {
      this.scheduled--;
      this.step();
    };
    if (this.rng() < 0.5) setImmediate(run);
    else queueMicrotask(run);
  }

  // Delivers the head of one random non-empty (sender, receiver) queue.
  step() {
    const ready = [];
    for (const [source, out] of this.queues) {
      for (const [target, q] of out) if (q.length > 0) ready.push([source, target, q]);
    }
    if (ready.length > 0) {
      const [, target, q] = ready[Math.floor(this.rng() * ready.length)];
      const args = q.shift();
      this.pending--;
      try {
        target.receive(...args);
      } catch (e) {
        this.errors.push(e);
      }
    }
    if (this.pending === 0 && this.scheduled === 0) {
      const waiting = this.idle;
      this.idle = [];
      for (const resolve of waiting) resolve();
    }
  }

  /** Resolves once every message sent so far (and since) is delivered. */
  settle() {
    const done = () => {
      if (this.errors.length > 0) throw this.errors[0];
    };
    if (this.pending === 0 && this.scheduled === 0) return Promise.resolve().then(done);
    return new Promise((resolve) => this.idle.push(resolve)).then(done);
  }

  async concurrently(fn) {
    await fn();
  }

  close() {
    for (const n of this.nodes) n.close();
  }
}

/** The four ways the scenarios run. */
function networks() {
  return [
    ['sync, json', () => new SyncNet({ wire: 'json' })],
    ['sync, binary', () => new SyncNet({ wire: 'clone', binary: true })],
    ['async, json', (seed = 7) => new AsyncNet({ seed, wire: 'json' })],
    ['async, binary', (seed = 7) => new AsyncNet({ seed, wire: 'clone', binary: true })],
  ];
}

module.exports = { SyncNet, AsyncNet, networks, mulberry32, Facsimile };
