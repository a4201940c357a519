//! Bad input: every kind of malformed or hostile message is refused with a
//! typed error (or accepted where the protocol makes it a harmless no-op),
//! leaves the document byte for byte as it was, sends nothing, never panics,
//! and the replica keeps converging with its honest peers afterwards.
//!
//! Hostile messages are made from real ones: a replica of the test plays the
//! attacker ("mallory"), and its messages are rewritten before delivery —
//! as JSON where the structure matters, as bytes where the binary envelope
//! does.

#[path = "it/support.rs"]
mod support;

use std::alloc::System;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use facsimile_core::sim::{Sim, Verdict, run_seeds};
use facsimile_core::{
    Config, Input, LockState, ObjectId, ReceiveError, Replica, Transmit, Value, WireFormat,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value as Json, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use support::{edit_json, kind_of};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Less than any hostile length below claims (1 GiB and up), and far more
/// than the other tests of this binary allocate meanwhile (the counts are
/// process-wide).
const ALLOCATION_BOUND: usize = 256 << 20;

/// Runs `f` and returns its result with the bytes allocated meanwhile.
fn allocated<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let region = Region::new(ALLOCATOR);
    let r = f();
    (r, region.change().bytes_allocated)
}

const A: usize = 0;
const B: usize = 1;
const M: usize = 2;

fn config(format: WireFormat) -> Config {
    Config::default().wire_format(format)
}

/// The network's seed: these tests build each situation explicitly, by
/// holding messages back; the interleaving of the rest is the seed's.
const SEED: u64 = 0;

/// Replicas with these hostnames and configurations that know each other.
fn network(hosts: [(&str, Config); 3]) -> Sim {
    let mut sim = Sim::with_hosts(SEED, hosts);
    sim.run();
    sim
}

/// Runs `f` on replica `i` and holds back what it sends ([`Sim::held`]).
fn holding<R>(sim: &mut Sim, i: usize, f: impl FnOnce(&mut Replica) -> R) -> R {
    sim.intercept(move |from, _| {
        if from == i {
            Verdict::Hold
        } else {
            Verdict::Deliver
        }
    });
    let r = sim.with(i, f);
    sim.stop_intercepting();
    r
}

/// Puts every message held back onto the links.
fn release_all(sim: &mut Sim) {
    for i in 0..sim.len() {
        sim.release(i);
    }
}

/// Alpha, bravo and mallory sharing a small document: a root map with a
/// title, an array `items` and a map `meta`.
fn world(format: WireFormat) -> Sim {
    let mut net = network([
        ("alpha", config(format)),
        ("bravo", config(format)),
        ("mallory", config(format)),
    ]);
    net.replica(A)
        .set_root(Input::Map(vec![
            ("title".into(), "doc".into()),
            (
                "items".into(),
                Input::Array(vec![1.into(), 2.into(), 3.into()]),
            ),
            ("meta".into(), Input::Map(vec![("n".into(), 1.into())])),
        ]))
        .unwrap();
    net.run();
    let root = root(&net, B);
    net.replica(B).map_set(root, "b", 2.into()).unwrap();
    net.run();
    net
}

fn root(net: &Sim, i: usize) -> ObjectId {
    net[i].root().as_ref_id().expect("a root map")
}

fn child_of(r: &Replica, root: ObjectId, key: &str) -> ObjectId {
    r.map_get(root, key)
        .unwrap()
        .and_then(|v| v.as_ref_id())
        .expect("a child object")
}

fn child(net: &Sim, i: usize, key: &str) -> ObjectId {
    net[i]
        .map_get(root(net, i), key)
        .unwrap()
        .and_then(|v| v.as_ref_id())
        .expect("a child object")
}

/// Lets mallory make one honest write and returns its message, which stays
/// held for delivery (mallory's later messages are held behind it).
fn mallory_writes(net: &mut Sim, write: impl FnOnce(&mut Replica, ObjectId)) -> Transmit {
    net.release(M);
    net.run();
    let root = root(net, M);
    holding(net, M, |m| write(m, root));
    let held = net.held(M);
    assert_eq!(held.len(), 1, "one write, one message");
    held[0].clone()
}

/// Delivers hostile bytes to `victim`, which must refuse them and stay
/// exactly as it was.
fn refused(net: &mut Sim, victim: usize, bytes: &[u8]) -> ReceiveError {
    let r = net.replica(victim);
    let before = r.snapshot();
    let was_ready = r.is_ready();
    let err = match r.handle_message(bytes) {
        Err(e) => e,
        Ok(()) => panic!(
            "replica {victim} accepted a hostile message: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(4000)])
        ),
    };
    assert_eq!(
        r.snapshot(),
        before,
        "a refused message changed the document"
    );
    assert_eq!(r.is_ready(), was_ready);
    assert!(
        !r.has_transmits(),
        "a refused message made the replica send"
    );
    err
}

/// Delivers bytes that the protocol defines as a no-op.
fn harmless(net: &mut Sim, victim: usize, bytes: &[u8]) {
    let r = net.replica(victim);
    let before = r.snapshot();
    r.handle_message(bytes)
        .expect("a harmless message is accepted");
    assert_eq!(r.snapshot(), before, "a no-op changed the document");
}

fn is_invalid_from(e: &ReceiveError, tag: u32) -> bool {
    matches!(e, ReceiveError::Invalid { from, .. } if *from == tag)
}

fn hex(tag: u32) -> String {
    format!("{tag:08x}")
}

/// The honest replicas keep writing, converge, and a late joiner receives
/// the same document.
fn still_converges(net: &mut Sim) {
    release_all(net);
    net.run();
    let (ra, rb) = (root(net, A), root(net, B));
    net.replica(A).map_set(ra, "after-a", 1.into()).unwrap();
    net.replica(B)
        .map_set(rb, "after-b", Input::Array(vec![7.into()]))
        .unwrap();
    let items = child(net, B, "items");
    net.replica(B)
        .list_splice(items, 0, 1, vec![9.into()])
        .unwrap();
    net.settle();
    net.assert_converged();
    let format = WireFormat::Binary;
    let j = net.add_with_config("late", config(format));
    // It fetches the document from alpha: mallory's own document need not
    // match the others' (it applied its originals where they received
    // forgeries). The others are held back until it has chosen.
    net.intercept(move |from, _| {
        if from == A || from == j {
            Verdict::Deliver
        } else {
            Verdict::Hold
        }
    });
    net.with(j, Replica::sync);
    let at = net.tag(A);
    let (from, fetch) = net
        .run_until(|from, t| from == j && t.to == Some(at))
        .expect("the late joiner fetches from alpha");
    net.stop_intercepting();
    net.send(from, fetch);
    release_all(net);
    net.settle();
    assert!(net[j].is_ready(), "the late joiner never finished its sync");
    net.assert_converged();
    assert_eq!(
        net[j].map_get(root(net, j), "after-a").unwrap(),
        Some(1.into())
    );
}

/// The first operation of this kind in a JSON operations message.
fn op<'a>(v: &'a mut Json, kind: &str) -> &'a mut Json {
    v["body"]["Ops"]["ops"]
        .as_array_mut()
        .expect("an operations message")
        .iter_mut()
        .find_map(|o| o.get_mut(kind))
        .unwrap_or_else(|| panic!("no {kind} operation"))
}

/// How far an operations message moves its sender's counter.
fn tick(bytes: &[u8]) -> u64 {
    let v: Json = serde_json::from_slice(&edit_json(bytes, |_| {})).unwrap();
    v["body"]["Ops"]["tick"].as_u64().unwrap()
}

// ------------------------------------------------------------- envelopes

#[test]
fn an_empty_message_is_refused() {
    let mut fresh = Replica::new(facsimile_core::PeerId::new("fresh", 7), Config::default());
    assert_eq!(fresh.handle_message(&[]), Err(ReceiveError::Empty));
    let mut net = world(WireFormat::Binary);
    assert_eq!(refused(&mut net, B, &[]), ReceiveError::Empty);
    still_converges(&mut net);
}

