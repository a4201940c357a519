//! The `facsimile` command's client subcommands against a real relay.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::*;

/// How long a test waits for a command to go on.
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs the facsimile command as [`run_quiet`] does, failing the test if
/// it has not ended within [`PATIENCE`] (it is killed then): a command
/// that must refuse at once must not hang the test instead.
fn run_ending(args: &[&str]) -> std::process::Output {
    let mut child = Killed(
        Command::new(BIN)
            .args(args)
            .env("FACSIMILE_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the facsimile binary runs"),
    );
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.0.stdout.take().unwrap()));
    let stderr = read(Box::new(child.0.stderr.take().unwrap()));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "facsimile {args:?} did not end"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

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
    ok(&["set", addr, "--doc", "other", "", "[]"]);
    assert_eq!(
        ok(&["get", addr, "--doc", "other", "--compact"]).trim(),
        "[]"
    );
    // Reading a document nobody wrote (a typo) creates nothing.
    for command in ["get", "watch"] {
        let typo = run_ending(&[command, addr, "--doc", "othre"]);
        let stderr = String::from_utf8_lossy(&typo.stderr);
        assert_eq!(typo.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("no such document \"othre\""),
            "{command}: {stderr}"
        );
    }
    assert!(dir.path().join("data").join("other").exists());
    assert!(!dir.path().join("data").join("othre").exists());

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

