//! The wire encodings round-trip every value: trees of scalars (NaN, -0.0,
//! infinities, i64 extremes, unicode and empty strings, bytes), maps and
//! arrays nested up to four deep, written through a replica and received
//! by another in binary and in JSON, read back exactly (floats bitwise),
//! and carried whole by a state transfer and by an exported state.

use facsimile_core::sim::{Sim, Verdict};
use facsimile_core::{
    Config, Error, Input, LockState, ObjectId, ObjectKind, PeerId, Replica, Value, WireFormat,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The size of the largest message `sim` carries from now on.
fn watch_largest(sim: &mut Sim) -> Arc<AtomicUsize> {
    let largest = Arc::new(AtomicUsize::new(0));
    let seen = largest.clone();
    sim.intercept(move |_, t| {
        seen.fetch_max(t.bytes.len(), Ordering::Relaxed);
        Verdict::Deliver
    });
    largest
}

/// A document as the test expects to read it back.
#[derive(Debug, PartialEq)]
enum Model {
    /// Compared with `Value::same`: floats bitwise.
    Scalar(Value),
    /// Entries in key order.
    Map(Vec<(String, Model)>),
    Array(Vec<Model>),
}

fn model(input: &Input) -> Model {
    match input {
        Input::Value(v) => Model::Scalar(v.clone()),
        Input::Map(entries) => {
            let mut m: Vec<(String, Model)> = entries
                .iter()
                .map(|(k, v)| (k.to_string(), model(v)))
                .collect();
            m.sort_by(|a, b| a.0.cmp(&b.0));
            Model::Map(m)
        }
        Input::Array(items) => Model::Array(items.iter().map(model).collect()),
    }
}

/// Reads a value back from a replica, following references (the trees
/// written here have no cycles).
fn read(r: &mut Replica, v: Value) -> Model {
    let Some(obj) = v.as_ref_id() else {
        return Model::Scalar(v);
    };
    match r.kind(obj).expect("a reference to a present object") {
        ObjectKind::Map => Model::Map(
            r.map_entries(obj)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k.to_string(), read(r, v)))
                .collect(),
        ),
        ObjectKind::Array => Model::Array(
            r.list_values(obj)
                .unwrap()
                .into_iter()
                .map(|v| read(r, v))
                .collect(),
        ),
    }
}

fn arb_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(-f64::NAN),
        // A NaN with a payload, and a signalling one.
        Just(f64::from_bits(0x7ff8_0000_dead_beef)),
        Just(f64::from_bits(0x7ff0_0000_0000_0001)),
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(f64::EPSILON),
        // The smallest subnormal.
        Just(f64::from_bits(1)),
        Just(0.1),
        Just(1e21),
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
    ]
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\u{0}".to_owned()),
        Just("\"\\/\u{8}\u{c}\n\r\t".to_owned()),
        Just("é漢字🦀\u{200d}\u{feff}".to_owned()),
        any::<String>(),
        "\\PC{0,12}",
    ]
}

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(0),
            Just(-1),
            Just(1 << 53),
            any::<i64>()
        ]
        .prop_map(Value::Int),
        arb_float().prop_map(Value::Float),
        arb_string().prop_map(|s| Value::Str(s.into())),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| Value::Bytes(b.into())),
    ]
}

/// Value trees up to four levels of maps and arrays.
fn arb_input() -> impl Strategy<Value = Input> {
    arb_scalar()
        .prop_map(Input::Value)
        .prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec((arb_string(), inner.clone()), 0..6).prop_map(|entries| {
                    // One write per key: a map literal has distinct keys.
                    let mut seen = std::collections::HashSet::new();
                    Input::Map(
                        entries
                            .into_iter()
                            .filter(|(k, _)| seen.insert(k.clone()))
                            .map(|(k, v)| (k.into(), v))
                            .collect(),
                    )
                }),
                prop::collection::vec(inner, 0..6).prop_map(Input::Array),
            ]
        })
}

/// Scalars that repeat their neighbours' shapes: few kinds, small or
/// sequential integers, strings sharing long prefixes.
fn arb_alike_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (0i64..300).prop_map(Value::Int),
        (0usize..40, 0usize..3).prop_map(|(i, p)| {
            let prefix = ["", "item-", &"long prefix ".repeat(12)][p].to_owned();
            Value::Str(format!("{prefix}{i}").into())
        }),
        arb_scalar(),
    ]
}