/// Every message kind of a full session (hello, welcome, operations of
/// every kind, acknowledgements, the sync handshake and its answer,
/// retransmission requests, goodbye), recorded as sent.
fn session(format: WireFormat) -> Vec<Vec<u8>> {
    let mut net = world(format);
    let items = child(&net, A, "items");
    let meta = child(&net, A, "meta");
    holding(&mut net, A, |r| {
        r.map_set(meta, "k", Input::Value(Value::Bytes(vec![1, 2, 3].into())))
            .unwrap();
        r.map_delete(meta, "n").unwrap();
        r.list_splice(items, 1, 1, vec![Input::Map(vec![]), 2.5.into()])
            .unwrap();
        r.list_set(items, 0, "zero".into()).unwrap();
        r.list_reorder(items, &[3, 2, 1, 0]).unwrap();
    });
    // Every message is recorded as it is sent.
    let log: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let record = Arc::clone(&log);
    net.intercept(move |_, t| {
        record.lock().unwrap().push(t.bytes.to_vec());
        Verdict::Deliver
    });
    let send = |net: &mut Sim, from: usize, t: Transmit| {
        log.lock().unwrap().push(t.bytes.to_vec());
        net.send(from, t);
    };
    let mut sent: Vec<Transmit> = net.held(A).drain(..).collect();
    // Bravo receives alpha's last message first, holds it and asks for the
    // missing ones.
    let last = sent.pop().unwrap();
    net.replica(B).handle_message(&last.bytes).unwrap();
    for t in sent {
        send(&mut net, A, t);
    }
    net.run();
    send(&mut net, A, last);
    net.run();
    net.replica(A)
        .set_root(Input::Value(Value::Ref(meta)))
        .unwrap();
    let j = net.add_with_config("joiner", config(format));
    net.with(j, Replica::sync);
    net.run();
    // Acknowledgements for reclamation.
    net.advance(Duration::from_secs(5));
    net.run();
    net.with(B, Replica::leave);
    net.run();
    net.stop_intercepting();
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn every_truncation_of_every_message_is_refused() {
    for format in [WireFormat::Binary, WireFormat::Json] {
        let messages = session(format);
        assert!(messages.len() >= 10, "{} messages", messages.len());
        let mut net = world(WireFormat::Binary);
        let mut fresh = Replica::new(facsimile_core::PeerId::new("fresh", 7), Config::default());
        let fresh_before = fresh.snapshot();
        let mut cuts = 0;
        for msg in &messages {
            for len in 0..msg.len() {
                let e = refused(&mut net, B, &msg[..len]);
                match (len, &e) {
                    (0, ReceiveError::Empty) | (_, ReceiveError::Malformed(_)) => {}
                    _ => panic!("prefix of {len} bytes: unexpected {e:?}"),
                }
                assert!(fresh.handle_message(&msg[..len]).is_err());
                cuts += 1;
            }
        }
        assert_eq!(fresh.snapshot(), fresh_before);
        assert!(cuts > 500, "{cuts} truncations");
        still_converges(&mut net);
    }
}

#[test]
fn random_garbage_is_refused() {
    let mut net = world(WireFormat::Binary);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut accepted = 0;
    for round in 0..30_000 {
        let len = rng.random_range(0..80);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        match round % 3 {
            // Past the envelope into the binary decoder.
            0 if len > 0 => bytes[0] = facsimile_core::VERSION,
            // Into the JSON decoder.
            1 if len > 0 => bytes[0] = b'{',
            _ => {}
        }
        let r = net.replica(B);
        let before = r.snapshot();
        match r.handle_message(&bytes) {
            Err(e) => {
                match (bytes.first(), &e) {
                    (None, ReceiveError::Empty) => {}
                    (Some(&v), ReceiveError::UnsupportedVersion(x))
                        if v == *x && v != facsimile_core::VERSION && v != b'{' => {}
                    (Some(&v), _) if v == facsimile_core::VERSION || v == b'{' => {}
                    _ => panic!("{bytes:?}: unexpected {e:?}"),
                }
                assert!(!r.has_transmits());
            }
            // Random bytes can spell a message addressed to someone else,
            // or one held until its sender's earlier messages arrive.
            Ok(()) => accepted += 1,
        }
        assert_eq!(r.snapshot(), before);
        while r.poll_transmit().is_some() {}
    }
    assert!(accepted < 300, "{accepted} garbage messages accepted");
    still_converges(&mut net);
}

#[test]
fn a_wrong_version_byte_is_refused() {
    let mut net = world(WireFormat::Binary);
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 1.into()).unwrap();
    });
    assert_eq!(msg.bytes[0], facsimile_core::VERSION);
    for v in 0..=255u8 {
        if v == facsimile_core::VERSION || v == b'{' {
            continue;
        }
        let mut bytes = msg.bytes.to_vec();
        bytes[0] = v;
        assert_eq!(
            refused(&mut net, B, &bytes),
            ReceiveError::UnsupportedVersion(v)
        );
    }
    still_converges(&mut net);
}

/// JSON messages name their version in a field of their own, `v`, first:
/// another version is refused as such, whether or not the rest reads as
/// this version's; one without `v` (written before JSON carried it) is of
/// version 1.
#[test]
fn a_json_message_of_another_version_is_refused() {
    let mut net = world(WireFormat::Json);
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 1.into()).unwrap();
    });
    let text = std::str::from_utf8(&msg.bytes).unwrap().to_string();
    let rest = text
        .strip_prefix(&format!("{{\"v\":{},", facsimile_core::VERSION))
        .expect("the version comes first");
    for v in [0u64, 2, 255, 256, 1 << 40] {
        let bytes = format!("{{\"v\":{v},{rest}");
        assert_eq!(
            refused(&mut net, B, bytes.as_bytes()),
            ReceiveError::UnsupportedVersion(u8::try_from(v).unwrap_or(u8::MAX)),
            "{v}"
        );
        // A later version's body need not read as this one's.
        let later = format!("{{\"v\":{v},\"from\":7,\"body\":{{\"Later\":[1,2]}}}}");
        assert_eq!(
            refused(&mut net, B, later.as_bytes()),
            ReceiveError::UnsupportedVersion(u8::try_from(v).unwrap_or(u8::MAX)),
            "{later}"
        );
    }
    // Without `v`: read as version 1, applied.
    let unversioned = format!("{{{rest}");
    net.replica(B)
        .handle_message(unversioned.as_bytes())
        .expect("a message without a version is of version 1");
    let rb = root(&net, B);
    assert_eq!(
        net.replica(B).map_get(rb, "m").unwrap(),
        Some(Value::Int(1))
    );
    still_converges(&mut net);
}

#[test]
fn an_oversized_message_is_refused_before_decoding() {
    let max = 4096;
    let mut net = network([
        ("alpha", config(WireFormat::Json)),
        ("bravo", config(WireFormat::Json).max_message_size(max)),
        ("mallory", config(WireFormat::Json)),
    ]);
    net.replica(A).set_root(Input::Map(vec![])).unwrap();
    net.run();
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 1.into()).unwrap();
    });
    // A valid message padded with an unknown field past the limit.
    let padded = edit_json(&msg.bytes, |v| {
        v["pad"] = Json::String("x".repeat(max));
    });
    assert!(padded.len() > max);
    assert_eq!(
        refused(&mut net, B, &padded),
        ReceiveError::TooLarge {
            size: padded.len(),
            max
        }
    );
    // A large message is refused by its size, before decoding.
    let huge = vec![facsimile_core::VERSION; 64 << 20];
    assert!(matches!(
        refused(&mut net, B, &huge),
        ReceiveError::TooLarge { .. }
    ));
    let default_max = vec![b'{'; (64 << 20) + 1];
    assert!(matches!(
        net.replica(A).handle_message(&default_max),
        Err(ReceiveError::TooLarge { .. })
    ));
    // Exactly at the limit is fine.
    let fits = edit_json(&msg.bytes, |v| {
        v["pad"] = Json::String(String::new());
    });
    let fits = edit_json(&fits, |v| {
        v["pad"] = Json::String("x".repeat(max - fits.len()));
    });
    assert_eq!(fits.len(), max);
    net.replica(B).handle_message(&fits).unwrap();
    // The original is now a duplicate everywhere it was delivered.
    net.release(M);
    net.run();
    let ra = root(&net, A);
    net.replica(A).map_set(ra, "a", 1.into()).unwrap();
    net.settle();
    net.assert_converged();
}

// ------------------------------------------------------------ operations

#[test]
fn a_never_introduced_peer_index_is_refused() {
    let mut net = world(WireFormat::Json);
    let mt = net.tag(M);
    let msg = mallory_writes(&mut net, |m, root| {
        let items = child_of(m, root, "items");
        m.list_splice(items, 1, 0, vec![Input::Value(Value::Ref(root))])
            .unwrap();
    });
    for (what, path) in [
        ("object", &["obj"][..]),
        ("origin", &["origin", "Id"][..]),
        ("value", &["values", "0", "Ref"][..]),
    ] {
        for p in [2, 9, u32::MAX] {
            let bytes = edit_json(&msg.bytes, |v| {
                let mut x = op(v, "ListInsert");
                for k in path {
                    x = match k.parse::<usize>() {
                        Ok(i) => &mut x[i],
                        Err(_) => &mut x[*k],
                    };
                }
                x["p"] = json!(p);
            });
            let e = refused(&mut net, B, &bytes);
            assert!(is_invalid_from(&e, mt), "{what} {p}: {e:?}");
        }
    }
    still_converges(&mut net);
}

