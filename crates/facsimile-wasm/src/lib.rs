//! The facsimile engine for JavaScript: [`Engine`] wraps the sans-IO
//! [`Replica`] of `facsimile-core` for the `facsimile` npm package (`js/`),
//! which adds the proxies, listeners, transport hooks and timers.
//!
//! Nothing here calls into JavaScript: every method returns before the
//! package sends a message or runs a listener, so delivery may be
//! synchronous and re-entrant (a `send` that calls another node's `receive`,
//! which answers into this one) without ever entering the engine twice.
//! Time comes in as milliseconds from the caller's clock.
//!
//! Values crossing the boundary:
//! - from the engine: `null`, booleans, numbers (integers beyond 2^53 as
//!   `BigInt`), strings, `Uint8Array`s, and objects as a two-element array
//!   `[kind, handle]` (kind 1: a map, 2: an array);
//! - to the engine (an *input*): the same scalars, or an object with exactly
//!   one key: `{r: handle}` (a reference to an existing object), `{m: [k0,
//!   v0, k1, v1, ...]}` (a new map) or `{a: [v0, v1, ...]}` (a new array).
//!
//! Whole objects are read in one call ([`Engine::map_packed`],
//! [`Engine::list_packed`]) as the text of a JSON array, which `JSON.parse`
//! turns into values far faster than the engine can hand them over one by
//! one. In it, numbers (integers up to 2^53 and finite floats), strings,
//! booleans and `null` are themselves, objects are `[kind, handle]`, and
//! the rest is a one-key object: `{"f": "NaN" | "inf" | "-inf"}`, `{"i":
//! "digits"}` for an integer beyond 2^53, `{"b": [bytes...]}`.
//!
//! A handle names one object for as long as the package holds it; it is
//! released with [`Engine::release`].
//!
//! ```
//! use facsimile_wasm::Engine;
//! let engine = Engine::new("a", 1, true, None, 0.0, 0.0, None, false);
//! assert!(engine.is_ready());
//! ```

mod array;
mod relay;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use facsimile_core::{
    Config, Error, Event, IdKeys, Input, LockEvent, LockState, ObjectId, ObjectKind, Origin,
    PeerId, Prop, ReceiveError, Replica, Value, WireFormat,
};
use js_sys::{Array, Reflect, Uint8Array};
use smol_str::SmolStr;
use wasm_bindgen::prelude::*;

pub use relay::RelayClient;

/// Object kinds as the package sees them.
const KIND_MAP: u8 = 1;
const KIND_ARRAY: u8 = 2;

/// The largest integer a JavaScript number holds exactly.
const MAX_SAFE: i64 = (1 << 53) - 1;

/// The longest string V8 makes, in UTF-16 code units (other engines make
/// longer ones). Making a longer one throws inside the engine call, which
/// leaves the engine unusable.
const MAX_JS_STRING: usize = (1 << 29) - 24;

/// How deep an input tree may nest. The engine creates an input's objects
/// recursively, on WebAssembly's shadow stack (1 MiB), which a tree of
/// about 1,500 levels overflows: the module's memory is then corrupt for
/// every engine of the instance. A third of that leaves a margin.
const MAX_INPUT_DEPTH: usize = 500;

/// One replica of a document, driven by the JavaScript package.
#[wasm_bindgen]
pub struct Engine {
    replica: Replica,
    handles: Handles,
    /// The recipient of the message last returned by `poll_transmit`.
    last_to: Option<u32>,
    /// The deadline [`Engine::poll_timeout`] last returned.
    deadline: Option<Duration>,
}

/// Small numbers for object ids, so that the package can key its proxies
/// by them. A handle lives until the package releases it.
#[derive(Default)]
struct Handles {
    ids: Vec<Option<ObjectId>>,
    by_id: HashMap<ObjectId, u32, IdKeys>,
    free: Vec<u32>,
}

impl Handles {
    fn of(&mut self, id: ObjectId) -> u32 {
        if let Some(&h) = self.by_id.get(&id) {
            return h;
        }
        let h = match self.free.pop() {
            Some(h) => {
                self.ids[h as usize] = Some(id);
                h
            }
            None => {
                self.ids.push(Some(id));
                (self.ids.len() - 1) as u32
            }
        };
        self.by_id.insert(id, h);
        h
    }

    fn get(&self, h: u32) -> Option<ObjectId> {
        self.ids.get(h as usize).copied().flatten()
    }

    fn release(&mut self, h: u32) {
        if let Some(id) = self.ids.get_mut(h as usize).and_then(Option::take) {
            self.by_id.remove(&id);
            self.free.push(h);
        }
    }

    /// Renames every object after the replica took a new incarnation.
    fn rename(&mut self, s: &facsimile_core::Succession) {
        self.by_id.clear();
        for (h, id) in self.ids.iter_mut().enumerate() {
            if let Some(id) = id {
                *id = id.after(s);
                self.by_id.insert(*id, h as u32);
            }
        }
    }
}

/// A JavaScript `Error` with the engine's `code`, marked as the engine's
/// by a hidden `Symbol.for('facsimile.engine')`: the package tells these
/// refusals, which change nothing, from anything else an engine call may
/// throw (a trap), which leaves the engine unusable.
fn error(code: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    let _ = Reflect::set(&e, &"code".into(), &code.into());
    let mark = js_sys::Object::new();
    let _ = Reflect::set(&mark, &"value".into(), &JsValue::TRUE);
    js_sys::Object::define_property(&e, &js_sys::Symbol::for_("facsimile.engine").into(), &mark);
    e.into()
}

/// The original's messages, where it had one, and a code for each refusal.
fn write_error(e: Error) -> JsValue {
    match e {
        Error::NotOwner(_) => error("NOT_OWNER", "Object is not owned by current host"),
        Error::Locked(_) => error("LOCKED", "Object is locked"),
        Error::NotLocked(_) => error("NOT_LOCKED", "Object is not locked"),
        Error::Syncing => error("SYNCING", &e.to_string()),
        Error::UnknownObject(_) => error("UNKNOWN_OBJECT", &e.to_string()),
        Error::Detached(_) => error("DETACHED", &e.to_string()),
        Error::IndexOutOfBounds { .. } => error("OUT_OF_BOUNDS", &e.to_string()),
        Error::WrongKind { .. } => error("WRONG_KIND", &e.to_string()),
        Error::Evicted => error("EVICTED", &e.to_string()),
        Error::Observer => error("READ_ONLY", &e.to_string()),
        // As a node that was closed (`close()` says goodbye).
        Error::Left => error("CLOSED", &e.to_string()),
        Error::TooLarge { .. } => error("TOO_LARGE", &e.to_string()),
        // The order was computed from the array as it was; it changed since.
        Error::BadPermutation { .. } => error(
            "MODIFIED",
            "the array changed while its new order was computed; it was not reordered",
        ),
        e => error("REFUSED", &e.to_string()),
    }
}

