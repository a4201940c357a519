//! Typed mirroring (SPEC §3): round trips, the writes each `update` sends,
//! type errors, typed watching, JSON pointers, locks, and property tests.
//!
//! # How writes are counted
//! The editor's nodes use the JSON wire format, and the test's transport
//! keeps every message the editor sends. A message is decoded as plain JSON
//! (not with the engine's own types) and each operation in an `Op`/`Ops` message
//! is counted by its name; an `ListInsert` counts the elements it inserts
//! and a `ListDelete` the elements it deletes. `Intro` entries (which only
//! name a peer for later operations) are not writes and are not counted.
//! This measures exactly what crosses the network: the number of messages,
//! and the number and kind of the operations inside them. The receiving
//! node's change events are checked as well, to show what each write did
//! there.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use facsimile::{
    ChangeEvent, Config, EngineError, Error, Input, LocalNetwork, Node, Prop, Value, WireFormat,
};
use futures_util::FutureExt;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

// ---------------------------------------------------------------- harness

/// Messages in flight: whether the editor sent it, and the bytes.
type Queue = Arc<Mutex<VecDeque<(bool, Vec<u8>)>>>;

/// A named edit of a `Vec`, and what it must send.
type VecCase = (&'static str, fn(&mut Vec<i64>), Sent);

/// Two nodes over an in-test transport that records what the editor sends.
struct Pair {
    editor: Node,
    peer: Node,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    queue: Queue,
    peer_events: Arc<Mutex<Vec<ChangeEvent>>>,
}

/// What the editor sent: messages carrying operations, and the operations
/// by name (element counts for inserts and deletes).
#[derive(Debug, Default, PartialEq)]
struct Sent {
    messages: usize,
    ops: BTreeMap<String, usize>,
}

impl Sent {
    fn of(messages: usize, ops: &[(&str, usize)]) -> Sent {
        Sent {
            messages,
            ops: ops.iter().map(|&(k, n)| (k.to_string(), n)).collect(),
        }
    }

    fn writes(&self) -> usize {
        self.ops.values().sum()
    }
}

impl Pair {
    fn new() -> Pair {
        let config = Config::default().wire_format(WireFormat::Json);
        let editor = Node::with_config("editor", config.clone());
        let peer = Node::with_config("peer", config);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        {
            let (sent, queue) = (sent.clone(), queue.clone());
            editor.set_sender(move |m| {
                sent.lock().unwrap().push(m.as_bytes().to_vec());
                queue
                    .lock()
                    .unwrap()
                    .push_back((true, m.as_bytes().to_vec()));
            });
        }
        {
            let queue = queue.clone();
            peer.set_sender(move |m| {
                queue
                    .lock()
                    .unwrap()
                    .push_back((false, m.as_bytes().to_vec()));
            });
        }
        let peer_events = Arc::new(Mutex::new(Vec::new()));
        let log = peer_events.clone();
        peer.on_change(move |e| log.lock().unwrap().push(e.clone()))
            .detach();
        let pair = Pair {
            editor,
            peer,
            sent,
            queue,
            peer_events,
        };
        pair.deliver();
        pair
    }

    /// Delivers everything in flight, in each sender's order.
    fn deliver(&self) {
        loop {
            let next = self.queue.lock().unwrap().pop_front();
            let Some((from_editor, bytes)) = next else {
                return;
            };
            let to = if from_editor {
                &self.peer
            } else {
                &self.editor
            };
            to.receive(&bytes).unwrap();
        }
    }

    /// Delivers, then forgets what was sent and received so far.
    fn settle(&self) {
        self.deliver();
        self.sent.lock().unwrap().clear();
        self.peer_events.lock().unwrap().clear();
    }

    /// Delivers, and returns what the editor sent since the last call.
    fn take(&self) -> Sent {
        self.deliver();
        let mut out = Sent::default();
        for bytes in self.sent.lock().unwrap().drain(..) {
            let msg: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON message");
            // A message of one operation is an `Op` (a `Next` when it moves
            // the counter by one), of several an `Ops`.
            let one = msg["body"]["Op"]
                .get("op")
                .or(msg["body"]["Next"].get("op"));
            let ops = match one {
                Some(op) => vec![op.clone()],
                None => match msg["body"]["Ops"]["ops"].as_array() {
                    Some(ops) => ops.clone(),
                    None => continue,
                },
            };
            let mut counted = false;
            for op in ops {
                let (name, body) = op
                    .as_object()
                    .and_then(|o| o.iter().next())
                    .expect("an externally tagged operation");
                // An `Append` is a one-value `ListInsert`.
                let name = match name.as_str() {
                    "Append" => "ListInsert",
                    name => name,
                };
                let n = match name {
                    "Intro" => continue,
                    "ListInsert" => body["values"].as_array().map_or(0, Vec::len),
                    "ListDelete" => body["runs"].as_array().map_or(0, |runs| {
                        runs.iter().map(|r| r[1].as_u64().unwrap() as usize).sum()
                    }),
                    _ => 1,
                };
                counted = true;
                *out.ops.entry(name.to_owned()).or_default() += n;
            }
            if counted {
                out.messages += 1;
            }
        }
        out
    }

    /// The peer's change events since the last call, as (target is the
    /// root?, property).
    fn peer_changes(&self) -> Vec<ChangeEvent> {
        std::mem::take(&mut *self.peer_events.lock().unwrap())
    }
}

// ------------------------------------------------------------------ types

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Game {
    round: i64,
    players: Vec<Player>,
    scores: BTreeMap<String, i64>,
    events: Vec<String>,
    phase: Phase,
    winner: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Player {
    name: String,
    pos: Pos,
    score: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Pos {
    x: f64,
    y: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Phase {
    Lobby,
    Playing { turn: u32 },
    Over(String),
}

fn player(name: &str, score: i64) -> Player {
    Player {
        name: name.into(),
        pos: Pos { x: 0.0, y: 0.0 },
        score,
    }
}

fn game() -> Game {
    Game {
        round: 1,
        players: vec![
            player("ada", 0),
            player("bob", 0),
            player("cy", 0),
            player("di", 0),
        ],
        scores: [("ada".to_string(), 0), ("bob".to_string(), 0)].into(),
        events: vec!["start".into()],
        phase: Phase::Playing { turn: 0 },
        winner: None,
    }
}

/// A pair whose document is `game()` on both nodes.
fn game_pair() -> Pair {
    let p = Pair::new();
    p.editor.set_root_from(&game()).unwrap();
    p.settle();
    assert_eq!(p.peer.root_as::<Game>().unwrap(), game());
    p
}

fn root_id(node: &Node) -> facsimile::ObjectId {
    node.root_map().unwrap().id()
}

// ---------------------------------------------- minimal writes of update

/// A closure that changes nothing sends nothing at all.
#[test]
fn unchanged_update_sends_nothing() {
    let p = game_pair();
    p.editor.update(|_: &mut Game| {}).unwrap();
    p.editor.update(|g: &mut Game| g.round = 1).unwrap();
    assert_eq!(p.take(), Sent::default());
    assert!(p.peer_changes().is_empty());
}

/// A changed scalar field is one `MapSet`, one change event on the peer.
#[test]
fn changed_scalar_field_is_one_write() {
    let p = game_pair();
    p.editor.update(|g: &mut Game| g.round = 2).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    let changes = p.peer_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].prop(), Some(&Prop::Key("round".into())));
    assert_eq!(changes[0].new_value(), Some(&Value::Int(2)));
    assert_eq!(p.peer.root_as::<Game>().unwrap().round, 2);
}

/// A pushed element is one insert of one element.
#[test]
fn pushed_element_is_one_insert() {
    let p = game_pair();
    p.editor
        .update(|g: &mut Game| g.events.push("ada scored".into()))
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListInsert", 1)]));
    // A pushed struct is one insert too (its object is created with it).
    p.editor
        .update(|g: &mut Game| g.players.push(player("eve", 0)))
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListInsert", 1), ("NewMap", 2)]));
    let g: Game = p.peer.root_as().unwrap();
    assert_eq!(g.events, ["start", "ada scored"]);
    assert_eq!(g.players.len(), 5);
}

/// Pop, removal and insertion in the middle, and setting one element each
/// cost one write.
#[test]
fn vec_edits_cost_one_write_each() {
    let p = Pair::new();
    p.editor.set_root_from(&vec![1, 2, 3, 4, 5]).unwrap();
    p.settle();
    let cases: Vec<VecCase> = vec![
        (
            "pop",
            |v| {
                v.pop();
            },
            Sent::of(1, &[("ListDelete", 1)]),
        ),
        (
            "remove(1)",
            |v| {
                v.remove(1);
            },
            Sent::of(1, &[("ListDelete", 1)]),
        ),
        (
            "insert(1, 9)",
            |v| v.insert(1, 9),
            Sent::of(1, &[("ListInsert", 1)]),
        ),
        ("v[2] = 7", |v| v[2] = 7, Sent::of(1, &[("ListSet", 1)])),
        (
            "insert(0, 0)",
            |v| v.insert(0, 0),
            Sent::of(1, &[("ListInsert", 1)]),
        ),
        (
            "remove(0)",
            |v| {
                v.remove(0);
            },
            Sent::of(1, &[("ListDelete", 1)]),
        ),
        (
            "truncate(1)",
            |v| v.truncate(1),
            Sent::of(1, &[("ListDelete", 3)]),
        ),
        (
            "extend([5, 6])",
            |v| v.extend([5, 6]),
            Sent::of(1, &[("ListInsert", 2)]),
        ),
    ];
    let mut model = vec![1, 2, 3, 4, 5];
    for (name, edit, expected) in cases {
        edit(&mut model);
        p.editor.update(|v: &mut Vec<i64>| edit(v)).unwrap();
        assert_eq!(p.take(), expected, "{name}");
        assert_eq!(p.peer.root_as::<Vec<i64>>().unwrap(), model, "{name}");
    }
}

/// A removed map entry is one delete; an added one is one set.
#[test]
fn removed_map_entry_is_one_delete() {
    let p = game_pair();
    p.editor
        .update(|g: &mut Game| g.scores.remove("bob"))
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapDelete", 1)]));
    p.editor
        .update(|g: &mut Game| g.scores.insert("cy".into(), 4))
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    let changes = p.peer_changes();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].prop(), Some(&Prop::Key("bob".into())));
    assert_eq!(changes[1].prop(), Some(&Prop::Key("cy".into())));
    let scores = p.peer.root_as::<Game>().unwrap().scores;
    assert_eq!(
        scores,
        [("ada".to_string(), 0), ("cy".to_string(), 4)].into()
    );
}

/// A nested struct that changed in one field is one write on the nested
/// object (not on its parent, not a new object).
#[test]
fn nested_struct_field_is_one_write_on_the_nested_object() {
    let p = game_pair();
    let before = p.peer.get("/players/2/pos").unwrap();
    p.editor
        .update(|g: &mut Game| g.players[2].pos.x = 1.5)
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    let changes = p.peer_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        Some(changes[0].target().clone()),
        before.as_object(),
        "the write lands on the object that was there"
    );
    assert_eq!(changes[0].prop(), Some(&Prop::Key("x".into())));
    assert_eq!(p.peer.get("/players/2/pos"), Some(before));
    assert_eq!(p.peer.get("/players/2/pos/x"), Some(Value::Float(1.5)));
}

