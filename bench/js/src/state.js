'use strict';
// Reading a replica back: totals for the read step and the checks, and a
// canonical JSON export for checking that replicas converged.

const ROOTS = ['map', 'array', 'items', 'graph'];

/** Counts and sums everything in a container, touching every value. */
class Totals {
  constructor() {
    this.maps = 0;
    this.arrays = 0;
    this.ints = 0;
    this.intSum = 0;
    this.strs = 0;
    this.others = 0;
  }

  static of(replica, root) {
    const t = new Totals();
    replica.walk(root, t);
    return t;
  }

  enterMap() {
    this.maps++;
  }

  key() {}

  leaveMap() {}

  enterArray() {
    this.arrays++;
  }

  leaveArray() {}

  scalar(v) {
    if (typeof v === 'number' && Number.isInteger(v)) {
      this.ints++;
      this.intSum += v;
    } else if (typeof v === 'string') {
      this.strs++;
    } else {
      this.others++;
    }
  }
}

/** Builds plain JSON data from a walk. */
class JsonBuilder {
  constructor() {
    this.stack = [];
    this.done = null;
  }

  put(value) {
    const top = this.stack[this.stack.length - 1];
    if (top === undefined) this.done = value;
    else if (Array.isArray(top.value)) top.value.push(value);
    else top.value[top.key] = value;
  }

  enterMap() {
    this.stack.push({ value: {}, key: null });
  }

  key(k) {
    this.stack[this.stack.length - 1].key = k;
  }

  leaveMap() {
    this.put(this.stack.pop().value);
  }

  enterArray() {
    this.stack.push({ value: [], key: null });
  }

  leaveArray() {
    this.put(this.stack.pop().value);
  }

  scalar(v) {
    this.put(typeof v === 'number' || typeof v === 'string' ? v : `<other ${String(v)}>`);
  }
}

/** JSON with sorted keys, so the order a library lists a map in does not matter. */
function stableStringify(value) {
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${stableStringify(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The whole document, canonically: replicas converged exactly when equal. */
function canonical(replica) {
  const roots = {};
  for (const root of ROOTS) {
    const b = new JsonBuilder();
    replica.walk(root, b);
    roots[root] = b.done;
  }
  return stableStringify(roots);
}

module.exports = { Totals, canonical, ROOTS };
