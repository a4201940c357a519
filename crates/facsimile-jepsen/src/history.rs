//! Histories: each client process's operations, as invoked and as
//! completed, one JSON object per line.
//!
//! A process records an [`Event`] of kind [`Kind::Invoke`] before it starts
//! an operation and one completion after: [`Kind::Ok`] when the operation
//! took effect and was acknowledged (for a write: the relay or the stream
//! has it durably, `Connection::flush` returned), [`Kind::Fail`] when it
//! certainly did not take effect, [`Kind::Info`] when the outcome is unknown
//! (a timeout, a crash). A process runs one operation at a time, so its
//! events alternate invoke, completion. A process that crashes leaves its
//! last invocation without completion; the checkers treat that as `Info`.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

/// One step of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The client process (a fresh number for each process started, so a
    /// restarted client is a new process).
    pub process: u32,
    /// Invocation or completion.
    pub kind: Kind,
    /// The operation; a completion repeats its invocation's operation with
    /// what it observed filled in.
    pub op: Op,
    /// Nanoseconds on the machine's monotonic clock ([`now`]), which every
    /// process of a run shares.
    pub time: u64,
    /// On the `fail` completion of an `Acquire` or `Release`: why; of an
    /// `Increment`: [`LockFailure::Stale`] when the fenced storage refused
    /// its token; of a `DocIncrement`: why the node refused the write, or
    /// [`LockFailure::WritesLost`]. Absent otherwise, and in histories
    /// recorded before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<LockFailure>,
}

impl Event {
    /// An event without an error.
    pub fn new(process: u32, kind: Kind, op: Op, time: u64) -> Event {
        Event {
            process,
            kind,
            op,
            time,
            error: None,
        }
    }
}

/// Whether an event starts an operation or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The operation starts.
    Invoke,
    /// It took effect and was acknowledged.
    Ok,
    /// It certainly took no effect.
    Fail,
    /// Its outcome is unknown.
    Info,
}

/// Why a lock operation failed: the kind of [`facsimile::LockError`], or
/// that the node had no copy of the lock's object to lock, or (an
/// increment) that the fenced storage refused the holder's token, or (a
/// document increment) why the node refused the write or that its flush
/// reported it lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LockFailure {
    /// The node has no document yet (it is joining or starting over), or
    /// no `k[lock]` map in it.
    NoObject,
    /// [`facsimile::LockError::Locked`].
    Locked,
    /// [`facsimile::LockError::NotOwner`].
    NotOwner,
    /// [`facsimile::LockError::NotLocked`].
    NotLocked,
    /// [`facsimile::LockError::UnknownObject`].
    UnknownObject,
    /// [`facsimile::LockError::ForeignHandle`].
    ForeignHandle,
    /// [`facsimile::LockError::NoSender`].
    NoSender,
    /// [`facsimile::LockError::Syncing`].
    Syncing,
    /// [`facsimile::LockError::Evicted`].
    Evicted,
    /// [`facsimile::LockError::Lost`].
    Lost,
    /// [`facsimile::LockError::Engine`].
    Engine,
    /// A kind added to [`facsimile::LockError`] since.
    Other,
    /// The fenced storage refused an increment's token as stale: it had
    /// accepted a higher one, so the lock had passed on.
    Stale,
    /// A document increment's flush reported it lost
    /// ([`facsimile::net::NetError::WritesLost`]).
    WritesLost,
}

impl From<&facsimile::LockError> for LockFailure {
    fn from(e: &facsimile::LockError) -> Self {
        use facsimile::LockError as E;
        match e {
            E::Locked { .. } => LockFailure::Locked,
            E::NotOwner { .. } => LockFailure::NotOwner,
            E::NotLocked { .. } => LockFailure::NotLocked,
            E::UnknownObject(_) => LockFailure::UnknownObject,
            E::ForeignHandle => LockFailure::ForeignHandle,
            E::NoSender => LockFailure::NoSender,
            E::Syncing => LockFailure::Syncing,
            E::Evicted => LockFailure::Evicted,
            E::Lost { .. } => LockFailure::Lost,
            E::Engine(_) => LockFailure::Engine,
            _ => LockFailure::Other,
        }
    }
}

