//! The tokio client of the relay: one background task per connected node.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use facsimile_core::Config;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::protocol::{
    ClientHello, DEFAULT_MAX_FRAME, Down, PROTOCOL_VERSION, Resume, ServerHello, Up,
};
use super::tls::TlsOptions;
use crate::node::{Inner, Node, Outgoing};

/// A relay peer is never evicted by a client on its own: with a relay the
/// transport decides who left, so clients only send heartbeats.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How often the background task runs the node's timers.
const TICK: Duration = Duration::from_millis(50);

/// How to reach a relay and how to behave on the connection.
///
/// ```
/// use std::time::Duration;
/// use facsimile::net::ConnectOptions;
///
/// let options = ConnectOptions::new("inventory")
///     .token("s3cret")
///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(5));
/// ```
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub(crate) document: String,
    pub(crate) token: String,
    pub(crate) tls: Option<TlsOptions>,
    pub(crate) max_frame: usize,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) peer_timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) sync_timeout: Duration,
    pub(crate) config: Config,
    pub(crate) lease: Duration,
    pub(crate) snapshot_every: u64,
    pub(crate) stream_replicas: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions::new("default")
    }
}

impl ConnectOptions {
    /// Options for one document of the relay, with the defaults: no token,
    /// no TLS, 16 MiB frames, reconnection after 100 ms doubling up to
    /// 10 s, a heartbeat every second.
    ///
    /// ```
    /// let options = facsimile::net::ConnectOptions::new("default");
    /// ```
    pub fn new(document: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            document: document.into(),
            token: String::new(),
            tls: None,
            max_frame: DEFAULT_MAX_FRAME,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            heartbeat: Duration::from_secs(1),
            peer_timeout: None,
            connect_timeout: Duration::from_secs(10),
            sync_timeout: Duration::from_secs(30),
            config: Config::default(),
            lease: Duration::from_secs(5),
            snapshot_every: 1000,
            stream_replicas: 1,
        }
    }

    /// The shared token the relay expects (`facsimile serve --token`).
    ///
    /// ```
    /// let options = facsimile::net::ConnectOptions::new("doc").token("s3cret");
    /// ```
    pub fn token(mut self, token: impl Into<String>) -> ConnectOptions {
        self.token = token.into();
        self
    }

    /// Connects with TLS.
    ///
    /// ```no_run
    /// use facsimile::net::{ConnectOptions, TlsOptions};
    /// let options = ConnectOptions::new("doc").tls(TlsOptions::from_ca_file("relay.pem")?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tls(mut self, tls: TlsOptions) -> ConnectOptions {
        self.tls = Some(tls);
        self
    }

    /// The largest frame accepted from the relay (default 16 MiB). The
    /// whole document arrives in one frame when the node syncs.
    ///
    /// ```
    /// let options = facsimile::net::ConnectOptions::new("doc").max_frame(64 << 20);
    /// ```
    pub fn max_frame(mut self, bytes: usize) -> ConnectOptions {
        self.max_frame = bytes;
        self
    }

    /// Waits `min` before the first reconnection attempt, doubling up to
    /// `max` while attempts fail (with jitter). Over NATS the first attempt
    /// is immediate, and no wait exceeds a quarter of the lease.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = facsimile::net::ConnectOptions::new("doc")
    ///     .reconnect_backoff(Duration::from_millis(20), Duration::from_secs(1));
    /// ```
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> ConnectOptions {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// Failure detection: send a heartbeat when the node sent nothing for
    /// `heartbeat` (default one second), so the relay can tell a silent
    /// node from a live one. With `peer_timeout`, the node also evicts
    /// peers it has not heard from for that long; by default it leaves that
    /// to the relay, which knows who is connected.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = facsimile::net::ConnectOptions::new("doc")
    ///     .failure_detection(Duration::from_millis(500), None);
    /// ```
    pub fn failure_detection(
        mut self,
        heartbeat: Duration,
        peer_timeout: Option<Duration>,
    ) -> ConnectOptions {
        self.heartbeat = heartbeat;
        self.peer_timeout = peer_timeout;
        self
    }

    /// How long [`connect`] waits for the TCP and TLS handshakes (default
    /// 10 s) and for the document (default 30 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = facsimile::net::ConnectOptions::new("doc")
    ///     .timeouts(Duration::from_secs(2), Duration::from_secs(10));
    /// ```
    pub fn timeouts(mut self, connect: Duration, sync: Duration) -> ConnectOptions {
        self.connect_timeout = connect;
        self.sync_timeout = sync;
        self
    }

    /// Engine settings of the node (its failure detection and message size
    /// limit are set from these options).
    ///
    /// ```
    /// use facsimile::{Config, WireFormat};
    /// let options = facsimile::net::ConnectOptions::new("doc")
    ///     .config(Config::default().wire_format(WireFormat::Json));
    /// ```
    pub fn config(mut self, config: Config) -> ConnectOptions {
        self.config = config;
        self
    }

    /// Over NATS: how long a node's locks and membership outlive its last
    /// message in the stream, by the server's timestamps (default 5 s).
    /// Nodes send a heartbeat every third of it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = facsimile::net::ConnectOptions::new("doc").lease(Duration::from_secs(2));
    /// ```
    pub fn lease(mut self, lease: Duration) -> ConnectOptions {
        self.lease = lease;
        self
    }

    /// Over NATS: a snapshot of the document is saved once this many
    /// messages followed the last one (default 1,000), and the stream is
    /// purged up to ten times as many messages before it (a node further
    /// behind than that starts over from the snapshot).
    ///
    /// ```
    /// let options = facsimile::net::ConnectOptions::new("doc").snapshot_every(10_000);
    /// ```
    pub fn snapshot_every(mut self, messages: u64) -> ConnectOptions {
        self.snapshot_every = messages.max(1);
        self
    }

    /// Over NATS: how many servers keep each of the document's streams
    /// when this node creates them (default 1; 3 on a cluster of three).
    ///
    /// ```
    /// let options = facsimile::net::ConnectOptions::new("doc").stream_replicas(3);
    /// ```
    pub fn stream_replicas(mut self, replicas: usize) -> ConnectOptions {
        self.stream_replicas = replicas.max(1);
        self
    }
}

