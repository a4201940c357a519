//! The conformance cases (`conformance.json`) against the Rust client's
//! [`Session`]. The JavaScript package's tests run the same file against
//! the `RelayClient` its `Facsimile.connect` drives, so the two clients
//! answer every frame sequence alike.
//!
//! Steps: `hello` [hostname, incarnation] → the frame, hex; `welcome`
//! frame → `joined`, `resumed`, `sync`, `rejoin`, `refused:REASON` or
//! `not_a_relay`; `send` [to or null, message] → whether it was queued;
//! `take` → the frames written next, all of them; `receive` frame →
//! `message:HEX`, `acked`, `closing:REASON` or `error`; `counters` →
//! [queued, done, dropped]; `max_message` → the largest message the
//! relay's latest welcome allows, or null when it did not say.

use bytes::Bytes;
use facsimile_protocol::{Admission, HelloError, Incoming, Outbox, Session};
use serde_json::Value;

fn hex(s: &str) -> Bytes {
    assert!(s.len() % 2 == 0, "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect::<Vec<u8>>()
        .into()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn the_session_handles_every_conformance_case() {
    let cases: Value = serde_json::from_str(include_str!("conformance.json")).expect("JSON");
    let cases = cases["cases"].as_array().expect("cases");
    assert!(cases.len() >= 6);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let mut session = Session::new(
            case["document"].as_str().expect("document"),
            case["token"].as_str().expect("token"),
        )
        .read_only(case["read_only"].as_bool().expect("read_only"));
        let mut outbox = Outbox::default();
        for (i, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
            let at = format!("{name}, step {i}: {step}");
            let expect = &step["expect"];
            if let Some(h) = step.get("hello") {
                let frame = session.hello(
                    h[0].as_str().expect("hostname"),
                    u32::try_from(h[1].as_u64().expect("incarnation")).expect("u32"),
                );
                assert_eq!(to_hex(&frame), expect.as_str().unwrap(), "{at}");
            } else if let Some(f) = step.get("welcome") {
                let got = match session.welcome(hex(f.as_str().unwrap()), &mut outbox) {
                    Ok(Admission::Joined) => "joined".to_string(),
                    Ok(Admission::Resumed) => "resumed".into(),
                    Ok(Admission::Sync) => "sync".into(),
                    Ok(Admission::Rejoin { .. }) => "rejoin".into(),
                    Err(HelloError::Refused(r)) => format!("refused:{r}"),
                    Err(HelloError::NotARelay(_)) => "not_a_relay".into(),
                };
                assert_eq!(got, expect.as_str().unwrap(), "{at}");
            } else if let Some(s) = step.get("send") {
                let to = s[0].as_u64().map(|t| u32::try_from(t).expect("u32"));
                let queued = Session::send(&mut outbox, to, &hex(s[1].as_str().unwrap()));
                assert_eq!(queued, expect.as_bool().unwrap(), "{at}");
            } else if let Some(t) = step.get("take") {
                let mut batch = Vec::new();
                outbox.take_batch(usize::MAX, &mut batch);
                let got: Vec<String> = batch.iter().map(|b| to_hex(b)).collect();
                let want: Vec<&str> = t
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap())
                    .collect();
                assert_eq!(got, want, "{at}");
            } else if let Some(f) = step.get("receive") {
                let got = match session.receive(hex(f.as_str().unwrap()), &mut outbox) {
                    Ok(Incoming::Message(m)) => format!("message:{}", to_hex(&m)),
                    Ok(Incoming::Acked) => "acked".into(),
                    Ok(Incoming::Closing(r)) => format!("closing:{r}"),
                    Err(_) => "error".into(),
                };
                assert_eq!(got, expect.as_str().unwrap(), "{at}");
            } else if let Some(m) = step.get("max_message") {
                let got = session
                    .relay_max_frame()
                    .map(facsimile_protocol::max_message);
                assert_eq!(got, m.as_u64().map(|m| m as usize), "{at}");
            } else if let Some(c) = step.get("counters") {
                let want: Vec<u64> = c
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_u64().unwrap())
                    .collect();
                assert_eq!(
                    vec![outbox.queued(), outbox.done(), outbox.dropped()],
                    want,
                    "{at}"
                );
            } else {
                panic!("unknown step {at}");
            }
        }
    }
}
