//! WebSocket clients on the relay's port: beside TCP clients, over TLS,
//! across a relay restart, and misbehaving.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use facsimile::Value;
use facsimile::net::protocol::{Down, ServerHello, Up};
use facsimile::net::{self, TlsOptions};
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::support::*;

/// WebSocket close codes (RFC 6455, 7.4.1).
const PROTOCOL: u16 = 1002;
const UNSUPPORTED: u16 = 1003;
const POLICY: u16 = 1008;
const TOO_BIG: u16 = 1009;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_tcp_clients_mirror_one_document() {
    let relay = Relay::start(|c| c).await;
    let alice = tcp_node(&relay, "alice").await;
    alice
        .node()
        .set_root(json!({"list": [], "shared": {}}))
        .unwrap();
    alice.flush().await.unwrap();
    let bob = WsNode::connect(Dial::Plain(relay.addr), "bob").await;
    assert_eq!(bob.node.snapshot(), alice.node().snapshot());

    write_at_once([("a", alice.node().clone()), ("b", bob.node.clone())]).await;
    alice.flush().await.unwrap();
    bob.flush().await;
    converge(&[alice.node(), &bob.node]).await;
    assert_eq!(bob.node.root_map().unwrap().len(), 2 + 200);
    assert_eq!(
        alice.node().get("/list").unwrap().as_array().unwrap().len(),
        200
    );

    // A lock taken over the WebSocket holds against the TCP client.
    let shared = bob.node.get("/shared").unwrap().as_map().unwrap().clone();
    let guard = tokio::time::timeout(Duration::from_secs(10), bob.node.lock(&shared))
        .await
        .expect("the lock is granted")
        .unwrap();
    shared.set("by", "bob").unwrap();
    bob.flush().await;
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

    // Late joiners of either kind get the same document from the relay.
    let carol = tcp_node(&relay, "carol").await;
    let dave = WsNode::connect(Dial::Plain(relay.addr), "dave").await;
    converge(&[alice.node(), &bob.node, carol.node(), &dave.node]).await;
    assert_eq!(
        carol.node().get("/shared/by"),
        Some(Value::String("bob".into()))
    );
}

