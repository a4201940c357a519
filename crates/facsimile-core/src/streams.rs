//! The peers' streams as this replica follows them: the next position
//! expected from each sender, its last counter applied, its dictionary, and
//! the messages that arrived ahead of a gap.
//!
//! Invariant: a sender's messages are applied in its order, each once; a
//! message ahead of a gap is held (within a byte budget) until the gap is
//! filled by a resend (DESIGN.md, "Messages and streams"), unless its
//! sender has not announced itself: then nothing is held, and the stream
//! only records that its start was asked for.

use std::collections::BTreeMap;

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use crate::clock::Peers;
use crate::error::ReceiveError;
use crate::value::PeerIdx;
use crate::wire::{Sequenced, Tag};

/// How many streams whose sender has not announced itself are kept (each
/// records only that its start was asked for), so that a stranger's
/// messages cannot grow them.
const MAX_UNANNOUNCED: usize = 64;

/// One sender's stream.
#[derive(Debug)]
pub(crate) struct Stream {
    /// The sender, once it announced itself.
    pub(crate) peer: Option<PeerIdx>,
    pub(crate) next_seq: u64,
    /// The sender's last counter applied here.
    pub(crate) lamport: u64,
    /// The sender's dictionary: wire peer index to local peer.
    pub(crate) dict: Vec<PeerIdx>,
    /// Messages that arrived ahead of a gap, with their sizes.
    held: BTreeMap<u64, (Sequenced, usize)>,
    /// A resend was asked for the current gap.
    resend_asked: bool,
}

impl Stream {
    /// Messages held ahead of a gap.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// A stream followed from position `next_seq`.
    pub(crate) fn at(peer: PeerIdx, next_seq: u64, lamport: u64, dict: Vec<PeerIdx>) -> Stream {
        Stream {
            peer: Some(peer),
            next_seq,
            lamport,
            dict,
            ..Stream::default()
        }
    }
}

impl Default for Stream {
    /// A stream followed from its start (positions count from 1).
    fn default() -> Stream {
        Stream {
            peer: None,
            next_seq: 1,
            lamport: 0,
            dict: Vec::new(),
            held: BTreeMap::new(),
            resend_asked: false,
        }
    }
}

/// Where a sequenced message stands in its sender's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// Applied already, or held already: drop it.
    Duplicate,
    /// Ahead of a gap: [`Streams::hold`] it.
    Ahead,
    /// The next of its stream: apply it, then [`Streams::advance`].
    Next,
}

/// Every stream this replica follows, by sender tag.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    by_tag: FxHashMap<u32, Stream>,
    /// Bytes of messages held behind gaps.
    held_bytes: usize,
}

impl Streams {
    /// Forgets every stream (a sync starts over).
    pub(crate) fn clear(&mut self) {
        self.by_tag.clear();
        self.held_bytes = 0;
    }

    /// Replaces every stream (a state transfer).
    pub(crate) fn load(&mut self, streams: FxHashMap<u32, Stream>) {
        self.by_tag = streams;
        self.held_bytes = 0;
    }

    pub(crate) fn get_mut(&mut self, tag: Tag) -> Option<&mut Stream> {
        self.by_tag.get_mut(&tag.0)
    }

    /// The sender of a stream, once it announced itself.
    pub(crate) fn peer(&self, tag: Tag) -> Option<PeerIdx> {
        self.by_tag.get(&tag.0).and_then(|s| s.peer)
    }

    /// The stream of a known peer.
    pub(crate) fn of_peer(&self, peer: PeerIdx, peers: &Peers) -> Option<&Stream> {
        self.by_tag.get(&peers.tag(peer))
    }

    /// The last counter applied from `peer` (0 for none).
    pub(crate) fn lamport_of(&self, peer: PeerIdx, peers: &Peers) -> u64 {
        self.of_peer(peer, peers).map_or(0, |s| s.lamport)
    }

    /// Binds a stream to the peer that announced itself on it.
    pub(crate) fn bind(&mut self, tag: Tag, peer: PeerIdx) {
        if let Some(s) = self.by_tag.get_mut(&tag.0) {
            s.peer = Some(peer);
        }
    }

