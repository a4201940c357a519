//! Locks and the fenced counter.
//!
//! A holder increments in two steps, a fenced read and a fenced write of
//! what it read plus one, so the values the accepted increments read give
//! the storage's own order of them: sorted by the value written, they must
//! form one chain, each reading what the one before wrote (two increments
//! that read the same value lost one: two holders worked at once under
//! tokens the storage could not tell apart). Along that order the tokens
//! must never go down (the storage refuses a lower one) and a token's
//! increments must be contiguous (otherwise two holders worked at once).
//!
//! Real time: two holders of one lock must not overlap (a holder holds
//! from its grant's acknowledgement to its release's invocation, or to its
//! last event when it never released). Every overlapping pair is judged on
//! its own. The protocol allows an overlap only where a holder lost the
//! lock without knowing: the earlier one was evicted between its request
//! and the later grant; or the later one was granted first, evicted and
//! told of its grant only after the earlier one's, which needs it to have
//! asked before the earlier grant was known and to have been evicted
//! between its request and the earlier grant. An eviction needs a fault
//! that can cause one ([`FaultWindow::may_evict`]: a pause, kill or cut of
//! that holder, a kill of the relay, a kill or cut of a NATS server; not a
//! slow or stalled disk), injected by the end of that window and healed no
//! more than the run's failure detection before its start. Such an
//! overlap is counted as information, by the kind of fault that explains
//! it (the lock's safety then rests on fencing, which the counter
//! checks); any other is [`AnomalyKind::ConcurrentHolders`], so an
//! eviction or a lease lapse with no injected fault (a node starved of CPU
//! past the relay's timeout, say) is reported as a violation. Without the
//! run's faults (a history checked alone) every overlap counts as
//! explained; with them, an empty list of faults explains none. That the
//! earlier holder's release was acknowledged says nothing: a node learns
//! that it lost its locks only when it hears back, and a flush does not
//! report the lost release of an evicted node (`NetError::WritesLost`), so
//! a paused holder's release is acknowledged after the lock passed on, as
//! the runs show.
//!
//! Tokens: a grant invoked after another grant was acknowledged carries a
//! higher token, faults or not. A hold that began after another ended
//! carries a higher token too, unless its holder was granted first,
//! learned of it late and lost the lock before the other grant: the same
//! eviction of the later holder that explains an overlap. And the fenced
//! storage refuses a holder's token as stale only once a higher one was
//! accepted, so the lock passed on while the holder thought it held it: a
//! refusal is information when a fault could have evicted the holder since
//! its request, and [`AnomalyKind::StaleRefusal`] otherwise.
//!
//! Increments under different tokens that overlap in real time (a holder
//! paused while its increment was in flight) are counted as information:
//! the storage's order decides, and is checked.

use rustc_hash::FxHashMap;

use super::{AnomalyKind, CheckerReport, Operation};
use crate::history::{FaultWindow, Kind, LockFailure, Op};

/// One holder's time with a lock: from its grant's acknowledgement to its
/// release's invocation, or to its last operation of the lock workload
/// when it never released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Holder {
    /// When its grant was acknowledged.
    pub(super) start: u64,
    /// When it released, or its last event.
    pub(super) end: u64,
    /// Its grant, an index into the operations [`lock_ops`] picks.
    pub(super) grant: usize,
}

/// The lock workload's operations (grants, fenced increments, releases,
/// document increments), in order of invocation: the ones the holds
/// ([`holds`]) are made of, so that a grant's index means the same to
/// every checker that uses them.
pub(super) fn lock_ops(all: &[Operation]) -> Vec<&Operation> {
    all.iter()
        .filter(|o| {
            matches!(
                o.op,
                Op::Acquire { .. }
                    | Op::Increment { .. }
                    | Op::Release { .. }
                    | Op::DocIncrement { .. }
            )
        })
        .collect()
}

