'use strict';
// The results as markdown tables.

const { PEERS } = require('./systems');
const { WORKLOADS } = require('./workloads');

const ms = (v) => (v === undefined || v === null ? '-' : v >= 10_000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(1)} ms`);
const num = (v, digits = 1) => (v === undefined || v === null ? '-' : v.toFixed(digits));
const mb = (bytes) => (bytes === undefined || bytes === null ? '-' : (bytes / 2 ** 20).toFixed(1));
const int = (v) => (v === undefined || v === null ? '-' : Math.round(v).toLocaleString('en-US'));

const ok = (r) => r.status === 'ok';

/** The fastest peer of `workload` that ran the run's full size (the largest N), or null. */
function bestPeer(reports, workload) {
  let full = 0;
  for (const r of reports) if (r.workload === workload && r.n > full) full = r.n;
  let best = null;
  for (const r of reports) {
    if (r.workload !== workload || !PEERS.includes(r.system) || !ok(r)) continue;
    if (r.n !== full) continue;
    if (best === null || r.totalMs < best.totalMs) best = r;
  }
  return best;
}

/** The peer of `workload` with the fewest bytes (per operation, or in its snapshot), any size. */
function leanestPeer(reports, workload) {
  let best = null;
  const bytes = (r) => (WORKLOADS[workload].incremental ? r.updateBytes / r.ops : r.snapshotBytes);
  for (const r of reports) {
    if (r.workload !== workload || !PEERS.includes(r.system) || !ok(r)) continue;
    if (best === null || bytes(r) < bytes(best)) best = r;
  }
  return best;
}

function ratio(r, best) {
  if (!ok(r) || best === null || r.n !== best.n) return '-';
  return (r.totalMs / best.totalMs).toFixed(2);
}

function status(r) {
  return ok(r) ? 'OK' : r.status;
}

function incrementalTable(reports) {
  let out =
    '| workload | system | N | ops | total | µs/op | edit | apply | B/op | peak MB | × best peer | status |\n' +
    '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n';
  for (const r of reports) {
    if (!WORKLOADS[r.workload].incremental) continue;
    const best = bestPeer(reports, r.workload);
    out +=
      `| ${r.workload} | ${r.system} | ${int(r.n)} | ${int(r.ops)} | ${ms(r.totalMs)} | ${ok(r) ? num((r.totalMs * 1000) / r.ops, 2) : '-'} ` +
      `| ${ms(r.editMs)} | ${ms(r.applyMs)} | ${ok(r) ? num(r.updateBytes / r.ops) : '-'} | ${mb(r.peakBytes)} | ${ratio(r, best)} | ${status(r)} |\n`;
  }
  return out;
}

function snapshotTable(reports) {
  let out =
    '| workload | system | N | total | build | encode | decode | read | snapshot bytes | peak MB | × best peer | status |\n' +
    '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n';
  for (const r of reports) {
    if (WORKLOADS[r.workload].incremental) continue;
    const best = bestPeer(reports, r.workload);
    out +=
      `| ${r.workload} | ${r.system} | ${int(r.n)} | ${ms(r.totalMs)} | ${ms(r.buildMs)} | ${ms(r.encodeMs)} | ${ms(r.decodeMs)} ` +
      `| ${ms(r.readMs)} | ${int(r.snapshotBytes)} | ${mb(r.peakBytes)} | ${ratio(r, best)} | ${status(r)} |\n`;
  }
  return out;
}

/** One row per workload: facsimile (both encodings) against the best peer. */
function summaryTable(reports) {
  let out =
    '| workload | facsimile (JSON) | facsimile (binary) | best peer | time ratio JSON / binary | B/op or snapshot: JSON / binary / leanest peer |\n' +
    '|---|--:|--:|--:|--:|--:|\n';
  for (const workload of Object.keys(WORKLOADS)) {
    const find = (system) => reports.find((r) => r.workload === workload && r.system === system);
    const json = find('facsimile');
    const binary = find('facsimile-binary');
    if (json === undefined && binary === undefined) continue;
    const best = bestPeer(reports, workload);
    const lean = leanestPeer(reports, workload);
    const incremental = WORKLOADS[workload].incremental;
    const bytes = (r) => {
      if (r === undefined || r === null || !ok(r)) return '-';
      return incremental ? num(r.updateBytes / r.ops) : int(r.snapshotBytes);
    };
    const time = (r) => (r === undefined ? '-' : ok(r) ? ms(r.totalMs) : r.status);
    const rat = (r) => (r === undefined ? '-' : ratio(r, best));
    out +=
      `| ${workload} | ${time(json)} | ${time(binary)} | ${best ? `${best.system} ${ms(best.totalMs)}` : '-'} ` +
      `| **${rat(json)}** / **${rat(binary)}** | ${bytes(json)} / ${bytes(binary)} / ${lean ? `${lean.system} ${bytes(lean)}` : '-'} |\n`;
  }
  return out;
}

module.exports = { incrementalTable, snapshotTable, summaryTable, bestPeer, ms, mb };
