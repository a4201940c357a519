//! The Rust client (`facsimile::net::connect`) on `ws://` and `wss://`
//! addresses, beside TCP clients of the same relay.

use std::time::Duration;

use facsimile::Value;
use facsimile::net::{self, NetError, TlsOptions};
use serde_json::json;

use crate::support::*;

async fn ws_node(url: &str, name: &str) -> net::Connection {
    net::connect(url, name, options())
        .await
        .unwrap_or_else(|e| panic!("{name} connects over {url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_and_tcp_clients_converge_and_share_locks() {
    let relay = Relay::start(|c| c).await;
    let alice = tcp_node(&relay, "alice").await;
    alice
        .node()
        .set_root(json!({"list": [], "shared": {}}))
        .unwrap();
    alice.flush().await.unwrap();
    let bob = ws_node(&relay.ws_url(), "bob").await;
    assert_eq!(bob.node().snapshot(), alice.node().snapshot());

    write_at_once([("a", alice.node().clone()), ("b", bob.node().clone())]).await;
    alice.flush().await.unwrap();
    bob.flush().await.unwrap();
    converge(&[alice.node(), bob.node()]).await;
    assert_eq!(bob.node().root_map().unwrap().len(), 2 + 200);
    assert_eq!(
        bob.node().get("/list").unwrap().as_array().unwrap().len(),
        200
    );

    // A lock taken over the WebSocket holds against the TCP client.
    let shared = bob.node().get("/shared").unwrap().as_map().unwrap().clone();
    let guard = tokio::time::timeout(Duration::from_secs(10), bob.node().lock(&shared))
        .await
        .expect("the lock is granted")
        .unwrap();
    shared.set("by", "bob").unwrap();
    bob.flush().await.unwrap();
    let a_shared = alice
        .node()
        .get("/shared")
        .unwrap()
        .as_map()
        .unwrap()
        .clone();
    wait_until("alice to see the lock", Duration::from_secs(10), || {
        a_shared.set("by", "alice").is_err()
    })
    .await;
    drop(guard);
    bob.flush().await.unwrap();
    wait_until(
        "alice to see the lock released",
        Duration::from_secs(10),
        || a_shared.set("by", "alice").is_ok(),
    )
    .await;
    alice.flush().await.unwrap();
    converge(&[alice.node(), bob.node()]).await;
    assert_eq!(
        bob.node().get("/shared/by"),
        Some(Value::String("alice".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_client_with_a_test_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let tls = facsimile_server::tls::load(&cert_path, &key_path).unwrap();
    let relay = Relay::start(|c| c.tls(tls)).await;
    let trust = TlsOptions::from_ca_file(&cert_path).unwrap();

    let alice = net::connect(
        &relay.addr.to_string(),
        "alice",
        options().tls(trust.clone().server_name("localhost")),
    )
    .await
    .unwrap();
    alice.node().set_root(json!({"secret": 42})).unwrap();
    alice.flush().await.unwrap();
    // The certificate's name is the URL's host.
    let url = format!("wss://localhost:{}/", relay.addr.port());
    let bob = net::connect(&url, "bob", options().tls(trust.clone()))
        .await
        .unwrap();
    assert_eq!(bob.node().get("/secret"), Some(Value::Int(42)));
    bob.node().set_path("/reply", "over wss").unwrap();
    bob.flush().await.unwrap();
    converge(&[alice.node(), bob.node()]).await;

    match net::connect(&url, "carol", options()).await {
        Err(NetError::Tls { source, .. }) => {
            assert!(source.to_string().contains("TLS options"), "{source}");
        }
        other => panic!("wss:// without TLS options: {:?}", other.err()),
    }
    match net::connect(&relay.ws_url(), "dave", options().tls(trust)).await {
        Err(NetError::Tls { source, .. }) => {
            assert!(source.to_string().contains("wss://"), "{source}");
        }
        other => panic!("ws:// with TLS options: {:?}", other.err()),
    }
    // Plain WebSocket is not understood by a TLS relay.
    assert!(
        net::connect(&relay.ws_url(), "erin", options())
            .await
            .is_err(),
        "ws:// to a TLS relay fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ws_client_with_a_wrong_token_is_refused() {
    let relay = Relay::start(|c| c).await;
    match net::connect(&relay.ws_url(), "mallory", options().token("guess")).await {
        Err(NetError::Refused(reason)) => assert!(reason.contains("wrong token"), "{reason}"),
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    // Without the path, too.
    let url = format!("ws://{}", relay.addr);
    let conn = ws_node(&url, "alice").await;
    conn.node().set_root(json!({"k": 1})).unwrap();
    conn.flush().await.unwrap();
}
