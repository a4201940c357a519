//! A relay child process, temporary directories and waiting helpers.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use facsimile::net::{self, ConnectOptions, Connection};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_facsimile");
pub(crate) const TOKEN: &str = "test-token";

/// A directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "facsimile-it-{name}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `facsimile serve` child process; killed (SIGKILL) on drop.
pub(crate) struct Relay {
    child: Child,
    pub(crate) addr: String,
    pub(crate) log: PathBuf,
    data: PathBuf,
    extra: Vec<String>,
}

impl Relay {
    /// Starts a relay on a free port with its data in `dir/data` and its
    /// log in `dir/relay.log`.
    pub(crate) fn start(dir: &TempDir, extra: &[&str]) -> Relay {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Relay::spawn(
            dir.path().join("data"),
            "127.0.0.1:0",
            dir.path().join("relay.log"),
            extra,
        )
    }

    fn spawn(data: PathBuf, listen: &str, log: PathBuf, extra: Vec<String>) -> Relay {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", listen, "--token", TOKEN, "--data"])
            .arg(&data)
            .args(&extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("the facsimile binary runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("facsimile relay listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; relay log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Relay {
            child,
            addr,
            log,
            data,
            extra,
        }
    }

    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same address and data directory.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let next = Relay::spawn(
            self.data.clone(),
            &self.addr.clone(),
            self.log.clone(),
            self.extra.clone(),
        );
        drop(std::mem::replace(self, next));
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn options() -> ConnectOptions {
    ConnectOptions::new("default")
        .token(TOKEN)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .timeouts(Duration::from_secs(10), Duration::from_secs(20))
}

pub(crate) async fn connect(relay: &Relay, name: &str) -> Connection {
    net::connect(&relay.addr, name, options())
        .await
        .unwrap_or_else(|e| panic!("{name} connects: {e}\nrelay log:\n{}", relay.log_text()))
}

/// Polls `cond` until it holds; panics with `what` after `timeout`.
pub(crate) async fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    wait_until_or(what, timeout, cond, String::new).await;
}

/// As [`wait_until`], adding `context()` (what was seen instead, a log) to
/// the panic message.
pub(crate) async fn wait_until_or(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let started = Instant::now();
    while !cond() {
        if started.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every node holds the same document.
pub(crate) async fn converge(nodes: &[&facsimile::Node]) {
    wait_until("the nodes to converge", Duration::from_secs(30), || {
        let first = nodes[0].snapshot();
        nodes[1..].iter().all(|n| n.snapshot() == first)
    })
    .await;
}

/// Runs the facsimile command to completion.
pub(crate) fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("FACSIMILE_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("the facsimile binary runs")
}

/// Runs the facsimile command to completion with its default log level,
/// so that stderr holds only what the user is told.
pub(crate) fn run_quiet(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("FACSIMILE_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("the facsimile binary runs")
}

/// A nats-server with JetStream (`$NATS_SERVER`, else on the `PATH`), its
/// store in `dir`; killed when dropped.
pub(crate) struct NatsServer {
    child: Child,
    pub(crate) url: String,
}

impl NatsServer {
    pub(crate) fn start(dir: &TempDir) -> NatsServer {
        let bin = std::env::var_os("NATS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 256MB }}\n",
                dir.path().join("js").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {bin:?} ({e}); run scripts/test.sh, which installs it")
            });
        // Read the log to its end on a thread of its own: a server whose
        // stderr is closed dies on its next log line.
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("Server is ready") {
                    let _ = ready.send(());
                }
            }
        });
        started
            .recv_timeout(Duration::from_secs(30))
            .expect("nats-server did not become ready");
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
