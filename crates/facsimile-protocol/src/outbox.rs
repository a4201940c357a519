//! The frames of a node that the relay or a log has not acknowledged.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::frame::{ProtocolError, Up, max_message};

/// A node's frames on their way out: queued, or sent on the current
/// connection and awaiting their acknowledgement.
///
/// Frames complete (acknowledged, or dropped unacknowledged) in the order
/// they were queued, so counters tell a flush when its frames are done:
/// the `i`-th frame queued is done once [`Outbox::done`] exceeds `i`. The
/// same index, stable across reconnections, names the frame in NATS
/// message ids.
///
/// A dropped frame counts as lost (in [`Outbox::dropped`]) by the writes
/// it carries, as [`Outbox::counting`] tells (a backlog of many writes in
/// one frame counts each), and only once, however many times its loss is
/// learnt of.
#[derive(Debug, Default, Clone)]
pub struct Outbox {
    /// Queued, not sent on the current connection.
    pending: VecDeque<Bytes>,
    /// Sent on the current connection, oldest first; kept to be sent again
    /// on the next connection if it is not acknowledged on this one.
    unacked: VecDeque<Bytes>,
    /// Frames acknowledged on the current connection (a relay counts its
    /// acknowledgements from each connection's start).
    acked_here: u64,
    /// Frames ever queued.
    queued: u64,
    /// Frames ever completed.
    done: u64,
    /// Frames ever sent on some connection: those of indices below.
    sent: u64,
    /// Writes of the frames ever dropped unacknowledged, or refused by the
    /// log after it stored them.
    dropped: u64,
    /// Over a log: the highest position the log stored one of these frames
    /// at.
    stored_at: u64,
    /// Takes no more frames.
    closed: bool,
    /// How many writes a frame carries, whose loss is reported; without
    /// it, every frame carries one.
    writes: Option<fn(&Bytes) -> u64>,
    /// How many of the oldest frames not completed yet (unacknowledged,
    /// then queued) were counted lost already.
    counted: usize,
    /// Over a log: the frames completed and not read back yet, oldest
    /// first, the last at index `done - 1`; `None` for one dropped (and
    /// counted) already. How many writes a refused one carries is read from
    /// it.
    kept: Option<VecDeque<Option<Bytes>>>,
    /// Over a log: from which frame on the log refused the frames of an
    /// incarnation whose lease ran out, and before which frame its
    /// successor carried their writes over
    /// ([`Outbox::carried_over`]); over a relay, from which frame on the
    /// frames were split, and before which frame the parts end
    /// ([`Outbox::split_unsent`]).
    carried: Vec<(u64, u64)>,
}

impl Outbox {
    /// An outbox that counts as lost the writes `writes` finds in each
    /// dropped frame: a lost heartbeat, hello or sync request loses no
    /// write, and reporting it would make a flush report its own writes,
    /// which were applied, as lost.
    pub fn counting(writes: fn(&Bytes) -> u64) -> Outbox {
        Outbox {
            writes: Some(writes),
            ..Outbox::default()
        }
    }

    /// An outbox for a log ([`Outbox::counting`]), which keeps the frames
    /// it stored until the node reads them back ([`Outbox::read_back`]):
    /// the log may refuse them then ([`Outbox::count_refused_between`]).
    pub fn over_log(writes: fn(&Bytes) -> u64) -> Outbox {
        Outbox {
            kept: Some(VecDeque::new()),
            ..Outbox::counting(writes)
        }
    }

    fn writes_in(&self, frame: &Bytes) -> u64 {
        self.writes.map_or(1, |writes| writes(frame))
    }

    /// `k` of the oldest frames not completed yet completed.
    fn completed(&mut self, k: usize) {
        self.counted = self.counted.saturating_sub(k);
        self.done += k as u64;
    }

    /// Queues a frame; `false` once the outbox is closed.
    pub fn enqueue(&mut self, frame: Bytes) -> bool {
        if self.closed {
            return false;
        }
        self.queued += 1;
        self.pending.push_back(frame);
        true
    }

    /// Moves up to `max` queued frames to the unacknowledged ones, appending
    /// them to `batch`, and returns the index of the first.
    pub fn take_batch(&mut self, max: usize, batch: &mut Vec<Bytes>) -> u64 {
        let first = self.done + self.unacked.len() as u64;
        let n = self.pending.len().min(max);
        for frame in self.pending.drain(..n) {
            // A reference count, not a copy.
            batch.push(frame.clone());
            self.unacked.push_back(frame);
        }
        self.sent = self.sent.max(first + n as u64);
        first
    }

