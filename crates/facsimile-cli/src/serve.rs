//! `facsimile serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use facsimile::net::protocol::DEFAULT_HEARTBEAT;
use facsimile_server::{DataDirInUse, Server, ServerConfig};

use crate::Failure;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on, for TCP and WebSocket (ws://, wss:// with
    /// TLS) clients alike (port 0 picks a free port; the address is printed
    /// on stdout).
    #[arg(long, default_value = facsimile_server::DEFAULT_LISTEN, value_name = "ADDR")]
    listen: SocketAddr,
    /// Where documents are stored: one directory per document holding a
    /// snapshot and a log.
    #[arg(long, default_value = "facsimile-data", value_name = "DIR")]
    data: PathBuf,
    /// Keep nothing on disk (a restart loses every document).
    #[arg(long, conflicts_with = "data")]
    ephemeral: bool,
    /// The shared token clients must present; without one anybody who can
    /// reach the port may connect.
    #[arg(long, env = "FACSIMILE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Serve TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The largest frame accepted or sent, in bytes; a document's whole
    /// state must fit in one to reach a joiner.
    #[arg(long, default_value_t = facsimile::net::protocol::DEFAULT_MAX_FRAME, value_name = "BYTES", value_parser = crate::frame_bytes)]
    max_frame: usize,
    /// At most this many connections at once.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_clients: usize,
    /// At most this many documents open at once (each holds a thread and
    /// its state in memory); a client asking for another is refused until
    /// one closes (--close-idle).
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_documents: usize,
    /// Bytes queued for one client before it is cut off as too slow.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    max_queue: usize,
    /// Bytes of its clients' frames a document holds at once, waiting or
    /// being committed; a client's reading pauses while its frame does not
    /// fit (default: four times --max-frame).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    document_queue: Option<u64>,
    /// Log size, in bytes, past which a document's snapshot is rewritten
    /// and its log emptied.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    compact_bytes: u64,
    /// Evict a node not heard from for this many seconds (nodes send a
    /// heartbeat every second when idle, so at least 3).
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = peer_timeout)]
    peer_timeout: Duration,
    /// Keep a node whose connection broke a member for this many seconds,
    /// waiting for it to reconnect with its writes and locks (0: evict it
    /// at once; at most --peer-timeout has any effect).
    #[arg(long, default_value = "0", value_name = "SECS", value_parser = crate::secs)]
    reconnect_grace: Duration,
    /// Close a document this many seconds after its last client left,
    /// freeing its thread and memory; it opens again from disk when a
    /// client asks for it (0: keep documents open; with --ephemeral they
    /// always stay open).
    #[arg(long, default_value = "60", value_name = "SECS", value_parser = crate::secs)]
    close_idle: Duration,
    /// The JavaScript package's browser build (`js/dist`) that the
    /// inspector pages run on (default: the source tree's, as built by
    /// `cd js && npm ci && npm run build`).
    #[arg(long, value_name = "DIR", default_value = facsimile_server::DEFAULT_INSPECTOR_ASSETS, hide_default_value = true)]
    inspector_assets: PathBuf,
}

/// The shortest peer timeout taken: three heartbeats of a client at its
/// default pace, so that one late or lost heartbeat costs no healthy node
/// its place. The relay cannot know a client's pace; the default is what
/// the CLI's clients and the library's use unless told otherwise.
const MIN_PEER_TIMEOUT: Duration = DEFAULT_HEARTBEAT.saturating_mul(3);

/// `--peer-timeout`: a number of seconds, at least [`MIN_PEER_TIMEOUT`].
fn peer_timeout(arg: &str) -> Result<Duration, String> {
    let timeout = crate::secs(arg)?;
    if timeout < MIN_PEER_TIMEOUT {
        return Err(format!(
            "{arg} seconds would evict healthy nodes, which send a heartbeat every {:?} \
             when idle: give at least {} seconds (three heartbeats)",
            DEFAULT_HEARTBEAT,
            MIN_PEER_TIMEOUT.as_secs_f64()
        ));
    }
    Ok(timeout)
}

pub(crate) async fn run(args: ServeArgs) -> Result<(), Failure> {
    let mut config = ServerConfig::default()
        .listen(args.listen)
        .max_frame(args.max_frame)
        .max_clients(args.max_clients.max(1))
        .max_documents(args.max_documents)
        .client_queue(args.max_queue)
        .compact_bytes(args.compact_bytes)
        .inspector_assets(&args.inspector_assets)
        // The relay beats at the clients' pace: the timeout is at least
        // three of its heartbeats too.
        .failure_detection(DEFAULT_HEARTBEAT, args.peer_timeout)
        .reconnect_grace(args.reconnect_grace)
        .close_idle((!args.close_idle.is_zero()).then_some(args.close_idle));
    if let Some(bytes) = args.document_queue {
        config = config.document_queue(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    config = if args.ephemeral {
        config.ephemeral()
    } else {
        config.data_dir(&args.data)
    };
    match &args.token {
        // A hello carries the token; one that cannot fit in a frame would
        // have every client refused.
        Some(t) if t.len() > args.max_frame - crate::MIN_FRAME => {
            return Err(Failure(format!(
                "--token is too long for --max-frame {} (at most {} bytes)",
                args.max_frame,
                args.max_frame - crate::MIN_FRAME
            )));
        }
        Some(t) if !t.is_empty() => config = config.token(t.clone()),
        _ => tracing::warn!("no --token: anybody who can reach the port may connect"),
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = facsimile_server::tls::load(cert, key)
            .map_err(|e| Failure(format!("cannot load the TLS certificate or key: {e}")))?;
        config = config.tls(tls);
    }
    let server = Server::bind(config).await.map_err(|e| {
        let in_use = e.get_ref().and_then(|e| e.downcast_ref::<DataDirInUse>());
        match (in_use, e.kind()) {
            (Some(in_use), _) => Failure(format!("cannot start the relay: {in_use}")),
            (None, std::io::ErrorKind::AddrInUse) => Failure(format!(
                "cannot start the relay on {}: {e} (is another relay using the port?)",
                args.listen
            )),
            (None, _) => Failure(format!("cannot start the relay on {}: {e}", args.listen)),
        }
    })?;
    let addr = server
        .local_addr()
        .map_err(|e| Failure(format!("cannot read the listening address: {e}")))?;
    println!("facsimile relay listening on {addr}");
    tracing::info!(
        %addr,
        data = %if args.ephemeral { "(none)".to_string() } else { args.data.display().to_string() },
        tls = args.tls_cert.is_some(),
        "relay started"
    );
    server
        .run_until(shutdown_signal())
        .await
        .map_err(|e| Failure(format!("the relay stopped: {e}")))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
