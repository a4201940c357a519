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
    self, ByteStream, ClientHello, Down, FrameReader, FrameWriter, PROTOCOL_VERSION, ProtocolError,
    Resume, ServerHello, Up,
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
        let up = match out.to() {
            None => Up::Broadcast(Bytes::copy_from_slice(out.as_bytes())),
            Some(tag) => Up::To(tag, Bytes::copy_from_slice(out.as_bytes())),
        };
        sink.enqueue(up.encode());
    });
    let (session, welcome) = establish(addr, &options, None, &node).await?;
    let mut resume = None;
    apply_welcome(&shared, &node, &welcome, &mut resume);
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
        resume,
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
struct Session {
    reader: FrameReader,
    writer: FrameWriter,
}

/// What the relay's welcome says about the node and its queue.
struct Welcome {
    log: u64,
    position: u64,
    resumed: bool,
    member: bool,
    evicted: bool,
}

/// Opens a connection and says hello, asking to resume after `resume`.
async fn establish(
    addr: &str,
    options: &ConnectOptions,
    resume: Option<Resume>,
    node: &Node,
) -> Result<(Session, Welcome), NetError> {
    let deadline = tokio::time::Instant::now() + options.connect_timeout;
    let stream = tokio::time::timeout_at(deadline, open(addr, options))
        .await
        .map_err(|_| NetError::Timeout {
            what: "the connection to the relay",
            after: options.connect_timeout,
        })??;
    let (mut reader, mut writer) = protocol::framed(stream, options.max_frame);
    let hello = ClientHello {
        protocol: PROTOCOL_VERSION,
        document: options.document.clone(),
        token: options.token.clone(),
        hostname: node.hostname().to_string(),
        incarnation: node.peer_id().incarnation(),
        resume,
    };
    let handshake = async {
        writer
            .send(hello.encode())
            .await
            .map_err(|source| NetError::Io {
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
    Ok((Session { reader, writer }, welcome))
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

/// The relay's answer to the hello. Anything but a relay's hello means
/// that something else listens at `addr`.
async fn read_welcome(addr: &str, reader: &mut FrameReader) -> Result<Welcome, NetError> {
    let not_a_relay = |source| NetError::NotARelay {
        addr: addr.to_string(),
        source,
    };
    let frame = match reader.next().await {
        Some(Ok(frame)) => frame.freeze(),
        Some(Err(e)) if protocol::is_too_large(&e) => {
            return Err(not_a_relay(ProtocolError::TooLarge {
                limit: reader.decoder().max_frame_length(),
            }));
        }
        Some(Err(source)) => {
            return Err(NetError::Io {
                during: "reading the relay's hello",
                source,
            });
        }
        None => {
            return Err(NetError::RelayClosed {
                during_handshake: true,
            });
        }
    };
    match Down::decode(frame).map_err(not_a_relay)? {
        Down::Hello(ServerHello::Welcome {
            log,
            position,
            relay: _,
            resumed,
            member,
            evicted,
        }) => Ok(Welcome {
            log,
            position,
            resumed,
            member,
            evicted,
        }),
        Down::Hello(ServerHello::Refused { reason }) => Err(NetError::Refused(reason)),
        other => Err(not_a_relay(ProtocolError::NotAHello(other.kind()))),
    }
}

/// Decides what the node resends and whether it must catch up by a sync or
/// start over. `resume` is where the last connection stopped reading (none
/// before the first).
fn apply_welcome(shared: &Shared, node: &Node, w: &Welcome, resume: &mut Option<Resume>) {
    let first = resume.is_none();
    // The relay no longer knows this incarnation (it was evicted, or the
    // relay's data were lost): its queued messages would be refused.
    let rejoin = w.evicted || (!first && !w.resumed && !w.member);
    if !w.resumed {
        *resume = Some(Resume {
            log: w.log,
            position: w.position,
        });
    }
    shared.complete(|outbox| {
        if rejoin {
            outbox.drop_all();
        } else {
            outbox.requeue_unacked();
        }
    });
    if rejoin {
        tracing::warn!(
            node = %node.peer_id(),
            evicted = w.evicted,
            "the relay no longer knows this node; rejoining as a new incarnation"
        );
        shared.rejoined();
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
    mut resume: Option<Resume>,
) {
    let mut session = Some(first);
    let mut attempts = options.backoff().jitter().attempts();
    loop {
        if let Some(s) = session.take() {
            let _ = shared.status.send_replace(Status::Connected);
            attempts.reset();
            let error = tokio::select! {
                e = drive(s, &shared, &node, &mut resume) => e,
                _ = shared.cancel.cancelled() => return,
            };
            if shared.cancel.is_cancelled() || node.upgrade().is_none() {
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
            r = establish(&addr, &options, resume, &n) => r,
            _ = shared.cancel.cancelled() => return,
        };
        match attempt {
            Ok((s, welcome)) => {
                tracing::info!(%addr, "reconnected to the relay");
                apply_welcome(&shared, &n, &welcome, &mut resume);
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

/// Carries frames both ways until the connection fails; returns why.
async fn drive(
    session: Session,
    shared: &Shared,
    node: &Weak<Inner>,
    resume: &mut Option<Resume>,
) -> NetError {
    let Session {
        mut reader,
        mut writer,
    } = session;
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
            match Down::decode(frame) {
                Ok(Down::Message { position, bytes }) => {
                    if let Err(e) = node.receive(&bytes) {
                        tracing::warn!(error = %e, position, "refused a message from the relay");
                    }
                    if let Some(r) = resume.as_mut() {
                        r.position = r.position.max(position);
                    }
                }
                Ok(Down::Direct(bytes)) => {
                    if let Err(e) = node.receive(&bytes) {
                        tracing::warn!(error = %e, "refused a directed message");
                    }
                }
                Ok(Down::Ack(n)) => {
                    if let Err(e) = shared.complete(|outbox| outbox.ack_up_to(n)) {
                        return e.into();
                    }
                }
                Ok(Down::Hello(_)) => return ProtocolError::SecondHello.into(),
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
