// Type declarations of the `facsimile` package (hand-written; kept in step
// with src/core.js and checked by test/types.test.js).
//
// `const Facsimile = require('facsimile')` and
// `import Facsimile from 'facsimile'` give the class; `Facsimile.default`
// and `Facsimile.Facsimile` are the class too.

/**
 * One participant: a replica of the document, mirrored with every other
 * node its messages reach. `T` describes the store's data when known.
 */
declare class Facsimile<T = any> {
  /**
   * A node with an empty document (its store is `null`). The hostname
   * (any value, as a string; at most 1024 bytes of UTF-8) decides ties
   * between concurrent writes: the higher one wins.
   */
  constructor(hostname: unknown, options?: Facsimile.Options);

  /** The hostname, as a string. */
  readonly hostname: string;
  /** The hostname, as the original library named it. */
  readonly _hostname: string;
  /**
   * This node's incarnation: the `to` of messages meant for it alone. It
   * changes when the node starts over after its peers evicted it.
   */
  readonly incarnation: number;
  /** Whether the document is complete (no sync in progress). */
  readonly ready: boolean;

  /**
   * The root: a primitive as it is, an object as a proxy that reads and
   * writes like plain data. Assigning replaces the root: plain data is
   * copied into new objects, a proxy of this store is stored as a
   * reference.
   */
  get store(): Facsimile.Stored<T>;
  set store(value: T | Facsimile.Stored<T> | Facsimile.Writable);

  /**
   * The transport: called with every message this node sends, in order.
   * Assign it (or define it as a method of a subclass); deliver each
   * message to every other node's `receive` (in the order sent). `to` is
   * the recipient's incarnation for a message meant for one node,
   * `undefined` otherwise. Until it is assigned, reading it gives
   * `undefined` and writes throw `NO_SENDER`.
   */
  send(message: Facsimile.Message, to: number | undefined): void;

  /**
   * Applies a message from another node (its `send` arguments). A message
   * meant for another node is ignored.
   * @throws {Facsimile.FacsimileError} when the message is refused; the
   * node is unchanged.
   */
  receive(message: Facsimile.Message | ArrayBuffer, to?: number | null): void;

  /** Drops the local document and asks the network for it ('ready' follows). */
  sync(): void;

  /**
   * Says whether this node's messages reach anybody now: while they do not,
   * its writes are held and sent packed when it is online again (a relay
   * connection calls it itself).
   */
  setOnline(online: boolean): void;

  /**
   * Waits for exclusive write permission on an object of this store (not
   * on the objects it holds). Resolves to the grant's fencing token, which
   * increases with every grant of the object. Aborting `options.signal`
   * gives up waiting: the promise rejects with the signal's reason and the
   * request is withdrawn (unless another call still waits on it). The
   * promise says only whether the lock is held: an exception a listener or
   * `send` throws meanwhile (a `'lock'` listener of the grant, say) is
   * thrown from the event loop.
   */
  lock(object: object, options?: Facsimile.LockOptions): Promise<number>;
  /**
   * As `lock`, but rejects at once with `Error('Object is locked')` when
   * another node holds the lock or waits for it.
   */
  request(object: object, options?: Facsimile.LockOptions): Promise<number>;
  /**
   * Releases this node's lock on an object. A request still waiting is
   * left waiting (abort its `lock` to withdraw it).
   * @throws {Facsimile.FacsimileError} `NOT_LOCKED` ('Object is not
   * locked'), `NOT_OWNER` ('Node does not own this lock'); nothing is
   * released then.
   */
  release(object: object): void;

  /**
   * `Object.assign` as one write: one message, every key in place when the
   * first change event fires. Returns `target`. The sources are typed as
   * the target's data: some of its keys, each with what may be written
   * there (plain data or proxies of this store).
   */
  assign<M>(target: Facsimile.StoredMap<M>, ...sources: Array<Partial<Facsimile.Input<M>> | null | undefined>): Facsimile.StoredMap<M>;
  /**
   * `Object.assign` onto an array of the store: its indices, written one by
   * one in order as `Object.assign` writes them (each with its change
   * event, fired as it is written), sent as one message as `batch` sends
   * them.
   */
  assign<E>(
    target: Facsimile.StoredArray<E>,
    ...sources: Array<{ readonly [index: number]: Facsimile.Input<E> } | null | undefined>
  ): Facsimile.StoredArray<E>;
  /** Runs `fn`; every write it makes goes out as one message. */
  batch<R>(fn: () => R): R;

