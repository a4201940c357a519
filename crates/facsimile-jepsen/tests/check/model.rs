//! Histories generated from sequential models (one register per key, one
//! list per key, one lock with a fenced counter), each operation taking
//! effect at an instant inside its recorded interval, with random process
//! interleavings, overlaps, outcomes and crashes. Every such history is
//! valid; each one mutated with a planted anomaly is not.

use std::collections::{HashMap, HashSet};

use facsimile_jepsen::check::{AnomalyKind, CheckerReport, Report, check_all};
use facsimile_jepsen::history::{self, Event, Kind, Missing, Op};
use proptest::prelude::*;

use super::{incr, read_list, record, record_final};

const PROCESSES: u32 = 5;
const KEYS: u32 = 2;

#[derive(Debug, Clone)]
struct Step {
    process: u32,
    action: u8,
    key: u32,
    outcome: u8,
    early: u64,
    late: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (0..PROCESSES, 0..19u8, 0..KEYS, 0..8u8, 0..150u64, 0..25u64).prop_map(
        |(process, action, key, outcome, early, late)| Step {
            process,
            action,
            key,
            outcome,
            early,
            late,
        },
    )
}

/// What an outcome draw means for a write, append or increment.
enum Effect {
    Ok,
    Fail,
    /// Unknown to the client; whether it took effect.
    Info(bool),
}

fn effect(outcome: u8) -> Effect {
    match outcome {
        0..=4 => Effect::Ok,
        5 => Effect::Fail,
        6 => Effect::Info(true),
        _ => Effect::Info(false),
    }
}

#[derive(Default)]
struct Model {
    events: Vec<Event>,
    registers: HashMap<u32, u64>,
    lists: HashMap<u32, Vec<u64>>,
    next_value: u64,
    holder: Option<u32>,
    tokens: HashMap<u32, u64>,
    next_token: u64,
    counter: u64,
    highest: u64,
    busy_until: HashMap<u32, u64>,
    dead: HashSet<u32>,
    /// Positions of the completions of the final list reads, with the key.
    final_lists: Vec<(u32, usize)>,
    register_reads: Vec<usize>,
    list_reads: Vec<usize>,
    accepted: Vec<usize>,
    grants: usize,
}

impl Model {
    fn record(
        &mut self,
        p: u32,
        at: u64,
        early: u64,
        late: u64,
        invoked: Op,
        completed: Option<(Kind, Op)>,
    ) -> usize {
        let busy = &mut self.busy_until;
        record(
            &mut self.events,
            busy,
            p,
            (at, early, late),
            invoked,
            completed,
        )
    }

