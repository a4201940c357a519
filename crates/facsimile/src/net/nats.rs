//! Documents on NATS JetStream (feature `nats`): the same [`Connection`]
//! as with the relay, reached by a `nats://` address in
//! [`connect`](super::connect).
//!
//! Each document is one JetStream stream: a totally ordered, replicated log
//! that every node reads whole, its own messages included. The engine runs
//! in its ordered mode ([`facsimile_core::Config::ordered`]): a lock goes to the first
//! request in its object's queue in the log, its fencing token is the log
//! position of the grant, and a node's locks and membership lapse when
//! the stream's timestamps pass its last message plus the lease. No node
//! waits for acknowledgements from the others.
//!
//! - A stream message carries the node's frames that were queued together
//!   when it was published (up to 1,024 frames or 64 KiB): one frame as
//!   it is, several each behind its 4-byte length. A frame's log position
//!   is its message's stream sequence times 65,536 plus its index in the
//!   message. Under load the queue grows while the previous messages
//!   await their acknowledgement, so messages grow, and the server and
//!   every reader handle one message per batch instead of one per write.
//! - Every publish carries a message id (hostname, incarnation, the index
//!   of its first frame, and of its last after a `-` when it carries
//!   several): one retried after a lost acknowledgement, with the same
//!   frames, is dropped by the stream's deduplication, and the engine
//!   holds back a sender's message until its predecessors have been
//!   applied.
//! - A write is acknowledged ([`Connection::flush`]) when the stream has
//!   stored it (on a majority of its replicas) and the node has read it
//!   back accepted: a message stored after its sender's lease lapsed is
//!   refused by the log. The node's new incarnation makes its writes again
//!   where that is safe ([`facsimile_core::Replica::carry_over`]), `flush`
//!   waits for those, and reports the others lost.
//! - Every [`NatsOptions::snapshot_every`] messages one node (chosen by compare-and-set on
//!   a key-value entry) saves a snapshot of the document with the log
//!   position it covers in an object store, under a name no other saver's
//!   object has, makes it current by compare-and-set on another entry,
//!   which names it, and removes none but older ones (readers see the
//!   previous snapshot or the new one whole), and purges the stream up to
//!   ten intervals before it. A joiner loads the current snapshot (a read
//!   is given up only when nothing arrives for the sync timeout) and
//!   replays the stream from the next sequence with an ordered consumer; a
//!   node that falls further behind than the purge does the same, and
//!   reports what that changed as a sync does. A gap no snapshot covers
//!   (messages removed by hand) fails a joiner with
//!   [`NetError::LogGap`]; a node that meets it is
//!   [`Status::Degraded`] until a snapshot past it is saved.
//! - When a publish fails while the client is connected (the stream
//!   stores nothing: no quorum, JetStream unavailable), the status is
//!   [`Status::Degraded`] until a publish is stored. Every node publishes
//!   at least a heartbeat every third of its lease, so one that writes
//!   nothing finds out too, within that and a publish's timeout. The
//!   status is written on a thread of its own: a caller holding the value
//!   it waited for holds up the next status, not the connection.
//! - A node whose write raced a lock grant (the log refused it) or whose
//!   lease ran out starts over the same way, as a new incarnation.
//! - The stream stores messages up to the size it was made with (the
//!   creating node's [`ConnectOptions::max_frame`], at most its server's
//!   `max_payload`). Every node reads what it stores and writes within it:
//!   a larger write fails with `TooLarge` when it is made.
//! - While the client has lost the server, the node holds its writes
//!   ([`Node::set_online`]): they go out packed, as one frame, when it is
//!   back.
//!
//! ```no_run
//! use std::time::Duration;
//! use facsimile::net::{self, ConnectOptions, NatsOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let options = ConnectOptions::new("inventory")
//!     .nats(NatsOptions::new().lease(Duration::from_secs(2)));
//! let conn = net::connect("nats://127.0.0.1:4222", "alice", options).await?;
//! conn.node().set_path("/apples", 3)?;
//! conn.flush().await?; // stored by the stream
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::io::AsyncReadExt;

use super::backoff::Backoff;
use super::connection::{Connection, Shared, Status, StatusWriter};
use super::driver::{contained, run_timers};
use super::error::NetError;
use super::options::ConnectOptions;
use super::protocol::Outbox;
use super::silence::Silence;
use crate::node::{Inner, Node, Outgoing};

/// The claims bucket's key for the claim to save the next snapshot; and
/// the object in which versions before [`CURRENT`] saved the newest one
/// (read while no snapshot is current).
const SNAPSHOT: &str = "snapshot";
/// The claims bucket's key naming the current snapshot's object. A
/// snapshot is stored whole under a name of its own first
/// ([`snapshot_name`]), then made current by compare-and-set on this key:
/// a reader finds the previous snapshot or the new one, never a part of
/// one, and a saver cut off midway never brings back an older one.
const CURRENT: &str = "current";
/// A snapshot object's metadata key: the log position it covers.
/// (Snapshots of earlier versions, whose positions were stream sequences,
/// had the key `position`; they are refused rather than misread.)
const POSITION: &str = "log-position";
/// A frame's log position is its message's stream sequence shifted by this
/// many bits, plus its index in the message: positions grow with the log,
/// and every frame has its own.
const INDEX_BITS: u32 = 16;
/// The most frames one stream message carries (below `1 << INDEX_BITS`).
const PACK_FRAMES: usize = 1024;
/// The most bytes one stream message of several frames carries (and at
/// most the server's limit).
const PACK_BYTES: usize = 64 << 10;

/// An upper bound of the bytes a published message's headers take besides
/// its hostname (the NATS status line and the message id).
const HEADERS: usize = 256;
/// The most bytes a NATS message carries at all (servers refuse a larger
/// `max_payload`): what a reader takes from a stream that sets no limit.
const MAX_PAYLOAD: usize = 64 << 20;
/// The least room for a frame a stream message must leave a node: its
/// hello, heartbeats and acknowledgements must go out.
const MIN_FRAME: usize = 8 << 10;
/// How many snapshot intervals of messages the stream keeps behind the
/// newest snapshot.
const RETAINED_INTERVALS: u64 = 10;
/// Frames taken from the outbox at once: their stream messages are at most
/// as many publishes awaiting their acknowledgement, well below the
/// client's own limit (5,000), which waits without a timeout when reached.
const MAX_IN_FLIGHT: usize = 1024;
/// The longest a pull request for the stream's next messages waits.
const PULL_EXPIRY: Duration = Duration::from_secs(2);
/// How long a stream remembers message ids for deduplication.
const DEDUP_WINDOW: Duration = Duration::from_secs(120);

/// The settings of documents on NATS JetStream, passed with
/// [`ConnectOptions::nats`].
///
/// ```
/// use std::time::Duration;
/// use facsimile::net::{ConnectOptions, NatsOptions};
///
/// let options = ConnectOptions::new("inventory").nats(
///     NatsOptions::new()
///         .lease(Duration::from_secs(2))
///         .snapshot_every(10_000)
///         .stream_replicas(3),
/// );
/// ```
#[derive(Clone, Debug)]
pub struct NatsOptions {
    lease: Duration,
    snapshot_every: u64,
    stream_replicas: usize,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions::new()
    }
}

impl NatsOptions {
    /// The defaults: a 5 s lease, a snapshot every 1,000 stream messages,
    /// streams on one server.
    ///
    /// ```
    /// let nats = facsimile::net::NatsOptions::new();
    /// ```
    pub fn new() -> NatsOptions {
        NatsOptions {
            lease: Duration::from_secs(5),
            snapshot_every: 1000,
            stream_replicas: 1,
        }
    }

    /// How long a node's locks and membership outlive its last message in
    /// the stream, by the server's timestamps (default 5 s). Nodes send a
    /// heartbeat every third of it, retry reconnecting and publishing at
    /// least every quarter of it, and leave a server that stays silent for
    /// half of it (pinging it every sixth).
    ///
    /// ```
    /// use std::time::Duration;
    /// let nats = facsimile::net::NatsOptions::new().lease(Duration::from_secs(2));
    /// ```
    pub fn lease(mut self, lease: Duration) -> NatsOptions {
        self.lease = lease;
        self
    }

    /// A snapshot of the document is saved once this many stream messages
    /// followed the last one (default 1,000), and the stream is purged up
    /// to ten times as many messages before it (a node further behind than
    /// that starts over from the snapshot). A stream message carries one
    /// frame or all those the node had queued when it published it (at
    /// most 1,024), so this counts batches of writes under load.
    ///
    /// ```
    /// let nats = facsimile::net::NatsOptions::new().snapshot_every(10_000);
    /// ```
    pub fn snapshot_every(mut self, messages: u64) -> NatsOptions {
        self.snapshot_every = messages.max(1);
        self
    }

    /// How many servers keep each of the document's streams when this node
    /// creates them (default 1; 3 on a cluster of three).
    ///
    /// ```
    /// let nats = facsimile::net::NatsOptions::new().stream_replicas(3);
    /// ```
    pub fn stream_replicas(mut self, replicas: usize) -> NatsOptions {
        self.stream_replicas = replicas.max(1);
        self
    }
}

/// An error of the NATS client, or of reading what it returned.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The JetStream names of one document.
#[derive(Clone, Debug)]
struct Names {
    stream: String,
    /// Cheap to clone: every publish names it.
    subject: async_nats::Subject,
    claims: String,
    snapshots: String,
}

impl Names {
    fn new(document: &str) -> Names {
        // Stream and bucket names allow [A-Za-z0-9_-]; escape the rest
        // (and `_` itself, so that distinct documents get distinct names).
        let mut enc = String::with_capacity(document.len());
        for b in document.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("_{b:02x}"));
            }
        }
        Names {
            stream: format!("FACSIMILE_{enc}"),
            subject: format!("facsimile.{enc}").into(),
            claims: format!("FACSIMILE_{enc}_CLAIMS"),
            snapshots: format!("FACSIMILE_{enc}_SNAPSHOTS"),
        }
    }
}

/// What the tasks of one connection share.
struct Ctx {
    js: jetstream::Context,
    stream: stream::Stream,
    snapshots: Snapshots,
    names: Names,
    nats: NatsOptions,
    shared: Arc<Shared>,
    /// The waits between attempts to publish or to read.
    backoff: Backoff,
    /// The sender part of message ids: hostname and incarnation.
    id_prefix: String,
    /// The most bytes of frames one stream message of several carries.
    pack_bytes: usize,
    link: Arc<Link>,
    /// Counts the client's connections: the publisher sends again what the
    /// old connection had not had acknowledged when it changes.
    connections: tokio::sync::watch::Receiver<u64>,
    /// Once the publisher reported the stream storing nothing
    /// ([`Status::Degraded`]), the count of the client's connections then,
    /// plus one; 0 while it stores. The status is written at such changes
    /// only, not at every publish, and again after a reconnection (which
    /// sets it `Connected`).
    degraded: AtomicU64,
    /// The index of the first frame the stream refused as too large, once
    /// one was: a gap in the node's messages that its peers wait on for
    /// ever, so the node starts over.
    hole: tokio::sync::watch::Sender<Option<u64>>,
    /// The messages, from and to, the stream lacks where the reader found
    /// it jumped and no snapshot covers them, until the node starts over
    /// past them: a joiner fails with them, a running node's status says
    /// so ([`gap_found`]).
    gap: tokio::sync::watch::Sender<Option<(u64, u64)>>,
}

/// Whether the client is connected to the server, as the node is told
/// ([`Node::set_online`]): while it is not, the node holds its writes, and
/// they go out packed when the client is back. One lock orders what the
/// node is told, so that a new incarnation taking the node's place hears
/// the latest.
#[derive(Debug, Default)]
struct Link {
    state: Mutex<LinkState>,
    node: OnceLock<Weak<Inner>>,
}

#[derive(Debug, Default)]
struct LinkState {
    connected: bool,
    /// The client reported a lost connection: the connection it made
    /// first is no longer the one to tell of.
    lost: bool,
}

