//! The `facsimile` command's client subcommands against a real relay.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "facsimile {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn get_and_set_read_and_write_json_at_a_pointer() {
    let dir = TempDir::new("getset");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", r#"{"a": {"b": [1, 2]}, "name": "x"}"#]);
    assert_eq!(ok(&["get", addr, "/a/b", "--compact"]).trim(), "[1,2]");
    ok(&["set", addr, "/a/b/-", "3"]);
    ok(&["set", addr, "/name", r#""renamed""#]);
    assert_eq!(
        ok(&["get", addr, "--compact"]).trim(),
        r#"{"a":{"b":[1,2,3]},"name":"renamed"}"#
    );
    // Another document of the same relay is separate.
    assert_eq!(
        ok(&["get", addr, "--doc", "other", "--compact"]).trim(),
        "null"
    );

    let missing = run(&["get", addr, "/nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nothing at \"/nope\""));
    let bad_json = run(&["set", addr, "/name", "unquoted"]);
    assert_eq!(bad_json.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_json.stderr).contains("strings need quotes"));
    let wrong = Command::new(BIN)
        .args(["get", addr, "--token", "nope"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong token"));
    let down = run(&["get", "127.0.0.1:1", "--timeout", "2"]);
    assert!(String::from_utf8_lossy(&down.stderr).contains("could not connect"));
}

#[test]
fn watch_prints_the_tree_then_each_change_with_its_origin() {
    let dir = TempDir::new("watch");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", r#"{"config": {"size": 1}, "other": 0}"#]);
    let mut watch = Command::new(BIN)
        .args(["watch", addr, "/config"])
        .env("FACSIMILE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first, serde_json::json!({"size": 1}));
    ok(&["set", addr, "/other", "5", "--hostname", "elsewhere"]);
    ok(&["set", addr, "/config/size", "2", "--hostname", "writer"]);
    let change: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(change["path"], "/config/size", "{change}");
    assert_eq!(change["old"], 1);
    assert_eq!(change["new"], 2);
    assert!(
        change["origin"].as_str().unwrap().starts_with("writer#"),
        "{change}"
    );
}

#[test]
fn concurrent_lock_commands_never_overlap() {
    let dir = TempDir::new("lock");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", "{}"]);
    let file = dir.path().join("markers");
    let script = format!(
        "echo start >> {f}; sleep 0.2; echo end >> {f}",
        f = file.display()
    );
    let children: Vec<_> = (0..3)
        .map(|i| {
            Command::new(BIN)
                .args(["lock", addr, "", "--hostname", &format!("locker{i}"), "--"])
                .args(["sh", "-c", &script])
                .env("FACSIMILE_TOKEN", TOKEN)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let markers = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        markers.lines().collect::<Vec<_>>(),
        ["start", "end", "start", "end", "start", "end"],
        "the commands overlapped"
    );

    // The command's exit status comes through.
    let status = run(&["lock", addr, "", "--", "sh", "-c", "exit 3"]);
    assert_eq!(status.status.code(), Some(3));
    let scalar = run(&["set", addr, "/n", "1"]);
    assert!(scalar.status.success());
    let not_object = run(&["lock", addr, "/n", "--", "true"]);
    assert_eq!(not_object.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_object.stderr).contains("not a map or an array"));
}

#[test]
fn demo_runs_to_the_end_by_itself() {
    let out = Command::new(BIN).arg("demo").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("byte for byte"), "{text}");
    assert!(text.contains("the relay evicted carol"), "{text}");
}

#[test]
fn every_command_has_help() {
    for cmd in ["serve", "demo", "watch", "get", "set", "lock"] {
        let out = Command::new(BIN).args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help");
        assert!(!out.stdout.is_empty());
    }
}

#[test]
fn client_commands_take_a_nats_address() {
    let dir = TempDir::new("nats");
    let nats = NatsServer::start(&dir);
    let url = nats.url.as_str();
    ok(&["set", url, "", r#"{"jobs": [], "n": 1}"#]);
    ok(&["set", url, "/jobs/-", r#""build""#]);
    assert_eq!(
        ok(&["get", url, "--compact"]).trim(),
        r#"{"jobs":["build"],"n":1}"#
    );
    // The lock is granted over the stream and released when the command ends.
    let token = ok(&[
        "lock",
        url,
        "/jobs",
        "--",
        "sh",
        "-c",
        "echo $FACSIMILE_LOCK_TOKEN",
    ]);
    assert!(token.trim().parse::<u64>().unwrap() > 0);
    let status = run(&["lock", url, "/jobs", "--", "sh", "-c", "exit 4"]);
    assert_eq!(status.status.code(), Some(4));
}
