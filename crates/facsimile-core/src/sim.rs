//! A deterministic simulation harness: several replicas over a simulated
//! network that keeps each sender's order but interleaves senders from a
//! seed, with virtual time.
//!
//! Everything random comes from the seed, so a failure is reproduced by
//! running the same seed again; [`run_seeds`] prints the failing seed and how
//! to rerun it alone.
//!
//! Tests that need to see, hold back or rewrite individual messages
//! intercept them as they leave their sender ([`Sim::intercept`],
//! [`Sim::run_until`]), edit or drop what is held ([`Sim::held`]) and put
//! messages on the links themselves ([`Sim::send`], [`Sim::release`]).
//!
//! ```
//! use facsimile_core::sim::{Sim, Verdict};
//! use facsimile_core::{Config, Input, Value};
//!
//! let mut sim = Sim::with_hosts(7, [("alpha", Config::default()), ("bravo", Config::default())]);
//! sim.run();
//! // Alpha's write is held back as it leaves alpha.
//! sim.intercept(|from, _| if from == 0 { Verdict::Hold } else { Verdict::Deliver });
//! sim.with(0, |a| a.set_root(Input::from(1)))?;
//! sim.stop_intercepting();
//! assert_eq!(sim.held(0).len(), 1);
//! sim.run();
//! assert_eq!(sim[1].root(), Value::Null);
//! // Released, it reaches bravo.
//! sim.release(0);
//! sim.run();
//! assert_eq!(sim[1].root(), Value::Int(1));
//! sim.assert_converged();
//! # Ok::<(), facsimile_core::Error>(())
//! ```

use std::collections::VecDeque;
use std::ops::Index;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{Config, Event, PeerId, Replica, Transmit};

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
    /// Messages this node sent that are held back from the links, in the
    /// order sent.
    held: VecDeque<Transmit>,
    online: bool,
    partitioned: bool,
    /// Left out of [`Sim::assert_converged`].
    excluded: bool,
}

/// What becomes of a message leaving its sender, as an interception hook
/// ([`Sim::intercept`]) decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Onto the links, to be delivered.
    Deliver,
    /// Held back in the sender's [`Sim::held`] queue until the test
    /// releases, edits or drops it.
    Hold,
}

type Hook = Box<dyn FnMut(usize, &Transmit) -> Verdict + Send>;

/// The simulated network.
pub struct Sim {
    seed: u64,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    now: Duration,
    config: Config,
    hook: Option<Hook>,
    /// Deliver messages addressed to one peer to everybody, as a broadcast
    /// transport would (the others must ignore them).
    pub broadcast_directed: bool,
}

/// What one step of the network did.
enum Stepped {
    Idle,
    Delivered,
    /// A message the selector picked, taken out of the network, and its
    /// sender.
    Selected(usize, Transmit),
}

impl Sim {
    /// A network of `n` replicas named `r0`, `r1`, ... that know each other.
    pub fn new(seed: u64, n: usize) -> Self {
        Self::with_config(seed, n, Config::default())
    }

    /// As [`Sim::new`], with a replica configuration.
    pub fn with_config(seed: u64, n: usize, config: Config) -> Self {
        let hosts: Vec<(String, Config)> =
            (0..n).map(|i| (format!("r{i}"), config.clone())).collect();
        Self::start(seed, config, &hosts)
    }

    /// A network of replicas with the given hostnames and configurations,
    /// indexed in that order, that know each other. [`Sim::settle`],
    /// [`Sim::sync`] and [`Sim::add`] go by the first replica's
    /// configuration.
    pub fn with_hosts<S: AsRef<str>>(
        seed: u64,
        hosts: impl IntoIterator<Item = (S, Config)>,
    ) -> Self {
        let hosts: Vec<(S, Config)> = hosts.into_iter().collect();
        let config = hosts
            .first()
            .map_or_else(Config::default, |(_, c)| c.clone());
        Self::start(seed, config, &hosts)
    }