fn receive_error(e: ReceiveError) -> JsValue {
    let code = match e {
        ReceiveError::TooLarge { .. } => "TOO_LARGE",
        ReceiveError::Empty => "EMPTY",
        ReceiveError::UnsupportedVersion(_) => "UNSUPPORTED_VERSION",
        ReceiveError::Malformed(_) => "MALFORMED",
        ReceiveError::Invalid { .. } => "INVALID",
        ReceiveError::TagCollision(_) => "TAG_COLLISION",
        ReceiveError::BacklogFull(_) => "BACKLOG_FULL",
        _ => "REFUSED",
    };
    error(code, &e.to_string())
}

fn unknown(h: u32) -> JsValue {
    error("UNKNOWN_OBJECT", &format!("no object has handle {h} here"))
}

/// A positive span of milliseconds (`None` for 0, negative, NaN or too
/// long).
fn millis(ms: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(ms / 1000.0)
        .ok()
        .filter(|d| !d.is_zero())
}

fn bad_input(what: &str) -> JsValue {
    error("BAD_VALUE", what)
}

/// A JavaScript number as the engine stores it: an integer when it is
/// integral and within 2^53 (but not -0), else a float.
fn number(f: f64) -> Value {
    match f.fract() == 0.0 && f.abs() <= MAX_SAFE as f64 && !(f == 0.0 && f.is_sign_negative()) {
        true => Value::Int(f as i64),
        false => Value::Float(f),
    }
}

/// Whether `new`, a JavaScript number as [`number`] stores it, is the
/// value of `old`, a stored number of the other representation (the
/// replica compares those of one representation itself). `-0` is not `0`:
/// JavaScript tells them apart.
fn same_number(new: &Value, old: &Value) -> bool {
    /// 2^63: the integral floats below it and from -2^63 up are `i64`s.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    match (new, old) {
        // Exact: `i` is within 2^53, and the bits tell -0 from 0.
        (Value::Int(i), Value::Float(g)) => (*i as f64).to_bits() == g.to_bits(),
        // A float integral and beyond 2^53 (within it, it would be an
        // integer, unless it is -0, which is not the integer 0), exactly
        // `j`.
        (Value::Float(f), Value::Int(j)) => {
            f.fract() == 0.0 && (-TWO_63..TWO_63).contains(f) && *f as i64 == *j && *f != 0.0
        }
        _ => false,
    }
}

#[wasm_bindgen]
impl Engine {
    /// A replica for `hostname` with the random `incarnation` the package
    /// drew; messages in JSON (`json`) or the compact binary form. The
    /// settings a program may choose: how many of its own messages it keeps
    /// to resend (`resend_log`, the default of 4,096 when absent; 0 keeps
    /// none), and failure detection: a heartbeat after `heartbeat_ms`
    /// without sending, and eviction of a member silent for `timeout_ms`
    /// (0: off, the default), the largest message peers accept
    /// (`max_message`, the default of 64 MiB when absent), and whether the
    /// node only observes (`observer`: its peers do not wait for it, and
    /// it refuses its own writes).
    #[allow(clippy::too_many_arguments)]
    #[wasm_bindgen(constructor)]
    pub fn new(
        hostname: &str,
        incarnation: u32,
        json: bool,
        resend_log: Option<u32>,
        heartbeat_ms: f64,
        timeout_ms: f64,
        max_message: Option<f64>,
        observer: bool,
    ) -> Engine {
        let format = if json {
            WireFormat::Json
        } else {
            WireFormat::Binary
        };
        let mut config = Config::default().wire_format(format);
        if let Some(keep) = resend_log {
            config = config.resend_log(keep as usize);
        }
        if let Some(bytes) = max_message {
            // A JavaScript number: saturates past usize::MAX.
            config = config.max_message_size(bytes as usize);
        }
        if let (Some(heartbeat), Some(timeout)) = (millis(heartbeat_ms), millis(timeout_ms)) {
            config = config.failure_detection(heartbeat, timeout);
        }
        if observer {
            config = config.observer();
        }
        let mut replica = Replica::new(PeerId::new(hostname, incarnation), config);
        // Change events are recorded once somebody listens.
        replica.record_changes(false);
        Engine {
            replica,
            handles: Handles::default(),
            last_to: None,
            deadline: None,
        }
    }

    /// Records change events or not (the package turns it on while a
    /// change listener exists).
    pub fn record_changes(&mut self, on: bool) {
        self.replica.record_changes(on);
    }

    /// The largest message this replica accepts, and its writes may make,
    /// in bytes (`max_message`, or the default): the package refuses what
    /// cannot fit before it copies it into the module's memory.
    pub fn max_message(&self) -> f64 {
        // A usize of wasm32: exact as a number.
        self.replica.config().message_size_limit() as f64
    }

    /// This replica's incarnation (its tag on the wire).
    pub fn incarnation(&self) -> u32 {
        self.replica.peer_id().incarnation()
    }

    /// Whether the document is complete (no sync in progress).
    pub fn is_ready(&self) -> bool {
        self.replica.is_ready()
    }

    // ------------------------------------------------------------ transport

    /// The next message to send: a string (JSON) or a `Uint8Array`, or
    /// `undefined` when none waits. [`Engine::transmit_to`] then tells its
    /// recipient.
    ///
    /// A JSON message too long for a JavaScript string (a sync answer: the
    /// package keeps a JSON node's writes within one) comes as its UTF-8
    /// bytes, which `receive` takes as well.
    pub fn poll_transmit(&mut self) -> JsValue {
        let Some(t) = self.replica.poll_transmit() else {
            return JsValue::UNDEFINED;
        };
        self.last_to = t.to;
        // A UTF-8 text has at most as many UTF-16 code units as bytes.
        if t.bytes.first() == Some(&b'{') && t.bytes.len() <= MAX_JS_STRING {
            // The JSON form is UTF-8 by construction.
            JsValue::from_str(&String::from_utf8_lossy(&t.bytes))
        } else {
            Uint8Array::from(&t.bytes[..]).into()
        }
    }

    /// The recipient's incarnation of the message last polled, when it is
    /// for one node only (delivering it to others is harmless).
    pub fn transmit_to(&self) -> Option<u32> {
        self.last_to
    }

    /// What waits for the package, as bits: 1 a message
    /// ([`Engine::poll_transmit`]), 2 an event ([`Engine::poll_event`]), 4 a
    /// timer deadline other than the one [`Engine::poll_timeout`] last
    /// returned. One call after each input tells the pump all it must do.
    pub fn pending(&self) -> u32 {
        u32::from(self.replica.has_transmits())
            | u32::from(self.replica.has_events()) << 1
            | u32::from(self.replica.poll_timeout() != self.deadline) << 2
    }

    /// Applies a message from another node in the JSON form.
    ///
    /// # Errors
    /// An `Error` with a `code` (`MALFORMED`, `INVALID`, ...) when the
    /// message is refused; the replica is unchanged.
    pub fn receive_text(&mut self, message: &str) -> Result<(), JsValue> {
        self.replica
            .handle_message(message.as_bytes())
            .map_err(receive_error)
    }

