// A JavaScript node of the js/ package on a relay (Facsimile.connect over a
// WebSocket), driven one JSON command a line on standard input:
//   {"do": "set", "key": K, "value": V}   store[K] = V, then flush
//   {"do": "lock_set", "key": K}          lock the root, store[K] = token,
//                                          flush, release; prints {"token": T}
//   {"do": "snapshot"}                    prints {"snapshot": "<hex>"}
// It prints {"ready": store} once connected, {"change": [key, value]} for
// each change, and {"done": true} or {"error": "..."} after each command.
// Run: node js_relay_peer.cjs URL HOSTNAME DOC PATH_TO_JS_PACKAGE
'use strict';

const path = require('node:path');
const readline = require('node:readline');

const [url, hostname, doc, js] = process.argv.slice(2);
const Facsimile = require(js);
const WebSocket = globalThis.WebSocket || require(path.join(js, 'node_modules', 'ws'));
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

(async () => {
  const node = await Facsimile.connect(url, hostname, { doc, WebSocket });
  node.on('change', (target, property, value) => out({ change: [property ?? null, value ?? null] }));
  out({ ready: node.store });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    try {
      const cmd = JSON.parse(line);
      if (cmd.do === 'set') {
        node.store[cmd.key] = cmd.value;
        await node.flush();
      } else if (cmd.do === 'lock_set') {
        const token = await node.lock(node.store);
        node.store[cmd.key] = token;
        await node.flush();
        node.release(node.store);
        await node.flush();
        out({ token });
      } else if (cmd.do === 'snapshot') {
        out({ snapshot: Buffer.from(node.snapshot()).toString('hex') });
      } else {
        throw new Error(`unknown command ${line}`);
      }
      out({ done: true });
    } catch (e) {
      out({ error: String((e && e.message) || e) });
    }
  }
  await node.close();
})().catch((e) => {
  out({ error: String((e && e.message) || e) });
  process.exit(1);
});
