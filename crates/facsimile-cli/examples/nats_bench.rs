//! NATS JetStream benchmark: the relay benchmark's workload (throughput
//! and latency with 1, 4 and 16 clients on loopback) with the document on
//! a nats-server instead of the relay.
//!
//! ```sh
//! cargo run --release -p facsimile-cli --example nats_bench            # full run
//! cargo run --release -p facsimile-cli --example nats_bench -- --quick # smaller
//! cargo run --release -p facsimile-cli --example nats_bench -- --snapshot-every 100000
//! ```
//!
//! The benchmark starts one nats-server with JetStream on a free loopback
//! port, its store in a temporary directory, and stops it at the end. The
//! binary is `$NATS_SERVER`, else the one `scripts/test.sh` installs into
//! `target/nats-venv`, else `nats-server` on the `PATH`. The clients and
//! the observer run in this process, as with `relay_bench`.
//!
//! The connections use the default options, so a snapshot of the document
//! is saved every 1,000 messages (`NatsOptions::snapshot_every`);
//! `--snapshot-every N` sets another interval.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use facsimile::net::NatsOptions;

mod workload;

/// How long nats-server may take to start.
const STARTUP: Duration = Duration::from_secs(30);

fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    let installed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/nats-venv/bin/nats-server");
    if installed.is_file() {
        return installed;
    }
    PathBuf::from("nats-server")
}

/// A nats-server with JetStream, killed and its store removed on drop.
struct NatsServer {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl NatsServer {
    fn start() -> NatsServer {
        let dir = workload::temp_dir("nats");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: \"{}\", max_memory_store: 64MB, max_file_store: 1GB }}\n",
                dir.join("js").display()
            ),
        )
        .unwrap();
        let binary = nats_server_binary();
        let mut child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "starting {}: {e} (run scripts/test.sh, which installs nats-server, \
                     or set NATS_SERVER)",
                    binary.display()
                )
            });
        // The server logs to stderr: read it to the end, so that it never
        // blocks on a full pipe, and say when it is ready.
        let stderr = child.stderr.take().unwrap();
        let (ready, is_ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Server is ready") {
                    let _ = ready.send(());
                }
            }
        });
        let server = NatsServer {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        };
        is_ready
            .recv_timeout(STARTUP)
            .expect("nats-server did not become ready");
        server
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let snapshot_every: Option<u64> = args.iter().position(|a| a == "--snapshot-every").map(|i| {
        args.get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--snapshot-every takes a number of messages")
    });
    let options = move |doc: &str| {
        let options = workload::options(doc);
        match snapshot_every {
            Some(n) => options.nats(NatsOptions::new().snapshot_every(n)),
            None => options,
        }
    };
    let server = NatsServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(workload::table(
        &server.url,
        &options,
        if quick { 4_000 } else { 32_000 },
    ));
}