    /// Applies a message from another node in the binary form.
    ///
    /// # Errors
    /// As [`Engine::receive_text`].
    pub fn receive_bytes(&mut self, message: &[u8]) -> Result<(), JsValue> {
        self.replica.handle_message(message).map_err(receive_error)
    }

    /// Runs the timers due at `now_ms` (the caller's monotonic clock).
    pub fn handle_timeout(&mut self, now_ms: f64) {
        // Time before the start is the start; past what a Duration holds,
        // nothing runs (a JavaScript clock never gets there).
        if let Ok(now) = Duration::try_from_secs_f64(now_ms.max(0.0) / 1000.0) {
            self.replica.handle_timeout(now);
        }
    }

    /// When [`Engine::handle_timeout`] is next due, in milliseconds.
    pub fn poll_timeout(&mut self) -> Option<f64> {
        self.deadline = self.replica.poll_timeout();
        self.deadline.map(|d| d.as_secs_f64() * 1000.0)
    }

    /// The next event, as an object with a `type` (`change`, `root`,
    /// `ready`, `lock`, `needs_sync`, `evicted`, `joined`, `left`) and its
    /// fields, or `undefined`.
    pub fn poll_event(&mut self) -> JsValue {
        loop {
            let Some(e) = self.replica.poll_event() else {
                return JsValue::UNDEFINED;
            };
            if let Some(v) = self.event(e) {
                return v;
            }
        }
    }

    // ---------------------------------------------------------------- reads

    /// The root value.
    pub fn root(&mut self) -> JsValue {
        let root = self.replica.root();
        self.value(&root)
    }

    /// The kind of the object `h`: 1 a map, 2 an array, 0 gone.
    pub fn kind(&self, h: u32) -> u8 {
        match self.handles.get(h).and_then(|id| self.replica.kind(id)) {
            Some(ObjectKind::Map) => KIND_MAP,
            Some(ObjectKind::Array) => KIND_ARRAY,
            None => 0,
        }
    }

    /// The value of a map key (`undefined` when absent).
    pub fn map_get(&mut self, h: u32, key: &str) -> JsValue {
        let Some(id) = self.handles.get(h) else {
            return JsValue::UNDEFINED;
        };
        match self.replica.map_get(id, key) {
            Ok(Some(v)) => self.value(&v),
            _ => JsValue::UNDEFINED,
        }
    }

    /// Whether a map has a key.
    pub fn map_has(&self, h: u32, key: &str) -> bool {
        self.handles
            .get(h)
            .is_some_and(|id| matches!(self.replica.map_get(id, key), Ok(Some(_))))
    }

    /// The keys and values of a map, in key order (the same on every
    /// node), packed: `[k0, v0, k1, v1, ...]` as JSON text (see the crate
    /// docs); `[]` when the map is gone.
    pub fn map_packed(&mut self, h: u32) -> String {
        let mut out = String::from("[");
        if let Some(id) = self.handles.get(h) {
            let Engine {
                replica, handles, ..
            } = self;
            let _ = replica.map_for_each(id, |k, v, r| {
                if out.len() > 1 {
                    out.push(',');
                }
                pack_str(&mut out, k);
                out.push(',');
                pack_value(&mut out, v, r, handles);
            });
        }
        out.push(']');
        out
    }

    /// The number of keys of a map (0 when gone).
    pub fn map_len(&self, h: u32) -> u32 {
        self.handles
            .get(h)
            .and_then(|id| self.replica.map_len(id).ok())
            .map_or(0, |n| n as u32)
    }

    /// The length of an array (0 when gone).
    pub fn list_len(&self, h: u32) -> u32 {
        self.handles
            .get(h)
            .and_then(|id| self.replica.list_len(id).ok())
            .map_or(0, |n| n as u32)
    }

    /// The element at `index` (`undefined` past the end).
    pub fn list_get(&mut self, h: u32, index: u32) -> JsValue {
        let Some(id) = self.handles.get(h) else {
            return JsValue::UNDEFINED;
        };
        match self.replica.list_get(id, index as usize) {
            Ok(Some(v)) => self.value(&v),
            _ => JsValue::UNDEFINED,
        }
    }

    /// Every element of an array, in order, packed as JSON text (see the
    /// crate docs); `[]` when the array is gone.
    pub fn list_packed(&mut self, h: u32) -> String {
        let mut out = String::from("[");
        if let Some(id) = self.handles.get(h) {
            let Engine {
                replica, handles, ..
            } = self;
            let _ = replica.list_for_each(id, |v, r| {
                if out.len() > 1 {
                    out.push(',');
                }
                pack_value(&mut out, v, r, handles);
            });
        }
        out.push(']');
        out
    }

