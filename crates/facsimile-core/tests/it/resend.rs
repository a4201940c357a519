//! A message lost on the way is asked for again and resent from the
//! sender's log; one that fell out of the log sends the receiver to sync.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use facsimile_core::sim::{Sim, Verdict, run_seeds};
use facsimile_core::{Config, Event, Input, PeerId, Replica, Transmit, Value, WireFormat};

use crate::support::{edit_json, kind_of};

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

/// A newcomer that replica `p`'s writes reach before `p`'s welcome does
/// (`p` wrote before it read the newcomer's hello): replicas r0 to r2 with
/// a root map, and the newcomer's index.
fn writes_before_the_welcome(seed: u64, p: usize) -> (Sim, usize) {
    let config = Config::default().wire_format(WireFormat::Json);
    let mut sim = Sim::with_config(seed, 3, config);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let n = sim.add("newcomer");
    let root = sim.replica(p).root().as_ref_id().unwrap();
    for i in 0..3 {
        sim.with(p, |r| r.map_set(root, "k", i.into())).unwrap();
    }
    (sim, n)
}

/// Counts from here on the resend requests `n` sends replica `to`.
fn resends_to(sim: &mut Sim, n: usize, to: usize) -> Arc<AtomicUsize> {
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let p = sim.tag(to);
    sim.intercept(move |from, t| {
        if from == n && t.to == Some(p) && kind_of(&t.bytes).as_deref() == Some("Resend") {
            count.fetch_add(1, Ordering::Relaxed);
        }
        Verdict::Deliver
    });
    asked
}

/// The newcomer follows the stream from its start, as the welcome would
/// have it, and asks for it once however many of its messages came first.
#[test]
fn writes_that_reach_a_newcomer_before_their_sender_s_welcome_are_applied() {
    run_seeds(0..20, |seed| {
        let (mut sim, n) = writes_before_the_welcome(seed, 2);
        let asked = resends_to(&mut sim, n, 2);
        sim.settle();
        assert_eq!(asked.load(Ordering::Relaxed), 1, "seed {seed}");
        let root = sim.replica(n).root().as_ref_id().unwrap();
        assert_eq!(sim.replica(n).map_get(root, "k").unwrap(), Some(2.into()));
        sim.assert_converged();
    });
}

/// Strangers' messages ahead of their streams' start, more of them than
/// the replica keeps a record of, do not make it ask an honest sender for
/// its stream again at each message before its welcome: the records that
/// go are the oldest, not the newest.
#[test]
fn strangers_do_not_make_a_newcomer_ask_a_sender_again_at_each_message() {
    let mut forger = Replica::new(
        PeerId::new("forger", 9),
        Config::default().wire_format(WireFormat::Json),
    );
    drain(&mut forger);
    forger.set_root(Input::Map(vec![])).unwrap();
    let write = drain(&mut forger).pop().unwrap();
    run_seeds(0..20, |seed| {
        let (mut sim, n) = writes_before_the_welcome(seed, 2);
        for tag in 0xbad_0000..0xbad_0000 + 100u32 {
            let stranger = edit_json(&write.bytes, |v| {
                v["from"] = serde_json::json!(format!("{tag:08x}"));
                v["body"]["Ops"]["seq"] = serde_json::json!(2);
            });
            sim.replica(n).handle_message(&stranger).unwrap();
        }
        let asked = resends_to(&mut sim, n, 2);
        sim.settle();
        assert_eq!(asked.load(Ordering::Relaxed), 1, "seed {seed}");
        let root = sim.replica(n).root().as_ref_id().unwrap();
        assert_eq!(sim.replica(n).map_get(root, "k").unwrap(), Some(2.into()));
        sim.assert_converged();
    });
}

/// A sender that crashed before it welcomed a newcomer, whose message
/// (an acknowledgement) reached the newcomer first, holds nothing back:
/// reclamation completes everywhere.
#[test]
fn a_sender_that_crashed_before_its_welcome_does_not_stop_reclamation() {
    let mut sim = Sim::new(1, 3);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let n = sim.add("newcomer");
    // Every replica acknowledges what it applied; r2's acknowledgement
    // goes out before it reads the newcomer's hello, which it never does.
    sim.advance(Duration::from_secs(1));
    sim.crash(2);
    // Its transport reports it gone.
    let gone = sim.replica(2).peer_id().clone();
    sim.with(0, |r| r.evict(&gone));
    sim.run();
    let root = sim.replica(0).root().as_ref_id().unwrap();
    let garbage = Input::Map(vec![("x".into(), Input::Array(vec![]))]);
    sim.with(0, |r| r.map_set(root, "tmp", garbage)).unwrap();
    sim.run();
    sim.with(0, |r| r.map_delete(root, "tmp")).unwrap();
    sim.settle();
    sim.settle();
    for i in [0, 1, n] {
        let r = sim.replica(i);
        assert_eq!(
            r.object_count(),
            r.reachable_objects().len(),
            "replica {i} kept unreachable objects"
        );
    }
    sim.assert_converged();
}

