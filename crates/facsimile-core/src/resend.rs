//! The last messages of this replica's stream, kept for a peer that asks to
//! have them again.

use std::collections::VecDeque;
use std::sync::Arc;

/// Messages longer than this are kept as a share of the transmitted
/// message instead of a copy: copying a large message (a batch of a
/// million writes is one) would hold it twice once the transport let its
/// share go, and the buffer keeps its largest size.
const SHARE_ABOVE: usize = 16 << 10;

/// A bounded log of sent messages: small ones copied into one buffer of
/// bytes, large ones shared.
///
/// The log keeps its own copy of small messages rather than a share of
/// each: releasing a share thousands of messages later touched memory long
/// gone from the caches on every send.
#[derive(Debug, Default)]
pub(crate) struct ResendLog {
    /// Sequence number and contents of each message kept, oldest first.
    entries: VecDeque<(u64, Kept)>,
    /// The small messages kept, back to back, oldest first, from `start`
    /// on: a dropped message only moves `start`, and the bytes before it
    /// go once they are half of the buffer (a ring of bytes cost more per
    /// message: its drain and byte-wise extend).
    bytes: Vec<u8>,
    start: usize,
}

#[derive(Debug)]
enum Kept {
    /// This many bytes of the buffer.
    Buffered(usize),
    /// A share of the transmitted message.
    Shared(Arc<[u8]>),
}

impl ResendLog {
    /// Keeps `msg` as message `seq`, dropping the oldest messages beyond the
    /// last `keep`.
    pub(crate) fn push(&mut self, seq: u64, msg: &Arc<[u8]>, keep: usize) {
        if keep == 0 {
            return;
        }
        while self.entries.len() >= keep {
            self.pop();
        }
        if msg.len() > SHARE_ABOVE {
            self.entries.push_back((seq, Kept::Shared(msg.clone())));
        } else {
            self.entries.push_back((seq, Kept::Buffered(msg.len())));
            if self.start > 0 && self.start * 2 >= self.bytes.len() {
                self.bytes.drain(..self.start);
                self.start = 0;
            }
            self.bytes.extend_from_slice(msg);
        }
    }

    fn pop(&mut self) {
        if let Some((_, Kept::Buffered(len))) = self.entries.pop_front() {
            self.start += len;
        }
    }

    /// Drops the messages up to `seq`, included, beyond the last `keep`.
    pub(crate) fn forget_through(&mut self, seq: u64, keep: usize) {
        while self.entries.len() > keep && self.entries.front().is_some_and(|&(s, _)| s <= seq) {
            self.pop();
        }
    }

    /// Drops the messages from `seq` on: they were numbered again
    /// ([`crate::Replica::resplit_unsent`]).
    pub(crate) fn truncate_from(&mut self, seq: u64) {
        while self.entries.back().is_some_and(|&(s, _)| s >= seq) {
            if let Some((_, Kept::Buffered(len))) = self.entries.pop_back() {
                // The small messages are back to back: the last is at the end.
                self.bytes.truncate(self.bytes.len() - len);
            }
        }
    }

    /// Every message from `from_seq` on, oldest first; `None` when the log
    /// no longer reaches back to `from_seq`.
    pub(crate) fn since(&self, from_seq: u64) -> Option<Vec<Arc<[u8]>>> {
        let &(first, _) = self.entries.front()?;
        if first > from_seq {
            return None;
        }
        let mut start = self.start;
        let mut out = Vec::new();
        for (seq, kept) in &self.entries {
            match kept {
                Kept::Buffered(len) => {
                    if *seq >= from_seq {
                        out.push(Arc::from(&self.bytes[start..start + len]));
                    }
                    start += len;
                }
                Kept::Shared(msg) if *seq >= from_seq => out.push(msg.clone()),
                Kept::Shared(_) => {}
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Arc<[u8]> {
        // Lengths 0 to 6, so that the buffer's front moves by varied amounts, and
        // every tenth one shared.
        let len = match seq % 10 {
            0 => SHARE_ABOVE as u64 + seq,
            _ => seq % 7,
        };
        (0..len).map(|i| (seq * 31 + i) as u8).collect()
    }

    #[test]
    fn keeps_the_last_messages_in_order() {
        let mut log = ResendLog::default();
        assert_eq!(log.since(1), None);
        for seq in 1..=1_000 {
            log.push(seq, &msg(seq), 10);
            let first = seq.saturating_sub(9).max(1);
            assert_eq!(log.since(first - 1), None, "seq {seq}");
            for from in first..=seq + 1 {
                let want: Vec<Arc<[u8]>> = (from..=seq).map(msg).collect();
                assert_eq!(log.since(from), Some(want), "seq {seq} from {from}");
            }
        }
    }

    #[test]
    fn truncated_messages_are_replaced_by_the_ones_kept_after() {
        let mut log = ResendLog::default();
        for seq in 1..=30 {
            log.push(seq, &msg(seq), 25);
        }
        log.truncate_from(21);
        assert_eq!(log.since(21), Some(Vec::new()));
        for seq in 21..=40 {
            log.push(seq, &msg(seq + 100), 25);
        }
        let want: Vec<Arc<[u8]>> = (16..=20).map(msg).chain((121..=140).map(msg)).collect();
        assert_eq!(log.since(16), Some(want));
        // Truncated whole, then kept again from the start of the buffer.
        log.truncate_from(1);
        assert_eq!(log.since(1), None);
        log.push(1, &msg(1), 25);
        assert_eq!(log.since(1), Some(vec![msg(1)]));
    }

    #[test]
    fn keeps_nothing_when_told_to() {
        let mut log = ResendLog::default();
        log.push(1, &Arc::from(&b"abc"[..]), 0);
        assert_eq!(log.since(1), None);
    }
}
