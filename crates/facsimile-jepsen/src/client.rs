//! One client process: a node connected on the public `facsimile::net`
//! API that runs a workload and records every operation to its own history
//! file. The runner drives it with lines on stdin (`final <processes>`) and
//! learns its state from lines on stdout (`ready`, `done`).

use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use facsimile::net::{self, ConnectOptions, Connection, NatsOptions, NetError, Status};
use facsimile::{ArrayRef, MapRef, Value};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::history::{Kind, LockFailure, Missing, Op, Recorder};
use crate::storage::{self, Answer, Request, RequestError};

/// Registers, lists and locks per run (keys `0..KEYS`).
pub const KEYS: u32 = 5;
/// The name of the document every client of a run shares.
pub const DOCUMENT: &str = "jepsen";
/// How long a write waits for its acknowledgement before it is `Info`.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an acquisition waits before it is given up (`Info`).
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a holder works before it writes to the fenced storage: long
/// enough that a pause often hits a holder.
const HOLD: Duration = Duration::from_millis(300);
/// How long an increment works between its read and its write: two
/// holders at once would both read before either writes.
const INCREMENT_WORK: Duration = Duration::from_millis(40);
/// The NATS lease: a paused holder loses its locks after it.
pub const NATS_LEASE: Duration = Duration::from_secs(2);

/// Which operations a client runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// `Write` and `Read` of registers.
    Registers,
    /// `Append` and `ReadList` of lists.
    Lists,
    /// `Acquire`, `Increment` on the fenced storage, `DocIncrement` of the
    /// locked map's counter, `Release`.
    Locks,
    /// All three, mixed.
    All,
}

/// What a client process needs to know.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The relay's `host:port` or the NATS servers' `nats://` URLs.
    #[arg(long)]
    pub addr: String,
    /// This process's number in the run's history.
    #[arg(long)]
    pub process: u32,
    /// The workload.
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// The seed of this process's choices.
    #[arg(long)]
    pub seed: u64,
    /// Where to record the history.
    #[arg(long)]
    pub history: PathBuf,
    /// Where to write the final snapshot.
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The fenced storage's address.
    #[arg(long)]
    pub storage: SocketAddr,
}

/// Connection options of every node of a run (the runner's set-up node
/// included).
pub fn options(nats: bool) -> ConnectOptions {
    let o = ConnectOptions::new(DOCUMENT)
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .timeouts(Duration::from_secs(5), Duration::from_secs(30));
    if nats {
        o.nats(NatsOptions::new().lease(NATS_LEASE).stream_replicas(3))
    } else {
        o
    }
}

