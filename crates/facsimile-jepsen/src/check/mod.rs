//! Checkers of recorded histories: what facsimile promises, checked on what
//! the clients saw.
//!
//! A history's events are first paired into [`Operation`]s (an invocation
//! and its completion; an invocation a crash left without completion counts
//! as [`Kind::Info`]). Each workload then has its checker:
//!
//! - [`check_registers`]: LWW registers. Not linearizable (reads are local,
//!   concurrent writes resolve by stamp), so what is checked is what LWW by
//!   stamp promises: no phantom value, read-your-writes, reads that never go
//!   back in stamp order, and converged final reads that lose no durable
//!   write (acknowledged, or seen by another process).
//! - [`check_lists`]: appends to lists. No duplicate, no phantom, no failed
//!   append visible, read-your-writes, monotonic reads, one order for every
//!   pair of elements, converged final reads holding every durable append
//!   (acknowledged, or seen by another process).
//! - [`check_locks`]: grants and fenced increments. Unique tokens,
//!   increasing from one hold to the next in real time; the accepted
//!   increments (each a fenced read, then a write of
//!   one more) form one chain whose tokens never go backwards and whose
//!   holders never interleave; two holders never overlap in real time,
//!   nor does the storage refuse a holder's token as stale, unless a fault
//!   that can evict one of them explains it.
//!   Explained overlaps (by the fault's kind), and increments under
//!   different tokens that overlap in real time, are counted apart, as
//!   information.
//! - [`check_doc_locks`]: the counter a holder increments in the locked
//!   map itself (a read, then a write of one more, flushed). No two
//!   acknowledged increments read the same value (a lost update) unless
//!   their holds overlapped and a fault that can evict a holder explains
//!   it, as for the locks; each reads at least what every acknowledged
//!   increment finished before its grant wrote, unless their holds
//!   overlapped so; no read above what the increments made could have
//!   written; the final value, agreed by every final read, at least the
//!   number of values acknowledged increments wrote and at most the
//!   number of increments that may have taken effect.
//! - [`check_snapshots`]: the replicas' final snapshots are byte-identical.
//!
//! [`check_all`] runs the four history checkers, [`check_run`] does so
//! knowing the run's faults ([`FaultWindow`]), and [`check_files`] reads
//! and merges the history files first.
//!
//! A process's writes and appends recorded `info` (their flush timed out)
//! are settled by its later [`Op::Settle`](crate::history::Op::Settle)
//! event, if any: acknowledged by a later successful flush, or lost.
//!
//! Final reads: once every fault is healed, each live process records a
//! marker ([`Op::Final`](crate::history::Op::Final)) naming the live
//! processes, the keys and the locks, then reads every key's register and
//! list and every lock's counter once more. Its reads after its marker are
//! final; every process a marker names must make one of each key's
//! register and list and of each lock's counter
//! ([`AnomalyKind::MissingFinalRead`]), and must find it
//! ([`AnomalyKind::MissingObject`]). A read earlier in the run may find no
//! document (the node was joining or starting over): it observed nothing.
//!
//! ```
//! use facsimile_jepsen::check::{check_all, AnomalyKind};
//! use facsimile_jepsen::history::{Event, Kind, Op};
//!
//! let ev = Event::new;
//! let read = |elements| Op::ReadList { key: 1, elements, missing: None, foreign: vec![] };
//! let history = vec![
//!     ev(0, Kind::Invoke, Op::Append { key: 1, element: 7 }, 10),
//!     ev(0, Kind::Ok, Op::Append { key: 1, element: 7 }, 20),
//!     // Process 1, the one alive at the end, reads list 1 once more.
//!     ev(1, Kind::Ok, Op::Final { live: vec![1], keys: vec![1], locks: vec![] }, 25),
//!     ev(1, Kind::Invoke, read(None), 30),
//!     ev(1, Kind::Ok, read(Some(vec![])), 40),
//! ];
//! let report = check_all(&history);
//! assert!(!report.valid());
//! assert_eq!(report.lists.anomalies[&AnomalyKind::LostWrite], 1);
//! println!("{report}");
//! ```

