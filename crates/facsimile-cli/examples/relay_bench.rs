//! Relay benchmark: throughput and latency with 1, 4 and 16 clients on
//! loopback, and recovery time of a document whose log holds a million
//! writes.
//!
//! ```sh
//! cargo run --release -p facsimile-cli --example relay_bench            # full run
//! cargo run --release -p facsimile-cli --example relay_bench -- --quick # smaller
//! ```
//!
//! Everything runs in this process: the relay (with its data on disk and
//! every batch fsync'd), the clients, and one observer that timestamps
//! when each write arrives. Each client writes 64-byte strings into its own
//! key of the root map as fast as the relay acknowledges them (it flushes
//! every 100 writes); every write reaches every other client and the
//! observer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use facsimile::net::{self, ConnectOptions};
use facsimile::{Origin, Value};
use facsimile_server::{Server, ServerConfig};
use serde_json::json;

const PAYLOAD: usize = 64;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "facsimile-bench-{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(doc: &str) -> ConnectOptions {
    ConnectOptions::new(doc).timeouts(Duration::from_secs(30), Duration::from_secs(120))
}

/// The size on the wire of one benchmark write.
fn message_size() -> usize {
    let node = facsimile::Node::new("client-00");
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let s = sizes.clone();
    node.set_sender(move |m| s.lock().unwrap().push(m.as_bytes().len()));
    node.set_root(json!({})).unwrap();
    let root = node.root_map().unwrap();
    root.set("c0", format!("{:>20}:{}", 1, "x".repeat(PAYLOAD - 21)))
        .unwrap();
    root.set("c0", format!("{:>20}:{}", 2, "x".repeat(PAYLOAD - 21)))
        .unwrap();
    *sizes.lock().unwrap().last().unwrap()
}

struct Figures {
    clients: usize,
    writes: u64,
    secs: f64,
    delivered: u64,
    p50: Duration,
    p99: Duration,
}

async fn throughput(addr: &str, clients: usize, per_client: u64, msg_bytes: usize) -> Figures {
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
    let expected = clients as u64 * per_client * clients as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        let node = c.node().clone();
        let conn = c.clone();
        tasks.push(tokio::spawn(async move {
            let root = node.root_map().unwrap();
            let key = format!("c{i}");
            let pad = "x".repeat(PAYLOAD - 21);
            for j in 0..per_client {
                let ts = epoch.elapsed().as_nanos() as u64;
                root.set(&key, format!("{ts:>20}:{pad}")).unwrap();
                if j % 100 == 99 {
                    conn.flush().await.unwrap();
                }
            }
            conn.flush().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    while delivered.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pick = |q: f64| Duration::from_nanos(lat[((lat.len() - 1) as f64 * q) as usize]);
    let _ = msg_bytes;
    let f = Figures {
        clients,
        writes: clients as u64 * per_client,
        secs,
        delivered: expected,
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

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let msg_bytes = message_size();
        println!("message size: {msg_bytes} bytes (a 64-byte string set on a map key)");
        let dir = temp_dir("throughput");
        let config = ServerConfig::default()
            .listen("127.0.0.1:0".parse().unwrap())
            .data_dir(&dir);
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        let total: u64 = if quick { 4_000 } else { 32_000 };
        println!(
            "\n| clients | writes | writes/s | deliveries/s | MB/s delivered | p50 latency | p99 latency |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for clients in [1usize, 4, 16] {
            let f = throughput(&addr, clients, total / clients as u64, msg_bytes).await;
            let dps = f.delivered as f64 / f.secs;
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.1} | {:.2} ms | {:.2} ms |",
                f.clients,
                f.writes,
                f.writes as f64 / f.secs,
                dps,
                dps * msg_bytes as f64 / 1e6,
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3
            );
        }
        let _ = stop.send(());
        let _ = relay.await;
        let _ = std::fs::remove_dir_all(&dir);

        let writes: u64 = if quick { 100_000 } else { 1_000_000 };
        recovery(writes).await;
    });
}

async fn recovery(writes: u64) {
    let dir = temp_dir("recovery");
    let config = ServerConfig::default()
        .listen("127.0.0.1:0".parse().unwrap())
        .data_dir(&dir)
        .compact_bytes(u64::MAX);
    let server = Server::bind(config.clone()).await.unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let started = Instant::now();
    let writers = 4u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let conn = net::connect(&addr, &format!("loader-{w}"), options("recovery"))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let node = conn.node().clone();
            if w == 0 {
                node.set_root(json!({})).unwrap();
            }
            conn.flush().await.unwrap();
            while node.root_map().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let root = node.root_map().unwrap();
            for j in 0..writes / writers {
                // 1000 keys per writer: the log holds every write, the
                // document only the last value of each key.
                root.set(&format!("w{w}k{}", j % 1000), j as i64).unwrap();
                if j % 1000 == 999 {
                    conn.flush().await.unwrap();
                }
            }
            conn.flush().await.unwrap();
            conn
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.unwrap());
    }
    let loaded = started.elapsed();
    for c in conns {
        c.abort();
    }
    let _ = stop.send(());
    let _ = relay.await;
    let log_bytes = std::fs::metadata(dir.join("recovery").join("log"))
        .map(|m| m.len())
        .unwrap_or(0);
    let restarted = Instant::now();
    let server = Server::bind(config).await.unwrap();
    let took = restarted.elapsed();
    drop(server);
    println!(
        "\nrecovery: a log of {writes} writes ({:.1} MB, written in {:.1} s) is replayed by a restarting relay in {:.2} s",
        log_bytes as f64 / 1e6,
        loaded.as_secs_f64(),
        took.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
