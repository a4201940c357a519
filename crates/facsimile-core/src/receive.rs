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
        self.handle_frame(frame, bytes.len())
    }

    /// Applies a decoded message of `size` encoded bytes.
    pub(crate) fn handle_frame(&mut self, frame: Frame, size: usize) -> Result<(), ReceiveError> {
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
        if let Phase::Syncing(sync) = &mut self.phase {
            if let Body::SyncOffer { joiner, .. } = frame.body {
                if joiner.0 == self.me.incarnation() {
                    let from = frame.from;
                    if sync.fetching.is_none() {
                        sync.fetching = Some((from, self.now + self.config.sync_timeout));
                        self.send_directed(from, Body::SyncFetch { to: from });
                    } else {
                        sync.offers.push_back(from);
                    }
                }
            }
            let Phase::Syncing(sync) = &mut self.phase else {
                unreachable!("checked above")
            };
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
        let known = self.streams.contains_key(&tag.0);
        let result = self.sequence(frame, size);
        // A message that was refused (or dropped) leaves no stream behind:
        // a stream whose sender is unknown holds reclamation back for good.
        if !known
            && self
                .streams
                .get(&tag.0)
                .is_some_and(|s| s.peer.is_none() && s.held.is_empty())
        {
            self.streams.remove(&tag.0);
        }
        result
    }

    fn sequence(&mut self, frame: Frame, size: usize) -> Result<(), ReceiveError> {
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

    /// Notes that a member was heard from, for failure detection.
    fn heard(&mut self, tag: Tag) {
        if let Some(p) = self.streams.get(&tag.0).and_then(|s| s.peer) {
            self.locks.heard.insert(p);
        }
    }

    /// Serves sync fetches once no operation waits: a waiting operation is
    /// counted in the stream positions but not in the state, so a snapshot
    /// taken now would lose it.
    pub(crate) fn answer_fetches(&mut self) {
        if self.pending_count > 0 || self.deferred_fetches.is_empty() {
            return;
        }
        // Wait until every member has offered to this joiner: then
        // everything they sent before the joiner listened is applied here.
        let (ready, waiting): (Vec<Tag>, Vec<Tag>) = std::mem::take(&mut self.deferred_fetches)
            .into_iter()
            .partition(|j| {
                let seen = self.offers_seen.get(&j.0);
                self.offer_wait.get(&j.0).is_none_or(|wait| {
                    wait.iter().all(|&m| {
                        let t = self.peers.tag(m);
                        !self.gc.members.contains(&m)
                            || self.syncing_peers.contains(&m)
                            || seen.is_some_and(|s| s.contains(&t))
                    })
                })
            });
        self.deferred_fetches = waiting;
        for to in ready {
            self.offers_seen.remove(&to.0);
            self.offer_wait.remove(&to.0);
            if let Some(p) = self.peers.by_tag(to.0) {
                if !self.gc.departed.contains(&p) {
                    self.gc.members.insert(p);
                }
            }
            self.send_answer(to);
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
                // Accepted earlier but invalid in order. Over an ordered log
                // every replica drops it alike, and the sender's own message
                // of that number may still come (a reload would meet the
                // same entry again); elsewhere the stream cannot continue
                // without it.
                if !self.is_ordered() {
                    self.events.push_back(Event::NeedsSync);
                }
                return;
            }
        }
    }

    fn process_sequenced(&mut self, frame: Frame) -> Result<(), ReceiveError> {
        let tag = frame.from;
        self.heard(tag);
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
                self.syncing_peers.insert(peer);
                // Only those already here can have sent what the joiner did
                // not hear; later members reach it directly.
                let wait: Vec<PeerIdx> = self
                    .gc
                    .members
                    .iter()
                    .copied()
                    .filter(|&m| m != peer && !self.syncing_peers.contains(&m))
                    .collect();
                if self.offer_wait.len() > 4096 {
                    self.offer_wait.clear();
                }
                self.offer_wait.insert(tag.0, wait);
                if self.is_ready() {
                    self.send_sequenced(|seq| Body::SyncOffer { seq, joiner: tag });
                }
            }
            Body::Joined { .. } => {
                if let Some(p) = self.streams.get(&tag.0).and_then(|s| s.peer) {
                    self.syncing_peers.remove(&p);
                }
            }
            Body::SyncOffer { joiner, .. } => {
                if self.offers_seen.len() > 4096 {
                    self.offers_seen.clear();
                }
                self.offers_seen.entry(joiner.0).or_default().insert(tag.0);
            }
            body => {
                let sender = self
                    .streams
                    .get(&tag.0)
                    .and_then(|s| s.peer)
                    .ok_or_else(|| {
                        ReceiveError::invalid(tag.0, "message before the sender's hello")
                    })?;
                if self.gc.departed.contains(&sender) {
                    // Evicted (or gone): whatever it sends now is refused,
                    // its writes under lost locks included. It rejoins as a
                    // new incarnation. Only its verdict on this replica
                    // counts: after a partition both sides evicted each
                    // other, and the earlier eviction stands.
                    if let Body::Ops { tick, ops, .. } = &body {
                        if let Ok(lamport) = self.ops_counters(tag, *tick, ops) {
                            self.check_counter_eviction(sender, lamport, ops);
                        }
                    }
                    return Ok(());
                }
                match body {
                    Body::Ops { tick, ops, .. } => self.handle_ops(tag, sender, tick, ops)?,
                    Body::GcAck {
                        frontier, members, ..
                    } => self.handle_ack(sender, frontier, members),
                    Body::Goodbye { .. } => self.depart(sender),
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
                self.events.push_back(Event::Ready);
                self.send_sequenced(|seq| Body::Joined { seq });
                self.send_lock_acks();
            }
            Body::Welcome { hostname, seq, .. } => {
                if !self.is_ready() {
                    return Ok(());
                }
                // A bad announcement is refused before anything changes.
                let peer = self.announce(from, &hostname)?;
                // A peer that was there before this replica started: follow
                // its stream from the start, as far as its log reaches.
                let stream = self.streams.entry(from.0).or_insert_with(|| Stream {
                    next_seq: 1,
                    ..Stream::default()
                });
                stream.peer = Some(peer);
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
            }
            Body::Resend { from_seq, .. } => match self.out.log.since(from_seq) {
                Some(again) => self
                    .out
                    .queue
                    .extend(again.into_iter().map(|bytes| Transmit {
                        to: Some(from.0),
                        bytes,
                    })),
                _ if from_seq > self.out.seq => {}
                _ => self.send_directed(from, Body::ResendGone { to: from }),
            },
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
            self.check_liveness(now);
            return;
        }
        match self.gc.next_pass {
            Some(at) if now < at => {}
            _ => {
                self.gc_pass();
                self.gc.next_pass = Some(now + self.config.gc_interval);
            }
        }
        self.check_liveness(now);
        // A joiner may have been waiting for an evicted peer's offer.
        self.answer_fetches();
    }

    /// `at`, or the next heartbeat if it is due earlier.
    fn with_heartbeat(&self, at: Duration) -> Duration {
        if self.sends_heartbeats() {
            at.min(self.locks.last_sent + self.config.heartbeat)
        } else {
            at
        }
    }

    /// When [`Replica::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match &self.phase {
            Phase::Syncing(sync) => {
                let at = match sync.fetching {
                    Some((_, deadline)) => deadline,
                    None => sync.request_deadline,
                };
                Some(self.with_heartbeat(at))
            }
            Phase::Live => {
                let gc = self.gc.next_pass.unwrap_or(self.now);
                Some(self.with_heartbeat(gc))
            }
        }
    }
}