mod doc_lock;
mod graph;
mod list;
mod lock;
mod ops;
mod register;
mod snapshot;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::Serialize;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::history::{self, Event, FaultWindow, Kind, Missing, Op, ReadError};

pub use self::ops::{Operation, operations};
pub use self::snapshot::{SnapshotReport, check_snapshots};

/// How many example anomalies of each kind a report keeps (the counts are
/// always exact).
pub const EXAMPLES_PER_KIND: usize = 16;

/// A kind of anomaly a checker can find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AnomalyKind {
    /// The history itself is ill-formed: a completion without invocation,
    /// or one whose operation is not the invoked one, or an acknowledged
    /// operation missing what it should have observed.
    Malformed,
    /// A read returned a value or element that no invoked write or append
    /// of that key produced (one that is no integer among them: the
    /// workload writes only integers).
    PhantomRead,
    /// A read returned a value or element whose write or append failed
    /// (certainly took no effect).
    FailedWriteVisible,
    /// After a process's write or append was acknowledged, its own later
    /// read missed it (registers: returned nothing or a value the process
    /// had written before).
    ReadYourWrites,
    /// A process's reads went back: a register's value moved back in stamp
    /// order (or to nothing), or an element a list read had shown vanished.
    NonMonotonicRead,
    /// A durable write or append (acknowledged, or seen by a process other
    /// than its writer, which the relay allows only once it is on disk) is
    /// missing from the converged state: a list's final read lacks it, or a
    /// register's final value is older (in the stamp order the history
    /// reveals) than it.
    LostWrite,
    /// Final reads of one key disagree.
    Divergence,
    /// A list read holds an element twice.
    DuplicateElement,
    /// Two elements appear in both orders across reads (more generally, the
    /// orders the reads show have a cycle).
    OrderFlip,
    /// Two grants of one lock carry the same fencing token.
    DuplicateToken,
    /// A grant that began after another grant of the same lock had ended
    /// carries a smaller token; or a hold that began after another had
    /// ended (released) carries a smaller token, where the run's faults
    /// are known and none explains its having been granted first, learned
    /// late (an eviction of its holder between its request and the other
    /// grant).
    TokenRegression,
    /// The storage accepted an increment whose token is lower than one it
    /// had accepted before.
    StaleIncrementAccepted,
    /// The holder of one token incremented both before and after the holder
    /// of another token did: two holders at once.
    InterleavedHolders,
    /// Two accepted increments read the same value: one was lost.
    LostIncrement,
    /// An accepted increment did not write what it read plus one.
    BadIncrement,
    /// The counter moved further than the accepted increments and the ones
    /// of unknown outcome can explain.
    UnexplainedIncrement,
    /// The storage's order of accepted increments (by the values they read)
    /// contradicts real time: one completed before another that precedes it
    /// was invoked.
    CounterOrder,
    /// Two holders of one lock at once, in real time, where the run's
    /// faults are known and none explains it: no pause, kill or cut of the
    /// earlier holder between its request and the later grant, nor of the
    /// later holder between its request and the earlier grant (when it
    /// asked before that grant was known, so that it may have been granted
    /// first), and no kill of the relay, nor kill or cut of a NATS server,
    /// in either window (a slow or stalled disk evicts nobody; see
    /// [`FaultWindow::may_evict`]). Locks are exclusive among live
    /// nodes; an eviction or a lease lapse with no injected fault (a node
    /// starved of CPU past the relay's timeout, say) is reported as this.
    ConcurrentHolders,
    /// Information, not a violation: two holders' intervals of one lock
    /// overlap in real time after a fault that explains it, as for
    /// [`AnomalyKind::ConcurrentHolders`], which the protocol allows when
    /// a holder was paused or cut off past the failure detection; fencing
    /// then keeps the resource safe. Counted by the fault's kind in
    /// [`CheckerReport::explained`]. Every overlap counts as this when the
    /// run's faults are unknown.
    OverlappingHolders,
    /// Information, not a violation: accepted increments under different
    /// tokens overlap in real time (a holder paused while its increment
    /// was in flight); the storage's order decides, and is checked.
    OverlappingIncrements,
    /// The fenced storage refused a holder's token as stale (it had
    /// accepted a higher one: the lock passed on while the holder thought
    /// it held it), where the run's faults are known and none could have
    /// evicted the holder since its request.
    StaleRefusal,
    /// Information, not a violation: the fenced storage refused a holder's
    /// token as stale after a fault that could have evicted it (or the
    /// run's faults are unknown): fencing at work.
    FencedRefusal,
    /// A read found no register map or list where one must exist: the
    /// document lacked it (the runner creates them before any client
    /// starts and nobody removes them), or a final read found no document.
    MissingObject,
    /// A process alive at the end (listed in a final marker,
    /// [`Op::Final`]) made no final read of a key's register or list, or
    /// of a lock's counter the marker names: convergence and loss went
    /// unchecked there.
    MissingFinalRead,
    /// Two acknowledged increments of a locked map's counter read the same
    /// value, so one overwrote the other, though their holds did not
    /// overlap, or overlapped with no fault that can evict a holder to
    /// explain it (as for [`AnomalyKind::ConcurrentHolders`]).
    LostUpdate,
    /// Information, not a violation: a lost update whose two holds
    /// overlapped after a fault that explains it (or the run's faults are
    /// unknown): one holder had lost the lock without knowing. Counted by
    /// the fault's kind in [`CheckerReport::explained`].
    ExplainedLostUpdate,
    /// An acknowledged increment of a locked map's counter read less than
    /// an acknowledged increment whose flush completed before its grant
    /// had written: its holder did not see a write made before its lock
    /// was granted.
    StaleRead,
    /// Information, not a violation: a read below such a write, where the
    /// two holds overlapped after a fault that explains it (or the run's
    /// faults are unknown), so the write may have come after the grant.
    ExplainedStaleRead,
    /// A lock's counter ends below the number of values acknowledged
    /// increments wrote: an acknowledged increment was lost.
    FinalTooLow,
    /// A lock's counter ends above the number of increments that may have
    /// taken effect (acknowledged or of unknown outcome): an increment
    /// recorded as failed took effect, or one counted twice.
    FinalTooHigh,
}

