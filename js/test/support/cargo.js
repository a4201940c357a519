'use strict';
// The workspace's Rust binaries and examples for the tests that run them
// beside this package (the CLI, the relay, the Rust peers).

const { execFileSync } = require('node:child_process');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(root, 'target');
let built = false;

/**
 * The path of a release artifact under the target directory, the whole
 * workspace built first, once per test process: as the Rust tests build it
 * (every feature, dev-dependencies included), so that this is a no-op
 * after them.
 */
function release(...parts) {
  if (!built) {
    execFileSync('cargo', ['build', '--quiet', '--release', '--workspace', '--all-features', '--bins', '--examples'], {
      cwd: root,
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 15 * 60 * 1000,
    });
    built = true;
  }
  return path.join(targetDir, 'release', ...parts);
}

module.exports = { release };