    /// The object `h` and everything below it as JSON text, by the rules of
    /// JavaScript's `JSON.stringify` (what the proxies' `toJSON` returns,
    /// parsed): shared objects are written where each reference is, NaN and
    /// infinities are `null`, bytes are objects keyed by index.
    ///
    /// # Errors
    /// `CYCLE` when an object contains itself, `BIGINT` for an integer
    /// beyond 2^53 (`JSON.stringify` refuses both), `UNKNOWN_OBJECT`.
    pub fn to_json(&mut self, h: u32) -> Result<String, JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        let mut out = String::new();
        json_tree(&mut self.replica, id, &mut out)?;
        Ok(out)
    }

    /// The canonical encoding of the document (identical on every node that
    /// received the same messages).
    pub fn snapshot(&mut self) -> Vec<u8> {
        self.replica.snapshot()
    }

    // --------------------------------------------------------------- writes

    /// Groups the writes until the matching [`Engine::commit`] into one
    /// message.
    pub fn begin(&mut self) {
        self.replica.begin();
    }

    /// Ends a group opened by [`Engine::begin`].
    pub fn commit(&mut self) {
        self.replica.commit();
    }

    /// Replaces the root with an input.
    ///
    /// # Errors
    /// An `Error` with a `code` when the engine refuses the write.
    pub fn set_root(&mut self, input: &JsValue) -> Result<(), JsValue> {
        let input = self.input(input)?;
        self.replica
            .set_root(input)
            .map(|_| ())
            .map_err(write_error)
    }

    /// Sets a map key. Returns whether anything changed.
    ///
    /// # Errors
    /// As [`Engine::set_root`].
    pub fn map_set(&mut self, h: u32, key: &str, input: &JsValue) -> Result<bool, JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        let input = self.input_over(input, |r| r.map_get(id, key))?;
        self.replica.map_set(id, key, input).map_err(write_error)
    }

    /// Sets several keys as one change: `entries` is `[k0, v0, k1, v1,
    /// ...]`. Returns how many changed.
    ///
    /// # Errors
    /// As [`Engine::set_root`]; a refusal writes nothing.
    pub fn map_assign(&mut self, h: u32, entries: &Array) -> Result<u32, JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        let mut pairs = Vec::with_capacity(entries.length() as usize / 2);
        for i in (0..entries.length()).step_by(2) {
            let key = entries
                .get(i)
                .as_string()
                .ok_or_else(|| bad_input("a key is a string"))?;
            let input = self.input_over(&entries.get(i + 1), |r| r.map_get(id, &key))?;
            pairs.push((SmolStr::from(key), input));
        }
        self.replica
            .map_set_many(id, pairs)
            .map(|n| n as u32)
            .map_err(write_error)
    }

    /// Deletes a map key. Returns whether it was there.
    ///
    /// # Errors
    /// As [`Engine::set_root`].
    pub fn map_delete(&mut self, h: u32, key: &str) -> Result<bool, JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        self.replica
            .map_delete(id, key)
            .map(|old| old.is_some())
            .map_err(write_error)
    }

    /// Removes `delete` elements from `start` and inserts `items` there (as
    /// `Array.prototype.splice`). Returns the removed values.
    ///
    /// `len`, when given, is the length `start` and `delete` were computed
    /// from (`start + delete <= len`): the splice then does what a plain
    /// array's does when converting its arguments changed the array, see
    /// the `array` module.
    ///
    /// # Errors
    /// As [`Engine::set_root`]; a refusal writes nothing.
    pub fn list_splice(
        &mut self,
        h: u32,
        start: u32,
        delete: u32,
        items: &Array,
        len: Option<u32>,
    ) -> Result<Array, JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        let items = (0..items.length())
            .map(|i| self.input(&items.get(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let (start, delete) = (start as usize, delete as usize);
        let r = &mut self.replica;
        let removed = match len {
            Some(len) => array::splice(r, id, len as usize, start, delete, items),
            None => r.list_splice(id, start, delete, items),
        }
        .map_err(write_error)?;
        let out = Array::new();
        for v in &removed {
            out.push(&self.value(v));
        }
        Ok(out)
    }

    /// Appends one value (the common case of `push`, without arrays).
    ///
    /// # Errors
    /// As [`Engine::set_root`].
    pub fn list_push(&mut self, h: u32, input: &JsValue) -> Result<u32, JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        let input = self.input(input)?;
        let len = self.replica.list_len(id).map_err(write_error)?;
        self.replica
            .list_splice(id, len, 0, [input])
            .map_err(write_error)?;
        Ok(len as u32 + 1)
    }

    /// Sets the element at `index` (at the length it appends; past it, pads
    /// with `null`). Returns whether anything changed.
    ///
    /// # Errors
    /// As [`Engine::set_root`].
    pub fn list_set(&mut self, h: u32, index: u32, input: &JsValue) -> Result<bool, JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        let input = self.input_over(input, |r| r.list_get(id, index as usize))?;
        self.replica
            .list_set(id, index as usize, input)
            .map_err(write_error)
    }

    /// Copies `count` elements from `from` to `to` (`copyWithin`, its
    /// arguments converted): over the array as it is now, as a plain
    /// array's copyWithin does (see the `array` module). One change, one
    /// message, all or nothing.
    ///
    /// # Errors
    /// As [`Engine::set_root`].
    pub fn list_copy_within(
        &mut self,
        h: u32,
        to: u32,
        from: u32,
        count: u32,
    ) -> Result<(), JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        let (to, from, count) = (to as usize, from as usize, count as usize);
        array::copy_within(&mut self.replica, id, to, from, count).map_err(write_error)
    }

    /// Fills `from..to` of an array with one input (`fill`): a new object
    /// is created once, at `from`, and referenced from the other indices.
    /// Indices past the end extend the array, as a plain array's fill does
    /// (see the `array` module). One change, one message, all or nothing.
    ///
    /// # Errors
    /// As [`Engine::set_root`].
    pub fn list_fill(
        &mut self,
        h: u32,
        from: u32,
        to: u32,
        input: &JsValue,
    ) -> Result<(), JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        let input = self.input(input)?;
        let (from, to) = (from as usize, to as usize);
        array::fill(&mut self.replica, id, from, to, input).map_err(write_error)
    }

    /// A number that changes whenever the array changes: `sort` refuses
    /// an order its comparator computed while changing the array.
    ///
    /// # Errors
    /// `UNKNOWN_OBJECT`, `WRONG_KIND`.
    pub fn list_version(&self, h: u32) -> Result<f64, JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        let version = self.replica.list_version(id).map_err(write_error)?;
        // A count of changes: far below 2^53.
        Ok(version as f64)
    }

    /// Reorders an array: afterwards the element at `i` is the one that was
    /// at `order[i]` (`reverse`, `sort`). Returns whether the order changed.
    ///
    /// # Errors
    /// As [`Engine::set_root`].
    pub fn list_reorder(&mut self, h: u32, order: &[u32]) -> Result<bool, JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        let order: Vec<usize> = order.iter().map(|&i| i as usize).collect();
        self.replica.list_reorder(id, &order).map_err(write_error)
    }

    // ---------------------------------------------------------------- locks

    /// Asks for the lock on `h`; with `wait` false, fails at once when
    /// another node holds or waits for it. Returns the fencing token when
    /// granted at once, else 0 (the grant comes as a `lock` event).
    ///
    /// # Errors
    /// `LOCKED`, `UNKNOWN_OBJECT`, `SYNCING`, `EVICTED`.
    pub fn lock(&mut self, h: u32, wait: bool) -> Result<f64, JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        match self.replica.lock(id, wait).map_err(write_error)? {
            LockState::Held(token) => Ok(token as f64),
            _ => Ok(0.0),
        }
    }

    /// This node's lock on `h`: the token when held, 0 when waiting, -1
    /// with no request, -2 when a fail-fast request was refused.
    pub fn lock_state(&self, h: u32) -> f64 {
        match self.handles.get(h).map(|id| self.replica.lock_state(id)) {
            Some(LockState::Held(token)) => token as f64,
            Some(LockState::Waiting) => 0.0,
            Some(LockState::Refused) => -2.0,
            Some(LockState::None) | None => -1.0,
        }
    }

    /// Whether another node holds or heads the queue of `h`'s lock.
    pub fn locked_elsewhere(&self, h: u32) -> bool {
        self.handles
            .get(h)
            .is_some_and(|id| self.replica.check_writable(id).is_err())
    }

    /// Releases this node's lock on `h`; a request still waiting stays.
    ///
    /// # Errors
    /// `NOT_LOCKED` when nobody holds it, `NOT_OWNER` when another node
    /// does; the request is unchanged.
    pub fn release_lock(&mut self, h: u32) -> Result<(), JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        self.replica.release(id).map_err(write_error)
    }

    /// Releases this node's lock on `h`, or withdraws its request still
    /// waiting (an aborted `lock`).
    ///
    /// # Errors
    /// `NOT_LOCKED` when nobody holds it, `NOT_OWNER` when another node
    /// does.
    pub fn unlock(&mut self, h: u32) -> Result<(), JsValue> {
        let id = self.handles.get(h).ok_or_else(|| unknown(h))?;
        self.replica.unlock(id).map_err(write_error)
    }

    // ---------------------------------------------------- joining, leaving

    /// Drops the document and asks the network for it.
    pub fn sync(&mut self) {
        self.replica.sync();
    }

    /// Says whether this node's messages reach anybody now: while they do
    /// not, its writes are gathered into packed messages, sent when it is
    /// online again.
    pub fn set_online(&mut self, online: bool) {
        self.replica.set_online(online);
    }

    /// Limits the messages this node's writes make to `bytes`, or to its
    /// `maxMessage` if that is less (a relay's frame limit, from its
    /// welcome).
    pub fn limit_sent_messages(&mut self, bytes: f64) {
        // A JavaScript number: saturates past usize::MAX.
        self.replica.limit_sent_messages(bytes as usize);
    }

    /// Sends the writes held while offline now, and goes on holding.
    pub fn send_held(&mut self) {
        self.replica.send_held();
    }

    /// Says goodbye: the other nodes stop waiting for this one and its locks
    /// are freed.
    pub fn leave(&mut self) {
        self.replica.leave();
    }

    /// Declares the members of `hostname` gone (only the incarnation
    /// `incarnation`, when given), as a transport does when it finds a
    /// peer's connection lost for good: every node frees their locks and
    /// stops waiting for them. Returns how many members that was.
    pub fn evict(&mut self, hostname: &str, incarnation: Option<u32>) -> u32 {
        self.replica.evict_host(hostname, incarnation) as u32
    }

    /// Starts over as the new incarnation `incarnation` (after the peers
    /// evicted this node), then syncs. Handles keep naming their objects.
    pub fn reincarnate(&mut self, incarnation: u32) {
        let s = self.replica.reincarnate(incarnation);
        self.handles.rename(&s);
    }

    /// Forgets the handle `h` (the package dropped its proxy).
    pub fn release(&mut self, h: u32) {
        self.handles.release(h);
    }

    /// Handles in use, for the package's memory tests.
    pub fn handle_count(&self) -> u32 {
        self.handles.by_id.len() as u32
    }

    /// Objects the engine holds (reachable ones, and unreachable ones until
    /// they are reclaimed), for the package's memory tests.
    pub fn object_count(&self) -> u32 {
        self.replica.object_count() as u32
    }

    // ------------------------------------------------------------ inspection

    /// The members with when each was last heard from, on this engine's
    /// clock (the `now` of `handle_timeout`, in milliseconds; `null` before
    /// the first check), how many of its broadcast messages this engine
    /// applied, and how many it holds ahead of a gap: `[{hostname,
    /// incarnation, lastHeard, applied, held}]`.
    pub fn peers(&self) -> JsValue {
        let out = Array::new();
        for p in self.replica.peers() {
            let o = js_sys::Object::new();
            let _ = Reflect::set(&o, &"hostname".into(), &p.peer.hostname().into());
            let _ = Reflect::set(&o, &"incarnation".into(), &p.peer.incarnation().into());
            let heard = p.last_heard.map_or(JsValue::NULL, |d| {
                JsValue::from_f64(d.as_secs_f64() * 1000.0)
            });
            let _ = Reflect::set(&o, &"lastHeard".into(), &heard);
            let applied = JsValue::from_f64(p.applied as f64);
            let _ = Reflect::set(&o, &"applied".into(), &applied);
            let _ = Reflect::set(&o, &"held".into(), &JsValue::from_f64(p.held as f64));
            out.push(&o);
        }
        out.into()
    }

    /// Every lock queue known here: `[{target: [kind, handle], queue:
    /// [{hostname, incarnation, token}], lastToken}]`, the queue's head
    /// first (it holds the lock, or is next to); `token` is `null` while
    /// its grant is not known here.
    pub fn locks(&mut self) -> JsValue {
        let out = Array::new();
        for e in self.replica.lock_table() {
            let o = js_sys::Object::new();
            let _ = Reflect::set(&o, &"target".into(), &self.object(e.object));
            let queue = Array::new();
            for (peer, token) in &e.queue {
                let r = js_sys::Object::new();
                let _ = Reflect::set(&r, &"hostname".into(), &peer.hostname().into());
                let _ = Reflect::set(&r, &"incarnation".into(), &peer.incarnation().into());
                let t = token.map_or(JsValue::NULL, |t| JsValue::from_f64(t as f64));
                let _ = Reflect::set(&r, &"token".into(), &t);
                queue.push(&r);
            }
            let _ = Reflect::set(&o, &"queue".into(), &queue);
            let _ = Reflect::set(
                &o,
                &"lastToken".into(),
                &JsValue::from_f64(e.last_token as f64),
            );
            out.push(&o);
        }
        out.into()
    }

    /// The place of each object in `wanted` (handles): its first on a
    /// breadth-first walk from the root, map keys in order, so the
    /// shortest path, the same on every node; `null` when the root does not
    /// reach it. JSON text: an array of pointers.
    pub fn places_of(&mut self, wanted: Vec<u32>) -> String {
        let first: HashMap<ObjectId, String, IdKeys> =
            first_places(&mut self.replica).into_iter().collect();
        let mut out = String::new();
        self.pack_places(&mut out, &first, &wanted);
        out
    }

    /// The inspector's tree: the rows of the document with the objects at
    /// `expanded` (pointers) open, and those less than `open_depth` deep,
    /// depth first, each object only at its first place (see `places`;
    /// elsewhere a row links to it). JSON text: `{"objects": n, "rows":
    /// [[depth, label, pointer, type, text, extra]], "places": [...]}`,
    /// `label` a key, an index or `null` (the root), `type` one of `map`
    /// and `array` (`text` its size, `extra` whether it is open), `link`
    /// (`extra` the object's place), `str`, `num` or `lit` (`text` the
    /// value shown); `places` has the place of each handle in `wanted`
    /// (`null` when the root does not reach it).
    ///
    /// Done here rather than through proxies: a walk of 100,000 objects
    /// would make 100,000 of them.
    pub fn tree(&mut self, expanded: Vec<String>, open_depth: u32, wanted: Vec<u32>) -> String {
        use std::fmt::Write;
        let order = first_places(&mut self.replica);
        let objects = order.len();
        let first: HashMap<ObjectId, String, IdKeys> = order.into_iter().collect();
        let expanded: rustc_hash::FxHashSet<String> = expanded.into_iter().collect();
        let mut out = String::new();
        let _ = write!(out, "{{\"objects\":{objects},\"rows\":[");
        let mut rows = 0usize;
        // Rows still to emit, the next on top.
        let mut stack: Vec<(Value, String, u32, Label)> =
            vec![(self.replica.root(), String::new(), 0, Label::Root)];
        let mut children: Vec<(Label, Value)> = Vec::new();
        while let Some((value, path, depth, label)) = stack.pop() {
            if rows > 0 {
                out.push(',');
            }
            rows += 1;
            let _ = write!(out, "[{depth},");
            match &label {
                Label::Root => out.push_str("null"),
                Label::Key(k) => pack_str(&mut out, k),
                Label::Index(i) => {
                    let _ = write!(out, "{i}");
                }
            }
            out.push(',');
            pack_str(&mut out, &path);
            let Value::Ref(o) = value else {
                let (kind, text) = shown(&value);
                let _ = write!(out, ",\"{kind}\",");
                pack_str(&mut out, &text);
                out.push_str(",null]");
                continue;
            };
            match first.get(&o) {
                Some(place) if *place == path => {}
                place => {
                    out.push_str(",\"link\",\"\",");
                    match place {
                        Some(p) => pack_str(&mut out, p),
                        None => out.push_str("null"),
                    }
                    out.push(']');
                    continue;
                }
            }
            children.clear();
            let kind = match self.replica.kind(o) {
                Some(ObjectKind::Array) => {
                    let mut i = 0u32;
                    let _ = self.replica.list_for_each(o, |v, _| {
                        children.push((Label::Index(i), v.clone()));
                        i += 1;
                    });
                    "array"
                }
                _ => {
                    let _ = self.replica.map_for_each(o, |k, v, _| {
                        children.push((Label::Key(k.clone()), v.clone()));
                    });
                    "map"
                }
            };
            let open = depth < open_depth || expanded.contains(&path);
            let _ = write!(out, ",\"{kind}\",\"{}\",{open}]", children.len());
            if open {
                for (label, v) in children.drain(..).rev() {
                    let seg = match &label {
                        Label::Key(k) => pointer_segment(k),
                        Label::Index(i) => i.to_string(),
                        Label::Root => String::new(),
                    };
                    stack.push((v, format!("{path}/{seg}"), depth + 1, label));
                }
            }
        }
        out.push_str("],\"places\":");
        self.pack_places(&mut out, &first, &wanted);
        out.push('}');
        out
    }
}

