// A JavaScript node of the js/ package whose transport is its standard
// input and output, one JSON object a line, speaking the protocol of the
// Rust stdio_peer example (binary messages as hex):
//   {"recv_hex": "<hex>"}            a message from a peer
//   {"do": "random", "seed": S, "ops": N}   N random writes
//   {"do": "sync"} / {"do": "snapshot"}
// It prints {"msg_hex": "<hex>"} for each message it sends, {"snapshot":
// "<hex>"} when asked, then {"done": true} or {"error": "..."}.
// Run: node js_peer.cjs HOSTNAME PATH_TO_JS_PACKAGE
'use strict';

const readline = require('node:readline');
const Facsimile = require(process.argv[3]);

const node = new Facsimile(process.argv[2], { binary: true });
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
node.send = (m) => out({ msg_hex: Buffer.from(m).toString('hex') });

let state = 1;
const rnd = (n) => {
  state = (state * 48271) % 2147483647;
  return state % n;
};

function random(ops) {
  const s = node.store;
  if (s === null || typeof s !== 'object' || Array.isArray(s)) return;
  for (let i = 0; i < ops; i++) {
    const key = `k${rnd(8)}`;
    switch (rnd(6)) {
      case 0: s[key] = rnd(1000); break;
      case 1: s[key] = { n: rnd(10), s: 'js' }; break;
      case 2: delete s[key]; break;
      default: {
        const items = s.items;
        if (!Array.isArray(items)) {
          s.items = [];
          break;
        }
        const r = rnd(4);
        if (r === 0) items.push(rnd(100));
        else if (r === 1 && items.length) items.splice(rnd(items.length), 1, 'j');
        else if (r === 2) items.reverse();
        else items.unshift('h');
      }
    }
  }
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  try {
    const cmd = JSON.parse(line);
    if (cmd.recv_hex !== undefined) node.receive(Uint8Array.from(Buffer.from(cmd.recv_hex, 'hex')));
    else if (cmd.do === 'random') {
      state = (cmd.seed % 2147483646) + 1;
      random(cmd.ops);
    } else if (cmd.do === 'snapshot') out({ snapshot: Buffer.from(node.snapshot()).toString('hex') });
    else if (cmd.do === 'sync') node.sync();
    else throw new Error(`unknown command ${line}`);
    out({ done: true });
  } catch (e) {
    out({ error: String((e && e.message) || e) });
  }
});