/// Connects, retrying until `patience` runs out (a join waits while a
/// member that was cut off is not yet evicted).
pub async fn connect(
    addr: &str,
    hostname: &str,
    patience: Duration,
) -> Result<Connection, NetError> {
    let deadline = Instant::now() + patience;
    loop {
        match net::connect(addr, hostname, options(addr.starts_with("nats://"))).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// A value as JSON, for the history; one that does not convert (a map
/// gone meanwhile) says why.
fn as_json(v: &Value) -> String {
    v.to_json_with_refs("")
        .map_or_else(|e| format!("<{e}>"), |j| j.to_string())
}

/// A list's elements: the integers, as the workload writes them, and the
/// others as JSON (the checker flags them: nobody appends them).
fn integers(values: &[Value]) -> (Vec<u64>, Vec<String>) {
    let mut ints = Vec::with_capacity(values.len());
    let mut others = Vec::new();
    for v in values {
        match v.as_i64() {
            Some(i) => ints.push(i as u64),
            None => others.push(as_json(v)),
        }
    }
    (ints, others)
}

/// How an increment that was not accepted ended.
enum Refused {
    /// The storage refused the token as stale.
    Stale,
    /// `Fail` (certainly without effect) or `Info` (unknown).
    Other(Kind),
}

struct Client {
    conn: Connection,
    rec: Recorder<BufWriter<File>>,
    rng: SmallRng,
    process: u32,
    seq: u64,
    storage: SocketAddr,
    /// The values and elements of the writes and appends recorded `Info`
    /// since the last flush that succeeded or reported writes lost: a
    /// later successful flush acknowledges them, a report of as many
    /// writes lost as there are (with the current one) loses them.
    unresolved: Vec<u64>,
}

/// The map at `path` from the root, or why there is none: no document
/// (joining, or syncing after an eviction), or a document without it.
fn find_map(conn: &Connection, path: &[&str]) -> Result<MapRef, Missing> {
    let node = conn.node();
    let root = node.root();
    if root.is_null() || !node.is_ready() {
        return Err(Missing::Document);
    }
    let mut m = root.as_map().ok_or(Missing::Object)?.clone();
    for p in path {
        m = m
            .get(p)
            .and_then(|v| v.as_map().cloned())
            .ok_or(Missing::Object)?;
    }
    Ok(m)
}

fn map(conn: &Connection, path: &[&str]) -> Option<MapRef> {
    find_map(conn, path).ok()
}

/// What a read of `key` in the map at `path` found: the integer `int`
/// makes of its value, the map missing, or a value that is no such
/// integer (as JSON); all `None` for an absent key.
fn observe(
    conn: &Connection,
    path: &[&str],
    key: &str,
    int: fn(i64) -> Option<u64>,
) -> (Option<u64>, Option<Missing>, Option<String>) {
    match find_map(conn, path).map(|m| m.get(key)) {
        Ok(None) => (None, None, None),
        Ok(Some(v)) => match v.as_i64().and_then(int) {
            Some(i) => (Some(i), None, None),
            None => (None, None, Some(as_json(&v))),
        },
        Err(m) => (None, Some(m), None),
    }
}

fn find_list(conn: &Connection, key: u32) -> Result<ArrayRef, Missing> {
    find_map(conn, &["l"])?
        .get(&key.to_string())
        .and_then(|v| v.as_array().cloned())
        .ok_or(Missing::Object)
}

fn list(conn: &Connection, key: u32) -> Option<ArrayRef> {
    find_list(conn, key).ok()
}

impl Client {
    fn record(&mut self, kind: Kind, op: &Op) {
        self.rec.record(kind, op).expect("recording the history");
    }

    fn record_failure(&mut self, op: &Op, error: LockFailure) {
        self.rec
            .record_failure(op, error)
            .expect("recording the history");
    }

    fn unique(&mut self) -> u64 {
        self.seq += 1;
        (u64::from(self.process) << 32) | self.seq
    }

    /// Waits for the acknowledgement of a write (`written`: its value or
    /// element, or a document increment's id) or a release just made and
    /// records its completion, then
    /// what the flush says of the earlier unresolved writes.
    async fn acknowledge(&mut self, op: &Op, written: Option<u64>) {
        let flushed = tokio::time::timeout(ACK_TIMEOUT, self.conn.flush()).await;
        let kind = match flushed {
            Ok(Ok(())) => Kind::Ok,
            // The count is of writes (a release is none). Only when it is
            // of all the unresolved ones is it known which were lost.
            Ok(Err(NetError::WritesLost(n)))
                if n == self.unresolved.len() as u64 + u64::from(written.is_some()) =>
            {
                Kind::Fail
            }
            _ => Kind::Info,
        };
        // A release is no write: a loss of writes says nothing certain of it.
        let recorded = match (written, kind) {
            (None, Kind::Fail) => Kind::Info,
            _ => kind,
        };
        match (recorded, op) {
            (Kind::Fail, Op::DocIncrement { .. }) => {
                self.record_failure(op, LockFailure::WritesLost)
            }
            _ => self.record(recorded, op),
        }
        match (kind, &flushed) {
            (Kind::Ok, _) => self.settle(Kind::Ok),
            (Kind::Fail, _) => self.settle(Kind::Fail),
            // Which of them were lost is unknown: they stay unknown.
            (_, Ok(Err(NetError::WritesLost(_)))) => self.unresolved.clear(),
            _ => self.unresolved.extend(written),
        }
    }

    /// Records that the unresolved writes were acknowledged (`Ok`) or lost
    /// (`Fail`).
    fn settle(&mut self, outcome: Kind) {
        if self.unresolved.is_empty() {
            return;
        }
        let them = std::mem::take(&mut self.unresolved);
        let (acknowledged, lost) = if outcome == Kind::Ok {
            (them, Vec::new())
        } else {
            (Vec::new(), them)
        };
        self.rec
            .record_settle(acknowledged, lost)
            .expect("recording the history");
    }

    async fn write(&mut self) {
        let key = self.rng.random_range(0..KEYS);
        let value = self.unique();
        let op = Op::Write { key, value };
        self.record(Kind::Invoke, &op);
        let set = map(&self.conn, &["r"]).map(|r| r.set(&key.to_string(), value as i64));
        match set {
            Some(Ok(())) => self.acknowledge(&op, Some(value)).await,
            _ => self.record(Kind::Fail, &op),
        }
    }

    /// Reads register `key`; a missing register map is recorded as what
    /// the read found, for the checker to judge.
    fn read(&mut self, key: u32) {
        let invoked = Op::Read {
            key,
            value: None,
            missing: None,
            foreign: None,
        };
        self.record(Kind::Invoke, &invoked);
        let (value, missing, foreign) =
            observe(&self.conn, &["r"], &key.to_string(), |i| Some(i as u64));
        let read = Op::Read {
            key,
            value,
            missing,
            foreign,
        };
        self.record(Kind::Ok, &read);
    }

    async fn append(&mut self) {
        let key = self.rng.random_range(0..KEYS);
        let element = self.unique();
        let op = Op::Append { key, element };
        self.record(Kind::Invoke, &op);
        match list(&self.conn, key).map(|l| l.push(element as i64)) {
            Some(Ok(())) => self.acknowledge(&op, Some(element)).await,
            _ => self.record(Kind::Fail, &op),
        }
    }

    /// Reads list `key`; a missing list is recorded as what the read
    /// found, for the checker to judge.
    fn read_list(&mut self, key: u32) {
        let invoked = Op::ReadList {
            key,
            elements: None,
            missing: None,
            foreign: Vec::new(),
        };
        self.record(Kind::Invoke, &invoked);
        let (elements, missing, foreign) = match find_list(&self.conn, key).map(|l| l.to_vec()) {
            Ok(Ok(v)) => {
                let (ints, others) = integers(&v);
                (Some(ints), None, others)
            }
            // Reclaimed between the lookup and the read.
            Ok(Err(_)) => (None, Some(Missing::Object), Vec::new()),
            Err(m) => (None, Some(m), Vec::new()),
        };
        let read = Op::ReadList {
            key,
            elements,
            missing,
            foreign,
        };
        self.record(Kind::Ok, &read);
    }

    /// Acquire, work, increment the fenced counter once or twice (a read,
    /// work, then a write of one more, each under the token), increment
    /// the counter of the locked map itself ([`Client::doc_increment`]),
    /// release.
    async fn locked_increment(&mut self) {
        let lock = self.rng.random_range(0..KEYS);
        let acquire = Op::Acquire { lock, token: None };
        self.record(Kind::Invoke, &acquire);
        let Some(object) = map(&self.conn, &["k", &lock.to_string()]) else {
            return self.record_failure(&acquire, LockFailure::NoObject);
        };
        let guard = match tokio::time::timeout(LOCK_TIMEOUT, self.conn.node().lock(&object)).await {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => return self.record_failure(&acquire, (&e).into()),
            // Dropping the future withdraws the request; whether it had
            // been granted meanwhile is unknown.
            Err(_) => return self.record(Kind::Info, &acquire),
        };
        let token = guard.token();
        self.record(
            Kind::Ok,
            &Op::Acquire {
                lock,
                token: Some(token),
            },
        );
        tokio::time::sleep(HOLD).await;
        let inc = |read, wrote| Op::Increment {
            counter: lock,
            token,
            read,
            wrote,
        };
        for _ in 0..self.rng.random_range(1..=2) {
            self.record(Kind::Invoke, &inc(None, None));
            match self.increment(lock, token).await {
                Ok(read) => {
                    self.record(Kind::Ok, &inc(Some(read), Some(read + 1)));
                    continue;
                }
                Err(Refused::Stale) => self.record_failure(&inc(None, None), LockFailure::Stale),
                Err(Refused::Other(kind)) => self.record(kind, &inc(None, None)),
            }
            break;
        }
        // Also after a refusal: a holder that lost the lock must not
        // overwrite its successor's writes.
        self.doc_increment(&object, lock, token).await;
        let release = Op::Release { lock, token };
        self.record(Kind::Invoke, &release);
        match guard.release() {
            Ok(()) => self.acknowledge(&release, None).await,
            Err(e) => self.record_failure(&release, (&e).into()),
        }
    }

    /// As holder of `lock` with `token`, reads the counter `n` of its map
    /// `object` (absent: 0), works, writes one more and waits for the
    /// flush: `ok` when it returns, `fail` when the node refuses the write
    /// (with why) or the flush reports it lost as a write's would be
    /// ([`Client::acknowledge`]), `info` otherwise. A value there that is
    /// no integer is recorded as `foreign` and nothing is written.
    async fn doc_increment(&mut self, object: &MapRef, lock: u32, token: u64) {
        let id = self.unique();
        let op = |read, foreign| Op::DocIncrement {
            lock,
            token,
            id,
            read,
            foreign,
        };
        self.record(Kind::Invoke, &op(None, None));
        // One read of the whole map, which fails when the map is gone
        // (where `get` would say absent).
        let read = match object.entries() {
            Ok(entries) => match entries
                .iter()
                .find(|(k, _)| k.as_str() == "n")
                .map(|(_, v)| v)
            {
                None => 0,
                Some(v) => match v.as_i64() {
                    Some(n) if n >= 0 => n as u64,
                    _ => return self.record(Kind::Fail, &op(None, Some(as_json(v)))),
                },
            },
            Err(e) => return self.record_failure(&op(None, None), (&e).into()),
        };
        tokio::time::sleep(INCREMENT_WORK).await;
        let done = op(Some(read), None);
        match object.set("n", read.saturating_add(1) as i64) {
            Ok(()) => self.acknowledge(&done, Some(id)).await,
            Err(e) => self.record_failure(&done, (&e).into()),
        }
    }

    /// Reads the counter of lock `lock`'s map (a final read); a missing
    /// map is recorded as what the read found, for the checker to judge.
    fn doc_read(&mut self, lock: u32) {
        let invoked = Op::DocRead {
            lock,
            value: None,
            missing: None,
            foreign: None,
        };
        self.record(Kind::Invoke, &invoked);
        let path = ["k", &lock.to_string()];
        let (value, missing, foreign) = observe(&self.conn, &path, "n", |i| u64::try_from(i).ok());
        let read = Op::DocRead {
            lock,
            value,
            missing,
            foreign,
        };
        self.record(Kind::Ok, &read);
    }

    /// Reads `counter` under `token`, works, writes back one more: the
    /// value read, or how the increment ended (`Stale`: the storage
    /// refused the token, at the read or the write; `Fail`: certainly
    /// without effect, the read unanswered or the write not sent; `Info`:
    /// the write went unanswered).
    async fn increment(&mut self, counter: u32, token: u64) -> Result<u64, Refused> {
        let read = match storage::request(self.storage, Request::Read { counter, token }).await {
            Ok(Answer::Ok { value }) => value,
            Ok(Answer::Stale { .. }) => return Err(Refused::Stale),
            // A read changes no value.
            Err(_) => return Err(Refused::Other(Kind::Fail)),
        };
        tokio::time::sleep(INCREMENT_WORK).await;
        let write = Request::Write {
            counter,
            token,
            value: read + 1,
        };
        match storage::request(self.storage, write).await {
            Ok(Answer::Ok { .. }) => Ok(read),
            Ok(Answer::Stale { .. }) => Err(Refused::Stale),
            Err(RequestError::NotSent(_)) => Err(Refused::Other(Kind::Fail)),
            Err(RequestError::NoAnswer(_)) => Err(Refused::Other(Kind::Info)),
        }
    }

    async fn step(&mut self, workload: Workload) {
        let workload = match workload {
            Workload::All => {
                [Workload::Registers, Workload::Lists, Workload::Locks][self.rng.random_range(0..3)]
            }
            w => w,
        };
        let write = self.rng.random_bool(0.5);
        match (workload, write) {
            (Workload::Registers, true) => self.write().await,
            (Workload::Registers, false) => {
                let key = self.rng.random_range(0..KEYS);
                self.read(key)
            }
            (Workload::Lists, true) => self.append().await,
            (Workload::Lists, false) => {
                let key = self.rng.random_range(0..KEYS);
                self.read_list(key)
            }
            _ => self.locked_increment().await,
        }
    }

    /// Stops writing, waits until every process in `live` has written its
    /// marker (so this node has every message ordered before the last of
    /// them), reads every key (register, list and lock's counter) and
    /// saves the snapshot.
    async fn finish(&mut self, live: &[u32], snapshot: &PathBuf) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut status = self.conn.status();
        let _ = tokio::time::timeout_at(
            deadline.into(),
            status.wait_for(|s| *s == Status::Connected),
        )
        .await;
        loop {
            let marked = map(&self.conn, &["m"])
                .ok_or("no marker map")?
                .set(&self.process.to_string(), 1);
            if marked.is_ok() {
                match tokio::time::timeout(ACK_TIMEOUT, self.conn.flush()).await {
                    Ok(Ok(())) => {
                        // The writes before the marker were acknowledged
                        // with it.
                        self.settle(Kind::Ok);
                        break;
                    }
                    // Which were lost, the marker or earlier writes, is
                    // unknown: those stay unknown.
                    Ok(Err(NetError::WritesLost(_))) => self.unresolved.clear(),
                    _ => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("marker not acknowledged: {:?}", *status.borrow()));
            }
        }
        loop {
            let m = map(&self.conn, &["m"]).ok_or("no marker map")?;
            if live.iter().all(|p| m.contains_key(&p.to_string())) {
                break;
            }
            if Instant::now() >= deadline {
                let missing: Vec<_> = live
                    .iter()
                    .filter(|p| !m.contains_key(&p.to_string()))
                    .collect();
                return Err(format!("markers of {missing:?} never arrived"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.rec
            .record_final(live.to_vec(), (0..KEYS).collect(), (0..KEYS).collect())
            .expect("recording the history");
        for key in 0..KEYS {
            self.read(key);
            self.read_list(key);
            self.doc_read(key);
        }
        std::fs::write(snapshot, self.conn.node().snapshot()).map_err(|e| e.to_string())
    }
}

/// Runs a client process until the runner says `final` and the final reads
/// are done.
pub async fn run(args: ClientArgs) -> Result<(), String> {
    crate::cluster::die_with_runner();
    let file =
        File::create(&args.history).map_err(|e| format!("{}: {e}", args.history.display()))?;
    let rec = Recorder::new(BufWriter::new(file), args.process);
    let conn = connect(
        &args.addr,
        &format!("p{}", args.process),
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| format!("connecting to {}: {e}", args.addr))?;
    let mut client = Client {
        conn,
        rec,
        rng: SmallRng::seed_from_u64(args.seed),
        process: args.process,
        seq: 0,
        storage: args.storage,
        unresolved: Vec::new(),
    };
    let (tx, mut commands) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        let line = stdin.next_line().await.ok().flatten().unwrap_or_default();
        let _ = tx.send(line);
    });
    println!("ready");
    // A command is taken between operations, so none is cut short.
    let command = loop {
        if let Ok(line) = commands.try_recv() {
            break line;
        }
        client.step(args.workload).await;
        // Pacing, so that two cores serve several clients and the nemesis.
        tokio::time::sleep(Duration::from_millis(client.rng.random_range(5..30))).await;
    };
    let live: Vec<u32> = match command.strip_prefix("final ") {
        Some(list) => list
            .split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect(),
        None => return Err(format!("expected `final <processes>`, got {command:?}")),
    };
    client.finish(&live, &args.snapshot).await?;
    println!("done");
    let _ = client.conn.close(Duration::from_secs(5)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_elements_that_are_no_integers_are_kept_apart_not_dropped() {
        let values = [
            Value::Int(7),
            Value::String("x".into()),
            Value::Float(1.5),
            Value::Null,
            Value::Int(-1),
        ];
        let (ints, others) = integers(&values);
        assert_eq!(ints, [7, u64::MAX]);
        assert_eq!(others, [r#""x""#, "1.5", "null"]);
    }
}