/// Holds by holder process, lock and token.
pub(super) type Holds = FxHashMap<(u32, u32, u64), Vec<Holder>>;

/// Every hold in `ops` ([`lock_ops`]), by holder process, lock and token
/// (several, in order of grant, where one process was granted one token
/// twice).
pub(super) fn holds(ops: &[&Operation]) -> Holds {
    let mut held: FxHashMap<(u32, u32, u64), usize> = FxHashMap::default();
    let mut holds = Holds::default();
    let mut last_seen: FxHashMap<u32, u64> = FxHashMap::default();
    for (i, op) in ops.iter().enumerate() {
        let seen = last_seen.entry(op.process).or_insert(0);
        *seen = (*seen).max(op.end());
        match op.op {
            Op::Acquire {
                lock,
                token: Some(token),
            } if op.is_ok() => {
                held.insert((op.process, lock, token), i);
            }
            Op::Release { lock, token } => {
                let key = (op.process, lock, token);
                if let Some(g) = held.remove(&key) {
                    let hold = Holder {
                        start: ops[g].end(),
                        end: op.invoke,
                        grant: g,
                    };
                    holds.entry(key).or_default().push(hold);
                }
            }
            _ => {}
        }
    }
    // A holder that never released held the lock until its last event.
    for (key @ (p, _, _), g) in held {
        let hold = Holder {
            start: ops[g].end(),
            end: last_seen[&p],
            grant: g,
        };
        holds.entry(key).or_default().push(hold);
    }
    for h in holds.values_mut() {
        h.sort_unstable_by_key(|h| h.grant);
    }
    holds
}

/// The hold of `key` (holder process, lock, token) that operation `i` of
/// [`lock_ops`] was made in: the last granted before it.
pub(super) fn hold_before(holds: &Holds, key: (u32, u32, u64), i: usize) -> Option<Holder> {
    holds
        .get(&key)?
        .iter()
        .take_while(|h| h.grant < i)
        .last()
        .copied()
}

/// How two holds of one lock stand to each other, judged as the overlaps
/// and the token order are here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pair<'f> {
    /// One after the other, in real time and in token order.
    Apart,
    /// They held at once (they overlap in real time, or the later one has
    /// the lower token: granted first, told late) and a fault that can
    /// evict one of them explains it; `None` when the run's faults are
    /// unknown.
    Explained(Option<&'f FaultWindow>),
    /// They held at once and no fault explains it.
    Unexplained,
}

/// Judges two holds of one lock as [`overlaps`] and [`token_order`] do:
/// holds that overlap in real time by [`explaining`], a later hold with a
/// lower token whose holder asked before the earlier grant was known by
/// [`granted_first`].
pub(super) fn pair<'f>(
    ops: &[&Operation],
    a: &Holder,
    b: &Holder,
    faults: Option<&'f [FaultWindow]>,
) -> Pair<'f> {
    let (first, second) = if (a.start, a.grant) <= (b.start, b.grant) {
        (a, b)
    } else {
        (b, a)
    };
    let (f, s) = (ops[first.grant], ops[second.grant]);
    let token = |o: &Operation| match o.op {
        Op::Acquire { token, .. } => token.unwrap_or(0),
        _ => unreachable!("holds are grants"),
    };
    let fault = if second.start < first.end {
        faults.map(|fs| explaining(fs, f, s))
    } else if token(s) < token(f) && s.invoke < f.end() {
        faults.map(|fs| fs.iter().find(|w| granted_first(w, f, s)))
    } else {
        return Pair::Apart;
    };
    match fault {
        Some(None) => Pair::Unexplained,
        known => Pair::Explained(known.flatten()),
    }
}

