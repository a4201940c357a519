//! Typed mirroring: a game server and two clients share one plain Rust
//! struct. Each client moves its own player, the server keeps score and
//! logs events; every node edits the struct with `update` (which sends only
//! what changed) and the clients follow the game with a typed `watch`.
//!
//! ```sh
//! cargo run --release -p facsimile --example typed
//! ```

use std::collections::BTreeMap;

use facsimile::{LocalNetwork, Node};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Game {
    tick: u32,
    players: BTreeMap<String, Player>,
    events: Vec<Event>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Player {
    pos: Pos,
    score: u32,
    status: Status,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct Pos {
    x: i32,
    y: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
enum Status {
    Playing,
    Scored { at_tick: u32 },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Event {
    tick: u32,
    what: String,
}

/// The goal every player runs to.
const GOAL: Pos = Pos { x: 2, y: 1 };

fn summary(g: &Game) -> String {
    let players: Vec<String> = g
        .players
        .iter()
        .map(|(name, p)| {
            let flag = match p.status {
                Status::Playing => "",
                Status::Scored { .. } => " (scored!)",
            };
            format!("{name} at ({}, {}) {} pts{flag}", p.pos.x, p.pos.y, p.score)
        })
        .collect();
    let last = g.events.last().map_or("-", |e| e.what.as_str());
    format!(
        "tick {} | {} | last event: {last}",
        g.tick,
        players.join(", ")
    )
}

/// A client moves its own player one step toward the goal, writing only its
/// player's object (`update` on a handle). Returns whether it moved; a
/// player already at the goal changes nothing, so nothing is sent.
fn step(client: &Node, name: &str) -> facsimile::Result<bool> {
    let me = client
        .get(&format!("/players/{name}"))
        .and_then(|v| v.as_object())
        .expect("the server added this player");
    me.update(|p: &mut Player| {
        if p.pos.x < GOAL.x {
            p.pos.x += 1;
        } else if p.pos.y < GOAL.y {
            p.pos.y += 1;
        } else {
            return false;
        }
        true
    })
}

fn main() -> facsimile::Result<()> {
    let net = LocalNetwork::new();
    let server = net.join("server");
    let start = Pos { x: 0, y: 0 };
    let player = |pos| Player {
        pos,
        score: 0,
        status: Status::Playing,
    };
    server.set_root_from(&Game {
        tick: 0,
        players: [
            ("ada".to_string(), player(start)),
            ("bob".to_string(), player(Pos { x: 1, y: 0 })),
        ]
        .into(),
        events: vec![Event {
            tick: 0,
            what: "game created".into(),
        }],
    })?;
    println!("server  created the game");

    // Two clients join late and fetch the document.
    let ada = net.join("ada");
    let bob = net.join("bob");
    let mut watches = Vec::new();
    for (name, client) in [("ada", &ada), ("bob", &bob)] {
        client.sync();
        println!("{name:<7} joined: {}", summary(&client.root_as::<Game>()?));
        // One call per change batch, with the whole game freshly read.
        watches.push(client.watch(move |g: &Game| {
            println!("    {name} sees  {}", summary(g));
        }));
    }

    for tick in 1..=3 {
        println!("-- tick {tick}");
        for (name, client) in [("ada", &ada), ("bob", &bob)] {
            // The watch lines print from inside `step`, as the writes land.
            println!("{name:<7} steps toward the goal");
            if !step(client, name)? {
                println!("{name:<7} is at the goal already: nothing changed, nothing sent");
            }
        }
        println!("server  advances the clock and scores");
        server.update(|g: &mut Game| {
            g.tick = tick;
            for (name, p) in g.players.iter_mut() {
                if p.pos == GOAL && p.status == Status::Playing {
                    p.score += 1;
                    p.status = Status::Scored { at_tick: tick };
                    g.events.push(Event {
                        tick,
                        what: format!("{name} reached the goal"),
                    });
                }
            }
        })?;
    }

    println!("-- every node holds the same game");
    let on_server: Game = server.root_as()?;
    assert_eq!(on_server, ada.root_as::<Game>()?);
    assert_eq!(on_server, bob.root_as::<Game>()?);
    assert_eq!(server.snapshot(), ada.snapshot());
    assert_eq!(server.snapshot(), bob.snapshot());
    println!("server  {}", summary(&on_server));
    println!(
        "ada's score by JSON pointer: {:?}",
        bob.get("/players/ada/score")
    );

    // Reading with the wrong type is an error naming the path.
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Wrong {
        tick: u32,
        players: BTreeMap<String, String>,
    }
    match bob.root_as::<Wrong>() {
        Ok(w) => println!("unexpectedly read {w:?}"),
        Err(e) => println!("reading the game as the wrong type: {e}"),
    }
    drop(watches);
    Ok(())
}