impl Link {
    fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client connected (`true`) or lost its connection, as it
    /// reports: the node and the status are told, in the order of the
    /// reports. Told on the client's task, the node runs its listeners
    /// there: their panics stop at them ([`contained`]).
    fn set(&self, connected: bool, shared: &Shared) {
        let mut st = self.state();
        st.connected = connected;
        st.lost |= !connected;
        shared.status.set(match connected {
            true => Status::Connected,
            false => Status::Disconnected("NATS connection lost".into()),
        });
        if let Some(n) = self.node.get().and_then(Node::upgrade) {
            let during = match connected {
                true => "going online",
                false => "going offline",
            };
            contained(shared, during, || n.set_online(connected));
        }
    }

    /// The client made its first connection: `status` says so at once,
    /// unless the client already reported that connection lost (its
    /// reports run on a task of their own, and may come first).
    fn started(&self, status: &StatusWriter) {
        let mut st = self.state();
        if !st.lost {
            st.connected = true;
            status.set_now(Status::Connected);
        }
    }

    /// Tells `node` (the first, or one that just took a new incarnation)
    /// whether the client is connected, and keeps it told.
    fn attach(&self, node: &Node) {
        let st = self.state();
        let _ = self.node.set(node.downgrade());
        node.set_online(st.connected);
    }
}

/// The waits between two attempts to reach the server, to publish or to
/// read: none over a quarter of the lease, so that a node is back within
/// the lease the log grants everyone after an outage.
fn backoff(options: &ConnectOptions) -> Backoff {
    options.backoff().cap(options.nats.lease / 4)
}

/// How long the client hears nothing from its server before it pings it;
/// once the server stays silent three times as long (two pings
/// unanswered), the client gives the connection up and reconnects. A
/// sixth of the lease: a server that stopped answering without closing the
/// connection (its machine is gone, or cut off) is left after half a
/// lease, so that the node's messages can reach the log through another
/// server before its lease runs out. (The client's default of a minute
/// took three.)
fn ping_interval(lease: Duration) -> Duration {
    (lease / 6).max(Duration::from_millis(100))
}

fn nats_error(what: impl Into<String>, source: impl Into<BoxError>) -> NetError {
    NetError::Nats {
        what: what.into(),
        source: source.into(),
    }
}

/// The sizes a node of a document reads and writes, from the document's
/// stream.
#[derive(Debug, PartialEq)]
struct Limits {
    /// The largest frame read: what the stream stores, the same for every
    /// reader whatever its own settings. A reader that refused a frame
    /// others took would never apply another of its sender's.
    read: usize,
    /// The largest frame written: the largest message this node publishes
    /// less room for its headers, so that every reader takes it.
    write: usize,
}

impl Limits {
    /// The limits a stream of `config` sets a node that publishes messages
    /// of at most `max_message` bytes whose headers take at most `headers`
    /// bytes; [`NetError::StreamRefused`] when the stream does not serve as
    /// the document's (it was made by other means, or with a limit leaving
    /// no room).
    fn of(
        config: &stream::Config,
        names: &Names,
        max_message: usize,
        headers: usize,
    ) -> Result<Limits, NetError> {
        let refused = |reason: String| {
            Err(NetError::StreamRefused {
                stream: names.stream.clone(),
                reason,
            })
        };
        if !config.subjects.iter().any(|s| s == names.subject.as_str()) {
            return refused(format!(
                "it does not take the subject {} (its subjects: {:?})",
                names.subject, config.subjects
            ));
        }
        // Every node reads the whole log and joiners replay it: a stream
        // that drops messages once read, or never acknowledges a publish,
        // cannot carry a document. Its deduplication window may be any:
        // beyond it, every reader drops a copy by its sequence number.
        if config.retention != stream::RetentionPolicy::Limits || config.no_ack {
            return refused(format!(
                "it must keep every message and acknowledge each (retention {:?}, no_ack {})",
                config.retention, config.no_ack
            ));
        }
        // Nor one that drops messages by age or count: a gap no snapshot
        // covers leaves the document unreadable. (Full, a stream that
        // refuses new messages keeps every one; the per-subject limit
        // refuses them only with `discard_new_per_subject`, and otherwise
        // drops the oldest whatever the discard policy.)
        let discards_new = config.discard == stream::DiscardPolicy::New;
        let drops_old = (!discards_new && (config.max_messages > 0 || config.max_bytes > 0))
            || (config.max_messages_per_subject > 0
                && !(discards_new && config.discard_new_per_subject));
        if !config.max_age.is_zero() || drops_old {
            return refused(format!(
                "it must keep every message (max_age {:?}, and with discard {:?} max_msgs {}, \
                 max_bytes {}, max_msgs_per_subject {} with discard_new_per_subject {}); \
                 a limit on count or size keeps them with discard new (and \
                 discard_new_per_subject for max_msgs_per_subject)",
                config.max_age,
                config.discard,
                config.max_messages,
                config.max_bytes,
                config.max_messages_per_subject,
                config.discard_new_per_subject
            ));
        }
        let stored = usize::try_from(config.max_message_size)
            .ok()
            .filter(|&n| n > 0);
        let read = stored.unwrap_or(MAX_PAYLOAD);
        let write = max_message.min(read).saturating_sub(headers);
        if write < MIN_FRAME {
            return refused(format!(
                "it or this node (max_frame, the server's max_payload) allows messages of \
                 {} bytes, less than the {} a node needs",
                max_message.min(read),
                MIN_FRAME + headers
            ));
        }
        Ok(Limits { read, write })
    }
}

/// The hostname as message ids carry it: a NATS header holds no line
/// break, and the client trims the whitespace a header value starts with,
/// so `%`, CR, LF and leading whitespace are escaped (distinct hostnames
/// keep distinct ids, and a node finds its own ids as it sent them).
fn id_hostname(hostname: &str) -> std::borrow::Cow<'_, str> {
    let body = hostname.trim_start();
    if body.len() == hostname.len() && !hostname.contains(['%', '\r', '\n']) {
        return hostname.into();
    }
    let lead = hostname.len() - body.len();
    let mut out = String::with_capacity(hostname.len() + 8);
    for &b in &hostname.as_bytes()[..lead] {
        out.push_str(&format!("%{b:02X}"));
    }
    for c in body.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Connects a new node to the document on the NATS server at `url` (or
/// any of several, separated by commas),
/// creating its stream and buckets if needed, loads the newest snapshot,
/// replays the stream and returns once the node has read everything the
/// stream held when it connected, and its own first messages back.
pub(crate) async fn connect(
    url: &str,
    hostname: &str,
    options: ConnectOptions,
) -> Result<Connection, NetError> {
    let servers = url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| nats_error(format!("the address {url}"), e))?;
    let shared = Arc::new(Shared::new(Outbox::over_log(|frame| writes_in(frame))));
    let events = shared.clone();
    let link = Arc::new(Link::default());
    let linked = link.clone();
    let (connected, connections) = tokio::sync::watch::channel(0u64);
    let connected = Arc::new(connected);
    let reconnecting = backoff(&options).immediate_first();
    let connecting = async_nats::ConnectOptions::new()
        .name(format!("facsimile {hostname}"))
        .ping_interval(ping_interval(options.nats.lease))
        // The client counts its attempts from 1.
        .reconnect_delay_callback(move |attempts| {
            reconnecting.delay(u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX))
        })
        .event_callback(move |event| {
            let events = events.clone();
            let link = linked.clone();
            let connected = connected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        // Before the count: the publisher's report of a
                        // failure on this connection is written after it.
                        link.set(true, &events);
                        connected.send_modify(|n| *n += 1);
                    }
                    async_nats::Event::Disconnected => {
                        // Writes made until the server is back go out packed.
                        link.set(false, &events);
                    }
                    _ => {}
                }
            }
        })
        .connect(servers);
    let client = tokio::time::timeout(options.connect_timeout, connecting)
        .await
        .map_err(|_| NetError::Timeout {
            what: "the NATS server",
            after: options.connect_timeout,
        })?
        .map_err(|e| nats_error(format!("connecting to {url}"), e))?;
    // Nobody holds the status yet.
    link.started(&shared.status);
    let max_payload = client.server_info().max_payload;
    let js = jetstream::new(client);
    let names = Names::new(&options.document);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: names.stream.clone(),
            subjects: vec![names.subject.to_string()],
            storage: stream::StorageType::File,
            num_replicas: options.nats.stream_replicas,
            duplicate_window: DEDUP_WINDOW,
            max_message_size: i32::try_from(options.max_frame.min(max_payload)).unwrap_or(i32::MAX),
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error("creating the document's stream", e))?;
    // The stream may be older than this node, made by a node with other
    // settings: the stream's decide.
    let id_hostname = id_hostname(hostname);
    let limits = Limits::of(
        &stream.cached_info().config,
        &names,
        options.max_frame.min(max_payload),
        HEADERS + id_hostname.len(),
    )?;
    let claims = match js.get_key_value(&names.claims).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: names.claims.clone(),
                history: 1,
                num_replicas: options.nats.stream_replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_error("creating the snapshot claims bucket", e))?,
    };
    let objects = match js.get_object_store(&names.snapshots).await {
        Ok(store) => store,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: names.snapshots.clone(),
                num_replicas: options.nats.stream_replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| nats_error("creating the snapshot store", e))?,
    };
    let snapshots = Snapshots {
        claims,
        objects,
        stream: js
            .get_stream(format!("OBJ_{}", names.snapshots))
            .await
            .map_err(|e| nats_error("opening the snapshot store", e))?,
        bucket: names.snapshots.clone(),
        stall: options.sync_timeout,
    };

    // Every reader takes what the stream stores; a write too large for
    // the stream is refused when it is made.
    let config = options
        .config
        .clone()
        .max_message_size(limits.read)
        .ordered(options.nats.lease);
    let snapshot = covered_snapshot(&snapshots, &stream, &names).await?;
    let node = match &snapshot {
        Some((bytes, _)) => Node::from_exported(hostname, config, bytes)
            .map_err(|e| nats_error("loading the document's snapshot", e))?,
        None => Node::with_config(hostname, config),
    };
    node.read(|r| r.limit_sent_messages(limits.write));
    let id_prefix = format!("{id_hostname}.{:08x}", node.peer_id().incarnation());
    let sink = shared.clone();
    node.set_sender(move |out: Outgoing| {
        // Directed messages go to the log too: the others ignore them.
        sink.enqueue(Bytes::copy_from_slice(out.as_bytes()));
    });

    let mut stream_info = stream.clone();
    let target = stream_info
        .info()
        .await
        .map_err(|e| nats_error("reading the stream's state", e))?
        .state
        .last_sequence;
    let ctx = Arc::new(Ctx {
        js,
        stream,
        snapshots,
        names,
        nats: options.nats.clone(),
        shared: shared.clone(),
        backoff: backoff(&options),
        id_prefix,
        // Below the stream's limit with room for the headers and lengths.
        pack_bytes: PACK_BYTES.min(limits.write / 2),
        link,
        connections,
        degraded: AtomicU64::new(0),
        hole: tokio::sync::watch::channel(None).0,
        gap: tokio::sync::watch::channel(None).0,
    });
    ctx.link.attach(&node);
    shared.log_read.send_replace(node.log_position());
    let mut read_rx = shared.log_read.subscribe();
    let mut gap = ctx.gap.subscribe();
    tokio::spawn(read_log(ctx.clone(), node.downgrade()));
    tokio::spawn(publish(ctx.clone()));
    tokio::spawn(run_timers(shared.clone(), node.downgrade()));
    let caught_up = async {
        while *read_rx.borrow_and_update() < target << INDEX_BITS {
            if read_rx.changed().await.is_err() {
                break;
            }
        }
    };
    let conn = Connection { node, shared };
    // Then its own first messages, read back: the node's writes start from
    // a state covering everything before them in the log, which
    // reclamation counts on (DESIGN.md, "On a totally ordered log").
    let ready = async {
        let replayed = async {
            caught_up.await;
            conn.flush().await
        };
        tokio::select! {
            r = replayed => r,
            Ok(g) = gap.wait_for(Option::is_some) => {
                let (from, to) = g.unwrap_or_default();
                Err(NetError::LogGap {
                    stream: ctx.names.stream.clone(),
                    from,
                    to,
                })
            }
        }
    };
    match tokio::time::timeout(options.sync_timeout, ready).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) => {
            conn.shared.cancel.cancel();
            Err(e)
        }
        Err(_) => {
            conn.shared.cancel.cancel();
            Err(NetError::Timeout {
                what: "the document (replaying the stream)",
                after: options.sync_timeout,
            })
        }
    }
}

