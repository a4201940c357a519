//! Pairing a history's events into operations.

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::history::{Event, Kind, LockFailure, Op};

/// One operation: an invocation and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    /// The client process.
    pub process: u32,
    /// [`Kind::Ok`], [`Kind::Fail`] or [`Kind::Info`] (also for an
    /// invocation left without completion).
    pub outcome: Kind,
    /// The completion's operation (with what it observed), or the
    /// invocation's when there is no completion.
    pub op: Op,
    /// When it was invoked.
    pub invoke: u64,
    /// When it completed; `None` when a crash left it unfinished.
    pub complete: Option<u64>,
    /// Why it failed, as its completion recorded
    /// ([`Event::error`](crate::history::Event::error)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<LockFailure>,
    /// The invocation's position in the history.
    pub invoke_index: usize,
    /// The completion's position in the history.
    pub complete_index: Option<usize>,
}

impl Operation {
    /// Acknowledged.
    pub fn is_ok(&self) -> bool {
        self.outcome == Kind::Ok
    }

    /// The last instant it may have been in progress that the history
    /// shows: its completion, or its invocation when unfinished (the
    /// process then died, so whatever it did it did before).
    pub fn end(&self) -> u64 {
        self.complete.unwrap_or(self.invoke)
    }
}

/// Pairs each process's invocations with their completions, in the order
/// the process recorded them. Returns the operations in order of
/// invocation, and the ill-formed events with why (a completion without
/// invocation or of another operation, an invocation while one was still
/// open), each as an operation of its own that the checkers do not see.
///
/// A process's [`Op::Settle`] events are no operations: they settle its
/// earlier writes, appends and document increments of unknown outcome
/// (named by value, element or id), which become `ok` (or
/// `fail`) as of the settling event, its time and position. Its
/// [`Op::Final`] event stays, as an operation begun and ended at once, to
/// tell its final reads.
pub fn operations(history: &[Event]) -> (Vec<Operation>, Vec<(String, Operation)>) {
    let mut ops = Vec::with_capacity(history.len() / 2 + 1);
    let mut malformed = Vec::new();
    let mut open: FxHashMap<u32, usize> = FxHashMap::default();
    let lone = |i: usize, e: &Event| Operation {
        process: e.process,
        outcome: e.kind,
        op: e.op.clone(),
        invoke: e.time,
        complete: None,
        error: e.error,
        invoke_index: i,
        complete_index: None,
    };
    let mut settles = Vec::new();
    for (i, e) in history.iter().enumerate() {
        if let Op::Settle { acknowledged, lost } = &e.op {
            settles.push((i, e, acknowledged, lost));
            continue;
        }
        if let Op::Final { .. } = e.op {
            ops.push(Operation {
                complete: Some(e.time),
                ..lone(i, e)
            });
            continue;
        }
        if e.kind == Kind::Invoke {
            if let Some(prev) = open.insert(e.process, i) {
                let mut op = lone(prev, &history[prev]);
                op.outcome = Kind::Info;
                malformed.push((
                    format!("process {} invoked again before completing", e.process),
                    op.clone(),
                ));
                ops.push(op);
            }
            continue;
        }
        match open.remove(&e.process) {
            Some(inv) if history[inv].op.same_call(&e.op) => ops.push(Operation {
                process: e.process,
                outcome: e.kind,
                op: e.op.clone(),
                invoke: history[inv].time,
                complete: Some(e.time),
                error: e.error,
                invoke_index: inv,
                complete_index: Some(i),
            }),
            Some(inv) => {
                malformed.push((
                    format!(
                        "process {} completed {:?} after invoking {:?}",
                        e.process, e.op, history[inv].op
                    ),
                    lone(i, e),
                ));
                // The invocation stays open: its own completion may follow.
                open.insert(e.process, inv);
            }
            None => malformed.push((
                format!("process {} completed without invoking", e.process),
                lone(i, e),
            )),
        }
    }
    for inv in open.into_values() {
        let mut op = lone(inv, &history[inv]);
        op.outcome = Kind::Info;
        ops.push(op);
    }
    ops.sort_by_key(|op| op.invoke_index);
    for (i, e, acknowledged, lost) in settles {
        for op in ops.iter_mut() {
            let (Op::Write { value: v, .. }
            | Op::Append { element: v, .. }
            | Op::DocIncrement { id: v, .. }) = op.op
            else {
                continue;
            };
            if op.process != e.process || op.outcome != Kind::Info || op.invoke > e.time {
                continue;
            }
            let outcome = if acknowledged.contains(&v) {
                Kind::Ok
            } else if lost.contains(&v) {
                Kind::Fail
            } else {
                continue;
            };
            op.outcome = outcome;
            op.complete = Some(e.time);
            op.complete_index = Some(i);
        }
    }
    (ops, malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_pair_with_their_completions_and_unfinished_ones_are_info() {
        let w = |v| Op::Write { key: 1, value: v };
        let history = vec![
            Event::new(0, Kind::Invoke, w(1), 1),
            Event::new(1, Kind::Invoke, w(2), 2),
            Event::new(0, Kind::Ok, w(1), 3),
            Event::new(2, Kind::Fail, w(3), 4),
            Event::new(1, Kind::Ok, w(9), 5),
        ];
        let (ops, malformed) = operations(&history);
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].outcome, ops[0].complete), (Kind::Ok, Some(3)));
        assert_eq!((ops[1].outcome, ops[1].complete), (Kind::Info, None));
        assert_eq!(ops[1].end(), 2);
        assert_eq!(malformed.len(), 2);
        assert!(malformed[0].0.contains("without invoking"));
        assert!(malformed[1].0.contains("after invoking"));
    }
}
