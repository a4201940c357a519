//! The original facsimile README example, in Rust: a host and a client in
//! one process, an index listener, a root-changed listener, sync, ready, and
//! array edits.
//!
//! Run with `cargo run -p facsimile --example local`.

use std::sync::{Arc, Mutex};

use facsimile::{LocalNetwork, Node, Value};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let network = LocalNetwork::new();

    // Create our host network.
    let host = network.join("host");
    trace(&host);
    host.set_root(json!({"elements": [1, 2, 3]}))?;
    let elements = host
        .root_map()
        .expect("a map")
        .get("elements")
        .expect("set above");
    let elements = elements.as_array().expect("an array");

    elements
        .on_index(0, |e| println!("[host] Index[0] = {:?}", e.new_value()))
        .detach();
    elements
        .on(|e| match e.prop() {
            Some(p) => println!("[host] elements{p} = {:?}", e.new_value()),
            None => println!(
                "[host] elements changed as a whole (mass change) by {:?}",
                e.origin()
            ),
        })
        .detach();

    // Create a subnode, and synchronise them.
    let client = network.join("client");
    trace(&client);
    client
        .on_root_changed(|_| println!("[client] Root element has changed."))
        .detach();
    let ready: Arc<Mutex<Option<Value>>> = Arc::default();
    let r = ready.clone();
    client
        .on_ready(move |root| *r.lock().unwrap() = Some(root.clone()))
        .detach();
    client.sync();

    let root = ready.lock().unwrap().take().expect("the sync completed");
    println!("[client] ready: elements = {}", root.to_json()?["elements"]);
    array_functions(&client, &host)?;

    println!("[host]   elements = {}", elements.to_json()?);
    println!(
        "[client] elements = {}",
        client
            .root_map()
            .unwrap()
            .get("elements")
            .unwrap()
            .to_json()?
    );
    assert_eq!(host.snapshot(), client.snapshot());
    println!(
        "both nodes hold the same document ({} bytes)",
        host.snapshot().len()
    );
    Ok(())
}

fn array_functions(client: &Node, host: &Node) -> Result<(), Box<dyn std::error::Error>> {
    let array = client.root_map().unwrap().get("elements").unwrap();
    let array = array.as_array().unwrap().clone();

    println!("[client] Locking");
    let guard = futures_executor::block_on(client.lock(&array))?;
    println!("[client] Locked (fencing token {})", guard.token());

    println!("[host] Trying to create a dead lock");
    let on_host = host.root_map().unwrap().get("elements").unwrap();
    if let Err(e) = futures_executor::block_on(host.request(on_host.as_array().unwrap())) {
        println!("[host] Intentional error: {e}");
    }

    array.set(0, 999)?;
    array.set(1, 888)?;
    array.unshift([4])?;
    array.sort_by(|a, b| a.as_i64().cmp(&b.as_i64()))?;

    println!("[client] Unlocking");
    guard.release()?;
    Ok(())
}

/// Prints every message a node receives, as the original's example network
/// logged them.
fn trace(node: &Node) {
    let name = node.hostname().to_string();
    node.on_change(move |e| {
        if let facsimile::Origin::Remote(from) = e.origin() {
            println!(
                "  {} <- {}: change of {:?}",
                name,
                from.hostname(),
                e.prop()
            );
        }
    })
    .detach();
}
