//! An in-process network of nodes.
//!
//! Invariant: every member receives each other member's messages in their
//! send order (the transport contract, DESIGN.md, "Transport contract and
//! the sans-IO core"); delivery never recurses into a sender, so messages
//! that listeners send while being delivered to wait for the outermost
//! call.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use facsimile_core::Config;

use crate::clock::Clock;
use crate::node::{Inner, Node, Outgoing};

/// Nodes in one process, connected like the original's example `Network`:
/// every message of a node reaches every other member, in send order.
///
/// In the default mode a message is delivered to every member before the
/// sending call returns; messages sent while delivering (by listeners that
/// write) are queued and delivered by the outermost call, never by
/// recursion, so each sender's order holds. In manual mode
/// ([`LocalNetwork::manual`]) messages wait until the test delivers them,
/// interleaving senders at random from a seed.
///
/// Nodes read the system's clock for their timers (heartbeats, failure
/// detection, reclamation, sync retries) unless the network runs in
/// virtual time ([`LocalNetwork::with_virtual_time`]): then time stands
/// still until [`LocalNetwork::advance`] moves it.
///
/// A node dropped without [`Node::leave`] is one that crashed: the network
/// stops delivering to it but does not report it gone, so its peers keep
/// it as a member (its locks held, its acknowledgements awaited) until a
/// node evicts it ([`Node::evict`]) or, with
/// [`Config::failure_detection`](crate::Config::failure_detection), its
/// silence outlasts the timeout (timers run on every call into a node and
/// on [`Node::tick`], or as [`LocalNetwork::advance`] moves virtual time).
#[derive(Clone)]
pub struct LocalNetwork {
    inner: Arc<Mutex<Net>>,
}

struct Member {
    /// The node's incarnation as it changes ([`Node::incarnation_cell`]).
    tag: Arc<AtomicU32>,
    node: Weak<Inner>,
}

struct Net {
    config: Config,
    members: Vec<Member>,
    /// Automatic mode: messages waiting for the delivering call, each
    /// with the members it is still to reach (all but its sender until it
    /// is first taken up).
    queue: VecDeque<Queued>,
    delivering: bool,
    /// Manual mode: per receiver, per sender FIFO queues.
    manual: Option<Manual>,
    /// Virtual time: the clock every node joining from now on reads.
    clock: Option<Clock>,
}

/// A message of the automatic mode, and the members it has still to reach:
/// `None` until its delivery starts.
struct Queued {
    from: usize,
    msg: Outgoing,
    to: Option<VecDeque<usize>>,
}

/// Marks the network as delivering until dropped. Dropped by an unwind (a
/// listener of a receiving node panicked), it lets go of the mark, so that
/// the next message posted delivers what is left (the message being
/// delivered to its remaining members first, then the queue), in each
/// sender's order; otherwise every later message would only be queued.
struct Delivering<'a> {
    net: &'a LocalNetwork,
    done: bool,
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.net.lock().delivering = false;
        }
    }
}

struct Manual {
    rng: SmallRng,
    links: Vec<Vec<VecDeque<Outgoing>>>,
}

impl Default for LocalNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalNetwork {
    /// A network that delivers at once.
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    /// A network whose nodes use these engine settings (for example JSON on
    /// the wire, to read the messages).
    pub fn with_config(config: Config) -> Self {
        LocalNetwork {
            inner: Arc::new(Mutex::new(Net {
                config,
                members: Vec::new(),
                queue: VecDeque::new(),
                delivering: false,
                manual: None,
                clock: None,
            })),
        }
    }

    /// A network that holds messages until [`LocalNetwork::deliver_one`] or
    /// [`LocalNetwork::run`] delivers them, choosing among senders from
    /// `seed`.
    pub fn manual(seed: u64) -> Self {
        Self::manual_with_config(seed, Config::default())
    }

    /// Manual mode with engine settings.
    pub fn manual_with_config(seed: u64, config: Config) -> Self {
        let net = Self::with_config(config);
        net.lock().manual = Some(Manual {
            rng: SmallRng::seed_from_u64(seed),
            links: Vec::new(),
        });
        net
    }

