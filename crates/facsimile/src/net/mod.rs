//! Network transports: connect a [`Node`](crate::Node) to a relay,
//! `facsimile serve`, over TCP or WebSocket and optionally TLS (feature
//! `tcp`), or to a document on NATS JetStream (feature `nats`, module
//! `nats`).
//!
//! The relay orders every message of a document into one sequence, stores
//! it durably and passes it to every other node of the document; it is
//! itself a replica, so a node that joins (or comes back after missing too
//! much) gets the document from it. [`connect`] returns a [`Connection`]
//! whose background task reconnects with backoff, resends what the relay
//! had not acknowledged and resumes exactly where it stopped reading.
//!
//! ```no_run
//! use facsimile::net::{self, ConnectOptions};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let options = ConnectOptions::new("inventory").token("s3cret");
//! let alice = net::connect("127.0.0.1:7878", "alice", options.clone()).await?;
//! let bob = net::connect("127.0.0.1:7878", "bob", options).await?;
//!
//! let _watch = bob.node().on_change(|ev| println!("bob saw {:?} from {:?}", ev.prop(), ev.origin()));
//! alice.node().set_root(json!({"apples": 3}))?;
//! alice.flush().await?; // the relay has it on disk
//!
//! let root = alice.node().root_map().unwrap();
//! let guard = alice.node().lock(&root).await?;
//! root.set("apples", 4)?;
//! drop(guard);
//! # Ok(()) }
//! ```
//!
//! Delivery: the relay acknowledges a message once it is applied and on
//! its disk; [`Connection::flush`] waits for that. A node that disconnects
//! is evicted by the relay at once (its locks pass on); when it reconnects
//! it learns so, and rejoins as a new incarnation with a fresh copy of the
//! document, dropping writes the relay never acknowledged. When the relay
//! itself restarts, nodes resume where they were and keep their locks.

mod backoff;
#[cfg(feature = "tcp")]
mod client;
mod connection;
mod driver;
mod error;
#[cfg(feature = "nats")]
pub mod nats;
mod options;
pub mod protocol;
mod silence;
#[cfg(feature = "tcp")]
mod tls;

pub use connection::{Connection, Status};
pub use error::NetError;
#[cfg(feature = "nats")]
pub use nats::NatsOptions;
pub use options::ConnectOptions;
#[cfg(feature = "tcp")]
pub use tls::TlsOptions;
#[cfg(feature = "tcp")]
pub use tokio_rustls::rustls;

/// Connects a new node to the document at `addr`, syncs it and returns once
/// it is complete: a relay's `host:port` (its TCP protocol), its
/// `ws://host:port/` or `wss://host:port/` (the same protocol over a
/// WebSocket, on the same port; `wss://` needs TLS options), or with the
/// `nats` feature a NATS server's `nats://host:port` (several, separated
/// by commas, for a cluster; module `nats`).
///
/// The node's messages go to the relay, which orders them, stores them and
/// passes them to the other nodes of the document; the relay's messages
/// reach the node. A background task on the current tokio runtime
/// reconnects with exponential backoff when the connection fails, sends
/// again whatever the relay had not acknowledged, and catches up on what
/// the node missed (or syncs again when the relay can no longer tell).
/// Listeners of the node run on that task: do not block in them. A
/// connection's task (relay or NATS) logs a listener's panic and goes on
/// (the node's other listeners still hear the change, and the rest of
/// what the relay or the stream sent is applied); a panic of the engine
/// itself stops the connection for good, its status [`Status::Failed`].
///
/// # Errors
/// [`NetError::Connect`], [`NetError::Tls`], [`NetError::NotARelay`] or
/// [`NetError::Refused`] when the first connection fails (later failures
/// are retried), [`NetError::Timeout`] when the document does not arrive
/// in time, [`NetError::FrameTooLarge`] when the relay sends a frame above
/// [`ConnectOptions::max_frame`] before it is complete (and
/// [`NetError::Refused`] when the relay refuses the node then),
/// [`NetError::Nats`] when a NATS server fails, [`NetError::StreamRefused`]
/// when the document's NATS stream exists with settings this node cannot
/// adopt, [`NetError::Unsupported`] for an address whose transport this
/// build leaves out, and [`NetError::HostnameTooLong`] for a hostname
/// peers would refuse.
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
    check_hostname(hostname)?;
    if addr.starts_with("nats://") {
        connect_nats(addr, hostname, options).await
    } else {
        connect_relay(addr, hostname, options).await
    }
}

/// Refuses a hostname longer than peers accept
/// ([`MAX_HOSTNAME`](crate::MAX_HOSTNAME) bytes), as [`connect`] does.
///
/// # Errors
/// [`NetError::HostnameTooLong`].
pub fn check_hostname(hostname: &str) -> Result<(), NetError> {
    match hostname.len() <= crate::MAX_HOSTNAME {
        true => Ok(()),
        false => Err(NetError::HostnameTooLong {
            len: hostname.len(),
        }),
    }
}

#[cfg(feature = "nats")]
async fn connect_nats(
    addr: &str,
    hostname: &str,
    options: ConnectOptions,
) -> Result<Connection, NetError> {
    nats::connect(addr, hostname, options).await
}

#[cfg(not(feature = "nats"))]
async fn connect_nats(addr: &str, _: &str, _: ConnectOptions) -> Result<Connection, NetError> {
    Err(NetError::Unsupported {
        addr: addr.to_string(),
        feature: "nats",
    })
}

#[cfg(feature = "tcp")]
async fn connect_relay(
    addr: &str,
    hostname: &str,
    options: ConnectOptions,
) -> Result<Connection, NetError> {
    client::connect(addr, hostname, options).await
}

#[cfg(not(feature = "tcp"))]
async fn connect_relay(addr: &str, _: &str, _: ConnectOptions) -> Result<Connection, NetError> {
    Err(NetError::Unsupported {
        addr: addr.to_string(),
        feature: "tcp",
    })
}
