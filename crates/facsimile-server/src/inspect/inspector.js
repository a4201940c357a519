// The relay's live inspector of one document. It joins the document
// read-only with the JavaScript package (no replication of its own), and
// polls the relay's status route for what only the relay knows.
//
// Rendering is batched: events only mark what is stale, and one animation
// frame redraws it. The tree is virtualised: the expanded part is flattened
// into rows, and only the rows in view have elements.
import Facsimile from './browser.mjs';

const ROW = 20; // px, as in inspector.css
const LOG_KEEP = 1000; // change log entries kept
const LOG_SHOWN = 200; // of which in the page
const POLL_MS = 1000; // peers, locks and the relay's status
// A document this small opens expanded three levels deep.
const SMALL = 500;

const params = new URLSearchParams(location.search);
const token = params.get('token') ?? '';
const doc = decodeURIComponent(location.pathname.split('/')[2] ?? 'default');
const $ = (id) => document.getElementById(id);
$('doc').textContent = doc;
document.title = `${doc} · facsimile inspector`;

const state = $('state');
const treeEl = $('tree');
const spacer = $('tree-spacer');
const rowsEl = $('tree-rows');

let node = null;
let objects = 0; // reachable from the root
// The expanded tree, flattened by the engine: [depth, label, pointer,
// type, text, extra] (see the engine's `tree`).
let rows = [];
const expanded = new Set(['']); // pointers of expanded objects
let firstLayout = true;
const stale = { tree: true, tables: true, view: true };
let frame = 0;
// Walking a large document is throttled to a share of the time.
let lastWalk = 0;
let walkCost = 0;
let retry = false;
const log = [];
// Changes whose place is resolved by the next walk of the tree.
let unplaced = [];

function schedule() {
  if (frame === 0) frame = requestAnimationFrame(draw);
}

function escapeSegment(s) {
  return String(s).replaceAll('~', '~0').replaceAll('/', '~1');
}

function show(v) {
  if (v === undefined) return '';
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v.length > 200 ? `${v.slice(0, 200)}…` : v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v instanceof Uint8Array) return `bytes(${v.length})`;
  if (Array.isArray(v)) return `[…${v.length}]`;
  if (typeof v === 'object') return '{…}';
  return String(v);
}

// ------------------------------------------------------------------ the tree

function walk() {
  // A small document opens three levels deep the first time.
  const openDepth = firstLayout && node._objectCount() <= SMALL ? 3 : 0;
  const targets = unplaced.filter((e) => e.target !== null);
  const t = node._tree([...expanded], openDepth, targets.map((e) => e.target));
  targets.forEach((e, i) => {
    e.base = t.places[i];
    e.target = null;
  });
  for (const e of unplaced) log.push(e);
  unplaced = [];
  if (openDepth > 0) for (const r of t.rows) if (r[5] === true) expanded.add(r[2]);
  firstLayout = false;
  rows = t.rows;
  objects = t.objects;
}

const pool = [];

function renderRow(el, r) {
  const [depth, label, path, type, text, extra] = r;
  el.textContent = '';
  el.dataset.path = path;
  el.style.paddingLeft = `${depth * 16 + 4}px`;
  el.className = 'row';
  const toggle = document.createElement('span');
  toggle.className = 'toggle';
  const k = document.createElement('span');
  if (label === null) {
    k.className = 'kind';
    k.textContent = 'root: ';
  } else {
    k.className = typeof label === 'number' ? 'index' : 'key';
    k.textContent = typeof label === 'number' ? `${label}: ` : `${JSON.stringify(label)}: `;
  }
  el.append(toggle, k);
  if (type === 'link') {
    const a = document.createElement('a');
    a.className = 'link';
    if (extra === null) {
      a.textContent = '(unreachable)';
    } else {
      const cycle = extra === '' || path.startsWith(`${extra}/`);
      a.dataset.target = extra;
      a.textContent = `${cycle ? '↻ cycle to' : '→ shared with'} ${extra === '' ? '(root)' : extra}`;
    }
    el.append(a);
  } else if (type === 'map' || type === 'array') {
    toggle.textContent = extra ? '▾' : '▸';
    toggle.dataset.toggle = path;
    const v = document.createElement('span');
    v.className = 'kind';
    v.textContent = `${type} (${text})`;
    el.append(v);
  } else {
    const v = document.createElement('span');
    v.className = type;
    v.textContent = text;
    el.append(v);
  }
}

