'use strict';
// yjs 13 through its public API.
//
// Per-operation path: every edit is its own transaction (a call on a root
// type outside `transact`), and the update is what `doc.on('update')` hands
// out when that transaction ends: the v1 encoding of exactly its inserts and
// deletes, what a live yjs app sends (`y-websocket` forwards it). The
// receiver applies it with `Y.applyUpdate`.
//
// Snapshot: `Y.encodeStateAsUpdate(doc)`, applied to a fresh document.

const Y = require('yjs');

class Yjs {
  constructor(doc) {
    this.doc = doc;
    this.map = doc.getMap('map');
    this.array = doc.getArray('array');
    this.pending = null;
    doc.on('update', (update) => {
      this.pending = update;
    });
  }

  static create(peer) {
    const doc = new Y.Doc();
    doc.clientID = peer;
    return new Yjs(doc);
  }

  static pair() {
    const a = Yjs.create(1);
    return [a, Yjs.join(a).replica];
  }

  static join(sender, peer = 2) {
    const t0 = performance.now();
    const snapshot = Y.encodeStateAsUpdate(sender.doc);
    const t1 = performance.now();
    const b = Yjs.create(peer);
    Y.applyUpdate(b.doc, snapshot);
    const t2 = performance.now();
    b.pending = null;
    return { replica: b, bytes: snapshot.length, encodeMs: t1 - t0, decodeMs: t2 - t1 };
  }

  take() {
    const u = this.pending;
    this.pending = null;
    return u;
  }

  set(key, value) {
    this.map.set(key, value);
    return this.take();
  }

  push(value) {
    this.array.push([value]);
    return this.take();
  }

  insert(index, value) {
    this.array.insert(index, [value]);
    return this.take();
  }

  remove(index) {
    this.array.delete(index, 1);
    return this.take();
  }

  apply(update) {
    Y.applyUpdate(this.doc, update);
  }

  static bytes(update) {
    return update.length;
  }

  build(root, entries) {
    const map = this.doc.getMap(root);
    this.doc.transact(() => {
      for (const [key, value] of entries) setIn(map, key, value);
    });
    this.pending = null;
  }

  walk(root, visit) {
    if (root === 'array') walkArray(this.array, visit);
    else walkMap(this.doc.getMap(root), visit);
  }
}

function setIn(map, key, value) {
  if (Array.isArray(value)) {
    const child = map.set(key, new Y.Array());
    pushAll(child, value);
  } else if (typeof value === 'object') {
    const child = map.set(key, new Y.Map());
    for (const k of Object.keys(value)) setIn(child, k, value[k]);
  } else {
    map.set(key, value);
  }
}

function pushAll(array, values) {
  // The builds put only scalars in arrays; yjs packs a run of them pushed
  // in one call into one item, as a user pushing a list gets.
  array.push(values);
}

function walkMap(map, visit) {
  visit.enterMap();
  for (const [key, value] of map.entries()) {
    visit.key(key);
    walkValue(value, visit);
  }
  visit.leaveMap();
}

function walkArray(array, visit) {
  visit.enterArray();
  array.forEach((value) => walkValue(value, visit));
  visit.leaveArray();
}

function walkValue(value, visit) {
  if (value instanceof Y.Map) walkMap(value, visit);
  else if (value instanceof Y.Array) walkArray(value, visit);
  else visit.scalar(value);
}

module.exports = { Yjs };
