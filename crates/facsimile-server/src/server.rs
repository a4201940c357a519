//! The listener and the per-connection handlers.
//!
//! [`Server::run_until`] accepts connections and gives each a task: a
//! `Handler` for TLS and the handshake, then a `ClientConn` that passes
//! the client's frames to its document while a second task writes the
//! document's frames back.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::ws::close_code;
use bytes::Bytes;
use facsimile::net::protocol::{
    ByteStream, ClientHello, Down, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, ServerHello,
};
use futures_util::{SinkExt, Stream, StreamExt};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::error::Elapsed;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::ServerConfig;
use crate::data_dir::DataDirLock;
use crate::document::{
    self, Cmd, ConnId, Doc, Inbox, Joining, Outbox, QUEUE_ROUNDS, Recovery, Unlist,
};
use crate::http;
use crate::transport::{self, Admission, Close, FrameSink, Frames, Outgoing, ReadError, Transport};

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

/// What the listener, the handlers and the documents share.
pub(crate) struct Shared {
    pub(crate) config: Arc<ServerConfig>,
    docs: Mutex<HashMap<String, Inbox>>,
    /// Held while a document opens, one lock per document name: two
    /// recoveries of one directory would both write to its log, and a long
    /// recovery must not hold up the clients of other documents. Clients
    /// wait for it on the runtime, not on a blocking thread: many clients
    /// of one document being recovered would otherwise take every thread
    /// of the runtime's blocking pool, and no other document could open.
    opening: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Documents being opened, counted with the open ones against
    /// [`ServerConfig::max_documents`]; raised only under the `docs` lock.
    reserved: AtomicUsize,
    limit: Arc<Semaphore>,
    /// Statuses of closed documents being read from their files at once
    /// (each reads the whole log, a record at a time); more wait for none
    /// and are answered 503.
    pub(crate) status_reads: Semaphore,
    next_conn: AtomicU64,
    /// Cancelled when the server stops: connections close without evicting
    /// anybody (as after a crash, nodes resume when a relay is back).
    pub(crate) stopping: CancellationToken,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The lock on the data directory (none without one), until the relay
    /// stops; each open document holds it too, until its thread or task
    /// ends, so that the directory is free only once nothing of this relay
    /// writes to it any more.
    data_lock: Mutex<Option<Arc<DataDirLock>>>,
    /// Documents whose recovery failed on what their files hold (a logged
    /// record that does not apply, a snapshot that does not load), with
    /// their files as they were then. Such a recovery fails the same way
    /// every time, and each reads the snapshot and replays the log: a
    /// client is refused at once instead, until the files change (an
    /// operator restored them, or moved them away), which needs no
    /// restart of the relay. A write that failed is not remembered: the
    /// disk may take the next one.
    unopenable: Mutex<HashMap<String, FilesSeen>>,
    /// Recoveries of documents begun ([`Doc::open`]), for the tests.
    #[cfg(test)]
    recoveries: AtomicUsize,
}

impl Server {
    /// Makes and locks the data directory, and binds the listening socket.
    /// A document opens (recovered from its snapshot and log) when a client
    /// first asks for it, and closes once idle
    /// ([`ServerConfig::close_idle`]); one that cannot be recovered is
    /// refused to its clients, and logged. The data directory stays locked
    /// until the server is dropped or has stopped ([`Server::run_until`]),
    /// so that no other relay writes to it meanwhile.
    ///
    /// # Errors
    /// When the data directory cannot be made or locked: another relay
    /// holds it ([`crate::DataDirInUse`], in an error of kind
    /// [`io::ErrorKind::ResourceBusy`]); when the address cannot be bound.
    pub async fn bind(config: ServerConfig) -> io::Result<Server> {
        let shared = Shared::open(config).await?;
        let listener = TcpListener::bind(shared.config.listen).await?;
        Ok(Server { listener, shared })
    }

    /// Serves the connections `incoming` yields, instead of a TCP
    /// listener's, until `shutdown` completes: a Unix socket's, a tunnel's,
    /// or a simulated network's (turmoil's `TcpListener`). Documents open
    /// and close as with [`Server::bind`]; the configured address is not
    /// used. TLS and WebSocket
    /// connections are told apart as over TCP.
    ///
    /// ```no_run
    /// use facsimile_server::{Server, ServerConfig};
    /// use futures_util::stream;
    ///
    /// # async fn run() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let incoming = stream::unfold(listener, |l| async move { Some((l.accept().await, l)) });
    /// Server::serve(ServerConfig::default(), Box::pin(incoming), std::future::pending()).await
    /// # }
    /// ```
    ///
    /// # Errors
    /// When the data directory cannot be made or locked (as
    /// [`Server::bind`]), or `incoming` ends.
    pub async fn serve<S, I>(
        config: ServerConfig,
        incoming: I,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        I: Stream<Item = io::Result<(S, SocketAddr)>> + Unpin,
    {
        let shared = Shared::open(config).await?;
        let incoming = incoming.map(|r| r.map(|(s, addr)| (Accepted::Stream(Box::new(s)), addr)));
        serve_on(shared, incoming, shutdown).await
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
    /// on the same data. The data directory is free for another relay once
    /// this returns (with documents on the runtime,
    /// [`ServerConfig::documents_on_runtime`], once their tasks end).
    /// Dropping the future before it returns (aborting its task) stops
    /// the relay too, without waiting: its connections close, and the
    /// directory is free once its documents have ended, soon after.
    ///
    /// # Errors
    /// When accepting connections fails for good.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server { listener, shared } = self;
        let incoming = futures_util::stream::poll_fn(move |cx| {
            listener
                .poll_accept(cx)
                .map(|r| Some(r.map(|(tcp, addr)| (Accepted::Tcp(tcp), addr))))
        });
        serve_on(shared, incoming, shutdown).await
    }
}

/// A connection the relay accepted: TCP (whose first byte can be peeked),
/// or any other byte stream.
enum Accepted {
    Tcp(TcpStream),
    Stream(Box<dyn ByteStream>),
}

/// Accepts the connections `incoming` yields until `shutdown` completes,
/// then stops the documents.
async fn serve_on(
    shared: Arc<Shared>,
    incoming: impl Stream<Item = io::Result<(Accepted, SocketAddr)>> + Unpin,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut incoming = incoming;
    // Also when this future is dropped before it stops the relay (its
    // task aborted, a `select!` taking another branch): else connections
    // and documents would go on, holding the data directory.
    let stopping = StopOnDrop(shared.clone());
    tokio::pin!(shutdown);
    let tls = shared.config.tls.clone().map(TlsAcceptor::from);
    let router = http::router(shared.clone());
    loop {
        let (stream, addr) = tokio::select! {
            r = incoming.next() => match r {
                Some(Ok(x)) => x,
                Some(Err(e)) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                None => {
                    shared.stop().await;
                    drop(stopping);
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the listener's connections ended",
                    ));
                }
            },
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                shared.stop().await;
                drop(stopping);
                return Ok(());
            }
        };
        if let Accepted::Tcp(tcp) = &stream {
            let _ = tcp.set_nodelay(true);
        }
        // Taken before TLS, so that a flood of handshakes counts too.
        let permit = shared.limit.clone().try_acquire_owned().ok();
        tokio::spawn(accept(
            shared.clone(),
            router.clone(),
            stream,
            addr,
            tls.clone(),
            permit,
        ));
    }
}

