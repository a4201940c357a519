//! [`System`] for facsimile, through its public API (`Node`, handles,
//! `set_sender`/`receive`), so the figures are what a user gets.
//!
//! Per-operation path: every edit is one store call; the node hands the
//! message to its sender at once, and the update is that message. A node's
//! very first edit also carries its announcement (and any acknowledgement it
//! owes), so an update may hold several messages: they are framed as `0xFF`
//! followed by length-prefixed messages (a single message is sent as is).
//!
//! Catch-up ([`System::reconnect`]): a node told it is offline
//! (`Node::set_online(false)`, what the relay connection calls when it
//! loses the relay) gathers its writes into packed messages (one per
//! four megabytes of estimated size) and sends them when it is online again.
//! So each side's packed backlog goes to the other, in order, then whatever
//! the receivers answer (acknowledgements, resend requests), back and forth
//! until nobody sends anything.
//!
//! Snapshot: `Node::export_state` (the full replica state a joiner needs),
//! loaded with `Node::from_exported`.

use std::sync::{Arc, Mutex};

use facsimile::{ArrayRef, Config, Input, MapRef, Node, Value as FValue};

use crate::system::{EditTimer, Entries, Exchange, Op, Root, System, Value, Visit};

const FRAMED: u8 = 0xFF;

/// An update: the one message an edit sent, as the node handed it over, or
/// several framed together.
pub enum Update {
    /// The single message, as the node handed it to its sender.
    One(Arc<[u8]>),
    /// `0xFF` and length-prefixed messages.
    Framed(Vec<u8>),
}

impl AsRef<[u8]> for Update {
    fn as_ref(&self) -> &[u8] {
        match self {
            Update::One(msg) => msg,
            Update::Framed(bytes) => bytes,
        }
    }
}

/// A facsimile node and the messages it sent since the last edit.
pub struct Facsimile {
    node: Node,
    outbox: Arc<Mutex<Vec<Arc<[u8]>>>>,
    map: MapRef,
    array: ArrayRef,
    items: MapRef,
    graph: MapRef,
}

impl Facsimile {
    fn wire(node: Node) -> Self {
        let outbox: Arc<Mutex<Vec<Arc<[u8]>>>> = Arc::default();
        let sink = outbox.clone();
        node.set_sender(move |msg| sink.lock().unwrap().push(msg.bytes()));
        let root = node
            .root_map()
            .expect("the benchmark document's root is a map");
        let get_map = |name: &str| {
            root.get(name)
                .and_then(|v| v.as_map().cloned())
                .expect("root map")
        };
        let array = root
            .get(Root::Array.name())
            .and_then(|v| v.as_array().cloned())
            .expect("root array");
        Self {
            map: get_map(Root::Map.name()),
            items: get_map(Root::Items.name()),
            graph: get_map(Root::Graph.name()),
            array,
            node,
            outbox,
        }
    }

    /// Makes `op` with one store call.
    fn local_edit(&self, op: Op<'_>) {
        let result = match op {
            Op::MapSet { key, value } => self.map.set(key, value),
            Op::ArrayPush { value } => self.array.push(value),
            Op::ArrayInsert { index, value } => self.array.insert(index, value),
            Op::ArrayDelete { index } => self.array.remove(index).map(|_| ()),
        };
        result.expect("facsimile: local edit refused");
    }

    fn root_map(&self, root: Root) -> &MapRef {
        match root {
            Root::Map => &self.map,
            Root::Items => &self.items,
            Root::Graph => &self.graph,
            Root::Array => panic!("the root array is not a map"),
        }
    }

    /// Everything sent since the last call, as one update.
    fn take_update(&self) -> Update {
        let mut out = self.outbox.lock().unwrap();
        if out.len() == 1 {
            return Update::One(out.pop().unwrap());
        }
        let mut framed = vec![FRAMED];
        for msg in out.drain(..) {
            let mut len = msg.len();
            while len >= 0x80 {
                framed.push((len as u8) | 0x80);
                len >>= 7;
            }
            framed.push(len as u8);
            framed.extend_from_slice(&msg);
        }
        Update::Framed(framed)
    }
}

impl System for Facsimile {
    const NAME: &'static str = "facsimile";