/// Why connecting to a relay, or a connection, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The relay could not be reached.
    #[error("could not connect to {addr}: {source}; is `facsimile serve` listening there?")]
    Connect {
        /// The address tried.
        addr: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The relay refused the connection.
    #[error("the relay refused the connection: {0}")]
    Refused(String),
    /// The TLS handshake failed.
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// The address tried.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The relay broke the protocol, or closed the connection during the
    /// handshake.
    #[error("relay protocol error: {0}")]
    Protocol(String),
    /// Something took longer than its timeout.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// Messages were dropped unacknowledged, and their writes are lost:
    /// the relay had evicted this node (it was disconnected or silent too
    /// long), or over NATS the log refused them (the node's lease had run
    /// out, a write raced another node's lock grant, or a message was
    /// larger than the server accepts). The node started over as a new
    /// incarnation where it had to.
    #[error(
        "{0} unacknowledged messages were dropped: this node was evicted, or the log refused them"
    )]
    WritesLost(u64),
    /// The connection was closed.
    #[error("the connection is closed")]
    Closed,
    /// The NATS server could not be reached or refused an operation.
    #[error("NATS: {0}")]
    Nats(String),
}

/// The state of a relay connection, as reported by [`Connection::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Connected: messages flow.
    Connected,
    /// Reconnecting after this error.
    Disconnected(String),
    /// Closed by [`Connection::close`] or [`Connection::abort`].
    Closed,
}

/// A node connected to a relay, with the background task that carries its
/// messages. The task reconnects on errors and ends when the connection is
/// closed or every clone of the node is dropped. Cheap to clone: clones
/// share the connection.
#[derive(Clone, Debug)]
pub struct Connection {
    pub(super) node: Node,
    pub(super) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) link: Mutex<Link>,
    /// Wakes the writer when frames are queued.
    pub(super) queued: Notify,
    /// Wakes flush waiters when frames are acknowledged or dropped.
    pub(super) progress: Notify,
    pub(super) status: watch::Sender<Status>,
    pub(super) rejoins: AtomicU64,
    pub(super) cancel: CancellationToken,
    /// Over a log (NATS): the position up to which the node has read the
    /// log. Its own stored frames count as acknowledged once it has read
    /// them back, so that a write the log refused is not acknowledged.
    pub(super) log_read: watch::Sender<u64>,
}