impl AnomalyKind {
    /// Whether this kind is information only and leaves the verdict valid.
    pub fn is_informational(self) -> bool {
        matches!(
            self,
            AnomalyKind::OverlappingHolders
                | AnomalyKind::OverlappingIncrements
                | AnomalyKind::FencedRefusal
                | AnomalyKind::ExplainedLostUpdate
                | AnomalyKind::ExplainedStaleRead
        )
    }

    /// A short name, as in the reports.
    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::Malformed => "malformed",
            AnomalyKind::PhantomRead => "phantom-read",
            AnomalyKind::FailedWriteVisible => "failed-write-visible",
            AnomalyKind::ReadYourWrites => "read-your-writes",
            AnomalyKind::NonMonotonicRead => "non-monotonic-read",
            AnomalyKind::LostWrite => "lost-write",
            AnomalyKind::Divergence => "divergence",
            AnomalyKind::DuplicateElement => "duplicate-element",
            AnomalyKind::OrderFlip => "order-flip",
            AnomalyKind::DuplicateToken => "duplicate-token",
            AnomalyKind::TokenRegression => "token-regression",
            AnomalyKind::StaleIncrementAccepted => "stale-increment-accepted",
            AnomalyKind::InterleavedHolders => "interleaved-holders",
            AnomalyKind::LostIncrement => "lost-increment",
            AnomalyKind::BadIncrement => "bad-increment",
            AnomalyKind::UnexplainedIncrement => "unexplained-increment",
            AnomalyKind::CounterOrder => "counter-order",
            AnomalyKind::ConcurrentHolders => "concurrent-holders",
            AnomalyKind::OverlappingHolders => "overlapping-holders",
            AnomalyKind::OverlappingIncrements => "overlapping-increments",
            AnomalyKind::StaleRefusal => "stale-refusal",
            AnomalyKind::FencedRefusal => "fenced-refusal",
            AnomalyKind::MissingObject => "missing-object",
            AnomalyKind::MissingFinalRead => "missing-final-read",
            AnomalyKind::LostUpdate => "lost-update",
            AnomalyKind::ExplainedLostUpdate => "explained-lost-update",
            AnomalyKind::StaleRead => "stale-read",
            AnomalyKind::ExplainedStaleRead => "explained-stale-read",
            AnomalyKind::FinalTooLow => "final-too-low",
            AnomalyKind::FinalTooHigh => "final-too-high",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One anomaly found, with the operations involved.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    /// What is wrong.
    pub kind: AnomalyKind,
    /// The register or list key, lock or counter concerned.
    pub object: u32,
    /// What was seen, in words.
    pub detail: String,
    /// The operations involved (each names its events' positions in the
    /// history).
    pub ops: Vec<Operation>,
}

