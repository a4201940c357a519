//! Settings of a replica.

use std::time::Duration;

use crate::codec::WireFormat;
#[allow(unused_imports)] // doc links
use crate::{Error, ReceiveError, Replica};

/// Settings of a [`Replica`]: `Default` plus chained setters. A duration
/// longer than a hundred years counts as a hundred years, so that
/// `Duration::MAX` can stand for "never".
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) format: WireFormat,
    pub(crate) max_message: usize,
    pub(crate) max_backlog: usize,
    pub(crate) resend_log: usize,
    pub(crate) gc_interval: Duration,
    pub(crate) sync_timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) peer_timeout: Option<Duration>,
    pub(crate) lease: Option<Duration>,
    pub(crate) relay: bool,
    pub(crate) observer: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: WireFormat::Binary,
            max_message: 64 << 20,
            max_backlog: 256 << 20,
            resend_log: 4096,
            gc_interval: Duration::from_secs(1),
            sync_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            peer_timeout: None,
            lease: None,
            relay: false,
            observer: false,
        }
    }
}

impl Config {
    /// Encoding of outgoing messages (incoming ones are recognised either
    /// way).
    ///
    /// ```
    /// use facsimile_core::{Config, WireFormat};
    /// let config = Config::default().wire_format(WireFormat::Json);
    /// ```
    pub fn wire_format(mut self, format: WireFormat) -> Self {
        self.format = format;
        self
    }

    /// Largest message accepted, in bytes (default 64 MiB). Larger input is
    /// refused with [`ReceiveError::TooLarge`], and a local write whose
    /// message could be larger with [`Error::TooLarge`], before it changes
    /// anything: give every replica of a document the same limit, at most
    /// what its transport carries (the relay and NATS clients set it so).
    ///
    /// ```
    /// let config = facsimile_core::Config::default().max_message_size(1 << 20);
    /// ```
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// The most bytes a message may take, as [`Config::max_message_size`]
    /// set it.
    pub fn message_size_limit(&self) -> usize {
        self.max_message
    }

    /// Most bytes of messages held back while waiting for a sync or for a
    /// missing predecessor (default 256 MiB).
    ///
    /// ```
    /// let config = facsimile_core::Config::default().max_backlog(16 << 20);
    /// ```
    pub fn max_backlog(mut self, bytes: usize) -> Self {
        self.max_backlog = bytes;
        self
    }

    /// How many of its own recent messages a replica keeps to resend to a
    /// peer that missed them (default 4096).
    ///
    /// ```
    /// let config = facsimile_core::Config::default().resend_log(128);
    /// ```
    pub fn resend_log(mut self, messages: usize) -> Self {
        self.resend_log = messages;
        self
    }

    /// How often unreachable objects are looked for and acknowledgements
    /// sent (default one second).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_core::Config::default().gc_interval(Duration::from_millis(200));
    /// ```
    pub fn gc_interval(mut self, interval: Duration) -> Self {
        self.gc_interval = at_most_forever(interval);
        self
    }

    /// How long a joiner waits for the chosen peer's answer before asking
    /// another (default five seconds).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_core::Config::default().sync_timeout(Duration::from_secs(1));
    /// ```
    pub fn sync_timeout(mut self, timeout: Duration) -> Self {
        self.sync_timeout = at_most_forever(timeout);
        self
    }

    /// Detects silent peers: send a heartbeat when nothing was sent for
    /// `heartbeat`, and evict a member not heard from for `timeout` (its
    /// locks are freed and it is no longer waited for). Off by default, since
    /// it needs [`Replica::handle_timeout`] to be called regularly. A
    /// heartbeat shorter than a millisecond is one.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_core::Config::default()
    ///     .failure_detection(Duration::from_millis(500), Duration::from_secs(5));
    /// ```
    pub fn failure_detection(mut self, heartbeat: Duration, timeout: Duration) -> Self {
        self.heartbeat = heartbeat_period(heartbeat);
        self.peer_timeout = Some(at_most_forever(timeout));
        self
    }

    /// Runs over a totally ordered log ([`Replica::handle_ordered`]): locks
    /// are granted by log order with the log position as fencing token, and
    /// a peer whose last message in the log is older than `lease` (by the
    /// log's timestamps) loses its locks and membership. Heartbeats go out
    /// every third of the lease (at most every millisecond). Such a replica takes writes and lock
    /// requests once it has read its own first message back from the log
    /// ([`Replica::joined_log`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_core::Config::default().ordered(Duration::from_secs(3));
    /// ```
    pub fn ordered(mut self, lease: Duration) -> Self {
        let lease = at_most_forever(lease);
        self.lease = Some(lease);
        self.heartbeat = heartbeat_period(lease / 3);
        self
    }

    /// This replica is the relay its peers' broadcasts pass through: it
    /// applies each before any peer receives it, in the order they all
    /// receive it. It then answers a joiner's fetch at once: whatever the
    /// joiner did not hear it has applied, so it waits for no member's
    /// offer, and a member that went silent (a link down without a FIN)
    /// cannot hold joiners up until it is evicted.
    ///
    /// ```
    /// let config = facsimile_core::Config::default().relay();
    /// ```
    pub fn relay(mut self) -> Self {
        self.relay = true;
        self
    }

    /// This replica only reads: it refuses its own writes, lock requests
    /// and evictions ([`Error::Observer`]), and tells its peers so before
    /// anything else, so that none counts it as a member. None then waits
    /// for it: a watcher or an inspector that stalls (a stopped process, a
    /// throttled browser tab) holds up no lock grant and no reclamation,
    /// and its peers refuse a write it sends. Peers of an earlier version
    /// refuse its messages.
    ///
    /// ```
    /// let config = facsimile_core::Config::default().observer();
    /// ```
    pub fn observer(mut self) -> Self {
        self.observer = true;
        self
    }

    /// Whether the replica only reads ([`Config::observer`]).
    pub fn is_observer(&self) -> bool {
        self.observer
    }
}

impl Config {
    /// How long a replica stays silent before it sends a heartbeat (when it
    /// sends any: with failure detection or a lease).
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Whether heartbeats go out: for failure detection, or to renew a
    /// lease in an ordered log.
    pub(crate) fn heartbeats(&self) -> Option<Duration> {
        (self.peer_timeout.is_some() || self.lease.is_some()).then_some(self.heartbeat)
    }
}

/// A hundred years: what a longer duration given to [`Config`] becomes,
/// so that a timer set that far from now (`Duration::MAX` for "never") does
/// not overflow the clock.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn at_most_forever(d: Duration) -> Duration {
    d.min(FOREVER)
}

/// A heartbeat period as given, within a millisecond and [`FOREVER`]:
/// a shorter one would send a heartbeat at nearly every call into the
/// replica.
fn heartbeat_period(d: Duration) -> Duration {
    at_most_forever(d).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Config;

    #[test]
    fn a_heartbeat_is_at_least_a_millisecond() {
        let ns = Duration::from_nanos(1);
        let ms = Duration::from_millis(1);
        assert_eq!(Config::default().failure_detection(ns, ns).heartbeat(), ms);
        assert_eq!(Config::default().ordered(ns).heartbeat(), ms);
        let s = Duration::from_secs(3);
        assert_eq!(
            Config::default().ordered(s).heartbeat(),
            Duration::from_secs(1)
        );
    }
}
