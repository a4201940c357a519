//! A deterministic simulation harness: several replicas over a simulated
//! network that keeps each sender's order but interleaves senders from a
//! seed, with virtual time.
//!
//! Everything random comes from the seed, so a failure is reproduced by
//! running the same seed again; [`run_seeds`] prints the failing seed and how
//! to rerun it alone.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{Config, Event, PeerId, Replica};

/// Panics unless the two decoding paths of a message (the hand-written one
/// for the commonest message and serde's) read `bytes` alike. For the
/// `decode` fuzz target.
pub fn check_decoders_agree(bytes: &[u8]) {
    crate::codec::check_paths_agree(bytes);
}

/// Runs `check` for every seed, or only for the seed in the environment
/// variable `FACSIMILE_SEED` when it is set. A panic names its seed.
pub fn run_seeds(seeds: impl IntoIterator<Item = u64>, check: impl Fn(u64)) {
    let only: Option<u64> = std::env::var("FACSIMILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let run = |seed: u64| {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(seed))) {
            eprintln!("failing seed: {seed} (rerun alone with FACSIMILE_SEED={seed})");
            resume_unwind(panic);
        }
    };
    match only {
        Some(seed) => run(seed),
        None => seeds.into_iter().for_each(run),
    }
}

/// One replica on the simulated network.
pub struct SimNode {
    /// The replica.
    pub replica: Replica,
    /// Every event the replica produced, in order.
    pub events: Vec<Event>,
    /// Messages in flight to this node, one FIFO queue per sender.
    inbox: Vec<VecDeque<Arc<[u8]>>>,
    online: bool,
    partitioned: bool,
}

/// The simulated network.
pub struct Sim {
    seed: u64,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    now: Duration,
    config: Config,
    /// Deliver messages addressed to one peer to everybody, as a broadcast
    /// transport would (the others must ignore them).
    pub broadcast_directed: bool,
}

impl Sim {
    /// A network of `n` replicas named `r0`, `r1`, ... that know each other.
    pub fn new(seed: u64, n: usize) -> Self {
        Self::with_config(seed, n, Config::default())
    }

    /// As [`Sim::new`], with a replica configuration.
    pub fn with_config(seed: u64, n: usize, config: Config) -> Self {
        let mut sim = Sim {
            seed,
            rng: SmallRng::seed_from_u64(seed),
            nodes: Vec::new(),
            now: Duration::ZERO,
            config,
            broadcast_directed: seed % 2 == 1,
        };
        // Start the initial replicas together: each hears every other's
        // announcement, as a group started at once would.
        for i in 0..n {
            sim.push(&format!("r{i}"));
        }
        for i in 0..n {
            sim.collect(i);
        }
        sim
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The simulation's random source, for tests that draw operations.
    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }

    /// Adds a replica to the network. It receives only messages sent from
    /// now on, so it should [`Replica::sync`] to join the document.
    pub fn add(&mut self, hostname: &str) -> usize {
        let i = self.push(hostname);
        self.collect(i);
        i
    }

    /// Adds an existing replica (one restored from a saved state, say) to
    /// the network.
    pub fn add_replica(&mut self, replica: Replica) -> usize {
        let i = self.insert(replica);
        self.collect(i);
        i
    }

    fn push(&mut self, hostname: &str) -> usize {
        let incarnation = self.rng.random();
        let replica = Replica::new(PeerId::new(hostname, incarnation), self.config.clone());
        self.insert(replica)
    }

