//! The relay and its real clients (`facsimile::net`) on turmoil's simulated
//! network and clock, under a seeded schedule of faults: partitions between
//! a client and the relay, messages held on a link then released, clients
//! crashing and coming back as new nodes, the relay crashing and coming
//! back on its data directory. After the faults heal, every replica must
//! equal the relay's document byte for byte, every write a client saw
//! acknowledged must be in it, a lock's fencing tokens must grow from one
//! holder to the next, and no two clients that stayed in touch with the
//! relay may have held one lock at once.
//!
//! What runs real: the relay (`Server::serve`, its documents, its store on a
//! temporary directory), the client (`net::connect`, its reconnection,
//! resumption and rejoining), the engine. What is simulated: the TCP
//! network (turmoil's) and time (every host's tokio clock, which the relay's
//! documents and the nodes read). `SIM_SEEDS=N` runs seeds 0..N (default
//! 50), `SIM_SEED=S` replays one; a failure names its seed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use facsimile::net::{self, ConnectOptions, Connection, NetError};
use facsimile::{ArrayRef, MapRef, Node};
use facsimile_server::{Server, ServerConfig};
use futures_util::stream;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;

const RELAY: &str = "relay";
const PORT: u16 = 7878;
const DOC: &str = "sim";
const CLIENTS: usize = 4;
/// The objects the clients lock (maps under the root).
const LOCKS: [&str; 2] = ["l0", "l1"];
/// How long faults are injected, in simulated time.
const FAULTS_FOR: Duration = Duration::from_secs(20);
/// How long the healed system gets to settle before a check fails.
const SETTLE_WITHIN: Duration = Duration::from_secs(90);
const TICK: Duration = Duration::from_millis(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The relay's address as the clients dial it.
fn relay_addr() -> String {
    format!("{RELAY}:{PORT}")
}

fn options() -> ConnectOptions {
    ConnectOptions::new(DOC)
        .dialer(|host_port: String| async move {
            let (host, port) = host_port
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                .ok_or_else(|| std::io::Error::other("bad address"))?;
            turmoil::net::TcpStream::connect((host, port)).await
        })
        .runtime_clock(true)
        .reconnect_backoff(ms(50), ms(1000))
        .failure_detection(ms(500), None)
        .timeouts(ms(2000), Duration::from_secs(10))
}

fn relay_config(dir: &Path) -> ServerConfig {
    ServerConfig::default()
        .data_dir(dir)
        .documents_on_runtime(true)
        .failure_detection(ms(500), ms(3000))
}

/// The phases of a run, as the clients see them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Write, lock, flush at random.
    Work,
    /// Stop writing and flush until acknowledged.
    Quiet,
}

/// A write a client saw acknowledged (`Connection::flush` returned `Ok`).
#[derive(Clone, Debug)]
enum Write {
    /// `m[key] = value`.
    Map(String, i64),
    /// `a` holds `item`.
    Array(String),
    /// `LOCKS[lock][key] = token`, written under the lock.
    Locked(usize, String, u64),
}

/// A lock a client was granted.
#[derive(Debug)]
struct Grant {
    client: usize,
    boot: u64,
    lock: usize,
    token: u64,
    at: Duration,
    /// When the client released it, if it did (not if it crashed).
    released: Option<Duration>,
    /// No fault touched the client from the grant to the release, and it
    /// still held the lock then.
    clean: bool,
}

/// What the hosts and the test share (all on the simulation's thread).
#[derive(Default)]
struct Journal {
    boots: [u64; CLIENTS],
    /// Bumped whenever a fault starts or ends on a client or its link.
    disturbed: [u64; CLIENTS],
    /// Each client's current connection.
    live: [Option<Connection>; CLIENTS],
    /// The clients that flushed everything in the quiet phase.
    settled: [bool; CLIENTS],
    acked: Vec<Write>,
    grants: Vec<Grant>,
    observer: Option<Connection>,
    /// Faults started.
    faults: usize,
    /// The faults and what the clients saw, for the failure message.
    events: Vec<String>,
}

