'use strict';
// Comparative benchmark of facsimile's JavaScript package against yjs,
// automerge and loro on the workloads of bench/ (the Rust benchmark).
//
//   npm run bench -- [--quick] [--out FILE] [--timeout SECS] [--repeats K]
//                    [--systems a,b] [--workloads x,y]
//
// Each (system, workload) pair runs in its own child process (src/child.js),
// so its peak memory is its own and a crash or a timeout loses only that
// pair. A pair whose first run takes under 10 s runs K times (5 by default),
// in K passes over all such pairs, and its row is the run with the median
// total. The tables go to standard output and to FILE (by default
// results/latest.md, or results/quick.md for --quick, which runs every N
// divided by 10 once), with the runs as JSON lines beside it (.jsonl).
//
// facsimile's package is a link to ../../js, whose dist/ may be rebuilt
// while a run goes on: the run copies dist/ once at its start and every
// child loads that copy (FACSIMILE_PACKAGE), so all rows measure one build.

const { spawn } = require('node:child_process');
const { createHash } = require('node:crypto');
const { execFileSync } = require('node:child_process');
const { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } = require('node:fs');
const os = require('node:os');
const { dirname, join, resolve } = require('node:path');

const bundle = require('./bundle');
const { incrementalTable, snapshotTable, summaryTable } = require('./report');
const { names: SYSTEM_NAMES } = require('./systems');
const { WORKLOADS } = require('./workloads');

const here = join(__dirname, '..');
const REPEAT_BELOW_MS = 10_000;

/**
 * Where a peer cannot finish the default N in reasonable time it runs at a
 * smaller one. automerge's JavaScript document is an immutable tree of plain
 * objects that every change and every applied change rebuilds along its
 * path, so a set on a map of k keys copies the map: its per-operation cost
 * grows with the document (1,000 sets take 0.95 s, 4,000 take 7.3 s).
 */
const SMALLER_N = {
  automerge: { map_set: 2000, map_overwrite: 2000, array_push: 2000, two_writers: 2000, seq_stress: 2000 },
};

function defaultN(system, workload) {
  const smaller = SMALLER_N[system];
  return (smaller && smaller[workload]) || WORKLOADS[workload].n;
}

const USAGE = `usage: npm run bench -- [--quick] [--out FILE] [--timeout SECS] [--repeats K]
                        [--systems ${SYSTEM_NAMES.join(',')}]
                        [--workloads ${Object.keys(WORKLOADS).join(',')}]`;

