'use strict';
// The functions with the most self time in a V8 CPU profile, as written by
// `node --cpu-prof` (see README.md), grouped by function and script.
//
//   node src/profile.js FILE.cpuprofile [TOP] [--under NAME,NAME...]
//
// With --under, only samples taken inside a call of one of the named
// functions count (for the workloads' timed part: `--under
// set,push,insert,remove,apply`, the systems' edit and apply methods, which
// leaves out building the pair and the final check).

const { readFileSync } = require('node:fs');
const { basename } = require('node:path');

function main() {
  const args = process.argv.slice(2);
  let under = null;
  const at = args.indexOf('--under');
  if (at >= 0) {
    under = new Set(args[at + 1].split(','));
    args.splice(at, 2);
  }
  const [file, topArg] = args;
  if (!file) {
    console.error('usage: node src/profile.js FILE.cpuprofile [TOP] [--under NAME,NAME...]');
    process.exit(2);
  }
  const top = Number(topArg) || 30;
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children || []) parent.set(c, n.id);
  const inside = (id) => {
    for (let p = id; p !== undefined; p = parent.get(p)) {
      if (under.has(byId.get(p).callFrame.functionName)) return true;
    }
    return false;
  };
  // Time between samples, charged to the sampled node.
  const self = new Map();
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i++) {
    if (under !== null && !inside(samples[i])) continue;
    const dt = timeDeltas[i + 1] !== undefined ? timeDeltas[i + 1] : 0;
    self.set(samples[i], (self.get(samples[i]) || 0) + dt);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const groups = new Map();
  const byScript = new Map();
  for (const [id, us] of self) {
    const f = byId.get(id).callFrame;
    const script = f.url ? basename(f.url) : '(native)';
    const key = `${f.functionName || '(anonymous)'}  ${script}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    groups.set(key, (groups.get(key) || 0) + us);
    byScript.set(script, (byScript.get(script) || 0) + us);
  }
  const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
  console.log(`${(total / 1000).toFixed(0)} ms sampled\n\nby script:`);
  for (const [k, us] of [...byScript].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${pct(us)}  ${k}`);
  console.log('\nby function (self time):');
  for (const [k, us] of [...groups].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${k}`);
}

main();
