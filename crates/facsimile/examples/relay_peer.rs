//! A node on a relay, driven by its standard input, one JSON object a line:
//! for tests that put a Rust node beside nodes of other languages on one
//! document (the JavaScript package's browser test drives it).
//!
//! Run with `cargo run --features tcp --example relay_peer -- ADDR DOC
//! HOSTNAME`, the relay's token in `FACSIMILE_TOKEN`. It prints
//! `{"ready": true}` once the document is there. Input lines:
//! - `{"set": "/path", "value": V}`: writes V there and waits until the relay
//!   has it;
//! - `{"wait": "/path", "value": V}`: waits until V is there (20 s at most);
//! - `{"lock": "/path"}`: waits for the lock on the object there (20 s at
//!   most) and prints
//!   `{"token": T}`; `{"release": "/path"}` lets it go;
//! - `{"snapshot": true}`: prints `{"snapshot": "<hex>"}`.
//!
//! After each line it prints `{"done": true}`, or `{"error": "..."}`. At the
//! end of its input it leaves the document.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use facsimile::net::{self, ConnectOptions, Connection};
use facsimile::{LockGuard, Node, ObjectRef, Value};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

fn object(node: &Node, path: &str) -> Result<ObjectRef, String> {
    match node.get(path) {
        Some(Value::Map(m)) => Ok(m.into()),
        Some(Value::Array(a)) => Ok(a.into()),
        _ => Err(format!("no object at {path:?}")),
    }
}

/// How long `wait` and `lock` wait before they fail.
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until `path` holds `value`, looking again after each change.
async fn wait(node: &Node, changed: &Notify, path: &str, value: &Json) -> Result<(), String> {
    let holds = || node.get(path).and_then(|v| v.to_json().ok()).as_ref() == Some(value);
    let until = async {
        while !holds() {
            changed.notified().await;
        }
    };
    tokio::time::timeout(PATIENCE, until)
        .await
        .map_err(|_| format!("{path} did not become {value} in {PATIENCE:?}"))
}

async fn run(
    conn: &Connection,
    changed: &Notify,
    held: &mut HashMap<String, LockGuard>,
    cmd: &Json,
) -> Result<Option<Json>, String> {
    let node = conn.node();
    let path = |key: &str| cmd[key].as_str().map(str::to_owned);
    if let Some(p) = path("set") {
        node.set_path(&p, cmd["value"].clone())
            .map_err(|e| e.to_string())?;
        conn.flush().await.map_err(|e| e.to_string())?;
    } else if let Some(p) = path("wait") {
        wait(node, changed, &p, &cmd["value"]).await?;
    } else if let Some(p) = path("lock") {
        let guard = tokio::time::timeout(PATIENCE, node.lock(object(node, &p)?))
            .await
            .map_err(|_| format!("no lock on {p} in {PATIENCE:?}"))?
            .map_err(|e| e.to_string())?;
        let token = guard.token();
        held.insert(p, guard);
        return Ok(Some(json!({ "token": token })));
    } else if let Some(p) = path("release") {
        let guard = held.remove(&p).ok_or("not held here")?;
        guard.release().map_err(|e| e.to_string())?;
    } else if cmd["snapshot"].as_bool() == Some(true) {
        let hex: String = node.snapshot().iter().map(|b| format!("{b:02x}")).collect();
        return Ok(Some(json!({ "snapshot": hex })));
    } else {
        return Err(format!("unknown command: {cmd}"));
    }
    Ok(None)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, doc, hostname] = &args[..] else {
        eprintln!("usage: relay_peer ADDR DOC HOSTNAME");
        std::process::exit(2);
    };
    let token = std::env::var("FACSIMILE_TOKEN").unwrap_or_default();
    let options = ConnectOptions::new(doc).token(&token);
    let conn = match net::connect(addr, hostname, options).await {
        Ok(conn) => conn,
        Err(e) => {
            println!("{}", json!({ "error": e.to_string() }));
            std::process::exit(1);
        }
    };
    let changed = Arc::new(Notify::new());
    let _changes = conn.node().on_change({
        let changed = changed.clone();
        move |_| changed.notify_one()
    });
    let _roots = conn.node().on_root_changed({
        let changed = changed.clone();
        move |_| changed.notify_one()
    });
    println!("{}", json!({ "ready": true }));
    let mut held = HashMap::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let result = match serde_json::from_str::<Json>(&line) {
            Ok(cmd) => run(&conn, &changed, &mut held, &cmd).await,
            Err(e) => Err(e.to_string()),
        };
        let out = match result {
            Ok(Some(out)) => out,
            Ok(None) => json!({ "done": true }),
            Err(e) => json!({ "error": e }),
        };
        println!("{out}");
    }
    drop(held);
    let _ = conn.close(Duration::from_secs(5)).await;
}
