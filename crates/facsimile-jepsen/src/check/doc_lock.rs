//! The counters in the locked maps.
//!
//! A holder of lock `L` reads the counter `n` of the locked map `k[L]`
//! (absent: 0), writes one more and flushes ([`Op::DocIncrement`]). SPEC
//! §2.6 promises, while node A holds the lock on O, that no write made
//! elsewhere overwrites a write A made while holding it, and that A sees
//! every write to O made before its lock was granted. Nothing but these
//! increments writes `n`, so each value of it is the end of a chain of
//! increments, each reading what the one before wrote.
//!
//! - **Lost update.** Two acknowledged increments that read the same
//!   value both wrote the next: one overwrote the other. That is allowed
//!   only where one of the two holders had lost the lock without knowing,
//!   which is what explains two holds at once in the lock checker: the
//!   pair of holds is judged by its rule ([`lock::pair`]), as an overlap
//!   in real time or a later hold with a lower token, explained by a fault
//!   that can evict one holder. Such a pair is information
//!   ([`AnomalyKind::ExplainedLostUpdate`], counted by the fault's kind);
//!   any other, holds one after the other included, is
//!   [`AnomalyKind::LostUpdate`].
//! - **Visibility.** An acknowledged increment whose flush completed
//!   before another's grant was acknowledged was ordered before that
//!   grant (the relay acknowledges what it ordered and stored, a stream
//!   what it stored, and a holder's write comes before its release, which
//!   comes before the next grant), so the later holder must read at least
//!   what it wrote: [`AnomalyKind::StaleRead`] otherwise. The bound is the
//!   highest value such increments wrote, not their number: the two agree
//!   when no two of them read the same value, and where an explained lost
//!   update made two acknowledged increments write one value, their
//!   number is one more than the counter could show. A write whose holder
//!   had lost the lock may be ordered after the grant though it was
//!   acknowledged before the grant was: where the two holds overlapped and
//!   a fault explains it, as above, the stale read is information
//!   ([`AnomalyKind::ExplainedStaleRead`]).
//! - **No phantom.** A read, whatever its increment's outcome, is at most
//!   the number of other increments invoked before it ended that may have
//!   taken effect (not `fail`), and an integer
//!   ([`AnomalyKind::PhantomRead`]).
//! - **Final value.** Every final read of a lock's counter agrees
//!   ([`AnomalyKind::Divergence`]), is at least the number of distinct
//!   values acknowledged increments wrote (each such value is in the
//!   chain the final value ends; the number of acknowledged increments
//!   when there was no lost update; [`AnomalyKind::FinalTooLow`]) and at
//!   most the number of increments acknowledged or of unknown outcome
//!   (each value of the chain was written by one of them;
//!   [`AnomalyKind::FinalTooHigh`]). A final marker that names the locks
//!   requires every live process to read each lock's counter
//!   ([`AnomalyKind::MissingFinalRead`]); markers from before document
//!   increments name none.
//!
//! Not vacuous: when the final markers name the locks and a grant was
//! acknowledged but no document increment was, or when there are
//! increments but no final read of a counter, the checker says so
//! ([`CheckerReport::unchecked`]) and the history is not valid.

use rustc_hash::{FxHashMap, FxHashSet};

use super::lock::{self, Holder, Pair};
use super::{AnomalyKind, CheckerReport, Finals, Operation};
use crate::history::{FaultWindow, Kind, Op};

/// An acknowledged increment: its operation, its holder's hold, what it
/// read.
#[derive(Debug, Clone, Copy)]
struct Acked {
    op: usize,
    hold: Holder,
    read: u64,
}

impl Acked {
    fn wrote(&self) -> u64 {
        self.read.saturating_add(1)
    }
}

/// One lock's counter.
#[derive(Default)]
struct Counter {
    acked: Vec<Acked>,
    /// The increments that may have taken effect (`ok` or `info`), by
    /// invocation time.
    attempts: Vec<(u64, usize)>,
    /// Every increment that read a value, whatever its outcome.
    reads: Vec<(usize, u64)>,
    /// The acknowledged increments, well-formed or not.
    ok: usize,
    /// The increments of unknown outcome.
    unknown: usize,
}

