//! What the structure-aware targets share: arbitrary local writes on a
//! replica (refused ones must change nothing) and mutations of real
//! messages.

use arbitrary::Arbitrary;
use facsimile_core::{Input, ObjectId, ObjectKind, Replica, Value};

#[derive(Arbitrary, Debug)]
pub(crate) enum Write {
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
    /// The transport is lost (`true`) or back: writes are held, then sent
    /// packed.
    Offline(bool),
}

#[derive(Arbitrary, Debug, Clone)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
pub(crate) enum Tree {
    Scalar(Scalar),
    /// A reference to the `n`-th reachable object.
    Ref(u8),
    Map(Vec<(u8, Tree)>),
    Array(Vec<Tree>),
}

#[derive(Arbitrary, Debug)]
pub(crate) enum Mutation {
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
pub(crate) enum Leaf {
    U64(u64),
    I64(i64),
    Small(u8),
    Str(String),
    Null,
}

pub(crate) const KEYS: [&str; 5] = ["a", "b", "", "é", "k"];

pub(crate) fn scalar(s: &Scalar) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(*b),
        Scalar::Int(i) => Value::Int(*i),
        Scalar::Float(f) => Value::Float(*f),
        Scalar::Str(s) => Value::Str(s.as_str().into()),
        Scalar::Bytes(b) => Value::Bytes(b.as_slice().into()),
    }
}

pub(crate) fn input(t: &Tree, objects: &[ObjectId], depth: u32) -> Input {
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

pub(crate) fn pick(objects: &[ObjectId], n: u8) -> Option<ObjectId> {
    (!objects.is_empty()).then(|| objects[n as usize % objects.len()])
}

/// Runs one local write; errors are allowed, but must change nothing.
pub(crate) fn write(r: &mut Replica, w: &Write) {
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

pub(crate) fn attempt(r: &mut Replica, w: &Write) -> Result<(), facsimile_core::Error> {
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
        Write::Offline(offline) => {
            r.set_online(!offline);
            Ok(())
        }
    }
}

pub(crate) fn mutate(bytes: &[u8], m: &Mutation) -> Vec<u8> {
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

pub(crate) fn replace_leaf(v: &mut serde_json::Value, n: &mut usize, leaf: &Leaf) -> bool {
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

/// Checks every replica's invariants and, unless a forgery was accepted
/// somewhere, that the ready ones hold the same document byte for byte.
pub(crate) fn converged(nodes: &mut [Replica], tainted: bool) {
    let mut first: Option<(usize, Vec<u8>)> = None;
    for i in 0..nodes.len() {
        nodes[i].check_invariants();
        if tainted || !nodes[i].is_ready() {
            continue;
        }
        let snap = nodes[i].snapshot();
        match &first {
            None => first = Some((i, snap)),
            Some((j, s)) => assert!(
                *s == snap,
                "replicas {j} and {i} diverged\n{j}: {}\n{i}: {}",
                nodes[*j].debug_dump(),
                nodes[i].debug_dump()
            ),
        }
    }
}