/// The frames of the node: queued, or sent and not yet acknowledged.
/// Frames complete (acknowledged or dropped) in order, so counters suffice.
#[derive(Debug, Default)]
pub(super) struct Link {
    pub(super) pending: VecDeque<Bytes>,
    pub(super) unacked: VecDeque<Bytes>,
    /// Frames acknowledged on the current connection.
    pub(super) acked_here: u64,
    /// Frames ever queued, and ever completed.
    pub(super) queued: u64,
    pub(super) done: u64,
    /// Frames ever dropped unacknowledged.
    pub(super) dropped: u64,
    /// Over a log (NATS): the highest log position the server gave one of
    /// this connection's frames.
    pub(super) stored_at: u64,
    resume: Option<Resume>,
    pub(super) closed: bool,
}

impl Shared {
    pub(super) fn new() -> Shared {
        Shared {
            link: Mutex::new(Link::default()),
            queued: Notify::new(),
            progress: Notify::new(),
            status: watch::channel(Status::Disconnected("connecting".into())).0,
            rejoins: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            log_read: watch::channel(0).0,
        }
    }

    pub(super) fn link(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn enqueue(&self, frame: Bytes) {
        {
            let mut link = self.link();
            if link.closed {
                return;
            }
            link.queued += 1;
            link.pending.push_back(frame);
        }
        self.queued.notify_one();
    }

    /// Completes the frames up to the `n`-th sent on this connection.
    pub(super) fn ack(&self, n: u64) -> Result<(), String> {
        self.link().ack(n)?;
        self.progress.notify_waiters();
        Ok(())
    }
}

impl Link {
    pub(super) fn ack(&mut self, n: u64) -> Result<(), String> {
        let Some(k) = n.checked_sub(self.acked_here) else {
            return Err(format!("ack {n} goes back from {}", self.acked_here));
        };
        if k as usize > self.unacked.len() {
            return Err(format!(
                "ack of {k} frames, {} outstanding",
                self.unacked.len()
            ));
        }
        self.unacked.drain(..k as usize);
        self.acked_here = n;
        self.done += k;
        Ok(())
    }
}

/// Connects a new node to the relay at `addr` (`host:port`), syncs the
/// document and returns once it is complete.
///
/// The node's messages go to the relay, which orders them, stores them and
/// passes them to the other nodes of the document; the relay's messages
/// reach the node. A background task on the current tokio runtime
/// reconnects with exponential backoff when the connection fails, sends
/// again whatever the relay had not acknowledged, and catches up on what
/// the node missed (or syncs again when the relay can no longer tell).
/// Listeners of the node run on that task: do not block in them.
///
/// # Errors
/// [`NetError::Connect`], [`NetError::Tls`] or [`NetError::Refused`] when
/// the first connection fails (later failures are retried), and
/// [`NetError::Timeout`] when the document does not arrive in time.
///
/// # Example
/// ```no_run
/// use facsimile::net::{self, ConnectOptions};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let conn = net::connect("127.0.0.1:7878", "alice", ConnectOptions::new("default")).await?;
/// let node = conn.node();
/// node.set_path("/greeting", "hello")?;
/// conn.flush().await?; // durable on the relay
/// # Ok(()) }
/// ```
pub async fn connect(
    addr: &str,
    hostname: &str,
    options: ConnectOptions,
) -> Result<Connection, NetError> {
    if addr.starts_with("nats://") {
        #[cfg(feature = "nats")]
        return super::nats::connect(addr, hostname, options).await;
        #[cfg(not(feature = "nats"))]
        return Err(NetError::Protocol(format!(
            "{addr}: facsimile was built without the `nats` feature"
        )));
    }
    let config = options
        .config
        .clone()
        .max_message_size(options.max_frame)
        .failure_detection(options.heartbeat, options.peer_timeout.unwrap_or(NEVER));
    let node = Node::with_config(hostname, config);
    let shared = Arc::new(Shared::new());
    let sink = shared.clone();
    node.set_sender(move |out: Outgoing| {
        let up = match out.to() {
            None => Up::Broadcast(Bytes::copy_from_slice(out.as_bytes())),
            Some(tag) => Up::To(tag, Bytes::copy_from_slice(out.as_bytes())),
        };
        sink.enqueue(up.encode());
    });
    let session = establish(addr, &options, &shared, &node).await?;
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let _ready = node.on_ready(move |_| {
        let _ = ready_tx.send(true);
    });
    // Sync before the first message is read, so nothing is applied to the
    // empty local document.
    node.sync();
    let _ = shared.status.send_replace(Status::Connected);
    tokio::spawn(run(
        addr.to_string(),
        options.clone(),
        shared.clone(),
        node.downgrade(),
        session,
    ));
    tokio::spawn(ticker(shared.clone(), node.downgrade()));
    let synced = async {
        while !node.is_ready() {
            if ready_rx.changed().await.is_err() {
                break;
            }
        }
    };
    if tokio::time::timeout(options.sync_timeout, synced)
        .await
        .is_err()
    {
        shared.cancel.cancel();
        return Err(NetError::Timeout {
            what: "the document (sync)",
            after: options.sync_timeout,
        });
    }
    Ok(Connection { node, shared })
}

impl Connection {
    /// The connected node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Waits until every message the node sent before this call is
    /// acknowledged: applied by the relay and on its disk, or, over NATS,
    /// stored by the stream and read back by the node, which checks that
    /// the log accepted them.
    ///
    /// # Errors
    /// [`NetError::WritesLost`] when some of them were dropped because the
    /// relay had evicted the node or the log refused them;
    /// [`NetError::Closed`] when the connection was closed first.
    pub async fn flush(&self) -> Result<(), NetError> {
        // Messages the node queued but has not handed to the transport yet
        // (a listener's writes, or writes another thread's pump is still
        // sending) are handed over before the target is taken.
        self.node.pump_all();
        let (target, dropped_before) = {
            let link = self.shared.link();
            (link.queued, link.dropped)
        };
        let stored_at = loop {
            let notified = self.shared.progress.notified();
            {
                let link = self.shared.link();
                if link.done >= target {
                    break link.stored_at;
                }
                if link.closed {
                    return Err(NetError::Closed);
                }
            }
            notified.await;
        };
        // Over a log: read back up to the last of them. A refusal found on
        // the way is counted as dropped before the position passes it.
        let mut read = self.shared.log_read.subscribe();
        tokio::select! {
            r = read.wait_for(|&p| p >= stored_at) => {
                if r.is_err() {
                    return Err(NetError::Closed);
                }
            }
            _ = self.shared.cancel.cancelled() => return Err(NetError::Closed),
        }
        let lost = self.shared.link().dropped - dropped_before;
        if lost > 0 {
            Err(NetError::WritesLost(lost))
        } else {
            Ok(())
        }
    }