pub(super) fn check(all: &[Operation], faults: Option<&[FaultWindow]>) -> CheckerReport {
    let mut report = CheckerReport::new("doc-locks");
    let ops = lock::lock_ops(all);
    let hold_of = lock::holds(&ops);
    let finals = Finals::new(all);
    let mut counters: FxHashMap<u32, Counter> = FxHashMap::default();
    let mut granted = false;
    let mut increments = 0;
    for (i, op) in ops.iter().enumerate() {
        let Op::DocIncrement {
            lock,
            token,
            read,
            ref foreign,
            ..
        } = op.op
        else {
            granted |= matches!(op.op, Op::Acquire { .. }) && op.is_ok();
            continue;
        };
        report.ops.count(op);
        increments += 1;
        let c = counters.entry(lock).or_default();
        if let Some(v) = foreign {
            report.add(
                AnomalyKind::PhantomRead,
                lock,
                format!(
                    "process {} read {v} from lock {lock}'s counter, no integer: no increment wrote it",
                    op.process
                ),
                vec![(*op).clone()],
            );
        }
        if op.outcome != Kind::Fail {
            c.attempts.push((op.invoke, i));
        }
        match op.outcome {
            Kind::Ok => c.ok += 1,
            Kind::Info => c.unknown += 1,
            _ => {}
        }
        if let Some(r) = read {
            c.reads.push((i, r));
        }
        if !op.is_ok() {
            continue;
        }
        let hold = lock::hold_before(&hold_of, (op.process, lock, token), i);
        let (hold, read) = match (hold, read) {
            (Some(hold), Some(read)) => (hold, read),
            (None, _) => {
                report.add(
                    AnomalyKind::Malformed,
                    lock,
                    format!(
                        "process {} incremented lock {lock}'s counter under token {token}, which it was not granted",
                        op.process
                    ),
                    vec![(*op).clone()],
                );
                continue;
            }
            (_, None) => {
                report.add(
                    AnomalyKind::Malformed,
                    lock,
                    format!(
                        "an acknowledged increment of lock {lock}'s counter without the value read"
                    ),
                    vec![(*op).clone()],
                );
                continue;
            }
        };
        c.acked.push(Acked { op: i, hold, read });
    }

    // Final reads: each process's last of each lock's counter.
    let mut covered: FxHashSet<(u32, u32)> = FxHashSet::default();
    let mut final_read: FxHashMap<(u32, u32), &Operation> = FxHashMap::default();
    for op in all {
        let Op::DocRead {
            lock,
            value: _,
            missing,
            ref foreign,
        } = op.op
        else {
            continue;
        };
        report.ops.count(op);
        if !op.is_ok() {
            continue;
        }
        let is_final = finals.is_final(op);
        if is_final {
            covered.insert((op.process, lock));
        }
        if !finals.judge_missing(&mut report, op, lock, missing) {
            continue;
        }
        if let Some(v) = foreign {
            report.add(
                AnomalyKind::PhantomRead,
                lock,
                format!(
                    "process {} read {v} from lock {lock}'s counter, no integer: no increment wrote it",
                    op.process
                ),
                vec![op.clone()],
            );
            continue;
        }
        if is_final {
            final_read.insert((op.process, lock), op);
        }
    }
    finals.judge_coverage(&mut report, &finals.locks, &covered);

    let acked: usize = counters.values().map(|c| c.acked.len()).sum();
    if !finals.locks.is_empty() && granted && acked == 0 {
        report
            .unchecked
            .push("no acknowledged increment of a locked map's counter");
    }
    if increments > 0 && final_read.is_empty() {
        report
            .unchecked
            .push("no final read of a locked map's counter");
    }

    let mut by_lock: FxHashMap<u32, Vec<&Operation>> = FxHashMap::default();
    for (&(_, lock), &op) in &final_read {
        by_lock.entry(lock).or_default().push(op);
    }
    let mut locks: Vec<u32> = counters.keys().chain(by_lock.keys()).copied().collect();
    locks.sort_unstable();
    locks.dedup();
    let none = Counter::default();
    for lock in locks {
        let c = counters.get(&lock).unwrap_or(&none);
        lost_updates(&mut report, &ops, lock, &c.acked, faults);
        stale_reads(&mut report, &ops, lock, &c.acked, faults);
        phantoms(&mut report, &ops, lock, c);
        if let Some(reads) = by_lock.get_mut(&lock) {
            reads.sort_unstable_by_key(|o| o.invoke_index);
            report.final_reads += reads.len();
            final_value(&mut report, &ops, lock, c, reads);
        }
    }
    report
}