/// Maps whose keys come from a few names, so that many share a shape.
fn arb_alike_map() -> impl Strategy<Value = Input> {
    let key = prop::sample::select(vec!["a", "b", "id", "name", "tags", "é"]);
    let value = prop_oneof![
        4 => arb_alike_scalar().prop_map(Input::Value),
        1 => prop::collection::vec(arb_alike_scalar().prop_map(Input::Value), 0..6)
            .prop_map(Input::Array),
    ];
    prop::collection::vec((key, value), 0..5).prop_map(|entries| {
        let mut seen = std::collections::HashSet::new();
        Input::Map(
            entries
                .into_iter()
                .filter(|(k, _)| seen.insert(*k))
                .map(|(k, v)| (k.into(), v))
                .collect(),
        )
    })
}

fn config(format: WireFormat) -> Config {
    Config::default().wire_format(format)
}

fn root(r: &Replica) -> ObjectId {
    r.root().as_ref_id().expect("a root object")
}

fn child(r: &Replica, parent: ObjectId, key: &str) -> ObjectId {
    r.map_get(parent, key)
        .unwrap()
        .unwrap()
        .as_ref_id()
        .unwrap()
}

/// Asserts that both replicas hold `expected` under the root and the same
/// document, byte for byte.
fn assert_holds(sim: &mut Sim, expected: &Model) -> Result<(), TestCaseError> {
    let snapshot = sim.replica(0).snapshot();
    for i in 0..sim.len() {
        let r = sim.replica(i);
        let got = read(r, r.root());
        prop_assert_eq!(&got, expected, "replica {}", i);
        prop_assert!(r.snapshot() == snapshot, "replica {} differs", i);
    }
    Ok(())
}

const SENDER: usize = 0;

/// The network's seed: these tests draw their cases from proptest, and the
/// interleaving of two replicas' messages does not change what they check.
const SEED: u64 = 0;

/// A sender and a receiver that know each other.
fn pair(sender: Config, receiver: Config) -> Sim {
    let mut sim = Sim::with_hosts(SEED, [("sender", sender), ("receiver", receiver)]);
    sim.run();
    sim
}

/// Writes `root`, then a map and an array filled by `map_set` and
/// `list_splice`, through a sender encoding in `format`. Returns the
/// sender's snapshot after each of the two steps.
fn write_and_receive(
    format: WireFormat,
    root_input: &Input,
    keyed: &[(String, Input)],
    items: &[Input],
) -> Result<(Vec<u8>, Vec<u8>), TestCaseError> {
    let mut sim = pair(config(format), config(WireFormat::Binary));
    sim.with(SENDER, |s| s.set_root(root_input.clone()))
        .unwrap();
    sim.run();
    assert_holds(&mut sim, &model(root_input))?;
    let first = sim.replica(SENDER).snapshot();

    let s = sim.replica(SENDER);
    s.set_root(Input::Map(vec![
        ("m".into(), Input::Map(vec![])),
        ("l".into(), Input::Array(vec![])),
    ]))
    .unwrap();
    let (m, l) = (child(s, root(s), "m"), child(s, root(s), "l"));
    let mut expected: Vec<(String, Model)> = Vec::new();
    for (k, v) in keyed {
        s.map_set(m, k, v.clone()).unwrap();
        expected.retain(|(x, _)| x != k);
        expected.push((k.clone(), model(v)));
    }
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    s.list_splice(l, 0, 0, items.to_vec()).unwrap();
    // And once more in the middle, as one message.
    let mid = items.len() / 2;
    s.list_splice(l, mid, 0, items.to_vec()).unwrap();
    let mut list: Vec<Model> = items.iter().map(model).collect();
    let again: Vec<Model> = items.iter().map(model).collect();
    list.splice(mid..mid, again);
    sim.collect(SENDER);
    sim.run();
    let mut top = vec![
        ("l".to_owned(), Model::Array(list)),
        ("m".to_owned(), Model::Map(expected)),
    ];
    top.sort_by(|a, b| a.0.cmp(&b.0));
    assert_holds(&mut sim, &Model::Map(top))?;
    Ok((first, sim.replica(SENDER).snapshot()))
}

