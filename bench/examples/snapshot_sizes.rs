//! Snapshot sizes of the workloads' final documents: facsimile's
//! `export_state` against yrs's v1 and v2 encodings, and the time facsimile
//! takes to export and load each.
//!
//! `cargo run --release --manifest-path bench/Cargo.toml --example snapshot_sizes [WORKLOAD...]`

use std::time::Instant;

use facsimile_bench::facsimile_sys::Facsimile;
use facsimile_bench::system::{EditTimer, Entries, Op, Root, System, Value};
use facsimile_bench::yrs_sys::{Yrs, YrsV2};

/// Makes workload `name`'s edits (at its default size) on a fresh replica.
fn build<S: System>(name: &str) -> S {
    let mut a = S::new(1);
    let mut timer = EditTimer::off();
    match name {
        "map_set" | "map_overwrite" => {
            for i in 0..100_000usize {
                let key = match name {
                    "map_set" => format!("k{i}"),
                    _ => format!("k{}", i % 100),
                };
                let op = Op::MapSet {
                    key: &key,
                    value: i as i64,
                };
                a.edit(op, &mut timer);
            }
        }
        "array_push" => {
            for i in 0..100_000 {
                a.edit(Op::ArrayPush { value: i }, &mut timer);
            }
        }
        "nested" => a.write_map(Root::Items, nested(10_000)),
        "graph_sync" => a.write_map(Root::Graph, graph(1_000_000)),
        _ => panic!("unknown workload {name}"),
    }
    a
}

/// `nested`'s entries, as `bench/src/workload.rs` writes them.
fn nested(n: usize) -> Entries {
    let int = |i: usize, j: usize| (i * 100 + j) as i64;
    Box::new((0..n).map(move |i| {
        let fields = (0..10).map(move |j| {
            let value = if j < 5 {
                Value::Int(int(i, j))
            } else {
                Value::Str(format!("v{i}-{j}"))
            };
            (format!("f{j}"), value)
        });
        let tags = (0..10).map(move |k| Value::Int(int(i, 50 + k)));
        let item = fields.chain(std::iter::once((
            "tags".to_owned(),
            Value::Array(Box::new(tags)),
        )));
        (format!("item{i}"), Value::Map(Box::new(item)))
    }))
}

/// `graph_sync`'s entries, as `bench/src/workload.rs` writes them.
fn graph(n: usize) -> Entries {
    let children = n.min(1_000);
    let parents = (n / 1_000).max(1);
    Box::new((0..parents).map(move |i| {
        let kids = (0..children).map(move |j| {
            let field = std::iter::once(("v".to_owned(), Value::Int((i * children + j) as i64)));
            (format!("c{j}"), Value::Map(Box::new(field)))
        });
        (format!("m{i}"), Value::Map(Box::new(kids)))
    }))
}

fn main() {
    let all = [
        "map_set",
        "map_overwrite",
        "array_push",
        "nested",
        "graph_sync",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "| workload | facsimile bytes | yrs v1 | yrs v2 | facsimile / yrs v2 | export ms | load ms |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for name in all {
        if !args.is_empty() && !args.iter().any(|a| a == name) {
            continue;
        }
        let mut f = build::<Facsimile>(name);
        let t = Instant::now();
        let ours = f.snapshot();
        let export = t.elapsed();
        let t = Instant::now();
        let loaded = Facsimile::load(2, &ours);
        let load = t.elapsed();
        drop((f, loaded));
        let v1 = build::<Yrs>(name).snapshot().len();
        let v2 = build::<YrsV2>(name).snapshot().len();
        println!(
            "| {name} | {} | {v1} | {v2} | {:.2} | {:.1} | {:.1} |",
            ours.len(),
            ours.len() as f64 / v2 as f64,
            export.as_secs_f64() * 1e3,
            load.as_secs_f64() * 1e3,
        );
    }
}
