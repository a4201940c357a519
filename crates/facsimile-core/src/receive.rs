//! Incoming messages and time: stream ordering, the sync handshake,
//! retransmission and membership.

use std::time::Duration;

use crate::codec;
use crate::error::ReceiveError;
use crate::replica::{Event, Phase, Replica, Stream, SyncState, Transmit};
use crate::value::{PeerId, PeerIdx};
use crate::wire::{Body, Frame, Tag};

impl Replica {
    /// Applies one incoming message.
    ///
    /// Messages of one sender must be passed in that sender's order; how
    /// senders interleave does not matter. Duplicates are ignored. A message
    /// that arrives ahead of a missing predecessor is held and the sender is
    /// asked to resend.
    ///
    /// # Errors
    /// A [`ReceiveError`] when the bytes are not a valid message; the replica
    /// is unchanged and keeps working.
    pub fn handle_message(&mut self, bytes: &[u8]) -> Result<(), ReceiveError> {
        let frame = codec::decode(bytes, self.config.max_message)?;
        if frame.from.0 == self.me.incarnation() {
            // Our own message, echoed by a broadcast transport.
            return Ok(());
        }
        // Operations of an open local group must not straddle a remote
        // message: their counters would no longer be consecutive.
        self.flush_pending_ops();
        if let Some(to) = frame.body.to() {
            if to.0 != self.me.incarnation() {
                return Ok(());
            }
            return self.handle_directed(frame);
        }
        let size = bytes.len();
        if let Phase::Syncing(sync) = &mut self.phase {
            if sync.backlog_bytes + size > self.config.max_backlog {
                return Err(ReceiveError::BacklogFull(sync.backlog_bytes));
            }
            sync.backlog_bytes += size;
            sync.backlog.push((frame, size));
            return Ok(());
        }
        self.handle_sequenced(frame, size)
    }

    fn handle_sequenced(&mut self, frame: Frame, size: usize) -> Result<(), ReceiveError> {
        let tag = frame.from;
        let seq = frame.body.seq().expect("directed messages were handled");
        let stream = self.streams.entry(tag.0).or_insert_with(|| Stream {
            next_seq: 1,
            ..Stream::default()
        });
        if seq < stream.next_seq {
            return Ok(());
        }
        if seq > stream.next_seq {
            if stream.held.contains_key(&seq) {
                return Ok(());
            }
            if self.held_bytes + size > self.config.max_backlog {
                return Err(ReceiveError::BacklogFull(self.held_bytes));
            }
            self.held_bytes += size;
            stream.held.insert(seq, (frame, size));
            if !stream.resend_asked {
                stream.resend_asked = true;
                let from_seq = stream.next_seq;
                self.send_directed(tag, Body::Resend { to: tag, from_seq });
            }
            return Ok(());
        }
        self.process_sequenced(frame)?;
        self.advance(tag);
        self.answer_fetches();
        Ok(())
    }

    /// Serves sync fetches once no operation waits: a waiting operation is
    /// counted in the stream positions but not in the state, so a snapshot
    /// taken now would lose it.
    fn answer_fetches(&mut self) {
        if self.pending_count > 0 || self.deferred_fetches.is_empty() {
            return;
        }
        for to in std::mem::take(&mut self.deferred_fetches) {
            if let Some(p) = self.peers.by_tag(to.0) {
                if !self.gc.departed.contains(&p) {
                    self.gc.members.insert(p);
                }
            }
            let state = Box::new(self.transfer_state());
            self.send_directed(to, Body::SyncAnswer { to, state });
        }
    }

    /// Moves a stream past the message just processed and drains what was
    /// held behind it.
    fn advance(&mut self, tag: Tag) {
        loop {
            let Some(stream) = self.streams.get_mut(&tag.0) else {
                return;
            };
            stream.next_seq += 1;
            stream.resend_asked = false;
            let next = stream.next_seq;
            let Some((frame, size)) = stream.held.remove(&next) else {
                return;
            };
            self.held_bytes -= size;
            if self.process_sequenced(frame).is_err() {
                // Accepted earlier but invalid in order: the stream cannot
                // continue without it.
                self.events.push_back(Event::NeedsSync);
                return;
            }
        }
    }

    fn process_sequenced(&mut self, frame: Frame) -> Result<(), ReceiveError> {
        let tag = frame.from;
        match frame.body {
            Body::Hello { hostname, .. } => {
                self.announce(tag, &hostname)?;
                if self.is_ready() {
                    let hostname = self.me.hostname().into();
                    let seq = self.out.seq;
                    self.send_directed(
                        tag,
                        Body::Welcome {
                            to: tag,
                            hostname,
                            seq,
                        },
                    );
                }
            }
            Body::SyncRequest { hostname, .. } => {
                let peer = self.announce(tag, &hostname)?;
                let _ = peer;
                if self.is_ready() {
                    self.send_directed(tag, Body::SyncOffer { to: tag });
                }
            }
            body => {
                let sender = self
                    .streams
                    .get(&tag.0)
                    .and_then(|s| s.peer)
                    .ok_or_else(|| {
                        ReceiveError::invalid(tag.0, "message before the sender's hello")
                    })?;
                match body {
                    Body::Ops { lamport, ops, .. } => self.handle_ops(tag, sender, lamport, ops)?,
                    Body::GcAck {
                        frontier, members, ..
                    } => self.handle_ack(sender, frontier, members),
                    Body::Goodbye { .. } => {
                        self.gc.departed.insert(sender);
                        if self.gc.members.remove(&sender) {
                            self.events
                                .push_back(Event::PeerLeft(self.peers.get(sender).clone()));
                        }
                    }
                    _ => unreachable!("only sequenced bodies reach here"),
                }
            }
        }
        Ok(())
    }