/// Seeds the engine's hash keys when the module is loaded: the standard
/// library has no random source here, so its keys would be the same in
/// every run and a peer could pick ids or keys that share a bucket.
#[wasm_bindgen(start)]
fn seed_hash_keys() {
    let mut seed = [0u8; 16];
    if !crypto_random(&mut seed) {
        // No Web Crypto (a bare runtime): Math.random, which engines seed
        // from the system, 32 bits a call.
        for chunk in seed.chunks_mut(4) {
            let word = (js_sys::Math::random() * 4_294_967_296.0) as u32;
            chunk.copy_from_slice(&word.to_le_bytes());
        }
    }
    facsimile_core::seed_hash_keys(seed);
}

/// Fills `buf` from `globalThis.crypto.getRandomValues` (browsers, Node.js
/// 19 and later); `false` where there is none.
fn crypto_random(buf: &mut [u8]) -> bool {
    let Ok(crypto) = Reflect::get(&js_sys::global(), &"crypto".into()) else {
        return false;
    };
    let Ok(fill) = Reflect::get(&crypto, &"getRandomValues".into()) else {
        return false;
    };
    let Some(fill) = fill.dyn_ref::<js_sys::Function>() else {
        return false;
    };
    let array = Uint8Array::new_with_length(buf.len() as u32);
    if fill.call1(&crypto, &array).is_err() {
        return false;
    }
    array.copy_to(buf);
    true
}

