//! What clients can make the relay hold: a document's budget of frames.

use serde_json::json;

use crate::support::*;

/// With a budget of one byte, every frame takes all of it: the document
/// holds one frame at a time, waiting or in its batch, and every write of
/// two busy nodes still arrives, in each node's order, acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_that_holds_one_frame_at_a_time_loses_and_reorders_nothing() {
    let relay = Relay::start(|c| c.document_queue(1)).await;
    let alice = tcp_node(&relay, "alice").await;
    alice.node().set_root(json!({"list": []})).unwrap();
    alice.flush().await.unwrap();
    let bob = WsNode::connect(Dial::Plain(relay.addr), "bob").await;

    write_at_once([("a", alice.node().clone()), ("b", bob.node.clone())]).await;
    alice.flush().await.unwrap();
    bob.flush().await;
    converge(&[alice.node(), &bob.node]).await;
    let list = alice
        .node()
        .get("/list")
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    let items: Vec<String> = list
        .to_vec()
        .unwrap()
        .into_iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for who in ["a", "b"] {
        let theirs: Vec<&String> = items
            .iter()
            .filter(|i| i.starts_with(&format!("{who}.")))
            .collect();
        let expected: Vec<String> = (0..100).map(|j| format!("{who}.{j}")).collect();
        assert_eq!(
            theirs,
            expected.iter().collect::<Vec<_>>(),
            "{who}'s writes"
        );
    }
}
