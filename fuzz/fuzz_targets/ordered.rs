//! Structure-aware, over a totally ordered log (the NATS mode): two or
//! three replicas make arbitrary local writes and lock requests, append
//! what they send to one log (or hold it back for a while, as across a
//! partition, so that leases lapse), and read the log at their own pace,
//! while mutated copies of log entries and garbage are appended too. A
//! replica the log refused, or whose lease lapsed, starts over as the NATS
//! transport makes it: a new incarnation replays the log from its start up
//! to where the old one had read, sends its hello, and reads on beside the
//! old one (which keeps taking writes) until it reads that hello back; then
//! it takes the old one's place and carries over the writes the log
//! refused ([`Replica::carry_over`]).
//!
//! Checked: nothing panics; an entry refused with an error leaves the
//! document as it was and sends nothing; honest entries are accepted; and
//! once everything is read, the ready replicas hold the same document,
//! byte for byte, with their invariants intact (unless an injected entry
//! was accepted: a forgery may legitimately be taken as its sender's word).

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use facsimile_core::{Config, Event, PeerId, Replica, Succession};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::{Mutation, Write, converged, mutate, write};

const LEASE: Duration = Duration::from_secs(3);

#[derive(Arbitrary, Debug)]
struct Case {
    three: bool,
    actions: Vec<Action>,
}

#[derive(Arbitrary, Debug)]
enum Action {
    Write {
        node: u8,
        write: Write,
    },
    /// The node reads up to `n` entries of the log.
    Read {
        node: u8,
        n: u8,
    },
    ReadAll,
    /// The log's clock moves on; every replica's timers run.
    Advance {
        millis: u16,
    },
    /// The node's messages stop reaching the log, or reach it again (all
    /// that was held back first, in order).
    Hold {
        node: u8,
    },
    /// Appends a mutated copy of a log entry.
    Inject {
        index: u8,
        mutation: Mutation,
    },
    Garbage {
        bytes: Vec<u8>,
    },
}

struct Log {
    /// Entries with the log's timestamp, and whether they are honest.
    entries: Vec<(Vec<u8>, Duration, bool)>,
    nodes: Vec<Replica>,
    cursors: Vec<usize>,
    held: Vec<Option<Vec<Vec<u8>>>>,
    now: Duration,
    incarnations: u32,
    reloads: u32,
    tainted: bool,
    /// Each node's successor while it reads on to its own hello.
    pending: Vec<Option<Pending>>,
}

/// A new incarnation reading the log on to its own hello before it takes
/// its node's place.
struct Pending {
    next: Replica,
    succession: Succession,
}

/// More reloads than this in one case is a loop: a replica that starts
/// over meets what made it start over again.
const MAX_RELOADS: u32 = 64;

impl Log {
    fn new(n: usize) -> Self {
        let mut log = Log {
            entries: Vec::new(),
            nodes: Vec::new(),
            cursors: vec![0; n],
            held: vec![None; n],
            // Log timestamps are far from zero, as a real log's are.
            now: Duration::from_secs(1_000),
            incarnations: 0x100,
            reloads: 0,
            tainted: false,
            pending: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            let me = log.me(i);
            log.nodes
                .push(Replica::new(me, Config::default().ordered(LEASE)));
            log.collect(i);
        }
        log
    }

    fn me(&mut self, i: usize) -> PeerId {
        self.incarnations += 1;
        PeerId::new(format!("r{i}"), self.incarnations)
    }

