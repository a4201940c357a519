//! The listener and the per-connection tasks.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use facsimile::net::protocol::{ClientHello, Down, PROTOCOL_VERSION, ServerHello};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::document::{Cmd, ConnId, Doc, Outbox, QUEUE_FRAMES, Recovery};

/// How often each document's timers run.
const TICK: Duration = Duration::from_millis(100);

/// The relay: accepts nodes, orders and stores each document's messages and
/// passes them to the document's other nodes.
///
/// ```no_run
/// use facsimile_server::{Server, ServerConfig};
///
/// # async fn run() -> std::io::Result<()> {
/// let server = Server::bind(ServerConfig::default().token("s3cret")).await?;
/// println!("listening on {}", server.local_addr()?);
/// server.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await
/// # }
/// ```
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    config: Arc<ServerConfig>,
    docs: Mutex<HashMap<String, mpsc::Sender<Cmd>>>,
    /// Held while a document opens: two recoveries of one directory would
    /// both write to its log.
    opening: Mutex<()>,
    limit: Arc<Semaphore>,
    next_conn: AtomicU64,
    connections: AtomicUsize,
    /// Cancelled when the server stops: connections close without evicting
    /// anybody (as after a crash, nodes resume when a relay is back).
    stopping: CancellationToken,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Server {
    /// Binds the listening socket and opens every document found in the
    /// data directory (recovering each from its snapshot and log).
    ///
    /// # Errors
    /// When the address cannot be bound or a document cannot be recovered.
    pub async fn bind(config: ServerConfig) -> io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let config = Arc::new(config);
        let shared = Arc::new(Shared {
            limit: Arc::new(Semaphore::new(config.max_clients)),
            config,
            docs: Mutex::new(HashMap::new()),
            opening: Mutex::new(()),
            next_conn: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            stopping: CancellationToken::new(),
            threads: Mutex::new(Vec::new()),
        });
        if let Some(dir) = shared.config.data.clone() {
            std::fs::create_dir_all(&dir).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create the data directory {}: {e}", dir.display()),
                )
            })?;
            let mut names: Vec<String> = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("log").exists() || e.path().join("snapshot").exists())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| valid_name(n))
                .collect();
            names.sort();
            for name in names {
                let shared = shared.clone();
                tokio::task::spawn_blocking(move || shared.open_doc(&name))
                    .await
                    .map_err(io::Error::other)??;
            }
        }
        Ok(Server { listener, shared })
    }

    /// The address the relay listens on.
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process ends.
    ///
    /// # Errors
    /// When accepting connections fails for good.
    pub async fn run(self) -> io::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then closes every connection and
    /// waits for the documents' threads to finish their last batch. Nothing
    /// else needs flushing: every acknowledged message is already on disk.
    /// Nodes are not evicted by a shutdown; they resume when a relay is back
    /// on the same data.
    ///
    /// # Errors
    /// When accepting connections fails for good.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        tokio::pin!(shutdown);
        let tls = self
            .shared
            .config
            .tls
            .clone()
            .map(tokio_rustls::TlsAcceptor::from);
        loop {
            let (stream, addr) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => {
                    tracing::info!("shutting down");
                    self.shared.stop().await;
                    return Ok(());
                }
            };
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let permit = shared.limit.clone().try_acquire_owned().ok();
                let timeout = shared.config.handshake_timeout;
                let stream: Box<dyn Stream> = match tls {
                    None => Box::new(stream),
                    Some(acceptor) => {
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => Box::new(s),
                            Ok(Err(e)) => {
                                tracing::warn!(%addr, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::warn!(%addr, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                shared.connections.fetch_add(1, Ordering::AcqRel);
                handle(shared.clone(), stream, addr, permit.is_some()).await;
                shared.connections.fetch_sub(1, Ordering::AcqRel);
                drop(permit);
            });
        }
    }
}