#[test]
fn ids_from_the_senders_future_are_refused() {
    let mut net = world(WireFormat::Json);
    let mt = net.tag(M);
    // Mallory creates a map and stores it: the map's id is its own counter.
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", Input::Map(vec![])).unwrap();
    });
    // The new map's id is the message's counter.
    let l = net[M].object_origin(child(&net, M, "m")).1;
    for c in [l + 1, l + 2, l + 1000, 1 << 62, (1 << 62) + 1, u64::MAX, 0] {
        // The stored reference names an id at or after its own stamp.
        let bytes = edit_json(&msg.bytes, |v| {
            op(v, "MapSet")["value"]["Ref"] = json!({"p": 0, "c": c});
        });
        let e = refused(&mut net, B, &bytes);
        assert!(is_invalid_from(&e, mt), "c={c}: {e:?}");
    }
    // A write to the object its own operation creates.
    let bytes = edit_json(&msg.bytes, |v| {
        op(v, "MapSet")["obj"] = json!({"p": 0, "c": l + 1});
    });
    assert!(is_invalid_from(&refused(&mut net, B, &bytes), mt));
    still_converges(&mut net);
}

#[test]
fn a_write_to_an_object_that_cannot_exist_is_a_no_op() {
    let mut net = world(WireFormat::Json);
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 1.into()).unwrap();
    });
    // Counter 1 of mallory was never an object: a past id that is absent
    // reads as reclaimed, and writes to reclaimed objects have no effect.
    let bytes = edit_json(&msg.bytes, |v| {
        op(v, "MapSet")["obj"] = json!({"p": 0, "c": 1});
    });
    assert!(tick(&msg.bytes) > 1);
    // Delivered to everybody in place of the original, so the honest
    // replicas still see the same stream; mallory itself applied the
    // original and is not compared.
    net.held(M).clear();
    harmless(&mut net, A, &bytes);
    harmless(&mut net, B, &bytes);
    net.exclude(M);
    // A map write to an array is equally void.
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m2", 1.into()).unwrap();
    });
    let items_id = {
        let v: Json = serde_json::from_slice(&msg.bytes).unwrap();
        let _ = v;
        // Mallory's dictionary names alpha at index 1; alpha's array is the
        // value of `items` in alpha's root map creation.
        let (_, c) = net[B].object_origin(child(&net, B, "items"));
        c
    };
    let bytes = edit_json(&msg.bytes, |v| {
        op(v, "MapSet")["obj"] = json!({"p": 1, "c": items_id});
    });
    net.held(M).clear();
    harmless(&mut net, A, &bytes);
    harmless(&mut net, B, &bytes);
    still_converges(&mut net);
}

#[test]
fn counters_that_go_backwards_are_refused() {
    let mut net = world(WireFormat::Json);
    let mt = net.tag(M);
    let first = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 1.into()).unwrap();
    });
    net.release(M);
    net.run();
    let second = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 2.into()).unwrap();
    });
    assert!(tick(&first.bytes) >= 1);
    // A counter that does not move forward: the message's counter is the
    // sender's last one plus the tick.
    let bytes = edit_json(&second.bytes, |v| v["body"]["Ops"]["tick"] = json!(0));
    assert!(is_invalid_from(&refused(&mut net, B, &bytes), mt));
    // Counters near the top of the range would overflow.
    for l in [(1u64 << 62) - 1, 1 << 62, u64::MAX] {
        let bytes = edit_json(&second.bytes, |v| {
            v["body"]["Ops"]["tick"] = json!(l);
            op(v, "MapSet")["value"] = json!({"Int": 3});
            let ops = v["body"]["Ops"]["ops"].as_array_mut().unwrap();
            let set = ops.last().unwrap().clone();
            ops.push(set);
        });
        assert!(
            is_invalid_from(&refused(&mut net, B, &bytes), mt),
            "lamport {l}"
        );
    }
    still_converges(&mut net);
}

#[test]
fn delete_runs_of_two_billion_elements_are_bounded() {
    let mut net = world(WireFormat::Json);
    let mt = net.tag(M);
    // Alpha moves its clock on, then makes a list whose element counters
    // are far from the low ones.
    let ra = root(&net, A);
    for k in 0..20 {
        net.replica(A).map_set(ra, "clock", k.into()).unwrap();
    }
    net.replica(A)
        .map_set(ra, "list", Input::Array(vec![1.into(), 2.into(), 3.into()]))
        .unwrap();
    net.run();
    let msg = mallory_writes(&mut net, |m, root| {
        let list = child_of(m, root, "list");
        m.list_splice(list, 0, 1, vec![]).unwrap();
    });
    // A run over mallory's own counters reaches past its message.
    for (start, len) in [(1u64, 1u64 << 31), (1, u64::from(u32::MAX))] {
        let bytes = edit_json(&msg.bytes, |v| {
            op(v, "ListDelete")["runs"] = json!([[{"p": 0, "c": start}, len]]);
        });
        assert!(is_invalid_from(&refused(&mut net, B, &bytes), mt));
    }
    // An empty run is not a run.
    let bytes = edit_json(&msg.bytes, |v| {
        let run = &mut op(v, "ListDelete")["runs"][0];
        run[1] = json!(0);
    });
    assert!(is_invalid_from(&refused(&mut net, B, &bytes), mt));
    // A run of 2^31, or of the most a run can hold, over alpha's low
    // counters (none is an element of this list) is accepted and allocates
    // nothing for its length (a step per counter would not allocate, but
    // takes seconds: the fuzz targets and benchmarks would show it).
    let runs = [1u64 << 31, u64::from(u32::MAX)].map(|len| {
        edit_json(&msg.bytes, |v| {
            let run = &mut op(v, "ListDelete")["runs"][0];
            run[0]["c"] = json!(2);
            run[1] = json!(len);
        })
    });
    net.held(M).clear();
    net.exclude(M);
    for victim in [A, B] {
        for bytes in &runs {
            let ((), allocated) = allocated(|| harmless(&mut net, victim, bytes));
            assert!(allocated < ALLOCATION_BOUND, "{allocated} bytes allocated");
        }
    }
    let list = child(&net, B, "list");
    assert_eq!(net.replica(B).list_len(list).unwrap(), 3);
    still_converges(&mut net);
}

/// Regression, found by the `apply` fuzz target: the bound on delete runs
/// counted the list as it was here, so an honest run over elements still in
/// flight was cut to the list's length and the rest of it was lost.
#[test]
fn a_delete_run_over_elements_still_in_flight_waits_for_all_of_them() {
    for format in [WireFormat::Binary, WireFormat::Json] {
        let c = 2;
        let mut net = network([
            ("alpha", config(format)),
            ("bravo", config(format)),
            ("charlie", config(format)),
        ]);
        net.replica(A)
            .set_root(Input::Array(vec![1.into()]))
            .unwrap();
        net.run();
        let list = |net: &Sim, i: usize| net[i].root().as_ref_id().unwrap();
        // Charlie replaces the one element with three; only alpha hears.
        let lc = list(&net, c);
        holding(&mut net, c, |r| {
            r.list_splice(lc, 0, 1, vec![2.into(), 3.into(), 4.into()])
                .unwrap()
        });
        let held: Vec<Transmit> = net.held(c).drain(..).collect();
        for t in &held {
            net.replica(A).handle_message(&t.bytes).unwrap();
        }
        // Alpha deletes all three in one run, which reaches bravo first:
        // bravo's list has one slot, the run is three long.
        let la = list(&net, A);
        net.replica(A).list_splice(la, 0, 3, vec![]).unwrap();
        net.run();
        for t in &held {
            net.replica(B).handle_message(&t.bytes).unwrap();
        }
        net.settle();
        net.assert_converged();
        assert_eq!(net[B].list_len(list(&net, B)).unwrap(), 0, "{format:?}");
    }
}

fn varint(mut x: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (x & 0x7f) as u8;
        x >>= 7;
        if x == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("pattern in the message")
}

/// Replaces `len` bytes at `at` with `with`.
fn splice(bytes: &[u8], at: usize, len: usize, with: &[u8]) -> Vec<u8> {
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(with);
    out.extend_from_slice(&bytes[at + len..]);
    out
}

/// Skips one varint, returning the offset after it.
fn skip_varint(bytes: &[u8], mut at: usize) -> usize {
    while bytes[at] & 0x80 != 0 {
        at += 1;
    }
    at + 1
}

