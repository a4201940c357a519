// Type-checked use of the package from CommonJS (not run).
import Facsimile = require('facsimile');

interface Doc {
  title: string;
  tags: string[];
  meta: { views: number };
}

const a = new Facsimile<Doc>('a', { binary: true, resendLog: 64, failureDetection: { heartbeat: 500, timeout: 5000 } });
const b = new Facsimile('b');
a.send = (message, to) => b.receive(message, to);
b.send = (...args) => a.receive(...args);
a.store = { title: 't', tags: ['x'], meta: { views: 1 } };
const title: string = a.store.title;
const n: number = a.store.tags.push('y');
a.store.meta.views += 1;
a.store.tags.on((target, property, value, old) => console.log(target, property, value, old));
a.store.meta.on('views', () => {}).off('views', () => {});
const plain: unknown = a.store.toJSON();
a.on('change', (target, property) => console.log(target, property)).on('ready', (store) => console.log(store));
a.on('lock', (target, what, token) => console.log(what, token));
a.off('change', () => {});
async function locks(): Promise<number> {
  const token: number = await a.lock(a.store.meta);
  a.release(a.store.meta);
  const giveUp = new AbortController();
  return token + (await a.request(a.store.tags, { signal: giveUp.signal }));
}
a.assign(a.store.meta, { views: 3 });
// assign is typed by its target: the keys it has, and what they hold.
a.assign(a.store, { title: 'u' }, null, { tags: ['a', 'b'], meta: a.store.meta });
const meta: Facsimile.StoredMap<{ views: number }> = a.assign(a.store.meta, {});
a.assign(a.store.tags, { 0: 'first' }, ['x']);
// @ts-expect-error views is a number
a.assign(a.store.meta, { views: 'many' });
// @ts-expect-error meta has no clicks
a.assign(a.store.meta, { clicks: 1 });
// @ts-expect-error a title is a string, in every source
a.assign(a.store, { title: 't' }, { title: 1 });
// @ts-expect-error tags are strings
a.assign(a.store, { tags: [1] });
// @ts-expect-error the tags' elements are strings
a.assign(a.store.tags, { 0: 1 });
// @ts-expect-error the target is an object of the store
a.assign({ views: 1 }, { views: 2 });
const r: string = a.batch(() => 'done');
const bytes: Uint8Array = a.snapshot();
const err = new Error('x') as Facsimile.FacsimileError;
const code: Facsimile.ErrorCode = err.code;
const options: Facsimile.Options = { manualTime: true };
// An observer only reads.
const watcher = new Facsimile<Doc>('w', { observer: true, maxMessage: 1 << 20 });
const watched: string = watcher.store.title;
// A bigint reads as a number within 2^53, as a bigint beyond.
const counter = new Facsimile<{ hits: bigint }>('c');
counter.store = { hits: 5n };
const hits: number | bigint = counter.store.hits;
counter.store.hits = counter.store.hits;
// @ts-expect-error 5n reads as the number 5
const hitsBig: bigint = counter.store.hits;
const same: typeof Facsimile = Facsimile.default;
const also: typeof Facsimile = Facsimile.Facsimile;
const platform: 'node' | 'browser' = Facsimile.platform;
b.store = 3;
b.store = { anything: [1, { deep: null }] };
b.assign(b.store, { anything: 'goes' }, { in: [{ an: 'untyped store' }] });
const incarnation: number = b.incarnation;
const ready: boolean = b.ready;
b.sync();
b._advance(10);
b.close();
// @ts-expect-error a lock is taken on an object of the store
a.lock(1);
// @ts-expect-error no such event
a.on('nope', () => {});
// @ts-expect-error the title is a string
a.store.title = 5;
// A typed store takes plain data (or proxies) where it stores objects, and
// reads them as proxies.
interface Game {
  players: { name: string }[];
  settings: { theme: string };
}
const g = new Facsimile<Game>('g');
g.store = { players: [{ name: 'ada' }], settings: { theme: 'light' } };
const players = g.store.players;
players.push({ name: 'grace' });
players.unshift({ name: 'alan' }, players[0]);
const removed: { name: string }[] = players.splice(1, 1, { name: 'edsger' });
players.fill({ name: 'barbara' }, 0, 1);
players.push(players[1]);
players.sort((x, y) => x.name.localeCompare(y.name));
g.assign(g.store, { settings: { theme: 'dark' } });
const first = players[0];
const playerName: string = first.name;
first.on('name', (target, property, value) => console.log(target, property, value));
g.store.settings.on(() => {}).off(() => {});
const theme: string = g.store.settings.theme;
g.store.settings.theme = 'blue';
// @ts-expect-error a player's name is a string
players.push({ name: 5 });
// @ts-expect-error a player has a name
players.fill({ nick: 'x' });
// A subclass may define the transport as a method; it may be assigned over.
class Peer extends Facsimile<Doc> {
  send(message: Facsimile.Message, to: number | undefined): void {
    b.receive(message, to);
  }
}
const peer = new Peer('p');
peer.send = (message) => b.receive(message);
export { watched, hits, hitsBig, meta, removed, playerName, theme, peer, title, n, plain, locks, r, bytes, code, options, same, also, platform, incarnation, ready };