impl Shared {
    /// The relay's state, with its data directory made and locked;
    /// documents open when first asked for.
    async fn open(config: ServerConfig) -> io::Result<Arc<Shared>> {
        let data_lock = match &config.data {
            Some(dir) => {
                crate::store::create_dir_durably(dir).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot create the data directory {}: {e}", dir.display()),
                    )
                })?;
                Some(DataDirLock::acquire(dir)?)
            }
            None => None,
        };
        let config = Arc::new(config);
        let shared = Arc::new(Shared {
            limit: Arc::new(Semaphore::new(config.max_clients)),
            status_reads: Semaphore::new(crate::inspect::STATUS_READS),
            config,
            docs: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            reserved: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            stopping: CancellationToken::new(),
            threads: Mutex::new(Vec::new()),
            data_lock: Mutex::new(data_lock),
            unopenable: Mutex::new(HashMap::new()),
            #[cfg(test)]
            recoveries: AtomicUsize::new(0),
        });
        Ok(shared)
    }
}

/// Completes the TLS handshake where the relay serves TLS, then serves the
/// protocol the client speaks: HTTP (WebSocket upgrades) or the TCP
/// protocol's frames.
async fn accept(
    shared: Arc<Shared>,
    router: axum::Router,
    stream: Accepted,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    permit: Option<OwnedSemaphorePermit>,
) {
    let timeout = shared.config.handshake_timeout;
    // The first byte tells the protocols apart; it is peeked, not consumed.
    let peeked: Peeked = match (tls, stream) {
        (None, Accepted::Tcp(tcp)) => {
            let mut first = [0u8; 1];
            match tokio::time::timeout(timeout, tcp.peek(&mut first)).await {
                Ok(Ok(1)) => Ok(Ok(Some((Box::new(tcp), first[0])))),
                Ok(Ok(_)) => Ok(Ok(None)),
                Ok(Err(e)) => Ok(Err(e)),
                Err(e) => Err(e),
            }
        }
        (None, Accepted::Stream(stream)) => first_byte(stream, timeout).await,
        (Some(acceptor), stream) => {
            let stream: Box<dyn ByteStream> = match stream {
                Accepted::Tcp(tcp) => Box::new(tcp),
                Accepted::Stream(s) => s,
            };
            let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%addr, "TLS handshake timed out");
                    return;
                }
            };
            first_byte(tls, timeout).await
        }
    };
    let (stream, first) = match peeked {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return tracing::debug!(%addr, "connection closed before its hello"),
        Ok(Err(e)) => {
            return tracing::debug!(%addr, error = %e, "connection failed before its hello");
        }
        Err(_) => return tracing::warn!(%addr, why = "no hello in time", "connection closed"),
    };
    if is_http(first) {
        http::serve(shared, router, stream, addr, permit).await;
    } else {
        let config = &shared.config;
        let transport = Transport::tcp(stream, config.max_frame, config.hello_limit());
        run_client(shared, addr, permit, transport).await;
    }
}

/// A connection's first byte, unless it closes or fails first (or sends
/// nothing in time), and the stream with that byte still to read.
type Peeked = Result<Result<Option<(Box<dyn ByteStream>, u8)>, io::Error>, Elapsed>;

