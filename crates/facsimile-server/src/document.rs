//! One document: the relay's replica, its store and its clients, driven by
//! one thread.
//!
//! Every input (a client joining, a frame, a departure, a timer tick)
//! arrives on one channel and is handled in order, but for a tick, which
//! waits for the inputs queued behind it when it is taken (after a stall
//! of the thread, frames that arrived meanwhile count as heard before
//! anybody is judged silent); a task beside the thread sends the tick when
//! the replica's next timer is due. The thread applies what
//! it can take in one go, then commits the store once for the whole batch
//! (group commit) and only then releases what the batch produced: the
//! messages for the other clients, the relay's own messages and the
//! acknowledgements. So no client ever sees, and no sender is ever told
//! about, a message that a crash could still lose.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use facsimile::net::protocol::{self, ClientHello, Down, ServerHello, Up};
use facsimile_core::{Config, Envelope, Event, PeerId, Replica};
use indexmap::IndexMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
// The runtime's clock, so that a simulated one drives the timers too.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::store::{Record, Snapshot, Store};

/// The relay's hostname in every document.
pub(crate) const RELAY_HOSTNAME: &str = "relay";

/// At most this many inputs are applied before a commit (and at most half
/// the document's byte budget, `ServerConfig::document_queue`).
const MAX_BATCH: usize = 512;

/// Inputs a document's channel holds (its byte budget is the real bound).
const INPUTS: usize = 4096;

/// How many evicted incarnations the relay remembers the applied frames
/// of (see `Document::applied_at_eviction`).
const APPLIED_KEPT: usize = 4096;

/// Rounds of frames a client's queue holds (its byte budget is the real
/// bound).
pub(crate) const QUEUE_ROUNDS: usize = 1 << 16;

/// How long the timer waits before it sends a tick for the same deadline
/// again: the document re-arms its timer once it has handled a tick, and
/// only does not when the tick found its channel full (or its timer not
/// due yet).
const TICK_AGAIN: Duration = Duration::from_millis(100);

pub(crate) type ConnId = u64;

/// `by` after `at`; a time past what an `Instant` holds is as good as
/// never.
fn later(at: Instant, by: Duration) -> Instant {
    at + by.min(Duration::from_secs(1 << 30))
}

/// The sending side of a client's outgoing queue.
pub(crate) struct Outbox {
    /// Frames for the connection's writer, a round's at a time.
    pub(crate) tx: mpsc::Sender<Vec<Bytes>>,
    /// Bytes queued and not yet written to the socket.
    pub(crate) queued: Arc<AtomicUsize>,
    /// Cancelled to drop the connection at once.
    pub(crate) cancel: CancellationToken,
    /// Why the document ends the connection, for the client's close frame.
    pub(crate) closing: Arc<OnceLock<String>>,
    /// Cancelled when the document ends the connection after what is
    /// queued (a refusal): the connection stops reading, and gives the
    /// writer a little time to send the queue.
    pub(crate) ending: CancellationToken,
}

/// An input of the document's thread.
pub(crate) enum Cmd {
    /// A client passed the handshake checks.
    Join {
        conn: ConnId,
        hello: ClientHello,
        addr: SocketAddr,
        out: Outbox,
    },
    /// A frame from a client, with its share of the document's budget,
    /// given back once the batch that took the frame is committed.
    Frame {
        conn: ConnId,
        frame: Bytes,
        budget: OwnedSemaphorePermit,
    },
    /// A client's connection ended. `refused`: on a frame refused before
    /// it reached the document (above the frame limit, say), so the
    /// client heard the welcome, as it sends nothing before it.
    Leave {
        conn: ConnId,
        reason: String,
        refused: bool,
    },
    /// The timer the document armed is due.
    Tick,
    /// The inspector asks where the document stands.
    Status(oneshot::Sender<DocStatus>),
}

/// The way into a document's thread: its channel, and the budget of bytes
/// that its clients' frames may hold while they wait in the channel or sit
/// in the batch being committed (`ServerConfig::document_queue`).
#[derive(Clone)]
pub(crate) struct Inbox {
    pub(crate) tx: mpsc::Sender<Cmd>,
    budget: Arc<Semaphore>,
    /// The budget's bytes: a larger frame takes all of them.
    size: u32,
    /// Clients handed this inbox whose join is not in the channel yet: an
    /// idle document closes only when there are none (see [`Unlist`]).
    joining: Arc<AtomicUsize>,
}

/// An [`Inbox`]'s identity, which does not keep its document open.
#[derive(Clone)]
pub(crate) struct InboxId(Arc<AtomicUsize>);

impl InboxId {
    /// Whether no client is on its way in ([`Joining`]); read with the
    /// table of open documents locked.
    pub(crate) fn unjoined(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 0
    }
}

/// A client on its way into a document: counted in its inbox's `joining`
/// from when the relay's table of open documents handed the inbox out
/// (under that table's lock) until the join is in the channel.
pub(crate) struct Joining {
    inbox: Inbox,
}

impl Joining {
    /// Counts a client on its way in; call with the table locked.
    pub(crate) fn new(inbox: &Inbox) -> Joining {
        inbox.joining.fetch_add(1, Ordering::SeqCst);
        Joining {
            inbox: inbox.clone(),
        }
    }

    /// Puts the client's join (or the inspector's question) in the
    /// channel; returns the inbox for what the client sends next.
    pub(crate) async fn join(self, join: Cmd) -> Result<Inbox, Closed> {
        self.inbox.send(join).await?;
        Ok(self.inbox.clone())
    }
}

impl Drop for Joining {
    fn drop(&mut self) {
        self.inbox.joining.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes an idle document out of the relay's table of open documents,
/// unless a client is on its way in or `quiet` (whether the document's
/// channel is empty) says one may be in the channel; returns whether it
/// did. Called by the document's thread, which ends when it did: nothing
/// can reach the document any more, and a client that asks for it later
/// opens it again from disk.
pub(crate) type Unlist = Box<dyn Fn(&dyn Fn() -> bool) -> bool + Send>;

/// Takes a document whose store failed out of the relay's table, whoever
/// is on the way in: the next client opens it again from disk.
pub(crate) type Forget = Box<dyn FnOnce() + Send>;

/// The document's thread ended.
#[derive(Debug)]
pub(crate) struct Closed;

/// Why a document did not open: its store could not be written (a full
/// disk), in words for its clients.
#[derive(Debug)]
pub(crate) struct Unwritable(pub(crate) String);

impl std::fmt::Display for Unwritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unwritable {}

impl Inbox {
    /// A document's inbox with a budget of `bytes` (at least one, at most
    /// `u32::MAX`), and the receiving end of its channel.
    pub(crate) fn new(bytes: usize) -> (Inbox, mpsc::Receiver<Cmd>) {
        let size = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        let (tx, rx) = mpsc::channel(INPUTS);
        let budget = Arc::new(Semaphore::new(size as usize));
        let joining = Arc::new(AtomicUsize::new(0));
        (
            Inbox {
                tx,
                budget,
                size,
                joining,
            },
            rx,
        )
    }

    /// What tells this inbox apart, without holding its channel open.
    pub(crate) fn id(&self) -> InboxId {
        InboxId(self.joining.clone())
    }

    /// Whether this is the inbox `id` names.
    pub(crate) fn is(&self, id: &InboxId) -> bool {
        Arc::ptr_eq(&self.joining, &id.0)
    }

    /// Passes a client's frame on once the budget has room for it (all of
    /// the budget for a frame at least that large): until then the
    /// connection reads nothing more from its client.
    pub(crate) async fn send_frame(&self, conn: ConnId, frame: Bytes) -> Result<(), Closed> {
        let share = u32::try_from(frame.len())
            .unwrap_or(u32::MAX)
            .min(self.size);
        let budget = self
            .budget
            .clone()
            .acquire_many_owned(share)
            .await
            .map_err(|_| Closed)?;
        self.send(Cmd::Frame {
            conn,
            frame,
            budget,
        })
        .await
    }

    /// Passes any other input on.
    pub(crate) async fn send(&self, cmd: Cmd) -> Result<(), Closed> {
        self.tx.send(cmd).await.map_err(|_| Closed)
    }
}

/// Where a document stands, for the inspector: what the thread knows
/// without any IO but a file's size.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DocStatus {
    pub(crate) doc: String,
    /// Whether the document is open; a closed one is described from its
    /// files, without opening it.
    pub(crate) open: bool,
    /// The last position in the log, and the last one on disk.
    pub(crate) position: u64,
    pub(crate) committed: u64,
    /// Where the log starts: the position the snapshot covers.
    pub(crate) snapshot_position: u64,
    pub(crate) durable: bool,
    pub(crate) snapshot_bytes: u64,
    pub(crate) log_bytes: u64,
    /// Not known of a closed document.
    pub(crate) objects: Option<usize>,
    pub(crate) clients: Vec<ClientStatus>,
}

/// One connected client, for the inspector.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientStatus {
    pub(crate) hostname: String,
    pub(crate) addr: String,
    pub(crate) read_only: bool,
    /// Frames received from it.
    pub(crate) frames_in: u64,
    /// The last position queued for it.
    pub(crate) sent_upto: u64,
}

/// When the replica's next timer is due, as the document thread last armed
/// it; `None` when it has none.
pub(crate) type Deadline = Option<Instant>;

/// Sends the document a [`Cmd::Tick`] each time the deadline it armed
/// passes, until the document closes or the relay stops.
pub(crate) async fn run_timer(
    doc: mpsc::Sender<Cmd>,
    mut armed: watch::Receiver<Deadline>,
    stopping: CancellationToken,
) {
    loop {
        let at = *armed.borrow_and_update();
        let due = async {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = due => {}
            changed = armed.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            _ = stopping.cancelled() => return,
        }
        if let Err(mpsc::error::TrySendError::Closed(_)) = doc.try_send(Cmd::Tick) {
            return;
        }
        tokio::select! {
            changed = armed.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(TICK_AGAIN) => {}
            _ = stopping.cancelled() => return,
        }
    }
}

