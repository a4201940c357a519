//! Reclamation of unreachable objects, tombstones and dead list slots.
//!
//! A replica periodically marks what is reachable from the root and, when it
//! has peers, broadcasts an acknowledgement of its *frontier* (for every peer,
//! the last counter it has applied). A *round* records the frontier `G` of
//! one mark and the objects `U` found unreachable there. The round completes
//! when every member has acknowledged a frontier at or above `G`; it is void
//! if, meanwhile, any operation referencing an object of `U` was applied.
//! A complete round reclaims `U`, and purges tombstones and dead slots whose
//! stamps `G` covers.
//!
//! Why nothing can dangle: a message that can still arrive after completion
//! was sent by a peer *after* it acknowledged `G` (anything sent before the
//! acknowledgement arrived before it, in that peer's order). Such a sender's
//! state contains `G`; it names existing objects only if they are reachable
//! in its state, or were reachable at its latest mark (the local reference
//! rule, see `Replica::check_ref`). An object of `U` could be reachable there
//! only through an operation outside `G` that references `U`; the earliest
//! such operation was sent before its sender acknowledged `G`, so it arrived
//! here before completion and voided the round. Last-writer-wins registers
//! never bring back an older value and deletions are permanent, so nothing
//! else can make `U` reachable again. The same argument covers tombstones and
//! dead slots: only operations concurrent with `G` can name them, and those
//! all arrive before completion. An operation that arrived but waits for a
//! dependency has not taken effect yet, so no round completes while one
//! waits.
//!
//! Members are the peers that announced themselves and did not leave, plus
//! peers named by other members' acknowledgements (a peer that served a
//! snapshot names the joiner, so a joiner unknown here is still waited for),
//! plus any sender heard from before its announcement. The argument needs
//! every peer that could hold part of the document to be among them: a
//! replica that joins an existing document learns the membership with the
//! snapshot (`sync`); replicas started independently must exchange their
//! first messages before they reclaim.

use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};
use smol_str::SmolStr;

use crate::graph::{Graph, ObjData};
use crate::replica::Replica;
use crate::value::{Id, PeerId, PeerIdx, Value};
use crate::wire::{Body, Tag};

#[derive(Debug, Default)]
pub(crate) struct Gc {
    /// Generation of the latest mark.
    pub(crate) mark: u32,
    pub(crate) members: FxHashSet<PeerIdx>,
    /// Peers that said goodbye; never members again.
    pub(crate) departed: FxHashSet<PeerIdx>,
    /// Latest acknowledged frontier of each member, by peer tag (an
    /// acknowledgement may name peers not heard of here yet).
    pub(crate) acks: FxHashMap<PeerIdx, FxHashMap<u32, u64>>,
    round: Option<Round>,
    /// Something may have become unreachable since the last mark.
    pub(crate) dirty: bool,
    /// A local write created objects it has not attached yet.
    pub(crate) fresh: bool,
    /// Tombstones or dead list slots may have been made since the last
    /// mark. Without them or `dirty`, a round would find nothing, so none
    /// starts: a document that only grows is never scanned.
    pub(crate) garbage: bool,
    /// The frontier moved since the last acknowledgement.
    pub(crate) changed: bool,
    pub(crate) next_pass: Option<Duration>,
}

#[derive(Debug)]
struct Round {
    frontier: FxHashMap<PeerIdx, u64>,
    candidates: FxHashSet<Id>,
    /// Per array, the slots that were dead at the mark.
    dead_slots: Vec<(Id, Vec<Id>)>,
    /// Whether tombstones and dead slots may exist (else only unreachable
    /// objects are looked for).
    sweep: bool,
    void: bool,
    /// Over an ordered log: the sequence number of this replica's latest
    /// message at the mark.
    own_seq: u64,
}

impl Gc {
    pub(crate) fn note_detach(&mut self, old: &Value) {
        if matches!(old, Value::Ref(_)) {
            self.dirty = true;
        }
    }

    pub(crate) fn note_ref(&mut self, v: &Value) {
        if let (Value::Ref(o), Some(round)) = (v, &mut self.round) {
            if round.candidates.contains(&o.0) {
                round.void = true;
            }
        }
    }

    /// Whether `target` is reachable from the root right now.
    pub(crate) fn reachable_now(&self, graph: &Graph, target: Id) -> bool {
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

    fn complete(&self, round: &Round, peers: &crate::clock::Peers) -> bool {
        self.members.iter().all(|m| {
            self.acks.get(m).is_some_and(|ack| {
                round
                    .frontier
                    .iter()
                    .all(|(p, &c)| p == m || ack.get(&peers.tag(*p)).copied().unwrap_or(0) >= c)
            })
        })
    }
}

impl Replica {
    /// This replica's frontier: for every peer, the last counter applied.
    pub(crate) fn frontier(&self) -> FxHashMap<PeerIdx, u64> {
        let mut f: FxHashMap<PeerIdx, u64> = self
            .streams
            .values()
            .filter_map(|s| s.peer.map(|p| (p, s.lamport)))
            .filter(|&(_, c)| c > 0)
            .collect();
        f.insert(PeerIdx::SELF, self.sent_lamport);
        f
    }

