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
/// messages cannot grow them: past it, the oldest record goes.
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
    /// The stream's key in [`Streams::markers`], while its sender has not
    /// announced itself and its start was asked for.
    marker: Option<u64>,
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
            marker: None,
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
    /// The tags of the streams that only record that their start was
    /// asked for, oldest first: they go when their sender announces
    /// itself or departs, or the oldest when there are too many, so that
    /// neither a stranger nor a sender that crashed before its hello
    /// keeps one for good, and none is looked for among every stream.
    markers: BTreeMap<u64, u32>,
    /// The key of the next marker.
    next_marker: u64,
}

impl Streams {
    /// Forgets every stream (a sync starts over).
    pub(crate) fn clear(&mut self) {
        self.by_tag.clear();
        self.held_bytes = 0;
        self.markers.clear();
    }

    /// Replaces every stream (a state transfer).
    pub(crate) fn load(&mut self, streams: FxHashMap<u32, Stream>) {
        self.by_tag = streams;
        self.held_bytes = 0;
        self.markers.clear();
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
            if let Some(key) = s.marker.take() {
                self.markers.remove(&key);
            }
        }
    }

    /// Forgets the stream of a departed sender that never announced
    /// itself here: it only recorded that its start was asked for, and
    /// the hello it waits for is dropped now.
    pub(crate) fn departed(&mut self, tag: Tag) {
        if let Some(key) = self.by_tag.get(&tag.0).and_then(|s| s.marker) {
            self.markers.remove(&key);
            self.by_tag.remove(&tag.0);
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
            if std::mem::replace(&mut stream.resend_asked, true) {
                return Ok(None);
            }
            let from_seq = stream.next_seq;
            if stream.marker.is_none() {
                let key = self.next_marker;
                self.next_marker += 1;
                stream.marker = Some(key);
                self.markers.insert(key, from.0);
                if self.markers.len() > MAX_UNANNOUNCED {
                    // Its sender, if it sends again before its hello, is
                    // asked again: a resend more, at worst.
                    if let Some((key, tag)) = self.markers.pop_first() {
                        if self.by_tag.get(&tag).is_some_and(|s| s.marker == Some(key)) {
                            self.by_tag.remove(&tag);
                        }
                    }
                }
            }
            return Ok(Some(from_seq));
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
        if let Some(key) = stream.marker.take() {
            self.markers.remove(&key);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A message at position 2 of `tag`'s stream, before any hello.
    fn ahead(s: &mut Streams, tag: u32) -> Option<u64> {
        assert_eq!(s.position(Tag(tag), 2).0, Position::Ahead);
        let asked = s.hold(Tag(tag), 2, Sequenced::Joined, 10, usize::MAX);
        s.drop_stray(Tag(tag));
        asked.unwrap()
    }

    #[test]
    fn markers_go_with_a_hello_a_departure_or_the_oldest_past_the_bound() {
        let mut s = Streams::default();
        for tag in 0..100 {
            assert_eq!(ahead(&mut s, tag), Some(1), "tag {tag} asked once");
        }
        assert_eq!(
            (s.markers.len(), s.by_tag.len()),
            (MAX_UNANNOUNCED, MAX_UNANNOUNCED)
        );
        // The newest are kept, and asked no more.
        assert!(!s.by_tag.contains_key(&35) && s.by_tag.contains_key(&36));
        assert_eq!(ahead(&mut s, 99), None);
        s.bind(Tag(99), PeerIdx(1));
        s.departed(Tag(98));
        assert_eq!(s.markers.len(), MAX_UNANNOUNCED - 2);
        assert_eq!(s.by_tag.len(), MAX_UNANNOUNCED - 1);
        assert!(s.by_tag[&99].peer.is_some() && !s.by_tag.contains_key(&98));
        // A departed peer that announced itself keeps its stream.
        s.departed(Tag(99));
        assert!(s.by_tag.contains_key(&99));
    }
}
