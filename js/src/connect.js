// Facsimile.connect: a node on a relay (`facsimile serve`) over a
// WebSocket. The protocol (the hello, what a welcome means, which messages
// go out again after a reconnection, acknowledgements) is the engine's
// RelayClient, the Rust client's own session compiled to WebAssembly; this
// file carries its frames and runs the reconnection timer.
//
// The build concatenates it after core.js; createFacsimile calls
// installConnect.
function installConnect(Facsimile, wasm, fail) {
  const { RelayClient } = wasm;
  const OPEN = 1;
  // A relay's clients evict nobody themselves: the relay decides who left.
  const NEVER = 100 * 365 * 24 * 3600 * 1000;
  const ADMISSION_JOINED = 0;
  const ADMISSION_SYNC = 2;
  const ADMISSION_REJOIN = 3;

  // Like the node's own timers, the connection's never keep a Node.js
  // process alive by themselves (an open socket does).
  function unref(timer) {
    if (typeof timer === 'object' && typeof timer.unref === 'function') timer.unref();
    return timer;
  }

  // A timer's delay past 2^31 - 1 ms fires at once: a longer wait (one
  // meant as never) waits that long instead, some 24 days.
  function later(f, ms) {
    return unref(setTimeout(f, Math.min(ms, 2 ** 31 - 1)));
  }

  function positive(v, dflt, what) {
    if (v === undefined) return dflt;
    if (!(typeof v === 'number' && v > 0 && Number.isFinite(v))) {
      throw fail('BAD_OPTION', `${what} is a number of milliseconds`);
    }
    return v;
  }

  // One node's connection to a relay, across reconnections.
  class Connection {
    constructor(node, url, WS, opts, heartbeat) {
      this.node = node;
      this.url = url;
      this.WS = WS;
      this.client = new RelayClient(String(opts.doc ?? 'default'), String(opts.token ?? ''), opts.readOnly === true);
      const backoff = opts.backoff ?? {};
      this.min = positive(backoff.min, 100, 'backoff.min');
      this.max = positive(backoff.max, 10000, 'backoff.max');
      this.timeout = positive(opts.timeout, 30000, 'timeout');
      // Reaching the relay (the WebSocket's handshake) is bounded by the
      // connect timeout; its welcome, which a relay sends once it has the
      // document open (after a restart, recovered from its disk, which may
      // take far longer), by `timeout`, counted from the hello: as in the
      // Rust client.
      this.connectTimeout = positive(opts.connectTimeout, 10000, 'connectTimeout');
      this.handshake = null;
      // The node sends at least a heartbeat each `heartbeat` and the relay
      // acknowledges every frame: a relay silent for ten of them is taken
      // for gone (a link that stalls without closing would otherwise hang
      // on for minutes while the relay evicts the node), as in the Rust
      // client.
      this.silence = Math.max(10 * heartbeat, 1000);
      this.heard = 0;
      this.watchdog = null;
      this.delay = this.min;
      // Messages done when the latest connection was welcomed (null
      // before a welcome).
      this.doneAtWelcome = null;
      this.ws = null;
      this.welcomed = false;
      // Set once the program closed the node, or the relay refused it.
      this.over = false;
      this.retry = null;
      this.flushes = [];
      // Writes dropped that a flush has reported (`client.dropped()` then).
      this.reported = 0;
      this.status = 'connecting';
      this.error = null;
      this.first = null; // the promise of connect(), until settled
      this.closing = null;
    }

    start() {
      return new Promise((resolve, reject) => {
        const timer = later(() => {
          this.settleFirst(fail('TIMEOUT', `the document did not arrive from ${this.url} within ${this.timeout} ms`));
        }, this.timeout);
        this.first = { resolve, reject, timer };
        this.node.on('ready', () => this.settleFirst(null));
        this.open();
      });
    }

    settleFirst(error) {
      const first = this.first;
      if (first === null) return;
      // A 'ready' from before the first welcome is the empty node's.
      if (error === null && (!this.welcomed || !this.node.ready)) return;
      this.first = null;
      clearTimeout(first.timer);
      if (error === null) {
        first.resolve(this.node);
      } else {
        this.shut(error);
        first.reject(error);
      }
    }

    open() {
      this.retry = null;
      let ws;
      try {
        ws = new this.WS(this.url);
      } catch (e) {
        this.settleFirst(fail('CONNECT', `cannot connect to ${this.url}: ${e.message}`));
        return;
      }
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      this.welcomed = false;
      this.bound(ws, this.connectTimeout, () => fail('TIMEOUT', `cannot reach ${this.url} within ${this.connectTimeout} ms`));
      // What was held goes into the session before the hello, so that the
      // welcome deals with it like every frame not acknowledged (sent
      // again, or dropped and counted lost after an eviction); writes made
      // while connecting are not held. A node closing (waiting for the
      // relay to acknowledge its last messages) writes nothing more.
      if (!this.node._closed) this.node.setOnline(true);
      ws.onopen = () => {
        if (this.ws !== ws) return;
        // Silent all that time, whatever listens there does not speak the
        // relay's protocol. (A hello given up on may be admitted all the
        // same; the relay does not count the node gone when that
        // connection ends before carrying a frame.)
        this.bound(ws, this.timeout, () =>
          fail('NOT_A_RELAY', `${this.url} sent no welcome within ${this.timeout} ms: it is not a facsimile relay, or one still opening the document`),
        );
        // The hello names the node's incarnation of now, as the Rust
        // client's does: one its peers evicted while it stayed connected
        // started over as a new incarnation, whose frames the relay took on
        // that connection, and, the connection gone, resumes within a
        // grace or else answers for. Its old incarnation's unacknowledged
        // frames, counted lost when it started over, the relay drops (and
        // acknowledges).
        ws.send(this.client.hello(this.node.hostname, this.node.incarnation));
      };
      ws.onmessage = (ev) => {
        if (this.ws === ws) this.frame(ws, ev.data);
      };
      ws.onclose = (ev) => {
        if (this.ws === ws) this.lost(ev);
      };
      // A close event follows every error.
      ws.onerror = () => {};
    }

    frame(ws, data) {
      this.heard = Date.now();
      if (typeof data === 'string') {
        ws.close(1003, 'binary messages only');
        return;
      }
      const bytes = new Uint8Array(data);
      if (!this.welcomed) {
        this.welcome(ws, bytes);
        return;
      }
      let r;
      try {
        r = this.client.receive(bytes);
      } catch (e) {
        this.error = e;
        ws.close(1002, 'protocol error');
        return;
      }
      if (r === null) {
        this.settleFlushes();
      } else if (typeof r === 'string') {
        this.shut(fail('REFUSED', `the relay refused this node's messages: ${r}`));
      } else if (!this.node._closed) {
        let refused = null;
        try {
          refused = this.node._apply(r, false);
        } catch (e) {
          // A listener's exception (the message was applied): thrown from
          // the event loop once this frame is dealt with, as from any
          // event handler, rather than lost.
          queueMicrotask(() => {
            throw e;
          });
        }
        // A message the engine refuses changes nothing; the refusal is
        // kept in `connection.error`.
        if (refused !== null) this.error = refused;
      }
    }

    welcome(ws, bytes) {
      let admission;
      try {
        admission = this.client.welcome(bytes);
      } catch (e) {
        if (this.first !== null) {
          const error = fail(e.code, e.code === 'REFUSED' ? `the relay refused the connection: ${e.message}` : e.message);
          this.settleFirst(error);
          this.shut(error);
        } else {
          // Refused on a reconnection (a relay at its connection limit, or
          // restarted with other settings): tried again with backoff, as
          // the Rust client does; the error is in `connection`.
          this.error = e;
        }
        ws.close(1000);
        return;
      }
      this.welcomed = true;
      this.unbound();
      // A relay of a smaller frame limit than maxFrame would refuse, and
      // end the session on, a write that fits here: such writes throw
      // TOO_LARGE instead.
      const relayMax = this.client.relay_max_message() ?? Number.MAX_VALUE;
      this.node._engine.limit_sent_messages(relayMax);
      // Refused before they are copied into the engine's memory, too.
      this.node._maxWrite = Math.min(this.node._maxMessage, relayMax);
      // So would it a backlog of writes held offline and packed for a
      // larger limit: split to this one before anything is sent. (Messages
      // a rejoin drops need no splitting.)
      if (admission !== ADMISSION_REJOIN && !this.node._closed) this.client.split_unsent(this.node._engine);
      this.status = 'connected';
      this.watch(ws);
      if (admission === ADMISSION_REJOIN) {
        this.node._startOver();
        this.settleFlushes();
      } else if (admission === ADMISSION_JOINED || admission === ADMISSION_SYNC) {
        this.node.sync();
      }
      this.doneAtWelcome = this.client.done();
      this.write();
    }

    // The node's peers (or the relay, as it was silent too long) evicted
    // it while it was connected, and it started over as a new incarnation.
    // The relay acknowledged everything it applied of the old incarnation
    // before it sent the eviction; whatever of it is still unacknowledged
    // the relay drops (and acknowledges), on this connection or when sent
    // again on the next, so its writes count as lost now, and only now.
    // The node's pump calls this as it takes the eviction from the engine,
    // before the frame after it (an acknowledgement of those) is read.
    evicted(old) {
      this.client.count_lost_from(old);
    }

    // Sends what the session has queued, once the relay welcomed the node.
    write() {
      const ws = this.ws;
      if (ws === null || !this.welcomed || ws.readyState !== OPEN) return;
      let f;
      while ((f = this.client.next_frame()) !== undefined) ws.send(f);
    }

    // Drops the connection `ws` once the relay has been silent too long.
    watch(ws) {
      this.unwatch();
      this.watchdog = unref(setInterval(() => {
        if (this.ws !== ws || Date.now() - this.heard <= this.silence) return;
        this.giveUp(ws, fail('TIMEOUT', `the relay went silent for ${this.silence} ms`));
      }, Math.min(Math.max(this.silence / 4, 50), 2 ** 31 - 1)));
    }

    // Gives up on the connection `ws` for `error()` unless its handshake
    // step ends within `ms`.
    bound(ws, ms, error) {
      this.unbound();
      this.handshake = later(() => {
        this.handshake = null;
        if (this.ws === ws) this.giveUp(ws, error());
      }, ms);
    }

    unbound() {
      if (this.handshake !== null) clearTimeout(this.handshake);
      this.handshake = null;
    }

    // Leaves the connection `ws` for `error`. Its events are ignored from
    // now on: closing a stalled socket may take long to report.
    giveUp(ws, error) {
      this.error = error;
      this.lost({ code: 1006, reason: error.message }, error);
      if (typeof ws.terminate === 'function') ws.terminate();
      else ws.close();
    }

    unwatch() {
      if (this.watchdog !== null) clearInterval(this.watchdog);
      this.watchdog = null;
    }

    lost(ev, error = null) {
      this.unwatch();
      this.unbound();
      this.ws = null;
      this.welcomed = false;
      // The waits start over once a connection got something acknowledged
      // (the node's heartbeat, if nothing else), not at each welcome, as
      // in the Rust client: a relay that ends every connection after its
      // welcome (refusing a frame sent again first on each) would see the
      // node back at the shortest wait for ever.
      if (this.doneAtWelcome !== null && this.client.done() > this.doneAtWelcome) this.delay = this.min;
      this.doneAtWelcome = null;
      if (this.over) return;
      if (this.first !== null && this.status === 'connecting') {
        this.settleFirst(error ?? fail('CONNECT', `cannot connect to ${this.url} (closed with code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`));
        return;
      }
      this.status = 'disconnected';
      // Writes made until the relay is back go out packed.
      if (!this.node._closed) this.node.setOnline(false);
      // Full jitter: reconnecting clients of a restarted relay spread out.
      const wait = this.delay * (0.5 + Math.random() / 2);
      this.delay = Math.min(this.delay * 2, this.max);
      this.retry = later(() => this.open(), wait);
    }

    flush() {
      // A node whose engine failed sends nothing more: its flush rejects
      // with the CLOSED error its calls throw (the failure its cause)
      // rather than throwing it.
      if (this.node._failure !== null) return Promise.reject(this.node._closedError());
      this.node._sendHeld();
      const target = this.client.queued();
      // Drops no flush has reported yet count too: those messages were
      // sent before this call (an eviction counts them lost before the
      // relay acknowledges them).
      const reported = this.reported;
      return new Promise((resolve, reject) => {
        this.flushes.push({ target, reported, resolve, reject });
        this.settleFlushes();
      });
    }

    settleFlushes() {
      if (this.flushes.length === 0) return;
      const done = this.client.done();
      const closed = this.client.is_closed();
      const rest = [];
      for (const f of this.flushes) {
        // Messages split since the flush began are waited for whole.
        if (done >= this.client.flush_target(f.target)) {
          const dropped = this.client.dropped();
          this.reported = Math.max(this.reported, dropped);
          const lost = dropped - f.reported;
          if (lost > 0) {
            const e = fail('WRITES_LOST', `${lost} writes were dropped: the relay had evicted this node`);
            e.lost = lost;
            f.reject(e);
          }
          else f.resolve();
        } else if (closed) {
          f.reject(this.error && this.error.code === 'REFUSED' ? this.error : this.closedError());
        } else {
          rest.push(f);
        }
      }
      this.flushes = rest;
    }

    // Why a flush cannot be done: the node was closed (by its engine's
    // failure, which is then the error's cause).
    closedError() {
      return this.node._failure !== null ? this.node._closedError() : fail('CLOSED', 'The node was closed');
    }

    // Ends the connection for good.
    shut(error) {
      if (this.over) return;
      this.over = true;
      if (error !== null) this.error = error;
      this.status = error !== null && error.code === 'REFUSED' ? 'refused' : 'closed';
      this.client.close();
      this.unwatch();
      this.unbound();
      if (this.retry !== null) clearTimeout(this.retry);
      this.retry = null;
      const ws = this.ws;
      this.ws = null;
      if (ws !== null) ws.close(1000);
      this.settleFlushes();
      if (!this.node._closed) this.node._leave();
    }

    // Waits for the relay to acknowledge the node's writes (or to drop
    // them: WRITES_LOST), says goodbye, waits for that too, all within 5 s,
    // and closes the socket.
    close() {
      if (this.closing !== null) return this.closing;
      // The writes first, as the Rust client's close: a node that left
      // applies nothing more, so an eviction on its way would go unheard,
      // and the relay's acknowledgement of the writes it dropped for it
      // taken for done.
      const leave = async () => {
        if (this.over) {
          this.node._leave();
          return;
        }
        const outcome = (p) => p.then(() => null, (e) => e);
        const writes = await outcome(this.flush());
        this.node._leave();
        const goodbye = this.over ? null : await outcome(this.flush());
        const error = writes ?? goodbye;
        if (error !== null) throw error;
      };
      let timer;
      const timeout = new Promise((resolve, reject) => {
        timer = unref(setTimeout(() => reject(fail('TIMEOUT', 'the relay did not acknowledge the last messages in time')), 5000));
      });
      this.closing = Promise.race([leave(), timeout]).finally(() => {
        clearTimeout(timer);
        this.shut(null);
      });
      return this.closing;
    }
  }

  /**
   * Connects a new node to the document on the relay at `url`
   * (`ws://host:port/` or `wss://…`), and resolves to it once the document
   * is there. The node reconnects with backoff, sends again what the relay
   * had not acknowledged, and resumes where it stopped reading (or syncs).
   */
  Facsimile.connect = function connect(url, hostname, options) {
    const opts = options == null ? {} : options;
    const WS = opts.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
      return Promise.reject(
        fail('NO_WEBSOCKET', 'no WebSocket here: pass { WebSocket } (on Node.js before 22, the ws package)'),
      );
    }
    let node;
    let conn;
    try {
      const heartbeat = positive(opts.heartbeat, 1000, 'heartbeat');
      const maxFrame = opts.maxFrame ?? undefined;
      if (maxFrame !== undefined && !(Number.isSafeInteger(maxFrame) && maxFrame > 0)) {
        throw fail('BAD_OPTION', 'maxFrame is a number of bytes');
      }
      node = new Facsimile(hostname, {
        binary: true,
        failureDetection: { heartbeat, timeout: NEVER },
        // A write too large for the relay to pass on throws TOO_LARGE
        // when it is made, instead of being sent again and again.
        maxMessage: Math.max(1, RelayClient.max_message(maxFrame)),
        // A read-only node only observes: nobody waits for it.
        observer: opts.readOnly === true,
      });
      conn = new Connection(node, String(url), WS, opts, heartbeat);
    } catch (e) {
      return Promise.reject(e);
    }
    node._connection = conn;
    node._readOnly = opts.readOnly === true;
    node.send = (message, to) => {
      conn.client.send(message, to);
      conn.write();
    };
    return conn.start();
  };

  /**
   * Resolves once the relay has every message this node sent so far on
   * its disk; rejects with `WRITES_LOST` when some were dropped (the relay
   * had evicted the node; reported once: by the flushes under way then, or
   * else by the next one), `REFUSED` or `CLOSED`. A node made by `new
   * Facsimile` has nothing to wait for.
   */
  Facsimile.prototype.flush = function flush() {
    return this._connection === null ? Promise.resolve() : this._connection.flush();
  };

  Object.defineProperty(Facsimile.prototype, 'connection', {
    /** The relay connection's state: `{ status, error }` (null without one). */
    get() {
      const c = this._connection;
      return c === null ? null : { status: c.status, error: c.error };
    },
    configurable: true,
  });
}