function renderView() {
  spacer.style.height = `${rows.length * ROW}px`;
  const from = Math.max(0, Math.floor(treeEl.scrollTop / ROW) - 5);
  const to = Math.min(rows.length, from + Math.ceil(treeEl.clientHeight / ROW) + 10);
  rowsEl.style.transform = `translateY(${from * ROW}px)`;
  while (pool.length < to - from) {
    const el = document.createElement('div');
    rowsEl.append(el);
    pool.push(el);
  }
  for (let i = 0; i < pool.length; i++) {
    const r = rows[from + i];
    const el = pool[i];
    if (from + i < to && r !== undefined) {
      el.hidden = false;
      renderRow(el, r);
    } else {
      el.hidden = true;
    }
  }
  $('tree-count').textContent = `${objects} objects, ${rows.length} rows`;
}

function reveal(path) {
  // Expand every ancestor of the place, then scroll to it.
  let at = '';
  for (const seg of path.split('/').slice(1)) {
    expanded.add(at);
    at = `${at}/${seg}`;
  }
  walk();
  const i = rows.findIndex((r) => r[2] === path);
  if (i < 0) return;
  treeEl.scrollTop = Math.max(0, i * ROW - treeEl.clientHeight / 3);
  renderView();
  treeEl.dataset.revealed = path;
  const el = rowsEl.querySelector(`[data-path="${CSS.escape(path)}"]`);
  if (el) {
    el.classList.add('flash');
    setTimeout(() => el.classList.remove('flash'), 800);
  }
}

treeEl.addEventListener('scroll', () => {
  stale.view = true;
  schedule();
});
window.addEventListener('resize', () => {
  stale.view = true;
  schedule();
});
rowsEl.addEventListener('click', (e) => {
  const t = e.target;
  if (t.dataset.toggle !== undefined) {
    const p = t.dataset.toggle;
    if (expanded.has(p)) expanded.delete(p);
    else expanded.add(p);
    stale.tree = true;
    schedule();
  } else if (t.dataset.target !== undefined) {
    reveal(t.dataset.target);
  }
});

// ------------------------------------------------------------- change log