/// `serve --document-queue` bounds a document's inbound bytes: at one
/// byte every frame waits for the one before it to be committed, and
/// every write still lands.
#[test]
fn a_relay_with_the_smallest_document_queue_takes_every_write() {
    let dir = TempDir::new("docqueue");
    let relay = Relay::start(&dir, &["--document-queue", "1"]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", r#"{"l": []}"#]);
    for i in 0..5 {
        ok(&["set", addr, "/l/-", &i.to_string()]);
    }
    assert_eq!(ok(&["get", addr, "/l", "--compact"]).trim(), "[0,1,2,3,4]");
    let zero = run(&["serve", "--document-queue", "0"]);
    assert_eq!(zero.status.code(), Some(2), "refused by the parser");
}

#[test]
fn client_commands_take_a_websocket_address() {
    let dir = TempDir::new("ws");
    let relay = Relay::start(&dir, &[]);
    let ws = format!("ws://{}/", relay.addr);
    ok(&["set", &ws, "", r#"{"over": "ws"}"#]);
    assert_eq!(
        ok(&["get", &relay.addr, "--compact"]).trim(),
        r#"{"over":"ws"}"#
    );
    ok(&["set", &relay.addr, "/over", r#""tcp""#]);
    assert_eq!(ok(&["get", &ws, "/over", "--compact"]).trim(), r#""tcp""#);
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
    // A new root: what is at the path now, and who replaced the root.
    ok(&[
        "set",
        addr,
        "",
        r#"{"config": {"size": 3}}"#,
        "--hostname",
        "replacer",
    ]);
    let replaced: serde_json::Value =
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(change["path"], "/config/size", "{change}");
    assert_eq!(change["old"], 1);
    assert_eq!(change["new"], 2);
    assert!(
        change["origin"].as_str().unwrap().starts_with("writer#"),
        "{change}"
    );
    assert_eq!(replaced["replaced"], true, "{replaced}");
    assert_eq!(
        replaced["value"],
        serde_json::json!({"size": 3}),
        "{replaced}"
    );
    assert!(
        replaced["origin"]
            .as_str()
            .unwrap()
            .starts_with("replacer#"),
        "{replaced}"
    );
}

/// A second interrupt stops `watch` waiting to leave a relay that is gone.
#[cfg(unix)]
#[test]
fn a_second_interrupt_stops_watch_waiting_for_a_relay_that_is_gone() {
    let dir = TempDir::new("watch-leave");
    let mut relay = Relay::start(&dir, &[]);
    let addr = relay.addr.clone();
    ok(&["set", &addr, "", r#"{"a": 1}"#]);
    let mut watch = Command::new(BIN)
        .args(["watch", &addr, "/a", "-vv"])
        .env("FACSIMILE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "1");
    relay.kill();
    let (log_tx, log) = mpsc::channel();
    let stderr = watch.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut until = |what: &str| loop {
        let line = log
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no {what:?} in {seen:#?}"));
        let found = line.contains(what);
        seen.push(line);
        if found {
            return;
        }
    };
    let pid = rustix::process::Pid::from_raw(watch.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    until("leaving the document");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    until("interrupted while leaving the document");
    let status = watch.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// `facsimile watch ADDR PATH` running, and what gives its next line as
/// JSON (failing the test when none comes in time: the lines are read
/// as they come).
fn watching(addr: &str, path: &str) -> (Killed, impl Fn() -> serde_json::Value) {
    let mut watch = Killed(
        Command::new(BIN)
            .args(["watch", addr, path])
            .env("FACSIMILE_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, lines) = mpsc::channel();
    let out = BufReader::new(watch.0.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = move || -> serde_json::Value {
        let line = lines.recv_timeout(PATIENCE);
        serde_json::from_str(&line.expect("watch prints a line")).unwrap()
    };
    (watch, next)
}

/// An object reached from two places is watched under the path asked for:
/// a change made through the other place is shown under the watched one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_a_shared_object_under_the_watched_path() {
    let dir = TempDir::new("watch-shared");
    let relay = Relay::start(&dir, &[]);
    let writer = connect(&relay, "writer").await;
    let root = writer
        .node()
        .set_root(serde_json::json!({"a": {"v": 1}}))
        .unwrap();
    let root = root.as_map().unwrap().clone();
    let shared = root.get("a").unwrap();
    root.set("b", shared.clone()).unwrap();
    writer.flush().await.unwrap();

    let (_watch, next) = watching(&relay.addr, "/b");
    assert_eq!(next(), serde_json::json!({"v": 1}));
    shared.as_map().unwrap().set("v", 2).unwrap();
    writer.flush().await.unwrap();
    let change = next();
    assert_eq!(change["path"], "/b/v", "{change}");
    assert_eq!(change["new"], 2, "{change}");
}

/// `get` and `watch` write an object met again (a cycle, a second place)
/// as a reference to where they first wrote it, rather than fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_watch_write_an_object_met_again_as_a_reference() {
    let dir = TempDir::new("get-cycle");
    let relay = Relay::start(&dir, &[]);
    let writer = connect(&relay, "writer").await;
    let root = writer
        .node()
        .set_root(serde_json::json!({"name": "loop", "list": []}))
        .unwrap();
    let root = root.as_map().unwrap().clone();
    root.set("self", root.clone()).unwrap();
    let list = root.get("list").unwrap();
    list.as_array().unwrap().push(root.clone()).unwrap();
    writer.flush().await.unwrap();
    let addr = relay.addr.clone();
    let (whole, under) = tokio::task::spawn_blocking(move || {
        (
            ok(&["get", &addr, "--compact"]),
            ok(&["get", &addr, "/list", "--compact"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        whole.trim(),
        r#"{"list":[{"$ref":""}],"name":"loop","self":{"$ref":""}}"#
    );
    assert_eq!(
        under.trim(),
        r#"[{"list":{"$ref":"/list"},"name":"loop","self":{"$ref":"/list/0"}}]"#
    );

    let (_watch, next) = watching(&relay.addr, "/list");
    assert_eq!(next()[0]["self"], serde_json::json!({"$ref": "/list/0"}));
    root.set("again", root.clone()).unwrap();
    writer.flush().await.unwrap();
    let change = next();
    assert_eq!(change["path"], "/list/0/again", "{change}");
    assert_eq!(
        change["new"]["self"],
        serde_json::json!({"$ref": "/list/0/again"})
    );
}

/// `set` reads the notation `get` writes: what `get` printed, given back
/// to `set`, is the same document again, a key `$ref` and references
/// (shared objects, cycles) included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_reads_back_what_get_writes() {
    let dir = TempDir::new("set-refs");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.clone();
    let cli = move |args: &'static [&'static str], json: Option<String>| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut all: Vec<&str> = vec![args[0], &addr];
            all.extend(&args[1..]);
            if let Some(json) = &json {
                all.push(json);
            }
            run(&all)
        })
    };
    let ok_out = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    ok_out(cli(&["set", ""], Some("{}".into())).await.unwrap());
    // A stored key `$ref`: written `$$ref`, read back as `$ref`.
    ok_out(
        cli(&["set", "/x"], Some(r#"{"$ref": 1}"#.into()))
            .await
            .unwrap(),
    );
    let x = ok_out(cli(&["get", "/x", "--compact"], None).await.unwrap());
    assert_eq!(x, r#"{"$$ref":1}"#);
    ok_out(cli(&["set", "/y"], Some(x.clone())).await.unwrap());
    let y = ok_out(cli(&["get", "/y", "--compact"], None).await.unwrap());
    assert_eq!(y, x);

    // References: a shared object and a cycle.
    let writer = connect(&relay, "writer").await;
    let a = writer
        .node()
        .set_path("/a", serde_json::json!({"v": {"n": 1}}))
        .map(|()| writer.node().get("/a").unwrap())
        .unwrap();
    let a = a.as_map().unwrap().clone();
    a.set("w", a.get("v").unwrap()).unwrap();
    a.set("self", a.clone()).unwrap();
    writer.node().set_path("/b", a.clone()).unwrap();
    writer.close(Duration::from_secs(5)).await.unwrap();
    let whole = ok_out(cli(&["get", "--compact"], None).await.unwrap());
    assert!(whole.contains(r#""b":{"$ref":"/a"}"#), "{whole}");
    ok_out(cli(&["set", ""], Some(whole.clone())).await.unwrap());
    let again = ok_out(cli(&["get", "--compact"], None).await.unwrap());
    assert_eq!(again, whole);
    // Elsewhere, a pointer outside PATH names the object in the document.
    let of_a = ok_out(cli(&["get", "/a", "--compact"], None).await.unwrap());
    ok_out(cli(&["set", "/copy"], Some(of_a)).await.unwrap());
    let reader = connect(&relay, "reader").await;
    let node = reader.node();
    let id = |p: &str| node.get(p).and_then(|v| v.as_object()).map(|o| o.id());
    assert!(id("/a").is_some());
    assert_eq!(id("/b"), id("/a"), "a reference, not a copy");
    assert_eq!(id("/a/self"), id("/a"), "a cycle");
    assert_eq!(id("/a/w"), id("/a/v"));
    assert_ne!(id("/copy"), id("/a"), "a new map");
    assert_eq!(id("/copy/self"), id("/a"));
    assert_eq!(id("/copy/w"), id("/a/v"));
    reader.close(Duration::from_secs(5)).await.unwrap();

    let dangling = cli(&["set", "/z"], Some(r#"{"$ref": "/nope"}"#.into()))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&dangling.stderr);
    assert_eq!(dangling.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing at \"/nope\""), "{stderr}");
}

/// `watch` ends, failing with the reason, once its connection stops for
/// good (here a frame larger than its `--max-frame`), rather than run on
/// printing nothing more.
#[test]
fn watch_fails_when_its_connection_stops_for_good() {
    let dir = TempDir::new("watch-failed");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", r#"{"config": {"size": 1}}"#]);
    let mut watch = Command::new(BIN)
        .args(["watch", addr, "/config", "--max-frame", "4096"])
        .env("FACSIMILE_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(watch.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), r#"{"size":1}"#);
    let big = format!("{:?}", "x".repeat(8192));
    ok(&["set", addr, "/big", &big]);
    let done = finished(watch);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("max_frame of 4096 bytes"), "{stderr}");
}

/// A document larger than `--max-frame` fails `get` at once with the
/// reason, not after `--timeout` as if the relay were slow.
#[test]
fn get_fails_at_once_when_the_document_exceeds_its_max_frame() {
    let dir = TempDir::new("get-max-frame");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", &format!("{:?}", "x".repeat(8192))]);
    // A timeout longer than the test waits: failing only after it would
    // fail the test.
    let out = run_ending(&["get", addr, "--max-frame", "4096", "--timeout", "600"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("max_frame of 4096 bytes"), "{stderr}");
    assert!(!stderr.contains("timed out"), "{stderr}");
}

/// `get` and `watch` end with success when their reader is gone (a pipe
/// into `head`), not with a panic or by running on.
#[cfg(unix)]
#[test]
fn get_and_watch_end_quietly_when_their_reader_is_gone() {
    let dir = TempDir::new("closed-pipe");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", r#"{"a": 1}"#]);
    for command in ["get", "watch"] {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        drop(reader);
        let child = Command::new(BIN)
            .args([command, addr])
            .env("FACSIMILE_TOKEN", TOKEN)
            .stdout(Stdio::from(writer))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = finished(child);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{command}: {stderr}");
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
    }
}

/// `watch | head -1` ends once `head` has gone, on a quiet document too:
/// nothing more is written that would meet the closed pipe, so the
/// reader's leaving is noticed by itself.
#[cfg(unix)]
#[test]
fn watch_ends_when_its_reader_goes_on_a_quiet_document() {
    let dir = TempDir::new("watch-head");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", r#"{"a": 1}"#]);
    let mut watch = Command::new(BIN)
        .args(["watch", addr, "/a"])
        .env("FACSIMILE_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(watch.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "1");
    drop(out);
    let done = finished(watch);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(0), "{stderr}");
}

/// Ctrl-C at a terminal reaches the command once: the terminal sends it
/// to the whole foreground process group, the command with `lock`, which
/// does not pass it on again; one sent to `lock` alone, it passes on. (`script` of util-linux gives the command a
/// terminal.)
#[cfg(target_os = "linux")]
#[test]
fn an_interrupt_from_the_terminal_reaches_the_command_once() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("this test needs `script` (util-linux) to make a terminal");
    }
    let dir = TempDir::new("lock-tty");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", "{}"]);
    let go = dir.path().join("go");
    let command = format!(
        "n=0; trap 'n=$((n+1)); echo \"interrupt $n\"' INT; echo \"ready $PPID\"; \
         while [ ! -f {go} ]; do sleep 0.05; done; echo \"count $n\"",
        go = go.display()
    );
    let run = dir.path().join("run.sh");
    std::fs::write(
        &run,
        format!(
            "exec '{BIN}' -v lock {addr} '' -- sh -c '{}'\n",
            command.replace('\'', r"'\''")
        ),
    )
    .unwrap();
    let mut terminal = Killed(
        Command::new("script")
            .args(["-qec", &format!("sh {}", run.display()), "/dev/null"])
            .env("FACSIMILE_TOKEN", TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut keys = terminal.0.stdin.take().unwrap();
    let (tx, lines) = mpsc::channel();
    let out = BufReader::new(terminal.0.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line.trim().to_string());
        }
    });
    // Lines not yet waited for: the command's and `lock`'s lines come in
    // either order.
    let unread = std::cell::RefCell::new(Vec::<String>::new());
    let until = |what: &str| loop {
        let mut unread = unread.borrow_mut();
        if let Some(at) = unread.iter().position(|line| line.contains(what)) {
            return unread.remove(at);
        }
        let line = lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no {what:?} in {unread:#?}"));
        unread.push(line);
    };
    let ready = until("ready");
    let lock: i32 = ready.trim_start_matches("ready ").parse().unwrap();
    keys.write_all(b"\x03").unwrap();
    keys.flush().unwrap();
    until("interrupt 1");
    // Two interrupts pending at once are one to `lock` (signals merge), so
    // the next is sent once `lock` has taken this one.
    until("had the signal from the terminal");
    // An interrupt sent to `lock` alone (`kill -INT`) is passed on.
    let lock = rustix::process::Pid::from_raw(lock).unwrap();
    rustix::process::kill_process(lock, rustix::process::Signal::INT).unwrap();
    until("interrupt 2");
    std::fs::write(&go, b"").unwrap();
    assert_eq!(until("count"), "count 2", "one interrupt each, not more");
}

/// `lock --wait 0` runs its command when the lock is free and fails at
/// once, without running it, when another node holds it.
#[cfg(unix)]
#[test]
fn lock_with_no_wait_fails_at_once_when_the_lock_is_taken() {
    let dir = TempDir::new("lock-nowait");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", "{}"]);
    let free = ok(&["lock", addr, "", "--wait", "0", "--", "echo", "ran"]);
    assert_eq!(free.trim(), "ran");
    let (holder, pid) = lock_running(addr, &[], "echo $$; exec sleep 600");
    let taken = run(&["lock", addr, "", "--wait", "0", "--", "echo", "ran"]);
    let stderr = String::from_utf8_lossy(&taken.stderr);
    assert_eq!(taken.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("locked by another node"), "{stderr}");
    assert!(taken.stdout.is_empty(), "the command did not run");
    let pid = rustix::process::Pid::from_raw(pid.parse().unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    finished(holder);
}

/// SIGTERM to `facsimile lock` reaches the command, which ends; only then
/// is the lock released (the next holder's token is larger), and the exit
/// code is the command's.
#[cfg(unix)]
#[test]
fn a_signal_to_lock_is_passed_on_and_the_lock_released_after_the_command() {
    let dir = TempDir::new("lock-signal");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", "{}"]);
    let marker = dir.path().join("marker");
    let script = format!(
        "trap 'echo term >> {m}; exit 7' TERM; echo $FACSIMILE_LOCK_TOKEN; \
         i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
        m = marker.display()
    );
    let mut holder = Command::new(BIN)
        .args([
            "lock",
            addr,
            "",
            "--hostname",
            "holder",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("FACSIMILE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let out = BufReader::new(holder.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first: u64 = lines
        .recv_timeout(PATIENCE)
        .expect("the command runs under the lock")
        .trim()
        .parse()
        .unwrap();
    let pid = rustix::process::Pid::from_raw(holder.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(holder.wait());
    });
    let status = exited
        .recv_timeout(PATIENCE)
        .expect("facsimile lock ends after its command")
        .unwrap();
    assert_eq!(status.code(), Some(7), "the command's exit code");
    let trapped = std::fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(trapped.trim(), "term", "the command got the signal");
    assert!(next_token(addr) > first);
}

/// The token of the next grant of the root's lock, once it comes.
fn next_token(addr: &str) -> u64 {
    let next = ok(&[
        "lock",
        addr,
        "",
        "--wait",
        "30",
        "--",
        "sh",
        "-c",
        "echo $FACSIMILE_LOCK_TOKEN",
    ]);
    next.trim().parse().unwrap()
}

/// Runs `facsimile lock` on the root with `extra` options and `script` as
/// its command; returns the process and the first line the command
/// printed.
fn lock_running(addr: &str, extra: &[&str], script: &str) -> (std::process::Child, String) {
    let mut holder = Command::new(BIN)
        .args(["lock", addr, ""])
        .args(extra)
        .args(["--", "sh", "-c", script])
        .env("FACSIMILE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let (tx, line) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = out.read_line(&mut first);
        let _ = tx.send(first);
    });
    let first = line
        .recv_timeout(PATIENCE)
        .expect("the command runs under the lock");
    (holder, first.trim().to_string())
}

/// The output of `child` once it has exited.
fn finished(child: std::process::Child) -> std::process::Output {
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    exited
        .recv_timeout(PATIENCE)
        .expect("the facsimile command ends")
        .unwrap()
}

/// With its connection to the relay down, `facsimile lock` stops the
/// command rather than let it run on without the lock: the relay evicts a
/// node whose connection drops (at once, by default) and gives its locks
/// to the next in line.
#[cfg(unix)]
#[test]
fn a_lock_whose_connection_drops_stops_its_command() {
    let dir = TempDir::new("lock-cut");
    let mut relay = Relay::start(&dir, &[]);
    let addr = relay.addr.clone();
    ok(&["set", &addr, "", "{}"]);
    let (holder, pid) = lock_running(&addr, &[], "echo $$; exec sleep 600");
    let pid = rustix::process::Pid::from_raw(pid.parse().unwrap()).unwrap();
    relay.kill();
    let out = finished(holder);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lost the connection to the relay") && stderr.contains("stopped"),
        "{stderr}"
    );
    assert!(
        rustix::process::test_kill_process(pid).is_err(),
        "the command still runs"
    );
}

/// Within `--disconnect-grace`, a relay that is back (here restarted, and
/// keeping disconnected nodes for its `--reconnect-grace`) finds the
/// command still running under the lock, and it ends as it would have.
#[cfg(unix)]
#[test]
fn a_lock_rides_out_a_short_disconnection_within_its_grace() {
    let dir = TempDir::new("lock-grace");
    let mut relay = Relay::start(&dir, &["--reconnect-grace", "60", "--peer-timeout", "60"]);
    let addr = relay.addr.clone();
    ok(&["set", &addr, "", "{}"]);
    let go = dir.path().join("go");
    let script = format!(
        "echo $FACSIMILE_LOCK_TOKEN; while [ ! -f {go} ]; do sleep 0.05; done; exit 5",
        go = go.display()
    );
    let (holder, token) = lock_running(&addr, &["--disconnect-grace", "30"], &script);
    relay.restart();
    std::fs::write(&go, b"").unwrap();
    let out = finished(holder);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(5),
        "the command's own status: {stderr}"
    );
    assert!(next_token(&addr) > token.parse::<u64>().unwrap());
}

/// A command that fails says goodbye all the same: with a relay that
/// keeps a disconnected node a member for its `--reconnect-grace`, a node
/// that left without one would hold up every lock grant for that long.
#[cfg(unix)]
#[test]
fn failing_commands_leave_the_document_at_once() {
    let dir = TempDir::new("goodbye");
    let relay = Relay::start(&dir, &["--reconnect-grace", "8"]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", r#"{"l": [], "n": 1}"#]);
    let failing: [&[&str]; 3] = [
        &["set", addr, "/l/99", "1"],
        &["lock", addr, "/nope", "--", "true"],
        &["lock", addr, "/n", "--", "true"],
    ];
    for args in failing {
        let out = run_ending(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
    }
    // A lock given up after `--wait` leaves its place in the queue too.
    let (holder, pid) = lock_running(addr, &[], "echo $$; exec sleep 600");
    let waited = run_ending(&["lock", addr, "", "--wait", "0.2", "--", "true"]);
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(stderr.contains("not granted within"), "{stderr}");
    let pid = rustix::process::Pid::from_raw(pid.parse().unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    finished(holder);
    // Well within the relay's grace: nobody is left to wait for.
    let out = run_ending(&["lock", addr, "/l", "--wait", "2", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `serve` on a data directory another relay runs on fails at once,
/// naming the directory, instead of writing beside it.
#[test]
fn serve_on_a_data_directory_in_use_fails() {
    let dir = TempDir::new("data-in-use");
    let _relay = Relay::start(&dir, &[]);
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = run_ending(&["serve", "--listen", "127.0.0.1:0", "--data", data]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another relay") && stderr.contains(data),
        "{stderr}"
    );
}

/// `serve` refuses a peer timeout shorter than three heartbeats of a
/// client at its default pace (one a second), which would evict healthy
/// nodes, saying why and what the least is; three is taken.
#[test]
fn serve_refuses_a_peer_timeout_below_three_client_heartbeats() {
    for timeout in ["0.1", "2.9"] {
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ephemeral",
            "--peer-timeout",
            timeout,
        ];
        let out = run_ending(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{timeout}: {stderr}");
        assert!(
            stderr.contains("--peer-timeout")
                && stderr.contains("heartbeat")
                && stderr.contains("at least 3"),
            "{timeout}: {stderr}"
        );
    }
}

/// Times on the command line are checked: a negative, infinite or
/// unreadable one is refused with the option's name, not a crash.
#[test]
fn times_on_the_command_line_are_checked() {
    for args in [
        &["serve", "--peer-timeout=-1"][..],
        &["serve", "--peer-timeout", "0"],
        &["serve", "--peer-timeout", "NaN"],
        &["serve", "--reconnect-grace", "inf"],
        &["get", "127.0.0.1:1", "--timeout", "1e300"],
        // Within a Duration, but past what a clock can add.
        &["get", "127.0.0.1:1", "--timeout", "1e19"],
        &["lock", "127.0.0.1:1", "", "--wait", "1e19", "--", "true"],
        &["serve", "--close-idle", "1e19"],
        &["lock", "127.0.0.1:1", "", "--wait=-2", "--", "true"],
        &[
            "lock",
            "127.0.0.1:1",
            "",
            "--disconnect-grace",
            "soon",
            "--",
            "true",
        ],
    ] {
        let out = run_ending(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("invalid value"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// A PATH that is not a JSON pointer is refused at once, by every command
/// that takes one: `watch` printed null and waited for ever.
#[test]
fn paths_that_are_not_json_pointers_are_refused() {
    for args in [
        &["watch", "127.0.0.1:1", "a"][..],
        &["get", "127.0.0.1:1", "a/b"],
        &["set", "127.0.0.1:1", "/a~2", "1"],
        &["lock", "127.0.0.1:1", "a", "--", "true"],
    ] {
        let out = run_ending(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not a JSON pointer"), "{args:?}: {stderr}");
    }
}

/// `inspect` prints the URL for a relay's address given with the scheme
/// of its WebSocket (or web) port too, and refuses what no relay serves:
/// another scheme, a name no document can have.
#[test]
fn inspect_takes_the_relays_web_addresses_and_refuses_bad_names() {
    for (addr, url) in [
        (
            "127.0.0.1:7901",
            "http://127.0.0.1:7901/inspect/d?token=test-token",
        ),
        (
            "ws://127.0.0.1:7901/",
            "http://127.0.0.1:7901/inspect/d?token=test-token",
        ),
        (
            "wss://relay:443",
            "https://relay:443/inspect/d?token=test-token",
        ),
        (
            "http://relay:80/",
            "http://relay:80/inspect/d?token=test-token",
        ),
    ] {
        let out = run_ending(&["inspect", addr, "--doc", "d"]);
        assert!(out.status.success(), "{addr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{url}\n"));
    }
    for args in [
        &["inspect", "nats://127.0.0.1:4222"][..],
        &["inspect", "ws://127.0.0.1:7901/other/path"],
        &["inspect", "127.0.0.1:7901", "--doc", "../x"],
        &["inspect", "127.0.0.1:7901", "--doc", ".hidden"],
        &["inspect", "127.0.0.1:7901", "--doc", ""],
    ] {
        let out = run_ending(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: no URL");
        assert!(stderr.contains("invalid value"), "{args:?}: {stderr}");
    }
}

/// Settings that would have the relay refuse every client are refused
/// when it starts.
#[test]
fn serve_refuses_limits_no_client_could_meet() {
    let serve = ["serve", "--ephemeral", "--listen", "127.0.0.1:0"];
    for extra in [
        &["--max-frame", "0"][..],
        &["--max-frame", "100"],
        &["--max-documents", "0"],
    ] {
        let args = [&serve[..], extra].concat();
        let out = run_ending(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("invalid value"), "{args:?}: {stderr}");
    }
    let long_token = "t".repeat(8192);
    let out = run_ending(&[&serve[..], &["--max-frame", "8192", "--token", &long_token]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--token is too long"), "{stderr}");
}

/// `lock` exits as a shell does when its command cannot run: 127 when it
/// is not found, 126 when it is found but cannot be executed; only its
/// own failures are 1.
#[cfg(unix)]
#[test]
fn lock_tells_a_command_not_found_or_not_executable_by_its_status() {
    let dir = TempDir::new("lock-exec");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", "{}"]);
    let not_executable = dir.path().join("script.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    let missing = dir.path().join("no-such-command");
    for (command, code) in [(&missing, 127), (&not_executable, 126)] {
        let out = run_ending(&["lock", addr, "", "--", command.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{command:?}: {stderr}");
        assert!(stderr.contains("cannot run"), "{stderr}");
    }
    // The lock was released each time.
    assert_eq!(
        ok(&["lock", addr, "", "--wait", "0", "--", "echo", "free"]).trim(),
        "free"
    );
}

/// A command whose lock is lost gets SIGTERM first, so that it may clean
/// up; one that ignores it is killed after `--kill-grace`.
#[cfg(unix)]
#[test]
fn a_lost_lock_terminates_its_command_before_killing_it() {
    let dir = TempDir::new("lock-term");
    let mut relay = Relay::start(&dir, &[]);
    let addr = relay.addr.clone();
    ok(&["set", &addr, "", "{}"]);
    let marker = dir.path().join("marker");
    let script = format!(
        "trap 'echo term > {m}; exit 3' TERM; echo $$; \
         while true; do sleep 0.05; done",
        m = marker.display()
    );
    let (holder, _) = lock_running(&addr, &[], &script);
    relay.kill();
    let out = finished(holder);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    let trapped = std::fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(trapped.trim(), "term", "the command had SIGTERM");

    // Ignoring SIGTERM, it is killed once the grace is over.
    relay.restart();
    let addr = relay.addr.clone();
    let (holder, pid) = lock_running(
        &addr,
        &["--kill-grace", "0.2"],
        "trap '' TERM; echo $$; exec sleep 600",
    );
    let pid = rustix::process::Pid::from_raw(pid.parse().unwrap()).unwrap();
    relay.kill();
    let out = finished(holder);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        rustix::process::test_kill_process(pid).is_err(),
        "the command still runs"
    );
}

/// A child process killed when dropped, a failed assertion included.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn concurrent_lock_commands_never_overlap() {
    let dir = TempDir::new("lock");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    ok(&["set", addr, "", "{}"]);
    let markers = dir.path().join("markers");
    // Each holder records its entry and exit with its fencing token, and
    // stays inside until the test writes to a pipe named after the token.
    let script = format!(
        "mkfifo {d}/go-$FACSIMILE_LOCK_TOKEN; \
         echo start $FACSIMILE_LOCK_TOKEN >> {m}; echo $FACSIMILE_LOCK_TOKEN; \
         read _ < {d}/go-$FACSIMILE_LOCK_TOKEN; \
         echo end $FACSIMILE_LOCK_TOKEN >> {m}",
        d = dir.path().display(),
        m = markers.display()
    );
    let (tx, events) = mpsc::channel();
    let mut children = Vec::new();
    for i in 0..3 {
        let mut child = Command::new(BIN)
            .args(["lock", addr, "", "--hostname", &format!("locker{i}"), "--"])
            .args(["sh", "-c", &script])
            .env("FACSIMILE_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let entered = tx.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = entered.send(Locker::Entered(line.trim().parse().unwrap()));
            }
        });
        let requested = tx.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains("lock requested") {
                    let _ = requested.send(Locker::Requested);
                }
            }
        });
        children.push(child);
    }
    let next = || events.recv_timeout(PATIENCE).expect("a locker to go on");
    // Every request is in the lock's queue before anybody leaves: whoever
    // holds the lock holds it while the others wait for it.
    let mut requested = 0;
    let mut entered = Vec::new();
    while requested < 3 {
        match next() {
            Locker::Requested => requested += 1,
            Locker::Entered(token) => entered.push(token),
        }
    }
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let token = match entered.pop() {
            Some(token) => token,
            None => match next() {
                Locker::Entered(token) => token,
                Locker::Requested => panic!("a fourth request"),
            },
        };
        assert!(
            entered.is_empty(),
            "two holders at once: {token} and {entered:?}"
        );
        let inside = std::fs::read_to_string(&markers).unwrap();
        let starts = inside.lines().filter(|l| l.starts_with("start")).count();
        let ends = inside.lines().filter(|l| l.starts_with("end")).count();
        assert_eq!(starts, ends + 1, "the commands overlapped:\n{inside}");
        tokens.push(token);
        let go = dir.path().join(format!("go-{token}"));
        writeln!(std::fs::OpenOptions::new().write(true).open(go).unwrap()).unwrap();
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let markers = std::fs::read_to_string(&markers).unwrap();
    let expected: Vec<String> = tokens
        .iter()
        .flat_map(|t| [format!("start {t}"), format!("end {t}")])
        .collect();
    assert_eq!(
        markers.lines().collect::<Vec<_>>(),
        expected,
        "the commands overlapped"
    );
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens increase: {tokens:?}"
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

/// What a `facsimile lock` of the overlap test reports.
enum Locker {
    /// Its request is in the queue (its log says so).
    Requested,
    /// Its command runs, holding the lock with this token.
    Entered(u64),
}

#[test]
fn writing_below_the_root_of_an_empty_document_says_how_to_start_it() {
    let dir = TempDir::new("empty");
    let relay = Relay::start(&dir, &[]);
    let addr = relay.addr.as_str();
    let out = run_quiet(&["set", addr, "/a", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: document \"default\" is empty: write its root first, as in: \
             facsimile set {addr} \"\" '{{\"a\":1}}'\n"
        )
    );
    // Once the document has a root, a missing parent is named once.
    ok(&["set", addr, "", "{}"]);
    let out = run_quiet(&["set", addr, "/x/y", "1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: cannot write at \"/x/y\": its parent is not a map or an array\n"
    );
}

#[test]
fn a_server_that_is_not_a_relay_is_named_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let http = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 256];
        let _ = conn.read(&mut request);
        conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    });
    let out = run_quiet(&["get", &addr]);
    http.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: the peer at {addr} is not a facsimile relay (or is one that expects TLS); \
             check the address and port\n"
        )
    );
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

/// An interrupt ends the demo early and leaves no directory behind.
#[cfg(unix)]
#[test]
fn an_interrupted_demo_removes_its_directory() {
    let tmp = TempDir::new("demo-interrupted");
    let mut demo = Command::new(BIN)
        .arg("demo")
        .env("TMPDIR", &tmp.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let listening = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("listening on"))
        .expect("the relay's line");
    let made: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().collect();
    assert_eq!(made.len(), 1, "{listening}");
    let pid = rustix::process::Pid::from_raw(demo.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = demo.wait().unwrap();
    let mut err = String::new();
    demo.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("interrupted"), "{status}: {err}");
    let left: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
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
