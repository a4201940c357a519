//! Structure-aware: two or three replicas make arbitrary local writes,
//! lock, sync, and receive each other's messages in arbitrary interleavings
//! that keep each sender's order, while mutated copies of real messages and
//! garbage are injected.
//!
//! Checked: nothing panics; a refused message or a refused local write
//! leaves the document as it was and sends nothing; honest messages are
//! accepted; and once everything is delivered, the ready replicas hold the
//! same document, byte for byte, with their invariants intact. A replica
//! that accepted an injected message may legitimately differ (it took the
//! forgery as its peer's word), so a case in which any injected message
//! was accepted checks everything but convergence.

#![no_main]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use facsimile_core::{Config, Input, ObjectId, ObjectKind, PeerId, Replica, Value, WireFormat};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Case {
    three: bool,
    json: [bool; 3],
    actions: Vec<Action>,
}

#[derive(Arbitrary, Debug)]
enum Action {
    Write {
        node: u8,
        write: Write,
    },
    /// Delivers up to `n` messages on the link from `from` to `to`.
    Deliver {
        from: u8,
        to: u8,
        n: u8,
    },
    /// Delivers everything in flight, in a fixed order.
    DeliverAll,
    /// Delivers a mutated copy of a message `from` sent (the original
    /// stays in flight).
    Inject {
        from: u8,
        to: u8,
        index: u8,
        mutation: Mutation,
    },
    Garbage {
        to: u8,
        bytes: Vec<u8>,
    },
    Sync {
        node: u8,
    },
    Tick {
        millis: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum Write {
    SetRoot(Tree),
    MapSet {
        obj: u8,
        key: u8,
        value: Tree,
    },
    MapDelete {
        obj: u8,
        key: u8,
    },
    Splice {
        obj: u8,
        start: u8,
        delete: u8,
        items: Vec<Tree>,
    },
    ListSet {
        obj: u8,
        index: u8,
        value: Tree,
    },
    Fill {
        obj: u8,
        from: u8,
        to: u8,
        value: Scalar,
    },
    Reorder {
        obj: u8,
        seed: u64,
    },
    Lock {
        obj: u8,
        wait: bool,
    },
    Unlock {
        obj: u8,
    },
    /// Several writes as one message.
    Group(Vec<Write>),
}

#[derive(Arbitrary, Debug, Clone)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Tree {
    Scalar(Scalar),
    /// A reference to the `n`-th reachable object.
    Ref(u8),
    Map(Vec<(u8, Tree)>),
    Array(Vec<Tree>),
}

#[derive(Arbitrary, Debug)]
enum Mutation {
    Flip {
        at: u16,
        bit: u8,
    },
    Set {
        at: u16,
        byte: u8,
    },
    Truncate {
        len: u16,
    },
    Insert {
        at: u16,
        bytes: Vec<u8>,
    },
    Remove {
        at: u16,
        len: u8,
    },
    /// Replaces the `index`-th number or string of a JSON message.
    JsonLeaf {
        index: u16,
        leaf: Leaf,
    },
    /// The message again, unchanged.
    Duplicate,
}

#[derive(Arbitrary, Debug)]
enum Leaf {
    U64(u64),
    I64(i64),
    Small(u8),
    Str(String),
    Null,
}

const KEYS: [&str; 5] = ["a", "b", "", "é", "k"];

fn scalar(s: &Scalar) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(*b),
        Scalar::Int(i) => Value::Int(*i),
        Scalar::Float(f) => Value::Float(*f),
        Scalar::Str(s) => Value::Str(s.as_str().into()),
        Scalar::Bytes(b) => Value::Bytes(b.as_slice().into()),
    }
}

fn input(t: &Tree, objects: &[ObjectId], depth: u32) -> Input {
    match t {
        Tree::Scalar(s) => Input::Value(scalar(s)),
        Tree::Ref(n) if !objects.is_empty() => {
            Input::Value(Value::Ref(objects[*n as usize % objects.len()]))
        }
        Tree::Map(entries) if depth < 3 => Input::Map(
            entries
                .iter()
                .take(6)
                .map(|(k, v)| {
                    (
                        KEYS[*k as usize % KEYS.len()].into(),
                        input(v, objects, depth + 1),
                    )
                })
                .collect(),
        ),
        Tree::Array(items) if depth < 3 => Input::Array(
            items
                .iter()
                .take(6)
                .map(|v| input(v, objects, depth + 1))
                .collect(),
        ),
        _ => Input::Value(Value::Null),
    }
}

fn pick(objects: &[ObjectId], n: u8) -> Option<ObjectId> {
    (!objects.is_empty()).then(|| objects[n as usize % objects.len()])
}

/// Runs one local write; errors are allowed, but must change nothing.
fn write(r: &mut Replica, w: &Write) {
    if let Write::Group(ws) = w {
        r.begin();
        for w in ws.iter().take(4) {
            if !matches!(w, Write::Group(_)) {
                write(r, w);
            }
        }
        r.commit();
        return;
    }
    let before = r.snapshot();
    let idle = !r.has_transmits();
    if attempt(r, w).is_err() {
        assert!(
            r.snapshot() == before,
            "a refused write changed the document"
        );
        assert!(
            !idle || !r.has_transmits(),
            "a refused write sent something"
        );
    }
}