/// Where a node starts reading the log from: the newest snapshot, and the
/// stream's first message when it was read (after the snapshot).
struct Start {
    /// The snapshot and the log position it covers.
    snapshot: Option<(Vec<u8>, u64)>,
    first: u64,
}

impl Start {
    async fn read(snapshots: &Snapshots, stream: &stream::Stream) -> Result<Start, NetError> {
        let snapshot = snapshots.newest().await?;
        let first = stream
            .get_info()
            .await
            .map_err(|e| nats_error("reading the stream's state", e))?
            .state
            .first_sequence;
        Ok(Start { snapshot, first })
    }

    /// The messages after the snapshot that the stream lacks, from and to:
    /// before its first message (purged or removed past the snapshot), or
    /// those reading `jumped` past (removed from the middle) that the
    /// snapshot does not cover. The log cannot be read on from the
    /// snapshot past them.
    fn gap(&self, jumped: Option<(u64, u64)>) -> Option<(u64, u64)> {
        let at = self.snapshot.as_ref().map_or(0, |(_, p)| p >> INDEX_BITS);
        if self.first > at.saturating_add(1) {
            return Some((at + 1, self.first - 1));
        }
        jumped
            .filter(|&(_, to)| to > at)
            .map(|(from, to)| (from.max(at + 1), to))
    }
}

/// The newest snapshot, once the stream holds every message after it: one
/// saved and purged behind while it was read is read again once, and a
/// gap that remains is [`NetError::LogGap`] (a joiner would start over
/// and over, finding it each time).
async fn covered_snapshot(
    snapshots: &Snapshots,
    stream: &stream::Stream,
    names: &Names,
) -> Result<Option<(Vec<u8>, u64)>, NetError> {
    let mut tries = 0;
    loop {
        let start = Start::read(snapshots, stream).await?;
        let Some((from, to)) = start.gap(None) else {
            return Ok(start.snapshot);
        };
        tries += 1;
        if tries == 2 {
            return Err(NetError::LogGap {
                stream: names.stream.clone(),
                from,
                to,
            });
        }
    }
}

/// Where a document's snapshots are kept: objects of their own, one named
/// current by a key of the claims bucket ([`CURRENT`]).
#[derive(Clone)]
struct Snapshots {
    claims: kv::Store,
    objects: object_store::ObjectStore,
    /// The object store's stream, from which the marks that removed
    /// objects leave are purged.
    stream: stream::Stream,
    bucket: String,
    /// How long reading a snapshot may go without receiving anything before
    /// it is given up and tried again: the node's sync timeout
    /// ([`ConnectOptions::timeouts`]). A large snapshot on a slow link takes
    /// as long as it needs while its bytes keep coming.
    stall: Duration,
}

/// The object holding a snapshot that covers the log up to `position`,
/// saved by the saver that drew `tag`. Two nodes may save snapshots of the
/// same position (one won the claim but could not save before the log
/// reached the position another then claimed): each saver stores and
/// removes only its own object, so the one that lost the switch never
/// removes the one that won it.
fn snapshot_name(position: u64, tag: u64) -> String {
    format!("{SNAPSHOT}-{position:020}-{tag:016x}")
}

/// A tag for a saver's snapshot object that no other saver draws: random,
/// from the standard library's per-process random hash keys (a new state
/// for each call).
fn snapshot_tag() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// The log position a snapshot object's name says it covers (the objects
/// of the versions before tags, `snapshot-<position>`, included).
fn snapshot_position(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(SNAPSHOT)?.strip_prefix('-')?;
    let position = rest.split_once('-').map_or(rest, |(p, _)| p);
    position.parse().ok()
}

/// An object's name as the object store's subjects carry it: URL-safe
/// base64 with padding.
fn encoded_name(name: &str) -> String {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(name.len().div_ceil(3) * 4);
    for chunk in name.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            match i <= chunk.len() {
                true => out.push(DIGITS[(n >> (18 - 6 * i) & 63) as usize] as char),
                false => out.push('='),
            }
        }
    }
    out
}

/// The snapshot a key of the claims bucket names current.
#[derive(Clone, Debug, PartialEq)]
struct Current {
    /// The object that holds it.
    name: String,
    /// The log position it covers, which its name says.
    position: u64,
    /// The revision of the key naming it.
    revision: u64,
}

/// What saving a snapshot came to.
enum Saved {
    /// It is current now, in place of the one covering this position.
    Current { replaced: Option<u64> },
    /// One covering as much of the log or more is current.
    Superseded,
}

impl Snapshots {
    /// The current snapshot; `None` while no snapshot was made current.
    async fn current(&self) -> Result<Option<Current>, BoxError> {
        let Some(entry) = self.claims.entry(CURRENT).await? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let value = std::str::from_utf8(&entry.value).unwrap_or_default();
        // The key once held the position alone, of an object named by it.
        let name = match value.parse::<u64>() {
            Ok(position) => format!("{SNAPSHOT}-{position:020}"),
            Err(_) => value.to_string(),
        };
        let position = snapshot_position(&name)
            .ok_or_else(|| format!("the current snapshot's key names no snapshot: {value:?}"))?;
        Ok(Some(Current {
            name,
            position,
            revision: entry.revision,
        }))
    }

    /// The current snapshot and the log position it covers. A read given
    /// up (nothing came for [`Snapshots::stall`], or the snapshot was
    /// replaced and removed meanwhile) is tried again.
    async fn newest(&self) -> Result<Option<(Vec<u8>, u64)>, NetError> {
        let mut last_error: BoxError = "no attempt".into();
        for _ in 0..5 {
            match self.read().await {
                Ok(found) => return Ok(found),
                Err(e) => last_error = e,
            }
        }
        Err(nats_error("reading the document's snapshot", last_error))
    }

    /// `step`, unless [`Snapshots::stall`] passes first.
    async fn within<T, E: Into<BoxError>>(
        &self,
        step: impl Future<Output = Result<T, E>>,
    ) -> Result<T, BoxError> {
        match tokio::time::timeout(self.stall, step).await {
            Ok(r) => r.map_err(Into::into),
            Err(_) => Err(format!("no answer from the server for {:?}", self.stall).into()),
        }
    }

    /// One attempt at reading the current snapshot.
    async fn read(&self) -> Result<Option<(Vec<u8>, u64)>, BoxError> {
        let current = self.within(self.current()).await?;
        let name = current.as_ref().map_or(SNAPSHOT, |c| &c.name);
        let found = tokio::time::timeout(self.stall, self.objects.get(name)).await;
        let mut object = match found {
            Ok(Ok(o)) => o,
            Ok(Err(e)) if e.kind() == object_store::GetErrorKind::NotFound => {
                return match current {
                    None => Ok(None),
                    // Two newer ones were made current since the key was read.
                    Some(_) => Err(format!("the snapshot {name} was removed").into()),
                };
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(format!("no answer from the server for {:?}", self.stall).into()),
        };
        let position = object
            .info()
            .metadata
            .get(POSITION)
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or("a snapshot without its position")?;
        if current.as_ref().is_some_and(|c| c.position != position) {
            return Err(format!("the snapshot {name} covers the position {position}").into());
        }
        // The size is the writer's word: room for it up to a bound, and the
        // read grows the buffer past that as the bytes come.
        let size = object.info().size;
        let mut bytes = Vec::with_capacity(size.min(64 << 20));
        let mut chunk = vec![0; 128 << 10];
        loop {
            let n = self.within(object.read(&mut chunk)).await?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        if bytes.len() != size {
            return Err(format!("a snapshot of {size} bytes ended after {}", bytes.len()).into());
        }
        Ok(Some((bytes, position)))
    }

    /// Stores `bytes`, the snapshot covering the log up to `position`,
    /// under a name no other saver's object has, then makes it current
    /// unless a snapshot as new is. Until then readers read the snapshot
    /// that was current: a saver that stops anywhere leaves at most an
    /// object no key names, which a later save removes.
    async fn save(&self, bytes: &[u8], position: u64) -> Result<Saved, BoxError> {
        let mut current = self.current().await?;
        if current.as_ref().is_some_and(|c| c.position >= position) {
            return Ok(Saved::Superseded);
        }
        let name = snapshot_name(position, snapshot_tag());
        let meta = object_store::ObjectMetadata {
            name: name.clone(),
            metadata: [(POSITION.to_string(), position.to_string())].into(),
            ..Default::default()
        };
        self.objects.put(meta, &mut &bytes[..]).await?;
        loop {
            let value = Bytes::from(name.clone());
            let switched: Result<u64, BoxError> = match &current {
                None => self.claims.create(CURRENT, value).await.map_err(Into::into),
                Some(c) => self
                    .claims
                    .update(CURRENT, value, c.revision)
                    .await
                    .map_err(Into::into),
            };
            let replaced = current.as_ref().map(|c| c.position);
            let Err(e) = switched else {
                return Ok(Saved::Current { replaced });
            };
            // Another node made a snapshot current meanwhile, or the
            // server failed (perhaps after making this one current).
            let now = self.current().await?;
            if now.as_ref().is_some_and(|c| c.name == name) {
                return Ok(Saved::Current { replaced });
            }
            if now.as_ref().is_some_and(|c| c.position >= position) {
                // This saver's own object, which no key names: nobody
                // reads it. (The current one may be of the same position,
                // under another name.)
                self.remove(&name).await;
                return Ok(Saved::Superseded);
            }
            if now == current {
                return Err(e);
            }
            current = now;
        }
    }

    /// Removes the snapshots older than the one covering `position`, which
    /// stays for the readers that read the key just before it was
    /// replaced: those never made current included, and the one of the
    /// versions before [`CURRENT`]. Never the one current now, whatever
    /// happened since this node made its own current (a newer one is
    /// older than nothing removed).
    async fn remove_before(&self, position: u64) {
        let current = match self.current().await {
            Ok(current) => current.map(|c| c.name),
            Err(e) => {
                tracing::debug!(error = %e, "reading the current snapshot failed");
                return;
            }
        };
        let mut list = match self.objects.list().await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!(error = %e, "listing the snapshots failed");
                return;
            }
        };
        let mut older = Vec::new();
        while let Some(Ok(info)) = list.next().await {
            let before = snapshot_position(&info.name).is_none_or(|p| p < position);
            if !info.deleted && before && current.as_ref() != Some(&info.name) {
                older.push(info.name);
            }
        }
        for name in older {
            self.remove(&name).await;
        }
    }

    /// Removes a snapshot object, and the mark its removal leaves (one per
    /// snapshot saved would pile up).
    async fn remove(&self, name: &str) {
        if let Err(e) = self.objects.delete(name).await {
            tracing::debug!(error = %e, name, "removing a snapshot failed");
            return;
        }
        let subject = format!("$O.{}.M.{}", self.bucket, encoded_name(name));
        if let Err(e) = self.stream.purge().filter(subject).await {
            tracing::debug!(error = %e, name, "purging a removed snapshot's mark failed");
        }
    }
}

