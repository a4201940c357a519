//! A relay's data directory is its own for as long as it runs.

use facsimile_server::{DataDirInUse, Server, ServerConfig};
use serde_json::json;

use crate::support::*;

/// A second relay on a data directory that a running relay holds is
/// refused, naming the directory: it would compact logs the first one
/// appends to, losing writes the first acknowledged. Once the first has
/// stopped, the directory can be taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_on_a_data_directory_in_use_is_refused() {
    let mut relay = Relay::start(|c| c).await;
    let writer = tcp_node(&relay, "writer").await;
    writer.node().set_root(json!({"k": 1})).unwrap();
    writer.flush().await.unwrap();
    let second = ServerConfig::default()
        .listen("127.0.0.1:0".parse().unwrap())
        .data_dir(relay.data())
        .token(TOKEN);
    let Err(refused) = Server::bind(second.clone()).await else {
        panic!("a second relay on the directory is refused");
    };
    assert_eq!(refused.kind(), std::io::ErrorKind::ResourceBusy);
    let in_use = refused
        .get_ref()
        .and_then(|e| e.downcast_ref::<DataDirInUse>())
        .unwrap_or_else(|| panic!("a typed error, not {refused}"));
    assert_eq!(in_use.dir, relay.data());
    let message = refused.to_string();
    assert!(
        message.contains(&relay.data().display().to_string()),
        "{message}"
    );
    drop(writer);
    relay.stop().await;
    Server::bind(second)
        .await
        .expect("the directory is free once its relay stopped");
}

/// A relay whose serving future is dropped (its task aborted, or a
/// `select!` that took another branch) lets go of its data directory
/// as one that stopped does: its connections close and its documents
/// end, so that a relay started again in the same process can take the
/// directory, and serves what the first acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_future_is_dropped_frees_its_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let config = ServerConfig::default()
        .listen("127.0.0.1:0".parse().unwrap())
        .data_dir(data.path())
        .token(TOKEN);
    let server = Server::bind(config.clone()).await.unwrap();
    let addr = server.local_addr().unwrap();
    let serving = tokio::spawn(server.run_until(std::future::pending()));
    let writer = facsimile::net::connect(&addr.to_string(), "writer", options())
        .await
        .unwrap();
    writer.node().set_root(json!({"k": 1})).unwrap();
    writer.flush().await.unwrap();
    serving.abort();
    assert!(serving.await.unwrap_err().is_cancelled());

    let again = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            match Server::bind(config.clone().listen(addr)).await {
                Ok(server) => break server,
                // Polled: the documents end as their connections close.
                Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => panic!("binding again: {e}"),
            }
        }
    })
    .await
    .expect("the directory is free once the relay's future is dropped");
    let serving = tokio::spawn(again.run());
    writer.flush().await.unwrap();
    let reader = facsimile::net::connect(&addr.to_string(), "reader", options().read_only(true))
        .await
        .unwrap();
    assert_eq!(reader.node().get("/k"), Some(1.into()));
    drop((writer, reader));
    serving.abort();
}