/// The grant and the increment of an acknowledged increment, as examples.
fn involved(ops: &[&Operation], a: &Acked) -> [Operation; 2] {
    [ops[a.hold.grant].clone(), ops[a.op].clone()]
}

fn token(op: &Operation) -> u64 {
    match op.op {
        Op::DocIncrement { token, .. } => token,
        _ => unreachable!("only document increments are acknowledged"),
    }
}

/// Acknowledged increments that read the same value.
fn lost_updates(
    report: &mut CheckerReport,
    ops: &[&Operation],
    lock: u32,
    acked: &[Acked],
    faults: Option<&[FaultWindow]>,
) {
    let mut by_read = acked.to_vec();
    by_read.sort_unstable_by_key(|a| (a.read, a.op));
    for same in by_read.chunk_by(|a, b| a.read == b.read) {
        for (k, a) in same.iter().enumerate() {
            for b in &same[k + 1..] {
                let judged = if a.hold == b.hold {
                    Pair::Apart
                } else {
                    lock::pair(ops, &a.hold, &b.hold, faults)
                };
                let (kind, why) = match judged {
                    Pair::Explained(Some(f)) => {
                        *report.explained.entry(f.kind.clone()).or_insert(0) += 1;
                        (
                            AnomalyKind::ExplainedLostUpdate,
                            format!("their holds overlapped after a {} fault", f.kind),
                        )
                    }
                    Pair::Explained(None) => (
                        AnomalyKind::ExplainedLostUpdate,
                        "their holds overlapped (the run's faults are unknown)".to_string(),
                    ),
                    Pair::Unexplained => (
                        AnomalyKind::LostUpdate,
                        "their holds overlapped with no fault that could evict either (nor a server's) meanwhile"
                            .to_string(),
                    ),
                    Pair::Apart => (
                        AnomalyKind::LostUpdate,
                        "one hold after the other".to_string(),
                    ),
                };
                let (x, y) = (ops[a.op], ops[b.op]);
                report.add(
                    kind,
                    lock,
                    format!(
                        "processes {} (token {}) and {} (token {}) both read {} from lock {lock}'s counter and wrote {}, acknowledged: {why}",
                        x.process,
                        token(x),
                        y.process,
                        token(y),
                        a.read,
                        a.wrote()
                    ),
                    involved(ops, a).into_iter().chain(involved(ops, b)).collect(),
                );
            }
        }
    }
}

