//! The last messages of this replica's stream, kept for a peer that asks to
//! have them again.

use std::collections::VecDeque;
use std::sync::Arc;

/// A bounded log of sent messages, copied into one ring of bytes.
///
/// The log keeps its own copy rather than a share of each transmitted
/// message: releasing a share thousands of messages later touched memory
/// long gone from the caches on every send.
#[derive(Debug, Default)]
pub(crate) struct ResendLog {
    /// Sequence number and length of each message kept, oldest first.
    entries: VecDeque<(u64, usize)>,
    /// The kept messages, back to back, oldest first.
    bytes: VecDeque<u8>,
}

impl ResendLog {
    /// Keeps `msg` as message `seq`, dropping the oldest messages beyond the
    /// last `keep`.
    pub(crate) fn push(&mut self, seq: u64, msg: &[u8], keep: usize) {
        if keep == 0 {
            return;
        }
        while self.entries.len() >= keep {
            self.pop();
        }
        self.entries.push_back((seq, msg.len()));
        self.bytes.extend(msg);
    }

    fn pop(&mut self) {
        if let Some((_, len)) = self.entries.pop_front() {
            self.bytes.drain(..len);
        }
    }

    /// Drops the messages up to `seq`, included, beyond the last `keep`.
    pub(crate) fn forget_through(&mut self, seq: u64, keep: usize) {
        while self.entries.len() > keep && self.entries.front().is_some_and(|&(s, _)| s <= seq) {
            self.pop();
        }
    }

    /// Every message from `from_seq` on, oldest first; `None` when the log
    /// no longer reaches back to `from_seq`.
    pub(crate) fn since(&self, from_seq: u64) -> Option<Vec<Arc<[u8]>>> {
        let &(first, _) = self.entries.front()?;
        if first > from_seq {
            return None;
        }
        let mut start = 0;
        let mut out = Vec::new();
        for &(seq, len) in &self.entries {
            if seq >= from_seq {
                out.push(self.bytes.range(start..start + len).copied().collect());
            }
            start += len;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Vec<u8> {
        // Lengths 0 to 6, so that the ring wraps at varied offsets.
        (0..seq % 7).map(|i| (seq * 31 + i) as u8).collect()
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
                let want: Vec<Arc<[u8]>> = (from..=seq).map(|s| msg(s).into()).collect();
                assert_eq!(log.since(from), Some(want), "seq {seq} from {from}");
            }
        }
    }

    #[test]
    fn keeps_nothing_when_told_to() {
        let mut log = ResendLog::default();
        log.push(1, b"abc", 0);
        assert_eq!(log.since(1), None);
    }
}
