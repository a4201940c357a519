// The browser build in a real headless Chromium (Debian's, driven by
// playwright-core): it loads, and two pages mirror one document through an
// in-browser channel (BroadcastChannel, which keeps each sender's order);
// pages on a real relay over ws:// and wss://, beside the CLI.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { Relay, RustPeer, TOKEN, cli } from './support/relay.mjs';

const pkg = fileURLToPath(new URL('..', import.meta.url));
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

const types = {
  '.html': 'text/html',
  '.mjs': 'text/javascript',
  '.js': 'text/javascript',
  '.wasm': 'application/wasm',
};

// A page that makes one node and wires it to the others through a
// BroadcastChannel; the test drives it with page.evaluate.
const page = `<!doctype html>
<meta charset="utf-8">
<title>facsimile</title>
<script type="module">
  import Facsimile from '/dist/browser.mjs';
  window.start = (hostname) => {
    const channel = new BroadcastChannel('facsimile');
    const node = new Facsimile(hostname);
    node.send = (...args) => channel.postMessage(args);
    channel.onmessage = (e) => node.receive(...e.data);
    window.node = node;
    window.hex = () => Array.from(node.snapshot(), (b) => b.toString(16).padStart(2, '0')).join('');
  };
  // A node on a relay, through the browser's own WebSocket.
  window.connect = async (url, hostname, token) => {
    const node = await Facsimile.connect(url, hostname, { token, doc: 'browser', backoff: { min: 20, max: 200 } });
    window.node = node;
    window.hex = () => Array.from(node.snapshot(), (b) => b.toString(16).padStart(2, '0')).join('');
  };
  window.loaded = true;
</script>`;

let server;
let base;
let browser;