#[test]
fn huge_length_headers_are_refused_without_allocating() {
    let mut net = world(WireFormat::Binary);
    let msg = mallory_writes(&mut net, |m, root| {
        let items = child_of(m, root, "items");
        m.begin();
        m.map_set(
            root,
            "KKKKKKKK",
            Input::Value(Value::Bytes(b"BBBBBBBB".to_vec().into())),
        )
        .unwrap();
        m.list_splice(items, 0, 0, vec!["V1".into(), "V2".into(), "V3".into()])
            .unwrap();
        m.commit();
    });
    let bytes = &msg.bytes[..];
    let key = find(bytes, b"KKKKKKKK") - 1;
    let blob = find(bytes, b"BBBBBBBB") - 1;
    assert_eq!((bytes[key], bytes[blob]), (8, 8));
    // A message of several operations is packed: `[3, Str, 2, 'V', '1']`
    // are the three inserted values (their count, then each value's tag).
    let values = find(bytes, &[3, 5, 2, b'V', b'1']);
    // Envelope: version, tag (4 bytes), body variant, seq, lamport, then the
    // packed operations' length and their number.
    let packed = skip_varint(bytes, skip_varint(bytes, 6));
    let ops = skip_varint(bytes, packed);
    let cases = [
        ("key of 1 GiB", key, 1u64 << 30),
        ("key of 2^62 bytes", key, 1 << 62),
        ("bytes of 1 GiB", blob, 1 << 30),
        ("bytes of 2^64-1", blob, u64::MAX),
        ("2^62 values", values, 1 << 62),
        ("1 GiB of values", values, 1 << 30),
        ("2^62 operations", ops, 1 << 62),
        ("2^32 operations", ops, 1 << 32),
        ("packed operations of 2^62 bytes", packed, 1 << 62),
    ];
    for (what, at, len) in cases {
        let hostile = splice(bytes, at, 1, &varint(len));
        let (e, bytes) = allocated(|| refused(&mut net, B, &hostile));
        assert!(matches!(e, ReceiveError::Malformed(_)), "{what}: {e:?}");
        assert!(bytes < ALLOCATION_BOUND, "{what}: {bytes} bytes allocated");
    }
    // An over-long varint is malformed too.
    let hostile = splice(bytes, ops, 1, &[0xff; 11]);
    assert!(matches!(
        refused(&mut net, B, &hostile),
        ReceiveError::Malformed(_)
    ));
    still_converges(&mut net);
}

#[test]
fn huge_lengths_in_a_saved_state_are_refused_without_allocating() {
    use facsimile_core::PeerId;
    let mut r = Replica::new(PeerId::new("saver", 4), Config::default());
    r.set_root(Input::Map(vec![
        (
            "KKKKKKKK".into(),
            Input::Value(Value::Bytes(b"BBBBBBBB".to_vec().into())),
        ),
        (
            "list".into(),
            Input::Array(vec!["V1".into(), "V2".into(), "V3".into()]),
        ),
    ]))
    .unwrap();
    let saved = r.export_state();
    let load = |bytes: &[u8]| Replica::from_exported(PeerId::new("j", 9), Config::default(), bytes);
    assert!(load(&saved).is_ok());
    let key = find(&saved, b"KKKKKKKK") - 1;
    let blob = find(&saved, b"BBBBBBBB") - 1;
    assert_eq!((saved[key], saved[blob]), (8, 8));
    // A run of three live elements (`3 << 2`), its column of strings (3),
    // then `[2, 'V', '1']`.
    let run = find(&saved, &[3 << 2, 3, 2, b'V', b'1']);
    let cases = [
        ("key of 1 GiB", key, 1u64 << 30),
        ("key of 2^64-1 bytes", key, u64::MAX),
        ("bytes of 1 GiB", blob, 1 << 30),
        ("bytes of 2^62", blob, 1 << 62),
        ("a run of 2^60 elements", run, 1 << 62),
        ("a run of 2^30 elements", run, 1 << 32),
    ];
    for (what, at, len) in cases {
        let hostile = splice(&saved, at, 1, &varint(len));
        let (e, bytes) = allocated(|| load(&hostile).err());
        assert!(
            matches!(e, Some(ReceiveError::Malformed(_))),
            "{what}: {e:?}"
        );
        assert!(bytes < ALLOCATION_BOUND, "{what}: {bytes} bytes allocated");
    }
}

#[test]
fn deeply_nested_json_is_refused() {
    let mut net = world(WireFormat::Json);
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 1.into()).unwrap();
    });
    let text = |f: &dyn Fn(&mut Json)| String::from_utf8(edit_json(&msg.bytes, f)).unwrap();
    let in_value = text(&|v| op(v, "MapSet")["value"] = json!("@@DEEP@@"));
    let in_unknown_field = text(&|v| v["ignored"] = json!("@@DEEP@@"));
    for depth in [200, 10_000, 1_000_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        for nested in [&arrays, &objects] {
            // Where a value is expected: the decoder's depth limit.
            let bytes = in_value.replace("\"@@DEEP@@\"", nested);
            let e = refused(&mut net, B, bytes.as_bytes());
            assert!(matches!(e, ReceiveError::Malformed(_)), "{depth}: {e:?}");
            // In a field that is skipped: refused or decoded, but never a
            // stack overflow.
            let bytes = in_unknown_field.replace("\"@@DEEP@@\"", nested);
            let mut fresh =
                Replica::new(facsimile_core::PeerId::new("fresh", 5), Config::default());
            match fresh.handle_message(bytes.as_bytes()) {
                // Held until the sender's earlier messages arrive.
                Ok(()) | Err(ReceiveError::Malformed(_)) => {}
                Err(e) => panic!("{depth}: {e:?}"),
            }
        }
    }
    still_converges(&mut net);
}

#[test]
fn two_hostnames_with_one_tag_are_refused() {
    let mut net = world(WireFormat::Json);
    let (at, bt) = (net.tag(A), net.tag(B));
    // An announcement in alpha's stream under another hostname.
    net.run();
    let ra = root(&net, A);
    holding(&mut net, A, |r| r.map_set(ra, "a", 1.into()).unwrap());
    let from_a = net.held(A)[0].clone();
    let seq = {
        let v: Json = serde_json::from_slice(&edit_json(&from_a.bytes, |_| {})).unwrap();
        v["body"]["Ops"]["seq"].as_u64().unwrap()
    };
    for body in [
        json!({"Hello": {"seq": seq, "hostname": "imposter"}}),
        json!({"SyncRequest": {"seq": seq, "hostname": "imposter"}}),
    ] {
        let bytes = edit_json(&from_a.bytes, |v| v["body"] = body.clone());
        assert_eq!(refused(&mut net, B, &bytes), ReceiveError::TagCollision(at));
    }
    net.release(A);
    net.run();
    // Introductions that bind a known tag to another hostname, or one new
    // tag to two hostnames.
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 1.into()).unwrap();
    });
    for (intros, tag) in [
        (vec![(hex(at), "imposter")], at),
        (vec![(hex(bt), "imposter")], bt),
        (vec![(hex(0xdead), "x"), (hex(0xdead), "y")], 0xdead),
    ] {
        let bytes = edit_json(&msg.bytes, |v| {
            let ops = v["body"]["Ops"]["ops"].as_array_mut().unwrap();
            for (i, (t, h)) in intros.iter().enumerate() {
                ops.insert(i, json!({"Intro": {"tag": t, "hostname": h}}));
            }
        });
        assert_eq!(
            refused(&mut net, B, &bytes),
            ReceiveError::TagCollision(tag)
        );
    }
    // A hostname past the limit.
    let bytes = edit_json(&msg.bytes, |v| {
        let ops = v["body"]["Ops"]["ops"].as_array_mut().unwrap();
        ops.insert(
            0,
            json!({"Intro": {"tag": hex(0xbeef), "hostname": "h".repeat(5000)}}),
        );
    });
    assert!(is_invalid_from(&refused(&mut net, B, &bytes), net.tag(M)));
    still_converges(&mut net);
}

#[test]
fn duplicates_are_harmless() {
    let mut net = world(WireFormat::Binary);
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", Input::Array(vec![1.into()])).unwrap();
    });
    net.release(M);
    net.run();
    for _ in 0..3 {
        harmless(&mut net, A, &msg.bytes);
        harmless(&mut net, B, &msg.bytes);
    }
    assert!(!net[B].has_transmits());
    still_converges(&mut net);
}

// ------------------------------------------------------------ state transfer

/// A joiner ("charlie") that asked for a sync, and the honest answer it is
/// about to receive, held back.
fn joiner_with_answer() -> (Sim, usize, usize, Transmit) {
    let mut net = world(WireFormat::Json);
    let items = child(&net, A, "items");
    let ra = root(&net, A);
    let a = net.replica(A);
    a.list_reorder(items, &[2, 0, 1]).unwrap();
    a.list_splice(items, 1, 1, vec![Input::Map(vec![("x".into(), 1.into())])])
        .unwrap();
    a.map_delete(ra, "title").unwrap();
    net.run();
    let c = net.add_with_config("charlie", config(WireFormat::Json));
    let ct = net.tag(c);
    net.with(c, Replica::sync);
    let (from, answer) = net
        .run_until(|_, t| t.to == Some(ct) && kind_of(&t.bytes).as_deref() == Some("SyncAnswer"))
        .expect("a sync answer");
    (net, c, from, answer)
}

fn state(v: &mut Json) -> &mut Json {
    &mut v["body"]["SyncAnswer"]["state"]
}

