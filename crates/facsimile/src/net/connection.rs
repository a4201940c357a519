//! A connected node, whatever carries its frames: the handle users hold and
//! the state its transport's tasks share.

use std::collections::VecDeque;
use std::fmt;
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
    /// Connected to the server, but a publish failed, for this reason: over
    /// NATS, the stream stored nothing while the client was connected (it
    /// lost its quorum or JetStream is unavailable: the publish timed out
    /// or found no responder). Reported after a publish failed, not ahead
    /// of one: a node that writes nothing finds out by its heartbeat,
    /// published every third of its lease. Writes wait and are published
    /// again; the status returns to `Connected` once a publish is stored.
    /// Or, over NATS, the node cannot read on past messages the stream
    /// lacks that no snapshot covers (the reason is
    /// [`NetError::LogGap`]'s): its flushes wait until a node that read
    /// past them saves a snapshot, from which it starts over, `Connected`
    /// again.
    Degraded(String),
    /// Closed by [`Connection::close`] or [`Connection::abort`], or, for a
    /// node that left ([`Node::leave`](crate::Node::leave)) without
    /// closing, once a relay it reconnected to counts it gone: for good,
    /// no other state follows. Written after the changes asked before it,
    /// once every value borrowed from the status is let go.
    Closed,
    /// Closed by the relay, which refused something the node sent (a write
    /// on a read-only connection, say), for this reason. The connection
    /// does not reconnect: it would send the same again.
    Refused(String),
    /// Stopped for good, for this reason: the relay sent a frame larger
    /// than this node accepts ([`ConnectOptions::max_frame`](super::ConnectOptions::max_frame)),
    /// which it would send again after every reconnection; or the node's
    /// engine panicked on the connection's task (not a listener: their
    /// panics are logged and the connection goes on), leaving the replica
    /// perhaps half changed.
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
    pub(super) status: StatusWriter,
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
            status: StatusWriter::new(Status::Disconnected("connecting".into())),
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

    /// Ends the connection's tasks and fails its waiting flushes. The
    /// status is `Closed` for good once the changes asked before are
    /// written.
    pub(super) fn shut(&self) {
        self.complete(Outbox::close);
        self.cancel.cancel();
        self.status.set(Status::Closed);
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
    /// [`NetError::Closed`] when the connection was closed first;
    /// [`NetError::InListener`] when awaited inside a listener (or the
    /// sender) of any node, which it would wait for ever for (spawn it, or
    /// flush after the listener returns).
    pub async fn flush(&self) -> Result<(), NetError> {
        // The node's messages are handed over under its pump. This
        // thread holds this node's pump (a deadlock), or another node's,
        // whose listener on another thread may be waiting in turn for
        // this node's pump: no thread waits for a pump while it holds one.
        if Node::in_any_pump() {
            return Err(NetError::InListener);
        }
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
    /// current one, `changed()` to wait for the next. A value borrowed
    /// from it (what `wait_for` returns, say) may be held across an
    /// `.await`: it holds up the next state, written once it is let go,
    /// not the connection.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// How many times the node started over as a new incarnation because
    /// the relay had evicted it, or the log refused its writes (its locks
    /// were lost then).
    pub fn rejoins(&self) -> u64 {
        self.shared.rejoins.load(Ordering::Acquire)
    }

    /// Leaves the document: waits for the relay or the log to acknowledge
    /// this node's writes (or to refuse them: [`NetError::WritesLost`]),
    /// then says goodbye (the others stop waiting for this node and its
    /// locks are freed), waits for that to be acknowledged too, all within
    /// `timeout`, and closes the connection.
    ///
    /// # Errors
    /// As [`Connection::flush`], and [`NetError::Timeout`]. Awaited inside
    /// a listener, it does nothing: the node stays, connected.
    pub async fn close(self, timeout: Duration) -> Result<(), NetError> {
        // Before the node leaves: its flushes would be refused, and the
        // connection shut without the goodbye acknowledged.
        if Node::in_any_pump() {
            return Err(NetError::InListener);
        }
        // The writes first: a node that left reads nothing more, and over
        // NATS it is its own frames read back that tell a write the log
        // refused (one that raced another node's lock grant, or came after
        // its lease ran out).
        let leave = async {
            let writes = self.flush().await;
            self.node.leave();
            let goodbye = self.flush().await;
            writes.and(goodbye)
        };
        let r = match tokio::time::timeout(timeout, leave).await {
            Ok(r) => r,
            Err(_) => {
                self.node.leave();
                Err(NetError::Timeout {
                    what: "the relay to acknowledge the last messages",
                    after: timeout,
                })
            }
        };
        self.shared.shut();
        r
    }

    /// Drops the connection at once, without a goodbye, as a crash would:
    /// the relay evicts the node and frees its locks (over NATS, its lease
    /// runs out).
    pub fn abort(self) {
        self.shared.shut();
    }
}

/// A change of a connection's status: whether it changed it.
type StatusChange = Box<dyn FnOnce(&mut Status) -> bool + Send>;

/// Writes a connection's status for its transport's tasks and for
/// [`Connection::close`], in the order they ask, on a thread of the
/// runtime's blocking pool (of its own outside a runtime). Writing a watch
/// channel waits for every reader to let go of its value, and a caller may
/// hold the status it waited for (`wait_for`) across an `.await`: a task
/// writing it there would hold up its runtime thread (a current-thread
/// runtime whole), and with it whatever the caller awaits, a reconnection
/// or a flush. A closed connection stays so: no change is written after
/// `Closed`.
pub(super) struct StatusWriter {
    queue: Arc<StatusQueue>,
}

/// The status and the changes not yet written to it.
struct StatusQueue {
    status: watch::Sender<Status>,
    /// The changes not yet written, and whether a thread writes them.
    pending: Mutex<(VecDeque<StatusChange>, bool)>,
}

impl StatusWriter {
    /// A status of `initial`.
    pub(super) fn new(initial: Status) -> StatusWriter {
        StatusWriter {
            queue: Arc::new(StatusQueue {
                status: watch::channel(initial).0,
                pending: Mutex::default(),
            }),
        }
    }

    /// The status, as a watch channel.
    pub(super) fn subscribe(&self) -> watch::Receiver<Status> {
        self.queue.status.subscribe()
    }

    /// Sets the status to `status` at once, on this thread: only while the
    /// connection is not handed out yet, so that nobody holds the status
    /// and it is `status` when the connection is.
    pub(super) fn set_now(&self, status: Status) {
        self.queue.status.send_if_modified(|s| {
            if *s == Status::Closed {
                return false;
            }
            *s = status;
            true
        });
    }

    /// Changes the status with `change` after the changes asked before,
    /// unless the connection was closed: a closed connection stays so.
    pub(super) fn change(&self, change: impl FnOnce(&mut Status) -> bool + Send + 'static) {
        let mut pending = self.queue.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.0.push_back(Box::new(change));
        // One thread writes at a time, in order.
        if std::mem::replace(&mut pending.1, true) {
            return;
        }
        drop(pending);
        let writing = Writing(Some(self.queue.clone()));
        // A connection may be closed or dropped outside a runtime (from a
        // thread of the Python binding, say).
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || writing.run())),
            Err(_) => writing.on_a_thread(),
        }
    }

    /// Sets the status to `status`, after the changes asked before.
    pub(super) fn set(&self, status: Status) {
        self.change(move |s| {
            *s = status;
            true
        });
    }
}

