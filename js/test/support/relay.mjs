// A real relay (`facsimile serve`, the workspace's release build) for the
// tests of Facsimile.connect, and the CLI beside it.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import cargo from './cargo.js';

const { release } = cargo;
export const TOKEN = 'relay-test-token';

/** The CLI. */
export function facsimileBinary() {
  return release('facsimile');
}

/**
 * A Rust `facsimile::Node` on the relay (crates/facsimile/examples/relay_peer.rs),
 * driven a command at a time: `await peer.do({ set: '/k', value: 1 })`.
 */
export class RustPeer {
  constructor(relay, doc, hostname) {
    this.child = spawn(release('examples', 'relay_peer'), [relay.addr, doc, hostname], {
      env: { ...process.env, FACSIMILE_TOKEN: TOKEN },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.waiting = [];
    createInterface({ input: this.child.stdout }).on('line', (text) => {
      const line = JSON.parse(text);
      const { resolve: done, reject } = this.waiting.shift();
      if (line.error !== undefined) reject(new Error(`relay_peer: ${line.error}`));
      else done(line);
    });
    this.exited = new Promise((done) => this.child.on('exit', done));
    this.ready = this.next();
  }

  next() {
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  /** Sends one command; resolves to its answer once it is done. */
  do(command) {
    const answer = this.next();
    this.child.stdin.write(`${JSON.stringify(command)}\n`);
    return answer;
  }

  /** Ends its input: it leaves the document and exits. */
  async close() {
    this.child.stdin.end();
    return this.exited;
  }
}

/** Runs a CLI command against the relay; resolves to its stdout. */
export function cli(relay, args) {
  return new Promise((resolveRun, reject) => {
    const child = spawn(facsimileBinary(), args.map((a) => (a === '@' ? relay.addr : a)), {
      env: { ...process.env, FACSIMILE_TOKEN: TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => (code === 0 ? resolveRun(out) : reject(new Error(`facsimile ${args.join(' ')}: exit ${code}: ${err}`))));
  });
}

/** A relay on a free loopback port, with its data in a temporary directory. */
export class Relay {
  constructor(extra = []) {
    this.dir = mkdtempSync(join(tmpdir(), 'facsimile-relay-'));
    this.extra = extra;
    this.addr = null;
    this.child = null;
  }

  /** Starts it (again, on the same address and data after a kill). */
  async start() {
    const listen = this.addr ?? '127.0.0.1:0';
    const child = spawn(
      facsimileBinary(),
      ['serve', '--listen', listen, '--data', join(this.dir, 'data'), '--token', this.token ?? TOKEN, ...this.extra],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    child.stderr.resume();
    const addr = await new Promise((resolveAddr, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = /listening on (\S+)/.exec(out);
        if (m) resolveAddr(m[1]);
      });
      child.on('exit', (code) => reject(new Error(`the relay exited with ${code} before listening`)));
    });
    this.addr = addr;
    return this;
  }

  get url() {
    return `ws://${this.addr}/`;
  }

  /** kill -9, and waits for the process to be gone. */
  async kill() {
    const child = this.child;
    this.child = null;
    if (child === null || child.exitCode !== null) return;
    await new Promise((done) => {
      child.on('exit', done);
      child.kill('SIGKILL');
    });
  }

  /** Stops the process (SIGSTOP) or lets it go on (SIGCONT): its sockets stay open, silent. */
  freeze(frozen) {
    this.child.kill(frozen ? 'SIGSTOP' : 'SIGCONT');
  }

  async stop() {
    if (this.child !== null) this.child.kill('SIGCONT');
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Resolves once `cond()` holds, checking after each event of `node`. */
export function until(node, cond, what) {
  return new Promise((resolveWait, reject) => {
    if (cond()) {
      resolveWait();
      return;
    }
    const timer = setTimeout(() => {
      node.off('change', check);
      reject(new Error(`timed out waiting for ${what}`));
    }, 20000);
    function check() {
      if (!cond()) return;
      clearTimeout(timer);
      node.off('change', check);
      resolveWait();
    }
    node.on('change', check);
  });
}