/// Publishes the node's frames in order, several to a stream message when
/// several are queued, each message with its message id, and counts them
/// stored when the stream acknowledged them. After a failure, and as soon
/// as the client has reconnected, every frame not yet acknowledged is
/// published again in the same messages under the same ids: the node's
/// messages, its heartbeats among them, must reach the log within its
/// lease, and the stream's deduplication drops a message it had stored.
async fn publish(ctx: Arc<Ctx>) {
    let shared = &ctx.shared;
    let mut attempts = ctx.backoff.attempts();
    let mut connections = ctx.connections.clone();
    let mut batch = Vec::new();
    // How many frames each message published and not yet acknowledged
    // carries, oldest first.
    let mut packs = VecDeque::new();
    // Every frame below this index was published at least once.
    let mut sent_to = 0;
    loop {
        // Closed or aborted: what is still queued never goes out (a closed
        // outbox takes no more frames, but hands out those it holds).
        if shared.cancel.is_cancelled() {
            return;
        }
        #[cfg(feature = "failpoints")]
        let _ = injected("nats-publish").await;
        let notified = shared.queued.notified();
        batch.clear();
        let first = shared.outbox().take_batch(MAX_IN_FLIGHT, &mut batch);
        if batch.is_empty() {
            tokio::select! {
                _ = notified => continue,
                _ = shared.cancel.cancelled() => return,
            }
        }
        connections.mark_unchanged();
        let outcome = tokio::select! {
            r = publish_batch(&ctx, &batch, first, &mut packs, &mut sent_to) => r.map_err(Some),
            // Acknowledgements of what went out on the old connection may
            // never come.
            () = reconnected(&mut connections) => Err(None),
            _ = shared.cancel.cancelled() => return,
        };
        if outcome.is_ok() {
            attempts.reset();
            stored(&ctx);
            continue;
        }
        shared.outbox().requeue_unacked();
        if let Err(Some(e)) = outcome {
            tracing::warn!(error = %e, "publishing to NATS failed; retrying");
            not_stored(&ctx, &e);
            tokio::select! {
                _ = tokio::time::sleep(attempts.next_delay()) => {}
                () = reconnected(&mut connections) => {}
                _ = shared.cancel.cancelled() => return,
            }
        } else {
            tracing::debug!("reconnected: publishing the unacknowledged frames again");
        }
    }
}

/// Resolves when the client has reconnected after the last look at
/// `connections`.
async fn reconnected(connections: &mut tokio::sync::watch::Receiver<u64>) {
    if connections.changed().await.is_err() {
        std::future::pending().await
    }
}

/// The stream stored what was published: a degraded connection is whole
/// again.
fn stored(ctx: &Ctx) {
    if ctx.degraded.swap(0, Ordering::AcqRel) == 0 {
        return;
    }
    // A gap the node cannot read past stays the status.
    let gap = gap_status(ctx);
    ctx.shared.status.change(move |s| match s {
        Status::Degraded(_) if Some(&*s) != gap.as_ref() => {
            *s = Status::Connected;
            true
        }
        _ => false,
    });
}

/// The status of a node that cannot read past a gap in the stream, while
/// it cannot ([`Ctx::gap`]).
fn gap_status(ctx: &Ctx) -> Option<Status> {
    let (from, to) = (*ctx.gap.borrow())?;
    let gap = NetError::LogGap {
        stream: ctx.names.stream.clone(),
        from,
        to,
    };
    Some(Status::Degraded(format!(
        "{gap}: the node reads nothing more until a node that read past them saves a snapshot"
    )))
}

/// The node must start over and cannot: the stream lacks the messages
/// `from` to `to`, which the newest snapshot does not cover. A joiner
/// fails with [`NetError::LogGap`]; a running node says so by its status
/// ([`Status::Degraded`], over `Connected` and a failed publish's) and
/// tries again, until a node that read past the gap saves a snapshot
/// covering it. Written again at every try: a reconnection meanwhile
/// reports `Connected`.
fn gap_found(ctx: &Ctx, from: u64, to: u64) {
    if ctx.gap.send_replace(Some((from, to))) != Some((from, to)) {
        tracing::error!(
            from,
            to,
            "the stream lacks messages no snapshot covers; waiting for a newer snapshot"
        );
    }
    let Some(gapped) = gap_status(ctx) else {
        return;
    };
    ctx.shared.status.change(move |s| match s {
        Status::Connected | Status::Degraded(_) if *s != gapped => {
            *s = gapped;
            true
        }
        _ => false,
    });
}

/// The node started over past the gap it had found, if it had: it reads
/// on, `Connected` again. A publish that fails from then on is reported
/// again.
fn gap_closed(ctx: &Ctx) {
    let Some(gapped) = gap_status(ctx) else {
        return;
    };
    ctx.gap.send_replace(None);
    ctx.degraded.store(0, Ordering::Release);
    ctx.shared.status.change(move |s| match s {
        Status::Degraded(_) if *s == gapped => {
            *s = Status::Connected;
            true
        }
        _ => false,
    });
}

/// Publishing failed: while the client is connected, the stream has no
/// quorum, or JetStream is unavailable (a lost connection is reported by
/// the client, and stays the status). Reported once per connection of the
/// client until a publish is stored.
fn not_stored(ctx: &Ctx, e: &PublishError) {
    let connection = *ctx.connections.borrow() + 1;
    if ctx.degraded.swap(connection, Ordering::AcqRel) == connection {
        return;
    }
    let reason = format!("the stream does not store messages: {e}");
    ctx.shared.status.change(move |s| match s {
        Status::Connected => {
            *s = Status::Degraded(reason);
            true
        }
        _ => false,
    });
}

/// How many of `frames` go in the next stream message: as many as fit.
fn pack_len(frames: &[Bytes], max_bytes: usize) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    for frame in frames.iter().take(PACK_FRAMES) {
        bytes += 4 + frame.len();
        if n > 0 && bytes > max_bytes {
            break;
        }
        n += 1;
    }
    n
}

/// Several frames as one stream message's payload: each is its 4-byte
/// big-endian length, then its bytes.
fn pack(frames: &[Bytes]) -> Bytes {
    let len = frames.iter().map(|f| 4 + f.len()).sum();
    let mut out = Vec::with_capacity(len);
    for frame in frames {
        // Packed frames are below `PACK_BYTES`.
        out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        out.extend_from_slice(frame);
    }
    out.into()
}

/// The `count` frames of a stream message's payload; `None` when it does
/// not hold exactly that many.
fn unpack(payload: &[u8], count: u64) -> Option<Vec<&[u8]>> {
    if count == 1 {
        return Some(vec![payload]);
    }
    let mut frames = Vec::with_capacity(usize::try_from(count).ok()?);
    let mut rest = payload;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if len > tail.len() {
            return None;
        }
        let (frame, tail) = tail.split_at(len);
        frames.push(frame);
        rest = tail;
    }
    (frames.len() as u64 == count).then_some(frames)
}

/// Publishes `batch`, whose first frame has index `first`, in stream
/// messages of one frame or several: first in the `packs` of an earlier
/// attempt, then as many as fit, each added to `packs` until the stream
/// acknowledged it.
async fn publish_batch(
    ctx: &Ctx,
    batch: &[Bytes],
    first: u64,
    packs: &mut VecDeque<usize>,
    sent_to: &mut u64,
) -> Result<(), PublishError> {
    let mut acks = Vec::new();
    let mut at = 0;
    while at < batch.len() {
        let rest = &batch[at..];
        let count = match packs.get_mut(acks.len()) {
            Some(n) => {
                *n = (*n).min(rest.len());
                *n
            }
            None => {
                let n = pack_len(rest, ctx.pack_bytes);
                packs.push_back(n);
                n
            }
        };
        let frames = &rest[..count];
        let index = first + at as u64;
        // `return` loses the batch's first message unsent, as a failed
        // publish does, once the others are sent.
        #[cfg(feature = "failpoints")]
        if at == 0 && fail::eval("nats-publish-lost", |_| ()).is_some() {
            at += count;
            acks.push(Pending::Lost);
            continue;
        }
        at += count;
        let message = jetstream::message::PublishMessage::build();
        let message = match frames {
            [frame] => message
                .payload(frame.clone())
                .message_id(format!("{}.{index}", ctx.id_prefix)),
            _ => message.payload(pack(frames)).message_id(format!(
                "{}.{index}-{}",
                ctx.id_prefix,
                index + count as u64 - 1
            )),
        };
        match ctx
            .js
            .send_publish(ctx.names.subject.clone(), message)
            .await
        {
            Ok(ack) => {
                let fresh = index >= *sent_to;
                *sent_to = (*sent_to).max(index + count as u64);
                acks.push(Pending::Ack(ack, count, fresh));
            }
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded => {
                // It can never be stored: drop it rather than block every
                // later frame behind it.
                tracing::error!(error = %e, "a message is larger than the server accepts; dropped");
                acks.push(Pending::Dropped(count));
            }
            Err(e) => {
                settle(ctx, acks, packs).await?;
                return Err(e);
            }
        }
    }
    settle(ctx, acks, packs).await
}

/// An acknowledgement awaited for a message of so many frames, or the
/// frames of a message dropped.
enum Pending {
    /// Of a message of so many frames, and whether it was published for
    /// the first time.
    Ack(jetstream::context::PublishAckFuture, usize, bool),
    Dropped(usize),
    /// A publish a test made fail.
    #[cfg(feature = "failpoints")]
    Lost,
}

/// Awaits acknowledgements in order, completing frames as they arrive.
async fn settle(
    ctx: &Ctx,
    acks: Vec<Pending>,
    packs: &mut VecDeque<usize>,
) -> Result<(), PublishError> {
    for ack in acks {
        let count = match ack {
            Pending::Ack(ack, count, fresh) => match ack.await {
                // Stored under its id before this node ever published it:
                // another publisher took the id, and the stream keeps that
                // message, not this one. Its frames are lost, and the gap
                // they leave makes the node start over.
                Ok(ack) if ack.duplicate && fresh => {
                    tracing::error!(
                        sequence = ack.sequence,
                        "a message's id was taken by another publisher; dropped"
                    );
                    count
                }
                Ok(ack) => {
                    packs.pop_front();
                    ctx.shared.complete(|outbox| {
                        for i in 0..count {
                            outbox.ack_oldest((ack.sequence << INDEX_BITS) | i as u64);
                        }
                    });
                    continue;
                }
                // The stream's own limit, below the server's (lowered
                // since this node joined): sent again, it would be
                // refused again, with every later message behind it.
                Err(e) if too_large(&e) => {
                    tracing::error!(error = %e, "a message is larger than the stream stores; dropped");
                    count
                }
                Err(e) => return Err(e),
            },
            Pending::Dropped(count) => count,
            #[cfg(feature = "failpoints")]
            Pending::Lost => {
                return Err(PublishError::new(
                    jetstream::context::PublishErrorKind::Other,
                ));
            }
        };
        packs.pop_front();
        ctx.shared.complete(|outbox| {
            let first = outbox.done();
            ctx.hole.send_if_modified(|hole| {
                let found = hole.is_none();
                hole.get_or_insert(first);
                found
            });
            for _ in 0..count {
                outbox.drop_oldest();
            }
        });
    }
    Ok(())
}

/// Whether the stream refused a message as larger than it stores.
fn too_large(e: &PublishError) -> bool {
    use std::error::Error as _;
    let code = e
        .source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code);
    e.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded
        || code == Some(jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
}

