//! A node whose transport is its standard input and output, one JSON object
//! a line: for putting a Rust node beside nodes of other languages (the
//! JavaScript package's interoperability test drives it).
//!
//! Input lines:
//! - `{"recv": "<message>"}` or `{"recv_hex": "<hex>"}`: a message from a
//!   peer (JSON text, or binary as hex);
//! - `{"do": "root", "value": ...}`: replaces the root with the value;
//! - `{"do": "random", "seed": S, "ops": N}`: N random writes to the document
//!   (keys of the root map, its `items` array, nested maps);
//! - `{"do": "sync"}`: drops the document and asks the peers for it;
//! - `{"do": "snapshot"}`: prints `{"snapshot": "<hex>"}`.
//!
//! Every message the node sends is printed as `{"msg": "<text>", "to": T}`
//! (JSON wire format) or `{"msg_hex": "<hex>", "to": T}` (binary); after each
//! input line it prints `{"done": true}`, or `{"error": "..."}`.
//!
//! Run with `cargo run --example stdio_peer -- HOSTNAME [json|binary]`.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use facsimile::{Config, Node, Value, WireFormat};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value as Json, json};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Random writes, of the kinds every node of the test makes.
fn random_writes(node: &Node, seed: u64, ops: u64) -> facsimile::Result<()> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let Some(root) = node.root_map() else {
        return Ok(());
    };
    for _ in 0..ops {
        let key = format!("k{}", rng.random_range(0..8));
        match rng.random_range(0..8) {
            0 | 1 => {
                root.set(&key, rng.random_range(0..1000i64))?;
            }
            2 => {
                root.set(&key, json!({"n": rng.random_range(0..10i64), "s": "rust"}))?;
            }
            3 => {
                root.delete(&key)?;
            }
            _ => {
                let items = match root.get("items").and_then(|v| v.as_array().cloned()) {
                    Some(items) => items,
                    None => {
                        root.set("items", json!([]))?;
                        continue;
                    }
                };
                let len = items.len();
                match rng.random_range(0..4) {
                    0 => {
                        items.push(rng.random_range(0..100i64))?;
                    }
                    1 if len > 0 => {
                        let start = rng.random_range(0..len);
                        items.splice(start, rng.random_range(0..2), [json!("r")])?;
                    }
                    2 if len > 1 => {
                        items.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")))?;
                    }
                    _ => {
                        items.unshift([Value::String("head".into())])?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let hostname = args.next().unwrap_or_else(|| "rust".to_owned());
    let binary = args.next().as_deref() == Some("binary");
    let format = if binary {
        WireFormat::Binary
    } else {
        WireFormat::Json
    };
    let node = Node::with_config(&hostname, Config::default().wire_format(format));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let print = {
        let out = out.clone();
        move |v: Json| {
            let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "{v}");
            let _ = out.flush();
        }
    };
    {
        let print = print.clone();
        node.set_sender(move |m| {
            let bytes = m.as_bytes();
            let to = m.to();
            print(match binary {
                true => json!({"msg_hex": hex(bytes), "to": to}),
                false => json!({"msg": String::from_utf8_lossy(bytes), "to": to}),
            });
        });
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let result: Result<(), String> = (|| {
            let cmd: Json = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            if let Some(m) = cmd["recv"].as_str() {
                return node.receive(m.as_bytes()).map_err(|e| e.to_string());
            }
            if let Some(m) = cmd["recv_hex"].as_str() {
                let bytes = unhex(m).ok_or("bad hex")?;
                return node.receive(&bytes).map_err(|e| e.to_string());
            }
            match cmd["do"].as_str() {
                Some("root") => node
                    .set_root(cmd["value"].clone())
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Some("random") => random_writes(
                    &node,
                    cmd["seed"].as_u64().unwrap_or(0),
                    cmd["ops"].as_u64().unwrap_or(10),
                )
                .map_err(|e| e.to_string()),
                Some("sync") => {
                    node.sync();
                    Ok(())
                }
                Some("snapshot") => {
                    print(json!({"snapshot": hex(&node.snapshot())}));
                    Ok(())
                }
                _ => Err(format!("unknown command: {line}")),
            }
        })();
        print(match result {
            Ok(()) => json!({"done": true}),
            Err(e) => json!({"error": e}),
        });
    }
    node.leave();
}
