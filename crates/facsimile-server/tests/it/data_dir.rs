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
