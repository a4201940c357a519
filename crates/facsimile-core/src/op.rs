//! Operations received from peers, validated and translated to local ids.
//!
//! A message is translated whole before anything is applied, so a refused
//! message changes nothing ([`translate`] reads the replica's state and
//! writes none of it). Applying is the document's (`doc`) and the locks'.

use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::clock::Peers;
use crate::error::ReceiveError;
use crate::streams::Stream;
use crate::value::{Id, PeerId, PeerIdx, Value};
use crate::wire::{Ops, Tag, WireId, WireOp, WireOrigin, WireValue};

/// Largest counter accepted; keeps counter arithmetic far from overflow.
pub(crate) const MAX_COUNTER: u64 = 1 << 62;

/// An operation in local terms.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    NewMap {
        id: Id,
        entries: Vec<(SmolStr, Value)>,
    },
    NewArray {
        id: Id,
        values: Vec<Value>,
    },
    Root {
        value: Value,
        stamp: Id,
    },
    MapWrite {
        obj: Id,
        key: SmolStr,
        value: Option<Value>,
        stamp: Id,
    },
    ListInsert {
        obj: Id,
        origin: Option<Id>,
        first: Id,
        /// Inline when one (a push, a typed character).
        values: SmallVec<[Value; 1]>,
    },
    ListDelete {
        obj: Id,
        start: Id,
        len: u32,
    },
    ListSet {
        obj: Id,
        elem: Id,
        value: Value,
        stamp: Id,
    },
    ListMove {
        obj: Id,
        elem: Id,
        origin: Option<Id>,
        slot: Id,
    },
    Lock {
        obj: Id,
        stamp: Id,
        wait: bool,
    },
    Unlock {
        obj: Id,
        req: Id,
        token: u64,
    },
    LockAck {
        obj: Id,
        req: Id,
        held: Option<(Id, u64)>,
        members: Vec<PeerId>,
    },
    Evict {
        peer: PeerId,
    },
}

impl Op {
    /// The ids this operation creates: the first and how many.
    pub(crate) fn creates(&self) -> Option<(Id, u64)> {
        match self {
            Op::NewMap { id, .. } => Some((*id, 1)),
            Op::NewArray { id, values } => Some((*id, 1 + values.len() as u64)),
            Op::ListInsert { first, values, .. } => Some((*first, values.len() as u64)),
            Op::ListMove { slot, .. } => Some((*slot, 1)),
            _ => None,
        }
    }

    /// The object a document write changes.
    pub(crate) fn target(&self) -> Option<Id> {
        match self {
            Op::MapWrite { obj, .. }
            | Op::ListInsert { obj, .. }
            | Op::ListDelete { obj, .. }
            | Op::ListSet { obj, .. }
            | Op::ListMove { obj, .. } => Some(*obj),
            _ => None,
        }
    }
}

/// The last counter of a message whose operations take `total` counters
/// from `first` on (a message of deletes only still takes `first`).
pub(crate) fn last_counter(first: u64, total: u64) -> u64 {
    first + total.saturating_sub(1)
}

/// The first and last counters of an operations message that moves its
/// sender's counter by `tick` from `stream`'s, checked against overflow.
pub(crate) fn counters(
    from: Tag,
    stream: &Stream,
    tick: u64,
    ops: &[WireOp],
) -> Result<(u64, u64), ReceiveError> {
    if tick == 0 {
        return Err(ReceiveError::invalid(
            from.0,
            format!("counter does not follow {}", stream.lamport),
        ));
    }
    let first = stream.lamport.saturating_add(tick);
    let total: u64 = ops.iter().map(WireOp::counters).sum();
    if first > MAX_COUNTER || first.saturating_add(total) > MAX_COUNTER {
        return Err(ReceiveError::invalid(from.0, "counters overflow"));
    }
    Ok((first, last_counter(first, total)))
}

/// A message translated to local terms, ready to commit.
pub(crate) struct Translated {
    /// Peers the message introduced that this replica did not know: they
    /// take the next indices of the peer table, in this order.
    pub(crate) new_peers: Vec<PeerId>,
    /// The sender's dictionary entries the message added.
    pub(crate) intros: Vec<PeerIdx>,
    /// The message's last counter.
    pub(crate) last: u64,
}

