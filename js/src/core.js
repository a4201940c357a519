// The Facsimile class over the engine (crates/facsimile-wasm): proxies that
// read and write the engine's objects, listeners, the transport hooks and the
// timers. Replication, conflicts, lists, locks and sync are the engine's.
//
// The build (scripts/build.mjs) wraps this file for Node.js and browsers: it
// defines createFacsimile(wasm, { platform }) and nothing else at top level.
//
// How it holds together:
// - The pump. Every public call runs one engine call, then `_pump`, which
//   hands the engine's messages to `send` and its events to the listeners,
//   in the order the engine produced them, outside any engine call. A pump
//   started while one runs (a listener that writes, a `send` that delivers
//   into another node which answers into this one) returns at once: the
//   running pump picks the work up, so messages leave in the engine's order
//   and nothing is delivered twice. One engine call (`pending`) tells the
//   pump what waits: messages, events, or a moved timer deadline, for which
//   it re-arms the host timer.
// - Handles. The engine names objects by small integer handles. An entry
//   per handle holds a WeakRef to the object's one proxy; a
//   FinalizationRegistry releases the handle when the proxy is collected.
//   An entry whose proxy has listeners keeps it strongly (as do a lock
//   promise while it waits and an array iterator until it is done): what
//   outlives a call holds the proxy, never only its target or handle. The
//   listeners go once the engine has reclaimed the object.
// - Epochs and the read cache. `_epoch` moves with every change of the
//   engine's state. Whole arrays and maps read in one call (iteration,
//   keys, inspection, or many reads of one object) are kept in `_cache`
//   until the next change or the end of the current task, whichever comes
//   first; the Array methods re-read when the epoch moved under them (a
//   callback that writes). The root's proxy is kept until something may
//   replace it.
function createFacsimile(wasm, { platform }) {
  const { Engine } = wasm;

  const KIND_MAP = 1;
  const KIND_ARRAY = 2;
  const MAX_HOSTNAME = 1024;
  // A JSON message is handed to `send` as a string, and V8 makes none
  // longer than this (in UTF-16 code units, which a UTF-8 message has at
  // most as many of as bytes): the most a JSON node's maxMessage may be.
  const MAX_JSON_MESSAGE = 0x1fffffe8;
  // Writing past the end of an array pads it with nulls (arrays are dense);
  // a write further than this past the end is refused rather than
  // allocating millions of nulls by mistake.
  const MAX_PAD = 1 << 20;
  // How deep a plain value may nest when written at once (the engine's
  // bound: it builds the objects recursively).
  const MAX_DEPTH = 500;

  // The proxy's internals (its node and handle). Registered, so that
  // another instance of the package (the browser build, a second copy)
  // recognises a proxy that is not its own, and refuses it.
  const INFO = Symbol.for('facsimile.proxy');
  const inspectCustom = Symbol.for('nodejs.util.inspect.custom');
  const AP = Array.prototype;
  const OP = Object.prototype;
  const EMPTY = [];
  // What a typed array is, read from its internal slot (undefined for
  // anything else, a Proxy around one too): no getter of the program's
  // runs.
  const typedArrayName = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype), Symbol.toStringTag).get;

  const MESSAGES = {
    NO_SENDER: 'This object does not have support signalling',
    LOCKED: 'Object is locked',
    NOT_LOCKED: 'Object is not locked',
    NOT_OWNER: 'Object is not owned by current host',
    NOT_LOCK_OWNER: 'Node does not own this lock',
  };

  // The class of the errors of each code that is not a plain Error: one
  // class per code, whether the package or the engine refuses.
  const ERROR_TYPES = {
    BAD_ARGUMENT: TypeError,
    BAD_KEY: TypeError,
    BAD_VALUE: TypeError,
    BIGINT: TypeError,
    UNSUPPORTED: TypeError,
    CYCLE: TypeError,
    NOT_AN_OBJECT: TypeError,
    NO_WEBSOCKET: TypeError,
    BAD_HOSTNAME: RangeError,
    BAD_LENGTH: RangeError,
    BAD_OPTION: RangeError,
    OUT_OF_BOUNDS: RangeError,
    TOO_DEEP: RangeError,
  };

  // An error with a code, of the code's class; its stack starts at the
  // caller of `from`.
  function fail(code, message, from = fail) {
    const Type = ERROR_TYPES[code] ?? Error;
    const e = new Type(message);
    if (typeof Error.captureStackTrace === 'function') Error.captureStackTrace(e, from);
    e.code = code;
    return e;
  }

  // Engine errors are built inside WebAssembly, with its frames for a stack;
  // rethrown from here, the stack shows the program's call. So are the
  // package's own, caught and passed on (a promise's rejection).
  function again(e) {
    if (e instanceof Error && typeof e.code === 'string') {
      const copy = fail(e.code, e.message, again);
      if (e.cause !== undefined) copy.cause = e.cause;
      return copy;
    }
    return e;
  }

  // Marks the errors the engine makes for its refusals (`error` in
  // crates/facsimile-wasm), which leave its node as it was.
  const ENGINE_ERROR = Symbol.for('facsimile.engine');

  // The node of each engine, for its failure.
  const owners = new WeakMap();

  // The engine with every call guarded. An exception that is not one of
  // its refusals (a trap, a JavaScript exception that crossed its frames)
  // leaves it unusable, borrowed for good: its node is closed, with that
  // exception as the cause, rather than left half alive (peers counting it,
  // its locks held, its later calls failing one by one).
  class GuardedEngine extends Engine {}
  for (const name of Object.getOwnPropertyNames(Engine.prototype)) {
    const f = Object.getOwnPropertyDescriptor(Engine.prototype, name).value;
    if (typeof f !== 'function' || name === 'constructor' || name === 'free' || name.startsWith('__')) continue;
    const guarded = function (a, b, c, d, e) {
      try {
        return f.call(this, a, b, c, d, e);
      } catch (err) {
        throw failure(this, err);
      }
    };
    Object.defineProperty(GuardedEngine.prototype, name, { value: guarded, writable: true, configurable: true });
  }

  function failure(engine, err) {
    if (typeof err === 'object' && err !== null && err[ENGINE_ERROR] === true) return err;
    const node = owners.get(engine);
    return node === undefined ? err : node._fail(err);
  }

  // A failed node's engine: every call throws the node's CLOSED error,
  // except those that only let go of something (a handle, change records).
  function failedEngine(node) {
    const refuse = () => {
      throw node._closedError();
    };
    const nothing = () => {};
    return new Proxy({}, { get: (_, name) => (name === 'release' || name === 'record_changes' ? nothing : refuse) });
  }

  const clock = typeof performance !== 'undefined' ? () => performance.now() : () => Date.now();

  function randomIncarnation() {
    return globalThis.crypto.getRandomValues(new Uint32Array(1))[0];
  }

  function utf8Length(s) {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c < 0xdc00 && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        n += 4; // a surrogate pair
        i++;
      } else n += 3; // lone surrogates are sent as U+FFFD
    }
    return n;
  }

  // Whether `s` is well-formed UTF-16: no lone surrogate (half of a pair),
  // which UTF-8, the engine's strings, has no form for (TextEncoder writes
  // U+FFFD instead, so that '\uD800' and '\uDC00' would be one key).
  const isWellFormed = String.prototype.isWellFormed;
  const LONE_SURROGATE = /\p{Cs}/u;
  const wellFormed =
    typeof isWellFormed === 'function' ? (s) => isWellFormed.call(s) : (s) => !LONE_SURROGATE.test(s);

  // A lower bound of the UTF-8 size of `s`, exact when it may be more than
  // `room` (a string has at most 3 bytes per UTF-16 code unit).
  function textSize(s, room) {
    return s.length * 3 <= room ? s.length : utf8Length(s);
  }

  // Whether `key` is no key of `node`'s document: longer than any (each
  // came in a message, or was written, within its maxMessage), or not
  // well-formed. Such a key is not copied into the engine's memory only to
  // be found absent (or, a lone surrogate made U+FFFD, found as another).
  function unheld(node, key) {
    return textSize(key, node._maxMessage) > node._maxMessage || !wellFormed(key);
  }

  // The index a property key names, or -1 (a canonical array index).
  function keyIndex(key) {
    const n = key.length;
    if (n === 0 || n > 10) return -1;
    const c = key.charCodeAt(0);
    if (c < 48 || c > 57) return -1;
    if (c === 48) return n === 1 ? 0 : -1;
    let v = c - 48;
    for (let i = 1; i < n; i++) {
      const d = key.charCodeAt(i) - 48;
      if (d < 0 || d > 9) return -1;
      v = v * 10 + d;
    }
    return v < 4294967295 ? v : -1;
  }

  function toInteger(x) {
    const n = Number(x);
    if (n !== n) return 0;
    return Math.trunc(n);
  }

  // A relative index as the Array methods take it, clamped to [0, len].
  function relative(x, len, dflt) {
    if (x === undefined) return dflt;
    const n = toInteger(x);
    if (n < 0) return Math.max(len + n, 0);
    return Math.min(n, len);
  }

  // The primitive a Number, String, Boolean or BigInt object holds, as
  // JSON.stringify takes it (a Number through valueOf, a String through
  // toString), or undefined for other objects. Found by the internal
  // slot, as JSON.stringify does, so a wrapper of another realm is one
  // too; plain objects and arrays are not asked.
  const BOXES = [
    [Number.prototype.valueOf, Number],
    [String.prototype.valueOf, String],
    [Boolean.prototype.valueOf, (o) => Boolean.prototype.valueOf.call(o)],
    [BigInt.prototype.valueOf, (o) => BigInt.prototype.valueOf.call(o)],
  ];
  function unboxed(o) {
    const proto = Object.getPrototypeOf(o);
    if (proto === OP || proto === AP || proto === null) return undefined;
    for (const [brand, primitive] of BOXES) {
      try {
        brand.call(o);
      } catch {
        continue;
      }
      return primitive(o);
    }
    return undefined;
  }

  // A copy of the bytes of `o` when it is a Uint8Array (a Buffer, a
  // subclass), else undefined. The engine, and the glue that hands it an
  // argument, read the array's `length` as a property: a `length` of the
  // program's (a subclass's getter, a Proxy's trap, an own property) would
  // run inside the engine call, with the engine borrowed, and may throw;
  // or lie, and have the glue copy more bytes than it allocated. The copy
  // is made from the internal slots, and the engine reads only copies.
  // Refused with `code` (a detached buffer has no bytes to copy).
  function bytesOf(o, code) {
    if (typedArrayName.call(o) !== 'Uint8Array') return undefined;
    return copyBytes(o, code);
  }

  // A copy of a Uint8Array, or of an ArrayBuffer's bytes.
  function copyBytes(o, code) {
    try {
      return new Uint8Array(o instanceof ArrayBuffer ? new Uint8Array(o) : o);
    } catch (e) {
      throw fail(code, `These bytes cannot be read: ${e.message}`, copyBytes);
    }
  }

  function callable(f, what) {
    if (typeof f !== 'function') throw fail('BAD_ARGUMENT', `${String(f)} is not a function (${what})`, callable);
  }

  // The proxy's target: fresh per proxy, carrying the node and the handle.
  // Its prototype holds only the inspection hook (Node.js formats a
  // proxy's target, not the proxy); the proxies report the plain
  // prototypes. Its state is in private fields, invisible to formatting
  // that bypasses the hook (assert's diffs show `FacsimileMap {}`, not the
  // node), and as cheap to make as plain fields: a target is made for every
  // object read, and defining hidden properties cost a microsecond each.
  // `_rat`, `_reads` and `_limit`: reads since the read cache was dropped
  // (`_rat` is the node's `_gen` then), see `busy`.
  // The state both kinds of target carry, over the base each needs (an
  // array's target is an Array, so that the proxy is one).
  const Target = (Base) =>
    class extends Base {
      #n;
      #h;
      #rat = -1;
      #reads = 0;
      #limit = 0;
      constructor(node, h) {
        super();
        this.#n = node;
        this.#h = h;
      }
      get _n() {
        return this.#n;
      }
      get _h() {
        return this.#h;
      }
      get _rat() {
        return this.#rat;
      }
      set _rat(v) {
        this.#rat = v;
      }
      get _reads() {
        return this.#reads;
      }
      set _reads(v) {
        this.#reads = v;
      }
      get _limit() {
        return this.#limit;
      }
      set _limit(v) {
        this.#limit = v;
      }
    };
  class FacsimileMap extends Target(Object) {}
  class FacsimileArray extends Target(Array) {}
  const MapTarget = FacsimileMap;
  const ArrayTarget = FacsimileArray;

  function info(p) {
    return p !== null && (typeof p === 'object' || typeof p === 'function') ? p[INFO] : undefined;
  }

  // ------------------------------------------------------------ inspection

  // Inspecting a proxy (console.log in Node.js) shows its data: one level
  // as plain data, nested objects as their proxies (inspected in turn). The
  // copy comes from the node's read cache, so an object met again while the
  // data is unchanged is the same copy, and cycles print as cycles.
  function inspectHook() {
    const t = info(this);
    if (t === undefined) return {};
    const node = t._n;
    if (t instanceof ArrayTarget) return node._list(t);
    const m = node._map(t);
    if (m.copy === null) {
      const copy = {};
      for (const [k, v] of m.ents) {
        if (k === '__proto__') Object.defineProperty(copy, k, { value: v, enumerable: true, writable: true, configurable: true });
        else copy[k] = v;
      }
      m.copy = copy;
    }
    return m.copy;
  }
  MapTarget.prototype[inspectCustom] = inspectHook;
  ArrayTarget.prototype[inspectCustom] = inspectHook;

  // ------------------------------------------------------- object listeners

  function proxyOn(a, b) {
    const t = info(this);
    if (t === undefined) throw fail('NOT_AN_OBJECT', 'on() is called on an object of a Facsimile store');
    if (b === undefined) {
      callable(a, 'on(callback)');
      t._n._listen(this, t, undefined, a);
    } else {
      callable(b, 'on(property, callback)');
      t._n._listen(this, t, a, b);
    }
    return this;
  }

  function proxyOff(a, b) {
    const t = info(this);
    if (t === undefined) throw fail('NOT_AN_OBJECT', 'off() is called on an object of a Facsimile store');
    if (b === undefined) t._n._unlisten(t, undefined, a);
    else t._n._unlisten(t, a, b);
    return this;
  }

  // JSON.stringify calls it: the whole tree is written by the engine in one
  // call, by JSON's rules, instead of key by key through the traps.
  function proxyToJSON() {
    const t = info(this);
    return t === undefined ? this : t._n._toJSON(t);
  }

  const MapProto = Object.create(OP, {
    on: { value: proxyOn, writable: true, configurable: true },
    off: { value: proxyOff, writable: true, configurable: true },
    toJSON: { value: proxyToJSON, writable: true, configurable: true },
  });

  // ---------------------------------------------------------- array methods

  // The values of an array as they are now, re-read whenever the node's
  // state changed: what the Array methods see when they read the array
  // element by element, with one engine call per change instead of one
  // per element.
  class Live {
    constructor(t) {
      this.t = t;
      this.node = t._n;
      this.vals = this.node._list(t);
      this.epoch = this.node._epoch;
    }
    fresh() {
      if (this.epoch !== this.node._epoch) {
        this.vals = this.node._list(this.t);
        this.epoch = this.node._epoch;
      }
      return this.vals;
    }
  }

  // An iterator outlives the call that made it (a `for…of` that awaits), so
  // it holds the array's proxy: were the proxy collected, its handle would
  // be released, and the engine gives a released handle to the next object
  // read, which the iterator would then read instead of its array.
  class ArrayIterator {
    constructor(proxy, t, kind) {
      this.proxy = proxy;
      this.live = new Live(t);
      this.i = 0;
      this.kind = kind; // 0 values, 1 keys, 2 entries
    }
    next() {
      if (this.live === null) return { value: undefined, done: true };
      const vals = this.live.fresh();
      const i = this.i;
      if (i >= vals.length) {
        this.live = null;
        this.proxy = null;
        return { value: undefined, done: true };
      }
      this.i = i + 1;
      const value = this.kind === 0 ? vals[i] : this.kind === 1 ? i : [i, vals[i]];
      return { value, done: false };
    }
    [Symbol.iterator]() {
      return this;
    }
  }
  Object.defineProperty(ArrayIterator.prototype, Symbol.toStringTag, { value: 'Array Iterator' });

  // Methods that run on a copy: no user code runs while they read.
  function onCopy(name) {
    const native = AP[name];
    return {
      [name](...args) {
        const t = info(this);
        if (t === undefined) return native.apply(this, args);
        return native.apply(t._n._list(t), args);
      },
    }[name];
  }

  // As the native join, an array met again while it is being joined (a
  // cycle) joins as the empty string.
  const joining = new Set();
  function joinOnce(t, separator) {
    if (joining.has(t)) return '';
    joining.add(t);
    try {
      return AP.join.call(t._n._list(t), separator);
    } finally {
      joining.delete(t);
    }
  }

  const arrayMethods = {
    on: proxyOn,
    off: proxyOff,
    toJSON: proxyToJSON,

    // Mutators: one engine operation, one message, one change each. The
    // values to store are copied first (their getters and toJSON run
    // then); after that, only the conversions of the arguments JavaScript
    // makes after reading the length (valueOf, for splice, fill and
    // copyWithin) run the program's code before the engine write, and the
    // engine writes what a plain array's method would on the array as it
    // is by then (crates/facsimile-wasm/src/array.rs). Nothing read before
    // the program's code ran is written back.
    push(...items) {
      const t = info(this);
      if (t === undefined) return AP.push.apply(this, items);
      return t._n._push(t._h, items);
    },
    pop() {
      const t = info(this);
      if (t === undefined) return AP.pop.call(this);
      const node = t._n;
      node._checkWritable();
      const len = node._engine.list_len(t._h);
      if (len === 0) return node._unchanged(t._h, undefined);
      return node._splice(t._h, len - 1, 1, EMPTY)[0];
    },
    shift() {
      const t = info(this);
      if (t === undefined) return AP.shift.call(this);
      const node = t._n;
      node._checkWritable();
      if (node._engine.list_len(t._h) === 0) return node._unchanged(t._h, undefined);
      return node._splice(t._h, 0, 1, EMPTY)[0];
    },
    unshift(...items) {
      const t = info(this);
      if (t === undefined) return AP.unshift.apply(this, items);
      const node = t._n;
      node._checkWritable();
      const inputs = node._inputs(items);
      // The length as of the write: listeners that write run after it.
      const len = node._engine.list_len(t._h);
      if (items.length === 0) return node._unchanged(t._h, len);
      node._splice(t._h, 0, 0, inputs);
      return len + items.length;
    },
    splice(start, deleteCount, ...items) {
      const t = info(this);
      if (t === undefined) return AP.splice.apply(this, arguments);
      const node = t._n;
      node._checkWritable();
      const inputs = node._inputs(items);
      const len = node._engine.list_len(t._h);
      const s = relative(start, len, 0);
      let count;
      if (arguments.length === 0) count = 0;
      else if (arguments.length === 1) count = len - s;
      else count = Math.min(Math.max(toInteger(deleteCount), 0), len - s);
      // The conversions may have changed the array: the engine splices as
      // a plain array does with the length it read (`len`), which it sets
      // the array to even when it removes and inserts nothing.
      if (count === 0 && items.length === 0 && node._engine.list_len(t._h) === len) return node._unchanged(t._h, []);
      return node._splice(t._h, s, count, inputs, len);
    },
    reverse() {
      const t = info(this);
      if (t === undefined) return AP.reverse.call(this);
      const node = t._n;
      node._checkWritable();
      const len = node._engine.list_len(t._h);
      if (len < 2) return node._unchanged(t._h, this);
      const order = new Uint32Array(len);
      for (let i = 0; i < len; i++) order[i] = len - 1 - i;
      node._reorder(t._h, order);
      return this;
    },
    sort(compareFn) {
      const t = info(this);
      if (t === undefined) return AP.sort.call(this, compareFn);
      if (compareFn !== undefined) callable(compareFn, 'sort(compareFn)');
      const node = t._n;
      node._unchanged(t._h);
      const vals = node._list(t);
      const len = vals.length;
      const idx = new Array(len);
      for (let i = 0; i < len; i++) idx[i] = i;
      if (compareFn !== undefined) {
        const epoch = node._epoch;
        const version = node._engine.list_version(t._h);
        idx.sort((i, j) => {
          const r = +compareFn(vals[i], vals[j]);
          return r !== r ? 0 : r;
        });
        // The order is of the elements the comparator saw: it is refused
        // when the comparator changed the array (a write elsewhere is fine).
        if (node._epoch !== epoch && node._engine.list_version(t._h) !== version) {
          throw fail('MODIFIED', 'The array changed while sort() compared its elements; it was not sorted');
        }
      } else {
        // As Array.prototype.sort: by the strings' UTF-16 code units.
        const strs = vals.map(String);
        idx.sort((i, j) => (strs[i] < strs[j] ? -1 : strs[i] > strs[j] ? 1 : 0));
      }
      let same = true;
      for (let i = 0; i < len; i++) {
        if (idx[i] !== i) {
          same = false;
          break;
        }
      }
      if (!same) node._reorder(t._h, Uint32Array.from(idx));
      return this;
    },
    fill(value, start, end) {
      const t = info(this);
      if (t === undefined) return AP.fill.apply(this, arguments);
      const node = t._n;
      node._checkWritable();
      const input = node._input(value);
      const len = node._engine.list_len(t._h);
      const k = relative(start, len, 0);
      const last = relative(end, len, len);
      if (last <= k) return node._unchanged(t._h, this);
      // Indices the conversions removed are filled again, as on a plain
      // array: the engine extends the array.
      node._write(() => node._engine.list_fill(t._h, k, last, input));
      return this;
    },
    copyWithin(target, start, end) {
      const t = info(this);
      if (t === undefined) return AP.copyWithin.apply(this, arguments);
      const node = t._n;
      node._checkWritable();
      const len = node._engine.list_len(t._h);
      const to = relative(target, len, 0);
      const from = relative(start, len, 0);
      const last = relative(end, len, len);
      const count = Math.min(last - from, len - to);
      if (count <= 0) return node._unchanged(t._h, this);
      // The engine reads the elements as they are after the conversions.
      node._write(() => node._engine.list_copy_within(t._h, to, from, count));
      return this;
    },

    // Readers with callbacks: as the native methods, which read the array
    // element by element (so a callback that writes is seen), on values
    // fetched once per change.
    forEach(cb, thisArg) {
      const t = info(this);
      if (t === undefined) return AP.forEach.apply(this, arguments);
      callable(cb, 'forEach');
      const live = new Live(t);
      const len = live.vals.length;
      for (let k = 0; k < len; k++) {
        const vals = live.fresh();
        if (k < vals.length) cb.call(thisArg, vals[k], k, this);
      }
    },
    map(cb, thisArg) {
      const t = info(this);
      if (t === undefined) return AP.map.apply(this, arguments);
      callable(cb, 'map');
      const live = new Live(t);
      const len = live.vals.length;
      const out = new Array(len);
      for (let k = 0; k < len; k++) {
        const vals = live.fresh();
        if (k < vals.length) out[k] = cb.call(thisArg, vals[k], k, this);
      }
      return out;
    },
    filter(cb, thisArg) {
      const t = info(this);
      if (t === undefined) return AP.filter.apply(this, arguments);
      callable(cb, 'filter');
      const live = new Live(t);
      const len = live.vals.length;
      const out = [];
      for (let k = 0; k < len; k++) {
        const vals = live.fresh();
        if (k < vals.length) {
          const v = vals[k];
          if (cb.call(thisArg, v, k, this)) out.push(v);
        }
      }
      return out;
    },
    some(cb, thisArg) {
      const t = info(this);
      if (t === undefined) return AP.some.apply(this, arguments);
      callable(cb, 'some');
      const live = new Live(t);
      const len = live.vals.length;
      for (let k = 0; k < len; k++) {
        const vals = live.fresh();
        if (k < vals.length && cb.call(thisArg, vals[k], k, this)) return true;
      }
      return false;
    },
    every(cb, thisArg) {
      const t = info(this);
      if (t === undefined) return AP.every.apply(this, arguments);
      callable(cb, 'every');
      const live = new Live(t);
      const len = live.vals.length;
      for (let k = 0; k < len; k++) {
        const vals = live.fresh();
        if (k < vals.length && !cb.call(thisArg, vals[k], k, this)) return false;
      }
      return true;
    },
    find(cb, thisArg) {
      const t = info(this);
      if (t === undefined) return AP.find.apply(this, arguments);
      callable(cb, 'find');
      const live = new Live(t);
      const len = live.vals.length;
      for (let k = 0; k < len; k++) {
        const v = live.fresh()[k];
        if (cb.call(thisArg, v, k, this)) return v;
      }
      return undefined;
    },
    findIndex(cb, thisArg) {
      const t = info(this);
      if (t === undefined) return AP.findIndex.apply(this, arguments);
      callable(cb, 'findIndex');
      const live = new Live(t);
      const len = live.vals.length;
      for (let k = 0; k < len; k++) {
        if (cb.call(thisArg, live.fresh()[k], k, this)) return k;
      }
      return -1;
    },
    reduce(cb, initial) {
      const t = info(this);
      if (t === undefined) return AP.reduce.apply(this, arguments);
      callable(cb, 'reduce');
      const live = new Live(t);
      const len = live.vals.length;
      let k = 0;
      let acc = initial;
      if (arguments.length < 2) {
        if (len === 0) throw fail('BAD_ARGUMENT', 'Reduce of empty array with no initial value');
        acc = live.vals[0];
        k = 1;
      }
      for (; k < len; k++) {
        const vals = live.fresh();
        if (k < vals.length) acc = cb(acc, vals[k], k, this);
      }
      return acc;
    },
    at(index) {
      const t = info(this);
      if (t === undefined) return AP.at.call(this, index);
      const node = t._n;
      const len = node._engine.list_len(t._h);
      let k = toInteger(index);
      if (k < 0) k += len;
      if (k < 0 || k >= len) return undefined;
      return node._value(node._engine.list_get(t._h, k));
    },
    indexOf: onCopy('indexOf'),
    lastIndexOf: onCopy('lastIndexOf'),
    includes: onCopy('includes'),
    slice: onCopy('slice'),
    join(separator) {
      const t = info(this);
      if (t === undefined) return AP.join.call(this, separator);
      return joinOnce(t, separator);
    },
    toString() {
      const t = info(this);
      if (t === undefined) return AP.toString.call(this);
      return joinOnce(t, undefined);
    },
    values() {
      const t = info(this);
      if (t === undefined) return AP.values.call(this);
      return new ArrayIterator(this, t, 0);
    },
    keys() {
      const t = info(this);
      if (t === undefined) return AP.keys.call(this);
      return new ArrayIterator(this, t, 1);
    },
    entries() {
      const t = info(this);
      if (t === undefined) return AP.entries.call(this);
      return new ArrayIterator(this, t, 2);
    },
  };
  arrayMethods[Symbol.iterator] = arrayMethods.values;

  const ArrayProto = Object.create(AP);
  for (const key of Reflect.ownKeys(arrayMethods)) {
    Object.defineProperty(ArrayProto, key, { value: arrayMethods[key], writable: true, configurable: true });
  }

  // ------------------------------------------------------------ the traps

  // What a store's objects refuse where a plain object's traps would
  // return false: thrown, with a code, instead of the TypeError without one
  // JavaScript makes of a trap's false (and Reflect's methods throw it too
  // rather than return false).
  function unsupported(what) {
    return fail('UNSUPPORTED', what, unsupported);
  }
  function refuseDescriptor(key) {
    if (key === 'length') return unsupported('the length of a Facsimile array is a writable value, not enumerable or configurable');
    return unsupported(
      `a Facsimile store holds plain data: define ${String(key)} with a value, writable, enumerable and configurable (no getter or setter)`,
    );
  }
  function refuseFreeze() {
    return unsupported('a Facsimile object cannot be frozen, sealed or made non-extensible');
  }
  function refusePrototype(proto, own) {
    if (proto === own) return true;
    throw unsupported('a Facsimile object keeps its prototype');
  }

  function dataDescriptor(desc) {
    return (
      'value' in desc &&
      desc.get === undefined &&
      desc.set === undefined &&
      desc.configurable !== false &&
      desc.enumerable !== false &&
      desc.writable !== false
    );
  }

  const mapHandler = {
    get(t, key, recv) {
      if (typeof key === 'symbol') {
        if (key === INFO) return t;
        return Reflect.get(MapProto, key, recv);
      }
      const node = t._n;
      const cache = node._cache;
      let m = cache === null ? undefined : cache.get(t);
      if (m === undefined && busy(t, node)) m = node._map(t);
      if (m !== undefined) {
        const v = m.ents.get(key);
        return v === undefined ? Reflect.get(MapProto, key, recv) : v;
      }
      const v = unheld(node, key) ? undefined : node._engine.map_get(t._h, key);
      if (v === undefined) return Reflect.get(MapProto, key, recv);
      return typeof v === 'object' && v !== null && v.constructor === Array ? node._wrap(v[0], v[1]) : v;
    },
    set(t, key, value) {
      if (typeof key === 'symbol') {
        throw fail('BAD_KEY', `a Facsimile map has string keys only, not ${String(key)}`);
      }
      t._n._mapSet(t._h, key, value);
      return true;
    },
    has(t, key) {
      if (typeof key === 'string') {
        const cache = t._n._cache;
        const m = cache === null ? undefined : cache.get(t);
        if (m !== undefined ? m.ents.has(key) : !unheld(t._n, key) && t._n._engine.map_has(t._h, key)) return true;
      }
      return key in MapProto;
    },
    deleteProperty(t, key) {
      if (typeof key === 'symbol') return true;
      t._n._mapDelete(t._h, key);
      return true;
    },
    ownKeys(t) {
      // Whoever lists the keys reads the values next (JSON, spread, keys,
      // deep equality): all of them come in one call.
      return t._n._map(t).keys;
    },
    getOwnPropertyDescriptor(t, key) {
      if (typeof key === 'symbol') return undefined;
      const node = t._n;
      let v;
      const m = node._cache === null ? undefined : node._cache.get(t);
      if (m !== undefined) {
        v = m.ents.get(key);
      } else if (!unheld(node, key)) {
        v = node._engine.map_get(t._h, key);
        if (v !== undefined) v = node._value(v);
      }
      if (v === undefined) return undefined;
      return { value: v, writable: true, enumerable: true, configurable: true };
    },
    defineProperty(t, key, desc) {
      if (typeof key === 'symbol') {
        throw fail('BAD_KEY', `a Facsimile map has string keys only, not ${String(key)}`);
      }
      if (!dataDescriptor(desc)) throw refuseDescriptor(key);
      t._n._mapSet(t._h, key, desc.value);
      return true;
    },
    getPrototypeOf() {
      return OP;
    },
    setPrototypeOf(t, proto) {
      return refusePrototype(proto, OP);
    },
    isExtensible() {
      return true;
    },
    preventExtensions() {
      throw refuseFreeze();
    },
  };

  // An array's writes through property assignment refuse a lock held
  // elsewhere as writes (NOT_OWNER); its methods as methods (LOCKED).
  function asWrite(e) {
    return e && e.code === 'LOCKED' ? fail('NOT_OWNER', MESSAGES.NOT_OWNER) : e;
  }

  // Whether an object was read often enough since the last change to be
  // read whole: one engine call per key or element until then, after that
  // one call for all of them, so a loop of reads costs one call, and reads
  // between writes never copy a big object more than once per eighth of
  // its size.
  function busy(t, node) {
    // Counted since the cache was last dropped (by a change, or at the end
    // of a task).
    const gen = node._gen;
    let reads = 1;
    if (t._rat === gen) reads = t._reads + 1;
    else t._rat = gen;
    t._reads = reads;
    if (reads < 16) return false;
    if (reads === 16) {
      const size = t instanceof FacsimileArray ? node._engine.list_len(t._h) : node._engine.map_len(t._h);
      t._limit = Math.max(16, size >> 3);
    }
    return reads >= t._limit;
  }

  // The element at `i` (undefined past the end): from the read cache, or
  // one engine call (see `busy`).
  function element(t, i) {
    const node = t._n;
    const cache = node._cache;
    if (cache !== null) {
      const vals = cache.get(t);
      if (vals !== undefined) return vals[i];
    }
    if (busy(t, node)) return node._list(t)[i];
    const v = node._engine.list_get(t._h, i);
    return typeof v === 'object' && v !== null && v.constructor === Array ? node._wrap(v[0], v[1]) : v;
  }

  function length(t) {
    const node = t._n;
    const cache = node._cache;
    if (cache !== null) {
      const vals = cache.get(t);
      if (vals !== undefined) return vals.length;
    }
    return node._engine.list_len(t._h);
  }

  const arrayHandler = {
    get(t, key, recv) {
      if (typeof key === 'string') {
        if (key === 'length') return length(t);
        const i = keyIndex(key);
        if (i >= 0) return element(t, i);
      } else if (key === INFO) {
        return t;
      }
      return Reflect.get(ArrayProto, key, recv);
    },
    set(t, key, value) {
      if (typeof key === 'string') {
        const i = keyIndex(key);
        try {
          if (i >= 0) {
            t._n._listSet(t._h, i, value);
            return true;
          }
          if (key === 'length') {
            t._n._setLength(t._h, value);
            return true;
          }
        } catch (e) {
          throw asWrite(e);
        }
      }
      throw fail('BAD_KEY', `a Facsimile array stores elements and its length only, not ${String(key)}`);
    },
    has(t, key) {
      if (typeof key === 'string') {
        const i = keyIndex(key);
        if (i >= 0) return i < length(t);
        if (key === 'length') return true;
      }
      return key in ArrayProto;
    },
    deleteProperty(t, key) {
      if (typeof key !== 'string') return true;
      if (key === 'length') throw unsupported('the length of a Facsimile array cannot be deleted');
      const i = keyIndex(key);
      // Arrays are dense: a deleted element becomes null.
      if (i >= 0 && i < t._n._engine.list_len(t._h)) {
        try {
          t._n._listSet(t._h, i, null);
        } catch (e) {
          throw asWrite(e);
        }
      }
      return true;
    },
    ownKeys(t) {
      // Whoever lists the indices reads the elements next.
      const len = t._n._list(t).length;
      const keys = new Array(len + 1);
      for (let i = 0; i < len; i++) keys[i] = String(i);
      keys[len] = 'length';
      return keys;
    },
    getOwnPropertyDescriptor(t, key) {
      if (typeof key !== 'string') return undefined;
      const node = t._n;
      if (key === 'length') {
        return { value: length(t), writable: true, enumerable: false, configurable: false };
      }
      const i = keyIndex(key);
      if (i < 0) return undefined;
      const v = element(t, i);
      if (v === undefined) return undefined;
      return { value: v, writable: true, enumerable: true, configurable: true };
    },
    defineProperty(t, key, desc) {
      if (typeof key === 'string') {
        if (key === 'length') {
          if (!('value' in desc) || desc.get || desc.set || desc.configurable || desc.enumerable || desc.writable === false) {
            throw refuseDescriptor(key);
          }
          try {
            t._n._setLength(t._h, desc.value);
          } catch (e) {
            throw asWrite(e);
          }
          return true;
        }
        const i = keyIndex(key);
        if (i >= 0) {
          if (!dataDescriptor(desc)) throw refuseDescriptor(key);
          try {
            t._n._listSet(t._h, i, desc.value);
          } catch (e) {
            throw asWrite(e);
          }
          return true;
        }
      }
      throw fail('BAD_KEY', `a Facsimile array stores elements and its length only, not ${String(key)}`);
    },
    getPrototypeOf() {
      return AP;
    },
    setPrototypeOf(t, proto) {
      return refusePrototype(proto, AP);
    },
    isExtensible() {
      return true;
    },
    preventExtensions() {
      throw refuseFreeze();
    },
  };

  // --------------------------------------------------------------- entries

  // One per handle the package holds: the object's proxy (weakly, strongly
  // while it has listeners or waits for a lock) and its listeners.
  class Entry {
    constructor(h, kind) {
      this.h = h;
      this.kind = kind;
      this.ref = null;
      this.strong = null;
      this.on = null; // listener records of the whole object
      this.props = null; // Map: property -> listener records
    }
    get listening() {
      return this.on !== null || this.props !== null;
    }
  }

  // A listener; `alive` goes false when removed, so that a call already
  // under way skips it.
  class Listener {
    constructor(fn, once) {
      this.fn = fn;
      this.once = once;
      this.alive = true;
    }
  }

  // Calls a listener; returns `error`, or what the listener threw ({ e })
  // when nothing was thrown before.
  function call(l, a, b, c, d, error) {
    try {
      l.fn(a, b, c, d);
    } catch (e) {
      if (error === null) return { e };
    }
    return error;
  }

  function removeRecord(list, fn) {
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i].fn === fn) {
        list[i].alive = false;
        return list.slice(0, i).concat(list.slice(i + 1));
      }
    }
    return list;
  }

  // ------------------------------------------------------------ the class

  class Facsimile {
    /**
     * A node with an empty document. `hostname` decides ties between
     * concurrent writes (the higher one wins).
     */
    constructor(hostname, options) {
      const name = String(hostname);
      if (utf8Length(name) > MAX_HOSTNAME) {
        throw fail('BAD_HOSTNAME', `a hostname is at most ${MAX_HOSTNAME} bytes of UTF-8`);
      }
      if (!wellFormed(name)) {
        throw fail('BAD_HOSTNAME', 'a hostname with a lone surrogate (half of a UTF-16 pair) has no UTF-8 form');
      }
      const opts = options == null ? {} : options;
      // Absent: the engine's default; 0 keeps no message to resend.
      const resendLog = opts.resendLog ?? undefined;
      if (resendLog !== undefined && !(Number.isInteger(resendLog) && resendLog >= 0 && resendLog <= 0xffffffff)) {
        throw fail('BAD_OPTION', 'resendLog is a number of messages');
      }
      let heartbeat = 0;
      let timeout = 0;
      if (opts.failureDetection != null) {
        ({ heartbeat, timeout } = opts.failureDetection);
        // Below the timers' resolution, a heartbeat would go at nearly
        // every call into the node, and a timeout evict every peer at once.
        if (!(heartbeat >= 1 && timeout >= 1 && Number.isFinite(heartbeat) && Number.isFinite(timeout))) {
          throw fail('BAD_OPTION', 'failureDetection is { heartbeat, timeout } in milliseconds, each at least 1');
        }
      }
      // No message fits in 0 bytes: refused rather than meaning the default.
      const maxMessage = opts.maxMessage ?? undefined;
      if (maxMessage !== undefined && !(Number.isSafeInteger(maxMessage) && maxMessage > 0)) {
        throw fail('BAD_OPTION', 'maxMessage is a positive number of bytes');
      }
      const binary = opts.binary === true;
      if (!binary && maxMessage > MAX_JSON_MESSAGE) {
        throw fail(
          'BAD_OPTION',
          `maxMessage is at most ${MAX_JSON_MESSAGE} bytes with JSON messages (the longest string JavaScript makes); binary messages may be larger`,
        );
      }
      this._hostname = name;
      this._binary = binary;
      this._engine = new GuardedEngine(
        name,
        randomIncarnation(),
        !this._binary,
        resendLog,
        heartbeat,
        timeout,
        maxMessage,
        opts.observer === true,
      );
      owners.set(this._engine, this);
      this._maxMessage = this._engine.max_message();
      // What a write's message may take: less than what is accepted once a
      // relay says its frames carry less (see connect).
      this._maxWrite = this._maxMessage;
      this._incarnation = this._engine.incarnation();
      this._pumping = false;
      this._closed = false;
      // Why the node was closed when its engine failed (see GuardedEngine).
      this._failure = null;
      this._readOnly = false;
      // Set by Facsimile.connect: the relay connection.
      this._connection = null;
      this._batch = 0;
      this._epoch = 0;
      // What was read since the last change: target -> the array's elements,
      // or the map's { ents, keys, copy }. Dropped by every change, and at
      // the end of the task.
      this._cache = null;
      this._gen = 0; // moves whenever the cache is dropped
      this._clearing = false;
      this._clearCache = () => {
        this._clearing = false;
        this._cache = null;
        this._gen++;
      };
      this._rootValid = false;
      this._root = undefined;
      this._origin = undefined; // of the change being dispatched
      this._entries = [];
      this._registry = new FinalizationRegistry((e) => this._finalize(e));
      this._listeners = { change: [], root_changed: [], ready: [], lock: [] };
      this._listened = new Set();
      this._recording = false;
      this._waiters = new Map();
      this._timer = null;
      this._timerAt = Infinity;
      // Virtual time for tests: no host timers; `_advance(ms)` moves it.
      this._manual = opts.manualTime === true;
      this._now = 0;
      this._t0 = clock();
      // What was assigned to `send`. A subclass may define `send` as a
      // method (or a field) instead, which hides the accessor: see
      // `_sender`.
      this._sendFn = undefined;
    }

    /** The hostname given to the constructor. */
    get hostname() {
      return this._hostname;
    }

    /** This node's incarnation: the `to` of messages meant for it only. */
    get incarnation() {
      return this._incarnation;
    }

    // ------------------------------------------------------- the transport

    /**
     * The function that carries this node's messages to every other node:
     * `send(message, to)`, `to` being the recipient's incarnation for a
     * message meant for one node (undefined otherwise). Assign it; messages
     * queued before are sent at once.
     */
    get send() {
      return this._sendFn;
    }

    set send(fn) {
      if (fn !== undefined && fn !== null) callable(fn, 'send');
      this._sendFn = fn == null ? undefined : fn;
      if (this._sendFn !== undefined) this._pump();
    }

    // The transport as it is now: read at every message, so that a
    // subclass's method, or a function assigned over it later (an own
    // property the accessor never sees), is the one called.
    _sender() {
      const f = this.send;
      return typeof f === 'function' ? f : undefined;
    }

    /**
     * Applies a message another node sent (`message`, `to` as given to its
     * `send`). A message meant for another node is ignored.
     *
     * Throws an Error with a `code` when the message is refused; the node is
     * unchanged and keeps working.
     */
    receive(message, to) {
      if (this._closed) return;
      if (to !== undefined && to !== null) {
        if (typeof to !== 'number') {
          throw fail('MALFORMED', 'the recipient of a message is an incarnation number');
        }
        if (to !== this._incarnation) return;
      }
      let text = false;
      let bytes;
      if (typeof message === 'string') text = true;
      else if ((bytes = bytesOf(message, 'MALFORMED')) !== undefined) message = bytes;
      else if (message instanceof ArrayBuffer) message = copyBytes(message, 'MALFORMED');
      else throw fail('MALFORMED', 'a message is a string or a Uint8Array');
      // Refused before the engine is called: copied into its memory first,
      // a message too large would grow that memory for good.
      const max = this._maxMessage;
      const size = text ? textSize(message, max) : message.length;
      if (size > max) throw fail('TOO_LARGE', `message of ${size} bytes exceeds the limit of ${max} bytes`);
      // Handed to the engine, a lone surrogate would be read as U+FFFD: the
      // same message as bytes, or escaped, is refused, and so is this.
      if (text && !wellFormed(message)) {
        throw fail('MALFORMED', 'a message with a lone surrogate (half of a UTF-16 pair) is no UTF-8 text');
      }
      const refused = this._apply(message, text);
      if (refused !== null) throw refused;
    }

    // Applies a message: returns the engine's refusal (the message changed
    // nothing), or null; an exception from a listener or `send` is thrown.
    _apply(message, text) {
      this._bump();
      this._rootValid = false;
      try {
        if (text) this._engine.receive_text(message);
        else this._engine.receive_bytes(message);
      } catch (e) {
        return again(e);
      }
      this._pump();
      return null;
    }

    // ------------------------------------------------------------- the store

    /** The root: a primitive as is, an object as its proxy. */
    get store() {
      // Kept until something may replace the root: writes below it cannot.
      if (this._rootValid) return this._root;
      const v = this._value(this._engine.root());
      this._root = v;
      this._rootValid = true;
      return v;
    }

    /**
     * Replaces the root: plain data is copied into new objects, a proxy of
     * this node's store is stored as a reference.
     */
    set store(value) {
      this._checkWritable();
      const input = this._input(value);
      this._bump();
      this._rootValid = false;
      try {
        this._engine.set_root(input);
      } catch (e) {
        throw again(e);
      }
      this._pump();
    }

    /** Drops the local document and asks the network for it. */
    sync() {
      this._checkOpen();
      this._bump();
      this._rootValid = false;
      this._engine.sync();
      this._pump();
    }

    /**
     * Says whether this node's messages reach anybody now. While they do
     * not, its writes are gathered into packed messages (a key written
     * once, integers as differences) and sent when it is online again, or
     * on `flush`; listeners still hear of each write at once. A relay
     * connection calls it itself; a transport of your own calls it when
     * its link goes down and comes back.
     */
    setOnline(online) {
      this._checkOpen();
      this._engine.set_online(Boolean(online));
      this._pump();
    }

    /** Sends what is held while offline now (a flush waits for it). */
    _sendHeld() {
      this._engine.send_held();
      this._pump();
    }

    /** Whether the document is complete (no sync in progress). */
    get ready() {
      return this._engine.is_ready();
    }

    /**
     * The canonical encoding of the document: nodes that received the same
     * messages return identical bytes.
     */
    snapshot() {
      return this._engine.snapshot();
    }

    /**
     * Object.assign as one write: one message and one event per changed
     * key, every key already in place when the first event fires.
     */
    assign(target, ...sources) {
      const t = this._own(target);
      // An array's indices are written one by one, as Object.assign writes
      // them (the engine has no write of several indices), in one message.
      if (t instanceof ArrayTarget) return this.batch(() => Object.assign(target, ...sources));
      this._checkWritable();
      const entries = [];
      for (const src of sources) {
        if (src == null) continue;
        for (const k of Object.keys(src)) entries.push(this._key(k), this._input(src[k], k));
      }
      if (entries.length > 0) {
        this._write(() => this._engine.map_assign(t._h, entries));
      }
      return target;
    }

    /**
     * Runs `fn`; every write it makes is sent as one message (events may
     * fire before it returns). Returns what `fn` returns.
     */
    batch(fn) {
      callable(fn, 'batch');
      this._checkWritable();
      if (this._batch++ === 0) this._engine.begin();
      try {
        return fn();
      } finally {
        if (--this._batch === 0) {
          this._engine.commit();
          this._pump();
        }
      }
    }

    // ---------------------------------------------------------------- locks

    /**
     * Waits for exclusive write permission on `object` (not on the objects
     * it holds). Resolves to the grant's fencing token, which increases
     * with every grant of the object. `options.signal`, an AbortSignal,
     * gives up waiting: the promise rejects with the signal's reason, and
     * the request is withdrawn unless another call still waits on it.
     */
    lock(object, options) {
      return this._lock(object, true, options);
    }

    /**
     * As lock(), but rejects at once with Error('Object is locked') when
     * another node holds the lock or waits for it.
     */
    request(object, options) {
      return this._lock(object, false, options);
    }

    /**
     * Releases this node's lock on `object`. Throws NOT_OWNER when another
     * node holds it and NOT_LOCKED when nobody does; a request of this node
     * still waiting stays (abort its lock() to withdraw it).
     */
    release(object) {
      const t = this._own(object);
      this._checkOpen();
      this._bump();
      try {
        this._engine.release_lock(t._h);
      } catch (e) {
        if (e && e.code === 'NOT_OWNER') throw fail('NOT_OWNER', MESSAGES.NOT_LOCK_OWNER);
        throw again(e);
      } finally {
        this._pump();
      }
    }

    // The promise is the caller's only answer, and it says whether the
    // lock is held: nothing after the engine's request throws. An
    // exception from a listener or `send` during the pump (a 'lock'
    // listener of the grant, say) changes nothing about the lock, as a
    // listener's exception undoes no write, and is thrown from the event
    // loop: rejecting would tell the caller that a lock it holds failed.
    _lock(object, wait, options) {
      const signal = options == null ? undefined : options.signal;
      if (signal != null) {
        if (signal.aborted) return Promise.reject(signal.reason);
        if (typeof signal.addEventListener !== 'function') {
          return Promise.reject(fail('BAD_ARGUMENT', 'options.signal is an AbortSignal'));
        }
      }
      let t;
      let token;
      try {
        t = this._own(object);
        this._checkWritable();
        this._bump();
        token = this._engine.lock(t._h, wait);
      } catch (e) {
        return Promise.reject(again(e));
      }
      if (token > 0) {
        this._pumpLater();
        return Promise.resolve(token);
      }
      const proxy = object;
      const promise = new Promise((resolve, reject) => {
        let list = this._waiters.get(t._h);
        if (list === undefined) {
          list = [];
          this._waiters.set(t._h, list);
        }
        if (signal == null) {
          list.push({ resolve, reject, proxy });
          return;
        }
        const abort = () => this._abandon(t._h, waiter, signal.reason);
        const settled = (f) => (v) => {
          signal.removeEventListener('abort', abort);
          f(v);
        };
        const waiter = { resolve: settled(resolve), reject: settled(reject), proxy };
        list.push(waiter);
        signal.addEventListener('abort', abort, { once: true });
      });
      this._pumpLater();
      return promise;
    }

    // An aborted lock() stops waiting; the last one waiting on the request
    // withdraws it (or releases the lock granted before the abort was seen).
    // The promise rejects first: what the withdrawal sets off may throw
    // (thrown from the event loop, as the abort has no caller to reach).
    _abandon(h, waiter, reason) {
      const list = this._waiters.get(h);
      const i = list === undefined ? -1 : list.indexOf(waiter);
      if (i < 0) return;
      list.splice(i, 1);
      waiter.reject(reason);
      if (list.length === 0) {
        this._waiters.delete(h);
        this._bump();
        try {
          this._engine.unlock(h);
        } catch {
          // Lost meanwhile: there is nothing left to withdraw.
        }
        this._pumpLater();
      }
    }

    // Settles the lock promises waiting on handle `h` from the lock's state.
    _settleWaiters(h) {
      const list = this._waiters.get(h);
      if (list === undefined) return;
      const state = this._engine.lock_state(h);
      if (state === 0) return;
      this._waiters.delete(h);
      for (const w of list) {
        if (state > 0) w.resolve(state);
        else if (state === -2) w.reject(fail('LOCKED', MESSAGES.LOCKED));
        else if (this._closed) w.reject(this._closedError());
        else w.reject(fail('LOST', 'The lock request was withdrawn (a sync, or this node was evicted)'));
      }
    }

    // --------------------------------------------------------------- events

    /**
     * Adds a listener: 'change' (target, property, new, old), 'root_changed'
     * (store), 'ready' (store), 'lock' (target, what, token).
     */
    on(event, cb) {
      return this._addListener(event, cb, false);
    }

    addListener(event, cb) {
      return this._addListener(event, cb, false);
    }

    once(event, cb) {
      return this._addListener(event, cb, true);
    }

    off(event, cb) {
      const list = this._listeners[event];
      if (list !== undefined) {
        this._listeners[event] = removeRecord(list, cb);
        this._syncRecording();
      }
      return this;
    }

    removeListener(event, cb) {
      return this.off(event, cb);
    }

    _addListener(event, cb, once) {
      callable(cb, `on('${String(event)}')`);
      const key = String(event);
      const list = this._listeners[key] || [];
      this._listeners[key] = list.concat([new Listener(cb, once)]);
      this._syncRecording();
      return this;
    }

    // Runs every listener of `event`, also when one throws; the first
    // exception is thrown after the last listener ran.
    _emit(event, a, b, c, d) {
      const list = this._listeners[event];
      if (list === undefined || list.length === 0) return;
      let error = null;
      for (const l of list) {
        if (!l.alive) continue;
        if (l.once) this.off(event, l.fn);
        error = call(l, a, b, c, d, error);
      }
      if (error !== null) throw error.e;
    }

    // ------------------------------------------------------ leaving, time

    /**
     * Leaves the document: the other nodes stop waiting for this one and its
     * locks are freed. Timers stop; writes throw afterwards.
     */
    close() {
      if (this._connection !== null) return this._connection.close();
      this._leave();
    }

    /**
     * Declares the node `hostname` gone (only its incarnation
     * `incarnation`, when given), as a transport does when it finds a
     * peer's connection lost for good: every node frees its locks and stops
     * waiting for it. Returns how many members that was (0 for a hostname
     * that is not a member, or this node's own).
     */
    evict(hostname, incarnation) {
      if (typeof hostname !== 'string') throw fail('BAD_ARGUMENT', 'a hostname is a string');
      // The engine takes a 32-bit incarnation, which the glue would make of
      // any number by wrapping it (2^32 + i evicting incarnation i).
      const wraps = !(Number.isInteger(incarnation) && incarnation >= 0 && incarnation <= 0xffffffff);
      if (incarnation !== undefined && incarnation !== null && wraps) {
        throw fail('BAD_ARGUMENT', 'an incarnation is an integer from 0 to 2^32 - 1');
      }
      // Peers refuse a longer hostname, and nodes one that is not
      // well-formed: no member has one.
      if (this._closed || textSize(hostname, MAX_HOSTNAME) > MAX_HOSTNAME || !wellFormed(hostname)) return 0;
      this._bump();
      const n = this._engine.evict(hostname, incarnation ?? undefined);
      this._pump();
      return n;
    }

    _leave() {
      if (this._closed) return;
      this._bump();
      this._engine.leave();
      // Closed before the goodbye goes out: what it sets off is refused as
      // closed, and replies are ignored.
      this._closed = true;
      this._clearTimer();
      this._pump();
      this._rejectWaiters();
    }

    // The lock promises still waiting reject: the node was closed.
    _rejectWaiters() {
      for (const h of [...this._waiters.keys()]) {
        const list = this._waiters.get(h);
        this._waiters.delete(h);
        for (const w of list) w.reject(this._closedError());
      }
    }

    // Closes the node once its engine failed (see GuardedEngine), without
    // the goodbye the engine can no longer make: its peers evict it as a
    // node that went silent. Returns the error to throw.
    _fail(cause) {
      if (this._failure === null) {
        let what;
        try {
          what = String(cause);
        } catch {
          what = typeof cause;
        }
        const e = fail('CLOSED', `This node was closed: its engine failed (${what}); make a new node`, this._fail);
        e.cause = cause;
        this._failure = e;
        this._engine = failedEngine(this);
        this._closed = true;
        this._bump();
        this._rootValid = false;
        this._clearTimer();
        this._rejectWaiters();
        const c = this._connection;
        if (c !== null) {
          c.settleFirst(e);
          c.shut(e);
        }
      }
      return this._closedError();
    }

    // What a closed node throws: CLOSED, its cause the engine's failure if
    // that closed it.
    _closedError() {
      const failed = this._failure;
      if (failed === null) return fail('CLOSED', 'This node was closed', this._closedError);
      const e = fail('CLOSED', failed.message, this._closedError);
      e.cause = failed.cause;
      return e;
    }

    /**
     * For tests: moves this node's virtual time forward by `ms` and runs
     * the timers that are due (needs `{ manualTime: true }`; with the host's
     * timers, it runs those due by the host's clock).
     */
    _advance(ms = 0) {
      if (this._manual) this._now += ms;
      this._onTimer();
    }

    _time() {
      return this._manual ? this._now : clock() - this._t0;
    }

    _onTimer() {
      this._timer = null;
      this._timerAt = Infinity;
      if (this._closed) return;
      this._bump();
      this._rootValid = false;
      this._engine.handle_timeout(this._time());
      this._pump();
      this._dropReclaimed();
      // The pump re-arms only when the deadline moved; a timer that fired
      // before it (armed for an earlier deadline) is replaced here.
      this._armTimer();
    }

    // Arms the host timer for the engine's next deadline (the pump calls it
    // when the deadline moved). An earlier timer already armed stays: when
    // it fires, the next one is armed from there.
    _armTimer() {
      const at = this._engine.poll_timeout();
      if (this._manual || this._closed || at === undefined) return;
      if (this._timer !== null && this._timerAt <= at) return;
      this._clearTimer();
      const delay = Math.max(0, at - this._time());
      this._timerAt = at;
      // The pending timer holds the node weakly: a node the program dropped
      // without close() is collected, and its engine with it (the engine's
      // wrapper frees its WebAssembly memory when collected).
      const node = new WeakRef(this);
      this._timer = setTimeout(() => node.deref()?._onTimer(), delay);
      if (typeof this._timer === 'object' && typeof this._timer.unref === 'function') this._timer.unref();
    }

    _clearTimer() {
      if (this._timer !== null) clearTimeout(this._timer);
      this._timer = null;
      this._timerAt = Infinity;
    }

    // ------------------------------------------------------------- the pump

    // Sends the engine's messages and runs the listeners of its events, in
    // order. A call made while a pump runs leaves its work to that pump.
    // An exception from `send` or a listener is thrown once the pump is
    // done (the first one), so that one failure does not hold back the rest.
    _pump() {
      if (this._pumping) return;
      this._pumping = true;
      const engine = this._engine;
      let error = null;
      try {
        // What waits: 1 a message, 2 an event, 4 a new timer deadline.
        // Messages go first, then one event at a time (its listeners may
        // write, and their messages go before the next event's listeners).
        let pending;
        while ((pending = engine.pending()) !== 0) {
          const send = (pending & 1) !== 0 ? this._sender() : undefined;
          if (send !== undefined) {
            const m = engine.poll_transmit();
            const to = engine.transmit_to();
            try {
              send.call(this, m, to);
            } catch (e) {
              if (error === null) error = { e };
            }
          } else if ((pending & 2) !== 0) {
            const ev = engine.poll_event();
            try {
              this._dispatch(ev);
            } catch (e) {
              if (error === null) error = { e };
            }
          } else if ((pending & 4) !== 0) {
            this._armTimer();
          } else {
            // Messages wait for a transport.
            break;
          }
        }
      } finally {
        this._pumping = false;
      }
      if (error !== null) throw error.e;
    }

    // A pump for a call whose answer is a promise: an exception from a
    // listener or `send` has no caller to reach, and is thrown from the
    // event loop, as from any event handler, rather than lost.
    _pumpLater() {
      try {
        this._pump();
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }

    _dispatch(ev) {
      switch (ev.type) {
        case 'change':
          this._onChange(ev);
          break;
        case 'root': {
          this._origin = ev.origin;
          this._discard(ev.old);
          if (this._listeners.root_changed.length === 0) {
            this._discard(ev.new);
          } else {
            this._emit('root_changed', this._value(ev.new));
          }
          break;
        }
        case 'ready':
          this._dropReclaimed();
          this._emit('ready', this.store);
          break;
        case 'lock': {
          const h = ev.target[1];
          this._settleWaiters(h);
          if (this._listeners.lock.length > 0) {
            this._emit('lock', this._value(ev.target), ev.what, ev.token);
          } else {
            this._discard(ev.target);
          }
          break;
        }
        case 'needs_sync':
          // Messages were missed that no peer can resend: only a sync
          // brings the document back.
          this._bump();
          this._rootValid = false;
          this._engine.sync();
          break;
        case 'evicted': {
          // The peers stopped waiting for this node: it starts over as a
          // new incarnation, without its locks. A relay drops what it
          // still gets of the old one: its connection counts that lost.
          const old = this._incarnation;
          this._startOver();
          if (this._connection !== null) this._connection.evicted(old);
          break;
        }
        default:
          break;
      }
    }

    // Starts over as a new incarnation, without its locks, and syncs.
    _startOver() {
      this._bump();
      this._rootValid = false;
      this._engine.reincarnate(randomIncarnation());
      this._incarnation = this._engine.incarnation();
      for (const h of [...this._waiters.keys()]) this._settleWaiters(h);
    }

    _onChange(ev) {
      const tv = ev.target;
      const h = tv[1];
      const e = this._entries[h];
      const global = this._listeners.change;
      const local = e !== undefined && (e.on !== null || e.props !== null) ? e : null;
      if (global.length === 0 && local === null) {
        this._discard(tv);
        this._discard(ev.new);
        this._discard(ev.old);
        return;
      }
      const target = this._wrap(tv[0], h);
      // A property as JavaScript names it: an index as a string, as a
      // proxy's traps see it and the original passed it.
      const prop = typeof ev.prop === 'number' ? String(ev.prop) : ev.prop;
      this._origin = ev.origin;
      const nv = this._value(ev.new);
      const ov = this._value(ev.old);
      // Every listener runs, also when one throws; the first exception is
      // thrown after the last.
      let error = null;
      for (const l of global) {
        if (!l.alive) continue;
        if (l.once) this.off('change', l.fn);
        error = call(l, target, prop, nv, ov, error);
      }
      if (local !== null) {
        if (local.on !== null) {
          for (const l of local.on) if (l.alive) error = call(l, target, prop, nv, ov, error);
        }
        if (local.props !== null && prop !== undefined) {
          const list = local.props.get(ev.prop);
          if (list !== undefined) for (const l of list) if (l.alive) error = call(l, target, prop, nv, ov, error);
        }
      }
      if (error !== null) throw error.e;
    }

    // ------------------------------------------------------------ handles

    // The proxy of the object with handle `h` (one per object at a time).
    _wrap(kind, h) {
      let e = this._entries[h];
      if (e !== undefined) {
        const p = e.ref.deref();
        if (p !== undefined) return p;
        // The old proxy was collected but its finalizer has not run: the
        // handle stays, with a new proxy.
        this._registry.unregister(e);
      } else {
        e = new Entry(h, kind);
        this._entries[h] = e;
      }
      const p =
        kind === KIND_ARRAY ? new Proxy(new ArrayTarget(this, h), arrayHandler) : new Proxy(new MapTarget(this, h), mapHandler);
      e.ref = new WeakRef(p);
      this._registry.register(p, e, e);
      return p;
    }

    _finalize(e) {
      if (this._entries[e.h] !== e || e.ref.deref() !== undefined) return;
      this._entries[e.h] = undefined;
      this._engine.release(e.h);
    }

    // A value from the engine as the program sees it.
    _value(v) {
      return typeof v === 'object' && v !== null && v.constructor === Array ? this._wrap(v[0], v[1]) : v;
    }

    // Forgets a value from the engine that nobody will see: a handle the
    // package did not hold before is released.
    _discard(v) {
      if (typeof v === 'object' && v !== null && v.constructor === Array && this._entries[v[1]] === undefined) {
        this._engine.release(v[1]);
      }
    }

    // Every change of the engine's state moves the epoch and drops what
    // was read.
    _bump() {
      this._epoch++;
      this._gen++;
      this._cache = null;
    }

    _cached(t, value) {
      if (this._cache === null) {
        this._cache = new Map();
        // What was read serves the reads of the current task; kept longer,
        // it would keep every proxy in it alive while nothing changes.
        if (!this._clearing) {
          this._clearing = true;
          queueMicrotask(this._clearCache);
        }
      }
      this._cache.set(t, value);
      return value;
    }

    // The elements of an array as the program sees them, read once per
    // change. The array is shared: callers must not modify it.
    _list(t) {
      if (this._cache !== null) {
        const vals = this._cache.get(t);
        if (vals !== undefined) return vals;
      }
      const vals = JSON.parse(this._engine.list_packed(t._h));
      for (let i = 0; i < vals.length; i++) {
        const v = vals[i];
        if (typeof v === 'object' && v !== null) vals[i] = this._unpack(v);
      }
      return this._cached(t, vals);
    }

    // The entries of a map, read once per change: { ents: Map, keys, copy }.
    _map(t) {
      if (this._cache !== null) {
        const m = this._cache.get(t);
        if (m !== undefined) return m;
      }
      const packed = JSON.parse(this._engine.map_packed(t._h));
      const ents = new Map();
      const keys = new Array(packed.length >> 1);
      for (let i = 0; i < packed.length; i += 2) {
        let v = packed[i + 1];
        if (typeof v === 'object' && v !== null) v = this._unpack(v);
        ents.set(packed[i], v);
        keys[i >> 1] = packed[i];
      }
      return this._cached(t, { ents, keys, copy: null });
    }

    // The tree below a proxy as plain data, by JSON's rules.
    _toJSON(t) {
      let text;
      try {
        text = this._engine.to_json(t._h);
      } catch (e) {
        throw again(e);
      }
      return JSON.parse(text);
    }

    // A packed value that is not plain JSON (see crates/facsimile-wasm).
    _unpack(v) {
      if (v.constructor === Array) return this._wrap(v[0], v[1]);
      if (v.f !== undefined) return v.f === 'NaN' ? NaN : v.f === 'inf' ? Infinity : -Infinity;
      if (v.i !== undefined) return BigInt(v.i);
      return Uint8Array.from(v.b);
    }

    // The internals of a proxy of this node's store; throws for anything else.
    _own(object) {
      const t = info(object);
      if (t === undefined) {
        throw fail('NOT_AN_OBJECT', 'Pass an object read from this node\'s store (a proxy)');
      }
      if (t._n !== this) throw this._foreign();
      return t;
    }

    _foreign() {
      return fail(
        'FOREIGN_OBJECT',
        'This object belongs to another Facsimile node\'s store; store a plain copy of it instead',
      );
    }

    // A value as the engine takes it: scalars as they are, proxies of this
    // store as references, plain data as new objects, by JSON.stringify's
    // rules. `key` is what JSON.stringify would pass to a toJSON: the
    // property or index written ('' when there is none).
    _input(v, key = '') {
      switch (typeof v) {
        case 'number':
        case 'boolean':
        case 'bigint':
        case 'undefined':
          return v;
        case 'string':
          return this._text(v, 'BAD_VALUE');
        case 'object': {
          if (v === null) return null;
          const out = this._objectInput(v, null, key);
          if (out instanceof Uint8Array && out.length > this._maxWrite) throw this._tooLarge();
          return out;
        }
        default:
          throw fail('BAD_VALUE', `A ${typeof v} cannot be stored`);
      }
    }

    // The strings and bytes of a write are refused before the engine is
    // called when they alone are more than a message may be (a write's
    // message holds them all): the engine would refuse the write as well,
    // but only once they were copied into its memory, which never shrinks.
    // A string that is not well-formed is refused (`code`): stored, its
    // lone surrogates would be U+FFFD.
    _text(s, code) {
      this._measure(s, code, this._maxWrite);
      return s;
    }

    // Checks `s` as `_text` does, against `room` bytes (at most
    // maxMessage), and returns its size (`textSize`): one walk of a long
    // string serves both the check and the count of plain data's room.
    _measure(s, code, room) {
      if (!wellFormed(s)) {
        const what = code === 'BAD_KEY' ? 'A key' : 'A string';
        throw fail(code, `${what} with a lone surrogate (half of a UTF-16 pair) cannot be stored: UTF-8 has no form for it`, this._measure);
      }
      const n = textSize(s, room);
      if (n > room) throw this._tooLarge();
      return n;
    }

    _key(k) {
      return this._text(k, 'BAD_KEY');
    }

    _tooLarge() {
      const max = this._maxWrite;
      return fail(
        'TOO_LARGE',
        `this write makes a message of more than ${max} bytes, the limit; write it in parts, or raise the limit on every node and the transport`,
        this._tooLarge,
      );
    }

    // Counts `n` bytes of the value being copied (see `_text`) against the
    // room its `path` has left.
    _spend(path, n) {
      if ((path.room -= n) < 0) throw this._tooLarge();
    }

    // An element or a value of plain data being copied into an input.
    _child(x, path, key) {
      if (typeof x === 'string') {
        path.room -= this._measure(x, 'BAD_VALUE', path.room);
        return x;
      }
      const out = typeof x === 'object' && x !== null ? this._objectInput(x, path, key) : this._input(x);
      // A string a toJSON returned, or a String object's.
      if (typeof out === 'string') this._spend(path, textSize(out, path.room));
      else if (out instanceof Uint8Array) this._spend(path, out.length);
      return out;
    }

    // An object as an input. As JSON.stringify: toJSON is called once per
    // value (what it returns is not asked again), Number, String, Boolean
    // (and BigInt) objects are their primitives, and what is left is
    // copied by its own enumerable keys. `stack` holds the objects being
    // copied around this one (null at the top), as they are after toJSON,
    // so that data that leads back to itself through a toJSON is a cycle,
    // and a toJSON that nests without end is too deep, not a stack
    // overflow.
    _objectInput(v, stack, key) {
      let o = v;
      let done = this._asIs(o);
      if (done !== undefined) return done;
      if (typeof o.toJSON === 'function') {
        o = o.toJSON(key);
        if (typeof o !== 'object' || o === null) return this._input(o);
        done = this._asIs(o);
        if (done !== undefined) return done;
      }
      const primitive = unboxed(o);
      if (primitive !== undefined) return this._input(primitive);
      let path = stack;
      if (path === null) {
        path = [];
        // What is left of maxMessage for its strings, keys and bytes.
        path.room = this._maxWrite;
      }
      if (path.includes(o)) {
        throw fail('CYCLE', 'Plain data with a cycle cannot be stored; store the object, then a reference to its proxy');
      }
      if (path.length >= MAX_DEPTH) {
        throw fail('TOO_DEEP', `A value nested more than ${MAX_DEPTH} levels deep cannot be written at once; write its inner objects first`);
      }
      path.push(o);
      let out;
      if (Array.isArray(o)) {
        const a = new Array(o.length);
        for (let i = 0; i < o.length; i++) a[i] = this._child(o[i], path, String(i));
        // The engine looks for `r`, then `m`, then `a`: each one it passes
        // is an own property, so that none is looked up on Object.prototype,
        // where a program's getter would run inside the engine, or a value
        // put there would be read as a reference.
        out = { r: undefined, m: undefined, a };
      } else {
        const m = [];
        for (const k of Object.keys(o)) {
          path.room -= this._measure(k, 'BAD_KEY', path.room);
          m.push(k, this._child(o[k], path, k));
        }
        out = { r: undefined, m };
      }
      path.pop();
      return out;
    }

    // An object stored as it is, without toJSON: a proxy of this store as
    // a reference, bytes as bytes (undefined for the others).
    _asIs(o) {
      const t = o[INFO];
      if (t !== undefined) {
        if (t._n !== this) throw this._foreign();
        return { r: t._h };
      }
      const bytes = bytesOf(o, 'BAD_VALUE');
      if (bytes !== undefined) return bytes;
      if (o instanceof Uint8Array) {
        throw fail('BAD_VALUE', 'This object passes for a Uint8Array but is not one (a Proxy around one?); store the Uint8Array itself');
      }
      if (o instanceof ArrayBuffer) return copyBytes(o, 'BAD_VALUE');
      return undefined;
    }

    // ------------------------------------------------------------- writes

    _checkOpen() {
      if (this._closed) throw this._closedError();
    }

    _checkWritable() {
      if (this._sender() === undefined) throw fail('NO_SENDER', MESSAGES.NO_SENDER);
      if (this._closed) throw this._closedError();
      if (this._readOnly) throw fail('READ_ONLY', 'This node joined its relay read-only');
    }

    // An array method that changes nothing still refuses as the method
    // would: without a transport, closed, or locked by another node.
    /** Runs an engine write, then sends and reports what it made. */
    _write(f) {
      this._bump();
      try {
        f();
      } catch (e) {
        throw again(e);
      }
      this._pump();
    }

    _unchanged(h, result) {
      this._checkWritable();
      if (this._engine.locked_elsewhere(h)) throw fail('LOCKED', MESSAGES.LOCKED, this._unchanged);
      return result;
    }

    _mapSet(h, key, value) {
      if (this._sendFn === undefined || this._closed || this._readOnly) this._checkWritable();
      this._key(key);
      const input = typeof value === 'number' || typeof value === 'boolean' ? value : this._input(value, key);
      this._bump();
      try {
        this._engine.map_set(h, key, input);
      } catch (e) {
        throw again(e);
      }
      this._pump();
    }

    _mapDelete(h, key) {
      this._checkWritable();
      this._key(key);
      this._write(() => this._engine.map_delete(h, key));
    }

    _listSet(h, i, value) {
      if (this._sendFn === undefined || this._closed || this._readOnly) this._checkWritable();
      const input = this._input(value, String(i));
      if (i > MAX_PAD && i > this._engine.list_len(h) + MAX_PAD) {
        throw fail('OUT_OF_BOUNDS', `index ${i} is too far past the end of the array (arrays are dense)`);
      }
      this._write(() => this._engine.list_set(h, i, input));
    }

    _setLength(h, value) {
      this._checkWritable();
      const n = Number(value);
      if (!(n >= 0 && n <= 4294967295 && Math.trunc(n) === n)) throw fail('BAD_LENGTH', 'Invalid array length');
      const len = this._engine.list_len(h);
      if (n === len) return;
      if (n < len) {
        this._splice(h, n, len - n, EMPTY);
      } else {
        if (n - len > MAX_PAD) {
          throw fail('OUT_OF_BOUNDS', `length ${n} is too far past the end of the array (arrays are dense)`);
        }
        this._write(() => this._engine.list_set(h, n - 1, null));
      }
    }

    _push(h, items) {
      if (this._sendFn === undefined || this._closed || this._readOnly) this._checkWritable();
      const engine = this._engine;
      if (items.length === 1) {
        const v = items[0];
        const input = typeof v === 'number' || typeof v === 'boolean' ? v : this._input(v);
        this._bump();
        let n;
        try {
          n = engine.list_push(h, input);
        } catch (e) {
          throw again(e);
        }
        this._pump();
        return n;
      }
      // Copied before the length is read: their getters may change it.
      const inputs = this._inputs(items);
      const len = engine.list_len(h);
      if (items.length === 0) return this._unchanged(h, len);
      this._splice(h, len, 0, inputs);
      return len + items.length;
    }

    _inputs(items) {
      return items.length === 0 ? EMPTY : items.map((x) => this._input(x));
    }

    // A splice of values already converted (`_inputs`), once the node was
    // found writable. `len`: see the splice method.
    _splice(h, start, count, inputs, len) {
      this._bump();
      let removed;
      try {
        removed = this._engine.list_splice(h, start, count, inputs, len);
      } catch (e) {
        throw again(e);
      }
      for (let i = 0; i < removed.length; i++) removed[i] = this._value(removed[i]);
      this._pump();
      return removed;
    }

    _reorder(h, order) {
      this._checkWritable();
      this._write(() => this._engine.list_reorder(h, order));
    }

    // ----------------------------------------------------- object listeners

    _listen(proxy, t, prop, fn) {
      const e = this._entries[t._h];
      const record = new Listener(fn, false);
      if (prop === undefined) {
        e.on = e.on === null ? [record] : e.on.concat([record]);
      } else {
        const key = this._propKey(t, prop);
        if (e.props === null) e.props = new Map();
        const list = e.props.get(key);
        e.props.set(key, list === undefined ? [record] : list.concat([record]));
      }
      // An object with listeners keeps its proxy (and handle) until it is
      // reclaimed.
      e.strong = proxy;
      this._listened.add(e);
      this._syncRecording();
    }

    _unlisten(t, prop, fn) {
      const e = this._entries[t._h];
      if (e === undefined) return;
      if (prop === undefined) {
        if (e.on !== null) {
          e.on = removeRecord(e.on, fn);
          if (e.on.length === 0) e.on = null;
        }
      } else if (e.props !== null) {
        const key = this._propKey(t, prop);
        const list = e.props.get(key);
        if (list !== undefined) {
          const rest = removeRecord(list, fn);
          if (rest.length === 0) e.props.delete(key);
          else e.props.set(key, rest);
          if (e.props.size === 0) e.props = null;
        }
      }
      if (e.on === null && e.props === null) this._unlistenAll(e);
    }

    _unlistenAll(e) {
      if (e.on !== null) for (const l of e.on) l.alive = false;
      if (e.props !== null) for (const list of e.props.values()) for (const l of list) l.alive = false;
      e.on = null;
      e.props = null;
      e.strong = null;
      this._listened.delete(e);
      this._syncRecording();
    }

    // Array listeners are keyed by index, map listeners by key.
    _propKey(t, prop) {
      if (!(t instanceof ArrayTarget)) return String(prop);
      if (typeof prop === 'number') return prop;
      const i = keyIndex(String(prop));
      return i >= 0 ? i : String(prop);
    }

    // Listeners of objects the engine reclaimed can never fire: drop them,
    // and with them the proxy and handle they kept.
    _dropReclaimed() {
      if (this._listened.size === 0 || !this._engine.is_ready()) return;
      for (const e of [...this._listened]) {
        if (this._engine.kind(e.h) === 0) this._unlistenAll(e);
      }
    }

    // The engine records changes only while somebody listens for them.
    _syncRecording() {
      const l = this._listeners;
      const on = l.change.length > 0 || l.root_changed.length > 0 || this._listened.size > 0;
      if (on !== this._recording) {
        this._recording = on;
        this._engine.record_changes(on);
      }
    }

    /** For tests: the handles the engine holds for this node's proxies. */
    _handleCount() {
      return this._engine.handle_count();
    }

    /** For tests: the objects this node's engine holds. */
    _objectCount() {
      return this._engine.object_count();
    }

    /**
     * For the inspector: the members, with when each was last heard on
     * this node's clock (ms, `null` before its first check) and how long
     * ago that was.
     */
    _peers() {
      const now = this._time();
      return this._engine.peers().map((p) => ({ ...p, silentFor: p.lastHeard === null ? null : now - p.lastHeard }));
    }

    /**
     * For the inspector: every lock queue known here, `{ target, queue:
     * [{ hostname, incarnation, token }], lastToken }`, the holder (or the
     * next holder) first; a token is `null` while its grant is unknown here.
     */
    _locks() {
      return this._engine.locks().map((e) => ({ target: this._value(e.target), queue: e.queue, lastToken: e.lastToken }));
    }

    /**
     * For the inspector: the rows of the tree with the objects at
     * `expanded` (JSON pointers) open and those less than `openDepth` deep,
     * each object only at its first place, and the place of each of
     * `objects` (see the engine's `tree`).
     */
    _tree(expanded, openDepth, objects) {
      const wanted = Uint32Array.from(objects, (o) => this._own(o)._h);
      // An array of strings of the package's own: the glue reads the
      // length at each element, and the engine takes strings only.
      const paths = Array.from(expanded, String);
      // A u32, which the glue would wrap (-1 opening everything).
      const depth = Math.min(Math.max(toInteger(openDepth), 0), 0xffffffff);
      return JSON.parse(this._engine.tree(paths, depth, wanted));
    }

    /** For the inspector: the place (a JSON pointer, or null) of each of `objects`. */
    _placesOf(objects) {
      return JSON.parse(this._engine.places_of(Uint32Array.from(objects, (o) => this._own(o)._h)));
    }

    /**
     * For the inspector, inside a 'change' listener: who made the change
     * (a hostname; `null` for this node).
     */
    _changeOrigin() {
      return this._origin;
    }

    /** For tests: the bytes of the engine's memory (shared by every node). */
    static _memoryBytes() {
      return wasm.linear_memory().buffer.byteLength;
    }
  }

  installConnect(Facsimile, wasm, fail);
  Object.defineProperty(Facsimile, 'platform', { value: platform, enumerable: true });
  // For require('facsimile').default and import { Facsimile } alike.
  Facsimile.default = Facsimile;
  Facsimile.Facsimile = Facsimile;
  return Facsimile;
}