    /// The connection's state, as a watch channel: `borrow()` for the
    /// current one, `changed()` to wait for the next.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// How many times the node started over as a new incarnation because
    /// the relay had evicted it (its locks were lost then).
    pub fn rejoins(&self) -> u64 {
        self.shared.rejoins.load(Ordering::Acquire)
    }

    /// Leaves the document: says goodbye (the others stop waiting for this
    /// node and its locks are freed at once), waits up to `timeout` for the
    /// relay to acknowledge everything, and closes the connection.
    ///
    /// # Errors
    /// As [`Connection::flush`], and [`NetError::Timeout`].
    pub async fn close(self, timeout: Duration) -> Result<(), NetError> {
        self.node.leave();
        let r = match tokio::time::timeout(timeout, self.flush()).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout {
                what: "the relay to acknowledge the last messages",
                after: timeout,
            }),
        };
        self.shut();
        r
    }

    /// Drops the connection at once, without a goodbye, as a crash would:
    /// the relay evicts the node and frees its locks.
    pub fn abort(self) {
        self.shut();
    }

    fn shut(&self) {
        self.shared.link().closed = true;
        self.shared.cancel.cancel();
        self.shared.progress.notify_waiters();
        let _ = self.shared.status.send_replace(Status::Closed);
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Reader = FramedRead<tokio::io::ReadHalf<Box<dyn Stream>>, LengthDelimitedCodec>;
type Writer = FramedWrite<tokio::io::WriteHalf<Box<dyn Stream>>, LengthDelimitedCodec>;

/// An established connection, after the relay's welcome.
struct Session {
    reader: Reader,
    writer: Writer,
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Opens a connection, says hello and applies the relay's answer to the
/// node and its queue.
async fn establish(
    addr: &str,
    options: &ConnectOptions,
    shared: &Shared,
    node: &Node,
) -> Result<Session, NetError> {
    let connect = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| NetError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &options.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let host = tls.server_name.clone().unwrap_or_else(|| host_of(addr));
                let name = ServerName::try_from(host).map_err(|e| NetError::Tls {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?;
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| NetError::Tls {
                        addr: addr.to_string(),
                        reason: e.to_string(),
                    })?;
                Box::new(stream)
            }
        };
        let (r, w) = tokio::io::split(stream);
        let mut reader = FramedRead::new(r, codec(options.max_frame));
        let mut writer = FramedWrite::new(w, codec(options.max_frame));
        let hello = ClientHello {
            protocol: PROTOCOL_VERSION,
            document: options.document.clone(),
            token: options.token.clone(),
            hostname: node.hostname().to_string(),
            incarnation: node.peer_id().incarnation(),
            resume: shared.link().resume,
        };
        writer
            .send(hello.encode())
            .await
            .map_err(|e| NetError::Protocol(format!("sending the hello: {e}")))?;
        let answer = match reader.next().await {
            Some(Ok(frame)) => {
                Down::decode(frame.freeze()).map_err(|e| NetError::Protocol(e.to_string()))?
            }
            Some(Err(e)) => return Err(NetError::Protocol(format!("reading the welcome: {e}"))),
            None => {
                return Err(NetError::Protocol(
                    "the relay closed the connection during the handshake".into(),
                ));
            }
        };
        match answer {
            Down::Hello(ServerHello::Welcome {
                log,
                position,
                relay: _,
                resumed,
                member,
                evicted,
            }) => Ok((
                Session { reader, writer },
                Welcome {
                    log,
                    position,
                    resumed,
                    member,
                    evicted,
                },
            )),
            Down::Hello(ServerHello::Refused { reason }) => Err(NetError::Refused(reason)),
            other => Err(NetError::Protocol(format!(
                "expected the relay's hello, got {other:?}"
            ))),
        }
    };
    let (session, welcome) = tokio::time::timeout(options.connect_timeout, connect)
        .await
        .map_err(|_| NetError::Timeout {
            what: "the connection to the relay",
            after: options.connect_timeout,
        })??;
    let first = shared.link().resume.is_none();
    apply_welcome(shared, node, &welcome, first);
    Ok(session)
}

