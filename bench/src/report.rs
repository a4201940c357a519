//! The result of one (system, workload) run: a JSON line from the child
//! process, a row in the markdown table.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value as Json, json};

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Finished, and the replicas converged to the expected state.
    Ok,
    /// Finished, but the replicas differ or hold the wrong state.
    Fail(String),
    /// Killed after the per-pair timeout.
    Timeout,
    /// The child exited without a result (panic, abort, out of memory).
    Crash(String),
}

impl Status {
    fn label(&self) -> String {
        match self {
            Status::Ok => "OK".to_owned(),
            Status::Fail(_) => "FAIL".to_owned(),
            Status::Timeout => "TIMEOUT".to_owned(),
            Status::Crash(why) => format!("CRASH ({why})"),
        }
    }
}

/// The measurements of one run. Durations that a workload does not have are
/// `None` and show as `-`.
#[derive(Clone, Debug)]
pub struct Report {
    /// The workload's name.
    pub workload: String,
    /// The system's name.
    pub system: String,
    /// The workload's size parameter.
    pub n: usize,
    /// Operations made (edits, or objects built for the snapshot workloads).
    pub ops: u64,
    /// Time spent in local edits (the build, for the snapshot workloads).
    pub local: Option<Duration>,
    /// Time spent encoding per-op updates.
    pub encode: Option<Duration>,
    /// Time spent applying per-op updates on the receiving replicas.
    pub apply: Option<Duration>,
    /// Wall time of the whole measured part of the workload.
    pub total: Duration,
    /// The total size of the per-op updates.
    pub update_bytes: Option<u64>,
    /// The messages behind `update_bytes`, where they are not one per
    /// operation (`catch_up`).
    pub messages: Option<u64>,
    /// The size of the snapshot.
    pub snapshot_bytes: Option<u64>,
    /// Time to encode the snapshot.
    pub snapshot_encode: Option<Duration>,
    /// Time to create a replica from the snapshot.
    pub snapshot_decode: Option<Duration>,
    /// Time to read the full state back on the receiving replica.
    pub read: Option<Duration>,
    /// Peak resident memory of the child process, in bytes.
    pub peak_bytes: Option<u64>,
    /// How the run ended.
    pub status: Status,
}

impl Report {
    /// An empty report for a run that produced no measurements.
    pub fn empty(system: &str, workload: &str, n: usize, status: Status) -> Self {
        Self {
            workload: workload.to_owned(),
            system: system.to_owned(),
            n,
            ops: 0,
            local: None,
            encode: None,
            apply: None,
            total: Duration::ZERO,
            update_bytes: None,
            messages: None,
            snapshot_bytes: None,
            snapshot_encode: None,
            snapshot_decode: None,
            read: None,
            peak_bytes: None,
            status,
        }
    }

    /// The report as one JSON line, durations in milliseconds.
    pub fn to_json_line(&self) -> String {
        let (status, detail) = match &self.status {
            Status::Ok => ("OK", None),
            Status::Fail(why) => ("FAIL", Some(why.as_str())),
            Status::Timeout => ("TIMEOUT", None),
            Status::Crash(why) => ("CRASH", Some(why.as_str())),
        };
        json!({
            "workload": self.workload,
            "system": self.system,
            "n": self.n,
            "ops": self.ops,
            "local_ms": self.local.map(ms),
            "encode_ms": self.encode.map(ms),
            "apply_ms": self.apply.map(ms),
            "total_ms": ms(self.total),
            "update_bytes": self.update_bytes,
            "messages": self.messages,
            "snapshot_bytes": self.snapshot_bytes,
            "snapshot_encode_ms": self.snapshot_encode.map(ms),
            "snapshot_decode_ms": self.snapshot_decode.map(ms),
            "read_ms": self.read.map(ms),
            "peak_bytes": self.peak_bytes,
            "status": status,
            "detail": detail,
        })
        .to_string()
    }

    /// Parses a line written by [`Report::to_json_line`].
    pub fn from_json_line(line: &str) -> Option<Self> {
        let v: Json = serde_json::from_str(line).ok()?;
        let duration = |key: &str| v[key].as_f64().map(|ms| Duration::from_secs_f64(ms / 1e3));
        let detail = v["detail"].as_str().unwrap_or_default().to_owned();
        let status = match v["status"].as_str()? {
            "OK" => Status::Ok,
            "FAIL" => Status::Fail(detail),
            "TIMEOUT" => Status::Timeout,
            _ => Status::Crash(detail),
        };
        Some(Self {
            workload: v["workload"].as_str()?.to_owned(),
            system: v["system"].as_str()?.to_owned(),
            n: usize::try_from(v["n"].as_u64()?).ok()?,
            ops: v["ops"].as_u64()?,
            local: duration("local_ms"),
            encode: duration("encode_ms"),
            apply: duration("apply_ms"),
            total: duration("total_ms")?,
            update_bytes: v["update_bytes"].as_u64(),
            messages: v["messages"].as_u64(),
            snapshot_bytes: v["snapshot_bytes"].as_u64(),
            snapshot_encode: duration("snapshot_encode_ms"),
            snapshot_decode: duration("snapshot_decode_ms"),
            read: duration("read_ms"),
            peak_bytes: v["peak_bytes"].as_u64(),
            status,
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Renders reports as a markdown table.
pub fn markdown_table(reports: &[Report]) -> String {
    let mut out = String::new();
    out.push_str(
        "| workload | system | N | ops | local ms | encode ms | apply ms | total ms | µs/op \
         | bytes/op | snapshot bytes | snapshot encode ms | snapshot decode ms | read ms \
         | peak MB | status |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    let dash = || "-".to_owned();
    let millis = |d: Option<Duration>| d.map_or_else(dash, |d| format!("{:.1}", ms(d)));
    for r in reports {
        let has_result = matches!(r.status, Status::Ok | Status::Fail(_));
        let per_op = if has_result && r.ops > 0 {
            format!("{:.2}", ms(r.total) * 1e3 / r.ops as f64)
        } else {
            dash()
        };
        let bytes_per_op = match r.update_bytes {
            Some(bytes) if r.ops > 0 => format!("{:.1}", bytes as f64 / r.ops as f64),
            _ => dash(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.system,
            r.n,
            if has_result {
                r.ops.to_string()
            } else {
                dash()
            },
            millis(r.local),
            millis(r.encode),
            millis(r.apply),
            if has_result {
                millis(Some(r.total))
            } else {
                dash()
            },
            per_op,
            bytes_per_op,
            r.snapshot_bytes.map_or_else(dash, |b| b.to_string()),
            millis(r.snapshot_encode),
            millis(r.snapshot_decode),
            millis(r.read),
            r.peak_bytes
                .map_or_else(dash, |b| format!("{:.1}", b as f64 / (1024.0 * 1024.0))),
            r.status.label(),
        );
    }
    out
}

/// The peak resident set size of this process (`VmHWM`), in bytes.
pub fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