/// Reads the first byte of a stream that cannot peek into a buffer that
/// the returned stream reads first.
async fn first_byte(stream: impl ByteStream + 'static, timeout: Duration) -> Peeked {
    let mut buffered = BufReader::new(stream);
    match tokio::time::timeout(timeout, buffered.fill_buf()).await {
        Ok(Ok(b)) => match b.first().copied() {
            Some(first) => Ok(Ok(Some((Box::new(buffered), first)))),
            None => Ok(Ok(None)),
        },
        Ok(Err(e)) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// Whether a connection's first byte starts an HTTP request. A request
/// starts with its method's first letter, `A` to `Z`; the TCP protocol
/// starts with its hello's 4-byte big-endian length, whose first byte is 0
/// for any hello under 16 MiB (a byte of `A` or more would announce a hello
/// of more than a gigabyte).
fn is_http(first: u8) -> bool {
    first.is_ascii_uppercase()
}

/// Runs one client on its transport: the handshake, then its frames to its
/// document and the document's frames to it, until either side ends.
pub(crate) async fn run_client(
    shared: Arc<Shared>,
    addr: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    transport: Transport,
) {
    let span = tracing::info_span!(
        "connection",
        %addr,
        transport = transport.kind,
        peer = tracing::field::Empty,
        doc = tracing::field::Empty
    );
    let handler = Handler {
        shared,
        addr,
        permit,
        frames: transport.frames,
        sink: transport.sink,
        admission: transport.admission,
    };
    // The handshake's log lines name the connection; the frames that
    // follow pass without entering its span.
    if let Some(client) = handler.admit().instrument(span).await {
        client.run().await;
    }
}

/// Stops the relay when dropped, as far as that can be done without
/// waiting: connections close and documents end on their own, each
/// letting go of the data directory as it ends.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.begin_stop();
    }
}

impl Shared {
    /// Stops the relay: connections close, documents end (none opens from
    /// now on), and their threads are waited for.
    async fn stop(&self) {
        self.begin_stop();
        // Taken after the table was emptied under its lock, after the
        // cancellation: a document opening meanwhile either started its
        // thread under that lock before (and it is in the list), or saw
        // the cancellation under it and started none.
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// Cancels connections and documents, and lets go of the relay's hold
    /// on the data directory: each document's thread or task holds it
    /// until it ends, a document being opened until it gives up.
    fn begin_stop(&self) {
        self.stopping.cancel();
        self.data_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.docs.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Opens document `name` unless it is open (creating it if it is
    /// nowhere and `create` says so); returns its inbox, counting a client
    /// on its way in. The client waits for the document's opening lock on
    /// the runtime, and only its holder takes a blocking thread (unless
    /// documents run on the runtime) for the recovery's disk reads and
    /// writes: at most one blocking thread per document being opened.
    /// An error outside is the blocking task's: the runtime is stopping.
    async fn open_doc_off_runtime(
        self: &Arc<Self>,
        name: String,
        create: bool,
    ) -> Result<Result<Joining, OpenError>, tokio::task::JoinError> {
        if let Some(open) = self.joining(&name) {
            return Ok(Ok(open));
        }
        let turn = OpeningTurn::take(self, &name);
        let opening = turn.lock.clone().lock_owned().await;
        if let Some(open) = self.joining(&name) {
            return Ok(Ok(open));
        }
        if self.failed_before(&name) {
            return Ok(Err(OpenError::Unopenable));
        }
        if self.config.documents_on_runtime {
            return Ok(self.open_doc_locked(&name, create));
        }
        let shared = self.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || {
            let opened = shared.open_doc_locked(&name, create);
            drop(opening);
            opened
        })
        .await
    }

    /// Whether document `name` failed to recover from the files it holds
    /// now; forgets a failure once its files changed.
    fn failed_before(&self, name: &str) -> bool {
        let mut unopenable = self.unopenable.lock().unwrap_or_else(|e| e.into_inner());
        let Some(seen) = unopenable.get(name) else {
            return false;
        };
        let Some(data) = self.config.data.as_ref() else {
            return false;
        };
        if *seen == FilesSeen::of(&data.join(name)) {
            return true;
        }
        unopenable.remove(name);
        false
    }

    /// A client on its way into document `name`, if it is open.
    fn joining(&self, name: &str) -> Option<Joining> {
        let docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        docs.get(name).map(Joining::new)
    }

    /// Opens document `name`'s thread and its timer, with its opening
    /// lock held and the document not open.
    fn open_doc_locked(self: &Arc<Self>, name: &str, create: bool) -> Result<Joining, OpenError> {
        // Taken before the stop is checked: a stop that comes after takes
        // the relay's hold on the directory away, not this document's.
        let data_lock = self
            .data_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if self.stopping.is_cancelled() || (self.config.data.is_some() && data_lock.is_none()) {
            return Err(OpenError::Io(io::Error::other("the relay is stopping")));
        }
        // A document that closed has left the table only after its last
        // write to disk, so it can be opened again at once.
        let dir = self.config.data.as_ref().map(|d| d.join(name));
        // Without a data directory, a document that is not open is nowhere.
        if !create && !dir.as_deref().is_some_and(stored) {
            return Err(OpenError::Missing);
        }
        let reservation = self.reserve()?;
        let started = Instant::now();
        #[cfg(test)]
        self.recoveries.fetch_add(1, Ordering::SeqCst);
        let (doc, recovery): (Doc, Recovery) =
            match Doc::open(name, dir.clone(), self.config.clone()) {
                Ok(opened) => opened,
                Err(e) => {
                    // `InvalidData`: what the files hold, which fails the same
                    // way next time (not a write that failed, kind `Other`).
                    if let Some(dir) = dir.filter(|_| e.kind() == io::ErrorKind::InvalidData) {
                        self.unopenable
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name.to_string(), FilesSeen::of(&dir));
                    }
                    return Err(OpenError::Io(e));
                }
            };
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
        // Checked again, under the table's lock, now that the recovery is
        // done: a stop that began meanwhile has taken (or will take, once
        // it has this lock) the threads to wait for and emptied the
        // table, and must neither miss this document's thread nor leave
        // it in the table. The document was not served: dropping it is a
        // crash before its first client, which loses nothing.
        if self.stopping.is_cancelled() {
            return Err(OpenError::Io(io::Error::other("the relay is stopping")));
        }
        let (inbox, rx) = Inbox::new(self.config.document_budget());
        let (arm, armed) = watch::channel(None);
        let unlist = self.unlist(name, &inbox);
        let forget = self.forget(name, &inbox);
        if self.config.documents_on_runtime {
            tokio::spawn(async move {
                doc.run_on_runtime(rx, arm, unlist, forget).await;
                drop(data_lock);
            });
        } else {
            let thread = std::thread::Builder::new()
                .name(format!("doc-{name}"))
                .spawn(move || {
                    doc.run(rx, arm, unlist, forget);
                    drop(data_lock);
                })
                .map_err(OpenError::Io)?;
            let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
            threads.retain(|t| !t.is_finished());
            threads.push(thread);
        }
        tokio::runtime::Handle::current().spawn(document::run_timer(
            inbox.tx.clone(),
            armed,
            self.stopping.clone(),
        ));
        docs.insert(name.to_string(), inbox.clone());
        // Counted in the table from now on, under its lock.
        drop(reservation);
        Ok(Joining::new(&inbox))
    }

    /// A place for one more open document under
    /// [`ServerConfig::max_documents`], held until the document is in the
    /// table (or failed to open).
    fn reserve(&self) -> Result<Reservation<'_>, OpenError> {
        let docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        let max = self.config.max_documents;
        if docs.len() + self.reserved.load(Ordering::Acquire) >= max {
            return Err(OpenError::Full(max));
        }
        self.reserved.fetch_add(1, Ordering::AcqRel);
        Ok(Reservation(&self.reserved))
    }

