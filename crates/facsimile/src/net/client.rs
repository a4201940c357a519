//! The relay transport: one background task per connected node carries its
//! frames over TCP or WebSocket (either with TLS) and reconnects when the
//! connection fails.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, SplitSink, SplitStream};
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, protocol::WebSocketConfig};

use super::connection::{Connection, Shared, Status};
use super::driver::{contained, run_timers};
use super::error::NetError;
use super::options::ConnectOptions;
use super::protocol::{
    self, Admission, ByteStream, HelloError, Incoming, Outbox, ProtocolError, Session,
};
use super::silence::Silence;
use super::tls::TlsOptions;
use crate::clock::Clock;
use crate::node::{Inner, Node, Outgoing};

/// A hundred years: as good as never. A relay peer is never evicted by a
/// client on its own (with a relay the transport decides who left, so
/// clients only send heartbeats), and a timeout too long to add to now
/// ends this far from it.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Connects a new node to the relay at `addr`, syncs the document and
/// returns once it is complete ([`super::connect`] for a relay address).
pub(super) async fn connect(
    addr: &str,
    hostname: &str,
    options: ConnectOptions,
) -> Result<Connection, NetError> {
    let config = options
        .config
        .clone()
        .max_message_size(protocol::max_message(options.max_frame))
        .failure_detection(options.heartbeat, options.peer_timeout.unwrap_or(NEVER));
    // A read-only node only observes: its peers wait for it for nothing.
    let config = match options.read_only {
        true => config.observer(),
        false => config,
    };
    let clock = if options.runtime_clock {
        Clock::runtime()
    } else {
        Clock::new()
    };
    let node = Node::with_clock(hostname, config, clock);
    let shared = Arc::new(Shared::new(Outbox::counting(protocol::Up::writes_in)));
    let sink = shared.clone();
    node.set_sender(move |out: Outgoing| {
        if Session::send(&mut sink.outbox(), out.to(), out.as_bytes()) {
            sink.queued.notify_one();
        }
    });
    let mut session =
        Session::new(options.document.clone(), options.token.clone()).read_only(options.read_only);
    let incarnation = node.peer_id().incarnation();
    let (conn, admission, synced_by) =
        establish(addr, &options, &mut session, &shared, &node, incarnation).await?;
    // A node made here has not left.
    admit(&shared, &node, admission);
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let _ready = node.on_ready(move |_| {
        let _ = ready_tx.send(true);
    });
    // Sync before the first message is read, so nothing is applied to the
    // empty local document.
    node.sync();
    // Nobody holds the status yet.
    shared.status.set_now(Status::Connected);
    tokio::spawn(run(
        addr.to_string(),
        options.clone(),
        shared.clone(),
        node.downgrade(),
        conn,
        session,
    ));
    tokio::spawn(run_timers(shared.clone(), node.downgrade()));
    let ready = async {
        while !node.is_ready() {
            if ready_rx.changed().await.is_err() {
                break;
            }
        }
    };
    // The connection may stop for good while the document comes: that is
    // the error, at once, not a timeout later.
    let mut status = shared.status.subscribe();
    let stopped = async {
        let stopped = status
            .wait_for(|s| matches!(s, Status::Failed(_) | Status::Refused(_)))
            .await
            .map(|s| s.clone());
        match stopped {
            Ok(Status::Refused(reason)) => NetError::Refused(reason),
            // `run` stops so for a frame above the limit, or a panic of the
            // engine ([`contained`]), which closed the connection.
            Ok(Status::Failed(reason)) => {
                let too_large = NetError::FrameTooLarge {
                    limit: options.max_frame,
                };
                match reason == too_large.to_string() {
                    true => too_large,
                    false => NetError::Closed,
                }
            }
            Ok(_) | Err(_) => NetError::Closed,
        }
    };
    let synced = async {
        tokio::select! {
            () = ready => Ok(()),
            e = stopped => Err(e),
        }
    };
    let failed = match tokio::time::timeout_at(synced_by, synced).await {
        Ok(Ok(())) => return Ok(Connection { node, shared }),
        Ok(Err(e)) => e,
        Err(_) => NetError::Timeout {
            what: "the document (sync)",
            after: options.sync_timeout,
        },
    };
    shared.cancel.cancel();
    Err(failed)
}

