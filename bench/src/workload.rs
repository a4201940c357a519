//! The workloads, written once against [`System`].
//!
//! Incremental workloads replay a live app: replica A makes one edit, encodes
//! it as an update, and replica B applies it at once (or, for the concurrent
//! ones, later, one by one). Snapshot workloads build a document on A in one
//! transaction and send it whole to a fresh B. Every workload ends by checking
//! that the replicas converged to the expected state; the peak memory is read
//! before that check so the check's own allocations do not count.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::report::{Report, Status, peak_memory};
use crate::state::{Totals, canonical_json};
use crate::system::{EditTimer, Entries, Op, Root, System, Value};

/// One benchmark workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// N sets of distinct keys on one root map.
    MapSet,
    /// N sets over 100 hot keys of one root map.
    MapOverwrite,
    /// N appends to one root array.
    ArrayPush,
    /// N maps of 10 fields and a 10-integer array, snapshot-synced.
    Nested,
    /// Two replicas each make N/2 concurrent sets on 1,000 keys, then
    /// exchange their updates.
    TwoWriters,
    /// Two disconnected replicas each make N/2 edits (map sets on 5,000
    /// shared keys, so with overwrites, alternating with list pushes), then
    /// reconnect and catch up with each other by the library's own means.
    CatchUp,
    /// Seeded random inserts (80 %) and deletes on one root array until its
    /// length reaches N.
    SeqStress,
    /// Seeded random inserts fill one root array to N (untimed), then 4 x N
    /// random inserts and deletes, alternating, keep its length at N: the
    /// steady state, where every deleted slot is eventually reclaimed.
    SeqChurn,
    /// A graph of N maps (N/1,000 maps of 1,000 child maps), snapshot-synced.
    GraphSync,
    /// 16 replicas each make N concurrent sets on 500 keys, then all
    /// exchange their updates.
    Sixteen,
}

impl Workload {
    /// Every workload, in the order `all` runs them.
    pub const ALL: [Workload; 10] = [
        Workload::MapSet,
        Workload::MapOverwrite,
        Workload::ArrayPush,
        Workload::Nested,
        Workload::TwoWriters,
        Workload::CatchUp,
        Workload::SeqStress,
        Workload::SeqChurn,
        Workload::GraphSync,
        Workload::Sixteen,
    ];

    /// The workload's name on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            Workload::MapSet => "map_set",
            Workload::MapOverwrite => "map_overwrite",
            Workload::ArrayPush => "array_push",
            Workload::Nested => "nested",
            Workload::TwoWriters => "two_writers",
            Workload::CatchUp => "catch_up",
            Workload::SeqStress => "seq_stress",
            Workload::SeqChurn => "seq_churn",
            Workload::GraphSync => "graph_sync",
            Workload::Sixteen => "sixteen",
        }
    }

    /// The workload called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// The default size of the workload.
    pub fn default_n(self) -> usize {
        match self {
            Workload::MapSet
            | Workload::MapOverwrite
            | Workload::ArrayPush
            | Workload::TwoWriters
            | Workload::CatchUp => 100_000,
            Workload::Nested | Workload::Sixteen => 10_000,
            Workload::SeqStress | Workload::SeqChurn | Workload::GraphSync => 1_000_000,
        }
    }

    /// Runs the workload at size `n` on system `S`.
    ///
    /// An incremental workload runs twice: first with nothing but the whole
    /// loop timed, for its total time, peak memory and result; then with
    /// every edit's phases timed, for the split between local work,
    /// encoding and remote apply. Reading the clock five times per
    /// operation costs about 0.1 µs here, as much as a fast library's whole
    /// operation, so the second run's total is not reported.
    ///
    /// With `phases` false the second run is skipped (for long runs whose
    /// split is not wanted).
    pub fn run<S: System>(self, n: usize, phases: bool) -> Report {
        let mut report = self.run_once::<S>(n, false);
        if phases && self.is_incremental() && report.status == Status::Ok {
            let timed = self.run_once::<S>(n, true);
            report.local = timed.local;
            report.encode = timed.encode;
            report.apply = timed.apply;
            report.status = timed.status;
        }
        report.workload = self.name().to_owned();
        report.system = S::NAME.to_owned();
        report.n = n;
        report
    }

    /// Whether the workload edits one operation at a time through a
    /// [`Meter`].
    fn is_incremental(self) -> bool {
        !matches!(
            self,
            Workload::Nested | Workload::GraphSync | Workload::CatchUp
        )
    }

    fn run_once<S: System>(self, n: usize, phases: bool) -> Report {
        match self {
            Workload::MapSet => map_set::<S>(n, phases),
            Workload::MapOverwrite => map_overwrite::<S>(n, phases),
            Workload::ArrayPush => array_push::<S>(n, phases),
            Workload::Nested => nested::<S>(n),
            Workload::TwoWriters => two_writers::<S>(n, phases),
            Workload::CatchUp => catch_up::<S>(n),
            Workload::SeqStress => seq_stress::<S>(n, phases),
            Workload::SeqChurn => seq_churn::<S>(n, phases),
            Workload::GraphSync => graph_sync::<S>(n),
            Workload::Sixteen => sixteen::<S>(n, phases),
        }
    }
}