fn first_list(state: &mut Json) -> &mut Json {
    state["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find_map(|o| o.get_mut("List"))
        .expect("a list object")
}

fn first_map(state: &mut Json) -> &mut Json {
    state["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find_map(|o| o.get_mut("Map"))
        .expect("a map object")
}

/// Writes out every id a transferred state leaves out, and every live
/// element in the general home-slot form, so that mutations can name them.
fn explicit(s: &mut Json) {
    fn fill(id: &mut Json, prev: &mut Json) {
        if id.is_null() {
            *id = json!({"p": prev["p"], "c": prev["c"].as_u64().unwrap() + 1});
        }
        *prev = id.clone();
    }
    let mut prev = Json::Null;
    for obj in s["objects"].as_array_mut().unwrap() {
        let (kind, body) = obj.as_object_mut().unwrap().iter_mut().next().unwrap();
        fill(&mut body["id"], &mut prev);
        let id = body["id"].clone();
        if kind == "Map" {
            for entry in body["entries"].as_array_mut().unwrap() {
                if entry[2].is_null() {
                    entry[2] = id.clone();
                }
            }
            continue;
        }
        let mut prev_slot = id;
        for slot in body["slots"].as_array_mut().unwrap() {
            if let Some(live) = slot.get("Live").cloned() {
                *slot = json!({"Home": {"id": live["id"], "value": live["value"],
                    "deleted": false, "away": false, "extra": null}});
            }
            let (_, inner) = slot.as_object_mut().unwrap().iter_mut().next().unwrap();
            fill(&mut inner["id"], &mut prev_slot);
        }
    }
}

/// Empties every table of a transferred state.
fn clear_tables(s: &mut Json) {
    for (_, v) in s.as_object_mut().unwrap() {
        if v.is_array() {
            *v = json!([]);
        }
    }
}

type Mutation = (&'static str, fn(&mut Json));

fn hostile_states() -> Vec<(Mutation, Option<u32>)> {
    let m: Vec<Mutation> = vec![
        ("an object twice", |s| {
            let objs = s["objects"].as_array_mut().unwrap();
            objs.push(objs[0].clone());
        }),
        ("a list slot twice", |s| {
            let slots = first_list(s)["slots"].as_array_mut().unwrap();
            slots.push(slots[0].clone());
        }),
        ("a home slot away with no move", |s| {
            let slots = first_list(s)["slots"].as_array_mut().unwrap();
            let home = slots.iter_mut().find_map(|x| x.get_mut("Home")).unwrap();
            home["away"] = json!(true);
            home["extra"] = Json::Null;
        }),
        ("a deleted element holding a value", |s| {
            let slots = first_list(s)["slots"].as_array_mut().unwrap();
            let home = slots.iter_mut().find_map(|x| x.get_mut("Home")).unwrap();
            home["deleted"] = json!(true);
            home["value"] = json!({"Int": 5});
        }),
        ("a live move slot of an element that is home", |s| {
            let slots = first_list(s)["slots"].as_array_mut().unwrap();
            let elem = slots.iter().find_map(|x| x.get("Home")).unwrap()["id"].clone();
            slots
                .push(json!({"Moved": {"id": {"p": 0, "c": 999_999}, "elem": elem, "live": true}}));
        }),
        ("a moved element whose position is not its move slot", |s| {
            let slots = first_list(s)["slots"].as_array_mut().unwrap();
            let home = slots
                .iter_mut()
                .filter_map(|x| x.get_mut("Home"))
                .find(|h| h["away"] == json!(true))
                .expect("a moved element");
            home["extra"][1] = json!({"p": 0, "c": 999_999});
        }),
        ("an object id naming no peer", |s| {
            first_map(s)["id"]["p"] = json!(999);
        }),
        ("a value naming no peer", |s| {
            s["root"] = json!({"Ref": {"p": 4096, "c": 1}});
        }),
        ("a stamp naming no peer", |s| {
            first_map(s)["entries"][0][2] = json!({"p": u32::MAX, "c": 1});
        }),
        ("a slot naming no peer", |s| {
            let slots = first_list(s)["slots"].as_array_mut().unwrap();
            slots[0]
                .as_object_mut()
                .unwrap()
                .values_mut()
                .next()
                .unwrap()["id"] = json!({"p": 77, "c": 1});
        }),
        ("a first object whose id is left out", |s| {
            let first = &mut s["objects"][0];
            let (_, body) = first.as_object_mut().unwrap().iter_mut().next().unwrap();
            body["id"] = Json::Null;
        }),
        ("a slot counter past the range", |s| {
            let slots = first_list(s)["slots"].as_array_mut().unwrap();
            let last = slots.len() - 1;
            // The left-out id of the next slot would overflow.
            slots[last]
                .as_object_mut()
                .unwrap()
                .values_mut()
                .next()
                .unwrap()["id"] = json!({"p": 0, "c": 1u64 << 62});
            let next = slots[last].clone();
            slots.push(next);
            let pushed = slots.last_mut().unwrap().as_object_mut().unwrap();
            pushed.values_mut().next().unwrap()["id"] = serde_json::Value::Null;
        }),
        ("a stream of no peer", |s| {
            s["streams"][0]["peer"] = json!(999);
        }),
        ("a dictionary entry naming no peer", |s| {
            s["streams"][0]["dict"] = json!([0, 999]);
        }),
        ("a member that is no peer", |s| {
            s["members"] = json!([0, 999]);
        }),
        ("an acknowledgement of no peer", |s| {
            s["acks"] = json!([[999, []]]);
        }),
        ("counter zero", |s| {
            first_map(s)["id"]["c"] = json!(0);
        }),
        ("a stamp past the counter range", |s| {
            first_map(s)["entries"][0][2] = json!({"p": 0, "c": u64::MAX});
        }),
        ("a stream position past the counter range", |s| {
            s["streams"][0]["lamport"] = json!(u64::MAX);
        }),
        ("a stream sequence past the counter range", |s| {
            s["streams"][0]["next_seq"] = json!(u64::MAX);
        }),
        ("a fencing token past the range", |s| {
            s["locks"] = json!([[{"p": 0, "c": 1}, [], u64::MAX]]);
        }),
        ("a map key twice", |s| {
            let entries = first_map(s)["entries"].as_array_mut().unwrap();
            entries.push(entries[0].clone());
        }),
        ("a root naming an object not sent", |s| {
            s["root"] = json!({"Ref": {"p": 0, "c": 999_999}});
        }),
        ("a map value naming an object not sent", |s| {
            first_map(s)["entries"][0][1] = json!({"Ref": {"p": 0, "c": 999_999}});
        }),
        ("no peer table at all", |s| {
            clear_tables(s);
            s["root"] = json!({"Int": 5});
            s["root_stamp"] = Json::Null;
        }),
    ];
    m.into_iter().map(|x| (x, None)).collect()
}

#[test]
fn hostile_sync_answers_are_refused() {
    let mut cases = hostile_states();
    // Peer tables binding a known tag to another hostname, or a new tag to
    // two hostnames.
    cases.push((
        ("a known tag under another hostname", |s| {
            let peers = s["peers"].as_array_mut().unwrap();
            let mut p = peers[1].clone();
            p[1] = json!("imposter");
            peers.push(p);
        }),
        Some(0),
    ));
    cases.push((
        ("a new tag under two hostnames", |s| {
            let peers = s["peers"].as_array_mut().unwrap();
            peers.push(json!(["0000dead", "x"]));
            peers.push(json!(["0000dead", "y"]));
        }),
        Some(0xdead),
    ));
    let mut failures = Vec::new();
    for ((what, mutate), collision) in cases {
        let (mut net, c, from, answer) = joiner_with_answer();
        let ft = net.tag(from);
        let bytes = edit_json(&answer.bytes, |v| {
            explicit(state(v));
            mutate(state(v))
        });
        let r = net.replica(c);
        let before = r.snapshot();
        let e = match r.handle_message(&bytes) {
            Ok(()) => {
                failures.push(format!("{what}: accepted"));
                continue;
            }
            Err(e) => e,
        };
        assert_eq!(r.snapshot(), before, "{what}");
        assert!(!r.is_ready() && !r.has_transmits(), "{what}");
        match (collision, &e) {
            (Some(0xdead), ReceiveError::TagCollision(0xdead)) => {}
            (Some(0), ReceiveError::TagCollision(_)) => {}
            (None, ReceiveError::Invalid { from, .. }) if *from == ft => {}
            _ => failures.push(format!("{what}: unexpected {e:?}")),
        }
        // The honest answer still completes the sync.
        net.replica(c).handle_message(&answer.bytes).unwrap();
        assert!(net[c].is_ready());
        still_converges(&mut net);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Regression: an answer without a peer table (so without the answerer)
/// that replaced the root indexed the empty table and panicked.
#[test]
fn an_answer_without_a_peer_table_is_refused() {
    let (mut net, c, _, answer) = joiner_with_answer();
    let bytes = edit_json(&answer.bytes, |v| {
        let s = state(v);
        clear_tables(s);
        s["root"] = json!({"Int": 5});
        s["root_stamp"] = Json::Null;
    });
    refused(&mut net, c, &bytes);
    net.replica(c).handle_message(&answer.bytes).unwrap();
    still_converges(&mut net);
}

/// Regression: a stream position at the top of the counter range made the
/// joiner's next local write overflow its clock.
#[test]
fn an_answer_with_a_clock_at_the_top_of_the_range_is_refused() {
    let (mut net, c, _, answer) = joiner_with_answer();
    for lamport in [u64::MAX, u64::MAX - 1, (1 << 62) + 1] {
        let bytes = edit_json(&answer.bytes, |v| {
            state(v)["streams"][0]["lamport"] = json!(lamport);
        });
        refused(&mut net, c, &bytes);
    }
    net.replica(c).handle_message(&answer.bytes).unwrap();
    let rc = root(&net, c);
    net.replica(c).map_set(rc, "c", 1.into()).unwrap();
    still_converges(&mut net);
}

/// Regression: a map key sent twice was counted twice.
#[test]
fn an_answer_with_a_map_key_twice_is_refused() {
    let (mut net, c, _, answer) = joiner_with_answer();
    let bytes = edit_json(&answer.bytes, |v| {
        let entries = first_map(state(v))["entries"].as_array_mut().unwrap();
        entries.push(entries[0].clone());
    });
    refused(&mut net, c, &bytes);
    net.replica(c).handle_message(&answer.bytes).unwrap();
    let rc = root(&net, c);
    let keys = net.replica(c).map_keys(rc).unwrap().len();
    assert_eq!(net.replica(c).map_len(rc).unwrap(), keys);
    still_converges(&mut net);
}

/// Regression: an answer whose root named an object it did not carry was
/// accepted, leaving a dangling reference and a `Ready` document that is
/// not complete.
#[test]
fn an_answer_with_a_dangling_reference_is_refused() {
    let (mut net, c, _, answer) = joiner_with_answer();
    let bytes = edit_json(&answer.bytes, |v| {
        state(v)["root"] = json!({"Ref": {"p": 0, "c": 999_999}})
    });
    refused(&mut net, c, &bytes);
    net.replica(c).handle_message(&answer.bytes).unwrap();
    net.replica(c).check_invariants();
    still_converges(&mut net);
}

// ------------------------------------------------------------ mutation

/// Mutated honest messages of every kind: whatever a replica makes of them,
/// it does not panic, and a refusal leaves it as it was.
#[test]
fn mutated_messages_never_panic() {
    run_seeds(0..4, |seed| {
        let format = if seed % 2 == 0 {
            WireFormat::Binary
        } else {
            WireFormat::Json
        };
        let messages = session(format);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut net = world(format);
        for _ in 0..20_000 {
            let mut bytes = messages[rng.random_range(0..messages.len())].clone();
            for _ in 0..rng.random_range(1..4) {
                let n = bytes.len();
                match rng.random_range(0..5) {
                    0 => bytes[rng.random_range(0..n)] ^= 1 << rng.random_range(0..8),
                    1 => bytes[rng.random_range(0..n)] = rng.random(),
                    2 => {
                        let at = rng.random_range(1..=n);
                        bytes.insert(at, rng.random());
                    }
                    3 if n > 2 => {
                        bytes.remove(rng.random_range(1..n));
                    }
                    _ => {
                        let at = rng.random_range(1..n.max(2));
                        let d = [0x00, 0x7f, 0x80, 0xff][rng.random_range(0..4)];
                        if at < n {
                            bytes[at] = d;
                        }
                    }
                }
            }
            let victim = rng.random_range(0..net.len());
            let r = net.replica(victim);
            let before = r.snapshot();
            if r.handle_message(&bytes).is_err() {
                assert_eq!(r.snapshot(), before);
            }
            while r.poll_transmit().is_some() {}
            while r.poll_event().is_some() {}
        }
    });
}

/// Regression: a release or acknowledgement carrying a fencing token at the
/// top of the range was accepted, and the next grant overflowed raising it.
#[test]
fn fencing_tokens_at_the_top_of_the_range_are_refused() {
    let mut net = world(WireFormat::Json);
    let mt = net.tag(M);
    let meta = child(&net, M, "meta");
    net.replica(M).lock(meta, true).unwrap();
    net.run();
    let release = mallory_writes(&mut net, |m, root| {
        let meta = child_of(m, root, "meta");
        m.unlock(meta).unwrap();
    });
    for token in [(1u64 << 62) + 1, u64::MAX] {
        let bytes = edit_json(&release.bytes, |v| op(v, "Unlock")["token"] = json!(token));
        assert!(is_invalid_from(&refused(&mut net, B, &bytes), mt));
    }
    net.release(M);
    net.run();
    // An acknowledgement claiming to hold the lock with such a token.
    let meta_b = child(&net, B, "meta");
    net.replica(B).lock(meta_b, true).unwrap();
    let ct = net.tag(B);
    let ack = net
        .run_until(|from, t| {
            from == M
                && serde_json::from_slice::<Json>(&t.bytes)
                    .is_ok_and(|v| v.to_string().contains("LockAck"))
        })
        .map(|(_, t)| t)
        .expect("mallory acknowledges bravo's request");
    let _ = ct;
    let bytes = edit_json(&ack.bytes, |v| {
        let a = op(v, "LockAck");
        let req = a["req"].clone();
        a["held"] = json!([req, u64::MAX]);
    });
    assert!(is_invalid_from(&refused(&mut net, A, &bytes), mt));
    net.send(M, ack);
    net.release(M);
    net.run();
    let meta_b = child(&net, B, "meta");
    assert!(matches!(
        net[B].lock_state(meta_b),
        facsimile_core::LockState::Held(t) if t < 1 << 62
    ));
    net.replica(B).unlock(meta_b).unwrap();
    still_converges(&mut net);
}

/// Regression: a refused message from a tag never heard of left an empty
/// stream behind, and a stream whose sender is unknown holds reclamation
/// back for good (on every replica, since this one stopped acknowledging).
#[test]
fn a_refused_message_from_a_stranger_leaves_no_trace() {
    let mut net = world(WireFormat::Json);
    let bt = net.tag(B);
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 1.into()).unwrap();
    });
    net.release(M);
    net.run();
    // Operations before any hello, from a stranger.
    let stranger = edit_json(&msg.bytes, |v| {
        v["from"] = json!(hex(0xbad));
        v["body"]["Ops"]["seq"] = json!(1);
    });
    assert!(is_invalid_from(&refused(&mut net, B, &stranger), 0xbad));
    // A welcome from a stranger with an impossible hostname, and one that
    // binds alpha's tag to another hostname.
    let welcome = |from: u32, hostname: &str| {
        serde_json::to_vec(&json!({
            "from": hex(from),
            "body": {"Welcome": {"to": hex(bt), "hostname": hostname, "seq": 5}}
        }))
        .unwrap()
    };
    let long = "h".repeat(5000);
    assert!(is_invalid_from(
        &refused(&mut net, B, &welcome(0xbad, &long)),
        0xbad
    ));
    let at = net.tag(A);
    assert_eq!(
        refused(&mut net, B, &welcome(at, "imposter")),
        ReceiveError::TagCollision(at)
    );
    // Reclamation still completes everywhere.
    reclamation_completes(&mut net);
    still_converges(&mut net);
}

/// A writes objects and deletes them, and every replica reclaims them: a
/// round of reclamation completes everywhere.
fn reclamation_completes(net: &mut Sim) {
    let ra = root(net, A);
    net.replica(A)
        .map_set(
            ra,
            "tmp",
            Input::Map(vec![("x".into(), Input::Array(vec![]))]),
        )
        .unwrap();
    net.run();
    net.replica(A).map_delete(ra, "tmp").unwrap();
    net.settle();
    net.settle();
    for i in 0..net.len() {
        let r = net.replica(i);
        assert_eq!(
            r.object_count(),
            r.reachable_objects().len(),
            "replica {i} kept unreachable objects"
        );
    }
}

/// Regression: a message from a stranger ahead of its stream's start
/// (position 2, before any hello) was held for a hello that never comes,
/// and a stream whose sender is unknown holds reclamation back for good:
/// this replica never acknowledged again, so no round completed anywhere.
#[test]
fn a_stranger_s_message_ahead_of_its_start_holds_nothing_back() {
    let mut net = world(WireFormat::Json);
    let msg = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 1.into()).unwrap();
    });
    net.release(M);
    net.run();
    let stranger = edit_json(&msg.bytes, |v| {
        v["from"] = json!(hex(0xbad));
        v["body"]["Ops"]["seq"] = json!(2);
    });
    let before = net.replica(B).snapshot();
    net.replica(B).handle_message(&stranger).unwrap();
    assert_eq!(net.replica(B).snapshot(), before);
    assert!(net.replica(B).peers().iter().all(|p| p.held == 0));
    reclamation_completes(&mut net);
    still_converges(&mut net);
}