    fn insert(&mut self, replica: Replica) -> usize {
        let n = self.nodes.len();
        for node in &mut self.nodes {
            node.inbox.push(VecDeque::new());
        }
        self.nodes.push(SimNode {
            replica,
            events: Vec::new(),
            inbox: (0..=n).map(|_| VecDeque::new()).collect(),
            online: true,
            partitioned: false,
        });
        n
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no replicas.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A replica.
    pub fn replica(&mut self, i: usize) -> &mut Replica {
        &mut self.nodes[i].replica
    }

    /// A node, with its event log.
    pub fn node(&mut self, i: usize) -> &mut SimNode {
        &mut self.nodes[i]
    }

    /// Runs `f` on replica `i`, then sends what it produced.
    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Replica) -> R) -> R {
        let r = f(&mut self.nodes[i].replica);
        self.collect(i);
        r
    }

    /// Stops node `i` for good: it sends and receives nothing more. What it
    /// sent before still reaches the others (the transport delivers every
    /// message a node sent); what was in flight to it is lost.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].online = false;
        for q in &mut self.nodes[i].inbox {
            q.clear();
        }
    }

    /// Cuts node `i` off (or reconnects it): messages to and from it wait
    /// until the partition heals, while it keeps running.
    pub fn partition(&mut self, i: usize, cut: bool) {
        self.nodes[i].partitioned = cut;
    }

    /// Moves node `i`'s transmits onto the links and its events into its log.
    pub fn collect(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].replica.poll_transmit() {
            if !self.nodes[i].online {
                continue;
            }
            let target = t.to.filter(|_| !self.broadcast_directed);
            for (j, node) in self.nodes.iter_mut().enumerate() {
                if j == i || !node.online {
                    continue;
                }
                if target.is_some_and(|tag| tag != node.replica.peer_id().incarnation()) {
                    continue;
                }
                node.inbox[i].push_back(t.bytes.clone());
            }
        }
        while let Some(e) = self.nodes[i].replica.poll_event() {
            self.nodes[i].events.push(e);
        }
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.inbox.iter().map(VecDeque::len).sum::<usize>())
            .sum()
    }

    /// Delivers one message, chosen at random among the senders with
    /// something in flight to some receiver. Returns false when idle.
    pub fn step(&mut self) -> bool {
        let mut links = Vec::new();
        for (r, node) in self.nodes.iter().enumerate() {
            if !node.online {
                continue;
            }
            for (s, q) in node.inbox.iter().enumerate() {
                if !q.is_empty() && !node.partitioned && !self.nodes[s].partitioned {
                    links.push((r, s));
                }
            }
        }
        if links.is_empty() {
            return false;
        }
        let (r, s) = links[self.rng.random_range(0..links.len())];
        let bytes = self.nodes[r].inbox[s].pop_front().expect("non-empty");
        if std::env::var("FACSIMILE_TRACE").is_ok() {
            if let Ok(f) = crate::codec::decode(&bytes, usize::MAX) {
                let body = format!("{:?}", f.msg);
                eprintln!(
                    "t={:?} {s} -> {r}: {}",
                    self.now,
                    &body[..body.len().min(160)]
                );
            }
        }
        if let Err(e) = self.nodes[r].replica.handle_message(&bytes) {
            panic!(
                "seed {}: node {r} refused a message from node {s}: {e}",
                self.seed
            );
        }
        self.collect(r);
        true
    }

    /// Delivers up to `n` messages.
    pub fn steps(&mut self, n: usize) {
        for _ in 0..n {
            if !self.step() {
                break;
            }
        }
    }

    /// Delivers messages until none is in flight.
    pub fn run(&mut self) {
        while self.step() {}
    }

    /// Advances virtual time by `d` and lets every online replica handle it.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        for i in 0..self.nodes.len() {
            if self.nodes[i].online {
                let now = self.now;
                self.nodes[i].replica.handle_timeout(now);
                self.collect(i);
            }
        }
    }

    /// Runs to quiescence: delivers everything, then lets time pass (so
    /// acknowledgements flow and reclamation settles) until a round of
    /// timeouts produces no message.
    pub fn settle(&mut self) {
        let step = self.config.gc_interval;
        if self.config.peer_timeout.is_some() {
            // Heartbeats never stop: settle for a fixed span instead, short
            // enough that live replicas are never evicted.
            let beat = self.config.heartbeat;
            let rounds = (step.as_millis() / beat.as_millis().max(1)).max(1) as usize * 4;
            for _ in 0..rounds {
                self.run();
                self.advance(beat);
            }
            self.run();
            return;
        }
        for _ in 0..64 {
            self.run();
            self.advance(step);
            if self.in_flight() == 0 {
                self.advance(step);
                if self.in_flight() == 0 {
                    return;
                }
            }
        }
        panic!("seed {}: the network did not quiesce", self.seed);
    }

    /// Indices of online replicas.
    pub fn online(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].online)
            .collect()
    }

    /// Asserts that every online, ready replica holds the same document, byte
    /// for byte, and that each one's internal invariants hold.
    pub fn assert_converged(&mut self) {
        let online: Vec<usize> = self
            .online()
            .into_iter()
            .filter(|&i| self.nodes[i].replica.is_ready())
            .collect();
        let mut first: Option<(usize, Vec<u8>)> = None;
        for i in online {
            self.nodes[i].replica.check_invariants();
            let snap = self.nodes[i].replica.snapshot();
            match &first {
                None => first = Some((i, snap)),
                Some((j, s)) => {
                    if *s != snap {
                        panic!(
                            "seed {}: replicas {j} and {i} diverged\n{j}: {}\n{i}: {}\n{}",
                            self.seed,
                            self.nodes[*j].replica.debug_dump(),
                            self.nodes[i].replica.debug_dump(),
                            self.nodes[i].replica.debug_gc(),
                        );
                    }
                }
            }
        }
    }
}

/// A global name for an array element: its creator and counter.
pub type ElemName = (PeerId, u64);