struct Welcome {
    log: u64,
    position: u64,
    resumed: bool,
    member: bool,
    evicted: bool,
}

/// Decides what the node resends and whether it must catch up by a sync or
/// start over.
fn apply_welcome(shared: &Shared, node: &Node, w: &Welcome, first: bool) {
    // The relay no longer knows this incarnation (it was evicted, or the
    // relay's data were lost): its queued messages would be refused.
    let rejoin = w.evicted || (!first && !w.resumed && !w.member);
    {
        let mut link = shared.link();
        let link = &mut *link;
        if !w.resumed {
            link.resume = Some(Resume {
                log: w.log,
                position: w.position,
            });
        }
        link.acked_here = 0;
        if rejoin {
            let n = (link.unacked.len() + link.pending.len()) as u64;
            link.unacked.clear();
            link.pending.clear();
            link.done += n;
            link.dropped += n;
        } else {
            // Unacknowledged frames go first, in their order.
            while let Some(f) = link.unacked.pop_back() {
                link.pending.push_front(f);
            }
        }
    }
    shared.progress.notify_waiters();
    if rejoin {
        tracing::warn!(
            node = %node.peer_id(),
            evicted = w.evicted,
            "the relay no longer knows this node; rejoining as a new incarnation"
        );
        shared.rejoins.fetch_add(1, Ordering::AcqRel);
        node.rejoin();
    } else if !first && !w.resumed {
        tracing::info!(node = %node.peer_id(), "cannot resume where the connection broke; syncing");
        node.sync();
    }
}