pub(super) fn check(all: &[Operation], faults: Option<&[FaultWindow]>) -> CheckerReport {
    let mut report = CheckerReport::new("locks");
    let ops = lock_ops(all);
    let hold_of = holds(&ops);
    let mut grants: FxHashMap<u32, Vec<(usize, u64)>> = FxHashMap::default();
    let mut accepted: FxHashMap<u32, Vec<usize>> = FxHashMap::default();
    let mut unknown: FxHashMap<u32, u64> = FxHashMap::default();
    let mut holders: FxHashMap<u32, Vec<Holder>> = FxHashMap::default();
    for (&(_, lock, _), hs) in &hold_of {
        holders.entry(lock).or_default().extend(hs);
    }
    for (i, op) in ops.iter().enumerate() {
        // Document increments are the document checker's.
        if matches!(op.op, Op::DocIncrement { .. }) {
            continue;
        }
        report.ops.count(op);
        match op.op {
            Op::Acquire { lock, token } if op.is_ok() => {
                let Some(token) = token else {
                    report.add(
                        AnomalyKind::Malformed,
                        lock,
                        "an acknowledged grant without a token".into(),
                        vec![(*op).clone()],
                    );
                    continue;
                };
                grants.entry(lock).or_default().push((i, token));
            }
            Op::Increment {
                counter,
                read,
                wrote,
                ..
            } if op.is_ok() => {
                // Both values place it in the storage's order: one taken
                // for 0 would fake a chain or a lost increment.
                let lacks = match (read, wrote) {
                    (None, _) => "the value read",
                    (_, None) => "the value written",
                    _ => {
                        accepted.entry(counter).or_default().push(i);
                        continue;
                    }
                };
                report.add(
                    AnomalyKind::Malformed,
                    counter,
                    format!("an accepted increment without {lacks}"),
                    vec![(*op).clone()],
                );
            }
            Op::Increment { counter, token, .. } if op.error == Some(LockFailure::Stale) => {
                let grant = hold_before(&hold_of, (op.process, counter, token), i).map(|h| h.grant);
                stale_refusal(&mut report, &ops, counter, grant, i, faults);
            }
            Op::Increment { counter, .. } if op.outcome != Kind::Fail => {
                *unknown.entry(counter).or_insert(0) += 1;
            }
            _ => {}
        }
    }

    let mut locks: Vec<u32> = grants.keys().copied().collect();
    locks.sort_unstable();
    for lock in locks {
        check_grants(&mut report, &ops, lock, &grants[&lock]);
        if let Some(h) = holders.get_mut(&lock) {
            overlaps(&mut report, &ops, lock, h, faults);
            token_order(&mut report, &ops, lock, h, faults);
        }
    }
    let mut counters: Vec<u32> = accepted.keys().copied().collect();
    counters.sort_unstable();
    for counter in counters {
        let budget = unknown.get(&counter).copied().unwrap_or(0);
        let accepted = accepted.get_mut(&counter).expect("listed");
        overlapping_increments(&mut report, &ops, counter, accepted);
        check_chain(&mut report, &ops, counter, accepted, budget);
    }
    report
}

/// Tokens unique, and a grant begun after another ended has a larger one.
fn check_grants(
    report: &mut CheckerReport,
    ops: &[&Operation],
    lock: u32,
    grants: &[(usize, u64)],
) {
    let mut by_token: FxHashMap<u64, usize> = FxHashMap::default();
    for &(g, token) in grants {
        if let Some(&other) = by_token.get(&token) {
            report.add(
                AnomalyKind::DuplicateToken,
                lock,
                format!("lock {lock} granted token {token} twice"),
                vec![ops[other].clone(), ops[g].clone()],
            );
        } else {
            by_token.insert(token, g);
        }
    }
    let mut by_end = grants.to_vec();
    by_end.sort_unstable_by_key(|&(g, _)| ops[g].end());
    let mut by_start = grants.to_vec();
    by_start.sort_unstable_by_key(|&(g, _)| ops[g].invoke);
    let mut ended = by_end.iter().peekable();
    let mut highest: Option<(usize, u64)> = None;
    for &(g, token) in &by_start {
        while let Some(&&(e, t)) = ended.peek() {
            if ops[e].end() >= ops[g].invoke {
                break;
            }
            if highest.is_none_or(|(_, h)| t > h) {
                highest = Some((e, t));
            }
            ended.next();
        }
        if let Some((e, h)) = highest {
            if h > token {
                report.add(
                    AnomalyKind::TokenRegression,
                    lock,
                    format!("lock {lock} granted token {token} after a grant of {h} had ended"),
                    vec![ops[e].clone(), ops[g].clone()],
                );
            }
        }
    }
}