/// Reads the stream into the node, from the node's position on: reloads
/// from the newest snapshot when the node needs it or fell behind the
/// purge, and takes its turn saving snapshots.
async fn read_log(ctx: Arc<Ctx>, node: Weak<Inner>) {
    let mut snapshots = SnapshotDuty::default();
    let mut echoes = Echoes::default();
    let mut attempts = ctx.backoff.attempts();
    let mut hole = ctx.hole.subscribe();
    // Where a node that left reads on from: its position no longer moves.
    let mut skip = 0;
    loop {
        let Some(n) = Node::upgrade(&node) else {
            return;
        };
        let from = n.log_position().max(skip);
        let left = n.read(|r| r.has_left());
        drop(n);
        let reason = tokio::select! {
            r = read_from(&ctx, &node, from, &mut echoes, &mut snapshots) => r,
            _ = hole.wait_for(Option::is_some) => Stop::Reload,
            _ = ctx.shared.cancel.cancelled() => return,
        };
        // Where reading jumped, the messages the stream lacks.
        let mut missing = match reason {
            Stop::Behind(from, to) => Some((from, to)),
            _ => None,
        };
        match reason {
            Stop::Dropped | Stop::Failed => {
                ctx.shared.cancel.cancel();
                return;
            }
            // A node that left is not started over (nor does a gap matter
            // to it): it reads on from where the stream starts, so that
            // its flushes pass.
            Stop::Reload | Stop::Gap(..) | Stop::Behind(..) if left => {
                if let Some(n) = Node::upgrade(&node) {
                    echoes.left(&ctx, &n);
                }
                match ctx.stream.get_info().await {
                    Ok(info) => {
                        let first = info.state.first_sequence.max(1);
                        skip = skip.max((first << INDEX_BITS) - 1);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the stream's state failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(attempts.next_delay()) => {}
                            _ = ctx.shared.cancel.cancelled() => return,
                        }
                    }
                }
            }
            Stop::Reload | Stop::Gap(..) | Stop::Behind(..) => {
                attempts.reset();
                loop {
                    // A start-over that fails is tried again after a wait:
                    // each attempt reads a snapshot and the stream, and
                    // one that fails the same way fails again at once.
                    if ctx.shared.cancel.is_cancelled() {
                        return;
                    }
                    match reload(&ctx, &node, &mut echoes, missing).await {
                        Ok(()) => {
                            attempts.reset();
                            gap_closed(&ctx);
                            break;
                        }
                        Err(Stop::Dropped | Stop::Failed) => return,
                        Err(Stop::Reload) => {
                            tracing::info!("starting over again")
                        }
                        Err(Stop::Behind(from, to)) => {
                            missing = Some((from, to));
                            tracing::info!("the stream was purged meanwhile; starting over again")
                        }
                        Err(Stop::Gap(from, to)) => gap_found(&ctx, from, to),
                        Err(Stop::Error(e)) => {
                            tracing::warn!(error = %e, "starting over from the snapshot failed; retrying")
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(attempts.next_delay()) => {}
                        _ = ctx.shared.cancel.cancelled() => return,
                    }
                }
            }
            Stop::Error(e) => {
                tracing::warn!(error = %e, "reading the stream failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(attempts.next_delay()) => {}
                    _ = ctx.shared.cancel.cancelled() => return,
                }
            }
        }
    }
}

/// Starts the node over from the newest snapshot. The new incarnation
/// first reads the log on to where the node had read, then sends its hello
/// and reads on, beside the node, until it reads that back and the node
/// has read back every frame it sent before the hello; then it takes the
/// node's place.
/// Until then the node keeps answering reads, so that no read goes back
/// to the snapshot's older state, and it takes writes until the hello
/// (after a refused write: those after it it could not judge, and the new
/// incarnation would not show them); and what the new incarnation writes (the writes it carries over after a
/// lapse first) it judges on a state no round of reclamation completed
/// without it has passed (DESIGN.md, "On a totally ordered log").
async fn reload(
    ctx: &Ctx,
    node: &Weak<Inner>,
    echoes: &mut Echoes,
    missing: Option<(u64, u64)>,
) -> Result<(), Stop> {
    // A node that left is not started over, whatever the stream lacks.
    {
        let n = Node::upgrade(node).ok_or(Stop::Dropped)?;
        if n.read(|r| r.has_left()) {
            echoes.left(ctx, &n);
            return Ok(());
        }
    }
    let start = Start::read(&ctx.snapshots, &ctx.stream)
        .await
        .map_err(|e| Stop::Error(e.into()))?;
    // The new incarnation says nothing before it knows it can read the log
    // on from its snapshot: neither when the stream starts past it nor
    // when reading jumped past messages it does not cover (an operator
    // removed them).
    if let Some((from, to)) = start.gap(missing) {
        return Err(Stop::Gap(from, to));
    }
    let Start { snapshot, first } = start;
    let snapshot = snapshot.map(|(bytes, _)| bytes);
    let (mut next, read) = {
        let n = Node::upgrade(node).ok_or(Stop::Dropped)?;
        let next = n
            .prepare_reload(snapshot.as_deref())
            .map_err(|e| Stop::Error(e.into()))?;
        (next, n.log_position())
    };
    // Whole messages: reading goes on after the last one applied.
    let until = read >> INDEX_BITS;
    let snapshot_at = next.log_position() >> INDEX_BITS;
    // The node reads on beside the new incarnation from where it stopped,
    // also when the snapshot is past that (what it wrote there is its to
    // judge), unless the stream no longer holds that.
    let mut beside = snapshot_at < until || first <= until;
    let mut last = match beside {
        true => snapshot_at.min(until.saturating_sub(1)),
        false => snapshot_at,
    };
    let caught_up_at = until.max(snapshot_at);
    let mut joining = false;
    let mut handing_over = false;
    // The frames of this connection the node has read back, from where
    // its reader had got, the frames it read past one not read yet
    // included. Kept apart until the start-over ends: read back after a
    // lapse, they are refused.
    let mut seen = echoes.read.clone();
    // The frames before this one are those the old incarnation queued
    // before the hello. Those it queues after carry no write (it takes
    // none), and waiting for them could chase them for ever.
    let mut hello_at = u64::MAX;
    let caught_up = async {
        let mut messages = Messages::open(ctx, last + 1).await?;
        // The last message the node has read (perhaps not whole: it stops
        // at a frame that makes it start over).
        let mut node_at = until;
        while last < caught_up_at
            || !next.joined_log()
            || !read_back(ctx, node, handing_over && beside, &seen, hello_at)?
        {
            if last >= caught_up_at && !joining {
                // From the hello on, the node takes no writes: it could
                // judge one only by reading on to it, and the new
                // incarnation, taking its place before reading it, would
                // not show it. Its writes held offline go out before the
                // hello. After a lapse the log refuses them all, and the
                // new incarnation carries them over instead.
                #[cfg(feature = "failpoints")]
                injected("nats-reload-before-hello")
                    .await
                    .map_err(|()| Stop::Error("a fault injected before the hello".into()))?;
                {
                    let n = Node::upgrade(node).ok_or(Stop::Dropped)?;
                    // A node that left says no hello: the start-over ends
                    // below.
                    if n.read(|r| r.has_left()) {
                        return Ok(());
                    }
                    joining = true;
                    handing_over = !n.lease_lapsed();
                    guarded(ctx, "handing over to a new incarnation", || {
                        n.hand_over(handing_over);
                        n.send_held();
                        n.pump_all();
                    })?;
                    hello_at = ctx.shared.outbox().queued();
                }
                for frame in next.take_transmits() {
                    ctx.shared.enqueue(frame);
                }
                #[cfg(feature = "failpoints")]
                after_hello().await?;
            }
            let message = messages.next().await?;
            let m = Read::of(ctx, &message)?;
            match m.follows(last) {
                Ok(true) => {}
                Ok(false) => continue,
                // Messages the snapshot covers that the stream lacks
                // (removed from the middle) are no loss to the new
                // incarnation. The node cannot read on past them beside
                // it, and judges none of its frames after them, as when
                // the stream was purged past where it had read (it
                // waited for a purge past it, ten snapshots on).
                Err(Stop::Behind(_, to)) if to <= snapshot_at => beside = false,
                // A purge behind a newer snapshot meanwhile starts over
                // from it.
                Err(stop) => return Err(stop),
            }
            if ctx.shared.cancel.is_cancelled() {
                return Err(Stop::Dropped);
            }
            // Where the node had read, it reads on too (frames it applied
            // already are skipped).
            let follows = m.seq >= until && m.seq <= node_at + 1;
            let n = follows
                .then(|| Node::upgrade(node).ok_or(Stop::Dropped))
                .transpose()?;
            if follows {
                node_at = m.seq;
            }
            // Those before where the node had read it read back then.
            if let Some(first) = m.own.filter(|_| follows || m.seq < until) {
                seen.read(first, first.saturating_add(m.count));
            }
            // The snapshot covers the messages up to its position.
            let fresh = m.seq > snapshot_at;
            guarded(ctx, "applying the stream's messages", || {
                for (i, frame) in m.frames.iter().enumerate() {
                    if !fresh {
                        if let Some(n) = &n {
                            if let Err(e) = n.receive_ordered(frame, m.position(i), m.time) {
                                tracing::warn!(error = %e, seq = m.seq, i, "refused a message from the stream");
                            }
                        }
                        continue;
                    }
                    if let Err(e) = next.receive_ordered(frame, m.position(i), m.time) {
                        tracing::warn!(error = %e, seq = m.seq, i, "refused a message from the stream");
                    }
                    if let Some(n) = &n {
                        // Refused alike, and warned of, just above.
                        let _ = n.receive_ordered(frame, m.position(i), m.time);
                    }
                }
            })?;
            last = m.seq;
        }
        Ok(())
    }
    .await;
    if let Err(stop) = caught_up {
        // Nothing more is done to a node whose engine panicked.
        if matches!(stop, Stop::Failed) {
            return Err(stop);
        }
        // The node reads on from past what it read beside the new
        // incarnation: what it read back there counts, unless its lease
        // lapsed (the log refused it then).
        if Node::upgrade(node).is_some_and(|n| !n.lease_lapsed()) {
            echoes.read = seen;
        }
        // A new incarnation that said hello and goes no further says
        // goodbye, or it would stay a member, waited for by every round of
        // reclamation, until its lease ran out.
        if joining {
            for frame in next.goodbye() {
                ctx.shared.enqueue(frame);
            }
        }
        if handing_over {
            if let Some(n) = Node::upgrade(node) {
                guarded(ctx, "taking the node back", || n.hand_over(false))?;
            }
        }
        return Err(stop);
    }
    let n = Node::upgrade(node).ok_or(Stop::Dropped)?;
    if n.read(|r| r.has_left()) {
        // It left meanwhile: a node that left is not started over, and
        // the new incarnation, if it said hello, leaves too.
        if joining {
            for frame in next.goodbye() {
                ctx.shared.enqueue(frame);
            }
        }
        guarded(ctx, "leaving", || n.pump_all())?;
        echoes.left(ctx, &n);
        return Ok(());
    }
    // Every frame queued so far but the new incarnation's hello is the
    // old incarnation's, what it holds included.
    guarded(ctx, "starting over", || {
        n.send_held();
        n.pump_all();
    })?;
    let queued = ctx.shared.outbox().queued();
    let lapsed = n.lease_lapsed();
    let refused = n.read(|r| r.refused_writes());
    let hole = ctx.hole.send_replace(None);
    let installed = guarded(ctx, "starting over", || n.install(next));
    let Some((carried, lost)) = installed? else {
        // It left meanwhile, and the new incarnation with it.
        ctx.hole.send_replace(hole);
        echoes.left(ctx, &n);
        return Ok(());
    };
    // The new incarnation's frames, those carrying the writes it carried
    // over included, are queued now.
    guarded(ctx, "starting over", || n.pump_all())?;
    let carried_to = (carried > 0).then(|| ctx.shared.outbox().queued());
    // The new incarnation holds its writes as the old one did (after the
    // carried ones are queued: a flush counts on them).
    guarded(ctx, "starting over", || ctx.link.attach(&n))?;
    let lost = match lapsed {
        true => Lost::Lapse {
            lost,
            carried_to,
            refused,
        },
        false => Lost::Refused { refused, hole },
    };
    echoes.started_over(&ctx.shared, queued, lost);
    ctx.shared.rejoined();
    tracing::info!(
        position = n.log_position(),
        "started over from the newest snapshot"
    );
    Ok(())
}

/// The fault a test injects after a new incarnation's hello: `return`
/// fails the start-over there, `return(hold)` holds it there until the
/// test changes the fail point.
#[cfg(feature = "failpoints")]
async fn after_hello() -> Result<(), Stop> {
    injected("nats-reload-after-hello")
        .await
        .map_err(|()| Stop::Error("a fault injected after the hello".into()))
}

