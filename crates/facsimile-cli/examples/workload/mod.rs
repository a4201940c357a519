//! The workload of the transport benchmarks (`relay_bench`, `nats_bench`),
//! so that their tables measure the same thing.
//!
//! An observer creates the document, then each client writes 64-byte
//! strings into its own key of the root map as fast as its transport
//! acknowledges them (it flushes every 100 writes); every write reaches
//! every other client and the observer. Each string starts with the time
//! of its write, so the observer's change event gives the latency.
//!
//! A node that falls behind its transport's log and starts over from a
//! snapshot (over NATS, behind the stream's purge) never sees the writes
//! in between; then a run ends when every node holds every client's last
//! write, and the table is followed by how many deliveries were skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use facsimile::net::{self, ConnectOptions};
use facsimile::{Node, Origin, Value};
use serde_json::json;

const PAYLOAD: usize = 64;
/// A run that delivers nothing for this long has stalled.
const STALL: Duration = Duration::from_secs(30);

/// A new directory under the system's temporary directory.
pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "facsimile-bench-{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The connection options of the benchmarks, for document `doc`.
pub(crate) fn options(doc: &str) -> ConnectOptions {
    ConnectOptions::new(doc).timeouts(Duration::from_secs(30), Duration::from_secs(120))
}

/// One write: the time it was made, in nanoseconds since `epoch`,
/// padded to 64 bytes.
fn stamped(epoch: Instant) -> String {
    let ts = epoch.elapsed().as_nanos() as u64;
    format!("{ts:>20}:{:x<pad$}", "", pad = PAYLOAD - 21)
}

/// The size on the wire of one benchmark write (the transport's own
/// framing not included).
fn message_size() -> usize {
    let node = Node::new("client-00");
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let s = sizes.clone();
    node.set_sender(move |m| s.lock().unwrap().push(m.as_bytes().len()));
    node.set_root(json!({})).unwrap();
    let root = node.root_map().unwrap();
    let epoch = Instant::now();
    // The second write replaces a value, as all but the first do.
    root.set("c0", stamped(epoch)).unwrap();
    root.set("c0", stamped(epoch)).unwrap();
    *sizes.lock().unwrap().last().unwrap()
}

struct Figures {
    writes: u64,
    secs: f64,
    delivered: u64,
    expected: u64,
    /// How many times a node started over from a snapshot.
    reloads: u64,
    p50: Duration,
    p99: Duration,
}

/// Whether every node holds the last write of every client.
fn converged(nodes: &[&Node], last: &[String]) -> bool {
    nodes.iter().all(|n| {
        n.root_map().is_some_and(|root| {
            last.iter().enumerate().all(|(i, v)| {
                let held = root.get(&format!("c{i}"));
                matches!(held, Some(Value::String(s)) if s == v.as_str())
            })
        })
    })
}

