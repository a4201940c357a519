'use strict';
// Peak memory of this process.

const { readFileSync } = require('node:fs');

/** The peak resident set size (VmHWM) in bytes, or the current RSS where /proc has none. */
function peakBytes() {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // Not Linux: fall through.
  }
  return process.memoryUsage().rss;
}

module.exports = { peakBytes };
