//! The wire protocol between facsimile nodes and the relay (`facsimile
//! serve`), and a relay client's session, without I/O.
//!
//! The Rust client (`facsimile::net`, over TCP), the relay
//! (`facsimile-server`, over TCP and WebSocket) and the JavaScript package's
//! client (WebAssembly, over WebSocket) all speak through this crate, so
//! the three cannot drift apart. You need it only to write another client
//! or relay.
//!
//! ```
//! use bytes::Bytes;
//! use facsimile_protocol::{Admission, Down, Incoming, Outbox, ServerHello, Session};
//!
//! let mut session = Session::new("inventory", "s3cret");
//! let mut outbox = Outbox::default();
//! // The first frame of a connection.
//! let _hello: Bytes = session.hello("alice", 0x1234);
//! // The relay's answer: the node joins (and syncs to get the document).
//! let welcome = Down::Hello(ServerHello::Welcome {
//!     log: 1, position: 0, relay: 7, resumed: false, member: false, evicted: false,
//!     max_frame: Some(1 << 20),
//!     taken: None,
//! });
//! assert_eq!(session.welcome(welcome.encode(), &mut outbox), Ok(Admission::Joined));
//! // The node's messages wait in the outbox until the relay acknowledges them.
//! Session::send(&mut outbox, None, b"a message");
//! let mut frames = Vec::new();
//! outbox.take_batch(usize::MAX, &mut frames);
//! assert_eq!(session.receive(Down::Ack(1).encode(), &mut outbox), Ok(Incoming::Acked));
//! assert_eq!(outbox.done(), 1);
//! ```

mod frame;
mod outbox;
mod session;

pub use frame::{
    ClientHello, DEFAULT_HEARTBEAT, DEFAULT_MAX_FRAME, Down, FRAME_OVERHEAD,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, ProtocolError, Resume, ServerHello, Up, max_message,
};
pub use outbox::Outbox;
pub use session::{Admission, HelloError, Incoming, Session};