before(async () => {
  assert.ok(existsSync(executablePath), `no Chromium at ${executablePath} (set CHROMIUM)`);
  server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname));
    if (path === '/' || path === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(page);
      return;
    }
    try {
      const body = await readFile(join(pkg, path));
      res.writeHead(200, { 'content-type': types[extname(path)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${server.address().port}/`;
  browser = await chromium.launch({
    executablePath,
    args: [
      // The wss:// test's relay has a self-signed certificate.
      '--ignore-certificate-errors',
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  await new Promise((resolve) => server?.close(resolve));
});

async function open(context, hostname) {
  const p = await context.newPage();
  const errors = [];
  p.on('pageerror', (e) => errors.push(e));
  await p.goto(base);
  await p.waitForFunction(() => window.loaded === true);
  await p.evaluate((h) => window.start(h), hostname);
  return { page: p, errors };
}

test('two pages mirror one document through a BroadcastChannel', async () => {
  const context = await browser.newContext();
  const a = await open(context, 'alpha');
  await a.page.evaluate(() => {
    window.node.store = { title: 'shared', elements: [1, 2, 3], meta: { n: 1 } };
  });
  const b = await open(context, 'bravo');
  await b.page.evaluate(() => window.node.sync());
  await b.page.waitForFunction(() => window.node.store?.elements?.length === 3);
  assert.deepEqual(await b.page.evaluate(() => JSON.parse(JSON.stringify(window.node.store))), {
    elements: [1, 2, 3], meta: { n: 1 }, title: 'shared',
  });
  // Writes both ways, an array method on each side.
  await b.page.evaluate(() => {
    window.node.store.elements.push(4);
    window.node.store.meta.by = 'bravo';
  });
  await a.page.evaluate(() => {
    window.node.store.elements.reverse();
    window.node.store.title = 'mirrored';
  });
  const settled = (p) => p.waitForFunction(() => {
    const s = window.node.store;
    return s.title === 'mirrored' && s.meta.by === 'bravo' && s.elements.length === 4;
  });
  await settled(a.page);
  await settled(b.page);
  const [ha, hb] = await Promise.all([a.page.evaluate(() => window.hex()), b.page.evaluate(() => window.hex())]);
  assert.equal(ha, hb, 'the two pages hold the same document, byte for byte');
  assert.deepEqual(a.errors, []);
  assert.deepEqual(b.errors, []);
  await context.close();
});

test('a page and a Node.js node mirror one document', async () => {
  const { default: Facsimile } = await import('../dist/index.mjs');
  const context = await browser.newContext();
  const a = await open(context, 'page');
  const node = new Facsimile('node');
  // The page's messages reach the Node.js node through an exposed
  // function; the node's reach the page through evaluate, each side's in
  // its send order.
  let toPage = Promise.resolve();
  const failures = [];
  node.send = (...args) => {
    toPage = toPage
      .then(() => a.page.evaluate((m) => window.node.receive(...m), args))
      .catch((e) => failures.push(e));
  };
  await a.page.exposeFunction('toNode', (args) => node.receive(...args));
  await a.page.evaluate(() => {
    const send = window.node.send;
    window.node.send = (...args) => { send(...args); window.toNode(args); };
  });
  node.store = { from: 'node', list: [1] };
  await toPage;
  await a.page.waitForFunction(() => window.node.store?.from === 'node');
  await a.page.evaluate(() => { window.node.store.list.push(2); window.node.store.from = 'page'; });
  await new Promise((resolve) => {
    const check = () => (node.store.from === 'page' ? resolve() : setImmediate(check));
    check();
  });
  await toPage;
  const hex = Buffer.from(node.snapshot()).toString('hex');
  assert.equal(await a.page.evaluate(() => window.hex()), hex);
  assert.deepEqual(JSON.parse(JSON.stringify(node.store)), { from: 'page', list: [1, 2] });
  assert.deepEqual(a.errors, []);
  // The node's goodbye reaches the page before the page goes.
  node.close();
  await toPage;
  assert.deepEqual(failures, []);
  await context.close();
});

async function openOnRelay(context, relay, hostname, scheme = 'ws') {
  const p = await context.newPage();
  const errors = [];
  p.on('pageerror', (e) => errors.push(e));
  await p.goto(base);
  await p.waitForFunction(() => window.loaded === true);
  await p.evaluate(([url, h, t]) => window.connect(url, h, t), [`${scheme}://${relay.addr}/`, hostname, TOKEN]);
  return { page: p, errors };
}

const getDoc = async (relay, path) => JSON.parse(await cli(relay, ['get', '@', path, '--doc', 'browser', '--compact']));

test('a page on the relay: the CLI, a lock, a kill -9 of the relay, a reload', async () => {
  const relay = await new Relay().start();
  const context = await browser.newContext();
  try {
    const a = await openOnRelay(context, relay, 'page');
    // A write in the page appears in `facsimile get`; `facsimile set` in the page.
    await a.page.evaluate(() => window.node.flush(window.node.store = { items: [1], title: 'page' }));
    assert.deepEqual(await getDoc(relay, ''), { items: [1], title: 'page' });
    await cli(relay, ['set', '@', '/title', '"shell"', '--doc', 'browser']);
    await a.page.waitForFunction(() => window.node.store.title === 'shell');
    // The page takes a lock; the CLI waits for it (and gives up after its
    // --wait), then gets it with a larger token once the page releases.
    const token = await a.page.evaluate(() => window.node.lock(window.node.store.items));
    const lockCmd = (extra) => ['lock', '@', '/items', '--doc', 'browser', ...extra, '--', 'sh', '-c', 'echo "$FACSIMILE_LOCK_TOKEN"'];
    await assert.rejects(cli(relay, lockCmd(['--wait', '1'])), /exit/);
    await a.page.evaluate(() => window.node.release(window.node.store.items));
    assert.ok(Number((await cli(relay, lockCmd([]))).trim()) > token);
    // kill -9: the page's acknowledged writes and those made while the
    // relay was down are all there once it is back.
    await a.page.evaluate(async () => {
      for (let i = 2; i <= 20; i++) window.node.store.items.push(i);
      await window.node.flush();
    });
    await relay.kill();
    await a.page.evaluate(() => {
      for (let i = 21; i <= 30; i++) window.node.store.items.push(i);
      window.flushed = window.node.flush();
    });
    await relay.start();
    await a.page.evaluate(() => window.flushed);
    const expected = Array.from({ length: 30 }, (_, i) => i + 1);
    assert.deepEqual(await getDoc(relay, '/items'), expected);
    // A reload joins again to the same state.
    const before = await a.page.evaluate(() => window.hex());
    await a.page.reload();
    await a.page.waitForFunction(() => window.loaded === true);
    await a.page.evaluate(([url, t]) => window.connect(url, 'page-again', t), [relay.url, TOKEN]);
    assert.deepEqual(await a.page.evaluate(() => JSON.parse(JSON.stringify(window.node.store.items))), expected);
    assert.equal(await a.page.evaluate(() => window.hex()), before);
    assert.deepEqual(a.errors, []);
  } finally {
    await context.close();
    await relay.stop();
  }
});

test('a page, a Rust node and the CLI mirror one document', async () => {
  const relay = await new Relay().start();
  const context = await browser.newContext();
  let rust = null;
  try {
    const a = await openOnRelay(context, relay, 'page');
    await a.page.evaluate(() => window.node.flush(window.node.store = { from: {}, items: [] }));
    rust = new RustPeer(relay, 'browser', 'rust');
    await rust.ready;
    // Each writes; each sees the others' writes.
    await a.page.evaluate(() => window.node.flush(window.node.store.from.page = 1));
    await rust.do({ wait: '/from/page', value: 1 });
    await rust.do({ set: '/from/rust', value: { n: 2 } });
    await a.page.waitForFunction(() => window.node.store.from.rust?.n === 2);
    await cli(relay, ['set', '@', '/from/cli', '3', '--doc', 'browser']);
    await rust.do({ wait: '/from/cli', value: 3 });
    await a.page.waitForFunction(() => window.node.store.from.cli === 3);
    // The Rust node holds a lock: the page's write is refused, its lock
    // waits until the Rust node lets go, then holds a larger token.
    const { token } = await rust.do({ lock: '/items' });
    await rust.do({ set: '/items/0', value: 'rust' });
    await a.page.waitForFunction(() => window.node.store.items[0] === 'rust');
    const refused = await a.page.evaluate(() => {
      try {
        window.node.store.items.push('page');
        return null;
      } catch (e) {
        return e.code;
      }
    });
    assert.equal(refused, 'LOCKED');
    await a.page.evaluate(() => {
      window.granted = window.node.lock(window.node.store.items);
    });
    await rust.do({ release: '/items' });
    assert.ok((await a.page.evaluate(() => window.granted)) > token);
    await a.page.evaluate(() => {
      window.node.store.items.push('page');
      window.node.release(window.node.store.items);
      return window.node.flush();
    });
    await rust.do({ wait: '/items', value: ['rust', 'page'] });
    // One document everywhere, byte for byte between the page and Rust.
    const expected = { from: { page: 1, rust: { n: 2 }, cli: 3 }, items: ['rust', 'page'] };
    assert.deepEqual(await getDoc(relay, ''), expected);
    assert.deepEqual(await a.page.evaluate(() => JSON.parse(JSON.stringify(window.node.store))), expected);
    const { snapshot } = await rust.do({ snapshot: true });
    assert.equal(await a.page.evaluate(() => window.hex()), snapshot);
    assert.deepEqual(a.errors, []);
  } finally {
    if (rust !== null) await rust.close();
    await context.close();
    await relay.stop();
  }
});

test('a page reaches a relay serving TLS over wss://', async (t) => {
  const { execFileSync } = await import('node:child_process');
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'facsimile-tls-'));
  // A test CA and the relay's certificate, signed by it (rustls refuses a
  // self-signed certificate as its own CA).
  const file = (name) => join(dir, name);
  const openssl = (...args) => execFileSync('openssl', args, { stdio: 'pipe', cwd: dir });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=facsimile test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign');
  openssl('req', ...ec, '-keyout', 'key.pem', '-out', 'relay.csr', '-subj', '/CN=localhost');
  writeFileSync(file('ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl('x509', '-req', '-in', 'relay.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'cert.pem',
    '-days', '1', '-extfile', 'ext');
  const cert = file('cert.pem');
  const key = file('key.pem');
  const relay = await new Relay(['--tls-cert', cert, '--tls-key', key]).start();
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  t.after(async () => {
    await context.close();
    await relay.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const a = await openOnRelay(context, relay, 'secure', 'wss');
  await a.page.evaluate(() => window.node.flush(window.node.store = { secure: true }));
  const out = JSON.parse(await cli(relay, ['get', '@', '', '--doc', 'browser', '--compact', '--tls-ca', file('ca.pem')]));
  assert.deepEqual(out, { secure: true });
  assert.deepEqual(a.errors, []);
});
