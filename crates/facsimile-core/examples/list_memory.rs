//! Heap bytes per element of one replica's array, measured by a counting
//! allocator: an array built by pushes, one built by inserts at random
//! positions, and one under random inserts and deletes (`seq_stress`'s mix,
//! with a second passing, so a reclamation pass, every 10,000 operations).
//!
//! ```text
//! cargo run --release -p facsimile-core --example list_memory [N]
//! ```

use std::alloc::System;
use std::time::Duration;

use facsimile_core::{Config, Input, PeerId, Replica};
use stats_alloc::{Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Bytes held now that were not held when `region` started (a
/// reallocation is already counted in both totals).
fn held(region: &Region<'_, System>) -> i64 {
    let s = region.change();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// A seeded xorshift: the same positions on every run.
fn xorshift(seed: u64) -> impl FnMut(usize) -> usize {
    let mut x = seed;
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Push,
    Random,
    Churn,
}

fn measure(shape: Shape, n: usize) {
    let region = Region::new(ALLOCATOR);
    let mut replica = Replica::new(PeerId::new("m", 1), Config::default());
    let list = replica
        .set_root(Input::Array(Vec::new()))
        .expect("root")
        .expect("an array");
    let mut rand = xorshift(42);
    let mut len = 0;
    let mut ops = 0u64;
    let mut now = Duration::ZERO;
    while len < n {
        let churn = matches!(shape, Shape::Churn);
        if churn && len > 0 && rand(10) < 2 {
            let at = rand(len);
            replica.list_splice(list, at, 1, []).expect("delete");
            len -= 1;
        } else {
            let at = match shape {
                Shape::Push => len,
                Shape::Random | Shape::Churn => rand(len + 1),
            };
            let value = Input::Value((ops as i64).into());
            replica.list_splice(list, at, 0, [value]).expect("insert");
            len += 1;
        }
        ops += 1;
        while replica.poll_transmit().is_some() {}
        while replica.poll_event().is_some() {}
        if ops % 10_000 == 0 {
            now += Duration::from_secs(1);
            replica.handle_timeout(now);
        }
    }
    // One more pass reclaims what the last deletes left.
    now += Duration::from_secs(1);
    replica.handle_timeout(now);
    while replica.poll_transmit().is_some() {}
    while replica.poll_event().is_some() {}
    assert_eq!(replica.list_len(list).expect("the array"), n);
    let bytes = held(&region);
    let name = match shape {
        Shape::Push => "pushes",
        Shape::Random => "random inserts",
        Shape::Churn => "inserts and deletes",
    };
    println!(
        "{name:>20}: {n} elements, {ops} operations, {:.1} MB held, {:.1} bytes per element",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64,
    );
}

fn main() {
    let n = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N is a number"))
        .unwrap_or(1_000_000);
    for shape in [Shape::Push, Shape::Random, Shape::Churn] {
        measure(shape, n);
    }
}