/// Several changes in one update: one message, one write each, and the
/// editor's own events fire after `update` returns, on the final state.
#[test]
fn all_writes_of_an_update_are_one_message_with_events_after() {
    let p = game_pair();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let editor = p.editor.clone();
    let _sub = p.editor.on_change(move |e| {
        let round = editor.root_as::<Game>().unwrap().round;
        log.lock().unwrap().push((e.prop().cloned(), round));
    });
    let seen_in_closure = seen.clone();
    p.editor
        .update(|g: &mut Game| {
            g.round = 3;
            g.players[0].score = 10;
            g.players[1].pos.y = -1.0;
            g.events.push("ada scored".into());
            g.scores.remove("bob");
            assert!(seen_in_closure.lock().unwrap().is_empty());
        })
        .unwrap();
    assert_eq!(
        p.take(),
        Sent::of(1, &[("MapSet", 3), ("ListInsert", 1), ("MapDelete", 1)])
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen.iter().all(|(_, round)| *round == 3), "{seen:?}");
    assert_eq!(p.peer_changes().len(), 5);
}

/// `None` in a struct field is an absent key: setting it is one set,
/// clearing it one delete.
#[test]
fn option_fields_are_absent_keys() {
    let p = game_pair();
    assert_eq!(p.editor.get("/winner"), None);
    p.editor
        .update(|g: &mut Game| g.winner = Some("ada".into()))
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    p.editor.update(|g: &mut Game| g.winner = None).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapDelete", 1)]));
    assert!(!p.peer.root_map().unwrap().contains_key("winner"));
    // A key holding null reads as None and is left alone.
    p.editor.set_path("/winner", ()).unwrap();
    p.settle();
    assert_eq!(p.editor.root_as::<Game>().unwrap().winner, None);
    p.editor.update(|g: &mut Game| g.round += 1).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
}

/// The same variant is diffed inside; another variant replaces the value
/// (one write, so concurrent switches cannot merge two variants).
#[test]
fn enums_diff_inside_a_variant_and_replace_across() {
    let p = game_pair();
    p.editor
        .update(|g: &mut Game| g.phase = Phase::Playing { turn: 1 })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    p.editor
        .update(|g: &mut Game| g.phase = Phase::Over("ada".into()))
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1), ("NewMap", 1)]));
    assert_eq!(
        p.peer.root().to_json().unwrap()["phase"],
        json!({"Over": "ada"})
    );
    p.editor
        .update(|g: &mut Game| g.phase = Phase::Lobby)
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    assert_eq!(p.peer.root().to_json().unwrap()["phase"], json!("Lobby"));
    assert_eq!(p.peer.root_as::<Game>().unwrap().phase, Phase::Lobby);
}

/// Writing the whole value with `set_root_from` diffs too; so does
/// `set_from` on a handle. Re-sending a value that is there sends nothing.
#[test]
fn set_from_diffs_against_the_store() {
    let p = game_pair();
    let mut g = game();
    p.editor.set_root_from(&g).unwrap();
    assert_eq!(p.take(), Sent::default());
    g.players[3].score = 7;
    p.editor.set_root_from(&g).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    let players = p.editor.get("/players").unwrap();
    let players = players.as_array().unwrap();
    g.players.pop();
    players.set_from(&g.players).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListDelete", 1)]));
    assert_eq!(p.peer.root_as::<Game>().unwrap(), g);
    // A value of another kind does not fit an existing object.
    let err = players.set_from(&json!({"a": 1})).unwrap_err();
    assert!(matches!(err, Error::Type { .. }), "{err}");
}

/// Handles update in place: `obj.update::<T>` on a nested object.
#[test]
fn handle_update_and_get_as() {
    let p = game_pair();
    let ada = p.editor.get("/players/0").unwrap();
    let ada = ada.as_map().unwrap();
    assert_eq!(ada.get_as::<Player>().unwrap(), player("ada", 0));
    ada.update(|pl: &mut Player| pl.score += 5).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    let events = p.editor.get("/events").unwrap().as_object().unwrap();
    events
        .update(|e: &mut Vec<String>| e.push("x".into()))
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListInsert", 1)]));
    let g: Game = p.peer.root_as().unwrap();
    assert_eq!(g.players[0].score, 5);
    assert_eq!(g.events, ["start", "x"]);
}

/// Keys a struct does not declare are neither read nor touched by its
/// updates (a newer program's fields survive an older program's update);
/// a map's update makes its key set equal.
#[test]
fn struct_updates_keep_undeclared_keys() {
    let p = game_pair();
    p.editor.set_path("/extra", "from a newer program").unwrap();
    p.settle();
    p.editor.update(|g: &mut Game| g.round = 9).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    assert_eq!(
        p.peer.get("/extra"),
        Some(Value::from("from a newer program"))
    );
    // The same document read as a map of JSON values does remove it.
    p.editor
        .update(|m: &mut HashMap<String, serde_json::Value>| m.remove("extra"))
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapDelete", 1)]));
}

/// The update checks what it read before writing: when a message changes
/// the store while the closure runs, the closure runs again on the new
/// state, and neither change is lost.
#[test]
fn update_reruns_when_the_store_changed_meanwhile() {
    let p = game_pair();
    let mut calls = 0;
    p.editor
        .update(|g: &mut Game| {
            calls += 1;
            if calls == 1 {
                // The peer's write arrives while the closure runs.
                p.peer
                    .update(|g: &mut Game| g.players[1].score = 42)
                    .unwrap();
                p.deliver();
            }
            g.round += 1;
        })
        .unwrap();
    assert_eq!(calls, 2);
    p.deliver();
    for node in [&p.editor, &p.peer] {
        let g: Game = node.root_as().unwrap();
        assert_eq!((g.round, g.players[1].score), (2, 42));
    }
    assert_eq!(p.editor.snapshot(), p.peer.snapshot());
}

// ----------------------------------------------------------------- errors

/// A type mismatch is a typed error naming the path; a failed update
/// changes nothing and sends nothing.
#[test]
fn type_mismatch_names_the_path_and_changes_nothing() {
    let p = game_pair();
    p.editor.set_path("/players/3/score", "lots").unwrap();
    p.settle();
    let err = p.peer.root_as::<Game>().unwrap_err();
    assert_eq!(
        err,
        Error::Type {
            path: "/players/3/score".into(),
            expected: "i64".into(),
            found: "string".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "/players/3/score: expected i64, found string"
    );

    let before = p.editor.snapshot();
    let mut ran = false;
    let err = p
        .editor
        .update(|g: &mut Game| {
            ran = true;
            g.round = 100;
        })
        .unwrap_err();
    assert!(matches!(err, Error::Type { .. }), "{err}");
    assert!(!ran, "the closure never sees a value that did not read");
    assert_eq!(p.editor.snapshot(), before);
    assert_eq!(p.take(), Sent::default());

    // Other failures name their path too.
    p.editor
        .set_path("/players/1/pos", json!({"x": 1.0}))
        .unwrap();
    p.editor.set_path("/players/3/score", 0).unwrap();
    let err = p.editor.root_as::<Game>().unwrap_err();
    assert_eq!(err.to_string(), "/players/1/pos: missing field `y`");
    p.editor.set_path("/players/1/pos/y", 2).unwrap();
    p.editor.set_path("/phase", "Paused").unwrap();
    let err = p.editor.root_as::<Game>().unwrap_err();
    assert!(
        matches!(&err, Error::Convert { path, .. } if path == "/phase"),
        "{err}"
    );
    let err = p.editor.root_as::<Vec<i64>>().unwrap_err();
    assert_eq!(err.to_string(), "(root): expected array, found map");
    // An integer read as a float is fine.
    p.editor.set_path("/phase", "Lobby").unwrap();
    assert_eq!(p.editor.root_as::<Game>().unwrap().players[1].pos.y, 2.0);
}

/// Values the store cannot hold are refused before anything is written.
#[test]
fn unrepresentable_values_are_refused() {
    let p = Pair::new();
    let err = p.editor.set_root_from(&u64::MAX).unwrap_err();
    assert!(matches!(err, Error::Convert { .. }), "{err}");
    let err = p
        .editor
        .set_root_from(&HashMap::from([((1, 2), 3)]))
        .unwrap_err();
    assert!(matches!(err, Error::Type { .. }), "{err}");
    assert!(p.editor.root().is_null());
    assert_eq!(p.take(), Sent::default());
    // `Input::from_serialize` refuses them alike, as its docs say.
    let err = Input::from_serialize(&u64::MAX).unwrap_err();
    assert!(matches!(err, Error::Convert { .. }), "{err}");
    let err = Input::from_serialize(&BTreeMap::from([((1, 2), 3)])).unwrap_err();
    assert!(matches!(err, Error::Type { .. }), "{err}");
}

/// A cycle cannot be read as a type, and does not overflow the stack.
#[test]
fn cycles_are_refused() {
    let p = Pair::new();
    let root = p.editor.set_root(json!({"next": null})).unwrap();
    let root = root.as_map().unwrap();
    root.set("next", root).unwrap();
    let err = p.editor.root_as::<serde_json::Value>().unwrap_err();
    assert_eq!(err, Error::Cycle(root_id(&p.editor)));
}

// ----------------------------------------------------------------- locks

/// `update` of an object locked by another node fails with `NotOwner`
/// before any write is sent; an update that writes only objects outside
/// the lock succeeds.
#[test]
fn update_of_a_locked_object_fails_with_not_owner() {
    let p = game_pair();
    let root = p.peer.root_map().unwrap();
    // The grant needs the editor's acknowledgement: deliver while waiting.
    let mut lock = std::pin::pin!(p.peer.lock(&root));
    let guard = loop {
        p.deliver();
        if let Some(granted) = lock.as_mut().now_or_never() {
            break granted.unwrap();
        }
    };
    p.settle();
    let before = p.editor.snapshot();
    let err = p
        .editor
        .update(|g: &mut Game| {
            g.players[0].score = 1; // a nested object: not locked
            g.round = 2; // the root: locked by the peer
        })
        .unwrap_err();
    assert_eq!(
        err.engine(),
        Some(&EngineError::NotOwner(root_id(&p.editor)))
    );
    assert_eq!(p.take(), Sent::default(), "nothing was sent");
    assert_eq!(p.editor.snapshot(), before, "nothing was applied");
    // Writing only inside the nested object is allowed.
    p.editor
        .update(|g: &mut Game| g.players[0].score = 1)
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    drop(guard);
    p.deliver();
    p.editor.update(|g: &mut Game| g.round = 2).unwrap();
    p.deliver();
    assert_eq!(p.peer.root_as::<Game>().unwrap().round, 2);
}

// --------------------------------------------------------------- watching

/// A typed watch fires once per change batch with the fresh value, for
/// remote and local changes, and not for keys the type does not read.
#[test]
fn watch_fires_once_per_batch_with_the_fresh_value() {
    let p = game_pair();
    let seen = Arc::new(Mutex::new(Vec::<Game>::new()));
    let log = seen.clone();
    let watch = p
        .peer
        .watch(move |g: &Game| log.lock().unwrap().push(g.clone()));
    let take = || std::mem::take(&mut *seen.lock().unwrap());

    p.editor
        .update(|g: &mut Game| {
            g.round = 2;
            g.players[1].score = 3;
            g.events.push("bob scored".into());
        })
        .unwrap();
    p.deliver();
    let got = take();
    assert_eq!(got.len(), 1, "one call for a batch of three writes");
    assert_eq!(got[0], p.editor.root_as::<Game>().unwrap());

    // Undeclared keys are not what `Game` reads.
    p.editor.set_path("/extra", 1).unwrap();
    p.deliver();
    assert!(take().is_empty());

    // Local changes too, and a new root.
    p.peer.update(|g: &mut Game| g.round = 5).unwrap();
    assert_eq!(take().iter().map(|g| g.round).collect::<Vec<_>>(), [5]);
    let mut g = game();
    g.round = 7;
    p.editor
        .set_root(Input::from_serialize(&g).unwrap())
        .unwrap();
    p.deliver();
    assert_eq!(take(), [g]);

    // States that do not read as `Game` are skipped.
    p.editor.set_path("/round", "x").unwrap();
    p.deliver();
    assert!(take().is_empty());
    p.editor.set_path("/round", 8).unwrap();
    p.deliver();
    assert_eq!(take().len(), 1);

    drop(watch);
    p.editor.update(|g: &mut Game| g.round = 9).unwrap();
    p.deliver();
    assert!(take().is_empty());
}

/// A watch on a handle follows that object only.
#[test]
fn handle_watch_follows_its_object() {
    let p = game_pair();
    let pos = p.peer.get("/players/1/pos").unwrap().as_object().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Pos>::new()));
    let log = seen.clone();
    let _w = pos.watch(move |p: &Pos| log.lock().unwrap().push(p.clone()));
    p.editor.update(|g: &mut Game| g.round = 2).unwrap();
    p.editor
        .update(|g: &mut Game| g.players[1].pos = Pos { x: 1.0, y: 2.0 })
        .unwrap();
    p.deliver();
    assert_eq!(*seen.lock().unwrap(), [Pos { x: 1.0, y: 2.0 }]);
}