type Shared = Rc<RefCell<Journal>>;

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Connects until it works (the relay may be down or cut off).
async fn connect(hostname: &str) -> Connection {
    loop {
        match net::connect(&relay_addr(), hostname, options()).await {
            Ok(c) => return c,
            // Retried at the pace of a user's retry loop.
            Err(_) => tokio::time::sleep(ms(200)).await,
        }
    }
}

/// The map `key` under the root; `None` while the node has no document
/// (it is syncing, after rejoining).
fn child(node: &Node, key: &str) -> Option<MapRef> {
    node.root_map()
        .and_then(|root| root.get(key))
        .and_then(|v| v.as_map().cloned())
}

/// One client's life: connect as a new node, then write, lock and flush at
/// random until the quiet phase, then flush until acknowledged and stay
/// connected.
async fn client(i: usize, seed: u64, journal: Shared, phase: watch::Receiver<Phase>) {
    let boot = {
        let mut j = journal.borrow_mut();
        j.boots[i] += 1;
        j.boots[i]
    };
    let mut rng = SmallRng::seed_from_u64(seed ^ ((i as u64) << 40) ^ (boot << 48));
    let conn = connect(&format!("c{i}")).await;
    journal.borrow_mut().live[i] = Some(conn.clone());
    {
        // The connection's states, for the failure message.
        let journal = journal.clone();
        let mut status = conn.status();
        let name = format!("c{i}.{boot} {}", conn.node().peer_id());
        tokio::task::spawn_local(async move {
            loop {
                let s = status.borrow_and_update().clone();
                journal
                    .borrow_mut()
                    .events
                    .push(format!("{:?}: {name}: {s:?}", now()));
                if status.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let node = conn.node().clone();
    let mut pending: Vec<Write> = Vec::new();
    let mut n: i64 = 0;
    while *phase.borrow() == Phase::Work {
        tokio::time::sleep(ms(rng.random_range(10..250))).await;
        n += 1;
        let key = format!("c{i}.{boot}.{n}");
        // Looked up each time: a node that rejoins gets a new document.
        let (Some(map), Some(array)) = (child(&node, "m"), array(&node)) else {
            continue;
        };
        match rng.random_range(0..10) {
            0..=3 => {
                if map.set(&key, n).is_ok() {
                    pending.push(Write::Map(key, n));
                }
            }
            4..=5 => {
                if array.push(key.as_str()).is_ok() {
                    pending.push(Write::Array(key));
                }
            }
            6..=7 => {
                flush(&conn, &journal, &mut pending, ms(3000)).await;
            }
            _ => {
                let lock = rng.random_range(0..LOCKS.len());
                let hold = ms(rng.random_range(20..600));
                take_lock(i, boot, lock, hold, &node, &journal, &mut pending, key).await;
            }
        }
    }
    while !flush(&conn, &journal, &mut pending, ms(5000)).await {}
    journal.borrow_mut().settled[i] = true;
    // The connection's tasks run while the host's software does.
    std::future::pending::<()>().await;
}

fn array(node: &Node) -> Option<ArrayRef> {
    node.root_map()
        .and_then(|root| root.get("a"))
        .and_then(|v| v.as_array().cloned())
}

/// Flushes; on success every pending write is acknowledged. Returns
/// whether it succeeded.
async fn flush(
    conn: &Connection,
    journal: &Shared,
    pending: &mut Vec<Write>,
    within: Duration,
) -> bool {
    let started = now();
    let outcome = tokio::time::timeout(within, conn.flush()).await;
    journal.borrow_mut().events.push(format!(
        "{:?}: {} flush from {started:?} of {} writes: {outcome:?} (rejoins {})",
        now(),
        conn.node().peer_id(),
        pending.len(),
        conn.rejoins()
    ));
    match outcome {
        Ok(Ok(())) => {
            journal.borrow_mut().acked.append(pending);
            true
        }
        // Some were dropped (the node was evicted): which is not known,
        // so none is claimed.
        Ok(Err(NetError::WritesLost(_))) => {
            pending.clear();
            false
        }
        Ok(Err(e)) => panic!("flush failed: {e}"),
        Err(_) => false,
    }
}

#[allow(clippy::too_many_arguments)]
async fn take_lock(
    i: usize,
    boot: u64,
    lock: usize,
    hold: Duration,
    node: &Node,
    journal: &Shared,
    pending: &mut Vec<Write>,
    key: String,
) {
    let Some(object) = child(node, LOCKS[lock]) else {
        return;
    };
    let Ok(Ok(guard)) = tokio::time::timeout(ms(3000), node.lock(&object)).await else {
        return;
    };
    let at = now();
    let disturbed = journal.borrow().disturbed[i];
    let token = guard.token();
    let index = {
        let mut j = journal.borrow_mut();
        j.grants.push(Grant {
            client: i,
            boot,
            lock,
            token,
            at,
            released: None,
            clean: false,
        });
        j.grants.len() - 1
    };
    if object.set(&key, token as i64).is_ok() {
        pending.push(Write::Locked(lock, key, token));
    }
    tokio::time::sleep(hold).await;
    let held = guard.is_held();
    let released = now();
    drop(guard);
    let mut j = journal.borrow_mut();
    let clean = held && j.disturbed[i] == disturbed;
    let g = &mut j.grants[index];
    g.released = Some(released);
    g.clean = clean;
}

/// A fault in progress, undone when it ends.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Partition(usize),
    Hold(usize),
    CrashClient(usize),
    CrashRelay,
}

fn client_name(i: usize) -> String {
    format!("c{i}")
}

/// Runs one seed; `Err` says what went wrong.
fn run(seed: u64) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data: PathBuf = dir.path().join("relay");
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(3600))
        .tick_duration(TICK)
        .min_message_latency(ms(1))
        .max_message_latency(ms(15))
        .build();
    let journal: Shared = Rc::default();
    let (phase_tx, phase_rx) = watch::channel(Phase::Work);

    sim.host(RELAY, move || {
        let data = data.clone();
        async move {
            let listener =
                turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
            let incoming = stream::unfold(listener, |l| async move { Some((l.accept().await, l)) });
            Server::serve(
                relay_config(&data),
                Box::pin(incoming),
                std::future::pending(),
            )
            .await?;
            Ok(())
        }
    });
    sim.client("setup", async {
        let conn = connect("setup").await;
        conn.node()
            .set_root(json!({"m": {}, "a": [], "l0": {}, "l1": {}}))?;
        conn.flush().await?;
        conn.close(Duration::from_secs(5)).await?;
        Ok(())
    });
    while !sim.step().map_err(|e| format!("setup: {e}"))? {}

    for i in 0..CLIENTS {
        let journal = journal.clone();
        let phase = phase_rx.clone();
        sim.host(client_name(i), move || {
            let journal = journal.clone();
            let phase = phase.clone();
            async move {
                client(i, seed, journal, phase).await;
                Ok(())
            }
        });
    }

    // The faults: at most one at a time per client and on the relay.
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let start = sim.elapsed();
    let mut next = start + ms(rng.random_range(200..1500));
    let mut active: Vec<(Duration, Fault)> = Vec::new();
    let step = |sim: &mut turmoil::Sim<'_>| sim.step().map(|_| ()).map_err(|e| e.to_string());
    while sim.elapsed() < start + FAULTS_FOR {
        step(&mut sim)?;
        let t = sim.elapsed();
        let (due, rest): (Vec<_>, Vec<_>) = active.into_iter().partition(|(end, _)| *end <= t);
        active = rest;
        for (_, fault) in due {
            undo(&mut sim, &journal, fault, t);
        }
        if t < next {
            continue;
        }
        next = t + ms(rng.random_range(100..1500));
        let fault = match rng.random_range(0..10) {
            0..=3 => Fault::Partition(rng.random_range(0..CLIENTS)),
            4..=5 => Fault::Hold(rng.random_range(0..CLIENTS)),
            6..=8 => Fault::CrashClient(rng.random_range(0..CLIENTS)),
            _ => Fault::CrashRelay,
        };
        let busy = active.iter().any(|(_, f)| target(*f) == target(fault));
        if busy {
            continue;
        }
        let lasts = ms(rng.random_range(100..6000));
        apply(&mut sim, &journal, fault, t);
        active.push((t + lasts, fault));
    }
    let t = sim.elapsed();
    for (_, fault) in active.drain(..) {
        undo(&mut sim, &journal, fault, t);
    }

    // Quiet: everybody flushes; then the relay restarts once more on its
    // data, and a new node joins to read the relay's document.
    phase_tx.send_replace(Phase::Quiet);
    let healed = sim.elapsed();
    let deadline = healed + SETTLE_WITHIN;
    while !journal.borrow().settled.iter().all(|&s| s) {
        if sim.elapsed() > deadline {
            let e = format!(
                "clients {:?} did not get their writes acknowledged within {SETTLE_WITHIN:?} \
                 of healing",
                unsettled(&journal)
            );
            return Err(with_events(&journal, e));
        }
        step(&mut sim)?;
    }
    sim.crash(RELAY);
    step(&mut sim)?;
    sim.bounce(RELAY);
    {
        let journal = journal.clone();
        let mut phase = phase_rx.clone();
        sim.client("observer", async move {
            let conn = connect("observer").await;
            journal.borrow_mut().observer = Some(conn);
            // Connected until the checks are done.
            let _ = phase.wait_for(|_| false).await;
            Ok(())
        });
    }
    let converged = loop {
        if let Some(diverged) = divergence(&journal) {
            if sim.elapsed() > deadline {
                break Err(diverged);
            }
        } else if journal.borrow().observer.is_some() {
            break Ok(());
        } else if sim.elapsed() > deadline {
            break Err("the observer did not connect".to_string());
        }
        step(&mut sim)?;
    };
    converged.map_err(|e| with_events(&journal, e))?;
    check(&journal).map_err(|e| with_events(&journal, e))?;
    let j = journal.borrow();
    Ok(format!(
        "{} acknowledged writes, {} lock grants ({} clean), {} faults, {:?} simulated",
        j.acked.len(),
        j.grants.len(),
        j.grants.iter().filter(|g| g.clean).count(),
        j.faults,
        sim.elapsed()
    ))
}

/// What a fault occupies: a client, or the relay.
fn target(f: Fault) -> Option<usize> {
    match f {
        Fault::Partition(i) | Fault::Hold(i) | Fault::CrashClient(i) => Some(i),
        Fault::CrashRelay => None,
    }
}

fn apply(sim: &mut turmoil::Sim<'_>, journal: &Shared, fault: Fault, t: Duration) {
    let mut j = journal.borrow_mut();
    j.faults += 1;
    j.events.push(format!("{t:?}: {fault:?}"));
    if let Some(i) = target(fault) {
        j.disturbed[i] += 1;
    }
    match fault {
        Fault::Partition(i) => sim.partition(RELAY, client_name(i)),
        Fault::Hold(i) => sim.hold(RELAY, client_name(i)),
        Fault::CrashClient(i) => {
            j.live[i] = None;
            drop(j);
            sim.crash(client_name(i));
        }
        Fault::CrashRelay => {
            drop(j);
            sim.crash(RELAY);
        }
    }
}

fn undo(sim: &mut turmoil::Sim<'_>, journal: &Shared, fault: Fault, t: Duration) {
    let mut j = journal.borrow_mut();
    j.events.push(format!("{t:?}: end of {fault:?}"));
    if let Some(i) = target(fault) {
        j.disturbed[i] += 1;
    }
    drop(j);
    match fault {
        Fault::Partition(i) => sim.repair(RELAY, client_name(i)),
        Fault::Hold(i) => sim.release(RELAY, client_name(i)),
        Fault::CrashClient(i) => sim.bounce(client_name(i)),
        Fault::CrashRelay => sim.bounce(RELAY),
    }
}

/// The error, with the run's events when `SIM_EVENTS` is set.
fn with_events(journal: &Shared, e: String) -> String {
    if std::env::var_os("SIM_EVENTS").is_none() {
        return e;
    }
    format!("{e}\nevents:\n{}", journal.borrow().events.join("\n"))
}

fn unsettled(journal: &Shared) -> Vec<usize> {
    let j = journal.borrow();
    (0..CLIENTS).filter(|&i| !j.settled[i]).collect()
}

/// Which replica differs from the observer's copy of the relay's document,
/// if one does (or the observer is not there yet).
fn divergence(journal: &Shared) -> Option<String> {
    let j = journal.borrow();
    let observer = j.observer.as_ref()?;
    let want = observer.node().snapshot();
    for (i, conn) in j.live.iter().enumerate() {
        let Some(conn) = conn else {
            return Some(format!("client {i} has no connection"));
        };
        if conn.node().snapshot() != want {
            return Some(format!(
                "client {i}'s snapshot differs from the relay's:\n  client: {}\n  relay:  {}",
                conn.node()
                    .root()
                    .to_json()
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                observer
                    .node()
                    .root()
                    .to_json()
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            ));
        }
    }
    None
}

/// The acknowledged writes against the relay's document, and the locks.
fn check(journal: &Shared) -> Result<(), String> {
    let j = journal.borrow();
    let observer = j.observer.as_ref().expect("the observer");
    let node = observer.node();
    let missing = || "the relay's document lacks the test's objects".to_string();
    let map = child(node, "m").ok_or_else(missing)?;
    let items: BTreeSet<String> = array(node)
        .ok_or_else(missing)?
        .to_vec()
        .map_err(|e| e.to_string())?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let locked: Vec<MapRef> = LOCKS
        .iter()
        .map(|l| child(node, l).ok_or_else(missing))
        .collect::<Result<_, _>>()?;
    for w in &j.acked {
        let present = match w {
            Write::Map(k, v) => map.get(k).and_then(|x| x.as_i64()) == Some(*v),
            Write::Array(item) => items.contains(item),
            Write::Locked(l, k, token) => {
                locked[*l].get(k).and_then(|x| x.as_i64()) == Some(*token as i64)
            }
        };
        if !present {
            return Err(format!("an acknowledged write is missing: {w:?}"));
        }
    }
    for (l, name) in LOCKS.iter().enumerate() {
        let grants: Vec<&Grant> = j.grants.iter().filter(|g| g.lock == l).collect();
        let mut tokens = BTreeMap::new();
        for g in &grants {
            if let Some(other) = tokens.insert(g.token, *g) {
                return Err(format!(
                    "lock {name}: token {} granted twice: {other:?} and {g:?}",
                    g.token
                ));
            }
        }
        for a in &grants {
            for b in &grants {
                // A grant seen after another was released has a larger
                // token.
                if a.clean && a.released.is_some_and(|r| r <= b.at) && b.token <= a.token {
                    return Err(format!(
                        "lock {name}: token {} granted after {a:?} was released: {b:?}",
                        b.token
                    ));
                }
                // Two clients undisturbed while holding: never at once.
                if a.clean
                    && b.clean
                    && (a.client, a.boot) != (b.client, b.boot)
                    && a.at < b.released.unwrap_or(Duration::MAX)
                    && b.at < a.released.unwrap_or(Duration::MAX)
                {
                    return Err(format!("lock {name}: held at once by {a:?} and {b:?}"));
                }
            }
        }
    }
    Ok(())
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        return vec![s.parse().expect("SIM_SEED is a number")];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .map_or(50, |s| s.parse().expect("SIM_SEEDS is a number"));
    (0..n).collect()
}

#[test]
fn relay_and_clients_survive_partitions_holds_and_crashes() {
    let mut failures = Vec::new();
    for seed in seeds() {
        let outcome = std::panic::catch_unwind(|| run(seed));
        let error = match outcome {
            Ok(Ok(summary)) => {
                eprintln!("seed {seed}: {summary}");
                continue;
            }
            Ok(Err(e)) => e,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()),
        };
        eprintln!("seed {seed} FAILED: {error}");
        failures.push((seed, error));
    }
    if let Some((seed, error)) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|(s, _)| *s).collect();
        panic!(
            "{} seed(s) failed: {seeds:?}; the first, seed {seed}: {error}\n\
             replay with SIM_SEED={seed} cargo test --release -p facsimile-server --test sim",
            failures.len()
        );
    }
}
