//! What an input produces for the caller: messages ([`Outbox`]), events
//! ([`Events`]) and timer deadlines ([`TimerTable`]). Components receive this
//! rather than the whole replica.

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::Peers;
use crate::codec::WireFormat;
use crate::config::Config;
use crate::error::Error;
use crate::event::{Change, Event, Origin};
use crate::outbox::Outbox;
use crate::timers::{Timer, TimerTable};
use crate::value::{Id, ObjectId, Prop, Value};
use crate::wire::{Directed, Sequenced, Tag};

/// The outputs of a replica.
#[derive(Debug)]
pub(crate) struct Outputs {
    pub(crate) outbox: Outbox,
    pub(crate) events: Events,
    pub(crate) timers: TimerTable,
    /// The time of the latest [`crate::Replica::handle_timeout`]: timers
    /// armed by what an input sends count from it.
    pub(crate) now: Duration,
    /// The heartbeat interval, when heartbeats go out.
    heartbeat: Option<Duration>,
}

impl Outputs {
    pub(crate) fn new(tag: Tag, config: &Config) -> Outputs {
        Outputs {
            outbox: Outbox::new(tag, config),
            events: Events::default(),
            timers: TimerTable::default(),
            now: Duration::ZERO,
            heartbeat: config.heartbeats(),
        }
    }

    /// Queues a sequenced message.
    pub(crate) fn send(&mut self, body: Sequenced) {
        self.outbox.send(body);
        self.sent();
    }

    /// Queues a message for one peer.
    pub(crate) fn send_to(&mut self, to: Tag, body: Directed) {
        self.outbox.send_to(to, body);
    }

    /// Opens a group of operations: everything until the matching
    /// [`Outputs::end`] is one message and one change.
    pub(crate) fn begin(&mut self) {
        self.outbox.begin();
    }

    /// Closes a group; the outermost one reports its changes and queues its
    /// message.
    pub(crate) fn end(&mut self) {
        if self.outbox.end() {
            self.flush();
        }
    }

    /// Reserves room for a write of at most `bytes` in the message being
    /// built; operations held while offline go out first when the write
    /// does not fit in their message.
    ///
    /// # Errors
    /// [`Error::TooLarge`], see [`Outbox::room`].
    #[inline]
    pub(crate) fn room(&mut self, bytes: usize) -> Result<(), Error> {
        if !self.outbox.room(bytes)? {
            self.flush_now();
            self.outbox.room(bytes)?;
        }
        Ok(())
    }

    /// [`Outputs::room`] for a write of at most `bound(format)` bytes
    /// besides the introductions of peers it may make, that refers to at
    /// most `ids()` ids of other peers.
    ///
    /// # Errors
    /// [`Error::TooLarge`], see [`Outbox::room`].
    #[inline]
    pub(crate) fn fits(
        &mut self,
        peers: &Peers,
        ids: impl FnOnce() -> usize,
        bound: impl FnOnce(WireFormat) -> usize,
    ) -> Result<(), Error> {
        let bytes = bound(self.outbox.format()) + self.outbox.intros_bound(peers, ids);
        self.room(bytes)
    }

    /// Makes room for an operation this replica sends however full the
    /// message being built is (a lock's release or acknowledgement, which
    /// nobody could take back if it were refused), of at most `bytes`
    /// besides the introductions of the `ids` ids of other peers it names.
    /// When it does not fit and its group is the outermost, what the
    /// message holds goes out first. Inside a caller's group a release
    /// fits in the room every write kept for it
    /// ([`Outbox::keep_for_releases`]).
    pub(crate) fn room_for_own(&mut self, peers: &Peers, ids: usize, bytes: usize) {
        let bytes = bytes + self.outbox.intros_bound(peers, || ids);
        if !self.outbox.room_for_own(bytes) && self.outbox.is_outermost() {
            self.end();
            self.flush_now();
            self.begin();
            // Alone in its message: larger than the limit only when the
            // limit is smaller than one acknowledgement of the members.
            self.outbox.room_for_own(bytes);
        }
    }

    /// Closes every open group and sends what was held (before anything
    /// remote is applied: the counters of one message's operations are
    /// consecutive).
    pub(crate) fn close_all(&mut self) {
        self.outbox.end_all();
        self.flush_now();
    }

