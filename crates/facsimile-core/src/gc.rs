//! Reclamation of unreachable objects, tombstones and dead list slots.
//!
//! A *round* records the frontier `G` of one mark (for every peer, the last
//! counter applied) and the objects `U` found unreachable there. It
//! completes when every member has acknowledged a frontier at or above `G`,
//! and is void if an operation referencing `U` was applied meanwhile. A
//! complete round reclaims `U` and purges the tombstones `G` covers and the
//! dead slots it took at the mark. Why nothing can dangle: DESIGN.md, "Reclamation: why no reference dangles".

use rustc_hash::{FxHashMap, FxHashSet};

use crate::clock::Peers;
use crate::graph::list::Taken;
use crate::graph::{Graph, ObjData};
use crate::membership::Membership;
use crate::streams::Streams;
use crate::value::{Id, PeerIdx, Value};
use crate::wire::Tag;

#[derive(Debug, Default)]
pub(crate) struct Gc {
    /// Generation of the latest mark.
    pub(crate) mark: u32,
    /// Latest acknowledged frontier of each member, by peer tag (an
    /// acknowledgement may name peers not heard of here yet).
    acks: FxHashMap<PeerIdx, FxHashMap<u32, u64>>,
    round: Option<Round>,
    /// Something may have become unreachable since the last mark.
    pub(crate) dirty: bool,
    /// A local write created objects it has not attached yet.
    pub(crate) fresh: bool,
    /// Tombstones or dead list slots may have been made since the last
    /// mark, or dead slots wait that the last round did not take. Without
    /// them or `dirty`, a round would find nothing, so none starts: a
    /// document that only grows is never scanned.
    pub(crate) garbage: bool,
    /// The frontier moved since the last acknowledgement.
    changed: bool,
}

#[derive(Debug)]
struct Round {
    frontier: FxHashMap<PeerIdx, u64>,
    candidates: FxHashSet<Id>,
    /// The arrays that had dead slots at the mark, which each took aside,
    /// all of them or those of the leaves that had gathered enough (an
    /// array records its slots as they die).
    dead_slots: Vec<Id>,
    /// Whether tombstones and dead slots may exist (else only unreachable
    /// objects are looked for).
    sweep: bool,
    void: bool,
    /// The sequence number of this replica's latest message at the mark.
    own_seq: u64,
}

/// What a reclamation pass needs to know of the rest of the replica.
pub(crate) struct PassContext<'a> {
    pub(crate) peers: &'a Peers,
    pub(crate) members: &'a Membership,
    /// This replica's frontier now.
    pub(crate) frontier: &'a dyn Fn() -> FxHashMap<PeerIdx, u64>,
    /// Nothing applied waits for a dependency.
    pub(crate) settled: bool,
    /// This replica's latest sequence number, a held message's included.
    pub(crate) own_seq: u64,
    /// Whether the messages this replica sent up to a sequence number are
    /// known to have reached everybody it counts on (over an ordered log:
    /// read back; otherwise always).
    pub(crate) delivered: &'a dyn Fn(u64) -> bool,
}

/// A replica's frontier: for every peer, the last counter applied, its own
/// last counter sent included.
pub(crate) fn frontier(streams: &Streams, sent_lamport: u64) -> FxHashMap<PeerIdx, u64> {
    let mut f: FxHashMap<PeerIdx, u64> = streams.frontier().collect();
    f.insert(PeerIdx::SELF, sent_lamport);
    f
}

impl Gc {
    /// Forgets every round and acknowledgement (a new incarnation). The
    /// mark goes on, so that objects kept keep their meaning; dead slots
    /// that a dropped round took go back to their arrays.
    pub(crate) fn reset(&mut self, graph: &mut Graph) {
        if let Some(round) = self.round.take() {
            give_back(graph, &round);
        }
        *self = Gc {
            mark: self.mark,
            ..Gc::default()
        };
    }

    /// A value was overwritten or removed: what it referenced may be
    /// unreachable now.
    #[inline]
    pub(crate) fn note_detach(&mut self, old: &Value) {
        if matches!(old, Value::Ref(_)) {
            self.dirty = true;
        }
    }

    /// A value was stored: a round that would reclaim what it references is
    /// void.
    #[inline]
    pub(crate) fn note_ref(&mut self, v: &Value) {
        if let (Value::Ref(o), Some(round)) = (v, &mut self.round) {
            if round.candidates.contains(&o.0) {
                round.void = true;
            }
        }
    }

    /// The frontier moved: the next pass acknowledges it.
    pub(crate) fn frontier_moved(&mut self) {
        self.changed = true;
    }

    /// Whether `target` is reachable from the root right now.
    pub(crate) fn reachable_now(graph: &Graph, target: Id) -> bool {
        let mut seen = FxHashSet::default();
        let mut stack = Vec::new();
        if let Value::Ref(o) = &graph.root {
            stack.push(o.0);
        }
        while let Some(id) = stack.pop() {
            if id == target {
                return true;
            }
            if !seen.insert(id) {
                continue;
            }
            if let Some(obj) = graph.get(id) {
                obj.children(|c| stack.push(c));
            }
        }
        false
    }

    /// Marks and settles rounds when there may be something to reclaim.
    /// Returns whether the frontier should be acknowledged now: it moved,
    /// somebody listens, and it speaks for the applied state (while an
    /// operation waits, the frontier overstates it).
    pub(crate) fn pass(&mut self, graph: &mut Graph, cx: &PassContext<'_>) -> bool {
        if self.dirty || self.garbage || self.round.is_some() {
            self.mark_and_settle(graph, cx);
        }
        let ack = self.changed && !cx.members.is_empty() && cx.settled;
        if ack {
            self.changed = false;
        }
        ack
    }