fn attempt(r: &mut Replica, w: &Write) -> Result<(), facsimile_core::Error> {
    let objects = r.reachable_objects();
    match w {
        Write::SetRoot(t) => r.set_root(input(t, &objects, 0)).map(drop),
        Write::MapSet { obj, key, value } => match pick(&objects, *obj) {
            Some(o) => r
                .map_set(
                    o,
                    KEYS[*key as usize % KEYS.len()],
                    input(value, &objects, 0),
                )
                .map(drop),
            None => Ok(()),
        },
        Write::MapDelete { obj, key } => match pick(&objects, *obj) {
            Some(o) => r.map_delete(o, KEYS[*key as usize % KEYS.len()]).map(drop),
            None => Ok(()),
        },
        Write::Splice {
            obj,
            start,
            delete,
            items,
        } => match pick(&objects, *obj) {
            Some(o) => {
                let len = r.list_len(o).unwrap_or(0);
                let items = items
                    .iter()
                    .take(6)
                    .map(|t| input(t, &objects, 0))
                    .collect::<Vec<_>>();
                r.list_splice(o, *start as usize % (len + 2), *delete as usize, items)
                    .map(drop)
            }
            None => Ok(()),
        },
        Write::ListSet { obj, index, value } => match pick(&objects, *obj) {
            Some(o) => {
                let len = r.list_len(o).unwrap_or(0);
                r.list_set(o, *index as usize % (len + 3), input(value, &objects, 0))
                    .map(drop)
            }
            None => Ok(()),
        },
        Write::Fill {
            obj,
            from,
            to,
            value,
        } => match pick(&objects, *obj) {
            Some(o) => {
                let writes = (*from as usize..*to as usize)
                    .take(16)
                    .map(|i| (i, Input::Value(scalar(value))))
                    .collect();
                r.list_set_many(o, writes).map(drop)
            }
            None => Ok(()),
        },
        Write::Reorder { obj, seed } => match pick(&objects, *obj) {
            Some(o) if r.kind(o) == Some(ObjectKind::Array) => {
                let len = r.list_len(o).unwrap_or(0);
                let mut order: Vec<usize> = (0..len).collect();
                let mut x = *seed | 1;
                for k in (1..len).rev() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    order.swap(k, (x % (k as u64 + 1)) as usize);
                }
                r.list_reorder(o, &order).map(drop)
            }
            _ => Ok(()),
        },
        Write::Lock { obj, wait } => match pick(&objects, *obj) {
            Some(o) => r.lock(o, *wait).map(drop),
            None => Ok(()),
        },
        Write::Unlock { obj } => match pick(&objects, *obj) {
            Some(o) => r.unlock(o),
            None => Ok(()),
        },
        Write::Group(_) => Ok(()),
    }
}

fn mutate(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let at = |x: u16, n: usize| x as usize % n.max(1);
    match m {
        Mutation::Flip { at: x, bit } if !b.is_empty() => {
            let i = at(*x, b.len());
            b[i] ^= 1 << (bit % 8);
        }
        Mutation::Set { at: x, byte } if !b.is_empty() => {
            let i = at(*x, b.len());
            b[i] = *byte;
        }
        Mutation::Truncate { len } => b.truncate(*len as usize % (b.len() + 1)),
        Mutation::Insert { at: x, bytes } => {
            let i = at(*x, b.len() + 1);
            b.splice(i..i, bytes.iter().copied().take(16));
        }
        Mutation::Remove { at: x, len } if !b.is_empty() => {
            let i = at(*x, b.len());
            let end = (i + *len as usize).min(b.len());
            b.drain(i..end);
        }
        Mutation::JsonLeaf { index, leaf } => {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&b) {
                let mut n = *index as usize;
                replace_leaf(&mut v, &mut n, leaf);
                b = serde_json::to_vec(&v).expect("serializable");
            }
        }
        _ => {}
    }
    b
}

fn replace_leaf(v: &mut serde_json::Value, n: &mut usize, leaf: &Leaf) -> bool {
    use serde_json::Value as J;
    match v {
        J::Number(_) | J::String(_) => {
            if *n == 0 {
                *v = match leaf {
                    Leaf::U64(x) => J::from(*x),
                    Leaf::I64(x) => J::from(*x),
                    Leaf::Small(x) => J::from(*x),
                    Leaf::Str(s) => J::from(s.as_str()),
                    Leaf::Null => J::Null,
                };
                return true;
            }
            *n -= 1;
            false
        }
        J::Array(items) => items.iter_mut().any(|x| replace_leaf(x, n, leaf)),
        J::Object(map) => map.values_mut().any(|x| replace_leaf(x, n, leaf)),
        _ => false,
    }
}