    fn run(&mut self, steps: &[Step]) {
        self.next_token = 1;
        let mut at = 1000;
        for s in steps {
            at += 100;
            let p = s.process;
            if self.dead.contains(&p) {
                continue;
            }
            let (e, l) = (s.early, s.late);
            match s.action {
                0..=2 => {
                    self.next_value += 1;
                    let value = self.next_value;
                    let op = Op::Write { key: s.key, value };
                    let kind = match effect(s.outcome) {
                        Effect::Ok => Kind::Ok,
                        Effect::Fail => Kind::Fail,
                        Effect::Info(applied) => {
                            if !applied {
                                let end = (Kind::Info, op.clone());
                                self.record(p, at, e, l, op, Some(end));
                                continue;
                            }
                            Kind::Info
                        }
                    };
                    if kind != Kind::Fail {
                        self.registers.insert(s.key, value);
                    }
                    self.record(p, at, e, l, op.clone(), Some((kind, op)));
                }
                3..=5 => {
                    let value = self.registers.get(&s.key).copied();
                    let i = self.read(p, at, e, l, s.key, value);
                    self.register_reads.push(i);
                }
                6..=8 => {
                    self.next_value += 1;
                    let element = self.next_value;
                    let op = Op::Append {
                        key: s.key,
                        element,
                    };
                    let (kind, applied) = match effect(s.outcome) {
                        Effect::Ok => (Kind::Ok, true),
                        Effect::Fail => (Kind::Fail, false),
                        Effect::Info(applied) => (Kind::Info, applied),
                    };
                    if applied {
                        self.lists.entry(s.key).or_default().push(element);
                    }
                    self.record(p, at, e, l, op.clone(), Some((kind, op)));
                }
                9..=11 => {
                    let i = self.read_list(p, at, e, l, s.key);
                    self.list_reads.push(i);
                }
                12 | 13 => {
                    if self.holder == Some(p) {
                        continue;
                    }
                    // Any other holder has been paused past its lease.
                    let token = self.next_token;
                    self.next_token += 1;
                    self.holder = Some(p);
                    self.tokens.insert(p, token);
                    self.grants += 1;
                    self.record(
                        p,
                        at,
                        e,
                        l,
                        Op::Acquire {
                            lock: 0,
                            token: None,
                        },
                        Some((
                            Kind::Ok,
                            Op::Acquire {
                                lock: 0,
                                token: Some(token),
                            },
                        )),
                    );
                }
                14..=16 => {
                    let Some(&token) = self.tokens.get(&p) else {
                        continue;
                    };
                    let invoked = incr(0, token, None);
                    if token < self.highest {
                        self.record(p, at, e, l, invoked.clone(), Some((Kind::Fail, invoked)));
                        continue;
                    }
                    let (kind, applied) = match effect(s.outcome) {
                        Effect::Ok | Effect::Fail => (Kind::Ok, true),
                        Effect::Info(applied) => (Kind::Info, applied),
                    };
                    let done = if kind == Kind::Ok {
                        incr(0, token, Some(self.counter))
                    } else {
                        invoked.clone()
                    };
                    if applied {
                        self.counter += 1;
                        self.highest = token;
                    }
                    let i = self.record(p, at, e, l, invoked, Some((kind, done)));
                    if kind == Kind::Ok {
                        self.accepted.push(i);
                    }
                }
                17 => {
                    let Some(token) = self.tokens.remove(&p) else {
                        continue;
                    };
                    let kind = if self.holder == Some(p) {
                        self.holder = None;
                        Kind::Ok
                    } else {
                        Kind::Fail
                    };
                    let op = Op::Release { lock: 0, token };
                    self.record(p, at, e, l, op.clone(), Some((kind, op)));
                }
                _ => {
                    // A crash in the middle of a write, which may or may
                    // not have reached the relay.
                    self.next_value += 1;
                    let value = self.next_value;
                    if s.outcome % 2 == 0 {
                        self.registers.insert(s.key, value);
                    }
                    self.record(p, at, e, l, Op::Write { key: s.key, value }, None);
                    self.dead.insert(p);
                }
            }
        }
        // After healing, every live process reads everything.
        at += 1000;
        let live: Vec<u32> = (0..PROCESSES).filter(|p| !self.dead.contains(p)).collect();
        let keys: Vec<u32> = (0..KEYS).collect();
        for &p in &live {
            record_final(&mut self.events, &mut self.busy_until, p, at, &live, &keys);
            for key in 0..KEYS {
                at += 100;
                let value = self.registers.get(&key).copied();
                self.read(p, at, 0, 0, key, value);
                at += 100;
                let i = self.read_list(p, at, 0, 0, key);
                self.final_lists.push((key, i));
            }
        }
    }

    fn read(&mut self, p: u32, at: u64, e: u64, l: u64, key: u32, value: Option<u64>) -> usize {
        self.record(
            p,
            at,
            e,
            l,
            super::read(key, None),
            Some((Kind::Ok, super::read(key, value))),
        )
    }

    fn read_list(&mut self, p: u32, at: u64, e: u64, l: u64, key: u32) -> usize {
        let elements = self.lists.get(&key).cloned().unwrap_or_default();
        self.record(
            p,
            at,
            e,
            l,
            read_list(key, None),
            Some((Kind::Ok, read_list(key, Some(elements)))),
        )
    }

    /// The elements of the list read completed at `i`.
    fn elements(&mut self, i: usize) -> &mut Vec<u64> {
        match &mut self.events[i].op {
            Op::ReadList {
                elements: Some(e), ..
            } => e,
            other => panic!("not a list read: {other:?}"),
        }
    }