/// The fault a test injects at the fail point `name`: `return` is an
/// error, `return(hold)` waits until the test changes the fail point.
#[cfg(feature = "failpoints")]
async fn injected(name: &str) -> Result<(), ()> {
    let mut held = false;
    while let Some(arg) = fail::eval(name, |arg| arg) {
        if arg.as_deref() != Some("hold") {
            return Err(());
        }
        if !std::mem::replace(&mut held, true) {
            // What a test waits for to know the task got there.
            tracing::info!(name, "held at a fail point");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Runs `f`, a call of the reader into the node, which runs the node's
/// listeners: their panics stop at them, and a panic of the engine itself
/// stops the connection ([`contained`]), and the reader with
/// [`Stop::Failed`].
fn guarded<R>(ctx: &Ctx, during: &'static str, f: impl FnOnce() -> R) -> Result<R, Stop> {
    contained(&ctx.shared, during, f).ok_or(Stop::Failed)
}

/// Whether the node that hands over to a new incarnation, reading beside
/// it (`judging`), has read back every frame it queued before the new
/// incarnation's hello (those before `hello_at`; `seen` says which it
/// read back), so that it has judged each of its writes and the new
/// incarnation shows them: always after a lapse, whose frames the log
/// refuses and the new incarnation carries over, and once a frame was
/// dropped, up to it (the log holds those after it for ever).
fn read_back(
    ctx: &Ctx,
    node: &Weak<Inner>,
    judging: bool,
    seen: &ReadBack,
    hello_at: u64,
) -> Result<bool, Stop> {
    if !judging {
        return Ok(true);
    }
    let to = ctx
        .hole
        .borrow()
        .map_or(hello_at, |hole| hole.min(hello_at));
    let n = Node::upgrade(node).ok_or(Stop::Dropped)?;
    Ok(n.lease_lapsed() || to <= seen.accepted)
}

/// Why reading the stream stopped.
enum Stop {
    /// The node is gone.
    Dropped,
    /// The node's engine panicked on the reader: the connection stopped
    /// for good ([`contained`]).
    Failed,
    /// The node must start over from the newest snapshot.
    Reload,
    /// Reading failed; it is tried again.
    Error(BoxError),
    /// The stream lacks the messages from and to these, which the newest
    /// snapshot does not cover.
    Gap(u64, u64),
    /// Reading jumped past the messages from and to these: the stream was
    /// purged behind a newer snapshot, or lacks them ([`Stop::Gap`]).
    Behind(u64, u64),
}

/// What the reader learnt of this connection's own frames in the log.
#[derive(Default)]
struct Echoes {
    read: ReadBack,
    /// What the log refused of the node's writes was counted when it left
    /// (its refused writes are counted once).
    left: bool,
}

/// Which frames of this connection the node has read back from the log,
/// by their connection-wide indices.
#[derive(Clone, Debug, Default, PartialEq)]
struct ReadBack {
    /// Every frame below this index was read back. Only a frame read back
    /// moves it: the frames after one not read yet (its publish failed
    /// and is tried again, after later ones were stored) leave it where
    /// it is, for that one may be lost or refused yet. (Moved to the
    /// highest read, it let a start-over after a lapse take such a frame
    /// as read back, so that its writes were neither carried over nor
    /// reported lost.)
    accepted: u64,
    /// The frames read back past `accepted`: first and end of each run.
    ahead: std::collections::BTreeMap<u64, u64>,
}

impl ReadBack {
    /// The frames `first` to `end` (excluded) were read back. Returns
    /// whether `accepted` moved.
    fn read(&mut self, first: u64, end: u64) -> bool {
        if end <= self.accepted {
            return false;
        }
        if first > self.accepted {
            // Joined to a run it follows, so that the runs stay few.
            let before = self.ahead.range_mut(..=first).next_back();
            match before {
                Some((_, run)) if *run >= first => *run = (*run).max(end),
                _ => {
                    let run = self.ahead.entry(first).or_insert(end);
                    *run = (*run).max(end);
                }
            }
            return false;
        }
        self.reach(end);
        true
    }

    /// Every frame below `to` counts as read back.
    fn reach(&mut self, to: u64) {
        self.accepted = self.accepted.max(to);
        while let Some(run) = self.ahead.first_entry() {
            if *run.key() > self.accepted {
                break;
            }
            self.accepted = self.accepted.max(run.remove());
        }
    }

    /// The runs of frames below `to` not read back: first and end of each.
    fn unread(&self, to: u64) -> Vec<(u64, u64)> {
        let mut runs = Vec::new();
        let mut at = self.accepted;
        for (&first, &end) in &self.ahead {
            if first >= to {
                break;
            }
            if first > at {
                runs.push((at, first));
            }
            at = at.max(end);
        }
        if at < to {
            runs.push((at, to));
        }
        runs
    }
}

/// What the old incarnation of a node that started over lost.
enum Lost {
    /// Its lease lapsed: the log refused every frame it had not read back,
    /// and the new incarnation carried over the writes it could (into the
    /// frames before `carried_to`); the `lost` others, by operation. The
    /// `refused` writes it read back refused before the lapse are lost
    /// too (none of them is carried over).
    Lapse {
        lost: u64,
        carried_to: Option<u64>,
        refused: u64,
    },
    /// The log refused `refused` of its writes, each to an object another
    /// node held at the write's position (the rest of their messages
    /// stand); and from the frame `hole` on, if the stream refused one as
    /// too large, its frames wait behind that gap for ever.
    Refused { refused: u64, hole: Option<u64> },
    /// Its lease lapsed and it left before a new incarnation could carry
    /// its writes over: the log refused every frame it had not read back.
    Abandoned,
}

impl Echoes {
    /// Counts the writes the log refused as dropped once the node started
    /// over (its frames before `queued` are the old incarnation's), before
    /// its reading position moves on, so that a flush waiting for them
    /// sees the loss. Heartbeats and the like are refused too, but lose no
    /// write.
    fn started_over(&mut self, shared: &Shared, queued: u64, lost: Lost) {
        let from = self.read.accepted;
        let unread = self.read.unread(queued);
        self.read.reach(queued);
        let lapsed = matches!(lost, Lost::Lapse { .. } | Lost::Abandoned);
        let count = shared.complete(|outbox| {
            let count = match lost {
                Lost::Lapse {
                    lost,
                    carried_to,
                    refused,
                } => {
                    outbox.refused_between(from, queued);
                    outbox.count_refused(lost + refused);
                    if let Some(to) = carried_to {
                        outbox.carried_over(from, to);
                    }
                    lost + refused
                }
                Lost::Refused { refused, hole } => {
                    outbox.count_refused(refused);
                    let behind = hole.map_or(0, |h| outbox.count_refused_between(h, queued));
                    refused + behind
                }
                // Those read back before the lapse stand.
                Lost::Abandoned => unread
                    .iter()
                    .map(|&(first, end)| outbox.count_refused_between(first, end))
                    .sum(),
            };
            outbox.read_back(self.read.accepted);
            count
        });
        if count > 0 {
            tracing::warn!(lost = count, lapsed, "the log refused writes of this node");
        }
    }
}

impl Echoes {
    /// Counts what the log refused of the writes of a node that left when
    /// it was to start over, as [`Echoes::started_over`] does, with nothing
    /// carried over.
    fn left(&mut self, ctx: &Ctx, n: &Node) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        let queued = ctx.shared.outbox().queued();
        let lost = match n.lease_lapsed() {
            true => Lost::Abandoned,
            false => Lost::Refused {
                refused: n.read(|r| r.refused_writes()),
                hole: ctx.hole.send_replace(None),
            },
        };
        self.started_over(&ctx.shared, queued, lost);
    }
}

/// How many writes (changes to the document) a frame carries, whose
/// refusal a flush reports: a refused lock request fails its future
/// instead, and a refused release of a node whose lease ran out loses
/// nothing. A frame that does not decode counts as one write: it is not
/// known to lose nothing.
fn writes_in(frame: &[u8]) -> u64 {
    facsimile_core::Envelope::writes_in(frame).unwrap_or(1)
}

/// The frames a message id names: `sender.i` frame `i` of its sender,
/// `sender.i-j` frames `i` to `j` packed in one message; the first and how
/// many.
fn frames_named(id: &str) -> Option<(u64, u64)> {
    span(id.rsplit_once('.')?.1)
}

/// The frames `i` or `i-j` (the end of a message id) names: the first and
/// how many.
fn span(frames: &str) -> Option<(u64, u64)> {
    match frames.split_once('-') {
        None => Some((frames.parse().ok()?, 1)),
        Some((first, last)) => {
            let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
            let count = last.checked_sub(first)?.checked_add(1)?;
            (count < 1 << INDEX_BITS).then_some((first, count))
        }
    }
}

/// A message's id, if it has one.
fn message_id(message: &async_nats::Message) -> Option<&str> {
    Some(
        message
            .headers
            .as_ref()?
            .get(async_nats::header::NATS_MESSAGE_ID)?
            .as_str(),
    )
}

/// The connection-wide index of the first frame of a message this
/// connection published.
fn own_index(prefix: &str, id: &str) -> Option<u64> {
    let frames = id.strip_prefix(prefix)?.strip_prefix('.')?;
    span(frames).map(|(first, _)| first)
}

/// A consumer's messages from a stream sequence on, in order.
struct Messages {
    consumer: consumer::pull::Ordered,
    /// A silence that means the consumer is stuck.
    stalled: Silence,
    /// What the consumer gave after the messages read ahead, when that
    /// was not a message: its end or an error.
    ahead: Option<Stop>,
}

/// How many messages already received are applied together.
const READ_AHEAD: usize = 64;

impl Messages {
    /// The messages from the stream sequence `start` on.
    async fn open(ctx: &Ctx, start: u64) -> Result<Messages, Stop> {
        let consumer = ctx
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                // A pull sent to a server that then died is noticed when it
                // expires: keep that short, so a failover stalls reading
                // briefly.
                max_expires: PULL_EXPIRY,
                ..Default::default()
            })
            .await
            .map_err(|e| Stop::Error(e.into()))?;
        let consumer = consumer
            .messages()
            .await
            .map_err(|e| Stop::Error(e.into()))?;
        // Every live node writes at least a heartbeat per third of a lease,
        // so a whole lease of silence means the consumer is stuck (its
        // server went away mid-pull): a new one starts from where reading
        // stopped.
        let stalled = Silence::new(ctx.nats.lease.max(Duration::from_secs(1)));
        Ok(Messages {
            consumer,
            stalled,
            ahead: None,
        })
    }

    /// The next message.
    async fn next(&mut self) -> Result<async_nats::jetstream::Message, Stop> {
        if let Some(stop) = self.ahead.take() {
            return Err(stop);
        }
        tokio::select! {
            biased;
            m = self.consumer.next() => {
                self.stalled.heard();
                Self::taken(m)
            }
            stalled = self.stalled.elapsed() => {
                Err(Stop::Error(format!("no message for {stalled:?}").into()))
            }
        }
    }

    /// Adds to `batch` the messages received already, without waiting, up
    /// to [`READ_AHEAD`] in all.
    fn read_ahead(&mut self, batch: &mut Vec<async_nats::jetstream::Message>) {
        while self.ahead.is_none() && batch.len() < READ_AHEAD {
            match self.consumer.next().now_or_never() {
                None => break,
                Some(m) => match Self::taken(m) {
                    Ok(m) => batch.push(m),
                    Err(stop) => self.ahead = Some(stop),
                },
            }
        }
    }

    fn taken(
        m: Option<Result<async_nats::jetstream::Message, consumer::pull::OrderedError>>,
    ) -> Result<async_nats::jetstream::Message, Stop> {
        match m {
            Some(Ok(m)) => Ok(m),
            Some(Err(e)) => Err(Stop::Error(e.into())),
            None => Err(Stop::Error("the stream's consumer ended".into())),
        }
    }
}

