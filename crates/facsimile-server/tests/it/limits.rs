//! What clients can make the relay hold: a document's budget of frames,
//! and a hello's room before the token is checked.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;
use crate::websocket::{Bystanders, upgraded};

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

/// What the relay sends before it closes a connection; it closes it.
async fn until_the_end(s: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest))
        .await
        .expect("the relay closes the connection")
        .expect("a clean close");
    rest
}

/// A peer that announces a first frame larger than a hello can be (16 MiB
/// less a byte, within the frame limit) is closed as soon as the length
/// arrives: before its token is checked, the relay reserves no more than
/// a hello's room for a connection. The others are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_announced_larger_than_a_hello_is_refused_over_tcp() {
    relay_log();
    let relay = Relay::start(|c| c).await;
    let others = Bystanders::join(&relay).await;
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(&[0x00, 0xff, 0xff, 0xff]).await.unwrap();
    assert_eq!(until_the_end(&mut s).await, b"");
    logged(&[
        "connection closed",
        "\"tcp\"",
        "too large for a hello",
        "a hello is limited to 65546 bytes",
    ])
    .await;
    others.still_served(1).await;
}

/// The same over WebSocket: a binary frame's header announcing a MiB,
/// with nothing after it, is answered with a close for a message too big.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_announced_larger_than_a_hello_is_refused_over_websocket() {
    let relay = Relay::start(|c| c).await;
    let others = Bystanders::join(&relay).await;
    let mut s = upgraded(relay.addr).await;
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&header).await.unwrap();
    let close = until_the_end(&mut s).await;
    // An unmasked close frame: its code, then its reason.
    assert_eq!(close.first(), Some(&0x88), "{close:?}");
    let len = usize::from(close[1]);
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1009, "{close:?}");
    let reason = String::from_utf8_lossy(&close[4..2 + len]);
    assert!(
        reason.contains("a hello is limited to 65546 bytes"),
        "{reason}"
    );
    others.still_served(1).await;
}

/// An HTTP request's head is read within a hello's room too: a request
/// with 100 KiB of headers is answered 431 (hyper's own limit would take
/// about 400 KiB of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_with_a_head_larger_than_a_hello_is_refused() {
    let relay = Relay::start(|c| c).await;
    let others = Bystanders::join(&relay).await;
    let s = TcpStream::connect(relay.addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(100 << 10)
    );
    // The relay may answer and close before it has read everything.
    let writing = tokio::spawn(async move {
        let _ = write.write_all(head.as_bytes()).await;
        write
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut answer))
        .await
        .expect("the relay closes the connection")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    drop(writing.await);
    others.still_served(1).await;
}