// ----------------------------------------------------------- JSON pointers

#[test]
fn json_pointers_read_and_write() {
    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"elements": [1, 2], "a/b": {"~": true}}))
        .unwrap();
    assert_eq!(b.get("/elements/0"), Some(Value::Int(1)));
    assert_eq!(b.get("/a~1b/~0"), Some(Value::Bool(true)));
    assert_eq!(b.get(""), Some(b.root()));
    for missing in [
        "/nope",
        "/elements/2",
        "/elements/01",
        "/elements/x",
        "elements",
        "/a~2b",
    ] {
        assert_eq!(b.get(missing), None, "{missing}");
    }
    a.set_path("/elements/1", 5).unwrap();
    a.set_path("/elements/-", 6).unwrap();
    a.set_path("/elements/3", 7).unwrap();
    a.set_path("/new", json!({"x": [1]})).unwrap();
    a.set_path("/new/x/0", "y").unwrap();
    assert_eq!(
        b.root().to_json().unwrap(),
        json!({"elements": [1, 5, 6, 7], "a/b": {"~": true}, "new": {"x": ["y"]}})
    );
    assert!(matches!(
        a.set_path("/missing/x", 1),
        Err(Error::Path { .. })
    ));
    assert!(matches!(
        a.set_path("/elements/x", 1),
        Err(Error::Path { .. })
    ));
    assert!(matches!(a.set_path("nope", 1), Err(Error::Path { .. })));
    let err = a.set_path("/elements/9", 1).unwrap_err();
    assert!(
        matches!(
            err.engine(),
            Some(EngineError::IndexOutOfBounds {
                index: 9,
                len: 4,
                ..
            })
        ),
        "{err:?}"
    );
    a.set_path("", 3).unwrap();
    assert_eq!(b.root(), Value::Int(3));
    assert_eq!(a.snapshot(), b.snapshot());
}