/// A stream message as a reader applies it.
struct Read<'a> {
    seq: u64,
    /// When the stream stored it.
    time: Duration,
    /// The connection-wide index of its first frame if this connection
    /// published it.
    own: Option<u64>,
    /// How many frames its id names (those of a malformed message too).
    count: u64,
    frames: Vec<&'a [u8]>,
}

impl<'a> Read<'a> {
    fn of(ctx: &Ctx, message: &'a async_nats::jetstream::Message) -> Result<Read<'a>, Stop> {
        let info = message.info().map_err(Stop::Error)?;
        let seq = info.stream_sequence;
        let time =
            Duration::from_nanos(u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0));
        let id = message_id(message);
        let count = id.and_then(frames_named).map_or(1, |(_, count)| count);
        // Like a frame that does not decode, a malformed message is
        // skipped by every reader alike.
        let frames = unpack(&message.payload, count).unwrap_or_else(|| {
            tracing::warn!(seq, count, "refused a malformed message from the stream");
            Vec::new()
        });
        // Anyone may publish on the subject, under an id with this node's
        // prefix (the stream shows it): one naming frames this connection
        // never queued, or other frames than those it still holds, is not
        // its own.
        let own = id
            .and_then(|id| own_index(&ctx.id_prefix, id))
            .filter(|&first| {
                let outbox = ctx.shared.outbox();
                first
                    .checked_add(count)
                    .is_some_and(|end| end <= outbox.queued())
                    && frames.len() as u64 == count
                    && (first..)
                        .zip(&frames)
                        .all(|(i, frame)| outbox.frame(i).is_none_or(|f| f[..] == **frame))
            });
        Ok(Read {
            seq,
            time,
            own,
            count,
            frames,
        })
    }

    /// Whether it comes right after the message `last`: `false` for one
    /// read before (a new consumer delivers from where reading stopped),
    /// [`Stop::Behind`] with the messages it lacks after `last` (purged
    /// behind a snapshot before this node read them, or removed).
    fn follows(&self, last: u64) -> Result<bool, Stop> {
        if self.seq <= last {
            return Ok(false);
        }
        if self.seq != last + 1 {
            tracing::info!(last, seq = self.seq, "fell behind the stream's purge");
            return Err(Stop::Behind(last + 1, self.seq - 1));
        }
        Ok(true)
    }

    /// The log position of its frame `i`.
    fn position(&self, i: usize) -> u64 {
        (self.seq << INDEX_BITS) | i as u64
    }
}

async fn read_from(
    ctx: &Ctx,
    node: &Weak<Inner>,
    from: u64,
    echoes: &mut Echoes,
    snapshots: &mut SnapshotDuty,
) -> Stop {
    // The stream sequence of the last message read whole.
    let mut last = from >> INDEX_BITS;
    let mut messages = match Messages::open(ctx, last + 1).await {
        Ok(m) => m,
        Err(stop) => return stop,
    };
    ctx.shared.log_read.send_replace(from);
    let mut batch = Vec::new();
    loop {
        match messages.next().await {
            Ok(m) => batch.push(m),
            Err(stop) => return stop,
        }
        // The messages already received go with this one: their frames
        // are applied under one hold of the node.
        messages.read_ahead(&mut batch);
        let (reads, stop) = reads_after(ctx, &batch, last);
        let Some(n) = Node::upgrade(node) else {
            return Stop::Dropped;
        };
        let frames = reads.iter().flat_map(|m| {
            let frames = m.frames.iter().enumerate();
            frames.map(|(i, frame)| (*frame, m.position(i), m.time))
        });
        let applied = contained(&ctx.shared, "applying the stream's messages", || {
            n.receive_ordered_all(frames, |position, e| {
                let (seq, i) = (position >> INDEX_BITS, position & ((1 << INDEX_BITS) - 1));
                tracing::warn!(error = %e, seq, i, "refused a message from the stream");
            })
        });
        let Some((applied, reload)) = applied else {
            return Stop::Failed;
        };
        // What the frames applied say of this connection's own: all but
        // the one that made the node start over, judged then.
        let mut left = applied.saturating_sub(usize::from(reload));
        let (mut moved, before) = (false, last);
        for m in &reads {
            let taken = m.frames.len().min(left);
            left -= taken;
            if let Some(first) = m.own.filter(|_| taken > 0) {
                // Below what the outbox queued (`Read::of`).
                moved |= echoes.read.read(first, first + taken as u64);
            }
            if taken < m.frames.len() {
                break;
            }
            last = m.seq;
        }
        drop(reads);
        batch.clear();
        if moved {
            ctx.shared.outbox().read_back(echoes.read.accepted);
        }
        if last > before {
            // Past every frame the last message read whole may carry.
            ctx.shared
                .log_read
                .send_replace(((last + 1) << INDEX_BITS) - 1);
        }
        if reload {
            return Stop::Reload;
        }
        if let Some(stop) = stop {
            return stop;
        }
        snapshots.after(ctx, &n, last);
    }
}

/// The messages of `batch` that come after the message `last`, in order,
/// and why reading must stop after them, if it must.
fn reads_after<'a>(
    ctx: &Ctx,
    batch: &'a [async_nats::jetstream::Message],
    mut last: u64,
) -> (Vec<Read<'a>>, Option<Stop>) {
    let mut reads = Vec::with_capacity(batch.len());
    for message in batch {
        let m = match Read::of(ctx, message) {
            Ok(m) => m,
            Err(stop) => return (reads, Some(stop)),
        };
        match m.follows(last) {
            Ok(true) => {
                last = m.seq;
                reads.push(m);
            }
            Ok(false) => {}
            Err(stop) => return (reads, Some(stop)),
        }
    }
    (reads, None)
}

/// This node's part in saving snapshots.
#[derive(Default)]
struct SnapshotDuty {
    /// The newest snapshot position this node knows of (claimed).
    known: u64,
    /// This node won the claim and saves a snapshot as soon as its state
    /// is exactly a prefix of the log.
    claimed: bool,
    /// A claim under way, on a task of its own: reading never waits for
    /// the claims bucket, which may live on a server that is gone while
    /// the stream's lives (each batch waited for the client's 10 s
    /// request timeout then).
    claiming: Option<tokio::task::JoinHandle<Claim>>,
}

/// A claim under way ends with the reader: detached, it held the client
/// open after `close` or `abort`, and could win a claim no one acts on
/// (no one else saved for that interval).
impl Drop for SnapshotDuty {
    fn drop(&mut self) {
        if let Some(claiming) = &self.claiming {
            claiming.abort();
        }
    }
}

/// What a claim found: the newest position claimed, and whether this node
/// claimed it.
struct Claim {
    known: u64,
    won: bool,
}

impl SnapshotDuty {
    fn after(&mut self, ctx: &Ctx, node: &Node, seq: u64) {
        let every = ctx.nats.snapshot_every;
        if self.claiming.as_ref().is_some_and(|c| c.is_finished()) {
            if let Some(Ok(c)) = self.claiming.take().and_then(FutureExt::now_or_never) {
                self.known = self.known.max(c.known);
                self.claimed |= c.won;
            }
        }
        if !self.claimed && self.claiming.is_none() && seq >= self.known.saturating_add(every) {
            let (claims, known) = (ctx.snapshots.claims.clone(), self.known);
            let (snapshots, stream) = (ctx.snapshots.clone(), ctx.stream.clone());
            let node = node.downgrade();
            self.claiming = Some(tokio::spawn(async move {
                let mut found = claim(claims, every, known, seq).await;
                // The stream may say nothing more for a long while after
                // the message claimed: save now if the state is a prefix of
                // the log, rather than at the next batch read.
                let saved = |n: Node| save(&snapshots, &stream, every, &n);
                if found.won && Node::upgrade(&node).is_some_and(saved) {
                    found.won = false;
                }
                found
            }));
        }
        if self.claimed && save(&ctx.snapshots, &ctx.stream, every, node) {
            self.claimed = false;
        }
    }
}

/// Saves a snapshot of `node`'s state, on a task of its own (a save under
/// way outlives the reader), if that state is exactly a prefix of the log;
/// `every` is the interval between snapshots.
/// Returns whether it did.
fn save(snapshots: &Snapshots, stream: &stream::Stream, every: u64, node: &Node) -> bool {
    let Some(bytes) = node.log_snapshot() else {
        return false;
    };
    let position = node.log_position();
    tokio::spawn(save_snapshot(
        snapshots.clone(),
        stream.clone(),
        bytes,
        position,
        RETAINED_INTERVALS.saturating_mul(every),
    ));
    true
}

/// Compare-and-set on the claims entry, for the snapshot at the message
/// `seq` of a node that knows of one at `known`: one node per interval
/// saves.
async fn claim(claims: kv::Store, every: u64, known: u64, seq: u64) -> Claim {
    let mut found = Claim { known, won: false };
    #[cfg(feature = "failpoints")]
    if injected("nats-claim").await.is_err() {
        return found;
    }
    let entry = match claims.entry(SNAPSHOT).await {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(error = %e, "reading the snapshot claim failed");
            return found;
        }
    };
    let (revision, claimed) = entry
        .map(|e| {
            let at = std::str::from_utf8(&e.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (e.revision, at)
        })
        .unwrap_or((0, 0));
    found.known = found.known.max(claimed);
    if seq < found.known.saturating_add(every) {
        return found;
    }
    let value = Bytes::from(seq.to_string());
    let won = if revision == 0 {
        claims.create(SNAPSHOT, value).await.is_ok()
    } else {
        claims.update(SNAPSHOT, value, revision).await.is_ok()
    };
    if won {
        found = Claim { known: seq, won };
    }
    found
}