/// A fetch of the whole document is answered only for a peer whose sync
/// request was read and whose sync has not completed: not for a stranger,
/// a member that never asked, one evicted since, or a joiner answered
/// already. Each answer would cost the whole state, for a message of a few
/// bytes.
#[test]
fn a_fetch_is_answered_only_for_a_sync_that_asked_for_it() {
    let mut net = world(WireFormat::Json);
    // The recipient of each state sent.
    let answers: Arc<Mutex<Vec<Option<u32>>>> = Arc::default();
    let log = answers.clone();
    net.intercept(move |_, t| {
        if matches!(
            kind_of(&t.bytes).as_deref(),
            Some("SyncAnswer" | "SyncSaved")
        ) {
            log.lock().unwrap().push(t.to);
        }
        Verdict::Deliver
    });
    let bt = net.tag(B);
    let fetch = |from: u32| {
        serde_json::to_vec(&json!({"from": hex(from), "body": {"SyncFetch": {"to": hex(bt)}}}))
            .unwrap()
    };
    let mallory = net[M].peer_id().clone();
    net.replica(B).evict(&mallory);
    net.run();
    let (at, mt) = (net.tag(A), net.tag(M));
    for from in [0xbad, at, mt] {
        for _ in 0..100 {
            net.replica(B).handle_message(&fetch(from)).unwrap();
        }
    }
    net.run();
    assert_eq!(*answers.lock().unwrap(), [], "stranger, member, evicted");
    // A joiner is answered once, by one peer, and no more once it is done.
    let j = net.add_with_config("joiner", config(WireFormat::Json));
    net.sync(j);
    net.run();
    let jt = net.tag(j);
    assert_eq!(*answers.lock().unwrap(), [Some(jt)]);
    for _ in 0..100 {
        net.replica(B).handle_message(&fetch(jt)).unwrap();
    }
    net.run();
    assert_eq!(answers.lock().unwrap().len(), 1, "a joiner done");
    net.stop_intercepting();
    still_converges(&mut net);
}

