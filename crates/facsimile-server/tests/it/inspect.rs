//! The inspector's routes: behind the token, the document's status as the
//! relay sees it, the page only where the package's build is.

use std::time::Duration;

use facsimile::net;
use serde_json::json;

use crate::idle::document_threads;
use crate::support::*;
use crate::websocket::http;

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

fn body(response: &str) -> serde_json::Value {
    let (_, body) = response.split_once("\r\n\r\n").expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_route_needs_the_token_and_tells_the_log_position_storage_and_clients() {
    let assets = tempfile::tempdir().unwrap();
    let relay = Relay::start(|c| c.inspector_assets(assets.path())).await;
    let alice = tcp_node(&relay, "alice").await;
    alice.node().set_root(json!({"a": {"b": [1, 2]}})).unwrap();
    alice.node().set_path("/a/c", 3).unwrap();
    alice.flush().await.unwrap();

    for (path, status) in [
        ("/inspect/default/status", "401"),
        ("/inspect/default/status?token=", "403"),
        ("/inspect/default/status?token=wrong", "403"),
        ("/inspect/default/status?token=test-token%", "403"),
        ("/inspect/default/status?other=1&token=test-tokenx", "403"),
        ("/inspect/default", "401"),
        ("/inspect/default?token=wrong", "403"),
    ] {
        let r = http(&relay, &get(path)).await;
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {r}");
        assert!(
            !r.contains("alice"),
            "{path} tells nothing of the document: {r}"
        );
        assert!(r.contains("token"), "{path} says what is missing: {r}");
    }

    let ok = http(
        &relay,
        &get("/inspect/default/status?x=1&token=test%2Dtoken"),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.to_ascii_lowercase().contains("cache-control: no-store"),
        "{ok}"
    );
    let s = body(&ok);
    assert_eq!(s["doc"], "default");
    // alice's hello, her two writes, and the relay's own messages: each
    // write is one position of the log, all of them on disk.
    let position = s["position"].as_u64().unwrap();
    assert!(position >= 3, "{s}");
    assert_eq!(s["committed"].as_u64(), Some(position), "{s}");
    assert_eq!(s["durable"], true);
    assert!(s["logBytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["snapshotBytes"], 0, "no compaction yet: {s}");
    assert_eq!(s["objects"], 3, "{s}");
    let clients = s["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1, "{s}");
    assert_eq!(clients[0]["hostname"], "alice");
    assert_eq!(clients[0]["readOnly"], false);

    alice.node().set_path("/a/c", 4).unwrap();
    alice.flush().await.unwrap();
    let later = body(&http(&relay, &get("/inspect/default/status?token=test-token")).await);
    assert!(later["position"].as_u64().unwrap() > position, "{later}");

    let unknown = http(&relay, &get("/inspect/nobody/status?token=test-token")).await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    let bad = http(&relay, &get("/inspect/..%2Fx/status?token=test-token")).await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");

    // The package's build is not in the assets directory: the page says
    // how to build it, and no file outside the list is served.
    let page = http(&relay, &get("/inspect/default?token=test-token")).await;
    assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    assert!(page.contains("npm run build"), "{page}");
    std::fs::write(assets.path().join("browser.mjs"), "export default 1;").unwrap();
    let page = http(&relay, &get("/inspect/default?token=test-token")).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("/inspector/inspector.js"), "{page}");
    let module = http(&relay, &get("/inspector/browser.mjs")).await;
    assert!(module.starts_with("HTTP/1.1 200"), "{module}");
    assert!(module.contains("text/javascript"), "{module}");
    for path in [
        "/inspector/../Cargo.toml",
        "/inspector/web/../browser.mjs",
        "/inspector/index.cjs",
    ] {
        let r = http(&relay, &get(path)).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{path}: {r}");
    }
    alice
        .close(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(relay_panics(), 0);
}

/// The status of a closed document comes from its files: polling it
/// neither opens the document (no thread, no recovery) nor writes to its
/// log, and tells where the log stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_of_a_closed_document_is_read_from_disk_without_opening_it() {
    relay_log();
    let relay = Relay::start(|c| c.close_idle(Some(Duration::from_millis(100)))).await;
    let writer = net::connect(&relay.addr.to_string(), "writer", options_for("st-closed"))
        .await
        .unwrap();
    writer.node().set_root(json!({"a": [1, 2]})).unwrap();
    writer.node().set_path("/a/0", 3).unwrap();
    writer.flush().await.unwrap();
    let open = body(&http(&relay, &get("/inspect/st-closed/status?token=test-token")).await);
    assert_eq!(open["open"], true, "{open}");
    writer.close(Duration::from_secs(5)).await.unwrap();
    logged(&["closed the document", "st-closed"]).await;
    wait_until(
        "the document's thread ends",
        Duration::from_secs(20),
        || document_threads("st-closed") == 0,
    )
    .await;

    let log = relay.data().join("st-closed").join("log");
    let before = std::fs::read(&log).unwrap();
    let mut seen: Vec<serde_json::Value> = Vec::new();
    for _ in 0..2 {
        let r = http(&relay, &get("/inspect/st-closed/status?token=test-token")).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        let s = body(&r);
        assert_eq!(s["open"], false, "{s}");
        // The writes and the writer's goodbye.
        assert!(s["position"].as_u64() > open["position"].as_u64(), "{s}");
        assert_eq!(s["committed"], s["position"], "{s}");
        assert_eq!(s["logBytes"].as_u64(), Some(before.len() as u64), "{s}");
        assert_eq!(s["clients"], json!([]), "{s}");
        assert!(s["objects"].is_null(), "not known without opening: {s}");
        assert_eq!(std::fs::read(&log).unwrap(), before, "the log is unchanged");
        assert_eq!(
            document_threads("st-closed"),
            0,
            "the document stays closed"
        );
        seen.push(s);
    }
    assert_eq!(seen[0], seen[1], "the same answer each time");
    let recovered = relay_log()
        .lines()
        .filter(|l| l.contains("document recovered") && l.contains("st-closed"))
        .count();
    assert_eq!(recovered, 0, "never opened again");
}

/// The package's files are served to anybody: without the build, the
/// answer is a plain 503 that tells nothing of the relay's file system.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_build_is_a_plain_503_without_paths() {
    let assets = tempfile::tempdir().unwrap();
    let relay = Relay::start(|c| c.inspector_assets(assets.path().join("dist"))).await;
    for file in [
        "browser.mjs",
        "web/facsimile_wasm.js",
        "web/facsimile_wasm_bg.wasm",
    ] {
        let r = http(&relay, &get(&format!("/inspector/{file}"))).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{file}: {r}");
        let (_, text) = r.split_once("\r\n\r\n").unwrap();
        assert!(!text.contains('/'), "{file}: no path in {text:?}");
        assert!(!r.contains("text/html"), "{file}: {r}");
    }
}

/// The inspector counts against the connection limit: at the limit, its
/// page, its status and the package's files are a 503, as `/` is, rather
/// than served past `--max-clients`; once a place is free they are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_routes_answer_503_at_the_connection_limit() {
    let assets = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(assets.path().join("web")).unwrap();
    std::fs::write(assets.path().join("browser.mjs"), "export {}").unwrap();
    std::fs::write(assets.path().join("web/facsimile_wasm_bg.wasm"), b"\0asm").unwrap();
    let relay = Relay::start(|c| c.max_clients(1).inspector_assets(assets.path())).await;
    let routes = [
        "/",
        "/inspect/default?token=test-token",
        "/inspect/default/status?token=test-token",
        "/inspector/inspector.js",
        "/inspector/web/facsimile_wasm_bg.wasm",
    ];
    let alice = tcp_node(&relay, "alice").await;
    for path in routes {
        let r = http(&relay, &get(path)).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{path}: {r}");
        assert!(r.contains("connection limit"), "{path}: {r}");
    }
    alice.close(Duration::from_secs(5)).await.unwrap();
    for path in routes {
        let mut r = String::new();
        wait_until_async(
            &format!("{path} served"),
            || {
                let relay = &relay;
                async move { http(relay, &get(path)).await }
            },
            |got| {
                r = got.clone();
                got.starts_with("HTTP/1.1 200")
            },
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200"), "{path}: {r}");
    }
}

/// Asks `ask` again until `ok` takes its answer; panics after 20 s.
async fn wait_until_async<F, T>(
    what: &str,
    mut ask: impl FnMut() -> F,
    mut ok: impl FnMut(&T) -> bool,
) where
    F: std::future::Future<Output = T>,
{
    let started = std::time::Instant::now();
    loop {
        if ok(&ask().await) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