/// Holders of one lock that overlap in real time: each overlapping pair is
/// a violation unless a fault explains it.
fn overlaps(
    report: &mut CheckerReport,
    ops: &[&Operation],
    lock: u32,
    holders: &mut [Holder],
    faults: Option<&[FaultWindow]>,
) {
    holders.sort_unstable();
    // Every pair, not only the one with the latest-ending earlier holder: a
    // paused holder's long interval, explained by its pause, must not hide
    // two later holders that overlap each other with no fault.
    let mut open: Vec<Holder> = Vec::new();
    for &h in holders.iter() {
        open.retain(|e| h.start < e.end);
        for earlier in &open {
            let (first, second) = (ops[earlier.grant], ops[h.grant]);
            let fault = faults.map(|faults| explaining(faults, first, second));
            let (kind, why) = match fault {
                Some(None) => (
                    AnomalyKind::ConcurrentHolders,
                    "with no fault that could evict either (nor a server's) meanwhile".to_string(),
                ),
                Some(Some(f)) => {
                    *report.explained.entry(f.kind.clone()).or_insert(0) += 1;
                    (
                        AnomalyKind::OverlappingHolders,
                        format!("after a {} fault", f.kind),
                    )
                }
                None => (
                    AnomalyKind::OverlappingHolders,
                    "(the run's faults are unknown)".to_string(),
                ),
            };
            report.add(
                kind,
                lock,
                format!(
                    "processes {} and {} held lock {lock} at once, {why}",
                    first.process, second.process
                ),
                vec![first.clone(), second.clone()],
            );
        }
        open.push(h);
    }
}

/// A fault that lets `second`'s hold overlap `first`'s, which began
/// earlier. Either `first` lost the lock between its request and the
/// later grant, or `second` was granted the lock before `first` was, lost
/// it and learned of its grant only after: granted first it can have been
/// only if it asked before `first`'s grant was known, and it must have
/// lost the lock before `first`'s grant. A fault of `second` after that
/// cost it its own lock, never `first`'s.
fn explaining<'f>(
    faults: &'f [FaultWindow],
    first: &Operation,
    second: &Operation,
) -> Option<&'f FaultWindow> {
    faults.iter().find(|f| {
        f.may_evict(first.process, first.invoke, second.end()) || granted_first(f, first, second)
    })
}

/// Whether `f` lets `second` have been granted the lock before `first`
/// was (though it learned of it after), and lose it before `first`'s
/// grant: `second` asked before `first`'s grant was known and `f` may have
/// evicted it between its request and that grant.
fn granted_first(f: &FaultWindow, first: &Operation, second: &Operation) -> bool {
    second.invoke < first.end() && f.may_evict(second.process, second.invoke, first.end())
}

