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
//!   [`LocalNetwork`] connects nodes in one process.
//! - Listeners: [`Node::on_change`], [`MapRef::on`], [`MapRef::on_key`],
//!   [`ArrayRef::on_index`], [`Node::on_root_changed`], [`Node::on_ready`],
//!   and an async [`Node::events`] stream. They run after the change is
//!   applied and may read and write the store.
//! - Typed mirroring ([`typed`]): your own serde types in and out
//!   ([`Node::set_root_from`], [`Node::root_as`]); [`Node::update`] sends
//!   only what a closure changed, [`Node::watch`] calls back with the new
//!   value; [`Node::get`] and [`Node::set_path`] take JSON pointers.
//!
//! The engine underneath is [`facsimile_core`], which does no IO.
//!
//! # Features
//! - `tcp`: [`net`], a tokio client of the relay (`facsimile serve`), with
//!   reconnection, acknowledgements and optional TLS.
//! - `nats`: [`net::connect`] also takes `nats://` addresses: documents on
//!   NATS JetStream, for many machines ([`net::nats`]).
#![forbid(unsafe_code)]

mod clock;
mod error;
mod events;
mod handle;
mod local;
mod lock;
#[cfg(feature = "tcp")]
pub mod net;
mod node;
pub mod typed;
mod value;

pub use error::{EngineError, Error, Place, Result};
pub use events::{ChangeEvent, Event, EventStream, Subscription};
pub use facsimile_core::{
    Config, ObjectId, ObjectKind, Origin, PeerId, Prop, ReceiveError, WireFormat,
};
pub use facsimile_core::{LockEvent, LockState};
pub use handle::{ArrayRef, MapRef, ObjectRef};
pub use local::LocalNetwork;
pub use lock::{LockError, LockFuture, LockGuard};
pub use node::{Node, Outgoing};
pub use typed::Watch;
pub use value::{Input, Value};