    /// How the document of `inbox` leaves the table when idle (see
    /// [`Unlist`]); `None` when documents stay open.
    fn unlist(self: &Arc<Self>, name: &str, inbox: &Inbox) -> Option<Unlist> {
        self.config.data.as_ref()?;
        self.config.close_idle?;
        let shared = Arc::downgrade(self);
        let name = name.to_string();
        let id = inbox.id();
        Some(Box::new(move |quiet: &dyn Fn() -> bool| {
            // Under the table's lock nobody can be handed the inbox: with
            // nobody on the way in and nothing in the channel, no client
            // can reach the document any more.
            shared
                .upgrade()
                .is_some_and(|shared| shared.unlist_if(&name, &id, || id.unjoined() && quiet()))
        }))
    }

    /// How the document of `inbox` leaves the table when its store failed
    /// (see [`document::Forget`]).
    fn forget(self: &Arc<Self>, name: &str, inbox: &Inbox) -> document::Forget {
        let shared = Arc::downgrade(self);
        let name = name.to_string();
        let id = inbox.id();
        Box::new(move || {
            if let Some(shared) = shared.upgrade() {
                shared.unlist_if(&name, &id, || true);
            }
        })
    }

    /// Takes document `name` out of the table if its entry is still the
    /// inbox `id` names (a later opening may have replaced it) and `ready`
    /// says so, asked under the table's lock. Returns whether it did.
    fn unlist_if(&self, name: &str, id: &document::InboxId, ready: impl FnOnce() -> bool) -> bool {
        let mut docs = self.docs.lock().unwrap_or_else(|e| e.into_inner());
        let ours = docs.get(name).is_some_and(|inbox| inbox.is(id));
        if ours && ready() {
            docs.remove(name);
            return true;
        }
        false
    }

    /// Where document `name` is: open (the way in, counted as a client on
    /// its way in: the document stays open until what is sent through it
    /// is in its channel), stored in a directory, or nowhere. Opens
    /// nothing.
    pub(crate) fn find_doc(&self, name: &str) -> Found {
        if let Some(open) = self.joining(name) {
            return Found::Open(open);
        }
        match self.config.data.as_ref() {
            Some(data) if valid_name(name) && stored(&data.join(name)) => {
                Found::Stored(data.join(name))
            }
            _ => Found::Nowhere,
        }
    }
}

/// Where a document is ([`Shared::find_doc`]).
pub(crate) enum Found {
    Open(Joining),
    Stored(std::path::PathBuf),
    Nowhere,
}

/// Whether a document's directory holds a stored document.
fn stored(dir: &std::path::Path) -> bool {
    dir.join("log").exists() || dir.join("snapshot").exists()
}

/// A document's files (snapshot and log) as far as a change to them shows:
/// each one's length, modification time and (on Unix) identity and change
/// time, or its absence. A restored file, or a directory moved away or
/// replaced, differs.
#[derive(Debug, PartialEq, Eq)]
struct FilesSeen([Option<FileSeen>; 2]);

#[derive(Debug, PartialEq, Eq)]
struct FileSeen {
    len: u64,
    modified: Option<std::time::SystemTime>,
    /// Device, inode, and change time in seconds and nanoseconds.
    #[cfg(unix)]
    id: (u64, u64, i64, i64),
}

impl FilesSeen {
    fn of(dir: &std::path::Path) -> FilesSeen {
        FilesSeen(["snapshot", "log"].map(|file| {
            let meta = std::fs::metadata(dir.join(file)).ok()?;
            #[cfg(unix)]
            use std::os::unix::fs::MetadataExt;
            Some(FileSeen {
                len: meta.len(),
                modified: meta.modified().ok(),
                #[cfg(unix)]
                id: (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()),
            })
        }))
    }
}

/// Why a document was not opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Its files could not be read or written, or its thread started.
    Io(io::Error),
    /// Its files, unchanged since, did not recover before (logged then).
    Unopenable,
    /// It is not open and not on disk, and the client only reads.
    Missing,
    /// As many documents as the limit allows are open.
    Full(usize),
}