// ------------------------------------------------------- every serde shape

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Meters(f64);

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Unit;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Shape {
    Empty,
    Circle(Meters),
    Rect(i32, i32),
    Poly { points: Vec<(i8, i8)>, closed: bool },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Everything {
    flag: bool,
    small: u8,
    big: i64,
    wide: i128,
    ratio: f32,
    letter: char,
    text: String,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    plain_bytes: Vec<u8>,
    unit: (),
    unit_struct: Unit,
    newtype: Meters,
    tuple: (i64, String, bool),
    shapes: Vec<Shape>,
    by_name: HashMap<String, Shape>,
    by_id: BTreeMap<u32, String>,
    by_kind: BTreeMap<Kind, i64>,
    maybe: Option<Box<Everything>>,
    maybes: Vec<Option<i64>>,
    map_of_options: BTreeMap<String, Option<i64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    skipped_when_empty: Vec<i64>,
    json: serde_json::Value,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Red,
    Blue,
}

fn everything() -> Everything {
    Everything {
        flag: true,
        small: 255,
        big: i64::MIN,
        wide: -5,
        ratio: 0.5,
        letter: 'λ',
        text: "hello".into(),
        blob: vec![0, 1, 255],
        plain_bytes: vec![9, 8],
        unit: (),
        unit_struct: Unit,
        newtype: Meters(2.5),
        tuple: (1, "two".into(), false),
        shapes: vec![
            Shape::Empty,
            Shape::Circle(Meters(1.0)),
            Shape::Rect(2, 3),
            Shape::Poly {
                points: vec![(0, 0), (1, -1)],
                closed: true,
            },
        ],
        by_name: [("sun".to_string(), Shape::Circle(Meters(9.0)))].into(),
        by_id: [(7, "seven".to_string()), (11, "eleven".to_string())].into(),
        by_kind: [(Kind::Red, 1), (Kind::Blue, 2)].into(),
        maybe: Some(Box::new(Everything {
            maybe: None,
            shapes: vec![],
            ..everything_leaf()
        })),
        maybes: vec![Some(1), None, Some(3)],
        map_of_options: [("none".to_string(), None), ("one".to_string(), Some(1))].into(),
        skipped_when_empty: vec![],
        json: json!({"any": [1, "json", null, {"deep": true}]}),
    }
}

fn everything_leaf() -> Everything {
    Everything {
        flag: false,
        small: 0,
        big: 0,
        wide: 0,
        ratio: 0.0,
        letter: 'a',
        text: String::new(),
        blob: vec![],
        plain_bytes: vec![],
        unit: (),
        unit_struct: Unit,
        newtype: Meters(0.0),
        tuple: (0, String::new(), true),
        shapes: vec![],
        by_name: HashMap::new(),
        by_id: BTreeMap::new(),
        by_kind: BTreeMap::new(),
        maybe: None,
        maybes: vec![],
        map_of_options: BTreeMap::new(),
        skipped_when_empty: vec![1],
        json: json!(null),
    }
}

/// Every serde shape round-trips through the store and the wire, is stored
/// as serde_json would lay it out (bytes as bytes), and writing it again
/// sends nothing.
#[test]
fn every_serde_shape_round_trips() {
    for (wire, net) in crate::networks() {
        let a = net.join("a");
        let b = net.join("b");
        let v = everything();
        a.set_root_from(&v).unwrap();
        assert_eq!(b.root_as::<Everything>().unwrap(), v, "{wire}");
        assert_eq!(a.get("/blob"), Some(Value::Bytes(vec![0, 1, 255].into())));
        assert_eq!(a.get("/shapes/0"), Some(Value::from("Empty")));
        assert_eq!(a.get("/shapes/2/Rect/1"), Some(Value::Int(3)));
        assert_eq!(a.get("/by_id/11"), Some(Value::from("eleven")));
        assert_eq!(a.get("/map_of_options/none"), Some(Value::Null));
        assert_eq!(a.get("/maybe/maybe"), None, "None is an absent key");
        assert_eq!(a.get("/skipped_when_empty"), None);
        assert_eq!(a.get("/maybe/skipped_when_empty/0"), Some(Value::Int(1)));
        // The layout is serde_json's, bytes aside.
        let mut expected = serde_json::to_value(&v).unwrap();
        expected["maybe"].as_object_mut().unwrap().remove("maybe");
        assert_eq!(b.root().to_json().unwrap(), expected, "{wire}");
        // Emptying a skipped field deletes its key.
        b.update(|e: &mut Everything| e.maybe.as_mut().unwrap().skipped_when_empty.clear())
            .unwrap();
        assert_eq!(a.get("/maybe/skipped_when_empty"), None);
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

// ------------------------------------------------------------ properties

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Doc {
    id: u32,
    name: String,
    tags: Vec<String>,
    items: Vec<Item>,
    meta: BTreeMap<String, i64>,
    choice: Choice,
    maybe: Option<Item>,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    pair: (i64, bool),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Item {
    n: i64,
    f: f64,
    label: Option<String>,
    choice: Choice,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Choice {
    A,
    B(i64),
    C { x: i32, s: String },
    D(u8, u8),
}

fn arb_choice() -> impl Strategy<Value = Choice> {
    prop_oneof![
        Just(Choice::A),
        any::<i64>().prop_map(Choice::B),
        (any::<i32>(), "[a-c]{0,3}").prop_map(|(x, s)| Choice::C { x, s }),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Choice::D(a, b)),
    ]
}

fn arb_item() -> impl Strategy<Value = Item> {
    (
        -5i64..5,
        prop_oneof![Just(0.0), Just(-1.5), -1e6f64..1e6],
        proptest::option::of("[xy]{0,2}"),
        arb_choice(),
    )
        .prop_map(|(n, f, label, choice)| Item {
            n,
            f,
            label,
            choice,
        })
}

fn arb_doc() -> impl Strategy<Value = Doc> {
    (
        any::<u32>(),
        "[a-z]{0,4}",
        proptest::collection::vec("[a-c]{1,2}", 0..5),
        proptest::collection::vec(arb_item(), 0..5),
        proptest::collection::btree_map("[a-d]", -3i64..3, 0..4),
        arb_choice(),
        proptest::option::of(arb_item()),
        proptest::collection::vec(any::<u8>(), 0..4),
        (any::<i64>(), any::<bool>()),
    )
        .prop_map(
            |(id, name, tags, items, meta, choice, maybe, blob, pair)| Doc {
                id,
                name,
                tags,
                items,
                meta,
                choice,
                maybe,
                blob,
                pair,
            },
        )
}

/// One random edit, applied inside an `update` closure.
#[derive(Clone, Debug)]
enum Edit {
    Replace(Doc),
    Rename(String),
    PushTag(String),
    PopTag,
    InsertItem(usize, Item),
    RemoveItem(usize),
    SetItemN(usize, i64),
    SetItemChoice(usize, Choice),
    SetMeta(String, i64),
    RemoveMeta(String),
    SetChoice(Choice),
    SetMaybe(Option<Item>),
    Reverse,
    SortItems,
    RotateItems(usize),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => arb_doc().prop_map(Edit::Replace),
        1 => "[a-z]{0,4}".prop_map(Edit::Rename),
        2 => "[a-c]{1,2}".prop_map(Edit::PushTag),
        1 => Just(Edit::PopTag),
        2 => (0usize..6, arb_item()).prop_map(|(i, it)| Edit::InsertItem(i, it)),
        2 => (0usize..6).prop_map(Edit::RemoveItem),
        3 => (0usize..6, -5i64..5).prop_map(|(i, n)| Edit::SetItemN(i, n)),
        1 => (0usize..6, arb_choice()).prop_map(|(i, c)| Edit::SetItemChoice(i, c)),
        2 => ("[a-d]", -3i64..3).prop_map(|(k, v)| Edit::SetMeta(k, v)),
        1 => "[a-d]".prop_map(Edit::RemoveMeta),
        1 => arb_choice().prop_map(Edit::SetChoice),
        1 => proptest::option::of(arb_item()).prop_map(Edit::SetMaybe),
        1 => Just(Edit::Reverse),
        1 => Just(Edit::SortItems),
        1 => (0usize..6).prop_map(Edit::RotateItems),
    ]
}

impl Edit {
    fn apply(&self, d: &mut Doc) {
        let n = d.items.len();
        match self.clone() {
            Edit::Replace(new) => *d = new,
            Edit::Rename(s) => d.name = s,
            Edit::PushTag(t) => d.tags.push(t),
            Edit::PopTag => drop(d.tags.pop()),
            Edit::InsertItem(i, it) => d.items.insert(i.min(n), it),
            Edit::RemoveItem(i) if i < n => drop(d.items.remove(i)),
            Edit::SetItemN(i, v) if i < n => d.items[i].n = v,
            Edit::SetItemChoice(i, c) if i < n => d.items[i].choice = c,
            Edit::SetMeta(k, v) => drop(d.meta.insert(k, v)),
            Edit::RemoveMeta(k) => drop(d.meta.remove(&k)),
            Edit::SetChoice(c) => d.choice = c,
            Edit::SetMaybe(m) => d.maybe = m,
            Edit::Reverse => d.items.reverse(),
            Edit::SortItems => d.items.sort_by_key(|it| (it.n, it.label.clone())),
            Edit::RotateItems(k) if n > 0 => d.items.rotate_left(k % n),
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// `set_root_from` then `root_as` returns the value, on the writer and
    /// on the other node; writing it again sends nothing.
    #[test]
    fn prop_round_trip(doc in arb_doc()) {
        let p = Pair::new();
        p.editor.set_root_from(&doc).unwrap();
        p.deliver();
        prop_assert_eq!(p.editor.root_as::<Doc>().unwrap(), doc.clone());
        prop_assert_eq!(p.peer.root_as::<Doc>().unwrap(), doc.clone());
        p.take();
        p.editor.set_root_from(&doc).unwrap();
        prop_assert_eq!(p.take(), Sent::default());
    }

    /// Random edits through `update`, by random nodes of three: after each,
    /// every node reads the editor's value (and the model's), a no-op
    /// update sends nothing, and at the end the snapshots are identical.
    #[test]
    fn prop_updates_converge(
        start in arb_doc(),
        edits in proptest::collection::vec((0usize..3, arb_edit()), 1..12),
    ) {
        let net = LocalNetwork::new();
        let nodes = [net.join("n0"), net.join("n1"), net.join("n2")];
        nodes[0].set_root_from(&start).unwrap();
        let mut model = start;
        for (who, edit) in &edits {
            let editor = &nodes[*who];
            let after = editor
                .update(|d: &mut Doc| {
                    edit.apply(d);
                    d.clone()
                })
                .unwrap();
            edit.apply(&mut model);
            prop_assert_eq!(&after, &model);
            for node in &nodes {
                prop_assert_eq!(node.root_as::<Doc>().unwrap(), model.clone(), "{:?}", edit);
            }
        }
        let snapshot = nodes[0].snapshot();
        for node in &nodes[1..] {
            prop_assert_eq!(node.snapshot(), snapshot.clone());
        }
    }

    /// Each single edit costs no more writes than the diff rules promise.
    #[test]
    fn prop_single_edits_are_minimal(start in arb_doc(), edit in arb_edit()) {
        let p = Pair::new();
        p.editor.set_root_from(&start).unwrap();
        p.settle();
        let mut expected = start.clone();
        edit.apply(&mut expected);
        p.editor.update(|d: &mut Doc| edit.apply(d)).unwrap();
        let sent = p.take();
        prop_assert!(sent.messages <= 1);
        let bound = match &edit {
            Edit::Replace(_) | Edit::Reverse | Edit::SortItems => usize::MAX,
            // A new item is one insert plus the objects it is made of.
            // A new item: one insert (or set) and the objects it is made
            // of (the item, and at most two for its choice).
            Edit::InsertItem(..) => 4,
            // An item replacing an item: its four fields, the choice by
            // the rule below.
            Edit::SetMaybe(Some(_)) => 6,
            // The same variant: at most its two fields; another variant:
            // one set and at most two new objects.
            Edit::SetItemChoice(..) | Edit::SetChoice(_) => 3,
            // Moves of what is outside the longest run in order: at most
            // two of four.
            Edit::RotateItems(_) => 2,
            _ => 1,
        };
        prop_assert!(sent.writes() <= bound, "{:?}: {:?}", edit, sent);
        if expected == start {
            prop_assert_eq!(sent, Sent::default());
        }
        prop_assert_eq!(p.peer.root_as::<Doc>().unwrap(), expected);
    }
}

/// The README's typed-mirroring example, verbatim.
#[test]
fn readme_example() -> Result<(), Error> {
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Game {
        round: i64,
        players: Vec<Player>,
        log: Vec<String>,
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Player {
        name: String,
        score: i64,
        team: Option<String>,
    }

    let net = LocalNetwork::new();
    let server = net.join("server");
    let client = net.join("client");
    server.set_root_from(&Game {
        round: 1,
        players: vec![],
        log: vec![],
    })?;

    let _watch =
        client.watch(|g: &Game| println!("round {}, {} players", g.round, g.players.len()));
    // One message: one insert for the player, one insert for the log entry.
    server.update(|g: &mut Game| {
        g.players.push(Player {
            name: "ada".into(),
            score: 0,
            team: None,
        });
        g.log.push("ada joined".into());
    })?;
    // One write, on the player's own object.
    server.update(|g: &mut Game| g.players[0].score += 10)?;
    assert_eq!(client.root_as::<Game>()?.players[0].score, 10);
    assert_eq!(client.get("/players/0/name").unwrap(), "ada");
    Ok(())
}

/// A typed update whose writes do not all fit in one message is refused
/// whole: nothing is written or sent. The same for a fill with an object.
#[test]
fn an_update_too_large_for_one_message_changes_nothing() {
    for format in [WireFormat::Binary, WireFormat::Json] {
        let config = Config::default().max_message_size(4096).wire_format(format);
        let net = LocalNetwork::with_config(config);
        let a = net.join("a");
        let b = net.join("b");
        a.set_root_from(&BTreeMap::from([("k".to_string(), "v".to_string())]))
            .unwrap();
        let err = a
            .update(|m: &mut BTreeMap<String, String>| {
                for i in 0..100 {
                    m.insert(format!("k{i:03}"), "x".repeat(100));
                }
            })
            .unwrap_err();
        assert!(
            matches!(err.engine(), Some(EngineError::TooLarge { .. })),
            "{format:?}: {err}"
        );
        for node in [&a, &b] {
            let now: BTreeMap<String, String> = node.root_as().unwrap();
            assert_eq!(now.len(), 1, "{format:?}: nothing written");
        }
        // A few fit, as before.
        a.update(|m: &mut BTreeMap<String, String>| {
            for i in 0..3 {
                m.insert(format!("k{i:03}"), "x".repeat(100));
            }
        })
        .unwrap();
        assert_eq!(b.root_as::<BTreeMap<String, String>>().unwrap().len(), 4);

        a.set_root(json!({"l": vec![0; 20]})).unwrap();
        let list = a.get("/l").unwrap().as_array().unwrap().clone();
        // The object alone fits; with a reference at each other index it
        // does not.
        list.fill(json!({"big": "y".repeat(3000)}), ..1).unwrap();
        let first = b.get("/l/0");
        let err = list.fill(json!({"big": "y".repeat(3000)}), ..).unwrap_err();
        assert!(
            matches!(err.engine(), Some(EngineError::TooLarge { .. })),
            "{format:?}: {err}"
        );
        assert_eq!(
            b.get("/l/1"),
            Some(Value::Int(0)),
            "{format:?}: nothing filled"
        );
        assert_eq!(b.get("/l/0"), first, "{format:?}: not replaced");
        assert_eq!(a.snapshot(), b.snapshot(), "{format:?}");
    }
}

/// An `f32` field written back unchanged sends nothing, though the float
/// stored is not the `f32` widened (a float, or an integer it rounds).
#[test]
fn an_f32_field_written_back_unchanged_sends_nothing() {
    #[derive(Serialize, Deserialize)]
    struct R {
        r: f32,
        n: f32,
        v: Vec<f32>,
    }
    let net = LocalNetwork::manual(15);
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"r": 0.1, "n": 16_777_217, "v": [0.3, 1e300]}))
        .unwrap();
    net.run();
    a.update(|_: &mut R| {}).unwrap();
    assert_eq!(net.in_flight(), 0, "nothing sent");
    a.update(|r: &mut R| r.r = 0.5).unwrap();
    assert_eq!(net.in_flight(), 1, "a change is sent");
    net.run();
    assert_eq!(b.get("/r"), Some(Value::Float(0.5)));
    assert_eq!(b.get("/n"), Some(Value::Int(16_777_217)));
    assert_eq!(b.get("/v/0"), Some(Value::Float(0.3)));
}

/// An update that changes the variant of an untagged or internally tagged
/// enum deletes the fields of the variant it leaves (serde read the map
/// whole), so the value reads back as written; a struct still leaves the
/// keys it does not know alone.
#[test]
fn an_update_to_another_variant_leaves_no_field_of_the_old_one() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Shape {
        Rect { w: i64, h: i64 },
        Square { w: i64 },
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(tag = "type", deny_unknown_fields)]
    enum Key {
        Code { code: i64, x: i64 },
        Name { name: String },
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Doc {
        shape: Shape,
        key: Key,
    }
    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root_from(&Doc {
        shape: Shape::Rect { w: 1, h: 2 },
        key: Key::Code { code: 2, x: 1 },
    })
    .unwrap();
    a.set_path("/extra", "kept").unwrap();
    a.update(|d: &mut Doc| {
        d.shape = Shape::Square { w: 3 };
        d.key = Key::Name { name: "n".into() };
    })
    .unwrap();
    let now: Doc = b.root_as().unwrap();
    assert_eq!(now.shape, Shape::Square { w: 3 });
    assert_eq!(now.key, Key::Name { name: "n".into() });
    assert_eq!(
        b.get("/key").unwrap().to_json().unwrap(),
        json!({"type": "Name", "name": "n"})
    );
    assert_eq!(
        b.get("/extra"),
        Some(Value::from("kept")),
        "a key no type read"
    );

    // A struct reads its declared fields only: one it never writes, or
    // one read through an alias, stays.
    #[derive(Serialize, Deserialize)]
    struct Cfg {
        name: String,
        #[serde(skip_serializing, default)]
        server_only: String,
        #[serde(alias = "old_size", default)]
        size: i64,
    }
    a.set_root(json!({"name": "a", "server_only": "s", "old_size": 3}))
        .unwrap();
    a.update(|c: &mut Cfg| {
        assert_eq!((c.server_only.as_str(), c.size), ("s", 3));
        c.name = "b".into();
    })
    .unwrap();
    assert_eq!(b.get("/name"), Some(Value::from("b")));
    assert_eq!(b.get("/server_only"), Some(Value::from("s")));
    assert_eq!(b.get("/old_size"), Some(Value::Int(3)));

    // Under such an enum, a struct keeps what it never writes, and keys no
    // type declares, while the enum's variant stays.
    #[derive(Serialize, Deserialize)]
    struct Style {
        color: String,
        #[serde(skip_serializing, default)]
        server_only: String,
    }
    #[derive(Serialize, Deserialize)]
    #[serde(tag = "t")]
    enum Drawn {
        Circle { r: i64, style: Style },
    }
    a.set_root(
        json!({"t": "Circle", "r": 1, "style": {"color": "red", "server_only": "s", "x": 1}}),
    )
    .unwrap();
    a.update(|d: &mut Drawn| {
        let Drawn::Circle { r, style } = d;
        assert_eq!(
            (style.color.as_str(), style.server_only.as_str()),
            ("red", "s")
        );
        *r = 2;
    })
    .unwrap();
    assert_eq!(b.get("/r"), Some(Value::Int(2)));
    assert_eq!(b.get("/style/server_only"), Some(Value::from("s")));
    assert_eq!(b.get("/style/x"), Some(Value::Int(1)));

    // In a list, a variant whose fields the old one shares is no match
    // for the element holding the old one's other fields.
    a.set_root_from(&vec![Shape::Rect { w: 1, h: 2 }]).unwrap();
    a.update(|v: &mut Vec<Shape>| v[0] = Shape::Square { w: 1 })
        .unwrap();
    assert_eq!(b.root_as::<Vec<Shape>>().unwrap(), [Shape::Square { w: 1 }]);
}

/// A large update whose message is packed (binary, many writes) is
/// checked by what the packed message can take, not by the larger bounds
/// of unpacked writes: it goes through as before.
#[test]
fn a_large_update_that_fits_once_packed_is_not_refused() {
    let net = LocalNetwork::with_config(Config::default().max_message_size(1 << 20));
    let a = net.join("a");
    let b = net.join("b");
    let keys: BTreeMap<String, i64> = (0..12_000).map(|i| (format!("k{i:05}"), i)).collect();
    a.set_root_from(&keys).unwrap();
    a.update(|m: &mut BTreeMap<String, i64>| m.values_mut().for_each(|v| *v += 1))
        .unwrap();
    let now: BTreeMap<String, i64> = b.root_as().unwrap();
    assert_eq!(now["k00000"], 1);
    assert_eq!(now["k11999"], 12_000);
}

/// A field the type fills in with a default, absent from the store, is
/// not written by an update that leaves it as it was: such a write could
/// overwrite another node's concurrent one. Changed, it is written.
#[test]
fn a_defaulted_field_left_as_it_was_is_not_written() {
    #[derive(Serialize, Deserialize)]
    struct Cfg {
        name: String,
        #[serde(default)]
        retries: i64,
        #[serde(default)]
        tags: Vec<String>,
    }
    let net = LocalNetwork::manual(16);
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"name": "x"})).unwrap();
    net.run();
    a.update(|_: &mut Cfg| {}).unwrap();
    assert_eq!(net.in_flight(), 0, "nothing sent");
    a.update(|c: &mut Cfg| c.name = "y".into()).unwrap();
    assert_eq!(net.in_flight(), 1);
    net.run();
    assert_eq!(b.get("/retries"), None, "not written");
    a.update(|c: &mut Cfg| c.retries = 3).unwrap();
    net.run();
    assert_eq!(b.get("/retries"), Some(Value::Int(3)));
    assert_eq!(b.get("/tags"), None);
}