/// Acknowledged increments that read less than an acknowledged increment
/// finished before their grant wrote.
fn stale_reads(
    report: &mut CheckerReport,
    ops: &[&Operation],
    lock: u32,
    acked: &[Acked],
    faults: Option<&[FaultWindow]>,
) {
    let mut done = acked.to_vec();
    done.sort_unstable_by_key(|a| (ops[a.op].end(), a.op));
    for y in acked {
        // The highest write it must have seen, and the highest it may have
        // missed because a fault explains the two holds at once.
        let mut missed: Option<(&Acked, Pair<'_>)> = None;
        let mut excused: Option<(&Acked, Pair<'_>)> = None;
        for x in done.iter().take_while(|x| ops[x.op].end() < y.hold.start) {
            if x.op == y.op || x.wrote() <= y.read {
                continue;
            }
            let judged = lock::pair(ops, &x.hold, &y.hold, faults);
            let slot = match judged {
                Pair::Explained(_) => &mut excused,
                _ => &mut missed,
            };
            if slot.is_none_or(|(s, _)| x.wrote() > s.wrote()) {
                *slot = Some((x, judged));
            }
        }
        let (kind, (x, judged)) = match (missed, excused) {
            (Some(m), _) => (AnomalyKind::StaleRead, m),
            (None, Some(e)) => (AnomalyKind::ExplainedStaleRead, e),
            (None, None) => continue,
        };
        let why = match judged {
            Pair::Apart => "one hold after the other".to_string(),
            Pair::Unexplained => {
                "their holds overlapped with no fault that could evict either".to_string()
            }
            Pair::Explained(Some(f)) => format!("their holds overlapped after a {} fault", f.kind),
            Pair::Explained(None) => {
                "their holds overlapped (the run's faults are unknown)".to_string()
            }
        };
        let (w, r) = (ops[x.op], ops[y.op]);
        report.add(
            kind,
            lock,
            format!(
                "process {} read {} from lock {lock}'s counter under token {}, though process {}'s increment to {} under token {} was acknowledged before that grant: {why}",
                r.process,
                y.read,
                token(r),
                w.process,
                x.wrote(),
                token(w)
            ),
            involved(ops, x).into_iter().chain(involved(ops, y)).collect(),
        );
    }
}

/// Reads above what the increments invoked before could have written.
fn phantoms(report: &mut CheckerReport, ops: &[&Operation], lock: u32, c: &Counter) {
    let mut invoked: Vec<u64> = c.attempts.iter().map(|&(t, _)| t).collect();
    invoked.sort_unstable();
    let attempted: FxHashSet<usize> = c.attempts.iter().map(|&(_, i)| i).collect();
    for &(i, read) in &c.reads {
        let op = ops[i];
        let before = invoked.partition_point(|&t| t < op.end());
        // Not itself: its own write comes after its read.
        let own = usize::from(attempted.contains(&i) && op.invoke < op.end());
        let could = (before - own) as u64;
        if read > could {
            report.add(
                AnomalyKind::PhantomRead,
                lock,
                format!(
                    "process {} read {read} from lock {lock}'s counter, above the {could} other increments \
                     invoked before it that may have taken effect",
                    op.process
                ),
                vec![op.clone()],
            );
        }
    }
}

/// The final reads of one lock's counter: agreed, and between what the
/// acknowledged increments wrote and what every increment that may have
/// taken effect could have.
fn final_value(
    report: &mut CheckerReport,
    ops: &[&Operation],
    lock: u32,
    c: &Counter,
    reads: &[&Operation],
) {
    let value = |o: &Operation| match o.op {
        Op::DocRead { value, .. } => value.unwrap_or(0),
        _ => unreachable!("final reads are reads"),
    };
    let mut distinct: Vec<&Operation> = Vec::new();
    for &r in reads {
        if !distinct.iter().any(|d| value(d) == value(r)) {
            distinct.push(r);
        }
    }
    if distinct.len() > 1 {
        report.add(
            AnomalyKind::Divergence,
            lock,
            format!(
                "final reads of lock {lock}'s counter disagree: {:?}",
                distinct.iter().map(|r| value(r)).collect::<Vec<_>>()
            ),
            distinct.iter().map(|&r| r.clone()).collect(),
        );
    }
    let mut written: Vec<u64> = c.acked.iter().map(Acked::wrote).collect();
    written.sort_unstable();
    written.dedup();
    let low = written.len() as u64;
    let high = (c.ok + c.unknown) as u64;
    let highest = c.acked.iter().max_by_key(|a| (a.wrote(), a.op));
    for r in distinct {
        let v = value(r);
        if v < low {
            report.add(
                AnomalyKind::FinalTooLow,
                lock,
                format!(
                    "lock {lock}'s counter ends at {v}, below the {low} values acknowledged increments wrote"
                ),
                highest
                    .into_iter()
                    .flat_map(|a| involved(ops, a))
                    .chain([r.clone()])
                    .collect(),
            );
        }
        if v > high {
            report.add(
                AnomalyKind::FinalTooHigh,
                lock,
                format!(
                    "lock {lock}'s counter ends at {v}, above the {high} increments acknowledged \
                     ({}) or of unknown outcome ({})",
                    c.ok, c.unknown
                ),
                vec![r.clone()],
            );
        }
    }
}
