'use strict';
// The systems by name, loaded on demand so a child process loads only the
// library it runs.

const SYSTEMS = {
  facsimile: () => require('./facsimile').FacsimileJson,
  'facsimile-binary': () => require('./facsimile').FacsimileBinary,
  yjs: () => require('./yjs').Yjs,
  automerge: () => require('./automerge').AutomergeSystem,
  loro: () => require('./loro').Loro,
};

/** The peers facsimile is compared with (the other names are facsimile). */
const PEERS = ['yjs', 'automerge', 'loro'];

function load(name) {
  const make = SYSTEMS[name];
  if (make === undefined) throw new Error(`unknown system ${name}`);
  return make();
}

module.exports = { SYSTEMS, PEERS, load, names: Object.keys(SYSTEMS) };