/// The relay's frames, whatever carries them.
type Frames = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;
/// Frames to the relay.
type FrameSink = Pin<Box<dyn Sink<Bytes, Error = io::Error> + Send>>;

/// An established connection, after the relay's welcome.
struct Conn {
    reader: Frames,
    writer: FrameSink,
}

/// Where a relay address leads: the `host:port` to connect to and whether
/// the frames go over a WebSocket (`ws://`, `wss://`) or straight over TCP.
struct Target<'a> {
    host_port: &'a str,
    websocket: bool,
    /// `wss://`: TLS is part of the address.
    secure: bool,
}

impl Target<'_> {
    fn of(addr: &str) -> Target<'_> {
        for (scheme, secure) in [("ws://", false), ("wss://", true)] {
            if let Some(rest) = addr.strip_prefix(scheme) {
                let host_port = rest.split_once('/').map_or(rest, |(h, _)| h);
                return Target {
                    host_port,
                    websocket: true,
                    secure,
                };
            }
        }
        Target {
            host_port: addr,
            websocket: false,
            secure: false,
        }
    }
}

/// Opens a connection within the connect timeout and says hello as
/// `incarnation`, asking to resume where the session stopped reading;
/// readies the outbox for the connection. Returns with it the end of the
/// sync timeout, counted from the hello, within which the welcome came.
async fn establish(
    addr: &str,
    options: &ConnectOptions,
    session: &mut Session,
    shared: &Shared,
    node: &Node,
    incarnation: u32,
) -> Result<(Conn, Admission, Instant), NetError> {
    let (mut reader, mut writer) =
        tokio::time::timeout_at(after(options.connect_timeout), open(addr, options))
            .await
            .map_err(|_| NetError::Timeout {
                what: "the connection to the relay",
                after: options.connect_timeout,
            })??;
    // A relay answers once it has the document open, which after a restart
    // means recovered: that may take far longer than reaching it, so the
    // welcome is waited for as long as the document is. (A hello given up
    // on may be admitted all the same; the relay does not count the node
    // gone when that connection ends before carrying a frame.)
    let synced_by = after(options.sync_timeout);
    let hello = session.hello(node.hostname(), incarnation);
    let handshake = async {
        writer.send(hello).await.map_err(|source| NetError::Io {
            during: "sending the hello",
            source,
        })?;
        read_welcome(addr, options.max_frame, &mut reader).await
    };
    // Connected but silent all that time: whatever listens there does not
    // speak the relay's protocol.
    let welcome = tokio::time::timeout_at(synced_by, handshake)
        .await
        .map_err(|_| NetError::NotARelay {
            addr: addr.to_string(),
            source: ProtocolError::Silent(options.sync_timeout),
        })??;
    let admission = shared
        .complete(|outbox| session.welcome(welcome, outbox))
        .map_err(|e| match e {
            HelloError::Refused(reason) => NetError::Refused(reason),
            HelloError::NotARelay(source) => NetError::NotARelay {
                addr: addr.to_string(),
                source,
            },
        })?;
    // A relay of a smaller frame limit than this node's would refuse, and
    // close the connection on, a write that fits here.
    let relay = session.relay_max_frame().unwrap_or(options.max_frame);
    node.limit_sent_messages(protocol::max_message(relay));
    // So would it a backlog of writes held offline and packed for a larger
    // limit: split to this one before anything is sent (frames a rejoin
    // drops need none). Only for such a frame does the task wait for the
    // node's pump, which a listener on another thread may hold a while.
    let rejoin = matches!(admission, Admission::Rejoin { .. });
    if !rejoin && shared.outbox().has_unsent_above(relay) {
        // The outbox is taken once every message is in it: the sender
        // takes it too.
        let split = || {
            node.with_all_sent(|replica| {
                shared
                    .outbox()
                    .split_unsent(relay, |messages, max| replica.resplit_unsent(messages, max))
            })
        };
        contained(shared, "splitting held messages", split);
    }
    Ok((Conn { reader, writer }, admission, synced_by))
}

