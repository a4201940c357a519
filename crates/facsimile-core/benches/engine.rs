//! The core engine alone, no transport: local writes (with the encoding of
//! their outgoing message), remote application of pre-encoded messages,
//! and snapshots of a 100,000-object graph.
//!
//! `cargo bench -p facsimile-core --bench engine`. Each measured iteration
//! runs all 100,000 operations; criterion reports the time per iteration
//! and, from the throughput, operations per second.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use facsimile_core::{Config, Input, ObjectId, PeerId, Replica, WireFormat};

const N: usize = 100_000;

fn config() -> Config {
    Config::default().wire_format(WireFormat::Binary)
}

fn writer() -> Replica {
    Replica::new(PeerId::new("writer", 1), config())
}

fn reader() -> Replica {
    Replica::new(PeerId::new("reader", 2), config())
}

/// Everything `r` has queued.
fn drain(r: &mut Replica) -> Vec<Arc<[u8]>> {
    let mut out = Vec::new();
    while let Some(t) = r.poll_transmit() {
        out.push(t.bytes);
    }
    while r.poll_event().is_some() {}
    out
}

/// A writer whose root is an empty map or array, its messages so far, and
/// the root's id.
fn with_root(root: Input) -> (Replica, Vec<Arc<[u8]>>, ObjectId) {
    let mut w = writer();
    let obj = w.set_root(root).unwrap().unwrap();
    let preamble = drain(&mut w);
    (w, preamble, obj)
}

fn keys() -> Vec<String> {
    (0..N).map(|i| format!("key{i}")).collect()
}

/// `N` single-key writes (`N` messages), then the messages they made.
fn map_sets(w: &mut Replica, root: ObjectId, keys: &[String]) -> Vec<Arc<[u8]>> {
    let mut out = Vec::with_capacity(N);
    for (i, k) in keys.iter().enumerate() {
        w.map_set(root, k, (i as i64).into()).unwrap();
        while let Some(t) = w.poll_transmit() {
            out.push(t.bytes);
        }
    }
    while w.poll_event().is_some() {}
    out
}

/// `N` pushes (`N` messages), then the messages they made.
fn pushes(w: &mut Replica, list: ObjectId) -> Vec<Arc<[u8]>> {
    let mut out = Vec::with_capacity(N);
    for i in 0..N {
        w.list_splice(list, i, 0, vec![(i as i64).into()]).unwrap();
        while let Some(t) = w.poll_transmit() {
            out.push(t.bytes);
        }
    }
    while w.poll_event().is_some() {}
    out
}

/// A reader that has applied `preamble`.
fn primed(preamble: &[Arc<[u8]>]) -> Replica {
    let mut r = reader();
    for m in preamble {
        r.handle_message(m).unwrap();
    }
    drain(&mut r);
    r
}

fn apply_all(r: &mut Replica, messages: &[Arc<[u8]>]) {
    for m in messages {
        r.handle_message(m).unwrap();
    }
    // The replies (none expected) and events are part of the work.
    while r.poll_transmit().is_some() {}
    while r.poll_event().is_some() {}
}

fn map_set(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("map_set_100k_distinct_keys");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(N as u64));
    g.bench_function("local", |b| {
        b.iter_batched(
            || with_root(Input::Map(vec![])),
            |(mut w, _, root)| black_box(map_sets(&mut w, root, &keys)),
            BatchSize::PerIteration,
        )
    });
    let (mut w, preamble, root) = with_root(Input::Map(vec![]));
    let messages = map_sets(&mut w, root, &keys);
    g.bench_function("remote", |b| {
        b.iter_batched(
            || primed(&preamble),
            |mut r| {
                apply_all(&mut r, &messages);
                r
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn array_push(c: &mut Criterion) {
    let mut g = c.benchmark_group("array_push_100k");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(N as u64));
    g.bench_function("local", |b| {
        b.iter_batched(
            || with_root(Input::Array(vec![])),
            |(mut w, _, list)| black_box(pushes(&mut w, list)),
            BatchSize::PerIteration,
        )
    });
    let (mut w, preamble, list) = with_root(Input::Array(vec![]));
    let messages = pushes(&mut w, list);
    g.bench_function("remote", |b| {
        b.iter_batched(
            || primed(&preamble),
            |mut r| {
                apply_all(&mut r, &messages);
                r
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// A root map of 1,000 maps of 100 (empty) maps each: 101,001 objects.
fn big_graph() -> Replica {
    let mut w = writer();
    let root = w.set_root(Input::Map(vec![])).unwrap().unwrap();
    for i in 0..1000 {
        let children = (0..100)
            .map(|j| (format!("c{j}").into(), Input::Map(vec![])))
            .collect();
        w.map_set(root, &format!("m{i}"), Input::Map(children))
            .unwrap();
    }
    drain(&mut w);
    w
}

/// The messages a joiner with `joiner`'s identity receives from `w` during
/// a sync; the last one is the state transfer.
fn sync_exchange(w: &mut Replica, joiner: impl Fn() -> Replica) -> Vec<Arc<[u8]>> {
    let mut j = joiner();
    j.sync();
    let tag = j.peer_id().incarnation();
    let mut received = Vec::new();
    for _ in 0..16 {
        for m in drain(&mut j) {
            w.handle_message(&m).unwrap();
        }
        let mut quiet = true;
        while let Some(t) = w.poll_transmit() {
            if t.to.is_none_or(|to| to == tag) {
                quiet = false;
                j.handle_message(&t.bytes).unwrap();
                received.push(t.bytes);
            }
        }
        if j.is_ready() && quiet {
            break;
        }
    }
    assert!(j.is_ready(), "the joiner completed its sync");
    // Trim what came after the answer: the answer is the largest message.
    let answer = (0..received.len())
        .max_by_key(|&i| received[i].len())
        .unwrap();
    received.truncate(answer + 1);
    received
}

fn snapshot(c: &mut Criterion) {
    let mut w = big_graph();
    let objects = 1000 * 100 + 1000 + 1;
    let mut g = c.benchmark_group("graph_101k_objects");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(objects));
    g.bench_function("snapshot_canonical_encode", |b| {
        b.iter(|| black_box(w.snapshot()))
    });
    g.bench_function("export_state_encode", |b| {
        b.iter(|| black_box(w.export_state()))
    });
    let saved = w.export_state();
    g.bench_function("from_exported_decode", |b| {
        b.iter(|| {
            Replica::from_exported(PeerId::new("restored", 9), config(), black_box(&saved)).unwrap()
        })
    });
    // The sync transfer: a fresh joiner loading the answer.
    let joiner = || Replica::new(PeerId::new("joiner", 3), config());
    let exchange = sync_exchange(&mut w, joiner);
    let (answer, before) = exchange.split_last().unwrap();
    eprintln!(
        "graph: {objects} objects, snapshot {} bytes, sync answer {} bytes",
        w.snapshot().len(),
        answer.len()
    );
    g.bench_function("sync_answer_load", |b| {
        b.iter_batched(
            || {
                let mut j = joiner();
                j.sync();
                drain(&mut j);
                for m in before {
                    j.handle_message(m).unwrap();
                }
                drain(&mut j);
                j
            },
            |mut j| {
                j.handle_message(answer).unwrap();
                assert!(j.is_ready());
                j
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, map_set, array_push, snapshot);
criterion_main!(benches);
