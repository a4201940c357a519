//! An in-process relay, a WebSocket node speaking the relay's frames, and
//! waiting helpers.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use facsimile::Node;
use facsimile::net::protocol::{
    ByteStream, ClientHello, Down, PROTOCOL_VERSION, Resume, ServerHello, Up,
};
use facsimile::net::{self, ConnectOptions, Connection};
use facsimile_server::{Server, ServerConfig};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub(crate) const TOKEN: &str = "test-token";

/// A relay in this process, on a free loopback port (or the port it had
/// before a restart), with its data in a temporary directory.
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    config: ServerConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
    _data: Option<tempfile::TempDir>,
}

impl Relay {
    /// The test settings: a token, data on disk, and `tune` for the rest.
    pub(crate) async fn start(tune: impl FnOnce(ServerConfig) -> ServerConfig) -> Relay {
        let data = tempfile::tempdir().unwrap();
        let config = tune(
            ServerConfig::default()
                .listen("127.0.0.1:0".parse().unwrap())
                .data_dir(data.path())
                .token(TOKEN),
        );
        let mut relay = Relay::run(config).await;
        relay._data = Some(data);
        relay
    }

    async fn run(config: ServerConfig) -> Relay {
        let server = Server::bind(config.clone()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_until(async {
            let _ = stopped.await;
        }));
        Relay {
            addr,
            config: config.listen(addr),
            stop: Some(stop),
            task: Some(task),
            _data: None,
        }
    }

    /// The relay's data directory.
    pub(crate) fn data(&self) -> &std::path::Path {
        self._data
            .as_ref()
            .expect("a relay with data on disk")
            .path()
    }

