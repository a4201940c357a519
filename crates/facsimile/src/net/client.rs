//! The relay transport: one background task per connected node carries its
//! frames over TCP (or TLS) and reconnects when the connection fails.

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::ServerName;

use super::connection::{Connection, Shared, Status};
use super::driver::run_timers;
use super::error::NetError;
use super::options::ConnectOptions;
use super::protocol::{
    self, Admission, ByteStream, FrameReader, FrameWriter, HelloError, Incoming, ProtocolError,
    Session,
};
use crate::node::{Inner, Node, Outgoing};

/// A relay peer is never evicted by a client on its own: with a relay the
/// transport decides who left, so clients only send heartbeats.
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
        .max_message_size(options.max_frame)
        .failure_detection(options.heartbeat, options.peer_timeout.unwrap_or(NEVER));
    let node = Node::with_config(hostname, config);
    let shared = Arc::new(Shared::new());
    let sink = shared.clone();
    node.set_sender(move |out: Outgoing| {
        if Session::send(&mut sink.outbox(), out.to(), out.as_bytes()) {
            sink.queued.notify_one();
        }
    });
    let mut session =
        Session::new(options.document.clone(), options.token.clone()).read_only(options.read_only);
    let (conn, admission) = establish(addr, &options, &mut session, &shared, &node).await?;
    admit(&shared, &node, admission);
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
        conn,
        session,
    ));
    tokio::spawn(run_timers(shared.clone(), node.downgrade()));
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

/// An established connection, after the relay's welcome.
struct Conn {
    reader: FrameReader,
    writer: FrameWriter,
}

/// Opens a connection and says hello, asking to resume where the session
/// stopped reading; readies the outbox for the connection.
async fn establish(
    addr: &str,
    options: &ConnectOptions,
    session: &mut Session,
    shared: &Shared,
    node: &Node,
) -> Result<(Conn, Admission), NetError> {
    let deadline = tokio::time::Instant::now() + options.connect_timeout;
    let stream = tokio::time::timeout_at(deadline, open(addr, options))
        .await
        .map_err(|_| NetError::Timeout {
            what: "the connection to the relay",
            after: options.connect_timeout,
        })??;
    let (mut reader, mut writer) = protocol::framed(stream, options.max_frame);
    let hello = session.hello(node.hostname(), node.peer_id().incarnation());
    let handshake = async {
        writer.send(hello).await.map_err(|source| NetError::Io {
            during: "sending the hello",
            source,
        })?;
        read_welcome(addr, &mut reader).await
    };
    // Connected but silent: whatever listens there does not speak the
    // relay's protocol (a relay always answers a hello at once).
    let welcome = tokio::time::timeout_at(deadline, handshake)
        .await
        .map_err(|_| NetError::NotARelay {
            addr: addr.to_string(),
            source: ProtocolError::Silent(options.connect_timeout),
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
    Ok((Conn { reader, writer }, admission))
}

/// The TCP connection, with TLS where the options ask for it.
async fn open(addr: &str, options: &ConnectOptions) -> Result<Box<dyn ByteStream>, NetError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| NetError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &options.tls else {
        return Ok(Box::new(tcp));
    };
    let tls_error = |source| NetError::Tls {
        addr: addr.to_string(),
        source,
    };
    let host = tls.server_name.clone().unwrap_or_else(|| host_of(addr));
    let name = ServerName::try_from(host)
        .map_err(|e| tls_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = connector.connect(name, tcp).await.map_err(tls_error)?;
    Ok(Box::new(stream))
}

/// The relay's answer to the hello, unread. A frame above the limit means
/// that something else listens at `addr`.
async fn read_welcome(addr: &str, reader: &mut FrameReader) -> Result<Bytes, NetError> {
    match reader.next().await {
        Some(Ok(frame)) => Ok(frame.freeze()),
        Some(Err(e)) if protocol::is_too_large(&e) => Err(NetError::NotARelay {
            addr: addr.to_string(),
            source: ProtocolError::TooLarge {
                limit: reader.decoder().max_frame_length(),
            },
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

/// Does what the relay's welcome asks of the node.
fn admit(shared: &Shared, node: &Node, admission: Admission) {
    match admission {
        // Synced by the caller before the first message is read.
        Admission::Joined | Admission::Resumed => {}
        Admission::Sync => {
            tracing::info!(node = %node.peer_id(), "cannot resume where the connection broke; syncing");
            node.sync();
        }
        Admission::Rejoin { dropped } => {
            tracing::warn!(
                node = %node.peer_id(),
                dropped,
                "the relay no longer knows this node; rejoining as a new incarnation"
            );
            shared.rejoined();
            node.rejoin();
        }
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
        if let Some(c) = conn.take() {
            let _ = shared.status.send_replace(Status::Connected);
            attempts.reset();
            let error = tokio::select! {
                e = drive(c, &shared, &node, &mut session) => e,
                _ = shared.cancel.cancelled() => return,
            };
            if shared.cancel.is_cancelled() || node.upgrade().is_none() {
                return;
            }
            if let NetError::Refused(reason) = error {
                // Sending it again would be refused again.
                tracing::error!(%addr, %reason, "the relay refused this node's messages");
                let _ = shared.status.send_replace(Status::Refused(reason));
                shared.complete(|outbox| outbox.close());
                return;
            }
            tracing::warn!(%addr, %error, "relay connection lost; reconnecting");
            let _ = shared
                .status
                .send_replace(Status::Disconnected(error.to_string()));
        }
        tokio::select! {
            _ = tokio::time::sleep(attempts.next_delay()) => {}
            _ = shared.cancel.cancelled() => return,
        }
        let Some(n) = Node::upgrade(&node) else {
            return;
        };
        let attempt = tokio::select! {
            r = establish(&addr, &options, &mut session, &shared, &n) => r,
            _ = shared.cancel.cancelled() => return,
        };
        match attempt {
            Ok((c, admission)) => {
                tracing::info!(%addr, "reconnected to the relay");
                admit(&shared, &n, admission);
                conn = Some(c);
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

/// Carries frames both ways until the connection fails; returns why
/// ([`NetError::Refused`] when the relay refused what the node sent).
async fn drive(conn: Conn, shared: &Shared, node: &Weak<Inner>, session: &mut Session) -> NetError {
    let Conn {
        mut reader,
        mut writer,
    } = conn;
    let read = async {
        while let Some(frame) = reader.next().await {
            let frame = match frame {
                Ok(f) => f.freeze(),
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
            match shared.complete(|outbox| session.receive(frame, outbox)) {
                Ok(Incoming::Message(bytes)) => {
                    if let Err(e) = node.receive(&bytes) {
                        tracing::warn!(error = %e, "refused a message from the relay");
                    }
                }
                Ok(Incoming::Acked) => {}
                Ok(Incoming::Closing(reason)) => return NetError::Refused(reason),
                Err(e) => return e.into(),
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