/// A place held under the limit of open documents; given back on drop.
struct Reservation<'a>(&'a AtomicUsize);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client's place among those opening one document: its share of the
/// document's opening lock, whose entry in the table goes once nobody
/// holds or waits for it (also when the client's task is dropped while it
/// waits).
struct OpeningTurn<'a> {
    shared: &'a Shared,
    name: &'a str,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> OpeningTurn<'a> {
    fn take(shared: &'a Shared, name: &'a str) -> OpeningTurn<'a> {
        let lock = shared
            .opening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        OpeningTurn { shared, name, lock }
    }
}

impl Drop for OpeningTurn<'_> {
    fn drop(&mut self) {
        let mut locks = self
            .shared
            .opening
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The table's and this turn's: nobody else holds or waits for it
        // (each holder and waiter has a share, taken under the table's
        // lock).
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(self.name);
        }
    }
}

/// Whether the relay takes `name` as a document's name: 1 to 128
/// letters, digits, `.`, `_` or `-`, not starting with `.` (names become
/// directory names).
///
/// ```
/// use facsimile_server::valid_name;
/// assert!(valid_name("inventory-2024"));
/// assert!(!valid_name("../etc") && !valid_name(".hidden") && !valid_name(""));
/// ```
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && !name.starts_with('.')
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Why a connection goes no further than its handshake.
#[derive(Debug)]
enum Refusal {
    /// The client is told why, in words it can act on.
    Refused(String),
    /// Nothing is said but the WebSocket close: the peer sent something
    /// that is not a frame, or no frame in time.
    Dropped(Close),
    /// The peer closed the connection before its hello.
    Gone,
}

/// How long the relay tries to say goodbye (a refusal, a close frame) to
/// a client that may not be reading.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// One connection until its client is admitted: the hello, the checks, the
/// document to join.
struct Handler {
    /// The relay's settings and documents.
    shared: Arc<Shared>,
    /// The client's address, for the document's log lines.
    addr: SocketAddr,
    /// The connection's place under the connection limit, released when
    /// the connection ends; `None` when the relay is at its limit, and the
    /// client is refused.
    permit: Option<OwnedSemaphorePermit>,
    /// The client's frames.
    frames: Frames,
    /// Frames to the client: the refusal, or after the handshake the
    /// document's frames (through the writer task).
    sink: FrameSink,
    /// Raises the limit of the client's frames from the hello's to the
    /// frame limit once the client is admitted.
    admission: Admission,
}

impl Handler {
    /// Joins the client to its document, or refuses it.
    async fn admit(mut self) -> Option<ClientConn> {
        let admitted = match self.handshake().await {
            Ok(hello) => open_document(&self.shared, &hello)
                .await
                .map(|doc| (hello, doc)),
            Err(refusal) => Err(refusal),
        };
        match admitted {
            Ok((hello, doc)) => {
                self.admission.admit();
                ClientConn::join(self, hello, doc).await
            }
            Err(refusal) => {
                self.refuse(refusal).await;
                None
            }
        }
    }

    /// Reads and checks the client's hello.
    async fn handshake(&mut self) -> Result<ClientHello, Refusal> {
        let config = &self.shared.config;
        if self.permit.is_none() {
            return Err(Refusal::Refused(format!(
                "the relay is at its connection limit ({}); retry later",
                config.max_clients
            )));
        }
        let frame = match tokio::time::timeout(config.handshake_timeout, self.frames.next()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(ReadError::Protocol(close)))) => {
                return Err(Refusal::Dropped(Close {
                    code: close.code,
                    reason: format!("bad first frame: {}", close.reason),
                }));
            }
            Ok(Some(Err(ReadError::Io(e)))) => {
                return Err(Refusal::Dropped(Close::policy(format!(
                    "bad first frame: {e}"
                ))));
            }
            Ok(None) => return Err(Refusal::Gone),
            Err(_) => return Err(Refusal::Dropped(Close::policy("no hello in time"))),
        };
        let hello = ClientHello::decode(&frame).map_err(|e| {
            tracing::debug!(error = %e, "not a facsimile hello");
            Refusal::Refused(
                "the first frame is not a facsimile hello; is this a facsimile client?".into(),
            )
        })?;
        let span = tracing::Span::current();
        span.record("peer", hello.hostname.as_str());
        span.record("doc", hello.document.as_str());
        if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.protocol) {
            return Err(Refusal::Refused(format!(
                "protocol version {} is not supported (the relay speaks \
                 {OLDEST_PROTOCOL_VERSION} to {PROTOCOL_VERSION}); \
                 use matching versions of facsimile",
                hello.protocol
            )));
        }
        if let Some(token) = &config.token {
            if !same_secret(hello.token.as_bytes(), token.as_bytes()) {
                return Err(Refusal::Refused(
                    "wrong token: pass the relay's --token (or set FACSIMILE_TOKEN)".into(),
                ));
            }
        }
        if !valid_name(&hello.document) {
            return Err(Refusal::Refused(format!(
                "document name {:?} is not allowed: use 1 to 128 letters, digits, '.', '_' or \
                 '-', not starting with '.'",
                hello.document
            )));
        }
        Ok(hello)
    }

    /// Logs the refusal and tells the client, where it is told.
    async fn refuse(mut self, refusal: Refusal) {
        match refusal {
            Refusal::Refused(reason) => {
                tracing::warn!(%reason, "connection refused");
                let refused = Down::Hello(ServerHello::Refused {
                    reason: reason.clone(),
                })
                .encode();
                let _ =
                    tokio::time::timeout(CLOSE_WITHIN, self.sink.feed(Outgoing::Frame(refused)))
                        .await;
                transport::close(&mut self.sink, Close::policy(reason), CLOSE_WITHIN).await;
            }
            Refusal::Dropped(close) => {
                tracing::warn!(why = %close.reason, "connection closed");
                transport::close(&mut self.sink, close, CLOSE_WITHIN).await;
            }
            Refusal::Gone => tracing::debug!("connection closed before its hello"),
        }
    }
}