    /// `ws://` URL of the relay.
    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Stops the relay (its connections close; nobody is evicted) and
    /// starts it again on the same address and data.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Stops the relay: its connections close, nobody is evicted.
    pub(crate) async fn stop(&mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    /// Starts a stopped relay again on the same address and data.
    pub(crate) async fn start_again(&mut self) {
        self.start_again_with(|c| c).await;
    }

    /// [`Relay::start_again`], with `tune` applied to the settings.
    pub(crate) async fn start_again_with(
        &mut self,
        tune: impl FnOnce(ServerConfig) -> ServerConfig,
    ) {
        let data = self._data.take();
        *self = Relay::run(tune(self.config.clone())).await;
        self._data = data;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) fn options() -> ConnectOptions {
    options_for("default")
}

/// [`options`] for document `doc`.
pub(crate) fn options_for(doc: &str) -> ConnectOptions {
    ConnectOptions::new(doc)
        .token(TOKEN)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .timeouts(Duration::from_secs(10), Duration::from_secs(20))
}

/// A TCP client (`facsimile::net::connect`).
pub(crate) async fn tcp_node(relay: &Relay, name: &str) -> Connection {
    net::connect(&relay.addr.to_string(), name, options())
        .await
        .unwrap_or_else(|e| panic!("{name} connects over TCP: {e}"))
}

/// Panics on the runtime's workers and the documents' threads since the
/// test binary started: the relay's tasks (and the test clients') run
/// there, and none may panic, whatever the network sends.
pub(crate) fn relay_panics() -> usize {
    use std::sync::atomic::AtomicUsize;
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("");
            if name.starts_with("tokio-runtime-worker") || name.starts_with("doc-") {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

/// Polls `cond` until it holds; panics with `what` after `timeout`.
pub(crate) async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `conn` reports its connection down; panics with `what`
/// after 20 s.
pub(crate) async fn disconnected(conn: &Connection, what: &str) {
    let mut status = conn.status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| matches!(s, facsimile::net::Status::Disconnected(_))),
    )
    .await
    .expect(what)
    .unwrap();
}

/// Waits until every node holds the same document.
pub(crate) async fn converge(nodes: &[&Node]) {
    wait_until("the nodes to converge", Duration::from_secs(30), || {
        let first = nodes[0].snapshot();
        nodes[1..].iter().all(|n| n.snapshot() == first)
    })
    .await;
}

/// How a test reaches the relay: plain TCP, or TLS trusting one
/// certificate.
#[derive(Clone)]
pub(crate) enum Dial {
    Plain(SocketAddr),
    Tls(SocketAddr, tokio_rustls::TlsConnector),
}

impl Dial {
    pub(crate) fn tls(addr: SocketAddr, ca_pem: &str) -> Dial {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Dial::Tls(addr, tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    fn url(&self) -> String {
        match self {
            Dial::Plain(addr) => format!("ws://{addr}/"),
            Dial::Tls(addr, _) => format!("wss://localhost:{}/", addr.port()),
        }
    }

    /// Opens the connection and completes the WebSocket handshake.
    pub(crate) async fn websocket(&self) -> io::Result<WebSocketStream<Box<dyn ByteStream>>> {
        let stream: Box<dyn ByteStream> = match self {
            Dial::Plain(addr) => Box::new(TcpStream::connect(addr).await?),
            Dial::Tls(addr, connector) => {
                let tcp = TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        upgrade(self.url(), stream).await
    }
}

/// The WebSocket handshake on an open stream.
pub(crate) async fn upgrade<S: ByteStream>(
    url: String,
    stream: S,
) -> io::Result<WebSocketStream<S>> {
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(io::Error::other)?;
    Ok(ws)
}

pub(crate) fn hello(hostname: &str, incarnation: u32, resume: Option<Resume>) -> ClientHello {
    ClientHello {
        protocol: PROTOCOL_VERSION,
        document: "default".into(),
        token: TOKEN.into(),
        hostname: hostname.into(),
        incarnation,
        resume,
        read_only: false,
    }
}

/// The next protocol frame from the relay, skipping pings and pongs;
/// `Err` with the close frame (code, reason) when the relay closes, or
/// `(0, "")` when the connection ends without one.
pub(crate) async fn next_down<S: ByteStream>(
    ws: &mut WebSocketStream<S>,
) -> Result<Down, (u16, String)> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("the relay answers or closes");
        match msg {
            Some(Ok(Message::Binary(b))) => return Ok(Down::decode(b).expect("a relay frame")),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(Some(c)))) => return Err((c.code.into(), c.reason.to_string())),
            Some(Ok(Message::Close(None))) | Some(Err(_)) | None => return Err((0, String::new())),
            Some(Ok(other)) => panic!("the relay sent {other:?}"),
        }
    }
}

/// Sends a hello and returns the relay's answer.
pub(crate) async fn say_hello<S: ByteStream>(
    ws: &mut WebSocketStream<S>,
    hello: &ClientHello,
) -> ServerHello {
    ws.send(Message::Binary(hello.encode())).await.unwrap();
    match next_down(ws).await {
        Ok(Down::Hello(h)) => h,
        other => panic!("expected the relay's hello, got {other:?}"),
    }
}

/// Reads (and drops) frames until the relay closes the connection; returns
/// its close frame, `(0, "")` when there was none.
pub(crate) async fn until_closed<S: ByteStream>(ws: &mut WebSocketStream<S>) -> (u16, String) {
    loop {
        if let Err(close) = next_down(ws).await {
            return close;
        }
    }
}

/// Frames a WebSocket node sent and the relay has not acknowledged.
#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Of `frames`, how many were sent on the current connection.
    sent: usize,
    /// Acknowledged on the current connection.
    acked: u64,
}

/// What the relay's welcomes said, for assertions.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Welcomes {
    pub(crate) count: u32,
    pub(crate) resumed: u32,
    pub(crate) evicted: u32,
}

/// A node on the relay over a WebSocket, carrying the relay's frames as
/// the TCP client does: it resends what was not acknowledged after a
/// reconnection and resumes where it stopped reading.
pub(crate) struct WsNode {
    pub(crate) node: Node,
    queue: Arc<Mutex<Queue>>,
    welcomes: Arc<Mutex<Welcomes>>,
    /// The relay's closing notice, once it refused something.
    closing: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl WsNode {
    /// Connects, syncs, and returns once the document is here.
    pub(crate) async fn connect(dial: Dial, hostname: &str) -> WsNode {
        WsNode::connect_with(dial, hostname, false).await
    }

    /// As [`WsNode::connect`], joining read-only when `read_only`.
    pub(crate) async fn connect_with(dial: Dial, hostname: &str, read_only: bool) -> WsNode {
        let node = Node::new(hostname);
        let queue = Arc::new(Mutex::new(Queue::default()));
        let wake = Arc::new(Notify::new());
        {
            let (queue, wake) = (queue.clone(), wake.clone());
            node.set_sender(move |out| {
                let bytes = Bytes::copy_from_slice(out.as_bytes());
                let up = match out.to() {
                    None => Up::Broadcast(bytes),
                    Some(tag) => Up::To(tag, bytes),
                };
                queue.lock().unwrap().frames.push_back(up.encode());
                wake.notify_one();
            });
        }
        // A new node counts as ready before it asked for the document: it
        // is ready once the sync the connection starts has brought it.
        let asked = Arc::new(AtomicBool::new(false));
        let welcomes = Arc::new(Mutex::new(Welcomes::default()));
        let closing = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run(
            Link {
                dial,
                read_only,
                closing: closing.clone(),
            },
            node.clone(),
            queue.clone(),
            wake,
            welcomes.clone(),
            asked.clone(),
        ));
        let ws = WsNode {
            node,
            queue,
            welcomes,
            closing,
            task,
        };
        wait_until(
            "the WebSocket node to sync",
            Duration::from_secs(20),
            || asked.load(Ordering::SeqCst) && ws.node.is_ready(),
        )
        .await;
        ws
    }

