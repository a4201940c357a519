//! Heap bytes per list element, counted by the allocator.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --bin facsimile-bench-mem -- \
//!     SYSTEM push|random N [pair]
//! ```
//!
//! Prints one JSON line (see `facsimile_bench::memory`). This binary counts
//! every allocation (a few atomic adds each); the timing binary,
//! `facsimile-bench`, does not, so its times are not charged for it.

use std::alloc::System;
use std::process::ExitCode;

use facsimile_bench::dispatch;
use facsimile_bench::memory::Build;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed (`stats_alloc` counts a reallocation's
/// growth in `bytes_allocated` and its shrinking in `bytes_deallocated`).
fn heap() -> u64 {
    let s = GLOBAL.stats();
    s.bytes_allocated.saturating_sub(s.bytes_deallocated) as u64
}

const USAGE: &str = "usage: facsimile-bench-mem SYSTEM push|random N [pair]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (system, build, n, pair) = match args.as_slice() {
        [system, build, n] => (system, build, n, false),
        [system, build, n, pair] if pair == "pair" => (system, build, n, true),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let (Some(build), Some(n)) = (
        Build::from_name(build),
        n.replace('_', "").parse::<usize>().ok(),
    ) else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    match dispatch::element_memory(system, build, n, pair, heap) {
        Some(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("unknown system {system}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}