/// A digest of the engine's hash keys, which differs from run to run: for
/// the package's tests.
#[wasm_bindgen]
#[doc(hidden)]
pub fn hash_keys_fingerprint() -> u32 {
    facsimile_core::hash_keys_fingerprint()
}

/// The module's linear memory (a `WebAssembly.Memory`), shared by every
/// engine of the instance: for the package's memory tests.
#[wasm_bindgen]
pub fn linear_memory() -> JsValue {
    wasm_bindgen::memory()
}

/// An object being written by [`json_tree`]: its entries are
/// `arena[start..end]` (keys empty for an array), `at` the next to write.
/// Frames nest, so each one's entries sit above its parent's and go when it
/// is done: one allocation for the whole tree, not one per object.
struct JsonFrame {
    id: ObjectId,
    map: bool,
    start: usize,
    at: usize,
    end: usize,
}

/// Writes the tree below `root` as JSON text, without recursion (a deep
/// document must not overflow the stack).
fn json_tree(replica: &mut Replica, root: ObjectId, out: &mut String) -> Result<(), JsValue> {
    use std::fmt::Write;
    let mut stack: Vec<JsonFrame> = Vec::new();
    let mut arena: Vec<(SmolStr, Value)> = Vec::new();
    // The objects on the path from the root: meeting one again is a cycle.
    let mut path = HashSet::<ObjectId, IdKeys>::default();
    let mut next = Some(Value::Ref(root));
    loop {
        match next.take() {
            Some(Value::Ref(id)) => {
                if !path.insert(id) {
                    return Err(error("CYCLE", "Converting circular structure to JSON"));
                }
                let start = arena.len();
                let map = match replica.kind(id) {
                    Some(ObjectKind::Map) => {
                        out.push('{');
                        let _ =
                            replica.map_for_each(id, |k, v, _| arena.push((k.clone(), v.clone())));
                        true
                    }
                    Some(ObjectKind::Array) => {
                        out.push('[');
                        let _ = replica
                            .list_for_each(id, |v, _| arena.push((SmolStr::default(), v.clone())));
                        false
                    }
                    None => {
                        out.push_str("null");
                        path.remove(&id);
                        continue;
                    }
                };
                let end = arena.len();
                stack.push(JsonFrame {
                    id,
                    map,
                    start,
                    at: start,
                    end,
                });
            }
            Some(Value::Int(i)) if !(-MAX_SAFE..=MAX_SAFE).contains(&i) => {
                return Err(error("BIGINT", "Do not know how to serialize a BigInt"));
            }
            Some(Value::Float(f)) if !f.is_finite() => out.push_str("null"),
            Some(Value::Bytes(b)) => {
                out.push('{');
                for (i, byte) in b.iter().enumerate() {
                    let comma = if i > 0 { "," } else { "" };
                    let _ = write!(out, "{comma}\"{i}\":{byte}");
                }
                out.push('}');
            }
            Some(v) => pack_value(out, &v, replica, &mut Handles::default()),
            None => {}
        }
        let Some(top) = stack.last_mut() else {
            return Ok(());
        };
        if top.at < top.end {
            if top.at > top.start {
                out.push(',');
            }
            let (key, value) = &mut arena[top.at];
            if top.map {
                pack_str(out, key);
                out.push(':');
            }
            next = Some(std::mem::replace(value, Value::Null));
            top.at += 1;
        } else {
            out.push(if top.map { '}' } else { ']' });
            path.remove(&top.id);
            arena.truncate(top.start);
            stack.pop();
        }
    }
}