    /// Closes every open group; held operations stay held.
    pub(crate) fn close_groups(&mut self) {
        self.outbox.end_all();
        self.flush();
    }

    /// Reports the changes and queues the message of the operations so far,
    /// whether or not a group is open, unless they are held.
    pub(crate) fn flush(&mut self) {
        self.events.flush_touched(&Origin::Local);
        // Operations held now count as sent for the heartbeat: they go out
        // before anything else, so heartbeats keep their pace (and the
        // clock its progress) while offline.
        if self.outbox.flush() | self.outbox.take_fresh_held() {
            self.sent();
        }
    }

    /// [`Outputs::flush`], held operations included.
    pub(crate) fn flush_now(&mut self) {
        self.events.flush_touched(&Origin::Local);
        if self.outbox.flush_now() {
            self.sent();
        }
    }

    /// A sequenced message went out: the next heartbeat is due a heartbeat
    /// interval later.
    fn sent(&mut self) {
        if let Some(beat) = self.heartbeat {
            self.timers.set(Timer::Heartbeat, self.now + beat);
        }
    }
}

/// How one message or local call touched an array, for its change event.
#[derive(Debug)]
pub(crate) enum Touch {
    /// One element was set, and nothing else of the array changed (any
    /// other change makes it a mass change, so the index and value stay
    /// what they were when it was set).
    Set {
        index: usize,
        old: Value,
        new: Value,
    },
    /// Anything else: one change event for the whole array.
    Mass,
}

/// The events waiting to be polled, and the arrays touched by the message
/// or local call being applied.
#[derive(Debug)]
pub(crate) struct Events {
    queue: VecDeque<Event>,
    touched: Vec<(Id, Touch)>,
    /// Whether change events are recorded (nobody may be listening).
    record: bool,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            queue: VecDeque::new(),
            touched: Vec::new(),
            record: true,
        }
    }
}

impl Events {
    /// Queues an event that is always reported.
    pub(crate) fn push(&mut self, e: Event) {
        self.queue.push_back(e);
    }

    pub(crate) fn set_recording(&mut self, on: bool) {
        self.record = on;
    }

    /// Whether changes are reported.
    pub(crate) fn recording(&self) -> bool {
        self.record
    }

    /// Reports a change, when changes are recorded.
    #[inline]
    pub(crate) fn change(&mut self, change: impl FnOnce() -> Change) {
        if self.record {
            self.queue.push_back(Event::Change(change()));
        }
    }

    /// Reports a root replacement, when changes are recorded.
    pub(crate) fn root_changed(&mut self, old: Value, new: Value, origin: Origin) {
        if self.record {
            self.queue
                .push_back(Event::RootChanged { old, new, origin });
        }
    }

    /// Notes that the array `list` changed; its event goes out when the
    /// message or call is complete ([`Events::flush_touched`]).
    #[inline]
    pub(crate) fn touch(&mut self, list: Id, touch: impl FnOnce() -> Touch) {
        if !self.record {
            return;
        }
        match self.touched.iter_mut().find(|(l, _)| *l == list) {
            Some((_, t)) => *t = Touch::Mass,
            None => self.touched.push((list, touch())),
        }
    }

    /// Turns the arrays touched since the last call into change events.
    #[inline]
    pub(crate) fn flush_touched(&mut self, origin: &Origin) {
        // Often empty (maps report as they change): checked inline, where
        // the call alone cost more than the check.
        if !self.touched.is_empty() {
            self.queue_touched(origin);
        }
    }

    fn queue_touched(&mut self, origin: &Origin) {
        for (list, touch) in self.touched.drain(..) {
            let change = match touch {
                Touch::Set { index, old, new } => Change {
                    object: ObjectId(list),
                    prop: Some(Prop::Index(index)),
                    old: Some(old),
                    new: Some(new),
                    origin: origin.clone(),
                },
                Touch::Mass => Change {
                    object: ObjectId(list),
                    prop: None,
                    old: None,
                    new: None,
                    origin: origin.clone(),
                },
            };
            self.queue.push_back(Event::Change(change));
        }
    }

    pub(crate) fn poll(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drops every queued event.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }
}
