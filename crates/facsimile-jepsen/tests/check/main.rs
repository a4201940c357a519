//! The checkers on hand-built histories (valid ones, and ones with one
//! planted anomaly each) and on histories generated from sequential models.

mod doc_locks;
mod lists;
mod locks;
mod model;
mod processes;
mod registers;
mod replicas;
mod report;
mod snapshots;

use std::collections::HashMap;

use facsimile_jepsen::check::{AnomalyKind, CheckerReport};
use facsimile_jepsen::history::{self, Event, Kind, Op};

/// Builds a history event by event on a clock that ticks once per event.
#[derive(Default)]
pub(crate) struct History {
    pub(crate) events: Vec<Event>,
    time: u64,
}

impl History {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, process: u32, kind: Kind, op: Op) {
        self.time += 10;
        self.events.push(Event::new(process, kind, op, self.time));
    }

    pub(crate) fn invoke(&mut self, process: u32, op: Op) -> &mut Self {
        self.push(process, Kind::Invoke, op);
        self
    }

    pub(crate) fn end(&mut self, process: u32, kind: Kind, op: Op) -> &mut Self {
        self.push(process, kind, op);
        self
    }

    /// An operation invoked and completed before anything else happens.
    pub(crate) fn op(&mut self, process: u32, kind: Kind, invoked: Op, completed: Op) -> &mut Self {
        self.invoke(process, invoked).end(process, kind, completed)
    }

    pub(crate) fn write(&mut self, p: u32, kind: Kind, key: u32, value: u64) -> &mut Self {
        let op = Op::Write { key, value };
        self.op(p, kind, op.clone(), op)
    }

    pub(crate) fn read(&mut self, p: u32, key: u32, value: Option<u64>) -> &mut Self {
        self.op(p, Kind::Ok, read(key, None), read(key, value))
    }

    pub(crate) fn append(&mut self, p: u32, kind: Kind, key: u32, element: u64) -> &mut Self {
        let op = Op::Append { key, element };
        self.op(p, kind, op.clone(), op)
    }

    pub(crate) fn read_list(&mut self, p: u32, key: u32, elements: &[u64]) -> &mut Self {
        self.op(
            p,
            Kind::Ok,
            read_list(key, None),
            read_list(key, Some(elements.to_vec())),
        )
    }

    /// Process `p` begins its final reads of `keys`, every process in
    /// `live` doing the same.
    pub(crate) fn begin_final(&mut self, p: u32, live: &[u32], keys: &[u32]) -> &mut Self {
        self.begin_final_of(p, live, keys, &[])
    }

    /// Process `p` begins its final reads of `keys` and of the counters of
    /// `locks`, every process in `live` doing the same.
    pub(crate) fn begin_final_of(
        &mut self,
        p: u32,
        live: &[u32],
        keys: &[u32],
        locks: &[u32],
    ) -> &mut Self {
        let op = Op::Final {
            live: live.to_vec(),
            keys: keys.to_vec(),
            locks: locks.to_vec(),
        };
        self.push(p, Kind::Ok, op);
        self
    }

    /// Every process in `live` begins its final reads of `keys`.
    pub(crate) fn all_final(&mut self, live: &[u32], keys: &[u32]) -> &mut Self {
        for &p in live {
            self.begin_final(p, live, keys);
        }
        self
    }

    pub(crate) fn acquire(&mut self, p: u32, lock: u32, token: u64) -> &mut Self {
        self.op(
            p,
            Kind::Ok,
            Op::Acquire { lock, token: None },
            Op::Acquire {
                lock,
                token: Some(token),
            },
        )
    }

    pub(crate) fn increment(&mut self, p: u32, counter: u32, token: u64, read: u64) -> &mut Self {
        self.op(
            p,
            Kind::Ok,
            incr(counter, token, None),
            incr(counter, token, Some(read)),
        )
    }

    /// Process `p` learns that its earlier writes of unknown outcome were
    /// `acknowledged` by a later flush, or `lost`.
    pub(crate) fn settle(&mut self, p: u32, acknowledged: &[u64], lost: &[u64]) -> &mut Self {
        let op = Op::Settle {
            acknowledged: acknowledged.to_vec(),
            lost: lost.to_vec(),
        };
        self.push(p, Kind::Ok, op);
        self
    }

    pub(crate) fn release(&mut self, p: u32, lock: u32, token: u64) -> &mut Self {
        let op = Op::Release { lock, token };
        self.op(p, Kind::Ok, op.clone(), op)
    }

    /// Process `p`, holding `lock` with `token`, reads `read` from the
    /// locked map's counter and writes one more, ending `kind`; `id` names
    /// it as a write's value does.
    pub(crate) fn doc_increment(
        &mut self,
        p: u32,
        kind: Kind,
        lock: u32,
        token: u64,
        id: u64,
        read: u64,
    ) -> &mut Self {
        self.op(
            p,
            kind,
            doc_incr(lock, token, id, None),
            doc_incr(lock, token, id, Some(read)),
        )
    }

    /// Process `p` reads `value` from lock `lock`'s counter.
    pub(crate) fn doc_read(&mut self, p: u32, lock: u32, value: Option<u64>) -> &mut Self {
        self.op(p, Kind::Ok, doc_read(lock, None), doc_read(lock, value))
    }
}