function parseArgs(argv) {
  const o = { quick: false, out: null, timeoutS: 300, repeats: 5, systems: SYSTEM_NAMES, workloads: Object.keys(WORKLOADS) };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value\n${USAGE}`);
      return argv[++i];
    };
    const list = (known) => {
      const items = value().split(',');
      for (const x of items) if (!known.includes(x)) throw new Error(`unknown name ${x}\n${USAGE}`);
      return items;
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--out') o.out = resolve(value());
    else if (a === '--timeout') o.timeoutS = Number(value());
    else if (a === '--repeats') o.repeats = Number(value());
    else if (a === '--systems') o.systems = list(SYSTEM_NAMES);
    else if (a === '--workloads') o.workloads = list(Object.keys(WORKLOADS));
    else if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  if (!(o.timeoutS > 0) || !(Number.isInteger(o.repeats) && o.repeats > 0)) throw new Error(USAGE);
  if (o.quick) o.repeats = 1;
  if (o.out === null) o.out = join(here, 'results', o.quick ? 'quick.md' : 'latest.md');
  return o;
}

/** Runs one pair in a child process, killing it after `timeoutS`. */
function runChild(system, workload, n, timeoutS, env) {
  return new Promise((done) => {
    const failed = (status) => done({ system, workload, n, status });
    const child = spawn(process.execPath, [join(__dirname, 'child.js'), system, workload, String(n)], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env,
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutS * 1000);
    child.on('error', (e) => {
      clearTimeout(timer);
      failed(`CRASH: ${e.message}`);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) return failed(`TIMEOUT (${timeoutS} s)`);
      const line = out
        .split('\n')
        .reverse()
        .find((l) => l.startsWith('{'));
      if (code !== 0 || line === undefined) return failed(`CRASH: ${signal ? `signal ${signal}` : `exit ${code}`}`);
      done(JSON.parse(line));
    });
  });
}

/** The run with the median total; a failed run wins, so no failure hides behind good samples. */
function medianRun(runs) {
  const bad = runs.find((r) => r.status !== 'ok');
  if (bad !== undefined) return bad;
  const sorted = [...runs].sort((x, y) => x.totalMs - y.totalMs);
  return sorted[Math.floor(sorted.length / 2)];
}

const installedDist = join(here, 'node_modules', 'facsimile', 'dist');

function facsimileBuilt() {
  return existsSync(join(installedDist, 'index.cjs'));
}

/** A private copy of facsimile's dist/ for this run: its folder. */
function copyDist() {
  const dir = mkdtempSync(join(os.tmpdir(), 'facsimile-bench-'));
  cpSync(installedDist, join(dir, 'dist'), { recursive: true, preserveTimestamps: true });
  return join(dir, 'dist');
}

function describeRun(r) {
  const ms = r.totalMs === undefined ? '' : `${Math.round(r.totalMs)} ms `;
  return `${ms}${r.status === 'ok' ? 'OK' : r.status}`;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  let systems = o.systems;
  const notes = [];
  if (!facsimileBuilt()) {
    const msg = 'facsimile is not built (run `cd ../../js && npm run build`): its rows are skipped';
    console.error(msg);
    notes.push(msg);
    systems = systems.filter((s) => !s.startsWith('facsimile'));
  }
  const env = { ...process.env };
  let dist = installedDist;
  let copied = null;
  if (systems.some((s) => s.startsWith('facsimile')) && env.FACSIMILE_PACKAGE === undefined) {
    copied = copyDist();
    dist = copied;
    env.FACSIMILE_PACKAGE = join(copied, 'index.cjs');
  }
  try {
    await runAll(o, systems, notes, env, dist);
  } finally {
    if (copied !== null) rmSync(join(copied, '..'), { recursive: true, force: true });
  }
}

async function runAll(o, systems, notes, env, dist) {
  const started = new Date();
  const loadBefore = os.loadavg();
  const build = facsimileBuild(dist);
  const pairs = [];
  for (const workload of o.workloads) {
    for (const system of systems) {
      const full = defaultN(system, workload);
      pairs.push({ workload, system, n: o.quick ? Math.max(1, Math.floor(full / 10)) : full, runs: [] });
    }
  }
  for (const [i, p] of pairs.entries()) {
    process.stderr.write(`[${i + 1}/${pairs.length}] ${p.system} ${p.workload} N=${p.n} ... `);
    const r = await runChild(p.system, p.workload, p.n, o.timeoutS, env);
    console.error(describeRun(r));
    p.runs.push(r);
  }
  const short = (p) => p.runs[0].status === 'ok' && p.runs[0].totalMs < REPEAT_BELOW_MS;
  for (let pass = 2; pass <= o.repeats; pass++) {
    for (const p of pairs) {
      if (!short(p)) continue;
      process.stderr.write(`[pass ${pass}/${o.repeats}] ${p.system} ${p.workload} N=${p.n} ... `);
      const r = await runChild(p.system, p.workload, p.n, o.timeoutS, env);
      console.error(describeRun(r));
      p.runs.push(r);
    }
  }
  const finished = new Date();
  const loadAfter = os.loadavg();
  const reports = pairs.map((p) => ({
    ...medianRun(p.runs),
    runs: p.runs.map((r) => r.totalMs),
    basePeaks: p.runs.map((r) => r.basePeakBytes).filter((b) => b !== undefined),
  }));
  const sizes = bundle.measure(dist);

  const tables =
    `### Summary\n\n${summaryTable(reports)}\n` +
    `### Incremental workloads\n\n${incrementalTable(reports)}\n` +
    `### Snapshot workloads\n\n${snapshotTable(reports)}\n` +
    `### Bundle sizes\n\n${bundle.markdown(sizes)}`;
  console.log(tables);
  const doc = document(tables, o, reports, { started, finished, loadBefore, loadAfter, notes, build });
  mkdirSync(dirname(o.out), { recursive: true });
  writeFileSync(o.out, doc);
  writeFileSync(o.out.replace(/\.md$/, '') + '.jsonl', reports.map((r) => JSON.stringify(r)).join('\n') + '\n');
  console.error(`wrote ${o.out}`);
}

