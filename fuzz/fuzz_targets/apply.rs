//! Structure-aware: two or three replicas (the third may only observe)
//! make arbitrary local writes,
//! lock, sync, and receive each other's messages in arbitrary interleavings
//! that keep each sender's order (some packed into runs, as a relay replays
//! them), while mutated copies of real messages and garbage are injected.
//!
//! Checked: nothing panics; a refused message or a refused local write
//! leaves the document as it was and sends nothing; honest messages are
//! accepted; and once everything is delivered, the ready replicas hold the
//! same document, byte for byte, with their invariants intact. A replica
//! that accepted an injected message may legitimately differ (it took the
//! forgery as its peer's word), so a case in which any injected message
//! was accepted checks everything but convergence.

#![no_main]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use facsimile_core::{Config, Envelope, PeerId, Replica, WireFormat};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{Mutation, Write, converged, mutate, write};

#[derive(Arbitrary, Debug)]
struct Case {
    three: bool,
    /// The third replica only observes (`Config::observer`).
    observer: bool,
    json: [bool; 3],
    actions: Vec<Action>,
}

#[derive(Arbitrary, Debug)]
enum Action {
    Write {
        node: u8,
        write: Write,
    },
    /// Delivers up to `n` messages on the link from `from` to `to`.
    Deliver {
        from: u8,
        to: u8,
        n: u8,
    },
    /// Delivers the messages at the front of the link from `from` to `to`
    /// that make one run (up to `n`), packed into one as a relay replays
    /// them.
    DeliverRun {
        from: u8,
        to: u8,
        n: u8,
    },
    /// Delivers everything in flight, in a fixed order.
    DeliverAll,
    /// Delivers a mutated copy of a message `from` sent (the original
    /// stays in flight).
    Inject {
        from: u8,
        to: u8,
        index: u8,
        mutation: Mutation,
    },
    Garbage {
        to: u8,
        bytes: Vec<u8>,
    },
    Sync {
        node: u8,
    },
    Tick {
        millis: u16,
    },
}

struct World {
    nodes: Vec<Replica>,
    /// `links[from][to]`: messages in flight, in send order.
    links: Vec<Vec<VecDeque<Arc<[u8]>>>>,
    /// Everything each node sent, for injection.
    sent: Vec<Vec<Arc<[u8]>>>,
    now: Duration,
    /// An injected message was accepted somewhere.
    tainted: bool,
}

impl World {
    fn new(case: &Case) -> Self {
        let n = if case.three { 3 } else { 2 };
        let nodes: Vec<Replica> = (0..n)
            .map(|i| {
                let format = if case.json[i] {
                    WireFormat::Json
                } else {
                    WireFormat::Binary
                };
                let config = Config::default().wire_format(format);
                let config = match case.observer && i == 2 {
                    true => config.observer(),
                    false => config,
                };
                Replica::new(PeerId::new(format!("r{i}"), 0x100 + i as u32), config)
            })
            .collect();
        let mut w = World {
            links: (0..n)
                .map(|_| (0..n).map(|_| VecDeque::new()).collect())
                .collect(),
            sent: vec![Vec::new(); n],
            nodes,
            now: Duration::ZERO,
            tainted: false,
        };
        for i in 0..n {
            w.collect(i);
        }
        // Replicas started independently hear each other's announcements
        // before anything else: reclamation assumes every peer that could
        // hold part of the document is known (see the core's `gc` module);
        // one that believes it is alone reclaims what an unheard-of peer may
        // still reference.
        w.deliver_all();
        w
    }