/// Validates an operations message of `sender` (on the stream of `from`)
/// and translates its operations into `ops`, touching no state.
pub(crate) fn translate(
    from: Tag,
    sender: PeerIdx,
    stream: &Stream,
    peers: &Peers,
    tick: u64,
    wire_ops: Ops,
    ops: &mut Vec<Op>,
) -> Result<Translated, ReceiveError> {
    let (first, last) = counters(from, stream, tick, &wire_ops)?;
    let mut t = Translator {
        from: from.0,
        sender,
        dict: &stream.dict,
        intros: Vec::new(),
    };
    let mut new_peers: Vec<PeerId> = Vec::new();
    let mut here = first;
    for w in wire_ops {
        let stamp = Id::new(sender, here);
        // What this op names must exist before it: ids below its own.
        let at = t.at(here);
        here += w.counters();
        let op = match w {
            WireOp::Intro {
                tag: ptag,
                hostname,
            } => {
                let id = hostname.peer(ptag);
                let idx = match peers.by_tag(ptag.0) {
                    Some(idx) if *peers.get(idx) == id => idx,
                    Some(_) => return Err(ReceiveError::TagCollision(ptag.0)),
                    None => {
                        // Interned on commit; the index is reserved now.
                        if let Some(pos) = new_peers.iter().position(|p| *p == id) {
                            PeerIdx((peers.len() + pos) as u32)
                        } else if new_peers.iter().any(|p| p.incarnation() == ptag.0) {
                            return Err(ReceiveError::TagCollision(ptag.0));
                        } else {
                            new_peers.push(id);
                            PeerIdx((peers.len() + new_peers.len() - 1) as u32)
                        }
                    }
                };
                t.intros.push(idx);
                continue;
            }
            WireOp::NewMap { entries } => Op::NewMap {
                id: stamp,
                entries: entries
                    .into_iter()
                    .map(|(k, v)| Ok((k, at.value(v)?)))
                    .collect::<Result<_, ReceiveError>>()?,
            },
            WireOp::NewArray { values } => Op::NewArray {
                id: stamp,
                values: values
                    .into_iter()
                    .map(|v| at.value(v))
                    .collect::<Result<_, ReceiveError>>()?,
            },
            WireOp::Root { value } => Op::Root {
                value: at.value(value)?,
                stamp,
            },
            WireOp::MapSet { obj, key, value } => Op::MapWrite {
                obj: at.id(obj)?,
                key,
                value: Some(at.value(value)?),
                stamp,
            },
            WireOp::MapDelete { obj, key } => Op::MapWrite {
                obj: at.id(obj)?,
                key,
                value: None,
                stamp,
            },
            WireOp::Append { obj, value } => Op::ListInsert {
                obj: at.id(obj)?,
                origin: Some(at.back(1)?),
                first: stamp,
                values: smallvec::smallvec![at.value(value)?],
            },
            WireOp::ListInsert {
                obj,
                origin,
                values,
            } => {
                if values.is_empty() {
                    return Err(ReceiveError::invalid(from.0, "empty insert"));
                }
                Op::ListInsert {
                    obj: at.id(obj)?,
                    origin: match origin {
                        WireOrigin::Head => None,
                        WireOrigin::Back(d) => Some(at.back(d)?),
                        WireOrigin::Id(o) => Some(at.id(o)?),
                    },
                    first: stamp,
                    values: values
                        .into_iter()
                        .map(|v| at.value(v))
                        .collect::<Result<_, ReceiveError>>()?,
                }
            }
            WireOp::ListDelete { obj, runs } => {
                let obj = at.id(obj)?;
                for (start, len) in runs {
                    let start = at.id(start)?;
                    let end = start.counter.saturating_add(u64::from(len));
                    if len == 0
                        || end > MAX_COUNTER
                        || (start.peer == sender && end > stamp.counter)
                    {
                        return Err(ReceiveError::invalid(from.0, "bad delete run"));
                    }
                    ops.push(Op::ListDelete { obj, start, len });
                }
                continue;
            }
            WireOp::ListSet { obj, elem, value } => Op::ListSet {
                obj: at.id(obj)?,
                elem: at.id(elem)?,
                value: at.value(value)?,
                stamp,
            },
            WireOp::ListMove { obj, elem, origin } => Op::ListMove {
                obj: at.id(obj)?,
                elem: at.id(elem)?,
                origin: origin.map(|o| at.id(o)).transpose()?,
                slot: stamp,
            },
            WireOp::Lock { obj } => Op::Lock {
                obj: at.id(obj)?,
                stamp,
                wait: true,
            },
            WireOp::TryLock { obj } => Op::Lock {
                obj: at.id(obj)?,
                stamp,
                wait: false,
            },
            WireOp::Unlock { obj, req, token } => {
                let token = at.token(token)?;
                Op::Unlock {
                    obj: at.id(obj)?,
                    req: at.id(req)?,
                    token,
                }
            }
            WireOp::LockAck {
                obj,
                req,
                held,
                members,
            } => {
                let (obj, req) = (at.id(obj)?, at.id(req)?);
                if let Some((_, token)) = held {
                    at.token(token)?;
                }
                Op::LockAck {
                    obj,
                    req,
                    held: held
                        .map(|(r, tok)| at.id(r).map(|r| (r, tok)))
                        .transpose()?,
                    members: members.iter().map(|(tag, h)| h.peer(*tag)).collect(),
                }
            }
            WireOp::Evict { peer, hostname } => Op::Evict {
                peer: hostname.peer(peer),
            },
            WireOp::Tick => continue,
        };
        ops.push(op);
    }
    Ok(Translated {
        new_peers,
        intros: t.intros,
        last,
    })
}

