//! Histories generated from a model of replicas, not linearizable yet
//! within facsimile's promises: each process reads and writes its own
//! replica (registers last-writer-wins by Lamport stamp, lists ordered by
//! stamp); the relay holds what reached it; a process receives the relay's
//! state when it syncs, drops its writes the relay never had when it
//! rejoins, or resends them. Every such history must pass the checkers.

use std::collections::{BTreeMap, HashMap};

use facsimile_jepsen::check::check_all;
use facsimile_jepsen::history::{self, Event, Kind, Op};
use proptest::prelude::*;

use super::{read, read_list, record, record_final};

const PROCESSES: u32 = 4;
const KEYS: u32 = 2;

type Stamp = (u64, u32);

#[derive(Debug, Clone, Copy)]
enum Write {
    Register {
        key: u32,
        stamp: Stamp,
        value: u64,
    },
    Append {
        key: u32,
        stamp: Stamp,
        element: u64,
    },
}

#[derive(Debug, Clone, Default)]
struct Replica {
    clock: u64,
    registers: HashMap<u32, (Stamp, u64)>,
    lists: HashMap<u32, BTreeMap<Stamp, u64>>,
}

impl Replica {
    fn stamp(&mut self, p: u32) -> Stamp {
        self.clock += 1;
        (self.clock, p)
    }

    fn apply(&mut self, w: Write) {
        match w {
            Write::Register { key, stamp, value } => {
                let slot = self.registers.entry(key).or_insert((stamp, value));
                if stamp > slot.0 {
                    *slot = (stamp, value);
                }
                self.clock = self.clock.max(stamp.0);
            }
            Write::Append {
                key,
                stamp,
                element,
            } => {
                self.lists.entry(key).or_default().insert(stamp, element);
                self.clock = self.clock.max(stamp.0);
            }
        }
    }

    fn merge(&mut self, other: &Replica) {
        for (&key, &(stamp, value)) in &other.registers {
            self.apply(Write::Register { key, stamp, value });
        }
        for (&key, list) in &other.lists {
            for (&stamp, &element) in list {
                self.apply(Write::Append {
                    key,
                    stamp,
                    element,
                });
            }
        }
        self.clock = self.clock.max(other.clock);
    }

    fn register(&self, key: u32) -> Option<u64> {
        self.registers.get(&key).map(|&(_, v)| v)
    }

    fn list(&self, key: u32) -> Vec<u64> {
        self.lists
            .get(&key)
            .map(|l| l.values().copied().collect())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct World {
    relay: Replica,
    local: Vec<Replica>,
    /// Each process's writes the relay does not have yet, in order.
    pending: Vec<Vec<Write>>,
    events: Vec<Event>,
    busy_until: HashMap<u32, u64>,
    next: u64,
}

impl World {
    fn new() -> Self {
        World {
            local: vec![Replica::default(); PROCESSES as usize],
            pending: vec![Vec::new(); PROCESSES as usize],
            ..World::default()
        }
    }

    /// The relay receives a process's pending writes, in order.
    fn resend(&mut self, p: usize) {
        for w in self.pending[p].drain(..) {
            self.relay.apply(w);
        }
    }

    fn rejoin(&mut self, p: usize) {
        let clock = self.local[p].clock;
        self.local[p] = self.relay.clone();
        self.local[p].clock = self.local[p].clock.max(clock);
        self.pending[p].clear();
    }

    /// A write or append by `p` with outcome draw `outcome`; returns its
    /// recorded kind.
    fn write(&mut self, p: usize, w: Write, outcome: u8) -> Kind {
        match outcome {
            0..=3 | 6 => {
                // Acknowledged (or delivered with the reply lost): the
                // relay has it and, in order, everything sent before.
                self.local[p].apply(w);
                self.resend(p);
                self.relay.apply(w);
                if outcome == 6 { Kind::Info } else { Kind::Ok }
            }
            4 => Kind::Fail,
            _ => {
                self.local[p].apply(w);
                self.pending[p].push(w);
                Kind::Info
            }
        }
    }

    fn run(&mut self, steps: &[(u32, u8, u32, u8, u64, u64)]) {
        let mut at = 1000;
        for &(p, action, key, outcome, early, late) in steps {
            at += 100;
            let i = p as usize;
            let when = (at, early, late);
            match action {
                0..=2 => {
                    self.next += 1;
                    let value = self.next;
                    let stamp = self.local[i].stamp(p);
                    let kind = self.write(i, Write::Register { key, stamp, value }, outcome);
                    let op = Op::Write { key, value };
                    let busy = &mut self.busy_until;
                    record(
                        &mut self.events,
                        busy,
                        p,
                        when,
                        op.clone(),
                        Some((kind, op)),
                    );
                }
                3 | 4 => self.read(p, when, key),
                5..=7 => {
                    self.next += 1;
                    let element = self.next;
                    let stamp = self.local[i].stamp(p);
                    let kind = self.write(
                        i,
                        Write::Append {
                            key,
                            stamp,
                            element,
                        },
                        outcome,
                    );
                    let op = Op::Append { key, element };
                    let busy = &mut self.busy_until;
                    record(
                        &mut self.events,
                        busy,
                        p,
                        when,
                        op.clone(),
                        Some((kind, op)),
                    );
                }
                8 | 9 => self.read_list(p, when, key),
                10 => {
                    let relay = self.relay.clone();
                    self.local[i].merge(&relay);
                }
                11 => self.rejoin(i),
                _ => self.resend(i),
            }
        }
        // Healing: each process resends what it has pending or rejoins,
        // then everyone catches up and reads everything.
        for i in 0..PROCESSES as usize {
            if i % 2 == 0 {
                self.resend(i);
            } else {
                self.rejoin(i);
            }
        }
        at += 1000;
        let live: Vec<u32> = (0..PROCESSES).collect();
        let keys: Vec<u32> = (0..KEYS).collect();
        for p in 0..PROCESSES {
            let relay = self.relay.clone();
            self.local[p as usize].merge(&relay);
            record_final(&mut self.events, &mut self.busy_until, p, at, &live, &keys);
            for key in 0..KEYS {
                at += 100;
                self.read(p, (at, 0, 0), key);
                at += 100;
                self.read_list(p, (at, 0, 0), key);
            }
        }
    }

    fn read(&mut self, p: u32, when: (u64, u64, u64), key: u32) {
        let value = self.local[p as usize].register(key);
        let busy = &mut self.busy_until;
        record(
            &mut self.events,
            busy,
            p,
            when,
            read(key, None),
            Some((Kind::Ok, read(key, value))),
        );
    }

    fn read_list(&mut self, p: u32, when: (u64, u64, u64), key: u32) {
        let elements = Some(self.local[p as usize].list(key));
        let busy = &mut self.busy_until;
        record(
            &mut self.events,
            busy,
            p,
            when,
            read_list(key, None),
            Some((Kind::Ok, read_list(key, elements))),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn histories_of_replicas_within_the_promises_are_valid(
        steps in prop::collection::vec(
            (0..PROCESSES, 0..13u8, 0..KEYS, 0..8u8, 0..150u64, 0..25u64),
            1..100,
        ),
    ) {
        let mut world = World::new();
        world.run(&steps);
        let report = check_all(&history::merge([world.events]));
        prop_assert!(report.valid(), "{report}\n{report:#?}");
        prop_assert_eq!(report.lists.final_reads, (PROCESSES * KEYS) as usize);
    }
}