/// A request to resend is answered only for a peer this replica has heard
/// of, and a range once: asked again, only what the requester was not
/// sent yet goes, until the requester's sync request (it drops the streams
/// it followed) makes the whole range due again. Each answer may be the
/// whole log, for a request of a few bytes.
#[test]
fn resends_go_to_known_peers_and_a_range_once_a_sync() {
    let config = Config::default()
        .wire_format(WireFormat::Json)
        .resend_log(16);
    let (mut a, mut b) = pair(config);
    let sent = pushes(&mut a, 6);
    // The first message is lost; the second shows the gap.
    deliver(&mut b, sent[1..2].iter().cloned());
    let ask = drain(&mut b)
        .into_iter()
        .find(|t| t.to == Some(1) && kind_of(&t.bytes).as_deref() == Some("Resend"))
        .expect("the gap is reported");
    let stranger = edit_json(&ask.bytes, |v| v["from"] = serde_json::json!("00000bad"));
    for _ in 0..10 {
        a.handle_message(&stranger).unwrap();
    }
    assert!(drain(&mut a).is_empty(), "nothing for a stranger");
    for _ in 0..10 {
        a.handle_message(&ask.bytes).unwrap();
    }
    assert_eq!(to_reader(drain(&mut a)).len(), 6, "the range once");
    // Asked again later: only what was sent since.
    let more = pushes(&mut a, 2);
    a.handle_message(&ask.bytes).unwrap();
    let since: Vec<Transmit> = to_reader(drain(&mut a));
    let bytes = |m: &[Transmit]| m.iter().map(|t| t.bytes.to_vec()).collect::<Vec<_>>();
    assert_eq!(bytes(&since), bytes(&more));
    // The reader syncs, and asks again from where the state it loads
    // leaves it: the whole range is due again.
    b.sync();
    deliver(&mut a, drain(&mut b));
    drain(&mut a);
    a.handle_message(&ask.bytes).unwrap();
    let whole = to_reader(drain(&mut a));
    // The eight, and the writer's offer to the sync.
    assert_eq!(whole.len(), 9, "after a sync request");
    assert_eq!(bytes(&whole[..6]), bytes(&sent));
    assert_eq!(bytes(&whole[6..8]), bytes(&more));
}

/// A replica that syncs resends its stream to a peer whose announcement
/// waits in its backlog: that peer is heard from, though not yet read.
#[test]
fn a_syncing_replica_resends_to_a_peer_it_holds_messages_of() {
    let config = Config::default().wire_format(WireFormat::Json);
    let mut a = Replica::new(PeerId::new("a", 1), config.clone());
    a.set_root(Input::Map(vec![])).unwrap();
    drain(&mut a);
    // `s` syncs; its hello and request reach nobody yet.
    let mut s = Replica::new(PeerId::new("s", 2), config.clone());
    s.sync();
    drain(&mut s);
    // `n` starts listening after them, and syncs.
    let mut n = Replica::new(PeerId::new("n", 3), config);
    n.sync();
    let from_n = drain(&mut n);
    deliver(&mut s, from_n.iter().cloned());
    deliver(&mut a, from_n);
    // `s`, syncing, offers to `n` at once; `a`, which knows nothing of
    // `s`, answers `n`.
    deliver(&mut n, drain(&mut s));
    deliver(&mut n, drain(&mut a));
    deliver(&mut a, drain(&mut n));
    deliver(&mut n, drain(&mut a));
    assert!(n.is_ready() && !s.is_ready());
    // `n` read `s`'s offer without the start of its stream, and asks for it.
    let ask: Vec<Transmit> = drain(&mut n)
        .into_iter()
        .filter(|t| t.to == Some(2) && kind_of(&t.bytes).as_deref() == Some("Resend"))
        .collect();
    assert_eq!(ask.len(), 1, "the gap is reported");
    deliver(&mut s, ask);
    let again: Vec<Transmit> = drain(&mut s)
        .into_iter()
        .filter(|t| t.to == Some(3))
        .collect();
    let kinds: Vec<Option<String>> = again.iter().map(|t| kind_of(&t.bytes)).collect();
    assert_eq!(
        kinds,
        ["Hello", "SyncRequest", "SyncOffer"].map(|k| Some(k.to_string()))
    );
}