/// A float compared with a stored integer: `update` compares it as it
/// read it, bit for bit, so `-0.0` over `0` is written while an integer
/// the read rounded stays when left as read; `set_from` compares exactly,
/// so the float `2^53` over the integer `2^53 + 1` is written.
#[test]
fn a_float_over_a_stored_integer_is_compared_exactly() {
    #[derive(Serialize, Deserialize)]
    struct F {
        x: f64,
        z: f64,
    }
    const BIG: i64 = (1 << 53) + 1;
    let net = LocalNetwork::manual(17);
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"x": 0, "z": BIG})).unwrap();
    net.run();
    a.update(|_: &mut F| {}).unwrap();
    assert_eq!(net.in_flight(), 0, "a no-op sends nothing");
    a.update(|f: &mut F| f.z = 9_007_199_254_740_992.0).unwrap();
    assert_eq!(net.in_flight(), 0, "left as read: nothing sent");
    a.update(|f: &mut F| f.x = -0.0).unwrap();
    assert_eq!(net.in_flight(), 1, "-0.0 over 0 is sent");
    net.run();
    assert_eq!(b.get("/x"), Some(Value::Float(-0.0)));
    assert_eq!(b.get("/z"), Some(Value::Int(BIG)), "kept");

    a.set_root_from(&F {
        x: -0.0,
        z: 9_007_199_254_740_992.0,
    })
    .unwrap();
    assert_eq!(net.in_flight(), 1, "2^53 over 2^53 + 1 is sent");
    net.run();
    assert_eq!(b.get("/z"), Some(Value::Float(9_007_199_254_740_992.0)));
    a.set_root(json!({"x": 0, "z": 2})).unwrap();
    net.run();
    a.set_root_from(&F { x: 0.0, z: 2.0 }).unwrap();
    assert_eq!(net.in_flight(), 0, "an integer is the float of its value");
}

/// A numeric or boolean map key reads only as the serializer writes it:
/// `"+1"` or `"01"` next to `"1"` would read as one key, which an update
/// would then write back as one, deleting the other writer's. Such a key
/// is a type error naming it, and an update of it changes nothing.
#[test]
fn a_map_key_reads_only_in_the_form_it_is_written() {
    let p = Pair::new();
    for (stored, key) in [
        (json!({"+1": "plus", "1": "one", "2": "two"}), "+1"),
        (json!({"01": "zero-one", "1": "one"}), "01"),
    ] {
        p.editor.set_root(stored.clone()).unwrap();
        p.settle();
        let err = p
            .peer
            .root_as::<BTreeMap<u32, String>>()
            .expect_err("a key in another form");
        assert!(
            matches!(&err, Error::Type { found, .. } if found.contains(key)),
            "{key}: {err}"
        );
        let err = p
            .editor
            .update(|_: &mut BTreeMap<u32, String>| {})
            .unwrap_err();
        assert!(matches!(err, Error::Type { .. }), "{key}: {err}");
        assert_eq!(p.take(), Sent::default(), "{key}");
        assert_eq!(p.peer.root().to_json().unwrap(), stored, "{key}");
    }
    p.editor.set_root(json!({"-0": 1, "True": 2})).unwrap();
    p.settle();
    assert!(p.peer.root_as::<BTreeMap<i64, i64>>().is_err());
    assert!(p.peer.root_as::<BTreeMap<bool, i64>>().is_err());
    p.editor
        .set_root(json!({"-1": 1, "0": 2, "true": 3}))
        .unwrap();
    p.settle();
    assert_eq!(
        p.peer.root_as::<BTreeMap<String, i64>>().unwrap().len(),
        3,
        "keys in their written form read"
    );
    p.editor.set_root(json!({"-1": 1, "0": 2})).unwrap();
    p.settle();
    assert_eq!(
        p.peer.root_as::<BTreeMap<i64, i64>>().unwrap(),
        BTreeMap::from([(-1, 1), (0, 2)])
    );
}

/// An update removes only the map entries the value it read held: a key
/// that does not read back as itself (a key type of its own) or that a
/// flattened struct skips stays, and a no-op update sends nothing.
#[test]
fn an_update_leaves_map_keys_its_value_did_not_hold() {
    /// A key that reads in lower case.
    #[derive(Serialize, Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Lower(String);
    impl<'de> Deserialize<'de> for Lower {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            String::deserialize(d).map(|s| Lower(s.to_lowercase()))
        }
    }
    #[derive(Serialize, Deserialize)]
    struct Outer {
        x: i64,
        #[serde(flatten)]
        inner: Inner,
    }
    #[derive(Serialize, Deserialize)]
    struct Inner {
        y: i64,
    }

    let p = Pair::new();
    p.editor.set_root(json!({"A": 1, "b": 2})).unwrap();
    p.settle();
    p.editor.update(|_: &mut BTreeMap<Lower, i64>| {}).unwrap();
    assert_eq!(p.take(), Sent::default(), "a no-op sends nothing");
    p.editor
        .update(|m: &mut BTreeMap<Lower, i64>| m.remove(&Lower("b".into())))
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapDelete", 1)]));
    assert_eq!(p.peer.root().to_json().unwrap(), json!({"A": 1}));

    p.editor
        .set_root(json!({"x": 1, "y": 2, "note": "hi"}))
        .unwrap();
    p.settle();
    p.editor.update(|_: &mut Outer| {}).unwrap();
    assert_eq!(p.take(), Sent::default(), "a no-op sends nothing");
    p.editor.update(|o: &mut Outer| o.inner.y = 3).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    assert_eq!(
        p.peer.root().to_json().unwrap(),
        json!({"x": 1, "y": 3, "note": "hi"})
    );
}

/// An object reached through two references is read as two copies and
/// written once: copies changed differently are refused before anything
/// is applied or sent (a diff of each against the same stored state
/// would pop through one and push at an index the pop removed); copies
/// changed alike are one change; one copy changed is that change.
#[test]
fn copies_of_a_shared_object_write_it_once() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Two {
        a: Vec<i64>,
        b: Vec<i64>,
    }
    let p = Pair::new();
    p.editor.set_root(json!({"a": [1, 2, 3]})).unwrap();
    let shared = p.editor.get("/a").unwrap().as_array().unwrap().clone();
    p.editor.root_map().unwrap().set("b", &shared).unwrap();
    p.settle();
    let before = p.editor.snapshot();

    let err = p
        .editor
        .update(|t: &mut Two| {
            t.a.pop();
            t.b.push(9);
        })
        .unwrap_err();
    assert!(
        matches!(&err, Error::Convert { message, .. } if message.contains("/a and /b")),
        "{err}"
    );
    assert_eq!(p.editor.snapshot(), before, "nothing applied");
    assert_eq!(p.take(), Sent::default(), "nothing sent");

    p.editor
        .update(|t: &mut Two| {
            t.a.push(7);
            t.b.push(7);
        })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListInsert", 1)]));
    p.editor
        .update(|t: &mut Two| {
            t.b.remove(0);
        })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListDelete", 1)]));
    p.editor.update(|t: &mut Two| t.a[0] = 5).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListSet", 1)]));
    let both = vec![5, 3, 7];
    assert_eq!(
        p.peer.root_as::<Two>().unwrap(),
        Two {
            a: both.clone(),
            b: both
        }
    );
    assert_eq!(p.peer.snapshot(), p.editor.snapshot());
}