/// Accumulates the per-operation measurements of an incremental workload.
struct Meter {
    timer: EditTimer,
    apply: Duration,
    update_bytes: u64,
    ops: u64,
}

impl Meter {
    /// A meter that times each edit's phases, or only counts.
    fn new(phases: bool) -> Self {
        Self {
            timer: if phases {
                EditTimer::new()
            } else {
                EditTimer::off()
            },
            apply: Duration::ZERO,
            update_bytes: 0,
            ops: 0,
        }
    }

    /// Makes `op` on `replica` and returns its update.
    fn edit<S: System>(&mut self, replica: &mut S, op: Op<'_>) -> S::Update {
        self.timer.start();
        let update = replica.edit(op, &mut self.timer);
        self.update_bytes += update.as_ref().len() as u64;
        self.ops += 1;
        update
    }

    /// Applies `update` on `replica`.
    fn apply<S: System>(&mut self, replica: &mut S, update: &(impl AsRef<[u8]> + ?Sized)) {
        if !self.timer.is_on() {
            return replica.apply(update.as_ref());
        }
        let start = Instant::now();
        replica.apply(update.as_ref());
        self.apply += start.elapsed();
    }

    fn into_report(self, total: Duration, status: Status) -> Report {
        let mut report = Report::empty("", "", 0, status);
        report.ops = self.ops;
        if self.timer.is_on() {
            report.local = Some(self.timer.local_total());
            report.encode = Some(self.timer.encode_total());
            report.apply = Some(self.apply);
        }
        report.total = total;
        report.update_bytes = Some(self.update_bytes);
        report
    }
}

/// Creates `count` replicas of one empty document, synced through a
/// snapshot of the first.
fn replicas<S: System>(count: u64) -> Vec<S> {
    let mut first = S::new(1);
    let snapshot = first.snapshot();
    let mut all = vec![first];
    all.extend((2..=count).map(|peer| S::load(peer, &snapshot)));
    all
}

fn pair<S: System>() -> (S, S) {
    let mut all = replicas::<S>(2);
    let b = all.pop().expect("two replicas");
    let a = all.pop().expect("two replicas");
    (a, b)
}

/// Checks that all `replicas` have the same canonical state and that the
/// root `root` of the first holds what `expected` says.
///
/// `expected` is compared field by field where it is `Some`.
fn verify<S: System>(replicas: &[&S], root: Root, expected: &Expected) -> Status {
    let reference = canonical_json(replicas[0]);
    for (i, replica) in replicas.iter().enumerate().skip(1) {
        if canonical_json(*replica) != reference {
            return Status::Fail(format!("replica {i} differs from replica 0"));
        }
    }
    expected.check(Totals::of(replicas[0], root))
}

/// What a root should contain at the end of a workload.
#[derive(Default)]
struct Expected {
    maps: Option<u64>,
    arrays: Option<u64>,
    ints: Option<u64>,
    int_sum: Option<i64>,
    strs: Option<u64>,
}

impl Expected {
    fn check(&self, got: Totals) -> Status {
        let fields = [
            ("maps", self.maps.map(|v| v as i128), got.maps as i128),
            ("arrays", self.arrays.map(|v| v as i128), got.arrays as i128),
            ("ints", self.ints.map(|v| v as i128), got.ints as i128),
            (
                "int_sum",
                self.int_sum.map(|v| v as i128),
                got.int_sum as i128,
            ),
            ("strs", self.strs.map(|v| v as i128), got.strs as i128),
        ];
        for (name, want, got) in fields {
            if let Some(want) = want
                && want != got
            {
                return Status::Fail(format!("{name}: expected {want}, got {got}"));
            }
        }
        Status::Ok
    }
}