/// Translates one sender's wire ids while a message is validated.
struct Translator<'a> {
    from: u32,
    sender: PeerIdx,
    dict: &'a [PeerIdx],
    /// Peers introduced by this message so far.
    intros: Vec<PeerIdx>,
}

impl Translator<'_> {
    /// Translation for the operation at counter `here`, which may name the
    /// sender's ids before it only.
    fn at(&self, here: u64) -> At<'_> {
        At { t: self, here }
    }

    fn peer(&self, p: u32) -> Result<PeerIdx, ReceiveError> {
        let p = p as usize;
        // Index 0 is the sender, resolved by the caller.
        debug_assert!(p > 0);
        self.dict
            .get(p - 1)
            .or_else(|| self.intros.get(p - 1 - self.dict.len()))
            .copied()
            .ok_or_else(|| {
                ReceiveError::invalid(self.from, format!("peer index {p} was never introduced"))
            })
    }
}

/// A [`Translator`] scoped to one operation.
struct At<'a> {
    t: &'a Translator<'a>,
    here: u64,
}

impl At<'_> {
    #[inline]
    fn id(&self, w: WireId) -> Result<Id, ReceiveError> {
        if w.c == 0 || w.c > MAX_COUNTER {
            return Err(ReceiveError::invalid(
                self.t.from,
                format!("counter {} out of range", w.c),
            ));
        }
        if w.p == 0 {
            if w.c >= self.here {
                return Err(ReceiveError::invalid(
                    self.t.from,
                    format!("id {} names the sender's future", w.c),
                ));
            }
            return Ok(Id::new(self.t.sender, w.c));
        }
        Ok(Id::new(self.t.peer(w.p)?, w.c))
    }

    /// The sender's id `d` counters before this operation
    /// ([`WireOrigin::Back`]).
    #[inline]
    fn back(&self, d: u64) -> Result<Id, ReceiveError> {
        let c = self
            .here
            .checked_sub(d)
            .filter(|_| d > 0)
            .ok_or_else(|| ReceiveError::invalid(self.t.from, "insert origin out of range"))?;
        self.id(WireId { p: 0, c })
    }

    #[inline]
    fn value(&self, w: WireValue) -> Result<Value, ReceiveError> {
        w.into_value(|id| self.id(id))
    }

    /// Tokens are raised counters: far below the top of the range, so that
    /// raising one can never overflow.
    fn token(&self, token: u64) -> Result<u64, ReceiveError> {
        if token > MAX_COUNTER {
            return Err(ReceiveError::invalid(
                self.t.from,
                "fencing token out of range",
            ));
        }
        Ok(token)
    }
}