    /// Marks and settles rounds when there may be something to reclaim, and
    /// acknowledges the frontier to the members.
    pub(crate) fn gc_pass(&mut self) {
        // A parked operation arrived during the round but has not taken
        // effect; it may name what the round would reclaim, so wait for it.
        // A sender whose messages are held behind a gap before its hello
        // is a peer not yet counted as a member; it must not be skipped.
        let unknown_sender = self.streams.values().any(|s| s.peer.is_none());
        let settled = self.pending_count == 0 && !unknown_sender;
        if self.gc.dirty || self.gc.garbage || self.gc.round.is_some() {
            self.mark_and_settle(settled);
        }
        // An acknowledgement speaks for the applied state: while an
        // operation waits, the frontier overstates it.
        if self.gc.changed && !self.gc.members.is_empty() && settled {
            self.send_ack();
            self.gc.changed = false;
        }
    }

    /// Marks reachable objects, settles the current round, and starts the
    /// next one when there may be something to reclaim.
    fn mark_and_settle(&mut self, settled: bool) {
        self.gc.mark = self.gc.mark.wrapping_add(1);
        let mark = self.gc.mark;
        self.graph.mark_reachable(mark);
        if let Some(round) = self.gc.round.take() {
            if round.void {
                // The next round looks again for what this one would have
                // reclaimed.
                self.gc.dirty = true;
                self.gc.garbage |= round.sweep;
            } else if settled && self.round_complete(&round) {
                self.reclaim(&round);
            } else {
                self.gc.round = Some(round);
            }
        }
        if self.gc.round.is_none() && (self.gc.dirty || self.gc.garbage) {
            let candidates: FxHashSet<Id> = self
                .graph
                .objects
                .iter()
                .filter(|(_, o)| o.mark != mark)
                .map(|(&id, _)| id)
                .collect();
            let sweep = self.gc.garbage;
            let dead_slots = match sweep {
                false => Vec::new(),
                true => self
                    .graph
                    .objects
                    .iter()
                    .filter_map(|(&id, o)| match &o.data {
                        ObjData::List(l) => {
                            let dead = l.dead_slots();
                            (!dead.is_empty()).then_some((id, dead))
                        }
                        ObjData::Map(_) => None,
                    })
                    .collect(),
            };
            let round = Round {
                frontier: self.frontier(),
                candidates,
                dead_slots,
                void: false,
                sweep,
                own_seq: self.out.seq,
            };
            self.gc.dirty = false;
            self.gc.garbage = false;
            if settled && self.round_complete(&round) {
                // Alone (or everybody already past this frontier): settle now.
                self.reclaim(&round);
            } else {
                self.gc.round = Some(round);
            }
        }
    }

    /// Whether every member acknowledged the round's frontier. Over an
    /// ordered log, also whether this replica has read back every message it
    /// had sent at the mark: the membership it counts on is that of the log
    /// prefix it has read, and a peer whose hello precedes this replica's
    /// messages in the log may have written after reading them, naming
    /// what they made unreachable, before this replica heard of it.
    fn round_complete(&self, round: &Round) -> bool {
        (!self.is_ordered() || self.log.echoed >= round.own_seq)
            && self.gc.complete(round, &self.peers)
    }

    fn reclaim(&mut self, round: &Round) {
        let mark = self.gc.mark;
        for id in &round.candidates {
            if self.graph.get(*id).is_some_and(|o| o.mark != mark) {
                self.graph.objects.remove(id);
            }
        }
        // A tombstone's stamp is its deletion, so `G` covering it means the
        // deletion is in `G`. A dead slot has no such stamp: purge the ones
        // that were dead at the mark.
        let stable = |s: Id| round.frontier.get(&s.peer).is_some_and(|&c| s.counter <= c);
        if round.sweep {
            for obj in self.graph.objects.values_mut() {
                if let ObjData::Map(m) = &mut obj.data {
                    m.purge_tombstones(stable);
                }
            }
        }
        for (id, slots) in &round.dead_slots {
            if let Some(ObjData::List(l)) = self.graph.get_mut(*id).map(|o| &mut o.data) {
                l.purge(slots);
            }
        }
    }

    fn send_ack(&mut self) {
        let frontier: Vec<(Tag, u64)> = self
            .frontier()
            .into_iter()
            .map(|(p, c)| (Tag(self.peers.tag(p)), c))
            .collect();
        // The full list every time: a member that arrived later must learn
        // of every peer it has to wait for.
        let members: Vec<(Tag, SmolStr)> = self
            .gc
            .members
            .iter()
            .map(|&m| {
                let p = self.peers.get(m);
                (Tag(p.incarnation()), SmolStr::from(p.hostname()))
            })
            .collect();
        self.send_sequenced(|seq| Body::GcAck {
            seq,
            frontier,
            members,
        });
    }

    /// Records a member's acknowledgement.
    pub(crate) fn handle_ack(
        &mut self,
        sender: PeerIdx,
        frontier: Vec<(Tag, u64)>,
        members: Vec<(Tag, SmolStr)>,
    ) {
        let ack = self.gc.acks.entry(sender).or_default();
        for (tag, c) in frontier {
            let e = ack.entry(tag.0).or_insert(0);
            *e = (*e).max(c);
        }
        for (tag, hostname) in members {
            if tag.0 == self.me.incarnation() {
                continue;
            }
            if let Ok(p) = self.peers.intern(&PeerId::new(hostname.as_str(), tag.0)) {
                if !self.gc.departed.contains(&p) {
                    self.gc.members.insert(p);
                }
            }
        }
    }
}
