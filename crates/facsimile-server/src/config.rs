//! The relay's settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use facsimile::net::protocol::{DEFAULT_HEARTBEAT, DEFAULT_MAX_FRAME};
use tokio_rustls::rustls;

/// Settings of a [`crate::Server`]: `Default` plus chained setters.
///
/// ```
/// use facsimile_server::ServerConfig;
/// let config = ServerConfig::default()
///     .listen("127.0.0.1:0".parse().unwrap())
///     .data_dir("relay-data")
///     .token("s3cret")
///     .max_clients(64);
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub(crate) listen: SocketAddr,
    pub(crate) data: Option<PathBuf>,
    pub(crate) token: Option<String>,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) max_frame: usize,
    pub(crate) max_clients: usize,
    pub(crate) max_documents: usize,
    pub(crate) client_queue: usize,
    pub(crate) document_queue: Option<usize>,
    pub(crate) compact_bytes: u64,
    pub(crate) heartbeat: Duration,
    pub(crate) peer_timeout: Duration,
    pub(crate) reconnect_grace: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) inspector_assets: PathBuf,
    pub(crate) documents_on_runtime: bool,
    pub(crate) close_idle: Option<Duration>,
}

/// Where the inspector's assets (the JavaScript package's browser build)
/// are by default: the `js/dist` directory of the source tree the relay
/// was built from.
pub const DEFAULT_INSPECTOR_ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../js/dist");

/// Room for a hello besides its token: its document name (at most 128
/// bytes), hostname (at most [`facsimile_core::MAX_HOSTNAME`]) and numbers
/// take less than 1,200 bytes; the rest is for fields of later versions.
const HELLO_ROOM: usize = 64 << 10;

/// The default address: port 7878 on loopback.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid address"),
            data: Some(PathBuf::from("facsimile-data")),
            token: None,
            tls: None,
            max_frame: DEFAULT_MAX_FRAME,
            max_clients: 1024,
            max_documents: 1024,
            client_queue: 64 << 20,
            document_queue: None,
            compact_bytes: 64 << 20,
            heartbeat: DEFAULT_HEARTBEAT,
            peer_timeout: Duration::from_secs(10),
            reconnect_grace: Duration::ZERO,
            handshake_timeout: Duration::from_secs(10),
            inspector_assets: PathBuf::from(DEFAULT_INSPECTOR_ASSETS),
            documents_on_runtime: false,
            close_idle: Some(Duration::from_secs(60)),
        }
    }
}