    fn start<S: AsRef<str>>(seed: u64, config: Config, hosts: &[(S, Config)]) -> Self {
        let mut sim = Sim {
            seed,
            rng: SmallRng::seed_from_u64(seed),
            nodes: Vec::new(),
            now: Duration::ZERO,
            config,
            hook: None,
            broadcast_directed: seed % 2 == 1,
        };
        // Start the initial replicas together: each hears every other's
        // announcement, as a group started at once would.
        for (hostname, config) in hosts {
            sim.push(hostname.as_ref(), config.clone());
        }
        for i in 0..hosts.len() {
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
        self.add_with_config(hostname, self.config.clone())
    }

    /// As [`Sim::add`], with a configuration of its own.
    pub fn add_with_config(&mut self, hostname: &str, config: Config) -> usize {
        let i = self.push(hostname, config);
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

    fn push(&mut self, hostname: &str, config: Config) -> usize {
        let incarnation = self.rng.random();
        let replica = Replica::new(PeerId::new(hostname, incarnation), config);
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
            held: VecDeque::new(),
            online: true,
            partitioned: false,
            excluded: false,
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

    /// A replica, to change. What it sends leaves with the next
    /// [`Sim::collect`] of it, or the next [`Sim::step`]; [`Sim::with`] sends
    /// it at once. `sim[i]` reads a replica without `&mut`.
    pub fn replica(&mut self, i: usize) -> &mut Replica {
        &mut self.nodes[i].replica
    }

    /// The wire tag (incarnation) of replica `i`, which names it in directed
    /// messages and in errors.
    pub fn tag(&self, i: usize) -> u32 {
        self.nodes[i].replica.peer_id().incarnation()
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
    /// until the partition heals, while it keeps running. Its replica is
    /// told, as a transport tells it ([`Replica::set_online`]).
    pub fn partition(&mut self, i: usize, cut: bool) {
        self.nodes[i].partitioned = cut;
        self.nodes[i].replica.set_online(!cut);
        self.collect(i);
    }

    /// Whether node `i` is cut off.
    pub fn is_partitioned(&self, i: usize) -> bool {
        self.nodes[i].partitioned
    }

    /// Leaves replica `i` out of [`Sim::assert_converged`]: an attacker, say,
    /// whose document is not expected to match. It still sends and receives.
    pub fn exclude(&mut self, i: usize) {
        self.nodes[i].excluded = true;
    }

    /// Moves node `i`'s transmits onto the links (or into its held queue, see
    /// [`Sim::intercept`]) and its events into its log.
    pub fn collect(&mut self, i: usize) {
        let selected = self.collect_selecting(i, &mut |_, _| false);
        debug_assert!(selected.is_none());
    }

    /// As [`Sim::collect`], but the first transmit that `select` picks is
    /// taken out of the network and returned, and the ones after it are held
    /// so that the sender's order is kept whatever the test does with it.
    fn collect_selecting(
        &mut self,
        i: usize,
        select: &mut dyn FnMut(usize, &Transmit) -> bool,
    ) -> Option<Transmit> {
        let mut selected = None;
        while let Some(t) = self.nodes[i].replica.poll_transmit() {
            if !self.nodes[i].online {
                continue;
            }
            // The hook sees every message, even one held behind an earlier.
            let verdict = self.hook.as_mut().map_or(Verdict::Deliver, |h| h(i, &t));
            if verdict == Verdict::Hold || selected.is_some() || !self.nodes[i].held.is_empty() {
                self.nodes[i].held.push_back(t);
            } else if select(i, &t) {
                selected = Some(t);
            } else {
                self.put(i, &t);
            }
        }
        while let Some(e) = self.nodes[i].replica.poll_event() {
            self.nodes[i].events.push(e);
        }
        selected
    }

    /// Queues `t`, sent by `from`, on the links to its recipients.
    fn put(&mut self, from: usize, t: &Transmit) {
        if !self.nodes[from].online {
            return;
        }
        let target = t.to.filter(|_| !self.broadcast_directed);
        for (j, node) in self.nodes.iter_mut().enumerate() {
            if j == from || !node.online {
                continue;
            }
            if target.is_some_and(|tag| tag != node.replica.peer_id().incarnation()) {
                continue;
            }
            node.inbox[from].push_back(t.bytes.clone());
        }
    }

    /// Consults `hook` for every message as it leaves its sender, from now
    /// until [`Sim::stop_intercepting`]: it is called with the sender's index
    /// and the message and decides whether the message goes onto the links
    /// or is held in the sender's [`Sim::held`] queue.
    ///
    /// Held messages keep their sender's order: while a sender has held
    /// messages, everything it sends is held behind them (the hook still
    /// sees it), until the queue is released ([`Sim::release`]) or emptied.
    /// Held messages are not in flight: [`Sim::run`] and [`Sim::settle`]
    /// leave them be.
    pub fn intercept(&mut self, hook: impl FnMut(usize, &Transmit) -> Verdict + Send + 'static) {
        self.hook = Some(Box::new(hook));
    }

    /// Removes the interception hook: messages go onto the links again
    /// (unless their sender has held messages).
    pub fn stop_intercepting(&mut self) {
        self.hook = None;
    }

    /// The messages held back from sender `i`, oldest first, after
    /// collecting what it sent since: the test may read, edit, reorder,
    /// take or drop them.
    pub fn held(&mut self, i: usize) -> &mut VecDeque<Transmit> {
        self.collect(i);
        &mut self.nodes[i].held
    }

    /// Puts the messages held back from sender `i` onto the links, in order.
    pub fn release(&mut self, i: usize) {
        self.collect(i);
        let held = std::mem::take(&mut self.nodes[i].held);
        for t in &held {
            self.put(i, t);
        }
    }

    /// Puts `t` onto the links as if node `from` sent it now: to every other
    /// node, or to `t.to` alone, behind what `from` sent before. It bypasses
    /// the hook and the held queue. A crashed node sends nothing.
    pub fn send(&mut self, from: usize, t: Transmit) {
        self.collect(from);
        self.put(from, &t);
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| n.inbox.iter().map(VecDeque::len).sum::<usize>())
            .sum()
    }

    /// Delivers everything in flight from node `i`, in its order, to every
    /// receiver it can reach now; what they send in answer stays in flight.
    pub fn deliver_from(&mut self, i: usize) {
        self.collect(i);
        for r in 0..self.nodes.len() {
            if !self.nodes[r].online || self.nodes[r].partitioned || self.nodes[i].partitioned {
                continue;
            }
            while let Some(bytes) = self.nodes[r].inbox[i].pop_front() {
                if let Err(e) = self.nodes[r].replica.handle_message(&bytes) {
                    panic!(
                        "seed {}: node {r} refused a message from node {i}: {e}",
                        self.seed
                    );
                }
                self.collect(r);
            }
        }
    }

    /// Delivers one message, chosen at random among the senders with
    /// something in flight to some receiver. Returns false when idle.
    ///
    /// What replicas sent since they were last collected (changed through
    /// [`Sim::replica`]) leaves first.
    pub fn step(&mut self) -> bool {
        match self.step_selecting(&mut |_, _| false) {
            Stepped::Idle => false,
            Stepped::Delivered => true,
            Stepped::Selected(..) => unreachable!("nothing is selected"),
        }
    }

    /// Delivers messages until a message leaving a replica is one that
    /// `select` picks (it is called with the sender's index and the
    /// message), and returns that message and its sender. The message is
    /// taken out of the network: neither delivered nor held. What its sender
    /// had sent after it is held ([`Sim::held`]) so that nothing overtakes
    /// it: [`Sim::send`] the message, then [`Sim::release`] the sender.
    /// Messages that the interception hook holds, or that are held behind
    /// others, are not offered to `select`.
    ///
    /// Returns `None` when no message is in flight any more.
    pub fn run_until(
        &mut self,
        mut select: impl FnMut(usize, &Transmit) -> bool,
    ) -> Option<(usize, Transmit)> {
        loop {
            match self.step_selecting(&mut select) {
                Stepped::Idle => return None,
                Stepped::Delivered => {}
                Stepped::Selected(from, t) => return Some((from, t)),
            }
        }
    }

    fn step_selecting(&mut self, select: &mut dyn FnMut(usize, &Transmit) -> bool) -> Stepped {
        for i in 0..self.nodes.len() {
            if let Some(t) = self.collect_selecting(i, select) {
                return Stepped::Selected(i, t);
            }
        }
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
            return Stepped::Idle;
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
        match self.collect_selecting(r, select) {
            Some(t) => Stepped::Selected(r, t),
            None => Stepped::Delivered,
        }
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

    /// Has replica `i` join by a sync ([`Replica::sync`]) and runs the
    /// network, letting time pass, until it is ready.
    ///
    /// # Panics
    /// If it is not ready after four sync timeouts.
    pub fn sync(&mut self, i: usize) {
        self.with(i, Replica::sync);
        let beat = self.config.heartbeat;
        let mut waited = Duration::ZERO;
        loop {
            self.run();
            if self.nodes[i].replica.is_ready() {
                return;
            }
            if waited > self.config.sync_timeout * 4 {
                panic!("seed {}: replica {i} never finished its sync", self.seed);
            }
            self.advance(beat);
            waited += beat;
        }
    }

    /// Indices of online replicas.
    pub fn online(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].online)
            .collect()
    }

    /// Asserts that every online, ready replica holds the same document, byte
    /// for byte, and that each one's internal invariants hold. Replicas left
    /// out by [`Sim::exclude`] are not compared.
    pub fn assert_converged(&mut self) {
        let online: Vec<usize> = self
            .online()
            .into_iter()
            .filter(|&i| self.nodes[i].replica.is_ready() && !self.nodes[i].excluded)
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

/// `sim[i]` reads replica `i`.
impl Index<usize> for Sim {
    type Output = Replica;

    fn index(&self, i: usize) -> &Replica {
        &self.nodes[i].replica
    }
}

/// A global name for an array element: its creator and counter.
pub type ElemName = (PeerId, u64);