proptest! {
    // Cases that once failed are replayed from `codec.proptest-regressions`
    // next to this file.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::with_cases(1024)
    })]

    #[test]
    fn written_values_arrive_exactly_in_both_formats(
        root_input in arb_input(),
        keyed in prop::collection::vec((arb_string(), arb_input()), 0..5),
        items in prop::collection::vec(arb_input(), 0..5),
    ) {
        let binary = write_and_receive(WireFormat::Binary, &root_input, &keyed, &items)?;
        let json = write_and_receive(WireFormat::Json, &root_input, &keyed, &items)?;
        // The same writes give the same document whatever the encoding.
        prop_assert!(binary == json, "binary and JSON documents differ");
    }

    #[test]
    fn a_state_transfer_carries_every_value(
        root_input in arb_input(),
        keyed in prop::collection::vec((arb_string(), arb_input()), 0..4),
        json in any::<bool>(),
    ) {
        let format = if json { WireFormat::Json } else { WireFormat::Binary };
        let mut sim = pair(config(format), config(format));
        let s = sim.replica(SENDER);
        s.set_root(Input::Map(vec![("v".into(), root_input.clone())])).unwrap();
        let r = root(s);
        for (k, v) in &keyed {
            s.map_set(r, k, v.clone()).unwrap();
        }
        // Deletes leave tombstones, which travel too.
        if let Some((k, _)) = keyed.first() {
            s.map_delete(r, k).unwrap();
        }
        sim.collect(SENDER);
        sim.run();
        let expected = {
            let s = sim.replica(SENDER);
            read(s, s.root())
        };
        let j = sim.add_with_config("joiner", config(format));
        sim.sync(j);
        assert_holds(&mut sim, &expected)?;

        // An exported state restores the same document.
        let saved = sim.replica(SENDER).export_state();
        let mut restored =
            Replica::from_exported(PeerId::new("restored", 0x77), config(format), &saved).unwrap();
        let restored_root = restored.root();
        prop_assert_eq!(read(&mut restored, restored_root), expected);
        prop_assert!(restored.snapshot() == sim.replica(SENDER).snapshot());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::with_cases(256)
    })]

    /// Documents of many maps alike (the saved format's shapes, heads and
    /// string prefixes), with overwrites and deletes that make neighbours
    /// differ, restore exactly from an exported state.
    #[test]
    fn an_exported_document_of_alike_maps_restores_exactly(
        items in prop::collection::vec(arb_alike_map(), 0..40),
        keyed in prop::collection::vec(("k[0-9]{1,2}", arb_alike_map()), 0..20),
        edits in prop::collection::vec((any::<prop::sample::Index>(), arb_alike_scalar(), any::<bool>()), 0..10),
    ) {
        let mut s = Replica::new(PeerId::new("writer", 0x41), Config::default());
        s.set_root(Input::Map(vec![
            ("items".into(), Input::Array(items.clone())),
            ("keyed".into(), Input::Map(vec![])),
        ]))
        .unwrap();
        let keyed_map = child(&s, root(&s), "keyed");
        for (k, v) in &keyed {
            s.map_set(keyed_map, k, v.clone()).unwrap();
        }
        let list = child(&s, root(&s), "items");
        let maps = s.list_values(list).unwrap();
        for (at, value, delete) in &edits {
            let Some(m) = maps.get(at.index(maps.len().max(1))).and_then(|m| m.as_ref_id()) else {
                continue;
            };
            match delete {
                true => {
                    let _ = s.map_delete(m, "a");
                }
                false => {
                    s.map_set(m, "a", Input::Value(value.clone())).unwrap();
                }
            }
        }
        let writer_root = s.root();
        let expected = read(&mut s, writer_root);
        let saved = s.export_state();
        let mut restored =
            Replica::from_exported(PeerId::new("restored", 0x42), Config::default(), &saved)
                .unwrap();
        let restored_root = restored.root();
        prop_assert_eq!(read(&mut restored, restored_root), expected);
        prop_assert!(restored.snapshot() == s.snapshot());
        // Saving again and loading gives the same document once more.
        let again = restored.export_state();
        let mut twice =
            Replica::from_exported(PeerId::new("twice", 0x43), Config::default(), &again)
                .unwrap();
        prop_assert!(twice.snapshot() == s.snapshot());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::with_cases(512)
    })]

    /// A write whose message might not fit in the limit is refused before
    /// it changes anything; every message that goes out fits, and a
    /// receiver with the same limit takes it. Online or holding writes
    /// while offline, one message per write or a group of them.
    #[test]
    fn no_write_makes_a_message_over_the_limit(
        writes in prop::collection::vec((arb_string(), arb_input()), 1..6),
        limit in 300usize..3000,
        json in any::<bool>(),
        grouped in any::<bool>(),
        offline in any::<bool>(),
    ) {
        let format = if json { WireFormat::Json } else { WireFormat::Binary };
        let config = config(format).max_message_size(limit);
        let mut sim = pair(config.clone(), config);
        sim.with(SENDER, |s| s.set_root(Input::Map(vec![]))).unwrap();
        sim.run();
        let largest = watch_largest(&mut sim);
        let s = sim.replica(SENDER);
        let r = root(s);
        if offline {
            s.set_online(false);
        }
        if grouped {
            s.begin();
        }
        let mut expected: Vec<(String, Model)> = Vec::new();
        for (k, v) in &writes {
            let s = sim.replica(SENDER);
            let before = s.snapshot();
            match s.map_set(r, k, v.clone()) {
                Ok(_) => {
                    expected.retain(|(x, _)| x != k);
                    expected.push((k.clone(), model(v)));
                }
                Err(Error::TooLarge { size, limit: l }) => {
                    prop_assert_eq!(l, limit);
                    prop_assert!(size > limit - 64, "refused at {} of {}", size, limit);
                    prop_assert!(s.snapshot() == before, "a refused write changed the document");
                    prop_assert!(!s.has_transmits(), "a refused write sent something");
                }
                Err(e) => return Err(TestCaseError::fail(format!("refused: {e}"))),
            }
            sim.collect(SENDER);
        }
        let s = sim.replica(SENDER);
        if grouped {
            s.commit();
        }
        s.set_online(true);
        sim.collect(SENDER);
        sim.run();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_holds(&mut sim, &Model::Map(expected))?;
        let largest = largest.load(Ordering::Relaxed);
        prop_assert!(largest <= limit, "a message of {} bytes over the limit of {}", largest, limit);
    }
}