/// A typed reorder moves elements: a reverse of six is five moves, a
/// rotation one, and an element both moved and changed is moved and
/// written once, where rewriting each position would write every field
/// of every element.
#[test]
fn a_typed_reorder_moves_elements() {
    let p = Pair::new();
    let six: Vec<Player> = (0..6).map(|i| player(&format!("p{i}"), i)).collect();
    p.editor.set_root_from(&six).unwrap();
    p.settle();
    let mut model = six.clone();
    type Case = (&'static str, fn(&mut Vec<Player>), Sent);
    let cases: [Case; 4] = [
        ("reverse", |v| v.reverse(), Sent::of(1, &[("ListMove", 5)])),
        (
            "rotate",
            |v| v.rotate_left(1),
            Sent::of(1, &[("ListMove", 1)]),
        ),
        (
            "sort and change one",
            |v| {
                v.sort_by(|a, b| a.name.cmp(&b.name));
                v[2].score = 20;
            },
            Sent::of(1, &[("ListMove", 4), ("MapSet", 1)]),
        ),
        (
            "remove one, move another",
            |v| {
                v.remove(1);
                v.swap(0, 4);
            },
            Sent::of(1, &[("ListDelete", 1), ("ListMove", 2)]),
        ),
    ];
    for (name, edit, expected) in cases {
        let before: Vec<Player> = p.peer.root_as().unwrap();
        edit(&mut model);
        p.editor.update(|v: &mut Vec<Player>| edit(v)).unwrap();
        // A reorder moves what is outside the longest run left in order.
        assert_eq!(p.take(), expected, "{name} of {before:?}");
        assert_eq!(p.peer.root_as::<Vec<Player>>().unwrap(), model, "{name}");
    }
    p.editor.set_root_from(&vec![3, 1, 2, 5, 4]).unwrap();
    p.settle();
    p.editor.update(|v: &mut Vec<i64>| v.sort()).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListMove", 2)]));
    assert_eq!(p.peer.root_as::<Vec<i64>>().unwrap(), [1, 2, 3, 4, 5]);
}

/// A typed sort made while another node edits a field of one element:
/// the sort moves the elements, so the edit stays with its element
/// whichever node's stamp is higher, and the replicas converge.
#[test]
fn a_typed_sort_keeps_a_concurrent_edit_on_its_element() {
    for (sorter, editor) in [("a-sorter", "z-editor"), ("z-sorter", "a-editor")] {
        for (wire, net) in crate::manual_networks(40) {
            let what = format!("{wire}, {sorter} and {editor}");
            let s = net.join(sorter);
            let e = net.join(editor);
            let five: Vec<Player> = (0..5).map(|i| player(&format!("p{i}"), i)).collect();
            s.set_root_from(&five).unwrap();
            net.run();
            s.set_online(false);
            s.update(|v: &mut Vec<Player>| v.sort_by_key(|p| std::cmp::Reverse(p.score)))
                .unwrap();
            e.update(|v: &mut Vec<Player>| {
                let p0 = v.iter_mut().find(|p| p.name == "p0").unwrap();
                p0.score = 1000;
            })
            .unwrap();
            net.run();
            s.set_online(true);
            net.run();
            assert_eq!(s.snapshot(), e.snapshot(), "{what}");
            let now: Vec<Player> = s.root_as().unwrap();
            let names: Vec<&str> = now.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["p4", "p3", "p2", "p1", "p0"], "{what}");
            let scores: Vec<i64> = now.iter().map(|p| p.score).collect();
            assert_eq!(scores, [4, 3, 2, 1, 1000], "{what}: the edit is on p0");
        }
    }
}

/// The moves of a typed reorder count in the check that the whole update
/// fits in one message: an update whose write and moves do not fit
/// together is refused before its write is applied.
#[test]
fn a_typed_reorder_too_large_with_the_rest_changes_nothing() {
    #[derive(Serialize, Deserialize)]
    struct S {
        s: String,
        v: Vec<i64>,
    }
    for format in [WireFormat::Binary, WireFormat::Json] {
        // The string alone fits, and the reverse alone (20 moves); the
        // two together do not.
        let config = Config::default().max_message_size(8192).wire_format(format);
        let net = LocalNetwork::with_config(config);
        let a = net.join("a");
        let b = net.join("b");
        a.set_root_from(&S {
            s: String::new(),
            v: (0..21).collect(),
        })
        .unwrap();
        let before = b.snapshot();
        let err = a
            .update(|s: &mut S| {
                s.s = "x".repeat(7500);
                s.v.reverse();
            })
            .unwrap_err();
        assert!(
            matches!(err.engine(), Some(EngineError::TooLarge { .. })),
            "{format:?}: {err}"
        );
        assert!(a.snapshot() == before, "{format:?}: nothing applied");
        assert!(b.snapshot() == before, "{format:?}: nothing sent");
        a.update(|s: &mut S| s.v.reverse()).unwrap();
        assert_eq!(b.get("/v/0"), Some(Value::Int(20)), "{format:?}");
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Member {
    name: String,
    score: i64,
    team: Option<String>,
}

fn member(name: &str, score: i64) -> Member {
    Member {
        name: name.into(),
        score,
        team: None,
    }
}

/// An update that removes or inserts an element and changes another
/// writes the change on the element it changed: the removed element is
/// deleted and the inserted one inserted, where pairing what is left in
/// order wrote one element's value over another's.
#[test]
fn a_removal_or_insertion_with_a_change_writes_the_changed_element() {
    let p = Pair::new();
    p.editor
        .set_root_from(&vec![member("ann", 1), member("bob", 2)])
        .unwrap();
    p.settle();
    let bob = p.peer.get("/1").unwrap();
    p.editor
        .update(|v: &mut Vec<Member>| {
            v.remove(0);
            v[0].score = 3;
        })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListDelete", 1), ("MapSet", 1)]));
    assert_eq!(p.peer.get("/0"), Some(bob.clone()), "bob's own object");
    assert_eq!(p.peer.root_as::<Vec<Member>>().unwrap(), [member("bob", 3)]);

    p.editor
        .update(|v: &mut Vec<Member>| {
            v.insert(0, member("cy", 7));
            v[1].score += 1;
        })
        .unwrap();
    assert_eq!(
        p.take(),
        Sent::of(1, &[("ListInsert", 1), ("NewMap", 1), ("MapSet", 1)])
    );
    assert_eq!(p.peer.get("/1"), Some(bob), "bob's own object");

    // A reverse with two of five changed, each between two kept ones,
    // moves them, and writes each change on its own element.
    let five: Vec<Member> = (0..5).map(|i| member(&format!("p{i}"), i)).collect();
    p.editor.set_root_from(&five).unwrap();
    p.settle();
    let (p1, p3) = (p.peer.get("/1").unwrap(), p.peer.get("/3").unwrap());
    p.editor
        .update(|v: &mut Vec<Member>| {
            v.reverse();
            v[1].score = 30;
            v[3].score = 10;
        })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListMove", 4), ("MapSet", 2)]));
    assert_eq!(p.peer.get("/1"), Some(p3));
    assert_eq!(p.peer.get("/3"), Some(p1));
    // Changed at the ends, before and after the one kept element, each is
    // written where it stands: a change never buys a move.
    p.editor
        .set_root_from(&vec![member("p0", 0), member("p1", 1), member("p2", 2)])
        .unwrap();
    p.settle();
    let p0 = p.peer.get("/0").unwrap();
    p.editor
        .update(|v: &mut Vec<Member>| {
            v.reverse();
            v[0].score = 20;
            v[2].score = 10;
        })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 4)]));
    assert_eq!(p.peer.get("/0"), Some(p0));
    assert_eq!(
        p.peer.root_as::<Vec<Member>>().unwrap(),
        [member("p2", 20), member("p1", 1), member("p0", 10)]
    );

    // Scalars: the change goes to the element between the same neighbours.
    p.editor.set_root_from(&vec![1, 2, 3, 4]).unwrap();
    p.settle();
    p.editor
        .update(|v: &mut Vec<i64>| {
            v.remove(0);
            v[1] = 9;
        })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListDelete", 1), ("ListSet", 1)]));
    assert_eq!(p.peer.root_as::<Vec<i64>>().unwrap(), [2, 9, 4]);
}

/// Another node's concurrent edit of an element stays on it through an
/// update that removes the element before it and changes it.
#[test]
fn a_concurrent_edit_stays_on_its_element_through_a_removal_and_a_change() {
    for (wire, net) in crate::manual_networks(7) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root_from(&vec![member("ann", 1), member("bob", 2)])
            .unwrap();
        net.run();
        a.update(|v: &mut Vec<Member>| {
            v.remove(0);
            v[0].score = 3;
        })
        .unwrap();
        b.update(|v: &mut Vec<Member>| v[1].team = Some("red".into()))
            .unwrap();
        net.run();
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
        let mut bob = member("bob", 3);
        bob.team = Some("red".into());
        assert_eq!(a.root_as::<Vec<Member>>().unwrap(), [bob], "{wire}");
    }
}

/// Removing a shared object from a `Vec` while changing its neighbour
/// writes the neighbour, not the shared object, which the update left as
/// it was through its other reference.
#[test]
fn removing_a_shared_element_and_changing_its_neighbour_leaves_the_shared_object() {
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct M {
        n: i64,
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Doc {
        a: M,
        list: Vec<M>,
    }
    let p = Pair::new();
    p.editor
        .set_root(json!({"a": {"n": 1}, "list": [{"n": 2}]}))
        .unwrap();
    let x = p.editor.get("/a").unwrap();
    p.editor
        .get("/list")
        .unwrap()
        .as_array()
        .unwrap()
        .insert(0, x)
        .unwrap();
    p.settle();
    p.editor
        .update(|d: &mut Doc| {
            d.list.remove(0);
            d.list[0].n = 7;
        })
        .unwrap();
    let want = Doc {
        a: M { n: 1 },
        list: vec![M { n: 7 }],
    };
    assert_eq!(p.editor.root_as::<Doc>().unwrap(), want);
    assert_eq!(p.take(), Sent::of(1, &[("ListDelete", 1), ("MapSet", 1)]));
    assert_eq!(p.peer.root_as::<Doc>().unwrap(), want);
}

/// Past the bound on the pairs scored, what is left is paired in order;
/// the value written is still the value, and a shared object the other
/// reference left as it was is still not written through.
#[test]
fn a_large_pairing_in_order_writes_the_value_and_no_shared_object() {
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Doc {
        a: Member,
        list: Vec<Member>,
    }
    let p = Pair::new();
    let list: Vec<Member> = (0..60).map(|i| member(&format!("m{i}"), i)).collect();
    p.editor
        .set_root_from(&Doc {
            a: member("x", -1),
            list,
        })
        .unwrap();
    let x = p.editor.get("/a").unwrap();
    p.editor
        .get("/list")
        .unwrap()
        .as_array()
        .unwrap()
        .insert(0, x)
        .unwrap();
    p.settle();
    let mut model: Doc = p.editor.root_as().unwrap();
    // 59 items left over against 60 elements: in order.
    let edit = |d: &mut Doc| {
        d.list.remove(0);
        d.list.reverse();
        for m in &mut d.list {
            m.name.push('!');
        }
    };
    edit(&mut model);
    p.editor.update(edit).unwrap();
    assert_eq!(p.editor.root_as::<Doc>().unwrap(), model);
    assert_eq!(model.a, member("x", -1));
    p.deliver();
    assert_eq!(p.peer.root_as::<Doc>().unwrap(), model);
}

/// A newtype around an `Option` holding `None` is stored as null (as
/// serde_json stores it), in a struct field and a struct variant's field,
/// and reads back: only `Option` itself in a struct field is an absent
/// key.
#[test]
fn a_newtype_of_none_in_a_struct_field_is_null() {
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct W(Option<i64>);
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    enum E {
        V { w: W },
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct S {
        w: W,
        e: E,
    }
    let p = Pair::new();
    let none = S {
        w: W(None),
        e: E::V { w: W(None) },
    };
    p.editor.set_root_from(&none).unwrap();
    p.settle();
    assert_eq!(
        p.peer.root().to_json().unwrap(),
        serde_json::to_value(&none).unwrap()
    );
    assert_eq!(p.peer.root_as::<S>().unwrap(), none);
    p.editor.update(|s: &mut S| s.w = W(Some(1))).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    p.editor.update(|s: &mut S| s.w = W(None)).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 1)]));
    p.editor.update(|_: &mut S| {}).unwrap();
    assert_eq!(p.take(), Sent::default());
    assert_eq!(p.peer.root_as::<S>().unwrap(), none);
}

