//! A connected node, whatever carries its frames: the handle users hold and
//! the state its transport's tasks share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[cfg(feature = "nats")]
use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::error::NetError;
use super::protocol::Outbox;
use crate::node::Node;

/// The state of a connection, as reported by [`Connection::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Connected: messages flow.
    Connected,
    /// Reconnecting after this error.
    Disconnected(String),
    /// Connected to the server, but the document's store takes no writes,
    /// for this reason: over NATS, the stream lost its quorum or JetStream
    /// is unavailable (publishes time out or find no responder). Writes
    /// wait and are sent again; the status returns to `Connected` once the
    /// stream stores them.
    Degraded(String),
    /// Closed by [`Connection::close`] or [`Connection::abort`].
    Closed,
    /// Closed by the relay, which refused something the node sent (a write
    /// on a read-only connection, say), for this reason. The connection
    /// does not reconnect: it would send the same again.
    Refused(String),
    /// Stopped for good, for this reason: the relay sent a frame larger
    /// than this node accepts ([`ConnectOptions::max_frame`](super::ConnectOptions::max_frame)),
    /// which it would send again after every reconnection.
    Failed(String),
}

/// A node connected to a relay or to NATS, with the background tasks that
/// carry its messages. The tasks reconnect on errors and end when the
/// connection is closed or every clone of the node is dropped. Cheap to
/// clone: clones share the connection.
#[derive(Clone, Debug)]
pub struct Connection {
    pub(super) node: Node,
    pub(super) shared: Arc<Shared>,
}

/// What a connection's tasks share.
#[derive(Debug)]
pub(super) struct Shared {
    outbox: Mutex<Outbox>,
    /// Wakes the sender when frames are queued.
    pub(super) queued: Notify,
    /// Wakes flush waiters when frames complete.
    progress: Notify,
    pub(super) status: watch::Sender<Status>,
    rejoins: AtomicU64,
    /// Frames dropped that a flush has reported ([`Outbox::dropped`] then).
    reported_drops: AtomicU64,
    pub(super) cancel: CancellationToken,
    /// Over a log (NATS): the position up to which the node has read the
    /// log. Its own stored frames count as acknowledged once it has read
    /// them back, so that a write the log refused is not acknowledged.
    pub(super) log_read: watch::Sender<u64>,
}

impl Shared {
    /// The state of a connection whose frames wait in `outbox`.
    pub(super) fn new(outbox: Outbox) -> Shared {
        Shared {
            outbox: Mutex::new(outbox),
            queued: Notify::new(),
            progress: Notify::new(),
            status: watch::channel(Status::Disconnected("connecting".into())).0,
            rejoins: AtomicU64::new(0),
            reported_drops: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            log_read: watch::channel(0).0,
        }
    }

    /// The outbox, for a change that completes no frame (else
    /// [`Shared::complete`]).
    pub(super) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the outbox in a way that may complete frames, and wakes the
    /// flush waiters.
    pub(super) fn complete<R>(&self, f: impl FnOnce(&mut Outbox) -> R) -> R {
        let r = f(&mut self.outbox());
        self.progress.notify_waiters();
        r
    }

    /// Queues a frame and wakes the sender.
    #[cfg(feature = "nats")]
    pub(super) fn enqueue(&self, frame: Bytes) {
        if self.outbox().enqueue(frame) {
            self.queued.notify_one();
        }
    }

    /// Counts one more start over as a new incarnation.
    pub(super) fn rejoined(&self) {
        self.rejoins.fetch_add(1, Ordering::AcqRel);
    }
}

impl Connection {
    /// The connected node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Waits until every message the node sent before this call is
    /// acknowledged: applied by the relay and on its disk, or, over NATS,
    /// stored by the stream and read back by the node, which checks that
    /// the log accepted them.
    ///
    /// # Errors
    /// [`NetError::WritesLost`] when some of them were dropped because the
    /// relay had evicted the node or the log refused them (reported once:
    /// by the flushes under way then, or else by the next one). Over NATS,
    /// the writes the node made again after its lease ran out are waited
    /// for in their new messages, and only the others are reported;
    /// [`NetError::Closed`] when the connection was closed first.
    pub async fn flush(&self) -> Result<(), NetError> {
        // Messages the node queued but has not handed to the transport yet
        // (a listener's writes, or writes another thread's pump is still
        // sending) are handed over before the target is taken.
        self.node.send_held();
        self.node.pump_all();
        // Drops no flush has reported yet count too: those messages were
        // sent before this call and are not acknowledged.
        let mut target = {
            let outbox = self.shared.outbox();
            // Closed, it takes nothing more: a write made since went
            // nowhere, and no count says so.
            if outbox.is_closed() {
                return Err(NetError::Closed);
            }
            outbox.queued()
        };
        let dropped_before = self.shared.reported_drops.load(Ordering::Acquire);
        loop {
            let stored_at = loop {
                let notified = self.shared.progress.notified();
                {
                    let outbox = self.shared.outbox();
                    if outbox.done() >= target {
                        break outbox.stored_at();
                    }
                    if outbox.is_closed() {
                        return Err(NetError::Closed);
                    }
                }
                notified.await;
            };
            // Over a log: read back up to the last of them. A refusal found
            // on the way is counted as dropped before the position passes
            // it.
            let mut read = self.shared.log_read.subscribe();
            tokio::select! {
                // Read back already (over a relay at once): done, though
                // the connection closed meanwhile.
                biased;
                r = read.wait_for(|&p| p >= stored_at) => {
                    if r.is_err() {
                        return Err(NetError::Closed);
                    }
                }
                _ = self.shared.cancel.cancelled() => return Err(NetError::Closed),
            }
            // Writes the log refused after a lapse of the lease and the
            // new incarnation carried over are acknowledged once their new
            // messages are.
            let next = self.shared.outbox().flush_target(target);
            if next <= target {
                break;
            }
            target = next;
        }
        let dropped = self.shared.outbox().dropped();
        self.shared
            .reported_drops
            .fetch_max(dropped, Ordering::AcqRel);
        let lost = dropped.saturating_sub(dropped_before);
        if lost > 0 {
            Err(NetError::WritesLost(lost))
        } else {
            Ok(())
        }
    }

    /// The connection's state, as a watch channel: `borrow()` for the
    /// current one, `changed()` to wait for the next.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// How many times the node started over as a new incarnation because
    /// the relay had evicted it, or the log refused its writes (its locks
    /// were lost then).
    pub fn rejoins(&self) -> u64 {
        self.shared.rejoins.load(Ordering::Acquire)
    }

    /// Leaves the document: says goodbye (the others stop waiting for this
    /// node and its locks are freed at once), waits up to `timeout` for the
    /// relay or the log to acknowledge everything, and closes the
    /// connection.
    ///
    /// # Errors
    /// As [`Connection::flush`], and [`NetError::Timeout`].
    pub async fn close(self, timeout: Duration) -> Result<(), NetError> {
        self.node.leave();
        let r = match tokio::time::timeout(timeout, self.flush()).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout {
                what: "the relay to acknowledge the last messages",
                after: timeout,
            }),
        };
        self.shut();
        r
    }

    /// Drops the connection at once, without a goodbye, as a crash would:
    /// the relay evicts the node and frees its locks (over NATS, its lease
    /// runs out).
    pub fn abort(self) {
        self.shut();
    }

    /// Ends the connection's tasks and fails its waiting flushes.
    pub(super) fn shut(&self) {
        self.shared.complete(Outbox::close);
        self.shared.cancel.cancel();
        let _ = self.shared.status.send_replace(Status::Closed);
    }
}