/// The inbox of the hello's document, opening (and recovering) the
/// document if no client has yet.
async fn open_document(shared: &Arc<Shared>, hello: &ClientHello) -> Result<Joining, Refusal> {
    // A reader that names a document nobody wrote (a typo) must not leave
    // a directory and a thread behind.
    let create = !hello.read_only;
    match shared
        .open_doc_off_runtime(hello.document.clone(), create)
        .await
    {
        Ok(Ok(doc)) => Ok(doc),
        Ok(Err(OpenError::Missing)) => Err(Refusal::Refused(format!(
            "no such document {:?} on this relay (a read-only connection does not create one; \
             check --doc)",
            hello.document
        ))),
        Ok(Err(OpenError::Full(max))) => Err(Refusal::Refused(format!(
            "the relay has {max} documents open, its limit (--max-documents); retry later"
        ))),
        Ok(Err(OpenError::Unopenable)) => Err(cannot_open(&hello.document)),
        _ if shared.stopping.is_cancelled() => Err(Refusal::Dropped(Close {
            code: close_code::AWAY,
            reason: "the relay is stopping".into(),
        })),
        Err(_) => Err(Refusal::Dropped(Close {
            code: close_code::AWAY,
            reason: "the relay is stopping".into(),
        })),
        Ok(Err(OpenError::Io(e))) => {
            if let Some(why) = e
                .get_ref()
                .and_then(|e| e.downcast_ref::<document::Unwritable>())
            {
                // Logged as the document failed.
                return Err(Refusal::Refused(why.0.clone()));
            }
            tracing::error!(error = %e, "cannot open document");
            Err(cannot_open(&hello.document))
        }
    }
}

/// The refusal of a document that did not recover; the reason is in the
/// relay's log.
fn cannot_open(name: &str) -> Refusal {
    Refusal::Refused(format!(
        "the relay cannot open document {name:?}; see the relay's log"
    ))
}

/// A client admitted to its document: its frames go to the document's
/// thread, and a task writes the document's frames to it.
struct ClientConn {
    /// The connection's id in its document.
    id: ConnId,
    /// The document's thread.
    doc: Inbox,
    /// The client's frames.
    frames: Frames,
    /// Cancelled when either side ends the connection: the document dropped
    /// the client, or writing to it failed.
    cancel: CancellationToken,
    /// Why the document ended the connection, when it did.
    closing: Arc<OnceLock<String>>,
    /// Cancelled when the document ends the connection after its queue.
    ending: CancellationToken,
    /// Cancelled when the relay stops; clients are not evicted then.
    stopping: CancellationToken,
    /// The task writing the document's frames; it hands the sink back for
    /// the connection's last words.
    writing: JoinHandle<FrameSink>,
    /// The connection's place under the limit, held until it ends.
    _permit: Option<OwnedSemaphorePermit>,
}

/// How a client's connection ended, as its reader saw it.
enum Departure {
    /// The client closed the connection, or it failed: why, for the log.
    Left(String),
    /// The client broke the protocol's framing.
    Broke(Close),
}

impl ClientConn {
    /// Joins the client to its document; `None` if the document closed.
    async fn join(handler: Handler, hello: ClientHello, doc: Joining) -> Option<ClientConn> {
        let Handler {
            shared,
            addr,
            permit,
            frames,
            sink,
            admission: _,
        } = handler;
        let id: ConnId = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE_ROUNDS);
        let queued = Arc::new(AtomicUsize::new(0));
        let cancel = CancellationToken::new();
        let closing = Arc::new(OnceLock::new());
        let ending = CancellationToken::new();
        let out = Outbox {
            tx,
            queued: queued.clone(),
            cancel: cancel.clone(),
            closing: closing.clone(),
            ending: ending.clone(),
        };
        let join = Cmd::Join {
            conn: id,
            hello,
            addr,
            out,
        };
        let doc = doc.join(join).await.ok()?;
        let writing = tokio::spawn(write_frames(sink, rx, queued, cancel.clone()));
        Some(ClientConn {
            id,
            doc,
            frames,
            cancel,
            closing,
            ending,
            stopping: shared.stopping.clone(),
            writing,
            _permit: permit,
        })
    }

    /// Passes the client's frames on until the connection ends, tells the
    /// document why (unless the document or the relay ended it), and closes
    /// the connection with the reason.
    async fn run(mut self) {
        let mut close = None;
        if let Some(departure) = self.pass_frames().await {
            let refused = matches!(departure, Departure::Broke(_));
            let reason = match departure {
                Departure::Left(reason) => reason,
                Departure::Broke(c) => {
                    let reason = c.reason.clone();
                    close = Some(c);
                    reason
                }
            };
            let _ = self
                .doc
                .send(Cmd::Leave {
                    conn: self.id,
                    reason,
                    refused,
                })
                .await;
        }
        if self.ending.is_cancelled() {
            // The writer sends what is queued (a closing notice last) and
            // ends by itself; a client that does not read gets a little
            // time for it, not forever.
            let _ = tokio::time::timeout(CLOSE_WITHIN, self.cancel.cancelled()).await;
        }
        self.cancel.cancel();
        // The document's thread ends once no connection holds its channel:
        // a relay that stops does not wait for these last words.
        let ClientConn {
            doc,
            closing,
            stopping,
            writing,
            _permit,
            ..
        } = self;
        drop(doc);
        let Ok(mut sink) = writing.await else {
            return;
        };
        let close = close
            .or_else(|| closing.get().map(|r| Close::policy(r.clone())))
            .unwrap_or_else(|| {
                if stopping.is_cancelled() {
                    Close {
                        code: close_code::AWAY,
                        reason: "the relay is stopping".into(),
                    }
                } else {
                    Close {
                        code: close_code::NORMAL,
                        reason: String::new(),
                    }
                }
            });
        transport::close(&mut sink, close, CLOSE_WITHIN).await;
    }

    /// The client's frames, to the document; returns why the client left,
    /// or `None` when the document or the relay ended the connection.
    async fn pass_frames(&mut self) -> Option<Departure> {
        loop {
            let frame = tokio::select! {
                f = self.frames.next() => f,
                _ = self.cancel.cancelled() => return None,
                _ = self.ending.cancelled() => return None,
                _ = self.stopping.cancelled() => return None,
            };
            let frame = match frame {
                Some(Ok(frame)) => frame,
                Some(Err(ReadError::Protocol(close))) => return Some(Departure::Broke(close)),
                Some(Err(ReadError::Io(e))) => {
                    return Some(Departure::Left(format!("read error: {e}")));
                }
                None => return Some(Departure::Left("closed by the client".into())),
            };
            // Waiting here when the document is busy (its budget taken)
            // slows the client down through TCP: backpressure, not
            // buffering.
            tokio::select! {
                r = self.doc.send_frame(self.id, frame) => if r.is_err() { return Some(Departure::Left("the document closed".into())) },
                _ = self.cancel.cancelled() => return None,
                _ = self.ending.cancelled() => return None,
                _ = self.stopping.cancelled() => return None,
            }
        }
    }
}

