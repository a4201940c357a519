'use strict';
// What each library weighs: facsimile's WebAssembly and JavaScript glue
// (the package's dist/, as built), loro's WebAssembly and bindings for
// browsers, automerge's WebAssembly and yjs's JavaScript, raw and gzipped
// (zlib level 9). KB are 1,000 bytes.

const { existsSync, readFileSync, readdirSync, realpathSync, statSync } = require('node:fs');
const { join, relative } = require('node:path');
const { gzipSync } = require('node:zlib');

const here = join(__dirname, '..');

function sizes(path) {
  const data = readFileSync(path);
  return { raw: data.length, gzip: gzipSync(data, { level: 9 }).length };
}

/** The folder a package is installed in (followed through a link). */
function packageDir(name) {
  return realpathSync(join(here, 'node_modules', name));
}

/** Files of `dir` that a program loads: no type declarations or source maps. */
function runtimeFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => !f.endsWith('.d.ts') && !f.endsWith('.map'))
    .map((f) => join(dir, f))
    .filter((p) => statSync(p).isFile())
    .sort();
}

function group(label, files, base) {
  const rows = files.map((p) => ({ file: relative(base, p), ...sizes(p) }));
  const total = rows.reduce((t, r) => ({ raw: t.raw + r.raw, gzip: t.gzip + r.gzip }), { raw: 0, gzip: 0 });
  return { label, rows, total };
}

/**
 * The groups of files measured, each with per-file and total sizes;
 * facsimile's from `dist` (by default the installed package's dist/).
 */
function measure(dist = join(packageDir('facsimile'), 'dist')) {
  const groups = [];
  const fac = join(dist, '..');
  const entry = (f) => (existsSync(join(dist, f)) ? [join(dist, f)] : []);
  groups.push(
    group('facsimile for Node.js (dist/node/* and the entry dist/index.cjs)', [...runtimeFiles(join(dist, 'node')), ...entry('index.cjs')], fac),
  );
  groups.push(
    group('facsimile for browsers (dist/web/* and the entry dist/browser.mjs)', [...runtimeFiles(join(dist, 'web')), ...entry('browser.mjs')], fac),
  );
  const loro = packageDir('loro-crdt');
  groups.push(
    group('loro-crdt for browsers (web/: WebAssembly, its bindings and entry)', ['loro_wasm_bg.wasm', 'loro_wasm.js', 'index.js'].map((f) => join(loro, 'web', f)), loro),
  );
  const am = packageDir('@automerge/automerge');
  groups.push(group('@automerge/automerge (WebAssembly)', [join(am, 'dist', 'automerge.wasm')], am));
  const yjs = packageDir('yjs');
  const lib0 = packageDir('lib0');
  groups.push(group('yjs (its ES module dist file; it also imports modules of lib0)', [join(yjs, 'dist', 'yjs.mjs')], yjs));
  return { groups, lib0Version: version(lib0) };
}

function version(dir) {
  try {
    return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).version;
  } catch {
    return '?';
  }
}

const kb = (n) => `${(n / 1000).toFixed(1)} KB`;

function markdown({ groups }) {
  let out = '| files | raw | gzip -9 |\n|---|--:|--:|\n';
  for (const g of groups) {
    for (const r of g.rows) out += `| ${g.label.split(' (')[0]}: \`${r.file}\` | ${kb(r.raw)} | ${kb(r.gzip)} |\n`;
    if (g.rows.length > 1) out += `| **${g.label}, all** | **${kb(g.total.raw)}** | **${kb(g.total.gzip)}** |\n`;
  }
  return out;
}

module.exports = { measure, markdown, kb };

if (require.main === module) console.log(markdown(measure()));