/// Why the node refused a write (a document increment's): the engine's
/// refusals that are a lock's by their lock kind, any other refusal as
/// [`LockFailure::Engine`].
impl From<&facsimile::Error> for LockFailure {
    fn from(e: &facsimile::Error) -> Self {
        use facsimile::EngineError as E;
        match e {
            facsimile::Error::NoSender => LockFailure::NoSender,
            facsimile::Error::ForeignHandle(_) => LockFailure::ForeignHandle,
            _ => match e.engine() {
                Some(E::NotOwner(_)) => LockFailure::NotOwner,
                Some(E::Locked(_)) => LockFailure::Locked,
                Some(E::NotLocked(_)) => LockFailure::NotLocked,
                Some(E::UnknownObject(_)) => LockFailure::UnknownObject,
                Some(E::Syncing) => LockFailure::Syncing,
                Some(E::Evicted) => LockFailure::Evicted,
                Some(_) => LockFailure::Engine,
                None => LockFailure::Other,
            },
        }
    }
}

/// An operation of one of the three workloads. Fields are named by what
/// they hold: `key`, `lock` and `counter` pick the register, list, lock or
/// counter; values and elements are unique within a run.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// Registers: set `key` to `value` (values are unique per run).
    Write { key: u32, value: u64 },
    /// Registers: read `key`; on completion, what was there (`None`:
    /// absent), or a value that is no integer (`foreign`, as JSON), or that
    /// the register map itself was `missing`.
    Read {
        key: u32,
        value: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missing: Option<Missing>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        foreign: Option<String>,
    },
    /// Lists: append `element` (unique per run) to the list `key`.
    Append { key: u32, element: u64 },
    /// Lists: read the list `key`; on completion, its integer elements in
    /// order and those that are no integer apart (`foreign`, as JSON), or
    /// that the list was `missing` (`elements` then `None`).
    ReadList {
        key: u32,
        elements: Option<Vec<u64>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missing: Option<Missing>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        foreign: Vec<String>,
    },
    /// Locks: acquire the lock `lock`; on completion, the fencing token.
    Acquire { lock: u32, token: Option<u64> },
    /// Locks: as holder with `token`, read the fenced counter `counter` from
    /// the storage and write back one more. On completion, `read` is what
    /// the storage had and `wrote` what it accepted (`Fail` with the error
    /// [`LockFailure::Stale`] when the storage refused the token as stale,
    /// plain `Fail` when it could not be reached).
    Increment {
        counter: u32,
        token: u64,
        read: Option<u64>,
        wrote: Option<u64>,
    },
    /// Locks: release the lock held with `token`.
    Release { lock: u32, token: u64 },
    /// Locks: as holder of `lock` with `token`, read the counter `n` of
    /// the locked map `k[lock]` (absent: 0), work, write one more and wait
    /// for the flush, like a write. `id` is unique in the run, as a
    /// write's value is, and names the write in a later [`Op::Settle`]. On
    /// completion, `read` is what it read (on every completion after the
    /// read, whatever the outcome), or `foreign` a value that is no
    /// integer (as JSON; nothing is written then).
    DocIncrement {
        lock: u32,
        token: u64,
        id: u64,
        read: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        foreign: Option<String>,
    },
    /// Locks: read the counter `n` of the map `k[lock]` (a final read,
    /// after the marker); on completion, what was there (`None`: absent,
    /// which counts as 0), or a value that is no integer (`foreign`), or
    /// that the map was `missing`.
    DocRead {
        lock: u32,
        value: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        missing: Option<Missing>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        foreign: Option<String>,
    },
    /// Not an operation but what a process learned later of its earlier
    /// writes, appends and document increments recorded `info` (their
    /// flush timed out), in one lone `ok` event: a later flush succeeded,
    /// so those it lists in `acknowledged` (by value, element or id) were
    /// acknowledged too; or a
    /// flush reported exactly as many writes lost as it had unresolved,
    /// so those in `lost` took no effect.
    Settle {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        acknowledged: Vec<u64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lost: Vec<u64>,
    },
    /// Not an operation: the process begins its final reads, in one lone
    /// `ok` event. Every fault healed, every process in `live` (the ones
    /// alive at the end) wrote its marker and this one has them all; it
    /// then reads the register and the list of every key in `keys` once
    /// more, and the counter of every lock in `locks` ([`Op::DocRead`]).
    /// Every process in `live` must do so: those reads are final.
    /// (`locks` is empty in histories from before document increments.)
    Final {
        live: Vec<u32>,
        keys: Vec<u32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        locks: Vec<u32>,
    },
}