    /// Whether a frame queued and never sent on any connection is larger
    /// than `max_frame` bytes: one [`Outbox::split_unsent`] would split.
    pub fn has_unsent_above(&self, max_frame: usize) -> bool {
        self.first_unsent_above(max_frame).is_some()
    }

    /// Where in `pending` the first frame never sent and larger than
    /// `max_frame` bytes is.
    fn first_unsent_above(&self, max_frame: usize) -> Option<usize> {
        let unsent = self.sent.max(self.done + self.unacked.len() as u64);
        let skip = usize::try_from(unsent - self.done).unwrap_or(usize::MAX) - self.unacked.len();
        self.pending
            .iter()
            .enumerate()
            .skip(skip)
            .find_map(|(i, f)| (f.len() > max_frame).then_some(i))
    }

    /// Splits the frames queued and never sent on any connection, from the
    /// first larger than `max_frame` bytes on, for a relay whose frame
    /// limit (announced in its welcome, [`crate::Session::relay_max_frame`])
    /// is smaller than the one they were made for: a backlog of writes held
    /// while the relay was out of reach, packed for the limit of before.
    /// `split` gets their messages (a frame that is not a message for
    /// everybody among them leaves them as they are) and the largest
    /// message such a frame carries, and returns the messages to send in
    /// their place, or `None` to leave them. A flush waiting for any of
    /// the frames replaced waits for all that replace them
    /// ([`Outbox::flush_target`]). Returns whether it replaced any.
    pub fn split_unsent<M: AsRef<[u8]>>(
        &mut self,
        max_frame: usize,
        split: impl FnOnce(&[&[u8]], usize) -> Option<Vec<M>>,
    ) -> bool {
        let Some(at) = self.first_unsent_above(max_frame) else {
            return false;
        };
        // Frames counted lost already are the relay's to drop, not to split.
        if self.counted > self.unacked.len() + at {
            return false;
        }
        let mut messages = Vec::with_capacity(self.pending.len() - at);
        for frame in self.pending.range(at..) {
            match Up::decode(frame.clone()) {
                Ok(Up::Broadcast(message)) => messages.push(message),
                _ => return false,
            }
        }
        let slices: Vec<&[u8]> = messages.iter().map(|m| &m[..]).collect();
        let Some(parts) = split(&slices, max_message(max_frame)) else {
            return false;
        };
        self.pending.truncate(at);
        self.pending.extend(
            parts
                .iter()
                .map(|m| Up::Broadcast(Bytes::copy_from_slice(m.as_ref())).encode()),
        );
        let from = self.done + (self.unacked.len() + at) as u64;
        self.queued = self.done + (self.unacked.len() + self.pending.len()) as u64;
        self.carried.push((from, self.queued));
        true
    }

    /// On a new connection: the unacknowledged frames go out again first,
    /// in their order, and acknowledgements count from zero.
    pub fn requeue_unacked(&mut self) {
        while let Some(frame) = self.unacked.pop_back() {
            self.pending.push_front(frame);
        }
        self.acked_here = 0;
    }

    /// Completes the frames up to the `n`-th sent on the current
    /// connection.
    ///
    /// # Errors
    /// [`ProtocolError::Ack`] when `n` goes back, or counts frames not sent.
    pub fn ack_up_to(&mut self, n: u64) -> Result<(), ProtocolError> {
        let bad = ProtocolError::Ack {
            n,
            acked: self.acked_here,
            outstanding: self.unacked.len(),
        };
        let Some(k) = n.checked_sub(self.acked_here) else {
            return Err(bad);
        };
        let k = usize::try_from(k).map_err(|_| bad.clone())?;
        if k > self.unacked.len() {
            return Err(bad);
        }
        self.unacked.drain(..k);
        self.acked_here = n;
        self.completed(k);
        Ok(())
    }

    /// As [`Outbox::ack_up_to`], for a count that a relay reported for a
    /// connection now gone: what it does not cover (already acknowledged,
    /// or more than was sent) is left alone. Returns how many frames it
    /// completed.
    pub fn ack_at_most(&mut self, n: u64) -> u64 {
        let before = self.acked_here;
        let upto = n.min(before + self.unacked.len() as u64);
        if upto > before && self.ack_up_to(upto).is_ok() {
            upto - before
        } else {
            0
        }
    }

