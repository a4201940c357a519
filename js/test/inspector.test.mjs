// The relay's inspector page (`/inspect/DOC`) in a real headless Chromium,
// beside the CLI (Rust nodes) and a Node.js node writing the document:
// the tree with a cycle and a shared object as links, the change log with
// origins, a lock held by a Rust node, the relay's status, a 100,000-object
// document, and the token. Screenshots go to target/inspector-screenshots/.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { Relay, TOKEN, cli, facsimileBinary } from './support/relay.mjs';

const require = createRequire(import.meta.url);
const Facsimile = require('..');
const WebSocket = require('ws');

const pkg = fileURLToPath(new URL('..', import.meta.url));
const shots = fileURLToPath(new URL('../../target/inspector-screenshots/', import.meta.url));
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

let relay;
let browser;
const nodes = [];

before(async () => {
  assert.ok(existsSync(executablePath), `no Chromium at ${executablePath} (set CHROMIUM)`);
  mkdirSync(shots, { recursive: true });
  relay = await new Relay(['--inspector-assets', join(pkg, 'dist')]).start();
  browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  for (const n of nodes) await n.close().catch(() => {});
  await browser?.close();
  await relay?.stop();
});

async function writer(doc, hostname = 'writer') {
  const node = await Facsimile.connect(relay.url, hostname, { token: TOKEN, WebSocket, doc });
  nodes.push(node);
  return node;
}

/** The URL `facsimile inspect` prints, opened in a new page. */
async function inspect(context, doc) {
  const url = (await cli(relay, ['inspect', '@', '--doc', doc])).trim();
  assert.equal(url, `http://${relay.addr}/inspect/${doc}?token=${TOKEN}`);
  const page = await context.newPage();
  await page.setViewportSize({ width: 1400, height: 800 });
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  const response = await page.goto(url);
  assert.equal(response.status(), 200);
  await page.waitForFunction(() => window.inspector !== undefined);
  assert.equal(await page.evaluate(() => window.inspector.error), undefined);
  return { page, errors };
}

/** Runs `facsimile lock` on /jobs; resolves with the child once the command inside printed its token. */
function lockJobs(doc, hostname, command) {
  const child = spawn(facsimileBinary(), ['lock', relay.addr, '/jobs', '--doc', doc, '--hostname', hostname, '--', 'sh', '-c', command], {
    env: { ...process.env, FACSIMILE_TOKEN: TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve({ code, err })));
  const token = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /^(\d+)\n/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`facsimile lock exited with ${code} before its token: ${err}`)));
  });
  return { child, token, exited };
}