/// Appends an integer in decimal (`core::fmt` costs several times more,
/// and whole documents are mostly small integers).
fn push_int(out: &mut String, i: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = i.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if i < 0 {
        out.push('-');
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// What labels a row of the inspector's tree.
enum Label {
    Root,
    Key(SmolStr),
    Index(u32),
}

/// Each object the root reaches with its first place, breadth first with
/// map keys in order (the shortest path, the same on every node).
fn first_places(replica: &mut Replica) -> Vec<(ObjectId, String)> {
    let Value::Ref(root) = replica.root() else {
        return Vec::new();
    };
    let mut seen = HashSet::<_, IdKeys>::from_iter([root]);
    let mut order = vec![(root, String::new())];
    let mut next = 0;
    let mut children: Vec<(String, ObjectId)> = Vec::new();
    while next < order.len() {
        let o = order[next].0;
        children.clear();
        match replica.kind(o) {
            Some(ObjectKind::Map) => {
                let _ = replica.map_for_each(o, |k, v, _| {
                    if let Value::Ref(c) = v {
                        children.push((pointer_segment(k), *c));
                    }
                });
            }
            Some(ObjectKind::Array) => {
                let mut i = 0usize;
                let _ = replica.list_for_each(o, |v, _| {
                    if let Value::Ref(c) = v {
                        children.push((i.to_string(), *c));
                    }
                    i += 1;
                });
            }
            None => {}
        }
        for (seg, c) in children.drain(..) {
            if seen.insert(c) {
                let path = format!("{}/{seg}", order[next].1);
                order.push((c, path));
            }
        }
        next += 1;
    }
    order
}

/// A scalar as the inspector shows it: its class and its text (a long
/// string cut short).
fn shown(v: &Value) -> (&'static str, String) {
    match v {
        Value::Null => ("lit", "null".into()),
        Value::Bool(b) => ("lit", b.to_string()),
        Value::Int(i) if (-MAX_SAFE..=MAX_SAFE).contains(i) => ("num", i.to_string()),
        Value::Int(i) => ("num", format!("{i}n")),
        Value::Float(f) => ("num", f.to_string()),
        Value::Str(s) => {
            let mut text = String::new();
            match s.char_indices().nth(200) {
                Some((at, _)) => {
                    pack_str(&mut text, &s[..at]);
                    text.insert(text.len() - 1, '…');
                }
                None => pack_str(&mut text, s),
            }
            ("str", text)
        }
        Value::Bytes(b) => ("lit", format!("bytes({})", b.len())),
        Value::Ref(_) => ("lit", String::new()),
    }
}

/// A map key as a JSON pointer segment (RFC 6901).
fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Appends a string as a JSON string.
fn pack_str(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends a value in the packed form (see the crate docs).
fn pack_value(out: &mut String, v: &Value, replica: &Replica, handles: &mut Handles) {
    use std::fmt::Write;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(i) if (-MAX_SAFE..=MAX_SAFE).contains(i) => push_int(out, *i),
        Value::Int(i) => {
            let _ = write!(out, "{{\"i\":\"{i}\"}}");
        }
        // Debug is the shortest text that reads back as the same float, in
        // a form JSON accepts ("1.0", "-0.0", "1e300").
        Value::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Value::Float(f) if f.is_nan() => out.push_str("{\"f\":\"NaN\"}"),
        Value::Float(f) if *f > 0.0 => out.push_str("{\"f\":\"inf\"}"),
        Value::Float(_) => out.push_str("{\"f\":\"-inf\"}"),
        Value::Str(s) => pack_str(out, s),
        Value::Bytes(b) => {
            out.push_str("{\"b\":[");
            for (i, byte) in b.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_int(out, i64::from(*byte));
            }
            out.push_str("]}");
        }
        Value::Ref(id) => {
            let kind = match replica.kind(*id) {
                Some(ObjectKind::Array) => KIND_ARRAY,
                _ => KIND_MAP,
            };
            out.push('[');
            push_int(out, i64::from(kind));
            out.push(',');
            push_int(out, i64::from(handles.of(*id)));
            out.push(']');
        }
    }
}

impl Engine {
    /// The JavaScript form of a value.
    fn value(&mut self, v: &Value) -> JsValue {
        match v {
            Value::Null => JsValue::NULL,
            Value::Bool(b) => JsValue::from_bool(*b),
            Value::Int(i) if (-MAX_SAFE..=MAX_SAFE).contains(i) => JsValue::from_f64(*i as f64),
            Value::Int(i) => js_sys::BigInt::from(*i).into(),
            Value::Float(f) => JsValue::from_f64(*f),
            Value::Str(s) => JsValue::from_str(s),
            Value::Bytes(b) => Uint8Array::from(&b[..]).into(),
            Value::Ref(id) => self.object(*id),
        }
    }

    /// The places of the handles `wanted` as a JSON array (`null` for an
    /// object the root does not reach).
    fn pack_places(
        &self,
        out: &mut String,
        first: &HashMap<ObjectId, String, IdKeys>,
        wanted: &[u32],
    ) {
        out.push('[');
        for (i, h) in wanted.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match self.handles.get(*h).and_then(|id| first.get(&id)) {
                Some(p) => pack_str(out, p),
                None => out.push_str("null"),
            }
        }
        out.push(']');
    }

    /// `[kind, handle]` for an object.
    fn object(&mut self, id: ObjectId) -> JsValue {
        let kind = match self.replica.kind(id) {
            Some(ObjectKind::Array) => KIND_ARRAY,
            _ => KIND_MAP,
        };
        let h = self.handles.of(id);
        Array::of2(&JsValue::from(kind), &JsValue::from(h)).into()
    }

    /// An input from its JavaScript form (see the crate docs).
    fn input(&self, v: &JsValue) -> Result<Input, JsValue> {
        self.input_at(v, 0)
    }

    /// An input written over what `stored` reads (a map key, an element).
    ///
    /// JavaScript has one type of number, which the engine stores as an
    /// integer when it is integral and within 2^53: a number written over
    /// a stored number of the same value (to JavaScript) keeps the stored
    /// representation, so that `x = x` of a float 3.0 a Rust or Python
    /// peer wrote changes nothing (nothing sent, no event, still a float
    /// everywhere), nor does writing back, as a number, an integer beyond
    /// 2^53.
    fn input_over(
        &self,
        v: &JsValue,
        stored: impl FnOnce(&Replica) -> Result<Option<Value>, Error>,
    ) -> Result<Input, JsValue> {
        let Some(f) = v.as_f64() else {
            return self.input(v);
        };
        let new = number(f);
        // Only an integral number can have the other representation.
        if f.fract() == 0.0 {
            if let Ok(Some(old)) = stored(&self.replica) {
                if same_number(&new, &old) {
                    return Ok(Input::Value(old));
                }
            }
        }
        Ok(Input::Value(new))
    }

    /// An input `depth` levels below the written value.
    fn input_at(&self, v: &JsValue, depth: usize) -> Result<Input, JsValue> {
        // The common cases first: each test is a call into JavaScript.
        if let Some(f) = v.as_f64() {
            return Ok(Input::Value(number(f)));
        }
        if let Some(s) = v.as_string() {
            return Ok(Input::Value(Value::Str(s.into())));
        }
        if v.is_null() || v.is_undefined() {
            return Ok(Input::Value(Value::Null));
        }
        if let Some(b) = v.as_bool() {
            return Ok(Input::Value(Value::Bool(b)));
        }
        if v.is_bigint() {
            let i = i64::try_from(v.clone())
                .map_err(|_| bad_input("a BigInt beyond 64 bits cannot be stored"))?;
            return Ok(Input::Value(Value::Int(i)));
        }
        // Reading bytes reads their `length` as a property: the package
        // hands over only plain Uint8Arrays of its own (copies of the
        // program's), whose `length` is no code of the program's.
        if let Some(bytes) = v.dyn_ref::<Uint8Array>() {
            return Ok(Input::Value(Value::Bytes(bytes.to_vec().into())));
        }
        if !v.is_object() {
            return Err(bad_input("this value cannot be stored"));
        }
        if depth >= MAX_INPUT_DEPTH {
            return Err(error(
                "TOO_DEEP",
                &format!(
                    "a value nested more than {MAX_INPUT_DEPTH} levels deep cannot be written at once; write its inner objects first"
                ),
            ));
        }
        let field = |name: &str| Reflect::get(v, &JsValue::from_str(name)).unwrap_or_default();
        let r = field("r");
        if let Some(h) = r.as_f64() {
            let id = self
                .handles
                .get(h as u32)
                .ok_or_else(|| unknown(h as u32))?;
            return Ok(Input::Value(Value::Ref(id)));
        }
        let m = field("m");
        if let Some(m) = m.dyn_ref::<Array>() {
            let mut entries = Vec::with_capacity(m.length() as usize / 2);
            for i in (0..m.length()).step_by(2) {
                let key = m
                    .get(i)
                    .as_string()
                    .ok_or_else(|| bad_input("a key is a string"))?;
                entries.push((SmolStr::from(key), self.input_at(&m.get(i + 1), depth + 1)?));
            }
            return Ok(Input::Map(entries));
        }
        let a = field("a");
        if let Some(a) = a.dyn_ref::<Array>() {
            let items = (0..a.length())
                .map(|i| self.input_at(&a.get(i), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Input::Array(items));
        }
        Err(bad_input("this value cannot be stored"))
    }

    fn origin(o: &Origin) -> JsValue {
        match o {
            Origin::Local => JsValue::NULL,
            Origin::Remote(p) => JsValue::from_str(p.hostname()),
            _ => JsValue::UNDEFINED,
        }
    }

    /// The JavaScript form of an event (`None` for events the package
    /// does not see).
    fn event(&mut self, e: Event) -> Option<JsValue> {
        let o = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| {
            let _ = Reflect::set(&o, &JsValue::from_str(k), v);
        };
        match e {
            Event::Change(c) => {
                set("type", &"change".into());
                set("target", &self.object(c.object));
                set(
                    "prop",
                    &match &c.prop {
                        Some(Prop::Key(k)) => JsValue::from_str(k),
                        Some(Prop::Index(i)) => JsValue::from(*i as u32),
                        None => JsValue::UNDEFINED,
                    },
                );
                if let Some(v) = &c.new {
                    set("new", &self.value(v));
                }
                if let Some(v) = &c.old {
                    set("old", &self.value(v));
                }
                set("origin", &Self::origin(&c.origin));
            }
            Event::RootChanged { new, old, origin } => {
                set("type", &"root".into());
                set("new", &self.value(&new));
                set("old", &self.value(&old));
                set("origin", &Self::origin(&origin));
            }
            Event::Ready => set("type", &"ready".into()),
            Event::NeedsSync => set("type", &"needs_sync".into()),
            Event::Evicted => set("type", &"evicted".into()),
            Event::PeerJoined(p) => {
                set("type", &"joined".into());
                set("peer", &JsValue::from_str(p.hostname()));
            }
            Event::PeerLeft(p) => {
                set("type", &"left".into());
                set("peer", &JsValue::from_str(p.hostname()));
            }
            Event::Lock(l) => {
                set("type", &"lock".into());
                let (what, token) = match &l {
                    LockEvent::Granted { token, .. } => ("granted", Some(*token)),
                    LockEvent::Released { token, .. } => ("released", Some(*token)),
                    LockEvent::Lost { token, .. } => ("lost", Some(*token)),
                    LockEvent::Withdrawn { .. } => ("withdrawn", None),
                    LockEvent::Refused { .. } => ("refused", None),
                    _ => ("other", None),
                };
                set("what", &what.into());
                set("target", &self.object(l.object()));
                if let Some(t) = token {
                    set("token", &JsValue::from_f64(t as f64));
                }
            }
            _ => return None,
        }
        Some(o.into())
    }
}

#[cfg(test)]
mod tests {
    use facsimile_core::{Config, PeerId, Replica, Value};

    use super::{Handles, pack_str, pack_value};

    fn packed(v: &Value) -> serde_json::Value {
        let replica = Replica::new(PeerId::new("t", 1), Config::default());
        let mut out = String::new();
        pack_value(&mut out, v, &replica, &mut Handles::default());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"))
    }

    #[test]
    fn strings_pack_as_json_strings() {
        for s in [
            "",
            "plain",
            "quote \" and \\ back",
            "\n\r\t\u{1}\u{1f}",
            "é ✓ 𝄞",
            "\u{2028}",
        ] {
            let mut out = String::new();
            pack_str(&mut out, s);
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s, "{out}");
        }
    }

    #[test]
    fn values_pack_as_the_crate_docs_say() {
        use serde_json::json;
        assert_eq!(
            packed(&Value::Int(1 << 53)),
            json!({"i": (1u64 << 53).to_string()})
        );
        assert_eq!(
            packed(&Value::Int(-(1 << 53) + 1)),
            json!(-(1i64 << 53) + 1)
        );
        assert_eq!(packed(&Value::Float(f64::NAN)), json!({"f": "NaN"}));
        assert_eq!(
            packed(&Value::Float(f64::NEG_INFINITY)),
            json!({"f": "-inf"})
        );
        assert_eq!(
            packed(&Value::Bytes(vec![0, 255].into())),
            json!({"b": [0, 255]})
        );
        for f in [0.1, -0.0, 1e300, 5e-324, 1.0, 123456789012345680000.0, 1e-7] {
            let mut out = String::new();
            let replica = Replica::new(PeerId::new("t", 1), Config::default());
            pack_value(
                &mut out,
                &Value::Float(f),
                &replica,
                &mut Handles::default(),
            );
            let back: f64 = serde_json::from_str(&out).unwrap();
            assert_eq!(back.to_bits(), f.to_bits(), "{out}");
        }
        assert_eq!(packed(&Value::Str("x".into())), json!("x"));
        for i in [0, 7, -7, 10, 1 << 40, -(1 << 53) + 1, (1 << 53) - 1] {
            assert_eq!(packed(&Value::Int(i)), json!(i));
        }
        assert_eq!(packed(&Value::Null), json!(null));
        assert_eq!(packed(&Value::Bool(true)), json!(true));
    }
}
