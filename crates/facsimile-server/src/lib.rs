//! The facsimile relay: a server that nodes of a document connect to over
//! TCP or WebSocket (on the same port). It orders every message of a document into one sequence, stores it
//! durably, passes it to the document's other nodes, and is itself a
//! replica, so it serves the document to nodes that join.
//!
//! ```no_run
//! use facsimile_server::{Server, ServerConfig};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let config = ServerConfig::default()
//!         .listen("127.0.0.1:7878".parse().unwrap())
//!         .data_dir("facsimile-data")
//!         .token("s3cret");
//!     Server::bind(config).await?.run().await
//! }
//! ```
//!
//! Nodes connect with `facsimile::net::connect` (feature `tcp` of the
//! `facsimile` crate), or over a WebSocket at `ws://HOST:PORT/` (`wss://`
//! with TLS) sending each protocol frame as one binary message, as a
//! browser does; the `facsimile serve` command runs this server.
//!
//! # Overview
//! - One thread per document owns its replica and its store; connections
//!   pass frames to it within a budget of bytes per document
//!   ([`ServerConfig::document_queue`]: a busy document slows its senders
//!   down through TCP) and take frames from a bounded per-client queue (a
//!   client that falls behind is cut off, with a logged reason).
//! - A client's message is applied, appended to the document's log and
//!   synced to disk before it is forwarded or acknowledged; a batch of
//!   messages shares one sync.
//! - A client that disconnects is evicted: its locks pass on and nobody
//!   waits for it. A relay that restarts recovers each document from its
//!   snapshot and log and evicts its previous incarnation; clients resume
//!   where they stopped reading.
//! - One relay at a time on a data directory: it is locked while a relay
//!   runs, and a second relay on it is refused ([`DataDirInUse`]).
//! - Hardening: a connection limit, a frame size limit (and a hello's, far
//!   smaller, until the token is checked), a shared token compared in
//!   constant time, optional TLS, and a reason in the log for every refusal
//!   and disconnection.
//! - A live inspector of each document at `/inspect/{doc}?token=…` (a page
//!   on the JavaScript package, joined read-only) with the relay's side at
//!   `/inspect/{doc}/status`; see [`ServerConfig::inspector_assets`].
#![forbid(unsafe_code)]

mod config;
mod data_dir;
mod document;
mod http;
mod inspect;
mod server;
mod store;
pub mod tls;
mod transport;

pub use config::{DEFAULT_INSPECTOR_ASSETS, DEFAULT_LISTEN, ServerConfig};
pub use data_dir::DataDirInUse;
pub use document::Recovery;
pub use server::{Server, valid_name};
