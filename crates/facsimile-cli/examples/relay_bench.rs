//! Relay benchmark: throughput and latency with 1, 4 and 16 clients on
//! loopback, and recovery time of a document whose log holds a million
//! writes.
//!
//! ```sh
//! cargo run --release -p facsimile-cli --example relay_bench            # full run
//! cargo run --release -p facsimile-cli --example relay_bench -- --quick # smaller
//! # one row, without the recovery run (to profile it)
//! cargo run --release -p facsimile-cli --example relay_bench -- --clients 16 --no-recovery
//! ```
//!
//! Everything runs in this process: the relay (with its data on disk and
//! every batch fsync'd), the clients, and one observer that timestamps
//! when each write arrives. Each client writes 64-byte strings into its own
//! key of the root map as fast as the relay acknowledges them (it flushes
//! every 100 writes); every write reaches every other client and the
//! observer. `nats_bench` runs the same workload (`workload/mod.rs`) over
//! NATS JetStream.

use std::time::{Duration, Instant};

use facsimile::net;
use facsimile_server::{Server, ServerConfig};
use serde_json::json;

mod workload;

use workload::{options, temp_dir};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
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
        workload::table(&addr, &options, if quick { 4_000 } else { 32_000 }).await;
        let _ = stop.send(());
        let _ = relay.await;
        let _ = std::fs::remove_dir_all(&dir);

        if !std::env::args().any(|a| a == "--no-recovery") {
            let writes: u64 = if quick { 100_000 } else { 1_000_000 };
            recovery(writes).await;
        }
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
    // A relay opens a document when a node first asks for it: the time is
    // until a reader that joins the restarted relay has the whole document.
    let restarted = Instant::now();
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let reader = net::connect(&addr, "reader", options("recovery").read_only(true))
        .await
        .unwrap();
    let keys = writers as usize * 1000;
    while reader.node().root_map().is_none_or(|m| m.len() < keys) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = restarted.elapsed();
    reader.abort();
    let _ = stop.send(());
    let _ = relay.await;
    println!(
        "\nrecovery: a log of {writes} writes ({:.1} MB, written in {:.1} s) is replayed by a restarting relay and read whole by a node that joins it in {:.2} s",
        log_bytes as f64 / 1e6,
        loaded.as_secs_f64(),
        took.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