/// What a read found instead of the register map or the list it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// No document: the node was joining, or starting over (over the relay
    /// an evicted node shows nothing until its sync completes). Allowed
    /// but at a final read.
    Document,
    /// A document without the register map or the list: the runner creates
    /// them before any client starts and nobody removes them.
    Object,
}

impl Op {
    /// The register or list key, lock or counter the operation is on.
    pub fn object(&self) -> u32 {
        match *self {
            Op::Write { key, .. }
            | Op::Read { key, .. }
            | Op::Append { key, .. }
            | Op::ReadList { key, .. } => key,
            Op::Acquire { lock, .. }
            | Op::Release { lock, .. }
            | Op::DocIncrement { lock, .. }
            | Op::DocRead { lock, .. } => lock,
            Op::Increment { counter, .. } => counter,
            Op::Settle { .. } | Op::Final { .. } => 0,
        }
    }

    /// Whether `self` and `other` are the same call: same function on the
    /// same object with the same arguments (what a completion may fill in,
    /// the observed results, is not compared).
    pub fn same_call(&self, other: &Op) -> bool {
        match (self, other) {
            (Op::Write { key: k, value: v }, Op::Write { key, value }) => k == key && v == value,
            (Op::Read { key: k, .. }, Op::Read { key, .. }) => k == key,
            (Op::Append { key: k, element: e }, Op::Append { key, element }) => {
                k == key && e == element
            }
            (Op::ReadList { key: k, .. }, Op::ReadList { key, .. }) => k == key,
            (Op::Acquire { lock: l, .. }, Op::Acquire { lock, .. }) => l == lock,
            (
                Op::Increment {
                    counter: c,
                    token: t,
                    ..
                },
                Op::Increment { counter, token, .. },
            ) => c == counter && t == token,
            (Op::Release { lock: l, token: t }, Op::Release { lock, token }) => {
                l == lock && t == token
            }
            (
                Op::DocIncrement {
                    lock: l,
                    token: t,
                    id: i,
                    ..
                },
                Op::DocIncrement {
                    lock, token, id, ..
                },
            ) => l == lock && t == token && i == id,
            (Op::DocRead { lock: l, .. }, Op::DocRead { lock, .. }) => l == lock,
            (Op::Settle { .. }, Op::Settle { .. }) | (Op::Final { .. }, Op::Final { .. }) => true,
            _ => false,
        }
    }
}

/// A fault the runner injected, as the checkers need it: which process it
/// hit and when, on the histories' clock. The runner writes them to
/// `faults.jsonl` in the run's directory, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWindow {
    /// The client process paused, killed or cut off (`u32::MAX` when its
    /// slot had none); `None` for a fault of a server or its disk.
    pub process: Option<u32>,
    /// The fault's kind (`pause-client`, `kill-relay`…).
    pub kind: String,
    /// When it was injected.
    pub start: u64,
    /// When it was healed (the run's end when its heal failed).
    pub end: u64,
    /// Nanoseconds after `end` during which an eviction it caused may
    /// still come: the run's failure detection (the relay's peer timeout
    /// or the NATS lease) plus a heartbeat interval. A node cut off is
    /// judged silent only once its first messages after the heal are
    /// overdue, which TCP's retransmission backoff can delay; a restarted
    /// relay evicts the members that are not back within its timeout.
    /// Zero in records from before it was written.
    #[serde(default)]
    pub grace: u64,
}