/// A binary message's body variant (below 128, one byte): after the
/// version byte and the sender's four-byte tag.
fn binary_body(bytes: &[u8]) -> Option<u8> {
    bytes.get(5).copied()
}

/// A binary sync answer from `from` to `to` carrying `saved` as its state.
fn saved_answer(from: u32, to: u32, saved: &[u8]) -> Vec<u8> {
    const SYNC_SAVED: u8 = 15;
    let mut out = vec![1];
    out.extend(from.to_le_bytes());
    out.push(SYNC_SAVED);
    out.extend(to.to_le_bytes());
    out.extend(varint(saved.len() as u64));
    out.extend_from_slice(saved);
    out
}

/// A binary joiner gets the document as a saved state; a saved state that is
/// cut short, in an unknown version, or saved by another peer than the
/// answer's sender is refused and changes nothing, and the honest answer
/// still completes the sync.
#[test]
fn hostile_saved_sync_answers_are_refused() {
    let mut net = world(WireFormat::Binary);
    let items = child(&net, A, "items");
    net.replica(A).list_reorder(items, &[2, 0, 1]).unwrap();
    net.run();
    let c = net.add_with_config("charlie", config(WireFormat::Binary));
    let ct = net.tag(c);
    net.with(c, Replica::sync);
    let (from, answer) = net
        .run_until(|_, t| t.to == Some(ct) && binary_body(&t.bytes) == Some(15))
        .expect("a sync answer as a saved state");
    let ft = net.tag(from);
    // The state follows the header: the version byte, two tags, the body
    // variant and the state's length.
    let length = answer.bytes[10..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .expect("a length");
    let saved = &answer.bytes[11 + length..];
    assert_eq!(saved_answer(ft, ct, saved), answer.bytes.to_vec());
    let other = if from == A { B } else { A };
    let foreign = net.replica(other).export_state();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("an empty state".into(), Vec::new()),
        ("an unknown version".into(), {
            let mut s = saved.to_vec();
            s[0] = 99;
            s
        }),
        ("a state saved by another peer".into(), foreign),
    ];
    for cut in (1..saved.len()).step_by(saved.len() / 40 + 1) {
        cases.push((format!("cut at {cut}"), saved[..cut].to_vec()));
    }
    for (what, state) in cases {
        let e = refused(&mut net, c, &saved_answer(ft, ct, &state));
        assert!(
            matches!(
                e,
                ReceiveError::Malformed(_)
                    | ReceiveError::Empty
                    | ReceiveError::UnsupportedVersion(99)
                    | ReceiveError::Invalid { .. }
            ),
            "{what}: {e:?}"
        );
        assert!(!net[c].is_ready(), "{what}");
    }
    net.replica(c).handle_message(&answer.bytes).unwrap();
    assert!(net[c].is_ready());
    still_converges(&mut net);
}

