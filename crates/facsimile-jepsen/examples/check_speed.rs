//! How long the checkers take on a large generated history.
//!
//! `cargo run --release -p facsimile-jepsen --example check_speed [EVENTS
//! [KEYS]]` builds a valid history of about EVENTS events (default
//! 100 000): eight processes doing register writes and reads, list appends
//! and reads and lock rounds with fenced increments on KEYS keys (default
//! 10; fewer keys make longer lists), and times `check_all`.

use std::time::Instant;

use facsimile_jepsen::check::check_all;
use facsimile_jepsen::history::{Event, Kind, Op};

const PROCESSES: u32 = 8;

fn read(key: u32, value: Option<u64>) -> Op {
    Op::Read {
        key,
        value,
        missing: None,
        foreign: None,
    }
}

fn read_list(key: u32, elements: Option<Vec<u64>>) -> Op {
    Op::ReadList {
        key,
        elements,
        missing: None,
        foreign: Vec::new(),
    }
}

fn main() {
    let target: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |a| a.parse().expect("EVENTS is a number"));
    let keys: u32 = std::env::args()
        .nth(2)
        .map_or(10, |a| a.parse().expect("KEYS is a number"));
    let mut events = Vec::with_capacity(target + 64);
    let mut registers = vec![None; keys as usize];
    let mut lists: Vec<Vec<u64>> = vec![Vec::new(); keys as usize];
    let mut time = 0;
    let mut next = 0u64;
    let mut token = 0u64;
    let mut counter = 0u64;
    // A cheap deterministic stream of choices (xorshift).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut draw = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut push = |events: &mut Vec<Event>, p: u32, invoked: Op, kind: Kind, done: Op| {
        time += 10;
        events.push(Event::new(p, Kind::Invoke, invoked, time));
        time += 10;
        events.push(Event::new(p, kind, done, time));
    };
    while events.len() < target {
        let p = draw(PROCESSES as u64) as u32;
        let key = draw(u64::from(keys)) as u32;
        match draw(5) {
            0 => {
                next += 1;
                registers[key as usize] = Some(next);
                let op = Op::Write { key, value: next };
                push(&mut events, p, op.clone(), Kind::Ok, op);
            }
            1 => push(
                &mut events,
                p,
                read(key, None),
                Kind::Ok,
                read(key, registers[key as usize]),
            ),
            2 => {
                next += 1;
                lists[key as usize].push(next);
                let op = Op::Append { key, element: next };
                push(&mut events, p, op.clone(), Kind::Ok, op);
            }
            3 => push(
                &mut events,
                p,
                read_list(key, None),
                Kind::Ok,
                read_list(key, Some(lists[key as usize].clone())),
            ),
            _ => {
                token += 1;
                push(
                    &mut events,
                    p,
                    Op::Acquire {
                        lock: 0,
                        token: None,
                    },
                    Kind::Ok,
                    Op::Acquire {
                        lock: 0,
                        token: Some(token),
                    },
                );
                let inc = |read| Op::Increment {
                    counter: 0,
                    token,
                    read,
                    wrote: read.map(|r: u64| r + 1),
                };
                push(&mut events, p, inc(None), Kind::Ok, inc(Some(counter)));
                counter += 1;
                let release = Op::Release { lock: 0, token };
                push(&mut events, p, release.clone(), Kind::Ok, release);
            }
        }
    }
    // Every process marks its final reads, then reads every key.
    for p in 0..PROCESSES {
        let last = events.last().map_or(0, |e: &Event| e.time);
        events.push(Event {
            process: p,
            kind: Kind::Ok,
            op: Op::Final {
                live: (0..PROCESSES).collect(),
                keys: (0..keys).collect(),
                locks: vec![],
            },
            time: last + 1,
            error: None,
        });
        for key in 0..keys {
            let value = registers[key as usize];
            push(&mut events, p, read(key, None), Kind::Ok, read(key, value));
            let elements = Some(lists[key as usize].clone());
            push(
                &mut events,
                p,
                read_list(key, None),
                Kind::Ok,
                read_list(key, elements),
            );
        }
    }
    let elements: usize = events
        .iter()
        .map(|e| match &e.op {
            Op::ReadList {
                elements: Some(e), ..
            } => e.len(),
            _ => 0,
        })
        .sum();
    let start = Instant::now();
    let report = check_all(&events);
    let took = start.elapsed();
    println!("{report}");
    println!(
        "{} events ({elements} list elements read) checked in {:.3} s",
        events.len(),
        took.as_secs_f64()
    );
    assert!(report.valid());
}