    /// For every known sender, the last counter applied.
    pub(crate) fn frontier(&self) -> impl Iterator<Item = (PeerIdx, u64)> + '_ {
        self.by_tag
            .values()
            .filter_map(|s| s.peer.map(|p| (p, s.lamport)))
            .filter(|&(_, c)| c > 0)
    }

    /// Every stream, by tag.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Tag, &Stream)> + '_ {
        self.by_tag.iter().map(|(&t, s)| (Tag(t), s))
    }

    /// Where message `seq` of `from`'s stream stands, and whether the
    /// stream was opened for it (its first message seen here).
    #[inline]
    pub(crate) fn position(&mut self, from: Tag, seq: u64) -> (Position, bool) {
        let (stream, opened) = match self.by_tag.entry(from.0) {
            Entry::Occupied(e) => (e.into_mut(), false),
            Entry::Vacant(e) => (e.insert(Stream::default()), true),
        };
        let position = if seq == stream.next_seq {
            Position::Next
        } else if seq < stream.next_seq || stream.held.contains_key(&seq) {
            Position::Duplicate
        } else {
            Position::Ahead
        };
        (position, opened)
    }

    /// Holds message `seq` of `from`'s stream, of `size` bytes, ahead of a
    /// gap. Returns the position to ask the sender to resend from, unless it
    /// was asked already.
    ///
    /// A message whose sender has not announced itself is not held: the
    /// resend from the stream's start brings it again, after the hello,
    /// and the hello may never come (a stranger, a sender that crashed),
    /// while reclamation cannot count a sender it does not know. Dropped,
    /// the message is as if still on its way.
    ///
    /// # Errors
    /// [`ReceiveError::BacklogFull`] when holding it would exceed
    /// `max_backlog` bytes.
    pub(crate) fn hold(
        &mut self,
        from: Tag,
        seq: u64,
        body: Sequenced,
        size: usize,
        max_backlog: usize,
    ) -> Result<Option<u64>, ReceiveError> {
        let Some(stream) = self.by_tag.get_mut(&from.0) else {
            return Ok(None);
        };
        if stream.peer.is_none() {
            let ask = !std::mem::replace(&mut stream.resend_asked, true);
            let from_seq = stream.next_seq;
            let unannounced = self.by_tag.values().filter(|s| s.peer.is_none());
            if unannounced.count() > MAX_UNANNOUNCED {
                // Asked again if it sends again: a resend more, at worst.
                self.by_tag.remove(&from.0);
            }
            return Ok(ask.then_some(from_seq));
        }
        if self.held_bytes + size > max_backlog {
            return Err(ReceiveError::BacklogFull(self.held_bytes));
        }
        self.held_bytes += size;
        stream.held.insert(seq, (body, size));
        Ok((!std::mem::replace(&mut stream.resend_asked, true)).then_some(stream.next_seq))
    }

    /// Drops the stream of `tag` if it was opened by a message that was
    /// refused or dropped, unless it records that the stream's start was
    /// asked for (a few such are kept, [`MAX_UNANNOUNCED`]).
    pub(crate) fn drop_stray(&mut self, tag: Tag) {
        if self
            .by_tag
            .get(&tag.0)
            .is_some_and(|s| s.peer.is_none() && !s.resend_asked)
        {
            self.by_tag.remove(&tag.0);
        }
    }

    /// Moves the stream of `tag` past the message just applied; returns the
    /// next one if it was held.
    pub(crate) fn advance(&mut self, tag: Tag) -> Option<Sequenced> {
        let stream = self.by_tag.get_mut(&tag.0)?;
        stream.next_seq += 1;
        stream.resend_asked = false;
        let (body, size) = stream.held.remove(&stream.next_seq)?;
        self.held_bytes -= size;
        Some(body)
    }

    /// Follows a peer that was there before this replica started, from the
    /// start of its stream. Returns the position to ask it to resend from,
    /// unless it was asked already or nothing is missing (its latest is
    /// `seq`).
    pub(crate) fn welcome(&mut self, from: Tag, peer: PeerIdx, seq: u64) -> Option<u64> {
        let stream = self.by_tag.entry(from.0).or_default();
        stream.peer = Some(peer);
        if seq >= stream.next_seq && !stream.resend_asked {
            stream.resend_asked = true;
            return Some(stream.next_seq);
        }
        None
    }

    /// For failure messages.
    #[cfg(feature = "sim")]
    pub(crate) fn debug(&self) -> Vec<String> {
        self.by_tag
            .iter()
            .map(|(t, s)| {
                format!(
                    "{t:08x} {:?} next {} lamport {} held {:?}",
                    s.peer,
                    s.next_seq,
                    s.lamport,
                    s.held.keys().collect::<Vec<_>>()
                )
            })
            .collect()
    }
}
