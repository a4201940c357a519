//! How the cost of a plain map insert grows with the map, on this machine:
//! `map_set`'s keys inserted into two `std` hash maps (one per replica), no
//! replication. The growth from 100k to 1M keys is what the memory
//! hierarchy charges any hash map, for comparison with `map_set`'s.
//!
//! `cargo run --release --manifest-path bench/Cargo.toml --example map_floor`

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    println!("| keys | µs per key (three series) |");
    println!("|--:|---|");
    for n in [10_000usize, 100_000, 1_000_000] {
        let series: Vec<String> = (0..3)
            .map(|_| {
                let mut a: HashMap<String, i64> = HashMap::new();
                let mut b: HashMap<String, i64> = HashMap::new();
                let start = Instant::now();
                for i in 0..n {
                    let key = format!("k{i}");
                    a.insert(key.clone(), i as i64);
                    b.insert(key, i as i64);
                }
                let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
                black_box((&a, &b));
                format!("{per:.3}")
            })
            .collect();
        println!("| {n} | {} |", series.join(" / "));
    }
}
