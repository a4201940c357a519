//! The short default runs (`run --smoke`): the relay and a NATS cluster
//! under the nemesis with fixed seeds, every workload mixed. Needs the CLI
//! next to this binary (`cargo build --release -p facsimile-cli`) and
//! `nats-server` (`$NATS_SERVER` or the `PATH`, as scripts/test.sh sets).
//! As root, where loop mounts and `fsfreeze` work, each run stalls its
//! servers' disks at least once.

use std::process::Command;

#[test]
fn the_smoke_runs_pass_on_the_relay_and_on_nats() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_facsimile-jepsen"))
        .args(["run", "--smoke", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "a smoke run failed: {status}");
    for run in ["relay-all-s1", "nats-all-s2"] {
        let summary = std::fs::read_to_string(out.path().join(run).join("summary.json")).unwrap();
        let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(summary["valid"], true, "{run}: {summary:#}");
        assert!(
            summary["ok"].as_u64().unwrap() > 0,
            "{run}: nothing acknowledged"
        );
        let faults = summary["faults"].as_object().unwrap();
        assert!(!faults.is_empty(), "{run}: no fault injected");
        if summary["disks"] == "loop ext4 + fsfreeze" {
            assert!(
                faults.contains_key("disk-stall"),
                "{run}: no disk stall: {faults:?}"
            );
        }
    }
}