/// Writes a client's queued frames, in order, batching flushes, until the
/// queue ends (the document dropped the client) or the connection is
/// cancelled; returns the sink.
async fn write_frames(
    mut sink: FrameSink,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    queued: Arc<AtomicUsize>,
    cancel: CancellationToken,
) -> FrameSink {
    let write = async {
        while let Some(mut frames) = rx.recv().await {
            // Everything queued goes out before one flush.
            loop {
                for f in frames.drain(..) {
                    let len = f.len();
                    sink.feed(Outgoing::Frame(f)).await?;
                    queued.fetch_sub(len, Ordering::AcqRel);
                }
                match rx.try_recv() {
                    Ok(more) => frames = more,
                    Err(_) => break,
                }
            }
            sink.flush().await?;
        }
        Ok::<(), io::Error>(())
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
    sink
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document being opened (a long recovery) holds up only the
    /// clients of that document: another opens meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_document_opening_holds_up_no_other() {
        let data = tempfile::tempdir().unwrap();
        let config = ServerConfig::default().data_dir(data.path());
        let shared = Shared::open(config).await.unwrap();
        let held = HeldOpening::hold(&shared, "big");
        let opened = tokio::time::timeout(
            Duration::from_secs(30),
            shared.open_doc_off_runtime("small".into(), true),
        )
        .await
        .expect("opened while another document opens");
        // Not holding the document's channel: it ends when the relay stops.
        assert!(matches!(opened.map(|r| r.map(drop)), Ok(Ok(()))));
        held.release();
        let big = shared.open_doc_off_runtime("big".into(), true).await;
        assert!(matches!(big.map(|r| r.map(drop)), Ok(Ok(()))));
        assert!(
            shared.opening.lock().unwrap().is_empty(),
            "nobody opens now"
        );
        shared.stop().await;
    }

    /// The opening of document `name` held, as a long recovery of it
    /// would hold it, until `release`.
    struct HeldOpening {
        _turn: tokio::sync::OwnedMutexGuard<()>,
        shared: Arc<Shared>,
        name: String,
    }

    impl HeldOpening {
        fn hold(shared: &Arc<Shared>, name: &str) -> HeldOpening {
            let lock = shared
                .opening
                .lock()
                .unwrap()
                .entry(name.into())
                .or_default()
                .clone();
            HeldOpening {
                _turn: lock.try_lock_owned().expect("nobody opens it yet"),
                shared: shared.clone(),
                name: name.into(),
            }
        }

        /// Lets the waiters open it, as a recovery that ends does.
        fn release(self) {
            let HeldOpening {
                _turn,
                shared,
                name,
            } = self;
            let mut locks = shared.opening.lock().unwrap();
            drop(_turn);
            if Arc::strong_count(&locks[&name]) == 1 {
                locks.remove(&name);
            }
        }
    }

    /// Clients waiting for a document being opened (many nodes of a large
    /// document reconnecting after a restart) hold no thread of the
    /// runtime's blocking pool meanwhile: with more of them than the pool
    /// has threads, another document still opens.
    #[test]
    fn clients_waiting_for_an_opening_leave_the_blocking_pool_free() {
        const POOL: usize = 4;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(POOL)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let data = tempfile::tempdir().unwrap();
            let config = ServerConfig::default().data_dir(data.path());
            let shared = Shared::open(config).await.unwrap();
            let held = HeldOpening::hold(&shared, "big");
            let waiters: Vec<_> = (0..4 * POOL)
                .map(|_| {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        shared
                            .open_doc_off_runtime("big".into(), true)
                            .await
                            .map(|r| r.map(|_| ()))
                    })
                })
                .collect();
            // Every waiter has its share of the lock (the table, the
            // holder and this one have theirs).
            let lock = shared.opening.lock().unwrap()["big"].clone();
            while Arc::strong_count(&lock) < 3 + waiters.len() {
                tokio::task::yield_now().await;
            }
            drop(lock);
            let other = tokio::time::timeout(Duration::from_secs(10), async {
                let opened = shared.open_doc_off_runtime("small".into(), true).await;
                opened.map(|r| r.map(drop))
            })
            .await;
            // Released before judging: the waiters end, and the runtime
            // with them.
            held.release();
            let other = other.expect("another document opens while clients wait for one");
            assert!(matches!(other, Ok(Ok(()))));
            for w in waiters {
                assert!(matches!(w.await.unwrap(), Ok(Ok(()))));
            }
            assert!(
                shared.opening.lock().unwrap().is_empty(),
                "nobody opens now"
            );
            shared.stop().await;
        });
    }

    /// A document whose store cannot be written (a full disk) is closed,
    /// not the relay: its clients are told why, another document is
    /// served meanwhile, and once the disk takes writes again the
    /// document reopens from disk with every acknowledged write, and the
    /// writes of meanwhile are acknowledged once they are durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_document_that_cannot_be_written_closes_alone() {
        use facsimile::net::{self, ConnectOptions, NetError, Status};

        let data = tempfile::tempdir().unwrap();
        let config = ServerConfig::default()
            .listen("127.0.0.1:0".parse().unwrap())
            .data_dir(data.path());
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        let serving = tokio::spawn(server.run_until(stop.clone().cancelled_owned()));
        let options = |doc: &str| {
            ConnectOptions::new(doc)
                .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        };
        let full = net::connect(&addr, "writer", options("full"))
            .await
            .unwrap();
        let other = net::connect(&addr, "other", options("other"))
            .await
            .unwrap();
        full.node().set_root_from(&serde_json::json!({})).unwrap();
        other.node().set_root_from(&serde_json::json!({})).unwrap();
        full.node().set_path("/acked", 1).unwrap();
        full.flush().await.unwrap();

        crate::store::faults::fail_writes(&data.path().join("full"), true);
        let mut status = full.status();
        full.node().set_path("/later", 2).unwrap();
        let told = tokio::time::timeout(
            Duration::from_secs(20),
            status.wait_for(|s| matches!(s, Status::Disconnected(why) if why.contains("disk"))),
        )
        .await
        .expect("the writer is told why")
        .unwrap()
        .clone();
        assert!(matches!(told, Status::Disconnected(_)), "{told:?}");
        // A reader is refused, with the reason.
        match net::connect(&addr, "reader", options("full").read_only(true)).await {
            Err(NetError::Refused(why)) => assert!(why.contains("disk"), "{why}"),
            r => panic!("a reader of the failing document: {:?}", r.map(|_| ())),
        }
        // The relay serves the other document.
        other.node().set_path("/k", 1).unwrap();
        tokio::time::timeout(Duration::from_secs(20), other.flush())
            .await
            .expect("the other document is served")
            .unwrap();

        crate::store::faults::fail_writes(&data.path().join("full"), false);
        tokio::time::timeout(Duration::from_secs(20), full.flush())
            .await
            .expect("the writer resumes once the disk takes writes")
            .unwrap();
        let reader = net::connect(&addr, "reader", options("full").read_only(true))
            .await
            .unwrap();
        assert_eq!(reader.node().get("/acked"), Some(1.into()));
        assert_eq!(reader.node().get("/later"), Some(2.into()));
        drop((full, other, reader));
        stop.cancel();
        serving.await.unwrap().unwrap();
    }

    /// A document whose log holds a record that does not apply is
    /// recovered once, not at every client's every retry: the record
    /// will not apply next time either, and each recovery reads the
    /// snapshot and replays the log up to it. Its clients are refused
    /// with the same reason meanwhile; once its files change (restored,
    /// or moved away) it is opened again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_document_that_does_not_replay_is_recovered_once() {
        use facsimile::net::{self, ConnectOptions, NetError};

        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("bad");
        let mut store = crate::store::Store::open(&dir).unwrap().store;
        store.append_message(1, b"\x01not a message");
        store.commit().unwrap();
        drop(store);
        let config = ServerConfig::default()
            .listen("127.0.0.1:0".parse().unwrap())
            .data_dir(data.path());
        let server = Server::bind(config).await.unwrap();
        let shared = server.shared.clone();
        let addr = server.local_addr().unwrap().to_string();
        let stop = CancellationToken::new();
        let serving = tokio::spawn(server.run_until(stop.clone().cancelled_owned()));
        let join = |i: usize| {
            let addr = addr.clone();
            async move {
                let options = ConnectOptions::new("bad").read_only(i % 2 == 1);
                net::connect(&addr, &format!("node-{i}"), options).await
            }
        };
        // At once (waiting on the first one's recovery), then one by one.
        let at_once = futures_util::future::join_all((0..4).map(join)).await;
        let mut refusals = at_once;
        for i in 4..7 {
            refusals.push(join(i).await);
        }
        for r in refusals {
            match r {
                Err(NetError::Refused(why)) => {
                    assert!(why.contains("cannot open document \"bad\""), "{why}");
                }
                r => panic!("a join of the broken document: {:?}", r.map(|_| ())),
            }
        }
        assert_eq!(
            shared.recoveries.load(Ordering::SeqCst),
            1,
            "recovered once"
        );

        std::fs::rename(&dir, data.path().join("bad.aside")).unwrap();
        let fresh = net::connect(&addr, "node", ConnectOptions::new("bad"))
            .await
            .expect("a document whose files changed opens again");
        assert_eq!(shared.recoveries.load(Ordering::SeqCst), 2);
        drop(fresh);
        stop.cancel();
        serving.await.unwrap().unwrap();
    }

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
