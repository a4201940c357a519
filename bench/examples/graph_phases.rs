//! Resident memory after each phase of `graph_sync` for one system: the
//! sender's build, its export, the joiner's load and the read. Shows where
//! the process's peak (VmHWM) is reached.
//!
//! cargo run --release --manifest-path bench/Cargo.toml --example graph_phases -- [SYSTEM] [N]

use std::time::Instant;

use facsimile_bench::state::Totals;
use facsimile_bench::system::{Root, System, Value};

fn status(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn phase(name: &str, start: Instant) {
    println!(
        "{name:<8} {:>8.1} ms  rss {:>7.1} MiB  peak {:>7.1} MiB",
        start.elapsed().as_secs_f64() * 1e3,
        status("VmRSS:"),
        status("VmHWM:")
    );
}

fn run<S: System>(n: usize) {
    let children = n.min(1_000);
    let parents = (n / 1_000).max(1);
    let entries = (0..parents).map(move |i| {
        let kids = (0..children).map(move |j| {
            let field = std::iter::once(("v".to_owned(), Value::Int((i * children + j) as i64)));
            (format!("c{j}"), Value::Map(Box::new(field)))
        });
        (format!("m{i}"), Value::Map(Box::new(kids)))
    });
    let mut a = S::new(1);
    let t = Instant::now();
    a.write_map(Root::Graph, Box::new(entries));
    phase("build", t);
    let t = Instant::now();
    let snapshot = a.snapshot();
    phase("export", t);
    let t = Instant::now();
    let b = S::load(2, &snapshot);
    phase("load", t);
    let t = Instant::now();
    let totals = Totals::of(&b, Root::Graph);
    phase("read", t);
    assert_eq!(totals.ints, (parents * children) as u64);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let system = args.next().unwrap_or_else(|| "facsimile".into());
    let n = args.next().map_or(1_000_000, |s| s.parse().expect("N"));
    match system.as_str() {
        "facsimile" => run::<facsimile_bench::facsimile_sys::Facsimile>(n),
        "automerge" => run::<facsimile_bench::automerge_sys::Automerge>(n),
        "yrs-v2" => run::<facsimile_bench::yrs_sys::YrsV2>(n),
        other => panic!("unknown system {other}"),
    }
}
