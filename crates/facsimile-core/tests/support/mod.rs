//! A tiny deterministic network for tests that need to see, hold back or
//! rewrite individual messages: every replica's transmits wait in a FIFO
//! queue per sender and are delivered in order to every other replica (or
//! only to the named recipient).

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::time::Duration;

use facsimile_core::{Config, PeerId, Replica, Transmit};

/// Replicas and the messages in flight between them.
pub struct Net {
    pub nodes: Vec<Replica>,
    queues: Vec<VecDeque<Transmit>>,
    /// Replicas whose document is not expected to match the others' (an
    /// attacker's); they still send and receive.
    pub excluded: Vec<bool>,
    now: Duration,
}

impl Net {
    /// Replicas named by `hostnames`, incarnations `1, 2, ...`, that exchange
    /// their announcements.
    pub fn new(hostnames: &[&str], config: Config) -> Self {
        let configs: Vec<Config> = hostnames.iter().map(|_| config.clone()).collect();
        Self::with_configs(hostnames, configs)
    }

    /// As [`Net::new`], one configuration per replica.
    pub fn with_configs(hostnames: &[&str], configs: Vec<Config>) -> Self {
        let nodes: Vec<Replica> = hostnames
            .iter()
            .zip(configs)
            .enumerate()
            .map(|(i, (h, c))| Replica::new(PeerId::new(*h, 0x1000_0001 + i as u32), c))
            .collect();
        let n = nodes.len();
        let mut net = Net {
            nodes,
            queues: (0..n).map(|_| VecDeque::new()).collect(),
            excluded: vec![false; n],
            now: Duration::ZERO,
        };
        net.run();
        net
    }

    /// Adds a replica (it hears only what is sent from now on).
    pub fn add(&mut self, hostname: &str, config: Config) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Replica::new(
            PeerId::new(hostname, 0x1000_0001 + i as u32),
            config,
        ));
        self.queues.push(VecDeque::new());
        self.excluded.push(false);
        i
    }

    /// The wire tag of replica `i`.
    pub fn tag(&self, i: usize) -> u32 {
        self.nodes[i].peer_id().incarnation()
    }

    /// Moves every replica's transmits into its queue and drops events.
    pub fn collect(&mut self) {
        for (node, queue) in self.nodes.iter_mut().zip(&mut self.queues) {
            while let Some(t) = node.poll_transmit() {
                queue.push_back(t);
            }
            while node.poll_event().is_some() {}
        }
    }

    /// Messages waiting in sender `i`'s queue.
    pub fn queued(&mut self, i: usize) -> &mut VecDeque<Transmit> {
        self.collect();
        &mut self.queues[i]
    }

    /// Delivers `t`, sent by `from`, to its recipients. An honest message
    /// must be accepted.
    pub fn deliver(&mut self, from: usize, t: &Transmit) {
        for j in 0..self.nodes.len() {
            if j == from {
                continue;
            }
            if t.to.is_some_and(|to| to != self.tag(j)) {
                continue;
            }
            if let Err(e) = self.nodes[j].handle_message(&t.bytes) {
                panic!(
                    "replica {j} refused an honest message from {from}: {e}\n{}",
                    String::from_utf8_lossy(&t.bytes)
                );
            }
        }
    }

    /// Delivers messages until none is in flight, stopping early to hand
    /// back the first message `hold` selects (it is not delivered; the
    /// messages its sender queued after it stay queued).
    pub fn run_until(
        &mut self,
        mut hold: impl FnMut(usize, &Transmit) -> bool,
    ) -> Option<(usize, Transmit)> {
        loop {
            self.collect();
            let mut progress = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.queues[i].pop_front() {
                    progress = true;
                    if hold(i, &t) {
                        return Some((i, t));
                    }
                    self.deliver(i, &t);
                    self.collect();
                }
            }
            if !progress {
                return None;
            }
        }
    }

    /// Delivers messages until none is in flight.
    pub fn run(&mut self) {
        self.run_until(|_, _| false);
    }

    /// Lets `d` pass on every replica, then delivers what that produced.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        for i in 0..self.nodes.len() {
            self.nodes[i].handle_timeout(self.now);
        }
        self.run();
    }

    /// Delivers everything and lets a few reclamation rounds pass.
    pub fn settle(&mut self) {
        self.run();
        for _ in 0..4 {
            self.advance(Duration::from_secs(1));
        }
    }

    /// Asserts that every ready replica not excluded holds the same document.
    pub fn assert_converged(&mut self) {
        let mut first: Option<(usize, Vec<u8>)> = None;
        for i in 0..self.nodes.len() {
            if self.excluded[i] || !self.nodes[i].is_ready() {
                continue;
            }
            self.nodes[i].check_invariants();
            let snap = self.nodes[i].snapshot();
            match &first {
                None => first = Some((i, snap)),
                Some((j, s)) => assert!(
                    *s == snap,
                    "replicas {j} and {i} diverged\n{j}: {}\n{i}: {}",
                    self.nodes[*j].debug_dump(),
                    self.nodes[i].debug_dump()
                ),
            }
        }
    }

    /// Has replica `i` join by a sync and waits until it is ready.
    pub fn sync(&mut self, i: usize) {
        self.nodes[i].sync();
        self.run();
        for _ in 0..20 {
            if self.nodes[i].is_ready() {
                return;
            }
            self.advance(Duration::from_secs(1));
        }
        panic!("replica {i} never finished its sync");
    }
}

/// Rewrites a JSON message.
/// A one-operation message (`Op`, `Next`) is edited in its general form
/// (`Ops`), which decodes the same.
pub fn edit_json(bytes: &[u8], f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).expect("a JSON message");
    if let Some(one) = v["body"].get_mut("Op").map(serde_json::Value::take) {
        v["body"] = serde_json::json!({"Ops": {
            "seq": one["seq"], "tick": one["tick"], "ops": [one["op"]],
        }});
    }
    if let Some(one) = v["body"].get_mut("Next").map(serde_json::Value::take) {
        v["body"] = serde_json::json!({"Ops": {
            "seq": one["seq"], "tick": 1, "ops": [one["op"]],
        }});
    }
    f(&mut v);
    serde_json::to_vec(&v).expect("serializable")
}

/// The JSON of a message, for matching on its kind.
pub fn json_of(bytes: &[u8]) -> Option<serde_json::Value> {
    if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).ok()
    } else {
        None
    }
}

/// The body kind of a JSON message (`"Ops"`, `"SyncAnswer"`, ...).
pub fn kind_of(bytes: &[u8]) -> Option<String> {
    let v = json_of(bytes)?;
    v["body"].as_object()?.keys().next().cloned()
}