    /// Plants anomaly number `which`, on the candidate `pick` selects.
    /// Returns the kind the checkers must find and which checker, or
    /// `None` when this history has nothing to plant it on.
    fn plant(&mut self, which: u8, pick: usize) -> Option<(AnomalyKind, Checker)> {
        match which {
            0 => {
                // An acknowledged append missing from one final read.
                let acked: HashSet<u64> = self
                    .events
                    .iter()
                    .filter(|e| e.kind == Kind::Ok)
                    .filter_map(|e| match e.op {
                        Op::Append { element, .. } => Some(element),
                        _ => None,
                    })
                    .collect();
                let candidates: Vec<(usize, usize)> = self
                    .final_lists
                    .clone()
                    .into_iter()
                    .flat_map(|(_, i)| {
                        let els = self.elements(i).clone();
                        els.into_iter()
                            .enumerate()
                            .filter(|(_, e)| acked.contains(e))
                            .map(move |(k, _)| (i, k))
                    })
                    .collect();
                let &(i, k) = candidates.get(pick % candidates.len().max(1))?;
                self.elements(i).remove(k);
                Some((AnomalyKind::LostWrite, lists))
            }
            1 => {
                let candidates: Vec<usize> = self
                    .list_reads
                    .iter()
                    .chain(self.final_lists.iter().map(|(_, i)| i))
                    .copied()
                    .filter(|&i| !self.events[i].op_elements().is_empty())
                    .collect();
                let &i = candidates.get(pick % candidates.len().max(1))?;
                let first = self.elements(i)[0];
                self.elements(i).push(first);
                Some((AnomalyKind::DuplicateElement, lists))
            }
            2 => {
                // Two final reads of a key with two elements or more: one
                // of them swaps its first two.
                let mut by_key: HashMap<u32, Vec<usize>> = HashMap::new();
                for &(key, i) in &self.final_lists {
                    if self.events[i].op_elements().len() >= 2 {
                        by_key.entry(key).or_default().push(i);
                    }
                }
                let mut candidates: Vec<usize> = by_key
                    .into_values()
                    .filter(|reads| reads.len() >= 2)
                    .map(|reads| reads[0])
                    .collect();
                candidates.sort_unstable();
                let &i = candidates.get(pick % candidates.len().max(1))?;
                self.elements(i).swap(0, 1);
                Some((AnomalyKind::OrderFlip, lists))
            }
            3 => {
                let &i = self
                    .register_reads
                    .get(pick % self.register_reads.len().max(1))?;
                if let Op::Read { value, .. } = &mut self.events[i].op {
                    *value = Some(u64::MAX);
                }
                Some((AnomalyKind::PhantomRead, registers))
            }
            4 => {
                // An accepted increment reads what the previous one read.
                if self.accepted.len() < 2 {
                    return None;
                }
                let k = 1 + pick % (self.accepted.len() - 1);
                let prev = self.events[self.accepted[k - 1]].op.clone();
                let Op::Increment { read, wrote, .. } = prev else {
                    unreachable!("accepted increments are increments");
                };
                if let Op::Increment {
                    read: r, wrote: w, ..
                } = &mut self.events[self.accepted[k]].op
                {
                    (*r, *w) = (read, wrote);
                }
                Some((AnomalyKind::LostIncrement, locks))
            }
            5 => {
                // A grant, after everything, of a token below every other.
                if self.grants == 0 {
                    return None;
                }
                let p = PROCESSES + 1;
                self.record(
                    p,
                    u64::MAX / 2,
                    0,
                    0,
                    Op::Acquire {
                        lock: 0,
                        token: None,
                    },
                    Some((
                        Kind::Ok,
                        Op::Acquire {
                            lock: 0,
                            token: Some(0),
                        },
                    )),
                );
                Some((AnomalyKind::TokenRegression, locks))
            }
            _ => {
                // An increment, after everything, accepted with a token
                // below every other.
                if self.accepted.is_empty() {
                    return None;
                }
                let p = PROCESSES + 2;
                let c = self.counter;
                self.record(
                    p,
                    u64::MAX / 2,
                    0,
                    0,
                    incr(0, 0, None),
                    Some((Kind::Ok, incr(0, 0, Some(c)))),
                );
                Some((AnomalyKind::StaleIncrementAccepted, locks))
            }
        }
    }
}

/// Picks one checker's report out of a report.
type Checker = fn(&Report) -> &CheckerReport;

