//! The interface every benchmarked library implements.
//!
//! A [`System`] is one replica of one document. The workloads in
//! [`crate::workload`] are written once against this trait, so every library
//! runs exactly the same sequence of edits, syncs and reads. Adding a library
//! means adding one module that implements [`System`] and one line in
//! [`crate::dispatch`].
//!
//! The document has a fixed shape, the same for every library: the named root
//! containers listed in [`Root`]. Per-operation edits ([`Op`]) touch the root
//! map `map` and the root array `array`; bulk builds ([`System::write_map`])
//! fill the root maps `items` and `graph`.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::workload::Workload;

/// The named root containers of the benchmark document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// The root map edited by the per-operation map workloads.
    Map,
    /// The root array edited by the per-operation array workloads.
    Array,
    /// The root map filled by the `nested` workload.
    Items,
    /// The root map filled by the `graph_sync` workload.
    Graph,
}

impl Root {
    /// Every root, in the order the canonical export lists them.
    pub const ALL: [Root; 4] = [Root::Map, Root::Array, Root::Items, Root::Graph];

    /// The name of the root container in the library's document.
    pub fn name(self) -> &'static str {
        match self {
            Root::Map => "map",
            Root::Array => "array",
            Root::Items => "items",
            Root::Graph => "graph",
        }
    }

    /// Whether the root is an array (all others are maps).
    pub fn is_array(self) -> bool {
        self == Root::Array
    }
}

/// One local edit made by a live replica, sent to its peers as one update.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    /// Sets `key` of the root map to an integer.
    MapSet {
        /// The key to set.
        key: &'a str,
        /// The integer to store.
        value: i64,
    },
    /// Appends an integer to the root array.
    ArrayPush {
        /// The integer to append.
        value: i64,
    },
    /// Inserts an integer into the root array before `index` (`index` may
    /// equal the length).
    ArrayInsert {
        /// The position of the new element.
        index: usize,
        /// The integer to insert.
        value: i64,
    },
    /// Deletes the element of the root array at `index`.
    ArrayDelete {
        /// The position of the element to delete.
        index: usize,
    },
}

/// A value written by a bulk build, produced lazily.
///
/// Maps and arrays are iterators so that a million-object graph is generated
/// while the library consumes it, never held twice in memory: the peak memory
/// of a build is the library's. The iterator overhead is the same for every
/// library.
pub enum Value {
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
    /// A new map holding these entries.
    Map(Entries),
    /// A new array holding these elements.
    Array(Elements),
}

/// The entries of a map being written, see [`Value`].
pub type Entries = Box<dyn Iterator<Item = (String, Value)>>;

/// The elements of an array being written, see [`Value`].
pub type Elements = Box<dyn Iterator<Item = Value>>;

/// Splits the time of one [`System::edit`] between the local change and
/// encoding the update.
///
/// The workload starts the timer just before `edit`; the implementation
/// calls [`EditTimer::local`] after each stretch of local work and
/// [`EditTimer::encode`] after each stretch of encoding, and returns right
/// after its last call. Each call charges the time since the previous one.
#[derive(Debug)]
pub struct EditTimer {
    /// `None` when the timer is off.
    mark: Option<Instant>,
    local: Duration,
    encode: Duration,
}

impl EditTimer {
    /// A timer with nothing charged yet.
    pub fn new() -> Self {
        Self {
            mark: Some(Instant::now()),
            local: Duration::ZERO,
            encode: Duration::ZERO,
        }
    }

    /// A timer that never reads the clock and charges nothing.
    pub fn off() -> Self {
        Self {
            mark: None,
            local: Duration::ZERO,
            encode: Duration::ZERO,
        }
    }

    /// Whether the timer reads the clock.
    pub fn is_on(&self) -> bool {
        self.mark.is_some()
    }

    /// Starts timing one edit.
    pub fn start(&mut self) {
        if let Some(mark) = &mut self.mark {
            *mark = Instant::now();
        }
    }

    /// Charges the time since the previous mark to the local change.
    pub fn local(&mut self) {
        if let Some(mark) = &mut self.mark {
            self.local += mark_lap(mark);
        }
    }

    /// Charges the time since the previous mark to encoding.
    pub fn encode(&mut self) {
        if let Some(mark) = &mut self.mark {
            self.encode += mark_lap(mark);
        }
    }