async fn throughput(
    addr: &str,
    options: &dyn Fn(&str) -> ConnectOptions,
    clients: usize,
    per_client: u64,
) -> Figures {
    let doc = format!("bench-{clients}");
    let epoch = Instant::now();
    let first = net::connect(addr, "observer", options(&doc)).await.unwrap();
    first.node().set_root(json!({})).unwrap();
    first.flush().await.unwrap();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(
        (clients as u64 * per_client) as usize,
    )));
    let delivered = Arc::new(AtomicU64::new(0));
    let _observe = {
        let latencies = latencies.clone();
        let delivered = delivered.clone();
        first.node().on_change(move |ev| {
            if let (Origin::Remote(_), Some(Value::String(s))) = (ev.origin(), ev.new_value()) {
                let sent: u64 = s[..20].trim().parse().unwrap();
                let now = epoch.elapsed().as_nanos() as u64;
                latencies.lock().unwrap().push(now.saturating_sub(sent));
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut conns = Vec::new();
    let mut subs = Vec::new();
    for i in 0..clients {
        let c = net::connect(addr, &format!("client-{i:02}"), options(&doc))
            .await
            .unwrap();
        let delivered = delivered.clone();
        subs.push(c.node().on_change(move |ev| {
            if matches!(ev.origin(), Origin::Remote(_)) {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }));
        conns.push(c);
    }
    // Each write reaches the other clients and the observer.
    let expected = clients as u64 * per_client * clients as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        let conn = c.clone();
        tasks.push(tokio::spawn(async move {
            let root = conn.node().root_map().unwrap();
            let key = format!("c{i}");
            let mut last = String::new();
            for j in 0..per_client {
                last = stamped(epoch);
                root.set(&key, last.clone()).unwrap();
                if j % 100 == 99 {
                    conn.flush().await.unwrap();
                }
            }
            conn.flush().await.unwrap();
            last
        }));
    }
    let nodes: Vec<&Node> = std::iter::once(first.node())
        .chain(conns.iter().map(|c| c.node()))
        .collect();
    let reloads = || first.rejoins() + conns.iter().map(|c| c.rejoins()).sum::<u64>();
    // Each client's last write, once all of them have flushed.
    let mut last: Option<Vec<String>> = None;
    let mut polls = 0u64;
    let mut progress = (0, Instant::now());
    loop {
        let n = delivered.load(Ordering::Relaxed);
        if last.is_none() && tasks.iter().all(|t| t.is_finished()) {
            let mut writes = Vec::new();
            for t in tasks.drain(..) {
                writes.push(t.await.unwrap());
            }
            last = Some(writes);
        }
        if let Some(last) = &last {
            polls += 1;
            if n >= expected || (polls % 10 == 0 && reloads() > 0 && converged(&nodes, last)) {
                break;
            }
        }
        if n > progress.0 {
            progress = (n, Instant::now());
        }
        assert!(
            progress.1.elapsed() < STALL,
            "{clients} clients: no change event for {STALL:?}; {n} of {expected} deliveries, \
             {} of {clients} clients done writing",
            clients - tasks.iter().filter(|t| !t.is_finished()).count()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pick = |q: f64| Duration::from_nanos(lat[((lat.len() - 1) as f64 * q) as usize]);
    let f = Figures {
        writes: clients as u64 * per_client,
        secs,
        delivered: delivered.load(Ordering::Relaxed),
        expected,
        reloads: reloads(),
        p50: pick(0.50),
        p99: pick(0.99),
    };
    drop(subs);
    for c in conns {
        let _ = c.close(Duration::from_secs(5)).await;
    }
    let _ = first.close(Duration::from_secs(5)).await;
    f
}

/// Runs the workload against the server at `addr` with 1, 4 and 16
/// clients, `total` writes each time, and prints the table.
pub(crate) async fn table(addr: &str, options: &dyn Fn(&str) -> ConnectOptions, total: u64) {
    let msg_bytes = message_size();
    println!("message size: {msg_bytes} bytes (a 64-byte string set on a map key)");
    println!(
        "\n| clients | writes | writes/s | deliveries/s | MB/s delivered | p50 latency | p99 latency |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut skipped = Vec::new();
    // `--clients N` runs that row only (to profile it).
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--clients")
        .and_then(|i| args.get(i + 1)?.parse::<usize>().ok());
    for clients in only.map_or(vec![1usize, 4, 16], |n| vec![n]) {
        let f = throughput(addr, options, clients, total / clients as u64).await;
        if f.reloads > 0 {
            skipped.push(format!(
                "{clients} clients: {} reloads from a snapshot, {} of {} deliveries skipped",
                f.reloads,
                f.expected - f.delivered,
                f.expected
            ));
        }
        let dps = f.delivered as f64 / f.secs;
        println!(
            "| {clients} | {} | {:.0} | {:.0} | {:.1} | {:.2} ms | {:.2} ms |",
            f.writes,
            f.writes as f64 / f.secs,
            dps,
            dps * msg_bytes as f64 / 1e6,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3
        );
    }
    for line in skipped {
        println!("{line}");
    }
}