/// A map that serializes one key twice (a flattened struct's field and an
/// entry of the same name) holds the last value, as serde_json keeps it,
/// whether it is created or diffed: writing it twice sends nothing the
/// second time.
#[test]
fn a_key_serialized_twice_keeps_the_last_value() {
    #[derive(Serialize, Debug)]
    struct S {
        a: i64,
        #[serde(flatten)]
        extra: BTreeMap<String, i64>,
    }
    let s = S {
        a: 1,
        extra: BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 3)]),
    };
    assert_eq!(serde_json::to_value(&s).unwrap(), json!({"a": 2, "b": 3}));
    let p = Pair::new();
    p.editor.set_root_from(&s).unwrap();
    p.settle();
    assert_eq!(p.peer.root().to_json().unwrap(), json!({"a": 2, "b": 3}));
    p.editor.set_root_from(&s).unwrap();
    assert_eq!(p.take(), Sent::default());
    // Into an existing map, and as new objects, alike.
    let root = p.editor.root_map().unwrap();
    root.set("m", json!({"a": 0})).unwrap();
    p.settle();
    let m = p.editor.get("/m").unwrap().as_map().unwrap().clone();
    m.set_from(&s).unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 2)]));
    m.set_from(&s).unwrap();
    assert_eq!(p.take(), Sent::default());
    root.set("n", Input::from_serialize(&s).unwrap()).unwrap();
    p.settle();
    assert_eq!(p.peer.get("/n/a"), Some(Value::Int(2)));
}

/// Two nodes switching an enum's variant at once through handles on its
/// own object (a delete and a set in one map each) leave a map of two
/// variant keys: every replica reads it as the same one variant, and the
/// next typed write of it deletes the other key.
#[test]
fn concurrent_variant_switches_through_handles_read_as_one_variant() {
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    enum Status {
        Running { pid: i64 },
        Stopped { code: i64 },
        Paused { at: i64 },
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Doc {
        s: Status,
    }
    for (wire, net) in crate::manual_networks(1) {
        let a = net.join("a");
        let b = net.join("b");
        let merged = || {
            a.set_root(json!({"s": {"Running": {"pid": 1}}})).unwrap();
            net.run();
            let sa = a.get("/s").unwrap().as_object().unwrap();
            let sb = b.get("/s").unwrap().as_object().unwrap();
            sa.set_from(&Status::Stopped { code: 0 }).unwrap();
            sb.set_from(&Status::Paused { at: 5 }).unwrap();
            net.run();
            assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
            (sa, sb)
        };
        let (sa, sb) = merged();
        // Keys in byte order, the first: the same on every replica.
        let paused = Status::Paused { at: 5 };
        assert_eq!(sa.get_as::<Status>().unwrap(), paused, "{wire}");
        assert_eq!(sb.get_as::<Status>().unwrap(), paused, "{wire}");
        assert_eq!(
            b.root_as::<Doc>().unwrap(),
            Doc { s: paused.clone() },
            "{wire}"
        );
        // Through the handle: the other key goes, the variant stays in place.
        let at = a.get("/s/Paused").unwrap();
        sb.update(|s: &mut Status| {
            if let Status::Paused { at } = s {
                *at += 1;
            }
        })
        .unwrap();
        net.run();
        assert_eq!(
            a.root().to_json().unwrap(),
            json!({"s": {"Paused": {"at": 6}}})
        );
        assert_eq!(a.get("/s/Paused"), Some(at), "{wire}");
        // Through the parent: the same, even for an update that changes
        // nothing; and switching from it replaces it whole, as ever.
        let (_, _) = merged();
        let s = b.get("/s").unwrap();
        a.update(|_: &mut Doc| {}).unwrap();
        net.run();
        assert_eq!(
            b.root().to_json().unwrap(),
            json!({"s": {"Paused": {"at": 5}}})
        );
        assert_eq!(b.get("/s"), Some(s), "{wire}: in place");
        a.update(|_: &mut Doc| {}).unwrap();
        assert_eq!(net.in_flight(), 0, "{wire}: nothing more to send");
        let (_, _) = merged();
        a.update(|d: &mut Doc| d.s = Status::Running { pid: 2 })
            .unwrap();
        net.run();
        assert_eq!(
            b.root().to_json().unwrap(),
            json!({"s": {"Running": {"pid": 2}}})
        );
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// An update that inserts and removes nothing writes each changed element
/// in place, even where a change makes an element more like its
/// neighbour than like itself: pairing across would trade the two
/// objects' identities, send a move and more writes, and land another
/// node's concurrent edit of one on the other.
#[test]
fn changed_elements_keep_their_objects_when_nothing_is_inserted_or_removed() {
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct F {
        a: i64,
        b: i64,
        c: i64,
        d: i64,
        e: i64,
    }
    let f = |a, b, c, d, e| F { a, b, c, d, e };
    let p = Pair::new();
    p.editor
        .set_root_from(&vec![f(1, 1, 0, 0, 0), f(2, 2, 3, 3, 3)])
        .unwrap();
    p.settle();
    let (x, y) = (p.peer.get("/0").unwrap(), p.peer.get("/1").unwrap());
    p.editor
        .update(|v: &mut Vec<F>| {
            (v[0].c, v[0].d, v[0].e) = (3, 3, 3);
            (v[1].c, v[1].d, v[1].e) = (7, 7, 7);
        })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("MapSet", 6)]));
    assert_eq!(p.peer.get("/0"), Some(x));
    assert_eq!(p.peer.get("/1"), Some(y));

    // A task board: task 1 takes task 2's status and owner.
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct T {
        id: i64,
        status: String,
        owner: String,
        note: Option<String>,
    }
    let t = |id, status: &str, owner: &str, note: Option<&str>| T {
        id,
        status: status.into(),
        owner: owner.into(),
        note: note.map(Into::into),
    };
    for (wire, net) in crate::manual_networks(3) {
        let (a, b) = (net.join("a"), net.join("b"));
        a.set_root_from(&vec![t(1, "todo", "ann", None), t(2, "done", "bob", None)])
            .unwrap();
        net.run();
        a.update(|v: &mut Vec<T>| {
            (v[0].status, v[0].owner) = ("done".into(), "bob".into());
            (v[1].status, v[1].owner) = ("todo".into(), "carol".into());
        })
        .unwrap();
        b.update(|v: &mut Vec<T>| v[0].note = Some("urgent".into()))
            .unwrap();
        net.run();
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
        assert_eq!(
            a.root_as::<Vec<T>>().unwrap(),
            [
                t(1, "done", "bob", Some("urgent")),
                t(2, "todo", "carol", None)
            ],
            "{wire}: the note stays on task 1"
        );
    }
}

