//! The joiner's side of the handshake: while it lasts, writes are refused,
//! sequenced messages are buffered, and the joiner waits for offers.

use std::collections::VecDeque;
use std::time::Duration;

use rustc_hash::FxHashSet;

use crate::error::ReceiveError;
use crate::graph::Graph;
use crate::value::Succession;
use crate::wire::{Sequenced, Tag};

/// Whether the replica holds the document or waits for it.
#[derive(Debug)]
pub(crate) enum Phase {
    Live,
    /// Boxed: a replica holds one phase, mostly live.
    Joining(Box<Joining>),
}

/// A sync in progress.
#[derive(Debug, Default)]
pub(crate) struct Joining {
    /// Peers that offered, in order, after the one being fetched from.
    offers: VecDeque<Tag>,
    /// The peer asked for the state.
    fetching: Option<Tag>,
    /// Peers taken to hold the document, whose offer is fetched from at
    /// once: those known when the sync began and not known to sync
    /// themselves, and those that welcomed this replica since (all a
    /// newcomer can know of). A peer heard asking for a sync of its own
    /// leaves until its `Joined`. Other offers wait behind: a syncing peer
    /// answers only once its own sync completes.
    ready: FxHashSet<Tag>,
    /// Sequenced messages received meanwhile: sender, position, body, size.
    backlog: Vec<(Tag, u64, Sequenced, usize)>,
    /// The senders of the backlog: peers that may ask this replica to
    /// resend before it reads their announcement.
    senders: FxHashSet<Tag>,
    backlog_bytes: usize,
    /// The reclamation deadline, set aside until the document is here.
    pub(crate) gc_deadline: Option<Duration>,
    /// The document as it was when the sync began, when changes are
    /// recorded: what the transferred one changes in it is reported.
    pub(crate) before: Option<Before>,
}

/// The document a sync dropped, and the successions since (a replica
/// that started over names its earlier incarnation's objects anew).
#[derive(Debug)]
pub(crate) struct Before {
    pub(crate) graph: Graph,
    pub(crate) successions: Vec<Succession>,
}

/// What a joiner does when its sync timer fires.
#[derive(Debug)]
pub(crate) enum Retry {
    /// The peer fetched from did not answer: fetch from the next that
    /// offered.
    Fetch(Tag),
    /// Nobody (else) offered: ask everyone again.
    Request,
}

impl Joining {
    /// A sync that sets the reclamation deadline `gc_deadline` aside.
    pub(crate) fn new(gc_deadline: Option<Duration>) -> Joining {
        Joining {
            gc_deadline,
            ..Joining::default()
        }
    }

    /// Takes `peers` to hold the document.
    pub(crate) fn trust(&mut self, peers: impl IntoIterator<Item = Tag>) {
        self.ready.extend(peers);
    }

    /// Takes note of `from`'s message `body` (an offer to this replica,
    /// `me`, or a sync of `from`'s own begun or completed): returns true
    /// when `from` is the one to fetch from now.
    pub(crate) fn heard(&mut self, from: Tag, body: &Sequenced, me: Tag) -> bool {
        match body {
            Sequenced::SyncOffer { joiner } if *joiner == me => self.offered(from),
            Sequenced::SyncRequest { .. } => {
                self.ready.remove(&from);
                false
            }
            Sequenced::Joined => self.welcomed(from),
            _ => false,
        }
    }

    /// `from` welcomed this replica, or completed a sync of its own: it
    /// holds the document. Returns true when it is the one to fetch from
    /// now (its offer waits, and nobody is fetched from).
    pub(crate) fn welcomed(&mut self, from: Tag) -> bool {
        self.ready.insert(from);
        let waiting = self.offers.iter().position(|&o| o == from);
        match (self.fetching, waiting) {
            (None, Some(i)) => {
                self.offers.remove(i);
                self.fetching = Some(from);
                true
            }
            _ => false,
        }
    }

    /// `from` offered: returns true when it is the one to fetch from now.
    fn offered(&mut self, from: Tag) -> bool {
        if self.fetching == Some(from) || self.offers.contains(&from) {
            return false;
        }
        if self.fetching.is_none() && self.ready.contains(&from) {
            self.fetching = Some(from);
            return true;
        }
        self.offers.push_back(from);
        false
    }

    /// Buffers a sequenced message until the state arrives.
    ///
    /// # Errors
    /// [`ReceiveError::BacklogFull`] past `max` bytes.
    pub(crate) fn hold(
        &mut self,
        from: Tag,
        seq: u64,
        body: Sequenced,
        size: usize,
        max: usize,
    ) -> Result<(), ReceiveError> {
        if self.backlog_bytes + size > max {
            return Err(ReceiveError::BacklogFull(self.backlog_bytes));
        }
        self.backlog_bytes += size;
        self.backlog.push((from, seq, body, size));
        self.senders.insert(from);
        Ok(())
    }

    /// Takes over the senders `old` heard from: a sync begun again drops
    /// the backlog, not what it told of who may ask to resend.
    pub(crate) fn keep_senders(&mut self, old: &mut Joining) {
        self.senders = std::mem::take(&mut old.senders);
    }

    /// Whether a message of `from`'s waits in the backlog.
    pub(crate) fn holds_from(&self, from: Tag) -> bool {
        self.senders.contains(&from)
    }

    /// Whether a state from `from` is the one asked for.
    pub(crate) fn expects(&self, from: Tag) -> bool {
        self.fetching == Some(from)
    }

    /// The sync timer fired.
    pub(crate) fn retry(&mut self) -> Retry {
        self.fetching = None;
        match self.offers.pop_front() {
            Some(next) => {
                self.fetching = Some(next);
                Retry::Fetch(next)
            }
            None => Retry::Request,
        }
    }

    /// The messages buffered meanwhile, in arrival order.
    pub(crate) fn into_backlog(self) -> Vec<(Tag, u64, Sequenced, usize)> {
        self.backlog
    }
}