/// How the operations a checker looked at ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    /// Acknowledged.
    pub ok: usize,
    /// Certainly without effect.
    pub fail: usize,
    /// Outcome unknown, including operations a crash left unfinished.
    pub info: usize,
}

impl OpCounts {
    /// All the operations.
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.info
    }

    fn count(&mut self, op: &Operation) {
        match op.outcome {
            Kind::Ok => self.ok += 1,
            Kind::Fail => self.fail += 1,
            _ => self.info += 1,
        }
    }
}

/// What one checker found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckerReport {
    /// The checker: "history", "registers", "lists", "locks" or
    /// "doc-locks".
    pub name: &'static str,
    /// The operations it looked at.
    pub ops: OpCounts,
    /// Reads that counted as final (registers, lists and the locks'
    /// counters; see the module docs), their object found: zero means
    /// convergence and loss went unchecked.
    pub final_reads: usize,
    /// Violations found, by kind.
    pub anomalies: BTreeMap<AnomalyKind, usize>,
    /// Informational findings, by kind; they leave the verdict valid.
    pub informational: BTreeMap<AnomalyKind, usize>,
    /// Overlaps of two lock holders that a fault explains (in real time,
    /// or a later hold with a lower token), by the kind of the fault (the
    /// first that explains each): what the protocol allowed and fencing
    /// had to cover. For the document's counters, the lost updates so
    /// explained.
    pub explained: BTreeMap<String, usize>,
    /// Up to [`EXAMPLES_PER_KIND`] findings of each kind, in full.
    pub examples: Vec<Anomaly>,
    /// Why this checker proved too little where the history says it must
    /// prove something (see [`Report::unchecked`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<&'static str>,
    /// No violation found.
    pub valid: bool,
}

impl CheckerReport {
    fn new(name: &'static str) -> Self {
        CheckerReport {
            name,
            ops: OpCounts::default(),
            final_reads: 0,
            anomalies: BTreeMap::new(),
            informational: BTreeMap::new(),
            explained: BTreeMap::new(),
            examples: Vec::new(),
            unchecked: Vec::new(),
            valid: true,
        }
    }

    /// Records a finding.
    fn add(&mut self, kind: AnomalyKind, object: u32, detail: String, ops: Vec<Operation>) {
        let counts = if kind.is_informational() {
            &mut self.informational
        } else {
            self.valid = false;
            &mut self.anomalies
        };
        let n = counts.entry(kind).or_insert(0);
        *n += 1;
        if *n <= EXAMPLES_PER_KIND {
            self.examples.push(Anomaly {
                kind,
                object,
                detail,
                ops,
            });
        }
    }

    /// How many violations of `kind` were found.
    pub fn count(&self, kind: AnomalyKind) -> usize {
        self.anomalies
            .get(&kind)
            .or_else(|| self.informational.get(&kind))
            .copied()
            .unwrap_or(0)
    }
}

