'use strict';
// One (system, workload, N) run, in its own process: prints one JSON line.
//
//   node src/child.js SYSTEM WORKLOAD N

const systems = require('./systems');
const { run, OK } = require('./workloads');
const { peakBytes } = require('./memory');

function main() {
  const [system, workload, nArg] = process.argv.slice(2);
  const n = Number(nArg);
  if (!system || !workload || !Number.isInteger(n) || n <= 0) {
    console.error('usage: node src/child.js SYSTEM WORKLOAD N');
    process.exit(2);
  }
  const S = systems.load(system);
  // The process with the library loaded and its WebAssembly compiled,
  // before any document exists.
  S.pair();
  const basePeakBytes = peakBytes();
  const report = run(S, workload, n);
  const status = report.status === OK ? 'ok' : `FAIL: ${report.status.fail}`;
  if (status !== 'ok') console.error(`FAIL ${system} ${workload} N=${n}: ${report.status.fail}`);
  console.log(JSON.stringify({ system, workload, n, ...report, status, basePeakBytes }));
}

main();
