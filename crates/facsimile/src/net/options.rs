//! The settings of a connection, common to the relay and NATS.

use std::time::Duration;
#[cfg(feature = "tcp")]
use std::{fmt, future::Future, io, sync::Arc};

use facsimile_core::Config;
#[cfg(feature = "tcp")]
use futures_util::future::BoxFuture;
#[cfg(feature = "tcp")]
use tokio::io::{AsyncRead, AsyncWrite};

use super::backoff::Backoff;
#[cfg(feature = "nats")]
use super::nats::NatsOptions;
#[cfg(feature = "tcp")]
use super::protocol::ByteStream;
use super::protocol::{DEFAULT_HEARTBEAT, DEFAULT_MAX_FRAME};
#[cfg(feature = "tcp")]
use super::tls::TlsOptions;

/// How to reach a document and how to behave on the connection. A duration
/// too long to add to the clock (`Duration::MAX`) means never: a timeout
/// that does not end, no heartbeats, a wait to reconnect that does not end.
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
    #[cfg(feature = "tcp")]
    pub(crate) tls: Option<TlsOptions>,
    #[cfg(feature = "tcp")]
    pub(crate) read_only: bool,
    pub(crate) max_frame: usize,
    backoff_min: Duration,
    backoff_max: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) peer_timeout: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) sync_timeout: Duration,
    pub(crate) config: Config,
    #[cfg(feature = "tcp")]
    pub(crate) dialer: Option<Dialer>,
    pub(crate) runtime_clock: bool,
    #[cfg(feature = "nats")]
    pub(crate) nats: NatsOptions,
}

/// Opens the byte stream to a relay's `host:port`, in place of a TCP
/// connection ([`ConnectOptions::dialer`]).
#[cfg(feature = "tcp")]
#[derive(Clone)]
pub(crate) struct Dialer(Arc<dyn Fn(String) -> Dialing + Send + Sync>);

/// A stream being opened by a [`Dialer`].
#[cfg(feature = "tcp")]
type Dialing = BoxFuture<'static, io::Result<Box<dyn ByteStream>>>;

#[cfg(feature = "tcp")]
impl Dialer {
    pub(crate) fn dial(&self, host_port: &str) -> Dialing {
        (self.0)(host_port.to_string())
    }
}

#[cfg(feature = "tcp")]
impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dialer(..)")
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions::new("default")
    }
}