  /** The canonical encoding of the document: equal on converged nodes. */
  snapshot(): Uint8Array;

  /**
   * Leaves the document: the other nodes stop waiting for this one, its
   * locks are freed, its timers stop. Writes throw afterwards. On a node
   * made by `Facsimile.connect`, it first waits for the relay to
   * acknowledge the node's writes (rejecting with `WRITES_LOST` for those
   * an eviction on its way dropped), then leaves and waits for the goodbye
   * too, all within 5 s, and closes the socket: the promise tells when.
   */
  close(): void | Promise<void>;

  /**
   * Declares the node `hostname` gone (only its incarnation `incarnation`,
   * when given), as a transport of your own does when it finds a peer's
   * connection lost for good: every node frees its locks and stops waiting
   * for it. Returns how many members that was. (A relay connection and the
   * `failureDetection` option do this by themselves.) An incarnation is an
   * integer from 0 to 2^32 - 1: another throws `BAD_ARGUMENT`.
   */
  evict(hostname: string, incarnation?: number): number;

  /**
   * Resolves once the relay has every message this node sent so far on
   * its disk (at once for a node made by `new Facsimile`).
   * @throws {Facsimile.FacsimileError} `WRITES_LOST` when some were dropped
   * (the relay had evicted the node; reported once: by the flushes under
   * way then, or else by the next one), `REFUSED`, `CLOSED`.
   */
  flush(): Promise<void>;

  /**
   * The relay connection of a node made by `Facsimile.connect` (null
   * otherwise): `connecting`, `connected`, `disconnected` (reconnecting),
   * `closed`, or `refused` (the relay refused the node's messages, as it
   * does a read-only node's writes, and closed the connection for good),
   * and the last error.
   */
  readonly connection: Facsimile.ConnectionState | null;

  /**
   * Connects a new node to a document on the relay (`facsimile serve`) at
   * `url` (`ws://host:port/` or `wss://host:port/`) and resolves to it once
   * the document is there. The node reconnects with backoff, sends again
   * what the relay had not acknowledged, and resumes where it stopped
   * reading, or syncs.
   * @throws {Facsimile.FacsimileError} `REFUSED` (a wrong token, say),
   * `NOT_A_RELAY`, `CONNECT`, `TIMEOUT`, `NO_WEBSOCKET`.
   */
  static connect<T = any>(url: string, hostname: unknown, options?: Facsimile.ConnectOptions): Promise<Facsimile<T>>;

  /**
   * For tests: moves a `manualTime` node's virtual time forward by `ms`
   * and runs the timers that are due (with host timers, runs those due now).
   */
  _advance(ms?: number): void;

  on(event: 'change', cb: Facsimile.ChangeListener): this;
  on(event: 'root_changed' | 'ready', cb: (store: any) => void): this;
  on(event: 'lock', cb: Facsimile.LockListener): this;
  once(event: 'change', cb: Facsimile.ChangeListener): this;
  once(event: 'root_changed' | 'ready', cb: (store: any) => void): this;
  once(event: 'lock', cb: Facsimile.LockListener): this;
  addListener(event: 'change', cb: Facsimile.ChangeListener): this;
  addListener(event: 'root_changed' | 'ready', cb: (store: any) => void): this;
  addListener(event: 'lock', cb: Facsimile.LockListener): this;
  off(event: Facsimile.EventName, cb: (...args: any[]) => void): this;
  removeListener(event: Facsimile.EventName, cb: (...args: any[]) => void): this;

  /** 'node' or 'browser': which build this is. */
  static readonly platform: 'node' | 'browser';
  /** The class itself (for `require('facsimile').default`). */
  static readonly default: typeof Facsimile;
  /** The class itself (for `import { Facsimile } from 'facsimile'`). */
  static readonly Facsimile: typeof Facsimile;
}

/** A key no object has: it carries a map's data type in `StoredMap`. */
declare const dataType: unique symbol;