/// Sends one HTTP/1.1 request and returns its response: the head and a
/// body of the announced length.
pub(crate) async fn http(relay: &Relay, request: &str) -> String {
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&response).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the relay closed before answering: {text}");
            response.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the relay answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_that_are_not_upgrades_get_http_answers() {
    let relay = Relay::start(|c| c).await;
    let page = http(
        &relay,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("facsimile relay"), "{page}");
    assert!(page.contains("one binary message per frame"), "{page}");
    let missing = http(
        &relay,
        "GET /nothing/here HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let post = http(
        &relay,
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    // An upgrade that cannot be done is answered, not dropped.
    let bad_upgrade = http(
        &relay,
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    .await;
    assert!(bad_upgrade.starts_with("HTTP/1.1 4"), "{bad_upgrade}");
    // And the port still speaks the TCP protocol.
    tcp_node(&relay, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hello_is_a_refusal_frame_then_a_close() {
    let relay = Relay::start(|c| c).await;
    let mut ws = Dial::Plain(relay.addr).websocket().await.unwrap();
    let mut wrong = hello("mallory", 7, None);
    wrong.token = "guess".into();
    match say_hello(&mut ws, &wrong).await {
        ServerHello::Refused { reason } => assert!(reason.contains("wrong token"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (code, reason) = until_closed(&mut ws).await;
    assert_eq!(code, POLICY);
    assert!(reason.contains("wrong token"), "{reason}");

    // A binary message that is not a hello is refused the same way.
    let mut ws = Dial::Plain(relay.addr).websocket().await.unwrap();
    ws.send(Message::Binary(b"\x00\xde\xad\xbe\xef"[..].into()))
        .await
        .unwrap();
    match next_down(&mut ws).await {
        Ok(Down::Hello(ServerHello::Refused { reason })) => {
            assert!(reason.contains("not a facsimile hello"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(until_closed(&mut ws).await.0, POLICY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_applies_to_websockets() {
    let relay = Relay::start(|c| c.max_clients(1)).await;
    let alice = tcp_node(&relay, "alice").await;
    let mut ws = Dial::Plain(relay.addr).websocket().await.unwrap();
    match say_hello(&mut ws, &hello("bob", 9, None)).await {
        ServerHello::Refused { reason } => {
            assert!(reason.contains("connection limit (1)"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(until_closed(&mut ws).await.0, POLICY);
    let busy = http(
        &relay,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    drop(alice);
}

/// A relay with a document and two clients, one of each kind, that must
/// keep working while a third misbehaves.
pub(crate) struct Bystanders {
    alice: net::Connection,
    bob: WsNode,
}

impl Bystanders {
    pub(crate) async fn join(relay: &Relay) -> Bystanders {
        let alice = tcp_node(relay, "alice").await;
        alice.node().set_root(json!({"n": 0})).unwrap();
        alice.flush().await.unwrap();
        let bob = WsNode::connect(Dial::Plain(relay.addr), "bob").await;
        relay_panics();
        Bystanders { alice, bob }
    }

    /// Both write, and each sees the other's acknowledged write; and the
    /// relay never panicked.
    pub(crate) async fn still_served(&self, n: i64) {
        assert_eq!(relay_panics(), 0, "a relay task panicked");
        self.alice.node().set_path("/n", n).unwrap();
        self.alice.flush().await.unwrap();
        wait_until("bob to see alice's write", Duration::from_secs(10), || {
            self.bob.node.get("/n") == Some(Value::Int(n))
        })
        .await;
        self.bob.node.set_path("/m", n).unwrap();
        self.bob.flush().await;
        wait_until("alice to see bob's write", Duration::from_secs(10), || {
            self.alice.node().get("/m") == Some(Value::Int(n))
        })
        .await;
    }
}

/// A raw WebSocket that joined the document.
async fn joined(
    relay: &Relay,
    name: &str,
) -> tokio_tungstenite::WebSocketStream<Box<dyn facsimile::net::protocol::ByteStream>> {
    let mut ws = Dial::Plain(relay.addr).websocket().await.unwrap();
    match say_hello(&mut ws, &hello(name, rand_tag(), None)).await {
        ServerHello::Welcome { .. } => ws,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

fn rand_tag() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0x5eed_0000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_message_closes_the_connection_with_unsupported_data() {
    let relay = Relay::start(|c| c).await;
    let others = Bystanders::join(&relay).await;
    let mut ws = joined(&relay, "texter").await;
    ws.send(Message::Text("{\"set\": 1}".into())).await.unwrap();
    let (code, reason) = until_closed(&mut ws).await;
    assert_eq!(code, UNSUPPORTED);
    assert!(reason.contains("binary messages"), "{reason}");
    others.still_served(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_the_connection_with_message_too_big() {
    let relay = Relay::start(|c| c.max_frame(65536)).await;
    let others = Bystanders::join(&relay).await;
    let mut ws = joined(&relay, "big").await;
    ws.send(Message::Binary(vec![0u8; 100_000].into()))
        .await
        .unwrap();
    let (code, reason) = until_closed(&mut ws).await;
    assert_eq!(code, TOO_BIG);
    assert!(reason.contains("65536 bytes (--max-frame)"), "{reason}");
    // Before the hello too.
    let mut ws = Dial::Plain(relay.addr).websocket().await.unwrap();
    ws.send(Message::Binary(vec![0u8; 100_000].into()))
        .await
        .unwrap();
    assert_eq!(until_closed(&mut ws).await.0, TOO_BIG);
    others.still_served(1).await;
}

/// A facsimile message of exactly `len` bytes: a node's first write, a
/// string whose length is adjusted until the message has that size.
fn message_of(len: usize) -> Bytes {
    let mut chars = len;
    for _ in 0..8 {
        let node = facsimile::Node::new("big");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sink = sent.clone();
        node.set_sender(move |m: facsimile::Outgoing| {
            sink.lock()
                .unwrap()
                .push(Bytes::copy_from_slice(m.as_bytes()));
        });
        node.set_root(json!({ "s": "x".repeat(chars) })).unwrap();
        let message = sent.lock().unwrap().pop().expect("the write's message");
        if message.len() == len {
            return message;
        }
        chars = (chars + len).saturating_sub(message.len());
    }
    panic!("no message of {len} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_to_pass_on_is_refused_and_nobody_else_cut_off() {
    let relay = Relay::start(|c| c.max_frame(65536)).await;
    let others = Bystanders::join(&relay).await;
    let mut ws = joined(&relay, "big").await;
    // Its frame is within the limit, but the relay's frame to the others
    // (with the message's position) would not be.
    let message = message_of(65535);
    let frame = Up::Broadcast(message).encode();
    assert!(frame.len() <= 65536);
    ws.send(Message::Binary(frame)).await.unwrap();
    let (code, reason) = tokio::time::timeout(Duration::from_secs(20), until_closed(&mut ws))
        .await
        .expect("the relay refuses the message");
    assert_eq!(code, POLICY, "{reason}");
    assert!(reason.contains("exceeds the limit"), "{reason}");
    others.still_served(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_too_large_for_the_relay_is_refused_when_made() {
    too_large_for_the_relay(options().max_frame(65536)).await;
}

/// A client of a larger frame limit than the relay's (its default, on a
/// relay given a smaller one) takes the relay's from the welcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_takes_the_relays_smaller_frame_limit_from_its_welcome() {
    too_large_for_the_relay(options()).await;
}

/// Alice, connected with `alice`, writes more than a relay of a 64 KiB
/// frame limit passes on: the write is refused when made, and her next
/// writes reach bob.
async fn too_large_for_the_relay(alice: net::ConnectOptions) {
    let relay = Relay::start(|c| c.max_frame(65536)).await;
    let alice = net::connect(&relay.addr.to_string(), "alice", alice)
        .await
        .unwrap();
    let bob = net::connect(&relay.addr.to_string(), "bob", options().max_frame(65536))
        .await
        .unwrap();
    alice.node().set_root(json!({"n": 0})).unwrap();
    let err = alice
        .node()
        .set_path("/big", "x".repeat(70_000))
        .unwrap_err();
    assert!(
        matches!(err.engine(), Some(facsimile::EngineError::TooLarge { .. })),
        "{err}"
    );
    assert_eq!(alice.node().get("/big"), None);
    // The connection goes on: a large write that fits, and the next ones.
    alice.node().set_path("/fits", "y".repeat(60_000)).unwrap();
    alice.node().set_path("/n", 1).unwrap();
    tokio::time::timeout(Duration::from_secs(20), alice.flush())
        .await
        .expect("the relay acknowledges the writes after the refused one")
        .unwrap();
    wait_until("bob to see alice's writes", Duration::from_secs(10), || {
        bob.node().get("/n") == Some(Value::Int(1))
    })
    .await;
    assert_eq!(bob.node().snapshot(), alice.node().snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tiny_frames_is_cut_off_at_the_message_limit() {
    let relay = Relay::start(|c| c.max_frame(65536)).await;
    let others = Bystanders::join(&relay).await;
    let mut ws = joined(&relay, "flood").await;
    // One message in 65,537 one-byte fragments: one byte over the limit.
    ws.feed(Message::Frame(Frame::message(
        &b"\x00"[..],
        OpCode::Data(Data::Binary),
        false,
    )))
    .await
    .unwrap();
    for _ in 0..65536 {
        ws.feed(Message::Frame(Frame::message(
            &b"x"[..],
            OpCode::Data(Data::Continue),
            false,
        )))
        .await
        .unwrap();
    }
    ws.flush().await.unwrap();
    let (code, reason) = until_closed(&mut ws).await;
    assert_eq!(code, TOO_BIG, "{reason}");
    others.still_served(1).await;

    // Pings are answered by the library, not frames: a flood of them from
    // a client that does not read meanwhile is harmless, and the client
    // still gets the document's messages afterwards.
    let mut pinger = joined(&relay, "pinger").await;
    for _ in 0..20_000 {
        pinger.feed(Message::Ping(b"p"[..].into())).await.unwrap();
    }
    pinger.flush().await.unwrap();
    others.still_served(2).await;
    loop {
        match next_down(&mut pinger).await {
            Ok(Down::Message { .. }) => break,
            Ok(_) => {}
            Err(close) => panic!("the pinger was closed: {close:?}"),
        }
    }
}

/// A connection to the relay upgraded to WebSocket, to write its framing
/// by hand.
pub(crate) async fn upgraded(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "the upgrade is answered");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_its_connection() {
    let relay = Relay::start(|c| c).await;
    let others = Bystanders::join(&relay).await;

    // Bytes that are not WebSocket framing, after a good upgrade.
    let mut s = upgraded(relay.addr).await;
    // Every reserved bit set, a reserved opcode.
    s.write_all(&[0xff; 16]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the relay closes the connection")
        .unwrap();
    // An unmasked close frame with a code, and the connection's end.
    assert_eq!(rest.first(), Some(&0x88), "{rest:?}");
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), PROTOCOL, "{rest:?}");

    // A well-formed binary message that is not a protocol frame.
    let mut ws = joined(&relay, "junk").await;
    ws.send(Message::Binary(
        b"\x00\xde\xad\xbe\xef not a message"[..].into(),
    ))
    .await
    .unwrap();
    let (code, reason) = until_closed(&mut ws).await;
    assert_eq!(code, POLICY);
    assert!(reason.contains("not a facsimile message"), "{reason}");

    // An empty one.
    let mut ws = joined(&relay, "empty").await;
    ws.send(Message::Binary(Vec::new().into())).await.unwrap();
    let (code, reason) = until_closed(&mut ws).await;
    assert_eq!(code, POLICY);
    assert!(reason.contains("empty frame"), "{reason}");

    others.still_served(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_never_reads_is_cut_off() {
    let relay = Relay::start(|c| c.client_queue(1 << 20)).await;
    let others = Bystanders::join(&relay).await;
    // Joins the document and never reads.
    let mut stalled = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(relay.addr).await.unwrap();
        let mut ws = upgrade(relay.ws_url(), tcp).await.unwrap();
        ws.send(Message::Binary(hello("stalled", rand_tag(), None).encode()))
            .await
            .unwrap();
        ws
    };
    let value = "x".repeat(8 << 10);
    let root = others.alice.node().root_map().unwrap();
    let n = 1200;
    for i in 0..n {
        root.set(&format!("k{}", i % 50), format!("{i}{value}"))
            .unwrap();
        if i % 10 == 0 {
            others.alice.flush().await.unwrap();
        }
    }
    others.alice.flush().await.unwrap();
    // Every acknowledged write reached the reading WebSocket client.
    let last = format!("{}{value}", n - 1);
    wait_until(
        "bob to receive every write",
        Duration::from_secs(30),
        || {
            others.bob.node.get(&format!("/k{}", (n - 1) % 50))
                == Some(Value::String(last.as_str().into()))
        },
    )
    .await;
    // The stalled one was cut off: what it holds ends.
    let (code, reason) = until_closed(&mut stalled).await;
    assert!(
        code == 0 || (code == POLICY && reason.contains("too slow")),
        "{code} {reason}"
    );
    others.still_served(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_test_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let tls = facsimile_server::tls::load(&cert_path, &key_path).unwrap();
    let relay = Relay::start(|c| c.tls(tls)).await;

    let tcp_tls = TlsOptions::from_ca_file(&cert_path)
        .unwrap()
        .server_name("localhost");
    let alice = net::connect(&relay.addr.to_string(), "alice", options().tls(tcp_tls))
        .await
        .unwrap();
    alice.node().set_root(json!({"secret": 42})).unwrap();
    alice.flush().await.unwrap();
    let bob = WsNode::connect(Dial::tls(relay.addr, &cert.cert.pem()), "bob").await;
    assert_eq!(bob.node.get("/secret"), Some(Value::Int(42)));
    bob.node.set_path("/reply", "over wss").unwrap();
    bob.flush().await;
    converge(&[alice.node(), &bob.node]).await;

    // Plain WebSocket is not understood by a TLS relay.
    assert!(
        Dial::Plain(relay.addr).websocket().await.is_err(),
        "ws:// to a TLS relay fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_resumes_after_a_relay_restart_and_loses_no_acknowledged_write() {
    let mut relay = Relay::start(|c| c).await;
    let writer = WsNode::connect(Dial::Plain(relay.addr), "writer").await;
    writer.node.set_root(json!({})).unwrap();
    let root = writer.node.root_map().unwrap();
    for j in 0..200 {
        root.set(&format!("k{j}"), j).unwrap();
    }
    writer.flush().await;
    let acked: BTreeSet<String> = root.keys().into_iter().collect();
    // Written, not yet acknowledged when the relay stops.
    for j in 200..400 {
        root.set(&format!("k{j}"), j).unwrap();
    }
    relay.restart().await;
    // Written while the node reconnects.
    for j in 400..600 {
        root.set(&format!("k{j}"), j).unwrap();
    }
    writer.flush().await;
    let late = tcp_node(&relay, "late").await;
    converge(&[&writer.node, late.node()]).await;
    let keys: BTreeSet<String> = late.node().root_map().unwrap().keys().into_iter().collect();
    assert!(acked.is_subset(&keys), "an acknowledged write was lost");
    assert_eq!(keys.len(), 600);
    let welcomes = writer.welcomes();
    assert_eq!(welcomes.count, 2, "{welcomes:?}");
    assert_eq!(welcomes.resumed, 1, "the node resumed: {welcomes:?}");
    assert_eq!(welcomes.evicted, 0, "{welcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_vanishes_while_the_relay_writes_to_it() {
    let relay = Relay::start(|c| c).await;
    let others = Bystanders::join(&relay).await;
    for round in 0..5 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(relay.addr).await.unwrap();
        let mut ws = upgrade(relay.ws_url(), tcp).await.unwrap();
        ws.send(Message::Binary(hello("gone", rand_tag(), None).encode()))
            .await
            .unwrap();
        assert!(matches!(
            next_down(&mut ws).await,
            Ok(Down::Hello(ServerHello::Welcome { .. }))
        ));
        let value = "v".repeat(4 << 10);
        let root = others.alice.node().root_map().unwrap();
        for i in 0..200 {
            root.set(&format!("r{round}"), format!("{i}{value}"))
                .unwrap();
        }
        others.alice.flush().await.unwrap();
        // Reset, not closed: the relay's writes to it fail.
        let tcp = ws.into_inner();
        // A zero linger resets at once: nothing blocks on drop.
        #[allow(deprecated)]
        tcp.set_linger(Some(Duration::ZERO)).unwrap();
        drop(tcp);
        others.still_served(round).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_that_does_not_read_cannot_hold_its_connection_open() {
    // Two places: alice's, and the stalled client's until the relay ends it.
    let relay = Relay::start(|c| c.max_clients(2)).await;
    let alice = tcp_node(&relay, "alice").await;
    alice.node().set_root(json!({})).unwrap();
    alice.flush().await.unwrap();
    let mut stalled = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(relay.addr).await.unwrap();
        let mut ws = upgrade(relay.ws_url(), tcp).await.unwrap();
        ws.send(Message::Binary(hello("stalled", rand_tag(), None).encode()))
            .await
            .unwrap();
        ws
    };
    // More than the sockets between them hold: the relay's writes to the
    // stalled client block.
    let value = "x".repeat(8 << 10);
    let root = alice.node().root_map().unwrap();
    for i in 0..1200 {
        root.set(&format!("k{}", i % 50), format!("{i}{value}"))
            .unwrap();
        if i % 100 == 0 {
            alice.flush().await.unwrap();
        }
    }
    alice.flush().await.unwrap();
    // Something the relay refuses, and no reading, ever.
    stalled
        .send(Message::Binary(b"\x00\xde\xad not a message"[..].into()))
        .await
        .unwrap();
    // Its place frees up: a newcomer is let in.
    let started = std::time::Instant::now();
    loop {
        let mut ws = Dial::Plain(relay.addr).websocket().await.unwrap();
        match say_hello(&mut ws, &hello("newcomer", rand_tag(), None)).await {
            ServerHello::Welcome { .. } => break,
            ServerHello::Refused { reason } => {
                assert!(reason.contains("connection limit"), "{reason}");
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "the refused client still holds its connection"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(relay_panics(), 0);
    drop(stalled);
}
