//! Heap bytes per list element: one replica (or a live pair) builds a list
//! of N elements, and the heap it holds afterwards is divided by N.
//!
//! The heap is read from a counter the caller supplies (the
//! `facsimile-bench-mem` binary installs a counting global allocator), so
//! the figure is exact: bytes requested from the allocator and not yet
//! freed, without the allocator's own overhead or pages it keeps. The
//! process's resident set is reported beside it for comparison.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::state::Totals;
use crate::system::{EditTimer, Op, Root, System};

/// How the list is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// N appends.
    Push,
    /// `seq_stress`'s edits: seeded random inserts (80 %) and deletes until
    /// the length reaches N.
    Random,
}

impl Build {
    /// The build called `name` (`push` or `random`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "push" => Some(Build::Push),
            "random" => Some(Build::Random),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Build::Push => "push",
            Build::Random => "random",
        }
    }

    /// The edits of the build, in order.
    fn ops(self, n: usize) -> Box<dyn Iterator<Item = Op<'static>>> {
        match self {
            Build::Push => Box::new((0..n).map(|i| Op::ArrayPush { value: i as i64 })),
            Build::Random => {
                let mut rng = SmallRng::seed_from_u64(42);
                let mut len = 0usize;
                let mut step = 0i64;
                Box::new(std::iter::from_fn(move || {
                    while len < n {
                        step += 1;
                        if rng.random_bool(0.8) {
                            let index = rng.random_range(0..=len);
                            len += 1;
                            return Some(Op::ArrayInsert { index, value: step });
                        } else if len > 0 {
                            let index = rng.random_range(0..len);
                            len -= 1;
                            return Some(Op::ArrayDelete { index });
                        }
                    }
                    None
                }))
            }
        }
    }
}

/// Builds an N-element list on system `S` and reports the heap it holds, as
/// one JSON line.
///
/// With `pair` false one replica makes every edit and drops its updates;
/// with `pair` true a second replica applies each update at once (as in the
/// workloads) and the figure per replica is half the pair's heap. `heap`
/// reads the bytes currently allocated.
pub fn element_memory<S: System>(build: Build, n: usize, pair: bool, heap: fn() -> u64) -> String {
    let rss_before = resident();
    let before = heap();
    let start = Instant::now();
    let (a, b, ops) = if pair {
        let mut a = S::new(1);
        let snapshot = a.snapshot();
        let mut b = S::load(2, &snapshot);
        drop(snapshot);
        let mut ops = 0u64;
        for op in build.ops(n) {
            let update = a.edit(op, &mut EditTimer::off());
            b.apply(update.as_ref());
            ops += 1;
        }
        (a, Some(b), ops)
    } else {
        let mut a = S::new(1);
        let mut ops = 0u64;
        for op in build.ops(n) {
            drop(a.edit(op, &mut EditTimer::off()));
            ops += 1;
        }
        (a, None, ops)
    };
    let elapsed: Duration = start.elapsed();
    let held = heap().saturating_sub(before);
    let rss = resident()
        .zip(rss_before)
        .map(|(after, before)| after.saturating_sub(before));
    let replicas = if pair { 2 } else { 1 };
    let elements = Totals::of(&a, Root::Array).ints;
    let status = if elements == n as u64 { "OK" } else { "FAIL" };
    let line = json!({
        "system": S::NAME,
        "build": build.name(),
        "n": n,
        "ops": ops,
        "replicas": replicas,
        "heap_bytes": held,
        "bytes_per_element_per_replica": held as f64 / replicas as f64 / n as f64,
        "rss_delta_bytes": rss,
        "build_ms": elapsed.as_secs_f64() * 1e3,
        "status": status,
    })
    .to_string();
    drop(b);
    line
}

/// The resident set of this process (`VmRSS`), in bytes.
fn resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facsimile_sys::Facsimile;
    use crate::yrs_sys::Yrs;

    fn counted() -> u64 {
        0
    }

    /// Both builds reach exactly N elements, alone and in a pair.
    #[test]
    fn builds_reach_n() {
        for build in [Build::Push, Build::Random] {
            for pair in [false, true] {
                for line in [
                    element_memory::<Facsimile>(build, 500, pair, counted),
                    element_memory::<Yrs>(build, 500, pair, counted),
                ] {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    assert_eq!(v["status"], "OK", "{line}");
                    assert_eq!(v["replicas"], if pair { 2 } else { 1 }, "{line}");
                }
            }
        }
    }

    #[test]
    fn random_build_deletes() {
        let ops: Vec<Op<'static>> = Build::Random.ops(1_000).collect();
        assert!(ops.iter().any(|op| matches!(op, Op::ArrayDelete { .. })));
        assert!(ops.len() > 1_000);
    }
}