fn sum_below(n: usize) -> i64 {
    let n = n as i64;
    n * (n - 1) / 2
}

fn map_set<S: System>(n: usize, phases: bool) -> Report {
    let (mut a, mut b) = pair::<S>();
    let mut meter = Meter::new(phases);
    let cpu = thread_cpu();
    let start = Instant::now();
    for i in 0..n {
        let key = format!("k{i}");
        let update = meter.edit(
            &mut a,
            Op::MapSet {
                key: &key,
                value: i as i64,
            },
        );
        meter.apply(&mut b, &update);
    }
    let total = start.elapsed();
    report_cpu("map_set", n, n as u64, cpu);
    let peak = peak_memory();
    let expected = Expected {
        maps: Some(1),
        ints: Some(n as u64),
        int_sum: Some(sum_below(n)),
        ..Expected::default()
    };
    let status = verify(&[&a, &b], Root::Map, &expected);
    with_peak(meter.into_report(total, status), peak)
}

fn map_overwrite<S: System>(n: usize, phases: bool) -> Report {
    const HOT_KEYS: usize = 100;
    let (mut a, mut b) = pair::<S>();
    let mut meter = Meter::new(phases);
    let start = Instant::now();
    for i in 0..n {
        let key = format!("k{}", i % HOT_KEYS);
        let update = meter.edit(
            &mut a,
            Op::MapSet {
                key: &key,
                value: i as i64,
            },
        );
        meter.apply(&mut b, &update);
    }
    let total = start.elapsed();
    let peak = peak_memory();
    // Each hot key ends with the last value written to it.
    let last_values = (n.saturating_sub(HOT_KEYS)..n).map(|i| i as i64);
    let expected = Expected {
        maps: Some(1),
        ints: Some(n.min(HOT_KEYS) as u64),
        int_sum: Some(last_values.sum()),
        ..Expected::default()
    };
    let status = verify(&[&a, &b], Root::Map, &expected);
    with_peak(meter.into_report(total, status), peak)
}

fn array_push<S: System>(n: usize, phases: bool) -> Report {
    let (mut a, mut b) = pair::<S>();
    let mut meter = Meter::new(phases);
    let cpu = thread_cpu();
    let start = Instant::now();
    for i in 0..n {
        let update = meter.edit(&mut a, Op::ArrayPush { value: i as i64 });
        meter.apply(&mut b, &update);
    }
    let total = start.elapsed();
    report_cpu("array_push", n, n as u64, cpu);
    let peak = peak_memory();
    let expected = Expected {
        arrays: Some(1),
        ints: Some(n as u64),
        int_sum: Some(sum_below(n)),
        ..Expected::default()
    };
    let status = verify(&[&a, &b], Root::Array, &expected);
    with_peak(meter.into_report(total, status), peak)
}

fn two_writers<S: System>(n: usize, phases: bool) -> Report {
    const KEYS: usize = 1_000;
    let per_writer = n / 2;
    let (mut a, mut b) = pair::<S>();
    let mut meter = Meter::new(phases);
    let start = Instant::now();
    let mut from_a = Vec::with_capacity(per_writer);
    let mut from_b = Vec::with_capacity(per_writer);
    for i in 0..per_writer {
        let key = format!("k{}", i % KEYS);
        from_a.push(meter.edit(
            &mut a,
            Op::MapSet {
                key: &key,
                value: i as i64,
            },
        ));
    }
    for i in 0..per_writer {
        let key = format!("k{}", i % KEYS);
        let value = 1_000_000 + i as i64;
        from_b.push(meter.edit(&mut b, Op::MapSet { key: &key, value }));
    }
    for update in &from_a {
        meter.apply(&mut b, update);
    }
    for update in &from_b {
        meter.apply(&mut a, update);
    }
    let total = start.elapsed();
    let peak = peak_memory();
    // Which writer wins a key is each library's rule; only the key count is fixed.
    let expected = Expected {
        maps: Some(1),
        ints: Some(per_writer.min(KEYS) as u64),
        ..Expected::default()
    };
    let status = verify(&[&a, &b], Root::Map, &expected);
    with_peak(meter.into_report(total, status), peak)
}