/// The bound a write is checked against is close to what it takes: a
/// string fits with a few dozen bytes to spare, and a long array of small
/// integers in binary is not charged as if each were a string.
#[test]
fn a_write_that_fits_is_not_refused() {
    let limit = 4096;
    let mut sim = pair(
        config(WireFormat::Binary).max_message_size(limit),
        config(WireFormat::Binary).max_message_size(limit),
    );
    sim.with(SENDER, |s| s.set_root(Input::Map(vec![])))
        .unwrap();
    let s = sim.replica(SENDER);
    let r = root(s);
    s.map_set(r, "s", Input::from("x".repeat(limit - 256)))
        .unwrap();
    let err = s
        .map_set(r, "s", Input::from("x".repeat(limit)))
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("4096"), "{err}");
    let ints: Vec<Input> = (0..200).map(Input::from).collect();
    s.map_set(r, "ints", Input::Array(ints)).unwrap();
    sim.run();
    let r2 = &sim[1];
    assert_eq!(r2.list_len(child(r2, root(r2), "ints")).unwrap(), 200);
}

/// Regression: JSON wrote NaN and the infinities as `null`, which every
/// receiver refused, and parsed some floats to a neighbouring value.
#[test]
fn json_carries_every_float_bit_for_bit() {
    let floats = [
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7ff8_0000_dead_beef),
        f64::from_bits(0x7ff0_0000_0000_0001),
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        f64::from_bits(1),
        2.05826185979114e-125,
        -1.3220530302034247e128,
        f64::MAX,
    ];
    let items: Vec<Input> = floats.iter().map(|&f| f.into()).collect();
    let mut sim = pair(config(WireFormat::Json), config(WireFormat::Json));
    sim.with(SENDER, |s| s.set_root(Input::Array(items)))
        .unwrap();
    sim.run();
    let r = &sim[1];
    let got = r.list_values(root(r)).unwrap();
    for (f, v) in floats.iter().zip(got) {
        match v {
            Value::Float(g) => assert_eq!(g.to_bits(), f.to_bits(), "{f:?} arrived as {g:?}"),
            other => panic!("{f:?} arrived as {other:?}"),
        }
    }
}

/// Delivers what the sender queued, and everything it causes, with no
/// message over `limit`.
fn deliver_within(sim: &mut Sim, largest: &AtomicUsize, limit: usize) {
    sim.collect(SENDER);
    sim.run();
    let largest = largest.load(Ordering::Relaxed);
    assert!(
        largest <= limit,
        "a message of {largest} bytes over the limit of {limit}"
    );
}