    /// Completes the oldest unacknowledged frame, which the log stored at
    /// `position`.
    pub fn ack_oldest(&mut self, position: u64) {
        self.stored_at = self.stored_at.max(position);
        self.complete_oldest(true);
    }

    /// Completes the oldest unacknowledged frame without sending it: it can
    /// never be accepted.
    pub fn drop_oldest(&mut self) {
        if self.counted == 0 {
            self.dropped += self.unacked.front().map_or(0, |f| self.writes_in(f));
        }
        self.complete_oldest(false);
    }
    fn complete_oldest(&mut self, stored: bool) {
        let sent = self.unacked.pop_front();
        debug_assert!(sent.is_some(), "no frame awaits an acknowledgement");
        // A frame counted lost already is not counted again when refused.
        let keep = sent.filter(|_| stored && self.counted == 0);
        if let Some(kept) = self.kept.as_mut() {
            kept.push_back(keep);
        }
        self.acked_here += 1;
        self.completed(1);
    }

    /// The frame at connection-wide `index`, while this outbox holds it:
    /// queued, unacknowledged, or over a log stored and not read back yet
    /// (unless counted lost already).
    pub fn frame(&self, index: u64) -> Option<&Bytes> {
        match index.checked_sub(self.done) {
            Some(ahead) => {
                let ahead = usize::try_from(ahead).ok()?;
                match ahead.checked_sub(self.unacked.len()) {
                    None => self.unacked.get(ahead),
                    Some(queued) => self.pending.get(queued),
                }
            }
            None => {
                let kept = self.kept.as_ref()?;
                let behind = usize::try_from(self.done - index).ok()?;
                kept.len()
                    .checked_sub(behind)
                    .and_then(|i| kept[i].as_ref())
            }
        }
    }

    /// Over a log: the node read its frames back up to index `upto`
    /// (excluded); they are kept no longer.
    pub fn read_back(&mut self, upto: u64) {
        if let Some(kept) = self.kept.as_mut() {
            let oldest = self.done - kept.len() as u64;
            let n = upto.saturating_sub(oldest).min(kept.len() as u64);
            kept.drain(..n as usize);
        }
    }

    /// Over a log: counts as lost the writes of the frames of indices
    /// `from` to `to` (excluded), which the log refused or will refuse,
    /// each once, and returns how many. The ones not completed yet still
    /// go out and are acknowledged.
    pub fn count_refused_between(&mut self, from: u64, to: u64) -> u64 {
        let lost = self.refused_between(from, to);
        self.dropped += lost;
        lost
    }

    /// Over a log: [`Outbox::count_refused_between`] without counting them
    /// lost: their writes were carried over, what of them is lost counted
    /// by the caller ([`Outbox::count_refused`]). Returns how many writes
    /// they carry.
    pub fn refused_between(&mut self, from: u64, to: u64) -> u64 {
        let mut lost = 0;
        if let Some(kept) = self.kept.as_mut() {
            let oldest = self.done - kept.len() as u64;
            let writes = self.writes;
            for (i, frame) in kept.iter_mut().enumerate() {
                let index = oldest + i as u64;
                if (from..to).contains(&index) {
                    if let Some(f) = frame.take() {
                        lost += writes.map_or(1, |w| w(&f));
                    }
                }
            }
        }
        let outstanding = self.unacked.len() + self.pending.len();
        let upto = usize::try_from(to.saturating_sub(self.done))
            .unwrap_or(usize::MAX)
            .min(outstanding);
        let first = usize::try_from(from.saturating_sub(self.done)).unwrap_or(usize::MAX);
        lost += self
            .unacked
            .iter()
            .chain(&self.pending)
            .enumerate()
            .take(upto)
            .skip(self.counted.max(first))
            .map(|(_, f)| self.writes_in(f))
            .sum::<u64>();
        self.counted = self.counted.max(upto);
        lost
    }

    /// Over a log: the writes of the frames from index `from` on, which
    /// the log refused, were carried over into frames before index `to`
    /// (those the node's new incarnation queued since): a flush waiting
    /// for the first waits for the others ([`Outbox::flush_target`]).
    pub fn carried_over(&mut self, from: u64, to: u64) {
        self.carried.push((from, to));
    }