fn host_of(addr: &str) -> String {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// The connection's life: run sessions, reconnect with backoff.
async fn run(
    addr: String,
    options: ConnectOptions,
    shared: Arc<Shared>,
    node: Weak<Inner>,
    first: Session,
) {
    let mut session = Some(first);
    let mut backoff = options.backoff_min;
    loop {
        if let Some(s) = session.take() {
            let _ = shared.status.send_replace(Status::Connected);
            backoff = options.backoff_min;
            let reason = tokio::select! {
                r = drive(s, &shared, &node) => r,
                _ = shared.cancel.cancelled() => return,
            };
            if shared.cancel.is_cancelled() || node.upgrade().is_none() {
                return;
            }
            tracing::warn!(%addr, %reason, "relay connection lost; reconnecting");
            let _ = shared.status.send_replace(Status::Disconnected(reason));
        }
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        tokio::select! {
            _ = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
            _ = shared.cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(options.backoff_max);
        let Some(n) = Node::upgrade(&node) else {
            return;
        };
        let attempt = tokio::select! {
            r = establish(&addr, &options, &shared, &n) => r,
            _ = shared.cancel.cancelled() => return,
        };
        drop(n);
        match attempt {
            Ok(s) => {
                tracing::info!(%addr, "reconnected to the relay");
                session = Some(s);
            }
            Err(e @ NetError::Refused(_)) => {
                tracing::error!(%addr, error = %e, "reconnection refused");
                let _ = shared
                    .status
                    .send_replace(Status::Disconnected(e.to_string()));
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "reconnection failed");
                let _ = shared
                    .status
                    .send_replace(Status::Disconnected(e.to_string()));
            }
        }
    }
}

/// Runs the node's timers until the connection closes or the node is gone.
pub(super) async fn ticker(shared: Arc<Shared>, node: Weak<Inner>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shared.cancel.cancelled() => return,
        }
        match node.upgrade() {
            Some(inner) => Node { inner }.tick(),
            None => {
                shared.cancel.cancel();
                return;
            }
        }
    }
}

/// Carries frames both ways until the connection fails; returns why.
async fn drive(session: Session, shared: &Shared, node: &Weak<Inner>) -> String {
    let Session {
        mut reader,
        mut writer,
    } = session;
    let read = async {
        while let Some(frame) = reader.next().await {
            let frame = match frame {
                Ok(f) => f.freeze(),
                Err(e) => return format!("reading from the relay: {e}"),
            };
            let Some(node) = Node::upgrade(node) else {
                return "the node was dropped".to_string();
            };
            match Down::decode(frame) {
                Ok(Down::Message { position, bytes }) => {
                    if let Err(e) = node.receive(&bytes) {
                        tracing::warn!(error = %e, position, "refused a message from the relay");
                    }
                    if let Some(r) = &mut shared.link().resume {
                        r.position = r.position.max(position);
                    }
                }
                Ok(Down::Direct(bytes)) => {
                    if let Err(e) = node.receive(&bytes) {
                        tracing::warn!(error = %e, "refused a directed message");
                    }
                }
                Ok(Down::Ack(n)) => {
                    if let Err(e) = shared.ack(n) {
                        return format!("relay protocol error: {e}");
                    }
                }
                Ok(Down::Hello(_)) => return "relay protocol error: a second hello".into(),
                Err(e) => return e.to_string(),
            }
        }
        "the relay closed the connection".to_string()
    };
    let write = async {
        loop {
            let notified = shared.queued.notified();
            let batch: Vec<Bytes> = {
                let mut link = shared.link();
                let link = &mut *link;
                let batch: Vec<Bytes> = link.pending.drain(..).collect();
                // Kept until acknowledged, to be sent again after a failure.
                link.unacked.extend(batch.iter().cloned());
                batch
            };
            if batch.is_empty() {
                notified.await;
                continue;
            }
            for frame in batch {
                if let Err(e) = writer.feed(frame).await {
                    return format!("writing to the relay: {e}");
                }
            }
            if let Err(e) = SinkExt::<Bytes>::flush(&mut writer).await {
                return format!("writing to the relay: {e}");
            }
        }
    };
    tokio::select! {
        r = read => r,
        r = write => r,
    }
}

impl Node {
    /// Starts over as a new incarnation and syncs: what a node does when its
    /// peers evicted it. Lock futures waiting on this node fail.
    pub(crate) fn rejoin(&self) {
        let mut dispatch = crate::events::Dispatch::default();
        {
            let mut st = self.state();
            let s = st.replica.reincarnate(rand::random());
            self.note_succession(&mut st, s);
            st.subs.wake_all_locks(&mut dispatch);
        }
        dispatch.run();
        self.pump();
    }
}
