//! Network transports (feature `tcp`): connect a [`Node`](crate::Node) to a
//! relay, `facsimile serve`, over TCP and optionally TLS.
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

mod client;
#[cfg(feature = "nats")]
pub mod nats;
pub mod protocol;
mod tls;

pub use client::{ConnectOptions, Connection, NetError, Status, connect};
pub use tls::TlsOptions;
pub use tokio_rustls::rustls;