    fn collect(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            for j in 0..self.nodes.len() {
                let tag = self.nodes[j].peer_id().incarnation();
                if j != i && t.to.is_none_or(|to| to == tag) {
                    self.links[i][j].push_back(t.bytes.clone());
                }
            }
            self.sent[i].push(t.bytes);
        }
        while self.nodes[i].poll_event().is_some() {}
    }

    fn deliver(&mut self, from: usize, to: usize) -> bool {
        let Some(bytes) = self.links[from][to].pop_front() else {
            return false;
        };
        let result = self.nodes[to].handle_message(&bytes);
        if let Err(e) = result {
            assert!(
                self.tainted,
                "node {to} refused an honest message from {from}: {e}\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        self.collect(to);
        true
    }

    fn deliver_run(&mut self, from: usize, to: usize, n: usize) {
        let link = &self.links[from][to];
        let messages: Vec<&[u8]> = link.iter().take(n).map(|m| &m[..]).collect();
        let (covered, packed) = Envelope::pack_run(&messages, usize::MAX);
        let Some(packed) = packed else {
            self.deliver(from, to);
            return;
        };
        self.links[from][to].drain(..covered);
        if let Err(e) = self.nodes[to].handle_message(&packed) {
            assert!(
                self.tainted,
                "node {to} refused an honest run of {covered} messages from {from}: {e}"
            );
        }
        self.collect(to);
    }

    fn deliver_all(&mut self) {
        let n = self.nodes.len();
        loop {
            let mut any = false;
            for from in 0..n {
                for to in 0..n {
                    while self.deliver(from, to) {
                        any = true;
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    fn hostile(&mut self, to: usize, bytes: &[u8]) {
        let r = &mut self.nodes[to];
        let before = r.snapshot();
        // Writes held while offline go out before anything remote is
        // looked at, refused or not: only new messages count.
        let held = r.has_held();
        match r.handle_message(bytes) {
            Err(_) => {
                assert!(
                    r.snapshot() == before,
                    "a refused message changed the document"
                );
                assert!(
                    held || !r.has_transmits(),
                    "a refused message made the replica send"
                );
            }
            Ok(()) => self.tainted = true,
        }
        self.collect(to);
    }

    fn tick(&mut self, d: Duration) {
        self.now += d;
        for i in 0..self.nodes.len() {
            self.nodes[i].handle_timeout(self.now);
            self.collect(i);
        }
    }
}

fuzz_target!(|case: Case| {
    let mut w = World::new(&case);
    let n = w.nodes.len();
    let node = |x: u8| x as usize % n;
    for action in case.actions.iter().take(64) {
        match action {
            Action::Write { node: i, write: wr } => {
                let i = node(*i);
                let r = &mut w.nodes[i];
                write(r, wr);
                r.check_invariants();
                w.collect(i);
            }
            Action::Deliver { from, to, n: k } => {
                for _ in 0..*k {
                    if !w.deliver(node(*from), node(*to)) {
                        break;
                    }
                }
            }
            Action::DeliverRun { from, to, n } => {
                w.deliver_run(node(*from), node(*to), usize::from(*n));
            }
            Action::DeliverAll => w.deliver_all(),
            Action::Inject {
                from,
                to,
                index,
                mutation,
            } => {
                let (from, to) = (node(*from), node(*to));
                let sent = &w.sent[from];
                if sent.is_empty() || from == to {
                    continue;
                }
                let original = sent[*index as usize % sent.len()].clone();
                let bytes = mutate(&original, mutation);
                w.hostile(to, &bytes);
            }
            Action::Garbage { to, bytes } => w.hostile(node(*to), bytes),
            Action::Sync { node: i } => {
                let i = node(*i);
                w.nodes[i].sync();
                w.collect(i);
            }
            Action::Tick { millis } => w.tick(Duration::from_millis(u64::from(*millis))),
        }
    }
    // Every node is online again (what it held goes out); everything in
    // flight arrives; time passes so that syncs that chose a replica that
    // was itself syncing move on, and acknowledgements flow.
    for i in 0..w.nodes.len() {
        w.nodes[i].set_online(true);
        w.collect(i);
    }
    for _ in 0..12 {
        w.deliver_all();
        w.tick(Duration::from_secs(6));
    }
    w.deliver_all();
    converged(&mut w.nodes, w.tainted);
});