impl FaultWindow {
    /// Whether a fault of this kind can evict a node, so that its locks
    /// pass on without its knowing, and which: `Some(true)` the client
    /// process it hit, `Some(false)` any, `None` none.
    ///
    /// - `pause-client`, `partition-client`, `kill-client`: the client it
    ///   hit, silent past the failure detection or its connection closed.
    /// - `kill-relay`: any; the restarted relay evicts the members that
    ///   are not back within its peer timeout.
    /// - `kill-server`, `isolate-server` (NATS): any; a node connected to
    ///   that server must reach another before its lease runs out.
    /// - `disk-stall`, `disk-slow`, and kinds unknown here: none. A slow
    ///   or stalled disk delays acknowledgements: the relay counts the
    ///   frames that arrived during a stall as heard before it judges
    ///   anybody silent, and over NATS a silence of the whole log renews
    ///   every lease (DESIGN.md).
    fn evicts(&self) -> Option<bool> {
        match self.kind.as_str() {
            "pause-client" | "partition-client" | "kill-client" => Some(true),
            "kill-relay" | "kill-server" | "isolate-server" => Some(false),
            _ => None,
        }
    }

    /// Whether the fault may have evicted `process` at some time in
    /// `from..=to`: a fault of a kind that can evict it, injected by `to`
    /// and healed no more than its grace before `from`.
    pub fn may_evict(&self, process: u32, from: u64, to: u64) -> bool {
        let whom = match self.evicts() {
            None => return false,
            Some(true) => self.process,
            Some(false) => None,
        };
        whom.is_none_or(|p| p == process)
            && self.start <= to
            && self.end.saturating_add(self.grace) >= from
    }
}

