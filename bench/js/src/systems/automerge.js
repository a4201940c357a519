'use strict';
// @automerge/automerge 3 through its public API.
//
// Per-operation path: every edit is one `Automerge.change`, and the update
// is that change's bytes, `Automerge.getLastLocalChange(doc)`; the receiver
// applies it with `Automerge.applyChanges`. Unlike `saveIncremental`, this
// never re-sends changes received from others. The sync protocol
// (`generateSyncMessage`) was not used: it exchanges heads and Bloom
// filters, several round trips' worth of work for one change.
//
// Snapshot: `Automerge.save` (the compressed document) and `Automerge.load`.
//
// automerge's document root is one map, and two replicas that each created a
// container under the same key would hold two conflicting objects: the
// first replica creates the roots, the others load its snapshot.

const Automerge = require('@automerge/automerge');

const actor = (peer) => peer.toString(16).padStart(16, '0');

class AutomergeSystem {
  constructor(doc) {
    this.doc = doc;
  }

  static create(peer) {
    const doc = Automerge.change(Automerge.init({ actor: actor(peer) }), (d) => {
      d.map = {};
      d.array = [];
      d.items = {};
      d.graph = {};
    });
    return new AutomergeSystem(doc);
  }

  static pair() {
    const a = AutomergeSystem.create(1);
    return [a, AutomergeSystem.join(a).replica];
  }

  static join(sender, peer = 2) {
    const t0 = performance.now();
    const snapshot = Automerge.save(sender.doc);
    const t1 = performance.now();
    const doc = Automerge.load(snapshot, { actor: actor(peer) });
    const t2 = performance.now();
    return { replica: new AutomergeSystem(doc), bytes: snapshot.length, encodeMs: t1 - t0, decodeMs: t2 - t1 };
  }

  set(key, value) {
    this.doc = Automerge.change(this.doc, (d) => {
      d.map[key] = value;
    });
    return Automerge.getLastLocalChange(this.doc);
  }

  push(value) {
    this.doc = Automerge.change(this.doc, (d) => {
      d.array.push(value);
    });
    return Automerge.getLastLocalChange(this.doc);
  }

  insert(index, value) {
    this.doc = Automerge.change(this.doc, (d) => {
      d.array.insertAt(index, value);
    });
    return Automerge.getLastLocalChange(this.doc);
  }

  remove(index) {
    this.doc = Automerge.change(this.doc, (d) => {
      d.array.deleteAt(index);
    });
    return Automerge.getLastLocalChange(this.doc);
  }

  apply(update) {
    [this.doc] = Automerge.applyChanges(this.doc, [update]);
  }

  static bytes(update) {
    return update.length;
  }

  build(root, entries) {
    this.doc = Automerge.change(this.doc, (d) => {
      const map = d[root];
      for (const [key, value] of entries) map[key] = value;
    });
  }

  walk(root, visit) {
    walkValue(this.doc[root], visit);
  }
}

function walkValue(value, visit) {
  if (Array.isArray(value)) {
    visit.enterArray();
    for (const v of value) walkValue(v, visit);
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

module.exports = { AutomergeSystem };