    /// What a flush of the frames before index `target` waits for: those,
    /// and those their writes were carried over or split into, in turn.
    pub fn flush_target(&self, mut target: u64) -> u64 {
        loop {
            let next = self
                .carried
                .iter()
                .filter(|&&(from, _)| target > from)
                .map(|&(_, to)| to)
                .fold(target, u64::max);
            if next == target {
                return target;
            }
            target = next;
        }
    }

    /// On a new connection that cannot take them: drops every frame not
    /// acknowledged yet, counts acknowledgements from zero, and returns
    /// how many writes the dropped frames not counted lost before carried
    /// (those writes are lost).
    pub fn drop_all(&mut self) -> u64 {
        let n = self.unacked.len() + self.pending.len();
        let lost = self
            .unacked
            .iter()
            .chain(&self.pending)
            .skip(self.counted)
            .map(|f| self.writes_in(f))
            .sum();
        self.unacked.clear();
        self.pending.clear();
        self.acked_here = 0;
        self.completed(n);
        self.dropped += lost;
        lost
    }

    /// Counts as lost the oldest frames not acknowledged yet for which
    /// `lost` holds (up to the first for which it does not): the relay
    /// will drop them, yet acknowledge them. Returns how many writes they
    /// carry (frames counted before are not counted again).
    pub fn count_lost_while(&mut self, mut lost: impl FnMut(&Bytes) -> bool) -> u64 {
        let mut prefix = 0;
        let mut writes = 0;
        for frame in self
            .unacked
            .iter()
            .chain(&self.pending)
            .skip(self.counted)
            .take_while(|f| lost(f))
        {
            prefix += 1;
            writes += self.writes_in(frame);
        }
        self.counted += prefix;
        self.dropped += writes;
        writes
    }

    /// Counts `n` writes that were acknowledged as lost after all: the log
    /// stored them, then refused them when it read them in order.
    pub fn count_refused(&mut self, n: u64) {
        self.dropped += n;
    }

    /// Takes no more frames.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Whether the outbox takes no more frames.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Frames ever queued.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Frames ever completed, acknowledged or dropped.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Writes of the frames ever dropped or refused.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The highest log position of a frame acknowledged by the log.
    pub fn stored_at(&self) -> u64 {
        self.stored_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u8) -> Bytes {
        Bytes::from(vec![i])
    }

    #[test]
    fn unacknowledged_frames_go_out_again_first_in_order() {
        let mut out = Outbox::default();
        for i in 0..4 {
            assert!(out.enqueue(frame(i)));
        }
        let mut batch = Vec::new();
        assert_eq!(out.take_batch(3, &mut batch), 0);
        assert_eq!(batch, [frame(0), frame(1), frame(2)]);
        out.ack_up_to(1).unwrap();
        assert_eq!(out.done(), 1);

        out.requeue_unacked();
        batch.clear();
        // The same indices as on the first connection.
        assert_eq!(out.take_batch(usize::MAX, &mut batch), 1);
        assert_eq!(batch, [frame(1), frame(2), frame(3)]);
        // A new connection counts its acknowledgements from zero.
        out.ack_up_to(2).unwrap();
        assert_eq!((out.queued(), out.done(), out.dropped()), (4, 3, 0));
        // An eviction drops the rest, and a closed outbox takes nothing.
        assert_eq!(out.drop_all(), 1);
        assert_eq!((out.done(), out.dropped()), (4, 1));
        // The next connection counts its acknowledgements from zero too.
        out.enqueue(frame(4));
        batch.clear();
        assert_eq!(out.take_batch(usize::MAX, &mut batch), 4);
        out.ack_up_to(1).unwrap();
        out.close();
        assert!(!out.enqueue(frame(9)));
        assert_eq!(out.queued(), 5);
    }

    #[test]
    fn acknowledgements_that_go_back_or_run_ahead_are_refused() {
        let mut out = Outbox::default();
        out.enqueue(frame(0));
        out.enqueue(frame(1));
        let mut batch = Vec::new();
        out.take_batch(usize::MAX, &mut batch);
        assert_eq!(
            out.ack_up_to(3),
            Err(ProtocolError::Ack {
                n: 3,
                acked: 0,
                outstanding: 2
            })
        );
        out.ack_up_to(2).unwrap();
        assert!(out.ack_up_to(1).is_err());
        assert_eq!(out.done(), 2);
    }