/// The pending changes of a queue, to be written by whoever runs this. A
/// runtime whose blocking pool shuts down drops it unrun: the changes then
/// go to a thread of their own, else the queue would stay marked as being
/// written and no later change, `Closed` included, would ever be.
struct Writing(Option<Arc<StatusQueue>>);

impl Writing {
    fn run(mut self) {
        if let Some(queue) = self.0.take() {
            queue.write_pending();
        }
    }

    /// Writes the changes on a thread of its own, or here when no thread
    /// can be had (in order all the same).
    fn on_a_thread(mut self) {
        let Some(queue) = self.0.take() else {
            return;
        };
        let spare = queue.clone();
        let spawned = std::thread::Builder::new()
            .name("facsimile-status".into())
            .spawn(move || spare.write_pending());
        if spawned.is_err() {
            queue.write_pending();
        }
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        if self.0.is_some() {
            Writing(self.0.take()).on_a_thread();
        }
    }
}

impl StatusQueue {
    /// Writes the pending changes in order until none is left.
    fn write_pending(&self) {
        loop {
            let change = {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                match pending.0.pop_front() {
                    Some(change) => change,
                    None => {
                        pending.1 = false;
                        return;
                    }
                }
            };
            self.status
                .send_if_modified(|s| *s != Status::Closed && change(s));
        }
    }
}

impl fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not `borrow()`: it would wait behind a write waiting for a reader.
        f.debug_struct("StatusWriter")
            .field("status", &self.queue.status)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Waits until every change asked of `writer` is written.
    fn written(writer: &StatusWriter) {
        let started = Instant::now();
        while writer.queue.pending.lock().unwrap().1 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the status is still being written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Outside a runtime (a connection closed from a thread of the Python
    /// binding), a status held on this very thread holds up no change: it
    /// is written once let go, in order, and nothing after `Closed`.
    #[test]
    fn a_held_status_holds_up_no_change_outside_a_runtime() {
        let writer = StatusWriter::new(Status::Disconnected("connecting".into()));
        let mut status = writer.subscribe();
        let held = status.borrow_and_update();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let changes = [
            Status::Connected,
            Status::Disconnected("lost".into()),
            Status::Closed,
            Status::Connected,
            Status::Failed("late".into()),
        ];
        for change in changes {
            let seen = seen.clone();
            writer.change(move |s| {
                seen.lock().unwrap().push(s.clone());
                *s = change;
                true
            });
        }
        assert_eq!(*held, Status::Disconnected("connecting".into()));
        drop(held);
        written(&writer);
        // Each change saw the one before; none ran after `Closed`.
        assert_eq!(
            *seen.lock().unwrap(),
            [
                Status::Disconnected("connecting".into()),
                Status::Connected,
                Status::Disconnected("lost".into()),
            ]
        );
        assert_eq!(*status.borrow(), Status::Closed);
        writer.set_now(Status::Connected);
        assert_eq!(*status.borrow(), Status::Closed);
    }

    /// A change asked of a runtime that shut down (its blocking pool drops
    /// the write unrun) is written all the same, and so are the later ones.
    #[test]
    fn a_change_asked_of_a_runtime_that_shut_down_is_written() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        drop(runtime);
        let writer = StatusWriter::new(Status::Connected);
        let status = writer.subscribe();
        {
            let _inside = handle.enter();
            writer.set(Status::Disconnected("lost".into()));
        }
        written(&writer);
        assert_eq!(*status.borrow(), Status::Disconnected("lost".into()));
        writer.set(Status::Closed);
        written(&writer);
        assert_eq!(*status.borrow(), Status::Closed);
    }
}