/// A shared object in a `Vec` is not written through for a neighbour's
/// change when the update removes it, whichever of its references is
/// diffed first, and also when its other reference is in the same `Vec`
/// (kept there as equal); a change of the copy that stands alone between
/// its kept neighbours is still a change of the shared object.
#[test]
fn a_shared_element_is_not_written_through_whichever_reference_is_diffed_first() {
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct M {
        n: i64,
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct ListFirst {
        list: Vec<M>,
        a: M,
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct AFirst {
        a: M,
        list: Vec<M>,
    }
    // list = [X, Y] with X also at /a.
    let shared = || {
        let p = Pair::new();
        p.editor
            .set_root(json!({"list": [{"n": 2}], "a": {"n": 1}}))
            .unwrap();
        let x = p.editor.get("/a").unwrap();
        p.editor
            .get("/list")
            .unwrap()
            .as_array()
            .unwrap()
            .insert(0, x)
            .unwrap();
        p.settle();
        p
    };
    let p = shared();
    p.editor
        .update(|d: &mut ListFirst| {
            d.list.remove(0);
            d.list[0].n = 7;
        })
        .unwrap();
    let want = ListFirst {
        list: vec![M { n: 7 }],
        a: M { n: 1 },
    };
    assert_eq!(p.editor.root_as::<ListFirst>().unwrap(), want);
    assert_eq!(p.take(), Sent::of(1, &[("ListDelete", 1), ("MapSet", 1)]));

    // The copy in the list changed alone: the shared object changes, in
    // either order of the fields.
    let p = shared();
    p.editor
        .update(|d: &mut ListFirst| d.list[0].n = 5)
        .unwrap();
    assert_eq!(p.editor.get("/a/n"), Some(Value::Int(5)));
    let p = shared();
    p.editor.update(|d: &mut AFirst| d.list[0].n = 5).unwrap();
    assert_eq!(p.editor.get("/a/n"), Some(Value::Int(5)));

    // list = [X, X, Y]: the first X is kept by the prefix, the second
    // removed, and Y changed into what X nearly is.
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct M2 {
        n: i64,
        m: i64,
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Doc {
        list: Vec<M2>,
    }
    let p = Pair::new();
    p.editor
        .set_root(json!({"list": [{"n": 1, "m": 0}, {"n": 2, "m": 0}]}))
        .unwrap();
    let x = p.editor.get("/list/0").unwrap();
    p.editor
        .get("/list")
        .unwrap()
        .as_array()
        .unwrap()
        .insert(1, x)
        .unwrap();
    p.settle();
    p.editor
        .update(|d: &mut Doc| {
            d.list.remove(1);
            d.list[1] = M2 { n: 1, m: 9 };
        })
        .unwrap();
    assert_eq!(
        p.editor.root_as::<Doc>().unwrap(),
        Doc {
            list: vec![M2 { n: 1, m: 0 }, M2 { n: 1, m: 9 }]
        }
    );
}

/// A removal with many changes around it writes each change on its own
/// element, however many there are: pairing stays between the elements
/// kept, so it costs no more than the changes, and one gap of every
/// element changed beside a removal is paired by likeness along the
/// diagonals the removal allows.
#[test]
fn a_removal_with_many_changes_writes_each_change_on_its_own_element() {
    let p = Pair::new();
    let list: Vec<Member> = (0..100).map(|i| member(&format!("m{i}"), i)).collect();
    p.editor.set_root_from(&list).unwrap();
    p.settle();
    let m1 = p.peer.get("/1").unwrap();
    p.editor
        .update(|v: &mut Vec<Member>| {
            v.remove(0);
            for k in (0..80).step_by(2) {
                v[k].score += 1000;
            }
        })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListDelete", 1), ("MapSet", 40)]));
    assert_eq!(p.peer.get("/0"), Some(m1), "m1 keeps its object");

    let list: Vec<Member> = (0..300).map(|i| member(&format!("m{i}"), i)).collect();
    p.editor.set_root_from(&list).unwrap();
    p.settle();
    let m1 = p.peer.get("/1").unwrap();
    let m299 = p.peer.get("/299").unwrap();
    p.editor
        .update(|v: &mut Vec<Member>| {
            v.remove(0);
            for m in v.iter_mut() {
                m.score += 1000;
            }
        })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListDelete", 1), ("MapSet", 299)]));
    assert_eq!(p.peer.get("/0"), Some(m1));
    assert_eq!(p.peer.get("/298"), Some(m299));
}

/// Beyond the pairing budget, a gap is paired in order (never across the
/// elements kept), and a shared object in it is not written through.
#[test]
fn past_the_budget_a_gap_pairs_in_order_and_writes_no_shared_object() {
    // The list first: no other copy of the shared object is diffed
    // before it.
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Doc {
        list: Vec<Member>,
        a: Member,
    }
    let p = Pair::new();
    let list: Vec<Member> = (0..200).map(|i| member(&format!("m{i}"), i)).collect();
    p.editor
        .set_root_from(&Doc {
            list,
            a: member("x", -1),
        })
        .unwrap();
    let x = p.editor.get("/a").unwrap();
    p.editor
        .get("/list")
        .unwrap()
        .as_array()
        .unwrap()
        .insert(0, x)
        .unwrap();
    p.settle();
    let mut model: Doc = p.editor.root_as().unwrap();
    // One gap of 201 elements and 100 items, every one changed: too many
    // for the budget, with or without the diagonals.
    let edit = |d: &mut Doc| {
        d.list.retain(|m| m.score % 2 == 1);
        for m in &mut d.list {
            m.name.push('!');
        }
    };
    edit(&mut model);
    p.editor.update(edit).unwrap();
    assert_eq!(p.editor.root_as::<Doc>().unwrap(), model);
    assert_eq!(model.a, member("x", -1));
    p.deliver();
    assert_eq!(p.peer.root_as::<Doc>().unwrap(), model);
}

/// The audit's removal beside a change, where the changed value happens to
/// equal a field of the removed element: at equal likeness the element
/// alike in its first fields (its name) takes the change, so another
/// node's concurrent edit of it stays.
#[test]
fn a_removal_beside_a_change_like_the_removed_element_keeps_a_concurrent_edit() {
    for (wire, net) in crate::manual_networks(7) {
        let (a, b) = (net.join("a"), net.join("b"));
        a.set_root_from(&vec![member("ann", 1), member("bob", 2)])
            .unwrap();
        net.run();
        a.update(|v: &mut Vec<Member>| {
            v.remove(0);
            v[0].score = 1;
        })
        .unwrap();
        b.update(|v: &mut Vec<Member>| v[1].team = Some("red".into()))
            .unwrap();
        net.run();
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
        let mut bob = member("bob", 1);
        bob.team = Some("red".into());
        assert_eq!(a.root_as::<Vec<Member>>().unwrap(), [bob], "{wire}");
    }
}

/// An element changed between two kept neighbours that the update
/// reversed is still between them: it is written in place and moved,
/// keeping its object. One that moved past kept elements and changed in
/// every field is deleted and inserted: nothing says it is that element.
#[test]
fn a_changed_element_between_reversed_neighbours_keeps_its_object() {
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct M {
        n: i64,
    }
    let p = Pair::new();
    p.editor
        .set_root_from(&vec![M { n: 1 }, M { n: 2 }, M { n: 3 }])
        .unwrap();
    p.settle();
    let two = p.peer.get("/1").unwrap();
    p.editor
        .update(|v: &mut Vec<M>| {
            v.reverse();
            v[1].n = 9;
        })
        .unwrap();
    assert_eq!(p.take(), Sent::of(1, &[("ListMove", 2), ("MapSet", 1)]));
    assert_eq!(p.peer.get("/1"), Some(two));

    p.editor
        .set_root_from(&vec![M { n: 1 }, M { n: 2 }, M { n: 3 }])
        .unwrap();
    p.settle();
    p.editor
        .update(|v: &mut Vec<M>| {
            v.rotate_left(1);
            v[2].n = 9;
        })
        .unwrap();
    assert_eq!(
        p.take(),
        Sent::of(1, &[("ListDelete", 1), ("ListInsert", 1), ("NewMap", 1)])
    );
    assert_eq!(
        p.peer.root_as::<Vec<M>>().unwrap(),
        [M { n: 2 }, M { n: 3 }, M { n: 9 }]
    );
}

/// Inside an internally tagged enum serde reads an enum from a buffered
/// map, which must have one key: a map of several variant keys there
/// fails to read, and a write of the enum through its own handle (which
/// reads nothing) makes it one variant again.
#[test]
fn a_merged_variant_map_inside_an_internally_tagged_enum_is_repaired_by_set_from() {
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    enum Status {
        Running { pid: i64 },
        Stopped { code: i64 },
        Paused { at: i64 },
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[serde(tag = "kind")]
    enum Job {
        Task { s: Status },
    }
    let node = LocalNetwork::new().join("a");
    // What two concurrent switches through handles on /s leave.
    node.set_root(json!({"kind": "Task", "s": {"Paused": {"at": 5}, "Stopped": {"code": 0}}}))
        .unwrap();
    let err = node.root_as::<Job>().unwrap_err();
    assert!(matches!(err, Error::Convert { .. }), "{err}");
    let s = node.get("/s").unwrap().as_map().unwrap().clone();
    assert_eq!(s.get_as::<Status>().unwrap(), Status::Paused { at: 5 });
    s.set_from(&Status::Paused { at: 5 }).unwrap();
    assert_eq!(
        node.root_as::<Job>().unwrap(),
        Job::Task {
            s: Status::Paused { at: 5 }
        }
    );
    assert_eq!(
        node.root().to_json().unwrap(),
        json!({"kind": "Task", "s": {"Paused": {"at": 5}}})
    );

    // Untagged, and flattened: the same.
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[serde(untagged)]
    enum Either {
        One { s: Status },
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Inner {
        s: Status,
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Outer {
        #[serde(flatten)]
        inner: Inner,
    }
    let merged = json!({"s": {"Paused": {"at": 5}, "Stopped": {"code": 0}}});
    node.set_root(merged.clone()).unwrap();
    assert!(node.root_as::<Either>().is_err());
    assert!(node.root_as::<Outer>().is_err());
    let one = Outer {
        inner: Inner {
            s: Status::Paused { at: 5 },
        },
    };
    node.set_root_from(&one).unwrap();
    assert_eq!(node.root_as::<Outer>().unwrap(), one);
}

/// A key beside a variant key that is not one of the enum's variants
/// (written by other code) makes the read fail, as a map of two keys did
/// before merged switches read as one variant, rather than being taken as
/// a switch's leftover and deleted by the next update; keys that are all
/// variants still read as the first.
#[test]
fn a_key_beside_a_variant_that_is_no_variant_fails_the_read_and_stays() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum St {
        Running { pid: i64 },
        Stopped { code: i64 },
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct D {
        s: St,
        n: i64,
    }
    let node = LocalNetwork::new().join("a");
    for foreign in ["_meta", "$schema"] {
        node.set_root(json!({"s": {"Running": {"pid": 1}, foreign: "keep"}, "n": 0}))
            .unwrap();
        let err = node.update(|d: &mut D| d.n = 1).unwrap_err();
        assert!(matches!(err, Error::Type { .. }), "{foreign}: {err}");
        assert_eq!(
            node.get(&format!("/s/{foreign}")),
            Some(Value::String("keep".into())),
            "{foreign}"
        );
        assert_eq!(node.get("/n"), Some(Value::Int(0)), "{foreign}");
    }
    node.set_root(json!({"s": {"Running": {"pid": 1}, "Stopped": {"code": 0}}, "n": 0}))
        .unwrap();
    node.update(|d: &mut D| d.n = 1).unwrap();
    assert_eq!(
        node.root().to_json().unwrap(),
        json!({"s": {"Running": {"pid": 1}}, "n": 1})
    );
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Row {
    id: i64,
    v: i64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Rows named by their first field, some removed (or some inserted)
    /// and some changed, in one update: each row left keeps its object
    /// and is written only where it changed, nothing moves, and the
    /// removed rows are deleted (the inserted ones inserted), however the
    /// changed values coincide with others.
    #[test]
    fn prop_rows_keep_their_objects_through_removals_or_insertions_and_changes(
        vs in proptest::collection::vec(0i64..3, 1..48),
        gone in proptest::collection::vec(any::<bool>(), 48),
        insert in any::<bool>(),
        changes in proptest::collection::vec(proptest::option::of(0i64..3), 48),
    ) {
        let p = Pair::new();
        let rows: Vec<Row> = vs.iter().enumerate().map(|(i, &v)| Row { id: i as i64, v }).collect();
        p.editor.set_root_from(&rows).unwrap();
        p.settle();
        let objects: Vec<_> = (0..rows.len()).map(|i| p.peer.get(&format!("/{i}")).unwrap()).collect();
        let mut want = Vec::new();
        let (mut removed, mut inserted, mut set) = (0, 0, 0);
        for (i, row) in rows.iter().enumerate() {
            if gone[i] && !insert {
                removed += 1;
                continue;
            }
            if gone[i] {
                inserted += 1;
                want.push(Row { id: 1000 + i as i64, v: vs[i] });
            }
            let mut row = row.clone();
            if let Some(v) = changes[i].filter(|&v| v != row.v) {
                row.v = v;
                set += 1;
            }
            want.push(row);
        }
        p.editor.update(|v: &mut Vec<Row>| v.clone_from(&want)).unwrap();
        let sent = p.take();
        let mut ops: Vec<(&str, usize)> = vec![("ListDelete", removed), ("MapSet", set)];
        if inserted > 0 {
            ops.extend([("ListInsert", inserted), ("NewMap", inserted)]);
        }
        ops.retain(|&(_, n)| n > 0);
        prop_assert_eq!(sent, Sent::of(usize::from(!ops.is_empty()), &ops));
        prop_assert_eq!(p.peer.root_as::<Vec<Row>>().unwrap(), want.clone());
        for (at, row) in want.iter().enumerate() {
            if row.id < 1000 {
                prop_assert_eq!(
                    p.peer.get(&format!("/{at}")),
                    Some(objects[row.id as usize].clone()),
                    "row {} at {}", row.id, at
                );
            }
        }
    }
}