    /// Registers a peer that announced itself.
    fn announce(&mut self, tag: Tag, hostname: &str) -> Result<PeerIdx, ReceiveError> {
        if hostname.len() > 1024 {
            return Err(ReceiveError::invalid(
                tag.0,
                "hostname longer than 1024 bytes",
            ));
        }
        let peer = self
            .peers
            .intern(&PeerId::new(hostname, tag.0))
            .map_err(|_| ReceiveError::TagCollision(tag.0))?;
        if let Some(s) = self.streams.get_mut(&tag.0) {
            s.peer = Some(peer);
        }
        if !self.gc.departed.contains(&peer) && self.gc.members.insert(peer) {
            self.gc.changed = true;
            self.events
                .push_back(Event::PeerJoined(self.peers.get(peer).clone()));
        }
        Ok(peer)
    }

    fn handle_directed(&mut self, frame: Frame) -> Result<(), ReceiveError> {
        let from = frame.from;
        match frame.body {
            Body::SyncOffer { .. } => {
                if let Phase::Syncing(sync) = &mut self.phase {
                    if sync.fetching.is_none() {
                        sync.fetching = Some((from, self.now + self.config.sync_timeout));
                        self.send_directed(from, Body::SyncFetch { to: from });
                    } else {
                        sync.offers.push_back(from);
                    }
                }
            }
            Body::SyncFetch { .. } => {
                if self.is_ready() {
                    self.deferred_fetches.push(from);
                    self.answer_fetches();
                }
            }
            Body::SyncAnswer { state, .. } => {
                let expected = matches!(&self.phase, Phase::Syncing(s) if s.fetching.is_some_and(|(t, _)| t == from));
                if !expected {
                    return Ok(());
                }
                self.load_transfer(from, *state)?;
                let Phase::Syncing(sync) = std::mem::replace(&mut self.phase, Phase::Live) else {
                    unreachable!("checked above")
                };
                for (frame, size) in sync.backlog {
                    // Errors in the backlog concern their own senders only.
                    let _ = self.handle_sequenced(frame, size);
                }
                // A sender's last messages may have been in flight to the
                // answerer and sent before this replica listened; nothing
                // would reveal that gap, so ask every member for its tail.
                let tails: Vec<(u32, u64)> = self
                    .streams
                    .iter()
                    .filter(|(_, s)| s.peer.is_some_and(|p| self.gc.members.contains(&p)))
                    .map(|(&tag, s)| (tag, s.next_seq))
                    .collect();
                for (tag, from_seq) in tails {
                    self.send_directed(
                        Tag(tag),
                        Body::Resend {
                            to: Tag(tag),
                            from_seq,
                        },
                    );
                }
                self.events.push_back(Event::Ready);
            }
            Body::Welcome { hostname, seq, .. } => {
                if !self.is_ready() {
                    return Ok(());
                }
                // A peer that was there before this replica started: follow
                // its stream from the start, as far as its log reaches.
                let stream = self.streams.entry(from.0).or_insert_with(|| Stream {
                    next_seq: 1,
                    ..Stream::default()
                });
                let (next, asked) = (stream.next_seq, stream.resend_asked);
                if seq >= next && !asked {
                    stream.resend_asked = true;
                    self.send_directed(
                        from,
                        Body::Resend {
                            to: from,
                            from_seq: next,
                        },
                    );
                }
                self.announce(from, &hostname)?;
            }
            Body::Resend { from_seq, .. } => {
                let log = &self.out.log;
                match log.front() {
                    Some(&(first, _)) if first <= from_seq => {
                        let again: Vec<Transmit> = log
                            .iter()
                            .filter(|(seq, _)| *seq >= from_seq)
                            .map(|(_, bytes)| Transmit {
                                to: Some(from.0),
                                bytes: bytes.clone(),
                            })
                            .collect();
                        self.out.queue.extend(again);
                    }
                    _ if from_seq > self.out.seq => {}
                    _ => self.send_directed(from, Body::ResendGone { to: from }),
                }
            }
            Body::ResendGone { .. } => self.events.push_back(Event::NeedsSync),
            _ => unreachable!("only directed bodies carry a recipient"),
        }
        Ok(())
    }

    /// Lets time pass: settles sync timeouts and runs reclamation when due.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = now;
        self.flush_pending_ops();
        let hostname = self.me.hostname().into();
        let mut resend_request = false;
        if let Phase::Syncing(sync) = &mut self.phase {
            match sync.fetching {
                Some((tag, deadline)) if now >= deadline => {
                    // The chosen peer did not answer: try the next offer.
                    sync.fetching = None;
                    let _ = tag;
                    if let Some(next) = sync.offers.pop_front() {
                        sync.fetching = Some((next, now + self.config.sync_timeout));
                        self.send_directed(next, Body::SyncFetch { to: next });
                    } else {
                        resend_request = true;
                    }
                }
                None if now >= sync.request_deadline => resend_request = true,
                _ => {}
            }
            if resend_request {
                if let Phase::Syncing(SyncState {
                    request_deadline, ..
                }) = &mut self.phase
                {
                    *request_deadline = now + self.config.sync_timeout;
                }
                self.send_sequenced(|seq| Body::SyncRequest { seq, hostname });
            }
            return;
        }
        match self.gc.next_pass {
            Some(at) if now < at => {}
            _ => {
                self.gc_pass();
                self.gc.next_pass = Some(now + self.config.gc_interval);
            }
        }
    }

    /// When [`Replica::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match &self.phase {
            Phase::Syncing(sync) => Some(match sync.fetching {
                Some((_, deadline)) => deadline,
                None => sync.request_deadline,
            }),
            Phase::Live => Some(self.gc.next_pass.unwrap_or(self.now)),
        }
    }
}