/// Holds one after the other in real time carry increasing tokens. A
/// lower token on the later hold means its grant came first: its holder
/// learned of it late and lost the lock before the earlier hold's grant,
/// which only an eviction of it explains (the two held at once, as far as
/// the protocol goes). Grants that began after another had ended are
/// judged apart ([`check_grants`]), whatever befell them. One finding per
/// later hold: a violation if a hold before it is unexplained.
fn token_order(
    report: &mut CheckerReport,
    ops: &[&Operation],
    lock: u32,
    holders: &[Holder],
    faults: Option<&[FaultWindow]>,
) {
    let token = |h: &Holder| match ops[h.grant].op {
        Op::Acquire { token, .. } => token.unwrap_or(0),
        _ => unreachable!("holders are grants"),
    };
    for later in holders {
        let second = ops[later.grant];
        let mut explained: Option<(&Holder, Option<&FaultWindow>)> = None;
        let mut unexplained = None;
        for earlier in holders.iter().take_while(|e| e.start < later.start) {
            let first = ops[earlier.grant];
            if earlier.end >= later.start
                || token(earlier) <= token(later)
                || second.invoke >= first.end()
            {
                continue;
            }
            match faults.map(|fs| fs.iter().find(|f| granted_first(f, first, second))) {
                Some(None) => {
                    unexplained = Some(earlier);
                    break;
                }
                fault => explained = explained.or(Some((earlier, fault.flatten()))),
            }
        }
        let (kind, earlier, why) = match (unexplained, explained) {
            (Some(earlier), _) => (
                AnomalyKind::TokenRegression,
                earlier,
                "with no fault that could evict it before that grant".to_string(),
            ),
            (None, Some((earlier, Some(f)))) => {
                *report.explained.entry(f.kind.clone()).or_insert(0) += 1;
                (
                    AnomalyKind::OverlappingHolders,
                    earlier,
                    format!("granted first, after a {} fault", f.kind),
                )
            }
            (None, Some((earlier, None))) => (
                AnomalyKind::OverlappingHolders,
                earlier,
                "(the run's faults are unknown)".to_string(),
            ),
            (None, None) => continue,
        };
        let first = ops[earlier.grant];
        report.add(
            kind,
            lock,
            format!(
                "process {} held lock {lock} with token {} after process {}'s hold with {} ended, {why}",
                second.process,
                token(later),
                first.process,
                token(earlier)
            ),
            vec![first.clone(), second.clone()],
        );
    }
}

/// An increment the storage refused as stale: a higher token was accepted
/// before, so the lock passed on while its holder thought it held it,
/// which only an eviction of the holder since its request explains.
fn stale_refusal(
    report: &mut CheckerReport,
    ops: &[&Operation],
    counter: u32,
    grant: Option<usize>,
    refused: usize,
    faults: Option<&[FaultWindow]>,
) {
    let op = ops[refused];
    let Some(g) = grant else {
        report.add(
            AnomalyKind::Malformed,
            counter,
            format!(
                "process {} incremented under a token it holds no grant of",
                op.process
            ),
            vec![op.clone()],
        );
        return;
    };
    let since = ops[g].invoke;
    let explaining = faults.map(|fs| fs.iter().find(|f| f.may_evict(op.process, since, op.end())));
    let (kind, why) = match explaining {
        Some(None) => (
            AnomalyKind::StaleRefusal,
            "with no fault that could evict it since its request".to_string(),
        ),
        Some(Some(f)) => (
            AnomalyKind::FencedRefusal,
            format!("after a {} fault", f.kind),
        ),
        None => (
            AnomalyKind::FencedRefusal,
            "(the run's faults are unknown)".to_string(),
        ),
    };
    report.add(
        kind,
        counter,
        format!(
            "the storage refused process {}'s token for counter {counter} as stale, {why}",
            op.process
        ),
        vec![ops[g].clone(), op.clone()],
    );
}

/// Accepted increments under different tokens that overlap in real time.
fn overlapping_increments(
    report: &mut CheckerReport,
    ops: &[&Operation],
    counter: u32,
    accepted: &mut [usize],
) {
    let token = |i: usize| match ops[i].op {
        Op::Increment { token, .. } => token,
        _ => unreachable!("only increments are accepted"),
    };
    accepted.sort_unstable_by_key(|&i| ops[i].invoke);
    let mut latest: Option<(u64, usize)> = None;
    for &i in accepted.iter() {
        if let Some((until, other)) = latest {
            if ops[i].invoke < until && token(other) != token(i) {
                report.add(
                    AnomalyKind::OverlappingIncrements,
                    counter,
                    format!(
                        "counter {counter}: increments under tokens {} and {} overlap in real time",
                        token(other),
                        token(i)
                    ),
                    vec![ops[other].clone(), ops[i].clone()],
                );
            }
        }
        if latest.is_none_or(|(until, _)| ops[i].end() > until) {
            latest = Some((ops[i].end(), i));
        }
    }
}

