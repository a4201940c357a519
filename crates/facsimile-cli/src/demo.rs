//! `facsimile demo`: the library at work, narrated.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use facsimile::net::{self, ConnectOptions, Connection};
use facsimile::{ArrayRef, Node, Origin, Prop, Subscription};
use facsimile_server::{Server, ServerConfig};
use serde_json::json;

use crate::Failure;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn say(who: &str, what: impl std::fmt::Display) {
    println!("{who:>7} | {what}");
}

/// Prints every change a node sees, as one line.
fn narrate(node: &Node) -> Subscription {
    let me = node.hostname().to_string();
    node.on_change(move |ev| {
        let by = match ev.origin() {
            Origin::Local => return, // the narrative says what the node itself does
            Origin::Remote(p) => p.hostname().to_string(),
            other => format!("{other:?}"),
        };
        let what = match (ev.prop(), ev.new_value()) {
            (Some(Prop::Key(k)), Some(v)) => format!("{k} = {}", compact(v)),
            (Some(Prop::Key(k)), None) => format!("{k} deleted"),
            (Some(Prop::Index(i)), Some(v)) => format!("[{i}] = {}", compact(v)),
            _ => format!(
                "array now {}",
                ev.target()
                    .to_json()
                    .map(|j| j.to_string())
                    .unwrap_or_default()
            ),
        };
        say("", format_args!("  {me} sees {what}  (from {by})"));
    })
}

fn compact(v: &facsimile::Value) -> String {
    v.to_json()
        .map(|j| j.to_string())
        .unwrap_or_else(|_| "<cycle>".into())
}

