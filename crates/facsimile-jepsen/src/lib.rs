//! Fault injection on real facsimile processes: a relay or a NATS
//! JetStream cluster, client processes on the public `facsimile::net` API,
//! and a nemesis that partitions, pauses and kills them and stalls or
//! slows down the servers' disks on a seeded schedule. Every client records each
//! operation's invocation and completion; the checkers read the merged
//! history.
//!
//! ```
//! use facsimile_jepsen::history::{Event, Kind, Op};
//!
//! let history = vec![
//!     Event::new(0, Kind::Invoke, Op::Write { key: 1, value: 7 }, 10),
//!     Event::new(0, Kind::Ok, Op::Write { key: 1, value: 7 }, 20),
//! ];
//! let line = serde_json::to_string(&history[1]).unwrap();
//! assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), history[1]);
//! ```

pub mod check;
pub mod client;
pub mod cluster;
pub mod disk;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod proxy;
pub mod run;
pub mod storage;