    /// Runs the network in virtual time: nodes that join from now on read
    /// a clock that stands still until [`LocalNetwork::advance`] moves it,
    /// so that timers (heartbeats, eviction of silent peers, reclamation,
    /// sync retries) can be tested without sleeping. Nodes joined before,
    /// and nodes connected with [`LocalNetwork::attach`], keep the
    /// system's clock.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new().with_virtual_time();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"gone": {"x": 1}}))?;
    /// let root = b.root_map().unwrap();
    /// let gone = root.get("gone").unwrap().as_map().unwrap().clone();
    /// root.delete("gone")?;
    /// assert!(gone.exists(), "reclaimed only after a few reclamation passes");
    /// net.advance(Duration::from_secs(10));
    /// assert!(!gone.exists());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn with_virtual_time(self) -> Self {
        self.lock().clock = Some(Clock::manual());
        self
    }

    /// Virtual time: moves the clock of every node that joined in virtual
    /// time forward by `by`, stopping at each moment a node's timer is due to
    /// run it (so a ten-second step still sends every heartbeat on time).
    /// Messages those timers send are delivered as usual: at once, or in manual
    /// mode when the test delivers them (a step long enough for peers to time
    /// out then evicts them; alternate shorter steps with
    /// [`LocalNetwork::run`]).
    ///
    /// # Panics
    /// When the network is not in virtual time.
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use facsimile::{Config, LocalNetwork};
    ///
    /// let config = Config::default()
    ///     .failure_detection(Duration::from_millis(100), Duration::from_secs(1));
    /// let net = LocalNetwork::with_config(config).with_virtual_time();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(0)?;
    ///
    /// b.set_sender(|_| {}); // b falls silent
    /// net.advance(Duration::from_secs(1));
    /// assert!(a.peers().contains(&b.peer_id()), "not before the timeout");
    /// net.advance(Duration::from_secs(1));
    /// assert!(!a.peers().contains(&b.peer_id()), "evicted");
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn advance(&self, by: Duration) {
        let clock =
            self.lock().clock.clone().expect(
                "LocalNetwork::advance needs a network in virtual time (with_virtual_time)",
            );
        let end = clock.now().saturating_add(by);
        loop {
            let now = clock.now();
            let nodes = self.nodes();
            for node in &nodes {
                node.tick();
            }
            // Timers still due now were just run; wait for the next one.
            let next = nodes
                .iter()
                .filter_map(|n| n.read(|r| r.poll_timeout()))
                .filter(|&at| at > now)
                .min();
            match next {
                Some(at) if at <= end => clock.advance(at),
                _ => break,
            }
        }
        clock.advance(end);
        for node in self.nodes() {
            node.tick();
        }
    }

    /// The members still alive.
    fn nodes(&self) -> Vec<Node> {
        let net = self.lock();
        net.members
            .iter()
            .filter_map(|m| Node::upgrade(&m.node))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a node and connects it. It receives messages sent from now
    /// on; to get a document that exists already, call [`Node::sync`].
    pub fn join(&self, hostname: &str) -> Node {
        let (config, clock) = {
            let net = self.lock();
            (net.config.clone(), net.clock.clone())
        };
        let node = Node::with_clock(hostname, config, clock.unwrap_or_else(Clock::new));
        self.attach(&node);
        node
    }

    /// Connects an existing node (its sender is replaced).
    pub fn attach(&self, node: &Node) {
        let index = {
            let mut net = self.lock();
            net.members.push(Member {
                tag: node.incarnation_cell(),
                node: node.downgrade(),
            });
            let n = net.members.len();
            if let Some(m) = &mut net.manual {
                for links in &mut m.links {
                    links.push(VecDeque::new());
                }
                m.links.push((0..n).map(|_| VecDeque::new()).collect());
            }
            n - 1
        };
        let net = self.clone();
        node.set_sender(move |msg| net.post(index, msg));
    }

    fn post(&self, from: usize, msg: Outgoing) {
        let mut net = self.lock();
        if let Some(m) = &mut net.manual {
            let targets: Vec<usize> = (0..m.links.len()).filter(|&to| to != from).collect();
            for to in targets {
                if msg.is_for(&net.members[to].tag) {
                    if let Some(m) = &mut net.manual {
                        m.links[to][from].push_back(msg.clone());
                    }
                }
            }
            return;
        }
        net.queue.push_back(Queued {
            from,
            msg,
            to: None,
        });
        if net.delivering {
            return;
        }
        net.delivering = true;
        let mut delivering = Delivering {
            net: self,
            done: false,
        };
        loop {
            let n = net.members.len();
            let Some(first) = net.queue.front_mut() else {
                net.delivering = false;
                delivering.done = true;
                return;
            };
            let from = first.from;
            let to = first
                .to
                .get_or_insert_with(|| (0..n).filter(|&i| i != from).collect());
            let Some(to) = to.pop_front() else {
                net.queue.pop_front();
                continue;
            };
            let msg = first.msg.clone();
            let member = &net.members[to];
            let node = Node::upgrade(&member.node).filter(|_| msg.is_for(&member.tag));
            drop(net);
            if let Some(node) = node {
                // A node refusing a message keeps working; the network does
                // not stop for it. A node whose listener panics has applied
                // the message: the unwind leaves it delivered there.
                let _ = node.receive(msg.as_bytes());
            }
            net = self.lock();
        }
    }

    /// Manual mode: delivers one message, chosen at random among senders
    /// with messages in flight (each sender's order is kept). Returns false
    /// when nothing is in flight.
    pub fn deliver_one(&self) -> bool {
        let (node, msg) = {
            let mut net = self.lock();
            let Some(m) = &mut net.manual else {
                return false;
            };
            let mut ready = Vec::new();
            for (to, links) in m.links.iter().enumerate() {
                for (from, q) in links.iter().enumerate() {
                    if !q.is_empty() {
                        ready.push((to, from));
                    }
                }
            }
            if ready.is_empty() {
                return false;
            }
            let (to, from) = ready[m.rng.random_range(0..ready.len())];
            let msg = m.links[to][from].pop_front().expect("non-empty");
            // A message for an incarnation the member no longer is (it
            // was evicted and started over meanwhile) is not delivered.
            let member = &net.members[to];
            (
                member.node.upgrade().filter(|_| msg.is_for(&member.tag)),
                msg,
            )
        };
        if let Some(inner) = node {
            let _ = Node { inner }.receive(msg.as_bytes());
        }
        true
    }

    /// Manual mode: delivers until nothing is in flight.
    pub fn run(&self) {
        while self.deliver_one() {}
    }

    /// Messages in flight (manual mode).
    pub fn in_flight(&self) -> usize {
        let net = self.lock();
        net.manual
            .as_ref()
            .map_or(0, |m| m.links.iter().flatten().map(VecDeque::len).sum())
    }
}