/// `timeout` from now; a timeout too long to add to now is as good as
/// none.
fn after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + NEVER)
}

/// The connection as frames: length-delimited over TCP, or one binary
/// WebSocket message each for a `ws://` or `wss://` address.
async fn open(addr: &str, options: &ConnectOptions) -> Result<(Frames, FrameSink), NetError> {
    let target = Target::of(addr);
    let tls_error = |source| NetError::Tls {
        addr: addr.to_string(),
        source,
    };
    let tls = match (&options.tls, target.websocket, target.secure) {
        (None, _, true) => {
            return Err(tls_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a wss:// address needs TLS options (which certificates to trust)",
            )));
        }
        (Some(_), true, false) => {
            return Err(tls_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS options with a ws:// address: use wss:// for TLS",
            )));
        }
        (tls, _, _) => tls.as_ref(),
    };
    let stream = stream(addr, target.host_port, tls, options).await?;
    if !target.websocket {
        let (reader, writer) = protocol::framed(stream, options.max_frame);
        return Ok((
            Box::pin(reader.map(|r| r.map(bytes::BytesMut::freeze))),
            Box::pin(writer),
        ));
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(options.max_frame))
        .max_frame_size(Some(options.max_frame));
    let (socket, _) = tokio_tungstenite::client_async_with_config(addr, stream, Some(config))
        .await
        .map_err(|e| NetError::Io {
            during: "the WebSocket handshake with the relay",
            source: ws_io_error(e),
        })?;
    Ok(websocket(socket))
}

/// The TCP connection to `host_port` (or the options' dialer's stream),
/// with TLS where `tls` asks for it.
async fn stream(
    addr: &str,
    host_port: &str,
    tls: Option<&TlsOptions>,
    options: &ConnectOptions,
) -> Result<Box<dyn ByteStream>, NetError> {
    let connect_error = |source| NetError::Connect {
        addr: addr.to_string(),
        source,
    };
    let stream: Box<dyn ByteStream> = match &options.dialer {
        Some(dialer) => dialer.dial(host_port).await.map_err(connect_error)?,
        None => {
            let tcp = TcpStream::connect(host_port).await.map_err(connect_error)?;
            let _ = tcp.set_nodelay(true);
            Box::new(tcp)
        }
    };
    let Some(tls) = tls else {
        return Ok(stream);
    };
    let tls_error = |source| NetError::Tls {
        addr: addr.to_string(),
        source,
    };
    let host = tls
        .server_name
        .clone()
        .unwrap_or_else(|| host_of(host_port));
    let name = ServerName::try_from(host)
        .map_err(|e| tls_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = connector.connect(name, stream).await.map_err(tls_error)?;
    Ok(Box::new(stream))
}

/// A WebSocket as frames: binary messages in and out. Pings are answered
/// by the library; a close ends the frames; a text message is an error of
/// kind `InvalidData`, after which nothing more is read.
fn websocket(socket: WebSocketStream<Box<dyn ByteStream>>) -> (Frames, FrameSink) {
    let (sink, messages) = socket.split();
    let frames = stream::unfold(Some(messages), |messages| async move {
        let mut messages: SplitStream<_> = messages?;
        loop {
            let item = match messages.next().await? {
                Ok(Message::Binary(frame)) => Ok(frame),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(_)) => return None,
                Ok(Message::Text(_)) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the relay sent a text message (frames are binary messages)",
                )),
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return None;
                }
                Err(e) => Err(ws_io_error(e)),
            };
            let next = item.is_ok().then_some(messages);
            return Some((item, next));
        }
    });
    (Box::pin(frames), Box::pin(WsSink(sink)))
}

/// A WebSocket error as an I/O error: the I/O error itself where there is
/// one, else `InvalidData` (the peer broke the WebSocket protocol or sent
/// a message above the limit).
fn ws_io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

