'use strict';
// facsimile's JavaScript package (the engine compiled to WebAssembly)
// through its public API: `new Facsimile(hostname, options)`, the `store`
// proxies, `send`/`receive` and `sync()`.
//
// Per-operation path: every edit is one write through a proxy the replica
// holds (`map[key] = v`, `array.push(v)`, `array.splice(...)`); the node
// calls `send` before the write returns, and the update is the message it
// sent (a JSON string by default, a Uint8Array with `{ binary: true }`). An
// edit that sends more than one message (a node's first, which may carry
// an acknowledgement it owes) returns them all, in order, as a Batch.
// Messages are handed to `receive` as `send` got them, with their
// recipient when they have one.
//
// Snapshot: a joiner's `sync()`, the exchange run to the end (hello, offer,
// fetch, the state answer, joined). Its bytes are what the sender sends the
// joiner, nearly all of it the state answer; its encode time is the
// sender's time in `receive` during the exchange, its decode time the
// joiner's.

// FACSIMILE_PACKAGE loads another build of the package instead, e.g. one
// whose WebAssembly keeps its function names for a profile (README.md).
const Facsimile = require(process.env.FACSIMILE_PACKAGE || 'facsimile');

/** Several messages one edit sent, each a message or [message, to]. */
class Batch {
  constructor(items) {
    this.items = items;
  }
}

const ROOTS = () => ({ map: {}, array: [], items: {}, graph: {} });

function makeSystem(name, options) {
  class FacsimileSystem {
    constructor(node) {
      this.node = node;
      this.out = [];
      // As the package's README wires a transport: every message goes to
      // the other nodes; one meant for a single node carries its recipient.
      node.send = (message, to) => {
        this.out.push(to === undefined ? message : [message, to]);
      };
      this.handles();
    }

    handles() {
      const store = this.node.store;
      if (store !== null && typeof store === 'object') {
        this.map = store.map;
        this.array = store.array;
      }
    }

    static create(peer) {
      const node = new Facsimile(`p${String(peer).padStart(4, '0')}`, options);
      const replica = new FacsimileSystem(node);
      node.store = ROOTS();
      replica.handles();
      replica.out.length = 0;
      return replica;
    }

    static pair() {
      const a = FacsimileSystem.create(1);
      return [a, FacsimileSystem.join(a).replica];
    }

    static join(sender, peer = 2) {
      const node = new Facsimile(`p${String(peer).padStart(4, '0')}`, options);
      const b = new FacsimileSystem(node);
      // What the sender sent before goes to nobody: the joiner starts from
      // its state, as a loaded snapshot would.
      sender.out.length = 0;
      let bytes = 0;
      let encodeMs = 0;
      let decodeMs = 0;
      let t = performance.now();
      node.sync();
      decodeMs += performance.now() - t;
      for (let rounds = 0; sender.out.length > 0 || b.out.length > 0; rounds++) {
        if (rounds > 100) throw new Error('facsimile: the join does not settle');
        const toSender = b.out.splice(0);
        const toJoiner = sender.out.splice(0);
        t = performance.now();
        for (const item of toSender) deliver(sender.node, item);
        encodeMs += performance.now() - t;
        for (const item of toJoiner) bytes += size(item);
        t = performance.now();
        for (const item of toJoiner) deliver(node, item);
        decodeMs += performance.now() - t;
      }
      if (!node.ready) throw new Error('facsimile: the joiner is not ready after the exchange');
      b.handles();
      return { replica: b, bytes, encodeMs, decodeMs };
    }

    take() {
      const out = this.out;
      if (out.length === 1) {
        const m = out[0];
        out.length = 0;
        if (!Array.isArray(m)) return m;
        return new Batch([m]);
      }
      return new Batch(out.splice(0));
    }

    set(key, value) {
      this.map[key] = value;
      return this.take();
    }

    push(value) {
      this.array.push(value);
      return this.take();
    }

    insert(index, value) {
      this.array.splice(index, 0, value);
      return this.take();
    }

    remove(index) {
      this.array.splice(index, 1);
      return this.take();
    }

    apply(update) {
      if (update instanceof Batch) {
        for (const item of update.items) deliver(this.node, item);
      } else {
        this.node.receive(update);
      }
      // What the node sent in answer (acknowledgements) belongs to no edit;
      // a real transport would carry it, the workloads do not need it.
      this.out.length = 0;
    }

    static bytes(update) {
      if (update instanceof Batch) {
        let n = 0;
        for (const item of update.items) n += size(item);
        return n;
      }
      return update.length;
    }

    build(root, entries) {
      const node = this.node;
      const map = node.store[root];
      node.batch(() => {
        for (const [key, value] of entries) map[key] = value;
      });
      this.out.length = 0;
    }

    walk(root, visit) {
      walkValue(this.node.store[root], visit);
    }
  }
  Object.defineProperty(FacsimileSystem, 'name', { value: name });
  return FacsimileSystem;
}

function deliver(node, item) {
  if (Array.isArray(item)) node.receive(item[0], item[1]);
  else node.receive(item);
}

// Bytes of one message: a JSON message is ASCII here (the workloads' keys
// and strings are), so its length is its size in UTF-8.
function size(item) {
  return Array.isArray(item) ? item[0].length : item.length;
}

function walkValue(value, visit) {
  if (Array.isArray(value)) {
    visit.enterArray();
    for (let i = 0, n = value.length; i < n; i++) walkValue(value[i], visit);
    visit.leaveArray();
  } else if (value !== null && typeof value === 'object') {
    visit.enterMap();
    for (const key of Object.keys(value)) {
      visit.key(key);
      walkValue(value[key], visit);
    }
    visit.leaveMap();
  } else {
    visit.scalar(value);
  }
}

module.exports = {
  FacsimileJson: makeSystem('facsimile', undefined),
  FacsimileBinary: makeSystem('facsimile-binary', { binary: true }),
};
