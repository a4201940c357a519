//! Mirror an object graph — maps, arrays, values, shared references and
//! cycles — across processes and machines, keep every replica convergent,
//! report every change, and grant distributed locks on objects.
//!
//! ```
//! use facsimile::{LocalNetwork, Value};
//! use serde_json::json;
//!
//! let net = LocalNetwork::new();
//! let host = net.join("host");
//! host.set_root(json!({"elements": [1, 2, 3]}))?;
//!
//! // A node joining later asks for the document.
//! let client = net.join("client");
//! client.sync();
//! let elements = client.root_map().unwrap().get("elements").unwrap();
//! let elements = elements.as_array().unwrap();
//! elements.push(4)?;
//!
//! // Both nodes hold the same document, byte for byte.
//! assert_eq!(host.snapshot(), client.snapshot());
//! let on_host = host.root_map().unwrap().get("elements").unwrap();
//! assert_eq!(on_host.as_array().unwrap().get(3), Some(Value::Int(4)));
//! # Ok::<(), facsimile::Error>(())
//! ```
//!
//! # Overview
//! - A [`Node`] holds one replica. Writes go through handles ([`MapRef`],
//!   [`ArrayRef`]) and replicate; concurrent writes to one key or element
//!   resolve by logical time, ties to the higher hostname.
//! - Transport is yours or ours: [`Node::set_sender`] and [`Node::receive`]
//!   connect any channel that delivers each node's messages in order;
//!   [`LocalNetwork`] connects nodes in one process (`ChannelNetwork`, with
//!   the feature `channels`, does it on tokio tasks).
//! - Listeners: [`Node::on_change`], [`MapRef::on`], [`MapRef::on_key`],
//!   [`ArrayRef::on_index`], [`Node::on_root_changed`], [`Node::on_ready`],
//!   and an async [`Node::events`] stream. They run after the change is
//!   applied and may read and write the store.
//! - Locks: [`Node::lock`] resolves to a [`LockGuard`] holding exclusive
//!   write permission on one object, with a fencing token.
//! - Typed mirroring ([`typed`]): your own serde types in and out
//!   ([`Node::set_root_from`], [`Node::root_as`]); [`Node::update`] sends
//!   only what a closure changed, [`Node::watch`] calls back with the new
//!   value; [`Node::get`] and [`Node::set_path`] take JSON pointers.
//!
//! The engine underneath is [`facsimile_core`], which does no IO.
//!
//! # Where to read
//! | to | read |
//! |---|---|
//! | create nodes, connect them, sync a late joiner | [`Node`], [`LocalNetwork`], [`Node::set_sender`], [`Node::sync`] |
//! | read and write the document | [`MapRef`], [`ArrayRef`], [`ObjectRef`]; values: [`Value`] in, [`Input`] out |
//! | use your own types | [`typed`] |
//! | know what changed | [`ChangeEvent`], [`RootChange`], [`Node::on_change`], [`Node::events`], [`Subscription`] |
//! | write under exclusive permission | [`Node::lock`], [`Node::request`], [`LockGuard`], [`LockError`] |
//! | handle a refusal | [`Error`], [`EngineError`] (the engine's reasons), [`Place`] |
//! | test timers without sleeping | [`LocalNetwork::with_virtual_time`], [`LocalNetwork::advance`] |
//! | tune heartbeats, reclamation, limits | [`Config`] |
//! | connect over TCP to a relay, or over NATS | [`net`] (features `tcp`, `nats`) |
//! | drive a replica yourself (another runtime, another transport) | [`facsimile_core::Replica`] |
//!
//! Why the guarantees hold (stamps, the movable list, reclamation, the sync
//! handshake, the lock protocol, the relay's durability) is in
//! [DESIGN.md](https://github.com/facsimile-rs/facsimile/blob/main/DESIGN.md).
//!
//! # What facsimile does not do
//! - **No causal delivery across senders.** A transport must deliver each
//!   node's messages in that node's order, and nothing more: changes from
//!   different nodes may reach two nodes in different orders, so their
//!   events differ in order while their documents converge. An operation
//!   that names something not yet received waits for it, invisibly.
//! - **A late joiner receives the whole document as one message.** It must
//!   fit in the transport's frame (the relay's default is 16 MiB) and in
//!   [`Config::max_message_size`] (64 MiB); there is no incremental
//!   transfer.
//! - **An evicted lock holder cannot tell until it hears from its peers
//!   again.** Peers that stop hearing from a node evict it and grant its
//!   locks to the next waiter; the evicted node's [`LockGuard`] still says
//!   held until a message tells it otherwise (a relay client learns it when
//!   it reconnects). Check the fencing token ([`LockGuard::token`]) where
//!   it matters.
//! - **Without a relay or NATS, "a peer is gone" is each node's own
//!   decision.** With failure detection over a plain broadcast, a partition
//!   that splits nodes unevenly can leave them disagreeing on whether an
//!   evicted peer's last writes applied; the relay and NATS order
//!   evictions with the messages.
//! - **A lock covers one object**, not the objects it contains.
//! - **No history.** A document is its current state: there is no undo and
//!   no log of past versions, and an object removed from the document is
//!   reclaimed; it can be inserted again only until the next reclamation
//!   pass ([`EngineError::Detached`]). Move an object by inserting it at
//!   its new place first.
//! - **No writes during a sync**: [`Node::sync`] replaces the document, and
//!   writes are refused until [`Node::on_ready`].
//!
//! # Features
//! - `channels`: `ChannelNetwork`, nodes in one process joined by tokio
//!   channels, each applying what it receives on a task of its own (the
//!   asynchronous counterpart of [`LocalNetwork`]).
//! - `tcp`: [`net`], a tokio client of the relay (`facsimile serve`), with
//!   reconnection, acknowledgements and optional TLS.
//! - `nats`: [`net::connect`] also takes `nats://` addresses: documents on
//!   NATS JetStream, for many machines (`net::nats`). It does not need
//!   `tcp`.
//! - `failpoints`: faults the tests inject into the transports; not for
//!   production.
#![forbid(unsafe_code)]

#[cfg(feature = "channels")]
mod channels;
mod clock;
mod error;
mod events;
mod handle;
mod local;
mod lock;
#[cfg(any(feature = "tcp", feature = "nats"))]
pub mod net;
mod node;
pub mod typed;
mod value;

#[cfg(feature = "channels")]
pub use channels::ChannelNetwork;
pub use error::{EngineError, Error, Place, Result};
pub use events::{ChangeEvent, Event, EventStream, RootChange, Subscription};
pub use facsimile_core::{
    Config, MAX_HOSTNAME, ObjectId, ObjectKind, Origin, PeerId, Prop, ReceiveError, WireFormat,
};
pub use facsimile_core::{LockEvent, LockState};
pub use handle::{ArrayRef, MapRef, ObjectRef};
pub use local::LocalNetwork;
pub use lock::{LockError, LockFuture, LockGuard};
pub use node::{Node, Outgoing};
pub use smol_str::SmolStr;
pub use typed::Watch;
pub use value::{Input, MAX_JSON_DEPTH, Value};