/// What every checker found in one history.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The history's shape: every operation, and malformed events.
    pub history: CheckerReport,
    /// The register workload.
    pub registers: CheckerReport,
    /// The list workload.
    pub lists: CheckerReport,
    /// The lock workload: grants and the fenced storage.
    pub locks: CheckerReport,
    /// The lock workload: the counters in the locked maps.
    pub doc_locks: CheckerReport,
}

impl Report {
    /// No checker found a violation, and the history proves something
    /// ([`Report::unchecked`] is empty).
    pub fn valid(&self) -> bool {
        self.violation_free() && self.unchecked().is_empty()
    }

    /// No checker found a violation (whether or not there was anything to
    /// check).
    pub fn violation_free(&self) -> bool {
        self.checkers().iter().all(|c| c.valid)
    }

    /// Why the history proves too little to be valid: no operation was
    /// acknowledged, or no read was final (convergence and loss went
    /// unchecked), or what a checker says it could not prove (the
    /// document's counters: grants but no acknowledged increment of one,
    /// or increments but no final read of one). An empty history passes
    /// every checker, vacuously.
    pub fn unchecked(&self) -> Vec<&'static str> {
        let mut why = Vec::new();
        if self.history.ops.ok == 0 {
            why.push("no acknowledged operation");
        }
        if self.registers.final_reads + self.lists.final_reads == 0 {
            why.push("no final read");
        }
        for c in self.checkers() {
            why.extend(c.unchecked.iter().copied());
        }
        why
    }

    /// The checkers' reports, in table order.
    pub fn checkers(&self) -> [&CheckerReport; 5] {
        [
            &self.history,
            &self.registers,
            &self.lists,
            &self.locks,
            &self.doc_locks,
        ]
    }
}

/// A table: one row per checker (operations by outcome, final reads,
/// violations, verdict), then one line per kind of finding and per reason
/// the history proves too little, then the verdict: `valid`, `INVALID`
/// (a violation), or `UNCHECKED` (none, but nothing to check).
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9}  verdict",
            "checker", "ops", "ok", "fail", "info", "final", "anomalies"
        )?;
        for c in self.checkers() {
            writeln!(
                f,
                "{:<10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9}  {}",
                c.name,
                c.ops.total(),
                c.ops.ok,
                c.ops.fail,
                c.ops.info,
                c.final_reads,
                c.anomalies.values().sum::<usize>(),
                if c.valid { "valid" } else { "INVALID" }
            )?;
        }
        for c in self.checkers() {
            for (kind, n) in &c.anomalies {
                writeln!(f, "  {}: {kind} x{n}", c.name)?;
            }
            for (kind, n) in &c.informational {
                write!(f, "  {}: {kind} x{n} (information", c.name)?;
                let by_fault = matches!(
                    kind,
                    AnomalyKind::OverlappingHolders | AnomalyKind::ExplainedLostUpdate
                );
                if by_fault && !c.explained.is_empty() {
                    let by: Vec<String> = c
                        .explained
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect();
                    write!(f, "; after {}", by.join(", "))?;
                }
                writeln!(f, ")")?;
            }
        }
        let unchecked = self.unchecked();
        for why in &unchecked {
            writeln!(f, "  unchecked: {why}")?;
        }
        if !self.violation_free() {
            write!(f, "verdict: INVALID")
        } else if !unchecked.is_empty() {
            write!(f, "verdict: UNCHECKED ({})", unchecked.join(", "))
        } else {
            write!(f, "verdict: valid")
        }
    }
}

/// Runs every checker on a history (events of all processes, in any order
/// between processes; each process's own events in the order recorded).
/// The run's faults are unknown, so every overlap of two lock holders
/// counts as explained ([`AnomalyKind::OverlappingHolders`], and so do the
/// lost updates and stale reads of the document's counters that such an
/// overlap would explain); use [`check_run`] to judge them.
pub fn check_all(history: &[Event]) -> Report {
    check_history(history, None)
}