function version(name) {
  try {
    return JSON.parse(readFileSync(join(here, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return '?';
  }
}

/** The commit of the facsimile checkout the package links to, and the digest of the measured wasm. */
function facsimileBuild(dist) {
  const pkg = join(here, 'node_modules', 'facsimile');
  let commit = '?';
  let dirty = '';
  try {
    commit = execFileSync('git', ['-C', pkg, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const changed = execFileSync('git', ['-C', pkg, 'status', '--porcelain', '--', '.', '../crates'], { encoding: 'utf8' }).trim();
    if (changed) dirty = ' with uncommitted changes in js/ or crates/';
  } catch {
    // Not a git checkout.
  }
  const wasm = join(dist, 'node', 'facsimile_wasm_bg.wasm');
  const digest = existsSync(wasm) ? createHash('sha256').update(readFileSync(wasm)).digest('hex').slice(0, 12) : '?';
  const built = existsSync(wasm) ? statSync(wasm).mtime.toISOString() : '?';
  return `checkout ${commit}${dirty}; dist/node/facsimile_wasm_bg.wasm built ${built}, sha256 ${digest}…`;
}

function machine() {
  const cpus = os.cpus();
  const model = cpus.length > 0 ? cpus[0].model : 'unknown CPU';
  return `${model}, ${cpus.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; Linux ${os.release()}; Node ${process.version}`;
}

function document(tables, o, reports, { started, finished, loadBefore, loadAfter, notes, build }) {
  const load = (l) => l.map((x) => x.toFixed(2)).join(' / ');
  const smaller = [];
  for (const system of o.systems) {
    for (const workload of o.workloads) {
      const n = defaultN(system, workload);
      if (n !== WORKLOADS[workload].n) smaller.push(`- ${system} \`${workload}\`: N = ${n} (default ${WORKLOADS[workload].n})`);
    }
  }
  return `# JavaScript comparative benchmark results

Made by \`cd bench/js && npm run bench${o.quick ? ' -- --quick' : ''}\` (per-pair timeout ${o.timeoutS} s, ${o.repeats} run${o.repeats > 1 ? 's' : ''} of each pair under 10 s, the median shown).

- Machine: ${machine()}.
- Run: ${started.toISOString()} to ${finished.toISOString()}; load average (1 / 5 / 15 min) ${load(loadBefore)} before, ${load(loadAfter)} after.
- facsimile: ${build}.
- Peers: yjs ${version('yjs')}, @automerge/automerge ${version('@automerge/automerge')}, loro-crdt ${version('loro-crdt')}.
${notes.map((n) => `- ${n}\n`).join('')}
${tables}
## Reading the tables

- **N** is the workload's size: operations for \`map_set\`, \`map_overwrite\`, \`array_push\`, \`two_writers\` (both writers together); the final array length for \`seq_stress\` (ops counts its inserts and deletes); maps in \`items\` for \`nested\`; objects for \`graph_sync\`.
- **total** is the wall time of the workload's loop: every edit made on one replica, its update taken and applied on the other (for the snapshot workloads: build, snapshot encode, decode and read). **edit** (the local write and its update) and **apply** come from a second run that reads the clock around each of them, so they may add up to more than total. yjs and facsimile encode an update inside the write (yjs's \`update\` event, facsimile's \`send\`), so edit is not split further.
- **B/op** is the update bytes over ops (facsimile's JSON messages are ASCII strings: characters are bytes). **snapshot bytes** is what the joiner received (facsimile: every message the sender sent it during \`sync()\`, nearly all of it the state answer).
- **peak MB** is the child process's VmHWM, read before the final convergence check: Node itself, the library and every replica. A process with the library loaded and one empty pair made peaks at ${baselines(reports)} MB.
- **× best peer** is total over the total of the fastest of yjs, automerge and loro that ran the same N; \`-\` where none did.
- Update paths: yjs \`doc.on('update')\` / \`Y.applyUpdate\`; automerge \`getLastLocalChange\` / \`applyChanges\`; loro \`export({ mode: 'update', from })\` / \`import\`; facsimile \`send\` / \`receive\`, JSON strings (\`facsimile\`) or \`{ binary: true }\` Uint8Arrays (\`facsimile-binary\`). See each \`src/systems/*.js\`.

## Smaller N

${smaller.length > 0 ? smaller.join('\n') : '- none'}
${o.quick ? '\nThis is a `--quick` run: every N above is divided by 10.\n' : ''}`;
}

/** What a child process peaks at before its workload, per system (the smallest seen). */
function baselines(reports) {
  const by = new Map();
  for (const r of reports) {
    for (const b of r.basePeaks || []) {
      if (!by.has(r.system) || b < by.get(r.system)) by.set(r.system, b);
    }
  }
  return [...by].map(([system, b]) => `${system} ${(b / 2 ** 20).toFixed(0)}`).join(', ');
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
