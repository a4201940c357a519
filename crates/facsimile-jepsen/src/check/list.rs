//! Lists under appends.
//!
//! Appends never reorder existing elements, so a list's elements have one
//! order that every read shows a part of: the adjacent pairs of all reads
//! must form a relation without cycles (a flip of two elements is the
//! shortest cycle). An element a process has seen stays for it, except its
//! own appends that the relay never acknowledged, which a reconnection may
//! drop; a durable append is in every final read. Durable: acknowledged, or
//! seen by another process, since the relay forwards a message only once
//! it is on its disk (and a stream delivers only what it stored).

use rustc_hash::{FxHashMap, FxHashSet};

use super::graph::Precedence;
use super::{AnomalyKind, CheckerReport, Finals, Operation};
use crate::history::{Kind, Op};

#[derive(Default)]
struct ProcessKey {
    prev_read: Option<usize>,
    /// Its appends acknowledged since its last read.
    acked_since_read: Vec<usize>,
}

fn read_elements(op: &Operation) -> &[u64] {
    match &op.op {
        Op::ReadList {
            elements: Some(e), ..
        } => e,
        _ => &[],
    }
}

pub(super) fn check(all: &[Operation]) -> CheckerReport {
    let mut report = CheckerReport::new("lists");
    let ops: Vec<&Operation> = all
        .iter()
        .filter(|o| matches!(o.op, Op::Append { .. } | Op::ReadList { .. }))
        .collect();
    let mut appends: FxHashMap<(u32, u64), usize> = FxHashMap::default();
    // Appends of unknown outcome no other process has seen yet.
    let mut unconfirmed: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
    let mut durable_by_key: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
    // Few appends fail: each read is checked against its key's, whole.
    let mut failed_by_key: FxHashMap<u32, Vec<(u64, usize)>> = FxHashMap::default();
    for (i, op) in ops.iter().enumerate() {
        report.ops.count(op);
        if let Op::Append { key, element } = op.op {
            appends.insert((key, element), i);
            match op.outcome {
                Kind::Ok => durable_by_key.entry(key).or_default().push(i),
                Kind::Fail => failed_by_key.entry(key).or_default().push((element, i)),
                _ => unconfirmed.entry(key).or_default().push(i),
            }
        }
    }

    let finals = Finals::new(all);
    let mut state: FxHashMap<(u32, u32), ProcessKey> = FxHashMap::default();
    let mut order: FxHashMap<u32, Precedence> = FxHashMap::default();
    // Each process's last final read of each key, and the processes and
    // keys that made one (found or not).
    let mut final_read: FxHashMap<(u32, u32), usize> = FxHashMap::default();
    let mut covered: FxHashSet<(u32, u32)> = FxHashSet::default();
    let mut cache: FxHashMap<u32, (Option<usize>, FxHashSet<u64>)> = FxHashMap::default();
    for (i, op) in ops.iter().enumerate() {
        let p = op.process;
        match &op.op {
            Op::Append { key, .. } if op.is_ok() => {
                state.entry((p, *key)).or_default().acked_since_read.push(i);
            }
            Op::ReadList {
                key,
                elements,
                missing,
                foreign,
            } if op.is_ok() => {
                let key = *key;
                let is_final = finals.is_final(op);
                if is_final {
                    covered.insert((p, key));
                }
                if !finals.judge_missing(&mut report, op, key, *missing) {
                    continue;
                }
                if !foreign.is_empty() {
                    report.add(
                        AnomalyKind::PhantomRead,
                        key,
                        format!(
                            "read of list {key} holds {}, no integer: never appended to it",
                            foreign.join(", ")
                        ),
                        vec![(*op).clone()],
                    );
                }
                let Some(els) = elements else {
                    report.add(
                        AnomalyKind::Malformed,
                        key,
                        "an acknowledged list read without elements".into(),
                        vec![(*op).clone()],
                    );
                    continue;
                };
                if is_final {
                    final_read.insert((p, key), i);
                }
                // Reads mostly extend the key's previous read: its checked
                // elements, their set and their order are reused, and only
                // the new tail is looked at.
                let (last, set) = cache.entry(key).or_default();
                let from = match *last {
                    Some(j) if els.starts_with(read_elements(ops[j])) => {
                        read_elements(ops[j]).len()
                    }
                    _ => {
                        set.clear();
                        0
                    }
                };
                let mut dups = Vec::new();
                let mut fresh = Vec::with_capacity(els.len() - from);
                for &e in &els[from..] {
                    if set.insert(e) {
                        fresh.push(e);
                    } else {
                        dups.push(e);
                    }
                }
                // A read with duplicates is no prefix to build on.
                *last = dups.is_empty().then_some(i);
                if !dups.is_empty() {
                    report.add(
                        AnomalyKind::DuplicateElement,
                        key,
                        format!("read of list {key} holds {dups:?} more than once"),
                        vec![(*op).clone()],
                    );
                }
                // An element of the prefix was no phantom when it was fresh.
                let phantoms: Vec<u64> = fresh
                    .iter()
                    .copied()
                    .filter(|&e| !appends.contains_key(&(key, e)))
                    .collect();
                // Whether a failed append is visible depends on the reader,
                // so the prefix another process read is checked too.
                let failed: Vec<usize> = failed_by_key
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .filter(|&&(e, a)| {
                        // The writer's own reads before it learned of the
                        // loss (a settled one) may show it: its replica had it.
                        set.contains(&e) && !(ops[a].process == p && op.invoke < ops[a].end())
                    })
                    .map(|&(_, a)| a)
                    .collect();
                if !phantoms.is_empty() {
                    report.add(
                        AnomalyKind::PhantomRead,
                        key,
                        format!("read of list {key} holds {phantoms:?}, never appended to it"),
                        vec![(*op).clone()],
                    );
                }
                if let Some(&a) = failed.first() {
                    report.add(
                        AnomalyKind::FailedWriteVisible,
                        key,
                        format!(
                            "read of list {key} holds {} element(s) whose append failed",
                            failed.len()
                        ),
                        vec![ops[a].clone(), (*op).clone()],
                    );
                }
                let precedence = order.entry(key).or_default();
                let mut before = from.checked_sub(1).map(|k| els[k]);
                for &b in &fresh {
                    if let Some(a) = before {
                        precedence.add(a, b, (i, i));
                    }
                    before = Some(b);
                }

                if let Some(pending) = unconfirmed.get_mut(&key) {
                    pending.retain(|&a| {
                        let Op::Append { element, .. } = ops[a].op else {
                            return true;
                        };
                        let seen = ops[a].process != p && set.contains(&element);
                        if seen {
                            durable_by_key.entry(key).or_default().push(a);
                        }
                        !seen
                    });
                }

                let st = state.entry((p, key)).or_default();
                for &a in &st.acked_since_read {
                    let Op::Append { element, .. } = ops[a].op else {
                        continue;
                    };
                    if !set.contains(&element) {
                        report.add(
                            AnomalyKind::ReadYourWrites,
                            key,
                            format!(
                                "process {p}'s read of list {key} misses its acknowledged append {element}"
                            ),
                            vec![ops[a].clone(), (*op).clone()],
                        );
                    }
                }
                st.acked_since_read.clear();
                if let Some(prev) = st
                    .prev_read
                    .filter(|&j| !els.starts_with(read_elements(ops[j])))
                {
                    let vanished: Vec<u64> = read_elements(ops[prev])
                        .iter()
                        .copied()
                        .filter(|e| !set.contains(e))
                        .filter(|&e| {
                            // Its own unacknowledged appends may go; unknown
                            // and failed ones were reported above.
                            appends.get(&(key, e)).is_some_and(|&a| {
                                let append = ops[a];
                                append.outcome != Kind::Fail
                                    && (append.process != p || append.is_ok())
                            })
                        })
                        .collect();
                    if !vanished.is_empty() {
                        report.add(
                            AnomalyKind::NonMonotonicRead,
                            key,
                            format!(
                                "process {p}'s read of list {key} lost {vanished:?}, which it had seen"
                            ),
                            vec![ops[prev].clone(), (*op).clone()],
                        );
                    }
                }
                st.prev_read = Some(i);
            }
            _ => {}
        }
    }

    let mut keys: Vec<u32> = order.keys().copied().collect();
    keys.sort_unstable();
    finals.judge_coverage(&mut report, &finals.keys, &covered);
    let mut finals: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
    for (&(_, key), &r) in &final_read {
        finals.entry(key).or_default().push(r);
    }
    for key in keys {
        for cycle in order[&key].cycles() {
            let mut involved: Vec<usize> = cycle
                .iter()
                .enumerate()
                .map(|(k, &a)| order[&key].shown_by(a, cycle[(k + 1) % cycle.len()]).0)
                .collect();
            involved.sort_unstable();
            involved.dedup();
            report.add(
                AnomalyKind::OrderFlip,
                key,
                format!("reads of list {key} order {cycle:?} in a circle"),
                involved.into_iter().map(|o| ops[o].clone()).collect(),
            );
        }
        let Some(reads) = finals.get_mut(&key) else {
            continue;
        };
        reads.sort_unstable();
        report.final_reads += reads.len();
        let mut distinct: Vec<usize> = Vec::new();
        for &r in reads.iter() {
            if !distinct
                .iter()
                .any(|&d| read_elements(ops[d]) == read_elements(ops[r]))
            {
                distinct.push(r);
            }
        }
        if distinct.len() > 1 {
            report.add(
                AnomalyKind::Divergence,
                key,
                format!(
                    "final reads of list {key} disagree ({} different lists)",
                    distinct.len()
                ),
                distinct.iter().map(|&r| ops[r].clone()).collect(),
            );
        }
        let sets: Vec<(usize, FxHashSet<u64>)> = distinct
            .iter()
            .map(|&r| (r, read_elements(ops[r]).iter().copied().collect()))
            .collect();
        for &a in durable_by_key.get(&key).map_or(&[][..], |v| v) {
            let Op::Append { element, .. } = ops[a].op else {
                continue;
            };
            if let Some((r, _)) = sets.iter().find(|(_, s)| !s.contains(&element)) {
                report.add(
                    AnomalyKind::LostWrite,
                    key,
                    format!(
                        "durable append {element} (acknowledged, or seen by another process) is missing from a final read of list {key}"
                    ),
                    vec![ops[a].clone(), ops[*r].clone()],
                );
            }
        }
    }
    report
}
