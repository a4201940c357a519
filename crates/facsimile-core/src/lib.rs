//! The sans-IO replication engine of facsimile.
//!
//! A [`Replica`] holds one participant's copy of a document: a root value
//! and a graph of maps and arrays that may share objects and form cycles.
//! Local writes change it at once and become messages; messages from peers
//! change it too; every replica that has received the same messages holds the
//! same document, byte for byte ([`Replica::snapshot`]), whatever order the
//! senders' messages were interleaved in. The replica does no IO, reads no
//! clock and spawns nothing: bytes and time go in, messages and events come
//! out.
//!
//! ```
//! use facsimile_core::{Config, Input, PeerId, Replica};
//!
//! let mut a = Replica::new(PeerId::new("alpha", 1), Config::default());
//! let mut b = Replica::new(PeerId::new("bravo", 2), Config::default());
//! let list = a.set_root(Input::Array(vec![1.into(), 2.into()]))?.expect("an array");
//! a.list_splice(list, 2, 0, vec![3.into()])?;
//! while let Some(t) = a.poll_transmit() {
//!     b.handle_message(&t.bytes)?;
//! }
//! let list_b = b.root().as_ref_id().expect("an array");
//! assert_eq!(b.list_values(list_b)?, vec![1.into(), 2.into(), 3.into()]);
//! assert_eq!(a.snapshot(), b.snapshot());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
//! - Writes are stamped with Lamport time and the writer's [`PeerId`]; map
//!   keys, array element values and the root are last-writer-wins, ties going
//!   to the higher hostname.
//! - Arrays are movable lists: elements keep identity, so concurrent inserts
//!   are never lost and concurrent reorders never duplicate an element.
//! - Operations that name something not yet received wait for it.
//! - Unreachable objects are reclaimed once every peer has acknowledged a
//!   state in which they were unreachable.
//!
//! # Features
//! - `sim`: a deterministic simulation harness ([`sim`]) driving several
//!   replicas over a network that keeps each sender's order but interleaves
//!   senders from a seed.
#![forbid(unsafe_code)]

mod clock;
mod codec;
mod config;
mod doc;
mod envelope;
mod error;
mod event;
mod gc;
mod graph;
mod locks;
mod membership;
mod op;
mod outbox;
mod outputs;
mod parked;
mod replica;
mod resend;
#[cfg(feature = "sim")]
pub mod sim;
mod streams;
mod sync;
mod timers;
mod value;
mod wire;

pub use codec::{VERSION, WireFormat};
pub use config::Config;
pub use doc::is_permutation;
pub use envelope::Envelope;
pub use error::{Error, ReceiveError};
pub use event::{Change, Event, LockEntry, LockEvent, LockState, Origin, PeerInfo};
pub use graph::{IdHasher, IdKeys, hash_keys_fingerprint, seed_hash_keys};
pub use outbox::Transmit;
pub use replica::{CarriedOver, ElementStamp, Planned, Replica};
pub use value::{Input, ObjectId, ObjectKind, PeerId, Prop, Succession, Value};

/// The longest hostname, in bytes of UTF-8, that peers accept.
pub const MAX_HOSTNAME: usize = 1024;
