//! The short default runs (`run --smoke`): the relay and a NATS cluster
//! under the nemesis with fixed seeds, every workload mixed. Needs the CLI
//! next to this binary (`cargo build --release -p facsimile-cli` first)
//! and `nats-server` (`$NATS_SERVER` or the `PATH`, as scripts/test.sh
//! sets). As root, where loop mounts and `fsfreeze` work, each run stalls
//! its servers' disks at least once.
//!
//! A failing run keeps its directory (histories, logs, `summary.json`) and
//! prints it, with the command that reproduces the run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The runs' directory, kept and printed when the test fails.
struct Evidence {
    dir: Option<tempfile::TempDir>,
    /// How to run it again, with what changes the schedule.
    repro: String,
}

impl Evidence {
    fn path(&self) -> &Path {
        self.dir.as_ref().expect("kept until dropped").path()
    }
}

impl Drop for Evidence {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("the runs' directory is kept: {}", dir.keep().display());
            }
            eprintln!("to reproduce:\n{}", self.repro);
        }
    }
}

/// What changes a run's schedule besides its seed: root (network
/// namespaces, hence server partitions), disk stalls, blkio throttling.
fn capabilities(summary: &serde_json::Value) -> String {
    format!(
        "network {}, disks {}, slow disks {}",
        summary["network"], summary["disks"], summary["slow_disks"]
    )
}

#[test]
fn the_smoke_runs_pass_on_the_relay_and_on_nats() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_facsimile-jepsen"));
    let cli = exe.with_file_name("facsimile");
    assert!(
        cli.is_file(),
        "{} not found: run `cargo build --release -p facsimile-cli` first",
        cli.display()
    );
    let mut evidence = Evidence {
        dir: Some(tempfile::tempdir().unwrap()),
        repro: String::new(),
    };
    evidence.repro = format!(
        "  {} run --smoke --out {}  (as {}; NATS_SERVER={:?})",
        exe.display(),
        evidence.path().display(),
        if nix::unistd::geteuid().is_root() {
            "root"
        } else {
            "a user"
        },
        std::env::var_os("NATS_SERVER").unwrap_or_default(),
    );
    let status = Command::new(&exe)
        .args(["run", "--smoke", "--out"])
        .arg(evidence.path())
        .status()
        .unwrap();
    let mut summaries = Vec::new();
    for run in ["relay-all-s1", "nats-all-s2"] {
        let path = evidence.path().join(run).join("summary.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
            evidence.repro.push_str(&format!(
                "\n  {run}: {} ({})",
                summary["command"].as_str().unwrap_or("?"),
                capabilities(&summary)
            ));
            summaries.push((run, summary));
        }
    }
    assert!(status.success(), "a smoke run failed: {status}");
    assert_eq!(summaries.len(), 2, "a run wrote no summary.json");
    // A run's verdict includes enough acknowledged operations of each
    // kind, final reads, and every kind of fault its schedule holds
    // injected (`shortfalls` in the summary); as root the schedule of a
    // 40 s run has a disk stall.
    for (run, summary) in &summaries {
        assert_eq!(summary["valid"], true, "{run}: {summary:#}");
        assert!(
            !summary["schedule"].as_array().unwrap().is_empty(),
            "{run}: no fault scheduled"
        );
    }
}