struct Client {
    hostname: String,
    addr: SocketAddr,
    out: Outbox,
    /// Frames queued by [`push`] and not yet handed to the writer
    /// ([`send`]): a round's fan-out goes to each connection in one
    /// channel send, not one per frame.
    batch: Vec<Bytes>,
    /// Tags this connection sent from (a node that rejoins gets a new one).
    tags: Vec<u32>,
    /// Frames received, and acknowledged.
    frames_in: u64,
    acked: u64,
    /// The last broadcast position queued for (or skipped for) the client.
    sent_upto: u64,
    /// The client only reads: a message that writes ends its connection.
    read_only: bool,
    /// The client's protocol version (a closing notice needs 2).
    protocol: u16,
    /// Why the relay refused what the client sent, once it did: nothing
    /// more of the client's is read, and the connection is closed after
    /// the batch, with the reason.
    refused: Option<String>,
}

enum Staged {
    Broadcast {
        position: u64,
        frame: Bytes,
        from: Option<ConnId>,
    },
    Direct {
        conn: ConnId,
        frame: Bytes,
    },
}

pub(crate) struct Doc {
    name: String,
    config: Arc<ServerConfig>,
    replica: Replica,
    me: PeerId,
    epoch: Instant,
    store: Store,
    log_id: u64,
    /// A batch ends once its frames hold this much of the budget.
    batch_bytes: usize,
    /// The last position assigned, and the last one durable.
    head: u64,
    committed: u64,
    /// Encoded broadcast frames after `tail_base`, for clients that resume.
    tail: VecDeque<(u64, Bytes)>,
    tail_base: u64,
    tail_bytes: usize,
    clients: HashMap<ConnId, Client>,
    tags: HashMap<u32, ConnId>,
    /// Tags of peers that left or were evicted: whatever they send is
    /// dropped here, so no replica (a joiner included, which does not
    /// learn who departed) ever applies it.
    departed: HashSet<u32>,
    /// For each member, the furthest position in its stream of a message
    /// the log holds (or a snapshot covers): a message of it at or below
    /// may be one it sends again (see `Doc::resent`).
    logged: HashMap<u32, u64>,
    relays: Vec<u32>,
    staged: Vec<Staged>,
    kicks: Vec<(ConnId, String)>,
    /// Clients whose input was refused, to be closed after the batch.
    refusals: Vec<ConnId>,
    /// Why the relay evicts a tag, and whether that is worth a warning,
    /// until the replica reports it gone.
    evicting: HashMap<u32, (String, bool)>,
    /// How many frames of its last connection the relay had applied when it
    /// evicted a tag, counted at the eviction (the acknowledgement it then
    /// sent may not arrive) or when that connection ended before: told to
    /// that incarnation when it says hello again, so that it counts lost
    /// only the rest. The newest [`APPLIED_KEPT`] only, oldest first;
    /// logged, so that they survive a restart, and carried into the log a
    /// compaction starts.
    applied_at_eviction: IndexMap<u32, u64>,
    /// Counts for `applied_at_eviction` once the batch is durable.
    applied_staged: Vec<(u32, u64)>,
    /// The tag whose message is being applied, to tell a goodbye from an
    /// eviction another peer sent.
    applying: Option<u32>,
    /// Whether the log is being replayed: the departures it holds were
    /// reported when they happened, not now.
    replaying: bool,
    /// A tick taken from the channel and not handled yet: how many inputs
    /// that were behind it in the channel are still to be handled first.
    tick_after: Option<usize>,
    /// Connections that broke, within their reconnection grace: when it
    /// ends, how long it is, and the tags they spoke for (those not taken
    /// over by a new connection meanwhile are evicted then).
    lingering: Vec<(Instant, Duration, ConnId, Vec<u32>)>,
    /// Since when the document has had no client, connected or within its
    /// grace.
    idle_since: Option<Instant>,
    /// Why the document stopped, once its store failed to take a write:
    /// nothing more is released, and its clients are refused with this
    /// until it is opened again from disk.
    failed: Option<String>,
}

/// How long a recovery took and what it found, for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recovery {
    /// Log records replayed.
    pub replayed: usize,
    /// Whether a snapshot was loaded.
    pub from_snapshot: bool,
    /// The last position recovered.
    pub position: u64,
}