fn registers(r: &Report) -> &CheckerReport {
    &r.registers
}

fn lists(r: &Report) -> &CheckerReport {
    &r.lists
}

fn locks(r: &Report) -> &CheckerReport {
    &r.locks
}

trait Elements {
    fn op_elements(&self) -> &[u64];
}

impl Elements for Event {
    fn op_elements(&self) -> &[u64] {
        match &self.op {
            Op::ReadList {
                elements: Some(e), ..
            } => e,
            _ => &[],
        }
    }
}

fn history(model: Model) -> Vec<Event> {
    history::merge([model.events])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn histories_of_the_sequential_models_are_valid(steps in prop::collection::vec(step(), 1..80)) {
        let mut model = Model::default();
        model.run(&steps);
        let report = check_all(&history(model));
        // Valid but for what it may not prove: every process may die.
        prop_assert!(report.violation_free(), "{report}\n{report:#?}");
    }

    #[test]
    fn a_planted_anomaly_is_found(
        steps in prop::collection::vec(step(), 1..80),
        which in 0..7u8,
        pick in any::<usize>(),
    ) {
        let mut model = Model::default();
        model.run(&steps);
        let planted = model.plant(which, pick);
        prop_assume!(planted.is_some());
        let (kind, checker) = planted.expect("assumed");
        let report = check_all(&history(model));
        prop_assert!(!report.violation_free(), "{kind} planted: {report}");
        let found = checker(&report);
        prop_assert!(found.count(kind) > 0, "{kind} planted: {report}");
        prop_assert!(found.examples.iter().any(|a| a.kind == kind));
    }
}

fn missing() -> impl Strategy<Value = Missing> {
    prop_oneof![Just(Missing::Document), Just(Missing::Object)]
}

/// Any operation, on few objects and values so that they meet, with
/// extreme values among them.
fn any_op() -> impl Strategy<Value = Op> {
    let value = prop_oneof![0..4u64, Just(u64::MAX), Just(u64::MAX - 1)];
    let maybe = prop::option::of(value.clone());
    prop_oneof![
        (0..2u32, value.clone()).prop_map(|(key, value)| Op::Write { key, value }),
        (0..2u32, maybe.clone(), prop::option::of(missing())).prop_map(|(key, value, missing)| {
            Op::Read {
                key,
                value,
                missing,
                foreign: None,
            }
        }),
        (0..2u32, value.clone()).prop_map(|(key, element)| Op::Append { key, element }),
        (
            0..2u32,
            prop::option::of(prop::collection::vec(value.clone(), 0..5))
        )
            .prop_map(|(key, elements)| read_list(key, elements)),
        (
            prop::collection::vec(0..3u32, 0..3),
            prop::collection::vec(0..2u32, 0..3),
            prop::collection::vec(0..2u32, 0..3)
        )
            .prop_map(|(live, keys, locks)| Op::Final { live, keys, locks }),
        (0..2u32, maybe.clone()).prop_map(|(lock, token)| Op::Acquire { lock, token }),
        (0..2u32, value.clone(), maybe.clone(), maybe.clone()).prop_map(
            |(counter, token, read, wrote)| {
                Op::Increment {
                    counter,
                    token,
                    read,
                    wrote,
                }
            }
        ),
        (0..2u32, value.clone()).prop_map(|(lock, token)| Op::Release { lock, token }),
        (0..2u32, value.clone(), value.clone(), maybe.clone()).prop_map(
            |(lock, token, id, read)| Op::DocIncrement {
                lock,
                token,
                id,
                read,
                foreign: None,
            }
        ),
        (0..2u32, maybe, prop::option::of(missing())).prop_map(|(lock, value, missing)| {
            Op::DocRead {
                lock,
                value,
                missing,
                foreign: None,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn any_history_is_checked_without_panicking(
        events in prop::collection::vec(
            (0..3u32, prop_oneof![Just(Kind::Invoke), Just(Kind::Ok), Just(Kind::Fail), Just(Kind::Info)], any_op(), 0..50u64),
            0..60,
        ),
    ) {
        let history: Vec<Event> = events
            .into_iter()
            .map(|(process, kind, op, time)| Event::new(process, kind, op, time))
            .collect();
        let report = check_all(&history);
        let _ = report.to_string();
    }
}