    /// The total time charged to local changes.
    pub fn local_total(&self) -> Duration {
        self.local
    }

    /// The total time charged to encoding.
    pub fn encode_total(&self) -> Duration {
        self.encode
    }
}

/// The time since `mark`, moving `mark` to now.
fn mark_lap(mark: &mut Instant) -> Duration {
    let now = Instant::now();
    let lap = now - *mark;
    *mark = now;
    lap
}

impl Default for EditTimer {
    fn default() -> Self {
        Self::new()
    }
}

/// Receives the contents of a container, depth first, from [`System::walk`].
///
/// A map is reported as `enter_map`, then for each entry `key` followed by
/// the entry's value, then `leave_map`; an array as `enter_array`, its
/// elements, `leave_array`. Map entries may come in any order.
pub trait Visit {
    /// A map starts.
    fn enter_map(&mut self);
    /// The next value belongs to this key of the current map.
    fn key(&mut self, key: &str);
    /// The current map ends.
    fn leave_map(&mut self);
    /// An array starts.
    fn enter_array(&mut self);
    /// The current array ends.
    fn leave_array(&mut self);
    /// An integer.
    fn int(&mut self, value: i64);
    /// A string.
    fn str(&mut self, value: &str);
    /// Any other value (the benchmark writes none; reported so a mismatch
    /// shows up in the canonical export instead of being skipped).
    fn other(&mut self, value: &dyn Debug);
}

/// What crossed the wire while two replicas caught up with each other
/// ([`System::reconnect`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exchange {
    /// Bytes sent, both directions, every message of the exchange included
    /// (state vectors, version vectors, sync messages, acknowledgements).
    pub bytes: u64,
    /// Messages sent, both directions.
    pub messages: u64,
}

impl Exchange {
    /// Counts one message of `len` bytes.
    pub fn add(&mut self, len: usize) {
        self.bytes += len as u64;
        self.messages += 1;
    }
}

/// One replica of one document in one CRDT library.
///
/// Replicas of a workload are created as the library's users would: the
/// first with [`System::new`], every other from its snapshot with
/// [`System::load`], so that all share the same root containers.
pub trait System: Sized {
    /// The name of the system on the command line and in the results.
    const NAME: &'static str;

    /// The N this system runs `workload` at when the user gives none.
    ///
    /// Override it where the library cannot finish the default N in
    /// reasonable time; the table shows the N used.
    fn default_n(workload: Workload) -> usize {
        workload.default_n()
    }

    /// Creates the first replica of an empty document, with a peer id unique
    /// within the workload.
    fn new(peer: u64) -> Self;

    /// Creates a replica from a snapshot made by [`System::snapshot`].
    fn load(peer: u64, snapshot: &[u8]) -> Self;

    /// Encodes the whole document for a replica that has nothing.
    fn snapshot(&mut self) -> Vec<u8>;

    /// An update message as the library hands it out (copying it into a
    /// `Vec` would charge the copy to the library).
    type Update: AsRef<[u8]>;

    /// Makes one local edit, commits it and returns the smallest update
    /// message that carries it to a peer, reporting the split between local
    /// work and encoding to `timer`.
    fn edit(&mut self, op: Op<'_>, timer: &mut EditTimer) -> Self::Update;

    /// Applies an update message made by [`System::edit`] on another replica.
    fn apply(&mut self, update: &[u8]);

    /// Makes one local edit while disconnected: the edit is committed as its
    /// own change, as in [`System::edit`], but nothing is sent and nothing
    /// is encoded that the library would not encode offline. What the
    /// library keeps for its peers is sent by [`System::reconnect`].
    fn edit_offline(&mut self, op: Op<'_>);

    /// Brings `a` and `b`, which edited while disconnected, up to date with
    /// each other the way the library catches up on reconnection, and
    /// reports what crossed the wire.
    fn reconnect(a: &mut Self, b: &mut Self) -> Exchange;

    /// Writes `entries` into the root map `root` as one local transaction,
    /// creating nested maps and arrays as the values require.
    fn write_map(&mut self, root: Root, entries: Entries);

    /// Reports the contents of the root container `root` to `visitor`; a root
    /// the document does not have yet is reported as empty.
    fn walk<V: Visit>(&self, root: Root, visitor: &mut V);
}