test('the inspector shows the tree, changes with their origins, peers, a Rust node\'s lock and the relay\'s status', async () => {
  const doc = 'inspected';
  const w = await writer(doc);
  w.store = { a: { b: { c: 1 } }, list: [1, 2], jobs: {} };
  // A cycle (/a/b/back is /a) and a shared object (/other is /list).
  w.store.a.b.back = w.store.a;
  w.store.other = w.store.list;
  await w.flush();

  const context = await browser.newContext();
  try {
    const { page, errors } = await inspect(context, doc);
    // Three levels open by themselves; the cycle and the shared object are
    // links to their one place, not copies.
    await page.waitForSelector('.row[data-path="/a/b/c"]');
    assert.equal(await page.textContent('.row[data-path="/a/b/c"]'), '"c": 1');
    const cycle = page.locator('.row[data-path="/a/b/back"] a.link');
    assert.equal(await cycle.getAttribute('data-target'), '/a');
    assert.match(await cycle.textContent(), /cycle to \/a/);
    const shared = page.locator('.row[data-path="/other"] a.link');
    assert.equal(await shared.getAttribute('data-target'), '/list');
    assert.match(await shared.textContent(), /shared with \/list/);
    assert.equal(await page.locator('.row[data-path^="/a/b/back/"]').count(), 0, 'a cycle is not unfolded');
    await page.waitForSelector('.row[data-path="/list/1"]');
    await cycle.click();
    await page.waitForFunction(() => document.getElementById('tree').dataset.revealed === '/a');
    // Collapsing hides the rows below.
    await page.click('.row[data-path="/a"] .toggle');
    await page.waitForFunction(() => document.querySelector('.row[data-path="/a/b"]') === null);
    await page.click('.row[data-path="/a"] .toggle');
    await page.waitForSelector('.row[data-path="/a/b"]');

    // A change by the CLI, with its origin, path, old and new values.
    await cli(relay, ['set', '@', '/a/b/c', '2', '--doc', doc, '--hostname', 'shell']);
    const entry = page.locator('#log li[data-origin="shell"][data-path="/a/b/c"]');
    await entry.waitFor();
    assert.equal(await entry.locator('.old').textContent(), '1');
    assert.equal(await entry.locator('.new').textContent(), '2');
    await page.waitForFunction(() => document.querySelector('.row[data-path="/a/b/c"]')?.textContent === '"c": 2');
    // The Node.js node's writes are logged under its hostname.
    w.store.list[0] = 10;
    await page.locator('#log li[data-origin="writer"][data-path="/list/0"]').waitFor();
    // An array method is one change of the array as a whole.
    w.store.list.push(3);
    await page.locator('#log li[data-origin="writer"][data-path="/list (whole)"]').waitFor();

    // A lock held by a Rust node (the CLI) until the test lets it go; a
    // second one waits behind it, which makes the holder tell everybody
    // its grant, token included.
    const dir = mkdtempSync(join(tmpdir(), 'facsimile-inspector-'));
    const fifo = join(dir, 'release');
    execFileSync('mkfifo', [fifo]);
    try {
      const holder = lockJobs(doc, 'locker', `echo "$FACSIMILE_LOCK_TOKEN"; read line < "${fifo}"`);
      const token = await holder.token;
      const waiter = lockJobs(doc, 'waiter', 'echo "$FACSIMILE_LOCK_TOKEN"');
      const row = page.locator('#locks tr[data-path="/jobs"]');
      await page.waitForFunction(
        (t) => {
          const r = document.querySelector('#locks tr[data-path="/jobs"]');
          return r !== null && r.querySelector('.token').textContent === String(t) && r.cells[3].textContent === 'waiter';
        },
        token,
        { timeout: 20000 },
      );
      assert.equal(await row.getAttribute('data-holder'), 'locker');
      assert.equal(await row.locator('td').nth(1).textContent(), 'locker');
      await page.screenshot({ path: join(shots, 'inspector-lock.png') });
      // The peers: the relay, the writer and both lock commands, each heard.
      for (const h of ['relay', 'writer', 'locker', 'waiter']) {
        await page.waitForFunction(
          (name) => /ago/.test(document.querySelector(`#peers tr[data-hostname="${name}"]`)?.cells[2].textContent ?? ''),
          h,
          { timeout: 20000 },
        );
      }
      writeFileSync(fifo, 'go\n');
      assert.equal((await holder.exited).code, 0);
      assert.ok((await waiter.token) > token, 'the waiter is granted next, with a larger token');
      assert.equal((await waiter.exited).code, 0);
      await page.waitForFunction(() => document.querySelectorAll('#locks tbody tr').length === 0, null, { timeout: 20000 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }

    // The relay's status: its log position moves with each write; its
    // storage is on disk; the page itself is a read-only client.
    const position = async () => Number(await page.getAttribute('#relay', 'data-position'));
    await page.waitForFunction(() => Number(document.getElementById('relay').dataset.position) > 0);
    const before = await position();
    await cli(relay, ['set', '@', '/a/b/c', '3', '--doc', doc, '--hostname', 'shell']);
    await page.waitForFunction((p) => Number(document.getElementById('relay').dataset.position) > p, before);
    assert.match(await page.textContent('[data-field="storage"]'), /log \d/);
    assert.match(await page.textContent('[data-field="clients"]'), /inspector \(read-only\) at \d+/);
    // The shell's write moved the relay's stream on the page.
    await page.waitForFunction(
      () => Number(document.querySelector('#peers tr[data-hostname="relay"]')?.dataset.applied) > 0,
      null,
      { timeout: 20000 },
    );
    await page.screenshot({ path: join(shots, 'inspector.png') });
    // The page cannot write: its node is read-only.
    assert.equal(await page.evaluate(() => {
      try {
        window.inspector.node.store.a.x = 1;
        return 'written';
      } catch (e) {
        return e.code;
      }
    }), 'READ_ONLY');
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test('the inspector refuses without the relay\'s token, and says nothing of the document', async () => {
  const w = await writer('secret');
  w.store = { hidden: 'treasure' };
  await w.flush();
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    for (const [query, status] of [['', 401], ['?token=', 403], ['?token=nope', 403]]) {
      for (const path of ['/inspect/secret', '/inspect/secret/status']) {
        const response = await page.goto(`http://${relay.addr}${path}${query}`);
        assert.equal(response.status(), status, `${path}${query}`);
        const text = await response.text();
        assert.doesNotMatch(text, /treasure|hidden/);
        assert.match(text, /token/);
      }
    }
    await page.screenshot({ path: join(shots, 'inspector-refused.png') });
  } finally {
    await context.close();
  }
});

test('a 100,000-object document: only the rows in view are in the page', async () => {
  const w = await writer('large');
  w.store = { big: Array.from({ length: 100000 }, (_, i) => ({ i })), note: 'large' };
  await w.flush();
  const context = await browser.newContext();
  try {
    const { page, errors } = await inspect(context, 'large');
    await page.waitForSelector('.row[data-path="/note"]');
    // Too large to open by itself; opening the array gives 100,000 rows,
    // of which only those in view have elements.
    assert.equal(await page.locator('.row[data-path="/big/0"]').count(), 0);
    await page.click('.row[data-path="/big"] .toggle');
    await page.waitForSelector('.row[data-path="/big/0"]');
    assert.match(await page.textContent('#tree-count'), /^100002 objects, 100003 rows$/);
    const inPage = await page.locator('#tree-rows .row:not([hidden])').count();
    assert.ok(inPage > 10 && inPage < 200, `${inPage} rows in the page`);
    await page.evaluate(() => {
      const tree = document.getElementById('tree');
      tree.scrollTop = tree.scrollHeight;
    });
    await page.waitForSelector('.row[data-path="/big/99999"]');
    // Changes keep arriving while it is open, batched into frames.
    for (let i = 0; i < 50; i++) w.store.big[99999].i = -i;
    await page.waitForFunction(() => document.querySelector('.row[data-path="/big/99999"]') !== null
      && document.querySelectorAll('#log li').length === 50);
    await page.click('.row[data-path="/big/99999"] .toggle');
    await page.waitForFunction(() => document.querySelector('.row[data-path="/big/99999/i"]')?.textContent === '"i": -49');
    await page.screenshot({ path: join(shots, 'inspector-large.png') });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