struct World {
    nodes: Vec<Replica>,
    /// `links[from][to]`: messages in flight, in send order.
    links: Vec<Vec<VecDeque<Arc<[u8]>>>>,
    /// Everything each node sent, for injection.
    sent: Vec<Vec<Arc<[u8]>>>,
    now: Duration,
    /// An injected message was accepted somewhere.
    tainted: bool,
}

impl World {
    fn new(case: &Case) -> Self {
        let n = if case.three { 3 } else { 2 };
        let nodes: Vec<Replica> = (0..n)
            .map(|i| {
                let format = if case.json[i] {
                    WireFormat::Json
                } else {
                    WireFormat::Binary
                };
                Replica::new(
                    PeerId::new(format!("r{i}"), 0x100 + i as u32),
                    Config::default().wire_format(format),
                )
            })
            .collect();
        let mut w = World {
            links: (0..n)
                .map(|_| (0..n).map(|_| VecDeque::new()).collect())
                .collect(),
            sent: vec![Vec::new(); n],
            nodes,
            now: Duration::ZERO,
            tainted: false,
        };
        for i in 0..n {
            w.collect(i);
        }
        // Replicas started independently hear each other's announcements
        // before anything else: reclamation assumes every peer that could
        // hold part of the document is known (see the core's `gc` module);
        // one that believes it is alone reclaims what an unheard-of peer may
        // still reference.
        w.deliver_all();
        w
    }

    fn collect(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            for j in 0..self.nodes.len() {
                let tag = self.nodes[j].peer_id().incarnation();
                if j != i && t.to.is_none_or(|to| to == tag) {
                    self.links[i][j].push_back(t.bytes.clone());
                }
            }
            self.sent[i].push(t.bytes);
        }
        while self.nodes[i].poll_event().is_some() {}
    }

    fn deliver(&mut self, from: usize, to: usize) -> bool {
        let Some(bytes) = self.links[from][to].pop_front() else {
            return false;
        };
        let result = self.nodes[to].handle_message(&bytes);
        if let Err(e) = result {
            assert!(
                self.tainted,
                "node {to} refused an honest message from {from}: {e}\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        self.collect(to);
        true
    }

    fn deliver_all(&mut self) {
        let n = self.nodes.len();
        loop {
            let mut any = false;
            for from in 0..n {
                for to in 0..n {
                    while self.deliver(from, to) {
                        any = true;
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    fn hostile(&mut self, to: usize, bytes: &[u8]) {
        let r = &mut self.nodes[to];
        let before = r.snapshot();
        match r.handle_message(bytes) {
            Err(_) => {
                assert!(
                    r.snapshot() == before,
                    "a refused message changed the document"
                );
                assert!(
                    !r.has_transmits(),
                    "a refused message made the replica send"
                );
            }
            Ok(()) => self.tainted = true,
        }
        self.collect(to);
    }

    fn tick(&mut self, d: Duration) {
        self.now += d;
        for i in 0..self.nodes.len() {
            self.nodes[i].handle_timeout(self.now);
            self.collect(i);
        }
    }
}

fuzz_target!(|case: Case| {
    let mut w = World::new(&case);
    let n = w.nodes.len();
    let node = |x: u8| x as usize % n;
    for action in case.actions.iter().take(64) {
        match action {
            Action::Write { node: i, write: wr } => {
                let i = node(*i);
                let r = &mut w.nodes[i];
                write(r, wr);
                r.check_invariants();
                w.collect(i);
            }
            Action::Deliver { from, to, n: k } => {
                for _ in 0..*k {
                    if !w.deliver(node(*from), node(*to)) {
                        break;
                    }
                }
            }
            Action::DeliverAll => w.deliver_all(),
            Action::Inject {
                from,
                to,
                index,
                mutation,
            } => {
                let (from, to) = (node(*from), node(*to));
                let sent = &w.sent[from];
                if sent.is_empty() || from == to {
                    continue;
                }
                let original = sent[*index as usize % sent.len()].clone();
                let bytes = mutate(&original, mutation);
                w.hostile(to, &bytes);
            }
            Action::Garbage { to, bytes } => w.hostile(node(*to), bytes),
            Action::Sync { node: i } => {
                let i = node(*i);
                w.nodes[i].sync();
                w.collect(i);
            }
            Action::Tick { millis } => w.tick(Duration::from_millis(u64::from(*millis))),
        }
    }
    // Everything in flight arrives; time passes so that syncs that chose a
    // replica that was itself syncing move on, and acknowledgements flow.
    for _ in 0..12 {
        w.deliver_all();
        w.tick(Duration::from_secs(6));
    }
    w.deliver_all();
    let mut first: Option<(usize, Vec<u8>)> = None;
    for i in 0..n {
        let r = &mut w.nodes[i];
        r.check_invariants();
        if w.tainted || !r.is_ready() {
            continue;
        }
        let snap = r.snapshot();
        match &first {
            None => first = Some((i, snap)),
            Some((j, s)) => assert!(
                *s == snap,
                "replicas {j} and {i} diverged\n{j}: {}\n{i}: {}",
                w.nodes[*j].debug_dump(),
                w.nodes[i].debug_dump()
            ),
        }
    }
});