    /// Appends what node `i` sent to the log, or holds it back.
    fn publish(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].poll_transmit() {
            let bytes = t.bytes.to_vec();
            match &mut self.held[i] {
                Some(held) => held.push(bytes),
                None => self.entries.push((bytes, self.now, true)),
            }
        }
    }

    /// Publishes what node `i` sent and handles its events: a replica the
    /// log refused, or whose lease lapsed, starts over.
    fn collect(&mut self, i: usize) {
        self.publish(i);
        let mut reload = false;
        while let Some(e) = self.nodes[i].poll_event() {
            reload |= matches!(e, Event::NeedsSync | Event::Evicted);
        }
        if !reload || self.pending[i].is_some() {
            return;
        }
        self.reloads += 1;
        if self.reloads > MAX_RELOADS {
            // A forgery accepted earlier may name a later incarnation
            // (they are numbered here, random in earnest).
            assert!(self.tainted, "replicas keep starting over");
            return;
        }
        let me = self.me(i);
        let (mut next, succession) = self.nodes[i]
            .successor(me, None)
            .expect("an empty successor");
        for (c, (bytes, time, _)) in self.entries[..self.cursors[i]].iter().enumerate() {
            let _ = next.handle_ordered(bytes, c as u64 + 1, *time);
        }
        let hello = next.poll_transmit().expect("a hello").bytes.to_vec();
        match &mut self.held[i] {
            Some(held) => held.push(hello),
            None => self.entries.push((hello, self.now, true)),
        }
        self.pending[i] = Some(Pending { next, succession });
    }

    /// Node `i`'s successor, having read its own hello back, takes its
    /// place: it carries over what the old incarnation lost to a lapse, and
    /// the old one says goodbye.
    fn install(&mut self, i: usize) {
        let Pending {
            mut next,
            mut succession,
        } = self.pending[i].take().expect("a successor");
        next.extend_succession(&self.nodes[i], &mut succession);
        next.carry_over(&mut self.nodes[i], &succession);
        next.check_invariants();
        self.nodes[i].abandon();
        self.publish(i);
        self.nodes[i] = next;
        self.collect(i);
    }

    fn read(&mut self, i: usize) -> bool {
        let c = self.cursors[i];
        let Some((bytes, time, honest)) = self.entries.get(c).cloned() else {
            return false;
        };
        self.cursors[i] += 1;
        let r = &mut self.nodes[i];
        let before = r.snapshot();
        // Writes held while offline go out before anything remote is
        // looked at, refused or not: only new messages count.
        let idle = !r.has_transmits() && !r.has_held();
        match r.handle_ordered(&bytes, c as u64 + 1, time) {
            Err(e) => {
                assert!(
                    !honest || self.tainted,
                    "node {i} refused an honest entry at {}: {e}",
                    c + 1
                );
                assert!(
                    r.snapshot() == before,
                    "a refused entry changed the document"
                );
                assert!(!idle || !r.has_transmits(), "a refused entry made it send");
            }
            Ok(()) => self.tainted |= !honest,
        }
        self.collect(i);
        if let Some(p) = &mut self.pending[i] {
            let _ = p.next.handle_ordered(&bytes, c as u64 + 1, time);
            if p.next.joined_log() {
                self.install(i);
            }
        }
        true
    }

    fn read_all(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while self.read(i) {
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
    }

    fn release(&mut self, i: usize) {
        if let Some(held) = self.held[i].take() {
            for bytes in held {
                self.entries.push((bytes, self.now, true));
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for i in 0..self.nodes.len() {
            self.nodes[i].handle_timeout(self.now);
            self.collect(i);
        }
    }
}

fuzz_target!(|case: Case| {
    let n = if case.three { 3 } else { 2 };
    let mut log = Log::new(n);
    let node = |x: u8| x as usize % n;
    for action in case.actions.iter().take(64) {
        match action {
            Action::Write { node: i, write: w } => {
                let i = node(*i);
                write(&mut log.nodes[i], w);
                log.nodes[i].check_invariants();
                log.collect(i);
            }
            Action::Read { node: i, n: k } => {
                let i = node(*i);
                for _ in 0..*k {
                    if !log.read(i) {
                        break;
                    }
                }
            }
            Action::ReadAll => log.read_all(),
            Action::Advance { millis } => log.advance(Duration::from_millis(u64::from(*millis))),
            Action::Hold { node: i } => {
                let i = node(*i);
                if log.held[i].is_some() {
                    log.release(i);
                } else {
                    log.held[i] = Some(Vec::new());
                }
            }
            Action::Inject { index, mutation } => {
                if log.entries.is_empty() {
                    continue;
                }
                let original = &log.entries[*index as usize % log.entries.len()].0;
                let bytes = mutate(original, mutation);
                log.entries.push((bytes, log.now, false));
            }
            Action::Garbage { bytes } => log.entries.push((bytes.clone(), log.now, false)),
        }
    }
    // Every partition heals, everything is read, and time passes so that
    // lapsed replicas start over and catch up.
    for i in 0..n {
        log.nodes[i].set_online(true);
        log.collect(i);
        log.release(i);
    }
    for _ in 0..8 {
        log.read_all();
        log.advance(LEASE / 4);
    }
    log.read_all();
    converged(&mut log.nodes, log.tainted);
});
