//! Runs a connected node's timers when they are due, and keeps the panics
//! of its listeners from ending a transport's tasks.
//!
//! The replica says when it next needs the time (`poll_timeout`:
//! heartbeats, sync retries, reclamation); the driver sleeps until then.
//! Calls into the node run due timers too, so the driver only matters while
//! the node is otherwise idle.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::connection::{Shared, Status};
use super::protocol::Outbox;
use crate::events;
use crate::node::{Inner, Node};

/// The longest sleep: the driver looks again at least this often, in case
/// a timer was set earlier than the one it sleeps for without a
/// notification (with the default settings every new timer falls after
/// the armed one: a heartbeat or a reclamation pass is due within a
/// second, a sync retry after five).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The shortest sleep. The node reads a coarse clock, so a timer can look
/// due to the driver's sleep yet not to the node for a few milliseconds;
/// and a tick that found another thread pumping leaves its timers to that
/// thread. Waiting this long at least keeps either from spinning.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// Runs the node's timers until the connection closes or the node is gone.
/// Woken early when the connection's status changes: a reconnection may
/// have made the node resync or rejoin, which sets new timers.
pub(super) async fn run_timers(shared: Arc<Shared>, node: Weak<Inner>) {
    let mut status = shared.status.subscribe();
    loop {
        let next = match Node::upgrade(&node) {
            Some(node) => {
                contained(&shared, "running the node's timers", || node.tick());
                node.next_timer()
            }
            None => {
                shared.cancel.cancel();
                return;
            }
        };
        let wait = next.map_or(MAX_WAIT, |d| d.clamp(MIN_WAIT, MAX_WAIT));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = status.changed() => {
                status.borrow_and_update();
            }
            _ = shared.cancel.cancelled() => return,
        }
    }
}

/// Runs `f`, a call into the node on a transport's task, which runs the
/// node's listeners. A listener's panic would end the task, and with it
/// the connection, with nobody told: the status would stay as it was and
/// flushes would wait for ever, while the relay evicted the node. So a
/// listener's panic stops at the listener ([`events::contain`]): the node
/// finishes what it was doing, the panic is logged and the task goes on,
/// as a caller that catches a listener's panic in its own write does. A
/// panic of the engine itself leaves the replica perhaps half changed and
/// the rest of what it was given unapplied: the connection stops for good
/// then, its status `Failed` and its flushes failed. `None` when it did.
pub(super) fn contained<R>(
    shared: &Shared,
    during: &'static str,
    f: impl FnOnce() -> R,
) -> Option<R> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| events::contain(f))) {
        Ok((r, listener)) => {
            if let Some(panic) = listener {
                let panic = message(&*panic);
                tracing::error!(during, panic, "a listener of the node panicked; going on");
            }
            Some(r)
        }
        Err(panic) => {
            let panic = message(&*panic);
            tracing::error!(during, panic, "the node panicked; stopping the connection");
            shared.status.set(Status::Failed(format!(
                "the node panicked {during}: {panic}"
            )));
            shared.complete(Outbox::close);
            shared.cancel.cancel();
            None
        }
    }
}

fn message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}
