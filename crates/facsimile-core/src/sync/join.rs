//! The joiner's side of the handshake: while it lasts, writes are refused,
//! sequenced messages are buffered, and the joiner waits for offers.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::ReceiveError;
use crate::graph::Graph;
use crate::value::Succession;
use crate::wire::{Sequenced, Tag};

/// Whether the replica holds the document or waits for it.
#[derive(Debug)]
pub(crate) enum Phase {
    Live,
    Joining(Joining),
}

/// A sync in progress.
#[derive(Debug, Default)]
pub(crate) struct Joining {
    /// Peers that offered, in order, after the one being fetched from.
    offers: VecDeque<Tag>,
    /// The peer asked for the state.
    fetching: Option<Tag>,
    /// Sequenced messages received meanwhile: sender, position, body, size.
    backlog: Vec<(Tag, u64, Sequenced, usize)>,
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

    /// `from` offered: returns true when it is the one to fetch from now.
    pub(crate) fn offered(&mut self, from: Tag) -> bool {
        if self.fetching.is_none() {
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
        Ok(())
    }

    /// Whether a state from `from` is the one asked for.
    pub(crate) fn expects(&self, from: Tag) -> bool {
        self.fetching == Some(from)
    }

    /// The sync timer fired.
    pub(crate) fn retry(&mut self) -> Retry {
        if self.fetching.take().is_some() {
            if let Some(next) = self.offers.pop_front() {
                self.fetching = Some(next);
                return Retry::Fetch(next);
            }
        }
        Retry::Request
    }

    /// The messages buffered meanwhile, in arrival order.
    pub(crate) fn into_backlog(self) -> Vec<(Tag, u64, Sequenced, usize)> {
        self.backlog
    }
}
