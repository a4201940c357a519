//! LWW registers.
//!
//! A replica's register only ever moves to a value of higher stamp, and a
//! local write takes a stamp above everything its replica has seen. So each
//! process's successive distinct observations of a key (its acknowledged
//! writes and the values it reads) go up in stamp order, and together they
//! must admit one order: a cycle means some replica went back. One
//! exception: a process that reconnects rejoins with a fresh copy from the
//! relay and drops its own writes the relay never acknowledged, so its own
//! unacknowledged writes (and its reads of them) are left out of its
//! observations. Everything else it saw reached the relay and stays.
//!
//! The converged value must be the highest-stamped write the relay
//! applied; a final value that the order shows below a durable write means
//! that write was lost. Durable: acknowledged, or seen by another process,
//! since the relay forwards a message only once it is on its disk (and a
//! stream delivers only what it stored).

use rustc_hash::{FxHashMap, FxHashSet};

use super::graph::Precedence;
use super::{AnomalyKind, CheckerReport, Finals, Operation};
use crate::history::{Kind, Op};

#[derive(Default)]
struct ProcessKey {
    /// The last observation kept: value and operation.
    prev: Option<(u64, usize)>,
    /// This process's writes of the key, by value, numbered in order.
    written: FxHashMap<u64, usize>,
    writes: usize,
    /// The number and operation of its last acknowledged write.
    last_ack: Option<(usize, usize)>,
}

