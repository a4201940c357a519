//! The canonical encoding of a document: root and reachable objects in
//! depth-first order, visible content only, peers sorted by identity. Two
//! replicas that applied the same messages encode identically, byte for
//! byte, whatever their peer tables look like.

use rustc_hash::FxHashMap;

use super::{Graph, ObjData};
use crate::clock::Peers;
use crate::value::{Id, PeerIdx, Value};
use crate::wire::{CanonObj, Canonical, Hostname, Tag, WireId, WireValue};

impl Graph {
    pub(crate) fn canonical(&mut self, peers: &Peers) -> Canonical {
        self.sort_maps();
        let order = self.reachable();
        // Peers appearing in the content, sorted, so indices do not depend on
        // this replica's table.
        let mut used: Vec<PeerIdx> = Vec::new();
        let mut note = |id: Id| used.push(id.peer);
        if self.root_stamp.counter > 0 {
            note(self.root_stamp);
        }
        for &id in &order {
            note(id);
            match &self.objects[&id].data {
                ObjData::Map(m) => {
                    for (_, e) in m.raw_entries() {
                        if e.value.is_some() {
                            note(e.stamp);
                        }
                    }
                }
                ObjData::List(l) => {
                    for (e, _, stamp) in l.elements() {
                        note(e);
                        note(stamp);
                    }
                }
            }
        }
        used.sort_by(|&a, &b| peers.cmp_peer(a, b));
        used.dedup();
        let index: FxHashMap<PeerIdx, u32> = used
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, i as u32))
            .collect();
        let id = |id: Id| WireId {
            p: index[&id.peer],
            c: id.counter,
        };
        let value = |v: &Value| WireValue::from_value(v, id);
        let objects = order
            .iter()
            .map(|&oid| match &self.objects[&oid].data {
                ObjData::Map(m) => CanonObj::Map {
                    id: id(oid),
                    entries: m
                        .raw_entries()
                        .filter_map(|(k, e)| {
                            e.value.as_ref().map(|v| (k.clone(), value(v), id(e.stamp)))
                        })
                        .collect(),
                },
                ObjData::List(l) => CanonObj::List {
                    id: id(oid),
                    elems: l
                        .elements()
                        .map(|(e, v, s)| (id(e), value(&v), id(s)))
                        .collect(),
                },
            })
            .collect();
        Canonical {
            peers: used
                .iter()
                .map(|&p| {
                    let peer = peers.get(p);
                    (Tag(peer.incarnation()), Hostname::of(peer))
                })
                .collect(),
            root: value(&self.root),
            root_stamp: (self.root_stamp.counter > 0).then(|| id(self.root_stamp)),
            objects,
        }
    }
}