function time(ms) {
  const d = new Date(ms);
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

let logShown = 0;

function renderLog() {
  const ol = $('log');
  const fresh = log.slice(logShown);
  logShown = log.length;
  const frag = document.createDocumentFragment();
  for (const e of fresh) {
    // The target's place, as of the walk after the change.
    let path;
    if (e.root) path = '(root)';
    else if (e.base === null) path = '(unreachable)';
    else if (e.prop === undefined) path = `${e.base || '(root)'} (whole)`;
    else path = `${e.base}/${escapeSegment(e.prop)}`;
    const li = document.createElement('li');
    li.dataset.origin = e.origin ?? '';
    li.dataset.path = path;
    const parts = [
      ['time', time(e.at)],
      ['origin', ` ${e.origin === null ? '(this page)' : (e.origin ?? '?')} `],
      ['path', path],
      ['sep', ' '],
      ['old', e.old],
      ['sep', ' → '],
      ['new', e.new],
    ];
    for (const [cls, text] of parts) {
      const s = document.createElement(cls === 'time' ? 'time' : 'span');
      s.className = cls;
      s.textContent = text;
      li.append(s);
    }
    frag.prepend(li);
  }
  ol.prepend(frag);
  while (ol.childElementCount > LOG_SHOWN) ol.lastElementChild.remove();
  if (log.length > LOG_KEEP) {
    log.splice(0, log.length - LOG_KEEP);
    logShown = log.length;
  }
  $('log-count').textContent = `${log.length} kept`;
}

// --------------------------------------------------------- peers and locks

function ago(ms) {
  if (ms === null) return 'not yet';
  return ms < 1000 ? `${Math.round(ms)} ms ago` : `${(ms / 1000).toFixed(1)} s ago`;
}

function renderTables() {
  const peers = $('peers').tBodies[0];
  peers.textContent = '';
  for (const p of node._peers()) {
    const tr = peers.insertRow();
    tr.dataset.hostname = p.hostname;
    tr.insertCell().textContent = p.hostname;
    tr.insertCell().textContent = p.incarnation.toString(16).padStart(8, '0');
    tr.insertCell().textContent = ago(p.silentFor);
    // How far this page has applied the peer's stream of messages.
    const stream = tr.insertCell();
    stream.className = 'stream';
    stream.textContent = p.held > 0 ? `${p.applied} applied, ${p.held} held behind a gap` : `${p.applied} applied`;
    tr.dataset.applied = String(p.applied);
  }
  const locks = $('locks').tBodies[0];
  locks.textContent = '';
  const table = node._locks();
  const placed = table.length === 0 ? [] : node._placesOf(table.map((l) => l.target));
  table.forEach((l, i) => {
    const [head, ...waiting] = l.queue;
    const tr = locks.insertRow();
    const place = placed[i];
    tr.dataset.path = place ?? '';
    tr.dataset.holder = head.hostname;
    tr.insertCell().textContent = place === null ? '(unreachable)' : place === '' ? '(root)' : place;
    tr.insertCell().textContent = head.token === null ? `${head.hostname} (granted or next)` : head.hostname;
    const tokenCell = tr.insertCell();
    tokenCell.className = 'token';
    // A grant is known here once its holder answers another request.
    tokenCell.textContent = head.token === null ? `> ${l.lastToken}` : String(head.token);
    tokenCell.title = head.token === null ? 'the grant is not known here yet; the token will be above this' : '';
    tr.insertCell().textContent = waiting.map((w) => w.hostname).join(', ');
  });
}

// --------------------------------------------------------- relay status

const KB = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

async function pollStatus() {
  const dl = $('relay');
  try {
    const res = await fetch(`/inspect/${encodeURIComponent(doc)}/status?token=${encodeURIComponent(token)}`, { cache: 'no-store' });
    const s = await res.json();
    if (!res.ok) throw new Error(s.error ?? res.statusText);
    const items = [
      ['log position', `${s.position} (on disk: ${s.committed})`, 'position'],
      ['snapshot covers', String(s.snapshotPosition), 'snapshot-position'],
      ['storage', s.durable ? `${KB(s.snapshotBytes + s.logBytes)} (snapshot ${KB(s.snapshotBytes)}, log ${KB(s.logBytes)})` : 'none (ephemeral relay)', 'storage'],
      // A closed document is described from its files, unopened.
      ['objects', s.open === false ? 'not loaded (the document is closed)' : String(s.objects), 'objects'],
      // Each client with the log position queued for it so far.
      ['clients', `${s.clients.length}: ${s.clients.map((c) => `${c.hostname}${c.readOnly ? ' (read-only)' : ''} at ${c.sentUpto}`).join(', ')}`, 'clients'],
    ];
    dl.textContent = '';
    for (const [k, v, id] of items) {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v;
      dd.dataset.field = id;
      dl.append(dt, dd);
    }
    dl.dataset.position = String(s.position);
  } catch (e) {
    dl.textContent = `status unavailable: ${e.message}`;
  }
}

// ---------------------------------------------------------------- drawing

function draw() {
  frame = 0;
  if (node === null) return;
  if (stale.tree) {
    // A document that takes long to walk is walked at most once in ten
    // times that long, so that a stream of changes never starves the page.
    const now = performance.now();
    if (now - lastWalk >= walkCost * 10) {
      walk();
      lastWalk = performance.now();
      walkCost = lastWalk - now;
      stale.tree = false;
      stale.view = true;
    } else if (!retry) {
      retry = true;
      setTimeout(() => {
        retry = false;
        schedule();
      }, walkCost * 10 - (now - lastWalk));
    }
  }
  if (stale.view) {
    renderView();
    stale.view = false;
  }
  if (log.length > logShown) renderLog();
  if (stale.tables) {
    renderTables();
    stale.tables = false;
  }
}

function changed() {
  stale.tree = true;
  stale.tables = true;
  schedule();
}

try {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
  node = await Facsimile.connect(url, 'inspector', { doc, token, readOnly: true });
  state.textContent = 'live (read-only)';
  state.className = 'live';
  node.on('change', (target, prop, nv, ov) => {
    const whole = prop === undefined;
    unplaced.push({ at: Date.now(), target, prop, origin: node._changeOrigin(), old: show(ov), new: show(whole ? target : nv) });
    changed();
  });
  node.on('root_changed', (root) => {
    unplaced.push({ at: Date.now(), target: null, root: true, origin: node._changeOrigin(), old: '', new: show(root) });
    changed();
  });
  node.on('ready', changed);
  setInterval(() => {
    const c = node.connection;
    const live = c.status === 'connected';
    state.textContent = live ? 'live (read-only)' : `${c.status}${c.error ? `: ${c.error.message}` : ''}`;
    state.className = live ? 'live' : 'down';
    stale.tables = true;
    schedule();
    pollStatus();
  }, POLL_MS);
  pollStatus();
  changed();
  window.inspector = { node, ready: true };
} catch (e) {
  state.textContent = `cannot join: ${e.message}`;
  state.className = 'down';
  window.inspector = { error: e.message };
}