/// Runs every checker on a history whose run injected `faults` (all of
/// them, on the history's clock): two lock holders that overlap are a
/// violation ([`AnomalyKind::ConcurrentHolders`]) unless a fault that can
/// evict one of them, at a time when that lets them overlap, explains it
/// ([`FaultWindow::may_evict`]; with no faults, none does). So an eviction or a lease lapse with no injected fault (a node
/// starved of CPU past the relay's timeout, say) is reported as a
/// violation.
pub fn check_run(history: &[Event], faults: &[FaultWindow]) -> Report {
    check_history(history, Some(faults))
}

fn check_history(history: &[Event], faults: Option<&[FaultWindow]>) -> Report {
    let (ops, malformed) = operations(history);
    let mut shape = CheckerReport::new("history");
    for op in ops.iter().filter(|o| !matches!(o.op, Op::Final { .. })) {
        shape.ops.count(op);
    }
    for (detail, op) in malformed {
        shape.add(AnomalyKind::Malformed, op.op.object(), detail, vec![op]);
    }
    Report {
        history: shape,
        registers: register::check(&ops),
        lists: list::check(&ops),
        locks: lock::check(&ops, faults),
        doc_locks: doc_lock::check(&ops, faults),
    }
}

/// The final reads a history marks ([`Op::Final`]): each process's reads
/// invoked after its marker, and the processes and keys that must have
/// them.
struct Finals {
    /// Each process's marker.
    markers: FxHashMap<u32, Operation>,
    /// For each live process, the first marker that names it.
    named_by: FxHashMap<u32, Operation>,
    /// The processes alive at the end, as the markers name them.
    live: Vec<u32>,
    keys: Vec<u32>,
    /// The locks whose counters the final reads cover (none in histories
    /// from before).
    locks: Vec<u32>,
}

impl Finals {
    fn new(ops: &[Operation]) -> Self {
        let (mut markers, mut named_by) = (FxHashMap::default(), FxHashMap::default());
        let (mut live, mut keys) = (FxHashSet::default(), FxHashSet::default());
        let mut locks = FxHashSet::default();
        for op in ops {
            if let Op::Final {
                live: l,
                keys: k,
                locks: c,
            } = &op.op
            {
                for &p in l {
                    live.insert(p);
                    named_by.entry(p).or_insert_with(|| op.clone());
                }
                keys.extend(k.iter().copied());
                locks.extend(c.iter().copied());
                markers.entry(op.process).or_insert_with(|| op.clone());
            }
        }
        let sorted = |set: FxHashSet<u32>| {
            let mut v: Vec<u32> = set.into_iter().collect();
            v.sort_unstable();
            v
        };
        Finals {
            markers,
            named_by,
            live: sorted(live),
            keys: sorted(keys),
            locks: sorted(locks),
        }
    }

    /// Whether `op` is one of its process's final reads.
    fn is_final(&self, op: &Operation) -> bool {
        self.markers
            .get(&op.process)
            .is_some_and(|m| op.invoke > m.invoke)
    }

    /// Reports a read whose object was missing: a violation where it must
    /// exist (any time for the object, at the end for the document).
    /// Returns whether the read observed something.
    fn judge_missing(
        &self,
        report: &mut CheckerReport,
        op: &Operation,
        key: u32,
        missing: Option<Missing>,
    ) -> bool {
        let Some(missing) = missing else {
            return true;
        };
        if missing == Missing::Object || self.is_final(op) {
            let what = match missing {
                Missing::Object => "the document lacked it",
                Missing::Document => "no document at its final read",
            };
            report.add(
                AnomalyKind::MissingObject,
                key,
                format!(
                    "process {}'s read of key {key} ({}) found nothing to read: {what}",
                    op.process, report.name
                ),
                vec![op.clone()],
            );
        }
        false
    }

    /// Reports every live process and key of `keys` (the markers' keys or
    /// locks) without a final read among `covered` (the processes and keys
    /// that made one, found or not).
    fn judge_coverage(
        &self,
        report: &mut CheckerReport,
        keys: &[u32],
        covered: &FxHashSet<(u32, u32)>,
    ) {
        for &p in &self.live {
            for &key in keys {
                if !covered.contains(&(p, key)) {
                    report.add(
                        AnomalyKind::MissingFinalRead,
                        key,
                        format!(
                            "process {p}, alive at the end, made no final read of key {key} ({})",
                            report.name
                        ),
                        // Its own marker, or the one that names it.
                        self.markers
                            .get(&p)
                            .or_else(|| self.named_by.get(&p))
                            .into_iter()
                            .cloned()
                            .collect(),
                    );
                }
            }
        }
    }
}