    #[test]
    fn frames_counted_lost_complete_when_acknowledged() {
        let mut out = Outbox::default();
        for i in 0..5 {
            out.enqueue(frame(i));
        }
        let mut batch = Vec::new();
        out.take_batch(2, &mut batch);
        out.ack_up_to(1).unwrap();
        // Frames 1 to 3 are lost, sent or not; frame 4 is not.
        assert_eq!(out.count_lost_while(|f| f[0] < 4), 3);
        assert_eq!((out.done(), out.dropped()), (1, 3));
        out.take_batch(usize::MAX, &mut batch);
        out.ack_up_to(5).unwrap();
        assert_eq!((out.queued(), out.done(), out.dropped()), (5, 5, 3));
    }

    #[test]
    fn a_frame_is_found_by_its_index_while_held() {
        let mut out = Outbox::over_log(|_| 1);
        for b in [b"a", b"b", b"c"] {
            out.enqueue(Bytes::from_static(b));
        }
        let mut batch = Vec::new();
        out.take_batch(2, &mut batch);
        out.ack_oldest(1 << 16);
        assert_eq!(out.frame(0).map(|f| &f[..]), Some(&b"a"[..]));
        assert_eq!(out.frame(1).map(|f| &f[..]), Some(&b"b"[..]));
        assert_eq!(out.frame(2).map(|f| &f[..]), Some(&b"c"[..]));
        assert_eq!(out.frame(3), None);
        out.read_back(1);
        assert_eq!(out.frame(0), None);
    }

    #[test]
    fn frames_complete_one_by_one_stored_or_dropped() {
        let mut out = Outbox::default();
        for i in 0..5 {
            out.enqueue(frame(i));
        }
        let mut batch = Vec::new();
        assert_eq!(out.take_batch(2, &mut batch), 0);
        out.ack_oldest(7);
        out.drop_oldest();
        assert_eq!((out.done(), out.dropped(), out.stored_at()), (2, 1, 7));
        // Stored, then refused when the log was read.
        out.count_refused(1);
        assert_eq!((out.done(), out.dropped()), (2, 2));
        batch.clear();
        assert_eq!(out.take_batch(8, &mut batch), 2);
        out.requeue_unacked();
        batch.clear();
        assert_eq!(out.take_batch(8, &mut batch), 2, "the same indices again");
        assert_eq!(batch, [frame(2), frame(3), frame(4)]);
    }

    #[test]
    fn only_frames_that_carry_writes_count_as_lost_and_only_once() {
        // Odd frames carry writes; even ones are heartbeats.
        let mut out = Outbox::counting(|f| u64::from(f[0] % 2 == 1));
        for i in 0..4 {
            out.enqueue(frame(i));
        }
        let mut batch = Vec::new();
        out.take_batch(3, &mut batch);
        // The old incarnation's frames 0 to 2 are lost: one write.
        assert_eq!(out.count_lost_while(|f| f[0] < 3), 1);
        assert_eq!(out.dropped(), 1);
        // Learnt of again: nothing more.
        assert_eq!(out.count_lost_while(|f| f[0] < 3), 0);
        // One of them is acknowledged (dropped by the relay) and the
        // connection fails; the next one drops the rest: frame 3 is the
        // only write not counted yet.
        out.ack_up_to(1).unwrap();
        out.requeue_unacked();
        assert_eq!(out.drop_all(), 1);
        assert_eq!((out.queued(), out.done(), out.dropped()), (4, 4, 2));
        // Heartbeats dropped one by one are not counted either.
        out.enqueue(frame(4));
        out.enqueue(frame(5));
        batch.clear();
        out.take_batch(usize::MAX, &mut batch);
        out.drop_oldest();
        out.drop_oldest();
        assert_eq!((out.done(), out.dropped()), (6, 3));
    }

