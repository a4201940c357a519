//! Where facsimile's per-operation bytes go: the size of each message a
//! live pair sends, by kind of edit, split into the edit's own payload (the
//! key with its length byte, the integer as postcard's zigzag varint) and
//! everything else (message kind, sender, counter tick, object, operation
//! tag: the header).
//!
//! `cargo run --release --manifest-path bench/Cargo.toml --example message_sizes`

use std::collections::BTreeMap;

use facsimile_bench::facsimile_sys::Facsimile;
use facsimile_bench::system::{EditTimer, Op, System};

/// The bytes postcard spends on `v`: a zigzag varint.
fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Sizes seen per kind: (message bytes, payload bytes) -> count.
type Histogram = BTreeMap<(&'static str, usize, usize), u64>;

fn record(h: &mut Histogram, kind: &'static str, message: usize, payload: usize) {
    *h.entry((kind, message, payload)).or_default() += 1;
}

fn run(name: &str, ops: impl Iterator<Item = (String, Option<i64>, i64)>) {
    let mut a = Facsimile::new(1);
    let snapshot = a.snapshot();
    let mut b = Facsimile::load(2, &snapshot);
    let mut h = Histogram::new();
    let (mut total, mut payload_total, mut count) = (0usize, 0usize, 0usize);
    for (i, (key, set, push)) in ops.enumerate() {
        let (kind, update, payload) = match set {
            Some(value) => (
                "map set",
                a.edit(Op::MapSet { key: &key, value }, &mut EditTimer::off()),
                1 + key.len() + varint_len(value),
            ),
            None => (
                "push",
                a.edit(Op::ArrayPush { value: push }, &mut EditTimer::off()),
                varint_len(push),
            ),
        };
        let len = update.as_ref().len();
        b.apply(update.as_ref());
        // The first message also carries the node's announcement.
        if i > 0 {
            record(&mut h, kind, len, payload);
            total += len;
            payload_total += payload;
            count += 1;
        }
    }
    println!(
        "\n{name}: {count} messages, {:.2} B each, payload {:.2}, header {:.2}",
        total as f64 / count as f64,
        payload_total as f64 / count as f64,
        (total - payload_total) as f64 / count as f64
    );
    println!("| kind | message bytes | payload | header | messages |");
    println!("|---|--:|--:|--:|--:|");
    for ((kind, len, payload), n) in h {
        println!("| {kind} | {len} | {payload} | {} | {n} |", len - payload);
    }
}

fn main() {
    const N: usize = 100_000;
    run(
        "map_set (k{i} = i)",
        (0..N).map(|i| (format!("k{i}"), Some(i as i64), 0)),
    );
    run(
        "array_push (i)",
        (0..N).map(|i| (String::new(), None, i as i64)),
    );
    for writer in [0i64, 1] {
        run(
            &format!("catch_up writer {writer} (sets on k0..k4999 alternating with pushes)"),
            (0..N / 2).map(move |i| {
                let value = writer * 1_000_000_000 + i as i64;
                if i % 2 == 0 {
                    (format!("k{}", (i / 2) % 5_000), Some(value), 0)
                } else {
                    (String::new(), None, value)
                }
            }),
        );
    }
}