/// Checks the register operations of a history (see [`check_all`]).
pub fn check_registers(history: &[Event]) -> CheckerReport {
    register::check(&operations(history).0)
}

/// Checks the list operations of a history (see [`check_all`]).
pub fn check_lists(history: &[Event]) -> CheckerReport {
    list::check(&operations(history).0)
}

/// Checks the lock and counter operations of a history (see [`check_all`]).
pub fn check_locks(history: &[Event]) -> CheckerReport {
    lock::check(&operations(history).0, None)
}

/// Checks the lock and counter operations of a history whose run injected
/// `faults` (see [`check_run`]).
pub fn check_locks_with(history: &[Event], faults: &[FaultWindow]) -> CheckerReport {
    lock::check(&operations(history).0, Some(faults))
}

/// Checks the increments of the locked maps' counters of a history (see
/// [`check_all`]; the run's faults unknown).
pub fn check_doc_locks(history: &[Event]) -> CheckerReport {
    doc_lock::check(&operations(history).0, None)
}

/// Checks the increments of the locked maps' counters of a history whose
/// run injected `faults` (see [`check_run`]).
pub fn check_doc_locks_with(history: &[Event], faults: &[FaultWindow]) -> CheckerReport {
    doc_lock::check(&operations(history).0, Some(faults))
}

/// Why history files could not be checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// A file could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not a history.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: ReadError,
    },
}

/// Reads history files (one or several processes' each), merges them and
/// runs every checker (the run's faults unknown, as in [`check_all`]).
///
/// # Errors
///
/// [`CheckError`] when a file cannot be opened or holds a line that is not
/// an event (a last line cut short by a crash is skipped).
pub fn check_files<P: AsRef<Path>>(
    paths: impl IntoIterator<Item = P>,
) -> Result<Report, CheckError> {
    check_run_files(paths, None)
}

/// As [`check_files`], with the run's faults read from `faults` (a
/// `faults.jsonl` as the runner writes it) when given (see [`check_run`]).
///
/// # Errors
///
/// [`CheckError`] when a file cannot be opened or holds a line that is not
/// an event or a fault.
pub fn check_run_files<P: AsRef<Path>>(
    paths: impl IntoIterator<Item = P>,
    faults: Option<&Path>,
) -> Result<Report, CheckError> {
    let faults = faults.map(read_fault_file).transpose()?;
    Ok(check_history(
        &read_history_files(paths)?,
        faults.as_deref(),
    ))
}

/// Reads history files (one or several processes' each) and merges them.
///
/// # Errors
///
/// [`CheckError`] when a file cannot be opened or holds a line that is not
/// an event (a last line cut short by a crash is skipped).
pub fn read_history_files<P: AsRef<Path>>(
    paths: impl IntoIterator<Item = P>,
) -> Result<Vec<Event>, CheckError> {
    let mut histories = Vec::new();
    for path in paths {
        let path = path.as_ref();
        histories.push(
            history::read(open(path)?).map_err(|source| CheckError::Read {
                path: path.to_owned(),
                source,
            })?,
        );
    }
    Ok(history::merge(histories))
}

/// Reads the faults a run injected (a `faults.jsonl` as the runner writes
/// it).
///
/// # Errors
///
/// [`CheckError`] when the file cannot be opened or holds a line that is
/// not a fault.
pub fn read_fault_file(path: &Path) -> Result<Vec<FaultWindow>, CheckError> {
    history::read_faults(open(path)?).map_err(|source| CheckError::Read {
        path: path.to_owned(),
        source,
    })
}

fn open(path: &Path) -> Result<BufReader<File>, CheckError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| CheckError::Open {
            path: path.to_owned(),
            source,
        })
}