/// Waits until the nodes hold the same document, then lets their
/// listeners finish printing.
async fn settle(nodes: &[&Node]) -> Result<(), Failure> {
    let started = Instant::now();
    loop {
        let first = nodes[0].snapshot();
        if nodes[1..].iter().all(|n| n.snapshot() == first) {
            tokio::time::sleep(Duration::from_millis(30)).await;
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(Failure("the nodes did not converge within 10 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn join(addr: &str, name: &str, token: &str) -> Result<Connection, Failure> {
    let options = ConnectOptions::new("groceries").token(token);
    net::connect(addr, name, options)
        .await
        .map_err(|e| Failure(format!("{name} could not connect: {e}")))
}

fn items_of(node: &Node) -> Result<ArrayRef, Failure> {
    node.get("/items")
        .and_then(|v| v.as_array().cloned())
        .ok_or_else(|| Failure("the document has no /items array".into()))
}

pub(crate) async fn run() -> Result<(), Failure> {
    let started = Instant::now();
    let dir = TempDir(std::env::temp_dir().join(format!(
        "facsimile-demo-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )));
    let token = format!("{:016x}", rand::random::<u64>());
    let config = ServerConfig::default()
        .listen("127.0.0.1:0".parse().expect("an address"))
        .data_dir(&dir.0)
        .token(&token);
    let server = Server::bind(config)
        .await
        .map_err(|e| Failure(format!("cannot start the relay: {e}")))?;
    let addr = server.local_addr()?.to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    // An interrupt ends the story early, but the relay still stops before
    // its directory is removed. The handler is in place (polled first)
    // before the story prints a line.
    let told = tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => Err(Failure("interrupted".into())),
        told = tell(&dir, &addr, &token) => told,
    };
    let _ = stop.send(());
    let _ = relay.await;
    told?;
    println!(
        "\ndone in {:.1} s. Run a relay yourself with `facsimile serve`, then try `facsimile watch 127.0.0.1:7878`.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The demo's story, told by nodes of the relay at `addr`.
async fn tell(dir: &TempDir, addr: &str, token: &str) -> Result<(), Failure> {
    println!(
        "facsimile demo: a relay and four nodes in this process, talking TCP over loopback.\n"
    );
    say(
        "relay",
        format_args!("listening on {addr}, storing in {}", dir.0.display()),
    );

    let alice = join(addr, "alice", token).await?;
    let a = alice.node().clone();
    a.set_root(json!({"title": "Groceries", "items": ["bread", "milk"], "budget": 20}))?;
    say(
        "alice",
        "connected; sets the document to {title, items: [bread, milk], budget: 20}",
    );
    let bob = join(addr, "bob", token).await?;
    let b = bob.node().clone();
    say(
        "bob",
        format_args!(
            "connected; the relay sent him the document: {}",
            compact(&b.root())
        ),
    );
    let carol = join(addr, "carol", token).await?;
    let c = carol.node().clone();
    say("carol", "connected and received the document too");
    let _subs = [narrate(&a), narrate(&b), narrate(&c)];
    println!();

    say("bob", "appends \"eggs\" to /items");
    items_of(&b)?.push("eggs")?;
    settle(&[&a, &b, &c]).await?;
    say("alice", "raises /budget to 25");
    a.set_path("/budget", 25)?;
    settle(&[&a, &b, &c]).await?;

    println!();
    say(
        "",
        "alice and carol rename the list at the same moment (before hearing of each other):",
    );
    // Neither has seen the other's write when making its own: the network
    // and the listeners run on other tasks.
    let (title_a, title_c) = (a.root_map(), c.root_map());
    if let (Some(ta), Some(tc)) = (title_a, title_c) {
        ta.set("title", "Shopping")?;
        tc.set("title", "Weekly shop")?;
    }
    settle(&[&a, &b, &c]).await?;
    say(
        "",
        format_args!(
            "every node keeps {} (equal logical time: the higher hostname, carol, wins)",
            compact(&a.get("/title").unwrap_or_default())
        ),
    );

    println!();
    say("", "locks: exclusive write permission on one object");
    let items_a = items_of(&a)?;
    let items_b = items_of(&b)?;
    let items_c = items_of(&c)?;
    let guard = b.lock(&items_b).await?;
    say(
        "bob",
        format_args!("holds the lock on /items (fencing token {})", guard.token()),
    );
    match items_a.push("chocolate") {
        Err(e) => say("alice", format_args!("tries to append: refused ({e})")),
        Ok(()) => say("alice", "appended (unexpected: the lock should refuse it)"),
    }
    match c.request(&items_c).await {
        Err(e) => say("carol", format_args!("asks for the lock, fail-fast: {e}")),
        Ok(_) => say("carol", "got the lock (unexpected)"),
    }
    let waiting_a = {
        let (a, items) = (a.clone(), items_a.clone());
        tokio::spawn(async move { a.lock(&items).await })
    };
    let waiting_c = {
        let (c, items) = (c.clone(), items_c.clone());
        tokio::spawn(async move { c.lock(&items).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    say(
        "",
        "alice and carol now wait for the lock; bob sorts the items and releases it",
    );
    items_b.sort_by(|x, y| compact(x).cmp(&compact(y)))?;
    settle(&[&a, &b, &c]).await?;
    drop(guard);
    // Requests are served in order; whoever comes second waits for the first.
    let mut rest = vec![
        ("alice", waiting_a, items_a.clone()),
        ("carol", waiting_c, items_c.clone()),
    ];
    let mut order = Vec::new();
    while !rest.is_empty() {
        let i = loop {
            if let Some(i) = rest.iter().position(|(_, h, _)| h.is_finished()) {
                break i;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let (name, handle, items) = rest.remove(i);
        let guard = handle.await.map_err(|e| Failure(e.to_string()))??;
        say(
            name,
            format_args!("got the lock (token {}) and appends a note", guard.token()),
        );
        items.push(format!("{name} was here"))?;
        order.push(name);
        drop(guard);
    }
    settle(&[&a, &b, &c]).await?;

    println!();
    let guard = c.lock(&items_c).await?;
    say(
        "carol",
        format_args!("takes the lock again (token {}) ...", guard.token()),
    );
    let waiting = {
        let (a, items) = (a.clone(), items_a.clone());
        tokio::spawn(async move { a.lock(&items).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    say(
        "carol",
        "... and crashes: her connection drops without a goodbye",
    );
    carol.abort();
    drop(guard);
    let guard = waiting.await.map_err(|e| Failure(e.to_string()))??;
    say(
        "alice",
        format_args!(
            "the relay evicted carol, so alice, who was waiting, has the lock (token {})",
            guard.token()
        ),
    );
    drop(guard);

    println!();
    let dave = join(addr, "dave", token).await?;
    let d = dave.node().clone();
    say(
        "dave",
        format_args!(
            "joins late; the relay sends him everything:\n{:>7} | {}",
            "",
            compact(&d.root())
        ),
    );
    settle(&[&a, &b, &d]).await?;
    let snapshot = a.snapshot();
    say(
        "",
        format_args!(
            "alice, bob and dave hold the same document, byte for byte ({} bytes)",
            snapshot.len()
        ),
    );

    for conn in [alice, bob, dave] {
        let _ = conn.close(Duration::from_secs(2)).await;
    }
    Ok(())
}