declare namespace Facsimile {
  interface LockOptions {
    /** Gives up waiting for the lock when aborted. */
    signal?: AbortSignal;
  }
  interface ConnectOptions {
    /** The document (default `'default'`). */
    doc?: string;
    /** The relay's token (`facsimile serve --token`). */
    token?: string;
    /** Mirror and watch only: the node's writes throw `READ_ONLY`. */
    readOnly?: boolean;
    /**
     * The WebSocket class (default: the global one; on Node.js before 22,
     * pass the `ws` package's).
     */
    WebSocket?: any;
    /**
     * How long connect waits for the document, in ms (default 30000); each
     * connection waits that long for the relay's welcome, which a relay
     * sends once it has the document open (after a restart, recovered).
     */
    timeout?: number;
    /** How long a connection waits to reach the relay, in ms (default 10000). */
    connectTimeout?: number;
    /**
     * Reconnection delays in ms, doubling from min to max (100, 10000)
     * while attempts fail: one counts as failed until the relay
     * acknowledges something on it (a welcome then an end is no success).
     */
    backoff?: { min?: number; max?: number };
    /** A heartbeat after this many ms without sending (default 1000). */
    heartbeat?: number;
    /**
     * The relay's frame limit in bytes (`facsimile serve --max-frame`,
     * default 16 MiB): a write whose message would not fit throws
     * `TOO_LARGE` and changes nothing.
     */
    maxFrame?: number;
  }

  interface ConnectionState {
    status: 'connecting' | 'connected' | 'disconnected' | 'closed' | 'refused';
    error: FacsimileError | null;
  }

  interface Options {
    /** Messages as `Uint8Array`s (compact binary) instead of JSON strings. */
    binary?: boolean;
    /**
     * How many of its own recent messages the node keeps to resend to a
     * peer that missed them (default 4096, whatever their size; 0 keeps
     * none, and a peer that missed a message syncs again).
     */
    resendLog?: number;
    /**
     * Detect silent peers: a heartbeat after `heartbeat` ms without sending,
     * and a member silent for `timeout` ms is evicted (its locks are freed).
     * Off by default.
     */
    failureDetection?: { heartbeat: number; timeout: number };
    /**
     * The largest message, in bytes, this node accepts and its writes may
     * make (default 64 MiB): a larger write throws `TOO_LARGE` and changes
     * nothing. Give every node of a document the same limit. A positive
     * integer: 0 throws `BAD_OPTION`, as does more than 0x1fffffe8 (the
     * longest string JavaScript makes) with JSON messages.
     */
    maxMessage?: number;
    /**
     * The node only reads: its writes and locks throw `READ_ONLY`, and its
     * peers do not count it a member (a stalled observer holds up no lock
     * grant and no reclamation).
     */
    observer?: boolean;
    /**
     * For tests: no host timers; time moves only with `_advance(ms)`.
     */
    manualTime?: boolean;
  }

  /** A message as `send` produces it and `receive` takes it. */
  type Message = string | Uint8Array;

  type EventName = 'change' | 'root_changed' | 'ready' | 'lock';

  /**
   * A change of one object: `property` is the key or index (a string, as
   * JavaScript names properties), `undefined`
   * for a mass change (an array method); `newValue` is `undefined` after a
   * delete, `oldValue` for a new key.
   */
  type ChangeListener = (target: any, property: string | undefined, newValue: any, oldValue: any) => void;

  /** A lock of this node was granted, released, lost or withdrawn. */
  type LockListener = (
    target: any,
    what: 'granted' | 'released' | 'lost' | 'withdrawn' | 'refused',
    token: number | undefined,
  ) => void;

  /** What can be stored: scalars, and plain objects and arrays of them. */
  type Scalar = null | undefined | boolean | number | string | bigint | Uint8Array;
  type Writable = Scalar | Stored<any> | { [key: string]: Writable } | Writable[];

  /**
   * The data type of a map of a store, for `assign` to type its sources
   * (no such property exists).
   */
  interface Typed<M> {
    readonly [dataType]?: M;
  }