    fn new(peer: u64) -> Self {
        let node = Node::new(&format!("p{peer:04}"));
        node.set_sender(|_| {});
        let empty = || Input::map(Vec::<(&str, Input)>::new());
        node.set_root(Input::map([
            (Root::Map.name(), empty()),
            (Root::Array.name(), Input::array(Vec::<Input>::new())),
            (Root::Items.name(), empty()),
            (Root::Graph.name(), empty()),
        ]))
        .expect("a fresh node accepts writes");
        let replica = Self::wire(node);
        replica.outbox.lock().unwrap().clear();
        replica
    }

    fn load(peer: u64, snapshot: &[u8]) -> Self {
        let node = Node::from_exported(&format!("p{peer:04}"), Config::default(), snapshot)
            .expect("facsimile: a valid snapshot");
        Self::wire(node)
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.node.export_state()
    }

    type Update = Update;

    fn edit(&mut self, op: Op<'_>, timer: &mut EditTimer) -> Update {
        self.local_edit(op);
        timer.local();
        let update = self.take_update();
        timer.encode();
        update
    }

    fn apply(&mut self, update: &[u8]) {
        if update.first() == Some(&FRAMED) {
            let mut rest = &update[1..];
            while !rest.is_empty() {
                let mut len = 0usize;
                let mut shift = 0;
                loop {
                    let b = rest[0];
                    rest = &rest[1..];
                    len |= usize::from(b & 0x7F) << shift;
                    shift += 7;
                    if b < 0x80 {
                        break;
                    }
                }
                let (msg, tail) = rest.split_at(len);
                self.node.receive(msg).expect("facsimile: message refused");
                rest = tail;
            }
        } else {
            self.node
                .receive(update)
                .expect("facsimile: message refused");
        }
        // What the node sent in answer (acknowledgements) belongs to no
        // edit; a real transport would carry it, the workloads do not need it.
        self.outbox.lock().unwrap().clear();
    }

    fn edit_offline(&mut self, op: Op<'_>) {
        // Told it is offline, as its transport tells it, the node holds its
        // writes and gathers them into packed messages: the backlog sent on
        // reconnection.
        self.node.set_online(false);
        self.local_edit(op);
    }

    fn reconnect(a: &mut Self, b: &mut Self) -> Exchange {
        let mut exchange = Exchange::default();
        a.node.set_online(true);
        b.node.set_online(true);
        loop {
            let from_a = std::mem::take(&mut *a.outbox.lock().unwrap());
            let from_b = std::mem::take(&mut *b.outbox.lock().unwrap());
            if from_a.is_empty() && from_b.is_empty() {
                return exchange;
            }
            for (messages, to) in [(from_a, &*b), (from_b, &*a)] {
                for msg in messages {
                    exchange.add(msg.len());
                    to.node.receive(&msg).expect("facsimile: message refused");
                }
            }
        }
    }

    fn write_map(&mut self, root: Root, entries: Entries) {
        let map = self.root_map(root).clone();
        self.node
            .batch(|| {
                for (key, value) in entries {
                    map.set(&key, input(value))?;
                }
                Ok(())
            })
            .expect("facsimile: bulk write refused");
        self.outbox.lock().unwrap().clear();
    }

    fn walk<V: Visit>(&self, root: Root, visitor: &mut V) {
        if root.is_array() {
            walk_value(&FValue::Array(self.array.clone()), visitor);
        } else {
            walk_value(&FValue::Map(self.root_map(root).clone()), visitor);
        }
    }
}

fn input(value: Value) -> Input {
    match value {
        Value::Int(i) => Input::from(i),
        Value::Str(s) => Input::from(s),
        Value::Map(entries) => Input::map(entries.map(|(k, v)| (k, input(v)))),
        Value::Array(elements) => Input::array(elements.map(input)),
    }
}

fn walk_value<V: Visit>(value: &FValue, visitor: &mut V) {
    match value {
        FValue::Int(i) => visitor.int(*i),
        FValue::String(s) => visitor.str(s),
        FValue::Map(m) => {
            visitor.enter_map();
            for (k, v) in m.entries().expect("a live map") {
                visitor.key(&k);
                walk_value(&v, visitor);
            }
            visitor.leave_map();
        }
        FValue::Array(a) => {
            visitor.enter_array();
            for v in a.to_vec().expect("a live array") {
                walk_value(&v, visitor);
            }
            visitor.leave_array();
        }
        other => visitor.other(other),
    }
}
