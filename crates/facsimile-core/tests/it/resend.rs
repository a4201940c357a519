//! A message lost on the way is asked for again and resent from the
//! sender's log; one that fell out of the log sends the receiver to sync.

use facsimile_core::{Config, Event, Input, PeerId, Replica, Transmit, Value};

fn drain(r: &mut Replica) -> Vec<Transmit> {
    std::iter::from_fn(|| r.poll_transmit()).collect()
}

/// A writer with an array at its root and a reader loaded from its state.
fn pair(config: Config) -> (Replica, Replica) {
    let mut a = Replica::new(PeerId::new("a", 1), config.clone());
    a.set_root(Input::Array(vec![])).unwrap();
    drain(&mut a);
    let mut b = Replica::from_exported(PeerId::new("b", 2), config, &a.export_state()).unwrap();
    // The reader's announcement and the writer's answer, out of the way.
    let hello = drain(&mut b);
    deliver(&mut a, hello);
    let answer = drain(&mut a);
    deliver(&mut b, answer);
    drain(&mut b);
    (a, b)
}

/// Pushes 1..=n on the writer, one message each.
fn pushes(a: &mut Replica, n: i64) -> Vec<Transmit> {
    let list = a.root().as_ref_id().unwrap();
    for i in 1..=n {
        let len = a.list_len(list).unwrap();
        a.list_splice(list, len, 0, [Input::from(i)]).unwrap();
    }
    let sent = drain(a);
    assert_eq!(sent.len(), n as usize);
    sent
}

/// The messages addressed to the reader alone.
fn to_reader(msgs: Vec<Transmit>) -> Vec<Transmit> {
    msgs.into_iter().filter(|t| t.to == Some(2)).collect()
}

fn deliver(to: &mut Replica, msgs: impl IntoIterator<Item = Transmit>) {
    for t in msgs {
        to.handle_message(&t.bytes).unwrap();
    }
}

fn elements(r: &Replica) -> Vec<Value> {
    let list = r.root().as_ref_id().unwrap();
    let mut out = Vec::new();
    r.list_for_each(list, |v, _| out.push(v.clone())).unwrap();
    out
}

#[test]
fn a_lost_message_is_resent_from_the_log() {
    let (mut a, mut b) = pair(Config::default().resend_log(4));
    let sent = pushes(&mut a, 6);
    // The third message is lost; the fourth shows the gap.
    let (before, after) = sent.split_at(3);
    deliver(&mut b, before[..2].iter().cloned());
    deliver(&mut b, after[..1].iter().cloned());
    let asks = drain(&mut b);
    assert!(asks.iter().any(|t| t.to == Some(1)), "the gap is reported");
    deliver(&mut a, asks);
    let again = to_reader(drain(&mut a));
    // Messages 3 to 6 (the log keeps four).
    assert_eq!(again.len(), 4);
    let resent: Vec<&[u8]> = again.iter().map(|t| &t.bytes[..]).collect();
    let original: Vec<&[u8]> = sent[2..].iter().map(|t| &t.bytes[..]).collect();
    assert_eq!(resent, original, "resent byte for byte");
    deliver(&mut b, again);
    deliver(&mut b, after[1..].iter().cloned());
    assert_eq!(elements(&b), (1..=6).map(Value::Int).collect::<Vec<_>>());
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn a_message_gone_from_the_log_sends_the_reader_to_sync() {
    let (mut a, mut b) = pair(Config::default().resend_log(2));
    let sent = pushes(&mut a, 6);
    // Message 1 is lost and the log keeps only 5 and 6.
    deliver(&mut b, sent[1..2].iter().cloned());
    deliver(&mut a, drain(&mut b));
    let gone = to_reader(drain(&mut a));
    assert_eq!(gone.len(), 1, "one message saying so");
    deliver(&mut b, gone);
    let events: Vec<Event> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(e, Event::NeedsSync)),
        "{events:?}"
    );
}

/// `Replica::peers` tells each member's stream position: how many of its
/// messages were applied here, and how many wait ahead of a gap.
#[test]
fn peers_tell_their_stream_position_and_what_waits_behind_a_gap() {
    let (mut a, mut b) = pair(Config::default());
    let position = |b: &Replica| {
        let peers = b.peers();
        let a = peers.iter().find(|p| p.peer.hostname() == "a").unwrap();
        (a.applied, a.held)
    };
    let (start, held) = position(&b);
    assert_eq!(held, 0);
    let sent = pushes(&mut a, 4);
    deliver(&mut b, sent[..1].iter().cloned());
    assert_eq!(position(&b), (start + 1, 0));
    deliver(&mut b, sent[2..].iter().cloned());
    assert_eq!(position(&b), (start + 1, 2), "two wait behind the gap");
    deliver(&mut b, sent[1..2].iter().cloned());
    assert_eq!(position(&b), (start + 4, 0));
}