/// Frames to a WebSocket, each one binary message. (Not `sink_map_err`,
/// whose mapping runs only once.)
struct WsSink(SplitSink<WebSocketStream<Box<dyn ByteStream>>, Message>);

impl Sink<Bytes> for WsSink {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_ready_unpin(cx).map_err(ws_io_error)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> io::Result<()> {
        self.0
            .start_send_unpin(Message::Binary(frame))
            .map_err(ws_io_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_flush_unpin(cx).map_err(ws_io_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_close_unpin(cx).map_err(ws_io_error)
    }
}

/// The relay's answer to the hello, unread. A frame above the limit means
/// that something else listens at `addr`.
async fn read_welcome(
    addr: &str,
    max_frame: usize,
    reader: &mut Frames,
) -> Result<Bytes, NetError> {
    match reader.next().await {
        Some(Ok(frame)) => Ok(frame),
        Some(Err(e)) if protocol::is_too_large(&e) => Err(NetError::NotARelay {
            addr: addr.to_string(),
            source: ProtocolError::TooLarge { limit: max_frame },
        }),
        Some(Err(source)) => Err(NetError::Io {
            during: "reading the relay's hello",
            source,
        }),
        None => Err(NetError::RelayClosed {
            during_handshake: true,
        }),
    }
}

/// Does what the relay's welcome asks of the node. Returns whether the
/// connection goes on: not for a node that left ([`Node::leave`]) and that
/// the relay now counts gone, as it asked; starting it over would undo
/// its leaving.
fn admit(shared: &Shared, node: &Node, admission: Admission) -> bool {
    match admission {
        // Synced by the caller before the first message is read.
        Admission::Joined | Admission::Resumed => {}
        Admission::Sync => {
            tracing::info!(node = %node.peer_id(), "cannot resume where the connection broke; syncing");
            contained(shared, "syncing", || node.sync());
        }
        Admission::Rejoin { .. } if node.read(|r| r.has_left()) => {
            tracing::info!(node = %node.peer_id(), "the relay counts this node gone, as it left; closing");
            // Its goodbye, if unacknowledged, was dropped with the rest.
            count_lost_from(shared, node.peer_id().incarnation());
            return false;
        }
        Admission::Rejoin { dropped, applied } => {
            tracing::warn!(
                node = %node.peer_id(),
                dropped,
                applied,
                "the relay no longer knows this node; rejoining as a new incarnation"
            );
            shared.rejoined();
            let old = node.peer_id().incarnation();
            contained(shared, "rejoining", || node.rejoin());
            // A write made between the welcome and the rejoin went out as
            // the evicted incarnation's, after the welcome dropped the
            // others: the relay drops it too.
            count_lost_from(shared, old);
        }
    }
    true
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

/// The connection's life: run connections, reconnect with backoff.
async fn run(
    addr: String,
    options: ConnectOptions,
    shared: Arc<Shared>,
    node: Weak<Inner>,
    first: Conn,
    mut session: Session,
) {
    let mut conn = Some(first);
    let mut attempts = options.backoff().jitter().attempts();
    loop {
        // Stopped by a panic of the engine ([`contained`]), which set the
        // status.
        if shared.cancel.is_cancelled() {
            return;
        }
        if let Some(c) = conn.take() {
            shared.status.set(Status::Connected);
            let done = shared.outbox().done();
            let error = tokio::select! {
                e = drive(c, &shared, &node, &mut session, silence(&options), options.max_frame) => e,
                _ = shared.cancel.cancelled() => return,
            };
            if shared.cancel.is_cancelled() || node.upgrade().is_none() {
                return;
            }
            // The waits start over once a connection got something
            // acknowledged (the node's heartbeat, if nothing else), not at
            // each welcome: a relay that ends every connection after its
            // welcome (refusing a frame sent again first on each) would
            // see the node back at the shortest wait for ever.
            if shared.outbox().done() > done {
                attempts.reset();
            }
            if let NetError::Refused(reason) = error {
                // Sending it again would be refused again.
                tracing::error!(%addr, %reason, "the relay refused this node's messages");
                shared.status.set(Status::Refused(reason));
                shared.complete(|outbox| outbox.close());
                return;
            }
            if let e @ NetError::FrameTooLarge { .. } = error {
                // Reading again would meet the same frame again.
                tracing::error!(%addr, error = %e, "stopped");
                shared.status.set(Status::Failed(e.to_string()));
                shared.complete(|outbox| outbox.close());
                return;
            }
            tracing::warn!(%addr, %error, "relay connection lost; reconnecting");
            if let Some(n) = Node::upgrade(&node) {
                // Writes made until the relay is back go out packed.
                contained(&shared, "going offline", || n.set_online(false));
            }
            shared.status.set(Status::Disconnected(error.to_string()));
        }
        tokio::select! {
            _ = tokio::time::sleep(attempts.next_delay()) => {}
            _ = shared.cancel.cancelled() => return,
        }
        let Some(n) = Node::upgrade(&node) else {
            return;
        };
        // What was held goes into the outbox before the hello, so that the
        // welcome deals with it like every frame not acknowledged: sent
        // again, or dropped and counted lost if the relay evicted this
        // incarnation. Writes made while connecting are not held: held
        // past a rejoin, they would go out as the evicted incarnation's.
        contained(&shared, "going online", || n.set_online(true));
        // The hello is the node's incarnation of now, which a node that its
        // peers evicted while it stayed connected started over as: the
        // relay took its frames on that connection, and, that connection
        // gone, keeps it a member within a grace or else counts what it
        // applied of it. Its old incarnation's unacknowledged frames, whose
        // writes were counted lost when it started over, the relay drops
        // (and acknowledges).
        let incarnation = n.peer_id().incarnation();
        let attempt = tokio::select! {
            r = establish(&addr, &options, &mut session, &shared, &n, incarnation) => r,
            _ = shared.cancel.cancelled() => return,
        };
        match attempt {
            Ok((c, admission, _)) => {
                tracing::info!(%addr, "reconnected to the relay");
                if !admit(&shared, &n, admission) {
                    shared.shut();
                    return;
                }
                conn = Some(c);
            }
            Err(e @ NetError::Refused(_)) => {
                tracing::error!(%addr, error = %e, "reconnection refused");
                shared.status.set(Status::Disconnected(e.to_string()));
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "reconnection failed");
                shared.status.set(Status::Disconnected(e.to_string()));
            }
        }
        if conn.is_none() {
            // Offline again until the next attempt.
            contained(&shared, "going offline", || n.set_online(false));
        }
    }
}

/// How long the relay may stay silent before the connection counts as
/// dead. The node sends at least a heartbeat each `heartbeat` and the relay
/// acknowledges each frame, so a live relay is never silent for long; a
/// connection that stalls without failing (a partition, a relay that
/// vanished without closing it) would otherwise hang on until TCP gives
/// up, for many minutes, while the relay evicts the node.
fn silence(options: &ConnectOptions) -> Duration {
    // No heartbeats (`Duration::MAX`): as good as no watch, yet a time the
    // watch can add to an instant.
    options
        .heartbeat
        .saturating_mul(10)
        .clamp(Duration::from_secs(1), NEVER)
}

/// Carries frames both ways until the connection fails; returns why
/// ([`NetError::Refused`] when the relay refused what the node sent,
/// [`NetError::Timeout`] when the relay was silent for `silence`).
async fn drive(
    conn: Conn,
    shared: &Shared,
    node: &Weak<Inner>,
    session: &mut Session,
    silence: Duration,
    max_frame: usize,
) -> NetError {
    let Conn {
        mut reader,
        mut writer,
    } = conn;
    let read = async {
        let mut quiet = Silence::new(silence);
        // What the stream gave after the frames read ahead: its end, or an
        // error.
        let mut ahead: Option<Option<io::Result<Bytes>>> = None;
        let mut frames: Vec<Bytes> = Vec::new();
        let mut messages: Vec<Bytes> = Vec::new();
        loop {
            let frame = match ahead.take() {
                Some(end) => end,
                None => tokio::select! {
                    biased;
                    frame = reader.next() => frame,
                    after = quiet.elapsed() => {
                        return NetError::Timeout {
                            what: "a frame from the relay, which went silent",
                            after,
                        };
                    }
                },
            };
            quiet.heard();
            let Some(frame) = frame else {
                break;
            };
            let frame = match frame {
                Ok(f) => f,
                Err(source) if protocol::is_too_large(&source) => {
                    return NetError::FrameTooLarge { limit: max_frame };
                }
                Err(source) => {
                    return NetError::Io {
                        during: "reading from the relay",
                        source,
                    };
                }
            };
            let Some(node) = Node::upgrade(node) else {
                return NetError::Closed;
            };
            // The frames already read go with this one: the messages among
            // them are applied under one hold of the node.
            frames.push(frame);
            while frames.len() < READ_AHEAD {
                match reader.next().now_or_never() {
                    Some(Some(Ok(f))) => frames.push(f),
                    None => break,
                    Some(end) => {
                        ahead = Some(end);
                        break;
                    }
                }
            }
            let mut end = None;
            for frame in frames.drain(..) {
                let incoming = if protocol::Down::is_message(&frame) {
                    // Nothing to complete: no flush waiter to wake.
                    session.receive(frame, &mut shared.outbox())
                } else {
                    // What follows a message (an acknowledgement: a flush
                    // it completes) comes after the message is applied.
                    receive_all(shared, &node, &mut messages);
                    shared.complete(|outbox| session.receive(frame, outbox))
                };
                match incoming {
                    Ok(Incoming::Message(bytes)) => messages.push(bytes),
                    Ok(Incoming::Acked) => {}
                    Ok(Incoming::Closing(reason)) => {
                        end = Some(NetError::Refused(reason));
                        break;
                    }
                    Err(e) => {
                        end = Some(e.into());
                        break;
                    }
                }
            }
            receive_all(shared, &node, &mut messages);
            if let Some(e) = end {
                return e;
            }
            if shared.cancel.is_cancelled() {
                return NetError::Closed;
            }
        }
        NetError::RelayClosed {
            during_handshake: false,
        }
    };
    let write = async {
        let mut batch = Vec::new();
        loop {
            let notified = shared.queued.notified();
            // Kept by the outbox until acknowledged, to be sent again after
            // a failure.
            shared.outbox().take_batch(usize::MAX, &mut batch);
            if batch.is_empty() {
                notified.await;
                continue;
            }
            for frame in batch.drain(..) {
                if let Err(source) = writer.feed(frame).await {
                    return NetError::Io {
                        during: "writing to the relay",
                        source,
                    };
                }
            }
            if let Err(source) = SinkExt::<Bytes>::flush(&mut writer).await {
                return NetError::Io {
                    during: "writing to the relay",
                    source,
                };
            }
        }
    };
    tokio::select! {
        e = read => e,
        e = write => e,
    }
}

/// How many frames already read are handled together.
const READ_AHEAD: usize = 64;

/// Applies `messages` from the relay to `node` together, and empties it.
fn receive_all(shared: &Shared, node: &Node, messages: &mut Vec<Bytes>) {
    // Nothing more is applied to a node whose engine panicked.
    if messages.is_empty() || shared.cancel.is_cancelled() {
        messages.clear();
        return;
    }
    let started_over = contained(shared, "applying the relay's messages", || {
        node.receive_all(messages.iter().map(|m| &m[..]), |e| {
            tracing::warn!(error = %e, "refused a message from the relay");
        })
    });
    messages.clear();
    if let Some(Some(was)) = started_over {
        evicted_while_connected(shared, was);
    }
}

/// The node's peers (or the relay, as it was silent too long) evicted it
/// while it was connected, and it started over as a new incarnation. The
/// relay acknowledged everything it applied of the old incarnation before
/// it sent the eviction; whatever of it is still unacknowledged the relay
/// drops (and acknowledges), on this connection or when sent again on the
/// next, so its writes count as lost now, and only now.
fn evicted_while_connected(shared: &Shared, old: u32) {
    let lost = count_lost_from(shared, old);
    tracing::warn!(
        lost,
        "the relay evicted this node; rejoined as a new incarnation"
    );
    shared.rejoined();
}

/// Counts as lost the oldest unacknowledged frames sent as the incarnation
/// `old`, which the relay evicted: it drops them, yet acknowledges them.
fn count_lost_from(shared: &Shared, old: u32) -> u64 {
    shared.complete(|outbox| outbox.count_lost_while(|frame| protocol::Up::sent_as(frame, old)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's first three messages, and the node to apply them to, with
    /// its connection's state.
    fn three_messages() -> (Node, Arc<Shared>, Vec<Bytes>) {
        let from = Node::new("alpha");
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = sent.clone();
        from.set_sender(move |m| log.lock().unwrap().push(Bytes::from(m.bytes().to_vec())));
        let array = from.set_root(serde_json::json!([])).unwrap();
        let array = array.as_array().cloned().unwrap();
        array.push(1).unwrap();
        array.push(2).unwrap();
        let messages = sent.lock().unwrap().clone();
        assert!(messages.len() >= 3, "{}", messages.len());
        let node = Node::new("bravo");
        node.set_sender(|_| {});
        let shared = Arc::new(Shared::new(Outbox::counting(protocol::Up::writes_in)));
        shared.status.set_now(Status::Connected);
        (node, shared, messages)
    }

    /// A listener's panic stops at the listener: the whole batch is
    /// applied and the connection goes on.
    #[tokio::test]
    async fn a_listener_s_panic_leaves_the_batch_applied_and_the_connection_up() {
        let (node, shared, mut messages) = three_messages();
        let _sub = node.on_change(|_| panic!("listener"));
        receive_all(&shared, &node, &mut messages);
        let got = node.root().as_array().map(crate::ArrayRef::len);
        assert_eq!(got, Some(2));
        assert!(!shared.cancel.is_cancelled());
        assert_eq!(*shared.status.subscribe().borrow(), Status::Connected);
    }

    /// The engine's own panic, applying the second message of a batch,
    /// stops the connection for good with a status that says so: going on
    /// would build on a half-changed replica, without the rest of the
    /// batch.
    #[tokio::test]
    async fn an_engine_panic_stops_the_connection() {
        let (node, shared, mut messages) = three_messages();
        let mut status = shared.status.subscribe();
        crate::node::fault::PANIC_AFTER.set(Some(1));
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            receive_all(&shared, &node, &mut messages)
        }));
        crate::node::fault::PANIC_AFTER.set(None);
        let failed = tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| matches!(s, Status::Failed(_))),
        )
        .await
        .is_ok_and(|s| s.is_ok());
        assert!(failed, "status {:?}", *status.borrow());
        assert!(shared.cancel.is_cancelled());
    }

    #[test]
    fn addresses_name_their_transport() {
        let cases = [
            ("127.0.0.1:7878", "127.0.0.1:7878", false, false),
            ("ws://127.0.0.1:7878/", "127.0.0.1:7878", true, false),
            ("ws://127.0.0.1:7878", "127.0.0.1:7878", true, false),
            (
                "wss://relay.example:443/any/path",
                "relay.example:443",
                true,
                true,
            ),
            ("wss://[::1]:7878/", "[::1]:7878", true, true),
        ];
        for (addr, host_port, websocket, secure) in cases {
            let t = Target::of(addr);
            assert_eq!(
                (t.host_port, t.websocket, t.secure),
                (host_port, websocket, secure),
                "{addr}"
            );
        }
        assert_eq!(host_of("[::1]:7878"), "::1");
    }

    #[tokio::test]
    async fn a_timeout_too_long_to_add_to_now_is_no_panic() {
        // A port nobody listens on: refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = ConnectOptions::new("d").timeouts(Duration::MAX, Duration::MAX);
        let e = super::super::connect(&format!("127.0.0.1:{port}"), "a", options)
            .await
            .unwrap_err();
        assert!(matches!(e, NetError::Connect { .. }), "{e}");
    }
}