    /// Waits until the relay acknowledged every frame sent so far.
    pub(crate) async fn flush(&self) {
        wait_until(
            "the relay to acknowledge every frame",
            Duration::from_secs(30),
            || self.queue.lock().unwrap().frames.is_empty(),
        )
        .await;
    }

    pub(crate) fn welcomes(&self) -> Welcomes {
        *self.welcomes.lock().unwrap()
    }

    /// Waits for the relay's closing notice.
    pub(crate) async fn closed_by_relay(&self) -> String {
        wait_until(
            "the relay's closing notice",
            Duration::from_secs(10),
            || self.closing.lock().unwrap().is_some(),
        )
        .await;
        self.closing.lock().unwrap().clone().unwrap()
    }
}

impl Drop for WsNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where and how a WebSocket node connects.
struct Link {
    dial: Dial,
    read_only: bool,
    closing: Arc<Mutex<Option<String>>>,
}

/// Connects, runs the connection, and reconnects when it breaks (unless
/// the relay refused what the node sent: it would send it again).
async fn run(
    link: Link,
    node: Node,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    welcomes: Arc<Mutex<Welcomes>>,
    asked: Arc<AtomicBool>,
) {
    let mut resume: Option<Resume> = None;
    while link.closing.lock().unwrap().is_none() {
        let Ok(mut ws) = link.dial.websocket().await else {
            // The relay is restarting: try again.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut hello = hello(node.hostname(), node.peer_id().incarnation(), resume);
        hello.read_only = link.read_only;
        let ServerHello::Welcome {
            log,
            position,
            resumed,
            member,
            evicted,
            ..
        } = say_hello(&mut ws, &hello).await
        else {
            panic!("the relay refused the WebSocket node");
        };
        {
            let mut w = welcomes.lock().unwrap();
            w.count += 1;
            w.resumed += u32::from(resumed);
            w.evicted += u32::from(evicted);
        }
        assert!(!evicted, "this test node does not rejoin");
        let first = resume.is_none();
        if !resumed {
            resume = Some(Resume { log, position });
        }
        {
            let mut q = queue.lock().unwrap();
            q.sent = 0;
            q.acked = 0;
        }
        if first || (!resumed && member) {
            node.sync();
            asked.store(true, Ordering::SeqCst);
        }
        if let Some(reason) = drive(&mut ws, &node, &queue, &wake, &mut resume).await {
            *link.closing.lock().unwrap() = Some(reason);
        }
    }
}

/// Carries frames both ways until the connection breaks; returns the
/// relay's closing notice if it sent one.
async fn drive(
    ws: &mut WebSocketStream<Box<dyn ByteStream>>,
    node: &Node,
    queue: &Mutex<Queue>,
    wake: &Notify,
    resume: &mut Option<Resume>,
) -> Option<String> {
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    loop {
        let notified = wake.notified();
        let unsent: Vec<Bytes> = {
            let mut q = queue.lock().unwrap();
            let unsent = q.frames.iter().skip(q.sent).cloned().collect();
            q.sent = q.frames.len();
            unsent
        };
        if !unsent.is_empty() {
            for frame in unsent {
                if ws.feed(Message::Binary(frame)).await.is_err() {
                    return None;
                }
            }
            if ws.flush().await.is_err() {
                return None;
            }
        }
        tokio::select! {
            msg = ws.next() => {
                let frame = match msg {
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => return None,
                };
                match Down::decode(frame).expect("a relay frame") {
                    Down::Message { position, bytes } => {
                        node.receive(&bytes).expect("a message the node takes");
                        if let Some(r) = resume.as_mut() {
                            r.position = r.position.max(position);
                        }
                    }
                    Down::Direct(bytes) => node.receive(&bytes).expect("a message the node takes"),
                    Down::Ack(n) => {
                        let mut q = queue.lock().unwrap();
                        let done = (n - q.acked) as usize;
                        q.frames.drain(..done);
                        q.sent -= done;
                        q.acked = n;
                    }
                    Down::Hello(_) => panic!("a second hello"),
                    Down::Closing(reason) => return Some(reason),
                }
            }
            _ = notified => {}
            _ = ticks.tick() => node.tick(),
        }
    }
}

/// Each node sets 100 keys of the root map and appends 100 items to
/// `/list`, all nodes at once; returns when every write is made.
pub(crate) async fn write_at_once<const N: usize>(nodes: [(&'static str, Node); N]) {
    let mut tasks = Vec::new();
    for (who, node) in nodes {
        tasks.push(tokio::spawn(async move {
            let root = node.root_map().unwrap();
            let list = node.get("/list").unwrap().as_array().unwrap().clone();
            for j in 0..100 {
                root.set(&format!("{who}{j}"), j).unwrap();
                list.push(format!("{who}.{j}")).unwrap();
                if j % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A TCP proxy on loopback in front of the relay that can be told to
/// black-hole its connections: it stops forwarding both ways without
/// closing anything, as a link that went down does (the relay sees no FIN,
/// and once the buffers fill its writes to the connection block).
pub(crate) struct BlackHole {
    pub(crate) addr: SocketAddr,
    /// Towards the relay.
    holed_up: tokio::sync::watch::Sender<bool>,
    /// Towards the client.
    holed_down: tokio::sync::watch::Sender<bool>,
    /// Counts the cuts asked for: each closes the connections of then.
    cuts: tokio::sync::watch::Sender<u32>,
    task: JoinHandle<()>,
}

impl BlackHole {
    /// Listens on a free loopback port and forwards every connection to
    /// `upstream`.
    pub(crate) async fn start(upstream: SocketAddr) -> BlackHole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (holed_up, up) = tokio::sync::watch::channel(false);
        let (holed_down, down) = tokio::sync::watch::channel(false);
        let (cuts, mut cut) = tokio::sync::watch::channel(0);
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => return,
                    },
                    changed = cut.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        // Dropping the pumps closes both sides' sockets.
                        pumps.abort_all();
                        continue;
                    }
                };
                // A small receive buffer towards the relay: what the relay
                // sends piles up in its own buffers and queue, not here.
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.set_recv_buffer_size(64 << 10).unwrap();
                let Ok(server) = socket.connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                pumps.spawn(pump(cr, sw, up.clone()));
                pumps.spawn(pump(sr, cw, down.clone()));
            }
        });
        BlackHole {
            addr,
            holed_up,
            holed_down,
            cuts,
            task,
        }
    }

    /// From now on nothing passes either way; nothing is closed either.
    pub(crate) fn black_hole(&self) {
        self.holed_up.send_replace(true);
        self.holed_down.send_replace(true);
    }

    /// Closes the connections of now on both sides, as a link reset
    /// does; new ones are taken as before (black-holed while it is).
    pub(crate) fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// The link is back: what was held passes, in order.
    pub(crate) fn restore(&self) {
        self.holed_up.send_replace(false);
        self.holed_down.send_replace(false);
    }

    /// From now on nothing passes towards the client: what it sends still
    /// reaches the relay, whose answers and acknowledgements are held.
    pub(crate) fn hold_towards_client(&self) {
        self.holed_down.send_replace(true);
    }

    /// Only what the relay sends passes again, as to a paused client that
    /// resumes and reads what its socket holds before it writes: the
    /// client's writes to a closed connection would make the relay's side
    /// reset it, and the reset discards what the proxy held for the client.
    pub(crate) fn restore_towards_client(&self) {
        self.holed_down.send_replace(false);
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        // Aborting the listener drops its pumps, which closes the sockets.
        self.task.abort();
    }
}

/// Copies `from` to `to` while the link is up; stops reading (and holds
/// what it read) while it is black-holed.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut holed: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if holed.wait_for(|h| !*h).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = holed.wait_for(|h| *h) => continue,
        };
        if holed.wait_for(|h| !*h).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Everything the relay logged at `info` and above since the first call,
/// from every test of this binary (a subscriber is global: the documents'
/// threads log too).
pub(crate) fn relay_log() -> String {
    static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    static INIT: std::sync::Once = std::sync::Once::new();
    struct Sink;
    impl io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            LOG.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("facsimile_server=info"))
            .with_ansi(false)
            .with_writer(|| Sink)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Waits until the relay logged a line containing every one of `parts`.
pub(crate) async fn logged(parts: &[&str]) {
    wait_until(
        &format!("the relay to log {parts:?}"),
        Duration::from_secs(30),
        || {
            relay_log()
                .lines()
                .any(|l| parts.iter().all(|p| l.contains(p)))
        },
    )
    .await;
}
