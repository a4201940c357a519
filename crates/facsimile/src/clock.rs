//! The node's clock, read on every call into the node to run due timers.
//!
//! The timers (reclamation, heartbeats, sync retries, lock leases) count in
//! tens of milliseconds at least, so where the system has a coarse
//! monotonic clock the node reads that: a few nanoseconds a read against
//! tens for the precise one, on a path that runs once per operation. A
//! timer then runs up to one tick of that clock (a few milliseconds) after
//! it is due.
//!
//! A [`LocalNetwork`](crate::LocalNetwork) in virtual time gives its nodes
//! a manual clock instead, shared by all of them and moved by the test, so
//! that heartbeats, evictions and reclamation run without sleeping.
//!
//! A network connection may read the tokio runtime's clock instead
//! (`ConnectOptions::runtime_clock`), so that a runtime whose time is
//! simulated (paused, or a turmoil host's) drives the node's timers too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Monotonic time since the clock was made: the system's, or a manual one.
#[derive(Clone)]
pub(crate) enum Clock {
    /// The system's monotonic clock, from `start` (nanoseconds: cheaper
    /// to subtract and convert than a `Duration`, on every call).
    Real { start: u64 },
    /// Nanoseconds set by [`Clock::advance`], shared by every clone.
    Manual(Arc<AtomicU64>),
    /// The tokio runtime's clock (simulated where the runtime's is), from
    /// `start`.
    #[cfg(feature = "tcp")]
    Runtime { start: tokio::time::Instant },
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock::Real { start: read() }
    }

    /// A clock that reads zero until [`Clock::advance`] moves it.
    pub(crate) fn manual() -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(0)))
    }

    /// The clock of the current tokio runtime.
    #[cfg(feature = "tcp")]
    pub(crate) fn runtime() -> Clock {
        Clock::Runtime {
            start: tokio::time::Instant::now(),
        }
    }

    /// Time since [`Clock::new`], or the manual time.
    pub(crate) fn now(&self) -> Duration {
        match self {
            Clock::Real { start } => Duration::from_nanos(read().saturating_sub(*start)),
            Clock::Manual(nanos) => Duration::from_nanos(nanos.load(Ordering::Acquire)),
            #[cfg(feature = "tcp")]
            Clock::Runtime { start } => start.elapsed(),
        }
    }

    /// Moves a manual clock forward to `to` (never back); a real clock
    /// ignores it.
    pub(crate) fn advance(&self, to: Duration) {
        if let Clock::Manual(nanos) = self {
            let to = u64::try_from(to.as_nanos()).unwrap_or(u64::MAX);
            nanos.fetch_max(to, Ordering::AcqRel);
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn read() -> u64 {
    use rustix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::MonotonicCoarse);
    // A monotonic clock never reads negative; in nanoseconds it fits a
    // u64 for 584 years.
    let (secs, nanos) = (t.tv_sec as u64, t.tv_nsec as u64);
    secs.wrapping_mul(1_000_000_000).wrapping_add(nanos)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn read() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let elapsed = ORIGIN.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_back_and_moves_on() {
        let clock = Clock::new();
        let mut last = clock.now();
        let first = last;
        while last == first {
            let t = clock.now();
            assert!(t >= last, "{t:?} after {last:?}");
            last = t;
        }
    }

    #[test]
    fn a_manual_clock_moves_only_forward_and_for_every_clone() {
        let clock = Clock::manual();
        let other = clock.clone();
        assert_eq!(clock.now(), Duration::ZERO);
        clock.advance(Duration::from_millis(5));
        assert_eq!(other.now(), Duration::from_millis(5));
        other.advance(Duration::from_millis(1));
        assert_eq!(clock.now(), Duration::from_millis(5));
    }
}