/// The edits of one disconnected writer in `catch_up`: map sets on shared
/// keys (each key set about five times per writer) alternating with pushes.
fn catch_up_op(key: &mut String, writer: i64, i: usize) -> Op<'_> {
    const KEYS: usize = 5_000;
    let value = writer * 1_000_000_000 + i as i64;
    if i % 2 == 0 {
        key.clear();
        use std::fmt::Write as _;
        let _ = write!(key, "k{}", (i / 2) % KEYS);
        Op::MapSet { key, value }
    } else {
        Op::ArrayPush { value }
    }
}

fn catch_up<S: System>(n: usize) -> Report {
    let per_writer = n / 2;
    let (mut a, mut b) = pair::<S>();
    let mut key = String::new();
    let start = Instant::now();
    for (writer, replica) in [&mut a, &mut b].into_iter().enumerate() {
        for i in 0..per_writer {
            replica.edit_offline(catch_up_op(&mut key, writer as i64, i));
        }
    }
    let offline = start.elapsed();
    let t = Instant::now();
    let exchange = S::reconnect(&mut a, &mut b);
    let reconnect = t.elapsed();
    let total = start.elapsed();
    let peak = peak_memory();

    let sets = per_writer.div_ceil(2);
    let pushes = per_writer / 2;
    let expected = Expected {
        maps: Some(1),
        ints: Some(sets.min(5_000) as u64),
        ..Expected::default()
    };
    let mut status = verify(&[&a, &b], Root::Map, &expected);
    if status == Status::Ok {
        let array = Expected {
            arrays: Some(1),
            ints: Some(2 * pushes as u64),
            ..Expected::default()
        };
        status = array.check(Totals::of(&a, Root::Array));
    }
    let mut report = Report::empty("", "", 0, status);
    report.ops = 2 * per_writer as u64;
    report.local = Some(offline);
    report.apply = Some(reconnect);
    report.total = total;
    report.update_bytes = Some(exchange.bytes);
    report.messages = Some(exchange.messages);
    report.peak_bytes = peak;
    report
}

fn seq_stress<S: System>(n: usize, phases: bool) -> Report {
    let (mut a, mut b) = pair::<S>();
    let mut meter = Meter::new(phases);
    let mut rng = SmallRng::seed_from_u64(42);
    let mut len = 0usize;
    let mut step = 0i64;
    let cpu = thread_cpu();
    let start = Instant::now();
    while len < n {
        let op = if rng.random_bool(0.8) {
            let index = rng.random_range(0..=len);
            len += 1;
            Op::ArrayInsert { index, value: step }
        } else if len > 0 {
            let index = rng.random_range(0..len);
            len -= 1;
            Op::ArrayDelete { index }
        } else {
            continue;
        };
        step += 1;
        let update = meter.edit(&mut a, op);
        meter.apply(&mut b, &update);
    }
    let total = start.elapsed();
    report_cpu("seq_stress", n, step as u64, cpu);
    let peak = peak_memory();
    let expected = Expected {
        arrays: Some(1),
        ints: Some(n as u64),
        ..Expected::default()
    };
    let status = verify(&[&a, &b], Root::Array, &expected);
    with_peak(meter.into_report(total, status), peak)
}

/// How many operations `seq_churn` makes at constant length, per element.
const CHURN_ROUNDS: usize = 4;

fn seq_churn<S: System>(n: usize, phases: bool) -> Report {
    let (mut a, mut b) = pair::<S>();
    let mut rng = SmallRng::seed_from_u64(42);
    let mut fill = Meter::new(false);
    for len in 0..n {
        let index = rng.random_range(0..=len);
        let update = fill.edit(&mut a, Op::ArrayInsert { index, value: 1 });
        fill.apply(&mut b, &update);
    }
    let mut meter = Meter::new(phases);
    let cpu = thread_cpu();
    let start = Instant::now();
    churn(&mut a, &mut b, &mut meter, &mut rng, n);
    let total = start.elapsed();
    report_cpu("seq_churn", n, meter.ops, cpu);
    let peak = peak_memory();
    let expected = Expected {
        arrays: Some(1),
        ints: Some(n as u64),
        int_sum: Some(n as i64),
        ..Expected::default()
    };
    let status = verify(&[&a, &b], Root::Array, &expected);
    with_peak(meter.into_report(total, status), peak)
}

