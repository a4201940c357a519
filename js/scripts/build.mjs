// Builds the package from a clean checkout: the engine compiled to
// WebAssembly (installing the Rust target and wasm-bindgen-cli, at exactly
// the version of the wasm-bindgen crate in Cargo.lock, when they are
// missing), its bindings for Node.js and for browsers, and the package's
// entry points around src/core.js.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { minify } from 'terser';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
const root = resolve(pkg, '..');
const target = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(root, 'target');
const tools = join(target, 'wasm-tools');
const dist = join(pkg, 'dist');

function run(cmd, args, options = {}) {
  execFileSync(cmd, args, { stdio: 'inherit', cwd: root, ...options });
}

function output(cmd, args) {
  try {
    return execFileSync(cmd, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

// The version of the wasm-bindgen crate the engine is built with.
function bindgenVersion() {
  const lock = readFileSync(join(root, 'Cargo.lock'), 'utf8');
  const m = lock.match(/name = "wasm-bindgen"\nversion = "([^"]+)"/);
  if (!m) throw new Error('wasm-bindgen is not in Cargo.lock');
  return m[1];
}

function ensureTarget() {
  if (!output('rustup', ['target', 'list', '--installed']).includes('wasm32-unknown-unknown')) {
    run('rustup', ['target', 'add', 'wasm32-unknown-unknown']);
  }
}

function ensureBindgen(version) {
  const bin = join(tools, 'bin', 'wasm-bindgen');
  if (!output(bin, ['--version']).includes(version)) {
    // Not --locked: its lockfile pins a release the registry no longer serves.
    run('cargo', ['install', 'wasm-bindgen-cli', '--version', version, '--root', tools, '--force']);
  }
  return bin;
}

ensureTarget();
const bindgen = ensureBindgen(bindgenVersion());
run('cargo', ['build', '-p', 'facsimile-wasm', '--target', 'wasm32-unknown-unknown', '--profile', 'wasm']);
const wasm = join(target, 'wasm32-unknown-unknown', 'wasm', 'facsimile_wasm.wasm');
rmSync(dist, { recursive: true, force: true });
for (const [kind, dir] of [['nodejs', 'node'], ['web', 'web']]) {
  run(bindgen, ['--target', kind, '--remove-name-section', '--remove-producers-section',
    '--out-dir', join(dist, dir), wasm]);
}

// The package's JavaScript: the class (core.js) and the relay client
// (connect.js), wrapped for each platform.
const core = ['core.js', 'connect.js'].map((f) => readFileSync(join(pkg, 'src', f), 'utf8')).join('\n');
mkdirSync(dist, { recursive: true });
writeFileSync(join(dist, 'index.cjs'), `'use strict';
const wasm = require('./node/facsimile_wasm.js');
${core}
const Facsimile = createFacsimile(wasm, { platform: 'node' });
module.exports = Facsimile;
module.exports.default = Facsimile;
module.exports.Facsimile = Facsimile;
`);
writeFileSync(join(dist, 'index.mjs'), `import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const Facsimile = require('./index.cjs');
export default Facsimile;
export { Facsimile };
`);
writeFileSync(join(dist, 'browser.mjs'), `import init, * as wasm from './web/facsimile_wasm.js';
await init({ module_or_path: new URL('./web/facsimile_wasm_bg.wasm', import.meta.url) });
${core}
const Facsimile = createFacsimile(wasm, { platform: 'browser' });
export default Facsimile;
export { Facsimile };
`);
// What a browser downloads is minified (the Node.js build stays readable).
for (const file of [join(dist, 'browser.mjs'), join(dist, 'web', 'facsimile_wasm.js')]) {
  const out = await minify(readFileSync(file, 'utf8'), { module: true, compress: true, mangle: true });
  writeFileSync(file, out.code);
}
console.log(`built ${dist}`);
