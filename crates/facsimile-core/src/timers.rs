//! The replica's timers, in one table: [`crate::Replica::poll_timeout`] is
//! the earliest deadline, [`crate::Replica::handle_timeout`] runs the ones
//! that are due.

use std::time::Duration;

/// One kind of timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The next reclamation pass (and acknowledgement of the frontier).
    Gc,
    /// The next heartbeat: a heartbeat interval after the last message
    /// sent, when failure detection or a lease is configured.
    Heartbeat,
    /// The joiner's next sync retry: asking the next peer that offered, or
    /// asking everyone again.
    Sync,
    /// When the member heard from longest ago turns silent for too long,
    /// under failure detection: evictions come on time, not at the next
    /// heartbeat or reclamation pass.
    Silence,
}

const COUNT: usize = 4;

impl Timer {
    fn slot(self) -> usize {
        match self {
            Timer::Gc => 0,
            Timer::Heartbeat => 1,
            Timer::Sync => 2,
            Timer::Silence => 3,
        }
    }
}

/// A deadline per timer; unset timers never fire.
#[derive(Debug, Default, Clone)]
pub(crate) struct TimerTable {
    at: [Option<Duration>; COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Duration) {
        self.at[timer.slot()] = Some(at);
    }

    /// Unsets a timer, returning its deadline.
    pub(crate) fn stop(&mut self, timer: Timer) -> Option<Duration> {
        self.at[timer.slot()].take()
    }

    /// Whether `timer` is due at `now`; a due timer is unset.
    pub(crate) fn expired(&mut self, timer: Timer, now: Duration) -> bool {
        let due = self.at[timer.slot()].is_some_and(|at| at <= now);
        if due {
            self.at[timer.slot()] = None;
        }
        due
    }

    /// The earliest deadline.
    pub(crate) fn next_timeout(&self) -> Option<Duration> {
        self.at.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_timeout_is_the_earliest_set() {
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::Gc, Duration::from_secs(3));
        t.set(Timer::Heartbeat, Duration::from_secs(1));
        assert_eq!(t.next_timeout(), Some(Duration::from_secs(1)));
        assert!(!t.expired(Timer::Gc, Duration::from_secs(2)));
        assert!(t.expired(Timer::Heartbeat, Duration::from_secs(2)));
        assert_eq!(t.next_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(t.stop(Timer::Gc), Some(Duration::from_secs(3)));
        assert_eq!(t.next_timeout(), None);
    }
}