/// Reads fault windows, one JSON object per line.
pub fn read_faults(input: impl BufRead) -> Result<Vec<FaultWindow>, ReadError> {
    let mut faults = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        faults.push(
            serde_json::from_str(&line).map_err(|source| ReadError::Line {
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(faults)
}

/// The machine's monotonic clock in nanoseconds (`CLOCK_MONOTONIC`): one
/// clock for every process of a run, unaffected by wall-clock changes.
pub fn now() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there on Linux");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Appends events to a history file, one JSON line each, flushed per event
/// so a process killed with `SIGKILL` loses nothing it recorded.
pub struct Recorder<W: Write> {
    out: W,
    process: u32,
}

impl<W: Write> Recorder<W> {
    /// A recorder for `process` writing to `out`.
    pub fn new(out: W, process: u32) -> Self {
        Recorder { out, process }
    }

    /// Records `op` as `kind` now.
    pub fn record(&mut self, kind: Kind, op: &Op) -> io::Result<()> {
        self.write(kind, op, None)
    }

    /// Records what the process learned of its earlier writes and appends
    /// of unknown outcome ([`Op::Settle`]).
    pub fn record_settle(&mut self, acknowledged: Vec<u64>, lost: Vec<u64>) -> io::Result<()> {
        self.write(Kind::Ok, &Op::Settle { acknowledged, lost }, None)
    }

    /// Records that the process begins its final reads of `keys` and of
    /// the counters of `locks`, every process in `live` doing the same
    /// ([`Op::Final`]).
    pub fn record_final(
        &mut self,
        live: Vec<u32>,
        keys: Vec<u32>,
        locks: Vec<u32>,
    ) -> io::Result<()> {
        self.write(Kind::Ok, &Op::Final { live, keys, locks }, None)
    }

    /// Records that the lock operation `op` (or an increment, or a
    /// document increment) failed, and why.
    pub fn record_failure(&mut self, op: &Op, error: LockFailure) -> io::Result<()> {
        self.write(Kind::Fail, op, Some(error))
    }

    fn write(&mut self, kind: Kind, op: &Op, error: Option<LockFailure>) -> io::Result<()> {
        let event = Event {
            process: self.process,
            kind,
            op: op.clone(),
            time: now(),
            error,
        };
        serde_json::to_writer(&mut self.out, &event)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("reading the history: {0}")]
    Io(#[from] io::Error),
    /// A line (counted from 1) is not an event.
    #[error("line {line}: {source}")]
    Line {
        /// The line's number.
        line: usize,
        /// What was wrong with it.
        source: serde_json::Error,
    },
}

/// Reads a history, one event per line; a last line cut short by a crash
/// is skipped.
pub fn read(input: impl BufRead) -> Result<Vec<Event>, ReadError> {
    let lines: Vec<String> = input.lines().collect::<Result<_, _>>()?;
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(event) => events.push(event),
            Err(e) if i + 1 == lines.len() && e.is_eof() => {}
            Err(source) => {
                return Err(ReadError::Line {
                    line: i + 1,
                    source,
                });
            }
        }
    }
    Ok(events)
}

/// Merges the histories of several processes into one, ordered by time.
pub fn merge(histories: impl IntoIterator<Item = Vec<Event>>) -> Vec<Event> {
    let mut all: Vec<Event> = histories.into_iter().flatten().collect();
    all.sort_by_key(|e| (e.time, e.process));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cut_short_at_the_end_is_skipped_and_one_in_the_middle_is_not() {
        let mut buf = Vec::new();
        let mut rec = Recorder::new(&mut buf, 3);
        rec.record(Kind::Invoke, &Op::Append { key: 1, element: 9 })
            .unwrap();
        rec.record(Kind::Ok, &Op::Append { key: 1, element: 9 })
            .unwrap();
        let whole = String::from_utf8(buf).unwrap();
        let cut = format!("{whole}{{\"process\":3,\"ki");
        let events = read(cut.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, Kind::Ok);
        assert!(events[0].time <= events[1].time);
        let broken = format!("{{\"process\":3,\"ki\n{whole}");
        assert!(matches!(
            read(broken.as_bytes()),
            Err(ReadError::Line { line: 1, .. })
        ));
    }

    #[test]
    fn a_lock_failure_is_recorded_and_older_lines_without_one_still_read() {
        let mut buf = Vec::new();
        let mut rec = Recorder::new(&mut buf, 1);
        let acquire = Op::Acquire {
            lock: 2,
            token: None,
        };
        rec.record(Kind::Invoke, &acquire).unwrap();
        rec.record_failure(&acquire, LockFailure::Syncing).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(!text.lines().next().unwrap().contains("error"));
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .contains(r#""error":"Syncing""#)
        );
        let events = read(text.as_bytes()).unwrap();
        assert_eq!(events[0].error, None);
        assert_eq!(events[1].error, Some(LockFailure::Syncing));
        let older =
            r#"{"process":1,"kind":"fail","op":{"f":"acquire","lock":2,"token":null},"time":5}"#;
        assert_eq!(read(older.as_bytes()).unwrap()[0].error, None);
    }

    #[test]
    fn markers_name_the_locks_they_read_and_older_markers_still_read() {
        let mut buf = Vec::new();
        let mut rec = Recorder::new(&mut buf, 1);
        rec.record_final(vec![1], vec![0, 1], vec![0, 1]).unwrap();
        rec.record_final(vec![1], vec![0], vec![]).unwrap();
        let increment = Op::DocIncrement {
            lock: 1,
            token: 4,
            id: 9,
            read: Some(3),
            foreign: None,
        };
        rec.record_failure(&increment, LockFailure::WritesLost)
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains(r#""locks":[0,1]"#), "{text}");
        // Empty, it is left out: the line is as it was before.
        assert!(!lines[1].contains("locks"), "{text}");
        assert!(
            lines[2].contains(r#""f":"doc_increment""#)
                && lines[2].contains(r#""error":"WritesLost""#),
            "{text}"
        );
        let events = read(text.as_bytes()).unwrap();
        assert_eq!(events[2].op, increment);
        let older =
            r#"{"process":1,"kind":"ok","op":{"f":"final","live":[1],"keys":[0]},"time":5}"#;
        assert_eq!(
            read(older.as_bytes()).unwrap()[0].op,
            Op::Final {
                live: vec![1],
                keys: vec![0],
                locks: vec![]
            }
        );
    }
}
