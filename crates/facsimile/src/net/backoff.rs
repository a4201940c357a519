//! The waits of every retry loop of the transports.

use std::time::Duration;

/// How long a retry loop waits before each attempt: `min`, doubling up to
/// `max` while attempts fail, optionally with jitter, optionally no longer
/// than a hard cap, and optionally not at all before the first attempt.
#[derive(Clone, Copy, Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    /// No wait exceeds it, jitter included.
    cap: Option<Duration>,
    /// Spreads the waits over ±25 %, so that nodes cut off together do not
    /// come back together.
    jitter: bool,
    /// The first attempt goes at once.
    immediate: bool,
}

impl Backoff {
    /// `min` doubling up to `max` (at least `min`), without jitter.
    pub(super) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            cap: None,
            jitter: false,
            immediate: false,
        }
    }

    /// Spreads each wait over ±25 %.
    #[cfg(feature = "tcp")]
    pub(super) fn jitter(mut self) -> Backoff {
        self.jitter = true;
        self
    }

    /// No wait longer than `cap`.
    #[cfg(feature = "nats")]
    pub(super) fn cap(mut self, cap: Duration) -> Backoff {
        self.cap = Some(cap);
        self
    }

    /// The first attempt goes without waiting; the doubling starts at the
    /// second.
    #[cfg(feature = "nats")]
    pub(super) fn immediate_first(mut self) -> Backoff {
        self.immediate = true;
        self
    }

    /// The wait before attempt `attempt`, counted from 0.
    pub(super) fn delay(&self, attempt: u32) -> Duration {
        let doublings = match (self.immediate, attempt) {
            (true, 0) => return Duration::ZERO,
            (true, n) => n - 1,
            (false, n) => n,
        };
        let base = self
            .min
            .saturating_mul(2u32.saturating_pow(doublings.min(31)))
            .min(self.max);
        let wait = if self.jitter {
            // Saturating: a wait too long to spread (`Duration::MAX` for
            // never) stays as good as never.
            let spread = base.as_secs_f64() * (rand::random::<f64>() * 0.5 + 0.75);
            Duration::try_from_secs_f64(spread).unwrap_or(Duration::MAX)
        } else {
            base
        };
        match self.cap {
            Some(cap) => wait.min(cap),
            None => wait,
        }
    }

    /// A loop's attempts under this policy.
    pub(super) fn attempts(self) -> Attempts {
        Attempts {
            policy: self,
            next: 0,
        }
    }
}

/// The attempts of one retry loop: each [`Attempts::next_delay`] is the
/// wait before the next attempt; [`Attempts::reset`] after a success.
#[derive(Debug)]
pub(super) struct Attempts {
    policy: Backoff,
    next: u32,
}

impl Attempts {
    /// The wait before the next attempt.
    pub(super) fn next_delay(&mut self) -> Duration {
        let d = self.policy.delay(self.next);
        self.next = self.next.saturating_add(1);
        d
    }

    /// Starts over from the first wait.
    pub(super) fn reset(&mut self) {
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_min_to_max() {
        let mut a = Backoff::new(100 * MS, 1000 * MS).attempts();
        let waits: Vec<_> = (0..6).map(|_| a.next_delay()).collect();
        assert_eq!(
            waits,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        a.reset();
        assert_eq!(a.next_delay(), 100 * MS);
    }

    #[test]
    #[cfg(feature = "nats")]
    fn the_first_attempt_can_go_at_once_and_the_cap_bounds_every_wait() {
        let policy = Backoff::new(20 * MS, 10_000 * MS)
            .cap(250 * MS)
            .immediate_first();
        assert_eq!(policy.delay(0), Duration::ZERO);
        for attempt in 1..64 {
            assert!(policy.delay(attempt) <= 250 * MS, "{attempt}");
        }
        assert!(policy.delay(u32::MAX) <= 250 * MS);
    }

    /// `Duration::MAX` is never: spread by the jitter, it stays so.
    #[test]
    #[cfg(feature = "tcp")]
    fn a_wait_of_never_spread_is_no_panic() {
        let policy = Backoff::new(Duration::MAX, Duration::MAX).jitter();
        for attempt in [0, 1, 31, u32::MAX] {
            for _ in 0..64 {
                assert!(policy.delay(attempt) >= Duration::MAX / 2, "{attempt}");
            }
        }
    }

    #[test]
    #[cfg(feature = "tcp")]
    fn jitter_stays_within_a_quarter() {
        let policy = Backoff::new(400 * MS, 400 * MS).jitter();
        for _ in 0..100 {
            let d = policy.delay(3);
            assert!(d >= 300 * MS && d <= 500 * MS, "{d:?}");
        }
    }
}