/// `n` empty maps the sender makes the root's entries, once every replica
/// has them.
fn maps(sim: &mut Sim, n: usize) -> Vec<ObjectId> {
    let entries = (0..n).map(|i| (format!("m{i}").into(), Input::Map(vec![])));
    sim.with(SENDER, |s| s.set_root(Input::Map(entries.collect())))
        .unwrap();
    sim.run();
    let s = sim.replica(SENDER);
    (0..n)
        .map(|i| child(s, root(s), &format!("m{i}")))
        .collect()
}

/// Releases in a group that a write filled as far as it could still fit
/// the limit: every write leaves room for the releases of the locks the
/// replica holds, since a release cannot be refused (a guard releases as
/// it is dropped).
#[test]
fn releases_fit_in_a_group_a_write_filled() {
    let limit = 8192;
    let config = config(WireFormat::Binary).max_message_size(limit);
    let mut sim = pair(config.clone(), config);
    let objects = maps(&mut sim, 40);
    let s = sim.replica(SENDER);
    let r = root(s);
    for &o in &objects {
        s.lock(o, true).unwrap();
    }
    sim.collect(SENDER);
    sim.run();
    let largest = watch_largest(&mut sim);
    let s = sim.replica(SENDER);
    s.begin();
    let mut size = limit;
    while s.map_set(r, "pad", Input::from("p".repeat(size))).is_err() {
        size -= 1;
    }
    for &o in &objects {
        assert!(matches!(s.lock_state(o), LockState::Held(_)));
        s.unlock(o).unwrap();
    }
    s.commit();
    deliver_within(&mut sim, &largest, limit);
    let r2 = sim.replica(1);
    for &o in &objects {
        assert_eq!(r2.lock_holder(o), None);
    }
    assert_eq!(
        r2.map_get(root(r2), "pad").unwrap(),
        Some(Value::from("p".repeat(size)))
    );
}

/// A replica that owes acknowledgements of many lock requests, each
/// listing every member and its long hostname, sends them in as many
/// messages as the limit needs, and every request is granted.
#[test]
fn lock_acknowledgements_take_as_many_messages_as_they_need() {
    // Room for one acknowledgement (three hostnames) and an introduction.
    let limit = 8192;
    let config = config(WireFormat::Binary).max_message_size(limit);
    let hosts: Vec<String> = ["a", "b", "c"].iter().map(|h| h.repeat(1000)).collect();
    let mut sim = Sim::with_hosts(SEED, hosts.iter().map(|h| (h.as_str(), config.clone())));
    sim.run();
    let objects = maps(&mut sim, 5);
    let largest = watch_largest(&mut sim);
    let s = sim.replica(SENDER);
    s.begin();
    for &o in &objects {
        s.lock(o, true).unwrap();
    }
    s.commit();
    deliver_within(&mut sim, &largest, limit);
    let s = sim.replica(SENDER);
    for &o in &objects {
        assert!(
            matches!(s.lock_state(o), LockState::Held(_)),
            "{o:?}: {:?}",
            s.lock_state(o)
        );
    }
}

/// What a write of [`writes_without_inputs_fit_too`] does to the array.
#[derive(Debug, Clone)]
enum Shrink {
    /// Removes `len` elements from `start` (fractions of the length).
    Delete(prop::sample::Index, prop::sample::Index),
    /// Reorders the whole array by a permutation drawn from `seed`.
    Reorder(u64),
    /// Stores a reference to the other writer's map.
    Refer,
    /// Stores a string of up to the limit's length (a fraction of it), so
    /// that what follows in a group has little room left.
    Pad(prop::sample::Index),
    /// Asks for the lock on the other writer's map.
    Lock,
    /// Releases (or withdraws) that lock, if asked for.
    Unlock,
}

