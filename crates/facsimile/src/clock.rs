//! The node's clock, read on every call into the node to run due timers.
//!
//! The timers (reclamation, heartbeats, sync retries, lock leases) count in
//! tens of milliseconds at least, so where the system has a coarse
//! monotonic clock the node reads that: a few nanoseconds a read against
//! tens for the precise one, on a path that runs once per operation. A
//! timer then runs up to one tick of that clock (a few milliseconds) after
//! it is due.

use std::time::Duration;

/// Monotonic time since the clock was made.
pub(crate) struct Clock {
    start: Duration,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock { start: read() }
    }

    /// Time since [`Clock::new`].
    pub(crate) fn now(&self) -> Duration {
        read().saturating_sub(self.start)
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn read() -> Duration {
    use rustix::time::{ClockId, clock_gettime};
    let t = clock_gettime(ClockId::MonotonicCoarse);
    // A monotonic clock never reads negative.
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn read() -> Duration {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
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
}