/// Saves a snapshot ([`Snapshots::save`]), removes those before the one it
/// replaced, then purges the stream up to `retain` messages before it:
/// nodes that far behind still catch up by reading; joiners start from
/// the snapshot.
async fn save_snapshot(
    snapshots: Snapshots,
    stream: stream::Stream,
    bytes: Vec<u8>,
    position: u64,
    retain: u64,
) {
    match snapshots.save(&bytes, position).await {
        Ok(Saved::Current { replaced }) => {
            tracing::debug!(position, size = bytes.len(), "saved a snapshot");
            if let Some(replaced) = replaced {
                snapshots.remove_before(replaced).await;
            }
        }
        Ok(Saved::Superseded) => return,
        Err(e) => {
            tracing::warn!(error = %e, position, "saving a snapshot failed");
            return;
        }
    }
    // Everything below `keep` goes; the current snapshot covers it.
    let keep = (position >> INDEX_BITS).saturating_sub(retain);
    if keep > 1 {
        if let Err(e) = stream.purge().sequence(keep).await {
            tracing::warn!(error = %e, "purging the stream failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim under way ends with the reader's duty (the connection was
    /// closed or aborted): it would hold the client, and could win a claim
    /// no one acts on.
    #[tokio::test]
    async fn a_claim_under_way_ends_with_the_duty() {
        let held = Arc::new(());
        let keep = held.clone();
        let duty = SnapshotDuty {
            claiming: Some(tokio::spawn(async move {
                let _keep = keep;
                std::future::pending::<()>().await;
                Claim {
                    known: 0,
                    won: false,
                }
            })),
            ..SnapshotDuty::default()
        };
        drop(duty);
        let ended = async {
            while Arc::strong_count(&held) > 1 {
                tokio::task::yield_now().await;
            }
        };
        // A bound for a hang, not a timing: the task ends at once or never.
        let ended = tokio::time::timeout(Duration::from_secs(10), ended).await;
        assert!(ended.is_ok(), "the claim outlived the duty");
    }

    /// The client's report that its first connection was lost may come
    /// before `connect` gets to say it is connected: the status then
    /// stays as reported.
    #[test]
    fn a_first_connection_lost_before_the_start_is_not_reported_connected() {
        let shared = Shared::new(Outbox::over_log(|frame| writes_in(frame)));
        let status = &shared.status;
        let link = Link::default();
        link.set(true, &shared);
        link.set(false, &shared);
        let mut seen = status.subscribe();
        futures_executor::block_on(
            seen.wait_for(|s| matches!(s, Status::Disconnected(r) if r != "connecting")),
        )
        .unwrap();
        link.started(status);
        assert!(
            matches!(*status.subscribe().borrow(), Status::Disconnected(_)),
            "the lost connection is reported connected"
        );
        assert!(!link.state().connected);
    }

    fn frames(sizes: &[usize]) -> Vec<Bytes> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
            .collect()
    }

    #[test]
    fn packed_frames_come_out_as_they_went_in() {
        let sent = frames(&[3, 0, 70, 1]);
        let payload = pack(&sent);
        let read = unpack(&payload, 4).unwrap();
        assert_eq!(read, sent.iter().map(|f| &f[..]).collect::<Vec<_>>());
        // One frame is its own payload.
        assert_eq!(unpack(&sent[2], 1).unwrap(), vec![&sent[2][..]]);
    }

    #[test]
    fn a_pack_that_does_not_match_its_count_is_refused() {
        let payload = pack(&frames(&[3, 5]));
        assert!(unpack(&payload, 3).is_none());
        assert!(unpack(&payload[..payload.len() - 1], 2).is_none());
        assert!(unpack(&payload[..2], 2).is_none());
        // A length beyond the payload.
        assert!(unpack(&[0xff, 0xff, 0xff, 0xff, 1], 2).is_none());
    }

    #[test]
    fn message_ids_name_one_frame_or_a_range() {
        assert_eq!(frames_named("host.name.0000abcd.17"), Some((17, 1)));
        assert_eq!(frames_named("host.0000abcd.17-20"), Some((17, 4)));
        assert_eq!(frames_named("host.0000abcd.20-17"), None);
        assert_eq!(frames_named("host.0000abcd.0-70000"), None);
        assert_eq!(frames_named("x.0-18446744073709551615"), None);
        assert_eq!(frames_named("no-dot"), None);
        assert_eq!(own_index("h.0000abcd", "h.0000abcd.5-9"), Some(5));
        assert_eq!(own_index("h.0000abcd", "h.0000abce.5"), None);
    }

    fn stream_config(max_message_size: i32) -> stream::Config {
        let names = Names::new("doc");
        stream::Config {
            name: names.stream,
            subjects: vec![names.subject.to_string()],
            max_message_size,
            ..Default::default()
        }
    }

    #[test]
    fn every_reader_takes_what_the_stream_stores() {
        let names = Names::new("doc");
        let limits = |config: &stream::Config, max_message| {
            Limits::of(config, &names, max_message, 300).ok()
        };
        let read = |limits: Option<Limits>| limits.map(|l| l.read);
        // The reader's own limit does not matter; the writer keeps to both.
        let config = stream_config(1 << 20);
        assert_eq!(read(limits(&config, 64 << 10)), Some(1 << 20));
        assert_eq!(
            limits(&config, 16 << 20),
            Some(Limits {
                read: 1 << 20,
                write: (1 << 20) - 300
            })
        );
        assert_eq!(limits(&config, 64 << 10).unwrap().write, (64 << 10) - 300);
        // A stream without a limit: what a NATS message carries at most.
        assert_eq!(read(limits(&stream_config(-1), 1 << 20)), Some(MAX_PAYLOAD));
        // No room for a node's messages, another subject, a stream that
        // forgets what it delivered: refused.
        assert!(limits(&stream_config(4 << 10), 1 << 20).is_none());
        assert!(limits(&config, 4 << 10).is_none());
        let mut other = config.clone();
        other.subjects = vec!["facsimile.other".into()];
        assert!(matches!(
            Limits::of(&other, &names, 1 << 20, 300),
            Err(NetError::StreamRefused { stream, .. }) if stream == names.stream
        ));
        let mut work_queue = config;
        work_queue.retention = stream::RetentionPolicy::WorkQueue;
        assert!(limits(&work_queue, 1 << 20).is_none());
    }

    #[test]
    fn a_stream_whose_limits_drop_messages_is_refused() {
        let names = Names::new("doc");
        let adopted = |config: &stream::Config| Limits::of(config, &names, 1 << 20, 300).is_ok();
        let config = stream_config(1 << 20);
        assert!(adopted(&config));
        let mut aged = config.clone();
        aged.max_age = Duration::from_secs(3600);
        assert!(!adopted(&aged));
        for limit in [
            |c: &mut stream::Config| c.max_messages = 1000,
            |c: &mut stream::Config| c.max_bytes = 1 << 30,
            |c: &mut stream::Config| c.max_messages_per_subject = 1000,
        ] {
            let mut limited = config.clone();
            limit(&mut limited);
            assert!(!adopted(&limited), "{limited:?}");
            // A full stream that refuses new messages keeps every one.
            limited.discard = stream::DiscardPolicy::New;
            limited.discard_new_per_subject = limited.max_messages_per_subject > 0;
            assert!(adopted(&limited), "{limited:?}");
        }
        // The per-subject limit drops the oldest message even under the
        // `new` discard policy, unless that applies per subject too.
        let mut per_subject = config;
        per_subject.max_messages_per_subject = 1000;
        per_subject.discard = stream::DiscardPolicy::New;
        assert!(!adopted(&per_subject), "{per_subject:?}");
    }

    #[test]
    fn hostnames_are_escaped_in_message_ids() {
        assert_eq!(id_hostname("plain.host-1"), "plain.host-1");
        assert_eq!(id_hostname("a\r\nb%"), "a%0D%0Ab%25");
        // Distinct hostnames, distinct ids.
        assert_ne!(id_hostname("a\nb"), id_hostname("a%0Ab"));
        let prefix = format!("{}.0000abcd", id_hostname("x\ny"));
        assert_eq!(own_index(&prefix, &format!("{prefix}.7-9")), Some(7));
    }

    #[test]
    fn a_hostname_starting_with_whitespace_keeps_its_ids_whole() {
        for hostname in [" alpha", "\talpha", "\u{a0}alpha", "  "] {
            let prefix = format!("{}.0000abcd", id_hostname(hostname));
            let sent = format!("{prefix}.7");
            // The client trims the header values it receives.
            assert_eq!(own_index(&prefix, sent.trim()), Some(7), "{hostname:?}");
        }
        assert_ne!(id_hostname(" a"), id_hostname("a"));
        assert_ne!(id_hostname(" a"), id_hostname("%20a"));
        assert_eq!(id_hostname("a b"), "a b");
    }

    #[test]
    fn snapshot_objects_are_named_by_their_position_and_saver() {
        assert_eq!(snapshot_position(&snapshot_name(42, 7)), Some(42));
        let tag = snapshot_tag();
        assert_eq!(
            snapshot_position(&snapshot_name(u64::MAX, tag)),
            Some(u64::MAX)
        );
        // Two savers of one position name their objects apart.
        assert_ne!(snapshot_name(42, tag), snapshot_name(42, snapshot_tag()));
        assert_eq!(snapshot_position(SNAPSHOT), None);
        // Named before tags.
        assert_eq!(snapshot_position("snapshot-00000000000000000042"), Some(42));
        // As the object store names their subjects.
        assert_eq!(encoded_name("snapshot"), "c25hcHNob3Q=");
        assert_eq!(
            encoded_name("snapshot-00000000000000000042"),
            "c25hcHNob3QtMDAwMDAwMDAwMDAwMDAwMDAwNDI="
        );
        assert_eq!(encoded_name("ab"), "YWI=");
        assert_eq!(encoded_name("a"), "YQ==");
        assert_eq!(encoded_name("\u{fb}\u{ff}"), "w7vDvw==");
    }

    #[test]
    fn frames_read_back_past_one_not_read_leave_it_unread() {
        let mut seen = ReadBack::default();
        assert!(seen.read(0, 3));
        // Frame 3's publish failed; 4 and 5, then 6 and 7, were read back.
        assert!(!seen.read(4, 6));
        assert!(!seen.read(6, 8));
        assert_eq!(seen.accepted, 3);
        assert_eq!(seen.unread(10), [(3, 4), (8, 10)]);
        assert_eq!(seen.unread(4), [(3, 4)]);
        // Read twice.
        assert!(!seen.read(1, 2));
        assert!(seen.read(3, 4));
        assert_eq!(seen.accepted, 8);
        assert!(seen.ahead.is_empty());
        assert_eq!(seen.unread(8), []);
        seen.read(9, 10);
        seen.reach(12);
        assert_eq!((seen.accepted, seen.ahead.len()), (12, 0));
    }

    /// A connection whose frames 0 to 4, one write each, the log stored,
    /// and whose node read back all but frame 2 (its publish failed, and
    /// it is published again after the later ones).
    fn all_read_back_but_frame_2(echoes: &mut Echoes) -> Shared {
        let shared = Shared::new(Outbox::over_log(|frame| writes_in(frame)));
        for i in 0..5u8 {
            shared.enqueue(Bytes::from(vec![0xff, i]));
        }
        shared.complete(|outbox| {
            outbox.take_batch(5, &mut Vec::new());
            for i in 0..5 {
                outbox.ack_oldest((10 + i) << INDEX_BITS);
            }
        });
        for (first, end) in [(0, 2), (3, 5)] {
            if echoes.read.read(first, end) {
                shared.outbox().read_back(echoes.read.accepted);
            }
        }
        shared
    }

    /// A node whose lease lapsed and which left before starting over
    /// reports lost the frame it had not read back, and not the ones it
    /// read back past it.
    #[test]
    fn a_frame_not_read_back_is_lost_with_the_lease() {
        let mut echoes = Echoes::default();
        let shared = all_read_back_but_frame_2(&mut echoes);
        echoes.started_over(&shared, 5, Lost::Abandoned);
        assert_eq!(shared.outbox().dropped(), 1);
    }

    /// After a lapse, a flush waiting for a frame the node had not read
    /// back waits for the frames its writes were carried over into.
    #[test]
    fn a_frame_not_read_back_is_carried_over_after_a_lapse() {
        let mut echoes = Echoes::default();
        let shared = all_read_back_but_frame_2(&mut echoes);
        let lost = Lost::Lapse {
            lost: 0,
            carried_to: Some(7),
            refused: 0,
        };
        echoes.started_over(&shared, 5, lost);
        assert_eq!(shared.outbox().flush_target(3), 7);
        assert_eq!(echoes.read.accepted, 5);
    }

    #[test]
    fn a_gap_is_what_the_stream_lacks_past_the_snapshot() {
        let start = |at: Option<u64>, first| Start {
            snapshot: at.map(|seq| (Vec::new(), seq << INDEX_BITS | 3)),
            first,
        };
        // A stream that starts right after the snapshot, or before it.
        assert_eq!(start(None, 1).gap(None), None);
        assert_eq!(start(None, 0).gap(None), None);
        assert_eq!(start(Some(10), 11).gap(None), None);
        assert_eq!(start(Some(10), 4).gap(None), None);
        // Purged past it.
        assert_eq!(start(None, 5).gap(None), Some((1, 4)));
        assert_eq!(start(Some(10), 13).gap(Some((2, 3))), Some((11, 12)));
        // Reading jumped past messages the snapshot covers, wholly or in part.
        assert_eq!(start(Some(10), 1).gap(Some((4, 10))), None);
        assert_eq!(start(Some(10), 1).gap(Some((4, 12))), Some((11, 12)));
        assert_eq!(start(Some(10), 1).gap(Some((14, 15))), Some((14, 15)));
    }

    #[test]
    fn a_pack_takes_frames_while_they_fit() {
        assert_eq!(pack_len(&frames(&[10, 10, 10]), 28), 2);
        // A frame larger than the limit goes alone.
        assert_eq!(pack_len(&frames(&[100, 10]), 28), 1);
        assert_eq!(pack_len(&frames(&[1; 2000]), usize::MAX), PACK_FRAMES);
    }
}