/// Sizes that grow with the clock (counters in references and object ids,
/// written in decimal in JSON) stay within what a write is checked
/// against: after a peer's counters near the largest a replica accepts
/// moved its clock there, every message of writes up to the limit fits.
#[test]
fn counters_near_their_limit_make_no_message_over_the_size_limit() {
    const HIGH: u64 = (1 << 62) - 1_000_000;
    for limit in [400usize, 1000, 3000] {
        let net_config = || config(WireFormat::Json).max_message_size(limit);
        let mut net = network([
            ("alpha", net_config()),
            ("bravo", net_config()),
            ("mallory", net_config()),
        ]);
        net.replica(A).set_root(Input::Map(vec![])).unwrap();
        net.run();
        let msg = mallory_writes(&mut net, |m, root| {
            m.map_set(root, "big", Input::Map(vec![])).unwrap();
        });
        // The new map and the reference to it, at counters near the limit.
        let edited = edit_json(&msg.bytes, |v| {
            let ops = &mut v["body"]["Ops"];
            ops["tick"] = json!(HIGH);
            ops["ops"][2]["MapSet"]["value"]["Ref"]["c"] = json!(HIGH);
        });
        for r in [A, B] {
            net.replica(r).handle_message(&edited).unwrap();
        }
        let sent = Arc::new(Mutex::new(Vec::new()));
        let seen = sent.clone();
        net.intercept(move |from, t| {
            if from == A {
                seen.lock().unwrap().push(t.bytes.clone());
            }
            Verdict::Deliver
        });
        let ra = root(&net, A);
        let big = child(&net, A, "big");
        for n in 0..limit {
            let key = format!("k{}", n % 7);
            let a = net.replica(A);
            for (obj, input) in [
                (ra, Input::from("x".repeat(n))),
                (big, Input::Array(vec![Input::from(HIGH as i64); n % 40])),
            ] {
                match a.map_set(obj, &key, input) {
                    Ok(_) => {}
                    Err(facsimile_core::Error::TooLarge { size, .. }) => {
                        assert!(size > limit - 64, "refused at {size} of {limit}")
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            net.run();
        }
        let sent = std::mem::take(&mut *sent.lock().unwrap());
        let largest = sent.iter().map(|m| m.len()).max().unwrap();
        assert!(
            largest <= limit,
            "a message of {largest} bytes over {limit}"
        );
        // The clock did move: new objects took counters above `HIGH`.
        fn counters(v: &Json, out: &mut Vec<u64>) {
            match v {
                Json::Object(m) => {
                    out.extend(m.get("c").and_then(Json::as_u64));
                    m.values().for_each(|v| counters(v, out));
                }
                Json::Array(a) => a.iter().for_each(|v| counters(v, out)),
                _ => {}
            }
        }
        let mut seen = Vec::new();
        for m in sent.iter() {
            counters(&serde_json::from_slice(m).unwrap(), &mut seen);
        }
        let high = seen.iter().any(|&c| c > HIGH);
        assert!(high, "no message carried a counter near the limit");
        net.settle();
        let alpha = net.replica(A).snapshot();
        assert!(
            net.replica(B).snapshot() == alpha,
            "bravo took alpha's writes"
        );
    }
}

/// `check_room` never says yes to writes one of which is then refused as
/// too large: random plans of map and list writes, in both formats, under
/// random limits, packed or not. The failing seed is printed.
#[test]
fn writes_check_room_passed_are_never_refused_as_too_large() {
    for seed in 0..1_000u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let format = if rng.random_bool(0.5) {
            WireFormat::Binary
        } else {
            WireFormat::Json
        };
        let limit = rng.random_range(600..40_000);
        let config = Config::default()
            .max_message_size(limit)
            .wire_format(format);
        let mut r = Replica::new(facsimile_core::PeerId::new("a", 1), config);
        let root = r.set_root(Input::Map(vec![])).unwrap().unwrap();
        let list = match r.map_set(root, "l", Input::Array((0..50).map(Input::from).collect())) {
            Ok(_) => r.map_get(root, "l").unwrap().unwrap().as_ref_id().unwrap(),
            Err(_) => continue,
        };
        while r.poll_transmit().is_some() {}
        let n = rng.random_range(1..600);
        let text = |rng: &mut SmallRng| "x".repeat(rng.random_range(0..40));
        let sets: Vec<(String, Input)> = (0..n)
            .map(|i| (format!("k{i}"), Input::from(text(&mut rng))))
            .collect();
        let elems: Vec<(usize, Input)> = (0..rng.random_range(0..50))
            .map(|i| {
                (
                    i,
                    Input::Map(vec![("t".into(), Input::from(text(&mut rng)))]),
                )
            })
            .collect();
        let inserted: Vec<Input> = (0..rng.random_range(0..20)).map(Input::from).collect();
        let (start, delete) = (rng.random_range(0..50), rng.random_range(0..10));
        // Some writes change nothing (they still reserve room): a key
        // deleted that is not there, a value written that is.
        let absent: Vec<String> = (0..rng.random_range(0..400))
            .map(|i| format!("a{i}"))
            .collect();
        let same = Input::from(Value::Int(7));
        let same_count = rng.random_range(0..300);
        r.map_set(root, "same", same.clone()).unwrap();
        while r.poll_transmit().is_some() {}
        let plan = absent
            .iter()
            .map(|k| facsimile_core::Planned::MapDelete(root, k))
            .chain((0..same_count).map(|_| facsimile_core::Planned::MapSet(root, "same", &same)))
            .chain(
                sets.iter()
                    .map(|(k, v)| facsimile_core::Planned::MapSet(root, k, v)),
            )
            .chain([
                facsimile_core::Planned::ListSetMany(list, &elems),
                facsimile_core::Planned::ListSplice(list, start, delete, &inserted),
            ]);
        if r.check_room(plan).is_err() {
            continue;
        }
        r.begin();
        for k in &absent {
            r.map_delete(root, k)
                .unwrap_or_else(|e| panic!("seed {seed}: a delete refused after check_room: {e}"));
        }
        for _ in 0..same_count {
            r.map_set(root, "same", same.clone())
                .unwrap_or_else(|e| panic!("seed {seed}: a set refused after check_room: {e}"));
        }
        for (k, v) in sets {
            r.map_set(root, &k, v)
                .unwrap_or_else(|e| panic!("seed {seed}: a set refused after check_room: {e}"));
        }
        r.list_set_many(list, elems)
            .unwrap_or_else(|e| panic!("seed {seed}: a list set refused after check_room: {e}"));
        r.list_splice(list, start, delete, inserted)
            .unwrap_or_else(|e| panic!("seed {seed}: a splice refused after check_room: {e}"));
        r.commit();
    }
}

/// One message of many requests for one lock, each taking its own counter:
/// an honest replica never has two queued on one object, and each would
/// cost every receiver a place in an ordered queue and an acknowledgement
/// listing the members. The message is refused whole, before anything is
/// queued or sent.
#[test]
fn many_requests_for_one_lock_in_one_message_are_refused() {
    const N: usize = 2_000;
    let mut net = world(WireFormat::Json);
    let mt = net.tag(M);
    let request = mallory_writes(&mut net, |m, root| {
        m.lock(root, true).unwrap();
    });
    let bytes = edit_json(&request.bytes, |v| {
        // After the peer introductions the request needs.
        let ops = v["body"]["Ops"]["ops"].as_array_mut().unwrap();
        let lock = ops
            .iter()
            .find(|o| o.get("Lock").is_some())
            .unwrap()
            .clone();
        ops.extend(std::iter::repeat_n(lock, N - 1));
    });
    let root_b = root(&net, B);
    let r = net.replica(B);
    let before = r.snapshot();
    let result = r.handle_message(&bytes);
    let sent: usize = std::iter::from_fn(|| r.poll_transmit())
        .map(|t| t.bytes.len())
        .sum();
    let queued = r
        .lock_table()
        .iter()
        .filter(|e| e.object == root_b)
        .map(|e| e.queue.len())
        .sum::<usize>();
    assert_eq!(
        (sent, queued),
        (0, 0),
        "{sent} bytes sent and {queued} requests queued for a message of {} bytes",
        bytes.len()
    );
    assert!(is_invalid_from(&result.unwrap_err(), mt));
    assert_eq!(r.snapshot(), before);
    // Mallory's own request is taken, granted and released.
    net.release(M);
    net.run();
    let root_m = root(&net, M);
    assert!(matches!(
        net[M].lock_state(root_m),
        facsimile_core::LockState::Held(_)
    ));
    net.replica(M).unlock(root_m).unwrap();
    still_converges(&mut net);
}

/// Mallory's next acknowledgement, taken off the network (to be sent on
/// with [`Sim::send`]): its `obj` and `req` as mallory's stream names them.
fn mallory_acks(net: &mut Sim) -> (Transmit, Json) {
    let (_, ack) = net
        .run_until(|from, t| from == M && String::from_utf8_lossy(&t.bytes).contains("LockAck"))
        .expect("mallory acknowledges the request");
    let mut v: Json = serde_json::from_slice(&edit_json(&ack.bytes, |_| {})).unwrap();
    let a = op(&mut v, "LockAck");
    let named = json!({"obj": a["obj"], "req": a["req"]});
    (ack, named)
}

/// Regression: a release naming another peer's request was applied, so
/// that any peer could free a lock its holder still relied on, or drop a
/// waiting request from every queue. A replica releases only its own
/// requests; such a message is refused whole.
#[test]
fn a_release_of_another_peer_s_request_is_refused() {
    let mut net = world(WireFormat::Json);
    let mt = net.tag(M);
    // Alpha holds the lock on meta and bravo waits behind it.
    let meta_a = child(&net, A, "meta");
    net.replica(A).lock(meta_a, true).unwrap();
    let (ack, alpha_req) = mallory_acks(&mut net);
    net.send(M, ack);
    net.run();
    let meta_b = child(&net, B, "meta");
    net.replica(B).lock(meta_b, true).unwrap();
    let (ack, bravo_req) = mallory_acks(&mut net);
    net.send(M, ack);
    net.run();
    let LockState::Held(token) = net[A].lock_state(meta_a) else {
        panic!("alpha holds the lock");
    };
    assert_eq!(net[B].lock_state(meta_b), LockState::Waiting);
    // Mallory's next message, its write turned into a release of another
    // peer's request (withdrawal or release alike).
    let write = mallory_writes(&mut net, |m, root| {
        m.map_set(root, "m", 1.into()).unwrap();
    });
    let forged = |named: &Json, token: u64| {
        edit_json(&write.bytes, |v| {
            let ops = v["body"]["Ops"]["ops"].as_array_mut().unwrap();
            let write = ops.iter_mut().find(|o| o.get("MapSet").is_some()).unwrap();
            *write = json!({"Unlock": {"obj": named["obj"], "req": named["req"], "token": token}});
        })
    };
    let tables = |net: &Sim| [net[A].lock_table(), net[B].lock_table()];
    let before = tables(&net);
    for (victim, named, token) in [
        (B, &alpha_req, token),
        (A, &alpha_req, token),
        (A, &bravo_req, 0),
        (B, &bravo_req, 0),
    ] {
        let e = refused(&mut net, victim, &forged(named, token));
        assert!(is_invalid_from(&e, mt), "{e}");
    }
    assert_eq!(tables(&net), before, "a refused release changed a queue");
    // The honest write still applies, and the lock passes as it should.
    net.release(M);
    net.run();
    assert_eq!(net[A].lock_state(meta_a), LockState::Held(token));
    net.replica(A).unlock(meta_a).unwrap();
    net.run();
    assert!(matches!(net[B].lock_state(meta_b), LockState::Held(t) if t > token));
    net.replica(B).unlock(meta_b).unwrap();
    still_converges(&mut net);
}

/// Regression: an acknowledgement could announce another peer's request
/// as granted. Receivers moved that request among the grants, ahead of
/// the real holder's, and a requester so moved was granted while the
/// holder still held. A replica announces only its own grant; such a
/// message is refused whole.
#[test]
fn an_acknowledgement_announcing_another_peer_s_grant_is_refused() {
    let mut net = world(WireFormat::Json);
    let mt = net.tag(M);
    let meta_a = child(&net, A, "meta");
    net.replica(A).lock(meta_a, true).unwrap();
    net.run();
    let LockState::Held(token) = net[A].lock_state(meta_a) else {
        panic!("alpha holds the lock");
    };
    let meta_b = child(&net, B, "meta");
    net.replica(B).lock(meta_b, true).unwrap();
    let (ack, _) = mallory_acks(&mut net);
    // Mallory's acknowledgement of bravo's request, announcing that very
    // request granted, with a token below alpha's.
    let forged = edit_json(&ack.bytes, |v| {
        let a = op(v, "LockAck");
        a["held"] = json!([a["req"].clone(), 1]);
    });
    let tables = |net: &Sim| [net[A].lock_table(), net[B].lock_table()];
    let before = tables(&net);
    for victim in [B, A] {
        let e = refused(&mut net, victim, &forged);
        assert!(is_invalid_from(&e, mt), "{e}");
    }
    assert_eq!(
        tables(&net),
        before,
        "a refused acknowledgement changed a queue"
    );
    net.send(M, ack);
    net.run();
    assert_eq!(net[A].lock_state(meta_a), LockState::Held(token));
    assert_eq!(net[B].lock_state(meta_b), LockState::Waiting);
    net.replica(A).unlock(meta_a).unwrap();
    net.run();
    assert!(matches!(net[B].lock_state(meta_b), LockState::Held(t) if t > token));
    net.replica(B).unlock(meta_b).unwrap();
    still_converges(&mut net);
}
