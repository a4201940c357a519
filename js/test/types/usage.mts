// Type-checked use of the package from an ES module (not run).
import Facsimile, { Facsimile as Named } from 'facsimile';

const a: Facsimile = new Facsimile('a');
const b = new Named('b');
a.send = (...m) => b.receive(...m);
b.send = (m: Facsimile.Message, to: number | undefined) => a.receive(m, to);
a.store = { list: [1, 2] };
a.store.list.sort((x: number, y: number) => x - y);
const s: string = JSON.stringify(b.store);
export { s };