    #[test]
    fn over_a_log_refused_frames_count_once_whether_stored_or_not() {
        let mut out = Outbox::over_log(|f| u64::from(f[0] % 2 == 1));
        for i in 0..6 {
            out.enqueue(frame(i));
        }
        let mut batch = Vec::new();
        out.take_batch(4, &mut batch);
        out.ack_oldest(10);
        out.drop_oldest();
        out.ack_oldest(11);
        out.ack_oldest(12);
        assert_eq!((out.done(), out.dropped()), (4, 1));
        // Frame 0 was read back; then the lease lapsed: frames 1 to 5 are
        // refused, stored or not, of which 3 and 5 are writes not counted
        // yet (frame 1, dropped, was counted).
        out.read_back(1);
        assert_eq!(out.count_refused_between(1, 6), 2);
        assert_eq!(out.count_refused_between(1, 6), 0, "counted once");
        out.read_back(6);
        // The rest go out and complete without being counted again.
        batch.clear();
        out.take_batch(usize::MAX, &mut batch);
        out.ack_oldest(13);
        out.drop_oldest();
        assert_eq!((out.queued(), out.done(), out.dropped()), (6, 6, 3));
    }

    #[test]
    fn refused_frames_whose_writes_were_carried_over_extend_a_flush() {
        let mut out = Outbox::over_log(|_| 1);
        for i in 0..4 {
            out.enqueue(frame(i));
        }
        // Frames 1 to 3 were refused after a lapse; their writes, one of
        // them lost, were carried over into frames 4 and 5.
        assert_eq!(out.refused_between(1, 4), 3);
        out.count_refused(1);
        out.enqueue(frame(4));
        out.enqueue(frame(5));
        out.carried_over(1, 6);
        assert_eq!(out.dropped(), 1, "only what the caller counted");
        assert_eq!(out.flush_target(1), 1, "frame 0 was not refused");
        assert_eq!(out.flush_target(3), 6);
        // Carried over again from frame 5 on, into frames before 9.
        out.carried_over(5, 9);
        assert_eq!(out.flush_target(3), 9, "in turn");
        assert_eq!(out.flush_target(1), 1);
    }

    /// Only frames never sent on any connection are split, from the first
    /// above the limit on; a flush waiting for one of them waits for all
    /// its parts, and one that did not wait for them is not held up.
    #[test]
    fn frames_never_sent_are_split_from_the_first_too_large() {
        let up = |n: usize| Up::Broadcast(Bytes::from(vec![7; n])).encode();
        let mut out = Outbox::default();
        // Sent on a connection now gone, not acknowledged: stays whole.
        out.enqueue(up(100));
        let mut batch = Vec::new();
        out.take_batch(usize::MAX, &mut batch);
        out.requeue_unacked();
        for n in [10, 100, 10] {
            out.enqueue(up(n));
        }
        let seen = std::cell::RefCell::new(Vec::new());
        let halves = |messages: &[&[u8]], max: usize| {
            seen.borrow_mut().extend(messages.iter().map(|m| m.len()));
            assert_eq!(max, 50 - crate::FRAME_OVERHEAD);
            Some(vec![vec![1; max], vec![2; 30], vec![3; 10]])
        };
        assert!(out.has_unsent_above(50) && !out.has_unsent_above(101));
        assert!(out.split_unsent(50, halves));
        assert!(!out.has_unsent_above(50));
        assert_eq!(*seen.borrow(), [100, 10], "from the first too large on");
        assert_eq!((out.queued(), out.done()), (5, 0));
        batch.clear();
        out.take_batch(usize::MAX, &mut batch);
        let lens: Vec<usize> = batch.iter().map(Bytes::len).collect();
        assert_eq!(lens, [101, 11, 50 - crate::FRAME_OVERHEAD + 1, 31, 11]);
        // A flush of the first two frames waits for them only; one that
        // waited for the split frame waits for every part.
        assert_eq!(out.flush_target(2), 2);
        assert_eq!(out.flush_target(3), 5);
        // Sent now: never split again, nor when `split` declines.
        out.requeue_unacked();
        assert!(!out.split_unsent(10, |_, _| -> Option<Vec<Vec<u8>>> {
            panic!("nothing to split")
        }));
        out.enqueue(up(100));
        assert!(!out.split_unsent(50, |_, _| None::<Vec<Vec<u8>>>));
        assert_eq!(out.queued(), 6);
        // A directed frame among them leaves them whole.
        out.enqueue(Up::To(3, Bytes::from_static(b"x")).encode());
        assert!(!out.split_unsent(50, |_, _| -> Option<Vec<Vec<u8>>> {
            panic!("not only broadcasts")
        }));
    }
}