/// The accepted increments of one counter, in the storage's order.
fn check_chain(
    report: &mut CheckerReport,
    ops: &[&Operation],
    counter: u32,
    accepted: &mut [usize],
    unknown: u64,
) {
    let fields = |i: usize| match ops[i].op {
        Op::Increment {
            token,
            read: Some(read),
            wrote: Some(wrote),
            ..
        } => (token, read, wrote),
        _ => unreachable!("only increments with both values are accepted"),
    };
    accepted.sort_unstable_by_key(|&i| (fields(i).2, ops[i].end()));
    let mut prev: Option<usize> = None;
    let mut gaps = 0;
    let mut unexplained = false;
    let mut highest: Option<(u64, usize)> = None;
    let mut latest_invoke: Option<(u64, usize)> = None;
    let mut finished_runs: FxHashMap<u64, usize> = FxHashMap::default();
    for &i in accepted.iter() {
        let (token, read, wrote) = fields(i);
        let op = ops[i];
        if read.checked_add(1) != Some(wrote) {
            report.add(
                AnomalyKind::BadIncrement,
                counter,
                format!("counter {counter}: read {read}, wrote {wrote}"),
                vec![op.clone()],
            );
        }
        let expected = prev.map_or(0, |p| fields(p).2);
        if read < expected {
            report.add(
                AnomalyKind::LostIncrement,
                counter,
                format!("counter {counter}: read {read} after an increment wrote {expected}"),
                prev.into_iter()
                    .chain([i])
                    .map(|o| ops[o].clone())
                    .collect(),
            );
        } else if read > expected {
            gaps = (read - expected).saturating_add(gaps);
            if gaps > unknown && !unexplained {
                unexplained = true;
                report.add(
                    AnomalyKind::UnexplainedIncrement,
                    counter,
                    format!(
                        "counter {counter}: read {read} where {expected} was last written, \
                         with {unknown} increment(s) of unknown outcome to explain {gaps}"
                    ),
                    prev.into_iter()
                        .chain([i])
                        .map(|o| ops[o].clone())
                        .collect(),
                );
            }
        }
        if let Some((h, o)) = highest {
            if token < h {
                report.add(
                    AnomalyKind::StaleIncrementAccepted,
                    counter,
                    format!("counter {counter}: token {token} accepted after token {h}"),
                    vec![ops[o].clone(), op.clone()],
                );
            }
        }
        if highest.is_none_or(|(h, _)| token > h) {
            highest = Some((token, i));
        }
        if let Some(p) = prev {
            let prev_token = fields(p).0;
            if prev_token != token {
                finished_runs.insert(prev_token, p);
                if let Some(&earlier) = finished_runs.get(&token) {
                    report.add(
                        AnomalyKind::InterleavedHolders,
                        counter,
                        format!(
                            "counter {counter}: token {token} incremented before and after token {prev_token}"
                        ),
                        vec![ops[earlier].clone(), ops[p].clone(), op.clone()],
                    );
                }
            }
        }
        if let Some((t, o)) = latest_invoke {
            if op.complete.is_some_and(|c| c < t) {
                report.add(
                    AnomalyKind::CounterOrder,
                    counter,
                    format!(
                        "counter {counter}: an increment completed before one it follows in the storage was invoked"
                    ),
                    vec![ops[o].clone(), op.clone()],
                );
            }
        }
        if latest_invoke.is_none_or(|(t, _)| op.invoke > t) {
            latest_invoke = Some((op.invoke, i));
        }
        prev = Some(i);
    }
}