/// A document increment as invoked (`read` `None`) or as completed.
pub(crate) fn doc_incr(lock: u32, token: u64, id: u64, read: Option<u64>) -> Op {
    Op::DocIncrement {
        lock,
        token,
        id,
        read,
        foreign: None,
    }
}

/// A read of a lock's counter as invoked (`value` `None`) or as completed.
pub(crate) fn doc_read(lock: u32, value: Option<u64>) -> Op {
    Op::DocRead {
        lock,
        value,
        missing: None,
        foreign: None,
    }
}

/// A register read as invoked (`value` `None`) or as completed.
pub(crate) fn read(key: u32, value: Option<u64>) -> Op {
    Op::Read {
        key,
        value,
        missing: None,
        foreign: None,
    }
}

/// A list read as invoked (`elements` `None`) or as completed.
pub(crate) fn read_list(key: u32, elements: Option<Vec<u64>>) -> Op {
    Op::ReadList {
        key,
        elements,
        missing: None,
        foreign: Vec::new(),
    }
}

/// An increment as invoked (`read` `None`) or as accepted.
pub(crate) fn incr(counter: u32, token: u64, read: Option<u64>) -> Op {
    Op::Increment {
        counter,
        token,
        read,
        wrote: read.map(|r| r + 1),
    }
}

/// A history as a run's clients record it, one JSON event a line (the
/// processes' files merged).
pub(crate) fn recorded(lines: &str) -> Vec<Event> {
    history::merge([history::read(lines.as_bytes()).expect("history lines")])
}

/// Asserts the report is valid, printing what it found otherwise.
#[track_caller]
pub(crate) fn assert_valid(report: &CheckerReport) {
    assert!(report.valid, "expected valid: {report:#?}");
}

/// Asserts the report is invalid and found `kind`.
#[track_caller]
pub(crate) fn assert_found(report: &CheckerReport, kind: AnomalyKind) {
    assert!(!report.valid, "expected {kind}: {report:#?}");
    assert!(report.count(kind) > 0, "expected {kind}: {report:#?}");
    assert!(
        report
            .examples
            .iter()
            .any(|a| a.kind == kind && !a.ops.is_empty()),
        "expected an example of {kind} naming its operations: {report:#?}"
    );
}

/// Records an operation taking effect at `at`: invoked up to `early` before
/// (but after the process's previous operation ended, per `busy_until`),
/// completed `late` after, or never when `completed` is `None`. Returns the
/// completion's position in `events`.
pub(crate) fn record(
    events: &mut Vec<Event>,
    busy_until: &mut HashMap<u32, u64>,
    p: u32,
    (at, early, late): (u64, u64, u64),
    invoked: Op,
    completed: Option<(Kind, Op)>,
) -> usize {
    let busy = busy_until.get(&p).map_or(0, |t| t + 1);
    let invoke = busy.max(at.saturating_sub(early));
    events.push(Event::new(p, Kind::Invoke, invoked, invoke));
    let complete = at + late;
    busy_until.insert(p, complete);
    if let Some((kind, op)) = completed {
        events.push(Event::new(p, kind, op, complete));
    }
    events.len() - 1
}

/// Records process `p` beginning its final reads of `keys` at `at` (or
/// once its previous operation ended), every process in `live` doing the
/// same.
pub(crate) fn record_final(
    events: &mut Vec<Event>,
    busy_until: &mut HashMap<u32, u64>,
    p: u32,
    at: u64,
    live: &[u32],
    keys: &[u32],
) {
    let time = busy_until.get(&p).map_or(0, |t| t + 1).max(at);
    busy_until.insert(p, time);
    events.push(Event {
        process: p,
        kind: Kind::Ok,
        op: Op::Final {
            live: live.to_vec(),
            keys: keys.to_vec(),
            locks: Vec::new(),
        },
        time,
        error: None,
    });
}
