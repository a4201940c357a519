//! The runner's processes die with it, and the next run kills those a
//! runner killed too abruptly left behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use facsimile_jepsen::cluster::{RUNNER_ENV, kill_orphans};

const EXE: &str = env!("CARGO_BIN_EXE_facsimile-jepsen");

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Waits until process `pid` shows [`RUNNER_ENV`] in its environment.
fn environment_set(pid: u32) {
    let set = || {
        std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
            env.split(|&b| b == 0)
                .any(|v| v.starts_with(RUNNER_ENV.as_bytes()))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !set() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(set(), "process {pid} has no {RUNNER_ENV}");
}

fn gone_within(pid: u32, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A shell standing for a runner starts `child` in the background, says
/// its pid, and is then killed with `SIGKILL`: returns the child's pid.
fn orphan(child: &str) -> u32 {
    let mut runner = Command::new("sh")
        .arg("-c")
        .arg(format!("export {RUNNER_ENV}=$$; {child} & echo $!; wait"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(runner.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    // The guard has set its parent-death signal once `sleep` runs.
    let sleeping = || {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| exe.file_name() == Some("sleep".as_ref()))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sleeping() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(sleeping(), "{child} did not run `sleep`");
    runner.kill().unwrap();
    runner.wait().unwrap();
    pid
}

#[test]
fn a_guarded_server_dies_with_its_runner() {
    let pid = orphan(&format!("{EXE} guard -- sleep 300"));
    assert!(
        gone_within(pid, Duration::from_secs(5)),
        "the guarded process {pid} outlived its runner"
    );
    // Unguarded, it would have lived on. Without the runner's variable, so
    // that `kill_orphans` in a test running beside this one leaves it be.
    let pid = orphan(&format!("env -u {RUNNER_ENV} sleep 300"));
    assert!(!gone_within(pid, Duration::from_millis(300)));
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

#[test]
fn processes_a_dead_runner_left_behind_are_killed_and_no_others() {
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    assert!(!Path::new(&format!("/proc/{dead_pid}")).exists());
    let mut orphan = Command::new("sleep")
        .arg("300")
        .env(RUNNER_ENV, dead_pid.to_string())
        .spawn()
        .unwrap();
    // One whose runner (this test) lives.
    let mut adopted = Command::new("sleep")
        .arg("300")
        .env(RUNNER_ENV, std::process::id().to_string())
        .spawn()
        .unwrap();
    // `spawn` returns once the child's descriptors closed on `exec`, which
    // is before the kernel gives the new program its environment.
    environment_set(orphan.id());
    environment_set(adopted.id());
    assert!(kill_orphans() >= 1);
    let status = orphan.wait().unwrap();
    assert!(!status.success(), "{status}");
    assert!(
        adopted.try_wait().unwrap().is_none(),
        "a live runner's process was killed"
    );
    adopted.kill().unwrap();
    adopted.wait().unwrap();
}