fn arb_shrink() -> impl Strategy<Value = Shrink> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(s, n)| Shrink::Delete(s, n)),
        any::<u64>().prop_map(Shrink::Reorder),
        Just(Shrink::Refer),
        any::<prop::sample::Index>().prop_map(Shrink::Pad),
        Just(Shrink::Lock),
        Just(Shrink::Unlock),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::with_cases(256)
    })]

    /// Writes that carry no input still fit the limit or are refused
    /// before they change anything: a delete of elements that two writers
    /// interleaved (a run each), a reorder (a move each), and a reference
    /// to an object of a peer the message must introduce, whose hostname
    /// may be long, in a group that a long string has almost filled; and a
    /// lock's request and release (a release is never refused: every
    /// write leaves room for it).
    #[test]
    fn writes_without_inputs_fit_too(
        n in 1usize..60,
        writes in prop::collection::vec(arb_shrink(), 1..4),
        limit in 600usize..3000,
        long_hostname in any::<bool>(),
        json in any::<bool>(),
        grouped in any::<bool>(),
    ) {
        let format = if json { WireFormat::Json } else { WireFormat::Binary };
        // A peer announces its hostname in a message of its own; a lock's
        // acknowledgement lists it, beside its introduction.
        let limit = if long_hostname { limit + 2200 } else { limit };
        let config = config(format).max_message_size(limit);
        let other = if long_hostname { "o".repeat(1000) } else { "other".to_owned() };
        const OTHER: usize = 1;
        let mut sim = Sim::with_hosts(
            SEED,
            [("sender", config.clone()), (other.as_str(), config.clone()), ("receiver", config)],
        );
        sim.run();
        sim.with(SENDER, |s| s.set_root(Input::Map(vec![("l".into(), Input::Array(vec![]))])))
            .unwrap();
        sim.run();
        sim.with(OTHER, |o| {
            let r = root(o);
            o.map_set(r, "o", Input::Map(vec![])).unwrap();
        });
        sim.run();
        for i in 0..n {
            let w = if i % 2 == 0 { SENDER } else { OTHER };
            sim.with(w, |r| {
                let l = child(r, root(r), "l");
                r.list_push(l, Input::from(i as i64)).unwrap();
            });
            sim.run();
        }
        let largest = watch_largest(&mut sim);
        let s = sim.replica(SENDER);
        let (r, l, o) = (root(s), child(s, root(s), "l"), child(s, root(s), "o"));
        let mut expected: Vec<Value> = s.list_values(l).unwrap();
        let mut refer = false;
        if grouped {
            s.begin();
        }
        for w in &writes {
            let s = sim.replica(SENDER);
            let before = s.snapshot();
            let len = expected.len();
            let done = match w {
                Shrink::Delete(start, count) => {
                    let start = start.index(len + 1);
                    let count = count.index(len - start + 1);
                    s.list_splice(l, start, count, Vec::new()).map(|_| {
                        expected.drain(start..start + count);
                    })
                }
                Shrink::Reorder(seed) => {
                    let mut order: Vec<usize> = (0..len).collect();
                    let mut x = *seed | 1;
                    for i in (1..len).rev() {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        order.swap(i, (x % (i as u64 + 1)) as usize);
                    }
                    s.list_reorder(l, &order).map(|_| {
                        expected = order.iter().map(|&i| expected[i].clone()).collect();
                    })
                }
                Shrink::Refer => s
                    .map_set(r, "ref", Input::Value(Value::Ref(o)))
                    .map(|_| refer = true),
                Shrink::Pad(size) => s
                    .map_set(r, "pad", Input::from("p".repeat(size.index(limit))))
                    .map(|_| ()),
                Shrink::Lock => s.lock(o, true).map(|_| ()),
                Shrink::Unlock => match s.unlock(o) {
                    Err(Error::NotLocked(_)) => Ok(()),
                    done => {
                        prop_assert!(done.is_ok(), "a release was refused: {:?}", done);
                        done
                    }
                },
            };
            match done {
                Ok(()) => {}
                Err(Error::TooLarge { limit: l, .. }) => {
                    prop_assert_eq!(l, limit);
                    prop_assert!(s.snapshot() == before, "a refused write changed the document");
                }
                Err(e) => return Err(TestCaseError::fail(format!("refused: {e}"))),
            }
            sim.collect(SENDER);
        }
        if grouped {
            sim.replica(SENDER).commit();
        }
        sim.collect(SENDER);
        sim.run();
        let largest = largest.load(Ordering::Relaxed);
        prop_assert!(largest <= limit, "a message of {} bytes over the limit of {}", largest, limit);
        let snapshot = sim.replica(SENDER).snapshot();
        for i in 0..sim.len() {
            let x = sim.replica(i);
            let xl = child(x, root(x), "l");
            prop_assert_eq!(&x.list_values(xl).unwrap(), &expected, "replica {}", i);
            prop_assert_eq!(x.map_get(root(x), "ref").unwrap().is_some(), refer);
            prop_assert!(x.snapshot() == snapshot, "replica {} differs", i);
        }
    }
}