/// `seq_churn`'s timed phase: `CHURN_ROUNDS` x `n` operations, a random
/// insert then a random delete, on a list of length `n`. Kept out of line
/// so that a profiler can count this phase alone (callgrind's
/// `--toggle-collect=*churn*`).
#[inline(never)]
fn churn<S: System>(a: &mut S, b: &mut S, meter: &mut Meter, rng: &mut SmallRng, n: usize) {
    for _ in 0..CHURN_ROUNDS * n / 2 {
        let index = rng.random_range(0..=n);
        let update = meter.edit(a, Op::ArrayInsert { index, value: 1 });
        meter.apply(b, &update);
        let index = rng.random_range(0..=n);
        let update = meter.edit(a, Op::ArrayDelete { index });
        meter.apply(b, &update);
    }
}

fn sixteen<S: System>(n: usize, phases: bool) -> Report {
    const REPLICAS: usize = 16;
    const KEYS: usize = 500;
    let mut all = replicas::<S>(REPLICAS as u64);
    let mut meter = Meter::new(phases);
    let start = Instant::now();
    let mut queues: Vec<Vec<S::Update>> = Vec::with_capacity(REPLICAS);
    for (r, replica) in all.iter_mut().enumerate() {
        let mut queue = Vec::with_capacity(n);
        for i in 0..n {
            let key = format!("k{}", i % KEYS);
            let value = (r * 1_000_000 + i) as i64;
            queue.push(meter.edit(replica, Op::MapSet { key: &key, value }));
        }
        queues.push(queue);
    }
    for (r, replica) in all.iter_mut().enumerate() {
        for (s, queue) in queues.iter().enumerate() {
            if s != r {
                for update in queue {
                    meter.apply(replica, update);
                }
            }
        }
    }
    let total = start.elapsed();
    let peak = peak_memory();
    let expected = Expected {
        maps: Some(1),
        ints: Some(n.min(KEYS) as u64),
        ..Expected::default()
    };
    let refs: Vec<&S> = all.iter().collect();
    let status = verify(&refs, Root::Map, &expected);
    with_peak(meter.into_report(total, status), peak)
}

/// The measurements of a snapshot workload.
struct SnapshotRun<S> {
    a: S,
    b: S,
    report: Report,
    read: Totals,
}

/// Builds `entries` into `root` on a fresh A, sends A's snapshot to a fresh
/// B, and walks `root` on B.
fn snapshot_sync<S: System>(root: Root, entries: Entries, objects: u64) -> SnapshotRun<S> {
    let mut a = S::new(1);
    let start = Instant::now();
    a.write_map(root, entries);
    let build = start.elapsed();

    let t = Instant::now();
    let snapshot = a.snapshot();
    let encode = t.elapsed();

    let t = Instant::now();
    let b = S::load(2, &snapshot);
    let decode = t.elapsed();

    let t = Instant::now();
    let read = Totals::of(&b, root);
    let read_time = t.elapsed();
    let total = start.elapsed();

    let mut report = Report::empty("", "", 0, Status::Ok);
    report.ops = objects;
    report.local = Some(build);
    report.total = total;
    report.snapshot_bytes = Some(snapshot.len() as u64);
    report.snapshot_encode = Some(encode);
    report.snapshot_decode = Some(decode);
    report.read = Some(read_time);
    report.peak_bytes = peak_memory();
    SnapshotRun { a, b, report, read }
}

fn nested<S: System>(n: usize) -> Report {
    const FIELDS: usize = 10;
    const TAGS: usize = 10;
    let int = |i: usize, j: usize| (i * 100 + j) as i64;
    let entries = (0..n).map(move |i| {
        let fields = (0..FIELDS).map(move |j| {
            let value = if j < FIELDS / 2 {
                Value::Int(int(i, j))
            } else {
                Value::Str(format!("v{i}-{j}"))
            };
            (format!("f{j}"), value)
        });
        let tags = (0..TAGS).map(move |k| Value::Int(int(i, 50 + k)));
        let item = fields.chain(std::iter::once((
            "tags".to_owned(),
            Value::Array(Box::new(tags)),
        )));
        (format!("item{i}"), Value::Map(Box::new(item)))
    });
    let run = snapshot_sync::<S>(Root::Items, Box::new(entries), n as u64);

    let int_sum = (0..n)
        .flat_map(|i| (0..FIELDS / 2).chain(50..50 + TAGS).map(move |j| int(i, j)))
        .sum();
    let expected = Expected {
        maps: Some(1 + n as u64),
        arrays: Some(n as u64),
        ints: Some((n * (FIELDS / 2 + TAGS)) as u64),
        int_sum: Some(int_sum),
        strs: Some((n * FIELDS / 2) as u64),
    };
    let status = match expected.check(run.read) {
        Status::Ok => verify(&[&run.a, &run.b], Root::Items, &expected),
        failed => failed,
    };
    Report {
        status,
        ..run.report
    }
}

