//! The relay client's protocol for the package's `Facsimile.connect`: the
//! same [`Session`] and [`Outbox`] as the Rust client's, so that both speak
//! to the relay alike. The package carries the frames over a WebSocket and
//! hands the messages to its node.

use bytes::Bytes;
use facsimile_protocol::{Admission, HelloError, Incoming, Outbox, Session, Up};
use wasm_bindgen::prelude::*;

use crate::{Engine, error};

/// One node's session with a relay, across its connections.
#[wasm_bindgen]
pub struct RelayClient {
    session: Session,
    outbox: Outbox,
    batch: Vec<Bytes>,
}

#[wasm_bindgen]
impl RelayClient {
    /// A session for `document`, with the relay's `token` (empty for none),
    /// joining read-only if asked.
    #[wasm_bindgen(constructor)]
    pub fn new(document: String, token: String, read_only: bool) -> RelayClient {
        RelayClient {
            session: Session::new(document, token).read_only(read_only),
            outbox: Outbox::counting(Up::writes_in),
            batch: Vec::new(),
        }
    }

    /// The largest message that frames of at most `max_frame` bytes carry
    /// (the relay's default limit when not given): the message limit of a
    /// node on a relay of that frame limit.
    pub fn max_message(max_frame: Option<f64>) -> f64 {
        // A JavaScript number: saturates past usize::MAX.
        let frame = max_frame.map_or(facsimile_protocol::DEFAULT_MAX_FRAME, |f| f as usize);
        facsimile_protocol::max_message(frame) as f64
    }

    /// The largest message the relay passes on, as its latest welcome
    /// said (`undefined` when it did not say).
    pub fn relay_max_message(&self) -> Option<f64> {
        let frame = self.session.relay_max_frame()?;
        Some(facsimile_protocol::max_message(frame) as f64)
    }

    /// After a welcome that does not drop them: splits the node's
    /// messages queued and never sent (a backlog of writes held offline)
    /// that a frame of the relay's limit cannot carry, packed as they were
    /// for a larger one, so that the relay takes them rather than ending
    /// the connection on them. Returns whether it split any.
    pub fn split_unsent(&mut self, engine: &mut Engine) -> bool {
        let Some(max_frame) = self.session.relay_max_frame() else {
            return false;
        };
        self.outbox.split_unsent(max_frame, |messages, max| {
            engine.replica.resplit_unsent(messages, max)
        })
    }

    /// What a flush of the messages queued before `target`
    /// ([`RelayClient::queued`] then) waits for `done` to reach: more, when
    /// some of them were split since.
    pub fn flush_target(&self, target: f64) -> f64 {
        // A count of messages: exact as a number.
        self.outbox.flush_target(target as u64) as f64
    }

    /// A connection's first frame, for the node of this hostname and
    /// incarnation.
    pub fn hello(&self, hostname: &str, incarnation: u32) -> Vec<u8> {
        self.session.hello(hostname, incarnation).to_vec()
    }

    /// Reads the relay's answer to the hello: 0 the node joined (it syncs),
    /// 1 it resumed, 2 it must sync again, 3 it must rejoin as a new
    /// incarnation (its unacknowledged messages were dropped).
    ///
    /// # Errors
    /// An `Error` with code `REFUSED` (the relay's reason as its message)
    /// or `NOT_A_RELAY`.
    pub fn welcome(&mut self, frame: &[u8]) -> Result<u8, JsValue> {
        match self
            .session
            .welcome(Bytes::copy_from_slice(frame), &mut self.outbox)
        {
            Ok(Admission::Joined) => Ok(0),
            Ok(Admission::Resumed) => Ok(1),
            Ok(Admission::Sync) => Ok(2),
            Ok(Admission::Rejoin { .. }) => Ok(3),
            Err(HelloError::Refused(reason)) => Err(error("REFUSED", &reason)),
            Err(e @ HelloError::NotARelay(_)) => Err(error("NOT_A_RELAY", &e.to_string())),
        }
    }

    /// Queues a message of the node (for every other node, or for the node
    /// of incarnation `to`); `false` once the session is closed.
    pub fn send(&mut self, message: &[u8], to: Option<u32>) -> bool {
        Session::send(&mut self.outbox, to, message)
    }

    /// The next frame to write on the connection, kept until acknowledged
    /// (`undefined` when none waits).
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        self.outbox.take_batch(1, &mut self.batch);
        self.batch.pop().map(|b| b.to_vec())
    }

    /// Reads a frame from the relay after its welcome: a message for the
    /// node (`Uint8Array`), `null` for an acknowledgement, or a string: the
    /// relay refuses something the node sent, for that reason, and closes
    /// the connection (the session is over).
    ///
    /// # Errors
    /// An `Error` with code `PROTOCOL` when the frame breaks the protocol
    /// (the connection is to be dropped and made again).
    pub fn receive(&mut self, frame: &[u8]) -> Result<JsValue, JsValue> {
        match self
            .session
            .receive(Bytes::copy_from_slice(frame), &mut self.outbox)
        {
            Ok(Incoming::Message(bytes)) => Ok(js_sys::Uint8Array::from(&bytes[..]).into()),
            Ok(Incoming::Acked) => Ok(JsValue::NULL),
            Ok(Incoming::Closing(reason)) => Ok(reason.into()),
            Err(e) => Err(error("PROTOCOL", &e.to_string())),
        }
    }

    /// Counts as lost the oldest messages not acknowledged yet that the
    /// node sent as `incarnation`, which the relay evicted: it drops them,
    /// yet acknowledges them. Returns how many writes they carry (a message
    /// counted before is not counted again, when a later welcome drops
    /// it).
    pub fn count_lost_from(&mut self, incarnation: u32) -> f64 {
        self.outbox
            .count_lost_while(|frame| Up::sent_as(frame, incarnation)) as f64
    }

    /// Messages ever queued.
    pub fn queued(&self) -> f64 {
        self.outbox.queued() as f64
    }

    /// Messages ever done: acknowledged, or dropped.
    pub fn done(&self) -> f64 {
        self.outbox.done() as f64
    }

    /// Messages that changed the document ever dropped unacknowledged
    /// (their writes are lost).
    pub fn dropped(&self) -> f64 {
        self.outbox.dropped() as f64
    }

    /// Takes no more messages.
    pub fn close(&mut self) {
        self.outbox.close();
    }

    /// Whether the session takes no more messages.
    pub fn is_closed(&self) -> bool {
        self.outbox.is_closed()
    }
}