pub(super) fn check(all: &[Operation]) -> CheckerReport {
    let mut report = CheckerReport::new("registers");
    let ops: Vec<&Operation> = all
        .iter()
        .filter(|o| matches!(o.op, Op::Write { .. } | Op::Read { .. }))
        .collect();
    let mut writes: FxHashMap<(u32, u64), usize> = FxHashMap::default();
    for (i, op) in ops.iter().enumerate() {
        report.ops.count(op);
        if let Op::Write { key, value } = op.op {
            writes.insert((key, value), i);
        }
    }

    let finals = Finals::new(all);
    let mut state: FxHashMap<(u32, u32), ProcessKey> = FxHashMap::default();
    let mut seen_elsewhere: FxHashSet<usize> = FxHashSet::default();
    let mut order: FxHashMap<u32, Precedence> = FxHashMap::default();
    // Each process's last final read of each key, and the processes and
    // keys that made one (found or not).
    let mut final_read: FxHashMap<(u32, u32), usize> = FxHashMap::default();
    let mut covered: FxHashSet<(u32, u32)> = FxHashSet::default();
    for (i, op) in ops.iter().enumerate() {
        let p = op.process;
        match op.op {
            Op::Write { key, value } => {
                let st = state.entry((p, key)).or_default();
                st.writes += 1;
                st.written.insert(value, st.writes);
                if op.is_ok() {
                    st.last_ack = Some((st.writes, i));
                    observe(st, order.entry(key).or_default(), value, i);
                }
            }
            Op::Read {
                key,
                value,
                missing,
                ref foreign,
            } if op.is_ok() => {
                let is_final = finals.is_final(op);
                if is_final {
                    covered.insert((p, key));
                }
                if !finals.judge_missing(&mut report, op, key, missing) {
                    continue;
                }
                if let Some(v) = foreign {
                    report.add(
                        AnomalyKind::PhantomRead,
                        key,
                        format!("read {v}, no integer: no write of key {key} wrote it"),
                        vec![(*op).clone()],
                    );
                    continue;
                }
                if is_final {
                    final_read.insert((p, key), i);
                }
                let st = state.entry((p, key)).or_default();
                let Some(v) = value else {
                    if let Some((_, w)) = st.last_ack {
                        report.add(
                            AnomalyKind::ReadYourWrites,
                            key,
                            format!("process {p} read nothing after its write was acknowledged"),
                            vec![ops[w].clone(), (*op).clone()],
                        );
                    } else if let Some((prev, o)) = st.prev {
                        report.add(
                            AnomalyKind::NonMonotonicRead,
                            key,
                            format!("process {p} read nothing after observing {prev}"),
                            vec![ops[o].clone(), (*op).clone()],
                        );
                    }
                    continue;
                };
                let Some(&w) = writes.get(&(key, v)) else {
                    report.add(
                        AnomalyKind::PhantomRead,
                        key,
                        format!("read {v}, which no write of key {key} wrote"),
                        vec![(*op).clone()],
                    );
                    continue;
                };
                let write = ops[w];
                // The writer's own reads before it learned of the loss (a
                // settled one) may show it: its replica had it.
                if write.outcome == Kind::Fail && !(write.process == p && op.invoke < write.end()) {
                    report.add(
                        AnomalyKind::FailedWriteVisible,
                        key,
                        format!("read {v}, whose write failed"),
                        vec![write.clone(), (*op).clone()],
                    );
                    continue;
                }
                if write.process != p {
                    seen_elsewhere.insert(w);
                }
                if let (Some(&n), Some((acked, a))) = (st.written.get(&v), st.last_ack) {
                    if n < acked {
                        report.add(
                            AnomalyKind::ReadYourWrites,
                            key,
                            format!("process {p} read its older write {v} after a later one was acknowledged"),
                            vec![ops[a].clone(), (*op).clone()],
                        );
                        continue;
                    }
                }
                if write.process == p && !write.is_ok() {
                    continue;
                }
                observe(st, order.entry(key).or_default(), v, i);
            }
            _ => {}
        }
    }

    finals.judge_coverage(&mut report, &finals.keys, &covered);
    let mut finals: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
    for (&(_, key), &r) in &final_read {
        finals.entry(key).or_default().push(r);
    }
    let mut keys: Vec<u32> = order.keys().chain(finals.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let none = Precedence::default();
    for key in keys {
        let order = order.get(&key).unwrap_or(&none);
        for cycle in order.cycles() {
            let mut involved = Vec::new();
            for (k, &a) in cycle.iter().enumerate() {
                let b = cycle[(k + 1) % cycle.len()];
                let (x, y) = order.shown_by(a, b);
                involved.extend([x, y]);
            }
            involved.dedup();
            report.add(
                AnomalyKind::NonMonotonicRead,
                key,
                format!("observations of key {key} go round in stamp order: {cycle:?}"),
                involved.into_iter().map(|o| ops[o].clone()).collect(),
            );
        }
        let Some(reads) = finals.get_mut(&key) else {
            continue;
        };
        reads.sort_unstable();
        report.final_reads += reads.len();
        let value = |r: usize| match ops[r].op {
            Op::Read { value, .. } => value,
            _ => unreachable!("final reads are reads"),
        };
        let mut distinct: Vec<usize> = Vec::new();
        for &r in reads.iter() {
            if !distinct.iter().any(|&d| value(d) == value(r)) {
                distinct.push(r);
            }
        }
        if distinct.len() > 1 {
            report.add(
                AnomalyKind::Divergence,
                key,
                format!(
                    "final reads of key {key} disagree: {:?}",
                    distinct.iter().map(|&r| value(r)).collect::<Vec<_>>()
                ),
                distinct.iter().map(|&r| ops[r].clone()).collect(),
            );
        }
        let durable = |w: usize| ops[w].is_ok() || seen_elsewhere.contains(&w);
        for &r in &distinct {
            match value(r) {
                None => {
                    if let Some(w) = (0..ops.len()).find(|&w| {
                        matches!(ops[w].op, Op::Write { key: k, .. } if k == key) && durable(w)
                    }) {
                        report.add(
                            AnomalyKind::LostWrite,
                            key,
                            format!("key {key} ends absent though a write of it is durable"),
                            vec![ops[w].clone(), ops[r].clone()],
                        );
                    }
                }
                Some(f) => {
                    let durable_value = |v: u64| writes.get(&(key, v)).is_some_and(|&w| durable(w));
                    if let Some(path) = order.path_to(f, durable_value) {
                        let newer = *path.last().expect("a path has nodes");
                        report.add(
                            AnomalyKind::LostWrite,
                            key,
                            format!(
                                "key {key} ends at {f}, below the durable write {newer} in stamp order: {path:?}"
                            ),
                            vec![ops[writes[&(key, newer)]].clone(), ops[r].clone()],
                        );
                    }
                }
            }
        }
    }
    report
}

/// Adds `value`, observed by operation `op`, to a process's observations.
fn observe(st: &mut ProcessKey, order: &mut Precedence, value: u64, op: usize) {
    if let Some((prev, o)) = st.prev {
        if prev != value {
            order.add(prev, value, (o, op));
        }
    }
    st.prev = Some((value, op));
}