    /// Marks reachable objects, settles the current round, and starts the
    /// next one when there may be something to reclaim.
    fn mark_and_settle(&mut self, graph: &mut Graph, cx: &PassContext<'_>) {
        self.mark = self.mark.wrapping_add(1);
        let mark = self.mark;
        graph.mark_reachable(mark);
        if let Some(round) = self.round.take() {
            if round.void {
                // The next round looks again for what this one would have
                // reclaimed.
                self.dirty = true;
                self.garbage |= round.sweep;
                give_back(graph, &round);
            } else if cx.settled && self.complete(&round, cx) {
                self.reclaim(graph, &round);
            } else {
                self.round = Some(round);
            }
        }
        if self.round.is_none() && (self.dirty || self.garbage) {
            let candidates: FxHashSet<Id> = graph
                .objects
                .iter()
                .filter(|(_, o)| o.mark != mark)
                .map(|(id, _)| id)
                .collect();
            let sweep = self.garbage;
            // A list takes only the leaves that gathered enough dead slots,
            // or none while slots keep dying: the rest wait for a later
            // round.
            let mut waiting = false;
            let dead_slots = match sweep {
                false => Vec::new(),
                true => graph
                    .objects
                    .iter_mut()
                    .filter_map(|(id, o)| match &mut o.data {
                        ObjData::List(l) => match l.take_dead() {
                            Taken::Nothing => None,
                            Taken::All => Some(id),
                            Taken::Some => {
                                waiting = true;
                                Some(id)
                            }
                            Taken::Waiting => {
                                waiting = true;
                                None
                            }
                        },
                        ObjData::Map(_) => None,
                    })
                    .collect(),
            };
            let round = Round {
                frontier: (cx.frontier)(),
                candidates,
                dead_slots,
                void: false,
                sweep,
                own_seq: cx.own_seq,
            };
            self.dirty = false;
            self.garbage = waiting;
            if cx.settled && self.complete(&round, cx) {
                // Alone (or everybody already past this frontier): settle now.
                self.reclaim(graph, &round);
            } else {
                self.round = Some(round);
            }
        }
    }

    /// Whether every member acknowledged the round's frontier, and this
    /// replica's own messages at the mark reached everybody it counts on
    /// (over an ordered log, a peer whose hello precedes them may have
    /// written, naming what they made unreachable, before this replica
    /// heard of it).
    fn complete(&self, round: &Round, cx: &PassContext<'_>) -> bool {
        (cx.delivered)(round.own_seq)
            && cx.members.iter().all(|m| {
                self.acks.get(&m).is_some_and(|ack| {
                    round.frontier.iter().all(|(p, &c)| {
                        *p == m || ack.get(&cx.peers.tag(*p)).copied().unwrap_or(0) >= c
                    })
                })
            })
    }

    fn reclaim(&self, graph: &mut Graph, round: &Round) {
        let mark = self.mark;
        for id in &round.candidates {
            if graph.get(*id).is_some_and(|o| o.mark != mark) {
                graph.objects.remove(id);
            }
        }
        // A tombstone's stamp is its deletion, so `G` covering it means the
        // deletion is in `G`. A dead slot has no such stamp: purge the ones
        // that were dead at the mark.
        let stable = |s: Id| round.frontier.get(&s.peer).is_some_and(|&c| s.counter <= c);
        if round.sweep {
            for obj in graph.objects.values_mut() {
                if let ObjData::Map(m) = &mut obj.data {
                    m.purge_tombstones(stable);
                }
            }
        }
        for id in &round.dead_slots {
            if let Some(ObjData::List(l)) = graph.get_mut(*id).map(|o| &mut o.data) {
                l.purge();
            }
        }
    }

    /// Records a member's acknowledgement of `frontier`.
    pub(crate) fn record_ack(&mut self, sender: PeerIdx, frontier: &[(Tag, u64)]) {
        let ack = self.acks.entry(sender).or_default();
        for &(tag, c) in frontier {
            let e = ack.entry(tag.0).or_insert(0);
            *e = (*e).max(c);
        }
    }

    /// The acknowledgements held, each sorted, for a state transfer.
    pub(crate) fn acks(&self) -> impl Iterator<Item = (PeerIdx, Vec<(Tag, u64)>)> + '_ {
        self.acks.iter().map(|(&m, ack)| (m, sorted_ack(ack)))
    }

    /// Adds transferred acknowledgements to those held.
    pub(crate) fn load_acks(&mut self, acks: Vec<(PeerIdx, Vec<(u32, u64)>)>) {
        for (m, ack) in acks {
            let known = self.acks.entry(m).or_default();
            for (p, c) in ack {
                let e = known.entry(p).or_insert(0);
                *e = (*e).max(c);
            }
        }
    }
}

/// Returns the dead slots a round took to their arrays, for a later round.
fn give_back(graph: &mut Graph, round: &Round) {
    for id in &round.dead_slots {
        if let Some(ObjData::List(l)) = graph.get_mut(*id).map(|o| &mut o.data) {
            l.restore_dead();
        }
    }
}

/// An acknowledgement as transferred: by tag, sorted.
pub(crate) fn sorted_ack(ack: &FxHashMap<u32, u64>) -> Vec<(Tag, u64)> {
    let mut a: Vec<(Tag, u64)> = ack.iter().map(|(&t, &c)| (Tag(t), c)).collect();
    a.sort();
    a
}
