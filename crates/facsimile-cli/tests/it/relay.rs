//! The relay with in-process clients: convergence, durability across
//! `kill -9`, lock release on a crash, and refusals.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use facsimile::Value;
use facsimile::net::{self, NetError, TlsOptions};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_converge() {
    let dir = TempDir::new("converge");
    let relay = Relay::start(&dir, &[]);
    let a = connect(&relay, "alice").await;
    a.node().set_root(json!({"list": []})).unwrap();
    a.flush().await.unwrap();
    let b = connect(&relay, "bob").await;
    let c = connect(&relay, "carol").await;
    let mut tasks = Vec::new();
    for (i, conn) in [&a, &b, &c].into_iter().enumerate() {
        let node = conn.node().clone();
        tasks.push(tokio::spawn(async move {
            let root = node.root_map().unwrap();
            let list = node.get("/list").unwrap().as_array().unwrap().clone();
            for j in 0..50 {
                root.set(&format!("k{i}_{j}"), j).unwrap();
                list.push(format!("{i}.{j}")).unwrap();
                if j % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for conn in [&a, &b, &c] {
        conn.flush().await.unwrap();
    }
    converge(&[a.node(), b.node(), c.node()]).await;
    let root = c.node().root_map().unwrap();
    assert_eq!(root.len(), 1 + 150);
    assert_eq!(
        c.node().get("/list").unwrap().as_array().unwrap().len(),
        150
    );
    // A late joiner gets the same document from the relay.
    let d = connect(&relay, "dave").await;
    assert_eq!(d.node().snapshot(), a.node().snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_and_clients_reconnect() {
    let dir = TempDir::new("kill9");
    let mut relay = Relay::start(&dir, &[]);
    let first = connect(&relay, "writer0").await;
    first.node().set_root(json!({})).unwrap();
    first.flush().await.unwrap();
    let mut conns = vec![first];
    for i in 1..3 {
        conns.push(connect(&relay, &format!("writer{i}")).await);
    }
    let written = Arc::new(AtomicU64::new(0));
    let per_writer = 400u64;
    let mut tasks = Vec::new();
    for (i, conn) in conns.iter().enumerate() {
        let node = conn.node().clone();
        let written = written.clone();
        tasks.push(tokio::spawn(async move {
            let root = node.root_map().unwrap();
            for j in 0..per_writer {
                root.set(&format!("w{i}_{j}"), j as i64).unwrap();
                written.fetch_add(1, Ordering::Relaxed);
                if j % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    // Acknowledged writes, as seen by a writer that flushed.
    wait_until("some writes", Duration::from_secs(20), || {
        written.load(Ordering::Relaxed) > 300
    })
    .await;
    let acked_before_kill: Vec<String> = {
        let node = conns[0].node();
        conns[0].flush().await.unwrap();
        node.root_map().unwrap().keys()
    };
    relay.restart(); // kill -9, then start on the same address and data
    for t in tasks {
        t.await.unwrap();
    }
    for conn in &conns {
        tokio::time::timeout(Duration::from_secs(20), conn.flush())
            .await
            .expect("the writers reconnect and are acknowledged")
            .unwrap();
    }
    let nodes: Vec<&facsimile::Node> = conns.iter().map(|c| c.node()).collect();
    converge(&nodes).await;
    // Every write is there (the relay restarted, so nobody was evicted and
    // unacknowledged writes were sent again), on every writer and on a
    // node that joins now and gets the document from the relay.
    let late = connect(&relay, "late").await;
    let keys: BTreeSet<String> = late.node().root_map().unwrap().keys().into_iter().collect();
    for k in &acked_before_kill {
        assert!(keys.contains(k), "acknowledged write {k} was lost");
    }
    assert_eq!(keys.len() as u64, 3 * per_writer);
    assert_eq!(late.node().snapshot(), conns[0].node().snapshot());
    let log = relay.log_text();
    assert!(log.contains("document recovered"), "{log}");
    assert!(log.contains("resumed=true"), "the writers resumed: {log}");
    for conn in &conns {
        assert_eq!(conn.rejoins(), 0, "no writer was evicted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_while_holding_a_lock_frees_it() {
    let dir = TempDir::new("lockcrash");
    let relay = Relay::start(&dir, &[]);
    let b = connect(&relay, "bob").await;
    b.node().set_root(json!({"shared": {}})).unwrap();
    b.flush().await.unwrap();
    // Another process takes the lock and is killed while holding it.
    let mut holder = Command::new(BIN)
        .args(["lock", &relay.addr, "/shared", "--hostname", "zed", "--"])
        .args(["sh", "-c", "echo $$ $FACSIMILE_LOCK_TOKEN; exec sleep 60"])
        .env("FACSIMILE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut fields = line.split_whitespace();
    let sleeper: u32 = fields.next().unwrap().parse().unwrap();
    let token: u64 = fields.next().unwrap().parse().unwrap();
    let shared = b.node().get("/shared").unwrap().as_map().unwrap().clone();
    assert!(
        shared.set("x", 1).is_err(),
        "the lock holder's lock keeps others from writing"
    );
    holder.kill().unwrap(); // SIGKILL: no goodbye, no release
    holder.wait().unwrap();
    let _ = Command::new("kill").arg(sleeper.to_string()).status();
    let guard = tokio::time::timeout(Duration::from_secs(10), b.node().lock(&shared))
        .await
        .expect("the dead holder's lock passes on")
        .unwrap();
    assert!(guard.token() > token, "fencing tokens increase");
    shared.set("x", 2).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused() {
    let dir = TempDir::new("token");
    let relay = Relay::start(&dir, &[]);
    let err = net::connect(&relay.addr, "mallory", options().token("guess"))
        .await
        .unwrap_err();
    match err {
        NetError::Refused(reason) => assert!(reason.contains("wrong token"), "{reason}"),
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(relay.log_text().contains("connection refused"));
    connect(&relay, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_not_a_relay_is_named_so() {
    // A plain TCP echo: it sends the client's hello back.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = echo.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut conn, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = conn.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let err = net::connect(&addr, "alice", options()).await.unwrap_err();
    assert!(matches!(err, NetError::NotARelay { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "the peer at {addr} is not a facsimile relay (or is one that expects TLS); \
             check the address and port"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_accepts_and_stays_silent_is_not_a_relay() {
    // As an HTTP server does, waiting for a request line that never comes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (done, hold) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (_conn, _) = silent.accept().await.unwrap();
        let _ = hold.await;
    });
    // A relay welcomes a hello once it has the document open: the wait
    // for that is the sync timeout's.
    let options = options().timeouts(Duration::from_secs(10), Duration::from_millis(300));
    let err = net::connect(&addr, "alice", options).await.unwrap_err();
    assert!(
        matches!(
            err,
            NetError::NotARelay {
                source: facsimile::net::protocol::ProtocolError::Silent(_),
                ..
            }
        ),
        "{err:?}"
    );
    drop(done);
}

/// Opens a raw connection and sends a valid hello.
async fn raw_client(relay: &Relay) -> TcpStream {
    let mut s = TcpStream::connect(&relay.addr).await.unwrap();
    let hello = facsimile::net::protocol::ClientHello {
        protocol: facsimile::net::protocol::PROTOCOL_VERSION,
        document: "default".into(),
        token: TOKEN.into(),
        hostname: "raw".into(),
        incarnation: rand::random(),
        resume: None,
        read_only: false,
    }
    .encode();
    s.write_all(&(hello.len() as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&hello).await.unwrap();
    s
}

/// Reads until the relay closes the connection.
async fn closed_by_relay(mut s: TcpStream) -> bool {
    let mut buf = vec![0u8; 1 << 16];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_garbage_frames_close_only_their_connection() {
    let dir = TempDir::new("garbage");
    let relay = Relay::start(&dir, &["--max-frame", "65536"]);
    let a = connect(&relay, "alice").await;
    a.node().set_root(json!({"n": 0})).unwrap();
    let b = connect(&relay, "bob").await;

    // A frame announcing a megabyte.
    let mut big = raw_client(&relay).await;
    big.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    let _ = big.write_all(&[0u8; 4096]).await;
    assert!(
        closed_by_relay(big).await,
        "an oversized frame closes the connection"
    );

    // A well-framed message of garbage.
    let mut junk = raw_client(&relay).await;
    let garbage = b"\x00\xde\xad\xbe\xef not a facsimile message";
    junk.write_all(&(garbage.len() as u32).to_be_bytes())
        .await
        .unwrap();
    junk.write_all(garbage).await.unwrap();
    assert!(closed_by_relay(junk).await, "garbage closes the connection");

    // Garbage instead of a hello: a TLS client on a plain relay. (An HTTP
    // request is answered: the port speaks HTTP for WebSocket clients.)
    let mut noise = TcpStream::connect(&relay.addr).await.unwrap();
    noise
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .await
        .unwrap();
    assert!(
        closed_by_relay(noise).await,
        "a non-facsimile client is closed"
    );

    // The others carry on.
    a.node().set_path("/n", 1).unwrap();
    a.flush().await.unwrap();
    wait_until("bob to see the write", Duration::from_secs(10), || {
        b.node().get("/n") == Some(Value::Int(1))
    })
    .await;
    let log = relay.log_text();
    assert!(log.contains("frames are limited to 65536 bytes"), "{log}");
    assert!(log.contains("not a facsimile message"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_off_while_the_others_keep_up() {
    let dir = TempDir::new("stalled");
    let relay = Relay::start(&dir, &["--max-queue", "1048576"]);
    let a = connect(&relay, "alice").await;
    a.node().set_root(json!({})).unwrap();
    let b = connect(&relay, "bob").await;
    // Joins the document and never reads.
    let stalled = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(relay.addr.parse().unwrap()).await.unwrap();
        let hello = facsimile::net::protocol::ClientHello {
            protocol: facsimile::net::protocol::PROTOCOL_VERSION,
            document: "default".into(),
            token: TOKEN.into(),
            hostname: "stalled".into(),
            incarnation: rand::random(),
            resume: None,
            read_only: false,
        }
        .encode();
        s.write_all(&(hello.len() as u32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&hello).await.unwrap();
        s
    };
    let value = "x".repeat(8 << 10);
    let root = a.node().root_map().unwrap();
    let n = 1200;
    for i in 0..n {
        root.set(&format!("k{}", i % 50), format!("{i}{value}"))
            .unwrap();
        if i % 10 == 0 {
            a.flush().await.unwrap();
        }
    }
    a.flush().await.unwrap();
    let last = format!("{}{value}", n - 1);
    let got = |b: &facsimile::net::Connection| {
        b.node().get(&format!("/k{}", (n - 1) % 50)) == Some(Value::String(last.as_str().into()))
    };
    wait_until_or(
        "bob to receive every write",
        Duration::from_secs(30),
        || got(&b),
        || {
            format!(
                "a has {:?} b has {:?}\nrelay log:\n{}",
                a.node().get(&format!("/k{}", (n - 1) % 50)).map(|v| v
                    .to_json()
                    .unwrap()
                    .to_string()
                    .len()),
                b.node().get(&format!("/k{}", (n - 1) % 50)).map(|v| v
                    .to_json()
                    .unwrap()
                    .to_string()[..6]
                    .to_string()),
                relay.log_text()
            )
        },
    )
    .await;
    wait_until(
        "the relay to cut the stalled client off",
        Duration::from_secs(10),
        || relay.log_text().contains("too slow"),
    )
    .await;
    assert!(closed_by_relay(stalled).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_work_and_plain_ones_are_not_understood() {
    let dir = TempDir::new("tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let relay = Relay::start(
        &dir,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let tls = TlsOptions::from_ca_file(&cert_path)
        .unwrap()
        .server_name("localhost");
    let a = net::connect(&relay.addr, "alice", options().tls(tls.clone()))
        .await
        .unwrap();
    a.node().set_root(json!({"secret": 42})).unwrap();
    a.flush().await.unwrap();
    let b = net::connect(&relay.addr, "bob", options().tls(tls))
        .await
        .unwrap();
    assert_eq!(b.node().get("/secret"), Some(Value::Int(42)));
    let plain = net::connect(
        &relay.addr,
        "eve",
        options().timeouts(Duration::from_secs(3), Duration::from_secs(3)),
    )
    .await;
    assert!(plain.is_err(), "a plain client cannot talk to a TLS relay");
}

/// A TCP proxy whose connections the test can cut, to break a client's link
/// while the relay stays up.
struct Proxy {
    addr: String,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(to: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let to = to.clone();
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, cut }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_while_the_relay_stays_up_is_evicted_and_rejoins() {
    let dir = TempDir::new("rejoin");
    let relay = Relay::start(&dir, &[]);
    let proxy = Proxy::start(relay.addr.clone()).await;
    let a = connect(&relay, "alice").await;
    a.node().set_root(json!({"shared": {}})).unwrap();
    a.flush().await.unwrap();
    let z = net::connect(&proxy.addr, "zed", options()).await.unwrap();
    let shared = z.node().get("/shared").unwrap().as_map().unwrap().clone();
    let guard = z.node().lock(&shared).await.unwrap();
    shared.set("by", "zed").unwrap();
    z.flush().await.unwrap();

    proxy.cut();
    // The relay evicts zed at once: its lock passes to alice.
    let a_shared = a.node().get("/shared").unwrap().as_map().unwrap().clone();
    let a_guard = tokio::time::timeout(Duration::from_secs(10), a.node().lock(&a_shared))
        .await
        .expect("the cut-off holder's lock passes on")
        .unwrap();
    a_shared.set("by", "alice").unwrap();
    drop(a_guard);
    a.flush().await.unwrap();

    // Zed reconnects, learns it was evicted, and starts over.
    wait_until("zed to rejoin", Duration::from_secs(10), || {
        z.rejoins() == 1
    })
    .await;
    assert!(!guard.is_held(), "zed knows its lock is gone");
    drop(guard);
    wait_until("zed to catch up", Duration::from_secs(10), || {
        z.node().is_ready() && z.node().snapshot() == a.node().snapshot()
    })
    .await;
    assert_eq!(
        z.node().get("/shared/by"),
        Some(Value::String("alice".into()))
    );
    // And writes again as its new incarnation.
    z.node().set_path("/shared/again", true).unwrap();
    z.flush().await.unwrap();
    wait_until(
        "alice to see zed's new write",
        Duration::from_secs(10),
        || a.node().get("/shared/again") == Some(Value::Bool(true)),
    )
    .await;
    assert!(relay.log_text().contains("evicted=true"));
}

/// A node that rejoined (as a new incarnation) after its old incarnation
/// requested a lock keeps getting locks, and so do the others, after the
/// relay is killed and restarted on its data. The restarted relay replays
/// its log and acknowledges the old request, listing the members of that
/// time: the rejoined node must know the old incarnation departed, not
/// take it for a member that never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_granted_after_a_rejoin_and_a_relay_restart() {
    let dir = TempDir::new("rejoinrestart");
    let mut relay = Relay::start(&dir, &["--peer-timeout", "3"]);
    let proxy = Proxy::start(relay.addr.clone()).await;
    let a = connect(&relay, "alice").await;
    a.node().set_root(json!({"x": {}, "y": {}})).unwrap();
    a.flush().await.unwrap();
    let z = net::connect(&proxy.addr, "zed", options()).await.unwrap();
    let x = z.node().get("/x").unwrap().as_map().unwrap().clone();
    let held = z.node().lock(&x).await.unwrap();
    z.flush().await.unwrap();
    proxy.cut();
    wait_until("zed to rejoin", Duration::from_secs(10), || {
        z.rejoins() == 1 && z.node().is_ready()
    })
    .await;
    drop(held);
    z.flush().await.unwrap();

    relay.restart();
    for (conn, path) in [(&a, "/x"), (&z, "/y"), (&a, "/y"), (&z, "/x")] {
        let obj = conn.node().get(path).unwrap().as_map().unwrap().clone();
        let guard = tokio::time::timeout(Duration::from_secs(15), conn.node().lock(&obj))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} gets the lock on {path} after the restart; relay log:\n{}",
                    conn.node().hostname(),
                    relay.log_text()
                )
            })
            .unwrap();
        obj.set("by", conn.node().hostname()).unwrap();
        drop(guard);
        conn.flush().await.unwrap();
    }
}

/// Nodes that keep taking and releasing contended locks keep getting them
/// after the relay is killed (with holders and waiters at that moment)
/// and restarted on its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_locks_keep_being_granted_across_relay_restarts() {
    let dir = TempDir::new("lockloop");
    let mut relay = Relay::start(&dir, &["--peer-timeout", "3"]);
    let first = connect(&relay, "n0").await;
    first.node().set_root(json!({"x": {}, "y": {}})).unwrap();
    first.flush().await.unwrap();
    let mut conns = vec![first];
    for i in 1..4 {
        conns.push(connect(&relay, &format!("n{i}")).await);
    }
    let granted: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let (granted, stop) = (granted.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let path = if (n + i as u64) % 3 == 0 { "/y" } else { "/x" };
                let obj = conn.node().get(path).unwrap().as_map().unwrap().clone();
                let Ok(Ok(guard)) =
                    tokio::time::timeout(Duration::from_secs(5), conn.node().lock(&obj)).await
                else {
                    continue;
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = obj.set("by", i as i64);
                drop(guard);
                let _ = conn.flush().await;
                granted[i].fetch_add(1, Ordering::Relaxed);
            }
            conn
        }));
    }
    for round in 0..3u64 {
        let before: Vec<u64> = granted.iter().map(|g| g.load(Ordering::Relaxed)).collect();
        wait_until("every node to get locks", Duration::from_secs(30), || {
            granted
                .iter()
                .zip(&before)
                .all(|(g, b)| g.load(Ordering::Relaxed) >= b + 5)
        })
        .await;
        if round < 2 {
            relay.restart();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
}