impl Doc {
    /// Opens a document: loads its snapshot, replays its log, evicts the
    /// relay incarnations that ran before, and commits.
    pub(crate) fn open(
        name: &str,
        dir: Option<PathBuf>,
        config: Arc<ServerConfig>,
    ) -> std::io::Result<(Doc, Recovery)> {
        let (mut store, snapshot, records) = match &dir {
            Some(dir) => {
                let r = Store::open(dir)?;
                (r.store, r.snapshot, r.records)
            }
            None => (Store::ephemeral(), None, Vec::new()),
        };
        // The replica takes any message the log holds, whatever the frame
        // limit is now: the log holds what the relay accepted under the
        // limit it had then (a record's length is a `u32`), and what
        // clients send now is held to today's limit by the transport,
        // before it reaches the replica. What the replica sends is held to
        // what a frame carries, below.
        let core_config = Config::default()
            .relay()
            .max_message_size(u32::MAX as usize)
            .failure_detection(config.heartbeat, config.peer_timeout);
        let departed: HashSet<u32> = snapshot
            .as_ref()
            .map(|s| s.departed.iter().copied().collect())
            .unwrap_or_default();
        let mut relays = snapshot
            .as_ref()
            .map(|s| s.relays.clone())
            .unwrap_or_default();
        let base = snapshot.as_ref().map_or(0, |s| s.position);
        let invalid = |e: facsimile_core::ReceiveError| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("document {name}: the snapshot does not load: {e}"),
            )
        };
        // A fresh incarnation that no peer of the document uses.
        let (replica, me) = loop {
            let me = PeerId::new(RELAY_HOSTNAME, rand::random());
            if departed.contains(&me.incarnation()) || relays.contains(&me.incarnation()) {
                continue;
            }
            let mut replica = match &snapshot {
                Some(s) => {
                    match Replica::from_exported(me.clone(), core_config.clone(), &s.state) {
                        Ok(r) => r,
                        Err(facsimile_core::ReceiveError::TagCollision(_)) => continue,
                        Err(e) => return Err(invalid(e)),
                    }
                }
                None => Replica::new(me.clone(), core_config.clone()),
            };
            replica.limit_sent_messages(protocol::max_message(config.max_frame));
            break (replica, me);
        };
        let log_id = store.log_id();
        let batch_bytes = (config.document_budget() / 2).max(1);
        let mut doc = Doc {
            name: name.to_string(),
            config,
            replica,
            me,
            epoch: Instant::now(),
            store: Store::ephemeral(),
            log_id,
            batch_bytes,
            head: base,
            committed: base,
            tail: VecDeque::new(),
            tail_base: base,
            tail_bytes: 0,
            clients: HashMap::new(),
            tags: HashMap::new(),
            departed,
            logged: HashMap::new(),
            relays: Vec::new(),
            staged: Vec::new(),
            kicks: Vec::new(),
            refusals: Vec::new(),
            evicting: HashMap::new(),
            applied_at_eviction: IndexMap::new(),
            applied_staged: Vec::new(),
            lingering: Vec::new(),
            idle_since: Some(Instant::now()),
            applying: None,
            replaying: true,
            tick_after: None,
            failed: None,
        };
        doc.replica.record_changes(false);
        let mut recovery = Recovery {
            replayed: 0,
            from_snapshot: snapshot.is_some(),
            position: base,
        };
        // Replay. The new incarnation's own messages (its hello, answers
        // to what it replays) wait: the log's positions continue first.
        let mut own: Vec<Bytes> = Vec::new();
        for record in records {
            match record {
                Record::Relay(tag) => relays.push(tag),
                Record::Applied { tag, frames } => doc.keep_applied(tag, frames),
                Record::Message { position, bytes } => {
                    // Only messages the relay applied are logged, and it
                    // acknowledged them: one that does not apply now
                    // (a log written by a later version, a bug) cannot be
                    // left out without serving another document than the
                    // one its writers were told they wrote.
                    doc.replica.handle_message(&bytes).map_err(|e| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "document {name}: the message logged at position {position} \
                                 does not apply ({e}); the document is not opened without \
                                 it (restore its directory from a backup, or move it away)"
                            ),
                        )
                    })?;
                    if let Ok(env) = Envelope::peek(&bytes) {
                        doc.note_logged(&env);
                    }
                    doc.head = position;
                    doc.push_tail(position, &bytes);
                    recovery.replayed += 1;
                    doc.collect_own(&mut own);
                }
            }
        }
        doc.collect_own(&mut own);
        doc.replaying = false;
        recovery.position = doc.head;
        // What the snapshot covers was logged before it.
        for p in doc.replica.peers() {
            let seq = doc.logged.entry(p.peer.incarnation()).or_default();
            *seq = (*seq).max(p.applied);
        }
        // From here on the store takes this incarnation's records.
        std::mem::swap(&mut doc.store, &mut store);
        doc.store.append_relay(doc.me.incarnation());
        for bytes in own {
            doc.broadcast(bytes, None);
        }
        // Earlier relays of this log are gone; nobody should wait for them.
        relays.retain(|&r| r != doc.me.incarnation());
        for &r in &relays {
            doc.evict_tag(r, "an earlier run of the relay");
        }
        relays.push(doc.me.incarnation());
        let keep = relays.len().saturating_sub(16);
        doc.relays = relays.split_off(keep);
        doc.drain_replica();
        doc.commit_and_release();
        if let Some(why) = doc.failed.take() {
            return Err(std::io::Error::other(Unwritable(why)));
        }
        Ok((doc, recovery))
    }

    /// Runs the document until every sender of its channel is gone, or
    /// until it has been idle for `ServerConfig::close_idle` and `unlist`
    /// took it out of the relay's table; arms `timer` with the replica's
    /// next timer (or the end of the idle time) after each batch.
    pub(crate) fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        timer: watch::Sender<Deadline>,
        unlist: Option<Unlist>,
        forget: Forget,
    ) {
        self.arm(&timer);
        while let Some(cmd) = rx.blocking_recv() {
            self.batch(cmd, &mut rx, &timer);
            if self.failed.is_some() {
                forget();
                drop(timer);
                while let Some(cmd) = rx.blocking_recv() {
                    self.refuse_failed(cmd);
                }
                break;
            }
            if self.unlisted_when_idle(unlist.as_ref(), &rx) {
                break;
            }
        }
        tracing::debug!(doc = %self.name, "document closed");
    }

    /// [`Doc::run`] as a task of the runtime
    /// (`ServerConfig::documents_on_runtime`).
    pub(crate) async fn run_on_runtime(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        timer: watch::Sender<Deadline>,
        unlist: Option<Unlist>,
        forget: Forget,
    ) {
        self.arm(&timer);
        while let Some(cmd) = rx.recv().await {
            self.batch(cmd, &mut rx, &timer);
            if self.failed.is_some() {
                forget();
                drop(timer);
                while let Some(cmd) = rx.recv().await {
                    self.refuse_failed(cmd);
                }
                break;
            }
            if self.unlisted_when_idle(unlist.as_ref(), &rx) {
                break;
            }
        }
        tracing::debug!(doc = %self.name, "document closed");
    }

    /// What reaches a document whose store failed, after it left the
    /// relay's table (a client handed its inbox before, the inspector): a
    /// client is refused with the reason, and its next attempt opens the
    /// document again from disk. The document ends once nobody holds its
    /// channel (its timer stopped with it).
    fn refuse_failed(&mut self, cmd: Cmd) {
        let why = self.failed.clone().unwrap_or_default();
        match cmd {
            Cmd::Join { out, .. } => refuse_join(out, &why),
            Cmd::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Cmd::Frame { .. } | Cmd::Leave { .. } | Cmd::Tick => {}
        }
    }

    /// When an idle document may close: with its log on disk (without, it
    /// would be lost), `ServerConfig::close_idle` after its last client
    /// left.
    fn idle_until(&self) -> Option<Instant> {
        let after = self.config.close_idle?;
        let since = self.idle_since?;
        self.store.is_durable().then(|| later(since, after))
    }

    /// Whether the document's idle time is over and `unlist` took it out
    /// of the relay's table: then nothing more reaches it, and what is
    /// left in its channel (a tick, the inspector's question, the frames
    /// of a client that left) can be dropped.
    fn unlisted_when_idle(&self, unlist: Option<&Unlist>, rx: &mpsc::Receiver<Cmd>) -> bool {
        let (Some(unlist), Some(at)) = (unlist, self.idle_until()) else {
            return false;
        };
        if Instant::now() < at || !unlist(&|| rx.is_empty()) {
            return false;
        }
        tracing::info!(
            doc = %self.name,
            position = self.committed,
            "closed the document: no client for {:?}",
            self.config.close_idle.unwrap_or_default()
        );
        true
    }

    /// Handles `first` and what else is waiting, up to a batch, then
    /// commits, gives the batch's frames' budget back, and re-arms the
    /// timer.
    fn batch(&mut self, first: Cmd, rx: &mut mpsc::Receiver<Cmd>, timer: &watch::Sender<Deadline>) {
        if self.failed.is_some() {
            return self.refuse_failed(first);
        }
        // Held until the batch is durable: what the document holds of its
        // clients' frames, waiting or in the batch, is what the budget
        // allows.
        let mut taken: Vec<OwnedSemaphorePermit> = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(cmd) = next.take() {
            match cmd {
                // A tick judges who fell silent, so it waits for the inputs
                // queued behind it when it is taken: after a stall of this
                // thread, frames that arrived while the tick waited are
                // there, and they count as heard. Ticks the timer sends
                // meanwhile are among those inputs, and change nothing.
                Cmd::Tick if self.tick_after.is_none() => self.tick_after = Some(rx.len() + 1),
                Cmd::Tick => {}
                cmd => {
                    if let Cmd::Frame { budget, .. } = &cmd {
                        bytes += budget.num_permits();
                    }
                    self.handle(cmd, &mut taken);
                }
            }
            if let Some(behind) = self.tick_after.as_mut() {
                *behind -= 1;
                if *behind == 0 {
                    self.tick_after = None;
                    self.handle(Cmd::Tick, &mut taken);
                }
            }
            handled += 1;
            // Checked before taking another: one taken is one handled.
            if handled == MAX_BATCH || bytes >= self.batch_bytes {
                break;
            }
            next = rx.try_recv().ok();
        }
        self.commit_and_release();
        drop(taken);
        let idle = self.clients.is_empty() && self.lingering.is_empty();
        self.idle_since = match self.idle_since {
            Some(since) if idle => Some(since),
            _ if idle => Some(Instant::now()),
            _ => None,
        };
        self.arm(timer);
    }

    /// Tells the timer when the replica next needs the time, if that moved
    /// (a heartbeat or a reclamation pass a second away, a sync retry).
    fn arm(&self, timer: &watch::Sender<Deadline>) {
        let replica = self.replica.poll_timeout().map(|at| self.epoch + at);
        let graces = self.lingering.iter().map(|(until, ..)| *until);
        let at = replica
            .into_iter()
            .chain(graces)
            .chain(self.idle_until())
            .min();
        timer.send_if_modified(|armed| {
            let moved = *armed != at;
            *armed = at;
            moved
        });
    }

    /// Handles one input; a frame's share of the budget goes to `taken`.
    fn handle(&mut self, cmd: Cmd, taken: &mut Vec<OwnedSemaphorePermit>) {
        if self.failed.is_some() {
            return self.refuse_failed(cmd);
        }
        match cmd {
            Cmd::Join {
                conn,
                hello,
                addr,
                out,
            } => self.join(conn, hello, addr, out),
            Cmd::Frame {
                conn,
                frame,
                budget,
            } => {
                taken.push(budget);
                self.frame(conn, frame);
            }
            Cmd::Leave {
                conn,
                reason,
                refused,
            } => {
                if let Some(c) = self.clients.get(&conn) {
                    let heard = c.frames_in > 0 || refused;
                    tracing::info!(
                        doc = %self.name, peer = %c.hostname, addr = %c.addr, %reason, heard,
                        "client disconnected"
                    );
                    if heard && self.config.reconnect_grace.is_zero() {
                        self.drop_client(conn, &format!("disconnected ({reason})"));
                    } else {
                        self.linger(conn, heard);
                    }
                }
            }
            Cmd::Status(reply) => {
                let _ = reply.send(self.status());
                return;
            }
            Cmd::Tick => {
                self.end_graces();
                let now = self.epoch.elapsed();
                if self.replica.poll_timeout().is_some_and(|at| now >= at) {
                    let before = self.replica.members();
                    self.replica.handle_timeout(now);
                    self.cut_off_silent(before);
                }
            }
        }
        self.drain_replica();
    }

    /// Ends the connections of the peers that the replica just evicted for
    /// their silence (of those in `before`), once the batch is committed:
    /// a connection that went quiet without failing (a partition, a
    /// stalled link) may deliver the node's writes later, which the relay
    /// would drop as a departed peer's yet acknowledge. Cut off, the node
    /// reconnects, learns it was evicted and rejoins, counting its
    /// unacknowledged writes as lost.
    fn cut_off_silent(&mut self, before: Vec<PeerId>) {
        let after = self.replica.members();
        for peer in before.iter().filter(|p| !after.contains(p)) {
            if let Some(&conn) = self.tags.get(&peer.incarnation()) {
                self.kicks.push((
                    conn,
                    format!("evicted {peer}: silent for longer than the peer timeout"),
                ));
            }
        }
    }

    fn status(&self) -> DocStatus {
        let mut clients: Vec<ClientStatus> = self
            .clients
            .values()
            .map(|c| ClientStatus {
                hostname: c.hostname.clone(),
                addr: c.addr.to_string(),
                read_only: c.read_only,
                frames_in: c.frames_in,
                sent_upto: c.sent_upto,
            })
            .collect();
        clients.sort_by(|a, b| (&a.hostname, &a.addr).cmp(&(&b.hostname, &b.addr)));
        DocStatus {
            doc: self.name.clone(),
            open: true,
            position: self.head,
            committed: self.committed,
            snapshot_position: self.tail_base,
            durable: self.store.is_durable(),
            snapshot_bytes: self.store.snapshot_bytes(),
            log_bytes: self.store.log_bytes(),
            objects: Some(self.replica.object_count()),
            clients,
        }
    }

    fn join(&mut self, conn: ConnId, hello: ClientHello, addr: SocketAddr, out: Outbox) {
        let tag = hello.incarnation;
        if tag == self.me.incarnation() {
            let reason = "the node's incarnation collides with the relay's; reconnect";
            return refuse_join(out, reason);
        }
        // A new node (no resume point) must bring an incarnation the
        // document has never seen; told it is evicted, it picks another.
        // Otherwise it would be taken for the peer of that tag: refused as
        // departed, or taking over a live node's connection.
        let fresh_but_known = hello.resume.is_none()
            && (self.tags.contains_key(&tag)
                || self.relays.contains(&tag)
                || self.replica.knows_tag(tag));
        if fresh_but_known {
            tracing::info!(doc = %self.name, peer = %format!("{}#{tag:08x}", hello.hostname), %addr,
                "a new node brought an incarnation the document knows; it picks another");
        }
        let evicted = self.departed.contains(&tag) || fresh_but_known;
        let member = !fresh_but_known && self.member(tag).is_some();
        let resume = hello.resume.filter(|r| {
            r.log == self.log_id && r.position >= self.tail_base && r.position <= self.committed
        });
        // Replaying more than half the client's queue would cut it off:
        // a sync is cheaper then.
        let replay: Vec<Bytes> = match resume {
            Some(r) if !evicted => {
                let from = self.tail.partition_point(|(p, _)| *p <= r.position);
                let to = self.tail.partition_point(|(p, _)| *p <= self.committed);
                let bytes: usize = self.tail.range(from..to).map(|(_, f)| f.len()).sum();
                if bytes > self.config.client_queue / 2 {
                    Vec::new()
                } else if let Some(frames) =
                    pack_replay(self.tail.range(from..to), self.config.max_frame)
                {
                    frames
                } else {
                    tracing::info!(doc = %self.name, peer = %hello.hostname,
                        "the catch-up holds a message logged under a larger frame limit; the node syncs instead");
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        let resumed =
            !evicted && resume.is_some_and(|r| !replay.is_empty() || r.position == self.committed);
        if let Some(&old) = self.tags.get(&tag).filter(|_| !fresh_but_known) {
            // The same node again, while its old connection looks alive
            // (a half-open socket): the new connection takes over.
            if let Some(c) = self.clients.remove(&old) {
                tracing::info!(doc = %self.name, peer = %c.hostname, old = %c.addr, new = %addr,
                    "node reconnected; dropping its previous connection");
                c.out.cancel.cancel();
                for t in c.tags {
                    if t != tag && self.tags.get(&t) == Some(&old) {
                        self.tags.remove(&t);
                        self.evict_tag(t, "its node reconnected as another incarnation");
                    }
                }
            }
        }
        if !evicted {
            self.tags.insert(tag, conn);
            // This connection counts its frames from zero.
            if self.applied_at_eviction.contains_key(&tag)
                || self.applied_staged.iter().any(|&(t, _)| t == tag)
            {
                // Durable before the welcome goes out: the node counts
                // this connection's frames from zero once it hears it, and
                // after a crash the old count would take frames of this
                // connection the log never got for applied.
                self.store.append_applied(tag, None);
                if !self.sync_log() {
                    let why = self.failed.clone().unwrap_or_default();
                    return refuse_join(out, &why);
                }
                self.applied_staged.retain(|&(t, _)| t != tag);
                self.keep_applied(tag, None);
            }
        }
        tracing::info!(
            doc = %self.name, peer = %format!("{}#{:08x}", hello.hostname, tag), %addr,
            resumed, evicted, read_only = hello.read_only, replay = replay.len(), "client joined"
        );
        let mut client = Client {
            hostname: hello.hostname,
            addr,
            out,
            batch: Vec::new(),
            tags: if evicted { Vec::new() } else { vec![tag] },
            frames_in: 0,
            acked: 0,
            sent_upto: self.committed,
            read_only: hello.read_only,
            protocol: hello.protocol,
            refused: None,
        };
        let welcome = Down::Hello(ServerHello::Welcome {
            log: self.log_id,
            position: if resumed {
                resume.map_or(self.committed, |r| r.position)
            } else {
                self.committed
            },
            relay: self.me.incarnation(),
            resumed,
            member,
            evicted,
            max_frame: Some(self.config.max_frame as u64),
            taken: if evicted && !fresh_but_known {
                self.applied_at_eviction.get(&tag).copied()
            } else {
                None
            },
        })
        .encode();
        let mut ok = push(&self.config, &mut client, welcome).is_ok();
        for frame in replay {
            ok = ok && push(&self.config, &mut client, frame).is_ok();
        }
        ok = ok && send(&mut client).is_ok();
        self.clients.insert(conn, client);
        if !ok {
            self.kicks
                .push((conn, "could not queue the catch-up messages".into()));
        }
    }

    fn frame(&mut self, conn: ConnId, frame: Bytes) {
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        if client.refused.is_some() {
            return;
        }
        client.frames_in += 1;
        let read_only = client.read_only;
        let (msg, up_to) = match Up::decode(frame) {
            Ok(Up::Broadcast(m)) => (m, None),
            Ok(Up::To(t, m)) => (m, Some(t)),
            Err(e) => return self.refuse(conn, e.to_string()),
        };
        if read_only {
            // Checked before anything else: a refused message changes
            // nothing, not even which tags the connection speaks for.
            match Envelope::writes(&msg) {
                Ok(None) => {}
                Ok(Some(what)) => {
                    return self.refuse(
                        conn,
                        format!("the connection is read-only, and it sent {what}"),
                    );
                }
                Err(e) => return self.refuse(conn, format!("not a facsimile message: {e}")),
            }
        }
        let env = match Envelope::peek(&msg) {
            Ok(env) => env,
            Err(e) => return self.refuse(conn, format!("not a facsimile message: {e}")),
        };
        // A departed joiner's sync still goes through, unless the relay is
        // cutting its connection anyway (the welcome then tells it): the
        // state it fetches is how it learns of its eviction, and dropped,
        // its sync would wait for ever on a connection nothing ends.
        let syncing = env.syncs && !self.kicks.iter().any(|(c, _)| *c == conn);
        if self.departed.contains(&env.from) && !syncing {
            tracing::debug!(doc = %self.name, from = %format!("{:08x}", env.from), "dropped a message of a departed peer");
            if self.kicks.iter().any(|(c, _)| *c == conn) {
                // Evicted in this batch, and cut off after it: what it
                // sends now is not applied, so not acknowledged either.
                if let Some(c) = self.clients.get_mut(&conn) {
                    c.frames_in -= 1;
                }
            }
            return;
        }
        match self.tags.get(&env.from) {
            Some(&c) if c != conn => {
                return self.refuse(
                    conn,
                    format!(
                        "sent as peer {:08x}, which another connection speaks for",
                        env.from
                    ),
                );
            }
            Some(_) => {}
            None if env.from == self.me.incarnation() => {
                return self.refuse(conn, "sent as the relay itself".into());
            }
            None => {
                self.tags.insert(env.from, conn);
                if let Some(c) = self.clients.get_mut(&conn) {
                    c.tags.push(env.from);
                }
            }
        }
        // A message the relay applies must fit a frame to the others with
        // its position: the transport held the client's frame to the
        // limit, not the frame it becomes. (The replica takes larger ones:
        // its log may hold them from a larger limit.)
        let max = protocol::max_message(self.config.max_frame);
        if msg.len() > max && up_to.or(env.to).is_none_or(|t| t == self.me.incarnation()) {
            let e = facsimile_core::ReceiveError::TooLarge {
                size: msg.len(),
                max,
            };
            return self.refuse(conn, format!("refused message: {e}"));
        }
        self.applying = Some(env.from);
        match up_to.or(env.to) {
            Some(t) if t == self.me.incarnation() => {
                if let Err(e) = self.replica.handle_message(&msg) {
                    self.refuse(conn, format!("refused message: {e}"));
                }
            }
            Some(t) => {
                // Not logged: directed messages are answers and requests
                // between two live peers, repeated by them when lost.
                if let Some(&to) = self.tags.get(&t) {
                    self.staged.push(Staged::Direct {
                        conn: to,
                        frame: Down::Direct(msg).encode(),
                    });
                }
            }
            None => {
                let resent = self.resent(&env);
                let applied = self.replica.handle_message(&msg);
                // An eviction it caused is acknowledged to the evicted
                // before the message that carries it.
                self.drain_events();
                match applied {
                    // Nothing of it was new (a packed run may go on past
                    // what was applied): sent again by a node that did
                    // not hear it acknowledged, after its connection
                    // broke or the relay restarted. The log has it, so it
                    // is acknowledged, not logged and sent to everybody
                    // again.
                    Ok(()) if resent.is_some() && self.applied_from(env.from) == resent => {}
                    Ok(()) => {
                        // (A departed joiner's sync request is not noted:
                        // its tag is forgotten.)
                        if !self.departed.contains(&env.from) {
                            self.note_logged(&env);
                        }
                        self.broadcast(msg, Some(conn));
                    }
                    Err(e) => self.refuse(conn, format!("refused message: {e}")),
                }
            }
        }
        self.drain_events();
        self.applying = None;
    }

    /// How much of the stream of `env`'s sender the relay's replica has
    /// applied, when `env` may be a message the log holds already: its
    /// position in that stream is at or below both what the log holds of
    /// it and what the replica applied. Such a message is sent again by a
    /// node that did not hear it acknowledged; whether it brings anything
    /// new, only applying it tells (a packed run may go on past).
    fn resent(&self, env: &Envelope) -> Option<u64> {
        let seq = env.seq?;
        if self
            .logged
            .get(&env.from)
            .is_none_or(|&logged| seq > logged)
        {
            return None;
        }
        self.applied_from(env.from)
            .filter(|&applied| seq <= applied)
    }

    /// How many messages of the member `tag`'s stream the relay's replica
    /// has applied.
    fn applied_from(&self, tag: u32) -> Option<u64> {
        self.replica
            .peers()
            .into_iter()
            .find(|p| p.peer.incarnation() == tag)
            .map(|p| p.applied)
    }

    /// Notes that the log holds a message of `env`'s sender's stream.
    fn note_logged(&mut self, env: &Envelope) {
        if let Some(seq) = env.seq {
            let logged = self.logged.entry(env.from).or_default();
            *logged = (*logged).max(seq);
        }
    }

    /// Assigns the next position to a broadcast message, logs it and stages
    /// it for everybody but its sender.
    fn broadcast(&mut self, msg: Bytes, from: Option<ConnId>) {
        self.head += 1;
        let position = self.head;
        self.store.append_message(position, &msg);
        let frame = self.push_tail(position, &msg);
        self.staged.push(Staged::Broadcast {
            position,
            frame,
            from,
        });
    }

    fn push_tail(&mut self, position: u64, msg: &Bytes) -> Bytes {
        let frame = Down::Message {
            position,
            bytes: msg.clone(),
        }
        .encode();
        self.tail_bytes += frame.len();
        self.tail.push_back((position, frame.clone()));
        frame
    }

    /// Collects the replica's broadcast messages during recovery (directed
    /// ones answer peers of the past and are dropped).
    fn collect_own(&mut self, own: &mut Vec<Bytes>) {
        while let Some(t) = self.replica.poll_transmit() {
            if t.to.is_none() {
                own.push(Bytes::from_owner(t.bytes));
            }
        }
        self.drain_events();
    }

    /// Notes departures, then stages the replica's messages.
    fn drain_replica(&mut self) {
        // Departures first: an eviction's acknowledgement to the evicted
        // goes before the eviction itself.
        self.drain_events();
        while let Some(t) = self.replica.poll_transmit() {
            let bytes = Bytes::from_owner(t.bytes);
            match t.to {
                None => self.broadcast(bytes, None),
                Some(tag) => {
                    if let Some(&conn) = self.tags.get(&tag) {
                        self.staged.push(Staged::Direct {
                            conn,
                            frame: Down::Direct(bytes).encode(),
                        });
                    }
                }
            }
        }
        self.drain_events();
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.replica.poll_event() {
            match e {
                Event::PeerLeft(p) => {
                    let tag = p.incarnation();
                    self.departed.insert(tag);
                    self.logged.remove(&tag);
                    self.ack_before_eviction(tag);
                    if self.replaying {
                        tracing::debug!(doc = %self.name, peer = %p, "departed before this run of the relay (replayed from the log)");
                        continue;
                    }
                    let (why, alarming) = match (self.evicting.remove(&tag), self.applying) {
                        (Some(why), _) => why,
                        (None, Some(from)) if from == tag => ("goodbye".to_string(), false),
                        (None, Some(from)) => (format!("evicted by {}", self.who(from)), true),
                        // Outside a message or a departure, only the
                        // replica's failure detection evicts.
                        (None, None) => (
                            format!(
                                "missed heartbeats: silent for more than {:?}",
                                self.config.peer_timeout
                            ),
                            true,
                        ),
                    };
                    if alarming {
                        tracing::warn!(doc = %self.name, peer = %p, %why, "peer evicted");
                    } else if why == "goodbye" {
                        tracing::info!(doc = %self.name, peer = %p, %why, "peer left");
                    } else {
                        tracing::info!(doc = %self.name, peer = %p, %why, "peer evicted");
                    }
                }
                Event::PeerJoined(p) => tracing::debug!(doc = %self.name, peer = %p, "peer joined"),
                Event::Evicted => tracing::error!(
                    doc = %self.name,
                    "a client evicted the relay; it keeps serving, but nodes refuse its messages"
                ),
                Event::NeedsSync => {
                    tracing::warn!(doc = %self.name, "the relay lost track of a peer's stream")
                }
                _ => {}
            }
        }
    }

    /// A connected node is evicted (it was silent too long): everything of
    /// it applied so far is acknowledged before the eviction reaches it, so
    /// that whatever it has not seen acknowledged by then, it knows lost
    /// (its later frames are dropped here, and acknowledged too).
    fn ack_before_eviction(&mut self, tag: u32) {
        let Some(&conn) = self.tags.get(&tag) else {
            return;
        };
        if let Some(c) = self.clients.get_mut(&conn) {
            if c.refused.is_some() {
                return;
            }
            if c.frames_in > c.acked {
                c.acked = c.frames_in;
                self.staged.push(Staged::Direct {
                    conn,
                    frame: Down::Ack(c.frames_in).encode(),
                });
            }
            let frames = c.frames_in;
            self.stage_applied(tag, frames);
        }
    }

    /// A connection ends: for each member it spoke for, how many of its
    /// frames were applied, for the welcome if that member is evicted
    /// before it is back. A tag evicted already keeps the count of its
    /// eviction: frames after it were dropped, not applied.
    fn note_applied(&mut self, conn: ConnId, c: &Client) {
        if c.refused.is_some() {
            return;
        }
        for &tag in &c.tags {
            if self.tags.get(&tag) == Some(&conn) && !self.departed.contains(&tag) {
                self.stage_applied(tag, c.frames_in);
            }
        }
    }

    /// Logs a count of applied frames, to be told once durable (as the
    /// acknowledgement is sent).
    fn stage_applied(&mut self, tag: u32, frames: u64) {
        self.store.append_applied(tag, Some(frames));
        self.applied_staged.push((tag, frames));
    }

    /// Keeps what `ack_before_eviction` and `note_applied` staged, now that
    /// it is durable.
    fn remember_applied(&mut self) {
        for (tag, n) in std::mem::take(&mut self.applied_staged) {
            self.keep_applied(tag, Some(n));
        }
    }

    /// Keeps (or with `None` forgets) a count of applied frames, the
    /// newest [`APPLIED_KEPT`] only.
    fn keep_applied(&mut self, tag: u32, frames: Option<u64>) {
        let kept = &mut self.applied_at_eviction;
        match frames {
            None => {
                kept.shift_remove(&tag);
            }
            Some(n) => {
                if kept.insert(tag, n).is_none() && kept.len() > APPLIED_KEPT {
                    kept.shift_remove_index(0);
                }
            }
        }
    }

    /// A peer's name for the log: its hostname where the replica knows it.
    fn who(&self, tag: u32) -> String {
        match self.member(tag) {
            Some(p) => p.to_string(),
            None => format!("#{tag:08x}"),
        }
    }

    fn member(&self, tag: u32) -> Option<PeerId> {
        self.replica
            .members()
            .into_iter()
            .find(|p| p.incarnation() == tag)
    }

    /// Declares a peer gone (`why`, for the log): nobody waits for it, its
    /// locks pass on, and whatever it still sends is dropped.
    fn evict_tag(&mut self, tag: u32, why: &str) {
        self.departed.insert(tag);
        if let Some(peer) = self.member(tag) {
            let alarming = why.starts_with("cut off");
            self.evicting.insert(tag, (why.to_string(), alarming));
            self.replica.evict(&peer);
            self.drain_events();
        }
    }

    /// Refuses what a client sent: nothing more of it is read, and after
    /// the batch (whose acknowledgements it still gets) it is told why (a
    /// closing notice, from protocol 2 on) and its connection closes once
    /// what was queued for it is written.
    fn refuse(&mut self, conn: ConnId, reason: String) {
        if let Some(c) = self.clients.get_mut(&conn) {
            if c.refused.is_none() {
                // The refused frame (the last one counted) is not
                // acknowledged: it was not applied.
                c.frames_in = c.frames_in.saturating_sub(1);
                tracing::warn!(doc = %self.name, peer = %c.hostname, addr = %c.addr, %reason, "refused a client's input; disconnecting it");
                c.refused = Some(reason);
                self.refusals.push(conn);
            }
        }
    }

    /// Closes the connections of refused clients, after their last
    /// acknowledgements and with the reason.
    fn close_refused(&mut self) {
        for conn in std::mem::take(&mut self.refusals) {
            let Some(mut c) = self.clients.remove(&conn) else {
                continue;
            };
            let reason = c.refused.take().unwrap_or_default();
            if c.protocol >= 2 {
                // Closing anyway: a full queue needs no notice.
                let _ = push(&self.config, &mut c, Down::Closing(reason.clone()).encode());
            }
            let _ = send(&mut c);
            let why = format!("refused: {reason}");
            let _ = c.out.closing.set(reason);
            // Dropping the client's queue, not cancelling it, lets the
            // writer send what is queued before the connection closes.
            c.out.ending.cancel();
            self.forget_tags(conn, c.tags, &why);
        }
    }

    /// Cuts a client off at once (it is too slow to be told anything).
    fn kick(&mut self, conn: ConnId, reason: String) {
        if let Some(c) = self.clients.get(&conn) {
            tracing::warn!(doc = %self.name, peer = %c.hostname, addr = %c.addr, %reason, "disconnecting client");
            let why = format!("cut off: {reason}");
            let _ = c.out.closing.set(reason);
            c.out.cancel.cancel();
            self.drop_client(conn, &why);
        }
    }

    fn drop_client(&mut self, conn: ConnId, why: &str) {
        let Some(c) = self.clients.remove(&conn) else {
            return;
        };
        self.note_applied(conn, &c);
        c.out.cancel.cancel();
        self.forget_tags(conn, c.tags, why);
    }

    /// Forgets a broken connection but keeps the tags it spoke for
    /// members until its reconnection grace ends: a connection that says
    /// hello as one of them meanwhile takes it over.
    ///
    /// A connection that ended before it carried a frame (`heard` false)
    /// ended before its node was seen to hear the welcome: a client that
    /// gave up waiting for it (the relay was recovering the document) has
    /// not left, and comes back. Its tags stay for the peer timeout (or the
    /// grace, if longer), as a silent member's would; nothing of it was
    /// applied, so no count of applied frames is taken from it.
    fn linger(&mut self, conn: ConnId, heard: bool) {
        let Some(c) = self.clients.remove(&conn) else {
            return;
        };
        let mut grace = self.config.reconnect_grace;
        match heard {
            true => self.note_applied(conn, &c),
            false => grace = grace.max(self.config.peer_timeout),
        }
        c.out.cancel.cancel();
        self.lingering
            .push((later(Instant::now(), grace), grace, conn, c.tags));
    }

    /// Evicts the tags of broken connections whose grace ended and which
    /// no new connection took over.
    fn end_graces(&mut self) {
        let now = Instant::now();
        let (ended, lingering) = std::mem::take(&mut self.lingering)
            .into_iter()
            .partition(|(until, ..)| *until <= now);
        self.lingering = lingering;
        for (_, grace, conn, tags) in ended {
            self.forget_tags(
                conn,
                tags,
                &format!("disconnected, and did not come back within {grace:?}"),
            );
        }
    }

    /// Evicts the tags a departed connection spoke for.
    fn forget_tags(&mut self, conn: ConnId, tags: Vec<u32>, why: &str) {
        for tag in tags {
            if self.tags.get(&tag) == Some(&conn) {
                self.tags.remove(&tag);
                self.evict_tag(tag, why);
            }
        }
    }

    /// Makes what the log was given so far durable; `false`, with the
    /// document failed, when it could not.
    fn sync_log(&mut self) -> bool {
        if self.failed.is_some() {
            return false;
        }
        match self.store.commit() {
            Ok(()) => true,
            Err(e) => {
                self.fail("log", &e);
                false
            }
        }
    }

    /// Stops the document after its store failed to take a write: what the
    /// failed write held may or may not be on disk (after a failed `fsync`
    /// the process cannot know), so nothing of it, nor anything after it,
    /// is released or acknowledged. Its clients are disconnected with the
    /// reason but not evicted (as when the relay stops: they resume, and
    /// send again what was not acknowledged), and the document leaves the
    /// relay's table; the next client opens it again from disk, whose
    /// recovery makes the log what it is, and is refused with the reason
    /// while writes still fail.
    fn fail(&mut self, file: &str, e: &std::io::Error) {
        let why = format!(
            "the relay cannot write document {:?} to its disk ({e}); it is closed until its \
             {file} can be written, retry later",
            self.name
        );
        tracing::error!(doc = %self.name, error = %e, "cannot write the document's {file}; closing the document (other documents are served)");
        self.staged.clear();
        self.kicks.clear();
        self.refusals.clear();
        self.applied_staged.clear();
        self.lingering.clear();
        for (_, c) in self.clients.drain() {
            let _ = c.out.closing.set(why.clone());
            c.out.cancel.cancel();
        }
        self.failed = Some(why);
    }

    /// Makes the batch durable, then sends what it produced.
    fn commit_and_release(&mut self) {
        loop {
            if !self.sync_log() {
                return;
            }
            self.committed = self.head;
            self.remember_applied();
            for s in std::mem::take(&mut self.staged) {
                match s {
                    Staged::Broadcast {
                        position,
                        frame,
                        from,
                    } => {
                        for (&id, c) in self.clients.iter_mut() {
                            if c.sent_upto >= position {
                                continue;
                            }
                            c.sent_upto = position;
                            if Some(id) != from {
                                if let Err(reason) = push(&self.config, c, frame.clone()) {
                                    self.kicks.push((id, reason));
                                }
                            }
                        }
                    }
                    Staged::Direct { conn, frame } => {
                        if let Some(c) = self.clients.get_mut(&conn) {
                            if let Err(reason) = push(&self.config, c, frame) {
                                self.kicks.push((conn, reason));
                            }
                        }
                    }
                }
            }
            for (&id, c) in self.clients.iter_mut() {
                if c.frames_in > c.acked {
                    c.acked = c.frames_in;
                    if let Err(reason) = push(&self.config, c, Down::Ack(c.frames_in).encode()) {
                        self.kicks.push((id, reason));
                    }
                }
                if let Err(reason) = send(c) {
                    self.kicks.push((id, reason));
                }
            }
            for (conn, reason) in std::mem::take(&mut self.kicks) {
                self.kick(conn, reason);
            }
            self.close_refused();
            self.drain_replica();
            if self.staged.is_empty() && !self.store.is_dirty() {
                break;
            }
        }
        self.maybe_compact();
    }

    /// Rewrites the snapshot and empties the log once it has grown past the
    /// limit (without a disk, only the catch-up tail is trimmed).
    fn maybe_compact(&mut self) {
        let limit = self.config.compact_bytes;
        let grown = if self.store.is_durable() {
            self.store.log_growth() > limit
        } else {
            self.tail_bytes as u64 > limit
        };
        if !grown {
            return;
        }
        let started = Instant::now();
        let snapshot = Snapshot {
            log_id: self.log_id,
            position: self.committed,
            relays: self.relays.clone(),
            departed: self.departed.iter().copied().collect(),
            state: self.replica.export_state(),
        };
        let applied = self.applied_at_eviction.iter().map(|(&t, &n)| (t, n));
        if let Err(e) = self.store.compact(&snapshot, applied) {
            // The store may be left appending to a log that was replaced;
            // the files on disk are whole either way (the old snapshot and
            // log, or the new snapshot and either log).
            return self.fail("snapshot", &e);
        }
        self.tail.clear();
        self.tail_bytes = 0;
        self.tail_base = self.committed;
        tracing::info!(
            doc = %self.name,
            position = self.committed,
            bytes = snapshot.state.len(),
            took = ?started.elapsed(),
            "compacted the log into a snapshot"
        );
        // Exporting may have queued messages (none are expected).
        self.drain_replica();
        self.commit_and_release();
    }
}

/// A packed run is at most this large (or what a frame of the relay
/// carries, if less): well under any receiver's message limit, and a
/// resuming client applies it in one go.
const MAX_RUN: usize = 1 << 20;

/// The catch-up frames for a resuming client: what one sender sent one
/// message after another is packed into one message
/// ([`Envelope::pack_run`]), at the position of the last it covers, each
/// frame at most `max_frame` bytes (the relay's limit, which its clients
/// take as theirs). `None` when a message of the tail does not fit such a
/// frame on its own (logged under a larger limit): the client must sync.
fn pack_replay<'a>(
    tail: impl Iterator<Item = &'a (u64, Bytes)>,
    max_frame: usize,
) -> Option<Vec<Bytes>> {
    // A run smaller than its messages, which fit this, makes a frame of
    // at most `max_frame` with its position.
    let max_run = MAX_RUN.min(protocol::max_message(max_frame));
    let frames: Vec<(u64, &Bytes, Bytes)> = tail
        .map(|(position, frame)| {
            let msg = match Down::decode(frame.clone()) {
                Ok(Down::Message { bytes, .. }) => bytes,
                // The tail holds only message frames.
                _ => Bytes::new(),
            };
            (*position, frame, msg)
        })
        .collect();
    let messages: Vec<&[u8]> = frames.iter().map(|(_, _, m)| &m[..]).collect();
    let mut out = Vec::with_capacity(frames.len());
    let mut i = 0;
    while i < frames.len() {
        let (n, packed) = Envelope::pack_run(&messages[i..], max_run);
        let n = n.max(1);
        match packed {
            Some(bytes) => out.push(
                Down::Message {
                    position: frames[i + n - 1].0,
                    bytes: bytes.into(),
                }
                .encode(),
            ),
            None => out.extend(frames[i..i + n].iter().map(|(_, f, _)| (*f).clone())),
        }
        i += n;
    }
    out.iter().all(|f| f.len() <= max_frame).then_some(out)
}

/// Refuses a client at its hello: the refusal is queued, and dropping the
/// queue after it ends the connection.
fn refuse_join(out: Outbox, reason: &str) {
    let frame = Down::Hello(ServerHello::Refused {
        reason: reason.into(),
    })
    .encode();
    let _ = out.closing.set(reason.into());
    let _ = out.tx.try_send(vec![frame]);
    out.ending.cancel();
}

/// Queues a frame for a client; an error when its budget is exhausted.
fn push(config: &ServerConfig, c: &mut Client, frame: Bytes) -> Result<(), String> {
    let len = frame.len();
    let before = c.out.queued.fetch_add(len, Ordering::AcqRel);
    let queued = before + len;
    // One frame always fits (a joiner's document may exceed the budget on
    // its own), so the bound is the budget plus one frame.
    if before > 0 && queued > config.client_queue {
        return Err(format!(
            "too slow: {queued} bytes queued for it (limit {}, --max-queue)",
            config.client_queue
        ));
    }
    c.batch.push(frame);
    Ok(())
}

/// Hands the frames [`push`] queued to the connection's writer.
fn send(c: &mut Client) -> Result<(), String> {
    if c.batch.is_empty() {
        return Ok(());
    }
    match c.out.tx.try_send(std::mem::take(&mut c.batch)) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_)) => Err(format!(
            "too slow: {QUEUE_ROUNDS} rounds of frames queued for it"
        )),
        // The connection is ending; its departure is on the way.
        Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use facsimile::net::protocol::Resume;
    use facsimile_core::{Config, Input, PeerId, Replica};

    use super::*;

    /// A node back as a member on a new connection counts that
    /// connection's frames from zero once it hears its welcome: the record
    /// that forgets its older count is on disk before the welcome is
    /// queued, so that no crash can leave the older count to be told later.
    #[test]
    fn a_count_is_forgotten_on_disk_before_the_welcome_goes_out() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(ServerConfig::default());
        let (mut doc, _) = Doc::open("d", Some(dir.path().to_path_buf()), config).unwrap();
        let tag = 0x5eed;
        doc.stage_applied(tag, 7);
        doc.commit_and_release();
        assert_eq!(doc.applied_at_eviction.get(&tag), Some(&7));

        let resume = Resume {
            log: doc.log_id,
            position: doc.committed,
        };
        let mut rx = rejoin_as(&mut doc, 1, tag, Some(resume));
        assert!(rx.try_recv().is_ok(), "the welcome is queued");
        let on_disk = Store::open(dir.path()).unwrap().records;
        assert_eq!(
            on_disk.last(),
            Some(&Record::Applied { tag, frames: None }),
            "{on_disk:?}"
        );
        assert_eq!(doc.applied_at_eviction.get(&tag), None);
    }

    /// A client of a document under test: joins `doc` on connection
    /// `conn` as a new node of incarnation `tag`; returns what the relay
    /// queues for it.
    fn join_as(doc: &mut Doc, conn: ConnId, tag: u32) -> mpsc::Receiver<Vec<Bytes>> {
        rejoin_as(doc, conn, tag, None)
    }

    /// As [`join_as`], a node that says where it stopped reading.
    fn rejoin_as(
        doc: &mut Doc,
        conn: ConnId,
        tag: u32,
        resume: Option<Resume>,
    ) -> mpsc::Receiver<Vec<Bytes>> {
        let (tx, rx) = mpsc::channel(QUEUE_ROUNDS);
        let out = Outbox {
            tx,
            queued: Arc::default(),
            cancel: CancellationToken::new(),
            closing: Arc::default(),
            ending: CancellationToken::new(),
        };
        let hello = ClientHello {
            protocol: protocol::PROTOCOL_VERSION,
            document: "d".into(),
            token: String::new(),
            hostname: format!("node-{tag}"),
            incarnation: tag,
            resume,
            read_only: false,
        };
        doc.join(conn, hello, "127.0.0.1:1".parse().unwrap(), out);
        rx
    }

    /// A node's hello and `n` writes after it, as the frames it sends.
    fn writes(tag: u32, n: i64) -> Vec<Bytes> {
        let mut node = Replica::new(
            PeerId::new(format!("node-{tag}").as_str(), tag),
            Config::default(),
        );
        let root = node.set_root(Input::Map(vec![])).unwrap().expect("a map");
        for i in 0..n {
            node.map_set(root, "k", i.into()).unwrap();
        }
        std::iter::from_fn(|| node.poll_transmit())
            .map(|t| Up::Broadcast(Bytes::from_owner(t.bytes)).encode())
            .collect()
    }

    /// What a client was sent: the broadcast messages, and the last
    /// acknowledgement.
    fn received(rx: &mut mpsc::Receiver<Vec<Bytes>>) -> (Vec<(u64, Bytes)>, u64) {
        let (mut messages, mut acked) = (Vec::new(), 0);
        while let Ok(round) = rx.try_recv() {
            for frame in round {
                match Down::decode(frame).unwrap() {
                    Down::Message { position, bytes } => messages.push((position, bytes)),
                    Down::Ack(n) => acked = n,
                    _ => {}
                }
            }
        }
        (messages, acked)
    }

    /// A document holds at most its budget of its clients' frames,
    /// waiting for it or in its batch: a frame that does not fit is not
    /// taken (its connection reads nothing more) until the document has
    /// committed what it holds; then every frame arrives, in order, and
    /// is acknowledged. A frame larger than the budget takes all of it.
    #[test]
    fn frames_wait_for_room_in_the_documents_budget() {
        use futures_util::FutureExt;

        let frames = writes(0xa, 40);
        let three: usize = frames[..3].iter().map(Bytes::len).sum();
        for budget in [three, 1] {
            let config = Arc::new(ServerConfig::default().document_queue(budget));
            let (mut doc, _) = Doc::open("d", None, config).unwrap();
            let (inbox, mut rx) = Inbox::new(budget);
            let (timer, _armed) = watch::channel(None);
            let mut writer = join_as(&mut doc, 1, 0xa);
            let mut reader = join_as(&mut doc, 2, 0xb);
            let mut sent = 0;
            let mut held_at_first = None;
            while sent < frames.len() {
                // The document is held: nothing runs it meanwhile.
                let before = sent;
                while sent < frames.len()
                    && inbox
                        .send_frame(1, frames[sent].clone())
                        .now_or_never()
                        .is_some()
                {
                    sent += 1;
                }
                held_at_first.get_or_insert(sent);
                if sent < frames.len() {
                    let share = frames[sent].len().min(budget);
                    assert!(
                        share > inbox.budget.available_permits(),
                        "budget {budget}: frame {sent} waits only while it does not fit"
                    );
                }
                // The document takes a batch and commits it.
                let first = rx.try_recv().expect("a frame waits only behind others");
                doc.batch(first, &mut rx, &timer);
                if before == 0 && budget > 1 {
                    assert!(!rx.is_empty(), "a batch takes at most half the budget");
                }
            }
            while let Ok(first) = rx.try_recv() {
                doc.batch(first, &mut rx, &timer);
            }
            let expected = if budget == 1 { 1 } else { 3 };
            assert_eq!(held_at_first, Some(expected), "budget {budget}");
            assert_eq!(inbox.budget.available_permits(), budget, "all given back");
            assert_eq!(
                received(&mut writer).1,
                frames.len() as u64,
                "budget {budget}"
            );
            let theirs: Vec<Bytes> = received(&mut reader)
                .0
                .into_iter()
                .map(|(_, m)| m)
                .filter(|m| Envelope::peek(m).unwrap().from == 0xa)
                .collect();
            let sent: Vec<Bytes> = frames
                .iter()
                .map(|f| match Up::decode(f.clone()).unwrap() {
                    Up::Broadcast(m) => m,
                    Up::To(..) => unreachable!("broadcasts only"),
                })
                .collect();
            assert_eq!(theirs, sent, "budget {budget}: every frame, in order");
        }
    }

    /// More frames waiting than a batch takes: every one is handled, in
    /// order, by the batches that follow (none taken off the channel and
    /// left behind when a batch fills).
    #[test]
    fn a_full_batch_leaves_what_waits_behind_it_for_the_next() {
        use futures_util::FutureExt;

        let frames = writes(0xa, MAX_BATCH as i64 + 88);
        let config = Arc::new(ServerConfig::default());
        let budget = config.document_budget();
        let (mut doc, _) = Doc::open("d", None, config).unwrap();
        let (inbox, mut rx) = Inbox::new(budget);
        let (timer, _armed) = watch::channel(None);
        let mut writer = join_as(&mut doc, 1, 0xa);
        let mut reader = join_as(&mut doc, 2, 0xb);
        for f in &frames {
            assert!(
                inbox.send_frame(1, f.clone()).now_or_never().is_some(),
                "small frames fit the budget"
            );
        }
        while let Ok(first) = rx.try_recv() {
            doc.batch(first, &mut rx, &timer);
        }
        assert_eq!(
            received(&mut writer).1,
            frames.len() as u64,
            "all acknowledged"
        );
        let theirs = received(&mut reader)
            .0
            .into_iter()
            .filter(|(_, m)| Envelope::peek(m).unwrap().from == 0xa)
            .count();
        assert_eq!(theirs, frames.len(), "all passed on");
    }

    /// Drives the document as its thread does, until its channel is empty.
    fn drain(doc: &mut Doc, rx: &mut mpsc::Receiver<Cmd>, timer: &watch::Sender<Deadline>) {
        while let Ok(first) = rx.try_recv() {
            doc.batch(first, rx, timer);
        }
    }

    /// A stall of the document's thread longer than the peer timeout
    /// evicts nobody whose frames arrived meanwhile: the tick the timer
    /// sent when the timeout fell due waits in the channel ahead of them,
    /// yet they arrived before the timeout is judged, so they count as
    /// heard, and they are applied and acknowledged.
    #[test]
    fn frames_queued_behind_a_tick_during_a_stall_count_as_heard() {
        use futures_util::FutureExt;

        const A: u32 = 0xa;
        let config = ServerConfig::default()
            .failure_detection(Duration::from_millis(100), Duration::from_millis(500));
        let budget = config.document_budget();
        let (mut doc, _) = Doc::open("d", None, Arc::new(config)).unwrap();
        let (inbox, mut rx) = Inbox::new(budget);
        let (timer, _armed) = watch::channel(None);
        let mut a = join_as(&mut doc, 1, A);
        let frames = writes(A, 10);
        let send = |frame: &Bytes| {
            assert!(inbox.send_frame(1, frame.clone()).now_or_never().is_some());
        };
        // The member is heard, and a tick due then stamps it heard.
        send(&frames[0]);
        drain(&mut doc, &mut rx, &timer);
        let due = doc.epoch + doc.replica.poll_timeout().expect("a timer");
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        assert!(inbox.send(Cmd::Tick).now_or_never().is_some());
        drain(&mut doc, &mut rx, &timer);
        assert!(doc.member(A).is_some());

        // The thread stalls past the peer timeout: the timer's tick, then
        // the member's frames, wait in the channel.
        std::thread::sleep(Duration::from_millis(800));
        assert!(inbox.send(Cmd::Tick).now_or_never().is_some());
        for frame in &frames[1..] {
            send(frame);
        }
        drain(&mut doc, &mut rx, &timer);
        assert!(
            doc.member(A).is_some(),
            "evicted though its frames were queued"
        );
        assert!(!doc.departed.contains(&A));
        assert_eq!(received(&mut a).1, frames.len() as u64, "all acknowledged");
    }

    /// The messages of `tag` in the log on disk, by their position in its
    /// stream.
    fn logged_of(dir: &std::path::Path, tag: u32) -> Vec<u64> {
        Store::open(dir)
            .unwrap()
            .records
            .into_iter()
            .filter_map(|r| match r {
                Record::Message { bytes, .. } => Some(Envelope::peek(&bytes).unwrap()),
                _ => None,
            })
            .filter(|env| env.from == tag)
            .filter_map(|env| env.seq)
            .collect()
    }

    /// A node that did not hear its messages acknowledged sends them
    /// again on its next connection, the relay having applied and logged
    /// them (its connection broke, or the relay restarted, from its log or
    /// from a snapshot). They are acknowledged, but neither logged nor
    /// passed on again: the log holds each message of the node once, and a
    /// node that joins meanwhile gets only its new one.
    #[test]
    fn a_message_sent_again_is_acknowledged_but_not_logged_or_passed_on_again() {
        const A: u32 = 0xa;
        let frames = writes(A, 4);
        let all = frames.len() as u64;
        for (case, restart, compact) in [
            ("reconnected", false, false),
            ("relay restarted", true, false),
            ("relay restarted from a snapshot", true, true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_path_buf();
            // Compacting after every batch: the snapshot covers the first.
            let first = ServerConfig::default().compact_bytes(if compact { 0 } else { 64 << 20 });
            let (mut doc, _) = Doc::open("d", Some(path.clone()), Arc::new(first)).unwrap();
            let (timer, _armed) = watch::channel(None);
            let drive = |doc: &mut Doc, conn: ConnId, frames: &[Bytes]| {
                for f in frames {
                    doc.frame(conn, f.clone());
                }
                doc.commit_and_release();
                doc.arm(&timer);
            };
            let mut before = join_as(&mut doc, 1, A);
            drive(&mut doc, 1, &frames[..frames.len() - 1]);
            assert_eq!(received(&mut before).1, all - 1, "{case}");
            if restart {
                drop(doc);
                let config = Arc::new(ServerConfig::default());
                (doc, _) = Doc::open("d", Some(path.clone()), config).unwrap();
            }
            // The node again, as the same member (its old connection, if
            // the relay still has it, looks alive); and a node that joins.
            let resume = Resume {
                log: doc.log_id,
                position: doc.committed,
            };
            let mut again = rejoin_as(&mut doc, 3, A, Some(resume));
            let mut joiner = join_as(&mut doc, 4, 0xb);
            drive(&mut doc, 3, &frames);
            assert_eq!(
                received(&mut again).1,
                all,
                "{case}: every frame acknowledged"
            );
            let logged: Vec<u64> = if compact {
                vec![all]
            } else {
                (1..=all).collect()
            };
            assert_eq!(
                logged_of(&path, A),
                logged,
                "{case}: each message logged once"
            );
            let passed: Vec<u64> = received(&mut joiner)
                .0
                .iter()
                .map(|(_, m)| Envelope::peek(m).unwrap())
                .filter(|env| env.from == A)
                .filter_map(|env| env.seq)
                .collect();
            assert_eq!(passed, vec![all], "{case}: only the new message passed on");
        }
    }

    /// A packed run of a node's messages that starts with ones the relay
    /// applied but goes on past them brings something new: it is logged
    /// and passed on, as any new message is.
    #[test]
    fn a_run_sent_again_that_goes_on_past_what_was_applied_is_logged() {
        const A: u32 = 0xa;
        let frames = writes(A, 4);
        let messages: Vec<Bytes> = frames
            .iter()
            .map(|f| match Up::decode(f.clone()).unwrap() {
                Up::Broadcast(m) => m,
                Up::To(..) => unreachable!("broadcasts only"),
            })
            .collect();
        let tail: Vec<&[u8]> = messages[3..].iter().map(|m| &m[..]).collect();
        let (covered, run) = Envelope::pack_run(&tail, 1 << 20);
        assert_eq!(covered, tail.len());
        let run = Up::Broadcast(run.expect("a run").into()).encode();

        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(ServerConfig::default());
        let (mut doc, _) = Doc::open("d", Some(dir.path().to_path_buf()), config).unwrap();
        let mut a = join_as(&mut doc, 1, A);
        for f in &frames[..frames.len() - 1] {
            doc.frame(1, f.clone());
        }
        doc.commit_and_release();
        let mut joiner = join_as(&mut doc, 2, 0xb);
        doc.frame(1, run);
        doc.commit_and_release();
        assert_eq!(received(&mut a).1, frames.len() as u64);
        assert_eq!(logged_of(dir.path(), A), vec![1, 2, 3, 4, 5, 4]);
        let passed = received(&mut joiner).0;
        assert_eq!(passed.len(), 1, "the run");
        assert_eq!(Envelope::peek(&passed[0].1).unwrap().seq, Some(4));
    }

    /// A write the relay acknowledged under a larger frame limit is still
    /// in the document after a restart with a smaller one: the log holds
    /// what the relay accepted then, and replaying it is no network input
    /// for today's limit to refuse.
    #[test]
    fn a_logged_write_larger_than_a_later_frame_limit_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let large = Arc::new(ServerConfig::default().max_frame(256 << 10));
        let (mut doc, _) = Doc::open("d", Some(path.clone()), large).unwrap();
        let mut node = Replica::new(PeerId::new("node-a", 0xa), Config::default());
        let root = node.set_root(Input::Map(vec![])).unwrap().expect("a map");
        node.map_set(root, "big", Input::from("x".repeat(100 << 10)))
            .unwrap();
        let frames: Vec<Bytes> = std::iter::from_fn(|| node.poll_transmit())
            .map(|t| Up::Broadcast(Bytes::from_owner(t.bytes)).encode())
            .collect();
        assert!(frames.iter().any(|f| f.len() > 100 << 10));
        let mut a = join_as(&mut doc, 1, 0xa);
        for f in &frames {
            doc.frame(1, f.clone());
        }
        doc.commit_and_release();
        assert_eq!(received(&mut a).1, frames.len() as u64, "acknowledged");
        drop(doc);

        let small = Arc::new(ServerConfig::default().max_frame(64 << 10));
        let (mut doc, _) = Doc::open("d", Some(path), small).unwrap();
        let root = doc.replica.root().as_ref_id().expect("the map");
        assert_eq!(
            doc.replica.map_get(root, "big").unwrap(),
            Some(facsimile_core::Value::from("x".repeat(100 << 10)))
        );
        assert_eq!(doc.replica.snapshot(), node.snapshot());
    }

    /// A logged message that does not apply on replay (whole and checked,
    /// yet not a message this relay takes) keeps the document closed,
    /// with the reason, rather than open without a write its writer was
    /// told was stored.
    #[test]
    fn a_logged_message_that_does_not_apply_keeps_the_document_closed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap().store;
        store.append_message(1, b"\x01not a message");
        store.commit().unwrap();
        drop(store);
        let config = Arc::new(ServerConfig::default());
        let Err(e) = Doc::open("d", Some(dir.path().to_path_buf()), config) else {
            panic!("the document opened without its logged message");
        };
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("logged at position 1"), "{e}");
    }

    /// A resuming client's catch-up comes in frames of at most the relay's
    /// frame limit, what one writer sent packed into as few of them as
    /// fit, and applies as the messages did; a tail holding a message
    /// that fits no such frame is not replayed (the client syncs).
    #[test]
    fn catch_up_frames_fit_the_relay_s_frame_limit() {
        const MAX_FRAME: usize = 8192;
        let mut writer = Replica::new(PeerId::new("writer", 0xa), Config::default());
        let root = writer.set_root(Input::Map(vec![])).unwrap().expect("a map");
        for i in 0..100 {
            let value = format!("{i:03}{}", "x".repeat(500));
            writer.map_set(root, "k", Input::from(value)).unwrap();
        }
        let tail: Vec<(u64, Bytes)> = std::iter::from_fn(|| writer.poll_transmit())
            .zip(1..)
            .map(|(t, position)| {
                let bytes = Bytes::from_owner(t.bytes);
                (position, Down::Message { position, bytes }.encode())
            })
            .collect();
        let frames = pack_replay(tail.iter(), MAX_FRAME).expect("every message fits");
        assert!(frames.len() < tail.len() / 5, "packed: {}", frames.len());
        let mut reader = Replica::new(PeerId::new("reader", 0xb), Config::default());
        for frame in frames {
            assert!(frame.len() <= MAX_FRAME, "{}", frame.len());
            let Ok(Down::Message { bytes, .. }) = Down::decode(frame) else {
                panic!("a message frame");
            };
            reader.handle_message(&bytes).unwrap();
        }
        assert_eq!(reader.snapshot(), writer.snapshot());

        let mut big = tail.clone();
        let (position, frame) = big.pop().unwrap();
        let Ok(Down::Message { bytes, .. }) = Down::decode(frame) else {
            unreachable!("a message frame")
        };
        let mut large = bytes.to_vec();
        large.resize(MAX_FRAME, 0);
        let bytes = Bytes::from(large);
        big.push((position, Down::Message { position, bytes }.encode()));
        assert_eq!(pack_replay(big.iter(), MAX_FRAME), None);
    }

    /// Clients send unacknowledged messages again after reconnecting; the
    /// relay (and every node) must treat a message it already applied as a
    /// no-op.
    #[test]
    fn a_resent_message_is_a_no_op() {
        let mut client = Replica::new(PeerId::new("client", 1), Config::default());
        let mut relay = Replica::new(PeerId::new("relay", 2), Config::default());
        let root = client.set_root(Input::Map(vec![])).unwrap().expect("a map");
        client.map_set(root, "k", 1.into()).unwrap();
        let sent: Vec<_> = std::iter::from_fn(|| client.poll_transmit()).collect();
        for t in &sent {
            relay.handle_message(&t.bytes).unwrap();
        }
        while relay.poll_transmit().is_some() {}
        while relay.poll_event().is_some() {}
        let before = relay.snapshot();
        for t in &sent {
            relay.handle_message(&t.bytes).unwrap();
        }
        assert_eq!(relay.snapshot(), before);
        assert!(
            relay.poll_transmit().is_none(),
            "nothing to say about a duplicate"
        );
        assert!(relay.poll_event().is_none(), "no change from a duplicate");
    }
}
