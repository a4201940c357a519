//! WebSocket benchmark of the relay: throughput and latency with 1, 4 and
//! 16 WebSocket clients, the workload of `facsimile-cli`'s `relay_bench`
//! (and of `bench/ws`, which runs it on y-websocket's server with Yjs
//! clients).
//!
//! ```sh
//! cargo run --release -p facsimile-server --example ws_bench                  # paced by acknowledgements
//! cargo run --release -p facsimile-server --example ws_bench -- --observed    # paced as bench/ws is
//! cargo run --release -p facsimile-server --example ws_bench -- --tcp      # TCP clients instead
//! cargo run --release -p facsimile-server --example ws_bench -- --quick
//! ```
//!
//! The relay runs in this process with its data on disk (every batch
//! fsync'd before it is forwarded or acknowledged), beside the clients and
//! an observer, each a node on its own WebSocket. Each client writes
//! 64-byte strings into its own key of the root map; every 100 writes it
//! waits until the relay acknowledged them (by default) or, with
//! `--observed`, until the observer has its latest write (the only pacing
//! a server without acknowledgements allows, which `bench/ws` uses). Every
//! write reaches every other client and the observer; latency is from the
//! write call to the observer's change event.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use facsimile::net::protocol::{ClientHello, Down, PROTOCOL_VERSION, ServerHello, Up};
use facsimile::{Node, Origin, Value};
use facsimile_server::{Server, ServerConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

const PAYLOAD: usize = 64;
/// A run that delivers nothing for this long has stalled.
const STALL: Duration = Duration::from_secs(30);

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let observed = std::env::args().any(|a| a == "--observed");
    let tcp = std::env::args().any(|a| a == "--tcp");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = std::env::temp_dir().join(format!("facsimile-ws-bench-{}", std::process::id()));
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
        println!("clients: {}", if tcp { "TCP" } else { "WebSocket" });
        println!(
            "pacing: {}",
            if observed {
                "every 100 writes, until the observer has the latest"
            } else {
                "every 100 writes, until the relay acknowledged them"
            }
        );
        println!("\n| clients | writes | writes/s | deliveries/s | p50 latency | p99 latency |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for clients in [1usize, 4, 16] {
            let f = throughput(&addr, clients, total / clients as u64, observed, tcp).await;
            println!(
                "| {clients} | {} | {:.0} | {:.0} | {:.2} ms | {:.2} ms |",
                f.writes,
                f.writes as f64 / f.secs,
                f.delivered as f64 / f.secs,
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3
            );
        }
        let _ = stop.send(());
        let _ = relay.await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// One write: the time it was made, in nanoseconds since `epoch`, padded
/// to 64 bytes.
fn stamped(epoch: Instant) -> String {
    let ts = epoch.elapsed().as_nanos() as u64;
    format!("{ts:>20}:{:x<pad$}", "", pad = PAYLOAD - 21)
}

struct Figures {
    writes: u64,
    secs: f64,
    delivered: u64,
    p50: Duration,
    p99: Duration,
}

async fn throughput(
    addr: &str,
    clients: usize,
    per_client: u64,
    observed: bool,
    tcp: bool,
) -> Figures {
    let doc = format!("ws-bench-{clients}-{}-{}", observed as u8, tcp as u8);
    let epoch = Instant::now();
    let observer = Client::connect(addr, &doc, "observer", tcp).await;
    observer.node().set_root(json!({})).unwrap();
    observer.flush().await;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(
        (clients as u64 * per_client) as usize,
    )));
    let delivered = Arc::new(AtomicU64::new(0));
    let observed_change = Arc::new(Notify::new());
    let _observe = {
        let latencies = latencies.clone();
        let delivered = delivered.clone();
        let observed_change = observed_change.clone();
        observer.node().on_change(move |ev| {
            observed_change.notify_waiters();
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
        let c = Client::connect(addr, &doc, &format!("client-{i:02}"), tcp).await;
        let delivered = delivered.clone();
        subs.push(c.node().on_change(move |ev| {
            if matches!(ev.origin(), Origin::Remote(_)) {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }));
        conns.push(Arc::new(c));
    }
    let expected = clients as u64 * per_client * clients as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        let conn = c.clone();
        let watcher = observer.node().clone();
        let observed_change = observed_change.clone();
        tasks.push(tokio::spawn(async move {
            let root = conn.node().root_map().unwrap();
            let key = format!("c{i}");
            for j in 0..per_client {
                let value = stamped(epoch);
                root.set(&key, value.clone()).unwrap();
                if j % 100 == 99 || j + 1 == per_client {
                    if observed {
                        let seen = || {
                            matches!(watcher.get(&format!("/{key}")),
                                Some(Value::String(s)) if s == value.as_str())
                        };
                        loop {
                            let change = observed_change.notified();
                            if seen() {
                                break;
                            }
                            change.await;
                        }
                    } else {
                        conn.flush().await;
                    }
                }
            }
        }));
    }
    let mut progress = (0, Instant::now());
    loop {
        let n = delivered.load(Ordering::Relaxed);
        if n >= expected && tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        if n > progress.0 {
            progress = (n, Instant::now());
        }
        assert!(
            progress.1.elapsed() < STALL,
            "{clients} clients: stalled at {n} of {expected} deliveries"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let pick = |q: f64| Duration::from_nanos(lat[((lat.len() - 1) as f64 * q) as usize]);
    drop(subs);
    Figures {
        writes: clients as u64 * per_client,
        secs,
        delivered: delivered.load(Ordering::Relaxed),
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

/// A benchmark client: over WebSocket, or the TCP client for comparison.
enum Client {
    Ws(WsClient),
    Tcp(facsimile::net::Connection),
}

impl Client {
    async fn connect(addr: &str, doc: &str, hostname: &str, tcp: bool) -> Client {
        if tcp {
            let options = facsimile::net::ConnectOptions::new(doc);
            Client::Tcp(
                facsimile::net::connect(addr, hostname, options)
                    .await
                    .unwrap(),
            )
        } else {
            Client::Ws(WsClient::connect(addr, doc, hostname).await)
        }
    }

    fn node(&self) -> &Node {
        match self {
            Client::Ws(c) => &c.node,
            Client::Tcp(c) => c.node(),
        }
    }

    async fn flush(&self) {
        match self {
            Client::Ws(c) => c.flush().await,
            Client::Tcp(c) => c.flush().await.unwrap(),
        }
    }
}

/// A node on the relay over one WebSocket: each protocol frame one binary
/// message. It does not reconnect (a benchmark run has no failures).
struct WsClient {
    node: Node,
    /// Frames sent and not yet acknowledged.
    unacked: Arc<Mutex<VecDeque<Bytes>>>,
    acked: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl WsClient {
    async fn connect(addr: &str, doc: &str, hostname: &str) -> WsClient {
        let node = Node::new(hostname);
        let unacked = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        {
            let unacked = unacked.clone();
            node.set_sender(move |out| {
                let bytes = Bytes::copy_from_slice(out.as_bytes());
                let frame = match out.to() {
                    None => Up::Broadcast(bytes),
                    Some(tag) => Up::To(tag, bytes),
                }
                .encode();
                unacked.lock().unwrap().push_back(frame.clone());
                let _ = tx.send(frame);
            });
        }
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
            .await
            .unwrap();
        let hello = ClientHello {
            protocol: PROTOCOL_VERSION,
            document: doc.into(),
            token: String::new(),
            hostname: hostname.into(),
            incarnation: node.peer_id().incarnation(),
            resume: None,
            read_only: false,
        };
        ws.send(Message::Binary(hello.encode())).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => match Down::decode(b).unwrap() {
                Down::Hello(ServerHello::Welcome { .. }) => {}
                other => panic!("expected a welcome, got {other:?}"),
            },
            other => panic!("expected a welcome, got {other:?}"),
        }
        let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
        let ready = node.on_ready(move |_| {
            let _ = ready_tx.send(true);
        });
        node.sync();
        let acked = Arc::new(Notify::new());
        let task = {
            let (node, unacked, acked) = (node.clone(), unacked.clone(), acked.clone());
            let (mut sink, mut stream) = ws.split();
            tokio::spawn(async move {
                let write = async {
                    while let Some(frame) = rx.recv().await {
                        sink.feed(Message::Binary(frame)).await.unwrap();
                        while let Ok(frame) = rx.try_recv() {
                            sink.feed(Message::Binary(frame)).await.unwrap();
                        }
                        sink.flush().await.unwrap();
                    }
                };
                let read = async {
                    let mut done = 0u64;
                    let mut ticks = tokio::time::interval(Duration::from_millis(100));
                    loop {
                        let msg = tokio::select! {
                            m = stream.next() => m,
                            _ = ticks.tick() => { node.tick(); continue; }
                        };
                        let Some(Ok(Message::Binary(b))) = msg else {
                            return;
                        };
                        match Down::decode(b).unwrap() {
                            Down::Message { bytes, .. } | Down::Direct(bytes) => {
                                let _ = node.receive(&bytes);
                            }
                            Down::Ack(n) => {
                                unacked.lock().unwrap().drain(..(n - done) as usize);
                                done = n;
                                acked.notify_waiters();
                            }
                            Down::Hello(_) => panic!("a second hello"),
                            Down::Closing(reason) => panic!("the relay closed: {reason}"),
                        }
                    }
                };
                tokio::select! {
                    () = write => {}
                    () = read => {}
                }
            })
        };
        while !node.is_ready() {
            ready_rx.changed().await.unwrap();
        }
        drop(ready);
        WsClient {
            node,
            unacked,
            acked,
            task,
        }
    }

    /// Waits until the relay acknowledged every frame sent so far.
    async fn flush(&self) {
        loop {
            let acked = self.acked.notified();
            if self.unacked.lock().unwrap().is_empty() {
                return;
            }
            acked.await;
        }
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}
