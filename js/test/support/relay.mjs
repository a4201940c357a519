// A real relay (`facsimile serve`, the workspace's release build) for the
// tests of Facsimile.connect, and the CLI beside it.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(root, 'target');
export const TOKEN = 'relay-test-token';

let built = null;

/** The CLI, built once per test process (a no-op after the Rust tests). */
export function facsimileBinary() {
  if (built === null) {
    execFileSync('cargo', ['build', '--quiet', '--release', '-p', 'facsimile-cli', '--bin', 'facsimile'], {
      cwd: root,
      stdio: 'inherit',
    });
    built = join(targetDir, 'release', 'facsimile');
  }
  return built;
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
