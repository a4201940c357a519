//! Operations that wait for what they name: an operation whose object,
//! element or slot has not arrived yet is parked under the missing id and
//! runs when a later operation creates it.
//!
//! Invariant: while anything is parked, the stream positions overstate the
//! applied state, so no reclamation round completes and no snapshot is
//! served (DESIGN.md, "Dependencies without causal delivery").

use std::collections::VecDeque;

use crate::graph::IdMap;
use crate::op::Op;
use crate::value::{Id, PeerIdx};

#[derive(Debug, Default)]
pub(crate) struct Parked {
    waiting: IdMap<Vec<(PeerIdx, Op)>>,
    count: usize,
    /// Ranges of ids that parked operations will create: `(peer, first, len)`.
    creates: Vec<(PeerIdx, u64, u64)>,
    /// Operations whose dependency arrived, to run in order.
    woken: VecDeque<(PeerIdx, Op)>,
}

impl Parked {
    /// Drops everything (a sync replaces the document).
    pub(crate) fn clear(&mut self) {
        *self = Parked::default();
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Parks `op` of `sender` until `id` exists.
    pub(crate) fn park(&mut self, id: Id, sender: PeerIdx, op: Op) {
        if let Some((first, n)) = op.creates() {
            self.creates.push((first.peer, first.counter, n));
        }
        self.count += 1;
        self.waiting.entry(id).or_default().push((sender, op));
    }

    /// Whether a parked operation will create `id`.
    pub(crate) fn awaited(&self, id: Id) -> bool {
        self.creates
            .iter()
            .any(|&(p, start, len)| p == id.peer && id.counter >= start && id.counter < start + len)
    }

    /// Records that ids `first..first + n` now exist, waking what waited.
    #[inline]
    pub(crate) fn created(&mut self, first: Id, n: u64) {
        // Checked inline: nearly always nothing waits, and the call alone
        // cost more than the checks.
        if !self.creates.is_empty() || !self.waiting.is_empty() {
            self.wake(first, n);
        }
    }

    fn wake(&mut self, first: Id, n: u64) {
        if !self.creates.is_empty() {
            self.creates
                .retain(|&(p, start, _)| !(p == first.peer && start == first.counter));
        }
        if self.waiting.is_empty() {
            return;
        }
        for k in 0..n {
            let id = Id::new(first.peer, first.counter + k);
            if let Some(waiting) = self.waiting.remove(&id) {
                self.count -= waiting.len();
                self.woken.extend(waiting);
            }
        }
    }

    /// The next operation whose dependency arrived.
    pub(crate) fn pop_woken(&mut self) -> Option<(PeerIdx, Op)> {
        self.woken.pop_front()
    }

    /// For failure messages.
    #[cfg(feature = "sim")]
    pub(crate) fn debug(&self) -> String {
        format!(
            "pending {} {:?}",
            self.count,
            self.waiting.keys().collect::<Vec<_>>()
        )
    }
}
