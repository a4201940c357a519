//! Why connecting, or a connection, failed.

use std::io;
use std::time::Duration;

use super::protocol::ProtocolError;

/// Why connecting to a document, or a connection, failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The relay could not be reached.
    #[error("could not connect to {addr}: {source}; is `facsimile serve` listening there?")]
    Connect {
        /// The address tried.
        addr: String,
        /// What went wrong.
        source: io::Error,
    },
    /// The relay refused the connection, for the reason it gave.
    #[error("the relay refused the connection: {0}")]
    Refused(String),
    /// The TLS handshake failed, or the relay's name is not one a
    /// certificate can carry. The rustls error, where there is one, is
    /// the source's inner error.
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        /// The address tried.
        addr: String,
        /// What went wrong.
        source: io::Error,
    },
    /// What answered at the address is not a facsimile relay: its first
    /// frame is not a relay's hello (an HTTP server, another service, or a
    /// relay that expects TLS).
    #[error(
        "the peer at {addr} is not a facsimile relay (or is one that expects TLS); \
         check the address and port"
    )]
    NotARelay {
        /// The address tried.
        addr: String,
        /// What was wrong with its answer.
        source: ProtocolError,
    },
    /// The relay broke the protocol.
    #[error("relay protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// Reading from or writing to the relay failed.
    #[error("{during}: {source}")]
    Io {
        /// What the connection was doing.
        during: &'static str,
        /// What went wrong.
        source: io::Error,
    },
    /// The relay closed the connection.
    #[error("the relay closed the connection{}", if *.during_handshake { " during the handshake" } else { "" })]
    RelayClosed {
        /// Before it answered the client's hello.
        during_handshake: bool,
    },
    /// Something took longer than its timeout.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// Messages carrying writes (changes to the document) were dropped
    /// unacknowledged, and those writes are lost:
    /// the relay had evicted this node (it was disconnected or silent too
    /// long), or over NATS the log refused them (the node's lease had run
    /// out, a write raced another node's lock grant, or a message was
    /// larger than the server accepts). The count is of the writes those
    /// messages carried (a backlog of writes made offline and sent as one
    /// message counts each; a write of a nested value counts once):
    /// heartbeats and other messages that change nothing are dropped
    /// with them without a report, a lost lock request fails its future
    /// instead, and a lost release of an evicted node loses nothing (the
    /// eviction frees its locks). The node started over as a new
    /// incarnation where it had to.
    ///
    /// Over NATS, after the node's lease ran out, its new incarnation makes
    /// the refused writes again where that is safe
    /// ([`facsimile_core::Replica::carry_over`]: no lock held when they
    /// were made nor after, what they name still there); the count is then
    /// of the writes that could not be made again.
    #[error(
        "{0} unacknowledged writes were dropped: this node was evicted, or the log refused them"
    )]
    WritesLost(u64),
    /// The relay sent a frame larger than this node accepts
    /// ([`ConnectOptions::max_frame`](super::ConnectOptions::max_frame)).
    /// The connection stops: the relay would send the same frame again.
    #[error(
        "the relay sent a frame larger than this node's max_frame of {limit} bytes; \
         raise ConnectOptions::max_frame to the relay's --max-frame"
    )]
    FrameTooLarge {
        /// This node's limit.
        limit: usize,
    },
    /// The connection was closed.
    #[error("the connection is closed")]
    Closed,
    /// The NATS server could not be reached or refused an operation.
    #[error("NATS: {what}: {source}")]
    Nats {
        /// What the node was doing.
        what: String,
        /// The error of the NATS client.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The document's NATS JetStream stream exists, but this node cannot
    /// adopt its settings, for the reason given: the stream takes another
    /// subject, drops messages once read or by age or count, does not
    /// acknowledge them, or
    /// stores messages smaller than a node needs (it was made by other
    /// means, or by a node with other settings). Connecting again does not
    /// help: change the stream's settings, or delete it if it holds no
    /// document.
    #[error("the NATS stream {stream} cannot carry the document: {reason}")]
    StreamRefused {
        /// The stream's name.
        stream: String,
        /// Why this node cannot adopt it.
        reason: String,
    },
    /// The document's NATS JetStream stream no longer holds the messages
    /// `from` to `to` (stream sequences), and the newest snapshot does not
    /// cover them: they were removed by other means than the nodes' own
    /// purges (by hand, or by limits set on the stream since), so the
    /// document cannot be read: found at once when they are at the
    /// stream's head, when the reader reaches them when further on.
    /// Connecting again helps once a node that read past them saves a
    /// snapshot. A node already connected that meets them says so by its
    /// status ([`Status::Degraded`](super::Status::Degraded), with this
    /// message) and starts over from that snapshot.
    #[error("the NATS stream {stream} lacks the messages {from} to {to}, which no snapshot covers")]
    LogGap {
        /// The stream's name.
        stream: String,
        /// The first message missing.
        from: u64,
        /// The last message missing.
        to: u64,
    },
    /// The address needs a transport that this build of facsimile leaves
    /// out.
    #[error("{addr}: facsimile was built without the `{feature}` feature")]
    Unsupported {
        /// The address.
        addr: String,
        /// The cargo feature of `facsimile` that the address needs.
        feature: &'static str,
    },
    /// The hostname is longer than peers accept
    /// ([`MAX_HOSTNAME`](crate::MAX_HOSTNAME) bytes).
    #[error("a hostname is at most {max} bytes of UTF-8; this one has {len}", max = crate::MAX_HOSTNAME)]
    HostnameTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// [`Connection::flush`](super::Connection::flush) or
    /// [`Connection::close`](super::Connection::close) was awaited inside a
    /// listener (or the sender) of a node, this connection's or any other,
    /// on the same thread. The listener runs inside that node's pump, which
    /// it holds until it returns, and the flush hands over the node's
    /// messages under the node's pump: it would wait for ever for this
    /// thread's own, or for another thread's whose listener waits for this
    /// one in turn. Nothing was done; spawn the wait onto a runtime, or
    /// flush after the listener returns.
    #[error(
        "a connection cannot be flushed or closed inside a listener (or the sender) of a node: \
         spawn it, or call it after the listener returns"
    )]
    InListener,
}
