'use strict';
// loro-crdt 1 through its public API.
//
// Per-operation path: the edit is made on the root container and committed
// with `doc.commit()`; the update is `doc.export({ mode: 'update', from })`,
// `from` being the replica's oplog version after its previous update (what
// `subscribeLocalUpdates` hands a live app, called directly so the edit
// and its encoding are this replica's alone). A replica that imported
// remote changes since its last update would re-send them this way; no
// workload edits on a replica after importing. The receiver applies with
// `doc.import`.
//
// Snapshot: `doc.export({ mode: 'snapshot' })`, imported into a fresh
// document. loro decodes a snapshot's containers lazily, on first access,
// so part of its decode time shows up in the read time.

const { LoroDoc, LoroList, LoroMap, isContainer } = require('loro-crdt');

class Loro {
  constructor(doc, peer) {
    doc.setPeerId(peer);
    this.doc = doc;
    this.map = doc.getMap('map');
    this.list = doc.getList('array');
    this.sent = doc.oplogVersion();
  }

  static create(peer) {
    return new Loro(new LoroDoc(), peer);
  }

  static pair() {
    const a = Loro.create(1);
    return [a, Loro.join(a).replica];
  }

  static join(sender, peer = 2) {
    const t0 = performance.now();
    const snapshot = sender.doc.export({ mode: 'snapshot' });
    const t1 = performance.now();
    const doc = new LoroDoc();
    doc.import(snapshot);
    const t2 = performance.now();
    return { replica: new Loro(doc, peer), bytes: snapshot.length, encodeMs: t1 - t0, decodeMs: t2 - t1 };
  }

  take() {
    this.doc.commit();
    const update = this.doc.export({ mode: 'update', from: this.sent });
    this.sent = this.doc.oplogVersion();
    return update;
  }

  set(key, value) {
    this.map.set(key, value);
    return this.take();
  }

  push(value) {
    this.list.push(value);
    return this.take();
  }

  insert(index, value) {
    this.list.insert(index, value);
    return this.take();
  }

  remove(index) {
    this.list.delete(index, 1);
    return this.take();
  }

  apply(update) {
    this.doc.import(update);
  }

  static bytes(update) {
    return update.length;
  }

  build(root, entries) {
    const map = this.doc.getMap(root);
    for (const [key, value] of entries) setIn(map, key, value);
    this.doc.commit();
    this.sent = this.doc.oplogVersion();
  }

  walk(root, visit) {
    if (root === 'array') walkList(this.list, visit);
    else walkMap(this.doc.getMap(root), visit);
  }
}

function setIn(map, key, value) {
  if (Array.isArray(value)) {
    const child = map.setContainer(key, new LoroList());
    for (const v of value) child.push(v);
  } else if (typeof value === 'object') {
    const child = map.setContainer(key, new LoroMap());
    for (const k of Object.keys(value)) setIn(child, k, value[k]);
  } else {
    map.set(key, value);
  }
}

function walkMap(map, visit) {
  visit.enterMap();
  for (const [key, value] of map.entries()) {
    visit.key(key);
    walkValue(value, visit);
  }
  visit.leaveMap();
}

function walkList(list, visit) {
  visit.enterArray();
  for (const value of list.toArray()) walkValue(value, visit);
  visit.leaveArray();
}

function walkValue(value, visit) {
  if (isContainer(value)) {
    const kind = value.kind();
    if (kind === 'Map') walkMap(value, visit);
    else if (kind === 'List') walkList(value, visit);
    else visit.scalar(`<${kind}>`);
  } else {
    visit.scalar(value);
  }
}

module.exports = { Loro };
