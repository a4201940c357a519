//! An in-process network of nodes on tokio channels.
//!
//! Invariant: every member receives each other member's messages in their
//! send order, each member through one unbounded channel that one task
//! drains; how senders interleave is up to the scheduler, as on a real
//! network.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use facsimile_core::Config;
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::events;
use crate::node::{Inner, Node, Outgoing};

/// The longest a member's task sleeps between looks at its node's timers
/// (a timer set earlier than the one it sleeps for is seen by then).
const MAX_WAIT: Duration = Duration::from_secs(1);
/// The shortest: the node's clock is coarse, so a timer due by the task's
/// sleep may be a few milliseconds short of due by the node's.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// Nodes in one process joined by tokio channels: the asynchronous
/// counterpart of [`LocalNetwork`](crate::LocalNetwork). Every message of a
/// node reaches every other member in send order, through a task per member
/// that applies what arrives and runs the node's timers (heartbeats,
/// reclamation, sync retries) when they are due. Sending never waits:
/// writes return at once, and their messages are applied by the other
/// members' tasks, on the runtime's threads.
///
/// [`ChannelNetwork::join`] spawns on the current tokio runtime; call it
/// inside one. [`ChannelNetwork::settled`] waits until every message sent
/// so far has been applied.
///
/// # Example
/// ```
/// use facsimile::ChannelNetwork;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let net = ChannelNetwork::new();
/// let a = net.join("a");
/// let b = net.join("b");
/// a.set_root(json!({"jobs": []}))?;
/// net.settled().await;
///
/// // b waits for the lock while a holds it; a's release lets it in.
/// let held = a.lock(a.root_map().unwrap()).await?;
/// let waiter = tokio::spawn({
///     let b = b.clone();
///     async move {
///         let guard = b.lock(b.root_map().unwrap()).await?;
///         b.root_map().unwrap().set("by", "b")?;
///         Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(guard.token())
///     }
/// });
/// a.root_map().unwrap().set("by", "a")?;
/// drop(held);
/// let token = waiter.await?.unwrap();
/// net.settled().await;
/// assert_eq!(a.root_map().unwrap().get("by"), Some("b".into()));
/// assert!(token > 0);
/// assert_eq!(a.snapshot(), b.snapshot());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ChannelNetwork {
    hub: Arc<Hub>,
}

struct Hub {
    config: Config,
    members: Mutex<Vec<Member>>,
    /// Messages handed to a member's channel and not applied yet.
    in_flight: AtomicUsize,
    /// Notified when `in_flight` falls to zero.
    idle: Notify,
}

struct Member {
    /// The node's incarnation as it changes ([`Node::incarnation_cell`]).
    tag: Arc<AtomicU32>,
    tx: UnboundedSender<Outgoing>,
}

impl Default for ChannelNetwork {
    fn default() -> Self {
        ChannelNetwork::new()
    }
}

impl ChannelNetwork {
    /// A network whose nodes use the default [`Config`].
    pub fn new() -> Self {
        ChannelNetwork::with_config(Config::default())
    }

    /// A network whose nodes use `config`.
    pub fn with_config(config: Config) -> Self {
        ChannelNetwork {
            hub: Arc::new(Hub {
                config,
                members: Mutex::new(Vec::new()),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// Creates a node and connects it. It receives messages sent from now
    /// on; to get a document that exists already, call [`Node::sync`].
    ///
    /// # Panics
    /// Outside a tokio runtime (it spawns the node's task).
    pub fn join(&self, hostname: &str) -> Node {
        let node = Node::with_config(hostname, self.hub.config.clone());
        self.attach(&node);
        node
    }

    /// Connects an existing node (its sender is replaced).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn attach(&self, node: &Node) {
        let (tx, rx) = unbounded_channel();
        let index = {
            let mut members = self.hub.members();
            members.push(Member {
                tag: node.incarnation_cell(),
                tx,
            });
            members.len() - 1
        };
        tokio::spawn(run_member(
            self.hub.clone(),
            node.downgrade(),
            node.incarnation_cell(),
            rx,
        ));
        let hub = self.hub.clone();
        node.set_sender(move |msg| hub.post(index, msg));
    }

    /// Waits until every message sent so far, and every message those
    /// made their receivers send, has been applied (or its receiver is
    /// gone).
    pub async fn settled(&self) {
        loop {
            // Registered before the check, so a fall to zero in between
            // is not missed.
            let idle = self.hub.idle.notified();
            if self.hub.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Hub {
    fn members(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn post(&self, from: usize, msg: Outgoing) {
        let members = self.members();
        for (i, m) in members.iter().enumerate() {
            if i == from || !msg.is_for(&m.tag) {
                continue;
            }
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            if m.tx.send(msg.clone()).is_err() {
                // The member's node is gone.
                self.done();
            }
        }
    }

    fn done(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// Applies what reaches one member, in order, and runs its timers, until
/// its node is dropped.
async fn run_member(
    hub: Arc<Hub>,
    node: Weak<Inner>,
    tag: Arc<AtomicU32>,
    mut rx: UnboundedReceiver<Outgoing>,
) {
    // Whatever still waits for a node that is gone, or whose engine
    // panicked, counts as delivered: else `settled` would wait for ever.
    struct Drain<'a>(&'a Hub, &'a mut UnboundedReceiver<Outgoing>);
    impl Drop for Drain<'_> {
        fn drop(&mut self) {
            self.1.close();
            while self.1.try_recv().is_ok() {
                self.0.done();
            }
        }
    }
    let drain = Drain(&hub, &mut rx);
    let mut wait = MIN_WAIT;
    loop {
        tokio::select! {
            msg = drain.1.recv() => {
                let Some(msg) = msg else { break };
                let Some(n) = Node::upgrade(&node) else {
                    hub.done();
                    break;
                };
                // Counted delivered also when the engine panics on it.
                let _done = Done(&hub);
                // A node refusing a message keeps working; so does the
                // network. A message for an incarnation the node no longer
                // is (it started over since it was sent) is not delivered.
                // A listener's panic stops at the listener, as the rest of
                // the member's messages must still be applied; the
                // engine's own ends the task.
                if msg.is_for(&tag) {
                    let _ = events::contain(|| n.receive(msg.as_bytes()));
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(n) = Node::upgrade(&node) else { break };
        events::contain(|| n.tick());
        wait = n
            .next_timer()
            .map_or(MAX_WAIT, |d| d.clamp(MIN_WAIT, MAX_WAIT));
    }
}

/// One message handled, when dropped.
struct Done<'a>(&'a Hub);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.done();
    }
}