impl ServerConfig {
    /// The address to listen on (default `127.0.0.1:7878`; port 0 picks a
    /// free one, see [`crate::Server::local_addr`]).
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().listen("0.0.0.0:7878".parse().unwrap());
    /// ```
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Where documents are stored (default `./facsimile-data`): one
    /// directory per document with a snapshot and a log. A relay locks it
    /// while it runs: a second relay on it fails to start
    /// ([`crate::DataDirInUse`]).
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().data_dir("/var/lib/facsimile");
    /// ```
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data = Some(dir.into());
        self
    }

    /// Keeps nothing on disk: a restart loses every document.
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().ephemeral();
    /// ```
    pub fn ephemeral(mut self) -> Self {
        self.data = None;
        self
    }

    /// The shared token clients must present (default: none, anybody may
    /// connect).
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().token("s3cret");
    /// ```
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Serves TLS with this configuration (see [`crate::tls::load`]).
    pub fn tls(mut self, tls: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The largest frame, in bytes, either way (default 16 MiB). A client
    /// sending a larger one is disconnected; a document whose state exceeds
    /// it cannot be sent to a joiner. A relay restarted with a smaller
    /// limit keeps every message it logged under the larger one.
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().max_frame(1 << 20);
    /// ```
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// At most this many connections at once (default 1024); more are
    /// refused with a reason.
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().max_clients(16);
    /// ```
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }

    /// At most this many documents open at once (default 1024), each with
    /// a thread and its replica in memory; a client asking for another is
    /// refused with a reason, until one closes
    /// ([`ServerConfig::close_idle`]). A read-only client never creates a
    /// document: one that names a document not stored (nor open) is
    /// refused as asking for no such document.
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().max_documents(64);
    /// ```
    pub fn max_documents(mut self, n: usize) -> Self {
        self.max_documents = n;
        self
    }

    /// Bytes queued for one client before it is cut off as too slow
    /// (default 64 MiB; at least twice the largest frame is sensible).
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().client_queue(8 << 20);
    /// ```
    pub fn client_queue(mut self, bytes: usize) -> Self {
        self.client_queue = bytes;
        self
    }

    /// Bytes of its clients' frames one document holds at once: waiting
    /// for the document's thread, or in the batch it is committing
    /// (default four times [`ServerConfig::max_frame`], 64 MiB with the
    /// default frame limit; at most 4 GiB). A connection whose frame does
    /// not fit waits, reading nothing more from its client, until the
    /// document has committed enough of what it holds: a busy document
    /// slows its senders down through TCP. A frame larger than the whole
    /// budget waits until it is alone. A batch ends once its frames take
    /// half the budget, so that clients fill the other half while it is
    /// committed.
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().document_queue(256 << 20);
    /// ```
    pub fn document_queue(mut self, bytes: usize) -> Self {
        self.document_queue = Some(bytes);
        self
    }

    /// The bytes of frames a document holds at once
    /// ([`ServerConfig::document_queue`]).
    pub(crate) fn document_budget(&self) -> usize {
        self.document_queue
            .unwrap_or(self.max_frame.saturating_mul(4))
            .clamp(1, u32::MAX as usize)
    }

    /// The largest hello the relay reads: a connection's first frame, read
    /// before its token is checked. At most the frame limit.
    pub(crate) fn hello_limit(&self) -> usize {
        let token = self.token.as_ref().map_or(0, String::len);
        HELLO_ROOM.saturating_add(token).min(self.max_frame)
    }

    /// Log size past which a document's snapshot is rewritten and its log
    /// emptied (default 64 MiB). Nodes that reconnect after a compaction
    /// of what they missed sync instead of resuming.
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().compact_bytes(1 << 30);
    /// ```
    pub fn compact_bytes(mut self, bytes: u64) -> Self {
        self.compact_bytes = bytes;
        self
    }

    /// Failure detection: the relay sends a heartbeat when idle for
    /// `heartbeat` (default 1 s) and evicts a node it has not heard from
    /// for `timeout` (default 10 s), such as one that did not come back
    /// after a relay restart. Give `timeout` at least three of the
    /// clients' heartbeats (each client's own setting, by default
    /// [`facsimile::net::protocol::DEFAULT_HEARTBEAT`], one second, which
    /// `facsimile serve --peer-timeout` holds to): less evicts healthy
    /// nodes whose heartbeat is a little late.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_server::ServerConfig::default()
    ///     .failure_detection(Duration::from_millis(500), Duration::from_secs(5));
    /// ```
    pub fn failure_detection(mut self, heartbeat: Duration, timeout: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.peer_timeout = timeout;
        self
    }

    /// How long a node whose connection broke stays a member, waiting for
    /// it to reconnect (default zero: it is evicted at once). Within the
    /// grace, a node that reconnects goes on as before: what it wrote
    /// meanwhile and had not had acknowledged is sent again and applied,
    /// and it keeps its locks; the others wait for it that long. After
    /// it, the node is evicted: its locks pass on, and when it comes back
    /// it rejoins as a new incarnation, its unacknowledged writes lost.
    /// The peer timeout ([`ServerConfig::failure_detection`]) evicts a
    /// silent node all the same, so a grace longer than it has no effect.
    /// A connection that ends before it carried anything (its node may
    /// have given up waiting for the welcome while the relay recovered the
    /// document) keeps its node a member for the peer timeout, or the
    /// grace if longer, whatever the grace.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_server::ServerConfig::default().reconnect_grace(Duration::from_secs(5));
    /// ```
    pub fn reconnect_grace(mut self, grace: Duration) -> Self {
        self.reconnect_grace = grace;
        self
    }

    /// How long a document stays open after its last client left (default
    /// 60 s; `None`: for as long as the relay runs). A document opens
    /// when a client first asks for it, recovering it from its snapshot
    /// and log; closing it frees its thread and its replica's memory, so
    /// a relay holds only the documents in use. Without a data directory
    /// ([`ServerConfig::ephemeral`]) documents stay open: closing one would
    /// lose it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_server::ServerConfig::default().close_idle(Some(Duration::from_secs(600)));
    /// ```
    pub fn close_idle(mut self, after: Option<Duration>) -> Self {
        self.close_idle = after;
        self
    }

    /// The directory holding the JavaScript package's browser build
    /// (`browser.mjs` and `web/`, made by `cd js && npm ci && npm run
    /// build`), which the inspector page at `/inspect/DOC` runs on
    /// (default: [`DEFAULT_INSPECTOR_ASSETS`]). Read when requested, so a
    /// rebuild needs no restart; without it the page says how to build it.
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().inspector_assets("/opt/facsimile/js/dist");
    /// ```
    pub fn inspector_assets(mut self, dir: impl Into<PathBuf>) -> Self {
        self.inspector_assets = dir.into();
        self
    }

    /// Runs each document as a task of the server's tokio runtime, and
    /// opens documents there, instead of on a thread of its own (default
    /// `false`): then nothing of the relay runs outside the runtime, as a
    /// simulation needs that drives every step and the clock (turmoil, a
    /// runtime with paused time), and a crash of the runtime ends the
    /// documents with it. A document's disk writes then block the runtime,
    /// so a busy relay is slower this way.
    ///
    /// ```
    /// let config = facsimile_server::ServerConfig::default().documents_on_runtime(true);
    /// ```
    pub fn documents_on_runtime(mut self, yes: bool) -> Self {
        self.documents_on_runtime = yes;
        self
    }
}

#[cfg(test)]
mod tests {
    use facsimile::net::protocol::{ClientHello, PROTOCOL_VERSION, Resume};

    use super::*;

    /// The largest hello a node can send (the longest document name the
    /// relay takes, the longest hostname, the largest numbers) takes less
    /// than 1,200 bytes besides its token, and fits the hello's limit with
    /// room to spare, whatever the token.
    #[test]
    fn the_largest_hello_fits_the_hello_limit() {
        for token in [String::new(), "t".repeat(100_000)] {
            let config = ServerConfig::default().token(token.clone());
            let hello = ClientHello {
                protocol: PROTOCOL_VERSION,
                document: "d".repeat(128),
                token,
                hostname: "h".repeat(facsimile_core::MAX_HOSTNAME),
                incarnation: u32::MAX,
                resume: Some(Resume {
                    log: u64::MAX,
                    position: u64::MAX,
                }),
                read_only: true,
            };
            let len = hello.encode().len();
            let besides_token = len - hello.token.len();
            assert!(besides_token < 1200, "{besides_token}");
            assert!(len + HELLO_ROOM - 1200 < config.hello_limit(), "{len}");
        }
    }
}