fn graph_sync<S: System>(n: usize) -> Report {
    const FANOUT: usize = 1_000;
    let children = n.min(FANOUT);
    let parents = (n / FANOUT).max(1);
    let value = move |i: usize, j: usize| (i * children + j) as i64;
    let entries = (0..parents).map(move |i| {
        let kids = (0..children).map(move |j| {
            let field = std::iter::once(("v".to_owned(), Value::Int(value(i, j))));
            (format!("c{j}"), Value::Map(Box::new(field)))
        });
        (format!("m{i}"), Value::Map(Box::new(kids)))
    });
    let objects = (parents * children) as u64;
    let run = snapshot_sync::<S>(Root::Graph, Box::new(entries), objects);

    // A canonical export of a million maps would dwarf the workload, so the
    // graph is checked by counts and sums on both sides.
    let expected = Expected {
        maps: Some(1 + parents as u64 + objects),
        arrays: Some(0),
        ints: Some(objects),
        int_sum: Some(sum_below(parents * children)),
        strs: Some(0),
    };
    let status = match expected.check(run.read) {
        Status::Ok => expected.check(Totals::of(&run.a, Root::Graph)),
        failed => failed,
    };
    Report {
        status,
        ..run.report
    }
}

fn with_peak(mut report: Report, peak: Option<u64>) -> Report {
    report.peak_bytes = peak;
    report
}

/// Time this thread spent on a CPU, from `/proc/thread-self/schedstat`:
/// on a machine shared with other work it leaves out the time the thread
/// waited for a core, which wall time includes.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// With `FACSIMILE_BENCH_CPU` set, prints to stderr the CPU time of the
/// timed loop that started at `cpu_start`, per operation.
fn report_cpu(workload: &str, n: usize, ops: u64, cpu_start: Option<Duration>) {
    if std::env::var_os("FACSIMILE_BENCH_CPU").is_none() {
        return;
    }
    if let (Some(start), Some(end)) = (cpu_start, thread_cpu()) {
        let us = (end - start).as_secs_f64() * 1e6 / ops.max(1) as f64;
        eprintln!("cpu {workload} n={n} ops={ops} cpu_us_per_op={us:.3}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::automerge_sys::Automerge;
    use crate::loro_sys::Loro;
    use crate::yrs_sys::{Yrs, YrsV2};

    /// Runs every workload at a tiny size and expects it to converge.
    fn every_workload_converges<S: System>() {
        for workload in Workload::ALL {
            let n = (workload.default_n() / 1_000).max(20);
            let report = workload.run::<S>(n, true);
            assert_eq!(report.status, Status::Ok, "{} {}", S::NAME, workload.name());
        }
    }

    /// An edit that never reaches B must fail the check.
    fn divergence_is_detected<S: System>() {
        let (mut a, b) = pair::<S>();
        a.edit(Op::MapSet { key: "k", value: 1 }, &mut EditTimer::new());
        let status = verify(&[&a, &b], Root::Map, &Expected::default());
        assert!(matches!(status, Status::Fail(_)), "{}: {status:?}", S::NAME);
    }

    #[test]
    fn yrs() {
        every_workload_converges::<Yrs>();
        divergence_is_detected::<Yrs>();
    }

    #[test]
    fn yrs_v2() {
        every_workload_converges::<YrsV2>();
        divergence_is_detected::<YrsV2>();
    }

    #[test]
    fn facsimile() {
        every_workload_converges::<crate::facsimile_sys::Facsimile>();
        divergence_is_detected::<crate::facsimile_sys::Facsimile>();
    }

    #[test]
    fn loro() {
        every_workload_converges::<Loro>();
        divergence_is_detected::<Loro>();
    }

    #[test]
    fn automerge() {
        every_workload_converges::<Automerge>();
        divergence_is_detected::<Automerge>();
    }

    #[test]
    fn names_round_trip() {
        for workload in Workload::ALL {
            assert_eq!(Workload::from_name(workload.name()), Some(workload));
        }
    }
}