  /** What every object of a store answers, besides its data. */
  interface Observable {
    /** Listens to every change of this object (not of the objects it holds). */
    on(cb: ChangeListener): this;
    /** Listens to the changes of one key or index. */
    on(property: string | number, cb: ChangeListener): this;
    off(cb: ChangeListener): this;
    off(property: string | number, cb: ChangeListener): this;
    /** The object and everything below it as plain data (JSON's rules). */
    toJSON(): any;
  }

  /**
   * A map of a store, read through its proxy. Its properties are typed as
   * they read (objects as proxies, with `on` and `off`), and TypeScript
   * types a property's writes as its reads (mapped types cannot have
   * separate write types, microsoft/TypeScript#43826): to store plain data
   * in a property, write it with `node.assign(map, { key: value })`.
   */
  type StoredMap<M> = { [K in keyof M]: Stored<M[K]> } & Observable & Typed<M>;
  /**
   * An array of a store, read through its proxy. Its methods take plain
   * data (or proxies of the store); an index is typed as it reads, like a
   * map's property: to store plain data at an index, `fill(value, i, i + 1)`
   * or `splice(i, 1, value)`.
   */
  interface StoredArray<E> extends Array<Stored<E>>, Observable {
    push(...items: Input<E>[]): number;
    unshift(...items: Input<E>[]): number;
    splice(start: number, deleteCount?: number): Stored<E>[];
    splice(start: number, deleteCount: number, ...items: Input<E>[]): Stored<E>[];
    fill(value: Input<E>, start?: number, end?: number): this;
  }
  /**
   * What a value of a store may be written as: its plain data, with
   * proxies of the same store anywhere in it (stored as references); a
   * `bigint` as what it reads as, a number or a bigint.
   */
  type Input<V> = V extends bigint
    ? number | bigint
    : V extends Scalar
      ? V
      : V extends ReadonlyArray<infer E>
        ? ReadonlyArray<Input<E>>
        : V extends object
          ? { [K in keyof V]: Input<V[K]> }
          : V;
  /**
   * A value of a store as read: objects are proxies. An integer is a
   * number within 2^53 and a bigint beyond, whatever it was written as: a
   * `bigint` reads as `number | bigint`. (A number field holds what
   * JavaScript writes there; an integer beyond 2^53 that a Rust or Python
   * peer writes reads as a bigint: declare such a field `bigint`.)
   */
  type Stored<V> = V extends bigint
    ? number | bigint
    : V extends Scalar
      ? V
      : V extends ReadonlyArray<infer E>
        ? StoredArray<E>
        : V extends object
          ? StoredMap<V>
          : V;

  /** The codes of the errors the package throws. */
  type ErrorCode =
    | 'NO_SENDER'
    | 'CLOSED'
    | 'LOCKED'
    | 'MODIFIED'
    | 'NOT_LOCKED'
    | 'NOT_OWNER'
    | 'LOST'
    | 'SYNCING'
    | 'EVICTED'
    | 'UNKNOWN_OBJECT'
    | 'DETACHED'
    | 'OUT_OF_BOUNDS'
    | 'WRONG_KIND'
    | 'FOREIGN_OBJECT'
    | 'NOT_AN_OBJECT'
    | 'BAD_VALUE'
    | 'BAD_ARGUMENT'
    | 'BAD_LENGTH'
    | 'BAD_KEY'
    | 'BAD_HOSTNAME'
    | 'BAD_OPTION'
    | 'UNSUPPORTED'
    | 'CYCLE'
    | 'BIGINT'
    | 'TOO_DEEP'
    | 'MALFORMED'
    | 'INVALID'
    | 'EMPTY'
    | 'TOO_LARGE'
    | 'UNSUPPORTED_VERSION'
    | 'TAG_COLLISION'
    | 'BACKLOG_FULL'
    | 'REFUSED'
    | 'READ_ONLY'
    | 'WRITES_LOST'
    | 'NOT_A_RELAY'
    | 'CONNECT'
    | 'TIMEOUT'
    | 'PROTOCOL'
    | 'NO_WEBSOCKET';

  /** Every error the package throws has a code. */
  interface FacsimileError extends Error {
    code: ErrorCode;
    /** With `WRITES_LOST`: how many writes were dropped. */
    lost?: number;
  }
}

export = Facsimile;