impl Shared {
    async fn stop(&self) {
        self.stopping.cancel();
        self.docs.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// Opens a document's thread and its timer, once; returns its channel
    /// when it is recovered.
    fn open_doc(self: &Arc<Self>, name: &str) -> io::Result<mpsc::Sender<Cmd>> {
        let _opening = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = self
            .docs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(tx.clone());
        }
        let dir = self.config.data.as_ref().map(|d| d.join(name));
        let started = std::time::Instant::now();
        let (doc, recovery): (Doc, Recovery) = Doc::open(name, dir, self.config.clone())?;
        if recovery.replayed > 0 || recovery.from_snapshot {
            tracing::info!(
                doc = name,
                replayed = recovery.replayed,
                position = recovery.position,
                took = ?started.elapsed(),
                "document recovered"
            );
        }
        let mut docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        let (tx, rx) = mpsc::channel(4096);
        let thread = std::thread::Builder::new()
            .name(format!("doc-{name}"))
            .spawn(move || doc.run(rx))?;
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(thread);
        let ticks = tx.clone();
        let stopping = self.stopping.clone();
        tokio::runtime::Handle::current().spawn(async move {
            let mut every = tokio::time::interval(TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stopping.cancelled() => return,
                }
                // A busy document (full channel) gets its tick later.
                if let Err(mpsc::error::TrySendError::Closed(_)) = ticks.try_send(Cmd::Tick) {
                    return;
                }
            }
        });
        docs.insert(name.to_string(), tx.clone());
        Ok(tx)
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Document names become directory names.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && !name.starts_with('.')
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// One connection: handshake, then frames in to the document and frames
/// out from its queue.
async fn handle(shared: Arc<Shared>, stream: Box<dyn Stream>, addr: SocketAddr, admitted: bool) {
    let config = shared.config.clone();
    let (r, w) = tokio::io::split(stream);
    let mut reader = FramedRead::new(r, codec(config.max_frame));
    let mut writer = FramedWrite::new(w, codec(config.max_frame));
    let refuse = |reason: String| Down::Hello(ServerHello::Refused { reason }).encode();
    if !admitted {
        tracing::warn!(%addr, limit = config.max_clients, "connection refused: at the connection limit");
        let _ = writer
            .send(refuse(format!(
                "the relay is at its connection limit ({}); retry later",
                config.max_clients
            )))
            .await;
        return;
    }
    let hello = match tokio::time::timeout(config.handshake_timeout, reader.next()).await {
        Ok(Some(Ok(frame))) => ClientHello::decode(&frame),
        Ok(Some(Err(e))) => {
            tracing::warn!(%addr, error = %e, "connection closed: bad first frame");
            return;
        }
        Ok(None) => return,
        Err(_) => {
            tracing::warn!(%addr, "connection closed: no hello in time");
            return;
        }
    };
    let hello = match hello {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "connection refused: not a facsimile hello");
            let _ = writer
                .send(refuse(
                    "the first frame is not a facsimile hello; is this a facsimile client?".into(),
                ))
                .await;
            return;
        }
    };
    let expected = config.token.as_deref().unwrap_or("");
    let refusal = if hello.protocol != PROTOCOL_VERSION {
        Some(format!(
            "protocol version {} is not supported (the relay speaks {PROTOCOL_VERSION}); \
             use matching versions of facsimile",
            hello.protocol
        ))
    } else if config.token.is_some() && !same_secret(hello.token.as_bytes(), expected.as_bytes()) {
        Some("wrong token: pass the relay's --token (or set FACSIMILE_TOKEN)".into())
    } else if !valid_name(&hello.document) {
        Some(format!(
            "document name {:?} is not allowed: use 1 to 128 letters, digits, '.', '_' or '-', \
             not starting with '.'",
            hello.document
        ))
    } else {
        None
    };
    if let Some(reason) = refusal {
        tracing::warn!(%addr, peer = %hello.hostname, doc = %hello.document, %reason, "connection refused");
        let _ = writer.send(refuse(reason)).await;
        return;
    }
    let doc = {
        let shared = shared.clone();
        let name = hello.document.clone();
        tokio::task::spawn_blocking(move || shared.open_doc(&name)).await
    };
    let doc = match doc {
        Ok(Ok(tx)) => tx,
        Ok(Err(e)) => {
            tracing::error!(%addr, doc = %hello.document, error = %e, "cannot open document");
            let _ = writer
                .send(refuse(format!(
                    "the relay cannot open document {:?}; see the relay's log",
                    hello.document
                )))
                .await;
            return;
        }
        Err(_) => return,
    };
    let conn: ConnId = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
    let queued = Arc::new(AtomicUsize::new(0));
    let cancel = CancellationToken::new();
    let out = Outbox {
        tx,
        queued: queued.clone(),
        cancel: cancel.clone(),
    };
    if doc
        .send(Cmd::Join {
            conn,
            hello,
            addr,
            out,
        })
        .await
        .is_err()
    {
        return;
    }
    let writing = tokio::spawn(write_frames(writer, rx, queued, cancel.clone()));
    let reason = loop {
        let frame = tokio::select! {
            f = reader.next() => f,
            _ = cancel.cancelled() => break None,
            _ = shared.stopping.cancelled() => break None,
        };
        match frame {
            Some(Ok(frame)) => {
                let cmd = Cmd::Frame {
                    conn,
                    frame: frame.freeze(),
                };
                // Waiting here when the document is busy slows the client
                // down through TCP: backpressure, not buffering.
                tokio::select! {
                    r = doc.send(cmd) => if r.is_err() { break Some("the document closed".into()) },
                    _ = cancel.cancelled() => break None,
                    _ = shared.stopping.cancelled() => break None,
                }
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                break Some(format!(
                    "bad frame ({e}); frames are limited to {} bytes (--max-frame)",
                    config.max_frame
                ));
            }
            Some(Err(e)) => break Some(format!("read error: {e}")),
            None => break Some("closed by the client".into()),
        }
    };
    if let Some(reason) = reason {
        let _ = doc.send(Cmd::Leave { conn, reason }).await;
    }
    cancel.cancel();
    let _ = writing.await;
}

/// Writes a client's queued frames, in order, batching flushes.
async fn write_frames(
    mut writer: FramedWrite<tokio::io::WriteHalf<Box<dyn Stream>>, LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
    cancel: CancellationToken,
) {
    let write = async {
        while let Some(frame) = rx.recv().await {
            let mut frame = Some(frame);
            while let Some(f) = frame.take() {
                let len = f.len();
                writer.feed(f).await?;
                queued.fetch_sub(len, Ordering::AcqRel);
                frame = rx.try_recv().ok();
            }
            SinkExt::<Bytes>::flush(&mut writer).await?;
        }
        // The document dropped the client after a refusal: end cleanly.
        writer.get_mut().shutdown().await
    };
    tokio::select! {
        r = write => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "write failed");
            }
            cancel.cancel();
        }
        _ = cancel.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"", b""));
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn document_names_are_safe_directory_names() {
        for ok in ["default", "a", "inventory-2024", "x.y_z"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