impl ConnectOptions {
    /// Options for one document, with the defaults: no token, no TLS,
    /// 16 MiB frames, reconnection after 100 ms doubling up to 10 s, a
    /// heartbeat every second.
    ///
    /// ```
    /// let options = facsimile::net::ConnectOptions::new("default");
    /// ```
    pub fn new(document: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            document: document.into(),
            token: String::new(),
            #[cfg(feature = "tcp")]
            tls: None,
            #[cfg(feature = "tcp")]
            read_only: false,
            max_frame: DEFAULT_MAX_FRAME,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            heartbeat: DEFAULT_HEARTBEAT,
            peer_timeout: None,
            connect_timeout: Duration::from_secs(10),
            sync_timeout: Duration::from_secs(30),
            config: Config::default(),
            #[cfg(feature = "tcp")]
            dialer: None,
            runtime_clock: false,
            #[cfg(feature = "nats")]
            nats: NatsOptions::default(),
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

    /// Connects to the relay with TLS.
    ///
    /// ```no_run
    /// use facsimile::net::{ConnectOptions, TlsOptions};
    /// let options = ConnectOptions::new("doc").tls(TlsOptions::from_ca_file("relay.pem")?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(feature = "tcp")]
    pub fn tls(mut self, tls: TlsOptions) -> ConnectOptions {
        self.tls = Some(tls);
        self
    }

    /// Joins the relay's document read-only: the node mirrors it and sees
    /// every change, and the relay refuses the node's writes and lock
    /// requests, ending the connection ([`Status::Refused`](super::Status::Refused)).
    /// The node only observes ([`Config::observer`](crate::Config::observer)):
    /// it refuses its own writes before they leave, and its peers do not
    /// count it as a member, so a read-only node that stalls holds up no
    /// lock grant.
    ///
    /// ```
    /// let options = facsimile::net::ConnectOptions::new("doc").read_only(true);
    /// ```
    #[cfg(feature = "tcp")]
    pub fn read_only(mut self, read_only: bool) -> ConnectOptions {
        self.read_only = read_only;
        self
    }

    /// The largest frame accepted from the relay, or message published to
    /// NATS (default 16 MiB). The whole document arrives in one frame when
    /// the node syncs. The node's writes keep within it, and within the
    /// relay's own limit when its welcome says that is less.
    ///
    /// ```
    /// let options = facsimile::net::ConnectOptions::new("doc").max_frame(64 << 20);
    /// ```
    pub fn max_frame(mut self, bytes: usize) -> ConnectOptions {
        self.max_frame = bytes;
        self
    }

    /// Waits `min` before the first reconnection attempt, doubling up to
    /// `max` while attempts fail (with jitter). To a relay, an attempt
    /// counts as failed until the relay acknowledges something on the new
    /// connection: one it welcomes and then ends is no success. Over NATS
    /// the first attempt is immediate, and no wait exceeds a quarter of the
    /// lease (`NatsOptions::lease`).
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
    /// to the relay, which knows who is connected. Over NATS the lease
    /// decides both instead.
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

    /// How long [`connect`](super::connect) waits for the server (the TCP,
    /// TLS and WebSocket handshakes, or NATS's; default 10 s) and then for
    /// the document (default 30 s). With a relay, the document's wait
    /// starts at the hello and takes in the relay's welcome, which a relay
    /// sends once it has the document open (after a restart, recovered
    /// from its disk); a reconnection waits that long for the welcome too.
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

    /// Opens each connection to the relay with `dial`, given the address's
    /// `host:port`, instead of a TCP connection: a Unix socket, a tunnel, or
    /// a simulated network (turmoil's `TcpStream`). TLS and WebSocket
    /// addresses work over the stream it returns as over TCP.
    ///
    /// ```
    /// let options = facsimile::net::ConnectOptions::new("doc")
    ///     .dialer(|host_port: String| tokio::net::TcpStream::connect(host_port));
    /// ```
    #[cfg(feature = "tcp")]
    pub fn dialer<F, Fut, S>(mut self, dial: F) -> ConnectOptions
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.dialer = Some(Dialer(Arc::new(move |host_port| {
            let connecting = dial(host_port);
            Box::pin(async move {
                let stream: Box<dyn ByteStream> = Box::new(connecting.await?);
                Ok(stream)
            })
        })));
        self
    }

    /// The node's timers (heartbeats, sync retries, lock leases) read the
    /// tokio runtime's clock instead of the system's coarse one, so that a
    /// runtime whose time is simulated (`tokio::time::pause`, a turmoil
    /// host) drives them. A little slower per call into the node. Relay
    /// connections only: over NATS the node reads the system's clock.
    ///
    /// ```
    /// let options = facsimile::net::ConnectOptions::new("doc").runtime_clock(true);
    /// ```
    pub fn runtime_clock(mut self, yes: bool) -> ConnectOptions {
        self.runtime_clock = yes;
        self
    }

    /// The settings that only documents on NATS JetStream use (a `nats://`
    /// address); a relay connection ignores them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use facsimile::net::{ConnectOptions, NatsOptions};
    ///
    /// let options = ConnectOptions::new("inventory")
    ///     .nats(NatsOptions::new().lease(Duration::from_secs(2)).stream_replicas(3));
    /// ```
    #[cfg(feature = "nats")]
    pub fn nats(mut self, nats: NatsOptions) -> ConnectOptions {
        self.nats = nats;
        self
    }

    /// The waits between reconnection attempts to a relay.
    pub(super) fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_min, self.backoff_max)
    }
}
